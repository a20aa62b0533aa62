"""Tests of the short-video platform simulator (embcore.sim)."""

from __future__ import annotations

import dataclasses
import doctest
import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embcore import _calibration, sim
from embcore.sim import Events, SimConfig, Step, World

TINY = SimConfig.for_scale("tiny")


def random_scores(step: Step, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng([seed, step.index])
    return rng.random((len(step.users), len(step.pool)), dtype=np.float32)


def serve_all(world: World, scorer: Callable[[Step], np.ndarray]) -> Events:
    return Events.concat([world.serve(step, scorer(step)) for step in world.steps()])


def assert_steps_equal(a: Step, b: Step) -> None:
    for field in dataclasses.fields(Step):
        assert np.array_equal(getattr(a, field.name), getattr(b, field.name)), field.name


def assert_events_equal(a: Events, b: Events) -> None:
    for field in dataclasses.fields(Events):
        left, right = getattr(a, field.name), getattr(b, field.name)
        assert left.dtype == right.dtype, field.name
        assert np.array_equal(left, right), field.name


# --- configuration ---------------------------------------------------------------------------


def test_scales_have_the_promised_sizes() -> None:
    assert 15_000 <= SimConfig.for_scale("tiny").expected_events <= 25_000
    assert 250_000 <= SimConfig.for_scale("small").expected_events <= 350_000
    assert SimConfig.for_scale("default").expected_events >= 2_100_000
    assert SimConfig.for_scale("large").expected_events >= 50_000_000
    for scale in ("tiny", "small", "default", "large"):
        cfg = SimConfig.for_scale(scale)
        pool = cfg.items_per_day * cfg.max_item_age_seconds / sim.DAY_SECONDS
        assert 100 <= pool <= 15_000, scale


def test_for_scale_overrides_and_rejects_unknown_names() -> None:
    assert SimConfig.for_scale("tiny", k=5).k == 5
    with pytest.raises(ValueError, match="scale must be one of"):
        SimConfig.for_scale("huge")
    with pytest.raises(ValueError, match="unknown SimConfig fields"):
        SimConfig.for_scale("tiny", kay=5)


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("items_per_day", -1.0, r">= 0"),
        ("requests_per_day", float("nan"), r">= 0"),
        ("k", 0, r">= 1"),
        ("k", 2.5, "an integer"),
        ("k", True, "an integer"),
        ("latent_dim", -3, r">= 1"),
        ("exploration", 1.0, r"in \[0, 1\)"),
        ("exploration", -0.1, r"in \[0, 1\)"),
        ("diurnal_amplitude", 1.5, r"in \[0, 1\)"),
        ("step_seconds", 0, r">= 1"),
        ("max_item_age_seconds", -5, r">= 1"),
        ("creator_zipf_exponent", -0.5, r">= 0"),
        ("click_intercept", float("inf"), "finite"),
        ("n_users", "many", "an integer"),
    ],
)
def test_bad_config_names_the_field_and_range(name: str, value: object, allowed: str) -> None:
    with pytest.raises(ValueError, match=rf"SimConfig\.{name} must be .*{allowed}"):
        SimConfig(**{name: value})  # type: ignore[arg-type]


@given(st.floats(allow_nan=False).filter(lambda x: not 0 <= x < 1))
def test_exploration_outside_unit_interval_is_rejected(value: float) -> None:
    with pytest.raises(ValueError, match="exploration"):
        SimConfig(exploration=value)


def test_bad_seed_is_rejected() -> None:
    with pytest.raises(ValueError, match="seed"):
        World(TINY, seed=-1)


# --- marginals ---------------------------------------------------------------------------------


