"""One conformance suite for every ``LogStore``: subclass ``LogStoreConformance`` and provide a ``make_store`` fixture.

``make_store()`` returns a fresh, empty store (first_index() == 1, last_index() == 0, nothing persisted). The suite
drives it only through the ``LogStorage`` / ``LogStore`` protocols plus ``compact`` and checks the answers — values
and exceptions, including the exceptions' ``index`` — that ``MemoryStorage`` gives, the reference the core was
written against. Most cases follow etcd-io/raft's ``storage_test.go``.

This module holds no tests itself (pytest collects ``test_*.py``); ``test_conformance.py`` runs it per store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from raftkv.raft.errors import CompactedError, UnavailableError
from raftkv.raft.storage import LogStorage
from raftkv.raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata, entry_size

Factory = Callable[[], Any]


def ents(*pairs: tuple[int, int], data: bytes = b"") -> list[Entry]:
    """Entries from (index, term) pairs."""
    return [Entry(term=t, index=i, data=data) for i, t in pairs]


def snap(index: int, term: int, voters: tuple[int, ...] = (1, 2, 3), data: bytes = b"state") -> Snapshot:
    return Snapshot(SnapshotMetadata(ConfState(voters), index, term), data)


def entries_of(s: Any) -> list[Entry]:
    """Everything stored, read through the protocol."""
    return list(s.entries(s.first_index(), s.last_index() + 1))


def based(s: Any, dummy: tuple[int, int], *rest: tuple[int, int]) -> Any:
    """Give ``s`` the log etcd's tests start from: a compaction point (index, term), then entries."""
    index, term = dummy
    if index:
        s.apply_snapshot(snap(index, term))
    if rest:
        s.append(ents(*rest))
    return s


