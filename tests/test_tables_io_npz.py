"""``.npz`` versions are read in row blocks, never whole: a stored member is memory-mapped at its
offset in the zip, a compressed one decompressed as it is read; both give back exactly what
``np.load`` reads, in bounded memory; a corrupt or truncated archive is a VersionError (and
``embcore track`` skips it without losing its state)."""

from __future__ import annotations

import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embcore.tables_io import VersionError, open_version
from embcore.track import TrackConfig, track

SAVERS = {"stored": np.savez, "compressed": np.savez_compressed}


def read_all(path: Path, chunk_rows: int):
    chunks = list(open_version(path).chunks(chunk_rows))
    assert all(c.ids.size <= chunk_rows for c in chunks)
    ids = np.concatenate([c.ids for c in chunks]) if chunks else np.zeros(0, np.uint64)
    rows = np.concatenate([c.rows for c in chunks]) if chunks else None
    counts = None
    if chunks and chunks[0].counts is not None:
        counts = np.concatenate([c.counts for c in chunks])
    return ids, rows, counts


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    dim=st.integers(1, 9),
    chunk_rows=st.integers(1, 64),
    saver=st.sampled_from(sorted(SAVERS)),
    fortran=st.booleans(),
    with_counts=st.booleans(),
    weight_dtype=st.sampled_from([np.float32, np.float64, np.float16]),
    id_dtype=st.sampled_from([np.int64, np.int32, np.uint64]),
)
def test_blocks_are_what_np_load_reads(
    tmp_path_factory: pytest.TempPathFactory,
    n: int,
    dim: int,
    chunk_rows: int,
    saver: str,
    fortran: bool,
    with_counts: bool,
    weight_dtype: type,
    id_dtype: type,
) -> None:
    rng = np.random.default_rng(n * 31 + dim)
    weights = rng.normal(size=(n, dim)).astype(weight_dtype)
    if fortran:
        weights = np.asfortranarray(weights)
    arrays = {"ids": rng.permutation(10 * n)[:n].astype(id_dtype), "weights": weights}
    if with_counts:
        arrays["counts"] = rng.integers(0, 1000, n)
    path = tmp_path_factory.mktemp("npz") / "v.npz"
    SAVERS[saver](path, **arrays)
    ids, rows, counts = read_all(path, chunk_rows)
    with np.load(path) as reference:
        np.testing.assert_array_equal(ids, reference["ids"].astype(np.uint64))
        np.testing.assert_array_equal(rows, reference["weights"].astype(np.float32))
        if with_counts:
            np.testing.assert_array_equal(counts, reference["counts"])
        else:
            assert counts is None


@pytest.mark.parametrize("saver", sorted(SAVERS))
def test_a_large_array_is_read_in_bounded_memory(tmp_path: Path, saver: str) -> None:
    n, dim, chunk_rows = 200_000, 32, 4096  # weights 25.6 MB, a block 0.5 MB
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(n, dim)).astype(np.float32)
    weights[::7] = 0.0  # something to compress
    path = tmp_path / "big.npz"
    SAVERS[saver](path, ids=np.arange(n), weights=weights)
    total = np.zeros(dim, np.float64)
    rows = 0
    tracemalloc.start()
    try:
        for chunk in open_version(path).chunks(chunk_rows):
            total += chunk.rows.sum(axis=0, dtype=np.float64)
            rows += chunk.ids.size
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows == n
    np.testing.assert_allclose(total, weights.sum(axis=0, dtype=np.float64), rtol=1e-9)
    block = chunk_rows * dim * 4
    assert peak < 10 * block < weights.nbytes / 4, f"peak {peak} bytes for blocks of {block}"


def flip_a_weight_byte(path: Path) -> None:
    """Change one byte inside the weights member's data (its CRC-32 no longer matches)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("weights.npy")
    data = bytearray(path.read_bytes())
    # Past the local header and well into the member's payload.
    at = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2
    data[at] ^= 0x55
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("saver", sorted(SAVERS))
def test_a_corrupt_member_is_a_version_error(tmp_path: Path, saver: str) -> None:
    path = tmp_path / "v.npz"
    rng = np.random.default_rng(1)
    SAVERS[saver](path, ids=np.arange(5000), weights=rng.normal(size=(5000, 8)))
    flip_a_weight_byte(path)
    with pytest.raises(VersionError, match="v.npz"):
        for _ in open_version(path).chunks(512):
            pass


def test_truncated_and_inconsistent_archives_are_version_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.npz"
    np.savez(good, ids=np.arange(100), weights=np.ones((100, 4)))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:-300])
    with pytest.raises(VersionError, match="cut.npz"):
        list(open_version(cut).chunks())
    uneven = tmp_path / "uneven.npz"
    np.savez(uneven, ids=np.arange(99), weights=np.ones((100, 4)))
    with pytest.raises(VersionError, match="ids has 99 elements but weights has 100 rows"):
        open_version(uneven)
    flat = tmp_path / "flat.npz"
    np.savez(flat, ids=np.arange(4), weights=np.ones(4))
    with pytest.raises(VersionError, match="weights must be 2-D"):
        open_version(flat)


def state_arrays(folder: Path) -> dict[str, bytes]:
    """The tracker's monitor bytes and previous-version sample (whatever their generation)."""
    (monitor,) = folder.glob("monitor-*.bin")
    (sample,) = folder.glob("sample-*.npz")
    with np.load(sample) as data:
        arrays = {k: data[k].tobytes() for k in data.files}
    return {"monitor": monitor.read_bytes(), **arrays}


@pytest.mark.parametrize("saver", sorted(SAVERS))
def test_track_skips_a_corrupt_npz_and_keeps_its_state(tmp_path: Path, saver: str) -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(size=(3000, 8)).astype(np.float32)
    paths = []
    for v in range(1, 4):
        p = tmp_path / f"v{v}.npz"
        SAVERS[saver](p, ids=np.arange(3000), weights=base + 0.01 * v)
        paths.append(p)
    flip_a_weight_byte(paths[1])
    config = TrackConfig(sample_size=10_000, track_items=10_000)
    warnings: list[str] = []
    first = track(paths[:1], tmp_path / "s", out=None, config=config, progress=False)
    before = state_arrays(tmp_path / "s")
    m = track(
        paths[:2], tmp_path / "s", out=None, config=config, progress=False, warn=warnings.append
    )
    assert len(warnings) == 1 and "v2.npz" in warnings[0] and "CRC" in warnings[0]
    assert [v["name"] for v in m["versions"]] == ["v1.npz"]
    assert m["monitor"]["updates"] == first["monitor"]["updates"] == 0
    # Only the list of skipped files changed: the monitor and the sample are as they were.
    assert state_arrays(tmp_path / "s") == before
    m = track(paths, tmp_path / "s", out=None, config=config, progress=False, warn=warnings.append)
    assert [v["name"] for v in m["versions"]] == ["v1.npz", "v3.npz"]
