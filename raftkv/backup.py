"""Backups: ``raftkv snapshot save FILE`` copies a running node's state into a checksummed snapshot file;
``raftkv snapshot restore FILE --data-dir DIR`` turns such a file into a node's data directory.

A snapshot file (``raftkv.storage.snapshots``) holds the whole replicated state machine (keys with their metadata,
the exactly-once session table, the member table) as of one log index, plus the membership and the cluster id,
and ends with a CRC32 over everything. Both commands verify it.

Restoring rebuilds a cluster from a backup: restore the same file into every member's (empty) data directory and
start the members with their usual settings (the same ids, addresses and cluster token, so the cluster id matches
the one recorded in the file). They resume at the snapshot's index; nothing after it exists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .client import SyncClient
from .errors import ConfigError, StorageError
from .kv import KVStateMachine
from .raft import HardState, Snapshot
from .storage import DurableStorageError, LmdbLogStore
from .storage.snapshots import CorruptSnapshotError, SnapshotInfo, iter_records, verify


@dataclass(frozen=True, slots=True)
class BackupInfo:
    path: Path
    index: int
    term: int
    records: int
    size_bytes: int
    crc32: int
    cluster_id: str


def _info(si: SnapshotInfo) -> BackupInfo:
    h = si.header
    return BackupInfo(si.path, h.index, h.term, si.records, si.size_bytes, si.crc32, h.cluster_id)


def save(client: SyncClient, file: str | os.PathLike[str], endpoint: str | None = None) -> BackupInfo:
    """Stream a fresh snapshot from a node (the leader, or ``endpoint``) into ``file`` (temp file, fsync, rename,
    directory fsync), then verify its checksum."""
    dest = Path(file).absolute()
    if dest.is_dir():
        raise ConfigError(f"{dest} is a directory; give a file name")
    tmp = dest.with_name(f".{dest.name}.partial")
    try:
        client.save_snapshot(tmp, endpoint=endpoint)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        try:
            info = verify(tmp)
        except (CorruptSnapshotError, DurableStorageError) as e:
            raise StorageError(f"the snapshot received is damaged: {e}", str(dest)) from e
        tmp.replace(dest)
        dfd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        tmp.unlink(missing_ok=True)
    return _info(SnapshotInfo(dest, info.header, info.records, info.size_bytes, info.crc32))


def inspect(file: str | os.PathLike[str]) -> BackupInfo:
    """Verify a snapshot file (a full checksum pass) and describe it."""
    try:
        return _info(verify(Path(file)))
    except FileNotFoundError:
        raise ConfigError(f"{file} does not exist") from None
    except (CorruptSnapshotError, DurableStorageError) as e:
        raise StorageError(f"{file} is not a valid raftkv snapshot: {e}", str(file)) from e


def restore(file: str | os.PathLike[str], data_dir: str | os.PathLike[str]) -> BackupInfo:
    """Make ``data_dir`` (which must not hold a node's data yet) a node's data directory holding the snapshot's
    state, log position and membership."""
    info = inspect(file)
    d = Path(data_dir).absolute()
    raft_dir = d / "raft"
    if raft_dir.exists() and any(raft_dir.iterdir()):
        raise ConfigError(f"{d} already holds a node's data; restore into an empty directory")
    raft_dir.mkdir(parents=True, exist_ok=True)
    src = Path(file)
    store = LmdbLogStore(raft_dir)
    try:
        fsm = KVStateMachine(store)
        h = verify(src).header
        meta = h.metadata
        store.write(
            snapshot=Snapshot(meta, b""),
            store_snapshot_data=False,
            hard_state=HardState(term=meta.term, vote=0, commit=meta.index),
            conf_state=meta.conf_state,
            applied=meta.index,
            apply=lambda txn: fsm.restore_from(txn, lambda: iter_records(src)),
        )
    finally:
        store.close()
    if info.cluster_id:
        (d / "cluster_id").write_text(info.cluster_id + "\n")
    return info


__all__ = ["BackupInfo", "inspect", "restore", "save"]
