"""Progressive validation of several training modes on one logged stream: exact AUC and clipped
log-loss of the scores each mode gave every event *before* training on it, overall, for fresh
items (by count and by age), by item interaction index, by item age and per time window.

The evaluator of ``embcore replay`` (:mod:`embcore.replay` drives the modes and collects each
event's pre-update score from the training call; :class:`ProgressiveValidation` keeps the
scores and computes the metrics).

Design notes
------------
* **Exact AUC.** Scores are kept (float32, 4 bytes per event per mode) together with
  mode-independent columns shared by all modes: the label (float32), the time as an offset
  from the first event (int32) and one code byte holding the item's interaction bucket, its
  age bucket and both fresh flags — 9 bytes per event. A 10M-event replay of two modes keeps
  170 MB for this. The AUC is the exact Mann–Whitney statistic with tied scores counted one
  half — no histogram, no approximation. Merging chunks (or shards) is concatenation.
* **One sort for every grouping, no argsort.** Each event becomes one uint64 — an
  order-preserving key of its float32 score in the high 32 bits, then its time window, its
  code byte and its label bit — and ``np.sort`` of that array (vectorised, several times faster
  than a stable ``argsort``) lines up the tie blocks. One native scan
  (``embcore._core.grouped_auc_sorted``) then counts, per group of every grouping, the
  negatives below each positive (ties one half), in integers: exact and independent of order.
  A log with more time windows than the key has bits for (over 8M) sorts the window grouping
  apart; scores that float32 cannot hold exactly (the public :func:`grouped_auc` on float64)
  fall back to ``np.lexsort``.
* **Fresh items** are defined from the log, not from a model (so every mode is judged on the
  same events): an event is *fresh by count* when it is among its item's first
  ``fresh_interactions`` interactions in the log, *fresh by age* when it happens less than
  ``fresh_seconds`` after the item's first event in the log.

>>> auc([0.2, 0.8, 0.8, 0.1], [0, 1, 0, 0])
0.8333333333333334
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from embcore import _core, runs
from embcore.runs import AGE_EDGES_HOURS

__all__ = [
    "DEFAULT_FRESH_INTERACTIONS",
    "DEFAULT_FRESH_SECONDS",
    "INTERACTION_EDGES",
    "ProgressiveValidation",
    "auc",
    "grouped_auc",
    "logloss",
]

DEFAULT_FRESH_INTERACTIONS = 20
DEFAULT_FRESH_SECONDS = 86_400
LOGLOSS_EPS = 1e-7
# Item interaction-index buckets (inclusive upper edges; the last bucket is open).
INTERACTION_EDGES = (1, 5, 20, 100, 1000)
# Over-time windows: the smallest of these widths giving at most _MAX_WINDOWS windows.
_WINDOW_WIDTHS = (3600, 6 * 3600, 86_400, 7 * 86_400, 30 * 86_400, 365 * 86_400)
_MAX_WINDOWS = 60
_INT32_MAX = 2**31 - 1
# Events (or positives) per block of the metrics' passes: temporaries stay a few MB.
_BLOCK = 1 << 18


# --------------------------------------------------------------------------------------------
# Metrics: exact AUC and clipped log-loss


def _positives(labels: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    array = np.asarray(labels)
    if array.dtype == np.float32:  # float32 -> float64 is exact: the same test, no copy
        return array >= np.float32(0.5)
    return np.asarray(labels, dtype=np.float64) >= 0.5


def _bincount(
    groups: npt.NDArray[Any], n: int, weights: npt.NDArray[Any] | None = None
) -> npt.NDArray[Any]:
    """``np.bincount(groups, weights, minlength=n)[:n]`` block by block (np.bincount casts a
    whole uint8 array to int64, and float32 weights to float64). Exact for counts; weighted
    sums are added block by block."""
    total = np.zeros(n, dtype=np.int64 if weights is None else np.float64)
    for a in range(0, groups.size, _BLOCK):
        w = None if weights is None else weights[a : a + _BLOCK]
        total += np.bincount(groups[a : a + _BLOCK], weights=w, minlength=n)[:n]
    return total


def grouped_auc(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    groups: npt.ArrayLike,
    n_groups: int,
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

    Returns
    -------
    numpy.ndarray of float64, shape (n_groups,)
        NaN for a group without both a positive and a negative.

    Examples
    --------
    >>> grouped_auc([0.1, 0.9, 0.5, 0.5, 0.3], [0, 1, 1, 0, 1], [0, 0, 1, 1, 1], 3)
    array([1.  , 0.25,  nan])
    """
    s = np.asarray(scores).ravel()
    pos = _positives(labels).ravel()
    g = np.asarray(groups, dtype=np.int64).ravel()
    if not (s.size == pos.size == g.size):
        raise ValueError(
            f"scores, labels and groups must have equal lengths, got {s.size}, {pos.size}, {g.size}"
        )
    result = np.full(n_groups, np.nan)
    if s.size == 0:
        return result
    if g.min() < 0 or g.max() >= n_groups:
        raise ValueError(f"groups must be in [0, {n_groups}), got {g.min()} to {g.max()}")
    s32 = s.astype(np.float32, copy=False)
    if n_groups < 2**31 and (s.dtype == np.float32 or np.array_equal(s32, s)):
        packed = np.empty(s.size, dtype=np.uint64)
        _fill_grouped(packed, s32, pos, g, None)
        packed.sort()
        return _auc_from_counts(*_counts_by_group(packed, n_groups))
    # Scores that float32 cannot hold exactly: sort by (group, score) with lexsort.
    s64 = s.astype(np.float64) + 0.0  # -0.0 ties with 0.0
    order = np.lexsort((s64, g))
    return _grouped_auc_blocks(g[order], s64[order], pos[order], n_groups)


