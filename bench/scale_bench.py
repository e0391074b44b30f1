"""Scaling measurements of issue 6 that the row-by-row harness cannot make cheaply: a large keyspace, memory per
million keys, and restarting a node whose log holds a million entries.

    python -m bench.scale_bench keys --keys 1000000          # put throughput at 10^4 vs 10^6 keys; RSS per node
    python -m bench.scale_bench restart --entries 1000000    # restart time with 10^6 entries in the log

``keys``: a fresh 3-node cluster (fsync on). The first 10^4 keys of the benchmark's keyspace (``bench.loadgen.key_of``)
are loaded, put throughput is measured over them (64 clients, one put per RPC, ``--duration`` s); then the rest of
the keyspace is loaded and the same load runs over all of it. Loading goes through transactions of 100 puts (the state
machine does the same work per key; the log gets fewer, larger entries). Each node's memory is read from
/proc/PID/status before and after: VmRSS includes the pages of LMDB's memory map the process touched (file-backed,
reclaimable), RssAnon only the Python heap.

``restart``: a 1-node cluster with compaction off below ``--entries`` and one command per log entry
(``max_batch_bytes = 1``), filled through the client library with ``sync = false`` (only to fill it faster: the
measurement is the restart). The node is stopped with SIGTERM and started again; the time is from starting the process
to its first answered linearizable read, and the node's log says how long opening (and checking) the store took.

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loadgen import LoadConfig, key_of, run_load
from raftkv import localcluster
from raftkv.client import Client, SyncClient, TxnOp


def memory(pid: int) -> dict[str, int]:
    """VmRSS and RssAnon of ``pid``, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "RssAnon"):
            out[name] = int(rest.split()[0]) * 1024
    return out


def node_memory(info: localcluster.ClusterInfo) -> dict[int, dict[str, int]]:
    return {n.id: memory(n.pid) for n in localcluster.load(info.dir).nodes if n.pid is not None}


async def load(endpoints: list[str], lo: int, hi: int, value: bytes, clients: int = 16) -> float:
    """Write keys ``lo..hi-1`` through transactions of 100 puts; returns the seconds it took."""
    per_txn = 100
    t0 = time.monotonic()
    nxt = lo
    last = t0
    async with Client(endpoints, timeout_s=60) as c:

        async def worker() -> None:
            nonlocal nxt, last
            while nxt < hi:
                base, nxt = nxt, min(hi, nxt + per_txn)
                await c.txn(success=[TxnOp.put(key_of(i), value) for i in range(base, min(hi, base + per_txn))])
                now = time.monotonic()
                if now - last >= 5:
                    last = now
                    print(f"  {nxt - lo:,} of {hi - lo:,} keys ({(nxt - lo) / (now - t0):,.0f}/s)", flush=True)

        await asyncio.gather(*(worker() for _ in range(clients)))
    return time.monotonic() - t0


def measure_puts(endpoints: list[str], keys: int, value_size: int, duration_s: float) -> dict[str, float]:
    r = asyncio.run(run_load(LoadConfig("raftkv", list(endpoints), workload="put", clients=64, duration_s=duration_s,
                                        warmup_s=2, value_size=value_size, keys=keys)))
    lat = r.get("latency_ms") or {}
    return {"ops_per_s": float(r["ops_per_s"]), "p50_ms": float(lat.get("p50", 0)), "p99_ms": float(lat.get("p99", 0)),
            "errors": float(r.get("error_count", 0))}


