"""The Watch RPC of in-process nodes, its stream read directly (no gRPC): the created response, filters, previous
values, progress notifications while idle, a slow reader cancelled with a reason it can act on (and the other
watchers unaffected), and every watch ended when the node stops serving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from raftkv.kv import Delete, Put
from raftkv.proto.v1 import kv_pb2

from .test_history import MetaCtx
from .test_node import Cluster, propose_applied, with_cluster
from .test_servicer import servicer


def stream(cluster: Cluster, node: int, **req: Any) -> AsyncIterator[kv_pb2.WatchResponse]:
    return servicer(cluster, node).Watch(kv_pb2.WatchRequest(**req), MetaCtx(None))  # type: ignore[arg-type]


async def events_until(it: AsyncIterator[kv_pb2.WatchResponse], n: int) -> list[kv_pb2.WatchEvent]:
    out: list[kv_pb2.WatchEvent] = []
    async with asyncio.timeout(10):
        while len(out) < n:
            resp = await anext(it)
            assert not resp.canceled, resp.cancel_reason
            out.extend(resp.events)
    return out


@with_cluster
async def test_filters_and_previous_values(cluster: Cluster) -> None:
    lead = await cluster.leader()
    f = next(n for n in cluster.nodes.values() if n is not lead)
    puts_only = stream(cluster, f.id, key=b"p/", prefix=True, no_delete=True)
    deletes_only = stream(cluster, f.id, key=b"p/", prefix=True, no_put=True, prev_kv=True)
    for it in (puts_only, deletes_only):
        first = await anext(it)
        assert first.created and not first.events
    await propose_applied(lead, lambda rid: Put(rid, 0, 0, b"p/a", b"1"))
    await propose_applied(lead, lambda rid: Put(rid, 0, 0, b"q/outside", b"1"))
    await propose_applied(lead, lambda rid: Put(rid, 0, 0, b"p/a", b"2"))
    await propose_applied(lead, lambda rid: Delete(rid, 0, 0, b"p/a"))
    puts = await events_until(puts_only, 2)
    assert [(e.type, e.kv.value, e.HasField("prev_kv")) for e in puts] == [(kv_pb2.WatchEvent.PUT, b"1", False),
                                                                          (kv_pb2.WatchEvent.PUT, b"2", False)]
    (d,) = await events_until(deletes_only, 1)
    assert d.type == kv_pb2.WatchEvent.DELETE and d.kv.key == b"p/a" and d.prev_kv.value == b"2"
    assert d.kv.mod_revision == puts[1].kv.mod_revision + 1
    for it in (puts_only, deletes_only):
        await it.aclose()
    assert not len(f.watches)  # a stream that ends forgets its watcher


@with_cluster
async def test_an_idle_watch_gets_progress_with_the_current_revision(cluster: Cluster) -> None:
    lead = await cluster.leader()
    r = await propose_applied(lead, lambda rid: Put(rid, 0, 0, b"elsewhere", b"x"))
    it = stream(cluster, lead.id, key=b"quiet", progress_notify_ms=20)
    assert (await anext(it)).created
    async with asyncio.timeout(10):
        progress = await anext(it)
    assert not progress.events and not progress.canceled
    assert progress.header.revision >= r.result.kv.mod_revision  # up to date as of a revision past that write
    await it.aclose()


@with_cluster
async def test_a_slow_reader_is_cancelled_with_a_reason_and_the_others_go_on(cluster: Cluster) -> None:
    lead = await cluster.leader()
    lead.watches.hub.max_events = 5
    slow = stream(cluster, lead.id, key=b"s", prefix=True)
    fast = stream(cluster, lead.id, key=b"s", prefix=True)
    assert (await anext(slow)).created and (await anext(fast)).created
    got = []
    for i in range(12):
        await propose_applied(lead, lambda rid, i=i: Put(rid, 0, 0, b"s%d" % i, b"v"))
        got += await events_until(fast, 1)  # the fast reader keeps up
    assert [e.kv.key for e in got] == [b"s%d" % i for i in range(12)]
    async with asyncio.timeout(10):
        last = await anext(slow)  # it read nothing while 12 events came: more than its 5
    assert last.canceled and "fell more than 5 events behind" in last.cancel_reason and not last.compact_revision
    await fast.aclose()


@with_cluster
async def test_a_node_that_stops_ends_its_watches(cluster: Cluster) -> None:
    lead = await cluster.leader()
    f = next(n for n in cluster.nodes.values() if n is not lead)
    it = stream(cluster, f.id, key=b"k")
    assert (await anext(it)).created
    f.stop()
    async with asyncio.timeout(10):
        last = await anext(it)
    assert last.canceled and "stopped" in last.cancel_reason
