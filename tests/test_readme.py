"""The README's code runs, and the example prints what the README says it prints (threads=1:
bit-reproducible, so the printed output is regenerated exactly by running the block)."""

import contextlib
import io
import os
import pathlib
import re

import pytest

from embcore.datasets import synthetic_log

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def _run(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    return out.getvalue()


def test_readme_example_output_is_current() -> None:
    example = README.split("## Example", 1)[1]
    code = example.split("```python", 1)[1].split("```", 1)[0]
    assert "threads=1" in code  # the printed numbers only reproduce with one thread
    printed = example.split("Output", 1)[1].split("```", 2)[1].strip("\n")
    assert _run(code).strip("\n") == printed.strip("\n")


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_every_python_block_runs(
    index: int, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks that read a log get a small synthetic one under the name they use."""
    monkeypatch.chdir(tmp_path)
    synthetic_log(tmp_path / "ratings.csv", "movielens", 2000, seed=0)
    _run(BLOCKS[index])
    if "replay(" in BLOCKS[index]:
        assert (tmp_path / "out" / "metrics.json").exists()
    assert os.getcwd() == str(tmp_path)


def test_readme_links_stay_inside_the_repository() -> None:
    root = pathlib.Path(__file__).resolve().parents[1]
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if "://" in target:
            continue
        assert not target.startswith(".."), target
        assert (root / target).exists(), target
