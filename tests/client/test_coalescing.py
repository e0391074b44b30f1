"""The client's coalescing of concurrent operations into Batch RPCs, against the fake server: who goes alone and who
shares a batch, per-operation results and errors, the fallback for servers without Batch, exactly-once when a
batch's reply is lost, and that an attempt made in a batch counts for the write's outcome as a unary attempt does.

No timing: ``asyncio.gather`` starts every operation in the same event loop turn, before any reply can arrive, so
the first ``Client.coalesce_max_inflight`` operations go out alone and the rest queue for one batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

import grpc
import pytest

from raftkv.client import Client, PutResult, SyncClient
from raftkv.errors import ConditionFailed, InvalidArgument, NotLeader, RaftKVError, Timeout, Unavailable

from .fake_server import FakeKV, FakeServer, free_port, run

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")
ALONE = Client.coalesce_max_inflight  # how many of a burst go out at once, as unary calls


@pytest.fixture
def srv() -> Iterator[FakeServer]:
    kv = FakeKV(node_id=1)
    kv.batch = True
    with FakeServer(kv) as s:
        yield s


def idle(c: Client) -> bool:
    """No slot held, nothing queued: what every coalescer must come back to."""
    return all(co.inflight == 0 and not co.queue for co in c._coalescers.values())


async def outcomes(aws: list[Awaitable[Any]]) -> list[Any]:
    return list(await asyncio.gather(*aws, return_exceptions=True))


def ten_puts(addr: str, timeout_s: float, *, check_idle: bool = True) -> list[Any]:
    """Put k0..k9 concurrently through one coalescing client; each put's result or exception, in order."""

    async def go() -> list[Any]:
        async with Client([addr], timeout_s=timeout_s) as c:
            res = await outcomes([c.put(f"k{i}", "v") for i in range(10)])
            if check_idle:
                assert idle(c)
            return res

    return run(go)


# -- batching -----------------------------------------------------------------------------------------------------
def test_a_lone_operation_is_a_plain_unary_call(srv: FakeServer) -> None:
    async def go() -> None:
        async with Client([srv.addr]) as c:
            for i in range(5):
                await c.put(f"k{i}", "v")
                assert (await c.get(f"k{i}")) is not None
            await c.incr("n")
            await c.delete("k0")
            assert idle(c)

    run(go)
    assert srv.kv.calls["Batch"] == 0
    assert (srv.kv.calls["Put"], srv.kv.calls["Get"], srv.kv.calls["Incr"], srv.kv.calls["Delete"]) == (5, 5, 1, 1)


def test_concurrent_operations_share_batch_rpcs(srv: FakeServer) -> None:
    n = 60  # within the 64 lanes: every put starts at once

    async def go() -> None:
        async with Client([srv.addr], timeout_s=10) as c:
            puts = await asyncio.gather(*(c.put(f"k{i}", f"v{i}") for i in range(n)))
            assert all(isinstance(p, PutResult) for p in puts)
            assert c.seen_index == n
            gets = await asyncio.gather(*(c.get(f"k{i}") for i in range(n)))
            assert [kv.value if kv else None for kv in gets] == [f"v{i}".encode() for i in range(n)]
            incrs = await asyncio.gather(*(c.incr("counter") for _ in range(n)))
            assert sorted(incrs) == list(range(1, n + 1))
            dels = await asyncio.gather(*(c.delete(f"k{i}") for i in range(n)))
            assert all(d.deleted for d in dels)
            assert idle(c)

    run(go)
    kv = srv.kv
    for method in ("Put", "Get", "Incr", "Delete"):
        assert kv.calls[method] == ALONE, method  # the first ones went alone ...
        assert kv.calls[f"Batch.{method}"] == n - ALONE, method  # ... the others in a batch
    assert kv.calls["Batch"] == 4
    assert [len(b) for b in kv.batches] == [n - ALONE] * 4
    assert kv.applied == 3 * n
    assert kv.max_outstanding_per_session == 1
    assert len({(s.client_id, s.seq) for s in kv.sessions}) == 3 * n  # every write its own session pair, sent once


def test_a_batch_holds_at_most_coalesce_max_ops(srv: FakeServer) -> None:
    async def go() -> None:
        async with Client([srv.addr], timeout_s=10) as c:
            c.coalesce_max_ops = 10
            await asyncio.gather(*(c.put(f"k{i}", "v") for i in range(40)))
            assert idle(c)

    run(go)
    assert srv.kv.applied == 40
    assert max(len(b) for b in srv.kv.batches) == 10
    assert sum(len(b) for b in srv.kv.batches) + srv.kv.calls["Put"] == 40


