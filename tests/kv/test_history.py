"""The history (MVCC) of the KV state machine against a plain model that keeps a copy of the whole store after every
revision and the list of every write.

The model (``HistoryModel``, on top of ``tests.kv.model.Model``) states the rules in its own terms:

* the store right after revision R is the copy taken then; ``get``/``range`` at R answer from it, at 0 (or None) from
  the current one; a revision above the current one is refused (InvalidArgument), one below the compacted revision
  too (``Compacted``, carrying it);
* ``events(S)`` is every write from revision S on, in order (a txn's writes in the order it made them, the same key
  twice included), with the key's previous write if that was a put; a start at or below the compacted revision is
  refused with ``Compacted``;
* ``Compact(R)`` only moves the compacted revision up, never above the current revision.

The state machine runs over random puts, deletes, incrs, txns (several writes in one revision, a key written twice),
sibling puts, compactions, physical compaction steps of a few events each, and restores into a new state machine
from a snapshot taken mid-compaction; on dicts and on LMDB. After every step its state hash equals that of a twin
fed the same entries whose physical compaction always runs to the end at once.
"""

from __future__ import annotations

import itertools
import struct
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from raftkv.errors import Compacted, DataCorruption, InvalidArgument, from_wire
from raftkv.kv import (
    CmpOp,
    Command,
    Compact,
    CompactResult,
    Condition,
    Delete,
    ErrorResult,
    Event,
    EventType,
    Incr,
    KeyValue,
    LeaseGrant,
    LeaseRevoke,
    Put,
    PutResult,
    SiblingPut,
    Target,
    Txn,
    TxnOp,
    TxnOpType,
    VectorClock,
)

from . import Replica, entry
from .model import Model, erase_messages

GET, PUT, DEL, INCR = TxnOpType.GET, TxnOpType.PUT, TxnOpType.DELETE, TxnOpType.INCR

LONG = b"p" * 600
KEY_LIST = [b"a", b"ab", b"b", b"p" * 447 + b"x", LONG + b"a", LONG + b"b"]  # short, 448 bytes, hashed (> 479)
KEYS = st.sampled_from(KEY_LIST)
PREFIXES = st.sampled_from([b"", b"a", b"p", b"p" * 447, b"p" * 500, b"z"])
VALUES = st.sampled_from([b"1", b"-5", b"x", b""])
LEASES = st.sampled_from([0, 0, 1, 2])
CONTEXTS = st.dictionaries(st.integers(1, 3), st.integers(1, 40), max_size=3).map(VectorClock)
TXN_OPS = st.lists(
    st.one_of(
        st.builds(TxnOp, st.just(PUT), KEYS, VALUES, st.just(0), LEASES),
        st.builds(TxnOp, st.just(DEL), KEYS, st.just(b""), st.just(0), st.just(0)),
        st.builds(TxnOp, st.just(INCR), KEYS, st.just(b""), st.integers(-2, 2), st.just(0)),
        st.builds(TxnOp, st.just(GET), KEYS, st.just(b""), st.just(0), st.just(0)),
    ),
    max_size=4,
).map(tuple)
COMPARES = st.lists(st.builds(Condition, KEYS, st.just(Target.EXISTS), st.just(CmpOp.EQ), st.booleans()),
                    max_size=1).map(tuple)  # fmt: skip
COMMANDS = st.one_of(
    st.builds(Put, st.just(0), st.just(0), st.just(0), KEYS, VALUES, st.just(()), LEASES),
    st.builds(LeaseGrant, st.just(0), st.just(0), st.just(0), st.just(0), st.just(60)),
    st.builds(LeaseRevoke, st.just(0), st.just(0), st.just(0), LEASES, st.just(0)),  # (its keys: one revision)
    st.builds(Delete, st.just(0), st.just(0), st.just(0), KEYS, st.just(())),
    st.builds(Incr, st.just(0), st.just(0), st.just(0), KEYS, st.integers(-2, 2)),
    st.builds(Txn, st.just(0), st.just(0), st.just(0), COMPARES, TXN_OPS, TXN_OPS),
    st.builds(SiblingPut, st.just(0), st.just(0), st.just(0), KEYS, VALUES, CONTEXTS),
)


