"""`raftkv snapshot save/verify/restore` on real processes: a backup restores the cluster to the state it captured,
and a damaged file is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from raftkv import localcluster
from raftkv.errors import ExitCode

from .conftest import Cluster

pytestmark = pytest.mark.slow


def test_save_then_restore_every_member_brings_the_state_back(cluster: Cluster, tmp_path: Path) -> None:
    backup = tmp_path / "backup.rkvs"
    with cluster.client() as c:
        for i in range(50):
            c.put(f"k{i}", f"v{i}")
        c.incr("counter", 7)
    before = {n.id: sorted(p.relative_to(n.data_dir) for p in n.data_dir.rglob("*")) for n in cluster.info.nodes}
    r = cluster.cli("snapshot", "save", str(backup))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"saved ") and b"crc32" in r.stdout
    for n in cluster.info.nodes:  # the backup left nothing behind in any node's data directory
        after = sorted(p.relative_to(n.data_dir) for p in n.data_dir.rglob("*"))
        assert after == before[n.id], (n.id, set(after) ^ set(before[n.id]))
    with cluster.client() as c:
        c.put("after-backup", "x")
    localcluster.down(cluster.dir)
    for n in cluster.info.nodes:
        shutil.rmtree(n.data_dir)
        r = cluster.cli("snapshot", "restore", str(backup), "--data-dir", str(n.data_dir))
        assert r.returncode == 0, r.stderr
    localcluster.up(cluster.dir, timeout_s=60)
    with cluster.client() as c:
        assert c.get("k42").value == b"v42"  # type: ignore[union-attr]
        assert c.get("counter").value == b"7"  # type: ignore[union-attr]
        assert c.get("after-backup") is None  # written after the backup
        c.put("new", "write")
    # A damaged file is refused with one line.
    data = bytearray(backup.read_bytes())
    at = data.find(b"v42")  # inside a record (not a frame's length: that reads as a truncated file)
    assert at > 0
    data[at] ^= 0xFF
    backup.write_bytes(bytes(data))
    r = cluster.cli("snapshot", "verify", str(backup))
    assert r.returncode == ExitCode.CONFIG and b"checksum mismatch" in r.stderr and b"Traceback" not in r.stderr
