"""Tests for the study's measurement protocol (embcore.protocol) against slow per-item
references, and for the protocol's place in ``embcore study``: common items, settled
references, degenerate designs refused or flagged, claims, the grid and the selection."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embcore import cli, protocol
from embcore.analysis import Trajectories
from embcore.study import (
    GRID,
    StudyConfigError,
    check_design,
    run_grid,
    run_selection,
    run_study,
)

VERDICTS = {"reproduced", "direction only", "inconclusive", "contradicted", "n/a"}


def random_grid(seed: int, n_items: int = 6, d: int = 3):
    """Trajectories with e(0) at count 0 and increasing counts, plus each item's views."""
    rng = np.random.default_rng(seed)
    ids, counts, rows, views = [], [], [], []
    for item in range(n_items):
        k = int(rng.integers(1, 8))
        c = np.concatenate([[0], np.sort(rng.choice(np.arange(1, 40), k, replace=False))])
        ids += [item] * c.size
        counts += c.tolist()
        rows.append(rng.normal(size=(c.size, d)))
        views.append(int(c[-1] + rng.integers(0, 3)))
    traj = Trajectories.from_arrays(ids, counts, np.vstack(rows))
    return traj, (np.arange(n_items, dtype=np.uint64), np.array(views))


def slow_serving_change(traj, views, n_bins):
    """Per item and bin: sum over views n = 2..V of 1 - cos(S(n), S(n-1)), with S(n) the row
    of the last record whose count is below n."""
    sums = np.zeros((len(views[1]), n_bins))
    counts_per_bin = np.zeros((len(views[1]), n_bins))
    for i, item in enumerate(views[0]):
        mine = traj.ids == item
        c, r = traj.counts[mine], traj.rows[mine].astype(float)

        def serving(n, c=c, r=r):
            return r[np.flatnonzero(c < n)[-1]]

        for n in range(2, int(views[1][i]) + 1):
            if n > 2**n_bins:
                break
            b = math.ceil(math.log2(n)) - 1
            a, prev = serving(n), serving(n - 1)
            cos = a @ prev / (np.linalg.norm(a) * np.linalg.norm(prev))
            sums[i, b] += 1 - cos
            counts_per_bin[i, b] += 1
    return sums, counts_per_bin


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_update_curve_matches_the_view_by_view_reference(seed):
    traj, views = random_grid(seed)
    grid = protocol.ServingGrid.build(traj, views)
    sums, n_views = protocol.update_curve(grid, n_bins=6)
    want_sums, want_views = slow_serving_change(traj, views, 6)
    np.testing.assert_allclose(sums, want_sums, atol=1e-9)
    np.testing.assert_array_equal(n_views, want_views)


def test_a_batch_jump_lands_on_the_first_view_after_its_publish():
    # Publishes after 5 and 12 views; the item had 20 views in all.
    rows = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]
    traj = Trajectories.from_arrays([9, 9, 9], [0, 5, 12], rows)
    grid = protocol.ServingGrid.build(traj, (np.array([9], np.uint64), np.array([20])))
    sums, views = protocol.update_curve(grid, n_bins=5)
    # View 6 (bin 5-8) sees the 90-degree turn, view 13 (bin 9-16) the next one.
    assert sums[0].tolist() == [0.0, 0.0, 1.0, 1.0, 0.0]
    assert views[0].tolist() == [1, 2, 4, 8, 4]
    # The last change serves no view when it comes after the item's last view.
    short = protocol.ServingGrid.build(traj, (np.array([9], np.uint64), np.array([12])))
    assert protocol.update_curve(short, n_bins=5)[0][0].tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]


def slow_maturity(counts, rows, reference, threshold):
    """First count of the final run of records within the threshold, if the run has >= 2."""
    d = 1 - rows @ reference / (np.linalg.norm(rows, axis=1) * np.linalg.norm(reference))
    inside = d < threshold
    j = len(d)
    while j > 0 and inside[j - 1]:
        j -= 1
    return counts[j] if len(d) - j >= 2 else np.inf


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.01, 0.05, 0.1, 0.5]))
def test_maturity_points_match_a_per_item_loop(seed, alpha):
    traj, views = random_grid(seed)
    grid = protocol.ServingGrid.build(traj, views)
    rng = np.random.default_rng(seed + 1)
    # References near each item's last row, so some items mature and some do not.
    reference = grid.last_rows() + 0.3 * rng.normal(size=grid.last_rows().shape)
    points = protocol.maturity_points(grid, reference, [alpha])
    for i in range(len(grid)):
        s, e = grid.starts[i], grid.ends[i]
        rows = grid.rows[s:e].astype(float)
        ref = reference[i]
        d0 = 1 - rows[0] @ ref / (np.linalg.norm(rows[0]) * np.linalg.norm(ref))
        assert points.absolute[alpha][i] == slow_maturity(grid.counts[s:e], rows, ref, alpha)
        assert points.relative[alpha][i] == slow_maturity(grid.counts[s:e], rows, ref, alpha * d0)
        assert points.never_learned[alpha][i] == (d0 < alpha)