class HistoryModel(Model):
    """``Model`` plus its history: ``states[r]`` is a copy of the store right after revision r, ``log`` every
    write as ``(revision, key, KeyValue after it, or None for a delete)``."""

    def __init__(self) -> None:
        super().__init__()
        self.states: list[dict[bytes, KeyValue]] = [{}]
        self.log: list[tuple[int, bytes, KeyValue | None]] = []
        self.compacted = 0

    def write(
        self, key: bytes, value: bytes, proposer: int, siblings: Any = (), lease: int | None = None
    ) -> KeyValue:
        kv = super().write(key, value, proposer, siblings, lease)
        self.log.append((kv.mod_revision, key, kv))
        return kv

    def delete(self, key: bytes) -> Any:
        result = super().delete(key)
        if result.deleted:
            self.log.append((result.revision, key, None))
        return result

    def apply(self, cmd: Command, index: int, proposer: int) -> Any:
        result = super().apply(cmd, index, proposer)
        if len(self.states) <= self.revision:
            self.states.append(dict(self.data))
        return result

    def compact(self, rev: int) -> CompactResult | ErrorResult:
        if rev <= self.compacted:
            return CompactResult(self.compacted)
        if rev > self.revision:
            return ErrorResult("invalid-argument", "")
        self.compacted = rev
        return CompactResult(rev)

    def events(self, start: int, prefix: bytes, prev_kv: bool) -> list[Event]:
        out: list[Event] = []
        last: dict[bytes, KeyValue | None] = {}
        sub = 0
        for i, (rev, key, kv) in enumerate(self.log):
            sub = sub + 1 if i and self.log[i - 1][0] == rev else 0
            if rev >= start and key.startswith(prefix):
                kind = EventType.DELETE if kv is None else EventType.PUT
                out.append(Event(rev, sub, kind, key, kv, last.get(key) if prev_kv else None))
            last[key] = kv
        return out


