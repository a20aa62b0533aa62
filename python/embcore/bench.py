"""``embcore bench``: the mf-1m benchmark suite of BENCHMARKS.md.

Measures, in one run on one machine, embcore's training, insert, snapshot and
scan throughput next to the baselines that are installed (hand-written numpy
loops, the C limit probe when a C compiler is present, and river / LightFM /
implicit when importable), prints a table with ratios and writes JSON:
``{"machine": {...}, "results": [{"name", "value", "unit", ...}]}``.

Machines are noisy: every figure is the median of several repeats, and the
targets are judged as ratios measured in the same run.

>>> from embcore.bench import Workload
>>> Workload.quick().users
200000
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import embcore
from embcore import bench_replay
from embcore.runs import proc_bytes

DIM = 32
# The physical-limit probe of BENCHMARKS.md, shipped with the package.
PROBE_SOURCE = Path(__file__).resolve().parent / "limit_probe.c"
PROBE_ADAGRAD_SOURCE = Path(__file__).resolve().parent / "limit_probe_adagrad.c"
PROBE_MAPPED_SOURCE = Path(__file__).resolve().parent / "limit_probe_mapped.c"


@dataclass(frozen=True)
class Workload:
    """Sizes of one benchmark run (mf-1m: 1M users x 1M items, d=32, Zipf(1.2) items).

    Parameters
    ----------
    users, items : int
        Distinct user and item ids of the training events.
    events : int
        Training events per timed pass.
    inserts : int
        Rows inserted by the insert benchmark.
    snapshot_rows : int
        Rows of the table saved and loaded by the snapshot benchmark.
    per_event_numpy, minibatch_numpy : int
        Events of the hand-written numpy baselines (per-event loop, minibatch).
    drift_rows : int
        Rows compared by the drift benchmark.
    repeats : int
        Repeats of every measurement (the median is reported).
    """

    users: int = 1_000_000
    items: int = 1_000_000
    events: int = 5_000_000
    inserts: int = 2_000_000
    snapshot_rows: int = 5_000_000
    per_event_numpy: int = 100_000
    minibatch_numpy: int = 1_000_000
    drift_rows: int = 5_000_000
    repeats: int = 3

    @classmethod
    def quick(cls) -> Workload:
        """The ``--quick`` sizes (a run under a minute)."""
        return cls(
            users=200_000,
            items=200_000,
            events=1_000_000,
            inserts=500_000,
            snapshot_rows=1_000_000,
            per_event_numpy=20_000,
            minibatch_numpy=200_000,
            drift_rows=1_000_000,
            repeats=2,
        )


@dataclass
class Result:
    """One measured figure.

    Parameters
    ----------
    name : str
        Benchmark name (``--only`` selects by it).
    value : float
        The median measurement.
    unit : str
        Unit of ``value`` (``"events/s"``, ``"s"``, ...).
    note : str
        What was measured, for the table.
    extra : dict
        Further numbers written to the JSON.
    """

    name: str
    value: float
    unit: str
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def sparse_ids(dense: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
    """Spread dense indices over the 64-bit id space (ids are not dense in practice)."""
    with np.errstate(over="ignore"):
        return (dense.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64(0x5DEECE66D)


def mf_events(
    w: Workload, n: int, seed: int = 0
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, w.users, n)
    items = (rng.zipf(1.2, n) - 1) % w.items
    labels = (rng.random(n) < 0.3).astype(np.float32)
    return users, items.astype(np.int64), labels


def median_rate(fn: Callable[[], float], count: float, repeats: int) -> float:
    """Median of count / seconds over repeats of fn (fn returns its elapsed seconds)."""
    return statistics.median(count / fn() for _ in range(repeats))


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "embcore": embcore.__version__,
        "build_profile": embcore._core.build_profile,
    }


#: The training figures judged against a probe or against each other, by optimizer: (result
#: name, threads, the probes measured alternately with it, the first with its scan). Machines
#: drift over minutes (the second vCPU's share of its host above all): measured in separate
#: groups, the same build's Adagrad 2t / probe 2t read 0.42 and 0.90 in two runs, so each
#: figure here alternates, repeat by repeat, with its probes and with the other thread count.
PAIRED_TRAINING: dict[str, list[tuple[str, int, tuple[str, ...]]]] = {
    "sgd": [("train_sgd_1t", 1, ("limit_probe", "limit_probe_mapped"))],
    "adagrad": [
        ("train_adagrad_1t", 1, ("limit_probe_adagrad",)),
        ("train_adagrad_2t", 2, ("limit_probe_adagrad",)),
    ],
}


def bench_training(w: Workload, results: list[Result], tmp: Path) -> None:
    """MF training rates (``PAIRED_TRAINING``), each alternated with the C probe of the same
    step when a C compiler is present (the probe results are then this group's; the ``probe``
    group measures only the others)."""
    users, items, labels = mf_events(w, w.events)
    uid, iid = sparse_ids(users), sparse_ids(items)
    probes = build_probes(tmp)

    def train_seconds(model: embcore.MatrixFactorization, threads: int) -> float:
        return timed(lambda: model.train(uid, iid, labels, threads=threads))

    for optimizer, figures in PAIRED_TRAINING.items():
        model = embcore.MatrixFactorization(dim=DIM, optimizer=optimizer, seed=1)
        model.users.insert(sparse_ids(np.arange(w.users)), threads=2)
        model.items.insert(sparse_ids(np.arange(w.items)), threads=2)
        rates: dict[str, list[float]] = {name: [] for name, _, _ in figures}
        probe_rates: dict[tuple[str, int], list[float]] = {
            (probe, threads): [] for _, threads, paired in figures for probe in paired
        }
        scans: list[float] = []
        for _ in range(w.repeats):
            for name, threads, paired in figures:
                for probe in paired:
                    if probe in probes:
                        scan = scans if (probe, threads) == ("limit_probe", 1) else None
                        rate = run_probe(probes[probe], w, threads, scan)
                        probe_rates[probe, threads].append(rate)
                rates[name].append(w.events / train_seconds(model, threads))
        for name, threads, paired in figures:
            measured = [p for p in paired if probe_rates[p, threads]]
            note = f"{w.users}x{w.items}, d={DIM}"
            if measured:
                note += "; alternated with " + ", ".join(f"{p}_{threads}t" for p in measured)
            results.append(Result(name, statistics.median(rates[name]), "events/s", note))
            for probe in measured:
                results.append(
                    Result(
                        f"{probe}_{threads}t",
                        statistics.median(probe_rates[probe, threads]),
                        "events/s",
                        f"{probes[probe].note}; alternated with {name}",
                    )
                )
        if scans:
            results.append(
                Result("limit_probe_scan_gbps", statistics.median(scans), "GB/s", "row norms")
            )
        if optimizer == "adagrad":
            bench_monitor(w, uid, iid, labels, results)
        del model


def bench_monitor(
    w: Workload,
    uid: npt.NDArray[np.uint64],
    iid: npt.NDArray[np.uint64],
    labels: npt.NDArray[np.float32],
    results: list[Result],
) -> None:
    monitor_cls = getattr(embcore, "Monitor", None)
    if monitor_cls is None:
        return
    model = embcore.MatrixFactorization(dim=DIM, optimizer="adagrad", seed=1)
    model.users.insert(sparse_ids(np.arange(w.users)), threads=2)
    model.items.insert(sparse_ids(np.arange(w.items)), threads=2)
    monitor = monitor_cls(sample_rate=0.01)
    # Off and on alternate on this one model: separately allocated models (their pages, their
    # huge-page grants) and drifts of the machine swung the on/off ratio by +-20 %.
    off, on = [], []
    for _ in range(w.repeats):
        off.append(w.events / timed(lambda: model.train(uid, iid, labels)))
        on.append(w.events / timed(lambda: model.train(uid, iid, labels, monitor=monitor)))
    rate_off = statistics.median(off)
    results.append(
        Result(
            "train_adagrad_monitor_1t",
            statistics.median(on),
            "events/s",
            f"monitor on, 1% cohort; off on the same model, alternated: {rate_off:.3g}/s",
            {"monitor_off": rate_off},
        )
    )


def bench_monitor_observe(w: Workload, results: list[Result]) -> None:
    """``Monitor.observe`` as a training hook calls it (e.g. ``embcore.integrations.torch``):
    3,000 rows of d=32 per call, gathered just before the call, of ids drawn from
    ``w.items`` ids all observed once before (so every row is compared with its previous
    one). Only the ``observe`` calls are timed."""
    rng = np.random.default_rng(11)
    pool, per, calls = w.items, 3000, 20
    mon = embcore.Monitor(sample_rate=0.01)
    table = rng.normal(size=(pool, DIM)).astype(np.float32)
    ids = sparse_ids(np.arange(pool))
    for s in range(0, pool, 50_000):
        mon.observe(ids[s : s + 50_000], table[s : s + 50_000])
    batches = [rng.choice(pool, per, replace=False) for _ in range(calls)]

    def run() -> float:
        elapsed = 0.0
        for b in batches:
            table[b] += np.float32(1e-3)
            rows, batch_ids = table[b], ids[b]
            t0 = time.perf_counter()
            mon.observe(batch_ids, rows)
            elapsed += time.perf_counter() - t0
        return elapsed

    rate = median_rate(run, per * calls, w.repeats)
    note = f"d={DIM}, {per} rows/call, {pool} ids seen before: {1e9 / rate:.0f} ns/row"
    results.append(Result("monitor_observe_rows_per_s", rate, "rows/s", note))


def bench_lifecycle(w: Workload, results: list[Result]) -> None:
    """Training with the item lifecycle on (TTL + size limit, evicting every batch) vs off."""
    users, items, labels = mf_events(w, w.events, seed=5)
    uid, iid = sparse_ids(users), sparse_ids(items)
    day = 86_400
    times = np.sort(np.random.default_rng(6).integers(0, 30 * day, w.events))
    batch = 100_000
    settings: list[tuple[str, dict[str, int] | None]] = [
        ("lifecycle_off", None),
        ("train_adagrad_lifecycle_1t", {"ttl": 7 * day, "max_rows": w.items, "keep_floor": 1000}),
    ]
    # Each repeat trains a fresh pair of models (the lifecycle's state follows the events'
    # times, so a model is not trained twice), off and on alternated, in turn first: the
    # machine's drift between two single passes once read 0.83 and 0.98 for one build.
    rates: dict[str, list[float]] = {name: [] for name, _ in settings}
    for rep in range(w.repeats):
        for name, lifecycle in settings if rep % 2 == 0 else settings[::-1]:
            model = embcore.MatrixFactorization(
                dim=DIM, optimizer="adagrad", seed=1, item_lifecycle=lifecycle
            )
            model.users.insert(sparse_ids(np.arange(w.users)), threads=2)
            t0 = time.perf_counter()
            for s in range(0, w.events, batch):
                sl = slice(s, s + batch)
                model.train(uid[sl], iid[sl], labels[sl], timestamps=times[sl])
                if lifecycle is not None:
                    model.items.evict(now=int(times[min(s + batch, w.events) - 1]), budget=batch)
            rates[name].append(w.events / (time.perf_counter() - t0))
            del model
    on = statistics.median(rates["train_adagrad_lifecycle_1t"])
    off = statistics.median(rates["lifecycle_off"])
    results.append(
        Result(
            "train_adagrad_lifecycle_1t",
            on,
            "events/s",
            f"TTL 7d, max_rows, evict every {batch} events; off: {off:.3g}/s "
            f"(fresh models, alternated, median of {w.repeats})",
            {"off": off},
        )
    )
    # Eviction alone: a fresh table per repeat (an evict empties it), the median of the repeats.
    evict_rates = []
    for _ in range(w.repeats):
        table = embcore.EmbeddingTable(DIM, ttl=1)
        table.insert(sparse_ids(np.arange(w.inserts)), threads=2)
        t0 = time.perf_counter()
        out = table.evict(now=10, budget=w.inserts)
        evict_rates.append(len(out["ids"]) / (time.perf_counter() - t0))
        del table, out
    results.append(
        Result(
            "evict_rows_per_s",
            statistics.median(evict_rates),
            "rows/s",
            f"TTL expiry, final rows copied out; median of {w.repeats} fresh tables",
        )
    )


def bench_insert(w: Workload, results: list[Result]) -> None:
    for name, threads in [("insert_1t", 1), ("insert_2t", 2)]:
        rates = []
        for rep in range(w.repeats):
            table = embcore.EmbeddingTable(DIM, seed=rep)
            ids = sparse_ids(np.arange(w.inserts) + rep * w.inserts)
            t0 = time.perf_counter()
            table.insert(ids, threads=threads)
            rates.append(w.inserts / (time.perf_counter() - t0))
            del table
        results.append(Result(name, statistics.median(rates), "ids/s", "first sight, d=32"))


def bench_snapshot(w: Workload, results: list[Result], tmp: Path) -> None:
    table = embcore.EmbeddingTable(DIM, optimizer="adagrad")
    rows = w.snapshot_rows
    ids = sparse_ids(np.arange(rows))
    block = 1_000_000
    for s in range(0, rows, block):
        table.insert(ids[s : s + block], threads=2)
    path = tmp / "table.emb"
    size = table.save(path)
    data = path.read_bytes()

    def write_fsync() -> None:
        with open(tmp / "plain.bin", "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def clean_timed(fn: Callable[[], object]) -> float:
        os.sync()  # no dirty pages of the previous operation left to this one's fsync
        return timed(fn)

    # A save alternates with its plain write (the disk's state drifts between groups of
    # repeats: separate groups gave save / write ratios of 0.7 to 2.2).
    saves, writes = [], []
    for _ in range(w.repeats):
        saves.append(size / clean_timed(lambda: table.save(path)))
        writes.append(size / clean_timed(write_fsync))
    save, write = statistics.median(saves), statistics.median(writes)
    (tmp / "plain.bin").unlink()
    load = statistics.median(
        size / timed(lambda: embcore.EmbeddingTable.load(path)) for _ in range(w.repeats)
    )
    read = statistics.median(size / timed(path.read_bytes) for _ in range(w.repeats))
    note = f"{rows} rows x {DIM} + adagrad state + metadata = {size / 1e9:.2f} GB, page cache"
    results.append(Result("save_gbps", save / 1e9, "GB/s", note + "; includes fsync"))
    results.append(Result("load_gbps", load / 1e9, "GB/s", note))
    results.append(Result("file_read_gbps", read / 1e9, "GB/s", "plain read of the same file"))
    results.append(
        Result(
            "file_write_fsync_gbps", write / 1e9, "GB/s", "plain write + fsync of the same bytes"
        )
    )
    path.unlink()


def bench_numpy(w: Workload, results: list[Result]) -> None:
    users, items, labels = mf_events(w, max(w.per_event_numpy, w.minibatch_numpy), seed=2)
    rng = np.random.default_rng(0)
    big_u = (rng.standard_normal((w.users, DIM)) * 0.01).astype(np.float32)
    big_v = (rng.standard_normal((w.items, DIM)) * 0.01).astype(np.float32)
    n = w.per_event_numpy
    # A hand-written loop as a user would write it; exp may overflow on large scores.
    np.seterr(over="ignore")
    t0 = time.perf_counter()
    for e in range(n):
        u, v = users[e], items[e]
        uu, vv = big_u[u], big_v[v]
        g = 1 / (1 + np.exp(-uu @ vv)) - labels[e]
        big_u[u] = uu - 0.05 * g * vv
        big_v[v] = vv - 0.05 * g * uu
    results.append(Result("numpy_per_event", n / (time.perf_counter() - t0), "events/s"))
    n, batch = w.minibatch_numpy, 4096
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        u, v, y = users[s : s + batch], items[s : s + batch], labels[s : s + batch]
        uu, vv = big_u[u], big_v[v]
        g = (1 / (1 + np.exp(-(uu * vv).sum(1))) - y)[:, None]
        np.add.at(big_u, u, -0.05 * g * vv)
        np.add.at(big_v, v, -0.05 * g * uu)
    results.append(
        Result("numpy_minibatch", n / (time.perf_counter() - t0), "events/s", "np.add.at, B=4096")
    )


#: The peers ``bench_peers`` measures when importable, and how to install them in a throw-away
#: environment (never into embcore's): see docs/performance.md.
PEERS = ("river", "lightfm", "implicit")
PEERS_INSTALL = (
    "python -m venv /tmp/peers && /tmp/peers/bin/pip install numpy scipy implicit river "
    "setuptools wheel cython && /tmp/peers/bin/pip install --no-build-isolation lightfm"
)


def missing_peers() -> list[str]:
    """The peers of ``PEERS`` that cannot be imported here."""
    import importlib.util

    return [p for p in PEERS if importlib.util.find_spec(p) is None]


def bench_peers(w: Workload, results: list[Result]) -> None:
    """river / LightFM / implicit, when importable (never installed by embcore)."""
    users, items, labels = mf_events(w, w.events, seed=3)
    try:
        from river import reco

        model = reco.FunkMF(n_factors=DIM, seed=0)
        n = min(w.events, 50_000)
        t0 = time.perf_counter()
        for e in range(n):
            model.learn_one(user=int(users[e]), item=int(items[e]), y=float(labels[e]))
        results.append(Result("river_funkmf_1t", n / (time.perf_counter() - t0), "events/s"))
    except ImportError:
        pass
    try:
        import scipy.sparse as sp
        from lightfm import LightFM

        shape = (w.users, w.items)
        coo = sp.coo_matrix((labels * 2 - 1, (users, items)), shape=shape)
        model = LightFM(no_components=DIM, loss="logistic", learning_schedule="adagrad")
        model.fit_partial(sp.coo_matrix(([1.0], ([0], [0])), shape=shape), epochs=1)
        dt = timed(lambda: model.fit_partial(coo, epochs=1, num_threads=2))
        results.append(Result("lightfm_logistic_2t", coo.nnz / dt, "events/s"))
    except ImportError:
        pass
    try:
        import implicit
        import scipy.sparse as sp

        csr = sp.coo_matrix(
            (np.ones(len(users), np.float32), (users, items)), shape=(w.users, w.items)
        ).tocsr()
        csr.data[:] = 1
        model = implicit.cpu.bpr.BayesianPersonalizedRanking(
            factors=DIM, iterations=1, num_threads=2, verify_negative_samples=False
        )
        dt = timed(lambda: model.fit(csr, show_progress=False))
        results.append(Result("implicit_bpr_2t", csr.nnz / dt, "samples/s"))
    except ImportError:
        pass


def _probe_number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"unexpected limit_probe output: {text!r}")
    return float(match.group(1))


@dataclass(frozen=True)
class Probe:
    """A built C limit probe: its executable, how its rate is printed, and the thread counts
    and note the ``probe`` group measures it with."""

    exe: Path
    pattern: str
    thread_counts: tuple[int, ...]
    note: str


PROBE_NOTE = "C, uniform ids, prefetch, no id map / statistics"

#: The probes as BENCHMARKS.md builds them, and (1 thread) the same sources without
#: -ffast-math: IEEE square roots and divisions, as embcore computes them. The gap between the
#: two is what approximate arithmetic buys; embcore keeps bit-identical results across
#: machines, so the second is the limit for the same arithmetic. ``limit_probe_mapped`` is
#: ``limit_probe``'s step with the events' sparse ids first resolved through an id map shaped
#: as embcore's (batched, prefetched): the limit for a trainer that keys rows by id, which the
#: plain probe (dense indices) is not. (source, name, rate pattern, fast-math, thread counts,
#: note)
PROBES: list[tuple[Path, str, str, bool, tuple[int, ...], str]] = [
    (PROBE_SOURCE, "limit_probe", r"events/s ([0-9.e+]+)", True, (1, 2), PROBE_NOTE),
    (
        PROBE_ADAGRAD_SOURCE,
        "limit_probe_adagrad",
        r"adagrad events/s ([0-9.e+]+)",
        True,
        (1, 2),
        PROBE_NOTE,
    ),
    (
        PROBE_SOURCE,
        "limit_probe_ieee",
        r"events/s ([0-9.e+]+)",
        False,
        (1,),
        PROBE_NOTE + ", IEEE",
    ),
    (
        PROBE_ADAGRAD_SOURCE,
        "limit_probe_adagrad_ieee",
        r"adagrad events/s ([0-9.e+]+)",
        False,
        (1,),
        PROBE_NOTE + ", IEEE sqrt and division (no -ffast-math)",
    ),
    (
        PROBE_MAPPED_SOURCE,
        "limit_probe_mapped",
        r"mapped events/s ([0-9.e+]+)",
        True,
        (1,),
        "C, uniform sparse ids resolved by a batched, prefetched id-map pass, no statistics",
    ),
]


_NO_COMPILER_NOTED: set[Path] = set()


def build_probes(tmp: Path) -> dict[str, Probe]:
    """Every probe of ``PROBES`` compiled into ``tmp`` (once per folder: a second call reuses
    the executables), by name; empty, with a note, without a C compiler."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None or not PROBE_SOURCE.exists():
        if tmp not in _NO_COMPILER_NOTED:  # once per run, not once per group
            _NO_COMPILER_NOTED.add(tmp)
            print("limit probes skipped: no C compiler found", file=sys.stderr)
        return {}
    built = {}
    for source, name, pattern, fast_math, thread_counts, note in PROBES:
        exe = tmp / name
        if not exe.exists():
            flags = ["-O3", "-march=native"] + (["-ffast-math"] if fast_math else [])
            cmd = [cc, *flags, str(source), "-o", str(exe), "-lpthread", "-lm"]
            subprocess.run(cmd, check=True)
        built[name] = Probe(exe, pattern, thread_counts, note)
    return built


