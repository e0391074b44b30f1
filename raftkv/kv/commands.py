"""Commands the KV state machine applies, the results it answers, and their encodings.

A log entry's data is a ``Batch``: commands from one proposer, with the proposer's node id and a timestamp taken
by the leader when it built the entry. Every command carries a request id (the proposer's, to match the result to
its waiter) and a session ``(client_id, seq)`` for exactly-once application (``client_id == 0``: no session; see
``raftkv.kv.sessions``).

Commands and results are ``NamedTuple``s: cheap to build, hashable, and packed by msgpack with no conversion
step. The byte layouts live in ``raftkv.codec`` (the only msgpack user); this module adds the typed wrapping.

Decoding is strict (``CodecError`` for anything malformed) and checks types and shapes only. ``validate`` checks
the rest (sizes, operators that only make sense for integers): the state machine calls it at apply time, and a
servicer can call it before proposing to reject bad requests early.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import NamedTuple, TypeAlias

import raftkv.codec as codec
from raftkv.codec import MalformedCommand

from .vclock import VectorClock

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_KEY_BYTES",
    "MAX_LEASE_ID",
    "MAX_LEASE_TTL_S",
    "MAX_OPS",
    "MAX_SIBLINGS",
    "MAX_VALUE_BYTES",
    "Alarm",
    "Batch",
    "CmpOp",
    "Command",
    "Compact",
    "CompactResult",
    "Condition",
    "ConditionFailedResult",
    "Delete",
    "DeleteResult",
    "DuplicateResult",
    "ErrorResult",
    "Event",
    "EventType",
    "HashMark",
    "Incr",
    "IncrResult",
    "InvalidCommand",
    "KeyValue",
    "LeaseGrant",
    "LeaseGrantResult",
    "LeaseRevoke",
    "LeaseRevokeResult",
    "Limits",
    "NoteResult",
    "Put",
    "PutResult",
    "RangeCompare",
    "RangeDelete",
    "RangeFlag",
    "RangeOp",
    "RangeOpKind",
    "RangePut",
    "RangeRead",
    "RangeResultOp",
    "RangeTarget",
    "RangeTxn",
    "RangeTxnResult",
    "Result",
    "Sibling",
    "SiblingPut",
    "Target",
    "Txn",
    "TxnOp",
    "TxnOpResult",
    "TxnOpType",
    "TxnResult",
    "decode_batch",
    "decode_batch_lenient",
    "decode_result",
    "encode_batch",
    "encode_result",
    "is_hash_mark",
    "validate",
]

MAX_KEY_BYTES = 4096
"""Default key size limit (4 KiB). Keys beyond LMDB's 511-byte key limit are stored hashed (see raftkv.kv.fsm)."""
MAX_VALUE_BYTES = 1 << 20
"""Default value size limit (1 MiB)."""
MAX_OPS = 128
"""Default limit on the conditions of a put or delete, and on a txn's compares + success + failure ops."""
MAX_SIBLINGS = 16
"""Default limit on the concurrent values one key may hold (its value and its siblings together)."""

_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
MAX_LEASE_ID = _I64_MAX
"""Lease ids are positive signed 64-bit integers (as etcd's)."""
MAX_LEASE_TTL_S = 9_000_000_000
"""The longest lease TTL, in seconds (etcd's limit)."""


class Target(IntEnum):
    """What a ``Condition`` compares. The operand's type follows the target (see ``Condition``)."""

    VALUE = codec.TARGET_VALUE
    VERSION = codec.TARGET_VERSION
    MOD_REVISION = codec.TARGET_MOD_REVISION
    CREATE_REVISION = codec.TARGET_CREATE_REVISION
    EXISTS = codec.TARGET_EXISTS
    VCLOCK = codec.TARGET_VCLOCK


class CmpOp(IntEnum):
    """``current <op> operand``. GT and LT are only for the integer targets."""

    EQ = codec.CMP_EQ
    NE = codec.CMP_NE
    GT = codec.CMP_GT
    LT = codec.CMP_LT


class TxnOpType(IntEnum):
    GET = codec.TXN_GET
    PUT = codec.TXN_PUT
    DELETE = codec.TXN_DELETE
    INCR = codec.TXN_INCR


