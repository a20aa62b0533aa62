"""What a hostile new user tried from the shell (issue 14 audit): each mistake is one line on
stderr naming the flag or the file's line and the fix, exit 2, no traceback and no output left;
each odd-but-valid log is read correctly."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embcore import cli, datasets
from embcore.datasets import ColumnMap, open_log

HEADER = "user,item,time,label"


def _rows(n: int = 300, start: int = 1_600_000_000) -> list[str]:
    rng = np.random.default_rng(0)
    times = np.sort(rng.integers(start, start + 20 * 86_400, n))
    return [
        f"{u},{i},{t},{y}"
        for u, i, t, y in zip(
            rng.integers(0, 50, n),
            rng.integers(0, 80, n),
            times,
            rng.integers(0, 2, n),
            strict=True,
        )
    ]


def _log(tmp_path: Path, lines: list[str], name: str = "log.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _fails(argv: list[str], capsys: pytest.CaptureFixture, out: Path | None = None) -> str:
    """Run ``embcore ARGV``; it must exit 2 with one line on stderr and leave no output."""
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "warning:" not in line]
    assert len(lines) == 1, err
    if out is not None:
        assert not out.exists()
    return lines[0]


def _replay(log: Path, out: Path, *flags: str) -> list[str]:
    return ["replay", str(log), "--out", str(out), "--no-progress", "--no-figures", *flags]


# --------------------------------------------------------------------------------------------
# Flags


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--period", "-1h"), ("--fresh-seconds", "-1d"), ("--window", "-90m"), ("--dim", "-3")],
)
def test_negative_values_reach_the_flags_check(
    flag: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """argparse took '-1h' for an unknown option and said 'expected one argument'."""
    log = _log(tmp_path, [HEADER, *_rows()])
    line = _fails(_replay(log, tmp_path / "out", flag, value), capsys, tmp_path / "out")
    assert f"argument {flag}:" in line and repr(value) in line.replace(" got -3", " got '-3'")


@pytest.mark.parametrize("value", ["99999999999999999999d", "36501d"])
def test_a_duration_beyond_100_years_is_refused(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A huge --period overflowed event-time arithmetic (a traceback after the log was read)."""
    log = _log(tmp_path, [HEADER, *_rows()])
    line = _fails(_replay(log, tmp_path / "out", "--period", value), capsys, tmp_path / "out")
    assert "argument --period: expected a positive duration of 1s to 36500d" in line


def test_sub_second_duration_message_says_at_least_one_second(
    capsys: pytest.CaptureFixture,
) -> None:
    line = _fails(["study", "--period", "0.5s"], capsys)
    assert "1s to 36500d" in line and "'0.5s'" in line


def test_study_window_is_checked_as_window(capsys: pytest.CaptureFixture) -> None:
    """It said '--window: --period must be a positive duration'."""
    line = _fails(["study", "--window", "0"], capsys)
    assert line.startswith("embcore study: error: argument --window: expected a positive")
    assert "--period" not in line.split("argument --window", 1)[1].split("(see")[0]


@pytest.mark.parametrize(
    ("modes", "message"),
    [
        ("realtime,foo", "argument --modes: unknown mode 'foo'"),
        ("batch,batch", "argument --modes: a mode is listed twice"),
    ],
)
def test_modes_errors_name_the_flag(
    modes: str, message: str, capsys: pytest.CaptureFixture
) -> None:
    assert message in _fails(["study", "--modes", modes], capsys)


def test_modes_ignore_case() -> None:
    args = cli.build_parser().parse_args(["study", "--modes", "Realtime, BATCH"])
    assert args.modes == ["realtime", "batch"]


def test_label_threshold_nan_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """NaN made every label 0 and the run died writing metrics.json (ValueError traceback)."""
    log = _log(tmp_path, [HEADER, *_rows()])
    out = tmp_path / "out"
    for value in ("nan", "inf"):
        line = _fails(_replay(log, out, "--label-threshold", value), capsys, out)
        assert "--label-threshold must be a finite number" in line
    with pytest.raises(ValueError, match="label-threshold must be a finite number"):
        open_log(log, label_threshold=float("nan"))


