"""One shard of a :class:`~embcore.distributed.ShardedModel`: the state a Ray actor holds.

A shard owns the rows of every field whose ids hash to it (``embcore.distributed.shard_of``),
its own :class:`embcore.Monitor`, and (shard 0 only) the authoritative global bias. It answers
four calls of the parameter-server protocol, each once per chunk and peer:

- ``pull(request)``: the full rows (weights, optimizer state, metadata) of the requested ids it
  owns, created first when training (``embcore._core.export_rows``), and the global bias;
- ``train(events, options, *pulls)``: train the events whose item it owns on a working copy of
  the pulled rows (``embcore._core.working_model`` and the engine's ``train_columns``), its own
  item rows in place; returns the statistics and, for each owner, the pulled rows as trained;
- ``push(pulled, trained)``: merge a trainer's rows into the owned rows
  (``embcore._core.apply_rows``) and, on shard 0, the global bias by the same rule;
- ``score(columns, *pulls)``: scores against pulled rows, read-only.

The class is plain Python (no Ray import): ``ShardedModel`` wraps it with ``ray.remote``, and
the tests drive it in-process too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import embcore
from embcore import _core
from embcore._core import FieldModel

Block = dict[str, npt.NDArray[Any]]
_BLOCK_KEYS = ("ids", "weights", "state", "meta")
_CLASSES: dict[str, type[FieldModel]] = {
    "mf": embcore.MatrixFactorization,
    "ffm": embcore.FieldAwareFM,
    "fm": embcore.FactorizationMachine,
}


def build_model(spec: dict[str, Any], capacity: int | None = None) -> FieldModel:
    """A new in-process model of ``spec`` (``kind``, ``fields``, ``model_options``)."""
    options = dict(spec["model_options"])
    if capacity is not None:
        options["capacity"] = capacity
    if spec["kind"] == "mf":
        return embcore.MatrixFactorization(**options)
    cls = embcore.FieldAwareFM if spec["kind"] == "ffm" else embcore.FactorizationMachine
    return cls(spec["fields"], **options)


def load_model(spec: dict[str, Any], path: str) -> FieldModel:
    model = _CLASSES[spec["kind"]].load(path)
    return model


def concat_blocks(blocks: list[Block]) -> Block:
    """One block of the rows of several (disjoint) blocks, in order."""
    if len(blocks) == 1:
        return blocks[0]
    return {k: np.concatenate([b[k] for b in blocks]) for k in _BLOCK_KEYS}


def block_bytes(block: Block) -> int:
    return int(sum(block[k].nbytes for k in _BLOCK_KEYS))


def merge_scalar(current: float, before: float, after: float) -> float:
    """``apply_rows``'s rule for one f32 value: the trainer's value when nobody changed it since
    the pull, else the current value plus the trainer's delta (float32 arithmetic)."""
    cur, b, a = np.float32(current), np.float32(before), np.float32(after)
    if b.tobytes() == a.tobytes():
        return float(cur)
    if cur.tobytes() == b.tobytes():
        return float(a)
    return float(np.float32(cur + np.float32(a - b)))


