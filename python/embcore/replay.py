"""``embcore replay``: a logged event stream through each training mode, progressively validated.

One :class:`~embcore.datasets.EventLog` is read once; every chunk goes to every mode (same events,
same order), each mode with its own :class:`~embcore.modes.Trainer` and monitor. There is no
counterfactual engagement on logged data, so engagement is measured by **progressive
validation**: every event is scored with the mode's *serving* model (the live tables for
real-time and hybrid, the last published snapshot for batch) **before** that mode trains on it.
The scores give AUC and log-loss per mode, overall, for fresh items and over time. At the end
every mode is analysed as in ``embcore study`` (maturity, learning peak, norms vs popularity) and
written to ``DIR/metrics.json``, a self-contained ``DIR/report.html`` and one PNG per figure.

Design notes
------------
* **Granularity of progressive validation.** Scoring event k with a model that has seen events
  0..k-1 and nothing else would take one FFI call per event. Instead each chunk is cut into
  *score-then-train* segments: score the whole segment with the serving model, then consume it.
  Batch and hybrid segments never straddle a period boundary (``k * period``), so a batch
  segment is scored with exactly the snapshot per-event scoring would use (no approximation).
  Real-time and hybrid segments also hold at most ``realtime_events`` events (default 256) and,
  if ``realtime_seconds`` is set, span less than that much event time: an event is scored with a
  model that lacks at most the segment's earlier events — a bounded update latency, as in a
  production real-time pipeline — and never with one that has seen the event itself.
* **Exact AUC** and **fresh items** are the evaluator's (:mod:`embcore.validation`): scores
  are kept, so the AUC is the exact Mann–Whitney statistic; an event is fresh by its item's
  interaction index or age *in the log*, the same for every mode. Items already present when
  the log starts look fresh too; on long logs that is a small share of the events.
* Ids never seen by a serving model get its cold-start score (global bias plus the known side's
  bias, :meth:`embcore.MatrixFactorization.score`); training creates their rows on first sight.
* The run itself (modes, monitors, the output directory written beside ``DIR`` and renamed
  into place, per-mode analysis) is :mod:`embcore.runs`, as for :mod:`embcore.study`; the
  report is :mod:`embcore.replay_report`.

>>> import tempfile, pathlib
>>> from embcore.datasets import synthetic_log
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> log = synthetic_log(tmp / "ratings.csv", "movielens", 2000, seed=0)
>>> metrics = replay(log, tmp / "out", period="1h", progress=False, figures=False)
>>> sorted(metrics["modes"]), metrics["modes"]["batch"]["events"]
(['batch', 'realtime'], 2000)
>>> 0.0 <= metrics["modes"]["realtime"]["engagement"]["auc"] <= 1.0
True
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import embcore
from embcore import datasets, reporting, runs
from embcore.cli_args import mode_list, positive_int
from embcore.modes import Trainer, parse_duration
from embcore.replay_report import FIGURES, render_html, write_report
from embcore.runs import AGE_EDGES_HOURS, DEFAULT_ALPHA
from embcore.validation import (
    DEFAULT_FRESH_INTERACTIONS,
    DEFAULT_FRESH_SECONDS,
    DEFAULT_REALTIME_EVENTS,
    INTERACTION_EDGES,
    ProgressiveValidation,
    auc,
    grouped_auc,
    logloss,
    segments,
)

__all__ = [
    "AGE_EDGES_HOURS",
    "FIGURES",
    "INTERACTION_EDGES",
    "ProgressiveValidation",
    "ReplayConfigError",
    "auc",
    "grouped_auc",
    "logloss",
    "render_html",
    "replay",
    "run",
    "segments",
    "summary_text",
    "write_report",
]

DEFAULT_CHUNK_ROWS = 200_000


class ReplayConfigError(ValueError):
    """A replay option or the log is invalid (the CLI exits with code 2)."""


# --------------------------------------------------------------------------------------------
# Configuration


def _check_config(
    format: str,
    modes: Sequence[str],
    period: str | int | float,
    seed: int,
    limit: int | None,
    threads: int,
    epochs: int,
    fresh_interactions: int,
    fresh_seconds: str | int | float,
    realtime_events: int,
    realtime_seconds: str | int | float | None,
    window: str | int | float | None,
    alpha: float,
    track_rate: float,
) -> dict[str, Any]:
    def positive_int(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ReplayConfigError(f"{name} must be an integer >= 1, got {value!r}")
        return int(value)

    def duration(name: str, value: Any) -> int:
        try:
            return parse_duration(value)
        except ValueError:
            raise ReplayConfigError(
                f"{name} must be a positive duration such as 6h, 90m, 1d or 3600 (seconds), "
                f"got {value!r}"
            ) from None

    if format != "auto" and format not in datasets.FORMATS:
        raise ReplayConfigError(
            f"--format must be 'auto' or one of {', '.join(datasets.FORMATS)}, got {format!r}"
        )
    mode_list = [modes] if isinstance(modes, str) else list(modes)
    runs.check_modes(mode_list, ReplayConfigError)
    runs.check_seed(seed, ReplayConfigError)
    if limit is not None:
        positive_int("--limit", limit)
    runs.check_levels(alpha, track_rate, ReplayConfigError)
    return {
        "modes": mode_list,
        "period": duration("--period", period),
        "threads": positive_int("--threads", threads),
        "epochs": positive_int("epochs", epochs),
        "fresh_interactions": positive_int("fresh_interactions", fresh_interactions),
        "fresh_seconds": duration("fresh_seconds", fresh_seconds),
        "realtime_events": positive_int("realtime_events", realtime_events),
        "realtime_seconds": (
            None if realtime_seconds is None else duration("realtime_seconds", realtime_seconds)
        ),
        "window": None if window is None else duration("window", window),
    }


# --------------------------------------------------------------------------------------------
# The replay


class _ModeState:
    """One mode's trainer, how its chunks are cut into segments, and its scoring time.

    Parameters
    ----------
    mode : str
    trainer : Trainer
        The mode's trainer (with its monitor).
    config : mapping
        The checked replay options (``period``, ``realtime_events``, ``realtime_seconds``).
    """

    def __init__(self, mode: str, trainer: Trainer, config: Mapping[str, Any]):
        self.mode = mode
        self.trainer = trainer
        self.live = mode != "batch"
        self.period = None if mode == "realtime" else int(config["period"])
        self.max_events = int(config["realtime_events"])
        self.max_seconds = config["realtime_seconds"]
        self.score_seconds = 0.0
        self.segments = 0

    def replay_chunk(self, chunk: datasets.EventChunk) -> npt.NDArray[np.float32]:
        """Score then train, segment by segment; returns the chunk's pre-training scores."""
        u, i, y, t, w = chunk.users, chunk.items, chunk.labels, chunk.timestamps, chunk.weights
        scores = np.empty(len(chunk), dtype=np.float32)
        trainer = self.trainer
        parts = segments(
            t,
            period=self.period,
            live=self.live,
            max_events=self.max_events,
            max_seconds=self.max_seconds,
        )
        for a, b in parts:
            # Publish every boundary <= the segment's first event before serving it.
            trainer.advance(int(t[a]))
            began = time.perf_counter()
            scores[a:b] = trainer.score(u[a:b], i[a:b])
            self.score_seconds += time.perf_counter() - began
            trainer.consume(u[a:b], i[a:b], y[a:b], t[a:b], None if w is None else w[a:b])
        self.segments += len(parts)
        return scores


