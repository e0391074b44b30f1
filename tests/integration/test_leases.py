"""Leases and the lock and election recipes on real processes (README, "Leases"): a client keeps its lease alive
across the kill of the leader; a lease whose client died expires and its keys go; two lock contenders never hold
at once and their fencing revisions order them; a holder that dies (kill -9 of its process) releases the lock when
its lease expires; elections hand over on resign; the CLI's lease commands, `lock -- COMMAND` and `elect`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from raftkv.client import Client
from raftkv.errors import LeaseNotFound

from .conftest import Cluster

pytestmark = pytest.mark.slow


def test_a_kept_lease_outlives_the_kill_of_the_leader_and_a_dropped_one_expires(cluster: Cluster) -> None:
    async def main() -> None:
        async with Client(cluster.endpoints, timeout_s=15) as c:
            kept = await c.grant(4)  # (a TTL of several election timeouts: the failover, and finding the new leader)
            dropped = await c.grant(2, keep_alive=False)
            await c.put("lease/kept", "1", lease=kept)
            await c.put("lease/dropped", "1", lease=dropped)
            info = await c.time_to_live(kept, keys=True)
            assert info.keys == (b"lease/kept",) and info.granted_ttl == 4
            lead = cluster.leader()
            cluster.kill(lead.id)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 8:  # two TTLs, an election in between
                await asyncio.sleep(0.2)
                assert kept.alive, kept.lost_reason
            assert await c.get("lease/kept") is not None
            assert await c.get("lease/dropped") is None  # (expired: nobody renewed it)
            assert kept.renewals > 0
            await kept.revoke()
            assert await c.get("lease/kept") is None
            with pytest.raises(LeaseNotFound):
                await c.put("lease/late", "1", lease=kept.id)

    asyncio.run(main())


HOLDER = r"""
import asyncio, sys
from raftkv.client import Client
async def main():
    async with Client(sys.argv[1].split(","), timeout_s=15) as c:
        lock = c.lock("jobs", ttl_s=2)
        rev = await lock.acquire()
        print(rev, flush=True)
        await asyncio.sleep(3600)