def test_relative_maturity_cannot_be_decided_by_the_initial_row():
    # An item whose start is already within alpha of its reference: the absolute criterion
    # calls it never learned and mature at 0; the relative one asks for 95% of its own way.
    start, target = np.array([1.0, 0.05]), np.array([1.0, 0.0])
    path = np.array([start + (target - start) * f for f in (0, 0.5, 0.9, 0.99, 1.0, 1.0)])
    traj = Trajectories.from_arrays([1] * 6, [0, 1, 2, 3, 4, 5], path)
    grid = protocol.ServingGrid.build(traj, (np.array([1], np.uint64), np.array([6])))
    points = protocol.maturity_points(grid, [target], [0.05])
    assert points.never_learned[0.05][0] and points.absolute[0.05][0] == 0
    assert 0 < points.relative[0.05][0] < np.inf
    # Cosine distances ignore the scale of the rows: a 10x larger start changes nothing.
    scaled = Trajectories.from_arrays([1] * 6, [0, 1, 2, 3, 4, 5], path * 10)
    grid10 = protocol.ServingGrid.build(scaled, (np.array([1], np.uint64), np.array([6])))
    again = protocol.maturity_points(grid10, [target], [0.05])
    assert again.relative[0.05][0] == points.relative[0.05][0]
    summary = protocol.maturity_summary(points, 0.05, "absolute")
    assert summary["never_learned"] == 1 and summary["n_analysed"] == 0
    assert summary["mature_at_zero_share"] == 1.0


def test_settled_and_common_ids():
    assert protocol.settled([0, 500, 501], horizon=1000, window=300, period=200).tolist() == [
        True,
        True,
        False,
    ]
    assert protocol.common_ids([5, 1, 3], [3, 5], [5, 3, 9]).tolist() == [3, 5]
    assert protocol.serving_milestones()[: protocol.DENSE_VIEWS] == list(
        range(1, protocol.DENSE_VIEWS + 1)
    )


def test_peak_needs_enough_items():
    sums = np.array([[0.0, 0.9]] * 3 + [[0.5, 0.0]] * 9)
    views = np.array([[1.0, 1.0]] * 3 + [[1.0, 0.0]] * 9)
    # Bin 1 has the larger mean change but only 3 items: with min_items=10 it cannot win.
    assert protocol.curve_summary(sums, views, min_items=10)["peak_bin"] == 0
    assert protocol.curve_summary(sums, views, min_items=3)["peak_bin"] == 1
    assert protocol.curve_summary(sums, views, min_items=13)["peak_bin"] is None
    out = protocol.curve_summary(sums, views, min_items=10)
    assert out["competing"] == [True, False] and out["items"] == [12, 3]


def test_mature_by_n_keeps_never_matured_items_in_the_denominator():
    n = np.array([0.0, 3.0, 3.0, np.inf])
    curve = protocol.mature_by_n(n, points=4)
    assert curve["share"][-1] == 0.75
    # Kaplan-Meier censors the never-matured item instead: S falls to 0.25 and stays.
    assert protocol.km_curve(n, np.array([5, 5, 5, 7]))["km"][-1] == [3, 0.25]


# -- in the study ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("protocol") / "study"
    metrics = run_study(out, scale="tiny", period="1h", window="2h", progress=False, n_boot=50)
    return metrics, out


def test_protocol_uses_items_common_to_every_mode(tiny):
    metrics, _ = tiny
    population = metrics["protocol"]["population"]
    per_mode = population["tracked_per_mode"]
    assert 0 < population["settled"] <= population["tracked_in_every_mode"]
    assert population["tracked_in_every_mode"] <= min(per_mode.values())
    for m in metrics["protocol"]["modes"].values():
        head = m["maturity"]["headline"]
        assert head["criterion"] == "relative" and head["n_items"] == population["settled"]
        assert set(m["maturity"]["by_criterion"]["absolute"]) == {"0.01", "0.05", "0.1"}
        assert len(m["update_curve"]["update"]) == protocol.N_BINS
    norms = metrics["protocol"]["norms"]
    assert norms["common_items"] <= min(norms["items_per_mode"].values())
    assert metrics["config"]["settle_seconds"] == 3 * 3600  # window 2 h + period 1 h


def test_claims_and_learning_are_reported(tiny):
    metrics, out = tiny
    keys = [c["key"] for c in metrics["claims"]]
    assert keys == ["maturity", "peak", "norms", "norms_popularity", "fresh_lift"]
    for c in metrics["claims"]:
        assert c["verdict"] in VERDICTS and c["band_text"]
        if c["estimate"] is not None and c["interval"][0] is not None:
            assert c["interval"][0] <= c["interval"][1]
    learning = metrics["learning"]
    for m in learning["modes"].values():
        assert 0.5 < m["auc"] < 1 and m["logloss"] > 0 and m["events"] > 0
        assert -1 <= m["score_affinity_correlation"] <= 1
    refs = learning["reference_policies"]
    assert set(refs) == {"random", "non_personalised_oracle", "oracle"}
    assert refs["oracle"]["available"] and refs["oracle"]["ctr"] > max(
        m["ctr"] for m in learning["modes"].values()
    )
    # Burn-in: two periods; everything scored starts there.
    assert metrics["config"]["burn_in_seconds"] == 7200
    for m in metrics["modes"].values():
        assert m["engagement"]["scored"]["from_seconds"] == 7200
        assert m["engagement"]["scored"]["impressions"] < m["engagement"]["impressions"]
    page = (out / "report.html").read_text()
    assert page.index("Do the models learn?") < page.index("<h2>Summary</h2>")
    assert "band [0.1, 0.4]" in page


