"""The one place that fixes the order in which a ``Ready`` is carried out.

The asyncio driver (``raftkv.node``) and the deterministic simulator (``tests/sim``) both call ``handle_ready``;
they differ only in the ``ReadyIO`` they pass. ``handle_ready`` is a coroutine whose only suspension point is the
durable write, so the simulator can drive it by hand (``coro.send``), keep a write "on the disk" across steps, and
throw the coroutine away to model a crash that loses the write.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from .raft.rawnode import RawNode
from .raft.types import Message, Ready


class ReadyIO(Protocol):
    def send(self, msgs: Sequence[Message]) -> None:
        """Queue messages for delivery. Must not block; delivery may fail silently (Raft retries)."""
        ...

    def persist(self, rd: Ready) -> Awaitable[Any]:
        """In one atomic, durable write: install ``rd.snapshot``, store ``rd.hard_state`` and ``rd.entries``
        (truncating a conflicting suffix), then apply ``rd.committed_entries`` to the state machine together with
        the applied index. Syncs when ``rd.must_sync``. Returns the apply results."""
        ...

    def applied(self, rd: Ready, results: Any) -> None:
        """After the write: resolve proposal waiters, serve ``rd.read_states`` whose index is applied."""
        ...


async def handle_ready(node: RawNode, rd: Ready, io: ReadyIO) -> None:
    # 1. A leader's appends may leave before its own write: the leader counts itself only once the write is
    #    durable (RawNode.advance -> on_persisted), so a crash here loses nothing anyone relies on (thesis §10.2.1).
    if rd.messages:
        io.send(rd.messages)
    # 2 + 4. Snapshot, hard state and entries, then the committed entries' effects and the applied index, in one
    #    transaction with one sync: a restart never re-applies what it applied, and never applies what it lost.
    #    Committed entries may be among this Ready's own entries; they are written first in the same transaction.
    results = await io.persist(rd)
    # 3. Votes and append acknowledgements promise durable state (§5.2: one vote per term, survived restarts;
    #    §5.3: an acknowledged entry is on stable storage). They may only leave now.
    if rd.persisted_messages:
        io.send(rd.persisted_messages)
    # 5. Answer clients: proposals whose entries were applied, reads whose index is applied.
    io.applied(rd, results)
    node.advance(rd)
