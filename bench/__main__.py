"""``python -m bench``: run raftkv (and etcd, side by side) under load and report throughput and latency.

    python -m bench                                     # put, 16 clients, 10 s, raftkv and etcd (if installed)
    python -m bench --workload put,get-linearizable --clients 1,16,64,256 --duration 30 --processes 2
    python -m bench --system raftkv --endpoints 10.0.0.1:2379,10.0.0.2:2379 --workload get-stale

See bench/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType

from rich.console import Console

from .harness import SYSTEMS, BenchError, Options, print_report, run
from .loadgen import CLIENT_MODES, WORKLOADS, workload_reads

RESULTS_DIR = Path(__file__).resolve().parent / "results"
EPILOG = """\
workloads:
  put                 every operation writes a random key of the keyspace
  get-linearizable    linearizable reads (raftkv: read index; etcd: a linearizable Range)
  get-lease           raftkv's leader-lease reads (etcd has none: n/a)
  get-stale           reads served from a node's local state (etcd: a serializable Range)
  mixed-90-10         90 % get-linearizable, 10 % put;  mixed-50-50: half and half
  incr                atomic increments of counters (etcd has none: n/a)
  txn                 one compare + one put per transaction (etcd: Txn)
  cas                 each client puts its own key if its version is the one it last wrote

