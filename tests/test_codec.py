"""raftkv.codec: round trips of every encoding, and strict rejection of anything else.

The malformed inputs are built with msgpack directly: the test needs an encoder independent of the one under test.
"""

from __future__ import annotations

import ast
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import raftkv
from raftkv import codec
from raftkv.codec import CodecError
from raftkv.raft.types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MsgType,
    Snapshot,
    SnapshotMetadata,
)

U64 = st.integers(0, 2**64 - 1)
SMALL = st.integers(0, 2**31)
NODE = st.integers(1, 2**63)

V = codec.FORMAT_VERSION
entries = st.builds(Entry, U64, U64, st.sampled_from(EntryType), st.binary(max_size=64))
hard_states = st.builds(HardState, U64, U64, U64)


@st.composite
def conf_states(draw: st.DrawFn) -> ConfState:
    ids = draw(st.lists(NODE, unique=True, max_size=9))
    split = draw(st.integers(0, len(ids)))
    return ConfState(tuple(sorted(ids[:split])), tuple(sorted(ids[split:])))


snapshot_metadata = st.builds(SnapshotMetadata, conf_states(), U64, U64)
snapshots = st.builds(Snapshot, snapshot_metadata, st.binary(max_size=128))
messages = st.builds(
    Message,
    type=st.sampled_from(MsgType),
    to=U64,
    frm=U64,
    term=U64,
    log_term=U64,
    index=U64,
    entries=st.lists(entries, max_size=5).map(tuple),
    commit=U64,
    reject=st.booleans(),
    reject_hint=U64,
    snapshot=st.none() | snapshots,
    context=st.binary(max_size=16),
    confirmed_round=U64,
    confirmed_commit=U64,
)

ROUND_TRIPS: list[tuple[str, Callable[[Any], bytes], Callable[[bytes], Any], Any]] = [
    ("entry", codec.encode_entry, codec.decode_entry, entries),
    ("hard state", codec.encode_hard_state, codec.decode_hard_state, hard_states),
    ("conf state", codec.encode_conf_state, codec.decode_conf_state, conf_states()),
    ("snapshot metadata", codec.encode_snapshot_metadata, codec.decode_snapshot_metadata, snapshot_metadata),
]


def pack(obj: Any) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


# -- round trips ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "encode", "decode", "values"), ROUND_TRIPS, ids=[r[0] for r in ROUND_TRIPS])
@given(data=st.data())
def test_round_trip(name: str, encode: Any, decode: Any, values: Any, data: st.DataObject) -> None:
    value = data.draw(values)
    decoded = decode(encode(value))
    assert decoded == value
    assert type(decoded) is type(value)


@given(st.lists(messages, max_size=6))
def test_messages_round_trip(msgs: list[Message]) -> None:
    decoded = codec.decode_messages(codec.encode_messages(msgs))
    assert decoded == msgs
    for m in decoded:
        assert type(m) is Message
        assert type(m.entries) is tuple
        assert all(type(e) is Entry for e in m.entries)


def test_message_with_entries_and_with_snapshot() -> None:
    cs = ConfState((1, 2, 3), (4,))
    msgs = (
        Message(MsgType.APP, 2, 1, 5, 4, 9, (Entry(5, 10, EntryType.NORMAL, b"x"), Entry(5, 11, 1, b"")), 8),
        Message(MsgType.SNAP, 3, 1, 5, snapshot=Snapshot(SnapshotMetadata(cs, 10, 4), b"\x00state")),
        Message(MsgType.APP_RESP, 1, 2, 5, index=11, reject=True, reject_hint=7),
        Message(MsgType.READ_INDEX, 1, 2, 5, context=b"req-1"),
    )
    decoded = codec.decode_messages(codec.encode_messages(msgs))  # a tuple in, a list out
    assert decoded == list(msgs)
    assert decoded[1].snapshot == msgs[1].snapshot
    assert codec.decode_messages(codec.encode_messages([])) == []


