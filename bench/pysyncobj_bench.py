"""PySyncObj's put throughput on this machine, for issue 6's "ahead of PySyncObj" comparison.

    pip install pysyncobj          # not a raftkv dependency: only this script needs it
    python bench/pysyncobj_bench.py --clients 64 --duration 10 [--batch]

Starts a 3-node PySyncObj cluster on loopback (one process per node, free ports), each holding a ``ReplDict``, with
PySyncObj's defaults except ``appendEntriesUseBatch`` (off unless ``--batch``, as in the issue's figure). PySyncObj
has no network client: like its own benchmark, each node process generates load itself, keeping its share of
``--clients`` ``set(key, value)`` calls in flight (a completed call issues the next one from the callback), over
``--keys`` random keys with ``--value-size``-byte values. Followers' calls are forwarded to the leader by PySyncObj.
So the figures carry **no client RPC at all** (raftkv's one-per-RPC rows pay a gRPC call per operation), and
PySyncObj keeps its log in memory and never fsyncs (no ``journalFile``; with one it still does not fsync).

Prints puts/s, latency percentiles and the nodes' CPU per put over the measured window; asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def worker(args: argparse.Namespace) -> None:
    """One node: join the cluster, generate this node's share of the load, print one JSON line of results, then keep
    the node up until the parent closes stdin (the other nodes may still be measuring)."""
    from pysyncobj import SyncObj, SyncObjConf
    from pysyncobj.batteries import ReplDict

    addrs = args.addrs.split(",")
    me = addrs[args.index]
    d = ReplDict()
    conf = SyncObjConf(appendEntriesUseBatch=args.batch, dynamicMembershipChange=False)
    obj = SyncObj(me, [a for a in addrs if a != me], consumers=[d], conf=conf)
    while time.time() < args.start_at - args.warmup - 1 and not (obj.isReady() and obj._getLeader() is not None):
        time.sleep(0.05)

    value = os.urandom(args.value_size)
    rng = random.Random(args.index)
    keys = [f"bench/{i:08d}" for i in range(args.keys)]
    begin = args.start_at
    end = begin + args.duration
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stopping = threading.Event()

    def issue() -> None:
        t0 = time.monotonic()

        def done(_result: object, err: object) -> None:
            now_wall = time.time()
            with lock:
                if err != 0:
                    errors[0] += begin <= now_wall < end
                elif begin <= now_wall < end:
                    latencies.append(time.monotonic() - t0)
            if not stopping.is_set():
                issue()

        d.set(rng.choice(keys), value, callback=done)

    while time.time() < begin - args.warmup:
        time.sleep(0.01)
    for _ in range(args.inflight):
        issue()
    time.sleep(max(0.0, begin - time.time()))
    cpu0 = time.process_time()
    time.sleep(max(0.0, end - time.time()))
    cpu1 = time.process_time()
    stopping.set()
    with lock:
        lat = list(latencies)
    leader = obj._getLeader()
    # Quiesce (nothing applied for a second, applied == commit), then digest the replica: the parent compares them.
    last, still_since = -1, time.monotonic()
    while time.monotonic() - still_since < 1.0 and time.time() < end + 15:
        status = obj.getStatus()
        applied = status["last_applied"]
        if applied != last or applied != status["commit_idx"]:
            last, still_since = applied, time.monotonic()
        time.sleep(0.05)
    digest = hashlib.sha256(repr(sorted(d.items())).encode()).hexdigest()[:16]
    print(
        json.dumps(
            {
                "addr": me,
                "leader": str(leader) if leader is not None else None,
                "latencies": lat,
                "errors": errors[0],
                "cpu_s": cpu1 - cpu0,
                "applied": last,
                "digest": digest,
            }
        ),
        flush=True,
    )
    sys.stdin.read()  # until the parent is done with every node
    obj.destroy()


def run_nodes(args: argparse.Namespace, logs: IO[str]) -> list[dict[str, Any]] | None:
    """Start the 3 nodes, collect each one's results line, stop them; None if a node died without results."""
    from raftkv.localcluster import free_ports

    n = 3
    addrs = ",".join(f"127.0.0.1:{port}" for port in free_ports(n))
    start_at = time.time() + 5.0 + args.warmup  # time for the nodes to start and elect a leader
    shares = [args.clients // n + (i < args.clients % n) for i in range(n)]
    procs: list[subprocess.Popen[str]] = []
    try:
        for i in range(n):
            cmd = [sys.executable, __file__, "--worker", "--index", str(i), "--addrs", addrs]
            cmd += ["--start-at", repr(start_at), "--inflight", str(shares[i]), "--duration", str(args.duration)]
            cmd += ["--warmup", str(args.warmup), "--keys", str(args.keys), "--value-size", str(args.value_size)]
            cmd += ["--batch"] if args.batch else []
            procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logs, text=True))
        print(
            f"PySyncObj, 3 nodes, {args.clients} calls in flight ({'/'.join(map(str, shares))} per node), "
            f"appendEntriesUseBatch={args.batch}, {args.warmup:g} s warm-up + {args.duration:g} s measured ...",
            flush=True,
        )
        results = []
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                print(f"a node (pid {proc.pid}) exited without results", file=sys.stderr)
                return None
            results.append(json.loads(line))
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    return results


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clients", type=int, default=64, help="calls in flight over the whole cluster (default 64)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring (default 2)")
    p.add_argument("--keys", type=int, default=10_000, help="keyspace size (default 10000)")
    p.add_argument("--value-size", type=int, default=100, help="bytes per value (default 100)")
    p.add_argument("--batch", action="store_true", help="appendEntriesUseBatch on (PySyncObj's default)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--index", type=int, help=argparse.SUPPRESS)
    p.add_argument("--addrs", help=argparse.SUPPRESS)
    p.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    p.add_argument("--inflight", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return 0
    try:
        import pysyncobj  # noqa: F401
    except ImportError:
        print("pysyncobj is not installed: pip install pysyncobj (only this benchmark needs it)", file=sys.stderr)
        return 2
    if args.clients < 1 or args.duration <= 0 or args.warmup < 0 or args.keys < 1 or args.value_size < 1:
        p.error("--clients, --duration, --keys and --value-size must be positive, --warmup not negative")

    with tempfile.TemporaryFile("w+") as logs:  # the nodes' own log lines (counted below, not shown)
        results = run_nodes(args, logs)
        if results is None:
            return 1
        logs.seek(0)
        truncations = sum("truncating already-applied" in line for line in logs)
    lat = sorted(x for r in results for x in r["latencies"])
    errors = sum(r["errors"] for r in results)
    cpu = sum(r["cpu_s"] for r in results)
    ops = len(lat)
    print(f"leader: {results[0]['leader']}")
    print(f"puts: {ops:,} in {args.duration:g} s = {ops / args.duration:,.0f}/s, errors {errors}")
    print(
        "latency ms: "
        + ", ".join(f"p{int(q * 1000) / 10:g} {percentile(lat, q) * 1e3:.2f}" for q in (0.5, 0.9, 0.99, 0.999))
        + f", max {lat[-1] * 1e3 if lat else float('nan'):.2f}"
    )
    replicas = ", ".join(f"{r['addr']} applied {r['applied']} digest {r['digest']}" for r in results)
    same = len({(r["applied"], r["digest"]) for r in results}) == 1
    print(f"replicas after the load: {replicas} ({'identical' if same else 'DIFFERENT'})")
    if truncations:
        print(f"PySyncObj logged {truncations} times that a follower truncated log entries it had already applied")
    per_node = ", ".join(f"{r['cpu_s'] / args.duration:.2f}" for r in results)
    print(f"node CPU (cores): {per_node}; {cpu / ops * 1e3 if ops else float('nan'):.3f} ms per put (load included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
