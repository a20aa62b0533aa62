"""Bit-for-bit golden outputs: training, scores, file bytes and a tiny study.

``tests/golden/golden.json`` was recorded with ``python tests/golden/fingerprints.py``
before the one-engine redesign; the refactored code must reproduce every fingerprint.
Where a fingerprint changed on purpose, ``golden.json`` says so under ``changed`` (the
path, why, and the value before), the file holds the new value, and the old float sums
are still checked within a tolerance: the one-engine redesign changed MF's ``score``
summation order and the FFM/FM dot-product order (last bits only), nothing else.
"""

import json
import math
import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).parent / "golden"
sys.path.insert(0, str(HERE))

import fingerprints  # noqa: E402

GOLDEN = json.loads((HERE / "golden.json").read_text())


@pytest.fixture(scope="module")
def current():
    return fingerprints.fingerprints()


def _walk(want, got, path=""):
    if isinstance(want, dict):
        assert isinstance(got, dict), path
        assert sorted(want) == sorted(got), path
        for k in want:
            yield from _walk(want[k], got[k], f"{path}/{k}")
    elif isinstance(want, list):
        assert len(want) == len(got), path
        for k, (w, g) in enumerate(zip(want, got, strict=True)):
            yield from _walk(w, g, f"{path}[{k}]")
    else:
        yield path, want, got


@pytest.mark.parametrize("key", sorted(k for k in GOLDEN if k != "changed"))
def test_reproduces_golden_output(current, key):
    for path, want, got in _walk(GOLDEN[key], current[key], key):
        if isinstance(want, float):
            assert math.isclose(want, got, rel_tol=0, abs_tol=0) or (
                math.isnan(want) and math.isnan(got)
            ), f"{path}: {got!r} != golden {want!r}"
        else:
            assert want == got, f"{path}: {got!r} != golden {want!r}"


@pytest.mark.parametrize("path", sorted(GOLDEN.get("changed", {})))
def test_deliberate_changes_stay_within_rounding(current, path):
    change = GOLDEN["changed"][path]
    assert change["why"]
    node = current
    for part in change["path"]:
        node = node[part]
    before = change["before"]
    if isinstance(before, float):
        assert math.isclose(node, before, rel_tol=1e-5), f"{path}: {node} vs {before}"
