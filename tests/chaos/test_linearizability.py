"""Tests for the history model and the linearizability checker (raftkv.chaos)."""

from __future__ import annotations

import dataclasses
import itertools
import random
import re
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from raftkv.chaos.history import KINDS, History, Op, Result, dump_history, load_history
from raftkv.chaos.linearizability import CheckResult, check

K = b"k1"


class Builder:
    """Hand-written histories: ``b.put(start, end, b"1")``; ``end=None`` makes the op unknown."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def _add(
        self, kind: str, start: int, end: int | None, result: object = None, *, key: bytes = K, **kw: object
    ) -> Op:
        op = Op(
            id=len(self.ops),
            process=len(self.ops),
            kind=kind,
            key=key,
            invoke_ts=start,
            complete_ts=end,
            status="ok" if end is not None else "unknown",
            result=result if end is not None else None,  # type: ignore[arg-type]
            **kw,  # type: ignore[arg-type]
        )
        self.ops.append(op)
        return op

    def put(self, start: int, end: int | None, value: bytes, *, key: bytes = K) -> Op:
        return self._add("put", start, end, key=key, value=value)

    def get(self, start: int, end: int | None, result: bytes | None, *, key: bytes = K) -> Op:
        return self._add("get", start, end, result, key=key)

    def delete(self, start: int, end: int | None, *, key: bytes = K) -> Op:
        return self._add("delete", start, end, key=key)

    def cas(
        self, start: int, end: int | None, expected: bytes | None, value: bytes | None, result: bool | None = None
    ) -> Op:
        return self._add("cas", start, end, result, expected=expected, value=value)

    def incr(self, start: int, end: int | None, delta: int, result: int | None = None) -> Op:
        return self._add("incr", start, end, result, delta=delta)


def assert_linearizable(ops: list[Op]) -> CheckResult:
    for refute_first in (True, False):
        result = check(ops, time_limit_s=None, refute_first=refute_first)
        assert result.ok is True, result.explanation
        assert result.explanation is None
    return result


def assert_not_linearizable(ops: list[Op], key: bytes = K, blamed: Op | None = None) -> CheckResult:
    for refute_first in (True, False):
        result = check(ops, time_limit_s=None, refute_first=refute_first)
        assert result.ok is False
        assert key in result.failed_keys
        assert result.per_key[key].ok is False
        assert result.explanation is not None and "cannot be linearized" in result.explanation
        if blamed is not None:
            assert f"(op {blamed.id}, process {blamed.process})" in result.explanation
    return result


# --- linearizable histories -------------------------------------------------------------------------------------


def test_empty_history() -> None:
    result = check([])
    assert result.ok is True and result.per_key == {}


def test_sequential_history() -> None:
    b = Builder()
    b.get(0, 1, None)
    b.put(2, 3, b"1")
    b.get(4, 5, b"1")
    b.cas(6, 7, b"1", b"2", True)
    b.cas(8, 9, b"1", b"3", False)
    b.get(10, 11, b"2")
    b.delete(12, 13)
    b.incr(14, 15, 5, 5)
    b.incr(16, 17, -2, 3)
    b.get(18, 19, b"3")
    b.cas(20, 21, b"3", None, True)
    b.get(22, 23, None)
    result = assert_linearizable(b.ops)
    assert result.per_key[K].linearization == tuple(range(len(b.ops)))


@pytest.mark.parametrize("seen", [b"1", b"2"])
def test_concurrent_put_and_get_may_see_either_value(seen: bytes) -> None:
    b = Builder()
    b.put(0, 10, b"1")
    b.put(20, 50, b"2")
    b.get(25, 40, seen)
    assert_linearizable(b.ops)


def test_reads_of_a_slow_write_flip_only_once() -> None:
    b = Builder()
    b.put(0, 10, b"1")
    b.put(20, 100, b"2")
    b.get(30, 40, b"1")
    b.get(50, 60, b"2")
    b.get(70, 80, b"2")
    assert_linearizable(b.ops)


def test_overlapping_cas_one_wins() -> None:
    b = Builder()
    b.cas(0, 30, None, b"a", False)
    b.cas(5, 25, None, b"b", True)
    b.get(40, 50, b"b")
    assert_linearizable(b.ops)


def test_overlapping_cas_both_win_in_some_order() -> None:
    b = Builder()
    b.put(0, 5, b"1")
    b.cas(10, 30, b"2", b"3", True)  # only after the other one
    b.cas(12, 28, b"1", b"2", True)
    b.get(40, 50, b"3")
    assert_linearizable(b.ops)


def test_incr_with_concurrent_reads() -> None:
    b = Builder()
    b.incr(0, 10, 1, 1)
    b.incr(5, 30, 1, 2)
    b.get(12, 20, b"1")
    b.get(13, 21, b"2")
    b.get(31, 40, b"2")
    assert_linearizable(b.ops)


def test_equal_timestamps_count_as_concurrent() -> None:
    b = Builder()
    b.put(0, 10, b"1")
    b.put(10, 20, b"2")  # invoked at the very instant the first completed
    b.get(20, 30, b"1")
    assert_linearizable(b.ops)


def test_failed_ops_are_ignored() -> None:
    b = Builder()
    b.put(0, 10, b"1")
    b.ops.append(Op(99, 9, "put", K, value=b"2", invoke_ts=11, complete_ts=12, status="fail"))
    b.get(20, 30, b"1")
    assert_linearizable(b.ops)
    b.get(40, 50, b"2")
    assert_not_linearizable(b.ops)


def test_keys_are_checked_independently() -> None:
    b = Builder()
    b.put(0, 10, b"1", key=b"a")
    b.put(0, 10, b"1", key=b"b")
    b.put(20, 30, b"2", key=b"b")
    b.get(40, 50, b"1", key=b"a")
    stale = b.get(40, 50, b"1", key=b"b")
    result = assert_not_linearizable(b.ops, key=b"b", blamed=stale)
    assert result.per_key[b"a"].ok is True
    assert result.failed_keys == [b"b"]
    assert result.explanation is not None and result.explanation.startswith("key b:")


# --- non-linearizable histories ---------------------------------------------------------------------------------


def test_stale_read() -> None:
    b = Builder()
    b.put(0, 10, b"1")
    b.put(20, 30, b"2")
    stale = b.get(40, 50, b"1")
    assert_not_linearizable(b.ops, blamed=stale)


def test_stale_read_hidden_among_concurrent_ops() -> None:
    b = Builder()
    b.put(0, 10, b"1")
    b.put(5, 25, b"2")
    b.get(12, 18, b"1")
    b.get(30, 40, b"2")
    b.put(35, 60, b"3")
    b.get(50, 55, b"3")
    b.get(70, 80, b"2")  # b'3' was read before this began: b'2' is gone
    assert_not_linearizable(b.ops)


def test_lost_write() -> None:
    b = Builder()
    b.put(0, 10, b"1")
    b.put(5, 15, b"2")
    b.get(20, 30, None)  # neither write could have been undone
    b.get(40, 50, None)
    assert_not_linearizable(b.ops)


def test_lost_write_of_a_delete() -> None:
    b = Builder()
    b.put(0, 10, b"1")
    b.delete(20, 30)
    b.get(40, 50, b"1")
    assert_not_linearizable(b.ops)


def test_phantom_value() -> None:
    b = Builder()
    b.put(0, 10, b"1")
    b.put(0, 10, b"2")
    phantom = b.get(5, 20, b"9")
    assert_not_linearizable(b.ops, blamed=phantom)


def test_non_monotonic_reads() -> None:
    b = Builder()
    b.put(0, 10, b"1")
    b.put(5, 100, b"2")
    b.get(20, 30, b"2")  # so the slow put has taken effect...
    b.get(40, 50, b"1")  # ...and cannot be undone
    assert_not_linearizable(b.ops)


def test_two_incrs_both_returning_one() -> None:
    b = Builder()
    b.incr(0, 10, 1, 1)
    b.incr(5, 15, 1, 1)
    assert_not_linearizable(b.ops)


def test_incr_result_skips_a_value_read_later() -> None:
    b = Builder()
    b.incr(0, 10, 1, 1)
    b.incr(20, 30, 1, 2)
    b.get(40, 50, b"1")
    assert_not_linearizable(b.ops)


def test_incr_on_a_non_number_cannot_succeed() -> None:
    b = Builder()
    b.put(0, 10, b"x")
    b.incr(20, 30, 1, 1)
    assert_not_linearizable(b.ops)


def test_cas_succeeds_although_expected_value_was_overwritten() -> None:
    b = Builder()
    b.put(0, 10, b"1")
    b.put(20, 30, b"2")
    bad = b.cas(40, 50, b"1", b"3", True)
    assert_not_linearizable(b.ops, blamed=bad)


def test_cas_fails_although_expected_value_is_current() -> None:
    b = Builder()
    b.put(0, 10, b"1")
    b.cas(20, 30, b"1", b"3", False)
    assert_not_linearizable(b.ops)


def test_both_overlapping_cas_cannot_win() -> None:
    b = Builder()
    b.cas(0, 30, None, b"a", True)
    b.cas(5, 25, None, b"b", True)
    assert_not_linearizable(b.ops)


# --- indeterminate (unknown) operations -------------------------------------------------------------------------


def test_unknown_put_that_is_later_read() -> None:
    b = Builder()
    b.put(0, 10, b"1")
    b.put(20, None, b"2")
    b.get(30, 40, b"1")
    b.get(50, 60, b"2")  # it took effect between the reads, long after the client gave up
    b.get(70, 80, b"2")
    result = assert_linearizable(b.ops)
    assert result.per_key[K].unknown == 1
    assert 1 in (result.per_key[K].linearization or ())


def test_unknown_put_that_is_never_read() -> None:
    b = Builder()
    b.put(0, 10, b"1")
    b.put(20, None, b"2")
    b.get(30, 40, b"1")
    b.get(50, 60, b"1")
    assert_linearizable(b.ops)


def test_read_of_an_unknown_write_before_it_was_invoked() -> None:
    b = Builder()
    b.put(0, 10, b"1")
    early = b.get(20, 30, b"2")
    b.put(40, None, b"2")
    assert_not_linearizable(b.ops, blamed=early)


def test_unknown_write_takes_effect_at_most_once() -> None:
    b = Builder()
    b.put(0, None, b"2")
    b.get(10, 20, b"2")
    b.put(30, 40, b"1")
    b.get(50, 60, b"2")  # the unknown put cannot take effect a second time
    assert_not_linearizable(b.ops)


def test_unknown_write_saved_for_later() -> None:
    # The search first explains the first read with the unknown put (after trying the puts the wrong way round),
    # which leaves nothing for the last read. Reaching the same point with the unknown put unused must not be
    # mistaken for having been there already.
    b = Builder()
    b.put(0, None, b"2")
    b.put(0, 20, b"2")
    b.put(0, 30, b"1")
    b.get(35, 45, b"2")
    b.put(50, 60, b"3")
    b.get(70, 80, b"2")
    assert_linearizable(b.ops)


@pytest.mark.parametrize(("result", "ok"), [(1, True), (2, True), (3, False)])
def test_unknown_incr(result: int, ok: bool) -> None:
    b = Builder()
    b.incr(0, None, 1)
    b.incr(10, 20, 1, result)
    if ok:
        assert_linearizable(b.ops)
    else:
        assert_not_linearizable(b.ops)


def test_unknown_cas_and_unknown_reads() -> None:
    b = Builder()
    b.put(0, 10, b"1")
    b.cas(20, None, b"1", b"2")
    b.get(25, None, b"7")  # an unknown read constrains nothing
    b.get(30, 40, b"2")
    assert_linearizable(b.ops)
    b.get(50, 60, b"1")
    assert_not_linearizable(b.ops)


def test_many_interchangeable_unknown_ops() -> None:
    b = Builder()
    for i in range(30):
        b.incr(i, None, 1)
        b.put(i, None, b"5")
    b.incr(100, 110, 1, 7)
    b.get(120, 130, b"5")
    b.incr(140, 150, 1, 10)
    assert_linearizable(b.ops)
    b.get(160, 170, b"6")  # an unknown put may still reset the counter to 5 and an unknown incr bump it...
    assert_linearizable(b.ops)
    b.get(180, 190, b"4")  # ...but nothing can take it below 5 any more
    assert_not_linearizable(b.ops)


# --- the result and its limits ------------------------------------------------------------------------------------


def test_explanation_names_the_blocked_op_and_the_state() -> None:
    b = Builder()
    b.incr(0, 10, 1, 1)
    bad = b.incr(5, 15, 1, 1)
    result = check(b.ops)
    assert result.explanation is not None
    assert "incr k1 +1 -> 1 (op 1, process 1) cannot be linearized" in result.explanation
    assert "the key is b'1'" in result.explanation
    assert bad.describe() in (result.per_key[K].explanation or "")


def test_gives_up_on_the_time_limit() -> None:
    # 24 concurrent writes of distinct values, then reads of two of them one after the other: refuting this means
    # trying (nearly) every subset of the writes.
    b = Builder()
    for i in range(24):
        b.put(i, 1000, str(i).encode())
    b.get(2000, 2001, b"0")
    b.get(2002, 2003, b"1")
    result = check(b.ops, time_limit_s=0.2)
    assert result.ok is None
    assert result.per_key[K].ok is None
    assert result.explanation is not None and "gave up on the time limit" in result.explanation
    assert check(b.ops[:8] + b.ops[-2:], time_limit_s=None).ok is False


def test_duplicate_ids_are_rejected() -> None:
    b = Builder()
    b.put(0, 10, b"1")
    with pytest.raises(ValueError, match="duplicate"):
        check([*b.ops, b.ops[0]])


# --- history model, recorder and files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "scan"},
        {"status": "maybe"},
        {"kind": "put", "value": None},
        {"kind": "get", "value": b"1"},
        {"kind": "get", "result": True},
        {"kind": "cas", "value": b"1", "result": None},
        {"kind": "incr", "result": True},
        {"kind": "put", "value": b"1", "result": b"1"},
        {"kind": "get", "complete_ts": None},
        {"kind": "get", "complete_ts": -1},
        {"kind": "get", "status": "unknown", "complete_ts": None, "result": b"1"},
    ],
)
def test_invalid_ops_are_rejected(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"id": 0, "process": 0, "kind": "get", "key": K, "invoke_ts": 0, "complete_ts": 1}
    fields.update(kwargs)
    with pytest.raises(ValueError):
        Op(**fields)  # type: ignore[arg-type]


def test_recorder() -> None:
    clock = itertools.count(100)
    rec = History(clock=lambda: next(clock))
    a = rec.invoke(1, "put", K, value=b"1")
    b = rec.invoke(2, "cas", K, expected=b"1", value=b"2")
    with pytest.raises(ValueError, match="outstanding"):
        rec.invoke(1, "get", K)
    rec.complete(a, "ok")
    c = rec.invoke(1, "incr", b"n", delta=3)
    d = rec.invoke(3, "get", K)
    rec.complete(b, "ok", True)
    rec.complete(c, "unknown")
    rec.complete(d, "fail")
    e = rec.invoke(1, "get", K)  # never completed
    with pytest.raises(ValueError):
        rec.complete(a, "ok")
    ops = rec.ops()
    assert [op.id for op in ops] == [a, b, c, d, e]
    assert ops[0] == Op(a, 1, "put", K, value=b"1", invoke_ts=100, complete_ts=102, status="ok")
    assert ops[1] == Op(b, 2, "cas", K, value=b"2", expected=b"1", invoke_ts=101, complete_ts=105, result=True)
    assert (ops[2].status, ops[2].complete_ts, ops[2].delta) == ("unknown", None, 3)
    assert ops[3].status == "fail"
    assert (ops[4].status, ops[4].complete_ts, ops[4].invoke_ts) == ("unknown", None, 107)
    assert check(ops).ok is True


def test_recorder_rejects_bad_results() -> None:
    rec = History()
    op_id = rec.invoke(1, "incr", K, delta=1)
    with pytest.raises(ValueError):
        rec.complete(op_id, "ok", b"1")
    rec.complete(op_id, "ok", 1)
    with pytest.raises(ValueError):
        rec.invoke(1, "put", K)  # no value


def test_json_lines_round_trip(tmp_path: pytest.TempPathFactory) -> None:
    weird = bytes(range(256))
    ops = [
        Op(0, 1, "put", weird, value=b'\x00\xff\xe9\n"', invoke_ts=1, complete_ts=2),
        Op(1, 2, "get", weird, invoke_ts=3, complete_ts=4, result=b'\x00\xff\xe9\n"'),
        Op(2, 2, "get", b"k", invoke_ts=5, complete_ts=6, result=None),
        Op(3, 3, "cas", b"k", value=None, expected=b"x", invoke_ts=7, complete_ts=8, result=False),
        Op(4, 3, "incr", b"n", delta=-7, invoke_ts=9, complete_ts=10, result=-7),
        Op(5, 4, "delete", b"k", invoke_ts=11, complete_ts=None, status="unknown"),
        Op(6, 5, "put", b"k", value=b"v", invoke_ts=12, complete_ts=13, status="fail"),
    ]
    path = tmp_path / "history.jsonl"  # type: ignore[operator]
    dump_history(ops, path)
    assert load_history(path) == ops
    assert '"key": "k"' in path.read_text()  # ASCII stays readable


def test_load_history_reports_the_bad_line(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "bad.jsonl"  # type: ignore[operator]
    path.write_text(
        '{"id": 0, "process": 0, "kind": "get", "key": "k", "invoke_ts": 0, "complete_ts": 1, '
        '"status": "ok"}\n\n{"id": 1}\n'
    )
    with pytest.raises(ValueError, match=r"bad\.jsonl:3"):
        load_history(path)


# --- randomized cross-check against brute force -------------------------------------------------------------------

_COUNTER = re.compile(rb"-?[0-9]+")


def _step(state: dict[bytes, bytes | None], op: Op) -> dict[bytes, bytes | None] | None:
    """The sequential model, written independently of the checker; None if ``op`` cannot take effect here."""
    cur = state.get(op.key)
    known = op.status == "ok"
    if op.kind == "get":
        return state if not known or op.result == cur else None
    if op.kind == "put":
        new = op.value
    elif op.kind == "delete":
        new = None
    elif op.kind == "cas":
        swapped = cur == op.expected
        if known and op.result is not swapped:
            return None
        new = op.value if swapped else cur
    else:
        if cur is not None and not _COUNTER.fullmatch(cur):
            return None  # the store refuses to increment a non-number
        total = (0 if cur is None else int(cur)) + op.delta
        if known and op.result != total:
            return None
        new = str(total).encode()
    return {**state, op.key: new}


def brute_force(ops: list[Op]) -> bool:
    """Try every subset of the unknown ops and every order of the chosen ops that respects real time."""
    ops = [op for op in ops if op.status == "ok" or (op.status == "unknown" and op.kind != "get")]
    known = [op for op in ops if op.status == "ok"]
    unknown = [op for op in ops if op.status == "unknown"]

    def precedes(a: Op, b: Op) -> bool:
        return a.status == "ok" and a.complete_ts is not None and a.complete_ts < b.invoke_ts

    def some_order(remaining: tuple[Op, ...], state: dict[bytes, bytes | None]) -> bool:
        if not remaining:
            return True
        for i, op in enumerate(remaining):
            if any(precedes(other, op) for other in remaining if other is not op):
                continue
            after = _step(state, op)
            if after is not None and some_order(remaining[:i] + remaining[i + 1 :], after):
                return True
        return False

    return any(
        some_order((*known, *chosen), {})
        for r in range(len(unknown) + 1)
        for chosen in itertools.combinations(unknown, r)
    )


VALUES = [b"1", b"2", b"x"]

# (linearization point, op id, op as invoked, whether it takes effect, its status, its completion time)
Planned = tuple[int, int, Op, bool, str, int]


def run_sequentially(planned: list[Planned]) -> list[Op]:
    """Apply the ops that take effect in the order of their linearization points and record what clients saw."""
    state: dict[bytes, bytes | None] = {}
    ops: dict[int, Op] = {}
    for _, i, op, takes_effect, status, end in sorted(planned, key=lambda t: (t[0], t[1])):
        after = _step(state, op) if takes_effect else state
        if after is None:  # an incr of a non-number: the store refuses it, so the op had no effect
            after, status = state, "fail" if status == "ok" else status
        outcome: dict[str, object] = {"status": status, "complete_ts": None if status == "unknown" else end}
        if status == "ok":
            cur = state.get(op.key)
            if op.kind == "get":
                outcome["result"] = cur
            elif op.kind == "cas":
                outcome["result"] = cur == op.expected
            elif op.kind == "incr":
                new = after[op.key]
                assert new is not None
                outcome["result"] = int(new)
        ops[i] = dataclasses.replace(op, **outcome)  # type: ignore[arg-type]
        state = after
    return [ops[i] for i in sorted(ops)]


@st.composite
def histories(draw: st.DrawFn, corrupt: bool) -> list[Op]:
    """Up to 7 ops on 1-2 keys with random overlapping intervals, given the results of a real sequential execution
    (each op takes effect at a random point of its interval; unknown ones maybe at any later time, maybe never).
    With ``corrupt``, a result, an interval or an outcome is then changed at random."""
    n = draw(st.integers(1, 7))
    keys = [b"a", b"b"][: draw(st.integers(1, 2))]
    specs: list[Planned] = []
    for i in range(n):
        kind = draw(st.sampled_from(KINDS))
        invoke = draw(st.integers(0, 12))
        end = invoke + draw(st.integers(0, 6))
        status = draw(st.sampled_from(["ok", "ok", "ok", "unknown", "fail"]))
        point = draw(st.integers(invoke, end if status == "ok" else invoke + 20))
        takes_effect = status == "ok" or (status == "unknown" and draw(st.booleans()))
        op = Op(  # the outcome is filled in below
            id=i,
            process=i,
            kind=kind,
            key=draw(st.sampled_from(keys)),
            value=draw(st.sampled_from(VALUES))
            if kind == "put"
            else draw(st.sampled_from([*VALUES, None]))
            if kind == "cas"
            else None,
            expected=draw(st.sampled_from([None, *VALUES])) if kind == "cas" else None,
            delta=draw(st.sampled_from([1, 2, -1])) if kind == "incr" else 0,
            invoke_ts=invoke,
            status="unknown",
        )
        specs.append((point, i, op, takes_effect, status, end))

    history = run_sequentially(specs)

    if corrupt:
        for _ in range(draw(st.integers(1, 2))):
            i = draw(st.integers(0, n - 1))
            op = history[i]
            how = draw(st.sampled_from(["result", "interval", "status"]))
            if how == "interval" and op.complete_ts is not None:
                start = draw(st.integers(0, 14))
                history[i] = dataclasses.replace(op, invoke_ts=start, complete_ts=start + draw(st.integers(0, 6)))
            elif how == "status" and op.status != "ok":
                history[i] = dataclasses.replace(
                    op, status="ok", complete_ts=op.invoke_ts + draw(st.integers(0, 6)), result=draw(results(op))
                )
            elif op.status == "ok":
                history[i] = dataclasses.replace(op, result=draw(results(op)))
    return history


def results(op: Op) -> st.SearchStrategy[Result]:
    if op.kind == "get":
        return st.sampled_from([None, *VALUES, b"3"])
    if op.kind == "cas":
        return st.booleans()
    if op.kind == "incr":
        return st.integers(-2, 4)
    return st.none()


def _agree(ops: list[Op]) -> bool:
    expected = brute_force(ops)
    for refute_first in (True, False):
        result = check(ops, time_limit_s=None, refute_first=refute_first)
        assert result.ok is expected, (refute_first, result.explanation, ops)
        if expected:  # the witness must be a real linearization
            state: dict[bytes, bytes | None] = {}
            by_id = {op.id: op for op in ops}
            for key_result in result.per_key.values():
                order = [by_id[i] for i in key_result.linearization or ()]
                for a, b in itertools.combinations(order, 2):
                    assert not (b.status == "ok" and b.complete_ts is not None and b.complete_ts < a.invoke_ts)
                for op in order:
                    after = _step(state, op)
                    assert after is not None
                    state = after
                assert {op.id for op in ops if op.key == key_result.key and op.status == "ok"} <= set(
                    key_result.linearization or ()
                )
    return expected


_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(histories(corrupt=False))
def test_generated_histories_are_linearizable(ops: list[Op]) -> None:
    assert _agree(ops) is True


@_SETTINGS
@given(histories(corrupt=True))
def test_checker_agrees_with_brute_force(ops: list[Op]) -> None:
    linearizable = _agree(ops)
    event(f"linearizable: {linearizable}")  # see --hypothesis-show-statistics
    event(f"unknown ops: {sum(op.status == 'unknown' for op in ops)}")


def test_brute_force_oracle_sanity() -> None:
    b = Builder()
    b.put(0, 10, b"1")
    b.put(20, 30, b"2")
    b.get(40, 50, b"1")
    assert brute_force(b.ops) is False
    assert brute_force(b.ops[:2]) is True


# --- a larger simulated history (a smoke test for speed, without timing assertions) --------------------------------


def simulate(n_ops: int, *, keys: int, processes: int, seed: int) -> list[Op]:
    """A concurrent register simulation: each process issues ops one after another with random durations; every op
    takes effect at a random instant of its interval (unknown ones maybe later, maybe never), in that order."""
    rng = random.Random(seed)
    clock = [rng.randrange(100) for _ in range(processes)]
    planned: list[Planned] = []
    for i in range(n_ops):
        p = min(range(processes), key=clock.__getitem__)
        start, length = clock[p], rng.randint(1, 1000)
        kind = rng.choice(["put", "get", "get", "cas", "incr", "delete"])
        status = rng.choices(["ok", "unknown", "fail"], [96, 3, 1])[0]
        value = str(rng.randrange(6)).encode() if kind in ("put", "cas") else None
        op = Op(  # the outcome is filled in by run_sequentially
            id=i,
            process=p,
            kind=kind,
            key=f"k{rng.randrange(keys)}".encode(),
            value=value,
            expected=rng.choice([None, *(str(v).encode() for v in range(6))]) if kind == "cas" else None,
            delta=rng.randint(1, 3) if kind == "incr" else 0,
            invoke_ts=start,
            status="unknown",
        )
        point = start + rng.randint(0, length if status == "ok" else 5000)
        takes_effect = status == "ok" or (status == "unknown" and rng.random() < 0.5)
        planned.append((point, i, op, takes_effect, status, start + length))
        clock[p] = start + length + rng.randint(0, 50)

    return run_sequentially(planned)


def _gets(ops: list[Op]) -> Iterator[int]:
    return (i for i, op in enumerate(ops) if op.kind == "get" and op.status == "ok")


def test_simulated_history_of_5000_ops() -> None:
    ops = simulate(5000, keys=5, processes=10, seed=7)
    assert sum(op.status == "unknown" for op in ops) > 50
    result = check(ops, time_limit_s=None)
    assert result.ok is True, result.explanation
    assert set(result.per_key) == {f"k{i}".encode() for i in range(5)}

    gets = list(_gets(ops))
    i = gets[len(gets) // 2]
    phantom = list(ops)
    phantom[i] = dataclasses.replace(ops[i], result=b"never written")
    assert check(phantom, time_limit_s=None).failed_keys == [ops[i].key]
