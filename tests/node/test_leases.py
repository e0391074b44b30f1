"""Leases on in-process nodes whose clock moves only when the test moves it (``FakeClock``): a lease's keys live
until its deadline and are deleted, in one revision, soon after; keep-alives move the deadline; a new leader gives
every lease a full TTL from its election, so a lease is never expired before ``ttl`` after its last answered
keep-alive across a failover; a follower refuses keep-alives (they go to the leader); the RPCs end to end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from raftkv.clock import FakeClock
from raftkv.errors import NotLeader
from raftkv.kv import LeaseGrant, LeaseGrantResult, LeaseRevoke, LeaseRevokeResult, Put, PutResult
from raftkv.node import Node
from raftkv.proto.v1 import kv_pb2
from raftkv.raft import StateRole

from .test_fake_clock import TICK_S, clock_running
from .test_history import MetaAborted, MetaCtx
from .test_node import Cluster, propose_applied, until
from .test_servicer import servicer


@contextlib.asynccontextmanager
async def fake_cluster(tmp: Path, **settings: Any) -> AsyncIterator[tuple[Cluster, FakeClock]]:
    clock = FakeClock()
    c = Cluster(tmp, clock=clock, **settings)
    await c.start()
    try:
        async with clock_running(clock):
            await c.leader(timeout_s=20)
        yield c, clock
    finally:
        await c.stop()


async def run_clock(clock: FakeClock, seconds: float) -> None:
    """Move the clock ``seconds`` forward a tick at a time, letting the nodes run between ticks (heartbeats, acks)."""
    steps = round(seconds / TICK_S)
    for _ in range(steps):
        clock.advance(TICK_S)
        await asyncio.sleep(0.002)


async def until_moving(clock: FakeClock, pred: Any, what: str, limit_s: float) -> float:
    """Run the clock until ``pred()`` holds; return the clock's time then. Fails after ``limit_s`` of clock time."""
    start = clock.monotonic()
    while not pred():
        if clock.monotonic() - start > limit_s:
            raise AssertionError(f"{what} did not happen within {limit_s}s of clock time")
        clock.advance(TICK_S)
        await asyncio.sleep(0.002)
    return clock.monotonic()


async def grant(node: Node, ttl: int, lease_id: int = 0) -> LeaseGrantResult:
    a = await propose_applied(node, lambda rid: LeaseGrant(rid, 0, 0, lease_id, ttl))
    assert isinstance(a.result, LeaseGrantResult), a.result
    await node.wait_applied(a.index)
    return a.result


async def put(node: Node, key: bytes, lease: int) -> int:
    a = await propose_applied(node, lambda rid: Put(rid, 0, 0, key, b"v", (), lease))
    assert isinstance(a.result, PutResult), a.result
    return a.result.kv.mod_revision


def present(cluster: Cluster, key: bytes) -> bool:
    return any(n.fsm.get(key) is not None for n in cluster.nodes.values() if not n._stopping)


def test_a_lease_lives_until_its_deadline_then_its_keys_go_in_one_revision(tmp_path: Path) -> None:
    async def main() -> None:
        async with fake_cluster(tmp_path) as (c, clock):
            lead = await c.leader()
            lease = await grant(lead, 2)
            t0 = clock.monotonic()  # (the grant was timed when applied on the leader, at or after t0)
            r1 = await put(lead, b"a", lease.lease_id)
            await put(lead, b"b", lease.lease_id)
            await put(lead, b"other", 0)
            await run_clock(clock, 1.9)
            assert present(c, b"a") and present(c, b"b"), "expired early"
            gone = await until_moving(clock, lambda: not present(c, b"a") and not present(c, b"b"), "expiry", 3)
            assert gone >= t0 + 2
            assert gone <= t0 + 2 + 0.5, f"expired {gone - t0 - 2:.2f}s late"
            for n in c.nodes.values():
                await until(lambda n=n: n.fsm.get(b"a") is None and n.fsm.lease(lease.lease_id) is None, "apply")
                assert n.fsm.get(b"other") is not None
            # One revision for both deletes, right after the writes.
            events = list(lead.fsm.events(r1 + 1))
            deletes = [e for e in events if e.kv is None]
            assert [e.key for e in deletes] == [b"a", b"b"] and len({e.revision for e in deletes}) == 1
            assert lead.replica.stats.leases_expired == 1

    asyncio.run(main())


def test_keep_alives_move_the_deadline_and_a_late_one_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        async with fake_cluster(tmp_path) as (c, clock):
            lead = await c.leader()
            lease = await grant(lead, 2)
            await put(lead, b"k", lease.lease_id)
            for _ in range(3):
                await run_clock(clock, 1.5)
                assert await lead.keep_alive([lease.lease_id]) == [2]
            last = clock.monotonic()
            assert lead.lease_remaining(lease.lease_id) == pytest.approx(2, abs=0.05)
            await run_clock(clock, 1.9)
            assert present(c, b"k"), "expired before the keep-alive's TTL ran out"
            gone = await until_moving(clock, lambda: not present(c, b"k"), "expiry", 3)
            assert last + 2 <= gone <= last + 2.5
            assert await lead.keep_alive([lease.lease_id, 999]) == [0, 0]  # gone, and never granted

    asyncio.run(main())


def test_keep_alives_go_to_the_leader(tmp_path: Path) -> None:
    async def main() -> None:
        async with fake_cluster(tmp_path) as (c, _clock):
            lead = await c.leader()
            lease = await grant(lead, 5)
            follower = next(n for n in c.nodes.values() if n is not lead)
            with pytest.raises(NotLeader) as err:
                await follower.keep_alive([lease.lease_id])
            assert err.value.leader_id == lead.id

    asyncio.run(main())


