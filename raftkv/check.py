"""``raftkv check DATA_DIR``: an offline integrity check of one node's data directory.

It reads everything the node keeps and checks it the way the node would when it needs it, but all of it at once:

* the LMDB file itself, before it is mapped (its meta pages, and that it is as long as they say: ``check_data_file``);
* the data directory layout version and the meta records (hard state, membership, snapshot, applied index);
* every log record: its checksum, that it decodes, that its index is its key, that the log has no hole;
* the consistency of the log with the hard state and the applied index (commit within the log, applied within
  the commit, nothing compacted past what was applied);
* every state machine record of every table: its checksum (``raftkv.kv.fsm.unseal``) and that it decodes.

Run it on a stopped node (it opens the store as the node does, reading only). The verdict: ``ok``, or the list of
problems found; ``raftkv check`` exits 0, or 10 (damaged), or 8 (not a data directory, or one it cannot open).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .kv import KVStateMachine
from .storage import DurableStorageError, LmdbLogStore, StorageCorruption, StorageFormatError

__all__ = ["CheckReport", "check_data_dir"]


@dataclass
class CheckReport:
    """What ``check_data_dir`` found. ``ok`` is true when ``problems`` is empty."""

    data_dir: str
    problems: list[str] = field(default_factory=list)
    log_entries_checked: int = 0
    first_index: int = 0
    last_index: int = 0
    commit: int = 0
    term: int = 0
    applied: int = 0
    revision: int = 0
    records: dict[str, int] = field(default_factory=dict)
    """State machine records checked, per table."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


def _store_dir(path: Path) -> Path:
    """Accept a node's data directory (holding ``raft/``) or the store directory itself."""
    return path / "raft" if (path / "raft" / "data.mdb").is_file() else path


def check_data_dir(path: str | os.PathLike[str]) -> CheckReport:
    """Check the data directory of a (stopped) node. ConfigError if ``path`` holds no raftkv data at all."""
    d = _store_dir(Path(path))
    report = CheckReport(str(d))
    if not (d / "data.mdb").is_file():
        raise ConfigError(f"no raftkv data in {path}: expected a node's data directory (holding raft/data.mdb)")
    try:
        store = LmdbLogStore(d, sync=False, verify=False)
    except StorageFormatError as e:
        raise ConfigError(str(e)) from None
    except StorageCorruption as e:
        report.problems.append(e.what)
        return report
    except DurableStorageError as e:
        raise ConfigError(f"cannot open {d}: {e}") from None
    try:
        hs, _ = store.initial_state()
        report.first_index, report.last_index = store.first_index(), store.last_index()
        report.commit, report.term, report.applied = hs.commit, hs.term, store.applied_index()
        report.log_entries_checked, problems = store.verify()
        report.problems.extend(problems)
        fsm = KVStateMachine(store)
        with store.read_txn() as txn:
            counts, problems = fsm.verify(txn)
            report.records = counts
            report.problems.extend(problems)
            if not problems:
                report.revision = fsm.revision(txn=txn)
                if fsm.applied_index(txn=txn) != report.applied:
                    report.problems.append(
                        f"the state machine's applied index {fsm.applied_index(txn=txn)} is not the store's "
                        f"{report.applied}"
                    )
    finally:
        store.close()
    return report
