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
    "learning": "Do the models learn? Click rate beside reference policies",
    "update_curve": "Learning peak: change of the serving embedding per view, I(n)",
    "maturity_protocol": "Maturity on the same settled items: raw mature-by-n and Kaplan–Meier",
    "norm_ratio_by_decile": "Batch / real-time norm ratio by popularity decile",
    **reporting.SHARED_FIGURES,
    "learning_curve": "Learning efficiency (secondary): alignment gain per interaction G(n)",
    "maturity": "Maturity per mode on its own items (whole trajectories, earlier definition)",
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


def _learning_figure(metrics: Mapping[str, Any]) -> Figure:
    from embcore import plots

    return plots.plot_engagement_references(metrics.get("learning", {}))


def _update_curve_figure(metrics: Mapping[str, Any]) -> Figure:
    from embcore import plots

    modes = get(metrics, "protocol", "modes") or {}
    return plots.plot_update_curve({mode: m["update_curve"] for mode, m in modes.items()})


def _maturity_protocol_figure(metrics: Mapping[str, Any]) -> Figure:
    from embcore import plots

    modes = get(metrics, "protocol", "modes") or {}
    return plots.plot_mature_by_n({mode: m["maturity"]["headline"] for mode, m in modes.items()})


def _norm_ratio_figure(metrics: Mapping[str, Any]) -> Figure:
    from embcore import plots

    return plots.plot_decile_ratio(
        get(metrics, "protocol", "norms", "batch_over_realtime_by_decile")
    )


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

    learning = metrics.get("learning", {})
    parts = [
        f"{mode} {_pct(m.get('ctr'))} (AUC {num(m.get('auc'))})"
        for mode, m in learning.get("modes", {}).items()
    ]
    refs = [
        f"{name.replace('_', ' ')} {_pct(r.get('ctr')) if r.get('available') else 'n/a'}"
        for name, r in learning.get("reference_policies", {}).items()
    ]
    out["learning"] = (
        "Click rate after the burn-in: " + ", ".join(parts) + "; reference policies on the same "
        "world: " + (", ".join(refs) or "none") + "."
    )
    proto = get(metrics, "protocol", "modes") or {}
    out["update_curve"] = (
        "Peak of I(n) (bins with at least 10 items): "
        + ", ".join(
            f"{mode} views {m['update_curve']['peak_views'] or 'n/a'}" for mode, m in proto.items()
        )
        + f" on {num(get(metrics, 'protocol', 'population', 'settled'))} settled items common to "
        "every mode."
    )
    out["maturity_protocol"] = (
        "Median interactions to maturity (relative criterion, never-matured count as never): "
        + ", ".join(
            f"{mode} {_median_text(m['maturity']['headline'])}" for mode, m in proto.items()
        )
        + "; mature share "
        + ", ".join(
            f"{mode} {_pct(m['maturity']['headline']['mature_share'])}" for mode, m in proto.items()
        )
        + "."
    )
    deciles = get(metrics, "protocol", "norms", "batch_over_realtime_by_decile")
    if deciles and deciles.get("ratio"):
        out["norm_ratio_by_decile"] = (
            f"Batch/realtime median-norm ratio from the least to the most exposed decile: "
            f"{num(deciles['ratio'][0])} to {num(deciles['ratio'][-1])} on "
            f"{num(get(metrics, 'protocol', 'norms', 'common_items'))} common items."
        )
    else:
        out["norm_ratio_by_decile"] = "Needs the realtime and the batch mode."
    return out


def _median_text(summary: Mapping[str, Any]) -> str:
    if summary.get("median_reached"):
        return num(summary.get("median_interactions"))
    return "not reached"


def _claims(metrics: Mapping[str, Any]) -> list[reporting.Claim]:
    """(claim, paper with its tolerance band, measured with its interval, verdict) for each of
    :data:`embcore.claims.CLAIMS`, as checked on this run (``metrics["claims"]``)."""
    rows = []
    for c in metrics.get("claims", []):
        measured = c.get("measured") or "n/a"
        if c.get("note"):
            measured += f" — {c['note']}"
        rows.append(
            (
                c["claim"],
                f"{c['paper']} (band {c['band_text']}; {c['statistic']})",
                measured,
                c["verdict"],
            )
        )
    return rows


