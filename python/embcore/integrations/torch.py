"""Monitor a PyTorch embedding while it trains: :func:`watch`.

``watch(embedding, monitor, ids=...)`` hooks an ``nn.Embedding`` (or ``nn.EmbeddingBag``) and
its optimizer so that after every optimizer step the :class:`embcore.Monitor` observes exactly
the rows that step touched, under the team's own ids::

    import torch, embcore
    from embcore.integrations.torch import watch

    items = torch.nn.Embedding(n_items, 32, sparse=True)
    optimizer = torch.optim.SGD(items.parameters(), lr=0.1)
    monitor = embcore.Monitor(sample_rate=0.01)
    handle = watch(items, monitor, ids=item_ids, optimizer=optimizer)   # item_ids[row] = id
    ...train as usual...
    handle.remove()

Design notes
------------
* **Which rows a step touched.** The rows the module looked up (forward pre-hook) since the
  previous step while gradients were enabled — for an ``nn.Embedding`` exactly the rows of its
  sparse gradient — or, when the module was not called (functional use), the gradient's
  rows. ``padding_idx`` is never counted. With a dense
  gradient and an optimizer that has momentum or weight decay, rows outside the batch move too:
  those moves are not observed (monitor whole tables with ``embcore track``).
* **The first update counts.** With an ``embcore.Monitor`` every touched row is copied before
  the step and one ``observe_pairs`` call after it hands over each row before and after its
  update (the monitor keeps and looks up no previous rows). Any other monitor gets ``observe``:
  rows never observed are copied before the step (the reference for the update that follows);
  after the step one ``observe`` call sends them, then every touched row as it is now (the
  monitor takes a call's rows in order: the same as two calls). Either way every update, the
  first included, is compared with the row before it.
* **Counts and time.** ``counts`` passed to the monitor are each row's lookups in training
  batches so far (its interaction count); ``timestamps`` the step number (or ``clock()``).
* **One native call before a step and one after it.** With an ``embcore.Monitor``, ids None or
  an array, and a contiguous CPU float32 weight, the step's bookkeeping runs in Rust
  (``embcore._core.StepTracker``, one call per hook, the GIL released): the sort of the batch's
  indices, the counts, the distinct rows, the first sightings, the row gathers from the weight's
  zero-copy numpy view before and after the step, the id map and the ``observe_pairs`` call
  itself, with no intermediate Python arrays; the Python side of a step is a few attribute
  lookups. An index out of range is an error raised by the step before anything is counted.
  Otherwise (another monitor, callable ids, a weight on another device or of another dtype —
  also one that moves there later: the counts so far carry over) the same work is done in
  numpy: one sort, one ``np.add.at``, ``np.take`` gathers into reused buffers, one id map and
  one monitor call per step, no Python loop over rows (the arrays handed to the monitor are
  reused at the next step: ``observe`` copies what it keeps). Both give the monitor the same state,
  byte for byte (tests/test_torch_hook_native.py). With ``sample < 1`` the lookups are
  filtered first, so all of it scales with ``sample``. ``bench_torch`` measures the hook
  against the plain step; ``benches/torch_hook_split.py`` splits it into the monitor, the
  bookkeeping and the Python around it.

Only ``torch`` itself is needed (imported when :func:`watch` is called).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from embcore.errors import ConfigError

__all__ = ["Watch", "bench_torch", "watch"]


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ConfigError(
            "embcore.integrations.torch needs PyTorch: pip install 'embcore[torch]'"
        ) from None
    return torch


class Watch:
    """The hooks of one watched embedding (returned by :func:`watch`).

    Attributes
    ----------
    steps : int
        Optimizer steps observed.
    rows_observed : int
        Rows observed after steps (summed over steps).
    seconds : float
        Time spent in the hooks (the forward pre-hook and the optimizer step hooks).

    ``Watch(embedding, monitor, ids, optimizer, rows, clock, sample=1.0, seed=0, native=True)``
    is what :func:`watch` returns after checking its arguments; ``native=False`` keeps the
    numpy path even where the native one applies (the reference it is tested against).
    """

    def __init__(
        self,
        embedding: Any,
        monitor: Any,
        ids: Any,
        optimizer: Any,
        rows: str,
        clock: Callable[[], int] | None,
        sample: float = 1.0,
        seed: int = 0,
        native: bool = True,
    ) -> None:
        torch = _torch()
        self._torch = torch
        self.embedding = embedding
        self.monitor = monitor
        self.weight = embedding.weight
        self.rows = rows
        self.clock = clock
        n = int(self.weight.shape[0])
        self._ids, id_table = _id_map(ids, n)
        # Rows observed: all, or those whose id hashes below sample * 2**64 (same every step).
        self._in_sample: npt.NDArray[np.bool_] | None = None
        if sample < 1.0:
            from embcore.tables_io import id_hash

            every = self._ids(np.arange(n, dtype=np.int64))
            self._in_sample = id_hash(every, seed) < np.uint64(int(sample * 2.0**64))
        self._padding = getattr(embedding, "padding_idx", None)
        if self._padding is not None and self._padding < 0:
            self._padding += n
        # An embcore.Monitor takes each step's rows as (before, after) pairs: it then keeps
        # and looks up no previous rows (about a third of observe's cost). Other monitors get
        # observe calls.
        self._pairs = callable(getattr(monitor, "observe_pairs", None))
        # The native path: an embcore.Monitor, ids None or an array, a CPU float32 weight. One
        # call before a step and one after it do all of the bookkeeping below in Rust (the
        # numpy path stays: the reference, and for the other cases).
        self._tracker: Any = None
        if native and self._pairs and (ids is None or id_table is not None):
            from embcore import Monitor
            from embcore._core import StepTracker

            if isinstance(monitor, Monitor):
                self._tracker = StepTracker(
                    n,
                    int(self.weight.shape[1]),
                    ids=id_table,
                    in_sample=self._in_sample,
                    padding_idx=self._padding,
                )
        # Host-side bookkeeping in numpy (until the native path hands its state over): a few
        # microseconds per step where torch's CPU dispatch costs tens.
        m = 0 if self._tracker is not None else n
        self._counts = np.zeros(m, dtype=np.int64)
        self._seen = np.zeros(m, dtype=bool)
        self._first = np.zeros(m if self._pairs else 0, dtype=np.int64)
        self._batch: list[Any] = []
        self._buffers = _Buffers(int(self.weight.shape[1]))
        self._pending: tuple[int, int] | None = None  # (fresh rows, rows) in the buffers
        self._f32 = torch.float32
        self._observe_seconds = 0.0
        self._holders: dict[int, bool] = {}
        self.steps = 0
        self.rows_observed = 0
        self.seconds = 0.0
        self._handles = [embedding.register_forward_pre_hook(self._on_forward)]
        if optimizer is not None:
            if not self._holds_weight(optimizer):
                raise ConfigError(
                    "optimizer does not hold the embedding's weight; pass the optimizer that "
                    "updates it"
                )
            self._handles.append(optimizer.register_step_pre_hook(self._before_step))
            self._handles.append(optimizer.register_step_post_hook(self._after_step))
        else:
            from torch.optim.optimizer import (
                register_optimizer_step_post_hook,
                register_optimizer_step_pre_hook,
            )

            self._handles.append(register_optimizer_step_pre_hook(self._before_any))
            self._handles.append(register_optimizer_step_post_hook(self._after_any))

    # ---------------------------------------------------------------------------------------
    @property
    def counts(self) -> npt.NDArray[np.int64]:
        """Each row's lookups in training batches so far (a copy; with ``sample < 1`` only the
        sampled rows are counted; ``padding_idx`` stays 0)."""
        if self._tracker is not None:
            counts: npt.NDArray[np.int64] = self._tracker.counts
            return counts
        return self._counts.copy()

    @property
    def native(self) -> bool:
        """Whether the steps' bookkeeping runs in Rust (``embcore._core.StepTracker``: an
        ``embcore.Monitor``, ids None or an array, a contiguous CPU float32 weight), else
        in numpy."""
        return self._tracker is not None

    @property
    def observe_seconds(self) -> float:
        """Time spent in the monitor's ``observe`` / ``observe_pairs`` calls (part of
        :attr:`seconds`)."""
        tracker = self._tracker
        return self._observe_seconds + (tracker.observe_seconds if tracker is not None else 0.0)

    def remove(self) -> None:
        """Remove every hook (idempotent); rows seen before a step that never completed are
        observed as they were."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._flush_pending()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _holds_weight(self, optimizer: Any) -> bool:
        return any(p is self.weight for g in optimizer.param_groups for p in g["params"])

    def _holds(self, optimizer: Any) -> bool:
        # Global hooks fire for every optimizer: remember the answer per optimizer (its
        # param_groups rarely change; add_param_group of the weight later needs a new watch).
        key = id(optimizer)
        held = self._holders.get(key)
        if held is None:
            held = self._holders[key] = self._holds_weight(optimizer)
        return held

    def _before_any(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._holds(optimizer):
            self._before_step(optimizer, args, kwargs)

    def _after_any(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._holds(optimizer):
            self._after_step(optimizer, args, kwargs)

    def _on_forward(self, module: Any, inputs: Any) -> None:
        started = time.perf_counter()
        if inputs and self._torch.is_grad_enabled():
            self._batch.append(inputs[0])  # integer indices: nothing to detach
        self.seconds += time.perf_counter() - started

    def _looked_up(self) -> npt.NDArray[np.int64] | None:
        """The row indices looked up since the last step, as one int64 array (a zero-copy view
        of a single contiguous CPU batch)."""
        if not self._batch:
            return None
        batches = [b.numpy() if b.is_cpu else b.cpu().numpy() for b in self._batch]
        self._batch = []
        if len(batches) == 1:
            out: npt.NDArray[np.int64] = batches[0]
            if out.dtype != np.int64:
                out = out.astype(np.int64)
            return out if out.ndim == 1 else out.reshape(-1)
        return np.concatenate([np.asarray(b, dtype=np.int64).reshape(-1) for b in batches])

    def _weight_view(self) -> npt.NDArray[np.float32] | None:
        """The weight as a zero-copy numpy view when the native path can read it, else None
        (and the numpy path takes over, for good)."""
        w = self.weight
        if w.is_cpu and w.dtype == self._f32 and w.is_contiguous():
            view: npt.NDArray[np.float32] = w.detach().numpy()
            return view
        self._leave_native()
        return None

    def _leave_native(self) -> None:
        """Hand the native path's state to the numpy path (the weight moved to another device
        or dtype): the counts and first sightings so far carry on."""
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            self._observe_seconds += tracker.observe_seconds
            self._counts, self._seen, self._first = (
                tracker.counts,
                tracker.seen,
                tracker.first_seen,
            )

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        started = time.perf_counter()
        if self._tracker is not None:
            view = self._weight_view()
            if view is not None:
                looked_up = self._looked_up()
                grad = self._grad_rows() if self.rows == "grad" or looked_up is None else None
                self._tracker.before_step(view, self._now(), looked_up, grad)
                self.seconds += time.perf_counter() - started
                return
        self._flush_pending()
        looked_up = self._looked_up()
        if looked_up is not None:
            if self._in_sample is not None:  # the rest of the step's work scales with sample
                looked_up = looked_up[self._in_sample[looked_up]]
            # One sort; the touched rows are its distinct values, in order (measured in place,
            # between training steps: np.unique(return_counts=True) ~10 % slower, torch.unique
            # several times slower).
            looked_up = np.sort(looked_up)
            np.add.at(self._counts, looked_up, 1)
            if self._padding is not None:
                self._counts[self._padding] = 0
        from_grad = self.rows == "grad" or looked_up is None
        if looked_up is None or from_grad:
            touched = self._grad_rows()
        else:
            touched = _distinct_of_sorted(looked_up, self._buffers.scratch(looked_up.size))
        if self._padding is not None:
            touched = touched[touched != self._padding]
        if self._in_sample is not None and from_grad:
            touched = touched[self._in_sample[touched]]
        fresh = touched[~self._seen[touched]]
        self._seen[fresh] = True
        # Everything but the rows after the step is filled in here. With pairs: every touched
        # row as it is now (its row before the update) and its first sight. With observe: the
        # fresh rows as they are now (copied here, first), then every touched row as it will
        # be: the monitor takes a call's rows in order, so the first update counts as with two
        # calls, for one FFI call and one id map per step.
        nf = 0 if self._pairs else fresh.size
        k = nf + touched.size
        b = self._buffers.reserve(k)
        index = b.index[:k]
        index[:nf] = fresh[:nf]
        index[nf:] = touched
        if self._pairs:
            self._first[fresh] = self._now()
            self._gather(touched, b.before[:k])
            np.take(self._first, touched, out=b.first[:k])
        else:
            self._gather(fresh, b.rows[:nf])
            b.timestamps[:nf] = self._now()
        counts = np.take(self._counts, index, out=b.counts[:k])
        if from_grad:  # a row moved by its gradient alone has no lookup yet: count it once
            np.maximum(counts, 1, out=counts)
        self._pending = (nf, k)
        self.seconds += time.perf_counter() - started

    def _grad_rows(self) -> npt.NDArray[np.int64]:
        """Rows of the weight's gradient, sorted: a sparse one's indices, a dense one's
        non-zero rows."""
        grad = self.weight.grad
        if grad is None:
            return np.zeros(0, dtype=np.int64)
        if grad.is_sparse:
            rows = grad.coalesce().indices()[0]
        else:
            rows = self._torch.nonzero(grad.detach().abs().sum(dim=1)).reshape(-1)
        out: npt.NDArray[np.int64] = rows.cpu().numpy().astype(np.int64, copy=False)
        return out

    def _gather(self, index: npt.NDArray[np.int64], out: npt.NDArray[np.float32]) -> None:
        """``out[:] = weight[index]`` as float32 on the host, with no allocation on CPU."""
        if not index.size:
            return
        torch = self._torch
        weight = self.weight.detach()
        if weight.is_cpu and weight.dtype == torch.float32:
            # np.take on the zero-copy view: as fast as index_select when the rows are in
            # cache, 2-3x faster when they are not (measured on 1 000 rows of 32 floats).
            np.take(weight.numpy(), index, axis=0, out=out)
        else:
            values = weight.index_select(0, torch.from_numpy(index).to(weight.device))
            out[:] = values.to(device="cpu", dtype=torch.float32).numpy()

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        started = time.perf_counter()
        self.steps += 1
        tracker = self._tracker
        if tracker is not None:
            view = self._weight_view()
            if view is not None:
                self.rows_observed += tracker.after_step(view, self.monitor, self._now())
            else:
                tracker.discard()
            self.seconds += time.perf_counter() - started
            return
        pending, self._pending = self._pending, None
        if pending is not None:
            nf, k = pending
            b = self._buffers
            self._gather(b.index[nf:k], b.rows[nf:k])
            b.timestamps[nf:k] = self._now()
            if not self._pairs:
                self._send(k)
            elif k:
                ids = self._ids(b.index[:k])
                observing = time.perf_counter()
                self.monitor.observe_pairs(
                    ids,
                    b.before[:k],
                    b.rows[:k],
                    b.counts[:k],
                    first_seen=b.first[:k],
                    timestamps=b.timestamps[:k],
                )
                self._observe_seconds += time.perf_counter() - observing
            self.rows_observed += k - nf
        self.seconds += time.perf_counter() - started

    def _now(self) -> int:
        return int(self.clock()) if self.clock is not None else self.steps

    def _flush_pending(self) -> None:
        """Observe the fresh rows of a step whose post-hook never ran (its ``step`` raised, or
        the hooks were removed in between), so the monitor keeps their reference rows."""
        if self._tracker is not None:  # the unfinished step is dropped
            self._tracker.discard()
        pending, self._pending = self._pending, None
        if pending is not None and not self._pairs:  # pairs need no reference rows
            self._send(pending[0])

    def _send(self, k: int) -> None:
        """``observe`` the buffers' first ``k`` entries."""
        if not k:
            return
        b = self._buffers
        ids = self._ids(b.index[:k])
        observing = time.perf_counter()
        self.monitor.observe(ids, b.rows[:k], counts=b.counts[:k], timestamps=b.timestamps[:k])
        self._observe_seconds += time.perf_counter() - observing


class _Buffers:
    """The arrays handed to ``observe``, reused across steps (grown by doubling): the monitor
    copies what it keeps, so a step allocates no row matrix."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.size = 0
        self.keep = np.empty(1024, dtype=bool)
        self.reserve(1024)

    def scratch(self, n: int) -> npt.NDArray[np.bool_]:
        """A boolean buffer of at least ``n`` entries."""
        if self.keep.size < n:
            self.keep = np.empty(max(n, 2 * self.keep.size), dtype=bool)
        return self.keep

    def reserve(self, n: int) -> _Buffers:
        if self.size < n:
            self.size = max(n, 2 * self.size)
            self.index = np.empty(self.size, dtype=np.int64)
            self.counts = np.empty(self.size, dtype=np.int64)
            self.timestamps = np.empty(self.size, dtype=np.int64)
            self.first = np.empty(self.size, dtype=np.int64)
            self.rows = np.empty((self.size, self.dim), dtype=np.float32)
            self.before = np.empty((self.size, self.dim), dtype=np.float32)
        return self


def _distinct_of_sorted(
    values: npt.NDArray[np.int64], keep: npt.NDArray[np.bool_]
) -> npt.NDArray[np.int64]:
    """The distinct values of a sorted array, in order (``np.unique`` without its sort);
    ``keep`` is a scratch buffer of at least ``values.size``."""
    if values.size == 0:
        return values
    mask = keep[: values.size]
    mask[0] = True
    np.not_equal(values[1:], values[:-1], out=mask[1:])
    return values[mask]


_IdMap = Callable[[npt.NDArray[np.int64]], npt.NDArray[np.uint64]]


def _id_map(ids: Any, n: int) -> tuple[_IdMap, npt.NDArray[np.uint64] | None]:
    """Row index → the team's id: None (the index), a callable, or an array of n ids; and the
    array of every row's id when ``ids`` is one."""
    if ids is None:
        return lambda index: index.view(np.uint64), None  # indices are >= 0: a zero-copy view
    if callable(ids):

        def call(index: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
            out = np.asarray(ids(index))
            if out.shape != index.shape:
                raise ConfigError(
                    f"ids(rows) returned shape {out.shape} for {index.size} rows; return one id "
                    "per row"
                )
            return out.astype(np.uint64)

        return call, None
    from embcore.tables_io import as_numpy

    table = as_numpy(ids, "ids")
    if table.ndim != 1 or table.shape[0] != n:
        raise ConfigError(
            f"ids must hold one id per row of the embedding ({n}), got shape {table.shape}"
        )
    if table.dtype.kind not in "iu" or (table.dtype.kind == "i" and table.size and table.min() < 0):
        raise ConfigError(f"ids must be non-negative integers, got dtype {table.dtype}")
    mapped = np.ascontiguousarray(table, dtype=np.uint64)
    return lambda index: mapped[index], mapped


def watch(
    embedding: Any,
    monitor: Any,
    ids: Any = None,
    optimizer: Any = None,
    rows: str = "auto",
    clock: Callable[[], int] | None = None,
    sample: float = 1.0,
    seed: int = 0,
) -> Watch:
    """Observe, after each optimizer step, the rows of ``embedding`` that step touched.

    Parameters
    ----------
    embedding : torch.nn.Embedding or torch.nn.EmbeddingBag
        Any module with a 2-D ``weight`` whose first input holds row indices.
    monitor : embcore.Monitor
        Receives ``observe_pairs(ids, before, after, counts, first_seen, timestamps)`` after
        each step when it has that method (an ``embcore.Monitor``), else
        ``observe(ids, rows, counts, timestamps)``.
    ids : array of n ids, callable, or None
        Row index → the team's id (``ids[row]``, or ``ids(rows)`` for a numpy array of rows);
        None: the row index is the id.
    optimizer : torch.optim.Optimizer, optional
        The optimizer updating ``embedding.weight``; None: hook every optimizer's steps (torch's
        global step hooks) and act on those holding the weight.
    rows : {"auto", "grad", "batch"}
        Which rows a step touched: the gradient's rows (``"grad"``: a sparse gradient's row
        indices, a dense one's non-zero rows), the rows looked up since the last step
        (``"batch"``), or ``"auto"``: the batch's when the module was called since the last
        step, else the gradient's (for an nn.Embedding both are the same rows; the batch's are
        cheaper: no coalescing of the sparse gradient).
    clock : callable, optional
        The timestamp of a step (default: the step number).
    sample : float
        Share of the rows observed, chosen by a hash of the id and ``seed`` (the same rows at
        every step): the hook's cost scales with it; 1.0 observes every touched row. The
        monitor's statistics are then those of a uniform sample of items.

    Returns
    -------
    Watch
        ``remove()`` the hooks when done (or use it as a context manager).

    >>> import torch, embcore
    >>> emb = torch.nn.Embedding(10, 4, sparse=True)
    >>> opt = torch.optim.SGD(emb.parameters(), lr=0.1)
    >>> monitor = embcore.Monitor(sample_rate=1.0)
    >>> with watch(emb, monitor, ids=100 + torch.arange(10), optimizer=opt) as w:
    ...     emb(torch.tensor([1, 2, 2])).sum().backward()
    ...     opt.step()
    >>> w.rows_observed, monitor.summary()["updates"]
    (2, 2)
    """
    if rows not in ("auto", "grad", "batch"):
        raise ConfigError(f"rows must be 'auto', 'grad' or 'batch', got {rows!r}")
    weight = getattr(embedding, "weight", None)
    if weight is None or getattr(weight, "ndim", 0) != 2:
        raise ConfigError(
            f"embedding must be a module with a 2-D weight (nn.Embedding), got "
            f"{type(embedding).__name__}"
        )
    if not hasattr(monitor, "observe"):
        raise ConfigError(f"monitor must be an embcore.Monitor, got {type(monitor).__name__}")
    if not 0.0 < sample <= 1.0:
        raise ConfigError(f"sample must be in (0, 1], got {sample!r}")
    return Watch(embedding, monitor, ids, optimizer, rows, clock, sample, seed)


# --------------------------------------------------------------------------------------------
# The example model and its benchmark


def two_tower(n_users: int, n_items: int, dim: int, hidden: int = 128, seed: int = 0) -> Any:
    """The example's model: user and item ``nn.Embedding(sparse=True)`` tables, each followed by
    its tower (``dim → hidden → dim`` MLP with ReLU; ``hidden=0``: no tower), score = dot
    product of the two towers' outputs plus an item bias."""
    torch = _torch()
    nn = torch.nn

    def tower() -> Any:
        if not hidden:
            return nn.Identity()
        return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    base: Any = nn.Module

    class TwoTower(base):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(seed)
            self.users = nn.Embedding(n_users, dim, sparse=True)
            self.items = nn.Embedding(n_items, dim, sparse=True)
            self.item_bias = nn.Embedding(n_items, 1, sparse=True)
            self.user_tower = tower()
            self.item_tower = tower()
            for e in (self.users, self.items):
                nn.init.normal_(e.weight, std=0.1)
            nn.init.zeros_(self.item_bias.weight)

        def forward(self, users: Any, items: Any) -> Any:
            u = self.user_tower(self.users(users))
            v = self.item_tower(self.items(items))
            return (u * v).sum(dim=1) + self.item_bias(items).squeeze(1)

    return TwoTower()


def synthetic_batches(
    n_users: int, n_items: int, n_batches: int, batch: int, seed: int = 0
) -> list[tuple[Any, Any, Any]]:
    """Zipf-popular items, uniform users, labels from a hidden low-rank affinity."""
    torch = _torch()
    rng = np.random.default_rng(seed)
    hidden_u = rng.normal(size=(n_users, 4))
    hidden_i = rng.normal(size=(n_items, 4))
    out = []
    for _ in range(n_batches):
        users = rng.integers(0, n_users, batch)
        items = (rng.zipf(1.3, batch) - 1) % n_items
        p = 1.0 / (1.0 + np.exp(-(hidden_u[users] * hidden_i[items]).sum(axis=1)))
        labels = (rng.random(batch) < p).astype(np.float32)
        out.append((torch.from_numpy(users), torch.from_numpy(items), torch.from_numpy(labels)))
    return out


def train_steps(model: Any, optimizer: Any, batches: list[tuple[Any, Any, Any]]) -> float:
    """One pass over ``batches``; returns the mean loss."""
    torch = _torch()
    total = 0.0
    for users, items, labels in batches:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(users, items), labels)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
    return total / max(len(batches), 1)


def train_side_by_side(
    runs: list[tuple[Any, Any, Any]], batches: list[tuple[Any, Any, Any]], block: int
) -> list[float]:
    """Train the ``(model, optimizer, _)`` runs on the same batches, alternating blocks of
    ``block`` steps (the order swapped every other block, so drifts in the machine's speed
    fall on both alike); returns each run's seconds."""
    seconds = [0.0] * len(runs)
    order = list(range(len(runs)))
    for k, start in enumerate(range(0, len(batches), block)):
        for which in order if k % 2 == 0 else order[::-1]:
            model, optimizer, _ = runs[which]
            started = time.perf_counter()
            train_steps(model, optimizer, batches[start : start + block])
            seconds[which] += time.perf_counter() - started
    return seconds


def bench_torch(
    results: list[Any] | None = None,
    quick: bool = False,
    repeats: int = 5,
    hidden: int = 128,
    sample: float = 1.0,
) -> dict[str, float]:
    """Step time of the example two-tower model with and without :func:`watch` on both towers
    (same batches, same initial weights; medians over ``repeats``). Appends
    ``embcore.bench.Result`` rows to ``results`` when given; returns the numbers.

    Model: :func:`two_tower` with 100 000 users × 50 000 items × d = 32 (``quick``: 10 000 ×
    5 000) and ``hidden``-wide towers, batches of 1024, Adagrad (sparse gradients for the tables),
    one torch thread; 5 warm-up steps, then ``n_batches`` timed steps, in which rows are still
    being seen for the first time (each costs one more observation). The plain and the watched
    model train side by side in blocks of 20 steps (which goes first alternates), so that a
    change in the machine's load during a repeat weighs on both alike.

    Returns ``step_seconds`` (the plain step), ``watched_step_seconds``,
    ``hook_seconds_per_step`` (time inside the hooks, :attr:`Watch.seconds`, over the timed
    steps), ``hook_share_of_step`` = hook / plain step (the issue's target: below 0.1),
    ``overhead`` = watched / plain − 1, and ``rows_per_step`` (rows observed after each step,
    both tables).
    """
    torch = _torch()
    import embcore

    n_users, n_items = (10_000, 5_000) if quick else (100_000, 50_000)
    dim, batch, n_batches, block = 32, 1024, 50 if quick else 200, 20
    batches = synthetic_batches(n_users, n_items, n_batches, batch, seed=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.sparse.check_sparse_tensor_invariants.disable()  # torch warns unless told
    plain: list[float] = []
    watched: list[float] = []
    hook: list[float] = []
    rows: list[float] = []
    try:
        for _ in range(repeats):
            runs = []
            for with_hook in (False, True):
                model = two_tower(n_users, n_items, dim, hidden=hidden, seed=0)
                optimizer = torch.optim.Adagrad(model.parameters(), lr=0.05)
                handles = []
                if with_hook:
                    for tower in (model.users, model.items):
                        handles.append(
                            watch(
                                tower,
                                embcore.Monitor(sample_rate=0.01),
                                optimizer=optimizer,
                                sample=sample,
                            )
                        )
                train_steps(model, optimizer, batches[:5])  # warm-up
                for h in handles:
                    h.seconds, h.rows_observed = 0.0, 0
                runs.append((model, optimizer, handles))
            seconds = train_side_by_side(runs, batches, block)
            handles = runs[1][2]
            plain.append(seconds[0] / n_batches)
            watched.append(seconds[1] / n_batches)
            hook.append(sum(h.seconds for h in handles) / n_batches)
            rows.append(sum(h.rows_observed for h in handles) / n_batches)
            for h in handles:
                h.remove()
    finally:
        torch.set_num_threads(threads)
    out = {
        "step_seconds": float(np.median(plain)),
        "watched_step_seconds": float(np.median(watched)),
        "hook_seconds_per_step": float(np.median(hook)),
        "rows_per_step": float(np.median(rows)),
    }
    out["overhead"] = out["watched_step_seconds"] / out["step_seconds"] - 1.0
    out["hook_share_of_step"] = out["hook_seconds_per_step"] / out["step_seconds"]
    if results is not None:
        from embcore.bench import Result

        shape = f"{n_users}x{n_items}, d={dim}, towers {hidden}, batch {batch}, Adagrad, 1 thread"
        results.append(Result("torch_step", out["step_seconds"], "s", f"two-tower step, {shape}"))
        results.append(
            Result(
                "torch_step_watched",
                out["watched_step_seconds"],
                "s",
                "the same step with watch() on both towers",
                extra={"overhead": out["overhead"], "hook_share": out["hook_share_of_step"]},
            )
        )
        results.append(
            Result(
                "torch_hook",
                out["hook_seconds_per_step"],
                "s",
                f"time in watch()'s hooks per step ({out['rows_per_step']:.0f} rows observed "
                f"after each step; share of the plain step {out['hook_share_of_step']:.1%}, "
                "target < 10 %)",
                extra={"share_of_step": out["hook_share_of_step"], "rows": out["rows_per_step"]},
            )
        )
    return out
