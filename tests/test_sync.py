"""Incremental publishing: ``sync_from`` against the deep copy it replaces.

A serving copy synced from its source must equal ``source.copy()`` taken at the same moment,
row for row (weights, optimizer state, metadata), in its global bias and in every serving
score, over any sequence of training calls (new ids arriving), evictions (ids leaving) and
publishes; the batch Trainer that publishes by sync must serve exactly what the deep-copy
Trainer (the slow reference, ``_sync_publish = False``) serves.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import embcore
from embcore.errors import EmbcoreError
from embcore.modes import Trainer

U64 = np.uint64
FIELDS = ["user", "item", "tag"]


def _model(kind: str, ttl: int | None = 40, threads_safe_dim: int = 4):
    lifecycle = None if ttl is None else {"ttl": ttl}
    if kind == "mf":
        return embcore.MatrixFactorization(dim=threads_safe_dim, seed=1, item_lifecycle=lifecycle)
    cls = embcore.FieldAwareFM if kind == "ffm" else embcore.FactorizationMachine
    return cls(
        FIELDS,
        dim=threads_safe_dim,
        seed=1,
        lifecycles=None if lifecycle is None else {"item": lifecycle},
    )


def _columns(model, users, items):
    cols = {"user": users, "item": items}
    if "tag" in model.fields:
        cols["tag"] = items % U64(5)
    return cols


def _table_state(table):
    """Everything a table holds, in id order (row order differs between copies)."""
    ids = table.ids()
    order = np.argsort(ids)
    meta = table.metadata()
    return {
        "ids": ids[order],
        "weights": table.weights()[order],
        "state": table.optimizer_state()[order],
        **{k: v[order] for k, v in meta.items() if k != "ids"},
    }


def assert_equal_models(got, want) -> None:
    assert got.fields == want.fields
    for field in want.fields:
        a, b = _table_state(got.table(field)), _table_state(want.table(field))
        assert a.keys() == b.keys()
        for key in b:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{field}: {key}")
    assert got.global_bias == want.global_bias


def _events(draw_ids, n, t0, rng):
    users = rng.integers(0, draw_ids, n).astype(U64)
    # New items keep arriving: ids grow with time.
    items = (t0 // 10 + rng.integers(0, 12, n)).astype(U64)
    labels = (rng.random(n) < 0.4).astype(np.float32)
    times = np.sort(rng.integers(t0, t0 + 30, n)).astype(np.int64)
    return users, items, labels, times


operation = st.one_of(
    st.tuples(st.just("train"), st.integers(1, 60)),
    st.tuples(st.just("evict"), st.integers(1, 50)),
    st.tuples(st.just("publish"), st.just(0)),
    st.tuples(st.just("reset"), st.just(0)),
)


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(["mf", "ffm", "fm"]),
    threads=st.sampled_from([1, 2]),
    ops=st.lists(operation, min_size=1, max_size=14),
    seed=st.integers(0, 2**16),
)
def test_sync_equals_a_deep_copy_after_any_sequence(kind, threads, ops, seed):
    """Train (new ids), evict (removed ids), reset the optimizer, publish, in any order: the
    synced copy equals the deep copy taken at the same moment, and serves the same scores."""
    rng = np.random.default_rng(seed)
    model = _model(kind)
    snapshot = model.copy()
    t = 0
    probe_u = np.arange(0, 30, dtype=U64)
    probe_i = np.arange(0, 40, dtype=U64)
    for op, size in [*ops, ("publish", 0)]:
        if op == "train":
            u, i, y, ts = _events(30, size, t, rng)
            model.train_columns(_columns(model, u, i), y, timestamps=ts, threads=threads)
            t = int(ts[-1])
        elif op == "evict":
            t += size
            model.table("item").evict(now=t, budget=size)
        elif op == "reset":
            model.reset_optimizer()
        else:
            stats = snapshot.sync_from(model)
            assert set(stats) == {"rows", "removed", "scanned"}
            reference = model.copy()
            assert_equal_models(snapshot, reference)
            cols = _columns(model, probe_u, probe_i[: probe_u.size])
            np.testing.assert_array_equal(
                snapshot.score_columns(cols), reference.score_columns(cols)
            )


def test_sync_copies_only_what_changed():
    model = _model("mf", ttl=None)
    rng = np.random.default_rng(0)
    u, i, y, ts = _events(200, 2000, 0, rng)
    model.train(u, i, y, timestamps=ts)
    snapshot = model.copy()
    assert snapshot.sync_from(model)["rows"] == 0
    one = np.array([7], U64)
    model.train(one, one, np.ones(1, np.float32), timestamps=np.array([5]))
    stats = snapshot.sync_from(model)
    assert stats["rows"] == 2  # user 7 and item 7
    assert stats["scanned"] == len(model.users) + len(model.items)
    assert snapshot.sync_from(model)["rows"] == 0


def test_removed_ids_leave_the_copy_and_come_back_when_re_created():
    model = _model("mf", ttl=10)
    snapshot = model.copy()
    ids = np.arange(5, dtype=U64)
    model.train(ids, ids, np.ones(5, np.float32), timestamps=np.zeros(5, np.int64))
    snapshot.sync_from(model)
    assert len(snapshot.items) == 5
    model.items.evict(now=100)
    assert snapshot.sync_from(model)["removed"] == 5
    assert len(snapshot.items) == 0
    model.train(ids[:2], ids[:2], np.ones(2, np.float32), timestamps=np.full(2, 100))
    snapshot.sync_from(model)
    assert_equal_models(snapshot, model.copy())


def test_sync_refuses_what_is_not_a_copy_and_changes_nothing():
    model = _model("mf", ttl=None)
    ids = np.arange(3, dtype=U64)
    model.train(ids, ids, np.ones(3, np.float32))
    stranger = _model("mf", ttl=None)
    with pytest.raises(EmbcoreError, match="not a copy"):
        stranger.sync_from(model)
    assert len(stranger.items) == 0
    with pytest.raises(EmbcoreError, match="itself"):
        model.sync_from(model)
    other_kind = embcore.MatrixFactorization(dim=8, seed=1)
    with pytest.raises(EmbcoreError, match="copy of the source"):
        other_kind.sync_from(model)
    table_copy = model.items.copy()
    model.train(ids, ids + U64(10), np.ones(3, np.float32))
    assert table_copy.sync_from(model.items)["rows"] == 3
    with pytest.raises(EmbcoreError, match="source.copy()"):
        table_copy.sync_from(model.users)


def test_sync_while_training_and_evicting_converges_to_the_copy():
    """Stress: two training threads, an evicting thread and a syncing thread at once; syncs
    that overlap writes copy what they see, and one sync after the writers stop makes the
    copy exact (EmbeddingTable.sync_from design notes)."""
    model = embcore.MatrixFactorization(dim=8, seed=0, item_lifecycle={"ttl": 50})
    snapshot = model.copy()
    stop = threading.Event()
    errors: list[BaseException] = []
    clock = [0]

    def train(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for step in range(150):
                t = clock[0] + step
                u = rng.integers(0, 500, 400).astype(U64)
                i = (t // 2 + rng.integers(0, 300, 400)).astype(U64)
                y = (rng.random(400) < 0.5).astype(np.float32)
                model.train(u, i, y, timestamps=np.full(400, t, np.int64), threads=2)
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

    def evict() -> None:
        try:
            now = 0
            while not stop.is_set():
                now += 1
                model.items.evict(now=now, budget=200)
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    def sync() -> None:
        try:
            while not stop.is_set():
                snapshot.sync_from(model)
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    trainers = [threading.Thread(target=train, args=(s,)) for s in (1, 2)]
    helpers = [threading.Thread(target=evict), threading.Thread(target=sync)]
    for thread in [*trainers, *helpers]:
        thread.start()
    for thread in trainers:
        thread.join()
    stop.set()
    for thread in helpers:
        thread.join()
    assert not errors, errors
    snapshot.sync_from(model)
    assert_equal_models(snapshot, model.copy())


# -- the Trainer --------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(["mf", "ffm"]),
    threads=st.sampled_from([1, 2]),
    window=st.sampled_from([None, 200]),
    reset=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_batch_publishing_by_sync_serves_what_deep_copies_serve(kind, threads, window, reset, seed):
    """The same batch stream (new items arriving, items expiring) through a Trainer that
    publishes by sync and one that deep-copies: identical progressive scores, serving scores
    after each chunk, and final snapshots. With threads=2 the two trainers' training differs
    (Hogwild), so each snapshot is compared with a deep copy of its own live model instead."""
    rng = np.random.default_rng(seed)
    trainers = []
    for sync in (True, False):
        options = {"window": window, "reset_optimizer": reset, "threads": threads, "seed": 3}
        trainer = Trainer("batch", _model(kind, ttl=150), period=100, **options)
        trainer._sync_publish = sync
        trainers.append(trainer)
    fast, slow = trainers
    # Every publish of the synced trainer: its snapshot equals a deep copy of its live model
    # taken at that moment.
    checked = [0]
    refresh = fast._refresh_snapshot

    def refresh_and_check() -> None:
        refresh()
        assert_equal_models(fast.serving_model, fast.model.copy())
        checked[0] += 1

    fast._refresh_snapshot = refresh_and_check  # type: ignore[method-assign]
    pool = np.arange(0, 60, dtype=U64)
    users = np.arange(0, 20, dtype=U64)
    t = 0
    for _ in range(6):
        n = int(rng.integers(1, 120))
        u, i, y, ts = _events(20, n, t, rng)
        t = int(ts[-1]) + int(rng.integers(0, 150))
        context = {"tag": i % U64(5)} if kind != "mf" else None
        got = [tr.consume(u, i, y, ts, context=context, return_scores=True) for tr in trainers]
        fast.advance(t)
        slow.advance(t)
        candidates = {"tag": pool % U64(5)} if kind != "mf" else None
        if threads == 1:
            np.testing.assert_array_equal(got[0], got[1])
            np.testing.assert_array_equal(
                fast.serving_scores(users, pool, candidate_fields=candidates),
                slow.serving_scores(users, pool, candidate_fields=candidates),
            )
            assert_equal_models(fast.serving_model, slow.serving_model)
    fast.flush(t)
    slow.flush(t)
    assert fast.full_copies == 0 and checked[0] == slow.full_copies > 0
    if threads == 1:
        assert_equal_models(fast.serving_model, slow.serving_model)


def test_a_scratch_retrain_copies_its_new_model():
    def factory():
        return embcore.MatrixFactorization(dim=2, seed=0)

    trainer = Trainer("batch", factory, period=10, init="scratch")
    ids = np.arange(4, dtype=U64)
    for k in range(3):
        trainer.consume(ids, ids, np.ones(4, np.float32), np.full(4, 10 * k + 1))
    trainer.flush()
    assert trainer.full_copies == trainer.publishes_with_training
    assert_equal_models(trainer.serving_model, trainer.model.copy())
