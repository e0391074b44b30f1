"""Helpers shared by the LMDB store tests."""

from __future__ import annotations

from raftkv.raft.types import Entry


def ents(lo: int, hi: int, term: int = 1, size: int = 8) -> list[Entry]:
    """Entries lo..hi inclusive, data tagged with index and term so misplaced data shows."""
    return [Entry(term, i, 0, f"{i}:{term}:".encode().ljust(size, b".")) for i in range(lo, hi + 1)]
