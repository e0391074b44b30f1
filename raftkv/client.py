"""The raftkv client: an async :class:`Client` and a thin synchronous :class:`SyncClient`.

::

    async with Client(["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"]) as c:
        meta = await c.put("greeting", "hello")
        kv = await c.get("greeting")            # KeyValue(key=b'greeting', value=b'hello', ...) or None

    with SyncClient(["127.0.0.1:8001"]) as c:   # the same methods, blocking
        c.put(b"k", b"v")

What the client guarantees:

* **Leader discovery.** Writes go to the node that took the last one: the leader, or a follower that forwards
  writes to it (the default, ``forward_proposals``). A node that does not take writes answers ``NotLeader`` with the
  leader's client address, and the client goes there (the address need not be in the endpoint list). A node that
  cannot be reached, or answers ``Unavailable``, makes the client try the next endpoint, backing off exponentially
  with jitter (50 ms doubling to 1 s) -- all within one overall deadline (``timeout_s``) that no
  request ever exceeds: every attempt's gRPC deadline is the time that remains. A refused connection moves on to
  the next endpoint at once, and when every endpoint refused (nothing listens at any of them: no server can have
  seen the request) the request fails at once with :class:`~raftkv.errors.Unavailable` saying so, instead of
  waiting out the deadline; while some endpoint answers (an election, a node restarting) it waits.
* **Exactly-once writes.** Every write carries a session ``(client_id, seq)``; a retry of that write carries the same
  pair, so the cluster applies it at most once. The client owns ``lanes`` sessions (client ids ``base + lane``):
  a write takes an idle lane for its whole life, so at most one request per session id is ever outstanding.
* **A write is reported successful only when it was acknowledged.** Every error says whether the request may have
  changed anything, in ``applied`` ("no" or "unknown", see :mod:`raftkv.errors`). When the deadline passes after an
  attempt whose outcome is unknown (a timeout, a lost connection, a leader change after the write was forwarded),
  the write raises :class:`~raftkv.errors.Timeout` with ``applied="unknown"``: it may or may not have been applied.
* **Single attempt** (``single_attempt=True``, one endpoint): every call is exactly one RPC to that endpoint, with no
  retry, redirect or coalescing, and raises the error that attempt got, for tools and tests that must know what
  one request did.
* **Read-your-writes and monotonic reads.** The client remembers the highest applied index any response showed it
  and sends it as ``min_index`` on reads, so even a stale read on another node never goes back in time.
* **Coalescing** (``coalesce=True``, the default). A gRPC call costs the server far more than a small operation, so
  concurrent puts, gets, deletes and increments share calls: per endpoint at most two calls sent this way are in
  flight; an operation that finds one of them free goes out at once (alone, as its ordinary unary RPC), and
  operations arriving while both are busy wait and go together, as one ``Batch`` RPC of up to 256 independent
  operations (not atomic: each keeps its own session and its own result or error), as soon as a call returns. Only
  an operation's first attempt is coalesced; its retries are unary calls with the same session, and an attempt in a
  batch counts exactly as a unary attempt does for redirects, deadlines and unknown outcomes (a batch that fails as a
  whole leaves every write in it with an unknown outcome, unless it certainly never reached the server). A server
  without ``Batch`` (an older version) makes the client stop coalescing for that endpoint and send the operations
  as unary calls.

Errors are the ones of :mod:`raftkv.errors`, rebuilt from the gRPC status and its trailing metadata.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar

import grpc
import grpc.aio

from .errors import (
    APPLIED_NO,
    APPLIED_UNKNOWN,
    META_APPLIED,
    META_KIND,
    ConditionFailed,
    ConfigError,
    DataCorruption,
    InvalidArgument,
    NotLeader,
    RaftKVError,
    Removed,
    Timeout,
    Unavailable,
    from_wire,
)
from .proto.v1 import kv_pb2, kv_pb2_grpc

__all__ = [
    "CLUSTER_FILE",
    "DEFAULT_CLUSTER_DIR",
    "Client",
    "Consistency",
    "DeleteResult",
    "KeyValue",
    "NodeStatus",
    "PutResult",
    "RangeResult",
    "SyncClient",
    "resolve_endpoints",
]

T = TypeVar("T")


class _Response(Protocol):
    @property
    def header(self) -> kv_pb2.Header: ...


R = TypeVar("R", bound=_Response)

Consistency = Literal["linearizable", "lease", "stale", "bounded"]
OnConflict = Literal["reject", "siblings"]
CONSISTENCY_LEVELS: tuple[Consistency, ...] = ("linearizable", "lease", "stale", "bounded")
_CONSISTENCY_PB = {
    "linearizable": kv_pb2.LINEARIZABLE,
    "lease": kv_pb2.LEASE,
    "stale": kv_pb2.STALE,
    "bounded": kv_pb2.BOUNDED,
}

CLUSTER_FILE = "cluster.json"
"""The file ``raftkv cluster up`` writes into its directory; :func:`resolve_endpoints` reads ``endpoints`` from it."""
DEFAULT_CLUSTER_DIR = ".raftkv-cluster"

BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 1.0
_U64 = 1 << 64
_I64 = 1 << 63
META_CURRENT_BIN = "raftkv-current-bin"
"""Trailing metadata of a failed condition: the key's current KeyValue (serialized protobuf)."""
_U32_MAX = (1 << 32) - 1

_OP_NAMES = {"MemberList": "member list", "MemberAdd": "member add", "MemberPromote": "member promote",
             "MemberRemove": "member remove", "TransferLeader": "leader transfer"}
"""How errors name the calls whose names are not one word."""
_BATCH_FIELDS = {"Put": "put", "Get": "get", "Delete": "delete", "Incr": "incr"}
"""The methods whose first attempt goes through the coalescer, and their field in BatchOp / BatchResult."""
_GRANTED = object()  # a queued operation's turn: it holds a call slot of its endpoint; it sends itself, unary
_UNARY = object()  # the endpoint has no Batch: the queued operation sends itself, unary, without a slot
_EXPIRED = "the attempt ran out of time waiting to be sent (it was not sent)"
_EXPIRED_MD = ((META_KIND, Timeout.kind), (META_APPLIED, APPLIED_NO))

# Reconnect quickly to a node that comes back (gRPC's defaults wait up to 2 minutes between connection attempts).
_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]


