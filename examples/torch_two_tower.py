"""Train a small two-tower recommender in PyTorch and monitor its embeddings with embcore.

The user and item tables are ``nn.Embedding(sparse=True)`` (Adagrad on sparse gradients); each has
its MLP tower. ``embcore.integrations.torch.watch`` observes, after every optimizer step, the
rows that step touched, under the team's own ids (here: item ids spread over 64 bits). At the
end the script prints the monitor's drift by interaction count, the OpenMetrics text a
Prometheus server would scrape (when prometheus-client is installed), and publishes the item
table as a Parquet version that ``embcore track`` can follow.

    python examples/torch_two_tower.py --steps 300 --out /tmp/two-tower

Needs ``pip install 'embcore[torch]'`` (and ``[prometheus]`` for the metrics text).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

import embcore
from embcore.integrations.torch import synthetic_batches, train_steps, two_tower, watch


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--items", type=int, default=1_000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--publish-every", type=int, default=100)
    parser.add_argument("--out", default=None, help="folder for the published Parquet versions")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    torch.sparse.check_sparse_tensor_invariants.disable()  # torch warns unless told
    model = two_tower(args.users, args.items, args.dim, seed=0)
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.05)
    # The team's ids: rows 0..n-1 of the item table stand for these 64-bit item ids.
    item_ids = (np.arange(args.items, dtype=np.uint64) * np.uint64(2654435761)) + np.uint64(10**12)
    monitor = embcore.Monitor(sample_rate=0.05)
    handle = watch(model.items, monitor, ids=item_ids, optimizer=optimizer)

    batches = synthetic_batches(args.users, args.items, args.steps, args.batch, seed=0)
    started = time.perf_counter()
    out = Path(args.out) if args.out else None
    losses = []
    for start in range(0, args.steps, args.publish_every):
        losses.append(train_steps(model, optimizer, batches[start : start + args.publish_every]))
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            weights = model.items.weight.detach().numpy()
            table = pa.table(
                {
                    "id": item_ids,
                    "embedding": pa.FixedSizeListArray.from_arrays(
                        pa.array(weights.ravel()), args.dim
                    ),
                    "count": handle.counts,
                }
            )
            pq.write_table(table, out / f"items-{start + args.publish_every:06d}.parquet")
    seconds = time.perf_counter() - started
    handle.remove()

    summary = monitor.summary()
    by_count = summary["by_count"]
    print(
        f"{args.steps} steps in {seconds:.2f} s ({1e3 * seconds / args.steps:.2f} ms/step, "
        f"{1e3 * handle.seconds / args.steps:.2f} ms in the hook); loss "
        f"{losses[0]:.4f} -> {losses[-1]:.4f}"
    )
    print(f"rows observed {handle.rows_observed}, updates compared {summary['updates']}")
    print("median drift (1 - cos) per update by interaction count:")
    for lower, n, p50 in zip(
        by_count["lower"], by_count["n"], by_count["drift"]["p50"], strict=True
    ):
        if n and lower in (1, 2, 4, 8, 16, 32, 64):
            print(f"  count >= {int(lower):3d}: {p50:.5f}  ({int(n)} updates)")
    try:
        from embcore.metrics import openmetrics

        text = openmetrics(monitor)
        print("OpenMetrics (first lines):")
        print("\n".join(text.splitlines()[:6]))
    except embcore.ConfigError:
        print("(pip install prometheus-client for the OpenMetrics text)")
    if out is not None:
        print(f"published versions in {out}; monitor them with: embcore track '{out}/*.parquet'")
    return {"summary": summary, "losses": losses, "hook": handle}


if __name__ == "__main__":
    main()
