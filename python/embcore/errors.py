"""Exceptions raised by embcore.

Every error raised by the Rust core maps to one of these (or to a built-in
``TypeError`` for a wrong dtype and ``OSError`` for a failed file operation):

- :class:`EmbcoreError` (a ``ValueError``): an invalid argument or configuration;
- :class:`UnknownIdError` (a ``KeyError``): an id the table does not hold;
- :class:`CapacityError` (an ``EmbcoreError``): the table's reserved capacity is full;
- :class:`SnapshotError` (an ``EmbcoreError``): a truncated, corrupted or foreign snapshot.
"""

from embcore._core import CapacityError, EmbcoreError, SnapshotError, UnknownIdError

__all__ = ["CapacityError", "EmbcoreError", "SnapshotError", "UnknownIdError"]
