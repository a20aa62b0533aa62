"""Training modes: real-time, batch and hybrid updates of one model, with a serving view.

A :class:`Trainer` owns one model and decides *when* events reach it and *which* state serving
reads:

``"realtime"``
    Every consumed event updates the tables at once (one optimizer step per event, counted);
    serving reads the live tables.
``"batch"``
    Serving reads a frozen snapshot (a deep ``model.copy()``). Events are buffered; whenever
    event time crosses a period boundary (multiples of ``period`` seconds from t = 0) the model
    retrains on the buffered window, warm-started from its last state, for ``epochs`` passes
    (the first counts interactions, later ones use ``count_interactions=False``), then publishes
    a new snapshot and calls ``monitor.record_publish(snapshot.items, boundary)``.
``"hybrid"``
    Real-time updates on every event (counted, serving reads the live tables) *plus* a
    consolidation at every period boundary: ``epochs`` further passes over the window just
    ended, uncounted, applied to the live model; then ``monitor.record_publish``. Each event is
    thus learned from once on arrival and ``epochs`` more times at the next boundary.

Several trainers can consume the same stream side by side; each has its own model, tables and
monitor. :meth:`Trainer.consume` takes plain arrays (users, items, labels, timestamps), so the
same trainer serves the simulator and a logged stream.

Design notes
------------
* Batch boundaries are absolute (``k * period`` seconds of event time), not relative to the first
  event, so two batch trainers with the same period publish at the same instants. A boundary
  ``b`` publishes a model trained on every event with timestamp ``< b``; :meth:`Trainer.advance`
  lets a driver publish at ``b`` before it serves requests at ``b`` (the simulator's steps start
  on boundaries), and :meth:`Trainer.consume` publishes any boundary its events cross.
* The batch window is shuffled (seeded) before each pass, as a batch job reading a day
  partition would; ``shuffle=False`` keeps time order, which makes a one-epoch batch pass the
  very same SGD sequence as real-time training on those events.
* Serving scores are computed with numpy: one gather per side (``EmbeddingTable.get`` with a
  zero default, never inserting) and one float32 matmul. The item bias is read through
  ``model.score`` with a user id the model has never seen (zero vector, zero bias), which costs
  P lookups instead of a copy of the whole metadata.

>>> import numpy as np
>>> from embcore.modes import Trainer
>>> batch = Trainer("batch", period=3600, dim=4, seed=0)
>>> ids = np.array([1, 2], dtype=np.uint64)
>>> batch.consume(ids, ids, np.array([1.0, 0.0], dtype=np.float32), np.array([10, 20]))
>>> batch.serving_scores(ids, ids)  # nothing published yet: the empty snapshot scores 0
array([[0., 0.],
       [0., 0.]], dtype=float32)
>>> batch.advance(3600)  # the boundary at 1 h publishes a model trained on both events
1
>>> bool(np.abs(batch.serving_scores(ids, ids)).sum() > 0)
True
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from embcore import _core
from embcore._core import MatrixFactorization

__all__ = ["MODES", "Trainer", "parse_duration"]

MODES: tuple[str, ...] = ("realtime", "batch", "hybrid")
"""The training modes a :class:`Trainer` accepts."""

DEFAULT_PERIOD_SECONDS = 6 * 3600

# A user id the serving model is (checked to be) unaware of: scoring (unknown user, item) gives
# the global bias plus the item bias.
_NO_USER = 2**64 - 1
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*$")

ModelFactory = Callable[[], MatrixFactorization]


def parse_duration(value: str | int | float) -> int:
    """Seconds in a duration given as seconds or as text with a unit (s, m, h, d).

    Parameters
    ----------
    value : str, int or float
        ``21600``, ``"6h"``, ``"90m"``, ``"1.5d"``, ``"45s"``.

    Returns
    -------
    int
        Whole seconds, at least 1.

    Raises
    ------
    ValueError
        Unparseable, non-finite, or not positive.

    Examples
    --------
    >>> parse_duration("6h"), parse_duration("90m"), parse_duration(60)
    (21600, 5400, 60)
    >>> parse_duration("-1h")
    Traceback (most recent call last):
    ...
    ValueError: period must be a positive duration such as 6h, 90m, 1d or 3600 (seconds), got '-1h'
    """
    problem = (
        f"period must be a positive duration such as 6h, 90m, 1d or 3600 (seconds), got {value!r}"
    )
    if isinstance(value, bool):
        raise ValueError(problem)
    if isinstance(value, int | float | np.integer | np.floating):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value.lower())
        if match is None:
            raise ValueError(problem)
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError(problem)
    if not math.isfinite(seconds) or round(seconds) < 1:
        raise ValueError(problem)
    return round(seconds)


class Trainer:
    """One model trained in one mode, with the view that serving reads.

    Parameters
    ----------
    mode : {"realtime", "batch", "hybrid"}
        When events reach the model and which state serving reads (see the module docstring).
    model : MatrixFactorization or callable, optional
        The model to train (used as is, not copied), or a zero-argument factory. By default a
        new ``MatrixFactorization(**model_options)``.
    period : int, float or str
        Batch/hybrid period in seconds of event time, or text such as ``"6h"``.
    epochs : int
        Passes over each window at a boundary (batch: the first counts interactions, the rest
        do not; hybrid: all are uncounted extra passes). Must be >= 1.
    monitor : embcore.Monitor, optional
        Receives the counted real-time updates (``model.train(..., monitor=...)``) and every
        batch/hybrid publish (``monitor.record_publish(items, t)``). Any other object with a
        ``record_publish(table, t)`` method receives the publishes only. Batch training itself is
        not shown to the monitor: a batch item's recorded state is the *published* one, i.e.
        its state after the batch run in which its count reached n (docs/METRICS.md).
    threads : int
        Training threads (Hogwild when > 1).
    shuffle : bool
        Shuffle each batch/hybrid window pass (seeded by ``seed``).
    seed : int
        Seeds the model (when built from ``model_options``) and the window shuffles.
    **model_options
        Keyword arguments of :class:`embcore.MatrixFactorization` (``dim``, ``learning_rate``,
        ``l2``, ...). Not allowed together with ``model``.

    Raises
    ------
    ValueError
        Unknown mode, period <= 0, epochs < 1, threads < 1, or bad model options.

    Examples
    --------
    >>> import numpy as np
    >>> rt = Trainer("realtime", dim=4, seed=0)
    >>> u = np.array([1, 1], dtype=np.uint64)
    >>> i = np.array([5, 6], dtype=np.uint64)
    >>> rt.consume(u, i, np.array([1.0, 0.0], dtype=np.float32), np.array([0, 1]))
    >>> rt.serving_scores(u[:1], i).shape
    (1, 2)
    >>> Trainer("weekly")
    Traceback (most recent call last):
    ...
    ValueError: mode must be one of 'realtime', 'batch', 'hybrid', got 'weekly'
    """

    def __init__(
        self,
        mode: str = "realtime",
        model: MatrixFactorization | ModelFactory | None = None,
        *,
        period: str | int | float = DEFAULT_PERIOD_SECONDS,
        epochs: int = 1,
        monitor: Any = None,
        threads: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        **model_options: Any,
    ) -> None:
        if mode not in MODES:
            raise ValueError(
                f"mode must be one of {', '.join(repr(m) for m in MODES)}, got {mode!r}"
            )
        if isinstance(epochs, bool) or not isinstance(epochs, int | np.integer) or epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
        if isinstance(threads, bool) or not isinstance(threads, int | np.integer) or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        if model is not None and model_options:
            raise ValueError(
                f"pass either a model or model options, not both (got {sorted(model_options)})"
            )
        self.mode = mode
        self.period = parse_duration(period)
        self.epochs = int(epochs)
        self.threads = int(threads)
        self.shuffle = bool(shuffle)
        self.monitor = monitor
        if model is None:
            model = MatrixFactorization(**{"seed": seed, **model_options})
        elif not isinstance(model, MatrixFactorization):
            model = model()
            if not isinstance(model, MatrixFactorization):
                raise ValueError(
                    f"the model factory returned {type(model).__name__}, "
                    "expected embcore.MatrixFactorization"
                )
        self.model: MatrixFactorization = model
        self._rng = np.random.default_rng(seed)
        # Batch serves a frozen copy; the other modes serve the live model.
        self._snapshot: MatrixFactorization | None = model.copy() if mode == "batch" else None
        self._window: list[tuple[Any, ...]] = []
        self._window_events = 0
        self._next_boundary: int | None = None
        self._clock: int | None = None
        self.publishes = 0
        self.events_consumed = 0
        self.updates = 0
        self.evicted = 0
        self.train_seconds = 0.0

    # -- serving -------------------------------------------------------------------------------

    @property
    def serving_model(self) -> MatrixFactorization:
        """The model serving reads: the live one, or the last published snapshot (batch)."""
        return self._snapshot if self._snapshot is not None else self.model

    @property
    def window_events(self) -> int:
        """Events buffered for the next batch/hybrid boundary."""
        return self._window_events

    def serving_scores(self, users: npt.ArrayLike, pool: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Scores of every ``pool`` item for every request user, as serving sees them.

        ``scores[r, p] = u_r . v_p + b_p + b_global`` (the user bias is left out: it does not
        change a ranking), from the serving tables; unknown ids get a zero vector and bias.
        Nothing is inserted.

        Parameters
        ----------
        users : array_like of uint64, shape (R,)
        pool : array_like of uint64, shape (P,)

        Returns
        -------
        numpy.ndarray of float32, shape (R, P)

        Examples
        --------
        >>> import numpy as np
        >>> t = Trainer("realtime", dim=2, seed=0)
        >>> t.serving_scores(np.array([9], dtype=np.uint64), np.array([3, 4], dtype=np.uint64))
        array([[0., 0.]], dtype=float32)
        """
        model = self.serving_model
        user_ids = np.ascontiguousarray(users, dtype=np.uint64)
        item_ids = np.ascontiguousarray(pool, dtype=np.uint64)
        user_rows = model.users.get(user_ids, default=0.0)
        item_rows = model.items.get(item_ids, default=0.0)
        scores: npt.NDArray[np.float32] = user_rows @ item_rows.T
        if model.bias and item_ids.size:
            scores += _item_bias_plus_global(model, item_ids)[None, :]
        return scores

    def score(self, users: npt.ArrayLike, items: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Pairwise scores (logits, user bias included) of the serving model.

        For progressive validation: score events with :meth:`score` *before*
        :meth:`consume`-ing them.

        >>> import numpy as np
        >>> Trainer("batch", dim=2).score(np.array([1], np.uint64), np.array([2], np.uint64))
        array([0.], dtype=float32)
        """
        return self.serving_model.score(
            np.ascontiguousarray(users, dtype=np.uint64),
            np.ascontiguousarray(items, dtype=np.uint64),
        )

    # -- training ------------------------------------------------------------------------------

    def consume(
        self,
        users: npt.ArrayLike,
        items: npt.ArrayLike,
        labels: npt.ArrayLike,
        timestamps: npt.ArrayLike,
        weights: npt.ArrayLike | None = None,
    ) -> None:
        """Feed events (in time order) to the mode.

        Real-time and hybrid train on them at once; batch buffers them. Batch and hybrid first
        publish every period boundary that the events cross (a boundary ``b`` sees the events
        with timestamps ``< b``).

        Parameters
        ----------
        users, items : array_like of uint64
        labels : array_like of float32
            1/0 for the logistic loss.
        timestamps : array_like of int64
            Event time in seconds, non-decreasing, and not before the trainer's clock.
        weights : array_like of float32, optional

        Raises
        ------
        ValueError
            Mismatched lengths, or timestamps out of order (sort them first, e.g. with
            ``np.argsort(timestamps, kind="stable")``).
        """
        u = np.ascontiguousarray(users, dtype=np.uint64)
        i = np.ascontiguousarray(items, dtype=np.uint64)
        y = np.ascontiguousarray(labels, dtype=np.float32)
        t = np.ascontiguousarray(timestamps, dtype=np.int64)
        w = None if weights is None else np.ascontiguousarray(weights, dtype=np.float32)
        n = u.size
        lengths = {"users": n, "items": i.size, "labels": y.size, "timestamps": t.size}
        if w is not None:
            lengths["weights"] = w.size
        if len(set(lengths.values())) > 1:
            raise ValueError(f"event arrays must have equal lengths, got {lengths}")
        if n == 0:
            return
        if self.mode != "realtime":
            if n > 1 and bool((t[1:] < t[:-1]).any()):
                raise ValueError(
                    f"{self.mode} mode needs events in time order: sort them first, e.g. "
                    "order = np.argsort(timestamps, kind='stable')"
                )
            if self._clock is not None and int(t[0]) < self._clock:
                raise ValueError(
                    f"event at t={int(t[0])} is before the trainer's clock t={self._clock} "
                    "(events must arrive in time order)"
                )
        self.events_consumed += n
        if self.mode == "realtime":
            self._train(u, i, y, t, w, count=True, observe=True)
            self._clock = int(t.max()) if self._clock is None else max(self._clock, int(t.max()))
            return
        start = 0
        while start < n:
            # Publish every boundary up to this event, then take the events before the next.
            self.advance(int(t[start]))
            assert self._next_boundary is not None
            stop = start + int(np.searchsorted(t[start:], self._next_boundary, side="left"))
            part_w = None if w is None else w[start:stop]
            self._take(u[start:stop], i[start:stop], y[start:stop], t[start:stop], part_w)
            start = stop
        self._clock = int(t[-1])

    def advance(self, t: int) -> int:
        """Move event time to ``t``: batch/hybrid publish every boundary ``<= t`` now due.

        Returns the number of publishes made (always 0 in real-time mode).

        >>> batch = Trainer("batch", period="1h")
        >>> batch.advance(0), batch.advance(7200)  # boundaries at 1 h and 2 h
        (0, 2)
        """
        t = int(t)
        done = 0
        if self.mode != "realtime":
            if self._next_boundary is None:
                self._next_boundary = self._boundary_after(
                    t if self._clock is None else self._clock
                )
            while self._next_boundary <= t:
                self._publish(self._next_boundary)
                self._next_boundary += self.period
                done += 1
        self._clock = t if self._clock is None else max(self._clock, t)
        return done

    def flush(self, t: int | None = None) -> None:
        """End of stream: publish every boundary up to ``t``, then retrain on what is still
        buffered and publish it at ``t`` (batch/hybrid; no-op in real-time mode).

        ``t`` defaults to the trainer's clock (the last event time seen).

        >>> import numpy as np
        >>> b = Trainer("batch", dim=2)
        >>> one = np.array([1], dtype=np.uint64)
        >>> b.consume(one, one, np.array([1.0], np.float32), np.array([5]))
        >>> b.flush(); b.publishes, len(b.serving_model.items)
        (1, 1)
        """
        if self.mode == "realtime":
            return
        if t is None:
            t = self._clock if self._clock is not None else 0
        self.advance(int(t))
        if self._window_events:
            self._publish(int(t))

    def stats(self) -> dict[str, Any]:
        """Counters: events consumed, optimizer updates, publishes, training seconds.

        >>> Trainer("hybrid", epochs=2).stats()["epochs"]
        2
        """
        return {
            "mode": self.mode,
            "period_seconds": self.period,
            "epochs": self.epochs,
            "events": self.events_consumed,
            "updates": self.updates,
            "publishes": self.publishes,
            "train_seconds": self.train_seconds,
            "evicted_items": self.evicted,
        }

    def __repr__(self) -> str:
        return (
            f"Trainer(mode={self.mode!r}, period={self.period}, epochs={self.epochs}, "
            f"events={self.events_consumed}, publishes={self.publishes})"
        )

    # -- internals -----------------------------------------------------------------------------

    def _boundary_after(self, t: int) -> int:
        """The first period boundary strictly after ``t``."""
        return (t // self.period + 1) * self.period

    def _take(
        self,
        u: npt.NDArray[np.uint64],
        i: npt.NDArray[np.uint64],
        y: npt.NDArray[np.float32],
        t: npt.NDArray[np.int64],
        w: npt.NDArray[np.float32] | None,
    ) -> None:
        """Events inside one period: train now (hybrid) and buffer them for the boundary."""
        if u.size == 0:
            return
        if self.mode == "hybrid":
            self._train(u, i, y, t, w, count=True, observe=True)
        self._window.append((u, i, y, t, w))
        self._window_events += int(u.size)

    def _publish(self, t: int) -> None:
        if self._window:
            columns = [np.concatenate([part[k] for part in self._window]) for k in range(4)]
            weights = (
                None
                if any(part[4] is None for part in self._window)
                else np.concatenate([part[4] for part in self._window])
            )
            self._window, self._window_events = [], 0
            for epoch in range(self.epochs):
                u, i, y, ts, w = (*columns, weights)
                if self.shuffle:
                    order = self._rng.permutation(u.size)
                    u, i, y, ts = u[order], i[order], y[order], ts[order]
                    w = None if w is None else w[order]
                # Batch: the first pass counts the window's interactions. Hybrid: real-time
                # updates already counted them, so every consolidation pass is uncounted.
                counted = self.mode == "batch" and epoch == 0
                self._train(u, i, y, ts, w, count=counted, observe=False)
        if self.mode == "batch":
            self._snapshot = self.model.copy()
        self.publishes += 1
        if self.monitor is not None:
            self.monitor.record_publish(self.serving_model.items, int(t))
        self._expire(t)

    def _train(
        self,
        u: npt.NDArray[np.uint64],
        i: npt.NDArray[np.uint64],
        y: npt.NDArray[np.float32],
        t: npt.NDArray[np.int64],
        w: npt.NDArray[np.float32] | None,
        *,
        count: bool,
        observe: bool,
    ) -> None:
        began = time.perf_counter()
        options: dict[str, Any] = {}
        if observe and _observes_updates(self.monitor):
            options["monitor"] = self.monitor
        self.model.train(
            u,
            i,
            y,
            weights=w,
            timestamps=t,
            threads=self.threads,
            count_interactions=count,
            **options,
        )
        self.updates += int(u.size)
        self.train_seconds += time.perf_counter() - began
        if self.mode != "batch":
            self._expire(int(t.max()))

    def _expire(self, now: int) -> None:
        """Evict expired item rows (when the model has an item lifecycle), handing their
        final rows to the monitor so maturity still sees evicted items."""
        items = self.model.items
        if items.lifecycle is None or not (
            items.lifecycle["ttl"] or items.lifecycle["max_rows"] or items.lifecycle["max_bytes"]
        ):
            return
        out = items.evict(now=now, budget=max(10_000, len(items) // 10))
        self.evicted += len(out["ids"])
        if self.monitor is not None and len(out["ids"]) and hasattr(self.monitor, "record_rows"):
            self.monitor.record_rows(
                out["ids"], out["rows"], out["interactions"], out["first_seen"], now
            )


def _observes_updates(monitor: Any) -> bool:
    """Whether ``monitor`` can watch training (only the Rust ``embcore.Monitor`` can; any other
    object with ``record_publish`` still receives the publishes)."""
    monitor_class = getattr(_core, "Monitor", None)
    return monitor_class is not None and isinstance(monitor, monitor_class)


def _item_bias_plus_global(
    model: MatrixFactorization, items: npt.NDArray[np.uint64]
) -> npt.NDArray[np.float32]:
    """``b_item + b_global`` for each id (unknown items: ``b_global``)."""
    if _NO_USER not in model.users:
        return model.score(np.full(items.size, _NO_USER, dtype=np.uint64), items)
    # The probe id is a real user here: read the biases from the metadata instead.
    meta = model.items.metadata()
    bias = np.zeros(items.size, dtype=np.float32)
    if meta["ids"].size:
        order = np.argsort(meta["ids"])
        known = meta["ids"][order]
        where = np.minimum(np.searchsorted(known, items), known.size - 1)
        found = known[where] == items
        bias[found] = meta["bias"][order][where[found]]
    return bias + np.float32(model.global_bias)
