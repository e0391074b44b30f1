"""KVStateMachine: every operation and condition; txn semantics; a pure-Python model, the dict backend and the LMDB
backend agreeing on random histories; determinism; vector clocks from the proposer; retry safety of apply; bad
data in the log."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv.codec import CodecError
from raftkv.errors import InvalidArgument
from raftkv.kv import (
    Applied,
    CmpOp,
    Command,
    Condition,
    ConditionFailedResult,
    Delete,
    DeleteResult,
    DictBackend,
    ErrorResult,
    Incr,
    IncrResult,
    KeyValue,
    KVStateMachine,
    LeaseGrant,
    LeaseRevoke,
    Ordering,
    Put,
    PutResult,
    RangeCompare,
    RangeOp,
    RangeTxn,
    Result,
    Sibling,
    SiblingPut,
    Target,
    Txn,
    TxnOp,
    TxnOpType,
    TxnResult,
    VectorClock,
    compare,
    decode_batch,
)
from raftkv.raft.types import Entry, EntryType
from raftkv.storage import LmdbLogStore

from . import Replica, entry
from .model import Model, erase_messages

GET, PUT, DEL, INCR = TxnOpType.GET, TxnOpType.PUT, TxnOpType.DELETE, TxnOpType.INCR
EQ, NE, GT, LT = CmpOp.EQ, CmpOp.NE, CmpOp.GT, CmpOp.LT


def vc(**counters: int) -> VectorClock:
    """vc(n1=2, n3=1) -> VectorClock({1: 2, 3: 1})"""
    return VectorClock({int(k[1:]): v for k, v in counters.items()})


@pytest.fixture(params=["dict", "lmdb"])
def replica(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Replica]:
    r = Replica(None if request.param == "dict" else tmp_path / "wal")
    yield r
    r.close()


def results(applied: list[Applied]) -> list[Result]:
    return [a.result for a in applied]


def one(r: Replica, cmd: Command, proposer: int = 1, ts: int = 0) -> Result:
    (a,) = r.run(cmd, proposer=proposer, ts=ts)
    return a.result


# -- single operations -----------------------------------------------------------------------------------------------


def test_put_get_and_metadata(replica: Replica) -> None:
    assert replica.fsm.get(b"k") is None
    assert one(replica, Put(1, 0, 0, b"k", b"v1")) == PutResult(KeyValue(b"k", b"v1", 1, 1, 1, vc(n1=1)))
    assert one(replica, Put(2, 0, 0, b"other", b"x")) == PutResult(KeyValue(b"other", b"x", 2, 2, 1, vc(n1=2)))
    assert one(replica, Put(3, 0, 0, b"k", b"v2")) == PutResult(KeyValue(b"k", b"v2", 1, 3, 2, vc(n1=3)))
    assert replica.fsm.get(b"k") == KeyValue(b"k", b"v2", 1, 3, 2, vc(n1=3))
    assert replica.fsm.count() == 2
    assert replica.fsm.applied_index() == 3
    assert replica.fsm.revision() == 3


def test_delete_then_recreate_resets_metadata(replica: Replica) -> None:
    replica.run(Put(1, 0, 0, b"k", b"a"), Put(2, 0, 0, b"k", b"b"))
    assert one(replica, Delete(3, 0, 0, b"k")) == DeleteResult(True, 3)
    assert replica.fsm.get(b"k") is None
    assert one(replica, Delete(4, 0, 0, b"k")) == DeleteResult(False, 3)  # missing: nothing applied, no revision
    assert one(replica, Put(5, 0, 0, b"k", b"c")) == PutResult(KeyValue(b"k", b"c", 4, 4, 1, vc(n1=4)))


def test_several_commands_in_one_entry_share_its_index_but_not_a_revision(replica: Replica) -> None:
    out = replica.run(Put(1, 0, 0, b"k", b"a"), Put(2, 0, 0, b"k", b"b"), Incr(3, 0, 0, b"n", 2))
    assert [a.index for a in out] == [1, 1, 1]
    assert [a.request_id for a in out] == [1, 2, 3]
    assert out[0].result == PutResult(KeyValue(b"k", b"a", 1, 1, 1, vc(n1=1)))
    assert out[1].result == PutResult(KeyValue(b"k", b"b", 1, 2, 2, vc(n1=2)))
    assert out[2].result == IncrResult(2, KeyValue(b"n", b"2", 3, 3, 1, vc(n1=3)))
    assert replica.fsm.revision() == 3


def test_incr(replica: Replica) -> None:
    assert one(replica, Incr(1, 0, 0, b"n", 5)) == IncrResult(5, KeyValue(b"n", b"5", 1, 1, 1, vc(n1=1)))
    assert one(replica, Incr(2, 0, 0, b"n", -7)) == IncrResult(-2, KeyValue(b"n", b"-2", 1, 2, 2, vc(n1=2)))
    replica.run(Put(3, 0, 0, b"n", b"0041"))
    assert one(replica, Incr(4, 0, 0, b"n", 1)) == IncrResult(42, KeyValue(b"n", b"42", 1, 4, 4, vc(n1=4)))


@pytest.mark.parametrize("value", [b"abc", b"", b" 1", b"1 ", b"1_0", b"+1", b"1.5", b"9" * 19, b"\xd9\xa1"])
def test_incr_of_a_non_integer_is_invalid_and_changes_nothing(replica: Replica, value: bytes) -> None:
    replica.run(Put(1, 0, 0, b"n", value))
    result = one(replica, Incr(2, 0, 0, b"n", 1))
    assert isinstance(result, ErrorResult) and result.kind == "invalid-argument"
    assert replica.fsm.get(b"n") == KeyValue(b"n", value, 1, 1, 1, vc(n1=1))


def test_incr_overflow_is_invalid(replica: Replica) -> None:
    replica.run(Put(1, 0, 0, b"n", b"%d" % (2**63 - 1)))
    result = one(replica, Incr(2, 0, 0, b"n", 1))
    assert isinstance(result, ErrorResult) and "overflows" in result.message
    assert one(replica, Incr(3, 0, 0, b"n", -(2**63 - 1))) == IncrResult(0, KeyValue(b"n", b"0", 1, 2, 2, vc(n1=2)))


# -- conditions --------------------------------------------------------------------------------------------------------

# Against k = KeyValue(b"k", b"v", create_revision=1, mod_revision=2, version=2, vclock {1: 1, 2: 2}), a missing b"m".
CONDITIONS = [
    (Condition(b"k", Target.VALUE, EQ, b"v"), True),
    (Condition(b"k", Target.VALUE, EQ, b"w"), False),
    (Condition(b"k", Target.VALUE, NE, b"w"), True),
    (Condition(b"k", Target.VALUE, NE, b"v"), False),
    (Condition(b"m", Target.VALUE, EQ, b""), False),  # a missing key has no value: never EQ ...
    (Condition(b"m", Target.VALUE, NE, b""), True),  # ... always NE
    (Condition(b"k", Target.VERSION, EQ, 2), True),
    (Condition(b"k", Target.VERSION, NE, 2), False),
    (Condition(b"k", Target.VERSION, GT, 1), True),
    (Condition(b"k", Target.VERSION, GT, 2), False),
    (Condition(b"k", Target.VERSION, LT, 3), True),
    (Condition(b"k", Target.VERSION, LT, 2), False),
    (Condition(b"m", Target.VERSION, EQ, 0), True),
    (Condition(b"k", Target.MOD_REVISION, EQ, 2), True),
    (Condition(b"k", Target.MOD_REVISION, GT, 2), False),
    (Condition(b"m", Target.MOD_REVISION, LT, 1), True),
    (Condition(b"k", Target.CREATE_REVISION, EQ, 1), True),
    (Condition(b"k", Target.CREATE_REVISION, LT, 1), False),
    (Condition(b"m", Target.CREATE_REVISION, EQ, 0), True),
    (Condition(b"k", Target.EXISTS, EQ, True), True),
    (Condition(b"k", Target.EXISTS, NE, True), False),
    (Condition(b"m", Target.EXISTS, EQ, False), True),
    (Condition(b"m", Target.EXISTS, EQ, True), False),
    (Condition(b"k", Target.VCLOCK, EQ, vc(n1=1, n2=2)), True),
    (Condition(b"k", Target.VCLOCK, EQ, vc(n1=1)), False),
    (Condition(b"k", Target.VCLOCK, NE, vc(n1=1)), True),
    (Condition(b"m", Target.VCLOCK, EQ, VectorClock()), True),  # the empty clock: "does not exist"
    (Condition(b"k", Target.VCLOCK, EQ, VectorClock()), False),
]


@pytest.mark.parametrize(
    ("cond", "holds"),
    CONDITIONS,
    ids=[f"{c.key!r}-{Target(c.target).name}-{CmpOp(c.op).name}-{c.operand!r}-{h}" for c, h in CONDITIONS],
)
def test_conditions(replica: Replica, cond: Condition, holds: bool) -> None:
    replica.run(Put(1, 0, 0, b"k", b"v"), proposer=1)
    replica.run(Put(2, 0, 0, b"k", b"v"), proposer=2)
    k = replica.fsm.get(b"k")
    assert k == KeyValue(b"k", b"v", 1, 2, 2, vc(n1=1, n2=2))
    current = k if cond.key == b"k" else None

    put = one(replica, Put(3, 0, 0, b"target", b"new", (cond,)))
    if holds:
        assert isinstance(put, PutResult) and replica.fsm.get(b"target") is not None
    else:
        assert put == ConditionFailedResult(cond, current)
        assert replica.fsm.get(b"target") is None

    txn = one(replica, Txn(4, 0, 0, (cond,), (TxnOp(GET, b"k"),), (TxnOp(GET, b"m"),)))
    # A failed compare is not an error; a txn that only reads takes no revision.
    assert txn == TxnResult(holds, (k,) if holds else (None,), 3 if holds else 2)


def test_the_first_failing_condition_is_reported_with_its_keys_state(replica: Replica) -> None:
    replica.run(Put(1, 0, 0, b"a", b"1"), Put(2, 0, 0, b"b", b"2"))
    conds = (
        Condition(b"a", Target.EXISTS, EQ, True),
        Condition(b"b", Target.VALUE, EQ, b"3"),
        Condition(b"c", Target.EXISTS, EQ, True),
    )
    result = one(replica, Delete(3, 0, 0, b"a", conds))
    assert result == ConditionFailedResult(conds[1], replica.fsm.get(b"b"))
    assert replica.fsm.get(b"a") is not None


def test_conditional_delete(replica: Replica) -> None:
    replica.run(Put(1, 0, 0, b"k", b"v"))
    cas = Condition(b"k", Target.MOD_REVISION, EQ, 1)
    assert one(replica, Delete(2, 0, 0, b"k", (cas,))) == DeleteResult(True, 2)
    assert isinstance(one(replica, Delete(3, 0, 0, b"k", (cas,))), ConditionFailedResult)


# -- txn ---------------------------------------------------------------------------------------------------------------


def test_txn_ops_see_earlier_ops_in_order(replica: Replica) -> None:
    replica.run(Put(1, 0, 0, b"a", b"1"))
    ops = (
        TxnOp(GET, b"a"),
        TxnOp(PUT, b"a", b"2"),
        TxnOp(GET, b"a"),
        TxnOp(INCR, b"a", delta=5),
        TxnOp(DEL, b"a"),
        TxnOp(GET, b"a"),
        TxnOp(DEL, b"a"),
        TxnOp(INCR, b"b", delta=1),
    )
    result = one(replica, Txn(2, 0, 0, (Condition(b"a", Target.VALUE, EQ, b"1"),), ops, ()))
    assert result == TxnResult(
        True,
        (
            KeyValue(b"a", b"1", 1, 1, 1, vc(n1=1)),
            PutResult(KeyValue(b"a", b"2", 1, 2, 2, vc(n1=2))),  # every write of the txn has its revision, 2
            KeyValue(b"a", b"2", 1, 2, 2, vc(n1=2)),
            IncrResult(7, KeyValue(b"a", b"7", 1, 2, 3, vc(n1=2))),
            DeleteResult(True, 2),
            None,
            DeleteResult(False, 2),
            IncrResult(1, KeyValue(b"b", b"1", 2, 2, 1, vc(n1=2))),
        ),
        2,
    )
    assert replica.fsm.revision() == 2


def test_txn_runs_failure_when_a_compare_fails(replica: Replica) -> None:
    compares = (Condition(b"a", Target.EXISTS, EQ, False), Condition(b"lock", Target.EXISTS, EQ, True))
    result = one(replica, Txn(1, 0, 0, compares, (TxnOp(PUT, b"a", b"won"),), (TxnOp(PUT, b"lost", b"1"),)))
    assert isinstance(result, TxnResult) and not result.succeeded
    assert replica.fsm.get(b"a") is None and replica.fsm.get(b"lost") is not None


def test_an_invalid_txn_op_applies_nothing_but_a_bad_incr_only_fails_itself(replica: Replica) -> None:
    replica.run(Put(1, 0, 0, b"s", b"text"))
    bad = one(replica, Txn(2, 0, 0, (), (TxnOp(PUT, b"a", b"1"), TxnOp(PUT, b"", b"x")), ()))
    assert isinstance(bad, ErrorResult) and "key is empty" in bad.message
    assert replica.fsm.get(b"a") is None
    partial = one(replica, Txn(3, 0, 0, (), (TxnOp(INCR, b"s", delta=1), TxnOp(PUT, b"a", b"1")), ()))
    assert isinstance(partial, TxnResult)
    assert isinstance(partial.results[0], ErrorResult) and isinstance(partial.results[1], PutResult)


# -- limits and invalid commands ------------------------------------------------------------------------------------


def test_limits_are_enforced_at_apply(tmp_path: Path) -> None:
    r = Replica(tmp_path / "wal", max_key_bytes=4, max_value_bytes=8, max_ops=2)
    try:
        out = r.run(
            Put(1, 0, 0, b"12345", b"v"),
            Put(2, 0, 0, b"k", b"123456789"),
            Put(3, 0, 0, b"", b"v"),
            Put(4, 0, 0, b"1234", b"12345678"),
        )
        assert [type(a.result) for a in out] == [ErrorResult, ErrorResult, ErrorResult, PutResult]
        assert all(a.result.kind == "invalid-argument" for a in out[:3])  # type: ignore[union-attr]
        assert r.fsm.count() == 1
    finally:
        r.close()


def test_a_4_kib_key_works_on_lmdb_beyond_its_511_byte_key_limit(tmp_path: Path) -> None:
    with LmdbLogStore(tmp_path, sync=False) as store:
        fsm = KVStateMachine(store, max_key_bytes=4096)
        assert fsm.limits.max_key_bytes == 4096


def test_a_511_byte_key_works_on_lmdb(tmp_path: Path) -> None:
    r = Replica(tmp_path / "wal")
    try:
        key = b"k" * 511
        assert isinstance(one(r, Put(1, 0, 0, key, b"v" * (1 << 20))), PutResult)
        assert r.fsm.get(key) is not None
    finally:
        r.close()


# -- bad data in the log ------------------------------------------------------------------------------------------


def test_a_corrupt_entry_yields_an_error_and_the_others_still_apply(replica: Replica) -> None:
    good = entry(1, [Put(1, 0, 0, b"a", b"1")])
    bad = Entry(1, 2, 0, b"\x94\x01\x01\x00garbage")
    later = entry(3, [Put(3, 0, 0, b"b", b"2")])
    out = replica.apply([good, bad, later])
    assert [a.index for a in out] == [1, 2, 3]
    err = out[1]
    assert (err.proposer, err.request_id) == (0, 0)
    assert isinstance(err.result, ErrorResult) and "not a command batch" in err.result.message
    assert replica.fsm.get(b"a") is not None and replica.fsm.get(b"b") is not None
    assert replica.fsm.applied_index() == 3


def test_a_malformed_command_yields_an_error_for_that_request_only(replica: Replica) -> None:
    data = msgpack.packb([2, 2, 0, [[1, 7, 0, 0, b"a", b"1", []], [1, 8, 0, 0, "str", b"1", []], [9, 9, 0, 0]]])
    out = replica.apply([Entry(1, 1, 0, data)])
    assert [(a.proposer, a.request_id, type(a.result)) for a in out] == [
        (2, 7, PutResult),
        (2, 8, ErrorResult),
        (2, 9, ErrorResult),
    ]


def test_noops_conf_changes_and_old_entries_are_skipped(replica: Replica) -> None:
    out = replica.apply(
        [
            Entry(1, 1, EntryType.NORMAL, b""),  # a leader's no-op
            Entry(1, 2, EntryType.CONF_CHANGE, b"\x00membership"),
            entry(3, [Put(1, 0, 0, b"a", b"1")]),
        ]
    )
    assert [a.index for a in out] == [2, 3]
    assert isinstance(out[0].result, ErrorResult)  # a malformed membership entry changes nothing
    assert replica.fsm.members() == []
    assert replica.fsm.applied_index() == 3
    before = replica.fsm.checksum()
    assert replica.apply([entry(2, [Put(2, 0, 0, b"b", b"1")]), entry(3, [Put(3, 0, 0, b"c", b"1")])]) == []
    assert replica.fsm.checksum() == before  # at or below the applied index: skipped


def test_dict_mode_wants_no_txn_and_lmdb_mode_wants_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="txn=None"):
        KVStateMachine().apply(object(), [])  # type: ignore[arg-type]
    with LmdbLogStore(tmp_path, sync=False) as store, pytest.raises(ValueError, match="write transaction"):
        KVStateMachine(store).apply(None, [])


# -- range ----------------------------------------------------------------------------------------------------------


def test_range_prefix_pagination_and_keys_only(replica: Replica) -> None:
    keys = [b"a", b"app", b"apple", b"apples", b"apq", b"b", b"ap\xff", b"ap"]
    replica.run(*[Put(i, 0, 0, k, b"v:" + k) for i, k in enumerate(keys)])
    kvs, more = replica.fsm.range(prefix=b"ap")
    assert [kv.key for kv in kvs] == [b"ap", b"app", b"apple", b"apples", b"apq", b"ap\xff"] and not more
    assert kvs[1].value == b"v:app"
    page1, more = replica.fsm.range(prefix=b"ap", limit=2)
    assert [kv.key for kv in page1] == [b"ap", b"app"] and more
    page2, more = replica.fsm.range(prefix=b"ap", start_after=b"app", limit=3)
    assert [kv.key for kv in page2] == [b"apple", b"apples", b"apq"] and more
    page3, more = replica.fsm.range(prefix=b"ap", start_after=b"apq", limit=3)
    assert [kv.key for kv in page3] == [b"ap\xff"] and not more
    everything, more = replica.fsm.range(keys_only=True)
    assert [kv.key for kv in everything] == sorted(keys) and not more
    assert all(kv.value == b"" and kv.version == 1 for kv in everything)
    assert replica.fsm.range(start_after=b"b") == ([], False)
    assert replica.fsm.range(prefix=b"a", start_after=b"0")[0][0].key == b"a"  # start_after below the prefix
    with pytest.raises(InvalidArgument):
        replica.fsm.range(limit=0)


def test_reads_in_the_callers_read_transaction(tmp_path: Path) -> None:
    """A node reads the store's applied index and the state in one transaction: both at the same point."""
    r = Replica(tmp_path / "wal")
    try:
        r.run(Put(1, 0, 0, b"a", b"1"), Put(2, 0, 0, b"b", b"2"))
        assert r.store is not None
        with r.store.read_txn() as txn:
            assert r.fsm.get(b"a", txn=txn) == r.fsm.get(b"a")
            assert r.fsm.range(prefix=b"b", txn=txn) == ([r.fsm.get(b"b")], False)
            assert r.fsm.count(txn=txn) == 2
            assert r.fsm.applied_index(txn=txn) == r.store.applied_index() == 1
        with pytest.raises(ValueError, match="txn=None"):
            Replica(None).fsm.get(b"a", txn=txn)
    finally:
        r.close()


