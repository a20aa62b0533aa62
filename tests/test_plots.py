"""Tests for embcore.plots: each figure has the expected artists, labels, and saves as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from embcore.analysis import (
    LearningPeakResult,
    MaturityResult,
    Trajectories,
    learning_peak,
    maturity,
    norm_popularity,
    snapshot_drift,
)
from embcore.plots import (
    plot_drift_histogram,
    plot_learning_curve,
    plot_maturity,
    plot_norm_distribution,
    plot_norm_vs_popularity,
)


def random_trajectories(seed: int, n_items: int = 30, n_records: int = 12) -> Trajectories:
    """Items drifting from a random start towards a random target, with noise."""
    rng = np.random.default_rng(seed)
    d = 4
    start = rng.normal(size=(n_items, 1, d))
    target = rng.normal(size=(n_items, 1, d))
    steps = np.linspace(0.0, 1.0, n_records)[None, :, None] ** 0.5
    rows = start + (target - start) * steps + 0.05 * rng.normal(size=(n_items, n_records, d))
    ids = np.repeat(np.arange(n_items), n_records)
    counts = np.tile(np.arange(1, n_records + 1), n_items)
    return Trajectories.from_arrays(ids, counts, rows.reshape(-1, d))


@pytest.fixture(scope="module")
def maturity_results() -> dict[str, MaturityResult]:
    return {
        "real-time": maturity(random_trajectories(0), alpha=(0.05, 0.1)),
        "batch": maturity(random_trajectories(1), alpha=(0.05, 0.1)),
    }


@pytest.fixture(scope="module")
def peak_results() -> dict[str, LearningPeakResult]:
    return {
        "real-time": learning_peak(random_trajectories(0)),
        "batch": learning_peak(random_trajectories(1)),
    }


def check_saves(fig: Figure, tmp_path: Path, name: str = "figure.png") -> None:
    path = tmp_path / name
    fig.savefig(path)
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def check_labelled(ax: object) -> None:
    from matplotlib.axes import Axes

    assert isinstance(ax, Axes)
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()


def test_plot_maturity(maturity_results: dict[str, MaturityResult], tmp_path: Path) -> None:
    fig = plot_maturity(maturity_results, alpha=0.1)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.lines) == 3  # one step curve per mode + the S = 0.5 guide
    check_labelled(ax)
    legend = ax.get_legend()
    assert legend is not None
    texts = [t.get_text() for t in legend.get_texts()]
    assert any(t.startswith("real-time: median") for t in texts)
    # The curve starts at S = 1 and is non-increasing.
    y = np.asarray(ax.lines[0].get_ydata(), dtype=np.float64)
    assert y[0] == 1.0 and (np.diff(y) <= 0).all()
    check_saves(fig, tmp_path)


def test_plot_maturity_single_result_into_given_axes(
    maturity_results: dict[str, MaturityResult], tmp_path: Path
) -> None:
    host = Figure()
    axes = host.subplots(1, 2)
    fig = plot_maturity(maturity_results["batch"], alpha=0.05, ax=axes[1])
    assert fig is host and len(axes[1].lines) == 2 and len(axes[0].lines) == 0
    check_saves(fig, tmp_path)
    with pytest.raises(KeyError, match="alpha=0.5"):
        plot_maturity(maturity_results, alpha=0.5)


def test_plot_maturity_empty(tmp_path: Path) -> None:
    empty = maturity(Trajectories.from_arrays([], [], np.zeros((0, 2))))
    fig = plot_maturity({"empty": empty}, alpha=0.05)
    check_saves(fig, tmp_path)


def test_plot_learning_curve_two_panels(
    peak_results: dict[str, LearningPeakResult], tmp_path: Path
) -> None:
    fig = plot_learning_curve(peak_results)
    assert len(fig.axes) == 2
    gain_ax, drift_ax = fig.axes
    assert len(gain_ax.lines) == 4  # per mode: G(n) and the peak marker
    assert len(drift_ax.lines) == 2  # per mode: δ(n)
    assert gain_ax.get_title() and gain_ax.get_ylabel()  # shares the lower panel's x label
    check_labelled(drift_ax)
    marker = gain_ax.lines[1]
    assert marker.get_xdata()[0] == peak_results["real-time"].peak_count  # type: ignore[index]
    check_saves(fig, tmp_path)


def test_plot_learning_curve_twin_axis(
    peak_results: dict[str, LearningPeakResult], tmp_path: Path
) -> None:
    host = Figure()
    ax = host.add_subplot()
    fig = plot_learning_curve(peak_results["batch"], ax=ax)
    assert fig is host and len(fig.axes) == 2  # the given axes and its twin
    assert len(ax.lines) == 2 and len(fig.axes[1].lines) == 1
    assert fig.axes[1].lines[0].get_linestyle() == "--"
    check_saves(fig, tmp_path)
    empty = learning_peak(Trajectories.from_arrays([], [], np.zeros((0, 2))))
    check_saves(plot_learning_curve({"empty": empty}), tmp_path, "empty.png")


def test_plot_norm_distribution(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    norms = {"real-time": rng.lognormal(size=500), "batch": np.append(rng.lognormal(size=300), 0)}
    fig = plot_norm_distribution(norms)
    ax = fig.axes[0]
    assert len(ax.patches) == 2 and len(ax.lines) == 2  # step histogram + median line per mode
    assert ax.get_xscale() == "log"
    check_labelled(ax)
    legend = ax.get_legend()
    assert legend is not None
    assert "1 zero" in legend.get_texts()[1].get_text()
    check_saves(fig, tmp_path)
    check_saves(plot_norm_distribution({"empty": []}), tmp_path, "empty.png")


def test_plot_norm_vs_popularity(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pop = rng.zipf(1.5, size=2000).astype(np.float64)
    norms = (1 + pop) ** 0.3 * rng.lognormal(sigma=0.2, size=pop.size)
    ids = np.arange(pop.size)
    matrix = rng.normal(size=(pop.size, 3))
    result = norm_popularity((ids, matrix), (ids, pop.astype(np.int64)))
    fig = plot_norm_vs_popularity({"synthetic": (norms, pop), "table": result}, max_points=500)
    ax = fig.axes[0]
    assert len(ax.collections) == 2 and len(ax.lines) == 2  # scatter + binned medians per mode
    assert len(ax.collections[0].get_offsets()) == 500  # type: ignore[arg-type]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    check_labelled(ax)
    medians = np.asarray(ax.lines[0].get_ydata(), dtype=np.float64)
    assert medians[-1] > medians[0]  # the synthetic norm grows with popularity
    check_saves(fig, tmp_path)
    with pytest.raises(ValueError, match="norms has 2 elements but popularity has 3"):
        plot_norm_vs_popularity({"bad": ([1.0, 2.0], [1, 2, 3])})


def test_plot_drift_histogram(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 5))
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    b = a @ q + 0.05 * rng.normal(size=a.shape)
    ids = np.arange(200)
    fig = plot_drift_histogram(snapshot_drift((ids, a), (ids, b)))
    ax = fig.axes[0]
    assert len(ax.patches) == 2  # unaligned and aligned
    check_labelled(ax)
    assert "CKA" in ax.get_title()
    check_saves(fig, tmp_path)
    empty = snapshot_drift((ids, a), (ids + 1000, b))
    check_saves(plot_drift_histogram(empty), tmp_path, "empty.png")
    with pytest.raises(TypeError):
        plot_drift_histogram({"x": empty})  # type: ignore[arg-type]


# -- the study protocol's figures (drawn from metrics.json content) ----------------------------


def test_update_curve_marks_each_peak_and_hollows_thin_bins(tmp_path):
    from embcore.plots import plot_update_curve

    curves = {
        "realtime": {
            "bins": ["2", "3-4", "5-8"],
            "update": [0.02, 0.03, 0.01],
            "competing": [True, True, False],
            "peak_bin": 1,
        },
        "batch": {
            "bins": ["2", "3-4", "5-8"],
            "update": [None, 0.001, 0.004],
            "competing": [True, True, True],
            "peak_bin": 2,
        },
    }
    fig = plot_update_curve(curves)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.lines]
    assert "realtime: peak at views 3-4" in labels and "batch: peak at views 5-8" in labels
    stars = [line for line in ax.lines if line.get_marker() == "*"]
    assert [float(s.get_xdata()[0]) for s in stars] == [1.0, 2.0]
    hollow = [line for line in ax.lines if line.get_fillstyle() == "none" and len(line.get_xdata())]
    assert [float(x) for x in hollow[0].get_xdata()] == [2.0]
    check_saves(fig, tmp_path)


def test_mature_by_n_draws_raw_and_km(tmp_path):
    from embcore.plots import plot_mature_by_n

    summary = {
        "curve": {"n": [0, 1, 5, 10], "share": [0.0, 0.1, 0.3, 0.4]},
        "km": [[1, 0.9], [5, 0.6], [10, 0.2]],
        "criterion": "relative",
        "alpha": 0.05,
    }
    fig = plot_mature_by_n({"realtime": summary, "batch": summary})
    ax = fig.axes[0]
    assert len(ax.lines) == 4
    km = [line for line in ax.lines if line.get_linestyle() == "--"][0]
    np.testing.assert_allclose(km.get_ydata(), [0.0, 0.1, 0.4, 0.8])
    assert "relative criterion" in ax.get_title()
    check_saves(fig, tmp_path)


def test_decile_ratio_has_error_bars_and_handles_no_data(tmp_path):
    from embcore.plots import plot_decile_ratio

    fig = plot_decile_ratio(
        {"ratio": [1.0, 2.0, 3.0], "low": [0.5, 1.5, 2.0], "high": [1.5, 2.5, 4.0]}
    )
    ax = fig.axes[0]
    assert len(ax.containers) == 1  # one errorbar container
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [1.0, 2.0, 3.0])
    check_saves(fig, tmp_path)
    empty = plot_decile_ratio(None)
    assert any(t.get_text() == "no data" for t in empty.axes[0].texts)


def test_engagement_references_label_missing_policies(tmp_path):
    from embcore.plots import plot_engagement_references

    learning = {
        "modes": {"realtime": {"ctr": 0.2}, "batch": {"ctr": 0.13}},
        "reference_policies": {
            "random": {"available": False},
            "oracle": {"available": True, "ctr": 0.46},
        },
    }
    fig = plot_engagement_references(learning)
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(heights, [0.2, 0.13, 0.0, 0.46])
    assert [t.get_text() for t in ax.get_xticklabels()][2] == "random\n(n/a)"
    check_saves(fig, tmp_path)