Read workloads first preload every key of --keys. Every row runs against a fresh cluster, torn down afterwards.
Unless --no-ceiling, a short run against a no-op gRPC server first measures what the load generator can push.
Results: a table on the terminal, and results.json plus PNG plots in --out.
"""


def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a comma-separated list, got {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one number")
    return vals


def _workloads(text: str) -> tuple[str, ...]:
    names = tuple(w.strip() for w in text.split(",") if w.strip())
    if names == ("all",):
        return tuple(WORKLOADS)
    bad = [w for w in names if w not in WORKLOADS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown workload {', '.join(bad) or text!r}: choose from {', '.join(WORKLOADS)} (or all)"
        )
    return names


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="raftkv bench" if Path(sys.argv[0]).name == "raftkv" else "python -m bench",
        description="Benchmark raftkv against etcd 3.4: fresh local clusters, a load generator in separate "
        "processes, a table of throughput and latency percentiles, results.json and plots.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("what to run")
    g.add_argument("--system", choices=[*SYSTEMS, "both", "etcd-api"], default=None,
                   help="raftkv, etcd, both, noop (the load generator's ceiling alone), raftkv-etcd (raftkv through "
                   "its etcd API, by etcd's load target), or etcd-api (raftkv-etcd and etcd: the same client on the "
                   "same API); default: both if etcd is installed, else raftkv")
    g.add_argument("--nodes", type=int, choices=(3, 5), default=3, help="cluster size (default 3)")
    g.add_argument("--endpoints", default=None,
                   help="HOST:PORT,... of an existing cluster of --system (raftkv or etcd) instead of starting "
                   "fresh ones; preloading writes bench/* keys into it")
    g.add_argument("--workload", type=_workloads, default=("put",), metavar="NAME[,NAME...]",
                   help="one or more workloads (see below; 'all' for every one); default put")
    g.add_argument("--clients", type=_ints, default=(16,), metavar="N[,N...]",
                   help="concurrent in-flight requests, 1..256; a list sweeps (1,16,64,256); default 16")
    g.add_argument("--value-size", type=int, default=256, help="bytes per value, 16..65536 (default 256)")
    g.add_argument("--keys", type=int, default=10_000, help="keyspace size, 1000..1000000 (default 10000)")
    g.add_argument("--duration", type=float, default=10.0, help="measured seconds per run (default 10)")
    g.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring (default 2)")
    g.add_argument("--processes", type=int, default=1,
                   help="load generator processes; the clients are split across them (default 1)")
    g.add_argument("--client-mode", choices=CLIENT_MODES, default="rpc",
                   help="raftkv: rpc = one gRPC call per operation with raw stubs (comparable with etcd's); "
                   "library = through raftkv.client.Client (default rpc)")
    g.add_argument("--timeout", type=float, default=5.0, help="per-operation deadline in seconds (default 5)")
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, default=None,
                   help="directory for results.json and the plots (default bench/results/<timestamp>/)")
    o.add_argument("--data-dir", type=Path, default=None,
                   help="where the clusters keep their data (default: the system's temp directory); put it on the "
                   "disk you want to measure: fsync is what durable writes cost")
    o.add_argument("--no-ceiling", action="store_true", help="skip the no-op server run (the loadgen ceiling)")
    o.add_argument("--no-plots", action="store_true", help="write no PNGs")
    return p


def options(argv: Sequence[str] | None, console: Console) -> Options:
    p = parser()
    a = p.parse_args(argv)
    notes: list[str] = []
    from .etcd import find_etcd, missing_message

    have_etcd = find_etcd() is not None
    system = a.system
    if system is None:
        if a.endpoints:
            p.error("--endpoints needs --system raftkv or --system etcd")
        system = "both" if have_etcd else "raftkv"
        if not have_etcd:
            notes.append("etcd is not installed, so only raftkv runs: bench/etcd.sh installs it (Debian's "
                         "etcd-server, etcd 3.4)")
    systems = ("raftkv", "etcd") if system == "both" else ("raftkv-etcd", "etcd") if system == "etcd-api" else (
        system,)
    if "etcd" in systems and not have_etcd and not a.endpoints:
        raise BenchError(missing_message())
    if a.endpoints and len(systems) != 1:
        p.error("--endpoints targets one existing cluster: choose --system raftkv or --system etcd")
    endpoints = tuple(e.strip() for e in (a.endpoints or "").split(",") if e.strip())
    for e in endpoints:
        host, sep, port = e.rpartition(":")
        if not sep or not host or not port.isdigit():
            p.error(f"bad endpoint {e!r}: expected HOST:PORT")
    for c in a.clients:
        if not 1 <= c <= 256:
            p.error(f"--clients must be between 1 and 256, got {c}")
    if not 16 <= a.value_size <= 65536:
        p.error(f"--value-size must be between 16 and 65536, got {a.value_size}")
    if not 1000 <= a.keys <= 1_000_000:
        p.error(f"--keys must be between 1000 and 1000000, got {a.keys}")
    if a.duration <= 0 or a.warmup < 0:
        p.error("--duration must be positive and --warmup not negative")
    if not 1 <= a.processes <= 64:
        p.error(f"--processes must be between 1 and 64, got {a.processes}")
    if a.timeout <= 0:
        p.error("--timeout must be positive")
    if a.data_dir is not None and not a.data_dir.is_dir():
        p.error(f"--data-dir {a.data_dir} is not a directory")
    preload_bytes = a.keys * a.value_size
    if any(workload_reads(w) for w in a.workload) and preload_bytes > 2 << 30:
        notes.append(f"preloading {a.keys:,} keys of {a.value_size} B writes {preload_bytes / 2**30:.1f} GiB per "
                     "cluster and row")
    out = a.out or RESULTS_DIR / datetime.now().strftime("%Y%m%d-%H%M%S")
    if a.out is None:  # results are measurements, not sources: keep the default directory out of git
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        ignore = RESULTS_DIR / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# written by python -m bench: benchmark results are not committed\n*\n")
    return Options(
        systems=systems, workloads=a.workload, clients=a.clients, nodes=a.nodes, endpoints=endpoints,
        value_size=a.value_size, keys=a.keys, duration_s=a.duration, warmup_s=a.warmup, processes=a.processes,
        client_mode=a.client_mode, timeout_s=a.timeout, out=out, data_dir=a.data_dir, ceiling=not a.no_ceiling,
        plots=not a.no_plots, notes=tuple(notes),
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """The harness's command line; returns the exit code (0 ok, 1 failure, 2 usage, 130 interrupted)."""
    console = Console(stderr=True)
    out_console = Console() if sys.stdout.isatty() else Console(width=200)  # a file gets the whole table
    # SIGTERM (and SIGHUP, unless ignored, as under nohup) stop the run like Ctrl-C: every child by its pid.
    signal.signal(signal.SIGTERM, _interrupt)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, _interrupt)
    try:
        opts = options(argv, console)
        report = run(opts, console)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: stopped every process this run started and removed its data", file=sys.stderr)
        return 130
    except Exception as e:  # one line for the user; the traceback on request
        if os.environ.get("BENCH_DEBUG") or os.environ.get("RAFTKV_DEBUG"):
            raise
        print(f"error: unexpected {type(e).__name__}: {e} (BENCH_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    print_report(report, out_console)
    out_console.print(f"results: {opts.out / 'results.json'}" + (
        f" and {len(report.get('plots', []))} plots" if report.get("plots") else ""), highlight=False)
    failed = [r for r in report["runs"] if r.get("status") == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
