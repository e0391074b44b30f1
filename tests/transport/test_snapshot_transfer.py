"""Snapshot files between nodes: GrpcTransport.send_snapshot / InstallSnapshot on loopback, and MemoryTransport's
equivalent. A transfer delivers an identical, verified file and calls on_snapshot; refusals (another cluster, a
node that takes no snapshots, a corrupt file), a peer that is down, a busy peer, a cancelled or timed-out transfer
all end with False and no temporary file left behind; memory stays bounded; messages keep flowing meanwhile.

Timing only bounds waits (``wait_until``, ``asyncio.timeout``); no assertion depends on speed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from raftkv.proto.v1 import raft_pb2, raft_pb2_grpc
from raftkv.raft.types import ConfState, Message
from raftkv.storage.snapshots import SnapshotHeader, SnapshotInfo, SnapshotReceiver, verify, write_snapshot
from raftkv.transport import GrpcTransport, MemoryNetwork, MemoryTransport
from tests.transport.test_grpc_transport import free_port, heartbeat, run, wait_until

FAST_BACKOFF = (0.02, 0.2)
log = logging.getLogger(__name__)


def make_snapshot(d: Path, total_bytes: int, index: int = 100, value_bytes: int = 1000) -> SnapshotInfo:
    def items() -> Iterator[tuple[bytes, bytes, bytes]]:
        value = os.urandom(value_bytes)
        for i in range(total_bytes // (value_bytes + 20)):
            yield (b"kv", b"key-%09d" % i, value)

    return write_snapshot(d, SnapshotHeader(index, 3, ConfState((1, 2)), "test-cluster"), items())


class SlowSink:
    """A SnapshotReceiver that takes ``delay_s`` per chunk (a slow disk), so a transfer lasts a while."""

    def __init__(self, inner: SnapshotReceiver, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s

    def write_chunk(self, data: bytes) -> None:
        time.sleep(self.delay_s)
        self.inner.write_chunk(data)

    def finish(self) -> SnapshotInfo:
        return self.inner.finish()

    def abort(self) -> None:
        self.inner.abort()


class Peer:
    """A GrpcTransport with a snapshot directory, recording what its callbacks saw."""

    def __init__(
        self, node_id: int, tmp: Path, *, cluster_id: str = "test-cluster", accept: bool = True, delay_s: float = 0.0
    ) -> None:
        self.id = node_id
        self.addr = f"127.0.0.1:{free_port()}"
        self.dir = tmp / f"node{node_id}"
        self.batches: list[list[Message]] = []
        self.snapshots: list[tuple[int, Path]] = []
        self.snapshot_threads: list[bool] = []

        def on_snapshot(frm: int, path: Path) -> None:
            self.snapshot_threads.append(threading.current_thread() is threading.main_thread())
            self.snapshots.append((frm, path))

        def sink(d: Path, total: int | None) -> SnapshotReceiver | SlowSink:
            r = SnapshotReceiver.open(d, total)
            return SlowSink(r, delay_s) if delay_s else r

        extra: dict[str, Any] = (
            {"on_snapshot": on_snapshot, "snapshot_dir": self.dir, "snapshot_sink": sink} if accept else {}
        )
        self.t = GrpcTransport(
            node_id, cluster_id, self.addr, self.batches.append, lambda peer: None,
            reconnect_backoff_s=FAST_BACKOFF, **extra,
        )  # fmt: skip

    def files(self) -> list[str]:
        return sorted(os.listdir(self.dir)) if self.dir.exists() else []


async def up(*peers: Peer) -> None:
    addrs = {p.id: p.addr for p in peers}
    for p in peers:
        p.t.set_peers(addrs)
    for p in peers:
        await p.t.start()


async def down(*peers: Peer) -> None:
    await asyncio.gather(*(p.t.stop() for p in peers))


# -- GrpcTransport ------------------------------------------------------------------------------------------------


def test_a_20mb_snapshot_arrives_identical_and_verified_with_bounded_memory(tmp_path: Path) -> None:
    src = make_snapshot(tmp_path / "src", 20 << 20)
    assert src.size_bytes > 19 << 20
    a, b = Peer(1, tmp_path, accept=False), Peer(2, tmp_path)
    measured: dict[str, float] = {}

    async def test() -> None:
        try:
            await up(a, b)
            tracemalloc.start()
            try:
                t0 = time.perf_counter()
                ok = await a.t.send_snapshot(2, src.path, chunk_bytes=256 << 10)
                measured["s"] = time.perf_counter() - t0
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert ok
            assert b.snapshots == [(1, b.dir / src.path.name)]
            assert b.snapshot_threads == [True], "on_snapshot runs on the event loop thread"
            # Sender and receiver share this process: together they hold a handful of 256 KiB chunks (the chunk read,
            # its serialized request, the bytes received, the chunk's data, the verifying read), never the file.
            assert peak < 3 << 20, (peak, src.size_bytes)
            measured["peak"] = peak
        finally:
            await down(a, b)

    run(test, timeout_s=60)
    got = b.dir / src.path.name
    assert got.read_bytes() == src.path.read_bytes()
    assert verify(got) == SnapshotInfo(got, src.header, src.records, src.size_bytes, src.crc32)
    assert b.files() == [src.path.name], "no temporary file left"
    log.info("20 MB transfer: %.1f MB/s, peak traced memory %d bytes", src.size_bytes / measured["s"] / 1e6,
             measured["peak"])  # fmt: skip


def test_messages_keep_flowing_during_a_transfer(tmp_path: Path) -> None:
    src = make_snapshot(tmp_path / "src", 2 << 20)
    a, b = Peer(1, tmp_path), Peer(2, tmp_path, delay_s=0.01)  # about 0.3 s for 32 chunks of 64 KiB

    async def test() -> None:
        try:
            await up(a, b)
            await wait_until(lambda: a.t.peer_status()[2].connected, "stream up")
            transfer = asyncio.create_task(a.t.send_snapshot(2, src.path, chunk_bytes=64 << 10))
            seq = 0
            during = 0
            while not transfer.done():
                seq += 1
                a.t.send([heartbeat(1, 2, seq)])
                await asyncio.sleep(0.005)
                if not transfer.done():
                    during = len(b.batches)
            assert await transfer
            assert during >= 3, f"only {during} heartbeat batches arrived while the snapshot was crossing"
            await wait_until(lambda: len(b.batches) == seq, "every heartbeat delivered")
            assert [m.index for batch in b.batches for m in batch] == list(range(1, seq + 1)), "in order"
            assert len(b.snapshots) == 1
        finally:
            await down(a, b)

    run(test, timeout_s=30)


def test_a_receiver_of_another_cluster_refuses(tmp_path: Path) -> None:
    src = make_snapshot(tmp_path / "src", 300_000)
    a, b = Peer(1, tmp_path, cluster_id="cluster-a"), Peer(2, tmp_path, cluster_id="cluster-b")

    async def test() -> None:
        try:
            await up(a, b)
            assert not await a.t.send_snapshot(2, src.path)
            assert b.snapshots == []
        finally:
            await down(a, b)

    run(test)
    assert b.files() == []


def test_chunks_of_another_cluster_are_refused_without_the_handshake(tmp_path: Path) -> None:
    """A client that sends no call metadata is still checked on every chunk."""
    src = make_snapshot(tmp_path / "src", 300_000)
    b = Peer(2, tmp_path)
    data = src.path.read_bytes()

    async def test() -> None:
        try:
            await b.t.start()
            async with grpc.aio.insecure_channel(b.addr) as channel:
                stub = raft_pb2_grpc.RaftPeerStub(channel)  # type: ignore[no-untyped-call]
                for cluster, to in (("cluster-x", 2), ("test-cluster", 3)):
                    chunks = [
                        raft_pb2.SnapshotChunk(to=to, cluster_id=cluster, data=data, total_bytes=len(data), last=True,
                                               **{"from": 1}),
                    ]  # fmt: skip
                    reply = await stub.InstallSnapshot(iter(chunks))
                    assert not reply.ok and reply.error
                    assert b.files() == []
                reply = await stub.InstallSnapshot(iter([raft_pb2.SnapshotChunk(
                    to=2, cluster_id="test-cluster", data=data, total_bytes=len(data), last=True, **{"from": 1}
                )]))  # fmt: skip
                assert reply.ok, reply.error
        finally:
            await b.t.stop()

    run(test)
    assert b.snapshots == [(1, b.dir / src.path.name)]


def test_a_corrupt_file_or_a_node_without_snapshots_is_refused(tmp_path: Path) -> None:
    src = make_snapshot(tmp_path / "src", 300_000)
    raw = bytearray(src.path.read_bytes())
    raw[len(raw) // 2] ^= 1
    bad = tmp_path / "bad.rkvs"
    bad.write_bytes(raw)
    a, b, c = Peer(1, tmp_path), Peer(2, tmp_path), Peer(3, tmp_path, accept=False)

    async def test() -> None:
        try:
            await up(a, b, c)
            assert not await a.t.send_snapshot(2, bad)
            assert not await a.t.send_snapshot(3, src.path)
            assert not await a.t.send_snapshot(2, tmp_path / "missing.rkvs")
            assert not await a.t.send_snapshot(9, src.path)  # not a configured peer
            assert b.snapshots == []
        finally:
            await down(a, b, c)

    run(test)
    assert b.files() == [] and c.files() == []


def test_a_sender_whose_peer_is_down_returns_false_quickly(tmp_path: Path) -> None:
    src = make_snapshot(tmp_path / "src", 300_000)
    a = Peer(1, tmp_path)

    async def test() -> None:
        try:
            a.t.set_peers({2: f"127.0.0.1:{free_port()}"})  # nobody listens there
            await a.t.start()
            async with asyncio.timeout(5):  # a bound on the wait, not a speed assertion
                assert not await a.t.send_snapshot(2, src.path)
        finally:
            await a.t.stop()

    run(test)


def test_one_transfer_per_peer_at_a_time_and_a_timeout(tmp_path: Path) -> None:
    src = make_snapshot(tmp_path / "src", 1 << 20)
    a, b = Peer(1, tmp_path), Peer(2, tmp_path, delay_s=0.02)

    async def test() -> None:
        try:
            await up(a, b)
            first = asyncio.create_task(a.t.send_snapshot(2, src.path, chunk_bytes=64 << 10))
            await asyncio.sleep(0.05)
            assert not await a.t.send_snapshot(2, src.path), "a second transfer to the same peer is refused at once"
            assert await first
            assert len(b.snapshots) == 1
            assert not await a.t.send_snapshot(2, src.path, chunk_bytes=64 << 10, timeout_s=0.1)
            await wait_until(lambda: b.files() == [src.path.name], "the receiver removed the partial file")
        finally:
            await down(a, b)

    run(test, timeout_s=30)


def test_a_cancelled_transfer_leaves_nothing_on_the_receiver(tmp_path: Path) -> None:
    src = make_snapshot(tmp_path / "src", 1 << 20)
    a, b = Peer(1, tmp_path), Peer(2, tmp_path, delay_s=0.02)

    async def test() -> None:
        try:
            await up(a, b)
            transfer = asyncio.create_task(a.t.send_snapshot(2, src.path, chunk_bytes=64 << 10))
            await wait_until(lambda: bool(b.files()), "the receiver started writing")
            transfer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await transfer
            await wait_until(lambda: b.files() == [], "the receiver removed the partial file")
            assert b.snapshots == []
            assert await a.t.send_snapshot(2, src.path), "the peer is free for a new transfer"
        finally:
            await down(a, b)

    run(test, timeout_s=30)


def test_constructor_wants_all_snapshot_arguments_or_none(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="go together"):
        GrpcTransport(1, "c", "127.0.0.1:0", lambda b: None, lambda p: None, on_snapshot=lambda f, p: None)

    async def test() -> None:
        t = GrpcTransport(1, "c", "127.0.0.1:0", lambda b: None, lambda p: None)
        with pytest.raises(ValueError):
            await t.send_snapshot(2, tmp_path, chunk_bytes=0)
        assert not await t.send_snapshot(2, tmp_path)  # not started

    run(test)


# -- MemoryTransport ------------------------------------------------------------------------------------------------


class MemPeer:
    def __init__(self, net: MemoryNetwork, node_id: int, tmp: Path, *, accept: bool = True) -> None:
        self.id = node_id
        self.dir = tmp / f"mem{node_id}"
        self.snapshots: list[tuple[int, Path]] = []
        extra: dict[str, Any] = (
            {"on_snapshot": lambda frm, p: self.snapshots.append((frm, p)), "snapshot_dir": self.dir,
             "snapshot_sink": SnapshotReceiver.open}
            if accept else {}
        )  # fmt: skip
        self.t = MemoryTransport(net, node_id, lambda b: None, lambda p: None, **extra)

    def files(self) -> list[str]:
        return sorted(os.listdir(self.dir)) if self.dir.exists() else []


def test_memory_transport_sends_snapshots(tmp_path: Path) -> None:
    src = make_snapshot(tmp_path / "src", 1 << 20)
    net = MemoryNetwork()
    a, b, c = MemPeer(net, 1, tmp_path), MemPeer(net, 2, tmp_path), MemPeer(net, 3, tmp_path, accept=False)

    async def test() -> None:
        for p in (a, b, c):
            p.t.set_peers({1: "a", 2: "b", 3: "c"})
            await p.t.start()
        try:
            first = asyncio.create_task(a.t.send_snapshot(2, src.path, chunk_bytes=64 << 10))
            await asyncio.sleep(0)
            assert not await a.t.send_snapshot(2, src.path), "one transfer per peer at a time"
            assert await first
            assert b.snapshots == [(1, b.dir / src.path.name)]
            assert (b.dir / src.path.name).read_bytes() == src.path.read_bytes()
            assert not await a.t.send_snapshot(3, src.path), "node 3 takes no snapshots"
            assert not await a.t.send_snapshot(9, src.path), "not a configured peer"
            net.partition([[1], [2, 3]])
            assert not await a.t.send_snapshot(2, src.path), "partitioned away"
            net.heal()
            bad = tmp_path / "bad.rkvs"
            bad.write_bytes(src.path.read_bytes()[:-10])
            assert not await a.t.send_snapshot(2, bad), "a corrupt file is refused"
            await b.t.stop()
            assert not await a.t.send_snapshot(2, src.path), "the receiver is down"
        finally:
            for p in (a, b, c):
                await p.t.stop()

    run(test)
    assert len(b.snapshots) == 1 and b.files() == [src.path.name] and c.files() == []
