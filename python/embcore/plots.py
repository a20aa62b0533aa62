"""Figures for the analysis results (matplotlib, imported lazily).

Every function returns a :class:`matplotlib.figure.Figure` and accepts an optional ``ax`` to
draw into. Figures are built with ``matplotlib.figure.Figure`` directly rather than pyplot, so
they work headless (Agg), hold no global state, and are freed with the last reference — the
report saves them with ``fig.savefig(...)``. Several modes (e.g. ``{"real-time": r1,
"batch": r2}``) are drawn on one set of axes with a consistent colour per mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from embcore.analysis import (
    LearningPeakResult,
    MaturityResult,
    NormPopularityResult,
    SnapshotDriftResult,
    _spearman,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "plot_decile_ratio",
    "plot_drift_histogram",
    "plot_engagement_references",
    "plot_mature_by_n",
    "plot_update_curve",
    "plot_learning_curve",
    "plot_maturity",
    "plot_norm_distribution",
    "plot_norm_vs_popularity",
]

T = TypeVar("T")
_SINGLE = "embeddings"


def _by_mode(results: Any, kind: type[T]) -> dict[str, Any]:
    if isinstance(results, kind):
        return {_SINGLE: results}
    if isinstance(results, Mapping):
        return dict(results)
    raise TypeError(f"expected {kind.__name__} or a dict of them, got {type(results).__name__}")


def _new_axes(ax: Axes | None, figsize: tuple[float, float] = (7.0, 4.5)) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.get_figure(root=True), ax  # type: ignore[return-value]
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="0.5")


def _positive(values: ArrayLike) -> tuple[NDArray[np.float64], int]:
    """Finite, strictly positive values (for log axes) and how many were dropped."""
    v = np.asarray(values, dtype=np.float64).ravel()
    keep = np.isfinite(v) & (v > 0)
    return v[keep], int(v.size - keep.sum())


def _log_bins(values: NDArray[np.float64], bins: int) -> NDArray[np.float64]:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        low, high = low / 1.5, high * 1.5
    return np.geomspace(low, high, bins + 1)


def plot_maturity(
    results: Mapping[str, MaturityResult] | MaturityResult,
    alpha: float = 0.05,
    ax: Axes | None = None,
) -> Figure:
    """Kaplan–Meier survival S(n) = P(n(α) > n) of item maturity, one step curve per mode.

    Each curve starts at S = 1 at the smallest recorded count and is held flat up to the largest
    censoring count; a dotted line marks S = 0.5 (where the median is read). Draws one line per
    mode plus the S = 0.5 guide.

    Parameters
    ----------
    results
        A :class:`~embcore.analysis.MaturityResult` or ``{mode: MaturityResult}``.
    alpha
        Which computed α level to draw (KeyError if it was not computed).
    ax
        Axes to draw into; a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure

    >>> from embcore.analysis import Trajectories, maturity
    >>> t = Trajectories.from_arrays([1, 1, 1], [1, 2, 3], [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    >>> fig = plot_maturity({"real-time": maturity(t)}, alpha=0.05)
    >>> len(fig.axes[0].lines)
    2
    """
    modes = _by_mode(results, MaturityResult)
    fig, ax = _new_axes(ax)
    lowest, highest = np.inf, 0.0
    for i, (mode, result) in enumerate(modes.items()):
        level = result.level(alpha)
        curve = level.overall
        if level.durations.size == 0:
            ax.plot([], [], color=f"C{i}", label=f"{mode}: no items")
            continue
        start = float(level.durations.min())
        end = float(level.durations.max())
        times = [start] + [float(t) for t, _ in curve.km] + [end]
        survival = [1.0] + [float(s) for _, s in curve.km]
        survival.append(survival[-1])
        median = "not reached" if curve.median is None else str(curve.median)
        ax.step(
            times,
            survival,
            where="post",
            color=f"C{i}",
            label=(
                f"{mode}: median {median}, {curve.n_mature}/{curve.n_items} mature, "
                f"{curve.n_censored} censored"
            ),
        )
        lowest, highest = min(lowest, start), max(highest, end)
    ax.axhline(0.5, color="0.4", linestyle=":", linewidth=1, label="S = 0.5 (median)")
    if np.isfinite(lowest) and lowest >= 1 and highest / lowest >= 50:
        ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("interactions n")
    ax.set_ylabel("S(n) = P(not yet mature after n)")
    ax.set_title(f"Maturity: Kaplan–Meier survival, α = {alpha:g} (d_cos to reference < α)")
    ax.legend(fontsize="small")
    ax.grid(True, alpha=0.3)
    return fig


def plot_learning_curve(
    results: Mapping[str, LearningPeakResult] | LearningPeakResult,
    ax: Axes | None = None,
) -> Figure:
    """Alignment gain G(n) with the learning peak marked, and mean cosine drift δ(n).

    Without ``ax``: two panels sharing the count axis (G on top, δ below). With ``ax``: G on
    ``ax`` and δ dashed on a twin y-axis. Per mode: a G line, a peak marker, and a δ line.

    Parameters
    ----------
    results
        A :class:`~embcore.analysis.LearningPeakResult` or ``{mode: LearningPeakResult}``.
    ax
        Axes to draw into; a new two-panel figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure

    >>> from embcore.analysis import Trajectories, learning_peak
    >>> rows = [[0.0, 1.0], [1.0, 1.0], [1.0, 0.0]]
    >>> fig = plot_learning_curve(learning_peak(Trajectories.from_arrays([1] * 3, [1, 2, 3], rows)))
    >>> len(fig.axes)
    2
    """
    modes = _by_mode(results, LearningPeakResult)
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7.0, 6.0), layout="constrained")
        gain_ax, drift_ax = fig.subplots(2, 1, sharex=True)
        drift_style = "-"
    else:
        fig, gain_ax = _new_axes(ax)
        drift_ax = gain_ax.twinx()
        drift_style = "--"
    lowest, highest = np.inf, 0.0
    for i, (mode, result) in enumerate(modes.items()):
        counts = result.counts.astype(np.float64)
        gain_ax.plot(counts, result.gain_mean, color=f"C{i}", label=f"{mode}: mean G(n)")
        if result.peak_count is not None:
            peak = int(np.flatnonzero(result.counts == result.peak_count)[0])
            gain_ax.plot(
                [counts[peak]],
                [result.gain_mean[peak]],
                marker="o",
                linestyle="none",
                color=f"C{i}",
                label=f"{mode}: peak n̂ = {result.peak_count}",
            )
        drift_ax.plot(
            counts,
            result.drift_mean,
            color=f"C{i}",
            linestyle=drift_style,
            label=f"{mode}: mean δ(n)",
        )
        if counts.size:
            lowest, highest = min(lowest, counts.min()), max(highest, counts.max())
    if not any(r.counts.size for r in modes.values()):
        _no_data(gain_ax)
    if np.isfinite(lowest) and lowest >= 1 and highest / lowest >= 50:
        gain_ax.set_xscale("log")
    gain_ax.set_ylabel("alignment gain G(n)")
    drift_ax.set_ylabel("cosine drift δ(n) = 1 − cos(e(n), e(n−1))")
    drift_ax.set_xlabel("interaction count n")
    if ax is None:
        gain_ax.set_title("Learning curve: alignment gain per interaction")
        drift_ax.set_title("Mean cosine drift per update")
        drift_ax.legend(fontsize="small")
        gain_ax.grid(True, alpha=0.3)
        drift_ax.grid(True, alpha=0.3)
    else:
        gain_ax.set_xlabel("interaction count n")
        gain_ax.set_title("Learning curve: gain G(n) (solid) and drift δ(n) (dashed)")
        handles, labels = gain_ax.get_legend_handles_labels()
        more_handles, more_labels = drift_ax.get_legend_handles_labels()
        gain_ax.legend(handles + more_handles, labels + more_labels, fontsize="small")
    if ax is None:
        gain_ax.legend(fontsize="small")
    return fig


def _norms_of(value: ArrayLike | NormPopularityResult) -> NDArray[np.float64]:
    if isinstance(value, NormPopularityResult):
        return value.item_norms
    return np.asarray(value, dtype=np.float64)


def plot_norm_distribution(
    norms: Mapping[str, ArrayLike | NormPopularityResult] | NormPopularityResult,
    ax: Axes | None = None,
    bins: int = 50,
) -> Figure:
    """Histogram of embedding norms per mode on log-spaced bins (log x), medians dotted.

    Zero norms cannot sit on a log axis; they are dropped and counted in the legend. Draws one
    step histogram (a patch) and one median line per mode.

    Parameters
    ----------
    norms
        ``{mode: norms array}`` (or :class:`~embcore.analysis.NormPopularityResult` values).
    ax
        Axes to draw into; a new figure when omitted.
    bins
        Number of log-spaced bins shared by all modes.

    Returns
    -------
    matplotlib.figure.Figure

    >>> fig = plot_norm_distribution({"batch": [1.0, 2.0, 4.0], "real-time": [0.5, 3.0]})
    >>> len(fig.axes[0].patches)
    2
    """
    modes = _by_mode(norms, NormPopularityResult)
    fig, ax = _new_axes(ax)
    cleaned = {mode: _positive(_norms_of(v)) for mode, v in modes.items()}
    every = [v for v, _ in cleaned.values() if v.size]
    if not every:
        _no_data(ax)
    else:
        edges = _log_bins(np.concatenate(every), bins)
        for i, (mode, (values, dropped)) in enumerate(cleaned.items()):
            if values.size == 0:
                continue
            median = float(np.median(values))
            note = f", {dropped} zero" if dropped else ""
            ax.hist(
                values,
                bins=edges.tolist(),
                histtype="step",
                linewidth=1.5,
                color=f"C{i}",
                label=f"{mode} (n={values.size}{note}, median {median:.3g})",
            )
            ax.axvline(median, color=f"C{i}", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.legend(fontsize="small")
    ax.set_xlabel("embedding norm ‖e‖ (log scale)")
    ax.set_ylabel("items")
    ax.set_title("Distribution of embedding norms")
    ax.grid(True, alpha=0.3)
    return fig


def _norms_and_popularity(
    value: tuple[ArrayLike, ArrayLike] | NormPopularityResult,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    if isinstance(value, NormPopularityResult):
        return value.item_norms, value.item_popularity
    norms = np.asarray(value[0], dtype=np.float64).ravel()
    pops = np.asarray(value[1], dtype=np.float64).ravel()
    if norms.size != pops.size:
        raise ValueError(
            f"norms has {norms.size} elements but popularity has {pops.size}; "
            "they must have the same length"
        )
    return norms, pops


def _binned_medians(
    x: NDArray[np.float64], y: NDArray[np.float64], bins: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    edges = _log_bins(x, bins)
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, bins - 1)
    centres, medians = [], []
    for b in np.unique(which):
        members = which == b
        centres.append(float(np.sqrt(edges[b] * edges[b + 1])))
        medians.append(float(np.median(y[members])))
    return np.array(centres), np.array(medians)


def plot_norm_vs_popularity(
    data: Mapping[str, tuple[ArrayLike, ArrayLike] | NormPopularityResult],
    ax: Axes | None = None,
    max_points: int = 20_000,
    bins: int = 20,
    seed: int = 0,
) -> Figure:
    """Norm against 1 + popularity on log-log axes: a point cloud and binned medians per mode.

    Points are subsampled to ``max_points`` per mode (``seed``) to keep files small; medians use
    all items. Zero norms are dropped (log axis). Draws one scatter collection and one median
    line per mode; the legend gives Spearman ρ over all items.

    Parameters
    ----------
    data
        ``{mode: (norms, popularity)}`` (or :class:`~embcore.analysis.NormPopularityResult`
        values).
    ax
        Axes to draw into; a new figure when omitted.
    max_points, bins, seed
        Scatter subsample size, number of log-spaced popularity bins, sampling seed.

    Returns
    -------
    matplotlib.figure.Figure

    >>> fig = plot_norm_vs_popularity({"batch": ([1.0, 2.0, 3.0], [0, 10, 100])})
    >>> len(fig.axes[0].collections), len(fig.axes[0].lines)
    (1, 1)
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"data must be a dict of mode -> (norms, popularity), got {type(data)}")
    fig, ax = _new_axes(ax)
    rng = np.random.default_rng(seed)
    drawn = 0
    for i, (mode, value) in enumerate(data.items()):
        norms, pops = _norms_and_popularity(value)
        keep = np.isfinite(norms) & (norms > 0) & np.isfinite(pops) & (pops >= 0)
        x, y = 1.0 + pops[keep], norms[keep]
        if x.size == 0:
            continue
        drawn += 1
        shown = rng.choice(x.size, size=max_points, replace=False) if x.size > max_points else None
        ax.scatter(
            x if shown is None else x[shown],
            y if shown is None else y[shown],
            s=4,
            alpha=0.2,
            color=f"C{i}",
            linewidths=0,
            rasterized=True,
        )
        centres, medians = _binned_medians(x, y, bins)
        rho = _spearman(norms, pops)
        ax.plot(
            centres,
            medians,
            marker="o",
            markersize=4,
            color=f"C{i}",
            label=f"{mode}: binned median (Spearman ρ = {rho:.2f}, n = {x.size})",
        )
    if drawn:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize="small")
    else:
        _no_data(ax)
    ax.set_xlabel("1 + popularity (interactions, log scale)")
    ax.set_ylabel("embedding norm ‖e‖ (log scale)")
    ax.set_title("Embedding norm vs popularity")
    ax.grid(True, alpha=0.3, which="both")
    return fig


