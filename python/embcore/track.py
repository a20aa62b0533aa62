"""``embcore track``: monitor the tables another trainer publishes, one version after the other.

A production trainer (PyTorch, TorchRec, TensorFlow, a Spark job) publishes its embedding table
every few hours. ``embcore track SOURCE...`` reads each *new* version once (Parquet, NumPy,
safetensors or an embcore snapshot: :mod:`embcore.tables_io`), compares it with the previous one
and keeps its state between runs, so a cron job can call it after every publish::

    embcore track published/*.parquet --out track --fail-on "nan_rows>0,drift_p50>0.3"

For each new version it records (``metrics.json`` → ``versions[i]``; every figure of
``report.html`` is a series over versions):

* **rows**: ``rows``, ``rows_new`` / ``rows_removed`` / ``rows_unchanged`` against the previous
  version, ``stale_rows`` (unchanged for ``stale_versions`` versions or more);
* **health**: ``nan_rows`` (rows holding NaN or Inf; they are left out of everything else),
  ``over_norm_rows`` (norm above ``max_norm``), ``drift_jump`` (this version's median drift over
  the median of the previous ones' medians);
* **norms**: ``norm_mean``, ``norm_max`` (exact) and ``norm_p50`` / ``norm_p90`` / ``norm_p99``
  (log-bucket sketch of every row, relative error at most :data:`NORM_RELATIVE_ERROR`);
  ``norm_popularity_spearman`` / ``norm_popularity_slope`` where counts exist;
* **drift** against the previous version, rows matched by id
  (:func:`embcore.analysis.snapshot_drift`): ``drift_*`` (unaligned 1 − cos), ``aligned_drift_*``
  (after orthogonal Procrustes), ``procrustes_disparity``, ``cka``, ``knn_overlap`` (mean
  Jaccard@k of cosine neighbourhoods);
* **maturity** of the tracked items as known at this version: versions (and, with counts,
  interactions) until an item's row stays within α of its latest row
  (:func:`embcore.analysis.maturity` on the monitor's trajectories).

Design notes
------------
* **Bounded memory.** A version is streamed chunk by chunk. Whole-table figures (row counts,
  NaN rows, over-norm rows, the norm sketch) are exact or sketched over every row; the figures
  that need rows matched across versions are computed on a **sample** of ids chosen by a hash
  of (id, seed) — the same ids in every version, so new/removed/unchanged/stale counts and drift
  are estimates of the whole table's (exact while the sample holds the whole table, i.e.
  ``sample_rate == 1``; counts are scaled by 1/``sample_rate``). The sample rate is set from
  the first version (``sample_size`` rows expected) and halved whenever a version's sample
  exceeds twice ``sample_size``. Memory is the sample (previous rows), the monitor and the
  sketches, whatever the table's size.
* **State.** ``STATE/state.json`` (versions read, series, sampling), ``monitor-G.bin``
  (:meth:`embcore.Monitor.to_bytes`: per-update drift and norms by interaction count,
  popularity and age, trajectories of the tracked items) and ``sample-G.npz`` (the previous
  version's sampled rows). A new generation G is written beside the old one and
  ``state.json`` is replaced atomically last, so a crash or a bad file never loses the state.
* **A version is all or nothing.** It is read in full before anything is recorded: a
  truncated or corrupt file is reported, remembered as skipped (until the file changes) and
  the state stays as it was. A version of another dimension is an error (exit 2).
* **Order.** ``order="name"`` (default) sorts versions by file name with numbers compared as
  numbers (``v2`` before ``v10``); ``"mtime"`` by modification time; ``"time"`` by the value of
  ``time_column`` (its maximum in a Parquet file). A version that sorts before one already read
  is reported and skipped.
* The monitor's trajectory records are taken once per version with ``timestamp`` = the
  version's number (1, 2, ...) and ``count`` = the row's interaction count (the version's
  number without counts); ``observe`` gets the real counts and the version's time in seconds.

>>> import tempfile, pathlib, numpy as np
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> rng = np.random.default_rng(0)
>>> base = rng.normal(size=(200, 8)).astype(np.float32)
>>> for v in range(3):
...     np.savez(tmp / f"v{v}.npz", ids=np.arange(200), weights=base + 0.1 * v)
>>> metrics = track(sorted(tmp.glob("v*.npz")), tmp / "state", out=None, progress=False)
>>> [v["name"] for v in metrics["versions"]], metrics["versions"][1]["rows_unchanged"]
(['v0.npz', 'v1.npz', 'v2.npz'], 0)
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import operator
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import embcore
from embcore import analysis, reporting, runs
from embcore.errors import DatasetError, EmbcoreError
from embcore.tables_io import Version, VersionError, id_hash, open_version

__all__ = [
    "NORM_RELATIVE_ERROR",
    "RULE_NAMES",
    "NormSketch",
    "Rule",
    "TrackConfig",
    "TrackError",
    "Tracker",
    "add_parser",
    "parse_rules",
    "run",
    "track",
]

STATE_FORMAT = 1
NORM_RELATIVE_ERROR = 0.005
"""Relative error bound of the norm quantiles (log buckets of ratio (1 + e) / (1 − e))."""
_SKETCH_LOW = -4000
_SKETCH_HIGH = 4000
EXIT_ALERT = 3
ALPHAS = (0.01, 0.05, 0.1)


class TrackError(EmbcoreError):
    """A bad option, an unusable state directory or a version that cannot join the series."""


# --------------------------------------------------------------------------------------------
# Norm sketch


class NormSketch:
    """Mergeable log-bucket histogram of row norms: quantiles within
    :data:`NORM_RELATIVE_ERROR` relative error, in fixed memory (8001 counters).

    >>> s = NormSketch()
    >>> s.add(np.array([1.0, 2.0, 3.0, 4.0]))
    >>> abs(s.quantile(0.5) - 2.0) / 2.0 <= NORM_RELATIVE_ERROR
    True
    """

    _gamma = (1 + NORM_RELATIVE_ERROR) / (1 - NORM_RELATIVE_ERROR)
    _log_gamma = math.log(_gamma)

    def __init__(self) -> None:
        self.counts = np.zeros(_SKETCH_HIGH - _SKETCH_LOW + 2, dtype=np.int64)  # [0]: zeros

    def add(self, norms: npt.NDArray[np.float64]) -> None:
        """Count finite non-negative ``norms``."""
        positive = norms[norms > 0]
        zeros = norms.size - positive.size
        index = np.ceil(np.log(positive) / self._log_gamma).astype(np.int64)
        index = np.clip(index, _SKETCH_LOW, _SKETCH_HIGH) - _SKETCH_LOW + 1
        self.counts += np.bincount(index, minlength=self.counts.size)
        self.counts[0] += zeros

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def quantile(self, q: float) -> float:
        """The q-quantile (NaN when empty): the value of the bucket holding rank ⌊q (n − 1)⌋."""
        n = self.n
        if n == 0:
            return math.nan
        rank = int(math.floor(q * (n - 1)))
        bucket = int(np.searchsorted(np.cumsum(self.counts), rank, side="right"))
        if bucket == 0:
            return 0.0
        i = bucket - 1 + _SKETCH_LOW
        return 2.0 * self._gamma**i / (self._gamma + 1.0)


# --------------------------------------------------------------------------------------------
# Alert rules

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
RULE_NAMES: dict[str, str] = {
    "rows": "rows in the version",
    "nan_rows": "rows holding NaN or Inf",
    "over_norm_rows": "rows whose norm exceeds --max-norm",
    "stale_rows": "rows unchanged for --stale-versions versions or more (estimate)",
    "rows_new": "rows absent from the previous version (estimate)",
    "rows_removed": "rows of the previous version absent from this one (estimate)",
    "rows_unchanged": "rows identical to the previous version (estimate)",
    "new_share": "rows_new / rows",
    "removed_share": "rows_removed / previous rows",
    "norm_mean": "mean row norm",
    "norm_p50": "median row norm",
    "norm_p90": "90th percentile of the row norm",
    "norm_p99": "99th percentile of the row norm",
    "norm_max": "largest row norm",
    "drift_mean": "mean 1 - cos(row, previous row), rows matched by id",
    "drift_p50": "median 1 - cos(row, previous row)",
    "drift_p90": "90th percentile of 1 - cos(row, previous row)",
    "aligned_drift_p50": "median drift after orthogonal Procrustes alignment",
    "aligned_drift_p90": "90th percentile of the aligned drift",
    "procrustes_disparity": "|AR - B|^2 / |B|^2 after alignment",
    "cka": "linear CKA with the previous version (1: same geometry)",
    "knn_overlap": "mean Jaccard@k of cosine neighbourhoods with the previous version",
    "drift_jump": "drift_p50 / median of the previous versions' drift_p50",
    "norm_popularity_spearman": "Spearman rank correlation of norm and interaction count",
}
"""The names ``--fail-on`` rules may use (each a key of a version's metrics)."""


@dataclass(frozen=True)
class Rule:
    """One ``--fail-on`` rule: ``name OP threshold``; breached when the version's value
    satisfies it (a missing value, e.g. drift on the first version, never breaches)."""

    name: str
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.threshold:g}"

    def breached(self, metrics: Mapping[str, Any]) -> bool:
        value = metrics.get(self.name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        return bool(_OPERATORS[self.op](float(value), self.threshold))


def parse_rules(text: str | None) -> list[Rule]:
    """``"nan_rows>0,norm_p99>10"`` → rules; a :class:`TrackError` names a bad one.

    >>> [str(r) for r in parse_rules("nan_rows>0, drift_p50>=0.3")]
    ['nan_rows>0', 'drift_p50>=0.3']
    """
    if not text:
        return []
    rules = []
    pattern = re.compile(r"^\s*([a-z0-9_]+)\s*(>=|<=|==|!=|>|<)\s*([-+0-9.eE]+|inf|nan)\s*$")
    for part in text.split(","):
        if not part.strip():
            continue
        match = pattern.match(part)
        if match is None:
            raise TrackError(
                f"--fail-on rule {part.strip()!r} is not NAME OP NUMBER "
                "(e.g. nan_rows>0; OP one of > >= < <= == !=)"
            )
        name, op, number = match.groups()
        if name not in RULE_NAMES:
            raise TrackError(
                f"--fail-on rule {part.strip()!r}: unknown metric {name!r}; "
                f"known: {', '.join(RULE_NAMES)}"
            )
        try:
            threshold = float(number)
        except ValueError:
            raise TrackError(
                f"--fail-on rule {part.strip()!r}: {number!r} is not a number"
            ) from None
        rules.append(Rule(name, op, threshold))
    return rules


# --------------------------------------------------------------------------------------------
# Configuration and state


@dataclass(frozen=True)
class TrackConfig:
    """What defines a tracked series (fixed at its first version; later runs must agree).

    Parameters
    ----------
    sample_size : int
        Rows of each version kept (by hash of id) for the matched figures (drift, CKA, k-NN,
        new/removed/unchanged/stale); memory grows with it, not with the table.
    track_items : int
        Items of the sample whose trajectories are recorded for maturity (about this many).
    max_records : int
        Trajectory records kept at most (``track_items`` × versions by default 100 000).
    k, n_queries : int
        Neighbours and query rows of the k-NN overlap.
    max_norm : float or None
        ``over_norm_rows`` counts rows with a larger norm (None: not counted).
    stale_versions : int
        A row unchanged for this many versions or more is stale.
    seed : int
        Seed of the id hash that picks the sample and the tracked items.
    """

    sample_size: int = 100_000
    track_items: int = 1000
    max_records: int = 100_000
    k: int = 10
    n_queries: int = 1000
    max_norm: float | None = None
    stale_versions: int = 3
    seed: int = 0

    def check(self) -> None:
        for name in (
            "sample_size",
            "track_items",
            "max_records",
            "k",
            "n_queries",
            "stale_versions",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 1:
                raise TrackError(f"{name} must be an integer >= 1, got {value!r}")
        if self.max_norm is not None and not (self.max_norm > 0 and math.isfinite(self.max_norm)):
            raise TrackError(f"max_norm must be a positive number or None, got {self.max_norm!r}")
        if not isinstance(self.seed, int | np.integer) or not 0 <= self.seed < 2**63:
            raise TrackError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")


def _natural_key(name: str) -> list[Any]:
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t]


def _file_key(path: Path) -> str:
    """What identifies one published file: its resolved path, size and modification time."""
    target = path / "weights.npy" if (path / "weights.npy").exists() else path
    st = target.stat()
    size = (
        st.st_size
        if path.is_file() or target != path
        else sum(q.stat().st_size for q in path.iterdir() if q.is_file())
    )
    return f"{path.resolve()}|{size}|{st.st_mtime_ns}"


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class _Sample:
    """The previous version's sampled rows (sorted by id)."""

    ids: npt.NDArray[np.uint64]
    rows: npt.NDArray[np.float32]
    counts: npt.NDArray[np.int64] | None
    last_changed: npt.NDArray[np.int64]

    @classmethod
    def empty(cls, dim: int) -> _Sample:
        return cls(
            np.zeros(0, np.uint64), np.zeros((0, dim), np.float32), None, np.zeros(0, np.int64)
        )


@dataclass
class _Read:
    """One version, read in full: its whole-table figures and its sample."""

    rows: int = 0
    nan_rows: int = 0
    over_norm_rows: int = 0
    norm_sum: float = 0.0
    norm_max: float = math.nan
    sketch: NormSketch = field(default_factory=NormSketch)
    ids: list[npt.NDArray[np.uint64]] = field(default_factory=list)
    rows_kept: list[npt.NDArray[np.float32]] = field(default_factory=list)
    counts: list[npt.NDArray[np.int64]] = field(default_factory=list)
    nan_sample: int = 0


# --------------------------------------------------------------------------------------------
# The tracker


class Tracker:
    """The state of one tracked series, kept in ``state_dir`` between runs.

    ``Tracker(state_dir, config=None)``: opens the state (or starts an empty one; ``config``
    defaults to :class:`TrackConfig` and must match the state's once it exists).
    :meth:`add` records one :class:`~embcore.tables_io.Version` (all or nothing),
    :meth:`update` the new versions among paths, :attr:`monitor` is the
    :class:`embcore.Monitor` fed with the sampled rows, :meth:`metrics` the series.

    >>> import tempfile
    >>> from embcore.tables_io import Version
    >>> t = Tracker(tempfile.mkdtemp())
    >>> t.add(Version.from_arrays("v1", np.arange(4), np.eye(4)))["rows"]
    4
    >>> t.add(Version.from_arrays("v2", np.arange(4), 2 * np.eye(4)))["drift_p50"]
    0.0
    """

    def __init__(
        self, state_dir: str | os.PathLike[str], config: TrackConfig | None = None
    ) -> None:
        self.state_dir = Path(state_dir)
        if self.state_dir.exists() and not self.state_dir.is_dir():
            raise TrackError(f"--state {self.state_dir} exists and is not a directory")
        state_file = self.state_dir / "state.json"
        if state_file.exists():
            try:
                state = json.loads(state_file.read_text(encoding="utf-8"))
                if state.get("format") != STATE_FORMAT:
                    raise ValueError(f"format {state.get('format')!r}, expected {STATE_FORMAT}")
                saved = TrackConfig(**state["config"])
                generation = int(state["generation"])
                monitor = embcore.Monitor.from_bytes(
                    (self.state_dir / f"monitor-{generation}.bin").read_bytes()
                )
                with np.load(self.state_dir / f"sample-{generation}.npz") as data:
                    sample = _Sample(
                        data["ids"],
                        data["rows"],
                        data["counts"] if "counts" in data.files else None,
                        data["last_changed"],
                    )
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise TrackError(
                    f"--state {self.state_dir} holds an unreadable state ({err}); "
                    "point --state at a new directory to start the series again"
                ) from None
            if config is not None and config != saved:
                changed = [k for k, v in asdict(config).items() if getattr(saved, k) != v]
                given = ", ".join(f"{k}={getattr(saved, k)!r}" for k in changed)
                raise TrackError(
                    f"--state {self.state_dir} was started with other settings ({given}); "
                    "keep them or use a new --state"
                )
            self.config = saved
            self._state = state
            self.monitor = monitor
            self._sample = sample
        else:
            self.config = config or TrackConfig()
            self.config.check()
            self._state = {
                "format": STATE_FORMAT,
                "generation": 0,
                "config": asdict(self.config),
                "dim": None,
                "threshold": None,
                "versions": [],
                "skipped": [],
            }
            self.monitor = self._new_monitor()
            self._sample = _Sample.empty(1)

    def _new_monitor(self, sample_rows: int | None = None) -> embcore.Monitor:
        """The series' monitor; its tracked share is ``track_items`` over the rows sampled."""
        rows = self.config.sample_size if sample_rows is None else max(sample_rows, 1)
        rate = min(1.0, self.config.track_items / min(rows, self.config.sample_size))
        return embcore.Monitor(
            sample_rate=rate,
            milestones=[2**62],  # trajectories come from record_rows, once per version
            max_records=self.config.max_records,
            seed=self.config.seed,
        )

    # ---------------------------------------------------------------------------------------
    @property
    def versions(self) -> list[dict[str, Any]]:
        """The metrics of every version recorded, in order."""
        return list(self._state["versions"])

    @property
    def dim(self) -> int | None:
        return self._state["dim"]

    @property
    def sample_rate(self) -> float:
        threshold = self._state["threshold"]
        return 1.0 if threshold is None else int(threshold) / 2.0**64

    def known(self, key: str) -> bool:
        """Whether a file with this key was recorded or skipped already."""
        return any(v.get("key") == key for v in self._state["versions"]) or any(
            s.get("key") == key for s in self._state["skipped"]
        )

    def skip(self, key: str, name: str, reason: str) -> None:
        """Remember that a file could not be recorded (until it changes) and save the state."""
        self._state["skipped"].append({"key": key, "name": name, "reason": reason})
        self._save()

    # ---------------------------------------------------------------------------------------
    def add(
        self,
        version: Version,
        key: str | None = None,
        chunk_rows: int = 65536,
        sort_key: Any = None,
    ) -> dict[str, Any]:
        """Read ``version`` in full, compare it with the previous one and record it; returns its
        metrics. Nothing is recorded when reading fails (:class:`~embcore.tables_io.VersionError`)
        or the dimension differs (:class:`TrackError`)."""
        dim = self._state["dim"]
        if dim is not None and version.dim != dim:
            raise TrackError(
                f"{version.name} has dimension {version.dim} but the tracked series has "
                f"dimension {dim}; track it with another --state"
            )
        threshold = self._state["threshold"]
        if threshold is None:
            rate = min(1.0, self.config.sample_size / max(version.num_rows, 1))
            threshold = 2**64 - 1 if rate >= 1.0 else int(rate * 2**64)
        threshold = int(threshold)
        read = self._read(version, threshold, chunk_rows)
        # Halve the sample until it fits (the same ids keep being sampled in every version).
        ids = np.concatenate(read.ids) if read.ids else np.zeros(0, np.uint64)
        rows = (
            np.concatenate(read.rows_kept)
            if read.rows_kept
            else np.zeros((0, version.dim), np.float32)
        )
        counts = np.concatenate(read.counts) if read.counts else None
        while ids.size > 2 * self.config.sample_size:
            threshold //= 2
            keep = id_hash(ids, self.config.seed) < np.uint64(threshold)
            ids, rows = ids[keep], rows[keep]
            counts = None if counts is None else counts[keep]
        order = np.argsort(ids, kind="stable")
        ids, rows = ids[order], rows[order]
        counts = None if counts is None else counts[order]
        if ids.size > 1 and bool((ids[1:] == ids[:-1]).any()):
            dup = int(ids[1:][ids[1:] == ids[:-1]][0])
            raise VersionError(f"{version.name}: id {dup} appears more than once")

        number = len(self._state["versions"]) + 1
        if number == 1:  # the tracked share is set from the first version's sample
            self.monitor = self._new_monitor(int(ids.size))
        metrics = self._compare(version, number, read, threshold, ids, rows, counts)
        self._record(version, number, ids, rows, counts, threshold)
        metrics["key"] = key
        metrics["sort_key"] = sort_key
        metrics.update(self._maturity(number, counts is not None))
        self._state["versions"].append(metrics)
        self._state["dim"] = version.dim
        self._state["threshold"] = str(threshold)
        self._save()
        return metrics

    def _read(self, version: Version, threshold: int, chunk_rows: int) -> _Read:
        """One pass over the version: whole-table figures, and the sampled finite rows."""
        r = _Read()
        max_norm = self.config.max_norm
        norm_max = -math.inf
        for chunk in version.chunks(chunk_rows):
            finite = np.isfinite(chunk.rows).all(axis=1)
            bad = int(finite.size - np.count_nonzero(finite))
            r.rows += int(finite.size)
            r.nan_rows += bad
            rows = chunk.rows[finite] if bad else chunk.rows
            norms = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))
            r.sketch.add(norms)
            r.norm_sum += float(norms.sum())
            if norms.size:
                norm_max = max(norm_max, float(norms.max()))
            if max_norm is not None:
                r.over_norm_rows += int(np.count_nonzero(norms > max_norm))
            sampled = id_hash(chunk.ids, self.config.seed) < np.uint64(threshold)
            if bad:
                r.nan_sample += int(np.count_nonzero(sampled & ~finite))
                sampled &= finite
            if sampled.any():
                r.ids.append(chunk.ids[sampled])
                r.rows_kept.append(np.array(chunk.rows[sampled], dtype=np.float32))
                if chunk.counts is not None:
                    r.counts.append(chunk.counts[sampled])
            elif chunk.counts is not None and not r.counts:
                r.counts.append(np.zeros(0, np.int64))
        r.norm_max = norm_max if norm_max > -math.inf else math.nan
        return r

    def _compare(
        self,
        version: Version,
        number: int,
        read: _Read,
        threshold: int,
        ids: npt.NDArray[np.uint64],
        rows: npt.NDArray[np.float32],
        counts: npt.NDArray[np.int64] | None,
    ) -> dict[str, Any]:
        """The version's metrics (see the module docstring)."""
        rate = 1.0 if threshold >= 2**64 - 1 else threshold / 2.0**64
        finite_rows = read.rows - read.nan_rows
        m: dict[str, Any] = {
            "version": number,
            "name": version.name,
            "format": version.format,
            "path": None if version.path is None else str(version.path),
            "time": version.time,
            "rows": read.rows,
            "nan_rows": read.nan_rows,
            "over_norm_rows": read.over_norm_rows if self.config.max_norm is not None else None,
            "sample_rows": int(ids.size),
            "sample_rate": rate,
            "norm_mean": read.norm_sum / finite_rows if finite_rows else None,
            "norm_p50": read.sketch.quantile(0.5),
            "norm_p90": read.sketch.quantile(0.9),
            "norm_p99": read.sketch.quantile(0.99),
            "norm_max": read.norm_max,
        }
        if counts is not None and ids.size > 2:
            pop = analysis.norm_popularity((ids, rows), (ids, counts))
            m["norm_popularity_spearman"] = pop.spearman
            m["norm_popularity_slope"] = pop.loglog_slope
        prev = self._sample
        previous = self._state["versions"][-1] if self._state["versions"] else None
        # Rows matched by id between the two samples (the sample threshold may have shrunk).
        keep_prev = id_hash(prev.ids, self.config.seed) < np.uint64(threshold)
        prev_ids, prev_rows = prev.ids[keep_prev], prev.rows[keep_prev]
        prev_changed = prev.last_changed[keep_prev]
        scale = 1.0 / rate
        common, in_prev, in_cur = np.intersect1d(
            prev_ids, ids, assume_unique=True, return_indices=True
        )
        same = (
            (prev_rows[in_prev] == rows[in_cur]).all(axis=1) if common.size else np.zeros(0, bool)
        )
        last_changed = np.full(ids.size, number, dtype=np.int64)
        last_changed[in_cur[same]] = prev_changed[in_prev[same]]
        stale = int(np.count_nonzero(number - last_changed >= self.config.stale_versions))
        exact = rate >= 1.0
        estimate = (lambda x: int(x)) if exact else (lambda x: int(round(x * scale)))
        m["stale_rows"] = estimate(stale)
        if previous is None:
            m.update(rows_new=None, rows_removed=None, rows_unchanged=None)
        else:
            m["rows_new"] = estimate(ids.size - common.size)
            m["rows_removed"] = estimate(prev_ids.size - common.size)
            m["rows_unchanged"] = estimate(int(np.count_nonzero(same)))
            m["new_share"] = m["rows_new"] / read.rows if read.rows else None
            m["removed_share"] = m["rows_removed"] / previous["rows"] if previous["rows"] else None
        self._next_last_changed = last_changed
        if previous is not None and common.size >= 2:
            d = analysis.snapshot_drift(
                (prev_ids, prev_rows),
                (ids, rows),
                k=self.config.k,
                n_queries=self.config.n_queries,
                seed=self.config.seed,
            )
            m.update(
                drift_mean=d.unaligned.mean,
                drift_p50=d.unaligned.p50,
                drift_p90=d.unaligned.p90,
                drift_p99=d.unaligned.p99,
                aligned_drift_mean=d.aligned.mean,
                aligned_drift_p50=d.aligned.p50,
                aligned_drift_p90=d.aligned.p90,
                procrustes_disparity=d.disparity,
                cka=d.cka,
                knn_overlap=d.jaccard.mean,
                knn_k=d.k,
                matched_rows=d.n_matched,
            )
            earlier = [
                v["drift_p50"]
                for v in self._state["versions"][-5:]
                if v.get("drift_p50") is not None
            ]
            base = float(np.median(earlier)) if earlier else None
            if base is not None and base > 0:
                m["drift_jump"] = d.unaligned.p50 / base
            elif base is not None:
                m["drift_jump"] = math.inf if d.unaligned.p50 > 1e-12 else 1.0
        return {
            k: runs.finite(v) if k not in ("name", "path", "format") else v for k, v in m.items()
        }

    def _record(
        self,
        version: Version,
        number: int,
        ids: npt.NDArray[np.uint64],
        rows: npt.NDArray[np.float32],
        counts: npt.NDArray[np.int64] | None,
        threshold: int,
    ) -> None:
        """Feed the sample to the monitor, record the tracked items' rows, keep the sample."""
        when = int(version.time) if version.time is not None else number
        times = np.full(ids.size, when, dtype=np.int64)
        observed = counts if counts is not None else np.full(ids.size, number, np.int64)
        self.monitor.observe(ids, rows, counts=np.maximum(observed, 0), timestamps=times)
        first_seen = np.zeros(ids.size, dtype=np.int64)
        self.monitor.record_rows(
            ids, rows, np.maximum(observed, 0).astype(np.uint64), first_seen, number, final=False
        )
        self._sample = _Sample(ids, rows, counts, self._next_last_changed)

    def _maturity(self, number: int, has_counts: bool) -> dict[str, Any]:
        """Maturity of the tracked items as known now: by version, and by interaction count."""
        traj = analysis.Trajectories.from_monitor(self.monitor)
        out: dict[str, Any] = {"tracked_items": traj.n_items}
        if len(traj) == 0:
            return out
        by_version = analysis.Trajectories(traj.ids, traj.timestamps, traj.timestamps, traj.rows)
        grids = [("versions", by_version)]
        if has_counts:
            grids.append(("interactions", traj))
        for unit, t in grids:
            result = analysis.maturity(t, alpha=ALPHAS, min_records=2)
            for level in result.levels:
                key = f"maturity_{unit}_{level.alpha:g}"
                out[f"{key}_median"] = runs.finite(level.overall.median)
                out[f"{key}_matured_share"] = runs.finite(level.overall.mature_share)
                if unit == "versions" and level.alpha == 0.05:
                    out["maturity_curve"] = level.overall.km
            out[f"maturity_{unit}_items"] = result.n_items
        return out

    def _save(self) -> None:
        """A new generation of the monitor and the sample, then ``state.json`` atomically."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        old = int(self._state["generation"])
        new = old + 1
        _write_atomic(self.state_dir / f"monitor-{new}.bin", self.monitor.to_bytes())
        s = self._sample
        arrays: dict[str, Any] = {"ids": s.ids, "rows": s.rows, "last_changed": s.last_changed}
        if s.counts is not None:
            arrays["counts"] = s.counts
        fd, tmp = tempfile.mkstemp(prefix=".sample.", suffix=".npz", dir=self.state_dir)
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, self.state_dir / f"sample-{new}.npz")
        self._state["generation"] = new
        text = json.dumps(self._state, indent=1, allow_nan=False)
        _write_atomic(self.state_dir / "state.json", text.encode("utf-8"))
        for stale in (f"monitor-{old}.bin", f"sample-{old}.npz"):
            (self.state_dir / stale).unlink(missing_ok=True)

    # ---------------------------------------------------------------------------------------
    def update(
        self,
        sources: Iterable[str | os.PathLike[str]],
        order: str = "name",
        time_column: str | None = None,
        columns: Mapping[str, str | None] | None = None,
        progress: bool = True,
        warn: Callable[[str], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Record the versions among ``sources`` not read before, in ``order``; returns their
        metrics. Unreadable versions are reported through ``warn`` and skipped (remembered until
        the file changes); a version that sorts before the last one read is reported and left.

        Raises :class:`TrackError` (one line naming the first unreadable source and why) when no
        source is readable: none was read before and none can be read now. Nothing is then
        reported through ``warn`` or remembered, and the state stays as it was."""
        warn = warn or (lambda line: print(f"embcore track: {line}", file=sys.stderr))
        columns = dict(columns or {})
        paths = expand_sources(sources)
        fresh: list[tuple[Path, str]] = []
        # Warnings and skips wait until it is known that something was readable.
        notes: list[str] = []
        skips: list[tuple[str, str, str]] = []
        unreadable: list[str] = []
        readable = 0
        for p in paths:
            try:
                key = _file_key(p)
            except OSError as err:
                unreadable.append(f"{p}: cannot be read ({err.strerror or err})")
                notes.append(f"skipped {unreadable[-1]}")
                continue
            if not self.known(key):
                fresh.append((p, key))
                continue
            skipped = [s for s in self._state["skipped"] if s.get("key") == key]
            if skipped:
                unreadable.append(str(skipped[0]["reason"]))
            else:
                readable += 1
        opened: list[tuple[Any, Path, str, Version | None, str | None]] = []
        for p, key in fresh:
            try:
                v: Version | None = open_version(p, time_column=time_column, **columns)
                error = None
            except VersionError as err:
                v, error = None, str(err)
            opened.append((_sort_key(p, v, order), p, key, v, error))
        opened.sort(key=lambda t: t[0])
        last = self._state["versions"][-1] if self._state["versions"] else None
        done = []
        bar = runs.progress_bar(len(opened), "versions", progress and len(opened) > 1)
        try:
            for sort_key, p, key, v, error in opened:
                bar.update(1)
                if v is None:
                    notes.append(f"skipped {error}")
                    skips.append((key, p.name, str(error)))
                    continue
                if last is not None and sort_key < self._last_sort_key(last, order):
                    readable += 1
                    notes.append(
                        f"skipped {p}: it sorts before {last['name']}, already read "
                        f"(order={order}); versions are read in order"
                    )
                    continue
                try:
                    metrics = self.add(v, key, sort_key=_json_sort_key(sort_key))
                except VersionError as err:
                    notes.append(f"skipped {err}")
                    skips.append((key, p.name, str(err)))
                    continue
                readable += 1
                last = metrics
                done.append(metrics)
        except BaseException:
            self._report_skips(notes, skips, warn)  # another error: what was seen still counts
            raise
        finally:
            bar.close()
        if paths and not readable:
            raise TrackError(self._nothing_readable([*unreadable, *(s[2] for s in skips)]))
        self._report_skips(notes, skips, warn)
        return done

    def _report_skips(
        self, notes: list[str], skips: list[tuple[str, str, str]], warn: Callable[[str], None]
    ) -> None:
        for line in notes:
            warn(line)
        for skip in skips:
            self.skip(*skip)
        notes.clear()
        skips.clear()

    @staticmethod
    def _nothing_readable(reasons: Sequence[str]) -> str:
        """The one line of an update that found no readable source."""
        if not reasons:
            return "no readable version among the sources given"
        more = f" (and {len(reasons) - 1} more unreadable)" if len(reasons) > 1 else ""
        return (
            f"no source given is a readable version: {reasons[0]}{more}; give embedding tables "
            "as Parquet, .npz, a folder of ids.npy/weights.npy, .safetensors or embcore snapshots"
        )

    @staticmethod
    def _last_sort_key(last: Mapping[str, Any], order: str) -> Any:
        stored = last.get("sort_key")
        if stored is None:
            return ()
        if order == "name":
            return tuple(tuple(x) for x in stored)
        return stored

    def metrics(self) -> dict[str, Any]:
        """``{"config", "state", "versions", "skipped", "monitor"}``: the series so far."""
        return {
            "command": "track",
            "config": {**asdict(self.config), "state": str(self.state_dir), **runs.versions()},
            "dim": self._state["dim"],
            "sample_rate": self.sample_rate,
            "versions": [
                {k: v for k, v in entry.items() if k not in ("key", "sort_key")}
                for entry in self._state["versions"]
            ],
            "skipped": [{k: v for k, v in s.items() if k != "key"} for s in self._state["skipped"]],
            "monitor": _monitor_summary(self.monitor),
        }


