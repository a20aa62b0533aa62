"""The ``embcore`` command line.

Each subcommand lives in its own module, which declares its flags (``add_parser(sub)``) and
runs them (``run(args) -> int``); this file only lists the subcommands. Configuration errors
exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Subcommand name -> module (``embcore.<module>`` has ``add_parser`` and ``run``).
COMMANDS = {"study": "study", "replay": "replay", "bench": "bench", "track": "track"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embcore",
        description="Train behavioural embeddings on event streams and monitor how they evolve.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        importlib.import_module(f"embcore.{module}").add_parser(sub)
    return parser


def _version() -> str:
    from embcore import __version__

    return f"embcore {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(f"embcore.{COMMANDS[args.command]}")
    return int(module.run(args))


if __name__ == "__main__":
    sys.exit(main())
