"""Soak: an endless stream of always-new items through a real-time Trainer with a monitor.

The item table is kept flat by an LRU lifecycle (``max_rows``); the Trainer hands evicted rows to
the monitor. Prints the monitor's ``memory_bytes`` and the process's resident memory every
``--every`` events, so a bound (or a leak) shows as a plateau (or a slope).

    python scripts/soak_monitor.py --events 30000000 --sample-rate 0.01
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

import embcore
from embcore.modes import Trainer


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=30_000_000)
    ap.add_argument("--chunk", type=int, default=100_000)
    ap.add_argument("--every", type=int, default=3_000_000)
    ap.add_argument("--sample-rate", type=float, default=0.01)
    ap.add_argument("--max-rows", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--monitor-option", action="append", default=[], help="key=value (int)")
    args = ap.parse_args()
    extra = {k: int(v) for k, v in (o.split("=") for o in args.monitor_option)}
    monitor = embcore.Monitor(sample_rate=args.sample_rate, **extra)
    model = embcore.MatrixFactorization(
        dim=args.dim, seed=0, item_lifecycle={"max_rows": args.max_rows}
    )
    trainer = Trainer("realtime", model=model, monitor=monitor)
    rng = np.random.default_rng(0)
    began, next_item, series = time.perf_counter(), 0, []
    for start in range(0, args.events, args.chunk):
        n = min(args.chunk, args.events - start)
        users = rng.integers(0, 100_000, n).astype(np.uint64)
        # Always-new items: each item gets a handful of events, then never comes back.
        items = (next_item + np.sort(rng.integers(0, n // 4, n))).astype(np.uint64)
        next_item += n // 4
        labels = (rng.random(n) < 0.3).astype(np.float32)
        t = np.full(n, start // args.chunk, dtype=np.int64)
        trainer.consume(users, items, labels, t)
        done = start + n
        if done % args.every == 0 or done == args.events:
            s = monitor.summary()
            row = {
                "events": done,
                "monitor_mb": round(monitor.memory_bytes / 2**20, 1),
                "rss_mb": round(rss_mb(), 1),
                "tracked_items": s["tracked_items"],
                "records": s["records"],
                "table_rows": len(model.items),
                "seconds": round(time.perf_counter() - began, 1),
            }
            for key in ("retired_items", "dropped_items"):
                if key in s:
                    row[key] = s[key]
            series.append(row)
            print(json.dumps(row), flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mb": round(peak, 1)}))


if __name__ == "__main__":
    main()