def test_a_new_leader_gives_every_lease_a_full_ttl_before_expiring_any(tmp_path: Path) -> None:
    async def main() -> None:
        async with fake_cluster(tmp_path) as (c, clock):
            lead = await c.leader()
            lease = await grant(lead, 2)
            await put(lead, b"k", lease.lease_id)
            await run_clock(clock, 1.0)
            assert await lead.keep_alive([lease.lease_id]) == [2]
            answered = clock.monotonic()
            lead.stop()  # the leader dies right after answering
            await c.tasks[lead.id]
            new = None

            def elected() -> bool:
                nonlocal new
                live = [n for n in c.nodes.values() if n is not lead and n.role == StateRole.LEADER]
                new = live[0] if live else None
                return new is not None and new.replica.lessor.primed

            primed_at = await until_moving(clock, elected, "a new leader timing the leases", 5)
            assert new is not None
            assert new.lease_remaining(lease.lease_id) == pytest.approx(2, abs=0.05)  # a full TTL from its election
            gone = await until_moving(clock, lambda: not present(c, b"k"), "expiry under the new leader", 5)
            assert gone >= answered + 2, "expired before the TTL of the last answered keep-alive"
            assert gone >= primed_at + 2
            assert gone <= primed_at + 2.5

    asyncio.run(main())


def test_the_lease_rpcs(tmp_path: Path) -> None:
    async def main() -> None:
        async with fake_cluster(tmp_path) as (c, clock):
            lead = await c.leader()
            svc = servicer(c, lead.id)
            follower = next(n for n in c.nodes.values() if n is not lead)
            fsvc = servicer(c, follower.id)
            g = await fsvc.LeaseGrant(kv_pb2.LeaseGrantRequest(ttl=1, id=77), MetaCtx(5))  # type: ignore[arg-type]
            assert g.id == 77 and g.ttl == lead.settings.min_lease_ttl_s  # raised to the minimum
            with pytest.raises(MetaAborted) as dup:
                await svc.LeaseGrant(kv_pb2.LeaseGrantRequest(ttl=5, id=77), MetaCtx(5))  # type: ignore[arg-type]
            assert "exists already" in str(dup.value)
            p = await fsvc.Put(kv_pb2.PutRequest(key=b"x", value=b"1", lease=77), MetaCtx(5))  # type: ignore[arg-type]
            assert p.kv.lease == 77
            with pytest.raises(MetaAborted) as missing:
                await svc.Put(kv_pb2.PutRequest(key=b"y", value=b"1", lease=78), MetaCtx(5))  # type: ignore[arg-type]
            assert missing.value.metadata["raftkv-error"] == "lease-not-found"
            await until(lambda: lead.fsm.get(b"x") is not None, "the put to apply on the leader")

            async def one() -> AsyncIterator[kv_pb2.LeaseKeepAliveRequest]:
                yield kv_pb2.LeaseKeepAliveRequest(ids=[77, 5], min_index=g.header.index)

            got = [r async for r in svc.LeaseKeepAlive(one(), MetaCtx(5))]  # type: ignore[arg-type]
            assert [(list(r.ids), list(r.ttls)) for r in got] == [([77, 5], [g.ttl, 0])]
            ttl = await svc.LeaseTimeToLive(kv_pb2.LeaseTimeToLiveRequest(id=77, keys=True), MetaCtx(5))  # type: ignore[arg-type]
            assert (ttl.granted_ttl, list(ttl.keys)) == (g.ttl, [b"x"]) and 0 < ttl.ttl <= g.ttl
            with pytest.raises(MetaAborted):  # the leader times the leases
                await fsvc.LeaseTimeToLive(kv_pb2.LeaseTimeToLiveRequest(id=77), MetaCtx(5))  # type: ignore[arg-type]
            listed = await fsvc.LeaseList(kv_pb2.LeaseListRequest(), MetaCtx(5))  # type: ignore[arg-type]
            assert list(listed.ids) == [77]
            r = await fsvc.LeaseRevoke(kv_pb2.LeaseRevokeRequest(id=77), MetaCtx(5))  # type: ignore[arg-type]
            assert list(r.deleted) == [b"x"] and r.header.revision == p.header.revision + 1
            gone = await svc.LeaseTimeToLive(kv_pb2.LeaseTimeToLiveRequest(id=77), MetaCtx(5))  # type: ignore[arg-type]
            assert gone.ttl == -1
            with pytest.raises(MetaAborted) as again:
                await svc.LeaseRevoke(kv_pb2.LeaseRevokeRequest(id=77), MetaCtx(5))  # type: ignore[arg-type]
            assert again.value.metadata["raftkv-error"] == "lease-not-found"
            del clock

    asyncio.run(main())


def test_an_expiry_revoke_never_ends_a_later_grant_of_the_same_id(tmp_path: Path) -> None:
    async def main() -> None:
        async with fake_cluster(tmp_path) as (c, _clock):
            lead = await c.leader()
            old = await grant(lead, 5, lease_id=9)
            a = await propose_applied(lead, lambda rid: LeaseRevoke(rid, 0, 0, 9))
            assert isinstance(a.result, LeaseRevokeResult)
            new = await grant(lead, 5, lease_id=9)
            stale = await propose_applied(lead, lambda rid: LeaseRevoke(rid, 0, 0, 9, old.stamp))
            assert getattr(stale.result, "kind", "") == "lease-not-found"
            assert lead.fsm.lease(9) is not None and new.stamp != old.stamp

    asyncio.run(main())
