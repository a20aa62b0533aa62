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
* **Exact progressive validation in the training pass.** Each chunk goes to each mode in one
  :meth:`~embcore.modes.Trainer.consume` call with ``return_scores=True``: real-time and
  hybrid take every event's score from the training call itself — the live model just before
  that event's own update, having seen every earlier event — and batch scores each period's
  events against its frozen publish in one vectorised call. With ``threads=1`` this is exactly
  per-event progressive validation (tested against an event-at-a-time reference). With more
  threads the workers' shares of a chunk run side by side (Hogwild): an event's score misses
  the updates of events the other threads are training at the same moment, a staleness of at
  most the chunk's other shares, and results depend on the thread schedule.
* **Exact AUC** and **fresh items** are the evaluator's (:mod:`embcore.validation`): scores
  are kept, so the AUC is the exact Mann–Whitney statistic; an event is fresh by its item's
  interaction index or age *in the log*, the same for every mode. Items already present when
  the log starts look fresh too; on long logs that is a small share of the events.
* **The batch period** defaults to ``"auto"`` (:func:`choose_period`): chosen from the log's
  span and density, read by the loader's first pass over the time column, so that a typical
  window holds enough events to retrain on; an explicit period whose windows are mostly
  nearly empty gets a :class:`ReplayWarning` with the suggested value.
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
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import embcore
from embcore import cli_args, datasets, reporting, runs
from embcore.modes import Trainer, parse_duration
from embcore.replay_report import FIGURES, render_html, write_report
from embcore.runs import AGE_EDGES_HOURS, DEFAULT_ALPHA
from embcore.validation import (
    DEFAULT_FRESH_INTERACTIONS,
    DEFAULT_FRESH_SECONDS,
    INTERACTION_EDGES,
    ProgressiveValidation,
    auc,
    grouped_auc,
    logloss,
)

__all__ = [
    "AGE_EDGES_HOURS",
    "FIGURES",
    "INTERACTION_EDGES",
    "PERIOD_LADDER",
    "ProgressiveValidation",
    "ReplayConfigError",
    "ReplayWarning",
    "auc",
    "choose_period",
    "empty_window_share",
    "grouped_auc",
    "logloss",
    "render_html",
    "replay",
    "run",
    "summary_text",
    "write_report",
]

DEFAULT_CHUNK_ROWS = 500_000
PERIOD_LADDER = (
    60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86_400, 2 * 86_400, 7 * 86_400,
    14 * 86_400, 30 * 86_400, 91 * 86_400, 182 * 86_400, 365 * 86_400,
)  # fmt: skip
"""The periods ``--period auto`` chooses from (seconds)."""
TARGET_WINDOWS = 100
"""``--period auto`` aims at about this many batch windows over the log's span..."""
MIN_WINDOW_EVENTS = 1000
"""...while the median window (over the span, empty ones included) holds this many events..."""
MIN_WINDOWS = 10
"""...and the log still spans this many windows."""
NEARLY_EMPTY_EVENTS = 10
"""A window with fewer events is nearly empty (an explicit period with mostly such windows
gets a :class:`ReplayWarning`)."""
_REMOVED_OPTIONS = {
    "realtime_events": "real-time and hybrid scores now come from the training call itself, "
    "exact per event at threads=1",
    "realtime_seconds": "real-time and hybrid scores now come from the training call itself, "
    "exact per event at threads=1",
}


class ReplayConfigError(embcore.errors.ConfigError):
    """A replay option or the log is invalid (the CLI exits with code 2)."""


class ReplayWarning(UserWarning):
    """A replay setting that works but is probably not what was meant (the CLI prints it)."""


# --------------------------------------------------------------------------------------------
# The batch period


