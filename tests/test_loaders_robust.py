"""Damaged and unusual logs: each is read correctly or fails with one clear line naming the
file, the line or byte and the fix (the CLI exits 2); malformed rows are counted, and a run
fails when they exceed ``--max-bad-rows``. Every log is built here; nothing is downloaded."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embcore import cli, datasets
from embcore import replay as rp
from embcore.datasets import (
    SYNTHETIC_COLUMNS,
    ColumnMap,
    DatasetError,
    open_log,
    read_events,
    synthetic_log,
)
from embcore.errors import DatasetError as CoreDatasetError

FAST = {"dim": 4, "progress": False, "figures": False}


def _ratings(tmp_path: Path, n: int = 3000) -> Path:
    return synthetic_log(tmp_path / "ratings.csv", "movielens", n, seed=1)


def _cli_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    code = cli.main([*argv, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_dataset_errors_are_embcore_errors() -> None:
    assert issubclass(DatasetError, CoreDatasetError)


def test_flipped_parquet_bytes_read_or_fail_clearly(tmp_path: Path) -> None:
    path = synthetic_log(tmp_path / "log.parquet", "parquet", 3000)
    good = bytes(path.read_bytes())
    flipped = tmp_path / "flip.parquet"
    failures = 0
    for position in range(0, len(good), max(1, len(good) // 150)):
        damaged = bytearray(good)
        damaged[position] ^= 0xFF
        flipped.write_bytes(damaged)
        try:
            events = read_events(flipped, columns=SYNTHETIC_COLUMNS)
        except DatasetError as err:
            failures += 1
            assert str(err).startswith(str(flipped)) and "\n" not in str(err)
            continue
        assert len(events) <= 3000
    assert failures > 10  # most flips land in compressed pages or metadata


def test_flipped_parquet_byte_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = synthetic_log(tmp_path / "log.parquet", "parquet", 3000)
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(damaged)
    columns = "user=user_id,item=item_id,time=time_ms,label=label"
    err = _cli_error(
        ["replay", str(path), "--columns", columns, "--time-unit", "ms", "--out",
         str(tmp_path / "out")],
        capsys,
    )  # fmt: skip
    assert "log.parquet" in err and "damaged" in err and "again" in err


def test_truncated_gzip_log(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = _ratings(tmp_path).read_bytes()
    packed = gzip.compress(raw)
    path = tmp_path / "ratings.csv.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DatasetError, match=r"ratings\.csv\.gz: .*truncated or damaged.*gzip -t"):
        read_events(path)
    err = _cli_error(["replay", str(path), "--out", str(tmp_path / "out")], capsys)
    assert "truncated" in err
    path.write_bytes(packed)  # the whole file reads
    assert len(read_events(path)) == 3000


def test_byte_order_mark_before_the_header(tmp_path: Path) -> None:
    plain = _ratings(tmp_path)
    bom = tmp_path / "bom-ratings.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    log = open_log(bom)
    assert log.format == "movielens"
    got, want = log.read(), read_events(plain)
    assert np.array_equal(got.users, want.users) and np.array_equal(got.labels, want.labels)


def test_unterminated_quote_fails_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    lines = _ratings(tmp_path).read_text().splitlines()
    lines[100] = lines[100].replace(",", ',"', 1)  # line 101 of the file
    path = tmp_path / "quoted.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"quoted\.csv: line 101: a quote .* the next [\d,]+ "):
        read_events(path)
    err = _cli_error(["replay", str(path), "--out", str(tmp_path / "out")], capsys)
    assert "line 101" in err and "quote" in err


def test_a_50_mb_line_is_one_malformed_row(tmp_path: Path) -> None:
    lines = _ratings(tmp_path).read_bytes().split(b"\n")
    lines[1500] = b"1,2," + b"9" * 50_000_000  # line 1501: one field short, 50 MB
    path = tmp_path / "long.csv"
    path.write_bytes(b"\n".join(lines))
    log = open_log(path, chunk_rows=1000)  # blocks of 64 kB: the line needs many restarts
    events = log.read()
    assert len(events) == 2999 and log.report.malformed_rows == 1
    assert log.report.malformed_examples[0].line == 1501
    assert log.report.rows_read == 3000


def test_malformed_rows_beyond_the_limit_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    lines = _ratings(tmp_path, 1000).read_text().splitlines()
    for k in range(1, len(lines), 20):  # 50 of 1000 rows: 5%
        lines[k] = lines[k].replace(",", ",x", 1)
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"50 of the first 1,000 rows are malformed .*line 2"):
        read_events(path)  # default 1%
    assert len(read_events(path, max_bad_rows="10%")) == 950
    assert len(read_events(path, max_bad_rows=50)) == 950
    with pytest.raises(DatasetError, match="more than --max-bad-rows 49 allows"):
        read_events(path, max_bad_rows=49)
    err = _cli_error(["replay", str(path), "--out", str(tmp_path / "out")], capsys)
    assert "--max-bad-rows" in err
    code = cli.main(
        ["replay", str(path), "--max-bad-rows", "5%", "--no-progress", "--no-figures",
         "--out", str(tmp_path / "ok"), "--dim", "4"]
    )  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "ok" / "metrics.json").read_text())["log_report"]
    assert report["malformed_rows"] == 50 and report["events_out"] == 950
    with pytest.raises(ValueError, match="max_bad_rows must be"):
        open_log(path, max_bad_rows="lots")


def test_a_few_bad_rows_in_a_small_log_pass(tmp_path: Path) -> None:
    lines = _ratings(tmp_path, 50).read_text().splitlines()
    lines[3] = "1,2,three,4"
    path = tmp_path / "small.csv"
    path.write_text("\n".join(lines) + "\n")
    log = open_log(path)
    assert len(log.read()) == 49 and log.report.malformed_rows == 1  # the floor of 10 rows


def test_generic_log_from_the_shell(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A ';'-separated log with its own column names, times in ms and a graded label."""
    rng = np.random.default_rng(0)
    n = 2000
    ms = 1_700_000_000_000 + np.cumsum(rng.integers(1, 5000, n))
    grade = rng.integers(0, 10, n)
    rows = [f"{u};{i};{t};{g}" for u, i, t, g in zip(
        rng.integers(1, 50, n), rng.integers(1, 300, n), ms, grade, strict=True)]  # fmt: skip
    path = tmp_path / "events.txt"
    path.write_text("uid;vid;when;grade\n" + "\n".join(rows) + "\n")
    err = _cli_error(["replay", str(path), "--out", str(tmp_path / "x")], capsys)
    assert "cannot detect" in err and "--columns user=COL" in err
    out = tmp_path / "out"
    code = cli.main(
        ["replay", str(path), "--columns", "user=uid,item=vid,time=when,label=grade",
         "--label-threshold", "7", "--time-unit", "ms", "--sep", ";", "--no-progress",
         "--no-figures", "--out", str(out), "--dim", "4", "--modes", "realtime"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["columns"]["time_unit"] == "ms"
    assert metrics["config"]["columns"]["label_rule"] == "label >= 7"
    assert metrics["config"]["first_event_time"] == int(ms[0] // 1000)
    engagement = metrics["modes"]["realtime"]["engagement"]
    assert engagement["positive_rate"] == pytest.approx((grade >= 7).mean())


def test_plain_header_names_need_no_columns_flag(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("user,item,time,label\n1,2,10,1\n2,3,11,0\n1,3,12,1\n")
    log = open_log(path)
    assert (log.format, log.columns.label) == ("csv", "label")
    assert log.read().labels.tolist() == [1.0, 0.0, 1.0]


def test_wrong_separator_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _ratings(tmp_path, 200)
    with pytest.raises(DatasetError, match=r"tab-separated.*looks ','-separated.*--sep ','"):
        open_log(path, "movielens-100k")
    err = _cli_error(
        ["replay", str(path), "--format", "movielens-100k", "--out", str(tmp_path / "o")], capsys
    )
    assert "separated" in err and "has no events" not in err
    assert len(read_events(path, "movielens-100k", separator=",")) == 200


def test_unsorted_log_too_large_to_sort_is_refused_before_memory_runs_out(
    tmp_path: Path,
) -> None:
    path = synthetic_log(tmp_path / "ratings.csv", "movielens", 500, shuffle=True)
    for sort in ("auto", "memory"):
        with pytest.raises(DatasetError, match=r"more than the 100 rows .* sort -s") as err:
            list(open_log(path, sort=sort, max_sort_rows=100, chunk_rows=50))
        assert "\n" not in str(err.value)
    assert datasets._default_max_sort_rows() >= 1_000_000


# --------------------------------------------------------------------------------------------
# --period auto and durations


def _long_sparse_log(tmp_path: Path) -> Path:
    """3,000 ratings over ten years, most of them in the first year (as MovieLens)."""
    rng = np.random.default_rng(2)
    year = 365 * 86_400
    t = np.sort(np.concatenate([rng.uniform(0, year, 2500), rng.uniform(0, 10 * year, 500)]))
    path = tmp_path / "ratings.csv"
    lines = ["userId,movieId,rating,timestamp"] + [
        f"{u},{i},{r},{int(1_000_000_000 + s)}"
        for u, i, r, s in zip(
            rng.integers(1, 100, t.size), rng.integers(1, 400, t.size),
            rng.integers(1, 6, t.size), t, strict=True)
    ]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def test_period_auto_and_the_empty_window_warning(tmp_path: Path) -> None:
    log = _long_sparse_log(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = rp.replay(log, None, modes=["batch"], **FAST)
    chosen = metrics["config"]["period_seconds"]
    assert metrics["config"]["period_auto"] and chosen in rp.PERIOD_LADDER
    profile = open_log(log).time_profile()
    assert chosen == rp.choose_period(profile)
    assert rp.empty_window_share(profile, chosen) < 0.5
    assert (profile.last - profile.first) / chosen >= rp.MIN_WINDOWS
    with pytest.warns(rp.ReplayWarning, match=r"--period 6h gives mostly empty batch windows.*"
                      r"--period auto would choose") as caught:  # fmt: skip
        rp.replay(log, None, modes=["batch"], period="6h", **FAST)
    assert rp._period_text(chosen) in str(caught[0].message)


def test_period_warning_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    log = _long_sparse_log(tmp_path)
    code = cli.main(
        ["replay", str(log), "--period", "6h", "--no-progress", "--no-figures", "--dim", "4",
         "--fresh-seconds", "1d", "--out", str(tmp_path / "out")]
    )  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert "embcore replay: warning: --period 6h gives mostly empty batch windows" in err
    config = json.loads((tmp_path / "out" / "metrics.json").read_text())["config"]
    assert config["fresh_seconds"] == 86_400 and config["period_seconds"] == 6 * 3600


@given(st.integers(1, 10**7), st.integers(0, 10**8), st.integers(1, 10**6))
@settings(max_examples=60, deadline=None)
def test_choose_period_keeps_enough_windows(n: int, start: int, span: int) -> None:
    sample = np.sort(np.random.default_rng(0).integers(start, start + span, min(n, 5000)))
    profile = datasets.TimeProfile(n, int(sample[0]), int(sample[-1]), sample)
    period = rp.choose_period(profile)
    assert period in rp.PERIOD_LADDER
    width = profile.last - profile.first + 1
    assert width / period >= rp.MIN_WINDOWS or period == rp.PERIOD_LADDER[0]


def test_time_profile_with_a_limit_covers_the_first_events(tmp_path: Path) -> None:
    path = _ratings(tmp_path, 1000)
    events = read_events(path)
    profile = open_log(path, limit=100).time_profile()
    assert profile.events == 100 and profile.first == int(events.timestamps[0])
    assert profile.last == int(events.timestamps[99])


# --------------------------------------------------------------------------------------------
# Duplicates: the hash pre-check finds exactly what the exact comparison finds


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 2)), max_size=80))
@settings(max_examples=80, deadline=None)
def test_duplicates_match_a_set_reference(rows: list[tuple[int, int, int]]) -> None:
    rows = sorted(rows, key=lambda r: r[2])  # time order
    table = pa.table(
        {
            "u": np.array([r[0] for r in rows], np.int64),
            "i": np.array([r[1] for r in rows], np.int64),
            "t": np.array([r[2] for r in rows], np.int64),
        }
    )
    if not rows:
        return
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.parquet"
        pq.write_table(table, str(path))
        for chunk_rows in (3, 1000):
            log = open_log(path, columns=ColumnMap(user="u", item="i", time="t"),
                           chunk_rows=chunk_rows)  # fmt: skip
            events = log.read()
            seen: set[tuple[int, int, int]] = set()
            kept = []
            for r in rows:
                if r not in seen:
                    seen.add(r)
                    kept.append(r)
            assert log.report.duplicate_rows == len(rows) - len(kept)
            got = list(zip(events.users.tolist(), events.items.tolist(),
                           events.timestamps.tolist(), strict=True))  # fmt: skip
            assert got == kept
