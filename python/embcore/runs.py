"""What one run of ``embcore study`` or ``embcore replay`` does with each training mode once
its events are consumed: record trajectories, analyse the mode (maturity, learning curve,
norms vs popularity) into JSON-safe metrics, compare the modes, and move the finished output
directory into place.

Shared by :mod:`embcore.study` and :mod:`embcore.replay`, so both write the same
``metrics.json`` fields and figures from the same code.

>>> finite([1.0, float("nan"), np.int64(3)])
[1.0, None, 3]
>>> comparison({"realtime": None})["maturity_ratio_realtime_over_batch"] is None
True
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import embcore
from embcore import analysis
from embcore.modes import Model, Trainer

__all__ = [
    "ALPHAS",
    "TableRecorder",
    "analyse_mode",
    "commit_output",
    "comparison",
    "finite",
    "learning_curve",
    "make_monitor",
]

ALPHAS = (0.01, 0.05, 0.1)
"""Maturity levels always computed (the headline alpha is added when it is not one of them)."""
_MAX_CURVE_POINTS = 80


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


def make_monitor(dim: int, track_rate: float, seed: int) -> tuple[Any, bool]:
    """``(monitor, is_rust)``: ``embcore.Monitor`` when built, else a :class:`TableRecorder`.

    Every mode gets the same ``seed``, so every mode tracks the same item ids.
    """
    monitor_class = getattr(embcore._core, "Monitor", None)
    if monitor_class is not None:
        return monitor_class(sample_rate=track_rate, seed=seed), True
    return TableRecorder(dim, track_rate=track_rate), False


def finite(value: Any) -> Any:
    """Plain Python numbers for JSON: NaN/inf become None; arrays become lists."""
    if isinstance(value, np.ndarray):
        return [finite(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def commit_output(tmp: Path, out: Path) -> None:
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


def _downsample_curve(counts: Any, *columns: Any, weights: Any) -> dict[str, Any]:
    """Log-spaced bins over counts (weighted means) so long curves stay small in JSON."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.size <= _MAX_CURVE_POINTS:
        return {"counts": counts.astype(np.int64).tolist(), "values": [finite(c) for c in columns]}
    edges = np.unique(np.geomspace(counts.min(), counts.max() + 1, _MAX_CURVE_POINTS + 1).round())
    bucket = np.searchsorted(edges, counts, side="right") - 1
    w = np.asarray(weights, dtype=np.float64)
    total = np.bincount(bucket, weights=w)
    used = total > 0
    centre = np.bincount(bucket, weights=w * counts)[used] / total[used]
    values = [
        finite(np.bincount(bucket, weights=w * np.asarray(c, dtype=np.float64))[used] / total[used])
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
        "gain": finite(mean[valid]),
        "items": covering[valid].astype(np.int64).tolist(),
    }


def analyse_mode(
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
            "mature_share": finite(level.mature_share),
            "n_items": level.n_items,
            "n_censored": level.n_censored,
            "quantiles": level.quantiles,
            "km": level.km,
            "n_excluded": mat.n_excluded,
            "by_alpha": {
                f"{lvl.alpha:g}": {
                    "median_interactions": lvl.overall.median,
                    "mature_share": finite(lvl.overall.mature_share),
                }
                for lvl in mat.levels
            },
            "by_popularity": [
                {
                    "bucket": b.bucket,
                    "popularity_low": b.popularity_low,
                    "popularity_high": b.popularity_high,
                    "median_interactions": b.curve.median,
                    "mature_share": finite(b.curve.mature_share),
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
            "mean": finite(norms.norms.mean),
            "p50": finite(norms.norms.p50),
            "p90": finite(norms.norms.p90),
            "p99": finite(norms.norms.p99),
            "max": finite(norms.norms.max),
        },
        "norm_popularity_spearman": finite(norms.spearman),
        "norm_popularity": {
            "loglog_slope": finite(norms.loglog_slope),
            "by_decile": [
                {
                    "bucket": b.bucket,
                    "popularity_low": b.popularity_low,
                    "popularity_high": b.popularity_high,
                    "norm_p50": finite(b.norms.p50),
                    "norm_p90": finite(b.norms.p90),
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


def comparison(modes: Mapping[str, Any]) -> dict[str, Any]:
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
