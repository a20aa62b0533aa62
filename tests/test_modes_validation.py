"""Tests for embcore.modes: what a Trainer rejects, and that a rejection changes nothing; event
time in seconds; runs of empty period boundaries published at O(1) cost."""

import time

import numpy as np
import pytest

import embcore
from embcore.errors import ConfigError, EmbcoreError
from embcore.modes import MODES, Trainer, parse_duration

U64 = np.uint64


def events(n: int, t0: int, t1: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 30, n).astype(U64)
    items = rng.integers(0, 20, n).astype(U64)
    labels = (rng.random(n) < 0.3).astype(np.float32)
    times = np.sort(rng.integers(t0, t1, n)).astype(np.int64)
    return users, items, labels, times


def ffm_events(n: int, t0: int, t1: int, seed: int = 0):
    users, items, labels, times = events(n, t0, t1, seed)
    return users, items, labels, times, {"tag": (items % 5).astype(U64)}


def state(trainer: Trainer) -> dict:
    """Everything a consume may change: counters, clock, buffered window, the shuffle stream,
    and every row of the live and the serving model."""
    tables = {}
    for which, model in (("live", trainer.model), ("serving", trainer.serving_model)):
        for field in model.fields:
            meta = model.table(field).metadata()
            ids, rows = model.embedding_of(field, None)
            tables[which, field] = (
                ids.tolist(),
                rows.tobytes(),
                {k: np.asarray(v).tobytes() for k, v in sorted(meta.items())},
            )
    return {
        "stats": trainer.stats(),
        "events": trainer.events_consumed,
        "window_events": trainer.window_events,
        "publishes": trainer.publishes,
        "clock": trainer._clock,
        "next_boundary": trainer._next_boundary,
        "rng": trainer._rng.bit_generator.state,
        "tables": tables,
    }


class _PublishRecorder:
    def __init__(self):
        self.calls = []

    def record_publish(self, table, timestamp):
        self.calls.append((len(table), timestamp))


def _trainer(mode: str, field_model: bool = False, **kw) -> Trainer:
    if field_model:
        ffm = embcore.FieldAwareFM(["user", "item", "tag"], dim=2, seed=1)
        return Trainer(mode, model=ffm, period=100, **kw)
    return Trainer(mode, period=100, dim=2, **kw)


def _warm(trainer: Trainer, field_model: bool) -> None:
    """Some valid events before the boundary at 100, so a bad call that crosses it would
    publish (batch/hybrid) if it were not rejected first."""
    if field_model:
        u, i, y, t, ctx = ffm_events(40, 0, 90)
        trainer.consume(u, i, y, t, context=ctx)
    else:
        trainer.consume(*events(40, 0, 90))


# -- a rejected consume changes nothing ---------------------------------------------------------

U2 = np.array([1, 2], U64)
Y2 = np.array([1.0, 0.0], np.float32)
T2 = np.array([150, 160])  # past the boundary at 100
BAD_CONSUMES = {
    "nan label": (dict(labels=np.array([1.0, np.nan], np.float32)), r"labels\[1\] = nan"),
    "label above 1": (
        dict(labels=np.array([2.0, 0.0], np.float32)),
        r"labels\[0\] = 2; the logistic loss needs labels in \[0, 1\]",
    ),
    "negative label": (dict(labels=np.array([1.0, -0.5])), r"labels\[1\] = -0.5"),
    "infinite label": (dict(labels=np.array([np.inf, 0.0])), r"labels\[0\] = inf"),
    "negative weight": (dict(weights=np.array([1.0, -1.0], np.float32)), r"weights\[1\] = -1"),
    "nan weight": (dict(weights=np.array([np.nan, 1.0])), r"weights\[0\] = nan"),
    "huge weight": (
        dict(weights=np.array([1.0, 1e7])),
        r"weights\[1\] = 1e\+07; weights must be finite numbers in \[0, 1e6\]",
    ),
    "negative user": (dict(users=[1, -1]), r"users\[1\] = -1"),
    "negative item": (dict(items=np.array([-3, 2])), r"items\[0\] = -3"),
    "unequal lengths": (dict(items=np.array([1, 2, 3], U64)), "equal lengths"),
    "short labels": (dict(labels=np.array([1.0], np.float32)), "equal lengths"),
    "ms timestamps": (dict(timestamps=np.array([1_700_000_000_000] * 2)), "not .*seconds"),
    "ns timestamps": (dict(timestamps=np.array([1_700_000_000_000_000_000] * 2)), "1e9"),
}


