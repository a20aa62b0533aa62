"""Streaming loaders that replay real interaction logs as time-ordered event chunks.

Supported logs: MovieLens (``ratings.csv``, ml-100k ``u.data``, ml-1m/10m ``ratings.dat``),
KuaiRand and KuaiRec short-video logs, and any CSV or Parquet file described by a
:class:`ColumnMap`. Files are read in bounded-memory chunks with pyarrow's streaming readers and
come out as :class:`EventChunk` objects (numpy arrays) in time order, while a :class:`LoadReport`
counts every row that was read, dropped as malformed or duplicate, or found out of time order.

>>> import tempfile, pathlib
>>> from embcore.datasets import open_log, synthetic_log
>>> path = synthetic_log(pathlib.Path(tempfile.mkdtemp()) / "ratings.csv", "movielens", 100)
>>> log = open_log(path)
>>> sum(len(chunk) for chunk in log), log.format, log.report.malformed_rows
(100, 'movielens', 0)
"""

from __future__ import annotations

import hashlib
import math
import os
import shlex
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from embcore import _core, errors
from embcore.errors import shown as _shown

__all__ = [
    "FORMATS",
    "DEFAULT_MAX_BAD_ROWS",
    "SYNTHETIC_COLUMNS",
    "ColumnMap",
    "DatasetError",
    "EventChunk",
    "EventLog",
    "LoadReport",
    "LogWarning",
    "RowIssue",
    "TimeProfile",
    "hash_ids",
    "open_log",
    "read_events",
    "synthetic_log",
]

FormatName = Literal[
    "auto",
    "movielens",
    "movielens-100k",
    "movielens-dat",
    "kuairand",
    "kuairec",
    "csv",
    "parquet",
]
SortPolicy = Literal["auto", "require", "memory"]
TimeUnit = Literal["s", "ms", "us", "ns"]
LabelRule = float | Callable[[npt.NDArray[np.float64]], npt.ArrayLike] | None

FORMATS: tuple[str, ...] = (
    "movielens",
    "movielens-100k",
    "movielens-dat",
    "kuairand",
    "kuairec",
    "csv",
    "parquet",
)
MAX_EXAMPLES = 5
DEFAULT_MAX_BAD_ROWS = "1%"
"""Malformed rows a log may have before reading fails: 1% of the rows read (at least 10)."""
_MIN_BAD_ROWS = 10
_MAX_LINE_BYTES = 1 << 30  # the longest line the text reader grows its blocks to hold
_SAMPLE_TIMES = 1 << 21  # event times the first pass keeps for --period auto
_SORT_BYTES_PER_ROW = 64  # memory of one row sorted in memory (all columns, lines, order)
"""How many example rows (line number and reason) a :class:`LoadReport` keeps per kind."""

_NS_PER_UNIT: dict[str, int] = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_NS_PER_SECOND = 1_000_000_000
_MAX_WEIGHT = float(_core.MAX_WEIGHT)
_INT64_MAX = np.iinfo(np.int64).max
_UINT64_MAX_TEXT = "18446744073709551615"
_MIN_BLOCK_BYTES = 1 << 16  # pyarrow CSV block size floor; tests lower it to force many blocks
_MAX_BLOCK_BYTES = 1 << 26
_BYTES_PER_ROW_GUESS = 64
_SNIFF_BYTES = 1 << 16
_DAT_SEPARATOR = "::"
_DAT_FIELD = "line"
# A byte that never occurs in ratings.dat: the whole line lands in one column, split afterwards.
_DAT_READ_DELIMITER = "\x1f"

_FLOAT_PATTERN = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
_SIGNED_INT_PATTERN = r"^[+-]?[0-9]+$"
_DIGITS_PATTERN = r"^[0-9]+$"
_MISSING_TEXT = ("", "nan", "na", "null", "none")

# ISO-8601 date or date-time text (``2020-09-13``, ``2020-09-13 12:27:31``,
# ``2020-09-13T12:27:31.123Z``, ``...+02:00``); the reader's cast checks the calendar.
_ISO_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]{1,9})?)?)?"
    r"(?:Z|[+-][0-9]{2}:?[0-9]{2})?$"
)
_ISO_FIELDS = (
    r"^(?P<y>[0-9]{4})-(?P<mo>[0-9]{2})-(?P<d>[0-9]{2})(?:[T ](?P<h>[0-9]{2}):(?P<mi>[0-9]{2})"
    r"(?::(?P<s>[0-9]{2})(?:[.,](?P<f>[0-9]{1,9}))?)?)?(?P<z>Z|[+-][0-9]{2}:?[0-9]{2})?$"
)
_TRUE_FALSE = ("true", "false")
# A float64 holds every integer up to 2**53 exactly; a larger id written as a float has lost
# digits (two ids can have become one).
_EXACT_FLOAT_IDS = 2.0**53

# Reason codes for a value that cannot be used.
_OK, _MISSING, _NON_NUMERIC, _NEGATIVE, _NOT_INTEGER, _OUT_OF_RANGE, _INEXACT, _BAD_DATE = range(8)
_REASONS = {
    _MISSING: "missing value",
    _NON_NUMERIC: "non-numeric value",
    _NEGATIVE: "negative id",
    _NOT_INTEGER: "non-integer id",
    _OUT_OF_RANGE: "value out of range",
    _INEXACT: "id above 2**53 written as a float (its last digits are lost)",
    _BAD_DATE: "ISO-8601 time that is not a calendar date",
}


class DatasetError(errors.DatasetError):
    """A log cannot be read: missing file or column, wrong column kind, unsorted, damaged,
    too many malformed rows, or empty (an :class:`embcore.errors.DatasetError`).

    The message is one line naming the file, the column, line or byte at fault, and the remedy
    (in command-line flags; the keyword of :func:`open_log` has the same name).

    >>> raise DatasetError("ratings.csv: column 'rating' is missing")
    Traceback (most recent call last):
    ...
    embcore.datasets.DatasetError: ratings.csv: column 'rating' is missing
    """


class LogWarning(UserWarning):
    """A log reads, but probably not as meant (event times in the wrong unit)."""


@dataclass(frozen=True)
class ColumnMap:
    """Which columns of a generic CSV or Parquet log hold the event fields.

    Parameters
    ----------
    user, item, time
        Column names of the user id, item id (non-negative integers) and event time.
    label
        Column holding the label (any number). ``None`` means implicit feedback: every row is a
        positive event with label 1.
    label_rule
        ``None`` uses the label value as is; a number ``t`` gives ``label = value >= t``; a callable
        receives the label values (float64 array) and returns the labels.
    weight
        Optional column of per-event weights (float32 in the output).
    time_unit
        Unit of a numeric time column: ``"s"``, ``"ms"``, ``"us"`` or ``"ns"``. Parquet timestamp
        and date columns carry their own unit, and this is ignored for them.
    keep
        Extra numeric columns copied into :attr:`EventChunk.raw` for reporting.

    Examples
    --------
    >>> ColumnMap(user="uid", item="pid", time="ts", label="watch", label_rule=0.5, time_unit="ms")
    ... # doctest: +ELLIPSIS
    ColumnMap(user='uid', item='pid', time='ts', label='watch', label_rule=0.5, ...)
    """

    user: str
    item: str
    time: str
    label: str | None = None
    label_rule: LabelRule = None
    weight: str | None = None
    time_unit: TimeUnit = "s"
    keep: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.time_unit not in _NS_PER_UNIT:
            raise ValueError(
                f"time_unit must be one of {sorted(_NS_PER_UNIT)}, got {self.time_unit!r}"
            )
        if self.label is None and self.label_rule is not None:
            raise ValueError("label_rule needs a label column: pass label='column name'")
        if isinstance(self.keep, str):
            raise ValueError(f"keep must be a tuple of column names, got the string {self.keep!r}")

    @classmethod
    def parse(cls, text: str) -> ColumnMap:
        """The map of ``--columns``: ``user=COL,item=COL,time=COL[,label=COL][,weight=COL]``.

        >>> ColumnMap.parse("user=uid,item=vid,time=ts,label=click")
        ... # doctest: +ELLIPSIS
        ColumnMap(user='uid', item='vid', time='ts', label='click', ...)
        >>> ColumnMap.parse("user=uid,item=vid")
        Traceback (most recent call last):
        ...
        ValueError: --columns needs user=, item= and time= (missing time), got 'user=uid,item=vid'
        """
        roles: dict[str, str] = {}
        allowed = ("user", "item", "time", "label", "weight")
        for part in (p.strip() for p in str(text).split(",")):
            if not part:
                continue
            role, eq, column = (x.strip() for x in part.partition("="))
            if not eq or not column or role not in allowed:
                raise ValueError(
                    f"--columns takes ROLE=COLUMN pairs with ROLE one of {', '.join(allowed)}, "
                    f"got {part!r} in {text!r}"
                )
            if role in roles:
                raise ValueError(f"--columns names {role}= twice in {text!r}")
            roles[role] = column
        by_column: dict[str, str] = {}
        for role, column in roles.items():
            if column in by_column:
                raise ValueError(
                    f"--columns gives column {column!r} two roles ({by_column[column]}= and "
                    f"{role}=) in {text!r}; each role needs its own column"
                )
            by_column[column] = role
        missing = [r for r in ("user", "item", "time") if r not in roles]
        if missing:
            raise ValueError(
                f"--columns needs user=, item= and time= (missing {', '.join(missing)}), "
                f"got {text!r}"
            )
        return cls(
            user=roles["user"],
            item=roles["item"],
            time=roles["time"],
            label=roles.get("label"),
            weight=roles.get("weight"),
        )

    def describe(self) -> dict[str, Any]:
        """The map as plain values (``metrics.json``): roles, time unit, label rule.

        >>> ColumnMap("u", "i", "t", label="y", label_rule=0.5).describe()["label_rule"]
        'label >= 0.5'
        """
        rule = self.label_rule
        return {
            "user": self.user,
            "item": self.item,
            "time": self.time,
            "label": self.label,
            "weight": self.weight,
            "time_unit": self.time_unit,
            "label_rule": (
                None
                if rule is None
                else "callable"
                if callable(rule)
                else f"label >= {float(rule):g}"
            ),
        }

    def required_columns(self) -> list[str]:
        """Names of the columns that every row must have, in a stable order.

        >>> ColumnMap(user="u", item="i", time="t", label="y").required_columns()
        ['u', 'i', 't', 'y']
        """
        names = [self.user, self.item, self.time]
        names += [c for c in (self.label, self.weight) if c is not None]
        return list(dict.fromkeys(names))


SYNTHETIC_COLUMNS = ColumnMap(
    user="user_id", item="item_id", time="time_ms", label="label", weight="weight", time_unit="ms"
)
"""The :class:`ColumnMap` of the generic ``"csv"`` and ``"parquet"`` files :func:`synthetic_log`
writes."""

_MOVIELENS_NAMES = ["userId", "movieId", "rating", "timestamp"]
_MOVIELENS = ColumnMap(
    user="userId", item="movieId", time="timestamp", label="rating", label_rule=4.0, time_unit="s"
)
_KUAIRAND_NAMES = [
    "user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like", "is_follow",
    "is_comment", "is_forward", "is_hate", "long_view", "play_time_ms", "duration_ms",
    "profile_stay_time", "comment_stay_time", "is_profile_enter", "is_rand", "tab",
]  # fmt: skip
_KUAIRAND = ColumnMap(
    user="user_id",
    item="video_id",
    time="time_ms",
    label="is_click",
    time_unit="ms",
    keep=("is_like", "long_view", "play_time_ms", "duration_ms"),
)
_KUAIREC_NAMES = [
    "user_id", "video_id", "play_duration", "video_duration", "time", "date", "timestamp",
    "watch_ratio",
]  # fmt: skip
_KUAIREC = ColumnMap(
    user="user_id",
    item="video_id",
    time="timestamp",
    label="watch_ratio",
    label_rule=2.0,
    time_unit="s",
    keep=("play_duration", "video_duration"),
)
_PRESETS: dict[str, ColumnMap] = {
    "movielens": _MOVIELENS,
    "movielens-100k": _MOVIELENS,
    "movielens-dat": _MOVIELENS,
    "kuairand": _KUAIRAND,
    "kuairec": _KUAIREC,
}


