"""The torch hook's native path (``embcore._core.StepTracker``) against its numpy path: the same
monitor, byte for byte, and the same counts, on random steps; bad input is a clear error that
changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import embcore
from embcore._core import StepTracker

torch = pytest.importorskip("torch")
from embcore.integrations.torch import Watch  # noqa: E402

torch.sparse.check_sparse_tensor_invariants.disable()  # torch warns unless told


def hooked(native: bool, index_batches, n: int, mode: str, sample: float, ids, padding, sparse):
    """A fresh embedding trained on ``index_batches`` under a Watch on the chosen path."""
    torch.manual_seed(5)
    emb = torch.nn.Embedding(n, 4, sparse=sparse, padding_idx=padding)
    opt = torch.optim.SGD(emb.parameters(), lr=0.05)
    monitor = embcore.Monitor(sample_rate=0.5)
    handle = Watch(emb, monitor, ids, opt, mode, None, sample, 3, native=native)
    assert handle.native == native
    for index in index_batches:
        opt.zero_grad()
        (emb(torch.tensor(index, dtype=torch.int64)) ** 2).sum().backward()
        opt.step()
    counts = handle.counts
    handle.remove()
    return monitor, counts, handle


steps = st.lists(st.lists(st.integers(0, 29), max_size=24), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index_batches=steps,
    mode=st.sampled_from(["auto", "grad", "batch"]),
    sample=st.sampled_from([1.0, 0.5]),
    with_ids=st.booleans(),
    padding=st.sampled_from([None, 0, 7]),
    sparse=st.booleans(),
)
def test_native_path_is_the_numpy_path(index_batches, mode, sample, with_ids, padding, sparse):
    n = 30
    ids = (np.arange(n, dtype=np.uint64) * 11 + 5)[::-1].copy() if with_ids else None
    native = hooked(True, index_batches, n, mode, sample, ids, padding, sparse)
    numpy = hooked(False, index_batches, n, mode, sample, ids, padding, sparse)
    assert native[0].to_bytes() == numpy[0].to_bytes()
    np.testing.assert_array_equal(native[1], numpy[1])
    assert (native[2].steps, native[2].rows_observed) == (numpy[2].steps, numpy[2].rows_observed)


def test_embedding_bag_2d_batches_and_accumulated_batches() -> None:
    results = []
    for native in (True, False):
        torch.manual_seed(2)
        bag = torch.nn.EmbeddingBag(40, 8, mode="sum", sparse=True)
        opt = torch.optim.Adagrad(bag.parameters(), lr=0.1)
        monitor = embcore.Monitor(sample_rate=1.0)
        handle = Watch(bag, monitor, None, opt, "auto", None, 1.0, 0, native=native)
        rng = np.random.default_rng(1)
        for _ in range(8):
            opt.zero_grad()
            for _ in range(2):  # two batches before one step: both count
                bag(torch.from_numpy(rng.integers(0, 40, (6, 3)))).pow(2).sum().backward()
            opt.step()
        results.append((monitor.to_bytes(), handle.counts, handle.rows_observed))
        handle.remove()
    (a, ca, ra), (b, cb, rb) = results
    assert a == b and ra == rb and ra > 0
    np.testing.assert_array_equal(ca, cb)
    assert ca.sum() == 8 * 2 * 18


def test_native_only_where_it_applies() -> None:
    emb = torch.nn.Embedding(10, 4, sparse=True)
    opt = torch.optim.SGD(emb.parameters(), lr=0.1)

    class Other:
        def observe(self, ids, rows, counts=None, timestamps=None) -> None: ...

    assert Watch(emb, embcore.Monitor(), None, opt, "auto", None).native
    assert Watch(emb, embcore.Monitor(), np.arange(10), opt, "auto", None).native
    assert not Watch(emb, embcore.Monitor(), lambda r: r, opt, "auto", None).native
    assert not Watch(emb, Other(), None, opt, "auto", None).native


def test_a_weight_that_changes_dtype_carries_on_in_numpy() -> None:
    rng = np.random.default_rng(3)
    index_batches = [rng.integers(0, 20, 12) for _ in range(10)]
    results = []
    for native in (True, False):
        torch.manual_seed(4)
        emb = torch.nn.Embedding(20, 4, sparse=True)
        opt = torch.optim.SGD(emb.parameters(), lr=0.1)
        monitor = embcore.Monitor(sample_rate=1.0)
        handle = Watch(emb, monitor, None, opt, "auto", None, native=native)
        for k, index in enumerate(index_batches):
            if k == 5:
                emb.double()  # the same Parameter, float64 from now on: the numpy path reads it
            opt.zero_grad()
            (emb(torch.from_numpy(index)) ** 2).sum().backward()
            opt.step()
        assert not handle.native
        results.append((monitor.to_bytes(), handle.counts, handle.rows_observed))
    (a, ca, ra), (b, cb, rb) = results
    assert a == b and ra == rb
    np.testing.assert_array_equal(ca, cb)


def test_an_out_of_range_index_is_a_clear_error_that_changes_nothing() -> None:
    emb = torch.nn.Embedding(10, 4, sparse=True)
    opt = torch.optim.SGD(emb.parameters(), lr=0.1)
    monitor = embcore.Monitor(sample_rate=1.0)
    handle = Watch(emb, monitor, None, opt, "auto", None)
    opt.zero_grad()
    (emb(torch.tensor([1, 2, 2])) ** 2).sum().backward()
    opt.step()
    before = (handle.counts, monitor.to_bytes(), handle.rows_observed)
    handle._on_forward(emb, (torch.tensor([3, 12]),))  # what the pre-hook saw of a bad batch
    with pytest.raises(embcore.EmbcoreError, match=r"indices\[1\] = 12; .* in \[0, 10\)"):
        opt.step()
    np.testing.assert_array_equal(handle.counts, before[0])
    assert monitor.to_bytes() == before[1] and handle.rows_observed == before[2]
    opt.zero_grad()
    (emb(torch.tensor([4])) ** 2).sum().backward()
    opt.step()  # the bad batch is gone: the next step is as usual
    assert handle.counts.tolist() == [0, 1, 2, 0, 1, 0, 0, 0, 0, 0]
    assert handle.rows_observed == 3


# ---------------------------------------------------------------------------------------------
# StepTracker itself, against the obvious numpy bookkeeping


@settings(max_examples=60, deadline=None)
@given(
    index_batches=st.lists(st.lists(st.integers(0, 15), max_size=30), min_size=1, max_size=8),
    padding=st.sampled_from([None, 0, 9]),
    gradient=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_step_tracker_matches_numpy_bookkeeping(index_batches, padding, gradient, seed) -> None:
    """Counts of the sampled lookups (the padding row's 0); touched rows: the gradient's rows
    when given (each counted once at least), else the distinct lookups; first sightings."""
    n, d = 16, 3
    rng = np.random.default_rng(seed)
    ids = rng.permutation(n).astype(np.uint64) + 100
    sampled = rng.random(n) < 0.7
    tracker = StepTracker(n, d, ids=ids, in_sample=sampled, padding_idx=padding)
    native, reference = embcore.Monitor(sample_rate=1.0), embcore.Monitor(sample_rate=1.0)
    counts, first = np.zeros(n, np.int64), np.full(n, -1, np.int64)
    weight = rng.normal(size=(n, d)).astype(np.float32)
    for k, batch in enumerate(index_batches):
        index = np.array(batch, dtype=np.int64)
        grad = np.unique(rng.integers(0, n, rng.integers(0, 6))) if gradient else None
        np.add.at(counts, index[sampled[index]], 1)
        if padding is not None:
            counts[padding] = 0
        rows = grad[sampled[grad]] if grad is not None else np.unique(index[sampled[index]])
        rows = rows[rows != padding]
        first[rows[first[rows] < 0]] = k
        assert tracker.before_step(weight, k, looked_up=index, gradient=grad) == rows.size
        before = weight.copy()
        weight += rng.normal(size=(n, d)).astype(np.float32)
        assert tracker.after_step(weight, native, k + 1) == rows.size
        if rows.size:
            reference.observe_pairs(
                ids[rows],
                before[rows],
                weight[rows],
                np.maximum(counts[rows], 1 if gradient else 0),
                first_seen=first[rows],
                timestamps=np.full(rows.size, k + 1, np.int64),
            )
        np.testing.assert_array_equal(tracker.counts, counts)
        np.testing.assert_array_equal(tracker.seen, first >= 0)
        np.testing.assert_array_equal(tracker.first_seen, np.maximum(first, 0))
    assert native.to_bytes() == reference.to_bytes()


def test_step_tracker_bad_input_names_the_argument_and_changes_nothing() -> None:
    weight = np.zeros((5, 2), np.float32)
    monitor = embcore.Monitor(sample_rate=1.0)
    tracker = StepTracker(5, 2)
    assert tracker.before_step(weight, 0, looked_up=np.array([1, 1, 3])) == 2
    state = (tracker.counts, tracker.seen, tracker.first_seen, tracker.pending)
    bad = [
        ({"looked_up": np.array([0, 5])}, embcore.EmbcoreError, r"indices\[1\] = 5;.*\[0, 5\)"),
        ({"looked_up": np.array([-1])}, embcore.EmbcoreError, r"indices\[0\] = -1"),
        ({"gradient": np.array([7])}, embcore.EmbcoreError, r"gradient rows\[0\] = 7"),
        ({"looked_up": np.array([0.5])}, TypeError, "looked_up must be a 1-D numpy array"),
    ]
    for kwargs, error, match in bad:
        with pytest.raises(error, match=match):
            tracker.before_step(weight, 1, **kwargs)
    for w, error, match in [
        (np.zeros((4, 2), np.float32), embcore.EmbcoreError, r"weight has shape \[4, 2\]"),
        (np.zeros((5, 2)), TypeError, "weight must be a 2-D numpy array of float32"),
        (np.zeros((2, 5), np.float32).T, embcore.EmbcoreError, "weight is not C-contiguous"),
    ]:
        with pytest.raises(error, match=match):
            tracker.before_step(w, 1, looked_up=np.array([0]))
    with pytest.raises(TypeError, match="monitor must be an embcore.Monitor, got dict"):
        tracker.after_step(weight, {}, 1)
    after = (tracker.counts, tracker.seen, tracker.first_seen, tracker.pending)
    for x, y in zip(state, after, strict=True):
        np.testing.assert_array_equal(x, y)
    assert tracker.after_step(weight, monitor, 1) == 2 and tracker.pending is None
    assert tracker.observe_seconds > 0
    with pytest.raises(embcore.EmbcoreError, match="ids has 4 elements, expected 5"):
        StepTracker(5, 2, ids=np.arange(4, dtype=np.uint64))
    with pytest.raises(embcore.EmbcoreError, match=r"padding_idx must be a row index in \[0, 5\)"):
        StepTracker(5, 2, padding_idx=5)
    with pytest.raises(embcore.EmbcoreError, match="in_sample has 3 elements"):
        StepTracker(5, 2, in_sample=np.ones(3, bool))


def test_step_tracker_after_a_refused_step_drops_it() -> None:
    weight = np.ones((3, 2), np.float32)
    tracker, monitor = StepTracker(3, 2), embcore.Monitor(sample_rate=1.0)
    tracker.before_step(weight, 0, looked_up=np.array([0, 2]))
    weight[2, 0] = np.nan  # the step blew a row up: the monitor refuses it
    with pytest.raises(embcore.EmbcoreError, match="after"):
        tracker.after_step(weight, monitor, 1)
    assert tracker.pending is None and monitor.summary()["updates"] == 0


def test_step_tracker_releases_the_gil() -> None:
    """Another Python thread runs while a long ``before_step`` runs (a held GIL would stop it for
    the whole call)."""
    import threading
    import time

    n = 1000
    tracker, weight = StepTracker(n, 2), np.zeros((n, 2), np.float32)
    index = np.random.default_rng(0).integers(0, n, 8_000_000)
    tracker.before_step(weight, 0, looked_up=index[:1000])  # warm up
    done = threading.Event()
    took = []

    def call() -> None:
        started = time.perf_counter()
        tracker.before_step(weight, 1, looked_up=index)
        took.append(time.perf_counter() - started)
        done.set()

    thread = threading.Thread(target=call)
    ticks = [time.perf_counter()]
    thread.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
    ticks.append(time.perf_counter())  # a held GIL: a gap from before the call to its end
    thread.join()
    gaps = np.diff(ticks)
    assert took[0] > 0.02  # long enough for the check to mean something
    assert gaps.max() < 0.5 * took[0], (gaps.max(), took[0])
