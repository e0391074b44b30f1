"""GrpcTransport beyond the shared conformance suite (``conformance.py``, run by ``test_conformance.py``): uvloop,
coalescing, the same sender reconnecting, peers of another cluster or at a wrong address, corrupt input, bounded
queues and sending before start, the sender task of a removed peer, stop() unwinding gRPC's handlers, the listen
port.

Every test runs its own event loop (``run``) with a deadline and stops every transport in a ``finally``; ports are
picked at run time. Timing only bounds waits here (``wait_until``); no assertion depends on speed.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import grpc
import pytest

from raftkv.codec import encode_messages
from raftkv.proto.v1 import raft_pb2, raft_pb2_grpc
from raftkv.raft.types import Message, MsgType
from raftkv.transport import GrpcTransport, ListenError

from .helpers import app, free_port, heartbeat, run, wait_until

FAST_BACKOFF = (0.02, 0.2)


class Node:
    """One GrpcTransport plus what its callbacks saw."""

    def __init__(self, node_id: int, port: int, cluster_id: str = "test-cluster", **kw: Any) -> None:
        self.id = node_id
        self.addr = f"127.0.0.1:{port}"
        self.batches: list[list[Message]] = []
        self.unreachable: list[int] = []
        self.t = GrpcTransport(
            node_id, cluster_id, self.addr, self.batches.append, self.unreachable.append,
            reconnect_backoff_s=kw.pop("reconnect_backoff_s", FAST_BACKOFF), **kw,
        )  # fmt: skip

    def received(self, frm: int | None = None) -> list[Message]:
        return [m for b in self.batches for m in b if frm is None or m.frm == frm]


async def stop_all(*nodes: Node) -> None:
    await asyncio.gather(*(n.t.stop() for n in nodes))


def connect(*nodes: Node) -> None:
    addrs = {n.id: n.addr for n in nodes}
    for n in nodes:
        n.t.set_peers(addrs)  # includes the node itself: ignored


async def started(*nodes: Node) -> None:
    for n in nodes:
        await n.t.start()
    await wait_until(
        lambda: all(st.connected for n in nodes for st in n.t.peer_status().values()), "all streams connected"
    )
    for n in nodes:
        n.unreachable.clear()  # peers started later were (rightly) reported unreachable until they came up


# -- delivery ------------------------------------------------------------------------------------------------------


def _exchange_test(rounds: int = 60) -> Callable[[], Coroutine[Any, Any, None]]:
    async def test() -> None:
        nodes = [Node(i, free_port()) for i in (1, 2, 3)]
        try:
            connect(*nodes)
            await started(*nodes)
            expected: dict[tuple[int, int], list[Message]] = {}
            for r in range(rounds):
                for n in nodes:
                    # one send() call carrying messages for both other nodes, interleaved, two per destination
                    makers: tuple[Callable[[int, int, int], Message], ...] = (app, heartbeat)
                    batch = [f(n.id, o.id, 10 * r + k) for k, f in enumerate(makers) for o in nodes if o is not n]
                    n.t.send(batch)
                    for m in batch:
                        expected.setdefault((m.frm, m.to), []).append(m)
                if r % 7 == 0:
                    await asyncio.sleep(0)  # sometimes let senders run between calls, sometimes pile up
            await wait_until(
                lambda: all(len(n.received()) == 4 * rounds for n in nodes), "every message arrives", timeout_s=10
            )
            for n in nodes:
                for o in nodes:
                    if o is not n:
                        assert n.received(frm=o.id) == expected[(o.id, n.id)], "order kept per pair, content intact"
                        st = o.t.peer_status()[n.id]
                        assert st.frames_dropped == 0 and st.connected
                        assert 1 <= st.frames_sent <= rounds and st.bytes_sent > 0
                        assert n.t.peer_status()[o.id].frames_received == st.frames_sent
                        assert n.t.peer_status()[o.id].last_recv_monotonic is not None
                assert n.unreachable == []
        finally:
            await stop_all(*nodes)

    return test


def test_three_nodes_exchange_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")
    test = _exchange_test(rounds=20)

    async def main() -> None:
        async with asyncio.timeout(15):
            await test()
        leftover = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        assert not leftover

    uvloop.run(main())


def test_a_burst_of_sends_is_coalesced_into_few_frames() -> None:
    async def test() -> None:
        a, b = Node(1, free_port()), Node(2, free_port())
        try:
            connect(a, b)
            await started(a, b)
            sent = [app(1, 2, i) for i in range(500)]
            for m in sent:  # 500 send() calls without yielding to the loop
                a.t.send([m])
            await wait_until(lambda: len(b.received()) == 500, "all 500 delivered")
            assert b.received() == sent
            assert a.t.peer_status()[2].frames_sent <= 5, "the sender coalesced the pending batches"
        finally:
            await stop_all(a, b)

    run(test)


# -- failures --------------------------------------------------------------------------------------------------------


def test_peer_down_then_up_without_restarting_the_sender() -> None:
    async def test() -> None:
        a, b = Node(1, free_port()), Node(2, free_port())
        try:
            connect(a, b)
            await a.t.start()  # b is down
            seq = 0
            while not a.unreachable:
                seq += 1
                a.t.send([heartbeat(1, 2, seq)])
                await asyncio.sleep(0.01)
            assert set(a.unreachable) == {2}
            await wait_until(lambda: a.t.peer_status()[2].frames_dropped > 0, "frames to a down peer are dropped")
            st = a.t.peer_status()[2]
            assert not st.connected and "UNAVAILABLE" in st.last_error and st.frames_sent == 0
            sender = a.t._outbound[2].task
            await asyncio.sleep(0.3)  # several failed attempts (back-off max 0.2 s)
            assert a.unreachable.count(2) < 20, "on_unreachable once per failure, not per frame"

            await b.t.start()

            async def flowing() -> None:
                nonlocal seq
                while not b.batches:
                    seq += 1
                    a.t.send([heartbeat(1, 2, seq)])
                    await asyncio.sleep(0.01)

            async with asyncio.timeout(5):
                await flowing()
            assert a.t._outbound[2].task is sender, "the same sender task reconnected"
            assert a.t.peer_status()[2].connected
            got = [m.index for m in b.received()]
            assert got == sorted(got), "still in order after the reconnection"
        finally:
            await stop_all(a, b)

    run(test)


def test_a_node_of_another_cluster_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="raftkv.transport")

    async def test() -> None:
        a = Node(1, free_port(), cluster_id="cluster-a")
        b = Node(2, free_port(), cluster_id="cluster-b")
        try:
            connect(a, b)
            await a.t.start()
            await b.t.start()
            # refused at the stream handshake already, before a single frame is sent
            await wait_until(lambda: "cluster id mismatch" in a.t.peer_status()[2].last_error, "refused")
            assert not a.t.peer_status()[2].connected and a.unreachable
            seq = 0
            async with asyncio.timeout(5):
                # several refused streams (a reconnects after each), unless b wrongly accepts a's messages
                while not b.batches and a.unreachable.count(2) < 3:
                    seq += 1
                    a.t.send([heartbeat(1, 2, seq), app(1, 2, seq)])
                    await asyncio.sleep(0.01)
            assert b.batches == [], "nothing from another cluster is delivered"
            err = a.t.peer_status()[2].last_error
            assert "FAILED_PRECONDITION" in err and "'cluster-a'" in err and "'cluster-b'" in err
            assert a.unreachable and set(a.unreachable) == {2}
        finally:
            await stop_all(a, b)

    run(test)
    refusals = [r for r in caplog.records if "cluster id mismatch" in r.getMessage() and r.levelno >= logging.WARNING]
    receiver_side = [r for r in refusals if r.getMessage().startswith("node 2: cluster id mismatch: node 1 ")]
    assert len(receiver_side) == 1, "the receiver logs a refusal once per peer, not once per stream or frame"


def test_corrupt_frames_and_local_messages_are_refused() -> None:
    async def test() -> None:
        b = Node(2, free_port())
        try:
            await b.t.start()
            async with grpc.aio.insecure_channel(b.addr) as channel:
                stub = raft_pb2_grpc.RaftPeerStub(channel)  # type: ignore[no-untyped-call]

                def frame(payload: bytes, to: int = 2) -> Any:
                    return raft_pb2.PeerFrame(to=to, cluster_id="test-cluster", messages=payload, **{"from": 7})

                call = stub.Stream()
                await call.write(frame(b"\x93garbage"))
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    async with asyncio.timeout(3):
                        await call
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

                call = stub.Stream()
                await call.write(frame(encode_messages([heartbeat(7, 2, 1)]), to=3))
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    async with asyncio.timeout(3):
                        await call
                assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "misrouted" in (info.value.details() or "")

                # a client that skips the handshake still meets the per-frame cluster check
                call = stub.Stream()
                foreign = raft_pb2.PeerFrame(
                    to=2, cluster_id="other", messages=encode_messages([heartbeat(7, 2, 1)]), **{"from": 7}
                )
                await call.write(foreign)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    async with asyncio.timeout(3):
                        await call
                assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "cluster id mismatch" in (info.value.details() or "")

                # local-only types (HUP, BEAT) never reach the node, the rest of the frame does
                call = stub.Stream()
                mixed = [Message(MsgType.HUP, to=2, frm=7), heartbeat(7, 2, 5), Message(MsgType.BEAT, to=2, frm=7)]
                await call.write(frame(encode_messages(mixed)))
                await call.done_writing()
                await call
            assert b.received() == [heartbeat(7, 2, 5)]
            assert b.t.peer_status()[7].frames_received == 1  # the refused frames were not counted
        finally:
            await b.t.stop()

    run(test)


def test_full_queue_drops_and_reports_unreachable() -> None:
    async def test() -> None:
        a, b = Node(1, free_port(), max_queue_frames=4), Node(2, free_port())
        try:
            connect(a, b)
            for i in range(10):  # before start: queued up to the bound, the rest dropped
                a.t.send([heartbeat(1, 2, i)])
            assert a.t.peer_status()[2].frames_dropped == 6
            await started(a, b)
            await wait_until(lambda: len(b.received()) == 4, "the queued frames are sent after start")
            assert [m.index for m in b.received()] == [0, 1, 2, 3]

            for i in range(10, 30):  # a burst without yielding: the sender cannot drain in between
                a.t.send([heartbeat(1, 2, i)])
            assert a.unreachable == [], "on_unreachable is never called from inside send()"
            await wait_until(lambda: len(b.received()) == 8, "the queued part of the burst arrives")
            assert a.unreachable == [2], "one (coalesced) report for the whole burst"
            assert a.t.peer_status()[2].frames_dropped == 6 + 16
            assert [m.index for m in b.received()][4:] == [10, 11, 12, 13]
        finally:
            await stop_all(a, b)

    run(test)


# -- membership ------------------------------------------------------------------------------------------------------


def test_a_wrong_address_is_refused_and_a_removed_peers_sender_ends() -> None:
    """A peer address that leads to another node is refused as misrouted by the node there; correcting it
    reconnects. A peer removed from the map has its sender task ended at once."""

    async def test() -> None:
        a, b, c = Node(1, free_port()), Node(2, free_port()), Node(3, free_port())
        try:
            for n in (a, b, c):
                await n.t.start()
            a.t.set_peers({2: c.addr, 3: c.addr})  # node 3's address for node 2: node 3 refuses frames for node 2
            seq = 0
            while "misrouted" not in a.t.peer_status()[2].last_error:
                seq += 1
                a.t.send([heartbeat(1, 2, seq)])
                await asyncio.sleep(0.01)
            assert c.batches == [] and not a.t.peer_status()[2].connected

            old_sender = a.t._outbound[3].task
            assert old_sender is not None
            a.t.set_peers({2: b.addr})  # remove 3 and fix 2
            await wait_until(lambda: old_sender.done(), "the removed peer's sender task ends")
            await wait_until(lambda: a.t.peer_status()[2].connected, "connected to node 2 at its right address")
            names = {t.get_name() for t in asyncio.all_tasks()}
            assert "raftkv-transport-1->3" not in names and "raftkv-transport-1->2" in names
        finally:
            await stop_all(a, b, c)

    run(test)


# -- start / stop ----------------------------------------------------------------------------------------------------


def test_stop_cancels_everything_and_is_idempotent() -> None:
    async def test() -> None:
        a, b = Node(1, free_port()), Node(2, free_port())
        down = free_port()
        a.t.set_peers({2: b.addr, 3: f"127.0.0.1:{down}"})  # 3 never comes up: its sender is backing off
        await a.t.start()
        await b.t.start()
        await wait_until(lambda: a.t.peer_status()[2].connected, "connected")
        a.t.send([app(1, 2, 1), app(1, 3, 1)])
        await wait_until(lambda: len(b.batches) == 1, "delivered")

        def grpc_server_tasks() -> list[asyncio.Task[Any]]:
            return [t for t in asyncio.all_tasks() if t.get_name() == "rpc_task" or "RaftPeer" in t.get_name()]

        assert grpc_server_tasks(), "b serves a's stream"
        await b.t.stop()  # while a's stream into it is open: stop() waits until gRPC has unwound the handler
        assert grpc_server_tasks() == []
        await b.t.stop()
        await asyncio.gather(a.t.stop(), a.t.stop())  # concurrent and repeated stops are fine
        leftover = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        assert not leftover, leftover
        a.t.send([app(1, 2, 2)])  # after stop: silently nothing
        a.t.set_peers({2: b.addr, 4: "127.0.0.1:1"})
        assert not {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        with pytest.raises(RuntimeError):
            await a.t.start()

    run(test)


def test_start_on_a_taken_port_raises_a_clear_oserror() -> None:
    async def test() -> None:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))
            s.listen()
            t = Node(1, port).t
            with pytest.raises(ListenError) as info:
                await t.start()
            assert isinstance(info.value, OSError)
            assert info.value.errno == errno.EADDRINUSE
            assert f"127.0.0.1:{port}" in str(info.value) and "in use" in str(info.value)
            await t.stop()

        # two transports on one port: the second fails (SO_REUSEPORT is off), the first keeps working
        first, second = Node(1, port), Node(2, port)
        try:
            await first.t.start()
            with pytest.raises(OSError, match="cannot listen"):
                await second.t.start()
        finally:
            await stop_all(first, second)

    run(test)


def test_constructor_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        GrpcTransport(0, "c", "127.0.0.1:1", print, print)
    with pytest.raises(ValueError):
        GrpcTransport(1, "c", "127.0.0.1:1", print, print, reconnect_backoff_s=(1.0, 0.5))
    with pytest.raises(ValueError):
        GrpcTransport(1, "c", "127.0.0.1:1", print, print, max_queue_frames=0)