def test_unknown_flag_is_reported_by_the_command_with_the_closest_flag(
    capsys: pytest.CaptureFixture,
) -> None:
    line = _fails(["replay", "x.csv", "--perod", "1h"], capsys)
    assert line.startswith("embcore replay: error: unrecognized arguments: --perod 1h")
    assert "did you mean --period?" in line and "(see embcore replay --help)" in line


def test_columns_giving_one_column_two_roles_is_refused(capsys: pytest.CaptureFixture) -> None:
    line = _fails(["replay", "x.csv", "--columns", "user=uid,item=uid,time=ts"], capsys)
    assert "argument --columns: --columns gives column 'uid' two roles (user= and item=)" in line


def _subparser(command: str) -> argparse.ArgumentParser:
    cli.build_parser()
    return cli._COMMAND_PARSERS[command]


@pytest.mark.parametrize("command", ["study", "replay", "bench"])
def test_no_flag_shows_default_not_set(command: str) -> None:
    """'(default: not set)' says nothing; each flag says what happens without it."""
    parser = _subparser(command)
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.option_strings:
            shown = formatter._get_help_string(action) or ""
            assert "not set" not in shown, f"{command} {action.option_strings[0]}: {shown}"


def test_study_help_gives_the_library_defaults() -> None:
    from embcore import runs, study

    parser = _subparser("study")
    helps = {a.option_strings[0]: a.help or "" for a in parser._actions if a.option_strings}
    assert f"(default {study.DEFAULT_LEARNING_RATE})" in helps["--learning-rate"]
    assert f"(default {study.DEFAULT_INIT_SCALE})" in helps["--init-scale"]
    assert f"(default {runs.DEFAULT_ALPHA})" in helps["--alpha"]
    assert "(default: warm)" in helps["--init"]


# --------------------------------------------------------------------------------------------
# bench


@pytest.mark.parametrize("only", ["", ",", " , "])
def test_bench_only_empty_is_refused(only: str, capsys: pytest.CaptureFixture) -> None:
    """An empty --only ran every benchmark."""
    line = _fails(["bench", "--only", only], capsys)
    assert "argument --only: give at least one group" in line and "training" in line