def empty_window_share(profile: datasets.TimeProfile, period: int) -> float:
    """Estimated share of the period windows between the first and last event that hold
    fewer than :data:`NEARLY_EMPTY_EVENTS` events.

    >>> p = datasets.TimeProfile(events=4, first=0, last=3599, sample=np.array([0, 1, 2, 3]))
    >>> empty_window_share(p, 60)  # 60 one-minute windows, one holds all four events
    1.0
    """
    counts = _window_counts(profile, period)
    return float((counts < NEARLY_EMPTY_EVENTS).mean()) if counts.size else 0.0


def _window_counts(profile: datasets.TimeProfile, period: int) -> npt.NDArray[np.float64]:
    first_window = profile.first // period
    n_windows = profile.last // period - first_window + 1
    if profile.sample.size == 0 or n_windows <= 0:
        return np.zeros(0)
    if n_windows > 50_000_000:  # far too small a period: every window is (nearly) empty
        return np.zeros(50_000_000)
    index = profile.sample // period - first_window
    counts = np.bincount(index, minlength=n_windows).astype(np.float64)
    return counts * (profile.events / profile.sample.size)


def choose_period(profile: datasets.TimeProfile) -> int:
    """``--period auto``: a batch period from the log's span and density.

    The smallest :data:`PERIOD_LADDER` value giving at most :data:`TARGET_WINDOWS` windows
    over the span, enlarged while the median window holds fewer than
    :data:`MIN_WINDOW_EVENTS` events, but never past the last value that keeps
    :data:`MIN_WINDOWS` windows (logs shorter than ten minutes get one minute).

    >>> day = 86_400
    >>> even = datasets.TimeProfile(10**6, 0, 30 * day, np.linspace(0, 30 * day, 10**5).astype(int))
    >>> choose_period(even) // 3600  # 30 days, one event every 2.6 s: 100 windows of ~7 h
    12
    """
    span = max(profile.last - profile.first + 1, 1)
    allowed = [p for p in PERIOD_LADDER if span / p >= MIN_WINDOWS] or [PERIOD_LADDER[0]]
    start = next((k for k, p in enumerate(allowed) if span / p <= TARGET_WINDOWS), None)
    if start is None:
        start = len(allowed) - 1
    for period in allowed[start:]:
        if float(np.median(_window_counts(profile, period))) >= MIN_WINDOW_EVENTS:
            return period
    return allowed[-1]


def _period_text(seconds: int) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


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
            return parse_duration(value, name)
        except ValueError as err:
            raise ReplayConfigError(str(err)) from None

    if format != "auto" and format not in datasets.FORMATS:
        raise ReplayConfigError(
            f"--format must be 'auto' or one of {', '.join(datasets.FORMATS)}, got {format!r}"
        )
    mode_list = [modes] if isinstance(modes, str) else list(modes)
    runs.check_modes(mode_list, ReplayConfigError)
    runs.check_seed(seed, ReplayConfigError)
    if limit is not None:
        positive_int("--limit", limit)
    if not (isinstance(alpha, int | float) and 0 < alpha < 2):
        raise ReplayConfigError(f"--alpha must be in (0, 2), got {alpha!r}")
    if not (isinstance(track_rate, int | float) and 0 < track_rate <= 1):
        raise ReplayConfigError(f"--track-rate must be in (0, 1], got {track_rate!r}")
    auto = isinstance(period, str) and period.strip().lower() == "auto"
    return {
        "modes": mode_list,
        "period": None if auto else duration("--period", period),
        "threads": positive_int("--threads", threads),
        "epochs": positive_int("--epochs", epochs),
        "fresh_interactions": positive_int("--fresh-interactions", fresh_interactions),
        "fresh_seconds": duration("--fresh-seconds", fresh_seconds),
        "window": None if window is None else duration("--window", window),
    }