class LogStoreConformance:
    """Subclasses provide the ``make_store`` fixture."""

    @pytest.fixture
    def store(self, make_store: Factory) -> Any:
        return make_store()

    @pytest.fixture
    def base(self, store: Any) -> Any:
        """Compaction point (3, 3), then entries 4 and 5 of terms 4 and 5 (etcd's storage_test.go base)."""
        return based(store, (3, 3), (4, 4), (5, 5))

    # -- an empty store -----------------------------------------------------------------------------------------
    def test_implements_the_protocols(self, store: Any) -> None:
        assert isinstance(store, LogStorage)
        for name in ("set_hard_state", "append", "apply_snapshot", "compact"):
            assert callable(getattr(store, name))

    def test_empty(self, store: Any) -> None:
        assert store.first_index() == 1
        assert store.last_index() == 0
        assert store.term(0) == 0
        assert store.entries(1, 1) == []
        assert store.initial_state() == (HardState(), ConfState())
        assert store.snapshot().is_empty
        with pytest.raises(UnavailableError) as ei:
            store.term(1)
        assert ei.value.index == 1
        with pytest.raises(UnavailableError) as ei2:
            store.entries(1, 2)
        assert ei2.value.index == 2
        with pytest.raises(CompactedError) as ei3:
            store.entries(0, 1)
        assert ei3.value.index == 0

    # -- term -----------------------------------------------------------------------------------------------------
    @pytest.mark.parametrize(
        ("index", "expected"),
        [(2, CompactedError), (3, 3), (4, 4), (5, 5), (6, UnavailableError), (100, UnavailableError)],
    )
    def test_term(self, base: Any, index: int, expected: Any) -> None:
        if isinstance(expected, int):
            assert base.term(index) == expected
        else:
            with pytest.raises(expected) as ei:
                base.term(index)
            assert ei.value.index == index

    def test_term_of_the_dummy_index_after_compaction(self, store: Any) -> None:
        store.append(ents((1, 1), (2, 1), (3, 2), (4, 2)))
        store.compact(3)
        assert store.term(3) == 2
        with pytest.raises(CompactedError):
            store.term(2)

    # -- entries ----------------------------------------------------------------------------------------------------
    @pytest.mark.parametrize(
        ("lo", "hi", "max_size", "expected"),
        [
            (2, 6, None, CompactedError),
            (3, 4, None, CompactedError),
            (4, 5, None, [(4, 4)]),
            (4, 6, None, [(4, 4), (5, 5)]),
            (4, 7, None, [(4, 4), (5, 5), (6, 6)]),
            # the size limit: at least one entry, then only whole entries within it
            (4, 7, 0, [(4, 4)]),
            (4, 7, 1, [(4, 4)]),
            (4, 7, entry_size(Entry(4, 4)) * 2 - 1, [(4, 4)]),
            (4, 7, entry_size(Entry(4, 4)) * 2, [(4, 4), (5, 5)]),
            (4, 7, entry_size(Entry(4, 4)) * 3 - 1, [(4, 4), (5, 5)]),
            (4, 7, entry_size(Entry(4, 4)) * 3, [(4, 4), (5, 5), (6, 6)]),
            (4, 8, None, UnavailableError),
            (6, 6, None, []),
            (7, 7, None, []),
            (5, 4, None, []),  # an inverted range is empty, as a slice would be
        ],
    )
    def test_entries(self, store: Any, lo: int, hi: int, max_size: int | None, expected: Any) -> None:
        s = based(store, (3, 3), (4, 4), (5, 5), (6, 6))
        if isinstance(expected, list):
            assert s.entries(lo, hi, max_size) == ents(*expected)
        else:
            with pytest.raises(expected) as ei:
                s.entries(lo, hi, max_size)
            assert ei.value.index == (lo if expected is CompactedError else hi)

    def test_entries_size_limit_counts_the_payload(self, store: Any) -> None:
        store.append([Entry(1, i, EntryType.NORMAL, bytes(10 * i)) for i in range(1, 6)])
        sizes = [entry_size(e) for e in entries_of(store)]
        assert [len(store.entries(1, 6, sum(sizes[:n]))) for n in range(1, 6)] == [1, 2, 3, 4, 5]
        assert store.entries(2, 6, sizes[1] + sizes[2] - 1) == entries_of(store)[1:2]

    def test_entries_keep_type_and_data(self, store: Any) -> None:
        es = [Entry(1, 1, EntryType.NORMAL, b""), Entry(1, 2, EntryType.CONF_CHANGE, b"\x00cc"), Entry(2, 3, 0, b"x")]
        store.append(es)
        assert store.entries(1, 4) == es
        assert [type(e) for e in store.entries(1, 4)] == [Entry] * 3

    # -- first / last -------------------------------------------------------------------------------------------
    def test_first_and_last_index(self, base: Any) -> None:
        assert (base.first_index(), base.last_index()) == (4, 5)
        base.append(ents((6, 5)))
        assert (base.first_index(), base.last_index()) == (4, 6)
        base.compact(4)
        assert (base.first_index(), base.last_index()) == (5, 6)

    # -- append -----------------------------------------------------------------------------------------------
    @pytest.mark.parametrize(
        ("incoming", "expected"),
        [
            ([(3, 3), (4, 4), (5, 5)], [(4, 4), (5, 5)]),  # the same entries: nothing changes
            ([(3, 3), (4, 6), (5, 6)], [(4, 6), (5, 6)]),  # conflicting terms replace the suffix
            ([(3, 3), (4, 4), (5, 5), (6, 5)], [(4, 4), (5, 5), (6, 5)]),  # extends
            ([(2, 3), (3, 3), (4, 5)], [(4, 5)]),  # the compacted prefix is skipped; 5 is truncated away
            ([(4, 5)], [(4, 5)]),  # truncates the existing suffix
            ([(6, 5)], [(4, 4), (5, 5), (6, 5)]),  # direct append
            ([(1, 1), (2, 2)], [(4, 4), (5, 5)]),  # everything already compacted: ignored
        ],
    )
    def test_append(self, base: Any, incoming: list[tuple[int, int]], expected: list[tuple[int, int]]) -> None:
        base.append(ents(*incoming))
        assert entries_of(base) == ents(*expected)
        assert base.first_index() == 4
        assert base.last_index() == expected[-1][0]
        assert base.term(3) == 3

    def test_append_leaving_a_hole_is_refused(self, base: Any) -> None:
        with pytest.raises(ValueError, match="missing log entry"):
            base.append(ents((7, 5)))
        assert entries_of(base) == ents((4, 4), (5, 5))

    def test_append_truncates_then_reads_fresh_terms(self, store: Any) -> None:
        store.append(ents(*[(i, 1) for i in range(1, 101)]))
        store.append(ents((50, 2), (51, 2)))
        assert store.last_index() == 51
        assert store.term(49) == 1
        assert store.term(51) == 2
        with pytest.raises(UnavailableError):
            store.term(52)
        assert entries_of(store) == ents(*[(i, 1) for i in range(1, 50)], (50, 2), (51, 2))
        store.append(ents((52, 3)))
        assert store.entries(50, 53) == ents((50, 2), (51, 2), (52, 3))

    # -- hard state -----------------------------------------------------------------------------------------------
    def test_hard_state_round_trip(self, store: Any) -> None:
        for hs in (HardState(1, 0, 0), HardState(2, 3, 0), HardState(7, 2, 5)):
            store.set_hard_state(hs)
            assert store.initial_state()[0] == hs

    def test_hard_state_is_independent_of_the_log(self, base: Any) -> None:
        base.set_hard_state(HardState(5, 1, 5))
        base.append(ents((4, 6)))
        base.compact(4)
        assert base.initial_state()[0] == HardState(5, 1, 5)

    # -- apply_snapshot ---------------------------------------------------------------------------------------------
    def test_apply_snapshot(self, store: Any) -> None:
        store.append(ents((1, 1), (2, 1), (3, 2)))
        s1 = snap(4, 4, voters=(1, 2), data=b"four")
        store.apply_snapshot(s1)
        assert store.snapshot() == s1
        assert (store.first_index(), store.last_index()) == (5, 4)
        assert store.term(4) == 4
        assert store.initial_state()[1] == ConfState((1, 2))
        with pytest.raises(CompactedError):
            store.term(3)
        with pytest.raises(CompactedError):
            store.entries(4, 5)
        assert store.entries(5, 5) == []
        store.append(ents((5, 4), (6, 5)))
        assert entries_of(store) == ents((5, 4), (6, 5))

        s2 = snap(6, 5, voters=(1, 2, 3))
        store.apply_snapshot(s2)  # drops the entries it covers, and everything else
        assert store.snapshot() == s2
        assert (store.first_index(), store.last_index()) == (7, 6)
        assert store.initial_state()[1] == ConfState((1, 2, 3))

    @pytest.mark.parametrize("index", [3, 4])
    def test_apply_snapshot_out_of_date_is_refused(self, store: Any, index: int) -> None:
        store.apply_snapshot(snap(4, 4))
        store.append(ents((5, 4)))
        with pytest.raises(ValueError, match="out of date"):
            store.apply_snapshot(snap(index, 4))
        assert store.snapshot() == snap(4, 4)
        assert entries_of(store) == ents((5, 4))

    def test_apply_snapshot_beyond_the_log(self, base: Any) -> None:
        base.apply_snapshot(snap(10, 7))
        assert (base.first_index(), base.last_index(), base.term(10)) == (11, 10, 7)
        with pytest.raises(UnavailableError):
            base.term(11)

    # -- compact ------------------------------------------------------------------------------------------------
    @pytest.mark.parametrize(
        ("index", "first", "dummy_term"),
        [(2, 4, 3), (3, 4, 3), (4, 5, 4), (5, 6, 5)],  # at or below the compaction point: a no-op
    )
    def test_compact(self, base: Any, index: int, first: int, dummy_term: int) -> None:
        base.compact(index)
        assert base.first_index() == first
        assert base.last_index() == 5
        assert base.term(first - 1) == dummy_term
        assert entries_of(base) == [e for e in ents((4, 4), (5, 5)) if e.index >= first]

    def test_compact_beyond_the_log_is_refused(self, base: Any) -> None:
        with pytest.raises(UnavailableError) as ei:
            base.compact(6)
        assert ei.value.index == 6
        assert (base.first_index(), base.last_index()) == (4, 5)

    def test_compact_then_append_and_truncate(self, store: Any) -> None:
        store.append(ents(*[(i, 1) for i in range(1, 11)]))
        store.compact(6)
        store.append(ents((5, 1), (6, 1), (7, 2)))  # 5, 6 compacted (skipped); 7 conflicts: 8..10 go
        assert (store.first_index(), store.last_index()) == (7, 7)
        assert store.entries(7, 8) == ents((7, 2))
        assert store.term(6) == 1
        with pytest.raises(CompactedError):
            store.entries(6, 8)

    def test_compact_keeps_the_snapshot(self, store: Any) -> None:
        store.apply_snapshot(snap(2, 1))
        store.append(ents((3, 1), (4, 2)))
        store.compact(3)
        assert store.snapshot() == snap(2, 1)
        assert store.initial_state()[1] == ConfState((1, 2, 3))
