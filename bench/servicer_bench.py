"""CPU per operation of raftkv's own Python on the request path, without gRPC, the network or fsync: one in-process
node (a one-voter cluster on the in-memory transport, LMDB with sync off), its client servicer called directly.

    python bench/servicer_bench.py [--ops 40000] [--clients 64] [--batch 64]

Rows: unary Put / Get (stale, linearizable) with ``--clients`` callers in flight, and Batch RPCs of ``--batch`` puts.
Each row reports process CPU (all threads: the loop and the writer) per operation, best of 3 runs. What it leaves out
(the gRPC call, about 150-220 µs of server CPU per unary call on this machine: ``bench/grpc_wall.py``; replication;
fsync) is the rest of a real put's cost. Prints figures only (no assertions).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    import raftkv  # noqa: F401
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raftkv.kv import KVStateMachine
from raftkv.node import Node
from raftkv.proto.v1 import kv_pb2
from raftkv.raft import StateRole
from raftkv.servicer import KVServicer
from raftkv.settings import Member, Settings
from raftkv.storage import LmdbLogStore
from raftkv.transport import MemoryNetwork, MemoryTransport


class FakeContext:
    """The part of grpc.aio.ServicerContext the servicer uses."""

    def time_remaining(self) -> float | None:
        return None

    async def abort(self, code: Any, details: str, trailing_metadata: Any = ()) -> None:
        raise RuntimeError(f"aborted: {code} {details}")


async def one_node(tmp: Path) -> tuple[Node, KVServicer, asyncio.Task[None], LmdbLogStore]:
    members = (Member(1, "127.0.0.1:1", "127.0.0.1:2"),)
    s = Settings(id=1, data_dir=tmp, members=members, tick_ms=10, sync=False)
    store = LmdbLogStore(tmp / "raft", sync=False)
    holder: list[Node] = []
    t = MemoryTransport(MemoryNetwork(), 1, lambda m: holder[0].on_messages(m), lambda p: None)
    node = Node(s, store, KVStateMachine(store), t)
    holder.append(node)
    await t.start()
    task = asyncio.create_task(node.run())
    while node.role != StateRole.LEADER or not node.raw.raft.committed_entry_in_current_term():
        await asyncio.sleep(0.01)
    return node, KVServicer(node, s), task, store


async def run_rows(a: argparse.Namespace) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as d:
        node, svc, task, store = await one_node(Path(d))
        ctx = FakeContext()
        value = b"x" * 100
        client_base = 1 << 40
        seqs = [0] * a.clients

        async def unary_puts(n: int) -> None:
            async def worker(w: int) -> None:
                for i in range(w, n, a.clients):
                    seqs[w] += 1
                    req = kv_pb2.PutRequest(key=b"bench/%08d" % (i % 10000), value=value,
                                            session=kv_pb2.Session(client_id=client_base + w, seq=seqs[w]))
                    await svc.Put(req, ctx)  # type: ignore[arg-type]

            await asyncio.gather(*(worker(w) for w in range(a.clients)))

        def unary_gets(consistency: int) -> Any:
            async def run(n: int) -> None:
                async def worker(w: int) -> None:
                    for i in range(w, n, a.clients):
                        req = kv_pb2.GetRequest(key=b"bench/%08d" % (i % 10000),
                                                read=kv_pb2.ReadOptions(consistency=consistency))  # type: ignore[arg-type]
                        await svc.Get(req, ctx)  # type: ignore[arg-type]

                await asyncio.gather(*(worker(w) for w in range(a.clients)))

            return run

        async def batch_puts(n: int) -> None:
            per = a.batch

            async def worker(w: int) -> None:
                for start in range(w * per, n, per * 4):
                    ops = []
                    for i in range(start, min(start + per, n)):
                        seqs[w] += 1
                        ops.append(kv_pb2.BatchOp(put=kv_pb2.PutRequest(
                            key=b"bench/%08d" % (i % 10000), value=value,
                            session=kv_pb2.Session(client_id=client_base + w, seq=seqs[w]))))
                    await svc.Batch(kv_pb2.BatchRequest(ops=ops), ctx)  # type: ignore[arg-type]

            await asyncio.gather(*(worker(w) for w in range(4)))

        rows = [
            (f"Put, {a.clients} unary callers", unary_puts),
            (f"Get stale, {a.clients} unary callers", unary_gets(kv_pb2.STALE)),
            (f"Get linearizable, {a.clients} unary callers", unary_gets(kv_pb2.LINEARIZABLE)),
            (f"Batch of {a.batch} puts, 4 callers", batch_puts),
        ]
        try:
            await unary_puts(min(a.ops, 10000))  # the keyspace exists, and warm-up
            for name, fn in rows:
                best = float("inf")
                for _ in range(3):
                    c0 = time.process_time()
                    await fn(a.ops)
                    best = min(best, (time.process_time() - c0) / a.ops)
                out.append((name, best))
        finally:
            node.stop()
            await task
            await node.transport.stop()
            node.close()
            store.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=40000)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    import uvloop

    rows = uvloop.run(run_rows(a))
    print(f"raftkv request path without gRPC (one in-process node, sync off), python {platform.python_version()}, "
          f"best of 3 x {a.ops} operations")
    for name, s in rows:
        print(f"  {name:40s} {s * 1e6:7.1f} µs CPU/op")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
