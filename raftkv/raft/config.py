"""Configuration of one Raft node. Times are in ticks: only the driver knows how long a tick is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .types import NONE, ConfChange


class RandomSource(Protocol):
    """What the core needs of randomness. ``random.Random`` satisfies it; the core never imports ``random``."""

    def randrange(self, n: int, /) -> int: ...


class SplitMix64:
    """A tiny deterministic generator (SplitMix64), the default when the caller hands in none."""

    __slots__ = ("_state",)

    def __init__(self, seed: int) -> None:
        self._state = seed & 0xFFFFFFFFFFFFFFFF

    def randrange(self, n: int, /) -> int:
        if n <= 0:
            raise ValueError("empty range for randrange()")
        self._state = (self._state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        return (z ^ (z >> 31)) % n


@dataclass(frozen=True, slots=True)
class Config:
    id: int
    election_tick: int = 10
    """Base election timeout. A follower's actual timeout is drawn uniformly from [election_tick, 2*election_tick)."""
    heartbeat_tick: int = 1
    applied: int = 0
    """The index the state machine has already applied (persisted beside the data); the core restarts from there."""
    max_size_per_msg: int = 1 << 20
    """Upper bound, in bytes, of the entries in one append message (at least one entry is always sent)."""
    max_committed_size_per_ready: int = 8 << 20
    max_uncommitted_entries_size: int = 0
    """Bytes of proposed-but-uncommitted entries a leader accepts before dropping proposals; 0 = unlimited."""
    max_inflight_msgs: int = 256
    """Append messages in flight per follower in replicate state (pipelining window)."""
    max_inflight_bytes: int = 0
    """Bytes of entries in flight per follower; 0 = unlimited."""
    max_inflight_read_rounds: int = 2
    """Read requests start a heartbeat round of their own only while fewer than this many rounds wait for a majority
    (0 = no bound); otherwise they wait, and share the round that starts when one comes back. Periodic heartbeats
    are not bounded, so a lost round delays reads by at most a heartbeat interval."""
    check_quorum: bool = True
    pre_vote: bool = True
    forward_proposals: bool = False
    """Followers forward proposals to the leader (True) or refuse them with ProposalDropped(NOT_LEADER)."""
    decode_conf_change: Callable[[bytes], ConfChange] | None = field(default=None, repr=False, compare=False)
    """Decodes a CONF_CHANGE entry's data (the driver owns the encoding). With it, a leader that proposes its own
    removal stops taking proposals right away, so no node that helped commit the removal has a shorter log than
    the departing leader (which could otherwise refuse it the vote it needs to take over)."""
    rng: RandomSource = field(default_factory=lambda: SplitMix64(0), repr=False, compare=False)
    """The only source of randomness (election timeouts). Hand in a seeded generator (e.g. ``random.Random(seed)``)
    to replay a run; give each node its own, or their timeouts will coincide."""

    def validate(self) -> None:
        if self.id == NONE:
            raise ValueError("node id must be positive (0 means 'none')")
        if self.heartbeat_tick <= 0:
            raise ValueError("heartbeat_tick must be greater than 0")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("election_tick must be greater than heartbeat_tick")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max_inflight_msgs must be greater than 0")
        if self.max_inflight_read_rounds < 0:
            raise ValueError("max_inflight_read_rounds must not be negative")
        if self.max_size_per_msg <= 0:
            raise ValueError("max_size_per_msg must be greater than 0")
