"""Binary encodings of the core's values: the only module in raftkv that imports ``msgpack``.

Every encoding is a msgpack array whose first element is a format version (``FORMAT_VERSION``), written with
``use_bin_type=True`` so ``bytes`` and ``str`` stay distinct. The layouts (v1)::

    entry            [1, term, index, type, data]
    hard state       [1, term, vote, commit]
    conf state       [1, [voters...], [learners...]]
    snapshot meta    [1, [[voters...], [learners...]], index, term]
    message batch    [1, [message...]]
      message        [type, to, frm, term, log_term, index, [entry...], commit, reject, reject_hint, snapshot, context]
      entry          [term, index, type, data]                    (the batch carries the version, entries do not)
      snapshot       nil | [[[voters...], [learners...]], index, term, data]

``Entry`` and ``Message`` are ``NamedTuple``s and msgpack packs a tuple as an array with no conversion step, so a
message batch is packed in one C call; only a ``Snapshot`` (a dataclass, rare on the wire) goes through a Python hook.

Decoding is strict: anything that is not exactly one of the layouts above — an unknown version, a wrong number of
fields, a field of the wrong type (``True`` is not an int here), a negative index, an unknown entry or message type,
a msgpack map or extension, truncated input or trailing bytes — raises ``CodecError`` (a ``ValueError``) and never
anything else. Decoded values compare equal to the values that were encoded; enum fields come back as plain ints
(``IntEnum`` members compare equal to them), sequences as tuples.

Thread safety: every function may be called from any thread. The packers shared at module level either never call
back into Python (so one ``pack()`` runs atomically under the GIL) or are guarded by a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any, NoReturn, TypeGuard

import msgpack  # type: ignore[import-untyped]  # no stubs or py.typed marker

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

__all__ = [
    "FORMAT_VERSION",
    "CodecError",
    "decode_conf_state",
    "decode_entry",
    "decode_hard_state",
    "decode_messages",
    "decode_snapshot_metadata",
    "encode_conf_state",
    "encode_entry",
    "encode_hard_state",
    "encode_messages",
    "encode_snapshot_metadata",
]

FORMAT_VERSION = 1
"""The version written by this build, and the only one it reads."""


class CodecError(ValueError):
    """Bytes that are not a valid encoding of the expected value (corrupt, truncated, or from another version)."""


# -- shared machinery ------------------------------------------------------------------------------------------

# No ``default`` hook: packing never runs Python code, so one pack() call is atomic under the GIL and this packer
# can be shared by every thread.
_plain_packer = msgpack.Packer(use_bin_type=True, autoreset=True)
_pack: Callable[[object], bytes] = _plain_packer.pack

_ENTRY_TYPES = frozenset(int(t) for t in EntryType)
_MSG_TYPES = frozenset(int(t) for t in MsgType)
_INT = frozenset({int})
_BYTES = frozenset({bytes})
_BOOL = frozenset({bool})
_TUPLE = frozenset({tuple})
_SNAPSHOT_FIELD: frozenset[type] = frozenset({type(None), tuple})
_LEN4 = frozenset({4})
_LEN12 = frozenset({12})
_new = tuple.__new__
_MESSAGE_FIELDS = len(Message._fields)


def _reject_map(pairs: object) -> NoReturn:
    raise CodecError("msgpack maps are not part of any raftkv encoding")


def _reject_ext(code: int, data: bytes) -> NoReturn:
    raise CodecError(f"msgpack extension type {code} is not part of any raftkv encoding")


def _unpack(b: bytes | bytearray | memoryview, what: str) -> Any:
    """msgpack → Python with arrays as tuples; every failure becomes a CodecError naming ``what``."""
    try:
        return msgpack.unpackb(
            b, use_list=False, raw=False, object_pairs_hook=_reject_map, ext_hook=_reject_ext, timestamp=0
        )
    except CodecError:
        raise
    except Exception as exc:  # msgpack raises ValueError subclasses, TypeError, StackError ...
        raise CodecError(f"cannot decode {what}: {exc} ({len(b)} bytes)") from exc


def _fail(what: str, layout: str, got: object) -> NoReturn:
    text = repr(got)
    if len(text) > 200:
        text = text[:200] + "..."
    raise CodecError(f"malformed {what}: expected {layout}, got {text}")


def _versioned(obj: object, what: str, n_fields: int, layout: str) -> tuple[Any, ...]:
    """Check the outer array and its version tag; return it."""
    if type(obj) is not tuple or not obj:
        _fail(what, layout, obj)
    version = obj[0]
    if type(version) is not int:
        _fail(what, layout, obj)
    if version != FORMAT_VERSION:
        raise CodecError(
            f"unsupported {what} encoding version {version} (this build reads version {FORMAT_VERSION}); "
            "was it written by a newer raftkv?"
        )
    if len(obj) != n_fields:
        _fail(what, layout, obj)
    return obj


def _is_index(x: object) -> bool:
    """A non-negative int (not a bool)."""
    return type(x) is int and x >= 0


def _node_ids(x: object) -> TypeGuard[tuple[int, ...]]:
    """An array of positive ints (node ids)."""
    return type(x) is tuple and all(type(i) is int and i > 0 for i in x)


def _conf_state(voters: object, learners: object, what: str) -> ConfState:
    if not (_node_ids(voters) and _node_ids(learners)):
        _fail(what, "voters and learners as arrays of positive ints", (voters, learners))
    try:
        return ConfState(voters, learners)
    except ValueError as exc:
        raise CodecError(f"malformed {what}: {exc}") from exc


# -- Entry (one WAL record payload) -------------------------------------------------------------------------------

_ENTRY_LAYOUT = "[version, term, index, type, data]"


def encode_entry(e: Entry) -> bytes:
    """``[1, term, index, type, data]``."""
    return _pack((FORMAT_VERSION, *e))


def decode_entry(b: bytes | bytearray | memoryview) -> Entry:
    t = _versioned(_unpack(b, "entry"), "entry", 5, _ENTRY_LAYOUT)
    _, term, index, typ, data = t
    if not (_is_index(term) and _is_index(index) and type(data) is bytes and type(typ) is int):
        _fail("entry", _ENTRY_LAYOUT, t)
    if typ not in _ENTRY_TYPES:
        raise CodecError(f"unknown entry type {typ} at index {index}")
    return _new(Entry, t[1:])


# -- HardState ------------------------------------------------------------------------------------------------------

_HARD_STATE_LAYOUT = "[version, term, vote, commit]"


def encode_hard_state(hs: HardState) -> bytes:
    """``[1, term, vote, commit]``."""
    return _pack((FORMAT_VERSION, *hs))


def decode_hard_state(b: bytes | bytearray | memoryview) -> HardState:
    t = _versioned(_unpack(b, "hard state"), "hard state", 4, _HARD_STATE_LAYOUT)
    if not (_is_index(t[1]) and _is_index(t[2]) and _is_index(t[3])):
        _fail("hard state", _HARD_STATE_LAYOUT, t)
    return _new(HardState, t[1:])


# -- ConfState ------------------------------------------------------------------------------------------------------


def encode_conf_state(cs: ConfState) -> bytes:
    """``[1, [voters...], [learners...]]``."""
    return _pack((FORMAT_VERSION, cs.voters, cs.learners))


def decode_conf_state(b: bytes | bytearray | memoryview) -> ConfState:
    t = _versioned(_unpack(b, "conf state"), "conf state", 3, "[version, voters, learners]")
    return _conf_state(t[1], t[2], "conf state")


# -- SnapshotMetadata -----------------------------------------------------------------------------------------------

_SNAP_META_LAYOUT = "[version, [voters, learners], index, term]"


def encode_snapshot_metadata(md: SnapshotMetadata) -> bytes:
    """``[1, [[voters...], [learners...]], index, term]``."""
    cs = md.conf_state
    return _pack((FORMAT_VERSION, (cs.voters, cs.learners), md.index, md.term))


def decode_snapshot_metadata(b: bytes | bytearray | memoryview) -> SnapshotMetadata:
    t = _versioned(_unpack(b, "snapshot metadata"), "snapshot metadata", 4, _SNAP_META_LAYOUT)
    _, cs, index, term = t
    if not (type(cs) is tuple and len(cs) == 2 and _is_index(index) and _is_index(term)):
        _fail("snapshot metadata", _SNAP_META_LAYOUT, t)
    return SnapshotMetadata(_conf_state(cs[0], cs[1], "snapshot metadata"), index, term)


# -- Message batches (the peer wire payload) ---------------------------------------------------------------------


def _snapshot_to_wire(obj: object) -> object:
    """Packer ``default`` hook: the only non-tuple value a Message holds is its Snapshot."""
    if type(obj) is Snapshot:
        md = obj.metadata
        cs = md.conf_state
        return ((cs.voters, cs.learners), md.index, md.term, obj.data)
    raise TypeError(f"raftkv.codec cannot encode {type(obj).__name__!r} inside a Message")


# This packer calls back into Python (the hook), so a concurrent pack() on another thread could interleave with
# it: guard it with a lock. It is taken once per batch, not per message.
_message_packer = msgpack.Packer(use_bin_type=True, autoreset=True, default=_snapshot_to_wire)
_message_packer_lock = threading.Lock()


def encode_messages(msgs: Sequence[Message]) -> bytes:
    """``[1, [message...]]``: the whole batch in one ``pack()`` call, entries included."""
    batch = (FORMAT_VERSION, msgs if type(msgs) is tuple or type(msgs) is list else tuple(msgs))
    try:
        return _pack(batch)  # the common case: no snapshot anywhere, no Python callback
    except TypeError:
        pass  # a Snapshot (or something unencodable, which the hooked packer reports)
    with _message_packer_lock:
        out: bytes = _message_packer.pack(batch)
    return out


_MESSAGE_LAYOUT = "[type, to, frm, term, log_term, index, entries, commit, reject, reject_hint, snapshot|nil, context]"
_WIRE_ENTRY_LAYOUT = "[term, index, type, data]"
_WIRE_SNAPSHOT_LAYOUT = "[[voters, learners], index, term, data]"


def _check_column(col: tuple[Any, ...], types: frozenset[type], what: str, field: str) -> None:
    if not set(map(type, col)) <= types:
        bad = next(x for x in col if type(x) not in types)
        raise CodecError(f"malformed {what}: field {field!r} has a value of type {type(bad).__name__}: {bad!r:.100}")


def _check_index_column(col: tuple[Any, ...], what: str, field: str) -> None:
    _check_column(col, _INT, what, field)
    if col and min(col) < 0:
        raise CodecError(f"malformed {what}: field {field!r} is negative ({min(col)})")


def _decode_wire_entries(flat: tuple[Any, ...]) -> list[Entry]:
    """Validate and build all entries of a batch at once. Every check is a C-level pass over a column: the cost
    per entry is a handful of pointer visits, with no per-field Python bytecode."""
    if not flat:
        return []
    try:
        lengths = set(map(len, flat))
    except TypeError:  # an int, nil, bool or float where an entry array belongs
        _fail("message entry", _WIRE_ENTRY_LAYOUT, next(x for x in flat if type(x) is not tuple))
    if lengths != _LEN4:
        _fail("message entry", _WIRE_ENTRY_LAYOUT, next(x for x in flat if len(x) != 4))
    # Maps and extensions were rejected while unpacking, so an element of length 4 is an array, a str or bytes. A
    # str or bytes "entry" cannot get past the column checks below (its items are str, or ints where the data
    # column needs bytes), so there is no need to pay for a per-element type pass here.
    terms, indexes, types, datas = zip(*flat, strict=True)
    _check_index_column(terms, "message entry", "term")
    _check_index_column(indexes, "message entry", "index")
    _check_column(types, _INT, "message entry", "type")
    if not set(types) <= _ENTRY_TYPES:
        raise CodecError(f"malformed message entry: unknown entry type(s) {sorted(set(types) - _ENTRY_TYPES)}")
    _check_column(datas, _BYTES, "message entry", "data")
    return list(map(_new, [Entry] * len(flat), flat))


def _decode_wire_snapshot(s: object) -> Snapshot:
    if not (type(s) is tuple and len(s) == 4):
        _fail("message snapshot", _WIRE_SNAPSHOT_LAYOUT, s)
    cs, index, term, data = s
    if not (type(cs) is tuple and len(cs) == 2 and _is_index(index) and _is_index(term) and type(data) is bytes):
        _fail("message snapshot", _WIRE_SNAPSHOT_LAYOUT, s)
    return Snapshot(SnapshotMetadata(_conf_state(cs[0], cs[1], "message snapshot"), index, term), data)


def decode_messages(b: bytes | bytearray | memoryview) -> list[Message]:
    """Inverse of ``encode_messages``. Raises CodecError unless ``b`` is exactly one valid batch."""
    batch = _versioned(_unpack(b, "message batch"), "message batch", 2, "[version, [message...]]")
    msgs = batch[1]
    if type(msgs) is not tuple:
        _fail("message batch", "[version, [message...]]", batch)
    if not msgs:
        return []
    try:
        if set(map(len, msgs)) != _LEN12:
            bad = next(m for m in msgs if len(m) != _MESSAGE_FIELDS)
            _fail("message", _MESSAGE_LAYOUT, bad)
        cols = tuple(zip(*msgs, strict=True))
    except TypeError:  # an element without len(): not an array
        _fail("message", _MESSAGE_LAYOUT, msgs)
    mtypes, to, frm, term, log_term, index, ents, commit, reject, reject_hint, snaps, context = cols
    _check_column(mtypes, _INT, "message", "type")
    if not set(mtypes) <= _MSG_TYPES:
        raise CodecError(f"malformed message: unknown message type(s) {sorted(set(mtypes) - _MSG_TYPES)}")
    for name, col in (
        ("to", to),
        ("frm", frm),
        ("term", term),
        ("log_term", log_term),
        ("index", index),
        ("commit", commit),
        ("reject_hint", reject_hint),
    ):
        _check_index_column(col, "message", name)
    _check_column(reject, _BOOL, "message", "reject")
    _check_column(context, _BYTES, "message", "context")
    _check_column(ents, _TUPLE, "message", "entries")
    _check_column(snaps, _SNAPSHOT_FIELD, "message", "snapshot")

    all_entries = _decode_wire_entries(tuple(chain.from_iterable(ents)))
    out: list[Message] = []
    append = out.append
    pos = 0
    for m in msgs:
        es = m[6]
        snap = m[10]
        if not es and snap is None:
            append(_new(Message, m))  # the fields are already exactly a Message's
            continue
        n = len(es)
        built = tuple(all_entries[pos : pos + n])
        pos += n
        append(
            _new(
                Message,
                (*m[:6], built, m[7], m[8], m[9], None if snap is None else _decode_wire_snapshot(snap), m[11]),
            )
        )
    return out