# -- vector clocks come from the proposer ---------------------------------------------------------------------------


def test_clocks_record_each_proposers_last_revision(tmp_path: Path) -> None:
    """Two replicas apply the same entries from proposers 1, 2 and 7: each write advances its entry's proposer's
    component to the write's revision, whatever node applies it (a replica has no id to use at all)."""
    entries = [
        entry(1, [Put(1, 0, 0, b"k", b"a")], proposer=1),
        entry(2, [Put(1, 0, 0, b"k", b"b")], proposer=2),
        entry(3, [Incr(2, 0, 0, b"n", 1), Put(3, 0, 0, b"k", b"c")], proposer=2),
        entry(4, [Txn(4, 0, 0, (), (TxnOp(PUT, b"k", b"d"),), ())], proposer=7),
    ]
    replicas = [Replica(tmp_path / "r1"), Replica(tmp_path / "r2"), Replica(None)]
    try:
        for r in replicas:
            r.apply(entries)
            assert r.fsm.get(b"k") == KeyValue(b"k", b"d", 1, 5, 4, vc(n1=1, n2=4, n7=5))
            assert r.fsm.get(b"n") == KeyValue(b"n", b"1", 3, 3, 1, vc(n2=3))
        assert len({r.fsm.checksum() for r in replicas}) == 1
    finally:
        for r in replicas:
            r.close()


