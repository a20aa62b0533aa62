"""The run layer of the applications (``embcore study``, ``embcore replay``): what every run does
around its own source of events, evaluator and report.

A run checks its options (:func:`check_modes`, :func:`check_seed`, :func:`check_levels`), opens
its :class:`OutputDirectory`, starts one :class:`~embcore.modes.Trainer` with an
``embcore.Monitor`` per mode (:func:`start_modes`), feeds every piece of its source to every mode
through a :class:`ModePool` under a :func:`progress_bar`, analyses each mode once its events are
consumed (:func:`analyse_modes`: maturity, learning curve, norms vs popularity, as JSON-safe
metrics and the results the figures read), compares the modes (:func:`comparison`) and finishes
the output directory (report, then ``metrics.json``, then the rename into place).
:func:`run_command` is the shared body of the subcommands' ``run(args)``.

Design notes
------------
* Output is written into a temporary directory next to ``DIR`` and renamed into place at the
  end, so an interrupted or failed run never leaves a complete-looking directory behind. An
  existing ``DIR`` is replaced only if it is empty or holds an earlier run (a
  ``metrics.json``); anything else is refused rather than deleted.
* Modes are independent given a piece of the source (each owns its trainer and monitor), so
  they process it in parallel threads; training, scoring and the matmuls release the GIL.
  Results do not depend on the thread schedule.

>>> finite([1.0, float("nan"), np.int64(3)])
[1.0, None, 3]
>>> comparison({"realtime": None})["maturity_ratio_realtime_over_batch"] is None
True
>>> with ModePool(["realtime", "batch"]) as pool:
...     pool.map(lambda mode, n: f"{mode} {n}", 3)
['realtime 3', 'batch 3']
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import numpy as np

import embcore
from embcore import analysis
from embcore.modes import MODES, Model, Trainer

__all__ = [
    "AGE_EDGES_HOURS",
    "ALPHAS",
    "DEFAULT_ALPHA",
    "ModePool",
    "OutputDirectory",
    "analyse_mode",
    "age_labels",
    "analyse_modes",
    "check_levels",
    "check_modes",
    "check_seed",
    "commit_output",
    "comparison",
    "finite",
    "given_options",
    "learning_curve",
    "make_monitor",
    "progress_bar",
    "release_free_memory",
    "run_command",
    "run_options",
    "start_modes",
    "versions",
    "with_initial_rows",
]

ALPHAS = (0.01, 0.05, 0.1)
"""Maturity levels always computed (the headline alpha is added when it is not one of them)."""
DEFAULT_ALPHA = 0.05
"""The headline maturity level of a run."""
AGE_EDGES_HOURS = (1, 3, 6, 12, 24, 48)
"""Item-age buckets of engagement and validation: upper edges in hours (the last is open)."""
_MAX_CURVE_POINTS = 80

Piece = TypeVar("Piece")
Out = TypeVar("Out")


# --------------------------------------------------------------------------------------------
# Options


def check_modes(modes: list[str], error: type[Exception] = ValueError) -> list[str]:
    """``modes`` if it names known modes, each once; else ``error`` with the remedy.

    >>> check_modes(["realtime", "weekly"])
    Traceback (most recent call last):
    ...
    ValueError: unknown mode(s) 'weekly': choose from realtime, batch, hybrid
    """
    if not modes:
        raise error("--modes must name at least one mode, e.g. realtime,batch")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise error(
            f"unknown mode(s) {', '.join(map(repr, unknown))}: choose from {', '.join(MODES)}"
        )
    if len(set(modes)) != len(modes):
        raise error(f"--modes lists a mode twice: {','.join(modes)}")
    return modes


def check_seed(seed: Any, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` unless ``seed`` is an integer in [0, 2**63)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise error(f"--seed must be an integer in [0, 2**63), got {seed!r}")


def check_levels(alpha: Any, track_rate: Any, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` unless the maturity level is in (0, 2) and the track rate in (0, 1]."""
    if not (isinstance(alpha, int | float) and 0 < alpha < 2):
        raise error(f"alpha must be in (0, 2), got {alpha!r}")
    if not (isinstance(track_rate, int | float) and 0 < track_rate <= 1):
        raise error(f"track_rate must be in (0, 1], got {track_rate!r}")


