"""The ``embcore`` command line: self-explaining help, one-line errors in flag names, exit codes
for mistakes and signals, no partial output left behind."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import embcore
from embcore import cli, runs
from embcore.datasets import synthetic_log


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_version(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"embcore {embcore.__version__}"


@pytest.mark.parametrize("command", ["study", "replay", "bench"])
def test_every_flag_has_help_and_shows_its_default(command: str) -> None:
    parser = _subparsers()[command]
    formatter = parser._get_formatter()
    assert isinstance(formatter, cli.HelpFormatter)
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        flag = action.option_strings[0]
        assert action.help and "\n" not in action.help, f"{command} {flag} has no one-line help"
        if not isinstance(action, argparse._StoreTrueAction):
            shown = formatter._get_help_string(action) or ""
            assert "default" in shown, f"{command} {flag}: no default in {shown!r}"


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_help_renders_with_choices(command: str, capsys: pytest.CaptureFixture) -> None:
    parser = _subparsers()[command]
    assert cli.main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for action in parser._actions:
        if action.choices and action.option_strings:
            assert "{" + ",".join(map(str, action.choices)) + "}" in text


def test_allowed_values_are_listed(capsys: pytest.CaptureFixture) -> None:
    cli.main(["replay", "--help"])
    replay_help = " ".join(capsys.readouterr().out.split())
    formats = "{auto,movielens,movielens-100k,movielens-dat,kuairand,kuairec,csv,parquet}"
    assert formats in replay_help
    assert "from realtime, batch, hybrid" in replay_help
    cli.main(["study", "--help"])
    study_help = " ".join(capsys.readouterr().out.split())
    assert "{tiny,small,default,large}" in study_help and "{mf,ffm,fm}" in study_help
    assert "Hogwild" in study_help  # --threads says what it does
    cli.main(["bench", "--help"])
    assert "replay" in capsys.readouterr().out  # --only lists every group


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["replay", "log.csv", "--modes", ""]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("embcore replay: error: argument --modes")
    assert cli.main(["nonsense"]) == 2
    assert capsys.readouterr().err.startswith("embcore: error: argument COMMAND")


def test_library_errors_exit_2_in_flag_names(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "study"
    assert cli.main(["study", "--scale", "tiny", "--init-scale", "-1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("embcore study: error: --init-scale must be"), err
    assert cli.main(["study", "--scale", "tiny", "--alpha", "3", "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("embcore study: error: --alpha must be in (0, 2)")
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))


def test_flag_message_leaves_other_words_alone() -> None:
    assert cli.flag_message("the period boundary at t=5") == "the period boundary at t=5"
    assert cli.flag_message("dim must be >= 1") == "--dim must be >= 1"


def test_bench_checks_before_running(capsys: pytest.CaptureFixture) -> None:
    started = time.perf_counter()
    assert cli.main(["bench", "--out", "/nonexistent/dir/b.json"]) == 2
    assert "/nonexistent/dir" in capsys.readouterr().err
    assert cli.main(["bench", "--only", "foo"]) == 2
    err = capsys.readouterr().err
    assert "foo" in err and "training" in err and "replay" in err
    assert time.perf_counter() - started < 5  # nothing was measured


def test_threads_above_the_cores_warn(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    log = synthetic_log(tmp_path / "ratings.csv", "movielens", 300, seed=0)
    threads = (os.cpu_count() or 1) + 1
    code = cli.main(
        ["replay", str(log), "--threads", str(threads), "--no-progress", "--no-figures",
         "--out", str(tmp_path / "out"), "--dim", "4"]
    )  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert f"embcore replay: warning: --threads {threads} is more than" in err


def test_interrupt_exits_130_and_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = synthetic_log(tmp_path / "ratings.csv", "movielens", 300, seed=0)

    def interrupted(*args: object, **kwargs: object) -> None:
        assert list(tmp_path.glob(".out.partial-*")), "the staging directory exists"
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "analyse_modes", interrupted)
    out = tmp_path / "out"
    assert cli.main(["replay", str(log), "--out", str(out), "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "embcore replay: interrupted; no output was written"
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))


def test_sigterm_exits_143_and_cleans_the_staging_directory(tmp_path: Path) -> None:
    log = synthetic_log(tmp_path / "ratings.csv", "movielens", 300, seed=0)
    out = tmp_path / "interrupted"
    ready = tmp_path / "analysing"
    script = (
        "import pathlib, sys, time\n"
        "from embcore import cli, runs\n"
        "def analyse(*a, **k):\n"
        f"    pathlib.Path({str(ready)!r}).touch()\n"
        "    time.sleep(120)\n"
        "runs.analyse_modes = analyse\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, "replay", str(log), "--out", str(out), "--no-progress"],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not ready.exists():  # the run is under way, its staging directory written
        assert child.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    assert list(tmp_path.glob(".interrupted.partial-*"))
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 143
    assert err.strip() == "embcore replay: terminated; no output was written"
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))
