"""The client gRPC service of a node: ``KVServicer`` validates each request, proposes it or reads through the node,
and turns raftkv errors into gRPC statuses (with the error's kind and the leader's address in the trailing metadata);
``GcMonitor`` counts the garbage collector's pauses for its Status."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import math
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import grpc

from . import __version__
from .errors import (
    META_CURRENT_BIN,
    ConditionFailed,
    InvalidArgument,
    NotLeader,
    RaftKVError,
    Removed,
    StorageError,
    Timeout,
    Unavailable,
)
from .kv import (
    MAX_LEASE_ID,
    MAX_LEASE_TTL_S,
    Alarm,
    Applied,
    CmpOp,
    Compact,
    CompactResult,
    Condition,
    Delete,
    DeleteResult,
    ErrorResult,
    HashMark,
    Incr,
    IncrResult,
    KeyValue,
    LeaseGrant,
    LeaseGrantResult,
    LeaseRevoke,
    LeaseRevokeResult,
    MemberInfo,
    Put,
    PutResult,
    SiblingPut,
    Target,
    Txn,
    TxnOp,
    TxnOpType,
    TxnResult,
)
from .node import Node
from .pbmap import PB_TXN_OP, batch_error, conditions_from_pb, kv_to_pb, result_error, vclock_from_pb
from .proto.v1 import kv_pb2, kv_pb2_grpc
from .raft import ConfChangeType, StateRole
from .settings import Settings
from .watch import KeyRange, Watcher, prefix_end

__all__ = [
    "GRPC_OPTIONS",
    "MAX_BATCH_OPS",
    "MAX_RANGE_LIMIT",
    "MAX_TXN_OPS",
    "META_CURRENT_BIN",
    "GcMonitor",
    "KVServicer",
]

log = logging.getLogger("raftkv.server")  # the servicer's lines keep the name they had when it lived in the server

T = TypeVar("T")
R = TypeVar("R")

GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.so_reuseport", 0),
    # Calls waiting to be picked up by a handler: beyond gRPC's defaults (about 1,000 soft, 3,000 hard) it cancels
    # new ones, which a burst of watches reopened after a node failure hits (bench/watch_bench.py measured it).
    ("grpc.server.max_pending_requests", 100_000),
    ("grpc.server.max_pending_requests_hard_limit", 100_000),
]
MAX_RANGE_LIMIT = 10_000
_ROLE_NAMES = {
    StateRole.LEADER: "leader",
    StateRole.FOLLOWER: "follower",
    StateRole.CANDIDATE: "candidate",
    StateRole.PRE_CANDIDATE: "pre-candidate",
}
_CONSISTENCY = kv_pb2.Consistency
MAX_TXN_OPS = 128
_EVENT_PB_CACHE = 4096
"""Watch events kept converted to protobuf (``KVServicer._event_pb``): a few applied batches' worth."""
MAX_BATCH_OPS = 1000
"""The most operations one Batch RPC may carry (INVALID_ARGUMENT above, and none is carried out)."""


_Submitted = tuple[int, "asyncio.Future[Applied]"]
"""A write handed to the node: its request id and the future of its ``Applied`` (``Node.submit``)."""


def _raise_for(result: Any) -> None:
    err = result_error(result)
    if err is not None:
        raise err


def _lease_id(lid: int, allow_zero: bool = False) -> int:
    """A lease id from a request: 1 .. 2^63-1 (0 too where it means "none" or "pick one")."""
    if lid < 0 or (lid == 0 and not allow_zero) or lid > MAX_LEASE_ID:
        raise InvalidArgument(f"a lease id is a positive 64-bit integer, got {lid}")
    return lid


def _timeout_error(timeout_s: float, write: bool) -> Timeout:
    return Timeout(
        f"the request did not complete within {timeout_s:.2f}s"
        + ("; the write may or may not have been applied (retry with the same session)" if write else ""),
        outcome_unknown=write,
    )


def _alarm(request_id: int, *, member: int, message: str) -> Alarm:
    return Alarm(request_id, 0, 0, member, message)


def _role_name(node: Node, role: StateRole) -> str:
    if node.corruption:
        return "corrupt"
    if node.removed:
        return "removed"
    return _ROLE_NAMES.get(role, str(role))


def _removed(node: Node) -> Removed:
    return node.removed_error()


def _expire(fut: asyncio.Future[Any], timeout_s: float, write: bool) -> None:
    """A request's deadline passed: fail its future with Timeout (outcome unknown for a write)."""
    if not fut.done():
        fut.set_exception(_timeout_error(timeout_s, write))


