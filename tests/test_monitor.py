"""Tests for embcore.Monitor: statistics against a numpy reference, bucketing, merge,
serialisation, training integration, cohorts, health checks and bad input."""

import json
import pickle
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import embcore
from embcore import EmbcoreError, Monitor, SnapshotError

ALPHA = Monitor.quantile_relative_error
STATS = ("drift", "magnitude", "relative_magnitude", "norm")


def u64(xs) -> np.ndarray:
    return np.asarray(xs, dtype=np.uint64)


def reference_stats(before: np.ndarray, after: np.ndarray) -> dict[str, np.ndarray]:
    """The slow, obvious definitions (METRICS A.1-A.3) in float64."""
    a, b = before.astype(np.float64), after.astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    mag = np.linalg.norm(b - a, axis=1)
    return {
        "drift": 1.0 - (a * b).sum(axis=1) / (na * nb),
        "magnitude": mag,
        "relative_magnitude": mag / na,
        "norm": nb,
    }


def lower_quantile(x: np.ndarray, q: float) -> float:
    return float(np.sort(x)[int(np.floor(q * (len(x) - 1)))])


def feed_pairs(mon: Monitor, before: np.ndarray, after: np.ndarray, id0: int = 0) -> None:
    """Show each (before, after) pair to the monitor as two observations of one id."""
    ids = u64(np.arange(id0, id0 + len(before)))
    t = np.zeros(len(before), dtype=np.int64)
    mon.observe(ids, before.astype(np.float32), timestamps=t)
    mon.observe(ids, after.astype(np.float32), timestamps=t + 1)


def rows_strategy(n_min: int = 1, n_max: int = 60):
    return st.tuples(st.integers(n_min, n_max), st.integers(1, 12), st.integers(0, 2**32 - 1)).map(
        lambda t: _random_pairs(*t)
    )


def _random_pairs(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    before = rng.normal(size=(n, d)).astype(np.float32)
    scale = 10.0 ** rng.uniform(-2, 0, size=(n, 1))
    after = (before + scale * rng.normal(size=(n, d))).astype(np.float32)
    return before, after


# --- per-update statistics -----------------------------------------------------------------


@given(rows_strategy())
def test_statistics_match_numpy_reference(pairs):
    before, after = pairs
    mon = Monitor(sample_rate=0.0)
    feed_pairs(mon, before, after)
    ref = reference_stats(before, after)
    s = mon.summary()
    assert s["updates"] == len(before)
    overall = s["overall"]
    assert overall["n"] == len(before)
    for name in STATS:
        x, got = ref[name], overall[name]
        assert got["n"] == len(x)
        np.testing.assert_allclose(got["mean"], x.mean(), rtol=2e-4, atol=1e-6)
        np.testing.assert_allclose(got["min"], x.min(), rtol=2e-4, atol=1e-6)
        np.testing.assert_allclose(got["max"], x.max(), rtol=2e-4, atol=1e-6)
        np.testing.assert_allclose(got["std"], x.std(), rtol=2e-3, atol=1e-5)
        for q, key in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
            exact = lower_quantile(x, q)
            # The sketch bound, plus float32 rounding of the statistic itself.
            assert abs(got[key] - exact) <= ALPHA * exact + 2e-4 * abs(exact) + 1e-6, (name, q)


def test_quantiles_within_bound_on_a_wide_distribution():
    rng = np.random.default_rng(3)
    n = 5000
    before = rng.normal(size=(n, 8)).astype(np.float32)
    # Update sizes over five decades.
    after = before + (10.0 ** rng.uniform(-4, 1, size=(n, 1))) * rng.normal(size=(n, 8))
    mon = Monitor(sample_rate=0.0)
    feed_pairs(mon, before, after.astype(np.float32))
    ref = reference_stats(before, after.astype(np.float32))
    got = mon.summary()["overall"]["magnitude"]
    for q, key in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
        exact = lower_quantile(ref["magnitude"], q)
        assert abs(got[key] - exact) <= (ALPHA + 1e-5) * exact


def test_a_wrong_statistic_would_be_caught():
    """The reference comparison is sharp enough to fail on a 1% bias."""
    before, after = _random_pairs(50, 6, 1)
    mon = Monitor(sample_rate=0.0)
    feed_pairs(mon, before, after)
    ref = reference_stats(before, after)
    mean = mon.summary()["overall"]["magnitude"]["mean"]
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(mean, 1.01 * ref["magnitude"].mean(), rtol=2e-4)


# --- bucketing -------------------------------------------------------------------------------


def test_count_buckets_exact_then_log_spaced():
    mon = Monitor(sample_rate=0.0, count_limit=4, per_doubling=2)
    rng = np.random.default_rng(0)
    counts = np.array([1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 100], dtype=np.int64)
    ids = u64(np.arange(len(counts)))
    mon.observe(ids, rng.normal(size=(len(ids), 3)).astype(np.float32))
    mon.observe(ids, rng.normal(size=(len(ids), 3)).astype(np.float32), counts=counts)
    by = mon.summary()["by_count"]
    # Exact buckets 1..4, then 2 per doubling: [5,6) [6,8) [8,12) [12,16) ... [96,128).
    assert by["lower"].tolist() == [1, 2, 3, 4, 5, 6, 8, 12, 96]
    assert by["n"].tolist() == [1, 1, 1, 1, 1, 2, 2, 1, 1]
    pop = mon.summary()["by_popularity"]
    assert pop["lower"].tolist() == [1, 2, 4, 8, 64]
    assert pop["n"].tolist() == [1, 2, 4, 3, 1]


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=40))
def test_bucket_counts_sum_and_bounds_hold(counts):
    mon = Monitor(sample_rate=0.0)
    n = len(counts)
    ids = u64(np.arange(n))
    rows = np.random.default_rng(n).normal(size=(2, n, 4)).astype(np.float32)
    mon.observe(ids, rows[0])
    mon.observe(ids, rows[1], counts=np.asarray(counts, dtype=np.int64))
    s = mon.summary()
    for grouping in ("by_count", "by_popularity", "by_age"):
        assert s[grouping]["n"].sum() == n
    lower = s["by_count"]["lower"]
    assert np.all(np.diff(lower) > 0)
    for c in counts:
        k = np.searchsorted(lower, c, side="right") - 1
        assert k >= 0 and lower[k] <= c
    exact = [c for c in counts if 1 <= c <= 64]
    exact_lower = lower[(lower >= 1) & (lower <= 64)]
    assert sorted(set(exact)) == exact_lower.tolist()