def _model_options(seed: int, model_options: Mapping[str, Any]) -> dict[str, Any]:
    removed = [name for name in model_options if name in _REMOVED_OPTIONS]
    if removed:
        raise ReplayConfigError(f"{removed[0]} was removed: {_REMOVED_OPTIONS[removed[0]]}")
    options: dict[str, Any] = {"dim": 32, "init_scale": 0.01, **model_options}
    try:
        probe = embcore.MatrixFactorization(**{"seed": seed, **options})
    except TypeError as err:
        raise ReplayConfigError(f"unknown model option: {err}") from None
    except ValueError as err:
        raise ReplayConfigError(_flag_message(str(err))) from None
    if probe.loss != "logistic":
        raise ReplayConfigError(
            "progressive validation needs the logistic loss (scores are logits), "
            f"got loss={probe.loss!r}"
        )
    return options


def _flag_message(message: str) -> str:
    """A model option's message in flag names: ``learning_rate must ...`` -> ``--learning-rate
    must ...`` (options without a flag keep their Python name)."""
    name, _, rest = message.partition(" ")
    if name in _MODEL_FLAGS:
        return f"--{name.replace('_', '-')} {rest}"
    return message


_MODEL_FLAGS = ("dim", "learning_rate", "init_scale")


# --------------------------------------------------------------------------------------------
# The replay


class _ModeState:
    """One mode's trainer; each chunk is scored and consumed in one call.

    Parameters
    ----------
    mode : str
    trainer : Trainer
        The mode's trainer (with its monitor).
    """

    def __init__(self, mode: str, trainer: Trainer):
        self.mode = mode
        self.trainer = trainer

    def replay_chunk(self, chunk: datasets.EventChunk) -> npt.NDArray[np.float32]:
        """Each event's serving score before the mode takes it; then the mode has taken the
        chunk (one :meth:`Trainer.consume` call)."""
        scores = self.trainer.consume(
            chunk.users,
            chunk.items,
            chunk.labels,
            chunk.timestamps,
            chunk.weights,
            return_scores=True,
        )
        assert scores is not None
        return scores


