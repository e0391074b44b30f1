"""Issue 4's client-visible guarantees on real processes: exactly-once retries, read consistency levels under a
real partition, read-your-writes across nodes, vector-clock conflicts."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest

from raftkv import localcluster
from raftkv.chaos.net import NetnsHosts
from raftkv.client import Client
from raftkv.errors import ConditionFailed, RaftKVError, Timeout, Unavailable

from .conftest import Cluster

pytestmark = pytest.mark.slow


def test_incr_is_exactly_once_across_leader_kills(cluster: Cluster) -> None:
    """At least 1,000 increments from 8 concurrent clients while the leader is killed and restarted over and over
    (the workload goes on until the leader was killed 3 times): the client retries each interrupted increment with
    the same session, and the counter ends at exactly the number of increments acknowledged."""
    stop = threading.Event()
    kills = []

    def killer() -> None:
        while not stop.wait(random.uniform(0.5, 1.0)):
            try:
                lead = cluster.leader(timeout_s=10)
                cluster.kill(lead.id)
                kills.append(lead.id)
                time.sleep(0.3)
                cluster.restart(lead.id)
            except (AssertionError, RaftKVError):
                continue

    async def workload() -> tuple[int, int]:
        done = unknown = 0
        give_up = time.monotonic() + 120
        async with Client(cluster.endpoints, timeout_s=60) as c:

            async def worker() -> None:
                nonlocal done, unknown
                while (done < 1000 or len(kills) < 3) and time.monotonic() < give_up:
                    await asyncio.sleep(random.uniform(0, 0.03))  # spread the workload over several kills
                    try:
                        await c.incr("counter")
                        done += 1
                    except Timeout as e:
                        if e.outcome_unknown:
                            unknown += 1
                        raise

            await asyncio.gather(*(worker() for _ in range(8)))
        return done, unknown

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        done, unknown = asyncio.run(workload())
    finally:
        stop.set()
        t.join()
    for n in cluster.info.nodes:  # bring back whoever the killer left down
        if not localcluster.load(cluster.dir).node(n.id).running:
            cluster.restart(n.id)
    assert len(kills) >= 3, f"the leader was killed only {len(kills)} times during the workload"
    assert done >= 1000 and unknown == 0, (done, unknown)
    with cluster.client() as c:
        kv = c.get("counter")
        assert kv is not None and kv.value == str(done).encode(), (kv, done)


def test_a_partitioned_follower_serves_stale_reads_but_not_linearizable_ones(
    netns_cluster: tuple[Cluster, NetnsHosts],
) -> None:
    cluster, hosts = netns_cluster
    with cluster.client() as c:
        c.put("x", "old")
    lead = cluster.leader()
    f = next(n for n in cluster.info.nodes if n.id != lead.id)
    with cluster.client([f.client_addr]) as cf:
        cluster.wait(lambda: getattr(cf.get("x", consistency="stale", min_index=0), "value", None) == b"old",
                     "follower caught up")
    hosts.isolate(f.id)
    with cluster.client() as c:
        c.put("x", "new")  # the majority carries on
    with cluster.client([f.client_addr], timeout_s=3) as cf:
        kv = cf.get("x", consistency="stale", min_index=0)
        assert kv is not None and kv.value == b"old"  # stale: its own (old) state, at once
        with pytest.raises((Unavailable, Timeout)):
            cf.get("x", consistency="linearizable", min_index=0)  # refuses: cannot reach a leader's quorum
        with pytest.raises((Unavailable, Timeout)):
            cf.get("x", consistency="bounded", max_staleness_ms=200, fail_if_stale=True, min_index=0)
    hosts.heal()
    with cluster.client([f.client_addr], timeout_s=15) as cf:
        kv = cf.get("x", min_index=0)
        assert kv is not None and kv.value == b"new"


def test_min_index_waits_instead_of_going_backwards_on_a_lagging_node(
    netns_cluster: tuple[Cluster, NetnsHosts],
) -> None:
    """Read-your-writes with stale reads: a client that has seen index I never reads a state older than I, even on
    a node that is behind; without the token, the same node does return the old value."""
    cluster, hosts = netns_cluster
    lead = cluster.leader()
    f = next(n for n in cluster.info.nodes if n.id != lead.id)
    with cluster.client() as c:
        c.put("y", "1")
        cluster.wait(lambda: cluster.node_status(f.id).applied >= c.seen_index, "follower to apply y=1")
        hosts.isolate(f.id)
        r = c.put("y", "2")  # the follower does not get this
    with cluster.client([f.client_addr], timeout_s=2) as cf:
        old = cf.get("y", consistency="stale", min_index=0)
        assert old is not None and old.value == b"1"  # the node really is behind
        with pytest.raises((Timeout, Unavailable)):
            cf.get("y", consistency="stale", min_index=r.index)  # waits for the token's index, never returns "1"
    hosts.heal()
    with cluster.client([f.client_addr], timeout_s=15) as cf:
        kv = cf.get("y", consistency="stale", min_index=r.index)
        assert kv is not None and kv.value == b"2"


def test_read_your_writes_with_stale_reads_spread_over_every_node(cluster: Cluster) -> None:
    with cluster.client() as c:
        for i in range(100):
            c.put("ryw", str(i))
            kv = c.get("ryw", consistency="stale")  # any node; the client sends the index it has seen
            assert kv is not None and kv.value == str(i).encode(), (i, kv)


def test_conflicting_vector_clock_writes_are_rejected(cluster: Cluster) -> None:
    with cluster.client() as a, cluster.client() as b:
        a.put("doc", "v0")
        ka, kb = a.get("doc"), b.get("doc")
        assert ka is not None and kb is not None and ka.vclock == kb.vclock
        a.put("doc", "from a", context=ka.vclock)
        with pytest.raises(ConditionFailed) as e:
            b.put("doc", "from b", context=kb.vclock)  # b read the same clock: someone wrote since
        assert e.value.current is not None and e.value.current.value == b"from a"
        assert e.value.current.vclock != kb.vclock
        assert b.get("doc").value == b"from a"  # type: ignore[union-attr]


def test_lease_and_bounded_reads(cluster: Cluster) -> None:
    with cluster.client() as c:
        c.put("l", "1")
        assert c.get("l", consistency="lease").value == b"1"  # type: ignore[union-attr]  # via the leader
        for n in cluster.info.nodes:
            with cluster.client([n.client_addr]) as cn:
                # A healthy follower heard from the leader well within 2 s: served locally.
                kv = cn.get("l", consistency="bounded", max_staleness_ms=2000, fail_if_stale=True)
                assert kv is not None and kv.value == b"1"
