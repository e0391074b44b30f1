"""The asyncio driver (raftkv.node) in one process: three Nodes with LMDB stores on the in-memory transport."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from raftkv.clock import Clock
from raftkv.errors import NotLeader, Unavailable
from raftkv.kv import Applied, Delete, DeleteResult, KVStateMachine, Put, PutResult
from raftkv.kv.vclock import VectorClock
from raftkv.node import Node
from raftkv.raft import MsgType, StateRole
from raftkv.settings import Member, Settings
from raftkv.storage import DurableStorageError, LmdbLogStore
from raftkv.storage.snapshots import SnapshotReceiver
from raftkv.transport import MemoryNetwork, MemoryTransport


class Cluster:
    def __init__(self, tmp: Path, n: int = 3, *, clock: Clock | None = None, **settings: Any) -> None:
        self.tmp = tmp
        self.clock = clock
        self.net = MemoryNetwork()
        self.settings = settings
        self.members = tuple(Member(i, f"127.0.0.1:{7000 + i}", f"127.0.0.1:{8000 + i}") for i in range(1, n + 1))
        self.nodes: dict[int, Node] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.stores: list[LmdbLogStore] = []
        for m in self.members:
            self.make_node(m.id, self.members)

    def make_node(self, nid: int, members: tuple[Member, ...], **extra: Any) -> Node:
        s = Settings(id=nid, data_dir=self.tmp / f"n{nid}", members=members, tick_ms=10, sync=False,
                     **{**self.settings, **extra})
        store = LmdbLogStore(self.tmp / f"n{nid}" / "raft", sync=False)
        self.stores.append(store)
        holder: list[Node] = []
        t = MemoryTransport(
            self.net, nid, lambda msgs, h=holder: h[0].on_messages(msgs), lambda p, h=holder: h[0].on_unreachable(p),
            on_snapshot=lambda frm, path, h=holder: h[0].on_snapshot_received(frm, path),
            snapshot_dir=self.tmp / f"n{nid}" / "snapshots", snapshot_sink=SnapshotReceiver.open,
            on_removed=lambda peer, h=holder: h[0].on_removed(peer),
        )
        node = Node(s, store, KVStateMachine(store), t, clock=self.clock)
        holder.append(node)
        self.nodes[nid] = node
        return node

    async def start_node(self, nid: int) -> None:
        node = self.nodes[nid]
        await node.transport.start()
        self.tasks[nid] = asyncio.create_task(node.run())

    async def start(self) -> None:
        for nid, node in self.nodes.items():
            await node.transport.start()
            self.tasks[nid] = asyncio.create_task(node.run())

    async def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        for node in self.nodes.values():
            await node.transport.stop()
            node.close()
        for s in self.stores:
            s.close()

    async def leader(self, timeout_s: float = 10.0) -> Node:
        async with asyncio.timeout(timeout_s):
            while True:
                live = [n for n in self.nodes.values() if not n.removed]
                leaders = [n for n in live if n.role == StateRole.LEADER]
                if (
                    len(leaders) == 1
                    and all(n.leader_id == leaders[0].id for n in live)
                    and leaders[0].raw.raft.committed_entry_in_current_term()
                ):
                    return leaders[0]
                await asyncio.sleep(0.01)


async def propose_applied(node: Node, make: Callable[[int], Any]) -> Applied:
    """Propose through ``node`` and return the ``Applied``: the result and the log index it was applied at."""
    rid, fut = node.submit(make)
    try:
        return await fut
    finally:
        node.forget(rid)


def with_cluster(
    body: Callable[[Cluster], Awaitable[None]], **settings: Any
) -> Callable[[Path], None]:
    """Turn ``async def body(cluster)`` into a test that runs it against a fresh 3-node cluster."""

    def test(tmp_path: Path) -> None:
        async def main() -> None:
            c = Cluster(tmp_path, **settings)
            await c.start()
            try:
                await asyncio.wait_for(body(c), 60)
            finally:
                await c.stop()

        asyncio.run(main())

    test.__name__ = body.__name__
    test.__doc__ = body.__doc__
    return test


@with_cluster
async def test_concurrent_puts_are_batched_and_applied_everywhere(cluster: Cluster) -> None:
    lead = await cluster.leader()
    applied = await asyncio.gather(
        *(propose_applied(lead, lambda rid, i=i: Put(rid, 0, 0, b"k%d" % i, b"v%d" % i)) for i in range(200))
    )
    results = [a.result for a in applied]
    assert all(isinstance(r, PutResult) for r in results)
    assert lead.replica.stats.commands_proposed == 200
    assert lead.replica.stats.batches_proposed < 200  # many commands per log entry
    # One revision per write, even where several writes share a log entry.
    assert sorted(r.kv.mod_revision for r in results) == list(range(1, 201))  # type: ignore[union-attr]
    assert len({a.index for a in applied}) < 200
    top = max(a.index for a in applied)
    for node in cluster.nodes.values():
        await asyncio.wait_for(node.wait_applied(top), 5)
        for i in (0, 99, 199):
            _, kv = node.fsm_get(b"k%d" % i)
            assert kv is not None and kv.value == b"v%d" % i
    # Replicas are identical, byte for byte.
    assert len({n.fsm.checksum() for n in cluster.nodes.values()}) == 1


async def _follower_refuses_writes_with_the_leaders_address(cluster: Cluster) -> None:
    lead = await cluster.leader()
    f = next(n for n in cluster.nodes.values() if n is not lead)
    with pytest.raises(NotLeader) as e:
        await f.propose(lambda rid: Put(rid, 0, 0, b"k", b"v"))
    assert e.value.leader_id == lead.id and e.value.leader_addr == f"127.0.0.1:{8000 + lead.id}"


test_without_forwarding_a_follower_refuses_writes_with_the_leaders_address = with_cluster(
    _follower_refuses_writes_with_the_leaders_address, forward_proposals=False
)


@with_cluster
async def test_followers_forward_writes_to_the_leader(cluster: Cluster) -> None:
    lead = await cluster.leader()
    followers = [n for n in cluster.nodes.values() if n is not lead]
    applied = await asyncio.gather(*(
        propose_applied(followers[i % 2], lambda rid, i=i: Put(rid, 0, 0, b"f%d" % i, b"v%d" % i)) for i in range(100)
    ))
    results = [a.result for a in applied]
    assert all(isinstance(r, PutResult) for r in results)
    # The vector clock names the node that took the write (the proposer in the log entry), not the leader.
    r0 = results[0]
    assert isinstance(r0, PutResult) and r0.kv.vclock == VectorClock({followers[0].id: r0.kv.mod_revision})
    assert sum(f.replica.stats.commands_forwarded for f in followers) == 100
    assert lead.replica.stats.commands_forwarded == 0
    top = max(a.index for a in applied)
    for node in cluster.nodes.values():
        await asyncio.wait_for(node.wait_applied(top), 5)
        _, kv = node.fsm_get(b"f99")
        assert kv is not None and kv.value == b"v99"
    assert len({n.fsm.checksum() for n in cluster.nodes.values()}) == 1


@with_cluster
async def test_a_forwarded_write_fails_fast_when_the_leader_changes(cluster: Cluster) -> None:
    """The old leader is cut off, so the forwarded write is lost; the follower says so when it sees the new leader,
    not at some deadline (Node.propose has none: without this the test hangs until wait_for gives up)."""
    lead = await cluster.leader()
    f = next(n for n in cluster.nodes.values() if n is not lead)
    cluster.net.partition([[lead.id], [n for n in cluster.nodes if n != lead.id]])
    pending = asyncio.ensure_future(f.propose(lambda rid: Put(rid, 0, 0, b"k", b"v")))
    with pytest.raises(Unavailable, match="may or may not have been applied"):
        await asyncio.wait_for(pending, 20)
    assert f.leader_id != lead.id
    assert not f.tracked()  # nothing left behind


async def _the_leader_keeps_one_batch_in_flight(cluster: Cluster) -> None:
    lead = await cluster.leader()
    raw = lead.raw
    seen: list[int] = []
    propose_many = raw.propose_many

    def spy(datas: list[bytes]) -> None:
        seen.append(raw.raft.log.last_index() - raw.raft.log.committed)
        propose_many(datas)

    raw.propose_many = spy  # type: ignore[method-assign]

    async def put(i: int) -> Any:
        await asyncio.sleep(i % 7 * 0.001)  # arrive over several turns of the node loop
        return await lead.propose(lambda rid: Put(rid, 0, 0, b"p%d" % i, b"v"))

    results = await asyncio.gather(*(put(i) for i in range(300)))
    assert all(isinstance(r, PutResult) for r in results)
    assert seen and max(seen) == 0  # a new batch only once the previous one committed
    assert len(seen) < 300


test_the_leader_proposes_a_new_batch_only_when_the_last_committed = with_cluster(
    _the_leader_keeps_one_batch_in_flight, max_inflight_proposals=1
)


@with_cluster
async def test_linearizable_read_index_on_a_follower_sees_acknowledged_writes(cluster: Cluster) -> None:
    lead = await cluster.leader()
    a = await propose_applied(lead, lambda rid: Put(rid, 0, 0, b"x", b"1"))
    f = next(n for n in cluster.nodes.values() if n is not lead)
    reads = await asyncio.gather(*(f.read_index() for _ in range(20)))
    assert min(reads) >= a.index
    _, kv = f.fsm_get(b"x")
    assert kv is not None and kv.value == b"1"
    assert f.replica.stats.read_rounds < 20  # concurrent reads share rounds


@with_cluster
async def test_reads_arriving_one_by_one_on_a_follower_share_read_index_requests(cluster: Cluster) -> None:
    """Reads that arrive one by one while the follower's request to the leader is unanswered wait and share its
    next request (max_inflight_read_requests = 1): far fewer requests than reads."""
    lead = await cluster.leader()
    a = await propose_applied(lead, lambda rid: Put(rid, 0, 0, b"y", b"1"))
    f = next(n for n in cluster.nodes.values() if n is not lead)
    cluster.net.delay_s = (0.005, 0.005)  # a round trip to the leader takes 10 ms; a read arrives every millisecond
    before = f.replica.stats.read_rounds

    async def staggered(i: int) -> int:
        await asyncio.sleep(0.001 * i)
        return await f.read_index()

    reads = await asyncio.gather(*(staggered(i) for i in range(60)))
    cluster.net.delay_s = (0.0, 0.0)
    assert min(reads) >= a.index
    assert f.replica.stats.read_rounds - before <= 15, f.replica.stats.read_rounds - before


@with_cluster
async def test_a_lost_read_index_request_does_not_hold_later_reads_back(cluster: Cluster) -> None:
    lead = await cluster.leader()
    f = next(n for n in cluster.nodes.values() if n is not lead)
    cluster.net.block(f.id, lead.id)
    sent = asyncio.Event()
    send = f.transport.send

    def spy(msgs: Any) -> None:
        if any(m.type == MsgType.READ_INDEX for m in msgs):
            sent.set()
        send(msgs)

    f.transport.send = spy  # type: ignore[method-assign]
    lost = asyncio.ensure_future(f.read_index())
    await asyncio.wait_for(sent.wait(), 10)  # its request to the leader went out on the blocked link: dropped
    f.transport.send = send  # type: ignore[method-assign]
    cluster.net.unblock(f.id, lead.id)
    # After an election timeout the lost request no longer counts against max_inflight_read_requests.
    index = await asyncio.wait_for(f.read_index(), 5.0)
    assert index >= 1
    assert not lost.done()  # nobody answered it: it waits for its caller's deadline (or a leader change)
    lost.cancel()


@with_cluster
async def test_proposals_lost_in_a_partition_fail_or_time_out_but_never_report_success(cluster: Cluster) -> None:
    lead = await cluster.leader()
    others = [n.id for n in cluster.nodes.values() if n is not lead]
    cluster.net.partition([[lead.id], others])
    pending = asyncio.ensure_future(lead.propose(lambda rid: Put(rid, 0, 0, b"lost", b"?")))
    new = None
    async with asyncio.timeout(10):
        while new is None:
            await asyncio.sleep(0.02)
            cand = [cluster.nodes[i] for i in others if cluster.nodes[i].role == StateRole.LEADER]
            new = cand[0] if cand else None
    await new.propose(lambda rid: Put(rid, 0, 0, b"won", b"1"))
    cluster.net.heal()
    with pytest.raises((Unavailable, NotLeader, TimeoutError)):
        await asyncio.wait_for(pending, 10)
    for node in cluster.nodes.values():
        await asyncio.wait_for(node.wait_applied(new.applied), 10)
        _, kv = node.fsm_get(b"lost")
        assert kv is None


@with_cluster
async def test_delete_and_results(cluster: Cluster) -> None:
    lead = await cluster.leader()
    await lead.propose(lambda rid: Put(rid, 0, 0, b"d", b"1"))
    r = await lead.propose(lambda rid: Delete(rid, 0, 0, b"d"))
    assert isinstance(r, DeleteResult) and r.deleted
    r2 = await lead.propose(lambda rid: Delete(rid, 0, 0, b"d"))
    assert isinstance(r2, DeleteResult) and not r2.deleted


async def until(pred: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Wait (polling, bounded) until ``pred()`` holds; fail naming ``what`` otherwise."""
    try:
        async with asyncio.timeout(timeout_s):
            while not pred():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}") from None