def replay(
    log_path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None,
    format: str = "auto",
    modes: Sequence[str] = ("realtime", "batch"),
    period: str | int | float = "auto",
    seed: int = 0,
    limit: int | None = None,
    threads: int = 1,
    progress: bool = True,
    fresh_interactions: int = DEFAULT_FRESH_INTERACTIONS,
    fresh_seconds: str | int | float = DEFAULT_FRESH_SECONDS,
    *,
    epochs: int = 1,
    window: str | int | float | None = None,
    alpha: float = DEFAULT_ALPHA,
    track_rate: float = 0.25,
    columns: datasets.ColumnMap | str | None = None,
    label_threshold: float | None = None,
    time_unit: datasets.TimeUnit | None = None,
    separator: str | None = None,
    max_bad_rows: int | str = datasets.DEFAULT_MAX_BAD_ROWS,
    sort: datasets.SortPolicy = "auto",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    hash_ids: bool = False,
    parallel: bool = True,
    figures: bool = True,
    ray: int | None = None,
    ray_address: str | None = None,
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
        Batch/hybrid period (``"6h"``, ``"90m"`` or seconds), boundaries at multiples of it;
        ``"auto"`` (default) chooses it from the log's span and density
        (:func:`choose_period`). A period whose windows are mostly nearly empty warns
        (:class:`ReplayWarning`).
    seed : int
        Model seed (every mode starts from the same initial rows) and batch shuffles.
    limit : int, optional
        Replay only the first ``limit`` events (in time order).
    threads : int
        Training threads per mode. 1 (default) makes progressive validation exact per event
        and the run reproducible; more threads train each chunk Hogwild (module notes).
    progress : bool
        Show a tqdm progress bar (log events/s) on stderr.
    fresh_interactions : int
        Fresh by count: an item's first this-many interactions in the log.
    fresh_seconds : str or int
        Fresh by age: events less than this long after the item's first event (default 1 day;
        a duration such as ``"12h"`` or seconds).
    epochs : int
        Passes over each window at a boundary (:class:`embcore.Trainer`).
    window : str or int, optional
        Width of the ``over_time`` windows (default: hour, 6 h, day, week, 30 d or 365 d, the
        first giving at most 60 windows).
    alpha : float
        Headline maturity level.
    track_rate : float
        Share of items whose trajectories are recorded.
    columns : ColumnMap or str, optional
        Which columns hold user, item, time, label (and weight) in a generic CSV/Parquet log;
        the CLI's text form ``"user=COL,item=COL,time=COL,label=COL[,weight=COL]"`` is
        accepted (:meth:`embcore.datasets.ColumnMap.parse`).
    label_threshold, time_unit, separator, max_bad_rows, sort, chunk_rows, hash_ids
        Passed to :func:`embcore.datasets.open_log` (``hash_ids=True``: text ids such as
        hex digests or UUIDs read as 64-bit hashes of their text).
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
        A bad option, or a log that cannot be read (a ``ConfigError``, so a ``ValueError``;
        nothing is left behind).

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
        window,
        alpha,
        track_rate,
    )
    options = _model_options(seed, model_options)
    if ray is not None and (isinstance(ray, bool) or not isinstance(ray, int) or ray < 1):
        raise ReplayConfigError(f"--ray must be an integer >= 1 (shards per mode), got {ray!r}")
    config["ray"], config["ray_address"] = ray, ray_address
    output = runs.OutputDirectory(out, ReplayConfigError, replaces="an earlier replay or study")
    try:
        column_map = datasets.ColumnMap.parse(columns) if isinstance(columns, str) else columns
        log = datasets.open_log(
            Path(log_path),
            format,  # type: ignore[arg-type]
            columns=column_map,
            label_threshold=label_threshold,
            time_unit=time_unit,
            separator=separator,
            max_bad_rows=max_bad_rows,
            chunk_rows=chunk_rows,
            limit=limit,
            sort=sort,
            label_range=(0.0, 1.0),  # the logistic loss of progressive validation
            hash_ids=hash_ids,
        )
        _settle_period(log, config)
        chunks = iter(log)
        # The first chunk is where an unreadable log fails: before anything is written.
        first = next(chunks, None)
    except ValueError as err:  # DatasetError and bad loader options
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
                "columns": log.columns.describe(),
                "limit": limit,
                "label_threshold": label_threshold,
                "sort": sort,
                "chunk_rows": chunk_rows,
                "max_bad_rows": max_bad_rows,
                "hash_ids": hash_ids,
            }
        )

        def report(directory: Path) -> dict[str, str | None]:
            clock = time.perf_counter()
            files = write_report(directory, metrics, results)
            metrics["timings"]["report_seconds"] = round(time.perf_counter() - clock, 2)
            return files

        output.finish(metrics, started, report if figures else None)
    return metrics


def _settle_period(log: datasets.EventLog, config: dict[str, Any]) -> None:
    """Choose ``--period auto`` from the log, or warn about an explicit period whose windows
    are mostly nearly empty (batch and hybrid only: real-time has no period)."""
    batched = any(mode != "realtime" for mode in config["modes"])
    if config["period"] is not None and not batched:
        return
    profile = log.time_profile()
    if profile.events == 0:
        return  # no usable row: the first chunk's read says why (before the period matters)
    suggested = choose_period(profile)
    config["period_auto"] = config["period"] is None
    if config["period"] is None:
        config["period"] = suggested
        return
    share = empty_window_share(profile, config["period"])
    if share > 0.5 and suggested > config["period"]:
        warnings.warn(
            f"--period {_period_text(config['period'])} gives mostly empty batch windows "
            f"({share:.0%} of the windows over the log hold fewer than {NEARLY_EMPTY_EVENTS} "
            f"events); --period auto would choose {_period_text(suggested)}",
            ReplayWarning,
            stacklevel=3,
        )


