"""Binary encodings of the core's values: the only module in raftkv that imports ``msgpack``.

Every encoding is a msgpack array whose first element is a format version (``FORMAT_VERSION``), written with
``use_bin_type=True`` so ``bytes`` and ``str`` stay distinct. The layouts (v2; a build reads only its own version,
so a data directory, snapshot file or peer of another version is refused with a clear error)::

    entry            [2, term, index, type, data]
    hard state       [2, term, vote, commit]
    conf state       [2, [voters...], [learners...]]
    snapshot meta    [2, [[voters...], [learners...]], index, term]
    message batch    [2, [message...]]
      message        [type, to, frm, term, log_term, index, [entry...], commit, reject, reject_hint, snapshot, context,
                      confirmed_round, confirmed_commit]
      entry          [term, index, type, data]                    (the batch carries the version, entries do not)
      snapshot       nil | [[[voters...], [learners...]], index, term, data]

A snapshot file's records (``raftkv.storage.snapshots`` frames them, with a length and a kind, and checksums them)::

    snapshot header  [2, "raftkv-snapshot", index, term, [voters...], [learners...], cluster_id, created_ns]
    snapshot record  [table, key, value]                          all bytes (the header carries the version)
    snapshot trailer [2, records, crc32]

The KV state machine's layouts (the classes come from ``raftkv.kv``, which hands them in as a ``KVTypes``: this
module imports nothing above ``raft``)::

    command batch    [2, proposer, timestamp_ns, [command...]]        a log entry's data; proposer > 0
      command        [op, request_id, client_id, seq, ...]           the op discriminator first, then by op:
        put          [1, request_id, client_id, seq, key, value, [condition...], lease]   lease 0: none (a put
                                                                      of 7 fields, from an older build, has none)
        delete       [2, request_id, client_id, seq, key, [condition...]]
        incr         [3, request_id, client_id, seq, key, delta]
        txn          [4, request_id, client_id, seq, [condition...], [txn op...], [txn op...]]
        sibling put  [5, request_id, client_id, seq, key, value, vector clock]
        hash mark    [6, request_id, client_id, seq]                  replicas hash their state right after it
        alarm        [7, request_id, client_id, seq, member, message]  member's state is corrupt (a hash check)
        compact      [8, request_id, client_id, seq, revision]        drop the history older than revision
        lease grant  [9, request_id, client_id, seq, lease_id, ttl_s]  lease_id 0: the state machine picks one
        lease revoke [10, request_id, client_id, seq, lease_id, stamp] stamp 0: whatever grant holds the id now
        range txn    [11, request_id, client_id, seq, [range compare...], [range op...], [range op...]]
      range compare  [key, range_end, target, result, operand]        etcd's compares: target 0 version, 1 create,
                                                                      2 mod, 3 value (operand bytes), 4 lease;
                                                                      result 0 ==, 1 >, 2 <, 3 !=
      range op       [kind, key, range_end, value, lease, flags, limit, nil | [compares, success, failure]]
                                                                      kind 0 range, 1 put, 2 delete range, 3 txn
      condition      [key, target, cmp, operand]                      operand by target: bytes (VALUE), int >= 0
                                                                      (VERSION, MOD_REVISION, CREATE_REVISION),
                                                                      bool (EXISTS), vector clock (VCLOCK)
      txn op         [op, key, value, delta, lease]                   (4 fields, from an older build: lease 0)
      vector clock   [[node, counter]...]                             node ids strictly increasing, all > 0;
                                                                      counters > 0 (the canonical form)
    result           [2, [tag, ...]]                                  what a command answered (session cache)
      key value      [1, key, value, create_revision, mod_revision, version, vector clock, [sibling...], lease]
                                                                      (lease left out when 0)
      sibling        [value, node, revision]
      put            [2, key value]                                   (a nested key value is untagged: the
      delete         [3, deleted, revision]                            7 fields without the 1)
      incr           [4, value, key value]
      txn            [5, succeeded, [nil | tagged result...], revision]  items: nil (a GET that found nothing), a
                                                                      tagged key value, put, delete, incr, error
      cond. failed   [6, condition, nil | key value]
      error          [7, kind, message]
      duplicate      [8]
      lease grant    [9, lease_id, ttl_s, stamp]
      lease revoke   [10, lease_id, revision, [key...]]               the keys it deleted
    value record     [2, value, create_revision, mod_revision, version, vector clock, [sibling...], lease]  one
                                                                      stored key (lease left out when 0)
    session record   [2, last_seq, last_active_ns, encoded result]                                   one session
    history event    [2, key, value record | nil]     one write of the history: a put (the key's value record as
                                                      ``kv`` stores it, bytes) or a delete (nil); the revision and
                                                      position are the record's key, not part of it

A command batch is validated column by column when it is homogeneous (every command a put, or every one a delete,
or every one an incr, without conditions: the common case) and command by command otherwise. Decoding checks
shapes and types only; limits (key and value sizes) and rules that depend on more than one field (``GT`` is only
for integer targets) belong to ``raftkv.kv.commands.validate``.

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
from itertools import chain, repeat
from operator import itemgetter
from typing import Any, NamedTuple, NoReturn, TypeGuard

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
    "CMD_ALARM",
    "CMD_COMPACT",
    "CMD_DELETE",
    "CMD_HASH_MARK",
    "CMD_INCR",
    "CMD_LEASE_GRANT",
    "CMD_LEASE_REVOKE",
    "CMD_PUT",
    "CMD_RANGE_TXN",
    "CMD_SIBLING_PUT",
    "CMD_TXN",
    "CMP_EQ",
    "CMP_GT",
    "CMP_LT",
    "CMP_NE",
    "FORMAT_VERSION",
    "RES_CONDITION_FAILED",
    "RES_DELETE",
    "RES_DUPLICATE",
    "RES_ERROR",
    "RES_INCR",
    "RES_KEY_VALUE",
    "RES_LEASE_GRANT",
    "RES_LEASE_REVOKE",
    "RES_PUT",
    "RES_TXN",
    "TARGET_CREATE_REVISION",
    "TARGET_EXISTS",
    "TARGET_MOD_REVISION",
    "TARGET_VALUE",
    "TARGET_VCLOCK",
    "TARGET_VERSION",
    "TXN_DELETE",
    "TXN_GET",
    "TXN_INCR",
    "TXN_PUT",
    "CodecError",
    "KVTypes",
    "MalformedCommand",
    "decode_command_batch",
    "decode_conf_state",
    "decode_entry",
    "decode_event",
    "decode_hard_state",
    "decode_messages",
    "decode_result",
    "decode_session_record",
    "decode_snapshot_header",
    "decode_snapshot_metadata",
    "decode_snapshot_record",
    "decode_snapshot_trailer",
    "decode_value_record",
    "encode_command_batch",
    "encode_conf_state",
    "encode_entry",
    "encode_event",
    "encode_hard_state",
    "encode_messages",
    "encode_result",
    "encode_session_record",
    "encode_snapshot_header",
    "encode_snapshot_metadata",
    "encode_snapshot_record",
    "encode_snapshot_trailer",
    "encode_value_record",
]

FORMAT_VERSION = 2
"""The version written by this build, and the only one it reads. 2: per-write revisions, siblings, and the
heartbeat's confirmed round (1 had log indexes in place of revisions)."""


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
_LEN14 = frozenset({14})
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
    """``[version, term, index, type, data]``."""
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
    """``[version, term, vote, commit]``."""
    return _pack((FORMAT_VERSION, *hs))


