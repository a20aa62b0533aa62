"""Tests for embcore.datasets: every format round-trips, chunking, sorting, bad rows, bad files."""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embcore import datasets
from embcore.datasets import (
    FORMATS,
    SYNTHETIC_COLUMNS,
    ColumnMap,
    DatasetError,
    EventChunk,
    open_log,
    read_events,
    synthetic_log,
)

NS = 1_000_000_000

# The round trips draw times of any size in any unit: some look like a coarser unit's dates,
# and the loader's time-unit hint (a LogWarning, tested in test_cli_audit.py) rightly speaks.
pytestmark = pytest.mark.filterwarnings("ignore::embcore.datasets.LogWarning")


@contextmanager
def tiny_blocks(size: int = 64) -> Iterator[None]:
    """Make pyarrow read CSV in blocks of a few lines, so state must carry across batches."""
    saved = datasets._MIN_BLOCK_BYTES
    datasets._MIN_BLOCK_BYTES = size
    try:
        yield
    finally:
        datasets._MIN_BLOCK_BYTES = saved


# ------------------------------------------------------------------------------------------------
# The slow, obvious reference: stable sort by time, drop repeats of (user, item, time)
# ------------------------------------------------------------------------------------------------


def reference(rows: list[dict[str, Any]], rule: Any) -> dict[str, list[Any]]:
    order = sorted(range(len(rows)), key=lambda k: rows[k]["time_key"])  # sorted() is stable
    seen: set[tuple[int, int, int]] = set()
    out: dict[str, list[Any]] = {"users": [], "items": [], "labels": [], "timestamps": []}
    for k in order:
        row = rows[k]
        key = (row["user"], row["item"], row["time_key"])
        if key in seen:
            continue
        seen.add(key)
        out["users"].append(row["user"])
        out["items"].append(row["item"])
        value = row["label"]
        out["labels"].append(value if rule is None else float(value >= rule))
        out["timestamps"].append(row["seconds"])
    return out


def late_rows(rows: list[dict[str, Any]]) -> int:
    latest, count = -math.inf, 0
    for row in rows:
        count += row["time_key"] < latest
        latest = max(latest, row["time_key"])
    return count


def assert_events(chunk: EventChunk, expected: dict[str, list[Any]]) -> None:
    assert chunk.users.dtype == np.uint64 and chunk.items.dtype == np.uint64
    assert chunk.labels.dtype == np.float32 and chunk.timestamps.dtype == np.int64
    assert chunk.users.tolist() == expected["users"]
    assert chunk.items.tolist() == expected["items"]
    assert chunk.timestamps.tolist() == expected["timestamps"]
    np.testing.assert_array_equal(chunk.labels, np.asarray(expected["labels"], np.float32))


ids = st.integers(0, 2**64 - 1)
small_ids = st.integers(0, 5)  # collide often, so duplicates appear
seconds = st.integers(0, 2_000_000_000)
few_seconds = st.integers(1_500_000_000, 1_500_000_004)


@st.composite
def events(draw: Any, rating: Any) -> list[dict[str, Any]]:
    """A small log in file order: ids, times, ratings; sometimes sorted, sometimes repeated."""
    id_kind = draw(st.sampled_from([ids, small_ids]))
    time_kind = draw(st.sampled_from([seconds, few_seconds]))
    rows = draw(st.lists(st.tuples(id_kind, id_kind, time_kind, rating), min_size=1, max_size=40))
    if draw(st.booleans()):
        rows.sort(key=lambda row: row[2])
    return [{"user": u, "item": i, "time": t, "label": r} for u, i, t, r in rows]


half_stars = st.integers(1, 10).map(lambda k: k / 2)
stars = st.integers(1, 5).map(float)
chunk_sizes = st.sampled_from([1, 3, 7, 10**6])
property_settings = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def check_log(path: Path, rows: list[dict[str, Any]], rule: Any, chunk_rows: int, **kw: Any):
    expected = reference(rows, rule)
    with tiny_blocks():
        log = open_log(path, chunk_rows=chunk_rows, **kw)
        chunks = list(log)
    assert all(len(c) == chunk_rows for c in chunks[:-1])
    assert_events(EventChunk.concat(chunks), expected)
    report = log.report
    assert report.complete
    assert report.rows_read == len(rows)
    assert report.events_out == len(expected["users"])
    assert report.duplicate_rows == len(rows) - len(expected["users"])
    assert report.malformed_rows == 0
    assert report.out_of_order_rows == late_rows(rows)
    assert report.sorted_in_memory == (late_rows(rows) > 0)
    return log


