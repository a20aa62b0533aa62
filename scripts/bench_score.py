"""Scores per second of ``model.score`` on 5M events of a trained 1M x 1M MF, 1 thread.

The figure in docs/replay.md: ``python scripts/bench_score.py`` (best of 3; the checksum shows
that two builds give the same scores).
"""

import time

import numpy as np

import embcore

rng = np.random.default_rng(0)
n = 5_000_000
model = embcore.MatrixFactorization(dim=32, seed=0)
users = rng.integers(0, 1_000_000, n).astype(np.uint64)
items = (rng.zipf(1.2, n) % 1_000_000).astype(np.uint64)
model.train(users, items, (rng.random(n) < 0.3).astype(np.float32), threads=1)
rates = []
for _ in range(3):
    began = time.perf_counter()
    scores = model.score(users, items)
    rates.append(n / (time.perf_counter() - began))
checksum = float(np.asarray(scores, dtype=np.float64).sum())
print(f"score {max(rates) / 1e6:.2f} M/s (checksum {checksum})")