def test_bench_out_directory_is_refused_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--out naming a directory failed with 'Is a directory' after the benchmarks had run."""
    from embcore import bench

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("a benchmark ran")

    monkeypatch.setattr(bench, "run_suite", never)
    line = _fails(["bench", "--only", "drift", "--out", str(tmp_path)], capsys)
    assert f"--out {tmp_path} is a directory" in line


# --------------------------------------------------------------------------------------------
# Logs


def test_header_names_with_spaces_are_read(tmp_path: Path) -> None:
    """'user, item, time, label' failed with 'the file is truncated or damaged'."""
    rows = _rows()
    spaced = _log(tmp_path, ["user, item ,time,  label", *rows], "spaced.csv")
    plain = _log(tmp_path, [HEADER, *rows], "plain.csv")
    a, b = open_log(spaced).read(), open_log(plain).read()
    assert len(a) == len(rows)
    for field in ("users", "items", "timestamps", "labels"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_bad_rows_keep_physical_line_numbers_with_a_trimmed_header(tmp_path: Path) -> None:
    rows = _rows()
    rows[9] = "1,2"
    log = open_log(_log(tmp_path, ["user, item, time, label", *rows]))
    log.read()
    assert [issue.line for issue in log.report.malformed_examples] == [11]


def test_duplicate_header_names_are_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    log = _log(tmp_path, ["user,user,time,label", *_rows()])
    line = _fails(_replay(log, tmp_path / "out"), capsys, tmp_path / "out")
    assert "the header names column 'user' twice" in line
    table = pa.Table.from_arrays([pa.array([1, 2])] * 3, names=["user", "item", "user"])
    pq.write_table(table, tmp_path / "dup.parquet")
    with pytest.raises(datasets.DatasetError, match="names column 'user' twice"):
        open_log(tmp_path / "dup.parquet", columns=ColumnMap("user", "item", "user"))


def test_separator_missing_from_line_1_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """--sep tab on a comma-separated log said 'cannot detect the log format'."""
    log = _log(tmp_path, [HEADER, *_rows()])
    line = _fails(_replay(log, tmp_path / "out", "--sep", "tab"), capsys)
    assert "has no tab (--sep); it looks ','-separated: pass --sep ','" in line


def test_parquet_read_as_csv_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """It printed the Parquet bytes as the 'header'."""
    table = pa.table({"user": [1, 2], "item": [3, 4], "time": [5, 6], "label": [0, 1]})
    pq.write_table(table, tmp_path / "log.parquet")
    line = _fails(_replay(tmp_path / "log.parquet", tmp_path / "out", "--format", "csv"), capsys)
    assert line.endswith("is a Parquet file, not text: pass --format parquet (or auto)")


def test_binary_and_json_files_are_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "zeros.csv").write_bytes(b"\x00" * 5000)
    line = _fails(_replay(tmp_path / "zeros.csv", tmp_path / "out"), capsys)
    assert "NUL bytes" in line and "binary file" in line and len(line) < 400
    records = [json.dumps({"user": 1, "item": 2, "time": 3 + k}) for k in range(5)]
    line = _fails(_replay(_log(tmp_path, records, "log.jsonl"), tmp_path / "out"), capsys)
    assert "looks like JSON" in line and "to_parquet" in line


def test_non_utf8_bytes_get_the_conversion_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "latin.csv"
    rows = _rows(3000)
    path.write_bytes(
        "\n".join([HEADER, *rows[:200]]).encode()
        + b"\n5\xe9,1,1600000000,1\n"
        + "\n".join(rows[200:]).encode()
        + b"\n"
    )
    line = _fails(_replay(path, tmp_path / "out"), capsys, tmp_path / "out")
    assert "not UTF-8" in line and "iconv" in line


@pytest.mark.parametrize(("factor", "unit"), [(1000, "ms"), (1_000_000, "us")])
def test_times_in_a_finer_unit_suggest_time_unit(
    factor: int, unit: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Milliseconds read as seconds failed with 'value out of range' and leaked two numpy
    warnings ('Mean of empty slice') from --period auto on an empty profile."""
    rows = [
        ",".join([*r.split(",")[:2], str(int(r.split(",")[2]) * factor), r.split(",")[3]])
        for r in _rows()
    ]
    log = _log(tmp_path, [HEADER, *rows])
    code = cli.main(_replay(log, tmp_path / "out"))
    err = capsys.readouterr().err
    assert code == 2 and "warning" not in err, err
    assert f"pass --time-unit {unit}" in err
    assert cli.main(_replay(log, tmp_path / "out", "--time-unit", unit)) == 0


def test_labels_outside_0_1_name_their_line_and_the_threshold_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Ratings in a generic log failed inside training with "labels[2] = 4.5 ... use
    loss='squared'", a Python option the replay does not take."""
    rows = [f"{r.rsplit(',', 1)[0]},{4.5 if k % 2 else 1.0}" for k, r in enumerate(_rows())]
    log = _log(tmp_path, [HEADER, *rows])
    line = _fails(_replay(log, tmp_path / "out"), capsys, tmp_path / "out")
    assert "line 3: label 4.5 in column 'label' is outside [0, 1]" in line
    assert "--label-threshold" in line and "loss=" not in line
    assert cli.main(_replay(log, tmp_path / "out", "--label-threshold", "4")) == 0
    capsys.readouterr()
    assert len(open_log(log).read()) == len(rows)  # the library reads any finite label


def test_a_huge_bad_value_is_cut_in_the_report(tmp_path: Path) -> None:
    """A 1 MB bad field was copied whole into the report (and metrics.json)."""
    rows = _rows()
    rows[5] = "1," + "x" * 1_000_000 + ",1600000100,1"
    log = open_log(_log(tmp_path, [HEADER, *rows]))
    log.read()
    (issue,) = log.report.malformed_examples
    assert issue.line == 7 and len(issue.reason) < 200 and "1,000,002 chars" in issue.reason