class ShardWorker:
    """The state and calls of shard ``index`` of ``num_shards``.

    Parameters
    ----------
    index, num_shards : int
        This shard and the shard count.
    spec : dict
        ``kind`` ("mf", "ffm", "fm"), ``fields``, ``item_field``, ``against`` (the item's
        observed block, as ``Trainer``), ``model_options`` and ``monitor_options``.
    """

    def __init__(self, index: int, num_shards: int, spec: dict[str, Any]) -> None:
        self.index, self.num_shards, self.spec = int(index), int(num_shards), spec
        self.model = build_model(spec)
        self.monitor = embcore.Monitor(**spec["monitor_options"])
        bias, acc, _ = _core.model_state(self.model)
        self.global_state = (bias, acc)
        self.events = 0

    # -- the protocol ------------------------------------------------------------------------

    def ping(self) -> int:
        return os.getpid()

    def pull(self, request: dict[str, tuple[Any, Any]], create: bool) -> dict[str, Any]:
        """Rows of the requested ``{field: (ids, first_seen)}`` owned here; with ``create``,
        absent ids get their row first (first seen at ``first_seen``)."""
        rows: dict[str, Block] = {}
        created: dict[str, int] = {}
        for field, (ids, first_seen) in request.items():
            rows[field], created[field] = _core.export_rows(
                self.model, field, ids, first_seen, create
            )
        return {
            "rows": rows,
            "created": created,
            "global": self.global_state if self.index == 0 else None,
        }

    def train(
        self, events: dict[str, Any], options: dict[str, Any], *pulls: Any
    ) -> tuple[Any, ...]:
        """Train ``events`` (their items are owned here) against the rows in ``pulls`` (one
        pull result per shard, in shard order). Returns the statistics and, per owner, the
        pulled rows as trained (with shard 0's, the global bias before and after)."""
        item_field = self.spec["item_field"]
        global_before = pulls[0]["global"]
        pulled_fields = [f for f in self.spec["fields"] if f != item_field]
        rows = {f: concat_blocks([p["rows"][f] for p in pulls]) for f in pulled_fields}
        working = _core.working_model(self.model, rows, global_before, 0)
        train_options: dict[str, Any] = {}
        # A caller's monitor (its config): this call's updates go to a fresh one, returned for
        # the driver to merge into the caller's; else the shard's own monitor observes.
        call_monitor = None
        if options.get("call_monitor") is not None:
            call_monitor = embcore.Monitor(**options["call_monitor"])
        if call_monitor is not None or options["observe"]:
            train_options = {
                "monitor": self.monitor if call_monitor is None else call_monitor,
                "monitor_field": item_field,
                "monitor_against": self.spec["against"],
            }
        labels = events["labels"]
        out = working.train_columns(
            events["columns"],
            labels,
            weights=events["weights"],
            timestamps=events["timestamps"],
            threads=options["threads"],
            count_interactions=options["count_interactions"],
            return_scores=options["return_scores"],
            **train_options,
        )
        n = int(labels.size)
        self.events += n
        global_after = _core.model_state(working)[:2]
        trained: list[dict[str, Any]] = []
        bytes_in = bytes_out = 0
        for owner, p in enumerate(pulls):
            after = {
                f: _core.export_rows(working, f, p["rows"][f]["ids"])[0] for f in pulled_fields
            }
            if owner != self.index:
                bytes_in += sum(block_bytes(p["rows"][f]) for f in pulled_fields)
                bytes_out += sum(block_bytes(b) for b in after.values())
            trained.append(
                {"rows": after, "global": (global_before, global_after) if owner == 0 else None}
            )
        weight_sum = float(n if events["weights"] is None else np.sum(events["weights"]))
        new_rows = {f: sum(int(p["created"][f]) for p in pulls) for f in pulled_fields}
        new_rows[item_field] = int(out["new_features"][item_field])
        stats = {
            "events": n,
            "loss_sum": float(out["mean_loss"]) * weight_sum,
            "weight_sum": weight_sum,
            "new_rows": new_rows,
            "scores": out.get("scores"),
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "monitor": None if call_monitor is None else call_monitor.to_bytes(),
        }
        return (stats, *trained)

    def push(self, pulled: dict[str, Any], trained: dict[str, Any]) -> int:
        """Merge a trainer's rows (as pulled from here, as trained there). Returns rows merged."""
        merged = 0
        for field, after in trained["rows"].items():
            merged += _core.apply_rows(self.model, field, pulled["rows"][field], after)
        if self.index == 0 and trained["global"] is not None:
            (b0, a0), (b1, a1) = trained["global"]
            bias, acc = self.global_state
            self.global_state = (merge_scalar(bias, b0, b1), merge_scalar(acc, a0, a1))
        return merged

    def score(
        self, columns: dict[str, Any], probabilities: bool, *pulls: Any
    ) -> npt.NDArray[np.float32]:
        """Raw scores (or, with ``probabilities``, the model's predictions) of events whose items
        are owned here, against pulled rows (unknown ids score as zero vectors, as in one
        process)."""
        item_field = self.spec["item_field"]
        rows = {
            f: concat_blocks([p["rows"][f] for p in pulls])
            for f in self.spec["fields"]
            if f != item_field
        }
        working = _core.working_model(self.model, rows, pulls[0]["global"], 0)
        if probabilities:
            return working.predict_columns(columns)
        return working.score_columns(columns)

    # -- reads -------------------------------------------------------------------------------

    def embedding_of(self, field: str, against: str | None) -> tuple[Any, Any]:
        return self.model.embedding_of(field, against)

    def rows(self, field: str) -> Block:
        """Every owned row of ``field`` (full rows, in row order)."""
        ids = self.model.table(field).ids()
        return _core.export_rows(self.model, field, ids)[0]

    def get(self, field: str, ids: Any, default: Any) -> Any:
        """``EmbeddingTable.get`` on the owned rows of ``field``."""
        return self.model.table(field).get(ids, default=default)

    def contains(self, field: str, ids: Any) -> list[bool]:
        table = self.model.table(field)
        return [int(i) in table for i in ids]

    def sizes(self) -> dict[str, int]:
        return {f: len(self.model.table(f)) for f in self.spec["fields"]}

    def monitor_bytes(self) -> bytes:
        return self.monitor.to_bytes()

    def state(self) -> dict[str, Any]:
        return {"events": self.events, "global": self.global_state, "pid": os.getpid()}

    # -- checkpoints -------------------------------------------------------------------------

    def save(self, directory: str) -> dict[str, Any]:
        """Write this shard's model file (its rows; on shard 0 the global bias) and monitor into
        ``directory``; returns the manifest entry."""
        base = Path(directory)
        model_name, monitor_name = f"shard-{self.index}.model", f"shard-{self.index}.monitor"
        view = _core.working_model(self.model, {}, self.global_state, self.events)
        size = view.save(base / model_name)
        data = self.monitor.to_bytes()
        with open(base / monitor_name, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return {
            "index": self.index,
            "model": model_name,
            "monitor": monitor_name,
            "bytes": int(size) + len(data),
            "events": self.events,
            "rows": self.sizes(),
        }

    def load(self, directory: str, entries: list[dict[str, Any]], old_num_shards: int) -> int:
        """Restore from a checkpoint's entries. The same shard count: this shard's own files.
        Otherwise every old shard's rows that hash here (full rows: weights, optimizer state,
        metadata); shard 0 takes the global bias and the merge of every old monitor (the
        merged monitor is unchanged). Returns the rows now held."""
        base = Path(directory)
        if old_num_shards == self.num_shards:
            entry = entries[self.index]
            self.model = load_model(self.spec, str(base / entry["model"]))
            self.monitor = embcore.Monitor.from_bytes((base / entry["monitor"]).read_bytes())
            bias, acc, events = _core.model_state(self.model)
            self.global_state, self.events = (bias, acc), int(events)
            return sum(self.sizes().values())
        self.model = build_model(self.spec)
        self.monitor = embcore.Monitor(**self.spec["monitor_options"])
        self.events = 0
        for entry in entries:
            old = load_model(self.spec, str(base / entry["model"]))
            for field in self.spec["fields"]:
                ids = old.table(field).ids()
                mine = ids[_core.shard_of(ids, self.num_shards) == self.index]
                block, _ = _core.export_rows(old, field, mine)
                _core.import_rows(self.model, field, block)
            if entry["index"] == 0:
                bias, acc, _ = _core.model_state(old)
                self.global_state = (bias, acc)
            if self.index == 0:
                self.monitor.merge(
                    embcore.Monitor.from_bytes((base / entry["monitor"]).read_bytes())
                )
                self.events += int(entry["events"])
        return sum(self.sizes().values())
