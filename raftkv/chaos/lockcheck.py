"""The chaos run's lock checker: contenders take one lock over and over through the faults, and no two may ever
have held it at once.

``LOCKERS`` contenders (each with its own client, starting on a different node) loop while the workload runs: take
the lock ``chaos`` (``Client.lock``, a lease of ``LOCK_TTL_S``), hold it a moment (one hold in five lasts longer
than the TTL: the lease then lives on keep-alives), release it. Each records its
holds: from when ``acquire`` returned (it learned it holds the lock) to when it stopped acting under it: the moment
it called ``release``, or the moment its lease was found lost (the client declares a lease lost at the latest when
the TTL of its last answered keep-alive has run out, counted from when that keep-alive was sent: the cluster never
expires a lease earlier, by the guarantee of ``raftkv.lessor``). All contenders run in this process, on one
monotonic clock. Then:

- no two holds overlap in time (mutual exclusion: a lease that ended early, or a lock granted to a second contender
  while the first's key still existed, shows as an overlap);
- ordered by time, the holds' fencing revisions strictly increase (a later holder's key was created later).

A contender whose lease is lost, or whose calls fail under the faults, records that and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..client import Client
from ..errors import RaftKVError

__all__ = ["LOCKERS", "LOCK_TTL_S", "Contender", "Hold", "LockCheck", "check_locks", "contend"]

LOCKERS = 2
LOCK_TTL_S = 2
LOCK_NAME = "chaos"


@dataclass(slots=True)
class Hold:
    who: str
    revision: int
    start_ns: int
    end_ns: int
    how: str
    """"released", or "lost: why" (the lease was found lost while holding)."""


@dataclass(slots=True)
class Contender:
    name: str
    holds: list[Hold] = field(default_factory=list)
    failures: int = 0
    errors: list[str] = field(default_factory=list)


async def contend(rec: Contender, endpoints: Sequence[str], stop: asyncio.Event, seed: int) -> None:
    """Take the lock, hold it a moment, release it, until ``stop``; record every hold in ``rec``."""
    rng = random.Random(seed)
    async with Client(list(endpoints), timeout_s=3.0) as c:
        while not stop.is_set():
            lock = c.lock(LOCK_NAME, ttl_s=LOCK_TTL_S)
            try:
                async with asyncio.timeout(10):
                    rev = await lock.acquire()
            except (RaftKVError, TimeoutError) as e:
                rec.failures += 1
                if len(rec.errors) < 20:
                    rec.errors.append(f"acquire: {type(e).__name__}: {e}")
                await asyncio.sleep(rng.uniform(0.05, 0.2))
                continue
            start = time.monotonic_ns()
            lost = lock.lost
            with contextlib.suppress(TimeoutError):
                # Mostly a moment; now and then longer than the lease's TTL, so the holder lives on keep-alives.
                hold_s = rng.uniform(0.01, 0.2) if rng.random() < 0.8 else rng.uniform(1.0, 2.5 * LOCK_TTL_S)
                async with asyncio.timeout(hold_s):
                    await lost.wait()
            end = time.monotonic_ns()
            how = f"lost: {lock.lease.lost_reason}" if lost.is_set() and lock.lease else "released"
            rec.holds.append(Hold(rec.name, rev, start, end, how))
            with contextlib.suppress(RaftKVError):
                await lock.release()


@dataclass(slots=True)
class LockCheck:
    ok: bool
    holds: int
    lost: int
    problems: list[str]
    contenders: int

    def describe(self) -> str:
        if not self.ok:
            return f"{len(self.problems)} problem(s): " + "; ".join(self.problems[:3])
        return f"{self.holds} holds by {self.contenders} contenders, none overlapping, fencing revisions in order" + (
            f" ({self.lost} ended by a lost lease)" if self.lost else "")


def check_locks(contenders: Sequence[Contender]) -> LockCheck:
    holds = sorted((h for c in contenders for h in c.holds), key=lambda h: h.start_ns)
    problems: list[str] = []
    for a, b in itertools.pairwise(holds):
        if b.start_ns < a.end_ns:
            problems.append(f"{b.who} held the lock (revision {b.revision}) from {b.start_ns} while {a.who} still "
                            f"held it (revision {a.revision}, until {a.end_ns}, {a.how})")
        if b.revision <= a.revision:
            problems.append(f"fencing revisions out of order: {a.who} held with {a.revision}, then {b.who} with "
                            f"{b.revision}")
    return LockCheck(not problems, len(holds), sum(1 for h in holds if h.how != "released"), problems,
                     len(contenders))
