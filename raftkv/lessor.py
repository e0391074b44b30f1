"""The leader's lease clock: when each lease ends, decided by one node, with no I/O and no clock of its own.

The state machine records leases (``LeaseGrant``) and the keys attached to them, and deletes them when a
``LeaseRevoke`` is applied; it keeps no time. Time is the leader's: a ``Lessor`` holds, on the leader only, a
deadline per lease on the leader's monotonic clock (passed in as ``now``), moved by keep-alives, and says which
leases have run out so the leader proposes their revokes (naming the grant's stamp: a lease revoked and granted again
under the same id meanwhile is left alone). Keep-alives do not go through the log: they only move a deadline here.

The guarantee, and what it rests on (``Replica`` enforces both conditions):

    A lease is never revoked by expiry before ``ttl`` seconds have passed since the client *sent* the grant or the
    last keep-alive that was answered, across any number of leader changes, as long as clock rates differ by less
    than the lease drift allowance (``lease_clock_drift_ms``, as for lease reads).

1. A new leader starts timing only once it has applied an entry of its own term (``prime``): every revoke an
   earlier leader proposed is then applied or will never commit, and every lease granted is in the state machine.
   It gives every lease a full TTL from then (``now + ttl``): no lease loses time to a failover, it gains up to one
   TTL (the price, as in etcd without lease checkpoints; a leader that changes more often than a TTL keeps its leases
   alive: the clients' keep-alives stop mattering until leadership settles).
2. A leader answers a keep-alive only while its leader lease holds (``RawNode.lease_read_index``: a majority heard
   from it within the election timeout less the drift allowance, it committed an entry of its term, no transfer is
   under way). So no other leader can have been elected before the answer, and the next leader starts its full TTL
   after it: later than the deadline this leader set, which is at most ``answer time + ttl``.

A keep-alive that arrives after its lease's deadline is refused (TTL 0: the lease is being revoked), so the revoke
and a keep-alive never race. A revoke proposed and lost (the proposal dropped) is proposed again after
``retry_s``. Memory: per lease a dict entry, and a heap entry per renewal in flight (stale heap entries are dropped
when they come due).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

__all__ = ["Lessor"]


class Lessor:
    """The deadlines of the leases, on the leader. Unprimed (timing nothing) on every other node."""

    __slots__ = ("_deadline", "_expiring", "_heap", "_retry_scan", "_ttl", "primed", "retry_s")

    def __init__(self, retry_s: float = 5.0) -> None:
        self.primed = False
        """Whether this node times the leases (it is the leader and applied an entry of its term)."""
        self.retry_s = retry_s
        """How long after proposing a lease's revoke to propose it again if it has not been applied."""
        self._ttl: dict[int, tuple[int, int]] = {}  # lease id -> (ttl_s, stamp)
        self._deadline: dict[int, float] = {}  # lease id -> when it ends (monotonic seconds)
        self._heap: list[tuple[float, int]] = []  # (deadline, lease id); stale entries are skipped when popped
        self._expiring: dict[int, float] = {}  # lease id -> when its revoke was proposed
        self._retry_scan = 0.0  # when to look for lost revokes next

    def __len__(self) -> int:
        return len(self._ttl)

    def prime(self, now: float, leases: Iterable[tuple[int, int, int]]) -> None:
        """Start timing, at ``now``, the leases the state machine holds (``(id, ttl_s, stamp)``): each gets its full
        TTL from now."""
        self.demote()
        self.primed = True
        for lid, ttl, stamp in leases:
            self._set(lid, ttl, stamp, now + ttl)

    def demote(self) -> None:
        """Stop timing (this node is no longer the leader): forget every deadline."""
        self.primed = False
        self._ttl.clear()
        self._deadline.clear()
        self._heap.clear()
        self._expiring.clear()

    def _set(self, lid: int, ttl: int, stamp: int, deadline: float) -> None:
        self._ttl[lid] = (ttl, stamp)
        self._deadline[lid] = deadline
        heapq.heappush(self._heap, (deadline, lid))

    def granted(self, now: float, lid: int, ttl: int, stamp: int) -> None:
        """A grant was applied: time it from ``now`` (if this node times leases)."""
        if self.primed:
            self._expiring.pop(lid, None)
            self._set(lid, ttl, stamp, now + ttl)

    def revoked(self, lid: int) -> None:
        """A revoke was applied (the lease no longer exists)."""
        if self._ttl.pop(lid, None) is not None:
            del self._deadline[lid]
            self._expiring.pop(lid, None)

    def renew(self, now: float, lid: int) -> int:
        """A keep-alive at ``now``: the lease's TTL, its deadline moved to ``now + ttl``; 0 if this node times no
        such lease or its deadline has passed (its revoke is due or under way). The caller checks that this node
        may answer at all (see the module docstring)."""
        held = self._ttl.get(lid)
        if held is None or lid in self._expiring or self._deadline[lid] <= now:
            return 0
        ttl = held[0]
        deadline = now + ttl
        if deadline > self._deadline[lid]:
            self._deadline[lid] = deadline
            heapq.heappush(self._heap, (deadline, lid))
        return ttl

    def remaining(self, now: float, lid: int) -> float | None:
        """Seconds until the lease ends (0 once its revoke is due), None if this node times no such lease."""
        if lid not in self._ttl:
            return None
        if lid in self._expiring:
            return 0.0
        return max(0.0, self._deadline[lid] - now)

    def expired(self, now: float, limit: int = 1000) -> list[tuple[int, int]]:
        """The leases whose deadline has passed and whose revoke is to be proposed now (``(id, stamp)``, at most
        ``limit``): due for the first time, or proposed more than ``retry_s`` ago and still not applied."""
        out: list[tuple[int, int]] = []
        if not self.primed:
            return out
        heap, deadline, expiring = self._heap, self._deadline, self._expiring
        while heap and heap[0][0] <= now and len(out) < limit:
            at, lid = heapq.heappop(heap)
            if deadline.get(lid) != at or lid in expiring:
                continue  # a stale entry (renewed since, or revoked)
            expiring[lid] = now
            out.append((lid, self._ttl[lid][1]))
        if expiring and len(out) < limit and now >= self._retry_scan:
            self._retry_scan = now + self.retry_s / 4
            late = now - self.retry_s
            for lid, proposed in list(expiring.items()):
                if proposed <= late and len(out) < limit:
                    expiring[lid] = now
                    out.append((lid, self._ttl[lid][1]))
        return out

    def leases(self) -> list[int]:
        """The ids of the leases timed here."""
        return sorted(self._ttl)
