"""Readers for published embedding tables: one *version* of a table, read in bounded chunks.

A trainer outside embcore publishes its table as a file or a folder. Every reader here yields the
table as chunks ``(ids, rows, counts)`` — ``ids`` uint64[n], ``rows`` float32[n, d],
``counts`` int64[n] or None — so a caller holds one chunk at a time, whatever the table's size.

Formats (chosen by :func:`open_version` from the path):

* **Parquet** — a ``.parquet`` file, or a folder of them (read in name order): an id column and
  either one ``list<float>`` / ``fixed_size_list<float>`` column or ``d`` float columns; row
  groups are streamed with :meth:`pyarrow.parquet.ParquetFile.iter_batches`.
* **NumPy** — ``.npz`` with ``ids`` and ``weights`` (streamed in row blocks: a stored member,
  as ``np.savez`` writes, is memory-mapped at its offset inside the zip; a compressed one, as
  ``np.savez_compressed`` writes, is decompressed block by block; CRC-32 checked), or a folder
  holding ``ids.npy`` and ``weights.npy`` (memory-mapped, so streamed); optional ``counts``.
* **safetensors** — a ``.safetensors`` file with an id tensor and a weight tensor, read in row
  slices through the ``safetensors`` numpy API (optional dependency: ``pip install
  safetensors``; it is the format's reference reader, with no framework import).
* **embcore snapshot** — a file written by :meth:`embcore.EmbeddingTable.save` (magic bytes
  ``EMBCSNAP``); counts are the table's interaction counts.

Column names: the id column is ``id_column`` (default: ``id``, ``ids``, ``item_id`` or the first
integer column), the weights ``weight_column`` (default: ``weights``, ``embedding``, ``vector``,
the only list column, else every remaining float column in file order) and the optional
interaction counts ``count_column`` (default: ``count``, ``counts`` or ``interactions`` when
present). In-memory arrays of any framework (objects with ``__dlpack__`` or the array interface)
are converted by :func:`as_numpy` without importing the framework.

>>> import tempfile, pathlib, numpy as np
>>> path = pathlib.Path(tempfile.mkdtemp()) / "v1.npz"
>>> np.savez(path, ids=np.arange(3), weights=np.eye(3, dtype=np.float32))
>>> version = open_version(path)
>>> version.format, version.dim, version.num_rows
('npz', 3, 3)
>>> [chunk.ids.tolist() for chunk in version.chunks(2)]
[[0, 1], [2]]
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embcore.errors import DatasetError

__all__ = [
    "Chunk",
    "Version",
    "VersionError",
    "as_numpy",
    "id_hash",
    "open_version",
]

_ID_NAMES = ("id", "ids", "item_id", "item", "key")
_WEIGHT_NAMES = ("weights", "weight", "embedding", "embeddings", "vector", "emb")
_COUNT_NAMES = ("count", "counts", "interactions", "interaction_count")
_SNAPSHOT_MAGIC = b"EMBCSNAP"
DEFAULT_CHUNK_ROWS = 65536
#: What reading a damaged file raises (zlib.error: a corrupt deflate stream inside an .npz).
_READ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


class VersionError(DatasetError):
    """A version file that cannot be read: missing, truncated, corrupt, or of the wrong shape."""


@dataclass(frozen=True)
class Chunk:
    """Consecutive rows of one version: ``ids`` uint64[n], ``rows`` float32[n, d], ``counts``
    int64[n] or None."""

    ids: npt.NDArray[np.uint64]
    rows: npt.NDArray[np.float32]
    counts: npt.NDArray[np.int64] | None


def id_hash(ids: npt.NDArray[np.uint64], seed: int = 0) -> npt.NDArray[np.uint64]:
    """splitmix64 of ``id ^ mix(seed)``: uniform over 64 bits and the same for an id wherever
    it appears, so ``id_hash(ids) < rate * 2**64`` picks the same ids in every version.

    >>> int(id_hash(np.array([1], dtype=np.uint64))[0]) == int(id_hash(np.array([1], np.uint64))[0])
    True
    """
    with np.errstate(over="ignore"):
        z = ids.astype(np.uint64, copy=False) ^ np.uint64(
            (seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % 2**64
        )
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def as_numpy(value: Any, name: str = "array") -> npt.NDArray[Any]:
    """A NumPy view of ``value`` when its memory allows (``__dlpack__``, ``__array_interface__``,
    ``__array__``), else a copy; no framework is imported.

    PyTorch and JAX CPU tensors go through DLPack (zero-copy); a tensor that requires grad must be
    detached first (its ``__dlpack__`` refuses), a GPU tensor copied to the host (``.cpu()``).

    >>> as_numpy([1, 2]).tolist()
    [1, 2]
    """
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "__dlpack__"):
        try:
            return np.from_dlpack(value)
        except (BufferError, RuntimeError, TypeError, ValueError) as err:
            if not hasattr(value, "__array__") and not hasattr(value, "__array_interface__"):
                raise DatasetError(
                    f"{name}: {type(value).__name__} cannot be read through DLPack ({err}); "
                    "pass a CPU array (e.g. tensor.detach().cpu())"
                ) from None
    try:
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise DatasetError(
            f"{name}: cannot read a {type(value).__name__} as an array ({err}); pass a NumPy "
            "array, or an object with __dlpack__ or __array_interface__"
        ) from None


def _ids(value: Any, name: str) -> npt.NDArray[np.uint64]:
    array = as_numpy(value, name)
    if array.ndim != 1:
        raise VersionError(f"{name} must be 1-D, got shape {array.shape}")
    if array.dtype.kind == "u":
        return array.astype(np.uint64, copy=False)
    if array.dtype.kind != "i":
        raise VersionError(f"{name} must hold integers, got dtype {array.dtype}")
    if array.size and int(array.min()) < 0:
        raise VersionError(f"{name} has negative ids (min {int(array.min())}); ids are >= 0")
    return array.astype(np.uint64)


def _rows(value: Any, name: str) -> npt.NDArray[np.float32]:
    array = as_numpy(value, name)
    if array.ndim != 2:
        raise VersionError(f"{name} must be 2-D (rows, dim), got shape {array.shape}")
    if array.dtype.kind not in "fiu":
        raise VersionError(f"{name} must hold floats, got dtype {array.dtype}")
    with np.errstate(over="ignore"):  # beyond float32's range: inf, a non-finite row counted
        return np.ascontiguousarray(array, dtype=np.float32)


def _counts(value: Any, name: str) -> npt.NDArray[np.int64] | None:
    if value is None:
        return None
    array = as_numpy(value, name)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise VersionError(f"{name} must be a 1-D integer array, got {array.dtype} {array.shape}")
    return array.astype(np.int64, copy=False)


class Version:
    """One published version of a table: where it is, its format, size and dimension, and its
    rows as chunks.

    Made by :func:`open_version` (from a path) or :meth:`from_arrays` (from memory). Opening reads
    only the metadata (Parquet footer, ``.npy`` headers, safetensors header); :meth:`chunks`
    reads the rows.
    """

    def __init__(
        self,
        name: str,
        fmt: str,
        dim: int,
        num_rows: int,
        has_counts: bool,
        read: Any,
        path: Path | None = None,
        time: float | None = None,
    ) -> None:
        self.name = name
        self.format = fmt
        self.dim = dim
        self.num_rows = num_rows
        self.has_counts = has_counts
        self.path = path
        self.time = time
        self._read = read

    def __repr__(self) -> str:
        return (
            f"Version({self.name!r}, format={self.format!r}, rows={self.num_rows}, dim={self.dim})"
        )

    def chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        """The rows in chunks of at most ``chunk_rows``; a read error is a :class:`VersionError`
        naming the version."""
        try:
            for ids, rows, counts in self._read(chunk_rows):
                ids = _ids(ids, "ids")
                rows = _rows(rows, "weights")
                counts = _counts(counts, "counts")
                if rows.shape[0] != ids.size or (counts is not None and counts.size != ids.size):
                    raise VersionError(
                        f"ids has {ids.size} elements but weights has {rows.shape[0]} rows"
                        + ("" if counts is None else f" and counts {counts.size}")
                    )
                if rows.shape[1] != self.dim:
                    raise VersionError(f"a chunk has {rows.shape[1]} columns, not {self.dim}")
                yield Chunk(ids, rows, counts)
        except VersionError as err:
            raise VersionError(f"{self.name}: {err}") from None
        except _READ_ERRORS as err:
            raise VersionError(
                f"{self.name}: cannot be read ({type(err).__name__}: {err})"
            ) from None

    @classmethod
    def from_arrays(
        cls,
        name: str,
        ids: Any,
        weights: Any,
        counts: Any = None,
        time: float | None = None,
    ) -> Version:
        """A version held in memory; ``ids``, ``weights`` and ``counts`` may be arrays of any
        framework (see :func:`as_numpy`).

        >>> Version.from_arrays("v", [1, 2], [[0.0, 1.0], [1.0, 0.0]]).dim
        2
        """
        id_array = _ids(ids, "ids")
        rows = _rows(weights, "weights")
        count_array = _counts(counts, "counts")

        def read(chunk_rows: int) -> Iterator[tuple[Any, Any, Any]]:
            for start in range(0, id_array.size, chunk_rows):
                stop = start + chunk_rows
                yield (
                    id_array[start:stop],
                    rows[start:stop],
                    None if count_array is None else count_array[start:stop],
                )

        return cls(
            name, "arrays", rows.shape[1], id_array.size, count_array is not None, read, time=time
        )


# --------------------------------------------------------------------------------------------
# Format detection


def open_version(
    path: str | os.PathLike[str],
    id_column: str | None = None,
    weight_column: str | None = None,
    count_column: str | None = None,
    time_column: str | None = None,
) -> Version:
    """Open one version (file or folder) and read its metadata; see the module docstring for the
    formats and the column defaults. ``time_column`` names a value giving the version's time
    (Parquet: the column's maximum; npz/npy folder: a scalar array; safetensors: a metadata key).

    Raises :class:`VersionError` (a ``DatasetError``) naming the file for a path that does not
    exist, a format it cannot tell, a truncated or corrupt file, or missing columns.
    """
    p = Path(path)
    names = (id_column, weight_column, count_column, time_column)
    try:
        if not p.exists():
            raise VersionError("does not exist")
        if p.is_dir():
            if (p / "ids.npy").exists() or (p / "weights.npy").exists():
                return _open_npy_folder(p, *names)
            files = sorted(q for q in p.iterdir() if q.suffix == ".parquet")
            if not files:
                raise VersionError(
                    "is a folder with neither ids.npy/weights.npy nor .parquet files"
                )
            return _open_parquet(p, files, *names)
        suffix = p.suffix.lower()
        if suffix == ".parquet":
            return _open_parquet(p, [p], *names)
        if suffix == ".npz":
            return _open_npz(p, *names)
        if suffix == ".safetensors":
            return _open_safetensors(p, *names)
        with open(p, "rb") as handle:
            head = handle.read(8)
        if head == _SNAPSHOT_MAGIC:
            return _open_snapshot(p)
        if head[:4] == b"PAR1":
            return _open_parquet(p, [p], *names)
        raise VersionError(
            "has an unknown format; expected .parquet, .npz, .safetensors, a folder with "
            "ids.npy and weights.npy, or an embcore snapshot (EmbeddingTable.save)"
        )
    except VersionError as err:
        raise VersionError(f"{p}: {err}") from None
    except _READ_ERRORS as err:
        raise VersionError(f"{p}: cannot be read ({type(err).__name__}: {err})") from None


def _pick(
    available: list[str], given: str | None, defaults: tuple[str, ...], what: str
) -> str | None:
    if given is not None:
        if given not in available:
            raise VersionError(f"has no {what} {given!r}; it has {available}")
        return given
    return next((n for n in defaults if n in available), None)


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


# --------------------------------------------------------------------------------------------
# Parquet


def _open_parquet(
    root: Path,
    files: list[Path],
    id_column: str | None,
    weight_column: str | None,
    count_column: str | None,
    time_column: str | None,
) -> Version:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # pre_buffer=False: with read-ahead on, iter_batches held every decoded row group of the
    # file until the end (a 3M x 32 table, 366 MiB: peak RSS 554 MiB with it, 153 without).
    handles = [pq.ParquetFile(f, pre_buffer=False, page_checksum_verification=True) for f in files]
    schema = handles[0].schema_arrow
    for f, h in zip(files[1:], handles[1:], strict=True):
        if not h.schema_arrow.equals(schema):
            raise VersionError(f"{f.name} has another schema than {files[0].name}")
    fields = {f.name: f.type for f in schema}
    names = list(fields)
    ints = [n for n in names if pa.types.is_integer(fields[n])]
    id_name = _pick(names, id_column, _ID_NAMES, "id column") or (ints[0] if ints else None)
    if id_name is None:
        raise VersionError(
            f"has no integer id column (columns: {names}); pass --id-column NAME (Python: "
            "id_column=NAME)"
        )
    kind = fields[id_name]
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not pa.types.is_integer(kind):
        raise VersionError(
            f"id column {id_name!r} holds {kind}, not integers; write the table's ids as "
            "int64/uint64 (or pass --id-column NAME to use another column)"
        )
    count_name = _pick(names, count_column, _COUNT_NAMES, "count column")
    if time_column is not None and time_column not in names:
        raise VersionError(f"has no time column {time_column!r}; it has {names}")
    taken = {id_name, count_name, time_column}
    lists = [
        n
        for n in names
        if n not in taken
        and (
            pa.types.is_list(fields[n])
            or pa.types.is_fixed_size_list(fields[n])
            or pa.types.is_large_list(fields[n])
        )
    ]
    weight_name = _pick(names, weight_column, _WEIGHT_NAMES, "weight column")
    if weight_name is None and len(lists) == 1:
        weight_name = lists[0]
    if weight_name is not None:
        kind = fields[weight_name]
        if not (
            pa.types.is_list(kind)
            or pa.types.is_fixed_size_list(kind)
            or pa.types.is_large_list(kind)
        ):
            raise VersionError(f"weight column {weight_name!r} is {kind}, not a list of floats")
        if not pa.types.is_floating(kind.value_type):
            raise VersionError(f"weight column {weight_name!r} holds {kind.value_type}, not floats")
        float_columns: list[str] = []
    else:
        float_columns = [n for n in names if n not in taken and pa.types.is_floating(fields[n])]
        if not float_columns:
            raise VersionError(
                f"has neither a list<float> weight column nor float columns (columns: {names})"
            )
    num_rows = sum(h.metadata.num_rows for h in handles)
    if float_columns:
        dim = len(float_columns)
    else:
        kind = fields[weight_name]
        dim = getattr(kind, "list_size", 0) or 0
        if not dim:
            first = next((h for h in handles if h.metadata.num_rows), None)
            if first is None:
                raise VersionError("is empty: no row gives the dimension of its list column")
            head = next(first.iter_batches(batch_size=1, columns=[weight_name]))
            value = head.column(0)[0]
            dim = len(value) if value.is_valid else 0
            if not dim:
                raise VersionError(f"first row of {weight_name!r} is null or empty")
    time = None
    if time_column is not None:
        highs = [_column_max(h, time_column) for h in handles]
        highs = [h for h in highs if h is not None]
        time = _as_time(max(highs) if highs else None, time_column)
    list_name = weight_name or ""
    columns = [id_name] + ([count_name] if count_name else []) + (float_columns or [list_name])

    def read(chunk_rows: int) -> Iterator[tuple[Any, Any, Any]]:
        for h in handles:
            for batch in h.iter_batches(batch_size=chunk_rows, columns=columns):
                ids = batch.column(id_name)
                if pa.types.is_dictionary(ids.type):
                    ids = ids.dictionary_decode()
                if ids.null_count:
                    raise VersionError(f"id column {id_name!r} has {ids.null_count} nulls")
                counts = None
                if count_name:
                    c = batch.column(count_name)
                    counts = c.fill_null(0).to_numpy(zero_copy_only=False)
                if float_columns:
                    rows = (
                        np.column_stack(
                            [
                                batch.column(n).to_numpy(zero_copy_only=False).astype(np.float32)
                                for n in float_columns
                            ]
                        )
                        if batch.num_rows
                        else np.zeros((0, dim), dtype=np.float32)
                    )
                else:
                    rows = _list_rows(batch.column(list_name), dim, list_name)
                yield ids.to_numpy(zero_copy_only=False), rows, counts

    return Version(
        root.name,
        "parquet",
        dim,
        num_rows,
        count_name is not None,
        read,
        root,
        time if time is not None else max(_mtime(f) for f in files),
    )


def _column_max(handle: Any, name: str) -> Any:
    """The column's maximum from the row-group statistics (no data read), else by reading it."""
    import pyarrow.compute as pc

    meta = handle.metadata
    index = handle.schema_arrow.get_field_index(name)
    highs = []
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(index).statistics
        if stats is None or not stats.has_min_max:
            return pc.max(handle.read(columns=[name]).column(0)).as_py()
        highs.append(stats.max)
    return max(highs) if highs else None


def _list_rows(column: Any, dim: int, name: str) -> npt.NDArray[np.float32]:
    """A list<float> Arrow column as an (n, dim) float32 matrix; a null row becomes NaN (the
    health check counts it)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(column)
    if column.null_count:
        column = pc.if_else(
            pc.is_null(column),
            pa.scalar([float("nan")] * dim, type=column.type),
            column,
        )
    if pa.types.is_fixed_size_list(column.type):
        values = column.flatten()
    else:
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        if lengths.size and (lengths.min() != dim or lengths.max() != dim):
            bad = int(np.flatnonzero(lengths != dim)[0])
            raise VersionError(
                f"row {bad} of {name!r} has {int(lengths[bad])} values; every row needs {dim}"
            )
        values = pc.list_flatten(column)
    flat = values.to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(n, dim)


def _as_time(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    try:
        return float(value)
    except (TypeError, ValueError):
        raise VersionError(
            f"time column {name!r} holds {value!r}, not a number or a time"
        ) from None


# --------------------------------------------------------------------------------------------
# NumPy


def _open_npz(
    path: Path,
    id_column: str | None,
    weight_column: str | None,
    count_column: str | None,
    time_column: str | None,
) -> Version:
    with zipfile.ZipFile(path) as archive:
        members = {
            info.filename[:-4]: info
            for info in archive.infolist()
            if info.filename.endswith(".npy")
        }
        keys = list(members)
        id_name = _pick(keys, id_column, _ID_NAMES, "id array")
        weight_name = _pick(keys, weight_column, _WEIGHT_NAMES, "weight array")
        if id_name is None or weight_name is None:
            raise VersionError(f"needs arrays 'ids' and 'weights'; it has {keys}")
        count_name = _pick(keys, count_column, _COUNT_NAMES, "count array")
        ids = _NpzArray(path, archive, members[id_name])
        weights = _NpzArray(path, archive, members[weight_name])
        counts = None if count_name is None else _NpzArray(path, archive, members[count_name])
        time = None
        if time_column is not None:
            name = _pick(keys, time_column, (), "time array")
            with archive.open(members[str(name)]) as member:
                value = np.lib.format.read_array(member, allow_pickle=False)
            time = _as_time(value.item(), time_column)
    if weights.ndim != 2:
        raise VersionError(f"weights must be 2-D, got shape {weights.shape}")
    for array, what in ((ids, "ids"), (counts, "counts")):
        if array is not None and array.ndim != 1:
            raise VersionError(f"{what} must be 1-D, got shape {array.shape}")
    n = ids.shape[0]
    if weights.shape[0] != n or (counts is not None and counts.shape[0] != n):
        raise VersionError(
            f"ids has {n} elements but weights has {weights.shape[0]} rows"
            + ("" if counts is None else f" and counts {counts.shape[0]}")
        )

    def read(chunk_rows: int) -> Iterator[tuple[Any, Any, Any]]:
        with zipfile.ZipFile(path) as archive:
            streams = [a.blocks(archive, chunk_rows) for a in (ids, weights, counts) if a]
            for blocks in zip(*streams, strict=True):
                yield blocks[0], blocks[1], blocks[2] if counts is not None else None

    return Version(
        path.name,
        "npz",
        int(weights.shape[1]),
        int(n),
        counts is not None,
        read,
        path,
        time if time is not None else _mtime(path),
    )


class _NpzArray:
    """One array of an ``.npz`` read in row blocks, never whole.

    A stored member (``np.savez``) is memory-mapped at its offset inside the zip file (the local
    file header gives where its bytes start, the ``.npy`` header where the array does); a
    compressed one (``np.savez_compressed``) is decompressed as it is read. Either way the
    member's CRC-32 is checked once its last row is read, so a corrupt archive is an error
    (the caller records nothing of a version that fails). Only a compressed Fortran-ordered
    array, whose rows are not contiguous in the stream, is decompressed whole.
    """

    def __init__(self, path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
        self.path = path
        self.info = info
        if info.flag_bits & 0x1:
            raise VersionError(f"{info.filename} is encrypted")
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                header = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                header = np.lib.format.read_array_header_2_0(member)
            else:
                raise VersionError(f"{info.filename} has .npy format version {version}")
            self.header_size = member.tell()
        self.shape, self.fortran, self.dtype = header
        if self.dtype.hasobject:
            raise VersionError(f"{info.filename} holds Python objects; store numbers")
        self.ndim = len(self.shape)
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        nbytes = self.row_bytes * (self.shape[0] if self.shape else 1)
        if info.file_size != self.header_size + nbytes:
            raise VersionError(
                f"{info.filename} holds {info.file_size - self.header_size} bytes of data but "
                f"its header says shape {self.shape} of {self.dtype} ({nbytes} bytes)"
            )

    def blocks(self, archive: zipfile.ZipFile, chunk_rows: int) -> Iterator[npt.NDArray[Any]]:
        """Consecutive blocks of ``chunk_rows`` rows (copies: nothing refers to the file)."""
        if self.ndim == 0:
            raise VersionError(f"{self.info.filename} is a scalar, not an array of rows")
        if self.info.compress_type == zipfile.ZIP_STORED:
            yield from self._mapped_blocks(chunk_rows)
        else:
            yield from self._streamed_blocks(archive, chunk_rows)

    def _mapped_blocks(self, chunk_rows: int) -> Iterator[npt.NDArray[Any]]:
        with open(self.path, "rb") as handle:
            handle.seek(self.info.header_offset)
            local = handle.read(30)
            if len(local) != 30 or local[:4] != b"PK\x03\x04":
                raise VersionError(f"{self.info.filename}: its local zip header is damaged")
            name_length, extra_length = struct.unpack("<HH", local[26:30])
            start = self.info.header_offset + 30 + name_length + extra_length
            handle.seek(start)
            crc = zlib.crc32(handle.read(self.header_size))
        n = self.shape[0]
        nbytes = n * self.row_bytes
        if nbytes:
            # np.memmap checks that the file holds the whole array (a truncated one raises).
            raw = np.memmap(
                self.path, dtype=np.uint8, mode="r", offset=start + self.header_size, shape=nbytes
            )
            typed = raw.view(self.dtype).reshape(self.shape, order="F" if self.fortran else "C")
            step = chunk_rows * self.row_bytes
            try:
                for lo in range(0, n, chunk_rows):
                    if not self.fortran:  # the CRC follows the rows in file order
                        crc = zlib.crc32(
                            raw[lo * self.row_bytes : lo * self.row_bytes + step].data, crc
                        )
                    yield np.array(typed[lo : lo + chunk_rows])
                if self.fortran:
                    for lo in range(0, nbytes, step):
                        crc = zlib.crc32(raw[lo : lo + step].data, crc)
            finally:
                del raw, typed
        if crc != self.info.CRC:
            raise VersionError(f"{self.info.filename}: bad CRC-32, the file is corrupt")

    def _streamed_blocks(
        self, archive: zipfile.ZipFile, chunk_rows: int
    ) -> Iterator[npt.NDArray[Any]]:
        # zipfile checks the CRC-32 when the member's last byte is read.
        with archive.open(self.info) as member:
            member.read(self.header_size)
            n = self.shape[0]
            if self.fortran:
                whole = np.frombuffer(_read_exactly(member, n * self.row_bytes), self.dtype)
                array = whole.reshape(self.shape, order="F")
                _at_end(member, self.info.filename)
                for lo in range(0, n, chunk_rows):
                    yield np.array(array[lo : lo + chunk_rows])
                return
            for lo in range(0, n, chunk_rows):
                rows = min(chunk_rows, n - lo)
                data = _read_exactly(member, rows * self.row_bytes)
                block = np.frombuffer(data, self.dtype).reshape((rows, *self.shape[1:]))
                if lo + rows >= n:
                    _at_end(member, self.info.filename)
                yield block
            if not n:
                _at_end(member, self.info.filename)


def _read_exactly(member: Any, size: int) -> bytearray:
    data = bytearray(size)
    view = memoryview(data)
    got = 0
    while got < size:
        k = member.readinto(view[got:])
        if not k:
            raise VersionError(f"ends after {got} of {size} bytes")
        got += k
    return data


def _at_end(member: Any, name: str) -> None:
    """Read past the last byte: zipfile checks the CRC-32 there."""
    if member.read(1):
        raise VersionError(f"{name} has bytes after its array")


def _open_npy_folder(
    folder: Path,
    id_column: str | None,
    weight_column: str | None,
    count_column: str | None,
    time_column: str | None,
) -> Version:
    def load(stem: str) -> npt.NDArray[Any]:
        return np.load(folder / f"{stem}.npy", mmap_mode="r", allow_pickle=False)

    for stem in (id_column or "ids", weight_column or "weights"):
        if not (folder / f"{stem}.npy").exists():
            raise VersionError(f"has no {stem}.npy")
    ids = load(id_column or "ids")
    weights = load(weight_column or "weights")
    count_stem = count_column or next(
        (n for n in _COUNT_NAMES if (folder / f"{n}.npy").exists()), None
    )
    counts = None if count_stem is None else load(count_stem)
    if weights.ndim != 2:
        raise VersionError(f"weights.npy must be 2-D, got shape {weights.shape}")
    time = None
    if time_column is not None:
        time = _as_time(load(time_column).item(), time_column)

    def read(chunk_rows: int) -> Iterator[tuple[Any, Any, Any]]:
        for start in range(0, ids.shape[0], chunk_rows):
            stop = start + chunk_rows
            yield (
                np.array(ids[start:stop]),
                np.array(weights[start:stop]),
                None if counts is None else np.array(counts[start:stop]),
            )

    return Version(
        folder.name,
        "npy",
        int(weights.shape[1]),
        int(ids.shape[0]),
        counts is not None,
        read,
        folder,
        time if time is not None else _mtime(folder / "weights.npy"),
    )


# --------------------------------------------------------------------------------------------
# safetensors and embcore snapshots


def _open_safetensors(
    path: Path,
    id_column: str | None,
    weight_column: str | None,
    count_column: str | None,
    time_column: str | None,
) -> Version:
    try:
        from safetensors import safe_open
    except ImportError:
        raise VersionError(
            "is a safetensors file; install the reader with pip install safetensors "
            "(or pip install 'embcore[torch]')"
        ) from None
    try:
        handle = safe_open(str(path), framework="np")
        handle.__enter__()
    except Exception as err:  # the Rust reader raises its own SafetensorError for a bad header
        raise VersionError(f"cannot be read as safetensors ({err})") from None
    keys = list(handle.keys())
    id_name = _pick(keys, id_column, _ID_NAMES, "id tensor")
    weight_name = _pick(keys, weight_column, _WEIGHT_NAMES, "weight tensor")
    if id_name is None or weight_name is None:
        raise VersionError(f"needs tensors 'ids' and 'weights'; it has {keys}")
    count_name = _pick(keys, count_column, _COUNT_NAMES, "count tensor")
    weights = handle.get_slice(weight_name)
    shape = weights.get_shape()
    if len(shape) != 2:
        raise VersionError(f"weight tensor {weight_name!r} has shape {shape}, not (rows, dim)")
    ids = handle.get_slice(id_name)
    counts = None if count_name is None else handle.get_slice(count_name)
    time = None
    if time_column is not None:
        meta = handle.metadata() or {}
        if time_column not in meta:
            raise VersionError(f"has no metadata key {time_column!r}; it has {sorted(meta)}")
        time = _as_time(meta[time_column], time_column)
    n = int(ids.get_shape()[0])

    def read(chunk_rows: int) -> Iterator[tuple[Any, Any, Any]]:
        for start in range(0, n, chunk_rows):
            stop = min(start + chunk_rows, n)
            try:
                yield (
                    ids[start:stop],
                    weights[start:stop],
                    None if counts is None else counts[start:stop],
                )
            except Exception as err:  # SafetensorError on a truncated payload
                raise VersionError(f"cannot be read ({err})") from None

    return Version(
        path.name,
        "safetensors",
        int(shape[1]),
        n,
        counts is not None,
        read,
        path,
        time if time is not None else _mtime(path),
    )


def _open_snapshot(path: Path) -> Version:
    import embcore

    try:
        table = embcore.EmbeddingTable.load(path)
    except Exception as err:  # SnapshotError, OSError: the message names the damage
        raise VersionError(f"cannot be loaded as an embcore snapshot ({err})") from None
    ids, weights = table.view()
    counts = table.metadata()["interactions"]

    def read(chunk_rows: int) -> Iterator[tuple[Any, Any, Any]]:
        for start in range(0, ids.size, chunk_rows):
            stop = start + chunk_rows
            yield ids[start:stop], weights[start:stop], counts[start:stop]

    return Version(path.name, "snapshot", table.dim, len(table), True, read, path, _mtime(path))