def test_a_vclock_condition_detects_a_concurrent_writer(replica: Replica) -> None:
    replica.run(Put(1, 0, 0, b"k", b"v"), proposer=1)
    seen = replica.fsm.get(b"k")
    assert seen is not None
    replica.run(Put(2, 0, 0, b"k", b"other"), proposer=2)  # someone else wrote in between
    cas = Put(3, 0, 0, b"k", b"mine", (Condition(b"k", Target.VCLOCK, EQ, seen.vclock),))
    assert one(replica, cas, proposer=1) == ConditionFailedResult(cas.conditions[0], replica.fsm.get(b"k"))


# -- revisions -------------------------------------------------------------------------------------------------------


def test_a_revision_condition_on_the_first_of_several_writes_in_one_entry_is_refused(replica: Replica) -> None:
    """The lost update of the issue: three writes to one key share a log entry (so they share its index); a
    condition on the first write's revision must not hold once the later ones applied."""
    out = replica.run(Put(1, 0, 0, b"k", b"a"), Put(2, 0, 0, b"k", b"b"), Put(3, 0, 0, b"k", b"c"))
    first = out[0].result
    assert isinstance(first, PutResult)
    assert len({a.index for a in out}) == 1 and len({a.result.kv.mod_revision for a in out}) == 3  # type: ignore[union-attr]
    mine = Put(4, 0, 0, b"k", b"mine", (Condition(b"k", Target.MOD_REVISION, EQ, first.kv.mod_revision),))
    assert isinstance(one(replica, mine), ConditionFailedResult)
    assert replica.fsm.get(b"k").value == b"c"  # type: ignore[union-attr]
    # The same inside a txn, and the txn (one unit) takes one revision for all its writes.
    txn = Txn(5, 0, 0, (Condition(b"k", Target.MOD_REVISION, EQ, first.kv.mod_revision),),
              (TxnOp(PUT, b"k", b"t"),), (TxnOp(PUT, b"x", b"1"), TxnOp(PUT, b"y", b"2")))
    res = one(replica, txn)
    assert isinstance(res, TxnResult) and not res.succeeded and res.revision == 4
    assert {replica.fsm.get(k).mod_revision for k in (b"x", b"y")} == {4}  # type: ignore[union-attr]


