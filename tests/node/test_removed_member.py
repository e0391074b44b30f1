"""A node removed from the cluster refuses every client request at once, stops campaigning, and says so in its
status (README, "Membership"); it learns of its removal even when it never applied it, from its peers refusing it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raftkv.errors import Removed
from raftkv.kv import MemberInfo, Put
from raftkv.proto.v1 import kv_pb2
from raftkv.raft import ConfChangeType, Message, MsgType, StateRole

from .test_bounded_reads import AbortCtx, Aborted
from .test_node import Cluster, propose_applied, until, with_cluster
from .test_servicer import servicer


async def _rpc(fn: Any, req: Any) -> Any:
    return await fn(req, AbortCtx(5.0))


@with_cluster
async def test_a_member_removed_while_cut_off_learns_it_and_refuses_everything(cluster: Cluster) -> None:
    lead = await cluster.leader()
    gone = next(n for n in cluster.nodes.values() if n is not lead)
    a = await propose_applied(lead, lambda rid: Put(rid, 0, 0, b"k", b"old"))
    await asyncio.wait_for(gone.wait_applied(a.index), 5)
    # Cut it off, remove it, write more: it never receives its own removal (nor what follows).
    others = [n for n in cluster.nodes if n != gone.id]
    cluster.net.partition([[gone.id], others])
    res = await lead.change_membership(ConfChangeType.REMOVE_NODE, MemberInfo(gone.id, "", ""))
    assert res.changed and gone.id not in res.conf_state.voters
    await propose_applied(lead, lambda rid: Put(rid, 0, 0, b"k", b"new"))
    assert not gone.removed
    cluster.net.heal()
    # Its next messages are refused by the members, which tells it.
    await until(lambda: gone.removed, "the removed node to learn of its removal")
    assert gone.applied < lead.applied  # it never applied the removal itself

    svc = servicer(cluster, gone.id)
    stale = kv_pb2.GetRequest(key=b"k", read=kv_pb2.ReadOptions(consistency=kv_pb2.STALE))
    for call, req in (
        (svc.Get, stale),
        (svc.Get, kv_pb2.GetRequest(key=b"k")),
        (svc.Put, kv_pb2.PutRequest(key=b"k", value=b"v")),
        (svc.Range, kv_pb2.RangeRequest(read=kv_pb2.ReadOptions(consistency=kv_pb2.STALE))),
        (svc.Batch, kv_pb2.BatchRequest(ops=[kv_pb2.BatchOp(get=stale)])),
        (svc.MemberList, kv_pb2.MemberListRequest()),
    ):
        with pytest.raises(Aborted) as e:
            await _rpc(call, req)
        assert e.value.code.name == "UNAVAILABLE" and "removed from the cluster" in str(e.value), (call, e.value)
    with pytest.raises(Removed):
        await gone.propose(lambda rid: Put(rid, 0, 0, b"k", b"v"))
    status = await _rpc(svc.Status, kv_pb2.StatusRequest())
    assert status.removed and status.role == "removed"

    # It no longer campaigns: while the leader's clock runs five election timeouts on, it sends no (pre-)vote
    # request and its term stays put, and the cluster is undisturbed.
    sent: list[Message] = []
    send = gone.transport.send
    gone.transport.send = lambda msgs: (sent.extend(msgs), send(msgs))[1]  # type: ignore[method-assign]
    term, lead_term = gone.term, lead.term
    start = lead.raw.raft.tick_count
    await until(lambda: lead.raw.raft.tick_count >= start + 5 * lead.settings.election_ticks,
                "five election timeouts on the leader's clock")
    assert not [m for m in sent if m.type in (MsgType.PRE_VOTE, MsgType.VOTE)]
    assert gone.term == term
    assert lead.role == StateRole.LEADER and lead.term == lead_term


@with_cluster
async def test_a_member_that_applies_its_own_removal_refuses_at_once(cluster: Cluster) -> None:
    lead = await cluster.leader()
    gone = next(n for n in cluster.nodes.values() if n is not lead)
    await lead.change_membership(ConfChangeType.REMOVE_NODE, MemberInfo(gone.id, "", ""))
    await until(lambda: gone.removed, "the removed node to apply its removal")
    with pytest.raises(Aborted) as e:
        await _rpc(servicer(cluster, gone.id).Get,
                   kv_pb2.GetRequest(key=b"k", read=kv_pb2.ReadOptions(consistency=kv_pb2.STALE)))
    assert "removed from the cluster" in str(e.value)


@with_cluster
async def test_a_removed_id_is_never_added_again(cluster: Cluster) -> None:
    """As etcd: once removed, an id is refused for good (README, "Durability"). A node added again under its old id
    replays the log from its start through the past configurations; two such nodes can elect a second leader in a
    term (found by the replica simulator, tests/sim/test_replicas.py)."""
    lead = await cluster.leader()
    gone = next(n for n in cluster.nodes.values() if n is not lead)
    res = await lead.change_membership(ConfChangeType.REMOVE_NODE, MemberInfo(gone.id, "", ""))
    assert res.changed
    svc = servicer(cluster, lead.id)
    m = next(x for x in gone.settings.members if x.id == gone.id)
    add = kv_pb2.MemberAddRequest(id=gone.id, peer_addr=m.peer_addr, client_addr=m.client_addr, learner=True)
    with pytest.raises(Aborted) as e:
        await _rpc(svc.MemberAdd, add)
    assert e.value.code.name == "INVALID_ARGUMENT", e.value
    assert f"node {gone.id} was removed from this cluster, and an id is never a member again" in str(e.value)
    assert gone.id not in {x.id for x in lead.members()}
