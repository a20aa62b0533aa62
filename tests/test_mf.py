"""MatrixFactorization: one step against numpy, determinism, validation, threads."""

import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import embcore


def ids(*xs: int) -> np.ndarray:
    return np.array(xs, dtype=np.uint64)


def f32(*xs: float) -> np.ndarray:
    return np.array(xs, dtype=np.float32)


def reference_step(u, v, bu, bi, gb, y, w, opt, lr, l2, max_norm, loss, bias, acc0, eps):  # noqa: ANN001, ANN201
    """One event, the obvious way, in float64."""
    u, v = u.astype(np.float64), v.astype(np.float64)
    s = u @ v + (gb + bu + bi if bias else 0.0)
    if loss == "logistic":
        g = 1 / (1 + np.exp(-s)) - y
    else:
        g = s - y
    g *= w
    gu, gv = g * v + l2 * u, g * u + l2 * v

    def step(x, grad):  # noqa: ANN001, ANN202
        if opt == "sgd":
            x = x - lr * grad
        elif opt == "adagrad":
            acc = acc0 + grad**2
            x = x - lr * grad / (np.sqrt(acc) + eps)
        else:
            acc = acc0 + np.mean(grad**2)
            x = x - lr * grad / (np.sqrt(acc) + eps)
        if max_norm and np.linalg.norm(x) > max_norm:
            x = x * max_norm / np.linalg.norm(x)
        return x

    def step_bias(b):  # noqa: ANN001, ANN202
        if opt == "sgd":
            return b - lr * g
        return b - lr * g / (np.sqrt(acc0 + g * g) + eps)

    return step(u, gu), step(v, gv), step_bias(bu), step_bias(bi), step_bias(gb)


@given(
    dim=st.integers(1, 16),
    opt=st.sampled_from(["sgd", "adagrad", "rowwise_adagrad"]),
    loss=st.sampled_from(["logistic", "squared"]),
    bias=st.booleans(),
    l2=st.sampled_from([0.0, 0.01]),
    max_norm=st.sampled_from([None, 0.3]),
    y=st.sampled_from([0.0, 1.0, 0.25]),
    w=st.floats(0.0, 3.0),
    lr=st.floats(1e-3, 0.5),
    seed=st.integers(0, 1000),
)
def test_one_step_matches_numpy(dim, opt, loss, bias, l2, max_norm, y, w, lr, seed) -> None:  # noqa: ANN001
    rng = np.random.default_rng(seed)
    m = embcore.MatrixFactorization(
        dim=dim, optimizer=opt, loss=loss, bias=bias, l2=l2, max_norm=max_norm, learning_rate=lr
    )
    u0 = rng.normal(0, 0.3, (1, dim)).astype(np.float32)
    v0 = rng.normal(0, 0.3, (1, dim)).astype(np.float32)
    m.users.set(ids(3), u0)
    m.items.set(ids(9), v0)
    m.train(ids(3), ids(9), f32(y), weights=f32(w))
    acc0 = m.optimizer["initial_accumulator"]
    eu, ev, ebu, ebi, egb = reference_step(
        u0[0], v0[0], 0.0, 0.0, 0.0, y, w, opt, lr, l2, max_norm, loss, bias, acc0, 1e-8
    )
    np.testing.assert_allclose(m.users.get(ids(3))[0], eu, rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(m.items.get(ids(9))[0], ev, rtol=2e-4, atol=2e-6)
    if bias:
        np.testing.assert_allclose(m.users.metadata()["bias"][0], ebu, rtol=2e-4, atol=2e-6)
        np.testing.assert_allclose(m.items.metadata()["bias"][0], ebi, rtol=2e-4, atol=2e-6)
        np.testing.assert_allclose(m.global_bias, egb, rtol=2e-4, atol=2e-6)
    else:
        assert m.global_bias == 0.0


def random_events(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 50, n).astype(np.uint64)
    items = (rng.zipf(1.5, n) % 200).astype(np.uint64)
    labels = (rng.random(n) < 0.3).astype(np.float32)
    times = np.sort(rng.integers(0, 10_000, n)).astype(np.int64)
    return users, items, labels, times


def state(m: embcore.MatrixFactorization) -> list[np.ndarray]:
    out = []
    for t in (m.users, m.items):
        out += [t.ids(), t.weights().copy(), t.optimizer_state()]
        out += list(t.metadata().values())
    return out + [np.float32(m.global_bias)]


def test_single_thread_is_bit_reproducible_and_batch_equals_one_by_one() -> None:
    users, items, labels, times = random_events(3000, 1)
    a = embcore.MatrixFactorization(dim=8, seed=5)
    b = embcore.MatrixFactorization(dim=8, seed=5)
    c = embcore.MatrixFactorization(dim=8, seed=5)
    a.train(users, items, labels, timestamps=times)
    b.train(users, items, labels, timestamps=times)
    for k in range(len(users)):
        c.train(users[k : k + 1], items[k : k + 1], labels[k : k + 1], timestamps=times[k : k + 1])
    for x, y, z in zip(state(a), state(b), state(c), strict=True):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)


