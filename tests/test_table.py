"""EmbeddingTable: id map, views, metadata, optimizer config, snapshots."""

import os
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import embcore
from embcore import EmbeddingTable


def ids(*xs: int) -> np.ndarray:
    return np.array(xs, dtype=np.uint64)


def test_get_unknown_raises_keyerror_naming_id() -> None:
    t = EmbeddingTable(4)
    with pytest.raises(KeyError) as e:
        t.get(ids(12345))
    assert "12345" in str(e.value)
    assert isinstance(e.value, embcore.UnknownIdError)
    assert len(t) == 0  # reads never insert


def test_get_default_scalar_and_row() -> None:
    t = EmbeddingTable(3)
    t.set(ids(1), np.ones((1, 3), dtype=np.float32))
    out = t.get(ids(1, 2), default=0.5)
    np.testing.assert_array_equal(out, [[1, 1, 1], [0.5, 0.5, 0.5]])
    out = t.get(ids(2), default=np.array([1.0, 2.0, 3.0], dtype=np.float32))
    np.testing.assert_array_equal(out, [[1, 2, 3]])
    assert len(t) == 1
    with pytest.raises(ValueError, match="dim 3"):
        t.get(ids(2), default=np.zeros(2, dtype=np.float32))


@given(
    known=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=60, unique=True),
    asked=st.lists(st.integers(0, 2**64 - 1), max_size=40),
    picks=st.lists(st.integers(0, 10**6), min_size=1, max_size=200),
)
@settings(max_examples=40, deadline=None)
def test_get_equals_a_dict_of_rows(known: list[int], asked: list[int], picks: list[int]) -> None:
    """Long mixed requests (known ids repeated, unknown ones between them) read each known
    id's own row and the default elsewhere; without a default the unknown ids are named."""
    t = EmbeddingTable(4)
    values = np.arange(len(known) * 4, dtype=np.float32).reshape(-1, 4)
    t.set(np.array(known, np.uint64), values)
    ref = dict(zip(known, values, strict=True))
    pool = known + asked
    request = [pool[p % len(pool)] for p in picks]
    default = np.array([-1.0, -2.0, -3.0, -4.0], np.float32)
    out = t.get(np.array(request, np.uint64), default=default)
    np.testing.assert_array_equal(out, [ref.get(i, default) for i in request])
    unknown = [i for i in request if i not in ref]
    if unknown:
        with pytest.raises(embcore.UnknownIdError, match=str(unknown[0])):
            t.get(np.array(request, np.uint64))
    else:
        np.testing.assert_array_equal(t.get(np.array(request, np.uint64)), out)


def test_initialisation_depends_on_seed_and_id_only() -> None:
    def first_rows(seed: int, threads: int, order: list[int]) -> np.ndarray:
        m = embcore.MatrixFactorization(dim=8, seed=seed, learning_rate=1e-9)
        m.train(ids(*order), ids(*order), np.zeros(len(order), dtype=np.float32), threads=threads)
        return m.items.get(ids(1, 2, 3))

    a = first_rows(7, 1, [1, 2, 3])
    np.testing.assert_allclose(a, first_rows(7, 2, [3, 2, 1]), atol=1e-6)
    assert not np.allclose(a, first_rows(8, 1, [1, 2, 3]), atol=1e-3)


def test_first_values_independent_of_arrival_order() -> None:
    def initial_rows(order: list[int]) -> np.ndarray:
        m = embcore.MatrixFactorization(dim=6, seed=3, learning_rate=1e-9)
        m.train(ids(*order), ids(*order), np.zeros(len(order), dtype=np.float32))
        return m.users.get(ids(1, 2, 3))

    np.testing.assert_allclose(initial_rows([1, 2, 3]), initial_rows([3, 1, 2]), atol=1e-6)
    r = initial_rows([1, 2, 3])
    assert np.all(np.abs(r) <= 0.1 + 1e-6) and np.unique(r).size == r.size


