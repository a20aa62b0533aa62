"""Shapes real exports have (session 6, issue 14): each runs with the results of the plain log
it encodes, or exits 2 with one line naming the flag that fixes it; never a traceback, never a
silently wrong number. Results are compared, not just exit codes."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embcore import cli, datasets
from embcore.datasets import ColumnMap, DatasetError, hash_ids, open_log
from embcore.replay import replay

N = 1500
HEADER = ["user", "item", "time", "label"]


@pytest.fixture(scope="module")
def events() -> dict[str, np.ndarray]:
    """A plain log: integer ids, distinct increasing second times (no ties, so any
    reordering of the file sorts back to one order), 0/1 labels."""
    rng = np.random.default_rng(0)
    return {
        "user": rng.integers(1, 40, N),
        "item": rng.integers(1, 90, N),
        "time": 1_600_000_000 + np.cumsum(rng.integers(1, 1800, N)),
        "label": rng.integers(0, 2, N),
    }


def _csv(path: Path, header: list[str] | None, rows: list[tuple[Any, ...]], **kw: Any) -> Path:
    sep, newline = kw.get("sep", ","), kw.get("newline", "\n")
    lines = ([sep.join(header)] if header else []) + [sep.join(map(str, r)) for r in rows]
    data = (newline.join(lines) + newline).encode()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def _rows(ev: dict[str, np.ndarray], **columns: Any) -> list[tuple[Any, ...]]:
    """Rows of ``ev`` with some columns replaced by ``columns`` (lists of values)."""
    cols = {name: columns.get(name, ev[name]) for name in HEADER}
    return list(zip(*(cols[name] for name in HEADER), strict=True))


def _metrics(path: Path, **options: Any) -> dict[str, Any]:
    """Replay through realtime and batch (fixed period): the per-mode metrics, without
    timings and sizes."""
    m = replay(
        path,
        None,
        modes=["realtime", "batch"],
        period="1d",
        progress=False,
        figures=False,
        dim=8,
        **options,
    )

    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if "seconds" not in k and "bytes" not in k}
        return x

    return strip(m["modes"])


@pytest.fixture(scope="module")
def plain(events: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = _csv(tmp_path_factory.mktemp("plain") / "log.csv", HEADER, _rows(events))
    return _metrics(path)


def _iso(seconds: np.ndarray, fmt: str, offset_hours: int = 0) -> list[str]:
    zone = dt.timezone(dt.timedelta(hours=offset_hours))
    return [dt.datetime.fromtimestamp(int(t), zone).strftime(fmt) for t in seconds]


def _fails(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "warning:" not in line]
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------------------------
# The same events in other encodings give the same metrics


@pytest.mark.parametrize(
    "shape",
    [
        "reordered",
        "extra_columns",
        "crlf",
        "tsv",
        "csv_gz",
        "quoted",
        "time_ms",
        "unsorted",
        "duplicates",
        "parquet_reordered",
        "parquet_int32",
        "parquet_timestamp_tz",
        "parquet_small_row_groups",
    ],
)
def test_an_encoding_of_the_plain_log_gives_its_metrics(
    shape: str, events: dict[str, np.ndarray], plain: dict, tmp_path: Path
) -> None:
    ev, rows = events, _rows(events)
    options: dict[str, Any] = {}
    table = pa.table({name: ev[name] for name in HEADER})
    if shape == "reordered":
        path = _csv(tmp_path / "log.csv", HEADER[::-1], [r[::-1] for r in rows])
    elif shape == "extra_columns":
        path = _csv(tmp_path / "log.csv", [*HEADER, "country"], [(*r, "fr") for r in rows])
    elif shape == "crlf":
        path = _csv(tmp_path / "log.csv", HEADER, rows, newline="\r\n")
    elif shape == "tsv":
        path = _csv(tmp_path / "log.tsv", HEADER, rows, sep="\t")
    elif shape == "csv_gz":
        path = _csv(tmp_path / "log.csv.gz", HEADER, rows)
    elif shape == "quoted":
        quoted = [tuple(f'"{v}"' for v in r) for r in rows]
        path = _csv(tmp_path / "log.csv", [f'"{h}"' for h in HEADER], quoted)
    elif shape == "time_ms":
        path = _csv(tmp_path / "log.csv", HEADER, _rows(ev, time=ev["time"] * 1000 + 999))
        options["time_unit"] = "ms"
    elif shape == "unsorted":
        order = np.random.default_rng(1).permutation(N)
        path = _csv(tmp_path / "log.csv", HEADER, [rows[k] for k in order])
    elif shape == "duplicates":
        path = _csv(tmp_path / "log.csv", HEADER, rows + rows[:10])
    elif shape == "parquet_reordered":
        path = tmp_path / "log.parquet"
        pq.write_table(table.select(HEADER[::-1]), path)
    elif shape == "parquet_int32":
        path = tmp_path / "log.parquet"
        pq.write_table(pa.table({n: ev[n].astype(np.int32) for n in HEADER}), path)
    elif shape == "parquet_timestamp_tz":
        path = tmp_path / "log.parquet"
        stamps = pa.array(ev["time"] * 1000, pa.timestamp("ms", tz="Europe/Paris"))
        pq.write_table(table.set_column(2, "time", stamps), path)
    else:
        path = tmp_path / "log.parquet"
        pq.write_table(table, path, row_group_size=97)
    assert _metrics(path, **options) == plain


# --------------------------------------------------------------------------------------------
# Defects found and fixed (each test fails on the code before session 6)


@pytest.mark.parametrize(
    ("fmt", "offset"),
    [
        ("%Y-%m-%dT%H:%M:%SZ", 0),
        ("%Y-%m-%d %H:%M:%S", 0),  # no offset: UTC
        ("%Y-%m-%dT%H:%M:%S%z", 2),  # +0200
        ("%Y-%m-%dT%H:%M:%S+05:30", 0),  # shifted back below
        ("%Y-%m-%dT%H:%M:%S.123456Z", 0),
    ],
)
def test_iso_8601_text_times_are_read(
    fmt: str, offset: int, events: dict[str, np.ndarray], plain: dict, tmp_path: Path
) -> None:
    """They failed: "column 'time' has no usable value ... non-numeric value
    '2020-09-13T12:27:31Z'; the time column must be numeric"."""
    seconds = events["time"] + (5 * 3600 + 1800 if "+05:30" in fmt else 0)
    texts = _iso(seconds, fmt, offset)
    path = _csv(tmp_path / "log.csv", HEADER, _rows(events, time=texts))
    chunk = open_log(path).read()
    assert np.array_equal(chunk.timestamps, events["time"])
    assert _metrics(path) == plain


