"""What LmdbLogStore offers snapshots: read transactions that run side by side (a long snapshot dump does not hold
up other readers) while a map resize waits for them, membership stored in the same transaction as a write, and a
snapshot install that records the metadata and resets the log without storing the snapshot's data."""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb
import pytest

from raftkv.raft.types import ConfState, HardState, Snapshot, SnapshotMetadata
from raftkv.storage import DurableStorageError, LmdbLogStore
from tests.storage.helpers import ents


def wait_for(pred: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll ``pred`` (a bound on the wait, not a speed assertion)."""
    done = threading.Event()
    for _ in range(int(timeout_s / 0.005)):
        if pred():
            return True
        done.wait(0.005)
    return pred()


# -- readers side by side, a resize waiting for them ----------------------------------------------------------------


def test_two_read_transactions_at_once_from_two_threads_and_a_resize_waits_for_them(
    open_store: Callable[..., LmdbLogStore],
) -> None:
    s = open_store(map_size=64 << 10, cache_entries=4)
    s.append(ents(1, 20))
    inside = [threading.Event(), threading.Event()]
    release = threading.Event()
    errors: list[BaseException] = []
    seen: list[int] = []

    def long_reader(i: int) -> None:
        try:
            with s.read_txn() as txn:
                seen.append(s.applied_index_in(txn))
                inside[i].set()
                assert release.wait(10)
                # Still inside its own transaction while the resize waits: this thread's nested reads go ahead
                # (the resize waits for this very thread), here one that must read LMDB below the tail cache.
                assert s.term(3) == 1 and [e.index for e in s.entries(2, 4)] == [2, 3]
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=long_reader, args=(i,)) for i in range(2)]
    for t in readers:
        t.start()
    assert inside[0].wait(10) and inside[1].wait(10), "the second read transaction did not wait for the first"
    assert s._gate.readers == 2

    writer = threading.Thread(target=lambda: s.append(ents(21, 120, size=2000)))  # ~200 KiB: the map must grow
    writer.start()
    assert wait_for(lambda: s._gate.resize_waiting), "the writer should be waiting to resize"
    assert s.stats.map_resizes == 0 and s.last_index() == 20

    late: list[int] = []
    late_reader = threading.Thread(target=lambda: late.append(_read_once(s)))
    late_reader.start()
    late_reader.join(0.2)
    assert late_reader.is_alive() and not late, "a new reader of another thread waits behind the pending resize"
    assert s.term(20) == 1, "reads served from the cached view never wait"

    release.set()
    for t in readers:
        t.join(10)
    writer.join(10)
    late_reader.join(10)
    assert not errors, errors
    assert not writer.is_alive() and s.stats.map_resizes >= 1 and s.last_index() == 120
    assert late == [0] and seen == [0, 0]
    assert s._gate.readers == 0 and not s._gate.resize_waiting


def _read_once(s: LmdbLogStore) -> int:
    with s.read_txn() as txn:
        return s.applied_index_in(txn)


def test_close_waits_for_open_readers_and_reads_after_close_fail_cleanly(
    open_store: Callable[..., LmdbLogStore],
) -> None:
    s = open_store(cache_entries=2)
    s.append(ents(1, 10))
    inside, release = threading.Event(), threading.Event()

    def reader() -> None:
        with s.read_txn():
            inside.set()
            release.wait(10)

    t = threading.Thread(target=reader)
    t.start()
    assert inside.wait(10)
    closer = threading.Thread(target=s.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive(), "close() must not close the environment under an open read transaction"
    release.set()
    t.join(10)
    closer.join(10)
    assert not closer.is_alive()
    with pytest.raises(DurableStorageError, match="closed"), s.read_txn():
        pass
    with pytest.raises(DurableStorageError, match="closed"):
        s.entries(1, 3)


def test_resize_or_close_inside_a_read_transaction_is_refused(open_store: Callable[..., LmdbLogStore]) -> None:
    s = open_store(map_size=64 << 10)
    with s.read_txn(), pytest.raises(RuntimeError, match="wait for itself"):
        s.append(ents(1, 100, size=2000))  # needs a resize, which would wait for this thread forever
    assert s.last_index() == 0
    s.append(ents(1, 100, size=2000))
    assert s.last_index() == 100


# -- conf_state in write() -------------------------------------------------------------------------------------------


def test_write_stores_the_membership_in_the_same_transaction(open_store: Callable[..., LmdbLogStore]) -> None:
    s = open_store()
    cs = ConfState((1, 2, 3), (4,))
    s.write(entries=ents(1, 3), hard_state=HardState(1, 1, 3), conf_state=cs, applied=3)
    assert s.initial_state() == (HardState(1, 1, 3), cs)

    def failing_apply(txn: Any) -> None:
        raise RuntimeError("apply failed")

    with pytest.raises(RuntimeError):
        s.write(entries=ents(4, 4), conf_state=ConfState((1, 2)), apply=failing_apply)
    assert s.conf_state() == cs and s.last_index() == 3, "nothing of a failed write is stored"
    # With a snapshot in the same call, the explicit membership wins over the snapshot's.
    md = SnapshotMetadata(ConfState((1, 2)), 10, 2)
    s.write(snapshot=Snapshot(md, b"data"), conf_state=ConfState((1, 2, 5)))
    assert s.conf_state() == ConfState((1, 2, 5))
    s.close()
    s = open_store()
    assert s.conf_state() == ConfState((1, 2, 5))
    s.set_conf_state(ConfState((7,)))
    assert s.conf_state() == ConfState((7,))


# -- snapshot install without data ----------------------------------------------------------------------------------


def test_a_snapshot_installed_without_its_data(open_store: Callable[..., LmdbLogStore], tmp_path: Path) -> None:
    s = open_store()
    s.write(entries=ents(1, 30), hard_state=HardState(1, 1, 30), applied=30)
    s.write(snapshot=Snapshot(SnapshotMetadata(ConfState((1,)), 5, 1), b"old stored data"))
    state_db = s.open_db(b"state")
    token = b"/var/lib/raftkv/snapshots/snap-0000000000000002-0000000000000064.rkvs"
    md = SnapshotMetadata(ConfState((1, 2, 3)), 100, 2)

    def restore(txn: Any) -> str:
        txn.drop(state_db, delete=False)
        for i in range(50):  # what a snapshot file's records would restore
            txn.put(b"k%03d" % i, b"v%d" % i, db=state_db)
        return "restored"

    result = s.write(
        snapshot=Snapshot(md, token),
        store_snapshot_data=False,
        hard_state=HardState(2, 0, 100),
        apply=restore,
        applied=100,
    )
    assert result == "restored"
    assert s.snapshot() == Snapshot(md, b"")
    assert (s.first_index(), s.last_index(), s.term(100), s.applied_index()) == (101, 100, 2, 100)
    assert s.conf_state() == ConfState((1, 2, 3))
    s.append(ents(101, 103, term=2))
    s.close()

    s = open_store(verify=True)  # a full check at open accepts the empty data record
    assert s.snapshot() == Snapshot(md, b"")
    assert (s.first_index(), s.last_index(), s.applied_index()) == (101, 103, 100)
    state_db = s.open_db(b"state")
    with s.read_txn() as txn:
        assert txn.stat(state_db)["entries"] == 50
    s.close()
    env = lmdb.open(str(tmp_path / "wal"), max_dbs=16)
    with env.begin() as txn:
        raw = txn.get(b"data", db=env.open_db(b"snap", txn=txn, create=False))
    env.close()
    assert raw == struct.pack(">I", zlib.crc32(b"")), "no data bytes (and not the token) are stored"
    assert token not in (tmp_path / "wal" / "data.mdb").read_bytes()