def decode_hard_state(b: bytes | bytearray | memoryview) -> HardState:
    t = _versioned(_unpack(b, "hard state"), "hard state", 4, _HARD_STATE_LAYOUT)
    if not (_is_index(t[1]) and _is_index(t[2]) and _is_index(t[3])):
        _fail("hard state", _HARD_STATE_LAYOUT, t)
    return _new(HardState, t[1:])


# -- ConfState ------------------------------------------------------------------------------------------------------


def encode_conf_state(cs: ConfState) -> bytes:
    """``[version, [voters...], [learners...]]``."""
    return _pack((FORMAT_VERSION, cs.voters, cs.learners))


def decode_conf_state(b: bytes | bytearray | memoryview) -> ConfState:
    t = _versioned(_unpack(b, "conf state"), "conf state", 3, "[version, voters, learners]")
    return _conf_state(t[1], t[2], "conf state")


# -- SnapshotMetadata -----------------------------------------------------------------------------------------------

_SNAP_META_LAYOUT = "[version, [voters, learners], index, term]"


def encode_snapshot_metadata(md: SnapshotMetadata) -> bytes:
    """``[version, [[voters...], [learners...]], index, term]``."""
    cs = md.conf_state
    return _pack((FORMAT_VERSION, (cs.voters, cs.learners), md.index, md.term))


def decode_snapshot_metadata(b: bytes | bytearray | memoryview) -> SnapshotMetadata:
    t = _versioned(_unpack(b, "snapshot metadata"), "snapshot metadata", 4, _SNAP_META_LAYOUT)
    _, cs, index, term = t
    if not (type(cs) is tuple and len(cs) == 2 and _is_index(index) and _is_index(term)):
        _fail("snapshot metadata", _SNAP_META_LAYOUT, t)
    return SnapshotMetadata(_conf_state(cs[0], cs[1], "snapshot metadata"), index, term)


# -- Snapshot files -----------------------------------------------------------------------------------------------

SNAPSHOT_FILE_TAG = "raftkv-snapshot"
"""The second field of a snapshot file's header: what the file is (the first is the format version)."""
_SNAP_HEADER_LAYOUT = '[version, "raftkv-snapshot", index, term, voters, learners, cluster_id, created_ns]'
_SNAP_RECORD_LAYOUT = "[table, key, value] (bytes)"
_SNAP_TRAILER_LAYOUT = "[version, records, crc32]"
_U32_MAX = (1 << 32) - 1


def encode_snapshot_header(index: int, term: int, conf_state: ConfState, cluster_id: str, created_ns: int) -> bytes:
    """``[version, "raftkv-snapshot", index, term, [voters...], [learners...], cluster_id, created_ns]``."""
    return _pack(
        (FORMAT_VERSION, SNAPSHOT_FILE_TAG, index, term, conf_state.voters, conf_state.learners, cluster_id, created_ns)
    )


