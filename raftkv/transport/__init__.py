"""How Raft messages travel between nodes: the ``Transport`` seam and its two implementations.

``GrpcTransport`` (production) keeps one long-lived client-streaming gRPC call per ordered pair of nodes, fed by a
bounded per-peer queue; ``MemoryTransport`` on a ``MemoryNetwork`` (tests) delivers in-process on the same event loop,
with fault hooks (partitions, one-way blocks, random drops, delays).

Guarantees every implementation gives the node driver:

* **Order per peer pair.** Messages from node A to node B are delivered to B in the order A passed them to ``send``
  (across calls, too). There is no ordering between different pairs.
* **At most once, maybe not at all.** A message is delivered once or dropped; it is never duplicated by the
  transport. Raft tolerates loss (it retransmits: heartbeats, probes, re-sent appends), so the transport drops
  rather than blocks or buffers without bound: when a peer's queue is full, while a peer is down or backing off,
  or when the peer is unknown. Drops are counted in ``peer_status()``.
* **``send`` never blocks and never raises for network trouble.** It only queues.
* **Callbacks run on the event loop thread**, never from inside ``send`` (they are scheduled with ``call_soon``):
  ``on_messages(batch)`` with each received batch, in order; ``on_unreachable(peer)`` when messages to ``peer`` were
  (or are likely being) lost because it could not be reached. ``on_unreachable`` is a hint for the Raft core
  (``MsgType.UNREACHABLE``: stop pipelining appends to that follower and probe instead); it is coalesced — at most
  one pending notification per peer — so a burst of drops costs one callback, not one per frame.
* **Messages addressed to the local node are dropped** (with a debug log): the core never sends to itself.
* **Local-only message types never cross** (``LOCAL_MESSAGES``): the receiver drops them; a batch left empty is not
  delivered.
* **No stray tasks.** ``stop()`` cancels and awaits every task the transport started; it is idempotent. Once it
  returned no callback runs any more.
* **Membership.** ``set_peers`` may be called before ``start()`` and again at any time: a new peer is connected, a
  removed one closed — what was queued for it is dropped (never delivered later, even if it is added back), its
  ``peer_status`` entry goes and sending to it is sending to a node with no address — and a changed address is
  reconnected. The local node's own id is ignored. A node also hears from nodes it has no address for (a joining
  node hears from the leader before it knows the membership); they show in ``peer_status``.
* **Removed members are told.** After ``refuse(ids)``, nothing from those nodes is delivered, and each is told, on
  its next attempt to send, that it was removed from the cluster: its transport calls its ``on_removed(peer)``
  (``peer``: the node that refused it). That is how a node removed while it was cut off, or before it applied its
  own removal, learns of it.
* **Snapshots** (``send_snapshot``) cross in chunks of at most ``chunk_bytes``, so both ends hold a few chunks,
  never the file; the messages keep flowing, in order, meanwhile; at most one transfer per peer runs at a time.
  ``True`` means the peer verified the file, made it durable under its final name in its snapshot directory and
  gave it to its ``on_snapshot`` (before ``send_snapshot`` returned). ``False`` (or ``CancelledError``, when the
  caller was cancelled) means the transfer is not known to have succeeded, *not* that the peer has nothing: a
  sender that gives up while the receiver finishes the file cannot take the file back, only the answer is lost,
  and the receiver gives the whole, verified file to ``on_snapshot`` all the same. Raft tolerates that, as etcd's
  does a snapshot reported failed that arrived anyway: the node sends the ``MsgSnap`` naming the file only after
  ``True``, and a follower installs a snapshot only when that message arrives. What is promised is that nothing
  is orphaned: once the receiver is done with a transfer, whatever its outcome (refused, failed, cancelled, timed
  out, either end stopped), its snapshot directory holds no temporary file of it and no file its ``on_snapshot``
  was not given. A transfer abandoned before the receiver had the whole file leaves nothing; a receiver that stops
  before it could tell ``on_snapshot`` removes the file.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from raftkv.raft.types import Message

OnMessages = Callable[[list[Message]], None]
"""Called on the event loop thread with a received batch (in order per sender). It must be cheap: enqueue only."""

OnUnreachable = Callable[[int], None]
"""Called on the event loop thread with a peer id when messages to that peer were dropped or its stream failed."""

OnRemoved = Callable[[int], None]
"""Called on the event loop thread with a peer id when that peer refused us because we were removed from the
cluster (it applied our removal; see ``Transport.refuse``)."""


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """A point-in-time view of one peer, as seen by the local transport.

    ``frames_sent`` and ``bytes_sent`` count frames written to the wire (after coalescing several ``send`` batches
    into one frame); ``frames_dropped`` counts per-destination batches handed to ``send`` that never reached the wire
    (queue full, peer down or backing off, stream failed while they were queued, no address known).
    ``frames_received`` and ``last_recv_monotonic`` (``time.monotonic()`` of the last frame, ``None`` if never)
    describe the other direction. ``addr`` is the configured address ("" for a peer that only talked to us).
    """

    connected: bool
    last_error: str
    frames_sent: int
    frames_dropped: int
    bytes_sent: int
    frames_received: int
    last_recv_monotonic: float | None
    addr: str = ""


@runtime_checkable
class Transport(Protocol):
    """What the node driver needs from the network (see the module docstring for the guarantees)."""

    def set_peers(self, peers: Mapping[int, str]) -> None:
        """Set the peers: node id -> "host:port" of its peer listener. May be called again at any time (membership
        changes): new peers get connections, removed ones are closed (their queued messages dropped, their status
        entries removed), a changed address reconnects. The local node's own id, if present, is ignored. Callable
        before ``start()``."""
        ...

    def send(self, msgs: Sequence[Message]) -> None:
        """Queue ``msgs`` for delivery, grouped by ``m.to``; one frame per destination per call at most. Never
        blocks, never raises for network trouble: undeliverable messages are dropped and counted."""
        ...

    def refuse(self, node_ids: Collection[int]) -> None:
        """From now on deliver nothing from ``node_ids`` (members removed from the cluster; replaces the previous
        set), and tell each of them, when it next sends, that it was removed (its ``on_removed``)."""
        ...

    async def start(self) -> None:
        """Start listening and connecting. Raises an ``OSError`` if the listen address cannot be bound."""
        ...

    async def stop(self) -> None:
        """Close streams and the listener, cancel and await every task started; afterwards nothing is delivered
        and no callback runs. Idempotent."""
        ...

    def peer_status(self) -> dict[int, PeerStatus]:
        """A snapshot of every configured peer (and of any unconfigured node we exchanged frames with)."""
        ...

    async def send_snapshot(
        self, peer: int, path: Path, *, chunk_bytes: int = 1 << 20, timeout_s: float | None = None
    ) -> bool:
        """Stream a snapshot file to ``peer`` in chunks of at most ``chunk_bytes`` (bounded memory); True once the
        peer verified and kept it and its ``on_snapshot`` was given it; False on any failure, at once while another
        transfer to that peer runs. A False transfer may still have been delivered, never half: see the module
        docstring. ValueError if ``chunk_bytes`` is not positive."""
        ...


def group_by_destination(msgs: Sequence[Message]) -> dict[int, list[Message]]:
    """Split ``msgs`` into per-destination lists, keeping the order within each destination (dict order = first
    appearance). Shared by the transports; one dict lookup per message."""
    out: dict[int, list[Message]] = {}
    for m in msgs:
        lst = out.get(m[1])  # m.to; indexing skips the NamedTuple property call
        if lst is None:
            out[m[1]] = [m]
        else:
            lst.append(m)
    return out


# The implementations import the names above from this package, so they are imported after them.
from raftkv.transport.grpc_transport import GrpcTransport, ListenError  # noqa: E402
from raftkv.transport.memory import MemoryNetwork, MemoryTransport  # noqa: E402

__all__ = [
    "GrpcTransport",
    "ListenError",
    "MemoryNetwork",
    "MemoryTransport",
    "OnMessages",
    "OnRemoved",
    "OnUnreachable",
    "PeerStatus",
    "Transport",
    "group_by_destination",
]
