"""Thread stress: training with eviction while other threads read, copy, save and evict."""

import os
import tempfile
import threading
import time

import numpy as np

import embcore

MAX_ROWS = 400
# Room for max_rows, the new items of calls in flight and the rows evicted
# while a pinned call runs (they wait for it): a descheduled thread holds its
# pin for milliseconds, so this covers ~60 ms stalls at the throttled rate
# below, yet is far less than the stream needs without row reuse.
CAPACITY = 1 << 15
SECONDS = 3.0


def _check_view(table: embcore.EmbeddingTable) -> None:
    ids, rows = table.view()
    assert rows.shape == (ids.size, table.dim)
    assert np.unique(ids).size == ids.size, "an id appears twice in view()"
    meta = table.metadata()
    n = meta["ids"].size
    assert all(v.size == n for v in meta.values()), "metadata() columns of unequal length"
    assert np.unique(meta["ids"]).size == n
    np.testing.assert_array_equal(table.weights().shape[1:], (table.dim,))


def test_training_with_eviction_while_reading_copying_saving() -> None:
    model = embcore.MatrixFactorization(
        dim=8, seed=1, capacity=CAPACITY, item_lifecycle={"max_rows": MAX_ROWS}
    )
    items = model.items
    stop = threading.Event()
    errors: list[BaseException] = []
    counts = {"trained": 0, "views": 0, "copies": 0, "saves": 0, "evictions": 0}
    evicted = [0]

    def guarded(name: str, body) -> threading.Thread:  # noqa: ANN001
        def run() -> None:
            try:
                while not stop.is_set():
                    body()
                    counts[name] += 1
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)
                stop.set()

        return threading.Thread(target=run, name=name)

    def trainer(seed: int):  # noqa: ANN202
        rng = np.random.default_rng(seed)
        clock = [0]

        def body() -> None:
            # fresh items keep arriving, so the table lives at max_rows and
            # every training call needs rows freed by eviction
            clock[0] += 1
            n = 256
            base = (seed * 1_000_000 + clock[0] * 97) % (1 << 40)
            it = (base + rng.integers(0, 300, n)).astype(np.uint64)
            us = rng.integers(0, 50, n).astype(np.uint64)
            y = rng.random(n).astype(np.float32)
            # a CapacityError here would be false: eviction keeps the live
            # rows near max_rows, far below the capacity
            evicted[0] += items.evict(clock[0], budget=CAPACITY)["ids"].size
            model.train(us, it, y, timestamps=np.full(n, clock[0]), threads=1)
            time.sleep(0.0005)  # throttle the stream (see CAPACITY)

        return body

    def viewer() -> None:
        _check_view(items)
        some = items.ids()[:20]
        scores = model.score(np.arange(some.size, dtype=np.uint64), some)
        assert np.all(np.isfinite(scores))

    def copier() -> None:
        c = items.copy()
        ids, _ = c.view()
        assert np.unique(ids).size == ids.size

    tmp = tempfile.mkdtemp()

    def saver() -> None:
        p = os.path.join(tmp, "items.embc")
        items.save(p)
        back = embcore.EmbeddingTable.load(p)
        ids, _ = back.view()
        assert np.unique(ids).size == ids.size

    def evictor() -> None:
        evicted[0] += items.evict(int(1e9), budget=200)["ids"].size

    threads = [
        guarded("trained", trainer(1)),
        guarded("trained", trainer(2)),
        guarded("views", viewer),
        guarded("copies", copier),
        guarded("saves", saver),
        guarded("evictions", evictor),
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline and not stop.is_set():
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    assert counts["trained"] > 10 and counts["views"] > 10
    assert counts["copies"] > 0 and counts["saves"] > 0
    # the stream needed many more rows than the capacity: rows were reused
    assert evicted[0] > CAPACITY
    assert len(items) <= CAPACITY


def test_saves_racing_the_first_eviction_always_load(tmp_path) -> None:
    """A table that has never evicted is saved straight from its memory; the save pins it
    before checking that, so rows evicted and reused meanwhile never appear twice."""
    import threading

    for round_ in range(5):
        t = embcore.EmbeddingTable(8, capacity=40_000, max_rows=20_000)
        t.insert(np.arange(30_000, dtype=np.uint64), timestamp=0)
        path = tmp_path / f"t{round_}.embc"
        errors: list[BaseException] = []

        def churn(t: embcore.EmbeddingTable = t, errors: list[BaseException] = errors) -> None:
            try:
                t.evict(now=1, budget=40_000)
                t.insert(np.arange(100_000, 110_000, dtype=np.uint64), timestamp=1)
            except BaseException as e:  # reported below
                errors.append(e)

        worker = threading.Thread(target=churn)
        worker.start()
        t.save(path)
        worker.join()
        assert not errors, errors
        loaded = embcore.EmbeddingTable.load(path)
        ids = loaded.ids()
        assert len(np.unique(ids)) == len(ids)


def _race_for_room(seed: int) -> None:
    m = embcore.MatrixFactorization(dim=4, seed=seed, capacity=1_000)
    start = threading.Barrier(4)
    outcome: dict[int, bool] = {}
    batches = {k: np.arange(k * 10_000, k * 10_000 + 400, dtype=np.uint64) for k in range(4)}

    def call(k: int) -> None:
        ids = batches[k]
        start.wait()
        try:
            if k % 2:
                m.items.insert(ids)
            else:
                m.train(np.zeros(ids.size, np.uint64), ids, np.ones(ids.size, np.float32))
            outcome[k] = True
        except embcore.CapacityError:
            outcome[k] = False

    threads = [threading.Thread(target=call, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= sum(outcome.values()) <= 2, outcome
    want = np.sort(np.concatenate([batches[k] for k, ok in outcome.items() if ok]))
    np.testing.assert_array_equal(np.sort(m.items.ids()), want)


def test_concurrent_calls_that_fit_alone_but_not_together_change_nothing_when_refused() -> None:
    """Capacity is reserved, not just checked: of concurrent train/insert calls that each fit
    the table alone but not together, each either succeeds whole or fails with CapacityError
    having created nothing, so the table holds exactly the successful calls' new ids."""
    for seed in range(20):
        _race_for_room(seed)
