"""The paper's claims checked against their *magnitude*, each with a bootstrap interval over items.

Saket, Jeunen & Kalim (SIGIR 2024) make four claims about real-time vs batch embeddings. A run
(``embcore study``, ``embcore replay``) supplies per-item measurements; each claim is a
:class:`ClaimSpec` — the statistic, its value under "no effect" (the null), the paper's direction
and a tolerance band around the paper's magnitude, all fixed in advance (docs/study.md) — and
:func:`check` turns an estimate and its interval into a :class:`ClaimCheck` with one verdict:

``"reproduced"``
    The interval excludes the null on the paper's side and the estimate is inside the band.
``"direction only"``
    The interval excludes the null on the paper's side, but the estimate is outside the band
    (the effect exists, at another magnitude).
``"inconclusive"``
    The interval contains the null.
``"contradicted"``
    The interval excludes the null on the other side.
``"n/a"``
    The run cannot measure it (a mode missing, too few items); ``note`` says why.

The four measurements (:func:`maturity_ratio`, :func:`peak_shift`, :func:`norm_ratio`,
:func:`popular_norm_ratio`, :func:`fresh_lift_gap`) take plain per-item arrays, so any run that
can produce them — the simulator study, a replayed log — uses the same code.

Design notes
------------
* The bootstrap resamples *items* (the unit that is sampled: each item's views, clicks and
  trajectory are correlated, events are not independent). One multinomial weight matrix
  ``(n_boot, n_items)`` is drawn per population from a seeded generator and every statistic is
  a weighted reduction over it, so there is no Python loop over resamples: sums are one matmul,
  medians one sort of the values plus a cumulative sum of the weights in that order.
* Paired designs: when two modes are measured on the same items, both use the same resample,
  so the interval reflects the difference between modes, not the spread of the items twice.
* Intervals are percentile intervals (``level`` = 0.95) without interpolation
  (``method="inverted_cdf"``), so a statistic that can be infinite (a median of items of which
  most never mature) keeps a meaningful interval.

>>> w = bootstrap_weights(4, n_boot=3, seed=0)
>>> w.shape, bool((w.sum(axis=1) == 4).all())
((3, 4), True)
>>> weighted_median(np.array([1.0, 2.0, 3.0]), np.ones(3)).item()
2.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "CLAIMS",
    "DEFAULT_BOOTSTRAP",
    "DEFAULT_LEVEL",
    "ClaimCheck",
    "ClaimSpec",
    "bootstrap_weights",
    "check",
    "fresh_lift_gap",
    "interval",
    "maturity_ratio",
    "norm_ratio",
    "peak_shift",
    "popular_norm_ratio",
    "weighted_median",
]

F64 = npt.NDArray[np.float64]
DEFAULT_BOOTSTRAP = 500
"""Bootstrap resamples per interval."""
DEFAULT_LEVEL = 0.95
#: Items a claim needs for a verdict (as the learning peak needs per bin).
MIN_ITEMS = 10
"""Coverage of the intervals."""
MIN_PEAK_ITEMS = 10
"""A bin of the update curve competes for the peak only with at least this many items."""


@dataclass(frozen=True)
class ClaimSpec:
    """One of the paper's claims as a testable statement, fixed before any run.

    Parameters
    ----------
    key : str
        Identifier in ``metrics.json`` (``claims.<key>``).
    claim : str
        The claim in words.
    paper : str
        The paper's magnitude in words.
    statistic : str
        What is estimated.
    null : float
        The statistic's value when there is no effect.
    direction : int
        +1 if the paper's effect is above the null, -1 if below.
    band : tuple of float
        ``(low, high)``: the tolerance band around the paper's magnitude (inclusive; either
        end may be infinite).
    """

    key: str
    claim: str
    paper: str
    statistic: str
    null: float
    direction: int
    band: tuple[float, float]

    def band_text(self) -> str:
        """The band for a reader (``[0.1, 0.4]``, ``>= 1``).

        >>> CLAIMS["maturity"].band_text(), CLAIMS["peak"].band_text()
        ('[0.1, 0.4]', '>= 1')
        """
        low, high = self.band
        if math.isinf(high):
            return f">= {low:g}"
        if math.isinf(low):
            return f"<= {high:g}"
        return f"[{low:g}, {high:g}]"


CLAIMS: dict[str, ClaimSpec] = {
    spec.key: spec
    for spec in (
        ClaimSpec(
            key="maturity",
            claim="Real-time embeddings mature with fewer interactions",
            paper="about 20% of batch's interactions",
            statistic="median interactions to maturity, realtime / batch (same items)",
            null=1.0,
            direction=-1,
            band=(0.1, 0.4),
        ),
        ClaimSpec(
            key="peak",
            claim="The learning peak comes earlier under real-time updates",
            paper="earlier",
            statistic="batch peak bin - realtime peak bin, in doublings of the view count",
            null=0.0,
            direction=+1,
            band=(1.0, math.inf),
        ),
        ClaimSpec(
            key="norms",
            claim="Batch embeddings have larger norms",
            paper="up to about 5x",
            statistic="median norm, batch / realtime (same items)",
            null=1.0,
            direction=+1,
            band=(2.5, 10.0),
        ),
        ClaimSpec(
            key="norms_popularity",
            claim="... and more so for popular items",
            paper="tied to popularity",
            statistic="batch/realtime median-norm ratio, top popularity decile / bottom decile",
            null=1.0,
            direction=+1,
            band=(1.5, math.inf),
        ),
        ClaimSpec(
            key="fresh_lift",
            claim="Real-time's engagement gain is mostly on fresh items",
            paper="larger lift on fresh items",
            statistic="realtime/batch CTR lift on fresh items - the lift on the others",
            null=0.0,
            direction=+1,
            band=(0.05, math.inf),
        ),
    )
}
"""The paper's claims, in report order (tolerance bands fixed in advance: docs/study.md)."""


