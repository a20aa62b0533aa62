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
* **Exact AUC.** Scores are kept (float32, 4 bytes per event per mode) together with
  mode-independent columns shared by all modes (label, time, the item's interaction index and
  age: 20 bytes per event), so the AUC is the exact Mann–Whitney statistic with tied scores
  counted one half — no histogram, no approximation. Merging chunks (or shards) is
  concatenation. A 10M-event replay of two modes keeps about 280 MB for this.
* **Fresh items** are defined from the log, not from a model (so every mode is judged on the
  same events): an event is *fresh by count* when it is among its item's first
  ``fresh_interactions`` interactions in the log, *fresh by age* when it happens less than
  ``fresh_seconds`` after the item's first event in the log. Items already present when the log
  starts look fresh too; on long logs that is a small share of the events.
* Ids never seen by a serving model get its cold-start score (global bias plus the known side's
  bias, :meth:`embcore.MatrixFactorization.score`); training creates their rows on first sight.
* Output goes to a temporary directory beside ``DIR``, renamed into place at the end: a failed
  run never leaves a complete-looking directory (as in :mod:`embcore.study`).

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
import base64
import html
import io
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

import embcore
from embcore import datasets, runs, study
from embcore.modes import MODES, Trainer, parse_duration

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "ProgressiveValidation",
    "ReplayConfigError",
    "auc",
    "grouped_auc",
    "logloss",
    "replay",
    "run",
    "segments",
]

DEFAULT_FRESH_INTERACTIONS = 20
DEFAULT_FRESH_SECONDS = 86_400
DEFAULT_REALTIME_EVENTS = 256
DEFAULT_CHUNK_ROWS = 200_000
LOGLOSS_EPS = 1e-7
# Item interaction-index buckets (inclusive upper edges; the last bucket is open).
INTERACTION_EDGES = (1, 5, 20, 100, 1000)
AGE_EDGES_HOURS = study.AGE_EDGES_HOURS
# Over-time windows: the smallest of these widths giving at most _MAX_WINDOWS windows.
_WINDOW_WIDTHS = (3600, 6 * 3600, 86_400, 7 * 86_400, 30 * 86_400, 365 * 86_400)
_MAX_WINDOWS = 60
_INT32_MAX = 2**31 - 1

FIGURES: dict[str, str] = {
    "maturity": "Maturity: Kaplan–Meier survival of interactions-to-maturity",
    "learning_curve": "Learning curve: alignment gain per interaction and the learning peak",
    "norm_distribution": "Distribution of item embedding norms",
    "norm_vs_popularity": "Item embedding norm vs popularity",
    "auc_over_time": "Progressive validation over time (AUC and log-loss per window)",
    "auc_by_item_interactions": "Progressive validation by item freshness",
}
"""Figure name → title, in report order (the PNG is ``<name>.png``)."""


class ReplayConfigError(ValueError):
    """A replay option or the log is invalid (the CLI exits with code 2)."""


# --------------------------------------------------------------------------------------------
# Metrics: exact AUC and clipped log-loss