async def _membership_and_snapshot_catch_up(cluster: Cluster) -> None:
    """Issue 7 in one process: compaction, a new node that can only catch up by snapshot, promotion, removal of the
    leader (which hands over), all with replicas identical byte for byte."""
    from raftkv.kv import MemberInfo
    from raftkv.raft import ConfChangeType

    lead = await cluster.leader()
    for i in range(400):
        await lead.propose(lambda rid, i=i: Put(rid, 0, 0, b"k%d" % (i % 50), b"v%d" % i))
    await until(lambda: lead.store.first_index() > 100, "the leader to compact its log")
    # A new node joins: the log it would need is gone, so it gets a snapshot of the state.
    m4 = Member(4, "127.0.0.1:7004", "127.0.0.1:8004")
    res = await lead.change_membership(ConfChangeType.ADD_LEARNER, MemberInfo(4, m4.peer_addr, m4.client_addr))
    assert res.changed and 4 in res.conf_state.learners
    n4 = cluster.make_node(4, (*cluster.members, m4), join=True, join_cluster_id=lead.settings.cluster_id)
    await cluster.start_node(4)
    await until(lambda: n4.applied >= lead.applied, "node 4 to catch up")
    assert n4.replica.stats.snapshots_installed >= 1 and lead.stats.snapshots_sent >= 1
    _, kv = n4.fsm_get(b"k7")
    assert kv is not None and kv.value == b"v357"
    await lead.change_membership(ConfChangeType.ADD_VOTER, MemberInfo(4, "", ""))
    await until(lambda: sorted(n4.raw.raft.trk.voters) == [1, 2, 3, 4], "node 4 to apply its promotion")
    # Remove the leader: it steers the change through, then hands over.
    old = lead.id
    await lead.change_membership(ConfChangeType.REMOVE_NODE, MemberInfo(old, "", ""))
    await until(lambda: cluster.nodes[old].role != StateRole.LEADER, "the removed leader to step down")
    new = await cluster.leader()
    assert new.id != old and old not in new.raw.raft.trk.voters
    await new.propose(lambda rid: Put(rid, 0, 0, b"after", b"removal"))
    live = [n for n in cluster.nodes.values() if n.id != old]
    await until(lambda: len({n.applied for n in live}) == 1, "the remaining replicas to converge")
    # Byte for byte identical once every node applied the same entries. ``applied`` moves just after the apply
    # transaction commits, so equal ``applied`` values can hide a store that already holds the next entry: wait for
    # the checksums to agree (replicas that really diverged never do, and until fails).
    await until(lambda: len({n.fsm.checksum() for n in live}) == 1, "the replicas' checksums to agree")