def decode_snapshot_header(b: bytes | bytearray | memoryview) -> tuple[int, int, ConfState, str, int]:
    """Inverse of ``encode_snapshot_header``: ``(index, term, conf_state, cluster_id, created_ns)``."""
    t = _unpack(b, "snapshot header")
    if type(t) is tuple and len(t) > 1 and t[1] != SNAPSHOT_FILE_TAG:
        raise CodecError(f"not a raftkv snapshot file header (its tag is {t[1]!r:.50}, not {SNAPSHOT_FILE_TAG!r})")
    t = _versioned(t, "snapshot header", 8, _SNAP_HEADER_LAYOUT)
    _, _, index, term, voters, learners, cluster_id, created_ns = t
    if not (_is_index(index) and _is_index(term) and type(cluster_id) is str and _is_index(created_ns)):
        _fail("snapshot header", _SNAP_HEADER_LAYOUT, t)
    return index, term, _conf_state(voters, learners, "snapshot header"), cluster_id, created_ns


def encode_snapshot_record(table: bytes, key: bytes, value: bytes) -> bytes:
    """``[table, key, value]``. TypeError unless all three are ``bytes`` (a file that could not be read back is
    refused when written, not when installed)."""
    if type(table) is not bytes or type(key) is not bytes or type(value) is not bytes:
        raise TypeError(
            f"a snapshot record is three bytes objects, got {type(table).__name__}, "
            f"{type(key).__name__}, {type(value).__name__}"
        )
    return _pack((table, key, value))


def decode_snapshot_record(b: bytes | bytearray | memoryview) -> tuple[bytes, bytes, bytes]:
    """Inverse of ``encode_snapshot_record``: ``(table, key, value)``."""
    t = _unpack(b, "snapshot record")
    if type(t) is not tuple or len(t) != 3 or type(t[0]) is not bytes or type(t[1]) is not bytes:
        _fail("snapshot record", _SNAP_RECORD_LAYOUT, t)
    if type(t[2]) is not bytes:
        _fail("snapshot record", _SNAP_RECORD_LAYOUT, t)
    return t  # checked above: a tuple of three bytes


def encode_snapshot_trailer(records: int, crc32: int) -> bytes:
    """``[version, records, crc32]``: the count of data records and the CRC32 of every byte before the trailer."""
    return _pack((FORMAT_VERSION, records, crc32))


def decode_snapshot_trailer(b: bytes | bytearray | memoryview) -> tuple[int, int]:
    """Inverse of ``encode_snapshot_trailer``: ``(records, crc32)``."""
    t = _versioned(_unpack(b, "snapshot trailer"), "snapshot trailer", 3, _SNAP_TRAILER_LAYOUT)
    _, records, crc = t
    if not (_is_index(records) and _is_index(crc) and crc <= _U32_MAX):
        _fail("snapshot trailer", _SNAP_TRAILER_LAYOUT, t)
    return records, crc


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
    """``[version, [message...]]``: the whole batch in one ``pack()`` call, entries included."""
    batch = (FORMAT_VERSION, msgs if type(msgs) is tuple or type(msgs) is list else tuple(msgs))
    try:
        return _pack(batch)  # the common case: no snapshot anywhere, no Python callback
    except TypeError:
        pass  # a Snapshot (or something unencodable, which the hooked packer reports)
    with _message_packer_lock:
        out: bytes = _message_packer.pack(batch)
    return out


_MESSAGE_LAYOUT = (
    "[type, to, frm, term, log_term, index, entries, commit, reject, reject_hint, snapshot|nil, context, "
    "confirmed_round, confirmed_commit]"
)
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
        if set(map(len, msgs)) != _LEN14:
            bad = next(m for m in msgs if len(m) != _MESSAGE_FIELDS)
            _fail("message", _MESSAGE_LAYOUT, bad)
        cols = tuple(zip(*msgs, strict=True))
    except TypeError:  # an element without len(): not an array
        _fail("message", _MESSAGE_LAYOUT, msgs)
    mtypes, to, frm, term, log_term, index, ents, commit, reject, reject_hint, snaps, context, cround, ccommit = cols
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
        ("confirmed_round", cround),
        ("confirmed_commit", ccommit),
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
                (*m[:6], built, *m[7:10], None if snap is None else _decode_wire_snapshot(snap), *m[11:]),
            )
        )
    return out


# -- KV state machine: command batches, results, value and session records -------------------------------------
#
# The numbers below are the wire format; ``raftkv.kv.commands`` builds its IntEnums from them.

CMD_PUT = 1
CMD_DELETE = 2
CMD_INCR = 3
CMD_TXN = 4
CMD_SIBLING_PUT = 5
CMD_HASH_MARK = 6
CMD_ALARM = 7
CMD_COMPACT = 8
CMD_LEASE_GRANT = 9
CMD_LEASE_REVOKE = 10
CMD_RANGE_TXN = 11