class GcMonitor:
    """Counts the garbage collector's passes and how long they stopped the process (every thread waits while one
    runs), for Status' stats: ``gc_collections`` and ``gc_pause_us`` (totals), ``gc_pause_max_us``."""

    def __init__(self) -> None:
        self.collections = 0
        self.pause_ns = 0
        self.pause_max_ns = 0
        self._t0 = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter_ns()
        elif self._t0:
            d = time.perf_counter_ns() - self._t0
            self.collections += 1
            self.pause_ns += d
            if d > self.pause_max_ns:
                self.pause_max_ns = d
            self._t0 = 0

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def uninstall(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)

    def stats(self) -> dict[str, int]:
        return {"gc_collections": self.collections, "gc_pause_us": self.pause_ns // 1000,
                "gc_pause_max_us": self.pause_max_ns // 1000}


class KVServicer(kv_pb2_grpc.KVServicer):
    """The client API. Every method validates, then proposes or reads through the node; every raftkv error
    becomes a gRPC status with the error's kind (and the leader's address) in the trailing metadata."""

    def __init__(self, node: Node, settings: Settings, gc_monitor: GcMonitor | None = None) -> None:
        self.node = node
        self.s = settings
        self.gc_monitor = gc_monitor
        self.default_timeout_s = settings.request_timeout_ms / 1000.0
        # Client API counters, reported in Status' stats beside the node's: unary Put/Get/Delete/Incr RPCs, Batch
        # RPCs, and the operations those batches carried.
        self.unary_rpcs = 0
        self.batch_rpcs = 0
        self.batched_ops = 0
        self._event_pbs: dict[tuple[int, int], kv_pb2.WatchEvent] = {}

    # -- helpers ----------------------------------------------------------------------------------------------
    def _timeout(self, ctx: grpc.aio.ServicerContext[Any, Any], requested_ms: int = 0) -> float:
        t = self.default_timeout_s if not requested_ms else requested_ms / 1000.0
        remaining = ctx.time_remaining()
        if remaining is not None:
            t = min(t, max(0.0, remaining - 0.005))
        return t

    @staticmethod
    async def _run(aw: Awaitable[T], timeout_s: float, write: bool) -> T:
        """Await ``aw`` within ``timeout_s``; running out of time raises Timeout (outcome unknown for a write)."""
        try:
            async with asyncio.timeout(timeout_s):
                return await aw
        except TimeoutError:
            raise _timeout_error(timeout_s, write) from None

    async def _call(
        self, ctx: grpc.aio.ServicerContext[Any, Any], fn: Callable[[], Awaitable[T]], timeout_s: float, write: bool
    ) -> T:
        return await self._unary(ctx, self._run(fn(), timeout_s, write))

    async def _unary(self, ctx: grpc.aio.ServicerContext[Any, Any], aw: Awaitable[T]) -> T:
        """Await ``aw``; a raftkv error becomes the RPC's status (with the error's trailing metadata)."""
        try:
            return await aw
        except RaftKVError as e:
            await self._abort(ctx, e)
        raise AssertionError("unreachable")  # ctx.abort raises

    async def _abort(self, ctx: grpc.aio.ServicerContext[Any, Any], err: RaftKVError) -> None:
        md: list[tuple[str, str | bytes]] = list(err.metadata())
        if isinstance(err, ConditionFailed) and isinstance(err.current, KeyValue):
            md.append((META_CURRENT_BIN, kv_to_pb(err.current).SerializeToString()))
        await ctx.abort(grpc.StatusCode[err.grpc_code], err.message, trailing_metadata=tuple(md))

    async def _refuse_if_removed(self, ctx: grpc.aio.ServicerContext[Any, Any]) -> None:
        try:
            self._serving()
        except RaftKVError as e:
            await self._abort(ctx, e)

    def _check_key(self, key: bytes) -> None:
        if not key:
            raise InvalidArgument("the key must not be empty")
        if len(key) > self.s.max_key_bytes:
            raise InvalidArgument(f"the key is {len(key)} bytes; the limit is {self.s.max_key_bytes} bytes")

    def _check_value(self, value: bytes) -> None:
        if len(value) > self.s.max_value_bytes:
            raise InvalidArgument(
                f"the value is {len(value)} bytes; the limit is {self.s.max_value_bytes} bytes (max_value_bytes)"
            )

    def header(self, index: int, revision: int = 0) -> kv_pb2.Header:
        n = self.node
        return kv_pb2.Header(
            node_id=n.id, term=n.term, index=index, leader_id=n.leader_id, leader_contact_ms=n.leader_contact_ms(),
            revision=revision,
        )

    def _serving(self) -> None:
        """Every request but Status (and the consistency check's) starts here: a node removed from the cluster, or
        that found damaged data, refuses it at once; one still comparing its data with the cluster's at start-up
        asks the client to go elsewhere for a moment."""
        node = self.node
        if node.corruption:
            raise node.corruption_error()
        if node.removed:
            raise _removed(node)
        if node.verifying:
            raise Unavailable(f"node {node.id} is comparing its data with the cluster's (its start-up check); "
                              "ask another node, or retry in a moment")

    async def _read_point(self, opts: kv_pb2.ReadOptions) -> None:
        """Wait until this node may serve a read at the requested consistency (and ``min_index``)."""
        node = self.node
        self._serving()
        c = opts.consistency
        if c == _CONSISTENCY.LINEARIZABLE:
            await node.read_index()
        elif c == _CONSISTENCY.LEASE:
            if node.role != StateRole.LEADER:
                raise node.not_leader()
            index = node.lease_read_index()
            if index is None:
                await node.read_index()  # the lease does not hold right now: fall back to a quorum round
            else:
                await node.wait_applied(index)
        elif c == _CONSISTENCY.BOUNDED:
            bound = opts.max_staleness_ms
            if not node.bounded_read_ok(bound):
                if opts.fail_if_stale:
                    raise Unavailable(
                        f"node {node.id} cannot serve a read at most {bound} ms stale: it has no confirmed read point "
                        f"that recent, or has not applied it (last heard from a leader {node.leader_contact_ms()} ms "
                        "ago)"
                    )
                await node.read_index()
        elif c != _CONSISTENCY.STALE:
            raise InvalidArgument(f"unknown consistency level {c}")
        if opts.min_index:
            if opts.min_index > node.applied and node.read_only_reason:
                # It applies nothing more: the index would never come. (A write's result is answered as it is
                # applied, before its transaction commits; on a disk that filled up meanwhile it stays unapplied
                # here until the node restarts, though it is durable in the log.)
                raise Unavailable(
                    f"node {node.id} has applied up to index {node.applied}, below the {opts.min_index} asked for, and "
                    f"applies nothing more ({node.read_only_reason}); ask another node, or read without min_index"
                )
            await node.wait_applied(opts.min_index)

    # -- the single-key operations: each exists once, for its unary RPC and for Batch ------------------------------
    # A write is two halves: ``_start_<op>`` validates and submits the command (raising RaftKVError for bad input),
    # returning the node's future for its result; ``_<op>_response`` turns the result into the response (raising
    # the error a failed result stands for). A unary RPC awaits one future in between; Batch submits every write
    # first, then waits for all of them together under one deadline: no task or coroutine per operation.
    def _start_put(self, req: kv_pb2.PutRequest) -> _Submitted:
        self._serving()
        self._check_key(req.key)
        self._check_value(req.value)
        conds = conditions_from_pb(req.conditions, req.key) if req.conditions else ()
        s = req.session
        key, value, cid, seq, lease = req.key, req.value, s.client_id, s.seq, _lease_id(req.lease, allow_zero=True)
        if req.on_conflict == kv_pb2.SIBLINGS:
            if not req.HasField("context"):
                raise InvalidArgument("on_conflict=SIBLINGS needs the context (the clock a get returned)")
            if conds:
                raise InvalidArgument("a put that keeps siblings takes no conditions besides its context")
            if lease:
                raise InvalidArgument("a put that keeps siblings keeps the key's lease: it takes none")
            ctx = vclock_from_pb(req.context)
            return self.node.submit(lambda rid: SiblingPut(rid, cid, seq, key, value, ctx))
        if req.on_conflict != kv_pb2.REJECT:
            raise InvalidArgument(f"unknown on_conflict {req.on_conflict}")
        if req.HasField("context"):
            conds = (*conds, Condition(key, Target.VCLOCK, CmpOp.EQ, vclock_from_pb(req.context)))
        return self.node.submit(lambda rid: Put(rid, cid, seq, key, value, conds, lease))

    def _put_response(self, a: Applied) -> kv_pb2.PutResponse:
        res = a.result
        _raise_for(res)
        kv = res.kv  # type: ignore[union-attr]  # a put's result is a PutResult once _raise_for let it through
        return kv_pb2.PutResponse(header=self.header(a.index, kv.mod_revision), kv=kv_to_pb(kv))

    def _start_delete(self, req: kv_pb2.DeleteRequest) -> _Submitted:
        self._serving()
        self._check_key(req.key)
        conds = conditions_from_pb(req.conditions, req.key) if req.conditions else ()
        s = req.session
        key, cid, seq = req.key, s.client_id, s.seq
        return self.node.submit(lambda rid: Delete(rid, cid, seq, key, conds))

    def _delete_response(self, a: Applied) -> kv_pb2.DeleteResponse:
        res = a.result
        _raise_for(res)
        assert isinstance(res, DeleteResult)
        return kv_pb2.DeleteResponse(header=self.header(a.index, res.revision), deleted=res.deleted, index=a.index)

    def _start_incr(self, req: kv_pb2.IncrRequest) -> _Submitted:
        self._serving()
        self._check_key(req.key)
        s = req.session
        key, delta, cid, seq = req.key, req.delta, s.client_id, s.seq
        return self.node.submit(lambda rid: Incr(rid, cid, seq, key, delta))

    def _start_compact(self, req: kv_pb2.CompactRequest) -> _Submitted:
        self._serving()
        if req.revision <= 0:
            raise InvalidArgument("compact needs a revision of 1 or more (the history up to it is dropped)")
        s = req.session
        rev, cid, seq = req.revision, s.client_id, s.seq
        return self.node.submit(lambda rid: Compact(rid, cid, seq, rev))

    def _compact_response(self, a: Applied) -> kv_pb2.CompactResponse:
        res = a.result
        _raise_for(res)
        assert isinstance(res, CompactResult)
        return kv_pb2.CompactResponse(header=self.header(a.index, self.node.fsm.revision()), compacted=res.compacted)

    def _incr_response(self, a: Applied) -> kv_pb2.IncrResponse:
        res = a.result
        _raise_for(res)
        assert isinstance(res, IncrResult)
        kv = res.kv
        return kv_pb2.IncrResponse(header=self.header(a.index, kv.mod_revision), value=res.value, kv=kv_to_pb(kv))

    async def _write(self, submitted: _Submitted, timeout_s: float) -> Applied:
        """Await one submitted write's result within ``timeout_s`` (Timeout, outcome unknown, when it runs out)."""
        rid, fut = submitted
        handle = asyncio.get_running_loop().call_later(timeout_s, _expire, fut, timeout_s, True)
        try:
            return await fut
        finally:
            handle.cancel()
            self.node.forget(rid)

    async def _writes(self, submitted: list[_Submitted], timeout_s: float) -> None:
        """Wait until every submitted write has its result, or ``timeout_s`` passed (those left get Timeout)."""
        futs = [f for _, f in submitted]
        _, pending = await asyncio.wait(futs, timeout=timeout_s)
        for f in pending:
            _expire(f, timeout_s, True)
        forget = self.node.forget
        for rid, _ in submitted:
            forget(rid)

    async def _gets(
        self, opts: kv_pb2.ReadOptions, keys: list[bytes], timeout_s: float, rev: int = 0
    ) -> list[kv_pb2.GetResponse]:
        """Read ``keys`` (already checked) at one read point: one read-index round and one read transaction for
        all of them (at revision ``rev`` of the history if not 0)."""
        if opts.consistency != _CONSISTENCY.STALE or opts.min_index:
            await self._run(self._read_point(opts), timeout_s, write=False)
        else:
            self._serving()
        index, revision, kvs = self.node.fsm_get_many(keys, rev)
        header = self.header(index, revision)
        return [
            kv_pb2.GetResponse(header=header, found=False)
            if kv is None
            else kv_pb2.GetResponse(header=header, found=True, kv=kv_to_pb(kv))
            for kv in kvs
        ]

    # -- the API ----------------------------------------------------------------------------------------------
    async def _unary_write(
        self, ctx: grpc.aio.ServicerContext[Any, Any], start: Callable[[R], _Submitted], req: R,
        respond: Callable[[Any], T],
    ) -> T:
        self.unary_rpcs += 1
        try:
            return respond(await self._write(start(req), self._timeout(ctx)))
        except RaftKVError as e:
            await self._abort(ctx, e)
        raise AssertionError("unreachable")  # ctx.abort raises

    async def Put(self, req: kv_pb2.PutRequest, ctx: grpc.aio.ServicerContext[Any, Any]) -> kv_pb2.PutResponse:
        return await self._unary_write(ctx, self._start_put, req, self._put_response)

    async def Delete(
        self, req: kv_pb2.DeleteRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> kv_pb2.DeleteResponse:
        return await self._unary_write(ctx, self._start_delete, req, self._delete_response)

    async def Incr(self, req: kv_pb2.IncrRequest, ctx: grpc.aio.ServicerContext[Any, Any]) -> kv_pb2.IncrResponse:
        return await self._unary_write(ctx, self._start_incr, req, self._incr_response)

    async def Compact(
        self, req: kv_pb2.CompactRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> kv_pb2.CompactResponse:
        return await self._unary_write(ctx, self._start_compact, req, self._compact_response)

    async def Get(self, req: kv_pb2.GetRequest, ctx: grpc.aio.ServicerContext[Any, Any]) -> kv_pb2.GetResponse:
        self.unary_rpcs += 1
        try:
            self._check_key(req.key)
            return (await self._gets(req.read, [req.key], self._timeout(ctx, req.read.timeout_ms), req.revision))[0]
        except RaftKVError as e:
            await self._abort(ctx, e)
        raise AssertionError("unreachable")

    async def Batch(self, req: kv_pb2.BatchRequest, ctx: grpc.aio.ServicerContext[Any, Any]) -> kv_pb2.BatchResponse:
        """Independent operations, carried out concurrently, each answered as its unary RPC would be. Every write
        is validated and submitted before any is awaited, so the batch's writes reach the node in the same turn and
        share a log entry; gets with the same read options share one read point (one read-index round) and one read
        transaction. One deadline covers the batch; there is no task per operation."""
        ops = req.ops
        n = len(ops)
        await self._refuse_if_removed(ctx)
        if n > MAX_BATCH_OPS:
            await self._abort(ctx, InvalidArgument(f"a batch has at most {MAX_BATCH_OPS} operations, not {n}"))
        self.batch_rpcs += 1
        self.batched_ops += n
        timeout_s = self._timeout(ctx)
        results: list[kv_pb2.BatchResult | None] = [None] * n
        writes: list[tuple[int, str, Callable[[Any], Any], _Submitted]] = []
        reads: dict[tuple[int, int, bool, int, int, int], tuple[kv_pb2.ReadOptions, int, list[int], list[bytes]]] = {}
        for i, op in enumerate(ops):
            try:
                which = op.WhichOneof("op")
                if which == "put":
                    writes.append((i, "put", self._put_response, self._start_put(op.put)))
                elif which == "get":
                    g = op.get
                    self._check_key(g.key)
                    r = g.read
                    group = (r.consistency, r.max_staleness_ms, r.fail_if_stale, r.min_index, r.timeout_ms, g.revision)
                    entry = reads.get(group)
                    if entry is None:
                        entry = reads[group] = (r, g.revision, [], [])
                    entry[2].append(i)
                    entry[3].append(g.key)
                elif which == "delete":
                    writes.append((i, "delete", self._delete_response, self._start_delete(op.delete)))
                elif which == "incr":
                    writes.append((i, "incr", self._incr_response, self._start_incr(op.incr)))
                else:
                    raise InvalidArgument("a batch operation must be a put, get, delete or incr")
            except RaftKVError as e:
                results[i] = kv_pb2.BatchResult(error=batch_error(e))

        async def read_group(opts: kv_pb2.ReadOptions, rev: int, idx: list[int], keys: list[bytes]) -> None:
            try:
                resps = await self._gets(opts, keys, self._timeout(ctx, opts.timeout_ms), rev)
            except RaftKVError as e:
                err = kv_pb2.BatchResult(error=batch_error(e))
                for i in idx:
                    results[i] = err
                return
            for i, resp in zip(idx, resps, strict=True):
                results[i] = kv_pb2.BatchResult(get=resp)

        waits: list[Awaitable[None]] = [read_group(*g) for g in reads.values()]
        if writes:
            waits.append(self._writes([w[3] for w in writes], timeout_s))
        if len(waits) == 1:
            await waits[0]
        elif waits:
            await asyncio.gather(*waits)
        for i, field, respond, (_, fut) in writes:
            try:
                results[i] = kv_pb2.BatchResult(**{field: respond(fut.result())})
            except RaftKVError as e:
                results[i] = kv_pb2.BatchResult(error=batch_error(e))
            except Exception as e:  # a bug: fail this operation alone, as its unary RPC would fail (UNKNOWN)
                log.exception("batch operation failed")
                msg = f"unexpected {type(e).__name__}: {e}"
                results[i] = kv_pb2.BatchResult(error=kv_pb2.BatchError(code="UNKNOWN", message=msg))
        # Every operation has its result by now: a validation error, its write's outcome, or its read group's.
        return kv_pb2.BatchResponse(header=self.header(self.node.applied), results=cast("list[Any]", results))

    async def Range(self, req: kv_pb2.RangeRequest, ctx: grpc.aio.ServicerContext[Any, Any]) -> kv_pb2.RangeResponse:
        limit = req.limit or 1000
        if limit > MAX_RANGE_LIMIT:
            await self._abort(ctx, InvalidArgument(f"limit {limit} is above the maximum of {MAX_RANGE_LIMIT}"))

        async def go() -> kv_pb2.RangeResponse:
            await self._read_point(req.read)
            index, revision, kvs, more = self.node.fsm_range(
                req.prefix, req.start_after, limit, req.keys_only, req.revision
            )
            return kv_pb2.RangeResponse(
                header=self.header(index, revision), kvs=[kv_to_pb(kv, req.keys_only) for kv in kvs], more=more
            )

        return await self._call(ctx, go, self._timeout(ctx, req.read.timeout_ms), write=False)

    def _txn_ops(self, ops: Any) -> tuple[TxnOp, ...]:
        out = []
        for op in ops:
            t = PB_TXN_OP.get(op.type)
            if t is None:
                raise InvalidArgument(f"unknown txn operation type {op.type}")
            self._check_key(op.key)
            if t == TxnOpType.PUT:
                self._check_value(op.value)
            value = op.value if t == TxnOpType.PUT else b""
            if op.lease and t != TxnOpType.PUT:
                raise InvalidArgument("only a txn put takes a lease")
            out.append(TxnOp(t, op.key, value, op.delta if t == TxnOpType.INCR else 0, _lease_id(op.lease, True)))
        return tuple(out)

    async def Txn(self, req: kv_pb2.TxnRequest, ctx: grpc.aio.ServicerContext[Any, Any]) -> kv_pb2.TxnResponse:
        try:
            self._serving()
            compares = conditions_from_pb(req.compares)
            success = self._txn_ops(req.success)
            failure = self._txn_ops(req.failure)
            n = len(compares) + len(success) + len(failure)
            if n > MAX_TXN_OPS:
                raise InvalidArgument(f"a transaction has at most {MAX_TXN_OPS} compares and operations, not {n}")
            size = sum(len(o.value) for o in success + failure)
            if size > self.s.max_batch_bytes:
                limit = self.s.max_batch_bytes
                raise InvalidArgument(f"the transaction's values total {size} bytes; the limit is {limit}")
        except RaftKVError as e:
            await self._abort(ctx, e)
        s = req.session
        try:
            a = await self._write(
                self.node.submit(lambda rid: Txn(rid, s.client_id, s.seq, compares, success, failure)),
                self._timeout(ctx),
            )
            _raise_for(a.result)
        except RaftKVError as e:
            await self._abort(ctx, e)
        res = a.result
        assert isinstance(res, TxnResult)
        results = []
        for r in res.results:
            if r is None:  # GET of a missing key
                results.append(kv_pb2.TxnOpResult(found=False))
            elif isinstance(r, KeyValue):
                results.append(kv_pb2.TxnOpResult(found=True, kv=kv_to_pb(r)))
            elif isinstance(r, PutResult):
                results.append(kv_pb2.TxnOpResult(found=True, kv=kv_to_pb(r.kv)))
            elif isinstance(r, DeleteResult):
                results.append(kv_pb2.TxnOpResult(found=r.deleted))
            elif isinstance(r, IncrResult):
                results.append(kv_pb2.TxnOpResult(found=True, kv=kv_to_pb(r.kv), value=r.value))
            elif isinstance(r, ErrorResult):
                results.append(kv_pb2.TxnOpResult(error=r.message))
            else:  # pragma: no cover - a result type this servicer does not know
                results.append(kv_pb2.TxnOpResult(error=f"unexpected result {type(r).__name__}"))
        return kv_pb2.TxnResponse(header=self.header(a.index, res.revision), succeeded=res.succeeded, results=results)

    # -- leases ------------------------------------------------------------------------------------------------
    def _start_lease_grant(self, req: kv_pb2.LeaseGrantRequest) -> _Submitted:
        self._serving()
        if req.ttl <= 0:
            raise InvalidArgument(f"a lease's TTL is 1 second or more, got {req.ttl}")
        ttl = min(max(req.ttl, self.s.min_lease_ttl_s), MAX_LEASE_TTL_S)
        lid = _lease_id(req.id, allow_zero=True)
        s = req.session
        cid, seq = s.client_id, s.seq
        return self.node.submit(lambda rid: LeaseGrant(rid, cid, seq, lid, ttl))

    def _lease_grant_response(self, a: Applied) -> kv_pb2.LeaseGrantResponse:
        res = a.result
        _raise_for(res)
        assert isinstance(res, LeaseGrantResult)
        return kv_pb2.LeaseGrantResponse(header=self.header(a.index, self.node.fsm.revision()), id=res.lease_id,
                                         ttl=res.ttl_s)

    def _start_lease_revoke(self, req: kv_pb2.LeaseRevokeRequest) -> _Submitted:
        self._serving()
        lid = _lease_id(req.id)
        s = req.session
        cid, seq = s.client_id, s.seq
        return self.node.submit(lambda rid: LeaseRevoke(rid, cid, seq, lid))

    def _lease_revoke_response(self, a: Applied) -> kv_pb2.LeaseRevokeResponse:
        res = a.result
        _raise_for(res)
        assert isinstance(res, LeaseRevokeResult)
        return kv_pb2.LeaseRevokeResponse(header=self.header(a.index, res.revision), deleted=res.deleted)

    async def LeaseGrant(
        self, req: kv_pb2.LeaseGrantRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> kv_pb2.LeaseGrantResponse:
        return await self._unary_write(ctx, self._start_lease_grant, req, self._lease_grant_response)

    async def LeaseRevoke(
        self, req: kv_pb2.LeaseRevokeRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> kv_pb2.LeaseRevokeResponse:
        return await self._unary_write(ctx, self._start_lease_revoke, req, self._lease_revoke_response)

    async def LeaseKeepAlive(
        self, requests: AsyncIterator[kv_pb2.LeaseKeepAliveRequest], ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[kv_pb2.LeaseKeepAliveResponse]:
        """One response per request, in order; the leader's errors (not the leader, cannot vouch for deadlines right
        now) end the stream with their status, and the client opens another (to the leader)."""
        node = self.node
        async for req in requests:
            try:
                self._serving()
                ids = [_lease_id(i) for i in req.ids]
                ttls = await self._run(node.keep_alive(ids, req.min_index), self.default_timeout_s, write=False)
            except RaftKVError as e:
                await self._abort(ctx, e)
                return
            yield kv_pb2.LeaseKeepAliveResponse(header=self.header(node.applied), ids=ids, ttls=ttls)

    async def LeaseTimeToLive(
        self, req: kv_pb2.LeaseTimeToLiveRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> kv_pb2.LeaseTimeToLiveResponse:
        """Served by the leader (it times the leases), from its state machine as of a linearizable read point."""
        node = self.node

        async def go() -> kv_pb2.LeaseTimeToLiveResponse:
            self._serving()
            lid = _lease_id(req.id)
            if node.role != StateRole.LEADER:
                raise node.not_leader()
            await node.read_index()
            remaining = node.lease_remaining(lid)
            index = node.applied
            held = node.fsm.lease(lid, keys=req.keys)
            if held is None:
                return kv_pb2.LeaseTimeToLiveResponse(header=self.header(index), id=lid, ttl=-1)
            ttl, _, keys = held
            left = ttl if remaining is None else math.ceil(remaining)  # (granted, its result not yet taken in)
            return kv_pb2.LeaseTimeToLiveResponse(header=self.header(index, node.fsm.revision()), id=lid, ttl=left,
                                                  granted_ttl=ttl, keys=keys)

        return await self._call(ctx, go, self._timeout(ctx), write=False)

    async def LeaseList(
        self, req: kv_pb2.LeaseListRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> kv_pb2.LeaseListResponse:
        """Every lease, as of a linearizable read point (any node)."""
        node = self.node

        async def go() -> kv_pb2.LeaseListResponse:
            self._serving()
            await node.read_index()
            index = node.applied
            return kv_pb2.LeaseListResponse(header=self.header(index), ids=[lid for lid, _, _ in node.fsm.leases()])

        return await self._call(ctx, go, self._timeout(ctx), write=False)

    # -- membership and leadership ---------------------------------------------------------------------------
    def _members_pb(self) -> list[kv_pb2.Member]:
        return [
            kv_pb2.Member(id=m.id, peer_addr=m.peer_addr, client_addr=m.client_addr, learner=m.learner)
            for m in self.node.members()
        ]

    async def MemberList(
        self, req: kv_pb2.MemberListRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> kv_pb2.MemberListResponse:
        """The membership as of a linearizable read point, so a change acknowledged before is in it, whichever node
        answers. Without a leader (an election, no quorum: no read index within 2 s) the node answers with the
        membership it has applied."""
        await self._refuse_if_removed(ctx)
        try:
            await self._run(self.node.read_index(), min(2.0, self._timeout(ctx)), write=False)
        except (NotLeader, Unavailable, Timeout) as e:
            log.info("member list from node %d's own state: no read index (%s)", self.node.id, e.message)
        return kv_pb2.MemberListResponse(
            header=self.header(self.node.applied), members=self._members_pb(), cluster_id=self.s.cluster_id
        )

    async def _change(
        self, ctx: grpc.aio.ServicerContext[Any, Any], t: ConfChangeType, member: MemberInfo, force: bool = False
    ) -> kv_pb2.MemberChangeResponse:
        res = await self._call(
            ctx, lambda: self.node.change_membership(t, member, force=force), self._timeout(ctx), write=True
        )
        if not res.changed:
            await self._abort(ctx, InvalidArgument(res.message or "the membership did not change"))
        return kv_pb2.MemberChangeResponse(
            header=self.header(self.node.applied), members=self._members_pb(), cluster_id=self.s.cluster_id
        )

    async def MemberAdd(
        self, req: kv_pb2.MemberAddRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> kv_pb2.MemberChangeResponse:
        await self._refuse_if_removed(ctx)
        try:
            if req.id <= 0:
                raise InvalidArgument("the new member needs a positive id")
            if any(m.id == req.id for m in self.node.members()):
                raise InvalidArgument(f"node {req.id} is already a member (promote or remove it instead)")
            for what, addr in (("peer", req.peer_addr), ("client", req.client_addr)):
                host, sep, port = addr.rpartition(":")
                if not sep or not host or not port.isdigit():
                    raise InvalidArgument(f"the {what} address must look like HOST:PORT, got {addr!r}")
        except RaftKVError as e:
            await self._abort(ctx, e)
        t = ConfChangeType.ADD_LEARNER if req.learner else ConfChangeType.ADD_VOTER
        return await self._change(ctx, t, MemberInfo(req.id, req.peer_addr, req.client_addr, req.learner))

    async def MemberPromote(
        self, req: kv_pb2.MemberPromoteRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> kv_pb2.MemberChangeResponse:
        await self._refuse_if_removed(ctx)
        m = next((m for m in self.node.members() if m.id == req.id), None)
        if m is None or not m.learner:
            what = "not a member" if m is None else "already a voter"
            await self._abort(ctx, InvalidArgument(f"node {req.id} is {what}"))
        return await self._change(ctx, ConfChangeType.ADD_VOTER, MemberInfo(req.id, "", ""))

    async def MemberRemove(
        self, req: kv_pb2.MemberRemoveRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> kv_pb2.MemberChangeResponse:
        await self._refuse_if_removed(ctx)
        members = self.node.members()
        m = next((m for m in members if m.id == req.id), None)
        if m is None:
            await self._abort(ctx, InvalidArgument(f"node {req.id} is not a member"))
        voters = [x for x in members if not x.learner]
        if m is not None and not m.learner and len(voters) <= 2 and not req.force:
            await self._abort(
                ctx,
                InvalidArgument(
                    f"removing a voter from a {len(voters)}-voter cluster leaves it unable to elect a leader if the "
                    "departing node fails during the change; add a node first, or pass --force"
                ),
            )
        return await self._change(ctx, ConfChangeType.REMOVE_NODE, MemberInfo(req.id, "", ""), force=req.force)

    async def TransferLeader(
        self, req: kv_pb2.TransferLeaderRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> kv_pb2.TransferLeaderResponse:
        await self._refuse_if_removed(ctx)
        leader = await self._call(
            ctx, lambda: self.node.transfer_leadership(req.to), self._timeout(ctx), write=False
        )
        return kv_pb2.TransferLeaderResponse(header=self.header(self.node.applied), leader_id=leader)

    def _watch_range(self, req: kv_pb2.WatchRequest) -> KeyRange:
        if req.prefix:
            if req.range_end:
                raise InvalidArgument("a watch takes a prefix or a range_end, not both")
            if len(req.key) > self.s.max_key_bytes:
                raise InvalidArgument(f"the prefix is {len(req.key)} bytes; the limit is {self.s.max_key_bytes} bytes")
            return KeyRange(req.key, prefix_end(req.key))
        if not req.range_end:
            self._check_key(req.key)
        elif req.range_end != b"\0" and req.range_end <= req.key:
            raise InvalidArgument("a watch's range_end must be above its key (or \\0: every key from key on)")
        return KeyRange(req.key, req.range_end)

    def _event_pb(self, ev: Any) -> kv_pb2.WatchEvent:
        """An event as the wire has it (without its previous value), built once for every watcher it goes to: the
        hub hands the same events to each, so a batch fanned out to 1,000 watchers is converted once, not 1,000
        times (the cache holds the events of the last few batches)."""
        key = (ev.revision, ev.sub)
        cache = self._event_pbs
        pb = cache.get(key)
        if pb is None:
            if len(cache) >= _EVENT_PB_CACHE:
                cache.clear()
            if ev.kv is not None:
                pb = kv_pb2.WatchEvent(type=kv_pb2.WatchEvent.PUT, kv=kv_to_pb(ev.kv))
            else:
                pb = kv_pb2.WatchEvent(type=kv_pb2.WatchEvent.DELETE,
                                       kv=kv_pb2.KeyValue(key=ev.key, mod_revision=ev.revision))
            cache[key] = pb
        return pb

    def _watch_response(self, w: Watcher, events: list[Any], upto: int) -> kv_pb2.WatchResponse:
        pb = self._event_pb
        resp = kv_pb2.WatchResponse(header=self.header(self.node.applied, upto), events=[pb(ev) for ev in events])
        if w.prev_kv:
            for ev, out in zip(events, resp.events, strict=True):
                if ev.prev is not None:
                    out.prev_kv.CopyFrom(kv_to_pb(ev.prev))
        return resp

    async def Watch(
        self, req: kv_pb2.WatchRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[kv_pb2.WatchResponse]:
        """One watch per stream: a first response (``created``), then the events in revision order (replayed from
        the history, then live), progress responses while idle if asked, and a last one (``canceled``) if the
        node ends it (too slow a reader, a compaction, the node stopping)."""
        feed = self.node.watches
        try:
            self._serving()
            rng = self._watch_range(req)
            w, signal = feed.watch(rng, req.start_revision, no_put=req.no_put, no_delete=req.no_delete,
                                   prev_kv=req.prev_kv)
        except RaftKVError as e:
            await self._abort(ctx, e)
            return
        hub = feed.hub
        progress_s = req.progress_notify_ms / 1000.0 if req.progress_notify_ms else None
        try:
            yield kv_pb2.WatchResponse(header=self.header(self.node.applied, hub.revision), created=True)
            while True:
                if not w.synced and not w.cancelled:
                    feed.catch_up(w)
                events = hub.take(w)
                if events:
                    upto = hub.revision if w.synced else w.next_revision - 1
                    yield self._watch_response(w, events, upto)
                    continue
                if w.cancelled:
                    yield kv_pb2.WatchResponse(header=self.header(self.node.applied, hub.revision), canceled=True,
                                               cancel_reason=w.reason, compact_revision=w.compact_revision)
                    return
                if not w.synced:
                    await asyncio.sleep(0)  # another chunk of history next, after the loop had a turn
                    continue
                signal.clear()
                try:
                    await asyncio.wait_for(signal.wait(), progress_s)
                except TimeoutError:
                    yield kv_pb2.WatchResponse(header=self.header(self.node.applied, hub.revision))
        finally:
            feed.done(w)

    async def Snapshot(
        self, req: kv_pb2.SnapshotRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[kv_pb2.SnapshotData]:
        """A backup: dump the state machine into a snapshot file (a consistent read; writes go on) and stream it."""
        loop = asyncio.get_running_loop()
        node = self.node
        await self._refuse_if_removed(ctx)
        # A backup is dumped into a directory of its own and removed once streamed: nothing is left in the node's
        # data directory (its snapshots/ keeps only what followers may need).
        tmp = Path(tempfile.mkdtemp(prefix="backup-", dir=node.settings.data_dir))
        try:
            try:
                info = await node.backup(tmp)
            except Exception as e:
                await self._abort(ctx, StorageError(f"node {node.id} could not take a snapshot: {e}"))
                return
            first = True
            with open(info.path, "rb") as f:
                while True:
                    chunk = await loop.run_in_executor(None, f.read, 1 << 20)
                    if not chunk and not first:
                        break
                    yield kv_pb2.SnapshotData(
                        chunk=chunk, total_bytes=info.size_bytes if first else 0,
                        index=info.header.index if first else 0,
                    )
                    first = False
                    if not chunk:
                        break
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- the cross-replica consistency check ----------------------------------------------------------------------
    async def StateHash(
        self, req: kv_pb2.StateHashRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> kv_pb2.StateHashResponse:
        async def go() -> kv_pb2.StateHashResponse:
            if self.node.corruption:
                raise self.node.corruption_error()
            digest = await self.node.state_hash(req.index)
            return kv_pb2.StateHashResponse(header=self.header(self.node.applied), index=req.index, hash=digest)

        return await self._call(ctx, go, self._timeout(ctx), write=False)

    async def CheckCluster(
        self, req: kv_pb2.CheckClusterRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> kv_pb2.CheckClusterResponse:
        if self.node.corruption or self.node.removed:  # (a node verifying itself at start-up may still run it)
            await self._refuse_if_removed(ctx)
        return await self._unary(ctx, self.check_cluster(self._timeout(ctx)))

    async def check_cluster(self, timeout_s: float) -> kv_pb2.CheckClusterResponse:
        """Run one cross-replica check from this node, the leader: propose a hash mark (a log entry of its own);
        every replica hashes its state right after applying it; collect the hashes; a member whose hash differs
        from the one a majority of the members hold gets its corruption alarm, through the log. NotLeader on a
        follower (the client follows it)."""
        node = self.node
        if node.role != StateRole.LEADER:
            raise node.not_leader()
        a = await self._write(node.submit(lambda rid: HashMark(rid, 0, 0)), timeout_s)
        index = a.index
        mine = await self._run(node.state_hash(index), timeout_s, write=False)
        members = node.members()
        hashes: dict[int, tuple[str, str]] = {node.id: (mine, "" if mine else "not taken (busy)")}

        async def ask(m: MemberInfo) -> None:
            try:
                async with grpc.aio.insecure_channel(m.client_addr, options=GRPC_OPTIONS) as ch:
                    stub = kv_pb2_grpc.KVStub(ch)  # type: ignore[no-untyped-call]
                    r = await stub.StateHash(kv_pb2.StateHashRequest(index=index), timeout=timeout_s)
                hashes[m.id] = (r.hash, "" if r.hash else "not taken there (a snapshot covered the mark, or busy)")
            except grpc.aio.AioRpcError as e:
                hashes[m.id] = ("", f"{e.code().name}: {e.details()}")

        await asyncio.gather(*(ask(m) for m in members if m.id != node.id))
        tally: dict[str, int] = {}
        for h, _ in hashes.values():
            if h:
                tally[h] = tally.get(h, 0) + 1
        majority = next((h for h, n in tally.items() if n > len(members) // 2), "")
        out = kv_pb2.CheckClusterResponse(index=index, majority_hash=majority)
        bad: list[int] = []
        for m in sorted(members, key=lambda m: m.id):
            h, err = hashes.get(m.id, ("", "no answer"))
            mismatch = bool(majority and h and h != majority)
            if mismatch:
                bad.append(m.id)
            out.members.append(kv_pb2.MemberHash(id=m.id, hash=h, error=err, mismatch=mismatch))
        for mid in bad:
            what = (f"its state right after log index {index} hashes to {hashes[mid][0][:16]}..., the majority's to "
                    f"{majority[:16]}... (a cross-replica check found it different)")
            log.error("node %d: the consistency check at index %d: node %d differs from the majority; raising its "
                      "corruption alarm", node.id, index, mid)
            await self._write(node.submit(functools.partial(_alarm, member=mid, message=what)), timeout_s)
        out.ok = bool(majority) and not bad
        out.header.CopyFrom(self.header(node.applied))
        return out

    async def Status(
        self, req: kv_pb2.StatusRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> kv_pb2.StatusResponse:
        node = self.node
        st = node.raw.status()
        learners = set(st.conf_state.learners)
        try:
            members = self._members_pb()
        except RaftKVError:  # the node's data is damaged: Status still answers, from its settings
            members = []
        members = members or [
            kv_pb2.Member(id=m.id, peer_addr=m.peer_addr, client_addr=m.client_addr, learner=m.id in learners)
            for m in self.s.members
        ]
        progress = [
            kv_pb2.PeerProgress(id=pid, match=p.match, next=p.next, state=str(p.state).lower(), active=p.recent_active)
            for pid, p in st.progress.items()
        ]
        return kv_pb2.StatusResponse(
            header=self.header(node.applied),
            role=_role_name(node, st.role),
            commit=st.commit,
            applied=node.applied,
            last_index=st.last_index,
            cluster_id=self.s.cluster_id,
            members=members,
            progress=progress,
            vote=st.vote,
            version=__version__,
            read_only=bool(node.read_only_reason),
            read_only_reason=node.read_only_reason,
            removed=node.removed,
            corruption=node.corruption,
            revision=self._revision(),
            stats=self.stats(),
        )

    def _revision(self) -> int:
        if self.node.corruption:
            return 0
        try:
            return self.node.fsm.revision()
        except RaftKVError as e:  # damaged: Status still answers, with the alarm
            self.node.found_corruption(e)
            return 0

    def stats(self) -> dict[str, int]:
        """The node's counters plus this service's (unary_rpcs, batch_rpcs, batched_ops)."""
        out = self.node.stats_snapshot()
        out.update(unary_rpcs=self.unary_rpcs, batch_rpcs=self.batch_rpcs, batched_ops=self.batched_ops)
        if self.gc_monitor is not None:
            out.update(self.gc_monitor.stats())
        return out