def test_item_arrivals_follow_the_poisson_rate() -> None:
    cfg = SimConfig.for_scale("tiny", items_per_day=20_000.0)
    counts: list[int] = []
    for seed in range(5):
        world = World(cfg, seed=seed)
        span = cfg.n_steps * cfg.step_seconds + cfg.max_item_age_seconds
        expected = cfg.items_per_day * span / sim.DAY_SECONDS
        assert abs(world.n_items - expected) < 4 * math.sqrt(expected)
        counts.extend(len(step.new_items) for step in world.steps() if step.index > 0)
    per_step = cfg.items_per_day * cfg.step_seconds / sim.DAY_SECONDS
    assert np.mean(counts) == pytest.approx(per_step, rel=0.05)
    assert np.var(counts) == pytest.approx(per_step, rel=0.3)  # Poisson: variance = mean


def zipf_exponent_mle(creators: np.ndarray, n_creators: int) -> float:
    log_ranks = np.log(np.arange(1, n_creators + 1))
    sum_log = float(log_ranks[creators].sum())
    grid = np.linspace(0.0, 3.0, 3001)
    log_lik = [-s * sum_log - creators.size * np.log(np.exp(-s * log_ranks).sum()) for s in grid]
    return float(grid[int(np.argmax(log_lik))])


@pytest.mark.parametrize("exponent", [_calibration.CREATOR_ZIPF_EXPONENT, 0.8, 1.2])
def test_creator_popularity_follows_the_zipf_exponent(exponent: float) -> None:
    cfg = SimConfig.for_scale(
        "tiny", items_per_day=100_000.0, n_creators=300, creator_zipf_exponent=exponent
    )
    world = World(cfg, seed=3)
    creators = world.item_info(np.arange(world.n_items)).creator.astype(np.int64)
    assert zipf_exponent_mle(creators, cfg.n_creators) == pytest.approx(exponent, abs=0.03)


@pytest.mark.parametrize("amplitude", [0.0, 0.5])
def test_request_counts_follow_the_configured_rate(amplitude: float) -> None:
    cfg = SimConfig.for_scale(
        "tiny", horizon_seconds=sim.DAY_SECONDS, requests_per_day=20_000.0,
        diurnal_amplitude=amplitude,
    )  # fmt: skip
    world = World(cfg, seed=1)
    expected = world.expected_requests_per_step
    # Whole days: the diurnal cycle integrates to zero.
    assert expected.sum() == pytest.approx(cfg.requests_per_day)
    counts = np.array([len(step.users) for step in world.steps()])
    assert abs(counts.sum() - expected.sum()) < 4 * math.sqrt(expected.sum())
    if amplitude > 0:
        peak = sim._DIURNAL_PEAK_SECONDS // cfg.step_seconds
        assert expected[peak] / expected.mean() == pytest.approx(1 + amplitude, rel=0.01)
        trough = peak - len(counts) // 2  # 12 hours earlier
        morning, evening = (
            counts[trough - 18 : trough + 18].sum(),
            counts[peak - 18 : peak + 18].sum(),
        )
        assert evening > 2 * morning  # expected ratio (1 + 0.5) / (1 - 0.5) = 3


def test_user_activity_is_heavy_tailed_and_drives_requests() -> None:
    world = World(SimConfig.for_scale("small", horizon_seconds=6 * sim.HOUR_SECONDS), seed=0)
    users = np.concatenate([step.users for step in world.steps()]).astype(np.int64)
    per_user = np.bincount(users, minlength=world.n_users)
    activity = world.ground_truth_users(np.arange(world.n_users)).activity
    top = activity >= np.quantile(activity, 0.9)
    share_of_top = per_user[top].sum() / per_user.sum()
    assert share_of_top == pytest.approx(activity[top].sum() / activity.sum(), abs=0.03)
    assert share_of_top > 0.3  # the top 10% of users send well over 10% of the requests


