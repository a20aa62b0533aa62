"""The one report writer of the applications: a self-contained HTML page (figures embedded as
base64 PNGs, each with a one-line reading computed from the numbers, a summary table and the
paper's claims checked), the PNG files, and the lines a command prints when it is done.

An application describes its report with a :class:`ReportLayout` (its own figures, readings,
claims, summary columns and notes); :meth:`ReportLayout.write_report` draws every figure, saves
the PNGs and writes ``report.html``; :meth:`ReportLayout.render_html` builds the page from
``metrics.json`` content and PNG bytes alone, so a report can be rebuilt without re-running
anything. The figures and
readings every run has (maturity, learning curve, norm distribution, norm vs popularity) are
drawn and written here.

>>> layout = ReportLayout(command="demo", figures={"maturity": "Maturity"})
>>> page = layout.render_html({"config": {}, "modes": {}}, {"maturity": b"png"})
>>> page.startswith("<!DOCTYPE html>") and "data:image/png;base64,cG5n" in page
True
>>> summary_lines({"modes": {"batch": {"events": 12}}}, [("events", ("events",), num)])
['  batch     events 12']
"""

from __future__ import annotations

import base64
import html
import io
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "SHARED_FIGURES",
    "ReportLayout",
    "draw_shared",
    "get",
    "nan_list",
    "num",
    "shared_readings",
    "summary_lines",
    "verdict",
    "wrote_text",
]