# ------------------------------------------------------------------------------------------------
# Every format round-trips into exactly the expected events
# ------------------------------------------------------------------------------------------------


@property_settings
@given(rows=events(half_stars), header=st.booleans(), chunk_rows=chunk_sizes)
def test_movielens_ratings_csv_round_trip(
    tmp_path: Path, rows: list[dict[str, Any]], header: bool, chunk_rows: int
) -> None:
    path = tmp_path / "ratings.csv"
    lines = ["userId,movieId,rating,timestamp"] if header else []
    lines += [f"{r['user']},{r['item']},{r['label']},{r['time']}" for r in rows]
    path.write_text("\n".join(lines) + "\n")
    for r in rows:
        r.update(time_key=r["time"], seconds=r["time"])
    log = check_log(path, rows, 4.0, chunk_rows)
    assert log.format == "movielens"
    events = log.read()
    assert sorted(events.raw["rating"].tolist()) == sorted(
        reference([dict(r, label=r["label"]) for r in rows], None)["labels"]
    )


@property_settings
@given(rows=events(stars), chunk_rows=chunk_sizes, threshold=st.sampled_from([None, 3.0]))
def test_movielens_100k_round_trip(
    tmp_path: Path, rows: list[dict[str, Any]], chunk_rows: int, threshold: float | None
) -> None:
    path = tmp_path / "u.data"
    path.write_text(
        "".join(f"{r['user']}\t{r['item']}\t{r['label']:g}\t{r['time']}\n" for r in rows)
    )
    for r in rows:
        r.update(time_key=r["time"], seconds=r["time"])
    log = check_log(path, rows, threshold or 4.0, chunk_rows, label_threshold=threshold)
    assert log.format == "movielens-100k"


@property_settings
@given(rows=events(stars), chunk_rows=chunk_sizes)
def test_movielens_dat_round_trip(
    tmp_path: Path, rows: list[dict[str, Any]], chunk_rows: int
) -> None:
    path = tmp_path / "ratings.dat"
    path.write_text(
        "".join(f"{r['user']}::{r['item']}::{r['label']:g}::{r['time']}\n" for r in rows)
    )
    for r in rows:
        r.update(time_key=r["time"], seconds=r["time"])
    log = check_log(path, rows, 4.0, chunk_rows)
    assert log.format == "movielens-dat"


@property_settings
@given(
    rows=events(st.integers(0, 1).map(float)),
    chunk_rows=chunk_sizes,
    millis=st.lists(st.integers(0, 999), min_size=40, max_size=40),
)
def test_kuairand_round_trip(
    tmp_path: Path, rows: list[dict[str, Any]], chunk_rows: int, millis: list[int]
) -> None:
    path = tmp_path / "log_standard_4_22_to_5_08_pure.csv"
    names = datasets._KUAIRAND_NAMES
    lines = [",".join(names)]
    for r, ms in zip(rows, millis, strict=False):
        r.update(time_key=r["time"] * 1000 + ms, seconds=r["time"])
        values = dict.fromkeys(names, "0")
        values.update(
            user_id=str(r["user"]),
            video_id=str(r["item"]),
            time_ms=str(r["time_key"]),
            is_click=f"{r['label']:g}",
            play_time_ms="1234",
        )
        lines.append(",".join(values[n] for n in names))
    path.write_text("\n".join(lines) + "\n")
    log = check_log(path, rows, None, chunk_rows)
    assert log.format == "kuairand"
    assert set(log.read().raw) == {"is_like", "long_view", "play_time_ms", "duration_ms"}


