"""Tests for embcore.modes: Trainer semantics of the realtime, batch and hybrid modes."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import embcore
from embcore.modes import MODES, Trainer, parse_duration
from embcore.sim import SimConfig, World

U64 = np.uint64


def events(n: int, t0: int, t1: int, seed: int = 0, n_users: int = 30, n_items: int = 20):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n).astype(U64)
    items = rng.integers(0, n_items, n).astype(U64)
    labels = (rng.random(n) < 0.3).astype(np.float32)
    times = np.sort(rng.integers(t0, t1, n)).astype(np.int64)
    return users, items, labels, times


def numpy_scores(model: embcore.MatrixFactorization, users, pool) -> np.ndarray:
    """Slow, obvious reference: per-pair loops over the tables' metadata."""
    meta = model.items.metadata()
    bias = dict(zip(meta["ids"].tolist(), meta["bias"].tolist(), strict=True))
    out = np.zeros((len(users), len(pool)))
    for r, u in enumerate(users):
        uv = model.users.get(np.array([u], U64), default=0.0)[0].astype(np.float64)
        for p, i in enumerate(pool):
            iv = model.items.get(np.array([i], U64), default=0.0)[0].astype(np.float64)
            out[r, p] = uv @ iv + bias.get(int(i), 0.0) + model.global_bias
    return out


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "weekly"}, "mode must be one of"),
        ({"mode": "batch", "period": 0}, "period must be a positive duration"),
        ({"mode": "batch", "period": -3600}, "period must be a positive duration"),
        ({"mode": "batch", "period": "soon"}, "period must be a positive duration"),
        ({"mode": "batch", "epochs": 0}, "epochs must be an integer >= 1"),
        ({"mode": "batch", "epochs": 1.5}, "epochs must be an integer >= 1"),
        ({"mode": "realtime", "threads": 0}, "threads must be an integer >= 1"),
    ],
)
def test_bad_configuration_raises_clear_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Trainer(**kwargs)


def test_model_and_model_options_are_exclusive():
    with pytest.raises(ValueError, match="either a model or model options"):
        Trainer("realtime", embcore.MatrixFactorization(dim=2), dim=4)


def test_model_factory_and_instance():
    model = embcore.MatrixFactorization(dim=3)
    assert Trainer("realtime", model).model is model
    assert Trainer("batch", lambda: embcore.MatrixFactorization(dim=5)).model.dim == 5
    with pytest.raises(ValueError, match="factory returned"):
        Trainer("batch", lambda: "nope")  # type: ignore[arg-type, return-value]


