"""A small put load generator: N concurrent clients for D seconds against a running cluster; prints ops/s, latency
percentiles and the leader's fsyncs per entry. (The full harness with etcd side by side is `raftkv bench`.)

    python bench/put_load.py --cluster-dir .raftkv-cluster --clients 64 --duration 10 --value-size 100
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from raftkv.client import Client, resolve_endpoints


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--endpoints")
    p.add_argument("--cluster-dir")
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--keys", type=int, default=1000)
    a = p.parse_args()
    eps = resolve_endpoints(a.endpoints, a.cluster_dir)
    value = os.urandom(a.value_size // 2).hex().encode()[: a.value_size]
    lat: list[float] = []
    errors = 0
    async with Client(eps, timeout_s=10, lanes=max(64, a.clients)) as c:
        await c.put(b"warmup", b"x")
        before = {s.id: s for s in await c.cluster_status()}
        stop = time.monotonic() + a.duration

        async def worker(w: int) -> None:
            nonlocal errors
            i = 0
            while time.monotonic() < stop:
                k = b"key%d" % ((w * 7919 + i) % a.keys)
                t0 = time.perf_counter()
                try:
                    await c.put(k, value)
                    lat.append(time.perf_counter() - t0)
                except Exception:
                    errors += 1
                i += 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(a.clients)))
        elapsed = time.monotonic() - t0
        after = await c.cluster_status()
    lat.sort()
    q = statistics.quantiles(lat, n=1000) if len(lat) > 10 else [0.0] * 999
    print(
        f"clients={a.clients} ops={len(lat)} ops/s={len(lat) / elapsed:.0f} errors={errors} "
        f"p50={q[499] * 1000:.2f}ms p90={q[899] * 1000:.2f}ms p99={q[989] * 1000:.2f}ms max={lat[-1] * 1000:.1f}ms"
    )
    for s in after:
        b = before.get(s.id)
        st, bst = getattr(s, "stats", None), getattr(b, "stats", None) if b else None
        if s.role == "leader" and st and bst:
            d = {k: st.get(k, 0) - bst.get(k, 0) for k in st}
            ents = max(1, d.get("entries_persisted", 0))
            w = max(1, d.get("writes", 0))
            per_ready = d.get("turn_us", 0) / max(1, d.get("readies", 0))
            print(
                f"leader {s.id}: avg persist wait={d.get('persist_us', 0) / w:.0f}us "
                f"avg store.write={d.get('write_us', 0) / w:.0f}us turn_us/ready={per_ready:.0f}"
            )
            print(
                f"leader {s.id}: readies={d.get('readies')} syncs={d.get('store_syncs')} "
                f"entries={d.get('entries_persisted')} commands={d.get('commands_proposed')} "
                f"syncs/entry={d.get('store_syncs', 0) / ents:.3f} "
                f"commands/sync={d.get('commands_proposed', 0) / max(1, d.get('store_syncs', 0)):.1f}"
            )


if __name__ == "__main__":
    asyncio.run(main())
