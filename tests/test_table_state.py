"""A stateful model of one EmbeddingTable with a lifecycle, checked by Hypothesis."""

import os
import tempfile

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import embcore
from embcore import EmbeddingTable

DIM = 3
CAPACITY = 12
MAX_ROWS = 6
id_lists = st.lists(st.integers(0, 30), min_size=1, max_size=8)


def u64(xs) -> np.ndarray:  # noqa: ANN001
    return np.asarray(xs, dtype=np.uint64)


class TableModel(RuleBasedStateMachine):
    """Live ids and their rows as a plain dict; the table must agree."""

    def __init__(self) -> None:
        super().__init__()
        self.table = EmbeddingTable(DIM, capacity=CAPACITY, max_rows=MAX_ROWS, seed=4)
        self.rows: dict[int, np.ndarray] = {}
        self.version = self.table.version
        # versions at which each id was last written by set()/insert()
        self.written: dict[int, int] = {}
        self.synced = self.table.version
        self.removed: set[int] = set()  # evicted since the last sync

    def _row_of_new(self, i: int) -> np.ndarray:
        return self.table.get(u64([i]))[0].copy()

    def _check_version(self, changed: bool) -> None:
        v = self.table.version
        assert v >= self.version
        assert (v > self.version) == changed
        self.version = v

    @rule(ids=id_lists)
    def insert(self, ids: list[int]) -> None:
        new = sorted(set(ids) - self.rows.keys())
        if len(new) > CAPACITY - len(self.rows):
            try:
                self.table.insert(u64(ids))
            except embcore.CapacityError:
                self._check_version(changed=False)
                return
            raise AssertionError("insert beyond capacity succeeded")
        assert self.table.insert(u64(ids)) == len(new)
        self._check_version(changed=True)
        for i in new:
            self.rows[i] = self._row_of_new(i)
            self.written[i] = self.version

    @rule(ids=id_lists, data=st.data())
    def set(self, ids: list[int], data: st.DataObject) -> None:
        values = np.asarray(
            data.draw(
                st.lists(
                    st.floats(-4, 4, width=32), min_size=len(ids) * DIM, max_size=len(ids) * DIM
                )
            ),
            dtype=np.float32,
        ).reshape(len(ids), DIM)
        new = set(ids) - self.rows.keys()
        if len(new) > CAPACITY - len(self.rows):
            try:
                self.table.set(u64(ids), values)
            except embcore.CapacityError:
                self._check_version(changed=False)
                return
            raise AssertionError("set beyond capacity succeeded")
        assert self.table.set(u64(ids), values) == len(new)
        self._check_version(changed=True)
        for k, i in enumerate(ids):
            self.rows[i] = values[k].copy()
            self.written[i] = self.version

    @rule(ids=id_lists)
    def get(self, ids: list[int]) -> None:
        got = self.table.get(u64(ids), default=np.nan)
        for k, i in enumerate(ids):
            if i in self.rows:
                np.testing.assert_array_equal(got[k], self.rows[i])
            else:
                assert np.isnan(got[k]).all()

    @rule(budget=st.integers(1, 20))
    def evict(self, budget: int) -> None:
        out = self.table.evict(now=0, budget=budget)
        gone = out["ids"].tolist()
        self._check_version(changed=bool(gone))  # a removal is a change
        assert len(set(gone)) == len(gone)
        for k, i in enumerate(gone):
            np.testing.assert_array_equal(out["rows"][k], self.rows.pop(i))
            self.written.pop(i)
        # only the excess over max_rows is evicted (no ttl)
        assert not gone or len(self.rows) >= MAX_ROWS
        self.removed.update(gone)

    @rule()
    def copy(self) -> None:
        c = self.table.copy()
        ids, w = c.view()
        assert sorted(ids.tolist()) == sorted(self.rows)
        for k, i in enumerate(ids.tolist()):
            np.testing.assert_array_equal(w[k], self.rows[i])

    @rule()
    def save_and_load(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "t.embc")
            self.table.save(p)
            back = EmbeddingTable.load(p)
        assert sorted(back.ids().tolist()) == sorted(self.rows)
        if self.rows:
            keys = sorted(self.rows)
            np.testing.assert_array_equal(back.get(u64(keys)), self.table.get(u64(keys)))

    @rule()
    def changed_since(self) -> None:
        delta = self.table.changed_since(self.synced)
        expected = {i for i, v in self.written.items() if v > self.synced}
        assert expected <= set(delta["ids"].tolist())
        assert set(delta["ids"].tolist()) <= set(self.rows)
        for k, i in enumerate(delta["ids"].tolist()):
            np.testing.assert_array_equal(delta["rows"][k], self.rows[i])
        assert self.removed - self.rows.keys() <= set(delta["removed"].tolist())
        # The call bumps the version and returns the one before, so a writer in
        # flight tags what it changes above the returned version.
        assert delta["version"] == self.table.version - 1
        self.version = self.table.version
        self.synced = delta["version"]
        self.removed.clear()

    @invariant()
    def view_matches_the_model(self) -> None:
        ids, w = self.table.view()
        meta = self.table.metadata()
        assert ids.tolist() == meta["ids"].tolist()
        assert sorted(ids.tolist()) == sorted(self.rows)
        assert len(self.table) == len(self.rows)
        for k, i in enumerate(ids.tolist()):
            np.testing.assert_array_equal(w[k], self.rows[i])


TableModel.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_table_state = TableModel.TestCase
