"""ShardedModel: one embcore model split over Ray actors, trained parameter-server style.

Design notes
------------
* Placement. Every row of every field lives on shard ``shard_of(id, num_shards)`` (the top bits
  of the core's 64-bit id hash, ``embcore._core.shard_of``): stable across processes, machines
  and versions, so a checkpoint written by N shards is read back by N shards file by file, and
  by M shards by rehashing.
* One chunk (``chunk_size`` events) runs as three waves of Ray actor calls submitted by this
  process (the driver) without waiting in between:
  1. *pull*: for every trainer shard s and owner shard o, one batched call to o for the rows of
     the non-item fields that s's events need (created at o if new; shard 0 adds the global
     bias);
  2. *train*: shard s trains the events whose **item** it owns, its own item rows in place and
     the pulled rows as a local working copy, with the engine's one kernel (``train_columns``
     of ``embcore._core.working_model``), its own Monitor observing the item updates;
  3. *push*: for every (s, o), o merges s's trained copy of o's rows (``_core.apply_rows``).
  Pulled rows and trained rows travel between actors through Ray's object store (the driver
  holds the references; objects of 100 KiB or more move node to node, smaller ones are inlined
  through the driver); the driver only sends each shard its events.
* Ordering and staleness. Ray runs the calls one submitter makes to one (single-threaded)
  actor in submission order, so every owner applies chunk k's pushes before it answers chunk
  k+1's pulls: a trainer reads the other fields' rows as they were at the start of its chunk,
  and sees what other shards did to them during that chunk at the next one. Staleness is
  bounded by one chunk (as in Monolith's and Persia's asynchronous parameter servers); a smaller
  ``chunk_size`` trades throughput for freshness. Items are never stale: all events of an item
  go to its owner, in order. With one shard nothing is stale and training is bit for bit the
  in-process model's (the pushes of one trainer take its values exactly, see
  ``src/train/shard.rs``).
* Consistency of a failure. A shard that dies mid-chunk leaves the others with some pushes of
  that chunk applied; no partial state is trusted: the model refuses further calls until
  ``restore()`` reloads every shard from the last complete checkpoint (a set of one file per
  shard and a manifest, published by one atomic rename). That is why actors are not restarted
  by Ray (``max_restarts=0``): a restarted actor alone would come back empty or behind its
  peers; the set is restored together.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import embcore
from embcore import _core
from embcore._core import FieldModel
from embcore.distributed._ray import connect, require_ray
from embcore.distributed.worker import ShardWorker, build_model
from embcore.errors import ConfigError, EmbcoreError, SnapshotError

__all__ = ["MANIFEST_VERSION", "ShardFailedError", "ShardedModel", "shard_of"]

#: Version of the checkpoint manifest (``manifest.json``).
MANIFEST_VERSION = 1
_KINDS = ("mf", "ffm", "fm")
_LIFECYCLE_OPTIONS = ("item_lifecycle", "user_lifecycle", "lifecycles")
_DEFAULT_AGAINST = "__default__"
_IN_FLIGHT = 2
#: Seconds the shard actors may take to start (placement, process start, imports).
START_TIMEOUT = 120.0


@dataclass
class _Chunk:
    """One submitted chunk: (shard, stats ref) per trainer, the push refs, each trainer's
    event positions in the call, and the event bytes sent."""

    stats: list[tuple[int, Any]]
    pushes: list[Any]
    positions: list[npt.NDArray[np.int64]]
    event_bytes: int


class ShardFailedError(RuntimeError):
    """A shard actor died or became unreachable during a call; ``shard`` is its index.
    The model refuses further calls until :meth:`ShardedModel.restore`."""

    def __init__(self, message: str, shard: int | None) -> None:
        super().__init__(message)
        self.shard = shard


def shard_of(ids: npt.ArrayLike, num_shards: int) -> npt.NDArray[np.uint32]:
    """The shard of each id among ``num_shards``: the top bits of the core's 64-bit id hash
    (murmur3's finaliser), scaled to ``[0, num_shards)``. Stable across processes and versions.

    >>> import numpy as np
    >>> shard_of(np.array([1, 2, 3], dtype=np.uint64), 1).tolist()
    [0, 0, 0]
    """
    return _core.shard_of(np.ascontiguousarray(ids, dtype=np.uint64), num_shards)


class ShardedModel:
    """An embcore model whose tables are split over ``num_shards`` Ray actors.

    Parameters
    ----------
    num_shards : int
        Shard actors (>= 1). Each owns the rows of every field whose id hashes to it.
    model : {"mf", "ffm", "fm"}
        :class:`embcore.MatrixFactorization`, :class:`embcore.FieldAwareFM` or
        :class:`embcore.FactorizationMachine`.
    fields : sequence of str, optional
        FFM/FM field names (MF's are ``("user", "item")``).
    item_field, user_field : str
        The monitored field (events are routed to its owners) and the user field.
    embedding_against : str or None
        FFM: the item block the Monitor observes (default: ``user_field``), as ``Trainer``.
    monitor : dict, optional
        Keyword arguments of every shard's :class:`embcore.Monitor` (the same on all shards, so
        they merge).
    chunk_size : int
        Events per parameter-server round (the staleness bound, see the module notes).
    checkpoint_dir : str or path, optional
        Where :meth:`save` writes when called without a directory, ``checkpoint_every`` writes
        and :meth:`restore` reads.
    checkpoint_every : int, optional
        Write a checkpoint after every this many trained events (needs ``checkpoint_dir``).
    address : str, optional
        A Ray cluster to connect to (``"auto"``, ``"ray://head:10001"``); None starts a local
        one unless this process is already connected.
    cpus_per_shard : float
        Ray CPUs each shard actor reserves.
    **model_options
        The model's keyword arguments (``dim``, ``learning_rate``, ``seed``, ...); lifecycles
        are not supported on shards yet.

    Raises
    ------
    embcore.errors.ConfigError
        A bad count, model, field, option or checkpoint setting (before any actor starts).

    Examples
    --------
    >>> import numpy as np
    >>> import embcore.distributed as ed
    >>> m = ed.ShardedModel(2, dim=8, seed=1)  # doctest: +SKIP
    >>> m.train(np.array([1, 2], np.uint64), np.array([7, 8], np.uint64),
    ...         np.array([1.0, 0.0], np.float32))["events"]  # doctest: +SKIP
    2
    """

    def __init__(
        self,
        num_shards: int,
        model: str = "mf",
        *,
        fields: Sequence[str] | None = None,
        item_field: str = "item",
        user_field: str = "user",
        embedding_against: str | None = _DEFAULT_AGAINST,
        monitor: dict[str, Any] | None = None,
        chunk_size: int = 65_536,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        checkpoint_every: int | None = None,
        address: str | None = None,
        cpus_per_shard: float = 1.0,
        **model_options: Any,
    ) -> None:
        self._spec = _make_spec(
            num_shards,
            model,
            fields,
            item_field,
            user_field,
            embedding_against,
            monitor,
            chunk_size,
            model_options,
        )
        if checkpoint_every is not None:
            if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int):
                raise ConfigError(
                    f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}"
                )
            if checkpoint_every < 1:
                raise ConfigError(
                    f"checkpoint_every must be an integer >= 1, got {checkpoint_every}"
                )
            if checkpoint_dir is None:
                raise ConfigError("checkpoint_every= needs checkpoint_dir= (where to write)")
        if not isinstance(cpus_per_shard, int | float) or not cpus_per_shard > 0:
            raise ConfigError(f"cpus_per_shard must be a number > 0, got {cpus_per_shard!r}")
        self.num_shards = int(num_shards)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpoint_every = checkpoint_every
        self.address = address
        self.cpus_per_shard = float(cpus_per_shard)
        # A tiny in-process model answers the configuration questions (fields, spans, ...).
        self._template = build_model(self._spec, capacity=1)
        self._ray = connect(address)
        self._events_seen = 0
        self._checkpointed_events = 0
        self._failed: ShardFailedError | None = None
        self.bytes_moved = 0
        self.events_routed = 0
        self._workers = self._start_workers()

    # -- configuration (the protocol embcore.modes.Trainer reads) ----------------------------

    @property
    def kind(self) -> str:
        return str(self._spec["kind"])

    @property
    def fields(self) -> list[str]:
        return list(self._spec["fields"])

    @property
    def item_field(self) -> str:
        return str(self._spec["item_field"])

    @property
    def user_field(self) -> str:
        return str(self._spec["user_field"])

    @property
    def interaction(self) -> str:
        return self._template.interaction

    @property
    def dim(self) -> int:
        return self._template.dim

    @property
    def row_dim(self) -> int:
        return self._template.row_dim

    @property
    def loss(self) -> str:
        return self._template.loss

    @property
    def bias(self) -> bool:
        return self._template.bias

    @property
    def optimizer(self) -> dict[str, Any]:
        return self._template.optimizer

    @property
    def chunk_size(self) -> int:
        return int(self._spec["chunk_size"])

    @property
    def events_seen(self) -> int:
        """Events trained (the default event time of the next event, as in one process)."""
        return self._events_seen

    @property
    def global_bias(self) -> float:
        return float(self._get(self._workers[0].state.remote(), "state")["global"][0])

    def embedding_span(self, field: str, against: str | None = None) -> tuple[int, int]:
        return self._template.embedding_span(field, against)

    def __repr__(self) -> str:
        return (
            f"ShardedModel({self.num_shards}, {self.kind!r}, fields={self.fields}, "
            f"dim={self.dim}, events_seen={self._events_seen})"
        )

    # -- training ----------------------------------------------------------------------------

    def train(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Train like the in-process model: MF ``train(users, items, labels, weights=None,
        timestamps=None, ...)``; FFM/FM ``train(columns, labels, ...)``. See
        :meth:`train_columns` for the options and the statistics."""
        if self.kind == "mf":
            return self._train_mf(*args, **kwargs)
        return self.train_columns(*args, **kwargs)

    def _train_mf(
        self,
        users: Any,
        items: Any,
        labels: Any,
        weights: Any = None,
        timestamps: Any = None,
        **kw: Any,
    ) -> dict[str, Any]:
        out = self.train_columns({"user": users, "item": items}, labels, weights, timestamps, **kw)
        new = out.pop("new_features")
        out["new_users"], out["new_items"] = new["user"], new["item"]
        return out

    def train_columns(
        self,
        columns: dict[str, Any] | npt.NDArray[Any],
        labels: npt.ArrayLike,
        weights: npt.ArrayLike | None = None,
        timestamps: npt.ArrayLike | None = None,
        threads: int = 1,
        count_interactions: bool = True,
        monitor: Any = None,
        monitor_field: str | None = None,
        monitor_against: str | None = None,
        return_scores: bool = False,
        observe: bool = True,
        progress: bool = False,
    ) -> dict[str, Any]:
        """Train on events, ``chunk_size`` at a time, parameter-server style.

        ``columns``, ``labels``, ``weights``, ``timestamps``, ``threads`` (per shard),
        ``count_interactions`` and ``return_scores`` are those of ``FieldModel.train_columns``.
        With ``monitor=`` (an :class:`embcore.Monitor`, as in one process) the call's item
        updates go to it: every shard observes its part of each chunk in a fresh monitor of
        the same configuration, merged into ``monitor`` chunk after chunk. Without one, the
        shards' own Monitors observe when ``observe`` (read them merged with
        :meth:`monitor`). Returns ``events``,
        ``mean_loss``, ``new_features`` (rows created per field), ``bytes_moved`` (row bytes
        between different shards plus the events sent), ``shard_events`` and, with
        ``return_scores``, ``scores`` (each event's raw score before its own update).
        """
        self._check_usable()
        if monitor is not None and not isinstance(monitor, embcore.Monitor):
            raise ConfigError(
                f"monitor= must be an embcore.Monitor or None, got {type(monitor).__name__}; "
                "without one the shards' own Monitors observe (read them with monitor())"
            )
        if monitor_field not in (None, self.item_field) or monitor_against not in (
            None,
            self._spec["against"],
        ):
            raise ConfigError(
                f"the shards' monitors observe item_field={self.item_field!r} against "
                f"{self._spec['against']!r} (set when the ShardedModel is created)"
            )
        cols, y, w, ts = self._events(columns, labels, weights, timestamps)
        n = int(y.size)
        options = {
            "threads": _positive_int(threads, "threads"),
            "count_interactions": bool(count_interactions),
            "return_scores": bool(return_scores),
            "observe": bool(observe),
            "call_monitor": None if monitor is None else monitor.config,
        }
        totals: dict[str, Any] = {
            "monitor": monitor,
            "loss_sum": 0.0,
            "weight_sum": 0.0,
            "bytes": 0,
            "new": dict.fromkeys(self.fields, 0),
            "shard_events": [0] * self.num_shards,
        }
        scores = np.zeros(n, dtype=np.float32) if return_scores else None
        pending: list[_Chunk] = []
        bar = _progress(n, progress)
        for start in range(0, n, self.chunk_size):
            stop = min(n, start + self.chunk_size)
            if len(pending) >= _IN_FLIGHT:
                self._collect(pending.pop(0), totals, scores)
            part = {f: c[start:stop] for f, c in cols.items()}
            pw = None if w is None else w[start:stop]
            pending.append(
                self._submit_chunk(part, y[start:stop], pw, ts[start:stop], options, start)
            )
            self._events_seen += stop - start
            if bar is not None:
                bar.update(stop - start)
            if self._checkpoint_due():
                while pending:
                    self._collect(pending.pop(0), totals, scores)
                self.save()
        while pending:
            self._collect(pending.pop(0), totals, scores)
        if bar is not None:
            bar.close()
        self.bytes_moved += totals["bytes"]
        self.events_routed += n
        out: dict[str, Any] = {
            "events": n,
            "mean_loss": totals["loss_sum"] / totals["weight_sum"] if totals["weight_sum"] else 0.0,
            "new_features": totals["new"],
            "bytes_moved": totals["bytes"],
            "shard_events": totals["shard_events"],
        }
        if scores is not None:
            out["scores"] = scores
        return out

    def _submit_chunk(
        self,
        cols: dict[str, npt.NDArray[np.uint64]],
        y: npt.NDArray[np.float32],
        w: npt.NDArray[np.float32] | None,
        ts: npt.NDArray[np.int64],
        options: dict[str, Any],
        offset: int,
    ) -> _Chunk:
        """Submit one chunk's pull, train and push waves; returns (train refs, push refs,
        event positions per trainer)."""
        n_shards = self.num_shards
        owners = _core.shard_of(cols[self.item_field], n_shards)
        positions = [np.flatnonzero(owners == s) for s in range(n_shards)]
        pulls: dict[int, list[Any]] = {}
        for s, idx in enumerate(positions):
            if idx.size:
                requests = self._pull_requests({f: c[idx] for f, c in cols.items()}, ts[idx])
                pulls[s] = [
                    self._workers[o].pull.remote(requests[o], True) for o in range(n_shards)
                ]
        trains: list[Any] = []
        event_bytes = 0
        for s, idx in enumerate(positions):
            if not idx.size:
                continue
            part = {f: np.ascontiguousarray(c[idx]) for f, c in cols.items()}
            labels, times = np.ascontiguousarray(y[idx]), np.ascontiguousarray(ts[idx])
            weights = None if w is None else np.ascontiguousarray(w[idx])
            events: dict[str, Any] = {
                "columns": part,
                "labels": labels,
                "weights": weights,
                "timestamps": times,
            }
            event_bytes += sum(int(a.nbytes) for a in part.values())
            event_bytes += int(labels.nbytes + times.nbytes)
            event_bytes += 0 if weights is None else int(weights.nbytes)
            refs = (
                self._workers[s]
                .train.options(num_returns=n_shards + 1)
                .remote(events, options, *pulls[s])
            )
            trains.append((s, refs))
        pushes = [
            self._workers[o].push.remote(pulls[s][o], refs[1 + o])
            for s, refs in trains
            for o in range(n_shards)
        ]
        stats = [(s, refs[0]) for s, refs in trains]
        return _Chunk(stats, pushes, [positions[s] + offset for s, _ in trains], event_bytes)

    def _pull_requests(
        self, cols: dict[str, npt.NDArray[np.uint64]], ts: npt.NDArray[np.int64]
    ) -> list[dict[str, tuple[Any, Any]]]:
        """Per owner: ``{field: (unique ids it owns, their first-sight times)}`` for every
        non-item field of one trainer's events."""
        requests: list[dict[str, tuple[Any, Any]]] = [{} for _ in range(self.num_shards)]
        for f in self.fields:
            if f == self.item_field:
                continue
            ids, first = np.unique(cols[f], return_index=True)
            first_seen = ts[first]
            owner = _core.shard_of(ids, self.num_shards)
            for o in range(self.num_shards):
                mask = owner == o
                requests[o][f] = (
                    np.ascontiguousarray(ids[mask]),
                    np.ascontiguousarray(first_seen[mask]),
                )
        return requests

    def _collect(
        self,
        chunk: _Chunk,
        totals: dict[str, Any],
        scores: npt.NDArray[np.float32] | None,
    ) -> None:
        results = self._get([r for _, r in chunk.stats] + chunk.pushes, "train")
        totals["bytes"] += chunk.event_bytes
        for (s, _), st, idx in zip(chunk.stats, results, chunk.positions, strict=False):
            totals["loss_sum"] += st["loss_sum"]
            totals["weight_sum"] += st["weight_sum"]
            totals["bytes"] += st["bytes_in"] + st["bytes_out"]
            totals["shard_events"][s] += st["events"]
            for f, c in st["new_rows"].items():
                totals["new"][f] += c
            if scores is not None:
                scores[idx] = st["scores"]
            if st["monitor"] is not None:
                totals["monitor"].merge(embcore.Monitor.from_bytes(st["monitor"]))

    def _checkpoint_due(self) -> bool:
        return (
            self.checkpoint_every is not None
            and self._events_seen - self._checkpointed_events >= self.checkpoint_every
        )

    # -- scoring -----------------------------------------------------------------------------

    def score(self, *args: Any) -> npt.NDArray[np.float32]:
        """Raw scores, read-only: MF ``score(users, items)``; FFM/FM ``score(columns)``."""
        return self.score_columns(self._score_columns(args))

    def predict(self, *args: Any) -> npt.NDArray[np.float32]:
        """Probabilities for the logistic loss (raw scores otherwise), as :meth:`score`."""
        return self.predict_columns(self._score_columns(args))

    def _score_columns(self, args: tuple[Any, ...]) -> Any:
        if self.kind == "mf":
            if len(args) != 2:
                raise ConfigError(f"MF score takes (users, items), got {len(args)} arguments")
            return {"user": args[0], "item": args[1]}
        if len(args) != 1:
            raise ConfigError(f"score takes (columns), got {len(args)} arguments")
        return args[0]

    def score_columns(self, columns: dict[str, Any] | npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Raw scores of events from the current rows; unknown ids score as zero vectors."""
        return self._scores(columns, False)

    def predict_columns(
        self, columns: dict[str, Any] | npt.NDArray[Any]
    ) -> npt.NDArray[np.float32]:
        """sigmoid(score) for the logistic loss, raw scores otherwise (as one process)."""
        return self._scores(columns, True)

    def _scores(self, columns: Any, probabilities: bool) -> npt.NDArray[np.float32]:
        self._check_usable()
        n_shards = self.num_shards
        cols = self._id_columns(columns)
        n = len(next(iter(cols.values())))
        zero_t = np.zeros(n, dtype=np.int64)
        owners = _core.shard_of(cols[self.item_field], n_shards)
        refs = []
        for s in range(n_shards):
            idx = np.flatnonzero(owners == s)
            if not idx.size:
                continue
            part = {f: np.ascontiguousarray(c[idx]) for f, c in cols.items()}
            requests = self._pull_requests(part, zero_t[idx])
            pulls = [self._workers[o].pull.remote(requests[o], False) for o in range(n_shards)]
            refs.append((idx, self._workers[s].score.remote(part, probabilities, *pulls)))
        out = np.zeros(n, dtype=np.float32)
        for (idx, _), got in zip(refs, self._get([r for _, r in refs], "score"), strict=True):
            out[idx] = got
        return out

    # -- reads -------------------------------------------------------------------------------

    def embedding_of(
        self, field: str, against: str | None = None
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]:
        """``(ids, vectors)`` of every row of ``field``, shard after shard."""
        self.embedding_span(field, against)
        parts = self._get([w.embedding_of.remote(field, against) for w in self._workers], "read")
        ids = np.concatenate([p[0] for p in parts])
        width = self.embedding_span(field, against)
        vectors = np.concatenate([np.asarray(p[1]).reshape(-1, width[1] - width[0]) for p in parts])
        return ids, vectors

    def item_embeddings(self) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]:
        """The items' embeddings (the observed block), as ``Trainer.item_embeddings``."""
        return self.embedding_of(self.item_field, self._spec["against"])

    def snapshot(self, field: str | None = None, against: Any = _DEFAULT_AGAINST) -> list[Any]:
        """Per shard ``(ids, vectors)`` of ``field`` (default: the item embeddings); for
        :func:`embcore.distributed.snapshot_drift`."""
        field = self.item_field if field is None else field
        if against == _DEFAULT_AGAINST:
            against = self._spec["against"] if field == self.item_field else None
        return self._get([w.embedding_of.remote(field, against) for w in self._workers], "read")

    def monitor(self) -> embcore.Monitor:
        """The merge of every shard's Monitor (``Monitor.merge``): what one process's monitor
        would hold, for every analysis, report and alert."""
        blobs = self._get([w.monitor_bytes.remote() for w in self._workers], "monitor")
        merged = embcore.Monitor.from_bytes(blobs[0])
        for b in blobs[1:]:
            merged.merge(embcore.Monitor.from_bytes(b))
        return merged

    def shard_sizes(self) -> list[dict[str, int]]:
        """Rows per field on each shard."""
        return list(self._get([w.sizes.remote() for w in self._workers], "read"))

    def gather(self) -> FieldModel:
        """An in-process model holding every shard's rows (weights, optimizer state, metadata),
        the global bias and the event count: what one process would hold. O(rows) memory in
        this process; for tests, small models and published snapshots."""
        self._check_usable()
        whole = build_model(self._spec)
        for field in self.fields:
            for block in self._get([w.rows.remote(field) for w in self._workers], "read"):
                _core.import_rows(whole, field, block)
        state = self._get(self._workers[0].state.remote(), "state")
        return _core.working_model(whole, {}, tuple(state["global"]), self._events_seen)

    def copy(self) -> FieldModel:
        """A frozen in-process copy (:meth:`gather`): what batch serving reads."""
        return self.gather()

    def table(self, field: str) -> ShardedTable:
        """A read view of ``field``'s rows on every shard (``len``, ``in``, ``ids``,
        ``weights``, ``get``; ``copy()`` materialises an in-process EmbeddingTable)."""
        if field not in self.fields:
            raise EmbcoreError(f"unknown field {field!r}; the fields are {self.fields}")
        return ShardedTable(self, field)

    # -- checkpoints and faults --------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str] | None = None) -> Path:
        """Write a checkpoint: one model file and one monitor file per shard plus
        ``manifest.json``, into ``directory/ckpt-<events>``, published as a set by one atomic
        rename and then named in ``directory/LATEST``. Returns the checkpoint's path."""
        self._check_usable()
        base = self._directory(directory)
        base.mkdir(parents=True, exist_ok=True)
        name = f"ckpt-{self._events_seen:015d}"
        final = base / name
        tmp = base / f".{name}.{os.getpid()}.{time.time_ns()}.tmp"
        tmp.mkdir()
        try:
            entries = self._get([w.save.remote(str(tmp)) for w in self._workers], "save")
            manifest = {
                "format": "embcore.distributed.checkpoint",
                "version": MANIFEST_VERSION,
                "num_shards": self.num_shards,
                "events_seen": self._events_seen,
                "spec": self._spec,
                "shards": entries,
                "embcore": embcore.__version__,
            }
            _write_atomic(tmp / "manifest.json", json.dumps(manifest, indent=1).encode())
            _fsync_dir(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(base)
            _write_atomic(base / "LATEST", name.encode())
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._checkpointed_events = self._events_seen
        return final

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        num_shards: int | None = None,
        *,
        address: str | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        checkpoint_every: int | None = None,
        cpus_per_shard: float = 1.0,
    ) -> ShardedModel:
        """A ShardedModel restored from a checkpoint (``directory`` is a checkpoint, or a
        checkpoint directory whose ``LATEST`` names one). With another ``num_shards``, every
        row moves to the shard its id hashes to (full rows: weights, optimizer state,
        metadata); the merged monitor is unchanged."""
        path, manifest = read_checkpoint(directory)
        spec = manifest["spec"]
        n = manifest["num_shards"] if num_shards is None else num_shards
        self = cls.__new__(cls)
        self._spec = dict(spec)
        _positive_int(n, "num_shards")
        self.num_shards = int(n)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpoint_every = checkpoint_every
        if checkpoint_every is not None and checkpoint_dir is None:
            raise ConfigError("checkpoint_every= needs checkpoint_dir= (where to write)")
        self.address = address
        self.cpus_per_shard = float(cpus_per_shard)
        self._template = build_model(self._spec, capacity=1)
        self._ray = connect(address)
        self._failed = None
        self.bytes_moved = 0
        self.events_routed = 0
        self._workers = self._start_workers()
        self._load_from(path, manifest)
        return self

    def restore(self) -> int:
        """Resume from the last complete checkpoint in ``checkpoint_dir``: stop every shard
        actor, start new ones and load the checkpoint (nothing before it is lost). Returns the
        event count restored; train again from there."""
        if self.checkpoint_dir is None:
            raise ConfigError("restore() needs checkpoint_dir= (set when the model was created)")
        path, manifest = read_checkpoint(self.checkpoint_dir)
        ray = require_ray()
        for worker in self._workers:
            try:
                ray.kill(worker)
            except Exception:  # noqa: BLE001 - an actor already dead is what we replace
                pass
        self._workers = self._start_workers()
        self._failed = None
        self._load_from(path, manifest)
        return self._events_seen

    def _load_from(self, path: Path, manifest: dict[str, Any]) -> None:
        old = int(manifest["num_shards"])
        entries = sorted(manifest["shards"], key=lambda e: e["index"])
        self._get([w.load.remote(str(path), entries, old) for w in self._workers], "load")
        self._events_seen = int(manifest["events_seen"])
        self._checkpointed_events = self._events_seen

    def close(self) -> None:
        """Stop the shard actors (the Ray cluster keeps running)."""
        ray = require_ray()
        for worker in getattr(self, "_workers", []):
            try:
                ray.kill(worker)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._workers = []

    def __enter__(self) -> ShardedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------

    def _start_workers(self) -> list[Any]:
        ray = self._ray
        need = self.num_shards * self.cpus_per_shard
        have = float(ray.cluster_resources().get("CPU", 0.0))
        if need > have:
            raise ConfigError(
                f"{self.num_shards} shards x cpus_per_shard={self.cpus_per_shard:g} need {need:g} "
                f"CPUs but the Ray cluster has {have:g}; lower cpus_per_shard (e.g. "
                f"{have / self.num_shards:g}) or add nodes"
            )
        remote = ray.remote(ShardWorker)
        workers = [
            remote.options(
                num_cpus=self.cpus_per_shard,
                max_restarts=0,
                max_task_retries=0,
                # One shard per node where the cluster has room: shards' tables spread memory.
                scheduling_strategy="SPREAD",
            ).remote(s, self.num_shards, self._spec)
            for s in range(self.num_shards)
        ]
        self._workers = workers
        ready, waiting = ray.wait(
            [w.ping.remote() for w in workers], num_returns=len(workers), timeout=START_TIMEOUT
        )
        if waiting:
            for w in workers:
                ray.kill(w)
            raise ShardFailedError(
                f"{len(waiting)} of {self.num_shards} shard actors did not start within "
                f"{START_TIMEOUT:g} s (not enough free resources on the cluster?)",
                None,
            )
        self._get(ready, "start")
        return workers

    def _directory(self, directory: str | os.PathLike[str] | None) -> Path:
        if directory is not None:
            return Path(directory)
        if self.checkpoint_dir is None:
            raise ConfigError("save() needs a directory (or checkpoint_dir= at creation)")
        return self.checkpoint_dir

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise ShardFailedError(
                f"{self._failed}; this model refuses calls until restore()", self._failed.shard
            )

    def _get(self, refs: Any, call: str) -> Any:
        """``ray.get`` that turns a dead or unreachable actor into a ShardFailedError naming
        the shard, and marks the model unusable until ``restore()``."""
        ray = require_ray()
        try:
            return ray.get(refs)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as err:
            shard = self._dead_shard(err)
            where = "an unknown shard" if shard is None else f"shard {shard} of {self.num_shards}"
            last = (
                f"the last complete checkpoint ({self._checkpointed_events} events) in "
                f"{self.checkpoint_dir}"
                if self.checkpoint_dir is not None
                else "no checkpoint (pass checkpoint_dir= to be able to restore)"
            )
            failure = ShardFailedError(
                f"{where} died during {call}() ({type(err).__name__}); restore() resumes from "
                f"{last}",
                shard,
            )
            self._failed = failure
            raise failure from err

    def _dead_shard(self, err: Exception) -> int | None:
        ray = require_ray()
        actor_id = getattr(err, "actor_id", None)
        for s, w in enumerate(self._workers):
            if actor_id is not None and w._actor_id.hex() == actor_id:
                return s
        for s, w in enumerate(self._workers):
            try:
                ray.get(w.ping.remote(), timeout=10)
            except Exception:  # noqa: BLE001 - any failure marks the shard dead
                return s
        return None

    def _id_columns(self, columns: Any) -> dict[str, npt.NDArray[np.uint64]]:
        if isinstance(columns, dict):
            unknown = sorted(set(columns) - set(self.fields))
            if unknown:
                raise EmbcoreError(
                    f"columns has unknown fields {unknown}; the fields are {self.fields}"
                )
            missing = [f for f in self.fields if f not in columns]
            if missing:
                raise EmbcoreError(
                    f"columns has no {missing} column(s); the fields are {self.fields}"
                )
            cols = {f: _ids(columns[f], f"columns['{f}']") for f in self.fields}
        else:
            arr = np.asarray(columns)
            if arr.ndim != 2 or arr.shape[1] != len(self.fields):
                raise EmbcoreError(
                    f"columns must be a dict of id arrays or an (events, {len(self.fields)}) "
                    f"array, got shape {arr.shape}"
                )
            cols = {f: _ids(arr[:, k], f"columns[:, {k}]") for k, f in enumerate(self.fields)}
        lengths = {f: c.size for f, c in cols.items()}
        if len(set(lengths.values())) > 1:
            raise EmbcoreError(f"id columns have different lengths: {lengths}")
        return cols

    def _events(
        self, columns: Any, labels: Any, weights: Any, timestamps: Any
    ) -> tuple[
        dict[str, npt.NDArray[np.uint64]],
        npt.NDArray[np.float32],
        npt.NDArray[np.float32] | None,
        npt.NDArray[np.int64],
    ]:
        """Columns, labels, weights, times, checked before anything is sent (the values'
        ranges are checked by the first shard call, as in one process)."""
        cols = self._id_columns(columns)
        n = next(iter(cols.values())).size
        y = np.ascontiguousarray(labels, dtype=np.float32)
        if y.shape != (n,):
            raise EmbcoreError(f"labels has shape {y.shape}, expected ({n},), one per event")
        if self.loss == "logistic" and n and not ((y >= 0) & (y <= 1)).all():
            k = int(np.flatnonzero(~((y >= 0) & (y <= 1)))[0])
            raise EmbcoreError(f"labels[{k}] = {y[k]} is outside [0, 1] (the logistic loss)")
        w = None if weights is None else np.ascontiguousarray(weights, dtype=np.float32)
        if w is not None and w.shape != (n,):
            raise EmbcoreError(f"weights has shape {w.shape}, expected ({n},), one per event")
        if timestamps is None:
            ts = np.arange(self._events_seen, self._events_seen + n, dtype=np.int64)
        else:
            ts = np.ascontiguousarray(timestamps, dtype=np.int64)
            if ts.shape != (n,):
                raise EmbcoreError(f"timestamps has shape {ts.shape}, expected ({n},)")
        return cols, y, w, ts


class ShardedTable:
    """The rows of one field of a :class:`ShardedModel`, read where they live: what
    ``Trainer`` and serving read from ``model.table(field)``. Lookups go to the owning shards
    (one call per shard); ``ids()`` and ``weights()`` list the shards' rows shard after shard
    (the same order in both)."""

    #: Shards keep every row (no lifecycle yet).
    lifecycle: None = None

    def __init__(self, model: ShardedModel, field: str) -> None:
        self.model, self.field = model, field

    @property
    def dim(self) -> int:
        return self.model.row_dim

    def __len__(self) -> int:
        return sum(s[self.field] for s in self.model.shard_sizes())

    def __contains__(self, key: int) -> bool:
        s = int(shard_of(np.array([key], dtype=np.uint64), self.model.num_shards)[0])
        worker = self.model._workers[s]
        return bool(self.model._get(worker.contains.remote(self.field, [key]), "read")[0])

    def ids(self) -> npt.NDArray[np.uint64]:
        parts = self.model._get([w.rows.remote(self.field) for w in self.model._workers], "read")
        return np.concatenate([p["ids"] for p in parts])

    def weights(self) -> npt.NDArray[np.float32]:
        parts = self.model._get([w.rows.remote(self.field) for w in self.model._workers], "read")
        return np.concatenate([p["weights"] for p in parts]).reshape(-1, self.dim)

    def get(self, ids: npt.ArrayLike, default: Any = None) -> npt.NDArray[np.float32]:
        """Rows of ``ids`` (``EmbeddingTable.get``: an unknown id raises UnknownIdError
        unless ``default`` is given), fetched from their owners."""
        keys = _ids(ids, "ids")
        owners = shard_of(keys, self.model.num_shards)
        out = np.zeros((keys.size, self.dim), dtype=np.float32)
        refs = []
        for s, worker in enumerate(self.model._workers):
            idx = np.flatnonzero(owners == s)
            if idx.size:
                refs.append((idx, worker.get.remote(self.field, keys[idx], default)))
        for (idx, _), rows in zip(refs, self.model._get([r for _, r in refs], "read"), strict=True):
            out[idx] = rows
        return out

    def copy(self) -> embcore.EmbeddingTable:
        """An in-process EmbeddingTable with every row (weights, optimizer state, metadata)."""
        return self.model.gather().table(self.field)


def snapshot_drift(a: list[Any], b: list[Any], **options: Any) -> Any:
    """``embcore.analysis.snapshot_drift`` of two sharded snapshots (:meth:`ShardedModel.
    snapshot`): the per-shard rows are merged by id, so the figures equal one process's."""
    from embcore.analysis import snapshot_drift as drift

    def merged(parts: list[Any]) -> tuple[Any, Any]:
        ids = np.concatenate([np.asarray(p[0]) for p in parts])
        width = max((np.asarray(p[1]).shape[-1] for p in parts if np.asarray(p[1]).size), default=0)
        vectors = np.concatenate([np.asarray(p[1]).reshape(-1, width) for p in parts])
        order = np.argsort(ids, kind="stable")
        return ids[order], vectors[order]

    return drift(merged(a), merged(b), **options)


def read_checkpoint(directory: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """(path, manifest) of a checkpoint, or of the one ``directory/LATEST`` names."""
    path = Path(directory)
    if not (path / "manifest.json").exists():
        latest = path / "LATEST"
        if not latest.exists():
            raise FileNotFoundError(f"{path}: no checkpoint (neither manifest.json nor LATEST)")
        path = path / latest.read_text().strip()
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as err:
        raise SnapshotError(f"{path}: unreadable checkpoint manifest ({err})") from err
    if manifest.get("format") != "embcore.distributed.checkpoint":
        raise SnapshotError(f"{path}/manifest.json is not an embcore.distributed checkpoint")
    if manifest.get("version") != MANIFEST_VERSION:
        raise SnapshotError(
            f"{path}/manifest.json has version {manifest.get('version')}; this embcore reads "
            f"version {MANIFEST_VERSION}"
        )
    for entry in manifest["shards"]:
        for key in ("model", "monitor"):
            if not (path / entry[key]).exists():
                raise SnapshotError(f"{path}: checkpoint file {entry[key]} is missing")
    return path, manifest


def sharded_factory(
    num_shards: int, address: str | None = None, **model_options: Any
) -> Callable[[], ShardedModel]:
    """A zero-argument factory of ``ShardedModel(num_shards, address=address, **model_options)``
    (for ``replay --ray N`` / ``study --ray N``)."""

    def make() -> ShardedModel:
        return ShardedModel(num_shards, address=address, **model_options)

    return make


def _make_spec(
    num_shards: Any,
    model: Any,
    fields: Sequence[str] | None,
    item_field: str,
    user_field: str,
    embedding_against: str | None,
    monitor: dict[str, Any] | None,
    chunk_size: Any,
    model_options: dict[str, Any],
) -> dict[str, Any]:
    _positive_int(num_shards, "num_shards")
    _positive_int(chunk_size, "chunk_size")
    if model not in _KINDS:
        raise ConfigError(f"model must be one of {', '.join(map(repr, _KINDS))}, got {model!r}")
    lifecycle = sorted(set(model_options) & set(_LIFECYCLE_OPTIONS))
    if lifecycle:
        raise ConfigError(
            f"{lifecycle} are not supported on a ShardedModel yet (shards keep every row)"
        )
    if model == "mf":
        if fields is not None:
            raise ConfigError("fields= is for model='ffm' or 'fm'; MF's fields are user and item")
        names = ["user", "item"]
    else:
        if fields is None:
            raise ConfigError(f"model={model!r} needs fields= (the field names, in column order)")
        names = [str(f) for f in fields]
    for role, name in (("item_field", item_field), ("user_field", user_field)):
        if name not in names:
            raise ConfigError(f"{role}={name!r} is not a field (the fields are {names})")
    if embedding_against == _DEFAULT_AGAINST:
        embedding_against = user_field if model in ("mf", "ffm") else None
    monitor_options = dict(monitor or {})
    try:
        embcore.Monitor(**monitor_options)
    except TypeError as err:
        raise ConfigError(f"monitor= has an unknown Monitor option: {err}") from err
    spec = {
        "kind": model,
        "fields": names,
        "item_field": item_field,
        "user_field": user_field,
        "against": embedding_against,
        "model_options": dict(model_options),
        "monitor_options": monitor_options,
        "chunk_size": int(chunk_size),
    }
    try:
        json.dumps(spec)
    except TypeError as err:
        raise ConfigError(
            f"model options must be plain values (saved in the manifest): {err}"
        ) from err
    template = build_model(spec, capacity=1)
    template.embedding_span(item_field, embedding_against)
    return spec


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _ids(value: Any, name: str) -> npt.NDArray[np.uint64]:
    arr = np.asarray(value)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise EmbcoreError(
            f"{name} must be a 1-D array of integer ids, got {arr.dtype} {arr.shape}"
        )
    if np.issubdtype(arr.dtype, np.signedinteger) and arr.size and arr.min() < 0:
        raise EmbcoreError(f"{name} has a negative id ({arr.min()}); ids are unsigned 64-bit")
    return np.ascontiguousarray(arr, dtype=np.uint64)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="ev", desc="sharded train")