def plot_drift_histogram(
    result: SnapshotDriftResult,
    ax: Axes | None = None,
    bins: int = 50,
) -> Figure:
    """Per-row cosine drift between two snapshots: unaligned vs Procrustes-aligned.

    A large unaligned but small aligned drift means the space rotated rather than items
    moving. Draws two step histograms (patches) on shared bins over [0, max drift].

    Parameters
    ----------
    result
        A :class:`~embcore.analysis.SnapshotDriftResult`.
    ax
        Axes to draw into; a new figure when omitted.
    bins
        Number of bins.

    Returns
    -------
    matplotlib.figure.Figure

    >>> from embcore.analysis import snapshot_drift
    >>> m = np.random.default_rng(0).normal(size=(20, 3))
    >>> fig = plot_drift_histogram(snapshot_drift((np.arange(20), m), (np.arange(20), -m)))
    >>> len(fig.axes[0].patches)
    2
    """
    if not isinstance(result, SnapshotDriftResult):
        raise TypeError(f"expected SnapshotDriftResult, got {type(result).__name__}")
    fig, ax = _new_axes(ax)
    series: dict[str, Any] = {
        "unaligned": result.unaligned_drift,
        "Procrustes-aligned": result.aligned_drift,
    }
    if result.n_matched == 0:
        _no_data(ax)
    else:
        top = max(float(np.max(v)) for v in series.values())
        edges = np.linspace(0.0, top if top > 0 else 1e-6, bins + 1)
        for i, (name, values) in enumerate(series.items()):
            ax.hist(
                values,
                bins=edges.tolist(),
                histtype="step",
                linewidth=1.5,
                color=f"C{i}",
                label=f"{name} (mean {float(np.mean(values)):.3g})",
            )
        ax.legend(fontsize="small")
    ax.set_xlabel("per-row cosine drift d_cos(a_i, b_i)")
    ax.set_ylabel("rows")
    ax.set_title(
        f"Snapshot drift over {result.n_matched} matched rows "
        f"(disparity {result.disparity:.3g}, CKA {result.cka:.3f})"
    )
    ax.grid(True, alpha=0.3)
    return fig