asyncio.run(main())
"""


def test_two_contenders_never_hold_the_lock_at_once_and_a_dead_holder_releases_it(cluster: Cluster) -> None:
    async def main() -> None:
        async with Client(cluster.endpoints, timeout_s=15) as a, Client(cluster.endpoints, timeout_s=15) as b:
            holding: list[str] = []
            log: list[tuple[str, int]] = []

            async def contend(c: Client, who: str, rounds: int) -> None:
                for _ in range(rounds):
                    async with c.lock("counter", ttl_s=3) as held:
                        assert not holding, f"{who} got the lock while {holding} held it"
                        holding.append(who)
                        log.append((who, held.revision))
                        await asyncio.sleep(0.02)
                        holding.remove(who)

            await asyncio.gather(contend(a, "a", 8), contend(b, "b", 8))
            revs = [r for _, r in log]
            assert revs == sorted(revs) and len(set(revs)) == len(revs)  # fencing revisions order the holders
            assert {w for w, _ in log} == {"a", "b"}

        # A holder killed with SIGKILL: its lease expires, the waiter gets the lock with a higher revision.
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, ",".join(cluster.endpoints)], stdout=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            first = int(proc.stdout.readline())
            async with Client(cluster.endpoints, timeout_s=15) as c:
                waiter = c.lock("jobs", ttl_s=2)
                task = asyncio.create_task(waiter.acquire())
                await asyncio.sleep(1.0)
                assert not task.done()  # the holder is alive
                os.kill(proc.pid, signal.SIGKILL)
                killed = time.monotonic()
                async with asyncio.timeout(15):
                    rev = await task
                assert rev > first and time.monotonic() - killed < 10
                await waiter.release()
        finally:
            proc.kill()
            proc.wait()

    asyncio.run(main())


def test_an_election_hands_over_on_resign_and_observers_follow(cluster: Cluster) -> None:
    async def main() -> None:
        async with Client(cluster.endpoints, timeout_s=15) as a, Client(cluster.endpoints, timeout_s=15) as b:
            ea, eb = a.election("svc", ttl_s=3), b.election("svc", ttl_s=3)
            seen: list[bytes | None] = []

            async def observe() -> None:
                async for kv in a.election("svc").observe():
                    seen.append(None if kv is None else kv.value)
                    if len(seen) == 4:
                        return

            obs = asyncio.create_task(observe())
            await asyncio.sleep(0.3)
            await ea.campaign("node-a")
            second = asyncio.create_task(eb.campaign("node-b"))
            await asyncio.sleep(0.5)
            assert not second.done()
            await ea.proclaim("node-a2")
            leader = await eb.leader()
            assert leader is not None and leader.value == b"node-a2"
            await ea.resign()
            async with asyncio.timeout(10):
                await second
            async with asyncio.timeout(10):
                await obs
            assert seen == [None, b"node-a", b"node-a2", b"node-b"]
            await eb.resign()

    asyncio.run(main())


def test_the_cli_lease_lock_and_elect_commands(cluster: Cluster) -> None:
    g = cluster.cli("lease", "grant", "30", "--output", "json")
    assert g.returncode == 0, g.stderr
    lid = json.loads(g.stdout)["id"]
    assert cluster.cli("put", "cli/k", "v", "--lease", str(lid)).returncode == 0
    ttl = cluster.cli("lease", "ttl", str(lid), "--keys", "--output", "json")
    doc = json.loads(ttl.stdout)
    assert doc["granted_ttl"] == 30 and doc["keys"] == ["cli/k"] and 0 < doc["ttl"] <= 30
    ka = cluster.cli("lease", "keep-alive", str(lid), "--once")
    assert ka.returncode == 0 and b"ttl 30" in ka.stdout, ka.stdout + ka.stderr
    listed = cluster.cli("lease", "list", "--output", "json")
    assert lid in json.loads(listed.stdout)["leases"]
    r = cluster.cli("lease", "revoke", str(lid))
    assert r.returncode == 0 and b"1 key deleted" in r.stdout, r.stdout
    assert cluster.cli("get", "cli/k").returncode == 3
    missing = cluster.cli("lease", "revoke", str(lid))
    assert missing.returncode == 3 and b"not found" in missing.stderr and b"Traceback" not in missing.stderr
    assert cluster.cli("put", "cli/k", "v", "--lease", "12345").returncode == 3
    # lock -- COMMAND runs it holding the lock, with the fencing revision in its environment, and exits with its code.
    held = cluster.cli("lock", "deploy", "--", sys.executable, "-c",
                       "import os, sys; print('rev', os.environ['RAFTKV_LOCK_REVISION']); sys.exit(7)")
    assert held.returncode == 7 and held.stdout.startswith(b"rev "), held.stdout + held.stderr
    # elect NAME PROPOSAL campaigns and holds; elect NAME (no proposal) prints the leader.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTKV_")}
    campaign = subprocess.Popen([sys.executable, "-m", "raftkv", "--cluster-dir", str(cluster.dir), "elect", "web",
                                 "node-1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert campaign.stdout is not None
        line = campaign.stdout.readline()
        assert b"leading web as node-1" in line, line
        obs = cluster.cli("elect", "web", "--once")
        assert obs.returncode == 0 and obs.stdout.strip() == b"node-1", obs.stdout + obs.stderr
    finally:
        campaign.send_signal(signal.SIGINT)
        campaign.wait(10)


def test_the_sync_client_grants_keeps_alive_locks_and_elects(cluster: Cluster) -> None:
    with cluster.client() as c:
        lease = c.grant(2)
        c.put("sync/k", "v", lease=lease.lease)
        assert not lease.wait_lost(3.0) and lease.alive  # kept alive past its TTL
        assert c.time_to_live(lease, keys=True).keys == (b"sync/k",)
        assert lease.id in c.leases()
        lease.revoke()
        assert c.get("sync/k") is None and lease.wait_lost(0)
        with c.lock("sync") as held:
            first = held.revision
            assert first > 0 and held.held and not held.lost()
        with c.lock("sync") as again:
            assert again.revision > first
        e = c.election("sync")
        rev = e.campaign("me")
        leader = e.leader()
        assert leader is not None and leader.value == b"me" and leader.create_revision == rev
        e.proclaim("me2")
        assert next(iter(e.observe())) is not None
        e.resign()
        assert e.leader() is None
