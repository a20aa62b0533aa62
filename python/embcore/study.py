"""``embcore study``: real-time vs batch (vs hybrid) embeddings on one simulated platform.

One :class:`~embcore.sim.World` is stepped once; at every step each mode scores the live pool
with its serving view, the world serves that mode's feeds (common random numbers: requests,
pools, exploration and the click/play coins are shared, so differences come from the scores
alone) and the mode trains on its own events. At the end every mode's recorded trajectories and
tables are analysed (maturity, learning peak, norms vs popularity) and written, with engagement,
to ``DIR/metrics.json``, a self-contained ``DIR/report.html`` and one PNG per figure.

Design notes
------------
* The run itself (modes, monitors, the output directory written beside ``DIR`` and renamed
  into place, per-mode analysis) is :mod:`embcore.runs`; the report is :mod:`embcore.report`.
  This module adds the source of events (the world's steps) and the evaluator (engagement).
* BLAS is limited to one thread while the study runs (``threadpoolctl``): the per-step matmuls
  are small (~260 x 32 x 4,000) and a second BLAS thread on a busy machine makes them 10-20x
  slower.

>>> import tempfile, json, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp()) / "study"
>>> metrics = run_study(out, scale="tiny", progress=False, figures=False)
>>> sorted(metrics["modes"])
['batch', 'realtime']
>>> json.loads((out / "metrics.json").read_text())["config"]["scale"]
'tiny'
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

import embcore
from embcore import reporting, runs
from embcore.cli_args import mode_list, positive_int
from embcore.modes import Model, Trainer, parse_duration
from embcore.runs import AGE_EDGES_HOURS, DEFAULT_ALPHA, finite, learning_curve
from embcore.sim import FIELDS, Events, SimConfig, Step, World

__all__ = ["StudyConfigError", "item_expiry", "learning_curve", "run", "run_study"]

SCALES = ("tiny", "small", "default", "large")
MODELS = ("mf", "ffm", "fm")
"""Models the study trains: matrix factorization, field-aware FM, FM."""


class StudyConfigError(ValueError):
    """A study option is invalid (the CLI exits with code 2)."""


# --------------------------------------------------------------------------------------------
# Item lifecycle


def item_expiry(sim_config: SimConfig) -> dict[str, Any] | None:
    """The item lifecycle the study uses for a world, or None.

    Items leave the simulator's candidate pool after ``max_item_age_seconds`` and are never
    served again, so over a long horizon the item table would grow without bound. When the
    horizon is longer than four pool lifetimes (``--scale large``), rows not updated for two
    pool lifetimes expire; the monitor records their final rows when they are evicted, so
    maturity still covers them. Norm and popularity figures then cover the live items.

    >>> item_expiry(SimConfig.for_scale("tiny")) is None
    True
    """
    lifetime = int(sim_config.max_item_age_seconds)
    if sim_config.horizon_seconds <= 4 * lifetime:
        return None
    return {"ttl": 2 * lifetime, "keep_floor": 10_000}


# --------------------------------------------------------------------------------------------
# Engagement


class _Engagement:
    """Click and play counts of one mode: overall, fresh, explored, by item age, by hour.

    Parameters
    ----------
    n_hours : int
        Hours of event time the run spans (the last hour bucket also takes later events).
    """

    def __init__(self, n_hours: int) -> None:
        self.n_hours = max(int(n_hours), 1)
        self.age_edges = np.array(AGE_EDGES_HOURS, dtype=np.int64) * 3600
        n_age = self.age_edges.size + 1
        self.by_age = np.zeros((3, n_age))
        self.by_hour = np.zeros((3, self.n_hours))
        self.fresh = np.zeros(3)
        self.explored = np.zeros(3)
        self.total = np.zeros(3)

    def add(self, events: Events) -> None:
        if len(events) == 0:
            return
        weights = (None, events.click, events.play)
        age_bucket = np.searchsorted(self.age_edges, events.item_age, side="right")
        hour = np.minimum(events.timestamps // 3600, self.n_hours - 1)
        fresh, explored = events.fresh, events.explored
        for k, w in enumerate(weights):
            self.by_age[k] += np.bincount(age_bucket, weights=w, minlength=self.by_age.shape[1])
            self.by_hour[k] += np.bincount(hour, weights=w, minlength=self.n_hours)
            self.total[k] += len(events) if w is None else float(w.sum())
            self.fresh[k] += int(fresh.sum()) if w is None else float(w[fresh].sum())
            self.explored[k] += int(explored.sum()) if w is None else float(w[explored].sum())

    @staticmethod
    def _rate(num: Any, den: Any) -> Any:
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.asarray(num, dtype=np.float64) / np.asarray(den, dtype=np.float64)
        return finite(rate)

    def to_dict(self) -> dict[str, Any]:
        r = self._rate
        exploited = self.total - self.explored
        return {
            "impressions": int(self.total[0]),
            "clicks": int(self.total[1]),
            "plays": int(self.total[2]),
            "ctr": r(self.total[1], self.total[0]),
            "play_rate": r(self.total[2], self.total[0]),
            "fresh_impressions": int(self.fresh[0]),
            "fresh_ctr": r(self.fresh[1], self.fresh[0]),
            "fresh_play_rate": r(self.fresh[2], self.fresh[0]),
            "exploited_ctr": r(exploited[1], exploited[0]),
            "explored_ctr": r(self.explored[1], self.explored[0]),
            "by_item_age": {
                "buckets": runs.age_labels(),
                "impressions": self.by_age[0].astype(np.int64).tolist(),
                "ctr": r(self.by_age[1], self.by_age[0]),
                "play_rate": r(self.by_age[2], self.by_age[0]),
            },
            "over_time": {
                "hour": list(range(self.n_hours)),
                "impressions": self.by_hour[0].astype(np.int64).tolist(),
                "ctr": r(self.by_hour[1], self.by_hour[0]),
                "play_rate": r(self.by_hour[2], self.by_hour[0]),
            },
        }


# --------------------------------------------------------------------------------------------
# Configuration


def _check_config(
    scale: str,
    seed: int,
    threads: int,
    modes: Sequence[str],
    period: str | int | float,
    epochs: int,
    learning_rate: float | None,
    dim: int,
    alpha: float,
    track_rate: float,
    model: str,
) -> tuple[list[str], int]:
    if scale not in SCALES:
        raise StudyConfigError(f"--scale must be one of {', '.join(SCALES)}, got {scale!r}")
    runs.check_seed(seed, StudyConfigError)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise StudyConfigError(f"--threads must be an integer >= 1, got {threads!r}")
    mode_list = runs.check_modes(list(modes), StudyConfigError)
    try:
        period_seconds = parse_duration(period)
    except ValueError as err:
        raise StudyConfigError(f"--{err}") from None
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise StudyConfigError(f"--epochs must be an integer >= 1, got {epochs!r}")
    if learning_rate is not None and not (
        isinstance(learning_rate, int | float)
        and math.isfinite(learning_rate)
        and learning_rate > 0
    ):
        raise StudyConfigError(f"--learning-rate must be a positive number, got {learning_rate!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise StudyConfigError(f"dim must be an integer >= 1, got {dim!r}")
    runs.check_levels(alpha, track_rate, StudyConfigError)
    if model not in MODELS:
        raise StudyConfigError(f"--model must be one of {', '.join(MODELS)}, got {model!r}")
    return mode_list, period_seconds


def _model_factory(
    model: str,
    *,
    seed: int,
    dim: int,
    init_scale: float,
    learning_rate: float | None,
    item_lifecycle: Mapping[str, Any] | None,
) -> Callable[[], Model]:
    """A zero-argument factory of the study's untrained model (every mode calls it once, so
    every mode starts from the same initial rows). Field models get the simulator's fields."""
    options: dict[str, Any] = {"dim": dim, "init_scale": init_scale, "seed": seed}
    if learning_rate is not None:
        options["learning_rate"] = float(learning_rate)
    if model == "mf":
        if item_lifecycle is not None:
            options["item_lifecycle"] = dict(item_lifecycle)
        return lambda: embcore.MatrixFactorization(**options)
    if item_lifecycle is not None:
        options["lifecycles"] = {"item": dict(item_lifecycle)}
    cls = embcore.FieldAwareFM if model == "ffm" else embcore.FactorizationMachine
    return lambda: cls(list(FIELDS), **options)