# --------------------------------------------------------------------------------------------
# The cross-mode protocol (embcore.protocol), drawn from metrics.json content


def plot_update_curve(curves: Mapping[str, Mapping[str, Any]], ax: Axes | None = None) -> Figure:
    """I(n), the mean change of the serving embedding per view, per log2 bin of views, one line
    per mode, the peak bin marked; bins with fewer than ``min_items`` items are drawn hollow.

    ``curves`` maps a mode to :func:`embcore.protocol.curve_summary` output (``bins``,
    ``update``, ``competing``, ``peak_bin``).

    >>> c = {"bins": ["2", "3-4"], "update": [0.2, 0.1], "competing": [True, True], "peak_bin": 0}
    >>> fig = plot_update_curve({"realtime": c})
    >>> fig.axes[0].get_yscale()
    'log'
    """
    fig, ax = _new_axes(ax)
    drawn = False
    labels: list[str] = []
    for i, (mode, curve) in enumerate(curves.items()):
        values = np.array([np.nan if v is None else v for v in curve["update"]], dtype=np.float64)
        labels = list(curve["bins"])
        x = np.arange(values.size)
        competing = np.asarray(curve["competing"], dtype=bool)
        positive = np.isfinite(values) & (values > 0)
        if not positive.any():
            continue
        drawn = True
        peak = curve.get("peak_bin")
        name = f"{mode}: peak at views {labels[peak]}" if peak is not None else f"{mode}: no peak"
        ax.plot(x[positive], values[positive], color=f"C{i}", label=name)
        solid = positive & competing
        ax.plot(x[solid], values[solid], "o", color=f"C{i}")
        hollow = positive & ~competing
        ax.plot(x[hollow], values[hollow], "o", color=f"C{i}", fillstyle="none")
        if peak is not None and positive[peak]:
            ax.plot([peak], [values[peak]], marker="*", markersize=16, color=f"C{i}")
    if drawn:
        ax.set_yscale("log")
        ax.legend(fontsize="small")
    else:
        _no_data(ax)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("view n of the item (log2 bins)")
    ax.set_ylabel("I(n) = mean 1 − cos(S(n), S(n−1))")
    ax.set_title("Update-based learning curve: change of the serving embedding per view")
    ax.grid(True, alpha=0.3)
    return fig