def test_revisions_only_count_changes(replica: Replica) -> None:
    replica.run(Put(1, 0, 0, b"k", b"v"))  # revision 1
    replica.run(
        Put(2, 0, 0, b"k", b"w", (Condition(b"k", Target.VERSION, EQ, 9),)),  # a failed condition
        Delete(3, 0, 0, b"missing"),  # nothing to delete
        Txn(4, 0, 0, (), (TxnOp(GET, b"k"),), ()),  # reads only
        Incr(5, 0, 0, b"k", 1),  # not an integer
        Put(6, 0, 0, b"", b"x"),  # invalid
    )
    assert replica.fsm.revision() == 1
    sessions = [Put(7, 42, 1, b"k", b"s"), Put(8, 42, 1, b"k", b"s")]  # a retry answered from the session
    out = replica.run(*sessions)
    assert out[0].result == out[1].result and replica.fsm.revision() == 2


def test_the_revision_survives_a_restart_and_a_snapshot(tmp_path: Path) -> None:
    r = Replica(tmp_path / "a")
    try:
        r.run(Put(1, 0, 0, b"k", b"v"), Put(2, 0, 0, b"k", b"w"))
        r.reopen()
        assert r.fsm.revision() == 2
        (a,) = r.run(Put(3, 0, 0, b"k", b"x"))
        assert a.result.kv.mod_revision == 3  # type: ignore[union-attr]
        items = list(r.fsm.snapshot_items())
        other = Replica(None)
        other.fsm.restore(None, items)
        assert other.fsm.revision() == 3 and other.fsm.checksum() == r.fsm.checksum()
    finally:
        r.close()


