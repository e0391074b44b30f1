"""The one user-facing error tree of raftkv. Every error a client, the CLI or an operator can see is one of these,
with the fields needed to act on it::

    RaftKVError                  .kind, .grpc_code, .exit_code, .retryable, .applied ("no" | "unknown")
     ├── InvalidArgument         bad input (empty/oversized key, oversized value, bad limit); nothing was applied
     ├── NotLeader               this node cannot serve the request; .leader_id, .leader_addr say where to go
     ├── Unavailable             no leader / quorum unreachable / node stopping: retry later or elsewhere
     │    └── Removed            this node was removed from the cluster: it serves nothing, ask another member
     ├── Timeout                 the deadline passed
     ├── ConditionFailed         a conditional write's condition did not hold; .current is the key's current state
     ├── Compacted               a read at (or a watch from) a revision whose history was compacted away;
     │                           .compacted_revision is the oldest revision still readable
     ├── LeaseNotFound           the lease named does not exist (it expired, was revoked, or was never granted)
     ├── ReadOnly                the node refuses writes (e.g. its disk is full); .reason
     ├── StorageError            the node's data directory is damaged or unusable (at start-up); .path
     ├── DataCorruption          a record read back does not match its checksum: this node serves nothing more
     ├── ConfigError             bad settings, flags or config file
     └── ClusterError            the local cluster launcher could not do what was asked

Every error says whether the request it answers changed anything, in one field, ``applied``:

* ``"no"``: certainly not (it was refused, failed before it was proposed, or its proposal was lost: a leader's own
  entry overwritten, say). Every read error says "no": reads change nothing.
* ``"unknown"``: it may have been applied (a write forwarded to a leader that changed, a deadline that passed after
  the write was proposed). Retry it with the same session: the cluster applies it at most once.

``outcome_unknown`` is ``applied == "unknown"``. ``kind`` and ``applied`` travel in gRPC trailing metadata
("raftkv-error", "raftkv-applied"), so a client rebuilds the same exception a server raised, whatever its message.
This module imports nothing but the standard library: the client, server and CLI all share it.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

META_KIND = "raftkv-error"
META_APPLIED = "raftkv-applied"
META_CURRENT_BIN = "raftkv-current-bin"
"""Trailing metadata of a failed condition: the key's current value and metadata (a serialized ``KeyValue``)."""
META_COMPACTED_REVISION = "raftkv-compacted-revision"
"""Trailing metadata of a ``Compacted`` error: the compacted revision (decimal)."""
META_LEADER_ID = "raftkv-leader-id"
META_LEADER_ADDR = "raftkv-leader-addr"

APPLIED_NO = "no"
APPLIED_UNKNOWN = "unknown"
_APPLIED = frozenset({APPLIED_NO, APPLIED_UNKNOWN})


_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\\\\\u2028\u2029\udc80-\udcff]")
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}


def _escape_char(m: re.Match[str]) -> str:
    ch = m.group(0)
    o = ord(ch)
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if 0xDC80 <= o <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
        return f"\\x{o - 0xDC00:02x}"
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def escaped(b: bytes) -> str:
    """``b`` as one line of text: UTF-8, with backslashes, control characters and bytes that are not UTF-8
    escaped (``\\n``, ``\\t``, ``\\\\``, ``\\xff``)."""
    return _UNSAFE.sub(_escape_char, b.decode("utf-8", "surrogateescape"))


def quoted(b: bytes, limit: int = 0) -> str:
    """A key (or value) as messages show it: ``'user:1'``, escaped, cut to ``limit`` bytes (0: whole) with "...";
    never a Python ``b'...'`` repr."""
    if limit and len(b) > limit:
        return f"'{escaped(b[:limit])}...'"
    return f"'{escaped(b)}'"


class ExitCode:
    """Exit codes of the ``raftkv`` command (also in ``raftkv --help`` and the README)."""

    OK = 0
    ERROR = 1  # unexpected failure
    USAGE = 2  # bad command line (click)
    NOT_FOUND = 3  # `get`: the key does not exist
    UNAVAILABLE = 4  # no leader, unreachable, timed out
    INVALID = 5  # the request was rejected as invalid
    CONFLICT = 6  # a condition (CAS, vector clock, if-version) did not hold
    READ_ONLY = 7  # the node refuses writes (disk full)
    CONFIG = 8  # bad configuration, data directory or local cluster state
    REMOVED = 9  # the node asked was removed from the cluster
    CORRUPT = 10  # the node asked found its data corrupted