RT_VERSION = 0
RT_CREATE = 1
RT_MOD = 2
RT_VALUE = 3
RT_LEASE = 4
"""A range compare's targets (etcd's CompareTarget numbering)."""
RR_EQUAL = 0
RR_GREATER = 1
RR_LESS = 2
RR_NOT_EQUAL = 3
"""A range compare's results (etcd's CompareResult numbering)."""
RO_RANGE = 0
RO_PUT = 1
RO_DELETE_RANGE = 2
RO_TXN = 3
"""A range txn's operations."""
RANGE_TXN_DEPTH = 8
"""How deeply range txns may nest."""

TARGET_VALUE = 0
TARGET_VERSION = 1
TARGET_MOD_REVISION = 2
TARGET_CREATE_REVISION = 3
TARGET_EXISTS = 4
TARGET_VCLOCK = 5

CMP_EQ = 0
CMP_NE = 1
CMP_GT = 2
CMP_LT = 3

TXN_GET = 0
TXN_PUT = 1
TXN_DELETE = 2
TXN_INCR = 3

RES_KEY_VALUE = 1
RES_PUT = 2
RES_DELETE = 3
RES_INCR = 4
RES_TXN = 5
RES_CONDITION_FAILED = 6
RES_ERROR = 7
RES_DUPLICATE = 8
RES_LEASE_GRANT = 9
RES_LEASE_REVOKE = 10

_CMPS = frozenset({CMP_EQ, CMP_NE, CMP_GT, CMP_LT})
_TXN_OPS = frozenset({TXN_GET, TXN_PUT, TXN_DELETE, TXN_INCR})
_INDEX_TARGETS = frozenset({TARGET_VERSION, TARGET_MOD_REVISION, TARGET_CREATE_REVISION})
_TUPLE_ONLY = frozenset({tuple})
_tail = itemgetter(slice(1, None))


class KVTypes(NamedTuple):
    """The classes the KV decoders build. Each is a tuple subclass (``NamedTuple``s, and the vector clock) whose
    items are exactly the fields of its layout; the decoders build them with ``tuple.__new__``, after checking
    every field, so no constructor code runs. ``raftkv.kv.commands`` supplies one instance of this."""

    put: type[tuple[Any, ...]]
    sibling_put: type[tuple[Any, ...]]
    hash_mark: type[tuple[Any, ...]]
    alarm: type[tuple[Any, ...]]
    compact: type[tuple[Any, ...]]
    lease_grant: type[tuple[Any, ...]]
    lease_revoke: type[tuple[Any, ...]]
    range_txn: type[tuple[Any, ...]]
    range_compare: type[tuple[Any, ...]]
    range_op: type[tuple[Any, ...]]
    delete: type[tuple[Any, ...]]
    incr: type[tuple[Any, ...]]
    txn: type[tuple[Any, ...]]
    condition: type[tuple[Any, ...]]
    txn_op: type[tuple[Any, ...]]
    vclock: type[tuple[Any, ...]]
    """Built from the canonical pairs (sorted by node id, positive ids and counters)."""
    key_value: type[tuple[Any, ...]]
    sibling: type[tuple[Any, ...]]
    put_result: type[tuple[Any, ...]]
    delete_result: type[tuple[Any, ...]]
    incr_result: type[tuple[Any, ...]]
    txn_result: type[tuple[Any, ...]]
    condition_failed_result: type[tuple[Any, ...]]
    error_result: type[tuple[Any, ...]]
    duplicate_result: type[tuple[Any, ...]]
    lease_grant_result: type[tuple[Any, ...]]
    lease_revoke_result: type[tuple[Any, ...]]


class MalformedCommand(CodecError):
    """One command of an otherwise well-formed batch that does not decode (``decode_command_batch(lenient=True)``
    puts it in the command's place). ``request_id`` is the command's own if it could be read, else 0."""

    def __init__(self, message: str, request_id: int = 0) -> None:
        super().__init__(message)
        self.request_id = request_id


_BATCH_LAYOUT = "[version, proposer, timestamp_ns, [command...]]"
_COMMAND_LAYOUTS = {
    CMD_PUT: "[1, request_id, client_id, seq, key, value, [condition...], lease]",
    CMD_DELETE: "[2, request_id, client_id, seq, key, [condition...]]",
    CMD_INCR: "[3, request_id, client_id, seq, key, delta]",
    CMD_TXN: "[4, request_id, client_id, seq, [condition...], [txn op...], [txn op...]]",
    CMD_SIBLING_PUT: "[5, request_id, client_id, seq, key, value, vector clock]",
    CMD_HASH_MARK: "[6, request_id, client_id, seq]",
    CMD_ALARM: "[7, request_id, client_id, seq, member, message]",
    CMD_COMPACT: "[8, request_id, client_id, seq, revision]",
    CMD_LEASE_GRANT: "[9, request_id, client_id, seq, lease_id, ttl_s]",
    CMD_LEASE_REVOKE: "[10, request_id, client_id, seq, lease_id, stamp]",
    CMD_RANGE_TXN: "[11, request_id, client_id, seq, [range compare...], [range op...], [range op...]]",
}
_RANGE_COMPARE_LAYOUT = "[key, range_end, target 0-4, result 0-3, operand (bytes for value, else int >= 0)]"
_RANGE_OP_LAYOUT = "[kind 0-3, key, range_end, value, lease, flags, limit, nil | [compares, success, failure]]"
_COLUMN_OPS = frozenset({CMD_PUT, CMD_DELETE, CMD_INCR})
"""The ops a homogeneous batch may take the column path for."""
_COMMAND_LENGTHS = {
    CMD_PUT: 8, CMD_DELETE: 6, CMD_INCR: 6, CMD_TXN: 7, CMD_SIBLING_PUT: 7, CMD_HASH_MARK: 4, CMD_ALARM: 6,
    CMD_COMPACT: 5, CMD_LEASE_GRANT: 6, CMD_LEASE_REVOKE: 6, CMD_RANGE_TXN: 7,
}
_OLD_PUT_LENGTH = 7
"""A put from a build before leases: no lease field (read as lease 0)."""
_CONDITION_LAYOUT = "[key, target, cmp, operand]"
_TXN_OP_LAYOUT = "[op, key, value, delta, lease]"
_CLOCK_LAYOUT = "[[node, counter]...] with node ids increasing and all values positive"
_KEY_VALUE_LAYOUT = "[key, value, create_revision, mod_revision, version, vclock, [sibling...], lease?]"
_SIBLING_LAYOUT = "[value, node, revision] with node > 0 and revision > 0"
_RESULT_LAYOUT = "[version, [tag, ...]]"
_VALUE_RECORD_LAYOUT = "[version, value, create_revision, mod_revision, version, vclock, [sibling...], lease?]"
_SESSION_LAYOUT = "[version, last_seq, last_active_ns, result]"
_EVENT_LAYOUT = "[version, key, value record | nil]"


