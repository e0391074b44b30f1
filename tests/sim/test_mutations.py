"""Proof that the simulator's checks can fail: plant a classic Raft bug, run generated schedules, and expect a
Violation. A check that never fires is a defect; these tests keep each check honest.

The Figure 8 bug (committing an old-term entry by counting replicas) needs a long, unlucky interleaving; the
random search finds it with the leader-hunting configuration, which takes a minute or two, so it is marked
``soak``. The deterministic Figure 8 scenario in tests/raft catches the same bug in every CI run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest

from raftkv.raft import core, log, progress, rawnode, unstable
from raftkv.raft.read_only import ReadRequest
from raftkv.raft.types import Message, MsgType

from .cluster import Cluster, SimConfig, Violation, run_schedule
from .configs import CONFIGS, TICKS


def _commit_old_term_by_counting(self: log.RaftLog, max_index: int, term: int) -> bool:
    if max_index > self.committed:  # BUG: §5.4.2 requires the entry at max_index to be of the current term
        self.commit_to(max_index)
        return True
    return False


def _vote_for_less_up_to_date_log(self: log.RaftLog, last_index: int, term: int) -> bool:
    return True  # BUG: §5.4.1 election restriction dropped


_orig_send = core.Raft._send


def _send_vote_before_persisting(self: core.Raft, m: Message) -> None:
    if m.type == MsgType.VOTE_RESP:
        self.msgs.append(m)  # BUG: the vote leaves before the Ready recording it is durable
    else:
        _orig_send(self, m)


def _read_index_without_quorum(self: core.Raft, m: Message) -> None:
    self._respond_read(ReadRequest(0, self.log.committed, m.context, m.frm))  # BUG: no heartbeat round


_orig_append = core.Raft._append_entries


def _leader_counts_itself_before_persisting(self: core.Raft, ents: list[Any]) -> bool:
    ok = _orig_append(self, ents)
    me = self.trk.progress.get(self.id)
    if ok and me is not None:
        me.maybe_update(self.log.last_index())  # BUG: counts entries that may still be lost in a crash
    return ok


_orig_ready = rawnode.RawNode.ready


def _write_entries_without_sync(self: rawnode.RawNode) -> Any:
    rd = _orig_ready(self)
    if rd.entries and rd.snapshot is None:
        object.__setattr__(rd, "must_sync", False)  # BUG: acknowledged entries a power loss can undo
    return rd


def _truncate_keeps_in_progress_offset(self: unstable.Unstable, ents: Any) -> None:
    after = ents[0].index
    if after == self.offset + len(self.entries):
        self.entries.extend(ents)
    elif after <= self.offset:
        self.offset = after
        self.entries = list(ents)  # BUG: offset_in_progress kept: the replacing entries are never written
    else:
        del self.entries[after - self.offset :]
        self.entries.extend(ents)  # BUG: likewise


def _ignore_append_rejections(self: progress.Progress, rejected: int, match_hint: int) -> bool:
    return False  # BUG: a rejected append never moves next back (§5.3), so a diverged follower never catches up


MUTATIONS: dict[str, tuple[Any, str, Callable[..., Any]]] = {
    "commit-old-term-by-counting": (log.RaftLog, "maybe_commit", _commit_old_term_by_counting),
    "vote-for-less-up-to-date-log": (log.RaftLog, "is_up_to_date", _vote_for_less_up_to_date_log),
    "send-vote-before-persisting": (core.Raft, "_send", _send_vote_before_persisting),
    "read-index-without-quorum": (core.Raft, "_leader_read_index", _read_index_without_quorum),
    "leader-counts-itself-before-persisting": (core.Raft, "_append_entries", _leader_counts_itself_before_persisting),
    "write-entries-without-sync": (rawnode.RawNode, "ready", _write_entries_without_sync),
    "truncate-keeps-in-progress-offset": (
        unstable.Unstable, "truncate_and_append", _truncate_keeps_in_progress_offset),
    "ignore-append-rejections": (progress.Progress, "maybe_decr_to", _ignore_append_rejections),
}


@contextmanager
def planted(name: str) -> Iterator[None]:
    cls, attr, fn = MUTATIONS[name]
    with mock.patch.object(cls, attr, fn):
        yield


def first_violation(config: str, seeds: range) -> tuple[int, str] | None:
    for seed in seeds:
        try:
            run_schedule(seed, CONFIGS[config], ticks=TICKS.get(config, 150))
        except Violation as e:
            return seed, str(e).splitlines()[0]
    return None


@pytest.mark.parametrize(
    ("mutation", "config", "expect"),
    [
        ("vote-for-less-up-to-date-log", "3", "Leader Completeness"),
        ("read-index-without-quorum", "5", "Linearizability"),
        ("leader-counts-itself-before-persisting", "3-crashy", "Leader Completeness"),
        ("send-vote-before-persisting", "3", "before its term is durable"),
        # Only power losses undo completed writes (a process crash does not): the "-power" configurations.
        ("write-entries-without-sync", "3-power", "Leader Completeness"),
        # Pipelined Readys: entries that replace ones already handed out must be handed out again.
        ("truncate-keeps-in-progress-offset", "3-pipelined-power", "Log Matching"),
        # The liveness budget grows with the backlog (Cluster.catch_up_ticks); a follower that never catches up fails.
        ("ignore-append-rejections", "3", "Liveness"),
    ],
)
def test_simulator_catches_planted_bug(mutation: str, config: str, expect: str) -> None:
    with planted(mutation):
        found = first_violation(config, range(400))
    assert found is not None, f"{mutation}: no violation in 400 schedules"
    assert expect in found[1], found


def test_vote_before_persisting_breaks_election_safety_observably() -> None:
    """The structural check ("sends before its term is durable") fires first for this bug; with it out of the way
    the behavioural consequence must still be caught: a node that crashes before its vote is durable votes again
    in the same term, and two leaders are elected."""
    cfg = SimConfig(
        nodes=3,
        pre_vote=False,
        check_quorum=False,
        lease_reads=False,
        p_crash=0.05,
        p_restart=0.2,
        disk_delay=0.9,
        p_propose=0.05,
    )
    with planted("send-vote-before-persisting"), mock.patch.object(Cluster, "_check_ready", _check_ready_log_only):
        found = first_violation_cfg(cfg, range(3000))
    assert found is not None and ("Election Safety" in found[1] or "Log Matching" in found[1]), found


def _check_ready_log_only(self: Cluster, n: Any, rd: Any) -> None:
    saved = rd.messages
    object.__setattr__(rd, "messages", ())
    try:
        _orig_check_ready(self, n, rd)
    finally:
        object.__setattr__(rd, "messages", saved)


_orig_check_ready = Cluster._check_ready


def first_violation_cfg(cfg: SimConfig, seeds: range) -> tuple[int, str] | None:
    for seed in seeds:
        try:
            run_schedule(seed, cfg, ticks=150)
        except Violation as e:
            return seed, str(e).splitlines()[0]
    return None


@pytest.mark.soak
@pytest.mark.parametrize("config", ["5-hunter", "3-hunter"])
def test_random_search_finds_figure_8(config: str) -> None:
    with planted("commit-old-term-by-counting"):
        found = first_violation(config, range(3000))
    assert found is not None
    assert "Leader Completeness" in found[1] or "State Machine Safety" in found[1], found
