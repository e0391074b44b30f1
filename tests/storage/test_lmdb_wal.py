"""LmdbLogStore beyond the shared conformance suite: persistence across reopen, corruption and holes reported at
open, the tail cache against a model under random histories, map growth, the apply callback's transaction, a full
disk, and readers racing the writer."""

from __future__ import annotations

import errno
import itertools
import struct
import tempfile
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv import codec
from raftkv.raft import MemoryStorage
from raftkv.raft.errors import CompactedError, UnavailableError
from raftkv.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from raftkv.storage import (
    CorruptLogError,
    DurableStorageError,
    LmdbLogStore,
    StorageCorruption,
    StorageFormatError,
    StorageFullError,
)
from tests.storage.helpers import ents

KEY = struct.Struct(">Q")




@pytest.fixture
def wal_dir(tmp_path: Path) -> Path:
    return tmp_path / "wal"


def raw_env(path: Path) -> lmdb.Environment:
    """The store's environment opened directly (the store must be closed), to damage it like a disk would."""
    return lmdb.open(str(path), max_dbs=16)


# -- reopen -------------------------------------------------------------------------------------------------------


def test_reopen_keeps_everything(open_store: Callable[..., LmdbLogStore]) -> None:
    s = open_store(sync=True)
    snapshot = Snapshot(SnapshotMetadata(ConfState((1, 2, 3), (4,)), 10, 2), b"state at 10")
    kv = s.open_db(b"kv")
    s.write(snapshot=snapshot, entries=ents(11, 20, term=3), hard_state=HardState(3, 1, 15))
    s.write(applied=15, apply=lambda txn: txn.put(b"k", b"v", db=kv))
    s.set_conf_state(ConfState((1, 2, 3, 4)))
    before = (s.initial_state(), s.snapshot(), s.first_index(), s.last_index(), s.entries(11, 21), s.term(10))
    s.close()

    s = open_store()
    assert (s.initial_state(), s.snapshot(), s.first_index(), s.last_index(), s.entries(11, 21), s.term(10)) == before
    assert s.initial_state() == (HardState(3, 1, 15), ConfState((1, 2, 3, 4)))
    assert s.conf_state() == ConfState((1, 2, 3, 4))
    assert s.applied_index() == 15
    kv = s.open_db(b"kv")
    with s.read_txn() as txn:
        assert txn.get(b"k", db=kv) == b"v"


def test_reopen_without_verify_and_a_compacted_log(open_store: Callable[..., LmdbLogStore]) -> None:
    s = open_store(cache_entries=3)
    s.append(ents(1, 50))
    s.compact(20)
    s.close()
    s = open_store(verify=False, cache_entries=3)
    assert (s.first_index(), s.last_index(), s.term(20)) == (21, 50, 1)
    assert s.entries(21, 51) == ents(21, 50)
    with pytest.raises(CompactedError):
        s.term(19)


def test_a_fresh_store_is_empty_and_durable_by_default(tmp_path: Path) -> None:
    with LmdbLogStore(tmp_path / "new") as s:
        # Commits fsync their data pages; write(sync=True) fsyncs the meta page after (test_sync_accounting).
        assert s.env.flags()["sync"] and not s.env.flags()["metasync"]
        assert (s.first_index(), s.last_index(), s.applied_index()) == (1, 0, 0)
        assert s.initial_state() == (HardState(), ConfState())


# -- corruption and holes ---------------------------------------------------------------------------------------


def _flip_byte(path: Path, index: int, offset: int) -> None:
    env = raw_env(path)
    try:
        log = env.open_db(b"log", create=False)
        with env.begin(write=True) as txn:
            value = bytearray(txn.get(KEY.pack(index), db=log))
            value[offset] ^= 0x40
            txn.put(KEY.pack(index), bytes(value), db=log)
    finally:
        env.close()