def test_entries_are_arrays_on_the_wire() -> None:
    """The layout the module docstring promises (and that other implementations would read)."""
    e = Entry(3, 7, EntryType.CONF_CHANGE, b"cc")
    assert msgpack.unpackb(codec.encode_entry(e)) == [2, 3, 7, 1, b"cc"]
    m = Message(MsgType.APP, 2, 1, 3, 2, 6, (e,), 5)
    assert msgpack.unpackb(codec.encode_messages([m])) == [
        2,
        [[3, 2, 1, 3, 2, 6, [[3, 7, 1, b"cc"]], 5, False, 0, None, b"", 0, 0]],
    ]


def test_encoding_something_else_inside_a_message_fails_loudly() -> None:
    with pytest.raises(TypeError, match="cannot encode"):
        codec.encode_messages([Message(MsgType.APP, snapshot=object())])  # type: ignore[arg-type]


# -- rejection ------------------------------------------------------------------------------------------------------

DECODERS = {
    "entry": codec.decode_entry,
    "hard state": codec.decode_hard_state,
    "conf state": codec.decode_conf_state,
    "snapshot metadata": codec.decode_snapshot_metadata,
    "message batch": codec.decode_messages,
}
GOOD = {
    "entry": codec.encode_entry(Entry(1, 2, 0, b"data")),
    "hard state": codec.encode_hard_state(HardState(1, 2, 3)),
    "conf state": codec.encode_conf_state(ConfState((1, 2), (3,))),
    "snapshot metadata": codec.encode_snapshot_metadata(SnapshotMetadata(ConfState((1,)), 5, 2)),
    "message batch": codec.encode_messages(
        [Message(MsgType.SNAP, 2, 1, 3, entries=(Entry(3, 9),), snapshot=Snapshot(SnapshotMetadata(index=8)))]
    ),
}


@pytest.mark.parametrize("kind", DECODERS)
@pytest.mark.parametrize("version", [0, 1, 3, 255])
def test_unknown_versions_are_rejected(kind: str, version: int) -> None:
    fields = msgpack.unpackb(GOOD[kind])
    fields[0] = version
    with pytest.raises(CodecError, match=f"unsupported {kind} encoding version {version}"):
        DECODERS[kind](pack(fields))


@pytest.mark.parametrize("kind", DECODERS)
def test_truncated_bytes_are_rejected(kind: str) -> None:
    good = GOOD[kind]
    assert DECODERS[kind](good) is not None
    for cut in range(len(good)):
        with pytest.raises(CodecError):
            DECODERS[kind](good[:cut])


@pytest.mark.parametrize("kind", DECODERS)
def test_trailing_bytes_are_rejected(kind: str) -> None:
    with pytest.raises(CodecError, match="extra data"):
        DECODERS[kind](GOOD[kind] + b"\x00")


@pytest.mark.parametrize("kind", DECODERS)
@pytest.mark.parametrize(
    "obj",
    [None, 1, b"bytes", "str", [], [1], {"v": 1}, [True, 1, 2, 3, 4], [1.0, 1, 2, 3, 4]],
    ids=repr,
)
def test_wrong_shapes_are_rejected(kind: str, obj: Any) -> None:
    with pytest.raises(CodecError):
        DECODERS[kind](pack(obj))


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ([V, 1, 2, 0], "malformed entry"),  # a field missing
        ([V, 1, 2, 0, b"d", b"extra"], "malformed entry"),
        ([V, -1, 2, 0, b"d"], "malformed entry"),  # negative term
        ([V, True, 2, 0, b"d"], "malformed entry"),  # a bool is not an int here
        ([V, 1, 2, 0, "text"], "malformed entry"),  # str, not bytes
        ([V, 1, 2, 0, None], "malformed entry"),
        ([V, 1, 2, 9, b"d"], "unknown entry type 9"),
        ([V, 1, 2.5, 0, b"d"], "malformed entry"),
    ],
)
def test_malformed_entries_are_rejected(fields: list[Any], match: str) -> None:
    with pytest.raises(CodecError, match=match):
        codec.decode_entry(pack(fields))