def test_coalescing_can_be_turned_off(srv: FakeServer) -> None:
    async def go() -> None:
        async with Client([srv.addr], coalesce=False) as c:
            await asyncio.gather(*(c.put(f"k{i}", "v") for i in range(20)))

    run(go)
    assert (srv.kv.calls["Batch"], srv.kv.calls["Put"]) == (0, 20)
    with SyncClient([srv.addr], coalesce=False) as sc:
        assert sc.client._coalesce is False


# -- per-operation results ----------------------------------------------------------------------------------------
def test_each_operation_of_a_batch_fails_or_succeeds_on_its_own(srv: FakeServer) -> None:
    srv.kv.key_errors = {b"k5": [InvalidArgument("k5 is bad")], b"k6": [ConditionFailed("k6 changed")]}

    res = ten_puts(srv.addr, 5)
    assert isinstance(res[5], InvalidArgument) and res[5].message == "k5 is bad"
    assert isinstance(res[6], ConditionFailed) and res[6].message == "k6 changed"
    assert all(isinstance(r, PutResult) for i, r in enumerate(res) if i not in (5, 6))
    seen = {s.key: s for s in srv.kv.sessions}
    assert seen[b"k5"].batched and seen[b"k6"].batched  # they failed inside a batch ...
    assert srv.kv.calls["Batch.Put"] == 10 - ALONE and srv.kv.calls["Put"] == ALONE  # ... and were not retried
    assert set(srv.kv.data) == {f"k{i}".encode() for i in range(10)} - {b"k5", b"k6"}


def test_a_batch_operation_told_not_leader_follows_the_redirect_with_the_same_session() -> None:
    with FakeServer(FakeKV(node_id=2)) as leader, FakeServer(FakeKV(node_id=1)) as follower:
        follower.kv.batch = leader.kv.batch = True
        follower.kv.mode = "follower"
        follower.kv.leader_id, follower.kv.leader_addr = 2, leader.addr

        async def go() -> None:
            async with Client([follower.addr], timeout_s=5) as c:
                await asyncio.gather(*(c.put(f"k{i}", "v") for i in range(10)))
                assert c.leader == leader.addr
                assert idle(c)

        run(go)
        assert follower.kv.calls["Batch"] == 1
        assert leader.kv.applied == 10
        first = {(s.client_id, s.seq) for s in follower.kv.sessions}
        assert first == {(s.client_id, s.seq) for s in leader.kv.sessions}


# -- servers without Batch ----------------------------------------------------------------------------------------
def test_a_server_without_batch_gets_unary_calls_and_nothing_twice() -> None:
    with FakeServer(FakeKV(node_id=1)) as old:  # batch = False: Batch answers UNIMPLEMENTED
        assert old.kv.batch is False

        async def go() -> None:
            async with Client([old.addr], timeout_s=5) as c:
                await asyncio.gather(*(c.put(f"a{i}", "v") for i in range(20)))
                await asyncio.gather(*(c.get(f"a{i}") for i in range(20)))
                await asyncio.gather(*(c.put(f"b{i}", "v") for i in range(20)))
                assert not c._coalescers[old.addr].enabled
                assert idle(c)

        run(go)
        kv = old.kv
        assert kv.calls["Batch"] == 1  # tried once; then coalescing is off for this endpoint
        assert (kv.calls["Put"], kv.calls["Get"]) == (40, 20)
        assert kv.applied == 40
        pairs = [(s.client_id, s.seq) for s in kv.sessions]
        assert len(pairs) == len(set(pairs)) == 40  # each write sent once: the refused batch applied nothing


# -- exactly-once and unknown outcomes ----------------------------------------------------------------------------
def test_a_batch_whose_reply_is_lost_is_retried_and_applied_once(srv: FakeServer) -> None:
    srv.kv.lose_batch_reply = [(grpc.StatusCode.UNAVAILABLE, "connection reset by peer")]

    async def go() -> list[int]:
        async with Client([srv.addr], timeout_s=5) as c:
            res = await asyncio.gather(*(c.incr("counter") for _ in range(20)))
            assert idle(c)
            return res

    values = run(go)
    kv = srv.kv
    assert sorted(values) == list(range(1, 21))  # the retries were answered from the session table
    assert kv.data[b"counter"].value == b"20"
    assert kv.applied == 20
    batched = {(s.client_id, s.seq) for s in kv.sessions if s.batched}
    assert len(batched) == 20 - ALONE
    retried = [(s.client_id, s.seq) for s in kv.sessions if not s.batched and (s.client_id, s.seq) in batched]
    assert sorted(retried) == sorted(batched)  # each batched incr was retried once, alone, with its session


def _definite_failures_after_the_batch(kv: FakeKV) -> None:
    """From now on every write attempt fails definitely (a follower that knows no leader address)."""

    def switch() -> None:
        kv.mode = "follower"
        kv.leader_id, kv.leader_addr = 0, ""

    kv.after_batch = switch