@pytest.mark.parametrize("field_model", [False, True], ids=["mf", "ffm"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(BAD_CONSUMES))
def test_rejected_consume_leaves_the_trainer_exactly_as_it_was(case, mode, field_model):
    trainer = _trainer(mode, field_model)
    _warm(trainer, field_model)
    before = state(trainer)
    change, message = BAD_CONSUMES[case]
    args = {"users": U2, "items": U2, "labels": Y2, "timestamps": T2, **change}
    if field_model:
        args["context"] = {"tag": np.array([3, 4], U64)}
    with pytest.raises(EmbcoreError, match=message):
        trainer.consume(**args)
    assert state(trainer) == before


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("users", np.array([1.0, 2.5])),
        ("users", np.array([1.0, 2.0])),  # integral floats too, as train rejects them
        ("items", ["a", "b"]),
        ("timestamps", np.array([150.0, 160.5])),
        ("labels", np.array(["yes", "no"])),
    ],
)
def test_wrong_dtypes_rejected_as_train_rejects_them(mode, name, value):
    trainer = _trainer(mode)
    _warm(trainer, False)
    before = state(trainer)
    args = {"users": U2, "items": U2, "labels": Y2, "timestamps": T2, name: value}
    with pytest.raises(TypeError, match=name):
        trainer.consume(**args)
    assert state(trainer) == before
    # The model's own train rejects the same arrays with the same kind of error.
    if name in ("users", "items"):
        with pytest.raises(TypeError):
            embcore.MatrixFactorization(dim=2).train(
                args["users"], args["items"], args["labels"], timestamps=args["timestamps"]
            )


@pytest.mark.parametrize("mode", MODES)
def test_bad_context_column_rejected_before_anything_changes(mode):
    trainer = _trainer(mode, field_model=True)
    _warm(trainer, True)
    before = state(trainer)
    with pytest.raises(EmbcoreError, match=r"context\['tag'\]\[1\] = -4"):
        trainer.consume(U2, U2, Y2, T2, context={"tag": np.array([3, -4])})
    with pytest.raises(EmbcoreError, match="context has no 'tag' column"):
        trainer.consume(U2, U2, Y2, T2, context={"hour": U2})
    with pytest.raises(EmbcoreError, match="equal lengths"):
        trainer.consume(U2, U2, Y2, T2, context={"tag": np.array([3], U64)})
    assert state(trainer) == before


@pytest.mark.parametrize("mode", ["batch", "hybrid"])
def test_out_of_order_events_rejected_before_anything_changes(mode):
    trainer = _trainer(mode)
    _warm(trainer, False)
    before = state(trainer)
    with pytest.raises(EmbcoreError, match=r"timestamps\[1\] = 140 .* time order"):
        trainer.consume(U2, U2, Y2, np.array([150, 140]))
    with pytest.raises(EmbcoreError, match=r"timestamps\[0\] = 50 is before the trainer's clock"):
        trainer.consume(U2, U2, Y2, np.array([50, 160]))
    assert state(trainer) == before


def test_squared_loss_takes_ratings_as_train_does():
    model = embcore.MatrixFactorization(dim=2, loss="squared")
    trainer = Trainer("batch", model=model, period=100)
    trainer.consume(U2, U2, np.array([4.5, 1.0], np.float32), np.array([1, 2]))
    with pytest.raises(
        EmbcoreError,
        match=r"labels\[0\] = 2e\+06; the squared loss takes finite labels in \[-1e6, 1e6\]",
    ):
        trainer.consume(U2, U2, np.array([2e6, 1.0], np.float32), np.array([3, 4]))
    trainer.flush()
    assert trainer.publishes == 1 and len(trainer.serving_model.items) == 2


def test_batch_keeps_its_valid_window_after_a_rejected_consume():
    """A NaN label is rejected at consume, not at flush: the valid events buffered before it
    are still trained on and published."""
    trainer = Trainer("batch", period=1000, dim=2, seed=0)
    u, i, y, t = events(50, 0, 900)
    trainer.consume(u, i, y, t)
    bad = y[:2].copy()
    bad[1] = np.nan
    with pytest.raises(EmbcoreError, match=r"labels\[1\] = nan"):
        trainer.consume(u[:2], i[:2], bad, np.array([950, 960]))
    assert trainer.events_consumed == 50 and trainer.window_events == 50
    trainer.flush(1000)
    reference = Trainer("batch", period=1000, dim=2, seed=0)
    reference.consume(u, i, y, t)
    reference.flush(1000)
    assert trainer.publishes == reference.publishes == 1
    np.testing.assert_array_equal(
        trainer.serving_model.items.weights(), reference.serving_model.items.weights()
    )


def test_realtime_rejection_does_not_count_the_events():
    trainer = Trainer("realtime", dim=2)
    with pytest.raises(EmbcoreError):
        trainer.consume(U2, U2, np.array([1.0, np.nan], np.float32), T2)
    assert trainer.events_consumed == 0 and trainer.updates == 0
    assert len(trainer.model.items) == 0


def test_integer_labels_and_lists_still_accepted():
    """consume keeps converting array-likes of any integer or float dtype (lists, int labels)."""
    listed, typed = Trainer("realtime", dim=2, seed=0), Trainer("realtime", dim=2, seed=0)
    listed.consume([1, 2], [3, 4], [1, 0], [0, 1], [1, 2])
    typed.consume(
        np.array([1, 2], U64),
        np.array([3, 4], U64),
        np.array([1.0, 0.0], np.float32),
        np.array([0, 1]),
        np.array([1.0, 2.0], np.float32),
    )
    np.testing.assert_array_equal(listed.model.items.weights(), typed.model.items.weights())
    assert listed.stats() == {**typed.stats(), "train_seconds": listed.train_seconds}


