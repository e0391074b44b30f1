"""Watch delivery through etcd's v3 API, raftkv beside etcd: the same client code on the same API for both.

    python -m bench.watch_etcd_bench                              # N = 1, 100, 1000; about 2-3 minutes
    python -m bench.watch_etcd_bench --watchers 1,100 --duration 5
    python -m bench.watch_etcd_bench --output json > watch-etcd.json

For each N of ``--watchers`` and each system of ``--systems`` (rows interleaved: raftkv N=1, etcd N=1, raftkv
N=100, ...), on a fresh 3-member local cluster (raftkv: ``raftkv.localcluster.up``, fsync on, its etcd API on each
node's client port; etcd: ``bench/etcd.py``'s ``EtcdCluster``, etcd's defaults), free ports, every process stopped
by its pid and every directory removed, also on an error or Ctrl-C:

* N watchers of one prefix, each its own ``etcdserverpb.Watch`` bidi stream (one ``WatchCreateRequest`` with
  ``key``/``range_end``), spread round robin over the 3 members (watcher g on member g % 3), in ``--processes``
  watcher processes (one asyncio loop each, one connection per member per process);
* one writer process putting ``--rate`` x ``--duration`` keys under the prefix, one ``KV.Put`` at a time to
  member ``--writer-member``, on a schedule of ``--rate`` a second (when puts are slower it falls behind and
  takes longer: ``puts/s`` is what it achieved).

Client code for both systems: raftkv's generated stubs of etcd's ``rpc.proto``
(``raftkv.proto.etcd.api.etcdserverpb``). Times are CLOCK_MONOTONIC (one clock for every process on Linux):
``ack->event`` is the time a watcher process received an event minus the time the writer's Put returned for the
put of that revision, over every (put, watcher) pair; it can be negative (an event delivered before the writer saw
its ack). ``events/s``: the events delivered over the time from the first put sent to the last event received.
``missed``: (put, watcher) pairs that never arrived within ``--settle`` seconds after the last put -- every watcher
must see every acknowledged put exactly once; ``dup``: repeated pairs; ``unknown``: events of revisions the writer
has no ack for (a Put that failed after committing). A watch the server cancels is not reopened (counted in
``cancels``, its rest as missed).

Before measuring it waits for the 1-minute load average to fall below ``--max-load``, and before each row while
processes that are not this benchmark's use more than ``--max-other`` cores (``bench/watch_bench.py``'s gates);
every row reports ``load`` (1-minute load average at its start), ``busy`` (share of all CPUs busy during the put
window) and ``other`` (cores used meanwhile by other processes). Prints figures only; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout: `bench` and (without pip install -e) `raftkv`
    sys.path.insert(0, str(REPO))

from bench.harness import machine_cpu_ticks  # noqa: E402
from bench.watch_bench import (  # noqa: E402
    CHILD_READY_TIMEOUT_S,
    BenchError,
    Child,
    Run,
    _emit,
    _f,
    _ints,
    add_machine_options,
    cluster,
    cores,
    cpu_of,
    loadavg,
    other_cores,
    read_array,
    run_session,
    say,
    stdin_queue,
    summary_ms,
)

SCHEMA = "raftkv-watch-etcd-bench/1"
SYSTEMS = ("raftkv", "etcd")
_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.use_local_subchannel_pool", 1),  # each channel its own connection
]


def prefix_end(key: bytes) -> bytes:
    """etcd's range_end of a prefix: the key with its last byte below 0xff incremented, the rest dropped."""
    b = bytearray(key)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\0"


