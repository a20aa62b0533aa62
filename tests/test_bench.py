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
    assert {
        "limit_probe_1t",
        "limit_probe_adagrad_2t",
        "limit_probe_adagrad_ieee_1t",
        "limit_probe_mapped_1t",
    } <= names
    assert "limit_probe_ieee_2t" not in names
    assert all(r.value > 0 for r in results)
    # One scan figure, from the probe built as BENCHMARKS.md says.
    assert [r.name for r in results].count("limit_probe_scan_gbps") == 1


def test_smaps_fields_are_read_in_bytes() -> None:
    text = "Rss:              932368 kB\nAnonHugePages:    802816 kB\nSwap: 0 kB\n"
    assert bench._smaps_bytes("AnonHugePages", text) == 802816 * 1024
    assert bench._smaps_bytes("Rss", text) == 932368 * 1024
    assert bench._smaps_bytes("Hugetlb", text) is None


def test_training_alternates_each_figure_with_its_probe(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # The order of measurements, recorded: each repeat runs a probe, then its embcore figure.
    calls: list[str] = []
    fake = bench.Probe(tmp_path / "probe", "", (1,), "")
    mapped = bench.Probe(tmp_path / "mapped", "", (1,), "")
    monkeypatch.setattr(
        bench,
        "build_probes",
        lambda tmp: {
            "limit_probe": fake,
            "limit_probe_adagrad": fake,
            "limit_probe_mapped": mapped,
        },
    )

    def run_probe(probe, w, threads, scans=None):  # type: ignore[no-untyped-def]
        calls.append(f"{probe.exe.name}{threads}")
        if scans is not None:
            scans.append(5.0)
        return 100.0 * threads

    def timed(fn):  # type: ignore[no-untyped-def]
        calls.append("train")
        fn()
        return 0.5

    monkeypatch.setattr(bench, "run_probe", run_probe)
    monkeypatch.setattr(bench, "timed", timed)
    monkeypatch.setattr(bench, "bench_monitor", lambda *a: None)
    w = bench.Workload(users=500, items=500, events=2_000, repeats=2)
    results: list[Result] = []
    bench.bench_training(w, results, tmp_path)
    # SGD: (probe, mapped probe, train) x 2; Adagrad: (probe 1t, train, probe 2t, train) x 2.
    sgd = ["probe1", "mapped1", "train"] * 2
    assert calls == sgd + ["probe1", "train", "probe2", "train"] * 2
    by_name = {r.name: r.value for r in results}
    assert by_name["limit_probe_mapped_1t"] == 100.0
    assert "limit_probe_mapped_1t" in next(r.note for r in results if r.name == "train_sgd_1t")
    assert by_name["limit_probe_adagrad_2t"] == 200.0
    assert by_name["train_adagrad_2t"] == 4_000.0
    assert by_name["limit_probe_scan_gbps"] == 5.0
    assert len(by_name) == len(results)
    # The probe group then measures only what the training group did not.
    calls.clear()
    monkeypatch.setattr(
        bench,
        "build_probes",
        lambda tmp: {"limit_probe": bench.Probe(tmp_path / "probe", "", (1, 2), ""), "x": fake},
    )
    bench.bench_probe(w, results, tmp_path)
    assert calls == ["probe2"] * 2 + ["probe1"] * 2
    names = [r.name for r in results]
    assert len(names) == len(set(names)) and {"limit_probe_2t", "x_1t"} <= set(names)


def test_ffm_is_judged_against_mf_on_its_own_events() -> None:
    results = [
        Result("train_adagrad_1t", 100.0, "events/s"),
        Result("ffm_4fields_1t", 3.0, "events/s", extra={"mf_same_events": 5.0}),
    ]
    r = bench.ratios(results)["FFM 4 fields 1t / MF Adagrad 1t, same events"]
    assert r["value"] == pytest.approx(0.6)
    assert r["met"] is True


def test_a_missing_compiler_is_noted_once_per_run(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(bench.shutil, "which", lambda name: None)
    assert bench.build_probes(tmp_path) == {}
    assert bench.build_probes(tmp_path) == {}
    assert capsys.readouterr().err.count("no C compiler found") == 1
