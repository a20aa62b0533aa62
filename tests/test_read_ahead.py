"""runs.ReadAhead: the replay's loader reading the next chunk in a background thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from embcore import runs


def _live_readers() -> int:
    return sum(t.name == "embcore-read-ahead" for t in threading.enumerate())


@given(st.lists(st.integers(), max_size=30), st.booleans())
def test_items_come_in_order_with_or_without_the_thread(items: list[int], enabled: bool) -> None:
    with runs.ReadAhead(iter(items), enabled) as ahead:
        assert list(ahead) == items
        assert next(ahead, None) is None  # exhausted stays exhausted
    assert _live_readers() == 0


@pytest.mark.parametrize("enabled", [True, False])
def test_an_error_of_the_source_is_raised_where_its_item_would_come(enabled: bool) -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("bad row 3")

    got = []
    with runs.ReadAhead(source(), enabled) as ahead:
        with pytest.raises(ValueError, match="bad row 3"):
            for item in ahead:
                got.append(item)
    assert got == [1, 2]
    assert _live_readers() == 0


def test_leaving_early_stops_the_reader_after_at_most_the_item_it_is_on() -> None:
    produced = []

    def source() -> Iterator[int]:
        for k in range(1000):
            produced.append(k)
            yield k

    with runs.ReadAhead(source(), True) as ahead:
        assert next(ahead) == 0
        time.sleep(0.05)  # let it read ahead as far as it may
    assert _live_readers() == 0
    # One handed over, one in the queue, one offered, and one more read while the queue was
    # drained: never the whole log.
    assert len(produced) <= 4


def test_the_next_item_is_read_before_the_caller_asks_for_it() -> None:
    produced = []

    def source() -> Iterator[int]:
        for k in range(3):
            produced.append(k)
            yield k

    with runs.ReadAhead(source(), True) as ahead:
        assert next(ahead) == 0
        deadline = time.monotonic() + 10
        while len(produced) < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert len(produced) >= 2  # item 1 read while the caller holds item 0
        assert list(ahead) == [1, 2]
    with runs.ReadAhead(source(), False) as ahead:
        produced.clear()
        assert next(ahead) == 0
        time.sleep(0.02)
        assert produced == [0]  # in turn: nothing read ahead


def test_next_outside_the_with_block_is_refused() -> None:
    ahead = runs.ReadAhead(iter([1]), True)
    with pytest.raises(RuntimeError, match="inside its `with` block"):
        next(ahead)
