"""Errors raised by the Raft core. The core's own small tree (it may import nothing from the rest of raftkv)::

RaftError
 ├── StorageError
 │    ├── CompactedError                   the index was compacted away (read a snapshot instead)
 │    ├── UnavailableError                 the index is beyond the last entry
 │    └── SnapshotTemporarilyUnavailable   the storage is building a snapshot; try later
 ├── ProposalDropped                       the proposal was not appended; ``leader`` says where to go
 └── LostAcknowledgedEntries               this node's log is shorter than what it acknowledged to its leader
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


class LostAcknowledgedEntries(RaftError):
    """The leader says this node acknowledged entries up to ``acknowledged``, but its log ends at ``last_index``:
    entries it had made durable are gone (its data directory was restored from an older copy, or lost writes its
    disk had confirmed). Raft's safety rests on acknowledged entries staying put, so the node must not go on; it has
    to be rebuilt from the cluster."""

    def __init__(self, acknowledged: int, last_index: int) -> None:
        super().__init__(
            f"the leader knows this node acknowledged log entries up to index {acknowledged}, but its log ends at "
            f"index {last_index}: entries it had made durable are gone"
        )
        self.acknowledged = acknowledged
        self.last_index = last_index
