"""One exception class per kind of mistake: every core error variant reaches Python as
the class embcore.errors documents, with a message naming the argument."""

import os
import pathlib

import numpy as np
import pytest

import embcore
from embcore import errors


def _ids(*xs: int) -> np.ndarray:
    return np.array(xs, dtype=np.uint64)


def test_hierarchy() -> None:
    for cls in (
        errors.ConfigError,
        errors.DatasetError,
        errors.CapacityError,
        errors.SnapshotError,
        errors.UnknownIdError,
    ):
        assert issubclass(cls, errors.EmbcoreError), cls
    assert issubclass(errors.EmbcoreError, ValueError)
    assert issubclass(errors.UnknownIdError, KeyError)
    assert errors.UnknownIdError.__module__ == "embcore"
    assert embcore.ConfigError is errors.ConfigError


def test_shape_is_an_embcore_error_naming_the_argument() -> None:
    mf = embcore.MatrixFactorization(dim=4)
    with pytest.raises(errors.EmbcoreError, match="labels"):
        mf.train(_ids(1, 2), _ids(3, 4), np.array([1.0], dtype=np.float32))


def test_out_of_range_setting_is_a_config_error_with_the_bound() -> None:
    with pytest.raises(errors.ConfigError, match=r"learning_rate must be .*1e2\], got 1e30|1000"):
        embcore.MatrixFactorization(dim=4, learning_rate=1e30)
    with pytest.raises(errors.ConfigError, match="init_scale"):
        embcore.EmbeddingTable(4, init_scale=3e38)


def test_bad_value_in_data_names_the_element() -> None:
    mf = embcore.MatrixFactorization(dim=4)
    with pytest.raises(errors.EmbcoreError, match=r"labels\[1\]"):
        mf.train(_ids(1, 2), _ids(3, 4), np.array([1.0, 2.0], dtype=np.float32))


def test_config_error_for_an_invalid_configuration() -> None:
    with pytest.raises(errors.ConfigError, match="appears twice"):
        embcore.FieldAwareFM(["a", "a"])
    with pytest.raises(errors.ConfigError, match="optimizer"):
        embcore.EmbeddingTable(4, optimizer="nope")


def test_capacity_error_everywhere_a_table_is_full() -> None:
    t = embcore.EmbeddingTable(4, capacity=2)
    with pytest.raises(errors.CapacityError, match="needs 3 new rows"):
        t.insert(_ids(1, 2, 3))
    with pytest.raises(errors.CapacityError):
        t.set(_ids(1, 2, 3), np.zeros((3, 4), dtype=np.float32))
    mf = embcore.MatrixFactorization(dim=4, capacity=2)
    with pytest.raises(errors.CapacityError):
        mf.train(_ids(1, 2, 3), _ids(1, 1, 1), np.ones(3, dtype=np.float32))


def test_unknown_ids_lists_them() -> None:
    t = embcore.EmbeddingTable(4)
    t.insert(_ids(1))
    with pytest.raises(errors.UnknownIdError, match="1000000000000.*not in the table") as info:
        t.get(_ids(1, 1_000_000_000_000))
    assert isinstance(info.value, KeyError)
    with pytest.raises(KeyError, match="2, 3, 4, 5, 6 and 2 more"):
        t.get(_ids(2, 3, 4, 5, 6, 7, 8))


def test_io_errors_keep_their_kind(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.embc"):
        embcore.EmbeddingTable.load(tmp_path / "missing.embc")
    if os.geteuid() != 0:  # root reads anything
        p = tmp_path / "locked.embc"
        embcore.EmbeddingTable(4).save(p)
        p.chmod(0)
        with pytest.raises(PermissionError):
            embcore.EmbeddingTable.load(p)


def test_corrupt_file_is_a_snapshot_error(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "t.embc"
    p.write_bytes(b"EMBCSNAP" + b"\0" * 10)
    with pytest.raises(errors.SnapshotError, match="t.embc"):
        embcore.EmbeddingTable.load(p)
    with pytest.raises(errors.SnapshotError):
        embcore.Monitor.from_bytes(b"not a monitor")


def test_wrong_type_is_a_type_error_naming_the_argument() -> None:
    t = embcore.EmbeddingTable(4)
    with pytest.raises(TypeError, match="ids must be"):
        t.get([1.5, 2.5])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda m, mon: m.table(1.5), "field"),
        (lambda m, mon: m.embedding_of("item", against=3), "against"),
        (lambda m, mon: m.save(1.5), "path"),
        (lambda m, mon: embcore.FieldAwareFM.load(1.5), "path"),
        (lambda m, mon: embcore.Monitor.from_bytes("text"), "data"),
        (lambda m, mon: mon.merge("x"), "other"),
        (lambda m, mon: mon.record_publish("x"), "table"),
        (lambda m, mon: embcore.Monitor.health(None), "table"),
        (lambda m, mon: embcore.Monitor(sample_rate="0.1"), "sample_rate"),
        (lambda m, mon: m.items.evict(now="x"), "now"),
        (lambda m, mon: m.items.changed_since("1"), "version"),
        (lambda m, mon: m.items.save(1.5), "path"),
        (lambda m, mon: embcore.EmbeddingTable.load(1.5), "path"),
        (lambda m, mon: m.items.insert(_ids(1), timestamp="x"), "timestamp"),
        (
            lambda m, mon: m.train_columns({"user": _ids(1), "item": _ids(1)}, [1.0], threads="2"),
            "threads",
        ),
    ],
)
def test_every_wrong_type_names_its_argument(call, name: str) -> None:
    model = embcore.MatrixFactorization(dim=4)
    with pytest.raises(TypeError, match=rf"^{name} must be"):
        call(model, embcore.Monitor())


def test_integers_too_large_for_64_bits_are_config_errors_naming_the_argument() -> None:
    t = embcore.EmbeddingTable(4, max_rows=10)
    with pytest.raises(errors.ConfigError, match="now must be an integer in"):
        t.evict(now=2**70)
