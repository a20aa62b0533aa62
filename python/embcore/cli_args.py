"""Argument types and help shared by the ``embcore`` subcommands (each declares its own flags).

A type returns the value the API takes, or raises ``argparse.ArgumentTypeError`` with what
was given and what is allowed (argparse prints it as ``argument --flag: ...`` and exits 2).

>>> duration("1d"), duration_or_auto("auto"), separator("tab"), bad_rows("2%")
('1d', 'auto', '\\t', '2%')
"""

from __future__ import annotations

import argparse
import math
from typing import Any

THREADS_HELP = (
    "training threads per mode (default 1). Modes already run side by side, one thread "
    "each, so modes x threads above the machine's cores only queues work: slower, and with "
    "more than one thread the lock-free (Hogwild) updates interleave by the schedule, so "
    "results change from run to run. 1 is exact and reproducible"
)
"""Help of every ``--threads`` flag."""

COMMON_HELP = {
    "--seed": "random seed of the models (every mode starts from the same rows)",
    "--threads": THREADS_HELP,
    "--modes": "comma-separated training modes, from realtime, batch, hybrid",
    "--period": "batch/hybrid retraining period, e.g. 6h, 90m, 1d or seconds",
    "--epochs": "passes over each batch window at a boundary",
    "--learning-rate": "optimizer step size",
    "--dim": "embedding width",
    "--init-scale": "initial rows uniform in [-s, s]",
    "--alpha": "maturity threshold on the cosine distance, in (0, 2)",
    "--track-rate": "share of items whose trajectories are recorded, in (0, 1]",
    "--out": "output path",
    "--no-progress": "hide the progress bar",
    "--quick": "a smaller version, under a minute",
    "--scale": "size of the simulated world",
}
"""One-line help of the flags several subcommands share, for those declared without one."""


MODES = ("realtime", "batch", "hybrid")
"""The training modes ``--modes`` takes."""


def mode_list(text: str) -> list[str]:
    """``--modes``: comma-separated training modes, each once (case ignored).

    >>> mode_list("realtime, Batch")
    ['realtime', 'batch']
    """
    modes = [m.strip().lower() for m in text.split(",") if m.strip()]
    if not modes:
        raise argparse.ArgumentTypeError("give at least one mode, e.g. realtime,batch")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown mode {unknown[0]!r} in {text!r}; choose from {', '.join(MODES)}"
        )
    if len(set(modes)) != len(modes):
        raise argparse.ArgumentTypeError(f"a mode is listed twice in {text!r}")
    return modes


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def duration(text: str) -> str:
    """A duration of 1 s to 100 years (``6h``, ``90m``, ``1.5d``, ``45s`` or seconds),
    checked and returned as given (the API parses it).

    >>> duration("-1h")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected a positive duration of 1s to 36500d: ..., got '-1h'
    """
    from embcore.modes import parse_duration

    problem = (
        "expected a positive duration of 1s to 36500d: a number with unit s, m, h or d (6h, "
        f"90m, 1.5d) or plain seconds (3600), got {text!r}"
    )
    try:  # parse_duration bounds it (embcore.modes.MAX_DURATION_SECONDS)
        parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(problem) from None
    return text


def duration_or_auto(text: str) -> str:
    """``auto`` or a :func:`duration`."""
    return "auto" if text.strip().lower() == "auto" else duration(text)


def duration_or_period(text: str) -> str:
    """``period`` or a :func:`duration` (``embcore study --window``)."""
    return "period" if text.strip().lower() == "period" else duration(text)


def finite_float(text: str) -> float:
    """A finite number (``nan`` and ``inf`` refused).

    >>> finite_float("4"), finite_float("-0.5")
    (4.0, -0.5)
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def column_map(text: str) -> Any:
    """``user=COL,item=COL,time=COL[,label=COL][,weight=COL]`` as a
    :class:`embcore.datasets.ColumnMap`."""
    from embcore.datasets import ColumnMap

    try:
        return ColumnMap.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


_SEPARATORS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "space": " ", "pipe": "|"}


def separator(text: str) -> str:
    """One character, or ``tab``, ``comma``, ``semicolon``, ``space``, ``pipe``, ``\\t``."""
    value = _SEPARATORS.get(text.lower(), text)
    if len(value) != 1 or value in '\r\n"':
        raise argparse.ArgumentTypeError(
            f"expected one character or one of {', '.join(_SEPARATORS)}, got {text!r}"
        )
    return value


def bad_rows(text: str) -> int | str:
    """A count (``100``) or a share of the rows read (``1%``) of malformed rows allowed."""
    value = text.strip()
    try:
        if value.endswith("%"):
            share = float(value[:-1])
            if not 0 <= share <= 100:
                raise ValueError
            return value
        count = int(value)
        if count < 0:
            raise ValueError
        return count
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a count >= 0 or a share such as 1%, got {text!r}"
        ) from None


def add_ray_flags(parser: argparse.ArgumentParser) -> None:
    """``--ray N`` and ``--ray-address``, for the commands that can train sharded on Ray."""
    parser.add_argument(
        "--ray",
        type=positive_int,
        default=None,
        metavar="N",
        help="train each mode's model sharded over N Ray actors (pip install 'embcore[ray]'); "
        "a local cluster unless --ray-address is given (default: no Ray, one process)",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDRESS",
        help="address of an existing Ray cluster, with --ray (default: start a local one)",
    )
