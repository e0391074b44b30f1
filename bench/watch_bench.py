"""Watches under load: delivery latency, put throughput with idle watchers, and memory per watcher.

    python bench/watch_bench.py                                   # every section, about 3 minutes
    python bench/watch_bench.py --sections throughput --pairs 5   # more interleaved throughput rows
    python bench/watch_bench.py --output json > watch.json        # everything, for scripts

Four sections, on fresh 3-node local clusters (``raftkv.localcluster.up``, fsync on, default settings, free
ports), every process it starts stopped by its pid, the clusters with ``localcluster.down(dir, purge=True)``:

latency
    One cluster. For each case -- N watchers of one shared prefix (the fan-out: every put is an event for all N)
    and N watchers of N distinct keys (every put an event for one of them) -- and each N of ``--watchers`` (1,
    100, 1000), the watchers are opened on one node (``--watch-node``, the leader by default) by
    ``--processes`` watcher processes (asyncio tasks, one ``Watch`` stream each, over one connection per
    process), then a writer process puts for ``--latency-duration`` seconds, one put at a time (writers=1) and
    with 16 concurrent writers (``--loaded-writers``). Every put's acknowledgement time and every event's
    arrival time in its watcher are taken from CLOCK_MONOTONIC (one clock for all processes of the machine);
    ``ack->event`` is the arrival minus the acknowledgement of the put that made the event, over every
    (put, watcher) pair. It can be negative: a node hands an applied batch to its watchers before it answers
    the puts in it, and the two go over different connections to different processes. ``events/s`` is every
    event delivered, divided by the time from the first put to the last event. ``missed``: events expected
    (puts x matching watchers) that did not arrive within ``--settle`` (10) s after the last put. A watch the
    node ends (a watcher too slow: more than 1,000 events buffered) is counted in ``cancels`` and opened again
    from the revision after the last one it received, as ``Client.watch`` does.
fanout
    No cluster, no gRPC: raftkv's own Python per watch response. One in-process node (``bench/servicer_bench.py``'s:
    one voter, in-memory transport, LMDB without fsync), ``--fanout-watchers`` watchers of one prefix as the
    servicer's ``Watch`` generators consumed in-process, ``--fanout-puts`` puts one at a time and 16 at once;
    the process's CPU per put beyond the same row without watchers, per response and per event.
throughput
    ``--pairs`` pairs of rows, interleaved (none, 1000, none, 1000, ...; the machine's speed drifts, so only
    ratios within one run mean anything), each on a fresh cluster: the benchmark's load generator
    (``bench.loadgen``, put, ``--put-clients`` clients, raw RPCs spread over the members) for ``--put-duration``
    seconds after a warm-up, with no watcher or with ``--idle-watchers`` watchers of keys no put touches on the
    watch node. Server CPU per put from ``/proc/<pid>/stat`` over the measured window.
memory
    One cluster: the watch node's RSS (``/proc/<pid>/status``) before and after opening ``--memory-watchers``
    idle watches (cumulative: 1,000 then 10,000), the increase divided by the count; after closing them, and after
    opening as many others again (an RSS that stays put then was reused, not leaked).
    Also the watch hub and feed alone (``raftkv.watchfeed.WatchFeed`` in this process, no gRPC), by tracemalloc.

Watches are opened at most ``--open-concurrency`` at a time per process: a gRPC server cancels calls its
application has not picked up yet beyond a backlog of 1,000 (randomly) to 3,000 (all) -- gRPC core's
``grpc.server.max_pending_requests`` and ``..._hard_limit``, which raftkv leaves at their defaults -- so
opening 10,000 at once has some refused with CANCELLED (counted as ``open retries``; they are retried).

Before measuring it waits until the 1-minute load average is below ``--max-load`` (the machine is shared), and
prints the load average with every row (``load``, taken as the row starts: it includes this benchmark's own
previous rows), ``busy``, the share of all the machine's CPU time that was busy during the row's window, and
``other``, the cores used meanwhile by processes that are not this benchmark's (other work on the machine).
Before each latency and throughput row it also measures, for 1 s, what other processes use, and waits while
that is above ``--max-other`` cores.
Prints figures only (no assertions); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, TypeVar

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout: `bench` and (without pip install -e) `raftkv`
    sys.path.insert(0, str(REPO))

from bench.harness import machine_cpu_ticks, proc_cpu_s, proc_rss_bytes, stop_process  # noqa: E402

SCHEMA = "raftkv-watch-bench/1"
CHILD_READY_TIMEOUT_S = 180.0
R = TypeVar("R", bound="Run")
_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.use_local_subchannel_pool", 1),  # each process's channel is its own connection
]


class BenchError(Exception):
    """A run that cannot go on (a child that died, a cluster that did not start), in one line."""


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


# -- child processes (watchers, writer) ----------------------------------------------------------------------------
class Child:
    """A process started by this benchmark, in its own session, stopped by its pid. Its stdout is read on a thread,
    one JSON object per line; its stderr goes to a file (shown when it fails)."""

    def __init__(self, cmd: Sequence[str], name: str, log_dir: Path, registry: list[Child]) -> None:
        self.name = name
        self.ready: dict[str, Any] = {}
        """Its ``ready`` message (watchers: how long opening took, retries)."""
        self.err_path = log_dir / f"{name}.stderr"
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.err_path, "w") as err:
            self.p: subprocess.Popen[str] = subprocess.Popen(
                list(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO, env=env,
                start_new_session=True)
        registry.append(self)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.p.pid

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def send(self, line: str) -> None:
        assert self.p.stdin is not None
        try:
            self.p.stdin.write(line + "\n")
            self.p.stdin.flush()
        except OSError as e:
            raise BenchError(f"{self.name} (pid {self.pid}) is gone: {e}; {self.stderr_tail()}") from None

    def expect(self, timeout_s: float) -> dict[str, Any]:
        """The next JSON line it prints (other lines are skipped)."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(0.001, left))
            except queue.Empty:
                raise BenchError(f"{self.name} (pid {self.pid}) said nothing for {timeout_s:.0f} s; "
                                 f"{self.stderr_tail()}") from None
            if line is None:
                self.p.wait(5)
                raise BenchError(f"{self.name} (pid {self.pid}) exited ({self.p.returncode}); {self.stderr_tail()}")
            if line.startswith("{"):
                try:
                    out: dict[str, Any] = json.loads(line)
                    return out
                except ValueError:
                    pass

    def stderr_tail(self, lines: int = 6) -> str:
        try:
            tail = self.err_path.read_text().strip().splitlines()[-lines:]
        except OSError:
            tail = []
        return "stderr: " + (" | ".join(tail) if tail else "(empty)")

    def stop(self, timeout_s: float = 5.0) -> None:
        stop_process(self.p, timeout_s)


