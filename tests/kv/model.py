"""A plain-Python model of the KV state machine's semantics, shared by the tests that check it against one."""

from __future__ import annotations

import re
from typing import Any

from raftkv.kv import (
    CmpOp,
    Command,
    Condition,
    ConditionFailedResult,
    Delete,
    DeleteResult,
    DuplicateResult,
    ErrorResult,
    Incr,
    IncrResult,
    KeyValue,
    LeaseGrant,
    LeaseGrantResult,
    LeaseRevoke,
    LeaseRevokeResult,
    Put,
    PutResult,
    RangeDelete,
    RangeFlag,
    RangeOpKind,
    RangePut,
    RangeRead,
    RangeTxn,
    RangeTxnResult,
    Result,
    Sibling,
    SiblingPut,
    Target,
    TxnOpType,
    TxnResult,
    VectorClock,
    validate,
)

GET, PUT, DEL, INCR = TxnOpType.GET, TxnOpType.PUT, TxnOpType.DELETE, TxnOpType.INCR
EQ, NE, GT, LT = CmpOp.EQ, CmpOp.NE, CmpOp.GT, CmpOp.LT


class Model:
    """A straightforward re-statement of the semantics: a dict of KeyValue, a revision counter bumped once per
    command that changed anything, the dot (proposer, revision) of each key's newest value kept on the side,
    sessions without expiry, leases as a dict of (ttl, stamp) with each key's lease in its KeyValue."""

    def __init__(self) -> None:
        self.data: dict[bytes, KeyValue] = {}
        self.leases: dict[int, tuple[int, int]] = {}
        self.stamp = 0
        self.dots: dict[bytes, tuple[int, int]] = {}
        self.sessions: dict[int, tuple[int, Result]] = {}
        self.revision = 0
        self.wrote = False

    def holds(self, c: Condition) -> bool:
        kv = self.data.get(c.key)
        if c.target == Target.VALUE:
            cur: Any = None if kv is None or kv.siblings else kv.value
            if kv is not None and kv.siblings:
                return c.op == NE
        elif c.target == Target.EXISTS:
            cur = kv is not None
        elif c.target == Target.VCLOCK:
            cur = VectorClock() if kv is None else kv.vclock
        else:
            field = {Target.VERSION: "version", Target.MOD_REVISION: "mod_revision",
                     Target.CREATE_REVISION: "create_revision"}
            cur = 0 if kv is None else getattr(kv, field[Target(c.target)])
        if c.op == EQ:
            return bool(cur == c.operand)
        if c.op == NE:
            return bool(cur != c.operand)
        return bool(cur > c.operand if c.op == GT else cur < c.operand)

    def rev(self) -> int:
        self.wrote = True
        return self.revision + 1

    def write(
        self, key: bytes, value: bytes, proposer: int, siblings: tuple[Sibling, ...] = (), lease: int | None = None
    ) -> KeyValue:
        """``lease`` None: the key keeps the lease it has."""
        old = self.data.get(key)
        rev = self.rev()
        clock = {} if old is None else dict(old.vclock.pairs())
        clock[proposer] = rev
        if lease is None:
            lease = 0 if old is None else old.lease
        kv = KeyValue(
            key, value, rev if old is None else old.create_revision, rev, 1 if old is None else old.version + 1,
            VectorClock(clock), siblings, lease,
        )  # fmt: skip
        self.data[key] = kv
        self.dots[key] = (proposer, rev)
        return kv

    def sibling_put(self, cmd: SiblingPut, proposer: int) -> Result:
        old = self.data.get(cmd.key)
        if old is None:
            return PutResult(self.write(cmd.key, cmd.value, proposer))
        node, rev = self.dots[cmd.key]
        values = [Sibling(old.value, node, rev), *old.siblings]
        keep = tuple(s for s in values if cmd.context.get(s.node) < s.revision)
        if len(keep) >= 16:
            return ErrorResult("invalid-argument", "")
        return PutResult(self.write(cmd.key, cmd.value, proposer, keep))

    def current(self) -> int:
        return self.revision + 1 if self.wrote else self.revision

    def delete(self, key: bytes) -> DeleteResult:
        if self.data.pop(key, None) is None:
            return DeleteResult(False, self.current())
        return DeleteResult(True, self.rev())

    def incr(self, key: bytes, delta: int, proposer: int) -> IncrResult | ErrorResult:
        old = self.data.get(key)
        text = b"0" if old is None else old.value
        if old is not None and old.siblings:
            return ErrorResult("invalid-argument", "")
        if not re.fullmatch(rb"-?[0-9]{1,19}", text) or not -(2**63) <= int(text) + delta < 2**63:
            return ErrorResult("invalid-argument", "")
        n = int(text) + delta
        return IncrResult(n, self.write(key, str(n).encode(), proposer))

    def grant(self, cmd: LeaseGrant) -> Result:
        if cmd.lease_id in self.leases:
            return ErrorResult("invalid-argument", "")
        self.stamp += 1
        lid = cmd.lease_id or self.stamp
        while lid in self.leases:
            lid += 1
        self.leases[lid] = (cmd.ttl_s, self.stamp)
        return LeaseGrantResult(lid, cmd.ttl_s, self.stamp)

    def revoke(self, cmd: LeaseRevoke) -> Result:
        held = self.leases.get(cmd.lease_id)
        if held is None or (cmd.stamp and held[1] != cmd.stamp):
            return ErrorResult("lease-not-found", "")
        del self.leases[cmd.lease_id]
        keys = sorted(k for k, kv in self.data.items() if kv.lease == cmd.lease_id)
        for k in keys:
            self.delete(k)
        return LeaseRevokeResult(cmd.lease_id, self.current(), tuple(keys))

    # -- range txns: etcd's semantics, restated ------------------------------------------------------------------
    def in_range(self, key: bytes, end: bytes) -> list[bytes]:
        if not end:
            return [key] if key in self.data else []
        return sorted(k for k in self.data if k >= key and (end == b"\0" or k < end))

    def range_holds(self, c: Any) -> bool:
        keys = self.in_range(c.key, c.range_end)
        field = ["version", "create_revision", "mod_revision", "value", "lease"][c.target]
        if not keys:
            if field == "value":
                return False
            values: list[Any] = [0]
        else:
            values = [getattr(self.data[k], field) for k in keys]
        ops = {0: lambda a, b: a == b, 1: lambda a, b: a > b, 2: lambda a, b: a < b, 3: lambda a, b: a != b}
        return all(type(v) is type(c.operand) and ops[c.result](v, c.operand) for v in values)

    def range_branches(self, body: Any, out: list[bool]) -> None:
        compares, success, failure = body
        ok = all(self.range_holds(c) for c in compares)
        out.append(ok)
        for o in success if ok else failure:
            if o.kind == RangeOpKind.TXN:
                self.range_branches(o.body, out)

    def range_puts(self, body: Any, path: list[bool], at: list[int]) -> list[Any]:
        ok = path[at[0]]
        puts = []
        for o in body[1] if ok else body[2]:
            if o.kind == RangeOpKind.TXN:
                at[0] += 1
                puts += self.range_puts(o.body, path, at)
            elif o.kind == RangeOpKind.PUT:
                puts.append(o)
        return puts

    def range_run(self, body: Any, path: list[bool], at: list[int], proposer: int) -> tuple[Any, ...]:
        ok = path[at[0]]
        out: list[Any] = []
        for o in body[1] if ok else body[2]:
            if o.kind == RangeOpKind.RANGE:
                keys = self.in_range(o.key, o.range_end)
                kvs = [] if o.flags & RangeFlag.COUNT_ONLY else [self.data[k] for k in keys]
                if o.limit:
                    kvs = kvs[: o.limit]
                if o.flags & RangeFlag.KEYS_ONLY:
                    kvs = [kv._replace(value=b"") for kv in kvs]
                out.append(RangeRead(tuple(kvs), len(kvs) < len(keys) and not o.flags & RangeFlag.COUNT_ONLY,
                                     len(keys)))
            elif o.kind == RangeOpKind.PUT:
                old = self.data.get(o.key)
                value = old.value if old is not None and o.flags & RangeFlag.IGNORE_VALUE else o.value
                lease = (old.lease if old else 0) if o.flags & RangeFlag.IGNORE_LEASE else o.lease
                kv = self.write(o.key, value, proposer, lease=lease)
                out.append(RangePut(kv, old if o.flags & RangeFlag.PREV_KV else None))
            elif o.kind == RangeOpKind.DELETE_RANGE:
                keys = self.in_range(o.key, o.range_end)
                prevs = tuple(self.data[k] for k in keys) if o.flags & RangeFlag.PREV_KV else ()
                for k in keys:
                    self.delete(k)
                out.append(RangeDelete(len(keys), prevs))
            else:
                at[0] += 1
                taken = path[at[0]]
                out.append(RangeTxnResult(taken, self.range_run(o.body, path, at, proposer), self.current()))
        return tuple(out)

    def range_txn(self, cmd: RangeTxn, proposer: int) -> Result:
        body = (cmd.compares, cmd.success, cmd.failure)
        path: list[bool] = []
        self.range_branches(body, path)
        for o in self.range_puts(body, path, [0]):
            if o.lease and not o.flags & RangeFlag.IGNORE_LEASE and o.lease not in self.leases:
                return ErrorResult("lease-not-found", "")
            if o.flags & (RangeFlag.IGNORE_VALUE | RangeFlag.IGNORE_LEASE) and o.key not in self.data:
                return ErrorResult("invalid-argument", "")
        return RangeTxnResult(path[0], self.range_run(body, path, [0], proposer), self.current())

    def execute(self, cmd: Command, proposer: int) -> Result:
        if validate(cmd) is not None:
            return ErrorResult("invalid-argument", "")
        if isinstance(cmd, RangeTxn):
            return self.range_txn(cmd, proposer)
        if isinstance(cmd, LeaseGrant):
            return self.grant(cmd)
        if isinstance(cmd, LeaseRevoke):
            return self.revoke(cmd)
        if isinstance(cmd, SiblingPut):
            return self.sibling_put(cmd, proposer)
        if isinstance(cmd, Put | Delete):
            if isinstance(cmd, Put) and cmd.lease and cmd.lease not in self.leases:
                return ErrorResult("lease-not-found", "")
            for c in cmd.conditions:
                if not self.holds(c):
                    return ConditionFailedResult(c, self.data.get(c.key))
            if isinstance(cmd, Put):
                return PutResult(self.write(cmd.key, cmd.value, proposer, lease=cmd.lease))
            return self.delete(cmd.key)
        if isinstance(cmd, Incr):
            return self.incr(cmd.key, cmd.delta, proposer)
        ok = all(self.holds(c) for c in cmd.compares)
        ops = cmd.success if ok else cmd.failure
        if any(op.lease and op.lease not in self.leases for op in ops):
            return ErrorResult("lease-not-found", "")
        out: list[Any] = []
        for op in ops:
            if op.op == GET:
                out.append(self.data.get(op.key))
            elif op.op == PUT:
                out.append(PutResult(self.write(op.key, op.value, proposer, lease=op.lease)))
            elif op.op == DEL:
                out.append(self.delete(op.key))
            else:
                out.append(self.incr(op.key, op.delta, proposer))
        return TxnResult(ok, tuple(out), self.current())

    def apply(self, cmd: Command, index: int, proposer: int) -> Result:
        if cmd.client_id:
            last = self.sessions.get(cmd.client_id)
            if last is not None and cmd.seq < last[0]:
                return DuplicateResult()
            if last is not None and cmd.seq == last[0]:
                return last[1]
        self.wrote = False
        result = self.execute(cmd, proposer)
        if self.wrote:
            self.revision += 1
        if cmd.client_id:
            self.sessions[cmd.client_id] = (cmd.seq, result)
        return result


def erase_messages(r: Result) -> Any:
    """Error messages are prose: compare only their kinds."""
    if isinstance(r, ErrorResult):
        return ErrorResult(r.kind, "")
    if isinstance(r, TxnResult):
        items = tuple(erase_messages(x) if x is not None else None for x in r.results)  # type: ignore[arg-type]
        return TxnResult(r.succeeded, items, r.revision)
    return r