def _log_key(x: int, s: int) -> int:
    """The exponent of x >= 1 and its next s bits (the monitor's log-spaced bucket key)."""
    e = x.bit_length() - 1
    m = x >> (e - s) if e >= s else x << (s - e)
    return (e << s) | (m & ((1 << s) - 1))


def _reference_bucket_sizes(keys: list[int]) -> list[int]:
    """Updates per non-empty bucket, in bucket order (the summary's `n`)."""
    return [keys.count(k) for k in sorted(set(keys))]


_WIDE_COUNTS = st.one_of(
    st.integers(0, 200),
    st.integers(0, 2**63 - 1),
    st.integers(0, 62).map(lambda e: 2**e),
    st.integers(1, 63).map(lambda e: 2**e - 1),
    st.sampled_from([2**52 - 1, 2**52, 2**52 + 1, 2**53, 2**63 - 1]),
)


@given(
    st.lists(st.tuples(_WIDE_COUNTS, _WIDE_COUNTS, st.booleans()), min_size=1, max_size=300),
    st.sampled_from([(64, 8, 2), (1, 1, 64), (100, 64, 1)]),
)
def test_buckets_of_any_count_and_age_match_a_reference(updates, config):
    """Counts and ages over the whole int64 range (the flush reads most buckets from f64
    bits, below 2^52 only) land in the buckets of the obvious integer definition."""
    limit, per, age_per = config
    counts = [c for c, _, _ in updates]
    # Ages: timestamp - first_seen, negative (bucket 0) when the flag is set.
    ages = [-a if negative else a for _, a, negative in updates]
    n = len(updates)
    mon = Monitor(sample_rate=0.0, count_limit=limit, per_doubling=per, age_per_doubling=age_per)
    rows = np.random.default_rng(n).normal(size=(2, n, 4)).astype(np.float32)
    timestamps = np.zeros(n, dtype=np.int64)
    first_seen = -np.asarray(ages, dtype=np.int64)
    mon.observe_pairs(
        u64(np.arange(n)),
        rows[0],
        rows[1],
        np.asarray(counts, dtype=np.int64),
        first_seen=first_seen,
        timestamps=timestamps,
    )
    s = mon.summary()
    shift, age_shift = per.bit_length() - 1, age_per.bit_length() - 1
    base = _log_key(limit + 1, shift)
    count_keys = [c if c <= limit else limit + 1 + _log_key(c, shift) - base for c in counts]
    age_keys = [0 if a < 1 else 1 + _log_key(a, age_shift) for a in ages]
    assert s["by_count"]["n"].tolist() == _reference_bucket_sizes(count_keys)
    assert s["by_age"]["n"].tolist() == _reference_bucket_sizes(age_keys)


