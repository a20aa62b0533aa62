"""``embcore study``: real-time vs batch (vs hybrid) embeddings on one simulated platform.

One :class:`~embcore.sim.World` is stepped once; at every step each mode scores the live pool
with its serving view, the world serves that mode's feeds (common random numbers: requests,
pools, exploration and the click/play coins are shared, so differences come from the scores
alone) and the mode trains on its own events, scoring each event with its serving model first
(progressive validation). Reference policies (random, a non-personalised oracle, the full
oracle) are served on the same steps. At the end the modes are measured by one protocol
(:mod:`embcore.protocol`: the same items, the serving embedding at each view, settled
references), the paper's claims are checked against their magnitude with bootstrap intervals
(:mod:`embcore.claims`), degenerate configurations are flagged, and everything is written to
``DIR/metrics.json``, a self-contained ``DIR/report.html`` and one PNG per figure.

``embcore study --select`` runs the hyper-parameter selection (learning rate and init scale
by the real-time model's progressive log-loss on another seed); ``embcore study --grid`` runs
the fixed grid of batch configurations (docs/study.md).

Design notes
------------
* The run itself (modes, monitors, the output directory written beside ``DIR`` and renamed
  into place, per-mode analysis) is :mod:`embcore.runs`; the report is :mod:`embcore.report`.
  This module adds the source of events (the world's steps), the evaluator (engagement and
  progressive validation after a burn-in) and the bookkeeping the protocol needs (per-item
  exposure, last view, fresh and other clicks).
* BLAS is limited to one thread while the study runs (``threadpoolctl``): the per-step matmuls
  are small (~260 x 32 x 4,000) and a second BLAS thread on a busy machine makes them 10-20x
  slower.
* Trainer options that only newer Trainers have (``window``, ``init``, ``reset_optimizer``) are
  passed only when :class:`~embcore.modes.Trainer` accepts them (checked on its signature);
  asking for one the Trainer lacks is a configuration error, and the grid marks such cells.

>>> import tempfile, json, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp()) / "study"
>>> metrics = run_study(out, scale="tiny", period="1h", progress=False, figures=False)
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
from embcore import analysis, claims, protocol, reporting, runs, validation
from embcore.cli_args import (
    add_ray_flags,
    duration_or_auto,
    duration_or_period,
    mode_list,
    positive_int,
)
from embcore.modes import Model, Trainer, parse_duration
from embcore.runs import AGE_EDGES_HOURS, ALPHAS, DEFAULT_ALPHA, finite, learning_curve
from embcore.sim import FIELDS, Events, SimConfig, Step, World

__all__ = [
    "DEFAULT_INIT_SCALE",
    "DEFAULT_LEARNING_RATE",
    "GRID",
    "REFERENCE_POLICIES",
    "StudyConfigError",
    "check_design",
    "item_expiry",
    "learning_curve",
    "run",
    "run_grid",
    "run_selection",
    "run_study",
]

SCALES = ("tiny", "small", "default", "large")
SCALE_PERIODS = {"tiny": "1h", "small": "4h", "default": "6h", "large": "6h"}
"""The period ``period="auto"`` (the default) takes at each scale: the paper's 6 h where the
horizon holds it, else the longest round period giving at least :data:`MIN_PUBLISHES`
publishes and a burn-in well inside the horizon (tiny: 6 h horizon, small: 1 day)."""
#: The default batch training window: one day (or the period, when longer).
DEFAULT_WINDOW_SECONDS = 86_400
MODELS = ("mf", "ffm", "fm")
"""Models the study trains: matrix factorization, field-aware FM, FM."""

DEFAULT_LEARNING_RATE = 0.05
"""Adagrad learning rate of the study (see :func:`run_selection` and docs/study.md)."""
DEFAULT_INIT_SCALE = 0.01
"""Scale of the initial rows of the study (see :func:`run_selection` and docs/study.md)."""
SELECTION_SEED = 1
"""The world seed the hyper-parameters are selected on (the study's default seed is 0)."""
SELECTION_LEARNING_RATES = (0.01, 0.02, 0.05, 0.1, 0.2)
SELECTION_INIT_SCALES = (0.001, 0.01, 0.1)
MIN_PUBLISHES = 4
"""A batch or hybrid mode must publish at least this many times before the horizon."""
MATURE_AT_ZERO_LIMIT = 0.25
"""More than this share of items mature at 0 interactions (absolute criterion) is flagged."""
MIN_POPULATION = 50
"""Fewer settled common items than this is flagged (intervals are then wide)."""
BURN_IN_PERIODS = 2
"""Engagement and progressive validation are scored from ``BURN_IN_PERIODS * period`` on."""
REFERENCE_POLICIES = ("random", "non_personalised_oracle", "oracle")
"""Reference policies served on the same world (when the World provides their scores)."""
_MAX_RECORDS = 4_000_000
_AFFINITY_CHUNK = 1 << 18

GRID: dict[str, tuple[Any, ...]] = {
    "model": ("mf", "ffm"),
    "period": ("6h", "1d"),
    "window": ("period", "1d", "3d"),
    "epochs": (1, 3),
}
"""The fixed grid of ``embcore study --grid`` (issue 13): every cell is reported."""


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


class _Ledger:
    """What the protocol needs from one mode's (or reference policy's) events.

    Per world item: impressions over the whole run and the time of its last view; from the
    burn-in on: fresh and other impressions and clicks (the fresh-lift claim), and plays.
    With ``keep_scores``: each scored event's serving score, label, user and item
    (progressive validation and the score-affinity correlation).
    """

    def __init__(self, n_items: int, burn_in: int, keep_scores: bool) -> None:
        self.burn_in = int(burn_in)
        self.impressions = np.zeros(n_items)
        self.last_view = np.full(n_items, np.iinfo(np.int64).min, dtype=np.int64)
        self.scored = np.zeros((5, n_items))  # fresh imp, fresh click, other imp, other click, play
        self.cold = np.zeros(n_items)  # impressions of items the serving model did not know
        self.keep_scores = keep_scores
        self._parts: list[tuple[Any, ...]] = []

    def add(
        self, events: Events, scores: np.ndarray | None = None, cold: np.ndarray | None = None
    ) -> None:
        if len(events) == 0:
            return
        n = self.impressions.size
        items = events.items.astype(np.int64)
        self.impressions += np.bincount(items, minlength=n)
        if cold is not None:
            self.cold += np.bincount(items[cold], minlength=n)
        np.maximum.at(self.last_view, items, events.timestamps)
        after = events.timestamps >= self.burn_in
        if not after.any():
            return
        it, fresh, click = items[after], events.fresh[after], events.click[after]
        self.scored[0] += np.bincount(it[fresh], minlength=n)
        self.scored[1] += np.bincount(it[fresh], weights=click[fresh], minlength=n)
        self.scored[2] += np.bincount(it[~fresh], minlength=n)
        self.scored[3] += np.bincount(it[~fresh], weights=click[~fresh], minlength=n)
        self.scored[4] += np.bincount(it, weights=events.play[after], minlength=n)
        if self.keep_scores and scores is not None:
            self._parts.append(
                (
                    np.asarray(scores[after], dtype=np.float32),
                    click.astype(np.float32),
                    events.users[after].astype(np.uint32),
                    it.astype(np.uint32),
                )
            )

    def progressive(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(scores, labels, users, items)`` of the scored events."""
        if not self._parts:
            empty = np.zeros(0, dtype=np.float32)
            return empty, empty, np.zeros(0, np.uint32), np.zeros(0, np.uint32)
        cols = list(zip(*self._parts, strict=True))
        return tuple(np.concatenate(c) for c in cols)  # type: ignore[return-value]

    def engagement(self) -> dict[str, Any]:
        """Scored (post burn-in) rates."""
        fresh_imp, fresh_click, other_imp, other_click, plays = self.scored.sum(axis=1)
        imp = fresh_imp + other_imp

        def rate(a: float, b: float) -> float | None:
            return float(a / b) if b > 0 else None

        return {
            "from_seconds": self.burn_in,
            "impressions": int(imp),
            "ctr": rate(fresh_click + other_click, imp),
            "play_rate": rate(plays, imp),
            "fresh_impressions": int(fresh_imp),
            "fresh_ctr": rate(fresh_click, fresh_imp),
            "other_ctr": rate(other_click, other_imp),
        }

    def lift_arrays(self) -> dict[str, np.ndarray]:
        """Per-item arrays for :func:`embcore.claims.fresh_lift_gap`."""
        return {
            "fresh_impressions": self.scored[0],
            "fresh_clicks": self.scored[1],
            "other_impressions": self.scored[2],
            "other_clicks": self.scored[3],
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
    init_scale: float,
) -> tuple[list[str], int]:
    if scale not in SCALES:
        raise StudyConfigError(f"--scale must be one of {', '.join(SCALES)}, got {scale!r}")
    period = scale_period(scale, period)
    runs.check_seed(seed, StudyConfigError)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise StudyConfigError(f"--threads must be an integer >= 1, got {threads!r}")
    mode_list = runs.check_modes(list(modes), StudyConfigError)
    try:
        period_seconds = parse_duration(period, "--period")
    except ValueError as err:
        raise StudyConfigError(str(err)) from None
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise StudyConfigError(f"--epochs must be an integer >= 1, got {epochs!r}")
    if learning_rate is not None and not (
        isinstance(learning_rate, int | float)
        and math.isfinite(learning_rate)
        and learning_rate > 0
    ):
        raise StudyConfigError(f"--learning-rate must be a positive number, got {learning_rate!r}")
    if not (
        isinstance(init_scale, int | float)
        and not isinstance(init_scale, bool)
        and math.isfinite(init_scale)
        and init_scale > 0
    ):
        raise StudyConfigError(f"--init-scale must be a positive number, got {init_scale!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise StudyConfigError(f"dim must be an integer >= 1, got {dim!r}")
    runs.check_levels(alpha, track_rate, StudyConfigError)
    if model not in MODELS:
        raise StudyConfigError(f"--model must be one of {', '.join(MODELS)}, got {model!r}")
    return mode_list, period_seconds


def scale_period(scale: str, period: str | int | float) -> str | int | float:
    """``period``, or the scale's :data:`SCALE_PERIODS` entry when it is ``"auto"``.

    >>> scale_period("tiny", "auto"), scale_period("tiny", "2h"), scale_period("default", "auto")
    ('1h', '2h', '6h')
    """
    if isinstance(period, str) and period.strip().lower() == "auto":
        return SCALE_PERIODS.get(scale, SCALE_PERIODS["default"])
    return period


def _trainer_options(
    window: str | int | float | None, init: str | None, reset_optimizer: bool | None
) -> tuple[dict[str, Any], int | None]:
    """Trainer keyword arguments for the batch options given, and the window in seconds."""
    options: dict[str, Any] = {}
    window_seconds = None
    if window is not None:
        try:
            window_seconds = parse_duration(window, "--window")
        except ValueError as err:
            raise StudyConfigError(str(err)) from None
        options["window"] = window_seconds
    if init is not None:
        options["init"] = init
    if reset_optimizer is not None:
        options["reset_optimizer"] = bool(reset_optimizer)
    return options, window_seconds


def serving_publishes(horizon: int, period: int) -> int:
    """Publishes strictly before the horizon, i.e. publishes that serve events.

    >>> serving_publishes(72 * 3600, 6 * 3600), serving_publishes(6 * 3600, 6 * 3600)
    (11, 0)
    """
    return max(-(-int(horizon) // int(period)) - 1, 0)


def check_design(horizon: int, modes: Sequence[str], period: int) -> list[dict[str, str]]:
    """Degenerate designs that can be seen before running: a batch or hybrid mode that
    publishes fewer than :data:`MIN_PUBLISHES` times before the horizon (its serving model is
    then a handful of snapshots, the first of them empty), or a burn-in that leaves nothing to
    score. Returns flags ``{"code", "message"}`` (empty: the design is sound).

    >>> check_design(6 * 3600, ["realtime", "batch"], 6 * 3600)[0]["code"]
    'few_publishes'
    >>> check_design(72 * 3600, ["realtime", "batch"], 6 * 3600)
    []
    """
    flags = []
    published = serving_publishes(horizon, period)
    periodic = [m for m in modes if m != "realtime"]
    if periodic and published < MIN_PUBLISHES:
        flags.append(
            {
                "code": "few_publishes",
                "message": f"{'/'.join(periodic)} publishes {published} time(s) before the "
                f"{_duration_text(horizon)} horizon with period {_duration_text(period)}; "
                f"at least {MIN_PUBLISHES} are needed: use a shorter --period (at most "
                f"{_duration_text(horizon // (MIN_PUBLISHES + 1))}) or a longer --scale",
            }
        )
    if BURN_IN_PERIODS * period >= horizon:
        flags.append(
            {
                "code": "nothing_scored",
                "message": f"the burn-in ({BURN_IN_PERIODS} periods = "
                f"{_duration_text(BURN_IN_PERIODS * period)}) covers the whole horizon: "
                "no engagement or progressive validation is scored",
            }
        )
    return flags


def _duration_text(seconds: int) -> str:
    """``6h``, ``1d``, ``90m``, ``45s``."""
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _model_factory(
    model: str,
    *,
    seed: int,
    dim: int,
    init_scale: float,
    learning_rate: float | None,
    item_lifecycle: Mapping[str, Any] | None,
    ray: int | None = None,
    ray_address: str | None = None,
    n_modes: int = 1,
) -> Callable[[], Any]:
    """A zero-argument factory of the study's untrained model (every mode calls it once, so
    every mode starts from the same initial rows). Field models get the simulator's fields.
    With ``ray``: an ``embcore.distributed.ShardedModel`` of that many shards per mode (no item
    lifecycle: shards refuse them), sharing the cluster's CPUs between the modes."""
    options: dict[str, Any] = {"dim": dim, "init_scale": init_scale, "seed": seed}
    if learning_rate is not None:
        options["learning_rate"] = float(learning_rate)
    if ray is not None:
        extra = {} if model == "mf" else {"fields": list(FIELDS)}
        return runs.sharded_factory(ray, ray_address, n_modes, model=model, **extra, **options)
    if model == "mf":
        if item_lifecycle is not None:
            options["item_lifecycle"] = dict(item_lifecycle)
        return lambda: embcore.MatrixFactorization(**options)
    if item_lifecycle is not None:
        options["lifecycles"] = {"item": dict(item_lifecycle)}
    cls = embcore.FieldAwareFM if model == "ffm" else embcore.FactorizationMachine
    return lambda: cls(list(FIELDS), **options)


def _reference_scorers(world: World) -> dict[str, Callable[[Step], np.ndarray] | None]:
    """The reference policies' scorers, ``world.reference_scores(step, policy)`` (the study's
    name ``non_personalised_oracle`` is the world's ``non_personalised``)."""
    world_name = {"non_personalised_oracle": "non_personalised"}
    scorer: dict[str, Callable[[Step], np.ndarray] | None] = {}
    for name in REFERENCE_POLICIES:
        policy = world_name.get(name, name)
        scorer[name] = lambda step, policy=policy: world.reference_scores(step, policy)  # type: ignore[misc]
    return scorer


def _true_affinity(world: World, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, str]:
    """The world's true user-item affinity of each (user, item) pair, and where it comes from:
    ``world.true_affinity`` when the World has it, else taste . topic of the ground truth."""
    function = getattr(world, "true_affinity", None)
    out = np.empty(users.size, dtype=np.float64)
    for start in range(0, users.size, _AFFINITY_CHUNK):
        u = users[start : start + _AFFINITY_CHUNK].astype(np.int64)
        i = items[start : start + _AFFINITY_CHUNK].astype(np.int64)
        if function is not None:
            out[start : start + u.size] = np.asarray(function(u, i), dtype=np.float64)
        else:
            taste = world.ground_truth_users(u).taste
            topic = world.ground_truth_items(i).topic
            out[start : start + u.size] = np.einsum("ij,ij->i", taste, topic)
    source = "World.true_affinity" if function is not None else "ground truth taste . topic"
    return out, source


# --------------------------------------------------------------------------------------------
# The study


def run_study(
    out: str | os.PathLike[str] | None,
    scale: str = "default",
    seed: int = 0,
    threads: int = 1,
    modes: Sequence[str] = ("realtime", "batch"),
    period: str | int | float = "auto",
    epochs: int = 1,
    learning_rate: float | None = DEFAULT_LEARNING_RATE,
    dim: int = 32,
    init_scale: float = DEFAULT_INIT_SCALE,
    alpha: float = DEFAULT_ALPHA,
    track_rate: float = 0.25,
    model: str = "mf",
    progress: bool = True,
    parallel: bool = True,
    figures: bool = True,
    sim_overrides: Mapping[str, Any] | None = None,
    *,
    window: str | int | float | None = None,
    serving_unknown: str = "exclude",
    ray: int | None = None,
    ray_address: str | None = None,
    init: str | None = None,
    reset_optimizer: bool | None = None,
    allow_degenerate: bool = True,
    reference_policies: bool = True,
    measure: bool = True,
    n_boot: int = claims.DEFAULT_BOOTSTRAP,
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
        Batch/hybrid period (``"6h"``, ``"90m"`` or seconds), or ``"auto"`` (the default):
        the scale's :data:`SCALE_PERIODS` entry (tiny 1h, small 4h, default and large 6h).
    epochs : int
        Passes over each window at a boundary (see :class:`embcore.Trainer`).
    learning_rate : float or None
        Adagrad learning rate (:data:`DEFAULT_LEARNING_RATE`; None: the model's default).
    dim : int
        Embedding dimension.
    init_scale : float
        Scale of the random initial rows (:data:`DEFAULT_INIT_SCALE`).
    alpha : float
        Maturity level reported as the headline (0.01, 0.05 and 0.1 are always computed).
    track_rate : float
        Share of items whose trajectories are recorded (the same items in every mode).
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
    window : str or int, optional
        Batch/hybrid training window: each retrain trains on the events of this trailing window
        of event time. Default (None): one day or the period, whichever is longer
        (docs/batch-protocol.md: the shortest window of documented practice, a daily log
        partition). ``"period"``: the events since the last retrain only.
    ray, ray_address : int and str, optional
        Train every mode's model as an ``embcore.distributed.ShardedModel`` of ``ray`` shards
        on a Ray cluster (a local one, or the one at ``ray_address``); needs
        ``pip install "embcore[ray]"``. Items then have no lifecycle (shards refuse one).
    serving_unknown : {"exclude", "cold"}
        How serving ranks pool items its model has no row for: ``"exclude"`` (default) ranks
        them below every item it knows, as a retrieval index built from the served embeddings
        would (``World.serve`` still fills slots the known items cannot, e.g. while a model is
        empty); ``"cold"`` ranks them at the cold-start score (global bias), which outranks
        every learned item scored below it. docs/study.md measures both.
    init : {"warm", "scratch"}, optional
        Batch retrain start (Trainers that have it).
    reset_optimizer : bool, optional
        Reset the optimizer state at each retrain (Trainers that have it).
    allow_degenerate : bool
        Run a design :func:`check_design` objects to, flagged loudly in the metrics and the
        report (the default of the API); False refuses it with :class:`StudyConfigError`
        before anything runs (the default of the CLI, ``--allow-degenerate`` to run it).
    reference_policies : bool
        Serve the reference policies on the same steps.
    measure : bool
        Run the cross-mode protocol and the claims (``protocol``, ``claims`` in the metrics).
    n_boot : int
        Bootstrap resamples of each interval.

    Returns
    -------
    dict
        The content of ``metrics.json``.

    Raises
    ------
    StudyConfigError
        Invalid configuration, or a degenerate design with ``allow_degenerate=False`` (raised
        before anything is simulated or written).

    Examples
    --------
    >>> m = run_study(None, scale="tiny", modes=["realtime"], progress=False)
    >>> m["modes"]["realtime"]["events"] > 10_000
    True
    """
    started = time.perf_counter()
    mode_list, period_seconds = _check_config(
        scale,
        seed,
        threads,
        modes,
        period,
        epochs,
        learning_rate,
        dim,
        alpha,
        track_rate,
        model,
        init_scale,
    )
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 10:
        raise StudyConfigError(f"n_boot must be an integer >= 10, got {n_boot!r}")
    if ray is not None and (isinstance(ray, bool) or not isinstance(ray, int) or ray < 1):
        raise StudyConfigError(f"--ray must be an integer >= 1 (shards per mode), got {ray!r}")
    if serving_unknown not in ("exclude", "cold"):
        raise StudyConfigError(
            f"--serving-unknown must be 'exclude' or 'cold', got {serving_unknown!r}"
        )
    if window is None:
        window = max(DEFAULT_WINDOW_SECONDS, period_seconds)
    elif window == "period":
        window = period_seconds
    trainer_options, window_seconds = _trainer_options(window, init, reset_optimizer)
    try:
        sim_config = SimConfig.for_scale(scale, **dict(sim_overrides or {}))
    except ValueError as err:
        raise StudyConfigError(str(err)) from None
    horizon = sim_config.n_steps * sim_config.step_seconds
    design_flags = check_design(horizon, mode_list, period_seconds)
    if design_flags and not allow_degenerate:
        raise StudyConfigError(
            design_flags[0]["message"] + " (or pass --allow-degenerate to run it flagged)"
        )
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
                trainer_options=trainer_options,
                window_seconds=window_seconds,
                serving_unknown=serving_unknown,
                ray=(ray, ray_address),
                reference_policies=reference_policies,
                measure=measure,
                n_boot=n_boot,
            )
        metrics["config"]["sim_overrides"] = dict(sim_overrides or {})
        metrics["config"]["item_lifecycle"] = item_expiry(sim_config)
        metrics["flags"] = design_flags + metrics["flags"]

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
    trainer_options: Mapping[str, Any],
    window_seconds: int | None,
    serving_unknown: str,
    ray: tuple[int | None, str | None],
    reference_policies: bool,
    measure: bool,
    n_boot: int,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    world = World(sim_config, seed=seed)
    fresh_model = _model_factory(
        model,
        seed=seed,
        dim=dim,
        init_scale=init_scale,
        learning_rate=learning_rate,
        item_lifecycle=None if ray[0] is not None else item_expiry(sim_config),
        ray=ray[0],
        ray_address=ray[1],
        n_modes=len(modes),
    )
    # The analyses' in-process model (a row's initial value is a hash of (seed, id), the
    # same on any shard).
    local_model = (
        fresh_model
        if ray[0] is None
        else _model_factory(
            model,
            seed=seed,
            dim=dim,
            init_scale=init_scale,
            learning_rate=learning_rate,
            item_lifecycle=None,
        )
    )
    trainers = runs.start_modes(
        modes,
        fresh_model,
        period=period_seconds,
        epochs=epochs,
        threads=threads,
        seed=seed,
        track_rate=track_rate,
        milestones=protocol.serving_milestones() if measure else None,
        max_records=_MAX_RECORDS if measure else None,
        trainer_options=trainer_options,
    )
    horizon = world.n_steps * sim_config.step_seconds
    burn_in = BURN_IN_PERIODS * period_seconds
    engagement = {mode: _Engagement(-(-horizon // 3600)) for mode in modes}
    ledgers = {mode: _Ledger(world.n_items, burn_in, keep_scores=True) for mode in modes}
    scorers = _reference_scorers(world) if reference_policies else {}
    available = [name for name, f in scorers.items() if f is not None]
    for name in available:
        ledgers[name] = _Ledger(world.n_items, burn_in, keep_scores=False)
    serve_seconds = dict.fromkeys(modes, 0.0)
    expected = int(sim_config.expected_events) * len(modes)
    bar = runs.progress_bar(expected, f"study {scale} ({', '.join(modes)})", progress)

    def one_mode(mode: str, step: Step) -> int:
        if mode in scorers:
            scorer = scorers[mode]
            assert scorer is not None
            ledgers[mode].add(world.serve(step, scorer(step)))
            return 0
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
            unknown_items=serving_unknown,
        )
        events = world.serve(step, scores)
        serve_seconds[mode] += time.perf_counter() - began
        # Items the serving model did not know (no row: all zeros) when it scored them.
        rows = trainer.item_table(trainer.serving_model).get(events.items, default=0.0)
        cold = ~np.any(rows != 0, axis=1)
        served = trainer.consume(
            events.users,
            events.items,
            events.click,
            events.timestamps,
            context=events.columns(("creator", "tag", "hour")),
            return_scores=True,
        )
        engagement[mode].add(events)
        ledgers[mode].add(events, served, cold)
        return len(events)

    # Modes are independent given the step (serve is a pure function, each mode owns its
    # trainer, monitor and counters); argpartition, the matmul and training release the GIL.
    with bar, runs.ModePool([*modes, *available], parallel) as pool:
        for step in world.steps():
            bar.update(sum(pool.map(one_mode, step)))
        for trainer in trainers.values():
            trainer.flush(horizon)
    per_mode, results = runs.analyse_modes(trainers, alpha, seed, local_model)
    for mode in modes:
        per_mode[mode]["engagement"] = engagement[mode].to_dict()
        per_mode[mode]["engagement"]["scored"] = ledgers[mode].engagement()
        ledger = ledgers[mode]
        per_mode[mode]["engagement"]["cold_impression_share"] = finite(
            float(ledger.cold.sum() / max(ledger.impressions.sum(), 1))
        )
        per_mode[mode]["engagement"]["items_shown"] = int((ledger.impressions > 0).sum())
        per_mode[mode]["engagement"]["items_shown_only_cold"] = int(
            ((ledger.impressions > 0) & (ledger.cold == ledger.impressions)).sum()
        )
        per_mode[mode]["serve_seconds"] = round(serve_seconds[mode], 3)
    first = trainers[modes[0]]
    window_used = max(
        (int(getattr(t, "window", None) or t.period) for t in trainers.values()),
        default=period_seconds,
    )
    metrics: dict[str, Any] = {
        "config": {
            "scale": scale,
            "seed": seed,
            "modes": modes,
            "period_seconds": period_seconds,
            "window_seconds": window_seconds if window_seconds is not None else window_used,
            "init": trainer_options.get("init", "warm"),
            "serving_unknown": serving_unknown,
            "ray_shards": ray[0],
            "reset_optimizer": trainer_options.get("reset_optimizer", False),
            "epochs": epochs,
            "learning_rate": float(first.model.optimizer["learning_rate"]),
            "optimizer": "adagrad",
            "dim": dim,
            "init_scale": init_scale,
            "alpha": alpha,
            "track_rate": track_rate,
            "threads": threads,
            "model": model,
            "fields": list(first.fields),
            "item_embedding": _item_embedding_text(first),
            "monitor": "embcore.Monitor",
            "milestones": (
                f"every count 1..{protocol.DENSE_VIEWS}, then about ten per decade"
                if measure
                else "the monitor's default grid"
            ),
            "horizon_seconds": horizon,
            "burn_in_seconds": burn_in,
            "n_boot": n_boot,
            "sim": {
                "n_users": sim_config.n_users,
                "requests_per_day": sim_config.requests_per_day,
                "items_per_day": sim_config.items_per_day,
                "max_item_age_seconds": sim_config.max_item_age_seconds,
                "fresh_seconds": sim_config.fresh_seconds,
                "step_seconds": sim_config.step_seconds,
                "k": sim_config.k,
                "exploration": sim_config.exploration,
            },
            "versions": runs.versions(),
        },
        "modes": per_mode,
        "comparison": runs.comparison(per_mode),
        "learning": _learning(world, modes, ledgers, scorers),
        "flags": [],
    }
    for mode, trainer in trainers.items():
        dropped = int(trainer.monitor.summary().get("dropped_records", 0) or 0)
        if dropped:
            metrics["flags"].append(
                {
                    "code": "records_dropped",
                    "message": f"{mode}: the monitor dropped {dropped:,d} trajectory records "
                    "(its record budget is full): lower --track-rate",
                }
            )
        if mode != "realtime":
            published = serving_publishes(horizon, trainer.period)
            per_mode[mode]["serving_publishes"] = published
    if measure:
        settle = window_used + period_seconds
        metrics["config"]["settle_seconds"] = settle
        proto, proto_results, proto_flags = _measure(
            world, trainers, ledgers, local_model, horizon, settle, alpha, seed, n_boot
        )
        metrics["protocol"] = proto
        metrics["claims"] = _claims(metrics, proto_results, ledgers, seed, n_boot)
        metrics["flags"] += proto_flags
        metrics["comparison"].update(_protocol_comparison(metrics))
        for mode in modes:
            results[mode]["protocol"] = proto_results.get(mode, {})
    return metrics, results


def _learning(
    world: World,
    modes: Sequence[str],
    ledgers: Mapping[str, _Ledger],
    scorers: Mapping[str, Callable[[Step], np.ndarray] | None],
) -> dict[str, Any]:
    """Do the models learn? Progressive AUC and log-loss of every mode on its own scored
    events, the correlation of its scores with the true affinity, and CTR beside the reference
    policies on the same world."""
    out: dict[str, Any] = {"modes": {}, "reference_policies": {}}
    source = None
    for mode in modes:
        scores, labels, users, items = ledgers[mode].progressive()
        rate = float(labels.mean()) if labels.size else None
        constant = None
        if rate is not None and 0 < rate < 1:
            constant = float(-(rate * math.log(rate) + (1 - rate) * math.log1p(-rate)))
        correlation = None
        if scores.size > 2:
            affinity, source = _true_affinity(world, users, items)
            if np.std(scores) > 0 and np.std(affinity) > 0:
                correlation = float(np.corrcoef(scores.astype(np.float64), affinity)[0, 1])
        out["modes"][mode] = {
            "events": int(scores.size),
            "auc": validation.auc(scores, labels) if scores.size else None,
            "logloss": validation.logloss(scores, labels) if scores.size else None,
            "logloss_constant": constant,
            "score_affinity_correlation": correlation,
            "ctr": ledgers[mode].engagement()["ctr"],
        }
    for name, scorer in scorers.items():
        if scorer is None:
            out["reference_policies"][name] = {
                "available": False,
                "note": "not available: this World has no reference_scores (issue 13 part A)",
            }
        else:
            eng = ledgers[name].engagement()
            out["reference_policies"][name] = {"available": True, **eng}
    out["affinity_source"] = source
    return out


def _measure(
    world: World,
    trainers: Mapping[str, Trainer],
    ledgers: Mapping[str, _Ledger],
    fresh_model: Callable[[], Model],
    horizon: int,
    settle: int,
    alpha: float,
    seed: int,
    n_boot: int,
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, str]]]:
    """The cross-mode protocol (:mod:`embcore.protocol`): population, maturity, update peak,
    norms on common items. Returns ``(metrics, per-mode results, flags)``."""
    modes = list(trainers)
    flags: list[dict[str, str]] = []
    grids, references = {}, {}
    for mode, trainer in trainers.items():
        traj = runs.with_initial_rows(
            analysis.Trajectories.from_monitor(trainer.monitor), trainer, fresh_model
        )
        served: Any = trainer.serving_model
        if not isinstance(served, embcore._core.FieldModel):
            served = served.gather()  # a ShardedModel's rows in one process
        meta = trainer.item_table(served).metadata()
        grids[mode] = protocol.ServingGrid.build(traj, (meta["ids"], meta["interactions"]))
        references[mode] = trainer.item_embeddings(served)
    tracked = protocol.common_ids(*(g.item_ids for g in grids.values()))
    impressions = np.stack([ledgers[m].impressions for m in modes])
    last_view = np.max(np.stack([ledgers[m].last_view for m in modes]), axis=0)
    exposure = impressions.sum(axis=0).astype(np.int64)
    life_end = np.maximum(last_view[tracked.astype(np.int64)], world.item_end_times(tracked))
    # settle = window + period (the caller's); settled() adds the two.
    is_settled = protocol.settled(life_end, horizon=horizon, window=settle, period=0)
    population = tracked[is_settled]
    alphas = tuple(sorted({*ALPHAS, alpha}))
    per_mode: dict[str, Any] = {}
    results: dict[str, Any] = {}
    for mode in modes:
        grid = grids[mode].subset(population)
        # e*: the serving row at the horizon (an evicted item: its last recorded row).
        reference = _rows_of(*references[mode], population, grid.last_rows())
        points = protocol.maturity_points(grid, reference, alphas)
        sums, views = protocol.update_curve(grid)
        curve = protocol.curve_summary(sums, views, claims.MIN_PEAK_ITEMS)
        maturity = {
            criterion: {f"{a:g}": protocol.maturity_summary(points, a, criterion) for a in alphas}
            for criterion in ("relative", "absolute")
        }
        per_mode[mode] = {
            "maturity": {
                "headline": maturity["relative"][f"{alpha:g}"],
                "by_criterion": maturity,
            },
            "update_curve": curve,
        }
        results[mode] = {"points": points, "sums": sums, "views": views, "curve": curve}
        head_abs = maturity["absolute"][f"{alpha:g}"]
        if (head_abs["mature_at_zero_share"] or 0) > MATURE_AT_ZERO_LIMIT:
            flags.append(
                {
                    "code": "mature_at_zero",
                    "message": f"{mode}: {100 * head_abs['mature_at_zero_share']:.0f}% of "
                    f"items are within α = {alpha:g} of their reference at 0 interactions "
                    "(absolute criterion): the initial rows decide the absolute maturity",
                }
            )
        for criterion, summary in (
            ("relative", maturity["relative"][f"{alpha:g}"]),
            ("absolute", head_abs),
        ):
            if summary["median_interactions"] == 0:
                flags.append(
                    {
                        "code": "median_zero",
                        "message": f"{mode}: the {criterion} maturity median is 0 interactions",
                    }
                )
    if population.size == 0:
        flags.append(
            {
                "code": "no_settled_items",
                "message": "no tracked item present in every mode ended its life "
                f"{_duration_text(settle)} (window + period) before the horizon: maturity and "
                "the learning peak have no settled reference",
            }
        )
    elif population.size < MIN_POPULATION:
        flags.append(
            {
                "code": "small_population",
                "message": f"only {population.size} settled items common to every mode "
                f"(fewer than {MIN_POPULATION}): the intervals are wide",
            }
        )

    # Norms and popularity on the items every mode's serving table holds.
    tables = {m: references[m] for m in modes}
    common = protocol.common_ids(*(ids for ids, _ in tables.values()))
    norms: dict[str, Any] = {}
    norm_values: dict[str, np.ndarray] = {}
    popularity = exposure[common.astype(np.int64)]
    for mode in modes:
        ids, vectors = tables[mode]
        matrix = _rows_of(ids, vectors, common, np.zeros((common.size, vectors.shape[1])))
        norm_values[mode] = np.linalg.norm(matrix.astype(np.float64), axis=1)
        result = analysis.norm_popularity(
            (common, matrix),
            (common, popularity),
            users=trainers[mode].user_embeddings(),
            seed=seed,
        )
        norms[mode] = {
            "median": finite(float(np.median(norm_values[mode]))) if common.size else None,
            "p99": finite(result.norms.p99),
            "spearman_exposure": finite(result.spearman),
            "retrieval": None if result.retrieval is None else result.retrieval.to_dict(),
        }
    by_decile = None
    if "realtime" in modes and "batch" in modes and common.size >= 20:
        deciles = claims.decile_norm_ratios(
            norm_values["realtime"], norm_values["batch"], popularity, n_boot=n_boot, seed=seed
        )
        deciles.pop("samples")
        by_decile = {k: finite(v) for k, v in deciles.items()}
    results["_norms"] = {"values": norm_values, "popularity": popularity}
    results["_population"] = population
    metrics = {
        "population": {
            "tracked_in_every_mode": int(tracked.size),
            "tracked_per_mode": {m: len(g) for m, g in grids.items()},
            "settled": int(population.size),
            "settle_seconds": settle,
            "definition": "tracked items with a view in every mode whose life (last view, or "
            "leaving the candidate pool, whichever is later) ended at least window + period "
            "before the horizon",
        },
        "modes": per_mode,
        "norms": {
            "common_items": int(common.size),
            "items_per_mode": {m: int(tables[m][0].size) for m in modes},
            "popularity": "exposure: the item's impressions in the world, summed over the "
            "run's modes",
            "modes": norms,
            "batch_over_realtime_by_decile": by_decile,
        },
        "update_curve_bins": protocol.bin_labels(),
    }
    return metrics, results, flags


def _rows_of(
    ids: np.ndarray, vectors: np.ndarray, wanted: np.ndarray, fallback: np.ndarray
) -> np.ndarray:
    """Rows of ``wanted`` ids from ``(ids, vectors)``; ``fallback`` rows where an id is absent."""
    out = np.array(fallback, dtype=np.float32, copy=True)
    if ids.size == 0 or wanted.size == 0:
        return out
    order = np.argsort(ids)
    pos = np.minimum(np.searchsorted(ids[order], wanted), ids.size - 1)
    found = ids[order][pos] == wanted
    out[found] = vectors[order][pos[found]]
    return out


def _claims(
    metrics: Mapping[str, Any],
    proto: Mapping[str, Any],
    ledgers: Mapping[str, _Ledger],
    seed: int,
    n_boot: int,
) -> list[dict[str, Any]]:
    """Every claim of :data:`embcore.claims.CLAIMS` checked on this run."""
    modes = metrics["config"]["modes"]
    specs = claims.CLAIMS
    if "realtime" not in modes or "batch" not in modes:
        missing = [
            claims.unavailable(s, "needs the realtime and the batch mode") for s in specs.values()
        ]
        return [{"key": c.spec.key, **c.to_dict(), "measured": c.measured_text()} for c in missing]
    alpha = metrics["config"]["alpha"]
    rt, b = proto["realtime"], proto["batch"]
    checks = [
        claims.maturity_ratio(
            rt["points"].relative[alpha], b["points"].relative[alpha], n_boot=n_boot, seed=seed
        ),
        claims.peak_shift(
            (rt["sums"], rt["views"]), (b["sums"], b["views"]), n_boot=n_boot, seed=seed
        ),
    ]
    norm = proto["_norms"]
    checks.append(
        claims.norm_ratio(
            norm["values"]["realtime"], norm["values"]["batch"], n_boot=n_boot, seed=seed
        )
    )
    checks.append(
        claims.popular_norm_ratio(
            norm["values"]["realtime"],
            norm["values"]["batch"],
            norm["popularity"],
            n_boot=n_boot,
            seed=seed,
        )
    )
    shown = (ledgers["realtime"].impressions + ledgers["batch"].impressions) > 0
    rt_lift = {k: v[shown] for k, v in ledgers["realtime"].lift_arrays().items()}
    b_lift = {k: v[shown] for k, v in ledgers["batch"].lift_arrays().items()}
    checks.append(claims.fresh_lift_gap(rt_lift, b_lift, n_boot=n_boot, seed=seed))
    return [{"key": c.spec.key, **c.to_dict(), "measured": c.measured_text()} for c in checks]


def _protocol_comparison(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Headline protocol numbers added to ``comparison``."""
    by_key = {c["key"]: c for c in metrics.get("claims", [])}

    def estimate(key: str) -> Any:
        return by_key.get(key, {}).get("estimate")

    return {
        "protocol_maturity_ratio_realtime_over_batch": estimate("maturity"),
        "protocol_peak_shift_bins_batch_minus_realtime": estimate("peak"),
        "protocol_norm_median_ratio_batch_over_realtime": estimate("norms"),
        "protocol_popular_norm_ratio_top_over_bottom": estimate("norms_popularity"),
        "protocol_fresh_lift_gap": estimate("fresh_lift"),
    }


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
# Hyper-parameter selection and the grid


def run_selection(
    out: str | os.PathLike[str] | None,
    scale: str = "default",
    seed: int = SELECTION_SEED,
    learning_rates: Sequence[float] = SELECTION_LEARNING_RATES,
    init_scales: Sequence[float] = SELECTION_INIT_SCALES,
    model: str = "mf",
    progress: bool = True,
    period: str | int | float = "auto",
) -> dict[str, Any]:
    """Select the learning rate and init scale by the real-time model's progressive log-loss
    (after the burn-in) on world ``seed`` — stated in advance, not a study result.

    Every pair of the grid runs the real-time mode alone (no protocol, no figures); the pair
    with the lowest log-loss wins. ``period`` only sets the burn-in (two periods), as in the
    study (``"auto"``: the scale's :data:`SCALE_PERIODS` entry). Writes the table and the
    choice as ``metrics.json`` to ``out``.

    >>> sel = run_selection(None, scale="tiny", learning_rates=[0.05], init_scales=[0.01],
    ...                     progress=False, period="1h")
    >>> sel["chosen"]
    {'learning_rate': 0.05, 'init_scale': 0.01}
    """
    started = time.perf_counter()
    runs.check_seed(seed, StudyConfigError)
    output = runs.OutputDirectory(out, StudyConfigError, replaces="an earlier selection")
    rows = []
    with output:
        for lr in learning_rates:
            for init_scale in init_scales:
                m = run_study(
                    None,
                    scale=scale,
                    seed=seed,
                    modes=["realtime"],
                    period=period,
                    learning_rate=float(lr),
                    init_scale=float(init_scale),
                    model=model,
                    progress=progress,
                    figures=False,
                    reference_policies=False,
                    measure=False,
                )
                learn = m["learning"]["modes"]["realtime"]
                rows.append(
                    {
                        "learning_rate": float(lr),
                        "init_scale": float(init_scale),
                        "logloss": learn["logloss"],
                        "logloss_constant": learn["logloss_constant"],
                        "auc": learn["auc"],
                        "ctr": learn["ctr"],
                    }
                )
        scored = [r for r in rows if r["logloss"] is not None]
        if not scored:
            raise StudyConfigError("no selection run scored any event: use a longer --scale")
        best = min(scored, key=lambda r: r["logloss"])
        selection = {
            "criterion": "lowest progressive log-loss of the real-time model after the burn-in",
            "scale": scale,
            "seed": seed,
            "model": model,
            "rows": rows,
            "chosen": {"learning_rate": best["learning_rate"], "init_scale": best["init_scale"]},
            "versions": runs.versions(),
        }
        output.finish(selection, started)
    return selection


def _grid_cells() -> list[dict[str, Any]]:
    return [
        {"model": model, "period": period, "window": window, "epochs": epochs}
        for model in GRID["model"]
        for period in GRID["period"]
        for window in GRID["window"]
        for epochs in GRID["epochs"]
    ]


def run_grid(
    out: str | os.PathLike[str],
    scale: str = "default",
    seed: int = 0,
    cells: Sequence[int] | None = None,
    progress: bool = True,
    n_boot: int = claims.DEFAULT_BOOTSTRAP,
) -> dict[str, Any]:
    """Run the fixed grid :data:`GRID` (every cell a study in ``out/<cell>/``, flagged rather
    than refused when degenerate) and write ``out/metrics.json`` with one row per cell.

    ``cells`` picks cells by index (default: all 24).
    """
    started = time.perf_counter()
    all_cells = _grid_cells()
    chosen = list(range(len(all_cells))) if cells is None else list(cells)
    output = runs.OutputDirectory(out, StudyConfigError, replaces="an earlier grid")
    rows = []
    with output:
        assert output.staging is not None
        for index in chosen:
            cell = all_cells[index]
            name = f"{cell['model']}-p{cell['period']}-w{cell['window']}-e{cell['epochs']}"
            row: dict[str, Any] = {"cell": name, **cell}
            window = cell["period"] if cell["window"] == "period" else cell["window"]
            m = run_study(
                output.staging / name,
                scale=scale,
                seed=seed,
                period=cell["period"],
                epochs=cell["epochs"],
                model=cell["model"],
                window=window,
                progress=progress,
                figures=False,
                allow_degenerate=True,
                n_boot=n_boot,
            )
            row["status"] = "ran"
            row["flags"] = [f["code"] for f in m["flags"]]
            row["claims"] = {
                c["key"]: {
                    "estimate": c["estimate"],
                    "interval": c["interval"],
                    "verdict": c["verdict"],
                }
                for c in m.get("claims", [])
            }
            row["learning"] = {
                mode: {k: v[k] for k in ("auc", "logloss", "ctr")}
                for mode, v in m["learning"]["modes"].items()
            }
            rows.append(row)
        grid = {
            "grid": {k: list(v) for k, v in GRID.items()},
            "scale": scale,
            "seed": seed,
            "cells": rows,
            "versions": runs.versions(),
        }
        output.finish(grid, started)
    return grid


# --------------------------------------------------------------------------------------------
# CLI entry point


def run(args: argparse.Namespace) -> int:
    """Entry point of ``embcore study`` (arguments declared in :func:`add_parser`).

    Returns 0 on success and 2 for invalid options (message on stderr, nothing left behind).
    """
    if args.select:

        def select() -> dict[str, Any]:
            return run_selection(
                args.out,
                scale=args.scale,
                seed=SELECTION_SEED if args.seed is None else args.seed,
                model=args.model,
                progress=not args.no_progress,
                period=args.period,
            )

        return runs.run_command("study", select, StudyConfigError, _selection_text)
    if args.grid:

        def grid() -> dict[str, Any]:
            return run_grid(
                args.out,
                scale=args.scale,
                seed=0 if args.seed is None else args.seed,
                progress=not args.no_progress,
            )

        return runs.run_command(
            "study", grid, StudyConfigError, lambda g: _grid_text(g, Path(args.out))
        )

    def call() -> dict[str, Any]:
        options = runs.run_options(args)
        if options["seed"] is None:
            options["seed"] = 0
        return run_study(
            args.out,
            scale=args.scale,
            epochs=args.epochs,
            model=args.model,
            window=args.window,
            serving_unknown=args.serving_unknown,
            ray=args.ray,
            ray_address=args.ray_address,
            init=args.init,
            reset_optimizer=True if args.reset_optimizer else None,
            allow_degenerate=args.allow_degenerate,
            **options,
            **runs.given_options(
                args, ("init_scale", "alpha", "track_rate", "dim", "learning_rate")
            ),
        )

    return runs.run_command(
        "study", call, StudyConfigError, lambda metrics: _summary_text(metrics, Path(args.out))
    )


_SUMMARY_COLUMNS: tuple[reporting.Column, ...] = (
    ("events", ("events",), lambda v: f"{v:>9,d}"),
    ("median maturity (own items)", ("maturity", "median_interactions"), str),
    ("norm p99", ("norm_quantiles", "p99"), lambda v: _fmt(v)),
    ("ctr", ("engagement", "ctr"), lambda v: _fmt(v)),
    ("scored ctr", ("engagement", "scored", "ctr"), lambda v: _fmt(v)),
)


def _summary_text(metrics: Mapping[str, Any], out: Path) -> str:
    lines = [f"embcore study: {reporting.wrote_text(out)}"]
    lines += reporting.summary_lines(metrics, _SUMMARY_COLUMNS)
    for mode, m in metrics.get("learning", {}).get("modes", {}).items():
        lines.append(
            f"  {mode:9s} progressive AUC {_fmt(m['auc'])}, log-loss {_fmt(m['logloss'])} "
            f"(constant {_fmt(m['logloss_constant'])}), corr(score, affinity) "
            f"{_fmt(m['score_affinity_correlation'])}"
        )
    for c in metrics.get("claims", []):
        # The claim's note says why an estimate sits where it does (a median never
        # reached, the two lifts behind a difference).
        note = f" ({c['note']})" if c.get("note") else ""
        lines.append(
            f"  claim {c['key']}: {c['measured']} (band {c['band_text']}): {c['verdict']}{note}"
        )
    for flag in metrics.get("flags", []):
        lines.append(f"  FLAG {flag['code']}: {flag['message']}")
    lines.append(f"  {metrics['runtime_seconds']} s")
    return "\n".join(lines)


def _selection_text(selection: Mapping[str, Any]) -> str:
    lines = [f"embcore study --select ({selection['criterion']}, seed {selection['seed']}):"]
    for r in selection["rows"]:
        lines.append(
            f"  lr {r['learning_rate']:<6g} init {r['init_scale']:<6g} log-loss "
            f"{_fmt(r['logloss'])}  AUC {_fmt(r['auc'])}  CTR {_fmt(r['ctr'])}"
        )
    chosen = selection["chosen"]
    lines.append(
        f"  chosen: learning_rate {chosen['learning_rate']:g}, init_scale {chosen['init_scale']:g}"
    )
    return "\n".join(lines)


def _grid_text(grid: Mapping[str, Any], out: Path) -> str:
    lines = [f"embcore study --grid: wrote {out / 'metrics.json'}"]
    for row in grid["cells"]:
        verdicts = ", ".join(f"{k} {v['verdict']}" for k, v in row.get("claims", {}).items())
        lines.append(f"  {row['cell']:28s} {row['status']}  {verdicts}")
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
    study.add_argument("--seed", type=int, default=None, help="world seed (default 0; --select: 1)")
    study.add_argument("--threads", type=positive_int, default=1)
    study.add_argument("--modes", type=mode_list, default=["realtime", "batch"])
    study.add_argument(
        "--model",
        default="mf",
        choices=["mf", "ffm", "fm"],
        help="mf: matrix factorization; ffm: field-aware FM over user, item, creator, tag, hour "
        "(the paper's model); fm: factorisation machine over the same fields",
    )
    study.add_argument(
        "--period",
        type=duration_or_auto,
        default="auto",
        help="batch/hybrid retraining period (6h, 90m, 1.5d or seconds) or auto: the scale's "
        "(tiny 1h, small 4h, default and large 6h; at least 4 publishes before the horizon) "
        "(default: auto)",
    )
    study.add_argument("--epochs", type=positive_int, default=1)
    study.add_argument(
        "--window",
        type=duration_or_period,
        default=None,
        help="batch/hybrid training window, e.g. 1d or 3d, or 'period' for the events since the "
        "last retrain (default: 1d or the period, whichever is longer)",
    )
    add_ray_flags(study)
    study.add_argument(
        "--serving-unknown",
        default="exclude",
        choices=["exclude", "cold"],
        help="pool items the serving model has no row for: ranked below every known item "
        "(exclude) or at the cold-start score (cold)",
    )
    study.add_argument(
        "--init",
        default=None,
        choices=["warm", "scratch"],
        help="batch retrain start: warm continues the current model, scratch starts from new "
        "rows (default: warm)",
    )
    study.add_argument(
        "--reset-optimizer", action="store_true", help="reset the optimizer at each retrain"
    )
    study.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help=f"Adagrad step size (default {DEFAULT_LEARNING_RATE})",
    )
    study.add_argument(
        "--dim", type=positive_int, default=None, help="embedding width (default 32)"
    )
    study.add_argument(
        "--init-scale",
        type=float,
        default=None,
        help=f"initial rows uniform in [-s, s] (default {DEFAULT_INIT_SCALE})",
    )
    study.add_argument(
        "--alpha",
        type=float,
        default=None,
        help=f"maturity threshold on the cosine distance, in (0, 2) (default {DEFAULT_ALPHA})",
    )
    study.add_argument(
        "--track-rate",
        type=float,
        default=None,
        help="share of items whose trajectories are kept, in (0, 1] (default 0.25)",
    )
    study.add_argument(
        "--allow-degenerate",
        action="store_true",
        help="run a degenerate design (e.g. fewer than 4 publishes), flagged in the report",
    )
    what = study.add_mutually_exclusive_group()
    what.add_argument(
        "--select",
        action="store_true",
        help="select learning rate and init scale by real-time progressive log-loss (seed 1)",
    )
    what.add_argument(
        "--grid", action="store_true", help="run the fixed grid of batch configurations"
    )
    study.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    return study
