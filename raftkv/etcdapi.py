"""etcd's v3 API on a raftkv node: the ``etcdserverpb`` services (KV, Watch, Lease, Cluster, Maintenance, Auth) on the
client port, beside ``raftkv.v1.KV``, so etcdctl and etcd's client libraries work against raftkv unchanged.

Each request is translated to what raftkv already does, with etcd's semantics where they differ from raftkv's own
API: Put, DeleteRange and Txn become one ``RangeTxn`` (etcd's transaction semantics, in the state machine), Range a
read at a read point (``serializable``: this node's applied state, raftkv's stale read; else linearizable), leases
and watches the node's own. Errors carry etcd's gRPC codes and message strings ("etcdserver: mvcc: required
revision has been compacted" ...), because clients match on them. What raftkv does not do answers with the error
etcd gives for it, or UNIMPLEMENTED (README, "The etcd API", lists every gap).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from .errors import (
    Compacted,
    ConditionFailed,
    InvalidArgument,
    LeaseNotFound,
    NotLeader,
    RaftKVError,
    ReadOnly,
    Timeout,
    Unavailable,
)
from .kv import (
    MAX_LEASE_ID,
    MAX_LEASE_TTL_S,
    Compact,
    CompactResult,
    ErrorResult,
    KeyValue,
    LeaseGrant,
    LeaseGrantResult,
    LeaseRevoke,
    LeaseRevokeResult,
    MemberInfo,
    RangeCompare,
    RangeDelete,
    RangeFlag,
    RangeOp,
    RangeOpKind,
    RangePut,
    RangeRead,
    RangeTxn,
    RangeTxnResult,
)
from .proto.etcd.api.etcdserverpb import rpc_pb2 as pb
from .proto.etcd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from .proto.etcd.api.mvccpb import kv_pb2 as mvcc
from .raft import ConfChangeType, StateRole
from .servicer import KVServicer
from .storage.snapshots import etcd_envelope
from .watch import KeyRange, Watcher

__all__ = ["ETCD_VERSION", "EtcdAPI", "add_etcd_services", "cluster_id_u64", "etcd_status"]

log = logging.getLogger("raftkv.etcd")
T = TypeVar("T")

ETCD_VERSION = "3.5.0"
"""The etcd version Status reports: clients gate features on it; raftkv speaks 3.5's API."""

_MAX_TXN_OPS = 128
_WATCH_BUFFER = 1000

# etcd's error strings (clients match on them) and their codes.
E_COMPACTED = "etcdserver: mvcc: required revision has been compacted"
E_FUTURE_REV = "etcdserver: mvcc: required revision is a future revision"
E_LEASE_NOT_FOUND = "etcdserver: requested lease not found"
E_LEASE_EXISTS = "etcdserver: lease already exists"
E_KEY_NOT_FOUND = "etcdserver: key not found"
E_EMPTY_KEY = "etcdserver: key is not provided"
E_TOO_MANY_OPS = "etcdserver: too many operations in txn request"
E_DUPLICATE_KEY = "etcdserver: duplicate key given in txn request"
E_NO_LEADER = "etcdserver: no leader"
E_TIMEOUT = "etcdserver: request timed out"
E_NO_SPACE = "etcdserver: mvcc: database space exceeded"
E_AUTH_DISABLED = "etcdserver: authentication is not enabled"
E_MEMBER_NOT_FOUND = "etcdserver: member not found"
E_BAD_LEADER_TRANSFEREE = "etcdserver: bad leader transferee"
E_NOT_LEADER = "etcdserver: not leader"

_S = grpc.StatusCode


def etcd_status(err: RaftKVError) -> tuple[grpc.StatusCode, str]:
    """The gRPC status etcd answers where raftkv raised ``err``."""
    msg = err.message
    if isinstance(err, Compacted):
        return _S.OUT_OF_RANGE, E_COMPACTED
    if isinstance(err, LeaseNotFound):
        return _S.NOT_FOUND, E_LEASE_NOT_FOUND
    if isinstance(err, InvalidArgument):
        if "in the future" in msg:
            return _S.OUT_OF_RANGE, E_FUTURE_REV
        if "exists already" in msg and "lease" in msg:
            return _S.FAILED_PRECONDITION, E_LEASE_EXISTS
        if "ignore_value or ignore_lease" in msg:
            return _S.INVALID_ARGUMENT, E_KEY_NOT_FOUND
        if msg.startswith("etcdserver:"):
            return _S.INVALID_ARGUMENT, msg
        return _S.INVALID_ARGUMENT, f"etcdserver: {msg}"
    if isinstance(err, NotLeader):
        return _S.UNAVAILABLE, E_NOT_LEADER if err.leader_id else E_NO_LEADER
    if isinstance(err, Timeout):
        return _S.UNAVAILABLE, E_TIMEOUT
    if isinstance(err, ReadOnly):
        return _S.RESOURCE_EXHAUSTED, E_NO_SPACE
    if isinstance(err, Unavailable):
        return _S.UNAVAILABLE, E_NO_LEADER if "leader" in msg else f"etcdserver: {msg}"
    if isinstance(err, ConditionFailed):
        return _S.FAILED_PRECONDITION, f"etcdserver: {msg}"
    return _S.UNKNOWN, f"etcdserver: {msg}"


