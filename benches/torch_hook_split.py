"""Where the PyTorch hook's time goes: the monitor, the step's bookkeeping, the Python glue.

Trains the example two-tower model of ``embcore.integrations.torch.bench_torch`` plain and with
``watch()`` on both tables, side by side in blocks of 20 steps. Prints, per step (medians over
repeats), each as a share of the plain step: the plain step, the hook (``Watch.seconds``), the
time in the monitor's ``observe_pairs`` / ``observe`` (``Watch.observe_seconds``) with the rows
it was sent, and the rest of the hook. On the native path (the default) the rest is split into
the bookkeeping in ``StepTracker.before_step`` / ``after_step`` (sort, counts, distinct rows,
first sightings, the two row gathers, ids; Rust) and the Python around it (torch attribute
lookups, the index view, the hooks' dispatch); ``--python`` runs the numpy path instead (the
reference the native path is tested against), ``--observe`` the numpy path with a monitor that
has ``observe`` only.

    python benches/torch_hook_split.py --repeats 5
    python benches/torch_hook_split.py --repeats 5 --python
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

import embcore
from embcore.integrations.torch import (
    Watch,
    synthetic_batches,
    train_side_by_side,
    train_steps,
    two_tower,
)


class ObserveOnly:
    """An embcore.Monitor reached through ``observe`` only (the hook then sends each step's
    first-sighting references too): counts the rows sent."""

    def __init__(self) -> None:
        self.monitor = embcore.Monitor(sample_rate=0.01)
        self.rows = 0

    def observe(self, ids: Any, rows: Any, counts: Any = None, timestamps: Any = None) -> None:
        self.monitor.observe(ids, rows, counts=counts, timestamps=timestamps)
        self.rows += len(ids)


class TimedTracker:
    """A ``StepTracker`` whose ``before_step`` / ``after_step`` calls are timed."""

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker
        self.before = self.after = 0.0

    def before_step(self, *args: Any) -> int:
        started = time.perf_counter()
        out: int = self.tracker.before_step(*args)
        self.before += time.perf_counter() - started
        return out

    def after_step(self, *args: Any) -> int:
        started = time.perf_counter()
        out: int = self.tracker.after_step(*args)
        self.after += time.perf_counter() - started
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tracker, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--sample", type=float, default=1.0)
    path = parser.add_mutually_exclusive_group()
    path.add_argument("--python", action="store_true", help="the numpy path, not the native one")
    path.add_argument(
        "--observe", action="store_true", help="the numpy path through observe, not observe_pairs"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.sparse.check_sparse_tensor_invariants.disable()  # torch warns unless told
    n_users, n_items, dim, n_batches, block = 100_000, 50_000, 32, 200, 20
    batches = synthetic_batches(n_users, n_items, n_batches, 1024, seed=1)
    rows = []
    for _ in range(args.repeats):
        runs = []
        for with_hook in (False, True):
            model = two_tower(n_users, n_items, dim, hidden=args.hidden, seed=0)
            optimizer = torch.optim.Adagrad(model.parameters(), lr=0.05)
            handles = []
            if with_hook:
                native = not (args.python or args.observe)
                for table in (model.users, model.items):
                    m = ObserveOnly() if args.observe else embcore.Monitor(sample_rate=0.01)
                    # watch() with the choice of path (Watch's own argument)
                    h = Watch(table, m, None, optimizer, "auto", None, args.sample, native=native)
                    handles.append(h)
            train_steps(model, optimizer, batches[:5])  # warm-up
            runs.append((model, optimizer, handles))
        handles = runs[1][2]
        timed = []
        for h in handles:
            h.seconds, h.rows_observed, h._observe_seconds = 0.0, 0, 0.0
            if h.native:
                h._tracker = TimedTracker(h._tracker)
                timed.append(h._tracker)
            elif isinstance(h.monitor, ObserveOnly):
                h.monitor.rows = 0
        native = bool(timed) and len(timed) == len(handles)
        # the trackers' own observe_seconds count from here
        observe_start = sum(t.tracker.observe_seconds for t in timed)
        seconds = train_side_by_side(runs, batches[:n_batches], block)
        hook = sum(h.seconds for h in handles)
        observe = sum(h.observe_seconds for h in handles) - observe_start
        sent = sum(
            h.monitor.rows if isinstance(h.monitor, ObserveOnly) else h.rows_observed
            for h in handles
        )
        before = sum(t.before for t in timed)
        after = sum(t.after for t in timed)
        rows.append(
            [s / n_batches for s in (*seconds, hook, observe, before, after)] + [sent / n_batches]
        )
        for h in handles:
            h.remove()
    plain, watched, hook, observe, before, after, sent = np.median(np.array(rows), axis=0)
    tracker = before + after
    print(
        f"{'native' if native else 'numpy'} path: plain step {plain * 1e3:.3f} ms, watched "
        f"{watched * 1e3:.3f} ms ({watched / plain - 1:+.0%}); hook {hook * 1e6:.0f} us = "
        f"{hook / plain:.1%} of the plain step\n  monitor {observe * 1e6:.0f} us = "
        f"{observe / plain:.1%} ({sent:.0f} rows sent per step, {observe / sent * 1e9:.0f} ns "
        f"per row)\n  rest of the hook {(hook - observe) * 1e6:.0f} us = "
        f"{(hook - observe) / plain:.1%}"
    )
    if native:
        book = tracker - observe
        glue = hook - tracker
        print(
            f"    bookkeeping in StepTracker {book * 1e6:.0f} us = {book / plain:.1%} (Rust: "
            f"before_step {before * 1e6:.0f} us: sort, counts, distinct, first sightings, "
            f"gather; after_step {(after - observe) * 1e6:.0f} us besides the monitor: "
            f"gather, ids)\n    Python around it {glue * 1e6:.0f} us = {glue / plain:.1%} "
            "(hooks, attribute lookups, index view)"
        )


if __name__ == "__main__":
    main()