# -- vector clocks across incarnations, and siblings -------------------------------------------------------------


def test_a_context_read_before_a_delete_never_matches_the_key_created_again(replica: Replica) -> None:
    """ABA through a delete: read a context, delete, put again (the same value, even), then put with the old
    context: refused, and the old clock is never EQUAL or AFTER the new one."""
    replica.run(Put(1, 0, 0, b"k", b"v"), proposer=1)
    old = replica.fsm.get(b"k")
    assert old is not None
    replica.run(Delete(2, 0, 0, b"k"), proposer=1)
    replica.run(Put(3, 0, 0, b"k", b"v"), proposer=1)
    new = replica.fsm.get(b"k")
    assert new is not None and compare(old.vclock, new.vclock) in (Ordering.BEFORE, Ordering.CONCURRENT)
    stale = Put(4, 0, 0, b"k", b"stale", (Condition(b"k", Target.VCLOCK, EQ, old.vclock),))
    assert isinstance(one(replica, stale, proposer=1), ConditionFailedResult)
    # Nor does it cover (and so silently replace) the new incarnation's value in a sibling put.
    res = one(replica, SiblingPut(5, 0, 0, b"k", b"offline", old.vclock), proposer=2)
    assert isinstance(res, PutResult) and res.kv.siblings == (Sibling(b"v", 1, new.mod_revision),)


def test_siblings_kept_then_resolved_by_the_merged_context(replica: Replica) -> None:
    """Two writers read the same cart, both write without seeing the other; the second keeps a sibling; a get
    returns both with one clock; a put with that clock leaves one value."""
    replica.run(Put(1, 0, 0, b"cart", b"milk"), proposer=1)
    seen = replica.fsm.get(b"cart")
    assert seen is not None
    a = one(replica, SiblingPut(2, 0, 0, b"cart", b"milk,eggs", seen.vclock), proposer=2)
    b = one(replica, SiblingPut(3, 0, 0, b"cart", b"milk,bread", seen.vclock), proposer=3)
    assert isinstance(a, PutResult) and a.kv.siblings == ()  # it saw "milk": replaced it
    assert isinstance(b, PutResult) and [s.value for s in b.kv.siblings] == [b"milk,eggs"]
    both = replica.fsm.get(b"cart")
    assert both is not None and (both.value, [s.value for s in both.siblings]) == (b"milk,bread", [b"milk,eggs"])
    # A key with siblings has no single value to compare, nor an integer to increment.
    assert isinstance(one(replica, Put(4, 0, 0, b"cart", b"x", (Condition(b"cart", Target.VALUE, EQ,
                                                                            b"milk,bread"),))), ConditionFailedResult)
    assert isinstance(one(replica, Incr(5, 0, 0, b"cart", 1)), ErrorResult)
    # The default put with the merged context resolves them.
    fixed = one(replica, Put(6, 0, 0, b"cart", b"milk,eggs,bread", (Condition(b"cart", Target.VCLOCK, EQ,
                                                                               both.vclock),)), proposer=1)
    assert isinstance(fixed, PutResult) and fixed.kv.siblings == ()
    assert compare(both.vclock, fixed.kv.vclock) == Ordering.BEFORE


def test_siblings_are_bounded(tmp_path: Path) -> None:
    r = Replica(None, max_siblings=3)
    r.run(Put(1, 0, 0, b"k", b"v"))
    ctx = VectorClock()  # a writer that saw nothing: every write stays
    outs = [r.run(SiblingPut(i, 0, 0, b"k", b"w%d" % i, ctx))[0].result for i in range(2, 5)]
    assert [type(o) for o in outs] == [PutResult, PutResult, ErrorResult]
    assert "resolve its siblings" in outs[2].message  # type: ignore[union-attr]
    assert len(r.fsm.get(b"k").siblings) == 2  # type: ignore[union-attr]


# -- determinism, retry safety, snapshots ---------------------------------------------------------------------------


def workload(n: int) -> list[Entry]:
    out = []
    for i in range(1, n + 1):
        cmds: list[Command] = [
            Put(i, i % 5, i, b"key%03d" % (i % 37), b"value-%d" % i),
            Incr(i + 1000, 0, 0, b"counter%d" % (i % 3), i),
            Delete(i + 2000, 0, 0, b"key%03d" % ((i * 7) % 37)),
        ]
        if i % 4 == 0:
            cmds.append(Txn(i + 3000, i % 5, i, (Condition(b"counter0", Target.VERSION, GT, 3),),
                            (TxnOp(PUT, b"t%d" % i, b"yes"),), (TxnOp(GET, b"key001"),)))  # fmt: skip
        out.append(entry(i, cmds, proposer=1 + i % 3, ts=i * 1_000_000_000))
    return out


