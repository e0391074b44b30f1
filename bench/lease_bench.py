"""Leases: the leader's CPU to keep 10^4 leases alive, put throughput beside them, and the lock recipe's latency.

    python -m bench.lease_bench                                   # every section, ~7 minutes (+ waiting)
    python -m bench.lease_bench --sections keepalive --pairs 3    # one section, more interleaved pairs
    python -m bench.lease_bench --output json > lease.json        # everything, for scripts

Four sections, each on a fresh 3-node local cluster (raftkv: ``raftkv.localcluster.up``, fsync on, tick 100 ms,
default settings; etcd: ``bench/etcd.py``'s cluster), free ports, every process it starts stopped by its pid:

keepalive
    ``--pairs`` pairs of windows of ``--window`` seconds, interleaved: idle (no lease), then with ``--leases``
    leases of ``--ttl`` seconds granted from ``--holder-clients`` clients (``raftkv.client.Client``, one
    process) and kept alive by them: each client has ONE ``LeaseKeepAlive`` stream to the leader, each request
    carrying every lease id due (a third of the TTL after its last renewal). The leases are granted before the
    window (not measured), ``--settle`` seconds pass so that every lease has been renewed once, and they are
    revoked after it. On the leader: CPU seconds (``/proc/<pid>/stat`` utime+stime), renewals answered (the
    ``lease_renewals`` counter of its Status stats), ``keep_alive_rounds`` (keep-alives that needed a read-index
    round: the leader lease did not hold) and ``leases_expired``; from the clients: keep-alive requests sent
    (``client._keepalive.requests``). The marginal cost is the leader's CPU in a lease window less that of the idle
    window before it, per renewal and per keep-alive request.
etcd
    The same windows against etcd 3.4 (skipped when etcd is not installed: ``bench/etcd.sh``), its lease holders
    doing what etcd's Go client (clientv3) does: one ``LeaseKeepAlive`` stream per client, ONE message per lease
    (etcd's request has one ID), sent every 500 ms for each lease whose next keep-alive (a third of its TTL after
    the last answer) is due. The streams go to the leader (found with ``Maintenance.Status``), as raftkv's do.
    Renewals are the answers with a TTL > 0 the holders received. Stubs: ``bench.etcd.load_stubs`` (raftkv's own
    stubs of etcd's ``rpc.proto``, which have the Lease and Maintenance services).
throughput
    ``--throughput-pairs`` pairs of rows on ONE cluster, interleaved (none, with, none, with): ``bench.loadgen``
    (put, ``--put-clients`` clients, raw RPCs, ``bench.harness.run_row``) for ``--put-duration`` seconds after
    a warm-up, with no lease, then with ``--leases`` leases kept alive as above. Their ratio, and the server CPU
    per put.
lock
    ``async with client.lock(name)`` (``raftkv.client.recipes.Lock``: a lease grant, a transaction, a linearizable
    range, and for a waiter a watch; the release revokes the lease): ``--lock-acquisitions`` acquisitions in all by
    each number of contenders of ``--lock-contenders`` (1, 2), each contender its own ``Client``, all of one lock;
    acquire and release latency p50/p99, acquisitions per second, and a check that no two held it at once. For
    scale: the p50/p99 of as many single puts, one at a time, on the same cluster.

Before measuring it waits until the 1-minute load average is below ``--max-load`` (the machine is shared), and
before each window or row while other processes (not this benchmark's) use more than ``--max-other`` cores; every
row shows the load average as it started (``load``), the machine's busy share (``busy``) and, in the keep-alive
windows, the cores other processes used (``other``). Prints figures only (no assertions); progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout: `bench` and (without pip install -e) `raftkv`
    sys.path.insert(0, str(REPO))

from bench.harness import (  # noqa: E402
    Children,
    Options,
    RunContext,
    Sample,
    _raftkv_stats,
    _sample,
    durability_figures,
    run_row,
)
from bench.watch_bench import (  # noqa: E402
    BenchError,
    Child,
    Run,
    _emit,
    _f,
    add_machine_options,
    cluster,
    loadavg,
    other_cores,
    run_session,
    say,
    stdin_queue,
    summary_ms,
)

SCHEMA = "raftkv-lease-bench/1"
SECTIONS = ("keepalive", "etcd", "throughput", "lock")
ETCD_KEEPALIVE_TICK_S = 0.5  # clientv3's sendKeepAliveLoop: looks for leases due every 500 ms
HOLDERS_TIMEOUT_S = 300.0
T = TypeVar("T")


# -- the lease holders (a child process) ---------------------------------------------------------------------------
async def gather_limited(coros: Sequence[Coroutine[Any, Any, T]], limit: int) -> list[T]:
    """The coroutines' results, at most ``limit`` of them running at once."""
    sem = asyncio.Semaphore(max(1, limit))

    async def one(c: Coroutine[Any, Any, T]) -> T:
        async with sem:
            return await c

    return list(await asyncio.gather(*(one(c) for c in coros)))