def _details(metrics: Mapping[str, Any]) -> list[str]:
    """Flags, then "Do the models learn?", then the protocol's population — before the summary."""
    esc = html.escape
    lines = []
    flags = metrics.get("flags", [])
    if flags:
        lines.append('<div style="border:2px solid #c00;padding:0.5em 1em;background:#fee">')
        lines.append("<h2>Flags: this run is degenerate in these ways</h2><ul>")
        lines += [f"<li><b>{esc(f['code'])}</b>: {esc(f['message'])}</li>" for f in flags]
        lines.append("</ul></div>")
    config = metrics.get("config", {})
    learning = metrics.get("learning", {})
    burn_in = config.get("burn_in_seconds")
    lines.append("<h2>Do the models learn?</h2>")
    if burn_in is not None:
        lines.append(
            f'<p class="muted">Scored from t = {burn_in / 3600:g} h (burn-in: '
            "the first two batch periods, so every mode is judged after its second publish); "
            "AUC and log-loss are progressive: each event is scored by the serving model "
            "before it reaches the mode.</p>"
        )
    lines.append(
        "<table><tr><th>mode</th><th>events</th><th>AUC</th><th>log-loss</th>"
        "<th>log-loss of the constant rate</th><th>corr(score, true affinity)</th>"
        "<th>CTR</th></tr>"
    )
    for mode, m in learning.get("modes", {}).items():
        lines.append(
            f"<tr><td>{esc(mode)}</td><td>{num(m.get('events'))}</td>"
            f"<td>{num(m.get('auc'), 4)}</td><td>{num(m.get('logloss'), 4)}</td>"
            f"<td>{num(m.get('logloss_constant'), 4)}</td>"
            f"<td>{num(m.get('score_affinity_correlation'), 3)}</td>"
            f"<td>{_pct(m.get('ctr'))}</td></tr>"
        )
    for name, r in learning.get("reference_policies", {}).items():
        ctr = _pct(r.get("ctr")) if r.get("available") else esc(r.get("note", "n/a"))
        lines.append(
            f"<tr><td>{esc(name.replace('_', ' '))} (reference)</td><td>{num(r.get('impressions'))}"
            f"</td><td></td><td></td><td></td><td></td><td>{ctr}</td></tr>"
        )
    lines.append("</table>")
    population = get(metrics, "protocol", "population")
    if population:
        norms = get(metrics, "protocol", "norms") or {}
        per_mode = ", ".join(f"{k} {v:,d}" for k, v in norms.get("items_per_mode", {}).items())
        lines.append(
            f'<p class="muted">Protocol population: {num(population["tracked_in_every_mode"])} '
            f"tracked items have views in every mode (per mode: "
            f"{esc(', '.join(f'{k} {v:,d}' for k, v in population['tracked_per_mode'].items()))}); "
            f"{num(population['settled'])} of them are settled (life ended at least "
            f"{population['settle_seconds'] / 3600:g} h = window + period before the horizon) "
            "and carry maturity and the learning peak. Norms use the "
            f"{num(norms.get('common_items'))} items every mode's serving table holds "
            f"(per mode: {esc(per_mode)}).</p>"
        )
    return lines


# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# The page

_SUMMARY_COLUMNS: tuple[reporting.Column, ...] = (
    ("events", ("events",), num),
    ("items", ("items",), num),
    ("cold impressions", ("engagement", "cold_impression_share"), _pct),
    ("median maturity (own items, earlier definition)", ("maturity", "median_interactions"), num),
    ("norm p50", ("norm_quantiles", "p50"), num),
    ("norm p99", ("norm_quantiles", "p99"), num),
    ("ρ(norm, pop)", ("norm_popularity_spearman",), lambda v: num(v, 2)),
    ("CTR (whole run)", ("engagement", "ctr"), _pct),
    ("CTR (scored)", ("engagement", "scored", "ctr"), _pct),
    ("play rate", ("engagement", "play_rate"), _pct),
    ("fresh CTR", ("engagement", "fresh_ctr"), _pct),
    ("fresh play rate", ("engagement", "fresh_play_rate"), _pct),
)

LAYOUT = reporting.ReportLayout(
    command="study",
    figures=FIGURES,
    draw={
        "engagement_over_time": _engagement_over_time,
        "engagement_by_age": _engagement_by_age,
        "learning": _learning_figure,
        "update_curve": _update_curve_figure,
        "maturity_protocol": _maturity_protocol_figure,
        "norm_ratio_by_decile": _norm_ratio_figure,
    },
    heading=lambda metrics: "embcore study: real-time vs batch embeddings",
    intro=lambda config: (
        "<p>A simulated short-video platform (<code>embcore.sim</code>) served by each training "
        "mode side by side on the same requests, pools and engagement coins; every mode trains "
        "its model on its own events. The questions are those of "
        f"{html.escape(_PAPER)}.</p>"
    ),
    settings=(
        "scale",
        "seed",
        "modes",
        "model",
        "period_seconds",
        "window_seconds",
        "init",
        "epochs",
        "learning_rate",
        "init_scale",
        "dim",
        "burn_in_seconds",
    ),
    details=_details,
    summary=_SUMMARY_COLUMNS,
    claims=_claims,
    scope="run",
    claims_note=(
        '<p class="muted">Each claim is checked against its magnitude: the tolerance band was '
        "fixed before any run (docs/study.md). <i>reproduced</i>: the 95% bootstrap interval "
        "(items resampled) excludes no effect on the paper's side and the estimate is in the "
        "band; <i>direction only</i>: the effect is there at another magnitude; "
        "<i>inconclusive</i>: the interval contains no effect; <i>contradicted</i>: the "
        "interval is on the other side.</p>"
    ),
    readings=readings,
    notes=(
        "<li><b>One grid for every mode</b>: for each tracked item (the same ids in every "
        "mode), S(n) is the embedding that served it at its n-th view: the live row for "
        "real-time and hybrid, the last publish for batch, and its initial row e(0) before "
        "anything reached serving. Analyses use the items present in every mode.</li>",
        "<li><b>Settled reference</b>: maturity and the learning peak use items whose life "
        "ended at least window + period before the horizon, against their serving row at the "
        "horizon (e*).</li>",
        "<li><b>Maturity</b> (headline, init-invariant): the first n after which "
        "d(S(n), e*) &lt; α·d(e(0), e*) for every later view; the absolute criterion "
        "d &lt; α is shown beside it with the never-learned share (d(e(0), e*) &lt; α) left out "
        "of its medians. An item that never matured during its finished life counts as "
        "never (not censored); Kaplan–Meier, which censors it, is drawn dashed.</li>",
        "<li><b>Learning peak</b>: I(n) = mean 1 − cos(S(n), S(n−1)) in log2 bins of n; the "
        "peak is the bin with the largest I among bins with at least 10 items. A batch jump "
        "lands on the first view after its publish.</li>",
        "<li><b>Norms and popularity</b>: the items every mode holds, popularity = exposure "
        "(impressions in the world over the run's modes), the same deciles for every mode.</li>",
        "<li><b>Engagement</b> counts every impression, exploration slots included (those are "
        "identical across modes); fresh means younger than the simulator's "
        "<code>fresh_seconds</code>. The headline rates are scored after the burn-in.</li>",
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
