"""``Monitor.observe_pairs``: updates given as (before, after) rows, as a trainer that holds both
sees them. Checked against ``observe`` fed the same stream (reference rows first, then the rows
after each step), which reaches the same statistics by looking up the previous rows itself."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embcore import EmbcoreError, Monitor


def _streams(seed: int, n: int, d: int, steps: int, per_step: int) -> tuple[Monitor, Monitor]:
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(n, d)).astype(np.float32)
    by_observe, by_pairs = Monitor(sample_rate=1.0), Monitor(sample_rate=1.0)
    counts = np.zeros(n, dtype=np.int64)
    first = np.zeros(n, dtype=np.int64)
    seen = np.zeros(n, dtype=bool)
    for step in range(1, steps + 1):
        touched = np.unique(rng.integers(0, n, per_step))
        counts[touched] += 1
        fresh = touched[~seen[touched]]
        seen[fresh] = True
        first[fresh] = step
        before = weights[touched].copy()
        weights[touched] += rng.normal(scale=0.1, size=(touched.size, d)).astype(np.float32)
        index = np.concatenate([fresh, touched])
        rows = np.concatenate([before[np.searchsorted(touched, fresh)], weights[touched]])
        by_observe.observe(
            index.astype(np.uint64),
            rows,
            counts=counts[index],
            timestamps=np.full(index.size, step, dtype=np.int64),
        )
        by_pairs.observe_pairs(
            touched.astype(np.uint64),
            before,
            weights[touched],
            counts[touched],
            first_seen=first[touched],
            timestamps=np.full(touched.size, step, dtype=np.int64),
        )
    return by_observe, by_pairs


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 60),
    d=st.sampled_from([1, 3, 8, 32]),
    steps=st.integers(1, 25),
    per_step=st.integers(1, 20),
)
def test_pairs_give_the_statistics_observe_gives(
    seed: int, n: int, d: int, steps: int, per_step: int
) -> None:
    by_observe, by_pairs = _streams(seed, n, d, steps, per_step)
    a, b = by_observe.summary(), by_pairs.summary()
    # observe also keeps every id's previous row; observe_pairs keeps none.
    a.pop("memory_bytes"), b.pop("memory_bytes")
    np.testing.assert_equal(a, b)
    ta, tb = by_observe.trajectories(), by_pairs.trajectories()
    for key in ("ids", "counts", "timestamps"):
        np.testing.assert_array_equal(ta[key], tb[key])
    # Records after the first hold the same rows. At its first milestone, observe's record is the
    # reference row it was given with that count; observe_pairs records the row after the
    # update, as training does.
    later = _after_first_record(ta["ids"], ta["counts"])
    np.testing.assert_array_equal(ta["rows"][later], tb["rows"][later])


def test_pairs_leave_observes_previous_rows_alone() -> None:
    rows = np.ones((1, 4), dtype=np.float32)
    m, reference = Monitor(sample_rate=1.0), Monitor(sample_rate=1.0)
    for mon in (m, reference):
        mon.observe(np.array([7], dtype=np.uint64), rows)
    m.observe_pairs(np.array([7], dtype=np.uint64), rows * 5, rows * 9, np.array([3]))
    for mon in (m, reference):
        mon.observe(np.array([7], dtype=np.uint64), rows * 2)
    # The last observe compared rows*2 with rows in both: m holds the reference's updates
    # plus the pair's.
    expected = _combined(reference, rows * 5, rows * 9)["overall"]
    np.testing.assert_equal(m.summary()["overall"], expected)


def _combined(base: Monitor, before: np.ndarray, after: np.ndarray) -> dict:  # type: ignore[type-arg]
    other = Monitor(sample_rate=1.0)
    other.observe_pairs(np.array([7], dtype=np.uint64), before, after, np.array([3]))
    base.merge(other)
    return base.summary()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"after": np.ones((2, 3), dtype=np.float32)}, "after has shape"),
        ({"counts": np.array([1, -1])}, "counts\\[1\\] = -1 is negative"),
        ({"before": np.array([[1.0, np.nan, 0, 0], [0, 0, 0, 0]], dtype=np.float32)}, "before"),
        ({"first_seen": np.array([1])}, "first_seen has 1"),
        ({"ids": np.array([1, 2, 3], dtype=np.uint64)}, "ids has 3 elements"),
        ({"after": np.ones((2, 4), dtype=np.int8)}, "after must be a 2-D numpy array"),
    ],
)
def test_bad_input_names_the_argument_and_changes_nothing(
    kwargs: dict,
    message: str,  # type: ignore[type-arg]
) -> None:
    m = Monitor(sample_rate=1.0)
    m.observe(np.array([1, 2], dtype=np.uint64), np.ones((2, 4), dtype=np.float32))
    state = m.to_bytes()
    call = {
        "ids": np.array([1, 2], dtype=np.uint64),
        "before": np.ones((2, 4), dtype=np.float32),
        "after": np.full((2, 4), 2.0, dtype=np.float32),
        "counts": np.array([1, 2]),
        **kwargs,
    }
    with pytest.raises((EmbcoreError, TypeError), match=message):
        m.observe_pairs(**call)
    assert m.to_bytes() == state


def test_pairs_of_another_dimension_are_refused() -> None:
    m = Monitor(sample_rate=1.0)
    m.observe(np.array([1], dtype=np.uint64), np.ones((1, 4), dtype=np.float32))
    with pytest.raises(EmbcoreError, match="dim 3 but this monitor holds rows of dim 4"):
        m.observe_pairs(
            np.array([1], dtype=np.uint64),
            np.ones((1, 3), dtype=np.float32),
            np.ones((1, 3), dtype=np.float32),
            np.array([1]),
        )


def _after_first_record(ids: np.ndarray, counts: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
    """Records other than each item's first (lowest count)."""
    first = {}
    for i, c in zip(ids.tolist(), counts.tolist(), strict=True):
        first[i] = min(c, first.get(i, c))
    return np.array([c > first[i] for i, c in zip(ids.tolist(), counts.tolist(), strict=True)])