def plot_mature_by_n(summaries: Mapping[str, Mapping[str, Any]], ax: Axes | None = None) -> Figure:
    """The raw mature-by-n curve (share of items mature after at most n interactions, the
    never-matured in the denominator; solid) beside Kaplan–Meier 1 − S(n) (never-matured
    treated as censored; dashed), per mode.

    ``summaries`` maps a mode to :func:`embcore.protocol.maturity_summary` output.

    >>> s = {"curve": {"n": [0, 1, 2], "share": [0.0, 0.2, 0.5]}, "km": [[2, 0.4]],
    ...      "criterion": "relative", "alpha": 0.05}
    >>> len(plot_mature_by_n({"batch": s}).axes[0].lines)
    2
    """
    fig, ax = _new_axes(ax)
    title = "Maturity on the same settled items"
    for i, (mode, summary) in enumerate(summaries.items()):
        curve = summary["curve"]
        if curve["n"]:
            ax.step(curve["n"], curve["share"], where="post", color=f"C{i}", label=f"{mode}: raw")
        km = np.asarray(summary["km"], dtype=np.float64).reshape(-1, 2)
        if km.size:
            n = np.concatenate([[0.0], km[:, 0]])
            done = np.concatenate([[0.0], 1.0 - km[:, 1]])
            ax.step(n, done, where="post", color=f"C{i}", linestyle="--", label=f"{mode}: KM")
        title = (
            f"Mature by n ({summary.get('criterion', '')} criterion, "
            f"α = {summary.get('alpha', 0):g})"
        )
    if not ax.lines:
        _no_data(ax)
    else:
        ax.legend(fontsize="small")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    ax.set_ylim(0, 1)
    ax.set_xlabel("interactions n")
    ax.set_ylabel("share of items mature")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    return fig


