"""Exceptions raised by embcore: one hierarchy for the core and the applications.

Every error the Rust core raises maps to exactly one of these (the mapping is
``src/py/errors.rs``); the study, replay and dataset loaders raise them too:

- :class:`EmbcoreError` (a ``ValueError``): the base; an invalid argument or input
  (wrong length, a label outside its range, an operation the object does not support);
- :class:`ConfigError`: an invalid setting (a hyper-parameter out of range, an unknown
  option, a bad lifecycle, monitor, study or replay configuration);
- :class:`DatasetError`: a log that cannot be read as asked;
- :class:`CapacityError`: a table has no room for the rows a call needs;
- :class:`SnapshotError`: a truncated, corrupted or foreign file or byte string;
- :class:`UnknownIdError` (an ``EmbcoreError`` and a ``KeyError``): ids the table does
  not hold.

A wrong argument *type* is a built-in ``TypeError``; a failed file operation keeps its
kind (``FileNotFoundError``, ``PermissionError``, other ``OSError``).

>>> import embcore
>>> try:
...     embcore.EmbeddingTable(4, learning_rate=1e30)
... except embcore.errors.ConfigError as err:
...     print(err)
learning_rate must be a finite number in (0, 1e2], got 1000000000000000000000000000000
"""

from typing import Any

from embcore._core import (
    CapacityError,
    ConfigError,
    DatasetError,
    EmbcoreError,
    SnapshotError,
    UnknownIdError,
)

__all__ = [
    "CapacityError",
    "ConfigError",
    "DatasetError",
    "EmbcoreError",
    "SnapshotError",
    "UnknownIdError",
]


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` for an error message, cut to about ``limit`` characters (a pasted 50 MB
    value stays one short line).

    >>> shown("x" * 100, 30)
    "'xxxxxxxxxxxxxxxx...(102 chars)"
    >>> shown(3600)
    '3600'
    """
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 13]}...({len(text):,} chars)"
