"""Batch and hybrid retrains over a trailing window, warm or from scratch.

The fast path (:class:`embcore.modes.Trainer`) is checked bit for bit (``shuffle=False``,
one thread) against a slow, obvious re-implementation that keeps every event and, at each
boundary ``b``, trains one event at a time on those with timestamps in ``[b - window, b)``,
counting an event only the first time it is trained.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import embcore
from embcore.errors import CapacityError, ConfigError
from embcore.modes import Trainer

PERIOD = 3600


def _stream(n: int, seed: int, span: int = 12 * PERIOD, items: int = 40) -> tuple:
    rng = np.random.default_rng(seed)
    u = rng.integers(0, 15, n).astype(np.uint64)
    i = rng.integers(0, items, n).astype(np.uint64)
    y = (rng.random(n) < 0.4).astype(np.float32)
    t = np.sort(rng.integers(0, span, n)).astype(np.int64)
    return u, i, y, t


def _factory(**extra: Any):
    return lambda: embcore.MatrixFactorization(dim=4, seed=3, **extra)


class Reference:
    """Every event kept; each retrain re-reads the window from the full log."""

    def __init__(self, mode: str, window: int | None, init: str, epochs: int, **extra: Any):
        self.mode, self.window, self.init, self.epochs = mode, window, init, epochs
        self.factory = _factory(**extra)
        self.model = self.factory()
        self.serving = self.model.copy()
        self.events: list[tuple[int, int, float, int]] = []
        self.trained: list[bool] = []
        self.counts: dict[int, int] = {}
        self.next_boundary: int | None = None
        self.with_training = 0

    def _train(self, model, chosen: list[int], counted: list[bool]) -> None:
        """Train ``chosen`` events in order, one call per run of equal ``counted`` flags (the
        core's global bias is published once per call, so calls must match the fast path's:
        an old part, then a new part)."""
        start = 0
        while start < len(chosen):
            stop = start
            while stop < len(chosen) and counted[stop] == counted[start]:
                stop += 1
            ev = [self.events[e] for e in chosen[start:stop]]
            model.train(
                np.array([x[0] for x in ev], np.uint64),
                np.array([x[1] for x in ev], np.uint64),
                np.array([x[2] for x in ev], np.float32),
                timestamps=np.array([x[3] for x in ev], np.int64),
                count_interactions=counted[start],
            )
            start = stop

    def _retrain(self, end: int, inclusive: bool) -> None:
        b = -(-end // PERIOD) * PERIOD  # the first boundary >= end
        times = np.array([ev[3] for ev in self.events], dtype=np.int64)
        inside = (times <= end) if inclusive else (times < end)
        if self.window is None:
            chosen = [e for e in np.flatnonzero(inside) if not self.trained[e]]
        else:
            chosen = list(np.flatnonzero(inside & (times >= b - self.window)))
        if not chosen:
            return
        self.with_training += 1
        model = self.factory() if self.init == "scratch" else self.model
        for epoch in range(self.epochs):
            if self.init == "scratch":
                flags = [epoch == 0] * len(chosen)
            else:
                flags = [
                    self.mode == "batch" and epoch == 0 and not self.trained[e] for e in chosen
                ]
            self._train(model, chosen, flags)
        for e in chosen:
            if self.mode == "batch" and not self.trained[e]:
                self.counts[self.events[e][1]] = self.counts.get(self.events[e][1], 0) + 1
            self.trained[e] = True
        self.model = model
        if self.mode == "batch":
            self.serving = model.copy()

    def consume(self, u, i, y, t) -> None:
        pending: list[int] = []  # hybrid: the real-time events since the last boundary

        def real_time() -> None:
            self._train(self.model, pending, [True] * len(pending))
            for e in pending:
                self.counts[self.events[e][1]] = self.counts.get(self.events[e][1], 0) + 1
            pending.clear()

        for e in range(len(t)):
            if self.next_boundary is None:
                self.next_boundary = (int(t[e]) // PERIOD + 1) * PERIOD
            while self.next_boundary <= int(t[e]):
                real_time()
                self._retrain(self.next_boundary, inclusive=False)
                self.next_boundary += PERIOD
            self.events.append((int(u[e]), int(i[e]), float(y[e]), int(t[e])))
            self.trained.append(False)
            if self.mode == "hybrid":
                pending.append(len(self.events) - 1)
        real_time()

    def flush(self, end: int) -> None:
        assert self.next_boundary is not None
        while self.next_boundary <= end:
            self._retrain(self.next_boundary, inclusive=False)
            self.next_boundary += PERIOD
        if not all(self.trained):
            self._retrain(end, inclusive=True)

    def kept(self, next_boundary: int) -> int:
        """Events a trainer must still hold: untrained, or inside the next window."""
        times = np.array([ev[3] for ev in self.events], dtype=np.int64)
        untrained = ~np.array(self.trained, dtype=bool)
        if self.window is None:
            return int(untrained.sum())
        return int((untrained | (times >= next_boundary - self.window)).sum())


def _rows(table) -> tuple[np.ndarray, np.ndarray]:
    ids, rows = table.view()
    order = np.argsort(ids)
    return ids[order], rows[order]


def _assert_same_model(a, b) -> None:
    for field in ("user", "item"):
        ids_a, rows_a = _rows(a.table(field))
        ids_b, rows_b = _rows(b.table(field))
        np.testing.assert_array_equal(ids_a, ids_b)
        np.testing.assert_array_equal(rows_a, rows_b)
    assert a.global_bias == b.global_bias


@settings(max_examples=25, deadline=None)
@given(
    mode=st.sampled_from(["batch", "hybrid"]),
    window_periods=st.sampled_from([None, 1, 2, 3]),
    extra_seconds=st.integers(0, PERIOD - 1),
    init=st.sampled_from(["warm", "scratch"]),
    epochs=st.integers(1, 2),
    cuts=st.lists(st.integers(1, 199), max_size=4),
    seed=st.integers(0, 2**16),
    gap=st.booleans(),
)
def test_retrains_equal_the_keep_everything_reference(
    mode, window_periods, extra_seconds, init, epochs, cuts, seed, gap
):
    if mode == "hybrid" and init == "scratch":
        init = "warm"
    window = None if window_periods is None else window_periods * PERIOD + extra_seconds
    u, i, y, t = _stream(200, seed)
    if gap:  # a long quiet spell: the window drains over several boundaries
        t = t + np.where(np.arange(200) >= 120, 9 * PERIOD, 0)
    fast = Trainer(
        mode, _factory(), period=PERIOD, window=window, init=init, epochs=epochs, shuffle=False
    )
    slow = Reference(mode, window, init, epochs)
    bounds = [0, *sorted(set(cuts)), 200]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        fast.consume(u[a:b], i[a:b], y[a:b], t[a:b])
        slow.consume(u[a:b], i[a:b], y[a:b], t[a:b])
        assert fast.buffered_events == slow.kept(fast._next_boundary)
        _assert_same_model(fast.serving_model, slow.serving if mode == "batch" else slow.model)
    end = int(t[-1]) + 1
    fast.flush(end)
    slow.flush(end)
    _assert_same_model(fast.serving_model, slow.serving if mode == "batch" else slow.model)
    assert fast.publishes_with_training == slow.with_training
    ids, counts = fast.item_interactions()
    assert dict(zip(ids.tolist(), counts.tolist(), strict=True)) == {
        k: v for k, v in slow.counts.items() if k in set(ids.tolist())
    }
    # Each event counted once, whatever the window: the counts sum to the events trained.
    if init == "warm":
        assert int(counts.sum()) == 200


def test_window_equal_to_the_period_is_the_default_even_shuffled():
    u, i, y, t = _stream(400, 5)
    a = Trainer("batch", period=PERIOD, dim=4, seed=2, epochs=2)
    b = Trainer("batch", period=PERIOD, window=PERIOD, dim=4, seed=2, epochs=2)
    for tr in (a, b):
        tr.consume(u, i, y, t)
        tr.advance(int(t[-1]) + 2 * PERIOD)
    _assert_same_model(a.serving_model, b.serving_model)
    assert a.buffered_events == b.buffered_events == 0


def test_trailing_window_counts_each_event_once_but_trains_it_again():
    u, i, y, t = _stream(300, 6)
    once = Trainer("batch", period=PERIOD, dim=4, seed=1, shuffle=False)
    day = Trainer("batch", period=PERIOD, window=4 * PERIOD, dim=4, seed=1, shuffle=False)
    for tr in (once, day):
        tr.consume(u, i, y, t)
        tr.flush()
    np.testing.assert_array_equal(
        np.sort(once.item_interactions()[1]), np.sort(day.item_interactions()[1])
    )
    assert int(day.item_interactions()[1].sum()) == 300
    assert day.updates > 2 * once.updates  # every event read by up to four retrains
    assert day.stats()["window_seconds"] == 4 * PERIOD


def test_memory_is_bounded_by_the_window():
    # 48 h of steady traffic through a 6 h window: never more than ~7 h of events held.
    u, i, y, t = _stream(4800, 7, span=48 * PERIOD)
    tr = Trainer("batch", period=PERIOD, window=6 * PERIOD, dim=4, seed=0)
    most = 0
    for a in range(0, 4800, 100):
        tr.consume(u[a : a + 100], i[a : a + 100], y[a : a + 100], t[a : a + 100])
        most = max(most, tr.buffered_events)
    per_hour = 4800 / 48
    assert most <= 8 * per_hour  # without the slide it would reach 4800
    assert tr.stats()["buffered_events"] == tr.buffered_events


def test_a_failed_retrain_keeps_the_window():
    u, i, y, t = _stream(60, 8, span=2 * PERIOD, items=40)
    for init in ("warm", "scratch"):
        tr = Trainer("batch", _factory(capacity=12), period=PERIOD, window=2 * PERIOD, init=init)
        early = t < PERIOD
        tr.consume(u[early], i[early], y[early], t[early])
        before = (tr.window_events, tr.buffered_events, tr.publishes, tr.events_consumed)
        snapshot = tr.serving_model
        for _ in range(2):  # retried, and it fails the same way: nothing was lost
            with pytest.raises(CapacityError):
                tr.advance(PERIOD)
            assert (tr.window_events, tr.buffered_events, tr.publishes, tr.events_consumed) == (
                before
            )
            assert tr.serving_model is snapshot and tr.publishes_with_training == 0
        with pytest.raises(CapacityError):  # consume keeps the events before the boundary
            tr.consume(u[~early], i[~early], y[~early], t[~early])
        assert tr.events_consumed == before[3] and tr.window_events == before[0]


class WindowMachine(RuleBasedStateMachine):
    """Random consumes, advances and flushes: the trainer matches the reference throughout."""

    def __init__(self) -> None:
        super().__init__()
        self.rng = np.random.default_rng(0)
        self.window = 2 * PERIOD + 600
        self.fast = Trainer("batch", _factory(), period=PERIOD, window=self.window, shuffle=False)
        self.slow = Reference("batch", self.window, "warm", 1)
        self.now = 0

    @rule(n=st.integers(1, 30), spread=st.integers(0, 3 * PERIOD), seed=st.integers(0, 99))
    def consume(self, n, spread, seed):
        rng = np.random.default_rng(seed)
        t = np.sort(self.now + rng.integers(0, spread + 1, n)).astype(np.int64)
        u = rng.integers(0, 8, n).astype(np.uint64)
        i = rng.integers(0, 20, n).astype(np.uint64)
        y = (rng.random(n) < 0.5).astype(np.float32)
        self.fast.consume(u, i, y, t)
        self.slow.consume(u, i, y, t)
        self.now = int(t[-1])

    @precondition(lambda self: self.slow.events)
    @rule(by=st.integers(0, 4 * PERIOD))
    def flush(self, by):
        self.now += by
        self.fast.flush(self.now)
        self.slow.flush(self.now)

    @invariant()
    def same(self):
        if self.fast._next_boundary is not None:
            assert self.fast.buffered_events == self.slow.kept(self.fast._next_boundary)
        _assert_same_model(self.fast.serving_model, self.slow.serving)


TestWindowMachine = WindowMachine.TestCase
TestWindowMachine.settings = settings(max_examples=20, stateful_step_count=12, deadline=None)


def test_scratch_hands_the_rows_of_departed_items_to_the_monitor():
    class Recorder:
        def __init__(self):
            self.rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]] = []

        def record_publish(self, table, t):  # pragma: no cover - scratch uses record_rows
            raise AssertionError("a rebuilt model's counts are its window's: use record_rows")

        def record_rows(self, ids, rows, counts, first_seen, t):
            self.rows.append((ids.copy(), rows.copy(), counts.copy(), t))

    rec = Recorder()
    tr = Trainer("batch", _factory(), period=PERIOD, init="scratch", monitor=rec, shuffle=False)
    first = np.array([0, 1, 1], np.uint64)
    tr.consume(first, first, np.ones(3, np.float32), np.array([10, 20, 30]))
    tr.advance(PERIOD)
    published = tr.serving_model.items.get(first[:2]).copy()
    later = np.array([1], np.uint64)
    tr.consume(later, later, np.ones(1, np.float32), np.array([PERIOD + 5]))
    tr.advance(2 * PERIOD)  # item 0 has no event in [1 h, 2 h): it leaves the model
    assert tr.dropped == 1 and 0 not in tr.serving_model.items
    gone = [r for r in rec.rows if r[3] == 2 * PERIOD and 0 in r[0].tolist()]
    ids, rows, counts, _ = gone[0]
    k = ids.tolist().index(0)
    np.testing.assert_array_equal(rows[k], published[0])
    assert counts[k] == 1
    # The publish records the ledger's counts: item 1 has 3 interactions in all.
    last = [r for r in rec.rows if r[3] == 2 * PERIOD and 1 in r[0].tolist()][-1]
    assert last[2][last[0].tolist().index(1)] == 3
    assert dict(zip(*map(np.ndarray.tolist, tr.item_interactions()), strict=True)) == {1: 3}


def test_scratch_starts_from_the_factory_each_retrain():
    u, i, y, t = _stream(200, 9)
    tr = Trainer("batch", _factory(), period=PERIOD, window=2 * PERIOD, init="scratch")
    tr.consume(u, i, y, t)
    tr.advance(int(t[-1]) + 1)
    # A scratch model only holds the items of its last window.
    b = tr.trained_publish_times[-1]
    recent = np.unique(i[(t >= b - 2 * PERIOD) & (t < b)])
    np.testing.assert_array_equal(np.sort(tr.serving_model.items.ids()), recent)


def test_reset_optimizer_equals_the_weights_in_a_fresh_optimizer():
    u, i, y, t = _stream(300, 10)
    plain = Trainer("batch", _factory(bias=False), period=PERIOD, shuffle=False)
    reset = Trainer(
        "batch", _factory(bias=False), period=PERIOD, shuffle=False, reset_optimizer=True
    )
    first = t < PERIOD
    for tr in (plain, reset):
        tr.consume(u[first], i[first], y[first], t[first])
        tr.advance(PERIOD)
    # The first retrain starts from the initial model either way; the second one differs.
    _assert_same_model(plain.serving_model, reset.serving_model)
    before = reset.serving_model.copy()
    nxt = (t >= PERIOD) & (t < 2 * PERIOD)
    for tr in (plain, reset):
        tr.consume(u[nxt], i[nxt], y[nxt], t[nxt])
        tr.advance(2 * PERIOD)
    want = _factory(bias=False)()
    for field in ("user", "item"):
        want.table(field).set(*before.table(field).view())
    want.train(u[nxt], i[nxt], y[nxt], timestamps=t[nxt])
    _assert_same_model(reset.serving_model, want)
    assert not np.array_equal(
        _rows(plain.serving_model.items)[1], _rows(reset.serving_model.items)[1]
    )
    ids, counts = reset.item_interactions()
    assert int(counts.sum()) == int(first.sum() + nxt.sum())


def test_reset_optimizer_keeps_biases_and_counts_and_steps_from_a_fresh_accumulator():
    # The default MF (biases) with an Adagrad step checked against numpy after the reset.
    m = embcore.MatrixFactorization(dim=4, seed=1, optimizer="adagrad", learning_rate=0.1)
    u, i = np.array([1, 2, 1], np.uint64), np.array([7, 7, 8], np.uint64)
    m.train(u, i, np.array([1, 0, 1], np.float32))
    meta_before = m.items.metadata()
    bias_before = m.items.view()
    m.reset_optimizer()
    for table in (m.users, m.items):
        assert (table.optimizer_state() == m.optimizer["initial_accumulator"]).all()
    meta_after = m.items.metadata()
    for key in meta_before:
        np.testing.assert_array_equal(meta_before[key], meta_after[key])
    np.testing.assert_array_equal(bias_before[1], m.items.view()[1])
    one_u, one_i = np.array([1], np.uint64), np.array([7], np.uint64)
    wu, wi = m.users.get(one_u)[0].astype(np.float64), m.items.get(one_i)[0].astype(np.float64)
    g = 1 / (1 + np.exp(-float(m.score(one_u, one_i)[0]))) - 1.0  # label 1
    m.train(one_u, one_i, np.ones(1, np.float32))
    opt = m.optimizer
    for w, other, got in ((wu, wi, m.users.get(one_u)[0]), (wi, wu, m.items.get(one_i)[0])):
        grad = g * other
        acc = opt["initial_accumulator"] + grad * grad
        want = w - opt["learning_rate"] * grad / (np.sqrt(acc) + opt["eps"])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_reset_optimizer_works_on_the_default_mf_in_a_batch_trainer():
    u, i, y, t = _stream(300, 11)
    tr = Trainer("batch", period=PERIOD, window=2 * PERIOD, reset_optimizer=True, dim=4)
    tr.consume(u, i, y, t)
    tr.flush()
    assert tr.stats()["publishes_with_training"] >= 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window": "30m"}, "window must be at least the period"),
        ({"window": "-1h"}, "window must be a positive duration"),
        ({"init": "cold"}, "init must be one of 'warm', 'scratch'"),
        ({"init": "scratch", "model": embcore.MatrixFactorization(dim=2)}, "needs a factory"),
        ({"reset_optimizer": "yes"}, "reset_optimizer must be True or False"),
        ({"init": "scratch", "reset_optimizer": True}, "drop reset_optimizer"),
    ],
)
def test_bad_window_options_raise_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Trainer("batch", period="1h", **kwargs)


def test_hybrid_refuses_a_rebuilt_model():
    with pytest.raises(ConfigError, match="hybrid mode consolidates the live model"):
        Trainer("hybrid", init="scratch")
    Trainer("realtime", init="scratch", window="1d")  # ignored, as period and epochs are


def test_degenerate_runs_are_visible_in_stats():
    tr = Trainer("batch", period=PERIOD, dim=2)
    tr.advance(0)
    assert tr.stats()["first_publish_time"] is None
    tr.advance(3 * PERIOD)  # three empty boundaries: published once, counted three times
    one = np.array([1], np.uint64)
    tr.consume(one, one, np.ones(1, np.float32), np.array([3 * PERIOD + 1]))
    tr.advance(5 * PERIOD)
    stats = tr.stats()
    assert stats["publishes"] == 5 and stats["publishes_with_training"] == 1
    assert stats["first_publish_time"] == PERIOD
    assert stats["first_trained_publish_time"] == 4 * PERIOD
    assert tr.trained_publish_times == [4 * PERIOD]


def test_burn_in_by_consume_and_flush():
    """Pre-train every mode on a first day, then serve from models that saw all of it."""
    u, i, y, t = _stream(300, 11, span=30 * PERIOD)
    day = t < 24 * PERIOD
    out = {}
    for mode in ("realtime", "batch", "hybrid"):
        tr = Trainer(mode, _factory(), period=6 * PERIOD, window="1d", shuffle=False)
        tr.consume(u[day], i[day], y[day], t[day])
        tr.flush(24 * PERIOD - 1)
        assert int(tr.item_interactions()[1].sum()) == int(day.sum())
        out[mode] = tr
        tr.consume(u[~day], i[~day], y[~day], t[~day])  # the stream goes on after the flush
        tr.flush()
        assert int(tr.item_interactions()[1].sum()) == 300
    assert out["batch"].stats()["first_trained_publish_time"] == 6 * PERIOD


def test_weighted_and_unweighted_chunks_keep_their_weights():
    """A window mixing chunks with and without weights trains the unweighted ones at weight 1
    (it used to drop every weight of the window)."""
    u, i, y, t = _stream(80, 12, span=PERIOD - 1)
    w = np.linspace(0.5, 3.0, 40).astype(np.float32)
    tr = Trainer("batch", _factory(), period=PERIOD, shuffle=False)
    tr.consume(u[:40], i[:40], y[:40], t[:40], weights=w)
    tr.consume(u[40:], i[40:], y[40:], t[40:])
    tr.advance(PERIOD)
    want = _factory()()
    want.train(u, i, y, weights=np.concatenate([w, np.ones(40, np.float32)]), timestamps=t)
    _assert_same_model(tr.serving_model, want)
    assert "window" not in repr(tr)
    assert "window=86400, init='scratch'" in repr(Trainer("batch", window="1d", init="scratch"))