SHARED_FIGURES: dict[str, str] = {
    "maturity": "Maturity: Kaplan–Meier survival of interactions-to-maturity",
    "learning_curve": "Learning curve: alignment gain per interaction and the learning peak",
    "norm_distribution": "Distribution of item embedding norms",
    "norm_vs_popularity": "Item embedding norm vs popularity",
}
"""The figures of every report (name → title), drawn by :func:`draw_shared`."""

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 960px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 2em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
.reading { font-weight: 600; }
.muted { color: #666; font-size: 0.9em; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""

Column = tuple[str, tuple[str, ...], Callable[[Any], str]]
"""A summary column: title, path of the value in a mode's metrics, how to write it."""
Claim = tuple[str, str, str, str]
"""A checked claim: the claim, what the paper found, what this run measured, the verdict."""


# --------------------------------------------------------------------------------------------
# Numbers as text


def num(value: Any, digits: int = 3) -> str:
    """A number for a reader: ``n/a`` for None, thousands separators for integers.

    >>> num(None), num(12345), num(0.123456), num(0.123456, 4)
    ('n/a', '12,345', '0.123', '0.1235')
    """
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return f"{value:,d}"
    return f"{value:.{digits}g}"


def get(metrics: Any, *path: str) -> Any:
    """``metrics[path[0]][path[1]]...``, or None where a key is missing.

    >>> get({"a": {"b": 1}}, "a", "b"), get({"a": {}}, "a", "b")
    (1, None)
    """
    value: Any = metrics
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def nan_list(values: Sequence[Any]) -> list[float]:
    """Floats for matplotlib: None becomes NaN (a gap in a line, no bar)."""
    return [float("nan") if v is None else float(v) for v in values]


def verdict(ok: bool | None) -> str:
    """The verdict column of a checked claim."""
    return "n/a" if ok is None else ("reproduced" if ok else "not reproduced here")


# --------------------------------------------------------------------------------------------
# What a command prints


def wrote_text(out: Path) -> str:
    """``wrote DIR/metrics.json and DIR/report.html``."""
    return f"wrote {out / 'metrics.json'} and {out / 'report.html'}"


def summary_lines(metrics: Mapping[str, Any], columns: Sequence[Column]) -> list[str]:
    """One printed line per mode: the mode, then ``title value`` for each column."""
    return [
        f"  {mode:9s} " + "  ".join(f"{title} {fmt(get(m, *path))}" for title, path, fmt in columns)
        for mode, m in metrics["modes"].items()
    ]


# --------------------------------------------------------------------------------------------
# The figures and readings every report has


def _learning_curves(metrics: Mapping[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    drawn = False
    for i, (mode, m) in enumerate(metrics["modes"].items()):
        lp = m["learning_peak"]
        counts, gain = lp["curve"]["counts"], nan_list(lp["curve"]["gain_per_interaction"])
        if not counts:
            continue
        drawn = True
        ax.plot(counts, gain, color=f"C{i}", label=f"{mode}: peak at n = {lp['peak_count']}")
        if lp["peak_count"] is not None:
            ax.axvline(lp["peak_count"], color=f"C{i}", linestyle=":", linewidth=1)
    if drawn:
        ax.set_xscale("log")
        ax.legend(fontsize="small")
    ax.axhline(0.0, color="0.5", linewidth=0.8)
    ax.set_xlabel("interactions n (log scale)")
    ax.set_ylabel("mean alignment gain per interaction G(n)")
    ax.set_title("Alignment gain per interaction G(n) and the learning peak")
    ax.grid(True, alpha=0.3)
    return fig


def draw_shared(
    name: str, metrics: Mapping[str, Any], results: Mapping[str, Mapping[str, Any]]
) -> Figure | None:
    """A figure of :data:`SHARED_FIGURES` (maturity, learning curve, norm distribution, norm vs
    popularity); None for any other name."""
    from embcore import plots

    def by_mode(key: str) -> dict[str, Any]:
        return {mode: r[key] for mode, r in results.items()}

    if name == "maturity":
        alpha = float(metrics["config"].get("alpha", 0.05))
        fig = plots.plot_maturity(by_mode("maturity"), alpha=alpha)
        # Counts span 0 (the initial row) to 1e4+: a linear axis hides the informative start.
        fig.axes[0].set_xscale("symlog", linthresh=1.0)
        fig.axes[0].set_xlim(left=0)
        return fig
    if name == "learning_curve":
        return _learning_curves(metrics)
    if name == "norm_distribution":
        return plots.plot_norm_distribution(by_mode("norms"))
    if name == "norm_vs_popularity":
        return plots.plot_norm_vs_popularity(by_mode("norms"))
    return None


def shared_readings(metrics: Mapping[str, Any]) -> dict[str, str]:
    """One-line reading of each figure of :data:`SHARED_FIGURES`, from the numbers.

    >>> m = {"config": {"alpha": 0.05}, "comparison": {}, "modes": {
    ...     "realtime": {"maturity": {"median_interactions": 10}},
    ...     "batch": {"maturity": {"median_interactions": 50}}}}
    >>> shared_readings(m)["maturity"]
    'Median interactions to maturity (α = 0.05): realtime 10, batch 50; realtime needs 20% of the interactions batch needs (paper: about 20%).'
    """  # noqa: E501
    modes: Mapping[str, Any] = metrics.get("modes", {})
    alpha = get(metrics, "config", "alpha") or 0.05
    out: dict[str, str] = {}

    def each(path: tuple[str, ...], fmt: Callable[[Any], str] = num) -> str:
        return ", ".join(f"{mode} {fmt(get(m, *path))}" for mode, m in modes.items())

    rt, batch = modes.get("realtime"), modes.get("batch")
    both = rt is not None and batch is not None

    text = f"Median interactions to maturity (α = {alpha:g}): " + each(
        ("maturity", "median_interactions")
    )
    if both:
        a = get(rt, "maturity", "median_interactions")
        b = get(batch, "maturity", "median_interactions")
        if a is not None and b:
            text += (
                f"; realtime needs {100 * a / b:.0f}% of the interactions batch needs "
                "(paper: about 20%)"
            )
    out["maturity"] = text + "."

    text = "Learning peak (count with the largest mean alignment gain per interaction): " + each(
        ("learning_peak_interactions",)
    )
    text += "; 50% of the total gain is reached at " + each(
        ("learning_peak", "count_at_50pct_gain")
    )
    if both:
        a = get(rt, "learning_peak_interactions")
        b = get(batch, "learning_peak_interactions")
        if a is not None and b is not None:
            relation = (
                "earlier than" if a < b else ("at the same count as" if a == b else "later than")
            )
            text += f" — realtime peaks {relation} batch (paper: earlier)"
    out["learning_curve"] = text + "."

    text = "Norm p50 / p99: " + ", ".join(
        f"{mode} {num(get(m, 'norm_quantiles', 'p50'))} / {num(get(m, 'norm_quantiles', 'p99'))}"
        for mode, m in modes.items()
    )
    ratio = get(metrics, "comparison", "norm_p99_ratio_batch_over_realtime")
    if ratio is not None:
        text += f"; batch p99 is {ratio:.2f}x realtime's (paper: up to about 5x)"
    out["norm_distribution"] = text + "."

    out["norm_vs_popularity"] = (
        "Spearman ρ(norm, popularity): "
        + each(("norm_popularity_spearman",), lambda v: num(v, 2))
        + "; log-log slope "
        + each(("norm_popularity", "loglog_slope"), lambda v: num(v, 2))
        + " (positive: popular items get larger norms, which dot-product retrieval favours)."
    )
    return out


def maturity_claim(comparison: Mapping[str, Any]) -> Claim:
    """The paper's first claim, checked on the median maturity ratio."""
    r = comparison.get("maturity_ratio_realtime_over_batch")
    return (
        "Real-time embeddings mature with fewer interactions",
        "~20% of batch's interactions",
        "n/a" if r is None else f"{100 * r:.0f}% (median ratio)",
        verdict(None if r is None else r < 1),
    )


def norm_claim(comparison: Mapping[str, Any]) -> Claim:
    """The paper's norm claim, checked on the p99 norm ratio."""
    r = comparison.get("norm_p99_ratio_batch_over_realtime")
    return (
        "Batch embeddings have larger norms",
        "up to ~5x",
        "n/a" if r is None else f"{r:.2f}x (p99 ratio)",
        verdict(None if r is None else r > 1),
    )


# --------------------------------------------------------------------------------------------
# The page


def _no_lines(metrics: Mapping[str, Any]) -> list[str]:
    return []


def _no_claims(metrics: Mapping[str, Any]) -> list[Claim]:
    return []


@dataclass(frozen=True)
class ReportLayout:
    """What one application's report shows; :meth:`write_report` and :meth:`render_html` lay it
    out the same way for every application.

    Parameters
    ----------
    command : str
        The application (``"study"``): the page title is ``embcore COMMAND report``.
    figures : mapping of str to str
        Figure name → title, in page order (the PNG is ``<name>.png``); names of
        :data:`SHARED_FIGURES` are drawn here, the others by ``draw``.
    draw : mapping of str to callable
        Figure name → ``function(metrics)`` drawing one of the application's own figures.
    heading : callable, optional
        ``heading(metrics)``: the text of the page's ``<h1>``.
    intro : callable, optional
        ``intro(config)``: the introduction paragraph (HTML, escaped by the caller).
    settings : tuple of str
        ``config`` keys listed under "Configuration" (with the runtime).
    details : callable, optional
        ``details(metrics)``: further HTML lines after the configuration.
    summary : sequence of Column
        Columns of the summary table (one row per entry of ``metrics["modes"]``).
    row_label : str
        The title of the summary table's first column: what a row is (``"mode"``;
        ``"version"`` for track).
    claims : callable, optional
        ``claims(metrics)``: the paper's claims checked, as :data:`Claim` rows.
    scope : str
        What the claims were checked on ("run", "log").
    claims_note : str
        A muted paragraph after the claims table (HTML; empty for none).
    readings : callable, optional
        ``readings(metrics)``: figure name → one-line reading.
    notes : tuple of str
        Items of "How to read the numbers" (HTML).
    warn_as : str
        Who warns on stderr when a figure cannot be drawn (default ``embcore COMMAND``).
    """

    command: str
    figures: Mapping[str, str]
    draw: Mapping[str, Callable[[Mapping[str, Any]], Figure]] = field(default_factory=dict)
    heading: Callable[[Mapping[str, Any]], str] = lambda metrics: "embcore report"
    intro: Callable[[Mapping[str, Any]], str] = lambda config: ""
    settings: tuple[str, ...] = ()
    details: Callable[[Mapping[str, Any]], list[str]] = _no_lines
    summary: Sequence[Column] = ()
    row_label: str = "mode"
    claims: Callable[[Mapping[str, Any]], list[Claim]] = _no_claims
    scope: str = "run"
    claims_note: str = ""
    readings: Callable[[Mapping[str, Any]], dict[str, str]] = shared_readings
    notes: tuple[str, ...] = ()
    warn_as: str = ""

    def write_report(
        self,
        directory: str | Path,
        metrics: Mapping[str, Any],
        results: Mapping[str, Mapping[str, Any]],
        dpi: int = 100,
    ) -> dict[str, str | None]:
        """Save one PNG per figure into ``directory`` and write ``report.html`` there.

        ``results`` is ``{mode: {"maturity": ..., "learning_peak": ..., "norms": ...}}`` from
        :func:`embcore.runs.analyse_modes`. Returns figure name → PNG file name, or None when a
        figure could not be drawn (the page then says why, and a warning goes to stderr).
        """
        directory = Path(directory)
        images: dict[str, bytes] = {}
        errors: dict[str, str] = {}
        files: dict[str, str | None] = {}
        for name in self.figures:
            try:
                fig = draw_shared(name, metrics, results)
                if fig is None:
                    if name not in self.draw:
                        raise KeyError(f"unknown figure {name!r}; known: {sorted(self.figures)}")
                    fig = self.draw[name](metrics)
                buffer = io.BytesIO()
                fig.savefig(buffer, format="png", dpi=dpi)
            except Exception as err:  # a broken figure must not sink a finished run
                errors[name] = f"{type(err).__name__}: {err}"
                files[name] = None
                who = self.warn_as or f"embcore {self.command}"
                print(f"{who}: figure {name} not drawn: {errors[name]}", file=sys.stderr)
                continue
            images[name] = buffer.getvalue()
            (directory / f"{name}.png").write_bytes(images[name])
            files[name] = f"{name}.png"
        page = self.render_html(metrics, images, errors)
        (directory / "report.html").write_text(page, encoding="utf-8")
        return files

    def render_html(
        self,
        metrics: Mapping[str, Any],
        images: Mapping[str, bytes],
        errors: Mapping[str, str] | None = None,
    ) -> str:
        """The report page: configuration, summary, the paper's claims checked, and
        each figure with its reading; a complete HTML5 document with no external references.

        ``images`` maps figure names to PNG bytes (embedded as ``data:image/png;base64`` URIs);
        ``errors`` says why a figure could not be drawn.
        """
        esc = html.escape
        errors = errors or {}
        config: Mapping[str, Any] = metrics.get("config", {})
        modes: Mapping[str, Any] = metrics.get("modes", {})
        lines = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>embcore {esc(self.command)} report</title>",
            f"<style>{STYLE}</style></head><body>",
            f"<h1>{esc(self.heading(metrics))}</h1>",
            self.intro(config),
        ]
        settings = ", ".join(
            f"{key} = {esc(str(config.get(key)))}" for key in self.settings if key in config
        )
        if settings:
            lines.append(f'<p class="muted">Configuration: {settings}.')
            if "runtime_seconds" in metrics:
                lines.append(f" Runtime {esc(str(metrics['runtime_seconds']))} s.")
            lines.append("</p>")
        lines += self.details(metrics)

        lines.append(f"<h2>Summary</h2><table><tr><th>{esc(self.row_label)}</th>")
        lines += [f"<th>{esc(title)}</th>" for title, _, _ in self.summary]
        lines.append("</tr>")
        for mode, m in modes.items():
            cells = "".join(f"<td>{esc(fmt(get(m, *path)))}</td>" for _, path, fmt in self.summary)
            lines.append(f"<tr><td>{esc(mode)}</td>{cells}</tr>")
        lines.append("</table>")

        scope = esc(self.scope)
        lines.append(f"<h2>The paper's findings, checked on this {scope}</h2>")
        lines.append(
            f"<table><tr><th>claim</th><th>paper</th><th>this {scope}</th><th>verdict</th></tr>"
        )
        for claim, paper, measured, outcome in self.claims(metrics):
            lines.append(
                f"<tr><td>{esc(claim)}</td><td>{esc(paper)}</td><td>{esc(measured)}</td>"
                f"<td>{esc(outcome)}</td></tr>"
            )
        lines.append("</table>")
        if self.claims_note:
            lines.append(self.claims_note)

        texts = self.readings(metrics)
        for name, title in self.figures.items():
            lines.append(f'<figure id="{name}"><h2>{esc(title)}</h2>')
            lines.append(f'<p class="reading">{esc(texts.get(name, ""))}</p>')
            if name in images:
                data = base64.b64encode(images[name]).decode("ascii")
                lines.append(f'<img alt="{esc(title)}" src="data:image/png;base64,{data}">')
            else:
                why = errors.get(name, "no image")
                lines.append(f'<p class="muted">Figure not drawn: {esc(why)}</p>')
            lines.append("</figure>")

        lines.append("<h2>How to read the numbers</h2><ul>")
        lines += self.notes
        lines.append("</ul></body></html>")
        return "\n".join(lines) + "\n"