@pytest.mark.parametrize("offset", [0, 4, -1], ids=["in-checksum", "in-header", "in-data"])
def test_a_corrupt_record_is_reported_at_open(
    open_store: Callable[..., LmdbLogStore], wal_dir: Path, offset: int
) -> None:
    s = open_store()
    s.append(ents(1, 100))
    s.close()
    _flip_byte(wal_dir, 37, offset)
    with pytest.raises(CorruptLogError) as ei:
        open_store()
    err = ei.value
    assert err.index == 37
    assert isinstance(err, StorageCorruption)
    assert "index 37" in str(err)
    assert str(wal_dir) in str(err)
    assert "restore the node from a peer" in str(err)
    assert "wipe its data directory" in str(err)


def test_a_corrupt_old_record_without_verify_is_reported_when_read(
    open_store: Callable[..., LmdbLogStore], wal_dir: Path
) -> None:
    s = open_store()
    s.append(ents(1, 100))
    s.close()
    _flip_byte(wal_dir, 10, -1)
    s = open_store(verify=False, cache_entries=5)  # only the cached tail (96..100) is decoded at open
    assert s.entries(90, 101) == ents(90, 100)
    with pytest.raises(CorruptLogError) as ei:
        s.entries(5, 20)
    assert ei.value.index == 10
    with pytest.raises(CorruptLogError):
        s.term(10)


def test_open_checks_every_unapplied_record_and_the_newest_ones_and_old_applied_ones_when_read(
    open_store: Callable[..., LmdbLogStore], wal_dir: Path
) -> None:
    """A long applied log does not make start-up slow: records at or below the applied index, older than the newest
    ``cache_entries``, are checked when read instead."""
    s = open_store()
    s.append(ents(1, 100))
    s.write(applied=60)
    s.close()
    _flip_byte(wal_dir, 20, -1)  # applied and old: found when read
    s = open_store(cache_entries=10)
    assert s.entries(30, 101) == ents(30, 100)
    with pytest.raises(CorruptLogError) as ei:
        s.entries(15, 25)
    assert ei.value.index == 20
    s.close()
    for index in (61, 95):  # not yet applied / among the newest (where a torn write would be): found at open
        _flip_byte(wal_dir, 20, -1)  # repair the first one
        _flip_byte(wal_dir, index, -1)
        with pytest.raises(CorruptLogError) as ei:
            open_store(cache_entries=10)
        assert ei.value.index == index
        _flip_byte(wal_dir, index, -1)
        _flip_byte(wal_dir, 20, -1)


def test_a_record_under_the_wrong_key_is_reported(open_store: Callable[..., LmdbLogStore], wal_dir: Path) -> None:
    s = open_store()
    s.append(ents(1, 10))
    s.close()
    env = raw_env(wal_dir)
    log = env.open_db(b"log", create=False)
    with env.begin(write=True) as txn:
        txn.put(KEY.pack(4), txn.get(KEY.pack(5), db=log), db=log)  # a valid record, at the wrong index
    env.close()
    with pytest.raises(CorruptLogError, match="holds the entry for index 5") as ei:
        open_store()
    assert ei.value.index == 4


@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize(("missing", "reported"), [(40, 40), (1, 1), (100, None)])
def test_a_hole_in_the_log_is_reported_at_open(
    open_store: Callable[..., LmdbLogStore], wal_dir: Path, verify: bool, missing: int, reported: int | None
) -> None:
    s = open_store()
    s.append(ents(1, 100))
    s.close()
    env = raw_env(wal_dir)
    with env.begin(write=True) as txn:
        assert txn.delete(KEY.pack(missing), db=env.open_db(b"log", txn=txn, create=False))
    env.close()
    if reported is None:  # losing the last entry leaves a consistent (shorter) log: no way to tell
        assert open_store(verify=verify).last_index() == 99
        return
    with pytest.raises(CorruptLogError, match="missing") as ei:
        open_store(verify=verify)
    assert ei.value.index == reported


