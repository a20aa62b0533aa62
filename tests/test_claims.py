"""Tests for embcore.claims: the verdict rules, the bootstrap machinery against slow references,
and each measurement on data whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embcore import claims
from embcore.claims import CLAIMS, check


def slow_lower_median(values, weights):
    """Expand integer weights into repeated values and take the lower median."""
    expanded = np.sort(np.repeat(np.asarray(values, float), np.asarray(weights, int)))
    if expanded.size == 0:
        return math.nan
    return expanded[(expanded.size - 1) // 2]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 50), min_size=1, max_size=30).flatmap(
        lambda v: st.tuples(
            st.just(v),
            st.lists(st.integers(0, 4), min_size=len(v), max_size=len(v)),
            st.booleans(),
        )
    )
)
def test_weighted_median_matches_the_expanded_sample(case):
    values, weights, with_inf = case
    v = np.array(values, dtype=float)
    if with_inf:
        v[::3] = np.inf
    got = claims.weighted_median(v, np.array(weights, dtype=float))[0]
    want = slow_lower_median(v, weights)
    assert (math.isnan(got) and math.isnan(want)) or got == want


def test_bootstrap_weights_are_seeded_resamples_of_every_item():
    a = claims.bootstrap_weights(50, n_boot=20, seed=3)
    b = claims.bootstrap_weights(50, n_boot=20, seed=3)
    c = claims.bootstrap_weights(50, n_boot=20, seed=4)
    assert a.shape == (20, 50) and (a.sum(axis=1) == 50).all() and (a >= 0).all()
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize(
    ("key", "estimate", "samples", "verdict"),
    [
        ("maturity", 0.2, [0.15, 0.2, 0.3], "reproduced"),
        ("maturity", 0.7, [0.6, 0.7, 0.8], "direction only"),
        ("maturity", 0.95, [0.8, 0.95, 1.1], "inconclusive"),
        ("maturity", 1.5, [1.2, 1.5, 1.9], "contradicted"),
        ("maturity", 0.0, [0.0, 0.0, 0.0], "direction only"),  # batch never matures
        ("peak", 3.0, [1.0, 3.0, 5.0], "reproduced"),
        ("peak", 1.0, [0.0, 1.0, 2.0], "inconclusive"),
        ("peak", -2.0, [-3.0, -2.0, -1.0], "contradicted"),
        ("norms_popularity", 1.2, [1.1, 1.2, 1.3], "direction only"),
    ],
)
def test_verdicts_weigh_the_interval_and_the_band(key, estimate, samples, verdict):
    assert check(CLAIMS[key], estimate, samples, 100).verdict == verdict


def test_undefined_estimates_are_not_available():
    assert check(CLAIMS["norms"], None, [1.0], 5).verdict == "n/a"
    assert check(CLAIMS["norms"], 2.0, [np.nan] * 9 + [2.0], 5).verdict == "n/a"
    out = claims.unavailable(CLAIMS["peak"], "why").to_dict()
    assert out["verdict"] == "n/a" and out["note"] == "why" and out["band"] == [1.0, None]


def test_interval_keeps_infinite_ends():
    low, high = claims.interval([1.0, 2.0, np.inf, np.inf], level=0.5)
    assert low == 1.0 and high == np.inf


def test_maturity_ratio_is_paired_and_counts_never_matured_items():
    rng = np.random.default_rng(0)
    batch = rng.integers(20, 60, 300).astype(float)
    assert claims.maturity_ratio(batch / 5, batch).verdict == "reproduced"
    same = claims.maturity_ratio(batch, batch)
    assert same.estimate == 1.0 and same.verdict == "inconclusive"
    # More than half of batch's items never mature: its median is never reached.
    never = batch.copy()
    never[:200] = np.inf
    out = claims.maturity_ratio(batch / 5, never)
    assert out.estimate == 0.0 and out.verdict == "direction only" and "never" in out.note
    with pytest.raises(ValueError, match="pair them"):
        claims.maturity_ratio(batch, batch[:-1])


def slow_peak(sums, views, min_items):
    best, best_value = None, -np.inf
    for k in range(sums.shape[1]):
        items = int((views[:, k] > 0).sum())
        if items < min_items or views[:, k].sum() == 0:
            continue
        value = sums[:, k].sum() / views[:, k].sum()
        if value > best_value:
            best, best_value = k, value
    return best


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 15))
def test_peak_shift_point_estimate_matches_a_loop(seed, min_items):
    rng = np.random.default_rng(seed)
    n, k = 30, 6
    views = rng.integers(0, 3, (n, k)).astype(float)
    rt = rng.random((n, k)) * views
    batch = rng.random((n, k)) * views
    out = claims.peak_shift((rt, views), (batch, views), min_items=min_items, n_boot=20)
    a, b = slow_peak(rt, views, min_items), slow_peak(batch, views, min_items)
    if a is None or b is None:
        assert out.verdict == "n/a" and out.estimate is None
    else:
        assert out.estimate == b - a


def test_peak_shift_sees_a_batch_peak_several_doublings_later():
    views = np.ones((40, 6))
    rt = np.tile([0.3, 0.1, 0.05, 0.01, 0.0, 0.0], (40, 1))
    batch = np.tile([0.0, 0.0, 0.01, 0.01, 0.05, 0.0], (40, 1))
    out = claims.peak_shift((rt, views), (batch, views))
    assert out.estimate == 4.0 and out.verdict == "reproduced"


def test_norm_claims_on_known_ratios():
    rng = np.random.default_rng(1)
    rt = rng.uniform(0.05, 0.15, 500)
    pop = rng.integers(1, 1000, 500)
    assert claims.norm_ratio(rt, 3.6 * rt).verdict == "reproduced"
    assert claims.norm_ratio(rt, 0.9 * rt).verdict == "contradicted"
    # Batch norms grow with popularity rank: top decile ratio ~ 6, bottom ~ 1.5.
    rank = np.argsort(np.argsort(pop)) / 499
    popular = claims.popular_norm_ratio(rt, rt * (1.5 + 4.5 * rank), pop)
    assert popular.estimate > 3 and popular.verdict == "reproduced"
    flat = claims.popular_norm_ratio(rt, 2 * rt, pop)
    assert flat.estimate == pytest.approx(1.0) and flat.verdict == "inconclusive"


def test_decile_ratios_match_per_decile_medians():
    rng = np.random.default_rng(2)
    rt, b = rng.random(200) + 0.1, rng.random(200) + 0.1
    pop = rng.permutation(200)
    out = claims.decile_norm_ratios(rt, b, pop, n_boot=20)
    for k in range(10):
        members = (pop * 10) // 200 == k
        want = slow_lower_median(b[members], np.ones(members.sum())) / slow_lower_median(
            rt[members], np.ones(members.sum())
        )
        assert out["ratio"][k] == pytest.approx(want)
        assert out["low"][k] <= out["high"][k]
    assert out["n_items"] == [20] * 10


def test_fresh_lift_gap_is_the_difference_of_the_two_lifts():
    n = 50
    rt = {
        "fresh_clicks": np.full(n, 4.0),
        "fresh_impressions": np.full(n, 20.0),
        "other_clicks": np.full(n, 3.0),
        "other_impressions": np.full(n, 20.0),
    }
    batch = {**rt, "fresh_clicks": np.full(n, 2.0), "other_clicks": np.full(n, 2.0)}
    out = claims.fresh_lift_gap(rt, batch)
    assert out.estimate == pytest.approx(2.0 - 1.5)
    assert out.verdict == "reproduced"
    even = claims.fresh_lift_gap(rt, {**rt})
    assert even.estimate == pytest.approx(0.0)
