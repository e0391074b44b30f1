"""The physical limit: how long a flush to the data disk takes, alone and with three writers at once (three nodes on
one machine share its disk), and what a durable LMDB write of the node's kind costs.

    python bench/fsync_bench.py [--dir DIR] [--n 2000]

Rows:
* ``write+fdatasync``: a 4 KiB pwrite then fdatasync of one file, ``--n`` times (p50 / p99), by 1 and 3 processes;
* ``LmdbLogStore.write``: a durable write of 16 log entries of 130 bytes and a hard state (what a follower does per
  append), which LMDB makes two fdatasyncs (its data pages, then its meta page), with its CPU time, by 1 and 3
  processes.
Prints figures only (no assertions). Use ``--dir`` on the file system the nodes keep their data on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import raftkv  # noqa: F401
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]


def fdatasync_run(d: Path, n: int) -> dict[str, float]:
    fd = os.open(d / f"fsync-{os.getpid()}", os.O_CREAT | os.O_WRONLY, 0o644)
    buf = b"x" * 4096
    lat = []
    try:
        for i in range(n):
            t = time.perf_counter()
            os.pwrite(fd, buf, (i % 256) * 4096)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
    finally:
        os.close(fd)
    return {"p50_ms": pct(lat, 0.5) * 1e3, "p99_ms": pct(lat, 0.99) * 1e3}


def lmdb_run(d: Path, n: int) -> dict[str, float]:
    from raftkv.raft.types import Entry, HardState
    from raftkv.storage import LmdbLogStore

    store = LmdbLogStore(tempfile.mkdtemp(dir=d), sync=True)
    lat, cpu, index = [], 0.0, 0
    try:
        for _ in range(n):
            ents = [Entry(1, index + k + 1, 0, b"x" * 130) for k in range(16)]
            index += 16
            t, c = time.perf_counter(), time.thread_time()
            store.write(entries=ents, hard_state=HardState(1, 1, index - 16), sync=True)
            lat.append(time.perf_counter() - t)
            cpu += time.thread_time() - c
    finally:
        store.close()
    return {"p50_ms": pct(lat, 0.5) * 1e3, "p99_ms": pct(lat, 0.99) * 1e3, "cpu_us": cpu / n * 1e6}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=None, help="directory on the disk to measure (default: a temporary one)")
    ap.add_argument("--n", type=int, default=2000, help="flushes per process (default 2000)")
    ap.add_argument("--worker", choices=("fdatasync", "lmdb"), default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        fn = fdatasync_run if a.worker == "fdatasync" else lmdb_run
        print(json.dumps(fn(Path(a.dir), a.n)))
        return 0
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        print(f"data directory {d}; {a.n} flushes per process")
        for kind, label in (("fdatasync", "write+fdatasync (4 KiB)"), ("lmdb", "LmdbLogStore.write (16 entries)")):
            for procs in (1, 3):
                ps = [subprocess.Popen([sys.executable, __file__, "--worker", kind, "--dir", d, "--n", str(a.n)],
                                       stdout=subprocess.PIPE, text=True) for _ in range(procs)]
                outs = [json.loads(p.communicate()[0]) for p in ps]
                p50 = max(o["p50_ms"] for o in outs)
                p99 = max(o["p99_ms"] for o in outs)
                extra = f", CPU {max(o['cpu_us'] for o in outs):.0f} µs" if kind == "lmdb" else ""
                print(f"  {label:34s} {procs} process{'es' if procs > 1 else '  '}: p50 {p50:.2f} ms, "
                      f"p99 {p99:.2f} ms{extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