class HistoryMachine(RuleBasedStateMachine):
    lmdb = False
    BUDGET = 3  # events per physical compaction step of the state machine under test

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory() if self.lmdb else None
        self.made = 0
        self.r = self.new_replica()
        self.twin = Replica(None)  # the same entries; its physical compaction always finishes at once
        self.model = HistoryModel()

    def new_replica(self) -> Replica:
        self.made += 1
        path = None if self.tmp is None else Path(self.tmp.name) / f"r{self.made}"
        return Replica(path, compact_budget=self.BUDGET)

    def teardown(self) -> None:
        self.r.close()
        if self.tmp is not None:
            self.tmp.cleanup()

    def run(self, *cmds: Command, proposer: int = 1) -> list[Any]:
        e = entry(self.r.next_index, cmds, proposer)
        got = [a.result for a in self.r.apply([e])]
        assert [a.result for a in self.twin.apply([e])] == got
        return got

    def step(self, budget: int) -> bool:
        fsm = self.r.fsm
        if self.r.store is None:
            return fsm.compact_step(None, budget)
        return bool(self.r.store.write(apply=lambda txn: fsm.compact_step(txn, budget)))

    def at(self, data: st.DataObject) -> int:
        """A revision to read at: 0 (now), one of the store's, or one or two in the future."""
        return data.draw(st.integers(0, self.model.revision + 2), label="rev")

    # -- writes ---------------------------------------------------------------------------------------------------
    @rule(cmds=st.lists(COMMANDS, min_size=1, max_size=3), proposer=st.integers(1, 3))
    def write(self, cmds: list[Command], proposer: int) -> None:
        got = self.run(*cmds, proposer=proposer)
        want = [self.model.apply(c, self.r.next_index - 1, proposer) for c in cmds]
        assert [erase_messages(r) for r in got] == [erase_messages(r) for r in want]

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        rev = self.at(data)
        (got,) = self.run(Compact(0, 0, 0, rev))
        assert erase_messages(got) == erase_messages(self.model.compact(rev))

    @precondition(lambda self: self.model.compacted > 0)
    @rule(budget=st.integers(1, 4))
    def compact_step(self, budget: int) -> None:
        before = self.r.fsm.checksum()
        self.step(budget)
        assert self.r.fsm.checksum() == before  # physical progress: nothing logical changes

    @rule()
    def restore_from_a_snapshot(self) -> None:
        """Into a new state machine, mid-compaction maybe: it carries on with the compaction."""
        items = list(self.r.fsm.snapshot_items())
        new = self.new_replica()
        new.run(*(Put(0, 0, 0, k, b"stale") for k in KEY_LIST), Delete(0, 0, 0, b"a"))  # state to be replaced
        if new.store is None:
            new.fsm.restore(None, items)
        else:
            new.store.write(apply=lambda txn: new.fsm.restore(txn, items))
        new.next_index = self.r.next_index
        assert new.fsm.checksum() == self.r.fsm.checksum()
        assert new.fsm.compaction_pending() == self.r.fsm.compaction_pending()
        self.r.close()
        self.r = new

    # -- reads ----------------------------------------------------------------------------------------------------
    def expect_refusal(self, rev: int) -> type[Exception] | None:
        if rev > self.model.revision:
            return InvalidArgument
        if rev and rev < self.model.compacted:
            return Compacted
        return None

    def state_at(self, rev: int) -> dict[bytes, KeyValue]:
        return self.model.states[rev or self.model.revision]

    @rule(data=st.data(), key=KEYS)
    def get(self, data: st.DataObject, key: bytes) -> None:
        rev = self.at(data)
        refusal = self.expect_refusal(rev)
        if refusal is not None:
            with pytest.raises(refusal) as info:
                self.r.fsm.get(key, rev=rev)
            check_refusal(info.value, rev, self.model)
            return
        assert self.r.fsm.get(key, rev=rev) == self.state_at(rev).get(key)
        assert self.r.fsm.read_revision(rev) == (rev or self.model.revision)

    @rule(data=st.data(), prefix=PREFIXES, after=st.sampled_from([b"", *KEY_LIST]), limit=st.integers(1, 4),
          keys_only=st.booleans())  # fmt: skip
    def range(self, data: st.DataObject, prefix: bytes, after: bytes, limit: int, keys_only: bool) -> None:
        rev = self.at(data)
        refusal = self.expect_refusal(rev)
        if refusal is not None:
            with pytest.raises(refusal) as info:
                self.r.fsm.range(prefix, after, limit, keys_only, rev=rev)
            check_refusal(info.value, rev, self.model)
            return
        state = self.state_at(rev)
        match = [state[k] for k in sorted(state) if k.startswith(prefix) and k > after]
        want = [kv._replace(value=b"") if keys_only else kv for kv in match[:limit]]
        assert self.r.fsm.range(prefix, after, limit, keys_only, rev=rev) == (want, len(match) > limit)

    @rule(data=st.data(), prefix=PREFIXES, prev_kv=st.booleans())
    def events(self, data: st.DataObject, prefix: bytes, prev_kv: bool) -> None:
        start = self.at(data)
        if start < 1:
            with pytest.raises(InvalidArgument):
                self.r.fsm.events(start)
            return
        if start <= self.model.compacted:
            with pytest.raises(Compacted) as info:
                self.r.fsm.events(start, prefix=prefix)
            assert info.value.compacted_revision == self.model.compacted
            return
        assert list(self.r.fsm.events(start, prefix=prefix, prev_kv=prev_kv)) == self.model.events(
            start, prefix, prev_kv
        )

    # -- invariants -------------------------------------------------------------------------------------------------
    @invariant()
    def agrees_with_the_model_and_its_twin(self) -> None:
        fsm = self.r.fsm
        assert fsm.revision() == self.model.revision
        assert fsm.compacted() == self.model.compacted
        assert fsm.range(limit=100)[0] == [self.model.data[k] for k in sorted(self.model.data)]
        assert fsm.checksum() == self.twin.fsm.checksum()
        if not fsm.compaction_pending() and not self.twin.fsm.compaction_pending():
            assert list(fsm.snapshot_items()) == list(self.twin.fsm.snapshot_items())  # the same survivors
        if self.r.store is not None:
            with self.r.store.read_txn() as txn:
                assert fsm.verify(txn)[1] == []


def check_refusal(e: BaseException, rev: int, model: HistoryModel) -> None:
    if isinstance(e, Compacted):
        assert e.compacted_revision == model.compacted
        assert str(e) == f"revision {rev} has been compacted; the oldest readable revision is {model.compacted}"
    else:
        assert str(e) == f"revision {rev} is in the future; the current revision is {model.revision}"


