"""etcd's API on in-process nodes, the servicer called directly: range_end conventions, counts, limits, sorting and
filters; Put/DeleteRange/Txn with prev_kv, ignore_value and ignore_lease; nested txns and their responses; etcd's
error codes and strings, which clients match on; leases; a watch stream with several watches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from raftkv.etcdapi import (
    E_COMPACTED,
    E_DUPLICATE_KEY,
    E_EMPTY_KEY,
    E_FUTURE_REV,
    E_KEY_NOT_FOUND,
    E_LEASE_NOT_FOUND,
    E_TOO_MANY_OPS,
    EtcdAPI,
)
from raftkv.proto.etcd.api.etcdserverpb import rpc_pb2 as pb
from raftkv.proto.etcd.api.mvccpb import kv_pb2 as mvcc

from .test_history import MetaAborted, MetaCtx
from .test_node import Cluster, until, with_cluster
from .test_servicer import servicer


def api(cluster: Cluster, node: int) -> EtcdAPI:
    return EtcdAPI(servicer(cluster, node))


class _Ctx:
    """A fresh 5-second context per call (a deadline set at import time would run out during a long test run)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(MetaCtx(5), name)


CTX: Any = _Ctx()


async def fails(aw: Any, code: grpc.StatusCode, message: str) -> None:
    with pytest.raises(MetaAborted) as e:
        await aw
    assert e.value.code == code and str(e.value).endswith(message), str(e.value)


def put(key: bytes, value: bytes = b"v", **kw: Any) -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=value, **kw))


@with_cluster
async def test_ranges_follow_etcds_conventions(cluster: Cluster) -> None:
    lead = await cluster.leader()
    e = api(cluster, lead.id)
    for k, v in [(b"a", b"3"), (b"b", b"1"), (b"c", b"2"), (b"d", b"0")]:
        await e.Put(pb.PutRequest(key=k, value=v), CTX)
    one = await e.Range(pb.RangeRequest(key=b"b"), CTX)
    assert [kv.key for kv in one.kvs] == [b"b"] and one.count == 1
    half_open = await e.Range(pb.RangeRequest(key=b"b", range_end=b"d"), CTX)
    assert [kv.key for kv in half_open.kvs] == [b"b", b"c"]
    everything = await e.Range(pb.RangeRequest(key=b"\0", range_end=b"\0"), CTX)
    assert [kv.key for kv in everything.kvs] == [b"a", b"b", b"c", b"d"]
    from_b = await e.Range(pb.RangeRequest(key=b"b", range_end=b"\0", limit=2), CTX)
    assert [kv.key for kv in from_b.kvs] == [b"b", b"c"] and from_b.more and from_b.count == 3
    by_value = await e.Range(pb.RangeRequest(key=b"a", range_end=b"z", sort_target=pb.RangeRequest.VALUE,
                                             sort_order=pb.RangeRequest.DESCEND, limit=2), CTX)
    assert [kv.value for kv in by_value.kvs] == [b"3", b"2"] and by_value.more
    counted = await e.Range(pb.RangeRequest(key=b"a", range_end=b"z", count_only=True), CTX)
    assert counted.count == 4 and not counted.kvs
    keys = await e.Range(pb.RangeRequest(key=b"a", range_end=b"z", keys_only=True), CTX)
    assert all(kv.value == b"" for kv in keys.kvs) and len(keys.kvs) == 4
    recent = await e.Range(pb.RangeRequest(key=b"a", range_end=b"z", min_mod_revision=3), CTX)
    assert [kv.key for kv in recent.kvs] == [b"c", b"d"]
    past = await e.Range(pb.RangeRequest(key=b"a", range_end=b"z", revision=2), CTX)
    assert [kv.key for kv in past.kvs] == [b"a", b"b"] and past.header.revision == 2
    assert everything.header.revision == 4 and everything.header.member_id == lead.id
    await fails(e.Range(pb.RangeRequest(key=b"a", revision=99), CTX), grpc.StatusCode.OUT_OF_RANGE, E_FUTURE_REV)
    await fails(e.Range(pb.RangeRequest(key=b""), CTX), grpc.StatusCode.INVALID_ARGUMENT, E_EMPTY_KEY)
    await e.Compact(pb.CompactionRequest(revision=3), CTX)
    await fails(e.Range(pb.RangeRequest(key=b"a", revision=2), CTX), grpc.StatusCode.OUT_OF_RANGE, E_COMPACTED)
    follower = next(n for n in cluster.nodes.values() if n is not lead)
    await until(lambda: follower.fsm.revision() >= 4, "the follower to apply")
    stale = await api(cluster, follower.id).Range(pb.RangeRequest(key=b"a", serializable=True), CTX)
    assert stale.kvs[0].value == b"3"