def test_counts_and_times() -> None:
    users, items, labels, times = random_events(5000, 2)
    m = embcore.MatrixFactorization(dim=4)
    stats = m.train(users, items, labels, timestamps=times, threads=2)
    assert stats["events"] == 5000
    assert stats["new_users"] == np.unique(users).size
    assert stats["new_items"] == np.unique(items).size
    md = m.items.metadata()
    expected = dict(zip(*np.unique(items, return_counts=True), strict=True))
    assert {int(i): int(c) for i, c in zip(md["ids"], md["interactions"], strict=True)} == {
        int(i): int(c) for i, c in expected.items()
    }
    first = {int(i): int(times[np.argmax(items == i)]) for i in np.unique(items)}
    last = {int(i): int(times[np.nonzero(items == i)[0][-1]]) for i in np.unique(items)}
    assert dict(zip(md["ids"].tolist(), md["first_seen"].tolist(), strict=True)) == first
    assert dict(zip(md["ids"].tolist(), md["last_update"].tolist(), strict=True)) == last
    # A later epoch over the same events does not count interactions again.
    m.train(users, items, labels, timestamps=times, count_interactions=False)
    np.testing.assert_array_equal(m.items.metadata()["interactions"], md["interactions"])
    np.testing.assert_array_equal(m.items.metadata()["updates"], 2 * md["interactions"])


def test_learns_held_out_structure() -> None:
    rng = np.random.default_rng(0)
    pu, pi = rng.normal(size=(200, 4)), rng.normal(size=(300, 4))
    users = rng.integers(0, 200, 200_000)
    items = rng.integers(0, 300, 200_000)
    p = 1 / (1 + np.exp(-(pu[users] * pi[items]).sum(1) * 1.5))
    labels = (rng.random(200_000) < p).astype(np.float32)
    m = embcore.MatrixFactorization(dim=8, learning_rate=0.05, seed=1)
    for _ in range(3):
        m.train(users[:150_000], items[:150_000], labels[:150_000])
    pred = m.predict(users[150_000:].astype(np.uint64), items[150_000:].astype(np.uint64))
    y = labels[150_000:]
    logloss = -np.mean(y * np.log(pred + 1e-7) + (1 - y) * np.log(1 - pred + 1e-7))
    base = -np.mean(y * np.log(y.mean()) + (1 - y) * np.log(1 - y.mean()))
    assert logloss < 0.9 * base


