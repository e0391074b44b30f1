"""A linearizable read on a follower waits until the follower has applied the read index (thesis §6.4 step 4).

The read index is the leader's commit index, which a follower's state can lag: here the follower misses the
leader's appends (nothing else), so it learns the read index for a write it has not even received. Serving the
read as soon as the index is known would return the value from before that write, which was acknowledged before
the read started: a stale read.

Why the appends and not the follower's writer thread: while a follower's write is under way (and
``max_inflight_writes`` is 1, the default) its loop steps nothing, so a read that arrives meanwhile is not even
sent to the leader; once the write completes the follower has applied everything its read index can cover. Holding
the writer thread makes the read wait, but it would wait just as long without ``Node.read_index``'s
``wait_applied``: such a test cannot tell the two apart. Holding the appends can.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from raftkv.kv import KeyValue, Put, PutResult
from raftkv.node import Node
from raftkv.raft import Message, MsgType

from .test_node import Cluster, propose_applied, until, with_cluster


def hold_appends(leader: Node, to: int) -> Callable[[], None]:
    """Drop the appends (and snapshots) ``leader`` sends to node ``to``; heartbeats and read-index answers still go.
    Returns the function that lets them through again."""
    send = leader.transport.send
    held = True

    def filtered(msgs: Sequence[Message]) -> None:
        if held:
            msgs = [m for m in msgs if not (m.to == to and m.type in (MsgType.APP, MsgType.SNAP))]
        send(msgs)

    def release() -> None:
        nonlocal held
        held = False

    leader.transport.send = filtered  # type: ignore[method-assign]
    return release



@with_cluster
async def test_a_follower_read_waits_until_the_read_index_is_applied(cluster: Cluster) -> None:
    lead = await cluster.leader()
    f = next(n for n in cluster.nodes.values() if n is not lead)
    old = await propose_applied(lead, lambda rid: Put(rid, 0, 0, b"k", b"old"))
    assert isinstance(old.result, PutResult)
    await asyncio.wait_for(f.wait_applied(old.index), 5)

    release = hold_appends(lead, f.id)
    new = await propose_applied(lead, lambda rid: Put(rid, 0, 0, b"k", b"new"))  # committed by the leader + 1 other
    assert isinstance(new.result, PutResult)
    assert f.applied < new.index

    async def linearizable_get() -> tuple[int, int, KeyValue | None]:
        """What the servicer does for a linearizable Get: the read point, then one read transaction."""
        index = await f.read_index()
        applied, kv = f.fsm_get(b"k")
        return index, applied, kv

    served = f.replica.stats.reads_served
    read = asyncio.ensure_future(linearizable_get())
    try:
        # The leader answered: the follower knows its read index (the futures of the round are resolved) ...
        await until(lambda: f.replica.stats.reads_served > served,
                    "the leader to answer the follower's read-index request")
        # ... which covers the new write, but the follower has not applied it (it has not even received it) ...
        assert f.applied < new.index <= lead.raw.raft.log.committed
        _, kv = f.fsm_get(b"k")
        assert kv is not None and kv.value == b"old"  # what a read served now would return
        # ... so the read is still waiting, however many turns the loop takes.
        done, _ = await asyncio.wait([read], timeout=0.2)
        assert not done, f"the read was served at applied index {f.applied}: {read.result()}"
        assert f.applied < new.index
    finally:
        release()
    index, applied, kv = await asyncio.wait_for(read, 5)
    assert index >= new.index
    assert applied >= index
    assert kv is not None and kv.value == b"new"
