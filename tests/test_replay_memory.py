"""The replay's memory savings change no result: the copy-free trajectory paths against the old
full-copy code (kept here as the slow references), and a replay with and without the
allocator release between phases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import embcore
from embcore import analysis, runs
from embcore import replay as rp
from embcore.analysis import Trajectories
from embcore.datasets import synthetic_log
from embcore.modes import Trainer

DIM = 3


def _records(draw: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(0, 40))
    ids = np.array(draw(st.lists(st.integers(0, 6), min_size=n, max_size=n)), dtype=np.uint64)
    counts = np.array(draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)), dtype=np.int64)
    times = np.arange(n, dtype=np.int64) * 7
    rows = np.arange(n * DIM, dtype=np.float32).reshape(n, DIM)
    return ids, counts, times, rows


records = st.composite(_records)


def reference_with_initial_rows(
    traj: Trajectories, trainer: Trainer, fresh_model: Any
) -> Trajectories:
    """The former ``runs.with_initial_rows``: concatenate, then sort again."""
    ids = np.unique(traj.ids)
    if ids.size == 0:
        return traj
    table = trainer.item_table(fresh_model())
    table.insert(ids)
    start, stop = trainer.item_span
    initial = np.ascontiguousarray(table.get(ids)[:, start:stop])
    first = np.ones(traj.ids.size, dtype=bool)
    first[1:] = traj.ids[1:] != traj.ids[:-1]
    return Trajectories(
        np.concatenate([ids, traj.ids]),
        np.concatenate([np.zeros(ids.size, dtype=np.int64), traj.counts]),
        np.concatenate([traj.timestamps[first], traj.timestamps]),
        np.concatenate([initial, traj.rows]),
    )


def assert_same(a: Trajectories, b: Trajectories) -> None:
    for name in ("ids", "counts", "timestamps", "rows"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)


@settings(max_examples=60, deadline=None)
@given(records())
def test_with_initial_rows_matches_the_concatenate_and_sort_reference(rec: Any) -> None:
    # Count-0 records already present, repeated (id, count) pairs and one-record items
    # included: the merged records are the old ones, in the old order.
    traj = Trajectories(*rec[:2], rec[2], rec[3])

    def fresh_model() -> embcore.MatrixFactorization:
        return embcore.MatrixFactorization(dim=DIM, seed=0)

    trainer = Trainer("realtime", model=fresh_model)
    assert_same(
        runs.with_initial_rows(traj, trainer, fresh_model),
        reference_with_initial_rows(traj, trainer, fresh_model),
    )


@settings(max_examples=60, deadline=None)
@given(records())
def test_adopt_equals_the_constructor_and_keeps_sorted_input(rec: Any) -> None:
    ids, counts, times, rows = rec
    assert_same(
        Trajectories._adopt(ids, counts, times, rows), Trajectories(ids, counts, times, rows)
    )
    order = np.lexsort((counts, ids))
    ids, counts, times, rows = ids[order], counts[order], times[order], rows[order]
    adopted = Trajectories._adopt(ids, counts, times, rows)
    built = Trajectories(ids, counts, times, rows)
    assert_same(adopted, built)
    if ids.size:
        # Sorted records are adopted as they are; the constructor still copies its input.
        assert adopted.rows is rows and adopted.ids is ids
        assert not np.shares_memory(built.rows, rows) and not np.shares_memory(built.ids, ids)


def test_adopt_checks_as_the_constructor() -> None:
    rows = np.array([[np.nan, 1.0]], dtype=np.float32)
    one = np.ones(1, dtype=np.int64)
    try:
        Trajectories._adopt(one.astype(np.uint64), one, one, rows)
    except ValueError as err:
        assert "NaN" in str(err)
    else:  # pragma: no cover
        raise AssertionError("NaN rows were adopted")


def test_sorted_check_sees_an_inversion_past_the_first_block() -> None:
    n = (1 << 16) + 10
    ids = np.zeros(n, dtype=np.uint64)
    counts = np.arange(n, dtype=np.int64)
    assert analysis._sorted_by_id_and_count(ids, counts)
    counts[n - 3], counts[n - 2] = counts[n - 2], counts[n - 3]
    assert not analysis._sorted_by_id_and_count(ids, counts)
    t = Trajectories._adopt(ids, counts, counts.copy(), np.zeros((n, 1), np.float32))
    assert bool(np.all(np.diff(t.counts) > 0))


def _stripped(metrics: dict[str, Any]) -> dict[str, Any]:
    drop = {"timings", "memory", "runtime_seconds"}
    modes = {
        mode: {k: v for k, v in m.items() if k != "train_seconds"}
        for mode, m in metrics["modes"].items()
    }
    return {**{k: v for k, v in metrics.items() if k not in drop}, "modes": modes}


def test_replay_results_do_not_depend_on_the_memory_release(tmp_path: Path, monkeypatch) -> None:
    log = synthetic_log(tmp_path / "ratings.csv", "movielens", 3000, seed=1)
    options = {"period": "1h", "progress": False, "figures": False, "dim": 8, "track_rate": 1.0}
    released = rp.replay(log, None, **options)
    monkeypatch.setattr(runs, "release_free_memory", lambda: None)
    kept = rp.replay(log, None, **options)
    assert _stripped(released) == _stripped(kept)
    assert released["modes"]["realtime"]["trajectory_records"] > 0


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 300),
    chunk_rows=st.integers(1, 120),
    batch_rows=st.integers(1, 120),
    limit=st.one_of(st.none(), st.integers(1, 320)),
)
def test_loader_chunks_are_views_with_the_same_events(
    tmp_path_factory: Any, n: int, chunk_rows: int, batch_rows: int, limit: int | None
) -> None:
    # Parquet row groups of batch_rows: batches smaller than, equal to and larger than a
    # chunk, joined and split at every offset; the chunks are the file's rows in order.
    import pyarrow as pa
    import pyarrow.parquet as pq

    from embcore.datasets import ColumnMap, open_log

    rng = np.random.default_rng(n)
    users = rng.integers(0, 50, n).astype(np.uint64)
    items = rng.integers(0, 50, n).astype(np.uint64)
    times = np.arange(n, dtype=np.int64) * 3  # distinct times: no duplicates to drop
    labels = rng.integers(0, 2, n).astype(np.float32)
    path = tmp_path_factory.mktemp("log") / "log.parquet"
    table = pa.table({"user_id": users, "item_id": items, "time": times, "label": labels})
    pq.write_table(table, str(path), row_group_size=batch_rows)
    columns = ColumnMap(user="user_id", item="item_id", time="time", label="label")
    log = open_log(path, columns=columns, chunk_rows=chunk_rows, limit=limit)
    chunks = list(log)
    kept = n if limit is None else min(n, limit)
    assert [len(c) for c in chunks[:-1]] == [chunk_rows] * (len(chunks) - 1)
    assert sum(len(c) for c in chunks) == kept
    for name, expected in (("users", users), ("items", items), ("labels", labels)):
        got = np.concatenate([getattr(c, name) for c in chunks])
        np.testing.assert_array_equal(got, expected[:kept])
        assert all(getattr(c, name).flags.writeable for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c.timestamps for c in chunks]), times[:kept])


def test_bench_memory_ratios_with_and_without_the_monitor() -> None:
    from embcore import bench_replay

    child = {
        "events": 1000,
        "stream_seconds": 0.5,
        "peak_rss_bytes": 150_000,
        "peak_rss_validation_bytes": 120_000,
        "model_bytes": 52_000,
        "monitor_bytes": 20_000,
    }
    out = bench_replay._with_ratios(child, train_rate=4000.0)
    assert out["replay_events_per_s"] == 2000.0 and out["replay_over_train"] == 0.5
    assert out["reference_bytes"] == 28_000 + 52_000 + 20_000
    assert out["peak_rss_over_events_and_models"] == 1.5
    assert out["stream_peak_rss_over_events_and_models"] == 1.2
    assert out["peak_rss_over_events_and_models_without_monitor"] == 150_000 / 80_000
    assert out["stream_peak_rss_over_events_and_models_without_monitor"] == 1.5


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_peak_rss_is_the_process_own_not_its_parents() -> None:
    # ru_maxrss of a spawned child starts at the parent's peak (kept across exec): a bench
    # parent that trained a model made every replay child look at least that big.
    held = np.ones(300_000_000 // 8)
    code = "from embcore.runs import peak_rss; print(peak_rss())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(done.stdout) < 250_000_000 < held.nbytes