test_membership_and_snapshot_catch_up = with_cluster(
    _membership_and_snapshot_catch_up, compact_after_entries=50, compact_keep_entries=10
)


def test_a_restarted_node_does_not_reuse_request_ids(tmp_path: Path) -> None:
    """An entry proposed by a node's previous incarnation can still commit after the node restarts, and is then
    matched to a waiter by (proposer, request id): a new incarnation must not hand out the ids of the old one, or
    it would answer a new request with an old command's result (and acknowledge a write that may never commit)."""

    async def main() -> None:
        firsts = []
        for _ in range(3):
            c = Cluster(tmp_path, n=3)
            # Request ids, read ids and read-index contexts all come from one counter of the replica.
            firsts.append(c.nodes[1].replica.read())
            await c.stop()
        assert len(set(firsts)) == 3, firsts

    asyncio.run(main())


def test_a_two_voter_cluster_is_not_shrunk_to_one_voter_unless_forced(tmp_path: Path) -> None:
    """Judged by the node when it proposes the change (against the membership it applies to), so a check made
    earlier, while another change was still pending, cannot let it through."""
    from raftkv.errors import InvalidArgument
    from raftkv.kv import MemberInfo
    from raftkv.raft import ConfChangeType

    async def main() -> None:
        c = Cluster(tmp_path, n=2)
        await c.start()
        try:
            lead = await c.leader()
            other = next(i for i in c.nodes if i != lead.id)
            with pytest.raises(InvalidArgument, match="2-voter"):
                await lead.change_membership(ConfChangeType.REMOVE_NODE, MemberInfo(other, "", ""))
            with pytest.raises(InvalidArgument, match="2-voter"):  # demoting to learner shrinks the voters too
                await lead.change_membership(ConfChangeType.ADD_LEARNER, MemberInfo(other, "", ""))
            assert sorted(lead.raw.raft.trk.voters) == sorted(c.nodes)
            res = await lead.change_membership(ConfChangeType.REMOVE_NODE, MemberInfo(other, "", ""), force=True)
            assert res.changed and res.conf_state.voters == (lead.id,)
        finally:
            await c.stop()

    asyncio.run(main())


