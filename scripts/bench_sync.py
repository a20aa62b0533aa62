"""Time of ``snapshot.sync_from(model)`` on a 2.5M-row MF after 100k training events, and with
nothing changed.

The figure in docs/replay.md: ``python scripts/bench_sync.py``.
"""

import time

import numpy as np

import embcore

rng = np.random.default_rng(0)
model = embcore.MatrixFactorization(dim=32, seed=0)
n_users, n_items, batch = 2_000_000, 500_000, 100_000
model.train(
    np.arange(n_users, dtype=np.uint64),
    rng.integers(0, n_items, n_users).astype(np.uint64),
    np.ones(n_users, np.float32),
)
snapshot = model.copy()
for _ in range(3):
    model.train(
        rng.integers(0, n_users, batch).astype(np.uint64),
        rng.integers(0, n_items, batch).astype(np.uint64),
        np.ones(batch, np.float32),
    )
    began = time.perf_counter()
    stats = snapshot.sync_from(model)
    print(f"sync {1e3 * (time.perf_counter() - began):.1f} ms", stats)
began = time.perf_counter()
stats = snapshot.sync_from(model)
print(f"sync with nothing changed {1e3 * (time.perf_counter() - began):.1f} ms", stats)
