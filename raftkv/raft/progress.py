"""The leader's view of one follower: how far it matches, what to send next, and the flow-control window.

Every state transition is a method here (etcd's admitted wart is having them scattered across raft.go).

States:
  PROBE      the leader does not know where the follower's log matches; it sends one append per heartbeat
             interval and waits for the answer before sending more.
  REPLICATE  the follower is known to match up to ``match``; appends stream optimistically, bounded by Inflights.
  SNAPSHOT   the follower needs a snapshot; nothing else is sent until it is applied or fails.
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum


class ProgressState(IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2

    def __str__(self) -> str:
        return self.name


class Inflights:
    """The append messages in flight to one follower, as (last index, bytes), bounded in count and bytes."""

    __slots__ = ("_q", "bytes", "max_bytes", "max_count")

    def __init__(self, max_count: int, max_bytes: int = 0) -> None:
        self._q: deque[tuple[int, int]] = deque()
        self.max_count = max_count
        self.max_bytes = max_bytes  # 0: unlimited
        self.bytes = 0

    def add(self, index: int, nbytes: int) -> None:
        self._q.append((index, nbytes))
        self.bytes += nbytes

    def free_le(self, to: int) -> None:
        """Forget every message whose last index is <= ``to`` (they were acknowledged)."""
        q = self._q
        while q and q[0][0] <= to:
            self.bytes -= q.popleft()[1]

    def free_first_one(self) -> None:
        if self._q:
            self.bytes -= self._q.popleft()[1]

    def full(self) -> bool:
        return len(self._q) >= self.max_count or (self.max_bytes > 0 and self.bytes >= self.max_bytes)

    def count(self) -> int:
        return len(self._q)

    def reset(self) -> None:
        self._q.clear()
        self.bytes = 0


class Progress:
    """Invariant: 0 <= match < next."""

    __slots__ = (
        "inflights",
        "is_learner",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "read_seq",
        "recent_active",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int, max_inflight_bytes: int = 0, is_learner: bool = False):
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        self.recent_active = False
        """Heard from since the last check-quorum round (the leader's own entry is always True)."""
        self.probe_sent = False
        """In PROBE: an append is outstanding, so sending is paused until a reply or the next heartbeat."""
        self.inflights = Inflights(max_inflight, max_inflight_bytes)
        self.is_learner = is_learner
        self.read_seq = 0
        """The highest heartbeat round (read-only sequence number) this follower acknowledged in this term."""

    def __repr__(self) -> str:
        s = f"{self.state} match={self.match} next={self.next}"
        if self.is_learner:
            s += " learner"
        if self.probe_sent:
            s += " paused"
        if self.pending_snapshot:
            s += f" pending_snap={self.pending_snapshot}"
        if not self.recent_active:
            s += " inactive"
        if self.inflights.count():
            s += f" inflight={self.inflights.count()}"
            if self.inflights.full():
                s += "[full]"
        return s

    # -- transitions ------------------------------------------------------------------------------------------
    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        """Fall back to probing from just after ``match`` (or after a snapshot that was being sent)."""
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        """The follower's match is known: stream entries from ``match + 1`` with a fresh in-flight window."""
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        """Stop sending entries; the follower must first install the snapshot at ``snapshot_index``."""
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    # -- updates ----------------------------------------------------------------------------------------------
    def sent_entries(self, count: int, nbytes: int) -> None:
        """Account for an append carrying ``count`` entries starting at ``next``."""
        if self.state == ProgressState.REPLICATE:
            if count:
                last = self.next + count - 1
                self.next = last + 1  # optimistic: assume it arrives
                self.inflights.add(last, nbytes)
        elif self.state == ProgressState.PROBE:
            if count:
                self.probe_sent = True
        else:
            raise AssertionError(f"sending append in unhandled state {self.state}")

    def maybe_update(self, n: int) -> bool:
        """A success acknowledgement up to ``n``. Returns False if it was stale (match already >= n)."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        if self.next < n + 1:
            self.next = n + 1
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the append whose previous entry was ``rejected``. Returns False if it was stale.

        ``match_hint`` is the follower's guess of the highest index where our logs may still match."""
        if self.state == ProgressState.REPLICATE:
            # A rejection at or below match is a late reply to something we already know about.
            if rejected <= self.match:
                return False
            self.next = self.match + 1  # the caller moves us to PROBE
            return True
        # In PROBE (or SNAPSHOT) only the rejection of the outstanding probe counts.
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True
