"""Table lifecycle: admission, TTL expiry, LRU/LFU eviction, keep-floor, reuse, deltas."""

import os
import threading
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import embcore
from embcore import EmbeddingTable, MatrixFactorization


def u64(xs) -> np.ndarray:  # noqa: ANN001
    return np.asarray(xs, dtype=np.uint64)


def f32(xs) -> np.ndarray:  # noqa: ANN001
    return np.asarray(xs, dtype=np.float32)


def train_at(m: MatrixFactorization, users, items, times) -> dict:  # noqa: ANN001
    n = len(items)
    return m.train(u64(users), u64(items), np.zeros(n, np.float32), timestamps=np.asarray(times))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"ttl": 0}, "ttl"),
        ({"ttl": -5}, "ttl"),
        ({"max_rows": 5, "keep_floor": 10}, "keep_floor"),
        ({"max_rows": 0}, "max_rows"),
        ({"max_rows": -1}, "max_rows"),
        ({"max_bytes": 0}, "max_bytes"),
        ({"min_count": 0}, "min_count"),
        ({"min_count": 300}, "min_count"),
        ({"ttl": 10, "eviction": "fifo"}, "eviction policy"),
        ({"keep_floor": 3}, "keep_floor"),
        ({"ttl": 10, "max_rows": 100, "capacity": 50}, "max_rows"),
    ],
)
def test_bad_lifecycle_configuration(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EmbeddingTable(4, **kwargs)


def test_unknown_lifecycle_key_in_model() -> None:
    with pytest.raises(ValueError, match="unknown key"):
        MatrixFactorization(dim=4, item_lifecycle={"tll": 5})


def test_evict_without_lifecycle_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no lifecycle"):
        EmbeddingTable(4).evict(now=0)


@given(
    last=st.lists(st.integers(0, 1000), min_size=1, max_size=60),
    ttl=st.integers(1, 500),
    now=st.integers(0, 1500),
    floor=st.integers(0, 20),
)
def test_ttl_never_evicts_recent_rows_and_keeps_the_floor(last, ttl, now, floor) -> None:  # noqa: ANN001
    m = MatrixFactorization(dim=4, item_lifecycle={"ttl": ttl, "keep_floor": floor})
    items = np.arange(len(last))
    train_at(m, np.zeros(len(last)), items, last)
    before = dict(
        zip(m.items.ids().tolist(), m.items.metadata()["last_update"].tolist(), strict=True)
    )
    out = m.items.evict(now=now, budget=10_000)
    evicted = set(out["ids"].tolist())
    for i in evicted:
        assert now - before[i] > ttl  # never a row updated within the TTL
    expired = {i for i, t in before.items() if now - t > ttl}
    assert len(m.items) >= min(floor, len(before))  # the keep-floor holds
    assert len(m.items) == max(len(before) - len(expired), min(floor, len(before)))
    assert set(m.items.ids().tolist()) == set(before) - evicted
    np.testing.assert_array_equal(out["ages"], now - out["first_seen"])


@given(
    last=st.lists(st.integers(0, 1000), min_size=1, max_size=60),
    ttl=st.integers(1, 500),
    now=st.integers(0, 1500),
    floor=st.integers(0, 20),
    cap=st.integers(1, 40),
)
def test_ttl_with_a_size_limit_matches_a_one_pass_reference(last, ttl, now, floor, cap) -> None:  # noqa: ANN001
    """One evict call with TTL, max_rows and a keep-floor against a slow reference of the
    documented order: expired rows leave in clock (row) order while above the floor; the
    others, and expired rows the floor kept, are ranked by last update (LRU) and the
    lowest leave while above max_rows and the floor."""
    floor = min(floor, cap)
    m = MatrixFactorization(
        dim=4, item_lifecycle={"ttl": ttl, "max_rows": cap, "keep_floor": floor}
    )
    # Items first seen in order 0, 1, ... (rows in that order), one event each.
    train_at(m, np.zeros(len(last)), np.arange(len(last)), last)
    live = len(last)
    gone, candidates = [], []
    for row, t in enumerate(last):
        if now - t > ttl and live > floor:
            gone.append(row)
            live -= 1
        else:
            candidates.append((t, row))
    for _, row in sorted(candidates)[: max(0, live - cap)]:
        if live <= floor:
            break
        gone.append(row)
        live -= 1
    out = m.items.evict(now=now, budget=10_000)
    assert sorted(out["ids"].tolist()) == sorted(gone)
    assert sorted(m.items.ids().tolist()) == sorted(set(range(len(last))) - set(gone))


def test_evicted_rows_carry_their_final_state() -> None:
    m = MatrixFactorization(dim=3, item_lifecycle={"ttl": 10})
    train_at(m, [1, 1, 2], [10, 11, 10], [0, 1, 2])
    rows = m.items.get(u64([10, 11]))
    md = m.items.metadata()
    out = m.items.evict(now=100)
    order = np.argsort(out["ids"])
    np.testing.assert_array_equal(out["ids"][order], [10, 11])
    np.testing.assert_array_equal(out["rows"][order], rows)
    np.testing.assert_array_equal(out["interactions"][order], md["interactions"])
    np.testing.assert_array_equal(out["last_update"][order], [2, 1])
    assert len(m.items) == 0 and 10 not in m.items


def test_incremental_eviction_has_bounded_work_per_call() -> None:
    m = MatrixFactorization(dim=2, item_lifecycle={"ttl": 5})
    train_at(m, np.zeros(1000), np.arange(1000), np.zeros(1000, np.int64))
    total = 0
    for _ in range(10):
        out = m.items.evict(now=100, budget=100)
        assert out["scanned"] == 100 and len(out["ids"]) <= 100
        total += len(out["ids"])
    assert total == 1000 and len(m.items) == 0


@pytest.mark.parametrize("policy", ["lru", "lfu"])
def test_size_limit_evicts_lowest_ranked(policy: str) -> None:
    t_cfg = {"max_rows": 50, "eviction": policy}
    m = MatrixFactorization(dim=2, item_lifecycle=t_cfg)
    items = np.arange(100)
    # item k is seen k % 7 + 1 times, last at time k
    reps = np.repeat(items, items % 7 + 1)
    times = np.repeat(items, items % 7 + 1)
    train_at(m, np.zeros(len(reps)), reps, times)
    md = m.items.metadata()
    key = md["last_update"] if policy == "lru" else md["interactions"]
    out = m.items.evict(now=100, budget=10_000)
    assert len(m.items) == 50
    kept_min = key[np.isin(md["ids"], m.items.ids())].min()
    evicted_max = key[np.isin(md["ids"], out["ids"])].max()
    assert evicted_max <= kept_min


def test_max_bytes_bounds_the_table() -> None:
    t = EmbeddingTable(8, max_bytes=50_000)
    t.insert(np.arange(1000, dtype=np.uint64))
    t.evict(now=0, budget=10_000)
    row_bytes = t.nbytes / max(len(t), 1)
    assert 0 < len(t) * (8 * 4 + 8 * 4 + 64) <= 50_000
    assert row_bytes > 0


def test_freed_rows_are_reused_and_copies_never_change() -> None:
    m = MatrixFactorization(dim=4, item_lifecycle={"ttl": 10})
    train_at(m, np.zeros(100), np.arange(100), np.zeros(100, np.int64))
    snapshot = m.items.weights()
    ids_before = m.items.ids()
    assert not snapshot.flags.writeable
    bytes_full = m.items.nbytes
    m.items.evict(now=1000, budget=1000)
    train_at(m, np.zeros(100), np.arange(1000, 1100), np.full(100, 1000))
    # the same 100 rows were reused: no growth
    assert len(m.items) == 100 and m.items.nbytes <= bytes_full
    assert m.items.copy().nbytes <= bytes_full
    # the earlier weights() copy is untouched, and matches its ids
    m2 = MatrixFactorization(dim=4, item_lifecycle={"ttl": 10})
    train_at(m2, np.zeros(100), np.arange(100), np.zeros(100, np.int64))
    np.testing.assert_array_equal(snapshot, m2.items.get(ids_before))


def test_changed_since_matches_slow_reference() -> None:
    rng = np.random.default_rng(0)
    m = MatrixFactorization(dim=3, item_lifecycle={"ttl": 50})
    train_at(m, rng.integers(0, 5, 300), rng.integers(0, 60, 300), np.arange(300) // 10)
    v = m.items.version
    before = m.items.metadata()
    upd_before = dict(zip(before["ids"].tolist(), before["updates"].tolist(), strict=True))
    new_items = rng.integers(30, 90, 50)
    train_at(m, rng.integers(0, 5, 50), new_items, np.full(50, 40))
    gone = set(m.items.evict(now=85, budget=1000)["ids"].tolist())
    after = m.items.metadata()
    expected = {
        i
        for i, u in zip(after["ids"].tolist(), after["updates"].tolist(), strict=True)
        if upd_before.get(i) != u
    }
    delta = m.items.changed_since(v)
    assert set(delta["ids"].tolist()) == expected
    assert set(delta["removed"].tolist()) == gone
    np.testing.assert_array_equal(delta["rows"], m.items.get(delta["ids"]))
    assert delta["version"] == m.items.version - 1  # the call bumps it, returns the one before
    again = m.items.changed_since(delta["version"])
    assert len(again["ids"]) == 0 and len(again["removed"]) == 0


def test_admission_counts_are_exact() -> None:
    m = MatrixFactorization(dim=2, item_lifecycle={"min_count": 3})
    # item 7 seen 5 times, item 8 twice, item 9 once
    items = [7, 8, 7, 9, 7, 8, 7, 7]
    stats = train_at(m, np.zeros(len(items)), items, np.arange(len(items)))
    assert set(m.items.ids().tolist()) == {7}
    assert m.items.metadata()["interactions"][0] == 3  # trained from its 3rd sighting on
    assert m.items.metadata()["first_seen"][0] == 4  # created at the 3rd sighting
    assert stats["unadmitted_events"] == 2 + 2 + 1
    assert m.items.unadmitted_events == 5
    stats = train_at(m, [0], [8], [9])
    assert 8 in m.items and stats["unadmitted_events"] == 0


def test_lifecycle_table_snapshot_holds_live_rows_only(tmp_path) -> None:  # noqa: ANN001
    m = MatrixFactorization(dim=2, item_lifecycle={"ttl": 5})
    train_at(m, np.zeros(20), np.arange(20), np.arange(20))
    m.items.evict(now=20, budget=100)  # rows with last_update < 15 expire
    train_at(m, np.zeros(5), np.arange(100, 105), np.full(5, 20))  # reuse freed rows
    m.items.save(tmp_path / "i.emb")
    t = EmbeddingTable.load(tmp_path / "i.emb")
    assert sorted(t.ids().tolist()) == sorted(m.items.ids().tolist())
    np.testing.assert_array_equal(t.get(m.items.ids()), m.items.get(m.items.ids()))


@pytest.mark.parametrize("threads", [1, 2])
def test_eviction_concurrent_with_training(threads: int) -> None:
    """An evictor and a reader beside a trainer (with 2 threads: two workers, each owning the
    items it trains, on calls of 10,000 events)."""
    m = MatrixFactorization(dim=8, item_lifecycle={"ttl": 100, "keep_floor": 10})
    rng = np.random.default_rng(1)
    stop = threading.Event()
    n = 5000 * threads
    reads: list[int] = []

    def trainer() -> None:
        for step in range(40):
            items = rng.integers(step * 500, step * 500 + 2000, n)
            users = rng.integers(0, 100, n)
            m.train(
                u64(users),
                u64(items),
                np.zeros(n, np.float32),
                timestamps=np.full(n, step * 10),
                threads=threads,
            )
        stop.set()

    def reader() -> None:
        while not stop.is_set():
            ids = m.items.ids()
            assert np.unique(ids).size == ids.size
            reads.append(ids.size)

    def evictor() -> None:
        now = 0
        while not stop.is_set():
            now += 5
            m.items.evict(now=now, budget=2000)

    workers = [threading.Thread(target=f) for f in (trainer, evictor, reader)]
    for th in workers:
        th.start()
    for th in workers:
        th.join()
    assert reads
    ids = m.items.ids()
    assert np.unique(ids).size == ids.size
    np.testing.assert_array_equal(m.items.get(ids), m.items.weights())
    assert np.isfinite(m.items.weights()).all()


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("days", [2, pytest.param(30, marks=pytest.mark.slow)])
def test_soak_memory_stays_bounded(days: int, capsys: pytest.CaptureFixture[str]) -> None:
    """Fresh items at a scaled 2M/day (2,000/day here), TTL 1 day, evicted every step.

    Checks the table's own byte accounting against the bound and that RSS stops growing after
    warm-up; prints events/s per simulated day (run with --runslow -s for the 30-day soak).
    """
    hour = 3600
    ttl = 24 * hour
    m = MatrixFactorization(dim=16, item_lifecycle={"ttl": ttl, "keep_floor": 100})
    rng = np.random.default_rng(2)
    per_hour = 2000 // 24
    peak_rows = 0
    sizes = []
    rss_after_warmup = 0
    rates = []
    for day in range(days):
        events, t0 = 0, time.perf_counter()
        for h in range(day * 24, (day + 1) * 24):
            t = h * hour
            fresh = np.arange(h * per_hour, (h + 1) * per_hour)
            live_pool = np.arange(max(0, (h - 12) * per_hour), (h + 1) * per_hour)
            items = np.concatenate([fresh, rng.choice(live_pool, 4 * per_hour)])
            train_at(m, rng.integers(0, 500, items.size), items, np.full(items.size, t))
            m.items.evict(now=t, budget=5000)
            events += items.size
            if h >= 36:  # after warm-up: the TTL plus the 12 h re-touch window
                peak_rows = max(peak_rows, len(m.items))
                sizes.append(m.items.nbytes)
                rss_after_warmup = rss_after_warmup or rss_bytes()
        rates.append(events / (time.perf_counter() - t0))
    with capsys.disabled():
        print(f"\nsoak: events/s per simulated day: {[f'{r:.3g}' for r in rates]}")
    # an item is re-touched for up to 12 h after it arrives, then lives one TTL
    bound_rows = ((ttl + 12 * hour) // hour + 2) * per_hour
    row_bytes = m.items.nbytes / len(m.items)
    assert peak_rows <= bound_rows
    assert max(sizes) <= 1.3 * bound_rows * row_bytes
    # freed rows are reused: resident memory does not keep growing with the stream
    assert rss_bytes() - rss_after_warmup < 32 * 2**20


def test_trainer_expires_items_and_monitor_keeps_their_final_rows() -> None:
    monitor = embcore.Monitor(sample_rate=1.0)
    trainer = embcore.Trainer(
        "realtime", dim=4, monitor=monitor, item_lifecycle={"ttl": 100, "keep_floor": 1}
    )
    trainer.consume(u64([1, 1, 1]), u64([10, 11, 12]), f32([1, 0, 1]), np.array([0, 1, 2]))
    final = trainer.model.items.get(u64([10, 11]))
    trainer.consume(u64([1]), u64([12]), f32([1]), np.array([500]))
    assert trainer.stats()["evicted_items"] == 2
    assert set(trainer.model.items.ids().tolist()) == {12}
    traj = monitor.trajectories()
    last = {}
    for k, i in enumerate(traj["ids"].tolist()):
        last[i] = traj["rows"][k]
    np.testing.assert_array_equal(np.stack([last[10], last[11]]), final)
    with pytest.raises(ValueError, match="non-finite"):
        monitor.record_rows(u64([1]), f32([[np.nan] * 4]), u64([1]), np.array([0]))


def test_capacity_counts_rows_freed_by_eviction() -> None:
    t = EmbeddingTable(4, capacity=100, max_rows=50)
    t.insert(u64(range(100)))
    assert len(t.evict(now=0)["ids"]) == 50
    assert t.insert(u64(range(1000, 1010))) == 10
    assert len(t) == 60


def test_rows_freed_before_a_busy_pin_are_reused() -> None:
    # A table that is never idle: rows evicted during training call 1 are
    # reusable once it ends, although call 2 (started later) still runs.
    m = MatrixFactorization(dim=8, capacity=200, item_lifecycle={"max_rows": 100})
    m.train(u64(np.zeros(200)), u64(range(200)), np.zeros(200, np.float32))
    n = 2_000_000
    # the calls train the newest items: the eviction takes items 0..99
    users, batch = u64(np.arange(n) % 50), u64(100 + np.arange(n) % 100)

    def long_call() -> threading.Thread:
        th = threading.Thread(target=m.train, args=(users, batch, np.zeros(n, np.float32)))
        th.start()
        time.sleep(0.05)
        return th

    first = long_call()
    evicted = m.items.evict(now=10**9, budget=1000)["ids"]
    overlapped = first.is_alive()
    first.join()
    second = long_call()
    try:
        assert m.items.insert(u64(range(1000, 1000 + evicted.size))) == evicted.size
        overlapped = overlapped and second.is_alive()
    finally:
        second.join()
    assert overlapped, "the training calls were too short to overlap; raise n"
    assert len(m.items) == 200


def test_set_over_existing_rows_shows_in_changed_since() -> None:
    t = EmbeddingTable(2, ttl=100)
    t.insert(u64([1, 2]))
    v = t.version
    t.set(u64([1]), f32([[5.0, 6.0]]))
    d = t.changed_since(v)
    assert d["ids"].tolist() == [1]
    np.testing.assert_array_equal(d["rows"], f32([[5.0, 6.0]]))


@pytest.mark.parametrize("lifecycle", [{}, {"max_rows": 2}])
def test_rejected_insert_and_set_change_nothing(lifecycle: dict) -> None:
    t = EmbeddingTable(2, capacity=2, **lifecycle)
    t.insert(u64([1, 2]))
    v = t.version
    with pytest.raises(embcore.CapacityError):
        t.insert(u64([3]))
    with pytest.raises(embcore.CapacityError):
        t.set(u64([1, 3]), f32([[0, 0], [0, 0]]))
    assert t.version == v
    assert t.ids().tolist() == [1, 2]
    assert t.changed_since(v)["ids"].size == 0


def test_eviction_after_a_sync_shows_in_changed_since() -> None:
    t = EmbeddingTable(2, max_rows=1)
    t.insert(u64([1]))
    t.insert(u64([2]))
    v = t.changed_since(0)["version"]
    assert t.evict(now=0)["ids"].tolist() == [1]
    d = t.changed_since(v)
    assert d["removed"].tolist() == [1]
    assert d["version"] > v


def test_admission_does_not_depend_on_thread_timing() -> None:
    """Which sighting admits an id (min_count) is decided in event order, so 2 threads
    admit the same ids at the same sightings as 1 thread."""
    rng = np.random.default_rng(5)
    n = 50_000
    users = rng.integers(0, 500, n).astype(np.uint64)
    items = (rng.zipf(1.5, n) % 20_000).astype(np.uint64)
    labels = (rng.random(n) < 0.3).astype(np.float32)
    out = {}
    for threads in (1, 2):
        m = MatrixFactorization(dim=4, item_lifecycle={"min_count": 3})
        stats = m.train(users, items, labels, threads=threads)
        meta = m.items.metadata()
        order = np.argsort(meta["ids"])
        out[threads] = (stats["unadmitted_events"], meta["ids"][order], meta["interactions"][order])
    assert out[1][0] == out[2][0]
    np.testing.assert_array_equal(out[1][1], out[2][1])
    np.testing.assert_array_equal(out[1][2], out[2][2])