@dataclass(frozen=True)
class ClaimCheck:
    """A claim checked on one run: the estimate, its interval and the verdict.

    Attributes
    ----------
    spec : ClaimSpec
    estimate : float or None
        The statistic on all items (None: not measurable).
    low, high : float or None
        The bootstrap percentile interval at ``level``.
    n_items : int
        Items the estimate is computed on.
    verdict : str
        ``"reproduced"``, ``"direction only"``, ``"inconclusive"``, ``"contradicted"`` or
        ``"n/a"`` (module docstring).
    note : str
        Why the claim is n/a, or a remark on the estimate.
    """

    spec: ClaimSpec
    estimate: float | None
    low: float | None
    high: float | None
    level: float
    n_items: int
    n_boot: int
    verdict: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields (non-finite numbers become None, with the infinite ends named in
        ``note``)."""

        def plain(value: float | None) -> float | None:
            return None if value is None or not math.isfinite(value) else float(value)

        return {
            "claim": self.spec.claim,
            "paper": self.spec.paper,
            "statistic": self.spec.statistic,
            "null": self.spec.null,
            "band": [plain(self.spec.band[0]), plain(self.spec.band[1])],
            "band_text": self.spec.band_text(),
            "estimate": plain(self.estimate),
            "interval": [plain(self.low), plain(self.high)],
            "level": self.level,
            "n_items": self.n_items,
            "n_boot": self.n_boot,
            "verdict": self.verdict,
            "note": self.note,
        }

    def measured_text(self) -> str:
        """``estimate [low, high]`` for the report (``inf`` where a median is unbounded)."""
        if self.estimate is None:
            return "n/a" + (f" ({self.note})" if self.note else "")

        def fmt(value: float | None) -> str:
            return "n/a" if value is None else (f"{value:.3g}" if math.isfinite(value) else "inf")

        text = f"{fmt(self.estimate)} [{fmt(self.low)}, {fmt(self.high)}]"
        return text + f", {self.n_items:,d} items"


def check(
    spec: ClaimSpec,
    estimate: float | None,
    samples: npt.ArrayLike | None,
    n_items: int,
    *,
    level: float = DEFAULT_LEVEL,
    note: str = "",
) -> ClaimCheck:
    """The verdict on ``spec`` given the estimate and its bootstrap ``samples``.

    NaN samples (a resample in which the statistic is undefined) are dropped; if more than
    half are NaN the claim is n/a. Fewer than ``MIN_ITEMS`` items make it n/a too: a bootstrap
    over a handful of items says nothing about the population.

    >>> spec = CLAIMS["norms"]
    >>> check(spec, 3.6, [3.0, 3.5, 4.0], 100).verdict
    'reproduced'
    >>> check(spec, 1.2, [1.1, 1.2, 1.3], 100).verdict
    'direction only'
    >>> check(spec, 1.01, [0.9, 1.0, 1.1], 100).verdict
    'inconclusive'
    >>> check(spec, 0.8, [0.7, 0.8, 0.9], 100).verdict
    'contradicted'
    >>> check(spec, 3.6, [3.0, 3.5, 4.0], 2).verdict
    'n/a'
    """
    n_boot = 0 if samples is None else int(np.asarray(samples).size)
    if estimate is None or math.isnan(estimate):
        return ClaimCheck(spec, None, None, None, level, n_items, n_boot, "n/a", note)
    if n_items < MIN_ITEMS:
        why = f"{n_items} items, fewer than {MIN_ITEMS}" + (f"; {note}" if note else "")
        return ClaimCheck(spec, float(estimate), None, None, level, n_items, n_boot, "n/a", why)
    low = high = None
    if samples is not None:
        s = np.asarray(samples, dtype=np.float64).ravel()
        kept = s[~np.isnan(s)]
        if kept.size * 2 > s.size:
            low, high = interval(kept, level)
    if low is None or high is None:
        why = note or "the statistic is undefined in most resamples"
        return ClaimCheck(spec, float(estimate), None, None, level, n_items, n_boot, "n/a", why)
    sign = spec.direction
    if sign * (low - spec.null) > 0 and sign * (high - spec.null) > 0:
        inside = spec.band[0] <= estimate <= spec.band[1]
        verdict = "reproduced" if inside else "direction only"
    elif sign * (low - spec.null) < 0 and sign * (high - spec.null) < 0:
        verdict = "contradicted"
    else:
        verdict = "inconclusive"
    return ClaimCheck(spec, float(estimate), low, high, level, n_items, n_boot, verdict, note)


def unavailable(spec: ClaimSpec, note: str, n_items: int = 0) -> ClaimCheck:
    """An n/a check with the reason.

    >>> unavailable(CLAIMS["peak"], "needs both modes").verdict
    'n/a'
    """
    return ClaimCheck(spec, None, None, None, DEFAULT_LEVEL, n_items, 0, "n/a", note)


# --------------------------------------------------------------------------------------------
# Bootstrap machinery


def bootstrap_weights(n_items: int, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> F64:
    """Multinomial resampling weights ``(n_boot, n_items)``: row b counts how often each item
    is drawn in resample b (each row sums to ``n_items``)."""
    if n_items <= 0:
        return np.zeros((n_boot, 0), dtype=np.float64)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xB007]))
    draws = rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=n_boot)
    return draws.astype(np.float64)


def interval(samples: npt.ArrayLike, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """Percentile interval of ``samples`` (no interpolation, so infinities are kept).

    >>> interval(np.arange(101.0), 0.9)
    (5.0, 95.0)
    """
    s = np.asarray(samples, dtype=np.float64).ravel()
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(s, [tail, 1.0 - tail], method="inverted_cdf")
    return float(low), float(high)


def weighted_median(values: npt.ArrayLike, weights: npt.ArrayLike) -> F64:
    """Lower weighted median of ``values`` (n,) under each row of ``weights`` ((n,) or (B, n)):
    the smallest value whose cumulative weight reaches half the total. NaN for a row whose
    weights sum to 0. Values may be ``inf``.

    >>> weighted_median([1.0, 2.0, 10.0], [[1, 1, 1], [0, 0, 3], [3, 0, 0]]).tolist()
    [2.0, 10.0, 1.0]
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if w.shape[1] != v.size:
        raise ValueError(f"weights have {w.shape[1]} columns but values has {v.size} elements")
    if v.size == 0:
        return np.full(w.shape[0], np.nan)
    order = np.argsort(v, kind="stable")
    cumulative = np.cumsum(w[:, order], axis=1)
    total = cumulative[:, -1]
    reach = cumulative >= (total / 2.0)[:, None] - 1e-9
    first = np.argmax(reach, axis=1)
    out = v[order][first]
    return np.where(total > 0, out, np.nan)


