"""``Trainer.consume(..., return_scores=True)``: progressive validation in one call per chunk.

Every mode's scores equal the event-at-a-time reference: score one event with the serving
model, consume it, next event.
"""

import numpy as np
import pytest

import embcore
from embcore.modes import Trainer


def _stream(n: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    u = rng.integers(0, 30, n).astype(np.uint64)
    i = rng.integers(0, 60, n).astype(np.uint64)
    y = (rng.random(n) < 0.4).astype(np.float32)
    t = np.sort(rng.integers(0, 20 * 3600, n)).astype(np.int64)
    return u, i, y, t


@pytest.mark.parametrize("mode", ["realtime", "batch", "hybrid"])
def test_scores_equal_the_event_at_a_time_reference(mode: str) -> None:
    u, i, y, t = _stream(600, 1)
    fast = Trainer(mode, period="3h", dim=8, seed=4, shuffle=False)
    slow = Trainer(mode, period="3h", dim=8, seed=4, shuffle=False)
    got = np.concatenate(
        [
            fast.consume(u[a:b], i[a:b], y[a:b], t[a:b], return_scores=True)
            for a, b in ((0, 250), (250, 251), (251, 600))
        ]
    )
    want = np.empty_like(got)
    for e in range(len(y)):
        s = slice(e, e + 1)
        slow.advance(int(t[e]))
        want[e] = slow.score(u[s], i[s])[0]
        slow.consume(u[s], i[s], y[s], t[s])
    if mode == "batch":
        np.testing.assert_array_equal(got, want)  # the same frozen snapshot
    else:
        # The first sighting of an id creates its row before the event is scored, where the
        # reference scores it cold; training then uses one-event global-bias publishes.
        first = np.zeros(len(y), bool)
        seen: set[tuple[str, int]] = set()
        for e in range(len(y)):
            key_u, key_i = ("u", int(u[e])), ("i", int(i[e]))
            first[e] = key_u not in seen or key_i not in seen
            seen |= {key_u, key_i}
        np.testing.assert_allclose(got[~first], want[~first], rtol=0, atol=2e-3)
        assert np.abs(got[first] - want[first]).max() < 0.05
    assert fast.stats() == {**slow.stats(), "train_seconds": fast.train_seconds}


def test_without_return_scores_consume_returns_none_and_trains_the_same() -> None:
    u, i, y, t = _stream(300, 2)
    a, b = Trainer("realtime", dim=4, seed=1), Trainer("realtime", dim=4, seed=1)
    assert a.consume(u, i, y, t) is None
    assert b.consume(u, i, y, t, return_scores=True).shape == (300,)
    np.testing.assert_array_equal(a.model.items.view()[1], b.model.items.view()[1])


def test_field_model_trainer_scores() -> None:
    u, i, y, t = _stream(200, 3)
    tags = (i % 7).astype(np.uint64)
    ffm = embcore.FieldAwareFM(fields=["user", "item", "tag"], dim=4, seed=0)
    tr = Trainer("batch", model=ffm, period="2h")
    s = tr.consume(u, i, y, t, context={"tag": tags}, return_scores=True)
    assert s.shape == (200,) and np.isfinite(s).all()
    assert (s[t < 2 * 3600] == 0).all()  # the empty first snapshot serves zeros


@pytest.mark.parametrize(
    ("mode", "options"),
    [
        ("batch", {"window": "7h"}),
        ("batch", {"window": "6h", "init": "scratch", "epochs": 2}),
        ("batch", {"init": "scratch"}),
        ("hybrid", {"window": "9h", "epochs": 2}),
    ],
)
def test_scores_with_a_trailing_window_or_a_scratch_retrain(mode, options):
    """Batch scores are exactly the last publish's; hybrid's come from the live model."""
    u, i, y, t = _stream(600, 4)

    def factory():
        return embcore.MatrixFactorization(dim=8, seed=4)

    fast = Trainer(mode, factory, period="3h", shuffle=False, **options)
    slow = Trainer(mode, factory, period="3h", shuffle=False, **options)
    got = np.concatenate(
        [
            fast.consume(u[a:b], i[a:b], y[a:b], t[a:b], return_scores=True)
            for a, b in ((0, 100), (100, 420), (420, 600))
        ]
    )
    want = np.empty_like(got)
    snapshots = []
    for e in range(len(y)):
        s = slice(e, e + 1)
        slow.advance(int(t[e]))
        want[e] = slow.score(u[s], i[s])[0]
        snapshots.append(slow.serving_model.copy())  # publishes sync in place
        slow.consume(u[s], i[s], y[s], t[s])
    if mode == "batch":
        np.testing.assert_array_equal(got, want)
        # Exactly the serving snapshot of the period, scored directly.
        direct = np.array(
            [m.score(u[e : e + 1], i[e : e + 1])[0] for e, m in enumerate(snapshots)],
            dtype=np.float32,
        )
        np.testing.assert_array_equal(got, direct)
        assert fast.publishes_with_training >= 5
    else:
        first = _first_sightings(u, i)
        np.testing.assert_allclose(got[~first], want[~first], rtol=0, atol=2e-3)
        assert np.abs(got[first] - want[first]).max() < 0.05
    assert fast.stats() == {**slow.stats(), "train_seconds": fast.train_seconds}


def _first_sightings(u: np.ndarray, i: np.ndarray) -> np.ndarray:
    """Events whose user or item had not been seen before (scored cold by the reference)."""
    first = np.zeros(len(u), bool)
    seen: set[tuple[str, int]] = set()
    for e in range(len(u)):
        key_u, key_i = ("u", int(u[e])), ("i", int(i[e]))
        first[e] = key_u not in seen or key_i not in seen
        seen |= {key_u, key_i}
    return first