@with_cluster
async def test_writes_and_txns_answer_as_etcd_does(cluster: Cluster) -> None:
    lead = await cluster.leader()
    e = api(cluster, lead.id)
    first = await e.Put(pb.PutRequest(key=b"k", value=b"1"), CTX)
    again = await e.Put(pb.PutRequest(key=b"k", value=b"2", prev_kv=True), CTX)
    assert again.prev_kv.value == b"1" and again.header.revision == first.header.revision + 1
    lease = await e.LeaseGrant(pb.LeaseGrantRequest(TTL=30), CTX)
    kept = await e.Put(pb.PutRequest(key=b"k", ignore_value=True, lease=lease.ID, prev_kv=True), CTX)
    assert kept.prev_kv.value == b"2"
    got = await e.Range(pb.RangeRequest(key=b"k"), CTX)
    assert got.kvs[0].value == b"2" and got.kvs[0].lease == lease.ID
    await e.Put(pb.PutRequest(key=b"k", value=b"3", ignore_lease=True), CTX)
    assert (await e.Range(pb.RangeRequest(key=b"k"), CTX)).kvs[0].lease == lease.ID
    await fails(e.Put(pb.PutRequest(key=b"nope", ignore_value=True), CTX), grpc.StatusCode.INVALID_ARGUMENT,
                E_KEY_NOT_FOUND)
    await fails(e.Put(pb.PutRequest(key=b"k", value=b"x", lease=424242), CTX), grpc.StatusCode.NOT_FOUND,
                E_LEASE_NOT_FOUND)
    # A txn: compares on a range, a nested txn, a range read inside.
    await e.Put(pb.PutRequest(key=b"r/1", value=b"a"), CTX)
    await e.Put(pb.PutRequest(key=b"r/2", value=b"b"), CTX)
    txn = pb.TxnRequest(
        compare=[pb.Compare(key=b"r/", range_end=b"r0", target=pb.Compare.VERSION, result=pb.Compare.EQUAL,
                            version=1)],
        success=[put(b"r/3"), pb.RequestOp(request_range=pb.RangeRequest(key=b"r/", range_end=b"r0")),
                 pb.RequestOp(request_txn=pb.TxnRequest(
                     compare=[pb.Compare(key=b"r/3", target=pb.Compare.CREATE, result=pb.Compare.EQUAL,
                                         create_revision=0)],
                     success=[put(b"nested/yes")], failure=[put(b"nested/no")]))],
    )
    r = await e.Txn(txn, CTX)
    assert r.succeeded
    assert [kv.key for kv in r.responses[1].response_range.kvs] == [b"r/1", b"r/2", b"r/3"]
    assert r.responses[2].response_txn.succeeded  # decided before the txn: r/3 did not exist yet
    assert (await e.Range(pb.RangeRequest(key=b"nested/yes"), CTX)).count == 1
    revs = {kv.mod_revision for kv in (await e.Range(pb.RangeRequest(key=b"\0", range_end=b"\0"), CTX)).kvs
            if kv.key in (b"r/3", b"nested/yes")}
    assert len(revs) == 1 and r.header.revision in revs  # one revision for the whole txn
    d = await e.DeleteRange(pb.DeleteRangeRequest(key=b"r/", range_end=b"r0", prev_kv=True), CTX)
    assert d.deleted == 3 and [kv.key for kv in d.prev_kvs] == [b"r/1", b"r/2", b"r/3"]
    await fails(e.Txn(pb.TxnRequest(success=[put(b"x"), put(b"x")]), CTX), grpc.StatusCode.INVALID_ARGUMENT,
                E_DUPLICATE_KEY)
    await fails(e.Txn(pb.TxnRequest(success=[put(b"t%d" % i) for i in range(129)]), CTX),
                grpc.StatusCode.INVALID_ARGUMENT, E_TOO_MANY_OPS)
    failed = await e.Txn(pb.TxnRequest(compare=[pb.Compare(key=b"missing", target=pb.Compare.VALUE,
                                                          result=pb.Compare.NOT_EQUAL, value=b"z")],
                                       success=[put(b"should-not")], failure=[put(b"failure-ran")]), CTX)
    assert not failed.succeeded  # a value compare on a key that does not exist never holds (etcd's rule)