def test_iso_dates_and_calendar_errors(events: dict[str, np.ndarray], tmp_path: Path) -> None:
    days = _iso(events["time"], "%Y-%m-%d")
    days[7] = "2021-02-30"  # looks like a date, is none: one malformed row, named
    path = _csv(tmp_path / "log.csv", HEADER, _rows(events, time=days))
    log = open_log(path)
    chunk = log.read()
    assert log.report.malformed_rows == 1
    assert log.report.malformed_examples[0].line == 9
    assert "ISO-8601 time that is not a calendar date '2021-02-30'" in (
        log.report.malformed_examples[0].reason
    )
    midnights = events["time"] // 86_400 * 86_400
    assert np.array_equal(np.unique(chunk.timestamps), np.unique(np.delete(midnights, 7)))


def test_iso_text_times_in_parquet(
    events: dict[str, np.ndarray], plain: dict, tmp_path: Path
) -> None:
    path = tmp_path / "log.parquet"
    texts = _iso(events["time"], "%Y-%m-%dT%H:%M:%SZ")
    pq.write_table(pa.table({**{n: events[n] for n in HEADER}, "time": texts}), path)
    assert _metrics(path) == plain


def test_float_ids_as_text_are_their_integers(
    events: dict[str, np.ndarray], plain: dict, tmp_path: Path
) -> None:
    """'51.0' (a pandas id column with a missing value, written out) was 'non-integer id'
    while the same float in a Parquet column was read."""
    users = [f"{u}.0" for u in events["user"]]
    items = [f"{float(i):e}" for i in events["item"]]  # 5.100000e+01
    path = _csv(tmp_path / "log.csv", HEADER, _rows(events, user=users, item=items))
    assert _metrics(path) == plain


