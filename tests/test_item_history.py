"""Progressive validation's per-item history (``validation._ItemHistory``) finds each event's item
slot through ``embcore._core.SlotIndex``; checked against the sorted-array bisection it replaced
(kept here as the reference), chunk by chunk: the same interaction index and age per event."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embcore import EmbcoreError
from embcore._core import SlotIndex
from embcore.validation import _ItemHistory


class _BisectedHistory:
    """The reference: ids kept sorted, found by np.searchsorted, new ones np.insert-ed."""

    def __init__(self) -> None:
        self.sorted_ids = np.zeros(0, dtype=np.uint64)
        self.slot_of = np.zeros(0, dtype=np.int64)
        self.counts = np.zeros(0, dtype=np.int64)
        self.first_seen = np.zeros(0, dtype=np.int64)

    def observe(
        self, items: npt.NDArray[np.uint64], timestamps: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        index = np.empty(items.size, dtype=np.int64)
        slots = self._slots(items, timestamps)
        seen: dict[int, int] = {}
        for k, s in enumerate(slots.tolist()):  # the obvious loop
            seen[s] = seen.get(s, 0) + 1
            index[k] = self.counts[s] + seen[s]
        age = timestamps - self.first_seen[slots]
        self.counts += np.bincount(slots, minlength=self.counts.size)
        return index, age

    def _slots(
        self, items: npt.NDArray[np.uint64], timestamps: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        where = np.searchsorted(self.sorted_ids, items)
        known = np.zeros(items.size, dtype=bool)
        if self.sorted_ids.size:
            known = self.sorted_ids[np.minimum(where, self.sorted_ids.size - 1)] == items
        slots = np.empty(items.size, dtype=np.int64)
        slots[known] = self.slot_of[where[known]]
        new_ids, first_at = np.unique(items[~known], return_index=True)
        first_time = timestamps[~known][first_at].astype(np.int64)
        new_slots = self.counts.size + np.arange(new_ids.size, dtype=np.int64)
        at = np.searchsorted(self.sorted_ids, new_ids)
        self.sorted_ids = np.insert(self.sorted_ids, at, new_ids)
        self.slot_of = np.insert(self.slot_of, at, new_slots)
        self.counts = np.concatenate([self.counts, np.zeros(new_ids.size, np.int64)])
        self.first_seen = np.concatenate([self.first_seen, first_time])
        slots[~known] = new_slots[np.searchsorted(new_ids, items[~known])]
        return slots


@settings(max_examples=60, deadline=None)
@given(
    chunks=st.lists(
        st.lists(st.integers(0, 40) | st.integers(2**63, 2**64 - 1), max_size=60), max_size=8
    )
)
def test_history_matches_the_bisected_reference(chunks: list[list[int]]) -> None:
    fast, slow = _ItemHistory(), _BisectedHistory()
    t = 0
    for chunk in chunks:
        items = np.array(chunk, dtype=np.uint64)
        times = t + np.arange(items.size, dtype=np.int64) * 3
        t += 3 * items.size + 1
        a, b = fast.observe(items, times), slow.observe(items, times)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert len(fast.index) == slow.sorted_ids.size


def test_slot_index_numbers_ids_by_first_sight() -> None:
    index = SlotIndex()
    slots, first = index.slots(np.array([5, 9, 5, 2], dtype=np.uint64))
    assert slots.tolist() == [0, 1, 0, 2] and first.tolist() == [0, 1, 3]
    slots, first = index.slots(np.array([2, 8], dtype=np.int64))
    assert slots.tolist() == [2, 3] and first.tolist() == [1] and len(index) == 4
    with pytest.raises(EmbcoreError, match="ids"):
        index.slots(np.array([-1], dtype=np.int64))
    assert len(index) == 4