class Condition(NamedTuple):
    """``current(key).target <op> operand``, evaluated against the state at apply time.

    Operand types: bytes for VALUE; int >= 0 for VERSION, MOD_REVISION, CREATE_REVISION; bool for EXISTS; a
    ``VectorClock`` for VCLOCK. A missing key has no value (VALUE EQ never holds, VALUE NE always does), version,
    mod_revision and create_revision 0, EXISTS False, and the empty clock (so VCLOCK EQ ``VectorClock()`` means "the
    key does not exist"). A key holding siblings has no single value either: VALUE EQ does not hold for it."""

    key: bytes
    target: int
    op: int
    operand: bytes | int | bool | VectorClock


class TxnOp(NamedTuple):
    """One operation of a txn branch. PUT uses ``value`` and ``lease``, INCR ``delta``; the unused fields must keep
    their defaults."""

    op: int
    key: bytes
    value: bytes = b""
    delta: int = 0
    lease: int = 0


class Put(NamedTuple):
    """Set ``key`` to ``value`` if every condition holds (else ``ConditionFailedResult``). ``lease``: attach the key
    to that lease (it is deleted when the lease ends; the lease must exist); 0: no lease (a key attached to one is
    detached)."""

    request_id: int
    client_id: int
    seq: int
    key: bytes
    value: bytes
    conditions: tuple[Condition, ...] = ()
    lease: int = 0


class SiblingPut(NamedTuple):
    """Write ``value`` as one of possibly several concurrent values of ``key``. ``context`` is the clock the writer
    read (a get's ``vclock``): the key's values that it covers (the writer saw them) are replaced, the others stay
    beside the new one as siblings. With a context that covers everything (the key's current clock, e.g. the merged
    clock of a get that returned siblings) the key ends with the new value alone; on a missing key the write creates
    it. Beyond ``Limits.max_siblings`` values the write is refused (resolve the siblings first)."""

    request_id: int
    client_id: int
    seq: int
    key: bytes
    value: bytes
    context: VectorClock


class Delete(NamedTuple):
    """Remove ``key`` (and its metadata and clock) if every condition holds."""

    request_id: int
    client_id: int
    seq: int
    key: bytes
    conditions: tuple[Condition, ...] = ()


class Incr(NamedTuple):
    """Add ``delta`` to the integer stored at ``key`` as ASCII decimal (a missing key counts as 0). The result
    must fit in a signed 64-bit integer."""

    request_id: int
    client_id: int
    seq: int
    key: bytes
    delta: int


class Txn(NamedTuple):
    """If every compare holds run ``success``, else ``failure``: in order, atomically, within one log entry (a GET
    sees the effects of the ops before it). A failing compare is not an error."""

    request_id: int
    client_id: int
    seq: int
    compares: tuple[Condition, ...]
    success: tuple[TxnOp, ...]
    failure: tuple[TxnOp, ...]


class HashMark(NamedTuple):
    """No change to the store: a point in the log at which every replica hashes its whole state (the cross-replica
    consistency check, ``raftkv check --cluster``). The proposer puts it in a log entry of its own."""

    request_id: int
    client_id: int
    seq: int


class Alarm(NamedTuple):
    """Raise the corruption alarm of ``member``: its state was found to differ from the majority's (a hash check).
    Replicated, so the member learns it (and keeps it across restarts) and everyone's status shows it. Cleared when
    the member is removed and added again."""

    request_id: int
    client_id: int
    seq: int
    member: int
    message: str


class Compact(NamedTuple):
    """Compact the history at ``revision``: from then on a read at a revision below it is refused (``Compacted``),
    and the versions only such reads could see are removed, in bounded steps (see raftkv.kv.fsm). Changes no key
    and takes no revision. Applied without a session (like ``HashMark``): it is idempotent, a compact at or below the
    compacted revision changes nothing and answers the compacted revision. Refused above the current revision."""

    request_id: int
    client_id: int
    seq: int
    revision: int


class LeaseGrant(NamedTuple):
    """Grant a lease of ``ttl_s`` seconds under ``lease_id`` (0: the state machine picks an unused id). The state
    machine only records it; the leader keeps the deadlines (``raftkv.lessor``) and ends an expired lease with a
    ``LeaseRevoke`` carrying the grant's ``stamp``. Refused if ``lease_id`` is held already."""

    request_id: int
    client_id: int
    seq: int
    lease_id: int
    ttl_s: int