def test_dropped_rows_are_printed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Malformed rows were counted only in metrics.json; the summary said nothing."""
    rows = _rows()
    rows[20] = "1,2,nan,1"
    log = _log(tmp_path, [HEADER, *rows])
    assert cli.main(_replay(log, tmp_path / "out")) == 0
    out = capsys.readouterr().out
    assert "log.csv: 1 malformed row dropped (first: line 22: missing value 'nan'" in out
    clean = _log(tmp_path, [HEADER, *_rows()], "clean.csv")
    assert cli.main(_replay(clean, tmp_path / "out2")) == 0
    assert "malformed row" not in capsys.readouterr().out


def test_column_notes_count_rows_in_english(tmp_path: Path) -> None:
    rows = _rows()
    rows[3] = "1,2,,1"
    log = open_log(_log(tmp_path, [HEADER, *rows]))
    log.read()
    assert log.report.column_notes["time"].endswith("; 1 row dropped for a bad value")


def test_a_log_with_no_usable_row_leaks_no_numpy_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """--format movielens-dat on a CSV: every row malformed, and --period auto took the median
    of an empty profile ('Mean of empty slice', 'invalid value encountered')."""
    log = _log(tmp_path, [HEADER, *_rows()])
    assert cli.main(_replay(log, tmp_path / "out", "--format", "movielens-dat")) == 2
    err = capsys.readouterr().err
    assert "rows are malformed" in err and "warning" not in err, err


def test_stdout_closed_early_stops_quietly(tmp_path: Path) -> None:
    """``embcore replay LOG | head -1`` printed 'embcore replay: error:: Broken pipe', exit 2."""
    import os
    import subprocess
    import sys

    log = _log(tmp_path, [HEADER, *_rows()])
    read, write = os.pipe()
    os.close(read)  # the reader has gone before the summary is printed
    try:
        done = subprocess.run(
            [sys.executable, "-m", "embcore.cli", *_replay(log, tmp_path / "out")],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert done.returncode == cli.EXIT_BROKEN_PIPE, done.stderr
    assert "error" not in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_os_error_without_a_file_name_has_one_colon(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import errno

    from embcore import bench

    def full(args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bench, "run", full)
    assert cli.main(["bench", "--only", "drift"]) == 2
    assert capsys.readouterr().err == "embcore bench: error: No space left on device\n"


def test_weights_outside_the_engines_range_are_malformed_rows(tmp_path: Path) -> None:
    """A negative weight failed inside training with 'weights[5] = -1', an array index."""
    rows = [f"{r},2" for r in _rows()]
    rows[5] = rows[5].rsplit(",", 1)[0] + ",-1"
    rows[6] = rows[6].rsplit(",", 1)[0] + ",2e6"
    log = open_log(_log(tmp_path, [f"{HEADER},weight", *rows]))
    chunk = log.read()
    assert len(chunk) == len(rows) - 2 and log.report.malformed_rows == 2
    assert [issue.line for issue in log.report.malformed_examples] == [7, 8]
    assert chunk.weights is not None and (chunk.weights == 2).all()


def test_space_separated_header_asks_for_sep_space(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rows = [r.replace(",", " ") for r in _rows()]
    log = _log(tmp_path, [HEADER.replace(",", " "), *rows])
    line = _fails(_replay(log, tmp_path / "out"), capsys)
    assert line.endswith("looks space-separated: pass --sep space")
    assert len(open_log(log, separator=" ").read()) == len(rows)


def test_empty_header_name_is_named(tmp_path: Path) -> None:
    log = _log(tmp_path, ["user,,item,time", *[r.replace(",", ",0,", 1) for r in _rows()]])
    with pytest.raises(datasets.DatasetError, match="empty column name"):
        open_log(log)


@pytest.mark.parametrize("unit", ["ms", "us", "ns"])
def test_seconds_read_in_a_finer_unit_warn(
    unit: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """--time-unit ns on a seconds log put every event in the first seconds of 1970 and ran
    without a word (periods of a minute, maturity n/a)."""
    log = _log(tmp_path, [HEADER, *_rows()])
    assert cli.main(_replay(log, tmp_path / "out", "--time-unit", unit)) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "every event time falls in 1970" in err
    assert "pass --time-unit s if that is their unit" in err


def test_relative_times_from_zero_do_not_warn(tmp_path: Path) -> None:
    import warnings

    rows = _rows(start=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", datasets.LogWarning)
        for unit in ("s", "ms"):
            assert len(open_log(_log(tmp_path, [HEADER, *rows]), time_unit=unit).read()) == 300


# --------------------------------------------------------------------------------------------
# Session 6 leftovers of the audit


def test_study_scale_tiny_runs_on_the_default_period(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """``embcore study --scale tiny`` failed: 'batch publishes 0 time(s) before the 6h horizon
    with period 6h' (the default period was 6 h at every scale)."""
    from embcore import study

    seen: dict[str, int] = {}

    class Reached(Exception):
        pass

    def simulate(*_args: object, **kwargs: int) -> None:
        seen["period"] = kwargs["period_seconds"]
        raise Reached

    monkeypatch.setattr(study, "_simulate", simulate)
    for scale, period in (("tiny", 3600), ("small", 4 * 3600), ("default", 6 * 3600)):
        with pytest.raises(Reached):
            cli.main(["study", "--scale", scale, "--no-progress"])
        assert seen["period"] == period, capsys.readouterr().err
    # An explicit period is still checked against the scale's horizon.
    assert "at least 4 are needed" in _fails(["study", "--scale", "tiny", "--period", "6h"], capsys)


