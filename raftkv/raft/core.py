"""The Raft protocol state machine: the only mutable protocol state, driven by ``step`` and ``tick``.

It performs no I/O: it reads its durable state through ``LogStorage`` and leaves its effects (messages, entries to
persist, entries to apply, reads to serve) in buffers that ``RawNode.ready`` hands to the driver.

References: "In Search of an Understandable Consensus Algorithm" (Ongaro & Ousterhout, 2014) as §N, and Ongaro's
thesis "Consensus: Bridging Theory and Practice" (2014) as thesis §N.
"""

from __future__ import annotations

from collections.abc import Callable

from .config import Config
from .errors import (
    CompactedError,
    LostAcknowledgedEntries,
    ProposalDropped,
    SnapshotTemporarilyUnavailable,
    UnavailableError,
)
from .log import RaftLog
from .progress import Progress, ProgressState
from .quorum import VoteResult
from .read_only import ReadOnly, ReadRequest
from .storage import LogStorage
from .tracker import ProgressTracker
from .types import (
    EMPTY_HARD_STATE,
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MsgType,
    ReadState,
    Snapshot,
    SoftState,
    StateRole,
)

MAX_HEARD_ROUNDS = 64
"""A follower remembers the arrival of at most this many unconfirmed heartbeat rounds (``Raft.heard_rounds``)."""

CAMPAIGN_TRANSFER = b"transfer"
"""Context of a vote request forced by TimeoutNow: it bypasses pre-vote and leader stickiness."""

# Module-level aliases: a global int lookup is cheaper than an enum attribute lookup on the hot path.
FOLLOWER, CANDIDATE, LEADER, PRE_CANDIDATE = (
    StateRole.FOLLOWER,
    StateRole.CANDIDATE,
    StateRole.LEADER,
    StateRole.PRE_CANDIDATE,
)
HUP, BEAT, PROP, APP, APP_RESP = MsgType.HUP, MsgType.BEAT, MsgType.PROP, MsgType.APP, MsgType.APP_RESP
VOTE, VOTE_RESP, PRE_VOTE, PRE_VOTE_RESP = MsgType.VOTE, MsgType.VOTE_RESP, MsgType.PRE_VOTE, MsgType.PRE_VOTE_RESP
SNAP, HEARTBEAT, HEARTBEAT_RESP = MsgType.SNAP, MsgType.HEARTBEAT, MsgType.HEARTBEAT_RESP
UNREACHABLE, SNAP_STATUS, CHECK_QUORUM = MsgType.UNREACHABLE, MsgType.SNAP_STATUS, MsgType.CHECK_QUORUM
TRANSFER_LEADER, TIMEOUT_NOW = MsgType.TRANSFER_LEADER, MsgType.TIMEOUT_NOW
READ_INDEX, READ_INDEX_RESP = MsgType.READ_INDEX, MsgType.READ_INDEX_RESP
PROBE, REPLICATE, SNAPSHOT_STATE = ProgressState.PROBE, ProgressState.REPLICATE, ProgressState.SNAPSHOT


def shrinks_two_voters_to_one(cs: ConfState, cc: ConfChange) -> bool:
    """Whether ``cc`` applied to ``cs`` leaves one voter of two. Not safe against a crash of the departing node
    mid-change (the remaining voter may need its vote, and it may hold a longer log): drivers refuse it unless the
    operator forces it. Judge it against the membership the change will apply to: the core's, when no other
    change is pending (the core takes only one at a time)."""
    return len(cs.voters) == 2 and len(conf_state_after(cs, cc).voters) == 1


def conf_state_after(cs: ConfState, cc: ConfChange) -> ConfState:
    """The membership that applying ``cc`` to ``cs`` yields. A pure function: the driver's writer thread uses it to
    persist the new membership in the same transaction as the applied index, the core to adopt it. A change that
    would leave no voter is a no-op (the proposal checks should have refused it)."""
    voters = set(cs.voters)
    learners = set(cs.learners)
    nid = cc.node_id
    if cc.type == ConfChangeType.ADD_VOTER:
        learners.discard(nid)
        voters.add(nid)
    elif cc.type == ConfChangeType.ADD_LEARNER:
        voters.discard(nid)
        learners.add(nid)
    elif cc.type == ConfChangeType.REMOVE_NODE:
        voters.discard(nid)
        learners.discard(nid)
    if not voters or nid == NONE:
        return cs
    return ConfState(tuple(sorted(voters)), tuple(sorted(learners)))


