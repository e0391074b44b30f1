"""raftkv.raft: a pure, deterministic Raft consensus core (no I/O, no clock, no global randomness).

Feed a ``RawNode`` ticks, peer messages, proposals and read requests; take a ``Ready``; persist, send and apply it
in the documented order; call ``advance``. Everything the core needs from outside (storage reads, randomness) is
handed in, so a whole cluster can be simulated in one thread from one seed.
"""

from .config import Config
from .errors import (
    CompactedError,
    LostAcknowledgedEntries,
    ProposalDropped,
    RaftError,
    SnapshotTemporarilyUnavailable,
    StorageError,
    UnavailableError,
)
from .rawnode import ProgressStatus, RawNode, Status
from .storage import LogStorage, LogStore, MemoryStorage
from .types import (
    EMPTY_HARD_STATE,
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MsgType,
    ReadState,
    Ready,
    Snapshot,
    SnapshotMetadata,
    SoftState,
    StateRole,
)

__all__ = [
    "EMPTY_HARD_STATE",
    "NONE",
    "CompactedError",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Config",
    "Entry",
    "EntryType",
    "HardState",
    "LogStorage",
    "LogStore",
    "LostAcknowledgedEntries",
    "MemoryStorage",
    "Message",
    "MsgType",
    "ProgressStatus",
    "ProposalDropped",
    "RaftError",
    "RawNode",
    "ReadState",
    "Ready",
    "Snapshot",
    "SnapshotMetadata",
    "SnapshotTemporarilyUnavailable",
    "SoftState",
    "StateRole",
    "Status",
    "StorageError",
    "UnavailableError",
]
