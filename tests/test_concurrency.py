"""Thread stress: training with eviction while other threads read, copy, save and evict."""

import os
import tempfile
import threading
import time

import numpy as np

import embcore

MAX_ROWS = 400
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
    model = embcore.MatrixFactorization(dim=8, seed=1, item_lifecycle={"max_rows": MAX_ROWS})
    items = model.items
    stop = threading.Event()
    errors: list[BaseException] = []
    counts = {"trained": 0, "views": 0, "copies": 0, "saves": 0, "evicted": 0}

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
            model.train(us, it, y, timestamps=np.full(n, clock[0]), threads=1)

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
        now = int(1e9)
        counts["evicted"] += items.evict(now, budget=200)["ids"].size - 1

    threads = [
        guarded("trained", trainer(1)),
        guarded("trained", trainer(2)),
        guarded("views", viewer),
        guarded("copies", copier),
        guarded("saves", saver),
        guarded("evicted", evictor),
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
    assert len(items) <= items.capacity