def run_probe(probe: Probe, w: Workload, threads: int, scans: list[float] | None = None) -> float:
    """One run of ``probe`` on the workload's sizes (twice its events): its events/s; its scan
    GB/s appended to ``scans`` when given and printed."""
    out = subprocess.run(
        [str(probe.exe), str(w.users), str(w.items), str(w.events * 2), str(threads)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    if scans is not None and "GB/s" in out:
        scans.append(_probe_number(r"GB/s ([0-9.]+)", out))
    return _probe_number(probe.pattern, out)


def bench_probe(w: Workload, results: list[Result], tmp: Path) -> None:
    """The two C limit probes of BENCHMARKS.md (SGD + scan, Adagrad + per-row counter), 1 and 2
    threads, built with the flags BENCHMARKS.md gives, on uniform 1M x 1M ids; a probe figure
    the ``training`` group measured already (alternated with its embcore counterpart) is not
    measured again."""
    done = {r.name for r in results}
    for name, probe in build_probes(tmp).items():
        for threads in probe.thread_counts:
            if f"{name}_{threads}t" in done:
                continue
            rates: list[float] = []
            scans: list[float] = []
            for _ in range(w.repeats):
                rates.append(run_probe(probe, w, threads, scans))
            results.append(
                Result(
                    f"{name}_{threads}t",
                    statistics.median(rates),
                    "events/s",
                    probe.note,
                )
            )
            scan_done = "limit_probe_scan_gbps" in done
            if scans and threads == 1 and name == "limit_probe" and not scan_done:
                results.append(
                    Result("limit_probe_scan_gbps", statistics.median(scans), "GB/s", "row norms")
                )


def bench_memory(w: Workload, results: list[Result]) -> None:
    """Resident memory of a trained MF model (Adagrad) against the bytes of its weights,
    optimizer state and per-row metadata; and the rate at which this machine commits fresh
    memory (a numpy fill of new pages), the floor under first-sight inserts."""
    before, huge_before = _rss_bytes(), _smaps_bytes("AnonHugePages")
    model = embcore.MatrixFactorization(dim=DIM, optimizer="adagrad", seed=1)
    model.users.insert(sparse_ids(np.arange(w.users)), threads=2)
    model.items.insert(sparse_ids(np.arange(w.items)), threads=2)
    users, items, labels = mf_events(w, w.events, seed=7)
    model.train(sparse_ids(users), sparse_ids(items), labels, threads=2)
    del users, items, labels
    resident = _rss_bytes() - before
    huge = None if huge_before is None else (_smaps_bytes("AnonHugePages") or 0) - huge_before
    # Per row: weights and Adagrad accumulators (4 bytes per coordinate each) and the 64-byte
    # metadata record (id, counters, times, bias, version).
    payload = (w.users + w.items) * (4 * DIM * 2 + 64)
    results.append(
        Result(
            "model_resident_bytes",
            float(resident),
            "bytes",
            f"RSS growth for {w.users}+{w.items} rows; weights+state+metadata = {payload:,} bytes",
            {"payload": payload},
        )
    )
    if huge is not None and resident > 0:
        # The tables' regions are advised to use transparent huge pages (random row accesses
        # then miss the TLB far less): the share of the model's pages the kernel granted.
        results.append(
            Result(
                "model_huge_page_share",
                huge / resident,
                "share",
                f"AnonHugePages growth / RSS growth ({huge / 2**20:.0f} of "
                f"{resident / 2**20:.0f} MiB); transparent huge pages: {_thp_mode()}",
            )
        )
    del model
    size = 1 << 30
    commit = statistics.median(size / timed(lambda: np.ones(size, np.uint8)) for _ in range(3))
    results.append(
        Result("memory_commit_gbps", commit / 1e9, "GB/s", "numpy fill of fresh pages (1 GiB)")
    )


def _rss_bytes() -> int:
    return proc_bytes("/proc/self/status", "VmRSS") or 0


def _smaps_bytes(field: str, text: str | None = None) -> int | None:
    """The ``field`` line of this process's ``/proc/self/smaps_rollup`` (or of ``text``), in
    bytes; None where there is no such file or line."""
    return proc_bytes("/proc/self/smaps_rollup", field, text)


def _thp_mode() -> str:
    """The kernel's transparent huge page setting (the bracketed choice), or 'unknown'."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            text = f.read()
    except OSError:
        return "unknown"
    match = re.search(r"\[(\w+)\]", text)
    return match.group(1) if match else "unknown"


def bench_drift(w: Workload, results: list[Result]) -> None:
    """Per-row cosine between two tables matched by id: embcore vs numpy."""
    try:
        from embcore import analysis
    except ImportError:
        return
    kernel = getattr(analysis, "_rowwise_cosine", None)
    if kernel is None:
        return
    rng = np.random.default_rng(4)
    n = w.drift_rows
    a = rng.standard_normal((n, DIM), dtype=np.float32)
    b = a + 0.1 * rng.standard_normal((n, DIM), dtype=np.float32)

    def numpy_cos() -> object:
        num = np.einsum("ij,ij->i", a, b)
        return num / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    numpy_rate = median_rate(lambda: timed(numpy_cos), n, w.repeats)
    rate = median_rate(lambda: timed(lambda: kernel(a, b)), n, w.repeats)
    results.append(Result("drift_cosine", rate, "rows/s", f"{n} x {DIM}"))
    results.append(Result("drift_cosine_numpy", numpy_rate, "rows/s", "einsum + norms"))
    procrustes = getattr(analysis, "_cross_product", None)
    if procrustes is not None:
        rate = median_rate(lambda: timed(lambda: procrustes(a, b)), n, w.repeats)
        results.append(Result("procrustes", rate, "rows/s", "AᵀB pass"))


FFM_FIELDS = ("user", "item", "creator", "tag")


def ffm_events(w: Workload, n: int, seed: int = 0) -> tuple[dict[str, Any], Any, dict[str, int]]:
    """Four-field events: users uniform, items Zipf(1.2), an item's creator fixed per item, tags
    Zipf(1.2); cardinalities 1M / 1M / 100k / 1k (scaled with the workload)."""
    scale = w.users / 1_000_000
    sizes = {
        "user": w.users,
        "item": w.items,
        "creator": max(int(100_000 * scale), 1),
        "tag": max(int(1_000 * scale), 1),
    }
    rng = np.random.default_rng(seed)
    items = (rng.zipf(1.2, n) - 1) % sizes["item"]
    dense = {
        "user": rng.integers(0, sizes["user"], n),
        "item": items,
        "creator": (items * 7919) % sizes["creator"],
        "tag": (rng.zipf(1.2, n) - 1) % sizes["tag"],
    }
    cols = {f: sparse_ids(np.asarray(v, dtype=np.int64)) for f, v in dense.items()}
    labels = (rng.random(n) < 0.3).astype(np.float32)
    return cols, labels, sizes


def bench_ffm(w: Workload, results: list[Result]) -> None:
    """FFM (d=8 per block) and FM (d=32) on four fields, Adagrad, all ids already present."""
    cols, labels, sizes = ffm_events(w, w.events)
    shape = "/".join(f"{sizes[f]:,}" for f in FFM_FIELDS)
    reference = "target >= 2M/s per core; Fwumious Wabbit LR: 0.95 M/s per core (published)"

    def note(dim: int) -> str:
        return f"{shape} rows, d={dim}, adagrad; {reference}"

    def model_of(cls: Any, dim: int) -> Any:
        model = cls(fields=list(FFM_FIELDS), dim=dim, optimizer="adagrad", seed=1)
        for f in FFM_FIELDS:
            model.table(f).insert(sparse_ids(np.arange(sizes[f])), threads=2)
        return model

    def train_seconds(model: Any, threads: int = 1) -> float:
        return timed(lambda: model.train(cols, labels, threads=threads))

    # FFM on one thread, alternated repeat by repeat with the target's baseline: MF Adagrad
    # (d = 32) on the same events' user and item columns.
    ffm = model_of(embcore.FieldAwareFM, 8)
    mf = embcore.MatrixFactorization(dim=DIM, optimizer="adagrad", seed=1)
    mf.users.insert(sparse_ids(np.arange(sizes["user"])), threads=2)
    mf.items.insert(sparse_ids(np.arange(sizes["item"])), threads=2)
    train_mf = functools.partial(mf.train, cols["user"], cols["item"], labels)
    ffm_rates, mf_rates = [], []
    for _ in range(w.repeats):
        ffm_rates.append(w.events / train_seconds(ffm))
        mf_rates.append(w.events / timed(train_mf))
    rate, mf_rate = statistics.median(ffm_rates), statistics.median(mf_rates)
    results.append(
        Result(
            "ffm_4fields_1t",
            rate,
            "events/s",
            f"{note(8)}; alternated with MF on these events' users and items: {mf_rate:.3g}/s",
            {"per_core": rate, "mf_same_events": mf_rate},
        )
    )
    del ffm, mf, train_mf
    for name, cls, dim, threads in [
        ("ffm_4fields_2t", embcore.FieldAwareFM, 8, 2),
        ("fm_4fields_1t", embcore.FactorizationMachine, 32, 1),
    ]:
        model = model_of(cls, dim)
        rate = median_rate(functools.partial(train_seconds, model, threads), w.events, w.repeats)
        results.append(Result(name, rate, "events/s", note(dim), {"per_core": rate / threads}))
        del model


@dataclass
class Run:
    """What every benchmark group gets: the sizes, the list it appends to, a scratch folder."""

    workload: Workload
    results: list[Result]
    tmp: Path


#: The benchmark groups, in the order they run; ``--only`` selects among them. A new group is
#: one line here: ``"name": lambda r: bench_name(r.workload, r.results)``.
GROUP_RUNNERS: dict[str, Callable[[Run], None]] = {
    "training": lambda r: bench_training(r.workload, r.results, r.tmp),
    "insert": lambda r: bench_insert(r.workload, r.results),
    "lifecycle": lambda r: bench_lifecycle(r.workload, r.results),
    "snapshot": lambda r: bench_snapshot(r.workload, r.results, r.tmp),
    "memory": lambda r: bench_memory(r.workload, r.results),
    "numpy": lambda r: bench_numpy(r.workload, r.results),
    "peers": lambda r: bench_peers(r.workload, r.results),
    "probe": lambda r: bench_probe(r.workload, r.results, r.tmp),
    "drift": lambda r: bench_drift(r.workload, r.results),
    "monitor": lambda r: bench_monitor_observe(r.workload, r.results),
    "ffm": lambda r: bench_ffm(r.workload, r.results),
    "replay": lambda r: bench_replay.bench(r.workload, r.results),
    "torch": lambda r: bench_torch_group(r.workload, r.results),
    "distributed": lambda r: bench_distributed_group(r.workload, r.results),
}


def bench_distributed_group(w: Workload, results: list[Result]) -> None:
    """Sharded training on a local Ray cluster (``embcore.bench_distributed``), when Ray is
    installed (``pip install "embcore[ray]"``); skipped with a note otherwise."""
    from embcore.distributed._ray import require_ray

    try:
        require_ray()
    except ImportError as err:
        print(f"[bench] distributed skipped: {err}", file=sys.stderr)
        return
    from embcore.bench_distributed import bench_distributed

    bench_distributed(w, results)


def bench_torch_group(w: Workload, results: list[Result]) -> None:
    """The PyTorch hook's cost (``embcore.integrations.torch.bench_torch``), when torch is
    installed (``pip install "embcore[torch]"``); skipped with a note otherwise."""
    from embcore.integrations import torch as torch_hook

    try:
        torch_hook.bench_torch(results, quick=w == Workload.quick())
    except embcore.ConfigError as err:
        print(f"[bench] torch skipped: {err}", file=sys.stderr)


@dataclass(frozen=True)
class Target:
    """A ratio judged in one run: ``numerator / denominator >= at_least`` (``denominator`` may
    be a number: an absolute target)."""

    label: str
    numerator: str
    denominator: str | float
    at_least: float | None = None


#: The targets of issue 15 / BENCHMARKS.md. Derived figures: ``lifecycle_off``,
#: ``monitor_off_1t`` (monitor off on the monitor's model, alternated with monitor on),
#: ``drift_snapshot_gbps`` (bytes of the two tables compared per second),
#: ``model_payload_bytes``, ``ffm_4fields_1t`` per core, ``mf_same_events_1t`` (MF Adagrad on
#: the FFM events' users and items, alternated with ``ffm_4fields_1t``).
TARGETS: list[Target] = [
    Target("SGD 1t / limit_probe_1t", "train_sgd_1t", "limit_probe_1t", 0.6),
    Target(
        "Adagrad 1t / limit_probe_adagrad_1t", "train_adagrad_1t", "limit_probe_adagrad_1t", 0.6
    ),
    Target(
        "Adagrad 2t / limit_probe_adagrad_2t", "train_adagrad_2t", "limit_probe_adagrad_2t", 0.6
    ),
    Target("SGD 1t / limit_probe_ieee_1t (no -ffast-math)", "train_sgd_1t", "limit_probe_ieee_1t"),
    Target(
        "SGD 1t / limit_probe_mapped_1t (the probe with an id map)",
        "train_sgd_1t",
        "limit_probe_mapped_1t",
    ),
    Target(
        "limit_probe_mapped_1t / limit_probe_1t (what an id map costs)",
        "limit_probe_mapped_1t",
        "limit_probe_1t",
    ),
    Target(
        "Adagrad 1t / limit_probe_adagrad_ieee_1t (no -ffast-math)",
        "train_adagrad_1t",
        "limit_probe_adagrad_ieee_1t",
    ),
    Target("Adagrad 2t / Adagrad 1t", "train_adagrad_2t", "train_adagrad_1t", 1.8),
    Target(
        "limit_probe_adagrad_2t / _1t (the probe's scaling)",
        "limit_probe_adagrad_2t",
        "limit_probe_adagrad_1t",
    ),
    Target("Adagrad 2t / implicit BPR 2t", "train_adagrad_2t", "implicit_bpr_2t", 3.0),
    Target("Adagrad 2t / LightFM 2t", "train_adagrad_2t", "lightfm_logistic_2t", 8.0),
    Target("Adagrad 2t / river", "train_adagrad_2t", "river_funkmf_1t", 100.0),
    Target("Adagrad 2t / numpy minibatch", "train_adagrad_2t", "numpy_minibatch"),
    Target("FFM 4 fields d=8 1t / 2M events/s", "ffm_4fields_1t", 2e6, 1.0),
    Target(
        "FFM 4 fields 1t / MF Adagrad 1t, same events", "ffm_4fields_1t", "mf_same_events_1t", 0.6
    ),
    Target("inserts 1t / 3M ids/s", "insert_1t", 3e6, 1.0),
    Target("inserts 2t / inserts 1t", "insert_2t", "insert_1t"),
    Target(
        "inserts 1t bytes/s / memory commit", "insert_1t_bytes_per_s", "memory_commit_bytes_per_s"
    ),
    Target("monitor on / off", "train_adagrad_monitor_1t", "monitor_off_1t", 0.85),
    Target("lifecycle on / off", "train_adagrad_lifecycle_1t", "lifecycle_off", 0.85),
    Target("save / plain write + fsync", "save_gbps", "file_write_fsync_gbps", 0.9),
    Target("load / plain read", "load_gbps", "file_read_gbps", 0.9),
    Target("drift cosine / numpy", "drift_cosine", "drift_cosine_numpy", 3.0),
    Target(
        "snapshot drift GB/s / probe scan GB/s", "drift_snapshot_gbps", "limit_probe_scan_gbps", 0.5
    ),
    Target(
        "payload / resident bytes (>= 1/1.3)",
        "model_payload_bytes",
        "model_resident_bytes",
        1 / 1.3,
    ),
    # Issue 17: the PyTorch hook costs under 10 % of the example's step (hook / step < 0.1,
    # written as its inverse: the targets here are lower bounds).
    Target(
        "torch plain step / hook per step (hook < 10 % of step)", "torch_step", "torch_hook", 10.0
    ),
]


def ratios(results: list[Result]) -> dict[str, dict[str, Any]]:
    """Every target whose figures were measured in this run: value, target, met."""
    v = {r.name: r.value for r in results}
    for r in results:
        if "off" in r.extra:
            v["lifecycle_off"] = r.extra["off"]
        if "monitor_off" in r.extra:
            v["monitor_off_1t"] = r.extra["monitor_off"]
        if "mf_same_events" in r.extra:
            v["mf_same_events_1t"] = r.extra["mf_same_events"]
        if "payload" in r.extra:
            v["model_payload_bytes"] = float(r.extra["payload"])
    if "drift_cosine" in v:
        # Two float32 tables of DIM columns read per row compared.
        v["drift_snapshot_gbps"] = v["drift_cosine"] * 2 * DIM * 4 / 1e9
    if "insert_1t" in v and "memory_commit_gbps" in v:
        # Fresh bytes committed per inserted row (default Adagrad table): weights, accumulators,
        # the 64-byte metadata record and a 16-byte id-map slot.
        v["insert_1t_bytes_per_s"] = v["insert_1t"] * (4 * DIM * 2 + 64 + 16)
        v["memory_commit_bytes_per_s"] = v["memory_commit_gbps"] * 1e9
    out: dict[str, dict[str, Any]] = {}
    for t in TARGETS:
        den = t.denominator if isinstance(t.denominator, float) else v.get(t.denominator)
        if t.numerator not in v or den is None or den <= 0:
            continue
        value = v[t.numerator] / den
        met = None if t.at_least is None else value >= t.at_least
        out[t.label] = {"value": value, "target": t.at_least, "met": met}
    return out


def run_suite(
    quick: bool = False, only: set[str] | None = None, peers: bool = False
) -> dict[str, Any]:
    """Run the benchmarks and return the JSON document (``peers``: add the peers group to an
    ``only`` selection)."""
    if embcore._core.build_profile != "release":
        raise RuntimeError(
            "embcore was built in debug mode; benchmarks refuse to report its numbers. "
            "Reinstall with `pip install .` (release build)."
        )
    if only is not None and peers:
        only = only | {"peers"}
    w = Workload.quick() if quick else Workload()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="embcore-bench-") as tmp_name:
        run = Run(w, results, Path(tmp_name))
        for name, step in GROUP_RUNNERS.items():
            if only and name not in only:
                continue
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            step(run)
    ran_peers = not only or "peers" in only
    return {
        "machine": machine(),
        "workload": asdict(w) | {"dim": DIM, "item_distribution": "zipf(1.2)", "quick": quick},
        "results": [asdict(r) for r in results],
        "ratios": ratios(results),
        "missing_peers": missing_peers() if ran_peers else [],
    }


def format_table(doc: dict[str, Any]) -> str:
    lines = [f"{'benchmark':32s} {'value':>14s}  unit", "-" * 60]
    for r in doc["results"]:
        lines.append(f"{r['name']:32s} {r['value']:14.4g}  {r['unit']}  {r['note']}")
    if doc["ratios"]:
        lines += ["", f"ratios measured in this run:{'target':>50s} {'value':>8s}"]
        for k, r in doc["ratios"].items():
            target = "" if r["target"] is None else f">= {r['target']:.3g}"
            verdict = {None: "", True: "met", False: "NOT met"}[r["met"]]
            lines.append(f"  {k:66s} {target:>10s} {r['value']:8.2f}  {verdict}")
    if doc.get("missing_peers"):
        lines += [
            "",
            f"peers not importable here (not measured): {', '.join(doc['missing_peers'])}; "
            f"install them in a throw-away venv: {PEERS_INSTALL}",
        ]
    m = doc["machine"]
    lines += ["", f"machine: {m['cpu']}, {m['cores']} cores, {m['platform']}"]
    return "\n".join(lines)


#: The benchmark groups ``--only`` selects, in the order they run.
GROUPS = tuple(GROUP_RUNNERS)


def _group_list(text: str) -> str:
    """``--only``: one or more known group names, checked (returned as given)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(
            f"give at least one group, from: {', '.join(GROUPS)} (leave --only out for all)"
        )
    unknown = [n for n in names if n not in GROUPS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown name(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}"
        )
    return text


def _out_problem(out: str) -> str | None:
    """Why ``--out`` cannot be written (checked before any benchmark runs), or None."""
    path = Path(out)
    parent = path.resolve().parent
    if path.is_dir():
        return f"--out {out} is a directory; give a file name such as {path / 'bench.json'}"
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        return (
            f"--out {out}: the folder {parent} does not exist or is not writable; create it "
            "first or pass another path"
        )
    if path.exists() and not os.access(path, os.W_OK):
        return f"--out {out} exists and is not writable; pass another path"
    return None


def run(args: argparse.Namespace) -> int:
    only = {n.strip() for n in args.only.split(",") if n.strip()} if args.only else None
    unknown = sorted(only - set(GROUPS)) if only else []
    if unknown:
        print(
            f"embcore bench: error: --only has unknown name(s) {', '.join(unknown)}; "
            f"choose from {', '.join(GROUPS)}",
            file=sys.stderr,
        )
        return 2
    problem = _out_problem(args.out) if args.out else None
    if problem:
        print(f"embcore bench: error: {problem}", file=sys.stderr)
        return 2
    try:
        doc = run_suite(quick=args.quick, only=only, peers=args.peers)
    except RuntimeError as e:
        print(f"embcore bench: {e}", file=sys.stderr)
        return 2
    print(format_table(doc))
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=2))
        print(f"wrote {args.out}")
    return 0


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Declare ``embcore bench`` and its arguments on the CLI's subparsers."""
    bench = sub.add_parser(
        "bench",
        help="measure training, insert, snapshot and scan throughput against baselines",
        description="Run the mf-1m benchmark suite (protocol: docs/benchmarks.md), print a table "
        "and optionally write JSON.",
    )
    bench.add_argument("--quick", action="store_true", help="a smaller version, under a minute")
    bench.add_argument(
        "--out",
        default=None,
        metavar="FILE.json",
        help="also write the results as JSON to this file, checked before anything runs "
        "(default: the table only)",
    )
    bench.add_argument(
        "--only",
        type=_group_list,
        default=None,
        metavar="GROUP[,GROUP...]",
        help=f"comma-separated benchmark groups to run, from: {', '.join(GROUPS)} (default: all)",
    )
    bench.add_argument(
        "--peers",
        action="store_true",
        help="also measure the peer libraries that are importable (river, LightFM, implicit) "
        "and name those that are not (with --only; without it every group runs)",
    )
    return bench