def _model_bytes(trainer: Trainer) -> int:
    """Bytes of the mode's tables in this process: the trained model and, batch, its serving
    snapshot (a ShardedModel's rows live in its actors: 0 here)."""
    models = {id(m): m for m in (trainer.model, trainer.serving_model)}
    return sum(
        int(getattr(trainer.user_table(m), "nbytes", 0))
        + int(getattr(trainer.item_table(m), "nbytes", 0))
        for m in models.values()
    )


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
    period = int(config["period"] or 86_400)  # real-time alone: unused

    def fresh_model() -> Any:
        if config.get("ray") is not None:
            make = runs.sharded_factory(
                config["ray"], config["ray_address"], len(mode_list), seed=seed, **options
            )
            return make()
        return local_model()

    def local_model() -> embcore.MatrixFactorization:
        # In process; also the analyses' initial rows (a row's initial value is a hash of
        # (seed, id), the same on any shard).
        return embcore.MatrixFactorization(**{"seed": seed, **options})

    trainers = runs.start_modes(
        mode_list,
        fresh_model,
        period=period,
        epochs=config["epochs"],
        threads=config["threads"],
        seed=seed,
        track_rate=track_rate,
    )
    states = {mode: _ModeState(mode, trainer) for mode, trainer in trainers.items()}
    validation = ProgressiveValidation(
        mode_list, config["fresh_interactions"], config["fresh_seconds"], config["window"]
    )
    bar = runs.progress_bar(log.limit, f"replay {log.path.name} ({', '.join(mode_list)})", progress)
    last_time = int(first.timestamps[-1])
    first_time = int(first.timestamps[0])
    jobs = ["validation", *mode_list]

    def one_job(job: str, chunk: datasets.EventChunk) -> npt.NDArray[np.float32] | None:
        if job == "validation":
            validation.add_events(chunk.items, chunk.labels, chunk.timestamps)
            return None
        return states[job].replay_chunk(chunk)

    try:
        # The log-side bookkeeping runs beside the modes (it only reads the chunk).
        # The next chunk is read (parsed, checked) while the modes train on this one.
        with bar, runs.ModePool(jobs, parallel) as pool, runs.ReadAhead(rest, parallel) as ahead:
            chunk: datasets.EventChunk | None = first
            while chunk is not None:
                _, *all_scores = pool.map(one_job, chunk)
                for mode, scores in zip(mode_list, all_scores, strict=True):
                    assert scores is not None
                    validation.add_scores(mode, scores)
                last_time = int(chunk.timestamps[-1])
                bar.update(len(chunk))
                chunk = next(ahead, None)
    except datasets.DatasetError as err:
        raise ReplayConfigError(str(err)) from None
    for state in states.values():
        state.trainer.flush(last_time)
    timings = {"replay_seconds": round(time.perf_counter() - began, 3)}
    memory = {"peak_rss_stream_bytes": runs.peak_rss()}
    # Each phase starts from what is live, not from the stream's freed pages.
    runs.release_free_memory()
    if progress:
        print("embcore replay: computing metrics and analysing each mode", file=sys.stderr)
    clock = time.perf_counter()
    engagement = validation.metrics()
    timings["validation_seconds"] = round(time.perf_counter() - clock, 3)
    memory["peak_rss_validation_bytes"] = runs.peak_rss()
    # The analyses need none of the stored scores and log columns: free them first.
    validation.discard()
    runs.release_free_memory()
    clock = time.perf_counter()
    per_mode, results = runs.analyse_modes(trainers, alpha, seed, local_model)
    timings["analysis_seconds"] = round(time.perf_counter() - clock, 3)
    memory["peak_rss_analysis_bytes"] = runs.peak_rss()
    for mode, state in states.items():
        per_mode[mode]["engagement"] = engagement[mode]
        per_mode[mode]["model_bytes"] = _model_bytes(state.trainer)
        monitor = state.trainer.monitor
        per_mode[mode]["monitor_bytes"] = int(monitor.memory_bytes) if monitor is not None else 0
    any_trainer = next(iter(states.values())).trainer
    metrics: dict[str, Any] = {
        "config": {
            "seed": seed,
            "modes": mode_list,
            "period_seconds": config["period"],
            "period_auto": bool(config.get("period_auto", False)),
            "epochs": config["epochs"],
            "learning_rate": float(any_trainer.model.optimizer["learning_rate"]),
            "optimizer": str(any_trainer.model.optimizer.get("name", "adagrad")),
            "dim": int(options["dim"]),
            "init_scale": float(options["init_scale"]),
            "model_options": {k: v for k, v in options.items() if _jsonable(v)},
            "alpha": alpha,
            "track_rate": track_rate,
            "threads": config["threads"],
            "ray_shards": config.get("ray"),
            "model": "mf",
            "monitor": "embcore.Monitor",
            "fresh_interactions": config["fresh_interactions"],
            "fresh_seconds": config["fresh_seconds"],
            "scoring": "each event scored by the serving model in the training call, before "
            "its own update (exact per event at threads=1)",
            "first_event_time": first_time,
            "last_event_time": last_time,
            "versions": runs.versions(),
        },
        "log_report": log.report.to_dict(),
        "timings": timings,
        "memory": memory,
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
    """Entry point of ``embcore replay`` (arguments declared in :func:`add_parser`).

    Returns 0 on success and 2 for an invalid option or an unreadable log (message on stderr,
    no output directory left behind).
    """

    def call() -> dict[str, Any]:
        return replay(
            args.log,
            args.out,
            format=args.format,
            limit=args.limit,
            columns=args.columns,
            label_threshold=args.label_threshold,
            time_unit=args.time_unit,
            separator=args.sep,
            max_bad_rows=args.max_bad_rows,
            sort=args.sort,
            hash_ids=args.hash_ids,
            figures=not args.no_figures,
            ray=args.ray,
            ray_address=args.ray_address,
            **runs.run_options(args),
            **runs.given_options(
                args,
                (
                    "fresh_interactions",
                    "fresh_seconds",
                    "epochs",
                    "learning_rate",
                    "dim",
                    "alpha",
                    "track_rate",
                    "window",
                ),
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
            f"through {len(metrics['modes'])} mode{'s' if len(metrics['modes']) != 1 else ''})"
        )
    if out is not None:
        head += f"; {reporting.wrote_text(out)}"
    notice = datasets.load_notice(metrics.get("log_report") or {})
    lines = [head, *reporting.summary_lines(metrics, _SUMMARY_COLUMNS)]
    return "\n".join(lines + ([f"  {notice}"] if notice else []))


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Declare ``embcore replay`` and its arguments on the CLI's subparsers."""
    parser = sub.add_parser(
        "replay",
        help="replay a real interaction log through each training mode",
        description="Replay a logged event stream (MovieLens, KuaiRand, KuaiRec, or any "
        "CSV/Parquet log) through each training mode with progressive validation: every "
        "event is scored by the mode's serving model before the mode trains on it.",
        epilog="Examples:\n"
        "  embcore replay ml-latest-small/ratings.csv\n"
        "  embcore replay events.csv --columns user=uid,item=video,time=ts,label=click "
        "--time-unit ms\n"
        "  embcore replay u.data --modes realtime,batch,hybrid --period 1d --out replay-ml-100k",
    )
    parser.add_argument("log", help="path of the log file (.csv/.tsv, optionally .gz, or .parquet)")
    parser.add_argument(
        "--format",
        default="auto",
        choices=["auto", *datasets.FORMATS],
        help="log format; auto detects it from the name and header",
    )
    parser.add_argument("--out", default="embcore-replay", help="output directory")
    parser.add_argument(
        "--modes",
        type=cli_args.mode_list,
        default=["realtime", "batch"],
        metavar="MODE[,MODE...]",
        help="comma-separated training modes, from realtime, batch, hybrid",
    )
    parser.add_argument(
        "--period",
        type=cli_args.duration_or_auto,
        default="auto",
        help="batch/hybrid retraining period (6h, 90m, 1d, seconds) or auto: chosen from the "
        "log's span and density",
    )
    parser.add_argument(
        "--columns",
        type=cli_args.column_map,
        default=None,
        metavar="user=COL,item=COL,time=COL[,label=COL][,weight=COL]",
        help="which columns of a generic CSV/Parquet log hold the event fields; no label: "
        "every row is a positive (default: the format's, or plain user/item/time/label names)",
    )
    parser.add_argument(
        "--label-threshold",
        type=float,
        default=None,
        metavar="X",
        help="label = (label column >= X); default: the format's rule (MovieLens rating >= 4, "
        "KuaiRec watch ratio >= 2), or the value as is",
    )
    parser.add_argument(
        "--time-unit",
        choices=["s", "ms", "us", "ns"],
        default=None,
        help="unit of a numeric time column; default: the format's (s for generic logs, ms "
        "for a column named time_ms or timestamp_ms); ISO-8601 text times (2020-09-13, "
        "2020-09-13T12:27:31Z, +02:00) are read as such, UTC when they have no offset",
    )
    parser.add_argument(
        "--hash-ids",
        action="store_true",
        help="read user and item ids as 64-bit hashes of their text, for string ids (hex "
        "digests, UUIDs); default: ids must be non-negative integers",
    )
    parser.add_argument(
        "--sep",
        type=cli_args.separator,
        default=None,
        metavar="CHAR",
        help="field separator of a text log (',', 'tab' or any one character); default: "
        "detected from line 1",
    )
    parser.add_argument(
        "--max-bad-rows",
        type=cli_args.bad_rows,
        default=datasets.DEFAULT_MAX_BAD_ROWS,
        metavar="N|P%",
        help="fail when more malformed rows than this are dropped: a count, or a share of the "
        "rows read (at least 10 rows)",
    )
    parser.add_argument(
        "--sort",
        choices=["auto", "require", "memory"],
        default="auto",
        help="auto: sort an unsorted log in memory when it fits, else say how to sort it; "
        "require: fail on the first row out of time order; memory: always sort in memory",
    )
    parser.add_argument(
        "--limit",
        type=cli_args.positive_int,
        default=None,
        help="replay only the first N events (default: the whole log)",
    )
    parser.add_argument("--seed", type=int, default=0, help="model seed and batch shuffles")
    parser.add_argument(
        "--threads", type=cli_args.positive_int, default=1, help=cli_args.THREADS_HELP
    )
    cli_args.add_ray_flags(parser)
    parser.add_argument(
        "--epochs",
        type=cli_args.positive_int,
        default=None,
        help="passes over each batch window at a boundary (default 1)",
    )
    parser.add_argument(
        "--learning-rate", type=float, default=None, help="optimizer step size (default 0.05)"
    )
    parser.add_argument(
        "--dim", type=cli_args.positive_int, default=None, help="embedding width (default 32)"
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=None,
        help=f"maturity threshold on the cosine distance (default {DEFAULT_ALPHA})",
    )
    parser.add_argument(
        "--track-rate",
        type=float,
        default=None,
        help="share of items whose trajectories are recorded (default 0.25)",
    )
    parser.add_argument(
        "--fresh-interactions",
        type=cli_args.positive_int,
        default=None,
        help="an item is fresh for its first N interactions "
        f"(default {DEFAULT_FRESH_INTERACTIONS})",
    )
    parser.add_argument(
        "--fresh-seconds",
        type=cli_args.duration,
        default=None,
        metavar="DURATION",
        help="an item is fresh for this long after its first event (default 1d; 12h, 90m, seconds)",
    )
    parser.add_argument(
        "--window",
        type=cli_args.duration,
        default=None,
        metavar="DURATION",
        help="width of the over-time AUC windows (default: the smallest of 1h, 6h, 1d, 7d, 30d, "
        "365d giving at most 60 windows)",
    )
    parser.add_argument("--no-figures", action="store_true", help="write metrics.json only")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser
