"""``GrpcTransport``: Raft messages over long-lived gRPC client streams (``raftkv.v1.RaftPeer/Stream``).

Shape::

    send(msgs) ──group by m.to──► peer 2: [batch, batch, ...] ──sender task 2──► one Stream call ──► node 2's server
                                  peer 3: [batch, ...]        ──sender task 3──► one Stream call ──► node 3's server
    node 2's Stream call ──► our server ──check cluster id, to, decode──► on_messages(batch)

Each ordered pair of nodes uses one client-streaming call over one long-lived channel; replies to our messages come
back on the peer's own stream to us. The stream's response (``StreamReply``) is only produced when a stream ends.

**Sending.** ``send`` groups messages by destination and appends one batch per destination to that peer's pending
list (bounded by ``max_queue_frames`` batches; the unencoded ``Message`` tuples are kept). The peer's sender task
wakes, takes *every* pending batch, concatenates them and encodes them with one ``codec.encode_messages`` call into
one ``PeerFrame``: under load, many ``send`` calls cost one gRPC write and read (their fixed cost, about 150-300 µs of
CPU per frame on loopback, dwarfs the transport's own; see ``bench/transport_bench.py``). A coalesced
frame larger than the gRPC message limit is split back into its batches; a single batch that is still too large is
dropped and logged (Raft's ``max_size_per_msg`` keeps appends far below it; a snapshot above the limit cannot be sent
by this transport).

**Drops.** A batch is dropped (counted in ``PeerStatus.frames_dropped``) when

* the peer's pending list is full (the peer or the network is slower than we produce) — ``on_unreachable`` too;
* the stream fails: the batches being written and all batches pending at that moment are dropped, because after a
  failure Raft resends what matters (heartbeats carry the commit index, a probing leader resends appends) and stale
  appends would only delay the new stream;
* the peer is in back-off after a failure (``send`` drops at once, so no backlog builds while it is down);
* the destination has no configured address (``on_unreachable`` too) or is the local node (debug log only).

**Handshake.** A stream carries call metadata naming the sender, its cluster id and the node it means to reach. The
server checks them before any frame (a node of another cluster, or a wrong address, is refused at once with
``FAILED_PRECONDITION``) and answers with response headers naming its own node id. Only then is the peer
``connected``: a TCP connection alone proves little (the kernel accepts connections on behalf of a frozen process).
Batches sent during the handshake wait in the pending list; no handshake within 5 s counts as a failure.

**Failures and reconnection.** When a stream or its channel fails (connection refused or reset, handshake refused or
timed out, keepalive timeout, the peer ended the stream with a gRPC status, ...), the sender records the error
(``PeerStatus.last_error``), calls ``on_unreachable(peer)`` once for that failure, waits an exponential back-off within
``reconnect_backoff_s`` (reset once a stream stayed up for the maximum back-off), opens a new stream on the same
channel and carries on. The sender task lives until the peer is removed or the transport stops. Streams are opened
eagerly, so a peer that comes back is reconnected without waiting for traffic. HTTP/2 keepalive pings (every 10 s,
10 s to answer) notice a peer that vanished or froze without closing the connection, even when there is no traffic.
A peer becoming unreachable is logged once at WARNING; retries while it stays down log at DEBUG; its return at INFO.

**Receiving.** For every frame the server checks the cluster id again (so a client that skips the handshake is
refused too; refusals are logged at WARNING once per (node, cluster) pair), that the frame and its messages are
addressed to this node, and decodes it (a ``CodecError`` aborts the stream with ``INVALID_ARGUMENT``). Local-only
message types are dropped defensively; the batch is then handed to ``on_messages`` synchronously, in arrival order.
Frames from nodes that are not (yet) configured peers are delivered too: a joining node hears from the leader before
it knows the membership.

**Removed members.** ``refuse(ids)`` names nodes removed from the cluster: a stream from one of them is refused at
its handshake, and a stream already open is ended at its next frame, with ``FAILED_PRECONDITION`` and the trailing
metadata ``raftkv-removed``; nothing from it is delivered. The refused node's sender sees that marker when its stream
ends and calls its ``on_removed(peer)`` (once per failure, like ``on_unreachable``).

**Ordering.** Within one ordered pair, messages arrive in ``send`` order: one sender task writes one stream in order,
and a new stream starts only after the old one failed and everything queued for it was dropped.

**Before start().** ``set_peers`` and ``send`` may be called before ``start()``: batches for configured peers wait in
their (bounded) pending lists and go out once the streams are up.

**Snapshots.** ``send_snapshot(peer, path)`` streams a snapshot file (``raftkv.storage.snapshots``) to a peer on a
call of its own (``RaftPeer/InstallSnapshot``) over the peer's channel, beside its message stream: the messages keep
flowing, in order, while the file crosses (HTTP/2 interleaves the two calls). The file is read a chunk at a time
(``chunk_bytes``) on a worker thread, and each chunk is written only once gRPC took the previous one, so the sender
holds about one chunk; at most one transfer per peer runs at a time. The receiving server checks the cluster id and
the destination as for frames (call metadata, then every chunk), hands each chunk to a ``SnapshotSink`` that writes
it to a temporary file in ``snapshot_dir`` (a worker thread again: the event loop never waits for the disk; gRPC's
flow control holds the sender back meanwhile, so the receiver too holds about one chunk), and on the last chunk has
the sink fsync, verify and rename the file. Only then does it call ``on_snapshot(from_id, path)`` on the event loop
and answer ``ok``. Any failure (refusal, a broken or incomplete stream, a corrupt file, a deadline) removes the
temporary file, answers ``ok=False`` with the reason when it still can, and makes ``send_snapshot`` return False. A
call cancelled while the sink finishes the file (the sender gave up, or this node stops) still leaves a whole,
verified file once the sink is done: it is given to ``on_snapshot`` all the same (the sender's answer was lost, not
the file), or removed if this transport has stopped, so the snapshot directory never keeps a file ``on_snapshot``
was not given. ``send_snapshot`` returns False, too, when gRPC cancels the call itself because its channel closed
(this transport stops, or the peer was removed); it raises ``CancelledError`` only when its caller was cancelled.
The transport never imports the storage layer: the composition root passes ``SnapshotReceiver.open`` as
``snapshot_sink``.

The server binds with ``SO_REUSEPORT`` off, so a second node on the same port fails loudly (``ListenError``, an
``OSError``) instead of silently sharing the port.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO, Final, Protocol, TypeVar

import grpc

from raftkv.codec import CodecError, decode_messages, encode_messages
from raftkv.proto.v1 import raft_pb2, raft_pb2_grpc
from raftkv.raft.types import LOCAL_MESSAGES, Message
from raftkv.transport import OnMessages, OnRemoved, OnUnreachable, PeerStatus, group_by_destination

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "GrpcTransport",
    "ListenError",
    "OnSnapshot",
    "OpenSnapshotSink",
    "ReceivedSnapshot",
    "SnapshotSink",
]

log = logging.getLogger("raftkv.transport")

DEFAULT_MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024 + 64 * 1024
"""gRPC message limit (both directions) unless ``grpc_options`` set one: a 64 MiB payload plus envelope room."""

_ENVELOPE_BYTES: Final = 64
"""Room for PeerFrame's from/to/tags/lengths around ``messages`` (plus the cluster id, added per instance)."""