@pytest.mark.parametrize(
    ("decode", "fields"),
    [
        (codec.decode_hard_state, [V, 1, 2]),
        (codec.decode_hard_state, [V, 1, -2, 3]),
        (codec.decode_conf_state, [V, [1, 2], [2]]),  # a voter that is also a learner
        (codec.decode_conf_state, [V, [0], []]),  # node ids are positive
        (codec.decode_conf_state, [V, [1, "2"], []]),
        (codec.decode_conf_state, [V, 1, []]),
        (codec.decode_snapshot_metadata, [V, [[1]], 5, 2]),
        (codec.decode_snapshot_metadata, [V, [[1], []], -5, 2]),
    ],
)
def test_malformed_states_are_rejected(decode: Any, fields: list[Any]) -> None:
    with pytest.raises(CodecError):
        decode(pack(fields))


def _message(**overrides: Any) -> list[Any]:
    m = [3, 2, 1, 5, 4, 9, [[5, 10, 0, b"x"]], 8, False, 0, None, b"", 0, 0]
    names = list(Message._fields)
    for k, v in overrides.items():
        m[names.index(k)] = v
    return m


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (_message()[:11], "malformed message"),
        ([*_message(), b""], "malformed message"),
        (_message(type=99), "unknown message type"),
        (_message(type=True), "'type'"),
        (_message(to=-1), "'to' is negative"),
        (_message(term="5"), "'term'"),
        (_message(commit=None), "'commit'"),
        (_message(reject=0), "'reject'"),
        (_message(context="ctx"), "'context'"),
        (_message(entries=None), "'entries'"),
        (_message(entries=[[5, 10, 0]]), "malformed message entry"),
        (_message(entries=[7]), "malformed message entry"),
        (_message(entries=[[5, 10, 0, "x"]]), "'data'"),
        (_message(entries=[[5, 10, 7, b"x"]]), "unknown entry type"),
        (_message(entries=[[5, -10, 0, b"x"]]), "'index' is negative"),
        (_message(entries=[b"abcd"]), "malformed message entry"),
        (_message(entries=["abcd"]), "malformed message entry"),
        (_message(snapshot=[[[1], []], 5, 2]), "malformed message snapshot"),
        (_message(snapshot=[[[1], []], 5, 2, "data"]), "malformed message snapshot"),
        (_message(snapshot=[[[1], [1]], 5, 2, b"data"]), "both voter and learner"),
        (_message(snapshot=b"snapshot"), "'snapshot'"),
        (7, "malformed message"),
    ],
)
def test_malformed_messages_are_rejected(message: Any, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        codec.decode_messages(pack([V, [_message(), message]]))


def test_maps_and_extensions_are_rejected() -> None:
    with pytest.raises(CodecError, match="maps"):
        codec.decode_messages(pack([V, [_message(entries=[{"k": 2}])]]))
    with pytest.raises(CodecError, match="extension"):
        codec.decode_entry(pack([V, 1, 2, 0, msgpack.ExtType(5, b"x")]))
    with pytest.raises(CodecError):
        codec.decode_entry(msgpack.packb([V, 1, 2, 0, msgpack.Timestamp(1)], datetime=False))


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_garbage_raises_only_codec_error(garbage: bytes) -> None:
    for decode in DECODERS.values():
        with contextlib.suppress(CodecError):
            decode(garbage)


@given(st.lists(messages, min_size=1, max_size=3), st.data())
def test_corrupted_batches_raise_only_codec_error(msgs: list[Message], data: st.DataObject) -> None:
    b = bytearray(codec.encode_messages(msgs))
    i = data.draw(st.integers(0, len(b) - 1))
    b[i] = data.draw(st.integers(0, 255))
    try:
        out = codec.decode_messages(bytes(b))
    except CodecError:
        return
    assert all(type(m) is Message for m in out)  # a flip that still decodes yields well-formed values


def test_codec_error_is_a_value_error() -> None:
    assert issubclass(CodecError, ValueError)


def test_only_codec_imports_msgpack() -> None:
    """STYLE.md: msgpack only through codec.py."""
    root = Path(raftkv.__file__).parent
    users = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "msgpack" or n.startswith("msgpack.") for n in names):
                users.append(path.relative_to(root).as_posix())
    assert users == ["codec.py"]


