"""The durable Raft log on LMDB: ``LmdbLogStore``, a ``LogStorage`` for the core and a ``LogStore`` for the driver.

One LMDB environment (a directory) holds named databases::

    log    8-byte big-endian index -> record(encode_entry(entry))     the entries first_index() .. last_index()
    meta   b"format"     -> record(FORMAT)                             layout version of this directory
           b"hard_state" -> record(encode_hard_state(hs))              term, vote, commit
           b"conf_state" -> record(encode_conf_state(cs))              membership (absent until first set)
           b"snapshot"   -> record(encode_snapshot_metadata(md))       metadata of the installed snapshot
           b"dummy"      -> record(encode_entry(Entry(term, index)))   the compaction point: first_index() - 1 and
                                                                       its term (MemoryStorage's ``_ents[0]``)
           b"applied"    -> record(u64)                                the state machine's applied index
           b"generation" -> record(u64)                                bumped by every commit (see "Readers")
    snap   b"data"       -> record(snapshot data)                     empty if the snapshot was installed with
                                                                       ``store_snapshot_data=False`` (its state
                                                                       is in the state machine's own databases)
    ...    other layers (the KV state machine) open their own databases with ``open_db``

    record(payload) = crc32(payload) as 4 big-endian bytes + payload

Invariants (checked at open; ``verify=True`` also decodes every record not yet applied and the newest ones):
  * the log is contiguous: it holds exactly the keys dummy.index + 1 .. last_index(), no holes;
  * every record's checksum matches and it decodes to an entry whose index is its key;
  * dummy.index >= the snapshot's index (compaction only moves the dummy forward; a snapshot install resets it).
A violation raises ``CorruptLogError`` / ``StorageCorruption`` at open (for an old, applied record below the
newest ones: when it is read): damaged data is never served or applied.

Durability: with ``sync=True`` (the default) the environment is opened with LMDB's MDB_NOMETASYNC: every commit
fsyncs its data pages before it writes the meta page that makes them current, but does not fsync that meta page.
``write(..., sync=True)`` (the default) then calls ``env.sync(force=True)``, so it returns only after the data pages
and then the meta page are on disk: a power loss at any point leaves either everything from that call on disk or
nothing of it. ``write(..., sync=False)`` skips that second fsync: the commit is atomic and survives a process crash
(the meta page is in the OS page cache), and LMDB keeps the environment intact through a power loss, which may undo
the commits since the last synced one (the next commit's data fsync makes an unsynced commit durable too). The node
uses it for writes that carry nothing it has promised to keep (a Ready whose ``must_sync`` is false: applied
entries and a commit index, both recovered from the durable log after such a loss), one fsync instead of two.
With ``sync=False`` at open, commits are not fsynced at all; ``write(..., sync=True)`` still calls
``env.sync(force=True)`` after the commit. Unsynced commits survive a process crash but not a power loss or kernel
crash, which may lose them or, per LMDB's documentation for MDB_NOSYNC, leave the environment damaged: use
``sync=False`` at open for tests and benchmarks only.

Threads: ``write()`` (and every other mutating method) is meant to be called from one writer thread, reads from
another (the event loop); both may be called from any thread. See "Readers" below.

Readers: the core reads ``term()``/``entries()`` many times per second. Recent entries live in an in-memory tail
cache of decoded ``Entry`` tuples (``cache_entries`` / ``cache_bytes``), and first/last index, hard state etc. are
cached ints; older entries are read through a short read transaction. The cached view changes only after a commit
succeeded, in one step under a lock, so a reader sees the state after some prefix of completed writes, never half
of one. Between an LMDB commit and that publication, a read transaction could see data newer than the cached view;
readers detect this (the ``generation`` record differs) and wait for the publication, which follows the commit
with no I/O in between (a synced write publishes before its final fsync; see ``_transact``).

Growing the map (``set_mapsize``) requires that no transaction is active in the process. Every read transaction is
therefore opened under a shared/exclusive gate (``_ReadGate``; ``read_txn`` for other layers): any number of read
transactions may be open at once, from any threads (a snapshot dump reading the state machine for seconds does not
hold up the event loop's reads), and the writer grows the map between two attempts of its own transaction, holding
the gate exclusively: it waits until no read transaction is open, and while it waits no new one starts (a steady
stream of readers cannot starve it). A thread already inside a read transaction may open another even then (the
resize waits for that thread, so making it wait would deadlock). Lock order: ``_write_lock``, then the gate, then
``_lock`` (the cached view); nothing that holds ``_lock`` waits for the gate. ``close()`` also takes the gate
exclusively, so the environment is never closed under an open read transaction.

A long read transaction has a cost beyond the gate: LMDB cannot reuse the pages freed by commits made while it is
open, so the map grows faster during a long dump, and a resize that becomes necessary waits for the dump to end
(the writer - and with it the node's Raft persistence - stalls meanwhile).
"""

from __future__ import annotations

import errno
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import add, itemgetter
from typing import Any, TypeVar

import lmdb

from raftkv.codec import (
    CodecError,
    decode_conf_state,
    decode_entry,
    decode_hard_state,
    decode_snapshot_metadata,
    encode_conf_state,
    encode_entry,
    encode_hard_state,
    encode_snapshot_metadata,
)
from raftkv.raft.errors import CompactedError, UnavailableError
from raftkv.raft.storage import limit_size
from raftkv.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata

from .errors import CorruptLogError, DurableStorageError, StorageCorruption, StorageFormatError, StorageFullError

__all__ = ["FORMAT", "LmdbLogStore", "WalStats", "check_data_file"]

FORMAT = b"raftkv-lmdb-wal/3"
"""Layout version of the data directory, stored in ``meta``; opening any other layout raises StorageFormatError.
3: the state machine keeps its history (``history``, ``key_history``: a layout-2 directory has none, and replicas
upgraded at different points would hold different histories); 2: the records of ``raftkv.codec`` version 2
(per-write revisions in the state machine; 1 held log indexes)."""