class LeaseRevoke(NamedTuple):
    """End lease ``lease_id``: delete every key attached to it, all in one revision, and forget it. ``stamp`` 0:
    whatever grant holds the id (a client's revoke); else only the grant with that stamp (the leader's expiry of a
    lease it timed: a lease revoked and granted again under the same id meanwhile is not touched, and the answer
    is ``lease-not-found``)."""

    request_id: int
    client_id: int
    seq: int
    lease_id: int
    stamp: int = 0


class RangeTarget(IntEnum):
    """What a ``RangeCompare`` compares (etcd's ``CompareTarget`` numbering)."""

    VERSION = codec.RT_VERSION
    CREATE = codec.RT_CREATE
    MOD = codec.RT_MOD
    VALUE = codec.RT_VALUE
    LEASE = codec.RT_LEASE


class RangeResultOp(IntEnum):
    """How a ``RangeCompare`` compares (etcd's ``CompareResult`` numbering): ``current <op> operand``."""

    EQUAL = codec.RR_EQUAL
    GREATER = codec.RR_GREATER
    LESS = codec.RR_LESS
    NOT_EQUAL = codec.RR_NOT_EQUAL


class RangeOpKind(IntEnum):
    RANGE = codec.RO_RANGE
    PUT = codec.RO_PUT
    DELETE_RANGE = codec.RO_DELETE_RANGE
    TXN = codec.RO_TXN


class RangeFlag:
    """The bits of ``RangeOp.flags``."""

    PREV_KV = 1
    IGNORE_VALUE = 2
    IGNORE_LEASE = 4
    KEYS_ONLY = 8
    COUNT_ONLY = 16


class RangeCompare(NamedTuple):
    """etcd's compare: every key of the range (``range_end`` as in ``RangeOp``) must satisfy ``current <result>
    operand``; a key that does not exist counts as version, create, mod revision and lease 0, and fails every VALUE
    compare (etcd's rule)."""

    key: bytes
    range_end: bytes
    target: int
    result: int
    operand: bytes | int


class RangeOp(NamedTuple):
    """One operation of a ``RangeTxn`` (etcd's ``RequestOp``). ``range_end``: b"" the key alone, b"\\0" every key
    from ``key`` on, else the keys in ``[key, range_end)``. RANGE reads (``limit`` 0: all; flags KEYS_ONLY,
    COUNT_ONLY); PUT writes ``value`` with ``lease`` (flags PREV_KV, IGNORE_VALUE, IGNORE_LEASE); DELETE_RANGE deletes
    the range (PREV_KV); TXN runs ``body``, a nested ``(compares, success, failure)``."""

    kind: int
    key: bytes
    range_end: bytes = b""
    value: bytes = b""
    lease: int = 0
    flags: int = 0
    limit: int = 0
    body: tuple[tuple[RangeCompare, ...], tuple[RangeOp, ...], tuple[RangeOp, ...]] | None = None


class RangeTxn(NamedTuple):
    """A transaction with etcd's semantics (the etcd API's Put, DeleteRange and Txn are each one): the compares, and
    the branch each nested txn takes, are decided on the state before the txn; then the chosen ops run in order,
    each seeing the ones before; every write of the whole txn takes one revision."""

    request_id: int
    client_id: int
    seq: int
    compares: tuple[RangeCompare, ...]
    success: tuple[RangeOp, ...]
    failure: tuple[RangeOp, ...]


Command: TypeAlias = (
    Put | SiblingPut | Delete | Incr | Txn | HashMark | Alarm | Compact | LeaseGrant | LeaseRevoke | RangeTxn
)


class InvalidCommand(NamedTuple):
    """Stands in for a command of a batch that did not decode (``decode_batch_lenient``)."""

    request_id: int
    message: str


class Sibling(NamedTuple):
    """A value kept beside a key's newest one by a ``SiblingPut`` whose writer had not seen it: the write's value,
    and its dot (the proposing node and the write's revision), which names the write."""

    value: bytes
    node: int
    revision: int