class Raft:
    def __init__(self, config: Config, storage: LogStorage) -> None:
        config.validate()
        self.id = config.id
        self.log = RaftLog(storage, config.max_committed_size_per_ready)
        hs, cs = storage.initial_state()
        self.max_msg_size = config.max_size_per_msg
        self.max_uncommitted_size = config.max_uncommitted_entries_size
        self.uncommitted_size = 0
        self.trk = ProgressTracker(config.max_inflight_msgs, config.max_inflight_bytes)
        self.election_timeout = config.election_tick
        self.heartbeat_timeout = config.heartbeat_tick
        self.check_quorum = config.check_quorum
        self.pre_vote = config.pre_vote
        self.forward_proposals = config.forward_proposals
        self.max_inflight_read_rounds = config.max_inflight_read_rounds
        self.rng = config.rng

        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.state = FOLLOWER
        self.durable_term = hs.term
        """The term in the last hard state the driver made durable. A leader whose term is not yet durable must
        not send appends of that term (it could restart, forget the term, win it again and send different ones)."""
        self.msgs: list[Message] = []
        """Messages that may be sent at once (a leader's, once its term is durable)."""
        self.msgs_after_persist: list[Message] = []
        """Messages that promise durable state (votes, acknowledgements): sent after the Ready is persisted."""
        self.read_states: list[ReadState] = []
        self.read_only = ReadOnly()
        self.pending_read_requests: list[Message] = []
        """Read requests that reached a new leader before it committed an entry of its term (thesis §6.4 step 1)."""
        self.tick_count = 0
        """Ticks since this Raft object was created: the core's only clock."""
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = 0
        self.lead_transferee = NONE
        self.lease_disabled = False
        self.step_down_index = 0
        """Set when this leader applied its own removal (or demotion) at that index: it keeps leading, as a
        non-voter, until every remaining voter knows the change is committed, then hands over (thesis §4.2.2)."""
        self.step_down_round = 0
        self.removing_self = False
        """This leader proposed its own removal or demotion: it takes no more proposals (see Config)."""
        self.decode_conf_change = config.decode_conf_change
        self.pending_conf_index = 0
        self.restored_snapshot_index = 0
        """The index of the last snapshot installed from a leader (its membership includes every change up to it)."""
        self.last_leader_contact_tick = -1
        """Tick at which a follower last heard from its leader (-1: never, in this incarnation)."""
        self.heard_rounds: dict[int, int] = {}
        """Follower: the heartbeat rounds of the current leader (and term) received and not yet confirmed: round
        sequence number -> the tick it arrived at. At most ``MAX_HEARD_ROUNDS``."""
        self.fresh_tick = -1
        self.fresh_commit = 0
        """Follower: the newest read point known, as ``read_freshness`` describes it (-1: none yet)."""
        self._step_role: Callable[[Message], None] = self._step_follower

        self.trk.apply_conf(cs, self.log.last_index() + 1)
        if hs != EMPTY_HARD_STATE:
            self._load_state(hs)
        if config.applied > 0:
            self.log.applied_to(config.applied)
        self.become_follower(self.term, NONE)

    def _load_state(self, hs: HardState) -> None:
        if hs.commit < self.log.committed or hs.commit > self.log.last_index():
            raise AssertionError(
                f"{self.id} state.commit {hs.commit} is out of range [{self.log.committed}, {self.log.last_index()}]"
            )
        self.log.committed = hs.commit
        self.term = hs.term
        self.vote = hs.vote

    # -- state ------------------------------------------------------------------------------------------------
    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.state)

    def promotable(self) -> bool:
        """Only a voter that has not been removed may campaign."""
        return self.id in self.trk.voters and self.id in self.trk.progress

    def committed_entry_in_current_term(self) -> bool:
        return self.log.zero_term_on_out_of_bounds(self.log.committed) == self.term

    # -- sending ----------------------------------------------------------------------------------------------
    def _send(self, m: Message) -> None:
        if self.state == LEADER and self.term == self.durable_term:
            self.msgs.append(m)
        else:
            self.msgs_after_persist.append(m)

    def _send_append(self, to: int) -> None:
        self._maybe_send_append(to, True)

    def _maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        """Send an append (or a snapshot) to ``to`` unless its progress is paused. Returns whether it sent."""
        pr = self.trk.progress[to]
        if pr.is_paused():
            return False
        log = self.log
        prev = pr.next - 1
        try:
            prev_term = log.term(prev)
            ents = log.entries(pr.next, self.max_msg_size)
        except (CompactedError, UnavailableError):
            return self._maybe_send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        nbytes = 0
        for e in ents:
            nbytes += len(e.data)
        self._send(Message(APP, to, self.id, self.term, prev_term, prev, tuple(ents), log.committed))
        pr.sent_entries(len(ents), nbytes)
        return True

    def _maybe_send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # don't build and ship a snapshot to a node that may well be down
        try:
            snap = self.log.snapshot()
        except SnapshotTemporarilyUnavailable:
            return False
        if snap.is_empty:
            raise AssertionError("need a non-empty snapshot")
        pr.become_snapshot(snap.metadata.index)
        self._send(Message(SNAP, to, self.id, self.term, snapshot=snap))
        return True

    def bcast_append(self) -> None:
        for nid, _ in self.trk.peers(self.id):
            self._maybe_send_append(nid, True)

    def bcast_heartbeat(self) -> None:
        """Heartbeats are also read-only rounds: each broadcast gets the next sequence number (thesis §6.4). Each
        also tells the followers the newest confirmed round and the commit index it started with: their read point
        for bounded-staleness reads (see ``read_only``)."""
        committed = self.log.committed
        ro = self.read_only
        # The commit index proves something only once we committed an entry of our term (thesis §6.4 step 1).
        seq = ro.start_round(self.tick_count, committed if self.committed_entry_in_current_term() else -1)
        me = self.trk.progress.get(self.id)
        if me is not None:
            me.read_seq = seq
        cround, ccommit = (ro.quorum_seq, ro.quorum_commit) if ro.quorum_commit >= 0 else (0, 0)
        for nid, pr in self.trk.peers(self.id):
            # A follower may not yet hold the leader's commit index: never tell it to commit past its match.
            self._send(Message(HEARTBEAT, nid, self.id, self.term, commit=min(pr.match, committed), index=seq,
                               confirmed_round=cround, confirmed_commit=ccommit))
        self._maybe_confirm_reads()

    # -- time -------------------------------------------------------------------------------------------------
    def tick(self) -> None:
        self.tick_count += 1
        if self.state == LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.step(Message(HUP, frm=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                self.step(Message(CHECK_QUORUM, frm=self.id))
            # A transfer that has not finished within an election timeout is abandoned (thesis §3.10).
            if self.state == LEADER and self.lead_transferee != NONE:
                self.abort_leader_transfer()
        if self.state != LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self.step(Message(BEAT, frm=self.id))

    def reset_randomized_election_timeout(self) -> None:
        # §5.2: randomized timeouts in [T, 2T) make split votes rare.
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(self.election_timeout)

    # -- role transitions -------------------------------------------------------------------------------------
    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.reset_randomized_election_timeout()
        self.abort_leader_transfer()
        self.lease_disabled = False
        self.step_down_index = 0
        self.step_down_round = 0
        self.removing_self = False
        self.trk.reset_votes()
        last = self.log.last_index()
        trk = self.trk
        for nid, old in trk.progress.items():
            pr = Progress(last + 1, trk.max_inflight, trk.max_inflight_bytes, old.is_learner)
            if nid == self.id:
                pr.match = self.log.stable_last_index()
            trk.progress[nid] = pr
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.read_only = ReadOnly()
        self.pending_read_requests = []
        self.heard_rounds = {}  # round numbers are per leader and term

    def become_follower(self, term: int, lead: int) -> None:
        """Follow ``lead`` (or nobody) in ``term``. Keeps the vote if the term is unchanged."""
        self._step_role = self._step_follower
        self._reset(term)
        self.lead = lead
        self.state = FOLLOWER

    def become_pre_candidate(self) -> None:
        """Thesis §9.6: ask whether we could win before disrupting anyone. Term and vote stay as they are."""
        if self.state == LEADER:
            raise AssertionError("invalid transition [leader -> pre-candidate]")
        self._step_role = self._step_candidate
        self.trk.reset_votes()
        self.lead = NONE
        self.state = PRE_CANDIDATE

    def become_candidate(self) -> None:
        """§5.2: increment the term and vote for ourselves (persisted before any vote request leaves)."""
        if self.state == LEADER:
            raise AssertionError("invalid transition [leader -> candidate]")
        self._step_role = self._step_candidate
        self._reset(self.term + 1)
        self.vote = self.id
        self.state = CANDIDATE

    def become_leader(self) -> None:
        """Take over: every follower starts in PROBE; append a no-op of our term at once (§5.4.2, §8) so that
        earlier entries can be committed and read-index requests served."""
        if self.state == FOLLOWER:
            raise AssertionError("invalid transition [follower -> leader]")
        self._step_role = self._step_leader
        self._reset(self.term)
        self.lead = self.id
        self.state = LEADER
        me = self.trk.progress.get(self.id)
        if me is not None:
            me.become_replicate()  # our own progress only moves when our writes are durable
            me.match = self.log.stable_last_index()
            me.next = self.log.last_index() + 1
            me.recent_active = True
        self.pending_conf_index = self.log.last_index()
        self.removing_self = self._log_removes_self()
        self._append_entries([Entry(self.term, 0, EntryType.NORMAL, b"")])

    def _log_removes_self(self) -> bool:
        """Whether the membership changes in our log that are not yet applied remove (or demote) us."""
        decode = self.decode_conf_change
        lo = max(self.log.applied + 1, self.log.first_index())
        if decode is None or lo > self.log.last_index():
            return False
        cs = self.trk.conf_state()
        changed = False
        for e in self.log.slice(lo, self.log.last_index() + 1):
            if e.type == EntryType.CONF_CHANGE:
                cs = conf_state_after(cs, decode(e.data))
                changed = True
        return changed and self.id not in cs.voters

    def _hup(self, transfer: bool) -> None:
        if self.state == LEADER or not self.promotable():
            return
        if self._has_unapplied_conf_change():
            return  # a membership change we don't know the outcome of may change who may vote
        if transfer or not self.pre_vote:
            self._campaign(pre_vote=False, transfer=transfer)
        else:
            self._campaign(pre_vote=True, transfer=False)

    def _has_unapplied_conf_change(self) -> bool:
        log = self.log
        # (Entries before the log's first index are inside a snapshot, whose membership we already adopted.)
        lo = max(log.applied + 1, log.first_index())
        if lo > log.committed:
            return False
        return any(e.type == EntryType.CONF_CHANGE for e in log.slice(lo, log.committed + 1))

    def _campaign(self, pre_vote: bool, transfer: bool) -> None:
        if pre_vote:
            self.become_pre_candidate()
            msg_type, term = PRE_VOTE, self.term + 1  # what our term would be
        else:
            self.become_candidate()
            msg_type, term = VOTE, self.term
        # Our own vote counts at once; it is persisted before the vote requests below are sent (they wait for
        # the Ready to be durable because we are not leader), so no one can see the effect of a lost vote.
        self.trk.record_vote(self.id, True)
        if self._tally() == VoteResult.WON:
            # A single voter wins at once.
            if pre_vote:
                self._campaign(pre_vote=False, transfer=False)
            else:
                self.become_leader()
            return
        ctx = CAMPAIGN_TRANSFER if transfer else b""
        last = self.log.last_index()
        last_term = self.log.last_term()
        for nid in self.trk.voters:
            if nid != self.id:
                self._send(Message(msg_type, nid, self.id, term, last_term, last, context=ctx))

    def _tally(self) -> VoteResult:
        return self.trk.tally_votes()[2]

    # -- the entry point for every message --------------------------------------------------------------------
    def step(self, m: Message) -> None:
        t = m.type
        if m.term == 0:
            pass  # local message (or a forwarded proposal / read request, which carry no term)
        elif m.term > self.term:
            if t == VOTE or t == PRE_VOTE:
                force = m.context == CAMPAIGN_TRANSFER
                if not force and self.check_quorum and self._in_lease():
                    # Leader stickiness (thesis §4.2.3): we heard from a live leader less than an election timeout
                    # ago, so this candidate cannot be needed. Ignore it without adopting its term.
                    return
            if t == PRE_VOTE:
                pass  # a pre-vote never changes our term
            elif t == PRE_VOTE_RESP and not m.reject:
                pass  # a granted pre-vote carries the future term; we adopt it only by campaigning
            elif t == APP or t == HEARTBEAT or t == SNAP:
                self.become_follower(m.term, m.frm)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and (t == HEARTBEAT or t == APP):
                # A stale leader (partitioned away, or it restarted with pre-vote on) would never learn of the
                # new term otherwise: answer so it steps down. Without this a node isolated by pre-vote could
                # block elections forever.
                self._send(Message(APP_RESP, m.frm, self.id, self.term))
            elif t == PRE_VOTE:
                self._send(Message(PRE_VOTE_RESP, m.frm, self.id, self.term, reject=True))
            return  # every other stale message is ignored

        if t == HUP:
            self._hup(transfer=False)
        elif t == VOTE or t == PRE_VOTE:
            self._handle_vote_request(m)
        else:
            self._step_role(m)

    def _in_lease(self) -> bool:
        """True while we must not help elect anyone: we heard from a leader (or are the leader) less than an
        election timeout ago, or we started less than an election timeout ago and so cannot know whether we did.
        The second clause is what makes leader leases survive a follower's crash and restart."""
        if self.lead != NONE and self.election_elapsed < self.election_timeout:
            return True
        return self.tick_count < self.election_timeout

    def _handle_vote_request(self, m: Message) -> None:
        # One vote per term (§5.2): we may repeat a vote we gave, or vote if we have neither voted nor seen a
        # leader in this term; a pre-vote for a future term is always open.
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == PRE_VOTE and m.term > self.term)
        )
        resp = VOTE_RESP if m.type == VOTE else PRE_VOTE_RESP
        # §5.4.1: only for a candidate whose log is at least as up to date as ours.
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # A granted pre-vote answers with the term the candidate asked about, so it is not taken as stale.
            self._send(Message(resp, m.frm, self.id, m.term))
            if m.type == VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(Message(resp, m.frm, self.id, self.term, reject=True))

    # -- leader -----------------------------------------------------------------------------------------------
    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == BEAT:
            self.bcast_heartbeat()
            return
        if t == CHECK_QUORUM:
            if not self.trk.quorum_active() and not self.step_down_index:
                # (A removed leader handing over stays: as a non-voter it can commit nothing and confirm no read,
                # and the remaining voters may need it to learn that the change committed. A higher term ends it.)
                # §6.2 / thesis §6.2: a leader that cannot reach a majority steps down instead of lingering.
                self.become_follower(self.term, NONE)
                return
            for _nid, peer in self.trk.peers(self.id):
                peer.recent_active = False
            return
        if t == PROP:
            self._leader_propose(m)
            return
        if t == READ_INDEX:
            self._leader_read_index(m)
            return

        pr = self.trk.progress.get(m.frm)
        if pr is None:
            return
        if t == APP_RESP:
            self._handle_append_response(m, pr)
        elif t == HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == REPLICATE and pr.inflights.full():
                pr.inflights.free_first_one()  # make room: an append may have been lost
            if pr.match < self.log.last_index():
                self._send_append(m.frm)
            if m.index > pr.read_seq:
                pr.read_seq = m.index
                self._maybe_confirm_reads()
                if self.step_down_index:
                    self._maybe_hand_over()
        elif t == SNAP_STATUS:
            if pr.state != SNAPSHOT_STATE:
                return
            if m.reject:
                pr.pending_snapshot = 0
            pr.become_probe()
            # Wait for a heartbeat response before probing: the snapshot may still be being applied.
            pr.probe_sent = True
        elif t == UNREACHABLE:
            if pr.state == REPLICATE:
                pr.become_probe()
        elif t == TRANSFER_LEADER:
            self._leader_transfer(m, pr)

    def _leader_propose(self, m: Message) -> None:
        if not m.entries:
            raise ValueError("stepped empty proposal")
        if self.id not in self.trk.progress:
            raise ProposalDropped(ProposalDropped.NOT_LEADER, NONE)  # we were removed
        if self.lead_transferee != NONE or self.step_down_index or self.removing_self:
            raise ProposalDropped(ProposalDropped.TRANSFERRING, self.lead)
        ents = list(m.entries)
        removes_self = False
        for i, e in enumerate(ents):
            if e.type == EntryType.CONF_CHANGE:
                # One membership change at a time, and only once an entry of our term is committed (the fix
                # for single-server changes: thesis §4.1 errata, "Raft single-server membership bug").
                if self.pending_conf_index > self.log.applied or not self.committed_entry_in_current_term():
                    raise ProposalDropped(ProposalDropped.CONF_CHANGE_PENDING, self.lead)
                if self.decode_conf_change is not None:
                    cc = self.decode_conf_change(e.data)
                    if self.id not in conf_state_after(self.trk.conf_state(), cc).voters:
                        removes_self = True
                        del ents[i + 1 :]  # nothing may follow our own removal in our log
                        break
                self.pending_conf_index = self.log.last_index() + 1 + i
        if removes_self:
            self.pending_conf_index = self.log.last_index() + len(ents)
        if not self._append_entries(ents):
            raise ProposalDropped(ProposalDropped.TOO_LARGE, self.lead)
        if removes_self:
            self.removing_self = True
        self.bcast_append()

    def _append_entries(self, ents: list[Entry]) -> bool:
        """Append new entries of our term. Our own progress does not move here: it moves when the driver reports
        them durable (``on_persisted``), so the leader never counts itself for entries it may still lose."""
        size = 0
        for e in ents:
            size += len(e.data)
        limit = self.max_uncommitted_size
        # A single oversized proposal is let through when nothing else is pending, so it cannot wedge the log.
        if limit and size and self.uncommitted_size > 0 and self.uncommitted_size + size > limit:
            return False
        self.uncommitted_size += size
        li = self.log.last_index()
        term = self.term
        self.log.append([Entry(term, li + 1 + i, e.type, e.data) for i, e in enumerate(ents)])
        return True

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        if m.reject:
            # §5.3 optimisation: the follower told us where its log may match (reject_hint) and that entry's
            # term; skip every entry of ours with a larger term in one round trip.
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe = self.log.find_conflict_by_term(m.reject_hint, m.log_term)[0]
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state == REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm)
            return
        old_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state == PROBE:
            pr.become_replicate()
        elif pr.state == SNAPSHOT_STATE and pr.match + 1 >= self.log.first_index():
            # The snapshot (or a later append) brought the follower to where our log starts: stream from here.
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == REPLICATE:
            pr.inflights.free_le(m.index)
        if self._maybe_commit():
            self._after_commit()
        elif old_paused:
            self._send_append(m.frm)
        # Pipelining: keep sending while the window has room and there is something to send.
        while self._maybe_send_append(m.frm, False):
            pass
        if m.frm == self.lead_transferee and pr.match == self.log.last_index():
            self._send_timeout_now(m.frm)

    def _maybe_commit(self) -> bool:
        # §5.4.2: entries of earlier terms are committed only indirectly, by committing one of the current term.
        return self.log.maybe_commit(self.trk.committed(), self.term)

    def _after_commit(self) -> None:
        if self.pending_read_requests and self.committed_entry_in_current_term():
            pending, self.pending_read_requests = self.pending_read_requests, []
            for m in pending:
                self._leader_read_index(m)
        self.bcast_append()  # tell followers the new commit index

    def on_persisted(self, index: int, term: int) -> None:
        """The driver made our log durable up to (index, term): as leader, count ourselves now."""
        if self.state != LEADER:
            return
        me = self.trk.progress.get(self.id)
        if me is None or not self.log.match_term(index, term):
            return
        if me.maybe_update(index) and self._maybe_commit():
            self._after_commit()

    def _leader_read_index(self, m: Message) -> None:
        if not self.committed_entry_in_current_term():
            # Thesis §6.4 step 1: our commit index is only known to be current once we committed in our term (even
            # as the only voter: after a restart the durable commit index may lag what we committed before).
            self.pending_read_requests.append(m)
            return
        if self.trk.voters == (self.id,):  # we are the only voter: no one else can have committed anything
            self._respond_read(ReadRequest(0, self.log.committed, m.context, m.frm))
            return
        self.read_only.add_request(self.log.committed, m.context, m.frm)

    def flush_read_round(self) -> None:
        """Start one heartbeat round for every read request that arrived since the last round began."""
        if self.state == LEADER and self.read_only.round_due(self.max_inflight_read_rounds):
            self.bcast_heartbeat()

    def _maybe_confirm_reads(self) -> None:
        ro = self.read_only
        qs = self.trk.quorum_read_seq()
        if qs > ro.quorum_seq:
            for req in ro.confirm(qs):
                self._respond_read(req)

    def _respond_read(self, req: ReadRequest) -> None:
        if req.frm == NONE or req.frm == self.id:
            self.read_states.append(ReadState(req.index, req.ctx))
        else:
            self._send(Message(READ_INDEX_RESP, req.frm, self.id, self.term, index=req.index, context=req.ctx))

    def read_freshness(self) -> tuple[int, int] | None:
        """A read point for bounded-staleness reads: ``(tick, commit)`` such that every entry committed anywhere
        before ``tick`` (on this node's tick clock) is at or below ``commit``; a node that has applied ``commit``
        serves state that is current as of ``tick``. None when no such point is known.

        Leader: the start of the newest heartbeat round a majority acknowledged, and our commit index then (a
        single voter: now). Follower: the arrival of the newest confirmed round's heartbeat from the leader, and the
        commit index the leader said that round started with. The follower's tick is when the heartbeat arrived,
        not when the leader sent it: the one-way delay of that message is not counted."""
        if self.state == LEADER:
            if self.trk.voters == (self.id,):
                return (self.tick_count, self.log.committed) if self.committed_entry_in_current_term() else None
            ro = self.read_only
            return (ro.quorum_tick, ro.quorum_commit) if ro.quorum_commit >= 0 else None
        return (self.fresh_tick, self.fresh_commit) if self.fresh_tick >= 0 else None

    def lease_read_index(self, max_lease_ticks: int) -> int | None:
        """The commit index if our lease holds: a majority acknowledged a heartbeat round that started less than
        ``max_lease_ticks`` ago, we committed an entry of our term, and no leadership transfer was started (a
        forced election ignores stickiness). ``max_lease_ticks`` must leave room for clock drift; at most
        ``election_tick``. None otherwise (use ReadIndex)."""
        if self.state != LEADER or self.lease_disabled or self.lead_transferee != NONE:
            return None
        if not self.committed_entry_in_current_term():
            return None
        if self.trk.voters != (self.id,):
            start = self.read_only.quorum_tick
            if start < 0 or self.tick_count - start >= min(max_lease_ticks, self.election_timeout):
                return None
        return self.log.committed

    def _leader_transfer(self, m: Message, pr: Progress) -> None:
        if pr.is_learner:
            return
        transferee = m.frm
        if self.lead_transferee != NONE:
            if self.lead_transferee == transferee:
                return  # already under way
            self.abort_leader_transfer()
        if transferee == self.id:
            return
        # Thesis §3.10: stop accepting proposals, bring the target up to date, then tell it to campaign at once.
        self.election_elapsed = 0  # the transfer must finish within one election timeout
        self.lead_transferee = transferee
        if pr.match == self.log.last_index():
            self._send_timeout_now(transferee)
        else:
            self._send_append(transferee)

    def _maybe_hand_over(self) -> None:
        """A removed leader steps down once every remaining voter holds the change and acknowledged a heartbeat round
        started after that (its heartbeat carried a commit index at or beyond the change)."""
        idx = self.step_down_index
        if not idx or self.state != LEADER:
            return
        prs = self.trk.progress
        voters = [v for v in self.trk.voters if v in prs]
        if not voters or any(prs[v].match < idx for v in voters):
            return
        if not self.step_down_round:
            self.step_down_round = self.read_only.seq + 1  # the next round tells everyone the commit index
            return
        if any(prs[v].read_seq < self.step_down_round for v in voters):
            return
        best = max(voters, key=lambda v: (prs[v].match, -v))
        if prs[best].match == self.log.last_index():
            self._send_timeout_now(best)
        self.become_follower(self.term, NONE)

    def _send_timeout_now(self, to: int) -> None:
        self.lease_disabled = True  # the target's forced election ignores follower stickiness
        self._send(Message(TIMEOUT_NOW, to, self.id, self.term))

    def abort_leader_transfer(self) -> None:
        self.lead_transferee = NONE

    # -- candidate --------------------------------------------------------------------------------------------
    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t == PROP:
            raise ProposalDropped(ProposalDropped.NOT_LEADER, NONE)
        if t == READ_INDEX:
            if m.frm == self.id:
                raise ProposalDropped(ProposalDropped.NOT_LEADER, NONE)
            return
        if t == APP:
            self.become_follower(m.term, m.frm)  # a leader of our term exists (§5.2)
            self._handle_append(m)
        elif t == HEARTBEAT:
            self.become_follower(m.term, m.frm)
            self._handle_heartbeat(m)
        elif t == SNAP:
            self.become_follower(m.term, m.frm)
            self._handle_snapshot(m)
        elif (t == PRE_VOTE_RESP and self.state == PRE_CANDIDATE) or (t == VOTE_RESP and self.state == CANDIDATE):
            self.trk.record_vote(m.frm, not m.reject)
            res = self._tally()
            if res == VoteResult.WON:
                if self.state == PRE_CANDIDATE:
                    self._campaign(pre_vote=False, transfer=False)
                else:
                    self.become_leader()
                    self.bcast_append()
            elif res == VoteResult.LOST:
                # A rejected pre-vote or vote: go back to following (the term stays as it is).
                self.become_follower(self.term, NONE)

    # -- follower ---------------------------------------------------------------------------------------------
    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == PROP:
            if self.lead == NONE or not self.forward_proposals:
                raise ProposalDropped(ProposalDropped.NOT_LEADER, self.lead)
            self._send(Message(PROP, self.lead, self.id, 0, entries=m.entries))
        elif t == APP:
            self._heard_from_leader(m)
            self._handle_append(m)
        elif t == HEARTBEAT:
            self._heard_from_leader(m)
            self._handle_heartbeat(m)
        elif t == SNAP:
            self._heard_from_leader(m)
            self._handle_snapshot(m)
        elif t == TRANSFER_LEADER:
            if self.lead != NONE:
                self._send(m._replace(to=self.lead))  # frm is the transferee; the leader acts on it
        elif t == TIMEOUT_NOW:
            # Thesis §3.10: our leader asks us to take over at once, skipping pre-vote and stickiness.
            self._hup(transfer=True)
        elif t == READ_INDEX:
            if self.lead == NONE:
                if m.frm == self.id:
                    raise ProposalDropped(ProposalDropped.NOT_LEADER, NONE)
                return
            self._send(Message(READ_INDEX, self.lead, self.id, 0, context=m.context))
        elif t == READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))

    def _heard_from_leader(self, m: Message) -> None:
        self.election_elapsed = 0
        self.lead = m.frm
        self.last_leader_contact_tick = self.tick_count

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            # Everything up to our commit index is known to match: say so, so the leader can skip ahead.
            self._send(Message(APP_RESP, m.frm, self.id, self.term, index=log.committed))
            return
        last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self._send(Message(APP_RESP, m.frm, self.id, self.term, index=last_new))
            return
        # §5.3: reject, and hint where our log may match: the largest index <= the probe whose term is at most
        # the probe's term. The leader can then skip a whole term's worth of entries at once.
        hint_index = min(m.index, log.last_index())
        hint_index, hint_term = log.find_conflict_by_term(hint_index, m.log_term)
        self._send(
            Message(APP_RESP, m.frm, self.id, self.term, hint_term, m.index, reject=True, reject_hint=hint_index)
        )

    def _handle_heartbeat(self, m: Message) -> None:
        if m.commit > self.log.last_index():
            # The leader sends min(our match, its commit), and our match comes only from our own acknowledgements:
            # we acknowledged entries we no longer have (an older copy of our data, or a disk that lied).
            raise LostAcknowledgedEntries(m.commit, self.log.last_index())
        self.log.commit_to(m.commit)
        heard = self.heard_rounds
        if m.index:
            heard[m.index] = self.tick_count
        if m.confirmed_round:
            # A majority acknowledged that round after it started: as of its start (which was before we received
            # it), everything committed anywhere is at or below confirmed_commit.
            at = heard.get(m.confirmed_round)
            if at is not None and at >= self.fresh_tick:
                self.fresh_tick, self.fresh_commit = at, m.confirmed_commit
            for s in [s for s in heard if s <= m.confirmed_round]:
                del heard[s]
        if len(heard) > MAX_HEARD_ROUNDS:  # confirmations are not coming (no quorum): keep the newest rounds
            del heard[min(heard)]
        self._send(Message(HEARTBEAT_RESP, m.frm, self.id, self.term, index=m.index))

    def _handle_snapshot(self, m: Message) -> None:
        assert m.snapshot is not None
        index = self.log.last_index() if self.restore(m.snapshot) else self.log.committed
        self._send(Message(APP_RESP, m.frm, self.id, self.term, index=index))

    def restore(self, snap: Snapshot) -> bool:
        """Install a snapshot from the leader. Returns False if it was stale or our log already has it."""
        md = snap.metadata
        if md.index <= self.log.committed:
            return False
        if self.state != FOLLOWER:
            # Defensive: only a follower installs snapshots. Step up a term so no second leader can exist.
            self.become_follower(self.term + 1, NONE)
            return False
        cs = md.conf_state
        if self.id not in cs.voters and self.id not in cs.learners:
            return False  # a snapshot of a configuration without us: ignore it
        if self.log.match_term(md.index, md.term):
            # Our log already contains the snapshot's last entry: just fast-forward the commit index.
            self.log.commit_to(md.index)
            return False
        self.log.restore(snap)
        self.restored_snapshot_index = md.index
        self.trk = ProgressTracker(self.trk.max_inflight, self.trk.max_inflight_bytes)
        self.trk.apply_conf(cs, self.log.last_index() + 1)
        pr = self.trk.progress[self.id]
        pr.maybe_update(md.index)
        return True

    # -- membership ------------------------------------------------------------------------------------------
    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed membership change (single-server, thesis §4.1) and return the new membership.

        The new configuration takes effect when the entry is applied. That is safe because a leader proposes a
        change only after committing an entry of its own term and only when no other change is pending (see
        ``_leader_propose``), so the old and new configurations, which differ by one server, always overlap."""
        cs = conf_state_after(self.trk.conf_state(), cc)
        self.apply_conf_state(cs)
        return cs

    def apply_conf_state(self, cs: ConfState) -> None:
        """Adopt a membership (from an applied change or a snapshot's metadata)."""
        self.trk.apply_conf(cs, self.log.last_index() + 1)
        if self.state == LEADER:
            if self.id not in cs.voters:
                # Thesis §4.2.2: the leader may be removed. It does not step down at once: with configurations
                # taking effect when applied, the remaining voters might not yet know the removal is committed, and
                # could then wait forever for a vote from the node that left. It keeps replicating (as a non-voter:
                # it no longer counts in any quorum and refuses proposals) until every remaining voter knows, then
                # hands over to the most up-to-date one.
                self.step_down_index = max(self.step_down_index, self.log.applying)
                self._maybe_hand_over()
                return
            self.removing_self = False  # (a change that turned out not to remove us, e.g. refused as the last voter)
            if self.lead_transferee != NONE and self.lead_transferee not in cs.voters:
                self.abort_leader_transfer()
            if self._maybe_commit():
                self._after_commit()  # a smaller quorum may commit more
            else:
                self.bcast_append()  # new members need appends (they start probing)
