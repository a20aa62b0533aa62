"""The report of ``embcore replay``: its figures, readings, claims and notes, laid out by the one
report writer (:mod:`embcore.reporting`).

The maturity, learning-curve and norm figures are the shared ones; the progressive-validation
figures (AUC and log-loss over time, AUC by item freshness) are drawn here.

>>> page = render_html({"config": {}, "modes": {}, "comparison": {}}, {"maturity": b"png"})
>>> page.startswith("<!DOCTYPE html>") and "data:image/png;base64,cG5n" in page
True
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from embcore import reporting
from embcore.reporting import get, num

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FIGURES", "LAYOUT", "render_html", "write_report"]

FIGURES: dict[str, str] = {
    **reporting.SHARED_FIGURES,
    "auc_over_time": "Progressive validation over time (AUC and log-loss per window)",
    "auc_by_item_interactions": "Progressive validation by item freshness",
}
"""Figure name → title, in report order (the PNG is ``<name>.png``)."""


# --------------------------------------------------------------------------------------------
# Figures


def _fig_over_time(metrics: Mapping[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 5.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    width = 1
    for k, (mode, m) in enumerate(metrics["modes"].items()):
        over = m["engagement"]["over_time"]
        width = over["window_seconds"]
        start = over["start"][0] if over["start"] else 0
        x = [(s - start) / width for s in over["start"]]
        top.plot(x, reporting.nan_list(over["auc"]), color=f"C{k}", marker=".", label=mode)
        bottom.plot(x, reporting.nan_list(over["logloss"]), color=f"C{k}", marker=".", label=mode)
    top.axhline(0.5, color="0.5", linewidth=0.8)
    top.set_ylabel("AUC")
    bottom.set_ylabel("log-loss")
    bottom.set_xlabel(f"window ({_duration_text(width)} each) since the first event")
    top.set_title("Progressive validation per time window (scored before training)")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def _fig_by_freshness(metrics: Mapping[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 5.0), layout="constrained")
    top, bottom = fig.subplots(2, 1)
    modes = list(metrics["modes"].items())
    width = 0.8 / max(len(modes), 1)
    for ax, key, xlabel in (
        (top, "by_item_interactions", "item's interaction index in the log"),
        (bottom, "by_item_age", "time since the item's first event"),
    ):
        labels: list[str] = []
        for k, (mode, m) in enumerate(modes):
            part = m["engagement"][key]
            labels = part["buckets"]
            x = np.arange(len(labels)) + (k - (len(modes) - 1) / 2) * width
            ax.bar(x, reporting.nan_list(part["auc"]), width=width, color=f"C{k}", label=mode)
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("AUC")
        ax.set_ylim(0.0, 1.0)
        ax.axhline(0.5, color="0.5", linewidth=0.8)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize="small")
    top.set_title("AUC by item freshness (fresh items on the left)")
    return fig


def _duration_text(seconds: int) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


# --------------------------------------------------------------------------------------------
# Readings and claims


def _readings(metrics: Mapping[str, Any]) -> dict[str, str]:
    out = reporting.shared_readings(metrics)
    modes: Mapping[str, Any] = metrics.get("modes", {})

    def each(*path: str) -> str:
        return ", ".join(f"{mode} {num(get(m, *path))}" for mode, m in modes.items())

    text = f"AUC over the whole log: {each('engagement', 'auc')}; log-loss: "
    out["auc_over_time"] = text + each("engagement", "logloss") + "."
    fresh = get(metrics, "config", "fresh_interactions")
    hours = (get(metrics, "config", "fresh_seconds") or 0) / 3600
    text = (
        f"AUC on an item's first {fresh} interactions: {each('engagement', 'fresh_auc')}; "
        f"in its first {hours:g} h: {each('engagement', 'fresh_age_auc')}"
    )
    gain = get(metrics, "comparison", "fresh_auc_realtime_minus_batch")
    if gain is not None:
        text += f"; realtime − batch fresh AUC {gain:+.4f} (paper: realtime better on fresh items)"
    out["auc_by_item_interactions"] = text + "."
    return out


def _claims(metrics: Mapping[str, Any]) -> list[reporting.Claim]:
    comp: Mapping[str, Any] = metrics.get("comparison", {})
    modes: Mapping[str, Any] = metrics.get("modes", {})

    a = get(modes, "realtime", "learning_peak", "count_at_50pct_gain")
    b = get(modes, "batch", "learning_peak", "count_at_50pct_gain")
    f = comp.get("fresh_auc_realtime_minus_batch")
    return [
        reporting.maturity_claim(comp),
        (
            "Real-time embeddings learn earlier",
            "earlier learning peak",
            f"50% of the alignment gain at n = {num(a)} (realtime), {num(b)} (batch)",
            reporting.verdict(None if a is None or b is None or a == b else a < b),
        ),
        reporting.norm_claim(comp),
        (
            "Real-time does better on fresh items",
            "higher engagement on fresh content",
            "n/a" if f is None else f"fresh AUC realtime − batch {f:+.4f}",
            reporting.verdict(None if f is None else f > 0),
        ),
    ]


def _details(metrics: Mapping[str, Any]) -> list[str]:
    log_report = metrics.get("log_report")
    if not isinstance(log_report, Mapping):
        return []
    return [
        f'<p class="muted">Log: {num(log_report.get("rows_read"))} rows read, '
        f"{num(log_report.get('events_out'))} events replayed, "
        f"{num(log_report.get('malformed_rows'))} malformed and "
        f"{num(log_report.get('duplicate_rows'))} duplicate rows dropped"
        f"{', sorted by time in memory' if log_report.get('sorted_in_memory') else ''}.</p>"
    ]


def _intro(config: Mapping[str, Any]) -> str:
    return (
        "<p>A logged event stream replayed through each training mode side by side (the same "
        "events in the same order). Engagement is measured by <b>progressive validation</b>: "
        "every event is scored by the mode's serving model before the mode trains on it "
        "(real-time and hybrid: the live tables just before the event's own update, "
        f"{html.escape(_staleness(config))}; batch: the last published snapshot).</p>"
    )


def _staleness(config: Mapping[str, Any]) -> str:
    threads = config.get("threads")
    if threads == 1:
        return "exact per event with one training thread"
    return (
        f"with {threads} training threads the shares of a chunk run side by side, so an event "
        "may miss the updates of events the other threads are training at the same time"
    )


# --------------------------------------------------------------------------------------------
# The page

_SUMMARY_COLUMNS: tuple[reporting.Column, ...] = (
    ("events", ("events",), num),
    ("items", ("items",), num),
    ("users", ("users",), num),
    ("median maturity", ("maturity", "median_interactions"), num),
    ("learning peak", ("learning_peak_interactions",), num),
    ("norm p50", ("norm_quantiles", "p50"), num),
    ("norm p99", ("norm_quantiles", "p99"), num),
    ("ρ(norm, pop)", ("norm_popularity_spearman",), num),
    ("AUC", ("engagement", "auc"), num),
    ("log-loss", ("engagement", "logloss"), num),
    ("fresh AUC", ("engagement", "fresh_auc"), num),
    ("fresh-by-age AUC", ("engagement", "fresh_age_auc"), num),
)

LAYOUT = reporting.ReportLayout(
    command="replay",
    figures=FIGURES,
    draw={"auc_over_time": _fig_over_time, "auc_by_item_interactions": _fig_by_freshness},
    heading=lambda metrics: (
        f"embcore replay: {metrics.get('config', {}).get('log', 'an interaction log')}"
    ),
    intro=_intro,
    settings=(
        "format",
        "seed",
        "modes",
        "period_seconds",
        "epochs",
        "learning_rate",
        "dim",
        "fresh_interactions",
        "fresh_seconds",
    ),
    details=_details,
    summary=_SUMMARY_COLUMNS,
    claims=_claims,
    scope="log",
    readings=_readings,
    notes=(
        "<li><b>AUC</b> is exact (rank-based, ties count one half) over the events each mode "
        "scored before training on them; a label is positive when it is ≥ 0.5. "
        "<b>Log-loss</b> clips the predicted probability to [1e-7, 1 − 1e-7].</li>",
        "<li><b>Fresh</b> events are an item's first interactions in the log (by count) or its "
        "events in the first hours after its first event (by age); items already present "
        "when the log starts count as fresh too.</li>",
        "<li><b>Maturity, learning peak and norms</b> are computed as in "
        "<code>embcore study</code> (docs/study.md); batch trajectories are the published "
        "states.</li>",
    ),
)
"""The replay's report (:class:`embcore.reporting.ReportLayout`)."""


write_report = LAYOUT.write_report
"""Save one PNG per figure of :data:`FIGURES` into a directory and write ``report.html``."""
render_html = LAYOUT.render_html
"""The replay report page: the log, a summary, the paper's claims and each figure."""