class LmdbHistoryMachine(HistoryMachine):
    lmdb = True


TestHistoryOnDicts = HistoryMachine.TestCase
TestHistoryOnDicts.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestHistoryOnLmdb = LmdbHistoryMachine.TestCase
TestHistoryOnLmdb.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)


# -- the hash rule: equal logical state, equal hash; a logical difference, another hash --------------------------------


def workload(n: int, keys: int = 7) -> list[Any]:
    """``n`` entries: puts, overwrites, deletes and txns over a few keys, with a compaction now and then."""
    out = []
    for i in range(1, n + 1):
        k = b"k%d" % (i % keys)
        cmds: list[Command] = [Put(i, 0, 0, k, b"v%d" % i)]
        if i % 5 == 0:
            cmds.append(Delete(i, 0, 0, b"k%d" % ((i + 2) % keys)))
        if i % 7 == 0:
            cmds.append(Txn(i, 0, 0, (), (TxnOp(PUT, k, b"t"), TxnOp(PUT, k, b"u"), TxnOp(DEL, b"k0")), ()))
        if i % 11 == 0:
            cmds.append(Compact(i, 0, 0, 2 * i - 10))  # the revision runs about twice the index
        out.append(entry(i, cmds, proposer=1 + i % 3))
    return out


def test_the_hash_covers_the_logical_state_not_the_physical_progress(tmp_path: Path) -> None:
    entries = workload(120)
    a = Replica(tmp_path / "a", compact_budget=1)  # far behind with its physical compaction
    b = Replica(tmp_path / "b", compact_budget=7)
    c = Replica(None, compact_budget=10_000)  # always done
    try:
        a.apply(entries)
        for i in range(0, len(entries), 9):  # other apply call boundaries: other physical progress
            b.apply(entries[i : i + 9])
        for e in entries:
            c.apply([e])
        assert a.fsm.compacted() == b.fsm.compacted() == c.fsm.compacted() > 0
        assert a.fsm.compaction_pending() and not c.fsm.compaction_pending()
        assert a.fsm.snapshot_items() != c.fsm.snapshot_items()
        assert a.fsm.checksum() == b.fsm.checksum() == c.fsm.checksum()
        assert a.store is not None
        with a.store.read_txn() as txn:
            assert a.fsm.state_hash(txn) == c.fsm.checksum()
    finally:
        a.close()
        b.close()


def test_a_difference_only_the_history_holds_changes_the_hash_until_compacted_away() -> None:
    """Two stores that differ only in a value overwritten since: different logical states (a read at the old
    revision tells them apart), different hashes; once both compact past it they are logically equal again."""
    a, b = Replica(None), Replica(None)
    for r, old in ((a, b"old"), (b, b"OLD")):
        r.run(Put(1, 0, 0, b"k", old))
        r.run(Put(2, 0, 0, b"k", b"new"), Put(3, 0, 0, b"j", b"x"))
    assert a.fsm.range() == b.fsm.range()  # the current state is the same
    assert a.fsm.get(b"k", rev=1) != b.fsm.get(b"k", rev=1)
    assert a.fsm.checksum() != b.fsm.checksum()
    a.run(Compact(4, 0, 0, 2))
    assert a.fsm.checksum() != b.fsm.checksum()  # the compacted revision is part of the state
    b.run(Compact(4, 0, 0, 2))
    assert a.fsm.checksum() == b.fsm.checksum()
    a.run(Put(5, 0, 0, b"j", b"y"))
    assert a.fsm.checksum() != b.fsm.checksum()


def test_a_key_deleted_at_or_below_the_compacted_revision_leaves_nothing(tmp_path: Path) -> None:
    r = Replica(tmp_path / "s")
    try:
        r.run(Put(1, 0, 0, b"gone", b"1"), Put(2, 0, 0, b"kept", b"2"), Put(3, 0, 0, b"kept", b"3"))
        r.run(Delete(4, 0, 0, b"gone"))
        r.run(Compact(5, 0, 0, 4))
        assert not r.fsm.compaction_pending()
        held = [(k[:8], v) for t, k, v in r.fsm.snapshot_items() if t == b"history"]
        assert len(held) == 1 and r.fsm.get(b"kept", rev=4) == r.fsm.get(b"kept")
        assert r.fsm.get(b"gone", rev=4) is None and r.fsm.range(rev=4)[0] == [r.fsm.get(b"kept")]
        assert r.store is not None
        with r.store.read_txn() as txn:
            counts, problems = r.fsm.verify(txn)
        assert problems == [] and counts["history"] == counts["key_history"] == 1
    finally:
        r.close()