@dataclass
class EventChunk:
    """A run of events in time order, as equal-length numpy arrays.

    Attributes
    ----------
    users, items : numpy.ndarray of uint64
    labels : numpy.ndarray of float32
    timestamps : numpy.ndarray of int64
        Event time in whole seconds (floored).
    weights : numpy.ndarray of float32 or None
    raw : dict of str to numpy.ndarray of float64
        Extra columns kept for reporting (e.g. ``rating``, ``watch_ratio``); NaN where missing.

    Examples
    --------
    >>> chunk = EventChunk(
    ...     users=np.array([1, 2], np.uint64), items=np.array([7, 7], np.uint64),
    ...     labels=np.array([1, 0], np.float32), timestamps=np.array([10, 12], np.int64))
    >>> len(chunk), chunk.items.dtype
    (2, dtype('uint64'))
    """

    users: npt.NDArray[np.uint64]
    items: npt.NDArray[np.uint64]
    labels: npt.NDArray[np.float32]
    timestamps: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float32] | None = None
    raw: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.users)
        arrays: dict[str, Any] = {
            "items": self.items,
            "labels": self.labels,
            "timestamps": self.timestamps,
        }
        if self.weights is not None:
            arrays["weights"] = self.weights
        arrays.update({f"raw[{name!r}]": values for name, values in self.raw.items()})
        for name, values in arrays.items():
            if len(values) != n:
                raise ValueError(f"users has {n} elements but {name} has {len(values)}")

    def __len__(self) -> int:
        return len(self.users)

    @classmethod
    def concat(cls, chunks: Sequence[EventChunk]) -> EventChunk:
        """Join chunks end to end (an empty sequence gives an empty chunk).

        >>> EventChunk.concat([]).timestamps.dtype
        dtype('int64')
        """
        if not chunks:
            return cls(
                users=np.empty(0, np.uint64),
                items=np.empty(0, np.uint64),
                labels=np.empty(0, np.float32),
                timestamps=np.empty(0, np.int64),
            )
        with_weights = chunks[0].weights is not None
        return cls(
            users=np.concatenate([c.users for c in chunks]),
            items=np.concatenate([c.items for c in chunks]),
            labels=np.concatenate([c.labels for c in chunks]),
            timestamps=np.concatenate([c.timestamps for c in chunks]),
            weights=(
                np.concatenate([c.weights for c in chunks if c.weights is not None])
                if with_weights
                else None
            ),
            raw={k: np.concatenate([c.raw[k] for c in chunks]) for k in chunks[0].raw},
        )


@dataclass
class RowIssue:
    """One example of a dropped or flagged row.

    ``line`` is the 1-based physical line in a text file (the header is line 1), or the 1-based
    row number in a Parquet file.

    >>> RowIssue(3, "missing value in column 'rating'")
    RowIssue(line=3, reason="missing value in column 'rating'")
    """

    line: int
    reason: str