@pytest.mark.parametrize("where", ["csv", "parquet"])
def test_float_ids_above_2_53_are_refused_not_rounded(where: str, tmp_path: Path) -> None:
    """A float64 id above 2**53 has lost digits (2**60 + 1 and 2**60 read as one user); it
    was read silently from Parquet."""
    users = np.array([2.0**60, 3.0] * 20)
    times = 1_600_000_000 + np.arange(40)
    if where == "csv":
        path = _csv(
            tmp_path / "log.csv",
            HEADER,
            [(repr(float(u)), 1, t, 1) for u, t in zip(users, times, strict=True)],
        )
    else:
        path = tmp_path / "log.parquet"
        pq.write_table(
            pa.table(
                {"user": users, "item": np.ones(40, np.int64), "time": times, "label": np.ones(40)}
            ),
            path,
        )
    log = open_log(path, max_bad_rows="50%")
    assert len(log.read()) == 20 and log.report.malformed_rows == 20
    assert "id above 2**53 written as a float" in log.report.malformed_examples[0].reason


def test_dictionary_encoded_parquet_columns_are_read(
    events: dict[str, np.ndarray], plain: dict, tmp_path: Path
) -> None:
    """A categorical id column (dictionary<string>) failed with "non-numeric value '51'"."""
    path = tmp_path / "log.parquet"
    columns = {
        "user": pa.array([str(u) for u in events["user"]]).dictionary_encode(),
        "item": pa.array(events["item"]).dictionary_encode(),
        "time": pa.array(events["time"]),
        "label": pa.array([str(v) for v in events["label"]]).dictionary_encode(),
    }
    pq.write_table(pa.table(columns), path)
    assert pa.types.is_dictionary(pq.read_schema(path).field("user").type)
    assert _metrics(path) == plain


def test_decimal_parquet_columns_are_read(
    events: dict[str, np.ndarray], plain: dict, tmp_path: Path
) -> None:
    """DECIMAL ids and labels (database exports) were 'non-numeric value Decimal(...)'."""
    path = tmp_path / "log.parquet"
    columns = {
        "user": pa.array([Decimal(int(u)) for u in events["user"]], pa.decimal128(20, 0)),
        "item": events["item"],
        "time": events["time"],
        "label": pa.array([Decimal(int(v)) for v in events["label"]], pa.decimal128(5, 2)),
    }
    pq.write_table(pa.table(columns), path)
    assert _metrics(path) == plain


def test_true_false_labels_are_1_and_0(
    events: dict[str, np.ndarray], plain: dict, tmp_path: Path
) -> None:
    """A boolean column written as text ('True'/'false') had 'no usable value'; the same
    column in Parquet was read."""
    words = ["True" if v else "false" for v in events["label"]]
    path = _csv(tmp_path / "log.csv", HEADER, _rows(events, label=words))
    assert _metrics(path) == plain


def _splitmix(h: int) -> int:
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) % 2**64
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) % 2**64
    return h ^ (h >> 31)


def _reference_hash(text: str) -> int:
    """The slow, obvious reference of :func:`hash_ids`: FNV-1a 64 (blake2b-64 beyond 256
    bytes), then the splitmix64 finaliser."""
    data = text.strip().encode()
    if len(data) > 256:
        return _splitmix(int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little"))
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) % 2**64
    return _splitmix(h)


def test_hash_ids_match_the_reference() -> None:
    texts = ["a", " a ", "51", "00000000-0000-0000-0000-000000000033", "é" * 40, "x" * 256]
    texts += ["y" * 300, "A2SUAM1J3GNN3B"]
    assert hash_ids(texts).tolist() == [_reference_hash(t) for t in texts]
    assert len({int(h) for h in hash_ids([f"u{k}" for k in range(100_000)])}) == 100_000


