"""The node's logic with no I/O: what a raftkv node decides, as a pure object driven by events.

A ``Replica`` owns the Raft core (``RawNode``) and everything the daemon decides around it: which requests are
waiting for which log entries, proposal batching, forwarding to the leader and noticing when a forwarded request
was lost, read-index rounds and the consistency decisions (lease, bounded and linearizable reads), leadership
transfer, and adopting the replicated member table. It has no asyncio, no clock, no threads and no sockets, as
h11 or etcd's RawNode: events go in as method calls, effects come out through ``ReplicaIO``.

Events in: client requests (``propose``, ``propose_member_change``, ``read``, ``transfer``, ``forget``), peer
messages and reports (``on_messages``, ``on_unreachable``, ``on_snapshot_status``), the state machine's results
(``on_results``), and the passage of time (``step(now, wall_ns)``: the monotonic time and the wall clock are
passed in, never read). Then the driver takes Readys (``has_ready``, ``ready``, ``start_ready``, ``finish_ready``,
the two halves of ``raftkv.ready``, pipelined as the driver likes).

Effects out (``ReplicaIO``): send messages, persist a Ready, respond to a request or fail it, resolve or fail a
group of reads, change the transport's peers, and say that leadership changed or that this node was removed.

The asyncio daemon (``raftkv.node``) drives one with queues, a ticker, a writer thread and futures keyed by request
id; the simulator (``tests/sim``) drives several from one seed, with simulated network, disk and clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import (
    APPLIED_UNKNOWN,
    InvalidArgument,
    NotLeader,
    RaftKVError,
    Removed,
    Unavailable,
)
from .kv import (
    Applied,
    Command,
    HashMark,
    LeaseGrantResult,
    LeaseRevoke,
    LeaseRevokeResult,
    MemberChange,
    MemberInfo,
    decode_conf_change,
    encode_batch,
    encode_change,
)
from .lessor import Lessor
from .raft import (
    ConfChangeType,
    Config,
    EntryType,
    Message,
    MsgType,
    ProposalDropped,
    RawNode,
    Ready,
    StateRole,
)
from .raft.config import RandomSource
from .raft.core import shrinks_two_voters_to_one
from .ready import finish_ready, start_ready
from .settings import Settings

__all__ = ["MemberTable", "Replica", "ReplicaIO", "ReplicaStats", "core_config"]

log = logging.getLogger("raftkv.node")

_PROP = MsgType.PROP


def core_config(settings: Settings, applied: int, rng: RandomSource) -> Config:
    """The Raft core's configuration for a node with ``settings`` that has applied up to ``applied``: pre-vote and
    check-quorum always on (a partitioned node must not disrupt, a partitioned leader must step down)."""
    return Config(
        id=settings.id,
        election_tick=settings.election_ticks,
        heartbeat_tick=settings.heartbeat_ticks,
        applied=applied,
        max_size_per_msg=settings.max_size_per_msg,
        max_inflight_msgs=settings.max_inflight_msgs,
        max_inflight_read_rounds=settings.max_inflight_read_rounds,
        check_quorum=True,
        pre_vote=True,
        forward_proposals=settings.forward_proposals,
        decode_conf_change=decode_conf_change,
        rng=rng,
    )


class ReplicaIO(Protocol):
    """The effects of a ``Replica``: what its driver does on its behalf. Every method must return at once."""

    def send(self, msgs: Sequence[Message]) -> None:
        """Send messages to peers (``ReadyIO.send``)."""
        ...

    def persist(self, rd: Ready) -> Any:
        """Start ``rd``'s durable write (``ReadyIO.persist``); the driver calls ``finish_ready`` when it is done."""
        ...

    def respond(self, request_id: int, applied: Applied) -> None:
        """The request was applied: answer it with ``applied``."""
        ...

    def fail(self, request_id: int, err: RaftKVError) -> None:
        """The request failed with ``err`` (``err.applied`` says whether it may still have been applied)."""
        ...

    def reads_done(self, read_ids: Sequence[int], index: int) -> None:
        """A majority confirmed the leadership after these reads were asked for: each may be served once ``index``
        is applied here."""
        ...

    def reads_failed(self, read_ids: Sequence[int], err: RaftKVError) -> None:
        ...

    def set_peers(self, peers: dict[int, str]) -> None:
        """Talk to exactly these peers (id -> peer address) from now on."""
        ...

    def refuse(self, node_ids: Iterable[int]) -> None:
        """Refuse messages from these (removed) nodes, telling them why."""
        ...

    def leadership_changed(self, lead: int, role: StateRole) -> None:
        ...

    def removed(self, err: RaftKVError) -> None:
        """This node applied its own removal: everything still waiting on the driver's side fails with ``err``."""
        ...


