"""ProgressTracker: the membership (voters, learners), one Progress per member, and the votes of an election."""

from __future__ import annotations

from collections.abc import Iterator

from . import quorum
from .progress import Progress
from .quorum import VoteResult
from .types import ConfState


class ProgressTracker:
    __slots__ = ("learners", "max_inflight", "max_inflight_bytes", "order", "progress", "voters", "votes")

    def __init__(self, max_inflight: int, max_inflight_bytes: int = 0) -> None:
        self.voters: tuple[int, ...] = ()
        self.learners: tuple[int, ...] = ()
        self.progress: dict[int, Progress] = {}
        self.order: tuple[int, ...] = ()
        """Member ids in ascending order: iteration over members is deterministic."""
        self.votes: dict[int, bool] = {}
        self.max_inflight = max_inflight
        self.max_inflight_bytes = max_inflight_bytes

    def conf_state(self) -> ConfState:
        return ConfState(voters=self.voters, learners=self.learners)

    def apply_conf(self, cs: ConfState, next_index: int) -> None:
        """Adopt a membership. Progress of members that stay is kept; new members start probing at next_index."""
        self.voters = tuple(sorted(cs.voters))
        self.learners = tuple(sorted(cs.learners))
        members = set(self.voters) | set(self.learners)
        for nid in list(self.progress):
            if nid not in members:
                del self.progress[nid]
        for nid in members:
            pr = self.progress.get(nid)
            if pr is None:
                pr = Progress(next_index, self.max_inflight, self.max_inflight_bytes)
                pr.recent_active = True  # a new member gets a full check-quorum round before it counts against us
                self.progress[nid] = pr
            pr.is_learner = nid in self.learners
        self.order = tuple(sorted(self.progress))

    def is_voter(self, nid: int) -> bool:
        return nid in self.voters


    def committed(self) -> int:
        """§5.3/§5.4: the highest index replicated on a majority of voters (by durable match)."""
        prs = self.progress
        return quorum.committed_index(self.voters, {v: prs[v].match for v in self.voters if v in prs})

    def quorum_read_seq(self) -> int:
        """The highest heartbeat round acknowledged by a majority of voters."""
        prs = self.progress
        return quorum.committed_index(self.voters, {v: prs[v].read_seq for v in self.voters if v in prs})

    def quorum_active(self) -> bool:
        """Check-quorum: did a majority of voters (counting ourselves, always active) talk to us recently?"""
        votes = {v: pr.recent_active for v, pr in self.progress.items() if not pr.is_learner}
        return quorum.vote_result(self.voters, votes) == VoteResult.WON

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, nid: int, granted: bool) -> None:
        if nid not in self.votes:  # the first answer of a voter counts; duplicates are ignored
            self.votes[nid] = granted

    def tally_votes(self) -> tuple[int, int, VoteResult]:
        granted = sum(1 for v in self.voters if self.votes.get(v) is True)
        rejected = sum(1 for v in self.voters if self.votes.get(v) is False)
        return granted, rejected, quorum.vote_result(self.voters, self.votes)

    def peers(self, self_id: int) -> Iterator[tuple[int, Progress]]:
        """Every member but ``self_id``, in id order (deterministic)."""
        prs = self.progress
        for nid in self.order:
            if nid != self_id:
                yield nid, prs[nid]
