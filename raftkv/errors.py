"""The one user-facing error tree of raftkv. Every error a client, the CLI or an operator can see is one of these,
with the fields needed to act on it::

    RaftKVError                  .kind, .grpc_code, .exit_code, .retryable
     ├── InvalidArgument         bad input (empty/oversized key, oversized value, bad limit); nothing was applied
     ├── NotLeader               this node cannot serve the request; .leader_id, .leader_addr say where to go
     ├── Unavailable             no leader / quorum unreachable / node stopping: retry later or elsewhere
     ├── Timeout                 the deadline passed; .outcome_unknown is True for a write that may have applied
     ├── ConditionFailed         a conditional write's condition did not hold; .current is the key's current state
     ├── ReadOnly                the node refuses writes (e.g. its disk is full); .reason
     ├── StorageError            the node's data directory is damaged or unusable (at start-up); .path
     ├── ConfigError             bad settings, flags or config file
     └── ClusterError            the local cluster launcher could not do what was asked

``kind`` travels in gRPC trailing metadata ("raftkv-error"), so a client rebuilds the same exception a server raised.
This module imports nothing but the standard library: the client, server and CLI all share it.
"""

from __future__ import annotations

from typing import Any, ClassVar

META_KIND = "raftkv-error"
META_LEADER_ID = "raftkv-leader-id"
META_LEADER_ADDR = "raftkv-leader-addr"
META_OUTCOME_UNKNOWN = "raftkv-outcome-unknown"


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


class RaftKVError(Exception):
    kind: ClassVar[str] = "error"
    grpc_code: ClassVar[str] = "UNKNOWN"
    exit_code: ClassVar[int] = ExitCode.ERROR
    retryable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def metadata(self) -> list[tuple[str, str]]:
        """Trailing metadata describing this error on the wire."""
        return [(META_KIND, self.kind)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class InvalidArgument(RaftKVError):
    kind = "invalid-argument"
    grpc_code = "INVALID_ARGUMENT"
    exit_code = ExitCode.INVALID


class NotLeader(RaftKVError):
    kind = "not-leader"
    grpc_code = "FAILED_PRECONDITION"
    exit_code = ExitCode.UNAVAILABLE
    retryable = True

    def __init__(self, leader_id: int = 0, leader_addr: str = "", message: str = "") -> None:
        if not message:
            message = (
                f"not the leader; the leader is node {leader_id} at {leader_addr or 'an unknown address'}"
                if leader_id
                else "not the leader, and no leader is known yet"
            )
        super().__init__(message)
        self.leader_id = leader_id
        self.leader_addr = leader_addr

    def metadata(self) -> list[tuple[str, str]]:
        return [*super().metadata(), (META_LEADER_ID, str(self.leader_id)), (META_LEADER_ADDR, self.leader_addr)]


class Unavailable(RaftKVError):
    kind = "unavailable"
    grpc_code = "UNAVAILABLE"
    exit_code = ExitCode.UNAVAILABLE
    retryable = True


class Timeout(RaftKVError):
    kind = "timeout"
    grpc_code = "DEADLINE_EXCEEDED"
    exit_code = ExitCode.UNAVAILABLE
    retryable = True

    def __init__(self, message: str, outcome_unknown: bool = False) -> None:
        super().__init__(message)
        self.outcome_unknown = outcome_unknown

    def metadata(self) -> list[tuple[str, str]]:
        return [*super().metadata(), (META_OUTCOME_UNKNOWN, "1" if self.outcome_unknown else "0")]


class ConditionFailed(RaftKVError):
    kind = "condition-failed"
    grpc_code = "FAILED_PRECONDITION"
    exit_code = ExitCode.CONFLICT

    def __init__(self, message: str, current: Any = None) -> None:
        super().__init__(message)
        self.current = current


class ReadOnly(RaftKVError):
    kind = "read-only"
    grpc_code = "RESOURCE_EXHAUSTED"
    exit_code = ExitCode.READ_ONLY


class StorageError(RaftKVError):
    kind = "storage"
    grpc_code = "INTERNAL"
    exit_code = ExitCode.CONFIG

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


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
        InvalidArgument, NotLeader, Unavailable, Timeout, ConditionFailed, ReadOnly, StorageError, ConfigError,
        ClusterError,
    )
}


def from_wire(grpc_code: str, message: str, metadata: dict[str, str]) -> RaftKVError:
    """Rebuild the error a server raised from its status code name, message and trailing metadata."""
    kind = metadata.get(META_KIND, "")
    cls = _BY_KIND.get(kind)
    if cls is NotLeader:
        try:
            lid = int(metadata.get(META_LEADER_ID, "0") or 0)
        except ValueError:
            lid = 0
        return NotLeader(lid, metadata.get(META_LEADER_ADDR, ""), message)
    if cls is Timeout or (cls is None and grpc_code == "DEADLINE_EXCEEDED"):
        return Timeout(message, metadata.get(META_OUTCOME_UNKNOWN) == "1")
    if cls is not None:
        return cls(message)
    # A status that did not come from raftkv's servicer (the transport, a proxy, a dead server).
    if grpc_code in ("UNAVAILABLE", "CANCELLED", "ABORTED"):
        return Unavailable(message or "the server is unavailable")
    if grpc_code == "INVALID_ARGUMENT":
        return InvalidArgument(message)
    if grpc_code == "RESOURCE_EXHAUSTED":
        return ReadOnly(message)
    return RaftKVError(f"{grpc_code}: {message}")


__all__ = [
    "ClusterError",
    "ConditionFailed",
    "ConfigError",
    "ExitCode",
    "InvalidArgument",
    "NotLeader",
    "RaftKVError",
    "ReadOnly",
    "StorageError",
    "Timeout",
    "Unavailable",
    "from_wire",
]
