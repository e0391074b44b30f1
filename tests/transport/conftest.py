"""Snapshot files shared by the transport tests (written once per session, only read by the tests)."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("tests.transport.conformance", "tests.transport.helpers")

from raftkv.storage.snapshots import SnapshotInfo  # noqa: E402

from .helpers import make_snapshot  # noqa: E402


@pytest.fixture(scope="session")
def small_snapshot(tmp_path_factory: pytest.TempPathFactory) -> SnapshotInfo:
    """About 300 kB: one chunk at the default chunk size, five of 64 KiB."""
    return make_snapshot(tmp_path_factory.mktemp("small-snapshot"), 300_000)


@pytest.fixture(scope="session")
def large_snapshot(tmp_path_factory: pytest.TempPathFactory) -> SnapshotInfo:
    """About 20 MB: far more than the memory a transfer may hold."""
    return make_snapshot(tmp_path_factory.mktemp("large-snapshot"), 20 << 20)
