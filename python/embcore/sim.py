"""A short-video platform simulator with ground-truth engagement and a closed feedback loop.

Fresh items arrive continuously (a Poisson process), each from a creator whose upload share follows
a Zipf law, with a latent topic vector, a quality and a duration; users with latent tastes and
heavy-tailed activity send requests; a recommender (the caller) scores the live candidate pool and
the world shows each request ``k`` items, mostly the caller's top-scored ones plus a share of
uniformly random fresh items, and samples clicks and successful plays from ground truth.

Event time is int64 seconds. Item and user ids are uint64 and equal to their index in the world
(item ids increase with arrival time). Every event also carries the categorical fields of the
paper's field-aware model (:data:`FIELDS`): the item's creator, its tag and the request's hour of
day, as uint64 ids (:meth:`Events.columns`; candidates: :meth:`World.candidate_fields`).

Design notes
------------
Common random numbers. Everything a step contains (arrivals, users, request times, pool) is drawn
from generators keyed by ``(seed, step index)``, so ``World(cfg, seed)`` is the same world for
every caller, ``world.steps()`` can be iterated any number of times and ``world.step(i)`` is random
access. :meth:`World.serve` draws nothing from a stateful generator: every coin is a counter-based
hash (splitmix64) of ``(seed, purpose, request id, item id)``, so it is a pure function of
``(step, scores)``, and two recommenders that show the same item to the same request see the same
click and play coins. Exploration (how many slots, which slots, which fresh items) hashes only
``(seed, request id)`` and the item ids, never the scores, so it is identical for every mode.
Each step lists its pool in a random order keyed by ``(seed, step index)``, so exact ties in
the scores (0 for every id a mode does not know yet) fall on random items, not on the oldest or
the newest ones, at no cost in :meth:`World.serve`.

Calibration. Durations, the creator Zipf exponent, the creators' audience sizes, the topic (tag)
mix and the users' activity classes come from KuaiRand-Pure (see :mod:`embcore._calibration` and
docs/simulator.md); the engagement model's coefficients are assumptions, set so that random
serving has a click rate of a few percent and good serving several times that.

>>> from embcore.sim import SimConfig, World
>>> world = World(SimConfig.for_scale("tiny"), seed=0)
>>> step = world.step(10)
>>> scores = world.oracle_scores(step)
>>> events = world.serve(step, scores)
>>> len(events) == len(step.users) * world.config.k
True
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from embcore import _calibration

__all__ = [
    "FIELDS",
    "REFERENCE_POLICIES",
    "Events",
    "ItemInfo",
    "ItemTruth",
    "SimConfig",
    "Step",
    "UserTruth",
    "World",
    "hour_of_day",
    "tag_ids",
]

FIELDS: tuple[str, ...] = ("user", "item", "creator", "tag", "hour")
"""The categorical fields the simulator emits per event (for FFM/FM; MF uses user and item).
``user`` and ``hour`` belong to the request, ``item``, ``creator`` and ``tag`` to the candidate."""

REFERENCE_POLICIES: tuple[str, ...] = ("random", "non_personalised", "oracle")
"""The reference policies of :meth:`World.reference_scores`: uniformly random scores, a
non-personalised oracle (true item quality and age, not the user) and the full oracle (true
click log-odds of every request and item)."""

REQUEST_FIELDS: tuple[str, ...] = ("user", "hour")
CANDIDATE_FIELDS: tuple[str, ...] = ("item", "creator", "tag")

DAY_SECONDS = 86_400
HOUR_SECONDS = 3_600
# Requests peak at 20:00 event time when diurnal_amplitude > 0.
_DIURNAL_PEAK_SECONDS = 20 * HOUR_SECONDS

# Stream / purpose tags: distinct constants keep the hashed and seeded streams independent.
_STREAM_WORLD = 1
_STREAM_STEP = 2
_STREAM_LIFETIME = 3
_PURPOSE_ITEM = 0x4954454D
_PURPOSE_N_EXPLORE = 0x4E455850
_PURPOSE_EXPLORE_PICK = 0x50494B58
_PURPOSE_EXPLORE_SLOT = 0x534C4F54
_PURPOSE_CLICK = 0x434C4943
_PURPOSE_PLAY = 0x504C4159
_PURPOSE_RANDOM_POLICY = 0x52414E44

_U64 = npt.NDArray[np.uint64]
_I64 = npt.NDArray[np.int64]
_F32 = npt.NDArray[np.float32]
_F64 = npt.NDArray[np.float64]
_BOOL = npt.NDArray[np.bool_]


# --------------------------------------------------------------------------------------------
# Counter-based hashing


def _splitmix64(values: _U64) -> _U64:
    """Splitmix64 finaliser applied elementwise (uint64 arithmetic wraps, as intended)."""
    z = np.asarray(values, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def _to_unit(hashes: _U64) -> _F64:
    """Map uint64 hashes to floats uniform on [0, 1) (53 random bits)."""
    return (hashes >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _keyed(seed: int, purpose: int, counters: _U64) -> _U64:
    """Hash ``counters`` under the key ``(seed, purpose)``."""
    key = _splitmix64(np.array([seed, purpose], dtype=np.uint64))
    mixed = _splitmix64(np.asarray(counters, dtype=np.uint64) ^ key[0])
    return _splitmix64(mixed ^ key[1])


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class SimConfig:
    """Configuration of a simulated short-video platform; every field is validated.

    Defaults are the ``"default"`` scale; :meth:`for_scale` gives the other presets.

    Parameters
    ----------
    horizon_seconds : int
        Event time simulated, from t = 0; a whole number of steps (rounded up).
    step_seconds : int
        Event time covered by one :class:`Step`.
    n_users : int
        Number of users.
    requests_per_day : float
        Mean number of feed requests per day over all users.
    diurnal_amplitude : float
        Relative amplitude of the daily request cycle (peak at 20:00), in [0, 1).
    items_per_day : float
        Poisson arrival rate of fresh items (ShareChat gets about 2M a day; 2,000 is 1/1000).
    max_item_age_seconds : int
        Items leave the candidate pool at this age; bounds the pool size.
    fresh_seconds : int
        Items younger than this are *fresh*: flagged in :class:`Events` and eligible for
        exploration.
    k : int
        Items shown per request (fewer only if the pool is smaller).
    exploration : float
        Share of the ``k`` slots filled with uniformly random fresh items, in [0, 1).
    n_creators : int
        Number of creators.
    creator_zipf_exponent : float
        Zipf exponent s of the creators' upload shares, p(rank) ~ rank^-s (KuaiRand-Pure: 0.40).
    creator_popularity_weight : float
        Weight of the creator's standardised log audience (KuaiRand-Pure fans quantiles, largest
        for the top-ranked creator) in item quality.
    latent_dim : int
        Dimension of the ground-truth taste and topic vectors.
    topic_noise : float
        Spread of an item's topic around its tag's centroid (before normalisation).
    taste_noise : float
        Spread of a user's taste around the mean of their favourite tags' centroids.
    taste_weight : float
        Click log-odds per unit of taste . topic (both unit vectors).
    quality_std : float
        Standard deviation of the item-level quality term (click log-odds).
    click_intercept : float
        Click log-odds of a zero-affinity, average-quality, brand-new item in the top slot.
    age_half_life_seconds : int
        The click odds of an item halve each time its age grows by this much.
    position_decay : float
        Click log-odds lost per unit of ``log(1 + position)``.
    play_intercept : float
        Log-odds of a successful play given a click, at median duration and zero affinity.
    play_taste_weight : float
        Play log-odds per unit of taste . topic.
    play_quality_weight : float
        Play log-odds per unit of item quality.
    play_duration_weight : float
        Play log-odds lost per unit of ``log(duration / median duration)``: short videos
        complete more often.
    activity_sigma : float
        Log-normal spread of user activity within an activity class.
    item_lifetime_seconds : int or None
        Median item lifetime: how long after its arrival an item stays in the candidate pool,
        i.e. keeps receiving views. None (default): ``max_item_age_seconds`` for every item
        (the world before this knob). Each item's lifetime is
        ``min(item_lifetime_seconds * exp(item_lifetime_sigma * z), max_item_age_seconds)``
        with z standard normal, drawn from its own stream (the rest of the world is the same
        whatever the lifetimes).
    item_lifetime_sigma : float
        Log-normal spread of item lifetimes around the median (0: every item the same).

    Examples
    --------
    >>> cfg = SimConfig.for_scale("small", exploration=0.2)
    >>> cfg.k, cfg.exploration
    (10, 0.2)
    >>> SimConfig(k=0)
    Traceback (most recent call last):
    ...
    ValueError: SimConfig.k must be an integer >= 1, got 0
    """

    horizon_seconds: int = 5 * DAY_SECONDS
    step_seconds: int = 300
    n_users: int = 20_000
    requests_per_day: float = 75_000.0
    diurnal_amplitude: float = 0.3
    items_per_day: float = 2_000.0
    max_item_age_seconds: int = 2 * DAY_SECONDS
    fresh_seconds: int = 6 * HOUR_SECONDS
    k: int = 10
    exploration: float = 0.1
    n_creators: int = 2_000
    creator_zipf_exponent: float = _calibration.CREATOR_ZIPF_EXPONENT
    creator_popularity_weight: float = 0.3
    latent_dim: int = 16
    topic_noise: float = 0.6
    taste_noise: float = 0.6
    taste_weight: float = 3.0
    quality_std: float = 0.7
    click_intercept: float = -3.0
    age_half_life_seconds: int = 12 * HOUR_SECONDS
    position_decay: float = 0.3
    play_intercept: float = -0.2
    play_taste_weight: float = 1.0
    play_quality_weight: float = 0.5
    play_duration_weight: float = 0.8
    activity_sigma: float = 1.0
    item_lifetime_seconds: int | None = None
    item_lifetime_sigma: float = 0.0

    def __post_init__(self) -> None:
        for name, (kind, low, low_open, high, high_open) in _RANGES.items():
            _check_field(name, getattr(self, name), kind, low, low_open, high, high_open)

    @classmethod
    def for_scale(cls, scale: str, **overrides: Any) -> SimConfig:
        """Return a preset: ``"tiny"`` (~20k events), ``"small"`` (~300k), ``"default"`` (~3.8M)
        or ``"large"`` (~54M), with any field overridden by keyword.

        >>> SimConfig.for_scale("tiny").horizon_seconds
        21600
        """
        if scale not in _SCALES:
            raise ValueError(f"scale must be one of {sorted(_SCALES)}, got {scale!r}")
        unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown SimConfig fields {unknown}")
        return replace(cls(), **{**_SCALES[scale], **overrides})

    @property
    def n_steps(self) -> int:
        """Number of steps covering the horizon."""
        return -(-self.horizon_seconds // self.step_seconds)

    def to_dict(self) -> dict[str, Any]:
        """Every field, by name (JSON-ready): the world's configuration as reported.

        >>> SimConfig.for_scale("tiny").to_dict()["item_lifetime_seconds"] is None
        True
        """
        return asdict(self)

    @property
    def expected_events(self) -> float:
        """Expected impressions per mode (requests x k, ignoring pools smaller than k)."""
        return self.requests_per_day * self.horizon_seconds / DAY_SECONDS * self.k


# kind, low, low exclusive, high, high exclusive
_RANGES: dict[str, tuple[str, float, bool, float, bool]] = {
    "horizon_seconds": ("int", 1, False, math.inf, False),
    "step_seconds": ("int", 1, False, math.inf, False),
    "n_users": ("int", 1, False, math.inf, False),
    "requests_per_day": ("float", 0.0, False, math.inf, True),
    "diurnal_amplitude": ("float", 0.0, False, 1.0, True),
    "items_per_day": ("float", 0.0, False, math.inf, True),
    "max_item_age_seconds": ("int", 1, False, math.inf, False),
    "fresh_seconds": ("int", 1, False, math.inf, False),
    "k": ("int", 1, False, math.inf, False),
    "exploration": ("float", 0.0, False, 1.0, True),
    "n_creators": ("int", 1, False, math.inf, False),
    "creator_zipf_exponent": ("float", 0.0, False, math.inf, True),
    "creator_popularity_weight": ("float", -math.inf, True, math.inf, True),
    "latent_dim": ("int", 1, False, math.inf, False),
    "topic_noise": ("float", 0.0, False, math.inf, True),
    "taste_noise": ("float", 0.0, False, math.inf, True),
    "taste_weight": ("float", 0.0, False, math.inf, True),
    "quality_std": ("float", 0.0, False, math.inf, True),
    "click_intercept": ("float", -math.inf, True, math.inf, True),
    "age_half_life_seconds": ("int", 1, False, math.inf, False),
    "position_decay": ("float", 0.0, False, math.inf, True),
    "play_intercept": ("float", -math.inf, True, math.inf, True),
    "play_taste_weight": ("float", -math.inf, True, math.inf, True),
    "play_quality_weight": ("float", -math.inf, True, math.inf, True),
    "play_duration_weight": ("float", 0.0, False, math.inf, True),
    "activity_sigma": ("float", 0.0, False, math.inf, True),
    "item_lifetime_seconds": ("int?", 1, False, math.inf, False),
    "item_lifetime_sigma": ("float", 0.0, False, math.inf, True),
}

_SCALES: dict[str, dict[str, Any]] = {
    "tiny": {
        "horizon_seconds": 6 * HOUR_SECONDS,
        "n_users": 500,
        "requests_per_day": 8_000.0,
        "items_per_day": 2_000.0,
        "max_item_age_seconds": 6 * HOUR_SECONDS,
        "fresh_seconds": HOUR_SECONDS,
        "n_creators": 200,
    },
    "small": {
        "horizon_seconds": DAY_SECONDS,
        "n_users": 5_000,
        "requests_per_day": 30_000.0,
        "items_per_day": 2_000.0,
        "max_item_age_seconds": DAY_SECONDS,
        "fresh_seconds": 6 * HOUR_SECONDS,
        "n_creators": 1_000,
    },
    "default": {},
    "large": {
        "horizon_seconds": 30 * DAY_SECONDS,
        "n_users": 500_000,
        "requests_per_day": 180_000.0,
        "items_per_day": 6_000.0,
        "n_creators": 20_000,
    },
}


def _range_text(kind: str, low: float, low_open: bool, high: float, high_open: bool) -> str:
    noun = "an integer" if kind == "int" else "a finite number"
    if math.isinf(low) and math.isinf(high):
        return noun
    if math.isinf(high):
        return f"{noun} {'>' if low_open else '>='} {low:g}"
    return f"{noun} in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def _check_field(
    name: str, value: Any, kind: str, low: float, low_open: bool, high: float, high_open: bool
) -> None:
    if kind == "int?":
        if value is None:
            return
        kind = "int"
    allowed = _range_text(kind, low, low_open, high, high_open)
    if name == "item_lifetime_seconds":
        allowed += " or None"
    problem = f"SimConfig.{name} must be {allowed}, got {value!r}"
    if isinstance(value, bool):
        raise ValueError(problem)
    if kind == "int":
        if not isinstance(value, int | np.integer):
            raise ValueError(problem)
    elif not isinstance(value, int | float | np.integer | np.floating) or not math.isfinite(
        float(value)
    ):
        raise ValueError(problem)
    number = float(value)
    too_low = number <= low if low_open else number < low
    too_high = number >= high if high_open else number > high
    if too_low or too_high:
        raise ValueError(problem)


# --------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, eq=False)
class Step:
    """One step of event time ``[t_start, t_end)``: arrivals, requests and the candidate pool.

    Attributes
    ----------
    index : int
        Step number, from 0.
    t_start, t_end : int
        Event-time bounds in seconds.
    new_items : numpy.ndarray of uint64
        Items that arrived during the step (step 0 also lists the backlog: items that arrived
        before t = 0 and are already in its pool). They join the pool from the next step on.
    users : numpy.ndarray of uint64, shape (R,)
        User of each request, in request-time order.
    request_times : numpy.ndarray of int64, shape (R,)
        Event time of each request.
    request_ids : numpy.ndarray of uint64, shape (R,)
        Global, world-unique request numbers (the counters of the click and play coins).
    pool : numpy.ndarray of uint64, shape (P,)
        Live candidates: items that arrived in ``[t_start - max_item_age_seconds, t_start)``
        and whose lifetime has not ended (``arrival + lifetime >= t_start``:
        :meth:`World.item_end_times`), in a random order (the tie-break order of the step;
        sort it if you need id order).
    """

    index: int
    t_start: int
    t_end: int
    new_items: _U64
    users: _U64
    request_times: _I64
    request_ids: _U64
    pool: _U64


@dataclass(frozen=True, eq=False)
class Events:
    """Impressions, one row per (request, shown item), request-major in position order.

    Attributes
    ----------
    users, items : numpy.ndarray of uint64
    click : numpy.ndarray of float32
        1.0 if the user clicked (the training label), else 0.0.
    play : numpy.ndarray of float32
        1.0 for a successful play (implies a click), else 0.0.
    timestamps : numpy.ndarray of int64
        Request time, seconds.
    item_age : numpy.ndarray of int64
        Seconds since the item arrived, at the request time.
    fresh : numpy.ndarray of bool
        ``item_age < fresh_seconds``.
    explored : numpy.ndarray of bool
        The slot was filled by exploration rather than by the caller's scores.
    position : numpy.ndarray of int32
        Slot in the feed, 0 = top.
    creators : numpy.ndarray of uint64
        The item's creator id.
    tags : numpy.ndarray of uint64
        The item's tag id (:func:`tag_ids`: KuaiRand tag + 1, 0 = untagged).
    hours : numpy.ndarray of uint64
        Hour of day of the request, 0-23 (:func:`hour_of_day`).

    Examples
    --------
    >>> both = Events.concat([Events.empty(), Events.empty()])
    >>> len(both)
    0
    >>> sorted(both.columns())
    ['creator', 'hour', 'item', 'tag', 'user']
    """

    users: _U64
    items: _U64
    click: _F32
    play: _F32
    timestamps: _I64
    item_age: _I64
    fresh: _BOOL
    explored: _BOOL
    position: npt.NDArray[np.int32]
    creators: _U64
    tags: _U64
    hours: _U64

    def __post_init__(self) -> None:
        lengths = {f.name: len(getattr(self, f.name)) for f in fields(self)}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"Events columns must have equal lengths, got {lengths}")

    def __len__(self) -> int:
        return len(self.users)

    def columns(self, fields: Sequence[str] = FIELDS) -> dict[str, _U64]:
        """The categorical id columns of the events, by field name (see :data:`FIELDS`).

        Parameters
        ----------
        fields : sequence of str
            Any of ``"user"``, ``"item"``, ``"creator"``, ``"tag"``, ``"hour"``.

        Raises
        ------
        ValueError
            An unknown field name.
        """
        source = {
            "user": self.users,
            "item": self.items,
            "creator": self.creators,
            "tag": self.tags,
            "hour": self.hours,
        }
        unknown = [f for f in fields if f not in source]
        if unknown:
            raise ValueError(
                f"the simulator has no field(s) {unknown}; it emits {', '.join(FIELDS)}"
            )
        return {f: source[f] for f in fields}

    @classmethod
    def empty(cls) -> Events:
        """Events with no rows (and the right dtypes)."""
        return cls(**{name: np.empty(0, dtype=dtype) for name, dtype in _EVENT_DTYPES.items()})

    @classmethod
    def concat(cls, parts: Sequence[Events]) -> Events:
        """Concatenate events row-wise, in the given order."""
        if not parts:
            return cls.empty()
        return cls(
            **{
                name: np.concatenate([getattr(part, name) for part in parts]).astype(
                    dtype, copy=False
                )
                for name, dtype in _EVENT_DTYPES.items()
            }
        )


_EVENT_DTYPES: dict[str, type[np.generic]] = {
    "users": np.uint64,
    "items": np.uint64,
    "click": np.float32,
    "play": np.float32,
    "timestamps": np.int64,
    "item_age": np.int64,
    "fresh": np.bool_,
    "explored": np.bool_,
    "position": np.int32,
    "creators": np.uint64,
    "tags": np.uint64,
    "hours": np.uint64,
}


class ItemTruth(NamedTuple):
    """Ground truth of items: unit topic vectors and quality (click log-odds)."""

    topic: _F32
    quality: _F32


class UserTruth(NamedTuple):
    """Ground truth of users: unit taste vectors, activity weight and activity class name."""

    taste: _F32
    activity: _F64
    activity_class: npt.NDArray[np.str_]


class ItemInfo(NamedTuple):
    """Observable item metadata."""

    arrival_time: _I64
    creator: _U64
    duration_seconds: _F32
    tag: npt.NDArray[np.int32]


# --------------------------------------------------------------------------------------------
# The world


class World:
    """A seeded simulated platform: step it with :meth:`steps`, serve with :meth:`serve`.

    The world is generated once at construction (items, creators, users, request counts), in
    O(items + users) memory; each step's requests are drawn on demand from ``(seed, step)``.
    :meth:`steps` is re-iterable and deterministic, so several modes can be driven side by side
    from one iteration, calling :meth:`serve` once per mode per step.

    Parameters
    ----------
    config : SimConfig
    seed : int
        Any integer in [0, 2**63).

    Examples
    --------
    >>> import numpy as np
    >>> world = World(SimConfig.for_scale("tiny"), seed=1)
    >>> rng = np.random.default_rng(0)
    >>> total = 0
    >>> for step in world.steps():
    ...     scores = rng.random((len(step.users), len(step.pool)), dtype=np.float32)
    ...     total += len(world.serve(step, scores))
    >>> total > 15_000
    True
    """

    def __init__(self, config: SimConfig, seed: int = 0) -> None:
        if not isinstance(config, SimConfig):
            raise TypeError(f"config must be a SimConfig, got {type(config).__name__}")
        if (
            isinstance(seed, bool)
            or not isinstance(seed, int | np.integer)
            or not (0 <= int(seed) < 2**63)
        ):
            raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
        self.config = config
        self.seed = int(seed)
        cfg = config
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _STREAM_WORLD]))
        d = cfg.latent_dim

        # Topics: one random unit centroid per calibrated tag.
        tag_values = np.array([tag for tag, _ in _calibration.TAG_SHARES], dtype=np.int32)
        tag_shares = np.array([share for _, share in _calibration.TAG_SHARES])
        tag_shares /= tag_shares.sum()
        centroids = _unit_rows(rng.standard_normal((tag_values.size, d)))

        # Creators: Zipf upload shares; audience from the KuaiRand fans quantiles, by rank.
        ranks = np.arange(1, cfg.n_creators + 1, dtype=np.float64)
        upload_share = ranks ** (-cfg.creator_zipf_exponent)
        self._creator_upload_share: _F64 = upload_share / upload_share.sum()
        log_fans = np.interp(
            1.0 - (ranks - 0.5) / cfg.n_creators,
            _calibration.AUTHOR_LOG10_FANS_LEVELS,
            _calibration.AUTHOR_LOG10_FANS_QUANTILES,
        )
        spread = log_fans.std()
        creator_effect = cfg.creator_popularity_weight * (
            (log_fans - log_fans.mean()) / spread if spread > 0 else np.zeros_like(log_fans)
        )

        # Items: a homogeneous Poisson process over [-max_item_age, horizon), so the pool is
        # already in steady state at t = 0.
        t_first = -cfg.max_item_age_seconds
        t_last = cfg.n_steps * cfg.step_seconds
        n_items = int(rng.poisson(cfg.items_per_day / DAY_SECONDS * (t_last - t_first)))
        self._item_arrival: _I64 = np.sort(rng.integers(t_first, t_last, n_items, dtype=np.int64))
        self._item_creator: _I64 = rng.choice(
            cfg.n_creators, size=n_items, p=self._creator_upload_share
        ).astype(np.int64)
        tag_index = rng.choice(tag_values.size, size=n_items, p=tag_shares)
        self._item_tag: npt.NDArray[np.int32] = tag_values[tag_index]
        self._item_topic: _F32 = _unit_rows(
            centroids[tag_index]
            + cfg.topic_noise / math.sqrt(d) * rng.standard_normal((n_items, d))
        ).astype(np.float32)
        self._item_quality: _F32 = (
            cfg.quality_std * rng.standard_normal(n_items) + creator_effect[self._item_creator]
        ).astype(np.float32)
        log_duration_quantiles = np.log(_calibration.DURATION_QUANTILES_SECONDS)
        self._item_duration: _F32 = np.exp(
            np.interp(
                rng.random(n_items), _calibration.DURATION_QUANTILE_LEVELS, log_duration_quantiles
            )
        ).astype(np.float32)
        median_duration = float(
            np.exp(np.interp(0.5, _calibration.DURATION_QUANTILE_LEVELS, log_duration_quantiles))
        )
        self._item_log_duration_ratio: _F32 = np.log(self._item_duration / median_duration).astype(
            np.float32
        )
        self._item_hash: _U64 = _keyed(
            self.seed, _PURPOSE_ITEM, np.arange(n_items, dtype=np.uint64)
        )

        # Users: calibrated activity classes x assumed multipliers x log-normal spread; tastes
        # mix two favourite tags (drawn from the tag mix) plus noise.
        classes = _calibration.USER_ACTIVITY_CLASSES
        class_share = np.array([share for _, share, _ in classes])
        class_share /= class_share.sum()
        class_multiplier = np.array([multiplier for _, _, multiplier in classes])
        self._activity_class_names = np.array([name for name, _, _ in classes])
        self._user_class = rng.choice(len(classes), size=cfg.n_users, p=class_share)
        sigma = cfg.activity_sigma
        self._user_activity: _F64 = class_multiplier[self._user_class] * rng.lognormal(
            -0.5 * sigma * sigma, sigma, cfg.n_users
        )
        self._user_activity_cdf: _F64 = np.cumsum(self._user_activity)
        favourites = rng.choice(tag_values.size, size=(cfg.n_users, 2), p=tag_shares)
        self._user_taste: _F32 = _unit_rows(
            centroids[favourites].sum(axis=1)
            + cfg.taste_noise / math.sqrt(d) * rng.standard_normal((cfg.n_users, d))
        ).astype(np.float32)

        # Lifetimes: from their own stream, so every other draw above is the same whatever
        # the lifetime knobs (and the default world is the one before them).
        self._item_lifetime: _I64 = _lifetimes(cfg, self.seed, n_items)

        # Requests: Poisson counts per step under the diurnal cycle.
        starts = np.arange(cfg.n_steps, dtype=np.int64) * cfg.step_seconds
        self._expected_requests: _F64 = _expected_requests(cfg, starts, starts + cfg.step_seconds)
        counts = rng.poisson(self._expected_requests)
        self._request_offsets: _I64 = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    # -- sizes ---------------------------------------------------------------------------------

    @property
    def n_steps(self) -> int:
        """Number of steps in the horizon."""
        return self.config.n_steps

    @property
    def n_items(self) -> int:
        """Items in the world, including the backlog that arrived before t = 0."""
        return int(self._item_arrival.size)

    @property
    def n_users(self) -> int:
        """Users in the world."""
        return self.config.n_users

    @property
    def n_requests(self) -> int:
        """Requests over the whole horizon."""
        return int(self._request_offsets[-1])

    @property
    def expected_requests_per_step(self) -> _F64:
        """Poisson mean of the request count of each step (diurnal cycle included)."""
        return self._expected_requests.copy()

    # -- stepping ------------------------------------------------------------------------------

    def steps(self) -> Iterator[Step]:
        """Iterate over all steps in order; each call starts afresh and yields the same steps."""
        for index in range(self.n_steps):
            yield self.step(index)

    def step(self, index: int) -> Step:
        """Return step ``index`` (random access; identical to the one :meth:`steps` yields)."""
        cfg = self.config
        if not 0 <= index < self.n_steps:
            raise IndexError(f"step index {index} is out of range [0, {self.n_steps})")
        t_start = index * cfg.step_seconds
        t_end = t_start + cfg.step_seconds
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _STREAM_STEP, index]))
        first_request, end_request = self._request_offsets[index : index + 2]
        n_requests = int(end_request - first_request)
        draws = rng.random(n_requests) * self._user_activity_cdf[-1]
        users = np.minimum(
            np.searchsorted(self._user_activity_cdf, draws, side="right"), cfg.n_users - 1
        ).astype(np.uint64)
        request_times = t_start + np.sort(rng.integers(0, cfg.step_seconds, n_requests))
        arrival = self._item_arrival
        new_lo = 0 if index == 0 else int(np.searchsorted(arrival, t_start, side="left"))
        new_hi = int(np.searchsorted(arrival, t_end, side="left"))
        pool_lo = int(np.searchsorted(arrival, t_start - cfg.max_item_age_seconds, side="left"))
        pool_hi = int(np.searchsorted(arrival, t_start, side="left"))
        pool = pool_lo + rng.permutation(pool_hi - pool_lo)
        if cfg.item_lifetime_seconds is not None:
            # Items whose lifetime ended leave the pool (the order of the rest is kept).
            pool = pool[arrival[pool] + self._item_lifetime[pool] >= t_start]
        return Step(
            index=index,
            t_start=t_start,
            t_end=t_end,
            new_items=np.arange(new_lo, new_hi, dtype=np.uint64),
            users=users,
            request_times=request_times.astype(np.int64),
            request_ids=np.arange(first_request, end_request, dtype=np.uint64),
            pool=pool.astype(np.uint64),
        )

    # -- serving -------------------------------------------------------------------------------

    def serve(self, step: Step, scores: npt.ArrayLike) -> Events:
        """Show each request of ``step`` its feed and sample engagement from ground truth.

        A pure function of ``(step, scores)``: the same scores give identical events, and the
        click and play coins of a (request, item) pair do not depend on the scores.

        Parameters
        ----------
        step : Step
            A step of this world.
        scores : array_like of float32, shape (len(step.users), len(step.pool))
            The caller's serving scores of every pool item for every request (higher is
            better; NaN counts as the lowest score).

        Returns
        -------
        Events
            ``min(k, P)`` impressions per request: ``(1 - exploration)`` of the slots (in
            expectation) hold the caller's top-scored items, the rest uniformly random items
            still fresh at the request time, at hashed random positions.

        Examples
        --------
        >>> import numpy as np
        >>> world = World(SimConfig.for_scale("tiny"), seed=0)
        >>> step = world.step(3)
        >>> scores = np.zeros((len(step.users), len(step.pool)), dtype=np.float32)
        >>> a, b = world.serve(step, scores), world.serve(step, scores)
        >>> bool(np.array_equal(a.click, b.click))
        True
        """
        cfg = self.config
        n_requests, n_pool = len(step.users), len(step.pool)
        matrix = np.asarray(scores)
        if matrix.shape != (n_requests, n_pool):
            raise ValueError(
                f"scores has shape {matrix.shape} but step {step.index} has {n_requests} "
                f"requests and {n_pool} pool items: pass an array of shape "
                f"({n_requests}, {n_pool})"
            )
        if not (
            np.issubdtype(matrix.dtype, np.floating) or np.issubdtype(matrix.dtype, np.integer)
        ):
            raise ValueError(f"scores must be real numbers, got dtype {matrix.dtype}")
        if n_requests == 0 or n_pool == 0:
            return Events.empty()
        k = min(cfg.k, n_pool)
        pool = step.pool.astype(np.int64)
        if pool.max() >= self.n_items:
            raise ValueError(f"step {step.index} does not belong to this world")
        arrival = self._item_arrival[pool]
        request_ids = step.request_ids

        # Exploration: slot count, fresh items and slots, all hashed from (seed, request).
        target = cfg.exploration * k
        n_explore = np.floor(target) + (
            _to_unit(_keyed(self.seed, _PURPOSE_N_EXPLORE, request_ids))
            < target - math.floor(target)
        )
        n_explore = n_explore.astype(np.int64)
        fresh_columns = np.flatnonzero(arrival > step.t_start - cfg.fresh_seconds)
        fresh_columns = fresh_columns[np.argsort(arrival[fresh_columns], kind="stable")]
        n_fresh = fresh_columns.size
        first_fresh = np.searchsorted(
            arrival[fresh_columns], step.request_times - cfg.fresh_seconds, side="right"
        )
        n_explore = np.minimum(n_explore, n_fresh - first_fresh)
        most_explored = int(n_explore.max())
        explore_valid = np.arange(most_explored)[None, :] < n_explore[:, None]
        explore_columns = np.zeros((n_requests, most_explored), dtype=np.int64)
        if most_explored > 0:
            pick_keys = _splitmix64(
                _keyed(self.seed, _PURPOSE_EXPLORE_PICK, request_ids)[:, None]
                ^ self._item_hash[pool[fresh_columns]][None, :]
            )
            pick_keys[np.arange(n_fresh)[None, :] < first_fresh[:, None]] = np.iinfo(np.uint64).max
            if most_explored < n_fresh:
                chosen = np.argpartition(pick_keys, most_explored - 1, axis=1)[:, :most_explored]
            else:
                chosen = np.broadcast_to(np.arange(n_fresh), pick_keys.shape)
            order = np.argsort(np.take_along_axis(pick_keys, chosen, axis=1), axis=1)
            explore_columns = fresh_columns[np.take_along_axis(chosen, order, axis=1)]

        # Exploitation: the caller's top scores over the rest of the pool.
        ranked = np.array(matrix, dtype=np.float32, copy=True)
        if not np.isfinite(ranked.sum()):
            lowest, highest = float(np.finfo(np.float32).min), float(np.finfo(np.float32).max)
            np.nan_to_num(ranked, copy=False, nan=lowest, neginf=lowest, posinf=highest)
        if most_explored > 0:
            rows = np.broadcast_to(np.arange(n_requests)[:, None], explore_valid.shape)
            ranked[rows[explore_valid], explore_columns[explore_valid]] = -np.inf
        n_exploit = k - n_explore
        most_exploited = int(n_exploit.max())
        exploit_columns = np.zeros((n_requests, most_exploited), dtype=np.int64)
        if most_exploited > 0:
            if most_exploited < n_pool:
                top = np.argpartition(ranked, n_pool - most_exploited, axis=1)[:, -most_exploited:]
            else:
                top = np.broadcast_to(np.arange(n_pool), ranked.shape)
            order = np.argsort(-np.take_along_axis(ranked, top, axis=1), axis=1, kind="stable")
            exploit_columns = np.take_along_axis(top, order, axis=1)
        exploit_valid = np.arange(most_exploited)[None, :] < n_exploit[:, None]

        # Slots: exploration takes the n_explore slots with the smallest hashed keys.
        slot_keys = _splitmix64(
            _keyed(self.seed, _PURPOSE_EXPLORE_SLOT, request_ids)[:, None]
            ^ np.arange(k, dtype=np.uint64)[None, :]
        )
        slot_rank = np.argsort(np.argsort(slot_keys, axis=1), axis=1)
        explored = slot_rank < n_explore[:, None]
        shown = np.empty((n_requests, k), dtype=np.int64)
        shown[explored] = explore_columns[explore_valid]
        shown[~explored] = exploit_columns[exploit_valid]
        items = pool[shown]

        # Ground-truth engagement.
        users = step.users.astype(np.int64)
        affinity = np.einsum(
            "rd,rkd->rk", self._user_taste[users], self._item_topic[items], dtype=np.float32
        )
        item_age = step.request_times[:, None] - self._item_arrival[items]
        position = np.broadcast_to(np.arange(k, dtype=np.int32), (n_requests, k))
        quality = self._item_quality[items]
        click_logit = (
            cfg.click_intercept
            + cfg.taste_weight * affinity
            + quality
            - (math.log(2.0) / cfg.age_half_life_seconds) * item_age
            - cfg.position_decay * np.log1p(position)
        )
        play_logit = (
            cfg.play_intercept
            + cfg.play_taste_weight * affinity
            + cfg.play_quality_weight * quality
            - cfg.play_duration_weight * self._item_log_duration_ratio[items]
        )
        item_hash = self._item_hash[items]
        click_coin = _to_unit(
            _splitmix64(_keyed(self.seed, _PURPOSE_CLICK, request_ids)[:, None] ^ item_hash)
        )
        play_coin = _to_unit(
            _splitmix64(_keyed(self.seed, _PURPOSE_PLAY, request_ids)[:, None] ^ item_hash)
        )
        click = click_coin < _sigmoid(click_logit)
        play = click & (play_coin < _sigmoid(play_logit))
        return Events(
            users=np.repeat(step.users, k),
            items=items.astype(np.uint64).ravel(),
            click=click.astype(np.float32).ravel(),
            play=play.astype(np.float32).ravel(),
            timestamps=np.repeat(step.request_times, k),
            item_age=item_age.ravel(),
            fresh=(item_age < cfg.fresh_seconds).ravel(),
            explored=explored.ravel(),
            position=position.ravel(),
            creators=self._item_creator[items].astype(np.uint64).ravel(),
            tags=tag_ids(self._item_tag[items]).ravel(),
            hours=np.repeat(hour_of_day(step.request_times), k),
        )

    def request_fields(self, step: Step) -> dict[str, _U64]:
        """The request-side fields of ``step`` (user, hour), one entry per request.

        >>> world = World(SimConfig.for_scale("tiny"), seed=0)
        >>> sorted(world.request_fields(world.step(0)))
        ['hour', 'user']
        """
        return {"user": step.users, "hour": hour_of_day(step.request_times)}

    def candidate_fields(self, step: Step) -> dict[str, _U64]:
        """The candidate-side fields of ``step``'s pool (item, creator, tag), in pool order.

        >>> world = World(SimConfig.for_scale("tiny"), seed=0)
        >>> step = world.step(0)
        >>> bool((world.candidate_fields(step)["item"] == step.pool).all())
        True
        """
        pool = step.pool.astype(np.int64)
        return {
            "item": step.pool,
            "creator": self._item_creator[pool].astype(np.uint64),
            "tag": tag_ids(self._item_tag[pool]),
        }

    def oracle_scores(self, step: Step) -> _F32:
        """Ground-truth click log-odds (without the position term) of every pool item for every
        request, at the step start: the scores of a recommender that knows the world.

        >>> world = World(SimConfig.for_scale("tiny"), seed=0)
        >>> step = world.step(0)
        >>> world.oracle_scores(step).shape == (len(step.users), len(step.pool))
        True
        """
        cfg = self.config
        pool = step.pool.astype(np.int64)
        taste = self._user_taste[step.users.astype(np.int64)]
        item_term = self._item_quality[pool] - (math.log(2.0) / cfg.age_half_life_seconds) * (
            step.t_start - self._item_arrival[pool]
        )
        scores = cfg.taste_weight * (taste @ self._item_topic[pool].T) + item_term[None, :]
        return np.asarray(scores, dtype=np.float32)

    def reference_scores(self, step: Step, policy: str) -> _F32:
        """The scores a reference policy ranks ``step``'s pool with, a drop-in for a model's
        serving scores in :meth:`serve` (float32, shape ``(len(step.users), len(step.pool))``).

        ``"random"``: uniform in [0, 1), a hash of (seed, request, item), so the same for
        every caller. ``"non_personalised"``: the true item term of the click log-odds,
        ``quality - ln 2 * age / age_half_life_seconds`` at the step start, the same row for
        every request (an oracle of item quality and age that does not know the user).
        ``"oracle"``: :meth:`oracle_scores`, the true click log-odds without the position
        term. :meth:`serve` adds the same exploration to each.

        >>> world = World(SimConfig.for_scale("tiny"), seed=0)
        >>> step = world.step(5)
        >>> s = world.reference_scores(step, "non_personalised")
        >>> s.shape == (len(step.users), len(step.pool)), bool((s == s[:1]).all())
        (True, True)
        """
        if policy not in REFERENCE_POLICIES:
            raise ValueError(
                f"policy must be one of {', '.join(repr(p) for p in REFERENCE_POLICIES)}, "
                f"got {policy!r}"
            )
        pool = step.pool.astype(np.int64)
        shape = (len(step.users), len(step.pool))
        if policy == "oracle":
            return self.oracle_scores(step)
        if policy == "random":
            keys = _keyed(self.seed, _PURPOSE_RANDOM_POLICY, step.request_ids)
            hashes = _splitmix64(keys[:, None] ^ self._item_hash[pool][None, :])
            return _to_unit(hashes).astype(np.float32).reshape(shape)
        row = self._item_term(pool, step.t_start)
        return np.ascontiguousarray(np.broadcast_to(row, shape), dtype=np.float32)

    def true_affinity(self, users: npt.ArrayLike, items: npt.ArrayLike) -> _F32:
        """Ground-truth taste . topic of each (user, item) pair (float32, in [-1, 1]): the
        personal part of the click log-odds (times ``taste_weight``), to correlate learned
        scores with.

        >>> world = World(SimConfig.for_scale("tiny"), seed=0)
        >>> a = world.true_affinity([0, 0, 1], [3, 4, 3])
        >>> a.shape, bool((abs(a) <= 1.0001).all())
        ((3,), True)
        """
        u = _index_of(users, self.n_users, "user")
        i = self._item_index(items)
        if u.size != i.size:
            raise ValueError(
                f"users has {u.size} elements but items has {i.size}: pass one item per user"
            )
        return np.einsum("nd,nd->n", self._user_taste[u], self._item_topic[i], dtype=np.float32)

    def true_click_logit(
        self, users: npt.ArrayLike, items: npt.ArrayLike, timestamps: npt.ArrayLike
    ) -> _F32:
        """Ground-truth click log-odds of (user, item) pairs at ``timestamps``, without the
        position term (what :meth:`oracle_scores` ranks by; float32).

        >>> world = World(SimConfig.for_scale("tiny"), seed=0)
        >>> step = world.step(2)
        >>> users = step.users[:1].repeat(3)
        >>> got = world.true_click_logit(users, step.pool[:3], [step.t_start] * 3)
        >>> bool(np.allclose(got, world.oracle_scores(step)[0, :3], atol=1e-5))
        True
        """
        affinity = self.true_affinity(users, items)
        t = np.asarray(timestamps, dtype=np.int64).reshape(-1)
        if t.size != affinity.size:
            raise ValueError(
                f"timestamps has {t.size} elements but there are {affinity.size} pairs"
            )
        item_term = self._item_term(self._item_index(items), t)
        return np.asarray(self.config.taste_weight * affinity + item_term, dtype=np.float32)

    def _item_term(self, index: _I64, t: int | _I64) -> _F64:
        """quality - ln 2 * age / age half-life of items ``index`` at time(s) ``t``."""
        cfg = self.config
        age = np.asarray(t) - self._item_arrival[index]
        decay = math.log(2.0) / cfg.age_half_life_seconds
        return np.asarray(self._item_quality[index] - decay * age, dtype=np.float64)

    def item_end_times(self, ids: npt.ArrayLike) -> _I64:
        """Event time at which each item's life ends: arrival plus its lifetime
        (``item_lifetime_seconds``, ``item_lifetime_sigma``, at most
        ``max_item_age_seconds``). Steps starting after it no longer list the item in their
        pool, so it gets no further views.

        >>> world = World(SimConfig.for_scale("tiny", item_lifetime_seconds=3600), seed=0)
        >>> ends = world.item_end_times([0, 1])
        >>> bool((ends - world.item_info([0, 1]).arrival_time == 3600).all())
        True
        """
        index = self._item_index(ids)
        return self._item_arrival[index] + self._item_lifetime[index]

    # -- analysis ------------------------------------------------------------------------------

    def ground_truth_items(self, ids: npt.ArrayLike) -> ItemTruth:
        """Latent topic vectors (unit, float32[n, latent_dim]) and quality of items ``ids``.

        >>> World(SimConfig.for_scale("tiny")).ground_truth_items([0, 1]).topic.shape
        (2, 16)
        """
        index = self._item_index(ids)
        return ItemTruth(topic=self._item_topic[index], quality=self._item_quality[index])

    def ground_truth_users(self, ids: npt.ArrayLike) -> UserTruth:
        """Latent taste vectors, activity weights and activity classes of users ``ids``.

        >>> World(SimConfig.for_scale("tiny")).ground_truth_users([0]).taste.shape
        (1, 16)
        """
        index = _index_of(ids, self.n_users, "user")
        return UserTruth(
            taste=self._user_taste[index],
            activity=self._user_activity[index],
            activity_class=self._activity_class_names[self._user_class[index]],
        )

    def item_info(self, ids: npt.ArrayLike) -> ItemInfo:
        """Arrival time, creator, duration and tag of items ``ids``.

        >>> info = World(SimConfig.for_scale("tiny")).item_info([0])
        >>> bool(info.arrival_time[0] < 0)  # item 0 is in the backlog
        True
        """
        index = self._item_index(ids)
        return ItemInfo(
            arrival_time=self._item_arrival[index],
            creator=self._item_creator[index].astype(np.uint64),
            duration_seconds=self._item_duration[index],
            tag=self._item_tag[index],
        )

    def _item_index(self, ids: npt.ArrayLike) -> _I64:
        return _index_of(ids, self.n_items, "item")


# --------------------------------------------------------------------------------------------
# Helpers


def hour_of_day(timestamps: npt.ArrayLike) -> _U64:
    """Hour of day (0-23, uint64) of event times in seconds (t = 0 is midnight).

    >>> hour_of_day([0, 3599, 3600, 86_400 + 7_200]).tolist()
    [0, 0, 1, 2]
    """
    t = np.asarray(timestamps, dtype=np.int64)
    return ((t // HOUR_SECONDS) % 24).astype(np.uint64)


def tag_ids(tags: npt.ArrayLike) -> _U64:
    """Model ids (uint64) of KuaiRand tags: tag + 1, so the "no tag" value -1 becomes 0.

    >>> tag_ids([-1, 0, 39]).tolist()
    [0, 1, 40]
    """
    return (np.asarray(tags, dtype=np.int64) + 1).astype(np.uint64)


def _index_of(ids: npt.ArrayLike, size: int, what: str) -> _I64:
    array = np.asarray(ids)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what} ids must be integers, got dtype {array.dtype}")
    index = array.astype(np.int64).reshape(-1)
    if index.size and (index.min() < 0 or index.max() >= size):
        bad = index[(index < 0) | (index >= size)][0]
        raise KeyError(f"{what} id {bad} is not in this world (ids are 0..{size - 1})")
    return index


def _lifetimes(cfg: SimConfig, seed: int, n_items: int) -> _I64:
    """Each item's lifetime in whole seconds (SimConfig.item_lifetime_seconds)."""
    cap = cfg.max_item_age_seconds
    if cfg.item_lifetime_seconds is None:
        return np.full(n_items, cap, dtype=np.int64)
    median = float(cfg.item_lifetime_seconds)
    if cfg.item_lifetime_sigma == 0.0:
        life = np.full(n_items, median)
    else:
        rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_LIFETIME]))
        life = median * np.exp(cfg.item_lifetime_sigma * rng.standard_normal(n_items))
    return np.clip(np.round(life), 1, cap).astype(np.int64)


def _unit_rows(matrix: _F64) -> _F64:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def _sigmoid(logits: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.floating[Any]]:
    return 0.5 * (1.0 + np.tanh(0.5 * logits))


def _expected_requests(cfg: SimConfig, t_start: _I64, t_end: _I64) -> _F64:
    """Integral of the diurnal request rate over [t_start, t_end)."""
    rate = cfg.requests_per_day / DAY_SECONDS
    omega = 2.0 * math.pi / DAY_SECONDS
    cycle = (
        np.sin(omega * (t_end - _DIURNAL_PEAK_SECONDS))
        - np.sin(omega * (t_start - _DIURNAL_PEAK_SECONDS))
    ) / omega
    return np.asarray(rate * ((t_end - t_start) + cfg.diurnal_amplitude * cycle), dtype=np.float64)
