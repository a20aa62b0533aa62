"""Atomic saves (src/io/file.rs): concurrent saves to one path, killed saves, stale
temporary files, and paths that are not regular files."""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest

import embcore
from embcore import EmbeddingTable, SnapshotError


def table(dim: int, rows: int, value: float) -> EmbeddingTable:
    t = EmbeddingTable(dim, optimizer="sgd", capacity=max(rows, 1))
    t.set(np.arange(rows, dtype=np.uint64), np.full((rows, dim), value, dtype=np.float32))
    return t


def names(d: pathlib.Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def host_tag() -> str:
    """The host part of temporary names: crc32 of the host name, as the core writes it."""
    return f"{zlib.crc32(socket.gethostname().encode()):08x}"


def test_concurrent_saves_from_threads_leave_one_whole_file(tmp_path):
    path = tmp_path / "t.emb"
    tables = [table(8, 20_000 + 1000 * k, float(k)) for k in range(6)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(tables))

    def save_many(t: EmbeddingTable) -> None:
        try:
            start.wait()
            for _ in range(4):
                t.save(path)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=save_many, args=(t,)) for t in tables]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    back = EmbeddingTable.load(path)
    # One complete file: exactly one writer's table, whole.
    (k,) = [k for k, t in enumerate(tables) if len(t) == len(back)]
    np.testing.assert_array_equal(back.weights(), tables[k].weights())
    assert names(tmp_path) == ["t.emb"]


KILLED_SAVE = """
import sys
import time
import numpy as np
import embcore
rows, dim = 400_000, 64
t = embcore.EmbeddingTable(dim, optimizer="adagrad", capacity=rows)
t.set(np.arange(rows, dtype=np.uint64), np.ones((rows, dim), dtype=np.float32))
print("saving", flush=True)
t.save(sys.argv[1])
print("saved", flush=True)
time.sleep(600)
"""


def writing_into(pid: int, d: pathlib.Path) -> bool:
    """True when process `pid` has a file in directory `d` open."""
    fds = pathlib.Path(f"/proc/{pid}/fd")
    try:
        links = [os.readlink(fd) for fd in fds.iterdir()]
    except OSError:  # an fd closed while listing
        return False
    return any(link.startswith(f"{d}/") for link in links)


@pytest.mark.skipif(not pathlib.Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_killed_save_leaves_no_orphan_and_the_previous_file(tmp_path):
    path = tmp_path / "t.emb"
    old = table(4, 100, 2.5)
    old.save(path)
    good = path.read_bytes()
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_SAVE, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "saving"
        # Kill it while it holds its temporary file in tmp_path open: mid-save.
        deadline = time.monotonic() + 60
        while not writing_into(child.pid, tmp_path):
            assert time.monotonic() < deadline, "the child never started saving"
            time.sleep(0.001)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.stdout is not None
        child.stdout.close()
    assert path.read_bytes() == good
    np.testing.assert_array_equal(EmbeddingTable.load(path).weights(), old.weights())
    # O_TMPFILE: the killed save left nothing, not even a named temporary file.
    assert names(tmp_path) == ["t.emb"]


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = host_tag()
    stale = tmp_path / f".t.emb.tmp-{dead.pid}-{host}-0-0-0"
    alive = tmp_path / f".t.emb.tmp-{os.getpid()}-{host}-0-0-0"
    other_host = tmp_path / f".t.emb.tmp-{dead.pid}-00000000-0-0-0"
    other_file = tmp_path / f".u.emb.tmp-{dead.pid}-{host}-0-0-0"
    for p in (stale, alive, other_host, other_file):
        p.write_bytes(b"half a table")
    table(4, 10, 1.0).save(tmp_path / "t.emb")
    assert not stale.exists()
    # A live process may still be writing; another host's pid says nothing here.
    assert alive.exists() and other_host.exists() and other_file.exists()


def test_paths_that_are_not_regular_files_raise_the_os_error_kind(tmp_path):
    model = embcore.FieldAwareFM(["a", "b"], dim=2)
    for load in (EmbeddingTable.load, embcore.FieldAwareFM.load, embcore.MatrixFactorization.load):
        with pytest.raises(IsADirectoryError):
            load(tmp_path)
    with pytest.raises(IsADirectoryError):
        table(2, 3, 1.0).save(tmp_path)
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        model.save(tmp_path / "d")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError) as info:
        EmbeddingTable.load(fifo)  # must not block
    assert not isinstance(info.value, SnapshotError)
    with pytest.raises(FileNotFoundError):
        EmbeddingTable.load(tmp_path / "missing" / "t.emb")
    assert names(tmp_path) == ["d", "fifo"]


def test_old_version_files_are_refused_clearly(tmp_path):
    for magic, load in (
        (b"EMBCSNAP", EmbeddingTable.load),
        (b"EMBCMODL", embcore.FieldAwareFM.load),
    ):
        p = tmp_path / "old"
        p.write_bytes(magic + (1).to_bytes(4, "little") + bytes(100))
        with pytest.raises(SnapshotError, match="version 1 is not supported"):
            load(p)
    with pytest.raises(SnapshotError, match="version 1 is not supported"):
        embcore.Monitor.from_bytes(b"EMBCMONI" + (1).to_bytes(4, "little") + bytes(100))