class KeyValue(NamedTuple):
    """A key's value and metadata. ``create_revision``: revision of the write that created the key (since it last
    did not exist); ``mod_revision``: revision of its last write; ``version``: writes since creation (1 after the
    first); ``vclock``: per proposing node, the revision of its last write of the key (in this incarnation: a
    delete forgets it). ``siblings``: the concurrent values kept beside ``value`` (empty unless ``SiblingPut``s
    disagreed), newest first; ``vclock`` covers them all."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    vclock: VectorClock
    siblings: tuple[Sibling, ...] = ()
    lease: int = 0
    """The lease the key is attached to (0: none): the key is deleted when it ends."""


class PutResult(NamedTuple):
    kv: KeyValue
    """The key after the write."""


class DeleteResult(NamedTuple):
    deleted: bool
    """False if the key did not exist (then nothing changed)."""
    revision: int
    """The delete's revision; the store's current one if nothing was deleted."""


class IncrResult(NamedTuple):
    value: int
    kv: KeyValue


class ErrorResult(NamedTuple):
    """The command was not applied. ``kind`` is one of ``raftkv.errors``' kinds (e.g. "invalid-argument")."""

    kind: str
    message: str


TxnOpResult: TypeAlias = KeyValue | PutResult | DeleteResult | IncrResult | ErrorResult | None
"""Per txn op: GET gives the KeyValue (None if missing); an INCR on a non-integer gives ErrorResult (that op had no
effect, the others did)."""


class TxnResult(NamedTuple):
    succeeded: bool
    """Whether the compares held (``success`` ran) or not (``failure`` ran)."""
    results: tuple[TxnOpResult, ...]
    revision: int
    """The txn's revision (one for all its writes); the store's current one if it wrote nothing."""


class ConditionFailedResult(NamedTuple):
    """A put's or delete's condition did not hold; nothing was applied."""

    failed: Condition
    """The first condition that did not hold."""
    current: KeyValue | None
    """The current state of ``failed.key``."""


class NoteResult(NamedTuple):
    """The answer to a command that changes no key (``HashMark``, ``Alarm``): done. (Such commands carry no session,
    so their results are never cached.)"""

    note: str


class CompactResult(NamedTuple):
    """The answer to a ``Compact``."""

    compacted: int
    """The compacted revision afterwards: the one asked for, or the one already compacted if that was higher."""


class LeaseGrantResult(NamedTuple):
    """The answer to a ``LeaseGrant``."""

    lease_id: int
    ttl_s: int
    stamp: int
    """Names this grant (unique among the grants of the store, ever): what the leader's expiry must name."""


class LeaseRevokeResult(NamedTuple):
    """The answer to a ``LeaseRevoke`` that ended a lease."""

    lease_id: int
    revision: int
    """The revision of the deletes (one for all the lease's keys); the current one if it had no keys."""
    deleted: tuple[bytes, ...]
    """The keys deleted, in byte order."""


class RangeRead(NamedTuple):
    """A RANGE op's answer: the keys (up to its limit; none with COUNT_ONLY), whether more matched, and how many
    matched in all."""

    kvs: tuple[KeyValue, ...]
    more: bool
    total: int


class RangePut(NamedTuple):
    kv: KeyValue
    prev: KeyValue | None
    """With PREV_KV: the key before the put."""


class RangeDelete(NamedTuple):
    deleted: int
    prevs: tuple[KeyValue, ...]
    """With PREV_KV: the keys deleted, as they were."""


class RangeTxnResult(NamedTuple):
    succeeded: bool
    results: tuple[RangeRead | RangePut | RangeDelete | RangeTxnResult, ...]
    revision: int
    """The txn's revision if it wrote anything, else the store's current one."""


class EventType(IntEnum):
    """What an ``Event`` did to its key."""

    PUT = 1
    DELETE = 2


class Event(NamedTuple):
    """One write of the history, as ``KVStateMachine.events`` replays it: events come in revision order, then in
    the order the command made them (``sub``: a txn may write several keys, or one key twice, in one revision)."""

    revision: int
    sub: int
    kind: EventType
    key: bytes
    kv: KeyValue | None
    """A put: the key right after it (its value and metadata); a delete: None."""
    prev: KeyValue | None = None
    """If asked for: the key right before this write (None if it did not exist)."""


class DuplicateResult(NamedTuple):
    """A late duplicate of a request older than the session's last one: not applied, and its original answer is
    no longer kept."""


Result: TypeAlias = (
    PutResult | DeleteResult | IncrResult | TxnResult | ConditionFailedResult | ErrorResult | DuplicateResult
    | NoteResult | CompactResult | LeaseGrantResult | LeaseRevokeResult | RangeTxnResult
)
"""(A ``RangeTxnResult`` is never cached in a session: the etcd API has no sessions, so range txns carry none.)"""