def _score_keys_block(s: npt.NDArray[Any]) -> npt.NDArray[np.uint32] | None:
    if s.dtype == np.float32:
        s32 = s + np.float32(0.0)  # -0.0 ties with 0.0
    else:
        s32 = s.astype(np.float32) + np.float32(0.0)
        if not np.array_equal(s32, s):
            return None
    bits = s32.view(np.uint32)
    # Negative floats: flip every bit; others: flip the sign bit (IEEE order as unsigned).
    flip = (bits >> np.uint32(31)) * np.uint32(0x7FFFFFFF) | np.uint32(0x80000000)
    flip ^= bits
    return flip


def _counts_by_group(
    packed: npt.NDArray[np.uint64], n_groups: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per group, the Mann–Whitney count, the positives and the events, from sorted
    :func:`_fill_grouped` keys (group in the high 31 bits, ties on the score key)."""
    u, positives, events = _core.grouped_auc_sorted(packed, 1, [(33, 2**31 - 1, n_groups)])[0]
    return u, positives, events


def _auc_from_counts(
    u: npt.NDArray[np.float64], positives: npt.NDArray[np.float64], events: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """``u / (positives × negatives)`` per group; NaN without both classes."""
    negatives = events - positives
    result = np.full(u.size, np.nan)
    defined = (positives > 0) & (negatives > 0)
    result[defined] = u[defined] / (positives[defined] * negatives[defined])
    return result


# The metrics' packed event: score key << 32 | window << 9 | code byte << 1 | positive.
_WINDOW_SHIFT = 9
_WINDOW_BITS = 32 - _WINDOW_SHIFT
_CODE_SHIFT = 1


def _scored_blocks(
    scores: npt.NDArray[np.float32], finite: npt.NDArray[np.bool_] | None
) -> Iterator[tuple[Callable[[npt.NDArray[Any]], npt.NDArray[Any]], npt.NDArray[np.uint32]]]:
    """Block by block: a function taking a column's values of the block's scored events (all
    when ``finite`` is None), and their score keys."""
    for a in range(0, scores.size, _BLOCK):
        part = slice(a, a + _BLOCK)
        keep = None if finite is None else finite[part]

        def take(column: npt.NDArray[Any], part: slice = part, keep: Any = keep) -> Any:
            return column[part] if keep is None else column[part][keep]

        keys = _score_keys_block(take(scores))
        assert keys is not None  # float32 scores always have a key
        yield take, keys


def _fill_events(
    out: npt.NDArray[np.uint64],
    scores: npt.NDArray[np.float32],
    labels: npt.NDArray[np.float32],
    codes: npt.NDArray[np.uint8],
    window: npt.NDArray[Any] | None,
    finite: npt.NDArray[np.bool_] | None,
) -> None:
    """Pack the events with a finite score (all when ``finite`` is None) into ``out``: score
    key << 32 | window << 9 (when given) | code byte << 1 | positive, block by block (no
    full-length temporaries)."""
    at = 0
    for take, keys in _scored_blocks(scores, finite):
        o = out[at : at + keys.size]
        at += keys.size
        np.copyto(o, keys, casting="unsafe")
        o <<= np.uint64(32)
        if window is not None:
            o |= take(window).astype(np.uint64) << np.uint64(_WINDOW_SHIFT)
        o |= take(codes).astype(np.uint64) << np.uint64(_CODE_SHIFT)
        o |= _positives(take(labels))


def _fill_grouped(
    out: npt.NDArray[np.uint64],
    scores: npt.NDArray[np.float32],
    labels: npt.NDArray[Any],
    groups: npt.NDArray[Any],
    finite: npt.NDArray[np.bool_] | None,
) -> None:
    """The scored events as group << 33 | score key << 1 | positive into ``out``, block by
    block: sorted, each group's events in score order with a tie's negatives first."""
    at = 0
    for take, keys in _scored_blocks(scores, finite):
        o = out[at : at + keys.size]
        at += keys.size
        np.copyto(o, take(groups), casting="unsafe")
        o <<= np.uint64(32)
        o |= keys
        o <<= np.uint64(1)
        o |= _positives(take(labels))


def _grouped_auc_blocks(
    gs: npt.NDArray[np.int64],
    ss: npt.NDArray[np.float64],
    pos: npt.NDArray[np.bool_],
    n_groups: int,
) -> npt.NDArray[np.float64]:
    n = gs.size
    new_block = np.ones(n, dtype=bool)
    new_block[1:] = (gs[1:] != gs[:-1]) | (ss[1:] != ss[:-1])
    start = np.flatnonzero(new_block)
    positives = np.add.reduceat(pos.astype(np.int64), start)
    group_first = np.searchsorted(gs, np.arange(n_groups), side="left")
    return _auc_from_blocks(start, n, positives, gs[start], group_first, n_groups)


def _auc_from_blocks(
    start: npt.NDArray[np.intp],
    n: int,
    positives: npt.NDArray[np.int64],
    block_group: npt.NDArray[np.int64],
    group_first: npt.NDArray[np.intp],
    n_groups: int,
) -> npt.NDArray[np.float64]:
    """AUC per group from tie blocks sorted by (group, score): each block's positives have the
    block's mean 1-based rank within the group."""
    end = np.append(start[1:], n)
    mean_rank = (start + end - 1) / 2.0 - group_first[block_group] + 1.0
    rank_sum = np.bincount(block_group, weights=positives * mean_rank, minlength=n_groups)
    n_pos = np.bincount(block_group, weights=positives, minlength=n_groups)[:n_groups]
    n_all = np.bincount(block_group, weights=end - start, minlength=n_groups)[:n_groups]
    n_neg = n_all - n_pos
    result = np.full(n_groups, np.nan)
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


_LOGIT_LIMIT = math.log((1.0 - LOGLOSS_EPS) / LOGLOSS_EPS)


def _logloss_terms32(scores: npt.NDArray[Any], labels: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """:func:`_logloss_terms` in float32 (the metrics sum them in float64): with the logit
    clipped as the probability is, ``-(y log p + (1 - y) log(1 - p)) = softplus(s) - y s``."""
    s = np.clip(np.asarray(scores, dtype=np.float32), -_LOGIT_LIMIT, _LOGIT_LIMIT)
    y = np.clip(np.asarray(labels, dtype=np.float32), 0.0, 1.0)
    terms = np.log1p(np.exp(-np.abs(s)))
    terms += np.maximum(s, 0.0)
    terms -= y * s
    return terms


def _logloss_terms32_blocks(scores: npt.NDArray[Any], labels: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """:func:`_logloss_terms32` computed block by block into one float32 array."""
    out = np.empty(scores.size, dtype=np.float32)
    for a in range(0, scores.size, _BLOCK):
        out[a : a + _BLOCK] = _logloss_terms32(scores[a : a + _BLOCK], labels[a : a + _BLOCK])
    return out


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


# --------------------------------------------------------------------------------------------
# Stream bookkeeping

# Bits of the per-event code byte (mode-independent, from the log).
_INTERACTION_BITS = np.uint8(0b0000_0111)  # interaction bucket, 0..len(INTERACTION_EDGES)
_FRESH_COUNT_BIT = np.uint8(0b0000_1000)
_AGE_SHIFT = np.uint8(4)  # age bucket in bits 4-6, 0..len(AGE_EDGES_HOURS)
_FRESH_AGE_BIT = np.uint8(0b1000_0000)
_INTERACTION_EDGE_ARRAY = np.array(INTERACTION_EDGES, dtype=np.int64)
_AGE_EDGE_SECONDS = np.array(AGE_EDGES_HOURS, dtype=np.int64) * 3600
assert len(INTERACTION_EDGES) < 8 and len(AGE_EDGES_HOURS) < 8  # each fits in 3 bits


class _ItemHistory:
    """Per item in the log: interactions so far and first event time.

    Items get dense slots in order of first sighting (``counts[slot]``, ``first_seen[slot]``),
    found through one hash lookup per event (``embcore._core.SlotIndex``). A chunk's events are
    grouped by item with one ``np.sort`` of ``slot << 32 | position`` (vectorised; no argsort).
    """

    def __init__(self) -> None:
        self.index = _core.SlotIndex()
        self.counts = np.zeros(0, dtype=np.int64)
        self.first_seen = np.zeros(0, dtype=np.int64)

    def observe(
        self, items: npt.NDArray[np.uint64], timestamps: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """``(index, age)`` of each event: the 1-based interaction index of its item in the log
        and the seconds since the item's first event; then remembers the chunk."""
        n = items.size
        if n == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        slots = self._slots(items, timestamps)
        # Group the chunk's events by slot, in chunk (= time) order within a slot.
        if n < 2**32:
            keyed = slots.astype(np.uint64) << np.uint64(32)
            keyed |= np.arange(n, dtype=np.uint64)
            keyed.sort()
            order = (keyed & np.uint64(0xFFFFFFFF)).astype(np.intp)
            sorted_slots = (keyed >> np.uint64(32)).astype(np.int64)
            del keyed
        else:
            order = np.argsort(slots, kind="stable")
            sorted_slots = slots[order]
        head = np.empty(n, dtype=bool)
        head[0] = True
        np.not_equal(sorted_slots[1:], sorted_slots[:-1], out=head[1:])
        starts = np.flatnonzero(head)
        run = np.repeat(starts, np.diff(np.append(starts, n)))
        index = np.empty(n, dtype=np.int64)
        index[order] = self.counts[sorted_slots] + (np.arange(n) - run) + 1
        age = timestamps - self.first_seen[slots]
        self.counts += np.bincount(slots, minlength=self.counts.size)
        return index, age

    def _slots(
        self, items: npt.NDArray[np.uint64], timestamps: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        """Each event's item slot; items seen for the first time get new slots (first seen at
        their first event in the chunk)."""
        slots, first_at = self.index.slots(np.ascontiguousarray(items, dtype=np.uint64))
        if first_at.size:
            self.counts = np.concatenate([self.counts, np.zeros(first_at.size, np.int64)])
            self.first_seen = np.concatenate(
                [self.first_seen, timestamps[first_at].astype(np.int64)]
            )
        return slots


class ProgressiveValidation:
    """Collects progressive-validation scores of several modes on one stream; reports metrics.

    :meth:`add_events` stores the mode-independent columns of a chunk (labels, times, and each
    event's item interaction bucket and item age bucket in the log, one byte); :meth:`add_scores`
    stores one mode's pre-training scores for the same chunk. :meth:`metrics` computes exact
    AUC and clipped log-loss overall, for fresh items (by count and by age), by item
    interaction bucket, by item age bucket and per time window.

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
        self._first_time: int | None = None
        # Per event, 9 bytes shared by the modes plus 4 per mode (module design notes).
        self._labels: list[npt.NDArray[np.float32]] = []
        self._times: list[npt.NDArray[np.int32] | npt.NDArray[np.int64]] = []
        self._codes: list[npt.NDArray[np.uint8]] = []
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
        codes = np.searchsorted(_INTERACTION_EDGE_ARRAY, index, side="left").astype(np.uint8)
        codes |= (index <= self.fresh_interactions).astype(np.uint8) << np.uint8(3)
        age_bucket = np.searchsorted(_AGE_EDGE_SECONDS, age, side="right").astype(np.uint8)
        codes |= age_bucket << _AGE_SHIFT
        codes |= (age < self.fresh_seconds).astype(np.uint8) << np.uint8(7)
        if self._first_time is None and t.size:
            self._first_time = int(t[0])
        offset = t - (self._first_time or 0)
        small = offset.size == 0 or (offset.min() > -_INT32_MAX and offset.max() < _INT32_MAX)
        self._times.append(offset.astype(np.int32) if small else offset)
        self._labels.append(np.array(labels, dtype=np.float32))
        self._codes.append(codes)

    def add_scores(self, mode: str, scores: npt.ArrayLike) -> None:
        """Remember one mode's scores of the chunk added last (same length and order)."""
        s = np.array(scores, dtype=np.float32)
        if s.size != self._labels[-1].size:
            raise ValueError(
                f"{mode}: {s.size} scores for a chunk of {self._labels[-1].size} events"
            )
        self._scores[mode].append(s)

    def discard(self) -> None:
        """Free the stored columns and scores (after :meth:`metrics`): the object then holds
        no events; the item history is kept."""
        self._labels, self._times, self._codes = [], [], []
        self._scores = {m: [] for m in self.modes}

    def metrics(self) -> dict[str, dict[str, Any]]:
        """Per mode: ``events``, ``auc``, ``logloss``, ``fresh_auc``, ``fresh_logloss``,
        ``fresh_age_auc``, ``fresh_age_logloss``, ``by_item_interactions``, ``by_item_age``,
        ``over_time`` (see docs/replay.md)."""
        # Each column joined once, in place of its parts (no second copy of the stream).
        labels = self._labels[0] if len(self._labels) == 1 else _concat(self._labels, np.float32)
        codes = self._codes[0] if len(self._codes) == 1 else _concat(self._codes, np.uint8)
        self._labels, self._codes = [labels], [codes]
        # Each grouping's array is made from the code byte when its turn comes (one at a time).
        groupings: dict[str, tuple[Callable[[], npt.NDArray[Any]], int]] = {
            "overall": (lambda: np.zeros(labels.size, dtype=np.uint8), 1),
            "fresh": (lambda: (codes & _FRESH_COUNT_BIT) >> np.uint8(3), 2),
            "fresh_age": (lambda: codes >> np.uint8(7), 2),
            "interactions": (lambda: codes & _INTERACTION_BITS, len(INTERACTION_EDGES) + 1),
            "age": (
                lambda: (codes >> _AGE_SHIFT) & np.uint8(0b111),
                len(AGE_EDGES_HOURS) + 1,
            ),
        }
        # Windows from the stored time offsets, part by part (no int64 copy of every time).
        base_time = self._first_time or 0
        low = min((int(t.min()) for t in self._times if t.size), default=0) + base_time
        high = max((int(t.max()) for t in self._times if t.size), default=0) + base_time
        width = self.window_seconds or _window_width(np.array([low, high], dtype=np.int64))
        first_window = low // width
        n_windows = high // width - first_window + 1 if labels.size else 0
        dtype = np.min_scalar_type(max(n_windows - 1, 0))
        window = np.concatenate(
            [((t.astype(np.int64) + base_time) // width - first_window).astype(dtype)
             for t in self._times]
        ) if self._times else np.zeros(0, dtype=np.uint8)  # fmt: skip
        groupings["window"] = (lambda: window, n_windows)
        # Where each grouping's group sits in the packed event (`_fill_events`): the code
        # byte's bit fields shifted past the label bit, then the window when it fits.
        fields = {
            "overall": (0, 0, 1),
            "fresh": (_CODE_SHIFT + 3, 1, 2),
            "fresh_age": (_CODE_SHIFT + 7, 1, 2),
            "interactions": (_CODE_SHIFT, int(_INTERACTION_BITS), len(INTERACTION_EDGES) + 1),
            "age": (_CODE_SHIFT + int(_AGE_SHIFT), 0b111, len(AGE_EDGES_HOURS) + 1),
        }
        window_packed = n_windows <= 2**_WINDOW_BITS
        if window_packed:
            fields["window"] = (_WINDOW_SHIFT, 2**_WINDOW_BITS - 1, max(n_windows, 1))
        out: dict[str, dict[str, Any]] = {}
        for mode in self.modes:
            parts = self._scores[mode]
            scores = parts[0] if len(parts) == 1 else _concat(parts, np.float32)
            self._scores[mode] = [scores]
            if scores.size != labels.size:
                raise ValueError(f"{mode}: {scores.size} scores for {labels.size} events")
            finite = np.isfinite(scores)
            everything = bool(finite.all())
            scored = int(finite.sum())
            s = scores if everything else scores[finite]
            terms = _logloss_terms32_blocks(s, labels if everything else labels[finite])
            del s
            # One 8-byte key per scored event: the log-loss sums of every grouping from it in
            # event order (np.bincount's bits), then sorted once for every grouping's AUC.
            packed = np.empty(scored, dtype=np.uint64)
            _fill_events(
                packed,
                scores,
                labels,
                codes,
                window if window_packed else None,
                None if everything else finite,
            )
            field_list = list(fields.values())
            sums_of = _core.grouped_sums(packed, terms, field_list, _BLOCK)
            sums = dict(zip(fields, sums_of, strict=True))
            if not window_packed:  # more windows than bits: its own (group, key) sort
                sums["window"] = _bincount(
                    window if everything else window[finite], n_windows, terms
                )
            del terms
            packed.sort()
            counts_of = _core.grouped_auc_sorted(packed, 32, field_list)
            counted = dict(zip(fields, counts_of, strict=True))
            if not window_packed:
                _fill_grouped(packed, scores, labels, window, None if everything else finite)
                packed.sort()
                counted["window"] = _counts_by_group(packed, n_windows)
            del packed
            results: dict[str, tuple[Any, Any, Any]] = {}
            events: dict[str, npt.NDArray[np.int64]] = {}
            for name, (make_groups, n) in groupings.items():
                u, positives, counts = counted[name]
                u, positives, counts = u[:n], positives[:n], counts[:n]  # no window: 0 groups
                total = sums[name][:n]
                events[name] = counts.astype(np.int64)
                if not everything:  # the events without a score count, in no AUC or loss
                    events[name] += _bincount(make_groups()[~finite], n)
                aucs = _auc_from_counts(u, positives, counts)
                with np.errstate(invalid="ignore", divide="ignore"):
                    loss = np.where(counts > 0, total / np.maximum(counts, 1), np.nan)
                results[name] = (aucs, loss, np.stack([counts, positives]))
            del finite
            overall_auc, overall_loss, overall_n = results["overall"]
            fresh_auc, fresh_loss, fresh_n = results["fresh"]
            age_auc, age_loss, age_n = results["fresh_age"]
            ib_auc, ib_loss, ib_n = results["interactions"]
            ab_auc, ab_loss, ab_n = results["age"]
            w_auc, w_loss, w_n = results["window"]
            fresh_events = int(events["fresh"][1])
            fresh_age_events = int(events["fresh_age"][1])
            out[mode] = {
                "protocol": "progressive validation: each event scored by the serving model "
                "before the mode trains on it",
                "events": int(labels.size),
                "scored_events": scored,
                "nonfinite_scores": int(labels.size) - scored,
                "positive_rate": runs.finite(_rate(overall_n[1, 0], overall_n[0, 0])),
                "auc": runs.finite(overall_auc[0]),
                "logloss": runs.finite(overall_loss[0]),
                "fresh_auc": runs.finite(fresh_auc[1]),
                "fresh_logloss": runs.finite(fresh_loss[1]),
                "fresh_events": fresh_events,
                "fresh_age_auc": runs.finite(age_auc[1]),
                "fresh_age_logloss": runs.finite(age_loss[1]),
                "fresh_age_events": fresh_age_events,
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
                    "events": events["interactions"].tolist(),
                    "auc": runs.finite(ib_auc),
                    "logloss": runs.finite(ib_loss),
                },
                "by_item_age": {
                    "buckets": runs.age_labels(),
                    "events": events["age"].tolist(),
                    "auc": runs.finite(ab_auc),
                    "logloss": runs.finite(ab_loss),
                },
                "over_time": {
                    "window_seconds": int(width),
                    "start": [(first_window + k) * width for k in range(n_windows)],
                    "events": events["window"].tolist(),
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
