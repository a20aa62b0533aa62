"""Offline analysis of recorded trajectories and embedding tables (docs/METRICS.md, B–E).

Four entry points, each returning a frozen result dataclass whose ``to_dict()`` gives plain,
JSON-safe Python types (non-finite floats become ``None``; large per-row arrays stay available as
attributes but are left out of ``to_dict()``):

- :func:`maturity` — interactions until an item's embedding stays within α of its reference,
  with Kaplan–Meier survival over right-censored items (B.5–B.7).
- :func:`learning_peak` — alignment gain per interaction G(n), mean cosine drift δ by count and
  update efficiency η (C.8–C.10).
- :func:`norm_popularity` — norm quantiles, Spearman ρ and log-log slope against popularity,
  dot-vs-cosine retrieval bias (D.11–D.13).
- :func:`snapshot_drift` — unaligned and Procrustes-aligned per-row drift, linear CKA, k-NN
  Jaccard@k, evicted/new rows (E.14–E.18).

Design notes
------------
* Cosine with a zero-norm row is defined as 0 (so d_cos = 1): a zero row carries no direction, and
  treating it as maximally unconverged is the conservative choice for maturity and drift.
* Everything is vectorised over items: records are sorted by (id, count) so an item is a
  contiguous run, and per-item reductions use ``np.maximum.reduceat`` / ``np.add.reduceat``.
  Python loops run only over α levels, popularity buckets or row blocks.
* Large matrices are processed in row blocks (``_BLOCK_ROWS``) in float64, so memory stays
  O(block · d) beyond the inputs, and d×d sums (AᵀB, Gram matrices) are mergeable across blocks.
  ``_rowwise_cosine`` and ``_cross_product`` are the two kernels meant to move to Rust.
* Maturity under ``reference="final"``: the last record *is* the reference, so its d_cos is 0 by
  construction and is no evidence of convergence. An item counts as mature only if its final
  sub-α run contains at least one record before the last; otherwise it is censored at its last
  recorded count. With ``"last_k"`` or a reference table every record is genuine evidence.
* Invalid input raises :class:`embcore.errors.EmbcoreError` (a ``ValueError``) whose message
  names the offending values, e.g. "ids has 10 elements but rows has 9".
* Duplicate records for the same (id, count) — e.g. a milestone and a batch publish at the same
  count — are collapsed to the last one in input order (the sort is stable).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

from embcore import _core
from embcore.errors import EmbcoreError

__all__ = [
    "LearningPeakResult",
    "MaturityCurve",
    "MaturityLevel",
    "MaturityResult",
    "NormBucket",
    "NormPopularityResult",
    "PopularityBucketMaturity",
    "RetrievalBias",
    "SnapshotDriftResult",
    "Summary",
    "TableLike",
    "Trajectories",
    "as_id_matrix",
    "learning_peak",
    "maturity",
    "norm_popularity",
    "snapshot_drift",
]

F64: TypeAlias = NDArray[np.float64]
I64: TypeAlias = NDArray[np.int64]
U64: TypeAlias = NDArray[np.uint64]
F32: TypeAlias = NDArray[np.float32]
Bool: TypeAlias = NDArray[np.bool_]

_BLOCK_ROWS = 8192
_KM_TOLERANCE = 1e-12
_MATURITY_QUANTILES = (0.25, 0.5, 0.75, 0.9)


class SupportsIdsWeights(Protocol):
    """Anything with ``ids()`` and ``weights()`` in the same row order (e.g. EmbeddingTable)."""

    def ids(self) -> ArrayLike: ...

    def weights(self) -> ArrayLike: ...


TableLike: TypeAlias = "tuple[ArrayLike, ArrayLike] | SupportsIdsWeights"
"""An embedding matrix with ids: ``(ids uint64[n], matrix float32[n, d])`` or a table object."""

Reference: TypeAlias = "Literal['final', 'last_k'] | TableLike"
"""Per-item reference e*: ``"final"``, ``"last_k"`` or a table looked up by id."""


# --------------------------------------------------------------------------- plain-type export


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.metadata.get("export", True)
        }
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"cannot export {type(value).__name__} to plain types")


class _Result:
    """Mixin: ``to_dict()`` for the frozen result dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON-safe plain types (NaN/inf → None, arrays → lists)."""
        out: dict[str, Any] = _plain(self)
        return out


def _internal() -> Any:
    """A dataclass field kept as an attribute but left out of ``to_dict()``."""
    return field(repr=False, metadata={"export": False})


# --------------------------------------------------------------------------- summaries


@dataclass(frozen=True, eq=False)
class Summary(_Result):
    """Count, mean and quantiles of a set of values (NaN when empty).

    >>> Summary.of(np.array([1.0, 2.0, 3.0])).p50
    2.0
    """

    n: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: ArrayLike) -> Summary:
        """Summarise finite ``values`` (non-finite values are ignored)."""
        v = np.asarray(values, dtype=np.float64).ravel()
        v = v[np.isfinite(v)]
        if v.size == 0:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        p50, p90, p99 = np.quantile(v, [0.5, 0.9, 0.99])
        return cls(int(v.size), float(v.mean()), float(p50), float(p90), float(p99), float(v.max()))


# --------------------------------------------------------------------------- validation


def _check_same_length(*named: tuple[str, Any]) -> None:
    (first_name, first), *rest = named
    for name, arr in rest:
        if len(arr) != len(first):
            raise EmbcoreError(
                f"{first_name} has {len(first)} elements but {name} has {len(arr)}; "
                "they must have the same length"
            )


def _as_ids(values: ArrayLike, name: str) -> U64:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise EmbcoreError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if arr.dtype.kind not in "iu":
        raise EmbcoreError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "i" and bool((arr < 0).any()):
        raise EmbcoreError(f"{name} holds {int((arr < 0).sum())} negative ids; ids are uint64")
    return arr.astype(np.uint64, copy=False)


def _as_counts(values: ArrayLike, name: str) -> I64:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise EmbcoreError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise EmbcoreError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _as_matrix(values: ArrayLike, name: str) -> F32:
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 0)
    if arr.ndim != 2:
        raise EmbcoreError(f"{name} must be 2-D (n, d), got shape {arr.shape}")
    bad = _count_nonfinite_rows(arr)
    if bad:
        raise EmbcoreError(f"{name} has {bad} rows containing NaN or Inf; fix or drop them first")
    return arr


def _count_nonfinite_rows(matrix: NDArray[Any]) -> int:
    bad = 0
    for start in range(0, matrix.shape[0], _BLOCK_ROWS):
        block = matrix[start : start + _BLOCK_ROWS]
        bad += int((~np.isfinite(block)).any(axis=1).sum())
    return bad


def _check_unique(ids: U64, name: str) -> None:
    if ids.size < 2:
        return
    ordered = np.sort(ids)
    dup = ordered[1:] == ordered[:-1]
    if bool(dup.any()):
        n_dup = int(np.unique(ordered[1:][dup]).size)
        example = int(ordered[1:][dup][0])
        raise EmbcoreError(
            f"{name} has {n_dup} duplicated ids (e.g. {example}); ids must be unique"
        )


def as_id_matrix(x: TableLike, name: str = "table") -> tuple[U64, F32]:
    """Validate a table given as ``(ids, matrix)`` or an object with ``ids()``/``weights()``.

    Parameters
    ----------
    x
        ``(ids uint64[n], matrix float32[n, d])`` or e.g. an ``embcore.EmbeddingTable``.
    name
        Used in error messages.

    Returns
    -------
    tuple
        ``(ids uint64[n], matrix float32[n, d])`` (no copy when already of those dtypes).

    Raises
    ------
    EmbcoreError
        A ``ValueError``: length mismatch, a non 2-D matrix, duplicate ids, or rows
        containing NaN/Inf (the message gives the number of bad rows).

    >>> ids, m = as_id_matrix((np.array([3, 1]), np.eye(2)))
    >>> ids.dtype, m.dtype
    (dtype('uint64'), dtype('float32'))
    """
    if isinstance(x, tuple):
        if len(x) != 2:
            raise EmbcoreError(f"{name} must be (ids, matrix), got a tuple of {len(x)}")
        raw_ids, raw_matrix = x
    elif hasattr(x, "ids") and hasattr(x, "weights"):
        raw_ids, raw_matrix = x.ids(), x.weights()
    else:
        raise TypeError(
            f"{name} must be (ids, matrix) or have ids() and weights(), got {type(x).__name__}"
        )
    ids = _as_ids(raw_ids, f"{name} ids")
    matrix = _as_matrix(raw_matrix, f"{name} matrix")
    _check_same_length((f"{name} ids", ids), (f"{name} matrix", matrix))
    _check_unique(ids, f"{name} ids")
    return ids, matrix


def _as_popularity(popularity: tuple[ArrayLike, ArrayLike]) -> tuple[U64, F64]:
    if not isinstance(popularity, tuple) or len(popularity) != 2:
        raise EmbcoreError("popularity must be a tuple (ids, counts)")
    ids = _as_ids(popularity[0], "popularity ids")
    counts = np.asarray(popularity[1])
    if counts.ndim != 1:
        raise EmbcoreError(f"popularity counts must be 1-D, got shape {counts.shape}")
    if counts.size and counts.dtype.kind not in "iu":
        raise EmbcoreError(f"popularity counts must hold integers, got dtype {counts.dtype}")
    _check_same_length(("popularity ids", ids), ("popularity counts", counts))
    _check_unique(ids, "popularity ids")
    values = counts.astype(np.float64)
    if bool((values < 0).any()):
        raise EmbcoreError(f"popularity counts has {int((values < 0).sum())} negative values")
    return ids, values


def _lookup(query: U64, keys: U64) -> tuple[I64, Bool]:
    """Positions of ``query`` ids in ``keys`` (unique) and a found mask."""
    if keys.size == 0:
        return np.zeros(query.size, dtype=np.int64), np.zeros(query.size, dtype=bool)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    at = np.minimum(np.searchsorted(sorted_keys, query), keys.size - 1)
    found = sorted_keys[at] == query
    return order[at].astype(np.int64), found


def _popularity_of(item_ids: U64, popularity: tuple[ArrayLike, ArrayLike]) -> tuple[F64, int]:
    """Popularity per item (0 for ids absent from the popularity table) and the absent count."""
    pop_ids, pop_counts = _as_popularity(popularity)
    pos, found = _lookup(item_ids, pop_ids)
    values = np.where(found, pop_counts[pos] if pop_counts.size else 0.0, 0.0)
    return values.astype(np.float64), int((~found).sum())


def _check_alpha(alpha: float | Sequence[float]) -> tuple[float, ...]:
    levels = (alpha,) if isinstance(alpha, int | float) else tuple(alpha)
    if not levels:
        raise EmbcoreError("alpha must hold at least one level in (0, 2)")
    for level in levels:
        if not 0.0 < float(level) < 2.0:
            raise EmbcoreError(f"alpha={level} is outside (0, 2); d_cos thresholds live in (0, 2)")
    return tuple(float(level) for level in levels)


def _check_positive(value: int, name: str) -> None:
    if int(value) < 1:
        raise EmbcoreError(f"{name}={value} must be >= 1")


# --------------------------------------------------------------------------- kernels


def _rowwise_cosine(a: NDArray[Any], b: NDArray[Any]) -> F64:
    """cos(a_i, b_i) per row in float64; 0 when either row has zero norm.

    >>> _rowwise_cosine(np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([[2.0, 0.0], [1.0, 1.0]]))
    array([1., 0.])
    """
    if a.shape != b.shape:
        raise EmbcoreError(f"a has shape {a.shape} but b has shape {b.shape}")
    # One pass in Rust, accumulated in float64 (float32 tables are not copied).
    return _core.rowwise_cosine(*_same_float(a, b))


def _cross_product(a: NDArray[Any], b: NDArray[Any]) -> F64:
    """AᵀB as a float64 (d_a × d_b) sum over row blocks (mergeable across shards).

    >>> _cross_product(np.eye(2), np.ones((2, 2)))
    array([[1., 1.],
           [1., 1.]])
    """
    if a.shape[0] != b.shape[0]:
        raise EmbcoreError(f"a has {a.shape[0]} rows but b has {b.shape[0]}")
    if a.shape[1] == b.shape[1] and a.shape[1] > 0:
        # One pass in Rust, accumulated in float64.
        return _core.cross_product(*_same_float(a, b))
    out = np.zeros((a.shape[1], b.shape[1]), dtype=np.float64)
    for start in range(0, a.shape[0], _BLOCK_ROWS):
        x = np.asarray(a[start : start + _BLOCK_ROWS], dtype=np.float64)
        y = np.asarray(b[start : start + _BLOCK_ROWS], dtype=np.float64)
        out += x.T @ y
    return out


def _same_float(a: NDArray[Any], b: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """Both float32 when both are float32 (no copy), else both float64; C-contiguous."""
    dtype = np.float32 if a.dtype == np.float32 and b.dtype == np.float32 else np.float64
    return np.ascontiguousarray(a, dtype=dtype), np.ascontiguousarray(b, dtype=dtype)


def _row_norms(matrix: NDArray[Any]) -> F64:
    out = np.empty(matrix.shape[0], dtype=np.float64)
    for start in range(0, matrix.shape[0], _BLOCK_ROWS):
        x = np.asarray(matrix[start : start + _BLOCK_ROWS], dtype=np.float64)
        out[start : start + x.shape[0]] = np.sqrt(np.einsum("ij,ij->i", x, x))
    return out


def _inverse(values: F64) -> F64:
    out = np.zeros_like(values)
    np.divide(1.0, values, out=out, where=values > 0)
    return out


def _cosine_to_reference(rows: F32, references: F64, item_of_row: I64) -> F64:
    """cos(rows[r], references[item_of_row[r]]) without materialising the gathered matrix."""
    out = np.empty(rows.shape[0], dtype=np.float64)
    for start in range(0, rows.shape[0], _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, rows.shape[0])
        out[start:stop] = _rowwise_cosine(rows[start:stop], references[item_of_row[start:stop]])
    return out


def _set_overlap(left: I64, right: I64) -> I64:
    """|left_q ∩ right_q| per row for two (q × k) index arrays without repeats within a row."""
    if left.shape[1] == 0:
        return np.zeros(left.shape[0], dtype=np.int64)
    hits = (left[:, :, None] == right[:, None, :]).any(axis=2)
    return hits.sum(axis=1).astype(np.int64)


def _average_ranks(values: F64) -> F64:
    """1-based ranks with ties given their average rank."""
    n = values.size
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts_flag = np.ones(n, dtype=bool)
    starts_flag[1:] = ordered[1:] != ordered[:-1]
    group = np.cumsum(starts_flag) - 1
    starts = np.flatnonzero(starts_flag)
    ends = np.append(starts[1:], n)
    average = (starts + ends - 1) / 2.0 + 1.0
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = average[group]
    return ranks


def _pearson(x: F64, y: F64) -> float:
    if x.size < 2:
        return math.nan
    xc = x - x.mean()
    yc = y - y.mean()
    denominator = math.sqrt(float(xc @ xc) * float(yc @ yc))
    if denominator == 0.0:
        return math.nan
    return float(xc @ yc) / denominator


def _spearman(x: F64, y: F64) -> float:
    """Spearman ρ: Pearson correlation of average ranks; NaN when either side is constant."""
    return _pearson(_average_ranks(x), _average_ranks(y))


def _quantile_buckets(values: F64, n_buckets: int) -> tuple[I64, int]:
    """Quantile buckets by rank (bucket 0 = least popular); tied values share a bucket.

    Inner edges are the values at ranks ⌊j·n/B⌋; bucket j holds values in [edge_j, edge_{j+1}).
    Duplicate edges collapse, so fewer than ``n_buckets`` buckets may come back, none empty.
    """
    if values.size == 0:
        return np.zeros(0, dtype=np.int64), 0
    ordered = np.sort(values)
    inner = np.unique(ordered[(np.arange(1, n_buckets) * values.size) // n_buckets])
    inner = inner[inner > ordered[0]]
    bucket = np.searchsorted(inner, values, side="right").astype(np.int64)
    return bucket, int(inner.size) + 1


# --------------------------------------------------------------------------- trajectories


def _sorted_by_id_and_count(ids: U64, counts: I64) -> bool:
    """Whether records are already in (id, count) order (ties in any order: a stable sort
    keeps them), checked in blocks of bounded temporaries."""
    block = 1 << 16
    for start in range(0, max(ids.size - 1, 0), block):
        stop = min(start + block, ids.size - 1)
        a, b = ids[start:stop], ids[start + 1 : stop + 1]
        ca, cb = counts[start:stop], counts[start + 1 : stop + 1]
        if not bool(((a < b) | ((a == b) & (ca <= cb))).all()):
            return False
    return True


@dataclass(frozen=True, eq=False)
class Trajectories:
    """Recorded embedding states of tracked items: record k is item ``ids[k]`` right after its
    ``counts[k]``-th interaction.

    The constructor validates (equal lengths, 2-D finite rows, non-negative counts) and sorts
    the records stably by (id, count), so each item is one contiguous run in count order.

    Attributes
    ----------
    ids : uint64[n]
    counts : int64[n]
    timestamps : int64[n]
    rows : float32[n, d]

    >>> t = Trajectories.from_arrays([2, 1, 1], [1, 2, 1], np.eye(3))
    >>> t.ids.tolist(), t.counts.tolist(), t.n_items
    ([1, 1, 2], [1, 2, 1], 2)
    """

    ids: U64
    counts: I64
    timestamps: I64
    rows: F32

    def __post_init__(self) -> None:
        self._settle(copy=True)

    @classmethod
    def _adopt(
        cls, ids: ArrayLike, counts: ArrayLike, timestamps: ArrayLike, rows: ArrayLike
    ) -> Trajectories:
        """The constructor for arrays nobody else holds (a monitor's fresh copy, a merge):
        the same checks and order, but records already sorted by (id, count) are kept in
        place instead of copied (the records can be a few hundred MB)."""
        traj = cls.__new__(cls)
        for name, value in (("ids", ids), ("counts", counts), ("timestamps", timestamps)):
            object.__setattr__(traj, name, value)
        object.__setattr__(traj, "rows", rows)
        traj._settle(copy=False)
        return traj

    def _settle(self, copy: bool) -> None:
        """Validate, then sort stably by (id, count); ``copy=False`` keeps sorted input."""
        ids = _as_ids(self.ids, "ids")
        counts = _as_counts(self.counts, "counts")
        timestamps = _as_counts(self.timestamps, "timestamps")
        rows = np.asarray(self.rows, dtype=np.float32)
        if rows.ndim == 1 and rows.size == 0:
            rows = rows.reshape(0, 0)
        if rows.ndim != 2:
            raise EmbcoreError(f"rows must be 2-D (n, d), got shape {rows.shape}")
        _check_same_length(("ids", ids), ("counts", counts), ("timestamps", timestamps))
        _check_same_length(("ids", ids), ("rows", rows))
        if bool((counts < 0).any()):
            raise EmbcoreError(f"counts has {int((counts < 0).sum())} negative values")
        bad = _count_nonfinite_rows(rows)
        if bad:
            raise EmbcoreError(f"rows has {bad} rows containing NaN or Inf")
        if _sorted_by_id_and_count(ids, counts):
            # The stable lexsort would be the identity: the same records, no gather.
            if copy:
                ids, counts, timestamps = ids.copy(), counts.copy(), timestamps.copy()
                rows = np.array(rows, order="C")
            else:
                rows = np.ascontiguousarray(rows)
        else:
            order = np.lexsort((counts, ids))
            ids, counts, timestamps = ids[order], counts[order], timestamps[order]
            rows = np.ascontiguousarray(rows[order])
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "timestamps", timestamps)
        object.__setattr__(self, "rows", rows)

    @classmethod
    def from_arrays(
        cls,
        ids: ArrayLike,
        counts: ArrayLike,
        rows: ArrayLike,
        timestamps: ArrayLike | None = None,
    ) -> Trajectories:
        """Build from arrays; ``timestamps`` defaults to zeros.

        >>> len(Trajectories.from_arrays([7, 7], [1, 2], [[1.0, 0.0], [0.0, 1.0]]))
        2
        """
        ids_arr = np.asarray(ids)
        if timestamps is None:
            timestamps = np.zeros(ids_arr.shape[0] if ids_arr.ndim else 0, dtype=np.int64)
        return cls(ids_arr, np.asarray(counts), np.asarray(timestamps), np.asarray(rows))

    @classmethod
    def from_monitor(cls, monitor: Any) -> Trajectories:
        """Build from ``monitor.trajectories()`` (a dict with ``ids, counts, timestamps, rows``).

        >>> class M:
        ...     def trajectories(self):
        ...         return {"ids": [1], "counts": [1], "timestamps": [0], "rows": [[1.0]]}
        >>> Trajectories.from_monitor(M()).n_items
        1
        """
        data = monitor.trajectories()
        missing = {"ids", "counts", "timestamps", "rows"} - set(data)
        if missing:
            raise EmbcoreError(f"monitor.trajectories() lacks keys {sorted(missing)}")
        # The monitor hands over fresh copies: adopted, not copied again.
        return cls._adopt(data["ids"], data["counts"], data["timestamps"], data["rows"])

    def __len__(self) -> int:
        return int(self.ids.size)

    @property
    def dim(self) -> int:
        """Embedding dimension d."""
        return int(self.rows.shape[1])

    @property
    def n_items(self) -> int:
        """Number of distinct item ids."""
        if self.ids.size == 0:
            return 0
        return int(np.count_nonzero(self.ids[1:] != self.ids[:-1])) + 1


@dataclass(frozen=True)
class _Prepared:
    """Records of the analysed items (one contiguous, count-ordered run per item)."""

    item_ids: U64
    starts: I64
    ends: I64
    counts: I64
    rows: F32
    item_of_row: I64
    references: F64
    cosine: F64
    reference_name: str
    n_items_total: int
    excluded: dict[str, int]


def _prepare(traj: Trajectories, reference: Reference, last_k: int, min_records: int) -> _Prepared:
    _check_positive(min_records, "min_records")
    _check_positive(last_k, "last_k")
    # Collapse duplicate (id, count) records to the last one.
    n = len(traj)
    keep = np.ones(n, dtype=bool)
    if n > 1:
        keep[:-1] = (traj.ids[1:] != traj.ids[:-1]) | (traj.counts[1:] != traj.counts[:-1])
    if bool(keep.all()):  # the usual case: views, not copies of every record
        ids, counts, rows = traj.ids, traj.counts, traj.rows
    else:
        ids, counts, rows = traj.ids[keep], traj.counts[keep], traj.rows[keep]
    new_item = np.ones(ids.size, dtype=bool)
    new_item[1:] = ids[1:] != ids[:-1]
    starts = np.flatnonzero(new_item)
    sizes = np.diff(np.append(starts, ids.size))
    item_ids = ids[starts]

    reference_name: str = "table"
    if isinstance(reference, str):
        if reference not in ("final", "last_k"):
            raise EmbcoreError(f"reference={reference!r}: use 'final', 'last_k' or a table")
        reference_name = reference
    required = max(min_records, last_k) if reference_name == "last_k" else min_records
    eligible = sizes >= required
    excluded = {"too_few_records": int((~eligible).sum()), "not_in_reference": 0}
    table_rows: F64 | None = None
    if not isinstance(reference, str):
        table_ids, table_matrix = as_id_matrix(reference, "reference")
        if table_matrix.shape[1] != traj.rows.shape[1] and item_ids.size and table_ids.size:
            raise EmbcoreError(
                f"reference has dimension {table_matrix.shape[1]} "
                f"but trajectories have dimension {traj.rows.shape[1]}"
            )
        position, found = _lookup(item_ids, table_ids)
        excluded["not_in_reference"] = int((eligible & ~found).sum())
        eligible &= found
        table_rows = table_matrix[position[eligible]].astype(np.float64)

    if not bool(eligible.all()):
        record_keep = np.repeat(eligible, sizes)
        counts, rows = counts[record_keep], rows[record_keep]
    sizes = sizes[eligible]
    item_ids = item_ids[eligible]
    ends = np.cumsum(sizes).astype(np.int64)
    starts = (ends - sizes).astype(np.int64)
    item_of_row = np.repeat(np.arange(item_ids.size, dtype=np.int64), sizes)
    d = traj.rows.shape[1]

    if item_ids.size == 0:
        references = np.zeros((0, d), dtype=np.float64)
    elif reference_name == "final":
        references = rows[ends - 1].astype(np.float64)
    elif reference_name == "last_k":
        in_tail = (ends[item_of_row] - np.arange(rows.shape[0])) <= last_k
        tail_starts = np.arange(item_ids.size, dtype=np.int64) * last_k
        references = np.add.reduceat(rows[in_tail].astype(np.float64), tail_starts, axis=0)
        references /= last_k
    else:
        assert table_rows is not None
        references = table_rows
    cosine = _cosine_to_reference(rows, references, item_of_row)
    return _Prepared(
        item_ids=item_ids,
        starts=starts,
        ends=ends,
        counts=counts,
        rows=rows,
        item_of_row=item_of_row,
        references=references,
        cosine=cosine,
        reference_name=reference_name,
        n_items_total=int(sizes.size + sum(excluded.values())),
        excluded=excluded,
    )


# --------------------------------------------------------------------------- maturity


def _kaplan_meier(durations: I64, observed: Bool) -> tuple[I64, F64]:
    """Kaplan–Meier S(n) = P(T > n) at each distinct event time.

    At a tied time events are counted before censorings, so items censored at n are still at
    risk for events at n.
    """
    if durations.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    times, inverse = np.unique(durations, return_inverse=True)
    events = np.bincount(inverse, weights=observed.astype(np.float64), minlength=times.size)
    leaving = np.bincount(inverse, minlength=times.size)
    at_risk = durations.size - np.concatenate(([0], np.cumsum(leaving)[:-1]))
    survival = np.cumprod(1.0 - events / at_risk)
    has_event = events > 0
    return times[has_event].astype(np.int64), survival[has_event]


def _km_quantile(times: I64, survival: F64, q: float) -> int | None:
    """Smallest n with S(n) ≤ 1 − q (so the median is the smallest n with S(n) ≤ 0.5)."""
    hits = np.flatnonzero(survival <= 1.0 - q + _KM_TOLERANCE)
    return int(times[hits[0]]) if hits.size else None


@dataclass(frozen=True, eq=False)
class MaturityCurve(_Result):
    """Kaplan–Meier summary of n(α) for one group of items.

    Attributes
    ----------
    n_items, n_mature, n_censored : int
    mature_share : float
        Raw share of items observed mature (NaN when empty).
    median : int or None
        Smallest n with S(n) ≤ 0.5; None when the curve never gets there.
    quantiles : dict
        ``{"p25", "p50", "p75", "p90"}`` → smallest n with S(n) ≤ 1 − q, or None.
    km : list of [n, S(n)]
        S just after each distinct event count n (S = 1 before the first).

    >>> _curve(np.array([2, 3]), np.array([True, True])).median
    2
    """

    n_items: int
    n_mature: int
    n_censored: int
    mature_share: float
    median: int | None
    quantiles: dict[str, int | None]
    km: list[list[float]]


def _curve(durations: I64, observed: Bool) -> MaturityCurve:
    times, survival = _kaplan_meier(durations, observed)
    n = int(durations.size)
    n_mature = int(observed.sum())
    quantiles = {
        f"p{round(q * 100)}": _km_quantile(times, survival, q) for q in _MATURITY_QUANTILES
    }
    return MaturityCurve(
        n_items=n,
        n_mature=n_mature,
        n_censored=n - n_mature,
        mature_share=n_mature / n if n else math.nan,
        median=quantiles["p50"],
        quantiles=quantiles,
        km=[[int(t), float(s)] for t, s in zip(times, survival, strict=True)],
    )


@dataclass(frozen=True, eq=False)
class PopularityBucketMaturity(_Result):
    """Maturity curve for one popularity quantile bucket (bucket 0 = least popular)."""

    bucket: int
    popularity_low: float
    popularity_high: float
    curve: MaturityCurve


@dataclass(frozen=True, eq=False)
class MaturityLevel(_Result):
    """Maturity at one α.

    ``durations[i]`` is item i's n(α) when ``observed[i]`` else its censoring count (its last
    recorded count); both are aligned with ``MaturityResult.item_ids`` and not exported.
    """

    alpha: float
    overall: MaturityCurve
    by_popularity: tuple[PopularityBucketMaturity, ...]
    durations: I64 = _internal()
    observed: Bool = _internal()


@dataclass(frozen=True, eq=False)
class MaturityResult(_Result):
    """Result of :func:`maturity`.

    Attributes
    ----------
    reference : str
        ``"final"``, ``"last_k"`` or ``"table"``.
    n_items_total, n_items, n_excluded : int
        Items seen, analysed, and excluded (``excluded`` breaks the latter down into
        ``too_few_records`` and ``not_in_reference``).
    n_missing_popularity : int or None
        Analysed items absent from ``popularity`` (treated as popularity 0).
    levels : tuple of MaturityLevel
        One per α, in the order given.
    """

    reference: str
    alphas: tuple[float, ...]
    last_k: int
    min_records: int
    n_items_total: int
    n_items: int
    n_excluded: int
    excluded: dict[str, int]
    n_missing_popularity: int | None
    levels: tuple[MaturityLevel, ...]
    item_ids: U64 = _internal()
    item_popularity: F64 | None = _internal()

    def level(self, alpha: float) -> MaturityLevel:
        """The :class:`MaturityLevel` for ``alpha`` (KeyError naming the available levels)."""
        for lvl in self.levels:
            if math.isclose(lvl.alpha, alpha):
                return lvl
        raise KeyError(f"alpha={alpha} not computed; available: {list(self.alphas)}")


def maturity(
    traj: Trajectories,
    alpha: float | Sequence[float] = (0.01, 0.05, 0.1),
    reference: Reference = "final",
    last_k: int = 5,
    min_records: int = 3,
    popularity: tuple[ArrayLike, ArrayLike] | None = None,
    n_popularity_buckets: int = 4,
) -> MaturityResult:
    """Interactions until each item's embedding stays within α of its reference (METRICS B.5–7).

    n_i(α) = min{n : d_cos(e_i(n′), e*_i) < α for every recorded n′ ≥ n}, with n on the recorded
    count grid: it is the count of the first record of the item's final sub-α run. Items whose
    final record is not within α (or, with ``reference="final"``, whose only sub-α record is the
    final one, which is the reference itself) are right-censored at their last recorded count.

    Parameters
    ----------
    traj
        Recorded trajectories.
    alpha
        One level or several, each in (0, 2).
    reference
        ``"final"`` (last record), ``"last_k"`` (mean of the last ``last_k`` records; items need
        at least ``max(min_records, last_k)`` records) or a table (rows looked up by id; items
        absent from it are excluded and counted).
    last_k
        K for ``reference="last_k"``.
    min_records
        Items with fewer (distinct-count) records are excluded and counted.
    popularity
        Optional ``(ids, counts)`` tuple; adds per-bucket curves over ``n_popularity_buckets``
        quantile buckets. Analysed items absent from it get popularity 0.
    n_popularity_buckets
        Number of popularity quantile buckets (ties may merge buckets).

    Returns
    -------
    MaturityResult

    Raises
    ------
    EmbcoreError
        A ``ValueError``: α outside (0, 2), a bad ``reference``, ``min_records`` or
        ``last_k`` < 1, malformed tables.

    >>> rows = [[0.0, 1.0], [1.0, 0.1], [1.0, 0.0], [1.0, 0.0]]
    >>> t = Trajectories.from_arrays([5, 5, 5, 5], [1, 2, 3, 4], rows)
    >>> maturity(t, alpha=0.01).levels[0].overall.median
    2
    """
    alphas = _check_alpha(alpha)
    _check_positive(n_popularity_buckets, "n_popularity_buckets")
    prep = _prepare(traj, reference, last_k, min_records)
    n_items = int(prep.item_ids.size)

    item_popularity: F64 | None = None
    n_missing: int | None = None
    bucket = np.zeros(0, dtype=np.int64)
    n_buckets = 0
    if popularity is not None:
        item_popularity, n_missing = _popularity_of(prep.item_ids, popularity)
        bucket, n_buckets = _quantile_buckets(item_popularity, n_popularity_buckets)

    distance = 1.0 - prep.cosine
    index = np.arange(distance.size, dtype=np.int64)
    last = prep.ends - 1
    # The "final" reference is the last record itself: it must not count as evidence.
    run_limit = last if prep.reference_name == "final" else prep.ends
    levels = []
    for level in alphas:
        if n_items:
            violation = np.where(distance >= level, index, -1)
            last_violation = np.maximum.reduceat(violation, prep.starts)
            first_within = np.where(last_violation >= 0, last_violation + 1, prep.starts)
            observed = first_within < run_limit
            durations = np.where(
                observed, prep.counts[np.minimum(first_within, last)], prep.counts[last]
            ).astype(np.int64)
        else:
            observed = np.zeros(0, dtype=bool)
            durations = np.zeros(0, dtype=np.int64)
        by_popularity = []
        if item_popularity is not None:
            for b in range(n_buckets):
                members = bucket == b
                by_popularity.append(
                    PopularityBucketMaturity(
                        bucket=b,
                        popularity_low=float(item_popularity[members].min()),
                        popularity_high=float(item_popularity[members].max()),
                        curve=_curve(durations[members], observed[members]),
                    )
                )
        levels.append(
            MaturityLevel(
                alpha=level,
                overall=_curve(durations, observed),
                by_popularity=tuple(by_popularity),
                durations=durations,
                observed=observed,
            )
        )
    return MaturityResult(
        reference=prep.reference_name,
        alphas=alphas,
        last_k=int(last_k),
        min_records=int(min_records),
        n_items_total=prep.n_items_total,
        n_items=n_items,
        n_excluded=sum(prep.excluded.values()),
        excluded=prep.excluded,
        n_missing_popularity=n_missing,
        levels=tuple(levels),
        item_ids=prep.item_ids,
        item_popularity=item_popularity,
    )


# --------------------------------------------------------------------------- learning peak


@dataclass(frozen=True, eq=False)
class LearningPeakResult(_Result):
    """Result of :func:`learning_peak`; the per-count arrays are aligned with ``counts``.

    Attributes
    ----------
    counts : int64[m]
        Distinct interaction counts n at which some item has a step (a record after another).
    n_steps : int64[m]
        Number of item steps ending at each n.
    gain_mean, gain_median : float64[m]
        G(n): mean / median alignment gain cos(e(n), e*) − cos(e(n_prev), e*).
    peak_count, peak_count_median : int or None
        argmax of the mean / median gain curve.
    total_gain : float
        Σ_n mean G(n).
    count_at_50pct_gain, count_at_90pct_gain : int or None
        First n where the cumulative mean G reaches 50% / 90% of ``total_gain`` (None when the
        total is not positive).
    drift_mean : float64[m]
        Mean cosine drift δ = 1 − cos(e(n), e(n_prev)) (METRICS C.9); ``drift_peak_count`` its
        argmax.
    efficiency_mean : float64[m]
        Mean η = cos(e(n) − e(n_prev), e* − e(n_prev)) (METRICS C.10).
    """

    reference: str
    n_items_total: int
    n_items: int
    n_excluded: int
    excluded: dict[str, int]
    counts: I64
    n_steps: I64
    gain_mean: F64
    gain_median: F64
    peak_count: int | None
    peak_count_median: int | None
    total_gain: float
    count_at_50pct_gain: int | None
    count_at_90pct_gain: int | None
    drift_mean: F64
    drift_peak_count: int | None
    efficiency_mean: F64


def _group_mean_median(keys: I64, values: F64) -> tuple[I64, I64, F64, F64]:
    """Distinct keys, group sizes, and the mean and median of ``values`` per key."""
    order = np.lexsort((values, keys))
    k, v = keys[order], values[order]
    flag = np.ones(k.size, dtype=bool)
    flag[1:] = k[1:] != k[:-1]
    starts = np.flatnonzero(flag)
    sizes = np.diff(np.append(starts, k.size))
    mean = np.add.reduceat(v, starts) / sizes if k.size else np.zeros(0, dtype=np.float64)
    median = (v[starts + (sizes - 1) // 2] + v[starts + sizes // 2]) / 2.0
    return k[starts], sizes.astype(np.int64), mean, median


def _group_mean(keys: I64, values: F64, n_groups: int) -> F64:
    """Mean of ``values`` per group index (``keys`` in ``range(n_groups)``, none empty)."""
    sums = np.bincount(keys, weights=values, minlength=n_groups)
    return sums / np.bincount(keys, minlength=n_groups)


def _first_reaching(counts: I64, cumulative: F64, target: float) -> int | None:
    hits = np.flatnonzero(cumulative >= target - 1e-12 * abs(target))
    return int(counts[hits[0]]) if hits.size else None


def _argmax_count(counts: I64, values: F64) -> int | None:
    return int(counts[int(np.argmax(values))]) if values.size else None


def learning_peak(
    traj: Trajectories,
    reference: Reference = "final",
    last_k: int = 5,
    min_records: int = 3,
) -> LearningPeakResult:
    """Where updates carry the most information: alignment gain G(n), δ(n), η(n) (METRICS C.8–10).

    A step is a pair of consecutive records of one item (counts n_prev < n); its gain, drift and
    efficiency are attributed to the later count n even when records skip counts.

    Parameters
    ----------
    traj
        Recorded trajectories.
    reference
        As in :func:`maturity`. With ``"final"`` the last step's η is 1 by construction.
    last_k
        K for ``reference="last_k"``.
    min_records
        Items with fewer records are excluded and counted.

    Returns
    -------
    LearningPeakResult

    >>> rows = [[0.0, 1.0], [1.0, 1.0], [1.0, 0.0]]
    >>> r = learning_peak(Trajectories.from_arrays([1, 1, 1], [1, 2, 3], rows))
    >>> r.counts.tolist(), r.peak_count
    ([2, 3], 2)
    """
    prep = _prepare(traj, reference, last_k, min_records)
    step = np.ones(prep.counts.size, dtype=bool)
    step[prep.starts] = False
    later = np.flatnonzero(step)
    earlier = later - 1
    keys = prep.counts[later]
    gain = prep.cosine[later] - prep.cosine[earlier]
    drift = np.empty(later.size, dtype=np.float64)
    efficiency = np.empty(later.size, dtype=np.float64)
    for start in range(0, later.size, _BLOCK_ROWS):
        sl = slice(start, start + _BLOCK_ROWS)
        current = prep.rows[later[sl]].astype(np.float64)
        previous = prep.rows[earlier[sl]].astype(np.float64)
        target = prep.references[prep.item_of_row[later[sl]]]
        drift[sl] = 1.0 - _rowwise_cosine(current, previous)
        efficiency[sl] = _rowwise_cosine(current - previous, target - previous)

    counts, n_steps, gain_mean, gain_median = _group_mean_median(keys, gain)
    group = np.searchsorted(counts, keys)
    drift_mean = _group_mean(group, drift, counts.size)
    efficiency_mean = _group_mean(group, efficiency, counts.size)
    cumulative = np.cumsum(gain_mean)
    total = float(cumulative[-1]) if cumulative.size else math.nan
    reach50 = _first_reaching(counts, cumulative, 0.5 * total) if total > 0 else None
    reach90 = _first_reaching(counts, cumulative, 0.9 * total) if total > 0 else None
    return LearningPeakResult(
        reference=prep.reference_name,
        n_items_total=prep.n_items_total,
        n_items=int(prep.item_ids.size),
        n_excluded=sum(prep.excluded.values()),
        excluded=prep.excluded,
        counts=counts,
        n_steps=n_steps,
        gain_mean=gain_mean,
        gain_median=gain_median,
        peak_count=_argmax_count(counts, gain_mean),
        peak_count_median=_argmax_count(counts, gain_median),
        total_gain=total,
        count_at_50pct_gain=reach50,
        count_at_90pct_gain=reach90,
        drift_mean=drift_mean,
        drift_peak_count=_argmax_count(counts, drift_mean),
        efficiency_mean=efficiency_mean,
    )


# --------------------------------------------------------------------------- norms & popularity


@dataclass(frozen=True, eq=False)
class NormBucket(_Result):
    """Norm summary for one popularity decile (bucket 0 = least popular)."""

    bucket: int
    popularity_low: float
    popularity_high: float
    norms: Summary


@dataclass(frozen=True, eq=False)
class RetrievalBias(_Result):
    """Dot-product vs cosine top-K retrieval for sampled users (METRICS D.13).

    Attributes
    ----------
    n_users, k : int
        Users sampled and the K used (``min(k, n_items)``).
    overlap_mean : float
        Mean |top-K by dot ∩ top-K by cosine| / K.
    head_share_dot, head_share_cosine : float
        Share of retrieved items in the top popularity decile under each scoring.
    head_share_catalog : float
        Share of all items in the top popularity decile (the no-bias baseline).
    """

    n_users: int
    k: int
    overlap_mean: float
    head_share_dot: float
    head_share_cosine: float
    head_share_catalog: float
    overlap_per_user: F64 = _internal()


@dataclass(frozen=True, eq=False)
class NormPopularityResult(_Result):
    """Result of :func:`norm_popularity`.

    Attributes
    ----------
    norms : Summary
        ‖e_i‖ over all items.
    by_decile : tuple of NormBucket
        Per popularity decile (ties may merge deciles).
    spearman : float
        Spearman ρ(‖e‖, pop) with average ranks for ties (NaN if either is constant).
    loglog_slope : float
        OLS slope of log‖e‖ on log(1 + pop) over items with non-zero norm.
    retrieval : RetrievalBias or None
        Present when ``users`` was given.
    """

    n_items: int
    n_missing_popularity: int
    n_zero_norm: int
    norms: Summary
    by_decile: tuple[NormBucket, ...]
    spearman: float
    loglog_slope: float
    retrieval: RetrievalBias | None
    item_ids: U64 = _internal()
    item_norms: F64 = _internal()
    item_popularity: F64 = _internal()


def _retrieval_bias(
    items: F32, users: F32, head: Bool, k: int, n_users: int, seed: int
) -> RetrievalBias:
    rng = np.random.default_rng(seed)
    n_sample = min(n_users, users.shape[0])
    k_eff = min(k, items.shape[0])
    sample = np.sort(rng.choice(users.shape[0], size=n_sample, replace=False))
    queries = users[sample].astype(np.float64)
    inverse_norm = _inverse(_row_norms(items))
    # Running top-k (native: one pass per block, both orders from the same dot products).
    by_dot = _core.TopK(n_sample, k_eff)
    by_cosine = _core.TopK(n_sample, k_eff)
    if n_sample and k_eff:
        # Item blocks of about 2M scores (16 MB a score matrix), whatever the query count.
        rows = max(256, min(_BLOCK_ROWS, (1 << 21) // n_sample))
        for start in range(0, items.shape[0], rows):
            block = items[start : start + rows].astype(np.float64)
            scores = queries @ block.T
            by_dot.update(scores, start)
            by_cosine.update(scores, start, inverse_norm[start : start + block.shape[0]])
    dot_index, cosine_index = by_dot.index, by_cosine.index
    overlap = (
        _set_overlap(dot_index, cosine_index) / k_eff if k_eff else np.zeros(0, dtype=np.float64)
    )
    with np.errstate(invalid="ignore"):
        return RetrievalBias(
            n_users=n_sample,
            k=k_eff,
            overlap_mean=float(overlap.mean()) if overlap.size else math.nan,
            head_share_dot=float(head[dot_index].mean()) if dot_index.size else math.nan,
            head_share_cosine=(float(head[cosine_index].mean()) if cosine_index.size else math.nan),
            head_share_catalog=float(head.mean()) if head.size else math.nan,
            overlap_per_user=overlap.astype(np.float64),
        )


def norm_popularity(
    items: TableLike,
    popularity: tuple[ArrayLike, ArrayLike],
    users: TableLike | None = None,
    k: int = 10,
    n_users: int = 1000,
    seed: int = 0,
) -> NormPopularityResult:
    """Norm distribution against popularity, and dot-vs-cosine retrieval bias (METRICS D.11–13).

    Parameters
    ----------
    items
        Item table ``(ids, matrix)`` or an object with ``ids()``/``weights()``.
    popularity
        ``(ids, counts)``; items absent from it get popularity 0 (counted in
        ``n_missing_popularity``).
    users
        Optional user table; enables the retrieval check over ``n_users`` sampled users (without
        replacement, ``seed``) and top-``k`` over all items, computed in item blocks.
    k, n_users, seed
        Retrieval parameters.

    Returns
    -------
    NormPopularityResult

    >>> ids = np.arange(4)
    >>> m = np.diag([1.0, 2.0, 3.0, 4.0])
    >>> norm_popularity((ids, m), (ids, np.array([1, 5, 9, 20]))).spearman
    1.0
    """
    _check_positive(k, "k")
    item_ids, matrix = as_id_matrix(items, "items")
    norms = _row_norms(matrix)
    pop, n_missing = _popularity_of(item_ids, popularity)
    bucket, n_buckets = _quantile_buckets(pop, 10)
    by_decile = []
    for b in range(n_buckets):
        members = bucket == b
        by_decile.append(
            NormBucket(
                bucket=b,
                popularity_low=float(pop[members].min()),
                popularity_high=float(pop[members].max()),
                norms=Summary.of(norms[members]),
            )
        )
    nonzero = norms > 0
    slope = math.nan
    if int(nonzero.sum()) >= 2:
        x = np.log1p(pop[nonzero])
        y = np.log(norms[nonzero])
        xc = x - x.mean()
        sxx = float(xc @ xc)
        slope = float(xc @ (y - y.mean())) / sxx if sxx > 0 else math.nan

    retrieval = None
    if users is not None:
        _, user_matrix = as_id_matrix(users, "users")
        if user_matrix.shape[1] != matrix.shape[1] and user_matrix.shape[0] and item_ids.size:
            raise EmbcoreError(
                f"users have dimension {user_matrix.shape[1]} "
                f"but items have dimension {matrix.shape[1]}"
            )
        head = bucket == n_buckets - 1 if n_buckets > 1 else np.zeros(pop.size, dtype=bool)
        retrieval = _retrieval_bias(matrix, user_matrix, head, k, n_users, seed)

    return NormPopularityResult(
        n_items=int(item_ids.size),
        n_missing_popularity=n_missing,
        n_zero_norm=int((~nonzero).sum()),
        norms=Summary.of(norms),
        by_decile=tuple(by_decile),
        spearman=_spearman(norms, pop),
        loglog_slope=slope,
        retrieval=retrieval,
        item_ids=item_ids,
        item_norms=norms,
        item_popularity=pop,
    )


# --------------------------------------------------------------------------- snapshot drift


@dataclass(frozen=True, eq=False)
class SnapshotDriftResult(_Result):
    """Result of :func:`snapshot_drift` (table A, then B, rows matched by id).

    Attributes
    ----------
    n_a, n_b, n_matched, n_only_a, n_only_b : int
        Row counts; ``only_a`` are evicted rows, ``only_b`` new ones.
    unaligned, aligned : Summary
        Per-row d_cos(a_i, b_i) and d_cos(a_i R*, b_i).
    disparity : float
        ‖AR* − B‖²_F / ‖B‖²_F (NaN when B is all zeros or nothing matched).
    cka : float
        Linear CKA of the matched, column-centred A and B.
    k : int
        Neighbours used for Jaccard@k (``min(k, n_matched − 1)``).
    jaccard : Summary
        Jaccard@k of the k-NN sets (by cosine, self excluded) over sampled query rows.
    unmatched_centroid_distance : float
        ‖mean(only-A rows) − mean(only-B rows)‖ (NaN if either side is empty).
    ids, unaligned_drift, aligned_drift, rotation, query_ids, jaccard_per_query
        Per-row details, not exported by ``to_dict()``.
    """

    n_a: int
    n_b: int
    n_matched: int
    n_only_a: int
    n_only_b: int
    unaligned: Summary
    aligned: Summary
    disparity: float
    cka: float
    k: int
    jaccard: Summary
    unmatched_centroid_distance: float
    ids: U64 = _internal()
    unaligned_drift: F64 = _internal()
    aligned_drift: F64 = _internal()
    rotation: F64 = _internal()
    query_ids: U64 = _internal()
    jaccard_per_query: F64 = _internal()


def _procrustes(a: F32, b: F32, cross: F64, norm_a: float, norm_b: float) -> tuple[F64, F64, float]:
    """R* = UVᵀ from SVD(AᵀB); aligned per-row d_cos and the disparity.

    ``cross`` is AᵀB; ``norm_a``/``norm_b`` are ‖A‖²_F and ‖B‖²_F (traces of the Grams).
    """
    if a.shape[0] == 0:
        return np.eye(a.shape[1]), np.zeros(0, dtype=np.float64), math.nan
    u, singular, vt = np.linalg.svd(cross)
    rotation = u @ vt
    aligned = np.empty(a.shape[0], dtype=np.float64)
    for start in range(0, a.shape[0], _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, a.shape[0])
        rotated = a[start:stop].astype(np.float64) @ rotation
        aligned[start:stop] = 1.0 - _rowwise_cosine(rotated, b[start:stop])
    # ‖AR − B‖² = ‖A‖² + ‖B‖² − 2 tr(RᵀAᵀB), and tr(RᵀAᵀB) = Σ singular values.
    residual = max(norm_a + norm_b - 2.0 * float(singular.sum()), 0.0)
    return rotation, aligned, residual / norm_b if norm_b > 0 else math.nan


def _column_sums(matrix: NDArray[Any]) -> F64:
    total = np.zeros(matrix.shape[1], dtype=np.float64)
    for start in range(0, matrix.shape[0], _BLOCK_ROWS):
        total += np.asarray(matrix[start : start + _BLOCK_ROWS], dtype=np.float64).sum(axis=0)
    return total


def _linear_cka_from_sums(
    n: int, sum_a: F64, sum_b: F64, gram_a: F64, gram_b: F64, cross: F64
) -> float:
    """Linear CKA ‖AcᵀBc‖²_F / (‖AcᵀAc‖_F ‖BcᵀBc‖_F) from mergeable d×d sums.

    Centring is analytic: AcᵀBc = AᵀB − (Σa)(Σb)ᵀ / n.
    """
    if n == 0:
        return math.nan
    centred_cross = cross - np.outer(sum_a, sum_b) / n
    centred_a = gram_a - np.outer(sum_a, sum_a) / n
    centred_b = gram_b - np.outer(sum_b, sum_b) / n
    denominator = float(np.linalg.norm(centred_a) * np.linalg.norm(centred_b))
    if denominator <= 0.0:
        return math.nan
    return float(np.sum(centred_cross * centred_cross)) / denominator


def _linear_cka(a: F32, b: F32) -> float:
    """Linear CKA of two row-aligned matrices (column-centred)."""
    return _linear_cka_from_sums(
        a.shape[0],
        _column_sums(a),
        _column_sums(b),
        _cross_product(a, a),
        _cross_product(b, b),
        _cross_product(a, b),
    )


def _knn_index(matrix: F32, queries: I64, k: int) -> I64:
    """Exact top-k rows by cosine for each query row index, excluding the query itself."""
    inverse_norm = _inverse(_row_norms(matrix))
    query_rows = matrix[queries].astype(np.float64) * inverse_norm[queries, None]
    top = _core.TopK(queries.size, k)
    for start in range(0, matrix.shape[0], _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, matrix.shape[0])
        block = matrix[start:stop].astype(np.float64)
        scores = (query_rows @ block.T) * inverse_norm[start:stop]
        own = np.flatnonzero((queries >= start) & (queries < stop))
        scores[own, queries[own] - start] = -np.inf
        top.update(scores, start)
    return top.index


def _centroid(matrix: F32, rows: I64) -> F64:
    total = np.zeros(matrix.shape[1], dtype=np.float64)
    for start in range(0, rows.size, _BLOCK_ROWS):
        total += matrix[rows[start : start + _BLOCK_ROWS]].astype(np.float64).sum(axis=0)
    return total / rows.size


def snapshot_drift(
    a: TableLike, b: TableLike, k: int = 10, n_queries: int = 1000, seed: int = 0
) -> SnapshotDriftResult:
    """Whole-table drift from snapshot A to snapshot B, rows matched by id (METRICS E.14–18).

    Parameters
    ----------
    a, b
        Tables ``(ids, matrix)`` or objects with ``ids()``/``weights()``; same dimension.
    k
        Neighbours for Jaccard@k.
    n_queries
        Matched rows sampled (without replacement, ``seed``) as k-NN queries.
    seed
        Sampling seed.

    Returns
    -------
    SnapshotDriftResult

    Notes
    -----
    Procrustes here is the plain orthogonal problem (no centring, no scaling), as in
    METRICS E.15; CKA is computed on column-centred matrices from d×d sums, which loses precision
    when column means dwarf the spread (relative error ~ 1e-16 · (mean/spread)²).

    >>> ids = np.arange(50)
    >>> m = np.random.default_rng(0).normal(size=(50, 4))
    >>> r = snapshot_drift((ids, m), (ids, -m))
    >>> round(r.unaligned.mean, 6), round(r.aligned.mean, 6), round(r.cka, 6)
    (2.0, 0.0, 1.0)
    """
    _check_positive(k, "k")
    ids_a, matrix_a = as_id_matrix(a, "a")
    ids_b, matrix_b = as_id_matrix(b, "b")
    if matrix_a.shape[1] != matrix_b.shape[1] and ids_a.size and ids_b.size:
        raise EmbcoreError(
            f"a has dimension {matrix_a.shape[1]} but b has dimension {matrix_b.shape[1]}"
        )
    # An empty table carries no dimension of its own: give it the other table's.
    if ids_a.size == 0:
        matrix_a = np.zeros((0, matrix_b.shape[1]), dtype=np.float32)
    if ids_b.size == 0:
        matrix_b = np.zeros((0, matrix_a.shape[1]), dtype=np.float32)
    common, in_a, in_b = np.intersect1d(ids_a, ids_b, assume_unique=True, return_indices=True)
    matched_a = matrix_a[in_a]
    matched_b = matrix_b[in_b]
    n = int(common.size)

    unaligned = 1.0 - _rowwise_cosine(matched_a, matched_b)
    # One pass each for the d×d sums; Procrustes and CKA share AᵀB.
    cross = _cross_product(matched_a, matched_b)
    gram_a = _cross_product(matched_a, matched_a)
    gram_b = _cross_product(matched_b, matched_b)
    rotation, aligned, disparity = _procrustes(
        matched_a, matched_b, cross, float(np.trace(gram_a)), float(np.trace(gram_b))
    )
    cka = _linear_cka_from_sums(
        n, _column_sums(matched_a), _column_sums(matched_b), gram_a, gram_b, cross
    )

    k_eff = max(min(k, n - 1), 0)
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(n, size=min(n_queries, n), replace=False)).astype(np.int64)
    if k_eff and queries.size:
        neighbours_a = _knn_index(matched_a, queries, k_eff)
        neighbours_b = _knn_index(matched_b, queries, k_eff)
        shared = _set_overlap(neighbours_a, neighbours_b)
        jaccard = shared / (2 * k_eff - shared)
    else:
        jaccard = np.zeros(0, dtype=np.float64)

    only_a = np.setdiff1d(np.arange(ids_a.size), in_a, assume_unique=True)
    only_b = np.setdiff1d(np.arange(ids_b.size), in_b, assume_unique=True)
    if only_a.size and only_b.size:
        gap = _centroid(matrix_a, only_a) - _centroid(matrix_b, only_b)
        centroid_distance = float(np.linalg.norm(gap))
    else:
        centroid_distance = math.nan
    return SnapshotDriftResult(
        n_a=int(ids_a.size),
        n_b=int(ids_b.size),
        n_matched=n,
        n_only_a=int(only_a.size),
        n_only_b=int(only_b.size),
        unaligned=Summary.of(unaligned),
        aligned=Summary.of(aligned),
        disparity=disparity,
        cka=cka,
        k=k_eff,
        jaccard=Summary.of(jaccard),
        unmatched_centroid_distance=centroid_distance,
        ids=common,
        unaligned_drift=unaligned,
        aligned_drift=aligned,
        rotation=rotation,
        query_ids=common[queries],
        jaccard_per_query=jaccard.astype(np.float64),
    )