def test_age_buckets_use_first_seen():
    mon = Monitor(sample_rate=0.0, age_per_doubling=1)
    rows = np.ones((1, 2), dtype=np.float32)
    mon.observe(u64([5]), rows, timestamps=np.array([100]))
    for t in (100, 101, 103, 200):
        mon.observe(u64([5]), rows * (1 + t), timestamps=np.array([t]))
    by = mon.summary()["by_age"]
    assert by["lower"].tolist() == [0, 1, 2, 64]


# --- merge and serialisation ---------------------------------------------------------------


@given(rows_strategy(2, 40), st.integers(1, 39))
def test_merge_equals_concatenated_stream(pairs, cut):
    before, after = pairs
    cut = min(cut, len(before) - 1)
    whole, a, b = Monitor(sample_rate=1.0), Monitor(sample_rate=1.0), Monitor(sample_rate=1.0)
    feed_pairs(whole, before, after)
    feed_pairs(a, before[:cut], after[:cut])
    feed_pairs(b, before[cut:], after[cut:], id0=cut)
    a.merge(b)
    sa, sw = a.summary(), whole.summary()
    for key in ("updates", "records", "tracked_items"):
        assert sa[key] == sw[key]
    for grouping in ("by_count", "by_popularity", "by_age"):
        ga, gw = sa[grouping], sw[grouping]
        np.testing.assert_array_equal(ga["lower"], gw["lower"])
        np.testing.assert_array_equal(ga["n"], gw["n"])
        for name in STATS:
            np.testing.assert_allclose(ga[name]["mean"], gw[name]["mean"], rtol=1e-12)
            for key in ("min", "max", "p50", "p90", "p99"):
                np.testing.assert_array_equal(ga[name][key], gw[name][key])
    ta, tw = a.trajectories(), whole.trajectories()
    for key in ("ids", "counts", "rows"):
        np.testing.assert_array_equal(ta[key], tw[key])


def test_merge_needs_the_same_configuration():
    with pytest.raises(EmbcoreError, match="count_limit"):
        Monitor(count_limit=8).merge(Monitor(count_limit=9))
    a = Monitor()
    a.observe(u64([1]), np.ones((1, 3), np.float32))
    b = Monitor()
    b.observe(u64([1]), np.ones((1, 4), np.float32))
    with pytest.raises(EmbcoreError, match="dim"):
        a.merge(b)


def test_bytes_round_trip_is_exact():
    mon = Monitor(sample_rate=0.5, track_window=(0, 10), track_ids=[3, 99], seed=4)
    rng = np.random.default_rng(1)
    for step in range(20):
        ids = u64(rng.integers(0, 30, size=16))
        mon.observe(
            ids,
            rng.normal(size=(16, 5)).astype(np.float32),
            timestamps=np.full(16, step, dtype=np.int64),
        )
    data = mon.to_bytes()
    back = Monitor.from_bytes(data)
    assert back.to_bytes() == data
    assert back.config == mon.config
    for key, value in mon.trajectories().items():
        np.testing.assert_array_equal(back.trajectories()[key], value)
    s1, s2 = mon.summary(), back.summary()
    for grouping in ("by_count", "by_age"):
        for name in STATS:
            for key, value in s1[grouping][name].items():
                np.testing.assert_array_equal(s2[grouping][name][key], value)
    # Continuing after the round trip matches continuing the original.
    more = rng.normal(size=(16, 5)).astype(np.float32)
    ids = u64(np.arange(16))
    mon.observe(ids, more)
    back.observe(ids, more)
    assert back.to_bytes() == mon.to_bytes()
    assert pickle.loads(pickle.dumps(mon)).to_bytes() == mon.to_bytes()


