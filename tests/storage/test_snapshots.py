"""Snapshot files (raftkv.storage.snapshots): round trips with bounded memory, every kind of damage reported as
CorruptSnapshotError, temporary files never listed, pruning, the streaming receiver, atomic naming."""

from __future__ import annotations

import os
import struct
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv import codec
from raftkv.raft.types import ConfState
from raftkv.storage import StorageCorruption
from raftkv.storage import snapshots as snap
from raftkv.storage.snapshots import (
    CorruptSnapshotError,
    SnapshotHeader,
    SnapshotInfo,
    SnapshotReceiver,
    iter_records,
    list_snapshots,
    prune,
    read_header,
    remove_temp_files,
    verify,
    write_snapshot,
)

HEADER = SnapshotHeader(index=1234, term=7, conf_state=ConfState((1, 2, 3), (4,)), cluster_id="c-1", created_ns=99)


def items(n: int, value_bytes: int = 100) -> Iterator[tuple[bytes, bytes, bytes]]:
    """``n`` records over two tables, keys sorted within each, generated lazily (never a list)."""
    value = b"v" * value_bytes
    for i in range(n):
        yield (b"kv" if i < n // 2 else b"sessions", b"key-%09d" % i, value + b"%d" % i)


def header(index: int, term: int = 1) -> SnapshotHeader:
    return SnapshotHeader(index, term, ConfState((1,)), "c-1", 1)


def files(d: Path) -> list[str]:
    return sorted(os.listdir(d))


def damage(path: Path, offset: int) -> None:
    """Flip one byte, as a bad disk or a bad network would."""
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


# -- round trips ----------------------------------------------------------------------------------------------------


def test_round_trip_of_100k_records_with_bounded_memory(tmp_path: Path) -> None:
    n = 100_000
    tracemalloc.start()
    try:
        info = write_snapshot(tmp_path, HEADER, items(n))
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        count = 0
        for got, want in zip(iter_records(info.path), items(n), strict=True):
            assert got == want
            count += 1
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n == info.records
    data_bytes = info.size_bytes
    assert data_bytes > 10_000_000  # 100k records of about 100 bytes
    # Both sides hold a block of IO_BYTES (and a copy at a refill), never the data: well below a tenth of it.
    assert write_peak < data_bytes / 10, (write_peak, data_bytes)
    assert read_peak < data_bytes / 10, (read_peak, data_bytes)
    assert info.path == tmp_path / "snap-0000000000000007-00000000000004d2.rkvs"
    assert info.size_bytes == info.path.stat().st_size
    assert read_header(info.path) == HEADER
    assert verify(info.path) == info
    assert list_snapshots(tmp_path) == [info]
    assert HEADER.metadata.index == 1234 and HEADER.metadata.conf_state == ConfState((1, 2, 3), (4,))


def test_an_empty_snapshot_and_odd_records(tmp_path: Path) -> None:
    info = write_snapshot(tmp_path / "new" / "dir", header(5), [])
    assert info.records == 0
    assert list(iter_records(info.path)) == []
    odd = [(b"", b"", b""), (b"t", b"\x00" * 600, b"\xff" * 70_000), (b"t", b"k", b"x" * (3 * snap.IO_BYTES))]
    info = write_snapshot(tmp_path, header(6), odd)
    assert list(iter_records(info.path)) == odd
    assert verify(info.path).records == 3


def test_every_frame_position_across_read_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With tiny read blocks, frames, the trailer and the footer straddle block boundaries at every offset."""
    monkeypatch.setattr(snap, "IO_BYTES", 7)
    for n in range(0, 40):
        recs = [(b"t", b"k%d" % i, b"v" * (i % 5)) for i in range(n)]
        info = write_snapshot(tmp_path, header(n + 1), recs)
        assert list(iter_records(info.path)) == recs
        assert verify(info.path) == info


def test_write_refuses_bad_items_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_snapshot(tmp_path, header(1), [(b"t", "text", b"v")])  # type: ignore[list-item]

    def failing() -> Iterator[tuple[bytes, bytes, bytes]]:
        yield from items(10)
        raise RuntimeError("the state machine read failed")

    with pytest.raises(RuntimeError):
        write_snapshot(tmp_path, header(2), failing())
    assert files(tmp_path) == []


# -- damage ---------------------------------------------------------------------------------------------------------


def test_a_flipped_byte_anywhere_is_reported(tmp_path: Path) -> None:
    info = write_snapshot(tmp_path, HEADER, items(2_000))
    original = info.path.read_bytes()
    for offset in (30, info.size_bytes // 3, info.size_bytes // 2 + 1, info.size_bytes - 30, info.size_bytes - 2):
        info.path.write_bytes(original)
        damage(info.path, offset)
        with pytest.raises(CorruptSnapshotError) as err:
            verify(info.path)
        assert isinstance(err.value, StorageCorruption)
        assert err.value.path == str(info.path)
        with pytest.raises(CorruptSnapshotError):
            for _ in iter_records(info.path):
                pass


def test_a_flipped_value_byte_is_found_by_the_crc_at_the_end(tmp_path: Path) -> None:
    """A damaged value still decodes: every record is yielded, and the CRC check at the end raises."""
    info = write_snapshot(tmp_path, HEADER, items(100))
    raw = info.path.read_bytes()
    damage(info.path, raw.index(b"v" * 100 + b"50") + 10)
    got = []
    with pytest.raises(CorruptSnapshotError, match="checksum mismatch"):
        for rec in iter_records(info.path):
            got.append(rec)
    assert len(got) == 100  # the caller applied them in a transaction it now aborts
    assert len(list(iter_records(info.path, verify=False))) == 100  # no check asked for, none made


def test_a_truncated_file_is_reported(tmp_path: Path) -> None:
    info = write_snapshot(tmp_path, HEADER, items(1_000))
    original = info.path.read_bytes()
    for size in (0, 3, 20, len(original) // 2, len(original) - 5, len(original) - 1):
        info.path.write_bytes(original[:size])
        with pytest.raises(CorruptSnapshotError):
            verify(info.path)
        with pytest.raises(CorruptSnapshotError):
            list(iter_records(info.path, verify=False))
    info.path.write_bytes(original + b"\x00")
    with pytest.raises(CorruptSnapshotError, match="trailing"):
        verify(info.path)


def test_wrong_counts_and_impossible_lengths_are_reported(tmp_path: Path) -> None:
    recs = list(items(10))
    info = write_snapshot(tmp_path, HEADER, recs)
    raw = info.path.read_bytes()
    trailer = codec.encode_snapshot_trailer(info.records, info.crc32)
    assert raw.endswith(trailer + struct.pack(">I", 5 + len(trailer)))
    lying = codec.encode_snapshot_trailer(info.records + 1, info.crc32)
    info.path.write_bytes(raw[: -len(trailer) - 9] + struct.pack(">IB", len(lying), ord("T")) + lying + raw[-4:])
    with pytest.raises(CorruptSnapshotError, match="counts 11 records"):
        verify(info.path)
    # A first frame claiming 4 GiB: refused before anything that size is allocated.
    info.path.write_bytes(struct.pack(">IB", 0xFFFFFFFF, ord("H")) + raw[5:])
    with pytest.raises(CorruptSnapshotError, match="claims"):
        read_header(info.path)
    info.path.write_bytes(b"not a snapshot file at all, just text\n" * 10)
    with pytest.raises(CorruptSnapshotError):
        read_header(info.path)


def test_codec_strictness() -> None:
    for bad in (b"", b"\x93\x01\x02\x03", codec.encode_snapshot_trailer(1, 2)):
        with pytest.raises(codec.CodecError):
            codec.decode_snapshot_record(bad)
    with pytest.raises(codec.CodecError, match="not a raftkv snapshot"):
        codec.decode_snapshot_header(
            codec.encode_snapshot_header(3, 2, ConfState(), "x", 5).replace(b"raftkv-snapshot", b"raftkv-snapshoX")
        )
    with pytest.raises(codec.CodecError):
        codec.decode_snapshot_trailer(codec.encode_snapshot_trailer(1, 1 << 33))
    h = codec.encode_snapshot_header(3, 2, ConfState((1, 2)), "x", 5)
    assert codec.decode_snapshot_header(h) == (3, 2, ConfState((1, 2)), "x", 5)


# -- listing, pruning, temporary files, atomic naming -----------------------------------------------------------------


def test_list_is_newest_first_ignores_temp_files_and_prune_keeps_the_newest(tmp_path: Path) -> None:
    made = [write_snapshot(tmp_path, header(index, term), items(5)) for index, term in ((10, 1), (30, 2), (20, 2))]
    (tmp_path / ".snap-abc.tmp").write_bytes(b"half a snapshot")
    (tmp_path / "unrelated.txt").write_text("hello")
    listed = list_snapshots(tmp_path)
    assert [i.header.index for i in listed] == [30, 20, 10]
    assert listed[0] == made[1]
    assert prune(tmp_path, 2) == [made[0].path]
    assert [i.header.index for i in list_snapshots(tmp_path)] == [30, 20]
    assert ".snap-abc.tmp" in files(tmp_path)  # prune leaves temporary files alone
    assert remove_temp_files(tmp_path) == 1
    assert files(tmp_path) == sorted([made[1].path.name, made[2].path.name, "unrelated.txt"])
    assert list_snapshots(tmp_path / "missing") == []


def test_a_damaged_or_misnamed_snapshot_is_skipped_and_pruned(tmp_path: Path) -> None:
    good = write_snapshot(tmp_path, header(10), items(5))
    bad = write_snapshot(tmp_path, header(20), items(5))
    bad.path.write_bytes(bad.path.read_bytes()[:-3])
    misnamed = tmp_path / "snap-0000000000000001-0000000000000063.rkvs"
    misnamed.write_bytes(good.path.read_bytes())
    assert list_snapshots(tmp_path) == [good]
    assert sorted(prune(tmp_path, 1)) == sorted([bad.path, misnamed])
    assert files(tmp_path) == [good.path.name]


def test_a_crash_before_the_rename_leaves_only_a_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file gets its name only by the rename, after the fsync: a crash before it leaves a temporary file that
    is never listed (simulated: the rename raises, and the clean-up that a crash would not run is disabled)."""

    def crash(*args: object) -> None:
        raise SystemExit("power lost")

    monkeypatch.setattr(os, "replace", crash)
    monkeypatch.setattr(snap, "_unlink", lambda path: None)
    with pytest.raises(SystemExit):
        write_snapshot(tmp_path, HEADER, items(100))
    left = files(tmp_path)
    assert len(left) == 1 and left[0].startswith(".snap-") and left[0].endswith(".tmp")
    assert list_snapshots(tmp_path) == []
    monkeypatch.undo()
    assert remove_temp_files(tmp_path) == 1
    assert files(tmp_path) == []


def test_fsync_order_file_then_rename_then_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_snapshot(tmp_path, HEADER, items(10))
    assert events == ["fsync-file", "rename", "fsync-dir"]
    events.clear()
    with SnapshotReceiver.open(tmp_path) as r:
        r.write_chunk(write_snapshot(tmp_path / "src", header(3), items(10)).path.read_bytes())
        r.finish()
    assert events[-3:] == ["fsync-file", "rename", "fsync-dir"]


# -- the receiver ---------------------------------------------------------------------------------------------------


def _chunks(path: Path, size: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk


def test_receiver_writes_verifies_and_names_the_file(tmp_path: Path) -> None:
    src = write_snapshot(tmp_path / "src", HEADER, items(3_000))
    dst = tmp_path / "dst"
    r = SnapshotReceiver.open(dst, src.size_bytes)
    for chunk in _chunks(src.path, 10_000):
        r.write_chunk(chunk)
    assert r.received_bytes == src.size_bytes
    got = r.finish()
    assert got == SnapshotInfo(dst / src.path.name, src.header, src.records, src.size_bytes, src.crc32)
    assert got.path.read_bytes() == src.path.read_bytes()
    assert files(dst) == [src.path.name]
    r.abort()  # a no-op after finish
    assert files(dst) == [src.path.name]


@pytest.mark.parametrize("fault", ["abort", "short", "long", "corrupt", "garbage"])
def test_a_failed_or_aborted_receive_leaves_nothing_behind(tmp_path: Path, fault: str) -> None:
    src = write_snapshot(tmp_path / "src", HEADER, items(1_000))
    data = src.path.read_bytes()
    dst = tmp_path / "dst"
    r = SnapshotReceiver.open(dst, None if fault in ("corrupt", "garbage") else src.size_bytes)
    assert r.temp_path.exists() and list_snapshots(dst) == []
    if fault == "abort":
        r.write_chunk(data[:5000])
        r.abort()
        r.abort()
    elif fault == "short":
        r.write_chunk(data[:-1])
        with pytest.raises(CorruptSnapshotError, match="truncated"):
            r.finish()
    elif fault == "long":
        r.write_chunk(data)
        with pytest.raises(CorruptSnapshotError, match="sent more"):
            r.write_chunk(b"x")
    elif fault == "corrupt":
        r.write_chunk(data[:1000] + bytes([data[1000] ^ 1]) + data[1001:])
        with pytest.raises(CorruptSnapshotError):
            r.finish()
    else:
        r.write_chunk(b"\x00" * 100)
        with pytest.raises(CorruptSnapshotError):
            r.finish()
    assert files(dst) == []
    with pytest.raises(ValueError):
        r.write_chunk(b"more")
    with SnapshotReceiver.open(dst) as r2:
        r2.write_chunk(b"partial")
    assert files(dst) == []  # leaving the with-block unfinished aborts


# -- etcd's envelope (a snapshot saved by `etcdctl snapshot save`) ---------------------------------------------------


@pytest.mark.parametrize("n", [0, 3, 1000])
def test_a_snapshot_in_etcds_envelope_reads_as_the_snapshot_it_wraps(tmp_path: Path, n: int) -> None:
    import hashlib

    info = write_snapshot(tmp_path / "s", header(5), items(n))
    raw = info.path.read_bytes()
    pad, length = snap.etcd_envelope(len(raw))
    body = raw + bytes(pad) + length
    wrapped = tmp_path / "etcd.db"
    wrapped.write_bytes(body + hashlib.sha256(body).digest())
    assert (wrapped.stat().st_size - 32) % 512 == 0  # what etcd's clients check
    assert list(iter_records(wrapped)) == list(items(n))
    assert verify(wrapped).records == n and read_header(wrapped) == header(5)
    # A wrong hash: not an envelope, so the padding is trailing garbage and the file is refused.
    bad = tmp_path / "bad.db"
    bad.write_bytes(body + bytes(32))
    with pytest.raises(CorruptSnapshotError, match=r"trailing bytes|footer"):
        verify(bad)