# -- child processes -------------------------------------------------------------------------------------------
async def watchers_child(a: argparse.Namespace) -> None:
    """``--count`` watches of the prefix ``--prefix``, watcher g = ``--base`` + i on endpoint g % len(endpoints).
    Prints ``ready`` once all are created; on stdin ``count`` (events so far) and ``stop`` (writes (g, revision,
    arrival ns) triples to ``--out``, prints the totals)."""
    import grpc
    import grpc.aio

    from raftkv.proto.etcd.api.etcdserverpb import rpc_pb2 as pb
    from raftkv.proto.etcd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc

    eps = a.endpoints.split(",")
    channels = [grpc.aio.insecure_channel(ep, options=_CHANNEL_OPTIONS) for ep in eps]
    stubs = [pb_grpc.WatchStub(ch) for ch in channels]  # type: ignore[no-untyped-call]
    key = a.prefix.encode()
    create = pb.WatchRequest(create_request=pb.WatchCreateRequest(key=key, range_end=prefix_end(key)))
    rec = array("q")
    st: dict[str, Any] = {"events": 0, "responses": 0, "cancels": {}, "errors": {}, "open_retries": 0}
    opened = 0
    all_open = asyncio.Event()
    sem = asyncio.Semaphore(a.open_concurrency if a.open_concurrency > 0 else a.count)
    stopping = False
    t_open = time.monotonic()

    def count(kind: str, what: str) -> None:
        st[kind][what] = st[kind].get(what, 0) + 1

    async def one(i: int) -> None:
        nonlocal opened
        g = a.base + i
        stub = stubs[g % len(stubs)]
        created = False
        await sem.acquire()
        while not stopping:
            call = stub.Watch()
            try:
                await call.write(create)
                while True:
                    resp = await call.read()
                    if resp is grpc.aio.EOF:
                        count("cancels", "the stream ended")
                        return
                    if resp.canceled:
                        if not created:
                            raise RuntimeError(resp.cancel_reason or "refused")
                        count("cancels", resp.cancel_reason or "(no reason)")
                        return
                    if resp.created:
                        created = True
                        sem.release()
                        opened += 1
                        if opened == a.count:
                            all_open.set()
                        continue
                    evs = resp.events
                    if evs:
                        now = time.monotonic_ns()
                        for ev in evs:
                            rec.extend((g, ev.kv.mod_revision, now))
                        st["events"] += len(evs)
                        st["responses"] += 1
            except (grpc.aio.AioRpcError, RuntimeError) as e:
                if stopping:
                    return
                if created:
                    count("errors", f"{e.code().name}: {e.details()}" if isinstance(e, grpc.aio.AioRpcError)
                          else str(e))
                    return
                st["open_retries"] += 1
            finally:
                call.cancel()
            await asyncio.sleep(0.05)

    async def announce() -> None:
        await all_open.wait()
        _emit({"msg": "ready", "open_s": round(time.monotonic() - t_open, 3), "open_retries": st["open_retries"]})

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
        rec.tofile(f)
    _emit({"msg": "done", "opened": opened, **st})


