"""MemoryNetwork / MemoryTransport beyond the shared conformance suite (``conformance.py``, run by
``test_conformance.py``): the fault hooks (partition, one-way block, heal, drop rate, delay, crashed nodes) that
node-level tests rely on, the codec round trip, and what is particular to this implementation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from raftkv.raft.types import Entry, Message, MsgType
from raftkv.storage.snapshots import SnapshotInfo, SnapshotReceiver
from raftkv.transport import MemoryNetwork, MemoryTransport

from .helpers import run


class Node:
    def __init__(self, net: MemoryNetwork, node_id: int) -> None:
        self.id = node_id
        self.batches: list[list[Message]] = []
        self.unreachable: list[int] = []
        self.t = MemoryTransport(net, node_id, self.batches.append, self.unreachable.append)

    def got(self, frm: int | None = None) -> list[int]:
        """The ``index`` of every message received (from ``frm``), in delivery order."""
        return [m.index for b in self.batches for m in b if frm is None or m.frm == frm]


def hb(frm: int, to: int, seq: int) -> Message:
    return Message(MsgType.HEARTBEAT, to=to, frm=frm, term=1, index=seq)


async def cluster(net: MemoryNetwork, n: int = 3) -> list[Node]:
    nodes = [Node(net, i) for i in range(1, n + 1)]
    addrs = {x.id: f"mem:{x.id}" for x in nodes}
    for x in nodes:
        x.t.set_peers(addrs)
        await x.t.start()
    return nodes


async def settle(seconds: float = 0.0) -> None:
    """Let every scheduled delivery and callback run."""
    await asyncio.sleep(seconds)
    for _ in range(5):
        await asyncio.sleep(0)


def send_all(nodes: list[Node], seq: int) -> None:
    """Every node sends one heartbeat to every other node, in one send() call."""
    for x in nodes:
        x.t.send([hb(x.id, y.id, seq) for y in nodes if y is not x])


def test_order_is_kept_per_link_even_with_random_delays() -> None:
    async def test() -> None:
        net = MemoryNetwork(seed=7, delay_s=(0.0, 0.02))
        a, b, c = await cluster(net)
        for i in range(200):
            a.t.send([hb(1, 2, i), hb(1, 3, i)])
            c.t.send([hb(3, 2, 1000 + i)])
            if i % 10 == 0:
                await asyncio.sleep(0.001)
        await settle(0.05)
        assert b.got(frm=1) == list(range(200))
        assert b.got(frm=3) == list(range(1000, 1200))
        assert c.got(frm=1) == list(range(200))
        for x in (a, b, c):
            await x.t.stop()

    run(test)


def test_partition_and_heal() -> None:
    async def test() -> None:
        net = MemoryNetwork()
        a, b, c = await cluster(net)
        net.partition([{1, 2}, {3}])
        assert net.can_reach(1, 2) and not net.can_reach(1, 3) and not net.can_reach(3, 2)
        send_all([a, b, c], 1)
        await settle()
        assert a.got() == [1] and b.got() == [1] and c.got() == []
        assert a.unreachable == [3] and b.unreachable == [3] and sorted(c.unreachable) == [1, 2]
        assert a.t.peer_status()[3].frames_dropped == 1 and "cut" in a.t.peer_status()[3].last_error
        assert not a.t.peer_status()[3].connected and a.t.peer_status()[2].connected

        net.heal()
        send_all([a, b, c], 2)
        await settle()
        assert a.got() == [1, 2, 2] and c.got() == [2, 2]

        net.partition([{1}, {2, 3}])  # a new partition replaces the old one
        send_all([a, b, c], 3)
        await settle()
        assert a.got() == [1, 2, 2] and b.got(frm=3)[-1] == 3 and c.got(frm=2)[-1] == 3

        net.partition([{1, 2}])  # a node in no group is cut off from everyone
        assert not net.can_reach(3, 1) and not net.can_reach(2, 3) and net.can_reach(2, 1)
        with pytest.raises(ValueError):
            net.partition([{1, 2}, {2, 3}])
        for x in (a, b, c):
            await x.t.stop()

    run(test)


def test_block_is_one_directional() -> None:
    async def test() -> None:
        net = MemoryNetwork()
        a, b, c = await cluster(net)
        net.block(1, 2)
        a.t.send([hb(1, 2, 1)])
        b.t.send([hb(2, 1, 2)])
        await settle()
        assert b.got() == [] and a.got() == [2]
        assert a.unreachable == [2] and b.unreachable == []
        net.unblock(1, 2)
        a.t.send([hb(1, 2, 3)])
        net.block(2, 1)
        net.block(3, 1)
        net.heal()  # heal removes every block
        b.t.send([hb(2, 1, 4)])
        c.t.send([hb(3, 1, 5)])
        await settle()
        assert b.got() == [3] and a.got() == [2, 4, 5]
        for x in (a, b, c):
            await x.t.stop()

    run(test)


def test_a_cut_also_loses_what_was_in_flight() -> None:
    async def test() -> None:
        net = MemoryNetwork(delay_s=(0.02, 0.02))
        a, b, _c = await cluster(net)
        a.t.send([hb(1, 2, 1)])
        net.partition([{1}, {2, 3}])
        await settle(0.04)
        assert b.got() == [] and net.frames_lost == 1
        net.heal()
        a.t.send([hb(1, 2, 2)])
        await settle(0.04)
        assert b.got() == [2] and net.frames_delivered == 1
        for x in (a, b, _c):
            await x.t.stop()

    run(test)


def test_stopped_node_receives_nothing_and_can_be_replaced() -> None:
    async def test() -> None:
        net = MemoryNetwork(delay_s=(0.01, 0.01))
        a, b, c = await cluster(net)
        a.t.send([hb(1, 2, 1)])  # in flight when b crashes
        await b.t.stop()
        await b.t.stop()  # idempotent
        a.t.send([hb(1, 2, 2)])
        b.t.send([hb(2, 1, 3)])  # a stopped transport sends nothing either
        await settle(0.03)
        assert b.got() == [] and a.got() == []
        assert a.unreachable == [2] and a.t.peer_status()[2].frames_dropped == 1
        assert "not running" in a.t.peer_status()[2].last_error
        with pytest.raises(RuntimeError):
            await b.t.start()

        b2 = Node(net, 2)  # the restarted node: a new transport with the same id
        b2.t.set_peers({1: "mem:1", 3: "mem:3"})
        await b2.t.start()
        with pytest.raises(RuntimeError):  # two live transports cannot share an id
            await Node(net, 2).t.start()
        a.t.send([hb(1, 2, 4)])
        await settle(0.03)
        assert b2.got() == [4]
        for x in (a, c, b2):
            await x.t.stop()

    run(test)


def test_drop_rate_loses_silently_and_is_seeded() -> None:
    async def scenario(seed: int) -> list[int]:
        net = MemoryNetwork(seed=seed, drop_rate=0.5)
        a, b = await cluster(net, 2)
        for i in range(200):
            a.t.send([hb(1, 2, i)])
        await settle()
        assert a.unreachable == [] and a.t.peer_status()[2].frames_dropped == 0, "the sender cannot tell"
        assert net.frames_lost + net.frames_delivered == 200
        await a.t.stop()
        await b.t.stop()
        return b.got()

    async def test() -> None:
        first = await scenario(1)
        assert 50 < len(first) < 150 and first == sorted(first)
        assert await scenario(1) == first, "the same seed loses the same messages"
        assert await scenario(2) != first

    run(test)


def test_roundtrip_codec_sends_every_batch_through_the_wire_format() -> None:
    async def test() -> None:
        net = MemoryNetwork(roundtrip_codec=True)
        a, b = await cluster(net, 2)
        sent = Message(MsgType.APP, to=2, frm=1, index=3, entries=(Entry(1, 4, data=b"x" * 100),))
        a.t.send([sent, Message(MsgType.HUP, to=2, frm=1)])
        await settle()
        assert b.batches == [[sent]] and b.batches[0][0] is not sent, "decoded: an equal copy"
        await a.t.stop()
        await b.t.stop()

    run(test)


def test_snapshot_arguments_go_together(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="go together"):
        MemoryTransport(MemoryNetwork(), 1, print, print, snapshot_dir=tmp_path)


def test_no_snapshot_crosses_a_cut_link(tmp_path: Path, small_snapshot: SnapshotInfo) -> None:
    net = MemoryNetwork()
    told: list[Path] = []
    a = MemoryTransport(net, 1, print, print)
    b = MemoryTransport(
        net, 2, print, print, on_snapshot=lambda frm, p: told.append(p), snapshot_dir=tmp_path / "b",
        snapshot_sink=SnapshotReceiver.open,
    )  # fmt: skip

    async def test() -> None:
        for t in (a, b):
            t.set_peers({1: "a", 2: "b"})
            await t.start()
        net.partition([[1], [2]])
        assert not await a.send_snapshot(2, small_snapshot.path), "partitioned away"
        net.heal()
        net.block(1, 2)
        assert not await a.send_snapshot(2, small_snapshot.path), "blocked one way"
        net.heal()
        assert await a.send_snapshot(2, small_snapshot.path)
        for t in (a, b):
            await t.stop()

    run(test)
    assert told == [tmp_path / "b" / small_snapshot.path.name]