@dataclass
class LoadReport:
    """What happened to the rows of a log, filled in while it streams.

    Invariant once :attr:`complete`:
    ``rows_read == events_out + malformed_rows + duplicate_rows`` (when no ``limit`` cut the
    stream short, that covers every data row in the file).

    Attributes
    ----------
    rows_read : int
        Data rows read from the file (header excluded).
    events_out : int
        Events delivered in :class:`EventChunk` objects.
    malformed_rows, malformed_examples
        Rows dropped because a required value is missing, unparseable, negative (ids) or the line
        has the wrong number of fields; the first few with line and reason.
    duplicate_rows, duplicate_examples
        Rows dropped because an earlier row has the same user, item and time (compared at the
        file's own time resolution); the first few.
    out_of_order_rows, out_of_order_examples
        Rows whose time is earlier than a row before them in the file.
    sorted_in_memory : bool
        Whether the log was sorted in memory (``sort="memory"``, or ``"auto"`` on an unsorted log).
    column_notes : dict of str to str
        Per source column: its role, and counts of values it lost.
    complete : bool
        The stream reached the end of the file or the ``limit``.

    Examples
    --------
    >>> LoadReport(path="ratings.csv", format="movielens").rows_read
    0
    """

    path: str
    format: str
    rows_read: int = 0
    events_out: int = 0
    malformed_rows: int = 0
    malformed_examples: list[RowIssue] = field(default_factory=list)
    duplicate_rows: int = 0
    duplicate_examples: list[RowIssue] = field(default_factory=list)
    out_of_order_rows: int = 0
    out_of_order_examples: list[RowIssue] = field(default_factory=list)
    sorted_in_memory: bool = False
    column_notes: dict[str, str] = field(default_factory=dict)
    complete: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-serialisable values.

        >>> LoadReport(path="x.csv", format="csv").to_dict()["malformed_examples"]
        []
        """
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                value = [{"line": issue.line, "reason": issue.reason} for issue in value]
            elif isinstance(value, dict):
                value = dict(value)
            out[f.name] = value
        return out

    def summary(self) -> str:
        """A short human-readable account, as the CLI prints it.

        >>> print(LoadReport(path="x.csv", format="csv").summary().splitlines()[0])
        x.csv (csv): 0 rows read, 0 events out
        """
        lines = [
            f"{self.path} ({self.format}): {self.rows_read} rows read, {self.events_out} events out"
        ]
        if self.sorted_in_memory:
            lines.append("  sorted by time in memory")
        for title, count, examples in (
            ("malformed rows dropped", self.malformed_rows, self.malformed_examples),
            ("duplicate rows dropped", self.duplicate_rows, self.duplicate_examples),
            ("rows out of time order", self.out_of_order_rows, self.out_of_order_examples),
        ):
            if count:
                lines.append(f"  {title}: {count}")
                lines += [f"    line {issue.line}: {issue.reason}" for issue in examples]
        lines += [f"  {name}: {note}" for name, note in self.column_notes.items()]
        if not self.complete:
            lines.append("  (stream not finished)")
        return "\n".join(lines)

    def notice(self) -> str | None:
        """One line on the rows that did not go through as they were, or None when all did.

        >>> report = LoadReport(path="x.csv", format="csv", rows_read=10, events_out=9)
        >>> report.malformed_rows, report.malformed_examples = 1, [RowIssue(3, "missing value")]
        >>> print(report.notice())  # doctest: +ELLIPSIS
        x.csv: 1 malformed row dropped (first: line 3: missing value); see log_report in ...
        """
        return load_notice(self.to_dict())

    def _reset(self) -> None:
        fresh = LoadReport(path=self.path, format=self.format)
        for f in fields(self):
            setattr(self, f.name, getattr(fresh, f.name))

    def _add(self, kind: str, issues: Sequence[RowIssue], count: int) -> None:
        setattr(self, f"{kind}_rows", getattr(self, f"{kind}_rows") + count)
        examples: list[RowIssue] = getattr(self, f"{kind}_examples")
        examples.extend(issues[: MAX_EXAMPLES - len(examples)])


def load_notice(report: Mapping[str, Any]) -> str | None:
    """:meth:`LoadReport.notice` from the report's dict (``metrics.json``'s ``log_report``)."""
    parts: list[str] = []
    for key, what in (
        ("malformed", "malformed row{s} dropped"),
        ("duplicate", "duplicate row{s} dropped"),
        ("out_of_order", "row{s} out of time order"),
    ):
        count = int(report.get(f"{key}_rows") or 0)
        if not count:
            continue
        text = f"{count:,} " + what.format(s="s" if count != 1 else "")
        if key == "out_of_order" and report.get("sorted_in_memory"):
            text += " (sorted in memory)"
        examples = report.get(f"{key}_examples") or []
        if examples:
            first = examples[0]
            text += f" (first: line {first['line']}: {first['reason']})"
        parts.append(text)
    if not parts:
        return None
    return f"{report.get('path')}: {', '.join(parts)}; see log_report in metrics.json"


@dataclass
class TimeProfile:
    """The event times of a log, as the loader's first pass over the time column saw them
    (``embcore replay --period auto`` chooses its period from it).

    Attributes
    ----------
    events : int
        Rows with a usable time (the first ``limit`` in time order, with a limit).
    first, last : int
        Earliest and latest event time, whole seconds.
    sample : numpy.ndarray of int64
        Sorted event times (seconds) of an even subsample of the rows (all of them up to
        about two million rows), so ``sample.size / events`` is the sampling rate.

    Examples
    --------
    >>> TimeProfile(events=3, first=0, last=9, sample=np.array([0, 5, 9])).sample.size
    3
    """

    events: int
    first: int
    last: int
    sample: npt.NDArray[np.int64]


def _bad_rows_allowed(spec: int | str, rows_read: int) -> int:
    """Malformed rows allowed among ``rows_read``: a count, or ``"P%"`` of the rows read (at
    least :data:`_MIN_BAD_ROWS`)."""
    if isinstance(spec, str):
        share = float(spec.strip().rstrip("%")) / 100.0
        return max(_MIN_BAD_ROWS, math.ceil(share * rows_read))
    return int(spec)


def _check_bad_rows_spec(spec: Any) -> int | str:
    problem = f"max_bad_rows must be a count >= 0 or a share such as '1%', got {spec!r}"
    if isinstance(spec, bool):
        raise ValueError(problem)
    if isinstance(spec, int | np.integer):
        if spec < 0:
            raise ValueError(problem)
        return int(spec)
    if isinstance(spec, str) and spec.strip().endswith("%"):
        try:
            share = float(spec.strip()[:-1])
        except ValueError:
            raise ValueError(problem) from None
        if 0 <= share <= 100:
            return spec.strip()
    raise ValueError(problem)


def _available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):
        return None


def _default_max_sort_rows() -> int:
    """The largest log ``sort="auto"`` sorts in memory: 50 M rows, or fewer when half the
    available memory cannot hold them."""
    available = _available_memory()
    if available is None:
        return 50_000_000
    return max(1_000_000, min(50_000_000, available // 2 // _SORT_BYTES_PER_ROW))


# ----------------------------------------------------------------------------------------------
# Resolving a path and a format into a source description
# ----------------------------------------------------------------------------------------------


@dataclass
class _Source:
    path: Path
    format: str
    kind: Literal["csv", "dat", "parquet"]
    mapping: ColumnMap
    file_columns: list[str]
    delimiter: str = ","
    header: bool = True
    preset: bool = False  # preset keep-columns are optional; a user's are required
    longest_line: int = 0  # bytes, among the first lines: a pyarrow block must hold a whole line
    keep: tuple[str, ...] = ()
    label_range: tuple[float, float] | None = None  # labels outside it fail the read
    hash_ids: bool = False  # user and item ids read as 64-bit hashes of their text

    @property
    def first_data_line(self) -> int:
        return 2 if self.kind == "csv" and self.header else 1

    def needed_columns(self) -> list[str]:
        names = self.mapping.required_columns() + list(self.keep)
        return list(dict.fromkeys(names))


def _fail(path: Path, message: str) -> DatasetError:
    return DatasetError(f"{path}: {message}")


def _is_parquet(path: Path) -> bool:
    if path.suffix.lower() in (".parquet", ".pq"):
        return True
    with open(path, "rb") as handle:
        return handle.read(4) == b"PAR1"


def _sniff_lines(path: Path) -> list[str]:
    """The first complete lines of a (possibly compressed) text file, without a UTF-8
    byte-order mark."""
    try:
        with pa.input_stream(str(path)) as stream:  # detects .gz/.bz2/.zst from the name
            head = stream.read(_SNIFF_BYTES)
    except (OSError, pa.ArrowException) as exc:
        raise _fail(path, f"cannot be read: {_damaged(exc, path)}") from None
    text = head.decode("utf-8-sig", errors="replace")
    lines = text.split("\n")
    if len(head) == _SNIFF_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last one may be cut
    return [line.rstrip("\r") for line in lines]


def _damaged(exc: BaseException, path: Path) -> str:
    """The reader's complaint about damaged bytes, with the fix (and, for a gzip file, the
    command that checks it).

    >>> _damaged(OSError("bad CRC"), Path("log.parquet"))
    'the file is truncated or damaged (bad CRC); download or export it again'
    >>> _damaged(OSError("truncated"), Path("log.csv.gz")).endswith("gzip -t log.csv.gz checks it)")
    True
    """
    complaint = str(exc).splitlines()[0] if str(exc) else repr(exc)
    fix = "download or export it again"
    if path.suffix.lower() == ".gz":
        fix += f" (gzip -t {shlex.quote(str(path))} checks it)"
    return f"the file is truncated or damaged ({complaint}); {fix}"


def _hint(exc: BaseException) -> str:
    """The fix for a reader complaint that has a known one (text that is not UTF-8)."""
    if "invalid UTF8" in str(exc):
        return (
            "; the file is not UTF-8 text: convert it, e.g. iconv -f latin1 -t utf-8 FILE > "
            "FILE.utf8.csv"
        )
    return ""


def _looks_numeric(fields_: list[str]) -> bool:
    return all(f.strip().lstrip("+-").replace(".", "", 1).isdigit() for f in fields_)


def _split_header(line: str, delimiter: str) -> list[str]:
    return [name.strip().strip('"') for name in line.split(delimiter)]


_GENERIC_NAMES: dict[str, tuple[tuple[str, ...], ...]] = {
    # role: tiers of header names (case ignored); the first tier with a hit decides, and two
    # hits in one tier are ambiguous (--columns is then needed).
    "user": (("user", "user_id", "userid", "uid"),),
    "item": (("item", "item_id", "itemid", "iid"),),
    "time": (
        ("time", "timestamp", "ts"),
        ("time_ms", "timestamp_ms", "ts_ms", "event_time", "datetime"),
    ),
    # A rating or click column is the label, not a column to ignore: a header
    # user,item,time,rating read every row as a positive.
    "label": (("label",), ("rating", "click", "clicked", "is_click")),
    "weight": (("weight",),),
}
_UNIT_SUFFIXES = {"_ms": "ms", "_us": "us", "_ns": "ns"}
_COLUMNS_HINT = (
    "pass --columns user=COL,item=COL,time=COL[,label=COL] (Python: columns=ColumnMap(...))"
)


def _preset_from_names(names: Sequence[str]) -> str | None:
    present = set(names)
    if {"userId", "movieId", "rating", "timestamp"} <= present:
        return "movielens"
    if {"user_id", "video_id", "time_ms", "is_click"} <= present:
        return "kuairand"
    if {"user_id", "video_id", "timestamp", "watch_ratio"} <= present:
        return "kuairec"
    return None


def _generic_from_names(names: Sequence[str]) -> ColumnMap | None:
    """The map of a generic log whose header names its columns plainly (``user``, ``item``,
    ``time`` and optionally ``label``, ``weight``; ``user_id``, ``timestamp``, ``time_ms``
    (in ms), ``rating``... too)."""
    lowered = {name.lower(): name for name in names}
    found: dict[str, str] = {}
    for role, tiers in _GENERIC_NAMES.items():
        for candidates in tiers:
            hits = [lowered[c] for c in candidates if c in lowered]
            if len(hits) > 1:
                return None
            if hits:
                found[role] = hits[0]
                break
    if not {"user", "item", "time"} <= set(found):
        return None
    suffix = found["time"].lower()[-3:]
    return ColumnMap(
        user=found["user"],
        item=found["item"],
        time=found["time"],
        label=found.get("label"),
        weight=found.get("weight"),
        time_unit=_UNIT_SUFFIXES.get(suffix, "s"),  # type: ignore[arg-type]
    )


def _resolve(
    path: Path,
    format: str,
    columns: ColumnMap | None,
    label_threshold: float | None,
    time_unit: str | None = None,
    separator: str | None = None,
) -> _Source:
    if format != "auto" and format not in FORMATS:
        raise ValueError(f"--format must be 'auto' or one of {', '.join(FORMATS)}, got {format!r}")
    if time_unit is not None and time_unit not in _NS_PER_UNIT:
        raise ValueError(f"--time-unit must be one of s, ms, us, ns, got {time_unit!r}")
    if separator is not None and (not isinstance(separator, str) or len(separator) != 1):
        raise ValueError(f"--sep must be one character, got {separator!r}")
    if not path.exists():
        raise _fail(path, "no such file")
    if not path.is_file():
        raise _fail(path, "is not a file")
    if path.stat().st_size == 0:
        raise _fail(path, "is empty (0 bytes)")
    parquet = format == "parquet" or (format == "auto" and _is_parquet(path))
    if parquet:
        source = _resolve_parquet(path, format, columns)
    else:
        source = _resolve_text(path, format, columns, separator)
    mapping = source.mapping
    if label_threshold is not None and (
        isinstance(label_threshold, bool)
        or not isinstance(label_threshold, int | float | np.integer | np.floating)
        or not math.isfinite(float(label_threshold))
    ):
        raise ValueError(f"--label-threshold must be a finite number, got {label_threshold!r}")
    if label_threshold is not None and mapping.label is None:
        raise ValueError("--label-threshold needs a label column; this log's mapping has none")
    if label_threshold is not None or time_unit is not None:
        mapping = ColumnMap(
            user=mapping.user,
            item=mapping.item,
            time=mapping.time,
            label=mapping.label,
            label_rule=mapping.label_rule if label_threshold is None else float(label_threshold),
            weight=mapping.weight,
            time_unit=mapping.time_unit if time_unit is None else time_unit,  # type: ignore[arg-type]
            keep=mapping.keep,
        )
        source.mapping = mapping
    missing = [c for c in mapping.required_columns() if c not in source.file_columns]
    if not source.preset:
        missing += [c for c in mapping.keep if c not in source.file_columns]
    if missing:
        raise _fail(
            path,
            f"column {missing[0]!r} is missing (format {source.format!r}; "
            f"the file has columns {source.file_columns})",
        )
    source.keep = tuple(c for c in mapping.keep if c in source.file_columns)
    return source


def _resolve_parquet(path: Path, format: str, columns: ColumnMap | None) -> _Source:
    try:
        parquet = pq.ParquetFile(str(path), page_checksum_verification=True)
    except (pa.ArrowException, OSError) as exc:
        raise _fail(path, f"cannot be read as Parquet: {_damaged(exc, path)}") from None
    names = list(parquet.schema_arrow.names)
    _refuse_duplicate_names(path, names)
    if parquet.metadata.num_rows == 0:
        raise _fail(path, "has no rows")
    preset = False
    if columns is None:
        detected = format if format in _PRESETS else _preset_from_names(names)
        if detected is not None:
            columns, preset, format = _PRESETS[detected], True, detected
        else:
            columns = _generic_from_names(names)
            if columns is None:
                raise _fail(
                    path,
                    f"cannot tell which columns hold user, item and time (columns {names}); "
                    + _COLUMNS_HINT,
                )
    return _Source(
        path=path,
        format="parquet" if format == "auto" else format,
        kind="parquet",
        mapping=columns,
        file_columns=names,
        preset=preset,
    )


def _delimiter_name(delimiter: str) -> str:
    return "tab" if delimiter == "\t" else repr(delimiter)


def _guess_delimiter(line: str) -> str:
    counts = {d: line.count(d) for d in (",", "\t", ";", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _resolve_text(
    path: Path, format: str, columns: ColumnMap | None, separator: str | None = None
) -> _Source:
    lines = _sniff_lines(path)
    first = lines[0] if lines else ""
    rest = [line for line in lines[1:] if line.strip()]
    _refuse_non_text(path, first)
    if not first.strip() and not rest:
        raise _fail(path, "is empty (no lines)")
    longest = max(len(line.encode()) + 1 for line in lines)
    if format == "auto":
        format = _detect_text_format(path, first, columns, separator)
    if format == "parquet":
        raise _fail(path, "is not a Parquet file (it does not start with PAR1)")
    if format == "movielens-dat":
        return _Source(
            path=path,
            format=format,
            kind="dat",
            mapping=columns or _MOVIELENS,
            file_columns=_MOVIELENS_NAMES,
            header=False,
            preset=columns is None,
            longest_line=longest,
        )
    if format == "movielens-100k":
        delimiter, names, header = separator or "\t", _MOVIELENS_NAMES, False
        fields_ = first.split(delimiter)
        if len(fields_) != len(_MOVIELENS_NAMES):
            seen = _guess_delimiter(first)
            raise _fail(
                path,
                f"line 1 ({_shown(first, 80)}) does not have 4 fields separated by "
                f"{_delimiter_name(delimiter)}, but movielens-100k (u.data) is tab-separated "
                f"(user, item, rating, time); the line looks {seen!r}-separated: pass --sep "
                f"{seen!r}, or "
                "--format movielens for ratings.csv",
            )
    else:
        delimiter = separator or _guess_delimiter(first)
        fields_ = first.split(delimiter)
        header = not _looks_numeric(fields_)
        if header:
            names = _split_header(first, delimiter)
            _refuse_duplicate_names(path, names)
        elif format == "movielens" and len(fields_) == 4:
            names = _MOVIELENS_NAMES
        elif format == "kuairand" and len(fields_) == len(_KUAIRAND_NAMES):
            names = _KUAIRAND_NAMES
        elif format == "kuairec" and len(fields_) == len(_KUAIREC_NAMES):
            names = _KUAIREC_NAMES
        else:
            raise _fail(
                path,
                f"line 1 is not a header line ({_shown(first, 80)}); a {format!r} log needs a "
                "header naming its columns",
            )
        if len(names) == 1:
            seen = _guess_delimiter(first)
            raise _fail(
                path,
                f"line 1 has one field with separator {delimiter!r} ({_shown(first, 80)}); pass "
                f"--sep with the log's separator (it may be {seen!r})",
            )
    if header and not rest:
        raise _fail(path, "has a header line but no data rows")
    preset = False
    if columns is None:
        if format in _PRESETS:
            columns, preset = _PRESETS[format], True
        else:
            columns = _generic_from_names(names)
            if columns is None:
                raise _fail(
                    path,
                    f"cannot tell which columns hold user, item and time (the header has "
                    f"{names}); " + _COLUMNS_HINT,
                )
    return _Source(
        path=path,
        format=format,
        kind="csv",
        mapping=columns,
        file_columns=list(names),
        delimiter=delimiter,
        header=header,
        preset=preset,
        longest_line=longest,
    )


def _refuse_non_text(path: Path, first: str) -> None:
    """A Parquet file read as text, a binary file or JSON: say what it is and what to pass."""
    if first.startswith("PAR1"):
        raise _fail(path, "is a Parquet file, not text: pass --format parquet (or auto)")
    if "\x00" in first:
        raise _fail(
            path,
            f"line 1 has NUL bytes ({_shown(first, 40)}): this is a binary file, not a text "
            "log; embcore reads CSV/TSV (optionally .gz/.bz2/.zst) and Parquet",
        )
    if first.lstrip().startswith(("{", "[")):
        raise _fail(
            path,
            "looks like JSON; embcore reads CSV/TSV and Parquet logs: convert it first, e.g. "
            "python -c \"import pandas as pd; pd.read_json('LOG', lines=True)"
            ".to_parquet('LOG.parquet')\"",
        )


def _refuse_duplicate_names(path: Path, names: Sequence[str]) -> None:
    if "" in names:
        raise _fail(
            path,
            f"the header has an empty column name ({list(names)}): two separators in a row, "
            "or a separator at the end of line 1; fix the header (or pass --sep)",
        )
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise _fail(
                path,
                f"the header names column {name!r} twice ({list(names)}); rename one of them",
            )
        seen.add(name)


def _detect_text_format(
    path: Path, first: str, columns: ColumnMap | None, separator: str | None = None
) -> str:
    name = path.name.lower()
    if _DAT_SEPARATOR in first and separator is None:
        return "movielens-dat"
    if columns is not None:
        return "csv"
    if separator is None and (
        name.startswith("u.data")
        or ("\t" in first and len(first.split("\t")) == 4 and _looks_numeric(first.split("\t")))
    ):
        return "movielens-100k"
    delimiter = separator or _guess_delimiter(first)
    if separator is not None and separator not in first:
        seen = _guess_delimiter(first)
        raise _fail(
            path,
            f"line 1 ({_shown(first, 80)}) has no {_delimiter_name(separator)} (--sep); it looks "
            f"{_delimiter_name(seen)}-separated: pass --sep {_delimiter_name(seen)} or leave "
            "--sep out to detect it",
        )
    names = _split_header(first, delimiter)
    if not _looks_numeric(first.split(delimiter)):
        _refuse_duplicate_names(path, names)
    preset = _preset_from_names(names)
    if preset is not None:
        return preset
    if _generic_from_names(names) is not None:
        return "csv"
    if len(first.split(",")) == 4 and _looks_numeric(first.split(",")):
        return "movielens"  # ratings.csv written without its header line
    spaced = first.split(" ")
    if (
        separator is None
        and len(spaced) > 1
        and (_preset_from_names(spaced) or _generic_from_names(spaced))
    ):
        raise _fail(
            path,
            f"line 1 ({_shown(first, 80)}) looks space-separated: pass --sep space",
        )
    raise _fail(
        path,
        f"cannot detect the log format from the name and line 1 ({_shown(first, 80)}); pass "
        f"--format (one of {', '.join(FORMATS)}) and, for a generic log, --columns "
        "user=COL,item=COL,time=COL[,label=COL]",
    )


# ----------------------------------------------------------------------------------------------
# Reading raw batches (pyarrow streaming readers) with line numbers
# ----------------------------------------------------------------------------------------------


@dataclass
class _RawBatch:
    columns: dict[str, pa.Array]
    lines: npt.NDArray[np.int64]
    invalid: list[RowIssue]  # rows the CSV parser rejected, consumed before this batch's rows


def _iter_raw_batches(source: _Source, names: list[str], chunk_rows: int) -> Iterator[_RawBatch]:
    if source.kind == "parquet":
        yield from _iter_parquet(source, names, chunk_rows)
    else:
        yield from _iter_text(source, names, chunk_rows)


def _iter_parquet(source: _Source, names: list[str], chunk_rows: int) -> Iterator[_RawBatch]:
    start = 0
    try:
        # Pages whose writer stored a CRC are checked (a flipped byte fails the read); pages
        # written without one cannot be checked (docs/datasets.md, "Bad files").
        # pre_buffer=False: with it on, the reader kept whole row groups' compressed and
        # decoded buffers besides the batches (a 10M-event log: 151 MB of Arrow memory at
        # most, 55 MB without; the same speed on a local disk).
        parquet = pq.ParquetFile(
            str(source.path), pre_buffer=False, page_checksum_verification=True
        )
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=names):
            n = batch.num_rows
            columns = {name: batch.column(name) for name in names}
            yield _RawBatch(columns, np.arange(start + 1, start + n + 1, dtype=np.int64), [])
            start += n
    except (OSError, pa.ArrowException) as exc:
        raise _fail(source.path, f"after row {start:,}: {_damaged(exc, source.path)}") from None


def _iter_text(source: _Source, names: list[str], chunk_rows: int) -> Iterator[_RawBatch]:
    """Raw batches of a text log; a line longer than the block size restarts the read with
    larger blocks (up to 1 GiB), skipping what was already delivered."""
    block = min(max(chunk_rows * _BYTES_PER_ROW_GUESS, _MIN_BLOCK_BYTES), _MAX_BLOCK_BYTES)
    block = max(block, 4 * source.longest_line)
    delivered = source.first_data_line  # the first line not yet delivered
    while True:
        reader = _TextReader(source, names, block, delivered)
        try:
            for batch in reader:
                yield batch
                delivered = reader.next_line
            return
        except _LongLine:
            if block >= _MAX_LINE_BYTES:
                raise _fail(
                    source.path,
                    f"near line {reader.next_line:,}: a line is longer than "
                    f"{_MAX_LINE_BYTES >> 20:,} MiB; a log has one event per line: check the "
                    "file's line endings (\\n) or split that line",
                ) from None
            block = min(block * 4, _MAX_LINE_BYTES)


class _LongLine(Exception):
    """A line does not fit in the reader's block."""