class Batch(NamedTuple):
    """A log entry's data: commands from one proposer."""

    proposer: int
    """Node id (> 0) of the node that proposed the entry: the one whose vector clock component writes advance."""
    timestamp_ns: int
    """The proposer's clock when it built the entry: the only time the state machine knows (session expiry)."""
    commands: list[Command]


_TYPES = codec.KVTypes(
    put=Put,
    sibling_put=SiblingPut,
    hash_mark=HashMark,
    alarm=Alarm,
    compact=Compact,
    lease_grant=LeaseGrant,
    lease_revoke=LeaseRevoke,
    range_txn=RangeTxn,
    range_compare=RangeCompare,
    range_op=RangeOp,
    delete=Delete,
    incr=Incr,
    txn=Txn,
    condition=Condition,
    txn_op=TxnOp,
    vclock=VectorClock,
    key_value=KeyValue,
    sibling=Sibling,
    put_result=PutResult,
    delete_result=DeleteResult,
    incr_result=IncrResult,
    txn_result=TxnResult,
    condition_failed_result=ConditionFailedResult,
    error_result=ErrorResult,
    duplicate_result=DuplicateResult,
    lease_grant_result=LeaseGrantResult,
    lease_revoke_result=LeaseRevokeResult,
)
_OP_OF: dict[type, int] = {
    Put: codec.CMD_PUT,
    SiblingPut: codec.CMD_SIBLING_PUT,
    HashMark: codec.CMD_HASH_MARK,
    Alarm: codec.CMD_ALARM,
    Compact: codec.CMD_COMPACT,
    LeaseGrant: codec.CMD_LEASE_GRANT,
    LeaseRevoke: codec.CMD_LEASE_REVOKE,
    RangeTxn: codec.CMD_RANGE_TXN,
    Delete: codec.CMD_DELETE,
    Incr: codec.CMD_INCR,
    Txn: codec.CMD_TXN,
}
_TAG_OF: dict[type, int] = {
    KeyValue: codec.RES_KEY_VALUE,
    PutResult: codec.RES_PUT,
    DeleteResult: codec.RES_DELETE,
    IncrResult: codec.RES_INCR,
    TxnResult: codec.RES_TXN,
    ConditionFailedResult: codec.RES_CONDITION_FAILED,
    ErrorResult: codec.RES_ERROR,
    DuplicateResult: codec.RES_DUPLICATE,
    LeaseGrantResult: codec.RES_LEASE_GRANT,
    LeaseRevokeResult: codec.RES_LEASE_REVOKE,
}


def encode_batch(proposer: int, timestamp_ns: int, commands: Sequence[Command]) -> bytes:
    """The data of one log entry. ``proposer`` is the proposing node's id (> 0), ``timestamp_ns`` its clock."""
    if type(proposer) is not int or proposer <= 0:
        raise ValueError(f"the proposer is a node id > 0, got {proposer!r}")
    try:
        wire = [(_OP_OF[type(c)], *c) for c in commands]
    except KeyError:
        bad = next(c for c in commands if type(c) not in _OP_OF)
        raise TypeError(f"not a command: {bad!r:.100}") from None
    return codec.encode_command_batch(proposer, timestamp_ns, wire)


def decode_batch(data: bytes | bytearray | memoryview) -> Batch:
    """Inverse of ``encode_batch``. Raises ``CodecError`` unless ``data`` is exactly one valid batch."""
    proposer, timestamp_ns, commands = codec.decode_command_batch(data, _TYPES)
    return Batch(proposer, timestamp_ns, commands)


def decode_batch_lenient(data: bytes | bytearray | memoryview) -> tuple[int, int, list[Command | InvalidCommand]]:
    """Like ``decode_batch``, but a command that does not decode becomes an ``InvalidCommand`` in its place, so
    the rest of the batch can still be applied. Raises ``CodecError`` only if the envelope itself is bad."""
    proposer, timestamp_ns, commands = codec.decode_command_batch(data, _TYPES, lenient=True)
    for i, c in enumerate(commands):
        if type(c) is MalformedCommand:
            commands[i] = InvalidCommand(c.request_id, str(c))
    return proposer, timestamp_ns, commands


_HASH_MARK_MAX_BYTES = 64


