"""The history's cost on disk, and the write pauses of compacting it, in the KV state machine alone (no cluster).

    python bench/compaction_bench.py                                  # 200,000 revisions over 10,000 keys
    python bench/compaction_bench.py --revisions 1000000 --keys 100000

It loads ``--revisions`` puts of ``--value-size`` bytes over ``--keys`` keys through ``LmdbLogStore.write(apply=...)``
(``sync=False``, and no fsync at commit: the figures leave the disk out), an entry of ``--batch`` puts per write, as
a node applies them; prints the size of every table per 10^5 revisions; then compacts at the last revision while the
puts go on (each write applies one entry and does one bounded compaction step of ``--budget`` events after it) and
prints the durations before, during and after the compaction (of the apply call, then of the whole write with its
commit), and the sizes after it. Then the same compaction on an idle writer through ``compact_step``, and, for
comparison, the pause of one unbounded step doing the whole compaction at once. Figures only, no assertions.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    import raftkv  # noqa: F401
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raftkv.kv import Compact, KVStateMachine, Put, encode_batch
from raftkv.raft.types import Entry
from raftkv.storage import LmdbLogStore

TABLES = (b"kv", b"history", b"key_history")


class Loader:
    """A state machine in an LMDB store of its own, fed entries of puts one write at a time."""

    def __init__(self, path: str, args: argparse.Namespace, budget: int) -> None:
        self.args = args
        self.store = LmdbLogStore(path, sync=False, map_size=1 << 30)
        self.fsm = KVStateMachine(self.store, compact_budget=budget)
        self.dbs = {name: self.store.open_db(name, dupsort=name == b"key_history", dupfixed=name == b"key_history")
                    for name in TABLES}  # fmt: skip
        self.index = 0
        self.seq = 0
        self.value = os.urandom(args.value_size // 2 + 1).hex().encode()[: args.value_size]

    def write(self, cmds: list[Any]) -> tuple[float, float]:
        """Apply one entry of ``cmds`` in one write (committed, not fsynced): the durations in seconds of the apply
        call and of the whole write."""
        self.index += 1
        entries = [Entry(1, self.index, 0, encode_batch(1, self.index, cmds))]
        return self.transact(lambda txn: self.fsm.apply(txn, entries), applied=self.index)

    def transact(self, apply: Any, applied: int | None = None) -> tuple[float, float]:
        took = 0.0

        def timed(txn: Any) -> object:
            nonlocal took
            t0 = time.perf_counter()
            out = apply(txn)
            took = time.perf_counter() - t0
            return out

        t0 = time.perf_counter()
        self.store.write(apply=timed, applied=applied, sync=False)
        return took, time.perf_counter() - t0

    def puts(self) -> tuple[float, float]:
        keys = self.args.keys
        cmds = []
        for _ in range(self.args.batch):
            self.seq += 1
            cmds.append(Put(0, 0, 0, b"key-%09d" % (self.seq * 7919 % keys), self.value))
        return self.write(cmds)

    def sizes(self) -> dict[str, tuple[int, int]]:
        """Per table: (records, bytes of its pages)."""
        out = {}
        with self.store.read_txn() as txn:
            for name, db in self.dbs.items():
                st = txn.stat(db)
                pages = st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
                out[name.decode()] = (st["entries"], pages * st["psize"])
        return out

    def file_bytes(self) -> tuple[int, int]:
        """The LMDB data file: its size, and the pages in use up to its last one (freed pages are reused, not
        given back)."""
        path = Path(self.store.path) / "data.mdb"
        info = self.store.env.info()
        return path.stat().st_size, (info["last_pgno"] + 1) * self.store.env.stat()["psize"]

    def close(self) -> None:
        self.store.close()


def ms(s: float) -> str:
    return f"{s * 1e3:8.2f} ms"


def summary(name: str, durations: list[tuple[float, float]]) -> None:
    """The apply calls' durations, then the writes' (apply call and commit)."""
    if not durations:
        print(f"  {name:<40} (none)")
        return
    for i, what in enumerate(("apply call", "write")):
        d = sorted(x[i] for x in durations)
        p50, p99 = d[len(d) // 2], d[min(len(d) - 1, int(len(d) * 0.99))]
        label = name if i == 0 else ""
        print(f"  {label:<40} {len(d):>6} x {what:<10}  p50 {ms(p50)}   p99 {ms(p99)}   max {ms(d[-1])}")


def print_sizes(title: str, loader: Loader, revisions: int) -> None:
    print(f"{title}:")
    per = 100_000 / max(1, revisions)
    for name, (records, size) in loader.sizes().items():
        print(f"  {name:<12} {records:>10,} records {size / 2**20:9.2f} MiB   ({size * per / 2**20:8.2f} MiB per 10^5 "
              f"revisions, {size / max(1, records):6.1f} B per record)")
    fsize, used = loader.file_bytes()
    print(f"  data.mdb     {fsize / 2**20:9.2f} MiB file, {used / 2**20:9.2f} MiB up to its last page in use")


def load(loader: Loader) -> list[tuple[float, float]]:
    writes = loader.args.revisions // loader.args.batch
    return [loader.puts() for _ in range(writes)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--revisions", type=int, default=200_000)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--batch", type=int, default=100, help="puts per entry (per write)")
    ap.add_argument("--budget", type=int, default=1000, help="events examined per compaction step")
    ap.add_argument("--no-unbounded", action="store_true", help="skip the one-step compaction (a long transaction)")
    args = ap.parse_args()
    print(f"{args.revisions:,} revisions: puts of {args.value_size} B over {args.keys:,} keys, {args.batch} per "
          f"entry; compaction steps of {args.budget} events; LmdbLogStore(sync=False)")

    with tempfile.TemporaryDirectory() as tmp:
        # 1. Compaction while puts go on.
        a = Loader(os.path.join(tmp, "a"), args, args.budget)
        t0 = time.perf_counter()
        before = load(a)
        print(f"loaded in {time.perf_counter() - t0:.1f} s")
        revision = a.fsm.revision()
        print_sizes(f"after {revision:,} revisions", a, revision)
        a.write([Compact(0, 0, 0, revision)])
        during: list[tuple[float, float]] = []
        t0 = time.perf_counter()
        while a.fsm.compaction_pending():
            during.append(a.puts())
        took = time.perf_counter() - t0
        after = [a.puts() for _ in range(len(before) // 10 or 1)]
        print(f"compaction at {revision:,} while puts go on: {len(during)} writes, {took:.1f} s")
        summary("writes before the compaction (loading)", before)
        summary("writes during it (entry + one step)", during)
        summary("writes after it", after)
        print_sizes("after the compaction (and the puts meanwhile)", a, revision)
        a.close()

        # 2. The same compaction on an idle writer, by compact_step; and in one unbounded step.
        runs = [("compact_step calls on an idle writer", args.budget), ("one unbounded step", 0)]
        for label, budget in runs[: 1 if args.no_unbounded else 2]:
            b = Loader(os.path.join(tmp, f"b{budget}"), args, args.budget)
            load(b)
            b.write([Compact(0, 0, 0, b.fsm.revision())])  # (this write does a first step itself)
            fsm, steps = b.fsm, []
            n = budget or 10**12
            while fsm.compaction_pending():
                steps.append(b.transact(lambda txn, n=n, fsm=fsm: fsm.compact_step(txn, n)))
            summary(label, steps)
            if budget:
                print_sizes("  after it (no puts meanwhile)", b, b.fsm.revision())
            b.close()


if __name__ == "__main__":
    main()