# --------------------------------------------------------------------------------------------
# The study


def run_study(
    out: str | os.PathLike[str] | None,
    scale: str = "default",
    seed: int = 0,
    threads: int = 1,
    modes: Sequence[str] = ("realtime", "batch"),
    period: str | int | float = "6h",
    epochs: int = 1,
    learning_rate: float | None = None,
    dim: int = 32,
    init_scale: float = 0.01,
    alpha: float = DEFAULT_ALPHA,
    track_rate: float = 0.25,
    model: str = "mf",
    progress: bool = True,
    parallel: bool = True,
    figures: bool = True,
    sim_overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the study and return its metrics; write them (and the report) to ``out``.

    Parameters
    ----------
    out : path or None
        Output directory (``metrics.json``, ``report.html``, ``*.png``); None writes nothing.
    scale : {"tiny", "small", "default", "large"}
        Simulator preset (:meth:`embcore.sim.SimConfig.for_scale`).
    seed : int
        World and model seed (every mode starts from the same initial rows).
    threads : int
        Training threads per mode.
    modes : sequence of str
        Any of ``"realtime"``, ``"batch"``, ``"hybrid"``.
    period : str or int
        Batch/hybrid period (``"6h"``, ``"90m"`` or seconds).
    epochs : int
        Passes over each window at a boundary (see :class:`embcore.Trainer`).
    learning_rate : float, optional
        Adagrad learning rate (default 0.05, the model's default).
    dim : int
        Embedding dimension.
    init_scale : float
        Scale of the random initial rows (``MatrixFactorization(init_scale=...)``).
    alpha : float
        Maturity level reported as the headline (0.01, 0.05 and 0.1 are always computed).
    track_rate : float
        Share of items whose trajectories are recorded.
    model : {"mf", "ffm", "fm"}
        ``"mf"``: two-tower matrix factorization (user x item). ``"ffm"``: the paper's
        field-aware factorisation machine over the simulator's fields user, item, creator, tag
        and hour (``dim`` per block; the item's embedding is its block against the user field).
        ``"fm"``: a factorisation machine over the same fields.
    progress : bool
        Show a tqdm progress bar (events/s) on stderr.
    parallel : bool
        Step the modes in parallel threads (one per mode, up to the CPU count); the results
        are identical either way.
    figures : bool
        Draw the figures and write the report (with ``out``).
    sim_overrides : mapping, optional
        :class:`~embcore.sim.SimConfig` fields to override (recorded in the config).

    Returns
    -------
    dict
        The content of ``metrics.json``.

    Raises
    ------
    ValueError
        Invalid configuration (raised before anything is simulated or written).

    Examples
    --------
    >>> m = run_study(None, scale="tiny", modes=["realtime"], progress=False)
    >>> m["modes"]["realtime"]["events"] > 10_000
    True
    """
    started = time.perf_counter()
    mode_list, period_seconds = _check_config(
        scale, seed, threads, modes, period, epochs, learning_rate, dim, alpha, track_rate, model
    )
    try:
        sim_config = SimConfig.for_scale(scale, **dict(sim_overrides or {}))
    except ValueError as err:
        raise StudyConfigError(str(err)) from None
    output = runs.OutputDirectory(out, StudyConfigError, replaces="an earlier study")
    with output:
        with threadpool_limits(limits=1, user_api="blas"):
            metrics, results = _simulate(
                sim_config,
                scale=scale,
                seed=seed,
                threads=threads,
                modes=mode_list,
                period_seconds=period_seconds,
                epochs=epochs,
                learning_rate=learning_rate,
                dim=dim,
                init_scale=init_scale,
                alpha=alpha,
                track_rate=track_rate,
                model=model,
                progress=progress,
                parallel=parallel,
            )
        metrics["config"]["sim_overrides"] = dict(sim_overrides or {})
        metrics["config"]["item_lifecycle"] = item_expiry(sim_config)

        def write_report(directory: Path) -> dict[str, str | None]:
            from embcore import report

            return report.write_report(directory, metrics, results)

        output.finish(metrics, started, write_report if figures else None)
    return metrics


def _simulate(
    sim_config: SimConfig,
    *,
    scale: str,
    seed: int,
    threads: int,
    modes: list[str],
    period_seconds: int,
    epochs: int,
    learning_rate: float | None,
    dim: int,
    init_scale: float,
    alpha: float,
    track_rate: float,
    model: str,
    progress: bool,
    parallel: bool,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    world = World(sim_config, seed=seed)
    fresh_model = _model_factory(
        model,
        seed=seed,
        dim=dim,
        init_scale=init_scale,
        learning_rate=learning_rate,
        item_lifecycle=item_expiry(sim_config),
    )
    trainers = runs.start_modes(
        modes,
        fresh_model,
        period=period_seconds,
        epochs=epochs,
        threads=threads,
        seed=seed,
        track_rate=track_rate,
    )
    horizon = world.n_steps * sim_config.step_seconds
    engagement = {mode: _Engagement(-(-horizon // 3600)) for mode in modes}
    serve_seconds = dict.fromkeys(modes, 0.0)
    expected = int(sim_config.expected_events) * len(modes)
    bar = runs.progress_bar(expected, f"study {scale} ({', '.join(modes)})", progress)

    def one_mode(mode: str, step: Step) -> int:
        trainer = trainers[mode]
        began = time.perf_counter()
        trainer.advance(step.t_start)
        # MF ignores the extra fields; field models read the ones they have.
        request = world.request_fields(step)
        candidate = world.candidate_fields(step)
        scores = trainer.serving_scores(
            request.pop("user"),
            candidate.pop("item"),
            request_fields=request,
            candidate_fields=candidate,
        )
        events = world.serve(step, scores)
        serve_seconds[mode] += time.perf_counter() - began
        trainer.consume(
            events.users,
            events.items,
            events.click,
            events.timestamps,
            context=events.columns(("creator", "tag", "hour")),
        )
        engagement[mode].add(events)
        return len(events)

    # Modes are independent given the step (serve is a pure function, each mode owns its
    # trainer, monitor and counters); argpartition, the matmul and training release the GIL.
    with bar, runs.ModePool(modes, parallel) as pool:
        for step in world.steps():
            bar.update(sum(pool.map(one_mode, step)))
        for trainer in trainers.values():
            trainer.flush(horizon)
    per_mode, results = runs.analyse_modes(trainers, alpha, seed, fresh_model)
    for mode in modes:
        per_mode[mode]["engagement"] = engagement[mode].to_dict()
        per_mode[mode]["serve_seconds"] = round(serve_seconds[mode], 3)
    metrics: dict[str, Any] = {
        "config": {
            "scale": scale,
            "seed": seed,
            "modes": modes,
            "period_seconds": period_seconds,
            "epochs": epochs,
            "learning_rate": (
                float(learning_rate)
                if learning_rate is not None
                else float(next(iter(trainers.values())).model.optimizer["learning_rate"])
            ),
            "optimizer": "adagrad",
            "dim": dim,
            "init_scale": init_scale,
            "alpha": alpha,
            "track_rate": track_rate,
            "threads": threads,
            "model": model,
            "fields": list(trainers[modes[0]].fields),
            "item_embedding": _item_embedding_text(trainers[modes[0]]),
            "monitor": "embcore.Monitor",
            "horizon_seconds": horizon,
            "sim": {
                "n_users": sim_config.n_users,
                "requests_per_day": sim_config.requests_per_day,
                "items_per_day": sim_config.items_per_day,
                "fresh_seconds": sim_config.fresh_seconds,
                "step_seconds": sim_config.step_seconds,
                "k": sim_config.k,
                "exploration": sim_config.exploration,
            },
            "versions": runs.versions(),
        },
        "modes": per_mode,
        "comparison": runs.comparison(per_mode),
    }
    return metrics, results


def _item_embedding_text(trainer: Trainer) -> str:
    """What "the item's embedding" is for this trainer's model, for metrics.json."""
    model = trainer.model
    start, stop = trainer.item_span
    if isinstance(model, embcore.FieldAwareFM):
        if (start, stop) != (0, model.row_dim):
            return (
                f"FFM block of the item field against the '{trainer.user_field}' field "
                f"(row columns {start}:{stop})"
            )
        return "FFM item row: all blocks concatenated"
    if isinstance(model, embcore.FactorizationMachine):
        return "FM item vector"
    return "MF item row"


# --------------------------------------------------------------------------------------------
# CLI entry point


def run(args: argparse.Namespace) -> int:
    """Entry point of ``embcore study`` (arguments declared in :mod:`embcore.cli`).

    Returns 0 on success and 2 for invalid options (message on stderr, nothing left behind).
    """

    def call() -> dict[str, Any]:
        return run_study(
            args.out,
            scale=args.scale,
            epochs=args.epochs,
            learning_rate=args.learning_rate,
            model=args.model,
            **runs.run_options(args),
            **runs.given_options(args, ("init_scale", "alpha", "track_rate", "dim")),
        )

    return runs.run_command(
        "study", call, StudyConfigError, lambda metrics: _summary_text(metrics, Path(args.out))
    )


_SUMMARY_COLUMNS: tuple[reporting.Column, ...] = (
    ("events", ("events",), lambda v: f"{v:>9,d}"),
    ("median maturity", ("maturity", "median_interactions"), str),
    ("learning peak", ("learning_peak_interactions",), str),
    ("norm p99", ("norm_quantiles", "p99"), lambda v: _fmt(v)),
    ("ctr", ("engagement", "ctr"), lambda v: _fmt(v)),
    ("fresh ctr", ("engagement", "fresh_ctr"), lambda v: _fmt(v)),
)


def _summary_text(metrics: Mapping[str, Any], out: Path) -> str:
    lines = [f"embcore study: {reporting.wrote_text(out)}"]
    lines += reporting.summary_lines(metrics, _SUMMARY_COLUMNS)
    comp = metrics["comparison"]
    lines.append(
        "  maturity ratio realtime/batch "
        f"{_fmt(comp['maturity_ratio_realtime_over_batch'])}, norm p99 ratio batch/realtime "
        f"{_fmt(comp['norm_p99_ratio_batch_over_realtime'])}; "
        f"{metrics['runtime_seconds']} s"
    )
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Declare ``embcore study`` and its arguments on the CLI's subparsers."""
    study = sub.add_parser(
        "study",
        help="simulate a short-video platform and compare training modes end to end",
        description="Run the batch vs real-time study on the simulator and write "
        "metrics.json, report.html and one PNG per figure.",
    )
    study.add_argument("--out", default="embcore-study", help="output directory")
    study.add_argument("--scale", default="default", choices=["tiny", "small", "default", "large"])
    study.add_argument("--seed", type=int, default=0)
    study.add_argument("--threads", type=positive_int, default=1)
    study.add_argument("--modes", type=mode_list, default=["realtime", "batch"])
    study.add_argument(
        "--model",
        default="mf",
        choices=["mf", "ffm", "fm"],
        help="mf: matrix factorization; ffm: field-aware FM over user, item, creator, tag, hour "
        "(the paper's model); fm: factorisation machine over the same fields",
    )
    study.add_argument("--period", default="6h", help="batch retraining period, e.g. 6h, 90m")
    study.add_argument("--epochs", type=positive_int, default=1)
    study.add_argument("--learning-rate", type=float, default=None)
    study.add_argument("--dim", type=positive_int, default=None, help="embedding width")
    study.add_argument(
        "--init-scale", type=float, default=None, help="initial rows uniform in [-s, s]"
    )
    study.add_argument("--alpha", type=float, default=None, help="maturity threshold on d_cos")
    study.add_argument(
        "--track-rate", type=float, default=None, help="share of items whose trajectories are kept"
    )
    study.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    return study