class RaftKVError(Exception):
    kind: ClassVar[str] = "error"
    grpc_code: ClassVar[str] = "UNKNOWN"
    exit_code: ClassVar[int] = ExitCode.ERROR
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, applied: str = APPLIED_NO) -> None:
        super().__init__(message)
        if applied not in _APPLIED:
            raise ValueError(f"applied is 'no' or 'unknown', not {applied!r}")
        self.message = message
        self.applied = applied
        """Whether the request changed anything: "no", or "unknown" (it may have: retry with the same session)."""

    @property
    def outcome_unknown(self) -> bool:
        """The request (a write) may or may not have been applied."""
        return self.applied == APPLIED_UNKNOWN

    def metadata(self) -> list[tuple[str, str]]:
        """Trailing metadata describing this error on the wire."""
        return [(META_KIND, self.kind), (META_APPLIED, self.applied)]

    def __repr__(self) -> str:
        extra = ", applied='unknown'" if self.applied == APPLIED_UNKNOWN else ""
        return f"{type(self).__name__}({self.message!r}{extra})"


class InvalidArgument(RaftKVError):
    kind = "invalid-argument"
    grpc_code = "INVALID_ARGUMENT"
    exit_code = ExitCode.INVALID


class NotLeader(RaftKVError):
    kind = "not-leader"
    grpc_code = "FAILED_PRECONDITION"
    exit_code = ExitCode.UNAVAILABLE
    retryable = True

    def __init__(
        self, leader_id: int = 0, leader_addr: str = "", message: str = "", *, applied: str = APPLIED_NO
    ) -> None:
        if not message:
            message = (
                f"not the leader; the leader is node {leader_id} at {leader_addr or 'an unknown address'}"
                if leader_id
                else "not the leader, and no leader is known yet"
            )
        super().__init__(message, applied=applied)
        self.leader_id = leader_id
        self.leader_addr = leader_addr

    def metadata(self) -> list[tuple[str, str]]:
        return [*super().metadata(), (META_LEADER_ID, str(self.leader_id)), (META_LEADER_ADDR, self.leader_addr)]


class Unavailable(RaftKVError):
    kind = "unavailable"
    grpc_code = "UNAVAILABLE"
    exit_code = ExitCode.UNAVAILABLE
    retryable = True


class Removed(Unavailable):
    """The node was removed from the cluster (``member remove``): it refuses every request but Status at once, and
    stops taking part in elections. Retryable elsewhere: another member serves the request."""

    kind = "removed"
    exit_code = ExitCode.REMOVED


class Timeout(RaftKVError):
    kind = "timeout"
    grpc_code = "DEADLINE_EXCEEDED"
    exit_code = ExitCode.UNAVAILABLE
    retryable = True

    def __init__(self, message: str, outcome_unknown: bool = False, *, applied: str | None = None) -> None:
        super().__init__(message, applied=applied or (APPLIED_UNKNOWN if outcome_unknown else APPLIED_NO))


class ConditionFailed(RaftKVError):
    kind = "condition-failed"
    grpc_code = "ABORTED"
    exit_code = ExitCode.CONFLICT

    def __init__(self, message: str, current: Any = None, *, applied: str = APPLIED_NO) -> None:
        super().__init__(message, applied=applied)
        self.current = current


class Compacted(RaftKVError):
    """A read at a revision older than the compacted one (or a watch from a revision whose events were compacted):
    the history it needs is gone. ``compacted_revision`` is the compacted revision C: the state at C and after can
    still be read, the events after C replayed (read the state at C, then watch from C + 1). Not retryable: the
    same request is refused everywhere (every replica compacts at the same log position). OUT_OF_RANGE, as etcd."""

    kind = "compacted"
    grpc_code = "OUT_OF_RANGE"
    exit_code = ExitCode.INVALID

    def __init__(self, message: str, compacted_revision: int = 0, *, applied: str = APPLIED_NO) -> None:
        super().__init__(message, applied=applied)
        self.compacted_revision = compacted_revision

    def metadata(self) -> list[tuple[str, str]]:
        return [*super().metadata(), (META_COMPACTED_REVISION, str(self.compacted_revision))]


class LeaseNotFound(RaftKVError):
    kind = "lease-not-found"
    grpc_code = "NOT_FOUND"
    exit_code = ExitCode.NOT_FOUND