def test_small_populations_are_flagged(tiny):
    metrics, out = tiny
    codes = {f["code"] for f in metrics["flags"]}
    assert "small_population" in codes
    assert "Flags: this run is degenerate" in (out / "report.html").read_text()


def test_check_design_counts_serving_publishes():
    assert check_design(72 * 3600, ["realtime", "batch"], 6 * 3600) == []
    assert check_design(72 * 3600, ["realtime"], 72 * 3600)[0]["code"] == "nothing_scored"
    few = check_design(72 * 3600, ["realtime", "batch"], 86_400)
    assert [f["code"] for f in few] == ["few_publishes"]
    assert "publishes 2 time(s)" in few[0]["message"]


def test_cli_refuses_a_degenerate_default_design(tmp_path, capsys):
    out = tmp_path / "out"
    # tiny = 6 h: a 6 h period never publishes before the horizon (the default, auto, is 1h).
    argv = ["study", "--scale", "tiny", "--period", "6h", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "publishes 0 time(s)" in err and "--allow-degenerate" in err
    assert not out.exists()


def test_allow_degenerate_runs_and_flags(tmp_path):
    argv = ["study", "--scale", "tiny", "--out", str(tmp_path / "o"), "--no-progress"]
    assert cli.main([*argv, "--allow-degenerate", "--period", "2h"]) == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["flags"][0]["code"] == "few_publishes"


def test_study_api_refuses_when_asked(tmp_path):
    with pytest.raises(StudyConfigError, match="at least 4 are needed"):
        run_study(tmp_path / "x", scale="tiny", period="6h", progress=False, allow_degenerate=False)
    assert not (tmp_path / "x").exists()


def test_grid_smoke_on_the_tiny_world(tmp_path):
    grid = run_grid(tmp_path / "g", scale="tiny", cells=[0, 2, 12], progress=False, n_boot=20)
    cells = {row["cell"]: row for row in grid["cells"]}
    assert list(cells) == ["mf-p6h-wperiod-e1", "mf-p6h-w1d-e1", "ffm-p6h-wperiod-e1"]
    assert cells["mf-p6h-wperiod-e1"]["status"] == "ran"
    # A 6 h period never publishes inside the 6 h tiny horizon: flagged, not refused.
    assert "few_publishes" in cells["mf-p6h-wperiod-e1"]["flags"]
    assert cells["ffm-p6h-wperiod-e1"]["claims"]["peak"]["verdict"] in VERDICTS
    assert (tmp_path / "g" / "mf-p6h-wperiod-e1" / "metrics.json").exists()
    saved = json.loads((tmp_path / "g" / "metrics.json").read_text())
    assert saved["grid"] == {k: list(v) for k, v in GRID.items()}


def test_selection_picks_the_lowest_progressive_logloss(tmp_path):
    sel = run_selection(
        tmp_path / "s",
        scale="tiny",
        learning_rates=[0.01, 0.2],
        init_scales=[0.01],
        progress=False,
        period="1h",
    )
    best = min(sel["rows"], key=lambda r: r["logloss"])
    assert sel["chosen"] == {"learning_rate": best["learning_rate"], "init_scale": 0.01}
    assert sel["seed"] == 1 and len(sel["rows"]) == 2
    assert json.loads((tmp_path / "s" / "metrics.json").read_text())["chosen"] == sel["chosen"]


def test_report_readings_name_the_peak_bins():
    from embcore import report

    curve = {"peak_views": "17-32", "bins": ["2"], "update": [0.1], "competing": [True]}
    head = {"median_reached": False, "median_interactions": None, "mature_share": 0.05}
    metrics = {
        "config": {},
        "comparison": {},
        "modes": {},
        "protocol": {
            "population": {"settled": 363},
            "modes": {"batch": {"update_curve": curve, "maturity": {"headline": head}}},
        },
    }
    texts = report.readings(metrics)
    assert "batch views 17-32 on 363 settled items" in texts["update_curve"]
    assert "batch not reached" in texts["maturity_protocol"]


def test_the_summary_line_of_a_claim_carries_its_note(tiny):
    from embcore.study import _summary_text

    metrics, out = tiny
    claims = [dict(c, note="") for c in metrics["claims"]]
    claims[0]["note"] = "batch's median is never reached"
    text = _summary_text({**metrics, "claims": claims}, out)
    lines = [line for line in text.splitlines() if line.startswith("  claim ")]
    assert len(lines) == len(claims)
    assert lines[0].endswith(f"{claims[0]['verdict']} (batch's median is never reached)")
    assert all(line.endswith(c["verdict"]) for line, c in zip(lines[1:], claims[1:], strict=True))