@property_settings
@given(
    rows=events(st.floats(0, 5, allow_nan=False).map(lambda x: round(x, 3))),
    chunk_rows=chunk_sizes,
    millis=st.lists(st.integers(0, 999), min_size=40, max_size=40),
)
def test_kuairec_round_trip(
    tmp_path: Path, rows: list[dict[str, Any]], chunk_rows: int, millis: list[int]
) -> None:
    path = tmp_path / "small_matrix.csv"
    lines = [",".join(datasets._KUAIREC_NAMES)]
    for r, ms in zip(rows, millis, strict=False):
        r.update(time_key=r["time"] * 1000 + ms, seconds=r["time"])
        stamp = f"{r['time']}.{ms:03d}"
        lines.append(
            f"{r['user']},{r['item']},100,50,2020-07-05 00:08:23.438,20200705,{stamp},{r['label']}"
        )
    path.write_text("\n".join(lines) + "\n")
    log = check_log(path, rows, 2.0, chunk_rows)
    assert log.format == "kuairec"


@property_settings
@given(
    rows=events(st.floats(-3, 3, allow_nan=False, width=32)),
    chunk_rows=chunk_sizes,
    unit=st.sampled_from(["s", "ms", "us", "ns"]),
)
def test_parquet_generic_mapping_round_trip(
    tmp_path: Path, rows: list[dict[str, Any]], chunk_rows: int, unit: str
) -> None:
    factor = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[unit]
    for r in rows:
        r.update(time_key=r["time"] * factor + 7, seconds=r["time"] + (7 // factor))
    path = tmp_path / "events.parquet"
    table = pa.table(
        {
            "uid": pa.array([r["user"] for r in rows], pa.uint64()),
            "vid": pa.array([r["item"] for r in rows], pa.uint64()),
            "t": pa.array([r["time_key"] for r in rows], pa.int64()),
            "y": pa.array([r["label"] for r in rows], pa.float32()),
            "note": pa.array(["x"] * len(rows)),
        }
    )
    pq.write_table(table, path, row_group_size=5)
    columns = ColumnMap(user="uid", item="vid", time="t", label="y", time_unit=unit)  # type: ignore[arg-type]
    log = check_log(path, rows, None, chunk_rows, columns=columns)
    assert log.format == "parquet"


@property_settings
@given(rows=events(st.integers(0, 1).map(float)), chunk_rows=chunk_sizes)
def test_generic_csv_with_weights_and_callable_rule(
    tmp_path: Path, rows: list[dict[str, Any]], chunk_rows: int
) -> None:
    path = tmp_path / "clicks.tsv"
    lines = ["ts_ms\tuser\titem\tclicked\tw"]
    lines += [f"{r['time'] * 1000}\t{r['user']}\t{r['item']}\t{r['label']:g}\t0.5" for r in rows]
    path.write_text("\n".join(lines) + "\n")
    for r in rows:
        r.update(time_key=r["time"], seconds=r["time"], label=1.0 - r["label"])
    columns = ColumnMap(
        user="user",
        item="item",
        time="ts_ms",
        label="clicked",
        label_rule=lambda v: 1.0 - v,
        weight="w",
        time_unit="ms",
    )
    log = check_log(path, rows, None, chunk_rows, columns=columns)
    weights = log.read().weights
    assert weights is not None and weights.dtype == np.float32
    assert (weights == 0.5).all()


# ------------------------------------------------------------------------------------------------
# Synthetic files, chunking, limit, sorting
# ------------------------------------------------------------------------------------------------


def synthetic_path(tmp_path: Path, format: str, n: int = 200, **kw: Any) -> Path:
    names = {
        "movielens": "ratings.csv",
        "movielens-100k": "u.data",
        "movielens-dat": "ratings.dat",
        "kuairand": "log_random_4_22_to_5_08_pure.csv",
        "kuairec": "big_matrix.csv",
        "csv": "events.csv",
        "parquet": "events.parquet",
    }
    return synthetic_log(tmp_path / names[format], format, n, seed=3, **kw)


def open_synthetic(path: Path, format: str, **kw: Any) -> datasets.EventLog:
    columns = SYNTHETIC_COLUMNS if format in ("csv", "parquet") else None
    return open_log(path, columns=columns, **kw)


def same_events(a: EventChunk, b: EventChunk) -> bool:
    return (
        np.array_equal(a.users, b.users)
        and np.array_equal(a.items, b.items)
        and np.array_equal(a.labels, b.labels)
        and np.array_equal(a.timestamps, b.timestamps)
        and (
            (a.weights is None and b.weights is None)
            or (
                a.weights is not None
                and b.weights is not None
                and np.array_equal(a.weights, b.weights)
            )
        )
        and a.raw.keys() == b.raw.keys()
        and all(np.array_equal(a.raw[k], b.raw[k], equal_nan=True) for k in a.raw)
    )


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("shuffle", [False, True])
def test_chunking_does_not_change_the_events(tmp_path: Path, format: str, shuffle: bool) -> None:
    path = synthetic_path(tmp_path, format, shuffle=shuffle)
    whole = open_synthetic(path, format, chunk_rows=10**6)
    with tiny_blocks():
        small = open_synthetic(path, format, chunk_rows=7)
        small_chunks = list(small)
    assert [len(c) for c in small_chunks] == [7] * 28 + [4]
    assert same_events(EventChunk.concat(small_chunks), whole.read())
    assert whole.format == format
    assert whole.report.events_out == small.report.events_out == 200
    assert whole.report.sorted_in_memory == shuffle
    assert (np.diff(whole.read().timestamps) >= 0).all()


@pytest.mark.parametrize("format", ["movielens", "kuairand", "parquet"])
def test_raw_columns_follow_events(tmp_path: Path, format: str) -> None:
    path = synthetic_path(tmp_path, format, n=50, shuffle=True)
    events = open_synthetic(path, format).read()
    if format == "movielens":
        assert ((events.raw["rating"] >= 4) == (events.labels == 1)).all()
    if format == "kuairand":
        assert (events.raw["play_time_ms"][events.labels == 0] == 0).all()
    if format == "parquet":
        table = pq.read_table(path).sort_by("time_ms")
        assert events.weights is not None
        np.testing.assert_allclose(events.weights, table.column("weight").to_numpy(), rtol=1e-6)


@pytest.mark.parametrize("sort", ["auto", "require", "memory"])
def test_limit_gives_the_first_events_in_time_order(tmp_path: Path, sort: str) -> None:
    path = synthetic_path(tmp_path, "movielens", n=100)
    everything = read_events(path)
    with tiny_blocks():
        log = open_log(path, limit=25, chunk_rows=10, sort=sort)  # type: ignore[arg-type]
        chunks = list(log)
    assert [len(c) for c in chunks] == [10, 10, 5]
    assert same_events(EventChunk.concat(chunks), read_events(path, limit=25))
    assert EventChunk.concat(chunks).users.tolist() == everything.users[:25].tolist()
    assert log.report.events_out == 25
    if sort == "require":
        assert log.report.rows_read < 100  # stopped reading early
    assert len(read_events(path, limit=0)) == 0


def test_out_of_order_log_is_sorted_or_rejected(tmp_path: Path) -> None:
    path = synthetic_path(tmp_path, "movielens", n=60, shuffle=True)
    log = open_log(path)
    events = log.read()
    assert log.report.sorted_in_memory
    assert log.report.out_of_order_rows > 0
    assert log.report.out_of_order_examples[0].line > 1
    assert (np.diff(events.timestamps) >= 0).all()
    assert same_events(events, read_events(path, sort="memory"))

    with pytest.raises(DatasetError, match=r"ratings\.csv.*not in time order.*line \d+") as err:
        list(open_log(path, sort="require"))
    assert "sort -s -t, -k4,4g" in str(err.value) and "--sort auto" in str(err.value)

    with pytest.raises(DatasetError, match="more than the 10 rows embcore sorts in memory") as err:
        list(open_log(path, max_sort_rows=10))
    assert "tail -n +2" in str(err.value)


def test_sort_command_for_other_layouts(tmp_path: Path) -> None:
    dat = synthetic_path(tmp_path, "movielens-dat", n=30, shuffle=True)
    with pytest.raises(DatasetError, match=r"sort -s -t: -k7,7g"):
        list(open_log(dat, sort="require"))
    tab = synthetic_path(tmp_path, "movielens-100k", n=30, shuffle=True)
    with pytest.raises(DatasetError, match=r"-t\$'\\t' -k4,4g"):
        list(open_log(tab, sort="require"))


def test_sorted_log_streams_without_sorting(tmp_path: Path) -> None:
    path = synthetic_path(tmp_path, "kuairand", n=100)
    log = open_log(path, sort="require", chunk_rows=30)
    assert sum(len(c) for c in log) == 100
    assert not log.report.sorted_in_memory and log.report.out_of_order_rows == 0
    again = sum(len(c) for c in log)  # a second pass reads the file again
    assert again == 100 and log.report.rows_read == 100


# ------------------------------------------------------------------------------------------------
# Malformed and duplicate rows are dropped, counted and located
# ------------------------------------------------------------------------------------------------

BAD_ROWS = """userId,movieId,rating,timestamp
1,10,4.0,100
2,10,abc,101
-3,10,4,102
1,10,5.0,100
4,11,3.0
x,12,3,103
5,13,,104
6,14,2.0,105
7,1.5,2.0,106
8,15,2.0,107
"""


@pytest.mark.parametrize("chunk_rows", [1, 2, 10**6])
def test_malformed_and_duplicate_rows_are_counted_with_lines(
    tmp_path: Path, chunk_rows: int
) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text(BAD_ROWS)
    with tiny_blocks(32):
        log = open_log(path, chunk_rows=chunk_rows)
        events = log.read()
    report = log.report
    assert events.users.tolist() == [1, 6, 8]
    assert events.labels.tolist() == [1.0, 0.0, 0.0]
    assert report.rows_read == 10
    assert report.malformed_rows == 6
    assert report.duplicate_rows == 1
    assert report.rows_read == report.events_out + report.malformed_rows + report.duplicate_rows
    lines = [issue.line for issue in report.malformed_examples]
    assert lines == [3, 4, 6, 7, 8]  # MAX_EXAMPLES of the 6 (line 10 is the sixth)
    reasons = {issue.line: issue.reason for issue in report.malformed_examples}
    assert "non-numeric value 'abc' in column 'rating'" in reasons[3]
    assert "negative id '-3' in column 'userId'" in reasons[4]
    assert "expected 4 fields, found 3" in reasons[6]
    assert "column 'userId'" in reasons[7]
    assert "missing value" in reasons[8] and "'rating'" in reasons[8]
    assert report.duplicate_examples[0].line == 5
    assert "line 2" in report.duplicate_examples[0].reason
    summary = report.summary()
    assert "malformed rows dropped: 6" in summary and "line 3:" in summary
    assert report.to_dict()["duplicate_examples"][0]["line"] == 5


def test_dat_lines_with_wrong_field_count_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "ratings.dat"
    path.write_text(
        "1::2::5::978300760\n1::3::978300761\n\n2::2::4::978300762\n2::2::4::978300762\n"
    )
    log = open_log(path)
    events = log.read()
    assert events.users.tolist() == [1, 2]
    assert log.report.malformed_rows == 2 and log.report.duplicate_rows == 1
    assert [i.line for i in log.report.malformed_examples] == [2, 3]
    assert "expected 4 fields separated by '::', found 3" in log.report.malformed_examples[0].reason


def test_duplicates_across_batches_and_missing_raw_values(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    pq.write_table(
        pa.table(
            {
                "user_id": [1, 1, 2, 1, 1, 3],
                "video_id": [5, 6, 5, 5, 6, 7],
                "time_ms": [1000, 1000, 1000, 1000, 1500, 2000],
                "is_click": [1, 0, 1, 1, 1, 0],
                "play_time_ms": [10.0, None, 30.0, 40.0, 50.0, 60.0],
            }
        ),
        path,
    )
    log = open_log(path, chunk_rows=2)
    events = log.read()
    assert log.format == "kuairand"
    assert events.users.tolist() == [1, 1, 2, 1, 3]
    assert log.report.duplicate_rows == 1 and log.report.duplicate_examples[0].line == 4
    assert np.isnan(events.raw["play_time_ms"][1])
    assert "1 missing" in log.report.column_notes["play_time_ms"]
    assert "not in the file" in log.report.column_notes["is_like"]


def test_compressed_csv_and_parquet_timestamp_column(tmp_path: Path) -> None:
    plain = synthetic_path(tmp_path, "movielens", n=40)
    packed = tmp_path / "ratings.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert same_events(read_events(packed), read_events(plain))

    path = tmp_path / "stamps.parquet"
    stamps = pa.array([1_500_000_000_250, 1_500_000_001_999], pa.timestamp("ms"))
    pq.write_table(pa.table({"u": [1, 2], "i": [3, 4], "when": stamps}), path)
    events = read_events(path, columns=ColumnMap(user="u", item="i", time="when"))
    assert events.timestamps.tolist() == [1_500_000_000, 1_500_000_001]
    assert events.labels.tolist() == [1.0, 1.0]  # no label column: implicit positives


# ------------------------------------------------------------------------------------------------
# Bad files raise DatasetError naming the file and the column or line
# ------------------------------------------------------------------------------------------------


def test_missing_path_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nowhere\.csv: no such file"):
        open_log(tmp_path / "nowhere.csv")
    empty = tmp_path / "ratings.csv"
    empty.write_text("")
    with pytest.raises(DatasetError, match=r"ratings\.csv: is empty"):
        open_log(empty)
    empty.write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(DatasetError, match=r"ratings\.csv: has a header line but no data rows"):
        open_log(empty)
    table = pa.table({"u": pa.array([], pa.int64())})
    pq.write_table(table, tmp_path / "empty.parquet")
    with pytest.raises(DatasetError, match=r"empty\.parquet: has no rows"):
        open_log(tmp_path / "empty.parquet", columns=ColumnMap(user="u", item="u", time="u"))


def test_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("user_id,video_id,time_ms,is_like\n1,2,3,0\n")
    with pytest.raises(DatasetError, match=r"log\.csv: column 'is_click' is missing"):
        open_log(path, format="kuairand")
    columns = ColumnMap(user="user_id", item="video_id", time="ts")
    with pytest.raises(DatasetError, match=r"log\.csv: column 'ts' is missing.*time_ms"):
        open_log(path, columns=columns)
    with pytest.raises(DatasetError, match=r"log\.csv: cannot detect the log format"):
        open_log(path)


@pytest.mark.parametrize(
    ("text", "column", "line"),
    [
        ("userId,movieId,rating,timestamp\nu1,2,4,100\nu2,3,5,101\n", "userId", 2),
        ("userId,movieId,rating,timestamp\n1,2,good,100\n2,3,bad,101\n", "rating", 2),
        ("userId,movieId,rating,timestamp\n1,2,4,monday\n2,3,5,tuesday\n", "timestamp", 2),
    ],
)
def test_column_of_the_wrong_kind(tmp_path: Path, text: str, column: str, line: int) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text(text)
    for sort in ("auto", "require", "memory"):
        with pytest.raises(DatasetError, match=rf"ratings\.csv: column '{column}'.*line {line}"):
            list(open_log(path, sort=sort))


def test_parquet_label_of_the_wrong_kind(tmp_path: Path) -> None:
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"u": [1, 2], "i": [3, 4], "t": [5, 6], "y": ["yes", "no"]}), path)
    columns = ColumnMap(user="u", item="i", time="t", label="y")
    with pytest.raises(DatasetError, match=r"labels\.parquet: column 'y'.*must be numeric"):
        read_events(path, columns=columns)


def test_arguments_are_checked(tmp_path: Path) -> None:
    path = synthetic_path(tmp_path, "movielens", n=5)
    with pytest.raises(ValueError, match="chunk_rows"):
        open_log(path, chunk_rows=0)
    with pytest.raises(ValueError, match="format must be"):
        open_log(path, format="netflix")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="time_unit"):
        ColumnMap(user="u", item="i", time="t", time_unit="min")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="users has 2 elements but labels has 1"):
        EventChunk(
            users=np.zeros(2, np.uint64),
            items=np.zeros(2, np.uint64),
            labels=np.zeros(1, np.float32),
            timestamps=np.zeros(2, np.int64),
        )
    unnamed = tmp_path / "unnamed.csv"
    unnamed.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DatasetError, match=r"cannot tell which columns.*pass --columns user="):
        open_log(unnamed, format="csv")
    # The synthetic generic log names its columns user_id, item_id, time_ms: read as ms.
    synthetic = open_log(synthetic_path(tmp_path, "csv", n=5), format="csv")
    assert synthetic.columns.time == "time_ms" and synthetic.columns.time_unit == "ms"
