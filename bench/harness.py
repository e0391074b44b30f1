"""The benchmark harness behind ``python -m bench``: fresh clusters, load generator processes, the report.

For every row (system x workload x client count) it starts a fresh local cluster (raftkv through
``raftkv.localcluster``, etcd through ``bench.etcd``, or the no-op server), preloads the keyspace when the workload
reads, starts ``--processes`` load generators (``python -m bench.loadgen``) that set up, report ready, and start
together at one wall-clock time, samples every server and load generator process's CPU time (``/proc/<pid>/stat``)
and the machine's (``/proc/stat``) at the start and end of the measured window, and raftkv's leader counters
(``Status.stats``), reads each server's RSS after the window, tears the cluster down and merges the results.
Every process it starts runs in its own session and is stopped by its pid, also on Ctrl-C or a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import loadgen
from .loadgen import PROGRESS_PREFIX, READY_LINE, WORKLOADS, merge_results, workload_ops, workload_reads

REPO = Path(__file__).resolve().parent.parent
SCHEMA = "raftkv-bench/1"
SYSTEMS = ("raftkv", "raftkv-etcd", "etcd", "noop")
"""``raftkv-etcd``: a raftkv cluster driven through its etcd v3 API by the very load target that drives etcd (the
same client code, the same requests), so the two servers are compared on identical work."""
ETCD_API = frozenset({"etcd", "raftkv-etcd"})
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PRELOAD_CONCURRENCY = 32
READY_TIMEOUT_S = 60.0


class BenchError(Exception):
    """Something the user must fix or know (one line): etcd missing, a cluster that did not start ..."""


@dataclass(frozen=True, slots=True)
class Options:
    systems: tuple[str, ...]
    workloads: tuple[str, ...]
    clients: tuple[int, ...]
    nodes: int = 3
    endpoints: tuple[str, ...] = ()
    value_size: int = 256
    keys: int = 10_000
    duration_s: float = 10.0
    warmup_s: float = 2.0
    processes: int = 1
    client_mode: str = "rpc"
    timeout_s: float = 5.0
    out: Path = Path("bench/results")
    data_dir: Path | None = None
    ceiling: bool = True
    plots: bool = True
    notes: tuple[str, ...] = ()


# -- /proc ------------------------------------------------------------------------------------------------------
def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (``/proc/<pid>/stat``), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_bytes(pid: int) -> int | None:
    """Resident set size (``VmRSS`` of ``/proc/<pid>/status``), None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot (``/proc/stat``); (0, 0) without /proc."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return 0, 0
    ticks = [int(x) for x in first[1:9]]  # user nice system idle iowait irq softirq steal
    total = sum(ticks)
    return total - ticks[3] - ticks[4], total


