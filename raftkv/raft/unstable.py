"""Entries (and possibly a snapshot) the core has accepted but the driver has not yet reported durable."""

from __future__ import annotations

from .types import Entry, Snapshot


class Unstable:
    """``entries[i]`` has log index ``offset + i``. Invariant: offset == snapshot.index + 1 when a snapshot is held."""

    __slots__ = ("entries", "offset", "snapshot")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        if self.snapshot is not None:
            return self.snapshot.metadata.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return None

    def maybe_term(self, i: int) -> int | None:
        if i < self.offset:
            if self.snapshot is not None and self.snapshot.metadata.index == i:
                return self.snapshot.metadata.term
            return None
        j = i - self.offset
        if j < len(self.entries):
            return self.entries[j].term
        return None

    def stable_to(self, index: int, term: int) -> None:
        """The driver made entries up to ``index`` durable; forget them if that entry is still ours."""
        t = self.maybe_term(index)
        if t is None or t != term or index < self.offset:
            # Not ours any more (truncated and replaced since the Ready was taken), or a snapshot's index.
            return
        del self.entries[: index + 1 - self.offset]
        self.offset = index + 1

    def stable_snap_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == index:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.metadata.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: list[Entry] | tuple[Entry, ...]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)  # the common case: directly after what we hold
        elif after <= self.offset:
            # Replace everything unstable; the log's stable part at >= after is superseded too.
            self.offset = after
            self.entries = list(ents)
        else:
            del self.entries[after - self.offset :]
            self.entries.extend(ents)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        return self.entries[lo - self.offset : hi - self.offset]
