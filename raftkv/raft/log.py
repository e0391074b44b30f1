"""RaftLog: the durable log (``LogStorage``) plus the not-yet-durable tail (``Unstable``), with commit cursors.

Invariants: applied <= applying <= committed; committed <= last_index(); first_index() - 1 is the snapshot index,
whose term is known.
"""

from __future__ import annotations

from .errors import CompactedError, UnavailableError
from .storage import LogStorage, limit_size
from .types import Entry, Snapshot
from .unstable import Unstable


class RaftLog:
    __slots__ = ("applied", "applying", "committed", "max_next_ents_size", "storage", "unstable")

    def __init__(self, storage: LogStorage, max_next_ents_size: int) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        # Everything up to the snapshot is committed and applied by definition.
        self.committed = first - 1
        self.applying = first - 1
        self.applied = first - 1
        self.max_next_ents_size = max_next_ents_size

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applied={self.applied}, applying={self.applying}, "
            f"unstable.offset={self.unstable.offset}, unstable.len={len(self.unstable.entries)})"
        )

    # -- positions --------------------------------------------------------------------------------------------
    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        u = self.unstable
        if u.entries:
            return u.offset + len(u.entries) - 1
        if u.snapshot is not None:
            return u.snapshot.metadata.index
        return self.storage.last_index()

    def stable_last_index(self) -> int:
        """The last index that is durable (everything below the unstable tail)."""
        if self.unstable.snapshot is not None:
            return 0
        return min(self.unstable.offset - 1, self.storage.last_index())

    def term(self, i: int) -> int:
        """Term at ``i``. Raises CompactedError / UnavailableError outside [first_index()-1, last_index()]."""
        u = self.unstable
        j = i - u.offset
        if 0 <= j < len(u.entries):
            return u.entries[j].term
        t = u.maybe_term(i)
        if t is not None:
            return t
        if i > self.last_index():
            raise UnavailableError(i)
        if i < self.first_index() - 1:
            raise CompactedError(i)
        return self.storage.term(i)

    def zero_term_on_out_of_bounds(self, i: int) -> int:
        try:
            return self.term(i)
        except (CompactedError, UnavailableError):
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, i: int, term: int) -> bool:
        try:
            return self.term(i) == term
        except (CompactedError, UnavailableError):
            return False

    def is_up_to_date(self, last_index: int, term: int) -> bool:
        """§5.4.1: a log is at least as up to date if its last term is higher, or equal with a longer log."""
        lt = self.last_term()
        return term > lt or (term == lt and last_index >= self.last_index())

    # -- appending --------------------------------------------------------------------------------------------
    def maybe_append(self, index: int, log_term: int, committed: int, ents: tuple[Entry, ...]) -> int | None:
        """Follower side of AppendEntries (§5.3). Returns the last index covered by the message, or None if the
        entry before ``ents`` does not match ours (the leader must back off)."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        if ents:
            ci = self.find_conflict(ents)
            if ci:
                if ci <= self.committed:
                    raise AssertionError(f"entry {ci} conflicts with committed entry [committed({self.committed})]")
                self.append(ents[ci - ents[0].index :])
        self.commit_to(min(committed, last_new))
        return last_new

    def append(self, ents: list[Entry] | tuple[Entry, ...]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        if after < self.committed:
            raise AssertionError(f"after({after}) is out of range [committed({self.committed})]")
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def find_conflict(self, ents: tuple[Entry, ...]) -> int:
        """Index of the first entry whose term differs from ours (or that we lack); 0 if all match."""
        last = self.last_index()
        for e in ents:
            if e.index > last or not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest (i, t) with i <= index and t <= term in our log: the fast back-off hint (§5.3 end).

        A leader rejected at (index, term) can skip every entry of ours whose term exceeds ``term``, because none
        of them can match its log."""
        while index > 0:
            try:
                t = self.term(index)
            except (CompactedError, UnavailableError):
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    # -- reading ----------------------------------------------------------------------------------------------
    def entries(self, i: int, max_size: int | None = None) -> list[Entry]:
        if i > self.last_index():
            return []
        return self.slice(i, self.last_index() + 1, max_size)

    def slice(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries in [lo, hi). Raises CompactedError if lo was compacted away."""
        if lo >= hi:
            return []
        first = self.first_index()
        if lo < first:
            raise CompactedError(lo)
        if hi > self.last_index() + 1:
            raise UnavailableError(hi)
        off = self.unstable.offset
        if hi <= off:
            return self.storage.entries(lo, hi, max_size)
        if lo >= off:
            return limit_size(self.unstable.slice(lo, hi), max_size)
        stored = self.storage.entries(lo, off, max_size)
        if len(stored) < off - lo:
            return stored  # the size limit cut it short
        return limit_size(stored + self.unstable.slice(off, hi), max_size)

    def unstable_entries(self) -> list[Entry]:
        return self.unstable.entries

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    # -- commit and apply -------------------------------------------------------------------------------------
    def commit_to(self, to_commit: int) -> None:
        """Never decreases the commit index."""
        if self.committed < to_commit:
            if self.last_index() < to_commit:
                raise AssertionError(f"to_commit({to_commit}) is out of range [last_index({self.last_index()})]")
            self.committed = to_commit

    def maybe_commit(self, max_index: int, term: int) -> bool:
        # §5.4.2: only an entry of the leader's current term is committed by counting replicas.
        if max_index > self.committed and self.zero_term_on_out_of_bounds(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def has_next_committed_ents(self) -> bool:
        return self.committed > self.applying and self.applying + 1 >= self.first_index()

    def next_committed_ents(self) -> list[Entry]:
        """Committed entries not yet handed out for applying. They may include unstable entries: the driver
        persists a Ready's entries before (or in the same transaction as) applying its committed entries."""
        lo = self.applying + 1
        hi = self.committed + 1
        if lo >= hi or lo < self.first_index():
            return []
        return self.slice(lo, hi, self.max_next_ents_size)

    def applying_to(self, i: int) -> None:
        if i > self.committed:
            raise AssertionError(f"applying({i}) beyond committed({self.committed})")
        if i > self.applying:
            self.applying = i

    def applied_to(self, i: int) -> None:
        if i == 0:
            return
        if self.committed < i or i < self.applied:
            raise AssertionError(
                f"applied({i}) is out of range [prev_applied({self.applied}), committed({self.committed})]"
            )
        self.applied = i
        if self.applying < i:
            self.applying = i

    def stable_to(self, i: int, t: int) -> None:
        self.unstable.stable_to(i, t)

    def stable_snap_to(self, i: int) -> None:
        self.unstable.stable_snap_to(i)

    def restore(self, snap: Snapshot) -> None:
        self.committed = snap.metadata.index
        self.unstable.restore(snap)