async def _pipelined_writes_keep_replicas_identical(cluster: Cluster) -> None:
    lead = await cluster.leader()
    applied: list[Applied] = []
    for wave in range(5):  # writes through every node, so followers' Readys overlap too
        applied += await asyncio.gather(*(
            propose_applied(
                node, lambda rid, w=wave, i=i, n=node.id: Put(rid, 0, 0, b"k%d" % (i % 50), b"%d/%d/%d" % (w, n, i))
            )
            for node in cluster.nodes.values() for i in range(100)
        ))
    assert all(isinstance(a.result, PutResult) for a in applied)
    assert sum(n.stats.pipelined_readys for n in cluster.nodes.values()) > 0, "no Ready was taken during a write"
    top = max(a.index for a in applied)
    for node in cluster.nodes.values():
        await asyncio.wait_for(node.wait_applied(top), 5)
    assert len({n.fsm.checksum() for n in cluster.nodes.values()}) == 1
    assert lead.replica.stats.commands_proposed > 0


test_pipelined_writes_keep_replicas_identical = with_cluster(
    # A 500 ms election timeout: on a busy machine one loop running three nodes can stall past 100 ms.
    _pipelined_writes_keep_replicas_identical, max_inflight_writes=4, max_inflight_proposals=0, election_ticks=50
)


