"""Values that flow into and out of the Raft core.

Every value here is immutable. ``Entry``, ``Message`` and ``HardState`` are ``NamedTuple``s rather than frozen
dataclasses: they are created once per entry / per message on the hot path, and a tuple is the cheapest immutable
object CPython can build (a frozen dataclass pays one ``object.__setattr__`` per field). As a bonus ``msgpack``
encodes a tuple as an array with no conversion step, so ``codec.py`` can ship them as they are.

Names follow etcd-io/raft and tikv/raft-rs so readers can cross-reference (``MsgApp``, ``HardState``, ``ReadState``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

NONE = 0
"""The "no node" id: node ids are positive integers, 0 means "unknown" / "nobody"."""


class EntryType(IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


class Entry(NamedTuple):
    """One log entry. ``index`` starts at 1; an empty ``data`` on a NORMAL entry is a leader's no-op."""

    term: int
    index: int  # type: ignore[assignment]  # shadows tuple.index; the Raft name wins
    type: int = EntryType.NORMAL
    data: bytes = b""


class MsgType(IntEnum):
    """Message types. Local messages (never on the wire) are marked.

    Field use per type (unused fields keep their defaults):
      APP:             index/log_term = the entry before ``entries``; commit = leader's commit
      APP_RESP:        index = last matched index (or the rejected probe index);
                       on reject: reject_hint = where the logs may match, log_term = the term there
      VOTE/PRE_VOTE:   index/log_term = candidate's last entry; context = b"transfer" when forced by TimeoutNow
      HEARTBEAT:       commit = min(follower match, leader commit); index = read-only round sequence number;
                       confirmed_round = the newest round of this term a majority acknowledged, confirmed_commit =
                       the leader's commit index when it started (both 0 while no usable round is confirmed)
      HEARTBEAT_RESP:  index = the round sequence being acknowledged
      READ_INDEX:      context = the caller's request id; READ_INDEX_RESP adds index = the read index
      TRANSFER_LEADER: frm = the transferee (local to the leader, or forwarded by a follower)
      SNAP:            snapshot
      SNAP_STATUS:     (local) reject = True when sending the snapshot failed
    """

    HUP = 0  # local: start an election
    BEAT = 1  # local: leader broadcasts heartbeats
    PROP = 2  # a proposal (local on the leader, forwarded by followers)
    APP = 3
    APP_RESP = 4
    VOTE = 5
    VOTE_RESP = 6
    SNAP = 7
    HEARTBEAT = 8
    HEARTBEAT_RESP = 9
    UNREACHABLE = 10  # local: the transport could not reach a peer
    SNAP_STATUS = 11  # local
    CHECK_QUORUM = 12  # local
    TRANSFER_LEADER = 13
    TIMEOUT_NOW = 14
    READ_INDEX = 15
    READ_INDEX_RESP = 16
    PRE_VOTE = 17
    PRE_VOTE_RESP = 18


LOCAL_MESSAGES = frozenset({MsgType.HUP, MsgType.BEAT, MsgType.UNREACHABLE, MsgType.SNAP_STATUS, MsgType.CHECK_QUORUM})


class Message(NamedTuple):
    type: int
    to: int = NONE
    frm: int = NONE
    term: int = 0
    log_term: int = 0
    index: int = 0  # type: ignore[assignment]
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""
    confirmed_round: int = 0
    confirmed_commit: int = 0


class HardState(NamedTuple):
    """What a node must persist before it tells anyone anything: current term, vote in that term, commit index."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


EMPTY_HARD_STATE = HardState()


@dataclass(frozen=True, slots=True)
class ConfState:
    """The membership: voting members and non-voting learners (disjoint sets, stored sorted)."""

    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if set(self.voters) & set(self.learners):
            raise ValueError(f"a node cannot be both voter and learner: {self}")


class ConfChangeType(IntEnum):
    """Single-server membership changes (thesis §4.1): one member at a time, each its own log entry."""

    ADD_VOTER = 0
    """Add a voter, or promote a learner to voter."""
    ADD_LEARNER = 1
    """Add a non-voting learner (it receives the log but does not count for quorums), or demote a voter."""
    REMOVE_NODE = 2


@dataclass(frozen=True, slots=True)
class ConfChange:
    """The payload of a CONF_CHANGE entry, as the core sees it. ``context`` is opaque to the core (the daemon puts the
    member's addresses there); its encoding is the driver's business."""

    type: ConfChangeType
    node_id: int
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class SnapshotMetadata:
    conf_state: ConfState = ConfState()
    index: int = 0
    term: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    metadata: SnapshotMetadata = SnapshotMetadata()
    data: bytes = b""

    @property
    def is_empty(self) -> bool:
        return self.metadata.index == 0


EMPTY_SNAPSHOT = Snapshot()


class StateRole(IntEnum):
    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2
    PRE_CANDIDATE = 3

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth telling the driver about when it changes (not persisted)."""

    lead: int
    role: StateRole


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read request that became safe: serve it once the state machine has applied ``index``."""

    index: int
    ctx: bytes


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work for the driver. Handle it in this order (see ``raftkv.ready.handle_ready``):

    1. send ``messages`` (they do not depend on this batch being durable: a leader's appends, thesis §10.2.1);
    2. persist ``snapshot``, ``hard_state`` and ``entries`` (``entries[0].index`` truncates any conflicting
       suffix), atomically, syncing when ``must_sync``; committed entries may be applied in the same transaction;
    3. send ``persisted_messages`` (votes, append acknowledgements: promises about durable state);
    4. apply ``committed_entries`` in order;
    5. serve ``read_states`` once applied ≥ their index; then call ``RawNode.advance(ready)``.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = ()
    messages: tuple[Message, ...] = ()
    persisted_messages: tuple[Message, ...] = ()
    committed_entries: tuple[Entry, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    must_sync: bool = False


def entry_size(e: Entry) -> int:
    """Approximate encoded size of an entry, for batch limits (payload plus a fixed header)."""
    return len(e.data) + 16
