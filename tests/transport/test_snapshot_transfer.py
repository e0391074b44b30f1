"""GrpcTransport's InstallSnapshot beyond the shared conformance suite (``conformance.py``, run by
``test_conformance.py``, which covers what every transport promises of ``send_snapshot``): refusals by a receiver of
another cluster, at the handshake and on every chunk of a client that skips it; a peer nobody listens for; the
constructor's snapshot arguments.

Timing only bounds waits (``asyncio.timeout``); no assertion depends on speed.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest

from raftkv.proto.v1 import raft_pb2, raft_pb2_grpc
from raftkv.raft.types import Message
from raftkv.storage.snapshots import SnapshotInfo, SnapshotReceiver
from raftkv.transport import GrpcTransport

from .helpers import free_port, run

FAST_BACKOFF = (0.02, 0.2)


class Peer:
    """A GrpcTransport with a snapshot directory, recording what its callbacks saw."""

    def __init__(self, node_id: int, tmp: Path, *, cluster_id: str = "test-cluster") -> None:
        self.id = node_id
        self.addr = f"127.0.0.1:{free_port()}"
        self.dir = tmp / f"node{node_id}"
        self.batches: list[list[Message]] = []
        self.snapshots: list[tuple[int, Path]] = []
        self.snapshot_threads: list[bool] = []

        def on_snapshot(frm: int, path: Path) -> None:
            self.snapshot_threads.append(threading.current_thread() is threading.main_thread())
            self.snapshots.append((frm, path))

        extra: dict[str, Any] = {"on_snapshot": on_snapshot, "snapshot_dir": self.dir,
                                 "snapshot_sink": SnapshotReceiver.open}  # fmt: skip
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


def test_a_receiver_of_another_cluster_refuses(tmp_path: Path, small_snapshot: SnapshotInfo) -> None:
    a, b = Peer(1, tmp_path, cluster_id="cluster-a"), Peer(2, tmp_path, cluster_id="cluster-b")

    async def test() -> None:
        try:
            await up(a, b)
            assert not await a.t.send_snapshot(2, small_snapshot.path)
            assert b.snapshots == []
        finally:
            await down(a, b)

    run(test)
    assert b.files() == []


def test_chunks_of_another_cluster_are_refused_without_the_handshake(
    tmp_path: Path, small_snapshot: SnapshotInfo
) -> None:
    """A client that sends no call metadata is still checked on every chunk."""
    b = Peer(2, tmp_path)
    data = small_snapshot.path.read_bytes()

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
    assert b.snapshots == [(1, b.dir / small_snapshot.path.name)]
    assert b.snapshot_threads == [True], "on_snapshot runs on the event loop thread"


def test_a_sender_whose_peer_is_down_returns_false_quickly(tmp_path: Path, small_snapshot: SnapshotInfo) -> None:
    a = Peer(1, tmp_path)

    async def test() -> None:
        try:
            a.t.set_peers({2: f"127.0.0.1:{free_port()}"})  # nobody listens there
            await a.t.start()
            async with asyncio.timeout(5):  # a bound on the wait, not a speed assertion
                assert not await a.t.send_snapshot(2, small_snapshot.path)
        finally:
            await a.t.stop()

    run(test)


def test_constructor_wants_all_snapshot_arguments_or_none(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="go together"):
        GrpcTransport(1, "c", "127.0.0.1:0", lambda b: None, lambda p: None, on_snapshot=lambda f, p: None)

    async def test() -> None:
        t = GrpcTransport(1, "c", "127.0.0.1:0", lambda b: None, lambda p: None)
        with pytest.raises(ValueError):
            await t.send_snapshot(2, tmp_path, chunk_bytes=0)
        with pytest.raises(ValueError):
            await t.send_snapshot(2, tmp_path, chunk_bytes=1 << 40)  # over the gRPC message limit
        assert not await t.send_snapshot(2, tmp_path)  # not started

    run(test)
