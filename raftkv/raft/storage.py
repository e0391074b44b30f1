"""The core's read-only view of durable state, and an in-memory implementation.

The core only ever *reads* storage through ``LogStorage``; the driver writes it while handling a ``Ready``
(see ``LogStore`` for the write half, which every storage in raftkv implements and the conformance suite in
``tests/storage`` checks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .errors import CompactedError, SnapshotTemporarilyUnavailable, UnavailableError
from .types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata, entry_size


@runtime_checkable
class LogStorage(Protocol):
    """What the core reads. Index 0 / the snapshot index is a "dummy" position whose term is known."""

    def initial_state(self) -> tuple[HardState, ConfState]: ...

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries in [lo, hi), at least one if any, at most ``max_size`` bytes (by ``entry_size``).

        Raises CompactedError when lo <= the snapshot index, UnavailableError when hi > last_index() + 1.
        """
        ...

    def term(self, index: int) -> int:
        """Term of the entry at ``index``, for first_index()-1 <= index <= last_index()."""
        ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot: ...


class LogStore(LogStorage, Protocol):
    """The write half used by the driver (and the simulator). Each call is atomic."""

    def set_hard_state(self, hs: HardState) -> None: ...

    def append(self, entries: Sequence[Entry]) -> None:
        """Append, truncating any existing entries at or after ``entries[0].index``."""
        ...

    def apply_snapshot(self, snap: Snapshot) -> None: ...


def limit_size(entries: list[Entry], max_size: int | None) -> list[Entry]:
    """The longest prefix within ``max_size`` bytes, but never fewer than one entry."""
    if max_size is None or len(entries) <= 1:
        return entries
    size = 0
    for i, e in enumerate(entries):
        size += len(e.data) + 16
        if size > max_size and i > 0:
            return entries[:i]
    return entries


class MemoryStorage:
    """A ``LogStore`` held in memory. Used by tests, the simulator, and as the model for durable stores."""

    def __init__(self, conf_state: ConfState | None = None) -> None:
        self.hard_state = HardState()
        self.conf_state = conf_state or ConfState()
        """The membership as of the applied index (set with the applied entries, or by a snapshot)."""
        self._snapshot = Snapshot(SnapshotMetadata(self.conf_state))
        # _ents[0] is a dummy entry holding the snapshot's index and term.
        self._ents: list[Entry] = [Entry(term=0, index=0)]

    # -- LogStorage -----------------------------------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self.conf_state

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def term(self, index: int) -> int:
        offset = self._ents[0].index
        if index < offset:
            raise CompactedError(index)
        if index - offset >= len(self._ents):
            raise UnavailableError(index)
        return self._ents[index - offset].term

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise CompactedError(lo)
        if hi > self.last_index() + 1:
            raise UnavailableError(hi)
        return limit_size(self._ents[lo - offset : hi - offset], max_size)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- LogStore -------------------------------------------------------------------------------------------
    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = hs

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        first = self.first_index()
        last = entries[-1].index
        if last < first:
            return  # all already compacted
        if first > entries[0].index:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._ents[0].index
        if offset > len(self._ents):
            raise ValueError(f"missing log entry [last: {self.last_index()}, append at: {entries[0].index}]")
        del self._ents[offset:]
        self._ents.extend(entries)

    def set_conf_state(self, cs: ConfState) -> None:
        self.conf_state = cs

    def apply_snapshot(self, snap: Snapshot) -> None:
        if snap.metadata.index <= self._snapshot.metadata.index:
            raise ValueError(f"snapshot at {snap.metadata.index} is out of date")
        self._snapshot = snap
        self.conf_state = snap.metadata.conf_state
        self._ents = [Entry(term=snap.metadata.term, index=snap.metadata.index)]

    # -- compaction (driven by the state machine layer) -------------------------------------------------------
    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        if index <= self._snapshot.metadata.index:
            raise SnapshotTemporarilyUnavailable()
        if index > self.last_index():
            raise UnavailableError(index)
        snap = Snapshot(SnapshotMetadata(conf_state, index, self.term(index)), data)
        self._snapshot = snap
        return snap

    def compact(self, index: int) -> None:
        """Discard entries up to and including ``index`` (which must be ≤ the last index)."""
        offset = self._ents[0].index
        if index <= offset:
            return
        if index > self.last_index():
            raise UnavailableError(index)
        i = index - offset
        self._ents = [Entry(term=self._ents[i].term, index=index), *self._ents[i + 1 :]]

    def total_size(self) -> int:
        return sum(entry_size(e) for e in self._ents[1:])