def _child_cmd(role: str, *args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", role, *args]


def stdin_queue() -> asyncio.Queue[str]:
    """This process's stdin lines, read on a daemon thread (it never holds up the exit); EOF reads as "stop"."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[str] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(q.put_nowait, line.strip())
        loop.call_soon_threadsafe(q.put_nowait, "stop")

    threading.Thread(target=read, daemon=True).start()
    return q


def _emit(obj: dict[str, Any], out: TextIO = sys.stdout) -> None:
    out.write(json.dumps(obj) + "\n")
    out.flush()


async def watchers_child(a: argparse.Namespace) -> None:
    """``--count`` watches on ``--endpoint``: of the prefix ``--key`` (``--kind prefix``) or of the keys
    ``--key`` + str(i) for i in [``--base``, ``--base`` + ``--count``) (``--kind keys``). Prints ``ready`` once
    every watch is created; then on stdin: ``count`` (events so far), ``stop`` (writes the (revision,
    arrival ns) pairs to ``--out`` and prints the totals)."""
    import grpc
    import grpc.aio

    from raftkv.proto.v1 import kv_pb2, kv_pb2_grpc

    channels = [grpc.aio.insecure_channel(a.endpoint, options=_CHANNEL_OPTIONS) for _ in range(a.connections)]
    stubs = [kv_pb2_grpc.KVStub(ch) for ch in channels]  # type: ignore[no-untyped-call]
    key = a.key.encode()
    pairs = array("q")
    st: dict[str, Any] = {"events": 0, "responses": 0, "cancels": {}, "errors": {}, "open_retries": 0, "resumes": 0}
    opened = 0
    all_open = asyncio.Event()
    sem = asyncio.Semaphore(a.open_concurrency if a.open_concurrency > 0 else a.count)
    stopping = False
    t_open = time.monotonic()

    def count(kind: str, what: str) -> None:
        d = st[kind]
        d[what] = d.get(what, 0) + 1

    def request(i: int, start: int) -> kv_pb2.WatchRequest:
        if a.kind == "prefix":
            return kv_pb2.WatchRequest(key=key, prefix=True, start_revision=start)
        return kv_pb2.WatchRequest(key=key + str(a.base + i).encode(), start_revision=start)

    async def one(i: int) -> None:
        nonlocal opened
        stub = stubs[i % len(stubs)]
        next_rev = 0
        created = False
        await sem.acquire()
        while not stopping:
            call = stub.Watch(request(i, next_rev))
            try:
                while True:
                    resp = await call.read()
                    if resp is grpc.aio.EOF:
                        count("cancels", "the stream ended without a cancel response")
                        break
                    if resp.created:
                        if not created:
                            created = True
                            sem.release()
                            opened += 1
                            if opened == a.count:
                                all_open.set()
                        if not next_rev:
                            next_rev = resp.header.revision + 1  # "from now", also when it resumes
                        continue
                    if resp.canceled:
                        count("cancels", resp.cancel_reason or "(no reason)")
                        break
                    evs = resp.events
                    if evs:
                        now = time.monotonic_ns()
                        for ev in evs:
                            pairs.append(ev.kv.mod_revision)
                            pairs.append(now)
                        st["events"] += len(evs)
                        st["responses"] += 1
                    next_rev = max(next_rev, resp.header.revision + 1)
            except grpc.aio.AioRpcError as e:
                if stopping:
                    return
                if created:
                    count("errors", f"{e.code().name}: {e.details()}")
                else:
                    st["open_retries"] += 1
                    st.setdefault("open_errors", {})
                    k = f"{e.code().name}: {e.details()}"
                    st["open_errors"][k] = st["open_errors"].get(k, 0) + 1
            finally:
                call.cancel()
            if stopping:
                return
            if created:
                st["resumes"] += 1
            await asyncio.sleep(0.02 + random.random() * 0.05)

    async def announce() -> None:
        await all_open.wait()
        _emit({"msg": "ready", "open_s": round(time.monotonic() - t_open, 3), "open_retries": st["open_retries"],
               "open_errors": st.get("open_errors", {}), "rss_bytes": proc_rss_bytes(os.getpid())})

    cmds = stdin_queue()
    tasks = [asyncio.create_task(one(i)) for i in range(a.count)]
    announcer = asyncio.create_task(announce())
    while True:
        cmd = await cmds.get()
        if cmd == "count":
            _emit({"msg": "count", "events": st["events"]})
        elif cmd == "stop":
            break
    announcer.cancel()
    stopping = True
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for ch in channels:
        await ch.close()
    with open(a.out, "wb") as f:
        pairs.tofile(f)
    _emit({"msg": "done", "opened": opened, **st})


async def writer_child(a: argparse.Namespace) -> None:
    """``--writers`` concurrent put loops on ``--endpoint`` for ``--duration`` s after ``go`` on stdin: keys
    ``--key`` + str(j % ``--count``), j counting every put. Writes (revision, sent ns, acknowledged ns) triples to
    ``--out`` and prints the totals."""
    import grpc.aio

    from raftkv.proto.v1 import kv_pb2, kv_pb2_grpc

    ch = grpc.aio.insecure_channel(a.endpoint, options=_CHANNEL_OPTIONS)
    stub = kv_pb2_grpc.KVStub(ch)  # type: ignore[no-untyped-call]
    value = os.urandom(a.value_size)
    key = a.key.encode()
    base = random.SystemRandom().getrandbits(60) + 1
    seq0 = time.time_ns() // 1000
    await stub.Put(kv_pb2.PutRequest(key=b"watch-bench/probe", value=value,
                                     session=kv_pb2.Session(client_id=base + 1000, seq=seq0)), timeout=10)
    cmds = stdin_queue()
    _emit({"msg": "ready"})
    while (cmd := await cmds.get()) != "go":
        if cmd == "stop":  # (or the parent is gone)
            await ch.close()
            return
    rec = array("q")
    errors: dict[str, int] = {}
    j = 0
    t_start = time.monotonic()
    deadline = t_start + a.duration

    async def writer(w: int) -> None:
        nonlocal j
        seq = seq0
        while time.monotonic() < deadline:
            k = key + str(j % a.count).encode()
            j += 1
            seq += 1
            req = kv_pb2.PutRequest(key=k, value=value, session=kv_pb2.Session(client_id=base + w, seq=seq))
            t0 = time.monotonic_ns()
            try:
                resp = await stub.Put(req, timeout=10)
            except grpc.aio.AioRpcError as e:
                kind = f"{e.code().name}: {e.details()}"
                errors[kind] = errors.get(kind, 0) + 1
                await asyncio.sleep(0.01)
                continue
            t1 = time.monotonic_ns()
            rec.extend((resp.header.revision, t0, t1))

    await asyncio.gather(*(writer(w) for w in range(a.writers)))
    elapsed = time.monotonic() - t_start
    with open(a.out, "wb") as f:
        rec.tofile(f)
    _emit({"msg": "done", "puts": len(rec) // 3, "errors": errors, "elapsed_s": round(elapsed, 3)})
    await cmds.get()  # stay until told (or stdin closes), so the parent reads our CPU time first
    await ch.close()


# -- clusters --------------------------------------------------------------------------------------------------
@dataclass
class LocalCluster:
    dir: Path
    endpoints: list[str]
    pids: dict[int, int]
    leader: int
    client_addrs: dict[int, str]

    def watch_node(self, which: str) -> int:
        if which == "leader":
            return self.leader
        return next(i for i in sorted(self.pids) if i != self.leader)


@contextlib.contextmanager
def cluster(root: Path, name: str) -> Iterator[LocalCluster]:
    from raftkv import localcluster
    from raftkv.errors import RaftKVError

    d = root / name
    try:
        try:
            info = localcluster.up(d, 3, tick_ms=100, sync=True, timeout_s=60.0, progress=lambda m: None)
            lead = localcluster.wait_for_leader(info, timeout_s=30.0)
        except RaftKVError as e:
            raise BenchError(f"the raftkv cluster did not start: {e.message}") from None
        nodes = localcluster.load(info.dir).nodes
        yield LocalCluster(d, list(info.endpoints), {n.id: n.pid for n in nodes if n.pid is not None}, lead.id,
                           {n.id: n.client_addr for n in nodes})
    finally:
        with contextlib.suppress(Exception):
            localcluster.down(d, purge=True)  # stops the nodes by their pids
        shutil.rmtree(d, ignore_errors=True)


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    return {name: proc_cpu_s(pid) or 0.0 for name, pid in pids.items()}


def cores(before: dict[str, float], after: dict[str, float], window_s: float) -> dict[str, float]:
    return {k: round((after[k] - before[k]) / window_s, 3) for k in before if k in after}


def other_cores(m0: tuple[int, int], m1: tuple[int, int], ours: dict[str, float]) -> float:
    """Cores the rest of the machine used during the window: all CPUs' busy time less this benchmark's processes."""
    busy_cores = (m1[0] - m0[0]) / max(1, m1[1] - m0[1]) * (os.cpu_count() or 1)
    return round(max(0.0, busy_cores - sum(ours.values())), 3)


# -- statistics ------------------------------------------------------------------------------------------------
def percentile(sorted_values: Sequence[int], q: float) -> float:
    """Nearest rank: the smallest value such that at least ``q`` % of them are at or below it (0 when empty)."""
    n = len(sorted_values)
    if not n:
        return 0.0
    return float(sorted_values[max(0, min(n - 1, math.ceil(q / 100.0 * n - 1e-9) - 1))])


def summary_ms(ns: list[int]) -> dict[str, float | None]:
    if not ns:
        return {"p50": None, "p99": None, "max": None, "min": None, "mean": None}
    ns.sort()
    return {"p50": percentile(ns, 50) / 1e6, "p99": percentile(ns, 99) / 1e6, "max": ns[-1] / 1e6,
            "min": ns[0] / 1e6, "mean": sum(ns) / len(ns) / 1e6}


def read_array(path: Path) -> array[int]:
    a = array("q")
    with contextlib.suppress(OSError), open(path, "rb") as f:
        a.frombytes(f.read())
    return a


# -- sections --------------------------------------------------------------------------------------------------
@dataclass
class Run:
    args: argparse.Namespace
    root: Path
    children: list[Child] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    waited_s: float = 0.0

    def name(self, what: str) -> str:
        self.seq += 1
        return f"{what}-{self.seq}"

    def quiet(self, ours: dict[str, int]) -> dict[str, float]:
        """Before a row: measure for 1 s what the rest of the machine uses (all CPUs' busy time less ``ours``, this
        benchmark's idle processes), and wait while it is above ``--max-other`` cores (at most ``--max-wait`` s)."""
        a = self.args
        t0 = time.monotonic()
        last = -1e9
        while True:
            c0, m0 = cpu_of(ours), machine_cpu_ticks()
            time.sleep(1.0)
            c1, m1 = cpu_of(ours), machine_cpu_ticks()
            other = other_cores(m0, m1, cores(c0, c1, 1.0))
            waited = time.monotonic() - t0
            if a.no_wait or other <= a.max_other:
                return {"other_cores_before": other, "waited_s": round(waited, 1)}
            if waited >= a.max_wait:
                say(f"other processes still use {other:.2f} cores after {waited:.0f} s: measuring anyway")
                return {"other_cores_before": other, "waited_s": round(waited, 1)}
            if waited - last >= 15:
                say(f"waiting: other processes use {other:.2f} cores (> {a.max_other}; load average {loadavg()})")
                last = waited
            self.waited_s += 1.0

    def stop(self, ch: Child) -> None:
        ch.stop()
        if ch in self.children:
            self.children.remove(ch)

    def stop_all(self) -> None:
        for ch in list(self.children):
            self.stop(ch)

    def start_watchers(self, endpoint: str, kind: str, key: str, count: int, processes: int) -> list[Child]:
        """``count`` watchers split over ``processes`` processes; returns once all are created."""
        a = self.args
        procs = max(1, min(processes, count))
        share = [count // procs + (1 if i < count % procs else 0) for i in range(procs)]
        out = []
        base = 0
        for i, n in enumerate(share):
            name = self.name(f"watchers{i}")
            cmd = _child_cmd("watchers", "--endpoint", endpoint, "--kind", kind, "--key", key, "--count", str(n),
                             "--base", str(base), "--open-concurrency", str(a.open_concurrency),
                             "--out", str(self.root / f"{name}.bin"))
            out.append(Child(cmd, name, self.root, self.children))
            base += n
        for ch in out:
            ch.ready = ch.expect(CHILD_READY_TIMEOUT_S)
        return out


def watchers_ready(chs: Sequence[Child]) -> dict[str, Any]:
    rs = [ch.ready for ch in chs]
    errs: dict[str, int] = {}
    for r in rs:
        for k, v in r.get("open_errors", {}).items():
            errs[k] = errs.get(k, 0) + v
    return {"open_s": max((r.get("open_s", 0.0) for r in rs), default=0.0),
            "open_retries": sum(r.get("open_retries", 0) for r in rs), "open_errors": errs,
            "rss_bytes": sum(r.get("rss_bytes") or 0 for r in rs)}


def stop_watchers(run: Run, chs: Sequence[Child]) -> list[dict[str, Any]]:
    for ch in chs:
        ch.send("stop")
    out = [ch.expect(60.0) for ch in chs]
    for ch in chs:
        run.stop(ch)
    return out


def merge_counts(results: Sequence[dict[str, Any]], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in results:
        for k, v in r.get(key, {}).items():
            out[k] = out.get(k, 0) + v
    return out


def latency_section(run: Run) -> list[dict[str, Any]]:
    a = run.args
    rows: list[dict[str, Any]] = run.report.setdefault("latency", [])  # kept if the run is interrupted
    cases = [(kind, n, w) for kind in a.cases for n in a.watchers for w in (1, a.loaded_writers)]
    with cluster(run.root, "latency") as c:
        wnode = c.watch_node(a.watch_node)
        say(f"latency: cluster up (leader node {c.leader}); watchers on node {wnode} ({a.watch_node}), "
            f"{len(cases)} rows of {a.latency_duration:g} s")
        for i, (kind, n, writers) in enumerate(cases):
            rows.append(latency_row(run, c, wnode, kind, n, writers, i))
            r = rows[-1]
            say(f"latency {i + 1}/{len(cases)}: {kind} x{n}, {writers} writer(s): {r['puts_per_s']:.0f} puts/s, "
                f"{r['events_per_s']:.0f} events/s, ack->event p50 {_f(r['ack_to_event_ms']['p50'])} ms "
                f"p99 {_f(r['ack_to_event_ms']['p99'])} ms, missed {r['missed']}, cancels {sum(r['cancels'].values())}")
    return rows


def latency_row(run: Run, c: LocalCluster, wnode: int, kind: str, n: int, writers: int, i: int) -> dict[str, Any]:
    a = run.args
    key = f"lat{i}/"
    gate = run.quiet({f"node{k}": v for k, v in c.pids.items()})
    la = loadavg()
    wchs = run.start_watchers(c.client_addrs[wnode], kind, key, n, a.processes)
    ready = watchers_ready(wchs)
    wname = run.name("writer")
    wout = run.root / f"{wname}.bin"
    nkeys = n if kind == "keys" else 1000
    writer = Child(_child_cmd("writer", "--endpoint", c.client_addrs[c.leader], "--key", key, "--count", str(nkeys),
                              "--writers", str(writers), "--duration", str(a.latency_duration),
                              "--value-size", str(a.value_size), "--out", str(wout)),
                   wname, run.root, run.children)
    writer.expect(60.0)
    pids = {f"node{k}": v for k, v in c.pids.items()}
    pids.update({ch.name: ch.pid for ch in wchs})
    pids["writer"] = writer.pid
    cpu0 = cpu_of(pids)
    m0 = machine_cpu_ticks()
    t0 = time.monotonic()
    writer.send("go")
    wres = writer.expect(a.latency_duration + 60.0)
    window = time.monotonic() - t0
    cpu1 = cpu_of(pids)
    m1 = machine_cpu_ticks()
    writer.send("exit")
    run.stop(writer)
    puts = int(wres["puts"])
    expected = puts * (n if kind == "prefix" else 1)
    # Wait for the events still on their way (or give up after SETTLE_MAX_S).
    settle_until = time.monotonic() + a.settle
    while time.monotonic() < settle_until:
        got = 0
        for ch in wchs:
            ch.send("count")
            got += int(ch.expect(30.0)["events"])
        if got >= expected:
            break
        time.sleep(0.2)
    wresults = stop_watchers(run, wchs)
    rec = read_array(wout)
    acks = {rec[j]: (rec[j + 1], rec[j + 2]) for j in range(0, len(rec), 3)}
    put_lat = [rec[j + 2] - rec[j + 1] for j in range(0, len(rec), 3)]
    first_sent = min((rec[j + 1] for j in range(0, len(rec), 3)), default=0)
    from_ack: list[int] = []
    from_sent: list[int] = []
    unknown = 0
    last_recv = 0
    for ch in wchs:
        pairs = read_array(run.root / f"{ch.name}.bin")
        for j in range(0, len(pairs), 2):
            rev, t = pairs[j], pairs[j + 1]
            sa = acks.get(rev)
            if sa is None:
                unknown += 1
                continue
            from_sent.append(t - sa[0])
            from_ack.append(t - sa[1])
            if t > last_recv:
                last_recv = t
    delivered = len(from_ack)
    span_s = (last_recv - first_sent) / 1e9 if delivered else 0.0
    busy = (m1[0] - m0[0]) / max(1, m1[1] - m0[1])
    cpu = cores(cpu0, cpu1, window)
    return {
        "case": "prefix" if kind == "prefix" else "keys",
        "watchers": n,
        "writers": writers,
        "processes": len(wchs),
        "watch_node": f"node{wnode}",
        "leader": f"node{c.leader}",
        "loadavg_start": la,
        **gate,
        "open_s": ready["open_s"],
        "open_retries": ready["open_retries"],
        "puts": puts,
        "put_errors": wres["errors"],
        "puts_per_s": puts / float(wres["elapsed_s"]),
        "put_latency_ms": summary_ms(put_lat),
        "expected_events": expected,
        "delivered_events": delivered,
        "missed": max(0, expected - delivered),
        "duplicate_or_unknown_events": unknown + max(0, delivered - expected),
        "events_per_s": delivered / span_s if span_s > 0 else 0.0,
        "responses": sum(int(r["responses"]) for r in wresults),
        "ack_to_event_ms": summary_ms(from_ack),
        "put_sent_to_event_ms": summary_ms(from_sent),
        "cancels": merge_counts(wresults, "cancels"),
        "stream_errors": merge_counts(wresults, "errors"),
        "resumes": sum(int(r["resumes"]) for r in wresults),
        "window_s": round(window, 3),
        "cpu_cores": cpu,
        "watch_node_cores": cpu.get(f"node{wnode}", 0.0),
        "servers_cores": round(sum(v for k, v in cpu.items() if k.startswith("node")), 3),
        "watcher_procs_cores": [cpu.get(ch.name, 0.0) for ch in wchs],
        "writer_cores": cpu.get("writer", 0.0),
        "machine_busy": round(busy, 3),
        "other_cores": other_cores(m0, m1, cpu),
    }


def throughput_section(run: Run) -> list[dict[str, Any]]:
    a = run.args
    order = [0, a.idle_watchers] * a.pairs
    rows: list[dict[str, Any]] = run.report.setdefault("throughput", [])
    say(f"throughput: {len(order)} rows interleaved (none, {a.idle_watchers}, ...), {a.put_clients} put clients, "
        f"{a.put_duration:g} s each after {a.put_warmup:g} s warm-up, a fresh cluster per row")
    for i, n in enumerate(order):
        rows.append(throughput_row(run, n, i))
        r = rows[-1]
        say(f"throughput {i + 1}/{len(order)}: {n} idle watchers: {r['puts_per_s']:.0f} puts/s, server CPU "
            f"{_f(r['server_cpu_ms_per_put'], 3)} ms/put")
    none = [r["puts_per_s"] for r in rows if r["idle_watchers"] == 0]
    some = [r["puts_per_s"] for r in rows if r["idle_watchers"]]
    cpu_none = [r["server_cpu_ms_per_put"] for r in rows if r["idle_watchers"] == 0 and r["server_cpu_ms_per_put"]]
    cpu_some = [r["server_cpu_ms_per_put"] for r in rows if r["idle_watchers"] and r["server_cpu_ms_per_put"]]
    run.report["throughput_summary"] = {
        "puts_per_s_none_mean": sum(none) / len(none) if none else None,
        "puts_per_s_watchers_mean": sum(some) / len(some) if some else None,
        "ratio": (sum(some) / len(some)) / (sum(none) / len(none)) if none and some and sum(none) else None,
        "pair_ratios": [rows[j + 1]["puts_per_s"] / rows[j]["puts_per_s"] if rows[j]["puts_per_s"] else None
                        for j in range(0, len(rows) - 1, 2)],
        "server_cpu_ms_per_put_none_mean": sum(cpu_none) / len(cpu_none) if cpu_none else None,
        "server_cpu_ms_per_put_watchers_mean": sum(cpu_some) / len(cpu_some) if cpu_some else None,
    }
    return rows


def throughput_row(run: Run, n: int, i: int) -> dict[str, Any]:
    from bench.loadgen import merge_results

    a = run.args
    gate = run.quiet({})
    la = loadavg()
    with cluster(run.root, f"throughput{i}") as c:
        wnode = c.watch_node(a.watch_node)
        wchs = run.start_watchers(c.client_addrs[wnode], "keys", "idle/", n, a.processes) if n else []
        ready = watchers_ready(wchs)
        per = [a.put_clients // a.put_processes + (1 if k < a.put_clients % a.put_processes else 0)
               for k in range(a.put_processes)]
        start_at = time.time() + 2.5
        loadgens = []
        base = 0
        for k, clients in enumerate(per):
            name = run.name(f"loadgen{k}")
            cmd = [sys.executable, "-m", "bench.loadgen", "--target", "raftkv", "--endpoints", ",".join(c.endpoints),
                   "--workload", "put", "--clients", str(clients), "--duration", str(a.put_duration),
                   "--warmup", str(a.put_warmup), "--value-size", str(a.value_size), "--keys", str(a.put_keys),
                   "--start-at", str(start_at), "--worker-base", str(base), "--seed", str(i)]
            loadgens.append(Child(cmd, name, run.root, run.children))
            base += clients
        pids = {f"node{k}": v for k, v in c.pids.items()}
        pids.update({ch.name: ch.pid for ch in wchs})
        pids.update({ch.name: ch.pid for ch in loadgens})
        time.sleep(max(0.0, start_at + a.put_warmup - time.time()))
        cpu0 = cpu_of(pids)
        m0 = machine_cpu_ticks()
        t0 = time.monotonic()
        time.sleep(max(0.0, start_at + a.put_warmup + a.put_duration - time.time()))
        window = time.monotonic() - t0
        cpu1 = cpu_of(pids)
        m1 = machine_cpu_ticks()
        rss_node = proc_rss_bytes(c.pids[wnode])
        results = [ch.expect(a.put_duration + a.put_warmup + 60.0) for ch in loadgens]
        for ch in loadgens:
            run.stop(ch)
        wresults = stop_watchers(run, wchs) if wchs else []
    res = merge_results(results)
    cpu = cores(cpu0, cpu1, window)
    srv = sum(v for k, v in cpu.items() if k.startswith("node"))
    ops = int(res.get("ops", 0))
    rate = float(res.get("ops_per_s", 0.0))
    lat = res.get("latency_ms", {})
    return {
        "idle_watchers": n,
        "loadavg_start": la,
        **gate,
        "status": res.get("status"),
        "reason": res.get("reason", ""),
        "puts": ops,
        "puts_per_s": rate,
        "put_latency_ms": {k: lat.get(k) for k in ("p50", "p99", "max")},
        "errors": res.get("errors", {}),
        "started_late_s": max((float(r.get("started_late_s", 0.0)) for r in results), default=0.0),
        "watch_node": f"node{wnode}",
        "leader": f"node{c.leader}",
        "watchers_open_s": ready["open_s"],
        "watcher_events": sum(int(r["events"]) for r in wresults),
        "watcher_cancels": merge_counts(wresults, "cancels"),
        "window_s": round(window, 3),
        "cpu_cores": cpu,
        "servers_cores": round(srv, 3),
        "server_cpu_ms_per_put": srv * window / ops * 1e3 if ops else None,
        "watch_node_cpu_ms_per_put": cpu.get(f"node{wnode}", 0.0) * window / ops * 1e3 if ops else None,
        "loadgen_cores": round(sum(v for k, v in cpu.items() if k.startswith("loadgen")), 3),
        "machine_busy": round((m1[0] - m0[0]) / max(1, m1[1] - m0[1]), 3),
        "other_cores": other_cores(m0, m1, cpu),
        "watch_node_rss_bytes": rss_node,
    }


def memory_section(run: Run) -> dict[str, Any]:
    a = run.args
    out: dict[str, Any] = {"steps": [], "feed_alone": feed_alone(max(a.memory_watchers))}
    with cluster(run.root, "memory") as c:
        wnode = c.watch_node(a.watch_node)
        pid = c.pids[wnode]
        addr = c.client_addrs[wnode]
        time.sleep(1.0)
        base = proc_rss_bytes(pid) or 0
        out.update(watch_node=f"node{wnode}", leader=f"node{c.leader}", rss_before_bytes=base,
                   loadavg_start=loadavg())
        say(f"memory: node{wnode} RSS {base / 2**20:.1f} MiB with no watcher")
        chs: list[Child] = []
        have = 0
        prev = base
        for target in sorted(a.memory_watchers):
            more = target - have
            if more <= 0:
                continue
            t0 = time.monotonic()
            try:
                new = run.start_watchers(addr, "keys", f"mem{target}/", more, max(1, math.ceil(more / 5000)))
            except BenchError as e:
                out["steps"].append({"watchers": target, "error": str(e)})
                say(f"memory: opening {target} watchers failed: {e}")
                break
            chs += new
            have = target
            time.sleep(2.0)
            rss = proc_rss_bytes(pid) or 0
            ready = watchers_ready(new)
            step = {"watchers": target, "rss_bytes": rss, "per_watcher_bytes": (rss - base) / target,
                    "step_per_watcher_bytes": (rss - prev) / more, "open_s": round(time.monotonic() - t0, 2),
                    "open_retries": ready["open_retries"], "open_errors": ready["open_errors"],
                    "watcher_procs_rss_bytes": ready["rss_bytes"], "node_cpu_s": proc_cpu_s(pid)}
            out["steps"].append(step)
            prev = rss
            say(f"memory: {target} watchers: node RSS {rss / 2**20:.1f} MiB, "
                f"{step['per_watcher_bytes'] / 1024:.1f} KiB per watcher")
        if chs:
            res = stop_watchers(run, chs)
            out["cancels"] = merge_counts(res, "cancels")
            time.sleep(2.0)
            out["rss_after_close_bytes"] = proc_rss_bytes(pid)
            # Open as many again: if the RSS stays put, the memory of the closed watches was reused, not leaked.
            try:
                again = run.start_watchers(addr, "keys", "memagain/", have, max(1, math.ceil(have / 5000)))
                time.sleep(2.0)
                out["reopened"] = {"watchers": have, "rss_bytes": proc_rss_bytes(pid)}
                stop_watchers(run, again)
            except BenchError as e:
                out["reopened"] = {"watchers": have, "error": str(e)}
    return out


def feed_alone(n: int) -> dict[str, Any]:
    """Python heap per watcher of the hub and feed alone (WatchFeed.watch on an in-process store), by tracemalloc."""
    from raftkv.kv import KVStateMachine
    from raftkv.storage import LmdbLogStore
    from raftkv.watch import KeyRange
    from raftkv.watchfeed import WatchFeed

    with tempfile.TemporaryDirectory() as d:
        store = LmdbLogStore(Path(d) / "raft", sync=False)
        try:
            feed = WatchFeed(store, KVStateMachine(store))
            gc.collect()
            tracemalloc.start()
            m0 = tracemalloc.get_traced_memory()[0]
            keep = [feed.watch(KeyRange(b"mem/%d" % i)) for i in range(n)]
            gc.collect()
            size = tracemalloc.get_traced_memory()[0] - m0
            tracemalloc.stop()
            del keep
        finally:
            store.close()
    return {"watchers": n, "bytes": size, "per_watcher_bytes": size / n}


def fanout_section(run: Run) -> list[dict[str, Any]]:
    """raftkv's own Python per watch response, without gRPC: the servicer's Watch generators consumed in-process."""
    import uvloop

    rows = uvloop.run(_fanout(run.args))
    for r in rows:
        say(f"fan-out in-process: {r['watchers']} watchers, {r['writers']} writer(s): {r['cpu_us_per_put']:.0f} µs "
            f"CPU per put, {_f(r['cpu_us_per_response'], 1)} µs per response beyond the put")
    return rows


async def _fanout_row(svc: Any, ctx: Any, n: int, writers: int, puts: int, value: bytes,
                      seqs: list[int]) -> dict[str, Any]:
    """``n`` Watch generators of one prefix, ``writers`` put loops: process CPU until every event was consumed."""
    from raftkv.proto.v1 import kv_pb2

    st = {"got": 0, "responses": 0, "created": 0}
    prefix = b"fan%d-%d/" % (n, writers)

    async def consume() -> None:
        async for resp in svc.Watch(kv_pb2.WatchRequest(key=prefix, prefix=True), ctx):
            if resp.created:
                st["created"] += 1
            elif resp.events:
                st["got"] += len(resp.events)
                st["responses"] += 1

    async def writer(w: int, count: int) -> None:
        for i in range(count):
            seqs[w] += 1
            req = kv_pb2.PutRequest(key=prefix + b"%d" % (i % 100), value=value,
                                    session=kv_pb2.Session(client_id=(1 << 40) + w, seq=seqs[w]))
            await svc.Put(req, ctx)

    tasks = [asyncio.create_task(consume()) for _ in range(n)]
    while st["created"] < n:
        await asyncio.sleep(0.01)
    gc.collect()
    c0 = time.process_time()
    t0 = time.perf_counter()
    await asyncio.gather(*(writer(w, puts // writers) for w in range(writers)))
    done = puts // writers * writers
    while st["got"] < done * n:
        await asyncio.sleep(0)
    cpu = time.process_time() - c0
    wall = time.perf_counter() - t0
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"watchers": n, "writers": writers, "puts": done, "events": st["got"], "responses": st["responses"],
            "cpu_s": round(cpu, 3), "wall_s": round(wall, 3), "cpu_us_per_put": cpu / done * 1e6}


async def _fanout(a: argparse.Namespace) -> list[dict[str, Any]]:
    from bench.servicer_bench import FakeContext, one_node

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        node, svc, task, store = await one_node(Path(d))
        value = os.urandom(a.value_size)
        seqs = [0] * 64
        try:
            base: dict[int, float] = {}
            for n in (0, *a.fanout_watchers):
                for writers in (1, a.loaded_writers):
                    r = await _fanout_row(svc, FakeContext(), n, writers, a.fanout_puts, value, seqs)
                    if n == 0:
                        base[writers] = r["cpu_us_per_put"]
                    extra = (r["cpu_us_per_put"] - base.get(writers, 0.0)) * r["puts"]
                    r["cpu_us_per_response"] = extra / r["responses"] if n and r["responses"] else None
                    r["events_per_response"] = r["events"] / r["responses"] if r["responses"] else None
                    rows.append(r)
        finally:
            node.stop()
            await task
            await node.transport.stop()
            node.close()
            store.close()
    return rows


# -- the report ------------------------------------------------------------------------------------------------
def _f(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def print_report(rep: dict[str, Any]) -> None:
    m = rep["machine"]
    print(f"raftkv watch benchmark, {rep['created']}, {m['cpus']} CPUs, python {m['python']}, raftkv "
          f"{rep['raftkv_commit']}; load average (1 min) {m['loadavg_start']} at the start "
          f"(waited {m['waited_s']:.0f} s for < {rep['options']['max_load']}), {m['loadavg_end']} at the end; waited "
          f"{m.get('waited_between_rows_s', 0):.0f} s between rows for other processes to use <= "
          f"{rep['options'].get('max_other', '-')} cores")
    lat = rep.get("latency")
    if lat:
        o = rep["options"]
        print(f"\nWatch latency: 3 nodes (fsync on), watchers on the {o['watch_node']} in {o['processes']} "
              f"process(es), puts of {o['value_size']} B to the leader for {o['latency_duration']:g} s; ack->event = "
              f"an event's arrival in its watcher minus its put's acknowledgement (ms; negative: before the writer "
              f"saw the ack)")
        hdr = (f"{'case':<7}{'watchers':>9}{'writers':>8}{'puts/s':>8}{'put p50':>8}{'put p99':>8}{'events/s':>10}"
               f"{'ack->ev p50':>12}{'p99':>10}{'max':>10}{'sent->ev p50':>13}{'missed':>8}{'cancels':>8}"
               f"{'node cores':>11}{'watcher proc cores':>19}{'busy':>6}{'other':>6}{'load':>6}")
        print(hdr)
        for r in lat:
            wp = "/".join(f"{x:.2f}" for x in r["watcher_procs_cores"])
            print(f"{r['case']:<7}{r['watchers']:>9}{r['writers']:>8}{r['puts_per_s']:>8.0f}"
                  f"{_f(r['put_latency_ms']['p50']):>8}{_f(r['put_latency_ms']['p99']):>8}{r['events_per_s']:>10.0f}"
                  f"{_f(r['ack_to_event_ms']['p50']):>12}{_f(r['ack_to_event_ms']['p99']):>10}"
                  f"{_f(r['ack_to_event_ms']['max'], 1):>10}{_f(r['put_sent_to_event_ms']['p50']):>13}"
                  f"{r['missed']:>8}{sum(r['cancels'].values()):>8}{r['watch_node_cores']:>11.2f}{wp:>19}"
                  f"{r['machine_busy']:>6.2f}{r.get('other_cores', 0.0):>6.2f}{r['loadavg_start']:>6.2f}")
        reasons = merge_counts(lat, "cancels")
        for k, v in reasons.items():
            print(f"  cancelled by the node {v} x: {k}")
        errs = merge_counts(lat, "stream_errors")
        for k, v in errs.items():
            print(f"  stream errors {v} x: {k}")
        print("  (prefix: N watchers of one prefix, every put an event for each; keys: N watchers of N distinct "
              "keys, every put an event for one. node cores: the watch node's CPU; watcher proc cores near 1.00: "
              "the watcher process is the bottleneck; busy: the machine's CPUs; other: cores used by processes "
              "not this benchmark's)")
    fan = rep.get("fanout")
    if fan:
        print("\nFan-out without gRPC: one in-process node (sync off), the servicer's Watch generators consumed "
              "directly (bench/servicer_bench.py's node), N watchers of one prefix, puts one at a time or 16 at once")
        print(f"{'watchers':>9}{'writers':>8}{'puts':>6}{'events/resp':>12}{'CPU µs/put':>11}{'µs/response':>12}"
              f"{'µs/event':>9}")
        for r in fan:
            per_ev = (r["cpu_us_per_response"] / r["events_per_response"]
                      if r["cpu_us_per_response"] is not None and r["events_per_response"] else None)
            print(f"{r['watchers']:>9}{r['writers']:>8}{r['puts']:>6}{_f(r['events_per_response'], 1):>12}"
                  f"{r['cpu_us_per_put']:>11.0f}{_f(r['cpu_us_per_response'], 1):>12}{_f(per_ev, 1):>9}")
        print("  (µs/response: the CPU per put beyond the same row without watchers, divided by the responses: "
              "raftkv's own Python per watcher and batch)")
    thr = rep.get("throughput")
    if thr:
        o = rep["options"]
        print(f"\nPut throughput with idle watchers: {o['put_clients']} put clients (bench.loadgen, raw RPCs spread "
              f"over the members), {o['put_duration']:g} s after {o['put_warmup']:g} s warm-up, fresh cluster per row; "
              f"watchers of keys no put touches on the {o['watch_node']}")
        print(f"{'row':>4}{'watchers':>9}{'puts/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}{'srv cores':>10}"
              f"{'srv CPU ms/put':>15}{'watch node ms/put':>18}{'loadgen cores':>14}{'busy':>6}{'other':>6}{'load':>6}")
        for i, r in enumerate(thr):
            pl = r["put_latency_ms"]
            print(f"{i + 1:>4}{r['idle_watchers']:>9}{r['puts_per_s']:>9.0f}{_f(pl['p50']):>8}{_f(pl['p99']):>8}"
                  f"{sum(r['errors'].values()):>7}{r['servers_cores']:>10.2f}{_f(r['server_cpu_ms_per_put'], 3):>15}"
                  f"{_f(r['watch_node_cpu_ms_per_put'], 3):>18}{r['loadgen_cores']:>14.2f}{r['machine_busy']:>6.2f}"
                  f"{r.get('other_cores', 0.0):>6.2f}{r['loadavg_start']:>6.2f}")
        s = rep.get("throughput_summary", {})
        pr = ", ".join(_f(x) for x in s.get("pair_ratios", []))
        print(f"  with/without watchers: {_f(s.get('ratio'), 3)} (mean puts/s "
              f"{_f(s.get('puts_per_s_watchers_mean'), 0)} / {_f(s.get('puts_per_s_none_mean'), 0)}; per pair: {pr}); "
              f"server CPU per put {_f(s.get('server_cpu_ms_per_put_watchers_mean'), 3)} / "
              f"{_f(s.get('server_cpu_ms_per_put_none_mean'), 3)} ms")
    mem = rep.get("memory")
    if mem:
        print(f"\nMemory per watcher on the watch node ({mem.get('watch_node')}, idle watchers of distinct keys): "
              f"RSS {mem['rss_before_bytes'] / 2**20:.1f} MiB with none")
        print(f"{'watchers':>9}{'RSS MiB':>9}{'KiB/watcher':>12}{'KiB/watcher (this step)':>24}{'open s':>8}"
              f"{'open retries':>13}{'watcher procs RSS MiB':>22}")
        for st in mem["steps"]:
            if "error" in st:
                print(f"{st['watchers']:>9}  failed: {st['error']}")
                continue
            print(f"{st['watchers']:>9}{st['rss_bytes'] / 2**20:>9.1f}{st['per_watcher_bytes'] / 1024:>12.1f}"
                  f"{st['step_per_watcher_bytes'] / 1024:>24.1f}{st['open_s']:>8.1f}{st['open_retries']:>13}"
                  f"{st['watcher_procs_rss_bytes'] / 2**20:>22.1f}")
            for k, v in st["open_errors"].items():
                print(f"  {v} opens refused, retried: {k}")
        if mem.get("rss_after_close_bytes"):
            print(f"  after closing every watch: RSS {mem['rss_after_close_bytes'] / 2**20:.1f} MiB")
        ro = mem.get("reopened")
        if ro and "rss_bytes" in ro:
            print(f"  after opening {ro['watchers']} other watches again: RSS {(ro['rss_bytes'] or 0) / 2**20:.1f} MiB")
        elif ro:
            print(f"  opening {ro['watchers']} watches again failed: {ro.get('error')}")
        fa = mem["feed_alone"]
        print(f"  the hub and feed alone (WatchFeed.watch in-process, tracemalloc): {fa['per_watcher_bytes']:.0f} B "
              f"per watcher over {fa['watchers']}; the rest is the gRPC stream and the servicer's coroutine")


# -- main ------------------------------------------------------------------------------------------------------
def wait_quiet(max_load: float, max_wait_s: float) -> float:
    t0 = time.monotonic()
    last = 0.0
    while True:
        la = os.getloadavg()[0]
        if la < max_load:
            return time.monotonic() - t0
        waited = time.monotonic() - t0
        if waited >= max_wait_s:
            say(f"load average still {la:.2f} after {waited:.0f} s: measuring anyway (see the load column)")
            return waited
        if waited - last >= 15 or last == 0.0:
            say(f"waiting for the 1-minute load average ({la:.2f}) to fall below {max_load} (the machine is shared)")
            last = max(waited, 1e-9)
        time.sleep(2.0)


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def add_machine_options(ap: argparse.ArgumentParser, rows: str, *, max_wait_s: float) -> None:
    """``--max-load``, ``--max-other``, ``--max-wait``, ``--no-wait``: the gates of :func:`wait_quiet` and
    :meth:`Run.quiet` (``rows``: before what ``--max-other`` is checked)."""
    g = ap.add_argument_group("the machine")
    g.add_argument("--max-load", type=float, default=1.5, help="wait until the 1-minute load average is below this")
    g.add_argument("--max-other", type=float, default=0.25,
                   help=f"before {rows}, wait while other processes use more cores (0.25)")
    g.add_argument("--max-wait", type=float, default=max_wait_s,
                   help=f"give up waiting after this many seconds ({max_wait_s:g})")
    g.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine (neither gate)")


def parser() -> argparse.ArgumentParser:
    parts = (__doc__ or "").split("\n\n", 2)
    ap = argparse.ArgumentParser(description="\n\n".join(parts[:2]), epilog=parts[2] if len(parts) > 2 else None,
                                 formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    ap.add_argument("--sections", default="latency,fanout,throughput,memory",
                    help="comma-separated: latency, fanout, throughput, memory (default: all)")
    ap.add_argument("--output", choices=("table", "json"), default="table", help="what to print (default table)")
    ap.add_argument("--json", metavar="FILE", type=Path, help="also write the report as JSON to FILE")
    ap.add_argument("--show", metavar="FILE", type=Path, help="print the table of a JSON report and exit")
    ap.add_argument("--watch-node", choices=("leader", "follower"), default="leader",
                    help="the node the watchers connect to (default leader)")
    ap.add_argument("--processes", type=int, default=1, help="watcher processes per latency row (default 1)")
    ap.add_argument("--open-concurrency", type=int, default=256,
                    help="watches being opened at once per process (default 256; 0: all at once)")
    ap.add_argument("--value-size", type=int, default=256, help="bytes per put (default 256)")
    g = ap.add_argument_group("latency")
    g.add_argument("--watchers", type=_ints, default=[1, 100, 1000], help="watcher counts (default 1,100,1000)")
    g.add_argument("--cases", default="prefix,keys", type=lambda s: [x for x in s.split(",") if x],
                   help="prefix (N watchers of one prefix), keys (N watchers of N keys); default both")
    g.add_argument("--loaded-writers", type=int, default=16, help="concurrent writers of the loaded rows (16)")
    g.add_argument("--latency-duration", type=float, default=3.0, help="seconds of puts per row (default 3)")
    g.add_argument("--settle", type=float, default=10.0,
                   help="after the last put, seconds to wait for the events still on their way (default 10)")
    g = ap.add_argument_group("throughput")
    g.add_argument("--pairs", type=int, default=2, help="(none, watchers) row pairs (default 2)")
    g.add_argument("--idle-watchers", type=int, default=1000, help="idle watchers of the loaded rows (1000)")
    g.add_argument("--put-clients", type=int, default=64, help="concurrent put clients (default 64)")
    g.add_argument("--put-processes", type=int, default=1, help="load generator processes (default 1)")
    g.add_argument("--put-duration", type=float, default=10.0, help="measured seconds per row (default 10)")
    g.add_argument("--put-warmup", type=float, default=2.0, help="warm-up seconds per row (default 2)")
    g.add_argument("--put-keys", type=int, default=1000, help="keyspace of the put load (default 1000)")
    g = ap.add_argument_group("fanout (in-process, no gRPC)")
    g.add_argument("--fanout-watchers", type=_ints, default=[1000], help="watcher counts (default 1000)")
    g.add_argument("--fanout-puts", type=int, default=400, help="puts per row (default 400)")
    g = ap.add_argument_group("memory")
    g.add_argument("--memory-watchers", type=_ints, default=[1000, 10000],
                   help="cumulative watcher counts (default 1000,10000)")
    add_machine_options(ap, "each latency and throughput row", max_wait_s=1800.0)
    # The child processes' own options.
    ap.add_argument("--child", choices=("watchers", "writer"), help=argparse.SUPPRESS)
    for opt, kind in (("--endpoint", str), ("--kind", str), ("--key", str), ("--count", int), ("--base", int),
                      ("--connections", int), ("--writers", int), ("--duration", float), ("--out", str)):
        ap.add_argument(opt, type=kind, help=argparse.SUPPRESS)
    return ap


def _git_commit() -> str:
    try:
        r = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                           timeout=10)
        return r.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    a = parser().parse_args(argv)
    if a.child:
        import uvloop

        if a.connections is None:
            a.connections = 1
        uvloop.run(watchers_child(a) if a.child == "watchers" else writer_child(a))
        return 0
    if a.show:
        print_report(json.loads(a.show.read_text()))
        return 0
    sections = [s.strip() for s in a.sections.split(",") if s.strip()]
    bad = [s for s in sections if s not in ("latency", "fanout", "throughput", "memory")]
    if bad or any(c not in ("prefix", "keys") for c in a.cases):
        print(f"error: unknown section or case: {', '.join(bad) or ', '.join(a.cases)}", file=sys.stderr)
        return 2

    def body(run: Run) -> None:
        if "latency" in sections:
            latency_section(run)
        if "fanout" in sections:
            run.report["fanout"] = fanout_section(run)
        if "throughput" in sections:
            throughput_section(run)
        if "memory" in sections:
            run.report["memory"] = memory_section(run)

    return run_session(a, SCHEMA, "raftkv-watch-bench-", Run, body, print_report,
                       hidden=("child", "endpoint", "kind", "key", "count", "base", "connections", "writers",
                               "duration", "out", "show"))


def run_session(a: argparse.Namespace, schema: str, prefix: str, make_run: Callable[[argparse.Namespace, Path], R],
                body: Callable[[R], None], print_report: Callable[[dict[str, Any]], None], *,
                hidden: Sequence[str] = ()) -> int:
    """A benchmark's run, from the command line's ``a`` (with ``add_machine_options``' options, ``output`` and
    ``json``): wait for a quiet machine, make a temporary directory and ``make_run(a, it)``, start its report
    (``schema``, the options but ``hidden``, the machine), run ``body``; whatever happens (an error, Ctrl-C,
    SIGTERM) stop every process the run started and remove the directory; print the report (a table or JSON) and
    return the exit code (1 if it stopped early)."""

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # the finally below stops every process started

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        waited = 0.0 if a.no_wait else wait_quiet(a.max_load, a.max_wait)
    except KeyboardInterrupt:
        return 130
    root = Path(tempfile.mkdtemp(prefix=prefix))
    run = make_run(a, root)
    opts = {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items() if k not in hidden}
    run.report = {"schema": schema, "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"), "options": opts,
                  "raftkv_commit": _git_commit(),
                  "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                              "python": platform.python_version(), "loadavg_start": loadavg(),
                              "waited_s": round(waited, 1)}}
    say(f"load average {loadavg()}; working in {root}")
    t0 = time.monotonic()
    try:
        body(run)
    except BenchError as e:
        run.report["error"] = str(e)
        say(f"error: {e}")
    except KeyboardInterrupt:
        run.report["error"] = "interrupted"
    finally:
        run.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    run.report["machine"]["loadavg_end"] = loadavg()
    run.report["elapsed_s"] = round(time.monotonic() - t0, 1)
    run.report["machine"]["waited_between_rows_s"] = round(run.waited_s, 1)
    if a.json:
        a.json.write_text(json.dumps(run.report, indent=1, default=str) + "\n")
    if a.output == "json":
        print(json.dumps(run.report, indent=1, default=str))
    else:
        print_report(run.report)
        if "error" in run.report:
            print(f"\nstopped early: {run.report['error']}")
        print(f"\n({run.report['elapsed_s']:.0f} s)")
    return 1 if "error" in run.report else 0


if __name__ == "__main__":
    raise SystemExit(main())
