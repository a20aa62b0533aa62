"""embcore._core.TopK (the analyses' running top-k) against sorting the whole score matrix."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from embcore import _core


def brute(scores: np.ndarray, k: int) -> np.ndarray:
    """Per row, the k best columns: higher score first, then the lower column; NaN as -inf."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    order = np.lexsort((np.broadcast_to(np.arange(s.shape[1]), s.shape), -s), axis=1)
    return order[:, : min(k, s.shape[1])]


@given(
    st.integers(1, 4),
    st.integers(0, 40),
    st.integers(0, 6),
    st.integers(1, 9),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_blocks_give_the_top_k_of_the_whole_matrix(
    queries: int, columns: int, k: int, width: int, scaled: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(-3, 4, (queries, columns)).astype(np.float64)  # many ties
    scores[rng.random(scores.shape) < 0.1] = np.nan
    scale = rng.choice([0.5, 1.0, 2.0], columns) if scaled else None
    top = _core.TopK(queries, k)
    for start in range(0, columns, width):
        block = np.ascontiguousarray(scores[:, start : start + width])
        part = None if scale is None else np.ascontiguousarray(scale[start : start + width])
        top.update(block, start, part)
    whole = scores if scale is None else scores * scale
    want = brute(whole, k) if columns else np.zeros((queries, 0), np.int64)
    assert top.index.tolist() == want.tolist()
    kept = np.take_along_axis(np.where(np.isnan(whole), -np.inf, whole), want, axis=1)
    assert top.scores.tolist() == kept.tolist()


def test_bad_blocks_are_refused_and_leave_the_state_unchanged() -> None:
    top = _core.TopK(2, 1)
    top.update(np.array([[1.0], [2.0]]), 0)
    with pytest.raises(ValueError, match="3 rows, one per query"):
        top.update(np.zeros((3, 1)), 1)
    with pytest.raises(ValueError, match="scale has 1 values"):
        top.update(np.full((2, 2), 9.0), 1, np.ones(1))
    with pytest.raises(ValueError, match="not C-contiguous"):
        top.update(np.full((2, 4), 9.0)[:, ::2], 1)
    with pytest.raises(ValueError, match="offset must be >= 0"):
        top.update(np.full((2, 1), 9.0), -1)
    assert top.index.tolist() == [[0], [0]] and top.scores.tolist() == [[1.0], [2.0]]
