"""The daemon runs Raft with pre-vote (thesis §9.6) and check-quorum (thesis §6.2) on, shown through real Nodes built
from Settings exactly as ``raftkv.server`` builds them (``Node`` makes the core's ``Config``), on the in-memory
network with its partitions. Bounds are counted in the node's own ticks, not wall-clock time: a loaded machine
delays ticks but does not change how many a rule allows."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from raftkv.kv import Put, PutResult
from raftkv.node import Node
from raftkv.raft import Message, MsgType, StateRole

from .test_node import Cluster, propose_applied, until, with_cluster


def count_sent(node: Node) -> dict[int, int]:
    """Count, by type, the messages ``node`` hands its transport (also those a partition then drops)."""
    counts: dict[int, int] = {}
    send = node.transport.send

    def counting(msgs: Sequence[Message]) -> None:
        for m in msgs:
            counts[m.type] = counts.get(m.type, 0) + 1
        send(msgs)

    node.transport.send = counting  # type: ignore[method-assign]
    return counts



@with_cluster
async def test_a_partitioned_follower_rejoins_without_disrupting_the_leader(cluster: Cluster) -> None:
    """Pre-vote: cut off, the follower keeps asking whether it could win, never bumps its term, and when it comes
    back the leader stays in place, in the same term (without pre-vote its term runs away, and on return the
    leader learns the higher term and steps down)."""
    lead = await cluster.leader()
    term = lead.term
    f = next(n for n in cluster.nodes.values() if n is not lead)
    election_ticks = f.settings.election_ticks
    sent = count_sent(f)
    start = f.raw.raft.tick_count
    cluster.net.partition([[f.id], [n for n in cluster.nodes if n != f.id]])

    def cut_off_long_enough() -> bool:
        assert f.term == term, f"the partitioned follower moved to term {f.term} (was {term})"
        # Six election timeouts by the follower's own clock (a campaign is due every one to two), and at least two
        # campaigns seen: a pre-vote request to each peer, each time.
        campaigns = sent.get(MsgType.PRE_VOTE, 0) // (len(cluster.nodes) - 1)
        return f.raw.raft.tick_count - start >= 6 * election_ticks and campaigns >= 2

    await until(cut_off_long_enough, "the partitioned follower to campaign for several election timeouts")
    assert f.term == term
    assert sent.get(MsgType.VOTE, 0) == 0, "the follower ran a real election"
    assert lead.role == StateRole.LEADER and lead.term == term

    cluster.net.heal()
    r = await propose_applied(lead, lambda rid: Put(rid, 0, 0, b"after", b"rejoin"))
    assert isinstance(r.result, PutResult)
    await asyncio.wait_for(f.wait_applied(r.index), 5)
    await until(lambda: f.leader_id == lead.id, "the follower to follow the leader again")
    assert lead.role == StateRole.LEADER
    assert [n.term for n in cluster.nodes.values()] == [term] * len(cluster.nodes)
    assert all(n.leader_id == lead.id for n in cluster.nodes.values())


@with_cluster
async def test_an_isolated_leader_steps_down_while_the_others_elect_a_new_one(cluster: Cluster) -> None:
    """Check-quorum: a leader that heard from no majority during an election timeout steps down; its first check
    after the cut may still count what it heard just before, the second cannot, so it is a follower within two
    election timeouts (three allowed). Meanwhile the two others elect a leader of a higher term."""
    lead = await cluster.leader()
    term = lead.term
    others = [n for n in cluster.nodes.values() if n is not lead]
    election_ticks = lead.settings.election_ticks
    start = lead.raw.raft.tick_count
    cluster.net.partition([[lead.id], [n.id for n in others]])

    def stepped_down() -> bool:
        if lead.role != StateRole.LEADER:
            return True
        ticks = lead.raw.raft.tick_count - start
        assert ticks <= 3 * election_ticks, f"still leader after {ticks} ticks cut off from every peer"
        return False

    await until(stepped_down, "the isolated leader to step down")

    def new_leader() -> Node | None:
        leaders = [n for n in others if n.role == StateRole.LEADER]
        return leaders[0] if len(leaders) == 1 and all(n.leader_id == leaders[0].id for n in others) else None

    await until(lambda: new_leader() is not None, "the majority to elect a new leader")
    new = new_leader()
    assert new is not None and new.term > term
    assert lead.role != StateRole.LEADER  # (and with pre-vote it never stood in a real election meanwhile)
    assert lead.term == term

    cluster.net.heal()
    r = await propose_applied(new, lambda rid: Put(rid, 0, 0, b"after", b"isolation"))
    assert isinstance(r.result, PutResult)
    await asyncio.wait_for(lead.wait_applied(r.index), 5)
    assert lead.leader_id == new.id and lead.role == StateRole.FOLLOWER