def fs_type(path: Path) -> str:
    """The file system type holding ``path`` (from /proc/mounts; "unknown" elsewhere)."""
    best, kind = "", "unknown"
    p = str(path.resolve())
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                mnt = parts[1]
                if (p == mnt or p.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, kind = mnt, parts[2]
    except OSError:
        pass
    return kind


# -- processes --------------------------------------------------------------------------------------------------
def stop_process(p: subprocess.Popen[Any], timeout_s: float = 5.0) -> None:
    """Stop ``p`` by its pid (SIGTERM, then SIGKILL after ``timeout_s``) and close its pipes."""
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            p.wait(5)
    for f in (p.stdin, p.stdout, p.stderr):
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()


class Children:
    """Every process the harness starts, stopped by its pid (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, cmd: Sequence[str], *, stdin: bool = False) -> subprocess.Popen[str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        p = subprocess.Popen(
            list(cmd),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen[str], timeout_s: float = 5.0) -> None:
        stop_process(p, timeout_s)
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self) -> None:
        for p in list(self.procs):
            self.stop(p)


class _Reader:
    """Drains a load generator's stderr on a thread: progress reports, the ready line, the last other lines."""

    def __init__(self, p: subprocess.Popen[str]) -> None:
        self.latest: dict[str, Any] = {}
        self.ready = threading.Event()
        self.other: list[str] = []
        assert p.stderr is not None
        self._t = threading.Thread(target=self._run, args=(p,), daemon=True)
        self._t.start()

    def _run(self, p: subprocess.Popen[str]) -> None:
        assert p.stderr is not None
        for line in p.stderr:
            line = line.rstrip("\n")
            if line.startswith(PROGRESS_PREFIX):
                with contextlib.suppress(ValueError):
                    self.latest = json.loads(line[len(PROGRESS_PREFIX) :])
            elif line == READY_LINE:
                self.ready.set()
            elif line.strip():
                self.other = [*self.other[-19:], line]

    def join(self, timeout_s: float) -> None:
        self._t.join(timeout_s)


# -- clusters ---------------------------------------------------------------------------------------------------
class Cluster(Protocol):
    system: str
    endpoints: list[str]

    def server_pids(self) -> dict[str, int]: ...

    def stats(self) -> dict[str, Any] | None:
        """raftkv: the leader's id and counters; None for other systems."""

    def down(self) -> None: ...


def _raftkv_stats(endpoints: Sequence[str]) -> dict[str, Any] | None:
    from raftkv.client import SyncClient

    with SyncClient(list(endpoints), timeout_s=3.0) as c:
        statuses = [s for s in c.cluster_status(timeout_s=2.0) if s.reachable]
    for s in statuses:
        if s.role == "leader":
            stats = dict(s.stats)
            # Every command is proposed on exactly one node: the leader, or the follower that forwarded it.
            stats["commands_proposed"] = sum(int(x.stats.get("commands_proposed", 0)) for x in statuses)
            return {"leader": s.id, "endpoint": s.endpoint, "stats": stats}
    return None


class RaftkvLocal:
    system = "raftkv"

    def __init__(self, dir: Path, nodes: int, say: Callable[[str], None]) -> None:
        from raftkv import localcluster
        from raftkv.errors import RaftKVError

        self.dir = dir
        try:
            self.info = localcluster.up(dir, nodes, tick_ms=100, sync=True, timeout_s=60.0, progress=say)
        except RaftKVError as e:
            raise BenchError(f"the raftkv cluster did not start: {e.message}") from None
        self.endpoints = self.info.endpoints

    def server_pids(self) -> dict[str, int]:
        return {f"node{n.id}": n.pid for n in self.info.nodes if n.pid is not None}

    def stats(self) -> dict[str, Any] | None:
        return _raftkv_stats(self.endpoints)

    def down(self) -> None:
        from raftkv import localcluster

        localcluster.down(self.dir, purge=True)


class RaftkvEtcdLocal(RaftkvLocal):
    """A raftkv cluster, benchmarked through its etcd API."""

    system = "raftkv-etcd"


class EtcdLocal:
    system = "etcd"

    def __init__(self, dir: Path, nodes: int, say: Callable[[str], None]) -> None:
        from .etcd import EtcdCluster, EtcdError

        try:
            self.cluster = EtcdCluster.up(dir, nodes, timeout_s=60.0, progress=say)
        except EtcdError as e:
            raise BenchError(str(e)) from None
        self.endpoints = self.cluster.endpoints

    def server_pids(self) -> dict[str, int]:
        return self.cluster.server_pids()

    def stats(self) -> dict[str, Any] | None:
        return None

    def down(self) -> None:
        self.cluster.down(purge=True)


class NoopLocal:
    system = "noop"

    def __init__(self, children: Children) -> None:
        self.children = children
        self.proc = children.start([sys.executable, "-m", "bench.loadgen", "--serve-noop", "127.0.0.1:0"])
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()  # "listening PORT", or the exit
        if not line.startswith("listening "):
            err = (self.proc.stderr.read() if self.proc.stderr else "").strip().splitlines()
            children.stop(self.proc)
            raise BenchError(f"the no-op server did not start: {err[-1] if err else line or 'no output'}")
        self.endpoints = [f"127.0.0.1:{int(line.split()[1])}"]

    def server_pids(self) -> dict[str, int]:
        return {"noop": self.proc.pid}

    def stats(self) -> dict[str, Any] | None:
        return None

    def down(self) -> None:
        self.children.stop(self.proc)


class External:
    """A cluster the user runs (``--endpoints``): not started or stopped here; no server CPU or RSS."""

    def __init__(self, system: str, endpoints: Sequence[str]) -> None:
        self.system = system
        self.endpoints = list(endpoints)

    def server_pids(self) -> dict[str, int]:
        return {}

    def stats(self) -> dict[str, Any] | None:
        return _raftkv_stats(self.endpoints) if self.system in ("raftkv", "raftkv-etcd") else None

    def down(self) -> None:
        pass


# -- one row ----------------------------------------------------------------------------------------------------
def unsupported_reason(system: str, workload: str, client_mode: str) -> str | None:
    """Why ``system`` cannot run ``workload`` (None: it can), asked of the load generator's targets."""
    value = b"x"
    for op in workload_ops(workload):
        tgt: Any
        if system in ETCD_API:
            from .etcd import EtcdTarget

            tgt = EtcdTarget(["127.0.0.1:1"], value)
        else:
            tgt = loadgen.make_target(system, ["127.0.0.1:1"], value, client_mode=client_mode)
        try:
            tgt.check(op)
        except loadgen.Unsupported as e:
            return str(e)
    return None


def split_clients(clients: int, processes: int) -> list[int]:
    """``clients`` spread over at most ``processes`` processes (each at least one client)."""
    p = max(1, min(processes, clients))
    return [clients // p + (1 if i < clients % p else 0) for i in range(p)]


@dataclass(slots=True)
class Sample:
    t: float
    servers: dict[str, float | None]
    loadgens: dict[int, float | None]
    machine: tuple[int, int]
    harness: float | None
    stats: dict[str, Any] | None = None


def _sample(cluster: Cluster, pids: Sequence[int], with_stats: bool) -> Sample:
    """CPU times first (cheap and exact), then raftkv's counters (a Status RPC)."""
    smp = Sample(
        time.time(),
        {name: proc_cpu_s(pid) for name, pid in cluster.server_pids().items()},
        {pid: proc_cpu_s(pid) for pid in pids},
        machine_cpu_ticks(),
        proc_cpu_s(os.getpid()),
    )
    if with_stats:
        with contextlib.suppress(Exception):
            smp.stats = cluster.stats()
    return smp


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(b - a, 3)


def durability_figures(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any] | None:
    """The leader's counter deltas over the window and the figures made of them (None without both samples);
    ``commands_proposed`` counts the commands of the whole cluster (followers forward theirs)."""
    if not before or not after:
        return None
    out: dict[str, Any] = {"leader_before": before["leader"], "leader_after": after["leader"]}
    if before["leader"] != after["leader"]:
        out["note"] = "the leader changed during the window: the deltas mix two nodes' counters"
    b, a = before["stats"], after["stats"]
    deltas = {k: int(a.get(k, 0)) - int(b.get(k, 0)) for k in sorted(set(a) | set(b)) if k not in ("term", "applied")}
    out["deltas"] = deltas
    syncs = deltas.get("store_syncs", 0)
    entries = deltas.get("entries_persisted", 0)
    commands = deltas.get("commands_proposed", 0)
    out["fsyncs_per_entry"] = round(syncs / entries, 4) if entries else None
    out["commands_per_fsync"] = round(commands / syncs, 3) if syncs and commands else None
    out["commands_per_entry"] = round(commands / entries, 3) if entries and commands else None
    # Every device flush: each commit fdatasyncs its data pages, each durable one also its meta page.
    flushes = deltas.get("store_commits", 0) + syncs
    out["fdatasyncs_per_command"] = round(flushes / commands, 4) if commands else None
    return out


@dataclass(slots=True)
class RunContext:
    opts: Options
    children: Children
    progress: Progress
    console: Console
    seed: int = field(default_factory=lambda: int(time.time()) & 0xFFFF)

    def say(self, msg: str) -> None:
        self.console.print(f"[dim]{msg}[/dim]")


def _loadgen_cmd(ctx: RunContext, system: str, endpoints: Sequence[str], workload: str, clients: int,
                 worker_base: int, duration_s: float, warmup_s: float, extra: Sequence[str] = ()) -> list[str]:
    o = ctx.opts
    cmd = [
        sys.executable, "-m", "bench.loadgen",
        "--target", "etcd" if system in ETCD_API else system,
        "--endpoints", ",".join(endpoints),
        "--workload", workload,
        "--clients", str(clients),
        "--duration", str(duration_s),
        "--warmup", str(warmup_s),
        "--value-size", str(o.value_size),
        "--keys", str(o.keys),
        "--client-mode", o.client_mode,
        "--timeout", str(o.timeout_s),
        "--seed", str(ctx.seed),
        "--worker-base", str(worker_base),
        "--progress",
        *extra,
    ]  # fmt: skip
    return cmd


def _parse_result(p: subprocess.Popen[str], reader: _Reader, what: str) -> dict[str, Any]:
    out = p.stdout.read() if p.stdout is not None else ""
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("{")]
    if lines:
        with contextlib.suppress(ValueError):
            res: dict[str, Any] = json.loads(lines[-1])
            return res
    tail = reader.other[-1] if reader.other else f"exit code {p.returncode}, no output"
    return {"status": "failed", "reason": f"{what} (pid {p.pid}) failed: {tail}"}


def preload(ctx: RunContext, cluster: Cluster) -> dict[str, Any]:
    """Write the whole keyspace with the load generator processes (their share each), with a progress bar."""
    o = ctx.opts
    n = o.keys
    shares = split_clients(n, o.processes)
    procs = []
    lo = 0
    t0 = time.monotonic()
    task = ctx.progress.add_task(f"preload {cluster.system}: {n:,} keys of {o.value_size} B", total=n, info="")
    try:
        for share in shares:
            cmd = _loadgen_cmd(ctx, cluster.system, cluster.endpoints, "put", PRELOAD_CONCURRENCY, 0, 1, 0,
                               ["--preload", "--preload-from", str(lo), "--preload-to", str(lo + share)])
            p = ctx.children.start(cmd)
            procs.append((p, _Reader(p)))
            lo += share
        while any(p.poll() is None for p, _ in procs):
            done = sum(int(r.latest.get("done", 0)) for _, r in procs)
            rate = done / max(1e-3, time.monotonic() - t0)
            ctx.progress.update(task, completed=done, info=f"{rate:,.0f} keys/s")
            time.sleep(0.2)
        results = [_parse_result(p, r, "a preload process") for p, r in procs]
    finally:
        for p, r in procs:
            ctx.children.stop(p)
            r.join(1.0)
        ctx.progress.remove_task(task)
    bad = [res for res in results if res.get("status") != "ok"]
    if bad:
        raise BenchError(f"preloading {cluster.system} failed: {bad[0].get('reason', 'unknown error')}")
    errors: dict[str, int] = {}
    for res in results:
        for k, v in res.get("errors", {}).items():
            errors[k] = errors.get(k, 0) + v
    elapsed = time.monotonic() - t0
    ctx.say(f"preloaded {n:,} keys into {cluster.system} in {elapsed:.1f}s"
            + (f" (errors: {errors})" if errors else ""))
    return {"keys": n, "elapsed_s": round(elapsed, 2), "errors": errors}


def run_row(ctx: RunContext, cluster: Cluster, workload: str, clients: int, *, duration_s: float | None = None,
            warmup_s: float | None = None) -> dict[str, Any]:
    """One measured run of ``workload`` with ``clients`` clients against a running cluster: the row's dict."""
    o = ctx.opts
    dur = o.duration_s if duration_s is None else duration_s
    warm = o.warmup_s if warmup_s is None else warmup_s
    shares = split_clients(clients, o.processes)
    label = f"{cluster.system} {workload} c={clients}"
    task = ctx.progress.add_task(label, total=warm + dur, info="starting load generators")
    procs: list[tuple[subprocess.Popen[str], _Reader]] = []
    base = 0
    try:
        for share in shares:
            p = ctx.children.start(
                _loadgen_cmd(ctx, cluster.system, cluster.endpoints, workload, share, base, dur, warm, ["--wait-go"]),
                stdin=True,
            )
            procs.append((p, _Reader(p)))
            base += share
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(r.ready.is_set() or p.poll() is not None for p, r in procs):
            if time.monotonic() > deadline:
                raise BenchError(f"{label}: the load generators were not ready within {READY_TIMEOUT_S:g}s")
            time.sleep(0.05)
        if any(p.poll() is not None for p, _ in procs):  # one could not set up (unsupported, unreachable ...)
            for p, r in procs:
                if p.poll() is not None:
                    res = _parse_result(p, r, "a load generator")
                    return {"status": "n/a" if res.get("status") == "unsupported" else "failed",
                            "reason": res.get("reason", "")}
        start_at = time.time() + 0.3
        for p, _ in procs:
            assert p.stdin is not None
            p.stdin.write(f"{start_at!r}\n")
            p.stdin.flush()
        pids = [p.pid for p, _ in procs]
        is_raftkv = cluster.system == "raftkv"
        samples: list[Sample] = []
        marks = [start_at + warm, start_at + warm + dur]
        while True:
            now = time.time()
            if marks and now >= marks[0]:
                marks.pop(0)
                samples.append(_sample(cluster, pids, is_raftkv))
                continue
            ops = sum(int(r.latest.get("ops", 0)) for _, r in procs)
            elapsed = max(0.0, now - start_at)
            if elapsed < warm:
                info = "warm-up"
            else:
                info = f"{ops / max(1e-3, elapsed - warm):,.0f} ops/s" if elapsed - warm > 0.5 else "measuring"
            ctx.progress.update(task, completed=min(elapsed, warm + dur), info=info)
            if not marks:
                break
            time.sleep(min(0.2, max(0.0, marks[0] - now)))
        ctx.progress.update(task, info="collecting results")
        finish_by = time.monotonic() + o.timeout_s + 30
        for p, _ in procs:
            try:
                p.wait(max(0.1, finish_by - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        results = [_parse_result(p, r, "a load generator") for p, r in procs]
        rss = {name: proc_rss_bytes(pid) for name, pid in cluster.server_pids().items()}
    finally:
        for p, r in procs:
            ctx.children.stop(p)
            r.join(1.0)
        ctx.progress.remove_task(task)
    merged = merge_results(results)
    if merged.get("status") != "ok":
        status = "n/a" if merged.get("status") == "unsupported" else "failed"
        return {"status": status, "reason": merged.get("reason", "")}
    s0, s1 = samples
    window = max(1e-3, s1.t - s0.t)
    busy = s1.machine[0] - s0.machine[0]
    total = s1.machine[1] - s0.machine[1]
    servers: list[dict[str, Any]] = []
    for name, pid in cluster.server_pids().items():
        cpu = _delta(s0.servers.get(name), s1.servers.get(name))
        servers.append({"name": name, "pid": pid, "cpu_s": cpu,
                        "cpu_cores": round(cpu / window, 3) if cpu is not None else None, "rss_bytes": rss.get(name)})
    lg_cpu = [_delta(s0.loadgens.get(pid), s1.loadgens.get(pid)) for pid in pids]
    lg_total = round(sum(c for c in lg_cpu if c is not None), 3)
    srv_cpu = [float(s["cpu_s"]) for s in servers if s["cpu_s"] is not None]
    row: dict[str, Any] = {
        "status": "ok",
        **merged,
        "servers": servers,
        "loadgen_cpu_s": lg_total,
        "loadgen_cpu_cores": round(lg_total / window, 3),
        "server_cpu_ms_per_op": round(1000 * sum(srv_cpu) / merged["ops"], 4) if srv_cpu and merged["ops"] else None,
        "loadgen_cpu_ms_per_op": round(1000 * lg_total / merged["ops"], 4) if merged["ops"] else None,
        "harness_cpu_s": _delta(s0.harness, s1.harness),
        "machine_busy": round(busy / total, 3) if total else None,
        "window_s": round(window, 3),
    }
    if is_raftkv:
        row["raftkv_stats"] = durability_figures(s0.stats, s1.stats)
    if merged.get("started_late_s", 0) > warm:
        row["note"] = f"a load generator started {merged['started_late_s']:.1f}s late (after the warm-up)"
    return row


# -- the whole benchmark ----------------------------------------------------------------------------------------
def _fresh(ctx: RunContext, system: str, root: Path, n: int) -> Cluster:
    o = ctx.opts
    if o.endpoints:
        return External(system, o.endpoints)
    if system == "raftkv":
        return RaftkvLocal(root / f"raftkv-{n}", o.nodes, ctx.say)
    if system == "raftkv-etcd":
        return RaftkvEtcdLocal(root / f"raftkv-etcd-{n}", o.nodes, ctx.say)
    if system == "etcd":
        return EtcdLocal(root / f"etcd-{n}", o.nodes, ctx.say)
    return NoopLocal(ctx.children)


def _run_system_row(ctx: RunContext, root: Path, n: int, system: str, workload: str, clients: int,
                    **kw: Any) -> dict[str, Any]:
    o = ctx.opts
    spec = {"system": system, "workload": workload, "clients": clients, "nodes": o.nodes if system != "noop" else 1,
            "processes": len(split_clients(clients, o.processes)),
            "client_mode": o.client_mode if system not in ETCD_API else "rpc", "value_size": o.value_size,
            "keys": o.keys}
    reason = unsupported_reason(system, workload, o.client_mode)
    if reason:
        return {**spec, "status": "n/a", "reason": reason}
    cluster = _fresh(ctx, system, root, n)
    try:
        pre = preload(ctx, cluster) if workload_reads(workload) and system != "noop" else None
        row = run_row(ctx, cluster, workload, clients, **kw)
    finally:
        cluster.down()
    out = {**spec, **row, "system": system}
    if pre is not None:
        out["preload"] = pre
    return out


def _row_line(r: dict[str, Any]) -> str:
    head = f"{r['system']} {r['workload']} c={r['clients']}"
    if r.get("status") != "ok":
        return f"{head}: {r.get('status')} ({r.get('reason', '')})"
    lat = r["latency_ms"]
    return (f"{head}: {r['ops_per_s']:,.0f} ops/s, p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, "
            f"errors {r['error_count']}")


def run(opts: Options, console: Console | None = None) -> dict[str, Any]:
    """Run the benchmark ``opts`` describe; write results.json (after every row) and the plots; return the report."""
    con = console or Console(stderr=True)
    opts.out.mkdir(parents=True, exist_ok=True)
    children = Children()
    root = Path(tempfile.mkdtemp(prefix="raftkv-bench-", dir=opts.data_dir))
    report = _report_head(opts, root)
    for note in opts.notes:
        con.print(f"[yellow]note:[/yellow] {note}")
    if report["machine"]["data_fs"] in ("tmpfs", "ramfs"):
        msg = f"the clusters' data directory {root} is on {report['machine']['data_fs']}: fsync costs nothing there"
        report["notes"].append(msg)
        con.print(f"[yellow]warning:[/yellow] {msg} (use --data-dir on a real disk)")
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=con, transient=True,
                        refresh_per_second=4)
    ctx = RunContext(opts, children, progress, con)
    results_file = opts.out / "results.json"
    n = 0
    try:
        with progress:
            if opts.ceiling and "noop" not in opts.systems and not opts.endpoints:
                wl = next((w for w in opts.workloads if unsupported_reason("noop", w, opts.client_mode) is None),
                          "put")
                c = max(opts.clients)
                con.print(f"[bold]loadgen ceiling[/bold]: {wl}, {c} clients against the no-op server")
                n += 1
                row = _run_system_row(ctx, root, n, "noop", wl, c, duration_s=min(opts.duration_s, 5.0),
                                      warmup_s=min(opts.warmup_s, 1.0))
                report["ceiling"] = row
                con.print("  " + _row_line(row))
                _write_json(results_file, report)
            for wl in opts.workloads:
                for c in opts.clients:
                    for system in opts.systems:
                        n += 1
                        row = _run_system_row(ctx, root, n, system, wl, c)
                        report["runs"].append(row)
                        con.print("  " + _row_line(row))
                        _write_json(results_file, report)
    finally:
        children.stop_all()
        shutil.rmtree(root, ignore_errors=True)
        report["finished"] = _now()
        report["machine"]["loadavg_end"] = _loadavg()
        _write_json(results_file, report)
    add_ratios(report["runs"])
    _write_json(results_file, report)
    if opts.plots:
        try:
            from .plots import make_plots

            report["plots"] = [str(p.name) for p in make_plots(report, opts.out)]
        except ImportError as e:
            report["notes"].append(f"no plots: {e}")
        _write_json(results_file, report)
    return report


def _report_head(opts: Options, root: Path) -> dict[str, Any]:
    etcd_ver = None
    if "etcd" in opts.systems:
        from .etcd import etcd_version, find_etcd

        b = find_etcd()
        etcd_ver = etcd_version(b) if b else None
    try:
        from raftkv import __version__ as raftkv_version
    except ImportError:
        raftkv_version = "unknown"
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip()
    opts_json = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
    return {
        "schema": SCHEMA,
        "created": _now(),
        "options": opts_json,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_start": _loadavg(),
            "data_fs": fs_type(root),
            "clk_tck": CLK_TCK,
        },
        "versions": {"raftkv": raftkv_version, "raftkv_commit": commit, "etcd": etcd_ver},
        "notes": list(opts.notes),
        "ceiling": None,
        "runs": [],
    }


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_json(path: Path, report: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(tmp, path)


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """On each raftkv row with an etcd row of the same workload and clients: raftkv/etcd ratios of ops/s and of
    the latency percentiles (``ratio_vs_etcd``)."""
    etcd = {(r["workload"], r["clients"]): r for r in rows if r["system"] == "etcd" and r.get("status") == "ok"}
    for r in rows:
        e = etcd.get((r["workload"], r["clients"]))
        if r["system"] not in ("raftkv", "raftkv-etcd") or r.get("status") != "ok" or e is None:
            continue
        ratio: dict[str, float | None] = {"ops_per_s": _ratio(r["ops_per_s"], e["ops_per_s"])}
        for k in ("p50", "p90", "p99", "p99.9", "max"):
            ratio[k] = _ratio(r["latency_ms"][k], e["latency_ms"][k])
        r["ratio_vs_etcd"] = ratio


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


# -- the report -------------------------------------------------------------------------------------------------
def _ms(v: float) -> str:
    return f"{v:.2f}" if v < 100 else f"{v:.0f}"


def _rss(r: dict[str, Any]) -> str:
    vals = [s.get("rss_bytes") for s in r.get("servers", [])]
    return "/".join(f"{v / 2**20:.0f}" if v else "-" for v in vals) or "-"


def _why(r: dict[str, Any], limit: int = 1000) -> str:
    reason = str(r.get("reason", ""))
    status = str(r.get("status"))
    text = reason if reason.startswith(status) else f"{status}: {reason}"
    return text if len(text) <= limit else text[: limit - 14] + "... (see below)"


def results_table(report: dict[str, Any]) -> Table:
    """The main table: one row per run, latencies in ms, ratios on raftkv rows that have an etcd twin."""
    t = Table(title="raftkv bench", title_justify="left", header_style="bold")
    for name, justify in [("system", "left"), ("workload", "left"), ("clients", "right"), ("ops", "right"),
                          ("ops/s", "right"), ("p50", "right"), ("p90", "right"), ("p99", "right"),
                          ("p99.9", "right"), ("max", "right"), ("errors", "right"), ("RSS MiB", "right"),
                          ("raftkv/etcd", "right")]:
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    rows = list(report.get("runs", []))
    if report.get("ceiling"):
        rows = [{**report["ceiling"], "system": "noop (ceiling)"}, *rows]
    for r in rows:
        if r.get("status") != "ok":
            t.add_row(r["system"], r["workload"], str(r["clients"]), "", "", "", "", "", "", "", "",
                      "", _why(r, 50))
            continue
        lat = r["latency_ms"]
        ratio = r.get("ratio_vs_etcd")
        rtxt = ""
        if ratio:
            parts = []
            if ratio.get("ops_per_s") is not None:
                parts.append(f"ops/s x{ratio['ops_per_s']:.2f}")
            if ratio.get("p99") is not None:
                parts.append(f"p99 x{ratio['p99']:.2f}")
            rtxt = ", ".join(parts)
        t.add_row(
            r["system"], r["workload"], str(r["clients"]), f"{r['ops']:,}", f"{r['ops_per_s']:,.0f}",
            _ms(lat["p50"]), _ms(lat["p90"]), _ms(lat["p99"]), _ms(lat["p99.9"]), _ms(lat["max"]),
            str(r["error_count"]), _rss(r), rtxt,
        )
    t.caption = ("latencies in ms (successful operations only); RSS per server process at the end of the run; "
                 "raftkv/etcd: ratio of ops/s and of p99 to etcd's row with the same workload and clients")
    return t


def resources_table(report: dict[str, Any]) -> Table:
    """Where the CPU went (cores busy during the window) and raftkv's fsync figures."""
    t = Table(title="CPU (cores used during the window) and fsyncs", title_justify="left", header_style="bold")
    for name in ("system", "workload", "clients", "servers", "loadgens", "machine busy", "srv CPU ms/op",
                 "fsyncs/entry", "cmds/fsync", "cmds/entry", "fdatasyncs/cmd"):
        t.add_column(name, justify="left" if name in ("system", "workload") else "right")
    rows = list(report.get("runs", []))
    if report.get("ceiling"):
        rows = [{**report["ceiling"], "system": "noop (ceiling)"}, *rows]
    for r in rows:
        if r.get("status") != "ok":
            continue
        srv = "/".join(f"{s['cpu_cores']:.2f}" if s.get("cpu_cores") is not None else "-" for s in r["servers"])
        st = r.get("raftkv_stats") or {}

        def fig(k: str, st: dict[str, Any] = st) -> str:
            v = st.get(k)
            return "" if v is None else f"{v:.3g}"

        busy = r.get("machine_busy")
        per_op = r.get("server_cpu_ms_per_op")
        t.add_row(r["system"], r["workload"], str(r["clients"]), srv or "-", f"{r['loadgen_cpu_cores']:.2f}",
                  f"{busy * 100:.0f}%" if busy is not None else "-", f"{per_op:.3g}" if per_op else "-",
                  fig("fsyncs_per_entry"), fig("commands_per_fsync"), fig("commands_per_entry"),
                  fig("fdatasyncs_per_command"))
    cpus = report.get("machine", {}).get("cpus")
    t.caption = (f"servers and load generators share this machine's {cpus} CPUs; servers, loadgens: CPU seconds / "
                 "window seconds (1.00 = one core busy); srv CPU ms/op: all servers' CPU time per successful "
                 "operation; fsyncs from the raftkv leader's Status counters")
    return t


def ceiling_line(report: dict[str, Any]) -> str | None:
    c = report.get("ceiling")
    if not c:
        return None
    if c.get("status") != "ok":
        return f"loadgen ceiling: not measured ({c.get('reason', c.get('status'))})"
    per_op = c.get("loadgen_cpu_ms_per_op")
    return (f"loadgen ceiling: {c['ops_per_s']:,.0f} ops/s with {c['processes']} process"
            f"{'es' if c['processes'] != 1 else ''} ({c['workload']}, {c['clients']} clients, {c['client_mode']} "
            f"mode, against the no-op server; load generators used {c['loadgen_cpu_cores']:.2f} cores"
            + (f" = {per_op:.3f} ms CPU per operation" if per_op else "")
            + f", the no-op server {c['servers'][0]['cpu_cores'] or 0:.2f})")


def print_report(report: dict[str, Any], console: Console) -> None:
    console.print(results_table(report))
    console.print(resources_table(report))
    line = ceiling_line(report)
    if line:
        console.print(line)
        c = report["ceiling"]
        if c.get("status") == "ok":
            for r in report["runs"]:
                if r.get("status") == "ok" and r["system"] != "noop" and r["ops_per_s"] > 0.7 * c["ops_per_s"]:
                    console.print(f"[yellow]warning:[/yellow] {r['system']} {r['workload']} c={r['clients']} reached "
                                  f"{r['ops_per_s'] / c['ops_per_s']:.0%} of the load generator's ceiling: it may be "
                                  "the bottleneck (try more --processes)")
    for r in report["runs"]:
        if r.get("status") not in ("ok", None) and len(_why(r)) > 50:
            console.print(f"{r['system']} {r['workload']} c={r['clients']}: {_why(r)}", highlight=False)
        for k in ("note",):
            if r.get(k):
                console.print(f"[yellow]note:[/yellow] {r['system']} {r['workload']} c={r['clients']}: {r[k]}")
        st = r.get("raftkv_stats") or {}
        if st.get("note"):
            console.print(f"[yellow]note:[/yellow] raftkv {r['workload']} c={r['clients']}: {st['note']}")
        if r.get("status") == "ok" and r.get("first_error"):
            console.print(f"[yellow]errors:[/yellow] {r['system']} {r['workload']} c={r['clients']}: "
                          f"{r['errors']} (first: {r['first_error'][:200]})")


__all__ = [
    "SYSTEMS",
    "WORKLOADS",
    "BenchError",
    "Options",
    "add_ratios",
    "ceiling_line",
    "durability_figures",
    "machine_cpu_ticks",
    "print_report",
    "proc_cpu_s",
    "proc_rss_bytes",
    "resources_table",
    "results_table",
    "run",
    "split_clients",
]