class _TextReader:
    """One pass of pyarrow's streaming CSV reader over a text log, from the start; batches
    are numbered by physical line, and lines before ``skip_to`` are dropped (a restart)."""

    def __init__(self, source: _Source, names: list[str], block: int, skip_to: int) -> None:
        self.source, self.names, self.block, self.skip_to = source, names, block, skip_to
        self.next_line = source.first_data_line

    def __iter__(self) -> Iterator[_RawBatch]:
        source, names = self.source, self.names
        rejected: list[tuple[int, str]] = []
        quote_trouble: list[tuple[int, int]] = []

        def on_invalid_row(row: Any) -> str:
            number = -1 if row.number is None else int(row.number)
            text = row.text or ""
            if "\n" in text:  # a quoted field ran on past the end of its line
                quote_trouble.append((number, text.count("\n")))
            reason = (
                f"expected {row.expected_columns} fields, found {row.actual_columns}: {text[:80]!r}"
            )
            rejected.append((number, reason))
            return "skip"

        reader = self._open(on_invalid_row)
        pending: list[tuple[int, str]] = []
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid as exc:
                if "straddl" in str(exc):
                    raise _LongLine() from None
                raise _fail(
                    source.path, f"near line {self.next_line:,}: {exc}{_hint(exc)}"
                ) from None
            except (OSError, pa.ArrowException) as exc:
                raise _fail(
                    source.path, f"near line {self.next_line:,}: {_damaged(exc, source.path)}"
                ) from None
            if quote_trouble:
                self._raise_quote(*quote_trouble[0])
            pending.extend(rejected)
            rejected.clear()
            pending.sort()
            n = batch.num_rows
            start = self.next_line
            end = start + n
            skipped: list[RowIssue] = []
            while pending and 0 <= pending[0][0] < end:
                number, reason = pending.pop(0)
                skipped.append(RowIssue(number, reason))
                end += 1
            lines = np.arange(start, end, dtype=np.int64)
            if skipped:
                parsed = np.ones(end - start, bool)
                parsed[[issue.line - start for issue in skipped]] = False
                lines = lines[parsed]
            self.next_line = end
            if source.kind == "dat":
                columns, lines, wrong = _split_dat(batch.column(0), lines)
                skipped = sorted(skipped + wrong, key=lambda issue: issue.line)
            else:
                columns = {name: batch.column(name) for name in names}
            if end <= self.skip_to:
                continue  # delivered before a restart
            if start < self.skip_to:
                keep = lines >= self.skip_to
                columns = {k: v.filter(pa.array(keep)) for k, v in columns.items()}
                lines = lines[keep]
                skipped = [issue for issue in skipped if issue.line >= self.skip_to]
            yield _RawBatch(columns, lines, skipped)
        if quote_trouble:
            self._raise_quote(*quote_trouble[0])
        pending.extend(rejected)
        pending = [item for item in pending if item[0] >= self.skip_to or item[0] < 0]
        if pending:
            no_rows = np.empty(0, np.int64)
            if source.kind == "dat":
                columns = _split_dat(pa.array([], pa.string()), no_rows)[0]
            else:
                columns = {name: pa.array([], pa.string()) for name in names}
            issues = [RowIssue(number, reason) for number, reason in sorted(pending)]
            yield _RawBatch(columns, no_rows, issues)

    def _raise_quote(self, line: int, breaks: int) -> None:
        where = f"line {line:,}" if line >= 0 else "a line"
        raise _fail(
            self.source.path,
            f'{where}: a quote (") opens a field that does not end on that line, so the next '
            f"{breaks:,} line(s) were read as one field; remove or close the quote "
            "(numeric logs need no quotes)",
        )

    def _open(self, on_invalid_row: Callable[[Any], str]) -> Any:
        source, names = self.source, self.names
        # use_threads=False keeps InvalidRow.number, the physical line number, which the
        # report needs.
        if source.kind == "dat":
            read_options = pa_csv.ReadOptions(
                block_size=self.block, use_threads=False, column_names=[_DAT_FIELD]
            )
            parse_options = pa_csv.ParseOptions(
                delimiter=_DAT_READ_DELIMITER,
                quote_char=False,
                ignore_empty_lines=False,
                invalid_row_handler=on_invalid_row,
            )
            convert_options = pa_csv.ConvertOptions(
                column_types={_DAT_FIELD: pa.string()}, strings_can_be_null=False
            )
        else:
            # The header line is skipped and its names given trimmed ('user, item' names
            # 'item', not ' item'); skip_rows keeps the physical line numbers.
            read_options = pa_csv.ReadOptions(
                block_size=self.block,
                use_threads=False,
                column_names=source.file_columns,
                skip_rows=1 if source.header else 0,
            )
            parse_options = pa_csv.ParseOptions(
                delimiter=source.delimiter,
                ignore_empty_lines=False,
                invalid_row_handler=on_invalid_row,
            )
            convert_options = pa_csv.ConvertOptions(
                include_columns=names,
                column_types={name: pa.string() for name in names},
                strings_can_be_null=False,
            )
        try:
            return pa_csv.open_csv(
                str(source.path),
                read_options=read_options,
                parse_options=parse_options,
                convert_options=convert_options,
            )
        except pa.ArrowInvalid as exc:
            if "straddl" in str(exc):
                raise _LongLine() from None
            message = f"cannot be read as {source.format} ({exc}){_hint(exc)}"
            raise _fail(source.path, message) from None
        except (OSError, pa.ArrowException) as exc:
            raise _fail(source.path, f"cannot be read: {_damaged(exc, source.path)}") from None


def _split_dat(
    column: pa.Array, lines: npt.NDArray[np.int64]
) -> tuple[dict[str, pa.Array], npt.NDArray[np.int64], list[RowIssue]]:
    """Split 'user::item::rating::time' lines; lines with another field count are rejected."""
    parts = pc.split_pattern(column, _DAT_SEPARATOR)
    counts = np.asarray(pc.list_value_length(parts).to_numpy(zero_copy_only=False))
    well_formed = counts == len(_MOVIELENS_NAMES)
    wrong: list[RowIssue] = []
    if not well_formed.all():
        for k in np.flatnonzero(~well_formed):
            text = column[int(k)].as_py()
            wrong.append(
                RowIssue(
                    int(lines[k]),
                    f"expected {len(_MOVIELENS_NAMES)} fields separated by "
                    f"{_DAT_SEPARATOR!r}, found {int(counts[k])}: {text[:80]!r}",
                )
            )
        parts = parts.filter(pa.array(well_formed))
        lines = lines[well_formed]
    columns = {name: pc.list_element(parts, i) for i, name in enumerate(_MOVIELENS_NAMES)}
    return columns, lines, wrong


# ----------------------------------------------------------------------------------------------
# Parsing columns into numbers, row by row, without giving up on a whole batch
# ----------------------------------------------------------------------------------------------


def _as_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One array, dictionary-encoded columns decoded (Parquet keeps pandas categoricals and
    low-cardinality strings as dictionaries)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    return values


def _missing_text(text: pa.Array) -> npt.NDArray[np.bool_]:
    lowered = pc.utf8_lower(text)
    missing = pc.or_kleene(pc.is_null(text), pc.is_in(lowered, pa.array(_MISSING_TEXT)))
    return np.asarray(pc.fill_null(missing, True).to_numpy(zero_copy_only=False), dtype=bool)


def _match(text: pa.Array, pattern: str) -> npt.NDArray[np.bool_]:
    matched = pc.fill_null(pc.match_substring_regex(text, pattern), False)
    return np.asarray(matched.to_numpy(zero_copy_only=False), dtype=bool)


def _cast_where(text: pa.Array, ok: npt.NDArray[np.bool_], to: pa.DataType) -> np.ndarray:
    safe = pc.if_else(pa.array(ok), text, pa.scalar("0"))
    return np.asarray(pc.cast(safe, to).to_numpy(zero_copy_only=False))


def _parse_ids(values: pa.Array) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int8]]:
    """Non-negative integer ids as uint64, with a reason code per row."""
    values = _as_array(values)
    n = len(values)
    codes = np.zeros(n, np.int8)
    kind = values.type
    if pa.types.is_integer(kind):
        ints = pc.fill_null(values, 0).to_numpy(zero_copy_only=False)
        codes[np.asarray(values.is_null().to_numpy(zero_copy_only=False), bool)] = _MISSING
        if pa.types.is_signed_integer(kind):
            codes[(ints < 0) & (codes == _OK)] = _NEGATIVE
            ints = np.where(ints < 0, 0, ints)
        return ints.astype(np.uint64), codes
    if pa.types.is_floating(kind):
        floats = np.asarray(pc.fill_null(values, np.nan).to_numpy(zero_copy_only=False), float)
        _float_id_codes(floats, codes)
        return np.where(codes == _OK, floats, 0).astype(np.uint64), codes
    if pa.types.is_decimal(kind):  # e.g. DECIMAL(20, 0) ids from a database export
        values, kind = pc.cast(values, pa.string()), pa.string()
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return np.zeros(n, np.uint64), np.full(n, _NON_NUMERIC, np.int8)
    if values.null_count == 0:
        try:  # fast path: a clean column
            return np.asarray(pc.cast(values, pa.uint64()).to_numpy(), np.uint64), codes
        except pa.ArrowInvalid:
            pass
    text = pc.utf8_trim_whitespace(values)
    digits = _match(text, _DIGITS_PATTERN)
    lengths = np.asarray(pc.fill_null(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False))
    too_long = digits & (
        (lengths > len(_UINT64_MAX_TEXT))
        | (
            (lengths == len(_UINT64_MAX_TEXT))
            & np.asarray(
                pc.fill_null(pc.greater(text, _UINT64_MAX_TEXT), False).to_numpy(
                    zero_copy_only=False
                ),
                bool,
            )
        )
    )
    ok = digits & ~too_long
    codes[:] = _NON_NUMERIC
    codes[ok] = _OK
    codes[too_long] = _OUT_OF_RANGE
    codes[_missing_text(text)] = _MISSING
    negative = _match(text, r"^-[0-9]+(?:\.0*)?$") & (codes == _NON_NUMERIC)
    codes[negative] = _NEGATIVE
    ids = _cast_where(text, ok, pa.uint64()).astype(np.uint64)
    # Ids written as floats ('51.0', '5.1e1': a pandas column with a missing value) are the
    # integers they hold, while a float64 holds them exactly.
    written_as_float = _match(text, _FLOAT_PATTERN) & (codes == _NON_NUMERIC)
    if written_as_float.any():
        floats = _cast_where(text, written_as_float, pa.float64()).astype(np.float64)
        float_codes = np.zeros(n, np.int8)
        _float_id_codes(floats, float_codes)
        codes[written_as_float] = float_codes[written_as_float]
        taken = written_as_float & (float_codes == _OK)
        ids[taken] = floats[taken].astype(np.uint64)
    return ids, codes


