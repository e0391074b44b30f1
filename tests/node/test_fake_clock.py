"""The node reads time only through its ``Clock`` (``raftkv.clock``): on a ``FakeClock`` nothing timed happens
until the test moves the clock. What this guards: a decision path (ticks due, the age of a read point, lost
read-index requests, entry timestamps) that reads ``time.monotonic`` / ``time.time_ns`` behind the seam's back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from raftkv.clock import FakeClock
from raftkv.kv import Put
from raftkv.raft import StateRole

from .test_node import Cluster, propose_applied, until

TICK_S = 0.010  # the Cluster's tick_ms


@contextlib.asynccontextmanager
async def cluster_on(clock: FakeClock, tmp: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp, clock=clock)
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


@contextlib.asynccontextmanager
async def clock_running(clock: FakeClock) -> AsyncIterator[None]:
    """Move the fake clock one tick per real 5 ms while inside the block (a clock that runs, at twice real speed)."""

    async def run() -> None:
        while True:
            await asyncio.sleep(0.005)
            clock.advance(TICK_S)

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_no_node_ticks_or_campaigns_until_the_clock_moves(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock()
        async with cluster_on(clock, tmp_path) as c:
            terms = {n.id: n.raw.term for n in c.nodes.values()}  # the bootstrap term
            # Thirty real tick periods, three real election timeouts: on the system clock someone would campaign.
            await asyncio.sleep(30 * TICK_S)
            assert all(n.replica._ticks_done == 0 for n in c.nodes.values())
            now = {n.id: (n.role, n.raw.term) for n in c.nodes.values()}
            assert now == {i: (StateRole.FOLLOWER, t) for i, t in terms.items()}
            async with clock_running(clock):
                lead = await c.leader(timeout_s=20)
            assert all(n.replica._ticks_done > 0 for n in c.nodes.values())
            assert lead.raw.term >= 1

    asyncio.run(main())


def test_a_read_point_ages_with_the_nodes_clock_and_entries_carry_its_time(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock()
        async with cluster_on(clock, tmp_path) as c:
            async with clock_running(clock):
                lead = await c.leader(timeout_s=20)
                f = next(n for n in c.nodes.values() if n is not lead)
                applied = await propose_applied(lead, lambda rid: Put(rid, 0, 0, b"k", b"v"))
                await asyncio.wait_for(f.wait_applied(applied.index), 10)
                await until(lambda: f.bounded_read_ok(500), "the follower to know a fresh read point")
            # The clock stands still: however long the test takes from here, the read point stays as fresh.
            assert f.bounded_read_ok(500)
            clock.advance(1.0)
            # No await in between: the loop has not run, only the clock moved; the point is now 1 s old.
            assert not f.bounded_read_ok(500)
            assert f.bounded_read_ok(5_000)
            # Entries are stamped from the node's clock: the state machine's logical time (session expiry) is the
            # fake wall clock's (which starts in November 2023), not the machine's.
            assert abs(f.fsm.now_ns() - clock.time_ns()) < 60 * 10**9

    asyncio.run(main())
