"""The one place that fixes the order in which a ``Ready`` is carried out.

The deterministic simulator (``tests/sim``) calls ``handle_ready``; the asyncio driver (``raftkv.node``), which
pipelines Readys (several writes under way, completed in order), calls its two halves, ``start_ready`` and
``finish_ready``. They differ only in the ``ReadyIO`` they pass. ``handle_ready`` is a coroutine whose only
suspension point is the durable write, so the simulator can drive it by hand (``coro.send``), keep several writes
"on the disk" across steps, complete them in order, and throw the coroutines away to model a crash that loses them.
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

    def persist(self, rd: Ready) -> Awaitable[Any] | None:
        """In one atomic, durable write: install ``rd.snapshot``, store ``rd.hard_state`` and ``rd.entries``
        (truncating a conflicting suffix), then apply ``rd.committed_entries`` to the state machine together with
        the applied index. Syncs when ``rd.must_sync``. Returns an awaitable of the apply results (None: there was
        nothing to write). The write starts in call order: each completes after every one requested before it."""
        ...

    def applied(self, rd: Ready, results: Any) -> None:
        """After the write: resolve proposal waiters, serve ``rd.read_states`` whose index is applied."""
        ...


def start_ready(rd: Ready, io: ReadyIO) -> Awaitable[Any] | None:
    """Steps 1 and 2 of ``handle_ready``: send what may leave before the write, and start the write. A driver that
    pipelines Readys calls this for each Ready as it takes it, and ``finish_ready`` for each, in the same order,
    once its write is done (the writes must complete in that order too)."""
    # 1. A leader's appends may leave before its own write: the leader counts itself only once the write is
    #    durable (RawNode.advance -> on_persisted), so a crash here loses nothing anyone relies on (thesis §10.2.1).
    if rd.messages:
        io.send(rd.messages)
    # 2 + 4. Snapshot, hard state and entries, then the committed entries' effects and the applied index, in one
    #    transaction with one sync: a restart never re-applies what it applied, and never applies what it lost.
    #    Committed entries may be among this Ready's own entries (written first in the same transaction) or an
    #    earlier Ready's (written by an earlier write).
    return io.persist(rd)


def finish_ready(node: RawNode, rd: Ready, io: ReadyIO, results: Any) -> None:
    """Steps 3 to 5 of ``handle_ready``, once ``rd``'s write (and every earlier Ready's) is done."""
    # 3. Votes and append acknowledgements promise durable state (§5.2: one vote per term, survived restarts;
    #    §5.3: an acknowledged entry is on stable storage). They may only leave now.
    if rd.persisted_messages:
        io.send(rd.persisted_messages)
    # 5. Answer clients: proposals whose entries were applied, reads whose index is applied.
    io.applied(rd, results)
    node.advance(rd)


async def handle_ready(node: RawNode, rd: Ready, io: ReadyIO) -> None:
    """One Ready from start to finish."""
    write = start_ready(rd, io)
    results = await write if write is not None else None
    finish_ready(node, rd, io, results)
