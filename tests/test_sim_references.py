"""Item lifetimes and the reference policies of the simulator (embcore.sim)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embcore.sim import REFERENCE_POLICIES, Events, SimConfig, World

TINY = SimConfig.for_scale("tiny")


def _ctr(world: World, policy: str, steps: range) -> float:
    events = Events.concat(
        [world.serve(world.step(k), world.reference_scores(world.step(k), policy)) for k in steps]
    )
    return float(events.click.mean())


def test_reference_policies_rank_as_their_knowledge():
    """The full oracle beats the non-personalised one, which beats random serving."""
    world = World(TINY, seed=3)
    ctr = {p: _ctr(world, p, range(0, world.n_steps, 2)) for p in REFERENCE_POLICIES}
    assert ctr["oracle"] > 1.2 * ctr["non_personalised"] > 1.2 * 1.2 * ctr["random"]


def test_reference_scores_are_drop_in_serving_scores():
    world = World(TINY, seed=1)
    step = world.step(7)
    shape = (len(step.users), len(step.pool))
    for policy in REFERENCE_POLICIES:
        scores = world.reference_scores(step, policy)
        assert scores.shape == shape and scores.dtype == np.float32
        assert np.isfinite(scores).all()
        np.testing.assert_array_equal(scores, world.reference_scores(step, policy))
    random = world.reference_scores(step, "random")
    assert 0.0 <= random.min() and random.max() < 1.0 and random.std() > 0.2
    # Non-personalised: one row for every request, equal to the oracle minus the taste term.
    flat = world.reference_scores(step, "non_personalised")
    np.testing.assert_array_equal(flat, np.broadcast_to(flat[0], shape))
    truth_u = world.ground_truth_users(step.users)
    truth_i = world.ground_truth_items(step.pool)
    taste = world.config.taste_weight * (truth_u.taste @ truth_i.topic.T)
    np.testing.assert_allclose(world.oracle_scores(step) - taste, flat, atol=1e-5)
    with pytest.raises(ValueError, match="policy must be one of 'random'"):
        world.reference_scores(step, "popular")


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**20), n=st.integers(1, 50))
def test_true_affinity_and_click_logit_match_a_slow_reference(seed, n):
    world = World(TINY, seed=seed % 7)
    rng = np.random.default_rng(seed)
    users = rng.integers(0, world.n_users, n)
    items = rng.integers(0, world.n_items, n)
    times = rng.integers(0, TINY.horizon_seconds, n)
    taste = world.ground_truth_users(users).taste
    topic = world.ground_truth_items(items).topic
    quality = world.ground_truth_items(items).quality
    arrival = world.item_info(items).arrival_time
    want = np.array([float(taste[k] @ topic[k]) for k in range(n)])
    np.testing.assert_allclose(world.true_affinity(users, items), want, atol=1e-6)
    logit = [
        TINY.taste_weight * want[k]
        + quality[k]
        - np.log(2) * (times[k] - arrival[k]) / TINY.age_half_life_seconds
        for k in range(n)
    ]
    np.testing.assert_allclose(world.true_click_logit(users, items, times), logit, atol=1e-5)
    with pytest.raises(ValueError, match="users has 1 elements but items has 2"):
        world.true_affinity([0], [0, 1])


def test_default_lifetime_is_the_world_before_the_knob():
    plain = World(TINY, seed=2)
    same = World(dataclasses.replace(TINY, item_lifetime_seconds=TINY.max_item_age_seconds), 2)
    for k in (0, 9, 40):
        np.testing.assert_array_equal(plain.step(k).pool, same.step(k).pool)
    np.testing.assert_array_equal(
        plain.item_end_times(range(plain.n_items)),
        plain.item_info(range(plain.n_items)).arrival_time + TINY.max_item_age_seconds,
    )


@pytest.mark.parametrize("sigma", [0.0, 1.0])
def test_items_leave_the_pool_when_their_lifetime_ends(sigma):
    cfg = SimConfig.for_scale("tiny", item_lifetime_seconds=1800, item_lifetime_sigma=sigma)
    world, plain = World(cfg, seed=4), World(TINY, seed=4)
    ends = world.item_end_times(range(world.n_items))
    life = ends - world.item_info(range(world.n_items)).arrival_time
    assert life.max() <= cfg.max_item_age_seconds and life.min() >= 1
    assert abs(np.median(life) - 1800) <= (1 if sigma == 0 else 200)
    if sigma:
        assert life.std() > 500
    for k in (3, 30, 60):
        step, before = world.step(k), plain.step(k)
        # The pool is the old one minus the items whose life ended, in the same order.
        alive = world.item_end_times(before.pool) >= step.t_start
        np.testing.assert_array_equal(step.pool, before.pool[alive])
        events = world.serve(step, world.reference_scores(step, "random"))
        assert (world.item_end_times(events.items) >= step.t_start).all()
    # Everything else in the world is the same draw.
    np.testing.assert_array_equal(world.step(5).users, plain.step(5).users)
    np.testing.assert_array_equal(
        world.ground_truth_items([0, 1]).topic, plain.ground_truth_items([0, 1]).topic
    )


def test_shorter_lifetimes_end_views_earlier():
    short = World(SimConfig.for_scale("tiny", item_lifetime_seconds=3600), seed=5)
    long = World(TINY, seed=5)
    age = {}
    for name, world in (("short", short), ("long", long)):
        events = Events.concat(
            [
                world.serve(s, world.reference_scores(s, "random"))
                for s in (world.step(k) for k in range(0, world.n_steps, 3))
            ]
        )
        age[name] = events.item_age
    assert age["short"].max() <= 3600 + TINY.step_seconds
    assert age["long"].max() > 3 * 3600


def test_lifetime_config_is_validated_and_reported():
    with pytest.raises(ValueError, match=r"item_lifetime_seconds must be an integer >= 1 or None"):
        SimConfig(item_lifetime_seconds=0)
    with pytest.raises(ValueError, match="item_lifetime_sigma must be a finite number >= 0"):
        SimConfig(item_lifetime_sigma=-1.0)
    cfg = SimConfig.for_scale("small", item_lifetime_seconds=7200, item_lifetime_sigma=0.5)
    reported = cfg.to_dict()
    assert reported["item_lifetime_seconds"] == 7200 and reported["item_lifetime_sigma"] == 0.5
    assert set(reported) == {f.name for f in dataclasses.fields(SimConfig)}