def test_the_same_entries_give_identical_state_on_fresh_stores(tmp_path: Path) -> None:
    entries = workload(60)
    a, b, c = Replica(tmp_path / "a"), Replica(tmp_path / "b"), Replica(None)
    try:
        ra = a.apply(entries)
        for i in range(0, len(entries), 7):  # other batching of the same entries into writes
            b.apply(entries[i : i + 7])
        rc = c.apply(entries)
        assert ra == rc
        assert a.fsm.checksum() == b.fsm.checksum() == c.fsm.checksum()
        assert list(a.fsm.snapshot_items()) == list(c.fsm.snapshot_items())
    finally:
        a.close()
        b.close()


def test_apply_is_retry_safe_across_aborted_transactions(tmp_path: Path) -> None:
    """The store may run apply, abort, grow the map and run it again: the outcome must be that of one run."""
    entries = workload(30)
    once = Replica(tmp_path / "once")
    once_results = once.apply(entries)

    store = LmdbLogStore(tmp_path / "retried", sync=False)
    fsm = KVStateMachine(store)
    try:
        for _ in range(2):  # two runs whose transaction is aborted by hand
            txn = store.env.begin(write=True)
            fsm.apply(txn, entries)
            txn.abort()
        runs = 0

        def flaky(txn: lmdb.Transaction[bytes]) -> list[Applied]:
            nonlocal runs
            runs += 1
            out = fsm.apply(txn, entries)
            if runs <= 2:  # the map-full path: LmdbLogStore aborts, grows the map and calls apply again
                raise lmdb.MapFullError("simulated")
            return out

        retried = store.write(apply=flaky, applied=30)
        assert runs == 3 and store.stats.map_resizes == 2
        assert retried == once_results
        assert fsm.checksum() == once.fsm.checksum()
    finally:
        store.close()
        once.close()


def test_a_real_map_full_retry(tmp_path: Path) -> None:
    """A tiny map that must grow while applying 1 MiB values."""
    r = Replica(None)
    store = LmdbLogStore(tmp_path, sync=False, map_size=256 << 10)
    fsm = KVStateMachine(store)
    try:
        entries = [entry(i, [Put(i, 1, i, b"k%d" % (i % 3), bytes([i]) * (1 << 20))]) for i in range(1, 6)]
        out = store.write(apply=lambda txn: fsm.apply(txn, entries))
        assert store.stats.map_resizes > 0
        assert out == r.apply(entries)
        assert fsm.checksum() == r.fsm.checksum()
    finally:
        store.close()


def test_snapshot_items_restore_round_trip(tmp_path: Path) -> None:
    src = Replica(tmp_path / "src", session_ttl_s=10)
    dst = Replica(tmp_path / "dst", session_ttl_s=10)
    mem = Replica(None, session_ttl_s=10)
    try:
        src.apply(workload(20))
        dst.apply(workload(5)[:3])  # something to be replaced
        items = list(src.fsm.snapshot_items())
        assert items == sorted(items)
        assert dst.store is not None
        dst.store.write(apply=lambda txn: dst.fsm.restore(txn, items))
        mem.fsm.restore(None, items)
        assert src.fsm.checksum() == dst.fsm.checksum() == mem.fsm.checksum()
        more = workload(25)[20:]
        assert src.apply(more) == dst.apply(more) == mem.apply(more)
        assert src.fsm.checksum() == dst.fsm.checksum() == mem.fsm.checksum()
        with pytest.raises(ValueError, match="unknown state machine table"):
            mem.fsm.restore(None, [(b"nope", b"k", b"v")])
    finally:
        src.close()
        dst.close()


def test_dict_backend_iteration_survives_changes() -> None:
    d = DictBackend()
    for k in (b"a", b"c", b"e"):
        d.put(k, k)
    seen = []
    for k, _ in d.iter_from(b"b"):
        seen.append(k)
        if k == b"c":
            d.delete(b"c")
            d.put(b"d", b"d")
            d.put(b"b", b"b")
    assert seen == [b"c", b"d", b"e"]
    assert [k for k, _ in d.iter_from(b"")] == [b"a", b"b", b"d", b"e"] and d.count() == 4
    d.clear()
    assert list(d.iter_from(b"")) == [] and d.get(b"a") is None


# -- the model: random histories on dicts, on LMDB and in a plain-Python model ---------------------------------------


