"""RawNode: the public face of the core. Feed it ticks, messages, proposals and read requests; take a ``Ready``;
carry it out; call ``advance``.

Contract: the driver carries out each Ready's writes in the order the Readys were taken, and calls ``advance(rd)``
for each, in that order, once its write is durable and its committed entries applied. It may keep stepping and take
further Readys before that (each holds only what earlier ones did not: their writes are pipelined), except that a
Ready carrying a snapshot is handed out only when no other Ready is outstanding, and no Ready follows it until it is
advanced. A driver that advances each Ready before taking the next (the simplest) is the special case.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .config import Config
from .core import Raft
from .errors import ProposalDropped
from .progress import ProgressState
from .storage import LogStorage
from .types import (
    LOCAL_MESSAGES,
    NONE,
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MsgType,
    Ready,
    SoftState,
    StateRole,
)

_RESPONSES = frozenset({MsgType.APP_RESP, MsgType.VOTE_RESP, MsgType.PRE_VOTE_RESP, MsgType.HEARTBEAT_RESP})


@dataclass(frozen=True, slots=True)
class ProgressStatus:
    match: int
    next: int
    state: ProgressState
    recent_active: bool
    inflight: int
    is_learner: bool


@dataclass(frozen=True, slots=True)
class Status:
    id: int
    term: int
    vote: int
    commit: int
    applied: int
    last_index: int
    lead: int
    role: StateRole
    lead_transferee: int
    conf_state: ConfState
    progress: dict[int, ProgressStatus] = field(default_factory=dict)


class RawNode:
    def __init__(self, config: Config, storage: LogStorage) -> None:
        self.raft = Raft(config, storage)
        self._prev_soft = self.raft.soft_state()
        self._prev_hard = self.raft.hard_state()
        """The soft and hard state as of the last Ready taken (what the driver was last told)."""
        self._outstanding = 0
        """Readys taken and not yet advanced."""
        self._snapshot_outstanding = False

    # -- inputs -----------------------------------------------------------------------------------------------
    def tick(self) -> None:
        self.raft.tick()

    def campaign(self) -> None:
        """Start an election now (pre-vote first if enabled)."""
        self.raft.step(Message(MsgType.HUP, frm=self.raft.id))

    def propose(self, data: bytes) -> None:
        """Propose one entry. Raises ProposalDropped (with the known leader) if it cannot be appended here."""
        self.raft.step(Message(MsgType.PROP, frm=self.raft.id, entries=(Entry(0, 0, EntryType.NORMAL, data),)))

    def propose_many(self, datas: Iterable[bytes]) -> None:
        """Propose a batch of entries in one step (one append, one broadcast)."""
        ents = tuple(Entry(0, 0, EntryType.NORMAL, d) for d in datas)
        if ents:
            self.raft.step(Message(MsgType.PROP, frm=self.raft.id, entries=ents))

    def propose_conf_change(self, data: bytes) -> None:
        self.raft.step(Message(MsgType.PROP, frm=self.raft.id, entries=(Entry(0, 0, EntryType.CONF_CHANGE, data),)))

    def apply_conf_change(self, cc: ConfChange, index: int | None = None) -> ConfState:
        """Apply a committed CONF_CHANGE entry's change (the driver decodes the entry; ``index`` is the entry's).
        Returns the new membership, which the driver must persist with the applied index.

        An entry at or below a snapshot the core installed meanwhile is skipped: a snapshot stepped while an earlier
        Ready was being applied already carries the membership after that entry, and applying it again on top would
        move the core's membership away from the durable one."""
        if index is not None and index <= self.raft.restored_snapshot_index:
            return self.raft.trk.conf_state()
        return self.raft.apply_conf_change(cc)

    def step(self, m: Message) -> None:
        """Step a message from a peer. Local message types are refused; responses from non-members ignored."""
        if m.type in LOCAL_MESSAGES:
            raise ValueError(f"cannot step local message {MsgType(m.type).name} from the network")
        if m.type in _RESPONSES and m.frm not in self.raft.trk.progress:
            return
        try:
            self.raft.step(m)
        except ProposalDropped:
            pass  # a forwarded proposal the leader cannot take is dropped, as if lost on the wire

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read point; a ReadState with ``ctx`` arrives in a later Ready.

        Raises ProposalDropped when this node knows no leader."""
        self.raft.step(Message(MsgType.READ_INDEX, frm=self.raft.id, context=ctx))

    def transfer_leader(self, transferee: int) -> None:
        self.raft.step(Message(MsgType.TRANSFER_LEADER, frm=transferee))

    def report_unreachable(self, nid: int) -> None:
        self.raft.step(Message(MsgType.UNREACHABLE, frm=nid))

    def report_snapshot(self, nid: int, ok: bool) -> None:
        self.raft.step(Message(MsgType.SNAP_STATUS, frm=nid, reject=not ok))

    # -- outputs ----------------------------------------------------------------------------------------------
    @property
    def outstanding(self) -> int:
        """Readys taken and not yet advanced."""
        return self._outstanding

    def has_ready(self) -> bool:
        r = self.raft
        log = r.log
        if self._snapshot_outstanding:
            return False
        if self._outstanding and log.unstable.snapshot is not None and not log.unstable.snapshot_in_progress:
            return False  # a snapshot to install waits until the writes before it are done
        return bool(
            r.msgs
            or r.msgs_after_persist
            or log.unstable.has_new()
            or r.read_states
            or log.has_next_committed_ents()
            or (r.state == StateRole.LEADER and r.read_only.round_due(r.max_inflight_read_rounds))
            or r.soft_state() != self._prev_soft
            or r.hard_state() != self._prev_hard
        )

    def ready(self) -> Ready:
        if self._snapshot_outstanding:
            raise RuntimeError("ready() called while a Ready carrying a snapshot is outstanding")
        r = self.raft
        if self._outstanding and r.log.unstable.snapshot is not None and not r.log.unstable.snapshot_in_progress:
            raise RuntimeError("ready() called with a snapshot to install while other Readys are outstanding")
        r.flush_read_round()
        log = r.log
        soft = r.soft_state()
        hs = r.hard_state()
        prev = self._prev_hard
        hard = hs if hs != prev else None
        snap, ents = log.unstable.take_new()
        committed = tuple(log.next_committed_ents())
        if committed:
            log.applying_to(committed[-1].index)
        msgs, r.msgs = r.msgs, []
        after, r.msgs_after_persist = r.msgs_after_persist, []
        rs, r.read_states = r.read_states, []
        must_sync = (
            bool(ents) or snap is not None or (hard is not None and (hs.term != prev.term or hs.vote != prev.vote))
        )
        soft_changed = soft != self._prev_soft
        self._outstanding += 1
        self._snapshot_outstanding = snap is not None
        self._prev_soft = soft
        self._prev_hard = hs
        return Ready(
            soft_state=soft if soft_changed else None,
            hard_state=hard,
            snapshot=snap,
            entries=ents,
            messages=tuple(msgs),
            persisted_messages=tuple(after),
            committed_entries=committed,
            read_states=tuple(rs),
            must_sync=must_sync,
        )

    def advance(self, rd: Ready) -> None:
        """The driver carried out ``rd`` (the oldest Ready outstanding): its writes are durable and its committed
        entries applied."""
        if self._outstanding <= 0:
            raise RuntimeError("advance() without an outstanding Ready")
        self._outstanding -= 1
        r = self.raft
        if rd.snapshot is not None:
            self._snapshot_outstanding = False
        if rd.hard_state is not None:
            r.durable_term = rd.hard_state.term
        if rd.snapshot is not None:
            r.log.stable_snap_to(rd.snapshot.metadata.index)
            r.log.applied_to(rd.snapshot.metadata.index)
        if rd.entries:
            last = rd.entries[-1]
            r.log.stable_to(last.index, last.term)
            r.on_persisted(last.index, last.term)
        if rd.committed_entries:
            r.log.applied_to(rd.committed_entries[-1].index)
            if r.state == StateRole.LEADER and r.uncommitted_size:
                size = 0
                for e in rd.committed_entries:
                    size += len(e.data)
                r.uncommitted_size = max(0, r.uncommitted_size - size)

    # -- introspection ----------------------------------------------------------------------------------------
    # What a driver may read of the core (it never reaches into ``raft``): cheap properties for the hot path, and
    # ``status()`` for the rest.
    @property
    def id(self) -> int:
        return self.raft.id

    @property
    def role(self) -> StateRole:
        return self.raft.state

    @property
    def leader(self) -> int:
        """The known leader's id (0: none)."""
        return self.raft.lead

    @property
    def term(self) -> int:
        return self.raft.term

    @property
    def last_index(self) -> int:
        return self.raft.log.last_index()

    @property
    def committed(self) -> int:
        return self.raft.log.committed

    @property
    def applying(self) -> int:
        """The last index handed out in a Ready for applying (it may still be under way)."""
        return self.raft.log.applying

    def conf_state(self) -> ConfState:
        """The membership the core works with now."""
        return self.raft.trk.conf_state()

    def committed_entry_in_current_term(self) -> bool:
        """As leader: whether an entry of our term is committed (only then is our commit index known current)."""
        return self.raft.committed_entry_in_current_term()

    @property
    def hard_state(self) -> HardState:
        return self.raft.hard_state()

    @property
    def soft_state(self) -> SoftState:
        return self.raft.soft_state()

    def lease_read_index(self, max_lease_ticks: int) -> int | None:
        return self.raft.lease_read_index(max_lease_ticks)

    def read_freshness(self) -> tuple[int, int] | None:
        """``(tick, commit)``: state that includes ``commit`` is current as of ``tick`` (see ``Raft.read_freshness``);
        ``tick`` counts this RawNode's ticks. None when no such point is known yet."""
        return self.raft.read_freshness()

    def ticks_since_leader_contact(self) -> int | None:
        """Ticks since a follower last heard from its leader (0 on the leader; None if never)."""
        r = self.raft
        if r.state == StateRole.LEADER:
            return 0
        if r.last_leader_contact_tick < 0:
            return None
        return r.tick_count - r.last_leader_contact_tick

    def status(self) -> Status:
        r = self.raft
        progress = {}
        if r.state == StateRole.LEADER:
            progress = {
                nid: ProgressStatus(pr.match, pr.next, pr.state, pr.recent_active, pr.inflights.count(), pr.is_learner)
                for nid, pr in sorted(r.trk.progress.items())
            }
        return Status(
            id=r.id,
            term=r.term,
            vote=r.vote,
            commit=r.log.committed,
            applied=r.log.applied,
            last_index=r.log.last_index(),
            lead=r.lead,
            role=r.state,
            lead_transferee=r.lead_transferee,
            conf_state=r.trk.conf_state(),
            progress=progress,
        )


__all__ = ["NONE", "ProgressStatus", "RawNode", "Status"]
