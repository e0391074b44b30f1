"""The client API's values: what a call takes (``Compare``, ``TxnOp``) and returns (``KeyValue``, ``PutResult``,
``NodeStatus`` ...), the vector clock order (``compare``), the cluster's health judged from statuses
(``cluster_health``), and how each value goes to and comes from the wire (with the checks a value must pass to
be sent)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from ..errors import InvalidArgument
from ..proto.v1 import kv_pb2

__all__ = [
    "CONSISTENCY_LEVELS",
    "ClusterHealth",
    "Compare",
    "Consistency",
    "DeleteResult",
    "KeyValue",
    "LeaseInfo",
    "Member",
    "MemberList",
    "NodeStatus",
    "OnConflict",
    "PutResult",
    "RangeResult",
    "TxnOp",
    "TxnOpOutcome",
    "TxnResult",
    "WatchBatch",
    "WatchEvent",
    "cluster_health",
    "compare",
]

Consistency = Literal["linearizable", "lease", "stale", "bounded"]
OnConflict = Literal["reject", "siblings"]
CONSISTENCY_LEVELS: tuple[Consistency, ...] = ("linearizable", "lease", "stale", "bounded")

_U64 = 1 << 64
_I64 = 1 << 63


# -- results ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class KeyValue:
    """A key with its value and metadata.

    ``create_revision`` / ``mod_revision``: the revisions of the write that created the key and of its last write
    (revisions count write requests cluster-wide, one each; see ``put(if_mod_revision=...)``). ``vclock``: the
    key's vector clock, the context to pass to a later ``put``. ``siblings``: the other concurrent values kept
    beside ``value`` by puts with ``on_conflict="siblings"`` (newest first; empty when there is one value);
    ``values`` is all of them. ``index``: the applied log index of the response that carried it (a session token);
    ``revision``: the store's revision as of that response. ``lease``: the lease the key is attached to (0: none):
    the key is deleted when it ends."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    vclock: dict[int, int] = field(default_factory=dict)
    index: int = 0
    revision: int = 0
    siblings: tuple[bytes, ...] = ()
    lease: int = 0

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
    ``TxnOp.incr(k, delta)``. A put may attach its key to a lease (``TxnOp.put(k, v, lease=id)``)."""

    kind: str
    key: bytes | str
    value: bytes | str = b""
    delta: int = 0
    lease: int = 0

    @staticmethod
    def get(key: bytes | str) -> TxnOp:
        return TxnOp("get", key)

    @staticmethod
    def put(key: bytes | str, value: bytes | str, *, lease: int = 0) -> TxnOp:
        return TxnOp("put", key, value, lease=lease)

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
        lease = _int(self.lease, "a lease id", 0, _I64)
        return kv_pb2.TxnOp(type=t, key=_key(self.key), value=_to_bytes(self.value, "value"), delta=delta,
                            lease=lease)


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A lease as the leader sees it: ``ttl`` seconds left (rounded up; -1: no such lease: it expired or was
    revoked), the ``granted_ttl``, and the ``keys`` attached (if asked for)."""

    id: int
    ttl: int
    granted_ttl: int
    keys: tuple[bytes, ...] = ()

    @property
    def exists(self) -> bool:
        return self.ttl >= 0


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
class WatchEvent:
    """One change: ``type`` "put" (``kv``: the key after it) or "delete" (``kv``: the key, with the delete's
    revision as ``mod_revision``); ``prev_kv``: the key before it, with ``prev_kv=True`` (None if it did not exist)."""

    type: Literal["put", "delete"]
    kv: KeyValue
    prev_kv: KeyValue | None = None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """The events of one response, in revision order; ``revision``: every event up to it has been delivered (an
    empty batch is a progress notification: the watch is up to date as of ``revision``)."""

    events: tuple[WatchEvent, ...]
    revision: int


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
                    revision, siblings, pb.lease)


def _watch_event(pb: kv_pb2.WatchEvent, header: kv_pb2.Header) -> WatchEvent:
    prev = _kv(pb.prev_kv, header) if pb.HasField("prev_kv") else None
    return WatchEvent("delete" if pb.type == kv_pb2.WatchEvent.DELETE else "put", _kv(pb.kv, header), prev)


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