def test_calibrated_item_marginals() -> None:
    world = World(SimConfig.for_scale("tiny", items_per_day=50_000.0), seed=2)
    info = world.item_info(np.arange(world.n_items))
    median = _calibration.DURATION_QUANTILES_SECONDS[20]
    assert np.median(info.duration_seconds) == pytest.approx(median, rel=0.05)
    assert info.duration_seconds.min() >= _calibration.DURATION_QUANTILES_SECONDS[0]
    tag_share = dict(_calibration.TAG_SHARES)
    assert np.mean(info.tag == 39) == pytest.approx(tag_share[39], abs=0.01)
    assert np.all(np.diff(info.arrival_time) >= 0)  # ids increase with arrival


# --- serving -----------------------------------------------------------------------------------


def test_each_request_shows_k_distinct_pool_items_with_the_exploration_share() -> None:
    cfg = SimConfig.for_scale("tiny", exploration=0.25, k=8)
    world = World(cfg, seed=0)
    shares = []
    for step in world.steps():
        events = world.serve(step, random_scores(step))
        assert len(events) == len(step.users) * cfg.k
        items = events.items.reshape(-1, cfg.k)
        assert all(len(set(row)) == cfg.k for row in items.tolist())
        assert np.isin(events.items, step.pool).all()
        assert np.array_equal(events.position.reshape(-1, cfg.k)[0], np.arange(cfg.k))
        assert events.fresh[events.explored].all()
        assert np.array_equal(events.users, np.repeat(step.users, cfg.k))
        shares.append(events.explored.reshape(-1, cfg.k).sum(axis=1))
    per_request = np.concatenate(shares)
    assert set(np.unique(per_request)) <= {2, 3}  # 0.25 * 8 = 2 exactly, 3 never
    assert per_request.mean() == pytest.approx(2.0)
    fractional = World(SimConfig.for_scale("tiny", exploration=0.15), seed=0)
    events = serve_all(fractional, random_scores)
    assert events.explored.mean() == pytest.approx(0.15, abs=0.01)


def test_item_age_and_fresh_flags_are_consistent() -> None:
    world = World(TINY, seed=4)
    events = serve_all(world, random_scores)
    arrival = world.item_info(events.items).arrival_time
    assert np.array_equal(events.item_age, events.timestamps - arrival)
    assert (events.item_age > 0).all()
    assert (events.item_age <= TINY.max_item_age_seconds + TINY.step_seconds).all()
    assert np.array_equal(events.fresh, events.item_age < TINY.fresh_seconds)
    assert 0 < events.fresh.mean() < 1
    assert ((events.play == 0) | (events.click == 1)).all()  # a play implies a click


def test_steps_cover_time_and_pools_hold_live_items() -> None:
    world = World(TINY, seed=0)
    previous_end = 0
    seen_new: list[np.ndarray] = []
    for step in world.steps():
        assert step.t_start == previous_end and step.t_end - step.t_start == TINY.step_seconds
        previous_end = step.t_end
        assert np.all(np.diff(step.request_times) >= 0)
        assert ((step.request_times >= step.t_start) & (step.request_times < step.t_end)).all()
        arrival = world.item_info(step.pool).arrival_time
        assert (arrival < step.t_start).all()
        assert (arrival >= step.t_start - TINY.max_item_age_seconds).all()
        if step.index >= 2:  # (step 0 also lists the backlog, some of which has expired)
            assert np.isin(seen_new[-1], step.pool).all()  # last step's arrivals are live now
        seen_new.append(step.new_items)
        assert step.users.dtype == np.uint64 and step.pool.dtype == np.uint64
        assert step.request_times.dtype == np.int64
    every_item = np.concatenate(seen_new)
    assert np.array_equal(every_item, np.arange(world.n_items))


