"""Tests of raftkv.kv, and the small helpers they share: a ``Replica`` (a state machine, on dicts or on an
``LmdbLogStore``, that is fed log entries) and ``entry`` (one log entry holding a command batch)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from raftkv.kv import Applied, Command, KVStateMachine, encode_batch
from raftkv.raft.types import Entry
from raftkv.storage import LmdbLogStore


def entry(index: int, commands: Sequence[Command], proposer: int = 1, ts: int = 0, term: int = 1) -> Entry:
    """A NORMAL log entry at ``index`` whose data is a batch of ``commands`` from ``proposer`` at time ``ts``."""
    return Entry(term, index, 0, encode_batch(proposer, ts, commands))


class Replica:
    """A state machine fed whole entries: in dicts (``path`` None) or in an LmdbLogStore at ``path``, where each
    ``apply`` is one ``store.write(apply=..., applied=...)`` as the node will do it."""

    def __init__(self, path: Path | None = None, **kw: Any) -> None:
        self.path = path
        self.kw = kw
        self.store = None if path is None else LmdbLogStore(path, sync=False)
        self.fsm = KVStateMachine(self.store, **kw)
        self.next_index = 1

    def apply(self, entries: Sequence[Entry]) -> list[Applied]:
        if entries:
            self.next_index = max(self.next_index, entries[-1].index + 1)
        if self.store is None:
            return self.fsm.apply(None, entries)
        applied = entries[-1].index if entries else None
        if applied is not None and applied < self.store.applied_index():
            applied = None
        return cast(list[Applied], self.store.write(apply=lambda txn: self.fsm.apply(txn, entries), applied=applied))

    def run(self, *commands: Command, proposer: int = 1, ts: int = 0) -> list[Applied]:
        """Apply ``commands`` as one new entry."""
        return self.apply([entry(self.next_index, commands, proposer, ts)])

    def reopen(self) -> None:
        """Close and reopen the LMDB store (a restart)."""
        assert self.store is not None and self.path is not None
        self.store.close()
        self.store = LmdbLogStore(self.path, sync=False)
        self.fsm = KVStateMachine(self.store, **self.kw)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
