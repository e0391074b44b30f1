"""Exactly-once sessions: retries answered from the cache, late duplicates refused, deterministic expiry by log
timestamps and by the max_sessions bound, and a table that survives restarts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.kv import (
    DeleteResult,
    DictBackend,
    DuplicateResult,
    ErrorResult,
    Incr,
    IncrResult,
    KeyValue,
    Put,
    PutResult,
    Result,
    SessionTable,
    VectorClock,
    decode_result,
)
from raftkv.raft.types import Entry

from . import Replica, entry

S = 1_000_000_000  # one second in ns


@pytest.fixture(params=["dict", "lmdb"])
def replica(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Replica]:
    r = Replica(None if request.param == "dict" else tmp_path / "wal", session_ttl_s=10, max_sessions=3)
    yield r
    r.close()


def one(r: Replica, cmd: Put | Incr, proposer: int = 1, ts: int = 0) -> Result:
    (a,) = r.run(cmd, proposer=proposer, ts=ts)
    return a.result


def counter(r: Replica) -> int:
    kv = r.fsm.get(b"n")
    return 0 if kv is None else int(kv.value)


def test_a_retry_gets_the_cached_result_and_does_not_apply_again(replica: Replica) -> None:
    first = one(replica, Incr(1, 7, 1, b"n", 5), proposer=1)
    assert first == IncrResult(5, KeyValue(b"n", b"5", 1, 1, 1, VectorClock({1: 1})))
    # The leader changed before answering; the client retries the same (client_id, seq) through node 2.
    (retry,) = replica.run(Incr(99, 7, 1, b"n", 5), proposer=2)
    assert retry.result == first  # the original answer, byte for byte
    assert (retry.proposer, retry.request_id) == (2, 99)  # addressed to the retrying proposer's waiter
    assert counter(replica) == 5
    assert replica.fsm.get(b"n") == KeyValue(b"n", b"5", 1, 1, 1, VectorClock({1: 1}))  # node 2 wrote nothing
    assert one(replica, Incr(3, 7, 2, b"n", 5)) == IncrResult(10, KeyValue(b"n", b"10", 1, 2, 2, VectorClock({1: 2})))


def test_every_kind_of_result_is_cached(replica: Replica) -> None:
    cmds: list[Put | Incr] = [Put(0, 5, 1, b"k", b"v"), Put(0, 5, 2, b"", b"v"), Incr(0, 5, 3, b"k", 1)]
    for cmd in cmds:
        first = one(replica, cmd)
        assert one(replica, cmd) == first
    assert isinstance(first, ErrorResult)  # incr of b"v": errors are answers too, and are cached


def test_a_lower_seq_is_a_duplicate_and_changes_nothing(replica: Replica) -> None:
    one(replica, Incr(1, 7, 4, b"n", 1))
    before = replica.fsm.session(7)
    assert one(replica, Incr(2, 7, 3, b"n", 1), ts=5 * S) == DuplicateResult()
    assert one(replica, Incr(3, 7, 0, b"n", 1)) == DuplicateResult()
    assert counter(replica) == 1
    assert replica.fsm.session(7) == before  # not even touched


def test_sessions_are_independent_and_client_zero_has_none(replica: Replica) -> None:
    replica.run(Incr(1, 7, 1, b"n", 1), Incr(2, 8, 1, b"n", 1), Incr(3, 0, 1, b"n", 1), Incr(4, 0, 1, b"n", 1))
    assert counter(replica) == 4  # client 0: applied every time
    assert replica.fsm.session_count() == 2
    assert replica.fsm.session(0) is None


def test_the_session_records_seq_time_and_result(replica: Replica) -> None:
    (a,) = replica.run(Put(1, 9, 3, b"k", b"v"), ts=2 * S)
    rec = replica.fsm.session(9)
    assert rec is not None
    assert (rec.last_seq, rec.last_active_ns) == (3, 2 * S)
    assert decode_result(rec.result) == a.result


# -- expiry ------------------------------------------------------------------------------------------------------------


def test_idle_sessions_expire_by_log_time(replica: Replica) -> None:
    replica.run(Put(1, 1, 1, b"a", b"1"), ts=0)
    replica.run(Put(2, 2, 1, b"b", b"1"), ts=5 * S)
    replica.run(Put(3, 0, 0, b"x", b"1"), ts=10 * S)  # client 1 idle for exactly the TTL: kept
    assert replica.fsm.session(1) is not None
    replica.run(Put(4, 0, 0, b"x", b"2"), ts=10 * S + 1)  # idle for longer than the TTL: gone
    assert replica.fsm.session(1) is None and replica.fsm.session(2) is not None
    replica.run(Put(5, 0, 0, b"x", b"3"), ts=15 * S + 1)
    assert replica.fsm.session_count() == 0


def test_a_retry_refreshes_the_session(replica: Replica) -> None:
    one(replica, Incr(1, 1, 1, b"n", 1), ts=0)
    one(replica, Incr(2, 1, 1, b"n", 1), ts=8 * S)  # a retry: cached answer, but the client is alive
    one(replica, Put(3, 0, 0, b"x", b"x"), ts=12 * S)
    rec = replica.fsm.session(1)
    assert rec is not None and rec.last_active_ns == 8 * S


def test_a_retry_after_expiry_applies_again(replica: Replica) -> None:
    """The documented limit of the guarantee."""
    one(replica, Incr(1, 1, 1, b"n", 1), ts=0)
    replica.run(Put(2, 0, 0, b"x", b"x"), ts=11 * S)
    assert one(replica, Incr(3, 1, 1, b"n", 1), ts=11 * S) == IncrResult(
        2, KeyValue(b"n", b"2", 1, 3, 2, VectorClock({1: 3}))
    )


def test_the_logical_clock_never_goes_back(replica: Replica) -> None:
    replica.run(Put(1, 1, 1, b"a", b"1"), ts=100 * S)
    replica.run(Put(2, 2, 1, b"b", b"1"), ts=50 * S)  # a new leader whose clock is behind
    assert replica.fsm.now_ns() == 100 * S
    rec = replica.fsm.session(2)
    assert rec is not None and rec.last_active_ns == 100 * S  # logical time, not the stale timestamp


def test_max_sessions_evicts_the_least_recently_active_ties_by_client_id(replica: Replica) -> None:
    # max_sessions=3. Four sessions active at the same instant: the tie goes by client id.
    replica.run(*[Put(i, cid, 1, b"k", b"v") for i, cid in enumerate([40, 10, 30, 20])], ts=S)
    assert sorted(cid for cid in (10, 20, 30, 40) if replica.fsm.session(cid)) == [20, 30, 40]
    replica.run(Put(9, 10, 2, b"k", b"v"), ts=2 * S)  # 10 is back (a new session) and most recent
    assert sorted(cid for cid in (10, 20, 30, 40) if replica.fsm.session(cid)) == [10, 30, 40]
    replica.run(Put(9, 30, 2, b"k", b"v"), Put(9, 50, 1, b"k", b"v"), ts=3 * S)
    assert sorted(cid for cid in (10, 20, 30, 40, 50) if replica.fsm.session(cid)) == [10, 30, 50]
    assert replica.fsm.session_count() == 3


def test_expiry_is_identical_on_every_replica(tmp_path: Path) -> None:
    entries = [
        entry(i, [Incr(i, 1 + (i * 7) % 13, i, b"n%d" % (i % 4), 1)], proposer=1 + i % 3, ts=(i * 3 % 17) * S)
        for i in range(1, 80)
    ]
    replicas = [
        Replica(tmp_path / "a", session_ttl_s=10, max_sessions=5),
        Replica(None, session_ttl_s=10, max_sessions=5),
    ]
    try:
        outs = [r.apply(entries) for r in replicas]
        assert outs[0] == outs[1]
        assert replicas[0].fsm.checksum() == replicas[1].fsm.checksum()
        assert replicas[0].fsm.session_count() <= 5
    finally:
        for r in replicas:
            r.close()


# -- persistence -------------------------------------------------------------------------------------------------------


def test_the_table_survives_reopening_the_store(tmp_path: Path) -> None:
    r = Replica(tmp_path / "wal", session_ttl_s=10)
    try:
        first = one(r, Incr(1, 7, 1, b"n", 5), ts=3 * S)
        before = r.fsm.checksum()
        r.reopen()
        assert r.fsm.checksum() == before
        assert r.fsm.now_ns() == 3 * S and r.fsm.applied_index() == 1
        assert one(r, Incr(2, 7, 1, b"n", 5), ts=4 * S) == first  # the retry after a restart: not applied
        assert counter(r) == 5
        assert one(r, Incr(3, 7, 0, b"n", 5)) == DuplicateResult()
    finally:
        r.close()


# -- the table on its own: index consistency under random use --------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 6), st.integers(0, 4), st.integers(0, 30)), max_size=40),
    st.integers(1, 8),
    st.integers(0, 4),
)
def test_table_and_age_index_stay_consistent(ops: list[tuple[int, int, int]], ttl: int, max_sessions: int) -> None:
    table, by_age = DictBackend(), DictBackend()
    sessions = SessionTable(table, by_age, ttl_ns=ttl, max_sessions=max_sessions)
    now = 0
    model: dict[int, tuple[int, int]] = {}  # client -> (seq, last_active)
    answers: dict[int, Result] = {}
    for client_id, seq, advance in ops:
        now += advance
        answer, previous = sessions.admit(client_id, seq, now)
        if answer is None:
            sessions.record(client_id, seq, now, DeleteResult(False, now), previous)
            model[client_id] = (seq, now)
            answers[client_id] = DeleteResult(False, now)
        elif isinstance(answer, DuplicateResult):
            assert seq < model[client_id][0]
        else:
            assert answer == answers[client_id] and seq == model[client_id][0]
            model[client_id] = (seq, now)  # a retry refreshes the session
        removed = sessions.expire(now)
        # The model: drop idle ones, then the oldest (by time, then id) beyond the bound.
        expected = [c for c, (_, t) in sorted(model.items(), key=lambda kv: (kv[1][1], kv[0])) if now - t > ttl]
        rest = sorted((t, c) for c, (_, t) in model.items() if c not in expected)
        expected += [c for _, c in rest[: max(0, len(rest) - max_sessions)]]
        assert removed == expected
        for c in removed:
            del model[c]
        assert {c: (r.last_seq, r.last_active_ns) for c, r in sessions} == model
        ages = [k for k, _ in by_age.iter_from(b"")]
        assert ages == sorted(t.to_bytes(8, "big") + c.to_bytes(8, "big") for c, (_, t) in model.items())


def test_put_result_in_cache_round_trips_exactly(replica: Replica) -> None:
    first = one(replica, Put(1, 3, 1, b"k", b"v"))
    assert isinstance(first, PutResult)
    again = one(replica, Put(2, 3, 1, b"k", b"other"))
    assert again == first and isinstance(again, PutResult) and type(again.kv.vclock) is VectorClock
    assert replica.fsm.get(b"k") == first.kv


def test_corrupt_entries_do_not_touch_sessions(replica: Replica) -> None:
    one(replica, Incr(1, 7, 1, b"n", 1))
    replica.apply([Entry(1, replica.next_index, 0, b"\x00")])
    assert one(replica, Incr(2, 7, 1, b"n", 1)) == IncrResult(1, KeyValue(b"n", b"1", 1, 1, 1, VectorClock({1: 1})))
