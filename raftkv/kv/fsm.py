"""``KVStateMachine``: the replicated key-value state machine that committed log entries are applied to.

Determinism (the property everything else rests on): applying the same entries in the same order yields the same
state on every replica, byte for byte, but for one thing: how far the physical removal of a compaction has got
(see "Compaction" below), which nothing a client can see depends on, and which the state hash leaves out. ``apply``
depends only on each entry's index and bytes, on the state the previous entries produced, and on settings every
replica must share (``Limits``, ``session_ttl_s``, ``max_sessions``). It reads no clock (time is the leader-written
batch timestamp), no random source, no node id (a write advances the vector clock component of the batch's
PROPOSER), and iterates only over sorted tables. Its answers never depend on the physical progress of a compaction.

Revisions: the store keeps one cluster-wide counter, ``revision``, persisted with the data. Every command that
changes the store (a put, an incr, a delete that deleted, a txn whose branch wrote anything: a txn is one unit) takes
the next revision, at apply time, in log order; a command that changes nothing (a failed condition, a delete of a
missing key, a read-only txn, an invalid command, a retried one answered from its session) takes none. So a revision
is never reused and strictly increases with every change, and several commands in one log entry (which share its
index) get one revision each. A key's ``mod_revision`` is the revision of its last write, ``create_revision`` that
of the write that created it: a condition ``mod_revision == N`` holds only if no write touched the key since the
write that gave it N. The applied log index is a different number: a session token (``min_index``), not a version.

Storage: the tables of ``DB_NAMES`` behind the ``KVBackend`` protocol and the history's key index behind
``KeyIndex``, either LMDB databases in the log store's environment (production: the data, the session table and the
applied index change in the same transaction as the Raft log) or ``DictBackend``s and a ``DictKeyIndex`` (tests and
simulations)::

    kv               key -> encode_value_record(value, create_revision, mod_revision, version, vclock, siblings)
    history          revision (u64 BE) + sub (u32 BE) -> encode_event(key, value record | None): every write
    key_history      storage_key(key) -> the 12-byte positions (revision + sub) of its events, ascending: an LMDB
                     dupsort, dupfixed database whose values carry a CRC32 after the position (``LmdbKeyIndex``)
    sessions         see raftkv.kv.sessions
    sessions_by_age  see raftkv.kv.sessions
    members          member id (u64 BE) -> its addresses and role (raftkv.kv.membership)
    members_removed  member id (u64 BE) -> b"": removed and not added again (peers refuse its messages)
    alarms           member id (u64 BE) -> UTF-8 text: that member's corruption alarm (a failed hash check)
    leases           lease id (u64 BE) -> ttl_s (u64 BE) + stamp (u64 BE): the leases granted and not ended
    lease_keys       lease id (u64 BE) + storage_key(key) -> key: the keys attached to each lease
    fsm_meta         b"applied" -> u64 (8 bytes BE): the last entry index applied; entries at or below are skipped
                     b"now_ns"  -> u64: the logical clock, max of the batch timestamps seen (session expiry)
                     b"revision" -> u64: the revision of the last change (0: none yet)
                     b"compacted" -> u64: the compacted revision (0: none)
                     b"lease_stamp" -> u64: the stamp of the last lease grant (every grant takes the next)
                     b"compact_next" -> 12 bytes: while a compaction's physical removal is under way, the position
                     of the next event to examine (absent otherwise)

History: every write is also an event in ``history``, at its command's revision and its place among the command's
writes (``sub``: 0, 1, ... in the order a txn makes them; a txn that writes a key twice makes two events). A put's
event holds the key and the very value record ``kv`` got; a delete's the key and nil. Events are appended (their
positions only grow) and ``key_history`` lists each key's positions. So the store right after revision R holds, for
each key, what its newest event at or below R says (absent if none, or a delete): ``get``/``range`` with ``rev`` read
that (one floor lookup in ``key_history`` and one event per key; a range walks ``key_history``'s keys in exact byte
order as ``kv``'s, long keys included), and ``events`` replays ``history`` from a revision in order.

Compaction (``Compact(revision)``, through the log, so every replica compacts at the same revision C at the same log
position): its logical effect is at once (``compacted`` set: reads below C are refused, ``events`` from C or below
too, since the events of C itself are no longer all kept). Physically, history keeps for each key its newest event
at or below C if that is a put (reads at C or later may need it), and every event after C; the rest goes, in bounded
steps: at most ``compact_budget`` events examined at the end of each ``apply`` call, in its transaction, and as many
as asked by ``compact_step`` (an idle writer). A step examines events from ``compact_next`` on in order; every key
keeps at most one event below that point, the put a read at C may need, so the event examined supersedes it
(removed), and is removed itself if it is a delete. The work is the events written since the previous compaction,
not the survivors. Apply call boundaries differ between replicas, so physical progress does too.

The hash rule: ``state_hash``/``checksum`` cover the logical state only, the records of ``iter_state`` less
``fsm_meta``'s ``compact_next`` and less the history events that physical compaction has yet to remove, computed
from what is stored: every event after C, and of those at or below C each key's newest, if a put (``key_history``
says which is newest). Replicas that applied the same entries have the same logical state, so the same hash however
far each got; a logical difference (a value, a key, a past version still readable, the compacted revision) is in
the hashed records, so it changes the hash. Snapshots (``iter_state``, ``snapshot_items``) carry the history as
stored, ``compact_next`` included: a node restored from one goes on with the compaction; ``key_history`` is derived
from ``history`` and rebuilt on restore, so snapshots do not carry it.

Long keys: LMDB keys are at most 511 bytes, user keys up to ``commands.MAX_KEY_BYTES`` (4 KiB). A key of at most
``SHORT_KEY_MAX`` (479) bytes is stored as itself; a longer one under its first ``LONG_KEY_PREFIX`` (447) bytes, a
0xff marker and the SHA-256 of the whole key (480 bytes: no short key has that length, so the mapping is
injective), with the whole key stored in front of its value record (``KeyMappingBackend``). Iteration restores exact
byte order by sorting each run of long keys that share their first 447 bytes (such runs are contiguous).

Retry safety: ``LmdbLogStore.write(apply=...)`` may run ``apply`` more than once (it aborts and retries after
growing the map). ``apply`` therefore keeps nothing in memory between calls: everything it reads or changes,
including the applied index, the logical clock and the revision, goes through the transaction it is given.

Leases (``LeaseGrant``, ``LeaseRevoke``): the state machine records leases and the keys attached to them; it
keeps no time. When a lease ends is decided by the leader (``raftkv.lessor``), which proposes a ``LeaseRevoke``
naming the grant's stamp; a revoke deletes every attached key in one revision (one revision for all of them,
with an event each) and forgets the lease. A put attaches its key to the put's lease (detaching it from the one
it had; a put without a lease detaches it); an incr and a sibling put keep the key's lease; a delete detaches it.
A write naming a lease that does not exist is refused (``lease-not-found``), a txn as a whole.

Siblings (``SiblingPut``): a key may hold several concurrent values when writers that had not seen each other's
writes ask to keep them. Each value is named by its dot ``(proposer, revision)``; the key's vector clock holds, per
node, the revision of its last write, so it covers every dot. A sibling put with context ``c`` replaces the values
whose dot ``c`` covers and keeps the others beside the new one (newest first); any other write replaces them all.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, NamedTuple, Protocol

import lmdb

from raftkv.codec import CodecError, decode_event, decode_session_record, encode_event, encode_value_record
from raftkv.errors import Compacted, DataCorruption, InvalidArgument, quoted
from raftkv.raft.core import conf_state_after
from raftkv.raft.types import ConfChangeType, ConfState, Entry, EntryType

from .commands import (
    MAX_KEY_BYTES,
    MAX_LEASE_ID,
    MAX_OPS,
    MAX_SIBLINGS,
    MAX_VALUE_BYTES,
    Alarm,
    CmpOp,
    Command,
    Compact,
    CompactResult,
    Condition,
    ConditionFailedResult,
    Delete,
    DeleteResult,
    ErrorResult,
    Event,
    EventType,
    HashMark,
    Incr,
    IncrResult,
    InvalidCommand,
    KeyValue,
    LeaseGrant,
    LeaseGrantResult,
    LeaseRevoke,
    LeaseRevokeResult,
    Limits,
    NoteResult,
    Put,
    PutResult,
    RangeCompare,
    RangeDelete,
    RangeFlag,
    RangeOp,
    RangeOpKind,
    RangePut,
    RangeRead,
    RangeResultOp,
    RangeTarget,
    RangeTxn,
    RangeTxnResult,
    Result,
    Sibling,
    SiblingPut,
    Target,
    Txn,
    TxnOp,
    TxnOpResult,
    TxnOpType,
    TxnResult,
    decode_batch_lenient,
    decode_value,
    validate,
)
from .membership import MemberInfo, decode_change, decode_member, encode_member
from .sessions import SessionRecord, SessionTable
from .vclock import EMPTY_CLOCK

__all__ = [
    "DB_NAMES",
    "Applied",
    "DictBackend",
    "DictKeyIndex",
    "FSMStore",
    "HistoryBackend",
    "KVBackend",
    "KVStateMachine",
    "KeyIndex",
    "LmdbBackend",
    "LmdbKeyIndex",
    "MemberChangeResult",
]

DB_KV = b"kv"
DB_SESSIONS = b"sessions"
DB_SESSIONS_BY_AGE = b"sessions_by_age"
DB_META = b"fsm_meta"
DB_MEMBERS = b"members"
DB_REMOVED = b"members_removed"
DB_ALARMS = b"alarms"
DB_HISTORY = b"history"
DB_LEASES = b"leases"
DB_LEASE_KEYS = b"lease_keys"
DB_NAMES = (
    DB_META, DB_HISTORY, DB_KV, DB_SESSIONS, DB_SESSIONS_BY_AGE, DB_MEMBERS, DB_REMOVED, DB_ALARMS, DB_LEASES,
    DB_LEASE_KEYS,
)
"""The state machine's tables, in the order of ``snapshot_items``. (Not the key index ``key_history``: it is
derived from ``history``, rebuilt on restore, so snapshots do not carry it.)"""
DB_KEY_HISTORY = b"key_history"

_M_APPLIED = b"applied"
_M_NOW = b"now_ns"
_M_REVISION = b"revision"
_M_COMPACTED = b"compacted"
_M_COMPACT_NEXT = b"compact_next"
_M_LEASE_STAMP = b"lease_stamp"
_LEASE = struct.Struct(">QQ")
"""A lease record: its TTL in seconds, its grant's stamp."""
_LEASE_NOT_FOUND = "lease-not-found"
_U64 = struct.Struct(">Q")
_POS = struct.Struct(">QI")
"""An event's position in the history: its revision (u64 BE), then its sub (u32 BE), 12 bytes."""
_COMPACT_BUDGET = 1000
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_DECIMAL = re.compile(rb"-?[0-9]{1,19}")
_INVALID = "invalid-argument"
_SESSIONLESS = frozenset({HashMark, Alarm, Compact})
"""The commands applied without a session (``KVStateMachine._apply_note``)."""


class KVBackend(Protocol):
    """A sorted byte-string map: one table of the state machine."""

    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None:
        """Remove ``key`` if present (no error if absent)."""

    def iter_from(self, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` for every key >= ``start``, in ascending byte order. Do not change the table while
        iterating (collect first)."""

    def count(self) -> int:
        """Number of keys (O(1))."""

    def clear(self) -> None: ...


class HistoryBackend(KVBackend, Protocol):
    """The history table: a ``KVBackend`` whose writes come in key order."""

    def append(self, key: bytes, value: bytes) -> None:
        """Put ``key``, greater than every key of the table (ValueError otherwise)."""


class DictBackend:
    """An in-memory ``KVBackend``: a dict plus a sorted key list (inserts are O(n): for tests and simulations)."""

    __slots__ = ("_data", "_keys")

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        if key not in self._data:
            self._keys.insert(bisect_left(self._keys, key), key)
        self._data[key] = value

    def delete(self, key: bytes) -> None:
        if self._data.pop(key, None) is not None:
            del self._keys[bisect_left(self._keys, key)]

    def append(self, key: bytes, value: bytes) -> None:
        keys = self._keys
        if keys and key <= keys[-1]:
            raise ValueError(f"{key!r} is not above every key of the table")
        keys.append(key)
        self._data[key] = value

    def iter_from(self, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        keys = self._keys
        i = bisect_left(keys, start)
        while i < len(keys):
            key = keys[i]
            yield key, self._data[key]
            # Stay correct if the caller changed the table meanwhile: continue after ``key``.
            i = i + 1 if i < len(keys) and keys[i] == key else bisect_right(keys, key)

    def count(self) -> int:
        return len(self._keys)

    def clear(self) -> None:
        self._data.clear()
        self._keys.clear()


_CRC = struct.Struct(">I")
_crc_of = _CRC.unpack_from
_crc32 = zlib.crc32


def seal(key: bytes, value: bytes) -> bytes:
    """A record as stored in LMDB: the CRC32 of key and value (4 bytes, big-endian), then the value."""
    return _CRC.pack(_crc32(value, _crc32(key))) + value


def unseal(table: bytes, key: bytes, raw: bytes) -> bytes:
    """The value of a stored record, after checking it: DataCorruption if the checksum does not match (a bit flip,
    a torn or overwritten page, a record edited by hand)."""
    value = raw[4:]
    if len(raw) < 4 or _crc_of(raw)[0] != _crc32(value, _crc32(key)):
        raise DataCorruption(
            f"the state machine's record {quoted(key, 64)} in table {table.decode()!r} does not match its checksum"
        )
    return value


LMDB_DAMAGE: tuple[type[lmdb.Error], ...] = (
    lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.BadTxnError, lmdb.InvalidError, lmdb.PanicError,
    lmdb.ProblemError, lmdb.DiskError, lmdb.BadChecksumError,
)
"""The LMDB errors that mean its files are damaged (not a full map or disk, which the store handles)."""


def _lmdb_failure(table: bytes, exc: lmdb.Error) -> DataCorruption:
    return DataCorruption(f"LMDB cannot read table {table.decode()!r}: {exc}")


class LmdbBackend:
    """A ``KVBackend`` over one LMDB database, inside a transaction owned by the caller (a write transaction in
    ``apply``, a read transaction from ``LmdbLogStore.read_txn`` for reads). The transaction must not use
    ``buffers=True``: values are returned as ``bytes``.

    Every record is stored sealed (``seal``: a CRC32 over key and value in front of the value) and checked when it is
    read (``unseal``), so damaged state is never served, applied on or put into a snapshot: reading it raises
    DataCorruption, as does an LMDB error while reading (a damaged page). Writes are not wrapped: the store turns
    their LMDB errors into its own (a full map grows, a full disk makes the node read-only)."""

    __slots__ = ("_db", "_name", "_txn")

    def __init__(self, txn: lmdb.Transaction[Any], db: Any, name: bytes = b"?") -> None:
        self._txn = txn
        self._db = db
        self._name = name

    def get(self, key: bytes) -> bytes | None:
        try:
            raw: bytes | None = self._txn.get(key, db=self._db)
        except LMDB_DAMAGE as exc:
            raise _lmdb_failure(self._name, exc) from exc
        return None if raw is None else unseal(self._name, key, raw)

    def put(self, key: bytes, value: bytes) -> None:
        self._txn.put(key, seal(key, value), db=self._db)

    def append(self, key: bytes, value: bytes) -> None:
        """``put`` in LMDB's append mode (no search; pages are left full, not split in half)."""
        if not self._txn.put(key, seal(key, value), append=True, db=self._db):
            raise ValueError(f"{key!r} is not above every key of table {self._name.decode()!r}")

    def delete(self, key: bytes) -> None:
        self._txn.delete(key, db=self._db)

    def iter_from(self, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        name = self._name
        try:
            cur = self._txn.cursor(self._db)
            found = cur.set_range(start) if start else cur.first()
            if found:
                for key, raw in cur.iternext():
                    yield key, unseal(name, key, raw)
        except LMDB_DAMAGE as exc:
            raise _lmdb_failure(name, exc) from exc

    def count(self) -> int:
        return self._txn.stat(self._db)["entries"]

    def clear(self) -> None:
        self._txn.drop(self._db, delete=False)


SHORT_KEY_MAX = 479
LONG_KEY_PREFIX = 447
_LEN = struct.Struct(">I")


def storage_key(key: bytes) -> bytes:
    """The LMDB key that stores user ``key`` (see the module docstring)."""
    if len(key) <= SHORT_KEY_MAX:
        return key
    return key[:LONG_KEY_PREFIX] + b"\xff" + hashlib.sha256(key).digest()


class KeyMappingBackend:
    """Wraps the LMDB backend of the key-value table so user keys longer than LMDB allows can be stored."""

    __slots__ = ("_b",)

    def __init__(self, backend: KVBackend) -> None:
        self._b = backend

    def get(self, key: bytes) -> bytes | None:
        sk = storage_key(key)
        raw = self._b.get(sk)
        if raw is None or sk is key:
            return raw
        full, value = _unwrap(raw)
        return value if full == key else None  # a SHA-256 collision would land here: treat as absent

    def put(self, key: bytes, value: bytes) -> None:
        sk = storage_key(key)
        self._b.put(sk, value if sk is key else _LEN.pack(len(key)) + key + value)

    def delete(self, key: bytes) -> None:
        self._b.delete(storage_key(key))

    def iter_from(self, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Keys >= ``start`` in exact byte order (see ``_exact_order``)."""
        return _exact_order(self._b.iter_from(_seek_key(start)), start)

    def count(self) -> int:
        return self._b.count()

    def clear(self) -> None:
        self._b.clear()


def _seek_key(start: bytes) -> bytes:
    """Where to start reading storage keys for the user keys >= ``start``."""
    return start if len(start) <= LONG_KEY_PREFIX else start[:LONG_KEY_PREFIX]


def _exact_order(stored: Iterable[tuple[bytes, bytes]], start: bytes) -> Iterator[tuple[bytes, bytes]]:
    """``(user key, value)`` for every user key >= ``start`` in exact byte order, from ``(storage key, stored
    value)`` pairs in storage key order (from ``_seek_key(start)`` on), a long key's value wrapped with its whole
    key in front (``_wrap``). Every stored key longer than LONG_KEY_PREFIX that shares one LONG_KEY_PREFIX-byte
    prefix lies in one contiguous run (hashed ones in hash order): such a run is read whole, sorted by the user key
    and filtered. Short keys, the common case, stream through untouched."""
    group: list[tuple[bytes, bytes]] = []
    gprefix = b""
    for sk, raw in stored:
        if len(sk) > LONG_KEY_PREFIX:
            p = sk[:LONG_KEY_PREFIX]
            if group and p != gprefix:
                yield from _sorted_from(group, start)
                group = []
            gprefix = p
            group.append(_unwrap(raw) if len(sk) > SHORT_KEY_MAX else (sk, raw))
            continue
        if group:
            yield from _sorted_from(group, start)
            group = []
        if sk >= start:
            yield sk, raw
    if group:
        yield from _sorted_from(group, start)


def _sorted_from(group: list[tuple[bytes, bytes]], start: bytes) -> Iterator[tuple[bytes, bytes]]:
    group.sort()
    return (kv for kv in group if kv[0] >= start)


def _wrap(key: bytes, value: bytes) -> bytes:
    return _LEN.pack(len(key)) + key + value


def _unwrap(raw: bytes) -> tuple[bytes, bytes]:
    n = _LEN.unpack_from(raw)[0]
    return raw[4 : 4 + n], raw[4 + n :]


class KeyIndex(Protocol):
    """The history's index by key: for each storage key (``storage_key`` of a user key), the positions (``_POS``:
    revision and sub, 12 bytes) of its events, ascending. One per state machine: ``LmdbKeyIndex`` (production),
    ``DictKeyIndex`` (tests and simulations); both pass one conformance test."""

    def add(self, skey: bytes, pos: bytes) -> None:
        """Add ``pos`` to the positions of ``skey`` (no change if there)."""

    def remove(self, skey: bytes, pos: bytes) -> None:
        """Remove ``pos`` from the positions of ``skey`` (no error if absent)."""

    def before(self, skey: bytes, pos: bytes) -> bytes | None:
        """The greatest position of ``skey`` below ``pos`` (None: there is none)."""

    def after(self, skey: bytes, pos: bytes) -> bytes | None:
        """The least position of ``skey`` above ``pos`` (None: there is none)."""

    def keys_from(self, start: bytes) -> Iterator[bytes]:
        """Every storage key >= ``start`` that has a position, ascending. Do not change the index while
        iterating."""

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(storage key, position)``, in order."""

    def count(self) -> int:
        """Number of positions (O(1))."""

    def clear(self) -> None: ...


class DictKeyIndex:
    """An in-memory ``KeyIndex``: per key a sorted list of positions, and a sorted key list."""

    __slots__ = ("_keys", "_n", "_pos")

    def __init__(self) -> None:
        self._pos: dict[bytes, list[bytes]] = {}
        self._keys: list[bytes] = []
        self._n = 0

    def add(self, skey: bytes, pos: bytes) -> None:
        held = self._pos.get(skey)
        if held is None:
            self._pos[skey] = [pos]
            self._keys.insert(bisect_left(self._keys, skey), skey)
        elif pos > held[-1]:
            held.append(pos)  # the common case: a new event is the key's newest
        else:
            i = bisect_left(held, pos)
            if held[i] == pos:
                return
            held.insert(i, pos)
        self._n += 1

    def remove(self, skey: bytes, pos: bytes) -> None:
        held = self._pos.get(skey)
        if held is None:
            return
        i = bisect_left(held, pos)
        if i == len(held) or held[i] != pos:
            return
        del held[i]
        self._n -= 1
        if not held:
            del self._pos[skey]
            del self._keys[bisect_left(self._keys, skey)]

    def before(self, skey: bytes, pos: bytes) -> bytes | None:
        held = self._pos.get(skey)
        if held is None:
            return None
        i = bisect_left(held, pos)
        return held[i - 1] if i else None

    def after(self, skey: bytes, pos: bytes) -> bytes | None:
        held = self._pos.get(skey)
        if held is None:
            return None
        i = bisect_right(held, pos)
        return held[i] if i < len(held) else None

    def keys_from(self, start: bytes) -> Iterator[bytes]:
        keys = self._keys
        i = bisect_left(keys, start)
        while i < len(keys):
            key = keys[i]
            yield key
            i = i + 1 if i < len(keys) and keys[i] == key else bisect_right(keys, key)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for skey in list(self._keys):
            for pos in list(self._pos.get(skey, ())):
                yield skey, pos

    def count(self) -> int:
        return self._n

    def clear(self) -> None:
        self._pos.clear()
        self._keys.clear()
        self._n = 0


_POS_LOW = b"\x00\x00\x00\x00"
_POS_HIGH = b"\xff\xff\xff\xff"


class LmdbKeyIndex:
    """The ``KeyIndex`` in an LMDB dupsort, dupfixed database (storage key -> its positions, sorted by LMDB), inside
    a transaction owned by the caller, as ``LmdbBackend``. Each value is the 12-byte position followed by the CRC32
    of storage key and position (16 bytes): the checksum comes last so values still sort by position, and a damaged
    value is found when read (DataCorruption), as ``unseal`` finds a damaged record."""

    __slots__ = ("_cur", "_db", "_txn")

    def __init__(self, txn: lmdb.Transaction[Any], db: Any) -> None:
        self._txn = txn
        self._db = db
        self._cur: lmdb.Cursor[Any] | None = None

    def _cursor(self) -> lmdb.Cursor[Any]:
        cur = self._cur
        if cur is None:
            cur = self._cur = self._txn.cursor(self._db)
        return cur

    @staticmethod
    def _value(skey: bytes, pos: bytes) -> bytes:
        return pos + _CRC.pack(_crc32(pos, _crc32(skey)))

    @staticmethod
    def _pos(skey: bytes, value: bytes) -> bytes:
        pos = value[:12]
        if len(value) != 16 or _crc_of(value, 12)[0] != _crc32(pos, _crc32(skey)):
            raise DataCorruption(
                f"the history index entry of {quoted(skey, 64)} in table 'key_history' does not match its checksum"
            )
        return pos

    def add(self, skey: bytes, pos: bytes) -> None:
        self._txn.put(skey, self._value(skey, pos), dupdata=True, db=self._db)

    def remove(self, skey: bytes, pos: bytes) -> None:
        self._txn.delete(skey, self._value(skey, pos), db=self._db)

    def before(self, skey: bytes, pos: bytes) -> bytes | None:
        try:
            cur = self._cursor()
            if cur.set_range_dup(skey, pos + _POS_LOW):  # the first value >= pos: step back from it
                found = cur.prev_dup()
            else:  # every value is below pos, or the key has none
                found = cur.set_key(skey) and cur.last_dup()
            return self._pos(skey, cur.value()) if found else None
        except LMDB_DAMAGE as exc:
            raise _lmdb_failure(DB_KEY_HISTORY, exc) from exc

    def after(self, skey: bytes, pos: bytes) -> bytes | None:
        try:
            cur = self._cursor()
            if not cur.set_range_dup(skey, pos + _POS_HIGH):
                return None
            if cur.value()[:12] == pos and not cur.next_dup():  # (pos itself, its checksum all ones)
                return None
            return self._pos(skey, cur.value())
        except LMDB_DAMAGE as exc:
            raise _lmdb_failure(DB_KEY_HISTORY, exc) from exc

    def keys_from(self, start: bytes) -> Iterator[bytes]:
        try:
            cur = self._txn.cursor(self._db)
            found = cur.set_range(start) if start else cur.first()
            while found:
                yield cur.key()
                found = cur.next_nodup()
        except LMDB_DAMAGE as exc:
            raise _lmdb_failure(DB_KEY_HISTORY, exc) from exc

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        try:
            cur = self._txn.cursor(self._db)
            if cur.first():
                for skey, value in cur.iternext():
                    yield skey, self._pos(skey, value)
        except LMDB_DAMAGE as exc:
            raise _lmdb_failure(DB_KEY_HISTORY, exc) from exc

    def count(self) -> int:
        return self._txn.stat(self._db)["entries"]

    def clear(self) -> None:
        self._txn.drop(self._db, delete=False)


class FSMStore(Protocol):
    """What the state machine needs from ``raftkv.storage.LmdbLogStore`` (a Protocol: kv may not import storage)."""

    env: lmdb.Environment

    def open_db(self, name: bytes, *, dupsort: bool = False, dupfixed: bool = False) -> Any: ...

    def read_txn(self, *, buffers: bool = False) -> AbstractContextManager[lmdb.Transaction[Any]]: ...


class MemberChangeResult(NamedTuple):
    """The answer to a membership change: whether it changed anything, and the membership afterwards."""

    changed: bool
    conf_state: ConfState
    message: str


def conf_state_of(members: KVBackend) -> ConfState:
    """The membership the member table describes."""
    voters: list[int] = []
    learners: list[int] = []
    for k, v in members.iter_from(b""):
        mid = _U64.unpack(k)[0]
        (learners if decode_member(mid, v).learner else voters).append(mid)
    return ConfState(tuple(voters), tuple(learners))


class Applied(NamedTuple):
    """The answer to one command: ``request_id`` of ``proposer`` (match it to the waiter) got ``result``.

    An entry whose data is not a batch at all yields one ``Applied`` with ``proposer`` and ``request_id`` 0 and an
    ``ErrorResult``: the proposer should fail every request it put in the entry at ``index``."""

    index: int  # type: ignore[assignment]  # shadows tuple.index; the Raft name wins (as in Entry)
    proposer: int
    request_id: int
    result: Result | MemberChangeResult


class _Tables(NamedTuple):
    """The tables of ``DB_NAMES``, in that order (``_named``), then the key index."""

    meta: KVBackend
    history: HistoryBackend
    kv: KVBackend
    sessions: KVBackend
    by_age: KVBackend
    members: KVBackend
    removed: KVBackend
    alarms: KVBackend
    leases: KVBackend
    lease_keys: KVBackend
    by_key: KeyIndex


def _named(t: _Tables) -> Iterator[tuple[bytes, KVBackend]]:
    """``(name, table)`` for every table of ``DB_NAMES`` (the key index apart)."""
    return zip(DB_NAMES, t[: len(DB_NAMES)], strict=True)  # type: ignore[arg-type]  # (the slice is all KVBackends)


def _get_u64(table: KVBackend, key: bytes) -> int:
    raw = table.get(key)
    return 0 if raw is None else int(_U64.unpack(raw)[0])


def _parse_int(value: bytes) -> int | None:
    """The integer an incr operates on: ASCII decimal in the signed 64-bit range, else None."""
    if not _DECIMAL.fullmatch(value):
        return None
    n = int(value)
    return n if _I64_MIN <= n <= _I64_MAX else None


class KVStateMachine:
    """The KV state machine. See the module docstring for the determinism and retry-safety invariants.

    With ``store`` (an ``LmdbLogStore``) the tables are LMDB databases in its environment, opened here; ``apply``
    takes the write transaction ``store.write(apply=...)`` passes, and reads run in their own short read
    transactions. With ``store=None`` the tables are ``DictBackend``s and ``apply`` takes ``txn=None``.

    Session expiry (``session_ttl_s``, ``max_sessions``) and the limits (``max_key_bytes``, ``max_value_bytes``,
    ``max_ops``: see ``commands.validate``) are part of the replicated semantics: every replica must use the same
    values. With LMDB, ``max_key_bytes`` may not exceed LMDB's maximum key size (511): ValueError otherwise.

    ``compact_budget`` is not: it bounds the physical compaction work (history events examined) that one ``apply``
    call does after its entries, and replicas may differ in it (see the module docstring)."""

    def __init__(
        self,
        store: FSMStore | None = None,
        *,
        session_ttl_s: int = 3600,
        max_sessions: int = 100_000,
        max_key_bytes: int = MAX_KEY_BYTES,
        max_value_bytes: int = MAX_VALUE_BYTES,
        max_ops: int = MAX_OPS,
        max_siblings: int = MAX_SIBLINGS,
        compact_budget: int = _COMPACT_BUDGET,
    ) -> None:
        if session_ttl_s <= 0 or max_sessions < 0:
            raise ValueError(f"need session_ttl_s > 0 and max_sessions >= 0, got {session_ttl_s}, {max_sessions}")
        if compact_budget < 1:
            raise ValueError(f"compact_budget must be at least 1, got {compact_budget}")
        self.compact_budget = compact_budget
        self.limits = Limits(max_key_bytes, max_value_bytes, max_ops, max_siblings)
        """Checked by ``commands.validate`` at apply time (commands beyond them get an ErrorResult)."""
        if max_key_bytes < 1 or max_value_bytes < 0 or max_ops < 0 or max_siblings < 1:
            raise ValueError(f"bad limits: {self.limits}")
        self.session_ttl_s = session_ttl_s
        self.max_sessions = max_sessions
        self._ttl_ns = session_ttl_s * 1_000_000_000
        self._store = store
        self.alarm_applied = False
        """Set when ``apply`` recorded a corruption alarm: a hint for the driver to look at ``alarms()`` (not state:
        a retried apply sets it again)."""
        self._dbs: tuple[Any, ...] = ()
        self._index_db: Any = None
        self._dicts: _Tables | None = None
        if store is None:
            self._dicts = _Tables._make([*(DictBackend() for _ in DB_NAMES), DictKeyIndex()])
        else:
            if store.env.max_key_size() < LONG_KEY_PREFIX + 33:
                raise ValueError(f"this LMDB build allows keys of only {store.env.max_key_size()} bytes")
            self._dbs = tuple(store.open_db(name) for name in DB_NAMES)
            self._index_db = store.open_db(DB_KEY_HISTORY, dupsort=True, dupfixed=True)

    def __repr__(self) -> str:
        backend = "dict" if self._store is None else "lmdb"
        return (
            f"KVStateMachine({backend}, session_ttl_s={self.session_ttl_s}, max_sessions={self.max_sessions}, "
            f"limits={self.limits})"
        )

    def _tables(self, txn: lmdb.Transaction[Any] | None) -> _Tables:
        if self._dicts is not None:
            if txn is not None:
                raise ValueError("this state machine keeps its state in dicts: pass txn=None")
            return self._dicts
        if txn is None:
            raise ValueError("this state machine keeps its state in LMDB: pass the write transaction")
        meta, history, kv, sessions, by_age, members, removed, alarms, leases, lease_keys = (
            LmdbBackend(txn, db, name) for db, name in zip(self._dbs, DB_NAMES, strict=True)
        )
        index = LmdbKeyIndex(txn, self._index_db)
        return _Tables(meta, history, KeyMappingBackend(kv), sessions, by_age, members, removed, alarms, leases,
                       lease_keys, index)

    @contextmanager
    def _reading(self, txn: lmdb.Transaction[Any] | None = None) -> Iterator[_Tables]:
        if self._store is None or txn is not None:
            yield self._tables(txn)
        else:
            with self._store.read_txn() as own:
                yield self._tables(own)

    # -- apply ----------------------------------------------------------------------------------------------------
    def apply(self, txn: lmdb.Transaction[Any] | None, entries: Sequence[Entry]) -> list[Applied]:
        """Apply committed ``entries`` in order; return one ``Applied`` per command.

        Entries at or below the applied index are skipped (applying is idempotent per index). Entries that are
        not NORMAL (membership changes) or carry no data (a leader's no-op) only advance the applied index. A
        batch that does not decode, or a command that does not decode or is invalid, gives an ``ErrorResult``:
        this never raises for bad data in the log (raising would fail the node's write); it raises only for
        internal bugs or a damaged store.

        LMDB mode: call it inside ``store.write(apply=lambda txn: fsm.apply(txn, entries), ...)``; it may run
        more than once per write (see the module docstring). Dict mode: pass ``txn=None``; an exception then
        leaves the entry it was in partly applied."""
        tables = self._tables(txn)
        meta = tables.meta
        applied = first_applied = _get_u64(meta, _M_APPLIED)
        now_ns = first_now = _get_u64(meta, _M_NOW)
        sessions = SessionTable(tables.sessions, tables.by_age, ttl_ns=self._ttl_ns, max_sessions=self.max_sessions)
        first_revision = _get_u64(meta, _M_REVISION)
        run = _Executor(tables, self.limits, first_revision)
        out: list[Applied] = []
        append = out.append
        for entry in entries:
            index = entry.index
            if index <= applied:
                continue
            applied = index
            if entry.type == EntryType.CONF_CHANGE:
                append(self._apply_member_change(tables, index, entry.data))
                continue
            if entry.type != EntryType.NORMAL or not entry.data:
                continue
            try:
                proposer, timestamp_ns, commands = decode_batch_lenient(entry.data)
            except CodecError as exc:
                append(Applied(index, 0, 0, ErrorResult(_INVALID, f"log entry {index} is not a command batch: {exc}")))
                continue
            if timestamp_ns > now_ns:
                now_ns = timestamp_ns
            run.proposer = proposer
            for cmd in commands:
                if isinstance(cmd, InvalidCommand):
                    append(Applied(index, proposer, cmd.request_id, ErrorResult(_INVALID, cmd.message)))
                    continue
                if type(cmd) in _SESSIONLESS:
                    append(Applied(index, proposer, cmd.request_id, self._apply_note(tables, cmd, run.revision)))
                    continue
                client_id = cmd.client_id
                if client_id:
                    answer, previous = sessions.admit(client_id, cmd.seq, now_ns)
                    if answer is None:
                        answer = run(cmd)
                        sessions.record(client_id, cmd.seq, now_ns, answer, previous)
                else:
                    answer = run(cmd)
                append(Applied(index, proposer, cmd.request_id, answer))
            sessions.expire(now_ns)
        if applied != first_applied:
            meta.put(_M_APPLIED, _U64.pack(applied))
        if now_ns != first_now:
            meta.put(_M_NOW, _U64.pack(now_ns))
        if run.revision != first_revision:
            meta.put(_M_REVISION, _U64.pack(run.revision))
        if meta.get(_M_COMPACT_NEXT) is not None:
            self._compact_step(tables, self.compact_budget)
        return out

    def _apply_note(self, tables: _Tables, cmd: Command, revision: int) -> NoteResult | CompactResult | ErrorResult:
        """Commands that change no key and go through no session: a hash mark (nothing to do here: the driver
        hashes after its entry), a corruption alarm (recorded, for the member and everyone's status), a compaction
        (at ``revision``, the current one)."""
        if type(cmd) is Compact:
            return self._apply_compact(tables.meta, cmd.revision, revision)
        if type(cmd) is Alarm:
            key = _U64.pack(cmd.member)
            if tables.members.get(key) is None:
                return NoteResult(f"node {cmd.member} is not a member: no alarm raised")
            tables.alarms.put(key, cmd.message.encode())
            self.alarm_applied = True
            return NoteResult(f"alarm raised for node {cmd.member}")
        return NoteResult("hash mark")

    # -- history: compaction ----------------------------------------------------------------------------------------
    @staticmethod
    def _apply_compact(meta: KVBackend, target: int, current: int) -> CompactResult | ErrorResult:
        """The logical effect of ``Compact(target)`` at the current revision ``current``, at once; the physical
        removal is left to ``_compact_step`` (``compact_next`` says where it is)."""
        compacted = _get_u64(meta, _M_COMPACTED)
        if target <= compacted:
            return CompactResult(compacted)
        if target > current:
            return ErrorResult(_INVALID, f"compact: revision {target} is in the future; the current revision is "
                                         f"{current}")
        if meta.get(_M_COMPACT_NEXT) is None:  # (else a compaction still under way just goes further)
            meta.put(_M_COMPACT_NEXT, _POS.pack(compacted + 1, 0))
        meta.put(_M_COMPACTED, _U64.pack(target))
        return CompactResult(target)

    def compact_step(self, txn: lmdb.Transaction[Any] | None, budget: int = _COMPACT_BUDGET) -> bool:
        """Examine up to ``budget`` events of the pending physical compaction, in ``txn`` (a write transaction, as
        ``apply`` takes: e.g. ``store.write(apply=lambda txn: fsm.compact_step(txn, 1000))`` on an idle writer);
        return whether more remains. It changes nothing a read, ``events`` or the state hash can see, so a replica
        may call it whenever it likes. ``apply`` calls it too, after its entries, with ``compact_budget``."""
        if budget < 1:
            raise ValueError(f"the budget must be at least 1, got {budget}")
        return self._compact_step(self._tables(txn), budget)

    def compacted(self, *, txn: lmdb.Transaction[Any] | None = None) -> int:
        """The compacted revision (0: none): reads at a revision below it are refused, and ``events`` replays only
        the revisions after it."""
        with self._reading(txn) as t:
            return _get_u64(t.meta, _M_COMPACTED)

    def compaction_pending(self, *, txn: lmdb.Transaction[Any] | None = None) -> bool:
        """Whether the physical removal of a compaction is still under way (``compact_step`` has work)."""
        with self._reading(txn) as t:
            return t.meta.get(_M_COMPACT_NEXT) is not None

    @staticmethod
    def _compact_step(t: _Tables, budget: int) -> bool:
        """Examine the events from ``compact_next`` on, in order, up to ``budget`` of them and none after the
        compacted revision C. Invariant: every key has at most one event below ``compact_next``, a put (its
        newest put so far: the version reads at C or later may need). So an event examined supersedes that one
        (removed), and is itself removed if it is a delete; a put stays, until a later one up to C supersedes it."""
        meta = t.meta
        nxt = meta.get(_M_COMPACT_NEXT)
        if nxt is None:
            return False
        end = _POS.pack(_get_u64(meta, _M_COMPACTED) + 1, 0)
        stop = end
        batch: list[tuple[bytes, bytes]] = []
        history, index = t.history, t.by_key
        for pos, raw in history.iter_from(nxt):  # (collected first: the table changes below)
            if pos >= end:
                break
            if len(batch) == budget:
                stop = pos
                break
            batch.append((pos, raw))
        for pos, raw in batch:
            key, record = _event(pos, raw)
            skey = storage_key(key)
            kept = index.before(skey, pos)
            if kept is not None:
                history.delete(kept)
                index.remove(skey, kept)
            if record is None:
                history.delete(pos)
                index.remove(skey, pos)
        if stop == end:
            meta.delete(_M_COMPACT_NEXT)
            return False
        meta.put(_M_COMPACT_NEXT, stop)
        return True

    # -- membership -------------------------------------------------------------------------------------------------
    @staticmethod
    def _apply_member_change(tables: _Tables, index: int, data: bytes) -> Applied:
        """Apply a CONF_CHANGE entry to the member table (the replicated addresses of every member). The core
        adopts the same change (``RawNode.apply_conf_change``) and the store the resulting ConfState, all from the
        same pure ``conf_state_after``, so the three never disagree."""
        try:
            change = decode_change(data)
        except ValueError as exc:
            return Applied(index, 0, 0, ErrorResult(_INVALID, f"log entry {index}: {exc}"))
        members = tables.members
        before = conf_state_of(members)
        after = conf_state_after(before, change.conf_change)
        mid = change.member.id
        key = _U64.pack(mid)
        if after == before and change.type != ConfChangeType.ADD_VOTER:
            msg = f"change refused: it would leave {before} without a voter" if mid in before.voters else "no change"
            return Applied(index, change.proposer, change.request_id, MemberChangeResult(False, after, msg))
        if mid in after.voters or mid in after.learners:
            old = members.get(key)
            m = change.member
            if old is not None and (not m.peer_addr or not m.client_addr):
                prev = decode_member(mid, old)  # a promotion or demotion keeps the addresses it had
                m = MemberInfo(mid, prev.peer_addr, prev.client_addr, mid in after.learners)
            else:
                m = MemberInfo(mid, m.peer_addr, m.client_addr, mid in after.learners)
            members.put(key, encode_member(m))
            if old is None:
                # (The leader refuses to add a removed id again; a log written before it did may still hold one.)
                tables.removed.delete(key)
                tables.alarms.delete(key)
        else:
            members.delete(key)
            tables.removed.put(key, b"")
            tables.alarms.delete(key)
        return Applied(index, change.proposer, change.request_id, MemberChangeResult(True, after, ""))

    def members(self, *, txn: lmdb.Transaction[Any] | None = None) -> list[MemberInfo]:
        """Every member with its addresses, by id."""
        with self._reading(txn) as t:
            return [decode_member(_U64.unpack(k)[0], v) for k, v in t.members.iter_from(b"")]

    def alarms(self, *, txn: lmdb.Transaction[Any] | None = None) -> dict[int, str]:
        """The corruption alarms raised (by a hash check) and not cleared: member id -> what was found."""
        with self._reading(txn) as t:
            return {_U64.unpack(k)[0]: v.decode("utf-8", "replace") for k, v in t.alarms.iter_from(b"")}

    def state_hash(self, txn: lmdb.Transaction[Any]) -> str:
        """``checksum`` of the state as ``txn`` sees it, streamed: equal on replicas that applied the same entries
        (the cross-replica consistency check hashes each replica right after one log entry), however far each
        got with the physical removal of a compaction (see the module docstring)."""
        return _hash_items(_logical_items(self._tables(txn)))

    def removed_members(self, *, txn: lmdb.Transaction[Any] | None = None) -> list[int]:
        """The ids of the nodes removed from the cluster (and not added again since), ascending."""
        with self._reading(txn) as t:
            return [_U64.unpack(k)[0] for k, _ in t.removed.iter_from(b"")]

    # -- reads ------------------------------------------------------------------------------------------------------
    # Each read runs in its own short ``store.read_txn()``, or in ``txn`` if given (LMDB mode: a transaction from
    # ``store.read_txn()`` without buffers, e.g. to read the applied index and the state at one point).

    def read_revision(self, rev: int | None = None, *, txn: lmdb.Transaction[Any] | None = None) -> int:
        """The revision a read at ``rev`` reflects: ``rev``, or the current revision for None or 0. InvalidArgument
        for a negative revision or one in the future, ``Compacted`` for one below the compacted revision: the
        checks ``get`` and ``range`` make. (Read it in the same ``txn`` as the answer.)"""
        with self._reading(txn) as t:
            at = _past_revision(t.meta, rev) if rev else None
            return _get_u64(t.meta, _M_REVISION) if at is None else at

    def get(
        self, key: bytes, *, rev: int | None = None, txn: lmdb.Transaction[Any] | None = None
    ) -> KeyValue | None:
        """The key's value and metadata (None: absent) now, or right after revision ``rev`` (see
        ``read_revision``; None or 0: now)."""
        with self._reading(txn) as t:
            at = _past_revision(t.meta, rev) if rev else None
            raw = t.kv.get(key) if at is None else _record_at(t, key, at)
            return None if raw is None else decode_value(raw, key)

    def range(
        self,
        prefix: bytes = b"",
        start_after: bytes = b"",
        limit: int = 1000,
        keys_only: bool = False,
        *,
        rev: int | None = None,
        txn: lmdb.Transaction[Any] | None = None,
    ) -> tuple[list[KeyValue], bool]:
        """Up to ``limit`` keys starting with ``prefix`` and greater than ``start_after``, sorted; and whether more
        keys match (continue with ``start_after`` = the last key returned). ``keys_only``: values are b"" (the
        metadata is still filled in). ``rev``: as the store was right after that revision (see ``read_revision``;
        None or 0: now). All from one consistent read transaction."""
        if limit < 1:
            raise InvalidArgument(f"the limit must be at least 1, got {limit}")
        start = prefix
        if start_after:
            after = start_after + b"\x00"  # the smallest key greater than start_after
            if after > start:
                start = after
        out: list[KeyValue] = []
        more = False
        with self._reading(txn) as t:
            at = _past_revision(t.meta, rev) if rev else None
            rows = t.kv.iter_from(start) if at is None else _rows_at(t, at, start, prefix)
            for key, raw in rows:
                if not key.startswith(prefix):
                    break
                if len(out) == limit:
                    more = True
                    break
                kv = decode_value(raw, key)
                out.append(kv._replace(value=b"") if keys_only else kv)
        return out, more

    def range_between(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        limit: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
        rev: int | None = None,
        txn: lmdb.Transaction[Any] | None = None,
    ) -> tuple[list[KeyValue], int]:
        """etcd's range: the key alone (``range_end`` b""), every key from ``key`` on (b"\\0"), or the keys in
        ``[key, range_end)``, in byte order, now or right after revision ``rev`` (as ``range``); up to ``limit`` of
        them (0: all; none with ``count_only``), and how many there are in all."""
        out: list[KeyValue] = []
        total = 0
        with self._reading(txn) as t:
            at = _past_revision(t.meta, rev) if rev else None
            if not range_end:
                raw = t.kv.get(key) if at is None else _record_at(t, key, at)
                rows: Iterable[tuple[bytes, bytes]] = () if raw is None else ((key, raw),)
            else:
                rows = t.kv.iter_from(key) if at is None else _rows_at(t, at, key, b"")
            bounded = range_end not in (b"", b"\0")
            for k, raw in rows:
                if bounded and k >= range_end:
                    break
                total += 1
                if count_only or (limit and len(out) >= limit):
                    continue
                kv = decode_value(raw, k)
                out.append(kv._replace(value=b"") if keys_only else kv)
        return out, total

    def events(
        self,
        start_rev: int,
        *,
        prefix: bytes = b"",
        prev_kv: bool = False,
        txn: lmdb.Transaction[Any] | None = None,
    ) -> Iterator[Event]:
        """Every event of the history from revision ``start_rev`` on, of the keys that start with ``prefix``: in
        revision order, then in the order their command made them. ``prev_kv``: each with the key as it was right
        before it (its previous event, if that was a put).

        ``Compacted`` if ``start_rev`` is at or below the compacted revision C (the events up to C are no longer
        all kept: read the state at C, then replay from C + 1), InvalidArgument if it is below 1; a start after
        the current revision yields nothing. Both checks are made at once. Streamed from ``txn`` (a read
        transaction: the events up to the revision it sees), or from a read transaction of the iterator's own,
        open until it is exhausted or closed (do either soon: an open one delays the growth of the map). Dict mode
        reads the live tables: a compaction applied meanwhile that removes an event not yet replayed makes the
        iterator raise ``Compacted`` rather than skip it."""
        if start_rev < 1:
            raise InvalidArgument(f"events start at revision 1 or later, got {start_rev}")
        with self._reading(txn) as t:
            _check_replay(t.meta, start_rev)
        return self._events(start_rev, prefix, prev_kv, txn)

    def _events(
        self, start_rev: int, prefix: bytes, prev_kv: bool, txn: lmdb.Transaction[Any] | None
    ) -> Iterator[Event]:
        with self._reading(txn) as t:
            _check_replay(t.meta, start_rev)  # (again: this may be another transaction than the check's)
            yield from _replay(t, start_rev, prefix, prev_kv, live=self._store is None)

    def leases(self, *, txn: lmdb.Transaction[Any] | None = None) -> list[tuple[int, int, int]]:
        """Every lease granted and not ended: ``(lease id, ttl_s, stamp)``, by id."""
        with self._reading(txn) as t:
            return [(_U64.unpack(k)[0], *_LEASE.unpack(v)) for k, v in t.leases.iter_from(b"")]

    def lease(
        self, lease_id: int, *, keys: bool = True, txn: lmdb.Transaction[Any] | None = None
    ) -> tuple[int, int, list[bytes]] | None:
        """``(ttl_s, stamp, the keys attached in byte order)`` of a lease (keys: [] unless ``keys``); None if it
        does not exist."""
        if not 0 < lease_id <= MAX_LEASE_ID:
            return None
        with self._reading(txn) as t:
            lk = _U64.pack(lease_id)
            raw = t.leases.get(lk)
            if raw is None:
                return None
            ttl, stamp = _LEASE.unpack(raw)
            return ttl, stamp, sorted(v for _, v in _prefixed(t.lease_keys, lk)) if keys else []

    def count(self, *, txn: lmdb.Transaction[Any] | None = None) -> int:
        """Number of keys (O(1))."""
        with self._reading(txn) as t:
            return t.kv.count()

    def applied_index(self, *, txn: lmdb.Transaction[Any] | None = None) -> int:
        """The index of the last entry applied (0 if none)."""
        with self._reading(txn) as t:
            return _get_u64(t.meta, _M_APPLIED)

    def revision(self, *, txn: lmdb.Transaction[Any] | None = None) -> int:
        """The store's current revision: that of the last change applied (0 if none)."""
        with self._reading(txn) as t:
            return _get_u64(t.meta, _M_REVISION)

    def now_ns(self) -> int:
        """The logical clock: the largest batch timestamp applied so far."""
        with self._reading() as t:
            return _get_u64(t.meta, _M_NOW)

    def session(self, client_id: int) -> SessionRecord | None:
        """The session of ``client_id``, if it has one."""
        with self._reading() as t:
            return SessionTable(t.sessions, t.by_age, ttl_ns=self._ttl_ns, max_sessions=self.max_sessions).get(
                client_id
            )

    def session_count(self) -> int:
        with self._reading() as t:
            return t.sessions.count()

    # -- snapshots --------------------------------------------------------------------------------------------------
    def snapshot_items(self) -> Iterator[tuple[bytes, bytes, bytes]]:
        """Every ``(table, key, value)`` of the state, tables in ``DB_NAMES`` order, keys sorted: a consistent
        copy taken in one read transaction. (Placeholder quality: it is materialized in memory first.)"""
        with self._reading() as t:
            items = [(name, k, v) for name, table in _named(t) for k, v in table.iter_from(b"")]
        return iter(items)

    def iter_state(self, txn: lmdb.Transaction[Any]) -> Iterator[tuple[bytes, bytes, bytes]]:
        """Every ``(table, key, value)`` as ``txn`` (a read transaction) sees it, streamed: tables in ``DB_NAMES``
        order, keys sorted. With ``raftkv.storage.snapshots.write_snapshot`` this dumps the state with bounded
        memory; the transaction gives a consistent view while writes go on. The history comes as it is stored, a
        compaction under way included (the node restored from it carries on with it)."""
        for name, table in _named(self._tables(txn)):
            for k, v in table.iter_from(b""):
                yield name, k, v

    def verify(self, txn: lmdb.Transaction[Any]) -> tuple[dict[str, int], list[str]]:
        """Read back every record of every table as ``txn`` sees it, checking its checksum (``unseal``) and that it
        decodes as its table's records do: what ``raftkv check`` does offline. Returns the records per table and the
        problems found (empty: none); the first damaged record ends its table's check."""
        counts: dict[str, int] = {}
        problems: list[str] = []
        decoders: dict[bytes, Callable[[bytes, bytes], object]] = {
            DB_KV: lambda k, v: decode_value(v, k),
            DB_SESSIONS: lambda k, v: decode_session_record(v),
            DB_MEMBERS: lambda k, v: decode_member(_U64.unpack(k)[0], v),
            DB_META: lambda k, v: _POS.unpack(v) if k == _M_COMPACT_NEXT else _U64.unpack(v),
            DB_HISTORY: _decode_history_record,
            DB_LEASES: lambda k, v: (_U64.unpack(k), _LEASE.unpack(v)),
            DB_LEASE_KEYS: lambda k, v: _U64.unpack_from(k) if storage_key(v) == k[8:] else _bad_lease_row(),
        }
        t = self._tables(txn)
        for name, table in _named(t):
            decode = decoders.get(name)
            n = 0
            try:
                for key, value in table.iter_from(b""):
                    if decode is not None:
                        try:
                            decode(key, value)
                        except (CodecError, ValueError, struct.error) as e:
                            raise DataCorruption(
                                f"record {quoted(key, 64)} of table {name.decode()!r} does not decode: {e}"
                            ) from e
                    n += 1
            except DataCorruption as e:
                problems.append(e.message)
            counts[name.decode()] = n
        _verify_index(t, counts, problems)
        return counts, problems

    def conf_state(self, *, txn: lmdb.Transaction[Any] | None = None) -> ConfState:
        """The membership the replicated member table describes."""
        with self._reading(txn) as t:
            return conf_state_of(t.members)

    def restore_from(
        self, txn: lmdb.Transaction[Any], items: Callable[[], Iterable[tuple[bytes, bytes, bytes]]]
    ) -> None:
        """Replace the whole state with what ``items()`` yields (streamed from a snapshot file), in ``txn``. ``items``
        is a factory: a retried transaction reads the records again. ValueError for an unknown table."""
        _restore(self._tables(txn), items())

    def restore(self, txn: lmdb.Transaction[Any] | None, items: Sequence[tuple[bytes, bytes, bytes]]) -> None:
        """Replace the whole state with ``items`` (as ``snapshot_items`` produced them), in ``txn`` like ``apply``
        (a Sequence, not an iterator: a retried transaction reads it again). ValueError for an unknown table."""
        _restore(self._tables(txn), items)

    def checksum(self) -> str:
        """sha256 (hex) over every table's sorted logical contents (``state_hash``): equal on replicas that applied
        the same entries."""
        with self._reading() as t:
            return _hash_items(_logical_items(t))


def _restore(t: _Tables, items: Iterable[tuple[bytes, bytes, bytes]]) -> None:
    """Replace every table with ``items``, rebuilding the key index from the history."""
    tables = dict(_named(t))
    for table in tables.values():
        table.clear()
    index = t.by_key
    index.clear()
    for name, key, value in items:
        target = tables.get(name)
        if target is None:
            raise ValueError(f"unknown state machine table {name!r}")
        target.put(key, value)
        if name == DB_HISTORY:
            index.add(storage_key(_event(key, value)[0]), key)


def _bad_lease_row() -> object:
    raise ValueError("the key does not match the row's name")


def _decode_history_record(pos: bytes, raw: bytes) -> object:
    key, record = decode_event(raw)
    _POS.unpack(pos)
    return decode_value(record, key) if record is not None else None


def _verify_index(t: _Tables, counts: dict[str, int], problems: list[str]) -> None:
    """Check the key index against the history: every position it holds names an event of its key, and it holds
    one per event."""
    n = 0
    try:
        for skey, pos in t.by_key.items():
            raw = t.history.get(pos)
            if raw is None or storage_key(_event(pos, raw)[0]) != skey:
                rev, sub = _POS.unpack(pos)
                raise DataCorruption(f"the history index of {quoted(skey, 64)} names the event {rev}.{sub}, "
                                     "which the history does not hold for that key")
            n += 1
        if n != counts.get(DB_HISTORY.decode(), n):
            problems.append(f"the history index holds {n} events, the history {counts[DB_HISTORY.decode()]}")
    except DataCorruption as e:
        problems.append(e.message)
    counts[DB_KEY_HISTORY.decode()] = n


def _past_revision(meta: KVBackend, rev: int | None) -> int | None:
    """The revision to read the history at for a read at ``rev`` (not 0 or None), or None for the current state
    (``rev`` is the current revision). Raises as ``KVStateMachine.read_revision`` says."""
    current = _get_u64(meta, _M_REVISION)
    if rev is None or rev == current:
        return None
    if rev < 0:
        raise InvalidArgument(f"a revision is 0 (the current one) or more, got {rev}")
    if rev > current:
        raise InvalidArgument(f"revision {rev} is in the future; the current revision is {current}")
    compacted = _get_u64(meta, _M_COMPACTED)
    if rev < compacted:
        raise Compacted(f"revision {rev} has been compacted; the oldest readable revision is {compacted}", compacted)
    return rev


def _check_replay(meta: KVBackend, start_rev: int) -> None:
    """Compacted unless every event from ``start_rev`` on is still kept."""
    compacted = _get_u64(meta, _M_COMPACTED)
    if start_rev <= compacted:
        raise Compacted(
            f"the events of revision {start_rev} have been compacted: events are kept after revision {compacted} "
            f"(read the state at {compacted}, then replay from {compacted + 1})",
            compacted,
        )


def _event(pos: bytes, raw: bytes) -> tuple[bytes, bytes | None]:
    """The key and value record (None: a delete) of the history event stored at ``pos``."""
    try:
        return decode_event(raw)
    except CodecError as e:
        rev, sub = _POS.unpack(pos)
        raise DataCorruption(f"the history event {rev}.{sub} does not decode: {e}") from e


def _load_event(history: KVBackend, pos: bytes) -> tuple[bytes, bytes | None]:
    """The event at ``pos``, which the key index names: DataCorruption if the history does not hold it."""
    raw = history.get(pos)
    if raw is None:
        rev, sub = _POS.unpack(pos)
        raise DataCorruption(f"the history index names the event {rev}.{sub}, which the history does not hold")
    return _event(pos, raw)


def _record_at(t: _Tables, key: bytes, at: int) -> bytes | None:
    """The value record ``key`` had right after revision ``at``: that of its newest event up to ``at``, if a put."""
    pos = t.by_key.before(storage_key(key), _POS.pack(at + 1, 0))
    if pos is None:
        return None
    found, record = _load_event(t.history, pos)
    return record if found == key else None  # (another long key with the same storage key: a SHA-256 collision)


def _rows_at(t: _Tables, at: int, start: bytes, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    """``(key, value record)`` of every key that existed right after revision ``at``, from ``start`` (>=
    ``prefix``) on, in exact byte order; it stops after the keys that may start with ``prefix``."""
    return _exact_order(_stored_at(t, at, _seek_key(start), _seek_key(prefix)), start)


def _stored_at(t: _Tables, at: int, seek: bytes, stem: bytes) -> Iterator[tuple[bytes, bytes]]:
    """As ``KeyMappingBackend`` stores them: ``(storage key, value record)``, a long key's record wrapped with the
    key, for the keys of the index from ``seek`` on while they start with ``stem``, whose newest event up to ``at``
    is a put."""
    probe = _POS.pack(at + 1, 0)
    before = t.by_key.before
    history = t.history
    for skey in t.by_key.keys_from(seek):
        if not skey.startswith(stem):
            return
        pos = before(skey, probe)
        if pos is None:
            continue
        key, record = _load_event(history, pos)
        if record is not None:
            yield skey, (record if len(skey) <= SHORT_KEY_MAX else _wrap(key, record))


def _replay(t: _Tables, start_rev: int, prefix: bytes, prev_kv: bool, live: bool) -> Iterator[Event]:
    """The events of ``KVStateMachine.events``; ``live``: the tables may change between two events (dict mode)."""
    history, index, meta = t.history, t.by_key, t.meta
    need = start_rev  # every event from this revision on must still be kept
    for pos, raw in history.iter_from(_POS.pack(start_rev, 0)):
        if live:
            _check_replay(meta, need)
        key, record = _event(pos, raw)
        rev, sub = _POS.unpack(pos)
        need = rev
        if prefix and not key.startswith(prefix):
            continue
        prev = None
        if prev_kv:
            before = index.before(storage_key(key), pos)
            if before is not None:
                found, old = _load_event(history, before)
                if old is not None and found == key:
                    prev = decode_value(old, key)
        if record is None:
            yield Event(rev, sub, EventType.DELETE, key, None, prev)
        else:
            yield Event(rev, sub, EventType.PUT, key, decode_value(record, key), prev)


def _logical_items(t: _Tables) -> Iterator[tuple[bytes, bytes, bytes]]:
    """The records the state hash covers: those of ``iter_state`` but the ones physical compaction has yet to
    remove, and the progress of that removal (see the module docstring)."""
    compacted = _get_u64(t.meta, _M_COMPACTED)
    for name, table in _named(t):
        if name == DB_HISTORY and compacted:
            for pos, raw in _kept_history(t, compacted):
                yield name, pos, raw
            continue
        for k, v in table.iter_from(b""):
            if name != DB_META or k != _M_COMPACT_NEXT:
                yield name, k, v


def _kept_history(t: _Tables, compacted: int) -> Iterator[tuple[bytes, bytes]]:
    """The history as a finished compaction at ``compacted`` leaves it: every event after it, and of the events up
    to it, each key's newest if it is a put."""
    end = _POS.pack(compacted + 1, 0)
    after = t.by_key.after
    for pos, raw in t.history.iter_from(b""):
        if pos < end:
            key, record = _event(pos, raw)
            if record is None:
                continue
            newer = after(storage_key(key), pos)
            if newer is not None and newer < end:
                continue
        yield pos, raw


_HASH_FRAME = struct.Struct(">BII")


def _hash_items(items: Iterable[tuple[bytes, bytes, bytes]]) -> str:
    """sha256 (hex) over ``(table, key, value)`` records in order, each framed by its table and lengths."""
    h = hashlib.sha256()
    pack = _HASH_FRAME.pack
    table_no = {name: i for i, name in enumerate(DB_NAMES)}
    for name, key, value in items:
        h.update(pack(table_no[name], len(key), len(value)))
        h.update(key)
        h.update(value)
    return h.hexdigest()


class _Executor:
    """Runs commands against the ``kv`` table on behalf of ``proposer``, assigning revisions and recording every
    write in the history. Built per ``apply`` call (it holds no state across calls); ``revision`` is the store's
    current revision, advanced by each command that changes the store."""

    __slots__ = ("_sub", "_wrote", "history", "index", "kv", "lease_keys", "leases", "limits", "meta", "proposer",
                 "revision")

    def __init__(self, tables: _Tables, limits: Limits, revision: int) -> None:
        self.kv = tables.kv
        self.history = tables.history
        self.index = tables.by_key
        self.meta = tables.meta
        self.leases = tables.leases
        self.lease_keys = tables.lease_keys
        self.limits = limits
        self.revision = revision
        self.proposer = 0
        self._wrote = False
        self._sub = 0

    def __call__(self, cmd: Command) -> Result:
        error = validate(cmd, self.limits)
        if error is not None:
            return ErrorResult(_INVALID, error)
        self._wrote = False
        self._sub = 0
        result = self._run(cmd)
        if self._wrote:
            self.revision += 1  # the command's writes all carried revision + 1 (see _rev)
        return result

    def _rev(self) -> int:
        """The revision of the command being run: every write it makes carries this one."""
        self._wrote = True
        return self.revision + 1

    def _run(self, cmd: Command) -> Result:
        if type(cmd) is Put:
            lease = cmd.lease
            if lease and self.leases.get(_U64.pack(lease)) is None:
                return _no_lease(lease)
            failed = self._check(cmd.conditions) if cmd.conditions else None
            return failed or PutResult(self._write(cmd.key, cmd.value, self._load(cmd.key), lease))
        if type(cmd) is Delete:
            failed = self._check(cmd.conditions) if cmd.conditions else None
            return failed or self._delete(cmd.key)
        if type(cmd) is Incr:
            return self._incr(cmd.key, cmd.delta)
        if type(cmd) is Txn:
            return self._txn(cmd)
        if type(cmd) is SiblingPut:
            return self._sibling_put(cmd)
        if type(cmd) is RangeTxn:
            return self._range_txn(cmd)
        if type(cmd) is LeaseGrant:
            return self._grant(cmd)
        if type(cmd) is LeaseRevoke:
            return self._revoke(cmd)
        raise TypeError(f"not a command: {cmd!r:.100}")

    def _load(self, key: bytes) -> KeyValue | None:
        raw = self.kv.get(key)
        return None if raw is None else decode_value(raw, key)

    def _record(self, key: bytes, record: bytes | None) -> None:
        """Append the event of a write of the running command to the history: at the command's revision, after the
        writes it made before (``sub``); ``record`` is the key's new value record, None for a delete."""
        pos = _POS.pack(self.revision + 1, self._sub)
        self._sub += 1
        self.history.append(pos, encode_event(key, record))
        self.index.add(storage_key(key), pos)

    def _write(self, key: bytes, value: bytes, old: KeyValue | None, lease: int) -> KeyValue:
        """Set ``key`` to ``value`` alone (siblings are replaced), attached to ``lease`` (0: none; it exists):
        mod_revision is the command's revision, version + 1, the proposer's clock component advances to the
        revision."""
        rev = self._rev()
        p = self.proposer
        if old is None:
            kv = KeyValue(key, value, rev, rev, 1, EMPTY_CLOCK.advance(p, rev), (), lease)
        else:
            clock = old.vclock if old.mod_revision == rev else old.vclock.advance(p, rev)  # (written earlier in a txn)
            kv = KeyValue(key, value, old.create_revision, rev, old.version + 1, clock, (), lease)
        if (old.lease if old is not None else 0) != lease:
            self._attach(key, old.lease if old is not None else 0, lease)
        record = encode_value_record(value, kv.create_revision, rev, kv.version, kv.vclock, (), lease)
        self.kv.put(key, record)
        self._record(key, record)
        return kv

    def _attach(self, key: bytes, old: int, new: int) -> None:
        """Move ``key`` from lease ``old`` to lease ``new`` (either 0: none)."""
        skey = storage_key(key)
        if old:
            self.lease_keys.delete(_U64.pack(old) + skey)
        if new:
            self.lease_keys.put(_U64.pack(new) + skey, key)

    def _grant(self, cmd: LeaseGrant) -> LeaseGrantResult | ErrorResult:
        leases = self.leases
        lid = cmd.lease_id
        if lid and leases.get(_U64.pack(lid)) is not None:
            return ErrorResult(_INVALID, f"lease grant: lease {lid} exists already")
        stamp = _get_u64(self.meta, _M_LEASE_STAMP) + 1
        self.meta.put(_M_LEASE_STAMP, _U64.pack(stamp))
        if not lid:  # the first unused id from the stamp on (ids a client chose may be taken)
            lid = stamp
            while leases.get(_U64.pack(lid)) is not None:
                lid += 1
            if lid > MAX_LEASE_ID:
                return ErrorResult(_INVALID, "lease grant: no lease id is left to pick; name one")
        leases.put(_U64.pack(lid), _LEASE.pack(cmd.ttl_s, stamp))
        return LeaseGrantResult(lid, cmd.ttl_s, stamp)

    def _revoke(self, cmd: LeaseRevoke) -> LeaseRevokeResult | ErrorResult:
        """Delete every key of the lease, in one revision, and forget the lease."""
        lk = _U64.pack(cmd.lease_id)
        raw = self.leases.get(lk)
        if raw is None or (cmd.stamp and _LEASE.unpack(raw)[1] != cmd.stamp):
            return _no_lease(cmd.lease_id)
        keys = sorted(v for k, v in _prefixed(self.lease_keys, lk))
        for key in keys:
            self._delete(key)  # (detaches it: the lease's rows go one by one)
        self.leases.delete(lk)
        return LeaseRevokeResult(cmd.lease_id, self.revision + 1 if self._wrote else self.revision, tuple(keys))

    def _sibling_put(self, cmd: SiblingPut) -> PutResult | ErrorResult:
        """Replace the values whose dot the context covers, keep the others beside the new one (see the module
        docstring). A missing key is created, as by a put."""
        key = cmd.key
        old = self._load(key)
        if old is None:
            return PutResult(self._write(key, cmd.value, None, 0))
        ctx = cmd.context
        newest = next(n for n, c in old.vclock if c == old.mod_revision)  # the dot of old.value
        candidates = (Sibling(old.value, newest, old.mod_revision), *old.siblings)
        keep = tuple([s for s in candidates if ctx.get(s.node) < s.revision])
        limits = self.limits
        if len(keep) + 1 > limits.max_siblings:
            return ErrorResult(_INVALID, f"put: key {quoted(key, 80)} would hold {len(keep) + 1} concurrent values, "
                                         f"more than the limit of {limits.max_siblings}: resolve its siblings "
                                         "first (put with the context a get returns)")
        total = len(cmd.value) + sum(len(s.value) for s in keep)
        if total > _SIBLING_BYTES_FACTOR * limits.max_value_bytes:
            return ErrorResult(_INVALID, f"put: the concurrent values of key {quoted(key, 80)} would total {total} "
                                         f"bytes, more than {_SIBLING_BYTES_FACTOR} x max_value_bytes: resolve "
                                         "them first")
        rev = self._rev()
        kv = KeyValue(key, cmd.value, old.create_revision, rev, old.version + 1,
                      old.vclock.advance(self.proposer, rev), keep, old.lease)
        record = encode_value_record(cmd.value, kv.create_revision, rev, kv.version, kv.vclock, keep, old.lease)
        self.kv.put(key, record)
        self._record(key, record)
        return PutResult(kv)

    def _delete(self, key: bytes) -> DeleteResult:
        raw = self.kv.get(key)
        if raw is None:
            return DeleteResult(False, self.revision + 1 if self._wrote else self.revision)
        rev = self._rev()
        if self.leases.count():  # (no lease: no key is attached to one, and the record need not be decoded)
            lease = decode_value(raw, key).lease
            if lease:
                self._attach(key, lease, 0)
        self.kv.delete(key)
        self._record(key, None)
        return DeleteResult(True, rev)

    def _incr(self, key: bytes, delta: int) -> IncrResult | ErrorResult:
        old = self._load(key)
        base = 0
        if old is not None:
            if old.siblings:
                return ErrorResult(_INVALID, f"incr: key {quoted(key, 80)} holds concurrent values (siblings): resolve "
                                             "them first")
            parsed = _parse_int(old.value)
            if parsed is None:
                return ErrorResult(_INVALID, f"incr: the value of {quoted(key, 80)} is not a 64-bit decimal integer")
            base = parsed
        n = base + delta
        if not _I64_MIN <= n <= _I64_MAX:
            return ErrorResult(_INVALID, f"incr: {base} + {delta} overflows a signed 64-bit integer")
        return IncrResult(n, self._write(key, b"%d" % n, old, old.lease if old is not None else 0))

    def _txn(self, cmd: Txn) -> TxnResult | ErrorResult:
        load = self._load
        ok = all(_holds(c, load(c.key)) for c in cmd.compares)
        ops = cmd.success if ok else cmd.failure
        for op in ops:
            if op.lease and self.leases.get(_U64.pack(op.lease)) is None:
                return _no_lease(op.lease)  # (the whole txn: nothing was written yet)
        results = tuple([self._txn_op(op) for op in ops])
        return TxnResult(ok, results, self.revision + 1 if self._wrote else self.revision)

    def _txn_op(self, op: TxnOp) -> TxnOpResult:
        t = op.op
        if t == TxnOpType.GET:
            return self._load(op.key)
        if t == TxnOpType.PUT:
            return PutResult(self._write(op.key, op.value, self._load(op.key), op.lease))
        if t == TxnOpType.DELETE:
            return self._delete(op.key)
        return self._incr(op.key, op.delta)

    # -- range txns (etcd's semantics) -----------------------------------------------------------------------------
    def _range_rows(self, key: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value record)`` of the keys of a range now: the key alone (``end`` b""), every key from ``key``
        on (b"\\0"), or ``[key, end)``; in byte order."""
        if not end:
            raw = self.kv.get(key)
            if raw is not None:
                yield key, raw
            return
        for k, raw in self.kv.iter_from(key):
            if end != b"\0" and k >= end:
                return
            yield k, raw

    def _range_holds(self, c: RangeCompare) -> bool:
        rows = list(self._range_rows(c.key, c.range_end))
        if not rows:
            if c.target == RangeTarget.VALUE:
                return False  # (etcd: a value compare on keys that do not exist never holds)
            return _compare_int(0, c.result, c.operand)
        for k, raw in rows:
            kv = decode_value(raw, k)
            if c.target == RangeTarget.VALUE:
                cur: bytes | int = kv.value
            elif c.target == RangeTarget.VERSION:
                cur = kv.version
            elif c.target == RangeTarget.CREATE:
                cur = kv.create_revision
            elif c.target == RangeTarget.MOD:
                cur = kv.mod_revision
            else:
                cur = kv.lease
            if not _compare_any(cur, c.result, c.operand):
                return False
        return True

    def _range_path(self, compares: tuple[RangeCompare, ...], success: tuple[RangeOp, ...],
                    failure: tuple[RangeOp, ...], path: list[bool]) -> None:
        """Decide, on the state before the txn, which branch it and each nested txn of the branches taken will run
        (etcd's rule), in the order they run: ``path`` gets one bool per txn."""
        ok = all(self._range_holds(c) for c in compares)
        path.append(ok)
        for o in success if ok else failure:
            if o.kind == RangeOpKind.TXN:
                assert o.body is not None
                self._range_path(*o.body, path)

    def _range_check(self, ops: tuple[RangeOp, ...], path: list[bool], at: list[int]) -> ErrorResult | None:
        """Before anything runs: every lease a put of the chosen branches names exists, and a put that keeps the
        value or the lease has a key to keep it from."""
        for o in ops:
            if o.kind == RangeOpKind.TXN:
                assert o.body is not None
                at[0] += 1
                taken = path[at[0]]
                error = self._range_check(o.body[1] if taken else o.body[2], path, at)
                if error is not None:
                    return error
            elif o.kind == RangeOpKind.PUT:
                if o.lease and not o.flags & RangeFlag.IGNORE_LEASE and self.leases.get(_U64.pack(o.lease)) is None:
                    return _no_lease(o.lease)
                if o.flags & (RangeFlag.IGNORE_VALUE | RangeFlag.IGNORE_LEASE) and self.kv.get(o.key) is None:
                    return ErrorResult(_INVALID, f"put with ignore_value or ignore_lease: key "
                                                 f"{quoted(o.key, 80)} not found")
        return None

    def _range_txn(self, cmd: RangeTxn) -> RangeTxnResult | ErrorResult:
        path: list[bool] = []
        self._range_path(cmd.compares, cmd.success, cmd.failure, path)
        ops = cmd.success if path[0] else cmd.failure
        error = self._range_check(ops, path, [0])
        if error is not None:
            return error
        results = self._range_run(ops, path, [0])
        return RangeTxnResult(path[0], results, self.revision + 1 if self._wrote else self.revision)

    def _range_run(self, ops: tuple[RangeOp, ...], path: list[bool], at: list[int]) -> tuple[Any, ...]:
        out: list[Any] = []
        for o in ops:
            kind = o.kind
            if kind == RangeOpKind.RANGE:
                out.append(self._range_read(o))
            elif kind == RangeOpKind.PUT:
                old = self._load(o.key)
                value = old.value if o.flags & RangeFlag.IGNORE_VALUE and old is not None else o.value
                lease = (old.lease if old is not None else 0) if o.flags & RangeFlag.IGNORE_LEASE else o.lease
                kv = self._write(o.key, value, old, lease)
                out.append(RangePut(kv, old if o.flags & RangeFlag.PREV_KV else None))
            elif kind == RangeOpKind.DELETE_RANGE:
                rows = list(self._range_rows(o.key, o.range_end))
                prevs = tuple(decode_value(raw, k) for k, raw in rows) if o.flags & RangeFlag.PREV_KV else ()
                for k, _ in rows:
                    self._delete(k)
                out.append(RangeDelete(len(rows), prevs))
            else:
                assert o.body is not None
                at[0] += 1
                taken = path[at[0]]
                results = self._range_run(o.body[1] if taken else o.body[2], path, at)
                out.append(RangeTxnResult(taken, results, self.revision + 1 if self._wrote else self.revision))
        return tuple(out)

    def _range_read(self, o: RangeOp) -> RangeRead:
        count_only = o.flags & RangeFlag.COUNT_ONLY
        keys_only = o.flags & RangeFlag.KEYS_ONLY
        limit = o.limit
        kvs: list[KeyValue] = []
        count = 0
        for k, raw in self._range_rows(o.key, o.range_end):
            count += 1
            if count_only or (limit and len(kvs) >= limit):
                continue
            kv = decode_value(raw, k)
            kvs.append(kv._replace(value=b"") if keys_only else kv)
        return RangeRead(tuple(kvs), count > len(kvs) and not count_only, count)

    def _check(self, conditions: tuple[Condition, ...]) -> ConditionFailedResult | None:
        """The first condition that does not hold, with its key's current state; None if all hold."""
        for c in conditions:
            current = self._load(c.key)
            if not _holds(c, current):
                return ConditionFailedResult(c, current)
        return None


def _compare_int(cur: int, result: int, operand: bytes | int) -> bool:
    return _compare_any(cur, result, operand)


def _compare_any(cur: bytes | int, result: int, operand: bytes | int) -> bool:
    """``cur <result> operand`` (bytes compare as bytes, as etcd's value compares do)."""
    if type(cur) is not type(operand):
        return False  # (decoding checked: a value compare has a bytes operand, the others ints)
    if result == RangeResultOp.EQUAL:
        return cur == operand
    if result == RangeResultOp.NOT_EQUAL:
        return cur != operand
    if result == RangeResultOp.GREATER:
        return cur > operand  # type: ignore[operator]
    return cur < operand  # type: ignore[operator]


def _no_lease(lease: int) -> ErrorResult:
    return ErrorResult(_LEASE_NOT_FOUND, f"lease {lease} not found: it expired or was revoked, or was never granted")


def _prefixed(table: KVBackend, prefix: bytes) -> list[tuple[bytes, bytes]]:
    """The rows of ``table`` whose key starts with ``prefix``, collected."""
    out = []
    for k, v in table.iter_from(prefix):
        if not k.startswith(prefix):
            break
        out.append((k, v))
    return out


_SIBLING_BYTES_FACTOR = 4
"""A key's concurrent values together may take at most this many times ``max_value_bytes``."""


def _holds(c: Condition, current: KeyValue | None) -> bool:
    """Whether condition ``c`` holds for a key whose state is ``current`` (None: missing)."""
    target, op, operand = c.target, c.op, c.operand
    if target == Target.VALUE:
        if current is None:
            return op == CmpOp.NE
        equal = current.value == operand and not current.siblings  # siblings: no single value to compare
    elif target == Target.EXISTS:
        equal = (current is not None) == operand
    elif target == Target.VCLOCK:
        equal = (EMPTY_CLOCK if current is None else current.vclock) == operand
    else:
        if current is None:
            value = 0
        elif target == Target.VERSION:
            value = current.version
        elif target == Target.MOD_REVISION:
            value = current.mod_revision
        else:
            value = current.create_revision
        if op == CmpOp.GT:
            return value > operand  # type: ignore[operator]  # validate(): int targets have int operands
        if op == CmpOp.LT:
            return value < operand  # type: ignore[operator]
        equal = value == operand
    return equal if op == CmpOp.EQ else not equal