def encode_command_batch(proposer: int, timestamp_ns: int, commands: Sequence[tuple[Any, ...]]) -> bytes:
    """``[version, proposer, timestamp_ns, [command...]]``. Each command is given in its wire form, a tuple starting
    with its ``CMD_*`` op (``raftkv.kv.commands.encode_batch`` builds them); ``NamedTuple`` fields (conditions,
    txn ops) and vector clocks are tuples already, so the whole batch is packed in one C call."""
    cmds = commands if type(commands) is list or type(commands) is tuple else list(commands)
    return _pack((FORMAT_VERSION, proposer, timestamp_ns, cmds))


def _clock(x: object, types: KVTypes) -> Any:
    """A canonical vector clock, or CodecError."""
    if type(x) is not tuple:
        _fail("vector clock", _CLOCK_LAYOUT, x)
    prev = 0
    for p in x:
        if type(p) is not tuple or len(p) != 2:
            _fail("vector clock", _CLOCK_LAYOUT, x)
        node, counter = p
        if type(node) is not int or type(counter) is not int or node <= prev or counter <= 0:
            _fail("vector clock", _CLOCK_LAYOUT, x)
        prev = node
    return _new(types.vclock, x)


def _condition(c: object, types: KVTypes) -> Any:
    if type(c) is not tuple or len(c) != 4:
        _fail("condition", _CONDITION_LAYOUT, c)
    key, target, cmp, operand = c
    if type(key) is not bytes or type(target) is not int or type(cmp) is not int or cmp not in _CMPS:
        _fail("condition", _CONDITION_LAYOUT, c)
    if target == TARGET_VALUE:
        ok = type(operand) is bytes
    elif target in _INDEX_TARGETS:
        ok = _is_index(operand)
    elif target == TARGET_EXISTS:
        ok = type(operand) is bool
    elif target == TARGET_VCLOCK:
        return _new(types.condition, (key, target, cmp, _clock(operand, types)))
    else:
        raise CodecError(f"malformed condition: unknown target {target}")
    if not ok:
        _fail("condition", f"{_CONDITION_LAYOUT} with an operand of the target's type", c)
    return _new(types.condition, c)


def _conditions(x: object, types: KVTypes) -> tuple[Any, ...]:
    if type(x) is not tuple:
        _fail("command", "an array of conditions", x)
    if not x:
        return x
    return tuple([_condition(c, types) for c in x])


def _txn_ops(x: object, types: KVTypes) -> tuple[Any, ...]:
    if type(x) is not tuple:
        _fail("txn", "an array of txn ops", x)
    old = False
    for o in x:
        if type(o) is not tuple or not 4 <= len(o) <= 5:
            _fail("txn op", _TXN_OP_LAYOUT, o)
        op, key, value, delta = o[:4]
        if not (type(op) is int and op in _TXN_OPS and type(key) is bytes and type(value) is bytes):
            _fail("txn op", _TXN_OP_LAYOUT, o)
        if type(delta) is not int or (len(o) == 5 and not _is_index(o[4])):
            _fail("txn op", _TXN_OP_LAYOUT, o)
        old = old or len(o) == 4
    if old:  # (from a build before leases)
        x = tuple([o if len(o) == 5 else (*o, 0) for o in x])
    return tuple(map(_new, repeat(types.txn_op, len(x)), x))


