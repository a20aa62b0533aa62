"""``train(..., return_scores=True)``: each event's score before its own update.

Progressive validation in the training pass: the scores returned by one call
equal scoring each event with the model as it stood just before that event's
step (checked against an event-at-a-time reference), and asking for them does
not change what is trained.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import embcore


def _events(seed: int, n: int, n_fields: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cols = np.stack([rng.integers(0, 6 + 5 * f, n) for f in range(n_fields)], axis=1)
    labels = (rng.random(n) < 0.35).astype(np.float32)
    # Fortran order: each field's column is contiguous (MF takes columns).
    return np.asfortranarray(cols.astype(np.uint64)), labels


def _mf(**kw: object) -> embcore.MatrixFactorization:
    return embcore.MatrixFactorization(dim=8, optimizer="adagrad", seed=3, **kw)  # type: ignore[arg-type]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 120), dim=st.sampled_from([4, 6, 8]))
def test_mf_scores_equal_score_then_train_one_event_at_a_time(seed: int, n: int, dim: int) -> None:
    cols, labels = _events(seed, n, 2)
    a = embcore.MatrixFactorization(dim=dim, optimizer="adagrad", seed=3)
    b = embcore.MatrixFactorization(dim=dim, optimizer="adagrad", seed=3)
    for m in (a, b):  # every id known, so no row is created by the calls below
        m.train(cols[:, 0], cols[:, 1], labels, threads=1)
    got = a.train(cols[:, 0], cols[:, 1], labels, threads=1, return_scores=True)["scores"]
    assert got.dtype == np.float32 and got.shape == (n,)
    want = np.empty(n, np.float32)
    for e in range(n):
        want[e] = b.score(cols[e : e + 1, 0], cols[e : e + 1, 1])[0]
        b.train(cols[e : e + 1, 0], cols[e : e + 1, 1], labels[e : e + 1], threads=1)
    # One-event calls publish the global bias every event: equal up to its last bits.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("cls", [embcore.FieldAwareFM, embcore.FactorizationMachine])
def test_field_model_scores_equal_score_then_train(cls: type) -> None:
    cols, labels = _events(7, 200, 3)
    fields = ["user", "item", "tag"]
    a, b = cls(fields=fields, dim=4, seed=2), cls(fields=fields, dim=4, seed=2)
    for m in (a, b):
        m.train(np.ascontiguousarray(cols), labels, threads=1)
    cols = np.ascontiguousarray(cols)
    got = a.train(cols, labels, threads=1, return_scores=True)["scores"]
    want = []
    for e in range(len(labels)):
        want.append(b.score(cols[e : e + 1])[0])
        b.train(cols[e : e + 1], labels[e : e + 1], threads=1)
    np.testing.assert_allclose(got, np.array(want, np.float32), rtol=0, atol=1e-5)


def test_asking_for_scores_changes_nothing_that_is_trained() -> None:
    cols, labels = _events(11, 5_000, 2)
    a, b = _mf(), _mf()
    sa = a.train(cols[:, 0], cols[:, 1], labels, threads=1, return_scores=True)
    sb = b.train(cols[:, 0], cols[:, 1], labels, threads=1)
    assert "scores" not in sb and sa["mean_loss"] == sb["mean_loss"]
    for ta, tb in ((a.users, b.users), (a.items, b.items)):
        va, vb = ta.view(), tb.view()
        np.testing.assert_array_equal(va[0], vb[0])
        np.testing.assert_array_equal(va[1], vb[1])
    assert a.global_bias == b.global_bias


def test_scores_of_a_new_id_use_its_freshly_created_row() -> None:
    # A first sighting creates the row before the event is trained: its score
    # is the model's with that initial row (not the zero cold-start vector).
    m = _mf()
    m.train(np.array([1], np.uint64), np.array([2], np.uint64), np.ones(1, np.float32))
    ref = m.copy()
    u, i = np.array([1], np.uint64), np.array([9], np.uint64)
    got = m.train(u, i, np.zeros(1, np.float32), return_scores=True)["scores"][0]
    ref.items.insert(i)
    assert got == ref.score(u, i)[0]


def test_unadmitted_events_get_the_cold_start_score() -> None:
    m = _mf(item_lifecycle={"min_count": 3})
    u = np.array([1, 1, 1, 1], np.uint64)
    i = np.array([5, 5, 5, 5], np.uint64)
    warm = np.array([1], np.uint64)
    m.train(warm, warm, np.ones(1, np.float32))  # user 1 known (item 1 not admitted)
    ref = m.copy()
    out = m.train(u, i, np.ones(4, np.float32), threads=1, return_scores=True)
    assert out["unadmitted_events"] == 2
    cold = ref.score(u[:1], i[:1])[0]  # item 5 unknown: zero vector, zero bias
    assert out["scores"][0] == cold and out["scores"][1] == cold
    assert np.isfinite(out["scores"]).all()


@pytest.mark.parametrize("threads", [2, 4])
def test_scores_with_threads_are_a_progressive_validation_of_the_interleaved_order(
    threads: int,
) -> None:
    # With more than one worker the shares run side by side: an event's score
    # is the model's before its update in the interleaved order (plus Hogwild
    # staleness), not in the given order. Its progressive loss stays close.
    rng = np.random.default_rng(5)
    n = 200_000
    u = rng.integers(0, 300, n).astype(np.uint64)
    i = rng.integers(0, 300, n).astype(np.uint64)
    labels = (((u + i) % 3 == 0) ^ (rng.random(n) < 0.1)).astype(np.float32)

    def progressive_loss(threads: int) -> float:
        s = _mf().train(u, i, labels, threads=threads, return_scores=True)["scores"]
        assert s.shape == (n,) and np.isfinite(s).all()
        p = np.clip(1 / (1 + np.exp(-s.astype(np.float64))), 1e-7, 1 - 1e-7)
        return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))

    one, many = progressive_loss(1), progressive_loss(threads)
    assert one < 0.6  # the model learns: the check below is not between two coin flips
    assert abs(many - one) < 0.1 * one


def test_empty_call_returns_an_empty_score_array() -> None:
    m = _mf()
    e = np.array([], np.uint64)
    out = m.train(e, e, np.array([], np.float32), return_scores=True)
    assert out["scores"].shape == (0,) and out["scores"].dtype == np.float32
