"""Tests for embcore.analysis: fast paths against slow, obvious references, plus known answers."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from embcore import analysis
from embcore.analysis import (
    Trajectories,
    as_id_matrix,
    learning_peak,
    maturity,
    norm_popularity,
    snapshot_drift,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALPHAS = (0.01, 0.05, 0.1, 0.3, 0.7, 1.5)


@contextmanager
def small_blocks(rows: int = 3) -> Iterator[None]:
    """Force tiny row blocks so the blocked code paths (and their seams) are exercised."""
    with mock.patch.object(analysis, "_BLOCK_ROWS", rows):
        yield


def json_roundtrip(result: Any) -> dict[str, Any]:
    plain = result.to_dict()
    return dict(json.loads(json.dumps(plain, allow_nan=False)))


# --------------------------------------------------------------------------- references


def ref_cos(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 0.0
    return float(np.clip(a @ b / (na * nb), -1.0, 1.0))


def ref_items(ids: list[int], counts: list[int], rows: np.ndarray) -> dict[int, list[Any]]:
    """id -> [(count, row)] in count order; duplicate counts keep the last record given."""
    by_item: dict[int, dict[int, np.ndarray]] = {}
    for i, c, r in zip(ids, counts, rows, strict=True):
        by_item.setdefault(int(i), {})[int(c)] = np.asarray(r, dtype=np.float64)
    return {i: sorted(recs.items()) for i, recs in by_item.items()}


def ref_reference(
    records: list[Any], mode: str, last_k: int, table: dict[int, np.ndarray] | None, item: int
) -> np.ndarray:
    if mode == "final":
        return np.asarray(records[-1][1])
    if mode == "last_k":
        return np.mean([r for _, r in records[-last_k:]], axis=0)
    assert table is not None
    return table[item]


def ref_eligible(
    items: dict[int, list[Any]],
    mode: str,
    last_k: int,
    min_records: int,
    table: dict[int, np.ndarray] | None,
) -> tuple[list[int], int, int]:
    need = max(min_records, last_k) if mode == "last_k" else min_records
    keep, too_few, absent = [], 0, 0
    for item in sorted(items):
        if len(items[item]) < need:
            too_few += 1
        elif table is not None and item not in table:
            absent += 1
        else:
            keep.append(item)
    return keep, too_few, absent


def ref_maturity_of_item(distances: list[float], counts: list[int], alpha: float, final: bool):
    """(duration, observed) by the literal "stays within" definition."""
    candidates = range(len(distances) - 1) if final else range(len(distances))
    for j in candidates:
        if all(d < alpha for d in distances[j:]):
            return counts[j], True
    return counts[-1], False


def ref_kaplan_meier(durations: list[int], observed: list[bool]) -> list[tuple[int, Fraction]]:
    out, survival = [], Fraction(1)
    for t in sorted(set(durations)):
        at_risk = sum(1 for d in durations if d >= t)
        events = sum(1 for d, o in zip(durations, observed, strict=True) if d == t and o)
        if events:
            survival *= Fraction(at_risk - events, at_risk)
            out.append((t, survival))
    return out


def ref_km_quantile(km: list[tuple[int, Fraction]], q: float) -> int | None:
    for t, s in km:
        if s <= 1 - Fraction(str(q)):
            return t
    return None


def ref_average_ranks(x: np.ndarray) -> np.ndarray:
    return np.array([1 + np.sum(x < v) + (np.sum(x == v) - 1) / 2 for v in x], dtype=np.float64)


def ref_buckets(values: np.ndarray, n_buckets: int) -> np.ndarray:
    ordered = sorted(values.tolist())
    n = len(ordered)
    edges = sorted({ordered[(j * n) // n_buckets] for j in range(1, n_buckets)} - {ordered[0]})
    edges = [e for e in edges if e > ordered[0]]
    return np.array([sum(v >= e for e in edges) for v in values.tolist()], dtype=np.int64)


# --------------------------------------------------------------------------- strategies


@st.composite
def trajectories(draw: st.DrawFn, max_items: int = 6) -> tuple[list[int], list[int], np.ndarray]:
    d = draw(st.integers(1, 4))
    n_items = draw(st.integers(0, max_items))
    ids: list[int] = []
    counts: list[int] = []
    for item in draw(st.lists(st.integers(0, 50), min_size=n_items, max_size=n_items, unique=True)):
        n_rec = draw(st.integers(1, 9))
        counts += draw(st.lists(st.integers(0, 12), min_size=n_rec, max_size=n_rec))
        ids += [item] * n_rec
    # Small integer grid: exact ties, zero rows, identical rows all happen.
    values = draw(st.lists(st.integers(-2, 2), min_size=len(ids) * d, max_size=len(ids) * d))
    rows = np.array(values, dtype=np.float32).reshape(len(ids), d)
    order = draw(st.permutations(range(len(ids))))
    order_list = list(order)
    return (
        [ids[i] for i in order_list],
        [counts[i] for i in order_list],
        rows[order_list] if ids else rows,
    )


def random_table(seed: int, n: int, d: int, ids: np.ndarray | None = None):
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(n, d)).astype(np.float32)
    return (np.arange(n, dtype=np.uint64) if ids is None else ids), matrix


# --------------------------------------------------------------------------- Trajectories


def test_trajectories_sorted_stably_by_id_then_count() -> None:
    rows = np.arange(10, dtype=np.float32).reshape(5, 2)
    t = Trajectories.from_arrays([3, 1, 3, 1, 3], [2, 5, 1, 5, 2], rows, [0, 1, 2, 3, 4])
    assert t.ids.tolist() == [1, 1, 3, 3, 3]
    assert t.counts.tolist() == [5, 5, 1, 2, 2]
    assert t.timestamps.tolist() == [1, 3, 2, 0, 4]
    assert t.rows[:, 0].tolist() == [2.0, 6.0, 4.0, 0.0, 8.0]
    assert t.ids.dtype == np.uint64 and t.rows.dtype == np.float32
    assert (len(t), t.n_items, t.dim) == (5, 2, 2)


def test_trajectories_from_monitor_calls_trajectories() -> None:
    class FakeMonitor:
        def trajectories(self) -> dict[str, Any]:
            return {
                "ids": np.array([2, 1], dtype=np.uint64),
                "counts": np.array([1, 1]),
                "timestamps": np.array([10, 20]),
                "rows": np.eye(2, dtype=np.float32),
            }

    t = Trajectories.from_monitor(FakeMonitor())
    assert t.ids.tolist() == [1, 2] and t.timestamps.tolist() == [20, 10]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ids": [1, 2], "counts": [1], "rows": np.eye(2)}, "ids has 2 elements but counts has 1"),
        ({"ids": [1, 2], "counts": [1, 2], "rows": np.eye(3)}, "ids has 2 elements but rows has 3"),
        ({"ids": [1], "counts": [1], "rows": [1.0]}, "2-D"),
        ({"ids": [1, 2], "counts": [1, 2], "rows": [[np.nan], [1.0]]}, "1 rows containing NaN"),
        ({"ids": [-1], "counts": [1], "rows": [[1.0]]}, "negative ids"),
        ({"ids": [1], "counts": [-1], "rows": [[1.0]]}, "counts has 1 negative"),
        ({"ids": [1.5], "counts": [1], "rows": [[1.0]]}, "integers"),
    ],
)
def test_trajectories_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Trajectories.from_arrays(**kwargs)


def test_trajectories_empty() -> None:
    t = Trajectories.from_arrays([], [], np.zeros((0, 3)))
    assert (len(t), t.n_items, t.dim) == (0, 0, 3)


# --------------------------------------------------------------------------- as_id_matrix


def test_as_id_matrix_accepts_tuple_and_table_object() -> None:
    class Table:
        def ids(self) -> np.ndarray:
            return np.array([5, 7], dtype=np.uint64)

        def weights(self) -> np.ndarray:
            return np.ones((2, 3), dtype=np.float32)

    ids, matrix = as_id_matrix(Table())
    assert ids.tolist() == [5, 7] and matrix.shape == (2, 3)
    ids, matrix = as_id_matrix(([5, 7], np.ones((2, 3))), "x")
    assert matrix.dtype == np.float32


def test_as_id_matrix_errors() -> None:
    with pytest.raises(ValueError, match="2 duplicated ids"):
        as_id_matrix((np.array([1, 1, 2, 2, 3]), np.ones((5, 2))), "t")
    bad = np.ones((4, 2))
    bad[1, 0] = np.nan
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="t matrix has 2 rows containing NaN or Inf"):
        as_id_matrix((np.arange(4), bad), "t")
    with pytest.raises(ValueError, match="t ids has 3 elements but t matrix has 4"):
        as_id_matrix((np.arange(3), np.ones((4, 2))), "t")
    with pytest.raises(TypeError):
        as_id_matrix(42, "t")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- maturity


def _trajectory(item: int, rows: list[list[float]], first_count: int = 1) -> Trajectories:
    n = len(rows)
    return Trajectories.from_arrays(
        [item] * n, list(range(first_count, first_count + n)), np.array(rows)
    )


def test_maturity_known_answer_converges_at_seventh_interaction() -> None:
    far = [0.0, 1.0]
    near = [1.0, 0.01]
    final = [1.0, 0.0]
    # Interaction 3 is a lucky early crossing: within α, but the item leaves again.
    rows = [far, far, final, far, far, far, near, near, near, final]
    result = maturity(_trajectory(9, rows), alpha=0.05)
    level = result.level(0.05)
    assert level.durations.tolist() == [7] and level.observed.tolist() == [True]
    assert level.overall.median == 7
    assert level.overall.km == [[7, 0.0]]


def test_maturity_lucky_crossing_alone_is_not_maturity() -> None:
    rows = [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]
    table = (np.array([4], dtype=np.uint64), np.array([[1.0, 0.0]]))
    level = maturity(_trajectory(4, rows), alpha=0.1, reference=table).levels[0]
    assert level.observed.tolist() == [False]
    assert level.durations.tolist() == [5]  # censored at the last recorded count


def test_maturity_final_reference_only_last_record_within_is_censored() -> None:
    rows = [[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]
    result = maturity(_trajectory(1, rows, first_count=10), alpha=0.05)
    level = result.levels[0]
    assert level.observed.tolist() == [False] and level.durations.tolist() == [12]
    assert level.overall.median is None and level.overall.n_censored == 1
    # The same trajectory against an external reference equal to the final state is mature.
    table = (np.array([1]), np.array([[1.0, 0.0]]))
    level = maturity(_trajectory(1, rows, first_count=10), alpha=0.05, reference=table).levels[0]
    assert level.observed.tolist() == [True] and level.durations.tolist() == [12]


def test_maturity_zero_norm_row_counts_as_unconverged() -> None:
    rows = [[1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 0.0]]
    level = maturity(_trajectory(1, rows), alpha=0.5).levels[0]
    assert level.durations.tolist() == [3]


def test_kaplan_meier_hand_computed_with_ties() -> None:
    durations = np.array([2, 3, 3, 5, 6])
    observed = np.array([True, True, False, True, False])
    curve = analysis._curve(durations, observed)
    # n=2: 5 at risk, 1 event -> 0.8; n=3: the censoring at 3 is still at risk -> 0.8*3/4;
    # n=5: 2 at risk -> 0.3.
    np.testing.assert_allclose(curve.km, [[2, 0.8], [3, 0.6], [5, 0.3]])
    assert curve.median == 5
    assert curve.quantiles == {"p25": 3, "p50": 5, "p75": None, "p90": None}
    assert (curve.n_items, curve.n_mature, curve.n_censored) == (5, 3, 2)
    assert curve.mature_share == pytest.approx(0.6)

    all_events = analysis._curve(np.array([4, 1, 3, 2]), np.ones(4, dtype=bool))
    np.testing.assert_allclose(all_events.km, [[1, 0.75], [2, 0.5], [3, 0.25], [4, 0.0]])
    assert all_events.median == 2 and all_events.quantiles["p90"] == 4


@SETTINGS
@given(
    data=trajectories(),
    alphas=st.lists(st.sampled_from(ALPHAS), min_size=1, max_size=3, unique=True),
    mode=st.sampled_from(["final", "last_k", "table"]),
    last_k=st.integers(1, 4),
    min_records=st.integers(1, 4),
    n_buckets=st.integers(1, 4),
    table_seed=st.integers(0, 2**16),
)
def test_maturity_matches_reference(
    data: tuple[list[int], list[int], np.ndarray],
    alphas: list[float],
    mode: str,
    last_k: int,
    min_records: int,
    n_buckets: int,
    table_seed: int,
) -> None:
    ids, counts, rows = data
    d = rows.shape[1]
    rng = np.random.default_rng(table_seed)
    table: dict[int, np.ndarray] | None = None
    reference: Any = mode
    if mode == "table":
        present = sorted({i for i in ids if rng.random() < 0.7})
        matrix = rng.integers(-2, 3, size=(len(present), d)).astype(np.float32)
        table = {i: matrix[k].astype(np.float64) for k, i in enumerate(present)}
        reference = (np.array(present, dtype=np.uint64), matrix.reshape(len(present), d))
    pop_ids = sorted(set(ids))
    pop_counts = rng.integers(0, 4, size=len(pop_ids))
    pop_table = dict(zip(pop_ids, pop_counts.tolist(), strict=True))
    popularity = (np.array(pop_ids[1:], dtype=np.uint64), pop_counts[1:])  # first id missing

    with small_blocks():
        result = maturity(
            Trajectories.from_arrays(ids, counts, rows),
            alpha=alphas,
            reference=reference,
            last_k=last_k,
            min_records=min_records,
            popularity=popularity,
            n_popularity_buckets=n_buckets,
        )

    items = ref_items(ids, counts, rows)
    keep, too_few, absent = ref_eligible(items, mode, last_k, min_records, table)
    assert result.item_ids.tolist() == keep
    assert result.excluded == {"too_few_records": too_few, "not_in_reference": absent}
    assert result.n_items_total == len(items) and result.n_items == len(keep)
    pops = np.array([pop_table[i] if i != pop_ids[0] else 0 for i in keep], dtype=np.float64)
    assert result.n_missing_popularity == (1 if pop_ids and pop_ids[0] in keep else 0)
    assert result.item_popularity is not None
    np.testing.assert_array_equal(result.item_popularity, pops)
    buckets = ref_buckets(pops, n_buckets) if keep else np.zeros(0, dtype=np.int64)

    for alpha, level in zip(alphas, result.levels, strict=True):
        expected = []
        for item in keep:
            recs = items[item]
            ref = ref_reference(recs, mode, last_k, table, item)
            distances = [1.0 - ref_cos(r, ref) for _, r in recs]
            # A distance on the threshold itself (e.g. exactly 0.3 with small integer rows)
            # is decided by rounding, differently in float32 and float64: not a defect.
            assume(all(abs(d - alpha) > 1e-6 for d in distances))
            expected.append(
                ref_maturity_of_item(distances, [c for c, _ in recs], alpha, mode == "final")
            )
        durations = [e[0] for e in expected]
        observed = [e[1] for e in expected]
        assert level.alpha == alpha
        assert level.durations.tolist() == durations
        assert level.observed.tolist() == observed
        km = ref_kaplan_meier(durations, observed)
        assert [t for t, _ in km] == [t for t, _ in level.overall.km]
        np.testing.assert_allclose(
            [s for _, s in level.overall.km], [float(s) for _, s in km], atol=1e-12
        )
        assert level.overall.median == ref_km_quantile(km, 0.5)
        for q in (0.25, 0.75, 0.9):
            assert level.overall.quantiles[f"p{round(q * 100)}"] == ref_km_quantile(km, q)
        assert [b.bucket for b in level.by_popularity] == sorted(set(buckets.tolist()))
        for b in level.by_popularity:
            members = buckets == b.bucket
            sub = ref_kaplan_meier(
                list(np.array(durations)[members]), list(np.array(observed)[members])
            )
            assert b.curve.median == ref_km_quantile(sub, 0.5)
            assert b.curve.n_items == int(members.sum())
            assert b.popularity_low == pops[members].min()
    json_roundtrip(result)


def test_maturity_errors() -> None:
    t = _trajectory(1, [[1.0], [1.0], [1.0]])
    for bad in (0.0, 2.0, -0.1, 3.0):
        with pytest.raises(ValueError, match=f"alpha={bad}"):
            maturity(t, alpha=bad)
    with pytest.raises(ValueError, match="alpha=2.5"):
        maturity(t, alpha=(0.1, 2.5))
    with pytest.raises(ValueError, match="reference='first'"):
        maturity(t, reference="first")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_records=0"):
        maturity(t, min_records=0)
    with pytest.raises(ValueError, match="dimension 2"):
        maturity(t, reference=(np.array([1]), np.ones((1, 2))))
    with pytest.raises(ValueError, match="popularity ids has 2 elements but popularity counts"):
        maturity(t, popularity=(np.array([1, 2]), np.array([1])))
    with pytest.raises(KeyError, match="alpha=0.2"):
        maturity(t, alpha=0.1).level(0.2)


def test_maturity_empty_input_gives_documented_empty_result() -> None:
    result = maturity(Trajectories.from_arrays([], [], np.zeros((0, 2))), popularity=([], []))
    assert result.n_items == 0 and len(result.levels) == 3
    curve = result.levels[0].overall
    assert curve.median is None and curve.km == [] and math.isnan(curve.mature_share)
    plain = json_roundtrip(result)
    assert plain["levels"][0]["overall"]["mature_share"] is None
    assert "durations" not in plain["levels"][0]
    # Every item excluded: same empty result, with the exclusions counted.
    result = maturity(_trajectory(1, [[1.0], [1.0]]), min_records=3)
    assert result.n_items == 0 and result.n_excluded == 1


# --------------------------------------------------------------------------- learning peak


@SETTINGS
@given(
    data=trajectories(),
    mode=st.sampled_from(["final", "last_k", "table"]),
    last_k=st.integers(1, 3),
    min_records=st.integers(1, 3),
    table_seed=st.integers(0, 2**16),
)
def test_learning_peak_matches_reference(
    data: tuple[list[int], list[int], np.ndarray],
    mode: str,
    last_k: int,
    min_records: int,
    table_seed: int,
) -> None:
    ids, counts, rows = data
    d = rows.shape[1]
    table: dict[int, np.ndarray] | None = None
    reference: Any = mode
    if mode == "table":
        rng = np.random.default_rng(table_seed)
        present = sorted(set(ids))
        matrix = rng.normal(size=(len(present), d)).astype(np.float32)
        table = {i: matrix[k].astype(np.float64) for k, i in enumerate(present)}
        reference = (np.array(present, dtype=np.uint64), matrix)
    with small_blocks():
        result = learning_peak(
            Trajectories.from_arrays(ids, counts, rows),
            reference=reference,
            last_k=last_k,
            min_records=min_records,
        )

    items = ref_items(ids, counts, rows)
    keep, too_few, absent = ref_eligible(items, mode, last_k, min_records, table)
    gains: dict[int, list[float]] = {}
    drifts: dict[int, list[float]] = {}
    efficiencies: dict[int, list[float]] = {}
    for item in keep:
        recs = items[item]
        ref = ref_reference(recs, mode, last_k, table, item)
        for (_, prev), (n, cur) in zip(recs[:-1], recs[1:], strict=True):
            gains.setdefault(n, []).append(ref_cos(cur, ref) - ref_cos(prev, ref))
            drifts.setdefault(n, []).append(1.0 - ref_cos(cur, prev))
            efficiencies.setdefault(n, []).append(ref_cos(cur - prev, ref - prev))
    expected_counts = sorted(gains)
    assert result.n_items == len(keep) and result.n_excluded == too_few + absent
    assert result.counts.tolist() == expected_counts
    assert result.n_steps.tolist() == [len(gains[n]) for n in expected_counts]
    mean = np.array([np.mean(gains[n]) for n in expected_counts])
    np.testing.assert_allclose(result.gain_mean, mean, atol=1e-9)
    np.testing.assert_allclose(
        result.gain_median, [np.median(gains[n]) for n in expected_counts], atol=1e-9
    )
    np.testing.assert_allclose(
        result.drift_mean, [np.mean(drifts[n]) for n in expected_counts], atol=1e-9
    )
    np.testing.assert_allclose(
        result.efficiency_mean, [np.mean(efficiencies[n]) for n in expected_counts], atol=1e-9
    )
    if not expected_counts:
        assert result.peak_count is None and result.count_at_50pct_gain is None
        json_roundtrip(result)
        return
    # Peaks: the reported count attains the maximum (ties may pick any maximiser).
    assert result.peak_count is not None and result.drift_peak_count is not None
    at = expected_counts.index(result.peak_count)
    assert mean[at] >= mean.max() - 1e-9
    drift = np.array([np.mean(drifts[n]) for n in expected_counts])
    assert drift[expected_counts.index(result.drift_peak_count)] >= drift.max() - 1e-9
    cumulative = np.cumsum(mean)
    total = cumulative[-1]
    assert result.total_gain == pytest.approx(total, abs=1e-9)
    for share, reached in ((0.5, result.count_at_50pct_gain), (0.9, result.count_at_90pct_gain)):
        if abs(total) <= 1e-9:
            continue  # the sign of a ~0 total is rounding noise
        if total < 0:
            assert reached is None
            continue
        assert reached is not None
        at = expected_counts.index(reached)
        assert cumulative[at] >= share * total - 1e-9
        assert at == 0 or cumulative[:at].max() < share * total + 1e-9
    json_roundtrip(result)


def test_learning_peak_known_answer_skipped_counts_go_to_later_count() -> None:
    rows = [[0.0, 1.0], [1.0, 1.0], [1.0, 0.0]]
    t = Trajectories.from_arrays([1, 1, 1], [1, 4, 9], rows)
    result = learning_peak(t)
    assert result.counts.tolist() == [4, 9]
    half = math.sqrt(0.5)
    np.testing.assert_allclose(result.gain_mean, [half, 1 - half])
    np.testing.assert_allclose(result.drift_mean, [1 - half, 1 - half])
    np.testing.assert_allclose(result.efficiency_mean, [half, 1.0])
    assert result.peak_count == 4 and result.drift_peak_count == 4
    assert result.count_at_50pct_gain == 4 and result.count_at_90pct_gain == 9


def test_learning_peak_empty() -> None:
    result = learning_peak(Trajectories.from_arrays([], [], np.zeros((0, 2))))
    assert result.counts.size == 0 and result.peak_count is None
    assert json_roundtrip(result)["total_gain"] is None


# --------------------------------------------------------------------------- norms & popularity


@SETTINGS
@given(values=st.lists(st.integers(0, 6), min_size=0, max_size=40), n_buckets=st.integers(1, 11))
def test_quantile_buckets_match_reference(values: list[int], n_buckets: int) -> None:
    v = np.array(values, dtype=np.float64)
    bucket, n = analysis._quantile_buckets(v, n_buckets)
    np.testing.assert_array_equal(bucket, ref_buckets(v, n_buckets) if values else bucket)
    assert n <= n_buckets
    if values:
        assert sorted(set(bucket.tolist())) == list(range(n))  # none empty
        order = np.argsort(v, kind="stable")
        assert (np.diff(bucket[order]) >= 0).all()  # monotone in popularity
        if len(set(values)) == len(values):
            sizes = np.bincount(bucket)
            assert sizes.max() - sizes.min() <= 1 + (len(values) < n_buckets)


@SETTINGS
@given(
    x=st.lists(st.integers(-3, 3), min_size=2, max_size=30),
    seed=st.integers(0, 2**16),
)
def test_spearman_matches_reference_with_ties(x: list[int], seed: int) -> None:
    a = np.array(x, dtype=np.float64)
    b = np.random.default_rng(seed).integers(-3, 4, size=a.size).astype(np.float64)
    np.testing.assert_array_equal(analysis._average_ranks(a), ref_average_ranks(a))
    ra, rb = ref_average_ranks(a), ref_average_ranks(b)
    got = analysis._spearman(a, b)
    if ra.std() == 0 or rb.std() == 0:
        assert math.isnan(got)
    else:
        assert got == pytest.approx(np.corrcoef(ra, rb)[0, 1], abs=1e-12)


@SETTINGS
@given(
    n=st.integers(0, 40),
    d=st.integers(2, 5),  # d = 1 makes every cosine ±1: ties, and top-K is then arbitrary
    n_users=st.integers(1, 12),
    k=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)
def test_norm_popularity_matches_reference(n: int, d: int, n_users: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids = rng.permutation(1000)[:n].astype(np.uint64)
    matrix = (rng.normal(size=(n, d)) * rng.lognormal(size=(n, 1))).astype(np.float32)
    if n:
        matrix[0] = 0.0  # a zero-norm row
    pop = rng.integers(0, 5, size=n)  # many ties
    user_matrix = rng.normal(size=(n_users + 3, d)).astype(np.float32)
    users = (np.arange(n_users + 3, dtype=np.uint64), user_matrix)
    with small_blocks():
        result = norm_popularity(
            (ids, matrix), (ids[1:], pop[1:]), users=users, k=k, n_users=n_users, seed=seed
        )
    pops = pop.astype(np.float64)
    if n:
        pops[0] = 0.0
    norms = np.linalg.norm(matrix.astype(np.float64), axis=1)
    np.testing.assert_allclose(result.item_norms, norms, rtol=1e-12)
    assert result.n_missing_popularity == min(n, 1)
    assert result.n_zero_norm == int((norms == 0).sum())
    if n:
        assert result.norms.p90 == pytest.approx(np.quantile(norms, 0.9))
        assert result.norms.max == pytest.approx(norms.max())
    buckets = ref_buckets(pops, 10) if n else np.zeros(0, dtype=np.int64)
    assert len(result.by_decile) == len(set(buckets.tolist()))
    for b in result.by_decile:
        members = buckets == b.bucket
        assert b.norms.n == int(members.sum())
        assert b.norms.p50 == pytest.approx(np.median(norms[members]))
        assert b.popularity_high == pops[members].max()
    ra, rb = ref_average_ranks(norms), ref_average_ranks(pops)
    if n >= 2 and ra.std() > 0 and rb.std() > 0:
        assert result.spearman == pytest.approx(np.corrcoef(ra, rb)[0, 1], abs=1e-9)
    else:
        assert math.isnan(result.spearman)
    nz = norms > 0
    x = np.log1p(pops[nz])
    if nz.sum() >= 2 and x.std() > 0:
        slope = np.polyfit(x, np.log(norms[nz]), 1)[0]
        assert result.loglog_slope == pytest.approx(slope, rel=1e-6, abs=1e-9)
    else:
        assert math.isnan(result.loglog_slope)

    # Retrieval bias against a brute-force full score matrix.
    retrieval = result.retrieval
    assert retrieval is not None
    sample = np.sort(np.random.default_rng(seed).choice(n_users + 3, size=n_users, replace=False))
    k_eff = min(k, n)
    assert retrieval.k == k_eff and retrieval.n_users == n_users
    if n == 0:
        assert math.isnan(retrieval.overlap_mean)
        json_roundtrip(result)
        return
    head = buckets == buckets.max() if buckets.max() > 0 else np.zeros(n, dtype=bool)
    u = user_matrix[sample].astype(np.float64)
    dot = u @ matrix.astype(np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = np.where(norms > 0, dot / norms, 0.0)
    overlaps, head_dot, head_cos = [], [], []
    for row in range(n_users):
        top_dot = set(np.argsort(-dot[row], kind="stable")[:k_eff].tolist())
        top_cos = set(np.argsort(-cosine[row], kind="stable")[:k_eff].tolist())
        overlaps.append(len(top_dot & top_cos) / k_eff)
        head_dot += [head[i] for i in top_dot]
        head_cos += [head[i] for i in top_cos]
    assert retrieval.overlap_mean == pytest.approx(np.mean(overlaps))
    assert retrieval.head_share_dot == pytest.approx(np.mean(head_dot))
    assert retrieval.head_share_cosine == pytest.approx(np.mean(head_cos))
    assert retrieval.head_share_catalog == pytest.approx(head.mean())
    json_roundtrip(result)


def test_norm_popularity_known_answer_and_errors() -> None:
    ids = np.arange(20)
    matrix = np.zeros((20, 2), dtype=np.float32)
    matrix[:, 0] = np.arange(1, 21)
    pop = (np.arange(1, 21) ** 2) - 1  # norm = sqrt(1 + pop): log-log slope 0.5
    result = norm_popularity((ids, matrix), (ids, pop))
    assert result.spearman == pytest.approx(1.0)
    assert result.loglog_slope == pytest.approx(0.5)
    assert len(result.by_decile) == 10
    assert [b.norms.n for b in result.by_decile] == [2] * 10
    # Users aligned with the popular (long) rows: dot retrieves the head, cosine cannot tell.
    users = (np.arange(3), np.tile([1.0, 0.0], (3, 1)))
    retrieval = norm_popularity((ids, matrix), (ids, pop), users=users, k=2).retrieval
    assert retrieval is not None and retrieval.head_share_dot == 1.0
    with pytest.raises(ValueError, match="users have dimension 3 but items have dimension 2"):
        norm_popularity((ids, matrix), (ids, pop), users=(np.arange(2), np.ones((2, 3))))
    with pytest.raises(ValueError, match="negative"):
        norm_popularity((ids, matrix), (ids, -pop))
    with pytest.raises(ValueError, match="k=0"):
        norm_popularity((ids, matrix), (ids, pop), k=0)
    empty = norm_popularity((np.zeros(0, np.uint64), np.zeros((0, 2))), ([], []))
    assert empty.n_items == 0 and json_roundtrip(empty)["norms"]["p50"] is None


# --------------------------------------------------------------------------- snapshot drift


def random_rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def ref_topk(matrix: np.ndarray, query: int, k: int) -> set[int]:
    cos = np.array([ref_cos(matrix[query], row) for row in matrix])
    cos[query] = -np.inf
    return set(np.argsort(-cos, kind="stable")[:k].tolist())


@SETTINGS
@given(
    n_a=st.integers(0, 25),
    n_b=st.integers(0, 25),
    d=st.integers(2, 5),  # d = 1 makes every cosine ±1: k-NN ties, arbitrary neighbour sets
    k=st.integers(1, 6),
    n_queries=st.integers(0, 12),
    seed=st.integers(0, 2**16),
)
def test_snapshot_drift_matches_reference(
    n_a: int, n_b: int, d: int, k: int, n_queries: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    ids_a = rng.choice(40, size=n_a, replace=False).astype(np.uint64)
    ids_b = rng.choice(40, size=n_b, replace=False).astype(np.uint64)
    a = rng.normal(size=(n_a, d)).astype(np.float32)
    b = rng.normal(size=(n_b, d)).astype(np.float32) + rng.normal(size=d).astype(np.float32)
    if n_a:
        a[-1] = 0.0  # zero-norm row: cosine 0
    with small_blocks():
        result = snapshot_drift((ids_a, a), (ids_b, b), k=k, n_queries=n_queries, seed=seed)

    pos_b = {int(i): j for j, i in enumerate(ids_b)}
    common = sorted(int(i) for i in ids_a if int(i) in pos_b)
    pos_a = {int(i): j for j, i in enumerate(ids_a)}
    A = np.array([a[pos_a[i]] for i in common], dtype=np.float64).reshape(len(common), d)
    B = np.array([b[pos_b[i]] for i in common], dtype=np.float64).reshape(len(common), d)
    n = len(common)
    assert result.ids.tolist() == common
    assert (result.n_matched, result.n_only_a, result.n_only_b) == (n, n_a - n, n_b - n)
    unaligned = np.array([1 - ref_cos(x, y) for x, y in zip(A, B, strict=True)])
    np.testing.assert_allclose(result.unaligned_drift, unaligned, atol=1e-9)
    if n:
        assert result.unaligned.mean == pytest.approx(unaligned.mean())
        assert result.unaligned.p99 == pytest.approx(np.quantile(unaligned, 0.99))
        u, sv, vt = np.linalg.svd(A.T @ B)
        rotation = u @ vt
        if sv[-1] > 1e-6 * max(sv[0], 1e-300):
            np.testing.assert_allclose(result.rotation, rotation, atol=1e-8)
        else:
            # Fewer independent rows than dimensions: the optimal rotation is not unique.
            # Any orthogonal R reaching the optimum trace(R^T A^T B) = sum(sv) is right;
            # what follows is checked against the one returned.
            rotation = np.asarray(result.rotation, dtype=np.float64)
            np.testing.assert_allclose(rotation.T @ rotation, np.eye(d), atol=1e-6)
            assert np.trace(rotation.T @ (A.T @ B)) == pytest.approx(sv.sum(), rel=1e-6)
        aligned = np.array([1 - ref_cos(x, y) for x, y in zip(A @ rotation, B, strict=True)])
        np.testing.assert_allclose(result.aligned_drift, aligned, atol=1e-8)
        disparity = np.sum((A @ rotation - B) ** 2) / np.sum(B**2)
        assert result.disparity == pytest.approx(disparity, rel=1e-7, abs=1e-9)
        Ac, Bc = A - A.mean(0), B - B.mean(0)
        den = np.linalg.norm(Ac.T @ Ac) * np.linalg.norm(Bc.T @ Bc)
        if den > 1e-9:
            cka = np.linalg.norm(Ac.T @ Bc) ** 2 / den
            assert result.cka == pytest.approx(cka, rel=1e-7, abs=1e-9)
    else:
        assert math.isnan(result.disparity) and math.isnan(result.cka)
        assert result.unaligned.n == 0 and math.isnan(result.unaligned.mean)

    k_eff = max(min(k, n - 1), 0)
    queries = np.sort(np.random.default_rng(seed).choice(n, size=min(n_queries, n), replace=False))
    assert result.k == k_eff
    assert result.query_ids.tolist() == [common[q] for q in queries]
    if k_eff:
        expected = []
        for q in queries:
            na, nb = ref_topk(A, int(q), k_eff), ref_topk(B, int(q), k_eff)
            expected.append(len(na & nb) / len(na | nb))
        np.testing.assert_allclose(result.jaccard_per_query, expected)
    else:
        assert result.jaccard_per_query.size == 0

    only_a = [a[j] for j, i in enumerate(ids_a) if int(i) not in pos_b]
    only_b = [b[j] for j, i in enumerate(ids_b) if int(i) not in pos_a]
    if only_a and only_b:
        gap = np.mean(np.array(only_a, np.float64), 0) - np.mean(np.array(only_b, np.float64), 0)
        assert result.unmatched_centroid_distance == pytest.approx(np.linalg.norm(gap))
    else:
        assert math.isnan(result.unmatched_centroid_distance)
    plain = json_roundtrip(result)
    assert "unaligned_drift" not in plain and "rotation" not in plain


def test_procrustes_recovers_known_rotation() -> None:
    rng = np.random.default_rng(1)
    ids = np.arange(300, dtype=np.uint64)
    a = rng.normal(size=(300, 8))
    rotation = random_rotation(rng, 8)
    b = a @ rotation
    result = snapshot_drift((ids, a), (ids[::-1].copy(), b[::-1].copy()), k=5, n_queries=50)
    assert result.n_matched == 300
    assert result.disparity < 1e-10
    assert result.aligned.max < 1e-6
    assert result.unaligned.mean > 0.5
    np.testing.assert_allclose(result.rotation, rotation, atol=1e-5)
    assert result.cka == pytest.approx(1.0)
    assert result.jaccard.mean == pytest.approx(1.0)


def test_cka_invariant_to_orthogonal_transform_and_isotropic_scaling() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=(200, 6)).astype(np.float32)
    b = (a @ rng.normal(size=(6, 6)) + rng.normal(size=(200, 6))).astype(np.float32)
    base = analysis._linear_cka(a, b)
    assert 0.0 < base < 1.0
    transformed = (3.5 * b @ random_rotation(rng, 6)).astype(np.float32)
    assert analysis._linear_cka(a, transformed) == pytest.approx(base, rel=1e-5)
    shifted = (a * 0.25 + 10.0).astype(np.float32)  # CKA centres columns
    assert analysis._linear_cka(shifted, b) == pytest.approx(base, rel=1e-4)
    assert analysis._linear_cka(a, a) == pytest.approx(1.0)


def test_snapshot_drift_errors_and_edge_cases() -> None:
    ids = np.arange(5)
    with pytest.raises(ValueError, match="a has dimension 2 but b has dimension 3"):
        snapshot_drift((ids, np.ones((5, 2))), (ids, np.ones((5, 3))))
    with pytest.raises(ValueError, match="b ids has 1 duplicated ids"):
        snapshot_drift((ids, np.ones((5, 2))), (np.array([1, 1]), np.ones((2, 2))))
    zero = np.zeros((5, 2))
    result = snapshot_drift((ids, zero), (ids, np.ones((5, 2))))
    assert result.unaligned.mean == 1.0  # zero rows: cosine 0 by definition
    disjoint = snapshot_drift((ids, np.ones((5, 2))), (ids + 10, np.ones((5, 2))))
    assert disjoint.n_matched == 0 and disjoint.unmatched_centroid_distance == 0.0
    assert json_roundtrip(disjoint)["cka"] is None


def test_kernels_match_numpy() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=(11, 4)).astype(np.float32)
    b = rng.normal(size=(11, 4)).astype(np.float32)
    b[2] = 0.0
    with small_blocks(4):
        cos = analysis._rowwise_cosine(a, b)
        cross = analysis._cross_product(a, b)
    expected = [ref_cos(x, y) for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(cos, expected, atol=1e-12)
    np.testing.assert_allclose(cross, a.astype(np.float64).T @ b.astype(np.float64), atol=1e-9)
    with pytest.raises(ValueError, match="shape"):
        analysis._rowwise_cosine(a, b[:3])


# --------------------------------------------------------------------------- library integration


def test_errors_are_embcore_errors() -> None:
    from embcore.errors import EmbcoreError

    with pytest.raises(EmbcoreError, match="alpha=3"):
        maturity(Trajectories.from_arrays([1], [1], [[1.0]]), alpha=3)


def test_with_real_monitor_and_embedding_table() -> None:
    import embcore

    if not (hasattr(embcore, "Monitor") and hasattr(embcore, "EmbeddingTable")):
        pytest.skip("extension built without Monitor/EmbeddingTable")
    rng = np.random.default_rng(0)
    monitor = embcore.Monitor(sample_rate=1.0)
    target = rng.normal(size=(2, 4))
    for count in range(1, 9):
        rows = target + rng.normal(size=(2, 4)) / count**2
        monitor.observe(
            np.array([1, 2], dtype=np.uint64),
            rows.astype(np.float32),
            counts=np.array([count, count], dtype=np.int64),
        )
    traj = Trajectories.from_monitor(monitor)
    assert (len(traj), traj.n_items, traj.dim) == (16, 2, 4)
    table = embcore.EmbeddingTable(dim=4)
    table.set(np.array([1, 2], dtype=np.uint64), target.astype(np.float32))
    ids, matrix = as_id_matrix(table, "table")
    assert sorted(ids.tolist()) == [1, 2] and matrix.shape == (2, 4)
    result = maturity(traj, alpha=0.1, reference=table)
    assert result.n_items == 2 and result.levels[0].overall.n_mature == 2
