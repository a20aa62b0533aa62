"""The bench harness's judging of targets (pure logic; no benchmark is run here)."""

from __future__ import annotations

import pytest

from embcore import bench
from embcore.bench import Result


def _doc(results: list[Result], missing: list[str]) -> dict[str, object]:
    return {
        "results": [r.__dict__ for r in results],
        "ratios": bench.ratios(results),
        "missing_peers": missing,
        "machine": {"cpu": "cpu", "cores": 2, "platform": "linux"},
    }


def test_ratios_judge_each_target_measured_in_the_run() -> None:
    results = [
        Result("train_sgd_1t", 6.0, "events/s"),
        Result("limit_probe_1t", 10.0, "events/s"),
        Result("train_adagrad_1t", 4.0, "events/s"),
        Result("train_adagrad_2t", 7.6, "events/s"),
        Result("ffm_4fields_1t", 1.9e6, "events/s"),
        Result("drift_cosine", 50e6, "rows/s"),
        Result("limit_probe_scan_gbps", 20.0, "GB/s"),
        Result("model_resident_bytes", 1300.0, "bytes", extra={"payload": 1000}),
    ]
    r = bench.ratios(results)
    assert r["SGD 1t / limit_probe_1t"] == {"value": pytest.approx(0.6), "target": 0.6, "met": True}
    assert r["Adagrad 2t / Adagrad 1t"]["value"] == pytest.approx(1.9)
    assert r["Adagrad 2t / Adagrad 1t"]["met"] is True
    # An absolute target: 1.9M events/s against 2M.
    assert r["FFM 4 fields d=8 1t / 2M events/s"]["met"] is False
    # Derived: two float32 tables of 32 columns per compared row.
    drift = r["snapshot drift GB/s / probe scan GB/s"]["value"]
    assert drift == pytest.approx(50e6 * 2 * 32 * 4 / 1e9 / 20.0)
    assert r["payload / resident bytes (>= 1/1.3)"]["met"] is True
    # Figures not measured in this run (no Adagrad probe, no peers) are not judged.
    assert "Adagrad 1t / limit_probe_adagrad_1t" not in r
    assert not any("implicit" in k for k in r)


def test_table_names_missing_peers_and_verdicts() -> None:
    results = [Result("train_sgd_1t", 3.0, "events/s"), Result("limit_probe_1t", 10.0, "events/s")]
    text = bench.format_table(_doc(results, ["lightfm"]))
    assert "NOT met" in text
    assert "peers not importable here (not measured): lightfm" in text
    assert "--no-build-isolation lightfm" in text


def test_every_group_is_selectable() -> None:
    assert bench.GROUPS == tuple(bench.GROUP_RUNNERS)
    assert {"training", "probe", "peers", "memory", "snapshot", "ffm"} <= set(bench.GROUPS)


def test_ieee_probe_ratios_are_context_without_a_target() -> None:
    results = [
        Result("train_adagrad_1t", 6.0, "events/s"),
        Result("limit_probe_adagrad_1t", 20.0, "events/s"),
        Result("limit_probe_adagrad_ieee_1t", 5.0, "events/s"),
    ]
    r = bench.ratios(results)
    ieee = r["Adagrad 1t / limit_probe_adagrad_ieee_1t (no -ffast-math)"]
    assert ieee["value"] == pytest.approx(1.2)
    assert ieee["target"] is None
    assert r["Adagrad 1t / limit_probe_adagrad_1t"]["met"] is False


@pytest.mark.skipif(bench.shutil.which("gcc") is None, reason="no C compiler")
def test_probe_group_builds_both_arithmetics(tmp_path) -> None:  # type: ignore[no-untyped-def]
    w = bench.Workload(users=2_000, items=2_000, events=20_000, repeats=1)
    results: list[Result] = []
    bench.bench_probe(w, results, tmp_path)
    names = {r.name for r in results}
    assert {"limit_probe_1t", "limit_probe_adagrad_2t", "limit_probe_adagrad_ieee_1t"} <= names
    assert "limit_probe_ieee_2t" not in names
    assert all(r.value > 0 for r in results)
    # One scan figure, from the probe built as BENCHMARKS.md says.
    assert [r.name for r in results].count("limit_probe_scan_gbps") == 1


def test_smaps_fields_are_read_in_bytes() -> None:
    text = "Rss:              932368 kB\nAnonHugePages:    802816 kB\nSwap: 0 kB\n"
    assert bench._smaps_bytes("AnonHugePages", text) == 802816 * 1024
    assert bench._smaps_bytes("Rss", text) == 932368 * 1024
    assert bench._smaps_bytes("Hugetlb", text) is None