M_KEYS = st.sampled_from([b"a"] * 4 + [b"b"] * 4 + [b"c"] * 3 + [b""])  # b"": invalid, now and then
M_VALUES = st.sampled_from([b"", b"1", b"-5", b"x", b"9223372036854775807"])
M_CLOCKS = st.dictionaries(st.integers(1, 3), st.integers(1, 3), max_size=2).map(VectorClock)
M_LEASES = st.sampled_from([0, 0, 0, 1, 2, 3, 7])
"""Lease ids: 0 (none), the first ones the state machine picks, one a client picks (7)."""
M_CONTEXTS = st.dictionaries(st.integers(1, 3), st.integers(1, 40), max_size=3).map(VectorClock)
m_conditions = st.one_of(
    st.builds(Condition, M_KEYS, st.just(Target.VALUE), st.sampled_from([EQ, NE] * 4 + [GT]), M_VALUES),
    st.builds(
        Condition,
        M_KEYS,
        st.sampled_from([Target.VERSION, Target.MOD_REVISION, Target.CREATE_REVISION]),
        st.sampled_from(CmpOp),
        st.integers(0, 6),
    ),
    st.builds(Condition, M_KEYS, st.just(Target.EXISTS), st.sampled_from([EQ, NE]), st.booleans()),
    st.builds(Condition, M_KEYS, st.just(Target.VCLOCK), st.sampled_from([EQ, NE]), M_CLOCKS),
)
m_conds = st.lists(m_conditions, max_size=2).map(tuple)
m_ops = st.lists(
    st.one_of(
        st.builds(TxnOp, st.just(GET), M_KEYS, st.just(b""), st.just(0), st.just(0)),
        st.builds(TxnOp, st.just(PUT), M_KEYS, M_VALUES, st.just(0), M_LEASES),
        st.builds(TxnOp, st.just(DEL), M_KEYS, st.just(b""), st.just(0), st.just(0)),
        st.builds(TxnOp, st.just(INCR), M_KEYS, st.just(b""), st.integers(-3, 3), st.just(0)),
    ),
    max_size=3,
).map(tuple)
SESSION = st.tuples(st.sampled_from([0, 0, 0, 1, 2]), st.integers(0, 3))
M_ENDS = st.sampled_from([b"", b"", b"\0", b"b", b"c", b"z"])
m_range_compares = st.lists(st.one_of(
    st.builds(RangeCompare, M_KEYS, M_ENDS, st.sampled_from([0, 1, 2, 4]), st.integers(0, 3), st.integers(0, 4)),
    st.builds(RangeCompare, M_KEYS, M_ENDS, st.just(3), st.integers(0, 3), M_VALUES),
), max_size=2).map(tuple)


def m_range_ops(depth: int) -> st.SearchStrategy[tuple[RangeOp, ...]]:
    flags = st.sampled_from([0, 0, 1, 2, 4, 8, 16, 9, 3])
    leaf = st.one_of(
        st.builds(RangeOp, st.just(0), M_KEYS, M_ENDS, st.just(b""), st.just(0), flags.map(lambda f: f & 25),
                  st.integers(0, 2), st.none()),
        st.builds(RangeOp, st.just(1), M_KEYS, st.just(b""), M_VALUES, M_LEASES, flags.map(lambda f: f & 7),
                  st.just(0), st.none()),
        st.builds(RangeOp, st.just(2), M_KEYS, M_ENDS, st.just(b""), st.just(0), flags.map(lambda f: f & 1),
                  st.just(0), st.none()),
    )
    if depth > 0:
        nested = st.builds(lambda c, s, f: RangeOp(3, b"", body=(c, s, f)), m_range_compares, m_range_ops(depth - 1),
                           m_range_ops(depth - 1))
        leaf = st.one_of(leaf, nested)
    return st.lists(leaf, max_size=3).map(tuple)


@st.composite
def m_commands(draw: st.DrawFn, request_id: int) -> Command:
    client_id, seq = draw(SESSION)
    kind = draw(st.sampled_from(["put", "put", "delete", "incr", "txn", "sibling", "grant", "revoke", "rtxn", "rtxn"]))
    if kind == "rtxn":
        return RangeTxn(request_id, 0, 0, draw(m_range_compares), draw(m_range_ops(1)), draw(m_range_ops(1)))
    if kind == "put":
        return Put(request_id, client_id, seq, draw(M_KEYS), draw(M_VALUES), draw(m_conds), draw(M_LEASES))
    if kind == "grant":
        return LeaseGrant(request_id, client_id, seq, draw(M_LEASES), draw(st.sampled_from([0, 1, 60])))
    if kind == "revoke":
        return LeaseRevoke(request_id, client_id, seq, draw(M_LEASES), draw(st.sampled_from([0, 0, 1, 2, 3])))
    if kind == "sibling":
        return SiblingPut(request_id, client_id, seq, draw(M_KEYS), draw(M_VALUES), draw(M_CONTEXTS))
    if kind == "delete":
        return Delete(request_id, client_id, seq, draw(M_KEYS), draw(m_conds))
    if kind == "incr":
        return Incr(request_id, client_id, seq, draw(M_KEYS), draw(st.integers(-3, 3)))
    return Txn(request_id, client_id, seq, draw(m_conds), draw(m_ops), draw(m_ops))


@st.composite
def histories(draw: st.DrawFn) -> list[Entry]:
    out = []
    for index in range(1, draw(st.integers(1, 12)) + 1):
        kind = draw(st.sampled_from(["batch"] * 8 + ["noop", "garbage"]))
        if kind == "noop":
            out.append(Entry(1, index, 0, b""))
        elif kind == "garbage":
            out.append(Entry(1, index, 0, draw(st.binary(min_size=1, max_size=8))))
        else:
            cmds = [draw(m_commands(index * 10 + i)) for i in range(draw(st.integers(1, 4)))]
            out.append(entry(index, cmds, proposer=draw(st.integers(1, 3)), ts=index))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), st.integers(1, 4))