def _mvcc_kv(kv: KeyValue, keys_only: bool = False) -> mvcc.KeyValue:
    return mvcc.KeyValue(key=kv.key, create_revision=kv.create_revision, mod_revision=kv.mod_revision,
                         version=kv.version, value=b"" if keys_only else kv.value, lease=kv.lease)


def cluster_id_u64(cluster_id: str) -> int:
    """raftkv's cluster id (a string) as etcd's uint64 cluster_id: its hex digits, else a hash of it."""
    try:
        return int(cluster_id[:16], 16)
    except ValueError:
        return int.from_bytes(hashlib.sha256(cluster_id.encode()).digest()[:8], "big")


def _url(addr: str) -> str:
    return addr if "://" in addr or not addr else f"http://{addr}"


def _addr(url: str) -> str:
    return url.split("://", 1)[1].rstrip("/") if "://" in url else url


class EtcdAPI:
    """The etcd services of one node, sharing the raftkv ``KVServicer``'s helpers (read points, timeouts, writes)."""

    def __init__(self, kv: KVServicer) -> None:
        self.v1 = kv
        self.node = kv.node
        self.s = kv.s
        self.cluster_id = cluster_id_u64(kv.s.cluster_id)
        self._leader_channels: dict[str, Any] = {}

    # -- helpers ----------------------------------------------------------------------------------------------
    def header(self, revision: int | None = None) -> pb.ResponseHeader:
        n = self.node
        if revision is None:
            try:
                revision = n.fsm.revision()
            except RaftKVError:
                revision = 0
        return pb.ResponseHeader(cluster_id=self.cluster_id, member_id=n.id, revision=revision, raft_term=n.term)

    async def _abort(self, ctx: grpc.aio.ServicerContext[Any, Any], err: RaftKVError) -> None:
        code, msg = etcd_status(err)
        await ctx.abort(code, msg)

    async def _guard(self, ctx: grpc.aio.ServicerContext[Any, Any], fn: Callable[[], Awaitable[T]]) -> T:
        try:
            return await fn()
        except RaftKVError as e:
            await self._abort(ctx, e)
        raise AssertionError("unreachable")

    async def _propose(self, make: Callable[[int], Any], ctx: grpc.aio.ServicerContext[Any, Any]) -> Any:
        """Propose a command (no session: etcd's API has none), wait for its result; an error result raises."""
        self.v1._serving()
        a = await self.v1._write(self.node.submit(make), self.v1._timeout(ctx))
        r = a.result
        if isinstance(r, ErrorResult):
            from .pbmap import result_error

            err = result_error(r)
            assert err is not None
            raise err
        return r

    async def _read_point(self, serializable: bool, ctx: grpc.aio.ServicerContext[Any, Any]) -> None:
        v1 = self.v1
        if serializable:
            v1._serving()
            return
        await v1._run(self.node.read_index(), v1._timeout(ctx), write=False)

    # -- KV ---------------------------------------------------------------------------------------------------
    async def Range(self, req: pb.RangeRequest, ctx: grpc.aio.ServicerContext[Any, Any]) -> pb.RangeResponse:
        async def go() -> pb.RangeResponse:
            if not req.key:
                raise InvalidArgument(E_EMPTY_KEY)
            await self._read_point(req.serializable, ctx)
            if req.revision < 0:
                raise InvalidArgument(f"a revision is 0 or more, got {req.revision}")
            sorted_ = req.sort_order != pb.RangeRequest.NONE or req.sort_target != pb.RangeRequest.KEY
            filtered = bool(req.min_mod_revision or req.max_mod_revision or req.min_create_revision
                            or req.max_create_revision)
            limit = 0 if sorted_ or filtered else max(0, req.limit)
            _, rev, kvs, total = self.node.fsm_range_between(
                req.key, req.range_end, limit=limit, keys_only=req.keys_only, count_only=req.count_only,
                rev=req.revision)
            return self._range_response(req, kvs, total, rev)

        return await self._guard(ctx, go)

    def _range_response(self, req: Any, kvs: list[KeyValue], total: int, rev: int) -> pb.RangeResponse:
        kvs = _filter_sort(req, kvs)
        more = total > len(kvs)
        if req.limit > 0 and len(kvs) > req.limit:
            kvs = kvs[: req.limit]
            more = True
        resp = pb.RangeResponse(header=self.header(rev), more=more and not req.count_only, count=total)
        if not req.count_only:
            resp.kvs.extend(_mvcc_kv(kv, req.keys_only) for kv in kvs)
        return resp

    async def Put(self, req: pb.PutRequest, ctx: grpc.aio.ServicerContext[Any, Any]) -> pb.PutResponse:
        async def go() -> pb.PutResponse:
            op = _put_op(req, self.s.max_value_bytes)
            r = await self._propose(lambda rid: RangeTxn(rid, 0, 0, (), (op,), ()), ctx)
            assert isinstance(r, RangeTxnResult)
            put = r.results[0]
            assert isinstance(put, RangePut)
            resp = pb.PutResponse(header=self.header(r.revision))
            if req.prev_kv and put.prev is not None:
                resp.prev_kv.CopyFrom(_mvcc_kv(put.prev))
            return resp

        return await self._guard(ctx, go)

    async def DeleteRange(
        self, req: pb.DeleteRangeRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteRangeResponse:
        async def go() -> pb.DeleteRangeResponse:
            op = _delete_op(req)
            r = await self._propose(lambda rid: RangeTxn(rid, 0, 0, (), (op,), ()), ctx)
            assert isinstance(r, RangeTxnResult)
            d = r.results[0]
            assert isinstance(d, RangeDelete)
            return pb.DeleteRangeResponse(header=self.header(r.revision), deleted=d.deleted,
                                          prev_kvs=[_mvcc_kv(kv) for kv in d.prevs])

        return await self._guard(ctx, go)

    async def Txn(self, req: pb.TxnRequest, ctx: grpc.aio.ServicerContext[Any, Any]) -> pb.TxnResponse:
        async def go() -> pb.TxnResponse:
            counted = [0]
            body = _txn_body(req, self.s.max_value_bytes, counted)
            if counted[0] > _MAX_TXN_OPS:
                raise InvalidArgument(E_TOO_MANY_OPS)
            r = await self._propose(lambda rid: RangeTxn(rid, 0, 0, *body), ctx)
            assert isinstance(r, RangeTxnResult)
            return self._txn_response(req, r)

        return await self._guard(ctx, go)

    def _txn_response(self, req: pb.TxnRequest, r: RangeTxnResult) -> pb.TxnResponse:
        ops = req.success if r.succeeded else req.failure
        resp = pb.TxnResponse(header=self.header(r.revision), succeeded=r.succeeded)
        for op, res in zip(ops, r.results, strict=True):
            out = pb.ResponseOp()
            which = op.WhichOneof("request")
            if which == "request_range":
                assert isinstance(res, RangeRead)
                out.response_range.CopyFrom(self._range_response(op.request_range, list(res.kvs), res.total,
                                                                 r.revision))
            elif which == "request_put":
                assert isinstance(res, RangePut)
                out.response_put.header.CopyFrom(self.header(r.revision))
                if op.request_put.prev_kv and res.prev is not None:
                    out.response_put.prev_kv.CopyFrom(_mvcc_kv(res.prev))
            elif which == "request_delete_range":
                assert isinstance(res, RangeDelete)
                out.response_delete_range.header.CopyFrom(self.header(r.revision))
                out.response_delete_range.deleted = res.deleted
                out.response_delete_range.prev_kvs.extend(_mvcc_kv(kv) for kv in res.prevs)
            else:
                assert isinstance(res, RangeTxnResult)
                out.response_txn.CopyFrom(self._txn_response(op.request_txn, res))
            resp.responses.append(out)
        return resp

    async def Compact(
        self, req: pb.CompactionRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CompactionResponse:
        async def go() -> pb.CompactionResponse:
            rev = req.revision
            if rev <= 0:
                raise InvalidArgument("compact needs a revision of 1 or more")
            if rev > self.node.fsm.revision():
                raise InvalidArgument(f"revision {rev} is in the future")
            if rev <= self.node.fsm.compacted():
                raise Compacted(f"revision {rev} is compacted", self.node.fsm.compacted())
            r = await self._propose(lambda rid: Compact(rid, 0, 0, rev), ctx)
            assert isinstance(r, CompactResult)
            return pb.CompactionResponse(header=self.header())

        return await self._guard(ctx, go)

    # -- Watch ------------------------------------------------------------------------------------------------
    async def Watch(
        self, requests: AsyncIterator[pb.WatchRequest], ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchResponse]:
        """Many watches on one stream: create (from a revision, a key or range, filters, prev_kv), cancel, progress
        requests; each watch's events in revision order, once, with no gap (the node's ``WatchFeed``)."""
        out: asyncio.Queue[pb.WatchResponse | None] = asyncio.Queue()
        watches: dict[int, asyncio.Task[None]] = {}
        next_id = [0]
        feed = self.node.watches

        async def follow(wid: int, w: Watcher, signal: asyncio.Event, progress: bool) -> None:
            hub = feed.hub
            try:
                while True:
                    if not w.synced and not w.cancelled:
                        feed.catch_up(w)
                    events = hub.take(w)
                    if events:
                        upto = hub.revision if w.synced else w.next_revision - 1
                        await out.put(self._watch_events(wid, w, events, upto))
                        continue
                    if w.cancelled:
                        if w.compact_revision:
                            await out.put(pb.WatchResponse(header=self.header(hub.revision), watch_id=wid,
                                                           canceled=True, compact_revision=w.compact_revision,
                                                           cancel_reason=E_COMPACTED))
                        else:
                            await out.put(pb.WatchResponse(header=self.header(hub.revision), watch_id=wid,
                                                           canceled=True, cancel_reason=w.reason))
                        return
                    if not w.synced:
                        await asyncio.sleep(0)
                        continue
                    signal.clear()
                    try:
                        await asyncio.wait_for(signal.wait(), 600.0 if progress else None)
                    except TimeoutError:
                        await out.put(pb.WatchResponse(header=self.header(hub.revision), watch_id=wid))
            finally:
                feed.done(w)

        async def read_requests() -> None:
            try:
                async for req in requests:
                    which = req.WhichOneof("request_union")
                    if which == "create_request":
                        await create(req.create_request)
                    elif which == "cancel_request":
                        wid = req.cancel_request.watch_id
                        t = watches.pop(wid, None)
                        if t is not None:
                            t.cancel()
                            with contextlib.suppress(asyncio.CancelledError):
                                await t
                        await out.put(pb.WatchResponse(header=self.header(), watch_id=wid, canceled=True))
                    elif which == "progress_request":
                        await out.put(pb.WatchResponse(header=self.header(feed.hub.revision), watch_id=-1))
            finally:
                await out.put(None)

        async def create(c: pb.WatchCreateRequest) -> None:
            wid = c.watch_id if c.watch_id else next_id[0]
            while not c.watch_id and wid in watches:
                wid += 1
            next_id[0] = max(next_id[0], wid + 1)
            try:
                self.v1._serving()
                if wid in watches:
                    raise InvalidArgument("etcdserver: duplicate watch ID")
                rng = KeyRange(c.key, c.range_end)  # (etcd's convention, as raftkv's)
                no_put = pb.WatchCreateRequest.NOPUT in c.filters
                no_delete = pb.WatchCreateRequest.NODELETE in c.filters
                w, signal = feed.watch(rng, max(0, c.start_revision), no_put=no_put, no_delete=no_delete,
                                       prev_kv=c.prev_kv)
            except Compacted as e:
                await out.put(pb.WatchResponse(header=self.header(), watch_id=wid, created=True))
                await out.put(pb.WatchResponse(header=self.header(), watch_id=wid, canceled=True,
                                               compact_revision=e.compacted_revision, cancel_reason=E_COMPACTED))
                return
            except RaftKVError as e:
                await out.put(pb.WatchResponse(header=self.header(), watch_id=wid, created=True, canceled=True,
                                               cancel_reason=etcd_status(e)[1]))
                return
            await out.put(pb.WatchResponse(header=self.header(feed.hub.revision), watch_id=wid, created=True))
            watches[wid] = asyncio.create_task(follow(wid, w, signal, c.progress_notify))

        reader = asyncio.create_task(read_requests())
        try:
            while True:
                resp = await out.get()
                if resp is None:
                    return
                yield resp
        finally:
            reader.cancel()
            for t in watches.values():
                t.cancel()
            await asyncio.gather(reader, *watches.values(), return_exceptions=True)

    def _watch_events(self, wid: int, w: Watcher, events: list[Any], upto: int) -> pb.WatchResponse:
        resp = pb.WatchResponse(header=self.header(upto), watch_id=wid)
        for ev in events:
            e = resp.events.add()
            if ev.kv is not None:
                e.type = mvcc.Event.PUT
                e.kv.CopyFrom(_mvcc_kv(ev.kv))
            else:
                e.type = mvcc.Event.DELETE
                e.kv.key = ev.key
                e.kv.mod_revision = ev.revision
            if w.prev_kv and ev.prev is not None:
                e.prev_kv.CopyFrom(_mvcc_kv(ev.prev))
        return resp

    # -- Lease ------------------------------------------------------------------------------------------------
    async def LeaseGrant(
        self, req: pb.LeaseGrantRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.LeaseGrantResponse:
        async def go() -> pb.LeaseGrantResponse:
            if req.ID < 0 or req.ID > MAX_LEASE_ID:
                raise InvalidArgument("etcdserver: lease id out of range")
            ttl = min(max(req.TTL, self.s.min_lease_ttl_s), MAX_LEASE_TTL_S)
            lid = req.ID
            r = await self._propose(lambda rid: LeaseGrant(rid, 0, 0, lid, ttl), ctx)
            assert isinstance(r, LeaseGrantResult)
            return pb.LeaseGrantResponse(header=self.header(), ID=r.lease_id, TTL=r.ttl_s)

        return await self._guard(ctx, go)

    async def LeaseRevoke(
        self, req: pb.LeaseRevokeRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.LeaseRevokeResponse:
        async def go() -> pb.LeaseRevokeResponse:
            if req.ID <= 0:
                raise LeaseNotFound(E_LEASE_NOT_FOUND)
            lid = req.ID
            r = await self._propose(lambda rid: LeaseRevoke(rid, 0, 0, lid), ctx)
            assert isinstance(r, LeaseRevokeResult)
            return pb.LeaseRevokeResponse(header=self.header(r.revision))

        return await self._guard(ctx, go)

    async def _keep_alive(self, lid: int) -> int:
        """One keep-alive, on the leader (here, or forwarded to it over raftkv's own API)."""
        node = self.node
        if lid <= 0:
            return 0
        if node.role == StateRole.LEADER:
            return (await node.keep_alive([lid]))[0]
        stub = self._leader_stub(pb_grpc.LeaseStub)

        async def one() -> AsyncIterator[pb.LeaseKeepAliveRequest]:
            yield pb.LeaseKeepAliveRequest(ID=lid)

        call = stub.LeaseKeepAlive(one(), timeout=self.v1.default_timeout_s)
        async for resp in call:
            return int(resp.TTL)
        return 0

    def _leader_stub(self, stub_type: Any) -> Any:
        """A stub of the leader's etcd service ``stub_type`` (etcd forwards what only the leader can do: raftkv's
        followers do the same, over the leader's own etcd API)."""
        node = self.node
        addr = node.leader_addr()
        if not node.leader_id or not addr or node.leader_id == node.id:
            raise Unavailable(E_NO_LEADER)
        channel = self._leader_channels.get(addr)
        if channel is None:
            channel = self._leader_channels[addr] = grpc.aio.insecure_channel(addr)
        return stub_type(channel)

    async def LeaseKeepAlive(
        self, requests: AsyncIterator[pb.LeaseKeepAliveRequest], ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.LeaseKeepAliveResponse]:
        async for req in requests:
            try:
                self.v1._serving()
                ttl = await self._keep_alive(req.ID)
            except grpc.aio.AioRpcError as e:
                await ctx.abort(_S.UNAVAILABLE, f"etcdserver: {e.details()}")
                return
            except RaftKVError as e:
                await self._abort(ctx, e)
                return
            yield pb.LeaseKeepAliveResponse(header=self.header(), ID=req.ID, TTL=ttl)

    async def LeaseTimeToLive(
        self, req: pb.LeaseTimeToLiveRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.LeaseTimeToLiveResponse:
        async def go() -> pb.LeaseTimeToLiveResponse:
            node = self.node
            await self._read_point(False, ctx)
            held = node.fsm.lease(req.ID, keys=req.keys) if req.ID > 0 else None
            if held is None:
                return pb.LeaseTimeToLiveResponse(header=self.header(), ID=req.ID, TTL=-1)
            granted, _, keys = held
            remaining: float | None = None
            if node.role == StateRole.LEADER:
                with contextlib.suppress(Unavailable):
                    remaining = node.lease_remaining(req.ID)
            else:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    r = await self._leader_stub(pb_grpc.LeaseStub).LeaseTimeToLive(
                        pb.LeaseTimeToLiveRequest(ID=req.ID), timeout=self.v1._timeout(ctx))
                    remaining = float(r.TTL) if r.TTL >= 0 else None
            ttl = granted if remaining is None else math.ceil(remaining)
            return pb.LeaseTimeToLiveResponse(header=self.header(), ID=req.ID, TTL=ttl, grantedTTL=granted,
                                              keys=keys)

        return await self._guard(ctx, go)

    async def LeaseLeases(
        self, req: pb.LeaseLeasesRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.LeaseLeasesResponse:
        async def go() -> pb.LeaseLeasesResponse:
            await self._read_point(False, ctx)
            return pb.LeaseLeasesResponse(header=self.header(),
                                          leases=[pb.LeaseStatus(ID=lid) for lid, _, _ in self.node.fsm.leases()])

        return await self._guard(ctx, go)

    # -- Cluster ----------------------------------------------------------------------------------------------
    def _members(self) -> list[pb.Member]:
        return [pb.Member(ID=m.id, name=f"node{m.id}", peerURLs=[_url(m.peer_addr)],
                          clientURLs=[_url(m.client_addr)] if m.client_addr else [], isLearner=m.learner)
                for m in self.node.members()]

    async def MemberList(
        self, req: pb.MemberListRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.MemberListResponse:
        async def go() -> pb.MemberListResponse:
            if req.linearizable:
                await self._read_point(False, ctx)
            else:
                self.v1._serving()
            return pb.MemberListResponse(header=self.header(), members=self._members())

        return await self._guard(ctx, go)

    async def _forwarded(self, ctx: grpc.aio.ServicerContext[Any, Any], method: str, req: Any) -> Any:
        """On a follower: ``method`` of the leader's etcd Cluster service, its answer or its error passed on."""
        try:
            return await getattr(self._leader_stub(pb_grpc.ClusterStub), method)(req, timeout=self.v1._timeout(ctx))
        except grpc.aio.AioRpcError as e:
            await ctx.abort(e.code(), e.details() or "")
        except RaftKVError as e:
            await self._abort(ctx, e)
        raise AssertionError("unreachable")

    async def _change(self, ctx: grpc.aio.ServicerContext[Any, Any], t: ConfChangeType, m: MemberInfo) -> None:
        node = self.node
        res = await self.v1._run(node.change_membership(t, m), self.v1._timeout(ctx), write=True)
        if not res.changed:
            raise InvalidArgument(res.message or "no change")

    async def MemberAdd(
        self, req: pb.MemberAddRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.MemberAddResponse:
        if self.node.role != StateRole.LEADER:
            return await self._forwarded(ctx, "MemberAdd", req)  # type: ignore[no-any-return]

        async def go() -> pb.MemberAddResponse:
            if len(req.peerURLs) != 1:
                raise InvalidArgument("etcdserver: raftkv takes exactly one peer URL per member")
            taken = {m.id for m in self.node.members()} | set(self.node.fsm.removed_members())
            mid = (max(taken) + 1) if taken else 1
            m = MemberInfo(mid, _addr(req.peerURLs[0]), "", req.isLearner)
            await self._change(ctx, ConfChangeType.ADD_LEARNER if req.isLearner else ConfChangeType.ADD_VOTER, m)
            added = next((x for x in self._members() if mid == x.ID), pb.Member(ID=mid))
            return pb.MemberAddResponse(header=self.header(), member=added, members=self._members())

        return await self._guard(ctx, go)

    async def MemberRemove(
        self, req: pb.MemberRemoveRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.MemberRemoveResponse:
        if self.node.role != StateRole.LEADER:
            return await self._forwarded(ctx, "MemberRemove", req)  # type: ignore[no-any-return]

        async def go() -> pb.MemberRemoveResponse:
            if req.ID not in {m.id for m in self.node.members()}:
                raise _MemberNotFound(E_MEMBER_NOT_FOUND)
            await self._change(ctx, ConfChangeType.REMOVE_NODE, MemberInfo(req.ID, "", "", False))
            return pb.MemberRemoveResponse(header=self.header(), members=self._members())

        return await self._guard(ctx, go)

    async def MemberPromote(
        self, req: pb.MemberPromoteRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.MemberPromoteResponse:
        if self.node.role != StateRole.LEADER:
            return await self._forwarded(ctx, "MemberPromote", req)  # type: ignore[no-any-return]

        async def go() -> pb.MemberPromoteResponse:
            if req.ID not in {m.id for m in self.node.members()}:
                raise _MemberNotFound(E_MEMBER_NOT_FOUND)
            await self._change(ctx, ConfChangeType.ADD_VOTER, MemberInfo(req.ID, "", "", False))
            return pb.MemberPromoteResponse(header=self.header(), members=self._members())

        return await self._guard(ctx, go)

    async def MemberUpdate(
        self, req: pb.MemberUpdateRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.MemberUpdateResponse:
        await ctx.abort(_S.UNIMPLEMENTED, "etcdserver: raftkv does not change a member's addresses (remove it and "
                                          "add it under a new id)")
        raise AssertionError("unreachable")

    # -- Maintenance ------------------------------------------------------------------------------------------
    async def Status(self, req: pb.StatusRequest, ctx: grpc.aio.ServicerContext[Any, Any]) -> pb.StatusResponse:
        node = self.node
        st = node.raw.status()
        size = _db_size(node)
        errors = [f"corrupt: {msg}" for msg in _alarms(node).values()]
        if node.read_only_reason:
            errors.append(f"read-only: {node.read_only_reason}")
        return pb.StatusResponse(
            header=self.header(), version=ETCD_VERSION, dbSize=size, leader=node.leader_id, raftIndex=st.commit,
            raftTerm=st.term, raftAppliedIndex=node.applied, errors=errors, dbSizeInUse=size,
            isLearner=node.id in st.conf_state.learners)

    async def Alarm(self, req: pb.AlarmRequest, ctx: grpc.aio.ServicerContext[Any, Any]) -> pb.AlarmResponse:
        if req.action != pb.AlarmRequest.GET:
            await ctx.abort(_S.UNIMPLEMENTED, "etcdserver: raftkv clears an alarm by removing the member and adding "
                                              "a rebuilt one; only GET is served")
        node = self.node
        alarms = [pb.AlarmMember(memberID=m, alarm=pb.CORRUPT) for m in _alarms(node)]
        if node.read_only_reason:
            alarms.append(pb.AlarmMember(memberID=node.id, alarm=pb.NOSPACE))
        return pb.AlarmResponse(header=self.header(), alarms=alarms)

    async def Defragment(
        self, req: pb.DefragmentRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DefragmentResponse:
        # LMDB reuses freed pages in place: there is nothing to defragment (the file does not shrink).
        return pb.DefragmentResponse(header=self.header())

    async def Hash(self, req: pb.HashRequest, ctx: grpc.aio.ServicerContext[Any, Any]) -> pb.HashResponse:
        async def go() -> pb.HashResponse:
            self.v1._serving()
            digest = await asyncio.to_thread(self.node.fsm.checksum)
            return pb.HashResponse(header=self.header(), hash=int(digest[:8], 16))

        return await self._guard(ctx, go)

    async def HashKV(self, req: pb.HashKVRequest, ctx: grpc.aio.ServicerContext[Any, Any]) -> pb.HashKVResponse:
        """A hash of every key's value and metadata as of ``revision`` (0: now): equal on replicas that applied
        that revision (it depends on the history, not on a replica's physical state)."""
        async def go() -> pb.HashKVResponse:
            self.v1._serving()
            node = self.node

            def compute() -> tuple[int, int, int]:
                with node.store.read_txn() as txn:
                    rev = node.fsm.read_revision(req.revision or None, txn=txn)
                    kvs, _ = node.fsm.range_between(b"\x00", b"\x00", rev=req.revision or None, txn=txn)
                    h = 0
                    for kv in kvs:
                        h = zlib.crc32(_mvcc_kv(kv).SerializeToString(), h)
                    return h, rev, node.fsm.compacted(txn=txn)

            h, rev, compacted = await asyncio.to_thread(compute)
            return pb.HashKVResponse(header=self.header(rev), hash=h, compact_revision=compacted)

        return await self._guard(ctx, go)

    async def Snapshot(
        self, req: pb.SnapshotRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.SnapshotResponse]:
        """raftkv's snapshot file (not a bbolt database: `raftkv snapshot restore` restores it, envelope and all),
        in etcd's envelope: padded to 512-byte pages, then the SHA-256 of the whole in the last message
        (``raftkv.storage.snapshots.etcd_envelope``), so etcd's clients accept it."""
        from .proto.v1 import kv_pb2

        h = hashlib.sha256()
        size = 0
        async for chunk in self.v1.Snapshot(kv_pb2.SnapshotRequest(), ctx):
            if chunk.chunk:
                h.update(chunk.chunk)
                size += len(chunk.chunk)
                yield pb.SnapshotResponse(header=self.header(), remaining_bytes=1, blob=chunk.chunk)
        pad, length = etcd_envelope(size)
        tail = bytes(pad) + length
        h.update(tail)
        yield pb.SnapshotResponse(header=self.header(), remaining_bytes=1, blob=tail)
        yield pb.SnapshotResponse(header=self.header(), remaining_bytes=0, blob=h.digest())

    async def MoveLeader(
        self, req: pb.MoveLeaderRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.MoveLeaderResponse:
        async def go() -> pb.MoveLeaderResponse:
            node = self.node
            if node.role != StateRole.LEADER:
                raise NotLeader(node.leader_id, node.leader_addr(), E_NOT_LEADER)
            if req.targetID not in {m.id for m in node.members() if not m.learner}:
                raise InvalidArgument(E_BAD_LEADER_TRANSFEREE)
            await node.transfer_leadership(req.targetID)
            return pb.MoveLeaderResponse(header=self.header())

        return await self._guard(ctx, go)

    async def Downgrade(self, req: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await ctx.abort(_S.UNIMPLEMENTED, "etcdserver: raftkv has no cluster versions to downgrade")

    # -- Auth -------------------------------------------------------------------------------------------------
    async def AuthStatus(self, req: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> pb.AuthStatusResponse:
        return pb.AuthStatusResponse(header=self.header(), enabled=False)


class _MemberNotFound(InvalidArgument):
    pass


async def _auth_disabled(self: EtcdAPI, req: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> Any:
    await ctx.abort(_S.FAILED_PRECONDITION, E_AUTH_DISABLED)


_AUTH_METHODS = ("AuthEnable", "AuthDisable", "Authenticate", "UserAdd", "UserGet", "UserList", "UserDelete",
                 "UserChangePassword", "UserGrantRole", "UserRevokeRole", "RoleAdd", "RoleGet", "RoleList",
                 "RoleDelete", "RoleGrantPermission", "RoleRevokePermission")
for _name in _AUTH_METHODS:
    setattr(EtcdAPI, _name, _auth_disabled)


def _alarms(node: Any) -> dict[int, str]:
    try:
        return dict(node.fsm.alarms())
    except RaftKVError:
        return {}


def _db_size(node: Any) -> int:
    """The bytes of the node's LMDB file in use (its pages up to the last one written)."""
    try:
        env = node.store.env
        return int(env.stat()["psize"] * (env.info()["last_pgno"] + 1))
    except Exception:  # the size is informative only
        return 0


def _check_key(key: bytes) -> None:
    if not key:
        raise InvalidArgument(E_EMPTY_KEY)


def _lease(lease: int) -> int:
    if lease < 0 or lease > MAX_LEASE_ID:
        raise LeaseNotFound(E_LEASE_NOT_FOUND)
    return lease


def _put_op(req: Any, max_value: int) -> RangeOp:
    _check_key(req.key)
    if len(req.value) > max_value:
        raise InvalidArgument("etcdserver: request is too large")
    if req.ignore_value and req.value:
        raise InvalidArgument("etcdserver: value is provided")
    if req.ignore_lease and req.lease:
        raise InvalidArgument("etcdserver: lease is provided")
    flags = ((RangeFlag.PREV_KV if req.prev_kv else 0) | (RangeFlag.IGNORE_VALUE if req.ignore_value else 0)
             | (RangeFlag.IGNORE_LEASE if req.ignore_lease else 0))
    return RangeOp(RangeOpKind.PUT, req.key, b"", req.value, _lease(req.lease), flags)


def _delete_op(req: Any) -> RangeOp:
    _check_key(req.key)
    return RangeOp(RangeOpKind.DELETE_RANGE, req.key, req.range_end, flags=RangeFlag.PREV_KV if req.prev_kv else 0)


def _range_op(req: Any) -> RangeOp:
    _check_key(req.key)
    if req.revision:
        raise InvalidArgument("etcdserver: raftkv does not read at a past revision inside a txn")
    sorted_ = req.sort_order != pb.RangeRequest.NONE or req.sort_target != pb.RangeRequest.KEY
    filtered = bool(req.min_mod_revision or req.max_mod_revision or req.min_create_revision
                    or req.max_create_revision)
    flags = (RangeFlag.KEYS_ONLY if req.keys_only else 0) | (RangeFlag.COUNT_ONLY if req.count_only else 0)
    limit = 0 if sorted_ or filtered else max(0, req.limit)
    return RangeOp(RangeOpKind.RANGE, req.key, req.range_end, flags=flags, limit=limit)


_TARGETS = {pb.Compare.VERSION: 0, pb.Compare.CREATE: 1, pb.Compare.MOD: 2, pb.Compare.VALUE: 3, pb.Compare.LEASE: 4}
_RESULTS = {pb.Compare.EQUAL: 0, pb.Compare.GREATER: 1, pb.Compare.LESS: 2, pb.Compare.NOT_EQUAL: 3}


def _compare(c: Any) -> RangeCompare:
    _check_key(c.key)
    target = _TARGETS.get(c.target)
    result = _RESULTS.get(c.result)
    if target is None or result is None:
        raise InvalidArgument(f"etcdserver: unknown compare target {c.target} or result {c.result}")
    operand: bytes | int
    if target == 3:
        operand = c.value
    else:
        field = {0: "version", 1: "create_revision", 2: "mod_revision", 4: "lease"}[target]
        number: int = getattr(c, field)
        operand = number
        if number < 0:
            raise InvalidArgument(f"etcdserver: a compare on the {field} of a key takes a number >= 0")
    return RangeCompare(c.key, c.range_end, target, result, operand)


def _txn_body(req: Any, max_value: int, counted: list[int]) -> tuple[Any, Any, Any]:
    counted[0] += len(req.compare) + len(req.success) + len(req.failure)
    compares = tuple(_compare(c) for c in req.compare)
    return compares, _ops(req.success, max_value, counted), _ops(req.failure, max_value, counted)


def _ops(ops: Any, max_value: int, counted: list[int]) -> tuple[RangeOp, ...]:
    out = []
    puts: set[bytes] = set()
    for op in ops:
        which = op.WhichOneof("request")
        if which == "request_range":
            out.append(_range_op(op.request_range))
        elif which == "request_put":
            if op.request_put.key in puts:
                raise InvalidArgument(E_DUPLICATE_KEY)
            puts.add(op.request_put.key)
            out.append(_put_op(op.request_put, max_value))
        elif which == "request_delete_range":
            out.append(_delete_op(op.request_delete_range))
        elif which == "request_txn":
            out.append(RangeOp(RangeOpKind.TXN, b"", body=_txn_body(op.request_txn, max_value, counted)))
        else:
            raise InvalidArgument("etcdserver: a txn operation without a request")
    return tuple(out)


def _filter_sort(req: Any, kvs: list[KeyValue]) -> list[KeyValue]:
    if req.min_mod_revision:
        kvs = [kv for kv in kvs if kv.mod_revision >= req.min_mod_revision]
    if req.max_mod_revision:
        kvs = [kv for kv in kvs if kv.mod_revision <= req.max_mod_revision]
    if req.min_create_revision:
        kvs = [kv for kv in kvs if kv.create_revision >= req.min_create_revision]
    if req.max_create_revision:
        kvs = [kv for kv in kvs if kv.create_revision <= req.max_create_revision]
    order, target = req.sort_order, req.sort_target
    if order == pb.RangeRequest.NONE and target == pb.RangeRequest.KEY:
        return kvs
    if order == pb.RangeRequest.NONE:
        order = pb.RangeRequest.ASCEND
    key: Callable[[KeyValue], Any] = {
        pb.RangeRequest.KEY: lambda kv: kv.key,
        pb.RangeRequest.VERSION: lambda kv: kv.version,
        pb.RangeRequest.CREATE: lambda kv: kv.create_revision,
        pb.RangeRequest.MOD: lambda kv: kv.mod_revision,
        pb.RangeRequest.VALUE: lambda kv: kv.value,
    }[target]
    # (stable: ties stay in key order, as etcd's)
    return sorted(kvs, key=key, reverse=order == pb.RangeRequest.DESCEND)


def add_etcd_services(kv: KVServicer, server: grpc.aio.Server) -> EtcdAPI:
    """Serve etcd's v3 API on ``server`` (the node's client server), next to raftkv's own."""
    api = EtcdAPI(kv)
    pb_grpc.add_KVServicer_to_server(api, server)  # type: ignore[no-untyped-call]
    pb_grpc.add_WatchServicer_to_server(api, server)  # type: ignore[no-untyped-call]
    pb_grpc.add_LeaseServicer_to_server(api, server)  # type: ignore[no-untyped-call]
    pb_grpc.add_ClusterServicer_to_server(api, server)  # type: ignore[no-untyped-call]
    pb_grpc.add_MaintenanceServicer_to_server(api, server)  # type: ignore[no-untyped-call]
    pb_grpc.add_AuthServicer_to_server(api, server)  # type: ignore[no-untyped-call]
    return api