def replay(
    log_path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None,
    format: str = "auto",
    modes: Sequence[str] = ("realtime", "batch"),
    period: str | int | float = "6h",
    seed: int = 0,
    limit: int | None = None,
    threads: int = 1,
    progress: bool = True,
    fresh_interactions: int = DEFAULT_FRESH_INTERACTIONS,
    fresh_seconds: str | int | float = DEFAULT_FRESH_SECONDS,
    *,
    epochs: int = 1,
    realtime_events: int = DEFAULT_REALTIME_EVENTS,
    realtime_seconds: str | int | float | None = None,
    window: str | int | float | None = None,
    alpha: float = DEFAULT_ALPHA,
    track_rate: float = 0.25,
    columns: datasets.ColumnMap | None = None,
    label_threshold: float | None = None,
    sort: datasets.SortPolicy = "auto",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    parallel: bool = True,
    figures: bool = True,
    **model_options: Any,
) -> dict[str, Any]:
    """Replay a log through each mode with progressive validation; write and return metrics.

    Parameters
    ----------
    log_path : path
        The interaction log (any format of :func:`embcore.datasets.open_log`).
    out : path or None
        Output directory (``metrics.json``, ``report.html``, ``*.png``); None writes nothing.
    format : str
        ``"auto"`` or one of :data:`embcore.datasets.FORMATS`.
    modes : sequence of str
        Any of ``"realtime"``, ``"batch"``, ``"hybrid"``; all see the same events.
    period : str or int
        Batch/hybrid period (``"6h"``, ``"90m"`` or seconds), boundaries at multiples of it.
    seed : int
        Model seed (every mode starts from the same initial rows) and batch shuffles.
    limit : int, optional
        Replay only the first ``limit`` events (in time order).
    threads : int
        Training threads per mode.
    progress : bool
        Show a tqdm progress bar (log events/s) on stderr.
    fresh_interactions : int
        Fresh by count: an item's first this-many interactions in the log.
    fresh_seconds : str or int
        Fresh by age: events less than this long after the item's first event (default 1 day).
    epochs : int
        Passes over each window at a boundary (:class:`embcore.Trainer`).
    realtime_events : int
        Most events per score-then-train segment of a real-time/hybrid mode.
    realtime_seconds : str or int, optional
        Longest event-time span of such a segment (no limit by default).
    window : str or int, optional
        Width of the ``over_time`` windows (default: hour, 6 h, day, week, 30 d or 365 d, the
        first giving at most 60 windows).
    alpha : float
        Headline maturity level.
    track_rate : float
        Share of items whose trajectories are recorded.
    columns, label_threshold, sort, chunk_rows
        Passed to :func:`embcore.datasets.open_log`.
    parallel : bool
        Replay each chunk through the modes in parallel threads (same results either way).
    figures : bool
        Draw the figures and write the report (with ``out``).
    **model_options
        :class:`embcore.MatrixFactorization` options (``dim`` default 32, ``init_scale``
        default 0.01, ``learning_rate``, ``l2``, ...).

    Returns
    -------
    dict
        The content of ``metrics.json``.

    Raises
    ------
    ReplayConfigError
        A bad option, or a log that cannot be read (a ``ValueError``; nothing is left behind).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from embcore.datasets import synthetic_log
    >>> path = synthetic_log(pathlib.Path(tempfile.mkdtemp()) / "u.data", "movielens-100k", 500)
    >>> m = replay(path, None, modes=["realtime"], progress=False, dim=8)
    >>> m["modes"]["realtime"]["engagement"]["events"], m["config"]["dim"]
    (500, 8)
    >>> try:
    ...     replay(path, None, modes=["weekly"])
    ... except ReplayConfigError as err:
    ...     print(err)
    unknown mode(s) 'weekly': choose from realtime, batch, hybrid
    """
    started = time.perf_counter()
    config = _check_config(
        format,
        modes,
        period,
        seed,
        limit,
        threads,
        epochs,
        fresh_interactions,
        fresh_seconds,
        realtime_events,
        realtime_seconds,
        window,
        alpha,
        track_rate,
    )
    options: dict[str, Any] = {"dim": 32, "init_scale": 0.01, **model_options}
    try:
        probe = embcore.MatrixFactorization(**{"seed": seed, **options})
    except (TypeError, ValueError) as err:
        raise ReplayConfigError(f"bad model option: {err}") from None
    if probe.loss != "logistic":
        raise ReplayConfigError(
            "progressive validation needs the logistic loss (scores are logits), "
            f"got {probe.loss!r}"
        )
    output = runs.OutputDirectory(out, ReplayConfigError, replaces="an earlier replay or study")
    try:
        log = datasets.open_log(
            Path(log_path),
            format,  # type: ignore[arg-type]
            columns=columns,
            label_threshold=label_threshold,
            chunk_rows=chunk_rows,
            limit=limit,
            sort=sort,
        )
    except ValueError as err:  # DatasetError and bad loader options
        raise ReplayConfigError(str(err)) from None
    chunks = iter(log)
    try:
        # The first chunk is where an unreadable log fails: before anything is written.
        first = next(chunks, None)
    except ValueError as err:
        raise ReplayConfigError(str(err)) from None
    if first is None:
        raise ReplayConfigError(f"{log_path}: the log has no events")
    with output:
        metrics, results = _replay_stream(
            log, first, chunks, config, options, seed, alpha, track_rate, progress, parallel
        )
        metrics["config"].update(
            {
                "log": str(log_path),
                "format": log.format,
                "limit": limit,
                "label_threshold": label_threshold,
                "sort": sort,
                "chunk_rows": chunk_rows,
            }
        )

        def report(directory: Path) -> dict[str, str | None]:
            clock = time.perf_counter()
            files = write_report(directory, metrics, results)
            metrics["timings"]["report_seconds"] = round(time.perf_counter() - clock, 2)
            return files

        output.finish(metrics, started, report if figures else None)
    return metrics