# -- the KV state machine's encodings (built here as plain tuples: the codec needs no kv class) ------------------

PLAIN = codec.KVTypes(*([tuple] * len(codec.KVTypes._fields)))
CLOCKS = st.dictionaries(NODE, st.integers(1, 2**64 - 1), max_size=4).map(lambda d: tuple(sorted(d.items())))


@given(st.binary(max_size=64), U64, U64, U64, CLOCKS, st.integers(0, 2**63 - 1))
def test_value_record_round_trip(value: bytes, create: int, mod: int, version: int, clock: Any, lease: int) -> None:
    b = codec.encode_value_record(value, create, mod, version, clock, (), lease)
    assert codec.decode_value_record(b, PLAIN) == (value, create, mod, version, clock, (), lease)
    # A key without a lease is stored as before leases (7 fields), one with a lease with it at the end.
    fields = (2, value, create, mod, version, clock, ())
    assert msgpack.unpackb(b, use_list=False) == ((*fields, lease) if lease else fields)


@given(st.binary(max_size=64), st.none() | st.binary(max_size=64))
def test_history_event_round_trip(key: bytes, record: bytes | None) -> None:
    b = codec.encode_event(key, record)
    assert codec.decode_event(b) == (key, record)
    assert msgpack.unpackb(b, use_list=False) == (2, key, record)


@pytest.mark.parametrize("event", [[V, "k", None], [V, b"k", 1], [V, b"k", "v"], [V, None, b"v"], [V, b"k"]])
def test_malformed_history_events_are_rejected(event: list[Any]) -> None:
    with pytest.raises(CodecError, match="history event"):
        codec.decode_event(pack(event))


@given(U64, U64, st.binary(max_size=32))
def test_session_record_round_trip(seq: int, active: int, result: bytes) -> None:
    assert codec.decode_session_record(codec.encode_session_record(seq, active, result)) == (seq, active, result)


def test_command_batch_round_trip_with_plain_types() -> None:
    cmds = [
        (codec.CMD_PUT, 1, 2, 3, b"k", b"v", ((b"k", codec.TARGET_VCLOCK, codec.CMP_EQ, ((1, 2),)),), 0),
        (codec.CMD_PUT, 8, 2, 4, b"k", b"v", (), 77),
        (codec.CMD_DELETE, 4, 0, 0, b"k", ()),
        (codec.CMD_INCR, 5, 0, 0, b"n", -3),
        (codec.CMD_COMPACT, 7, 0, 0, 42),
        (codec.CMD_LEASE_GRANT, 10, 2, 5, 0, 60),
        (codec.CMD_LEASE_REVOKE, 11, 0, 0, 77, 3),
        (codec.CMD_TXN, 6, 0, 0, ((b"k", codec.TARGET_EXISTS, codec.CMP_NE, False),),
         ((codec.TXN_GET, b"k", b"", 0, 0), (codec.TXN_PUT, b"k", b"v", 0, 77)), ()),
    ]  # fmt: skip
    b = codec.encode_command_batch(9, 123, cmds)
    assert codec.decode_command_batch(b, PLAIN) == (9, 123, [c[1:] for c in cmds])
    # The column path (puts only) carries the lease too.
    puts = [(codec.CMD_PUT, i, 0, 0, b"k%d" % i, b"v", (), i % 2) for i in range(1, 5)]
    assert codec.decode_command_batch(codec.encode_command_batch(9, 1, puts), PLAIN) == (9, 1, [c[1:] for c in puts])