# -- results ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class KeyValue:
    """A key with its value and metadata.

    ``create_revision`` / ``mod_revision``: the revisions of the write that created the key and of its last write
    (revisions count write requests cluster-wide, one each; see ``put(if_mod_revision=...)``). ``vclock``: the
    key's vector clock, the context to pass to a later ``put``. ``siblings``: the other concurrent values kept
    beside ``value`` by puts with ``on_conflict="siblings"`` (newest first; empty when there is one value);
    ``values`` is all of them. ``index``: the applied log index of the response that carried it (a session token);
    ``revision``: the store's revision as of that response."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    vclock: dict[int, int] = field(default_factory=dict)
    index: int = 0
    revision: int = 0
    siblings: tuple[bytes, ...] = ()

    @property
    def values(self) -> tuple[bytes, ...]:
        """The value and its siblings, newest first."""
        return (self.value, *self.siblings)


@dataclass(frozen=True, slots=True)
class PutResult:
    """The key's metadata after a put; ``mod_revision`` is the put's revision. ``siblings``: how many other
    concurrent values the key kept (0 unless the put asked for ``on_conflict="siblings"``)."""

    key: bytes
    create_revision: int
    mod_revision: int
    version: int
    vclock: dict[int, int]
    index: int
    siblings: int = 0


@dataclass(frozen=True, slots=True)
class DeleteResult:
    deleted: bool
    """False if the key did not exist."""
    index: int
    """The log index the delete was applied at (a session token)."""
    revision: int = 0
    """The delete's revision (the store's current one when nothing was deleted)."""


_TARGETS = {
    "value": kv_pb2.Compare.VALUE,
    "version": kv_pb2.Compare.VERSION,
    "mod_revision": kv_pb2.Compare.MOD_REVISION,
    "create_revision": kv_pb2.Compare.CREATE_REVISION,
    "exists": kv_pb2.Compare.EXISTS,
    "vclock": kv_pb2.Compare.VCLOCK,
}
_OPS = {"==": kv_pb2.Compare.EQUAL, "!=": kv_pb2.Compare.NOT_EQUAL, ">": kv_pb2.Compare.GREATER,
        "<": kv_pb2.Compare.LESS}
_TXN_OPS = {"get": kv_pb2.TxnOp.GET, "put": kv_pb2.TxnOp.PUT, "delete": kv_pb2.TxnOp.DELETE, "incr": kv_pb2.TxnOp.INCR}


@dataclass(frozen=True, slots=True)
class Compare:
    """A condition on a key's current state, checked atomically when a write or transaction is applied:
    ``Compare("k", "version", "==", 3)``, ``Compare("k", "value", "!=", b"x")``, ``Compare("k", "exists", "==",
    False)``, ``Compare("k", "vclock", "==", {1: 2})`` (no write since that clock was read). Targets: value, version,
    mod_revision, create_revision, exists, vclock; operators: ==, != (all) and >, < (version, mod_revision,
    create_revision)."""

    key: bytes | str
    target: str
    op: str
    operand: bytes | str | int | bool | Mapping[int, int]

    def to_pb(self, default_key: bytes = b"") -> kv_pb2.Compare:
        t = _TARGETS.get(self.target)
        o = _OPS.get(self.op)
        if t is None:
            raise InvalidArgument(f"unknown compare target {self.target!r}: expected one of {', '.join(_TARGETS)}")
        if o is None:
            raise InvalidArgument(f"unknown compare operator {self.op!r}: expected one of {', '.join(_OPS)}")
        c = kv_pb2.Compare(key=_key(self.key) if self.key else default_key, target=t, op=o)
        x = self.operand
        if self.target == "value":
            c.value = _to_bytes(x, "compare value")  # type: ignore[arg-type]
        elif self.target == "exists":
            c.exists = bool(x)
        elif self.target == "vclock":
            if not isinstance(x, Mapping):
                raise InvalidArgument("a vclock compare needs a {node: counter} mapping")
            c.vclock.CopyFrom(_vclock_pb(x))
        else:
            if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x < _U64:
                raise InvalidArgument(f"a {self.target} compare needs a non-negative 64-bit integer, got {x!r}")
            c.number = x
        return c


@dataclass(frozen=True, slots=True)
class TxnOp:
    """One operation of a transaction branch: ``TxnOp.get(k)``, ``TxnOp.put(k, v)``, ``TxnOp.delete(k)``,
    ``TxnOp.incr(k, delta)``."""

    kind: str
    key: bytes | str
    value: bytes | str = b""
    delta: int = 0

    @staticmethod
    def get(key: bytes | str) -> TxnOp:
        return TxnOp("get", key)

    @staticmethod
    def put(key: bytes | str, value: bytes | str) -> TxnOp:
        return TxnOp("put", key, value)

    @staticmethod
    def delete(key: bytes | str) -> TxnOp:
        return TxnOp("delete", key)

    @staticmethod
    def incr(key: bytes | str, delta: int = 1) -> TxnOp:
        return TxnOp("incr", key, delta=delta)

    def to_pb(self) -> kv_pb2.TxnOp:
        t = _TXN_OPS.get(self.kind)
        if t is None:
            raise InvalidArgument(f"unknown transaction operation {self.kind!r}: expected one of {', '.join(_TXN_OPS)}")
        delta = _int(self.delta, "an increment", -_I64, _I64)
        return kv_pb2.TxnOp(type=t, key=_key(self.key), value=_to_bytes(self.value, "value"), delta=delta)


@dataclass(frozen=True, slots=True)
class TxnOpOutcome:
    """The result of one transaction operation: ``found`` (get: the key existed; delete: it was deleted), ``kv``
    (get, put, incr: the key after the op), ``value`` (incr), ``error`` (the op failed; the others still ran)."""

    found: bool
    kv: KeyValue | None = None
    value: int | None = None
    error: str = ""


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    """The compares held and the ``success`` branch ran (else ``failure`` ran)."""
    results: tuple[TxnOpOutcome, ...]
    index: int
    revision: int = 0
    """The txn's revision (all its writes share it); the store's current one if it wrote nothing."""


def compare(a: Mapping[int, int], b: Mapping[int, int]) -> str:
    """Order two vector clocks ``{node: counter}``: "before", "after", "equal" or "concurrent" (the causal partial
    order; a zero counter is the same as an absent one). A node id <= 0, a negative counter or a non-int raises
    ValueError.

    The same order as ``raftkv.kv.vclock.compare`` (a test checks that they agree), computed here on plain mappings
    so that the client does not import the state machine package."""
    da, db = _clock(a), _clock(b)
    a_ahead = any(c > db.get(n, 0) for n, c in da.items())
    b_ahead = any(c > da.get(n, 0) for n, c in db.items())
    if a_ahead and b_ahead:
        return "concurrent"
    return "after" if a_ahead else "before" if b_ahead else "equal"


def _clock(v: Mapping[int, int]) -> dict[int, int]:
    """A vector clock's non-zero counters, checked as ``raftkv.kv.vclock.VectorClock`` checks them."""
    out: dict[int, int] = {}
    for node, counter in v.items():
        if type(node) is not int or type(counter) is not int:
            raise ValueError(f"node ids and counters are ints, got {node!r}: {counter!r}")
        if node <= 0 or counter < 0:
            raise ValueError(f"node ids are positive and counters non-negative, got {node}: {counter}")
        if counter:
            out[node] = counter
    return out


def _vclock_pb(v: Mapping[int, int]) -> kv_pb2.VectorClock:
    """A vector clock on the wire; InvalidArgument (nothing is sent) for one no node could hold: node ids are
    1 .. 2**64-1, counters 0 .. 2**64-1."""
    try:
        pairs = sorted((int(n), int(c)) for n, c in v.items())
    except (TypeError, ValueError, AttributeError):
        raise InvalidArgument(f"a vector clock maps node ids to counters, both integers; got {v!r}") from None
    for n, c in pairs:
        if not 0 < n < _U64 or not 0 <= c < _U64:
            raise InvalidArgument(
                f"a vector clock's node ids are positive and its counters non-negative (64-bit); got {n}: {c}"
            )
    pairs = [(n, c) for n, c in pairs if c]
    return kv_pb2.VectorClock(nodes=[n for n, _ in pairs], counters=[c for _, c in pairs])


def _conditions(
    key: bytes,
    if_version: int | None,
    if_mod_revision: int | None,
    if_value: bytes | str | None,
    if_absent: bool,
    context: Mapping[int, int] | None,
) -> list[kv_pb2.Compare]:
    out = []
    if if_version is not None:
        out.append(Compare(key, "version", "==", if_version).to_pb())
    if if_mod_revision is not None:
        out.append(Compare(key, "mod_revision", "==", if_mod_revision).to_pb())
    if if_value is not None:
        out.append(Compare(key, "value", "==", if_value).to_pb())
    if if_absent:
        out.append(Compare(key, "exists", "==", False).to_pb())
    if context is not None:
        out.append(Compare(key, "vclock", "==", context).to_pb())
    return out


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    peer_addr: str
    client_addr: str
    learner: bool


@dataclass(frozen=True, slots=True)
class MemberList:
    members: tuple[Member, ...]
    cluster_id: str


def _member(m: kv_pb2.Member) -> Member:
    return Member(m.id, m.peer_addr, m.client_addr, m.learner)


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: tuple[KeyValue, ...]
    more: bool
    """More keys match: continue with ``start_after=kvs[-1].key``."""
    index: int
    revision: int = 0
    """The store's revision the listing reflects."""


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One node's view of the cluster, or ``reachable=False`` (and ``error``) when it could not be asked."""

    endpoint: str
    reachable: bool
    id: int = 0
    role: str = "unreachable"
    """leader / follower / candidate / pre-candidate, or unreachable."""
    term: int = 0
    commit: int = 0
    applied: int = 0
    last_index: int = 0
    leader_id: int = 0
    leader_contact_ms: int = 0
    client_addr: str = ""
    peer_addr: str = ""
    cluster_id: str = ""
    version: str = ""
    read_only: bool = False
    read_only_reason: str = ""
    removed: bool = False
    """The node was removed from the cluster (its role then reads "removed"): it serves nothing but status."""
    revision: int = 0
    """The store's revision as applied on this node."""
    corruption: str = ""
    """The node's corruption alarm: what damaged data it found (its role then reads "corrupt"); empty if none."""
    members: tuple[tuple[int, str, str], ...] = ()
    """(id, peer_addr, client_addr) of every member this node knows."""
    error: str = ""
    """Why the node could not be asked (``reachable=False``): "connection refused", "no answer within 1s", ..."""
    stats: Mapping[str, int] = field(default_factory=dict, compare=False)
    """The node's counters since it started (readies, store_syncs, entries_persisted, commands_proposed, ...)."""
    learners: tuple[int, ...] = ()
    """The ids of the members that are learners (non-voting), as this node knows them."""


