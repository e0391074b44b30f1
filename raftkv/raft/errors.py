"""Errors raised by the Raft core. The core's own small tree (it may import nothing from the rest of raftkv)::

RaftError
 ├── StorageError
 │    ├── CompactedError                   the index was compacted away (read a snapshot instead)
 │    ├── UnavailableError                 the index is beyond the last entry
 │    └── SnapshotTemporarilyUnavailable   the storage is building a snapshot; try later
 └── ProposalDropped                       the proposal was not appended; ``leader`` says where to go
"""

from __future__ import annotations

from .types import NONE


class RaftError(Exception):
    pass


class StorageError(RaftError):
    pass


class CompactedError(StorageError):
    def __init__(self, index: int = 0) -> None:
        super().__init__(f"requested index {index} is unavailable due to compaction")
        self.index = index


class UnavailableError(StorageError):
    def __init__(self, index: int = 0) -> None:
        super().__init__(f"requested entry at index {index} is unavailable")
        self.index = index


class SnapshotTemporarilyUnavailable(StorageError):
    def __init__(self) -> None:
        super().__init__("snapshot is temporarily unavailable")


class ProposalDropped(RaftError):
    """A proposal (or read request, or transfer) was refused. ``leader`` is the known leader id, or 0."""

    NOT_LEADER = "not leader"
    TRANSFERRING = "leadership transfer in progress"
    CONF_CHANGE_PENDING = "a membership change is already in progress"
    TOO_LARGE = "uncommitted log would exceed its size limit"

    def __init__(self, reason: str, leader: int = NONE) -> None:
        super().__init__(f"proposal dropped: {reason}" + (f" (leader is {leader})" if leader else ""))
        self.reason = reason
        self.leader = leader