def test_puts_and_txn_ops_of_a_build_before_leases_decode_with_no_lease() -> None:
    old = [
        (codec.CMD_PUT, 1, 2, 3, b"k", b"v", ()),
        (codec.CMD_TXN, 6, 0, 0, (), ((codec.TXN_PUT, b"k", b"v", 0),), ()),
    ]
    assert codec.decode_command_batch(codec.encode_command_batch(9, 1, old), PLAIN) == (9, 1, [
        (1, 2, 3, b"k", b"v", (), 0),
        (6, 0, 0, (), ((codec.TXN_PUT, b"k", b"v", 0, 0),), ()),
    ])
    for bad in ((codec.CMD_PUT, 1, 2, 3, b"k", b"v", (), -1), (codec.CMD_PUT, 1, 2, 3, b"k", b"v", (), True),
                (codec.CMD_LEASE_GRANT, 1, 0, 0, -5, 60)):
        with pytest.raises(CodecError):
            codec.decode_command_batch(codec.encode_command_batch(9, 1, [bad]), PLAIN)


@pytest.mark.parametrize(
    ("decode", "good"),
    [
        (lambda b: codec.decode_command_batch(b, PLAIN), [V, 1, 0, []]),
        (lambda b: codec.decode_result(b, PLAIN), [V, [8]]),
        (lambda b: codec.decode_value_record(b, PLAIN), [V, b"v", 1, 1, 1, [[1, 1]], []]),
        (codec.decode_session_record, [V, 1, 0, b""]),
        (codec.decode_event, [V, b"k", None]),
    ],
)
def test_kv_encodings_are_version_tagged_and_strict(decode: Any, good: list[Any]) -> None:
    decode(pack(good))
    for version in (0, 1, 3):
        with pytest.raises(CodecError, match=f"encoding version {version}"):
            decode(pack([version, *good[1:]]))
    with pytest.raises(CodecError):
        decode(pack([*good, 0]))
    with pytest.raises(CodecError, match="extra data"):
        decode(pack(good) + b"\x00")
    with pytest.raises(CodecError, match="maps"):
        decode(pack({"v": good}))


@pytest.mark.parametrize(
    "record",
    [
        [V, "v", 1, 1, 1, []],
        [V, b"v", -1, 1, 1, []],
        [V, b"v", 1, 1, True, []],
        [V, b"v", 1, 1, 1, [[2, 1], [1, 1]]],
        [V, b"v", 1, 1, 1, [[1, 1], [1, 2]]],
        [V, b"v", 1, 1, 1, [[1, 0]]],
        [V, b"v", 1, 1, 1, [[1]]],
        [V, b"v", 1, 1, 1, None],
        [V, b"v", 1, 1, 1, [], [[b"x", 1, 0]]],  # a sibling's revision is > 0
        [V, b"v", 1, 1, 1, [], None],
    ],
)
def test_malformed_value_records_are_rejected(record: list[Any]) -> None:
    with pytest.raises(CodecError):
        codec.decode_value_record(pack(record), PLAIN)


@settings(max_examples=200)
@given(st.binary(max_size=64))
def test_kv_decoders_raise_only_codec_error_on_garbage(garbage: bytes) -> None:
    for decode in (
        lambda b: codec.decode_command_batch(b, PLAIN, lenient=True),
        lambda b: codec.decode_command_batch(b, PLAIN),
        lambda b: codec.decode_result(b, PLAIN),
        lambda b: codec.decode_value_record(b, PLAIN),
        codec.decode_session_record,
        codec.decode_event,
    ):
        with contextlib.suppress(CodecError):
            decode(garbage)


def test_malformed_command_is_a_codec_error_naming_the_request() -> None:
    _, _, cmds = codec.decode_command_batch(pack([V, 1, 0, [[99, 17, 0, 0]]]), PLAIN, lenient=True)
    (bad,) = cmds
    assert isinstance(bad, codec.MalformedCommand) and isinstance(bad, CodecError)
    assert bad.request_id == 17 and "unknown op 99" in str(bad)