def _positives(labels: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    return np.asarray(labels, dtype=np.float64) >= 0.5


def grouped_auc(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    groups: npt.ArrayLike,
    n_groups: int,
    order: npt.NDArray[np.intp] | None = None,
) -> npt.NDArray[np.float64]:
    """Exact ROC AUC of each group of events (rank-based, tied scores count one half).

    ``AUC_g = (R_g - P_g (P_g + 1) / 2) / (P_g N_g)`` where ``R_g`` is the sum of the
    tie-averaged ranks of the group's positives among the group's scores (Mann–Whitney U).
    A label is positive when it is >= 0.5.

    Parameters
    ----------
    scores : array_like of float, shape (n,)
        Finite scores (logits or probabilities: only their order matters).
    labels : array_like of float, shape (n,)
    groups : array_like of int, shape (n,)
        Group of each event, in ``[0, n_groups)``.
    n_groups : int
    order : numpy.ndarray of intp, optional
        ``np.argsort(scores, kind="stable")`` when the caller already has it (several
        groupings of the same scores then share one sort).

    Returns
    -------
    numpy.ndarray of float64, shape (n_groups,)
        NaN for a group without both a positive and a negative.

    Examples
    --------
    >>> grouped_auc([0.1, 0.9, 0.5, 0.5, 0.3], [0, 1, 1, 0, 1], [0, 0, 1, 1, 1], 3)
    array([1.  , 0.25,  nan])
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    pos = _positives(labels).ravel()
    g = np.asarray(groups, dtype=np.int64).ravel()
    if not (s.size == pos.size == g.size):
        raise ValueError(
            f"scores, labels and groups must have equal lengths, got {s.size}, {pos.size}, {g.size}"
        )
    n_pos = np.bincount(g, weights=pos, minlength=n_groups)[:n_groups]
    n_all = np.bincount(g, minlength=n_groups)[:n_groups].astype(np.float64)
    n_neg = n_all - n_pos
    result = np.full(n_groups, np.nan)
    if s.size == 0:
        return result
    # Sort by (group, score): a stable sort by group of the score order (radix sort for int16).
    if order is None:
        order = np.argsort(s, kind="stable")
    elif order.size != s.size:
        raise ValueError(f"order has {order.size} elements, expected {s.size}")
    small = g.astype(np.int16) if n_groups <= np.iinfo(np.int16).max else g
    order = order[np.argsort(small[order], kind="stable")]
    gs, ss = g[order], s[order]
    n = s.size
    new_block = np.ones(n, dtype=bool)
    new_block[1:] = (gs[1:] != gs[:-1]) | (ss[1:] != ss[:-1])
    block_start = np.flatnonzero(new_block)
    block_end = np.append(block_start[1:], n)
    block_of = np.cumsum(new_block) - 1
    # Average 0-based position of each tie block, minus its group's first position, plus one.
    group_first = np.searchsorted(gs, np.arange(n_groups), side="left")
    mean_position = (block_start + block_end - 1) / 2.0
    ranks = mean_position[block_of] - group_first[gs] + 1.0
    rank_sum = np.bincount(gs, weights=np.where(pos[order], ranks, 0.0), minlength=n_groups)
    defined = (n_pos > 0) & (n_neg > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc_all = (rank_sum[:n_groups] - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    result[defined] = auc_all[defined]
    return result


def auc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float | None:
    """Exact ROC AUC (rank-based, ties count one half); None without both classes.

    >>> auc([0.2, 0.8, 0.8, 0.1], [0, 1, 0, 0])
    0.8333333333333334
    >>> auc([1.0, 2.0], [1, 1]) is None
    True
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    value = grouped_auc(s, labels, np.zeros(s.size, dtype=np.int64), 1)[0]
    return None if math.isnan(value) else float(value)


def _logloss_terms(scores: npt.ArrayLike, labels: npt.ArrayLike) -> npt.NDArray[np.float64]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.clip(np.asarray(labels, dtype=np.float64), 0.0, 1.0)
    with np.errstate(over="ignore"):
        p = 1.0 / (1.0 + np.exp(-s))
    p = np.clip(p, LOGLOSS_EPS, 1.0 - LOGLOSS_EPS)
    terms: npt.NDArray[np.float64] = -(y * np.log(p) + (1.0 - y) * np.log1p(-p))
    return terms


def logloss(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float | None:
    """Mean log-loss of logits ``scores``: ``p = sigmoid(score)`` clipped to
    ``[1e-7, 1 - 1e-7]``, labels clipped to [0, 1]; None for no events.

    >>> round(logloss([0.0, 0.0], [1, 0]), 6)  # log 2
    0.693147
    >>> round(logloss([100.0], [0]), 4)  # clipped: -log(1e-7)
    16.1181
    """
    terms = _logloss_terms(scores, labels)
    return float(terms.mean()) if terms.size else None


def _grouped_logloss(
    scores: npt.NDArray[Any], labels: npt.NDArray[Any], groups: npt.NDArray[Any], n_groups: int
) -> npt.NDArray[np.float64]:
    terms = _logloss_terms(scores, labels)
    total = np.bincount(groups, weights=terms, minlength=n_groups)[:n_groups]
    count = np.bincount(groups, minlength=n_groups)[:n_groups]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# --------------------------------------------------------------------------------------------
# Stream bookkeeping


def segments(
    timestamps: npt.ArrayLike,
    *,
    period: int | None,
    live: bool,
    max_events: int = DEFAULT_REALTIME_EVENTS,
    max_seconds: int | None = None,
) -> list[tuple[int, int]]:
    """Score-then-train segments ``[start, stop)`` of one time-ordered chunk.

    Segments never straddle a multiple of ``period`` (batch/hybrid publish there); for a mode
    whose serving model is ``live`` (real-time, hybrid) they also hold at most ``max_events``
    events and span less than ``max_seconds`` of event time.

    Parameters
    ----------
    timestamps : array_like of int64
        Non-decreasing event times (seconds).
    period : int or None
        Publishing period in seconds (None for real-time).
    live : bool
        Whether serving reads the tables being trained.
    max_events : int
    max_seconds : int, optional

    Returns
    -------
    list of (int, int)

    Examples
    --------
    >>> segments([0, 5, 10, 3600, 3601], period=3600, live=False)
    [(0, 3), (3, 5)]
    >>> segments([0, 1, 2, 3, 4], period=None, live=True, max_events=2)
    [(0, 2), (2, 4), (4, 5)]
    >>> segments([0, 1, 30, 31, 90], period=None, live=True, max_seconds=60)
    [(0, 4), (4, 5)]
    """
    t = np.asarray(timestamps, dtype=np.int64)
    n = t.size
    if n == 0:
        return []
    cuts = [0]
    if period is not None:
        cuts += (np.flatnonzero(np.diff(t // period)) + 1).tolist()
    cuts.append(n)
    if not live:
        return list(zip(cuts[:-1], cuts[1:], strict=True))
    max_events = max(int(max_events), 1)
    out: list[tuple[int, int]] = []
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        if max_seconds is None:
            out += [(s, min(s + max_events, b)) for s in range(a, b, max_events)]
            continue
        s = a
        while s < b:
            within = a + int(np.searchsorted(t[a:b], t[s] + max_seconds, side="left"))
            stop = max(min(s + max_events, b, within), s + 1)
            out.append((s, stop))
            s = stop
    return out


class _ItemHistory:
    """Per item in the log: interactions so far and first event time (sorted id arrays)."""

    def __init__(self) -> None:
        self.ids = np.zeros(0, dtype=np.uint64)
        self.counts = np.zeros(0, dtype=np.int64)
        self.first_seen = np.zeros(0, dtype=np.int64)

    def observe(
        self, items: npt.NDArray[np.uint64], timestamps: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """``(index, age)`` of each event: the 1-based interaction index of its item in the log
        and the seconds since the item's first event; then remembers the chunk."""
        n = items.size
        uniq, first_at, inverse, counts = np.unique(
            items, return_index=True, return_inverse=True, return_counts=True
        )
        where = np.searchsorted(self.ids, uniq)
        found = np.zeros(uniq.size, dtype=bool)
        if self.ids.size:
            clipped = np.minimum(where, self.ids.size - 1)
            found = (where < self.ids.size) & (self.ids[clipped] == uniq)
        prior = np.zeros(uniq.size, dtype=np.int64)
        prior[found] = self.counts[where[found]]
        first = timestamps[first_at].astype(np.int64)  # the chunk is in time order
        first[found] = self.first_seen[where[found]]
        order = np.argsort(inverse, kind="stable")
        starts = np.cumsum(counts) - counts
        within = np.empty(n, dtype=np.int64)
        within[order] = np.arange(n) - np.repeat(starts, counts)
        index = prior[inverse] + within + 1
        age = timestamps - first[inverse]
        self.counts[where[found]] += counts[found]
        new = ~found
        self.ids = np.insert(self.ids, where[new], uniq[new])
        self.counts = np.insert(self.counts, where[new], counts[new])
        self.first_seen = np.insert(self.first_seen, where[new], first[new])
        return index, age


class ProgressiveValidation:
    """Collects progressive-validation scores of several modes on one stream; reports metrics.

    :meth:`add_events` stores the mode-independent columns of a chunk (labels, times, and each
    event's item interaction index and item age in the log); :meth:`add_scores` stores one
    mode's pre-training scores for the same chunk. :meth:`metrics` computes exact AUC and
    clipped log-loss overall, for fresh items (by count and by age), by item interaction
    bucket, by item age bucket and per time window.

    Parameters
    ----------
    modes : sequence of str
    fresh_interactions : int
        An event is fresh by count when it is among its item's first this-many interactions.
    fresh_seconds : int
        An event is fresh by age when it is less than this many seconds after its item's first
        event in the log.

    Examples
    --------
    >>> import numpy as np
    >>> pv = ProgressiveValidation(["realtime"], fresh_interactions=1, fresh_seconds=60)
    >>> items = np.array([7, 7, 8, 8], dtype=np.uint64)
    >>> pv.add_events(items, np.array([1, 0, 1, 0], np.float32), np.array([0, 10, 20, 30]))
    >>> pv.add_scores("realtime", np.array([2.0, -1.0, 0.5, 0.0], np.float32))
    >>> m = pv.metrics()["realtime"]
    >>> m["auc"], m["fresh_events"], m["fresh_auc"]
    (1.0, 2, None)
    """

    def __init__(
        self,
        modes: Sequence[str],
        fresh_interactions: int = DEFAULT_FRESH_INTERACTIONS,
        fresh_seconds: int = DEFAULT_FRESH_SECONDS,
        window_seconds: int | None = None,
    ) -> None:
        self.modes = list(modes)
        self.fresh_interactions = int(fresh_interactions)
        self.fresh_seconds = int(fresh_seconds)
        self.window_seconds = window_seconds
        self._history = _ItemHistory()
        self._labels: list[npt.NDArray[np.float32]] = []
        self._times: list[npt.NDArray[np.int64]] = []
        self._index: list[npt.NDArray[np.int32]] = []
        self._age: list[npt.NDArray[np.int32]] = []
        self._scores: dict[str, list[npt.NDArray[np.float32]]] = {m: [] for m in self.modes}

    @property
    def events(self) -> int:
        """Events added so far."""
        return sum(part.size for part in self._labels)

    def add_events(
        self,
        items: npt.ArrayLike,
        labels: npt.ArrayLike,
        timestamps: npt.ArrayLike,
    ) -> None:
        """Remember a chunk's labels, times, item interaction indices and item ages."""
        i = np.ascontiguousarray(items, dtype=np.uint64)
        t = np.ascontiguousarray(timestamps, dtype=np.int64)
        index, age = self._history.observe(i, t)
        self._labels.append(np.asarray(labels, dtype=np.float32).copy())
        self._times.append(t.copy())
        self._index.append(np.minimum(index, _INT32_MAX).astype(np.int32))
        self._age.append(np.minimum(age, _INT32_MAX).astype(np.int32))

    def add_scores(self, mode: str, scores: npt.ArrayLike) -> None:
        """Remember one mode's scores of the chunk added last (same length and order)."""
        s = np.asarray(scores, dtype=np.float32)
        if s.size != self._labels[-1].size:
            raise ValueError(
                f"{mode}: {s.size} scores for a chunk of {self._labels[-1].size} events"
            )
        self._scores[mode].append(s)

    def metrics(self) -> dict[str, dict[str, Any]]:
        """Per mode: ``events``, ``auc``, ``logloss``, ``fresh_auc``, ``fresh_logloss``,
        ``fresh_age_auc``, ``fresh_age_logloss``, ``by_item_interactions``, ``by_item_age``,
        ``over_time`` (see docs/replay.md)."""
        labels = _concat(self._labels, np.float32)
        times = _concat(self._times, np.int64)
        index = _concat(self._index, np.int32)
        age = _concat(self._age, np.int32)
        interaction_bucket = np.searchsorted(np.array(INTERACTION_EDGES), index, side="left")
        age_bucket = np.searchsorted(
            np.array(AGE_EDGES_HOURS, dtype=np.int64) * 3600, age, side="right"
        )
        fresh_count = index <= self.fresh_interactions
        fresh_age = age < self.fresh_seconds
        width = self.window_seconds or _window_width(times)
        window = np.zeros(0, dtype=np.int64)
        first_window = 0
        if times.size:
            first_window = int(times.min()) // width
            window = times // width - first_window
        n_windows = int(window.max()) + 1 if window.size else 0
        out: dict[str, dict[str, Any]] = {}
        for mode in self.modes:
            scores = _concat(self._scores[mode], np.float32)
            if scores.size != labels.size:
                raise ValueError(f"{mode}: {scores.size} scores for {labels.size} events")
            finite = np.isfinite(scores)
            s, y = scores[finite], labels[finite]
            by_score = np.argsort(s, kind="stable")  # shared by every grouping below

            def both(
                groups: npt.NDArray[Any],
                n: int,
                s: Any = s,
                y: Any = y,
                keep: Any = finite,
                by_score: Any = by_score,
            ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[Any]]:
                g = np.asarray(groups, dtype=np.int64)[keep]
                counts = np.bincount(g, minlength=n)[:n]
                positives = np.bincount(g, weights=_positives(y), minlength=n)[:n]
                return (
                    grouped_auc(s, y, g, n, order=by_score),
                    _grouped_logloss(s, y, g, n),
                    np.stack([counts, positives]),
                )

            overall_auc, overall_loss, overall_n = both(np.zeros(labels.size), 1)
            fresh_auc, fresh_loss, fresh_n = both(fresh_count, 2)
            age_auc, age_loss, age_n = both(fresh_age, 2)
            ib_auc, ib_loss, ib_n = both(interaction_bucket, len(INTERACTION_EDGES) + 1)
            ab_auc, ab_loss, ab_n = both(age_bucket, len(AGE_EDGES_HOURS) + 1)
            w_auc, w_loss, w_n = both(window, n_windows)
            out[mode] = {
                "protocol": "progressive validation: each event scored by the serving model "
                "before the mode trains on it",
                "events": int(labels.size),
                "scored_events": int(finite.sum()),
                "nonfinite_scores": int((~finite).sum()),
                "positive_rate": _finite(_rate(overall_n[1, 0], overall_n[0, 0])),
                "auc": _finite(overall_auc[0]),
                "logloss": _finite(overall_loss[0]),
                "fresh_auc": _finite(fresh_auc[1]),
                "fresh_logloss": _finite(fresh_loss[1]),
                "fresh_events": int(fresh_n[0, 1]),
                "fresh_age_auc": _finite(age_auc[1]),
                "fresh_age_logloss": _finite(age_loss[1]),
                "fresh_age_events": int(age_n[0, 1]),
                "mature_auc": _finite(fresh_auc[0]),
                "mature_logloss": _finite(fresh_loss[0]),
                "fresh_definition": {
                    "interactions": self.fresh_interactions,
                    "seconds": self.fresh_seconds,
                    "by_count": "among the item's first `interactions` interactions in the log",
                    "by_age": "less than `seconds` after the item's first event in the log",
                },
                "by_item_interactions": {
                    "buckets": _interaction_labels(),
                    "events": ib_n[0].astype(np.int64).tolist(),
                    "auc": _finite(ib_auc),
                    "logloss": _finite(ib_loss),
                },
                "by_item_age": {
                    "buckets": _age_labels(),
                    "events": ab_n[0].astype(np.int64).tolist(),
                    "auc": _finite(ab_auc),
                    "logloss": _finite(ab_loss),
                },
                "over_time": {
                    "window_seconds": int(width),
                    "start": [(first_window + k) * width for k in range(n_windows)],
                    "events": w_n[0].astype(np.int64).tolist(),
                    "positive_rate": _finite(_rate(w_n[1], w_n[0])),
                    "auc": _finite(w_auc),
                    "logloss": _finite(w_loss),
                },
            }
        return out


def _concat(parts: Sequence[npt.NDArray[Any]], dtype: Any) -> npt.NDArray[Any]:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def _rate(num: Any, den: Any) -> Any:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(num, dtype=np.float64) / np.asarray(den, dtype=np.float64)


def _window_width(times: npt.NDArray[np.int64]) -> int:
    if times.size == 0:
        return _WINDOW_WIDTHS[0]
    span = int(times.max()) - int(times.min()) + 1
    for width in _WINDOW_WIDTHS:
        if span / width <= _MAX_WINDOWS - 1:
            return width
    return int(math.ceil(span / (_MAX_WINDOWS - 1) / 86_400)) * 86_400


def _interaction_labels() -> list[str]:
    labels, low = [], 1
    for edge in INTERACTION_EDGES:
        labels.append(str(edge) if edge == low else f"{low}-{edge}")
        low = edge + 1
    return [*labels, f">{INTERACTION_EDGES[-1]}"]


def _age_labels() -> list[str]:
    labels, low = [], 0
    for edge in AGE_EDGES_HOURS:
        labels.append(f"{low}-{edge}h")
        low = edge
    return [*labels, f">={low}h"]


def _finite(value: Any) -> Any:
    return runs.finite(value)


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
    if not mode_list:
        raise ReplayConfigError("--modes must name at least one mode, e.g. realtime,batch")
    unknown = [m for m in mode_list if m not in MODES]
    if unknown:
        raise ReplayConfigError(
            f"unknown mode(s) {', '.join(map(repr, unknown))}: choose from {', '.join(MODES)}"
        )
    if len(set(mode_list)) != len(mode_list):
        raise ReplayConfigError(f"--modes lists a mode twice: {','.join(mode_list)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ReplayConfigError(f"--seed must be an integer in [0, 2**63), got {seed!r}")
    if limit is not None:
        positive_int("--limit", limit)
    if not (isinstance(alpha, int | float) and 0 < alpha < 2):
        raise ReplayConfigError(f"alpha must be in (0, 2), got {alpha!r}")
    if not (isinstance(track_rate, int | float) and 0 < track_rate <= 1):
        raise ReplayConfigError(f"track_rate must be in (0, 1], got {track_rate!r}")
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


def _check_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ReplayConfigError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "metrics.json").exists():
        raise ReplayConfigError(
            f"--out {out} is a non-empty directory that does not hold an earlier replay or "
            "study; choose another path or empty it"
        )


def _temporary_output(out: Path) -> Path:
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    except OSError as err:
        raise ReplayConfigError(f"--out {out} cannot be written: {err.strerror or err}") from None


# --------------------------------------------------------------------------------------------
# The replay


class _ModeState:
    """One mode's trainer, monitor and timings."""

    def __init__(self, mode: str, trainer: Trainer, monitor: Any, config: Mapping[str, Any]):
        self.mode = mode
        self.trainer = trainer
        self.monitor = monitor
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
    alpha: float = study.DEFAULT_ALPHA,
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
    out_path = None if out is None else Path(out)
    if out_path is not None:
        _check_output(out_path)
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
    tmp = None if out_path is None else _temporary_output(out_path)
    try:
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
        if tmp is not None and out_path is not None:
            if figures:
                clock = time.perf_counter()
                metrics["figures"] = write_report(tmp, metrics, results)
                metrics["timings"]["report_seconds"] = round(time.perf_counter() - clock, 2)
            metrics["runtime_seconds"] = round(time.perf_counter() - started, 2)
            text = json.dumps(metrics, indent=1, allow_nan=False)
            (tmp / "metrics.json").write_text(text + "\n", encoding="utf-8")
            runs.commit_output(tmp, out_path)
            tmp = None
        else:
            metrics["runtime_seconds"] = round(time.perf_counter() - started, 2)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
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
    from tqdm import tqdm

    began = time.perf_counter()
    mode_list: list[str] = config["modes"]
    states: dict[str, _ModeState] = {}
    rust_monitor = False
    for mode in mode_list:
        monitor, rust_monitor = runs.make_monitor(int(options["dim"]), track_rate, seed)
        trainer = Trainer(
            mode,
            period=config["period"],
            epochs=config["epochs"],
            monitor=monitor,
            threads=config["threads"],
            seed=seed,
            **options,
        )
        states[mode] = _ModeState(mode, trainer, monitor, config)
    validation = ProgressiveValidation(
        mode_list, config["fresh_interactions"], config["fresh_seconds"], config["window"]
    )
    bar = tqdm(
        total=log.limit,
        unit="ev",
        unit_scale=True,
        disable=not progress,
        desc=f"replay {log.path.name} ({', '.join(mode_list)})",
        file=sys.stderr,
        mininterval=0.5,
    )
    last_time = int(first.timestamps[-1])
    first_time = int(first.timestamps[0])
    # Modes are independent given the chunk (each owns its trainer and monitor); score and
    # train release the GIL, so modes replay a chunk in parallel threads with identical results.
    workers = min(len(mode_list), os.cpu_count() or 1) if parallel else 1

    def one_mode(mode: str, chunk: datasets.EventChunk) -> npt.NDArray[np.float32]:
        return states[mode].replay_chunk(chunk)

    try:
        with bar, ThreadPoolExecutor(max_workers=workers) as executor:
            chunk: datasets.EventChunk | None = first
            while chunk is not None:
                validation.add_events(chunk.items, chunk.labels, chunk.timestamps)
                if workers > 1:
                    all_scores = list(executor.map(one_mode, mode_list, [chunk] * len(mode_list)))
                else:
                    all_scores = [one_mode(mode, chunk) for mode in mode_list]
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
    per_mode: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    for mode, state in states.items():
        per_mode[mode], results[mode] = runs.analyse_mode(
            state.trainer,
            state.monitor,
            alpha,
            seed,
            lambda: embcore.MatrixFactorization(**{"seed": seed, **options}),
        )
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
            "monitor": "embcore.Monitor" if rust_monitor else "TableRecorder (publish granularity)",
            "fresh_interactions": config["fresh_interactions"],
            "fresh_seconds": config["fresh_seconds"],
            "realtime_events": config["realtime_events"],
            "realtime_seconds": config["realtime_seconds"],
            "first_event_time": first_time,
            "last_event_time": last_time,
            "versions": {
                "embcore": embcore.__version__,
                "build_profile": embcore._core.build_profile,
                "numpy": np.__version__,
                "python": platform.python_version(),
            },
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
# Report


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
        top.plot(x, _nan(over["auc"]), color=f"C{k}", marker=".", label=mode)
        bottom.plot(x, _nan(over["logloss"]), color=f"C{k}", marker=".", label=mode)
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
            ax.bar(x, _nan(part["auc"]), width=width, color=f"C{k}", label=mode)
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("AUC")
        ax.set_ylim(0.0, 1.0)
        ax.axhline(0.5, color="0.5", linewidth=0.8)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize="small")
    top.set_title("AUC by item freshness (fresh items on the left)")
    return fig


def _nan(values: Sequence[Any]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


def _duration_text(seconds: int) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _draw(name: str, metrics: Mapping[str, Any], results: Mapping[str, Any]) -> Figure:
    from embcore import report

    fig = report.draw_shared(name, metrics, results)
    if fig is not None:
        return fig
    if name == "auc_over_time":
        return _fig_over_time(metrics)
    if name == "auc_by_item_interactions":
        return _fig_by_freshness(metrics)
    raise KeyError(f"unknown figure {name!r}; known: {sorted(FIGURES)}")


def write_report(
    directory: str | Path,
    metrics: Mapping[str, Any],
    results: Mapping[str, Mapping[str, Any]],
    dpi: int = 100,
) -> dict[str, str | None]:
    """Save one PNG per figure of :data:`FIGURES` into ``directory`` and write ``report.html``.

    Returns figure name → PNG file name (None when a figure could not be drawn; the report
    then says why). The page uses the style of :mod:`embcore.report`.
    """
    directory = Path(directory)
    images: dict[str, bytes] = {}
    errors: dict[str, str] = {}
    files: dict[str, str | None] = {}
    for name in FIGURES:
        try:
            fig = _draw(name, metrics, results)
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=dpi)
        except Exception as err:  # a broken figure must not sink a finished replay
            errors[name] = f"{type(err).__name__}: {err}"
            files[name] = None
            print(f"embcore replay: figure {name} not drawn: {errors[name]}", file=sys.stderr)
            continue
        images[name] = buffer.getvalue()
        (directory / f"{name}.png").write_bytes(images[name])
        files[name] = f"{name}.png"
    (directory / "report.html").write_text(render_html(metrics, images, errors), encoding="utf-8")
    return files


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return f"{value:,d}"
    return f"{value:.{digits}g}"


def _get(metrics: Any, *path: str) -> Any:
    value: Any = metrics
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


_SUMMARY_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("events", ("events",)),
    ("items", ("items",)),
    ("users", ("users",)),
    ("median maturity", ("maturity", "median_interactions")),
    ("learning peak", ("learning_peak_interactions",)),
    ("norm p50", ("norm_quantiles", "p50")),
    ("norm p99", ("norm_quantiles", "p99")),
    ("ρ(norm, pop)", ("norm_popularity_spearman",)),
    ("AUC", ("engagement", "auc")),
    ("log-loss", ("engagement", "logloss")),
    ("fresh AUC", ("engagement", "fresh_auc")),
    ("fresh-by-age AUC", ("engagement", "fresh_age_auc")),
)


def _readings(metrics: Mapping[str, Any]) -> dict[str, str]:
    from embcore import report

    out = {k: v for k, v in report.readings(metrics).items() if k in FIGURES}
    modes: Mapping[str, Any] = metrics.get("modes", {})

    def each(*path: str) -> str:
        return ", ".join(f"{mode} {_num(_get(m, *path))}" for mode, m in modes.items())

    text = f"AUC over the whole log: {each('engagement', 'auc')}; log-loss: "
    out["auc_over_time"] = text + each("engagement", "logloss") + "."
    fresh = _get(metrics, "config", "fresh_interactions")
    hours = (_get(metrics, "config", "fresh_seconds") or 0) / 3600
    text = (
        f"AUC on an item's first {fresh} interactions: {each('engagement', 'fresh_auc')}; "
        f"in its first {hours:g} h: {each('engagement', 'fresh_age_auc')}"
    )
    gain = _get(metrics, "comparison", "fresh_auc_realtime_minus_batch")
    if gain is not None:
        text += f"; realtime − batch fresh AUC {gain:+.4f} (paper: realtime better on fresh items)"
    out["auc_by_item_interactions"] = text + "."
    return out


def _claims(metrics: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    comp: Mapping[str, Any] = metrics.get("comparison", {})
    modes: Mapping[str, Any] = metrics.get("modes", {})

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("reproduced" if ok else "not reproduced here")

    r = comp.get("maturity_ratio_realtime_over_batch")
    a = _get(modes, "realtime", "learning_peak", "count_at_50pct_gain")
    b = _get(modes, "batch", "learning_peak", "count_at_50pct_gain")
    p = comp.get("norm_p99_ratio_batch_over_realtime")
    f = comp.get("fresh_auc_realtime_minus_batch")
    return [
        (
            "Real-time embeddings mature with fewer interactions",
            "~20% of batch's interactions",
            "n/a" if r is None else f"{100 * r:.0f}% (median ratio)",
            verdict(None if r is None else r < 1),
        ),
        (
            "Real-time embeddings learn earlier",
            "earlier learning peak",
            f"50% of the alignment gain at n = {_num(a)} (realtime), {_num(b)} (batch)",
            verdict(None if a is None or b is None or a == b else a < b),
        ),
        (
            "Batch embeddings have larger norms",
            "up to ~5x",
            "n/a" if p is None else f"{p:.2f}x (p99 ratio)",
            verdict(None if p is None else p > 1),
        ),
        (
            "Real-time does better on fresh items",
            "higher engagement on fresh content",
            "n/a" if f is None else f"fresh AUC realtime − batch {f:+.4f}",
            verdict(None if f is None else f > 0),
        ),
    ]


def render_html(
    metrics: Mapping[str, Any],
    images: Mapping[str, bytes],
    errors: Mapping[str, str] | None = None,
) -> str:
    """The replay report page: the log, a summary, the paper's claims and each figure.

    >>> page = render_html({"config": {}, "modes": {}, "comparison": {}}, {"maturity": b"png"})
    >>> page.startswith("<!DOCTYPE html>") and "data:image/png;base64,cG5n" in page
    True
    """
    from embcore import report

    esc = html.escape
    errors = errors or {}
    config: Mapping[str, Any] = metrics.get("config", {})
    modes: Mapping[str, Any] = metrics.get("modes", {})
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>embcore replay report</title>",
        f"<style>{report._STYLE}</style></head><body>",
        f"<h1>embcore replay: {esc(str(config.get('log', 'an interaction log')))}</h1>",
        "<p>A logged event stream replayed through each training mode side by side (the same "
        "events in the same order). Engagement is measured by <b>progressive validation</b>: "
        "every event is scored by the mode's serving model before the mode trains on it "
        "(real-time: the live tables, at most "
        f"{esc(str(config.get('realtime_events')))} events behind; batch: the last published "
        "snapshot).</p>",
    ]
    settings = ", ".join(
        f"{key} = {esc(str(config.get(key)))}"
        for key in (
            "format",
            "seed",
            "modes",
            "period_seconds",
            "epochs",
            "learning_rate",
            "dim",
            "fresh_interactions",
            "fresh_seconds",
        )
        if key in config
    )
    if settings:
        lines.append(f'<p class="muted">Configuration: {settings}.')
        if "runtime_seconds" in metrics:
            lines.append(f" Runtime {esc(str(metrics['runtime_seconds']))} s.")
        lines.append("</p>")
    log_report = metrics.get("log_report")
    if isinstance(log_report, Mapping):
        lines.append(
            f'<p class="muted">Log: {_num(log_report.get("rows_read"))} rows read, '
            f"{_num(log_report.get('events_out'))} events replayed, "
            f"{_num(log_report.get('malformed_rows'))} malformed and "
            f"{_num(log_report.get('duplicate_rows'))} duplicate rows dropped"
            f"{', sorted by time in memory' if log_report.get('sorted_in_memory') else ''}.</p>"
        )
    lines.append("<h2>Summary</h2><table><tr><th>mode</th>")
    lines += [f"<th>{esc(title)}</th>" for title, _ in _SUMMARY_COLUMNS]
    lines.append("</tr>")
    for mode, m in modes.items():
        cells = "".join(f"<td>{esc(_num(_get(m, *path)))}</td>" for _, path in _SUMMARY_COLUMNS)
        lines.append(f"<tr><td>{esc(mode)}</td>{cells}</tr>")
    lines.append("</table>")
    lines.append("<h2>The paper's findings, checked on this log</h2>")
    lines.append("<table><tr><th>claim</th><th>paper</th><th>this log</th><th>verdict</th></tr>")
    for claim, paper, measured, verdict in _claims(metrics):
        lines.append(
            f"<tr><td>{esc(claim)}</td><td>{esc(paper)}</td><td>{esc(measured)}</td>"
            f"<td>{esc(verdict)}</td></tr>"
        )
    lines.append("</table>")
    texts = _readings(metrics)
    for name, title in FIGURES.items():
        lines.append(f'<figure id="{name}"><h2>{esc(title)}</h2>')
        lines.append(f'<p class="reading">{esc(texts.get(name, ""))}</p>')
        if name in images:
            data = base64.b64encode(images[name]).decode("ascii")
            lines.append(f'<img alt="{esc(title)}" src="data:image/png;base64,{data}">')
        else:
            lines.append(f'<p class="muted">Figure not drawn: {esc(errors.get(name, "no image"))}')
            lines.append("</p>")
        lines.append("</figure>")
    lines.append("<h2>How to read the numbers</h2><ul>")
    lines += [
        "<li><b>AUC</b> is exact (rank-based, ties count one half) over the events each mode "
        "scored before training on them; a label is positive when it is ≥ 0.5. "
        "<b>Log-loss</b> clips the predicted probability to [1e-7, 1 − 1e-7].</li>",
        "<li><b>Fresh</b> events are an item's first interactions in the log (by count) or its "
        "events in the first hours after its first event (by age); items already present "
        "when the log starts count as fresh too.</li>",
        "<li><b>Maturity, learning peak and norms</b> are computed as in "
        "<code>embcore study</code> (docs/study.md); batch trajectories are the published "
        "states.</li>",
    ]
    lines.append("</ul></body></html>")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# CLI entry point


def run(args: argparse.Namespace) -> int:
    """Entry point of ``embcore replay`` (arguments declared in :mod:`embcore.cli`).

    Returns 0 on success and 2 for an invalid option or an unreadable log (message on stderr,
    no output directory left behind).
    """
    try:
        metrics = replay(
            args.log,
            args.out,
            format=args.format,
            modes=args.modes,
            period=args.period,
            seed=args.seed,
            limit=args.limit,
            threads=args.threads,
            progress=not args.no_progress,
            **{
                name: getattr(args, name)
                for name in ("fresh_interactions", "fresh_seconds", "epochs", "learning_rate")
                if getattr(args, name, None) is not None
            },
        )
    except ReplayConfigError as err:
        print(f"embcore replay: error: {err}", file=sys.stderr)
        return 2
    print(summary_text(metrics, Path(args.out)))
    return 0


def summary_text(metrics: Mapping[str, Any], out: Path | None = None) -> str:
    """The lines ``embcore replay`` prints at the end.

    >>> m = {"modes": {}, "runtime_seconds": 1.0, "log_report": {"events_out": 0}}
    >>> summary_text(m).splitlines()[0]
    'embcore replay: 0 events replayed in 1.0 s'
    """
    events = _get(metrics, "log_report", "events_out") or 0
    runtime = metrics.get("runtime_seconds") or 0.0
    head = f"embcore replay: {events:,d} events replayed in {runtime} s"
    replay_seconds = _get(metrics, "timings", "replay_seconds")
    if replay_seconds and events:
        head += (
            f" (replay {replay_seconds} s, {events / replay_seconds:,.0f} log events/s "
            f"through {len(metrics['modes'])} modes)"
        )
    if out is not None:
        head += f"; wrote {out / 'metrics.json'} and {out / 'report.html'}"
    lines = [head]
    for mode, m in metrics["modes"].items():
        eng = m["engagement"]
        lines.append(
            f"  {mode:9s} AUC {_num(eng['auc'], 4)}  log-loss {_num(eng['logloss'], 4)}  "
            f"fresh AUC {_num(eng['fresh_auc'], 4)}  median maturity "
            f"{_num(m['maturity']['median_interactions'])}  norm p99 "
            f"{_num(m['norm_quantiles']['p99'])}"
        )
    return "\n".join(lines)
