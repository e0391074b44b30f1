"""The client API's protobuf messages and the state machine's values, mapped both ways: keys with their metadata
out (``kv_to_pb``), vector clocks, compares and transaction operations in, and a state machine result as the raftkv
error it stands for (``result_error``, ``batch_error``)."""

from __future__ import annotations

from typing import Any

from .errors import ConditionFailed, InvalidArgument, RaftKVError, error_of_kind, quoted
from .kv import (
    CmpOp,
    Condition,
    ConditionFailedResult,
    DuplicateResult,
    ErrorResult,
    KeyValue,
    Target,
    TxnOpType,
    VectorClock,
)
from .proto.v1 import kv_pb2

__all__ = ["PB_TXN_OP", "batch_error", "conditions_from_pb", "kv_to_pb", "result_error", "vclock_from_pb"]

_PB_TARGET = {
    kv_pb2.Compare.VALUE: Target.VALUE,
    kv_pb2.Compare.VERSION: Target.VERSION,
    kv_pb2.Compare.MOD_REVISION: Target.MOD_REVISION,
    kv_pb2.Compare.CREATE_REVISION: Target.CREATE_REVISION,
    kv_pb2.Compare.EXISTS: Target.EXISTS,
    kv_pb2.Compare.VCLOCK: Target.VCLOCK,
}
_PB_OP = {
    kv_pb2.Compare.EQUAL: CmpOp.EQ,
    kv_pb2.Compare.NOT_EQUAL: CmpOp.NE,
    kv_pb2.Compare.GREATER: CmpOp.GT,
    kv_pb2.Compare.LESS: CmpOp.LT,
}
_NUMERIC = {Target.VERSION, Target.MOD_REVISION, Target.CREATE_REVISION}
PB_TXN_OP = {
    kv_pb2.TxnOp.GET: TxnOpType.GET,
    kv_pb2.TxnOp.PUT: TxnOpType.PUT,
    kv_pb2.TxnOp.DELETE: TxnOpType.DELETE,
    kv_pb2.TxnOp.INCR: TxnOpType.INCR,
}


def _vclock_pb(kv: KeyValue) -> kv_pb2.VectorClock:
    pairs = kv.vclock.pairs()
    return kv_pb2.VectorClock(nodes=[n for n, _ in pairs], counters=[c for _, c in pairs])


def kv_to_pb(kv: KeyValue, keys_only: bool = False) -> kv_pb2.KeyValue:
    pb = kv_pb2.KeyValue(
        key=kv.key,
        value=b"" if keys_only else kv.value,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        vclock=_vclock_pb(kv),
        lease=kv.lease,
    )
    if kv.siblings:
        pb.siblings.extend(
            kv_pb2.Sibling(value=b"" if keys_only else s.value, node=s.node, revision=s.revision) for s in kv.siblings
        )
    return pb


def vclock_from_pb(v: kv_pb2.VectorClock) -> VectorClock:
    if len(v.nodes) != len(v.counters):
        raise InvalidArgument("vector clock: nodes and counters must have the same length")
    try:
        return VectorClock(zip(v.nodes, v.counters, strict=True))
    except ValueError as e:
        raise InvalidArgument(f"vector clock: {e}") from None


def conditions_from_pb(compares: Any, default_key: bytes = b"") -> tuple[Condition, ...]:
    """Client Compares to state machine Conditions, with clear errors for nonsense (GREATER on a value ...)."""
    out = []
    for c in compares:
        key = c.key or default_key
        if not key:
            raise InvalidArgument("a compare needs a key")
        target = _PB_TARGET.get(c.target)
        op = _PB_OP.get(c.op)
        if target is None or op is None:
            raise InvalidArgument(f"unknown compare target {c.target} or operator {c.op}")
        if op in (CmpOp.GT, CmpOp.LT) and target not in _NUMERIC:
            raise InvalidArgument(f"{CmpOp(op).name} only compares version, mod_revision or create_revision")
        operand: bytes | int | bool | VectorClock
        if target == Target.VALUE:
            operand = c.value
        elif target in _NUMERIC:
            operand = c.number
        elif target == Target.EXISTS:
            operand = c.exists
        else:
            operand = vclock_from_pb(c.vclock)
        out.append(Condition(key, target, op, operand))
    return tuple(out)


def result_error(result: Any) -> RaftKVError | None:
    """The raftkv error a state machine result stands for (None for a success)."""
    if isinstance(result, ErrorResult):
        return error_of_kind(result.kind, result.message)
    if isinstance(result, ConditionFailedResult):
        f = result.failed
        what = Target(f.target).name.lower()
        cur = result.current
        if cur is None:
            state = "the key does not exist"
        else:
            state = f"version {cur.version}, mod_revision {cur.mod_revision}"
            if cur.siblings:
                state += f", {len(cur.siblings) + 1} concurrent values"
        return ConditionFailed(f"condition on the {what} of key {quoted(f.key, 80)} did not hold ({state})",
                               current=cur)
    if isinstance(result, DuplicateResult):
        return InvalidArgument("stale request: this session already moved past this sequence number")
    return None


def batch_error(err: RaftKVError) -> kv_pb2.BatchError:
    """A batch operation's error: the status and trailing metadata its unary RPC would have failed with."""
    be = kv_pb2.BatchError(code=err.grpc_code, message=err.message, metadata=dict(err.metadata()))
    if isinstance(err, ConditionFailed) and isinstance(err.current, KeyValue):
        be.current = kv_to_pb(err.current).SerializeToString()
    return be
