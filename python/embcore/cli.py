"""The ``embcore`` command line.

Each subcommand lives in its own module, which declares its flags (``add_parser(sub)``) and
runs them (``run(args) -> int``); this file lists the subcommands and gives them what every
command shares:

* **Help that explains itself.** Every subparser is a :class:`Parser` whose help shows each
  flag's default and allowed values, with a one-line description (flags shared by several
  subcommands and declared without one get it from :data:`embcore.cli_args.COMMON_HELP`).
* **No tracebacks for user mistakes or interrupts.** A bad flag, a bad option or log
  (:class:`embcore.errors.EmbcoreError` and the applications' configuration errors), or an
  output path that cannot be written prints one line, ``embcore CMD: error: ...``, on stderr
  and exits 2; Ctrl-C exits 130 and SIGTERM 143, after the run's staging directory is removed
  (:class:`embcore.runs.OutputDirectory` cleans up when the exception unwinds through it).
  Messages name flags (``--alpha``), not Python options (``alpha``).
* **Warnings** (``ReplayWarning``, a thread count above the machine's cores) print one line
  each, ``embcore CMD: warning: ...``.

>>> build_parser().parse_args(["replay", "log.csv"]).period
'auto'
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import re
import signal
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any

from embcore import cli_args

#: Subcommand name -> module (``embcore.<module>`` has ``add_parser`` and ``run``).
COMMANDS = {"study": "study", "replay": "replay", "bench": "bench", "track": "track"}

EXIT_USAGE = 2
EXIT_INTERRUPT = 130
EXIT_TERMINATED = 143
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader left


class HelpFormatter(argparse.HelpFormatter):
    """Help with every flag's default (``default: 6h``) and allowed values
    (``{auto,movielens,...}``); description lines indented by two spaces (examples) are kept
    as written, the rest is wrapped."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out: list[str] = []
        for line in text.splitlines():
            if line.startswith("  ") or not line.strip():
                out.append(indent + line)
            else:
                out.append(super()._fill_text(line, width, indent))
        return "\n".join(out)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        shown = (
            action.option_strings
            and default is not argparse.SUPPRESS
            and not isinstance(action, argparse._StoreTrueAction | argparse._HelpAction)
            and not isinstance(action, argparse._VersionAction)
            and "default" not in text
        )
        if shown:
            if isinstance(default, list | tuple):
                default = ",".join(map(str, default))
            shown_default = "not set" if default is None else str(default).replace("%", "%%")
            text += f" (default: {shown_default})"
        return text


_NEGATIVE_VALUE = re.compile(r"^-\.?\d")


