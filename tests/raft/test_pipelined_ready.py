"""The RawNode contract for pipelined Readys: a driver may take the next Ready before advancing the previous one.
Each entry is handed out once, entries that replace handed-out ones after a truncation are handed out again, a
snapshot waits for the writes before it, and advances must match the Readys taken. (The randomized checks of the
same contract are the simulator's ``-pipelined`` configurations.)"""

from __future__ import annotations

import random

import pytest

from raftkv.raft import Config, ConfState, MemoryStorage, Message, MsgType, RawNode, Ready, StateRole
from raftkv.raft.types import Entry, EntryType, Snapshot, SnapshotMetadata

from .harness import write_ready


def _node(nid: int, voters: tuple[int, ...]) -> tuple[RawNode, MemoryStorage]:
    storage = MemoryStorage(ConfState(voters=voters))
    return RawNode(Config(id=nid, election_tick=10, heartbeat_tick=1, rng=random.Random(nid)), storage), storage


def _sole_leader() -> tuple[RawNode, MemoryStorage]:
    node, storage = _node(1, (1,))
    node.campaign()
    while node.has_ready():
        rd = node.ready()
        write_ready(storage, rd)
        node.advance(rd)
    assert node.raft.state == StateRole.LEADER
    return node, storage


def _append(term: int, index: int, log_term: int, ents: list[tuple[int, int]], commit: int = 0) -> Message:
    """An append from leader 2 to node 1: entries given as (index, term), data naming both."""
    entries = tuple(Entry(t, i, EntryType.NORMAL, b"%d/%d" % (i, t)) for i, t in ents)
    return Message(MsgType.APP, to=1, frm=2, term=term, log_term=log_term, index=index, entries=entries,
                   commit=commit)


def test_each_entry_is_handed_out_once_while_an_earlier_write_is_under_way() -> None:
    node, storage = _sole_leader()
    node.propose(b"a")
    rd1 = node.ready()
    assert [e.data for e in rd1.entries] == [b"a"]
    node.propose(b"b")
    assert node.has_ready()
    rd2 = node.ready()  # rd1 not advanced yet
    assert [e.data for e in rd2.entries] == [b"b"]
    assert rd2.entries[0].index == rd1.entries[0].index + 1
    assert node.outstanding == 2
    assert not node.has_ready()  # nothing new: neither entry nor hard state is handed out twice
    for rd in (rd1, rd2):
        write_ready(storage, rd)
        node.advance(rd)
    assert node.outstanding == 0
    # Only now does the sole voter count itself: both entries commit and come out for applying, once.
    rd3 = node.ready()
    assert [e.data for e in rd3.committed_entries] == [b"a", b"b"]
    write_ready(storage, rd3)
    node.advance(rd3)
    assert node.raft.log.unstable.entries == []


def test_entries_replacing_handed_out_ones_are_handed_out_again() -> None:
    node, storage = _node(1, (1, 2, 3))
    node.step(_append(term=2, index=0, log_term=0, ents=[(1, 2), (2, 2), (3, 2)]))
    rd1 = node.ready()
    assert [(e.index, e.term) for e in rd1.entries] == [(1, 2), (2, 2), (3, 2)]
    # Before rd1 is durable, a leader of term 3 overwrites entries 2 and 3.
    node.step(_append(term=3, index=1, log_term=2, ents=[(2, 3), (3, 3)]))
    rd2 = node.ready()
    assert [(e.index, e.term) for e in rd2.entries] == [(2, 3), (3, 3)]
    write_ready(storage, rd1)
    node.advance(rd1)  # must not forget the replacements, which are not durable yet
    assert node.raft.log.term(3) == 3
    assert [(e.index, e.term) for e in node.raft.log.unstable.entries] != []
    write_ready(storage, rd2)
    node.advance(rd2)
    assert node.raft.log.unstable.entries == []
    assert [(storage.term(i)) for i in (1, 2, 3)] == [2, 3, 3]
    # The acknowledgements wait for their own Ready's write: rd2's says 3.
    acks = [m for m in rd2.persisted_messages if m.type == MsgType.APP_RESP]
    assert acks and acks[-1].index == 3 and not acks[-1].reject


def test_a_snapshot_waits_for_the_writes_before_it_and_nothing_follows_it_until_advanced() -> None:
    node, storage = _node(1, (1, 2, 3))
    node.step(_append(term=2, index=0, log_term=0, ents=[(1, 2)]))
    rd1 = node.ready()
    snap = Snapshot(SnapshotMetadata(ConfState(voters=(1, 2, 3)), 10, 2), b"state")
    node.step(Message(MsgType.SNAP, to=1, frm=2, term=2, snapshot=snap))
    assert not node.has_ready()  # the snapshot may not overtake rd1's write
    with pytest.raises(RuntimeError):
        node.ready()
    write_ready(storage, rd1)
    node.advance(rd1)
    rd2 = node.ready()
    assert rd2.snapshot == snap
    node.step(_append(term=2, index=10, log_term=2, ents=[(11, 2)]))
    assert not node.has_ready()  # nothing may follow a snapshot before it is installed
    with pytest.raises(RuntimeError):
        node.ready()
    write_ready(storage, rd2)
    node.advance(rd2)
    rd3 = node.ready()
    assert [(e.index, e.term) for e in rd3.entries] == [(11, 2)]


def test_advance_needs_an_outstanding_ready() -> None:
    node, _ = _sole_leader()
    with pytest.raises(RuntimeError):
        node.advance(Ready())