def test_same_seed_same_world_and_events_and_different_seed_differs() -> None:
    first, second, other = World(TINY, seed=7), World(TINY, seed=7), World(TINY, seed=8)
    for a, b in zip(first.steps(), second.steps(), strict=True):
        assert_steps_equal(a, b)
        scores = random_scores(a)
        assert_events_equal(first.serve(a, scores), second.serve(b, scores))
        assert_events_equal(first.serve(a, scores), first.serve(a, scores.copy()))
    for a, b in zip(first.steps(), first.steps(), strict=True):  # steps() is re-iterable
        assert_steps_equal(a, b)
    assert_steps_equal(first.step(5), list(first.steps())[5])
    a, c = first.step(5), other.step(5)
    assert not (len(a.users) == len(c.users) and np.array_equal(a.users, c.users))
    assert first.n_items != other.n_items or not np.array_equal(
        first.item_info(np.arange(first.n_items)).arrival_time,
        other.item_info(np.arange(other.n_items)).arrival_time,
    )


def test_common_random_numbers_across_score_matrices() -> None:
    world = World(SimConfig.for_scale("tiny", position_decay=0.0), seed=11)
    shared = shared_clicks = 0
    for step in list(world.steps())[::2]:
        scores = world.oracle_scores(step)
        a = world.serve(step, scores + random_scores(step, seed=1))
        b = world.serve(step, scores)
        # Exploration depends only on (seed, request): same slots, same items.
        assert np.array_equal(a.explored, b.explored)
        assert np.array_equal(a.items[a.explored], b.items[b.explored])
        request = np.repeat(step.request_ids, world.config.k)
        keys_a = {(r, i): n for n, (r, i) in enumerate(zip(request, a.items, strict=True))}
        for n, pair in enumerate(zip(request, b.items, strict=True)):
            if pair in keys_a:
                shared += 1
                assert a.click[keys_a[pair]] == b.click[n]
                assert a.play[keys_a[pair]] == b.play[n]
                shared_clicks += int(b.click[n])
    assert shared > 3000 and shared_clicks > 100


def test_better_scores_engage_more_the_loop_is_closed() -> None:
    world = World(TINY, seed=5)
    random_events = serve_all(world, random_scores)
    oracle_events = serve_all(world, world.oracle_scores)
    anti_events = serve_all(world, lambda step: -world.oracle_scores(step))
    ctr_random, ctr_oracle = random_events.click.mean(), oracle_events.click.mean()
    assert ctr_oracle > 2.0 * ctr_random
    assert anti_events.click.mean() < ctr_random
    assert oracle_events.play.mean() > random_events.play.mean()
    # Exploration slots do not depend on the scores, so they engage alike under both.
    explored_random = random_events.click[random_events.explored].mean()
    explored_oracle = oracle_events.click[oracle_events.explored].mean()
    assert explored_random == pytest.approx(explored_oracle, abs=0.02)


def test_short_videos_complete_more_often() -> None:
    world = World(SimConfig.for_scale("tiny", requests_per_day=40_000.0), seed=6)
    events = serve_all(world, world.oracle_scores)
    clicked = events.click == 1
    duration = world.item_info(events.items[clicked]).duration_seconds
    play = events.play[clicked]
    short, long_ = duration < np.quantile(duration, 0.25), duration > np.quantile(duration, 0.75)
    assert play[short].mean() > play[long_].mean() + 0.1


def test_serve_checks_shapes_and_tolerates_nan_scores() -> None:
    world = World(TINY, seed=0)
    step = world.step(2)
    with pytest.raises(ValueError, match=r"scores has shape \(1, 1\)"):
        world.serve(step, np.zeros((1, 1), dtype=np.float32))
    scores = random_scores(step)
    scores[:, ::2] = np.nan
    scores[0, 1] = -np.inf
    events = world.serve(step, scores)
    rows = events.items.reshape(len(step.users), -1)
    assert all(len(set(row)) == rows.shape[1] for row in rows.tolist())
    nan_ids = set(step.pool[::2].tolist())
    exploited = events.items[~events.explored]
    assert not nan_ids & set(exploited.tolist())  # real scores always beat NaN