def _command(c: object, types: KVTypes) -> Any:
    """One command from its wire form (the slow, general path)."""
    if type(c) is not tuple or len(c) < 4:
        _fail("command", "[op, request_id, client_id, seq, ...]", c)
    op = c[0]
    if type(op) is not int or op not in _COMMAND_LENGTHS:
        raise MalformedCommand(f"malformed command: unknown op {op!r:.50}", c[1] if _is_index(c[1]) else 0)
    if op == CMD_PUT and len(c) == _OLD_PUT_LENGTH:
        c = (*c, 0)
    if len(c) != _COMMAND_LENGTHS[op] or not (_is_index(c[1]) and _is_index(c[2]) and _is_index(c[3])):
        _fail("command", _COMMAND_LAYOUTS[op], c)
    if op == CMD_PUT:
        if type(c[4]) is not bytes or type(c[5]) is not bytes or not _is_index(c[7]):
            _fail("put", _COMMAND_LAYOUTS[op], c)
        return _new(types.put, (*c[1:6], _conditions(c[6], types), c[7]))
    if op == CMD_DELETE:
        if type(c[4]) is not bytes:
            _fail("delete", _COMMAND_LAYOUTS[op], c)
        return _new(types.delete, (*c[1:5], _conditions(c[5], types)))
    if op == CMD_INCR:
        if type(c[4]) is not bytes or type(c[5]) is not int:
            _fail("incr", _COMMAND_LAYOUTS[op], c)
        return _new(types.incr, c[1:])
    if op == CMD_SIBLING_PUT:
        if type(c[4]) is not bytes or type(c[5]) is not bytes:
            _fail("sibling put", _COMMAND_LAYOUTS[op], c)
        return _new(types.sibling_put, (*c[1:6], _clock(c[6], types)))
    if op == CMD_HASH_MARK:
        return _new(types.hash_mark, c[1:])
    if op == CMD_ALARM:
        if not (_is_index(c[4]) and type(c[5]) is str):
            _fail("alarm", _COMMAND_LAYOUTS[op], c)
        return _new(types.alarm, c[1:])
    if op == CMD_COMPACT:
        if not _is_index(c[4]):
            _fail("compact", _COMMAND_LAYOUTS[op], c)
        return _new(types.compact, c[1:])
    if op == CMD_RANGE_TXN:
        body = _range_body((c[4], c[5], c[6]), types, 1)
        return _new(types.range_txn, (*c[1:4], *body))
    if op == CMD_LEASE_GRANT or op == CMD_LEASE_REVOKE:
        if not (_is_index(c[4]) and _is_index(c[5])):
            _fail("lease command", _COMMAND_LAYOUTS[op], c)
        return _new(types.lease_grant if op == CMD_LEASE_GRANT else types.lease_revoke, c[1:])
    return _new(types.txn, (*c[1:4], _conditions(c[4], types), _txn_ops(c[5], types), _txn_ops(c[6], types)))


def _range_compares(x: object, types: KVTypes) -> tuple[Any, ...]:
    if type(x) is not tuple:
        _fail("range txn", "an array of range compares", x)
    for c in x:
        if not (type(c) is tuple and len(c) == 5 and type(c[0]) is bytes and type(c[1]) is bytes
                and type(c[2]) is int and RT_VERSION <= c[2] <= RT_LEASE and type(c[3]) is int
                and RR_EQUAL <= c[3] <= RR_NOT_EQUAL):
            _fail("range compare", _RANGE_COMPARE_LAYOUT, c)
        if not (type(c[4]) is bytes if c[2] == RT_VALUE else _is_index(c[4])):
            _fail("range compare", _RANGE_COMPARE_LAYOUT, c)
    return tuple(map(_new, repeat(types.range_compare, len(x)), x))


def _range_ops(x: object, types: KVTypes, depth: int) -> tuple[Any, ...]:
    if type(x) is not tuple:
        _fail("range txn", "an array of range ops", x)
    out = []
    for o in x:
        if not (type(o) is tuple and len(o) == 8 and type(o[0]) is int and RO_RANGE <= o[0] <= RO_TXN
                and type(o[1]) is bytes and type(o[2]) is bytes and type(o[3]) is bytes and _is_index(o[4])
                and _is_index(o[5]) and _is_index(o[6])):
            _fail("range op", _RANGE_OP_LAYOUT, o)
        nested = o[7]
        if o[0] == RO_TXN:
            if type(nested) is not tuple or len(nested) != 3:
                _fail("range op", _RANGE_OP_LAYOUT + " (a txn op carries its body)", o)
            o = (*o[:7], _range_body(nested, types, depth + 1))
        elif nested is not None:
            _fail("range op", _RANGE_OP_LAYOUT + " (only a txn op carries a body)", o)
        out.append(_new(types.range_op, o))
    return tuple(out)


def _range_body(b: tuple[Any, ...], types: KVTypes, depth: int) -> tuple[Any, ...]:
    """``(compares, success, failure)`` of a range txn or a nested one."""
    if depth > RANGE_TXN_DEPTH:
        raise CodecError(f"malformed range txn: nested more than {RANGE_TXN_DEPTH} deep")
    return (_range_compares(b[0], types), _range_ops(b[1], types, depth), _range_ops(b[2], types, depth))