def test_an_entry_below_the_compaction_point_is_reported(
    open_store: Callable[..., LmdbLogStore], wal_dir: Path
) -> None:
    s = open_store()
    s.append(ents(1, 10))
    s.compact(5)
    s.close()
    env = raw_env(wal_dir)
    with env.begin(write=True) as txn:
        txn.put(KEY.pack(3), b"\x00" * 8, db=env.open_db(b"log", txn=txn, create=False))
    env.close()
    with pytest.raises(CorruptLogError, match="below the compaction point") as ei:
        open_store()
    assert ei.value.index == 3


def test_corrupt_meta_and_foreign_format_are_reported(open_store: Callable[..., LmdbLogStore], wal_dir: Path) -> None:
    s = open_store()
    s.set_hard_state(HardState(2, 1, 0))
    s.close()
    env = raw_env(wal_dir)
    meta = env.open_db(b"meta", create=False)
    with env.begin(write=True) as txn:
        good = txn.get(b"hard_state", db=meta)
        txn.put(b"hard_state", good[:-1] + bytes([good[-1] ^ 1]), db=meta)
    env.close()
    with pytest.raises(StorageCorruption, match="hard_state"):
        open_store()

    env = raw_env(wal_dir)
    meta = env.open_db(b"meta", create=False)
    with env.begin(write=True) as txn:
        txn.put(b"hard_state", good, db=meta)
        payload = b"raftkv-lmdb-wal/99"
        txn.put(b"format", struct.pack(">I", zlib.crc32(payload)) + payload, db=meta)
    env.close()
    with pytest.raises(StorageFormatError, match="wal/99"):
        open_store()


def test_corrupt_snapshot_data_is_reported(open_store: Callable[..., LmdbLogStore], wal_dir: Path) -> None:
    s = open_store()
    s.apply_snapshot(Snapshot(SnapshotMetadata(ConfState((1,)), 5, 1), b"snapshot data"))
    s.close()
    env = raw_env(wal_dir)
    snapdb = env.open_db(b"snap", create=False)
    with env.begin(write=True) as txn:
        txn.put(b"data", txn.get(b"data", db=snapdb)[:-1] + b"!", db=snapdb)
    env.close()
    with pytest.raises(StorageCorruption, match="snapshot at 5"):
        open_store()
    s = open_store(verify=False)
    with pytest.raises(StorageCorruption, match="checksum"):
        s.snapshot()


# -- the tail cache against MemoryStorage, under random histories ---------------------------------------------------

Op = tuple[Any, ...]
ops = st.one_of(
    # append count entries of term `term` starting `back` entries before last_index() + 1 (truncating, maybe
    # reaching into the compacted prefix, or leaving a hole when back < 0)
    st.tuples(st.just("append"), st.integers(-1, 12), st.integers(0, 12), st.integers(1, 9)),
    st.tuples(st.just("compact"), st.integers(-2, 12)),  # compact `back` entries before the last one
    st.tuples(st.just("snapshot"), st.integers(-3, 6), st.integers(1, 9)),  # at last_index() + delta
    st.tuples(st.just("hard_state"), st.integers(0, 9), st.integers(0, 3)),
    st.tuples(st.just("reopen"), st.booleans()),
)


def _outcome(f: Callable[[], Any]) -> Any:
    try:
        return ("ok", f())
    except (CompactedError, UnavailableError) as exc:
        return (type(exc).__name__, exc.index)
    except ValueError:
        return ("ValueError",)


def _same_outcome(model: MemoryStorage, store: LmdbLogStore, method: str, *args: Any) -> None:
    """Call ``method`` on both; they must return or raise alike."""
    expected = _outcome(lambda: getattr(model, method)(*args))
    assert _outcome(lambda: getattr(store, method)(*args)) == expected, (method, args)


