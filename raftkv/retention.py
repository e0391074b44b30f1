"""Automatic history compaction (``history_retention``): when the leader proposes a ``Compact``, and at which
revision, as a pure object (time is passed in).

``history_retention`` is a number of revisions ("100000": keep the newest 100,000) or a duration ("1h", "30m",
"90s": keep what was written in that time), or "0" (off: compact by hand). The decision is the leader's, and the
compaction goes through the log, so every replica compacts at the same revision. A duration is measured on the
leader's own clock from the revisions it saw applied: it samples (time, revision) as it goes, and compacts at the
newest revision it saw at least the retention ago. A new leader has no samples yet, so it compacts nothing until it
has led for the retention: a failover only ever keeps more history, never less.
"""

from __future__ import annotations

import re
from collections import deque

from .errors import ConfigError

__all__ = ["Retention", "parse_retention"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(s|m|h|d)")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_retention(text: str) -> tuple[int, float]:
    """``(revisions, seconds)`` from a ``history_retention`` setting; (0, 0.0) is off. ConfigError otherwise."""
    t = text.strip().lower()
    if t.isdigit():
        return int(t), 0.0
    m = _DURATION.fullmatch(t)
    if m is None:
        raise ConfigError(f"history_retention must be a number of revisions (100000), a duration (90s, 30m, 1h, 7d) "
                          f"or 0 (off), not {text!r}")
    seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    if seconds <= 0:
        raise ConfigError(f"history_retention must be a positive duration or 0 (off), not {text!r}")
    return 0, seconds


class Retention:
    """Decides the leader's automatic compactions. Call ``observe`` with the applied revision as time goes by (on
    the leader; ``reset`` when leadership is gained), and ``due`` to learn whether to compact, and where.
    ``min_step``: compact only when it moves the compacted revision by at least this many revisions (no Compact
    per write)."""

    def __init__(self, revisions: int = 0, seconds: float = 0.0, *, min_step: int = 1000,
                 sample_every_s: float = 1.0) -> None:
        if revisions < 0 or seconds < 0 or (revisions and seconds):
            raise ValueError("a retention is a number of revisions or a duration, not both")
        self.revisions = revisions
        self.seconds = seconds
        self.min_step = min_step
        self._every = sample_every_s
        self._samples: deque[tuple[float, int]] = deque()  # (when, revision applied then), oldest first

    @property
    def enabled(self) -> bool:
        return bool(self.revisions or self.seconds)

    def reset(self) -> None:
        """This node just became leader: what it saw before says nothing about how old the history is."""
        self._samples.clear()

    def observe(self, now: float, revision: int) -> None:
        if not self.seconds:
            return
        s = self._samples
        if not s or now - s[-1][0] >= self._every:
            s.append((now, revision))
        # Keep one sample at least the retention old (the newest such), and the younger ones.
        while len(s) >= 2 and now - s[1][0] >= self.seconds:
            s.popleft()

    def due(self, now: float, revision: int, compacted: int) -> int | None:
        """The revision to compact at now, or None: nothing old enough, or not enough to gain."""
        if self.revisions:
            target = revision - self.revisions
        elif self.seconds:
            s = self._samples
            if not s or now - s[0][0] < self.seconds:
                return None
            target = s[0][1]
        else:
            return None
        return target if target >= compacted + self.min_step and target > 0 else None
