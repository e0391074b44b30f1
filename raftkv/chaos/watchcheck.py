"""The chaos run's watch checker: watchers follow every key through the whole run, faults included, and at the end
their events must be the history's.

A few watchers (``WATCHERS``, each starting on a different node) watch every key from the revision the run started
at, through ``Client.watch`` (which watches again on another node, from the revision after the last it delivered,
when its node fails). After the final heal one more watch, on a healthy cluster, replays the whole history from the
same revision: the reference. Then:

- every watcher's events are a prefix of the reference, event for event (no gap, no repeat, no reordering), and
  reach its end (a watcher that stopped short is reported: not a safety violation, a liveness one);
- every acknowledged put and successful cas of the history is a put event of the reference with its value: the
  history holds every acknowledged write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..client import Client
from .history import Op, show_key

__all__ = ["WATCHERS", "WatchCheck", "WatchRecord", "check_watches", "replay", "watch_into"]

WATCHERS = 3

Event = tuple[int, str, bytes, bytes]
"""(revision, "put" | "delete", key, value): what a watcher saw."""


@dataclass(slots=True)
class WatchRecord:
    name: str
    start_revision: int
    events: list[Event] = field(default_factory=list)
    revision: int = 0
    """Every event up to this revision was delivered."""
    error: str = ""


async def watch_into(rec: WatchRecord, endpoints: Sequence[str], until: asyncio.Event, target: list[int]) -> None:
    """Follow every key into ``rec`` until ``until`` is set and the watch has reached ``target[0]``."""
    try:
        async with Client(list(endpoints), timeout_s=3.0) as c:
            async for batch in c.watch(b"", prefix=True, start_revision=rec.start_revision, progress_notify_ms=200):
                for ev in batch.events:
                    rec.events.append((ev.revision, ev.type, ev.kv.key, ev.kv.value))
                rec.revision = batch.revision
                if until.is_set() and target and rec.revision >= target[0]:
                    return
    except asyncio.CancelledError:
        raise
    except Exception as e:  # reported, and the check says what it lacks
        rec.error = f"{type(e).__name__}: {e}"


async def replay(endpoints: Sequence[str], start_revision: int, upto: int, timeout_s: float) -> WatchRecord:
    """The reference: the history from ``start_revision`` to ``upto``, replayed on the healed cluster."""
    rec = WatchRecord("reference", start_revision)
    done = asyncio.Event()
    done.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(watch_into(rec, endpoints, done, [upto]), timeout_s)
    return rec


@dataclass(slots=True)
class WatchCheck:
    ok: bool | None
    """False: a watcher saw something the history does not have (a gap, a repeat, a reordering), or an acknowledged
    write is missing from the history; None: the reference could not be read whole (inconclusive)."""
    watchers: int
    events: int
    problems: list[str]
    stuck: list[str]
    """Watchers that did not reach the end of the history (liveness, not safety)."""

    def describe(self) -> str:
        if self.ok is None:
            return "inconclusive: " + "; ".join(self.problems)
        if self.ok:
            return f"{self.watchers} watchers saw the history's {self.events} events, each once, in order" + (
                f"; stuck: {'; '.join(self.stuck)}" if self.stuck else "")
        return "; ".join(self.problems[:3]) + ("; ..." if len(self.problems) > 3 else "")


def _show(e: Event) -> str:
    rev, kind, key, value = e
    return f"r{rev} {kind} {show_key(key)}" + (f"={value.decode('latin-1')}" if kind == "put" else "")


def check_watches(records: Sequence[WatchRecord], reference: WatchRecord, upto: int, ops: Sequence[Op]) -> WatchCheck:
    problems: list[str] = []
    stuck: list[str] = []
    if reference.error or reference.revision < upto:
        why = reference.error or f"it reached revision {reference.revision} of {upto}"
        return WatchCheck(None, len(records), len(reference.events), [f"the reference replay failed: {why}"], [])
    ref = [e for e in reference.events if e[0] <= upto]
    for rec in records:
        got = [e for e in rec.events if e[0] <= upto]
        expected = [e for e in ref if e[0] >= rec.start_revision]
        for i, e in enumerate(got):
            if i >= len(expected) or e != expected[i]:
                have = _show(expected[i]) if i < len(expected) else "nothing more"
                problems.append(f"{rec.name}: event {i + 1} is {_show(e)} where the history has {have}")
                break
        else:
            if len(got) < len(expected):
                stuck.append(f"{rec.name} stopped at revision {rec.revision} of {upto}"
                             + (f" ({rec.error})" if rec.error else ""))
    puts = {(e[2], e[3]) for e in ref if e[1] == "put"}
    start = min((r.start_revision for r in records), default=reference.start_revision)
    for op in ops:
        acked = op.status == "ok" and (op.kind == "put" or (op.kind == "cas" and op.result is True))
        if acked and op.value is not None and (op.key, op.value) not in puts:
            problems.append(f"the acknowledged {op.kind} {show_key(op.key)}={op.value.decode('latin-1')} (op "
                            f"{op.id}) is in no event of the history from revision {start}")
    return WatchCheck(not problems, len(records), len(ref), problems, stuck)