def test_corrupt_bytes_raise_a_clear_error():
    mon = Monitor()
    mon.observe(u64([1, 2]), np.ones((2, 3), np.float32))
    data = bytearray(mon.to_bytes())
    for bad in (b"", b"garbage", bytes(data[: len(data) // 2]), bytes(data[:-1])):
        with pytest.raises(SnapshotError):
            Monitor.from_bytes(bad)
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(SnapshotError, match="checksum"):
        Monitor.from_bytes(bytes(data))


def test_to_dict_is_json():
    mon = Monitor(sample_rate=1.0)
    before, after = _random_pairs(20, 4, 2)
    feed_pairs(mon, before, after)
    d = mon.to_dict()
    text = json.dumps(d)
    assert json.loads(text)["summary"]["updates"] == 20
    assert d["config"]["count_limit"] == 64


# --- training integration ------------------------------------------------------------------


def _train_events(seed: int, n: int, n_items: int = 40):
    rng = np.random.default_rng(seed)
    users = u64(rng.integers(0, 50, size=n))
    items = u64(np.minimum(rng.zipf(1.5, size=n) - 1, n_items - 1))
    labels = (rng.random(n) < 0.3).astype(np.float32)
    return users, items, labels


def test_training_records_milestones_exactly():
    model = embcore.MatrixFactorization(dim=8, seed=2)
    mon = Monitor(sample_rate=1.0, milestones=[1, 2, 3, 5, 8, 13, 21, 34, 55, 89])
    for step in range(3):
        model.train(*_train_events(step, 2000), monitor=mon)
    traj = mon.trajectories()
    meta = model.items.metadata()
    final = dict(zip(meta["ids"].tolist(), meta["interactions"].tolist(), strict=True))
    grid = np.array([1, 2, 3, 5, 8, 13, 21, 34, 55, 89])
    for item, count in final.items():
        mine = traj["counts"][traj["ids"] == item]
        np.testing.assert_array_equal(mine, grid[grid <= count])
    # Sorted by (id, count).
    order = np.lexsort((traj["counts"], traj["ids"]))
    np.testing.assert_array_equal(order, np.arange(len(order)))
    # The rows at an item's last milestone equal the table when it was its final count.
    at_final = [(i, c) for i, c in final.items() if c in set(grid.tolist())]
    assert at_final
    for item, count in at_final:
        k = np.flatnonzero((traj["ids"] == item) & (traj["counts"] == count))[0]
        np.testing.assert_array_equal(traj["rows"][k], model.items.get(u64([item]))[0])
    s = mon.summary()
    assert s["updates"] == 6000
    assert s["tracked_items"] == len(final)
    assert abs(s["items_seen"] - len(final)) <= 1
    pe = mon.path_efficiency()
    assert np.all((pe["efficiency"] > 0) & (pe["efficiency"] <= 1 + 1e-6))
    assert pe["updates"].sum() == 6000


def test_training_statistics_match_observing_the_same_rows():
    """The in-training path and observe() derive the same statistics."""
    users, items, labels = _train_events(7, 300)
    model = embcore.MatrixFactorization(dim=4, seed=1)
    trained = Monitor(sample_rate=0.0)
    observed = Monitor(sample_rate=0.0)
    ids = np.unique(items)
    model.train(users[:1], items[:1], labels[:1])  # create nothing yet: only one event
    for e in range(len(users)):
        model.train(users[e : e + 1], items[e : e + 1], labels[e : e + 1], monitor=trained)
    # Replay: observe each item's row after every event through a fresh model.
    replay = embcore.MatrixFactorization(dim=4, seed=1)
    replay.train(users[:1], items[:1], labels[:1])
    first = replay.items.get(ids, default=np.nan)
    known = ~np.isnan(first[:, 0])
    observed.observe(ids[known], first[known])
    for e in range(len(users)):
        item = items[e : e + 1]
        if item[0] not in replay.items:
            replay.train(users[e : e + 1], item, labels[e : e + 1])
            continue
        replay.train(users[e : e + 1], item, labels[e : e + 1])
        observed.observe(item, replay.items.get(item))
    a, b = trained.summary(), observed.summary()
    # observe() cannot see the first update of an item created inside a call.
    assert a["updates"] >= b["updates"] > 0
    assert abs(a["overall"]["norm"]["max"] - b["overall"]["norm"]["max"]) < 1e-6


def test_trajectories_equal_table_after_publish():
    model = embcore.MatrixFactorization(dim=6, seed=3)
    model.train(*_train_events(1, 500))
    mon = Monitor(sample_rate=0.5, seed=1)
    kept = mon.record_publish(model.items, 1234)
    traj = mon.trajectories()
    assert kept == len(traj["ids"]) > 0
    assert np.all(traj["timestamps"] == 1234)
    np.testing.assert_array_equal(traj["rows"], model.items.get(traj["ids"]))
    meta = model.items.metadata()
    counts = dict(zip(meta["ids"].tolist(), meta["interactions"].tolist(), strict=True))
    assert traj["counts"].tolist() == [counts[i] for i in traj["ids"].tolist()]
    analysis = pytest.importorskip("embcore.analysis")
    assert analysis.Trajectories.from_monitor(mon).n_items == kept


def test_monitor_with_two_threads():
    model = embcore.MatrixFactorization(dim=8, seed=2)
    mon = Monitor(sample_rate=1.0, milestones=list(range(1, 200)))
    users, items, labels = _train_events(5, 20000)
    model.train(users, items, labels, threads=2, monitor=mon)
    s = mon.summary()
    assert s["updates"] + s["skipped_updates"] == 20000
    traj = mon.trajectories()
    meta = model.items.metadata()
    for item, count in zip(meta["ids"].tolist(), meta["interactions"].tolist(), strict=True):
        mine = traj["counts"][traj["ids"] == item]
        np.testing.assert_array_equal(mine, np.arange(1, min(count, 199) + 1))


def test_uncounted_training_records_a_milestone_once():
    model = embcore.MatrixFactorization(dim=4)
    mon = Monitor(sample_rate=1.0, milestones=[1, 2])
    ev = (u64([1, 1, 1]), u64([9, 9, 9]), np.ones(3, np.float32))
    model.train(*ev, monitor=mon)
    model.train(*ev, count_interactions=False, monitor=mon)
    assert mon.trajectories()["counts"].tolist() == [1, 2]


def test_train_rejects_a_monitor_of_another_dim():
    mon = Monitor()
    mon.observe(u64([1]), np.ones((1, 3), np.float32))
    model = embcore.MatrixFactorization(dim=4)
    with pytest.raises(EmbcoreError, match="dim"):
        model.train(u64([1]), u64([2]), np.ones(1, np.float32), monitor=mon)
    assert len(model.items) == 0


# --- cohorts ---------------------------------------------------------------------------------


def test_sampling_rate_is_close_to_requested():
    mon = Monitor(sample_rate=0.1, milestones=[1])
    n = 20000
    mon.observe(u64(np.arange(n)), np.ones((n, 2), np.float32))
    tracked = mon.summary()["tracked_items"]
    assert abs(tracked - 0.1 * n) < 4 * np.sqrt(n * 0.1 * 0.9)
    # Deterministic: the same ids are chosen again.
    again = Monitor(sample_rate=0.1, milestones=[1])
    again.observe(u64(np.arange(n)), np.ones((n, 2), np.float32))
    np.testing.assert_array_equal(again.trajectories()["ids"], mon.trajectories()["ids"])
    none = Monitor(sample_rate=0.0)
    none.observe(u64(np.arange(100)), np.ones((100, 2), np.float32))
    assert none.summary()["tracked_items"] == 0


def test_explicit_ids_and_time_window_cohorts():
    mon = Monitor(sample_rate=0.0, track_ids=[7], track_window=(10, 20), milestones=[1, 2])
    ids = u64([1, 2, 3, 7])
    times = np.array([5, 10, 20, 0], dtype=np.int64)
    mon.observe(ids, np.ones((4, 2), np.float32), timestamps=times)
    mon.observe(ids, 2 * np.ones((4, 2), np.float32), timestamps=times + 1)
    traj = mon.trajectories()
    assert traj["ids"].tolist() == [2, 2, 7, 7]
    assert traj["counts"].tolist() == [1, 2, 1, 2]


def test_max_records_caps_and_counts_drops():
    mon = Monitor(sample_rate=1.0, milestones=[1, 2, 3], max_records=5)
    rows = np.ones((4, 2), np.float32)
    for k in range(3):
        mon.observe(u64([1, 2, 3, 4]), rows * (k + 1))
    s = mon.summary()
    assert s["records"] == 5
    assert s["dropped_records"] == 7
    assert s["memory_bytes"] > 0 and mon.memory_bytes > 0


# --- health ----------------------------------------------------------------------------------


def test_health_finds_each_problem():
    model = embcore.MatrixFactorization(
        dim=4, optimizer="sgd", learning_rate=100.0, loss="squared", bias=False, seed=0
    )
    model.train(
        u64([1, 1]), u64([10, 12]), np.zeros(2, np.float32), timestamps=np.array([100, 500])
    )
    # A diverging row: every setting in range, but SGD at learning rate 100 on the largest
    # label diverges; item 11 goes to inf, then NaN (set() refuses NaN).
    for _ in range(20):
        model.train(u64([2]), u64([11]), np.array([1e6], np.float32), timestamps=np.array([100]))
    items = model.items
    assert not np.isfinite(items.get(u64([11]))).any()
    items.set(u64([12]), np.full((1, 4), 1e3, np.float32))  # exploding row
    items.set(u64([13]), np.zeros((1, 4), np.float32), timestamp=500)  # never updated
    h = Monitor.health(items, max_norm=10.0, ttl=300)
    assert h["rows"] == 4
    assert h["now"] == 500
    assert h["non_finite"]["count"] == 1 and h["non_finite"]["ids"].tolist() == [11]
    assert h["over_norm"]["count"] == 1 and h["over_norm"]["ids"].tolist() == [12]
    assert h["largest_norm"] == pytest.approx(2000.0)
    assert h["never_updated"]["ids"].tolist() == [13]
    # Rows 10 and 11 were last updated at 100: older than 300 s at 500.
    assert h["stale"]["ids"].tolist() == [10, 11]
    assert Monitor.health(items, ttl=300, now=10_000)["stale"]["count"] == 4
    unchecked = Monitor.health(items, max_ids=0)
    assert unchecked["over_norm"] is None and unchecked["stale"] is None
    assert unchecked["non_finite"]["count"] == 1 and unchecked["non_finite"]["ids"].size == 0
    with pytest.raises(EmbcoreError):
        Monitor.health(items, max_norm=-1.0)


def test_nan_updates_are_skipped_not_recorded_as_statistics():
    model = embcore.MatrixFactorization(
        dim=4, optimizer="sgd", learning_rate=100.0, loss="squared", bias=False
    )
    mon = Monitor(sample_rate=1.0)
    for _ in range(20):
        model.train(u64([2]), u64([11]), np.array([1e6], np.float32), monitor=mon)
    s = mon.summary()
    assert s["updates"] + s["skipped_updates"] == 20 and s["skipped_updates"] >= 1
    json.dumps(mon.to_dict())


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sample_rate": 1.5},
        {"sample_rate": -0.1},
        {"count_limit": 0},
        {"milestones": [1, 5, 3]},
        {"milestones": [0, 1]},
        {"milestones": [-1]},
        {"per_doubling": 3},
        {"track_window": (10, 5)},
        {"max_records": -1},
    ],
)
def test_bad_configuration_raises(kwargs):
    with pytest.raises(EmbcoreError):
        Monitor(**kwargs)


def test_bad_observations_raise_and_change_nothing():
    mon = Monitor(sample_rate=1.0)
    mon.observe(u64([1, 2]), np.ones((2, 3), np.float32))
    before = mon.to_bytes()
    bad_rows = np.ones((2, 3), np.float32)
    bad_rows[1, 2] = np.nan
    cases = [
        (u64([1, 2, 3]), np.ones((2, 3), np.float32), {}),  # lengths differ
        (u64([1]), np.ones((1, 4), np.float32), {}),  # wrong dim
        (u64([1, 2]), bad_rows, {}),  # NaN
        (u64([1, 2]), np.ones((2, 3), np.float32), {"counts": np.array([1])}),
        (u64([1, 2]), np.ones((2, 3), np.float32), {"counts": np.array([1, -2])}),
        (u64([1, 2]), np.ones((2, 3), np.float32), {"timestamps": np.array([1, 2, 3])}),
    ]
    for ids, rows, kw in cases:
        with pytest.raises(EmbcoreError):
            mon.observe(ids, rows, **kw)
    with pytest.raises(TypeError):
        mon.observe(u64([1]), np.ones(3, np.float32))
    assert mon.to_bytes() == before
    mon.observe(u64([]), np.ones((0, 3), np.float32))  # empty: no-op
    assert mon.to_bytes() == before


def split_sections(data: bytes) -> tuple[bytes, list[bytes]]:
    """The `io` container's preamble and section payloads (see src/io/mod.rs)."""
    pre, pos, payloads = data[:20], 20, []
    for _ in range(int.from_bytes(data[12:16], "little")):
        n = int.from_bytes(data[pos : pos + 8], "little")
        payloads.append(data[pos + 8 : pos + 8 + n])
        pos += 8 + n + 4
    return pre, payloads


def join_sections(pre: bytes, payloads: list[bytes]) -> bytes:
    """Frame payloads again with valid lengths and checksums."""
    out = bytearray(pre)
    for p in payloads:
        head = len(p).to_bytes(8, "little")
        out += head + p + zlib.crc32(head + p).to_bytes(4, "little")
    return bytes(out)


BY_COUNT, HLL, COUNTERS = 3, 2, 1


def test_crafted_bytes_with_valid_checksums_fail_cleanly():
    mon = Monitor(sample_rate=1.0)
    mon.observe(u64([1, 2, 3]), np.ones((3, 4), np.float32))
    mon.observe(u64([1, 2, 3]), np.full((3, 4), 2.0, np.float32))
    pre, sections = split_sections(mon.to_bytes())
    assert join_sections(pre, sections) == mon.to_bytes()

    def craft(index: int, offset: int, value: bytes) -> bytes:
        s = list(sections)
        s[index] = s[index][:offset] + value + s[index][offset + len(value) :]
        return join_sections(pre, s)

    # by_count: live u64, then bucket u64, n u64, then per statistic sum f64,
    # sumsq f64, min f32, max f32 (min > max used to panic in summary()).
    cases = {
        "min": craft(BY_COUNT, 40, struct.pack("<ff", 5.0, 1.0)),
        "bucket count": craft(BY_COUNT, 16, struct.pack("<Q", 0)),
        "sketch holds": craft(BY_COUNT, 16, struct.pack("<Q", 7)),
        "out of range": craft(BY_COUNT, 8, struct.pack("<Q", 10**9)),
        "register": craft(HLL, 5, b"\x63"),
        "dim": craft(COUNTERS, 0, struct.pack("<Q", 10**7)),
        "updates": craft(COUNTERS, 8, struct.pack("<Q", 2**63)),
    }
    for needle, data in cases.items():
        with pytest.raises(SnapshotError, match=needle):
            Monitor.from_bytes(data).summary()


def test_merge_overflow_is_an_error_and_changes_nothing():
    a, b = Monitor(sample_rate=1.0), Monitor(sample_rate=1.0)
    for m in (a, b):
        m.observe(u64([1, 2]), np.ones((2, 3), np.float32))
        m.observe(u64([1, 2]), np.full((2, 3), 2.0, np.float32))
    last = 0
    for _ in range(200):
        try:
            a.merge(b)
            b.merge(a)
        except EmbcoreError as e:
            assert "overflow" in str(e)
            break
        updates = b.summary()["updates"]
        assert updates > last  # never wraps
        last = updates
    else:
        pytest.fail("merging never overflowed")
    before = (a.to_bytes(), b.to_bytes())
    with pytest.raises(EmbcoreError, match="overflow"):
        a.merge(b)
        b.merge(a)
    assert (a.to_bytes(), b.to_bytes()) == before


def _observe_row_by_row(mon: Monitor, ids, rows, counts=None, timestamps=None) -> None:
    """The slow, obvious order of `observe`: one call per row."""
    for k in range(len(ids)):
        kw = {}
        if counts is not None:
            kw["counts"] = counts[k : k + 1]
        if timestamps is not None:
            kw["timestamps"] = timestamps[k : k + 1]
        mon.observe(ids[k : k + 1], rows[k : k + 1], **kw)


def _assert_same_monitor(a: Monitor, b: Monitor) -> None:
    """Equal up to the order in which f64 sums were added (one shard per call)."""
    sa, sb = a.summary(), b.summary()
    for key in ("updates", "skipped_updates", "items_seen", "tracked_items", "records"):
        assert sa[key] == sb[key], key
    for grouping in ("by_count", "by_popularity", "by_age"):
        ga, gb = sa[grouping], sb[grouping]
        np.testing.assert_array_equal(ga["lower"], gb["lower"])
        np.testing.assert_array_equal(ga["n"], gb["n"])
        for stat in STATS:
            for field in ("min", "max", "p50", "p90", "p99"):
                np.testing.assert_array_equal(ga[stat][field], gb[stat][field])
            np.testing.assert_allclose(ga[stat]["mean"], gb[stat]["mean"], rtol=1e-12)
    ta, tb = a.trajectories(), b.trajectories()
    for key in ("ids", "counts", "timestamps", "rows"):
        np.testing.assert_array_equal(ta[key], tb[key])
    pa, pb = a.path_efficiency(), b.path_efficiency()
    np.testing.assert_array_equal(pa["ids"], pb["ids"])
    np.testing.assert_allclose(pa["path_length"], pb["path_length"], rtol=1e-12)


@given(
    st.integers(1, 40),
    st.integers(1, 700),
    st.sampled_from([1, 3, 8, 32]),
    st.booleans(),
    st.integers(0, 2**32),
)
def test_observe_in_one_call_equals_one_call_per_row(universe, n, dim, given_times, seed) -> None:
    """observe() resolves a batch in blocks of rows, two passes each: repeats of an id
    within a block, across blocks and ids new in the batch must see the row observed
    just before, as when each row comes in a call of its own."""
    rng = np.random.default_rng(seed)
    warm = u64(rng.integers(0, universe, max(1, universe // 2)))
    ids = u64(rng.integers(0, universe, n))
    rows = rng.normal(size=(n, dim)).astype(np.float32)
    times = np.sort(rng.integers(0, 1000, n)) if given_times else None
    counts = rng.integers(0, 300, n) if given_times else None
    one, many = (Monitor(sample_rate=0.3, milestones=[1, 2, 3, 5, 8, 13], seed=2) for _ in "ab")
    for mon in (one, many):
        mon.observe(warm, rng.normal(size=(len(warm), dim)).astype(np.float32) * 0 + 1)
    one.observe(ids, rows, counts=counts, timestamps=times)
    _observe_row_by_row(many, ids, rows, counts, times)
    _assert_same_monitor(one, many)


def test_observe_reads_strided_and_float64_inputs_like_contiguous_ones() -> None:
    """Contiguous float32/int64 inputs are borrowed, the others converted: same result."""
    rng = np.random.default_rng(4)
    ids = u64(rng.integers(0, 50, 300))
    rows = rng.normal(size=(300, 6)).astype(np.float32)
    times = np.arange(600, dtype=np.int64)
    a, b = Monitor(sample_rate=0.5), Monitor(sample_rate=0.5)
    for k in range(2):
        a.observe(ids, rows + k, counts=np.arange(300) + k, timestamps=times[:300] + k)
        b.observe(
            ids,
            np.asfortranarray((rows + k).astype(np.float64)),
            counts=(np.arange(600) + 2 * k)[::2] // 2,
            timestamps=times[::2] // 2 + k,
        )
    assert a.to_bytes() == b.to_bytes()


def test_record_publish_picks_the_window_and_listed_cohorts_from_the_table() -> None:
    """record_publish reads a row's first-seen time only when a track window is set; with and
    without one, the records are of exactly the ids a reference computed from the table's
    metadata says are tracked."""
    model = embcore.MatrixFactorization(dim=4, seed=0)
    rng = np.random.default_rng(3)
    items = u64(rng.integers(0, 200, size=2000))
    model.train(
        u64(rng.integers(0, 50, size=2000)),
        items,
        np.ones(2000, np.float32),
        timestamps=np.arange(2000, dtype=np.int64),
    )
    meta = model.items.metadata()
    listed = [int(meta["ids"][0]), int(meta["ids"][5]), 10**9]  # the last is not in the table
    for window in [(100, 400), None]:
        mon = Monitor(sample_rate=0.0, track_ids=listed, track_window=window)
        mon.record_publish(model.items, 5000)
        want = set(listed[:2])
        if window is not None:
            first = meta["first_seen"]
            want |= set(meta["ids"][(first >= window[0]) & (first < window[1])].tolist())
        assert set(mon.trajectories()["ids"].tolist()) == want, window
        assert len(want) == 2 if window is None else len(want) > 20