@pytest.mark.parametrize("kind", ["md5", "uuid"])
def test_text_ids_run_with_hash_ids(
    kind: str, events: dict[str, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Hex digests and UUIDs could not be replayed from the shell at all ('map string ids to
    integers before loading'); --hash-ids reads them, one id per distinct text."""

    def text(value: int, salt: str) -> str:
        if kind == "md5":
            return hashlib.md5(f"{salt}{value}".encode()).hexdigest()
        return str(uuid.UUID(int=value + (10**6 if salt == "i" else 0)))

    users = [text(u, "u") for u in events["user"]]
    items = [text(i, "i") for i in events["item"]]
    path = _csv(tmp_path / "log.csv", HEADER, _rows(events, user=users, item=items))
    out = tmp_path / "out"
    line = _fails(["replay", str(path), "--out", str(out), "--no-progress"], capsys)
    assert "pass --hash-ids" in line and not out.exists()
    argv = ["replay", str(path), "--out", str(out), "--no-progress", "--no-figures"]
    assert cli.main([*argv, "--hash-ids"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["hash_ids"] is True
    realtime = metrics["modes"]["realtime"]
    assert realtime["users"] == len(set(users)) and realtime["items"] == len(set(items))
    chunk = open_log(path, hash_ids=True).read()
    assert np.array_equal(chunk.users, hash_ids(users))


def test_hash_ids_hash_numbers_as_their_text(events: dict[str, np.ndarray], tmp_path: Path) -> None:
    """A Parquet int column and the same ids as CSV text give the same hashed ids."""
    csv = _csv(tmp_path / "log.csv", HEADER, _rows(events))
    parquet = tmp_path / "log.parquet"
    pq.write_table(pa.table({n: events[n] for n in HEADER}), parquet)
    a, b = (open_log(p, hash_ids=True).read() for p in (csv, parquet))
    assert np.array_equal(a.users, b.users) and np.array_equal(a.items, b.items)
    assert np.array_equal(a.users, hash_ids([str(u) for u in events["user"]]))


def test_negative_ids_name_the_fix(
    events: dict[str, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The hint said 'map string ids to integers' for -1 user ids."""
    path = _csv(tmp_path / "log.csv", HEADER, _rows(events, user=-events["user"]))
    line = _fails(["replay", str(path), "--out", str(tmp_path / "o"), "--no-progress"], capsys)
    assert "negative id '-" in line and "drop or remap the negative ones" in line
    assert "--hash-ids" in line


def test_a_rating_column_is_the_label_not_ignored(
    events: dict[str, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Header user,item,time,rating ran with every row a positive (AUC n/a, the ratings
    silently ignored); now the rating is the label and 1-5 asks for --label-threshold."""
    ratings = events["label"] * 3 + 2  # 2 or 5
    header = ["user", "item", "time", "rating"]
    path = _csv(tmp_path / "log.csv", header, _rows(events, label=ratings))
    line = _fails(["replay", str(path), "--out", str(tmp_path / "o"), "--no-progress"], capsys)
    assert "in column 'rating' is outside [0, 1]" in line
    assert "pass --label-threshold X" in line
    chunk = open_log(path, label_threshold=4).read()
    assert np.array_equal(chunk.labels, events["label"])


def test_a_time_ms_column_is_read_in_milliseconds(
    events: dict[str, np.ndarray], plain: dict, tmp_path: Path
) -> None:
    """A header user_id,item_id,time_ms,label (embcore's own synthetic generic log) failed
    with 'cannot tell which columns hold user, item and time'."""
    header = ["user_id", "item_id", "time_ms", "label"]
    path = _csv(tmp_path / "log.csv", header, _rows(events, time=events["time"] * 1000))
    assert open_log(path).columns == ColumnMap(
        user="user_id", item="item_id", time="time_ms", label="label", time_unit="ms"
    )
    assert _metrics(path) == plain
    generic = datasets.synthetic_log(tmp_path / "synthetic.parquet", "parquet", 200)
    assert len(open_log(generic).read()) == 200


def test_a_second_time_like_column_is_not_ambiguous(
    events: dict[str, np.ndarray], plain: dict, tmp_path: Path
) -> None:
    """The new time names are a second tier: a log with 'timestamp' and 'datetime' still
    takes 'timestamp' (it did before)."""
    header = ["user", "item", "timestamp", "label", "datetime"]
    rows = [(*r, "2020-01-01") for r in _rows(events)]
    path = _csv(tmp_path / "log.csv", header, rows)
    assert open_log(path).columns.time == "timestamp"
    assert _metrics(path) == plain


# --------------------------------------------------------------------------------------------
# Degenerate but valid logs run, with the numbers they allow


@pytest.mark.parametrize("shape", ["one_row", "single_user", "single_item", "all_ones"])
def test_degenerate_logs_run(shape: str, events: dict[str, np.ndarray], tmp_path: Path) -> None:
    ev = dict(events)
    if shape == "one_row":
        ev = {k: v[:1] for k, v in ev.items()}
    elif shape == "single_user":
        ev["user"] = np.full(N, 7)
    elif shape == "single_item":
        ev["item"] = np.full(N, 7)
    else:
        ev["label"] = np.ones(N, np.int64)
    path = _csv(tmp_path / "log.csv", HEADER, _rows(ev))
    out = tmp_path / "out"
    assert cli.main(["replay", str(path), "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())["modes"]["realtime"]
    assert m["events"] == len(ev["user"])
    assert m["users"] == len(set(ev["user"].tolist()))
    assert m["items"] == len(set(ev["item"].tolist()))
    if shape in ("one_row", "all_ones"):
        assert m["engagement"]["auc"] is None  # one class only: no AUC, not a number
    assert (out / "report.html").exists()


def test_a_header_only_log_names_the_problem(tmp_path: Path) -> None:
    path = _csv(tmp_path / "log.csv", HEADER, [])
    with pytest.raises(DatasetError, match="has a header line but no data rows"):
        open_log(path).read()


def test_iso_rows_parse_as_pythons_datetime_does() -> None:
    """The per-row ISO path (used when a column is not clean) against datetime.fromisoformat,
    on random dates (leap days, offsets, fractions) and a few that are no dates."""
    from embcore.datasets import _ISO_PATTERN, _match, _parse_iso_ns

    rng = np.random.default_rng(3)
    texts, expected = [], []
    for _ in range(2000):
        seconds = int(rng.integers(-2_000_000_000, 4_000_000_000))
        minutes = int(rng.integers(-14 * 60, 14 * 60 + 1))
        zone = dt.timezone(dt.timedelta(minutes=minutes))
        moment = dt.datetime.fromtimestamp(seconds, zone)
        micros = int(rng.integers(0, 1_000_000))
        style = int(rng.integers(0, 5))
        if style == 0:
            text, value = moment.strftime("%Y-%m-%dT%H:%M:%S%z"), seconds * 10**9
        elif style == 1:
            text = moment.strftime("%Y-%m-%d %H:%M:%S") + f".{micros:06d}"
            naive = moment.replace(tzinfo=dt.UTC)
            value = int(naive.timestamp()) * 10**9 + micros * 1000
        elif style == 2:
            text = moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%MZ")
            value = (seconds - seconds % 60) * 10**9
        elif style == 3:
            text = moment.isoformat()  # +hh:mm
            value = seconds * 10**9
        else:
            text = moment.strftime("%Y-%m-%d")
            midnight = dt.datetime(moment.year, moment.month, moment.day, tzinfo=dt.UTC)
            value = int(midnight.timestamp()) * 10**9
        texts.append(text)
        expected.append(value)
    bad = ["2021-02-29", "2020-13-01", "2020-04-31", "2020-01-01T24:00:00", "3000-01-01"]
    text = pa.array(texts + bad + ["2024-02-29T23:59:59Z"])
    rows = _match(text, _ISO_PATTERN)
    assert rows.all()
    out, read = _parse_iso_ns(text, rows)
    assert read.tolist() == [True] * len(texts) + [False] * len(bad) + [True]
    assert out[: len(texts)].tolist() == expected
    assert out[-1] == int(dt.datetime(2024, 2, 29, 23, 59, 59, tzinfo=dt.UTC).timestamp()) * 10**9


def test_a_mixed_iso_column_takes_the_row_path(tmp_path: Path) -> None:
    """Offsets on some rows only: the clean-column cast fails, each row is read by itself."""
    texts = ["2020-09-13T12:00:00Z", "2020-09-13 14:00:00", "2020-09-13T18:00:00+02:00", "x"]
    path = _csv(tmp_path / "log.csv", HEADER, [(1, k, t, 1) for k, t in enumerate(texts)])
    log = open_log(path, max_bad_rows=1)
    chunk = log.read()
    noon = int(dt.datetime(2020, 9, 13, 12, tzinfo=dt.UTC).timestamp())
    assert chunk.timestamps.tolist() == [noon, noon + 2 * 3600, noon + 4 * 3600]
    assert log.report.malformed_rows == 1