class RaftkvHolders:
    """``clients`` raftkv clients; each keeps its leases alive over its own one keep-alive stream."""

    def __init__(self, endpoints: list[str], clients: int) -> None:
        from raftkv.client import Client

        self.clients = [Client(endpoints, timeout_s=10.0) for _ in range(clients)]
        self.leases: list[list[Any]] = [[] for _ in self.clients]

    async def start(self) -> None:
        for c in self.clients:
            await c.status()  # connections open, the leader asked first from now on

    async def grant(self, i: int, ttl: int) -> None:
        self.leases[i].append(await self.clients[i].grant(ttl))

    async def revoke_all(self, i: int, concurrency: int) -> list[str]:
        """Revoke every lease of client ``i`` (each is kept alive until its own revoke: the revokes of 10^4 can take
        longer than a TTL); the errors."""
        from raftkv.errors import RaftKVError

        leases, self.leases[i] = self.leases[i], []

        async def one(lease: Any) -> str:
            try:
                await self.clients[i].revoke(lease)
                return ""
            except RaftKVError as e:
                return f"{type(e).__name__}: {e.message}"[:200]

        return [e for e in await gather_limited([one(lease) for lease in leases], concurrency) if e]

    async def left(self) -> int:
        return len(await self.clients[0].leases())

    def stats(self) -> dict[str, Any]:
        lost: dict[str, int] = {}
        for ls in self.leases:
            for lease in ls:
                if lease.lost.is_set():
                    lost[lease.lost_reason] = lost.get(lease.lost_reason, 0) + 1
        return {"requests": sum(c._keepalive.requests for c in self.clients if c._keepalive is not None),
                "renewals": sum(lease.renewals for ls in self.leases for lease in ls),
                "held": sum(len(ls) for ls in self.leases),
                "alive": sum(lease.alive for ls in self.leases for lease in ls), "lost": lost}

    async def close(self) -> None:
        for c in self.clients:
            await c.aclose()


class _EtcdClient:
    """One etcd lease client as clientv3 runs it: one keep-alive stream; every ``ETCD_KEEPALIVE_TICK_S`` one
    message per lease whose next keep-alive is due; an answer moves it to a third of the TTL from then."""

    def __init__(self, endpoint: str) -> None:
        import grpc.aio

        from bench.etcd import load_stubs
        from bench.loadgen import _GRPC_OPTIONS

        self.pb, pb_grpc = load_stubs()
        self.channel = grpc.aio.insecure_channel(endpoint, options=_GRPC_OPTIONS)
        self.stub = pb_grpc.LeaseStub(self.channel)
        self.leases: dict[int, list[float]] = {}  # id -> [next keep-alive, deadline] (loop time)
        self.lost: dict[str, int] = {}
        self.requests = 0
        self.renewals = 0
        self._tasks: list[asyncio.Task[None]] = []

    def _lose(self, lid: int, why: str) -> None:
        if self.leases.pop(lid, None) is not None:
            self.lost[why] = self.lost.get(why, 0) + 1

    async def grant(self, ttl: int) -> None:
        loop = asyncio.get_running_loop()
        r = await self.stub.LeaseGrant(self.pb.LeaseGrantRequest(TTL=ttl), timeout=10.0)
        if r.error:
            raise RuntimeError(f"LeaseGrant: {r.error}")
        now = loop.time()
        self.leases[r.ID] = [now, now + r.TTL]  # clientv3's KeepAlive: the first one at its next tick
        if not self._tasks:
            call = self.stub.LeaseKeepAlive()
            self._tasks = [loop.create_task(self._send(call)), loop.create_task(self._recv(call))]

    async def _send(self, call: Any) -> None:
        loop = asyncio.get_running_loop()
        req = self.pb.LeaseKeepAliveRequest
        while True:
            now = loop.time()
            for lid, st in list(self.leases.items()):
                if st[1] <= now:
                    self._lose(lid, "its deadline passed before a keep-alive was answered")
            for lid in [lid for lid, st in self.leases.items() if st[0] < now]:
                await call.write(req(ID=lid))
                self.requests += 1
            await asyncio.sleep(ETCD_KEEPALIVE_TICK_S)

    async def _recv(self, call: Any) -> None:
        import grpc.aio

        loop = asyncio.get_running_loop()
        while True:
            r = await call.read()
            if r is grpc.aio.EOF:
                return
            st = self.leases.get(r.ID)
            if st is None:
                continue
            if r.TTL <= 0:
                self._lose(r.ID, "etcd says it no longer exists")
                continue
            now = loop.time()
            st[0] = now + r.TTL / 3
            st[1] = now + r.TTL
            self.renewals += 1

    async def revoke_all(self, concurrency: int) -> list[str]:
        """Revoke every lease (each kept alive until its own revoke is sent); the errors. The losses counted so far
        are forgotten: they belong to the window before."""
        import grpc.aio

        ids = list(self.leases)
        self.lost.clear()

        async def one(lid: int) -> str:
            self.leases.pop(lid, None)  # (an answer of TTL 0 to a keep-alive in flight is not a loss)
            try:
                await self.stub.LeaseRevoke(self.pb.LeaseRevokeRequest(ID=lid), timeout=10.0)
                return ""
            except grpc.aio.AioRpcError as e:
                return f"{e.code().name}: {e.details()}"[:200]

        return [e for e in await gather_limited([one(lid) for lid in ids], concurrency) if e]

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.channel.close()


class EtcdHolders:
    def __init__(self, endpoint: str, clients: int) -> None:
        self.clients = [_EtcdClient(endpoint) for _ in range(clients)]

    async def start(self) -> None:
        pass

    async def grant(self, i: int, ttl: int) -> None:
        await self.clients[i].grant(ttl)

    async def revoke_all(self, i: int, concurrency: int) -> list[str]:
        return await self.clients[i].revoke_all(concurrency)

    async def left(self) -> int:
        return -1  # (not asked)

    def stats(self) -> dict[str, Any]:
        lost: dict[str, int] = {}
        for c in self.clients:
            for k, v in c.lost.items():
                lost[k] = lost.get(k, 0) + v
        now = asyncio.get_running_loop().time()
        return {"requests": sum(c.requests for c in self.clients), "renewals": sum(c.renewals for c in self.clients),
                "held": sum(len(c.leases) for c in self.clients),
                "alive": sum(1 for c in self.clients for st in c.leases.values() if st[1] > now), "lost": lost}

    async def close(self) -> None:
        for c in self.clients:
            await c.close()