class Parser(argparse.ArgumentParser):
    """An argument parser with :class:`HelpFormatter`, help for the shared flags declared
    without one, and one-line errors: ``embcore CMD: error: ... (see embcore CMD --help)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        # A value starting with a dash and a digit (``--period -1h``, ``--init-scale -1e-3``)
        # is a value to check, not an unknown option: argparse's own pattern takes only plain
        # negative numbers and says "expected one argument" for the rest.
        self._negative_number_matcher = _NEGATIVE_VALUE

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        if not kwargs.get("help"):
            for name in args:
                if name in cli_args.COMMON_HELP:
                    kwargs["help"] = cli_args.COMMON_HELP[name]
                    break
        return super().add_argument(*args, **kwargs)

    def error(self, message: str) -> Any:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="embcore",
        description="Train behavioural embeddings on event streams and monitor how they evolve.",
        epilog="Run 'embcore COMMAND --help' for a command's flags.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    for name, module in COMMANDS.items():
        _COMMAND_PARSERS[name] = importlib.import_module(f"embcore.{module}").add_parser(sub)
    return parser


_COMMAND_PARSERS: dict[str, argparse.ArgumentParser] = {}


def _unrecognized(command: str, extra: Sequence[str]) -> None:
    """Unknown flags, reported by the command's parser (``embcore replay: error: ...``) with the
    closest flag it has, instead of the top-level ``embcore: error``."""
    parser = _COMMAND_PARSERS[command]
    known = [flag for action in parser._actions for flag in action.option_strings]
    message = f"unrecognized arguments: {' '.join(extra)}"
    for word in extra:
        if word.startswith("--"):
            close = difflib.get_close_matches(word.split("=", 1)[0], known, n=1)
            if close:
                message += f"; did you mean {close[0]}?"
                break
    parser.error(message)


def _version() -> str:
    from embcore import __version__

    return f"embcore {__version__}"


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so every ``with`` block unwinds (and cleans up)."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _user_errors() -> tuple[type[BaseException], ...]:
    from embcore import errors

    found: list[type[BaseException]] = [errors.EmbcoreError]
    for module, name in (("replay", "ReplayConfigError"), ("study", "StudyConfigError")):
        found.append(getattr(importlib.import_module(f"embcore.{module}"), name))
    return tuple(found)


# Python option names in messages -> flags (``learning_rate must ...`` -> ``--learning-rate``).
_OPTION_FLAGS = {
    "alpha": "--alpha",
    "track_rate": "--track-rate",
    "init_scale": "--init-scale",
    "learning_rate": "--learning-rate",
    "dim": "--dim",
    "epochs": "--epochs",
    "threads": "--threads",
    "seed": "--seed",
    "period": "--period",
}
_OPTION_PATTERN = re.compile(r"(?<![\w-])(" + "|".join(_OPTION_FLAGS) + r")(?= must\b| =| is\b|=)")


def flag_message(message: str) -> str:
    """A library message in flag names.

    >>> flag_message("bad model option: learning_rate must be a finite number, got -1")
    '--learning-rate must be a finite number, got -1'
    >>> flag_message("alpha must be in (0, 2), got 3")
    '--alpha must be in (0, 2), got 3'
    """
    message = re.sub(r"^bad (?:model )?option: ", "", message)
    return _OPTION_PATTERN.sub(lambda m: _OPTION_FLAGS[m.group(1)], message)


class _FlagNamesOnStderr:
    """stderr for the length of a command, translating its one-line error messages into flag
    names (the subcommands print their own configuration errors)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if text.startswith(f"{_command}: error: "):
            text = f"{_command}: error: " + flag_message(text[len(_command) + 9 :])
        return int(self._stream.write(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def _flag_names_on_stderr() -> Iterator[None]:
    stream = sys.stderr
    sys.stderr = _FlagNamesOnStderr(stream)
    try:
        yield
    finally:
        sys.stderr = stream


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    print(f"{_command}: warning: {message}", file=sys.stderr)


_command = "embcore"


def _warn_threads(args: argparse.Namespace) -> None:
    threads = getattr(args, "threads", None)
    cores = os.cpu_count() or 1
    if not isinstance(threads, int):
        return
    modes = getattr(args, "modes", None)
    side_by_side = len(modes) if isinstance(modes, list) else 1
    if threads > cores:
        warnings.warn(
            f"--threads {threads} is more than this machine's {cores} cores: the run will be "
            "slower, not faster, and its numbers will differ from a --threads 1 run",
            stacklevel=2,
        )
    elif threads > 1 and threads * side_by_side > cores:
        warnings.warn(
            f"--threads {threads} x {side_by_side} modes side by side is more than this "
            f"machine's {cores} cores: the modes will queue for cores (slower), and more than "
            "one thread makes the numbers differ from a --threads 1 run",
            stacklevel=2,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``embcore ARGS`` and return its exit code (0 ok, 2 usage or input error, 130
    interrupted, 141 stdout closed early, 143 terminated)."""
    global _command
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            _unrecognized(args.command, extra)
    except SystemExit as done:  # --help, --version, or a usage error (already printed)
        return int(done.code or 0) if not isinstance(done.code, str) else EXIT_USAGE
    _command = f"embcore {args.command}"
    module = importlib.import_module(f"embcore.{COMMANDS[args.command]}")
    with warnings.catch_warnings():
        # An application shows its warnings, one line each, whatever the filters say.
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = _show_warning
        _warn_threads(args)
        try:
            with _sigterm_unwinds(), _flag_names_on_stderr():
                return int(module.run(args))
        except KeyboardInterrupt:
            print(f"{_command}: interrupted; no output was written", file=sys.stderr)
            return EXIT_INTERRUPT
        except _Terminated:
            print(f"{_command}: terminated; no output was written", file=sys.stderr)
            return EXIT_TERMINATED
        except _user_errors() as err:
            print(f"{_command}: error: {flag_message(str(err))}", file=sys.stderr)
            return EXIT_USAGE
        except BrokenPipeError:
            # stdout closed early (``embcore replay LOG | head -1``): stop quietly, as a
            # SIGPIPE would, without a second error while Python flushes stdout at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return EXIT_BROKEN_PIPE
        except OSError as err:
            where = f" {err.filename}:" if err.filename else ""
            print(f"{_command}: error:{where} {err.strerror or err}", file=sys.stderr)
            return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
