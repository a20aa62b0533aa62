"""Benchmark of embcore.distributed: sharded training against in-process training, one run.

``bench_distributed(w, results)`` has the shape of the groups of :mod:`embcore.bench` (the
``distributed`` group of ``embcore bench --only distributed``); ``python -m
embcore.bench_distributed`` runs it alone, and ``--staleness`` runs the quality sweep of
docs/distributed.md (progressive AUC of 1 process vs 2 shards by chunk size).

Measured, on the MF workload of :mod:`embcore.bench` (Zipf items, d=32, Adagrad, 1 thread per
shard), every figure in the same run:

- ``train_inprocess_chunked``: events/s of one in-process model trained one call per chunk,
  a Monitor observing the item updates (as every shard's does);
- ``train_sharded_1`` / ``train_sharded_2``: events/s of a ShardedModel with 1 and 2 shards
  (local Ray cluster), and their ratios to the in-process figure;
- ``sharded_bytes_per_event``: bytes that crossed between different shards (pulled rows and
  trained rows) plus the events sent to the shards, per event, with 2 shards;
- ``ray_call_overhead``: median round trip of an empty actor call (the per-call cost);
- ``sharded_chunk_overhead``: seconds per chunk of a 2-shard model on 1-event chunks (the fixed
  cost of one parameter-server round: pulls, train, pushes, with nothing to train).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import numpy as np

import embcore
from embcore.bench import DIM, Result, Workload, mf_events, sparse_ids, timed

CHUNK = 65_536


def _ray() -> Any:
    from embcore.distributed._ray import require_ray

    ray = require_ray()
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    return ray


def bench_distributed(w: Workload, results: list[Result]) -> None:
    """Append the distributed figures (see the module docstring) to ``results``."""
    from embcore.distributed import ShardedModel

    ray = _ray()
    n = min(w.events, 1_000_000)
    users, items, labels = mf_events(w, n, seed=7)
    uid, iid = sparse_ids(users), sparse_ids(items)
    options: dict[str, Any] = {"dim": DIM, "seed": 1}
    note = f"{n} events, {w.users}x{w.items}, d={DIM}, chunk={CHUNK}"

    def in_process() -> float:
        # Like the shards: a Monitor observes the item updates.
        model, monitor = embcore.MatrixFactorization(**options), embcore.Monitor()
        return timed(
            lambda: [
                model.train(
                    uid[s : s + CHUNK], iid[s : s + CHUNK], labels[s : s + CHUNK], monitor=monitor
                )
                for s in range(0, n, CHUNK)
            ]
        )

    base = statistics.median(n / in_process() for _ in range(w.repeats))
    results.append(Result("train_inprocess_chunked", base, "events/s", note))
    for shards in (1, 2):
        rates, moved = [], 0
        for _ in range(w.repeats):
            with ShardedModel(shards, chunk_size=CHUNK, cpus_per_shard=0.5, **options) as m:
                t0 = time.perf_counter()
                out = m.train(uid, iid, labels)
                rates.append(n / (time.perf_counter() - t0))
                moved = out["bytes_moved"]
        rate = statistics.median(rates)
        results.append(
            Result(
                f"train_sharded_{shards}",
                rate,
                "events/s",
                note,
                {"ratio_to_inprocess": rate / base, "bytes_moved": moved},
            )
        )
        if shards == 2:
            results.append(
                Result("sharded_bytes_per_event", moved / n, "bytes", "2 shards, " + note)
            )

    with ShardedModel(2, chunk_size=1, cpus_per_shard=0.5, **options) as m:
        worker = m._workers[0]
        ray.get(worker.ping.remote())
        trips = []
        for _ in range(200):
            t0 = time.perf_counter()
            ray.get(worker.ping.remote())
            trips.append(time.perf_counter() - t0)
        results.append(
            Result("ray_call_overhead", statistics.median(trips), "s", "empty actor call")
        )
        k = 200
        t0 = time.perf_counter()
        m.train(uid[:k], iid[:k], labels[:k])
        per_chunk = (time.perf_counter() - t0) / k
        results.append(Result("sharded_chunk_overhead", per_chunk, "s", "2 shards, 1-event chunks"))


def staleness_sweep(
    events: int = 30_000, chunks: tuple[int, ...] = (128, 256, 512, 1024, 2048, 8192)
) -> list[dict[str, Any]]:
    """Progressive AUC of one process and of 2 shards, by chunk size, on the tiny simulated
    log served by random scores (the test log of tests/test_distributed.py)."""
    from embcore import sim
    from embcore.distributed import ShardedModel
    from embcore.validation import auc

    _ray()
    cfg = sim.SimConfig.for_scale("tiny", horizon_seconds=6 * sim.HOUR_SECONDS)
    world = sim.World(cfg, seed=5)
    parts = []
    for step in world.steps():
        rng = np.random.default_rng(step.index)
        parts.append(world.serve(step, rng.random((len(step.users), len(step.pool)))))
        if sum(len(p) for p in parts) > events:
            break
    log = sim.Events.concat(parts)
    u, i, y, t = log.users, log.items, log.click, log.timestamps
    active = int(np.unique(u).size)
    options: dict[str, Any] = {"dim": 8, "seed": 3, "learning_rate": 0.1}
    ref = embcore.MatrixFactorization(**options)
    one = auc(ref.train(u, i, y, timestamps=t, return_scores=True)["scores"], y)
    rows = []
    for chunk in chunks:
        with ShardedModel(2, chunk_size=chunk, cpus_per_shard=0.5, **options) as m:
            two = auc(m.train(u, i, y, timestamps=t, return_scores=True)["scores"], y)
        rows.append(
            {
                "chunk": chunk,
                "events_per_user_per_chunk": chunk / active,
                "auc_1_process": one,
                "auc_2_shards": two,
                "gap": None if one is None or two is None else two - one,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embcore.bench_distributed")
    parser.add_argument("--quick", action="store_true", help="the --quick workload sizes")
    parser.add_argument("--staleness", action="store_true", help="run the AUC/chunk sweep")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    if args.staleness:
        doc: Any = staleness_sweep()
        for row in doc:
            print(
                f"chunk {row['chunk']:6d}"
                f"  events/user/chunk {row['events_per_user_per_chunk']:6.2f}"
                f"  auc 1 process {row['auc_1_process']:.4f}"
                f"  2 shards {row['auc_2_shards']:.4f}  gap {row['gap']:+.4f}"
            )
    else:
        w = Workload.quick() if args.quick else Workload()
        results: list[Result] = []
        print("[bench] distributed ...", file=sys.stderr, flush=True)
        bench_distributed(w, results)
        doc = [r.__dict__ for r in results]
        for r in results:
            extra = "".join(f"  {k}={v:.4g}" for k, v in r.extra.items())
            print(f"{r.name:28s} {r.value:14.4g}  {r.unit:9s} {r.note}{extra}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