class MemberTable(Protocol):
    """The replicated member table and lease table, as the state machine has applied them (``KVStateMachine`` is
    one)."""

    def members(self) -> list[MemberInfo]: ...

    def removed_members(self) -> Collection[int]: ...

    def leases(self) -> list[tuple[int, int, int]]:
        """Every lease: ``(id, ttl_s, stamp)``."""
        ...


@dataclass
class ReplicaStats:
    commands_proposed: int = 0
    commands_forwarded: int = 0
    """Commands this node proposed as a follower, forwarded to the leader."""
    batches_proposed: int = 0
    read_rounds: int = 0
    read_refreshes: int = 0
    """Read-index requests asked with no read waiting: a bounded read found no fresh point (``bounded_read_ok``)."""
    reads_served: int = 0
    entries_applied: int = 0
    snapshots_installed: int = 0
    lease_renewals: int = 0
    leases_expired: int = 0
    """Revokes this node proposed as the leader for leases whose deadline passed."""


class _ReadyIO:
    """``raftkv.ready``'s ReadyIO for a Replica: the driver's send and persist, the Replica's applied."""

    __slots__ = ("applied", "persist", "send")

    def __init__(self, io: ReplicaIO, applied: Callable[[Ready, Any], None]) -> None:
        self.send = io.send
        self.persist = io.persist
        self.applied = applied


