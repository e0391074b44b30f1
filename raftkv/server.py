"""The composition root of a raftkv node: storage, state machine, transport and node driver, and the client gRPC
service (:mod:`raftkv.servicer`, which turns requests into proposals and reads, and raftkv errors into gRPC
statuses); the start-up and periodic consistency checks.

``run(settings)`` is what ``raftkv serve`` calls: it blocks until SIGTERM/SIGINT and returns an exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import sys
import time
from pathlib import Path

import grpc

from .errors import ConfigError, RaftKVError, StorageError
from .etcdapi import add_etcd_services
from .kv import Compact, KVStateMachine
from .node import Node
from .pbmap import kv_to_pb
from .proto.v1 import kv_pb2, kv_pb2_grpc
from .raft import StateRole
from .retention import Retention, parse_retention
from .servicer import GRPC_OPTIONS, GcMonitor, KVServicer
from .settings import Settings
from .storage import DurableStorageError, LmdbLogStore
from .storage.snapshots import SnapshotReceiver
from .transport import GrpcTransport

log = logging.getLogger("raftkv.server")


# -- start-up -------------------------------------------------------------------------------------------------
def check_cluster_id(data_dir: Path, cluster_id: str) -> None:
    """The data directory remembers the cluster it belongs to; starting it with another cluster's settings (or a
    wiped node re-using an id under a new cluster) is refused."""
    f = data_dir / "cluster_id"
    if f.exists():
        have = f.read_text().strip()
        if have != cluster_id:
            raise ConfigError(
                f"data directory {data_dir} belongs to cluster {have}, but these settings describe cluster "
                f"{cluster_id} (different members or cluster_token). Use the right settings, or a new data directory."
            )
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix(".tmp")
        # Durable before the node writes anything else: after a power loss an unsynced file can be there but empty
        # (its rename reached the disk, its data did not), and the node would refuse its own data directory.
        with open(tmp, "w") as out:
            out.write(cluster_id + "\n")
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(f)
        dfd = os.open(data_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(dfd)  # the rename
        finally:
            os.close(dfd)


def open_store(settings: Settings) -> LmdbLogStore:
    path = settings.data_dir / "raft"
    try:
        t0 = time.monotonic()
        store = LmdbLogStore(path, sync=settings.sync)
        log.info("opened the store in %.2fs: log entries %d..%d, applied index %d",
                 time.monotonic() - t0, store.first_index(), store.last_index(), store.applied_index())
        return store
    except DurableStorageError as e:
        raise StorageError(f"cannot open the node's data in {path}: {e}", str(path)) from e
    except OSError as e:
        raise StorageError(f"cannot open the node's data in {path}: {e.strerror or e}", str(path)) from e


def setup_logging(settings: Settings) -> None:
    level = getattr(logging, settings.log_level.upper())
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s.%(msecs)03d node{settings.id} %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )
    logging.getLogger("grpc").setLevel(logging.WARNING)


async def serve(settings: Settings, started: asyncio.Event | None = None, stop: asyncio.Event | None = None) -> None:
    """Run one node until ``stop`` is set (or SIGTERM/SIGINT when run from ``run``)."""
    check_cluster_id(settings.data_dir, settings.cluster_id)
    store = open_store(settings)
    stop = stop or asyncio.Event()
    gc_monitor = GcMonitor()
    client_server: grpc.aio.Server | None = None
    transport: GrpcTransport | None = None
    node: Node | None = None
    try:
        fsm = KVStateMachine(
            store,
            session_ttl_s=settings.session_ttl_s,
            max_sessions=settings.max_sessions,
            max_key_bytes=settings.max_key_bytes,
            max_value_bytes=settings.max_value_bytes,
        )
        holder: list[Node] = []
        transport = GrpcTransport(
            settings.id,
            settings.cluster_id,
            settings.peer_listen,
            lambda msgs: holder[0].on_messages(msgs),
            lambda peer: holder[0].on_unreachable(peer),
            grpc_options=GRPC_OPTIONS,
            on_snapshot=lambda frm, path: holder[0].on_snapshot_received(frm, path),
            snapshot_dir=settings.data_dir / "snapshots",
            snapshot_sink=SnapshotReceiver.open,
            on_removed=lambda peer: holder[0].on_removed(peer),
        )
        node = Node(settings, store, fsm, transport)
        holder.append(node)
        client_server = grpc.aio.server(options=GRPC_OPTIONS)
        gc_monitor.install()
        servicer = KVServicer(node, settings, gc_monitor)
        kv_pb2_grpc.add_KVServicer_to_server(servicer, client_server)  # type: ignore[no-untyped-call]
        add_etcd_services(servicer, client_server)  # etcd's v3 API on the same port (README, "The etcd API")
        node.verifying = settings.startup_check_timeout_s > 0 and node.applied > len(settings.members)
        try:
            client_server.add_insecure_port(settings.client_listen)
        except RuntimeError as e:
            raise ConfigError(
                f"cannot listen for clients on {settings.client_listen}: {e} (is the port in use?)"
            ) from None
        try:
            await transport.start()
        except OSError as e:
            raise ConfigError(f"cannot listen for peers on {settings.peer_listen}: {e} (is the port in use?)") from e
        await client_server.start()
        # What exists now (modules, classes, the node's long-lived state) lives as long as the process: keep it out
        # of the collector's full passes, which otherwise walk all of it and stop every thread for ~10 ms (tens of
        # ms on a busy machine: a latency tail).
        gc.collect()
        gc.freeze()
        log.info(
            "node %d of cluster %s serving clients on %s, peers on %s (data in %s, fsync %s)",
            settings.id, settings.cluster_id, settings.client_listen, settings.peer_listen, settings.data_dir,
            "on" if settings.sync else "OFF",
        )
        if started is not None:
            started.set()
        run_task = asyncio.create_task(node.run(), name=f"raftkv-node-{settings.id}")
        checks = asyncio.create_task(_consistency_checks(node, servicer, settings), name="raftkv-checks")
        retention = asyncio.create_task(history_retention(node, settings), name="raftkv-retention")
        stop_task = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({run_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if run_task in done and run_task.exception() is not None:
            raise run_task.exception()  # type: ignore[misc]
        if run_task in done and (node.read_only_reason or node.corruption):
            # The node stopped replicating (its disk is full: it still serves status and stale reads; or it found
            # damaged data: status only) and stays up, saying so, until it is stopped.
            await stop.wait()
        log.info("node %d shutting down", settings.id)
        if node.role == StateRole.LEADER and node.best_transferee() and not (node.read_only_reason or node.corruption):
            # Hand leadership over first, so clients see no more than one election round of unavailability.
            try:
                new = await node.transfer_leadership()
                log.info("node %d handed leadership to node %d", settings.id, new)
            except RaftKVError as e:
                log.warning("node %d could not hand leadership over before stopping: %s", settings.id, e.message)
        for t in (checks, retention):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        node.stop()
        stop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await run_task
    finally:
        gc_monitor.uninstall()
        if client_server is not None:
            await client_server.stop(grace=0.5)
        if transport is not None:
            await transport.stop()
        if node is not None:
            node.close()
        store.close()
        log.info("node %d stopped", settings.id)


def _compact_command(rid: int, revision: int) -> Compact:
    return Compact(rid, 0, 0, revision)


async def history_retention(node: Node, settings: Settings, every_s: float = 1.0) -> None:
    """On the leader, compact the history as ``history_retention`` says (``raftkv.retention``), through the log."""
    revisions, seconds = parse_retention(settings.history_retention)
    # Compact in steps of a tenth of a revision retention (at most 1,000 revisions), so not once per write.
    policy = Retention(revisions, seconds, min_step=max(1, min(1000, revisions // 10)) if revisions else 1000)
    if not policy.enabled:
        return
    leading = False
    while True:
        await asyncio.sleep(every_s)
        if node.role != StateRole.LEADER or node.corruption or node.removed or node.read_only_reason:
            leading = False
            continue
        if not leading:
            policy.reset()
            leading = True
        now = node.clock.monotonic()
        try:
            revision, compacted = node.fsm.revision(), node.fsm.compacted()
            policy.observe(now, revision)
            target = policy.due(now, revision, compacted)
            if target is None:
                continue
            await node.propose(functools.partial(_compact_command, revision=target))
            log.info("node %d compacted the history at revision %d (history_retention %s)", node.id, target,
                     settings.history_retention)
        except RaftKVError as e:
            log.warning("node %d: automatic compaction failed: %s", node.id, e.message)


async def _consistency_checks(node: Node, svc: KVServicer, settings: Settings) -> None:
    """The start-up check (a node with data compares its state with the cluster's before it serves clients, for at
    most ``startup_check_timeout_s``), then, on the leader, a check every ``corruption_check_interval_s``."""
    if node.verifying:
        limit = settings.startup_check_timeout_s
        try:
            async with asyncio.timeout(limit):
                res = await _check_through_leader(node, svc, limit)
            if res.ok:
                log.info("node %d: start-up check passed: its state at index %d is the majority's", node.id,
                         res.index)
            else:
                log.warning("node %d: start-up check inconclusive or failed at index %d: %s", node.id, res.index,
                            [(m.id, m.hash[:12], m.error) for m in res.members])
        except TimeoutError:
            log.warning("node %d: no start-up check within %.1fs (no leader, or a slow cluster): serving unverified",
                        node.id, limit)
        except (RaftKVError, grpc.aio.AioRpcError) as e:
            log.warning("node %d: the start-up check could not run (%s): serving unverified", node.id, e)
        finally:
            node.verifying = False
    interval = settings.corruption_check_interval_s
    if interval <= 0:
        return
    while True:
        await asyncio.sleep(interval)
        if node.role != StateRole.LEADER or node.corruption or node.removed:
            continue
        try:
            res = await svc.check_cluster(min(60.0, interval))
        except RaftKVError as e:
            log.warning("node %d: the periodic consistency check could not run: %s", node.id, e.message)
            continue
        bad = [m.id for m in res.members if m.mismatch]
        if bad:
            log.error("node %d: consistency check at index %d: nodes %s differ from the majority", node.id, res.index,
                      bad)
        else:
            log.info("node %d: consistency check at index %d: %s", node.id, res.index,
                     "every member agrees" if res.ok else "inconclusive")


async def _check_through_leader(node: Node, svc: KVServicer, timeout_s: float) -> kv_pb2.CheckClusterResponse:
    """Wait for a leader, then run one consistency check through it (this node, if it leads)."""
    tick = node.settings.tick_ms / 1000
    while not node.leader_id or (node.leader_id == node.id and node.role != StateRole.LEADER):
        await asyncio.sleep(tick)
    if node.role == StateRole.LEADER:
        return await svc.check_cluster(timeout_s)
    async with grpc.aio.insecure_channel(node.leader_addr(), options=GRPC_OPTIONS) as ch:
        stub = kv_pb2_grpc.KVStub(ch)  # type: ignore[no-untyped-call]
        res: kv_pb2.CheckClusterResponse = await stub.CheckCluster(kv_pb2.CheckClusterRequest(), timeout=timeout_s)
        return res


def run(settings: Settings) -> int:
    """Run a node in the foreground until SIGTERM/SIGINT. Returns the process exit code."""
    setup_logging(settings)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.Runner()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop=stop)

    t0 = time.monotonic()
    try:
        with runner:
            runner.run(main())
    except RaftKVError as e:
        log.error("%s", e.message)
        print(f"error: {e.message}", file=sys.stderr)
        return e.exit_code
    log.info("ran for %.1fs", time.monotonic() - t0)
    return 0


# KVServicer and kv_to_pb lived here and were exported: they still are (their homes are raftkv.servicer and
# raftkv.pbmap).
__all__ = [
    "KVServicer", "check_cluster_id", "history_retention", "kv_to_pb", "open_store", "run", "serve", "setup_logging",
]
