"""Progressive validation of several training modes on one logged stream: exact AUC and clipped
log-loss of the scores each mode gave every event *before* training on it, overall, for fresh
items (by count and by age), by item interaction index, by item age and per time window; and
the score-then-train segments a chunk is cut into.

The evaluator of ``embcore replay`` (:mod:`embcore.replay` drives the modes and scores;
:class:`ProgressiveValidation` keeps the scores and computes the metrics).

Design notes
------------
* **Exact AUC.** Scores are kept (float32, 4 bytes per event per mode) together with
  mode-independent columns shared by all modes (label, time, the item's interaction index and
  age: 20 bytes per event), so the AUC is the exact Mann–Whitney statistic with tied scores
  counted one half — no histogram, no approximation. Merging chunks (or shards) is
  concatenation. A 10M-event replay of two modes keeps about 280 MB for this.
* **Fresh items** are defined from the log, not from a model (so every mode is judged on the
  same events): an event is *fresh by count* when it is among its item's first
  ``fresh_interactions`` interactions in the log, *fresh by age* when it happens less than
  ``fresh_seconds`` after the item's first event in the log.

>>> auc([0.2, 0.8, 0.8, 0.1], [0, 1, 0, 0])
0.8333333333333334
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from embcore import runs
from embcore.runs import AGE_EDGES_HOURS

__all__ = [
    "DEFAULT_FRESH_INTERACTIONS",
    "DEFAULT_FRESH_SECONDS",
    "DEFAULT_REALTIME_EVENTS",
    "INTERACTION_EDGES",
    "ProgressiveValidation",
    "auc",
    "grouped_auc",
    "logloss",
    "segments",
]

DEFAULT_FRESH_INTERACTIONS = 20
DEFAULT_FRESH_SECONDS = 86_400
DEFAULT_REALTIME_EVENTS = 256
LOGLOSS_EPS = 1e-7
# Item interaction-index buckets (inclusive upper edges; the last bucket is open).
INTERACTION_EDGES = (1, 5, 20, 100, 1000)
# Over-time windows: the smallest of these widths giving at most _MAX_WINDOWS windows.
_WINDOW_WIDTHS = (3600, 6 * 3600, 86_400, 7 * 86_400, 30 * 86_400, 365 * 86_400)
_MAX_WINDOWS = 60
_INT32_MAX = 2**31 - 1


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
    window_seconds : int, optional
        Width of the ``over_time`` windows (default: hour, 6 h, day, week, 30 d or 365 d, the
        first giving at most 60 windows).

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
                "positive_rate": runs.finite(_rate(overall_n[1, 0], overall_n[0, 0])),
                "auc": runs.finite(overall_auc[0]),
                "logloss": runs.finite(overall_loss[0]),
                "fresh_auc": runs.finite(fresh_auc[1]),
                "fresh_logloss": runs.finite(fresh_loss[1]),
                "fresh_events": int(fresh_n[0, 1]),
                "fresh_age_auc": runs.finite(age_auc[1]),
                "fresh_age_logloss": runs.finite(age_loss[1]),
                "fresh_age_events": int(age_n[0, 1]),
                "mature_auc": runs.finite(fresh_auc[0]),
                "mature_logloss": runs.finite(fresh_loss[0]),
                "fresh_definition": {
                    "interactions": self.fresh_interactions,
                    "seconds": self.fresh_seconds,
                    "by_count": "among the item's first `interactions` interactions in the log",
                    "by_age": "less than `seconds` after the item's first event in the log",
                },
                "by_item_interactions": {
                    "buckets": _interaction_labels(),
                    "events": ib_n[0].astype(np.int64).tolist(),
                    "auc": runs.finite(ib_auc),
                    "logloss": runs.finite(ib_loss),
                },
                "by_item_age": {
                    "buckets": runs.age_labels(),
                    "events": ab_n[0].astype(np.int64).tolist(),
                    "auc": runs.finite(ab_auc),
                    "logloss": runs.finite(ab_loss),
                },
                "over_time": {
                    "window_seconds": int(width),
                    "start": [(first_window + k) * width for k in range(n_windows)],
                    "events": w_n[0].astype(np.int64).tolist(),
                    "positive_rate": runs.finite(_rate(w_n[1], w_n[0])),
                    "auc": runs.finite(w_auc),
                    "logloss": runs.finite(w_loss),
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