# -- bounded steps -------------------------------------------------------------------------------------------------


def history_size(r: Replica) -> int:
    return sum(1 for t, _, _ in r.fsm.snapshot_items() if t == b"history")


@pytest.mark.parametrize("path", [None, "lmdb"])
def test_compaction_runs_in_bounded_steps_while_writes_go_on(tmp_path: Path, path: str | None) -> None:
    budget = 50
    r = Replica(None if path is None else tmp_path / "s", compact_budget=budget)
    try:
        for i in range(20):  # 2,000 writes over 30 keys, 1 in 7 a delete
            r.run(*[Delete(0, 0, 0, b"k%d" % (j % 30)) if j % 7 == 6 else Put(0, 0, 0, b"k%d" % (j % 30), b"v")
                    for j in range(i * 100, (i + 1) * 100)])  # fmt: skip
        revisions = r.fsm.revision()
        assert revisions > 1800 and history_size(r) == revisions  # one event per revision here
        live = r.fsm.count()
        r.run(Compact(0, 0, 0, revisions))
        sizes = [history_size(r)]
        calls = 0
        while r.fsm.compaction_pending():
            r.run(Put(0, 0, 0, b"more", b"x"))  # each apply call does one step, after its entries
            calls += 1
            sizes.append(history_size(r) - calls)  # (less the events the puts added)
        assert calls >= revisions // budget - 1
        # Each call examines at most `budget` events, and removes at most two per event examined.
        assert all(0 <= before - after <= 2 * budget for before, after in itertools.pairwise(sizes))
        assert sizes[-1] == live < 30  # the survivors: one put per key that exists at the compacted revision
        # The same through compact_step, on an idle writer.
        r.run(*[Put(0, 0, 0, b"k%d" % j, b"w") for j in range(30)])
        r.run(Compact(0, 0, 0, r.fsm.revision()))
        steps = 0
        while True:
            before = history_size(r)
            if r.store is None:
                more = r.fsm.compact_step(None, 4)
            else:
                more = bool(r.store.write(apply=lambda txn: r.fsm.compact_step(txn, 4)))
            assert before - history_size(r) <= 8
            steps += 1
            if not more:
                break
        assert steps > 1 and not r.fsm.compaction_pending()
    finally:
        r.close()


def test_compact_edges(tmp_path: Path) -> None:
    r = Replica(None)
    r.run(Put(1, 0, 0, b"a", b"1"), Put(2, 0, 0, b"a", b"2"), Put(3, 0, 0, b"b", b"3"))
    (refused,) = (a.result for a in r.run(Compact(5, 0, 0, 4)))
    assert isinstance(refused, ErrorResult) and refused.message == (
        "compact: revision 4 is in the future; the current revision is 3")
    assert [a.result for a in r.run(Compact(6, 0, 0, 2))] == [CompactResult(2)]
    assert [a.result for a in r.run(Compact(7, 0, 0, 1), Compact(8, 0, 0, 0))] == [CompactResult(2)] * 2
    assert r.fsm.revision() == 3  # a compaction takes no revision
    # A compaction in the same entry as the writes before it sees them.
    out = r.run(Put(9, 0, 0, b"c", b"4"), Compact(10, 0, 0, 4))
    assert [a.result for a in out][1] == CompactResult(4) and r.fsm.compacted() == 4
    with pytest.raises(InvalidArgument, match=r"0 \(the current one\) or more"):
        r.fsm.get(b"a", rev=-1)
    with pytest.raises(InvalidArgument):
        r.fsm.events(0)
    assert list(r.fsm.events(5)) == []  # the future: nothing yet
    with pytest.raises(Compacted, match="replay from 5"):
        r.fsm.events(4)


def test_compacted_travels_with_its_revision() -> None:
    e = Compacted("revision 5 has been compacted; the oldest readable revision is 17", 17)
    assert (e.kind, e.grpc_code, e.compacted_revision) == ("compacted", "OUT_OF_RANGE", 17)
    back = from_wire(e.grpc_code, e.message, dict(e.metadata()))
    assert isinstance(back, Compacted) and back.compacted_revision == 17 and back.message == e.message
    assert not back.retryable and back.applied == "no"