@dataclass(frozen=True, slots=True)
class ClusterHealth:
    """Whether a cluster can serve, judged from its nodes' statuses (:func:`cluster_health`): a leader is known and
    a quorum (a majority) of the voters answers.

    ``voters`` are the voting members as the most up-to-date node that answered knows them (every status when no
    node reported a member list), each with the status of its client address; ``leader_id`` is the leader a node
    that answered knows (0: none)."""

    voters: tuple[NodeStatus, ...]
    leader_id: int
    term: int

    @property
    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    @property
    def answering(self) -> tuple[NodeStatus, ...]:
        return tuple(s for s in self.voters if s.reachable)

    @property
    def unreachable(self) -> tuple[NodeStatus, ...]:
        return tuple(s for s in self.voters if not s.reachable)

    @property
    def available(self) -> bool:
        """A leader is known and a quorum of the voters answers."""
        return bool(self.leader_id) and len(self.answering) >= self.quorum

    def describe(self) -> str:
        """One line: is a leader known, how many voters answer against the quorum, which do not answer and why.
        For example "no leader is known: only 1 of the 3 voters answers, a quorum needs 2; node 2 (h:2) and node 3
        (h:3) do not answer (connection refused)"."""
        n, a, q = len(self.voters), len(self.answering), self.quorum
        if not a:
            return _not_answering(self.voters)
        if self.leader_id:
            leader = next((s for s in self.voters if s.id == self.leader_id), None)
            head = f"{_node_name(leader) if leader else f'node {self.leader_id}'} is the leader (term {self.term})"
            sep = ", but " if a < q else ", "
        else:
            head, sep = "no leader is known", ": " if a < q else "; "
        if a < q:
            count = f"only {a} of the {n} voters answer{'s' if a == 1 else ''}, a quorum needs {q}"
        elif self.unreachable:
            count = f"{a} of the {n} voters answer"
        else:
            count = f"all {n} voters answer"
        tail = f"; {_not_answering(self.unreachable)}" if self.unreachable else ""
        return f"{head}{sep}{count}{tail}"


def _node_name(s: NodeStatus) -> str:
    addr = s.client_addr or s.endpoint
    return f"node {s.id} ({addr})" if s.id else addr


def _not_answering(nodes: Sequence[NodeStatus]) -> str:
    """``node 2 (a) and node 3 (b) do not answer (connection refused)`` -- grouped by why."""
    by_reason: dict[str, list[str]] = {}
    for s in nodes:
        by_reason.setdefault(s.error or "no answer", []).append(_node_name(s))
    parts = []
    for reason, names in by_reason.items():
        who = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        parts.append(f"{who} {'does' if len(names) == 1 else 'do'} not answer ({reason})")
    return "; ".join(parts)


def cluster_health(statuses: Sequence[NodeStatus]) -> ClusterHealth:
    """Judge the cluster from these statuses (:meth:`Client.cluster_status` with ``members=True`` asks every
    member): the member list of the most up-to-date node that answered (a leader's first), its voters each with
    the status of its client address, and the leader that node knows."""
    answered = [s for s in statuses if s.reachable and not s.removed]
    by_addr = {s.endpoint: s for s in statuses}
    by_addr.update({s.client_addr: s for s in statuses if s.client_addr})
    best = max(answered, key=lambda s: (s.role == "leader", s.term, s.commit, s.applied), default=None)
    if best is None or not best.members:
        voters = tuple(statuses)
    else:
        learners = set(best.learners)
        voters = tuple(
            _named(by_addr.get(client), mid, peer, client) for mid, peer, client in best.members if mid not in learners
        )
    leader_id, term = 0, 0
    for s in answered:  # the leader known in the newest term
        lid = s.id if s.role == "leader" else s.leader_id
        if lid and s.term >= term:
            leader_id, term = lid, s.term
    if not leader_id and answered:
        term = max(s.term for s in answered)
    return ClusterHealth(voters, leader_id, term)


def _named(s: NodeStatus | None, mid: int, peer: str, client: str) -> NodeStatus:
    """The status of member ``mid``: ``s`` (its client address's), named after the member; unreachable if None."""
    if s is None:
        return NodeStatus(client, False, id=mid, client_addr=client, peer_addr=peer, error="not asked")
    if s.reachable:
        return s
    return replace(s, id=mid, client_addr=client, peer_addr=peer)


# -- helpers ----------------------------------------------------------------------------------------------------
def _to_bytes(v: bytes | str, what: str) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode("utf-8", "surrogateescape")
    if isinstance(v, bytearray | memoryview):
        return bytes(v)
    raise InvalidArgument(f"{what} must be bytes or str, not {type(v).__name__}")


def _int(x: int, what: str, lo: int, hi: int) -> int:
    """``x`` if it is an integer with ``lo <= x < hi`` (what the wire can carry), else InvalidArgument."""
    if isinstance(x, bool) or not isinstance(x, int) or not lo <= x < hi:
        raise InvalidArgument(f"{what} must be an integer from {lo} to {hi - 1}, got {x!r}")
    return x


def _key(k: bytes | str) -> bytes:
    b = _to_bytes(k, "key")
    if not b:
        raise InvalidArgument("the key must not be empty")
    return b


def _vclock(vc: kv_pb2.VectorClock) -> dict[int, int]:
    return dict(zip(vc.nodes, vc.counters, strict=False))


def _kv(pb: kv_pb2.KeyValue, header: kv_pb2.Header | None = None) -> KeyValue:
    index, revision = (header.index, header.revision) if header is not None else (0, 0)
    siblings = tuple(s.value for s in pb.siblings) if pb.siblings else ()
    return KeyValue(pb.key, pb.value, pb.create_revision, pb.mod_revision, pb.version, _vclock(pb.vclock), index,
                    revision, siblings)


def _consistency(c: Consistency | str) -> kv_pb2.Consistency:
    try:
        return _CONSISTENCY_PB[c.lower()]
    except (KeyError, AttributeError):
        raise InvalidArgument(f"unknown consistency {c!r}: expected one of {', '.join(CONSISTENCY_LEVELS)}") from None


def error_from_rpc(e: grpc.aio.AioRpcError, *, write: bool = True, endpoint: str = "") -> RaftKVError:
    """The raftkv error an RPC failure stands for (connection failures become :class:`Unavailable`), with
    ``applied`` as the server said it; a failure that did not come from a raftkv server (a lost connection, a
    client-side deadline) says "unknown" for a write that may have reached one, "no" otherwise (and for reads).

    A failure of the transport itself gets a short message, ``"<endpoint>: connection refused"``, instead of
    gRPC's own text."""
    md: dict[str, str] = {}
    current: bytes | None = None
    trailing = e.trailing_metadata()
    if trailing:
        for k, v in trailing:
            if isinstance(v, str):
                md[k] = v
            elif k == META_CURRENT_BIN:
                current = bytes(v)
    code = e.code()
    name = code.name if code is not None else "UNKNOWN"
    reason = transport_failure(e)
    if reason is not None:
        err = from_wire(name, f"{endpoint}: {reason}" if endpoint else reason, md)
    else:
        err = from_wire(name, e.details() or "", md)
    if META_APPLIED not in md:
        err.applied = APPLIED_UNKNOWN if write and not _definitely_not_sent(e, err) else APPLIED_NO
    elif not write:
        err.applied = APPLIED_NO
    if isinstance(err, ConditionFailed) and current is not None:
        try:
            err.current = _kv(kv_pb2.KeyValue.FromString(current))
        except Exception:  # a malformed trailer: keep the error without the current state
            pass
    return err


