"""A full disk: the node refuses writes with a clear error instead of corrupting anything, keeps answering status
and stale reads, and after space is freed and it restarts, every acknowledged write is still there."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv import localcluster
from raftkv.errors import RaftKVError, ReadOnly, Timeout, Unavailable

from .conftest import Cluster, start_cluster

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk_cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = start_cluster(tmp_path / "cluster", nodes=1)
    data = c.info.node(1).data_dir
    mounted = False
    try:
        localcluster.down(c.dir)
        shutil.move(data, data.with_suffix(".bak"))
        data.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(data)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.decode().strip()}")
        mounted = True
        for p in data.with_suffix(".bak").iterdir():
            shutil.copytree(p, data / p.name) if p.is_dir() else shutil.copy2(p, data / p.name)
        c = Cluster(localcluster.up(c.dir, timeout_s=60))
        yield c
    finally:
        localcluster.down(c.dir)
        if mounted:
            subprocess.run(["umount", "-l", str(data)], check=False)


def test_full_disk_makes_the_node_read_only_and_loses_nothing(small_disk_cluster: Cluster) -> None:
    c = small_disk_cluster
    data = c.info.node(1).data_dir
    acked: dict[str, bytes] = {}
    refusal: RaftKVError | None = None
    with c.client(timeout_s=5) as cl:
        for i in range(400):
            v = os.urandom(20_000)
            try:
                cl.put(f"k{i}", v)
            except ReadOnly as e:
                refusal = e
                break
            except Timeout:
                continue  # the write that hit the full disk: its outcome is unknown to the client
            acked[f"k{i}"] = v
        assert refusal is not None, "the disk never filled up"
        assert "disk is full" in refusal.message
        with pytest.raises((ReadOnly, Unavailable)):
            cl.put("more", "x")
        st = cl.status()
        assert st.read_only and "disk is full" in st.read_only_reason
        # Still serving what it has (min_index=0: the client's own floor may be the write the disk refused to apply,
        # answered as it was applied, durable in the log, applied again at restart).
        assert cl.get("k0", consistency="stale", min_index=0) is not None
        with pytest.raises(Unavailable, match="applies nothing more"):  # at once, not after the deadline
            cl.get("k0", consistency="stale", min_index=10**9)
    log = c.info.node(1).log.read_text()
    assert "refuses writes" in log and "Traceback" not in log
    # Make room and restart: everything acknowledged is there, and writes work again.
    subprocess.run(["mount", "-o", "remount,size=64m", str(data)], check=True)
    localcluster.stop(c.dir, 1)
    localcluster.restart(c.dir, 1)
    with c.client() as cl:
        for k, v in acked.items():
            kv = cl.get(k)
            assert kv is not None and kv.value == v, k
        cl.put("after", "space freed")
