"""Tests of embcore.replay: progressive validation, exact AUC / log-loss, outputs, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from embcore import cli, runs, validation
from embcore import replay as rp
from embcore.datasets import read_events, synthetic_log
from embcore.modes import Trainer

FAST = {"dim": 8, "progress": False, "figures": False, "track_rate": 1.0}


# --------------------------------------------------------------------------------------------
# Reference implementations


def pairwise_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    pos = scores[labels >= 0.5]
    neg = scores[labels < 0.5]
    if pos.size == 0 or neg.size == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum()
    equal = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * equal) / (pos.size * neg.size))


def reference_logloss(scores: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(1.0 / (1.0 + np.exp(-scores.astype(np.float64))), 1e-7, 1 - 1e-7)
    y = labels.astype(np.float64)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


scores_with_ties = st.lists(
    st.one_of(
        st.sampled_from([-1.0, 0.0, 0.5, 2.0]),
        st.floats(-5, 5, allow_nan=False, width=32),
    ),
    min_size=0,
    max_size=60,
)


# --------------------------------------------------------------------------------------------
# Metrics


@given(scores_with_ties, st.data())
def test_auc_matches_pairwise_reference(values: list[float], data: st.DataObject) -> None:
    labels = data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values)))
    s = np.array(values, dtype=np.float32)
    y = np.array(labels, dtype=np.float32)
    expected = pairwise_auc(s, y)
    got = rp.auc(s, y)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=1e-12)


@given(scores_with_ties, st.data())
def test_grouped_auc_matches_per_group_reference(values: list[float], data: st.DataObject) -> None:
    n = len(values)
    labels = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), np.float32)
    groups = np.array(data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), np.int64)
    # float32 scores take the packed-key sort; float64 ones float32 cannot hold, lexsort.
    fine = np.array(values, dtype=np.float64) + np.arange(n) * 1e-12
    for s in (np.array(values, dtype=np.float32), np.array(values, dtype=np.float64), fine):
        got = rp.grouped_auc(s, labels, groups, 4)
        for g in range(4):
            expected = pairwise_auc(s[groups == g], labels[groups == g])
            if expected is None:
                assert np.isnan(got[g])
            else:
                assert got[g] == pytest.approx(expected, abs=1e-12)


def test_auc_treats_negative_zero_as_a_tie_and_orders_negative_scores() -> None:
    s = np.array([-0.0, 0.0, -3.0, -1.0, 2.0, -2.0], dtype=np.float32)
    y = np.array([1, 0, 0, 1, 1, 0], dtype=np.float32)
    assert rp.auc(s, y) == pytest.approx(pairwise_auc(s, y))


def test_auc_all_tied_is_one_half() -> None:
    assert rp.auc(np.zeros(10), np.arange(10) % 2) == 0.5


@given(
    st.lists(st.floats(-40, 40, allow_nan=False), min_size=1, max_size=50),
    st.data(),
)
def test_logloss_matches_numpy(values: list[float], data: st.DataObject) -> None:
    n = len(values)
    labels = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), np.float32)
    s = np.array(values, dtype=np.float32)
    assert rp.logloss(s, labels) == pytest.approx(reference_logloss(s, labels), rel=1e-9)


def test_logloss_clips_confident_mistakes() -> None:
    assert rp.logloss(np.array([1e4]), np.array([0.0])) == pytest.approx(-np.log(1e-7), rel=1e-6)
    assert rp.logloss(np.zeros(0), np.zeros(0)) is None


def test_item_history_counts_across_chunks() -> None:
    history = validation._ItemHistory()
    index, age = history.observe(np.array([5, 6, 5], np.uint64), np.array([0, 1, 2]))
    assert index.tolist() == [1, 1, 2] and age.tolist() == [0, 0, 2]
    index, age = history.observe(np.array([5, 7, 6], np.uint64), np.array([20, 21, 30]))
    assert index.tolist() == [3, 1, 2] and age.tolist() == [20, 0, 29]


@given(
    st.lists(st.lists(st.integers(0, 6), min_size=0, max_size=30), min_size=1, max_size=5),
    st.integers(1, 4),
    st.integers(1, 40),
)
def test_validation_groups_match_a_per_event_reference(
    chunks: list[list[int]], fresh_interactions: int, fresh_seconds: int
) -> None:
    """Interaction index, age, fresh flags and buckets of every event, against a dict loop."""
    pv = rp.ProgressiveValidation(["m"], fresh_interactions, fresh_seconds, window_seconds=7)
    count: dict[int, int] = {}
    first: dict[int, int] = {}
    expected: list[tuple[int, int]] = []
    clock = 1_600_000_000
    all_times: list[np.ndarray] = []
    for chunk in chunks:
        times = clock + np.arange(len(chunk), dtype=np.int64) * 3
        all_times.append(times)
        clock = int(times[-1]) + 5 if len(chunk) else clock
        for item, t in zip(chunk, times.tolist(), strict=True):
            count[item] = count.get(item, 0) + 1
            first.setdefault(item, t)
            expected.append((count[item], t - first[item]))
        pv.add_events(np.array(chunk, np.uint64), np.ones(len(chunk)), times)
        pv.add_scores("m", np.zeros(len(chunk), np.float32))
    m = pv.metrics()["m"]
    index = np.array([e[0] for e in expected], dtype=np.int64)
    age = np.array([e[1] for e in expected], dtype=np.int64)
    assert m["events"] == len(expected)
    assert m["fresh_events"] == int((index <= fresh_interactions).sum())
    assert m["fresh_age_events"] == int((age < fresh_seconds).sum())
    buckets = np.searchsorted(np.array(rp.INTERACTION_EDGES), index, side="left")
    assert m["by_item_interactions"]["events"] == np.bincount(buckets, minlength=6).tolist()
    hours = np.searchsorted(np.array(rp.AGE_EDGES_HOURS) * 3600, age, side="right")
    assert m["by_item_age"]["events"] == np.bincount(hours, minlength=7).tolist()
    times = np.concatenate(all_times) if all_times else np.zeros(0, np.int64)
    if times.size:
        first = int(times.min()) // 7
        assert m["over_time"]["events"] == np.bincount(times // 7 - first).tolist()
        assert m["over_time"]["start"][0] == first * 7


@given(
    st.lists(
        st.tuples(
            st.integers(0, 4),  # item
            st.booleans(),  # label
            st.one_of(st.sampled_from([-1.0, 0.0, 0.5]), st.floats(-3, 3, width=32)),
            st.integers(0, 5),  # seconds after the previous event
        ),
        min_size=0,
        max_size=80,
    ),
    st.integers(1, 5),
    st.sampled_from([1, 3, 1 << 18]),
    st.booleans(),
)
def test_validation_metrics_match_per_grouping_pairwise_references(
    rows: list[tuple[int, bool, float, int]], block: int, chunk: int, nonfinite: bool
) -> None:
    """Exact AUC and log-loss of every grouping (overall, fresh by count, interaction bucket,
    time window), computed in blocks of any size, against per-group pairwise references;
    non-finite scores are left out."""
    items = np.array([r[0] for r in rows], np.uint64)
    labels = np.array([r[1] for r in rows], np.float32)
    scores = np.array([r[2] for r in rows], np.float32)
    if nonfinite and scores.size:
        scores[:: max(1, scores.size // 3)] = np.inf
    times = 1_600_000_000 + np.cumsum([r[3] for r in rows]).astype(np.int64)
    pv = rp.ProgressiveValidation(["m"], fresh_interactions=2, fresh_seconds=10, window_seconds=6)
    for a in range(0, len(rows), chunk):
        pv.add_events(items[a : a + chunk], labels[a : a + chunk], times[a : a + chunk])
        pv.add_scores("m", scores[a : a + chunk])
    saved = validation._BLOCK
    validation._BLOCK = block
    try:
        m = pv.metrics()["m"]
    finally:
        validation._BLOCK = saved
    seen: dict[int, int] = {}
    index = np.zeros(len(rows), np.int64)
    for k, item in enumerate(items.tolist()):
        seen[item] = seen.get(item, 0) + 1
        index[k] = seen[item]
    finite = np.isfinite(scores)

    def check(got: Any, mask: np.ndarray) -> None:
        mask = mask & finite
        want = pairwise_auc(scores[mask], labels[mask])
        assert got == (None if want is None else pytest.approx(want, abs=1e-12))

    check(m["auc"], np.ones(len(rows), bool))
    assert m["scored_events"] == int(finite.sum())
    check(m["fresh_auc"], index <= 2)
    check(m["mature_auc"], index > 2)
    buckets = np.searchsorted(np.array(rp.INTERACTION_EDGES), index, side="left")
    for b, got in enumerate(m["by_item_interactions"]["auc"]):
        check(got, buckets == b)
    # Events per group count the unscored ones too.
    assert m["by_item_interactions"]["events"] == np.bincount(buckets, minlength=6).tolist()
    # Log-loss per group: np.bincount's sums block by block, to the bit.
    saved = validation._BLOCK
    validation._BLOCK = block
    try:
        terms = validation._logloss_terms32_blocks(scores[finite], labels[finite])
        sums = validation._bincount(buckets[finite], 6, terms)
    finally:
        validation._BLOCK = saved
    n_scored = np.bincount(buckets[finite], minlength=6)
    with np.errstate(invalid="ignore", divide="ignore"):
        want_loss = np.where(n_scored > 0, sums / np.maximum(n_scored, 1), np.nan)
    assert m["by_item_interactions"]["logloss"] == runs.finite(want_loss)
    if len(rows):
        window = times // 6 - times.min() // 6
        assert m["over_time"]["events"] == np.bincount(window).tolist()
        for w, got in enumerate(m["over_time"]["auc"]):
            check(got, window == w)
        if finite.any():
            want = reference_logloss(scores[finite], labels[finite])
            assert m["logloss"] == pytest.approx(want, rel=1e-5)


@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.one_of(st.sampled_from([-1.0, 0.5, np.inf]), st.floats(-3, 3, width=32)),
            st.integers(0, 9),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_validation_windows_past_the_packed_bits_sort_apart_with_the_same_results(
    rows: list[tuple[bool, float, int]],
) -> None:
    """A log with more windows than the packed key has bits for (forced here to 1 bit, two
    windows) takes the window grouping's own sort: every metric is the same."""
    labels = np.array([r[0] for r in rows], np.float32)
    scores = np.array([r[1] for r in rows], np.float32)
    times = 1_600_000_000 + np.cumsum([r[2] for r in rows]).astype(np.int64)

    def metrics() -> dict[str, Any]:
        pv = rp.ProgressiveValidation(["m"], 2, 10, window_seconds=3)
        pv.add_events(np.arange(len(rows), dtype=np.uint64) % 3, labels, times)
        pv.add_scores("m", scores)
        return pv.metrics()["m"]

    packed = metrics()
    saved = validation._WINDOW_BITS
    validation._WINDOW_BITS = 1
    try:
        apart = metrics()
    finally:
        validation._WINDOW_BITS = saved
    assert json.dumps(apart, sort_keys=True) == json.dumps(packed, sort_keys=True)


