"""``embcore study``: real-time vs batch (vs hybrid) embeddings on one simulated platform.

One :class:`~embcore.sim.World` is stepped once; at every step each mode scores the live pool
with its serving view, the world serves that mode's feeds (common random numbers: requests,
pools, exploration and the click/play coins are shared, so differences come from the scores
alone) and the mode trains on its own events. At the end every mode's recorded trajectories and
tables are analysed (maturity, learning peak, norms vs popularity) and written, with engagement,
to ``DIR/metrics.json``, a self-contained ``DIR/report.html`` and one PNG per figure.

Design notes
------------
* Output is written into a temporary directory next to ``DIR`` and renamed into place at the
  end, so an interrupted or failed run never leaves a complete-looking directory behind. An
  existing ``DIR`` is replaced only if it is empty or holds an earlier study (a
  ``metrics.json``); anything else is refused rather than deleted.
* Until the Rust ``embcore.Monitor`` is available the study records trajectories with
  :class:`TableRecorder`: tracked items' rows after every step (real-time, hybrid) and at every
  publish (batch, hybrid). That is a coarser grid than per-interaction milestones: a real-time
  item's n is known only at step ends (300 s of event time).
* OpenBLAS is limited to one thread while the study runs: the per-step matmuls are small
  (~260 x 32 x 4,000) and a second BLAS thread on a busy machine makes them 10-20x slower.

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
import contextlib
import ctypes
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import embcore
from embcore import analysis
from embcore.modes import MODES, Model, Trainer, parse_duration
from embcore.sim import FIELDS, Events, SimConfig, Step, World

__all__ = ["TableRecorder", "learning_curve", "run", "run_study"]

SCALES = ("tiny", "small", "default", "large")
MODELS = ("mf", "ffm", "fm")
"""Models the study trains: matrix factorization, field-aware FM, FM."""
DEFAULT_ALPHA = 0.05
ALPHAS = (0.01, 0.05, 0.1)
# Engagement by item age: bucket upper edges in hours (the last bucket is open).
AGE_EDGES_HOURS = (1, 3, 6, 12, 24, 48)
_MAX_CURVE_POINTS = 80


class StudyConfigError(ValueError):
    """A study option is invalid (the CLI exits with code 2)."""


# --------------------------------------------------------------------------------------------
# Trajectory recording (until embcore.Monitor lands)


class TableRecorder:
    """Records rows of tracked items from a table, after steps and at publishes.

    A Python stand-in for the recording half of ``embcore.Monitor``: an item is tracked when a
    hash of its id falls below ``track_rate``; :meth:`observe` appends one record per tracked
    item whose interaction count changed since its last record, :meth:`record_publish` does the
    same for a published table. :meth:`trajectories` returns the dict
    :meth:`embcore.analysis.Trajectories.from_monitor` reads.

    Parameters
    ----------
    dim : int
        Embedding dimension.
    track_rate : float
        Share of items tracked, in (0, 1].

    Examples
    --------
    >>> import numpy as np, embcore
    >>> model = embcore.MatrixFactorization(dim=2, seed=0)
    >>> one = np.array([3], dtype=np.uint64)
    >>> rec = TableRecorder(2, track_rate=1.0)
    >>> _ = model.train(one, one, np.array([1.0], np.float32))
    >>> rec.observe(model.items, 60)
    1
    >>> rec.observe(model.items, 120)  # count unchanged: nothing new
    0
    >>> rec.trajectories()["counts"].tolist()
    [1]
    """

    def __init__(self, dim: int, track_rate: float = 0.25) -> None:
        if not (isinstance(track_rate, int | float) and 0.0 < float(track_rate) <= 1.0):
            raise ValueError(f"track_rate must be in (0, 1], got {track_rate!r}")
        self.dim = int(dim)
        self.track_rate = float(track_rate)
        self._known_ids = np.zeros(0, dtype=np.uint64)
        self._known_counts = np.zeros(0, dtype=np.int64)
        self._parts: list[tuple[Any, Any, Any, Any]] = []

    def tracked(self, ids: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
        """Whether each id is tracked (a fixed hash of the id, so every mode tracks the same)."""
        mixed = ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        mixed ^= mixed >> np.uint64(29)
        mixed *= np.uint64(0xBF58476D1CE4E5B9)
        unit = (mixed >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
        return unit < self.track_rate

    def observe(self, table: embcore.EmbeddingTable, timestamp: int) -> int:
        """Record tracked rows of ``table`` whose interaction count changed; returns how many."""
        meta = table.metadata()
        ids = meta["ids"]
        counts = meta["interactions"].astype(np.int64)
        keep = (counts > 0) & self.tracked(ids)
        if not keep.any():
            return 0
        ids, counts = ids[keep], counts[keep]
        order = np.argsort(ids)
        ids, counts = ids[order], counts[order]
        if self._known_ids.size:
            where = np.minimum(np.searchsorted(self._known_ids, ids), self._known_ids.size - 1)
            changed = (self._known_ids[where] != ids) | (self._known_counts[where] != counts)
        else:
            changed = np.ones(ids.size, dtype=bool)
        if not changed.any():
            return 0
        new_ids, new_counts = ids[changed], counts[changed]
        rows = table.get(new_ids)
        self._parts.append(
            (new_ids, new_counts, np.full(new_ids.size, timestamp, dtype=np.int64), rows)
        )
        self._known_ids, self._known_counts = ids, counts
        return int(new_ids.size)

    def record_publish(self, table: embcore.EmbeddingTable, timestamp: int) -> None:
        """Record a published table (same as :meth:`observe`)."""
        self.observe(table, timestamp)

    def trajectories(self) -> dict[str, npt.NDArray[Any]]:
        """All records: ``ids``, ``counts``, ``timestamps``, ``rows`` (float32[n, dim])."""
        if not self._parts:
            return {
                "ids": np.zeros(0, dtype=np.uint64),
                "counts": np.zeros(0, dtype=np.int64),
                "timestamps": np.zeros(0, dtype=np.int64),
                "rows": np.zeros((0, self.dim), dtype=np.float32),
            }
        return {
            name: np.concatenate([part[k] for part in self._parts])
            for k, name in enumerate(("ids", "counts", "timestamps", "rows"))
        }


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


def _make_monitor(dim: int, track_rate: float, seed: int) -> tuple[Any, bool]:
    """``(monitor, is_rust)``: ``embcore.Monitor`` when built, else a :class:`TableRecorder`.

    Every mode gets the same ``seed``, so every mode tracks the same item ids.
    """
    monitor_class = getattr(embcore._core, "Monitor", None)
    if monitor_class is not None:
        return monitor_class(sample_rate=track_rate, seed=seed), True
    return TableRecorder(dim, track_rate=track_rate), False


# --------------------------------------------------------------------------------------------
# Engagement


class _Engagement:
    """Click and play counts per mode: overall, fresh, explored, by item age, by hour."""

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
        return _finite(rate)

    def to_dict(self) -> dict[str, Any]:
        r = self._rate
        labels = []
        low = 0
        for edge in AGE_EDGES_HOURS:
            labels.append(f"{low}-{edge}h")
            low = edge
        labels.append(f">={low}h")
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
                "buckets": labels,
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


def _finite(value: Any) -> Any:
    """Plain Python numbers for JSON: NaN/inf become None; arrays become lists."""
    if isinstance(value, np.ndarray):
        return [_finite(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


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
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise StudyConfigError(f"--seed must be an integer in [0, 2**63), got {seed!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise StudyConfigError(f"--threads must be an integer >= 1, got {threads!r}")
    mode_list = list(modes)
    if not mode_list:
        raise StudyConfigError("--modes must name at least one mode, e.g. realtime,batch")
    unknown = [m for m in mode_list if m not in MODES]
    if unknown:
        raise StudyConfigError(
            f"unknown mode(s) {', '.join(map(repr, unknown))}: choose from {', '.join(MODES)}"
        )
    if len(set(mode_list)) != len(mode_list):
        raise StudyConfigError(f"--modes lists a mode twice: {','.join(mode_list)}")
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
    if not (isinstance(alpha, int | float) and 0 < alpha < 2):
        raise StudyConfigError(f"alpha must be in (0, 2), got {alpha!r}")
    if not (isinstance(track_rate, int | float) and 0 < track_rate <= 1):
        raise StudyConfigError(f"track_rate must be in (0, 1], got {track_rate!r}")
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


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Limit numpy's OpenBLAS to one thread for the duration (best effort, restored after)."""
    setter = getter = None
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
        for path in sorted(paths):
            lib = ctypes.CDLL(path)
            for suffix in ("scipy_openblas_%s_num_threads64_", "openblas_%s_num_threads"):
                if hasattr(lib, suffix % "set") and hasattr(lib, suffix % "get"):
                    setter, getter = getattr(lib, suffix % "set"), getattr(lib, suffix % "get")
                    break
            if setter is not None:
                break
    if setter is None or getter is None:
        yield
        return
    getter.restype = ctypes.c_int
    before = int(getter())
    setter(ctypes.c_int(1))
    try:
        yield
    finally:
        setter(ctypes.c_int(before))