def _commands_by_column(cmds: tuple[Any, ...], types: KVTypes) -> list[Any] | None:
    """The fast path: a batch of puts only, deletes only or incrs only, without conditions, checked a column at a
    time (C-level passes, no per-field bytecode). None when the batch is not of that shape (or is malformed:
    then the general path finds and names the bad command)."""
    if set(map(type, cmds)) != _TUPLE_ONLY:
        return None
    lengths = set(map(len, cmds))
    if len(lengths) != 1:
        return None
    cols = tuple(zip(*cmds, strict=True))
    ops = cols[0] if cols else ()
    if not ops or set(map(type, ops)) != _INT or len(set(ops)) != 1:
        return None
    op = ops[0]
    if op not in _COLUMN_OPS or _COMMAND_LENGTHS.get(op) != lengths.pop():
        return None
    ints = (cols[1], cols[2], cols[3])
    if any(set(map(type, col)) != _INT or min(col) < 0 for col in ints):
        return None
    if set(map(type, cols[4])) != _BYTES:
        return None
    if op == CMD_PUT:
        if set(map(type, cols[5])) != _BYTES or any(cols[6]) or set(map(type, cols[6])) != _TUPLE_ONLY:
            return None
        if set(map(type, cols[7])) != _INT or min(cols[7]) < 0:
            return None
        cls = types.put
    elif op == CMD_DELETE:
        if any(cols[5]) or set(map(type, cols[5])) != _TUPLE_ONLY:
            return None
        cls = types.delete
    else:
        if set(map(type, cols[5])) != _INT:
            return None
        cls = types.incr
    return list(map(_new, repeat(cls, len(cmds)), map(_tail, cmds)))


def _command_or_error(c: object, types: KVTypes) -> Any:
    try:
        return _command(c, types)
    except MalformedCommand as exc:
        return exc
    except CodecError as exc:
        rid = c[1] if type(c) is tuple and len(c) > 1 and _is_index(c[1]) else 0
        return MalformedCommand(str(exc), rid)


def decode_command_batch(
    b: bytes | bytearray | memoryview, types: KVTypes, *, lenient: bool = False
) -> tuple[int, int, list[Any]]:
    """Inverse of ``encode_command_batch``: ``(proposer, timestamp_ns, commands)`` with the commands built from
    ``types``. Raises CodecError unless ``b`` is exactly one valid batch; with ``lenient=True`` only the envelope
    must be valid, and each command that does not decode is replaced by a ``MalformedCommand`` (an exception
    instance, returned, not raised) so the rest of the batch can still be applied."""
    batch = _versioned(_unpack(b, "command batch"), "command batch", 4, _BATCH_LAYOUT)
    _, proposer, timestamp_ns, cmds = batch
    if not (type(proposer) is int and proposer > 0 and _is_index(timestamp_ns) and type(cmds) is tuple):
        _fail("command batch", _BATCH_LAYOUT + " with proposer > 0", batch)
    if not cmds:
        return proposer, timestamp_ns, []
    fast = _commands_by_column(cmds, types)
    if fast is not None:
        return proposer, timestamp_ns, fast
    if lenient:
        return proposer, timestamp_ns, [_command_or_error(c, types) for c in cmds]
    return proposer, timestamp_ns, [_command(c, types) for c in cmds]


def encode_result(wire: tuple[Any, ...]) -> bytes:
    """``[version, [tag, ...]]``: ``wire`` is the result's tagged form (``raftkv.kv.commands.encode_result`` builds
    it)."""
    return _pack((FORMAT_VERSION, wire))


def _siblings(x: object, types: KVTypes, what: str) -> tuple[Any, ...]:
    if type(x) is not tuple:
        _fail(what, "an array of siblings", x)
    if not x:
        return x
    for s in x:
        if not (type(s) is tuple and len(s) == 3 and type(s[0]) is bytes and type(s[1]) is int and s[1] > 0
                and type(s[2]) is int and s[2] > 0):
            _fail("sibling", _SIBLING_LAYOUT, s)
    return tuple(map(_new, repeat(types.sibling, len(x)), x))


def _key_value(x: object, types: KVTypes) -> Any:
    if type(x) is not tuple or not 7 <= len(x) <= 8:
        _fail("key value", _KEY_VALUE_LAYOUT, x)
    key, value, create_revision, mod_revision, version, clock, siblings = x[:7]
    lease = x[7] if len(x) == 8 else 0
    if not (type(key) is bytes and type(value) is bytes and _is_index(create_revision) and _is_index(mod_revision)):
        _fail("key value", _KEY_VALUE_LAYOUT, x)
    if not (_is_index(version) and _is_index(lease)):
        _fail("key value", _KEY_VALUE_LAYOUT, x)
    return _new(
        types.key_value,
        (key, value, create_revision, mod_revision, version, _clock(clock, types), _siblings(siblings, types, "key"),
         lease),
    )