def _float_id_codes(floats: npt.NDArray[np.float64], codes: npt.NDArray[np.int8]) -> None:
    """Reason codes of ids given as floats: integral, non-negative and exact (below 2**53)."""
    codes[np.isnan(floats)] = _MISSING
    codes[~np.isfinite(floats) & (codes == _OK)] = _OUT_OF_RANGE
    codes[(floats < 0) & (codes == _OK)] = _NEGATIVE
    codes[(floats != np.floor(floats)) & (codes == _OK)] = _NOT_INTEGER
    codes[(floats >= 2.0**64) & (codes == _OK)] = _OUT_OF_RANGE
    codes[(floats > _EXACT_FLOAT_IDS) & (codes == _OK)] = _INEXACT


_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_LONG_ID_BYTES = 256  # longer ids are hashed one by one (blake2b), not byte column by column


def hash_ids(values: pa.Array | pa.ChunkedArray | Sequence[Any]) -> npt.NDArray[np.uint64]:
    """64-bit ids from text ids: FNV-1a over the UTF-8 bytes of the trimmed text, then the
    splitmix64 finaliser (so near-identical strings land far apart). Deterministic across runs
    and machines; two of ``n`` distinct ids collide with probability about n**2 / 2**65 (one
    in 37 million for a million ids). Numbers are hashed as their text (``51`` as ``"51"``).

    >>> a, b, a_again = hash_ids(["a", "b", " a "])
    >>> bool(a == a_again and a != b), hash_ids(["A2SUAM1J3GNN3B"]).dtype
    (True, dtype('uint64'))
    """
    if not isinstance(values, pa.Array | pa.ChunkedArray):
        values = pa.array([str(v) for v in values], pa.string())
    return _hash_ids(values)[0]


def _hash_ids(values: pa.Array) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int8]]:
    """Ids as 64-bit hashes of their text (:func:`hash_ids`), with a reason code per row."""
    values = _as_array(values)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = pc.cast(values, pa.string())
    text = pc.utf8_trim_whitespace(values)
    codes = np.where(_missing_text(text), _MISSING, _OK).astype(np.int8)
    text = pc.cast(pc.fill_null(text, ""), pa.large_string())
    offsets = np.frombuffer(text.buffers()[1], np.int64)[text.offset : text.offset + len(text) + 1]
    data = text.buffers()[2]
    raw = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    hashes = np.full(len(text), _FNV_OFFSET, np.uint64)
    short = np.flatnonzero(lengths <= _LONG_ID_BYTES)
    for j in range(int(lengths[short].max()) if short.size else 0):
        short = short[lengths[short] > j]
        hashes[short] = (hashes[short] ^ raw[starts[short] + j]) * _FNV_PRIME
    for k in np.flatnonzero(lengths > _LONG_ID_BYTES):
        digest = hashlib.blake2b(raw[starts[k] : starts[k] + lengths[k]].tobytes(), digest_size=8)
        hashes[k] = int.from_bytes(digest.digest(), "little")
    # splitmix64 finaliser
    hashes ^= hashes >> np.uint64(30)
    hashes *= np.uint64(0xBF58476D1CE4E5B9)
    hashes ^= hashes >> np.uint64(27)
    hashes *= np.uint64(0x94D049BB133111EB)
    hashes ^= hashes >> np.uint64(31)
    return np.where(codes == _OK, hashes, np.uint64(0)).astype(np.uint64), codes


def _parse_floats(values: pa.Array) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int8]]:
    """Finite float64 values, with a reason code per row."""
    values = _as_array(values)
    n = len(values)
    kind = values.type
    if (
        pa.types.is_boolean(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
    ):
        floats = np.asarray(
            pc.fill_null(pc.cast(values, pa.float64()), np.nan).to_numpy(zero_copy_only=False),
            float,
        )
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        try:
            floats = np.asarray(
                pc.fill_null(pc.cast(values, pa.float64()), np.nan).to_numpy(zero_copy_only=False),
                float,
            )
        except pa.ArrowInvalid:
            text = pc.utf8_trim_whitespace(values)
            ok = _match(text, _FLOAT_PATTERN)
            floats = np.where(ok, _cast_where(text, ok, pa.float64()), np.nan)
            # true/false (any case), as a boolean column exported to text reads: 1/0.
            lowered = pc.utf8_lower(text)
            truth = np.asarray(
                pc.fill_null(pc.is_in(lowered, pa.array(_TRUE_FALSE)), False).to_numpy(
                    zero_copy_only=False
                ),
                bool,
            )
            if truth.any():
                is_true = np.asarray(
                    pc.fill_null(pc.equal(lowered, "true"), False).to_numpy(zero_copy_only=False),
                    bool,
                )
                floats[truth] = is_true[truth].astype(np.float64)
                ok = ok | truth
            codes = np.where(ok, _OK, _NON_NUMERIC).astype(np.int8)
            codes[_missing_text(text)] = _MISSING
            codes[(codes == _OK) & ~np.isfinite(floats)] = _OUT_OF_RANGE
            return floats, codes
    else:
        return np.full(n, np.nan), np.full(n, _NON_NUMERIC, np.int8)
    codes = np.zeros(n, np.int8)
    codes[np.isnan(floats)] = _MISSING
    codes[np.isinf(floats)] = _OUT_OF_RANGE
    return floats, codes


def _parse_time_ns(
    values: pa.Array, unit: str
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int8]]:
    """Event times as int64 nanoseconds, with a reason code per row."""
    values = _as_array(values)
    kind = values.type
    if pa.types.is_date(kind):
        values = pc.cast(values, pa.timestamp("s"))
        kind = values.type
    if pa.types.is_timestamp(kind):
        unit, values = kind.unit, pc.cast(values, pa.int64())
        kind = values.type
    factor = _NS_PER_UNIT[unit]
    n = len(values)
    codes = np.zeros(n, np.int8)
    ints: np.ndarray | None = None
    if pa.types.is_integer(kind):
        ints = np.asarray(pc.fill_null(values, 0).to_numpy(zero_copy_only=False))
        codes[np.asarray(values.is_null().to_numpy(zero_copy_only=False), bool)] = _MISSING
    elif (pa.types.is_string(kind) or pa.types.is_large_string(kind)) and values.null_count == 0:
        try:
            ints = np.asarray(pc.cast(values, pa.int64()).to_numpy())
        except pa.ArrowInvalid:
            ints = None
        if ints is None and len(values) and _match(values[:1], _ISO_PATTERN)[0]:
            # Fast path (4x): a clean ISO-8601 column, all with an offset or all without.
            for to in (pa.timestamp("ns", tz="UTC"), pa.timestamp("ns")):
                try:
                    stamps = pc.cast(pc.cast(values, to, safe=False), pa.int64())
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    continue
                return np.asarray(stamps.to_numpy(zero_copy_only=False), np.int64), codes
    if ints is not None:
        limit = _INT64_MAX // factor
        codes[(np.abs(ints.astype(np.float64)) > limit) & (codes == _OK)] = _OUT_OF_RANGE
        safe = np.where(codes == _OK, ints, 0).astype(np.int64)
        return safe * np.int64(factor), codes
    floats, codes = _parse_floats(values)
    scaled = floats * factor
    codes[(np.abs(scaled) >= 2.0**63) & (codes == _OK)] = _OUT_OF_RANGE
    out = np.where(codes == _OK, np.round(scaled), 0).astype(np.int64)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = pc.utf8_trim_whitespace(values)
        # Integral text keeps full int64 precision (a float64 holds only 53 bits).
        integral = _match(text, _SIGNED_INT_PATTERN) & (codes == _OK)
        if integral.any():
            ints = _cast_where(text, integral, pa.int64()).astype(np.int64)
            exact = integral & (np.abs(ints) <= _INT64_MAX // factor)
            out[exact] = ints[exact] * np.int64(factor)
        iso = _match(text, _ISO_PATTERN) & (codes == _NON_NUMERIC)
        if iso.any():
            parsed, read = _parse_iso_ns(text, iso)
            out[read] = parsed[read]
            codes[read] = _OK
            codes[iso & ~read] = _BAD_DATE
    return out, codes


def _parse_iso_ns(
    text: pa.Array, rows: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """ISO-8601 text (the ``rows`` that look like it) as int64 nanoseconds since 1970 UTC, and
    which rows are calendar dates within the nanosecond clock's range (1678-2262): an offset
    (``Z``, ``+02:00``) is applied, a time without one is taken as UTC, a date alone is its
    midnight. Vectorised: the fields are split by one regex and the date counted in numpy
    (days from the civil calendar), so a bad value costs nothing extra."""
    parts = pc.extract_regex(pc.if_else(pa.array(rows), text, pa.scalar("")), _ISO_FIELDS)
    n = len(text)

    def field(name: str, default: str = "0") -> npt.NDArray[np.int64]:
        values = pc.fill_null(pc.struct_field(parts, name), default)
        values = pc.if_else(pc.equal(values, ""), default, values)
        return np.asarray(pc.cast(values, pa.int64()).to_numpy(zero_copy_only=False), np.int64)

    year, month, day = field("y"), field("mo", "1"), field("d", "1")
    hour, minute, second = field("h"), field("mi"), field("s")
    fraction = pc.fill_null(pc.struct_field(parts, "f"), "")
    nanos = _digits_as_int(pc.utf8_rpad(fraction, 9, "0"))  # '123' -> 123,000,000 ns
    zone = pc.fill_null(pc.struct_field(parts, "z"), "")
    offset = np.zeros(n, np.int64)
    zoned = np.asarray(pc.greater(pc.utf8_length(zone), 1).to_numpy(zero_copy_only=False), bool)
    if zoned.any():
        digits = pc.replace_substring(pc.utf8_slice_codeunits(zone, 1), ":", "")
        hhmm = np.where(zoned, _digits_as_int(pc.if_else(pa.array(zoned), digits, "0")), 0)
        sign = np.where(_match(zone, r"^-"), -1, 1)
        offset = sign * (hhmm // 100 * 60 + hhmm % 100) * 60
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], np.int64)
    ok = rows & (month >= 1) & (month <= 12) & (day >= 1) & (hour <= 23) & (minute <= 59)
    ok &= second <= 60  # 60: a leap second, read as the next second
    ok &= day <= month_days[np.clip(month, 1, 12) - 1] + ((month == 2) & leap)
    # Days from 1970-01-01 (H. Hinnant's days_from_civil), valid for every year.
    y = year - (month <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146_097 + doe - 719_468
    seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset
    ok &= np.abs(seconds) < _INT64_MAX // _NS_PER_SECOND
    out = np.where(ok, seconds, 0) * np.int64(_NS_PER_SECOND) + np.where(ok, nanos, 0)
    return out.astype(np.int64), ok


def _digits_as_int(values: pa.Array) -> npt.NDArray[np.int64]:
    """Digit strings (all of them) as int64."""
    return np.asarray(pc.cast(values, pa.int64()).to_numpy(zero_copy_only=False), np.int64)


# ----------------------------------------------------------------------------------------------
# Validated rows, ordering and duplicates
# ----------------------------------------------------------------------------------------------


@dataclass
class _Rows:
    users: npt.NDArray[np.uint64]
    items: npt.NDArray[np.uint64]
    labels: npt.NDArray[np.float32]
    time_ns: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float32] | None
    raw: dict[str, npt.NDArray[np.float64]]
    lines: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.users)

    def take(self, index: npt.NDArray[Any]) -> _Rows:
        return _Rows(
            users=self.users[index],
            items=self.items[index],
            labels=self.labels[index],
            time_ns=self.time_ns[index],
            weights=None if self.weights is None else self.weights[index],
            raw={k: v[index] for k, v in self.raw.items()},
            lines=self.lines[index],
        )

    def slice(self, start: int, stop: int) -> _Rows:
        """Rows ``start:stop`` as views (no copy)."""
        return _Rows(
            users=self.users[start:stop],
            items=self.items[start:stop],
            labels=self.labels[start:stop],
            time_ns=self.time_ns[start:stop],
            weights=None if self.weights is None else self.weights[start:stop],
            raw={k: v[start:stop] for k, v in self.raw.items()},
            lines=self.lines[start:stop],
        )

    @staticmethod
    def concat(parts: Sequence[_Rows]) -> _Rows:
        first = parts[0]
        if len(parts) == 1:  # nothing to join: the rows themselves
            return first
        return _Rows(
            users=np.concatenate([p.users for p in parts]),
            items=np.concatenate([p.items for p in parts]),
            labels=np.concatenate([p.labels for p in parts]),
            time_ns=np.concatenate([p.time_ns for p in parts]),
            weights=(
                None
                if first.weights is None
                else np.concatenate([p.weights for p in parts if p.weights is not None])
            ),
            raw={k: np.concatenate([p.raw[k] for p in parts]) for k in first.raw},
            lines=np.concatenate([p.lines for p in parts]),
        )

    def to_chunk(self) -> EventChunk:
        return EventChunk(
            users=np.ascontiguousarray(self.users),
            items=np.ascontiguousarray(self.items),
            labels=np.ascontiguousarray(self.labels),
            timestamps=np.floor_divide(self.time_ns, _NS_PER_SECOND),
            weights=None if self.weights is None else np.ascontiguousarray(self.weights),
            raw={k: np.ascontiguousarray(v) for k, v in self.raw.items()},
        )