def _monitor_summary(monitor: embcore.Monitor) -> dict[str, Any]:
    """The monitor's counters and its overall per-update statistics, for metrics.json."""
    s = monitor.to_dict()["summary"]  # plain lists and numbers
    keep = ("updates", "items_seen", "tracked_items", "records", "dropped_records", "memory_bytes")
    out: dict[str, Any] = {k: s.get(k) for k in keep}
    out["overall"] = s.get("overall")
    text = json.dumps(out, default=runs.finite, allow_nan=True)
    return dict(json.loads(text, parse_constant=lambda _: None))


def _sort_key(path: Path, version: Version | None, order: str) -> Any:
    if order == "name":
        return tuple(_natural_key(path.name))
    if order == "mtime":
        return path.stat().st_mtime
    if version is None or version.time is None:
        return -math.inf
    return version.time


def _json_sort_key(key: Any) -> Any:
    if isinstance(key, tuple):
        return [list(x) for x in key]
    return key


def expand_sources(sources: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Paths of the versions: each source is a version (file or folder); a pattern with ``*``,
    ``?`` or ``[`` that names no file is expanded (so a cron line may quote its glob)."""
    out: list[Path] = []
    for s in sources:
        text = os.fspath(s)
        if not Path(text).exists() and any(c in text for c in "*?["):
            out.extend(Path(p) for p in sorted(glob.glob(text)))
        else:
            out.append(Path(text))
    seen: set[Path] = set()
    unique = []
    for p in out:
        if p.absolute() not in seen:
            seen.add(p.absolute())
            unique.append(p)
    return unique


# --------------------------------------------------------------------------------------------
# The report

FIGURES: dict[str, str] = {  # names apart from reporting.SHARED_FIGURES (drawn there)
    "drift": "Drift against the previous version (1 − cos, rows matched by id)",
    "similarity": "Geometry kept: CKA and k-NN neighbourhood overlap with the previous version",
    "norms": "Row norms per version",
    "rows": "Rows per version: new, removed, unchanged, stale",
    "health": "Health: NaN rows, rows over the norm limit, drift jump",
    "maturity_by_version": "Maturity of the tracked items as known at each version",
    "norm_popularity": "Norm and popularity: Spearman ρ(norm, interaction count) per version",
}


def _series(metrics: Mapping[str, Any], key: str) -> list[float]:
    return reporting.nan_list([v.get(key) for v in metrics["versions"]])


def _figure(
    metrics: Mapping[str, Any], keys: Sequence[tuple[str, str]], ylabel: str, log: bool = False
) -> Any:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 3.6))
    ax = fig.subplots()
    x = [v["version"] for v in metrics["versions"]]
    for key, label in keys:
        ax.plot(x, _series(metrics, key), marker="o", label=label)
    ax.set_xlabel("version")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("symlog", linthresh=1e-3)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def _draw_maturity(metrics: Mapping[str, Any]) -> Any:
    keys = [(f"maturity_versions_{a:g}_median", f"median versions, α={a:g}") for a in ALPHAS]
    if any(v.get("maturity_interactions_0.05_median") is not None for v in metrics["versions"]):
        keys.append(("maturity_interactions_0.05_median", "median interactions, α=0.05"))
    return _figure(metrics, keys, "versions (interactions) to maturity", log=True)


_DRAW: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "drift": lambda m: _figure(
        m,
        [
            ("drift_p50", "unaligned p50"),
            ("drift_p90", "unaligned p90"),
            ("aligned_drift_p50", "Procrustes-aligned p50"),
        ],
        "1 − cos",
        log=True,
    ),
    "similarity": lambda m: _figure(m, [("cka", "linear CKA"), ("knn_overlap", "Jaccard@k")], ""),
    "norms": lambda m: _figure(
        m,
        [("norm_p50", "p50"), ("norm_p90", "p90"), ("norm_p99", "p99"), ("norm_max", "max")],
        "‖row‖",
    ),
    "rows": lambda m: _figure(
        m,
        [
            ("rows", "rows"),
            ("rows_new", "new"),
            ("rows_removed", "removed"),
            ("rows_unchanged", "unchanged"),
            ("stale_rows", "stale"),
        ],
        "rows",
        log=True,
    ),
    "health": lambda m: _figure(
        m,
        [
            ("nan_rows", "NaN/Inf rows"),
            ("over_norm_rows", "over max_norm"),
            ("drift_jump", "drift jump ratio"),
        ],
        "",
        log=True,
    ),
    "maturity_by_version": _draw_maturity,
    "norm_popularity": lambda m: _figure(
        m, [("norm_popularity_spearman", "Spearman ρ")], "ρ(norm, interactions)"
    ),
}


def _readings(metrics: Mapping[str, Any]) -> dict[str, str]:
    versions = metrics["versions"]
    if not versions:
        return {}
    last = versions[-1]
    num = reporting.num
    return {
        "drift": f"Last version: median drift {num(last.get('drift_p50'))}, aligned "
        f"{num(last.get('aligned_drift_p50'))} over {num(last.get('matched_rows'))} matched rows.",
        "similarity": f"Last version: CKA {num(last.get('cka'))}, Jaccard@"
        f"{last.get('knn_k')} {num(last.get('knn_overlap'))}.",
        "norms": f"Last version: norm p50 {num(last.get('norm_p50'))}, p99 "
        f"{num(last.get('norm_p99'))}, max {num(last.get('norm_max'))}.",
        "rows": f"Last version: {last['rows']} rows, {num(last.get('rows_new'))} new, "
        f"{num(last.get('rows_removed'))} removed, {num(last.get('stale_rows'))} stale.",
        "health": f"Last version: {last['nan_rows']} NaN rows, drift jump "
        f"{num(last.get('drift_jump'))}.",
        "maturity_by_version": f"{num(last.get('maturity_versions_0.05_matured_share'))} of "
        f"{last.get('tracked_items')} tracked items have matured (α=0.05), median "
        f"{num(last.get('maturity_versions_0.05_median'))} versions.",
        "norm_popularity": f"Last version: ρ {num(last.get('norm_popularity_spearman'))}.",
    }


_LAYOUT = reporting.ReportLayout(
    command="track",
    figures=FIGURES,
    draw=_DRAW,
    heading=lambda m: f"embcore track: {len(m['versions'])} versions",
    intro=lambda config: (
        "<p>Each published version compared with the previous one; figures "
        "are series over versions. Whole-table figures (rows, NaN, norms) cover every row; "
        "matched figures (drift, CKA, k-NN, new/removed/stale) a hash sample of ids.</p>"
    ),
    settings=("sample_size", "track_items", "k", "max_norm", "stale_versions", "seed", "embcore"),
    summary=(
        ("rows", ("rows",), str),
        ("NaN", ("nan_rows",), str),
        ("new", ("rows_new",), reporting.num),
        ("drift p50", ("drift_p50",), reporting.num),
        ("aligned p50", ("aligned_drift_p50",), reporting.num),
        ("CKA", ("cka",), reporting.num),
        ("Jaccard@k", ("knn_overlap",), reporting.num),
        ("norm p99", ("norm_p99",), reporting.num),
    ),
    row_label="version",
    scope="series",
    readings=_readings,
    notes=(
        "<li>Drift is 1 − cos between a row and the same id's row in the previous version; "
        "aligned drift first rotates the previous version onto this one (orthogonal "
        "Procrustes), so a rotation of the whole space is not counted.</li>",
        "<li>Counts marked as estimates are the sample's divided by the sample rate "
        "(exact when it is 1).</li>",
        "<li>Maturity: versions until an item's row stays within α (1 − cos) of its latest "
        "row; items that have not settled are censored (Kaplan–Meier).</li>",
    ),
)


def write_report(directory: Path, metrics: Mapping[str, Any]) -> dict[str, str | None]:
    """Draw the figures and write ``report.html`` into ``directory``."""
    view = {**metrics, "modes": {v["name"]: v for v in metrics["versions"]}}
    return _LAYOUT.write_report(directory, view, {})


# --------------------------------------------------------------------------------------------
# Python entry point


def track(
    sources: Iterable[str | os.PathLike[str]],
    state: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = "embcore-track",
    *,
    order: str = "name",
    time_column: str | None = None,
    id_column: str | None = None,
    weight_column: str | None = None,
    count_column: str | None = None,
    fail_on: str | Sequence[Rule] | None = None,
    config: TrackConfig | None = None,
    progress: bool = True,
    figures: bool = True,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Record the new versions among ``sources`` into the series kept in ``state`` and write
    ``out/metrics.json`` and ``out/report.html``; returns the metrics.

    ``metrics["alerts"]`` lists the ``fail_on`` rules breached by the versions read in this
    call (by the last version when none is new), one line each.
    """
    if order not in ("name", "mtime", "time"):
        raise TrackError(f"order must be 'name', 'mtime' or 'time', got {order!r}")
    if order == "time" and time_column is None:
        raise TrackError("order='time' needs time_column (--time-column NAME)")
    rules = parse_rules(fail_on) if isinstance(fail_on, str) or fail_on is None else list(fail_on)
    sources = list(sources)
    if not any(p.exists() for p in expand_sources(sources)):
        shown = ", ".join(os.fspath(s) for s in sources[:3]) + (" ..." if len(sources) > 3 else "")
        raise TrackError(f"no version found at {shown}; give version files or folders (or a glob)")
    started = time.perf_counter()
    output = runs.OutputDirectory(out, TrackError, replaces="an earlier embcore track report")
    tracker = Tracker(state, config)
    columns = {"id_column": id_column, "weight_column": weight_column, "count_column": count_column}
    new = tracker.update(
        sources,
        order=order,
        time_column=time_column,
        columns=columns,
        progress=progress,
        warn=warn,
    )
    metrics = tracker.metrics()
    metrics["new_versions"] = [v["name"] for v in new]
    checked = new or tracker.versions[-1:]
    metrics["alerts"] = [
        f"{v['name']}: {rule} (value {reporting.num(v.get(rule.name))})"
        for v in checked
        for rule in rules
        if rule.breached(v)
    ]
    metrics["rules"] = [str(r) for r in rules]
    with output:
        report = (lambda d: write_report(d, metrics)) if figures and metrics["versions"] else None
        output.finish(metrics, started, report)
    return metrics


# --------------------------------------------------------------------------------------------
# Command line


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected [HOST]:PORT, got {text!r}") from None
    if not 0 <= number < 65536:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {number}")
    return host or "0.0.0.0", number


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Declare ``embcore track`` and its arguments on the CLI's subparsers."""
    from embcore.cli_args import positive_int

    p = sub.add_parser(
        "track",
        help="monitor the embedding tables another trainer publishes",
        description="Monitor a series of published embedding tables (Parquet, .npz, folder of "
        ".npy, .safetensors, embcore snapshots); only versions not read before are read. "
        f"Exit 3 when a --fail-on rule is breached; known names: {', '.join(RULE_NAMES)}.",
    )
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="version files or folders (a quoted glob is expanded)",
    )
    p.add_argument("--out", default="embcore-track", help="report directory")
    p.add_argument("--state", default=None, help="state directory (default: OUT-state)")
    p.add_argument(
        "--order",
        choices=("name", "mtime", "time"),
        default="name",
        help="version order: file name (numbers as numbers), mtime, or --time-column",
    )
    p.add_argument(
        "--time-column",
        default=None,
        help="with --order time: the column giving each version's time",
    )
    p.add_argument(
        "--id-column",
        default=None,
        help="id column (default: id, ids, item_id or the first integer one)",
    )
    p.add_argument(
        "--weight-column",
        default=None,
        help="embedding column (default: weights, embedding, vector, the only list column, else "
        "every remaining float column)",
    )
    p.add_argument(
        "--count-column",
        default=None,
        help="per-row interaction counts (default: count, counts or interactions when present)",
    )
    p.add_argument(
        "--fail-on",
        default=None,
        metavar="RULES",
        help='e.g. "nan_rows>0,norm_p99>10,drift_p50>0.3"',
    )
    p.add_argument(
        "--sample-size",
        type=positive_int,
        default=TrackConfig.sample_size,
        help="rows of each version kept, by hash of id, for drift, CKA, k-NN and stale rows "
        "(memory grows with it, not with the table)",
    )
    p.add_argument(
        "--track-items",
        type=positive_int,
        default=TrackConfig.track_items,
        help="items of the sample whose trajectories are recorded for maturity",
    )
    p.add_argument(
        "--max-norm",
        type=float,
        default=None,
        help="count rows with a larger norm (over_norm_rows)",
    )
    p.add_argument(
        "--stale-versions",
        type=positive_int,
        default=TrackConfig.stale_versions,
        help="a row unchanged for this many versions or more is stale",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the id hash that picks the sample")
    p.add_argument(
        "--serve",
        type=_address,
        default=None,
        metavar="[HOST]:PORT",
        help="keep an OpenMetrics endpoint up at http://HOST:PORT/metrics",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=None,
        help="with --serve: look for new versions every this many seconds",
    )
    p.add_argument(
        "--serve-seconds",
        type=float,
        default=None,
        help="with --serve: stop after this many seconds (default: until Ctrl-C)",
    )
    p.add_argument("--no-figures", action="store_true", help="write metrics.json only, no report")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    """``embcore track``: 0 done, 2 an error (one line), 3 a ``--fail-on`` rule breached."""
    state = args.state or f"{args.out}-state"
    try:
        rules = parse_rules(args.fail_on)
        config = TrackConfig(
            sample_size=args.sample_size,
            track_items=args.track_items,
            max_norm=args.max_norm,
            stale_versions=args.stale_versions,
            seed=args.seed,
        )
        state_file = Path(state) / "state.json"
        options = dict(
            order=args.order,
            time_column=args.time_column,
            id_column=args.id_column,
            weight_column=args.weight_column,
            count_column=args.count_column,
            fail_on=rules,
            config=config if not state_file.exists() else _same_or_error(state, config),
            progress=not args.no_progress,
            figures=not args.no_figures,
        )
        metrics = track(args.sources, state, args.out, **options)
    except (EmbcoreError, DatasetError) as err:
        print(f"embcore track: error: {err}", file=sys.stderr)
        return 2
    print(_summary(metrics, args.out))
    for line in metrics["alerts"]:
        print(f"embcore track: alert: {line}", file=sys.stderr)
    code = EXIT_ALERT if metrics["alerts"] else 0
    if args.serve is None:
        return code
    return _serve_loop(args, state, options, code, list(metrics["alerts"]))


def _same_or_error(state: str, config: TrackConfig) -> TrackConfig:
    return Tracker(state, config).config


def _summary(metrics: Mapping[str, Any], out: str) -> str:
    versions = metrics["versions"]
    lines = [
        f"embcore track: {len(metrics['new_versions'])} new version(s), {len(versions)} in the "
        f"series, {len(metrics['skipped'])} skipped"
    ]
    if versions:
        last = versions[-1]
        num = reporting.num
        lines.append(
            f"  {last['name']}: rows {last['rows']}, NaN {last['nan_rows']}, norm p99 "
            f"{num(last.get('norm_p99'))}, drift p50 {num(last.get('drift_p50'))}, CKA "
            f"{num(last.get('cka'))}, Jaccard@k {num(last.get('knn_overlap'))}"
        )
    report = " and report.html" if versions and metrics.get("figures") is not None else ""
    lines.append(f"  wrote {out}/metrics.json{report}")
    return "\n".join(lines)


def _serve_loop(
    args: argparse.Namespace, state: str, options: dict[str, Any], code: int, alerts: list[str]
) -> int:
    from embcore import metrics as openmetrics

    tracker = Tracker(state)
    server = openmetrics.serve(lambda: (tracker.monitor, tracker.versions, alerts), *args.serve)
    host, port = server.server_address[:2]
    print(f"embcore track: serving http://{host}:{port}/metrics", flush=True)
    deadline = None if args.serve_seconds is None else time.monotonic() + args.serve_seconds
    try:
        while deadline is None or time.monotonic() < deadline:
            wait = args.interval if args.interval else 1.0
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - time.monotonic()))
            time.sleep(wait)
            if args.interval:
                try:
                    m = track(args.sources, state, args.out, **options)
                except (EmbcoreError, DatasetError) as err:
                    print(f"embcore track: error: {err}", file=sys.stderr)
                    continue
                alerts[:] = m["alerts"]
                fresh = Tracker(state)
                tracker.monitor, tracker._state = fresh.monitor, fresh._state
                for line in m["alerts"]:
                    print(f"embcore track: alert: {line}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    return code
