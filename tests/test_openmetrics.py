"""OpenMetrics export: the text parses with prometheus_client's parsers and carries the
monitor's numbers; a real HTTP scrape of serve() and of ``embcore track --serve`` works."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import embcore

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.openmetrics.parser import (  # noqa: E402
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text  # noqa: E402

from embcore.metrics import openmetrics, serve  # noqa: E402
from embcore.tables_io import Version  # noqa: E402
from embcore.track import Tracker  # noqa: E402


def samples(families) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in families:
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def fed_monitor() -> embcore.Monitor:
    rng = np.random.default_rng(0)
    m = embcore.Monitor(sample_rate=1.0)
    ids = np.arange(200, dtype=np.uint64)
    for k in range(4):
        m.observe(ids, rng.normal(size=(200, 8)).astype(np.float32), counts=np.full(200, k + 1))
    return m


def test_openmetrics_text_parses_and_matches_the_summary() -> None:
    m = fed_monitor()
    s = m.summary()
    got = samples(parse_openmetrics(openmetrics(m)))
    assert got[("embcore_monitor_updates_total", ())] == s["updates"] == 600
    assert got[("embcore_monitor_memory_bytes", ())] == s["memory_bytes"]
    key = ("embcore_monitor_update", (("quantile", "0.5"), ("statistic", "drift")))
    assert got[key] == pytest.approx(s["overall"]["drift"]["p50"])
    key = ("embcore_monitor_update_mean", (("statistic", "norm"),))
    assert got[key] == pytest.approx(s["overall"]["norm"]["mean"])
    assert any(name == "embcore_monitor_update_by_popularity_p50" for name, _ in got)


def test_health_and_track_families() -> None:
    table = embcore.EmbeddingTable(4)
    table.set(np.arange(5, dtype=np.uint64), np.full((5, 4), 3.0, np.float32))
    health = embcore.Monitor.health(table, max_norm=1.0)
    versions = [
        {
            "version": 1,
            "name": "v1",
            "rows": 5,
            "nan_rows": 2,
            "drift_p50": 0.25,
            "maturity_versions_0.05_median": 3,
        }
    ]
    got = samples(parse_openmetrics(openmetrics(None, health, versions, alerts=["x"])))
    assert got[("embcore_health_over_norm_rows", ())] == 5
    assert got[("embcore_health_rows", ())] == 5
    assert got[("embcore_track_nan_rows", ())] == 2
    assert got[("embcore_track_drift_p50", ())] == 0.25
    assert got[("embcore_track_versions_total", ())] == 1
    assert got[("embcore_track_maturity_median_versions", (("alpha", "0.05"),))] == 3
    assert got[("embcore_track_alerts", ())] == 1


def test_serve_answers_a_real_scrape_with_live_values(tmp_path: Path) -> None:
    m = fed_monitor()
    server = serve(m, host="127.0.0.1", port=0)
    try:
        host, port = server.server_address[:2]
        url = f"http://{host}:{port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        assert samples(parse_text(text))[("embcore_monitor_updates_total", ())] == 600
        m.observe(np.arange(200, dtype=np.uint64), np.ones((200, 8), np.float32))
        request = urllib.request.Request(
            url, headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
        assert samples(parse_openmetrics(text))[("embcore_monitor_updates_total", ())] == 800
    finally:
        server.shutdown()
        server.server_close()


def test_cli_serve_keeps_an_endpoint_up(tmp_path: Path) -> None:
    for v in (1, 2):
        rows = np.random.default_rng(v).normal(size=(50, 8))
        np.savez(tmp_path / f"v{v}.npz", ids=np.arange(50), weights=rows)
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "embcore.cli",
            "track",
            str(tmp_path / "v*.npz"),
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
            "--no-figures",
            "--serve",
            "127.0.0.1:0",
            "--serve-seconds",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            url = None
            deadline = time.monotonic() + 60
            while url is None and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                if "serving http://" in line:
                    url = line.split("serving ", 1)[1].strip()
            assert url is not None, proc.stderr.read() if proc.poll() is not None else "no url"
            with urllib.request.urlopen(url, timeout=10) as response:
                got = samples(parse_text(response.read().decode()))
            assert got[("embcore_track_versions_total", ())] == 2
            assert got[("embcore_track_rows", ())] == 50
            assert got[("embcore_monitor_updates_total", ())] == 50
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_version_rows_for_openmetrics_come_from_a_tracker(tmp_path: Path) -> None:
    t = Tracker(tmp_path / "s")
    t.add(Version.from_arrays("v1", np.arange(3), np.eye(3)))
    got = samples(parse_openmetrics(openmetrics(t.monitor, versions=t.versions)))
    assert got[("embcore_track_rows", ())] == 3


def test_collector_in_a_registry_of_ones_own() -> None:
    from embcore.metrics import Collector

    registry = prometheus_client.CollectorRegistry()
    registry.register(Collector(lambda: (embcore.Monitor(), [], [])))
    assert registry.get_sample_value("embcore_monitor_updates_total") == 0.0
    assert openmetrics(embcore.Monitor()).endswith("# EOF\n")
