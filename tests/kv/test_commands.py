"""raftkv.kv.commands: batch and result round trips, the wire layout, strict and lenient decoding, validation.

Malformed inputs are built with msgpack directly (an encoder independent of the one under test)."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import raftkv.kv as kv
from raftkv.codec import CodecError
from raftkv.kv import (
    Batch,
    CmpOp,
    Command,
    Compact,
    Condition,
    ConditionFailedResult,
    Delete,
    DeleteResult,
    DuplicateResult,
    ErrorResult,
    Incr,
    IncrResult,
    InvalidCommand,
    KeyValue,
    LeaseGrant,
    LeaseGrantResult,
    LeaseRevoke,
    LeaseRevokeResult,
    Limits,
    Put,
    PutResult,
    Result,
    Sibling,
    SiblingPut,
    Target,
    Txn,
    TxnOp,
    TxnOpType,
    TxnResult,
    VectorClock,
    decode_batch,
    decode_batch_lenient,
    decode_result,
    encode_batch,
    encode_result,
    validate,
)

U64 = st.integers(0, 2**64 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)
LEASES = st.just(0) | st.integers(1, 2**63 - 1)
KEYS = st.binary(min_size=1, max_size=12)
VALUES = st.binary(max_size=24)
clocks = st.dictionaries(st.integers(1, 2**63), st.integers(1, 2**32), max_size=4).map(VectorClock)

conditions = st.one_of(
    st.builds(Condition, KEYS, st.just(Target.VALUE), st.sampled_from([CmpOp.EQ, CmpOp.NE]), VALUES),
    st.builds(
        Condition,
        KEYS,
        st.sampled_from([Target.VERSION, Target.MOD_REVISION, Target.CREATE_REVISION]),
        st.sampled_from(CmpOp),
        U64,
    ),
    st.builds(Condition, KEYS, st.just(Target.EXISTS), st.sampled_from([CmpOp.EQ, CmpOp.NE]), st.booleans()),
    st.builds(Condition, KEYS, st.just(Target.VCLOCK), st.sampled_from([CmpOp.EQ, CmpOp.NE]), clocks),
)
txn_ops = st.one_of(
    st.builds(TxnOp, st.just(TxnOpType.GET), KEYS, st.just(b""), st.just(0), st.just(0)),
    st.builds(TxnOp, st.just(TxnOpType.PUT), KEYS, VALUES, st.just(0), LEASES),
    st.builds(TxnOp, st.just(TxnOpType.DELETE), KEYS, st.just(b""), st.just(0), st.just(0)),
    st.builds(TxnOp, st.just(TxnOpType.INCR), KEYS, st.just(b""), I64, st.just(0)),
)
cond_tuples = st.lists(conditions, max_size=3).map(tuple)
op_tuples = st.lists(txn_ops, max_size=3).map(tuple)
commands: st.SearchStrategy[Command] = st.one_of(
    st.builds(Put, U64, U64, U64, KEYS, VALUES, cond_tuples, LEASES),
    st.builds(Delete, U64, U64, U64, KEYS, cond_tuples),
    st.builds(Incr, U64, U64, U64, KEYS, I64),
    st.builds(Txn, U64, U64, U64, cond_tuples, op_tuples, op_tuples),
    st.builds(SiblingPut, U64, U64, U64, KEYS, VALUES, clocks),
    st.builds(Compact, U64, U64, U64, U64),
    st.builds(LeaseGrant, U64, U64, U64, LEASES, U64),
    st.builds(LeaseRevoke, U64, U64, U64, LEASES, U64),
)
POS = st.integers(1, 2**63)
siblings = st.lists(st.builds(Sibling, VALUES, POS, POS), max_size=3).map(tuple)
key_values = st.builds(KeyValue, KEYS, VALUES, U64, U64, U64, clocks, siblings, LEASES)
op_results = st.one_of(
    st.none(),
    key_values,
    st.builds(PutResult, key_values),
    st.builds(DeleteResult, st.booleans(), U64),
    st.builds(IncrResult, I64, key_values),
    st.builds(ErrorResult, st.text(max_size=10), st.text(max_size=20)),
)
results: st.SearchStrategy[Result] = st.one_of(
    st.builds(PutResult, key_values),
    st.builds(DeleteResult, st.booleans(), U64),
    st.builds(IncrResult, I64, key_values),
    st.builds(LeaseGrantResult, LEASES, U64, U64),
    st.builds(LeaseRevokeResult, LEASES, U64, st.lists(KEYS, max_size=3).map(tuple)),
    st.builds(TxnResult, st.booleans(), st.lists(op_results, max_size=4).map(tuple), U64),
    st.builds(ConditionFailedResult, conditions, st.none() | key_values),
    st.builds(ErrorResult, st.text(max_size=10), st.text(max_size=20)),
    st.just(DuplicateResult()),
)


def pack(obj: Any) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


# -- round trips ----------------------------------------------------------------------------------------------------


@given(st.integers(1, 2**64 - 1), U64, st.lists(commands, max_size=6))
def test_batch_round_trip(proposer: int, ts: int, cmds: list[Command]) -> None:
    batch = decode_batch(encode_batch(proposer, ts, cmds))
    assert batch == Batch(proposer, ts, cmds)
    assert [type(c) for c in batch.commands] == [type(c) for c in cmds]
    for c in batch.commands:
        conds = c.compares if isinstance(c, Txn) else getattr(c, "conditions", ())
        assert all(type(x) is Condition for x in conds)
        assert all(type(x.operand) is VectorClock for x in conds if x.target == Target.VCLOCK)
        if isinstance(c, Txn):
            assert all(type(o) is TxnOp for o in c.success + c.failure)


@pytest.mark.parametrize(
    "make",
    [lambda i: Put(i, 7, i, b"k%d" % i, b"v"), lambda i: Delete(i, 0, 0, b"k"), lambda i: Incr(i, 3, i, b"n", -i)],
)
def test_homogeneous_batches_take_the_column_path_and_match_the_general_one(make: Any) -> None:
    cmds = [make(i) for i in range(50)]
    fast = decode_batch(encode_batch(1, 5, cmds))
    assert fast.commands == cmds and all(type(c) is type(cmds[0]) for c in fast.commands)
    mixed = [*cmds, Txn(99, 0, 0, (), (), ())]  # a txn forces the per-command path
    assert decode_batch(encode_batch(1, 5, mixed)).commands == mixed


@given(results)
def test_result_round_trip(result: Result) -> None:
    decoded = decode_result(encode_result(result))
    assert decoded == result
    assert type(decoded) is type(result)
    if isinstance(result, TxnResult):
        assert [type(x) for x in decoded.results] == [type(x) for x in result.results]  # type: ignore[union-attr]


def test_wire_layout() -> None:
    """The op discriminator first, then the NamedTuple's own fields in order (codec.py's docstring)."""
    clock = VectorClock({2: 1})
    put = Put(5, 9, 3, b"k", b"v", (Condition(b"k", Target.VCLOCK, CmpOp.EQ, clock),))
    txn = Txn(6, 0, 0, (), (TxnOp(TxnOpType.INCR, b"n", delta=-2),), ())
    assert msgpack.unpackb(encode_batch(2, 1000, [put, Delete(1, 0, 0, b"d"), Incr(2, 0, 0, b"n", 4), txn])) == [
        2, 2, 1000,
        [[1, 5, 9, 3, b"k", b"v", [[b"k", 5, 0, [[2, 1]]]], 0], [2, 1, 0, 0, b"d", []], [3, 2, 0, 0, b"n", 4],
         [4, 6, 0, 0, [], [[3, b"n", b"", -2, 0]], []]],
    ]  # fmt: skip
    kv_ = KeyValue(b"k", b"v", 1, 2, 3, clock)
    assert msgpack.unpackb(encode_result(PutResult(kv_))) == [2, [2, [b"k", b"v", 1, 2, 3, [[2, 1]], [], 0]]]
    assert msgpack.unpackb(encode_result(TxnResult(True, (None, kv_), 7))) == [
        2, [5, True, [None, [1, b"k", b"v", 1, 2, 3, [[2, 1]], [], 0]], 7]
    ]  # fmt: skip
    assert msgpack.unpackb(encode_result(DuplicateResult())) == [2, [8]]
    sib = SiblingPut(8, 0, 0, b"k", b"w", clock)
    assert msgpack.unpackb(encode_batch(2, 1000, [sib])) == [2, 2, 1000, [[5, 8, 0, 0, b"k", b"w", [[2, 1]]]]]


def test_encode_rejects_non_commands_and_bad_proposers() -> None:
    with pytest.raises(TypeError, match="not a command"):
        encode_batch(1, 0, [("put", b"k")])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="proposer"):
        encode_batch(0, 0, [])
    with pytest.raises(TypeError, match="not a result"):
        encode_result(("nope",))  # type: ignore[arg-type]


# -- strict decoding --------------------------------------------------------------------------------------------------

GOOD_PUT = [1, 5, 9, 3, b"k", b"v", []]
V = 2  # the encoding version


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        ([3, 1, 0, []], "unsupported command batch encoding version 3"),
        ([V, 0, 0, []], "proposer > 0"),  # node ids are positive
        ([V, 1, -1, []], "malformed command batch"),
        ([V, 1, 0], "malformed command batch"),
        ([V, 1, 0, [GOOD_PUT], b"extra"], "malformed command batch"),
        ([V, 1, 0, [[99, 5, 0, 0, b"k"]]], "unknown op 99"),
        ([V, 1, 0, [[True, 5, 9, 3, b"k", b"v", []]]], "unknown op True"),
        ([V, 1, 0, [[1, 5, 9, 3, b"k", b"v"]]], "malformed command"),
        ([V, 1, 0, [[1, 5, 9, 3, "k", b"v", []]]], "malformed put"),
        ([V, 1, 0, [[1, -5, 9, 3, b"k", b"v", []]]], "malformed command"),
        ([V, 1, 0, [[1, 5, 9, 3, b"k", b"v", [[b"k", 9, 0, b"x"]]]]], "unknown target 9"),
        ([V, 1, 0, [[1, 5, 9, 3, b"k", b"v", [[b"k", 0, 7, b"x"]]]]], "malformed condition"),
        ([V, 1, 0, [[1, 5, 9, 3, b"k", b"v", [[b"k", 0, 0, 5]]]]], "operand"),  # VALUE needs bytes
        ([V, 1, 0, [[1, 5, 9, 3, b"k", b"v", [[b"k", 4, 0, 1]]]]], "operand"),  # EXISTS needs a bool
        ([V, 1, 0, [[1, 5, 9, 3, b"k", b"v", [[b"k", 1, 0, True]]]]], "operand"),  # VERSION needs an int
        ([V, 1, 0, [[1, 5, 9, 3, b"k", b"v", [[b"k", 5, 0, [[2, 1], [1, 1]]]]]]], "vector clock"),  # not sorted
        ([V, 1, 0, [[1, 5, 9, 3, b"k", b"v", [[b"k", 5, 0, [[1, 0]]]]]]], "vector clock"),  # zero counter
        ([V, 1, 0, [[1, 5, 9, 3, b"k", b"v", [[b"k", 5, 0, [[0, 1]]]]]]], "vector clock"),  # node 0
        ([V, 1, 0, [[2, 5, 9, 3, b"k", None]]], "malformed command"),
        ([V, 1, 0, [[3, 5, 9, 3, b"k", 1.5]]], "malformed incr"),
        ([V, 1, 0, [[8, 5, 9, 3, -1]]], "malformed compact"),
        ([V, 1, 0, [[8, 5, 9, 3, True]]], "malformed compact"),
        ([V, 1, 0, [[8, 5, 9, 3]]], "malformed command"),
        ([V, 1, 0, [[4, 5, 9, 3, [], [[7, b"k", b"", 0]], []]]], "malformed txn op"),
        ([V, 1, 0, [[4, 5, 9, 3, [], [[1, b"k", b"", 0, 0, 0]], []]]], "malformed txn op"),
        ([V, 1, 0, [[4, 5, 9, 3, [], None, []]]], "malformed txn"),
        ([V, 1, 0, [GOOD_PUT, 7]], "malformed command"),
        ([V, 1, 0, [GOOD_PUT, []]], "malformed command"),
        ([V, 1, 0, [GOOD_PUT, b"abcdefg"]], "malformed command"),
    ],
)
def test_malformed_batches_are_rejected(batch: list[Any], match: str) -> None:
    with pytest.raises(CodecError, match=match):
        decode_batch(pack(batch))


@pytest.mark.parametrize("bad_column", [4, 5, 6])
def test_the_column_path_rejects_a_bad_field_anywhere(bad_column: int) -> None:
    cmds = [list(GOOD_PUT) for _ in range(20)]
    cmds[13][bad_column] = 17  # an int where bytes / an array belongs
    with pytest.raises(CodecError):
        decode_batch(pack([V, 1, 0, cmds]))


def test_truncated_and_trailing_bytes_are_rejected() -> None:
    good = encode_batch(1, 0, [Put(1, 0, 0, b"k", b"v"), Incr(2, 0, 0, b"n", 1)])
    for cut in range(len(good)):
        with pytest.raises(CodecError):
            decode_batch(good[:cut])
    with pytest.raises(CodecError, match="extra data"):
        decode_batch(good + b"\x00")
    good_result = encode_result(PutResult(KeyValue(b"k", b"v", 1, 1, 1, VectorClock({1: 1}))))
    for cut in range(len(good_result)):
        with pytest.raises(CodecError):
            decode_result(good_result[:cut])


@pytest.mark.parametrize(
    "wire",
    [
        [V, [99]],
        [V, [8, 1]],
        [V, [2]],
        [V, [1, b"k", b"v", 1, 1, 1, [], []]],  # a bare key value is only valid inside a txn result
        [V, [5, True, [[5, True, [], 0]], 0]],  # no txn inside a txn
        [V, [5, True, []]],  # a txn result has its revision
        [V, [3, 1, 5]],  # deleted is a bool
        [V, [7, b"kind", "msg"]],
        [V, [6, [b"k", 0, 0, b"v"], [b"k", b"v", 1, 1, 1]]],
        [V, [2, [b"k", b"v", 1, 1, 1, [], [[b"x", 0, 1]]]]],  # a sibling's node is > 0
        [V + 1, [8]],
        [V, [8], 0],
    ],
)
def test_malformed_results_are_rejected(wire: list[Any]) -> None:
    with pytest.raises(CodecError):
        decode_result(pack(wire))


@settings(max_examples=200)
@given(st.binary(max_size=64))
def test_garbage_raises_only_codec_error(garbage: bytes) -> None:
    for decode in (decode_batch, decode_batch_lenient, decode_result):
        with contextlib.suppress(CodecError):
            decode(garbage)


@given(st.lists(commands, min_size=1, max_size=4), st.data())
def test_corrupted_batches_raise_only_codec_error(cmds: list[Command], data: st.DataObject) -> None:
    b = bytearray(encode_batch(1, 0, cmds))
    i = data.draw(st.integers(0, len(b) - 1))
    b[i] = data.draw(st.integers(0, 255))
    try:
        out = decode_batch_lenient(bytes(b))
    except CodecError:
        return
    assert all(type(c) in (Put, SiblingPut, Delete, Incr, Txn, Compact, LeaseGrant, LeaseRevoke, InvalidCommand)
               for c in out[2])


# -- lenient decoding -------------------------------------------------------------------------------------------------


def test_lenient_decoding_replaces_only_the_bad_commands() -> None:
    bad_key = [1, 41, 0, 0, "str-key", b"v", []]
    unknown_op = [99, 42, 0, 0]
    unreadable = [1, "x"]
    batch = pack([V, 3, 77, [GOOD_PUT, bad_key, unknown_op, unreadable, [3, 6, 0, 0, b"n", 1]]])
    with pytest.raises(CodecError):
        decode_batch(batch)
    proposer, ts, cmds = decode_batch_lenient(batch)
    assert (proposer, ts) == (3, 77)
    assert cmds[0] == Put(5, 9, 3, b"k", b"v")
    assert cmds[4] == Incr(6, 0, 0, b"n", 1)
    assert [type(c) for c in cmds[1:4]] == [InvalidCommand] * 3
    assert [c.request_id for c in cmds[1:4]] == [41, 42, 0]
    assert "unknown op 99" in cmds[2].message  # type: ignore[union-attr]
    with pytest.raises(CodecError):  # the envelope itself must be valid
        decode_batch_lenient(pack([V, 0, 77, [GOOD_PUT]]))


# -- validation -------------------------------------------------------------------------------------------------------

LIMITS = Limits(max_key_bytes=8, max_value_bytes=16, max_ops=3)


@pytest.mark.parametrize(
    ("cmd", "match"),
    [
        (Put(1, 0, 0, b"", b"v"), "put: the key is empty"),
        (Put(1, 0, 0, b"k" * 9, b"v"), "9 bytes, more than the limit of 8"),
        (Put(1, 0, 0, b"k", b"v" * 17), "value is 17 bytes"),
        (Put(1, 0, 0, b"k", b"v", (Condition(b"", Target.EXISTS, CmpOp.EQ, True),)), "condition: the key is empty"),
        (Put(1, 0, 0, b"k", b"v", (Condition(b"k", Target.VALUE, CmpOp.GT, b"a"),)), "only EQ and NE"),
        (Delete(1, 0, 0, b"k", (Condition(b"k", Target.EXISTS, CmpOp.LT, True),)), "only EQ and NE"),
        (Delete(1, 0, 0, b"k", (Condition(b"k", Target.VCLOCK, CmpOp.GT, VectorClock()),)), "only EQ and NE"),
        (Delete(1, 0, 0, b"k", (Condition(b"k", Target.EXISTS, CmpOp.EQ, True),) * 4), "4 conditions"),
        (Delete(1, 0, 0, b""), "delete: the key is empty"),
        (Incr(1, 0, 0, b"n", 2**63), "does not fit in 64 bits"),
        (Incr(1, 0, 0, b"", 1), "incr: the key is empty"),
        (Txn(1, 0, 0, (), (TxnOp(TxnOpType.GET, b"k"),) * 4, ()), "4 compares and ops"),
        (Txn(1, 0, 0, (), (TxnOp(TxnOpType.GET, b"k", b"v"),), ()), "only a put has a value"),
        (Txn(1, 0, 0, (), (), (TxnOp(TxnOpType.PUT, b"k", delta=1),)), "only an incr has a delta"),
        (Txn(1, 0, 0, (), (TxnOp(TxnOpType.PUT, b"k", b"v" * 17),), ()), "value is 17 bytes"),
        (Txn(1, 0, 0, (), (TxnOp(TxnOpType.INCR, b"k", delta=-(2**63) - 1),), ()), "64 bits"),
        (Txn(1, 0, 0, (), (TxnOp(9, b"k"),), ()), "unknown op 9"),
        (Txn(1, 0, 0, (Condition(b"k", 9, CmpOp.EQ, 1),), (), ()), "unknown target"),
    ],
)
def test_validate_rejects(cmd: Command, match: str) -> None:
    error = validate(cmd, LIMITS)
    assert error is not None and match in error


@pytest.mark.parametrize(
    "cmd",
    [
        Put(1, 0, 0, b"k" * 8, b"v" * 16, (Condition(b"k", Target.VERSION, CmpOp.GT, 1),) * 3),
        Delete(1, 0, 0, b"k", (Condition(b"k", Target.CREATE_REVISION, CmpOp.LT, 9),)),
        Incr(1, 0, 0, b"n", -(2**63)),
        Txn(1, 0, 0, (Condition(b"k", Target.MOD_REVISION, CmpOp.GT, 0),), (TxnOp(TxnOpType.PUT, b"k", b""),), ()),
    ],
)
def test_validate_accepts(cmd: Command) -> None:
    assert validate(cmd, LIMITS) is None


def test_default_key_limit_is_4_kib() -> None:
    assert kv.MAX_KEY_BYTES == 4096
    assert validate(Put(1, 0, 0, b"k" * 4096, b"")) is None
    assert validate(Put(1, 0, 0, b"k" * 4097, b"")) is not None


def test_public_api() -> None:
    """Everything in ``__all__`` exists, and nothing private leaks into it."""
    for name in kv.__all__:
        assert hasattr(kv, name), name
        assert not name.startswith("_")
    assert sorted(kv.__all__) == sorted(set(kv.__all__))