@pytest.mark.parametrize("scale", ["tiny", "small", "default", "large"])
def test_every_scale_period_is_a_sound_design(scale: str) -> None:
    from embcore.modes import parse_duration
    from embcore.sim import SimConfig
    from embcore.study import check_design, scale_period

    config = SimConfig.for_scale(scale)
    horizon = config.n_steps * config.step_seconds
    period = parse_duration(scale_period(scale, "auto"))
    assert check_design(horizon, ["realtime", "batch", "hybrid"], period) == []


def _bad_npz(path: Path) -> Path:
    path.write_bytes(b"PK\x03\x04 not really a zip")
    return path


def test_track_with_nothing_readable_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """It printed 'skipped ...' per source, '0 new version(s)', wrote a report and exited 0."""
    bad = _bad_npz(tmp_path / "v1.npz")
    (tmp_path / "empty").mkdir()
    out, state = tmp_path / "out", tmp_path / "state"
    argv = ["track", str(bad), str(tmp_path / "empty"), "--out", str(out), "--state", str(state)]
    line = _fails([*argv, "--no-progress"], capsys, out)
    assert "no source given is a readable version: " in line
    assert f"{tmp_path / 'empty'}: is a folder with neither" in line  # first in name order
    assert "(and 1 more unreadable)" in line
    assert not state.exists()  # nothing remembered: a fixed file is read next time


def test_track_with_one_readable_source_still_skips_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    good = tmp_path / "v0.npz"
    np.savez(good, ids=np.arange(4), weights=np.eye(4, dtype=np.float32))
    bad = _bad_npz(tmp_path / "v1.npz")
    out, state = tmp_path / "out", tmp_path / "state"
    argv = ["track", str(good), str(bad), "--out", str(out), "--state", str(state)]
    assert cli.main([*argv, "--no-progress", "--no-figures"]) == 0
    assert "skipped" in capsys.readouterr().err
    # Run again with the known-bad file alone: still nothing readable among what was given.
    line = _fails(["track", str(bad), "--out", str(tmp_path / "o2"), "--state", str(state)], capsys)
    assert f"{bad}: cannot be read" in line


@pytest.mark.parametrize(
    ("flag", "value"),
    [("period", "99999999999999999999d"), ("fresh_seconds", 1e300), ("window", "36501d")],
)
def test_python_durations_are_bounded(flag: str, value: object, tmp_path: Path) -> None:
    """parse_duration took 99999999999999999999d and 1e300 (OverflowError 'Python int too large
    to convert to C long' inside the replay; the CLI bounded them, the API did not)."""
    from embcore.errors import ConfigError
    from embcore.modes import Trainer, parse_duration
    from embcore.replay import replay

    with pytest.raises(ConfigError, match="positive duration of 1s to 36500d"):
        parse_duration(value)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="period must be a positive duration of 1s to 36500d"):
        Trainer("batch", period=value)  # type: ignore[arg-type]
    log = _log(tmp_path, [HEADER, *_rows()])
    cli_flag = "--" + flag.replace("_", "-")
    with pytest.raises(ConfigError, match=f"^{cli_flag} must be a positive duration of 1s"):
        replay(log, None, progress=False, figures=False, **{flag: value})
    assert parse_duration("36500d") == 100 * 365 * 86_400


