"""Training modes: real-time, batch and hybrid updates of one model, with a serving view.

A :class:`Trainer` owns one model and decides *when* events reach it and *which* state serving
reads:

``"realtime"``
    Every consumed event updates the tables at once (one optimizer step per event, counted);
    serving reads the live tables.
``"batch"``
    Serving reads a frozen snapshot (a copy of the model, brought up to date at each publish:
    design notes). Events are buffered; whenever
    event time crosses a period boundary ``b`` (multiples of ``period`` seconds from t = 0)
    the model retrains on its *window* for ``epochs`` passes, then publishes a new snapshot
    and calls ``monitor.record_publish(snapshot.items, b)``. The window is the trailing
    ``window`` seconds of event time, ``[b - window, b)``, or with ``window=None`` (the
    default) the events since the last retrain. ``init="warm"`` continues from the current
    model (optionally with a fresh optimizer: ``reset_optimizer=True``); ``init="scratch"``
    trains a new model from the factory on the window. An event counts as an interaction of
    its rows the first time it is trained, never again (docs/batch-protocol.md). A boundary
    with an empty window publishes the previous snapshot again, without copying; a run of
    empty boundaries is published once, at its last boundary (design notes).
``"hybrid"``
    Real-time updates on every event (counted, serving reads the live tables) *plus* a
    consolidation at every period boundary: ``epochs`` further passes over the window
    (``window=None``: the period just ended; else the trailing ``window``), uncounted,
    applied to the live model; then ``monitor.record_publish``. With ``window=None`` each
    event is learned from once on arrival and ``epochs`` more times at the next boundary.

Several trainers can consume the same stream side by side; each has its own model, tables and
monitor. :meth:`Trainer.consume` takes plain arrays (users, items, labels, timestamps), so the
same trainer serves the simulator and a logged stream.

Models. The model is a :class:`~embcore.MatrixFactorization` (two-tower MF, the default) or a
field model, :class:`~embcore.FieldAwareFM` or :class:`~embcore.FactorizationMachine`, whose
fields include a user field and an item field (``user_field``/``item_field``, default ``"user"``
and ``"item"``). Field models take their other fields (creator, tag, hour, ...) as ``context``
columns in :meth:`Trainer.consume` and as ``request_fields``/``candidate_fields`` in
:meth:`Trainer.serving_scores`. "The item's embedding" that the monitor, publishes and evictions
record is explicit: MF's item row; an FFM item's block against the user field by default
(``embedding_against``, None = the whole row of all blocks); an FM item's vector.

Design notes
------------
* Batch boundaries are absolute (``k * period`` seconds of event time), not relative to the first
  event, so two batch trainers with the same period publish at the same instants. A boundary
  ``b`` publishes a model trained on every event with timestamp ``< b``; :meth:`Trainer.advance`
  lets a driver publish at ``b`` before it serves requests at ``b`` (the simulator's steps start
  on boundaries), and :meth:`Trainer.consume` publishes any boundary its events cross.
* A run of boundaries with empty windows costs O(1), however long: a gap of 1e10 s with a
  1 s period is one publish, not 1e10. Nothing trains in such a run, so the model it would
  republish at each boundary is the same one; it is published (and shown to
  ``monitor.record_publish``) once, at the run's last boundary, after the evictions its inner
  boundaries would have made (made once, at the second-to-last boundary, sweeping the table at
  most once). :attr:`Trainer.publishes` still counts every boundary crossed, skipped ones
  included: it is the number of boundaries at which serving was published, as before, and
  what ``advance`` returns.
* Publishing is incremental. The snapshot is made once (``model.copy()``) and each publish
  syncs it from the live model (``snapshot.sync_from(model)``): only the rows trained or created
  since the previous publish are copied (weights, optimizer state, metadata), the rows evicted
  since are removed, and the global bias is copied, so a publish costs the rows that changed,
  not the whole model, and the snapshot equals the deep copy it replaces in every row and
  score (tests/test_sync.py). The snapshot object is therefore updated in place:
  :attr:`Trainer.serving_model` is the same object from publish to publish; keep
  ``serving_model.copy()`` to hold one publish. A scratch retrain (a new model each time), a
  sharded model, or evictions that outgrew the table's removal log since the last publish fall
  back to a deep copy (counted in :attr:`Trainer.full_copies`).
* Event time is seconds. Times beyond +-1e11 s (the year 5138) are milliseconds or
  nanoseconds by mistake and are rejected with the remedy; inside that range boundary
  arithmetic is exact Python integers and runs of empty boundaries are O(1), so no period and
  gap can hang a trainer.
* :meth:`Trainer.consume` validates every argument exactly as the model's ``train`` would
  (ids, labels for ``model.loss``, weights, lengths, time order) *before* anything changes: a
  rejected call leaves counters, clock, window and tables as they were, and batch never
  buffers an event that would fail at the boundary (which would lose the whole window).
* The batch window is shuffled (seeded) before each pass, as a batch job reading a day
  partition would; ``shuffle=False`` keeps time order, which makes a one-epoch batch pass the
  very same SGD sequence as real-time training on those events. The first pass of a warm
  batch retrain over a trailing window reads its older part (events trained at an earlier
  retrain: uncounted) before its new part (counted), each shuffled on its own, as a job
  reading partitions in turn; every other pass (later epochs, scratch, hybrid) is one shuffle
  of the whole window. With ``shuffle=False`` every pass is in time order.
* Memory of the window is bounded by the window: after a retrain at ``b`` only the events
  with timestamps ``>= b' - window`` are kept, ``b'`` being the next boundary (the events a
  later retrain can still read), once each; ``window=None`` keeps none. A failed retrain
  (e.g. a ``CapacityError``) leaves the window, the snapshot and the clock as they were and
  the boundary is retried by the next ``consume``/``advance``/``flush``.
* Serving scores are computed with numpy: one gather per side (``EmbeddingTable.get`` with a
  zero default, never inserting) and one float32 matmul. The item bias is read through
  ``model.score`` with a user id the model has never seen (zero vector, zero bias), which costs
  P lookups instead of a copy of the whole metadata.
* Field models serve the same way, split by side: an FFM with request fields R and candidate
  fields C scores ``sum over (r, c) in R x C of A_r[:, block c] @ B_c[:, block r].T`` (|R| x |C|
  block products: 2 x 3 = 6 for user, hour x item, creator, tag, computed as one matmul over
  the blocks laid side by side), an FM ``(sum_R v) @ (sum_C v).T``,
  plus one per-candidate constant (global bias, candidate linear terms and the interactions
  among candidate fields) that ``model.score`` computes in Rust with request ids the model has
  never seen. Request-only terms are left out, as MF leaves out the user bias: they do not
  change a request's ranking.

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
from collections.abc import Callable, Mapping
from typing import Any, TypeGuard

import numpy as np
import numpy.typing as npt

from embcore import _core
from embcore._core import EmbeddingTable, FieldModel, MatrixFactorization
from embcore.errors import ConfigError, EmbcoreError, shown

__all__ = ["MODES", "Model", "Trainer", "parse_duration"]

MODES: tuple[str, ...] = ("realtime", "batch", "hybrid")
"""The training modes a :class:`Trainer` accepts."""

DEFAULT_PERIOD_SECONDS = 6 * 3600

INITS: tuple[str, ...] = ("warm", "scratch")
"""How a batch retrain starts: from the current model, or from a new one."""

# A user id the serving model is (checked to be) unaware of: scoring (unknown user, item) gives
# the global bias plus the item bias.
_NO_USER = 2**64 - 1
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}
# Largest |label| of the squared loss and largest event weight the core accepts.
_MAX_LABEL = float(_core.MAX_LABEL)
_MAX_WEIGHT = float(_core.MAX_WEIGHT)
# Event times beyond +-1e11 s (after the year 5138) are not seconds (module design notes).
_MAX_SECONDS = 10**11
_TIME_REMEDY = (
    "event times must be seconds within +-1e11 (before the year 5138): divide milliseconds by "
    "1e3 and nanoseconds by 1e9 (e.g. timestamps // 10**9), or read the log with "
    "embcore.datasets.ColumnMap(time_unit='ms', 'us' or 'ns')"
)
MAX_DURATION_SECONDS = 100 * 365 * 86_400
"""The longest duration :func:`parse_duration` takes (100 years, 36500d): longer ones overflow
event-time arithmetic (int64 seconds times the window counts, nanosecond clocks)."""
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*$")

#: Every model is a FieldModel (MatrixFactorization is its two-field case), so the
#: Trainer talks to one protocol: ``fields``, ``table(field)``, ``embedding_of``,
#: ``embedding_span``, ``train_columns``, ``score_columns`` and ``interaction``.
Model = FieldModel
"""The models a :class:`Trainer` trains."""

ModelFactory = Callable[[], Model]
_DEFAULT_AGAINST = "__user_field__"


def parse_duration(value: str | int | float, name: str = "period") -> int:
    """Seconds in a duration given as seconds or as text with a unit (s, m, h, d).

    Parameters
    ----------
    value : str, int or float
        ``21600``, ``"6h"``, ``"90m"``, ``"1.5d"``, ``"45s"``.
    name : str
        The argument's name in the error message (``"period"``, ``"window"``, ...).

    Returns
    -------
    int
        Whole seconds, from 1 to :data:`MAX_DURATION_SECONDS` (100 years).

    Raises
    ------
    embcore.errors.ConfigError
        Unparseable, non-finite, not positive or longer than 100 years (a ``ValueError``).

    Examples
    --------
    >>> parse_duration("6h"), parse_duration("90m"), parse_duration(60)
    (21600, 5400, 60)
    >>> parse_duration("-1h")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    embcore.ConfigError: period must be a positive duration of 1s to 36500d such as 6h, ...
    >>> parse_duration("99999999999999999999d")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    embcore.ConfigError: period must be a positive duration of 1s to 36500d ..., got '9999...'
    """
    problem = (
        f"{name} must be a positive duration of 1s to 36500d such as 6h, 90m, 1d or 3600 "
        f"(seconds), got {shown(value, 40)}"
    )
    if isinstance(value, bool):
        raise ConfigError(problem)
    if isinstance(value, int | float | np.integer | np.floating):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value.lower())
        if match is None:
            raise ConfigError(problem)
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ConfigError(problem)
    if not math.isfinite(seconds) or not 1 <= round(seconds) <= MAX_DURATION_SECONDS:
        raise ConfigError(problem)
    return round(seconds)


class Trainer:
    """One model trained in one mode, with the view that serving reads.

    Parameters
    ----------
    mode : {"realtime", "batch", "hybrid"}
        When events reach the model and which state serving reads (see the module docstring).
    model : MatrixFactorization, FieldAwareFM, FactorizationMachine or callable, optional
        The model to train (used as is, not copied), or a zero-argument factory. By default a
        new ``MatrixFactorization(**model_options)``.
    period : int, float or str
        Batch/hybrid period in seconds of event time, or text such as ``"6h"``.
    epochs : int
        Passes over each window at a boundary (batch: the first counts the interactions of
        the events trained for the first time, the rest count nothing; hybrid: all are
        uncounted extra passes). Must be >= 1.
    window : int, float, str or None
        Batch/hybrid: the training set of each retrain, as a trailing duration of event time
        (``"1d"``: the events in ``[b - 1 day, b)``); at least ``period``. None (default):
        the events since the last retrain. Ignored in real-time mode.
    init : {"warm", "scratch"}
        Batch: ``"warm"`` (default) continues training the current model at each retrain;
        ``"scratch"`` trains a new model from the factory on the window (needs a factory or
        model options, not a model instance). Hybrid takes ``"warm"`` only; ignored in
        real-time mode, as ``period``, ``epochs`` and ``window`` are.
    reset_optimizer : bool
        Batch with ``init="warm"``: continue from the current weights with a fresh optimizer
        state: ``model.reset_optimizer()`` before each retrain (every Adagrad accumulator back
        to its initial value; weights, biases, counts and times kept).
    monitor : embcore.Monitor, optional
        Receives the counted real-time updates (``model.train(..., monitor=...)``) and every
        batch/hybrid publish (``monitor.record_publish(items, t)``). Any other object with a
        ``record_publish(table, t)`` method receives the publishes only (MF, or a field model
        whose item embedding is the whole row). Batch training itself is not shown to the
        monitor: a batch item's recorded state is the *published* one, i.e. its state after the
        batch run in which its count reached n (docs/METRICS.md).
    threads : int
        Training threads (Hogwild when > 1).
    shuffle : bool
        Shuffle each batch/hybrid window pass (seeded by ``seed``).
    seed : int
        Seeds the model (when built from ``model_options``) and the window shuffles.
    user_field, item_field : str
        Field models: the names of the user and the item field (``"user"``, ``"item"``).
    embedding_against : str or None
        Field models: which vector is the item's embedding for monitoring. FFM: the item's
        block against this field (default: ``user_field``), or None for the whole row (all
        blocks). FM: must be left at its default or None (one vector per item).
    **model_options
        Keyword arguments of :class:`embcore.MatrixFactorization` (``dim``, ``learning_rate``,
        ``l2``, ...). Not allowed together with ``model``.

    Raises
    ------
    embcore.errors.ConfigError
        Unknown mode, period <= 0, window < period, an unknown ``init``, ``init="scratch"`` or
        ``reset_optimizer`` where they do not apply, epochs < 1, threads < 1, bad model
        options, or a field model without the user/item field (a ``ValueError``).

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
    embcore.ConfigError: mode must be one of 'realtime', 'batch', 'hybrid', got 'weekly'

    A field-aware FM with a context field (``tag``) that belongs to the candidate:

    >>> import embcore
    >>> ffm = embcore.FieldAwareFM(fields=["user", "item", "tag"], dim=4, seed=0)
    >>> t = Trainer("batch", model=ffm, period="1h")
    >>> tags = np.array([7, 8], dtype=np.uint64)
    >>> t.consume(u, i, np.array([1.0, 0.0], np.float32), np.array([0, 1]), context={"tag": tags})
    >>> t.flush(); t.publishes
    1
    >>> t.serving_scores(u[:1], i, candidate_fields={"tag": tags}).shape
    (1, 2)
    """

    def __init__(
        self,
        mode: str = "realtime",
        model: Model | ModelFactory | None = None,
        *,
        period: str | int | float = DEFAULT_PERIOD_SECONDS,
        epochs: int = 1,
        window: str | int | float | None = None,
        init: str = "warm",
        reset_optimizer: bool = False,
        monitor: Any = None,
        threads: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        user_field: str = "user",
        item_field: str = "item",
        embedding_against: str | None = _DEFAULT_AGAINST,
        **model_options: Any,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(
                f"mode must be one of {', '.join(repr(m) for m in MODES)}, got {mode!r}"
            )
        if isinstance(epochs, bool) or not isinstance(epochs, int | np.integer) or epochs < 1:
            raise ConfigError(f"epochs must be an integer >= 1, got {epochs!r}")
        if isinstance(threads, bool) or not isinstance(threads, int | np.integer) or threads < 1:
            raise ConfigError(f"threads must be an integer >= 1, got {threads!r}")
        if model is not None and model_options:
            raise ConfigError(
                f"pass either a model or model options, not both (got {sorted(model_options)})"
            )
        period_seconds = parse_duration(period)
        window_seconds = None if window is None else parse_duration(window, "window")
        if window_seconds is not None and window_seconds < period_seconds:
            raise ConfigError(
                f"window must be at least the period ({period_seconds} s) so that every event "
                f"is trained at least once, got {window_seconds} s; pass window=None for the "
                "events since the last retrain"
            )
        if init not in INITS:
            raise ConfigError(
                f"init must be one of {', '.join(repr(i) for i in INITS)}, got {init!r}"
            )
        if not isinstance(reset_optimizer, bool | np.bool_):
            raise ConfigError(f"reset_optimizer must be True or False, got {reset_optimizer!r}")
        rebuild = mode == "batch" and init == "scratch"
        if mode == "hybrid" and (init != "warm" or reset_optimizer):
            raise ConfigError(
                "hybrid mode consolidates the live model, which real-time updates keep "
                "training: it takes init='warm' and reset_optimizer=False only, got "
                f"init={init!r}, reset_optimizer={bool(reset_optimizer)}"
            )
        if init == "scratch" and reset_optimizer:
            raise ConfigError(
                "reset_optimizer applies to init='warm'; a scratch retrain always starts "
                "with a fresh optimizer: drop reset_optimizer=True"
            )
        factory: ModelFactory | None = None
        if model is None:
            options = {"seed": seed, **model_options}
            model = MatrixFactorization(**options)

            def factory() -> Model:
                return MatrixFactorization(**options)

        elif not _is_model(model):
            factory = model  # type: ignore[assignment]  # not a model: a factory
            built: Any = model()  # type: ignore[operator]
            if not _is_model(built):
                raise ConfigError(
                    f"the model factory returned {type(built).__name__}, expected "
                    "embcore.MatrixFactorization, FieldAwareFM, FactorizationMachine or "
                    "embcore.distributed.ShardedModel"
                )
            model = built
        if rebuild:
            _check_rebuild(factory)
        self.user_field, self.item_field = user_field, item_field
        # Columns of an item row that are "the item's embedding" (None: the whole row).
        self._span: tuple[int, int] | None = None
        self._against: str | None = None
        for role, name in (("user_field", user_field), ("item_field", item_field)):
            if name not in model.fields:
                raise ConfigError(
                    f"{role}={name!r} is not a field of the model (its fields are "
                    f"{model.fields}); pass {role}= one of them"
                )
        if user_field == item_field:
            raise ConfigError(
                f"user_field and item_field must be different fields, got {user_field!r} for both"
            )
        if embedding_against == _DEFAULT_AGAINST:
            embedding_against = user_field if model.interaction == "field_aware" else None
        start, stop = model.embedding_span(item_field, embedding_against)
        self._against = embedding_against
        if (start, stop) != (0, model.row_dim):
            self._span = (start, stop)
            if monitor is not None and not _observes_updates(monitor):
                raise ConfigError(
                    "the item embedding is one block of the FFM row, which only an "
                    "embcore.Monitor can record; pass embcore.Monitor(...) or "
                    "embedding_against=None (record whole rows)"
                )
        self.mode = mode
        self.period = period_seconds
        self.window = window_seconds
        self.init = init
        self.reset_optimizer = bool(reset_optimizer)
        self.epochs = int(epochs)
        self.threads = int(threads)
        self.shuffle = bool(shuffle)
        self.monitor = monitor
        self.model: Model = model
        self._rng = np.random.default_rng(seed)
        # Batch serves a frozen copy; the other modes serve the live model.
        self._snapshot: Model | None = model.copy() if mode == "batch" else None
        # The model the snapshot was copied (and since synced) from; publishes sync it from
        # that model (module design notes). False: a deep copy at every publish (the slow
        # reference the tests compare the sync with).
        self._snapshot_source: Model | None = model if mode == "batch" else None
        self._sync_publish = True
        self.published_rows = 0
        """Batch: rows copied into the serving snapshot, over all publishes."""
        self.full_copies = 0
        """Batch: publishes that deep-copied the whole model instead of syncing it."""
        # Whether the live model changed since the last snapshot (training or eviction): a
        # publish of an unchanged model keeps the snapshot instead of copying it again.
        self._changed = False
        self._factory = factory
        # Batch init="scratch": each retrain trains a new model, whose
        # tables count only what it was trained on; the ledger keeps every item's count of
        # first-time interactions and its first event time (what a warm table keeps).
        self._ledger: _Ledger | None = _Ledger() if rebuild else None
        # New events (not trained at a boundary yet), in arrival chunks, and the events
        # trained at least once that a later window can still read (one block, time order).
        self._window: list[_Block] = []
        self._window_events = 0
        self._kept: _Block | None = None
        self._next_boundary: int | None = None
        self._clock: int | None = None
        self.publishes = 0
        self.publishes_with_training = 0
        self.trained_publish_times: list[int] = []
        """Event times of the publishes that followed a retrain (non-empty windows)."""
        self.first_publish_time: int | None = None
        self.events_consumed = 0
        self.updates = 0
        self.evicted = 0
        self.dropped = 0
        self.train_seconds = 0.0

    # -- the model's view ----------------------------------------------------------------------

    @property
    def serving_model(self) -> Model:
        """The model serving reads: the live one, or the last published snapshot (batch)."""
        return self._snapshot if self._snapshot is not None else self.model

    @property
    def fields(self) -> tuple[str, ...]:
        """The id fields the model trains on: ``("user", "item")`` for MF, else its fields."""
        return tuple(self.model.fields)

    @property
    def context_fields(self) -> tuple[str, ...]:
        """The fields :meth:`consume` needs in ``context`` (all but the user and item field)."""
        return tuple(f for f in self.fields if f not in (self.user_field, self.item_field))

    @property
    def item_span(self) -> tuple[int, int]:
        """``(start, stop)``: the columns of an item-table row that are the item's embedding
        (the whole row except for an FFM watched against one field)."""
        if self._span is not None:
            return self._span
        return (0, self.item_table().dim)

    @property
    def window_events(self) -> int:
        """Events buffered for the next batch/hybrid boundary and not trained at one yet."""
        return self._window_events

    @property
    def buffered_events(self) -> int:
        """Every event the trainer holds for a later retrain: the new ones
        (:attr:`window_events`) plus those already trained that a trailing window will read
        again. Bounded by the events of one ``window`` of event time (module design notes).

        >>> import numpy as np
        >>> t = Trainer("batch", period="1h", window="2h", dim=2)
        >>> one = np.zeros(3, dtype=np.uint64)
        >>> t.consume(one, one, np.ones(3, np.float32), np.array([0, 1800, 4000]))
        >>> t.buffered_events  # the retrain at 1 h read 0 and 1800; [0, 2 h) keeps them
        3
        >>> t.advance(7200); t.window_events, t.buffered_events  # [1 h, 3 h) keeps t = 4000
        1
        (0, 1)
        """
        kept = 0 if self._kept is None else int(self._kept[1].size)
        return self._window_events + kept

    def item_interactions(
        self, model: Model | None = None
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
        """``(ids, counts)``: each item of ``model`` (default: the serving one) with the number
        of its interactions trained so far, each event counted once (the first time it was
        trained). Warm modes read the item table's counts; a batch trainer that rebuilds its
        model (``init="scratch"``) keeps them itself, because a new
        model's table counts only what that model was trained on.

        >>> import numpy as np
        >>> t = Trainer("batch", period="1h", window="2h", dim=2)
        >>> one = np.zeros(2, dtype=np.uint64)
        >>> t.consume(one, one, np.ones(2, np.float32), np.array([0, 1]))
        >>> t.advance(3 * 3600)  # two retrains read both events; each counts once
        3
        >>> t.item_interactions()[1].tolist()
        [2]
        """
        model = self.serving_model if model is None else model
        meta = self.item_table(model).metadata()
        ids = meta["ids"]
        if self._ledger is None:
            return ids, meta["interactions"]
        return ids, self._ledger.lookup(ids, meta["first_seen"])[0]

    def item_table(self, model: Model | None = None) -> EmbeddingTable:
        """The item table of ``model`` (default: the live model). Field models: the item
        field's table, whose rows may hold several blocks (see :meth:`item_embeddings`)."""
        model = self.model if model is None else model
        return model.table(self.item_field)

    def user_table(self, model: Model | None = None) -> EmbeddingTable:
        """The user table of ``model`` (default: the live model)."""
        model = self.model if model is None else model
        return model.table(self.user_field)

    def item_embeddings(
        self, model: Model | None = None
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]:
        """``(ids, vectors)`` of every item: the vector the monitor records (MF: the item row;
        FFM: the block against ``embedding_against``; FM: the item vector). Default model: the
        serving one.

        >>> import numpy as np
        >>> t = Trainer("realtime", dim=3)
        >>> one = np.array([4], dtype=np.uint64)
        >>> t.consume(one, one, np.array([1.0], np.float32), np.array([0]))
        >>> t.item_embeddings()[1].shape
        (1, 3)
        """
        model = self.serving_model if model is None else model
        return model.embedding_of(self.item_field, self._against)

    def user_embeddings(
        self, model: Model | None = None
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]:
        """``(ids, vectors)`` of every user, the counterpart of :meth:`item_embeddings` (FFM:
        the user's block against the item field)."""
        model = self.serving_model if model is None else model
        against = self.item_field if self._against is not None else None
        return model.embedding_of(self.user_field, against)

    # -- serving -------------------------------------------------------------------------------

    def serving_scores(
        self,
        users: npt.ArrayLike,
        pool: npt.ArrayLike,
        *,
        request_fields: Mapping[str, npt.ArrayLike] | None = None,
        candidate_fields: Mapping[str, npt.ArrayLike] | None = None,
        unknown_items: str = "cold",
    ) -> npt.NDArray[np.float32]:
        """Scores of every ``pool`` item for every request user, as serving sees them.

        MF: ``scores[r, p] = u_r . v_p + b_p + b_global`` (the user bias is left out: it does
        not change a ranking). Field models: every interaction between a request field and a
        candidate field, plus the candidate's own terms (module docstring); request-only terms
        are left out. Unknown ids get a zero vector and bias. Nothing is inserted.

        Parameters
        ----------
        users : array_like of uint64, shape (R,)
        pool : array_like of uint64, shape (P,)
        request_fields : mapping of str to array_like of uint64, shape (R,), optional
            Field models: the other request-side fields (e.g. ``{"hour": ...}``).
        candidate_fields : mapping of str to array_like of uint64, shape (P,), optional
            Field models: the other candidate-side fields (e.g. ``{"creator": ..., "tag":
            ...}``). Every model field must be on exactly one side; fields the model does not
            have are ignored.
        unknown_items : {"cold", "exclude"}
            Pool items the serving model has no row for: ``"cold"`` scores them as above (a
            zero vector and bias: the cold-start score); ``"exclude"`` gives them ``-inf``, as
            a retrieval index built from the published embeddings would not hold them: they
            rank below every item the model knows. A caller that must fill more slots than the
            model knows items (``World.serve`` does, e.g. in batch's empty first period) still
            shows them, in its own tie order.

        Returns
        -------
        numpy.ndarray of float32, shape (R, P)

        Raises
        ------
        embcore.errors.EmbcoreError
            A model field on neither side or on both, a column of the wrong length, or a
            negative id (a ``ValueError``).

        Examples
        --------
        >>> import numpy as np
        >>> t = Trainer("realtime", dim=2, seed=0)
        >>> t.serving_scores(np.array([9], dtype=np.uint64), np.array([3, 4], dtype=np.uint64))
        array([[0., 0.]], dtype=float32)
        >>> nine, three = np.array([9], np.uint64), np.array([3], np.uint64)
        >>> t.serving_scores(nine, three, unknown_items="exclude")
        array([[-inf]], dtype=float32)
        """
        if unknown_items not in ("cold", "exclude"):
            raise ConfigError(f"unknown_items must be 'cold' or 'exclude', got {unknown_items!r}")
        model = self.serving_model
        user_ids = _ids(users, "users")
        item_ids = _ids(pool, "pool")
        request = {self.user_field: user_ids, **_id_columns(request_fields, "request_fields")}
        candidate = {
            self.item_field: item_ids,
            **_id_columns(candidate_fields, "candidate_fields"),
        }
        scores = _field_serving_scores(model, request, candidate)
        if unknown_items == "exclude" and item_ids.size:
            known = ~np.isnan(model.table(self.item_field).get(item_ids, default=np.nan)[:, 0])
            scores[:, ~known] = -np.inf
        return scores

    def score(
        self,
        users: npt.ArrayLike,
        items: npt.ArrayLike,
        *,
        context: Mapping[str, npt.ArrayLike] | None = None,
    ) -> npt.NDArray[np.float32]:
        """Pairwise scores (logits, user bias included) of the serving model.

        For progressive validation: score events with :meth:`score` *before*
        :meth:`consume`-ing them. Field models need their other fields in ``context``.

        >>> import numpy as np
        >>> Trainer("batch", dim=2).score(np.array([1], np.uint64), np.array([2], np.uint64))
        array([0.], dtype=float32)
        """
        columns = self._columns(users, items, context)
        return self.serving_model.score_columns(columns)

    # -- training ------------------------------------------------------------------------------

    def consume(
        self,
        users: npt.ArrayLike,
        items: npt.ArrayLike,
        labels: npt.ArrayLike,
        timestamps: npt.ArrayLike,
        weights: npt.ArrayLike | None = None,
        *,
        context: Mapping[str, npt.ArrayLike] | None = None,
        return_scores: bool = False,
    ) -> npt.NDArray[np.float32] | None:
        """Feed events (in time order) to the mode.

        Real-time and hybrid train on them at once; batch buffers them. Batch and hybrid first
        publish every period boundary that the events cross (a boundary ``b`` sees the events
        with timestamps ``< b``).

        With ``return_scores=True``, returns each event's raw score (logit) from the *serving*
        model just before that event reaches it — progressive validation in the same pass:
        real-time and hybrid take it from the training call (the live model before the event's
        own step, exact per event at ``threads=1``; with more threads, in the workers'
        interleaved order), batch from the last publish before the event (the frozen snapshot,
        scored in one call per period). Otherwise returns None.

        Parameters
        ----------
        users, items : array_like of uint64
            Non-negative integer ids (uint64, or any integer dtype without negative values).
        labels : array_like of float32
            1/0 for the logistic loss (finite, in [0, 1]); finite ratings with |label| <= 1e6
            for the squared loss (``model.loss``).
        timestamps : array_like of int64
            Event time in whole seconds within +-1e11; batch/hybrid: non-decreasing, and not
            before the trainer's clock.
        weights : array_like of float32, optional
            Finite, in [0, 1e6].
        context : mapping of str to array_like of uint64, optional
            Field models: one id column per other field (:attr:`context_fields`). Columns for
            fields the model does not have are ignored, so one stream can feed MF and FFM
            trainers alike.

        Every argument is checked, as the model's ``train`` checks it, before anything
        changes: a rejected call leaves the trainer (counters, clock, buffered window, tables)
        exactly as it was.

        Raises
        ------
        embcore.errors.EmbcoreError
            A ``ValueError`` naming the argument, the value and what is allowed: mismatched
            lengths, a negative id, a label or weight out of range, a missing context field,
            times that are not seconds (milliseconds, nanoseconds), or timestamps out of order
            (sort them first, e.g. with ``np.argsort(timestamps, kind="stable")``).
        TypeError
            An argument of the wrong dtype (float or text ids, float timestamps), as ``train``.

        >>> import numpy as np
        >>> rt = Trainer("realtime", dim=4, seed=0)
        >>> one = np.array([1, 1], dtype=np.uint64)
        >>> s = rt.consume(one, one, np.ones(2, np.float32), np.array([0, 1]), return_scores=True)
        >>> bool(s[1] > s[0])  # the second event is scored after the first one's update
        True
        """
        cols, y, t, w = self._events(users, items, labels, timestamps, weights, context)
        n = y.size
        scores = np.empty(n, dtype=np.float32) if return_scores else None
        if n == 0:
            return scores
        if self.mode == "realtime":
            # Counted once trained: a failed train (e.g. a full table) changes nothing.
            got = self._train(cols, y, t, w, count=True, observe=True, scores=return_scores)
            self.events_consumed += n
            self._clock = int(t.max()) if self._clock is None else max(self._clock, int(t.max()))
            return got
        start = 0
        while start < n:
            # Publish every boundary up to this event, then take the events before the next.
            # A failed retrain raises here: the events before it stay taken (and counted),
            # the rest are not consumed, and the boundary is retried by the next call.
            self.advance(int(t[start]))
            assert self._next_boundary is not None
            stop = start + int(np.searchsorted(t[start:], self._next_boundary, side="left"))
            part = {name: col[start:stop] for name, col in cols.items()}
            part_w = None if w is None else w[start:stop]
            if scores is not None and self.mode == "batch":
                scores[start:stop] = self.serving_model.score_columns(part)
            got = self._take(part, y[start:stop], t[start:stop], part_w, scores=return_scores)
            if scores is not None and got is not None:
                scores[start:stop] = got
            self.events_consumed += stop - start
            self._clock = int(t[stop - 1])
            start = stop
        return scores

    def advance(self, t: int) -> int:
        """Move event time to ``t`` (seconds): batch/hybrid publish every boundary ``<= t`` now
        due.

        Returns the number of boundaries published (always 0 in real-time mode). A run of
        boundaries with nothing to train is published once, at its last boundary, and counted
        in full (module design notes): the cost does not grow with the gap.

        >>> batch = Trainer("batch", period="1h")
        >>> batch.advance(0), batch.advance(7200)  # boundaries at 1 h and 2 h
        (0, 2)
        >>> batch.advance(10**10), batch.publishes  # one publish; every boundary is counted
        (2777775, 2777777)
        """
        t = _time_point(t, "t")
        crossed = 0
        if self.mode != "realtime":
            if self._next_boundary is None:
                self._next_boundary = self._boundary_after(
                    t if self._clock is None else self._clock
                )
            # Boundaries whose window holds events retrain one by one: at most
            # window / period + 1 of them in a row once no new events arrive.
            while self._next_boundary <= t and self.buffered_events:
                self._publish(self._next_boundary)
                self._next_boundary += self.period
                crossed += 1
            first = self._next_boundary
            if first <= t:
                # first..last: boundaries with empty windows, published once at `last`.
                run = (t - first) // self.period + 1
                last = first + (run - 1) * self.period
                if run > 1:
                    self._expire(last - self.period, sweep=run - 1)
                if self.first_publish_time is None:
                    self.first_publish_time = first
                self._publish(last)
                self.publishes += run - 1
                crossed += run
                self._next_boundary = last + self.period
        self._clock = t if self._clock is None else max(self._clock, t)
        return crossed

    def flush(self, t: int | None = None) -> None:
        """End of stream: publish every boundary up to ``t``, then retrain on what is still
        buffered and publish it at ``t`` (batch/hybrid; no-op in real-time mode).

        ``t`` (seconds) defaults to the trainer's clock (the last event time seen). The stream
        may go on afterwards: a burn-in is ``consume`` of its events then ``flush(t0)`` (or
        ``advance(t0)`` when ``t0`` is a boundary), after which every mode serves a model
        trained on all of them; the flushed events are then the older part of the next
        trailing windows (trained again, not counted again).

        >>> import numpy as np
        >>> b = Trainer("batch", dim=2)
        >>> one = np.array([1], dtype=np.uint64)
        >>> b.consume(one, one, np.array([1.0], np.float32), np.array([5]))
        >>> b.flush(); b.publishes, len(b.serving_model.items)
        (1, 1)
        """
        if self.mode == "realtime":
            if t is not None:
                _time_point(t, "t")
            return
        if t is None:
            t = self._clock if self._clock is not None else 0
        t = _time_point(t, "t")
        self.advance(t)
        if self._window_events:
            self._publish(t)

    def stats(self) -> dict[str, Any]:
        """Counters: events consumed, optimizer updates, publishes, training seconds.

        ``publishes`` counts every period boundary crossed (a run of empty boundaries is
        published, and shown to the monitor, once, at its last boundary, but counted in full),
        plus the end-of-stream publish of :meth:`flush`. ``publishes_with_training`` counts
        those that followed a retrain on a non-empty window (a batch model that changed; a
        batch run with fewer than a few is degenerate), ``first_publish_time`` and
        ``first_trained_publish_time`` are event times (None before any).
        ``buffered_events`` is the window memory (:attr:`buffered_events`),
        ``dropped_items`` the item rows a scratch retrain left behind (handed to the
        monitor's ``record_rows``). Batch: ``published_rows`` counts the rows copied into the
        serving snapshot over all publishes, ``full_copies`` the publishes that copied the
        whole model (module design notes).

        >>> Trainer("hybrid", epochs=2).stats()["epochs"]
        2
        """
        return {
            "mode": self.mode,
            "period_seconds": self.period,
            "epochs": self.epochs,
            "window_seconds": self.window,
            "init": self.init,
            "reset_optimizer": self.reset_optimizer,
            "events": self.events_consumed,
            "updates": self.updates,
            "publishes": self.publishes,
            "publishes_with_training": self.publishes_with_training,
            "first_publish_time": self.first_publish_time,
            "first_trained_publish_time": (
                self.trained_publish_times[0] if self.trained_publish_times else None
            ),
            "buffered_events": self.buffered_events,
            "train_seconds": self.train_seconds,
            "evicted_items": self.evicted,
            "dropped_items": self.dropped,
            "published_rows": self.published_rows,
            "full_copies": self.full_copies,
        }

    def __repr__(self) -> str:
        window = "" if self.window is None else f", window={self.window}"
        init = "" if self.init == "warm" else f", init={self.init!r}"
        return (
            f"Trainer(mode={self.mode!r}, period={self.period}{window}{init}, "
            f"epochs={self.epochs}, events={self.events_consumed}, publishes={self.publishes})"
        )

    # -- internals -----------------------------------------------------------------------------

    def _boundary_after(self, t: int) -> int:
        """The first period boundary strictly after ``t``."""
        return (t // self.period + 1) * self.period

    def _columns(
        self,
        users: npt.ArrayLike,
        items: npt.ArrayLike,
        context: Mapping[str, npt.ArrayLike] | None,
    ) -> dict[str, npt.NDArray[np.uint64]]:
        """``{field: uint64 ids}`` for every field the model trains on, in field order (ids
        checked as ``train`` checks them: non-negative integers)."""
        given = {self.user_field: _ids(users, "users"), self.item_field: _ids(items, "items")}
        if context is not None and not isinstance(context, Mapping):
            raise TypeError(
                f"context must be a mapping of field name to ids, got {type(context).__name__}"
            )
        extra = dict(context or {})
        missing = [f for f in self.context_fields if f not in extra]
        if missing:
            raise EmbcoreError(
                f"context has no {', '.join(repr(f) for f in missing)} column; this model's "
                f"fields are {list(self.fields)}: pass context={{field: ids}} for "
                f"{list(self.context_fields)}"
            )
        for f in self.context_fields:
            given[f] = _ids(extra[f], f"context[{f!r}]")
        return {f: given[f] for f in self.fields}

    def _events(
        self,
        users: npt.ArrayLike,
        items: npt.ArrayLike,
        labels: npt.ArrayLike,
        timestamps: npt.ArrayLike,
        weights: npt.ArrayLike | None,
        context: Mapping[str, npt.ArrayLike] | None,
    ) -> tuple[
        dict[str, npt.NDArray[np.uint64]],
        npt.NDArray[np.float32],
        npt.NDArray[np.int64],
        npt.NDArray[np.float32] | None,
    ]:
        """The arguments of :meth:`consume`, converted and checked as the model's ``train``
        checks them (plus time in seconds and, batch/hybrid, time order); changes nothing."""
        cols = self._columns(users, items, context)
        y = _floats(labels, "labels")
        t = _times(timestamps)
        w = None if weights is None else _floats(weights, "weights")
        names = {self.user_field: "users", self.item_field: "items"}
        lengths = {names.get(f, f"context[{f!r}]"): c.size for f, c in cols.items()}
        lengths |= {"labels": y.size, "timestamps": t.size}
        if w is not None:
            lengths["weights"] = w.size
        if len(set(lengths.values())) > 1:
            given = ", ".join(f"{name}: {size}" for name, size in lengths.items())
            raise EmbcoreError(
                f"event arrays must have equal lengths (one element per event), got {given}"
            )
        if self.model.loss == "logistic":
            _check_range(
                y,
                "labels",
                0.0,
                1.0,
                "the logistic loss needs labels in [0, 1]; use loss='squared' for ratings",
            )
        else:
            _check_range(
                y,
                "labels",
                -_MAX_LABEL,
                _MAX_LABEL,
                "the squared loss takes finite labels in [-1e6, 1e6]",
            )
        if w is not None:
            _check_range(
                w,
                "weights",
                0.0,
                _MAX_WEIGHT,
                "weights must be finite numbers in [0, 1e6]",
            )
        if self.mode != "realtime" and t.size:
            back = np.flatnonzero(t[1:] < t[:-1])
            if back.size:
                k = int(back[0]) + 1
                raise EmbcoreError(
                    f"timestamps[{k}] = {int(t[k])} is before timestamps[{k - 1}] = "
                    f"{int(t[k - 1])}; {self.mode} mode needs events in time order: sort them "
                    "first, e.g. order = np.argsort(timestamps, kind='stable')"
                )
            if self._clock is not None and int(t[0]) < self._clock:
                raise EmbcoreError(
                    f"timestamps[0] = {int(t[0])} is before the trainer's clock "
                    f"t={self._clock}; events must arrive in time order, at or after the "
                    "last event or advance() time"
                )
        return cols, y, t, w

    def _take(
        self,
        cols: dict[str, npt.NDArray[np.uint64]],
        y: npt.NDArray[np.float32],
        t: npt.NDArray[np.int64],
        w: npt.NDArray[np.float32] | None,
        *,
        scores: bool = False,
    ) -> npt.NDArray[np.float32] | None:
        """Events inside one period: train now (hybrid) and buffer them for the boundary.

        Hybrid with ``scores``: returns the live model's scores before each event's step."""
        got = None
        if y.size == 0:
            return got
        if self.mode == "hybrid":
            got = self._train(cols, y, t, w, count=True, observe=True, scores=scores)
        self._window.append((cols, y, t, w))
        self._window_events += int(y.size)
        return got

    def _publish(self, t: int) -> None:
        """Retrain on the window (if it holds events), publish at ``t``, then evict."""
        if self.buffered_events:
            self._retrain(t)
            self.publishes_with_training += 1
            self.trained_publish_times.append(int(t))
        if self.mode == "batch" and self._changed:
            self._refresh_snapshot()
            self._changed = False
        if self.first_publish_time is None:
            self.first_publish_time = int(t)
        self.publishes += 1
        if self.monitor is not None:
            self._record_publish(int(t))
        self._expire(t)

    def _refresh_snapshot(self) -> None:
        """Bring the serving snapshot up to the live model: sync the rows changed since the
        last publish into it when it is a copy of this very model, else copy the model."""
        snapshot = self._snapshot
        if (
            self._sync_publish
            and snapshot is not None
            and self._snapshot_source is self.model
            and isinstance(snapshot, FieldModel)
            and isinstance(self.model, FieldModel)
        ):
            try:
                synced = snapshot.sync_from(self.model)
            except EmbcoreError:
                pass  # evictions outgrew the removal log since the last publish: copy
            else:
                self.published_rows += int(synced["rows"])
                return
        self._snapshot = self.model.copy()
        self._snapshot_source = self.model
        self.full_copies += 1
        self.published_rows += sum(len(self._snapshot.table(f)) for f in self.fields)

    def _retrain(self, t: int) -> None:
        """``epochs`` passes over the window of a retrain at ``t``; on success the window
        slides. Any failure leaves the window, the snapshot and the trainer's model as they
        were (a warm live model keeps the passes that succeeded: docs/batch-protocol.md)."""
        new = _concat(self._window)
        if new is not None:
            self._window = [new]  # the same events, joined once
        old = self._kept
        if old is not None and self.window is not None:
            # The window of a retrain at t is [b - window, t] for b the first boundary >= t:
            # t itself at a boundary, and flush(t) runs the next boundary's retrain early.
            old = _since(old, self._boundary_after(t - 1) - self.window)
        rebuilding = self._ledger is not None
        model = self._new_model() if rebuilding else self.model
        if self.reset_optimizer:
            # A warm start with a fresh optimizer (weights, biases and counts kept).
            model.reset_optimizer()
        whole: _Block | None = None  # old and new joined, for passes that count them alike
        for epoch in range(self.epochs):
            passes: list[tuple[_Block | None, bool]]
            if self.init == "scratch":
                # A new model learns the whole window for the first time.
                passes = [(whole, epoch == 0)]
            elif self.mode == "batch" and epoch == 0:
                # Batch counts an event the first time it is trained, never again.
                passes = [(old, False), (new, True)]
            else:
                # Later passes; hybrid's real-time updates already counted every event.
                passes = [(whole, False)]
            if passes[0][0] is None and len(passes) == 1:
                whole = _concat([b for b in (old, new) if b is not None])
                passes = [(whole, passes[0][1])]
            for part, counted in passes:
                if part is None or part[1].size == 0:
                    continue
                cols, y, ts, w = self._shuffled(part) if self.shuffle else part
                self._train(cols, y, ts, w, count=counted, observe=False, model=model)
        if rebuilding:
            assert self._ledger is not None
            if new is not None:
                self._ledger.add(new[0][self.item_field], new[2])
            self._hand_over_dropped(model, t)
            self.model = model
            self._changed = True
        # The next retrain reads events >= its boundary - window; keep those, once each.
        keep_from = None if self.window is None else self._boundary_after(t) - self.window
        parts = [] if keep_from is None else [_since(b, keep_from) for b in (old, new) if b]
        self._kept = _concat(parts)
        self._window, self._window_events = [], 0

    def _shuffled(self, block: _Block) -> _Block:
        cols, y, ts, w = block
        order = self._rng.permutation(y.size)
        return (
            {f: c[order] for f, c in cols.items()},
            y[order],
            ts[order],
            (None if w is None else w[order]),
        )

    def _new_model(self) -> Model:
        """A new model from the factory (``init="scratch"``)."""
        assert self._factory is not None
        model = self._factory()
        if not _is_model(model) or model is self.model or model is self._snapshot:
            raise ConfigError(
                "init='scratch' needs a factory that builds a new model at "
                f"each call, got {type(model).__name__}"
            )
        return model

    def _hand_over_dropped(self, model: Model, t: int) -> None:
        """Scratch: the items of the current model that the new one lacks leave the model; hand
        their last rows to the monitor (as evictions are), so a reference row exists."""
        old_ids = self.item_table().ids()
        gone = old_ids[~np.isin(old_ids, self.item_table(model).ids())]
        self.dropped += int(gone.size)
        if gone.size and self.monitor is not None and hasattr(self.monitor, "record_rows"):
            assert self._ledger is not None
            rows = self.item_table().get(gone)
            if self._span is not None:
                rows = np.ascontiguousarray(rows[:, self._span[0] : self._span[1]])
            counts, first = self._ledger.lookup(gone, np.zeros(gone.size, dtype=np.int64))
            self.monitor.record_rows(gone, rows, counts, first, int(t))

    def _record_publish(self, t: int) -> None:
        assert self.monitor is not None
        table = self.item_table(self.serving_model)
        if self._ledger is not None and hasattr(self.monitor, "record_rows"):
            # A rebuilt table counts only its own window: record the ledger's counts.
            meta = table.metadata()
            ids = meta["ids"]
            if ids.size:
                rows = table.get(ids)
                if self._span is not None:
                    rows = np.ascontiguousarray(rows[:, self._span[0] : self._span[1]])
                counts, first = self._ledger.lookup(ids, meta["first_seen"])
                self.monitor.record_rows(ids, rows, counts, first, t)
        elif self._span is None:
            self.monitor.record_publish(_local(table), t)
        else:
            self.monitor.record_publish(_local(table), t, columns=self._span)

    def _train(
        self,
        cols: dict[str, npt.NDArray[np.uint64]],
        y: npt.NDArray[np.float32],
        t: npt.NDArray[np.int64],
        w: npt.NDArray[np.float32] | None,
        *,
        count: bool,
        observe: bool,
        scores: bool = False,
        model: Model | None = None,
    ) -> npt.NDArray[np.float32] | None:
        """One training call (of ``model``, default the live one); with ``scores``, returns
        each event's score before its step."""
        model = self.model if model is None else model
        began = time.perf_counter()
        options: dict[str, Any] = {}
        if observe and _observes_updates(self.monitor):
            options["monitor"] = self.monitor
        if options:
            options["monitor_field"] = self.item_field
            options["monitor_against"] = self._against
        if scores:
            options["return_scores"] = True
        out = model.train_columns(
            cols,
            y,
            weights=w,
            timestamps=t,
            threads=self.threads,
            count_interactions=count,
            **options,
        )
        self.updates += int(y.size)
        self._changed = True
        self.train_seconds += time.perf_counter() - began
        if self.mode != "batch":
            self._expire(int(t.max()))
        return out["scores"] if scores else None

    def _expire(self, now: int, sweep: int = 1) -> None:
        """Evict expired item rows (when the model has an item lifecycle), handing their
        final rows (the item embedding's columns) to the monitor so maturity still sees
        evicted items.

        Each eviction call inspects a budget of rows from the table's clock hand. ``sweep``:
        make the calls that many boundaries would, but stop once the calls have inspected as
        many rows as the table holds (a run of empty boundaries costs O(rows), not O(run))."""
        items = self.item_table()
        if items.lifecycle is None or not (
            items.lifecycle["ttl"] or items.lifecycle["max_rows"] or items.lifecycle["max_bytes"]
        ):
            return
        size, inspected = len(items), 0
        for _ in range(sweep):
            budget = max(10_000, len(items) // 10)
            out = items.evict(now=now, budget=budget)
            self.evicted += len(out["ids"])
            self._changed = self._changed or len(out["ids"]) > 0
            if (
                self.monitor is not None
                and len(out["ids"])
                and hasattr(self.monitor, "record_rows")
            ):
                rows = out["rows"]
                if self._span is not None:
                    rows = np.ascontiguousarray(rows[:, self._span[0] : self._span[1]])
                counts, first = out["interactions"], out["first_seen"]
                if self._ledger is not None:
                    counts, first = self._ledger.lookup(out["ids"], first)
                self.monitor.record_rows(out["ids"], rows, counts, first, now)
            inspected += budget
            if inspected >= size:
                break


def _observes_updates(monitor: Any) -> bool:
    """Whether ``monitor`` can watch training (only the Rust ``embcore.Monitor`` can; any other
    object with ``record_publish`` still receives the publishes)."""
    monitor_class = getattr(_core, "Monitor", None)
    return monitor_class is not None and isinstance(monitor, monitor_class)


#: Events of a window: ``({field: ids}, labels, timestamps, weights or None)``, time order.
_Block = tuple[
    dict[str, npt.NDArray[np.uint64]],
    npt.NDArray[np.float32],
    npt.NDArray[np.int64],
    npt.NDArray[np.float32] | None,
]


def _concat(blocks: list[_Block]) -> _Block | None:
    """One block holding ``blocks`` in order (None if they hold no event). Blocks without
    weights take weight 1 when another block has weights."""
    blocks = [b for b in blocks if b[1].size]
    if not blocks:
        return None
    if len(blocks) == 1:
        return blocks[0]
    cols = {f: np.concatenate([b[0][f] for b in blocks]) for f in blocks[0][0]}
    y = np.concatenate([b[1] for b in blocks])
    ts = np.concatenate([b[2] for b in blocks])
    w = None
    if any(b[3] is not None for b in blocks):
        w = np.concatenate(
            [b[3] if b[3] is not None else np.ones(b[1].size, np.float32) for b in blocks]
        )
    return cols, y, ts, w


def _since(block: _Block, start: int) -> _Block:
    """The events of ``block`` (time order) with timestamps ``>= start``, as a copy when
    some are dropped (so the dropped ones are freed)."""
    cols, y, ts, w = block
    k = int(np.searchsorted(ts, start, side="left"))
    if k == 0:
        return block
    return (
        {f: c[k:].copy() for f, c in cols.items()},
        y[k:].copy(),
        ts[k:].copy(),
        None if w is None else w[k:].copy(),
    )


class _Ledger:
    """Per item: interactions counted so far (each event once) and first event time, for a
    batch trainer whose model is rebuilt at every retrain. Sorted ids, O(items) memory."""

    def __init__(self) -> None:
        self.ids = np.empty(0, dtype=np.uint64)
        self.counts = np.empty(0, dtype=np.uint64)
        self.first = np.empty(0, dtype=np.int64)

    def add(self, items: npt.NDArray[np.uint64], times: npt.NDArray[np.int64]) -> None:
        """Count the events ``(items, times)`` (time order) once each."""
        if items.size == 0:
            return
        ids, index, counts = np.unique(items, return_index=True, return_counts=True)
        first = times[index]
        pos = np.searchsorted(self.ids, ids)
        known = pos < self.ids.size
        known[known] = self.ids[pos[known]] == ids[known]
        self.counts[pos[known]] += counts[known].astype(np.uint64)
        if not known.all():
            merged_ids = np.concatenate([self.ids, ids[~known]])
            order = np.argsort(merged_ids, kind="stable")
            self.ids = merged_ids[order]
            self.counts = np.concatenate([self.counts, counts[~known].astype(np.uint64)])[order]
            self.first = np.concatenate([self.first, first[~known]])[order]

    def lookup(
        self, ids: npt.NDArray[np.uint64], default_first: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
        """``(counts, first_seen)`` of ``ids``; unknown ids: 0 and ``default_first``."""
        ids = np.asarray(ids, dtype=np.uint64)
        counts = np.zeros(ids.size, dtype=np.uint64)
        first = np.array(default_first, dtype=np.int64, copy=True)
        if self.ids.size and ids.size:
            pos = np.minimum(np.searchsorted(self.ids, ids), self.ids.size - 1)
            hit = self.ids[pos] == ids
            counts[hit] = self.counts[pos[hit]]
            first[hit] = self.first[pos[hit]]
        return counts, first


def _local(table: Any) -> EmbeddingTable:
    """``table`` as one in-process EmbeddingTable (a ShardedModel's table is gathered)."""
    return table if isinstance(table, EmbeddingTable) else table.copy()


def _is_model(obj: Any) -> TypeGuard[FieldModel]:
    """A model the Trainer trains: a FieldModel, or an ``embcore.distributed.ShardedModel``
    (imported here: the distributed package imports this module)."""
    if isinstance(obj, FieldModel):
        return True
    from embcore.distributed import ShardedModel

    return isinstance(obj, ShardedModel)


def _check_rebuild(factory: ModelFactory | None) -> None:
    """Refuse, before any state exists, a rebuilding batch trainer that cannot work."""
    if factory is None:
        raise ConfigError(
            "init='scratch' builds a new model at every retrain, so it needs a factory, not a "
            "model instance: pass model=lambda: embcore.MatrixFactorization(...) or model options"
        )


def _id_columns(
    columns: Mapping[str, npt.ArrayLike] | None, name: str
) -> dict[str, npt.NDArray[np.uint64]]:
    if columns is None:
        return {}
    if not isinstance(columns, Mapping):
        raise TypeError(
            f"{name} must be a mapping of field name to ids, got {type(columns).__name__}"
        )
    return {str(f): _ids(c, f"{name}[{str(f)!r}]") for f, c in columns.items()}


def _ids(value: npt.ArrayLike, name: str) -> npt.NDArray[np.uint64]:
    """``value`` as contiguous uint64 ids, checked as ``train`` checks ids: an array of
    unsigned integers, or of signed integers none of which is negative (no floats, even
    integral ones, and no wrap-around of -1 to 2**64 - 1)."""
    array = np.asarray(value)
    if array.ndim != 1 or (array.dtype.kind not in "iu" and array.size):
        raise TypeError(
            f"{name} must be a 1-D array of uint64 (or non-negative int64) ids, got "
            f"{_describe(array)}; pass np.asarray({name}, dtype=np.uint64)"
        )
    if array.dtype.kind == "i" and array.size:
        negative = np.flatnonzero(array < 0)
        if negative.size:
            k = int(negative[0])
            raise EmbcoreError(
                f"{name}[{k}] = {int(array[k])} is negative; ids are unsigned 64-bit integers"
            )
    return np.ascontiguousarray(array, dtype=np.uint64)


def _floats(value: npt.ArrayLike, name: str) -> npt.NDArray[np.float32]:
    """``value`` (any real dtype: float, integer, bool) as contiguous float32, converted as
    ``train`` converts float64 (round to nearest; beyond the float32 range: inf)."""
    array = np.asarray(value)
    if array.ndim != 1 or (array.dtype.kind not in "biuf" and array.size):
        raise TypeError(
            f"{name} must be a 1-D array of float32 or float64, got {_describe(array)}; "
            f"pass np.asarray({name}, dtype=np.float32)"
        )
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(array, dtype=np.float32)


def _times(value: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Event times as contiguous int64 seconds: an integer array (no floats, as ``train``)
    within +-1e11 s (beyond are milliseconds or nanoseconds)."""
    array = np.asarray(value)
    if array.ndim != 1 or (array.dtype.kind not in "iu" and array.size):
        raise TypeError(
            f"timestamps must be a 1-D array of int64 event times (seconds), got "
            f"{_describe(array)}; pass np.asarray(timestamps, dtype=np.int64)"
        )
    if array.size:
        outside = np.flatnonzero((array > _MAX_SECONDS) | (array < -_MAX_SECONDS))
        if outside.size:
            k = int(outside[0])
            raise EmbcoreError(
                f"timestamps[{k}] = {int(array[k])} is not a time in seconds; {_TIME_REMEDY}"
            )
    return np.ascontiguousarray(array, dtype=np.int64)


def _time_point(value: Any, name: str) -> int:
    """One event time (``advance``/``flush``) as whole seconds within +-1e11."""
    if isinstance(value, float | np.floating) and not math.isfinite(value):
        raise EmbcoreError(f"{name} = {value} is not a time; {_TIME_REMEDY}")
    t = int(value)
    if not -_MAX_SECONDS <= t <= _MAX_SECONDS:
        raise EmbcoreError(f"{name} = {t} is not a time in seconds; {_TIME_REMEDY}")
    return t


def _check_range(
    values: npt.NDArray[np.float32], name: str, low: float, high: float, allowed: str
) -> None:
    """Raise naming the first value of ``values`` that is not finite or outside [low, high]."""
    bad = np.flatnonzero(~(np.isfinite(values) & (values >= low) & (values <= high)))
    if bad.size:
        k = int(bad[0])
        problem = allowed if np.isfinite(values[k]) else f"{name} must be finite; {allowed}"
        # float32's shortest round-trip text, "2" rather than "2.0".
        text = str(np.float32(values[k])).removesuffix(".0")
        raise EmbcoreError(f"{name}[{k}] = {text}; {problem}")


def _describe(array: np.ndarray) -> str:
    return f"a {array.ndim}-D array of dtype {array.dtype}"


def _unknown_id(table: EmbeddingTable) -> int:
    """An id absent from ``table`` (2**64 - 1 unless that one is taken)."""
    probe = _NO_USER
    while probe in table:
        probe -= 1
    return probe


def _field_serving_scores(
    model: FieldModel,
    request: Mapping[str, npt.NDArray[np.uint64]],
    candidate: Mapping[str, npt.NDArray[np.uint64]],
) -> npt.NDArray[np.float32]:
    """Request x candidate scores of a field model (module docstring): the cross-side
    interactions as matmuls plus the per-candidate constant from ``model.score``."""
    fields = list(model.fields)
    both = sorted(set(request) & set(candidate))
    if both:
        raise EmbcoreError(f"field(s) {both} given on both the request and the candidate side")
    # Columns of fields the model does not have are ignored (as consume(context=) does), so
    # one world feeds MF and field models alike.
    request = {f: c for f, c in request.items() if f in fields}
    candidate = {f: c for f, c in candidate.items() if f in fields}
    missing = [f for f in fields if f not in request and f not in candidate]
    if missing:
        raise EmbcoreError(
            f"serving needs every model field on one side; {missing} missing: pass them in "
            "request_fields= (one id per request) or candidate_fields= (one per pool item)"
        )
    n_req = {c.size for c in request.values()}
    n_cand = {c.size for c in candidate.values()}
    if len(n_req) > 1 or len(n_cand) > 1:
        raise EmbcoreError(
            "request columns need one id per request and candidate columns one per pool item, "
            f"got request lengths {sorted(n_req)} and candidate lengths {sorted(n_cand)}"
        )
    r, p = n_req.pop(), n_cand.pop()
    scores = np.zeros((r, p), dtype=np.float32)
    if r == 0 or p == 0:
        return scores
    rows = {
        f: model.table(f).get(ids, default=0.0) for f, ids in (*request.items(), *candidate.items())
    }
    if model.interaction == "field_aware":
        d = model.dim
        index = {f: k for k, f in enumerate(fields)}

        def block(own: str, other: str) -> slice:
            i, j = index[own], index[other]
            b = j - int(j > i)
            return slice(b * d, (b + 1) * d)

        # All |R| x |C| block products as one matmul over the concatenated blocks.
        pairs = [(fr, fc) for fr in request for fc in candidate]
        left = np.concatenate([rows[fr][:, block(fr, fc)] for fr, fc in pairs], axis=1)
        right = np.concatenate([rows[fc][:, block(fc, fr)] for fr, fc in pairs], axis=1)
        scores += left @ right.T
    else:
        request_sum = sum(rows[f] for f in request)
        candidate_sum = sum(rows[f] for f in candidate)
        scores += np.asarray(request_sum @ np.asarray(candidate_sum).T, dtype=np.float32)
    # Per-candidate constant: global bias + candidate biases + candidate-candidate terms,
    # scored with request ids the model has never seen (zero rows, zero biases).
    probe_columns = dict(candidate)
    for f in request:
        probe_columns[f] = np.full(p, _unknown_id(model.table(f)), dtype=np.uint64)
    scores += model.score_columns({f: probe_columns[f] for f in fields})[None, :]
    return scores
