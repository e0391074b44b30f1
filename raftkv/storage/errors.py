"""Errors of the durable storage layer. Each carries the data directory and says what an operator should do::

RaftError                         (raftkv.raft.errors)
 └── DurableStorageError          the durable store cannot continue as asked; ``path`` is its data directory
      ├── StorageCorruption       data on disk fails a check: the node must be rebuilt from its peers
      │    └── CorruptLogError    one log record (``index``) is damaged, misplaced or missing
      ├── StorageFormatError      the directory was written by an incompatible version of raftkv
      └── StorageFullError        the disk (or the configured map size limit) is full; nothing was written

These are deliberately *not* subclasses of ``raftkv.raft.StorageError``: that family holds the expected answers the
core handles (``CompactedError``, ``UnavailableError``), and a handler for those must never swallow a corrupt disk.
"""

from __future__ import annotations

import os

from raftkv.raft.errors import RaftError

__all__ = [
    "CorruptLogError",
    "DurableStorageError",
    "StorageCorruption",
    "StorageFormatError",
    "StorageFullError",
]

RESTORE_ADVICE = (
    "restore the node from a peer: stop it, remove it from the cluster, wipe its data directory and add it back "
    "under a new id, so it catches up from the others"
)


class DurableStorageError(RaftError):
    """Base class. ``path`` is the data directory of the store that raised it."""

    def __init__(self, message: str, path: str | os.PathLike[str]) -> None:
        super().__init__(message)
        self.path = os.fspath(path)


class StorageCorruption(DurableStorageError):
    """Data read back from disk is not what was written (checksum mismatch, undecodable record, broken invariant).

    Never repaired silently: a replica that applied damaged data would diverge from its peers. The fix is to
    rebuild the node from the cluster (see ``RESTORE_ADVICE``)."""

    def __init__(self, what: str, path: str | os.PathLike[str]) -> None:
        super().__init__(f"storage corruption in {os.fspath(path)}: {what}; {RESTORE_ADVICE}", path)
        self.what = what


class CorruptLogError(StorageCorruption):
    """The log record at ``index`` is damaged (``reason`` says how), or missing from a log that must be contiguous."""

    def __init__(self, index: int, reason: str, path: str | os.PathLike[str]) -> None:
        super().__init__(f"log entry at index {index}: {reason}", path)
        self.index = index
        self.reason = reason


class StorageFormatError(DurableStorageError):
    """The data directory holds a format this build does not read."""

    def __init__(self, found: object, expected: object, path: str | os.PathLike[str]) -> None:
        super().__init__(
            f"{os.fspath(path)} holds raftkv storage format {found!r}, this build reads {expected!r}: "
            "run the matching raftkv version, or rebuild the node from its peers",
            path,
        )
        self.found = found
        self.expected = expected


class StorageFullError(DurableStorageError):
    """A write failed for lack of space. The transaction was aborted: the store still holds exactly what it held
    before the failed call, and stays readable and writable once space is freed."""

    def __init__(self, detail: str, path: str | os.PathLike[str]) -> None:
        super().__init__(
            f"storage full in {os.fspath(path)}: {detail}; nothing from this write was stored. Free disk space "
            "(or raise max_map_size) and retry",
            path,
        )
        self.detail = detail