def keys_bench(a: argparse.Namespace, d: Path) -> None:
    small = 10_000
    value = os.urandom(a.value_size)
    info = localcluster.up(d / "cluster", 3, timeout_s=60, progress=print)
    try:
        eps = info.endpoints
        m0 = node_memory(info)
        print(f"loading {small:,} keys ({a.value_size} B values)")
        asyncio.run(load(eps, 0, small, value))
        few = measure_puts(eps, small, a.value_size, a.duration)
        print(f"puts at {small:,} keys: {few['ops_per_s']:,.0f}/s, p50 {few['p50_ms']:.1f} ms, "
              f"p99 {few['p99_ms']:.1f} ms, {few['errors']:.0f} errors")
        print(f"loading keys {small:,}..{a.keys:,}")
        el = asyncio.run(load(eps, small, a.keys, value))
        print(f"loaded {a.keys - small:,} keys in {el:.1f}s")
        time.sleep(2)
        m1 = node_memory(info)
        many = measure_puts(eps, a.keys, a.value_size, a.duration)
        print(f"puts at {a.keys:,} keys: {many['ops_per_s']:,.0f}/s, p50 {many['p50_ms']:.1f} ms, "
              f"p99 {many['p99_ms']:.1f} ms, {many['errors']:.0f} errors")
        print(f"ratio ({a.keys:,} keys / {small:,} keys): {many['ops_per_s'] / few['ops_per_s']:.2f}")
        per_m = 1e6 / a.keys
        for nid in sorted(m1):
            rss0, rss1 = m0[nid]["VmRSS"], m1[nid]["VmRSS"]
            anon0, anon1 = m0[nid]["RssAnon"], m1[nid]["RssAnon"]
            print(f"node {nid}: RSS {rss0 / 1e6:.0f} -> {rss1 / 1e6:.0f} MB (+{(rss1 - rss0) * per_m / 1e6:.0f} MB per "
                  f"million keys), of which anonymous {anon0 / 1e6:.0f} -> {anon1 / 1e6:.0f} MB "
                  f"(+{(anon1 - anon0) * per_m / 1e6:.0f} MB per million keys)")
        for n in localcluster.load(info.dir).nodes:
            size = (n.data_dir / "raft" / "data.mdb").stat().st_size
            print(f"node {n.id}: LMDB file {size / 1e6:.0f} MB")
    finally:
        localcluster.down(info.dir, purge=True)


async def fill(endpoints: list[str], entries: int, value: bytes) -> None:
    t0 = time.monotonic()
    done = 0
    last = t0
    async with Client(endpoints, timeout_s=60) as c:

        async def worker(w: int) -> None:
            nonlocal done, last
            while done < entries:
                done += 1
                await c.put(key_of(done % 10_000), value)
                now = time.monotonic()
                if now - last >= 5:
                    last = now
                    print(f"  {done:,} of {entries:,} entries ({done / (now - t0):,.0f}/s)", flush=True)

        await asyncio.gather(*(worker(w) for w in range(256)))


def restart_bench(a: argparse.Namespace, d: Path) -> None:
    settings = {"compact_after_entries": a.entries * 2, "max_batch_bytes": 1}
    info = localcluster.up(d / "cluster", 1, timeout_s=60, progress=print, sync=False, settings=settings)
    try:
        eps = info.endpoints
        print(f"filling the log with {a.entries:,} entries (one put each)")
        asyncio.run(fill(eps, a.entries, os.urandom(a.value_size)))
        with SyncClient(eps, timeout_s=10) as c:
            st = c.status(eps[0])
        first, last = int(st.stats.get("first_index", 0)), int(st.stats.get("last_index", 0))
        print(f"log: entries {first:,}..{last:,}, applied {st.applied:,}")
        size = (info.nodes[0].data_dir / "raft" / "data.mdb").stat().st_size
        print(f"LMDB file {size / 1e6:.0f} MB")
        times = []
        for attempt in range(a.repeat):
            localcluster.stop(info.dir, 1)
            t0 = time.monotonic()
            localcluster.restart(info.dir, 1, timeout_s=120)
            with SyncClient(eps, timeout_s=60) as c:
                while True:
                    try:
                        c.get(key_of(1))
                        break
                    except Exception:
                        time.sleep(0.01)
            el = time.monotonic() - t0
            times.append(el)
            log = localcluster.load(info.dir).nodes[0].log.read_text()
            opened = re.findall(r"opened the store in .*", log)
            print(f"restart {attempt + 1}: first linearizable read answered {el:.2f}s after the process started"
                  + (f" ({opened[-1]})" if opened else ""))
        print(f"restart with {last - first + 1:,} log entries: best {min(times):.2f}s, worst {max(times):.2f}s")
    finally:
        localcluster.down(info.dir, purge=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    k = sub.add_parser("keys", help="put throughput at 10^4 vs --keys keys; memory per node")
    k.add_argument("--keys", type=int, default=1_000_000)
    k.add_argument("--duration", type=float, default=10.0)
    r = sub.add_parser("restart", help="restart time of a node with --entries entries in its log")
    r.add_argument("--entries", type=int, default=1_000_000)
    r.add_argument("--repeat", type=int, default=3)
    for s in (k, r):
        s.add_argument("--value-size", type=int, default=100)
        s.add_argument("--dir", help="where to put the cluster (default: a temp dir under the current directory)")
    a = p.parse_args()
    d = Path(a.dir or tempfile.mkdtemp(prefix="raftkv-scalebench-", dir="."))
    try:
        (keys_bench if a.what == "keys" else restart_bench)(a, d)
    finally:
        if not a.dir:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
