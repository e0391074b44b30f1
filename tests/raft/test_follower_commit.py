"""A follower's commit index never passes what the leader's message proved it holds (§5.3, Figure 2: "If
leaderCommit > commitIndex, set commitIndex = min(leaderCommit, index of last new entry)").

An append proves the follower's log matches the leader's only up to its prev entry plus the entries it carries; a
follower with a long divergent suffix of an old term must not commit into that suffix just because the leader's
commit index reaches that far. A heartbeat proves nothing about the follower's log, so the leader never sends a
commit index past the follower's match."""

from __future__ import annotations

import random

import pytest

from raftkv.raft import Config, ConfState, MemoryStorage, Message, MsgType, RawNode
from raftkv.raft.types import Entry, EntryType

from .harness import Network, write_ready
from .test_scenarios import elect

OLD_TERM, NEW_TERM = 2, 3
SUFFIX_END = 105
"""The follower holds entries 1..105 of OLD_TERM, of which only 1 is committed."""
LEADER_COMMIT = 50
"""What the new leader (of NEW_TERM) has committed: its entries 1..5 are OLD_TERM's, the rest its own."""


def _entries(ents: list[tuple[int, int]]) -> tuple[Entry, ...]:
    return tuple(Entry(t, i, EntryType.NORMAL, b"%d/%d" % (i, t)) for i, t in ents)


def _append(frm: int, term: int, prev: tuple[int, int], ents: list[tuple[int, int]], commit: int) -> Message:
    """An append to node 1: ``prev`` is (index, term) of the entry before ``ents``, given as (index, term)."""
    return Message(MsgType.APP, to=1, frm=frm, term=term, log_term=prev[1], index=prev[0], entries=_entries(ents),
                   commit=commit)


def _follower_with_divergent_suffix() -> tuple[RawNode, MemoryStorage]:
    """Node 1 of {1, 2, 3}, holding entries 1..SUFFIX_END of OLD_TERM from leader 2, with only entry 1 committed."""
    storage = MemoryStorage(ConfState(voters=(1, 2, 3)))
    node = RawNode(Config(id=1, election_tick=10, heartbeat_tick=1, rng=random.Random(1)), storage)
    node.step(_append(2, OLD_TERM, (0, 0), [(i, OLD_TERM) for i in range(1, SUFFIX_END + 1)], commit=1))
    rd = node.ready()
    write_ready(storage, rd)
    node.advance(rd)
    log = node.raft.log
    assert log.committed == 1 and log.last_index() == SUFFIX_END
    return node, storage


@pytest.mark.parametrize(
    ("prev", "ents", "bound"),
    [
        pytest.param((5, OLD_TERM), [], 5, id="empty-probe-matching-at-5"),
        pytest.param((2, OLD_TERM), [(3, OLD_TERM), (4, OLD_TERM)], 4, id="entries-we-already-hold-up-to-4"),
        pytest.param((5, OLD_TERM), [(6, NEW_TERM), (7, NEW_TERM)], 7, id="new-entries-replace-the-suffix-after-5"),
    ],
)
def test_an_append_commits_no_further_than_the_last_entry_it_matched(
    prev: tuple[int, int], ents: list[tuple[int, int]], bound: int
) -> None:
    """Leader 3 of NEW_TERM (commit 50) sends an append matching at a low index. Everything our log holds past
    prev + len(entries) is unproven (the leader's entry at that index may well be of another term), so the commit
    index moves to exactly that bound and no further, in the core and in what the Ready tells the driver."""
    node, storage = _follower_with_divergent_suffix()
    node.step(_append(3, NEW_TERM, prev, ents, commit=LEADER_COMMIT))
    log = node.raft.log
    assert log.committed == bound, f"committed {log.committed} past the matched prefix ({bound})"
    rd = node.ready()
    assert rd.hard_state is not None and rd.hard_state.commit == bound
    assert rd.committed_entries and rd.committed_entries[-1].index == bound
    [ack] = [m for m in rd.persisted_messages if m.type == MsgType.APP_RESP]
    assert not ack.reject and ack.index == bound
    write_ready(storage, rd)
    node.advance(rd)
    if not ents or ents[-1][1] == OLD_TERM:
        # The divergent suffix is still there, uncommitted: a later append may yet replace it.
        assert log.last_index() == SUFFIX_END and log.term(bound + 1) == OLD_TERM
    else:
        assert log.last_index() == bound  # the suffix was truncated and replaced
    assert log.committed == bound


def test_a_lower_leader_commit_is_taken_as_it_is() -> None:
    """The other half of min(leaderCommit, last new entry): a leader commit below the matched prefix is adopted."""
    node, _ = _follower_with_divergent_suffix()
    node.step(_append(3, NEW_TERM, (5, OLD_TERM), [], commit=3))
    assert node.raft.log.committed == 3


def test_a_heartbeat_never_commits_a_follower_into_its_divergent_suffix() -> None:
    """A heartbeat carries no prev entry, so the follower cannot check anything: the leader must never send it a
    commit index past what it knows the follower matches (``min(pr.match, committed)``). Here the follower keeps a
    100-entry suffix of a deposed leader's term while the new leader's heartbeats (and nothing else) reach it."""
    net = Network(5)
    old = elect(net)
    for i in range(5):
        net.node(old).propose(b"base%d" % i)
    net.stabilize()
    f = next(i for i in net.ids if i != old)
    minority = {old, f}
    net.drop(lambda m: (m.frm in minority) != (m.to in minority))
    for i in range(100):
        net.node(old).propose(b"stale%d" % i)  # reaches f only
    net.stabilize()
    majority = [i for i in net.ids if i not in minority]
    new = net.elect_among(majority)
    for i in range(30):
        net.node(new).propose(b"fresh%d" % i)
    net.stabilize()
    net.crash(old)
    net.heal()
    # Only heartbeats from the new leader reach f: its appends (which would repair f's log) are dropped.
    net.drop(lambda m: m.frm == new and m.to == f and m.type in (MsgType.APP, MsgType.SNAP))
    lf, ln = net.raft(f).log, net.raft(new).log
    term_f, term_new = lf.zero_term_on_out_of_bounds, ln.zero_term_on_out_of_bounds
    matched = max(i for i in range(lf.last_index() + 1) if term_f(i) == term_new(i))  # the prefix they share
    assert ln.committed > matched + 20 and lf.last_index() > ln.committed  # f's suffix reaches past the commit
    net.delivered.clear()
    net.tick(new, 5)
    beats = [m for m in net.delivered if m.type == MsgType.HEARTBEAT and m.to == f]
    assert beats, "no heartbeat reached the follower: the test proves nothing"
    assert net.raft(f).lead == new
    assert lf.committed <= matched, f"follower committed {lf.committed}, past the prefix it shares ({matched})"
    assert all(m.commit <= matched for m in beats), [m.commit for m in beats]
    # Once appends flow again the follower's log is repaired and it commits the leader's entries, not its own.
    net.heal()
    net.tick(new, 3)
    assert lf.committed == ln.committed and lf.term(ln.committed) == ln.term(ln.committed)