def _rpc_error(
    code: grpc.StatusCode, details: str, metadata: Sequence[tuple[str, str | bytes]] = ()
) -> grpc.aio.AioRpcError:
    """An RPC failure as a unary call would raise it (for an operation whose attempt was part of a batch)."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*metadata), details)


def _batch_error_rpc(be: kv_pb2.BatchError) -> grpc.aio.AioRpcError:
    """A batch operation's error as the AioRpcError its unary RPC would have raised (same code, details, trailing
    metadata), so :func:`error_from_rpc` and :func:`_outcome_unknown` judge both alike."""
    try:
        code = grpc.StatusCode[be.code]
    except KeyError:
        code = grpc.StatusCode.UNKNOWN
    md: list[tuple[str, str | bytes]] = list(be.metadata.items())
    if be.current:
        md.append((META_CURRENT_BIN, be.current))
    return _rpc_error(code, be.message, md)


def transport_failure(e: grpc.aio.AioRpcError) -> str | None:
    """What went wrong, in a few words, when an RPC failed in the transport (no raftkv server answered): "connection
    refused", "cannot resolve the host name", "no answer within the deadline", "the connection was lost". None
    for an answer from a server (its own message says what happened)."""
    if any(k in (META_KIND, META_APPLIED) for k, _ in e.trailing_metadata() or ()):
        return None
    code = e.code()
    d = (e.details() or "").lower()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "no answer within the deadline"
    if code != grpc.StatusCode.UNAVAILABLE:
        return None
    if "connection refused" in d:
        return "connection refused"
    if "resolv" in d or "dns" in d or "name resolution" in d:
        return "cannot resolve the host name"
    if "failed to connect" in d:
        tail = (e.details() or "").rpartition(": ")[2].strip()
        return f"cannot connect ({tail[:1].lower() + tail[1:]})" if tail else "cannot connect"
    if "socket closed" in d or "connection reset" in d or "broken pipe" in d or "goaway" in d:
        return "the connection was lost"
    return None


def _nothing_listening(e: grpc.aio.AioRpcError) -> bool:
    """The connection was refused, or the host name does not resolve: no server got the request."""
    return transport_failure(e) in ("connection refused", "cannot resolve the host name")


def _definitely_not_sent(e: grpc.aio.AioRpcError, err: RaftKVError) -> bool:
    """True when the request never reached a server (the connection could not be made), so a write in it cannot
    have been applied. Anything less certain counts as an unknown outcome."""
    if not isinstance(err, Unavailable) or any(k == META_KIND for k, _ in e.trailing_metadata() or ()):
        return False
    d = (e.details() or "").lower()
    return "failed to connect" in d or "connection refused" in d or "resolv" in d or "dns" in d


def resolve_endpoints(endpoints: str | None = None, cluster_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Where the cluster is: ``endpoints`` (comma-separated ``HOST:PORT``), else ``$RAFTKV_ENDPOINTS``, else the
    ``cluster.json`` of a local cluster (``cluster_dir``, else ``$RAFTKV_CLUSTER_DIR``, else ``./.raftkv-cluster``)."""
    source = _endpoint_list(endpoints)
    if source is not None:
        eps = [e.strip() for e in source.split(",") if e.strip()]
        for e in eps:
            host, sep, port = e.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ConfigError(f"bad endpoint {e!r}: expected HOST:PORT")
        return eps
    explicit = _explicit_cluster_dir(cluster_dir)
    d = Path(explicit if explicit else DEFAULT_CLUSTER_DIR)
    f = d / CLUSTER_FILE
    if f.is_file():
        try:
            data = json.loads(f.read_text())
            eps = [str(e) for e in data["endpoints"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"cannot read the endpoints from {f}: {e}") from None
        if eps:
            return eps
    if explicit:
        raise ConfigError(f"no local cluster in {d} (no {CLUSTER_FILE}): start one with `raftkv cluster up --dir {d}`")
    raise ConfigError(
        "no endpoints: pass --endpoints, set RAFTKV_ENDPOINTS, or start a local cluster with `raftkv cluster up`"
    )


def local_cluster_dir(endpoints: str | None = None, cluster_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The local cluster directory whose ``cluster.json`` :func:`resolve_endpoints` reads for these arguments; None
    when the endpoints come from ``endpoints`` or ``$RAFTKV_ENDPOINTS``."""
    if _endpoint_list(endpoints) is not None:
        return None
    return Path(_explicit_cluster_dir(cluster_dir) or DEFAULT_CLUSTER_DIR)


def _endpoint_list(endpoints: str | None) -> str | None:
    for source in (endpoints, os.environ.get("RAFTKV_ENDPOINTS")):
        if source and source.strip():
            return source
    return None


def _explicit_cluster_dir(cluster_dir: str | os.PathLike[str] | None) -> str | os.PathLike[str] | None:
    return cluster_dir if cluster_dir is not None else os.environ.get("RAFTKV_CLUSTER_DIR") or None


# -- the async client -------------------------------------------------------------------------------------------
class Client:
    """An async raftkv client over one lazily opened gRPC channel per endpoint. See the module docstring.

    ``timeout_s`` bounds every call, retries included. ``client_id`` is the base of the session ids (random when
    omitted); two live clients must never share one. ``lanes`` is how many writes may be in flight at once (more
    wait for a free lane). ``coalesce`` sends concurrent puts, gets, deletes and increments together in ``Batch``
    RPCs (see the module docstring). ``single_attempt`` (with exactly one endpoint): one RPC per call, to that
    endpoint, no retries, redirects or coalescing; its error is raised as it came (``applied`` says what it did).
    Create it anywhere; use it on one event loop."""

    coalesce_max_inflight = 2
    """Per endpoint, at most this many calls sent by the coalescer are in flight; more operations queue."""
    coalesce_max_ops = 256
    """At most this many queued operations go in one Batch RPC."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout_s: float = 10.0,
        client_id: int | None = None,
        lanes: int = 64,
        coalesce: bool = True,
        single_attempt: bool = False,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
        eps = list(dict.fromkeys(endpoints))
        if not eps:
            raise ConfigError("the client needs at least one endpoint (HOST:PORT)")
        if single_attempt and len(eps) != 1:
            raise ConfigError(f"single_attempt pins the client to one endpoint; got {len(eps)}: {', '.join(eps)}")
        self._single_attempt = single_attempt
        if timeout_s <= 0:
            raise ConfigError(f"timeout_s must be positive, got {timeout_s}")
        if lanes < 1:
            raise ConfigError(f"lanes must be at least 1, got {lanes}")
        self._endpoints = eps
        self._timeout_s = float(timeout_s)
        self._rng = random.Random()
        base = client_id if client_id is not None else random.SystemRandom().getrandbits(64)
        self._client_id_base = base % _U64 or 1
        self._lanes = lanes
        # Sequence numbers start at the wall clock in microseconds, so a client restarted with the same explicit
        # client_id continues above the seqs its predecessor used (the cluster drops a seq below the last one).
        self._seqs = [time.time_ns() // 1000] * lanes
        self._idle: list[int] = list(range(lanes - 1, -1, -1))  # a stack: the lowest lane is reused first
        self._lane_sem: asyncio.Semaphore | None = None  # created on first use, on the client's loop
        self._channels: dict[str, tuple[grpc.aio.Channel, kv_pb2_grpc.KVStub]] = {}
        self._leader: str | None = None
        self._cursor = 0
        self._spread_cursor = random.randrange(1 << 16)  # where local (stale/bounded) reads start their round robin
        self._seen_index = 0
        self._removed: set[str] = set()  # endpoints that answered Removed: they serve nothing any more
        self._closed = False
        self._coalesce = coalesce and not single_attempt
        self._coalescers: dict[str, _Coalescer] = {}
        self._batch_tasks: set[asyncio.Task[None]] = set()

    # -- properties ------------------------------------------------------------------------------------------
    @property
    def endpoints(self) -> list[str]:
        return list(self._endpoints)

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    @property
    def client_id(self) -> int:
        """The base client id; lane ``i`` uses ``client_id + i`` (wrapping, never 0)."""
        return self._client_id_base

    @property
    def leader(self) -> str | None:
        """The client address of the node this client sends writes to: the leader, or a follower that took the last
        write and forwards writes to the leader (None until the first write or redirect)."""
        return self._leader

    @property
    def seen_index(self) -> int:
        """The highest applied index seen in any response (sent as ``min_index`` on reads)."""
        return self._seen_index

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        closed = RaftKVError("the client is closed")
        for co in self._coalescers.values():  # never sent: they fail at once, as a call on a closed client does
            queued, co.queue = co.queue, []
            for q in queued:
                if not q.future.done():
                    q.future.set_exception(closed)
        channels = list(self._channels.values())
        self._channels.clear()
        for ch, _ in channels:
            await ch.close()  # cancels the calls in flight, Batch calls included
        if self._batch_tasks:  # they hand their operations the outcome and end
            await asyncio.gather(*self._batch_tasks, return_exceptions=True)

    # -- the API ---------------------------------------------------------------------------------------------
    async def put(
        self,
        key: bytes | str,
        value: bytes | str,
        *,
        if_version: int | None = None,
        if_mod_revision: int | None = None,
        if_value: bytes | str | None = None,
        if_absent: bool = False,
        context: Mapping[int, int] | None = None,
        on_conflict: OnConflict = "reject",
    ) -> PutResult:
        """Set ``key`` to ``value``. Returns the key's metadata after the write.

        Conditional writes (all given conditions must hold, else :class:`~raftkv.errors.ConditionFailed` with the
        key's current state in ``.current``): ``if_version`` / ``if_mod_revision`` / ``if_value`` equal the current
        ones (a revision is never reused: ``if_mod_revision`` of a put's own ``mod_revision`` fails once any later
        write touched the key), ``if_absent`` the key does not exist, ``context`` the current vector clock equals
        this one (the clock a ``get`` returned: no write happened since; a clock read before the key was deleted
        never matches one after it was created again).

        ``on_conflict="siblings"`` with a ``context`` (and no other condition): when writes the context does not
        cover happened meanwhile, keep this value beside them as a sibling instead of failing; the values the
        context covers are replaced. A later ``get`` returns every value (``KeyValue.values``) and one ``vclock``
        covering them all; a put with that clock as ``context`` resolves them into one value."""
        k = _key(key)
        v = _to_bytes(value, "value")
        if on_conflict not in ("reject", "siblings"):
            raise InvalidArgument(f"on_conflict is 'reject' or 'siblings', not {on_conflict!r}")
        if on_conflict == "siblings":
            if context is None:
                raise InvalidArgument("on_conflict='siblings' needs the context a get returned")
            if if_version is not None or if_mod_revision is not None or if_value is not None or if_absent:
                raise InvalidArgument("a put that keeps siblings takes no conditions besides its context")
            conds: list[kv_pb2.Compare] = []
        else:
            conds = _conditions(k, if_version, if_mod_revision, if_value, if_absent, context)
        async with self._session() as session:
            req = kv_pb2.PutRequest(key=k, value=v, session=session, conditions=conds)
            if on_conflict == "siblings":
                assert context is not None
                req.context.CopyFrom(_vclock_pb(context))
                req.on_conflict = kv_pb2.SIBLINGS
            resp = await self._call("Put", lambda _remaining: req, kv_pb2.PutResponse, write=True)
        kv = resp.kv
        return PutResult(
            kv.key or k, kv.create_revision, kv.mod_revision, kv.version, _vclock(kv.vclock), resp.header.index,
            len(kv.siblings),
        )

    async def delete(
        self,
        key: bytes | str,
        *,
        if_version: int | None = None,
        if_mod_revision: int | None = None,
        if_value: bytes | str | None = None,
        context: Mapping[int, int] | None = None,
    ) -> DeleteResult:
        """Delete ``key``; ``deleted`` is False if it did not exist. The conditions are those of :meth:`put`."""
        k = _key(key)
        conds = _conditions(k, if_version, if_mod_revision, if_value, False, context)
        async with self._session() as session:
            req = kv_pb2.DeleteRequest(key=k, session=session, conditions=conds)
            resp = await self._call("Delete", lambda _remaining: req, kv_pb2.DeleteResponse, write=True)
        self._observe(resp.index)
        return DeleteResult(resp.deleted, resp.index or resp.header.index, resp.header.revision)

    async def cas(self, key: bytes | str, expected: bytes | str | None, new: bytes | str) -> bool:
        """Compare-and-set: set ``key`` to ``new`` if its value is ``expected`` (None: if it does not exist).
        Returns whether it swapped."""
        try:
            if expected is None:
                await self.put(key, new, if_absent=True)
            else:
                await self.put(key, new, if_value=expected)
        except ConditionFailed:
            return False
        return True

    async def incr(self, key: bytes | str, delta: int = 1) -> int:
        """Atomically add ``delta`` to the integer at ``key`` (ASCII decimal; missing = 0); returns the new value.
        Retries are exactly-once: a retried increment that already applied is not applied again."""
        k = _key(key)
        async with self._session() as session:
            req = kv_pb2.IncrRequest(key=k, delta=_int(delta, "an increment", -_I64, _I64), session=session)
            resp = await self._call("Incr", lambda _remaining: req, kv_pb2.IncrResponse, write=True)
        return int(resp.value)

    async def txn(
        self, compares: Sequence[Compare] = (), success: Sequence[TxnOp] = (), failure: Sequence[TxnOp] = ()
    ) -> TxnResult:
        """A multi-key transaction: if every compare holds run ``success``, else ``failure``; atomically, as one log
        entry. Reads (``TxnOp.get``) see the effects of the operations before them."""
        req_c = [c.to_pb() for c in compares]
        req_s = [o.to_pb() for o in success]
        req_f = [o.to_pb() for o in failure]
        async with self._session() as session:
            req = kv_pb2.TxnRequest(compares=req_c, success=req_s, failure=req_f, session=session)
            resp = await self._call("Txn", lambda _remaining: req, kv_pb2.TxnResponse, write=True)
        idx = resp.header.index
        ran = success if resp.succeeded else failure
        outcomes = tuple(
            TxnOpOutcome(
                r.found,
                _kv(r.kv, resp.header) if r.HasField("kv") else None,
                int(r.value) if op.kind == "incr" and not r.error else None,
                r.error,
            )
            for op, r in zip(ran, resp.results, strict=False)
        )
        return TxnResult(resp.succeeded, outcomes, idx, resp.header.revision)

    # -- membership and leadership ---------------------------------------------------------------------------
    async def member_list(self) -> MemberList:
        """The members with their addresses, and the cluster id (from any node)."""
        resp = await self._call("MemberList", lambda _r: kv_pb2.MemberListRequest(), kv_pb2.MemberListResponse)
        return MemberList(tuple(_member(m) for m in resp.members), resp.cluster_id)

    async def member_add(self, node_id: int, peer_addr: str, client_addr: str, *, learner: bool = False) -> MemberList:
        """Add a member (through the leader). Start the new node afterwards with ``raftkv serve --join
        --join-cluster-id <the returned cluster id>``; add it as a learner to let it catch up before it votes."""
        node_id = _int(node_id, "a node id", 1, _U64)
        req = kv_pb2.MemberAddRequest(id=node_id, peer_addr=peer_addr, client_addr=client_addr, learner=learner)
        resp = await self._call("MemberAdd", lambda _r: req, kv_pb2.MemberChangeResponse, write=True)
        return MemberList(tuple(_member(m) for m in resp.members), resp.cluster_id)

    async def member_promote(self, node_id: int) -> MemberList:
        req = kv_pb2.MemberPromoteRequest(id=_int(node_id, "a node id", 1, _U64))
        resp = await self._call("MemberPromote", lambda _r: req, kv_pb2.MemberChangeResponse, write=True)
        return MemberList(tuple(_member(m) for m in resp.members), resp.cluster_id)

    async def member_remove(self, node_id: int, *, force: bool = False) -> MemberList:
        req = kv_pb2.MemberRemoveRequest(id=_int(node_id, "a node id", 1, _U64), force=force)
        resp = await self._call("MemberRemove", lambda _r: req, kv_pb2.MemberChangeResponse, write=True)
        return MemberList(tuple(_member(m) for m in resp.members), resp.cluster_id)

    async def check_cluster(self) -> kv_pb2.CheckClusterResponse:
        """The cross-replica consistency check, through the leader: every member's state hash right after one log
        entry, compared (``raftkv check --cluster``). A member whose hash differs from the majority's gets its
        corruption alarm."""
        req = kv_pb2.CheckClusterRequest()
        return await self._call("CheckCluster", lambda _r: req, kv_pb2.CheckClusterResponse, write=True)

    async def transfer_leader(self, to: int = 0) -> int:
        """Hand leadership to node ``to`` (0: the most up-to-date voter); returns the new leader's id."""
        req = kv_pb2.TransferLeaderRequest(to=_int(to, "a node id", 0, _U64))
        resp = await self._call("TransferLeader", lambda _r: req, kv_pb2.TransferLeaderResponse, write=True)
        return int(resp.leader_id)

    async def save_snapshot(self, path: str | os.PathLike[str], *, endpoint: str | None = None) -> int:
        """Stream a snapshot of the state machine from a node (the believed leader, or ``endpoint``) into ``path``;
        returns the log index it reflects. (``raftkv.backup.save`` adds fsync, rename and a checksum pass.)"""
        ep = endpoint or self._pick()
        _, stub = self._channel(ep)
        index = 0
        try:
            with open(path, "wb") as f:
                async for msg in stub.Snapshot(kv_pb2.SnapshotRequest(), timeout=max(self._timeout_s, 300.0)):
                    if msg.index:
                        index = msg.index
                    f.write(msg.chunk)
        except grpc.aio.AioRpcError as e:
            raise error_from_rpc(e) from None
        return index

    async def get(
        self,
        key: bytes | str,
        *,
        consistency: Consistency | str = "linearizable",
        min_index: int | None = None,
        max_staleness_ms: int = 0,
        fail_if_stale: bool = False,
    ) -> KeyValue | None:
        """The key's value and metadata, or None if it does not exist.

        ``min_index`` defaults to the highest index this client has seen (read-your-writes even on a stale read);
        pass 0 to opt out. ``max_staleness_ms`` applies to ``consistency="bounded"``."""
        k = _key(key)
        level = _consistency(consistency)
        floor = self._seen_index if min_index is None else _int(min_index, "min_index", 0, _U64)

        def request(remaining: float) -> kv_pb2.GetRequest:
            read = self._read_options(level, floor, max_staleness_ms, fail_if_stale, remaining)
            return kv_pb2.GetRequest(key=k, read=read)

        resp = await self._call("Get", request, kv_pb2.GetResponse, spread=_local_read(level))
        if not resp.found:
            return None
        return _kv(resp.kv, resp.header)

    async def range(
        self,
        prefix: bytes | str = b"",
        *,
        start_after: bytes | str = b"",
        limit: int = 1000,
        keys_only: bool = False,
        consistency: Consistency | str = "linearizable",
        min_index: int | None = None,
        max_staleness_ms: int = 0,
    ) -> RangeResult:
        """Up to ``limit`` keys starting with ``prefix``, in key order, after ``start_after``. ``more`` says whether
        more keys match (continue with ``start_after=result.kvs[-1].key``)."""
        p = _to_bytes(prefix, "prefix")
        sa = _to_bytes(start_after, "start_after")
        if not 1 <= limit <= 10_000:
            raise InvalidArgument(f"limit must be between 1 and 10000, got {limit}")
        level = _consistency(consistency)
        floor = self._seen_index if min_index is None else _int(min_index, "min_index", 0, _U64)

        def request(remaining: float) -> kv_pb2.RangeRequest:
            read = self._read_options(level, floor, max_staleness_ms, False, remaining)
            return kv_pb2.RangeRequest(prefix=p, start_after=sa, limit=limit, keys_only=keys_only, read=read)

        resp = await self._call("Range", request, kv_pb2.RangeResponse, spread=_local_read(level))
        idx = resp.header.index
        return RangeResult(tuple(_kv(kv, resp.header) for kv in resp.kvs), resp.more, idx, resp.header.revision)

    async def range_all(
        self,
        prefix: bytes | str = b"",
        *,
        start_after: bytes | str = b"",
        page_size: int = 1000,
        keys_only: bool = False,
        consistency: Consistency | str = "linearizable",
    ) -> AsyncIterator[KeyValue]:
        """Every key with ``prefix``, page by page (each page is one request, so the whole is not one snapshot)."""
        after = _to_bytes(start_after, "start_after")
        while True:
            page = await self.range(
                prefix, start_after=after, limit=page_size, keys_only=keys_only, consistency=consistency
            )
            for kv in page.kvs:
                yield kv
            if not page.more or not page.kvs:
                return
            after = page.kvs[-1].key

    async def status(self, endpoint: str | None = None) -> NodeStatus:
        """The status of one node: ``endpoint``, or else the first one that answers (the leader is asked first).
        Raises :class:`Unavailable` when no node answers."""
        req = kv_pb2.StatusRequest()
        if endpoint is not None:
            resp = await self._call("Status", lambda _r: req, kv_pb2.StatusResponse, endpoint=endpoint)
            return _node_status(endpoint, resp)
        box: list[str] = []
        resp = await self._call("Status", lambda _r: req, kv_pb2.StatusResponse, endpoint_box=box)
        return _node_status(box[0] if box else "", resp)

    async def cluster_status(self, *, timeout_s: float | None = None, members: bool = False) -> list[NodeStatus]:
        """The status of every endpoint, asked in parallel (one attempt each); unreachable nodes have
        ``reachable=False`` and ``error`` (a few words: "connection refused", "no answer within 1s", ...).

        ``members``: also ask the members that the nodes which answered know of but that are not endpoints (after
        the endpoints, in id order), so that every member of the cluster is there."""
        t = self._timeout_s if timeout_s is None else timeout_s

        async def one(ep: str) -> NodeStatus:
            try:
                _, stub = self._channel(ep)
                resp = await stub.Status(kv_pb2.StatusRequest(), timeout=t)
            except grpc.aio.AioRpcError as e:
                reason = transport_failure(e)
                if reason == "no answer within the deadline":
                    reason = f"no answer within {t:g}s"
                return NodeStatus(ep, False, client_addr=ep, error=reason or error_from_rpc(e).message)
            return _node_status(ep, resp)

        out = list(await asyncio.gather(*(one(ep) for ep in self._endpoints)))
        if members:
            asked = set(self._endpoints)
            more: dict[str, int] = {}
            for st in out:
                for mid, _peer, client in st.members:
                    if client and client not in asked:
                        more.setdefault(client, mid)
            extra = sorted(more, key=lambda c: more[c])
            out += await asyncio.gather(*(one(ep) for ep in extra))
        return out

    # -- internals -------------------------------------------------------------------------------------------
    def _read_options(
        self, level: kv_pb2.Consistency, floor: int, max_staleness_ms: int, fail_if_stale: bool, remaining: float
    ) -> kv_pb2.ReadOptions:
        return kv_pb2.ReadOptions(
            consistency=level,
            min_index=floor,
            max_staleness_ms=min(max(0, max_staleness_ms), _U32_MAX),
            fail_if_stale=fail_if_stale,
            timeout_ms=max(1, min(int(remaining * 1000), _U32_MAX)),
        )

    def _observe(self, index: int) -> None:
        if index > self._seen_index:
            self._seen_index = index

    def _channel(self, endpoint: str) -> tuple[grpc.aio.Channel, kv_pb2_grpc.KVStub]:
        if self._closed:
            raise RaftKVError("the client is closed")
        ch = self._channels.get(endpoint)
        if ch is None:
            channel = grpc.aio.insecure_channel(endpoint, options=_CHANNEL_OPTIONS)
            ch = (channel, kv_pb2_grpc.KVStub(channel))  # type: ignore[no-untyped-call]
            self._channels[endpoint] = ch
        return ch

    def _pick(self) -> str:
        removed = self._removed
        if self._leader and self._leader not in removed:
            return self._leader
        eps = self._endpoints
        n = len(eps)
        for i in range(n):
            ep = eps[(self._cursor + i) % n]
            if ep not in removed:
                return ep
        return eps[self._cursor % n]

    def _failed(self, endpoint: str) -> None:
        """``endpoint`` could not serve: forget it as leader and move on to the next endpoint (once, even if many
        concurrent requests report the same failure)."""
        if self._leader == endpoint:
            self._leader = None
        if self._endpoints[self._cursor % len(self._endpoints)] == endpoint:
            self._cursor += 1

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[kv_pb2.Session]:
        """Hold an idle lane (session) for the whole life of one write, with that lane's next sequence number; the
        write's retries reuse it. At most one request per session id is ever outstanding."""
        if self._lane_sem is None:
            self._lane_sem = asyncio.Semaphore(self._lanes)
        await self._lane_sem.acquire()
        lane = self._idle.pop()  # the semaphore guarantees an idle lane
        try:
            self._seqs[lane] += 1
            client_id = (self._client_id_base + lane - 1) % (_U64 - 1) + 1
            yield kv_pb2.Session(client_id=client_id, seq=self._seqs[lane])
        finally:
            self._idle.append(lane)
            self._lane_sem.release()

    # -- coalescing ------------------------------------------------------------------------------------------
    async def _coalesced(self, ep: str, method: str, req: Any, attempt_s: float) -> Any:
        """One attempt of a put/get/delete/incr on ``ep``, through its coalescer: at once and alone (a unary call) if
        one of the endpoint's call slots is free, else queued and sent with the others queued there in one Batch RPC
        when a slot frees. Returns the response, or raises the AioRpcError the unary call would have raised."""
        co = self._coalescers.get(ep)
        if co is None:
            co = self._coalescers[ep] = _Coalescer()
        _, stub = self._channel(ep)
        if not co.enabled:
            return await getattr(stub, method)(req, timeout=attempt_s)
        if co.inflight < self.coalesce_max_inflight and not co.queue:
            co.inflight += 1
            try:
                return await getattr(stub, method)(req, timeout=attempt_s)
            finally:
                self._release(ep, co)
        loop = asyncio.get_running_loop()
        q = _Queued(method, req, loop.time() + attempt_s, loop.create_future())
        co.queue.append(q)
        if co.inflight < self.coalesce_max_inflight:
            self._dispatch(ep, co)
        fut = q.future
        try:
            verdict = await fut
        except BaseException:
            # Cancelled just after being given a slot: hand the slot back (it was never used).
            if fut.done() and not fut.cancelled() and fut.exception() is None and fut.result() is _GRANTED:
                self._release(ep, co)
            raise
        if verdict is _GRANTED:
            try:
                _, stub = self._channel(ep)
                return await getattr(stub, method)(req, timeout=max(0.001, q.deadline - loop.time()))
            finally:
                self._release(ep, co)
        if verdict is _UNARY:
            _, stub = self._channel(ep)
            return await getattr(stub, method)(req, timeout=max(0.001, q.deadline - loop.time()))
        return verdict

    def _release(self, ep: str, co: _Coalescer) -> None:
        """A call slot of ``ep`` is free again: send what queued meanwhile."""
        co.inflight -= 1
        if co.queue:
            self._dispatch(ep, co)

    def _dispatch(self, ep: str, co: _Coalescer) -> None:
        """Send queued operations while a slot is free: one alone as its unary call (made by its own caller), more
        together as one Batch RPC. Operations whose attempt ran out of time in the queue fail, never sent."""
        if not co.enabled:
            queued, co.queue = co.queue, []
            for q in queued:
                if not q.future.done():
                    q.future.set_result(_UNARY)
            return
        now = asyncio.get_running_loop().time()
        while co.queue and co.inflight < self.coalesce_max_inflight:
            limit = self.coalesce_max_ops
            batch: list[_Queued] = []
            taken = 0
            for q in co.queue:
                taken += 1
                if q.future.done():  # its caller gave up (cancelled)
                    continue
                if q.deadline - now <= 0.001:  # a server Timeout that says "not applied": it was never sent
                    q.future.set_exception(_rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, _EXPIRED, _EXPIRED_MD))
                    continue
                batch.append(q)
                if len(batch) == limit:
                    break
            del co.queue[:taken]
            if not batch:
                continue
            co.inflight += 1
            if len(batch) == 1:
                batch[0].future.set_result(_GRANTED)
            else:
                task = asyncio.get_running_loop().create_task(self._send_batch(ep, co, batch))
                self._batch_tasks.add(task)
                task.add_done_callback(self._batch_tasks.discard)

    async def _send_batch(self, ep: str, co: _Coalescer, batch: list[_Queued]) -> None:
        """Send ``batch`` as one Batch RPC (holding one of ``ep``'s slots) and hand each operation its result or
        error. Failures of the RPC as a whole are every operation's failure, judged as a unary call's would be."""
        loop = asyncio.get_running_loop()
        try:
            fields = _BATCH_FIELDS
            req = kv_pb2.BatchRequest(ops=[kv_pb2.BatchOp(**{fields[q.method]: q.request}) for q in batch])
            timeout = max(0.001, min(q.deadline for q in batch) - loop.time())
            try:
                _, stub = self._channel(ep)
                resp = await stub.Batch(req, timeout=timeout)
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                    # An older server: no coalescing for this endpoint any more; nothing was carried out, so each
                    # operation sends itself as its unary call now.
                    co.enabled = False
                    for q in batch:
                        _settle(q, _UNARY)
                else:
                    for q in batch:
                        _fail(q, e)
                return
            except RaftKVError as e:  # the client was closed
                for q in batch:
                    _fail(q, e)
                return
            self._observe(resp.header.index)
            results = resp.results
            n = len(results)
            for i, q in enumerate(batch):
                r = results[i] if i < n else None
                which = r.WhichOneof("result") if r is not None else None
                if r is None or which is None:  # a broken server: the write may have applied; retry it
                    _fail(q, _rpc_error(grpc.StatusCode.UNAVAILABLE, f"{ep} answered no result for this operation"))
                elif which == "error":
                    _fail(q, _batch_error_rpc(r.error))
                else:
                    _settle(q, getattr(r, which))
        finally:
            # Cancelled (the client closing) or broken: whatever is left may have been sent, so its outcome is
            # unknown; the operations retry on their own.
            if not all(q.future.done() for q in batch):
                lost = _rpc_error(grpc.StatusCode.CANCELLED, "the batch call ended without an answer")
                for q in batch:
                    _fail(q, lost)
            self._release(ep, co)

    async def _call(
        self,
        method: str,
        request: Callable[[float], Any],
        response_type: type[R],
        *,
        write: bool = False,
        endpoint: str | None = None,
        endpoint_box: list[str] | None = None,
        spread: bool = False,
    ) -> R:
        """Call the KV ``method`` on the believed leader until it succeeds, a definite error comes back, or the
        deadline passes. ``request(remaining_s)`` builds each attempt's request. ``endpoint`` pins the call to one
        node (one attempt: no redirects, no failover). ``spread``: any node can serve it (a stale or bounded read),
        so spread such calls over all endpoints, round robin.

        Each attempt gets at most a quarter of the deadline (at least 1 s), so one node that accepts connections
        but never answers (paused, overloaded) cannot use up the whole deadline. The loop gives up as soon as the
        next back-off would pass the deadline, so the last attempt always completed, and the outcome of a write
        is unknown only if some attempt may really have applied it.

        A refused connection (or a host name that does not resolve) is followed by the next endpoint at once; once
        every endpoint refused and none answered anything, the call fails at once: nothing listens there. The
        error of a call that ran out of time says what each endpoint answered last."""
        op = _OP_NAMES.get(method) or method.lower()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        outcome_unknown = False
        last: RaftKVError | None = None
        attempts = 0
        backoff = BACKOFF_MIN_S
        redirected = False
        tried: dict[str, None] = {}
        why: dict[str, str] = {}  # endpoint -> what its last attempt got, in a few words
        refused: set[str] = set()  # endpoints where nothing listens (connection refused, unknown host)
        reached = False  # some attempt may have reached a server
        single = self._single_attempt
        if single:
            endpoint = self._endpoints[0]
        coalesce = self._coalesce and endpoint is None and method in _BATCH_FIELDS
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0.001:
                break
            if endpoint is not None:
                ep = endpoint
            elif spread and attempts == 0:
                self._spread_cursor += 1
                ep = self._endpoints[self._spread_cursor % len(self._endpoints)]
            else:
                ep = self._pick()
            tried[ep] = None
            attempts += 1
            attempt_s = min(remaining, max(1.0, self._timeout_s / 4))
            nothing_there = False
            try:
                if coalesce and attempts == 1:  # the first attempt may share a Batch RPC with other operations
                    resp = await self._coalesced(ep, method, request(attempt_s), attempt_s)
                else:
                    _, stub = self._channel(ep)
                    resp = await getattr(stub, method)(request(attempt_s), timeout=attempt_s)
            except grpc.aio.AioRpcError as e:
                err = error_from_rpc(e, write=write, endpoint=ep)
                if write and err.outcome_unknown:
                    outcome_unknown = True
                why[ep] = transport_failure(e) or err.message
                nothing_there = _nothing_listening(e)
                if nothing_there:
                    refused.add(ep)
                else:
                    reached = True
            else:
                if not isinstance(resp, response_type):
                    raise RaftKVError(f"{ep} answered {method} with {type(resp).__name__}")
                if method != "Status":
                    self._observe(resp.header.index)
                if write and endpoint is None:
                    self._leader = ep
                if endpoint_box is not None:
                    endpoint_box.append(ep)
                return resp
            last = err
            if single:
                raise err
            if isinstance(err, Removed | DataCorruption):
                # That node left the cluster, or found its data damaged: never ask it again; go on at once with the
                # others.
                self._removed.add(ep)
                self._failed(ep)
                if all(e in self._removed for e in self._endpoints):
                    if outcome_unknown:
                        err.applied = APPLIED_UNKNOWN
                    raise err
                continue
            if not err.retryable or (endpoint is not None and not isinstance(err, Timeout)):
                if outcome_unknown and not isinstance(err, ConditionFailed | InvalidArgument):
                    # (A condition or validation verdict answers for the session, so for every earlier attempt
                    # too; a node's refusal says nothing about an earlier attempt that may have applied.)
                    err.applied = APPLIED_UNKNOWN
                raise err
            # Where to go next.
            if isinstance(err, NotLeader) and err.leader_addr and err.leader_addr != ep:
                self._leader = err.leader_addr
                if not redirected:  # follow a fresh redirect at once; back off if they keep coming
                    redirected = True
                    continue
            else:
                self._failed(ep)
            redirected = False
            if nothing_there:
                live = [e for e in self._endpoints if e not in self._removed]
                if not reached and all(e in refused for e in live):
                    # Every endpoint refused the connection: nothing listens there, so waiting out the deadline
                    # would only hide that (a node that is merely restarting leaves the others answering).
                    raise Unavailable(f"{op} failed after {_n(attempts, 'attempt')}: {_nothing_at(live, why)}") from err
                if any(e not in tried for e in live):
                    continue  # a refused connection cost nothing: try the next endpoint at once
            pause = self._rng.uniform(backoff / 2, backoff)
            if pause >= deadline - loop.time():
                break  # no attempt could start before the deadline: report the last one's outcome now
            await asyncio.sleep(pause)
            backoff = min(BACKOFF_MAX_S, backoff * 2)
        t = self._timeout_s
        said = f": {_grouped(why)}" if why else ""
        if write and outcome_unknown:
            raise Timeout(
                f"{op} did not complete within {t:g}s; its outcome is unknown (it may have been applied){said}",
                outcome_unknown=True,
            ) from last
        if last is None or isinstance(last, Timeout):
            raise Timeout(f"{op} timed out after {t:g}s ({_n(attempts, 'attempt')}){said}") from last
        raise Unavailable(f"{op} failed after {_n(attempts, 'attempt')} in {t:g}s{said}") from last


def _n(count: int, what: str) -> str:
    return f"{count} {what}{'s' if count != 1 else ''}"


def _grouped(why: Mapping[str, str]) -> str:
    """``a: no leader is known; b, c: connection refused`` -- endpoints grouped by what they answered last."""
    by_reason: dict[str, list[str]] = {}
    for ep, reason in why.items():
        by_reason.setdefault(reason, []).append(ep)
    return "; ".join(f"{', '.join(eps)}: {reason}" for reason, eps in by_reason.items())


def _nothing_at(endpoints: Sequence[str], why: Mapping[str, str]) -> str:
    reasons = {why.get(e, "") for e in endpoints}
    if len(reasons) == 1:
        return f"nothing is listening at {', '.join(endpoints)} ({reasons.pop()})"
    return f"nothing is listening at any endpoint ({_grouped({e: why.get(e, '') for e in endpoints})})"


class _Queued:
    """An operation waiting in an endpoint's coalescer for a call slot."""

    __slots__ = ("deadline", "future", "method", "request")

    def __init__(self, method: str, request: Any, deadline: float, future: asyncio.Future[Any]) -> None:
        self.method = method
        self.request = request
        self.deadline = deadline  # loop time when the attempt runs out
        self.future = future  # the response, an AioRpcError, or _GRANTED / _UNARY


class _Coalescer:
    """One endpoint's coalescing state: the call slots in use and the operations waiting for one."""

    __slots__ = ("enabled", "inflight", "queue")

    def __init__(self) -> None:
        self.enabled = True  # False once the endpoint answered UNIMPLEMENTED for Batch
        self.inflight = 0
        self.queue: list[_Queued] = []


def _settle(q: _Queued, result: Any) -> None:
    if not q.future.done():
        q.future.set_result(result)


def _fail(q: _Queued, err: BaseException) -> None:
    if not q.future.done():
        q.future.set_exception(err)


def _local_read(level: kv_pb2.Consistency) -> bool:
    return level in (kv_pb2.STALE, kv_pb2.BOUNDED)


def _outcome_unknown(e: grpc.aio.AioRpcError, err: RaftKVError) -> bool:
    """Whether a failed write attempt may nevertheless have been applied: what the server said (``applied``), or
    for a failure that did not come from a server, anything but a connection that could not be made."""
    return err.applied == APPLIED_UNKNOWN


def _node_status(endpoint: str, r: kv_pb2.StatusResponse) -> NodeStatus:
    nid = r.header.node_id
    peer = client = ""
    members = tuple((m.id, m.peer_addr, m.client_addr) for m in r.members)
    for mid, p, c in members:
        if mid == nid:
            peer, client = p, c
    return NodeStatus(
        endpoint=endpoint,
        reachable=True,
        id=nid,
        role=r.role,
        term=r.header.term,
        commit=r.commit,
        applied=r.applied,
        last_index=r.last_index,
        leader_id=r.header.leader_id,
        leader_contact_ms=r.header.leader_contact_ms,
        client_addr=client or endpoint,
        peer_addr=peer,
        cluster_id=r.cluster_id,
        version=r.version,
        read_only=r.read_only,
        read_only_reason=r.read_only_reason,
        removed=r.removed,
        revision=r.revision,
        corruption=r.corruption,
        members=members,
        stats=dict(r.stats),
        learners=tuple(m.id for m in r.members if m.learner),
    )


# -- the sync client --------------------------------------------------------------------------------------------
class SyncClient:
    """The :class:`Client` API, blocking. The async client runs on a private event loop in a background thread,
    so this works in plain scripts and also when called from a thread that is running an event loop."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout_s: float = 10.0,
        client_id: int | None = None,
        lanes: int = 64,
        coalesce: bool = True,
        single_attempt: bool = False,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="raftkv-client", daemon=True)
        self._thread.start()
        self._closed = False

        async def make() -> Client:
            return Client(endpoints, timeout_s=timeout_s, client_id=client_id, lanes=lanes, coalesce=coalesce,
                          single_attempt=single_attempt)

        try:
            self._client = self._run(make())
        except BaseException:
            self._stop_loop()
            raise

    @property
    def client(self) -> Client:
        """The async client underneath (use only on its own loop)."""
        return self._client

    @property
    def endpoints(self) -> list[str]:
        return self._client.endpoints

    @property
    def seen_index(self) -> int:
        return self._client.seen_index

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RaftKVError("the client is closed")
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result()
        except BaseException:
            fut.cancel()
            raise

    def put(self, key: bytes | str, value: bytes | str, **conditions: Any) -> PutResult:
        """See :meth:`Client.put` (``if_version``, ``if_mod_revision``, ``if_value``, ``if_absent``, ``context``,
        ``on_conflict``)."""
        return self._run(self._client.put(key, value, **conditions))

    def delete(self, key: bytes | str, **conditions: Any) -> DeleteResult:
        return self._run(self._client.delete(key, **conditions))

    def cas(self, key: bytes | str, expected: bytes | str | None, new: bytes | str) -> bool:
        return self._run(self._client.cas(key, expected, new))

    def incr(self, key: bytes | str, delta: int = 1) -> int:
        return self._run(self._client.incr(key, delta))

    def txn(
        self, compares: Sequence[Compare] = (), success: Sequence[TxnOp] = (), failure: Sequence[TxnOp] = ()
    ) -> TxnResult:
        return self._run(self._client.txn(compares, success, failure))

    def save_snapshot(self, path: str | os.PathLike[str], *, endpoint: str | None = None) -> int:
        return self._run(self._client.save_snapshot(path, endpoint=endpoint))

    def member_list(self) -> MemberList:
        return self._run(self._client.member_list())

    def member_add(self, node_id: int, peer_addr: str, client_addr: str, *, learner: bool = False) -> MemberList:
        return self._run(self._client.member_add(node_id, peer_addr, client_addr, learner=learner))

    def member_promote(self, node_id: int) -> MemberList:
        return self._run(self._client.member_promote(node_id))

    def member_remove(self, node_id: int, *, force: bool = False) -> MemberList:
        return self._run(self._client.member_remove(node_id, force=force))

    def transfer_leader(self, to: int = 0) -> int:
        return self._run(self._client.transfer_leader(to))

    def check_cluster(self) -> kv_pb2.CheckClusterResponse:
        return self._run(self._client.check_cluster())

    def get(
        self,
        key: bytes | str,
        *,
        consistency: Consistency | str = "linearizable",
        min_index: int | None = None,
        max_staleness_ms: int = 0,
        fail_if_stale: bool = False,
    ) -> KeyValue | None:
        return self._run(
            self._client.get(
                key,
                consistency=consistency,
                min_index=min_index,
                max_staleness_ms=max_staleness_ms,
                fail_if_stale=fail_if_stale,
            )
        )

    def range(
        self,
        prefix: bytes | str = b"",
        *,
        start_after: bytes | str = b"",
        limit: int = 1000,
        keys_only: bool = False,
        consistency: Consistency | str = "linearizable",
        min_index: int | None = None,
        max_staleness_ms: int = 0,
    ) -> RangeResult:
        return self._run(
            self._client.range(
                prefix,
                start_after=start_after,
                limit=limit,
                keys_only=keys_only,
                consistency=consistency,
                min_index=min_index,
                max_staleness_ms=max_staleness_ms,
            )
        )

    def status(self, endpoint: str | None = None) -> NodeStatus:
        return self._run(self._client.status(endpoint))

    def cluster_status(self, *, timeout_s: float | None = None, members: bool = False) -> list[NodeStatus]:
        return self._run(self._client.cluster_status(timeout_s=timeout_s, members=members))

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._run(self._client.aclose())
        finally:
            self._closed = True
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True) and self._thread.is_alive():
            try:
                self._loop.call_soon_threadsafe(self._loop.stop)
            except RuntimeError:
                pass
