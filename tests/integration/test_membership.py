"""Issue 7 on real processes: growing and shrinking under write load, a wiped follower rejoining by snapshot,
leadership transfer, hand-over on SIGTERM, and a log that stays bounded."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv import localcluster
from raftkv.errors import InvalidArgument, RaftKVError

from .conftest import TICK_MS, Cluster

pytestmark = pytest.mark.slow

COMPACT = {"compact_after_entries": 200, "compact_keep_entries": 20}


@pytest.fixture
def small_log_cluster(tmp_path: Path) -> Iterator[Cluster]:
    info = localcluster.up(tmp_path / "cluster", 3, tick_ms=TICK_MS, timeout_s=60, settings=COMPACT)
    c = Cluster(info)
    try:
        yield c
    finally:
        localcluster.down(c.dir, purge=True)


class Writer:
    """Puts in a background thread, remembering what was acknowledged."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.acked: dict[str, bytes] = {}
        self.errors = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.cluster.client(timeout_s=20) as c:
            i = 0
            while not self._stop.is_set():
                k, v = f"w{i % 300}", f"{i}".encode()
                try:
                    c.put(k, v)
                    self.acked[k] = v
                except RaftKVError:
                    self.errors += 1
                i += 1

    def __enter__(self) -> Writer:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(30)


def _verify(cluster: Cluster, acked: dict[str, bytes]) -> None:
    with cluster.client() as c:
        for k, v in acked.items():
            kv = c.get(k)
            assert kv is not None and kv.value == v, k


def test_grow_to_five_and_shrink_to_three_under_write_load(small_log_cluster: Cluster) -> None:
    c = small_log_cluster
    with Writer(c) as w:
        time.sleep(1)
        for _ in range(2):
            localcluster.add_node(c.dir, timeout_s=60)  # learner, catch up (log or snapshot), then voter
        with c.client() as cl:
            ml = cl.member_list()
            assert sorted(m.id for m in ml.members) == [1, 2, 3, 4, 5] and not any(m.learner for m in ml.members)
            time.sleep(1)
            lead = c.leader().id
            cl.member_remove(lead)  # removing the leader: it hands over first
            other = next(m.id for m in cl.member_list().members if m.id != lead)
            cl.member_remove(other)
            assert len(cl.member_list().members) == 3
        time.sleep(1)
    assert len(w.acked) > 50
    c.info = localcluster.load(c.dir)
    _verify(c, w.acked)


def test_a_wiped_follower_is_rebuilt_under_a_new_id_and_catches_up_by_snapshot(small_log_cluster: Cluster) -> None:
    """The repair of README "Durability": remove the member, wipe it, add it under a new id (its old id is refused
    for good); the rebuilt node needs the log the leader compacted away, so it catches up by snapshot."""
    c = small_log_cluster
    with c.client() as cl:
        for i in range(600):
            cl.put(f"s{i % 100}", f"{i}")
        lead = c.leader()
        victim = next(n for n in c.info.nodes if n.id != lead.id)
        localcluster.stop(c.dir, victim.id)
        cl.member_remove(victim.id)
        shutil.rmtree(victim.data_dir)  # its data is gone for good
        with pytest.raises(InvalidArgument, match="never a member again"):
            cl.member_add(victim.id, victim.peer_addr, victim.client_addr, learner=True)
        rebuilt = localcluster.add_node(c.dir, timeout_s=60)  # a new id, join mode, caught up, then promoted
        assert rebuilt.id not in {n.id for n in c.info.nodes}
        st = c.node_status(rebuilt.id).stats
        assert st.get("snapshots_installed", 0) >= 1  # the log it needed was compacted away
        assert rebuilt.id in {m.id for m in cl.member_list().members if not m.learner}
    with c.client([rebuilt.client_addr]) as cv:
        for i in range(500, 600):
            kv = cv.get(f"s{i % 100}", consistency="stale")
            assert kv is not None and kv.value == f"{i}".encode()


def test_the_log_stays_bounded(small_log_cluster: Cluster) -> None:
    c = small_log_cluster
    with c.client() as cl:
        for i in range(1500):
            cl.put(f"b{i % 10}", "x")
    limit = COMPACT["compact_after_entries"] + COMPACT["compact_keep_entries"] + 100
    for st in c.statuses():
        retained = st.stats["last_index"] - st.stats["first_index"] + 1
        assert st.last_index > 1500 and retained < limit, (st.id, retained, st.stats)
        assert st.stats["compactions"] >= 1
    for n in c.info.nodes:
        assert sum(f.stat().st_size for f in n.data_dir.rglob("*") if f.is_file()) < 20 << 20


def test_leader_transfer_and_sigterm_hand_over(cluster: Cluster) -> None:
    lead = cluster.leader()
    target = next(n.id for n in cluster.info.nodes if n.id != lead.id)
    r = cluster.cli("leader", "transfer", "--to", str(target))
    assert r.returncode == 0, r.stderr
    assert cluster.leader().id == target
    # SIGTERM on the leader: it hands leadership over before it stops.
    localcluster.stop(cluster.dir, target)
    log = cluster.info.node(target).log.read_text()
    assert "handed leadership to node" in log, log[-2000:]
    assert cluster.leader(timeout_s=5).id != target


def test_a_removed_member_refuses_reads_and_writes_at_once_with_exit_9(cluster: Cluster) -> None:
    """The issue's reproduction: after `member remove`, the removed node still answered a stale read with old
    data, and a write to it hung for the whole deadline. Now both fail at once (exit 9), and status says so."""
    with cluster.client() as c:
        c.put("k", "before")
    lead = cluster.leader()
    gone = next(n for n in cluster.info.nodes if n.id != lead.id)
    r = cluster.cli("member", "remove", str(gone.id))
    assert r.returncode == 0, r.stderr
    cluster.wait(lambda: cluster.node_status(gone.id).removed, "the removed node to know it")
    with cluster.client() as c:
        c.put("k", "after")
    pinned = ["--endpoints", gone.client_addr, "--timeout", "30"]
    for args in (["get", "k", "--consistency", "stale"], ["get", "k"], ["put", "k", "v"], ["list"]):
        r = cluster.cli(*pinned, *args)
        # 9, not 4: refused as removed, not left to run into the deadline
        assert r.returncode == 9, (args, r.returncode, r.stdout, r.stderr)
        assert b"removed from the cluster" in r.stderr and b"before" not in r.stdout, (args, r.stderr)
    st = cluster.node_status(gone.id)
    assert st.role == "removed" and st.removed
    # The client library with every endpoint goes on with the members.
    with cluster.client() as c:
        kv = c.get("k", consistency="stale")
        assert kv is not None and kv.value == b"after"
