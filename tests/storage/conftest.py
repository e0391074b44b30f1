"""Fixtures shared by the LMDB store tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from raftkv.storage import LmdbLogStore


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[Callable[..., LmdbLogStore]]:
    """Opens stores in tmp_path/"wal" and closes whatever is still open at the end."""
    opened: list[LmdbLogStore] = []

    def open_(**kw: Any) -> LmdbLogStore:
        kw.setdefault("sync", False)
        opened.append(LmdbLogStore(tmp_path / "wal", **kw))
        return opened[-1]

    yield open_
    for s in opened:
        s.close()