def _unusable_column(
    source: _Source, name: str, role: str, codes: npt.NDArray[np.int8], batch: _RawBatch
) -> DatasetError:
    """The error for a column none of whose first values can be used, with the fix."""
    value = _as_array(batch.columns[name])[0].as_py()
    hint = _HINTS[role]
    if role == "time" and int(codes[0]) == _OUT_OF_RANGE:
        hint = _time_unit_hint(value, source.mapping.time_unit) or hint
    if role == "id" and int(codes[0]) == _NEGATIVE:
        hint = (
            "ids must be non-negative integers: drop or remap the negative ones (e.g. -1 for "
            "an anonymous user), or pass --hash-ids to read every id as a hash of its text"
        )
    return _fail(
        source.path,
        f"column {name!r} has no usable value in its first {len(codes):,} rows "
        f"(line {int(batch.lines[0])}: {_REASONS[int(codes[0])]} {_shown(value)}); {hint}",
    )


def _time_unit_hint(value: Any, unit: str) -> str | None:
    """``pass --time-unit ms`` when a time too large for ``unit`` reads as a date between 1990
    and 2100 in a finer unit.

    >>> print(_time_unit_hint("1600000000000", "s"))  # doctest: +ELLIPSIS
    1600000000000 s is past the year 2262; the values look like ms since 1970: pass ...
    """
    try:
        number = abs(float(value))
    except (TypeError, ValueError):
        return None
    for finer, ns in _NS_PER_UNIT.items():
        if ns < _NS_PER_UNIT[unit] and 6.3e8 <= number * ns / _NS_PER_SECOND <= 4.2e9:
            return (
                f"{value} {unit} is past the year 2262; the values look like {finer} since "
                f"1970: pass --time-unit {finer} (Python: time_unit={finer!r})"
            )
    return None


_HINTS = {
    "id": "ids must be non-negative integers; for text ids (hashes, UUIDs) pass --hash-ids "
    "(Python: hash_ids=True) to read each as a 64-bit hash of its text",
    "time": "the time column must be numeric (in --time-unit), ISO-8601 text (2020-09-13, "
    "2020-09-13T12:27:31Z) or a Parquet timestamp/date",
    "label": "the label column must be numeric (e.g. 0/1, a rating or a ratio)",
    "weight": "the weight column must be numeric",
}