async def grant_leases(h: RaftkvHolders | EtcdHolders, count: int, ttl: int, concurrency: int) -> dict[str, int]:
    """``count`` leases of ``ttl`` s spread over the holders' clients, ``concurrency`` grants in flight per client;
    the errors by kind (a grant that fails is counted, the others go on)."""
    errors: dict[str, int] = {}
    n = len(h.clients)

    async def one(i: int) -> None:
        try:
            await h.grant(i, ttl)
        except Exception as e:
            k = f"{type(e).__name__}: {e}"[:200]
            errors[k] = errors.get(k, 0) + 1

    await asyncio.gather(*(gather_limited([one(i) for _ in range(count // n + (1 if i < count % n else 0))],
                                          concurrency) for i in range(n)))
    return errors


async def holders_child(a: argparse.Namespace) -> None:
    """Lease holders, driven on stdin: ``grant`` (``--count`` leases of ``--ttl`` s over the clients, at most
    ``--concurrency`` grants in flight per client), ``stats``, ``revoke`` (every lease), ``stop``. One JSON line
    answers each."""
    eps = [e for e in a.endpoints.split(",") if e]
    h: RaftkvHolders | EtcdHolders
    h = RaftkvHolders(eps, a.clients) if a.system == "raftkv" else EtcdHolders(eps[0], a.clients)
    await h.start()
    cmds = stdin_queue()
    _emit({"msg": "ready"})
    n = len(h.clients)
    while (cmd := await cmds.get()) != "stop":
        t0 = time.monotonic()
        if cmd == "grant":
            errors = await grant_leases(h, a.count, a.ttl, a.concurrency)
            _emit({"msg": "granted", "s": round(time.monotonic() - t0, 3), "errors": errors, **h.stats()})
        elif cmd == "stats":
            _emit({"msg": "stats", "cpu_s": time.process_time(), **h.stats()})
        elif cmd == "revoke":
            kinds: dict[str, int] = {}
            for errs in await asyncio.gather(*(h.revoke_all(i, a.concurrency) for i in range(n))):
                for e in errs:
                    kinds[e] = kinds.get(e, 0) + 1
            _emit({"msg": "revoked", "s": round(time.monotonic() - t0, 3), "errors": sum(kinds.values()),
                   "error_kinds": kinds, "left": await h.left()})
    await h.close()


# -- the clusters --------------------------------------------------------------------------------------------------
@dataclass
class Nodes:
    """A running 3-member cluster as ``bench.harness`` samples it (``server_pids``, ``stats``), and its leader."""

    system: str
    endpoints: list[str]
    pids: dict[str, int]
    leader_of: Callable[[dict[str, Any] | None], str]
    """The leader's name, from a sample's stats (raftkv) or by asking (etcd)."""
    holder_endpoints: list[str]

    def server_pids(self) -> dict[str, int]:
        return dict(self.pids)

    def stats(self) -> dict[str, Any] | None:
        return _raftkv_stats(self.endpoints) if self.system == "raftkv" else None

    def down(self) -> None:  # (the section's context manager takes the cluster down)
        pass


@contextlib.contextmanager
def raftkv_nodes(root: Path, name: str) -> Iterator[Nodes]:
    with cluster(root, name) as c:
        first = f"node{c.leader}"

        def leader_of(stats: dict[str, Any] | None) -> str:
            return f"node{stats['leader']}" if stats else first

        yield Nodes("raftkv", c.endpoints, {f"node{k}": v for k, v in c.pids.items()}, leader_of, c.endpoints)


def etcd_leader(endpoints: Sequence[str], names: Sequence[str]) -> str:
    """The name of the member that every member that answers calls the leader (Maintenance.Status)."""
    import grpc

    from bench.etcd import load_stubs

    pb, pb_grpc = load_stubs()
    ids: dict[int, str] = {}
    leaders = set()
    for ep, name in zip(endpoints, names, strict=True):
        with grpc.insecure_channel(ep) as ch, contextlib.suppress(grpc.RpcError):
            r = pb_grpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=5.0)
            ids[r.header.member_id] = name
            leaders.add(r.leader)
    if len(leaders) != 1 or next(iter(leaders)) not in ids:
        raise BenchError(f"the etcd members do not agree on a leader (leaders {sorted(leaders)}, members {ids})")
    return ids[next(iter(leaders))]


@contextlib.contextmanager
def etcd_nodes(root: Path, name: str) -> Iterator[Nodes]:
    from bench.etcd import EtcdCluster, EtcdError

    d = root / name
    try:
        ec = EtcdCluster.up(d, 3, timeout_s=60.0, progress=lambda m: None)
    except EtcdError as e:
        raise BenchError(str(e)) from None
    try:
        names = [m.name for m in ec.members]
        lead = etcd_leader(ec.endpoints, names)

        def leader_of(_stats: dict[str, Any] | None) -> str:
            return etcd_leader(ec.endpoints, names)

        ep = ec.endpoints[names.index(lead)]
        yield Nodes("etcd", ec.endpoints, ec.server_pids(), leader_of, [ep])
    finally:
        ec.down(purge=True)
        shutil.rmtree(d, ignore_errors=True)


# -- the run -------------------------------------------------------------------------------------------------------
@dataclass
class LeaseRun(Run):
    harness_children: Children = field(default_factory=Children)

    def holders(self, nodes: Nodes) -> Child:
        a = self.args
        cmd = [sys.executable, "-m", "bench.lease_bench", "--child", "holders", "--system", nodes.system,
               "--endpoints", ",".join(nodes.holder_endpoints), "--clients", str(a.holder_clients),
               "--count", str(a.leases), "--ttl", str(a.ttl), "--concurrency", str(a.grant_concurrency)]
        ch = Child(cmd, self.name(f"holders-{nodes.system}"), self.root, self.children)
        ch.expect(60.0)
        return ch

    def stop_all(self) -> None:
        super().stop_all()
        self.harness_children.stop_all()


def ask(ch: Child, cmd: str, timeout_s: float = HOLDERS_TIMEOUT_S) -> dict[str, Any]:
    ch.send(cmd)
    return ch.expect(timeout_s)


def grant(run: LeaseRun, holders: Child, what: str) -> dict[str, Any]:
    a = run.args
    g = ask(holders, "grant")
    say(f"{what}: granted {g['held']} leases of {a.ttl} s in {g['s']:.1f} s"
        + (f" ({sum(g['errors'].values())} errors: {next(iter(g['errors']))})" if g["errors"] else "")
        + f"; {settle_s(a):.1f} s for every lease to be renewed once")
    time.sleep(settle_s(a))
    return g


def revoke(holders: Child, what: str) -> dict[str, Any]:
    r = ask(holders, "revoke")
    say(f"{what}: revoked them in {r['s']:.1f} s ({r['errors']} errors"
        + (f": {next(iter(r['error_kinds']))}" if r["errors"] else "")
        + (f"; {r['left']} leases left in the cluster)" if r["left"] >= 0 else ")"))
    time.sleep(2.0)
    return r


def settle_s(a: argparse.Namespace) -> float:
    return a.settle if a.settle is not None else a.ttl / 3 + 1.0


def _cpu(s: Sample, name: str) -> float:
    return float(s.servers.get(name) or 0.0)


def keepalive_window(run: LeaseRun, nodes: Nodes, holders: Child, leases: int, pair: int) -> dict[str, Any]:
    """One window of ``--window`` s: every server's and the holders' CPU, the leader's counters, the holders'."""
    a = run.args
    gate = run.quiet({**nodes.pids, "holders": holders.pid, "bench": os.getpid()})
    la = loadavg()
    h0 = ask(holders, "stats")
    s0 = _sample(nodes, [holders.pid], nodes.system == "raftkv")
    leader = nodes.leader_of(s0.stats)
    time.sleep(a.window)
    s1 = _sample(nodes, [holders.pid], nodes.system == "raftkv")
    h1 = ask(holders, "stats")
    leader_after = nodes.leader_of(s1.stats)
    w = s1.t - s0.t
    servers = {k: round(_cpu(s1, k) - _cpu(s0, k), 3) for k in nodes.pids}
    holders_cpu = (s1.loadgens.get(holders.pid) or 0.0) - (s0.loadgens.get(holders.pid) or 0.0)
    ours = {**{k: v / w for k, v in servers.items()}, "holders": holders_cpu / w,
            "bench": ((s1.harness or 0.0) - (s0.harness or 0.0)) / w}
    row: dict[str, Any] = {
        "system": nodes.system, "pair": pair, "leases": leases, "loadavg_start": la, **gate,
        "window_s": round(w, 3), "leader": leader, "leader_after": leader_after,
        "leader_cpu_s": servers.get(leader, 0.0), "leader_cores": round(servers.get(leader, 0.0) / w, 4),
        "followers_cores": round(sum(v for k, v in servers.items() if k != leader) / w, 4),
        "servers_cpu_s": servers, "holders_cpu_s": round(holders_cpu, 3),
        "holders_cores": round(holders_cpu / w, 4),
        "requests": int(h1["requests"]) - int(h0["requests"]),
        "client_renewals": int(h1["renewals"]) - int(h0["renewals"]),
        "held": h1["held"], "alive": h1["alive"], "lost": h1["lost"],
        "machine_busy": round((s1.machine[0] - s0.machine[0]) / max(1, s1.machine[1] - s0.machine[1]), 3),
        "other_cores": other_cores(s0.machine, s1.machine, ours),
    }
    figs = durability_figures(s0.stats, s1.stats)
    if figs:
        d = figs["deltas"]
        row.update(renewals=d.get("lease_renewals", 0), keep_alive_rounds=d.get("keep_alive_rounds", 0),
                   leases_expired=d.get("leases_expired", 0), leader_entries=d.get("entries_persisted", 0))
    else:
        row["renewals"] = row["client_renewals"]
    if leader_after != leader:
        row["note"] = "the leader changed during the window"
    return row


def keepalive_section(run: LeaseRun, system: str) -> list[dict[str, Any]]:
    a = run.args
    rows: list[dict[str, Any]] = run.report.setdefault(f"keepalive_{system}", [])
    ctx = raftkv_nodes(run.root, "keepalive") if system == "raftkv" else etcd_nodes(run.root, "etcd")
    with ctx as nodes:
        holders = run.holders(nodes)
        say(f"keepalive {system}: cluster up (leader {nodes.leader_of(None)}); {a.pairs} pairs of {a.window:g} s "
            f"windows (idle, {a.leases} leases)")
        for p in range(a.pairs):
            for n in (0, a.leases):
                g = grant(run, holders, f"keepalive {system}") if n else None
                r = keepalive_window(run, nodes, holders, n, p)
                rows.append(r)
                say(f"keepalive {system} {len(rows)}/{2 * a.pairs}: {n} leases: leader {r['leader']} "
                    f"{r['leader_cores']:.3f} cores, {r['renewals']} renewals, {r['requests']} requests, "
                    f"holders {r['holders_cores']:.3f} cores, lost {sum(r['lost'].values())}")
                if g:
                    r["grant_s"] = g["s"]
                    r["grant_errors"] = g["errors"]
                    r["revoke"] = revoke(holders, f"keepalive {system}")
        run.stop(holders)
    run.report[f"keepalive_{system}_summary"] = keepalive_summary(rows)
    return rows


def keepalive_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per (idle, leases) pair: the leader's CPU beyond the idle window's (scaled to the same length) per renewal
    and per request; the same for the whole cluster; the holders' CPU per renewal (the client side)."""
    pairs = []
    for idle, busy in zip(rows[::2], rows[1::2], strict=False):
        w = busy["window_s"]
        extra = busy["leader_cpu_s"] - idle["leader_cpu_s"] / idle["window_s"] * w
        extra_all = sum(busy["servers_cpu_s"].values()) - sum(idle["servers_cpu_s"].values()) / idle["window_s"] * w
        ren, req = busy["renewals"], busy["requests"]
        pairs.append({"marginal_leader_cpu_s": round(extra, 3), "marginal_leader_cores": round(extra / w, 4),
                      "us_per_renewal": extra / ren * 1e6 if ren else None,
                      "us_per_request": extra / req * 1e6 if req else None,
                      "cluster_us_per_renewal": extra_all / ren * 1e6 if ren else None,
                      "holders_us_per_renewal": busy["holders_cpu_s"] / ren * 1e6 if ren else None,
                      "renewals_per_s": ren / w, "requests_per_s": req / w,
                      "ids_per_request": ren / req if req else None})

    def mean(k: str) -> float | None:
        xs = [p[k] for p in pairs if p[k] is not None]
        return sum(xs) / len(xs) if xs else None

    keys = ("marginal_leader_cores", "us_per_renewal", "us_per_request", "cluster_us_per_renewal",
            "holders_us_per_renewal", "renewals_per_s", "requests_per_s", "ids_per_request")
    return {"pairs": pairs, **{k: mean(k) for k in keys},
            "idle_leader_cores": (sum(r["leader_cores"] for r in rows[::2]) / len(rows[::2])) if rows else None}


def throughput_section(run: LeaseRun) -> list[dict[str, Any]]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    a = run.args
    rows: list[dict[str, Any]] = run.report.setdefault("throughput", [])
    opts = Options(systems=("raftkv",), workloads=("put",), clients=(a.put_clients,), value_size=a.value_size,
                   keys=a.put_keys, duration_s=a.put_duration, warmup_s=a.put_warmup, processes=a.put_processes)
    console = Console(stderr=True)
    order = [0, a.leases] * a.throughput_pairs
    with raftkv_nodes(run.root, "throughput") as nodes, \
            Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                     console=console, transient=True) as progress:
        ctx = RunContext(opts, run.harness_children, progress, console)
        holders = run.holders(nodes)
        say(f"throughput: {len(order)} rows on one cluster (none, {a.leases} leases, ...), {a.put_clients} put "
            f"clients, {a.put_duration:g} s after {a.put_warmup:g} s warm-up")
        for i, n in enumerate(order):
            g = grant(run, holders, "throughput") if n else None
            gate = run.quiet({**nodes.pids, "holders": holders.pid})
            la = loadavg()
            h0 = ask(holders, "stats")
            c0 = time.monotonic()
            row = run_row(ctx, nodes, "put", a.put_clients)
            h1 = ask(holders, "stats")
            holders_cores = (h1["cpu_s"] - h0["cpu_s"]) / (time.monotonic() - c0)  # (steady: over the whole row)
            r: dict[str, Any] = {"leases": n, "loadavg_start": la, **gate, "status": row.get("status"),
                                 "reason": row.get("reason", "")}
            if row.get("status") == "ok":
                st = row.get("raftkv_stats") or {}
                d = st.get("deltas", {})
                srv = sum(float(s["cpu_s"] or 0.0) for s in row["servers"])
                r.update(puts_per_s=row["ops_per_s"], puts=row["ops"], errors=row["errors"],
                         put_latency_ms={k: row["latency_ms"][k] for k in ("p50", "p99", "max")},
                         servers=row["servers"], servers_cores=round(srv / row["window_s"], 3),
                         server_cpu_ms_per_put=row["server_cpu_ms_per_op"], loadgen_cores=row["loadgen_cpu_cores"],
                         machine_busy=row["machine_busy"], window_s=row["window_s"],
                         leader=st.get("leader_before"), renewals=d.get("lease_renewals", 0),
                         renewals_per_s=d.get("lease_renewals", 0) / row["window_s"],
                         keep_alive_rounds=d.get("keep_alive_rounds", 0), leases_expired=d.get("leases_expired", 0),
                         alive=h1["alive"], lost=h1["lost"], requests=int(h1["requests"]) - int(h0["requests"]),
                         holders_cores=round(holders_cores, 3))
                ours = (srv + float(row["harness_cpu_s"] or 0.0)) / row["window_s"] + row["loadgen_cpu_cores"]
                r["other_cores"] = round(max(0.0, row["machine_busy"] * (os.cpu_count() or 1) - ours - holders_cores),
                                         3)
            rows.append(r)
            say(f"throughput {i + 1}/{len(order)}: {n} leases: {_f(r.get('puts_per_s'), 0)} puts/s, server CPU "
                f"{_f(r.get('server_cpu_ms_per_put'), 3)} ms/put, {r.get('renewals', 0)} renewals"
                + (f" ({r['reason']})" if r["status"] != "ok" else ""))
            if g:
                r["revoke"] = revoke(holders, "throughput")
        run.stop(holders)
    ok = [r for r in rows if r["status"] == "ok"]
    none = [r["puts_per_s"] for r in ok if r["leases"] == 0]
    some = [r["puts_per_s"] for r in ok if r["leases"]]
    cpu_none = [r["server_cpu_ms_per_put"] for r in ok if r["leases"] == 0 and r["server_cpu_ms_per_put"]]
    cpu_some = [r["server_cpu_ms_per_put"] for r in ok if r["leases"] and r["server_cpu_ms_per_put"]]

    def mean(xs: Sequence[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    mn, ms = mean(none), mean(some)
    run.report["throughput_summary"] = {
        "puts_per_s_none_mean": mn, "puts_per_s_leases_mean": ms,
        "ratio": ms / mn if mn and ms is not None else None,
        "pair_ratios": [rows[j + 1]["puts_per_s"] / rows[j]["puts_per_s"]
                        if rows[j].get("puts_per_s") and rows[j + 1].get("puts_per_s") is not None else None
                        for j in range(0, len(rows) - 1, 2)],
        "server_cpu_ms_per_put_none_mean": mean(cpu_none), "server_cpu_ms_per_put_leases_mean": mean(cpu_some)}
    return rows


async def _lock_row(endpoints: list[str], contenders: int, acquisitions: int, hold_s: float) -> dict[str, Any]:
    """``contenders`` clients taking turns at one lock, ``acquisitions`` in all: acquire and release latency."""
    from raftkv.client import Client

    clients = [Client(endpoints) for _ in range(contenders)]
    name = f"bench{contenders}"
    acq: list[int] = []
    rel: list[int] = []
    st = {"holding": 0, "overlaps": 0, "max_revision": 0, "revision_not_increasing": 0}

    async def contender(c: Client, count: int) -> None:
        for _ in range(count):
            t0 = time.monotonic_ns()
            async with c.lock(name) as held:
                t1 = time.monotonic_ns()
                st["holding"] += 1
                if st["holding"] > 1:
                    st["overlaps"] += 1
                if held.revision <= st["max_revision"]:
                    st["revision_not_increasing"] += 1
                st["max_revision"] = max(st["max_revision"], held.revision)
                if hold_s:
                    await asyncio.sleep(hold_s)
                st["holding"] -= 1
                t2 = time.monotonic_ns()
            t3 = time.monotonic_ns()
            acq.append(t1 - t0)
            rel.append(t3 - t2)

    try:
        for c in clients:  # connections open, the leader known, the recipe's code paths warm
            async with c.lock(name):
                pass
        t0 = time.monotonic()
        await asyncio.gather(*(contender(c, acquisitions // contenders + (1 if i < acquisitions % contenders else 0))
                               for i, c in enumerate(clients)))
        elapsed = time.monotonic() - t0
    finally:
        for c in clients:
            await c.aclose()
    return {"what": "lock", "contenders": contenders, "ops": len(acq), "elapsed_s": round(elapsed, 3),
            "per_s": len(acq) / elapsed, "acquire_ms": summary_ms(acq), "release_ms": summary_ms(rel),
            "overlaps": st["overlaps"], "revision_not_increasing": st["revision_not_increasing"],
            "hold_ms": hold_s * 1e3}


async def _lock_rows(endpoints: list[str], acquisitions: int, contenders: Sequence[int],
                     hold_s: float) -> list[dict[str, Any]]:
    from raftkv.client import Client

    rows: list[dict[str, Any]] = []
    async with Client(endpoints) as ref:
        await ref.put("lock-bench/warm", b"x")
        puts: list[int] = []
        for i in range(acquisitions):
            t0 = time.monotonic_ns()
            await ref.put(f"lock-bench/{i % 100}", b"x" * 16)
            puts.append(time.monotonic_ns() - t0)
        rows.append({"what": "put", "contenders": 1, "ops": len(puts), "latency_ms": summary_ms(puts)})
    for k in contenders:
        rows.append(await _lock_row(endpoints, k, acquisitions, hold_s))
    return rows


def etcd_section(run: LeaseRun) -> None:
    """The keep-alive windows against etcd, or why not (no etcd binary, no stubs of etcd's Lease service)."""
    from bench.etcd import EtcdError, etcd_version, find_etcd, load_stubs, missing_message

    binary = find_etcd()
    try:
        if binary is None:
            raise EtcdError(missing_message())
        if not hasattr(load_stubs()[1], "LeaseStub"):
            raise EtcdError("the etcd stubs have no Lease service (this raftkv ships no raftkv.proto.etcd)")
    except EtcdError as e:
        run.report["keepalive_etcd_skipped"] = str(e)
        say(f"etcd: skipped: {e}")
        return
    run.report["etcd_version"] = etcd_version(binary)
    keepalive_section(run, "etcd")


def lock_section(run: LeaseRun) -> list[dict[str, Any]]:
    from bench.loadgen import run_async

    a = run.args
    with raftkv_nodes(run.root, "lock") as nodes:
        gate = run.quiet(nodes.pids)
        la = loadavg()
        say(f"lock: cluster up; {a.lock_acquisitions} single puts, then {a.lock_acquisitions} acquisitions with "
            f"{', '.join(map(str, a.lock_contenders))} contender(s)")
        rows = run_async(_lock_rows(nodes.endpoints, a.lock_acquisitions, a.lock_contenders, a.lock_hold_ms / 1e3))
    for r in rows:
        r.update(loadavg_start=la, **gate)
        if r["what"] == "lock":
            say(f"lock: {r['contenders']} contender(s): acquire p50 {_f(r['acquire_ms']['p50'])} ms p99 "
                f"{_f(r['acquire_ms']['p99'])} ms, release p50 {_f(r['release_ms']['p50'])} ms, "
                f"{r['per_s']:.0f}/s, overlaps {r['overlaps']}")
    run.report["lock"] = rows
    return rows


# -- the report ----------------------------------------------------------------------------------------------------
def print_report(rep: dict[str, Any]) -> None:
    m, o = rep["machine"], rep["options"]
    print(f"raftkv lease benchmark, {rep['created']}, {m['cpus']} CPUs, python {m['python']}, raftkv "
          f"{rep['raftkv_commit']}; load average (1 min) {m['loadavg_start']} at the start (waited "
          f"{m['waited_s']:.0f} s for < {o['max_load']}), {m.get('loadavg_end', '-')} at the end")
    if rep.get("raftkv_uncommitted"):
        print(f"  raftkv had uncommitted changes: {', '.join(rep['raftkv_uncommitted'])}")
    for system in ("raftkv", "etcd"):
        rows = rep.get(f"keepalive_{system}")
        if rep.get(f"keepalive_{system}_skipped"):
            print(f"\nKeep-alive cost, {system}: skipped ({rep[f'keepalive_{system}_skipped']})")
        if not rows:
            continue
        how = ("raftkv.client.Client, one LeaseKeepAlive stream each, all ids due per request" if system == "raftkv"
               else "clientv3's way: one LeaseKeepAlive stream each, one message per lease, every 500 ms the due ones")
        version = f" {rep.get('etcd_version', '')}" if system == "etcd" else ""
        print(f"\nKeep-alive cost, {system}{version}: "
              f"{o['leases']} leases of {o['ttl']} s from {o['holder_clients']} clients ({how}), windows of "
              f"{o['window']:g} s, idle and with leases interleaved; CPU from /proc/<pid>/stat")
        print(f"{'row':>4}{'leases':>7}{'leader':>7}{'leader cores':>13}{'followers':>10}{'holders':>8}"
              f"{'renewals':>9}{'renew/s':>8}{'requests':>9}{'ids/req':>8}{'rounds':>7}{'expired':>8}{'lost':>5}"
              f"{'busy':>6}{'other':>6}{'load':>6}")
        for i, r in enumerate(rows):
            ipr = r["renewals"] / r["requests"] if r["requests"] else None
            print(f"{i + 1:>4}{r['leases']:>7}{r['leader']:>7}{r['leader_cores']:>13.3f}{r['followers_cores']:>10.3f}"
                  f"{r['holders_cores']:>8.3f}{r['renewals']:>9}{r['renewals'] / r['window_s']:>8.0f}"
                  f"{r['requests']:>9}{_f(ipr, 1):>8}{r.get('keep_alive_rounds', '-')!s:>7}"
                  f"{r.get('leases_expired', '-')!s:>8}{sum(r['lost'].values()):>5}{r['machine_busy']:>6.2f}"
                  f"{r['other_cores']:>6.2f}{r['loadavg_start']:>6.2f}" + (f"  {r['note']}" if r.get("note") else ""))
        s = rep.get(f"keepalive_{system}_summary") or {}
        per = ", ".join(_f(p["us_per_renewal"], 1) for p in s.get("pairs", []))
        print(f"  marginal leader CPU {_f(s.get('marginal_leader_cores'), 3)} cores (idle "
              f"{_f(s.get('idle_leader_cores'), 3)}) for {_f(s.get('renewals_per_s'), 0)} renewals/s in "
              f"{_f(s.get('requests_per_s'), 1)} requests/s: {_f(s.get('us_per_renewal'), 1)} µs per renewal "
              f"(pairs: {per}), {_f(s.get('us_per_request'), 0)} µs per keep-alive request; whole cluster "
              f"{_f(s.get('cluster_us_per_renewal'), 1)} µs per renewal; lease holders (client side) "
              f"{_f(s.get('holders_us_per_renewal'), 1)} µs per renewal")
        for r in rows:
            for k, v in r["lost"].items():
                print(f"  row {rows.index(r) + 1}: {v} leases lost: {k}")
    thr = rep.get("throughput")
    if thr:
        print(f"\nPut throughput with {o['leases']} leases kept alive vs none: {o['put_clients']} put clients "
              f"(bench.loadgen, raw RPCs), {o['put_duration']:g} s after {o['put_warmup']:g} s warm-up, one cluster, "
              f"rows interleaved")
        print(f"{'row':>4}{'leases':>7}{'puts/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}{'srv cores':>10}"
              f"{'srv CPU ms/put':>15}{'renew/s':>8}{'lost':>5}{'loadgen cores':>14}{'holders':>8}{'busy':>6}"
              f"{'other':>6}{'load':>6}")
        for i, r in enumerate(thr):
            if r["status"] != "ok":
                print(f"{i + 1:>4}{r['leases']:>7}  {r['status']}: {r['reason']}")
                continue
            pl = r["put_latency_ms"]
            print(f"{i + 1:>4}{r['leases']:>7}{r['puts_per_s']:>8.0f}{_f(pl['p50']):>8}{_f(pl['p99']):>8}"
                  f"{sum(r['errors'].values()):>7}{r['servers_cores']:>10.2f}{_f(r['server_cpu_ms_per_put'], 3):>15}"
                  f"{r['renewals_per_s']:>8.0f}{sum(r['lost'].values()):>5}{r['loadgen_cores']:>14.2f}"
                  f"{r.get('holders_cores', 0.0):>8.2f}{r['machine_busy']:>6.2f}{r.get('other_cores', 0.0):>6.2f}"
                  f"{r['loadavg_start']:>6.2f}")
        s = rep.get("throughput_summary", {})
        pr = ", ".join(_f(x, 3) for x in s.get("pair_ratios", []))
        print(f"  with/without leases: {_f(s.get('ratio'), 3)} (mean puts/s {_f(s.get('puts_per_s_leases_mean'), 0)}"
              f" / {_f(s.get('puts_per_s_none_mean'), 0)}; per pair: {pr}); server CPU per put "
              f"{_f(s.get('server_cpu_ms_per_put_leases_mean'), 3)} / {_f(s.get('server_cpu_ms_per_put_none_mean'), 3)}"
              f" ms")
    lock = rep.get("lock")
    if lock:
        print(f"\nLock (client.lock, one lock, each contender its own Client; hold {o['lock_hold_ms']:g} ms), and "
              f"single puts one at a time for scale; ms")
        print(f"{'what':<6}{'contenders':>11}{'ops':>6}{'acquire p50':>12}{'p99':>8}{'max':>8}{'release p50':>12}"
              f"{'p99':>8}{'per s':>7}{'overlaps':>9}{'load':>6}")
        for r in lock:
            if r["what"] == "put":
                lat = r["latency_ms"]
                print(f"{'put':<6}{1:>11}{r['ops']:>6}{_f(lat['p50']):>12}{_f(lat['p99']):>8}{_f(lat['max']):>8}"
                      f"{'':>12}{'':>8}{'':>7}{'':>9}{r['loadavg_start']:>6.2f}")
                continue
            ac, rl = r["acquire_ms"], r["release_ms"]
            print(f"{'lock':<6}{r['contenders']:>11}{r['ops']:>6}{_f(ac['p50']):>12}{_f(ac['p99']):>8}"
                  f"{_f(ac['max']):>8}{_f(rl['p50']):>12}{_f(rl['p99']):>8}{r['per_s']:>7.0f}{r['overlaps']:>9}"
                  f"{r['loadavg_start']:>6.2f}")
        print("  (acquire: from asking to holding, the wait for the other contender included; release: the lease's "
              "revoke; overlaps: acquisitions while another contender held the lock, must be 0)")


# -- main ----------------------------------------------------------------------------------------------------------
def uncommitted(path: str) -> list[str]:
    """The files under ``path`` that differ from the commit (``git status --porcelain``): what was measured is not
    exactly ``raftkv_commit`` when there are any."""
    import subprocess

    try:
        r = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", path], capture_output=True,
                           text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def parser() -> argparse.ArgumentParser:
    parts = (__doc__ or "").split("\n\n", 2)
    ap = argparse.ArgumentParser(prog="python -m bench.lease_bench", description="\n\n".join(parts[:2]),
                                 epilog=parts[2] if len(parts) > 2 else None,
                                 formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated: {', '.join(SECTIONS)} (default: all; etcd is skipped without etcd)")
    ap.add_argument("--output", choices=("table", "json"), default="table", help="what to print (default table)")
    ap.add_argument("--json", metavar="FILE", type=Path, help="also write the report as JSON to FILE")
    ap.add_argument("--show", metavar="FILE", type=Path, help="print the table of a JSON report and exit")
    g = ap.add_argument_group("leases (keepalive, etcd, throughput)")
    g.add_argument("--leases", type=int, default=10_000, help="leases kept alive (default 10000)")
    g.add_argument("--ttl", type=int, default=10, help="their TTL in seconds (default 10; shorter: more keep-alives)")
    g.add_argument("--holder-clients", type=int, default=4, help="clients holding them, in one process (default 4)")
    g.add_argument("--grant-concurrency", type=int, default=64, help="grants in flight per client (default 64)")
    g.add_argument("--settle", type=float, default=None,
                   help="seconds between the grants and the window (default TTL/3 + 1: every lease renewed once)")
    g = ap.add_argument_group("keepalive, etcd")
    g.add_argument("--window", type=float, default=20.0, help="measured seconds per window (default 20)")
    g.add_argument("--pairs", type=int, default=2, help="(idle, leases) window pairs (default 2)")
    g = ap.add_argument_group("throughput")
    g.add_argument("--throughput-pairs", type=int, default=2, help="(none, leases) row pairs (default 2)")
    g.add_argument("--put-clients", type=int, default=16, help="concurrent put clients (default 16)")
    g.add_argument("--put-processes", type=int, default=1, help="load generator processes (default 1)")
    g.add_argument("--put-duration", type=float, default=10.0, help="measured seconds per row (default 10)")
    g.add_argument("--put-warmup", type=float, default=2.0, help="warm-up seconds per row (default 2)")
    g.add_argument("--put-keys", type=int, default=1000, help="keyspace of the puts (default 1000)")
    g.add_argument("--value-size", type=int, default=256, help="bytes per put (default 256)")
    g = ap.add_argument_group("lock")
    g.add_argument("--lock-acquisitions", type=int, default=200, help="acquisitions per row (default 200)")
    g.add_argument("--lock-contenders", type=_ints, default=[1, 2], help="contender counts (default 1,2)")
    g.add_argument("--lock-hold-ms", type=float, default=0.0, help="how long each holds the lock (default 0)")
    add_machine_options(ap, "each window and row", max_wait_s=900.0)
    # The lease holders' own options.
    ap.add_argument("--child", choices=("holders",), help=argparse.SUPPRESS)
    for opt, kind in (("--system", str), ("--endpoints", str), ("--clients", int), ("--count", int),
                      ("--concurrency", int)):
        ap.add_argument(opt, type=kind, help=argparse.SUPPRESS)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    a = parser().parse_args(argv)
    if a.child:
        import uvloop

        uvloop.run(holders_child(a))
        return 0
    if a.show:
        print_report(json.loads(a.show.read_text()))
        return 0
    sections = [s.strip() for s in a.sections.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        print(f"error: unknown section: {', '.join(bad)} (choose from {', '.join(SECTIONS)})", file=sys.stderr)
        return 2
    if a.leases < 1 or a.ttl < 1 or a.holder_clients < 1 or a.pairs < 1 or a.window <= 0:
        print("error: --leases, --ttl, --holder-clients, --pairs and --window must be positive", file=sys.stderr)
        return 2

    def body(run: LeaseRun) -> None:
        run.report["raftkv_uncommitted"] = uncommitted("raftkv")
        if "keepalive" in sections:
            keepalive_section(run, "raftkv")
        if "etcd" in sections:
            etcd_section(run)
        if "throughput" in sections:
            throughput_section(run)
        if "lock" in sections:
            lock_section(run)

    return run_session(a, SCHEMA, "raftkv-lease-bench-", LeaseRun, body, print_report,
                       hidden=("child", "system", "endpoints", "clients", "count", "concurrency", "show"))


if __name__ == "__main__":
    raise SystemExit(main())
