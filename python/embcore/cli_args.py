"""Argument types shared by the ``embcore`` subcommands (each declares its own flags)."""

from __future__ import annotations

import argparse


def mode_list(text: str) -> list[str]:
    """``--modes``: comma-separated training modes."""
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes:
        raise argparse.ArgumentTypeError("give at least one mode, e.g. realtime,batch")
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
