"""Where a raftkv cluster's CPU goes under load: per node and per thread, CPU time and context switches per
operation, and (with py-spy installed) a sampled profile of the leader.

    python bench/profile_leader.py [--workload put] [--clients 64] [--duration 10] [--processes 2] [--no-spy]

Starts a fresh 3-node cluster (fsync on), preloads the keyspace for read workloads, runs the benchmark's load
generator (``bench.loadgen``, one operation per RPC, the clients spread over the members) and, over the measured
window, reads every thread's CPU time and context switches from ``/proc`` and the leader's counters from Status.
py-spy (``pip install py-spy``; not a raftkv dependency) then records the leader for the window: the report gives
each thread's share of the samples, the frames with the most samples of their own, and the share of the loop
thread spent below the event loop in native code (gRPC's C core, uvloop) rather than in Python frames.
Prints figures only (no assertions). Everything it starts is stopped by pid and removed, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import raftkv  # noqa: F401
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raftkv import localcluster
from raftkv.client import SyncClient

ROOT = Path(__file__).resolve().parents[1]
CLK = os.sysconf("SC_CLK_TCK")


def thread_times(pid: int) -> dict[int, tuple[str, float, float, int]]:
    """tid -> (name, user s, system s, context switches) for every thread of ``pid``."""
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{t}/stat").read_text()
            status = Path(f"/proc/{pid}/task/{t}/status").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        f = stat.rsplit(")", 1)[1].split()
        cs = sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line)
        out[int(t)] = (name, int(f[11]) / CLK, int(f[12]) / CLK, cs)
    return out


def python_thread_names(pid: int, spy: str | None) -> dict[int, str]:
    """tid -> Python thread name, from ``py-spy dump`` (empty without py-spy)."""
    if spy is None:
        return {}
    r = subprocess.run([spy, "dump", "--pid", str(pid), "--nonblocking"], capture_output=True, text=True, timeout=30)
    return {int(m.group(1)): m.group(2) for m in re.finditer(r'Thread (?:0x)?(\d+) \(\w+\): "([^"]+)"', r.stdout)}


def label(tid: int, pid: int, name: str, py_names: dict[int, str]) -> str:
    if tid == pid:
        return "event loop (main)"
    n = py_names.get(tid, "")
    if n.startswith("raftkv-writer"):
        return "writer"
    if "_poll_wrapper" in n or n.startswith("Thread-"):
        return "grpc poller"
    if n:
        return n
    if name == "python":
        return "other Python threads (writer, gRPC poller; names need py-spy)"
    return name  # gRPC's C threads name themselves (event_engine, grpc_global_tim, ...)


def spy_report(raw: Path, top: int) -> list[str]:
    samples: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    below_loop = loop_total = 0
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n_s = line.rpartition(" ")
        if not stack:
            continue
        n = int(n_s)
        frames = stack.split(";")
        total += n
        samples[frames[0]] += n
        own[frames[-1]] += n
        if "MainThread" in frames[0]:
            loop_total += n
            if frames[-1].startswith("Runner.run "):  # no Python frame below the loop: native code
                below_loop += n
    lines = [f"py-spy: {total} samples of the leader"]
    for t, n in samples.most_common(6):
        lines.append(f"  {n / total:6.1%}  {t}")
    if loop_total:
        lines.append(f"  of the main thread's samples, {below_loop / loop_total:.0%} are native code below the event "
                     "loop (gRPC's C core, uvloop), the rest Python frames")
    lines.append(f"  frames with the most samples of their own (top {top}):")
    for fr, n in own.most_common(top):
        lines.append(f"    {n / total:6.1%}  {fr[:110]}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="put")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--keys", type=int, default=10000)
    ap.add_argument("--no-spy", action="store_true", help="skip the py-spy profile")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    spy = None if a.no_spy else shutil.which("py-spy") or next(
        (str(p) for p in [Path(sys.executable).parent / "py-spy"] if p.exists()), None)
    tmp = Path(tempfile.mkdtemp(prefix="raftkv-profile-"))
    info = None
    procs: list[subprocess.Popen[str]] = []
    try:
        info = localcluster.up(tmp / "cluster", 3, tick_ms=100, sync=True, timeout_s=60)
        lead = localcluster.wait_for_leader(info)
        nodes = {n.id: n for n in localcluster.load(info.dir).nodes}
        eps = ",".join(info.endpoints)
        lg = [sys.executable, "-m", "bench.loadgen", "--target", "raftkv", "--endpoints", eps, "--keys", str(a.keys),
              "--value-size", str(a.value_size)]
        if a.workload.startswith("get") or a.workload.startswith("mixed"):
            subprocess.run([*lg, "--preload", "--clients", "32"], check=True, cwd=ROOT, capture_output=True)
        per = max(1, a.clients // a.processes)
        warmup = 2.0
        start = time.time() + 3.0
        procs = [subprocess.Popen([*lg, "--workload", a.workload, "--clients", str(per), "--duration", str(a.duration),
                                   "--warmup", str(warmup), "--start-at", str(start), "--worker-base", str(i * per)],
                                  cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
                 for i in range(a.processes)]
        sc = SyncClient([lead.client_addr])
        time.sleep(max(0.0, start + warmup - time.time()))
        pids = {i: n.pid for i, n in nodes.items() if n.pid}
        before = {i: thread_times(p) for i, p in pids.items()}
        s0 = dict(sc.status(lead.client_addr).stats)
        t0 = time.monotonic()
        spy_proc = None
        raw = tmp / "leader.txt"
        if spy is not None:
            spy_proc = subprocess.Popen([spy, "record", "-p", str(pids[lead.id]), "-d", str(int(a.duration) - 1),
                                         "-r", "200", "--threads", "--nonblocking", "--format", "raw", "-o", str(raw)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(a.duration - 0.5)
        after = {i: thread_times(p) for i, p in pids.items()}
        window = time.monotonic() - t0
        s1 = dict(sc.status(lead.client_addr).stats)
        names = {i: python_thread_names(p, spy) for i, p in pids.items()}
        results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
        if spy_proc is not None:
            spy_proc.wait(60)
        ops = sum(r["ops"] for r in results)
        rate = ops / a.duration
        print(f"{a.workload}, {a.clients} clients in {a.processes} load generator processes, 3 nodes (leader: node "
              f"{lead.id}): {rate:,.0f} ops/s")
        for i, pid in pids.items():
            agg: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
            for tid, (name, u, s, cs) in after[i].items():
                _, u0, s0_, cs0 = before[i].get(tid, (name, 0.0, 0.0, 0))
                k = label(tid, pid, name, names[i])
                agg[k][0] += u - u0
                agg[k][1] += s - s0_
                agg[k][2] += cs - cs0
            n_ops = rate * window
            tot = sum(u + s for u, s, _ in agg.values())
            parts = ", ".join(
                f"{k} {(u + s) / n_ops * 1e6:.0f} µs (system {s / n_ops * 1e6:.0f}, {c / n_ops:.1f} switches)"
                for k, (u, s, c) in sorted(agg.items(), key=lambda kv: -(kv[1][0] + kv[1][1])) if u + s > 0.005)
            role = "leader" if i == lead.id else "follower"
            print(f"  node {i} ({role}): {tot / window:.2f} cores, {tot / n_ops * 1e6:.0f} µs per op: {parts}")
        d = {k: s1[k] - s0.get(k, 0) for k in s1}
        writes = max(1, d.get("writes", 0))
        print(f"  leader per write: {d.get('write_us', 0) / writes:.0f} µs in store.write, of which "
              f"{d.get('write_cpu_us', 0) / writes:.0f} µs the writer's CPU; LMDB commit "
              f"{d.get('store_commit_us', 0) / max(1, d.get('store_commits', 0)):.0f} µs, explicit sync "
              f"{d.get('store_sync_us', 0) / max(1, d.get('store_syncs', 0)):.0f} µs; "
              f"{d.get('commands_proposed', 0) / writes:.1f} commands per write; "
              f"GC {d.get('gc_collections', 0)} passes, {d.get('gc_pause_us', 0) / 1000:.0f} ms")
        if spy_proc is not None and raw.exists():
            print("\n".join(spy_report(raw, a.top)))
        elif spy is None and not a.no_spy:
            print("py-spy is not installed (pip install py-spy): no sampled profile")
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if info is not None:
            localcluster.down(info.dir, purge=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