def test_small_pools_show_fewer_items() -> None:
    cfg = SimConfig.for_scale("tiny", items_per_day=20.0, k=10)
    world = World(cfg, seed=0)
    for step in world.steps():
        events = world.serve(step, random_scores(step))
        assert len(events) == len(step.users) * min(cfg.k, len(step.pool))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**63 - 1),
    k=st.integers(1, 12),
    exploration=st.floats(0.0, 0.9),
    step_index=st.integers(0, 71),
)
def test_serve_matches_a_slow_reference(
    seed: int, k: int, exploration: float, step_index: int
) -> None:
    world = World(SimConfig.for_scale("tiny", k=k, exploration=exploration), seed=seed)
    step = world.step(step_index)
    scores = random_scores(step, seed=seed % 1000)
    events = world.serve(step, scores)
    shown = min(k, len(step.pool))
    column = {int(item): c for c, item in enumerate(step.pool)}
    for r in range(len(step.users)):
        rows = slice(r * shown, (r + 1) * shown)
        items, explored = events.items[rows], events.explored[rows]
        n_explored = int(explored.sum())
        assert n_explored in (math.floor(exploration * shown), math.ceil(exploration * shown)) or (
            n_explored < exploration * shown and events.fresh[rows].sum() >= n_explored
        )
        row_scores = scores[r].copy()
        for item in items[explored]:
            row_scores[column[int(item)]] = -np.inf
        expected = np.argsort(-row_scores, kind="stable")[: shown - n_explored]
        chosen = [column[int(item)] for item in items[~explored]]
        # The top scores in order; among tied scores (float32 draws do tie) either
        # item is a correct choice.
        assert row_scores[chosen].tolist() == row_scores[expected].tolist()
        assert len(set(chosen)) == len(chosen)


# --- analysis accessors, records, hashing -------------------------------------------------------


def test_ground_truth_and_item_info() -> None:
    world = World(TINY, seed=0)
    ids = np.array([0, 3, world.n_items - 1], dtype=np.uint64)
    items = world.ground_truth_items(ids)
    assert items.topic.shape == (3, TINY.latent_dim) and items.quality.shape == (3,)
    assert np.allclose(np.linalg.norm(items.topic, axis=1), 1.0, atol=1e-5)
    users = world.ground_truth_users([0, 1])
    assert np.allclose(np.linalg.norm(users.taste, axis=1), 1.0, atol=1e-5)
    assert set(users.activity_class) <= {name for name, _, _ in _calibration.USER_ACTIVITY_CLASSES}
    info = world.item_info(ids)
    assert info.arrival_time.dtype == np.int64 and info.creator.dtype == np.uint64
    assert (info.creator < TINY.n_creators).all()
    with pytest.raises(KeyError, match="item id"):
        world.item_info([world.n_items])
    with pytest.raises(KeyError, match="user id"):
        world.ground_truth_users([TINY.n_users])


def test_events_concat_and_validation() -> None:
    world = World(TINY, seed=0)
    parts = [world.serve(world.step(i), random_scores(world.step(i))) for i in (1, 2)]
    joined = Events.concat(parts)
    assert len(joined) == len(parts[0]) + len(parts[1])
    assert np.array_equal(joined.items[: len(parts[0])], parts[0].items)
    assert len(Events.concat([])) == 0 and Events.empty().click.dtype == np.float32
    with pytest.raises(ValueError, match="equal lengths"):
        dataclasses.replace(parts[0], click=parts[0].click[:-1])


def test_hash_coins_are_uniform_and_keyed() -> None:
    counters = np.arange(200_000, dtype=np.uint64)
    coins = sim._to_unit(sim._keyed(1, 2, counters))
    assert coins.mean() == pytest.approx(0.5, abs=0.005)
    assert np.histogram(coins, bins=10, range=(0, 1))[0].min() > 19_000
    other = sim._to_unit(sim._keyed(1, 3, counters))
    assert abs(np.corrcoef(coins, other)[0, 1]) < 0.01


def test_docstring_examples() -> None:
    failures, _ = doctest.testmod(sim)
    assert failures == 0