class _Validator:
    """Turns raw batches into validated rows, recording malformed rows in the report."""

    def __init__(
        self, source: _Source, report: LoadReport, max_bad_rows: int | str = DEFAULT_MAX_BAD_ROWS
    ) -> None:
        self.source = source
        self.report = report
        self.max_bad_rows = max_bad_rows
        self.valid_seen = 0
        self.lost: dict[str, int] = {}
        self.raw_missing: dict[str, int] = {}

    def _check_codes(
        self,
        name: str,
        role: str,
        codes: npt.NDArray[np.int8],
        bad: npt.NDArray[np.bool_],
        issues: list[tuple[int, int, str]],
        batch: _RawBatch,
    ) -> None:
        failing = codes != _OK
        if failing.all() and len(codes) and self.valid_seen == 0:
            raise _unusable_column(self.source, name, role, codes, batch)
        new = failing & ~bad
        if new.any():
            self.lost[name] = self.lost.get(name, 0) + int(new.sum())
            column = _as_array(batch.columns[name])
            for i in np.flatnonzero(new)[:MAX_EXAMPLES]:
                shown = _shown(column[int(i)].as_py())
                reason = f"{_REASONS[int(codes[i])]} {shown} in column {name!r}"
                issues.append((int(batch.lines[i]), int(i), reason))
        bad |= failing

    def validate(self, batch: _RawBatch) -> _Rows:
        report, mapping = self.report, self.source.mapping
        n = len(batch.lines)
        report.rows_read += n + len(batch.invalid)
        bad = np.zeros(n, bool)
        issues: list[tuple[int, int, str]] = []
        parse_ids = _hash_ids if self.source.hash_ids else _parse_ids
        users, codes = parse_ids(batch.columns[mapping.user])
        self._check_codes(mapping.user, "id", codes, bad, issues, batch)
        items, codes = parse_ids(batch.columns[mapping.item])
        self._check_codes(mapping.item, "id", codes, bad, issues, batch)
        time_ns, codes = _parse_time_ns(batch.columns[mapping.time], mapping.time_unit)
        self._check_codes(mapping.time, "time", codes, bad, issues, batch)
        raw: dict[str, npt.NDArray[np.float64]] = {}
        if mapping.label is None:
            labels = np.ones(n, np.float32)
        else:
            values, codes = _parse_floats(batch.columns[mapping.label])
            self._check_codes(mapping.label, "label", codes, bad, issues, batch)
            labels = self._apply_rule(values)
            self._check_label_range(labels, bad, batch)
            if mapping.label_rule is not None:
                raw[mapping.label] = values
        weights = None
        if mapping.weight is not None:
            values, codes = _parse_floats(batch.columns[mapping.weight])
            # The engine takes weights in [0, MAX_WEIGHT]; others are bad values of the row.
            outside = (values < 0) | (values > _MAX_WEIGHT)
            codes[(codes == _OK) & outside] = _OUT_OF_RANGE
            self._check_codes(mapping.weight, "weight", codes, bad, issues, batch)
            weights = np.where(codes == _OK, values, 0.0).astype(np.float32)
        for name in self.source.keep:
            values, codes = _parse_floats(batch.columns[name])
            self.raw_missing[name] = self.raw_missing.get(name, 0) + int((codes != _OK).sum())
            raw[name] = np.where(codes == _OK, values, np.nan)
        examples = batch.invalid + [RowIssue(line, reason) for line, _, reason in issues]
        examples.sort(key=lambda issue: issue.line)
        report._add("malformed", examples, len(batch.invalid) + int(bad.sum()))
        self.check_bad_rows()
        keep = ~bad
        self.valid_seen += int(keep.sum())
        rows = _Rows(users, items, labels, time_ns, weights, raw, batch.lines)
        return rows if keep.all() else rows.take(keep)

    def _check_label_range(
        self, labels: npt.NDArray[np.float32], bad: npt.NDArray[np.bool_], batch: _RawBatch
    ) -> None:
        limits = self.source.label_range
        if limits is None:
            return
        low, high = limits
        outside = ~bad & ((labels < low) | (labels > high))
        if not outside.any():
            return
        i = int(np.flatnonzero(outside)[0])
        name = self.source.mapping.label
        raise _fail(
            self.source.path,
            f"line {int(batch.lines[i])}: label {float(labels[i]):g} in column {name!r} is outside "
            f"[{low:g}, {high:g}], which the logistic loss needs; pass --label-threshold X to "
            f"use label = ({name} >= X) (Python: label_threshold=X)",
        )

    def check_bad_rows(self) -> None:
        """Fail once the malformed rows exceed ``max_bad_rows`` (never drop them silently)."""
        report = self.report
        allowed = _bad_rows_allowed(self.max_bad_rows, report.rows_read)
        if report.malformed_rows <= allowed:
            return
        example = report.malformed_examples[0] if report.malformed_examples else None
        first = f" (first: line {example.line}: {example.reason})" if example else ""
        raise _fail(
            self.source.path,
            f"{report.malformed_rows:,} of the first {report.rows_read:,} rows are malformed"
            f"{first}, more than --max-bad-rows {self.max_bad_rows} allows ({allowed:,}); fix "
            "the file, check --format/--sep/--columns, or raise --max-bad-rows",
        )

    def _apply_rule(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
        rule = self.source.mapping.label_rule
        if rule is None:
            return values.astype(np.float32)
        if callable(rule):
            labels = np.asarray(rule(values), dtype=np.float32)
            if labels.shape != values.shape:
                raise ValueError(
                    f"label_rule returned shape {labels.shape} for {values.shape[0]} labels; "
                    "it must return one label per value"
                )
            return labels
        return (values >= float(rule)).astype(np.float32)

    def column_notes(self) -> dict[str, str]:
        mapping = self.source.mapping
        unit = mapping.time_unit
        kind = "64-bit hash of the text (--hash-ids)" if self.source.hash_ids else "uint64"
        notes = {
            mapping.user: f"user id ({kind})",
            mapping.item: f"item id ({kind})",
            mapping.time: f"event time in {unit} (or ISO-8601 text; UTC without an offset), "
            "floored to whole seconds",
        }
        rule = mapping.label_rule
        if mapping.label is None:
            notes["(label)"] = "no label column: every event has label 1"
        elif rule is None:
            notes[mapping.label] = "label, as is"
        elif callable(rule):
            notes[mapping.label] = "label = label_rule(value); value kept in raw"
        else:
            notes[mapping.label] = f"label = {mapping.label} >= {rule:g}; value kept in raw"
        if mapping.weight is not None:
            notes[mapping.weight] = "event weight"
        for name in self.source.keep:
            notes[name] = "kept in raw"
            if self.raw_missing.get(name):
                notes[name] += f" ({self.raw_missing[name]} missing or non-numeric values as NaN)"
        for name in mapping.keep:
            if name not in self.source.keep:
                notes[name] = "not in the file; skipped"
        for name, count in self.lost.items():
            notes[name] += f"; {count} row{'s' if count != 1 else ''} dropped for a bad value"
        return notes


class _Deduplicator:
    """Drops repeats of (user, item, time) from rows that arrive in time order.

    Duplicates can only share a timestamp, so across batches it remembers just the (user, item)
    pairs seen at the latest time: memory stays bounded by the busiest single timestamp.
    """

    def __init__(self, report: LoadReport) -> None:
        self.report = report
        self.last_time: int | None = None
        self.last_pairs: set[tuple[int, int]] = set()

    def __call__(self, rows: _Rows) -> _Rows:
        n = len(rows)
        if n == 0:
            return rows
        duplicate = np.zeros(n, bool)
        first_of = np.full(n, -1, np.int64)
        # Rows are in time order, so only rows sharing a timestamp with a neighbour can repeat.
        tied = np.zeros(n, bool)
        tied[1:] = rows.time_ns[1:] == rows.time_ns[:-1]
        tied[:-1] |= tied[1:]
        candidates = np.flatnonzero(tied) if tied.any() else np.zeros(0, np.intp)
        if candidates.size:
            # Only rows whose (time, user, item) hash repeats can be duplicates: one sort of
            # the hashes (vectorised) leaves few rows, often none, for the exact lexsort.
            hashes = _triple_hash(
                rows.time_ns[candidates], rows.users[candidates], rows.items[candidates]
            )
            ordered = np.sort(hashes)
            repeated = ordered[1:][ordered[1:] == ordered[:-1]]
            candidates = candidates[np.isin(hashes, repeated)] if repeated.size else repeated
        if candidates.size:
            order = candidates[
                np.lexsort(
                    (
                        candidates,
                        rows.items[candidates],
                        rows.users[candidates],
                        rows.time_ns[candidates],
                    )
                )
            ]
            t, u, i = rows.time_ns[order], rows.users[order], rows.items[order]
            same = np.zeros(len(order), bool)
            same[1:] = (t[1:] == t[:-1]) & (u[1:] == u[:-1]) & (i[1:] == i[:-1])
            group_start = np.maximum.accumulate(np.where(same, 0, np.arange(len(order))))
            duplicate[order] = same
            first_of[order] = order[group_start]
        if self.last_time is not None:
            for k in np.flatnonzero((rows.time_ns == self.last_time) & ~duplicate):
                if (int(rows.users[k]), int(rows.items[k])) in self.last_pairs:
                    duplicate[k] = True
                    first_of[k] = -1
        if duplicate.any():
            issues = []
            for k in np.flatnonzero(duplicate)[:MAX_EXAMPLES]:
                earlier = (
                    f"line {int(rows.lines[first_of[k]])}" if first_of[k] >= 0 else "an earlier row"
                )
                issues.append(
                    RowIssue(
                        int(rows.lines[k]),
                        f"same user {int(rows.users[k])}, item {int(rows.items[k])} and time "
                        f"as {earlier}",
                    )
                )
            self.report._add("duplicate", issues, int(duplicate.sum()))
            rows = rows.take(~duplicate)
            if len(rows) == 0:
                return rows
        latest = int(rows.time_ns.max())
        at_latest = rows.time_ns == latest
        pairs = set(
            zip(rows.users[at_latest].tolist(), rows.items[at_latest].tolist(), strict=True)
        )
        if latest == self.last_time:
            self.last_pairs |= pairs
        else:
            self.last_time, self.last_pairs = latest, pairs
        return rows


def _triple_hash(
    time_ns: npt.NDArray[np.int64], users: npt.NDArray[np.uint64], items: npt.NDArray[np.uint64]
) -> npt.NDArray[np.uint64]:
    """A 64-bit mix of (time, user, item); equal triples hash equal."""
    h = time_ns.view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    h ^= users * np.uint64(0xC2B2AE3D27D4EB4F)
    h ^= h >> np.uint64(29)
    h ^= items * np.uint64(0x165667B19E3779F9)
    h ^= h >> np.uint64(32)
    return h * np.uint64(0xD6E8FEB86659FD93)


def _out_of_order(
    time_ns: npt.NDArray[np.int64], previous_max: int | None
) -> tuple[npt.NDArray[np.bool_], int | None]:
    """Rows earlier than some row before them; and the running maximum after them."""
    if len(time_ns) == 0:
        return np.zeros(0, bool), previous_max
    running = np.maximum.accumulate(time_ns)
    before = np.empty_like(running)
    before[1:] = running[:-1]
    before[0] = time_ns[0] if previous_max is None else previous_max
    if previous_max is not None:
        before = np.maximum(before, previous_max)
    late = time_ns < before
    new_max = int(running[-1]) if previous_max is None else max(int(running[-1]), previous_max)
    return late, new_max


def _out_of_order_issues(
    rows_time: npt.NDArray[np.int64],
    lines: npt.NDArray[np.int64],
    late: npt.NDArray[np.bool_],
    previous_max: int | None,
) -> list[RowIssue]:
    issues = []
    running = np.maximum.accumulate(rows_time)
    for k in np.flatnonzero(late)[:MAX_EXAMPLES]:
        latest = int(running[k - 1]) if k > 0 else int(previous_max or 0)
        if previous_max is not None:
            latest = max(latest, previous_max)
        issues.append(
            RowIssue(
                int(lines[k]),
                f"time {_format_ns(int(rows_time[k]))} is before {_format_ns(latest)} seen earlier",
            )
        )
    return issues


def _format_ns(value: int) -> str:
    seconds, rest = divmod(value, _NS_PER_SECOND)
    return f"{seconds}s" if rest == 0 else f"{value / _NS_PER_SECOND:.3f}s"


def _sort_command(source: _Source) -> str:
    path = source.path
    target = path.with_name(f"{path.stem}.sorted{path.suffix}")
    src, dst = shlex.quote(str(path)), shlex.quote(str(target))
    if source.kind == "parquet":
        return (
            f"duckdb -c \"COPY (SELECT * FROM '{path}' ORDER BY {source.mapping.time}) "
            f"TO '{target}'\""
        )
    if source.kind == "dat":
        key = "-t: -k7,7g"  # 'u::i::r::t' splits on ':' into u,,i,,r,,t
    else:
        column = source.file_columns.index(source.mapping.time) + 1
        separator = "$'\\t'" if source.delimiter == "\t" else source.delimiter
        key = f"-t{separator} -k{column},{column}g"
    sort = f"LC_ALL=C sort -s {key}"
    if source.kind == "csv" and source.header:
        return f"(head -n 1 {src} && tail -n +2 {src} | {sort}) > {dst}"
    return f"{sort} {src} > {dst}"


# ----------------------------------------------------------------------------------------------
# The public stream
# ----------------------------------------------------------------------------------------------


class EventLog:
    """A log on disk, replayed as :class:`EventChunk` objects in time order.

    Create it with :func:`open_log`. Each iteration reads the file again from the start and
    refills :attr:`report`; nothing is read before the first iteration except the header (and, with
    ``sort="auto"``, a first pass over the time column to learn whether the log is sorted).

    Attributes
    ----------
    path : pathlib.Path
    format : str
        The resolved format (``"auto"`` is replaced by what was detected).
    columns : ColumnMap
        The column mapping in use (the preset of the format, or the one given).
    report : LoadReport
        Updated in place while the log streams.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = synthetic_log(pathlib.Path(tempfile.mkdtemp()) / "u.data", "movielens-100k", 30)
    >>> log = open_log(path, chunk_rows=8)
    >>> [len(chunk) for chunk in log]
    [8, 8, 8, 6]
    """

    def __init__(
        self,
        source: _Source,
        *,
        chunk_rows: int,
        limit: int | None,
        sort: SortPolicy,
        max_sort_rows: int,
        max_bad_rows: int | str = DEFAULT_MAX_BAD_ROWS,
    ) -> None:
        self._source = source
        self.path: Path = source.path
        self.format: str = source.format
        self.columns: ColumnMap = source.mapping
        self.chunk_rows = chunk_rows
        self.limit = limit
        self.sort: SortPolicy = sort
        self.max_sort_rows = max_sort_rows
        self.max_bad_rows = max_bad_rows
        self.report = LoadReport(path=str(source.path), format=source.format)
        self._needs_sort: bool | None = None
        self._profile: TimeProfile | None = None

    def __repr__(self) -> str:
        return f"EventLog({str(self.path)!r}, format={self.format!r}, sort={self.sort!r})"

    def __iter__(self) -> Iterator[EventChunk]:
        self.report._reset()
        validator = _Validator(self._source, self.report, self.max_bad_rows)
        if self.sort == "memory":
            in_memory = True
        elif self.sort == "require":
            in_memory = False
        else:
            if self._needs_sort is None:
                self._needs_sort = self._first_pass(check_size=True)
            in_memory = self._needs_sort
        rows = self._sorted_rows(validator) if in_memory else self._streamed_rows(validator)
        yield from self._chunks(rows)
        validator.check_bad_rows()
        self.report.column_notes = validator.column_notes()
        self.report.complete = True

    def read(self) -> EventChunk:
        """The whole log as one chunk (for logs that fit in memory).

        >>> import tempfile, pathlib
        >>> path = synthetic_log(pathlib.Path(tempfile.mkdtemp()) / "log.csv", "kuairec", 20)
        >>> len(open_log(path).read())
        20
        """
        return EventChunk.concat(list(self))

    def time_profile(self) -> TimeProfile:
        """The log's event times (span, count, an even sample), from one pass over the time
        column (the pass ``sort="auto"`` makes anyway; with a ``limit``, the first ``limit``
        events in time order).

        >>> import tempfile, pathlib
        >>> path = synthetic_log(pathlib.Path(tempfile.mkdtemp()) / "log.csv", "kuairec", 20)
        >>> profile = open_log(path).time_profile()
        >>> profile.events, profile.first <= profile.last
        (20, True)
        """
        if self._profile is None:
            self._needs_sort = self._first_pass(check_size=self.sort == "auto")
        profile = self._profile
        assert profile is not None
        if self.limit is None or self.limit >= profile.events or profile.sample.size == 0:
            return profile
        keep = max(1, math.ceil(profile.sample.size * self.limit / profile.events))
        sample = profile.sample[:keep]
        return TimeProfile(self.limit, int(sample[0]), int(sample[-1]), sample)

    def _first_pass(self, check_size: bool) -> bool:
        """Whether the log is out of time order, reading only its time column (and the
        :meth:`time_profile` on the way)."""
        source = self._source
        names = [_DAT_FIELD] if source.kind == "dat" else [source.mapping.time]
        previous_max: int | None = None
        rows = late_rows = 0
        first_late: RowIssue | None = None
        kept: list[npt.NDArray[np.int64]] = []
        kept_size, stride = 0, 1
        lowest: int | None = None
        for batch in _iter_raw_batches(source, names, self.chunk_rows):
            time_ns, codes = _parse_time_ns(
                batch.columns[source.mapping.time], source.mapping.time_unit
            )
            ok = codes == _OK
            if len(ok) and not ok.any() and rows == 0:
                raise _unusable_column(source, source.mapping.time, "time", codes, batch)
            times, lines = time_ns[ok], batch.lines[ok]
            late, new_max = _out_of_order(times, previous_max)
            if late.any() and first_late is None:
                first_late = _out_of_order_issues(times, lines, late, previous_max)[0]
            previous_max = new_max
            rows += len(times)
            late_rows += int(late.sum())
            if len(times):
                seconds = np.floor_divide(times[::stride], _NS_PER_SECOND)
                low = int(times.min()) // _NS_PER_SECOND
                lowest = low if lowest is None else min(lowest, low)
                kept.append(seconds)
                kept_size += seconds.size
                while kept_size > _SAMPLE_TIMES:
                    kept = [np.concatenate(kept)[::2]]
                    kept_size, stride = kept[0].size, stride * 2
            if check_size and late_rows and rows > self.max_sort_rows:
                self._raise_unsorted(first_late, f"more than {rows:,} rows")
        sample = np.sort(np.concatenate(kept)) if kept else np.zeros(0, np.int64)
        last = (previous_max // _NS_PER_SECOND) if previous_max is not None else 0
        self._profile = TimeProfile(rows, lowest if lowest is not None else 0, last, sample)
        if rows and previous_max is not None and lowest is not None:
            self._warn_coarser_unit(lowest * _NS_PER_SECOND, previous_max)
        return late_rows > 0

    def _warn_coarser_unit(self, first_ns: int, last_ns: int) -> None:
        """Warn when every time falls in 1970 in the given unit but every one would be a date
        between 1990 and 2100 in a coarser unit (seconds read with --time-unit ms or ns).
        Relative times starting near 0 never warn."""
        unit = self._source.mapping.time_unit
        if not 0 < first_ns <= last_ns < 365 * 86_400 * _NS_PER_SECOND:
            return
        low, high = first_ns // _NS_PER_UNIT[unit], last_ns // _NS_PER_UNIT[unit]
        for coarser, ns in _NS_PER_UNIT.items():
            seconds = (low * ns / _NS_PER_SECOND, high * ns / _NS_PER_SECOND)
            if ns > _NS_PER_UNIT[unit] and 6.3e8 <= seconds[0] and seconds[1] <= 4.2e9:
                warnings.warn(
                    f"{self.path}: read in {unit}, every event time falls in 1970 (the last "
                    f"{last_ns / _NS_PER_SECOND:,.0f} s after 1970-01-01), but in {coarser} "
                    f"they are dates after 1990: pass --time-unit {coarser} if that is their "
                    "unit",
                    LogWarning,
                    stacklevel=4,
                )
                return

    def _raise_unsorted(self, first_late: RowIssue | None, size: str) -> None:
        where = f" (line {first_late.line}: {first_late.reason})" if first_late else ""
        raise _fail(
            self.path,
            f"the log is not in time order{where} and has {size}, more than the "
            f"{self.max_sort_rows:,} rows embcore sorts in memory on this machine (about "
            f"{_SORT_BYTES_PER_ROW} bytes per row, half the available memory); sort the file "
            f"by column {self.columns.time!r} first: {_sort_command(self._source)}",
        )

    def _validated(self, validator: _Validator, names: list[str]) -> Iterator[_Rows]:
        for batch in _iter_raw_batches(self._source, names, self.chunk_rows):
            yield validator.validate(batch)

    def _needed(self) -> list[str]:
        return [_DAT_FIELD] if self._source.kind == "dat" else self._source.needed_columns()

    def _streamed_rows(self, validator: _Validator) -> Iterator[_Rows]:
        report = self.report
        deduplicate = _Deduplicator(report)
        previous_max: int | None = None
        for rows in self._validated(validator, self._needed()):
            late, new_max = _out_of_order(rows.time_ns, previous_max)
            if late.any():
                issues = _out_of_order_issues(rows.time_ns, rows.lines, late, previous_max)
                report._add("out_of_order", issues[:1], 1)
                if self.sort == "require":
                    raise _fail(
                        self.path,
                        f"the log is not in time order (line {issues[0].line}: "
                        f"{issues[0].reason}) and --sort require was given; sort the file by "
                        f"column {self.columns.time!r} first ({_sort_command(self._source)}) "
                        "or pass --sort auto to sort it in memory",
                    )
                raise _fail(
                    self.path,
                    f"the log changed while it was read: line {issues[0].line} is out of time "
                    "order although the first pass found the file sorted",
                )
            previous_max = new_max
            yield deduplicate(rows)

    def _sorted_rows(self, validator: _Validator) -> Iterator[_Rows]:
        report = self.report
        report.sorted_in_memory = True
        parts: list[_Rows] = []
        held = 0
        for rows in self._validated(validator, self._needed()):
            if len(rows):
                parts.append(rows)
                held += len(rows)
                if held > self.max_sort_rows:
                    # Sorting would not fit: stop before memory runs out.
                    self._raise_unsorted(None, f"more than {held:,} rows")
        if not parts:
            return
        rows = _Rows.concat(parts)
        late, _ = _out_of_order(rows.time_ns, None)
        report._add(
            "out_of_order",
            _out_of_order_issues(rows.time_ns, rows.lines, late, None),
            int(late.sum()),
        )
        if late.any():
            rows = rows.take(np.argsort(rows.time_ns, kind="stable"))
        yield _Deduplicator(report)(rows)

    def _chunks(self, stream: Iterator[_Rows]) -> Iterator[EventChunk]:
        report = self.report
        buffered: list[_Rows] = []
        size = 0
        remaining = math.inf if self.limit is None else self.limit
        for rows in stream:
            if len(rows) > remaining:
                rows = rows.slice(0, int(remaining))
            remaining -= len(rows)
            if len(rows):
                buffered.append(rows)
                size += len(rows)
            while size >= self.chunk_rows:
                # Views of the joined rows, not copies: a batch of exactly one chunk (the
                # usual case) reaches the chunk without being copied at all.
                joined = _Rows.concat(buffered)
                head = joined.slice(0, self.chunk_rows)
                tail = joined.slice(self.chunk_rows, size)
                buffered, size = ([tail] if len(tail) else []), len(tail)
                report.events_out += len(head)
                yield head.to_chunk()
            if remaining <= 0:
                break
        if size:
            report.events_out += size
            yield _Rows.concat(buffered).to_chunk()
        if report.rows_read == 0:
            raise _fail(self.path, "has no data rows")


def open_log(
    path: str | Path,
    format: FormatName = "auto",
    *,
    columns: ColumnMap | None = None,
    label_threshold: float | None = None,
    time_unit: TimeUnit | None = None,
    separator: str | None = None,
    max_bad_rows: int | str = DEFAULT_MAX_BAD_ROWS,
    chunk_rows: int = 1_000_000,
    limit: int | None = None,
    sort: SortPolicy = "auto",
    max_sort_rows: int | None = None,
    label_range: tuple[float, float] | None = None,
    hash_ids: bool = False,
) -> EventLog:
    """Open an interaction log for replay as time-ordered :class:`EventChunk` objects.

    Parameters
    ----------
    path
        The log file: CSV/TSV (optionally ``.gz``/``.bz2``/``.zst`` compressed), MovieLens
        ``u.data`` or ``ratings.dat``, or Parquet.
    format
        ``"auto"`` detects the format from the file name and header line (or Parquet schema).
        See ``docs/datasets.md`` for the column mapping and label rule of each format.
    columns
        Column mapping for generic ``"csv"``/``"parquet"`` logs, or to override a preset.
    label_threshold
        Overrides the threshold of the label rule: ``label = value >= threshold`` (MovieLens
        rating, default 4; KuaiRec watch_ratio, default 2.0).
    time_unit
        Overrides the unit of a numeric time column: ``"s"``, ``"ms"``, ``"us"``, ``"ns"``.
    separator
        Field separator of a text log (one character); default: detected from line 1.
    max_bad_rows
        Reading fails (:class:`DatasetError`) once more malformed rows than this were dropped:
        a count, or a share of the rows read such as ``"1%"`` (default; at least 10 rows).
        Dropped rows are always counted in :attr:`EventLog.report`.
    chunk_rows
        Events per chunk (the last chunk may be shorter); it also bounds the rows read at once.
    limit
        Stop after this many events (in time order).
    sort
        ``"auto"``: a first pass reads the time column; a sorted log streams with bounded memory,
        an unsorted one is sorted in memory if it has at most ``max_sort_rows`` rows, else
        :class:`DatasetError` tells how to sort the file. ``"require"``: stream without a first
        pass and raise at the first row out of time order. ``"memory"``: always load the needed
        columns and sort them (stable) in memory.
    max_sort_rows
        The largest log sorted in memory (``sort="auto"`` or ``"memory"``); default 50 M rows,
        or fewer when half the available memory cannot hold them (about 64 bytes per row). A
        larger unsorted log raises :class:`DatasetError` with a ``sort`` command that sorts
        the file on disk, before memory runs out.
    label_range
        ``(low, high)``: a label outside it (after the label rule) fails reading with its line
        and the fix (``replay`` passes ``(0, 1)``, the logistic loss's range); default: any
        finite label.
    hash_ids
        Read user and item ids as 64-bit hashes of their text (:func:`hash_ids`), for logs
        whose ids are strings (hex digests, UUIDs, ``A2SUAM1J3GNN3B``): ``--hash-ids``.
        Every id is hashed, numeric ones included (as the text of their value), so one column
        never mixes the two kinds. Default: ids must be non-negative integers.

    Returns
    -------
    EventLog

    Raises
    ------
    DatasetError
        Missing or empty file, missing column, undetectable format; while iterating, a column with
        no usable values, damaged or truncated bytes, an unterminated quote, more malformed rows
        than ``max_bad_rows``, or an unsorted log too large to sort in memory.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = synthetic_log(pathlib.Path(tempfile.mkdtemp()) / "ratings.dat", "movielens-dat", 50)
    >>> log = open_log(path, label_threshold=3)
    >>> chunk = log.read()
    >>> log.format, len(chunk), bool((chunk.labels == (chunk.raw["rating"] >= 3)).all())
    ('movielens-dat', 50, True)
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be non-negative, got {limit}")
    if sort not in ("auto", "require", "memory"):
        raise ValueError(f"sort must be 'auto', 'require' or 'memory', got {sort!r}")
    bad_rows = _check_bad_rows_spec(max_bad_rows)
    if max_sort_rows is None:
        max_sort_rows = _default_max_sort_rows()
    source = _resolve(Path(path), format, columns, label_threshold, time_unit, separator)
    if label_range is not None:
        low, high = (float(x) for x in label_range)
        if not low <= high:
            raise ValueError(f"label_range must be (low, high) with low <= high, got {label_range}")
        source.label_range = (low, high)
    if not isinstance(hash_ids, bool):
        raise ValueError(f"--hash-ids must be True or False, got {hash_ids!r}")
    source.hash_ids = hash_ids
    return EventLog(
        source,
        chunk_rows=chunk_rows,
        limit=limit,
        sort=sort,
        max_sort_rows=max_sort_rows,
        max_bad_rows=bad_rows,
    )


def read_events(path: str | Path, format: FormatName = "auto", **options: Any) -> EventChunk:
    """Read a whole (small) log into one :class:`EventChunk`; options as for :func:`open_log`.

    >>> import tempfile, pathlib
    >>> path = synthetic_log(pathlib.Path(tempfile.mkdtemp()) / "log.csv", "kuairand", 40)
    >>> events = read_events(path)
    >>> len(events), bool((events.timestamps[1:] >= events.timestamps[:-1]).all())
    (40, True)
    """
    return open_log(path, format, **options).read()


# ----------------------------------------------------------------------------------------------
# Synthetic logs in every format
# ----------------------------------------------------------------------------------------------


def synthetic_log(
    path: str | Path,
    format: str,
    n_events: int = 1000,
    seed: int = 0,
    *,
    header: bool = True,
    shuffle: bool = False,
) -> Path:
    """Write a small synthetic log in one of :data:`FORMATS` and return its path.

    Users and items are power-law distributed; times strictly increase (no duplicates) unless
    ``shuffle`` permutes the rows. ``header=False`` drops the header line of MovieLens
    ``ratings.csv``. The generic ``"csv"`` and ``"parquet"`` files read with
    :data:`SYNTHETIC_COLUMNS`.

    >>> import tempfile, pathlib
    >>> path = synthetic_log(pathlib.Path(tempfile.mkdtemp()) / "ratings.csv", "movielens", 3)
    >>> path.read_text().splitlines()[0]
    'userId,movieId,rating,timestamp'
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {format!r}")
    path = Path(path)
    rng = np.random.default_rng(seed)
    n = int(n_events)
    users = 1 + (max(2, n // 20) * rng.random(n) ** 2).astype(np.int64)
    items = 1 + (max(1, n // 5) * rng.random(n) ** 3).astype(np.int64)
    time_ms = 1_600_000_000_000 + np.cumsum(rng.integers(1, 20_000, n))
    seconds = time_ms // 1000
    order = rng.permutation(n) if shuffle else np.arange(n)
    columns: dict[str, Any]
    if format == "movielens":
        half_stars = rng.integers(1, 11, n) / 2.0
        columns = {"userId": users, "movieId": items, "rating": half_stars, "timestamp": seconds}
    elif format in ("movielens-100k", "movielens-dat"):
        stars = rng.integers(1, 6, n)
        columns = {"userId": users, "movieId": items, "rating": stars, "timestamp": seconds}
    elif format == "kuairand":
        columns = _synthetic_kuairand(rng, users, items, time_ms)
    elif format == "kuairec":
        columns = _synthetic_kuairec(rng, users, items, time_ms)
    else:
        columns = {
            "user_id": users,
            "item_id": items,
            "time_ms": time_ms,
            "label": (rng.random(n) < 0.3).astype(np.int64),
            "weight": rng.uniform(0.5, 2.0, n).round(3),
        }
    table = pa.table({name: np.asarray(values)[order] for name, values in columns.items()})
    if format == "parquet":
        pq.write_table(table, str(path), write_page_checksum=True)
    elif format == "movielens-dat":
        texts = [pc.cast(table.column(i), pa.string()) for i in range(table.num_columns)]
        joined = pc.binary_join_element_wise(*texts, _DAT_SEPARATOR)
        pa_csv.write_csv(
            pa.table({_DAT_FIELD: joined}),
            str(path),
            pa_csv.WriteOptions(include_header=False, quoting_style="none"),
        )
    else:
        delimiter = "\t" if format == "movielens-100k" else ","
        with open(path, "wb") as handle:
            if header and format != "movielens-100k":
                # pyarrow quotes header names; real logs do not.
                handle.write((delimiter.join(table.column_names) + "\n").encode())
            pa_csv.write_csv(
                table,
                handle,
                pa_csv.WriteOptions(
                    include_header=False, delimiter=delimiter, quoting_style="none"
                ),
            )
    return path


def _synthetic_kuairand(
    rng: np.random.Generator,
    users: np.ndarray,
    items: np.ndarray,
    time_ms: np.ndarray,
) -> dict[str, Any]:
    n = len(users)
    moments = time_ms.astype("datetime64[ms]")
    days = np.datetime_as_string(moments.astype("datetime64[D]"))
    minutes = np.datetime_as_string(moments.astype("datetime64[m]"))
    click = (rng.random(n) < 0.4).astype(np.int64)
    duration = rng.integers(5_000, 60_000, n)
    play = (duration * rng.uniform(0, 1.5, n) * click).astype(np.int64)
    columns: dict[str, Any] = {name: np.zeros(n, np.int64) for name in _KUAIRAND_NAMES}
    columns.update(
        user_id=users,
        video_id=items,
        date=np.char.replace(days, "-", "").astype(np.int64),
        hourmin=np.array([m[11:13] + m[14:16] for m in minutes.tolist()]).astype(np.int64),
        time_ms=time_ms,
        is_click=click,
        is_like=click * (rng.random(n) < 0.1),
        long_view=(play > duration // 2).astype(np.int64),
        play_time_ms=play,
        duration_ms=duration,
        is_rand=(rng.random(n) < 0.05).astype(np.int64),
        tab=rng.integers(0, 5, n),
    )
    return columns


def _synthetic_kuairec(
    rng: np.random.Generator,
    users: np.ndarray,
    items: np.ndarray,
    time_ms: np.ndarray,
) -> dict[str, Any]:
    n = len(users)
    moments = time_ms.astype("datetime64[ms]")
    video = rng.integers(5_000, 60_000, n)
    play = (video * rng.exponential(1.0, n)).astype(np.int64)
    return {
        "user_id": users,
        "video_id": items,
        "play_duration": play,
        "video_duration": video,
        "time": np.char.replace(np.datetime_as_string(moments), "T", " "),
        "date": np.char.replace(
            np.datetime_as_string(moments.astype("datetime64[D]")), "-", ""
        ).astype(np.int64),
        "timestamp": time_ms / 1000.0,
        "watch_ratio": play / video,
    }
