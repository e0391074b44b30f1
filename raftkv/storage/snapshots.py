"""Snapshot files: the state machine's state at one log index, written, read and received as a stream.

A snapshot file (``snap-<term:016x>-<index:016x>.rkvs``) is a sequence of frames::

    frame    = payload length (u32, big-endian) + kind (1 byte) + payload
    header   kind b"H"  codec.encode_snapshot_header(index, term, conf_state, cluster_id, created_ns)    first
    record   kind b"D"  codec.encode_snapshot_record(table, key, value)    zero or more, in the order written
    trailer  kind b"T"  codec.encode_snapshot_trailer(records, crc32)      crc32 (zlib) of every byte before it
    footer   u32, big-endian: the trailer frame's length (5 + its payload), so the trailer is found from the end

**etcd's envelope.** A snapshot streamed through the etcd API (``etcdctl snapshot save``) arrives wrapped as etcd
clients expect a database file: the snapshot, zeros up to a 512-byte boundary, its length (u64, big-endian) in the
last 8 bytes of that padding, then the SHA-256 of everything before it (``etcd_envelope``). The readers take such a
file as the snapshot it wraps, once the hash matches (``_unwrapped_size``).

The records are written in the order given; the state machine yields its tables in order and each table's keys
sorted, so replicas that applied the same log write byte-identical record streams (the header's ``created_ns`` and
``cluster_id`` aside). A record payload is at most ``MAX_RECORD_BYTES``.

**Memory.** Everything streams: ``write_snapshot`` buffers at most about ``IO_BYTES`` (plus one record) before
writing, ``iter_records`` reads blocks of ``IO_BYTES``, ``SnapshotReceiver`` writes each chunk as it comes. Nothing
ever holds a whole file.

**Durability and atomicity.** A snapshot file only ever appears under its final name complete and fsynced:
``write_snapshot`` and ``SnapshotReceiver.finish`` write a temporary file (``.snap-*.tmp`` in the same directory),
fsync it, rename it to its final name (atomic on POSIX), then fsync the directory so the rename itself survives a
power loss. A crash at any point leaves either the complete file under its final name, or at most a temporary file,
which ``list_snapshots`` never lists and ``remove_temp_files`` deletes at start-up. ``SnapshotReceiver.finish`` also
verifies the file (a full pass: every frame, the record count and the CRC) *before* the rename, so a final name
always means a verified transfer. ``prune`` and ``remove_temp_files`` do not fsync the directory: a deletion lost to
a power failure is only repeated later.

**Errors.** A file that fails a check raises ``CorruptSnapshotError`` (a ``StorageCorruption``; its ``path`` is the
file): a bad frame, an undecodable header or record, a truncated file, trailing bytes, and (when verifying) a record
count or CRC that does not match the trailer. ``iter_records(verify=True)`` checks the count and the CRC only at the
end, after the last record was yielded: a caller installing a snapshot applies the records inside a transaction
and aborts it if the iteration raises.

Thread safety: every function may run on any thread (they are blocking file I/O: the event loop calls them through
``asyncio.to_thread``). A ``SnapshotReceiver`` belongs to one caller at a time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import struct
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, Final

from raftkv.codec import (
    CodecError,
    decode_snapshot_header,
    decode_snapshot_record,
    decode_snapshot_trailer,
    encode_snapshot_header,
    encode_snapshot_record,
    encode_snapshot_trailer,
)
from raftkv.raft.types import ConfState, SnapshotMetadata

from .errors import DurableStorageError, StorageCorruption

__all__ = [
    "IO_BYTES",
    "MAX_RECORD_BYTES",
    "CorruptSnapshotError",
    "SnapshotHeader",
    "SnapshotInfo",
    "SnapshotReceiver",
    "etcd_envelope",
    "iter_records",
    "list_snapshots",
    "prune",
    "read_header",
    "remove_temp_files",
    "snapshot_file_name",
    "verify",
    "write_snapshot",
]

log = logging.getLogger("raftkv.storage")

IO_BYTES: Final = 256 << 10
"""Block size of the buffered writes and reads: the memory a reader or writer holds, give or take one record."""
MAX_RECORD_BYTES: Final = 64 << 20
"""Largest frame payload accepted: a corrupt length can never make a reader allocate more than this."""

_FRAME = struct.Struct(">IB")
_FRAME_BYTES: Final = _FRAME.size
_U32 = struct.Struct(">I")
_KIND_HEADER: Final = ord("H")
_KIND_DATA: Final = ord("D")
_KIND_TRAILER: Final = ord("T")
_MAX_HEADER_BYTES: Final = 1 << 20
_MAX_TRAILER_BYTES: Final = 64
_NAME = re.compile(r"snap-([0-9a-f]{16})-([0-9a-f]{16})\.rkvs")
_TMP_PREFIX: Final = ".snap-"
_TMP_SUFFIX: Final = ".tmp"
_crc32 = zlib.crc32


class CorruptSnapshotError(StorageCorruption):
    """A snapshot file fails a check (``what`` says which); ``path`` is the file. The file cannot be installed:
    delete it and use another one (a leader simply sends a new snapshot)."""

    def __init__(self, what: str, path: str | os.PathLike[str]) -> None:
        DurableStorageError.__init__(
            self, f"corrupt snapshot file {os.fspath(path)}: {what}; it cannot be installed (delete it)", path
        )
        self.what = what


@dataclass(frozen=True, slots=True)
class SnapshotHeader:
    """What a snapshot file holds: the state machine state after applying the log up to ``index`` (of ``term``),
    the membership at that point, which cluster it belongs to and when it was made (``time.time_ns()``)."""

    index: int
    term: int
    conf_state: ConfState = field(default_factory=ConfState)
    cluster_id: str = ""
    created_ns: int = field(default_factory=time.time_ns)

    def __post_init__(self) -> None:
        if self.index < 0 or self.term < 0 or self.created_ns < 0:
            raise ValueError(f"index, term and created_ns must be >= 0: {self}")

    @property
    def metadata(self) -> SnapshotMetadata:
        """The core's view of this snapshot."""
        return SnapshotMetadata(self.conf_state, self.index, self.term)


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A snapshot file on disk: its header, number of data records, size and the CRC32 its trailer states (checked
    by ``verify``, ``write_snapshot`` and ``SnapshotReceiver.finish``; read unchecked by ``list_snapshots``)."""

    path: Path
    header: SnapshotHeader
    records: int
    size_bytes: int
    crc32: int


def snapshot_file_name(term: int, index: int) -> str:
    """``snap-<term:016x>-<index:016x>.rkvs``: names sort by term, then index."""
    return f"snap-{term:016x}-{index:016x}.rkvs"


# -- writing ----------------------------------------------------------------------------------------------------------


def write_snapshot(dir: Path, header: SnapshotHeader, items: Iterable[tuple[bytes, bytes, bytes]]) -> SnapshotInfo:
    """Write ``header`` and ``items`` (``(table, key, value)``, all bytes, in this order) as a snapshot file in
    ``dir`` (created if missing) and return its description.

    Streams: memory stays around ``IO_BYTES`` whatever the size of ``items`` (an iterator is consumed once). The
    file is written under a temporary name, fsynced, renamed to ``snapshot_file_name(term, index)`` (replacing a
    file of that name) and the directory fsynced: when this returns, the file is durable under its final name. On
    any error (from ``items`` too) the temporary file is removed and nothing appears. TypeError for an item that is
    not three bytes objects, ValueError for a record larger than ``MAX_RECORD_BYTES``."""
    dir = Path(dir)
    _make_dir(dir)
    fd, tmp_name = tempfile.mkstemp(dir=dir, prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX)
    tmp = Path(tmp_name)
    try:
        with open(fd, "wb") as f:
            records, crc, size = _write_frames(f, header, items)
            f.flush()
            os.fsync(f.fileno())
        final = dir / snapshot_file_name(header.term, header.index)
        os.replace(tmp, final)
        _fsync_dir(dir)
    except BaseException:
        _unlink(tmp)
        raise
    return SnapshotInfo(final, header, records, size, crc)


def _write_frames(
    f: BinaryIO, header: SnapshotHeader, items: Iterable[tuple[bytes, bytes, bytes]]
) -> tuple[int, int, int]:
    """Header, records, trailer and footer into ``f``; returns (records, crc32, bytes written)."""
    payload = encode_snapshot_header(header.index, header.term, header.conf_state, header.cluster_id, header.created_ns)
    buf = bytearray(_FRAME.pack(len(payload), _KIND_HEADER))
    buf += payload
    crc = 0
    size = 0
    records = 0
    pack_frame = _FRAME.pack
    encode = encode_snapshot_record
    write = f.write
    for table, key, value in items:
        payload = encode(table, key, value)
        n = len(payload)
        if n > MAX_RECORD_BYTES:
            raise ValueError(f"a snapshot record of {n} bytes (table {table!r}, key {key[:50]!r}) is too large")
        buf += pack_frame(n, _KIND_DATA)
        buf += payload
        records += 1
        if len(buf) >= IO_BYTES:
            crc = _crc32(buf, crc)
            write(buf)
            size += len(buf)
            buf.clear()
    crc = _crc32(buf, crc)
    trailer = encode_snapshot_trailer(records, crc)
    buf += _FRAME.pack(len(trailer), _KIND_TRAILER)
    buf += trailer
    buf += _U32.pack(_FRAME_BYTES + len(trailer))
    write(buf)
    size += len(buf)
    return records, crc, size


class SnapshotReceiver:
    """Writes a snapshot arriving in chunks (from a peer) to disk, never holding more than one chunk.

    ``open(dir, expected_total)`` creates a temporary file in ``dir``; ``write_chunk`` appends to it; ``finish``
    fsyncs it, verifies it (a full pass), renames it to its final name and fsyncs the directory, then returns its
    ``SnapshotInfo``; ``abort`` removes the temporary file. A receiver that failed (any exception from
    ``write_chunk`` or ``finish``) has already aborted. Also a context manager that aborts unless finished."""

    __slots__ = ("_dir", "_done", "_expected", "_file", "_received", "_tmp")

    def __init__(self, dir: Path, expected_total: int | None, file: BinaryIO, tmp: Path) -> None:
        """Use ``SnapshotReceiver.open``."""
        self._dir = dir
        self._expected = expected_total
        self._file = file
        self._tmp = tmp
        self._received = 0
        self._done = False

    @classmethod
    def open(cls, dir: Path, expected_total: int | None = None) -> SnapshotReceiver:
        """A receiver writing into a new temporary file in ``dir`` (created if missing). ``expected_total``, if
        known, is the file's size: more bytes are refused at once, fewer fail ``finish``."""
        if expected_total is not None and expected_total < 0:
            raise ValueError(f"expected_total must be >= 0, got {expected_total}")
        dir = Path(dir)
        _make_dir(dir)
        fd, tmp_name = tempfile.mkstemp(dir=dir, prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX)
        try:
            file = open(fd, "wb", buffering=0)  # noqa: SIM115  # owned by the receiver until finish/abort
        except BaseException:
            os.close(fd)
            _unlink(Path(tmp_name))
            raise
        return cls(dir, expected_total, file, Path(tmp_name))

    @property
    def temp_path(self) -> Path:
        """Where the bytes go until ``finish`` (gone after ``finish`` or ``abort``)."""
        return self._tmp

    @property
    def received_bytes(self) -> int:
        return self._received

    def write_chunk(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data`` (not fsynced yet). CorruptSnapshotError (after aborting) if it goes past
        ``expected_total``; ValueError after ``finish`` or ``abort``."""
        self._check_open()
        n = len(data)
        if self._expected is not None and self._received + n > self._expected:
            self.abort()
            raise CorruptSnapshotError(
                f"the sender announced {self._expected} bytes but sent more ({self._received + n})", self._tmp
            )
        try:
            view = memoryview(data)
            while view:
                written = self._file.write(view)
                view = view[written:]
        except BaseException:
            self.abort()
            raise
        self._received += n

    def finish(self) -> SnapshotInfo:
        """Fsync, verify (every frame, the record count and the CRC), rename to the final name, fsync the directory.
        When this returns the file is durable and verified under ``info.path``. CorruptSnapshotError if the data
        is short of ``expected_total`` or fails verification; the temporary file is removed on any error."""
        self._check_open()
        try:
            if self._expected is not None and self._received != self._expected:
                raise CorruptSnapshotError(
                    f"truncated: received {self._received} of the {self._expected} bytes announced", self._tmp
                )
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            info = verify(self._tmp)
            final = self._dir / snapshot_file_name(info.header.term, info.header.index)
            os.replace(self._tmp, final)
            _fsync_dir(self._dir)
        except BaseException:
            self.abort()
            raise
        self._done = True
        return replace(info, path=final)

    def abort(self) -> None:
        """Close and remove the temporary file. Idempotent; a no-op after ``finish``."""
        if self._done:
            return
        self._done = True
        try:
            self._file.close()
        finally:
            _unlink(self._tmp)

    def _check_open(self) -> None:
        if self._done:
            raise ValueError(f"the snapshot receiver for {self._tmp} is finished or aborted")

    def __enter__(self) -> SnapshotReceiver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abort()

    def __repr__(self) -> str:
        return (
            f"SnapshotReceiver(temp_path={str(self._tmp)!r}, received_bytes={self._received}, "
            f"expected_total={self._expected}, done={self._done})"
        )


# -- reading ----------------------------------------------------------------------------------------------------------


class _Reader:
    """Sequential frames of one open snapshot file, read in blocks of ``IO_BYTES``; keeps the CRC of the bytes
    consumed so far (up to the trailer) when ``want_crc`` is set."""

    __slots__ = ("_base", "_buf", "_crc_from", "_f", "_pos", "crc", "path", "size", "want_crc")

    def __init__(self, f: BinaryIO, path: Path, want_crc: bool) -> None:
        self._f = f
        self.path = path
        self.size = _unwrapped_size(f, os.fstat(f.fileno()).st_size)
        self.want_crc = want_crc
        self.crc = 0
        self._buf = b""
        self._pos = 0
        self._base = 0  # file offset of _buf[0]
        self._crc_from = 0  # _buf[:_crc_from] is already in self.crc

    def header(self) -> SnapshotHeader:
        kind, payload = self.frame(_MAX_HEADER_BYTES)
        if kind != _KIND_HEADER:
            raise CorruptSnapshotError(
                "it does not start with a snapshot header (not a raftkv snapshot file?)", self.path
            )
        try:
            index, term, conf_state, cluster_id, created_ns = decode_snapshot_header(payload)
        except CodecError as exc:
            raise CorruptSnapshotError(f"the header does not decode: {exc}", self.path) from exc
        return SnapshotHeader(index, term, conf_state, cluster_id, created_ns)

    def frame(self, limit: int = MAX_RECORD_BYTES) -> tuple[int, memoryview]:
        """The next frame's kind and payload (a view valid until the next call)."""
        if len(self._buf) - self._pos < _FRAME_BYTES:
            self._fill(_FRAME_BYTES)
        n, kind = _FRAME.unpack_from(self._buf, self._pos)
        self._need(n, limit)
        start = self._pos + _FRAME_BYTES
        self._pos = start + n
        return kind, memoryview(self._buf)[start : self._pos]

    def records(self, verify: bool) -> Iterator[tuple[bytes, bytes, bytes]]:
        """Yield the data records, then check the trailer and the footer (and, with ``verify``, the count and the
        CRC). Must follow ``header()``."""
        unpack_frame = _FRAME.unpack_from
        decode = decode_snapshot_record
        count = 0
        buf, pos = self._buf, self._pos
        while True:
            if len(buf) - pos < _FRAME_BYTES:
                self._pos = pos
                self._fill(_FRAME_BYTES)
                buf, pos = self._buf, self._pos
            n, kind = unpack_frame(buf, pos)
            if kind != _KIND_DATA:
                break
            start = pos + _FRAME_BYTES
            end = start + n
            if end > len(buf):  # the frame continues past the buffer: refill (checking its length first)
                self._pos = pos
                self._need(n, MAX_RECORD_BYTES)
                buf, pos = self._buf, self._pos
                start = pos + _FRAME_BYTES
                end = start + n
            try:
                rec = decode(memoryview(buf)[start:end])
            except CodecError as exc:
                raise CorruptSnapshotError(
                    f"data record {count + 1} (at byte {self._base + start - _FRAME_BYTES}) does not decode: {exc}",
                    self.path,
                ) from exc
            pos = end
            count += 1
            yield rec
        self._pos = pos
        records, crc = self.trailer(kind)
        if verify:
            if records != count:
                raise CorruptSnapshotError(f"the trailer counts {records} records, the file holds {count}", self.path)
            if crc != self.crc:
                raise CorruptSnapshotError(
                    f"checksum mismatch: the trailer says crc32 {crc:#010x}, the data has {self.crc:#010x}", self.path
                )

    def trailer(self, kind: int) -> tuple[int, int]:
        """Read the trailer frame that starts at the current position (its kind already peeked), the footer, and
        check that the file ends there; the CRC then covers everything before the trailer."""
        if kind != _KIND_TRAILER:
            raise CorruptSnapshotError(
                f"unknown frame kind {kind:#04x} at byte {self._base + self._pos} (damaged data?)", self.path
            )
        if self.want_crc:  # the CRC covers everything before the trailer: complete it, then stop
            self.crc = _crc32(memoryview(self._buf)[self._crc_from : self._pos], self.crc)
            self.want_crc = False
        kind, payload = self.frame(_MAX_TRAILER_BYTES)
        try:
            records, crc = decode_snapshot_trailer(payload)
        except CodecError as exc:
            raise CorruptSnapshotError(f"the trailer does not decode: {exc}", self.path) from exc
        frame_len = _FRAME_BYTES + len(payload)
        if len(self._buf) - self._pos < _U32.size:
            self._fill(_U32.size)
        footer = _U32.unpack_from(self._buf, self._pos)[0]
        end = self._base + self._pos + _U32.size
        if footer != frame_len or end != self.size:
            raise CorruptSnapshotError(
                f"bad end of file: footer {footer} for a {frame_len}-byte trailer, {self.size - end} trailing bytes",
                self.path,
            )
        return records, crc

    def _need(self, n: int, limit: int) -> None:
        """Make sure the whole frame at ``_pos`` (``n`` payload bytes) is in the buffer, refusing a length over
        ``limit`` or past the end of the file before reading anything."""
        if n > limit:
            raise CorruptSnapshotError(
                f"a frame at byte {self._base + self._pos} claims {n} bytes, more than the limit of {limit}", self.path
            )
        total = _FRAME_BYTES + n
        if self._base + self._pos + total > self.size:
            raise CorruptSnapshotError(
                f"truncated: a frame at byte {self._base + self._pos} needs {total} bytes, the file has {self.size}",
                self.path,
            )
        if len(self._buf) - self._pos < total:
            self._fill(total)

    def _fill(self, need: int) -> None:
        """Refill the buffer so that at least ``need`` bytes follow ``_pos`` (CorruptSnapshotError at the end of
        the file). What was consumed is checksummed first, then dropped."""
        buf, pos = self._buf, self._pos
        if self.want_crc and pos > self._crc_from:
            self.crc = _crc32(memoryview(buf)[self._crc_from : pos], self.crc)
        rest = buf[pos:]
        chunk = self._f.read(max(IO_BYTES, need - len(rest)))
        self._base += pos
        self._buf = rest + chunk if rest else chunk
        self._pos = 0
        self._crc_from = 0
        if len(self._buf) < need:
            raise CorruptSnapshotError(
                f"truncated: the file ends at byte {self._base + len(self._buf)} inside a frame", self.path
            )


_U64 = struct.Struct(">Q")
ETCD_PAGE = 512
_SHA = 32


def etcd_envelope(size: int) -> tuple[int, bytes]:
    """For a snapshot of ``size`` bytes streamed through the etcd API: how many zero bytes to send after it, and
    the 8-byte length that ends them (the SHA-256 of all of it follows), so the whole is a multiple of 512 bytes
    plus the hash, as etcd's clients check."""
    pad = (-(size + 8)) % ETCD_PAGE
    return pad, _U64.pack(size)


def _unwrapped_size(f: BinaryIO, size: int) -> int:
    """The snapshot's own size inside an etcd envelope (see the module docstring), or ``size`` if it has none."""
    if size < ETCD_PAGE + _SHA or (size - _SHA) % ETCD_PAGE:
        return size
    f.seek(size - _SHA - 8)
    tail = f.read(8 + _SHA)
    inner = _U64.unpack_from(tail)[0]
    if not 0 < inner <= size - _SHA - 8 or (inner + 8) > size - _SHA or (-(inner + 8)) % ETCD_PAGE != (
            size - _SHA - 8 - inner):
        f.seek(0)
        return size
    f.seek(0)
    h = hashlib.sha256()
    left = size - _SHA
    while left:
        chunk = f.read(min(IO_BYTES, left))
        if not chunk:
            break
        h.update(chunk)
        left -= len(chunk)
    f.seek(0)
    return inner if h.digest() == tail[8:] else size


def _open(path: Path) -> BinaryIO:
    return open(path, "rb")  # the callers close it


def read_header(path: Path) -> SnapshotHeader:
    """The header of the snapshot file at ``path`` (only the first frame is read). CorruptSnapshotError if it is
    not a readable snapshot header; OSError (FileNotFoundError ...) if the file cannot be opened."""
    path = Path(path)
    with _open(path) as f:
        return _Reader(f, path, False).header()


def iter_records(path: Path, *, verify: bool = True) -> Iterator[tuple[bytes, bytes, bytes]]:
    """Stream the ``(table, key, value)`` records of the snapshot file at ``path``, in file order, with memory
    bounded by ``IO_BYTES`` (plus one record).

    A damaged frame or record raises CorruptSnapshotError when it is reached. With ``verify`` (the default) the
    record count and the CRC are checked against the trailer after the last record was yielded, and a mismatch
    raises CorruptSnapshotError then: apply the records inside a transaction and abort it on any error. The file
    is opened on the first ``next()`` and closed when the iterator is exhausted or closed."""
    path = Path(path)
    with _open(path) as f:
        reader = _Reader(f, path, verify)
        reader.header()
        yield from reader.records(verify)


def verify(path: Path) -> SnapshotInfo:
    """Read the whole snapshot file at ``path``: every frame decodes, the record count and the CRC match the
    trailer, nothing follows the footer. Returns its description; CorruptSnapshotError otherwise."""
    path = Path(path)
    with _open(path) as f:
        reader = _Reader(f, path, True)
        header = reader.header()
        records = 0
        for _ in reader.records(True):
            records += 1
        return SnapshotInfo(path, header, records, reader.size, reader.crc)


def _summary(path: Path) -> SnapshotInfo:
    """Header and trailer of a snapshot file, found through the footer, without reading (or checking) the records
    in between."""
    with _open(path) as f:
        reader = _Reader(f, path, False)
        header = reader.header()
        size = reader.size
        f.seek(max(0, size - _U32.size))
        footer = f.read(_U32.size)
        frame_len = _U32.unpack(footer)[0] if len(footer) == _U32.size else 0
        start = size - _U32.size - frame_len
        if not _FRAME_BYTES < frame_len <= _FRAME_BYTES + _MAX_TRAILER_BYTES or start < reader._base + reader._pos:
            raise CorruptSnapshotError(f"bad footer (a trailer of {frame_len} bytes in a {size}-byte file)", path)
        f.seek(start)
        raw = f.read(frame_len)
        n, kind = _FRAME.unpack_from(raw)
        if kind != _KIND_TRAILER or n != frame_len - _FRAME_BYTES or len(raw) != frame_len:
            raise CorruptSnapshotError("the footer does not point at the trailer", path)
        try:
            records, crc = decode_snapshot_trailer(raw[_FRAME_BYTES:])
        except CodecError as exc:
            raise CorruptSnapshotError(f"the trailer does not decode: {exc}", path) from exc
        return SnapshotInfo(path, header, records, size, crc)


def list_snapshots(dir: Path) -> list[SnapshotInfo]:
    """The snapshot files in ``dir``, newest (highest index, then term) first; [] if ``dir`` does not exist.

    Reads each file's header and trailer only: the CRC is not checked (``verify`` does that). Temporary files are
    never listed. A file with a snapshot's name that is unreadable, damaged at either end, or whose header does
    not match its name is skipped with a warning (``prune`` deletes it)."""
    dir = Path(dir)
    try:
        names = os.listdir(dir)
    except FileNotFoundError:
        return []
    out: list[SnapshotInfo] = []
    for name in names:
        m = _NAME.fullmatch(name)
        if m is None:
            continue
        path = dir / name
        try:
            info = _summary(path)
        except (OSError, CorruptSnapshotError) as exc:
            log.warning("ignoring snapshot file %s: %s", path, exc)
            continue
        if (info.header.term, info.header.index) != (int(m[1], 16), int(m[2], 16)):
            log.warning(
                "ignoring snapshot file %s: its header is for term %d, index %d",
                path,
                info.header.term,
                info.header.index,
            )
            continue
        out.append(info)
    out.sort(key=lambda i: (i.header.index, i.header.term), reverse=True)
    return out


def prune(dir: Path, keep: int) -> list[Path]:
    """Delete every snapshot file in ``dir`` except the ``keep`` newest listed by ``list_snapshots`` (so damaged
    ones go too); return the deleted paths. Temporary files are left alone (one may be being written: see
    ``remove_temp_files``). A file being read (sent to a peer) stays readable through its open handle. Not fsynced.
    """
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    dir = Path(dir)
    kept = {info.path.name for info in list_snapshots(dir)[:keep]}
    try:
        names = os.listdir(dir)
    except FileNotFoundError:
        return []
    removed: list[Path] = []
    for name in sorted(names):
        if _NAME.fullmatch(name) and name not in kept:
            _unlink(dir / name)
            removed.append(dir / name)
    return removed


def remove_temp_files(dir: Path) -> int:
    """Delete the temporary files a crash left in ``dir`` (a write or a transfer that never finished); return how
    many. Only when nothing is writing a snapshot into ``dir`` (at start-up): an active writer's file is one."""
    dir = Path(dir)
    try:
        names = os.listdir(dir)
    except FileNotFoundError:
        return 0
    n = 0
    for name in names:
        if name.startswith(_TMP_PREFIX) and name.endswith(_TMP_SUFFIX):
            _unlink(dir / name)
            n += 1
    return n


# -- file system helpers ----------------------------------------------------------------------------------------------


def _make_dir(dir: Path) -> None:
    """Create ``dir`` if missing, making its name durable (fsync of its parent)."""
    if dir.is_dir():
        return
    dir.mkdir(parents=True, exist_ok=True)
    _fsync_dir(dir.parent)


def _fsync_dir(dir: Path) -> None:
    fd = os.open(dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
