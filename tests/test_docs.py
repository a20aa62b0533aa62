"""The repository's docs stay true to it: every relative link of README.md and docs/*.md points
at a file inside the repository, and every ``embcore ...`` command in their shell blocks parses
with today's flags (it would fail with "unrecognized arguments" or "invalid choice" otherwise)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from embcore import cli

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCK = re.compile(r"```(?:bash|sh|console|shell)?\n(.*?)```", flags=re.S)
COMMAND = re.compile(r"(?:^|&& )(embcore (?:study|replay|bench|track)\b[^#|]*)")
REDIRECT = re.compile(r"^\d?>")


def _links(page: Path) -> list[str]:
    text = page.read_text()
    return [
        target
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
        if "://" not in target and not target.startswith("mailto:")
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_point_inside_the_repository(page: Path) -> None:
    for target in _links(page):
        resolved = (page.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{page.name}: {target} is outside the repository"
        assert resolved.exists(), f"{page.name}: {target} does not exist"


def _commands(page: Path) -> list[str]:
    found: list[str] = []
    for block in SHELL_BLOCK.findall(page.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            match = COMMAND.search(line.strip().removeprefix("$ "))
            if match and "[" not in match.group(1) and "--help" not in match.group(1):
                found.append(match.group(1).strip())
    return found


COMMANDS = [(page.name, command) for page in PAGES for command in _commands(page)]


def test_the_docs_show_commands() -> None:
    assert len(COMMANDS) >= 10  # the extraction works (a broken pattern would find none)


@pytest.mark.parametrize(("page", "command"), COMMANDS)
def test_every_documented_command_parses(page: str, command: str) -> None:
    parser = cli.build_parser()
    try:
        words = shlex.split(command)[1:]
        cut = next((k for k, word in enumerate(words) if REDIRECT.match(word)), len(words))
        args, extra = parser.parse_known_args(words[:cut])
    except SystemExit:
        pytest.fail(f"{page}: {command!r} does not parse")
    assert not extra, f"{page}: {command!r}: unrecognized {extra}"
    assert args.command in cli.COMMANDS


def test_benchmarks_page_lists_every_group() -> None:
    from embcore import bench

    text = " ".join((ROOT / "docs" / "benchmarks.md").read_text().split())
    groups = text.split("Groups (`--only`", 1)[1].split(". ", 1)[0]
    missing = [name for name in bench.GROUPS if f"`{name}`" not in groups]
    assert not missing, f"docs/benchmarks.md does not list the bench groups {missing}"


def test_declared_licence_matches_the_license_file() -> None:
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]
    assert pyproject["license"] == cargo["license"] == "Apache-2.0"
    assert pyproject["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