def age_labels() -> list[str]:
    """Labels of the :data:`AGE_EDGES_HOURS` buckets.

    >>> age_labels()
    ['0-1h', '1-3h', '3-6h', '6-12h', '12-24h', '24-48h', '>=48h']
    """
    labels, low = [], 0
    for edge in AGE_EDGES_HOURS:
        labels.append(f"{low}-{edge}h")
        low = edge
    return [*labels, f">={low}h"]


# --------------------------------------------------------------------------------------------
# Modes and driving them


def make_monitor(
    track_rate: float,
    seed: int,
    *,
    milestones: Sequence[int] | None = None,
    max_records: int | None = None,
) -> embcore.Monitor:
    """The trajectory monitor of one mode.

    Every mode gets the same ``seed``, so every mode tracks the same item ids. ``milestones``
    (default: the monitor's log-spaced grid) are the counts at which tracked rows are recorded;
    the study records every count up to :data:`embcore.protocol.DENSE_VIEWS`.
    """
    options: dict[str, Any] = {"sample_rate": track_rate, "seed": seed}
    if milestones is not None:
        options["milestones"] = list(milestones)
    if max_records is not None:
        options["max_records"] = int(max_records)
    return embcore.Monitor(**options)


def start_modes(
    modes: Sequence[str],
    model: Callable[[], Model],
    *,
    period: int,
    epochs: int,
    threads: int,
    seed: int,
    track_rate: float,
    milestones: Sequence[int] | None = None,
    max_records: int | None = None,
    trainer_options: Mapping[str, Any] | None = None,
) -> dict[str, Trainer]:
    """One :class:`~embcore.modes.Trainer` per mode, each with its own monitor
    (``trainer.monitor``) and its own model from the factory ``model`` (so every mode starts
    from the same initial rows).

    ``milestones`` and ``max_records`` configure the monitors (:func:`make_monitor`);
    ``trainer_options`` are further :class:`~embcore.modes.Trainer` keyword arguments given to
    every mode (e.g. a batch ``window``, when the Trainer has one).

    >>> import embcore
    >>> trainers = start_modes(["realtime", "batch"], lambda: embcore.MatrixFactorization(dim=4),
    ...                        period=3600, epochs=1, threads=1, seed=0, track_rate=1.0)
    >>> [t.mode for t in trainers.values()]
    ['realtime', 'batch']
    """
    return {
        mode: Trainer(
            mode,
            model,
            period=period,
            epochs=epochs,
            monitor=make_monitor(track_rate, seed, milestones=milestones, max_records=max_records),
            threads=threads,
            seed=seed,
            **dict(trainer_options or {}),
        )
        for mode in modes
    }


class ModePool:
    """Calls one function for every mode on the same piece of a source, in parallel threads.

    Use as a context manager; :meth:`map` returns the results in mode order.

    Parameters
    ----------
    modes : sequence of str
        The modes, in the order results are returned.
    parallel : bool
        One thread per mode (up to the CPU count); False calls the modes in turn. Modes must
        be independent given the piece, so the results are the same either way.
    """

    def __init__(self, modes: Sequence[str], parallel: bool = True) -> None:
        self.modes = list(modes)
        self.workers = min(len(self.modes), os.cpu_count() or 1) if parallel else 1
        self._executor: ThreadPoolExecutor | None = None

    def __enter__(self) -> ModePool:
        self._executor = ThreadPoolExecutor(max_workers=self.workers)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None

    def map(self, function: Callable[[str, Piece], Out], piece: Piece) -> list[Out]:
        """``[function(mode, piece) for mode in modes]``, the modes in parallel when allowed."""
        if self.workers > 1 and self._executor is not None:
            return list(self._executor.map(function, self.modes, [piece] * len(self.modes)))
        return [function(mode, piece) for mode in self.modes]