def is_hash_mark(data: bytes) -> bool:
    """Whether a log entry's data is a hash mark (a batch of one ``HashMark``). Cheap for every other entry: only a
    tiny one is decoded."""
    if len(data) > _HASH_MARK_MAX_BYTES or not data:
        return False
    try:
        cmds = decode_batch(data).commands
    except codec.CodecError:
        return False
    return len(cmds) == 1 and type(cmds[0]) is HashMark


def _wire_result(r: Result) -> tuple[object, ...]:
    if type(r) is TxnResult:
        items = tuple([None if x is None else (_TAG_OF[type(x)], *x) for x in r.results])
        return (codec.RES_TXN, r.succeeded, items, r.revision)
    return (_TAG_OF[type(r)], *r)


def encode_result(result: Result) -> bytes:
    """A result as cached in the session table; ``decode_result`` gives back an equal value."""
    try:
        return codec.encode_result(_wire_result(result))
    except KeyError:
        raise TypeError(f"not a result: {result!r:.100}") from None


def decode_result(data: bytes | bytearray | memoryview) -> Result:
    """Inverse of ``encode_result``. Raises ``CodecError`` unless ``data`` is exactly one valid result."""
    result: Result = codec.decode_result(data, _TYPES)
    return result


def decode_value(data: bytes | bytearray | memoryview, key: bytes) -> KeyValue:
    """A stored value record as the ``KeyValue`` of ``key`` (for ``raftkv.kv.fsm``)."""
    return KeyValue(key, *codec.decode_value_record(data, _TYPES))


# -- validation ------------------------------------------------------------------------------------------------


class Limits(NamedTuple):
    """Size limits every replica must agree on (they decide, at apply time, whether a command is rejected)."""

    max_key_bytes: int = MAX_KEY_BYTES
    max_value_bytes: int = MAX_VALUE_BYTES
    max_ops: int = MAX_OPS
    max_siblings: int = MAX_SIBLINGS


DEFAULT_LIMITS = Limits()
_INT_TARGETS = frozenset({Target.VERSION, Target.MOD_REVISION, Target.CREATE_REVISION})
_TARGETS = frozenset(Target)
_CMP_OPS = frozenset(CmpOp)
_TXN_OP_TYPES = frozenset(TxnOpType)


def _check_key(key: bytes, limits: Limits, what: str) -> str | None:
    if not key:
        return f"{what}: the key is empty"
    if len(key) > limits.max_key_bytes:
        return f"{what}: the key is {len(key)} bytes, more than the limit of {limits.max_key_bytes}"
    return None


def _check_value(value: bytes, limits: Limits, what: str) -> str | None:
    if len(value) > limits.max_value_bytes:
        return f"{what}: the value is {len(value)} bytes, more than the limit of {limits.max_value_bytes}"
    return None


def _check_delta(delta: int, what: str) -> str | None:
    if not _I64_MIN <= delta <= _I64_MAX:
        return f"{what}: the delta {delta} does not fit in 64 bits"
    return None


def _check_conditions(conditions: tuple[Condition, ...], limits: Limits, what: str) -> str | None:
    for c in conditions:
        error = _check_key(c.key, limits, f"{what} condition")
        if error:
            return error
        if c.target not in _TARGETS or c.op not in _CMP_OPS:
            return f"{what} condition: unknown target {c.target!r} or operator {c.op!r}"
        if (c.op == CmpOp.GT or c.op == CmpOp.LT) and c.target not in _INT_TARGETS:
            return f"{what} condition on {Target(c.target).name}: only EQ and NE apply (GT and LT are for integers)"
    return None


def _check_range_body(compares: tuple[RangeCompare, ...], success: tuple[RangeOp, ...],
                      failure: tuple[RangeOp, ...], limits: Limits, n: list[int]) -> str | None:
    """``n[0]``: the compares and ops counted so far, nested txns included (at most ``max_ops`` in all)."""
    n[0] += len(compares) + len(success) + len(failure)
    if n[0] > limits.max_ops:
        return f"txn: more than {limits.max_ops} compares and operations"
    for c in compares:
        if not c.key:
            return "txn compare: the key is empty"
        if len(c.key) > limits.max_key_bytes:
            return f"txn compare: the key is {len(c.key)} bytes, more than the limit of {limits.max_key_bytes}"
        if c.target == RangeTarget.LEASE and type(c.operand) is int and c.operand > MAX_LEASE_ID:
            return "txn compare: the lease id does not fit in a signed 64-bit integer"
    for o in success + failure:
        if o.kind == RangeOpKind.TXN:
            assert o.body is not None
            error = _check_range_body(*o.body, limits, n)
            if error:
                return error
            continue
        what = RangeOpKind(o.kind).name.lower().replace("_", " ")
        error = _check_key(o.key, limits, what) or _check_lease(o.lease, what)
        if error:
            return error
        if o.kind == RangeOpKind.PUT:
            error = _check_value(o.value, limits, what)
            if error:
                return error
        elif o.value or o.lease:
            return f"{what}: only a put has a value or a lease"
    return None