# --------------------------------------------------------------------------------------------
# Output directory


def _prepare_output(out: Path) -> Path:
    """Check ``out`` can be written and return a fresh temporary directory beside it."""
    if out.exists() and not out.is_dir():
        raise StudyConfigError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "metrics.json").exists():
        raise StudyConfigError(
            f"--out {out} is a non-empty directory that does not hold an earlier study; "
            "choose another path or empty it"
        )
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    except OSError as err:
        raise StudyConfigError(f"--out {out} cannot be written: {err.strerror or err}") from None


def _commit_output(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` directory to ``out`` (replacing an earlier study)."""
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp made it private; give it the usual permissions
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Analysis of one mode


def _downsample_curve(counts: Any, *columns: Any, weights: Any) -> dict[str, Any]:
    """Log-spaced bins over counts (weighted means) so long curves stay small in JSON."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.size <= _MAX_CURVE_POINTS:
        return {"counts": counts.astype(np.int64).tolist(), "values": [_finite(c) for c in columns]}
    edges = np.unique(np.geomspace(counts.min(), counts.max() + 1, _MAX_CURVE_POINTS + 1).round())
    bucket = np.searchsorted(edges, counts, side="right") - 1
    w = np.asarray(weights, dtype=np.float64)
    total = np.bincount(bucket, weights=w)
    used = total > 0
    centre = np.bincount(bucket, weights=w * counts)[used] / total[used]
    values = [
        _finite(
            np.bincount(bucket, weights=w * np.asarray(c, dtype=np.float64))[used] / total[used]
        )
        for c in columns
    ]
    return {"counts": centre.round().astype(np.int64).tolist(), "values": values}


def _with_initial_rows(
    traj: analysis.Trajectories, trainer: Trainer, fresh_model: Callable[[], Model]
) -> analysis.Trajectories:
    """Add e_i(0), each tracked item's initial row, as a record at count 0.

    Rows are initialised deterministically from (seed, id), so a fresh model with the same
    options (``fresh_model()``) reproduces them without inserting anything into the trained
    one; the trainer says which columns of an item row are the embedding. Without e(0) the
    move from the initial row to the first published state (often the largest step of a batch
    item) would be invisible, and items with one publish could not be analysed at all.
    """
    ids = np.unique(traj.ids)
    if ids.size == 0:
        return traj
    table = trainer.item_table(fresh_model())
    table.insert(ids)
    start, stop = trainer.item_span
    initial = np.ascontiguousarray(table.get(ids)[:, start:stop])
    first = np.ones(traj.ids.size, dtype=bool)
    first[1:] = traj.ids[1:] != traj.ids[:-1]
    # Initial records go first: an existing count-0 record (later in input order) wins.
    return analysis.Trajectories(
        np.concatenate([ids, traj.ids]),
        np.concatenate([np.zeros(ids.size, dtype=np.int64), traj.counts]),
        np.concatenate([traj.timestamps[first], traj.timestamps]),
        np.concatenate([initial, traj.rows]),
    )


def learning_curve(traj: analysis.Trajectories, min_items: int | None = None) -> dict[str, Any]:
    """Mean alignment gain *per interaction* G(n), with the learning peak and 50%/90% counts.

    ``analysis.learning_peak`` attributes the whole gain between two records to the later
    count, so with sparse records (log-spaced milestones, batch publishes) wide gaps look like
    large gains. Here the gain of a step from count a to count b is spread evenly over the
    interactions a+1..b (linear interpolation of cos(e(n), e*)), and G(n) averages over the
    items whose trajectory covers n. The peak is taken over counts covered by at least
    ``min_items`` items (default max(10, 2% of the items)), so a handful of very popular items
    cannot decide it.

    >>> t = analysis.Trajectories.from_arrays([1, 1, 1], [0, 2, 4], [[0, 1], [1, 1], [1, 0]])
    >>> curve = learning_curve(t, min_items=1)
    >>> curve["peak_count"], curve["counts"]
    (1, [1, 2, 3, 4])
    """
    ids, counts = traj.ids, traj.counts
    if ids.size == 0:
        return {
            "peak_count": None,
            "count_at_50pct_gain": None,
            "count_at_90pct_gain": None,
            "min_items": min_items,
            "counts": [],
            "gain": [],
            "items": [],
        }
    # Collapse duplicate (id, count) records to the last one (records are sorted).
    keep = np.ones(ids.size, dtype=bool)
    keep[:-1] = (ids[1:] != ids[:-1]) | (counts[1:] != counts[:-1])
    ids, counts, rows = ids[keep], counts[keep], traj.rows[keep].astype(np.float64)
    last = np.ones(ids.size, dtype=bool)
    last[:-1] = ids[1:] != ids[:-1]
    item_of_row = np.cumsum(np.concatenate([[True], ids[1:] != ids[:-1]])) - 1
    reference = rows[last][item_of_row]
    norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(reference, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(norms > 0, (rows * reference).sum(axis=1) / norms, 0.0)
    step = np.flatnonzero(~last)  # record k -> k + 1 of the same item
    start, end = counts[step], counts[step + 1]
    per_interaction = (cosine[step + 1] - cosine[step]) / (end - start)
    top = int(end.max()) + 2
    gain_sum = np.zeros(top)
    covering = np.zeros(top)
    np.add.at(gain_sum, start + 1, per_interaction)
    np.add.at(gain_sum, end + 1, -per_interaction)
    np.add.at(covering, start + 1, 1.0)
    np.add.at(covering, end + 1, -1.0)
    gain_sum, covering = np.cumsum(gain_sum)[1:-1], np.cumsum(covering)[1:-1].round()
    n_items = int(last.sum())
    floor = max(10, n_items // 50) if min_items is None else int(min_items)
    grid = np.arange(1, top - 1)
    valid = covering >= max(floor, 1)
    mean = np.where(valid, gain_sum / np.maximum(covering, 1), np.nan)
    peak = int(grid[valid][np.argmax(mean[valid])]) if valid.any() else None
    reach = {}
    if valid.any():
        cumulative = np.cumsum(np.where(valid, mean, 0.0))
        total = float(cumulative[-1])
        for share in (50, 90):
            hit = np.flatnonzero(cumulative >= share / 100 * total)
            reach[share] = int(grid[hit[0]]) if total > 0 and hit.size else None
    return {
        "peak_count": peak,
        "count_at_50pct_gain": reach.get(50),
        "count_at_90pct_gain": reach.get(90),
        "min_items": floor,
        "counts": grid[valid].tolist(),
        "gain": _finite(mean[valid]),
        "items": covering[valid].astype(np.int64).tolist(),
    }


def _analyse_mode(
    trainer: Trainer,
    monitor: Any,
    alpha: float,
    seed: int,
    fresh_model: Callable[[], Model],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(metrics, results)`` for one mode: metrics are JSON-safe, results feed the figures.

    ``fresh_model()`` builds an untrained model with the trainer's options (initial rows)."""
    model = trainer.serving_model
    item_table = trainer.item_table(model)
    meta = item_table.metadata()
    popularity = (meta["ids"], meta["interactions"].astype(np.int64))
    traj = _with_initial_rows(analysis.Trajectories.from_monitor(monitor), trainer, fresh_model)
    alphas = tuple(sorted({*ALPHAS, alpha}))
    mat = analysis.maturity(traj, alpha=alphas, popularity=popularity)
    peak = analysis.learning_peak(traj)
    curve = learning_curve(traj)
    norms = analysis.norm_popularity(
        trainer.item_embeddings(model),
        popularity,
        users=trainer.user_embeddings(model),
        seed=seed,
    )
    level = mat.level(alpha).overall
    shown = _downsample_curve(curve["counts"], curve["gain"], weights=curve["items"])
    metrics: dict[str, Any] = {
        "events": trainer.events_consumed,
        "items": len(item_table),
        "evicted_items": trainer.evicted,
        "users": len(trainer.user_table(model)),
        "publishes": trainer.publishes,
        "train_seconds": round(trainer.train_seconds, 3),
        "tracked_items": traj.n_items,
        "trajectory_records": len(traj),
        "maturity": {
            "alpha": alpha,
            "reference": mat.reference,
            "median_interactions": level.median,
            "mature_share": _finite(level.mature_share),
            "n_items": level.n_items,
            "n_censored": level.n_censored,
            "quantiles": level.quantiles,
            "km": level.km,
            "n_excluded": mat.n_excluded,
            "by_alpha": {
                f"{lvl.alpha:g}": {
                    "median_interactions": lvl.overall.median,
                    "mature_share": _finite(lvl.overall.mature_share),
                }
                for lvl in mat.levels
            },
            "by_popularity": [
                {
                    "bucket": b.bucket,
                    "popularity_low": b.popularity_low,
                    "popularity_high": b.popularity_high,
                    "median_interactions": b.curve.median,
                    "mature_share": _finite(b.curve.mature_share),
                }
                for b in mat.level(alpha).by_popularity
            ],
        },
        "learning_peak_interactions": curve["peak_count"],
        "learning_peak": {
            "definition": "argmax of the mean alignment gain per interaction G(n), over counts "
            "covered by at least min_items items",
            "peak_count": curve["peak_count"],
            "count_at_50pct_gain": curve["count_at_50pct_gain"],
            "count_at_90pct_gain": curve["count_at_90pct_gain"],
            "min_items": curve["min_items"],
            "curve": {"counts": shown["counts"], "gain_per_interaction": shown["values"][0]},
            "analysis_learning_peak": {
                "peak_count": peak.peak_count,
                "peak_count_median": peak.peak_count_median,
                "drift_peak_count": peak.drift_peak_count,
                "note": "embcore.analysis.learning_peak: gain between consecutive records "
                "attributed to the later count (not per interaction)",
            },
        },
        "norm_quantiles": {
            "mean": _finite(norms.norms.mean),
            "p50": _finite(norms.norms.p50),
            "p90": _finite(norms.norms.p90),
            "p99": _finite(norms.norms.p99),
            "max": _finite(norms.norms.max),
        },
        "norm_popularity_spearman": _finite(norms.spearman),
        "norm_popularity": {
            "loglog_slope": _finite(norms.loglog_slope),
            "by_decile": [
                {
                    "bucket": b.bucket,
                    "popularity_low": b.popularity_low,
                    "popularity_high": b.popularity_high,
                    "norm_p50": _finite(b.norms.p50),
                    "norm_p90": _finite(b.norms.p90),
                }
                for b in norms.by_decile
            ],
            "retrieval": None if norms.retrieval is None else norms.retrieval.to_dict(),
        },
    }
    return metrics, {"maturity": mat, "learning_peak": peak, "norms": norms, "curve": curve}


def _ratio(numerator: Any, denominator: Any) -> float | None:
    if numerator is None or denominator is None or not denominator:
        return None
    value = float(numerator) / float(denominator)
    return value if math.isfinite(value) else None


def _comparison(modes: Mapping[str, Any]) -> dict[str, Any]:
    rt, batch = modes.get("realtime"), modes.get("batch")
    if rt is None or batch is None:
        return {
            "maturity_ratio_realtime_over_batch": None,
            "norm_p99_ratio_batch_over_realtime": None,
            "note": "needs both the realtime and the batch mode",
        }
    return {
        "maturity_ratio_realtime_over_batch": _ratio(
            rt["maturity"]["median_interactions"], batch["maturity"]["median_interactions"]
        ),
        "norm_p99_ratio_batch_over_realtime": _ratio(
            batch["norm_quantiles"]["p99"], rt["norm_quantiles"]["p99"]
        ),
        "learning_peak_ratio_realtime_over_batch": _ratio(
            rt["learning_peak_interactions"], batch["learning_peak_interactions"]
        ),
        "ctr_lift_realtime_over_batch": _ratio(rt["engagement"]["ctr"], batch["engagement"]["ctr"]),
        "fresh_ctr_lift_realtime_over_batch": _ratio(
            rt["engagement"]["fresh_ctr"], batch["engagement"]["fresh_ctr"]
        ),
        "fresh_play_rate_lift_realtime_over_batch": _ratio(
            rt["engagement"]["fresh_play_rate"], batch["engagement"]["fresh_play_rate"]
        ),
    }


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
    out_path = None if out is None else Path(out)
    tmp = None if out_path is None else _prepare_output(out_path)
    try:
        with _single_threaded_blas():
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
        if tmp is not None and out_path is not None:
            if figures:
                from embcore import report

                metrics["figures"] = report.write_report(tmp, metrics, results)
            metrics["runtime_seconds"] = round(time.perf_counter() - started, 2)
            # metrics.json is written last, then the directory is renamed into place.
            text = json.dumps(metrics, indent=1, allow_nan=False)
            (tmp / "metrics.json").write_text(text + "\n", encoding="utf-8")
            _commit_output(tmp, out_path)
            tmp = None
        else:
            metrics["runtime_seconds"] = round(time.perf_counter() - started, 2)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
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
    from tqdm import tqdm

    world = World(sim_config, seed=seed)
    fresh_model = _model_factory(
        model,
        seed=seed,
        dim=dim,
        init_scale=init_scale,
        learning_rate=learning_rate,
        item_lifecycle=item_expiry(sim_config),
    )
    trainers: dict[str, Trainer] = {}
    monitors: dict[str, Any] = {}
    rust_monitor = False
    for mode in modes:
        monitors[mode], rust_monitor = _make_monitor(dim, track_rate, seed)
        trainers[mode] = Trainer(
            mode,
            fresh_model,
            period=period_seconds,
            epochs=epochs,
            monitor=monitors[mode],
            threads=threads,
            seed=seed,
        )
    horizon = world.n_steps * sim_config.step_seconds
    engagement = {mode: _Engagement(-(-horizon // 3600)) for mode in modes}
    serve_seconds = dict.fromkeys(modes, 0.0)
    expected = int(sim_config.expected_events) * len(modes)
    bar = tqdm(
        total=expected,
        unit="ev",
        unit_scale=True,
        disable=not progress,
        desc=f"study {scale} ({', '.join(modes)})",
        file=sys.stderr,
        mininterval=0.5,
    )

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
        if not rust_monitor and mode != "batch":
            monitors[mode].observe(trainer.item_table(), step.t_end)
        return len(events)

    # Modes are independent given the step (serve is a pure function, each mode owns its
    # trainer, monitor and counters), so they run in parallel threads: argpartition, the
    # matmul and training release the GIL. Results do not depend on the thread schedule.
    workers = min(len(modes), os.cpu_count() or 1) if parallel else 1
    with bar, ThreadPoolExecutor(max_workers=workers) as executor:
        for step in world.steps():
            if workers > 1:
                served = sum(executor.map(one_mode, modes, [step] * len(modes)))
            else:
                served = sum(one_mode(mode, step) for mode in modes)
            bar.update(served)
        for trainer in trainers.values():
            trainer.flush(horizon)
    per_mode: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    for mode, trainer in trainers.items():
        per_mode[mode], results[mode] = _analyse_mode(
            trainer, monitors[mode], alpha, seed, fresh_model
        )
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
            "monitor": "embcore.Monitor" if rust_monitor else "TableRecorder (step granularity)",
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
            "versions": {
                "embcore": embcore.__version__,
                "build_profile": embcore._core.build_profile,
                "numpy": np.__version__,
                "python": platform.python_version(),
            },
        },
        "modes": per_mode,
        "comparison": _comparison(per_mode),
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
    try:
        metrics = run_study(
            args.out,
            scale=args.scale,
            seed=args.seed,
            threads=args.threads,
            modes=args.modes,
            period=args.period,
            epochs=args.epochs,
            learning_rate=args.learning_rate,
            model=args.model,
            progress=not args.no_progress,
            # Optional CLI settings; the API's defaults apply when they are not given.
            **{
                name: getattr(args, name)
                for name in ("init_scale", "alpha", "track_rate", "dim")
                if getattr(args, name, None) is not None
            },
        )
    except StudyConfigError as err:
        print(f"embcore study: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    print(_summary_text(metrics, out))
    return 0


def _summary_text(metrics: Mapping[str, Any], out: Path) -> str:
    lines = [f"embcore study: wrote {out / 'metrics.json'} and {out / 'report.html'}"]
    for mode, m in metrics["modes"].items():
        eng = m["engagement"]
        lines.append(
            f"  {mode:9s} events {m['events']:>9,d}  median maturity "
            f"{m['maturity']['median_interactions']}  learning peak "
            f"{m['learning_peak_interactions']}  norm p99 {_fmt(m['norm_quantiles']['p99'])}  "
            f"ctr {_fmt(eng['ctr'])}  fresh ctr {_fmt(eng['fresh_ctr'])}"
        )
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