@pytest.mark.parametrize(
    "change, exc, match",
    [
        ({"users": np.array([1.0, 2.0])}, TypeError, "users must be"),
        ({"items": np.array(["a", "b"])}, TypeError, "items must be"),
        ({"labels": np.array([1, 0])}, TypeError, "labels must be"),
        ({"users": np.array([[1, 2]], dtype=np.uint64)}, TypeError, "1-D"),
        ({"items": ids(1, 2, 3)}, ValueError, "items has 3"),
        ({"labels": f32(1, np.nan)}, ValueError, "labels\\[1\\]"),
        ({"labels": f32(1, 2)}, ValueError, "needs labels in \\[0, 1\\]"),
        ({"weights": f32(1, np.inf)}, ValueError, "weights\\[1\\]"),
        ({"weights": f32(1, -1)}, ValueError, "weights\\[1\\]"),
        ({"weights": f32(1)}, ValueError, "weights has 1"),
        ({"timestamps": np.array([1.0, 2.0])}, TypeError, "int64"),
        ({"users": np.array([1, -1])}, ValueError, "negative"),
        ({"users": np.arange(4, dtype=np.uint64)[::2]}, ValueError, "contiguous"),
        ({"threads": 0}, ValueError, "threads"),
    ],
)
def test_bad_input_changes_nothing(change: dict, exc: type, match: str) -> None:
    m = embcore.MatrixFactorization(dim=4)
    m.train(ids(1), ids(1), f32(1))
    before = state(m)
    kwargs = {"users": ids(1, 2), "items": ids(1, 3), "labels": f32(1, 0)} | change
    with pytest.raises(exc, match=match):
        m.train(**kwargs)
    for x, y in zip(before, state(m), strict=True):
        np.testing.assert_array_equal(x, y)
    assert m.events_seen == 1


def test_squared_loss_accepts_ratings_and_bad_names_fail() -> None:
    m = embcore.MatrixFactorization(dim=4, loss="squared", optimizer="sgd", learning_rate=0.01)
    users, items, _, _ = random_events(2000, 3)
    ratings = (users % 5 + 1).astype(np.float32)
    first = m.train(users, items, ratings)["mean_loss"]
    for _ in range(10):
        last = m.train(users, items, ratings)["mean_loss"]
    assert last < first
    with pytest.raises(ValueError, match="loss"):
        embcore.MatrixFactorization(loss="hinge")


def test_score_is_read_only_with_cold_start() -> None:
    m = embcore.MatrixFactorization(dim=4)
    m.train(ids(1, 2), ids(10, 10), f32(1, 1))
    n_users, n_items = len(m.users), len(m.items)
    s = m.score(ids(1, 99, 1, 98), ids(10, 10, 77, 76))
    assert (len(m.users), len(m.items)) == (n_users, n_items)
    u, v = m.users.get(ids(1))[0], m.items.get(ids(10))[0]
    bu = m.users.metadata()["bias"][0]
    bi = m.items.metadata()["bias"][0]
    g = m.global_bias
    np.testing.assert_allclose(s, [u @ v + g + bu + bi, g + bi, g + bu, g], rtol=1e-5)
    p = m.predict(ids(1), ids(10))
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-s[:1])), rtol=1e-5)


def test_hogwild_thread_stress_counts_exact() -> None:
    """Several Python threads call train at once, each with threads=2."""
    m = embcore.MatrixFactorization(dim=16, capacity=1_000_000)
    batches = [random_events(20_000, seed) for seed in range(6)]

    def work(b: tuple[np.ndarray, ...]) -> None:
        users, items, labels, times = b
        for _ in range(3):
            m.train(users, items, labels, timestamps=times, threads=2)

    threads = [threading.Thread(target=work, args=(b,)) for b in batches]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    all_items = np.concatenate([b[1] for b in batches])
    md = m.items.metadata()
    got = dict(zip(md["ids"].tolist(), md["interactions"].tolist(), strict=True))
    u, c = np.unique(all_items, return_counts=True)
    assert got == dict(zip(u.tolist(), (3 * c).tolist(), strict=True))
    assert len(m.users) == np.unique(np.concatenate([b[0] for b in batches])).size
    assert np.isfinite(m.items.weights()).all()
    assert m.events_seen == 6 * 3 * 20_000


def test_copy_is_a_deep_snapshot() -> None:
    m = embcore.MatrixFactorization(dim=4)
    users, items, labels, _ = random_events(500, 4)
    m.train(users, items, labels)
    c = m.copy()
    frozen = c.items.weights().copy()
    m.train(users, items, labels)
    np.testing.assert_array_equal(c.items.weights(), frozen)
    assert c.global_bias != m.global_bias or not m.bias


# --- correctness under threads and bad input (regressions) -------------------------------------