def _ratio(numerator: F64, denominator: F64) -> F64:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = numerator / denominator
    # 0/0 and inf/inf are undefined; x/0 (x > 0) is +inf (a median that is never reached).
    return np.where(np.isnan(out), np.nan, out)


# --------------------------------------------------------------------------------------------
# The measurements


def maturity_ratio(
    realtime: npt.ArrayLike,
    batch: npt.ArrayLike,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> ClaimCheck:
    """Median interactions to maturity, realtime / batch, over the same items (paired).

    ``realtime[i]`` and ``batch[i]`` are item i's interactions to maturity in each mode,
    ``inf`` for an item that never matured during its life (it counts, as "more than any n").

    >>> rt = np.array([2.0, 3.0, 4.0, 2.0] * 30)
    >>> maturity_ratio(rt, rt * 5).verdict
    'reproduced'
    """
    spec = CLAIMS["maturity"]
    rt = np.asarray(realtime, dtype=np.float64).ravel()
    b = np.asarray(batch, dtype=np.float64).ravel()
    if rt.size != b.size:
        raise ValueError(f"realtime has {rt.size} items but batch has {b.size}; pair them")
    if rt.size == 0:
        return unavailable(spec, "no items measured in both modes")
    weights = bootstrap_weights(rt.size, n_boot, seed)
    point = _ratio(weighted_median(rt, np.ones(rt.size)), weighted_median(b, np.ones(b.size)))
    samples = _ratio(weighted_median(rt, weights), weighted_median(b, weights))
    estimate = float(point[0])
    rt_median, b_median = (
        weighted_median(rt, np.ones(rt.size))[0],
        weighted_median(b, np.ones(b.size))[0],
    )
    note = ""
    if math.isinf(b_median) and math.isfinite(rt_median):
        note = "batch's median is never reached: more than half its items never mature"
    elif math.isinf(rt_median) and math.isfinite(b_median):
        note = "realtime's median is never reached: more than half its items never mature"
    elif b_median == 0:
        note = "batch's median is 0 interactions"
    return check(spec, estimate, samples, int(rt.size), level=level, note=note)


def _peak_bins(sums: F64, views: F64, items: F64, min_items: int) -> F64:
    """argmax over bins of sums/views among bins with >= min_items items, per row (NaN: none)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        curve = np.where((items >= min_items) & (views > 0), sums / views, -np.inf)
    best = np.argmax(curve, axis=-1).astype(np.float64)
    valid = np.isfinite(np.max(curve, axis=-1))
    return np.where(valid, best, np.nan)


def peak_shift(
    realtime: tuple[npt.ArrayLike, npt.ArrayLike],
    batch: tuple[npt.ArrayLike, npt.ArrayLike],
    *,
    min_items: int = MIN_PEAK_ITEMS,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> ClaimCheck:
    """How many log2 bins later batch's update peak is than real-time's (same items, paired).

    Each mode gives ``(change_sums, views)``, two ``(n_items, n_bins)`` arrays: item i's summed
    serving-embedding change 1 - cos(S(n), S(n-1)) over the views n in bin k, and its number
    of views in bin k. A bin's curve value is the ratio of the column sums; the peak is the
    argmax over bins holding at least ``min_items`` items (items with a view in the bin).

    >>> views = np.ones((20, 4))
    >>> early = np.tile([0.5, 0.1, 0.0, 0.0], (20, 1)); late = early[:, ::-1]
    >>> peak_shift((early, views), (late, views)).estimate
    3.0
    """
    spec = CLAIMS["peak"]
    rt_s, rt_v = (np.asarray(a, dtype=np.float64) for a in realtime)
    b_s, b_v = (np.asarray(a, dtype=np.float64) for a in batch)
    if not (rt_s.shape == rt_v.shape == b_s.shape == b_v.shape) or rt_s.ndim != 2:
        raise ValueError(
            "peak_shift needs four (n_items, n_bins) arrays of one shape, got "
            f"{rt_s.shape}, {rt_v.shape}, {b_s.shape}, {b_v.shape}"
        )
    n = rt_s.shape[0]
    if n == 0:
        return unavailable(spec, "no items measured in both modes")
    weights = np.vstack([np.ones((1, n)), bootstrap_weights(n, n_boot, seed)])

    def peaks(sums: F64, views: F64) -> F64:
        return _peak_bins(weights @ sums, weights @ views, weights @ (views > 0), min_items)

    shift = peaks(b_s, b_v) - peaks(rt_s, rt_v)
    if math.isnan(shift[0]):
        return unavailable(spec, f"no bin holds {min_items} items in both modes", n)
    return check(spec, float(shift[0]), shift[1:], n, level=level)


def norm_ratio(
    realtime: npt.ArrayLike,
    batch: npt.ArrayLike,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> ClaimCheck:
    """Median item-embedding norm, batch / realtime, over the same items (paired).

    >>> rt = np.linspace(0.1, 0.2, 200)
    >>> norm_ratio(rt, 4 * rt).verdict
    'reproduced'
    """
    spec = CLAIMS["norms"]
    rt = np.asarray(realtime, dtype=np.float64).ravel()
    b = np.asarray(batch, dtype=np.float64).ravel()
    if rt.size != b.size:
        raise ValueError(f"realtime has {rt.size} items but batch has {b.size}; pair them")
    if rt.size == 0:
        return unavailable(spec, "no items in both modes")
    weights = bootstrap_weights(rt.size, n_boot, seed)
    ones = np.ones(rt.size)
    point = _ratio(weighted_median(b, ones), weighted_median(rt, ones))[0]
    samples = _ratio(weighted_median(b, weights), weighted_median(rt, weights))
    return check(spec, float(point), samples, int(rt.size), level=level)


def decile_of(popularity: npt.ArrayLike, n_buckets: int = 10) -> npt.NDArray[np.int64]:
    """Popularity decile (0 = least popular) of each item, by rank (ties broken by order, so
    every decile holds a tenth of the items).

    >>> decile_of(np.arange(20)).tolist()[:4], decile_of(np.arange(20)).max()
    ([0, 0, 1, 1], np.int64(9))
    """
    p = np.asarray(popularity, dtype=np.float64).ravel()
    rank = np.empty(p.size, dtype=np.int64)
    rank[np.argsort(p, kind="stable")] = np.arange(p.size)
    return (rank * n_buckets) // max(p.size, 1)


def decile_norm_ratios(
    realtime: npt.ArrayLike,
    batch: npt.ArrayLike,
    popularity: npt.ArrayLike,
    *,
    n_buckets: int = 10,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> dict[str, Any]:
    """Batch/realtime median-norm ratio per popularity decile, each with its interval, plus the
    bootstrap samples of every decile (``samples``, shape ``(n_boot, n_buckets)``).

    >>> out = decile_norm_ratios(np.ones(100), np.arange(1, 101.0), np.arange(100))
    >>> [round(r) for r in out["ratio"][:3]]
    [5, 15, 25]
    """
    rt = np.asarray(realtime, dtype=np.float64).ravel()
    b = np.asarray(batch, dtype=np.float64).ravel()
    bucket = decile_of(popularity, n_buckets)
    weights = bootstrap_weights(rt.size, n_boot, seed)
    point, samples = np.full(n_buckets, np.nan), np.full((n_boot, n_buckets), np.nan)
    for k in range(n_buckets):  # a loop over deciles, not over resamples
        member = (bucket == k).astype(np.float64)
        if not member.any():
            continue
        point[k] = _ratio(weighted_median(b, member), weighted_median(rt, member))[0]
        w = weights * member
        samples[:, k] = _ratio(weighted_median(b, w), weighted_median(rt, w))
    low = np.full(n_buckets, np.nan)
    high = np.full(n_buckets, np.nan)
    for k in range(n_buckets):
        kept = samples[:, k][~np.isnan(samples[:, k])]
        if kept.size:
            low[k], high[k] = interval(kept, level)
    p = np.asarray(popularity, dtype=np.float64).ravel()
    members = [bucket == k for k in range(n_buckets)]
    return {
        "ratio": point.tolist(),
        "low": low.tolist(),
        "high": high.tolist(),
        "n_items": np.bincount(bucket, minlength=n_buckets).tolist(),
        "popularity_low": [float(p[m].min()) if m.any() else None for m in members],
        "popularity_high": [float(p[m].max()) if m.any() else None for m in members],
        "samples": samples,
    }


def popular_norm_ratio(
    realtime: npt.ArrayLike,
    batch: npt.ArrayLike,
    popularity: npt.ArrayLike,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> ClaimCheck:
    """The batch/realtime median-norm ratio in the top popularity decile divided by the ratio in
    the bottom decile (deciles fixed on all items; items resampled, paired across modes).

    >>> pop = np.arange(200.0)
    >>> popular_norm_ratio(np.ones(200), 1 + pop / 20, pop).verdict
    'reproduced'
    """
    spec = CLAIMS["norms_popularity"]
    rt = np.asarray(realtime, dtype=np.float64).ravel()
    if rt.size < 20:
        return unavailable(spec, f"{rt.size} items: too few for deciles", rt.size)
    out = decile_norm_ratios(realtime, batch, popularity, n_boot=n_boot, seed=seed, level=level)
    point = out["ratio"][-1] / out["ratio"][0] if out["ratio"][0] else math.nan
    samples = _ratio(out["samples"][:, -1], out["samples"][:, 0])
    return check(spec, point, samples, int(rt.size), level=level)


def fresh_lift_gap(
    realtime: Mapping[str, npt.ArrayLike],
    batch: Mapping[str, npt.ArrayLike],
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> ClaimCheck:
    """Real-time/batch CTR lift on fresh impressions minus the lift on the others.

    Each mode gives per-item arrays (one entry per item of the union shown by either mode, 0
    where a mode never showed it) ``fresh_clicks``, ``fresh_impressions``, ``other_clicks``,
    ``other_impressions``. A lift is the ratio of the two modes' click-through rates (sums over
    items); items are resampled (cluster bootstrap), paired across modes.

    >>> n = 100
    >>> rt = {"fresh_clicks": np.full(n, 3.0), "fresh_impressions": np.full(n, 10.0),
    ...       "other_clicks": np.full(n, 2.0), "other_impressions": np.full(n, 10.0)}
    >>> b = {**rt, "fresh_clicks": np.full(n, 1.5)}
    >>> round(fresh_lift_gap(rt, b).estimate, 3)  # 2.0 - 1.0
    1.0
    """
    spec = CLAIMS["fresh_lift"]
    keys = ("fresh_clicks", "fresh_impressions", "other_clicks", "other_impressions")
    rt = np.stack([np.asarray(realtime[k], dtype=np.float64).ravel() for k in keys], axis=1)
    b = np.stack([np.asarray(batch[k], dtype=np.float64).ravel() for k in keys], axis=1)
    if rt.shape != b.shape:
        raise ValueError(f"realtime has {rt.shape[0]} items but batch has {b.shape[0]}")
    n = rt.shape[0]
    if n == 0:
        return unavailable(spec, "no impressions")
    weights = np.vstack([np.ones((1, n)), bootstrap_weights(n, n_boot, seed)])
    r, q = weights @ rt, weights @ b
    fresh = _ratio(_ratio(r[:, 0], r[:, 1]), _ratio(q[:, 0], q[:, 1]))
    other = _ratio(_ratio(r[:, 2], r[:, 3]), _ratio(q[:, 2], q[:, 3]))
    gap = fresh - other
    if not math.isfinite(gap[0]):
        return unavailable(spec, "a mode has no fresh or no other clicks", n)
    note = f"fresh lift {fresh[0]:.3f}, other lift {other[0]:.3f}"
    return check(spec, float(gap[0]), gap[1:], n, level=level, note=note)
