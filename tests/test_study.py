"""Tests for ``embcore study``: end to end on the tiny world, its JSON, report and CLI errors."""

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from embcore import cli, report
from embcore.study import run_study


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")
        elif tag not in ("meta", "br", "img"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unbalanced </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study") / "out"
    code = cli.main(
        ["study", "--scale", "tiny", "--out", str(out), "--no-progress", "--period", "1h"]
    )
    assert code == 0
    return out


def test_tiny_study_writes_every_file(tiny_study):
    names = sorted(p.name for p in tiny_study.iterdir())
    assert "metrics.json" in names and "report.html" in names
    assert {f"{name}.png" for name in report.FIGURES} <= set(names)
    assert not [n for n in tiny_study.parent.iterdir() if n.name.startswith(".")]


def test_metrics_json_has_every_key(tiny_study):
    metrics = json.loads((tiny_study / "metrics.json").read_text())
    assert set(metrics["modes"]) == {"realtime", "batch"}
    for mode in metrics["modes"].values():
        for key in ("events", "items", "users", "learning_peak_interactions"):
            assert key in mode
        assert mode["events"] > 10_000
        mat = mode["maturity"]
        for key in ("alpha", "median_interactions", "mature_share", "km"):
            assert key in mat
        assert all(len(point) == 2 for point in mat["km"])
        assert set(mode["norm_quantiles"]) >= {"p50", "p90", "p99", "max"}
        assert "norm_popularity_spearman" in mode
        eng = mode["engagement"]
        for key in ("ctr", "play_rate", "fresh_ctr", "fresh_play_rate"):
            assert 0.0 <= eng[key] <= 1.0
        assert len(eng["by_item_age"]["ctr"]) == len(eng["by_item_age"]["buckets"])
        assert sum(eng["over_time"]["impressions"]) == mode["events"]
    comparison = metrics["comparison"]
    assert "maturity_ratio_realtime_over_batch" in comparison
    assert "norm_p99_ratio_batch_over_realtime" in comparison
    config = metrics["config"]
    for key in ("scale", "seed", "period_seconds", "epochs", "learning_rate", "versions"):
        assert key in config
    assert config["period_seconds"] == 3600 and config["scale"] == "tiny"
    assert metrics["runtime_seconds"] > 0


def test_modes_share_requests(tiny_study):
    """Common random numbers: both modes serve the same requests, hence the same event count."""
    metrics = json.loads((tiny_study / "metrics.json").read_text())
    counts = [m["engagement"]["over_time"]["impressions"] for m in metrics["modes"].values()]
    assert counts[0] == counts[1]


def test_report_is_valid_self_contained_html(tiny_study):
    text = (tiny_study / "report.html").read_text()
    page = _Page()
    page.feed(text)
    page.close()
    assert page.errors == [] and page.stack == []
    assert len(page.images) == len(report.FIGURES)
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert "http://" not in text and "https://" not in text
    assert "Median interactions to maturity" in text


def test_study_is_deterministic(tmp_path):
    a = run_study(None, scale="tiny", seed=1, progress=False, modes=["batch"], period="3h")
    b = run_study(None, scale="tiny", seed=1, progress=False, modes=["batch"], period="3h")
    for key in ("maturity", "norm_quantiles", "engagement"):
        assert a["modes"]["batch"][key] == b["modes"]["batch"][key]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--modes", "realtime,weekly"], "unknown mode"),
        (["--period", "0h"], "argument --period: expected a positive duration"),
        (["--period=-6h"], "argument --period: expected a positive duration"),
        (["--period", "-6h"], "argument --period: expected a positive duration"),
        (["--window", "0"], "argument --window: expected a positive duration"),
        (["--learning-rate", "-0.1"], "--learning-rate must be a positive number"),
        (["--learning-rate", "nan"], "--learning-rate must be a positive number"),
        (["--seed", "-1"], "--seed must be an integer"),
        (["--alpha", "5"], "alpha must be in (0, 2)"),
    ],
)
def test_cli_bad_configuration_exits_2(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    code = cli.main(["study", "--scale", "tiny", "--out", str(out), "--no-progress", *argv])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_cli_unwritable_out_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    tiny = ["study", "--scale", "tiny", "--period", "1h", "--no-progress"]
    code = cli.main([*tiny, "--out", str(blocker / "out")])
    assert code == 2
    assert "cannot be written" in capsys.readouterr().err
    code = cli.main([*tiny, "--out", str(blocker)])
    assert code == 2
    assert "not a directory" in capsys.readouterr().err


def test_cli_refuses_to_replace_a_foreign_directory(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("precious")
    argv = ["study", "--scale", "tiny", "--period", "1h", "--out", str(tmp_path), "--no-progress"]
    code = cli.main(argv)
    assert code == 2
    assert "non-empty directory" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_failed_run_leaves_no_output(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr("embcore.study._simulate", boom)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_study(out, scale="tiny", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_learning_curve_spreads_gain_per_interaction():
    from embcore.analysis import Trajectories
    from embcore.study import learning_curve

    # One item: count 0 -> 4 turns 90 degrees (gain 1 over 4 interactions), then 4 -> 5 nothing.
    rows = [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]
    curve = learning_curve(Trajectories.from_arrays([7, 7, 7], [0, 4, 5], rows), min_items=1)
    assert curve["counts"] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(curve["gain"], [0.25, 0.25, 0.25, 0.25, 0.0])
    assert curve["peak_count"] == 1 and curve["count_at_50pct_gain"] == 2
    # Counts covered by fewer than min_items items do not compete for the peak.
    assert learning_curve(Trajectories.from_arrays([7, 7], [0, 4], rows[:2]))["peak_count"] is None


def test_trajectories_start_at_the_initial_row(tiny_study):
    metrics = json.loads((tiny_study / "metrics.json").read_text())
    # e(0) is recorded for every tracked item, so the curves start at n = 1.
    for mode in metrics["modes"].values():
        counts = mode["learning_peak"]["curve"]["counts"]
        assert not counts or counts[0] >= 1
        assert mode["maturity"]["n_items"] > 0


def test_bench_refuses_unknown_names_and_unwritable_output_before_running(capsys) -> None:
    from embcore import cli

    assert cli.main(["bench", "--only", "training,foo"]) == 2
    assert "unknown name(s) foo; choose from training" in capsys.readouterr().err
    assert cli.main(["bench", "--only", "probe", "--out", "/nonexistent/dir/b.json"]) == 2
    assert "does not exist or is not writable" in capsys.readouterr().err
