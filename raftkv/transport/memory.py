"""``MemoryNetwork`` and ``MemoryTransport``: a whole cluster's network inside one event loop, for tests.

Every ``MemoryTransport`` registers with one ``MemoryNetwork``; ``send`` puts each per-destination batch on the
(sender, receiver) link, and the loop delivers it with ``call_soon`` (or ``call_later`` when the network has a delay).
No tasks are created. Fault hooks live on the network:

* ``partition(groups)``: only nodes in the same group can talk; a node named in no group is cut off from everyone.
  A new ``partition`` replaces the previous one; ``heal()`` removes it.
* ``block(frm, to)``: cut one direction only (``unblock`` restores it; ``heal()`` removes every block).
* ``drop_rate``: probability that a batch is silently lost in flight (seeded: ``MemoryNetwork(seed=...)``).
* ``delay_s = (min, max)``: each batch is delivered after a uniform random delay in that range.
* a transport that is not started, or stopped (a crashed node), receives nothing — batches in flight to it are lost —
  and its peers' batches to it are dropped with ``on_unreachable``.

Guarantees match ``GrpcTransport``: order per (sender, receiver) pair — even with random delays, a batch is never
delivered before an earlier one on the same link — at most once, callbacks on the loop thread and never from inside
``send``. A cut link (partition or block) behaves like a failed stream: the batch is dropped, counted in the sender's
``frames_dropped``, and ``on_unreachable`` is called (coalesced per peer). Cuts are checked when a batch is sent and
again when it would be delivered, so a partition also loses what was in flight. Random drops are invisible to the
sender, as on a real network; they are counted in ``MemoryNetwork.frames_lost``.

With ``MemoryNetwork(roundtrip_codec=True)`` every batch goes through ``codec.encode_messages`` and
``codec.decode_messages``, so a test also proves that everything the core sends survives the wire format.

Snapshots: ``send_snapshot`` copies the file, a chunk at a time on a worker thread, through the receiver's
``SnapshotSink`` into its ``snapshot_dir`` (so it is verified exactly as ``GrpcTransport`` verifies it), then calls
the receiver's ``on_snapshot`` on the loop. It returns False (with a WARNING) when the sender is stopped, the peer has
no address, is not running, is cut off (checked before and after the copy), takes no snapshots or refuses the file,
when ``timeout_s`` passes, or while another transfer to that peer runs. A copy that fails, or that the sender gives
up on (cancelled, timed out) before the file is finished, leaves no file behind; the copy checks for that before
every chunk and before finishing. A file finished as the sender gave up is given to the receiver's ``on_snapshot``
all the same (the answer was lost, not the file), and one finished after the receiver stopped is removed: the
receiver never keeps a file it was not told of.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path

from raftkv.codec import decode_messages, encode_messages
from raftkv.raft.types import LOCAL_MESSAGES, Message
from raftkv.transport import OnMessages, OnRemoved, OnUnreachable, PeerStatus, group_by_destination
from raftkv.transport.grpc_transport import OnSnapshot, OpenSnapshotSink

__all__ = ["MemoryNetwork", "MemoryTransport"]

log = logging.getLogger("raftkv.transport")


class _Link:
    """The batches in flight from one node to another, in send order, with their due times."""

    __slots__ = ("frm", "handle", "queue", "to")

    def __init__(self, frm: int, to: int) -> None:
        self.frm = frm
        self.to = to
        self.queue: deque[tuple[float, MemoryTransport, list[Message]]] = deque()  # (due, receiver, batch)
        self.handle: asyncio.Handle | None = None


class MemoryNetwork:
    """The shared medium of a set of ``MemoryTransport``s, with fault hooks (see the module docstring)."""

    def __init__(
        self,
        *,
        seed: int = 0,
        drop_rate: float = 0.0,
        delay_s: tuple[float, float] = (0.0, 0.0),
        roundtrip_codec: bool = False,
    ) -> None:
        self.drop_rate = drop_rate
        self.delay_s = delay_s
        self.roundtrip_codec = roundtrip_codec
        self.frames_delivered = 0
        self.frames_lost = 0  # lost to drop_rate, or in flight when a link was cut, its receiver stopped or left
        self._rng = random.Random(seed)
        self._nodes: dict[int, MemoryTransport] = {}  # the running transports
        self._group_of: dict[int, int] | None = None
        self._blocked: set[tuple[int, int]] = set()
        self._links: dict[tuple[int, int], _Link] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return (
            f"MemoryNetwork(nodes={sorted(self._nodes)}, partitioned={self._group_of is not None}, "
            f"blocked={sorted(self._blocked)}, drop_rate={self.drop_rate}, delay_s={self.delay_s})"
        )

    # -- fault hooks ------------------------------------------------------------------------------------------------

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        """Split the network: nodes talk only within their group; nodes in no group talk to nobody."""
        group_of: dict[int, int] = {}
        for i, group in enumerate(groups):
            for node in group:
                if node in group_of:
                    raise ValueError(f"node {node} is in two partition groups")
                group_of[node] = i
        self._group_of = group_of

    def block(self, frm: int, to: int) -> None:
        """Drop everything ``frm`` sends to ``to`` (one direction) until ``unblock`` or ``heal``."""
        self._blocked.add((frm, to))

    def unblock(self, frm: int, to: int) -> None:
        self._blocked.discard((frm, to))

    def heal(self) -> None:
        """Remove the partition and every block (``drop_rate`` and ``delay_s`` are left as they are)."""
        self._group_of = None
        self._blocked.clear()

    def can_reach(self, frm: int, to: int) -> bool:
        """Whether the link frm -> to is cut by a partition or a block (ignores whether ``to`` is running)."""
        if (frm, to) in self._blocked:
            return False
        g = self._group_of
        if g is None:
            return True
        a = g.get(frm)
        return a is not None and a == g.get(to)

    # -- plumbing for MemoryTransport -------------------------------------------------------------------------------

    def _register(self, t: MemoryTransport, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not None and self._loop is not loop and not self._loop.is_closed():
            raise RuntimeError("all transports of a MemoryNetwork must run on the same event loop")
        current = self._nodes.get(t.node_id)
        if current is not None and current is not t:
            raise RuntimeError(f"node {t.node_id} is already running on this MemoryNetwork")
        if self._loop is not loop:
            self._links.clear()  # a new event loop (a new test): nothing from the old one is in flight any more
        self._loop = loop
        self._nodes[t.node_id] = t

    def _unregister(self, t: MemoryTransport) -> None:
        if self._nodes.get(t.node_id) is t:
            del self._nodes[t.node_id]
        for link in self._links.values():  # what was in flight to it is lost
            if link.to == t.node_id:
                self._drop_in_flight(link.frm, link.to)

    def _drop_in_flight(self, frm: int, to: int) -> None:
        """Lose what is on the way from ``frm`` to ``to`` (``to`` stopped, or ``frm`` removed it from its peers)."""
        link = self._links.get((frm, to))
        if link is None or not link.queue:
            return
        self.frames_lost += len(link.queue)
        link.queue.clear()
        if link.handle is not None:
            link.handle.cancel()
            link.handle = None

    def _transmit(self, sender: MemoryTransport, to: int, batch: list[Message]) -> str:
        """Put ``batch`` on the wire; return "" if it left, else why it was refused (the sender counts it)."""
        receiver = self._nodes.get(to)
        if receiver is None:
            return f"node {to} is not running"
        if not self.can_reach(sender.node_id, to):
            return f"link {sender.node_id}->{to} is cut"
        if sender.node_id in receiver._refused:
            sender._refused_by(to)
            return f"node {to} refuses node {sender.node_id}: it was removed from the cluster"
        if self.drop_rate and self._rng.random() < self.drop_rate:
            self.frames_lost += 1
            return ""  # lost in flight: the sender cannot tell
        if self.roundtrip_codec:
            batch = decode_messages(encode_messages(batch))
        assert self._loop is not None
        loop = self._loop
        key = (sender.node_id, to)
        link = self._links.get(key)
        if link is None:
            link = self._links[key] = _Link(sender.node_id, to)
        lo, hi = self.delay_s
        due = loop.time() + (self._rng.uniform(lo, hi) if hi > 0 else 0.0)
        if link.queue and link.queue[-1][0] > due:
            due = link.queue[-1][0]  # never overtake an earlier batch on the same link
        link.queue.append((due, receiver, batch))
        if link.handle is None:
            self._schedule(link, loop)
        return ""

    def _schedule(self, link: _Link, loop: asyncio.AbstractEventLoop) -> None:
        delay = link.queue[0][0] - loop.time()
        if delay > 0:
            link.handle = loop.call_later(delay, self._deliver, link)
        else:
            link.handle = loop.call_soon(self._deliver, link)

    def _deliver(self, link: _Link) -> None:
        link.handle = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        queue = link.queue
        while queue and queue[0][0] <= now:
            _, receiver, batch = queue.popleft()
            if self._nodes.get(link.to) is not receiver or not self.can_reach(link.frm, link.to):
                self.frames_lost += 1  # the receiver crashed (or restarted) or the link was cut in flight
                continue
            if link.frm in receiver._refused:
                self.frames_lost += 1  # refused on arrival: the sender hears of it when it next sends
                continue
            self.frames_delivered += 1
            receiver._receive(link.frm, batch)
        if queue:
            self._schedule(link, loop)


class MemoryTransport:
    """A ``Transport`` on a ``MemoryNetwork``. Same interface and guarantees as ``GrpcTransport``; addresses given to
    ``set_peers`` are only recorded (routing is by node id), but sending to a node with no configured address is
    dropped with ``on_unreachable``, exactly as in production. Start once, stop once (a restarted node is a new
    ``MemoryTransport`` with the same id)."""

    def __init__(
        self,
        network: MemoryNetwork,
        node_id: int,
        on_messages: OnMessages,
        on_unreachable: OnUnreachable,
        *,
        on_snapshot: OnSnapshot | None = None,
        snapshot_dir: Path | None = None,
        snapshot_sink: OpenSnapshotSink | None = None,
        on_removed: OnRemoved | None = None,
    ):
        """The snapshot arguments are ``GrpcTransport``'s: all three (accept snapshots) or none."""
        if (on_snapshot is None) != (snapshot_dir is None) or (on_snapshot is None) != (snapshot_sink is None):
            raise ValueError("on_snapshot, snapshot_dir and snapshot_sink go together: give all three or none")
        self.network = network
        self.node_id = node_id
        self._on_messages = on_messages
        self._on_unreachable = on_unreachable
        self._peers: dict[int, str] = {}
        self._sent: dict[int, int] = {}
        self._dropped: dict[int, int] = {}
        self._received: dict[int, int] = {}
        self._last_recv: dict[int, float] = {}
        self._last_error: dict[int, str] = {}
        self._unreachable_pending: set[int] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._stopped = False
        self._on_snapshot = on_snapshot
        self._snapshot_dir = None if snapshot_dir is None else Path(snapshot_dir)
        self._snapshot_sink = snapshot_sink
        self._snapshot_peers: set[int] = set()
        self._on_removed = on_removed
        self._refused: frozenset[int] = frozenset()
        self._removed_pending = False

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped" if self._stopped else "new"
        return f"MemoryTransport(node_id={self.node_id}, {state}, peers={sorted(self._peers)})"

    @property
    def running(self) -> bool:
        return self._running

    def set_peers(self, peers: Mapping[int, str]) -> None:
        """See ``Transport.set_peers``: a removed peer's counters go, and so do the batches still on the way to it
        (what ``GrpcTransport`` had not written yet when its sender was closed)."""
        new = {pid: addr for pid, addr in peers.items() if pid != self.node_id}
        for pid in set(self._peers) - set(new):
            for counters in (self._sent, self._dropped, self._received, self._last_recv, self._last_error):
                counters.pop(pid, None)
            self.network._drop_in_flight(self.node_id, pid)
        self._peers = new

    def send(self, msgs: Sequence[Message]) -> None:
        if not msgs or not self._running:
            return
        for to, batch in group_by_destination(msgs).items():
            if to == self.node_id:
                log.debug("node %d: dropping %d message(s) addressed to itself", self.node_id, len(batch))
                continue
            why = (
                self.network._transmit(self, to, batch) if to in self._peers else f"no address configured for node {to}"
            )
            if why:
                self._dropped[to] = self._dropped.get(to, 0) + 1
                self._last_error[to] = why
                self._report_unreachable(to)
            else:
                self._sent[to] = self._sent.get(to, 0) + 1

    def refuse(self, node_ids: Collection[int]) -> None:
        """See ``Transport.refuse``."""
        self._refused = frozenset(node_ids)

    async def start(self) -> None:
        if self._running or self._stopped:
            raise RuntimeError(f"{self!r} cannot be started again")
        self._loop = asyncio.get_running_loop()
        self.network._register(self, self._loop)
        self._running = True

    async def stop(self) -> None:
        if not self._running:
            self._stopped = True
            return
        self._running = False
        self._stopped = True
        self.network._unregister(self)

    def peer_status(self) -> dict[int, PeerStatus]:
        ids = set(self._peers) | set(self._sent) | set(self._dropped) | set(self._received)
        net = self.network
        return {
            pid: PeerStatus(
                connected=self._running and pid in net._nodes and net.can_reach(self.node_id, pid),
                last_error=self._last_error.get(pid, ""),
                frames_sent=self._sent.get(pid, 0),
                frames_dropped=self._dropped.get(pid, 0),
                bytes_sent=0,  # nothing is encoded (unless roundtrip_codec; not counted either way)
                frames_received=self._received.get(pid, 0),
                last_recv_monotonic=self._last_recv.get(pid),
                addr=self._peers.get(pid, ""),
            )
            for pid in sorted(ids)
        }

    async def send_snapshot(
        self, peer: int, path: Path, *, chunk_bytes: int = 1 << 20, timeout_s: float | None = None
    ) -> bool:
        """``GrpcTransport.send_snapshot`` on the in-memory network (see the module docstring)."""
        if chunk_bytes <= 0:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
        path = Path(path)
        receiver, why = self._snapshot_route(peer)
        if receiver is None:
            return self._snapshot_failed(peer, path, why)
        if peer in self._snapshot_peers:
            return self._snapshot_failed(peer, path, "another snapshot transfer to it is still running")
        self._snapshot_peers.add(peer)
        cancel = threading.Event()
        copy = asyncio.get_running_loop().run_in_executor(None, _copy_through_sink, receiver, path, chunk_bytes, cancel)
        received: Path | None = None
        try:
            async with asyncio.timeout(timeout_s):
                received = await asyncio.shield(copy)  # giving up tells the copy to stop; it is not left unseen
        except TimeoutError:
            return self._snapshot_failed(peer, path, f"not done within {timeout_s:g} s")
        except Exception as exc:
            return self._snapshot_failed(peer, path, f"{type(exc).__name__}: {exc}")
        finally:
            cancel.set()  # stops a copy that is still running (cancelled or timed out) at its next step
            self._snapshot_peers.discard(peer)
            if received is None:
                copy.add_done_callback(functools.partial(receiver._snapshot_abandoned, self.node_id))
        if not receiver._keep_snapshot(self.node_id, received):
            return self._snapshot_failed(peer, path, f"node {peer} stopped during the transfer")
        _, why = self._snapshot_route(peer)
        if why:
            return self._snapshot_failed(peer, path, why)  # the answer is lost; the receiver has the file anyway
        return True

    def _snapshot_route(self, peer: int) -> tuple[MemoryTransport | None, str]:
        """The running receiver ``peer`` if a snapshot can go to it now, else None and why not."""
        if not self._running:
            return None, "the transport is not running"
        if peer not in self._peers:
            return None, f"no address configured for node {peer}"
        receiver = self.network._nodes.get(peer)
        if receiver is None:
            return None, f"node {peer} is not running"
        if not self.network.can_reach(self.node_id, peer):
            return None, f"link {self.node_id}->{peer} is cut"
        if receiver._snapshot_sink is None:
            return None, f"node {peer} does not accept snapshots (no snapshot directory configured)"
        return receiver, ""

    def _snapshot_failed(self, peer: int, path: Path, why: str) -> bool:
        log.warning("node %d: snapshot %s to peer %d failed: %s", self.node_id, path, peer, why)
        return False

    def _keep_snapshot(self, frm: int, path: Path) -> bool:
        """A snapshot file from ``frm`` was finished in our snapshot directory: give it to ``on_snapshot``, or, if
        this transport stopped meanwhile (it tells nobody any more), remove it. Whether it was kept."""
        if not self._running:
            _remove(path)
            return False
        assert self._on_snapshot is not None
        try:
            self._on_snapshot(frm, path)
        except Exception:
            log.exception("node %d: on_snapshot raised on a snapshot from node %d", self.node_id, frm)
        return True

    def _snapshot_abandoned(self, frm: int, copy: asyncio.Future[Path]) -> None:
        """The copy of a transfer ``frm`` gave up on ended. If it still finished the file (the sender gave up as it
        was being finished), keep it as a delivered snapshot whose answer was lost."""
        if copy.cancelled() or copy.exception() is not None:
            return  # the sink removed what it wrote
        path = copy.result()
        if self._keep_snapshot(frm, path):
            log.info("node %d: kept snapshot %s although node %d gave up on sending it", self.node_id, path.name, frm)

    # -- internals --------------------------------------------------------------------------------------------------

    def _receive(self, frm: int, batch: list[Message]) -> None:
        self._received[frm] = self._received.get(frm, 0) + 1
        self._last_recv[frm] = time.monotonic()
        if not LOCAL_MESSAGES.isdisjoint(m.type for m in batch):
            batch = [m for m in batch if m.type not in LOCAL_MESSAGES]
            if not batch:
                return
        try:
            self._on_messages(batch)
        except Exception:
            log.exception("node %d: on_messages raised on a batch from node %d", self.node_id, frm)

    def _refused_by(self, peer: int) -> None:
        """``peer`` refused our batch: we were removed from the cluster. Tell the node (once per burst)."""
        if self._on_removed is None or self._removed_pending or self._loop is None:
            return
        self._removed_pending = True
        self._loop.call_soon(self._fire_removed, peer)

    def _fire_removed(self, peer: int) -> None:
        self._removed_pending = False
        if not self._running or self._on_removed is None:
            return
        try:
            self._on_removed(peer)
        except Exception:
            log.exception("node %d: on_removed(%d) raised", self.node_id, peer)

    def _report_unreachable(self, peer: int) -> None:
        if peer in self._unreachable_pending or self._loop is None:
            return
        self._unreachable_pending.add(peer)
        self._loop.call_soon(self._fire_unreachable, peer)

    def _fire_unreachable(self, peer: int) -> None:
        self._unreachable_pending.discard(peer)
        if not self._running:
            return
        try:
            self._on_unreachable(peer)
        except Exception:
            log.exception("node %d: on_unreachable(%d) raised", self.node_id, peer)


class _TransferCancelled(Exception):
    """The sending side gave up (cancelled or timed out) while the copy was running."""


def _copy_through_sink(receiver: MemoryTransport, path: Path, chunk_bytes: int, cancel: threading.Event) -> Path:
    """Copy ``path`` into ``receiver``'s snapshot directory through its sink, a chunk at a time (a worker thread),
    until ``cancel`` is set. Returns the received file's path; on any failure the sink has removed what it wrote."""
    open_sink, snapshot_dir = receiver._snapshot_sink, receiver._snapshot_dir
    assert open_sink is not None and snapshot_dir is not None
    with open(path, "rb") as f:
        sink = open_sink(snapshot_dir, os.fstat(f.fileno()).st_size)
        try:
            while chunk := f.read(chunk_bytes):
                if cancel.is_set():
                    raise _TransferCancelled(f"the transfer of {path} was abandoned")
                sink.write_chunk(chunk)
            if cancel.is_set():  # abandoned while the last chunk was being written: not worth finishing
                raise _TransferCancelled(f"the transfer of {path} was abandoned")
            return sink.finish().path
        except BaseException:
            sink.abort()
            raise


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove the snapshot file %s nobody was told of: %s", path, exc)
