"""The node's clocks, behind a seam (``Clock``), so that what the node decides from time (ticks due, how old a
read point is, when a read-index request counts as lost, entry timestamps) can run on a fake clock in tests.

The Raft core never reads a clock: it counts ticks. The node turns elapsed monotonic time into ticks
(``raftkv.node``), and stamps the log entries it proposes with the wall clock (the state machine's only notion of
time: session expiry). Statistics and log lines may keep reading ``time.perf_counter_ns`` directly: nothing is
decided from them.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds since an arbitrary point; never goes back."""
        ...

    def time_ns(self) -> int:
        """Wall-clock nanoseconds since the epoch (may jump)."""
        ...


class SystemClock:
    """The real clocks: ``time.monotonic`` and ``time.time_ns``."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    def time_ns(self) -> int:
        return time.time_ns()

    def __repr__(self) -> str:
        return "SystemClock()"


class FakeClock:
    """A clock that moves only when told (``advance``): tests decide when ticks fall due."""

    __slots__ = ("_mono", "_wall_ns")

    def __init__(self, start_s: float = 1000.0, wall_ns: int = 1_700_000_000_000_000_000) -> None:
        self._mono = start_s
        self._wall_ns = wall_ns

    def monotonic(self) -> float:
        return self._mono

    def time_ns(self) -> int:
        return self._wall_ns

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a clock does not go back ({seconds} s)")
        self._mono += seconds
        self._wall_ns += int(seconds * 1e9)

    def __repr__(self) -> str:
        return f"FakeClock(monotonic={self._mono:.3f})"