def plot_decile_ratio(by_decile: Mapping[str, Any] | None, ax: Axes | None = None) -> Figure:
    """Batch/real-time median-norm ratio per popularity decile with its bootstrap interval.

    >>> d = {"ratio": [1.0, 2.0], "low": [0.9, 1.5], "high": [1.1, 2.5], "n_items": [5, 5]}
    >>> fig = plot_decile_ratio(d)
    >>> fig.axes[0].get_xlabel()
    'popularity decile (exposure; 0 = least exposed)'
    """
    fig, ax = _new_axes(ax)
    if not by_decile or not by_decile.get("ratio"):
        _no_data(ax)
    else:
        ratio = np.array([np.nan if v is None else v for v in by_decile["ratio"]], dtype=float)
        low = np.array([np.nan if v is None else v for v in by_decile["low"]], dtype=float)
        high = np.array([np.nan if v is None else v for v in by_decile["high"]], dtype=float)
        x = np.arange(ratio.size)
        err = np.vstack([np.clip(ratio - low, 0, None), np.clip(high - ratio, 0, None)])
        ax.errorbar(x, ratio, yerr=err, fmt="o-", capsize=3, color="C1", label="batch / realtime")
        ax.axhline(1.0, color="0.5", linewidth=0.8)
        ax.set_xticks(x, [str(k) for k in x])
        ax.legend(fontsize="small")
    ax.set_xlabel("popularity decile (exposure; 0 = least exposed)")
    ax.set_ylabel("median norm ratio (95% interval)")
    ax.set_title("Batch vs real-time item norms by popularity, on the same items")
    ax.grid(True, alpha=0.3)
    return fig