def test_weights_view_is_zero_copy_readonly_and_stays_valid() -> None:
    t = EmbeddingTable(4, capacity=10_000)
    t.set(ids(1, 2), np.arange(8, dtype=np.float32).reshape(2, 4))
    w = t.weights()
    assert w.shape == (2, 4) and not w.flags.writeable
    with pytest.raises(ValueError):
        w[0, 0] = 1.0
    # Growth does not move rows: the earlier view still reads the live values.
    t.set(np.arange(100, 5100, dtype=np.uint64), np.zeros((5000, 4), dtype=np.float32))
    t.set(ids(1), np.full((1, 4), 9.0, dtype=np.float32))
    np.testing.assert_array_equal(w[0], [9, 9, 9, 9])
    rid, rw = t.view()
    assert rid.shape[0] == rw.shape[0] == 5002
    np.testing.assert_array_equal(t.ids()[:2], [1, 2])
    del t
    np.testing.assert_array_equal(w[1], [4, 5, 6, 7])  # the view keeps its table alive


def test_metadata_and_optimizer_state_shapes() -> None:
    for opt, width in [("sgd", 0), ("adagrad", 5), ("rowwise_adagrad", 1)]:
        t = EmbeddingTable(5, optimizer=opt)
        t.set(ids(4, 9), np.zeros((2, 5), dtype=np.float32), timestamp=77)
        md = t.metadata()
        assert set(md) == {"ids", "interactions", "updates", "first_seen", "last_update", "bias"}
        np.testing.assert_array_equal(md["ids"], [4, 9])
        np.testing.assert_array_equal(md["first_seen"], [77, 77])
        np.testing.assert_array_equal(md["updates"], [0, 0])
        assert t.optimizer_state().shape == (2, width)
        assert t.optimizer["name"] == opt


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dim": 0}, "dim"),
        ({"dim": -3}, "dim"),
        ({"dim": 4, "learning_rate": 0.0}, "learning_rate"),
        ({"dim": 4, "learning_rate": float("nan")}, "learning_rate"),
        ({"dim": 4, "l2": -1.0}, "l2"),
        ({"dim": 4, "max_norm": -1.0}, "max_norm"),
        ({"dim": 4, "optimizer": "adam"}, "optimizer"),
        ({"dim": 4, "eps": 0.0}, "eps"),
        ({"dim": 4, "capacity": 0}, "capacity"),
        ({"dim": 4, "init_scale": -1.0}, "init_scale"),
    ],
)
def test_bad_configuration(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EmbeddingTable(**kwargs)


def test_bad_arguments_change_nothing() -> None:
    t = EmbeddingTable(3)
    t.set(ids(1), np.ones((1, 3), dtype=np.float32))
    before = t.get(ids(1))
    with pytest.raises(TypeError, match="uint64"):
        t.set(np.array([1.5]), np.ones((1, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        t.set(ids(1, 2), np.ones((1, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        t.set(ids(1, 2), np.array([[0, 0, 0], [0, np.nan, 0]], dtype=np.float32))
    with pytest.raises(ValueError, match="negative"):
        t.set(np.array([1, -2]), np.ones((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="contiguous"):
        t.get(np.arange(10, dtype=np.uint64)[::2])
    assert len(t) == 1
    np.testing.assert_array_equal(t.get(ids(1)), before)


def test_capacity_error_changes_nothing() -> None:
    t = EmbeddingTable(2, capacity=3)
    t.set(ids(1), np.zeros((1, 2), dtype=np.float32))
    with pytest.raises(embcore.CapacityError, match="capacity"):
        t.set(ids(2, 3, 4), np.zeros((3, 2), dtype=np.float32))
    assert len(t) == 1
    m = embcore.MatrixFactorization(dim=2, capacity=2)
    with pytest.raises(ValueError, match="room"):
        m.train(ids(1, 2, 3), ids(1, 1, 1), np.zeros(3, dtype=np.float32))
    assert len(m.users) == 0 and len(m.items) == 0


def test_copy_is_independent() -> None:
    t = EmbeddingTable(2)
    t.set(ids(5), np.ones((1, 2), dtype=np.float32))
    c = t.copy()
    t.set(ids(5, 6), np.zeros((2, 2), dtype=np.float32))
    np.testing.assert_array_equal(c.get(ids(5)), [[1, 1]])
    assert 6 not in c and 6 in t


@given(
    dim=st.integers(1, 9),
    id_list=st.lists(st.integers(0, 2**64 - 1), unique=True, max_size=40),
    opt=st.sampled_from(["sgd", "adagrad", "rowwise_adagrad"]),
    seed=st.integers(0, 2**64 - 1),
)
def test_save_load_round_trip(tmp_path_factory, dim, id_list, opt, seed) -> None:  # noqa: ANN001
    m = embcore.MatrixFactorization(dim=dim, optimizer=opt, seed=seed)
    n = len(id_list)
    if n:
        users = np.array(id_list, dtype=np.uint64)
        items = users[::-1].copy()
        labels = (np.arange(n) % 2).astype(np.float32)
        m.train(users, items, labels, timestamps=np.arange(n, dtype=np.int64) - 5)
    t = m.items
    path = tmp_path_factory.mktemp("snap") / "items.emb"
    nbytes = t.save(path)
    assert nbytes == os.path.getsize(path)
    u = EmbeddingTable.load(path)
    np.testing.assert_array_equal(u.ids(), t.ids())
    np.testing.assert_array_equal(u.weights(), t.weights())
    np.testing.assert_array_equal(u.optimizer_state(), t.optimizer_state())
    for k, v in t.metadata().items():
        np.testing.assert_array_equal(u.metadata()[k], v)
    assert (u.dim, u.seed, u.optimizer, u.init_scale) == (t.dim, t.seed, t.optimizer, t.init_scale)


def test_corrupted_and_truncated_snapshots_are_rejected(tmp_path) -> None:  # noqa: ANN001
    t = EmbeddingTable(4)
    t.set(np.arange(50, dtype=np.uint64), np.ones((50, 4), dtype=np.float32))
    p = tmp_path / "t.emb"
    t.save(p)
    data = p.read_bytes()
    for cut in [0, 5, 30, len(data) // 2, len(data) - 1]:
        p.write_bytes(data[:cut])
        with pytest.raises(embcore.SnapshotError):
            EmbeddingTable.load(p)
    for pos in [9, 40, len(data) // 2, len(data) - 2]:
        b = bytearray(data)
        b[pos] ^= 0x10
        p.write_bytes(bytes(b))
        with pytest.raises(embcore.SnapshotError):
            EmbeddingTable.load(p)
    p.write_bytes(b"hello world, not a snapshot at all" * 3)
    with pytest.raises(embcore.SnapshotError, match="magic"):
        EmbeddingTable.load(p)
    with pytest.raises(OSError):
        EmbeddingTable.load(tmp_path / "missing.emb")


def test_failed_save_leaves_previous_file_intact(tmp_path) -> None:  # noqa: ANN001
    t = EmbeddingTable(2)
    t.set(ids(1), np.ones((1, 2), dtype=np.float32))
    p = tmp_path / "t.emb"
    t.save(p)
    good = p.read_bytes()
    with pytest.raises(OSError):
        t.save(tmp_path / "no-such-dir" / "t.emb")
    (tmp_path / "d.emb").mkdir()
    with pytest.raises(OSError):
        t.save(tmp_path / "d.emb")  # rename onto a directory fails after writing the temp file
    assert p.read_bytes() == good
    assert sorted(x.name for x in tmp_path.iterdir()) == ["d.emb", "t.emb"]  # no temp left


def test_concurrent_sets_from_python_threads() -> None:
    t = EmbeddingTable(4, capacity=100_000)

    def work(k: int) -> None:
        chunk = np.arange(k * 5000, (k + 1) * 5000 + 2500, dtype=np.uint64) % 20_000
        t.set(chunk, np.full((chunk.size, 4), float(k), dtype=np.float32))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(t) == 20_000
    assert np.unique(t.ids()).size == 20_000