@pytest.mark.parametrize(
    ("text", "seconds"), [("6h", 21600), ("90m", 5400), ("1d", 86400), ("45s", 45), (7, 7)]
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


def test_unsorted_timestamps_rejected_in_batch_mode():
    trainer = Trainer("batch", dim=2)
    u, i, y, _ = events(3, 0, 10)
    with pytest.raises(ValueError, match="time order"):
        trainer.consume(u, i, y, np.array([5, 3, 4]))
    trainer.consume(u, i, y, np.array([5, 6, 7]))
    with pytest.raises(ValueError, match="before the trainer's clock"):
        trainer.consume(u, i, y, np.array([1, 2, 3]))


def test_mismatched_lengths_rejected():
    with pytest.raises(ValueError, match="equal lengths"):
        Trainer("realtime", dim=2).consume([1, 2], [1], [1.0, 0.0], [0, 1])


# -- serving scores ---------------------------------------------------------------------------


@given(seed=st.integers(0, 1000), n_users=st.integers(1, 6), n_pool=st.integers(1, 8))
def test_serving_scores_match_numpy_reference(seed, n_users, n_pool):
    trainer = Trainer("realtime", dim=4, seed=seed)
    trainer.consume(*events(200, 0, 100, seed=seed, n_users=10, n_items=10))
    rng = np.random.default_rng(seed)
    # ids 0..14 include users/items the model never saw (zero vector, zero bias).
    users = rng.integers(0, 15, n_users).astype(U64)
    pool = rng.permutation(15)[:n_pool].astype(U64)
    got = trainer.serving_scores(users, pool)
    assert got.dtype == np.float32 and got.shape == (n_users, n_pool)
    np.testing.assert_allclose(got, numpy_scores(trainer.model, users, pool), atol=1e-5)


def test_serving_scores_never_insert():
    trainer = Trainer("realtime", dim=2)
    trainer.serving_scores(np.array([1, 2], U64), np.array([3], U64))
    assert len(trainer.model.users) == 0 and len(trainer.model.items) == 0


def test_serving_scores_rank_like_model_score():
    """Scores differ from model.score only by the user bias, which is constant per row."""
    trainer = Trainer("realtime", dim=4)
    trainer.consume(*events(500, 0, 100))
    users, pool = np.arange(5, dtype=U64), np.arange(20, dtype=U64)
    scores = trainer.serving_scores(users, pool)
    pairs = trainer.score(np.repeat(users, pool.size), np.tile(pool, users.size))
    diff = pairs.reshape(users.size, pool.size) - scores
    np.testing.assert_allclose(diff, diff[:, :1].repeat(pool.size, axis=1), atol=1e-5)


# -- mode semantics ---------------------------------------------------------------------------


def test_realtime_serving_changes_after_each_consume():
    trainer = Trainer("realtime", dim=4)
    users, pool = np.arange(30, dtype=U64), np.arange(20, dtype=U64)
    before = trainer.serving_scores(users, pool)
    for k in range(3):
        trainer.consume(*events(100, 100 * k, 100 * (k + 1), seed=k))
        after = trainer.serving_scores(users, pool)
        assert not np.array_equal(before, after)
        before = after


def test_batch_serving_frozen_within_period_and_changes_after_publish():
    trainer = Trainer("batch", period=1000, dim=4)
    users, pool = np.arange(30, dtype=U64), np.arange(20, dtype=U64)
    trainer.consume(*events(300, 0, 900, seed=1))
    first = trainer.serving_scores(users, pool)
    np.testing.assert_array_equal(first, 0.0)  # nothing published yet
    trainer.consume(*events(100, 900, 999, seed=2))
    np.testing.assert_array_equal(trainer.serving_scores(users, pool), first)
    assert trainer.window_events == 400 and trainer.publishes == 0
    # The live (training) model has not moved either: batch trains only at the boundary.
    assert len(trainer.model.items) == 0
    assert trainer.advance(1000) == 1
    second = trainer.serving_scores(users, pool)
    assert not np.array_equal(first, second)
    assert trainer.window_events == 0
    # Within the next period: the snapshot stays frozen while events are buffered.
    trainer.consume(*events(300, 1000, 1999, seed=3))
    np.testing.assert_array_equal(trainer.serving_scores(users, pool), second)
    # An event past the boundary publishes first (the boundary sees events < 2000 only).
    trainer.consume(*events(1, 2500, 2501, seed=4))
    assert trainer.publishes == 2 and trainer.window_events == 1
    assert not np.array_equal(trainer.serving_scores(users, pool), second)


def test_batch_publishes_at_every_boundary_crossed_inside_one_consume():
    trainer = Trainer("batch", period=100, dim=2)
    trainer.consume(*events(50, 0, 1000, seed=5))
    assert trainer.publishes == int(trainer._clock // 100)
    trainer.flush()
    assert trainer.window_events == 0


def test_batch_epochs_do_not_double_count_interactions():
    u, i, y, t = events(400, 0, 900, seed=7)
    counts = {}
    for epochs in (1, 3):
        trainer = Trainer("batch", period=1000, epochs=epochs, dim=4)
        trainer.consume(u, i, y, t)
        trainer.flush(1000)
        meta = trainer.serving_model.items.metadata()
        counts[epochs] = dict(zip(meta["ids"].tolist(), meta["interactions"].tolist(), strict=True))
        assert trainer.updates == epochs * u.size
    expected = dict(zip(*np.unique(i, return_counts=True), strict=True))
    assert counts[1] == counts[3] == {int(k): int(v) for k, v in expected.items()}


def test_hybrid_counts_once_and_consolidates_at_boundaries():
    u, i, y, t = events(400, 0, 900, seed=8)
    realtime, hybrid = Trainer("realtime", dim=4), Trainer("hybrid", period=1000, epochs=2, dim=4)
    for trainer in (realtime, hybrid):
        trainer.consume(u, i, y, t)
    users, pool = np.arange(30, dtype=U64), np.arange(20, dtype=U64)
    # Between boundaries hybrid is real-time training.
    np.testing.assert_array_equal(
        hybrid.serving_scores(users, pool), realtime.serving_scores(users, pool)
    )
    hybrid.advance(1000)
    assert hybrid.publishes == 1 and hybrid.updates == 3 * u.size
    assert not np.array_equal(
        hybrid.serving_scores(users, pool), realtime.serving_scores(users, pool)
    )
    meta = hybrid.model.items.metadata()
    assert int(meta["interactions"].sum()) == u.size


def test_one_epoch_unshuffled_batch_equals_realtime_on_the_same_events():
    u, i, y, t = events(300, 0, 900, seed=9)
    realtime = Trainer("realtime", dim=4)
    batch = Trainer("batch", period=1000, shuffle=False, dim=4)
    realtime.consume(u, i, y, t)
    batch.consume(u, i, y, t)
    batch.flush(1000)
    np.testing.assert_array_equal(
        batch.serving_model.items.weights(), realtime.model.items.weights()
    )


class _PublishRecorder:
    def __init__(self):
        self.calls = []

    def record_publish(self, table, timestamp):
        self.calls.append((len(table), timestamp))


@pytest.mark.parametrize("mode", ["batch", "hybrid"])
def test_publish_reaches_the_monitor(mode):
    recorder = _PublishRecorder()
    trainer = Trainer(mode, period=500, monitor=recorder, dim=2)
    trainer.consume(*events(100, 0, 1200, seed=3))
    trainer.flush(1300)
    assert [t for _, t in recorder.calls] == [500, 1000, 1300]
    assert all(size > 0 for size, _ in recorder.calls)


def test_realtime_never_publishes():
    recorder = _PublishRecorder()
    trainer = Trainer("realtime", monitor=recorder, dim=2)
    trainer.consume(*events(100, 0, 100_000))
    trainer.flush()
    assert trainer.advance(10**6) == 0 and recorder.calls == []


# -- common random numbers with the simulator -------------------------------------------------


def test_modes_see_identical_events_until_their_scores_differ():
    world = World(SimConfig.for_scale("tiny"), seed=3)
    trainers = {mode: Trainer(mode, period="1h", dim=8, seed=0) for mode in MODES}
    diverged = {}
    for step in list(world.steps())[:30]:
        served = {}
        scores = {}
        for mode, trainer in trainers.items():
            trainer.advance(step.t_start)
            scores[mode] = trainer.serving_scores(step.users, step.pool)
            served[mode] = world.serve(step, scores[mode])
            ev = served[mode]
            trainer.consume(ev.users, ev.items, ev.click, ev.timestamps)
        for mode in MODES:
            if np.array_equal(scores[mode], scores["realtime"]):
                for field in ("users", "items", "click", "play", "explored", "position"):
                    np.testing.assert_array_equal(
                        getattr(served[mode], field), getattr(served["realtime"], field)
                    )
            else:
                diverged.setdefault(mode, step.index)
        # Requests and exploration never depend on the mode.
        for ev in served.values():
            np.testing.assert_array_equal(ev.users, served["realtime"].users)
            np.testing.assert_array_equal(ev.explored, served["realtime"].explored)
    # Step 0: every mode serves from empty tables, so all scores (zeros) and events agree.
    assert "batch" in diverged and diverged["batch"] >= 1


def test_empty_windows_publish_without_copying():
    """A boundary whose window is empty keeps the previous snapshot (nothing copied); training
    or an eviction since the last publish makes the next one sync the snapshot (in place:
    only the changed rows are copied)."""
    trainer = Trainer("batch", period=100, dim=2)
    u, i, y, t = events(50, 0, 90)
    trainer.consume(u, i, y, t)
    trainer.advance(100)
    first = trainer.serving_model
    copied = trainer.published_rows
    assert copied == len(first.users) + len(first.items)
    trainer.advance(1000)  # nine empty windows
    assert trainer.publishes == 10
    assert trainer.serving_model is first and trainer.published_rows == copied
    u2, i2, y2, t2 = events(50, 1000, 1090, seed=1)
    trainer.consume(u2, i2, y2, t2)
    trainer.advance(1100)
    assert trainer.serving_model is first and trainer.published_rows > copied
    assert trainer.full_copies == 0
    np.testing.assert_array_equal(trainer.serving_model.score(u2, i2), trainer.model.score(u2, i2))
    # An eviction alone changes the live model: the next publish removes the evicted rows.
    expiring = Trainer("batch", period=100, item_lifecycle={"ttl": 50}, dim=2)
    expiring.consume(u, i, y, t)
    expiring.advance(100)
    assert len(expiring.serving_model.items) > 0
    expiring.advance(1000)  # items expire at the 200 s publish
    assert expiring.evicted > 0
    assert len(expiring.serving_model.items) == 0
