"""Entries (and possibly a snapshot) the core has accepted but the driver has not yet reported durable."""

from __future__ import annotations

from .types import Entry, Snapshot


class Unstable:
    """``entries[i]`` has log index ``offset + i``. Invariant: offset == snapshot.index + 1 when a snapshot is held.

    Entries below ``offset_in_progress`` (and the snapshot, once ``snapshot_in_progress``) were handed to the driver
    in a Ready whose write has not been reported durable yet: a later Ready must not hand them out again, but they
    stay here (readable) until ``stable_to``. offset <= offset_in_progress <= offset + len(entries)."""

    __slots__ = ("entries", "offset", "offset_in_progress", "snapshot", "snapshot_in_progress")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.snapshot_in_progress = False
        self.entries: list[Entry] = []
        self.offset = offset
        self.offset_in_progress = offset

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
        self.offset_in_progress = max(self.offset_in_progress, self.offset)

    def stable_snap_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == index:
            self.snapshot = None
            self.snapshot_in_progress = False

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.metadata.index + 1
        self.offset_in_progress = self.offset
        self.entries = []
        self.snapshot = snap
        self.snapshot_in_progress = False

    def has_new(self) -> bool:
        """Whether anything here has not been handed out yet."""
        return (self.snapshot is not None and not self.snapshot_in_progress) or (
            self.offset_in_progress < self.offset + len(self.entries)
        )

    def take_new(self) -> tuple[Snapshot | None, tuple[Entry, ...]]:
        """The snapshot (if not handed out yet) and the entries not handed out yet; marks them in progress."""
        snap = None
        if self.snapshot is not None and not self.snapshot_in_progress:
            snap = self.snapshot
            self.snapshot_in_progress = True
        ents = tuple(self.entries[self.offset_in_progress - self.offset :])
        self.offset_in_progress = self.offset + len(self.entries)
        return snap, ents

    def truncate_and_append(self, ents: list[Entry] | tuple[Entry, ...]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)  # the common case: directly after what we hold
        elif after <= self.offset:
            # Replace everything unstable; the log's stable part at >= after is superseded too.
            self.offset = after
            self.offset_in_progress = after
            self.entries = list(ents)
        else:
            del self.entries[after - self.offset :]
            self.entries.extend(ents)
            self.offset_in_progress = min(self.offset_in_progress, after)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        return self.entries[lo - self.offset : hi - self.offset]