def _check_lease(lease: int, what: str) -> str | None:
    if lease > MAX_LEASE_ID:
        return f"{what}: the lease id {lease} does not fit in a signed 64-bit integer"
    return None


def _check_txn_ops(ops: tuple[TxnOp, ...], limits: Limits) -> str | None:
    for o in ops:
        if o.op not in _TXN_OP_TYPES:
            return f"txn: unknown op {o.op!r}"
        name = TxnOpType(o.op).name.lower()
        error = _check_key(o.key, limits, f"txn {name}")
        if error:
            return error
        if o.op == TxnOpType.PUT:
            error = _check_value(o.value, limits, "txn put") or _check_lease(o.lease, "txn put")
        elif o.value:
            error = f"txn {name}: only a put has a value"
        elif o.lease:
            error = f"txn {name}: only a put has a lease"
        if error:
            return error
        if o.op == TxnOpType.INCR:
            error = _check_delta(o.delta, "txn incr")
        elif o.delta:
            error = f"txn {name}: only an incr has a delta"
        if error:
            return error
    return None


def validate(cmd: Command, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """Why ``cmd`` must be rejected (a message for an "invalid-argument" error), or None if it is valid.

    Assumes well-typed fields, as ``decode_batch`` guarantees. Checks: keys are 1..max_key_bytes, values at most
    max_value_bytes, deltas fit in a signed 64-bit integer, GT/LT only on integer targets, at most max_ops
    conditions (or txn compares + ops), and a txn op's unused fields keep their defaults."""
    if type(cmd) is Put:
        what = "put"
        error = _check_key(cmd.key, limits, what) or _check_value(cmd.value, limits, what) or _check_lease(
            cmd.lease, what)
        conditions = cmd.conditions
    elif type(cmd) is SiblingPut:
        return _check_key(cmd.key, limits, "put") or _check_value(cmd.value, limits, "put")
    elif type(cmd) is HashMark or type(cmd) is Alarm or type(cmd) is Compact:
        return None  # (a compact's revision is an index, as decoding checked; the state decides the rest)
    elif type(cmd) is LeaseGrant:
        if not 1 <= cmd.ttl_s <= MAX_LEASE_TTL_S:
            return f"lease grant: the TTL is 1 to {MAX_LEASE_TTL_S} seconds, got {cmd.ttl_s}"
        return _check_lease(cmd.lease_id, "lease grant")
    elif type(cmd) is LeaseRevoke:
        return _check_lease(cmd.lease_id, "lease revoke")
    elif type(cmd) is RangeTxn:
        return _check_range_body(cmd.compares, cmd.success, cmd.failure, limits, [0])
    elif type(cmd) is Delete:
        what = "delete"
        error = _check_key(cmd.key, limits, what)
        conditions = cmd.conditions
    elif type(cmd) is Incr:
        return _check_key(cmd.key, limits, "incr") or _check_delta(cmd.delta, "incr")
    elif type(cmd) is Txn:
        n = len(cmd.compares) + len(cmd.success) + len(cmd.failure)
        if n > limits.max_ops:
            return f"txn: {n} compares and ops, more than the limit of {limits.max_ops}"
        return (
            _check_conditions(cmd.compares, limits, "txn")
            or _check_txn_ops(cmd.success, limits)
            or _check_txn_ops(cmd.failure, limits)
        )
    else:
        return f"not a command: {type(cmd).__name__}"
    if error:
        return error
    if not conditions:
        return None
    if len(conditions) > limits.max_ops:
        return f"{what}: {len(conditions)} conditions, more than the limit of {limits.max_ops}"
    return _check_conditions(conditions, limits, what)