_MIN_CONNECT_TIMEOUT_MS: Final = 5_000
"""gRPC's minimum connect timeout (default 20 s): how long one attempt may wait for a silent (black-holed) peer."""

_KEEPALIVE_MS: Final = 10_000
"""HTTP/2 keepalive ping interval and ping-ack timeout: a peer that vanished or froze without closing the connection
(power loss, SIGSTOP, a silent partition) is noticed within about 20 s even when we have nothing to send."""

_HANDSHAKE_TIMEOUT_S: Final = 5.0
"""How long a new stream may wait for the peer's handshake (its response headers) before it counts as failed."""

# Call metadata of the stream handshake: the client names itself, its cluster and the node it means to reach; the
# server checks them before any frame and answers with its own id in its response headers.
_MD_CLUSTER: Final = "raftkv-cluster-id"
_MD_FROM: Final = "raftkv-from"
_MD_TO: Final = "raftkv-to"
_MD_NODE: Final = "raftkv-node-id"
_MD_REMOVED: Final = "raftkv-removed"
"""Trailing metadata of a stream refused because its sender was removed from the cluster."""

_REWARN_S: Final = 30.0
"""While a peer stays unreachable, a *different* error is logged at WARNING again at most this often."""

_SNAPSHOT_THREADS: Final = 2
"""Worker threads for snapshot file I/O (reading files to send, writing and verifying files received)."""

T = TypeVar("T")

_TYPE = itemgetter(0)  # Message.type
_TO = itemgetter(1)  # Message.to

_NEW, _RUNNING, _STOPPED = "new", "running", "stopped"


class ReceivedSnapshot(Protocol):
    """What a ``SnapshotSink`` returns once a snapshot file is complete (``raftkv.storage.snapshots.SnapshotInfo``)."""

    @property
    def path(self) -> Path: ...


class SnapshotSink(Protocol):
    """Where an incoming snapshot stream goes (``raftkv.storage.snapshots.SnapshotReceiver``). Its methods block on
    the disk; the transports call them on a worker thread, one at a time."""

    def write_chunk(self, data: bytes) -> None:
        """Append the next bytes of the file."""
        ...

    def finish(self) -> ReceivedSnapshot:
        """The stream is complete: make the file durable, verify it and give it its final name; raise if it is not
        a valid snapshot (the sink has then removed it)."""
        ...

    def abort(self) -> None:
        """Drop everything written so far (idempotent; a no-op after ``finish``)."""
        ...


OpenSnapshotSink = Callable[[Path, int | None], SnapshotSink]
"""``(snapshot_dir, expected_total_bytes or None) -> SnapshotSink``: ``SnapshotReceiver.open``."""

OnSnapshot = Callable[[int, Path], None]
"""Called on the event loop thread with the sender's node id and the path of a received, verified snapshot file."""


class _Blocking:
    """Blocking file work of one snapshot transfer, run on the transport's snapshot threads one call at a time.

    ``cleanup(fn)`` runs ``fn`` once no call is in flight: at once, or when the running call ends. A transfer that
    is abandoned (cancelled) while a call runs must not close or remove a file under it."""

    __slots__ = ("_executor", "_last")

    def __init__(self, executor: concurrent.futures.Executor) -> None:
        self._executor = executor
        self._last: concurrent.futures.Future[Any] | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        cf = self._executor.submit(fn, *args)
        self._last = cf
        return await asyncio.wrap_future(cf)

    def cleanup(self, fn: Callable[[], object]) -> None:
        last = self._last
        if last is None or last.done():
            fn()
        else:
            last.add_done_callback(lambda _: fn())

    def dispose_result(self, fn: Callable[[Any], object]) -> None:
        """The caller gave up on the last call (it was cancelled while awaiting it): pass what the call returns to
        ``fn`` — at once if it already returned (before its caller could resume), else when it returns, on the
        worker thread. A file or sink opened for nobody must still be closed; a file finished for nobody must still
        be dealt with. Nothing if the call raised."""
        last = self._last
        if last is not None:
            last.add_done_callback(lambda f: None if f.cancelled() or f.exception() is not None else fn(f.result()))


class ListenError(OSError):
    """The peer listen address could not be bound (usually: another process already listens on that port)."""

    def __init__(self, code: int, message: str, addr: str) -> None:
        super().__init__(code, message)
        self.addr = addr


class _PeerStats:
    """Mutable counters behind ``PeerStatus`` (one per peer id, shared by the sending and receiving sides)."""

    __slots__ = (
        "addr",
        "bytes_sent",
        "connected",
        "frames_dropped",
        "frames_received",
        "frames_sent",
        "last_error",
        "last_recv_monotonic",
    )

    def __init__(self, addr: str = "") -> None:
        self.addr = addr
        self.connected = False
        self.last_error = ""
        self.frames_sent = 0
        self.frames_dropped = 0
        self.bytes_sent = 0
        self.frames_received = 0
        self.last_recv_monotonic: float | None = None

    def snapshot(self) -> PeerStatus:
        return PeerStatus(
            connected=self.connected,
            last_error=self.last_error,
            frames_sent=self.frames_sent,
            frames_dropped=self.frames_dropped,
            bytes_sent=self.bytes_sent,
            frames_received=self.frames_received,
            last_recv_monotonic=self.last_recv_monotonic,
            addr=self.addr,
        )


