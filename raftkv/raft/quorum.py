"""Majority arithmetic as pure functions over a voter set."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import IntEnum


class VoteResult(IntEnum):
    PENDING = 0
    LOST = 1
    WON = 2


def majority(n: int) -> int:
    return n // 2 + 1


def committed_index(voters: Iterable[int], acked: Mapping[int, int]) -> int:
    """The largest index that a majority of ``voters`` has acknowledged (a missing voter counts as 0).

    An empty voter set has no constraint to offer, so it reports the largest possible index."""
    vals = sorted((acked.get(v, 0) for v in voters), reverse=True)
    if not vals:
        return 1 << 63
    return vals[majority(len(vals)) - 1]


def vote_result(voters: Iterable[int], votes: Mapping[int, bool]) -> VoteResult:
    """WON with a majority of grants, LOST once a majority is out of reach, PENDING otherwise."""
    voters = tuple(voters)
    if not voters:
        return VoteResult.WON
    granted = rejected = missing = 0
    for v in voters:
        r = votes.get(v)
        if r is None:
            missing += 1
        elif r:
            granted += 1
        else:
            rejected += 1
    q = majority(len(voters))
    if granted >= q:
        return VoteResult.WON
    if granted + missing >= q:
        return VoteResult.PENDING
    return VoteResult.LOST