def test_grouped_auc_refuses_groups_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"groups must be in \[0, 2\), got 0 to 2"):
        rp.grouped_auc([0.1, 0.2], [0, 1], [0, 2], 2)


# --------------------------------------------------------------------------------------------
# Progressive validation: never score an event with a model that has seen it


def test_replay_feeds_every_event_once_and_keeps_the_pre_update_scores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One consume(return_scores=True) call per chunk and mode, the events in order, no
    separate scoring call; the metrics are computed from exactly the scores consume returned."""
    log = synthetic_log(tmp_path / "ratings.csv", "movielens", 3000, seed=4)
    events = read_events(log)
    trainers: list[Any] = []

    class Recording(Trainer):
        def __init__(self, mode: str, *args: Any, **kwargs: Any) -> None:
            super().__init__(mode, *args, **kwargs)
            self.consumed: list[np.ndarray] = []
            self.returned: list[np.ndarray] = []
            trainers.append(self)

        def score(self, users: Any, items: Any) -> Any:
            raise AssertionError("the replay scores in the training call, not with score()")

        def consume(self, users, items, labels, timestamps, weights=None, **options):  # type: ignore[no-untyped-def]
            assert options == {"return_scores": True}
            n_done = sum(len(c) for c in self.consumed)
            index = np.arange(n_done, n_done + len(users))
            assert np.array_equal(events.items[index], items)
            assert np.array_equal(events.timestamps[index], timestamps)
            self.consumed.append(index)
            got = super().consume(users, items, labels, timestamps, weights, **options)
            self.returned.append(got)
            return got

    monkeypatch.setattr(runs, "Trainer", Recording)  # the run layer starts the modes
    metrics = rp.replay(
        log, None, modes=["realtime", "batch", "hybrid"], period=1800, chunk_rows=500, **FAST
    )
    assert [t.mode for t in trainers] == ["realtime", "batch", "hybrid"]
    for trainer in trainers:
        assert np.array_equal(np.concatenate(trainer.consumed), np.arange(len(events)))
        assert len(trainer.consumed) == 6  # 3000 events in chunks of 500
        scores = np.concatenate(trainer.returned)
        engagement = metrics["modes"][trainer.mode]["engagement"]
        assert engagement["events"] == len(events)
        assert engagement["auc"] == pytest.approx(rp.auc(scores, events.labels), abs=1e-12)


def _write_unique_pairs_log(path: Path, n: int = 4000, seed: int = 0) -> Path:
    """Every (user, item) pair once, items never repeat, labels are fair coins."""
    rng = np.random.default_rng(seed)
    users = rng.integers(1, 40, n)
    items = np.arange(1, n + 1)
    ratings = np.where(rng.random(n) < 0.5, 5.0, 1.0)
    times = 1_600_000_000 + np.arange(n) * 5
    lines = ["userId,movieId,rating,timestamp"]
    lines += [f"{u},{i},{r},{t}" for u, i, r, t in zip(users, items, ratings, times, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_no_leakage_on_unpredictable_labels(tmp_path: Path) -> None:
    """Labels are coin flips of never-repeated items: an honest score has AUC ~ 0.5, while
    scoring after training (leakage) would learn each item's own label."""
    log = _write_unique_pairs_log(tmp_path / "ratings.csv")
    options = {"dim": 8, "learning_rate": 0.5}
    metrics = rp.replay(log, None, modes=["realtime", "batch"], period="1h", **FAST | options)
    for mode in ("realtime", "batch"):
        assert abs(metrics["modes"][mode]["engagement"]["auc"] - 0.5) < 0.05
    # The same model, scoring each event after training on it, does see the label.
    events = read_events(log)
    leaky = Trainer("realtime", seed=0, init_scale=0.01, **options)
    scores = np.empty(len(events), dtype=np.float32)
    for a in range(0, len(events), 256):
        s = slice(a, a + 256)
        leaky.consume(events.users[s], events.items[s], events.labels[s], events.timestamps[s])
        scores[s] = leaky.score(events.users[s], events.items[s])
    leaky_auc = rp.auc(scores, events.labels)
    assert leaky_auc is not None and leaky_auc > 0.6