class Replica:
    def __init__(
        self,
        settings: Settings,
        raw: RawNode,
        table: MemberTable,
        io: ReplicaIO,
        *,
        applied: int,
        id_base: int,
    ) -> None:
        """``raw``: the Raft core, built on the node's log; ``table``: the applied member table; ``applied``: the
        index the state machine has applied; ``id_base``: where request ids and read contexts start, different for
        every incarnation (an entry or a read-index answer from before a restart can still arrive, and must not
        match a request of this one: the daemon draws it at random)."""
        self.settings = settings
        self.id = settings.id
        self.raw = raw
        self.stats = ReplicaStats()
        self.applied = applied
        self.removed = False
        """This node applied its own removal from the cluster (it then refuses client requests)."""
        # The address books: every node's addresses known from the configuration and the member tables applied.
        self.client_addrs = {m.id: m.client_addr for m in settings.members}
        self._peer_addrs = {m.id: m.peer_addr for m in settings.members}
        self._table = table
        self._io = io
        self._ready_io = _ReadyIO(io, self._on_applied)
        self._tick_s = settings.tick_ms / 1000.0
        self._t0 = 0.0
        self._ticks_done = 0
        self._next_id = id_base
        # Inputs, taken by the next step.
        self._inbox: list[Message] = []
        self._unreachable: set[int] = set()
        self._snapshot_status: list[tuple[int, bool]] = []
        self._proposals: list[Command] = []
        self._forwarded: list[Message] = []  # proposals followers forwarded, held while the pipeline is full
        self._conf_proposals: list[tuple[bytes, int, bool]] = []  # (change, request id, forced)
        self._transfers: list[int] = []
        self._pending_reads: list[int] = []
        # What is under way.
        self._waiting: set[int] = set()  # request ids proposed (or queued) and not yet answered
        self._forwarded_rids: dict[int, int] = {}  # request id -> the leader it was forwarded to (unanswered)
        self._inflight_entries: dict[int, tuple[int, list[int]]] = {}  # index -> (term, request ids)
        # Read-index requests of this node not yet answered: ctx -> (when it was issued, the reads waiting on it).
        self._read_rounds: dict[bytes, tuple[float, list[int]]] = {}
        self._read_point: tuple[float, int] | None = None  # (when asked, index) of the newest answered request
        self._refresh = False  # ask for a read index at the next step even with no read waiting
        self._now = 0.0  # the monotonic time of the last step
        self.lessor = Lessor(retry_s=max(1.0, 4 * settings.election_ticks * self._tick_s))
        """The leases' deadlines, on the leader once it applied an entry of its term (``raftkv.lessor``)."""
        self._lessor_term = 0  # the term the lessor was primed in (a leader of a later term starts again)
        # The member table as applied before a restart, if any (members added at run time are in no configuration
        # file); else the configuration's members. Removed nodes are refused from the start, and a node that applied
        # its own removal before it last stopped stays removed.
        removed = table.removed_members()
        if self.id in removed:
            self.mark_removed("it applied its own removal before it last stopped")
        elif table.members():
            self._refresh_membership()
        else:
            io.set_peers({i: a for i, a in self._peer_addrs.items() if i != self.id})
            io.refuse(removed)

    # -- what the driver and the API ask --------------------------------------------------------------------
    @property
    def role(self) -> StateRole:
        return self.raw.role

    @property
    def leader_id(self) -> int:
        return self.raw.leader

    @property
    def term(self) -> int:
        return self.raw.term

    @property
    def applying(self) -> int:
        """The last index handed out for applying (its write may still be under way)."""
        return self.raw.applying

    def leader_addr(self) -> str:
        return self.client_addrs.get(self.leader_id, "")

    def not_leader(self) -> NotLeader:
        return NotLeader(self.leader_id, self.leader_addr())

    def removed_error(self) -> Removed:
        return Removed(f"node {self.id} was removed from the cluster; it serves no requests: ask another member")

    def tracked(self) -> int:
        """How many requests this replica still tracks (waiting for a result, or forwarded and unanswered)."""
        return len(self._waiting) + len(self._forwarded_rids)

    def bounded_read_ok(self, max_staleness_ms: int, now: float) -> bool:
        """Whether a bounded-staleness read may be served from the applied state at monotonic time ``now``: this
        node knows a read point at most ``max_staleness_ms`` old and has applied its index; a bound of 0 is never
        met. A read point ``(t, index)`` means every entry committed anywhere before ``t`` is at or below ``index``;
        there are two kinds, both timed on this node's own clock, so a pause or a slow message can only make a point
        look older than it is, never fresher:

        - the answer to a read-index request of this node (any role), timed from when the request was asked: the
          leader confirmed its leadership after it received the request, so nothing newer committed before;
        - on the leader, the start of its newest heartbeat round a majority acknowledged (``RawNode.read_freshness``;
          a tick's start stands for any moment within it, never later than the moment itself).

        A follower's only points are its requests' answers: the heartbeats a follower receives say nothing about
        when they were sent (a paused follower would take an old one for news). So when the answer is no, the next
        step asks for a read index of its own even with no read waiting (``bounded read refreshes``): the next
        bounded read finds a fresh point."""
        if self.removed:
            return False
        point = self._read_point
        if self.raw.role == StateRole.LEADER:
            lp = self.raw.read_freshness()
            if lp is not None:
                at = self._t0 + lp[0] * self._tick_s
                if point is None or at > point[0]:
                    point = (at, lp[1])
        ok = point is not None and (now - point[0]) * 1000.0 < max_staleness_ms and self.applied >= point[1]
        if not ok and max_staleness_ms > 0:
            self._refresh = True
        return ok

    @property
    def read_point(self) -> tuple[float, int] | None:
        """(monotonic time it was asked, index) of the newest answered read-index request of this node, if any."""
        return self._read_point

    def lease_read_index(self, now: float | None = None) -> int | None:
        """The commit index if this node is the leader and its lease holds (``RawNode.lease_read_index``); None
        otherwise, and always once removed (a removed node no longer ticks: its lease would never run out).

        The core counts only the ticks stepped so far. ``now``: judge the lease at that monotonic time instead, the
        ticks due since the last step (not counted yet) taken off it: a caller served between steps (a loop waiting
        on a slow write steps nothing, a process resumed from SIGSTOP may serve a request before its first step) must
        not trust a lease that ran out meanwhile."""
        if self.removed:
            return None
        lease = self.settings.lease_ticks
        if now is not None:
            due = int((now - self._t0) / self._tick_s) - self._ticks_done
            if due > 0:
                lease = max(0, lease - due)
        return self.raw.lease_read_index(lease)

    def leader_contact_ms(self, now: float) -> int:
        ticks = self.raw.ticks_since_leader_contact()
        if ticks is None:
            return int((now - self._t0) * 1000) if self._t0 else 0
        return ticks * self.settings.tick_ms

    def best_transferee(self) -> int:
        """The voter (other than us) whose log matches ours furthest (0 if none)."""
        st = self.raw.status()
        best, best_match = 0, -1
        for v in st.conf_state.voters:
            pr = st.progress.get(v)
            if v != self.id and pr is not None and pr.match > best_match:
                best, best_match = v, pr.match
        return best

    def _may_time_leases(self) -> None:
        """Raise unless this node times the leases (see ``raftkv.lessor``)."""
        if self.removed:
            raise self.removed_error()
        if self.raw.role != StateRole.LEADER:
            raise self.not_leader()
        self._check_lessor_term()
        if not self.lessor.primed:
            raise Unavailable("the new leader does not time the leases yet (it has not applied an entry of its term); "
                              "retry shortly")

    def _check_lessor_term(self) -> None:
        """Deadlines set in an earlier term mean nothing now (another leader may have answered keep-alives since),
        even if no Ready showed this node stepping down in between."""
        if self.lessor.primed and self.raw.term != self._lessor_term:
            self.lessor.demote()

    def keep_alive(self, now: float, lease_ids: Sequence[int], *, confirmed: bool = False) -> list[int] | None:
        """Keep-alives of ``lease_ids`` that arrived at ``now``, on the leader: per lease its TTL (its deadline moved
        to ``now + ttl``), 0 if it does not exist or has run out. NotLeader on a follower; Unavailable while a new
        leader does not time the leases yet.

        The answer is only given while no other leader can have been elected since ``now`` (``raftkv.lessor``):
        while this leader's lease holds, at once; otherwise this returns None, and the caller confirms the
        leadership with a read-index round asked for after ``now`` (a majority acknowledged this leader after it, so
        any later leader was elected after it), then calls again with ``confirmed`` and the same ``now``."""
        self._may_time_leases()
        if not confirmed and self.lease_read_index(now) is None:
            return None
        renew = self.lessor.renew
        self.stats.lease_renewals += len(lease_ids)
        return [renew(now, lid) for lid in lease_ids]

    def lease_remaining(self, now: float, lease_id: int) -> float | None:
        """Seconds until a lease ends, on the leader (None: it times no such lease); raises as ``keep_alive``."""
        self._may_time_leases()
        return self.lessor.remaining(now, lease_id)

    # -- events: requests -----------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """The driver starts: ticks are counted from ``now``."""
        self._t0 = now
        self._now = now

    def propose(self, make: Callable[[int], Command]) -> int:
        """Queue the command ``make(request_id)`` for the next batch; returns its request id. Its answer comes as
        ``respond`` or ``fail``. A follower forwards it to the leader (``forward_proposals``; else NotLeader)."""
        if self.removed:
            raise self.removed_error()
        if self.raw.role != StateRole.LEADER and not self.settings.forward_proposals:
            raise self.not_leader()
        rid = self._next_id
        self._next_id = rid + 1
        self._proposals.append(make(rid))
        self._waiting.add(rid)
        return rid

    def propose_member_change(self, t: ConfChangeType, member: MemberInfo, force: bool) -> int:
        """Queue one single-server membership change (leader only); returns its request id."""
        if self.removed:
            raise self.removed_error()
        if self.raw.role != StateRole.LEADER:
            raise self.not_leader()
        rid = self._next_id
        self._next_id = rid + 1
        self._conf_proposals.append((encode_change(MemberChange(t, member, self.id, rid)), rid, force))
        self._waiting.add(rid)
        return rid

    def transfer(self, to: int = 0) -> int:
        """Hand leadership to ``to`` (0: the most up-to-date voter) at the next step; returns the target."""
        if self.raw.role != StateRole.LEADER:
            raise self.not_leader()
        target = to or self.best_transferee()
        if not target:
            raise Unavailable("there is no other voter to hand leadership to")
        if target not in self.raw.conf_state().voters:
            raise InvalidArgument(f"node {target} is not a voter of this cluster")
        self._transfers.append(target)
        return target

    def read(self) -> int:
        """Ask for a linearizable read point; returns the read's id, answered by ``reads_done`` or
        ``reads_failed``. Every read asked for before a step shares one read-index request."""
        if self.removed:
            raise self.removed_error()
        rid = self._next_id
        self._next_id = rid + 1
        self._pending_reads.append(rid)
        return rid

    def forget(self, request_id: int) -> None:
        """Stop tracking a request (answered, or abandoned by its caller)."""
        self._waiting.discard(request_id)
        if self._forwarded_rids:
            self._forwarded_rids.pop(request_id, None)

    # -- events: peers, the state machine -------------------------------------------------------------------
    def on_messages(self, msgs: Iterable[Message]) -> None:
        self._inbox.extend(msgs)

    def on_unreachable(self, peer: int) -> None:
        self._unreachable.add(peer)

    def on_snapshot_status(self, peer: int, ok: bool) -> None:
        self._snapshot_status.append((peer, ok))

    def on_results(self, results: Sequence[Applied]) -> None:
        """The state machine applied entries: answer the requests of this node among them. The only path a result
        takes (the daemon calls it from the writer thread's apply, before the transaction's sync: the entries are
        committed on a majority already). Idempotent: an answered request is no longer tracked."""
        me = self.id
        waiting = self._waiting
        respond = self._io.respond
        lessor = self.lessor
        for a in results:
            r = a.result
            if type(r) is LeaseGrantResult:
                lessor.granted(self._now, r.lease_id, r.ttl_s, r.stamp)
            elif type(r) is LeaseRevokeResult:
                lessor.revoked(r.lease_id)
            if a.proposer == me:
                rid = a.request_id
                if rid in waiting:
                    waiting.discard(rid)
                    respond(rid, a)

    def mark_removed(self, how: str) -> None:
        """This node is no longer a member: refuse every request from now on, fail those waiting, stop campaigning
        and talking to peers. (A leader that removed itself hands over first, then learns it here as a follower.)"""
        if self.removed:
            return
        self.removed = True
        log.warning("node %d was removed from the cluster (%s): it refuses every request from now on and takes no "
                    "part in elections; stop it (to rebuild it, add a node with a new id and an empty data directory)",
                    self.id, how)
        err = self.removed_error()
        self.fail_all(err)
        self._io.set_peers({})
        self._io.removed(err)

    def fail_all(self, err: RaftKVError) -> None:
        """Fail everything under way with ``err``: queued proposals (certainly not applied), proposed ones (they may
        still commit elsewhere: outcome unknown), and reads."""
        io = self._io
        waiting = self._waiting
        for c in self._proposals:
            waiting.discard(c.request_id)
            io.fail(c.request_id, err)
        self._proposals.clear()
        for _, rid, _ in self._conf_proposals:
            waiting.discard(rid)
            io.fail(rid, err)
        self._conf_proposals.clear()
        if waiting:
            unknown = Unavailable(
                f"{err.message}; the write may or may not have been applied (retry it with the same session)",
                applied=APPLIED_UNKNOWN)
            rids = list(waiting)
            waiting.clear()  # first: a driver may call back (forget) from inside fail
            for rid in rids:
                io.fail(rid, unknown)
        self._forwarded_rids.clear()
        self._inflight_entries.clear()
        if self._pending_reads:
            io.reads_failed(self._pending_reads, err)
            self._pending_reads = []
        for _, ids in self._read_rounds.values():
            io.reads_failed(ids, err)
        self._read_rounds.clear()

    # -- the step ---------------------------------------------------------------------------------------------
    def step(self, now: float, wall_ns: int) -> None:
        """Take in everything that arrived, at monotonic time ``now`` (seconds) and wall-clock time ``wall_ns``
        (the timestamp of the entries proposed now: the state machine's only notion of time)."""
        raw = self.raw
        self._now = now
        # 1. Ticks due by the monotonic clock (none once removed: a removed node must not campaign).
        due = int((now - self._t0) / self._tick_s) - self._ticks_done
        if due > 0 and not self.removed:
            self._ticks_done += due
            for _ in range(due):
                raw.tick()
        # 2. Peer messages.
        if self._inbox:
            inbox, self._inbox = self._inbox, []
            for m in inbox:
                if m.type == _PROP:
                    self._forwarded.append(m)  # proposed below, with this node's own, when the pipeline has room
                else:
                    raw.step(m)
        if self._unreachable:
            for peer in self._unreachable:
                raw.report_unreachable(peer)
            self._unreachable.clear()
        if self._snapshot_status:
            for peer, ok in self._snapshot_status:
                raw.report_snapshot(peer, ok)
            self._snapshot_status.clear()
        # 3. Leases past their deadline (the leader's): revoke them, through the log, as a proposal of our own.
        self._check_lessor_term()
        if self.lessor.primed and raw.role == StateRole.LEADER:
            expired = self.lessor.expired(now)
            if expired:
                self.stats.leases_expired += len(expired)
                for lid, stamp in expired:
                    rid = self._next_id
                    self._next_id = rid + 1
                    self._proposals.append(LeaseRevoke(rid, 0, 0, lid, stamp))  # (no waiter: on_results sees it)
        elif self._proposals:
            self._drop_stale_expiries()
        # 3. Proposals (membership changes one by one: the core takes only one at a time), and transfers.
        #    A leader with a full pipeline keeps them for a later step: they join the next, larger batch.
        if (self._proposals or self._forwarded) and self._pipeline_has_room():
            if self._forwarded:
                fwd, self._forwarded = self._forwarded, []
                for m in fwd:
                    raw.step(m)  # a follower's batch keeps its own entry (a leader that cannot take it drops it)
            if self._proposals:
                self._propose_batch(wall_ns)
        if self._conf_proposals:
            self._propose_conf_changes()
        if self._transfers:
            for target in self._transfers:
                raw.transfer_leader(target)
            self._transfers.clear()
        # 4. Linearizable reads share one read-index request (and so one heartbeat round); while
        #    max_inflight_read_requests of ours are unanswered, new reads wait and share the next one.
        if (self._pending_reads or self._refresh) and self._read_request_room(now):
            ids, self._pending_reads = self._pending_reads, []
            self._refresh = False
            ctx = self._next_id.to_bytes(8, "big")
            self._next_id += 1
            try:
                raw.read_index(ctx)
            except ProposalDropped as e:
                err = NotLeader(e.leader, self.client_addrs.get(e.leader, "")) if e.leader else Unavailable(
                    "no leader is known yet; retry shortly"
                )
                self._io.reads_failed(ids, err)
            else:
                self._read_rounds[ctx] = (now, ids)
                self.stats.read_rounds += 1
                if not ids:
                    self.stats.read_refreshes += 1

    def _drop_stale_expiries(self) -> None:
        """This node no longer times the leases (it stepped down, or leads a later term): forget the expiry revokes
        its lessor decided that are still queued (a full pipeline holds them). Proposed now, they would go to the
        next leader (forwarded) or into a later term, which times every lease afresh and may have renewed it since:
        an earlier leader's revoke is safe only in its own term's log (see ``raftkv.lessor``). A client's revoke
        (stamp 0) stays."""
        self._proposals = [c for c in self._proposals if type(c) is not LeaseRevoke or not c.stamp]

    def _read_request_room(self, now: float) -> bool:
        bound = self.settings.max_inflight_read_requests
        rounds = self._read_rounds
        if bound <= 0 or len(rounds) < bound:
            return True
        # A request unanswered for an election timeout was lost (a dropped message): it holds no one back any more
        # (its reads still wait for it, until their deadline or a leader change).
        oldest_live = now - self.settings.election_ticks * self._tick_s
        return sum(1 for t, _ in rounds.values() if t > oldest_live) < bound

    def _pipeline_has_room(self) -> bool:
        depth = self.settings.max_inflight_proposals
        raw = self.raw
        return depth <= 0 or raw.role != StateRole.LEADER or raw.last_index - raw.committed < depth

    def _propose_batch(self, now_ns: int) -> None:
        props, self._proposals = self._proposals, []
        raw = self.raw
        limit = self.settings.max_batch_bytes
        groups: list[list[Command]] = [[]]
        size = 0
        for c in props:
            if type(c) is HashMark:  # a hash mark is a log entry of its own (see raftkv.writer)
                if groups[-1]:
                    groups.append([])
                groups[-1].append(c)
                groups.append([])
                size = 0
                continue
            sz = len(getattr(c, "key", b"")) + len(getattr(c, "value", b"") or b"") + 32
            if groups[-1] and size + sz > limit:
                groups.append([])
                size = 0
            groups[-1].append(c)
            size += sz
        if not groups[-1]:
            groups.pop()
        datas = [encode_batch(self.id, now_ns, g) for g in groups]
        try:
            raw.propose_many(datas)
        except ProposalDropped as e:
            err: RaftKVError = (
                NotLeader(e.leader, self.client_addrs.get(e.leader, ""))
                if e.reason == ProposalDropped.NOT_LEADER
                else Unavailable(f"proposal refused: {e.reason}; retry shortly")
            )
            waiting = self._waiting
            for c in props:
                if c.request_id in waiting:
                    waiting.discard(c.request_id)
                    self._io.fail(c.request_id, err)
            return
        self.stats.batches_proposed += len(datas)
        self.stats.commands_proposed += len(props)
        if raw.role != StateRole.LEADER:
            # Forwarded to the leader: nobody tells this node if the leader drops them, but a leader change is
            # when that happens, and _on_soft_state then fails them (outcome unknown: they may still commit).
            self.stats.commands_forwarded += len(props)
            fwd = self._forwarded_rids
            lead = raw.leader
            for c in props:
                fwd[c.request_id] = lead
        else:
            # Remember where each batch landed: if a different entry is applied there, the batch was lost.
            last = raw.last_index
            first = last - len(groups) + 1
            term = raw.term
            for i, g in enumerate(groups):
                self._inflight_entries[first + i] = (term, [c.request_id for c in g])

    def _propose_conf_changes(self) -> None:
        raw = self.raw
        confs, self._conf_proposals = self._conf_proposals, []
        for data, rid, force in confs:
            cc = decode_conf_change(data)
            if cc.type != ConfChangeType.REMOVE_NODE and cc.node_id in self._table.removed_members():
                # As etcd: an id, once removed, is never a member again. A node added again under its old id replays
                # the log from its start, through the configurations of the past, and two such nodes are a majority
                # of the first one (the replica simulator found two leaders in one term that way). Checked here, as
                # the next, against the membership as applied, with no other change pending (the core refuses one).
                self._fail(rid, InvalidArgument(
                    f"node {cc.node_id} was removed from this cluster, and an id is never a member again: add the "
                    f"rebuilt node under a new id (its old data directory may not be reused)"))
                continue
            if not force and shrinks_two_voters_to_one(raw.conf_state(), cc):
                # Checked here, against the membership the change would apply to, not when the request came: a
                # change still pending then may have applied since.
                self._fail(rid, InvalidArgument(
                    "removing a voter from a 2-voter cluster leaves it unable to elect a leader if the departing "
                    "node fails during the change; add a node first, or pass --force"))
                continue
            try:
                raw.propose_conf_change(data)
            except ProposalDropped as e:
                self._fail(rid, self.not_leader() if e.reason == ProposalDropped.NOT_LEADER
                           else Unavailable(f"membership change refused: {e.reason}; retry when it completes"))

    def _fail(self, rid: int, err: RaftKVError) -> None:
        if rid in self._waiting:
            self._waiting.discard(rid)
            self._io.fail(rid, err)

    # -- Readys -----------------------------------------------------------------------------------------------
    def has_ready(self) -> bool:
        return self.raw.has_ready()

    def ready(self) -> Ready:
        return self.raw.ready()

    def start_ready(self, rd: Ready) -> Any:
        """Send what may leave now and start the write (``raftkv.ready.start_ready``); returns ``persist``'s
        handle."""
        return start_ready(rd, self._ready_io)

    def finish_ready(self, rd: Ready, results: Any = None) -> None:
        """Once ``rd``'s write (and every earlier one) is done: send the persisted messages, take in what was
        applied, advance the core (``raftkv.ready.finish_ready``)."""
        finish_ready(self.raw, rd, self._ready_io, results)

    def _on_applied(self, rd: Ready, results: Any) -> None:
        # ``results`` were answered already, as they were applied (``on_results``): one path delivers a result.
        if rd.snapshot is not None or any(e.type == EntryType.CONF_CHANGE for e in rd.committed_entries):
            for e in rd.committed_entries:
                if e.type == EntryType.CONF_CHANGE:
                    self.raw.apply_conf_change(decode_conf_change(e.data), e.index)
            self._refresh_membership()
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.lead, rd.soft_state.role)
        if rd.snapshot is not None:
            self.applied = max(self.applied, rd.snapshot.metadata.index)
            self.stats.snapshots_installed += 1
            log.info("node %d installed a snapshot at index %d", self.id, rd.snapshot.metadata.index)
        if rd.committed_entries:
            self.applied = rd.committed_entries[-1].index
            self.stats.entries_applied += len(rd.committed_entries)
            if not self.lessor.primed and self.raw.role == StateRole.LEADER:
                term = self.raw.term
                if any(e.term == term for e in rd.committed_entries):
                    # An entry of our term is applied: every earlier leader's revokes are applied or never will
                    # be. Time every lease from now, with its full TTL (raftkv.lessor).
                    self.lessor.prime(self._now, self._table.leases())
                    self._lessor_term = term
            inflight = self._inflight_entries
            if inflight:
                for e in rd.committed_entries:
                    mine = inflight.pop(e.index, None)
                    if mine is not None and mine[0] != e.term:
                        lost = Unavailable("the proposal was lost in a leader change and was not applied; retry")
                        for rid in mine[1]:
                            self._fail(rid, lost)
        for rs in rd.read_states:
            issued = self._read_rounds.pop(rs.ctx, None)
            if issued:
                at, ids = issued
                point = self._read_point
                if point is None or at > point[0]:
                    self._read_point = (at, rs.index)
                self.stats.reads_served += len(ids)
                if ids:
                    self._io.reads_done(ids, rs.index)

    def _refresh_membership(self) -> None:
        """Adopt the member table as applied: the addresses it names join the address book (kept, not replaced:
        a node replaying the log passes through tables without the members added later, its leader among them),
        the transport talks to every known node that was not removed (a removed leader still handing over included:
        it keeps leading until we all know the change committed, thesis §4.2.2) and refuses the removed ones, and
        this node stops serving if it applied its own removal."""
        members = self._table.members()
        if not members:
            return
        for m in members:
            self._peer_addrs[m.id] = m.peer_addr
            self.client_addrs[m.id] = m.client_addr
        removed = set(self._table.removed_members())
        lead = self.leader_id
        peers = {i: a for i, a in self._peer_addrs.items() if i != self.id and (i not in removed or i == lead)}
        self._io.set_peers(peers)
        self._io.refuse([n for n in removed if n != lead])
        if self.id in removed and self.role != StateRole.LEADER:
            self.mark_removed("it applied its own removal")

    def _on_soft_state(self, lead: int, role: StateRole) -> None:
        log.info("node %d: %s, leader %s, term %d", self.id, role, lead or "unknown", self.term)
        if role != StateRole.LEADER:
            self.lessor.demote()
        self._io.leadership_changed(lead, role)
        self._refresh_membership()  # a departed leader that handed over is refused from now on
        if self._forwarded_rids:
            # Requests forwarded to the previous leader may have been dropped with its leadership, or may still
            # commit: their outcome is unknown. Say so now rather than at the deadline; the client retries them
            # with the same session, and the session table makes the retry apply at most once.
            lost = [rid for rid, to in self._forwarded_rids.items() if to != lead]
            unknown = Unavailable(
                "the leader changed while this request was forwarded to it; it may or may not have been applied "
                "(retry with the same session)", applied=APPLIED_UNKNOWN)
            for rid in lost:
                del self._forwarded_rids[rid]
                self._fail(rid, unknown)
        if self._read_rounds and role != StateRole.LEADER:
            # A read round may be dropped by a leader change: fail it fast so the caller retries elsewhere.
            err = NotLeader(lead, self.client_addrs.get(lead, "")) if lead else Unavailable("leader changed; retry")
            for _, ids in self._read_rounds.values():
                self._io.reads_failed(ids, err)
            self._read_rounds.clear()