def _base_rate_events(n: int = 200_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    users = rng.integers(0, 1_000, n).astype(np.uint64)
    items = (rng.zipf(1.3, n) % 5_000).astype(np.uint64)
    labels = (rng.random(n) < 0.3).astype(np.float32)
    return users, items, labels


@pytest.mark.parametrize("threads", [1, 2, 4, 8])
def test_global_bias_does_not_scale_with_threads(threads: int) -> None:
    """Hogwild is one step per event on shared parameters, the bias included: the first
    version summed per-thread whole-call deltas (bias -0.75 at 1 thread, -1.45 at 2, -2.81
    at 4)."""
    users, items, labels = _base_rate_events()
    one = embcore.MatrixFactorization(dim=16, seed=1)
    one.train(users, items, labels, threads=1)
    m = embcore.MatrixFactorization(dim=16, seed=1)
    m.train(users, items, labels, threads=threads)
    assert abs(m.global_bias - one.global_bias) <= 0.1 * abs(one.global_bias)
    mean_prediction = float(m.predict(users, items).mean())
    assert abs(mean_prediction - float(labels.mean())) < 0.01


def test_threads_are_capped_by_the_work_and_never_panic() -> None:
    t = embcore.EmbeddingTable(4)
    ids = np.arange(200_000, dtype=np.uint64)
    assert t.insert(ids, threads=200_000) == 200_000
    m = embcore.MatrixFactorization(dim=4)
    out = m.train(ids[:1000], ids[:1000], np.ones(1000, np.float32), threads=10_000)
    assert out["events"] == 1000
    with pytest.raises(embcore.ConfigError, match="threads must be an integer in"):
        m.train(ids[:2], ids[:2], np.ones(2, np.float32), threads=0)
    with pytest.raises(embcore.ConfigError, match="threads"):
        m.train(ids[:2], ids[:2], np.ones(2, np.float32), threads=2**63)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"learning_rate": 1e30}, "learning_rate"),
        ({"init_scale": 3e38}, "init_scale"),
        ({"l2": 1e9}, "l2"),
        ({"initial_accumulator": 1e30}, "initial_accumulator"),
        ({"learning_rate": 1e39}, "learning_rate"),
    ],
)
def test_settings_that_overflow_f32_are_refused(options: dict, name: str) -> None:
    with pytest.raises(embcore.ConfigError, match=f"{name} must be"):
        embcore.MatrixFactorization(dim=4, **options)


def test_values_that_overflow_f32_are_refused_before_anything_changes() -> None:
    m = embcore.MatrixFactorization(dim=4, loss="squared")
    ids = np.array([1, 2], dtype=np.uint64)
    with pytest.raises(embcore.EmbcoreError, match=r"weights\[1\]"):
        m.train(ids, ids, np.ones(2, np.float32), weights=np.array([1.0, 3e38], np.float32))
    with pytest.raises(embcore.EmbcoreError, match=r"labels\[0\]"):
        m.train(ids, ids, np.array([3e38, 0.0], np.float32))
    assert len(m.users) == len(m.items) == 0 and m.events_seen == 0


def test_a_rejected_train_changes_nothing_versions_included() -> None:
    """Room for the users, not for the items: the first version created the users."""
    m = embcore.MatrixFactorization(dim=4, capacity=4)
    ids = np.array([1, 2, 3], dtype=np.uint64)
    m.train(ids, ids, np.ones(3, np.float32))
    before = (len(m.users), len(m.items), m.users.version, m.items.version, m.events_seen)
    with pytest.raises(embcore.CapacityError, match="item table needs 3 new rows"):
        m.train(np.array([8, 1, 2], np.uint64), np.array([10, 11, 12], np.uint64), np.ones(3))
    assert (len(m.users), len(m.items), m.users.version, m.items.version, m.events_seen) == before


def test_bad_constructor_arguments_name_the_argument() -> None:
    with pytest.raises(TypeError, match="dim must be an integer, got '8'"):
        embcore.EmbeddingTable("8")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unexpected keyword argument 'lr'"):
        embcore.MatrixFactorization(lr=0.1)  # type: ignore[call-arg]
    with pytest.raises(embcore.ConfigError, match="capacity must be an integer in"):
        embcore.MatrixFactorization(capacity=-1)