@pytest.mark.parametrize("mode", ["realtime", "batch", "hybrid"])
def test_replay_equals_per_event_progressive_validation(tmp_path: Path, mode: str) -> None:
    """At threads=1 every event is scored exactly as scoring it alone, then training on it,
    one event at a time, would score it."""
    log = synthetic_log(tmp_path / "u.data", "movielens-100k", 1500, seed=2)
    events = read_events(log)
    metrics = rp.replay(log, None, modes=[mode], period=3600, chunk_rows=400, **FAST)
    reference = Trainer(mode, period=3600, seed=0, dim=8, init_scale=0.01)
    scores = np.empty(len(events), dtype=np.float32)
    for k in range(len(events)):
        s = slice(k, k + 1)
        reference.advance(int(events.timestamps[k]))
        scores[s] = reference.score(events.users[s], events.items[s])
        reference.consume(events.users[s], events.items[s], events.labels[s], events.timestamps[s])
    engagement = metrics["modes"][mode]["engagement"]
    fresh = _fresh(events.items)
    # Batch serves the same frozen snapshot: bit-exact. Real-time and hybrid take the score
    # from the training pass, the live model just before the event's own step; it differs
    # from one-call-per-event training only by the global bias's synchronisation and by the
    # row a first sighting creates before it is scored (tests/test_trainer_scores.py).
    tolerance = 1e-12 if mode == "batch" else 1e-3
    assert engagement["auc"] == pytest.approx(rp.auc(scores, events.labels), abs=tolerance)
    assert engagement["logloss"] == pytest.approx(
        reference_logloss(scores, events.labels), abs=max(tolerance, 1e-7)
    )
    assert engagement["fresh_auc"] == pytest.approx(
        rp.auc(scores[fresh], events.labels[fresh]), abs=3 * tolerance
    )