def _replay_stream(
    log: datasets.EventLog,
    first: datasets.EventChunk,
    rest: Any,
    config: Mapping[str, Any],
    options: Mapping[str, Any],
    seed: int,
    alpha: float,
    track_rate: float,
    progress: bool,
    parallel: bool,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    began = time.perf_counter()
    mode_list: list[str] = config["modes"]

    def fresh_model() -> embcore.MatrixFactorization:
        return embcore.MatrixFactorization(**{"seed": seed, **options})

    trainers = runs.start_modes(
        mode_list,
        fresh_model,
        period=config["period"],
        epochs=config["epochs"],
        threads=config["threads"],
        seed=seed,
        track_rate=track_rate,
    )
    states = {mode: _ModeState(mode, trainer, config) for mode, trainer in trainers.items()}
    validation = ProgressiveValidation(
        mode_list, config["fresh_interactions"], config["fresh_seconds"], config["window"]
    )
    bar = runs.progress_bar(log.limit, f"replay {log.path.name} ({', '.join(mode_list)})", progress)
    last_time = int(first.timestamps[-1])
    first_time = int(first.timestamps[0])

    def one_mode(mode: str, chunk: datasets.EventChunk) -> npt.NDArray[np.float32]:
        return states[mode].replay_chunk(chunk)

    try:
        with bar, runs.ModePool(mode_list, parallel) as pool:
            chunk: datasets.EventChunk | None = first
            while chunk is not None:
                validation.add_events(chunk.items, chunk.labels, chunk.timestamps)
                all_scores = pool.map(one_mode, chunk)
                for mode, scores in zip(mode_list, all_scores, strict=True):
                    validation.add_scores(mode, scores)
                last_time = int(chunk.timestamps[-1])
                bar.update(len(chunk))
                chunk = next(rest, None)
    except datasets.DatasetError as err:
        raise ReplayConfigError(str(err)) from None
    for state in states.values():
        state.trainer.flush(last_time)
    timings = {"replay_seconds": round(time.perf_counter() - began, 2)}
    if progress:
        print("embcore replay: computing metrics and analysing each mode", file=sys.stderr)
    clock = time.perf_counter()
    engagement = validation.metrics()
    timings["validation_seconds"] = round(time.perf_counter() - clock, 2)
    clock = time.perf_counter()
    per_mode, results = runs.analyse_modes(trainers, alpha, seed, fresh_model)
    timings["analysis_seconds"] = round(time.perf_counter() - clock, 2)
    for mode, state in states.items():
        per_mode[mode]["engagement"] = engagement[mode]
        per_mode[mode]["score_seconds"] = round(state.score_seconds, 3)
        per_mode[mode]["segments"] = state.segments
    any_trainer = next(iter(states.values())).trainer
    metrics: dict[str, Any] = {
        "config": {
            "seed": seed,
            "modes": mode_list,
            "period_seconds": config["period"],
            "epochs": config["epochs"],
            "learning_rate": float(any_trainer.model.optimizer["learning_rate"]),
            "optimizer": str(any_trainer.model.optimizer.get("name", "adagrad")),
            "dim": int(options["dim"]),
            "init_scale": float(options["init_scale"]),
            "model_options": {k: v for k, v in options.items() if _jsonable(v)},
            "alpha": alpha,
            "track_rate": track_rate,
            "threads": config["threads"],
            "model": "mf",
            "monitor": "embcore.Monitor",
            "fresh_interactions": config["fresh_interactions"],
            "fresh_seconds": config["fresh_seconds"],
            "realtime_events": config["realtime_events"],
            "realtime_seconds": config["realtime_seconds"],
            "first_event_time": first_time,
            "last_event_time": last_time,
            "versions": runs.versions(),
        },
        "log_report": log.report.to_dict(),
        "timings": timings,
        "modes": per_mode,
        "comparison": _comparison(per_mode),
    }
    return metrics, results


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _difference(a: Any, b: Any) -> float | None:
    if a is None or b is None:
        return None
    return float(a) - float(b)


def _comparison(modes: Mapping[str, Any]) -> dict[str, Any]:
    rt, batch = modes.get("realtime"), modes.get("batch")
    if rt is None or batch is None:
        return {"note": "needs both the realtime and the batch mode"}
    base = runs.comparison(
        {
            name: {**m, "engagement": {"ctr": None, "fresh_ctr": None, "fresh_play_rate": None}}
            for name, m in (("realtime", rt), ("batch", batch))
        }
    )
    out = {k: v for k, v in base.items() if "ctr" not in k and "play_rate" not in k}
    for key in ("auc", "fresh_auc", "fresh_age_auc", "mature_auc", "logloss", "fresh_logloss"):
        out[f"{key}_realtime_minus_batch"] = _difference(
            rt["engagement"][key], batch["engagement"][key]
        )
    return out


# --------------------------------------------------------------------------------------------
# CLI entry point


def run(args: argparse.Namespace) -> int:
    """Entry point of ``embcore replay`` (arguments declared in :mod:`embcore.cli`).

    Returns 0 on success and 2 for an invalid option or an unreadable log (message on stderr,
    no output directory left behind).
    """

    def call() -> dict[str, Any]:
        return replay(
            args.log,
            args.out,
            format=args.format,
            limit=args.limit,
            **runs.run_options(args),
            **runs.given_options(
                args, ("fresh_interactions", "fresh_seconds", "epochs", "learning_rate")
            ),
        )

    return runs.run_command(
        "replay", call, ReplayConfigError, lambda metrics: summary_text(metrics, Path(args.out))
    )


_SUMMARY_COLUMNS: tuple[reporting.Column, ...] = (
    ("AUC", ("engagement", "auc"), lambda v: reporting.num(v, 4)),
    ("log-loss", ("engagement", "logloss"), lambda v: reporting.num(v, 4)),
    ("fresh AUC", ("engagement", "fresh_auc"), lambda v: reporting.num(v, 4)),
    ("median maturity", ("maturity", "median_interactions"), reporting.num),
    ("norm p99", ("norm_quantiles", "p99"), reporting.num),
)


def summary_text(metrics: Mapping[str, Any], out: Path | None = None) -> str:
    """The lines ``embcore replay`` prints at the end.

    >>> m = {"modes": {}, "runtime_seconds": 1.0, "log_report": {"events_out": 0}}
    >>> summary_text(m).splitlines()[0]
    'embcore replay: 0 events replayed in 1.0 s'
    """
    events = reporting.get(metrics, "log_report", "events_out") or 0
    runtime = metrics.get("runtime_seconds") or 0.0
    head = f"embcore replay: {events:,d} events replayed in {runtime} s"
    replay_seconds = reporting.get(metrics, "timings", "replay_seconds")
    if replay_seconds and events:
        head += (
            f" (replay {replay_seconds} s, {events / replay_seconds:,.0f} log events/s "
            f"through {len(metrics['modes'])} modes)"
        )
    if out is not None:
        head += f"; {reporting.wrote_text(out)}"
    return "\n".join([head, *reporting.summary_lines(metrics, _SUMMARY_COLUMNS)])


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Declare ``embcore replay`` and its arguments on the CLI's subparsers."""
    replay = sub.add_parser(
        "replay",
        help="replay a real interaction log through each training mode",
        description="Replay a logged event stream (MovieLens, KuaiRand, KuaiRec, CSV, "
        "Parquet) through each mode with progressive validation.",
    )
    replay.add_argument("log", help="path of the log file")
    replay.add_argument("--format", default="auto")
    replay.add_argument("--out", default="embcore-replay")
    replay.add_argument("--modes", type=mode_list, default=["realtime", "batch"])
    replay.add_argument("--period", default="6h")
    replay.add_argument("--seed", type=int, default=0)
    replay.add_argument("--limit", type=positive_int, default=None)
    replay.add_argument("--threads", type=positive_int, default=1)
    replay.add_argument("--epochs", type=positive_int, default=None)
    replay.add_argument("--learning-rate", type=float, default=None)
    replay.add_argument(
        "--fresh-interactions",
        type=positive_int,
        default=None,
        help="an item is fresh for its first N interactions",
    )
    replay.add_argument(
        "--fresh-seconds",
        type=positive_int,
        default=None,
        help="an item is fresh for this long after its first event",
    )
    replay.add_argument("--no-progress", action="store_true")

    return replay
