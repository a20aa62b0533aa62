"""What the monitor costs, in CPU time (steadier than wall clock on a shared machine).

    python scripts/monitor_cost.py train     # training with the monitor on / off
    python scripts/monitor_cost.py observe   # Monitor.observe, ns per row, three id counts
    python scripts/monitor_cost.py pairs     # Monitor.observe_pairs on cache-cold state

``train``: the ``train_adagrad_1t`` / ``train_adagrad_monitor_1t`` workload of
``embcore bench --only training`` (1M x 1M ids, Zipf(1.2) items, d=32, one thread) with
2M events a pass, the two models alternated; best of ``--repeats`` process CPU times.
``observe``: ``bench.bench_monitor_observe``'s workload (3,000 rows of d=32 per call,
gathered just before the call, ids all observed once before) for 20k, 200k and 1M ids,
best of ``--repeats`` thread CPU times of the calls, next to the numpy gather and scatter
of the same rows. ``pairs``: what the PyTorch hook's call meets, ``observe_pairs`` of
``--rows`` (650)
(before, after) rows of d=32 from 50k ids after ``--evict-mib`` MiB (default 64) of other
memory was written (the model's step in between evicts the monitor's state from the
caches), two monitors alternated as the two towers are; best of ``--repeats`` thread CPU
times. Runs against whichever embcore is installed (to compare two builds).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import embcore
from embcore import bench


def train(repeats: int) -> None:
    w = bench.Workload(events=2_000_000)
    users, items, labels = bench.mf_events(w, w.events)
    uid, iid = bench.sparse_ids(users), bench.sparse_ids(items)

    def model() -> embcore.MatrixFactorization:
        m = embcore.MatrixFactorization(dim=bench.DIM, optimizer="adagrad", seed=1)
        m.users.insert(bench.sparse_ids(np.arange(w.users)), threads=2)
        m.items.insert(bench.sparse_ids(np.arange(w.items)), threads=2)
        return m

    off, on, monitor = model(), model(), embcore.Monitor(sample_rate=0.01)
    times: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(repeats):
        for name, m, kw in (("off", off, {}), ("on", on, {"monitor": monitor})):
            t0 = time.process_time()
            m.train(uid, iid, labels, **kw)
            times[name].append(time.process_time() - t0)
    t_off, t_on = min(times["off"]), min(times["on"])
    print(
        f"train: off {w.events / t_off / 1e6:.2f} M events/s, on {w.events / t_on / 1e6:.2f} "
        f"M events/s, on/off {t_off / t_on:.3f}, monitor {1e9 * (t_on - t_off) / w.events:.1f} "
        f"ns/event (best of {repeats}, process CPU time)"
    )


def observe(repeats: int) -> None:
    rng = np.random.default_rng(11)
    per, calls, d = 3000, 20, bench.DIM
    for pool in (20_000, 200_000, 1_000_000):
        monitor = embcore.Monitor(sample_rate=0.01)
        table = rng.normal(size=(pool, d)).astype(np.float32)
        ids = bench.sparse_ids(np.arange(pool))
        for s in range(0, pool, 50_000):
            monitor.observe(ids[s : s + 50_000], table[s : s + 50_000])
        batches = [rng.choice(pool, per, replace=False) for _ in range(calls)]
        best, floor = float("inf"), float("inf")
        for _ in range(repeats):
            spent = numpy_spent = 0.0
            for b in batches:
                t0 = time.thread_time()
                rows = table[b]
                table[b] = rows + np.float32(1e-3)
                numpy_spent += time.thread_time() - t0
                rows, batch_ids = table[b], ids[b]
                t0 = time.thread_time()
                monitor.observe(batch_ids, rows)
                spent += time.thread_time() - t0
            best, floor = min(best, spent), min(floor, numpy_spent)
        n = per * calls
        print(
            f"observe: {pool} ids, {1e9 * best / n:.1f} ns/row (numpy gather + scatter of the "
            f"rows: {1e9 * floor / n:.1f} ns/row; best of {repeats}, thread CPU time)"
        )


def pairs(repeats: int, evict_mib: int = 64, per: int = 650) -> None:
    rng = np.random.default_rng(12)
    pool, calls, d = 50_000, 200, bench.DIM
    monitors = [embcore.Monitor(sample_rate=0.01) for _ in range(2)]
    table = rng.normal(size=(pool, d)).astype(np.float32)
    ids = bench.sparse_ids(np.arange(pool))
    counts = np.zeros(pool, dtype=np.int64)
    other = np.zeros(max(evict_mib, 1) << 20, dtype=np.uint8)
    batches = [np.sort(rng.choice(pool, per, replace=False)) for _ in range(calls)]
    best = float("inf")
    for _ in range(repeats):
        spent = 0.0
        for k, b in enumerate(batches):
            before = table[b]  # gathered before the step
            if evict_mib:
                other += 1  # the step
            after = before + np.float32(1e-3) * rng.standard_normal(before.shape, np.float32)
            table[b] = after  # gathered after it
            counts[b] += 1
            t0 = time.thread_time()
            monitors[k % 2].observe_pairs(ids[b], before, after, counts[b])
            spent += time.thread_time() - t0
        best = min(best, spent)
    print(
        f"pairs: {1e9 * best / (per * calls):.1f} ns/row after {evict_mib} MiB written between "
        f"calls "
        f"(best of {repeats}, thread CPU time)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["train", "observe", "pairs"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--evict-mib", type=int, default=64, help="pairs: MiB written between calls")
    p.add_argument("--rows", type=int, default=650, help="pairs: rows per call")
    a = p.parse_args()
    if a.what == "pairs":
        pairs(a.repeats, a.evict_mib, a.rows)
    else:
        {"train": train, "observe": observe}[a.what](a.repeats)


if __name__ == "__main__":
    main()
