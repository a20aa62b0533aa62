"""Where the PyTorch hook's time goes: ``Monitor.observe`` against the rest of the hook.

Trains the example two-tower model of ``embcore.integrations.torch.bench_torch`` plain and with
``watch()`` on both tables, side by side in blocks of 20 steps, the watched model's monitors
behind a proxy that times each ``observe`` call. Prints, per step (medians over repeats): the
plain step, the hook (``Watch.seconds``), the time in ``observe`` and the rows it was sent
(touched rows plus first-sighting references), and the rest of the hook (the numpy work per
step), each as a share of the plain step.

    python benches/torch_hook_split.py --repeats 5
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

import embcore
from embcore.integrations.torch import (
    synthetic_batches,
    train_side_by_side,
    train_steps,
    two_tower,
    watch,
)


class TimedMonitor:
    """An embcore.Monitor whose ``observe`` and ``observe_pairs`` calls are timed (the hook
    uses ``observe_pairs`` when the monitor has it; ``--observe`` hides it)."""

    def __init__(self) -> None:
        self.monitor = embcore.Monitor(sample_rate=0.01)
        self.seconds = 0.0
        self.rows = 0

    def observe(self, ids: Any, rows: Any, counts: Any = None, timestamps: Any = None) -> None:
        started = time.perf_counter()
        self.monitor.observe(ids, rows, counts=counts, timestamps=timestamps)
        self.seconds += time.perf_counter() - started
        self.rows += len(ids)

    def observe_pairs(self, ids: Any, before: Any, after: Any, counts: Any, **kw: Any) -> None:
        started = time.perf_counter()
        self.monitor.observe_pairs(ids, before, after, counts, **kw)
        self.seconds += time.perf_counter() - started
        self.rows += len(ids)


class TimedObserveOnly(TimedMonitor):
    """The same monitor reached through ``observe`` only."""

    observe_pairs = None  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--sample", type=float, default=1.0)
    parser.add_argument(
        "--observe", action="store_true", help="send the rows through observe, not observe_pairs"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.sparse.check_sparse_tensor_invariants.disable()  # torch warns unless told
    n_users, n_items, dim, n_batches, block = 100_000, 50_000, 32, 200, 20
    batches = synthetic_batches(n_users, n_items, n_batches, 1024, seed=1)
    rows = []
    for _ in range(args.repeats):
        runs = []
        kind = TimedObserveOnly if args.observe else TimedMonitor
        monitors = [kind(), kind()]
        for with_hook in (False, True):
            model = two_tower(n_users, n_items, dim, hidden=args.hidden, seed=0)
            optimizer = torch.optim.Adagrad(model.parameters(), lr=0.05)
            handles = []
            if with_hook:
                handles = [
                    watch(table, m, optimizer=optimizer, sample=args.sample)
                    for table, m in zip((model.users, model.items), monitors, strict=True)
                ]
            train_steps(model, optimizer, batches[:5])  # warm-up
            runs.append((model, optimizer, handles))
        for h in runs[1][2]:
            h.seconds = 0.0
        for m in monitors:
            m.seconds, m.rows = 0.0, 0
        seconds = train_side_by_side(runs, batches[:n_batches], block)
        hook = sum(h.seconds for h in runs[1][2])
        observe = sum(m.seconds for m in monitors)
        sent = sum(m.rows for m in monitors)
        rows.append([s / n_batches for s in (*seconds, hook, observe)] + [sent / n_batches])
        for h in runs[1][2]:
            h.remove()
    plain, watched, hook, observe, sent = np.median(np.array(rows), axis=0)
    print(
        f"plain step {plain * 1e3:.3f} ms, watched {watched * 1e3:.3f} ms "
        f"({watched / plain - 1:+.0%}); hook {hook * 1e6:.0f} us = {hook / plain:.1%} of the "
        f"plain step\n  observe {observe * 1e6:.0f} us = {observe / plain:.1%} ({sent:.0f} rows "
        f"sent per step, {observe / sent * 1e9:.0f} ns per row)\n  rest of the hook "
        f"{(hook - observe) * 1e6:.0f} us = {(hook - observe) / plain:.1%} (numpy work per step)"
    )


if __name__ == "__main__":
    main()
