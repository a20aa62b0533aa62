"""Peak memory of ``embcore track`` against the size of the table it streams.

For each size N it writes a Parquet table (N rows, an int64 id and a list<float32> column of
width D, row groups of 64k rows) and a second version (the same rows, 10% of them moved), then
tracks both in a fresh process and reports that process's peak RSS above its RSS after the
imports. Bounded memory means the growth stays flat as N grows (it is set by ``sample_size``,
the monitor and the chunk size).

    python benches/track_memory.py --sizes 1000000,3000000,10000000 --dim 32 --dir /tmp/tm
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
import numpy as np, pyarrow, embcore
from embcore.track import TrackConfig, track
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
base = rss()
t = time.perf_counter()
m = track(sys.argv[1:3], sys.argv[3], out=None, progress=False,
          config=TrackConfig(sample_size=int(sys.argv[4])))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
v = m["versions"][-1]
print(json.dumps({"base_rss": base, "peak_rss": peak, "seconds": time.perf_counter() - t,
                  "rows": v["rows"], "sample_rows": v["sample_rows"],
                  "rows_unchanged": v["rows_unchanged"], "drift_p50": v["drift_p50"],
                  "monitor_bytes": m["monitor"]["memory_bytes"]}))
"""


def write_table(path: Path, n: int, dim: int, moved: float, seed: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    schema = pa.schema([("id", pa.int64()), ("embedding", pa.list_(pa.float32(), dim))])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, n, 65536):
            stop = min(start + 65536, n)
            base = np.random.default_rng(start).normal(size=(stop - start, dim))
            move = rng.random(stop - start) < moved
            base[move] += 0.3 * rng.normal(size=(int(move.sum()), dim))
            flat = pa.array(base.astype(np.float32).ravel())
            writer.write_table(
                pa.table(
                    {
                        "id": np.arange(start, stop, dtype=np.int64),
                        "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
                    },
                    schema=schema,
                ),
                row_group_size=65536,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200000,1000000,3000000")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--sample-size", type=int, default=100_000)
    parser.add_argument("--dir", default="/tmp/embcore-track-memory")
    args = parser.parse_args()
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        v1, v2 = folder / f"n{n}-v1.parquet", folder / f"n{n}-v2.parquet"
        started = time.perf_counter()
        if not v1.exists():
            write_table(v1, n, args.dim, moved=0.0, seed=1)
        if not v2.exists():
            write_table(v2, n, args.dim, moved=0.1, seed=2)
        written = time.perf_counter() - started
        state = folder / f"n{n}-state"
        subprocess.run(["rm", "-rf", str(state)], check=True)
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(v1), str(v2), str(state), str(args.sample_size)],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout)
        r |= {
            "n": n,
            "dim": args.dim,
            "table_bytes": n * args.dim * 4,
            "growth_bytes": r["peak_rss"] - r["base_rss"],
            "write_seconds": written,
        }
        results.append(r)
        print(
            f"N={n:>9,d}  table {r['table_bytes'] / 2**20:8.0f} MiB  peak RSS growth "
            f"{r['growth_bytes'] / 2**20:7.0f} MiB  track {r['seconds']:6.1f} s  sample "
            f"{r['sample_rows']}  unchanged~{r['rows_unchanged']}  drift p50 {r['drift_p50']:.4f}",
            flush=True,
        )
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
