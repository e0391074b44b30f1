"""Bounded-staleness reads through real Nodes and the servicer (README, "Consistency").

A node serves a bounded read locally only if it knows a read point (the answer to a read-index request it asked, or
on the leader its newest heartbeat round a majority confirmed) at most ``max_staleness_ms`` old in real time, and
has applied that point's index; otherwise the read falls back to a linearizable one, or fails with
``fail_if_stale``. The bugs these guard against: a follower far behind the leader passed the check, because
heartbeats carry the follower's own match as the commit index, and the check counted ticks (a bound of 0 passed).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raftkv.errors import RaftKVError, Unavailable
from raftkv.kv import Put
from raftkv.proto.v1 import kv_pb2
from raftkv.servicer import KVServicer

from .test_node import Cluster, propose_applied, until, with_cluster
from .test_read_waits_for_apply import hold_appends
from .test_servicer import Ctx, servicer


class Aborted(Exception):
    def __init__(self, code: Any, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code


class AbortCtx(Ctx):
    """A context whose abort raises what the client would see."""

    async def abort(self, code: Any, details: str, trailing_metadata: Any = ()) -> None:
        raise Aborted(code, details)


def bounded(key: bytes, bound_ms: int, fail_if_stale: bool, timeout_ms: int = 0) -> kv_pb2.GetRequest:
    read = kv_pb2.ReadOptions(consistency=kv_pb2.BOUNDED, max_staleness_ms=bound_ms, fail_if_stale=fail_if_stale,
                              timeout_ms=timeout_ms)
    return kv_pb2.GetRequest(key=key, read=read)


async def get(svc: KVServicer, req: kv_pb2.GetRequest, deadline_s: float = 5.0) -> kv_pb2.GetResponse:
    return await svc.Get(req, AbortCtx(deadline_s))  # type: ignore[arg-type]


@with_cluster
async def test_a_follower_far_behind_the_leaders_commit_refuses_a_bounded_read(cluster: Cluster) -> None:
    lead = await cluster.leader()
    f = next(n for n in cluster.nodes.values() if n is not lead)
    first = await propose_applied(lead, lambda rid: Put(rid, 0, 0, b"k", b"old"))
    await asyncio.wait_for(f.wait_applied(first.index), 5)
    await until(lambda: f.bounded_read_ok(10_000), "the follower to know a fresh read point")

    release = hold_appends(lead, f.id)  # heartbeats still arrive: the follower keeps hearing from the leader
    try:
        for i in range(50):
            await propose_applied(lead, lambda rid, i=i: Put(rid, 0, 0, b"k", b"new%d" % i))
        # A bound of 1 ms is never met locally, so each check asks for a fresh read point; the answer to one
        # asked after the writes tells the follower it is 50 entries behind.
        behind = lead.raw.raft.log.committed

        def point_past_the_writes() -> bool:
            f.bounded_read_ok(1)
            return (f.replica.read_point or (0.0, 0))[1] >= behind

        await until(point_past_the_writes, "a read point past the writes")
        assert f.applied < behind - 40
        assert f.leader_contact_ms() < 1000  # it did hear from the leader recently: that is not enough
        assert not f.bounded_read_ok(60_000)  # whatever the bound: it has not applied what the leader committed
        svc = servicer(cluster, f.id)
        with pytest.raises(Aborted) as e:
            await get(svc, bounded(b"k", 60_000, fail_if_stale=True))
        assert e.value.code.name == "UNAVAILABLE" and "cannot serve a read at most 60000 ms stale" in str(e.value)
        # Without fail_if_stale it falls back to a linearizable read, which waits for what it lacks.
        fallback = asyncio.ensure_future(get(svc, bounded(b"k", 60_000, fail_if_stale=False)))
        done, _ = await asyncio.wait([fallback], timeout=0.3)
        assert not done, f"served a stale value: {fallback.result() if done else None}"
    finally:
        release()
    resp = await asyncio.wait_for(fallback, 5)
    assert resp.kv.value == b"new49" and resp.header.index >= behind


async def _a_bound_below_one_tick_is_never_met_locally(cluster: Cluster) -> None:
    """``max_staleness_ms`` 0 (or below the time between heartbeat rounds) is not met by a read point that is
    a tick old or more: with fail_if_stale the read fails, on the leader too; without it, it is linearizable."""
    lead = await cluster.leader()
    a = await propose_applied(lead, lambda rid: Put(rid, 0, 0, b"k", b"v"))
    for n in cluster.nodes.values():
        await asyncio.wait_for(n.wait_applied(a.index), 5)
        await until(lambda n=n: n.bounded_read_ok(5_000), f"node {n.id} to know a fresh read point")
        assert not n.bounded_read_ok(0)
        svc = servicer(cluster, n.id)
        with pytest.raises(Aborted) as e:
            await get(svc, bounded(b"k", 0, fail_if_stale=True))
        assert e.value.code.name == "UNAVAILABLE"
        rounds = n.replica.stats.read_rounds
        resp = await get(svc, bounded(b"k", 0, fail_if_stale=False))
        assert resp.kv.value == b"v" and n.replica.stats.read_rounds > rounds  # it took a read-index round
        resp = await get(svc, bounded(b"k", 5_000, fail_if_stale=True))  # a generous bound is served locally
        assert resp.kv.value == b"v"


# Heartbeats every 10 ticks of 10 ms: a read point is up to ~100 ms old, far above a 0 ms bound.
test_a_bound_below_one_tick_is_never_met_locally = with_cluster(
    _a_bound_below_one_tick_is_never_met_locally, heartbeat_ticks=10, election_ticks=50
)


@with_cluster
async def test_an_isolated_follower_refuses_once_its_point_is_older_than_the_bound(cluster: Cluster) -> None:
    lead = await cluster.leader()
    f = next(n for n in cluster.nodes.values() if n is not lead)
    a = await propose_applied(lead, lambda rid: Put(rid, 0, 0, b"k", b"v"))
    await asyncio.wait_for(f.wait_applied(a.index), 5)
    await until(lambda: f.bounded_read_ok(300), "a fresh read point")
    others = [n for n in cluster.nodes if n != f.id]
    cluster.net.partition([[f.id], others])
    try:
        await until(lambda: not f.bounded_read_ok(300), "the point to age past 300 ms", timeout_s=3)
        assert f.bounded_read_ok(60_000)  # the same point, against a bound it still meets
        with pytest.raises(Aborted):
            await get(servicer(cluster, f.id), bounded(b"k", 300, fail_if_stale=True))
    finally:
        cluster.net.heal()


def test_the_unavailable_error_is_what_the_client_sees() -> None:
    err: RaftKVError = Unavailable("node 2 cannot serve a read at most 5 ms stale")
    assert err.applied == "no" and err.retryable