class ReadOnly(RaftKVError):
    kind = "read-only"
    grpc_code = "RESOURCE_EXHAUSTED"
    exit_code = ExitCode.READ_ONLY


class StorageError(RaftKVError):
    kind = "storage"
    grpc_code = "INTERNAL"
    exit_code = ExitCode.CONFIG

    def __init__(self, message: str, path: str = "", *, applied: str = APPLIED_NO) -> None:
        super().__init__(message, applied=applied)
        self.path = path


class DataCorruption(RaftKVError):
    """A node read back a record that does not match its checksum (or that LMDB cannot read). The node raises its
    corruption alarm: from then on it refuses every request but Status and takes no part in Raft, leaving the
    cluster's decisions to the others. Retryable elsewhere: another member serves the request. To repair the node,
    remove it, wipe its data directory and add it under a new id (it then catches up from its peers; a removed id is
    never a member again)."""

    kind = "corruption"
    grpc_code = "DATA_LOSS"
    exit_code = ExitCode.CORRUPT
    retryable = True


class ConfigError(RaftKVError):
    kind = "config"
    grpc_code = "INVALID_ARGUMENT"
    exit_code = ExitCode.CONFIG


class ClusterError(RaftKVError):
    kind = "cluster"
    grpc_code = "UNKNOWN"
    exit_code = ExitCode.CONFIG


_BY_KIND: dict[str, type[RaftKVError]] = {
    c.kind: c
    for c in (
        InvalidArgument, NotLeader, Unavailable, Removed, Timeout, ConditionFailed, Compacted, LeaseNotFound, ReadOnly,
        StorageError, DataCorruption, ConfigError, ClusterError,
    )
}


def error_of_kind(kind: str, message: str, *, applied: str = APPLIED_NO) -> RaftKVError:
    """The error of ``kind`` (one of the kinds above) with ``message``; InvalidArgument for an unknown kind."""
    cls = _BY_KIND.get(kind, InvalidArgument)
    if cls is NotLeader:
        return NotLeader(message=message, applied=applied)
    return cls(message, applied=applied)


def from_wire(grpc_code: str, message: str, metadata: dict[str, str]) -> RaftKVError:
    """Rebuild the error a server raised from its status code name, message and trailing metadata. A status that
    carries no "raftkv-applied" (it did not come from raftkv's servicer) says "unknown" unless its code proves
    the request was never carried out; the caller knows better for reads."""
    kind = metadata.get(META_KIND, "")
    cls = _BY_KIND.get(kind)
    applied = metadata.get(META_APPLIED, "")
    if applied not in _APPLIED:
        applied = APPLIED_UNKNOWN
    if cls is NotLeader:
        try:
            lid = int(metadata.get(META_LEADER_ID, "0") or 0)
        except ValueError:
            lid = 0
        return NotLeader(lid, metadata.get(META_LEADER_ADDR, ""), message, applied=applied)
    if cls is Compacted:
        try:
            compacted = int(metadata.get(META_COMPACTED_REVISION, "0") or 0)
        except ValueError:
            compacted = 0
        return Compacted(message, compacted, applied=applied)
    if cls is not None:
        return cls(message, applied=applied)
    # A status that did not come from raftkv's servicer (the transport, a proxy, a dead server).
    if grpc_code == "DEADLINE_EXCEEDED":
        return Timeout(message, applied=applied)
    if grpc_code in ("UNAVAILABLE", "CANCELLED", "ABORTED"):
        return Unavailable(message or "the server is unavailable", applied=applied)
    if grpc_code == "INVALID_ARGUMENT":
        return InvalidArgument(message, applied=APPLIED_NO)
    if grpc_code == "RESOURCE_EXHAUSTED":
        return ReadOnly(message, applied=applied)
    return RaftKVError(f"{grpc_code}: {message}", applied=applied)


__all__ = [
    "APPLIED_NO",
    "APPLIED_UNKNOWN",
    "META_APPLIED",
    "META_COMPACTED_REVISION",
    "META_CURRENT_BIN",
    "META_KIND",
    "ClusterError",
    "Compacted",
    "ConditionFailed",
    "ConfigError",
    "DataCorruption",
    "ExitCode",
    "InvalidArgument",
    "LeaseNotFound",
    "NotLeader",
    "RaftKVError",
    "ReadOnly",
    "Removed",
    "StorageError",
    "Timeout",
    "Unavailable",
    "error_of_kind",
    "escaped",
    "from_wire",
    "quoted",
]
