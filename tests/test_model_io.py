"""Whole-model files: MatrixFactorization / FieldAwareFM / FactorizationMachine save and load."""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import embcore
from embcore.errors import SnapshotError

U64 = np.uint64
FIELDS = ["user", "item", "creator", "tag"]


def field_data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    cols = {f: rng.integers(0, 10 + 5 * k, n).astype(U64) for k, f in enumerate(FIELDS)}
    labels = (rng.random(n) < 0.4).astype(np.float32)
    return cols, labels


def assert_same_tables(a, b):
    assert a.dim == b.dim and len(a) == len(b)
    ids = a.ids()
    np.testing.assert_array_equal(np.sort(ids), np.sort(b.ids()))
    np.testing.assert_array_equal(a.get(ids), b.get(ids))
    ma, mb = a.metadata(), b.metadata()
    order_a, order_b = np.argsort(ma["ids"]), np.argsort(mb["ids"])
    for key in ma:
        np.testing.assert_array_equal(ma[key][order_a], mb[key][order_b])
    assert a.optimizer == b.optimizer


@settings(max_examples=15, deadline=None)
@given(
    kind=st.sampled_from(["ffm", "fm"]),
    optimizer=st.sampled_from(["sgd", "adagrad", "rowwise_adagrad"]),
    dim=st.integers(1, 9),
    bias=st.booleans(),
    loss=st.sampled_from(["logistic", "squared"]),
    n=st.integers(0, 300),
)
def test_field_model_round_trip(tmp_path_factory, kind, optimizer, dim, bias, loss, n):
    cls = embcore.FieldAwareFM if kind == "ffm" else embcore.FactorizationMachine
    model = cls(FIELDS, dim=dim, optimizer=optimizer, bias=bias, loss=loss, seed=7)
    cols, labels = field_data(n)
    model.train(cols, labels)
    path = tmp_path_factory.mktemp("m") / "model.embm"
    size = model.save(path)
    assert size == os.path.getsize(path)
    back = cls.load(path)
    assert type(back) is cls
    assert (back.fields, back.dim, back.loss, back.bias) == (
        model.fields,
        model.dim,
        model.loss,
        model.bias,
    )
    assert back.optimizer == model.optimizer
    assert back.global_bias == model.global_bias and back.events_seen == model.events_seen
    for f in FIELDS:
        assert_same_tables(model.table(f), back.table(f))
    np.testing.assert_array_equal(back.score(cols), model.score(cols))
    # Training goes on identically (optimizer state, global accumulator, event clock).
    more, more_labels = field_data(100, seed=1)
    model.train(more, more_labels)
    back.train(more, more_labels)
    np.testing.assert_array_equal(back.score(more), model.score(more))


def test_mf_round_trip(tmp_path):
    model = embcore.MatrixFactorization(dim=5, optimizer="adagrad", seed=3)
    rng = np.random.default_rng(0)
    u, i = rng.integers(0, 50, 500).astype(U64), rng.integers(0, 40, 500).astype(U64)
    y = (rng.random(500) < 0.3).astype(np.float32)
    model.train(u, i, y)
    path = tmp_path / "mf.embm"
    model.save(path)
    back = embcore.MatrixFactorization.load(path)
    assert_same_tables(model.users, back.users)
    assert_same_tables(model.items, back.items)
    assert back.global_bias == model.global_bias and back.events_seen == model.events_seen
    np.testing.assert_array_equal(back.score(u, i), model.score(u, i))
    model.train(u, i, y)
    back.train(u, i, y)
    np.testing.assert_array_equal(back.score(u, i), model.score(u, i))
    with pytest.raises(ValueError, match="holds a MatrixFactorization"):
        embcore.FieldAwareFM.load(path)


def test_load_checks_the_class_and_restores_lifecycles(tmp_path):
    fm = embcore.FactorizationMachine(FIELDS, dim=3)
    cols, labels = field_data(50)
    fm.train(cols, labels, timestamps=np.arange(50, dtype=np.int64))
    path = tmp_path / "fm.embm"
    fm.save(path)
    with pytest.raises(ValueError, match="holds a FactorizationMachine, not a FieldAwareFM"):
        embcore.FieldAwareFM.load(path)
    with pytest.raises(ValueError, match="holds a FactorizationMachine"):
        embcore.MatrixFactorization.load(path)
    back = embcore.FactorizationMachine.load(path, lifecycles={"item": {"ttl": 10}})
    assert back.table("item").lifecycle["ttl"] == 10
    assert back.table("user").lifecycle is None
    out = back.table("item").evict(now=1000, budget=1000)
    assert len(out["ids"]) == len(fm.table("item"))
    with pytest.raises(ValueError, match="unknown field 'device'"):
        embcore.FactorizationMachine.load(path, lifecycles={"device": {"ttl": 10}})
    big = embcore.FactorizationMachine.load(path, capacity=10_000)
    assert big.table("user").capacity == 10_000


def test_evicted_rows_are_not_saved(tmp_path):
    model = embcore.FieldAwareFM(FIELDS, dim=2, lifecycles={"item": {"ttl": 5}})
    cols, labels = field_data(40)
    model.train(cols, labels, timestamps=np.zeros(40, dtype=np.int64))
    cols2, labels2 = field_data(40, seed=3)
    cols2["item"] += U64(1000)
    model.train(cols2, labels2, timestamps=np.full(40, 100, dtype=np.int64))
    model.table("item").evict(now=100, budget=10_000)
    path = tmp_path / "m.embm"
    model.save(path)
    back = embcore.FieldAwareFM.load(path)
    assert sorted(back.table("item").ids()) == sorted(model.table("item").ids())
    assert all(i >= 1000 for i in back.table("item").ids())
    np.testing.assert_array_equal(back.score(cols2), model.score(cols2))


def test_corrupt_files_raise_and_failed_saves_keep_the_old_file(tmp_path):
    model = embcore.FieldAwareFM(FIELDS, dim=4)
    cols, labels = field_data(200)
    model.train(cols, labels)
    path = tmp_path / "m.embm"
    model.save(path)
    good = path.read_bytes()
    for cut in [0, 8, 15, 30, len(good) // 2, len(good) - 1]:
        path.write_bytes(good[:cut])
        with pytest.raises(SnapshotError):
            embcore.FieldAwareFM.load(path)
    for k in [20, 40, len(good) // 3, len(good) - 2]:
        flipped = bytearray(good)
        flipped[k] ^= 0x04
        path.write_bytes(bytes(flipped))
        with pytest.raises((SnapshotError, ValueError)):
            embcore.FieldAwareFM.load(path)
    path.write_bytes(good + b"\0")
    with pytest.raises(SnapshotError, match="trailing"):
        embcore.FieldAwareFM.load(path)
    table_file = tmp_path / "t.emb"
    model.table("item").save(table_file)
    with pytest.raises(SnapshotError, match="EmbeddingTable.load"):
        embcore.FieldAwareFM.load(table_file)
    # A save into a missing directory fails and leaves nothing behind.
    path.write_bytes(good)
    with pytest.raises(OSError):
        model.save(tmp_path / "missing" / "m.embm")
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.embm", "t.emb"]
