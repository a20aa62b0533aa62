"""The measurement protocol of a multi-mode run: every finding measured the same way in every
mode, on the same items (docs/study.md, "Protocol").

A :class:`ServingGrid` holds, for each tracked item of one mode, the embedding that *served* the
item at each of its views: serving row S(n) at view n is the item's state after the interactions
that had reached serving before view n — the live row for real-time and hybrid (recorded at
every count up to :data:`DENSE_VIEWS`, see :func:`serving_milestones`), the last publish for
batch — and the initial row e(0) before anything reached it. On that grid:

- :func:`update_curve` — I(n) = mean over items of 1 - cos(S(n), S(n-1)), log2-binned; the
  learning peak is the bin with the largest I among bins holding >= 10 items.
- :func:`maturity_points` — interactions to maturity per item under two criteria: *absolute*
  d(S(n), e*) < α (with the never-learned share, d(e(0), e*) < α, reported apart) and
  *relative* (init-invariant) d(S(n), e*) < α · d(e(0), e*).
- :func:`settled` — items whose life ended at least ``window + period`` before the horizon, so
  their reference e* (the serving row at the horizon) has settled.

Design notes
------------
* Every mode tracks the same item ids (the monitor's hash, one seed), but not every mode shows
  every item; analyses use the items present in every mode (:func:`common_ids`) and report
  how many.
* The state before an item's first update is e(0) in every mode. Serving actually scores an
  item that is not in the serving table yet with a zero vector; using e(0) keeps I(n) and the
  distances defined (a zero vector has no direction) and is the same convention in each mode.
* A change of the serving row between view n-1 and view n is counted at view n; the last
  change of an item (after its last view) served nothing and is not counted.
* An item matures only if its final within-threshold run holds at least two records: a run
  made of the last record alone is the reference meeting itself, no evidence.
* Never matured during a finished life is an outcome, not censoring: it enters the medians as
  "more than any n" (``inf``); the Kaplan-Meier curve that treats it as censored is shown
  beside the raw mature-by-n curve.

>>> from embcore.analysis import Trajectories
>>> t = Trajectories.from_arrays([1, 1, 1], [0, 1, 2], [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
>>> grid = ServingGrid.build(t, views=(np.array([1], np.uint64), np.array([3])))
>>> sums, views = update_curve(grid)
>>> sums[0, :2].tolist(), views[0, :2].tolist()  # the change e(0) -> e(1) served view 2
([1.0, 0.0], [1.0, 1.0])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from embcore import analysis

__all__ = [
    "DENSE_VIEWS",
    "N_BINS",
    "ServingGrid",
    "bin_labels",
    "common_ids",
    "km_curve",
    "mature_by_n",
    "maturity_points",
    "serving_milestones",
    "settled",
    "update_curve",
]

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

DENSE_VIEWS = 256
"""Real-time/hybrid rows are recorded at every count up to this, so I(n) is exact for n <= it."""
N_BINS = int(math.log2(DENSE_VIEWS))
"""Log2 bins of the update curve: views 2, 3-4, 5-8, ..., 129-256."""


def serving_milestones(dense: int = DENSE_VIEWS) -> list[int]:
    """Monitor milestones of the study: every count 1..``dense``, then about ten per decade.

    >>> m = serving_milestones(8)
    >>> m[:9], m[9:12]
    ([1, 2, 3, 4, 5, 6, 7, 8, 10], [13, 16, 20])
    """
    out = list(range(1, dense + 1))
    scale = 1
    while scale <= 10**9:
        out += [f * scale for f in (10, 13, 16, 20, 25, 32, 40, 50, 65, 80) if f * scale > dense]
        scale *= 10
    return out


def bin_labels(n_bins: int = N_BINS) -> list[str]:
    """View ranges of the update-curve bins.

    >>> bin_labels(4)
    ['2', '3-4', '5-8', '9-16']
    """
    out = []
    for b in range(n_bins):
        lo, hi = 2**b + 1, 2 ** (b + 1)
        out.append(str(hi) if lo == hi else f"{lo}-{hi}")
    return out


@dataclass(frozen=True, eq=False)
class ServingGrid:
    """The serving rows of one mode's tracked items over their views.

    Item ``i`` owns records ``starts[i]:ends[i]`` in count order; record ``j`` (count
    ``counts[j]``, row ``rows[j]``) served the item's views ``counts[j] + 1 .. counts[j + 1]``.
    The first record of every item is e(0) at count 0. ``views[i]`` is the item's number of
    views (interactions) in this mode.
    """

    item_ids: U64
    starts: I64
    ends: I64
    counts: I64
    rows: F32
    views: I64

    @classmethod
    def build(cls, traj: analysis.Trajectories, views: tuple[Any, Any]) -> ServingGrid:
        """From trajectories that start with e(0) at count 0 (``runs``' initial rows) and the
        items' view counts ``(ids, counts)``; an item absent from ``views`` gets its last
        recorded count. Duplicate (id, count) records keep the last one."""
        ids, counts, rows = traj.ids, traj.counts, traj.rows
        keep = np.ones(ids.size, dtype=bool)
        if ids.size > 1:
            keep[:-1] = (ids[1:] != ids[:-1]) | (counts[1:] != counts[:-1])
        ids, counts, rows = ids[keep], counts[keep], rows[keep]
        first = np.ones(ids.size, dtype=bool)
        first[1:] = ids[1:] != ids[:-1]
        starts = np.flatnonzero(first).astype(np.int64)
        ends = np.append(starts[1:], ids.size).astype(np.int64)
        item_ids = ids[starts]
        view_ids = np.asarray(views[0], dtype=np.uint64)
        view_counts = np.asarray(views[1], dtype=np.int64)
        order = np.argsort(view_ids)
        view_ids, view_counts = view_ids[order], view_counts[order]
        pos = np.minimum(np.searchsorted(view_ids, item_ids), max(view_ids.size - 1, 0))
        found = view_ids.size > 0 and (view_ids[pos] == item_ids)
        last_count = counts[ends - 1] if ids.size else np.zeros(0, dtype=np.int64)
        n_views = np.where(found, view_counts[pos] if view_ids.size else 0, last_count)
        return cls(item_ids, starts, ends, counts, rows, np.maximum(n_views, last_count))

    def __len__(self) -> int:
        return int(self.item_ids.size)

    def subset(self, ids: npt.ArrayLike) -> ServingGrid:
        """The grid of the items ``ids`` (each must be in the grid), in the order given."""
        want = np.asarray(ids, dtype=np.uint64)
        pos = np.searchsorted(self.item_ids, want)
        if want.size and (
            pos.max() >= self.item_ids.size or bool((self.item_ids[pos] != want).any())
        ):
            raise KeyError("subset() got ids that are not in the grid")
        sizes = self.ends[pos] - self.starts[pos]
        index = np.repeat(self.starts[pos] - np.cumsum(sizes) + sizes, sizes) + np.arange(
            int(sizes.sum())
        )
        ends = np.cumsum(sizes).astype(np.int64)
        return ServingGrid(
            want, ends - sizes, ends, self.counts[index], self.rows[index], self.views[pos]
        )

    def last_rows(self) -> F32:
        """Each item's last recorded row."""
        return self.rows[self.ends - 1]


def common_ids(*id_sets: npt.ArrayLike) -> U64:
    """Sorted ids present in every set.

    >>> common_ids([3, 1, 2], [2, 3, 4]).tolist()
    [2, 3]
    """
    out: U64 | None = None
    for ids in id_sets:
        arr = np.unique(np.asarray(ids, dtype=np.uint64))
        out = arr if out is None else np.intersect1d(out, arr, assume_unique=True)
    return np.zeros(0, dtype=np.uint64) if out is None else out


def settled(
    life_end: npt.ArrayLike,
    *,
    horizon: int,
    window: int,
    period: int,
) -> npt.NDArray[np.bool_]:
    """Whether each item's life (its last possible view, ``life_end``) ended at least
    ``window + period`` seconds before ``horizon``: every view has then been through a full
    training window and a publish, so the serving row at the horizon is settled.

    >>> settled([100, 900], horizon=1000, window=300, period=300).tolist()
    [True, False]
    """
    end = np.asarray(life_end, dtype=np.int64)
    return end <= int(horizon) - int(window) - int(period)


def _cosine_rows(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> F64:
    """Row-wise cosine in float64 (0 when either row is zero)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dot = np.einsum("ij,ij->i", a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), 0.0)


def update_curve(grid: ServingGrid, n_bins: int = N_BINS) -> tuple[F64, F64]:
    """Per item and log2 bin: the summed serving change and the number of views.

    Returns ``(sums, views)``, both ``(n_items, n_bins)``: bin b covers views
    ``2**b + 1 .. 2**(b + 1)`` (view 2, 3-4, 5-8, ...); ``sums[i, b]`` adds
    1 - cos(S(n), S(n-1)) over item i's views n in the bin, ``views[i, b]`` counts them.
    """
    m = len(grid)
    sums = np.zeros((m, n_bins))
    lo = 2 ** np.arange(n_bins) + 1
    hi = 2 ** (np.arange(n_bins) + 1)
    views = np.clip(np.minimum(grid.views[:, None], hi[None, :]) - lo[None, :] + 1, 0, None)
    if m == 0:
        return sums, views.astype(np.float64)
    n = grid.counts.size
    later = np.ones(n, dtype=bool)
    later[grid.starts] = False  # record j > first of its item: a change at view counts[j] + 1
    item_of = np.repeat(np.arange(m), grid.ends - grid.starts)
    j = np.flatnonzero(later)
    change = 1.0 - _cosine_rows(grid.rows[j], grid.rows[j - 1])
    view = grid.counts[j] + 1
    served = (view <= grid.views[item_of[j]]) & (view <= 2**n_bins)
    bins = np.ceil(np.log2(view[served])).astype(np.int64) - 1
    np.add.at(sums, (item_of[j][served], bins), change[served])
    return sums, views.astype(np.float64)


def curve_summary(
    sums: F64, views: F64, min_items: int = 10, labels: Sequence[str] | None = None
) -> dict[str, Any]:
    """I per bin (ratio of column sums), items per bin and the peak bin (argmax over bins with
    at least ``min_items`` items).

    >>> out = curve_summary(np.array([[0.5, 0.1]] * 10), np.ones((10, 2)), labels=["2", "3-4"])
    >>> out["peak_bin"], out["peak_views"]
    (0, '2')
    """
    labels = list(labels) if labels is not None else bin_labels(sums.shape[1])
    total, n_views = sums.sum(axis=0), views.sum(axis=0)
    items = (views > 0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = np.where(n_views > 0, total / np.where(n_views > 0, n_views, 1.0), np.nan)
    competing = (items >= min_items) & np.isfinite(curve)
    peak = int(np.argmax(np.where(competing, curve, -np.inf))) if competing.any() else None
    return {
        "bins": labels,
        "update": [None if not math.isfinite(v) else float(v) for v in curve],
        "items": items.astype(np.int64).tolist(),
        "competing": competing.tolist(),
        "min_items": int(min_items),
        "peak_bin": peak,
        "peak_views": None if peak is None else labels[peak],
    }


@dataclass(frozen=True, eq=False)
class MaturityPoints:
    """Interactions to maturity of each item of a grid, per α and criterion.

    ``absolute[α]`` and ``relative[α]`` hold n(α) (``inf``: never matured); ``never_learned[α]``
    flags items whose reference is within α of e(0); ``initial_distance`` is d(e(0), e*).
    """

    alphas: tuple[float, ...]
    absolute: dict[float, F64]
    relative: dict[float, F64]
    never_learned: dict[float, npt.NDArray[np.bool_]]
    initial_distance: F64
    views: I64


def maturity_points(
    grid: ServingGrid, reference: npt.ArrayLike, alphas: Sequence[float]
) -> MaturityPoints:
    """n(α) per item on the serving grid against ``reference`` (one row per item, e*).

    n(α) is the count of the first record of the item's final run of records within the
    threshold (absolute: d < α; relative: d < α · d(e(0), e*)), when that run holds at least
    two records; otherwise the item never matured (``inf``).

    >>> from embcore.analysis import Trajectories
    >>> rows = [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.0, 1.0]]
    >>> t = Trajectories.from_arrays([5] * 4, [0, 1, 2, 3], rows)
    >>> g = ServingGrid.build(t, (np.array([5], np.uint64), np.array([3])))
    >>> maturity_points(g, [[0.0, 1.0]], [0.05]).relative[0.05].tolist()
    [2.0]
    """
    ref = np.asarray(reference, dtype=np.float64)
    m = len(grid)
    if ref.shape[0] != m:
        raise ValueError(f"reference has {ref.shape[0]} rows but the grid has {m} items")
    sizes = grid.ends - grid.starts
    item_of = np.repeat(np.arange(m), sizes)
    distance = 1.0 - _cosine_rows(grid.rows, ref[item_of]) if m else np.zeros(0, dtype=np.float64)
    d0 = distance[grid.starts] if m else np.zeros(0)
    index = np.arange(distance.size)
    last = grid.ends - 1
    absolute: dict[float, F64] = {}
    relative: dict[float, F64] = {}
    never: dict[float, npt.NDArray[np.bool_]] = {}
    for alpha in alphas:
        for out, threshold in ((absolute, alpha), (relative, alpha * d0[item_of] if m else 0)):
            if m == 0:
                out[alpha] = np.zeros(0)
                continue
            violation = np.where(distance >= threshold, index, -1)
            last_violation = np.maximum.reduceat(violation, grid.starts)
            first_within = np.where(last_violation >= 0, last_violation + 1, grid.starts)
            matured = first_within < last
            n = grid.counts[np.minimum(first_within, last)].astype(np.float64)
            out[alpha] = np.where(matured, n, np.inf)
        never[alpha] = d0 < alpha
    return MaturityPoints(
        tuple(alphas), absolute, relative, never, d0.astype(np.float64), grid.views.copy()
    )


def _median(values: F64) -> float | None:
    """Lower median (``inf`` allowed); None when empty."""
    if values.size == 0:
        return None
    return float(np.quantile(values, 0.5, method="inverted_cdf"))


def mature_by_n(n: F64, points: int = 60) -> dict[str, list[Any]]:
    """The raw curve: share of items mature after at most n interactions (never-matured items
    stay in the denominator), at log-spaced n.

    >>> mature_by_n(np.array([0.0, 2.0, np.inf, np.inf]), points=3)
    {'n': [0, 1, 2], 'share': [0.25, 0.25, 0.5]}
    """
    if n.size == 0:
        return {"n": [], "share": []}
    finite = n[np.isfinite(n)]
    top = int(finite.max()) if finite.size else 1
    grid = np.unique(np.concatenate([[0], np.round(np.geomspace(1, max(top, 1), points))]))
    sorted_n = np.sort(finite)
    share = np.searchsorted(sorted_n, grid, side="right") / n.size
    return {"n": grid.astype(np.int64).tolist(), "share": [float(s) for s in share]}


def km_curve(n: F64, views: I64) -> dict[str, Any]:
    """Kaplan–Meier of n(α) with never-matured items censored at their views (the comparison
    the raw curve corrects): median and ``[[n, S(n)], ...]``."""
    observed = np.isfinite(n)
    durations = np.where(observed, n, views).astype(np.int64)
    curve = analysis._curve(durations, observed)
    return {"median": curve.median, "km": curve.km}


def maturity_summary(points: MaturityPoints, alpha: float, criterion: str) -> dict[str, Any]:
    """Median (raw: never-matured count as ``inf``), median among the matured, mature share,
    the share mature at 0 and the KM median, for one α and criterion; JSON-safe."""
    n = (points.absolute if criterion == "absolute" else points.relative)[alpha]
    never = points.never_learned[alpha]
    if criterion == "absolute":
        # The never-learned are reported apart and left out of the absolute medians.
        kept = n[~never]
    else:
        kept = n
    matured = kept[np.isfinite(kept)]
    median = _median(kept)
    km = km_curve(kept, points.views[~never] if criterion == "absolute" else points.views)
    return {
        "criterion": criterion,
        "alpha": alpha,
        "n_items": int(n.size),
        "n_analysed": int(kept.size),
        "never_learned": int(never.sum()),
        "never_learned_share": float(never.mean()) if never.size else None,
        "mature_share": float(matured.size / kept.size) if kept.size else None,
        "mature_at_zero_share": float((n == 0).mean()) if n.size else None,
        "median_interactions": None if median is None or math.isinf(median) else median,
        "median_reached": median is not None and math.isfinite(median),
        "median_among_matured": _median(matured),
        "km_median": km["median"],
        "curve": mature_by_n(kept),
        "km": km["km"],
    }