async def _no_write_is_made_after_a_failed_one(cluster: Cluster) -> None:
    """Writes queued behind a failed one must not run: their entries would follow a gap in the log."""
    lead = await cluster.leader()
    store = lead.store
    real_write = store.write
    calls_after_failure = 0
    failed = False

    def failing_write(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls_after_failure, failed
        if failed:
            calls_after_failure += 1
            return real_write(*args, **kwargs)
        if kwargs.get("entries"):
            failed = True
            time.sleep(0.2)  # long enough for the loop to queue more writes behind this one
            raise DurableStorageError("injected write failure", store.path)
        return real_write(*args, **kwargs)

    store.write = failing_write  # type: ignore[method-assign]
    puts = [asyncio.ensure_future(lead.propose(lambda rid, i=i: Put(rid, 0, 0, b"k%d" % i, b"v"))) for i in range(3)]
    await asyncio.sleep(0.05)
    puts += [asyncio.ensure_future(lead.propose(lambda rid, i=i: Put(rid, 0, 0, b"j%d" % i, b"v"))) for i in range(3)]
    done, pending = await asyncio.wait(puts, timeout=10)
    for p in pending:
        p.cancel()
    assert all(p.exception() is not None for p in done)  # none succeeded (and every exception is retrieved)
    async with asyncio.timeout(5):
        while not lead.read_only_reason:
            await asyncio.sleep(0.01)
    assert failed
    assert calls_after_failure == 0
    assert lead.stats.pipelined_readys > 0, "the failed write had nothing queued behind it: the test proves nothing"


test_no_write_is_made_after_a_failed_one = with_cluster(_no_write_is_made_after_a_failed_one, max_inflight_writes=2)


@with_cluster
async def test_a_stalled_event_loop_is_counted(cluster: Cluster) -> None:
    lead = await cluster.leader()
    before = lead.stats.loop_lags_over_50ms
    await asyncio.sleep(0.02)  # let the ticker start its next sleep
    time.sleep(0.2)  # block the loop every node runs on
    await asyncio.sleep(0.05)
    assert lead.stats.loop_lags_over_50ms > before
    assert lead.stats.loop_lag_max_us >= 100_000