def plot_engagement_references(learning: Mapping[str, Any], ax: Axes | None = None) -> Figure:
    """Scored CTR of every mode beside the reference policies run on the same world (random,
    non-personalised oracle, oracle; a missing one is labelled n/a).

    >>> fig = plot_engagement_references({"modes": {"realtime": {"ctr": 0.2}},
    ...     "reference_policies": {"oracle": {"available": True, "ctr": 0.4}}})
    >>> len(fig.axes[0].patches)
    2
    """
    fig, ax = _new_axes(ax)
    names, values, colours = [], [], []
    for i, (mode, m) in enumerate(learning.get("modes", {}).items()):
        names.append(mode)
        values.append(np.nan if m.get("ctr") is None else float(m["ctr"]))
        colours.append(f"C{i}")
    for name, ref in learning.get("reference_policies", {}).items():
        available = ref.get("available") and ref.get("ctr") is not None
        names.append(name.replace("_", " ") + ("" if available else "\n(n/a)"))
        values.append(float(ref["ctr"]) if available else 0.0)
        colours.append("0.6")
    if not names:
        _no_data(ax)
    else:
        x = np.arange(len(names))
        ax.bar(x, values, color=colours)
        for k, v in enumerate(values):
            if np.isfinite(v) and v > 0:
                ax.text(k, v, f"{100 * v:.1f}%", ha="center", va="bottom", fontsize="small")
        ax.set_xticks(x, names, fontsize="small")
    ax.set_ylabel("click-through rate after the burn-in")
    ax.set_title("Do the models learn? CTR beside reference policies on the same world")
    ax.grid(True, axis="y", alpha=0.3)
    return fig