def test_events_carry_the_previous_value_and_a_txn_keeps_its_order(tmp_path: Path) -> None:
    r = Replica(tmp_path / "s")
    try:
        r.run(Put(1, 0, 0, b"k", b"1"))
        r.run(Txn(2, 0, 0, (), (TxnOp(PUT, b"k", b"2"), TxnOp(PUT, b"j", b"x"), TxnOp(DEL, b"k")), ()))
        got = list(r.fsm.events(1, prev_kv=True))
        assert [(e.revision, e.sub, e.kind, e.key) for e in got] == [
            (1, 0, EventType.PUT, b"k"), (2, 0, EventType.PUT, b"k"), (2, 1, EventType.PUT, b"j"),
            (2, 2, EventType.DELETE, b"k"),
        ]  # fmt: skip
        assert got[1].prev == got[0].kv and got[3].prev == got[1].kv and got[2].prev is None
        assert r.fsm.get(b"k", rev=2) is None and r.fsm.get(b"k", rev=1) == got[0].kv
        assert isinstance(got[0].kv, KeyValue) and got[3].kv is None
        assert [e.key for e in r.fsm.events(2, prefix=b"j")] == [b"j"]
        # An iterator streams from its own read transaction: later writes do not show in it.
        it = r.fsm.events(1)
        first = next(it)
        r.run(Put(3, 0, 0, b"k", b"3"))
        assert [first, *it] == [e._replace(prev=None) for e in got]
    finally:
        r.close()


def test_a_put_result_is_the_event_kv() -> None:
    r = Replica(None)
    (a,) = r.run(Put(1, 0, 0, b"k", b"v"))
    assert isinstance(a.result, PutResult)
    assert next(r.fsm.events(1)).kv == a.result.kv


@pytest.mark.parametrize("path", [None, "lmdb"])
def test_a_replay_never_skips_what_a_compaction_meanwhile_removed(tmp_path: Path, path: str | None) -> None:
    """LMDB: the iterator's read transaction still sees every event. Dicts: the tables are live, so the iterator
    refuses to go on (Compacted) rather than skip events."""
    r = Replica(None if path is None else tmp_path / "s")
    try:
        for i in range(6):
            r.run(Put(0, 0, 0, b"k", b"%d" % i))
        r.run(Delete(0, 0, 0, b"k"))
        it = r.fsm.events(2)
        assert next(it).revision == 2
        r.run(Compact(0, 0, 0, 5))
        assert not r.fsm.compaction_pending()  # (the revisions 2 to 4 are gone)
        if path is None:
            with pytest.raises(Compacted):
                next(it)
        else:
            assert [e.revision for e in it] == [3, 4, 5, 6, 7]
    finally:
        r.close()


def test_verify_checks_the_history_and_its_index(tmp_path: Path) -> None:
    r = Replica(tmp_path / "s")
    store = r.store
    assert store is not None
    try:
        r.run(Put(1, 0, 0, b"k", b"1"), Put(2, 0, 0, b"k", b"2"), Put(3, 0, 0, b"j", b"3"))

        def problems() -> list[str]:
            with store.read_txn() as txn:
                return r.fsm.verify(txn)[1]

        assert problems() == []
        pos2 = struct.pack(">QI", 2, 0)
        store.write(apply=lambda txn: r.fsm._tables(txn).by_key.remove(b"k", pos2))  # an event left out
        assert problems() == ["the history index holds 2 events, the history 3"]
        store.write(apply=lambda txn: r.fsm._tables(txn).by_key.add(b"k", struct.pack(">QI", 2, 5)))
        assert problems() == ["the history index of 'k' names the event 2.5, which the history does not hold for "
                              "that key"]  # fmt: skip
        with pytest.raises(DataCorruption, match=r"names the event 2\.5"):
            r.fsm.get(b"k", rev=2)
        store.write(apply=lambda txn: r.fsm._tables(txn).history.put(pos2, b"\x93\x02\xa1k\xc0"))  # not bytes
        assert any("of table 'history' does not decode: malformed history event" in p for p in problems())
    finally:
        r.close()