def _observe(s: Any) -> list[Any]:
    """What a reader can see: bounds, state, and reads around both ends (where the compaction point and, for the
    small caches used here, the cache boundary are) and in the middle."""
    first, last = s.first_index(), s.last_index()
    seen: list[Any] = [first, last, s.initial_state(), s.snapshot()]
    probes = sorted({*range(first - 3, first + 2), (first + last) // 2, *range(last - 8, last + 3)} - {-3, -2, -1})
    seen += [_outcome(lambda i=i: s.term(i)) for i in probes]
    for lo in probes:
        for hi in (lo, lo + 1, lo + 3, last + 1, last + 2):
            for max_size in (None, 0, 40, 100):
                seen.append(_outcome(lambda lo=lo, hi=hi, m=max_size: s.entries(lo, hi, m)))
    return seen


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=25), st.integers(0, 6))
def test_random_histories_match_memory_storage(history: list[Op], cache_entries: int) -> None:
    model = MemoryStorage()
    with tempfile.TemporaryDirectory() as d:
        kw: dict[str, Any] = {"sync": False, "cache_entries": cache_entries, "cache_bytes": 150}
        store = LmdbLogStore(d, **kw)
        try:
            for op in history:
                kind = op[0]
                last = model.last_index()
                if kind == "append":
                    _, back, n, term = op
                    lo = max(1, last + 1 - back)
                    _same_outcome(model, store, "append", ents(lo, lo + n - 1, term=term, size=lo % 5 * 10))
                elif kind == "compact":
                    _same_outcome(model, store, "compact", last - op[1])
                elif kind == "snapshot":
                    snap = Snapshot(SnapshotMetadata(ConfState((1, 2)), max(0, last + op[1]), op[2]), b"s")
                    _same_outcome(model, store, "apply_snapshot", snap)
                elif kind == "hard_state":
                    hs = HardState(op[1], op[2], 0)
                    model.set_hard_state(hs)
                    store.set_hard_state(hs)
                else:
                    store.close()
                    store = LmdbLogStore(d, verify=op[1], **kw)
                assert _observe(store) == _observe(model), f"after {op}"
                assert len(store._tail) <= max(cache_entries * 9 // 8, 1)
        finally:
            store.close()


# -- map growth -------------------------------------------------------------------------------------------------


def test_the_map_grows_as_needed(open_store: Callable[..., LmdbLogStore]) -> None:
    s = open_store(map_size=64 << 10, cache_entries=10)
    kv = s.open_db(b"kv")
    big = ents(1, 300, size=2000)  # ~600 KB into a 64 KB map
    for i in range(0, 300, 30):
        s.write(entries=big[i : i + 30], apply=lambda txn, i=i: txn.put(b"k%d" % i, b"v" * 1000, db=kv))
    assert s.stats.map_resizes >= 3
    assert s.env.info()["map_size"] >= (64 << 10) * 8
    assert s.entries(1, 301) == big
    with s.read_txn() as txn:  # the other layer's database handle survived the resizes
        assert txn.get(b"k270", db=kv) == b"v" * 1000
    s.close()
    s = open_store(map_size=64 << 10)
    assert s.entries(1, 301) == big


def test_apply_runs_again_when_the_map_grows(open_store: Callable[..., LmdbLogStore]) -> None:
    s = open_store(map_size=64 << 10)
    kv = s.open_db(b"kv")
    calls = []

    def apply(txn: lmdb.Transaction[bytes]) -> int:
        calls.append(1)
        for i in range(100):
            txn.put(b"%d" % i, bytes(2000), db=kv)  # more than the map holds: MapFullError in here
        return len(calls)

    assert s.write(entries=ents(1, 3), apply=apply) == len(calls) > 1
    assert s.last_index() == 3
    with s.read_txn() as txn:
        assert txn.stat(kv)["entries"] == 100


def test_the_map_stops_growing_at_max_map_size(open_store: Callable[..., LmdbLogStore]) -> None:
    s = open_store(map_size=64 << 10, max_map_size=128 << 10)
    s.append(ents(1, 10))
    with pytest.raises(StorageFullError, match="max_map_size"):
        s.append(ents(11, 200, size=4000))
    assert s.last_index() == 10
    assert s.entries(1, 11) == ents(1, 10)


# -- the apply callback ----------------------------------------------------------------------------------------


def test_apply_shares_the_transaction(open_store: Callable[..., LmdbLogStore]) -> None:
    s = open_store()
    kv = s.open_db(b"kv")

    def apply(txn: lmdb.Transaction[bytes]) -> str:
        txn.put(b"key", b"value", db=kv)
        return "applied"

    assert s.write(entries=ents(1, 3), hard_state=HardState(1, 1, 3), apply=apply, applied=3) == "applied"
    with s.read_txn() as txn:
        assert txn.get(b"key", db=kv) == b"value"
    assert s.applied_index() == 3


def test_an_exception_in_apply_aborts_everything(open_store: Callable[..., LmdbLogStore]) -> None:
    s = open_store(cache_entries=2)
    kv = s.open_db(b"kv")
    s.write(entries=ents(1, 5), hard_state=HardState(1, 1, 2), applied=2)
    stats = (s.stats.commits, s.stats.entries_written)

    class Boom(Exception):
        pass

    def apply(txn: lmdb.Transaction[bytes]) -> None:
        txn.put(b"key", b"value", db=kv)
        raise Boom

    with pytest.raises(Boom):
        s.write(
            snapshot=Snapshot(SnapshotMetadata(ConfState((1,)), 3, 1)),
            entries=ents(4, 9, term=2),
            hard_state=HardState(2, 1, 9),
            apply=apply,
            applied=9,
        )
    expected = (1, 5, HardState(1, 1, 2), 2, ents(1, 5))
    assert (s.first_index(), s.last_index(), s.initial_state()[0], s.applied_index(), s.entries(1, 6)) == expected
    assert s.snapshot().is_empty
    assert (s.stats.commits, s.stats.entries_written) == stats
    with s.read_txn() as txn:
        assert txn.get(b"key", db=kv) is None
    s.close()
    s = open_store()  # and on disk
    assert (s.first_index(), s.last_index(), s.initial_state()[0], s.applied_index(), s.entries(1, 6)) == expected


def test_write_validates_inside_the_transaction(open_store: Callable[..., LmdbLogStore]) -> None:
    s = open_store()
    s.append(ents(1, 5))
    with pytest.raises(ValueError, match="not consecutive"):
        s.write(entries=[Entry(1, 6), Entry(1, 8)], hard_state=HardState(9, 9, 0))
    with pytest.raises(ValueError, match="missing log entry"):  # the snapshot's log starts at 11, not 6
        s.write(snapshot=Snapshot(SnapshotMetadata(index=10, term=1)), entries=ents(12, 13))
    s.write(applied=4)
    with pytest.raises(ValueError, match="go back"):
        s.write(applied=3)
    assert (s.last_index(), s.initial_state()[0], s.snapshot().is_empty, s.applied_index()) == (5, HardState(), True, 4)


def test_snapshot_and_entries_in_one_write(open_store: Callable[..., LmdbLogStore]) -> None:
    s = open_store(cache_entries=3)
    s.append(ents(1, 20))
    snap = Snapshot(SnapshotMetadata(ConfState((1, 2)), 30, 4), b"thirty")
    s.write(snapshot=snap, entries=ents(31, 40, term=4), hard_state=HardState(4, 2, 30), applied=30)
    assert (s.first_index(), s.last_index(), s.term(30), s.term(40)) == (31, 40, 4, 4)
    assert s.entries(31, 41) == ents(31, 40, term=4)
    assert s.snapshot() == snap


def test_open_db_refuses_the_store_s_own_names(open_store: Callable[..., LmdbLogStore]) -> None:
    s = open_store()
    for name in (b"log", b"meta", b"snap"):
        with pytest.raises(ValueError, match="reserved"):
            s.open_db(name)


# -- sync accounting ---------------------------------------------------------------------------------------


def test_sync_accounting(open_store: Callable[..., LmdbLogStore]) -> None:
    s = open_store(sync=False)
    s.write(entries=ents(1, 10), sync=False)
    s.write(entries=ents(11, 20), sync=True)
    assert (s.stats.commits, s.stats.syncs, s.stats.entries_written) == (2, 1, 20)
    assert s.stats.bytes_written > 20 * 8
    s.close()
    s = open_store(sync=True)
    spy = _SyncSpy(s.env)
    s.env = spy  # type: ignore[assignment]
    s.write(entries=ents(21, 22))  # sync=True by default: commit (data pages fsynced), then fsync the meta page
    assert (s.stats.commits, s.stats.syncs, spy.syncs) == (1, 1, 1)
    s.write(applied=21, sync=False)  # nothing promised: the commit's own data fsync only
    assert (s.stats.commits, s.stats.syncs, spy.syncs) == (2, 1, 1)


class _SyncSpy:
    """Wraps the real environment and counts explicit syncs."""

    def __init__(self, env: lmdb.Environment) -> None:
        self._env = env
        self.syncs = 0

    def sync(self, force: bool = False) -> None:
        self.syncs += 1
        self._env.sync(force)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


# -- a full disk -------------------------------------------------------------------------------------------------


class _FailingCommitEnv:
    """Wraps the real environment; write transactions fail at commit with ``error`` (as a full disk would)."""

    def __init__(self, env: lmdb.Environment, error: BaseException) -> None:
        self._env = env
        self._error = error

    def begin(self, *args: Any, **kw: Any) -> Any:
        txn = self._env.begin(*args, **kw)
        return _FailingCommitTxn(txn, self._error) if kw.get("write") else txn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


class _FailingCommitTxn:
    def __init__(self, txn: Any, error: BaseException) -> None:
        self._txn = txn
        self._error = error

    def commit(self) -> None:
        self._txn.abort()  # what LMDB does with a transaction whose commit failed
        raise self._error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._txn, name)


