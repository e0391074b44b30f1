"""Runs the one ``LogStore`` conformance suite against every implementation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv.raft import MemoryStorage
from raftkv.storage import LmdbLogStore

from .conformance import Factory, LogStoreConformance


class TestMemoryStorage(LogStoreConformance):
    @pytest.fixture
    def make_store(self) -> Factory:
        return MemoryStorage


class TestLmdbLogStore(LogStoreConformance):
    """The durable store, with its default (durable) settings."""

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Iterator[Factory]:
        stores: list[LmdbLogStore] = []

        def make() -> LmdbLogStore:
            stores.append(LmdbLogStore(tmp_path / f"store{len(stores)}"))
            return stores[-1]

        yield make
        for s in stores:
            s.close()


class TestLmdbLogStoreTinyCache(LogStoreConformance):
    """A two-entry tail cache, so most reads go through LMDB transactions, and no fsync (faster)."""

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Iterator[Factory]:
        stores: list[LmdbLogStore] = []

        def make() -> LmdbLogStore:
            stores.append(LmdbLogStore(tmp_path / f"store{len(stores)}", sync=False, cache_entries=2))
            return stores[-1]

        yield make
        for s in stores:
            s.close()