T = TypeVar("T")

_KEY = struct.Struct(">Q")
_CRC = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_crc32 = zlib.crc32
_key = _KEY.pack
_get_index = itemgetter(1)
_get_data = itemgetter(3)

_LOG, _META, _SNAP = b"log", b"meta", b"snap"
_RESERVED_DBS = frozenset({_LOG, _META, _SNAP})
_M_FORMAT = b"format"
_M_HARD_STATE = b"hard_state"
_M_CONF_STATE = b"conf_state"
_M_SNAPSHOT = b"snapshot"
_M_DUMMY = b"dummy"
_M_APPLIED = b"applied"
_M_GEN = b"generation"
_S_DATA = b"data"

_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_PUBLISH_WAIT_S = 10.0
"""How long a reader waits for the writer to publish a commit it already sees (normally microseconds): past this
the writer thread is presumed dead and the reader gets an error instead of hanging."""


def _record(payload: bytes) -> bytes:
    return _CRC.pack(_crc32(payload)) + payload


def _sizes(entries: Sequence[Entry]) -> int:
    """Sum of ``entry_size`` over ``entries`` (payload plus a 16-byte header each), without a Python loop."""
    return sum(map(len, map(_get_data, entries))) + 16 * len(entries)


_META_PAGE = struct.Struct("<QHHHHIIQQ")
"""An LMDB meta page (64-bit build): page header (pgno, pad, flags, lower, upper), then magic, version, address,
map size."""
_META_PSIZE = struct.Struct("<I")  # at byte 40: the free DB's md_pad, which LMDB uses to record the page size
_META_TAIL = struct.Struct("<QQ")  # at byte 136: last page used, transaction id
_LMDB_MAGIC = 0xBEEFC0DE
_LMDB_VERSION = 1


def _meta_page(raw: bytes, offset: int) -> tuple[int, int, int] | None:
    """``(page size, last page used, txn id)`` of the meta page at ``offset``, or None if it is not one."""
    if len(raw) < offset + 152:
        return None
    _, _, flags, _, _, magic, version, _, _ = _META_PAGE.unpack_from(raw, offset)
    if magic != _LMDB_MAGIC or version != _LMDB_VERSION or not flags & 0x08:  # P_META
        return None
    psize = _META_PSIZE.unpack_from(raw, offset + 40)[0]
    last_pg, txnid = _META_TAIL.unpack_from(raw, offset + 136)
    return psize, last_pg, txnid


def check_data_file(path: str | os.PathLike[str]) -> None:
    """Check an existing LMDB data file before it is mapped: its two meta pages, and that the file is as long as
    the newest valid one says it uses. LMDB maps the file and reads pages straight from the mapping, so a file cut
    short (a failed copy, a truncate) would kill the process with SIGBUS on first touch instead of an error.
    StorageCorruption names the file and what is wrong; a missing or empty file is a new store and passes."""
    f = os.path.join(os.fspath(path), "data.mdb")
    try:
        size = os.path.getsize(f)
        if size == 0:
            return
        with open(f, "rb") as fh:
            head = fh.read(2 * 65536)
    except FileNotFoundError:
        return
    except OSError as e:
        raise DurableStorageError(f"cannot read {f}: {e.strerror or e}", path) from e
    first = _meta_page(head, 0)
    psize = first[0] if first is not None else 4096
    metas = [m for m in (first, _meta_page(head, psize)) if m is not None and m[0] == psize]
    if not metas:
        raise StorageCorruption(f"{f} is not an LMDB data file any more: neither of its meta pages is valid", path)
    _, last_pg, _ = max(metas, key=lambda m: m[2])
    need = (last_pg + 1) * psize
    if size < need:
        raise StorageCorruption(
            f"{f} is {size} bytes, but its newest commit uses {last_pg + 1} pages of {psize} bytes ({need} bytes): "
            "the file was cut short",
            path,
        )


class _ReadGate:
    """Shared/exclusive admission for this process's LMDB transactions (see the module docstring, "Readers").

    ``acquire_shared`` / ``release_shared`` bracket a read transaction; ``acquire_exclusive`` / ``release_exclusive``
    bracket a map resize or ``close``. Shared holders are counted per thread with a thread-local depth, so a thread
    that already holds the gate re-enters without waiting (even while an exclusive holder waits: it waits for that
    very thread)."""

    __slots__ = ("_cond", "_exclusive", "_local", "_mutex", "_readers", "_waiting")

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        """Threads holding the gate shared (a re-entering thread counts once)."""
        self._waiting = 0
        """Threads waiting to hold it exclusively: new shared holders wait while this is non-zero."""
        self._exclusive = False
        self._local = threading.local()

    def acquire_shared(self) -> None:
        local = self._local
        depth: int = getattr(local, "depth", 0)
        if depth:
            local.depth = depth + 1
            return
        with self._mutex:  # the lock itself, not the Condition wrapper: this is on every read's path
            while self._exclusive or self._waiting:
                self._cond.wait()
            self._readers += 1
        local.depth = 1

    def release_shared(self) -> None:
        local = self._local
        depth: int = local.depth - 1
        local.depth = depth
        if depth:
            return
        with self._mutex:
            self._readers -= 1
            if not self._readers and self._waiting:
                self._cond.notify_all()

    def acquire_exclusive(self) -> None:
        if getattr(self._local, "depth", 0):
            raise RuntimeError(
                "this thread holds a read transaction of the log store: it cannot also resize or close the "
                "environment (that would wait for itself)"
            )
        with self._cond:
            self._waiting += 1
            try:
                while self._exclusive or self._readers:
                    self._cond.wait()
            except BaseException:
                self._waiting -= 1
                self._cond.notify_all()  # readers held back for us may go on
                raise
            self._waiting -= 1
            self._exclusive = True

    def release_exclusive(self) -> None:
        with self._cond:
            self._exclusive = False
            self._cond.notify_all()

    @property
    def readers(self) -> int:
        """Threads holding the gate shared right now (for tests and diagnostics)."""
        return self._readers

    @property
    def resize_waiting(self) -> bool:
        """Whether a resize (or close) waits for the readers to leave (for tests and diagnostics)."""
        return self._waiting > 0


