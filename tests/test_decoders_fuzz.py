"""Fuzzing the three decoders (table snapshots, model files, monitor bytes) with
Hypothesis: flips, truncations, splices and crafted sections with recomputed checksums
of valid inputs. Every outcome is a successful load or SnapshotError / OSError; never
another exception, never a crash."""

import functools
import pathlib
import tempfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import embcore
from embcore import SnapshotError

FUZZ = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@functools.cache
def samples() -> dict[str, bytes]:
    d = pathlib.Path(tempfile.mkdtemp(prefix="embcore-fuzz-"))
    rng = np.random.default_rng(0)
    table = embcore.EmbeddingTable(3, capacity=64)
    table.set(np.arange(5, dtype=np.uint64), rng.normal(size=(5, 3)).astype(np.float32))
    table.save(d / "t.emb")
    model = embcore.FieldAwareFM(["a", "b", "c"], dim=2, seed=1)
    cols = {f: rng.integers(0, 6, 40).astype(np.uint64) for f in ("a", "b", "c")}
    model.train(cols, (rng.random(40) < 0.5).astype(np.float32))
    model.save(d / "m.embm")
    mon = embcore.Monitor(sample_rate=1.0, milestones=[1, 2, 3])
    for step in range(3):
        mon.observe(
            np.arange(4, dtype=np.uint64), rng.normal(size=(4, 3)).astype(np.float32) + step
        )
    out = {
        "table": (d / "t.emb").read_bytes(),
        "model": (d / "m.embm").read_bytes(),
        "monitor": mon.to_bytes(),
    }
    for p in d.iterdir():
        p.unlink()
    d.rmdir()
    return out


def sections(data: bytes) -> list[tuple[int, int]]:
    """(start, length) of each section payload of a valid container."""
    out, pos = [], 20
    for _ in range(int.from_bytes(data[12:16], "little")):
        n = int.from_bytes(data[pos : pos + 8], "little")
        out.append((pos + 8, n))
        pos += 8 + n + 4
    return out


def reframe(data: bytes, index: int, payload: bytes) -> bytes:
    """Replace section `index`'s payload, with a valid length and checksum."""
    start, n = sections(data)[index]
    head = len(payload).to_bytes(8, "little")
    framed = head + payload + zlib.crc32(head + payload).to_bytes(4, "little")
    return data[: start - 8] + framed + data[start + n + 4 :]


@st.composite
def mutated(draw, kind: str) -> bytes:
    data = samples()[kind]
    how = draw(st.sampled_from(["flip", "truncate", "splice", "craft", "craft_length"]))
    if how == "flip":
        b = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            b[draw(st.integers(0, len(b) - 1))] ^= draw(st.integers(1, 255))
        return bytes(b)
    if how == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "splice":
        a = draw(st.integers(0, len(data)))
        z = draw(st.integers(a, min(len(data), a + 64)))
        other = samples()[draw(st.sampled_from(sorted(samples())))]
        o = draw(st.integers(0, len(other)))
        insert = draw(st.one_of(st.binary(max_size=32), st.just(other[o : o + 64])))
        return data[:a] + insert + data[z:]
    # Crafted contents with recomputed checksums: the decoders' own validation.
    secs = sections(data)
    index = draw(st.integers(0, len(secs) - 1))
    start, n = secs[index]
    payload = bytearray(data[start : start + n])
    if how == "craft" and payload:
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(payload) - 1))
            width = draw(st.sampled_from([1, 4, 8]))
            value = draw(st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1, 0xFF]))
            raw = (value % (1 << (8 * width))).to_bytes(width, "little")
            payload[at : at + width] = raw[: len(payload) - at]
    else:
        cut = draw(st.integers(0, len(payload)))
        payload = payload[:cut] + draw(st.binary(max_size=16))
    return reframe(data, index, bytes(payload))


def load_table(data: bytes, path: pathlib.Path) -> None:
    path.write_bytes(data)
    embcore.EmbeddingTable.load(path)


def load_model(data: bytes, path: pathlib.Path) -> None:
    path.write_bytes(data)
    try:
        embcore.FieldAwareFM.load(path)
    except embcore.EmbcoreError as e:
        # A valid file of another model class (the kind byte was crafted).
        if type(e) is not embcore.EmbcoreError or "holds a" not in str(e):
            raise


def expect_clean(load, data: bytes, path: pathlib.Path) -> None:
    try:
        load(data, path)
    except (SnapshotError, OSError):
        pass


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("fuzz") / "input"


@FUZZ
@given(data=mutated("table"))
def test_table_snapshot_decoder(scratch, data):
    expect_clean(load_table, data, scratch)


@FUZZ
@given(data=mutated("model"))
def test_model_file_decoder(scratch, data):
    expect_clean(load_model, data, scratch)


@FUZZ
@given(data=mutated("monitor"))
def test_monitor_decoder(data):
    try:
        mon = embcore.Monitor.from_bytes(data)
    except SnapshotError:
        return
    # What decodes is usable: the invariants summary() and merge() rely on hold.
    mon.summary()
    mon.trajectories()
    try:
        mon.merge(mon)
    except embcore.EmbcoreError as e:
        assert "overflow" in str(e)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=200), kind=st.sampled_from(["table", "model", "monitor"]))
def test_random_bytes_behind_a_valid_magic(scratch, data, kind):
    head = samples()[kind][:20]
    if kind == "monitor":
        with pytest.raises(SnapshotError):
            embcore.Monitor.from_bytes(head + data)
    else:
        expect_clean(load_table if kind == "table" else load_model, head + data, scratch)