def test_a_lost_batch_leaves_its_writes_outcome_unknown(srv: FakeServer) -> None:
    """The batch may have applied its writes; when every retry then fails definitely, each write must still end
    as Timeout(outcome_unknown=True), never as a definite failure."""
    srv.kv.lose_batch_reply = [(grpc.StatusCode.UNAVAILABLE, "connection reset by peer")]
    _definite_failures_after_the_batch(srv.kv)

    res = ten_puts(srv.addr, 1.0)
    assert srv.kv.calls["Batch"] == 1
    for r in res[ALONE:]:  # the batched ones
        assert isinstance(r, Timeout) and r.outcome_unknown, r
    for r in res[:ALONE]:  # alone: applied, or refused definitely if the batch was served first
        assert isinstance(r, PutResult) or (isinstance(r, Unavailable) and not isinstance(r, Timeout)), r


def test_a_batch_operations_own_error_decides_its_outcome(srv: FakeServer) -> None:
    srv.kv.key_errors = {
        b"k4": [Timeout("slow", outcome_unknown=True)],  # may have applied
        b"k5": [Unavailable("leader changed after proposing", applied="unknown")],  # the server says: may have
        b"k6": [NotLeader(0, "")],  # certainly not applied
        b"k7": [Timeout("queue full", outcome_unknown=False)],  # certainly not applied
        b"k8": [Unavailable("no leader is known yet")],  # the server says: certainly not applied
    }
    _definite_failures_after_the_batch(srv.kv)

    res = ten_puts(srv.addr, 1.0, check_idle=False)
    assert srv.kv.calls["Batch"] == 1
    for i in (4, 5):
        assert isinstance(res[i], Timeout) and res[i].outcome_unknown, (i, res[i])
    for i in (6, 7, 8):
        assert isinstance(res[i], RaftKVError) and not getattr(res[i], "outcome_unknown", False), (i, res[i])
        assert isinstance(res[i], Unavailable | Timeout)
        assert res[i].applied == "no"  # type: ignore[union-attr]
    assert res[4].applied == res[5].applied == "unknown"  # type: ignore[union-attr]
    assert all(isinstance(res[i], PutResult) for i in (2, 3, 9))


def test_a_batch_that_never_reached_a_server_is_not_outcome_unknown() -> None:
    for r in ten_puts(f"127.0.0.1:{free_port()}", 0.5):
        assert isinstance(r, Unavailable), r


def test_a_dead_endpoint_in_front_fails_over_with_batches(srv: FakeServer) -> None:
    dead = f"127.0.0.1:{free_port()}"

    async def go() -> None:
        async with Client([dead, srv.addr], timeout_s=5) as c:
            await asyncio.gather(*(c.put(f"k{i}", "v") for i in range(20)))
            assert idle(c)

    run(go)
    assert srv.kv.applied == 20
    pairs = [(s.client_id, s.seq) for s in srv.kv.sessions]
    assert len(pairs) == len(set(pairs)) == 20


# -- cancellation and closing -------------------------------------------------------------------------------------
def test_cancelled_operations_leave_the_coalescer_usable(srv: FakeServer) -> None:
    srv.kv.delay_s = 0.2

    async def go() -> None:
        async with Client([srv.addr], timeout_s=10) as c:
            tasks = [asyncio.create_task(c.put(f"k{i}", "v")) for i in range(10)]
            await asyncio.sleep(0)  # every put has started: two alone, eight queued
            for t in tasks[4:]:
                t.cancel()
            res = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, PutResult) for r in res[:4])
            assert all(isinstance(r, asyncio.CancelledError) for r in res[4:])
            srv.kv.delay_s = 0
            await asyncio.gather(*(c.put(f"x{i}", "v") for i in range(10)))
            assert idle(c)

    run(go)
    assert {f"k{i}".encode() for i in range(4)} <= set(srv.kv.data)
    assert {f"x{i}".encode() for i in range(10)} <= set(srv.kv.data)


def test_closing_the_client_fails_queued_operations(srv: FakeServer) -> None:
    srv.kv.delay_s = 0.2

    async def go() -> list[Any]:
        c = Client([srv.addr], timeout_s=10)
        tasks = [asyncio.create_task(c.put(f"k{i}", "v")) for i in range(6)]
        await asyncio.sleep(0)
        await c.aclose()
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    res = run(go)
    # The queued ones were never sent: they fail as a call on a closed client does. (The calls in flight are
    # cancelled with the channel, as they always were.)
    for r in res[ALONE:]:
        assert isinstance(r, RaftKVError) and "closed" in r.message, r
