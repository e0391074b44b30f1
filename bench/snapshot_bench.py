"""Snapshot and disk-use measurements for issue 7, against a fresh local 3-node cluster (fsync on).

    python bench/snapshot_bench.py --keys 1000000 --value-size 100      # time to bring a new node up by snapshot
    python bench/snapshot_bench.py --disk --puts 1000000 --keys 10000   # disk use after N puts to K keys

The state is loaded through transactions of 100 puts each (the state machine does the same work per put; the log
gets 100x fewer, larger entries), with 16 concurrent clients. Prints figures, asserts nothing.
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

from raftkv import localcluster
from raftkv.client import Client, TxnOp


def du(path: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


async def load(endpoints: list[str], puts: int, keys: int, value_size: int) -> float:
    value = os.urandom(value_size // 2).hex().encode()[:value_size]
    per_txn = 100
    txns = (puts + per_txn - 1) // per_txn
    t0 = time.monotonic()
    done = 0
    async with Client(endpoints, timeout_s=60) as c:
        q: asyncio.Queue[int] = asyncio.Queue()
        for t in range(txns):
            q.put_nowait(t)

        async def worker() -> None:
            nonlocal done
            while not q.empty():
                t = q.get_nowait()
                base = t * per_txn
                ops = [TxnOp.put(b"key%08d" % ((base + i) % keys), value) for i in range(per_txn)]
                await c.txn(success=ops)
                done += 1
                if done % 1000 == 0:
                    rate = done * per_txn / (time.monotonic() - t0)
                    print(f"  {done * per_txn:,} puts ({rate:,.0f}/s)", flush=True)

        await asyncio.gather(*(worker() for _ in range(16)))
    return time.monotonic() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--keys", type=int, default=1_000_000)
    p.add_argument("--puts", type=int, default=0, help="with --disk: puts to spread over --keys (default: --keys)")
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--disk", action="store_true", help="measure disk use instead of snapshot install time")
    p.add_argument("--dir", help="where to put the cluster (default: a temp dir under the current directory)")
    a = p.parse_args()
    d = Path(a.dir or tempfile.mkdtemp(prefix="raftkv-snapbench-", dir="."))
    # Compact early, so a new node cannot catch up from the log and must be sent a snapshot.
    info = localcluster.up(d / "cluster", 3, timeout_s=60, progress=print,
                           settings={"compact_after_entries": 1000, "compact_keep_entries": 100})
    try:
        puts = a.puts or a.keys
        el = asyncio.run(load(info.endpoints, puts, a.keys, a.value_size))
        print(f"loaded {puts:,} puts to {a.keys:,} keys ({a.value_size} B values) in {el:.1f}s")
        if a.disk:
            time.sleep(2)
            for n in localcluster.load(info.dir).nodes:
                print(f"node {n.id}: data dir {du(n.data_dir) / 1e6:.1f} MB on disk "
                      f"(LMDB file {(n.data_dir / 'raft' / 'data.mdb').stat().st_size / 1e6:.1f} MB)")
            return
        t0 = time.monotonic()
        ni = localcluster.add_node(info.dir, learner=True, timeout_s=1800, progress=print)
        el = time.monotonic() - t0
        log = ni.log.read_text()
        sent = re.findall(r"sent a snapshot at index (\d+) \((\d+) records, ([\d.]+) MB\) to node \d+ in ([\d.]+)s",
                          "\n".join(n.log.read_text() for n in localcluster.load(info.dir).nodes))
        print(f"new node caught up in {el:.1f}s (add, start, snapshot, install, log tail)")
        for idx, recs, mb, secs in sent:
            print(f"  snapshot at index {idx}: {int(recs):,} records, {mb} MB, dumped+streamed in {secs}s")
        inst = [line for line in log.splitlines() if "installed a snapshot" in line]
        print("  " + (inst[-1] if inst else "(no snapshot installed: the node caught up from the log)"))
    finally:
        localcluster.down(info.dir, purge=True)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