def test_scoring_rejects_negative_and_float_ids():
    trainer = Trainer("realtime", dim=2)
    with pytest.raises(EmbcoreError, match=r"users\[0\] = -1 is negative"):
        trainer.serving_scores(np.array([-1]), U2)
    with pytest.raises(EmbcoreError, match=r"pool\[1\] = -7 is negative"):
        trainer.serving_scores(U2, np.array([1, -7]))
    with pytest.raises(TypeError, match="items must be a 1-D array of uint64"):
        trainer.score(U2, np.array([1.5, 2.0]))
    assert len(trainer.model.users) == len(trainer.model.items) == 0


# -- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "weekly"}, "mode must be one of 'realtime', 'batch', 'hybrid', got 'weekly'"),
        ({"mode": "batch", "period": 0}, "period must be a positive duration .* got 0"),
        ({"mode": "batch", "period": "soon"}, "got 'soon'"),
        ({"mode": "batch", "epochs": 0}, "epochs must be an integer >= 1, got 0"),
        ({"mode": "realtime", "threads": -2}, "threads must be an integer >= 1, got -2"),
        ({"mode": "realtime", "user_field": "who"}, "user_field='who' is not a field"),
    ],
)
def test_bad_settings_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Trainer(**kwargs)


def test_parse_duration_raises_config_error():
    with pytest.raises(ConfigError, match="got '-1h'"):
        parse_duration("-1h")


# -- event time is seconds ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_advance_and_flush_reject_times_that_are_not_seconds(mode):
    trainer = _trainer(mode)
    _warm(trainer, False)
    before = state(trainer)
    for call in (trainer.advance, trainer.flush):
        with pytest.raises(EmbcoreError, match=r"not .*seconds.*divide"):
            call(1_700_000_000_000_000_000)
    assert state(trainer) == before
    trainer.advance(10**11)  # the largest time in seconds accepted: the year 5138


# -- runs of empty boundaries ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["batch", "hybrid"])
def test_a_long_gap_publishes_once_at_its_last_boundary(mode):
    """Crossing k boundaries publishes the window at the first and the unchanged model once
    more at the last; ``publishes`` counts all k (each is a boundary serving was published
    at) while the monitor sees two publishes."""
    recorder = _PublishRecorder()
    trainer = Trainer(mode, period=1, monitor=recorder, dim=2)
    trainer.consume(*events(20, 0, 1))  # all at t = 0: the window of the boundary at 1
    began = time.perf_counter()
    trainer.consume(*events(5, 300_000, 300_001, seed=1))
    assert time.perf_counter() - began < 0.5
    assert trainer.publishes == 300_000
    assert [t for _, t in recorder.calls] == [1, 300_000]
    assert recorder.calls[0][0] == recorder.calls[1][0] > 0


@pytest.mark.parametrize("mode", ["batch", "hybrid"])
def test_a_gap_of_1e10_seconds_costs_constant_time(mode):
    recorder = _PublishRecorder()
    trainer = Trainer(mode, period=1, monitor=recorder, dim=2)
    trainer.consume(*events(20, 0, 1))
    began = time.perf_counter()
    assert trainer.advance(10**10) == 10**10
    trainer.consume(*events(5, 10**10 + 5, 10**10 + 6, seed=1))
    trainer.flush()
    assert time.perf_counter() - began < 0.5
    # advance: 1e10 boundaries; the consume: 5 empty ones; flush: the window at its last event.
    assert trainer.publishes == 10**10 + 5 + 1
    assert [t for _, t in recorder.calls] == [1, 10**10, 10**10 + 5, 10**10 + 5]


def test_an_empty_run_publishes_the_same_model_as_boundary_by_boundary():
    """Three boundaries crossed one call at a time and all at once give the same serving model
    and counters; the monitor sees the run's last boundary."""
    steps, jump = (
        Trainer("batch", period=100, dim=2, seed=0, monitor=_PublishRecorder()) for _ in "ab"
    )
    for trainer in (steps, jump):
        trainer.consume(*events(40, 0, 90))
    for t in (100, 200, 300, 400):
        steps.advance(t)
    assert jump.advance(400) == 4
    assert steps.publishes == jump.publishes == 4
    assert [t for _, t in jump.monitor.calls] == [100, 400]
    assert state(jump)["tables"] == state(steps)["tables"]


def test_an_empty_run_evicts_what_its_boundaries_would_have():
    """Item rows past their TTL at an inner boundary of an empty run are evicted (once) and the
    snapshot published at the run's last boundary no longer holds them."""
    expiring = Trainer("batch", period=100, item_lifecycle={"ttl": 250}, dim=2)
    expiring.consume(*events(40, 0, 90))
    expiring.advance(100)
    assert len(expiring.serving_model.items) > 0 and expiring.evicted == 0
    expiring.advance(10**9)
    assert expiring.publishes == 10**7
    assert len(expiring.serving_model.items) == 0 and expiring.evicted > 0