def _result(r: object, types: KVTypes, nested: bool) -> Any:
    """A tagged result. ``nested``: an item of a txn result (may be a key value or nil, may not be a txn)."""
    if nested and r is None:
        return None
    if type(r) is not tuple or not r or type(r[0]) is not int:
        _fail("result", "[tag, ...]", r)
    tag = r[0]
    n = len(r)
    if tag == RES_PUT and n == 2:
        return _new(types.put_result, (_key_value(r[1], types),))
    if tag == RES_DELETE and n == 3 and type(r[1]) is bool and _is_index(r[2]):
        return _new(types.delete_result, r[1:])
    if tag == RES_INCR and n == 3 and type(r[1]) is int:
        return _new(types.incr_result, (r[1], _key_value(r[2], types)))
    if tag == RES_ERROR and n == 3 and type(r[1]) is str and type(r[2]) is str:
        return _new(types.error_result, r[1:])
    if nested:
        if tag == RES_KEY_VALUE:
            return _key_value(r[1:], types)
    elif tag == RES_TXN and n == 4 and type(r[1]) is bool and type(r[2]) is tuple and _is_index(r[3]):
        return _new(types.txn_result, (r[1], tuple([_result(x, types, True) for x in r[2]]), r[3]))
    elif tag == RES_CONDITION_FAILED and n == 3:
        current = None if r[2] is None else _key_value(r[2], types)
        return _new(types.condition_failed_result, (_condition(r[1], types), current))
    elif tag == RES_DUPLICATE and n == 1:
        return _new(types.duplicate_result, ())
    elif tag == RES_LEASE_GRANT and n == 4 and _is_index(r[1]) and _is_index(r[2]) and _is_index(r[3]):
        return _new(types.lease_grant_result, r[1:])
    elif (tag == RES_LEASE_REVOKE and n == 4 and _is_index(r[1]) and _is_index(r[2]) and type(r[3]) is tuple
          and set(map(type, r[3])) <= _BYTES):
        return _new(types.lease_revoke_result, r[1:])
    _fail("txn result item" if nested else "result", "one of the result layouts", r)


def decode_result(b: bytes | bytearray | memoryview, types: KVTypes) -> Any:
    """Inverse of ``encode_result``, built from ``types``. Raises CodecError unless ``b`` is exactly one result."""
    t = _versioned(_unpack(b, "result"), "result", 2, _RESULT_LAYOUT)
    return _result(t[1], types, False)


def encode_value_record(
    value: bytes, create_revision: int, mod_revision: int, version: int, vclock: object, siblings: object = (),
    lease: int = 0,
) -> bytes:
    """``[2, value, create_revision, mod_revision, version, vclock, [sibling...], lease]``: one stored key
    (``vclock`` is a tuple of pairs, each sibling a ``(value, node, revision)`` tuple; the lease is left out when
    0, so a key without one is stored as before leases)."""
    if lease:
        return _pack((FORMAT_VERSION, value, create_revision, mod_revision, version, vclock, siblings, lease))
    return _pack((FORMAT_VERSION, value, create_revision, mod_revision, version, vclock, siblings))


def decode_value_record(
    b: bytes | bytearray | memoryview, types: KVTypes
) -> tuple[bytes, int, int, int, Any, tuple[Any, ...], int]:
    """Inverse of ``encode_value_record``: ``(value, create_revision, mod_revision, version, vclock, siblings,
    lease)``."""
    t = _unpack(b, "value record")
    if type(t) is tuple and len(t) == 8:
        lease = t[7]
        t = t[:7]
        if not _is_index(lease) or not lease:
            _fail("value record", _VALUE_RECORD_LAYOUT, t)
    else:
        lease = 0
    t = _versioned(t, "value record", 7, _VALUE_RECORD_LAYOUT)
    _, value, create_revision, mod_revision, version, clock, siblings = t
    if not (type(value) is bytes and _is_index(create_revision) and _is_index(mod_revision) and _is_index(version)):
        _fail("value record", _VALUE_RECORD_LAYOUT, t)
    return (value, create_revision, mod_revision, version, _clock(clock, types), _siblings(siblings, types, "value"),
            lease)


def encode_session_record(last_seq: int, last_active_ns: int, result: bytes) -> bytes:
    """``[version, last_seq, last_active_ns, result]``: ``result`` is an ``encode_result`` encoding, kept as bytes."""
    return _pack((FORMAT_VERSION, last_seq, last_active_ns, result))


def decode_session_record(b: bytes | bytearray | memoryview) -> tuple[int, int, bytes]:
    """Inverse of ``encode_session_record``: ``(last_seq, last_active_ns, result)``."""
    t = _versioned(_unpack(b, "session record"), "session record", 4, _SESSION_LAYOUT)
    _, last_seq, last_active_ns, result = t
    if not (_is_index(last_seq) and _is_index(last_active_ns) and type(result) is bytes):
        _fail("session record", _SESSION_LAYOUT, t)
    return last_seq, last_active_ns, result


def encode_event(key: bytes, record: bytes | None) -> bytes:
    """``[version, key, value record | nil]``: one event of the history, a put (``record`` is the value record the
    put stored, as ``encode_value_record`` made it) or a delete (``record`` None)."""
    return _pack((FORMAT_VERSION, key, record))


def decode_event(b: bytes | bytearray | memoryview) -> tuple[bytes, bytes | None]:
    """Inverse of ``encode_event``: ``(key, value record or None)``; the value record stays encoded (decode it with
    ``decode_value_record`` when it is needed: compaction and hashing only look at the key)."""
    t = _versioned(_unpack(b, "history event"), "history event", 3, _EVENT_LAYOUT)
    _, key, record = t
    if type(key) is not bytes or not (record is None or type(record) is bytes):
        _fail("history event", _EVENT_LAYOUT, t)
    return key, record