@pytest.mark.parametrize(
    "error",
    [
        lmdb.DiskError("mdb_txn_commit", errno.ENOSPC),
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
    ],
    ids=["lmdb-DiskError", "OSError-ENOSPC", "OSError-EDQUOT"],
)
def test_a_full_disk_raises_storage_full_and_changes_nothing(
    open_store: Callable[..., LmdbLogStore], monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    s = open_store(cache_entries=4)
    s.write(entries=ents(1, 10), hard_state=HardState(1, 1, 5), applied=5)
    real_env = s.env
    monkeypatch.setattr(s, "env", _FailingCommitEnv(real_env, error))
    with pytest.raises(StorageFullError) as ei:
        s.write(entries=ents(8, 15, term=2), hard_state=HardState(2, 1, 9), applied=9)
    assert isinstance(ei.value, DurableStorageError)
    assert str(s.path) in str(ei.value)
    assert "nothing from this write was stored" in str(ei.value)
    assert ei.value.__cause__ is error
    # the store is unchanged, and readable, through both the cache and LMDB
    assert (s.last_index(), s.term(10), s.initial_state()[0], s.applied_index()) == (10, 1, HardState(1, 1, 5), 5)
    assert s.entries(1, 11) == ents(1, 10)
    # once space is back, writes go through
    monkeypatch.setattr(s, "env", real_env)
    s.write(entries=ents(8, 15, term=2), hard_state=HardState(2, 1, 9), applied=9)
    assert s.entries(1, 16) == ents(1, 7) + ents(8, 15, term=2)


def test_disk_full_inside_apply_is_storage_full(open_store: Callable[..., LmdbLogStore]) -> None:
    s = open_store()

    def apply(txn: lmdb.Transaction[bytes]) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/snapshots/tmp")

    with pytest.raises(StorageFullError, match="No space left"):
        s.write(entries=ents(1, 3), apply=apply)
    assert s.last_index() == 0


# -- readers racing the writer -------------------------------------------------------------------------------------


def test_a_reader_waits_for_a_commit_to_be_published(
    open_store: Callable[..., LmdbLogStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between an LMDB commit and its publication to the cache, a reader's transaction can see newer data than the
    cached bounds it checked. It must not answer from that mix: it waits for the publication, then answers from
    the new state (here: the entry it asked for was compacted away)."""
    s = open_store(cache_entries=2)
    s.append(ents(1, 20))
    committed, release, reader_waits = threading.Event(), threading.Event(), threading.Event()
    real_publish, real_wait = s._publish, s._wait_published

    def slow_publish(p: Any) -> None:
        committed.set()
        assert release.wait(10)
        real_publish(p)

    def observed_wait() -> None:
        reader_waits.set()
        real_wait()

    monkeypatch.setattr(s, "_publish", slow_publish)
    monkeypatch.setattr(s, "_wait_published", observed_wait)
    writer = threading.Thread(target=s.compact, args=(15,))
    writer.start()
    try:
        assert committed.wait(10)
        got: list[Any] = []
        reader = threading.Thread(target=lambda: got.append(_outcome(lambda: s.entries(5, 8))))
        reader.start()
        assert reader_waits.wait(10)  # it saw the commit in LMDB before the cache did
        assert not got
        release.set()
        reader.join(10)
        assert got == [("CompactedError", 5)]
    finally:
        release.set()
        writer.join(10)
    assert s.first_index() == 16


def test_concurrent_reads_while_writing_and_growing(open_store: Callable[..., LmdbLogStore]) -> None:
    """One writer thread appends (growing the map several times, truncating now and then, compacting); the
    reader checks every answer is one a consistent state could give."""
    s = open_store(map_size=64 << 10, cache_entries=16)
    n_batches = 150
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            last = 0
            for b in range(n_batches):
                lo = last + 1 if b % 10 else max(s.first_index(), last - 3)  # every 10th batch truncates
                batch = ents(lo, lo + 9, term=b + 1, size=300)
                s.write(entries=batch, hard_state=HardState(b + 1, 1, 0))
                last = batch[-1].index
                if b % 25 == 24:
                    s.compact(last - 50)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    reads = 0
    while t.is_alive() or not reads:
        first, last = s.first_index(), s.last_index()
        if last < first:
            continue  # nothing written yet
        lo = max(first, last - 80)
        try:
            got = s.entries(lo, last + 1, 10_000)
        except (CompactedError, UnavailableError):
            continue  # the bounds moved between reading them and asking
        assert got, (lo, last)
        assert [e.index for e in got] == list(range(lo, lo + len(got)))
        assert all(e.data.startswith(b"%d:%d:" % (e.index, e.term)) for e in got)
        assert all(a.term <= b.term for a, b in itertools.pairwise(got))
        reads += 1
    t.join()
    assert not errors, errors
    assert s.stats.map_resizes >= 2
    assert reads > 0
    assert s.entries(s.first_index(), s.last_index() + 1)[-1].index == s.last_index()


def test_codec_is_the_record_format(open_store: Callable[..., LmdbLogStore], wal_dir: Path) -> None:
    """A log record is crc32(payload) + codec.encode_entry(entry), keyed by the big-endian index."""
    s = open_store()
    e = Entry(3, 1, 0, b"payload")
    s.append([e])
    s.close()
    env = raw_env(wal_dir)
    with env.begin() as txn:
        raw = txn.get(KEY.pack(1), db=env.open_db(b"log", txn=txn, create=False))
    env.close()
    payload = codec.encode_entry(e)
    assert raw == struct.pack(">I", zlib.crc32(payload)) + payload