@dataclass
class WalStats:
    """Counters for benchmarks (``syncs / entries_written`` is the fsyncs-per-entry figure)."""

    commits: int = 0
    """Write transactions committed."""
    syncs: int = 0
    """Commits made durable before returning (``write(sync=True)``: commit, then fsync the meta page); each is two
    fdatasyncs on a sync=True store, whose other commits (``write(sync=False)``) cost one."""
    entries_written: int = 0
    bytes_written: int = 0
    """Keys and values put into the log, meta and snapshot databases (not the state machine's own writes)."""
    commit_us: int = 0
    """Wall time spent in LMDB's commit (writing the dirty pages, and on a sync=True store their fdatasync)."""
    sync_us: int = 0
    """Wall time spent in the explicit syncs of durable writes (the meta page's fdatasync)."""
    map_resizes: int = 0


@dataclass(slots=True)
class _Pending:
    """The view a write transaction builds; published into the store's cache only after the commit succeeded."""

    dummy_index: int
    dummy_term: int
    last_index: int
    hard_state: HardState
    conf_state: ConfState | None
    snap_meta: SnapshotMetadata
    applied: int
    gen: int
    reset_tail: bool = False
    appended: Sequence[Entry] = ()
    entries_written: int = 0
    bytes_written: int = 0
    result: object = None