@with_cluster
async def test_leases_and_a_watch_stream_with_two_watches(cluster: Cluster) -> None:
    lead = await cluster.leader()
    e = api(cluster, lead.id)
    follower = api(cluster, next(i for i in cluster.nodes if i != lead.id))
    g = await follower.LeaseGrant(pb.LeaseGrantRequest(TTL=60, ID=7), CTX)
    assert g.ID == 7 and g.TTL == 60
    await e.Put(pb.PutRequest(key=b"l", value=b"v", lease=7), CTX)
    ttl = await e.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=7, keys=True), CTX)
    assert ttl.grantedTTL == 60 and 0 < ttl.TTL <= 60 and list(ttl.keys) == [b"l"]
    assert [s.ID for s in (await e.LeaseLeases(pb.LeaseLeasesRequest(), CTX)).leases] == [7]
    missing = await e.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=8), CTX)
    assert missing.TTL == -1

    async def one(lid: int) -> AsyncIterator[pb.LeaseKeepAliveRequest]:
        yield pb.LeaseKeepAliveRequest(ID=lid)

    assert [r.TTL async for r in e.LeaseKeepAlive(one(7), CTX)] == [60]
    assert [r.TTL async for r in e.LeaseKeepAlive(one(8), CTX)] == [0]  # etcd: TTL 0 for an unknown lease
    await e.LeaseRevoke(pb.LeaseRevokeRequest(ID=7), CTX)
    assert (await e.Range(pb.RangeRequest(key=b"l"), CTX)).count == 0
    await fails(e.LeaseRevoke(pb.LeaseRevokeRequest(ID=7), CTX), grpc.StatusCode.NOT_FOUND, E_LEASE_NOT_FOUND)

    # One stream, two watches: each its own id and events.
    requests: asyncio.Queue[pb.WatchRequest | None] = asyncio.Queue()

    async def stream() -> AsyncIterator[pb.WatchRequest]:
        while (r := await requests.get()) is not None:
            yield r

    it = e.Watch(stream(), CTX)
    await requests.put(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"a/", range_end=b"a0")))
    created = await anext(it)
    await requests.put(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"b", prev_kv=True,
                                                                          filters=[pb.WatchCreateRequest.NOPUT])))
    created2 = await anext(it)
    assert created.created and created2.created and created.watch_id != created2.watch_id
    await e.Put(pb.PutRequest(key=b"a/1", value=b"x"), CTX)
    await e.Put(pb.PutRequest(key=b"b", value=b"y"), CTX)
    await e.DeleteRange(pb.DeleteRangeRequest(key=b"b"), CTX)
    got: dict[int, list[Any]] = {}
    async with asyncio.timeout(10):
        while len(got.get(created.watch_id, [])) < 1 or len(got.get(created2.watch_id, [])) < 1:
            resp = await anext(it)
            got.setdefault(resp.watch_id, []).extend(resp.events)
    (a,) = got[created.watch_id]
    (b,) = got[created2.watch_id]
    assert a.type == mvcc.Event.PUT and a.kv.key == b"a/1"
    assert b.type == mvcc.Event.DELETE and b.prev_kv.value == b"y"  # no puts; the delete with what it removed
    await requests.put(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=created.watch_id)))
    async with asyncio.timeout(10):
        while not (resp := await anext(it)).canceled:
            pass
    assert resp.watch_id == created.watch_id
    await requests.put(None)
    await it.aclose()