def _flip_in_data_page(path: Path, column: int) -> None:
    meta = pq.ParquetFile(path).metadata.row_group(0).column(column)
    start = meta.dictionary_page_offset if meta.has_dictionary_page else meta.data_page_offset
    data = bytearray(path.read_bytes())
    data[start + meta.total_compressed_size - 10] ^= 0x01  # inside the last page's values
    path.write_bytes(bytes(data))


def _parquet_log(path: Path, checksum: bool) -> pa.Table:
    n = 2000
    rng = np.random.default_rng(0)
    table = pa.table(
        {
            "user": rng.integers(0, 50, n),
            "item": rng.integers(0, 80, n),
            "time": np.sort(rng.integers(1_600_000_000, 1_600_000_000 + 20 * 86_400, n)),
            "label": rng.integers(0, 2, n),
        }
    )
    pq.write_table(
        table, path, write_page_checksum=checksum, compression="none", use_dictionary=False
    )
    return table


def test_a_flipped_byte_in_a_checksummed_parquet_page_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """It was read silently with other item ids (pyarrow checks page CRCs only when asked)."""
    log = tmp_path / "log.parquet"
    _parquet_log(log, checksum=True)
    _flip_in_data_page(log, column=1)
    line = _fails(_replay(log, tmp_path / "out"), capsys, tmp_path / "out")
    assert line.startswith(f"embcore replay: error: {log}: ")
    assert "CRC checksum verification failed" in line


def test_a_flipped_byte_without_page_checksums_cannot_be_detected(tmp_path: Path) -> None:
    """The documented limit: nothing to check the page against, the values decode as others."""
    log = tmp_path / "log.parquet"
    table = _parquet_log(log, checksum=False)
    _flip_in_data_page(log, column=1)
    chunk = open_log(log).read()
    assert len(chunk) == table.num_rows
    assert not np.array_equal(chunk.items, table.column("item").to_numpy())


def test_embcores_own_parquet_writers_store_page_checksums(tmp_path: Path) -> None:
    path = datasets.synthetic_log(tmp_path / "log.parquet", "parquet", 500)
    _flip_in_data_page(path, column=0)
    columns = ColumnMap(user="user_id", item="item_id", time="time_ms", time_unit="ms")
    with pytest.raises(datasets.DatasetError, match="CRC checksum verification failed"):
        open_log(path, columns=columns).read()


def test_a_flipped_byte_in_a_tracked_parquet_table_is_skipped(tmp_path: Path) -> None:
    from embcore.track import track

    rows = np.random.default_rng(0).normal(size=(500, 8)).astype(np.float32)
    for name in ("v1", "v2"):
        table = pa.table({"id": np.arange(500), **{f"w{j}": rows[:, j] for j in range(8)}})
        pq.write_table(table, tmp_path / f"{name}.parquet", write_page_checksum=True)
    _flip_in_data_page(tmp_path / "v2.parquet", column=3)
    warnings: list[str] = []
    m = track(
        [tmp_path / "v1.parquet", tmp_path / "v2.parquet"],
        tmp_path / "state",
        out=None,
        progress=False,
        warn=warnings.append,
    )
    assert [v["name"] for v in m["versions"]] == ["v1.parquet"]
    assert len(warnings) == 1 and "v2.parquet" in warnings[0] and "CRC" in warnings[0]


@pytest.mark.parametrize("ids", [np.arange(6, dtype=float), [f"item{k}" for k in range(6)]])
def test_track_names_an_id_column_of_another_kind(
    ids: object, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """It said 'has no integer id column (columns: ['id', ...]); pass id_column' (a Python
    keyword, and the column was there, of another kind)."""
    path = tmp_path / "v1.parquet"
    rows = pa.array(list(np.eye(6, dtype=np.float32)), pa.list_(pa.float32()))
    pq.write_table(pa.table({"id": ids, "embedding": rows}), path)
    line = _fails(["track", str(path), "--out", str(tmp_path / "o"), "--no-progress"], capsys)
    assert "id column 'id' holds " in line and "not integers" in line
    assert "--id-column NAME" in line and "pass id_column" not in line