class _Outbound:
    """The sending side of one peer: pending batches, the wake-up event and the sender task.

    A plain list + ``asyncio.Event`` rather than an ``asyncio.Queue``: the sender takes all pending batches in one
    O(1) swap, and the call's done-callback can wake the sender without putting anything into the bounded list.
    """

    __slots__ = (
        "accepting",
        "addr",
        "channel",
        "down_since",
        "last_warned",
        "last_warned_at",
        "peer_id",
        "pending",
        "stats",
        "task",
        "wakeup",
    )

    def __init__(self, peer_id: int, addr: str, stats: _PeerStats) -> None:
        self.peer_id = peer_id
        self.addr = addr
        self.stats = stats
        self.pending: list[list[Message]] = []
        self.wakeup = asyncio.Event()
        self.accepting = True  # False while backing off after a failure: send() drops instead of queueing
        self.task: asyncio.Task[None] | None = None
        self.channel: grpc.aio.Channel | None = None  # the sender task's channel while it runs (snapshots use it too)
        self.down_since: float | None = None  # time.monotonic() of the first failure since last connected
        self.last_warned = ""  # the error text last logged at WARNING, and when
        self.last_warned_at = 0.0

    def on_call_done(self, _call: Any) -> None:
        self.wakeup.set()  # let the sender notice a stream the peer ended, even when it has nothing to write


def _merge_options(defaults: Sequence[tuple[str, Any]], overrides: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """``defaults`` with any key also present in ``overrides`` replaced (gRPC's own rule for duplicates varies)."""
    merged = dict(defaults)
    merged.update(overrides)
    return list(merged.items())


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code") and hasattr(exc, "details"):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _describe_ended(call: Any) -> str:
    """Why a finished call finished (it is done, so the status is available without waiting)."""
    code = await call.code()
    details = await call.details()
    if code == grpc.StatusCode.OK:
        return "the peer closed the stream"
    return f"{code.name}: {details}"


async def _close_call(call: Any) -> None:
    """Cancel ``call`` if it is still running and wait for gRPC's task behind it, so nothing is left pending."""
    if not call.done():
        call.cancel()
    task = asyncio.current_task()
    cancelling = task.cancelling() if task is not None else 0
    try:
        await call
    except asyncio.CancelledError:
        # The call was cancelled locally (by us): gRPC reports that as CancelledError. Re-raise only if *this task*
        # received a new cancellation while waiting.
        if task is not None and task.cancelling() > cancelling:
            raise
    except Exception:
        pass  # the call's error was already recorded (or is irrelevant: we are closing it)


def _probe_bind(addr: str) -> OSError | None:
    """Try to bind ``addr`` with a plain socket to learn *why* gRPC could not (gRPC only says "Failed to bind")."""
    host, sep, port_text = addr.rpartition(":")
    if not sep:
        return OSError(errno.EINVAL, f"not a host:port address: {addr!r}")
    try:
        port = int(port_text)
        infos = socket.getaddrinfo(host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except ValueError:
        return OSError(errno.EINVAL, f"bad port in {addr!r}")
    except OSError as exc:
        return exc
    for family, kind, proto, _, sockaddr in infos[:1]:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: TIME_WAIT is not "in use"
            try:
                s.bind(sockaddr)
            except OSError as exc:
                return exc
    return None


class GrpcTransport:
    """The production ``Transport``: one gRPC server for incoming streams, one sender task and stream per peer.

    See the module docstring for the delivery, ordering and drop guarantees. ``on_messages`` and ``on_unreachable``
    run on the event loop thread; ``on_unreachable`` is scheduled with ``call_soon`` (never called from inside
    ``send``) and coalesced to at most one pending call per peer.

    Works on any asyncio event loop (uvloop in production). Single use: ``start()`` once, ``stop()`` once (repeated
    ``stop()`` calls are no-ops).
    """

    def __init__(
        self,
        node_id: int,
        cluster_id: str,
        listen_addr: str,
        on_messages: OnMessages,
        on_unreachable: OnUnreachable,
        *,
        max_queue_frames: int = 4096,
        reconnect_backoff_s: tuple[float, float] = (0.05, 1.0),
        grpc_options: Sequence[tuple[str, Any]] = (),
        on_snapshot: OnSnapshot | None = None,
        snapshot_dir: Path | None = None,
        snapshot_sink: OpenSnapshotSink | None = None,
        on_removed: OnRemoved | None = None,
    ) -> None:
        """``on_snapshot``, ``snapshot_dir`` and ``snapshot_sink`` (``SnapshotReceiver.open``) make the node accept
        snapshot files (all three, or none: then incoming snapshots are refused). Sending needs none of them.
        ``on_removed(peer)``: ``peer`` refused us because we were removed from the cluster (see ``refuse``)."""
        if (on_snapshot is None) != (snapshot_dir is None) or (on_snapshot is None) != (snapshot_sink is None):
            raise ValueError("on_snapshot, snapshot_dir and snapshot_sink go together: give all three or none")
        if node_id <= 0:
            raise ValueError(f"node ids are positive integers, got {node_id}")
        if max_queue_frames < 1:
            raise ValueError(f"max_queue_frames must be at least 1, got {max_queue_frames}")
        lo, hi = reconnect_backoff_s
        if not 0 < lo <= hi:
            raise ValueError(f"reconnect_backoff_s must be (min, max) with 0 < min <= max, got {reconnect_backoff_s}")
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.listen_addr = listen_addr
        self._on_messages = on_messages
        self._on_unreachable = on_unreachable
        self._on_snapshot = on_snapshot
        self._snapshot_dir = None if snapshot_dir is None else Path(snapshot_dir)
        self._snapshot_sink = snapshot_sink
        self._max_queue_frames = max_queue_frames
        self._backoff_s = (float(lo), float(hi))

        limits = [
            ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", DEFAULT_MAX_MESSAGE_BYTES),
        ]
        self._server_options = _merge_options(
            [
                *limits,
                ("grpc.so_reuseport", 0),  # two nodes on one port must fail, not share it
                ("grpc.http2.min_ping_interval_without_data_ms", _KEEPALIVE_MS // 2),  # accept our clients' pings
                ("grpc.http2.max_ping_strikes", 0),
            ],
            grpc_options,
        )
        self._channel_options = _merge_options(
            [
                *limits,
                ("grpc.initial_reconnect_backoff_ms", max(1, int(lo * 1000))),
                ("grpc.max_reconnect_backoff_ms", max(1, int(hi * 1000))),
                ("grpc.min_reconnect_backoff_ms", _MIN_CONNECT_TIMEOUT_MS),
                ("grpc.keepalive_time_ms", _KEEPALIVE_MS),
                ("grpc.keepalive_timeout_ms", _KEEPALIVE_MS),
                ("grpc.http2.ping_timeout_ms", _KEEPALIVE_MS),  # what actually bounds the wait for a ping ack
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.max_pings_without_data", 0),
            ],
            grpc_options,
        )
        limit = min(
            _limit(dict(self._channel_options).get("grpc.max_send_message_length")),
            _limit(dict(self._server_options).get("grpc.max_receive_message_length")),
        )
        self._max_payload_bytes = limit - _ENVELOPE_BYTES - len(cluster_id.encode())

        self._state = _NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._port: int | None = None
        self._stop_lock = asyncio.Lock()
        self._peer_addrs: dict[int, str] = {}
        self._outbound: dict[int, _Outbound] = {}
        self._stats: dict[int, _PeerStats] = {}
        self._retiring: set[asyncio.Task[None]] = set()  # sender tasks of removed peers, cancelled, not yet done
        self._unreachable_pending: set[int] = set()
        self._refusals_logged: set[tuple[str, int, str]] = set()
        self._handler_tasks: set[asyncio.Task[Any]] = set()  # tasks running _Servicer handlers (owned by gRPC)
        self._rng = random.Random()  # back-off jitter only
        self._snapshot_peers: set[int] = set()  # peers a send_snapshot is streaming to right now
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None  # snapshot file I/O, made when needed
        self._on_removed = on_removed
        self._refused: frozenset[int] = frozenset()

    def __repr__(self) -> str:
        return (
            f"GrpcTransport(node_id={self.node_id}, cluster_id={self.cluster_id!r}, listen_addr={self.listen_addr!r}, "
            f"state={self._state}, peers={sorted(self._peer_addrs)})"
        )

    # -- the Transport interface ---------------------------------------------------------------------------------

    @property
    def listen_port(self) -> int | None:
        """The port the server is bound to (useful with port 0), or None before ``start()``."""
        return self._port

    def set_peers(self, peers: Mapping[int, str]) -> None:
        """Set the peer map (id -> "host:port"); see ``Transport.set_peers``. A removed peer's sender task is cancelled
        at once and awaited by ``stop()``; its pending batches are dropped and its status entry removed."""
        wanted = {pid: addr for pid, addr in peers.items() if pid != self.node_id}
        for pid, addr in wanted.items():
            if pid <= 0 or not isinstance(addr, str) or not addr:
                raise ValueError(f"bad peer entry {pid!r}: {addr!r} (want a positive id and a 'host:port')")
        for pid in list(self._peer_addrs):
            if wanted.get(pid) != self._peer_addrs[pid]:
                del self._peer_addrs[pid]
                out = self._outbound.pop(pid, None)
                if out is not None:
                    self._retire(out)
                if pid not in wanted:
                    self._stats.pop(pid, None)
                    log.info("node %d: peer %d removed", self.node_id, pid)
        for pid, addr in wanted.items():
            if pid in self._peer_addrs:
                continue
            self._peer_addrs[pid] = addr
            stats = self._stats.get(pid)
            if stats is None:
                stats = self._stats[pid] = _PeerStats(addr)
            stats.addr = addr
            stats.connected = False
            if self._state is _STOPPED:
                continue
            out = self._outbound[pid] = _Outbound(pid, addr, stats)
            if self._state is _RUNNING:
                self._spawn(out)
            log.info("node %d: peer %d at %s", self.node_id, pid, addr)

    def refuse(self, node_ids: Collection[int]) -> None:
        """See ``Transport.refuse`` and the module docstring."""
        self._refused = frozenset(node_ids)

    def send(self, msgs: Sequence[Message]) -> None:
        """Queue ``msgs`` (see ``Transport.send`` and the module docstring for when batches are dropped)."""
        if not msgs or self._state is _STOPPED:
            return
        for to, batch in group_by_destination(msgs).items():
            out = self._outbound.get(to)
            if out is None:
                self._drop_unroutable(to, batch)
                continue
            if not out.accepting:
                out.stats.frames_dropped += 1  # backing off after a failure that was already reported
                continue
            pending = out.pending
            if len(pending) >= self._max_queue_frames:
                out.stats.frames_dropped += 1
                self._report_unreachable(to)
                continue
            pending.append(batch)
            out.wakeup.set()

    async def start(self) -> None:
        """Bind the listen address, start the server and one sender task per configured peer.

        Raises ``ListenError`` (an ``OSError`` whose errno says why, e.g. ``EADDRINUSE``) if the address cannot be
        bound; the transport can then be started again or stopped."""
        if self._state is not _NEW:
            raise RuntimeError(f"{self!r} cannot be started again")
        loop = asyncio.get_running_loop()
        server = grpc.aio.server(options=self._server_options)
        raft_pb2_grpc.add_RaftPeerServicer_to_server(_Servicer(self), server)  # type: ignore[no-untyped-call]
        try:
            port = server.add_insecure_port(self.listen_addr)
        except RuntimeError as exc:  # gRPC's only signal: "Failed to bind to address ..."
            why = _probe_bind(self.listen_addr)
            code = why.errno if why is not None and why.errno is not None else errno.EADDRINUSE
            reason = why.strerror if why is not None and why.strerror else "address already in use or unavailable"
            what = f"node {self.node_id} cannot listen for Raft peers on {self.listen_addr}: {reason}"
            raise ListenError(code, what, self.listen_addr) from exc
        await server.start()
        self._loop = loop
        self._server = server
        self._port = port
        self._state = _RUNNING
        for out in self._outbound.values():
            self._spawn(out)
        log.info("node %d listening for peers on %s (port %d)", self.node_id, self.listen_addr, port)

    async def stop(self) -> None:
        """Cancel and await every sender task, close the channels, stop the server. Idempotent."""
        async with self._stop_lock:
            if self._state is _STOPPED:
                return
            self._state = _STOPPED
            tasks = [out.task for out in self._outbound.values() if out.task is not None]
            tasks.extend(self._retiring)
            for task in tasks:
                task.cancel()
            try:
                await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                for out in self._outbound.values():
                    out.task = None
                    out.pending.clear()
                    out.stats.connected = False
                if self._server is not None:
                    server, self._server = self._server, None
                    await server.stop(None)  # cancels the incoming streams
                    # gRPC returns before the handler tasks have unwound: wait for them, then yield once more so
                    # gRPC's wrapper task around each handler ("rpc_task") finishes too. Nothing is left behind.
                    handlers = {t for t in self._handler_tasks if not t.done()}
                    if handlers:
                        await asyncio.wait(handlers, timeout=5.0)
                    await asyncio.sleep(0)
                if self._executor is not None:
                    # Not waiting: a file operation still running finishes (and its clean-up runs) in the background.
                    self._executor.shutdown(wait=False)
            log.info("node %d: peer transport stopped", self.node_id)

    def peer_status(self) -> dict[int, PeerStatus]:
        """A snapshot per peer: every configured peer, plus any other node that sent us frames (or that we tried to
        send to without an address)."""
        return {pid: st.snapshot() for pid, st in sorted(self._stats.items())}

    # -- sending ----------------------------------------------------------------------------------------------------

    def _spawn(self, out: _Outbound) -> None:
        assert self._loop is not None
        out.task = self._loop.create_task(self._sender(out), name=f"raftkv-transport-{self.node_id}->{out.peer_id}")

    def _retire(self, out: _Outbound) -> None:
        out.accepting = False
        out.pending.clear()
        task, out.task = out.task, None
        if task is not None and not task.done():
            task.cancel()
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    def _drop_unroutable(self, to: int, batch: list[Message]) -> None:
        if to == self.node_id:
            log.debug("node %d: dropping %d message(s) addressed to itself", self.node_id, len(batch))
            return
        stats = self._stats.get(to)
        if stats is None:
            stats = self._stats[to] = _PeerStats()
        stats.frames_dropped += 1
        stats.last_error = f"no address configured for node {to}"
        log.debug("node %d: no address for node %d; dropped %d message(s)", self.node_id, to, len(batch))
        self._report_unreachable(to)

    def _report_removed(self, peer: int) -> None:
        if self._state is not _RUNNING or self._on_removed is None:
            return
        assert self._loop is not None
        on_removed = self._on_removed
        self._loop.call_soon(lambda: self._state is _RUNNING and on_removed(peer))

    def _report_unreachable(self, peer: int) -> None:
        if self._state is not _RUNNING or peer in self._unreachable_pending:
            return
        assert self._loop is not None
        self._unreachable_pending.add(peer)
        self._loop.call_soon(self._fire_unreachable, peer)

    def _fire_unreachable(self, peer: int) -> None:
        self._unreachable_pending.discard(peer)
        if self._state is not _RUNNING:
            return
        try:
            self._on_unreachable(peer)
        except Exception:
            log.exception("node %d: on_unreachable(%d) raised", self.node_id, peer)

    async def _sender(self, out: _Outbound) -> None:
        """The one task that writes to ``out.peer_id``: open a stream, pump batches into it until it fails, back off,
        repeat — until cancelled (peer removed or transport stopped)."""
        loop = asyncio.get_running_loop()
        lo, hi = self._backoff_s
        delay = lo
        channel = grpc.aio.insecure_channel(out.addr, options=self._channel_options)
        out.channel = channel
        try:
            open_stream = raft_pb2_grpc.RaftPeerStub(channel).Stream  # type: ignore[no-untyped-call]
            while True:
                out.accepting = True
                call = open_stream(metadata=self._stream_metadata(out.peer_id), wait_for_ready=False)
                call.add_done_callback(out.on_call_done)
                opened = loop.time()
                try:
                    error = await self._pump(out, call)
                finally:
                    await _close_call(call)
                if await _refused_as_removed(call):
                    error = f"node {out.peer_id} refuses us: this node was removed from the cluster"
                    self._report_removed(out.peer_id)
                self._on_stream_failed(out, error)
                if loop.time() - opened >= hi:
                    delay = lo  # that stream was healthy for a while: this is a fresh failure
                await asyncio.sleep(min(hi, delay * self._rng.uniform(1.0, 1.25)))
                delay = min(hi, delay * 2)
        finally:
            out.accepting = False
            out.stats.connected = False
            out.channel = None
            await channel.close()

    def _stream_metadata(self, peer_id: int) -> tuple[tuple[str, str], ...]:
        return ((_MD_CLUSTER, self.cluster_id), (_MD_FROM, str(self.node_id)), (_MD_TO, str(peer_id)))

    async def _handshake(self, out: _Outbound, call: Any) -> str:
        """Wait for the peer's response headers naming its node id; return "" if they came, else why not."""
        try:
            async with asyncio.timeout(_HANDSHAKE_TIMEOUT_S):
                headers = await call.initial_metadata()
                their_id = headers.get(_MD_NODE) if headers is not None else None
                if their_id is None:
                    # A call that failed resolves its (empty) headers just before its status: wait for the status.
                    await call.code()
        except TimeoutError:
            if call.done():
                return await _describe_ended(call)
            return (
                f"no handshake from {out.addr} within {_HANDSHAKE_TIMEOUT_S:g} s "
                "(is the peer frozen, overloaded, or not a raftkv node?)"
            )
        if call.done():
            return await _describe_ended(call)
        if their_id != str(out.peer_id):
            return f"misrouted: {out.addr} is node {their_id}, not node {out.peer_id} (check the peer address map)"
        return ""

    async def _pump(self, out: _Outbound, call: Any) -> str:
        """Handshake, then write pending batches into ``call`` until it fails; return why it failed.

        The stream counts as connected only once the peer's server has checked our cluster id and answered with its
        response headers: a TCP connection alone proves little (the kernel accepts connections for a frozen process).
        Batches sent meanwhile wait in the pending list."""
        try:
            error = await self._handshake(out, call)
            if error:
                return error
            self._on_connected(out)
            while True:
                if not out.pending:
                    out.wakeup.clear()
                    if call.done():
                        break
                    await out.wakeup.wait()
                if call.done():
                    break
                batches, out.pending = out.pending, []
                await self._write(out, call, batches)
        except Exception as exc:  # AioRpcError, or InvalidStateError when writing to a call that just finished
            if call.done():
                return await _describe_ended(call)
            return _describe(exc)
        return await _describe_ended(call)

    async def _write(self, out: _Outbound, call: Any, batches: list[list[Message]]) -> None:
        """Write ``batches`` as one frame (split if over the size limit). On failure count every batch not written
        as dropped and re-raise."""
        stats = out.stats
        msgs = batches[0] if len(batches) == 1 else list(chain.from_iterable(batches))
        try:
            data = encode_messages(msgs)
        except Exception:  # a bug upstream (an unencodable value): not the peer's fault, keep the stream
            log.exception("node %d: cannot encode %d message(s) for peer %d", self.node_id, len(msgs), out.peer_id)
            stats.frames_dropped += len(batches)
            return
        if len(data) > self._max_payload_bytes:
            if len(batches) > 1:
                for i, batch in enumerate(batches):
                    try:
                        await self._write(out, call, [batch])
                    except BaseException:
                        stats.frames_dropped += len(batches) - i - 1
                        raise
                return
            stats.frames_dropped += 1
            stats.last_error = (
                f"dropped a frame of {len(data)} bytes: over the {self._max_payload_bytes}-byte limit "
                "(a snapshot too large to send in one message?)"
            )
            log.error("node %d: to peer %d: %s", self.node_id, out.peer_id, stats.last_error)
            self._report_unreachable(out.peer_id)
            return
        frame = raft_pb2.PeerFrame(to=out.peer_id, cluster_id=self.cluster_id, messages=data, **{"from": self.node_id})
        try:
            await call.write(frame)
        except BaseException:
            stats.frames_dropped += len(batches)
            raise
        stats.frames_sent += 1
        stats.bytes_sent += len(data)

    def _on_connected(self, out: _Outbound) -> None:
        out.stats.connected = True
        if out.down_since is not None:
            down_s = time.monotonic() - out.down_since
            log.info("node %d: peer %d at %s reachable again after %.1f s", self.node_id, out.peer_id, out.addr, down_s)
            out.down_since = None
            out.last_warned = ""
        else:
            log.debug("node %d: stream to peer %d at %s open", self.node_id, out.peer_id, out.addr)

    def _on_stream_failed(self, out: _Outbound, error: str) -> None:
        stats = out.stats
        stats.connected = False
        stats.last_error = error
        out.accepting = False
        if out.pending:
            stats.frames_dropped += len(out.pending)
            out.pending = []
        self._report_unreachable(out.peer_id)
        # Logging: one WARNING when the peer becomes unreachable; while it stays down, retries log at DEBUG, except
        # that a different error is warned about again at most every _REWARN_S (a frozen peer alternates errors).
        now = time.monotonic()
        if out.down_since is None or (error != out.last_warned and now - out.last_warned_at >= _REWARN_S):
            log.warning("node %d: peer %d at %s unreachable: %s", self.node_id, out.peer_id, out.addr, error)
            out.last_warned, out.last_warned_at = error, now
        else:
            log.debug("node %d: peer %d at %s still unreachable: %s", self.node_id, out.peer_id, out.addr, error)
        if out.down_since is None:
            out.down_since = now

    # -- snapshots --------------------------------------------------------------------------------------------------

    async def send_snapshot(
        self, peer: int, path: Path, *, chunk_bytes: int = 1 << 20, timeout_s: float | None = None
    ) -> bool:
        """Stream the snapshot file at ``path`` to ``peer`` (see "Snapshots" in the module docstring).

        Returns True once the peer answered that the file arrived whole, verified and durable; False on any
        failure, logged at WARNING with the peer, the size and the error: the peer is not configured or down, the
        file cannot be read, the peer refused it (another cluster, no snapshot directory, a corrupt file), the
        stream broke, the channel closed, or ``timeout_s`` (the whole transfer's deadline) passed. Also False, at
        once, while another transfer to the same peer runs. False does not prove that the peer has nothing: one
        that had the whole file when we gave up keeps it (see "Snapshots"). The normal message stream to the peer
        is neither blocked nor reordered.
        ValueError if ``chunk_bytes`` is not positive or over the gRPC message limit."""
        if not 0 < chunk_bytes <= self._max_payload_bytes:
            raise ValueError(f"chunk_bytes must be in 1..{self._max_payload_bytes}, got {chunk_bytes}")
        path = Path(path)
        out = self._outbound.get(peer)
        if out is not None and out.channel is None and out.task is not None:
            await asyncio.sleep(0)  # a sender task spawned a moment ago opens its channel on its first step
        if self._state is not _RUNNING or out is None or out.channel is None:
            why = "the transport is not running" if self._state is not _RUNNING else "no address configured for it"
            self._snapshot_failed(peer, path, None, 0, why)
            return False
        if peer in self._snapshot_peers:
            self._snapshot_failed(peer, path, None, 0, "another snapshot transfer to it is still running")
            return False
        self._snapshot_peers.add(peer)
        try:
            return await self._stream_snapshot(out, out.channel, path, chunk_bytes, timeout_s)
        finally:
            self._snapshot_peers.discard(peer)

    def _snapshot_executor(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                _SNAPSHOT_THREADS, thread_name_prefix=f"raftkv-snapshot-{self.node_id}"
            )
        return self._executor

    def _snapshot_failed(self, peer: int, path: Path, size: int | None, sent: int, why: str) -> None:
        what = f"{size} bytes" if size is not None else "size unknown"
        log.warning(
            "node %d: snapshot %s (%s) to peer %d failed after %d bytes: %s", self.node_id, path, what, peer, sent, why
        )

    async def _stream_snapshot(
        self, out: _Outbound, channel: grpc.aio.Channel, path: Path, chunk_bytes: int, timeout_s: float | None
    ) -> bool:
        loop = asyncio.get_running_loop()
        started = loop.time()
        io = _Blocking(self._snapshot_executor())
        size: int | None = None
        sent = 0
        call: Any = None
        f: BinaryIO | None = None
        try:
            async with asyncio.timeout(timeout_s):
                f = fh = await io.run(_open_for_reading, path)
                size = os.fstat(fh.fileno()).st_size
                install = raft_pb2_grpc.RaftPeerStub(channel).InstallSnapshot  # type: ignore[no-untyped-call]
                call = install(metadata=self._stream_metadata(out.peer_id), timeout=timeout_s, wait_for_ready=False)
                while True:
                    chunk: bytes = await io.run(fh.read, min(chunk_bytes, size - sent))
                    if not chunk and sent < size:
                        raise OSError(f"{path} shrank while being sent (it has only {sent} of {size} bytes)")
                    n = len(chunk)
                    last = sent + n >= size
                    msg = raft_pb2.SnapshotChunk(
                        to=out.peer_id,
                        cluster_id=self.cluster_id,
                        data=chunk,
                        total_bytes=size if not sent else 0,
                        last=last,
                        **{"from": self.node_id},
                    )
                    del chunk  # the message has its own copy: hold one, not two
                    await call.write(msg)
                    del msg
                    sent += n
                    if last:
                        break
                await call.done_writing()
                reply = await call
        except TimeoutError:
            self._snapshot_failed(out.peer_id, path, size, sent, f"no answer within {timeout_s:g} s")
            return False
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # our caller cancelled us
            # gRPC cancelled the call itself: its channel closed (this transport stops, or the peer was removed)
            self._snapshot_failed(out.peer_id, path, size, sent, "the channel to the peer was closed")
            return False
        except Exception as exc:  # AioRpcError, InvalidStateError (the peer answered early), OSError
            why = await _early_reply(call) if call is not None and call.done() else ""
            self._snapshot_failed(out.peer_id, path, size, sent, why or _describe(exc))
            return False
        finally:
            if call is not None:
                await _close_call(call)
            if f is not None:
                io.cleanup(f.close)
            else:
                io.dispose_result(lambda opened: opened.close())
        if not reply.ok:
            self._snapshot_failed(out.peer_id, path, size, sent, f"refused by the peer: {reply.error}")
            return False
        elapsed = loop.time() - started
        log.info(
            "node %d: sent snapshot %s (%d bytes) to peer %d in %.2f s (%.1f MB/s)",
            self.node_id,
            path.name,
            sent,
            out.peer_id,
            elapsed,
            sent / max(elapsed, 1e-9) / 1e6,
        )
        return True

    async def _receive_snapshot(
        self, chunks: AsyncIterator[raft_pb2.SnapshotChunk], context: Any
    ) -> raft_pb2.SnapshotReply:
        """The server side of ``InstallSnapshot`` (see "Snapshots" in the module docstring)."""
        me = self.node_id
        md = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        claimed_from = md.get(_MD_FROM, "")
        frm = int(claimed_from) if claimed_from.isdigit() else 0
        theirs = md.get(_MD_CLUSTER)
        if theirs is not None and theirs != self.cluster_id:
            return _refused(self._refuse_cluster(frm, theirs, context.peer()))
        to = md.get(_MD_TO)
        if to is not None and to != str(me):
            return _refused(self._misrouted(frm, to))
        open_sink, snapshot_dir = self._snapshot_sink, self._snapshot_dir
        if self._on_snapshot is None or open_sink is None or snapshot_dir is None or self._state is not _RUNNING:
            why = f"node {me} does not accept snapshots (no snapshot directory configured)"
            log.warning("node %d: refusing a snapshot from node %d: %s", me, frm, why)
            return _refused(why)
        io = _Blocking(self._snapshot_executor())
        sink: SnapshotSink | None = None
        received: ReceivedSnapshot | None = None
        finishing = False
        nbytes = 0
        why = ""
        try:
            async for chunk in chunks:
                chunk_from: int = getattr(chunk, "from")  # a Python keyword: no attribute syntax
                frm = frm or chunk_from  # (for the log: a client without the handshake names itself here)
                if chunk.cluster_id != self.cluster_id:
                    why = self._refuse_cluster(chunk_from, chunk.cluster_id, context.peer())
                    break
                if chunk.to != me:
                    why = self._misrouted(chunk_from, str(chunk.to))
                    break
                if sink is None:
                    frm = chunk_from
                    sink = await io.run(open_sink, snapshot_dir, chunk.total_bytes or None)
                elif chunk_from != frm:
                    why = f"one snapshot stream carries chunks from nodes {frm} and {chunk_from}"
                    break
                data = chunk.data  # each access to a bytes field makes a new copy: take it once
                if data:
                    await io.run(sink.write_chunk, data)
                    nbytes += len(data)
                del data
                if chunk.last:
                    finishing = True
                    received = await io.run(sink.finish)
                    break
            else:
                why = f"the stream ended before the last chunk ({nbytes} bytes received)"
        except Exception as exc:  # the sink's OSError or CorruptSnapshotError, or the call failing
            why = _describe(exc)
        finally:
            if sink is not None and received is None:
                if finishing:  # the call was cancelled (the sender gave up, or we stop) while the file was finished
                    io.dispose_result(lambda info: self._snapshot_abandoned(frm, info.path))
                io.cleanup(sink.abort)
            elif sink is None:
                io.dispose_result(lambda opened: opened.abort())
        if received is None:
            log.warning("node %d: snapshot from node %d failed after %d bytes: %s", me, frm, nbytes, why)
            return _refused(why)
        log.info("node %d: received snapshot %s (%d bytes) from node %d", me, received.path.name, nbytes, frm)
        self._snapshot_received(frm, received.path)
        return raft_pb2.SnapshotReply(ok=True)

    def _snapshot_received(self, frm: int, path: Path) -> None:
        assert self._on_snapshot is not None
        try:
            self._on_snapshot(frm, path)
        except Exception:
            log.exception("node %d: on_snapshot raised on a snapshot from node %d", self.node_id, frm)

    def _snapshot_abandoned(self, frm: int, path: Path) -> None:
        """The sink finished a file after its call was cancelled (any thread). The file is whole and verified: keep
        it as delivered, on the loop — the sender's answer was lost, not the file — unless this transport stopped,
        which tells nobody any more: then remove it. Either way no file is left that ``on_snapshot`` was not
        given."""
        loop = self._loop
        if self._state is _RUNNING and loop is not None:
            try:
                loop.call_soon_threadsafe(self._keep_abandoned, frm, path)
                return
            except RuntimeError:  # the loop is closed
                pass
        _remove_file(path)

    def _keep_abandoned(self, frm: int, path: Path) -> None:
        if self._state is not _RUNNING:
            _remove_file(path)  # stopped since the sink finished (rare: one unlink on the loop)
            return
        log.info("node %d: kept snapshot %s although node %d gave up on sending it", self.node_id, path.name, frm)
        self._snapshot_received(frm, path)

    # -- receiving --------------------------------------------------------------------------------------------------

    def _refuse_cluster(self, frm: int, theirs: str, peer: str) -> str:
        why = (
            f"cluster id mismatch: node {frm} ({peer}) belongs to cluster {theirs!r}, but node {self.node_id} at "
            f"{self.listen_addr} belongs to cluster {self.cluster_id!r}; its messages are refused"
        )
        self._log_refusal(("cluster", frm, theirs), why)
        return why

    def _misrouted(self, frm: int, to: str) -> str:
        why = (
            f"misrouted: node {frm} addressed node {to}, but this is node {self.node_id} at {self.listen_addr} "
            "(check the peer address map)"
        )
        self._log_refusal(("misrouted", frm, to), why)
        return why

    def _log_refusal(self, key: tuple[str, int, str], why: str) -> None:
        """WARNING the first time per (kind, node, claim), DEBUG after that: the refused node reconnects every
        second or so, and one line per attempt would drown the log."""
        if key in self._refusals_logged:
            log.debug("node %d: %s", self.node_id, why)
            return
        if len(self._refusals_logged) < 1024:  # bounded: a misbehaving network cannot grow it forever
            self._refusals_logged.add(key)
        log.warning("node %d: %s", self.node_id, why)

    def _received(self, frm: int, msgs: list[Message]) -> None:
        stats = self._stats.get(frm)
        if stats is None:
            stats = self._stats[frm] = _PeerStats()
        stats.frames_received += 1
        stats.last_recv_monotonic = time.monotonic()
        if not msgs:
            return
        if not LOCAL_MESSAGES.isdisjoint(map(_TYPE, msgs)):
            log.warning("node %d: dropping local-only message types received from node %d", self.node_id, frm)
            msgs = [m for m in msgs if m[0] not in LOCAL_MESSAGES]
            if not msgs:
                return
        try:
            self._on_messages(msgs)
        except Exception:
            log.exception("node %d: on_messages raised on a batch from node %d", self.node_id, frm)


def _remove_file(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove the snapshot file %s nobody was told of: %s", path, exc)


def _open_for_reading(path: Path) -> BinaryIO:
    return open(path, "rb")  # closed by the caller (through _Blocking.cleanup)


def _refused(why: str) -> raft_pb2.SnapshotReply:
    return raft_pb2.SnapshotReply(ok=False, error=why)


async def _early_reply(call: Any) -> str:
    """Why a snapshot call the peer already answered (while we were still writing) failed, or ""."""
    try:
        reply = await call
    except Exception as exc:
        return _describe(exc)
    return "" if reply.ok else f"refused by the peer: {reply.error}"


async def _refuse_removed(context: Any, me: int, frm: int) -> None:
    """End a stream from a node removed from the cluster, saying so in a way its sender recognizes."""
    await context.abort(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"node {me} refuses node {frm}: it was removed from the cluster",
        trailing_metadata=((_MD_REMOVED, "1"),),
    )


async def _refused_as_removed(call: Any) -> bool:
    """Whether a finished stream was refused because we were removed from the cluster (``_refuse_removed``)."""
    if not call.done() or call.cancelled():
        return False
    try:
        md = await call.trailing_metadata()
    except Exception:
        return False
    return bool(md) and any(k == _MD_REMOVED for k, _ in md)


def _limit(value: object) -> int:
    """A gRPC message-length option as a byte count (-1 or absent means gRPC's own cap, 2 GiB)."""
    if isinstance(value, int) and value > 0:
        return value
    return 2**31 - 1


class _Servicer:
    """``raftkv.v1.RaftPeer`` for one ``GrpcTransport``."""

    __slots__ = ("_t",)

    def __init__(self, transport: GrpcTransport) -> None:
        self._t = transport

    async def Stream(self, request_iterator: AsyncIterator[raft_pb2.PeerFrame], context: Any) -> raft_pb2.StreamReply:
        t = self._t
        task = asyncio.current_task()
        if task is not None:  # tracked so that stop() can wait until gRPC has unwound it
            t._handler_tasks.add(task)
            task.add_done_callback(t._handler_tasks.discard)
        me = t.node_id
        cluster_id = t.cluster_id
        # The handshake (absent when the client is not a GrpcTransport: then only the per-frame checks apply).
        md = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        claimed_from = md.get(_MD_FROM, "")
        frm_hint = int(claimed_from) if claimed_from.isdigit() else 0
        theirs = md.get(_MD_CLUSTER)
        if theirs is not None and theirs != cluster_id:
            why = t._refuse_cluster(frm_hint, theirs, context.peer())
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, why)
        to = md.get(_MD_TO)
        if to is not None and to != str(me):
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, t._misrouted(frm_hint, to))
        if frm_hint in t._refused:
            await _refuse_removed(context, me, frm_hint)
        await context.send_initial_metadata(((_MD_NODE, str(me)),))
        async for frame in request_iterator:
            frm: int = getattr(frame, "from")  # a Python keyword: no attribute syntax
            if frm in t._refused:
                await _refuse_removed(context, me, frm)
            if frame.cluster_id != cluster_id:
                why = t._refuse_cluster(frm, frame.cluster_id, context.peer())
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, why)
            if frame.to != me:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, t._misrouted(frm, str(frame.to)))
            try:
                msgs = decode_messages(frame.messages)
                if msgs and set(map(_TO, msgs)) != {me}:
                    raise CodecError(f"frame for node {me} carries messages addressed to other nodes")
            except CodecError as exc:
                log.warning("node %d: refusing a corrupt frame from node %d (%s): %s", me, frm, context.peer(), exc)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"corrupt frame from node {frm}: {exc}")
            t._received(frm, msgs)
        return raft_pb2.StreamReply()

    async def InstallSnapshot(
        self, request_iterator: AsyncIterator[raft_pb2.SnapshotChunk], context: Any
    ) -> raft_pb2.SnapshotReply:
        t = self._t
        task = asyncio.current_task()
        if task is not None:
            t._handler_tasks.add(task)
            task.add_done_callback(t._handler_tasks.discard)
        return await t._receive_snapshot(request_iterator, context)