def test_model_dict_and_lmdb_agree(entries: list[Entry], writes: int) -> None:
    model = Model()
    expected: list[Any] = []

    for e in entries:
        if not e.data:
            continue
        try:
            batch = decode_batch(e.data)
        except CodecError:
            expected.append(("error", e.index))
            continue
        expected.extend(
            (e.index, batch.proposer, c.request_id, erase_messages(model.apply(c, e.index, batch.proposer)))
            for c in batch.commands
        )

    mem = Replica(None)
    got_mem = mem.apply(entries)
    with tempfile.TemporaryDirectory() as tmp:
        disk = Replica(Path(tmp))
        try:
            got_disk: list[Applied] = []
            step = max(1, len(entries) // writes)
            for i in range(0, len(entries), step):  # split into several writes, as a node would
                got_disk.extend(disk.apply(entries[i : i + step]))
            assert got_disk == got_mem
            assert disk.fsm.checksum() == mem.fsm.checksum()
            assert disk.fsm.range() == mem.fsm.range()
        finally:
            disk.close()

    normalized = [
        ("error", a.index) if a.proposer == 0 else (a.index, a.proposer, a.request_id, erase_messages(a.result))
        for a in got_mem
    ]
    assert normalized == expected
    assert mem.fsm.range()[0] == [model.data[k] for k in sorted(model.data)]
    assert mem.fsm.leases() == [(lid, *model.leases[lid]) for lid in sorted(model.leases)]
    for lid in model.leases:
        held = mem.fsm.lease(lid)
        assert held is not None and held[2] == sorted(k for k, kv in model.data.items() if kv.lease == lid)


def test_long_keys_up_to_4_kib_round_trip_and_list_in_order(tmp_path: Path) -> None:
    """Keys beyond LMDB's 511-byte limit are stored hashed with the full key beside the value."""
    from raftkv.kv import Put
    from raftkv.kv.commands import encode_batch
    from raftkv.kv.fsm import LONG_KEY_PREFIX, KVStateMachine
    from raftkv.raft import Entry
    from raftkv.storage import LmdbLogStore

    store = LmdbLogStore(tmp_path / "s", sync=False)
    try:
        fsm = KVStateMachine(store)
        keys = [b"a" * 10, b"b" * 479, b"b" * 480, b"c" * 4096, b"c" * 600 + b"x", b"c" * 600 + b"y", b"d"]
        cmds = [Put(i + 1, 0, 0, k, b"v%d" % i) for i, k in enumerate(keys)]
        entry = Entry(1, 1, 0, encode_batch(1, 1, cmds))
        store.write(entries=[entry], applied=1, apply=lambda txn: fsm.apply(txn, [entry]), sync=False)
        for i, k in enumerate(keys):
            kv = fsm.get(k)
            assert kv is not None and kv.key == k and kv.value == b"v%d" % i
        assert fsm.get(b"c" * 4095) is None and fsm.get(b"c" * 600) is None
        listed, more = fsm.range(b"", limit=100)
        assert [kv.key for kv in listed] == sorted(keys) and not more
        # Pagination through the run of keys sharing their first 447 bytes is exact too.
        page, seen = b"", []
        while True:
            kvs, more = fsm.range(b"c", start_after=page, limit=1)
            seen += [kv.key for kv in kvs]
            if not more:
                break
            page = kvs[-1].key
        assert seen == sorted(k for k in keys if k.startswith(b"c"))
        # A prefix longer than the stored part still finds exactly its keys.
        long_prefix = b"c" * (LONG_KEY_PREFIX + 100)
        found, _ = fsm.range(long_prefix, limit=100)
        assert [kv.key for kv in found] == sorted(k for k in keys if k.startswith(long_prefix))
    finally:
        store.close()


_stem = st.sampled_from([b"", b"p" * 446, b"p" * 447, b"p" * 448, b"p" * 470, b"p" * 479, b"p" * 600])


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(st.tuples(_stem, st.binary(min_size=0, max_size=40)).map(lambda t: (t[0] + t[1])[:4096] or b"k"),
                  min_size=1, max_size=25, unique=True),
    page=st.integers(1, 5),
)
def test_long_key_layout_lists_exactly_like_the_dict_model(keys: list[bytes], page: int) -> None:
    """Keys around and beyond the 447/479-byte boundaries, sharing prefixes: LMDB lists them in exact byte order,
    page by page, like the dict backend."""
    import tempfile

    from raftkv.kv.commands import encode_batch

    with tempfile.TemporaryDirectory() as d, LmdbLogStore(Path(d), sync=False) as store:
        lm, dm = KVStateMachine(store), KVStateMachine()
        e = Entry(1, 1, 0, encode_batch(1, 1, [Put(i + 1, 0, 0, k, b"%d" % i) for i, k in enumerate(keys)]))
        store.write(entries=[e], applied=1, apply=lambda txn: lm.apply(txn, [e]), sync=False)
        dm.apply(None, [e])
        for prefix in {b"", b"p" * 447, b"p" * 460, keys[0][:500]}:
            for fsm in (lm, dm):
                got, after = [], b""
                while True:
                    kvs, more = fsm.range(prefix, start_after=after, limit=page)
                    got += [kv.key for kv in kvs]
                    if not more:
                        break
                    after = kvs[-1].key
                assert got == sorted(k for k in keys if k.startswith(prefix))
        for k in keys:
            assert lm.get(k) == dm.get(k)


def test_membership_changes_update_the_replicated_member_table(replica: Replica) -> None:
    from raftkv.kv import MemberChange, MemberChangeResult, MemberInfo, bootstrap_entries, encode_change
    from raftkv.raft import ConfChangeType, ConfState

    boot = bootstrap_entries([MemberInfo(i, f"p{i}:1", f"c{i}:1") for i in (2, 1, 3)])
    assert [e.index for e in boot] == [1, 2, 3]
    replica.apply(boot)
    assert [m.id for m in replica.fsm.members()] == [1, 2, 3]

    def change(index: int, t: ConfChangeType, mid: int) -> MemberChangeResult:
        m = MemberInfo(mid, f"p{mid}:1" if t != ConfChangeType.REMOVE_NODE else "", f"c{mid}:1")
        data = encode_change(MemberChange(t, m, proposer=1, request_id=index))
        [a] = replica.apply([Entry(1, index, EntryType.CONF_CHANGE, data)])
        assert (a.proposer, a.request_id) == (1, index)
        assert isinstance(a.result, MemberChangeResult)
        return a.result

    assert change(4, ConfChangeType.ADD_LEARNER, 4).conf_state == ConfState((1, 2, 3), (4,))
    assert change(5, ConfChangeType.ADD_VOTER, 4).conf_state == ConfState((1, 2, 3, 4), ())
    assert replica.fsm.members()[3].peer_addr == "p4:1"  # promotion kept the addresses
    assert change(6, ConfChangeType.REMOVE_NODE, 1).conf_state == ConfState((2, 3, 4), ())
    for i, mid in ((7, 2), (8, 3)):
        change(i, ConfChangeType.REMOVE_NODE, mid)
    r = change(9, ConfChangeType.REMOVE_NODE, 4)  # the last voter
    assert not r.changed and r.conf_state == ConfState((4,), ())
    assert [m.id for m in replica.fsm.members()] == [4]
