"""Bulk creation of new ids (issue 15): any thread count gives what one thread gives."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import embcore


def _state(table: embcore.EmbeddingTable) -> tuple[dict[int, bytes], dict[int, tuple], list[int]]:
    ids, rows = table.view()
    meta = table.metadata()
    weights = {int(i): rows[k].tobytes() for k, i in enumerate(ids)}
    words = {
        int(i): tuple(int(meta[c][k]) for c in sorted(meta) if c != "ids")
        for k, i in enumerate(meta["ids"])
    }
    return weights, words, [int(i) for i in ids]


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 40_000) | st.integers(8_192, 40_000),
    distinct=st.integers(1, 40_000),
    threads=st.integers(2, 4),
    seed=st.integers(0, 2**32 - 1),
    spans=st.booleans(),
    evict_first=st.booleans(),
)
def test_insert_at_any_thread_count_equals_one_thread(
    n: int, distinct: int, threads: int, seed: int, spans: bool, evict_first: bool
) -> None:
    rng = np.random.default_rng(seed)
    if spans:  # repeats anywhere: a new id may fall in several workers' shares
        keys = rng.integers(0, distinct, n)
    else:  # repeats only next to each other: each new id in one share
        keys = np.sort(rng.integers(0, distinct, n))
    ids = (keys * 2654435761 + 7).astype(np.uint64)

    def make() -> embcore.EmbeddingTable:
        t = embcore.EmbeddingTable(8, seed=5, capacity=1 << 17, max_rows=64)
        if evict_first:  # rows freed by eviction wait for reuse
            t.insert(np.arange(500, dtype=np.uint64) * 3 + 1, timestamp=0)
            t.evict(now=0)
        return t

    one, many = make(), make()
    created_one = one.insert(ids, timestamp=9, threads=1)
    created_many = many.insert(ids, timestamp=9, threads=threads)
    assert created_many == created_one
    assert len(many) == len(one)
    w1, m1, order1 = _state(one)
    wt, mt, order_t = _state(many)
    assert wt == w1
    assert mt == m1
    if not spans:
        assert order_t == order1, "row order differs though no id spans two shares"
