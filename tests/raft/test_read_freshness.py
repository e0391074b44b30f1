"""The read point of bounded-staleness reads (``RawNode.read_freshness``): ``(tick, commit)`` such that everything
committed before ``tick`` is at or below ``commit``.

A leader's point is the start of its newest heartbeat round a majority acknowledged; a follower's is the arrival of
the heartbeat of the newest round its leader says was confirmed, with the leader's commit index when that round
started. A follower whose log (and so its commit index) is far behind the leader's still gets the leader's real
commit index as the point's commit: it must apply that much before it may serve a bounded read.
"""

from __future__ import annotations

from raftkv.raft import MsgType, StateRole

from .harness import Network
from .test_scenarios import elect


def test_a_leaders_point_is_its_newest_confirmed_round() -> None:
    net = Network(3)
    lead = elect(net)
    net.propose(lead, b"x")
    net.tick(lead, 3)  # heartbeat rounds, every one acknowledged
    tick, commit = net.node(lead).read_freshness()  # type: ignore[misc]
    raft = net.raft(lead)
    assert commit == raft.log.committed and raft.tick_count - tick <= 1
    # Cut off, its point stops moving: it no longer knows that nobody else committed anything.
    net.isolate(lead)
    net.tick(lead, 5)
    assert net.node(lead).read_freshness() == (tick, commit)


def test_a_lagging_follower_gets_the_leaders_commit_not_its_own() -> None:
    """The bug of the issue: heartbeats carry min(match, commit), so a follower far behind compared its applied
    index with its own match and passed. Its point must carry the leader's commit index."""
    net = Network(3)
    lead = elect(net)
    f = next(i for i in net.ids if i != lead)
    net.drop(lambda m: m.to == f and m.type == MsgType.APP)  # f hears heartbeats only
    for i in range(50):
        net.propose(lead, b"e%d" % i)
    net.tick_all(3)
    leader_commit = net.raft(lead).log.committed
    follower = net.raft(f)
    assert follower.log.committed < leader_commit - 40  # far behind
    point = net.node(f).read_freshness()
    assert point is not None
    tick, commit = point
    assert commit == leader_commit, (commit, leader_commit, follower.log.committed)
    assert follower.tick_count - tick <= 2


def test_a_follower_learns_of_a_round_only_if_it_received_that_rounds_heartbeat() -> None:
    net = Network(3)
    lead = elect(net)
    f = next(i for i in net.ids if i != lead)
    net.tick(lead, 2)
    before = net.node(f).read_freshness()
    assert before is not None
    net.drop(lambda m: m.to == f and m.type == MsgType.HEARTBEAT)
    net.tick(lead, 5)
    assert net.node(f).read_freshness() == before  # no heartbeat arrived: the point did not move
    net.heal()
    net.tick_all(3)
    after = net.node(f).read_freshness()
    assert after is not None and after[0] > before[0]


def test_a_partitioned_leader_does_not_refresh_its_followers() -> None:
    """A deposed leader that still reaches one follower must not make that follower look fresh: its rounds are
    never confirmed by a majority, so the follower's point stays where it was."""
    net = Network(5)
    lead = elect(net)
    buddy = next(i for i in net.ids if i != lead)
    others = set(net.ids) - {lead, buddy}
    net.tick(lead, 2)
    point = net.node(buddy).read_freshness()
    assert point is not None
    # The leader keeps only its buddy; the other three elect a new leader and commit without them.
    net.drop(lambda m: bool({m.frm, m.to} & {lead, buddy}) and bool({m.frm, m.to} & others))
    ticks = 0
    while net.role(lead) == StateRole.LEADER:  # until check-quorum deposes it, it keeps heartbeating the buddy
        net.tick_all()
        ticks += 1
        assert net.node(buddy).read_freshness() == point
    assert ticks > 5
    new = net.elect_among(others, tick_everyone=True)
    net.propose(new, b"unseen by the old leader and its buddy")
    net.tick_all(3)
    assert net.node(buddy).read_freshness() == point


def test_no_point_before_the_leader_committed_in_its_term() -> None:
    net = Network(3)
    net.drop(lambda m: m.type == MsgType.APP_RESP)  # the new leader's no-op cannot commit
    lead = elect(net)
    net.tick(lead, 3)
    assert net.node(lead).read_freshness() is None
    assert all(m.confirmed_round == 0 for m in net.delivered if m.type == MsgType.HEARTBEAT)

