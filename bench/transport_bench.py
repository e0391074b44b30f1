"""Throughput of GrpcTransport on loopback: two transports in one process, node 1 sends N batches of M APP messages
(10 entries of 100 bytes each) to node 2.

    python bench/transport_bench.py [--batches 20000] [--msgs 1] [--loop uvloop|asyncio] [--window 256]

Prints figures only (no assertions). Both ends share one process and one event loop, so "CPU per frame" is the cost
of sending *and* receiving a frame (send() grouping, queueing, encode, gRPC write, gRPC read, decode, on_messages).

Three sending patterns:

* ``lockstep``: send one batch, wait until it is received, repeat (at most 2000 batches): one batch per frame, so
  this shows the fixed cost of a frame and the one-way delivery latency (1 / batches/s).
* ``paced``: one send() per event-loop turn, at most ``--window`` batches not yet received (like a driver that emits a
  Ready per turn while the follower keeps up): little coalescing, so this measures the per-frame floor.
* ``burst``: ``--window`` send() calls in a row without yielding, then wait for them: the sender coalesces whatever
  accumulated into one frame, which is what happens under load.

A last section times the encoding alone: K batches encoded separately versus concatenated and encoded once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import raftkv  # noqa: F401
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raftkv import codec
from raftkv.raft.types import Entry, Message, MsgType
from raftkv.transport import GrpcTransport

ENTRIES_PER_MSG = 10
DATA_BYTES = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_batches(n: int, m: int) -> list[list[Message]]:
    out = []
    index = 0
    for _ in range(n):
        batch = []
        for _ in range(m):
            ents = tuple(Entry(3, index + k + 1, 0, bytes([k]) * DATA_BYTES) for k in range(ENTRIES_PER_MSG))
            batch.append(Message(MsgType.APP, to=2, frm=1, term=3, log_term=3, index=index, entries=ents, commit=index))
            index += ENTRIES_PER_MSG
        out.append(batch)
    return out


async def run_pattern(pattern: str, batches: list[list[Message]], window: int) -> dict[str, float]:
    received = 0
    progress = asyncio.Event()

    def on_messages(msgs: list[Message]) -> None:
        nonlocal received
        received += len(msgs)
        progress.set()

    def ignore(_peer: int) -> None:
        pass

    p1, p2 = free_port(), free_port()
    a = GrpcTransport(1, "bench", f"127.0.0.1:{p1}", on_messages, ignore)
    b = GrpcTransport(2, "bench", f"127.0.0.1:{p2}", on_messages, ignore)
    a.set_peers({2: f"127.0.0.1:{p2}"})
    b.set_peers({1: f"127.0.0.1:{p1}"})
    await a.start()
    await b.start()
    try:
        while not (a.peer_status()[2].connected and b.peer_status()[1].connected):
            await asyncio.sleep(0.01)
        per_batch = len(batches[0])
        total = len(batches) * per_batch

        async def wait_for(target_msgs: int) -> None:
            while received < target_msgs:
                progress.clear()
                await progress.wait()

        cpu0, wall0 = time.process_time(), time.perf_counter()
        if pattern == "lockstep":
            for i, batch in enumerate(batches):
                a.send(batch)
                await wait_for((i + 1) * per_batch)
        elif pattern == "paced":
            for i, batch in enumerate(batches):
                a.send(batch)
                if i >= window:
                    await wait_for((i - window) * per_batch)
                await asyncio.sleep(0)
        else:
            for start in range(0, len(batches), window):
                for batch in batches[start : start + window]:
                    a.send(batch)
                await wait_for(min(len(batches), start + window) * per_batch)
        async with asyncio.timeout(120):
            await wait_for(total)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        st = a.peer_status()[2]
        return {
            "wall_s": wall,
            "cpu_s": cpu,
            "frames": st.frames_sent,
            "dropped": st.frames_dropped,
            "bytes": st.bytes_sent,
            "batches": len(batches),
            "msgs": total,
        }
    finally:
        await a.stop()
        await b.stop()


def best_of(fn: Callable[[], Any], number: int, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, time.perf_counter() - t0)
    return best / number


def encode_section(batches: list[list[Message]], k: int) -> None:
    group = batches[:k]
    separate = best_of(lambda: [codec.encode_messages(b) for b in group], 50)
    joined = best_of(lambda: codec.encode_messages([m for b in group for m in b]), 50)
    print(
        f"encode {k} batches: separately {separate * 1e6:8.1f} µs ({separate / k * 1e6:.2f} µs/batch), "
        f"concatenated once {joined * 1e6:8.1f} µs ({joined / k * 1e6:.2f} µs/batch)"
    )


async def main_async(args: argparse.Namespace) -> None:
    batches = make_batches(args.batches, args.msgs)
    for pattern in ("lockstep", "paced", "burst"):
        todo = batches[:2000] if pattern == "lockstep" else batches
        r = await run_pattern(pattern, todo, args.window)
        entries = r["msgs"] * ENTRIES_PER_MSG
        frames = max(1, r["frames"])
        print(
            f"{pattern:8}: {r['batches'] / r['wall_s']:7.0f} batches/s {entries / r['wall_s']:8.0f} entries/s | "
            f"{r['frames']:6.0f} frames ({r['batches'] / frames:5.1f} batches/frame, "
            f"{r['bytes'] / frames / 1024:6.1f} KiB/frame) | CPU {r['cpu_s'] / frames * 1e6:7.1f} µs/frame "
            f"{r['cpu_s'] / r['batches'] * 1e6:6.1f} µs/batch {r['cpu_s'] / entries * 1e6:5.2f} µs/entry"
            f" | dropped {r['dropped']:.0f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=20000, help="send() calls (default 20000)")
    ap.add_argument("--msgs", type=int, default=1, help="APP messages per batch (default 1)")
    ap.add_argument("--window", type=int, default=256, help="batches in flight / per burst (default 256)")
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="event loop (default uvloop)")
    args = ap.parse_args()
    logging.getLogger("raftkv.transport").setLevel(logging.ERROR)  # teardown warns that the peer went away

    loop_name = args.loop
    if loop_name == "uvloop":
        try:
            import uvloop
        except ImportError:
            loop_name = "asyncio (uvloop not installed)"
    print(
        f"GrpcTransport loopback: {args.batches} batches x {args.msgs} APP x {ENTRIES_PER_MSG} entries x "
        f"{DATA_BYTES} B; window {args.window}; {loop_name}; Python {sys.version.split()[0]}, {platform.machine()}"
    )
    if loop_name == "uvloop":
        uvloop.run(main_async(args))
    else:
        asyncio.run(main_async(args))
    batches = make_batches(256, args.msgs)
    for k in (1, 16, 256):
        encode_section(batches, k)


if __name__ == "__main__":
    main()
