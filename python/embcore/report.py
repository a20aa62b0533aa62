"""The report of ``embcore study``: its figures, readings, claims and notes, laid out by the one
report writer (:mod:`embcore.reporting`).

:func:`write_report` draws the figures (maturity, learning curve and norm figures are the
shared ones; the engagement figures are drawn here), saves one PNG per figure and writes
``report.html``; :func:`render_html` builds the page from ``metrics.json`` content and PNG bytes
alone, so a report can be rebuilt without re-running the study.

>>> html = render_html({"config": {"scale": "tiny"}, "modes": {}, "comparison": {}}, {})
>>> html.startswith("<!DOCTYPE html>")
True
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embcore import reporting
from embcore.reporting import get, num

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FIGURES", "LAYOUT", "readings", "render_html", "write_report"]

FIGURES: dict[str, str] = {
    **reporting.SHARED_FIGURES,
    "engagement_over_time": "Engagement over time (hourly click and play rates)",
    "engagement_by_age": "Engagement by item age",
}
"""Figure name → title, in report order (the PNG is ``<name>.png``)."""

_PAPER = "Saket, Jeunen & Kalim, SIGIR 2024 (arXiv 2312.15265)"


# --------------------------------------------------------------------------------------------
# Figures


def _engagement_over_time(metrics: Mapping[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 5.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    for i, (mode, m) in enumerate(metrics["modes"].items()):
        over = m["engagement"]["over_time"]
        hours = over["hour"]
        top.plot(hours, reporting.nan_list(over["ctr"]), color=f"C{i}", label=mode)
        bottom.plot(hours, reporting.nan_list(over["play_rate"]), color=f"C{i}", label=mode)
    top.set_ylabel("click rate")
    bottom.set_ylabel("successful-play rate")
    bottom.set_xlabel("event time (hours)")
    top.set_title("Engagement per hour of event time (same requests for every mode)")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
        if metrics["modes"]:
            ax.legend(fontsize="small")
    return fig


def _engagement_by_age(metrics: Mapping[str, Any]) -> Figure:
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 5.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    modes = list(metrics["modes"].items())
    width = 0.8 / max(len(modes), 1)
    labels: list[str] = []
    for i, (mode, m) in enumerate(modes):
        by_age = m["engagement"]["by_item_age"]
        labels = by_age["buckets"]
        x = np.arange(len(labels)) + (i - (len(modes) - 1) / 2) * width
        top.bar(x, reporting.nan_list(by_age["ctr"]), width=width, color=f"C{i}", label=mode)
        bottom.bar(
            x, reporting.nan_list(by_age["play_rate"]), width=width, color=f"C{i}", label=mode
        )
    bottom.set_xticks(range(len(labels)), labels)
    top.set_ylabel("click rate")
    bottom.set_ylabel("successful-play rate")
    bottom.set_xlabel("item age at impression")
    top.set_title("Engagement by item age (fresh items on the left)")
    for ax in (top, bottom):
        ax.grid(True, axis="y", alpha=0.3)
        if modes:
            ax.legend(fontsize="small")
    return fig


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


# --------------------------------------------------------------------------------------------
# Readings and claims


def readings(metrics: Mapping[str, Any]) -> dict[str, str]:
    """One-line reading of each figure, from the numbers in ``metrics``.

    >>> m = {"config": {}, "comparison": {"ctr_lift_realtime_over_batch": 1.25}, "modes": {
    ...     "realtime": {"engagement": {"ctr": 0.05, "play_rate": 0.02}}}}
    >>> readings(m)["engagement_over_time"]
    'Click rate over the run: realtime 5.00%; successful-play rate: realtime 2.00%; realtime/batch CTR ratio 1.250.'
    """  # noqa: E501
    modes: Mapping[str, Any] = metrics.get("modes", {})
    out = reporting.shared_readings(metrics)

    def each(path: tuple[str, ...]) -> str:
        return ", ".join(f"{mode} {_pct(get(m, *path))}" for mode, m in modes.items())

    text = "Click rate over the run: " + each(("engagement", "ctr"))
    text += "; successful-play rate: " + each(("engagement", "play_rate"))
    lift = get(metrics, "comparison", "ctr_lift_realtime_over_batch")
    if lift is not None:
        text += f"; realtime/batch CTR ratio {lift:.3f}"
    out["engagement_over_time"] = text + "."

    text = "Fresh items: click rate " + each(("engagement", "fresh_ctr"))
    text += ", play rate " + each(("engagement", "fresh_play_rate"))
    lift = get(metrics, "comparison", "fresh_ctr_lift_realtime_over_batch")
    if lift is not None:
        text += f"; realtime/batch fresh-CTR ratio {lift:.3f} (paper: realtime better on fresh)"
    out["engagement_by_age"] = text + "."
    return out


def _claims(metrics: Mapping[str, Any]) -> list[reporting.Claim]:
    """(claim, paper, measured, verdict) for the paper's four findings."""
    comp = metrics.get("comparison", {})
    modes = metrics.get("modes", {})
    rows = [reporting.maturity_claim(comp)]
    a = get(modes, "realtime", "learning_peak_interactions")
    b = get(modes, "batch", "learning_peak_interactions")
    a50 = get(modes, "realtime", "learning_peak", "count_at_50pct_gain")
    b50 = get(modes, "batch", "learning_peak", "count_at_50pct_gain")
    peak_verdict = None if a is None or b is None else a < b
    if peak_verdict is False and a == b and a50 is not None and b50 is not None:
        # Same peak (e.g. both at the first interaction): compare how fast the gain comes.
        peak_verdict = None if a50 == b50 else a50 < b50
        tag = " (same peak; compared by the 50%-of-gain count)"
    else:
        tag = ""
    rows.append(
        (
            "The learning peak comes earlier under real-time updates",
            "earlier",
            f"peak: realtime {num(a)}, batch {num(b)}; 50% of gain: realtime {num(a50)}, "
            f"batch {num(b50)}{tag}",
            "partly: same peak, but the gain comes sooner"
            if tag and peak_verdict
            else reporting.verdict(peak_verdict),
        )
    )
    rows.append(reporting.norm_claim(comp))
    r = comp.get("fresh_ctr_lift_realtime_over_batch")
    rows.append(
        (
            "Real-time engages better on fresh items",
            "higher click and play rates",
            "n/a" if r is None else f"fresh CTR ratio {r:.3f}",
            reporting.verdict(None if r is None else r > 1),
        )
    )
    return rows


# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# The page

_SUMMARY_COLUMNS: tuple[reporting.Column, ...] = (
    ("events", ("events",), num),
    ("items", ("items",), num),
    ("median maturity", ("maturity", "median_interactions"), num),
    ("mature share", ("maturity", "mature_share"), _pct),
    ("learning peak", ("learning_peak_interactions",), num),
    ("norm p50", ("norm_quantiles", "p50"), num),
    ("norm p99", ("norm_quantiles", "p99"), num),
    ("ρ(norm, pop)", ("norm_popularity_spearman",), lambda v: num(v, 2)),
    ("CTR", ("engagement", "ctr"), _pct),
    ("play rate", ("engagement", "play_rate"), _pct),
    ("fresh CTR", ("engagement", "fresh_ctr"), _pct),
    ("fresh play rate", ("engagement", "fresh_play_rate"), _pct),
)

LAYOUT = reporting.ReportLayout(
    command="study",
    figures=FIGURES,
    draw={"engagement_over_time": _engagement_over_time, "engagement_by_age": _engagement_by_age},
    heading=lambda metrics: "embcore study: real-time vs batch embeddings",
    intro=lambda config: (
        "<p>A simulated short-video platform (<code>embcore.sim</code>) served by each training "
        "mode side by side on the same requests, pools and engagement coins; every mode trains "
        "a matrix factorization on its own events. The questions are those of "
        f"{html.escape(_PAPER)}.</p>"
    ),
    settings=("scale", "seed", "modes", "period_seconds", "epochs", "learning_rate", "dim"),
    summary=_SUMMARY_COLUMNS,
    claims=_claims,
    scope="run",
    claims_note=(
        '<p class="muted">A claim marked "not reproduced here" is what this simulator honestly '
        "shows under this configuration; docs/study.md explains which knobs (batch period, "
        "epochs, learning rate) move each effect and why.</p>"
    ),
    readings=readings,
    notes=(
        "<li><b>Maturity</b>: an item is mature after n interactions once its embedding stays "
        "within cosine distance α of its final embedding for every later record; items that "
        "never get there are right-censored (Kaplan–Meier).</li>",
        "<li><b>Batch trajectories</b> are the <i>published</i> states: a batch item's e(n) is "
        "its embedding after the batch run in which its count reached n.</li>",
        "<li><b>Learning peak</b>: the interaction count with the largest mean alignment gain "
        "per interaction G(n) = cos(e(n), e*) − cos(e(n−1), e*); between two records the gain "
        "is spread evenly over the interactions in between, and only counts covered by enough "
        "items compete.</li>",
        "<li><b>e(0)</b>: every tracked item's trajectory starts with its initial row at "
        "count 0 (rows are initialised deterministically from the seed and the id).</li>",
        "<li><b>Engagement</b> counts every impression, exploration slots included (those are "
        "identical across modes); fresh means younger than the simulator's "
        "<code>fresh_seconds</code>.</li>",
    ),
    warn_as="embcore report",
)
"""The study's report (:class:`embcore.reporting.ReportLayout`)."""


def write_report(
    directory: str | Path,
    metrics: Mapping[str, Any],
    results: Mapping[str, Mapping[str, Any]],
    dpi: int = 100,
) -> dict[str, str | None]:
    """Save one PNG per figure into ``directory`` and write ``report.html`` there.

    Parameters
    ----------
    directory : path
        An existing directory.
    metrics : mapping
        The study's metrics (``config``, ``modes``, ``comparison``).
    results : mapping
        ``{mode: {"maturity": MaturityResult, "learning_peak": LearningPeakResult,
        "norms": NormPopularityResult}}`` from :mod:`embcore.analysis`.
    dpi : int
        Resolution of the PNGs.

    Returns
    -------
    dict
        Figure name → PNG file name, or None when a figure could not be drawn (the report
        then says why, and a warning goes to stderr).

    Examples
    --------
    >>> import tempfile
    >>> m = {"config": {}, "modes": {}, "comparison": {}}
    >>> files = write_report(tempfile.mkdtemp(), m, {})
    >>> files["engagement_by_age"]
    'engagement_by_age.png'
    """
    return LAYOUT.write_report(directory, metrics, results, dpi)


def render_html(
    metrics: Mapping[str, Any],
    images: Mapping[str, bytes],
    errors: Mapping[str, str] | None = None,
) -> str:
    """The report page: summary, the paper's claims checked, and each figure with its reading.

    Parameters
    ----------
    metrics : mapping
        Content of ``metrics.json``.
    images : mapping
        Figure name → PNG bytes (embedded as ``data:image/png;base64`` URIs).
    errors : mapping, optional
        Figure name → why it could not be drawn.

    Returns
    -------
    str
        A complete HTML5 document with no external references.

    Examples
    --------
    >>> page = render_html({"config": {}, "modes": {}, "comparison": {}}, {"maturity": b"png"})
    >>> "data:image/png;base64,cG5n" in page
    True
    """
    return LAYOUT.render_html(metrics, images, errors)
