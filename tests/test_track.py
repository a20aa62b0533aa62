"""embcore track: a series built from a known trajectory gives back its maturity, drift and
norms; versions are read once, in order; bad files are reported and skipped without touching
the state; a different dimension is an error; --fail-on exits 3."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import embcore
from embcore import analysis
from embcore.tables_io import Version, VersionError, open_version
from embcore.track import (
    NORM_RELATIVE_ERROR,
    NormSketch,
    TrackConfig,
    Tracker,
    TrackError,
    parse_rules,
    track,
)

EXACT = TrackConfig(sample_size=10_000, track_items=10_000)  # sample = whole table, all tracked


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def known_series(n: int = 60, dim: int = 8, versions: int = 6, seed: int = 0):
    """Item i wanders (a fresh random direction each version) until its settle version s_i,
    then keeps its final row; norms are 1 + i / n."""
    rng = np.random.default_rng(seed)
    settle = 2 + np.arange(n) % 3  # 2, 3, 4
    final = unit(rng.normal(size=(n, dim)))
    scale = (1.0 + np.arange(n) / n)[:, None]
    out = []
    for v in range(1, versions + 1):
        rows = np.where((v >= settle)[:, None], final, unit(rng.normal(size=(n, dim))))
        out.append((rows * scale).astype(np.float32))
    return settle, out


def write_npz(folder: Path, rows_by_version, ids=None, counts=None) -> list[Path]:
    paths = []
    for v, rows in enumerate(rows_by_version, start=1):
        path = folder / f"v{v}.npz"
        arrays = {"ids": np.arange(rows.shape[0]) if ids is None else ids, "weights": rows}
        if counts is not None:
            arrays["counts"] = counts[v - 1]
        np.savez(path, **arrays)
        paths.append(path)
    return paths


def km_median(durations: np.ndarray) -> int:
    """Smallest n with S(n) <= 0.5 when every item is observed."""
    values = np.sort(durations)
    return int(values[math.ceil(0.5 * values.size) - 1])


def test_known_trajectory_gives_back_maturity_drift_and_norms(tmp_path: Path) -> None:
    settle, rows = known_series()
    paths = write_npz(tmp_path, rows)
    m = track(paths, tmp_path / "state", out=None, config=EXACT, progress=False)
    versions = m["versions"]
    assert [v["version"] for v in versions] == [1, 2, 3, 4, 5, 6]
    last = versions[-1]
    # Maturity by version: the first version of the final run within alpha is s_i.
    assert last["maturity_versions_0.05_median"] == km_median(settle)
    assert last["maturity_versions_0.05_matured_share"] == 1.0
    assert last["tracked_items"] == 60
    # Drift against the previous version equals snapshot_drift on the full tables.
    for v in range(1, 6):
        ids = np.arange(60)
        ref = analysis.snapshot_drift((ids, rows[v - 1]), (ids, rows[v]), k=10, n_queries=1000)
        got = versions[v]
        assert got["drift_p50"] == pytest.approx(ref.unaligned.p50, abs=1e-12)
        assert got["drift_mean"] == pytest.approx(ref.unaligned.mean, abs=1e-12)
        assert got["aligned_drift_p50"] == pytest.approx(ref.aligned.p50, abs=1e-12)
        assert got["cka"] == pytest.approx(ref.cka, abs=1e-12)
        assert got["knn_overlap"] == pytest.approx(ref.jaccard.mean, abs=1e-12)
    # From version 5 on every item has settled: nothing moves.
    assert versions[4]["drift_p50"] == 0.0 and versions[4]["rows_unchanged"] == 60
    assert versions[3]["rows_unchanged"] == int((settle <= 3).sum())
    # Norms: 1 + i/n, mean and max exact, quantiles within the sketch's bound.
    norms = np.sort(1.0 + np.arange(60) / 60)
    assert last["norm_mean"] == pytest.approx(norms.mean(), rel=1e-6)
    assert last["norm_max"] == pytest.approx(norms.max(), rel=1e-6)
    for q in (0.5, 0.9, 0.99):
        exact = norms[math.floor(q * 59)]
        assert abs(last[f"norm_p{round(q * 100)}"] - exact) <= NORM_RELATIVE_ERROR * exact * 1.001


def test_exact_drift_of_known_rotations(tmp_path: Path) -> None:
    n = 101
    theta = np.linspace(0.0, 1.5, n)
    a = np.zeros((n, 4), np.float32)
    a[:, 0] = 1.0
    b = np.zeros((n, 4), np.float32)
    b[:, 0], b[:, 1] = np.cos(theta), np.sin(theta)
    paths = write_npz(tmp_path, [a, b])
    m = track(paths, tmp_path / "s", out=None, config=EXACT, progress=False)
    drift = 1.0 - np.cos(theta)
    assert m["versions"][1]["drift_p50"] == pytest.approx(np.quantile(drift, 0.5), abs=1e-6)
    assert m["versions"][1]["drift_p90"] == pytest.approx(np.quantile(drift, 0.9), abs=1e-6)


def test_rows_new_removed_unchanged_and_stale(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(10, 4)).astype(np.float32)
    t = Tracker(tmp_path / "s", TrackConfig(sample_size=100, track_items=100, stale_versions=2))
    t.add(Version.from_arrays("v1", np.arange(10), rows))
    second = rows.copy()
    second[:3] += 1.0  # ids 0-2 change, 3-7 do not, 8-9 removed, 10-11 new
    m = t.add(Version.from_arrays("v2", np.arange(12)[np.r_[0:8, 10:12]], second[np.r_[0:10]]))
    assert (m["rows_new"], m["rows_removed"], m["rows_unchanged"]) == (2, 2, 5)
    assert m["stale_rows"] == 0
    m = t.add(Version.from_arrays("v3", np.arange(12)[np.r_[0:8, 10:12]], second[np.r_[0:10]]))
    assert m["rows_unchanged"] == 10 and m["stale_rows"] == 5  # unchanged since v1


def test_incremental_runs_read_only_new_versions_and_match_one_run(tmp_path: Path) -> None:
    _, rows = known_series(seed=1)
    paths = write_npz(tmp_path, rows)
    once = track(paths, tmp_path / "once", out=None, config=EXACT, progress=False)
    first = track(paths[:3], tmp_path / "inc", out=None, config=EXACT, progress=False)
    assert first["new_versions"] == ["v1.npz", "v2.npz", "v3.npz"]
    again = track(paths, tmp_path / "inc", out=None, config=EXACT, progress=False)
    assert again["new_versions"] == ["v4.npz", "v5.npz", "v6.npz"]
    clean = [{k: v for k, v in x.items() if k != "path"} for x in once["versions"]]
    assert clean == [{k: v for k, v in x.items() if k != "path"} for x in again["versions"]]
    assert track(paths, tmp_path / "inc", out=None, progress=False)["new_versions"] == []


def test_monitor_state_is_kept_between_runs(tmp_path: Path) -> None:
    _, rows = known_series(seed=2)
    paths = write_npz(tmp_path, rows)
    track(paths[:2], tmp_path / "s", out=None, config=EXACT, progress=False)
    track(paths[2:], tmp_path / "s", out=None, config=EXACT, progress=False)
    reopened = Tracker(tmp_path / "s")
    assert reopened.monitor.summary()["updates"] == 60 * 5
    assert len(reopened.versions) == 6


def test_corrupt_version_is_reported_and_skipped_without_losing_state(tmp_path: Path) -> None:
    _, rows = known_series(seed=4)
    paths = write_npz(tmp_path, rows[:3])
    bad = tmp_path / "v2b.npz"  # sorts between v2 and v3
    bad.write_bytes(paths[1].read_bytes()[:200])
    warnings: list[str] = []
    m = track(
        [*paths, bad], tmp_path / "s", out=None, config=EXACT, progress=False, warn=warnings.append
    )
    assert [v["name"] for v in m["versions"]] == ["v1.npz", "v2.npz", "v3.npz"]
    assert len(warnings) == 1 and "v2b.npz" in warnings[0]
    assert m["skipped"][0]["name"] == "v2b.npz"
    # Remembered: a second run does not read it again, and the series goes on.
    warnings.clear()
    track([*paths, bad], tmp_path / "s", out=None, progress=False, warn=warnings.append)
    assert warnings == []


def test_a_failure_mid_read_leaves_the_state_untouched(tmp_path: Path) -> None:
    rows = np.eye(6, dtype=np.float32)
    t = Tracker(tmp_path / "s", EXACT)
    t.add(Version.from_arrays("v1", np.arange(6), rows))
    before = {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()}
    monitor_before = t.monitor.to_bytes()

    def broken(chunk_rows: int):
        yield np.arange(3), rows[:3], None
        raise OSError("truncated")

    with pytest.raises(VersionError, match="v2: cannot be read"):
        t.add(Version("v2", "npz", 6, 6, False, broken), chunk_rows=3)
    assert {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()} == before
    assert t.monitor.to_bytes() == monitor_before and len(t.versions) == 1


def test_a_different_dimension_is_a_clear_error(tmp_path: Path) -> None:
    t = Tracker(tmp_path / "s")
    t.add(Version.from_arrays("v1", np.arange(3), np.eye(3)))
    with pytest.raises(
        TrackError, match="v2 has dimension 4 but the tracked series has dimension 3"
    ):
        t.add(Version.from_arrays("v2", np.arange(3), np.ones((3, 4))))
    assert len(t.versions) == 1


def test_nan_and_over_norm_rows_are_counted_and_left_out(tmp_path: Path) -> None:
    rows = np.ones((20, 4), np.float32)
    rows[:3] = np.nan
    rows[3, 0] = np.inf
    rows[4] = 100.0
    t = Tracker(tmp_path / "s", TrackConfig(sample_size=100, track_items=100, max_norm=10.0))
    m = t.add(Version.from_arrays("v1", np.arange(20), rows))
    assert m["nan_rows"] == 4 and m["over_norm_rows"] == 1 and m["sample_rows"] == 16
    assert m["norm_max"] == pytest.approx(200.0)


def test_sample_is_bounded_and_estimates_the_table(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n = 20_000
    a = rng.normal(size=(n, 4)).astype(np.float32)
    b = a.copy()
    b[: n // 2] += 1.0
    t = Tracker(tmp_path / "s", TrackConfig(sample_size=500, track_items=50))
    t.add(Version.from_arrays("v1", np.arange(n), a), chunk_rows=1000)
    m = t.add(Version.from_arrays("v2", np.arange(n), b), chunk_rows=1000)
    assert m["sample_rows"] <= 1000 and m["rows"] == n
    assert abs(m["rows_unchanged"] - n // 2) < 0.15 * n
    # A growing table halves the sample rate instead of growing the sample.
    big = rng.normal(size=(4 * n, 4)).astype(np.float32)
    m = t.add(Version.from_arrays("v3", np.arange(4 * n), big), chunk_rows=5000)
    assert m["sample_rows"] <= 1000 and m["sample_rate"] < 500 / n


def test_version_order_by_name_mtime_and_time_column(tmp_path: Path) -> None:
    for name, t in (("v10", 1), ("v2", 3), ("v1", 2)):
        pq.write_table(
            pa.table({"id": [1, 2], "embedding": [[1.0, 0.0], [0.0, 1.0]], "at": [t, t]}),
            tmp_path / f"{name}.parquet",
        )
        os.utime(tmp_path / f"{name}.parquet", (t * 1000, t * 1000))
    paths = sorted(tmp_path.glob("*.parquet"))
    names = lambda m: [v["name"] for v in m["versions"]]  # noqa: E731
    by_name = track(paths, tmp_path / "a", out=None, progress=False)
    assert names(by_name) == ["v1.parquet", "v2.parquet", "v10.parquet"]
    by_mtime = track(paths, tmp_path / "b", out=None, order="mtime", progress=False)
    assert names(by_mtime) == ["v10.parquet", "v1.parquet", "v2.parquet"]
    by_time = track(paths, tmp_path / "c", out=None, order="time", time_column="at", progress=False)
    assert names(by_time) == ["v10.parquet", "v1.parquet", "v2.parquet"]


def test_a_version_sorting_before_the_last_read_is_left(tmp_path: Path) -> None:
    np.savez(tmp_path / "v2.npz", ids=np.arange(2), weights=np.eye(2))
    track([tmp_path / "v2.npz"], tmp_path / "s", out=None, progress=False)
    np.savez(tmp_path / "v1.npz", ids=np.arange(2), weights=np.eye(2))
    warnings: list[str] = []
    m = track(
        [tmp_path / "v1.npz", tmp_path / "v2.npz"],
        tmp_path / "s",
        out=None,
        progress=False,
        warn=warnings.append,
    )
    assert m["new_versions"] == [] and "sorts before v2.npz" in warnings[0]


# -------------------------------------------------------------------------------- readers


def _formats(tmp_path: Path, ids: np.ndarray, rows: np.ndarray, counts: np.ndarray) -> list[Path]:
    d = rows.shape[1]
    out = []
    p = tmp_path / "list.parquet"
    pq.write_table(
        pa.table({"id": ids, "embedding": [list(r) for r in rows.astype(float)], "count": counts}),
        p,
        row_group_size=7,
    )
    out.append(p)
    p = tmp_path / "fixed.parquet"
    flat = pa.FixedSizeListArray.from_arrays(pa.array(rows.ravel()), d)
    pq.write_table(pa.table({"item_id": ids, "vec": flat, "interactions": counts}), p)
    out.append(p)
    p = tmp_path / "columns.parquet"
    cols = {"id": ids, "count": counts} | {f"e{j}": rows[:, j] for j in range(d)}
    pq.write_table(pa.table(cols), p, row_group_size=5)
    out.append(p)
    folder = tmp_path / "dataset"
    folder.mkdir()
    pq.write_table(
        pa.table({"id": ids[:10], "embedding": flat[:10], "count": counts[:10]}),
        folder / "part-0.parquet",
    )
    pq.write_table(
        pa.table({"id": ids[10:], "embedding": flat[10:], "count": counts[10:]}),
        folder / "part-1.parquet",
    )
    out.append(folder)
    p = tmp_path / "t.npz"
    np.savez(p, ids=ids, weights=rows, counts=counts)
    out.append(p)
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "ids.npy", ids)
    np.save(folder / "weights.npy", rows)
    np.save(folder / "counts.npy", counts)
    out.append(folder)
    try:  # the torch extra brings it; CI installs it
        from safetensors.numpy import save_file
    except ImportError:
        save_file = None
    if save_file is not None:
        p = tmp_path / "t.safetensors"
        save_file({"ids": ids.astype(np.int64), "weights": rows, "counts": counts}, str(p))
        out.append(p)
    table = embcore.EmbeddingTable(d)
    table.set(ids.astype(np.uint64), rows)
    p = tmp_path / "snap.embc"
    table.save(p)
    out.append(p)
    return out


def test_every_format_reads_the_same_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    ids = rng.permutation(1000)[:23].astype(np.int64)
    rows = rng.normal(size=(23, 5)).astype(np.float32)
    counts = rng.integers(0, 50, 23).astype(np.int64)
    for path in _formats(tmp_path, ids, rows, counts):
        v = open_version(path)
        assert (v.dim, v.num_rows) == (5, 23), path
        chunks = list(v.chunks(4))
        assert max(c.ids.size for c in chunks) <= 4
        got_ids = np.concatenate([c.ids for c in chunks])
        got = np.concatenate([c.rows for c in chunks])
        order = np.argsort(got_ids)
        expect = np.argsort(ids)
        np.testing.assert_array_equal(got_ids[order], ids[expect].astype(np.uint64))
        np.testing.assert_array_equal(got[order], rows[expect])
        if v.format != "snapshot":  # a snapshot's counts are its own interaction counts
            got_counts = np.concatenate([c.counts for c in chunks])
            np.testing.assert_array_equal(got_counts[order], counts[expect])


def test_unreadable_files_are_version_errors_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "junk.bin").write_bytes(b"hello world")
    (tmp_path / "half.parquet").write_bytes(b"PAR1" + b"\0" * 50)
    (tmp_path / "x.safetensors").write_bytes(b"\x10\0\0\0\0\0\0\0{")
    pq.write_table(pa.table({"name": ["a"]}), tmp_path / "noid.parquet")
    np.savez(tmp_path / "nokeys.npz", a=np.zeros(3))
    for name in (
        "junk.bin",
        "half.parquet",
        "x.safetensors",
        "noid.parquet",
        "nokeys.npz",
        "missing.npz",
    ):
        with pytest.raises(VersionError, match=name):
            list(open_version(tmp_path / name).chunks())


def test_ragged_list_rows_are_an_error(tmp_path: Path) -> None:
    pq.write_table(
        pa.table({"id": [1, 2], "embedding": [[1.0, 2.0], [1.0]]}), tmp_path / "r.parquet"
    )
    with pytest.raises(VersionError, match="row 1 of 'embedding' has 1 values"):
        list(open_version(tmp_path / "r.parquet").chunks())


def test_framework_arrays_through_dlpack(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    w = torch.randn(6, 3)
    v = Version.from_arrays("t", torch.arange(6), w, counts=torch.arange(6))
    chunk = next(v.chunks())
    np.testing.assert_array_equal(chunk.rows, w.numpy())
    assert np.shares_memory(np.from_dlpack(w), w.numpy())


# -------------------------------------------------------------------------------- rules, CLI


def test_rules_parse_and_breach() -> None:
    rules = parse_rules("nan_rows>0, norm_p99>=10 ,drift_p50<0.3")
    assert [str(r) for r in rules] == ["nan_rows>0", "norm_p99>=10", "drift_p50<0.3"]
    assert rules[0].breached({"nan_rows": 1}) and not rules[0].breached({"nan_rows": 0})
    assert not rules[2].breached({"drift_p50": None})
    with pytest.raises(TrackError, match="unknown metric 'nan'"):
        parse_rules("nan>0")
    with pytest.raises(TrackError, match="is not NAME OP NUMBER"):
        parse_rules("nan_rows")


def test_norm_sketch_bound() -> None:
    rng = np.random.default_rng(0)
    values = np.exp(rng.normal(size=10_000) * 3)
    s = NormSketch()
    for part in np.array_split(values, 7):
        s.add(part)
    ordered = np.sort(values)
    for q in (0.01, 0.25, 0.5, 0.9, 0.999):
        exact = ordered[math.floor(q * (values.size - 1))]
        assert abs(s.quantile(q) - exact) <= NORM_RELATIVE_ERROR * exact * 1.0001


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embcore.cli", "track", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_fail_on_exits_3_with_one_line_per_breach(tmp_path: Path) -> None:
    rows = np.ones((10, 4), np.float32)
    rows[0] = np.nan
    np.savez(tmp_path / "v1.npz", ids=np.arange(10), weights=rows)
    np.savez(tmp_path / "v2.npz", ids=np.arange(10), weights=100 * rows)
    r = cli(
        str(tmp_path / "v*.npz"),
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
        "--fail-on",
        "nan_rows>0,norm_p99>10,drift_p50>0.3",
    )
    assert r.returncode == 3, r.stderr
    alerts = [line for line in r.stderr.splitlines() if "alert:" in line]
    assert [line.rsplit(" (value", 1)[0] for line in alerts] == [
        "embcore track: alert: v1.npz: nan_rows>0",
        "embcore track: alert: v2.npz: nan_rows>0",
        "embcore track: alert: v2.npz: norm_p99>10",
    ]
    assert alerts[0].endswith("(value 1)")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert len(metrics["versions"]) == 2 and (tmp_path / "out" / "report.html").exists()
    assert len(metrics["alerts"]) == 3


def test_cli_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    np.savez(tmp_path / "v1.npz", ids=np.arange(3), weights=np.eye(3))
    np.savez(tmp_path / "v2.npz", ids=np.arange(3), weights=np.ones((3, 5)))
    r = cli(
        str(tmp_path / "v1.npz"),
        str(tmp_path / "v2.npz"),
        "--out",
        str(tmp_path / "o"),
        "--no-progress",
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "embcore track: error: v2.npz has dimension 5 but the tracked series has dimension 3; "
        "track it with another --state"
    ]
    r = cli(str(tmp_path / "v1.npz"), "--fail-on", "bogus>1", "--out", str(tmp_path / "o2"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    r = cli(str(tmp_path / "v1.npz"), "--out", str(tmp_path / "o"), "--sample-size", "7")
    assert r.returncode == 2 and "other settings (sample_size=100000)" in r.stderr


def test_maturity_by_interaction_count_where_counts_exist(tmp_path: Path) -> None:
    settle, rows = known_series(seed=6)
    per_version = 1 + np.arange(60) % 5  # item i gains 1..5 interactions per version
    counts = [v * per_version for v in range(1, 7)]
    paths = write_npz(tmp_path, rows, counts=counts)
    last = track(paths, tmp_path / "s", out=None, config=EXACT, progress=False)["versions"][-1]
    assert last["maturity_versions_0.05_median"] == km_median(settle)
    assert last["maturity_interactions_0.05_median"] == km_median(settle * per_version)
    # Norm 1 + i/60 against counts (1..5 per version): the rank correlation the table has.
    expect = analysis.norm_popularity((np.arange(60), rows[-1]), (np.arange(60), counts[-1]))
    assert last["norm_popularity_spearman"] == pytest.approx(expect.spearman)


def test_metrics_carry_the_monitor_summary(tmp_path: Path) -> None:
    _, rows = known_series(seed=8)
    m = track(write_npz(tmp_path, rows[:3]), tmp_path / "s", out=None, config=EXACT, progress=False)
    assert m["monitor"]["updates"] == 120 and m["monitor"]["memory_bytes"] > 0
    assert m["monitor"]["overall"]["drift"]["n"] == 120
    json.dumps(m, allow_nan=False)


def test_cli_no_version_found_is_an_error(tmp_path: Path) -> None:
    r = cli(str(tmp_path / "nothing-*.npz"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no version found" in r.stderr and "Traceback" not in r.stderr


def test_duplicate_ids_are_an_error_and_small_tables_track_their_items(tmp_path: Path) -> None:
    t = Tracker(tmp_path / "s", TrackConfig(track_items=50))
    with pytest.raises(VersionError, match="id 1 appears more than once"):
        t.add(Version.from_arrays("v1", [0, 1, 1], np.eye(3)))
    m = t.add(Version.from_arrays("v1", np.arange(200), np.ones((200, 4))))
    assert 25 <= m["tracked_items"] <= 75  # about track_items of the 200 rows, not 200/100 000


def test_report_summary_rows_are_versions(tmp_path: Path) -> None:
    _, rows = known_series(n=20, versions=2, seed=5)
    track(write_npz(tmp_path, rows), tmp_path / "s", out=tmp_path / "out", progress=False)
    page = (tmp_path / "out" / "report.html").read_text()
    summary = page.split("<h2>Summary</h2>", 1)[1].split("</table>", 1)[0]
    assert summary.startswith("<table><tr><th>version</th>")
    assert "<td>v1.npz</td>" in summary and "<td>v2.npz</td>" in summary
    assert "<th>mode</th>" not in page