async def writer_child(a: argparse.Namespace) -> None:
    """After ``go`` on stdin: ``--rate`` puts a second (one at a time, on a fixed schedule) of keys under
    ``--prefix`` to ``--endpoints`` for ``--duration`` s. Writes (revision, sent ns, acknowledged ns) triples to
    ``--out`` and prints the totals."""
    import grpc.aio

    from raftkv.proto.etcd.api.etcdserverpb import rpc_pb2 as pb
    from raftkv.proto.etcd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc

    ch = grpc.aio.insecure_channel(a.endpoints, options=_CHANNEL_OPTIONS)
    stub = pb_grpc.KVStub(ch)  # type: ignore[no-untyped-call]
    value = os.urandom(a.value_size)
    key = a.prefix.encode()
    await stub.Put(pb.PutRequest(key=b"watch-etcd-bench/probe", value=value), timeout=10)
    cmds = stdin_queue()
    _emit({"msg": "ready"})
    while (cmd := await cmds.get()) != "go":
        if cmd == "stop":
            await ch.close()
            return
    rec = array("q")
    errors: dict[str, int] = {}
    total = max(1, round(a.rate * a.duration))
    t_start = time.monotonic()
    late = 0
    for j in range(total):
        wait = t_start + j / a.rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -0.005:
            late += 1
        t0 = time.monotonic_ns()
        try:
            resp = await stub.Put(pb.PutRequest(key=key + b"%08d" % j, value=value), timeout=10)
        except grpc.aio.AioRpcError as e:
            k = f"{e.code().name}: {e.details()}"
            errors[k] = errors.get(k, 0) + 1
            continue
        t1 = time.monotonic_ns()
        rec.extend((resp.header.revision, t0, t1))
    elapsed = time.monotonic() - t_start
    with open(a.out, "wb") as f:
        rec.tofile(f)
    _emit({"msg": "done", "puts": len(rec) // 3, "errors": errors, "elapsed_s": round(elapsed, 3), "late": late})
    await cmds.get()  # stay until told, so that the parent reads our CPU time first
    await ch.close()


def _child_cmd(role: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "bench.watch_etcd_bench", "--child", role, *args]


# -- clusters --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def system_cluster(run: Run, system: str, name: str) -> Iterator[tuple[list[str], dict[str, int], str]]:
    """A fresh 3-member cluster: (client endpoints in member order, server pids by name, a description)."""
    if system == "raftkv":
        with cluster(run.root, name) as c:
            ids = sorted(c.client_addrs)
            yield ([c.client_addrs[k] for k in ids], {f"node{k}": c.pids[k] for k in ids if k in c.pids},
                   f"leader node{c.leader}")
        return
    from bench.etcd import EtcdCluster, EtcdError

    try:
        ec = EtcdCluster.up(run.root / name, 3, progress=lambda m: None)
    except EtcdError as e:
        raise BenchError(str(e)) from None
    try:
        run.report["machine"]["etcd_version"] = ec.version
        yield ec.endpoints, ec.server_pids(), f"etcd {ec.version}"
    finally:
        ec.down(purge=True)


# -- a row -----------------------------------------------------------------------------------------------------
def start_watchers(run: Run, endpoints: list[str], prefix: str, n: int) -> list[Child]:
    a = run.args
    procs = max(1, min(a.processes, n))
    share = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    out: list[Child] = []
    base = 0
    for i, k in enumerate(share):
        name = run.name(f"watchers{i}")
        cmd = _child_cmd("watchers", "--endpoints", ",".join(endpoints), "--prefix", prefix, "--count", str(k),
                         "--base", str(base), "--open-concurrency", str(a.open_concurrency),
                         "--out", str(run.root / f"{name}.bin"))
        out.append(Child(cmd, name, run.root, run.children))
        base += k
    for ch in out:
        ch.ready = ch.expect(CHILD_READY_TIMEOUT_S)
    return out


def merge(results: Sequence[dict[str, Any]], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in results:
        for k, v in r.get(key, {}).items():
            out[k] = out.get(k, 0) + v
    return out


def row(run: Run, system: str, n: int, i: int) -> dict[str, Any]:
    a = run.args
    prefix = f"wb{i}/"
    with system_cluster(run, system, f"{system}{i}") as (eps, spids, desc):
        gate = run.quiet(spids)
        la = loadavg()
        wchs = start_watchers(run, eps, prefix, n)
        wname = run.name("writer")
        wout = run.root / f"{wname}.bin"
        wep = eps[(a.writer_member - 1) % len(eps)]
        writer = Child(_child_cmd("writer", "--endpoints", wep, "--prefix", prefix, "--rate", str(a.rate),
                                  "--duration", str(a.duration), "--value-size", str(a.value_size),
                                  "--out", str(wout)), wname, run.root, run.children)
        writer.expect(60.0)
        pids = dict(spids)
        pids.update({ch.name: ch.pid for ch in wchs})
        pids["writer"] = writer.pid
        cpu0, m0, t0 = cpu_of(pids), machine_cpu_ticks(), time.monotonic()
        writer.send("go")
        wres = writer.expect(a.duration + 60.0)
        window = time.monotonic() - t0
        cpu1, m1 = cpu_of(pids), machine_cpu_ticks()
        writer.send("exit")
        run.stop(writer)
        expected = int(wres["puts"]) * n
        settle_until = time.monotonic() + a.settle
        while True:
            got = 0
            for ch in wchs:
                ch.send("count")
                got += int(ch.expect(30.0)["events"])
            if got >= expected or time.monotonic() >= settle_until:
                break
            time.sleep(0.2)
        for ch in wchs:
            ch.send("stop")
        wresults = [ch.expect(60.0) for ch in wchs]
        for ch in wchs:
            run.stop(ch)
    rec = read_array(wout)
    acks = {rec[j]: rec[j + 2] for j in range(0, len(rec), 3)}
    put_lat = [rec[j + 2] - rec[j + 1] for j in range(0, len(rec), 3)]
    first_sent = min((rec[j + 1] for j in range(0, len(rec), 3)), default=0)
    last_ack = max((rec[j + 2] for j in range(0, len(rec), 3)), default=0)
    lat: list[int] = []
    seen: set[int] = set()
    dup = unknown = 0
    last_recv = 0
    for ch in wchs:
        t3 = read_array(run.root / f"{ch.name}.bin")
        for j in range(0, len(t3), 3):
            g, rev, t = t3[j], t3[j + 1], t3[j + 2]
            ack = acks.get(rev)
            if ack is None:
                unknown += 1
                continue
            pair = (g << 40) | rev
            if pair in seen:
                dup += 1
                continue
            seen.add(pair)
            lat.append(t - ack)
            last_recv = max(last_recv, t)
    delivered = len(lat) + dup
    span = (last_recv - first_sent) / 1e9 if lat else 0.0
    cpu = cores(cpu0, cpu1, window)
    return {
        "system": system, "watchers": n, "cluster": desc, "processes": len(wchs), "writer_endpoint": wep,
        "loadavg_start": la, **gate,
        "open_s": max(float(ch.ready.get("open_s", 0.0)) for ch in wchs),
        "open_retries": sum(int(ch.ready.get("open_retries", 0)) for ch in wchs),
        "puts": int(wres["puts"]), "put_errors": wres["errors"], "late_puts": wres.get("late", 0),
        "puts_per_s": (len(put_lat) - 1) / ((last_ack - first_sent) / 1e9) if len(put_lat) > 1 else 0.0,
        "put_latency_ms": summary_ms(put_lat),
        "expected_events": expected, "delivered_events": delivered,
        "missed": expected - len(lat), "duplicates": dup, "unknown_events": unknown,
        "events_per_s": delivered / span if span > 0 else 0.0,
        "responses": sum(int(r["responses"]) for r in wresults),
        "ack_to_event_ms": summary_ms(lat),
        "cancels": merge(wresults, "cancels"), "stream_errors": merge(wresults, "errors"),
        "window_s": round(window, 3), "cpu_cores": cpu,
        "servers_cores": round(sum(cpu.get(k, 0.0) for k in spids), 3),
        "watcher_procs_cores": [cpu.get(ch.name, 0.0) for ch in wchs],
        "writer_cores": cpu.get("writer", 0.0),
        "machine_busy": round((m1[0] - m0[0]) / max(1, m1[1] - m0[1]), 3),
        "other_cores": other_cores(m0, m1, cpu),
    }


def body(run: Run) -> None:
    a = run.args
    rows: list[dict[str, Any]] = run.report.setdefault("rows", [])
    plan = [(s, n) for n in a.watchers for s in a.systems]
    say(f"{len(plan)} rows: {', '.join(f'{s} N={n}' for s, n in plan)}; {a.rate:g} puts/s for {a.duration:g} s each")
    for i, (system, n) in enumerate(plan):
        say(f"row {i + 1}/{len(plan)}: {system}, {n} watcher(s): starting a fresh cluster")
        rows.append(row(run, system, n, i))
        r = rows[-1]
        ae = r["ack_to_event_ms"]
        say(f"row {i + 1}/{len(plan)}: {system} N={n}: {r['puts_per_s']:.1f} puts/s, {r['events_per_s']:.0f} "
            f"events/s, ack->event p50 {_f(ae['p50'])} p99 {_f(ae['p99'])} max {_f(ae['max'])} ms, missed "
            f"{r['missed']}, dup {r['duplicates']}, cancels {sum(r['cancels'].values())}, load {r['loadavg_start']}")


# -- the report ------------------------------------------------------------------------------------------------
def print_report(rep: dict[str, Any]) -> None:
    m, o = rep["machine"], rep["options"]
    print(f"watch through etcd's v3 API, raftkv {rep['raftkv_commit']} vs etcd {m.get('etcd_version', '?')}, "
          f"{rep['created']}, {m['cpus']} CPUs, python {m['python']}; load average (1 min) {m['loadavg_start']} at "
          f"the start (waited {m['waited_s']:.0f} s for < {o['max_load']}), {m.get('loadavg_end', '-')} at the end")
    print(f"3 members each, N watchers of one prefix (one Watch stream each, round robin over the members, in "
          f"{o['processes']} process(es)), 1 writer at {o['rate']:g} puts/s ({o['value_size']} B) to member "
          f"{o['writer_member']} for {o['duration']:g} s; ack->event in ms")
    hdr = (f"{'system':<8}{'N':>6}{'puts/s':>8}{'put p50':>8}{'events/s':>10}{'ack->ev p50':>12}{'p99':>8}"
           f"{'max':>8}{'missed':>8}{'dup':>5}{'cancels':>8}{'srv cores':>10}{'watcher cores':>14}{'busy':>6}"
           f"{'other':>6}{'load':>6}")
    print(hdr)
    for r in rep.get("rows", []):
        ae = r["ack_to_event_ms"]
        wp = "/".join(f"{x:.2f}" for x in r["watcher_procs_cores"])
        print(f"{r['system']:<8}{r['watchers']:>6}{r['puts_per_s']:>8.1f}{_f(r['put_latency_ms']['p50']):>8}"
              f"{r['events_per_s']:>10.0f}{_f(ae['p50']):>12}{_f(ae['p99']):>8}{_f(ae['max']):>8}{r['missed']:>8}"
              f"{r['duplicates']:>5}{sum(r['cancels'].values()):>8}{r['servers_cores']:>10.2f}{wp:>14}"
              f"{r['machine_busy']:>6.2f}{r['other_cores']:>6.2f}{r['loadavg_start']:>6.2f}")
    for what in ("cancels", "stream_errors", "put_errors"):
        for k, v in merge(rep.get("rows", []), what).items():
            print(f"  {what.replace('_', ' ')} {v} x: {k}")
    print("  (srv cores: the 3 servers' CPU during the put window; watcher cores: each watcher process's; busy: "
          "the machine's CPUs; other: cores used by processes not this benchmark's; load: at the row's start)")


# -- main ------------------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    parts = (__doc__ or "").split("\n\n", 2)
    ap = argparse.ArgumentParser(prog="python -m bench.watch_etcd_bench", description="\n\n".join(parts[:2]),
                                 epilog=parts[2] if len(parts) > 2 else None,
                                 formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    ap.add_argument("--systems", default=list(SYSTEMS), type=lambda s: [x for x in s.split(",") if x],
                    help="comma-separated, in row order: raftkv, etcd (default both)")
    ap.add_argument("--watchers", type=_ints, default=[1, 100, 1000], help="watcher counts (default 1,100,1000)")
    ap.add_argument("--rate", type=float, default=50.0, help="puts per second of the writer (default 50)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of puts per row (default 10)")
    ap.add_argument("--value-size", type=int, default=64, help="bytes per put (default 64)")
    ap.add_argument("--writer-member", type=int, default=1, help="the member (1-3) the writer puts to (default 1)")
    ap.add_argument("--processes", type=int, default=2, help="watcher processes per row (default 2)")
    ap.add_argument("--open-concurrency", type=int, default=256,
                    help="watches being opened at once per process (default 256; 0: all at once)")
    ap.add_argument("--settle", type=float, default=10.0,
                    help="after the last put, seconds to wait for events still on their way (default 10)")
    ap.add_argument("--output", choices=("table", "json"), default="table", help="what to print (default table)")
    ap.add_argument("--json", metavar="FILE", type=Path, help="also write the report as JSON to FILE")
    ap.add_argument("--show", metavar="FILE", type=Path, help="print the table of a JSON report and exit")
    add_machine_options(ap, "each row", max_wait_s=600.0)
    ap.add_argument("--child", choices=("watchers", "writer"), help=argparse.SUPPRESS)
    for opt, kind in (("--endpoints", str), ("--prefix", str), ("--count", int), ("--base", int), ("--out", str)):
        ap.add_argument(opt, type=kind, help=argparse.SUPPRESS)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    a = parser().parse_args(argv)
    if a.child:
        import uvloop

        uvloop.run(watchers_child(a) if a.child == "watchers" else writer_child(a))
        return 0
    if a.show:
        print_report(json.loads(a.show.read_text()))
        return 0
    bad = [s for s in a.systems if s not in SYSTEMS]
    if bad or a.rate <= 0 or a.duration <= 0 or not a.watchers or min(a.watchers) < 1 or a.processes < 1:
        print(f"error: bad options (systems: {', '.join(SYSTEMS)}; --rate, --duration, --watchers and --processes "
              f"positive)", file=sys.stderr)
        return 2
    if "etcd" in a.systems:
        from bench.etcd import find_etcd, missing_message

        if find_etcd() is None:
            print(f"error: {missing_message()}", file=sys.stderr)
            return 2
    return run_session(a, SCHEMA, "raftkv-watch-etcd-bench-", Run, body, print_report,
                       hidden=("child", "endpoints", "prefix", "count", "base", "out", "show"))


if __name__ == "__main__":
    raise SystemExit(main())