class ReadAhead(Generic[Piece]):
    """Iterates over ``source`` with the next item read in a background thread while the
    caller works on the current one (``enabled=False``: plain iteration, nothing in the
    background). An exception of ``source`` is raised by the ``next`` that would have
    returned its item. Use as a context manager: leaving it stops the reader (it finishes the
    item it is on) and joins it.

    >>> with ReadAhead(iter(range(3)), enabled=True) as items:
    ...     list(items)
    [0, 1, 2]
    """

    _DONE = object()

    def __init__(self, source: Iterator[Piece], enabled: bool = True) -> None:
        self._source = source
        self._enabled = enabled
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._finished = False

    def __enter__(self) -> ReadAhead[Piece]:
        if self._enabled:
            self._thread = threading.Thread(target=self._read, name="embcore-read-ahead")
            self._thread.daemon = True
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            while thread.is_alive():
                try:  # unblock a reader waiting to hand over an item
                    self._queue.get(timeout=0.05)
                except queue.Empty:
                    pass
            thread.join()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _read(self) -> None:
        try:
            for item in self._source:
                if not self._put((item, None)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put((self._DONE, exc))
            return
        self._put((self._DONE, None))

    def __iter__(self) -> ReadAhead[Piece]:
        return self

    def __next__(self) -> Piece:
        if not self._enabled:
            return next(self._source)
        if self._finished:
            raise StopIteration
        if self._thread is None:
            raise RuntimeError("ReadAhead reads in the background only inside its `with` block")
        item, exc = self._queue.get()
        if exc is not None or item is self._DONE:
            self._finished = True
            self._stop.set()
            if exc is not None:
                raise exc
            raise StopIteration
        return cast(Piece, item)


def sharded_factory(
    num_shards: int, address: str | None, n_modes: int, **model_options: Any
) -> Callable[[], Any]:
    """A factory of each mode's model as an ``embcore.distributed.ShardedModel`` of
    ``num_shards`` shards (``--ray N``): every mode builds its own actors, so each asks for
    ``min(1, cores / (shards x modes))`` CPUs of a local cluster."""
    from embcore.distributed import sharded_factory as make

    cpus = min(1.0, (os.cpu_count() or 1) / (num_shards * n_modes))
    return make(num_shards, address, cpus_per_shard=cpus, **model_options)


def release_free_memory() -> None:
    """Give the memory that was freed but kept by the allocators back to the system, between
    the phases of a run (the stream, the validation metrics, the analyses).

    A stream of chunks leaves hundreds of MB freed but still resident: Arrow's pool keeps
    the pages of the batches it decoded, and glibc's arenas keep the chunks' and the
    training threads' freed arrays (the 10M-event replay benchmark: about 350 MB, a third of
    what it really holds). Nothing is live in them, so handing them back changes no result,
    only the peak the next phase starts from. A no-op where the allocator has no such call.

    >>> release_free_memory()
    """
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:
        pyarrow.default_memory_pool().release_unused()
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            trim = ctypes.CDLL(None).malloc_trim  # glibc; musl has none
        except (OSError, AttributeError):
            return
        trim(0)


def progress_bar(total: int | None, desc: str, enabled: bool) -> Any:
    """A tqdm bar counting events on stderr (disabled: a no-op bar)."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="ev",
        unit_scale=True,
        disable=not enabled,
        desc=desc,
        file=sys.stderr,
        mininterval=0.5,
    )


def versions() -> dict[str, str]:
    """The versions a run records in its ``config``."""
    return {
        "embcore": embcore.__version__,
        "build_profile": embcore._core.build_profile,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------------------------
# Output directory


class OutputDirectory:
    """Where one run writes ``metrics.json`` and its report, finished or not at all.

    The path is checked when the object is made (before anything runs); entering the context
    makes a private temporary directory beside it (:attr:`staging`), :meth:`finish` writes the
    report and ``metrics.json`` there and renames it into place, and leaving the context
    without :meth:`finish` (an error) removes it.

    Parameters
    ----------
    out : path or None
        The output directory; None: the run writes nothing (:meth:`finish` only adds the
        runtime to the metrics).
    error : type of exception
        Raised (with the remedy) for a path that cannot be used.
    replaces : str
        What an existing non-empty ``out`` must be to be replaced, for the message (it must
        hold a ``metrics.json``).

    Examples
    --------
    >>> import tempfile, pathlib, time
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> with OutputDirectory(out) as output:
    ...     output.finish({"modes": {}}, time.perf_counter())
    >>> sorted(p.name for p in out.iterdir())
    ['metrics.json']
    """

    def __init__(
        self,
        out: str | os.PathLike[str] | None,
        error: type[Exception] = ValueError,
        replaces: str = "an earlier run",
    ) -> None:
        self.path = None if out is None else Path(out)
        self.staging: Path | None = None
        self._error = error
        path = self.path
        if path is None:
            return
        if path.exists() and not path.is_dir():
            raise error(f"--out {path} exists and is not a directory")
        if path.is_dir() and any(path.iterdir()) and not (path / "metrics.json").exists():
            raise error(
                f"--out {path} is a non-empty directory that does not hold {replaces}; "
                "choose another path or empty it"
            )

    def __enter__(self) -> OutputDirectory:
        if self.path is None:
            return self
        parent = self.path.absolute().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.partial-", dir=parent))
        except OSError as err:
            raise self._error(
                f"--out {self.path} cannot be written: {err.strerror or err}"
            ) from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None

    def finish(
        self,
        metrics: dict[str, Any],
        started: float,
        report: Callable[[Path], dict[str, str | None]] | None = None,
    ) -> None:
        """Record the runtime since ``started`` (``time.perf_counter()``) in ``metrics``; with a
        path, first draw the report (``metrics["figures"] = report(directory)``), then write
        ``metrics.json`` last and rename the directory into place."""
        if self.staging is None or self.path is None:
            metrics["runtime_seconds"] = round(time.perf_counter() - started, 2)
            return
        if report is not None:
            metrics["figures"] = report(self.staging)
        metrics["runtime_seconds"] = round(time.perf_counter() - started, 2)
        text = json.dumps(metrics, indent=1, allow_nan=False)
        (self.staging / "metrics.json").write_text(text + "\n", encoding="utf-8")
        commit_output(self.staging, self.path)
        self.staging = None


def commit_output(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` directory to ``out`` (replacing an earlier run)."""
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp made it private; give it the usual permissions
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Command line


def given_options(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The optional CLI settings among ``names`` that were given (the API's defaults apply to
    the others).

    >>> given_options(argparse.Namespace(dim=8, alpha=None), ["dim", "alpha", "seed"])
    {'dim': 8}
    """
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options every run command takes: ``seed``, ``threads``, ``modes``, ``period`` and
    ``progress`` (from ``--no-progress``)."""
    return {
        "seed": args.seed,
        "threads": args.threads,
        "modes": args.modes,
        "period": args.period,
        "progress": not args.no_progress,
    }


def run_command(
    command: str,
    call: Callable[[], dict[str, Any]],
    error: type[Exception],
    summary: Callable[[dict[str, Any]], str],
) -> int:
    """Body of ``embcore COMMAND``: run ``call()``, print ``summary(metrics)`` and return 0;
    for ``error`` (an invalid option) print ``embcore COMMAND: error: ...`` to stderr and
    return 2."""
    try:
        metrics = call()
    except error as err:
        print(f"embcore {command}: error: {err}", file=sys.stderr)
        return 2
    print(summary(metrics))
    return 0


# --------------------------------------------------------------------------------------------
# Analysis of each mode


def finite(value: Any) -> Any:
    """Plain Python numbers for JSON: NaN/inf become None; arrays become lists."""
    if isinstance(value, np.ndarray):
        return [finite(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _downsample_curve(counts: Any, *columns: Any, weights: Any) -> dict[str, Any]:
    """Log-spaced bins over counts (weighted means) so long curves stay small in JSON."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.size <= _MAX_CURVE_POINTS:
        return {"counts": counts.astype(np.int64).tolist(), "values": [finite(c) for c in columns]}
    edges = np.unique(np.geomspace(counts.min(), counts.max() + 1, _MAX_CURVE_POINTS + 1).round())
    bucket = np.searchsorted(edges, counts, side="right") - 1
    w = np.asarray(weights, dtype=np.float64)
    total = np.bincount(bucket, weights=w)
    used = total > 0
    centre = np.bincount(bucket, weights=w * counts)[used] / total[used]
    values = [
        finite(np.bincount(bucket, weights=w * np.asarray(c, dtype=np.float64))[used] / total[used])
        for c in columns
    ]
    return {"counts": centre.round().astype(np.int64).tolist(), "values": values}


def with_initial_rows(
    traj: analysis.Trajectories, trainer: Trainer, fresh_model: Callable[[], Model]
) -> analysis.Trajectories:
    """Add e_i(0), each tracked item's initial row, as a record at count 0.

    Rows are initialised deterministically from (seed, id), so a fresh model with the same
    options (``fresh_model()``) reproduces them without inserting anything into the trained
    one; the trainer says which columns of an item row are the embedding. Without e(0) the
    move from the initial row to the first published state (often the largest step of a batch
    item) would be invisible, and items with one publish could not be analysed at all.
    """
    if traj.ids.size == 0:
        return traj
    first = np.ones(traj.ids.size, dtype=bool)
    first[1:] = traj.ids[1:] != traj.ids[:-1]
    firsts = np.flatnonzero(first)
    ids = traj.ids[firsts]  # records are sorted by (id, count): the distinct ids, in order
    table = trainer.item_table(fresh_model())
    table.insert(ids)
    start, stop = trainer.item_span
    initial = np.ascontiguousarray(table.get(ids)[:, start:stop])
    del table
    # Each item's initial record goes just before its first one, which is where the stable
    # (id, count) sort of "initial records, then the others" puts it (an existing count-0
    # record, later in that order, wins). Written straight into the merged arrays: no
    # concatenated copy to sort (the records can be a few hundred MB).
    n, m = traj.ids.size, ids.size
    at_initial = firsts + np.arange(m)
    at_record = np.arange(n) + np.cumsum(first)
    merged_ids = np.empty(n + m, dtype=traj.ids.dtype)
    merged_counts = np.empty(n + m, dtype=traj.counts.dtype)
    merged_times = np.empty(n + m, dtype=traj.timestamps.dtype)
    merged_rows = np.empty((n + m, traj.rows.shape[1]), dtype=traj.rows.dtype)
    merged_ids[at_initial], merged_ids[at_record] = ids, traj.ids
    merged_counts[at_initial], merged_counts[at_record] = 0, traj.counts
    merged_times[at_initial], merged_times[at_record] = traj.timestamps[firsts], traj.timestamps
    merged_rows[at_initial] = initial
    for a in range(0, n, 1 << 16):  # bounded index temporaries
        merged_rows[at_record[a : a + (1 << 16)]] = traj.rows[a : a + (1 << 16)]
    return analysis.Trajectories._adopt(merged_ids, merged_counts, merged_times, merged_rows)


_with_initial_rows = with_initial_rows  # the former private name


def learning_curve(traj: analysis.Trajectories, min_items: int | None = None) -> dict[str, Any]:
    """Mean alignment gain *per interaction* G(n), with the learning peak and 50%/90% counts.

    ``analysis.learning_peak`` attributes the whole gain between two records to the later
    count, so with sparse records (log-spaced milestones, batch publishes) wide gaps look like
    large gains. Here the gain of a step from count a to count b is spread evenly over the
    interactions a+1..b (linear interpolation of cos(e(n), e*)), and G(n) averages over the
    items whose trajectory covers n. The peak is taken over counts covered by at least
    ``min_items`` items (default max(10, 2% of the items)), so a handful of very popular items
    cannot decide it.

    >>> t = analysis.Trajectories.from_arrays([1, 1, 1], [0, 2, 4], [[0, 1], [1, 1], [1, 0]])
    >>> curve = learning_curve(t, min_items=1)
    >>> curve["peak_count"], curve["counts"]
    (1, [1, 2, 3, 4])
    """
    ids, counts = traj.ids, traj.counts
    if ids.size == 0:
        return {
            "peak_count": None,
            "count_at_50pct_gain": None,
            "count_at_90pct_gain": None,
            "min_items": min_items,
            "counts": [],
            "gain": [],
            "items": [],
        }
    # Collapse duplicate (id, count) records to the last one (records are sorted).
    keep = np.ones(ids.size, dtype=bool)
    keep[:-1] = (ids[1:] != ids[:-1]) | (counts[1:] != counts[:-1])
    kept = np.flatnonzero(keep)
    ids, counts = ids[kept], counts[kept]
    last = np.ones(ids.size, dtype=bool)
    last[:-1] = ids[1:] != ids[:-1]
    item_of_row = np.cumsum(np.concatenate([[True], ids[1:] != ids[:-1]])) - 1
    final = kept[last]  # each item's last record, in traj.rows
    # Row by row, in blocks of records (float64 copies of a block only): the same values as
    # over all rows at once, in bounded memory.
    cosine = np.empty(ids.size, dtype=np.float64)
    block = 1 << 16
    for a in range(0, ids.size, block):
        rows = traj.rows[kept[a : a + block]].astype(np.float64)
        reference = traj.rows[final[item_of_row[a : a + block]]].astype(np.float64)
        norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(reference, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            cosine[a : a + block] = np.where(norms > 0, (rows * reference).sum(axis=1) / norms, 0.0)
    step = np.flatnonzero(~last)  # record k -> k + 1 of the same item
    start, end = counts[step], counts[step + 1]
    per_interaction = (cosine[step + 1] - cosine[step]) / (end - start)
    top = int(end.max()) + 2
    gain_sum = np.zeros(top)
    covering = np.zeros(top)
    np.add.at(gain_sum, start + 1, per_interaction)
    np.add.at(gain_sum, end + 1, -per_interaction)
    np.add.at(covering, start + 1, 1.0)
    np.add.at(covering, end + 1, -1.0)
    gain_sum, covering = np.cumsum(gain_sum)[1:-1], np.cumsum(covering)[1:-1].round()
    n_items = int(last.sum())
    floor = max(10, n_items // 50) if min_items is None else int(min_items)
    grid = np.arange(1, top - 1)
    valid = covering >= max(floor, 1)
    mean = np.where(valid, gain_sum / np.maximum(covering, 1), np.nan)
    peak = int(grid[valid][np.argmax(mean[valid])]) if valid.any() else None
    reach = {}
    if valid.any():
        cumulative = np.cumsum(np.where(valid, mean, 0.0))
        total = float(cumulative[-1])
        for share in (50, 90):
            hit = np.flatnonzero(cumulative >= share / 100 * total)
            reach[share] = int(grid[hit[0]]) if total > 0 and hit.size else None
    return {
        "peak_count": peak,
        "count_at_50pct_gain": reach.get(50),
        "count_at_90pct_gain": reach.get(90),
        "min_items": floor,
        "counts": grid[valid].tolist(),
        "gain": finite(mean[valid]),
        "items": covering[valid].astype(np.int64).tolist(),
    }


def analyse_mode(
    trainer: Trainer,
    monitor: Any,
    alpha: float,
    seed: int,
    fresh_model: Callable[[], Model],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(metrics, results)`` for one mode: metrics are JSON-safe, results feed the figures.

    ``fresh_model()`` builds an untrained model with the trainer's options (initial rows)."""
    model: Any = trainer.serving_model
    if not isinstance(model, embcore._core.FieldModel):
        model = model.gather()  # a ShardedModel: its rows in one process, for the analyses
    item_table = trainer.item_table(model)
    meta = item_table.metadata()
    popularity = (meta["ids"], meta["interactions"].astype(np.int64))
    traj = with_initial_rows(analysis.Trajectories.from_monitor(monitor), trainer, fresh_model)
    alphas = tuple(sorted({*ALPHAS, alpha}))
    mat = analysis.maturity(traj, alpha=alphas, popularity=popularity)
    peak = analysis.learning_peak(traj)
    curve = learning_curve(traj)
    norms = analysis.norm_popularity(
        trainer.item_embeddings(model),
        popularity,
        users=trainer.user_embeddings(model),
        seed=seed,
    )
    level = mat.level(alpha).overall
    shown = _downsample_curve(curve["counts"], curve["gain"], weights=curve["items"])
    metrics: dict[str, Any] = {
        "events": trainer.events_consumed,
        "items": len(item_table),
        "evicted_items": trainer.evicted,
        "users": len(trainer.user_table(model)),
        "publishes": trainer.publishes,
        "train_seconds": round(trainer.train_seconds, 3),
        "tracked_items": traj.n_items,
        "trajectory_records": len(traj),
        "maturity": {
            "alpha": alpha,
            "reference": mat.reference,
            "median_interactions": level.median,
            "mature_share": finite(level.mature_share),
            "n_items": level.n_items,
            "n_censored": level.n_censored,
            "quantiles": level.quantiles,
            "km": level.km,
            "n_excluded": mat.n_excluded,
            "by_alpha": {
                f"{lvl.alpha:g}": {
                    "median_interactions": lvl.overall.median,
                    "mature_share": finite(lvl.overall.mature_share),
                }
                for lvl in mat.levels
            },
            "by_popularity": [
                {
                    "bucket": b.bucket,
                    "popularity_low": b.popularity_low,
                    "popularity_high": b.popularity_high,
                    "median_interactions": b.curve.median,
                    "mature_share": finite(b.curve.mature_share),
                }
                for b in mat.level(alpha).by_popularity
            ],
        },
        "learning_peak_interactions": curve["peak_count"],
        "learning_peak": {
            "definition": "argmax of the mean alignment gain per interaction G(n), over counts "
            "covered by at least min_items items",
            "peak_count": curve["peak_count"],
            "count_at_50pct_gain": curve["count_at_50pct_gain"],
            "count_at_90pct_gain": curve["count_at_90pct_gain"],
            "min_items": curve["min_items"],
            "curve": {"counts": shown["counts"], "gain_per_interaction": shown["values"][0]},
            "analysis_learning_peak": {
                "peak_count": peak.peak_count,
                "peak_count_median": peak.peak_count_median,
                "drift_peak_count": peak.drift_peak_count,
                "note": "embcore.analysis.learning_peak: gain between consecutive records "
                "attributed to the later count (not per interaction)",
            },
        },
        "norm_quantiles": {
            "mean": finite(norms.norms.mean),
            "p50": finite(norms.norms.p50),
            "p90": finite(norms.norms.p90),
            "p99": finite(norms.norms.p99),
            "max": finite(norms.norms.max),
        },
        "norm_popularity_spearman": finite(norms.spearman),
        "norm_popularity": {
            "loglog_slope": finite(norms.loglog_slope),
            "by_decile": [
                {
                    "bucket": b.bucket,
                    "popularity_low": b.popularity_low,
                    "popularity_high": b.popularity_high,
                    "norm_p50": finite(b.norms.p50),
                    "norm_p90": finite(b.norms.p90),
                }
                for b in norms.by_decile
            ],
            "retrieval": None if norms.retrieval is None else norms.retrieval.to_dict(),
        },
    }
    return metrics, {"maturity": mat, "learning_peak": peak, "norms": norms, "curve": curve}


def analyse_modes(
    trainers: Mapping[str, Trainer], alpha: float, seed: int, fresh_model: Callable[[], Model]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """:func:`analyse_mode` for every mode (its monitor is ``trainer.monitor``):
    ``({mode: metrics}, {mode: results})``."""
    per_mode: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    for mode, trainer in trainers.items():
        per_mode[mode], results[mode] = analyse_mode(
            trainer, trainer.monitor, alpha, seed, fresh_model
        )
    return per_mode, results


def _ratio(numerator: Any, denominator: Any) -> float | None:
    if numerator is None or denominator is None or not denominator:
        return None
    value = float(numerator) / float(denominator)
    return value if math.isfinite(value) else None


def comparison(modes: Mapping[str, Any]) -> dict[str, Any]:
    """Ratios of the realtime mode's headline numbers to the batch mode's (None without both)."""
    rt, batch = modes.get("realtime"), modes.get("batch")
    if rt is None or batch is None:
        return {
            "maturity_ratio_realtime_over_batch": None,
            "norm_p99_ratio_batch_over_realtime": None,
            "note": "needs both the realtime and the batch mode",
        }
    return {
        "maturity_ratio_realtime_over_batch": _ratio(
            rt["maturity"]["median_interactions"], batch["maturity"]["median_interactions"]
        ),
        "norm_p99_ratio_batch_over_realtime": _ratio(
            batch["norm_quantiles"]["p99"], rt["norm_quantiles"]["p99"]
        ),
        "learning_peak_ratio_realtime_over_batch": _ratio(
            rt["learning_peak_interactions"], batch["learning_peak_interactions"]
        ),
        "ctr_lift_realtime_over_batch": _ratio(rt["engagement"]["ctr"], batch["engagement"]["ctr"]),
        "fresh_ctr_lift_realtime_over_batch": _ratio(
            rt["engagement"]["fresh_ctr"], batch["engagement"]["fresh_ctr"]
        ),
        "fresh_play_rate_lift_realtime_over_batch": _ratio(
            rt["engagement"]["fresh_play_rate"], batch["engagement"]["fresh_play_rate"]
        ),
    }


def proc_bytes(path: str, field: str, text: str | None = None) -> int | None:
    r"""The ``field: N kB`` line of a /proc file (or of ``text``), in bytes; None where there
    is no such file or line.

    >>> proc_bytes("", "VmHWM", "VmPeak:  10 kB\nVmHWM:   2048 kB\n")
    2097152
    >>> proc_bytes("/nonexistent/status", "VmHWM") is None
    True
    """
    if text is None:
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            return None
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == field:
            parts = rest.split()
            if parts and parts[0].isdigit():
                return int(parts[0]) * 1024
    return None


def peak_rss() -> int | None:
    """The process's peak resident memory so far, in bytes (None where unknown).

    Linux: ``VmHWM``, this process image's own high-water mark (``ru_maxrss`` also keeps the
    peak of the parent that spawned it, carried across exec); elsewhere ``ru_maxrss``."""
    peak = proc_bytes("/proc/self/status", "VmHWM")
    if peak is not None:
        return peak
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(max_rss) if sys.platform == "darwin" else int(max_rss) * 1024
