"""The README's example prints what the README says it prints (threads=1: bit-reproducible)."""

import contextlib
import io
import pathlib

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_example_output_is_current() -> None:
    example = README.split("## Example", 1)[1]
    code = example.split("```python", 1)[1].split("```", 1)[0]
    printed = example.split("Output", 1)[1].split("```", 2)[1].strip("\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert out.getvalue().strip("\n") == printed.strip("\n")
