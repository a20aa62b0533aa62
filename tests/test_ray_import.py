"""``require_ray`` refuses a ``ray`` that is not Ray: a folder named ``ray`` on the import path
(Ray's own session folder /tmp/ray, for a command started in /tmp) imports as an empty namespace
package, whose missing ``init`` used to surface as an AttributeError after a whole bench ran."""

from __future__ import annotations

import sys
import types

import pytest

from embcore import bench
from embcore.distributed._ray import require_ray


def _fake_ray(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    fake = types.ModuleType("ray")
    fake.__path__ = [str(tmp_path / "ray")]  # what a namespace package has
    monkeypatch.setitem(sys.modules, "ray", fake)


def test_a_folder_named_ray_is_not_taken_for_ray(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _fake_ray(monkeypatch, tmp_path)
    with pytest.raises(ImportError, match=r"is not Ray .*/tmp/ray"):
        require_ray()


def test_the_bench_skips_the_group_and_says_why(monkeypatch, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    _fake_ray(monkeypatch, tmp_path)
    results: list[bench.Result] = []
    bench.bench_distributed_group(bench.Workload.quick(), results)
    assert results == []
    assert "distributed skipped: the 'ray' module found at" in capsys.readouterr().err
