"""Fingerprints of embcore's outputs, for the golden test (tests/test_golden.py).

Run ``python tests/golden/fingerprints.py`` to print them as JSON; the golden test
compares them with ``tests/golden/golden.json``, recorded from the code before the
one-engine redesign. Each fingerprint is a SHA-256 over exact bytes (weights,
optimizer state, metadata, statistics, scores, file bytes), so a match means
bit-identical behaviour; ``summary`` keeps float64 sums beside each hash so a
deliberate change can be checked against a tolerance.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
from typing import Any

import numpy as np

import embcore

N = 20_000


def _events(n_fields: int, seed: int = 7) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cols = [(rng.zipf(1.4, N) % (500 * (f + 1) + 13)).astype(np.uint64) for f in range(n_fields)]
    labels = (rng.random(N) < 0.3).astype(np.float32)
    ts = np.sort(rng.integers(0, 86_400, N)).astype(np.int64)
    return cols, labels, ts


def _h(*arrays: Any) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if isinstance(a, np.ndarray):
            h.update(np.ascontiguousarray(a).tobytes())
        else:
            h.update(json.dumps(a, sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


def _table(t: embcore.EmbeddingTable) -> dict[str, Any]:
    ids, w = t.view()
    order = np.argsort(ids, kind="stable")
    meta = t.metadata()
    cols = {k: np.asarray(meta[k])[order] for k in sorted(meta)}
    st = np.asarray(t.optimizer_state())
    st = st[order] if st.ndim == 2 and st.shape[0] == len(ids) else st
    return {
        "hash": _h(ids[order], np.asarray(w)[order], st, *cols.values()),
        "sum": float(np.asarray(w, dtype=np.float64).sum()),
        "sumsq": float((np.asarray(w, dtype=np.float64) ** 2).sum()),
        "rows": len(ids),
    }


def _stats(s: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if not isinstance(v, float) else float(np.float64(v))) for k, v in s.items()}


def fingerprints() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for opt in ("adagrad", "sgd", "rowwise_adagrad"):
        (u, i), y, ts = _events(2)
        mf = embcore.MatrixFactorization(dim=16, optimizer=opt, seed=3, capacity=1 << 16)
        s1 = mf.train(u, i, y, timestamps=ts, threads=1)
        s2 = mf.train(u[::-1].copy(), i, y, threads=1)
        sc = mf.score(u[:500], i[:500])
        out[f"mf/{opt}"] = {
            "stats": [_stats(s1), _stats(s2)],
            "global_bias": float(mf.global_bias),
            "users": _table(mf.users),
            "items": _table(mf.items),
            "score": _h(np.asarray(sc)),
            "score_sum": float(np.asarray(sc, dtype=np.float64).sum()),
        }
    for name, cls in (("ffm", embcore.FieldAwareFM), ("fm", embcore.FactorizationMachine)):
        for dim in (8, 6):
            cols, y, ts = _events(4)
            fields = ["user", "item", "creator", "tag"]
            m = cls(fields, dim=dim, seed=3, capacity=1 << 16)
            columns = dict(zip(fields, cols, strict=True))
            s1 = m.train(columns, y, timestamps=ts, threads=1)
            sc = m.score({f: c[:500] for f, c in columns.items()})
            out[f"{name}/d{dim}"] = {
                "stats": [_stats(s1)],
                "global_bias": float(m.global_bias),
                "tables": {f: _table(m.table(f)) for f in fields},
                "score": _h(np.asarray(sc)),
                "score_sum": float(np.asarray(sc, dtype=np.float64).sum()),
            }
    (u, i), y, ts = _events(2, seed=11)
    t = embcore.EmbeddingTable(8, seed=5, capacity=1 << 16)
    t.insert(np.unique(u))
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "t.embc")
        t.save(p)
        with open(p, "rb") as f:
            out["table_file"] = hashlib.sha256(f.read()).hexdigest()[:32]
    out["study_tiny"] = _study()
    return out


def _strip(x: Any) -> Any:
    if isinstance(x, dict):
        return {
            k: _strip(v)
            for k, v in x.items()
            if not k.endswith("_seconds")
            and k
            not in ("runtime_seconds", "train_seconds", "versions", "seconds", "serve_seconds")
        }
    if isinstance(x, list):
        return [_strip(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def _study() -> str:
    from embcore.study import run_study

    with tempfile.TemporaryDirectory() as d:
        # period="6h": the design this fingerprint was recorded with (the tiny scale's own
        # period is 1h since session 6; a flagged 6 h design still exercises every path).
        run_study(os.path.join(d, "s"), scale="tiny", period="6h", progress=False, figures=False)
        with open(os.path.join(d, "s", "metrics.json")) as f:
            m = json.load(f)
    return _h(_strip(m))


if __name__ == "__main__":
    json.dump(fingerprints(), sys.stdout, indent=1, sort_keys=True)
    print()
