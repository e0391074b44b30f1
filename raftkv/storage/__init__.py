"""raftkv.storage: durable storage for a node — the Raft log (and, in the same LMDB environment, the state machine).

``LmdbLogStore`` implements the core's ``LogStorage`` read protocol and the driver's ``LogStore`` write half, with
hard state, entries, snapshot, membership and the applied index changing in one LMDB transaction per ``write()``.
Its errors are drawn in ``raftkv.storage.errors``.
"""

from .errors import (
    CorruptLogError,
    DurableStorageError,
    StorageCorruption,
    StorageFormatError,
    StorageFullError,
)
from .lmdb_wal import FORMAT, LmdbLogStore, WalStats

__all__ = [
    "FORMAT",
    "CorruptLogError",
    "DurableStorageError",
    "LmdbLogStore",
    "StorageCorruption",
    "StorageFormatError",
    "StorageFullError",
    "WalStats",
]