def _fresh(items: np.ndarray, first: int = 20) -> np.ndarray:
    seen: dict[int, int] = {}
    out = np.zeros(items.size, dtype=bool)
    for k, item in enumerate(items.tolist()):
        seen[item] = seen.get(item, 0) + 1
        out[k] = seen[item] <= first
    return out


def test_parallel_and_serial_replays_agree(tmp_path: Path) -> None:
    log = synthetic_log(tmp_path / "ratings.dat", "movielens-dat", 2000, seed=3)
    a = rp.replay(log, None, period="2h", parallel=True, **FAST)
    b = rp.replay(log, None, period="2h", parallel=False, **FAST)
    for mode in ("realtime", "batch"):
        assert a["modes"][mode]["engagement"] == b["modes"][mode]["engagement"]
        assert a["modes"][mode]["norm_quantiles"] == b["modes"][mode]["norm_quantiles"]


# --------------------------------------------------------------------------------------------
# End to end


def test_movielens_replay_writes_every_output(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    log = synthetic_log(tmp_path / "ratings.csv", "movielens", 3000, seed=1)
    out = tmp_path / "out"
    code = cli.main(
        [
            "replay",
            str(log),
            "--out",
            str(out),
            "--period",
            "2h",
            "--modes",
            "realtime,batch",
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "events replayed" in printed and "realtime" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"config", "log_report", "modes", "comparison", "runtime_seconds", "figures"} <= set(
        metrics
    )
    assert metrics["log_report"]["events_out"] == 3000 and metrics["log_report"]["complete"]
    assert metrics["config"]["format"] == "movielens"
    for mode in ("realtime", "batch"):
        m = metrics["modes"][mode]
        for key in (
            "events",
            "items",
            "users",
            "maturity",
            "learning_peak_interactions",
            "norm_quantiles",
            "norm_popularity_spearman",
            "engagement",
        ):
            assert key in m, key
        assert m["events"] == 3000
        eng = m["engagement"]
        for key in ("auc", "logloss", "fresh_auc", "fresh_logloss", "fresh_age_auc", "over_time"):
            assert key in eng, key
        assert 0.0 <= eng["auc"] <= 1.0 and eng["logloss"] > 0
        over = eng["over_time"]
        assert sum(over["events"]) == 3000
        assert len(over["start"]) == len(over["auc"]) == len(over["logloss"])
        assert sum(eng["by_item_interactions"]["events"]) == 3000
    for name, file in metrics["figures"].items():
        assert file == f"{name}.png" and (out / file).stat().st_size > 1000
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page
    assert not list(tmp_path.glob(".out.partial-*"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.csv"], "no such file"),
        (["LOG", "--format", "tsv"], "argument --format: invalid choice: 'tsv'"),
        (["LOG", "--modes", "realtime,weekly"], "argument --modes: unknown mode 'weekly'"),
        (["LOG", "--period", "0"], "argument --period: expected a positive duration"),
        (["LOG", "--period=-6h"], "argument --period: expected a positive duration"),
        (["LOG", "--fresh-seconds", "soon"], "argument --fresh-seconds: expected a positive"),
        (["LOG", "--alpha", "3"], "--alpha must be in (0, 2), got 3.0"),
        (["LOG", "--learning-rate", "-1"], "--learning-rate must be"),
        (["LOG", "--columns", "user=a"], "--columns needs user=, item= and time="),
        (["LOG", "--max-bad-rows", "lots"], "argument --max-bad-rows: expected a count"),
        (["LOG", "--format", "kuairand"], "KuaiRand"),
    ],
)
def test_bad_inputs_exit_2_and_leave_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    log = synthetic_log(tmp_path / "ratings.csv", "movielens", 200, seed=0)
    out = tmp_path / "results" / "replay"
    argv = [
        str(log) if a == "LOG" else str(tmp_path / a) if a == "missing.csv" else a for a in argv
    ]
    code = cli.main(["replay", *argv, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("embcore replay: error:")
    assert message.lower() in err.lower(), err
    assert not out.exists()
    assert not list(tmp_path.rglob("*partial*"))


def test_out_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    log = synthetic_log(tmp_path / "ratings.csv", "movielens", 200, seed=0)
    out = tmp_path / "taken"
    out.write_text("keep me")
    assert cli.main(["replay", str(log), "--out", str(out), "--no-progress"]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert out.read_text() == "keep me"


def test_bad_model_option_is_a_config_error(tmp_path: Path) -> None:
    log = synthetic_log(tmp_path / "ratings.csv", "movielens", 50, seed=0)
    with pytest.raises(rp.ReplayConfigError, match=r"^--dim must be an integer"):
        rp.replay(log, None, progress=False, dim=0)
    with pytest.raises(rp.ReplayConfigError, match="unknown model option"):
        rp.replay(log, None, progress=False, dimension=8)
    with pytest.raises(rp.ReplayConfigError, match="realtime_events was removed: .* exact"):
        rp.replay(log, None, progress=False, realtime_events=1)
    with pytest.raises(rp.ReplayConfigError, match="logistic"):
        rp.replay(log, None, progress=False, loss="squared")
