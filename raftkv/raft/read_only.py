"""ReadIndex (Raft thesis §6.4) with batched confirmation rounds, and the bookkeeping a leader lease needs.

A leader answers a read request with its commit index once a majority has confirmed it is still leader *after*
the request arrived. Confirmation rides on heartbeats: every heartbeat broadcast is a numbered round (``seq``),
followers echo the number back, and a request registered while round ``s`` was the latest waits for a majority to
acknowledge some round ``> s``. Requests arriving between two broadcasts share the next round, so any number of
concurrent reads costs one heartbeat round.

The same acknowledgements give the lease: the start tick of the newest round a majority acknowledged is a moment
at which a majority still followed us. Followers do not vote for anyone else until an election timeout after they
last heard from us (check-quorum stickiness), so the lease holds until that tick plus the election timeout (minus
the driver's clock-drift allowance).

And they give bounded-staleness reads their read point. Each round remembers the leader's commit index when it
started (when the leader had already committed an entry of its term, so that index covered everything committed
before: thesis §6.4). Once a majority acknowledged the round, no other leader can have committed anything before
it started (a majority still followed us after that moment), so the state at that commit index is up to date as of
the round's start. The leader tells followers which round was confirmed last, and its commit (``confirmed_round``,
``confirmed_commit`` on heartbeats); a follower that received that round's heartbeat knows the moment, on its own
clock, as of which the state at that commit index was current.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple


class ReadRequest(NamedTuple):
    seq: int  # the round that must be acknowledged by a majority
    index: int  # type: ignore[assignment]  # the leader's commit index when the request arrived
    ctx: bytes
    frm: int  # who asked (the leader itself, or a follower that forwarded it)


class ReadOnly:
    __slots__ = ("pending", "quorum_commit", "quorum_seq", "quorum_tick", "round_starts", "seq", "want_round")

    def __init__(self) -> None:
        self.seq = 0
        """The number of the latest round broadcast."""
        self.round_starts: dict[int, tuple[int, int]] = {}
        """Start tick of each round not yet acknowledged by a majority, and the leader's commit index then (-1 if
        the leader had not yet committed an entry of its term: that index then proves nothing)."""
        self.pending: deque[ReadRequest] = deque()
        self.want_round = False
        """A request is waiting for a round that has not been broadcast yet."""
        self.quorum_seq = 0
        self.quorum_tick = -1
        """Start tick of the newest round a majority acknowledged (-1: none in this term)."""
        self.quorum_commit = -1
        """The leader's commit index when that round started (-1: none, or not yet usable: see ``round_starts``)."""

    def add_request(self, index: int, ctx: bytes, frm: int) -> None:
        self.pending.append(ReadRequest(self.seq + 1, index, ctx, frm))
        self.want_round = True

    def round_due(self, max_inflight: int) -> bool:
        """A request waits for a round, and fewer than ``max_inflight`` rounds (0: any number) await a majority."""
        return self.want_round and (max_inflight <= 0 or self.seq - self.quorum_seq < max_inflight)

    def start_round(self, now_tick: int, commit: int) -> int:
        """Number the next round, started at ``now_tick`` with ``commit`` the leader's commit index (-1: unusable)."""
        self.seq += 1
        self.round_starts[self.seq] = (now_tick, commit)
        self.want_round = False
        return self.seq

    def confirm(self, quorum_seq: int) -> list[ReadRequest]:
        """A majority acknowledged every round up to ``quorum_seq``; return the requests that became safe."""
        if quorum_seq <= self.quorum_seq:
            return []
        start = self.round_starts.get(quorum_seq)
        if start is not None:
            self.quorum_tick, self.quorum_commit = start
        self.quorum_seq = quorum_seq
        for s in [s for s in self.round_starts if s <= quorum_seq]:
            del self.round_starts[s]
        done = []
        q = self.pending
        while q and q[0].seq <= quorum_seq:
            done.append(q.popleft())
        return done