class LmdbLogStore:
    """A durable ``LogStore`` on LMDB. See the module docstring for the layout, invariants and guarantees.

    Reads (``term``, ``entries``, ``first_index``, ``last_index``, ``snapshot``, ``initial_state``) have exactly the
    semantics and exceptions of ``MemoryStorage`` (``tests/storage`` runs one conformance suite on both)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        map_size: int = 64 << 20,
        sync: bool = True,
        verify: bool = True,
        max_map_size: int = 1 << 40,
        cache_entries: int = 4096,
        cache_bytes: int = 8 << 20,
    ) -> None:
        """Open (creating if needed) the store in directory ``path``.

        ``map_size`` is the initial LMDB map size; it doubles whenever a write needs more, up to ``max_map_size``
        (then writes raise StorageFullError). ``verify=False`` skips decoding log records at open (the cheap
        structural checks still run); ``verify=True`` checks every record above the applied index and the newest
        ``cache_entries``, the others when they are read. Raises CorruptLogError / StorageCorruption /
        StorageFormatError."""
        if map_size <= 0 or max_map_size < map_size:
            raise ValueError(f"need 0 < map_size <= max_map_size, got {map_size} and {max_map_size}")
        self.path = os.fspath(path)
        self.stats = WalStats()
        self._durable = sync
        self._max_map_size = max_map_size
        self._cache_entries = max(0, cache_entries)
        self._cache_bytes = max(0, cache_bytes)
        self._closed = False
        # The cached view (set by _load, replaced by _publish): see the module docstring, "Readers".
        self._hard_state = HardState()
        self._conf_state: ConfState | None = None
        self._snap_meta = SnapshotMetadata()
        self._dummy_index = 0
        self._dummy_term = 0
        self._last_index = 0
        self._applied = 0
        self._tail: list[Entry] = []
        """Decoded copies of the entries [_tail_start, _last_index]; _tail_start > _dummy_index."""
        self._tail_start = 1
        self._tail_bytes = 0
        """Sum of entry_size over _tail."""
        self._gen = 0
        self._gen_record = b""
        self._lock = threading.RLock()
        """Guards the cached view. Never held while waiting for ``_gate`` (see the lock order in the docstring)."""
        self._published = threading.Condition(self._lock)
        self._gate = _ReadGate()
        """Held shared by every open read transaction, exclusively by a map resize and by ``close``."""
        self._write_lock = threading.RLock()
        """Serializes mutations: the cached view is the base every write transaction builds on."""

        os.makedirs(self.path, exist_ok=True)
        check_data_file(self.path)  # before LMDB maps it: a truncated file would kill the process (SIGBUS)
        # metasync=False: a commit fsyncs its data pages only; write(sync=True) fsyncs the meta page (module docstring).
        self.env = lmdb.open(
            self.path, map_size=map_size, max_dbs=16, sync=sync, metasync=False, lock=True, subdir=True
        )
        """The LMDB environment. Other layers open databases with ``open_db``, read through ``read_txn`` and write
        only inside ``write(apply=...)``."""
        try:
            self._log = self.env.open_db(_LOG)
            self._meta = self.env.open_db(_META)
            self._snap = self.env.open_db(_SNAP)
            self._load(verify)
        except BaseException:
            self.env.close()
            raise

    # -- open ---------------------------------------------------------------------------------------------------
    def _load(self, verify: bool) -> None:
        created = False
        with self.env.begin(write=True) as txn:
            if txn.get(_M_FORMAT, db=self._meta) is None:
                if txn.stat(self._log)["entries"] or txn.stat(self._meta)["entries"]:
                    raise StorageCorruption("the meta database lost its format record", self.path)
                txn.put(_M_FORMAT, _record(FORMAT), db=self._meta)
                txn.put(_M_GEN, _record(_U64.pack(0)), db=self._meta)
                created = True
        if created and self._durable:
            self.env.sync(True)  # the format record's meta page (metasync is off)
            # LMDB fsyncs its files, not the directories that name them: make the new files' names durable too.
            _fsync_dir(self.path)
            _fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        with self.env.begin(buffers=True) as txn:
            fmt = self._meta_get(txn, _M_FORMAT, bytes)
            if fmt != FORMAT:
                raise StorageFormatError(fmt, FORMAT, self.path)
            self._hard_state = self._meta_get(txn, _M_HARD_STATE, decode_hard_state) or HardState()
            self._conf_state = self._meta_get(txn, _M_CONF_STATE, decode_conf_state)
            self._snap_meta = self._meta_get(txn, _M_SNAPSHOT, decode_snapshot_metadata) or SnapshotMetadata()
            dummy = self._meta_get(txn, _M_DUMMY, decode_entry) or Entry(0, 0)
            self._applied = self._meta_get(txn, _M_APPLIED, _decode_u64) or 0
            gen = self._meta_get(txn, _M_GEN, _decode_u64)
            if gen is None:
                raise StorageCorruption("the meta database lost its generation record", self.path)
            self._set_gen(gen)
            if dummy.index < self._snap_meta.index:
                raise StorageCorruption(
                    f"the compaction point {dummy.index} is below the snapshot index {self._snap_meta.index}",
                    self.path,
                )
            self._dummy_index, self._dummy_term = dummy.index, dummy.term
            if verify and self._snap_meta.index:
                self._read_snapshot_data(txn)
            self._last_index = self._check_log(txn, verify)
        self._trim_tail(self._cache_entries, self._cache_bytes)  # also sets _tail_start

    def _meta_get(self, txn: lmdb.Transaction, key: bytes, decode: Callable[[bytes], T]) -> T | None:
        raw = txn.get(key, db=self._meta)
        if raw is None:
            return None
        payload = self._check_record(raw, f"meta record {key.decode()!r}")
        try:
            return decode(payload)
        except (CodecError, struct.error) as exc:
            raise StorageCorruption(f"meta record {key.decode()!r} does not decode: {exc}", self.path) from exc

    def _check_record(self, raw: bytes | memoryview, what: str) -> bytes:
        """The payload of a checksummed record, or StorageCorruption."""
        if len(raw) < 4:
            raise StorageCorruption(f"{what} is truncated ({len(raw)} bytes)", self.path)
        payload = bytes(raw[4:])
        if _crc32(payload) != _CRC.unpack_from(raw)[0]:
            raise StorageCorruption(f"{what} fails its checksum", self.path)
        return payload

    def _check_log(self, txn: lmdb.Transaction, verify: bool) -> int:
        """Check the log's structure (and, if ``verify``, the records above the applied index and the newest ones);
        fill the tail cache; return last_index."""
        self._tail = []
        self._tail_bytes = 0
        count = txn.stat(self._log)["entries"]
        if not count:
            return self._dummy_index
        cur = txn.cursor(self._log)
        cur.first()
        first = _KEY.unpack(cur.key())[0]
        cur.last()
        last: int = _KEY.unpack(cur.key())[0]
        if first <= self._dummy_index:
            raise CorruptLogError(first, f"survives below the compaction point {self._dummy_index}", self.path)
        if first != self._dummy_index + 1:
            raise CorruptLogError(
                self._dummy_index + 1, f"is missing: the log starts at {first} (a hole in the log)", self.path
            )
        if last - first + 1 != count:
            # A hole: a pass over the keys names the first missing index.
            expect = first
            cur.first()
            for k in cur.iternext(values=False):
                index = _KEY.unpack(k)[0]
                if index != expect:
                    raise CorruptLogError(expect, f"is missing: the log jumps from {expect - 1} to {index}", self.path)
                expect += 1
        if verify:
            # Every record that may still be applied (above the applied index), and the newest ones (where a torn
            # write would be), are decoded and checked now; older applied records are checked when read (a
            # follower catching up), so a long log does not make start-up slow.
            start = max(first, min(self._applied + 1, last - self._cache_entries + 1))
            tail: deque[Entry] = deque(maxlen=self._cache_entries)
            expect = start
            cur.set_key(_KEY.pack(start))
            for k, v in cur.iternext():
                index = _KEY.unpack(k)[0]
                if index != expect:  # pragma: no cover - the count check above already found any hole
                    raise CorruptLogError(expect, f"is missing: the log jumps from {expect - 1} to {index}", self.path)
                tail.append(self._decode_record(index, v))
                expect += 1
            self._tail = list(tail)
            self._tail_bytes = _sizes(self._tail)
        if not self._tail and self._cache_entries:
            cur.last()
            budget = self._cache_entries
            backwards: list[Entry] = []
            for k, v in cur.iterprev():
                backwards.append(self._decode_record(_KEY.unpack(k)[0], v))
                budget -= 1
                if not budget:
                    break
            backwards.reverse()
            self._tail = backwards
            self._tail_bytes = _sizes(backwards)
        return last

    def _decode_record(self, index: int, raw: bytes | memoryview) -> Entry:
        if len(raw) < 4:
            raise CorruptLogError(index, f"record is truncated ({len(raw)} bytes)", self.path)
        payload = raw[4:]
        if _crc32(payload) != _CRC.unpack_from(raw)[0]:
            raise CorruptLogError(index, "record fails its checksum", self.path)
        try:
            e = decode_entry(payload)
        except CodecError as exc:
            raise CorruptLogError(index, f"record does not decode: {exc}", self.path) from exc
        if e.index != index:
            raise CorruptLogError(index, f"record holds the entry for index {e.index}", self.path)
        return e

    # -- LogStorage (reads) -----------------------------------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state, and the membership: the one set by ``set_conf_state`` (or the latest installed
        snapshot), else the snapshot's."""
        with self._lock:
            cs = self._conf_state if self._conf_state is not None else self._snap_meta.conf_state
            return self._hard_state, cs

    def first_index(self) -> int:
        return self._dummy_index + 1

    def last_index(self) -> int:
        return self._last_index

    def term(self, index: int) -> int:
        """Term at ``index`` for first_index() - 1 <= index <= last_index(); CompactedError below that range,
        UnavailableError above it."""
        with self._lock:
            cached = self._cached_term(index)
            if cached is not None:
                return cached
        # Below the tail cache: a read transaction. The gate is taken before the view lock (the lock order), and
        # the view is checked again under it: it may have moved meanwhile.
        self._gate.acquire_shared()
        try:
            with self._lock:
                while True:
                    cached = self._cached_term(index)
                    if cached is not None:
                        return cached
                    got = self._read_log(index, index + 1, None)
                    if got is not None:
                        return got[0].term
                    self._wait_published()
        finally:
            self._gate.release_shared()

    def _cached_term(self, index: int) -> int | None:
        """The term at ``index`` from the cached view, None if it must be read from LMDB (or the range error)."""
        off = index - self._tail_start
        if off >= 0:
            if index > self._last_index:
                raise UnavailableError(index)
            return self._tail[off].term
        if index <= self._dummy_index:
            if index == self._dummy_index:
                return self._dummy_term
            raise CompactedError(index)
        return None

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries in [lo, hi): at least one if the range is not empty, then as many as fit in ``max_size`` bytes
        (by ``entry_size``). CompactedError if lo <= first_index() - 1, UnavailableError if hi > last_index() + 1."""
        with self._lock:
            cached = self._cached_entries(lo, hi, max_size)
            if cached is not None:
                return cached
        self._gate.acquire_shared()  # below the tail: as in term()
        try:
            with self._lock:
                while True:
                    cached = self._cached_entries(lo, hi, max_size)
                    if cached is not None:
                        return cached
                    ts = self._tail_start
                    stored = self._read_log(lo, min(hi, ts), max_size)
                    if stored is None:
                        self._wait_published()
                        continue
                    if hi <= ts or len(stored) < ts - lo:
                        return stored  # the whole range was on disk, or the size limit cut it short
                    return limit_size(stored + self._tail[: hi - ts], max_size)
        finally:
            self._gate.release_shared()

    def _cached_entries(self, lo: int, hi: int, max_size: int | None) -> list[Entry] | None:
        """``entries(lo, hi, max_size)`` from the cached view (or its range error); None if LMDB must be read."""
        if lo <= self._dummy_index:
            raise CompactedError(lo)
        if hi > self._last_index + 1:
            raise UnavailableError(hi)
        if lo >= hi:
            return []
        ts = self._tail_start
        if lo >= ts:
            return limit_size(self._tail[lo - ts : hi - ts], max_size)
        return None

    def snapshot(self) -> Snapshot:
        """The installed snapshot (metadata and data); an empty one (index 0) if none was installed. For a snapshot
        installed with ``store_snapshot_data=False`` the data is ``b""`` (the state is in the state machine)."""
        with self._lock:
            if not self._snap_meta.index:
                return Snapshot(self._snap_meta)
        self._gate.acquire_shared()
        try:
            with self._lock:
                while True:
                    md = self._snap_meta
                    if not md.index:
                        return Snapshot(md)
                    txn = self._begin_read(buffers=True)
                    try:
                        if self._sees_published(txn):
                            return Snapshot(md, self._read_snapshot_data(txn))
                    finally:
                        txn.abort()
                    self._wait_published()
        finally:
            self._gate.release_shared()

    # -- state beyond the log -----------------------------------------------------------------------------------
    def conf_state(self) -> ConfState:
        """The membership as ``initial_state`` reports it."""
        return self.initial_state()[1]

    def applied_index(self) -> int:
        """The last index the state machine applied, as stored by ``write(applied=...)`` (0 if never set)."""
        return self._applied

    def applied_index_in(self, txn: lmdb.Transaction[Any]) -> int:
        """The applied index as of ``txn`` (a ``read_txn``): exactly the state machine state that ``txn`` sees,
        because ``write`` stores the applied index in the same transaction as the state machine's changes."""
        return self._meta_get(txn, _M_APPLIED, _decode_u64) or 0

    @contextmanager
    def read_txn(self, *, buffers: bool = False) -> Iterator[lmdb.Transaction[Any]]:
        """A read transaction on ``env`` for other layers (the KV state machine's own databases).

        Every read transaction in the process must come from here: growing the map (``set_mapsize``) requires
        that none is active, and this holds the gate (shared) that growth waits for. Any number may be open at
        once, from any threads. A long one (a snapshot dump) is allowed, but a map resize waits for it to end (and
        new read transactions of other threads wait behind that resize), so run it off the event loop. Inside it,
        this store's read methods (``term``, ``entries``, ``snapshot``, ``initial_state``, ``applied_index_in``) may
        be called; its mutating methods, ``open_db`` and ``close`` must not (they could wait for this very
        transaction). DurableStorageError if the store is closed."""
        self._gate.acquire_shared()
        try:
            txn = self._begin_read(buffers=buffers)
            try:
                yield txn
            finally:
                txn.abort()
        finally:
            self._gate.release_shared()

    def open_db(self, name: bytes, *, dupsort: bool = False, dupfixed: bool = False) -> lmdb._Database:
        """Open (creating) the named database ``name`` in this environment, for another layer. Call it at setup,
        not from inside ``write(apply=...)``. ``dupsort``: a key holds several values, sorted; ``dupfixed`` (with
        ``dupsort``): all of one size, packed. Returns python-lmdb's database handle."""
        if name in _RESERVED_DBS:
            raise ValueError(f"database name {name!r} is reserved for the log store")
        with self._write_lock:
            self._check_open()
            return self.env.open_db(name, dupsort=dupsort, dupfixed=dupfixed)

    # -- writes ---------------------------------------------------------------------------------------------------
    def write(
        self,
        *,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
        snapshot: Snapshot | None = None,
        store_snapshot_data: bool = True,
        conf_state: ConfState | None = None,
        applied: int | None = None,
        apply: Callable[[lmdb.Transaction[bytes]], object] | None = None,
        sync: bool = True,
    ) -> object:
        """Persist one Ready in ONE LMDB write transaction, then publish it to readers. In order:

        1. ``snapshot``: drop every log entry, store its metadata and data, make its membership the stored one,
           and set the compaction point to (snapshot index, term). ValueError if not newer than the installed one.
           With ``store_snapshot_data=False`` the metadata is recorded and the log reset exactly the same way, but
           ``snapshot.data`` is not stored (an empty payload is; ``snapshot()`` then returns ``data=b""``): for a
           snapshot whose state the state machine restores through ``apply`` in this same transaction (from a
           snapshot file), where ``data`` is only a token such as the file's path.
        2. ``entries``: append, first deleting every stored entry at or after ``entries[0].index`` (the conflicting
           suffix). Entries at or below the compaction point are skipped; ValueError if the entries are not
           consecutive or would leave a hole after last_index().
        3. ``hard_state``.
        4. ``conf_state``: the membership, as ``set_conf_state`` stores it (it overrides a snapshot's membership
           from step 1 in the same call).
        5. ``apply(txn)``: the state machine writes its own databases in the same transaction; its return value is
           returned. If the map must grow, the transaction is aborted and retried, so ``apply`` may run more than
           once: it must act only through ``txn`` (the result of the final, committed run is returned).
        6. ``applied``: the state machine's applied index (ValueError if it would decrease).
        7. commit.

        Any exception (from ``apply`` too) aborts the transaction: nothing of this call is stored or published.
        When this returns, everything is committed, and durable if ``sync`` is true (an explicit sync follows the
        commit). With ``sync=False`` a power loss may undo it (never partly; see the module docstring). A full disk
        raises StorageFullError with the store unchanged."""
        if applied is not None and applied < 0:
            raise ValueError(f"applied index must be >= 0, got {applied}")

        def stage(txn: lmdb.Transaction[bytes], p: _Pending) -> None:
            if snapshot is not None:
                self._stage_snapshot(txn, p, snapshot, store_snapshot_data)
            if entries:
                self._stage_entries(txn, p, entries)
            if hard_state is not None:
                self._put_meta(txn, p, _M_HARD_STATE, encode_hard_state(hard_state))
                p.hard_state = hard_state
            if conf_state is not None:
                self._put_meta(txn, p, _M_CONF_STATE, encode_conf_state(conf_state))
                p.conf_state = conf_state
            if apply is not None:
                p.result = apply(txn)
            if applied is not None:
                if applied < p.applied:
                    raise ValueError(f"applied index would go back from {p.applied} to {applied}")
                self._put_meta(txn, p, _M_APPLIED, _U64.pack(applied))
                p.applied = applied

        return self._transact(stage, sync)

    def set_hard_state(self, hs: HardState) -> None:
        self.write(hard_state=hs)

    def append(self, entries: Sequence[Entry]) -> None:
        """Append, truncating any stored entries at or after ``entries[0].index``."""
        if entries:
            self.write(entries=entries)

    def apply_snapshot(self, snap: Snapshot) -> None:
        self.write(snapshot=snap)

    def set_conf_state(self, cs: ConfState) -> None:
        """Persist the membership (returned by ``initial_state`` from now on, until a snapshot replaces it); the
        same as ``write(conf_state=cs)``."""
        self.write(conf_state=cs)

    def compact(self, index: int) -> None:
        """Discard entries up to and including ``index``; ``index`` and its term become the compaction point.
        A no-op if ``index`` is at or below the current one; UnavailableError if ``index`` > last_index()."""
        with self._write_lock:
            if index <= self._dummy_index:
                return
            if index > self._last_index:
                raise UnavailableError(index)
            term = self.term(index)

            def stage(txn: lmdb.Transaction[bytes], p: _Pending) -> None:
                cur = txn.cursor(self._log)
                stop = _key(index)
                if cur.first():
                    while True:
                        k = cur.key()
                        if not k or k > stop or not cur.delete():
                            break
                self._put_meta(txn, p, _M_DUMMY, encode_entry(Entry(term, index)))
                p.dummy_index, p.dummy_term = index, term

            self._transact(stage, True)

    def verify(self) -> tuple[int, list[str]]:
        """Read back and check every log record (its checksum, that it decodes, that its index is its key) and the
        meta records' consistency, in one read transaction: what ``raftkv check`` does offline. Returns the number of
        log records checked and the problems found (empty: none); the first damaged record ends the log check."""
        problems: list[str] = []
        n = 0
        hs, applied = self._hard_state, self._applied
        first, last = self._dummy_index + 1, self._last_index
        if hs.commit > last:
            problems.append(f"the hard state's commit index {hs.commit} is beyond the last log entry {last}")
        if applied > max(hs.commit, self._snap_meta.index):
            problems.append(f"the applied index {applied} is beyond the commit index {hs.commit}")
        if applied < self._dummy_index:
            problems.append(f"the log was compacted to {self._dummy_index}, past the applied index {applied}")
        with self.read_txn(buffers=True) as txn:
            cur = txn.cursor(self._log)
            if cur.set_key(_KEY.pack(first)) if last >= first else False:
                try:
                    for k, v in cur.iternext():
                        self._decode_record(_KEY.unpack(k)[0], v)
                        n += 1
                except StorageCorruption as e:
                    problems.append(e.what)
            if n != max(0, last - first + 1) and not problems:
                problems.append(f"the log should hold entries {first}..{last} but {n} were found")
        return n, problems

    def close(self) -> None:
        """Close the environment (idempotent), once every open read transaction has ended. The store must not be
        used afterwards (reads that need LMDB raise DurableStorageError)."""
        with self._write_lock:
            if self._closed:
                return
            self._gate.acquire_exclusive()
            try:
                self._closed = True
                self.env.close()
            finally:
                self._gate.release_exclusive()

    def __enter__(self) -> LmdbLogStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"LmdbLogStore(path={self.path!r}, first_index={self.first_index()}, last_index={self._last_index}, "
            f"applied={self._applied}, closed={self._closed})"
        )

    # -- the write machinery ----------------------------------------------------------------------------------------
    def _transact(self, stage: Callable[[lmdb.Transaction[bytes], _Pending], None], sync: bool) -> object:
        """Run ``stage`` in a write transaction and commit; retry with a bigger map on MapFullError; publish."""
        with self._write_lock:
            self._check_open()
            while True:
                p = _Pending(
                    self._dummy_index,
                    self._dummy_term,
                    self._last_index,
                    self._hard_state,
                    self._conf_state,
                    self._snap_meta,
                    self._applied,
                    self._gen + 1,
                )
                txn = self.env.begin(write=True)
                try:
                    stage(txn, p)
                    self._put_meta(txn, p, _M_GEN, _U64.pack(p.gen))
                    t_commit = time.perf_counter_ns()
                    txn.commit()
                    self.stats.commit_us += (time.perf_counter_ns() - t_commit) // 1000
                except lmdb.MapFullError:
                    txn.abort()
                    self._grow()
                    continue
                except BaseException as exc:
                    txn.abort()
                    if isinstance(exc, DurableStorageError):
                        raise
                    if _is_disk_full(exc) or (isinstance(exc, lmdb.Error) and _low_on_space(self.path)):
                        raise StorageFullError(f"{type(exc).__name__}: {exc}", self.path) from exc
                    if isinstance(exc, lmdb.Error):
                        raise DurableStorageError(f"writing failed: {exc}", self.path) from exc
                    raise
                break
            stats = self.stats
            stats.commits += 1
            stats.entries_written += p.entries_written
            stats.bytes_written += p.bytes_written
            # Published before the sync: nothing reads durability off the cached view (the driver sends what a
            # write promises only after write() returns), and readers that see this commit in LMDB need not wait.
            self._publish(p)
            if sync:
                t_sync = time.perf_counter_ns()
                try:
                    self.env.sync(True)
                except (lmdb.Error, OSError) as exc:
                    raise DurableStorageError(
                        f"fsync of {self.path} failed after a commit ({exc}): the write is committed but may not "
                        "be durable; stop the node and check the disk before restarting it",
                        self.path,
                    ) from exc
                stats.syncs += 1
                stats.sync_us += (time.perf_counter_ns() - t_sync) // 1000
            return p.result

    def _put_meta(self, txn: lmdb.Transaction[bytes], p: _Pending, key: bytes, payload: bytes) -> None:
        value = _record(payload)
        txn.put(key, value, db=self._meta)
        p.bytes_written += len(key) + len(value)

    def _stage_snapshot(self, txn: lmdb.Transaction[bytes], p: _Pending, snap: Snapshot, store_data: bool) -> None:
        md = snap.metadata
        if md.index <= p.snap_meta.index:
            raise ValueError(f"snapshot at {md.index} is out of date (the installed one is at {p.snap_meta.index})")
        txn.drop(self._log, delete=False)
        data = _record(snap.data if store_data else b"")
        txn.put(_S_DATA, data, db=self._snap)
        p.bytes_written += len(data)
        self._put_meta(txn, p, _M_SNAPSHOT, encode_snapshot_metadata(md))
        self._put_meta(txn, p, _M_CONF_STATE, encode_conf_state(md.conf_state))
        self._put_meta(txn, p, _M_DUMMY, encode_entry(Entry(md.term, md.index)))
        p.snap_meta = md
        p.conf_state = md.conf_state
        p.dummy_index, p.dummy_term, p.last_index = md.index, md.term, md.index
        p.reset_tail = True

    def _stage_entries(self, txn: lmdb.Transaction[bytes], p: _Pending, entries: Sequence[Entry]) -> None:
        first = p.dummy_index + 1
        if entries[-1].index < first:
            return  # all compacted away already
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        start = entries[0].index
        n = len(entries)
        if start > p.last_index + 1:
            raise ValueError(f"missing log entry [last: {p.last_index}, append at: {start}]")
        if list(map(_get_index, entries)) != list(range(start, start + n)):
            raise ValueError(f"entries to append are not consecutive from index {start}")
        if start <= p.last_index:  # delete the conflicting suffix [start, last]
            cur = txn.cursor(self._log)
            if cur.set_key(_key(start)):
                while cur.delete():
                    pass
        payloads = list(map(encode_entry, entries))
        records = list(map(add, map(_CRC.pack, map(_crc32, payloads)), payloads))
        keys = list(map(_key, range(start, start + n)))
        _, added = txn.cursor(self._log).putmulti(zip(keys, records, strict=True), append=True)
        if added != n:  # cannot happen: keys are consecutive and above every remaining key
            raise AssertionError(f"appended {added} of {n} records at {start} in {self.path}")
        p.last_index = start + n - 1
        p.appended = entries
        p.entries_written += n
        p.bytes_written += sum(map(len, records)) + 8 * n

    def _grow(self) -> None:
        current = self.env.info()["map_size"]
        if current >= self._max_map_size:
            raise StorageFullError(f"the LMDB map is full at {current} bytes, the configured max_map_size", self.path)
        new = min(current * 2, self._max_map_size)
        self._gate.acquire_exclusive()  # no read transaction may be active while the map is replaced
        try:
            self.env.set_mapsize(new)
        finally:
            self._gate.release_exclusive()
        self.stats.map_resizes += 1

    def _publish(self, p: _Pending) -> None:
        """Make a committed transaction visible to readers, all at once."""
        with self._lock:
            if p.reset_tail:  # a snapshot replaced the log: the cache holds just what was appended after it
                self._tail = list(p.appended)
                self._tail_bytes = _sizes(self._tail)
            elif p.appended:
                ents = p.appended
                keep = ents[0].index - self._tail_start
                if keep < 0:
                    self._tail = list(ents)
                    self._tail_bytes = _sizes(ents)
                else:
                    tail = self._tail
                    if keep < len(tail):
                        self._tail_bytes -= _sizes(tail[keep:])
                        del tail[keep:]
                    tail.extend(ents)
                    self._tail_bytes += _sizes(ents)
            self._dummy_index, self._dummy_term = p.dummy_index, p.dummy_term
            self._last_index = p.last_index
            self._tail_start = self._last_index + 1 - len(self._tail)
            below = self._dummy_index + 1 - self._tail_start  # cached entries a compaction removed
            if below > 0:
                self._tail_bytes -= _sizes(self._tail[:below])
                del self._tail[:below]
                self._tail_start += below
            if len(self._tail) > self._cache_entries * 9 // 8 or self._tail_bytes > self._cache_bytes * 9 // 8:
                self._trim_tail(self._cache_entries, self._cache_bytes)  # with slack, so trims are batched
            self._hard_state = p.hard_state
            self._conf_state = p.conf_state
            self._snap_meta = p.snap_meta
            self._applied = p.applied
            self._set_gen(p.gen)
            self._published.notify_all()

    def _trim_tail(self, max_entries: int, max_bytes: int) -> None:
        tail = self._tail
        drop = max(0, len(tail) - max_entries)
        size = self._tail_bytes - _sizes(tail[:drop])
        while size > max_bytes and drop < len(tail):
            size -= len(tail[drop].data) + 16
            drop += 1
        if drop:
            del tail[:drop]
            self._tail_bytes = size
        self._tail_start = self._last_index + 1 - len(tail)

    def _set_gen(self, gen: int) -> None:
        self._gen = gen
        self._gen_record = _record(_U64.pack(gen))

    # -- reads below the tail --------------------------------------------------------------------------------------
    def _read_log(self, lo: int, hi: int, max_size: int | None) -> list[Entry] | None:
        """Entries [lo, hi) (lo < hi) from LMDB, cut by ``max_size`` like ``limit_size``. Caller holds the lock and
        has checked the range against the cached view. None if LMDB is ahead of that view (see ``_wait_published``).
        The caller holds the gate too (shared)."""
        txn = self._begin_read(buffers=True)
        try:
            if not self._sees_published(txn):
                return None
            cur = txn.cursor(self._log)
            if not cur.set_key(_key(lo)):
                raise CorruptLogError(lo, "is missing from the log (a hole)", self.path)
            out: list[Entry] = []
            size = 0
            expect = lo
            for k, v in cur.iternext():
                index = _KEY.unpack(k)[0]
                if index != expect:
                    break
                e = self._decode_record(index, v)
                if max_size is not None:
                    size += len(e.data) + 16
                    if size > max_size and out:
                        return out
                out.append(e)
                expect += 1
                if expect == hi:
                    return out
            raise CorruptLogError(expect, "is missing from the log (a hole)", self.path)
        finally:
            txn.abort()

    def _sees_published(self, txn: lmdb.Transaction[memoryview]) -> bool:
        """Whether a read transaction sees exactly the published state (not a commit still being published)."""
        raw = txn.get(_M_GEN, db=self._meta)
        return raw is not None and bytes(raw) == self._gen_record

    def _wait_published(self) -> None:
        """Wait (lock released) until the writer publishes the commit a reader's transaction already saw."""
        gen = self._gen
        if not self._published.wait_for(lambda: self._gen != gen, timeout=_PUBLISH_WAIT_S):
            raise DurableStorageError(
                f"the log store's writer committed to {self.path} but did not publish the result within "
                f"{_PUBLISH_WAIT_S} s; the writer thread is probably dead",
                self.path,
            )

    def _read_snapshot_data(self, txn: lmdb.Transaction) -> bytes:
        raw = txn.get(_S_DATA, db=self._snap)
        if raw is None:
            raise StorageCorruption(f"the data of the snapshot at {self._snap_meta.index} is missing", self.path)
        return self._check_record(raw, f"the data of the snapshot at {self._snap_meta.index}")

    def _begin_read(self, *, buffers: bool) -> lmdb.Transaction[Any]:
        """A read transaction; the caller holds the gate (shared) and aborts the transaction before releasing it."""
        self._check_open()
        txn: lmdb.Transaction[Any] = self.env.begin(buffers=True) if buffers else self.env.begin()
        return txn

    def _check_open(self) -> None:
        if self._closed:
            raise DurableStorageError(f"the log store at {self.path} is closed", self.path)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _decode_u64(payload: bytes) -> int:
    value: int = _U64.unpack(payload)[0]
    return value


_LOW_SPACE_BYTES = 4 << 20


def _low_on_space(path: str | os.PathLike[str]) -> bool:
    """True when the filesystem holding ``path`` has (almost) no room left. LMDB reports a short write - what a full
    disk produces - as EIO, not ENOSPC, so a failed commit is classified as "disk full" by looking at the space."""
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < _LOW_SPACE_BYTES


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, lmdb.DiskError):
        return True
    if isinstance(exc, lmdb.Error):
        return getattr(exc, "code", None) in _DISK_FULL_ERRNOS
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS
