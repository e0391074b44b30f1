"""The simulator one level up: every node runs the daemon's own logic, a real ``raftkv.replica.Replica``, with the
real state machine (``KVStateMachine`` on in-memory tables) as its durable state, and clients that write, retry
and read at every consistency level. Only what the daemon's shell does is simulated: the network (``Cluster``'s
delays, drops, duplicates, partitions), the writer thread (a Ready's write completes at a random later step, in
order; a crash loses it), the clock (simulated time, passed to ``Replica.step``: ticks fall due as the daemon's do,
and a paused node catches up when it resumes) and the callers' futures.

Every check of the Raft-level simulator runs here too (Election Safety, Log Matching, Leader Completeness, State
Machine Safety, commit monotonicity, liveness after healing), plus what clients are promised:

- Write answers: a write answered as applied at index i is in the entry applied at i everywhere, proposed by the
  node that answered, and its result is what the command did.
- Not applied means not applied: a write that failed with ``applied="no"`` is in no entry ever applied anywhere.
- Exactly once: lanes of session writes (one outstanding ``Incr`` per client id, retried with the same seq after any
  failure, on any node) see the k-th increment answered with the value k: no retry applied twice, none lost.
- Linearizable reads (read index, on any node) and lease reads (on the leader): served at an index at or past every
  index known committed anywhere when the read was issued.
- Bounded-staleness reads: served locally only if the state includes every entry committed anywhere more than the
  bound before the read (with no slack: ``BOUNDED_SLACK_STEPS``).
- Every read, stale ones included, returns the value the committed log gives the key at the index the node applied.
- Leases (the configurations with ``leases=True``; see "Leases" below): no lease is revoked by expiry before
  ``ttl`` after its grant or any keep-alive answered for it was sent, across leader changes; a lease nobody renews
  is revoked once the cluster is healthy; a revoke deletes the lease's keys.

Leases. Lease clients grant leases (TTL 1-3 s) on any node, put keys attached to them, sometimes revoke one, and
keep them alive on whichever nodes believe they lead (a deposed one included), as ``Node.keep_alive`` drives it:
``Replica.keep_alive(now, ids)`` with the simulated time of arrival, and when it says None, a read-index round asked
for after it (``Replica.read``), then, once the read index is applied, ``keep_alive(now, ids, confirmed=True)``
with the same ``now``. A keep-alive for a paused node is served when it resumes, before its first step (as a daemon
resumed by SIGCONT, or whose loop waits on a slow write, may serve one between steps). Clients stop renewing leases
at random (they must expire), and at once after an answer from a deposed leader (an adversarial client: it leaves
the promise most likely to be wrong the last one); keep-alives may straggle in after a client stopped, and late
copies may reach a leader still applying what it committed. Renewals stop when the schedule heals. The lease
configurations use 100 ms ticks (an election timeout of 1 s: TTLs are whole seconds, 1-3 election timeouts); two of
them aim faults at the moments the guarantee rests on (``REPLICA_CONFIGS``).

Time: the simulator has one clock; every node is stepped with it (``now_s``), so clock rates never differ (the
guarantee asks only that they differ by less than ``lease_clock_drift_ms``) and the checks need no slack. They are,
per lease (ids are never reused), with times in micro-steps:

- promised: the grant's proposal time + ttl, and for every keep-alive answered with a TTL > 0, its ``now`` + ttl,
  with the term of the leader that answered;
- Lease safety (proposal): when a leader's ``Lessor.expired`` hands out a lease's expiry (the moment the leader puts
  the stamped ``LeaseRevoke`` into its proposals: the earliest point a revoke is decided; observed by a ``Lessor``
  subclass the simulator installs), the time must be at or past every promise made by the grant or by a leader of
  that term or an earlier one. (A leader of a later term may have answered meanwhile: then this leader was deposed
  before it decided, and its revoke must never take effect; the next check holds it to that.)
- Lease safety (applied): when a stamped revoke takes effect (first applied anywhere), the time must be at or past
  every promise, from any term, made before or after (a keep-alive answered after the lease ended is a lie too).
- Lease liveness: after healing, with renewals stopped, the leader revokes every lease within its TTL plus
  ``LEASE_LIVENESS_SLACK_E`` election timeouts of the cluster (and its leader) becoming stable.
- Leased keys: at the end, every leased key on every node is attached to a lease that exists there.

Not modelled here (the Raft-level simulator covers them for the core): power losses and snapshots (the state machine
would have to be copied and shipped), and pre-vote / check-quorum off (the daemon always runs them on).
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raftkv.errors import APPLIED_NO, RaftKVError
from raftkv.kv import (
    Applied,
    Command,
    ErrorResult,
    Incr,
    IncrResult,
    KVStateMachine,
    LeaseGrant,
    LeaseGrantResult,
    LeaseRevoke,
    LeaseRevokeResult,
    MemberInfo,
    Put,
    PutResult,
    decode_batch,
    decode_conf_change,
)
from raftkv.kv import bootstrap_entries as kv_bootstrap_entries
from raftkv.kv.membership import decode_change
from raftkv.lessor import Lessor
from raftkv.raft import ConfChange, ConfChangeType, ConfState, EntryType, HardState, Message, RawNode, Ready, StateRole
from raftkv.replica import Replica, core_config
from raftkv.settings import Member, Settings

from .cluster import Cluster, SimConfig, SimNode, Violation

LEADER = StateRole.LEADER
TICK_MS = 10
KEYS = tuple(b"k%d" % i for i in range(4))
LANES = 3
WALL_NS_BASE = 1_700_000_000 * 10**9
BOUNDED_SLACK_STEPS = 0
"""How much older than its bound a bounded read may be, in micro-steps, beyond the bound itself."""


LEASE_IDS = 7000
"""Lease ids start above this (each grant names a fresh id: a lease's records are keyed by its id)."""
MAX_LEASES = 4
"""Leases the clients hold (being granted, or granted and renewed) at once."""
LEASE_LIVENESS_SLACK_E = 5
"""Election timeouts a healthy, stable leader may take beyond a lease's TTL to have its expiry applied."""


@dataclass
class ReplicaSimConfig(SimConfig):
    """A ``SimConfig`` with what only the replica simulator uses."""

    tick_ms: int = TICK_MS
    leases: bool = False
    """Run lease clients (grants, keep-alives on believed leaders, revokes, leased puts) and the lease checks."""
    lease_ttls: tuple[int, ...] = (1, 2, 3, 3)
    """The TTLs granted (seconds), drawn uniformly."""
    p_grant: float = 0.03
    p_keep_alive: float = 0.2
    p_lease_revoke: float = 0.004
    p_lease_put: float = 0.05
    p_stop_renewing: float = 0.1
    """Per answered keep-alive: its client stops renewing the lease (unless it keeps it until the end)."""
    p_keep_alive_applying: float = 0.0
    """Per micro-step: a keep-alive of every lease to a leader whose commit index is ahead of what it applied."""
    p_isolate_at_expiry_commit: float = 0.0
    """When the leader learns an expiry's revoke committed: isolate it before it tells anyone (the next leader
    is elected with the revoke in its log, not yet known committed, nor applied)."""
    p_pause_leader: float = 0.0
    """Per micro-step: pause the current leader (it resumes at ``p_resume``)."""
    p_resume_deposed: float = 0.0
    """Per micro-step: resume the paused nodes that still believe they lead while a later term's leader times the
    leases."""
    p_pause_at_expiry: float = 0.0
    """Per expiry a leader decides: pause it right after that step (its revoke may still be queued)."""
    p_heal_deposed: float = 0.0
    """Per micro-step: heal the network while a node still believes it leads and a later term's leader times the
    leases."""


@dataclass
class _Lease:
    """One lease: the client's view of it and what the checks know."""

    lid: int
    ttl_s: int
    granted_at: int  # micro-step the grant was proposed
    ttl_steps: int
    stamp: int = 0  # the grant's stamp, once applied somewhere
    grant_term: int = 0  # the term of the grant's log entry, once applied somewhere
    known: bool = False  # the client got the grant's answer
    ended: bool = False  # the client saw it end (keep-alive answered 0, or its revoke answered, or the grant failed)
    renewing: bool = True  # the client keeps it alive (else only a straggling keep-alive may still come)
    forever: bool = False  # ... until the schedule heals (else it stops after any answered keep-alive, at random)
    straggles: bool = True  # once stopped, a straggling keep-alive may still come
    answers: list[tuple[int, int, int, int]] = field(default_factory=list)
    """Keep-alives answered with a TTL > 0: (sent, sent + ttl, term of the answering leader, node)."""
    expiries: list[tuple[int, int, int]] = field(default_factory=list)
    """Expiries handed out by a leader's lessor: (micro-step, term, node)."""
    expired_at: int | None = None  # micro-step a stamped revoke first took effect (applied somewhere)
    revoked_at: int | None = None  # micro-step a client's revoke (stamp 0) first took effect


@dataclass
class ReplicaSimStats:
    puts_acked: int = 0
    incrs_acked: int = 0
    conf_acked: int = 0
    failed_not_applied: int = 0
    failed_unknown: int = 0
    timed_out: int = 0
    reads: dict[str, int] | None = None
    bounded_fallbacks: int = 0
    forwarded: int = 0
    batches: int = 0
    commands: int = 0
    readds_refused: int = 0
    leases_granted: int = 0
    lease_keep_alives: int = 0
    """Keep-alive calls answered (each covering one or more leases)."""
    lease_renewals: int = 0
    """Leases renewed by an answered keep-alive (TTL > 0)."""
    lease_renewals_confirmed: int = 0
    """... of which after a read-index round (the leader lease did not hold)."""
    lease_renewals_refused: int = 0
    """Leases a keep-alive answered 0 for (ended, or being revoked)."""
    lease_expiries: int = 0
    """Expiries handed out by a lessor (checked against the promises)."""
    lease_expiries_after_failover: int = 0
    """... checked against a promise made by a leader of an earlier term (or the grant under one)."""
    lease_expiries_applied: int = 0
    lease_client_revokes: int = 0
    lease_puts: int = 0
    lease_keys_deleted: int = 0
    lease_liveness_checked: int = 0
    """Leases still held when renewals stopped after healing, and seen revoked in time."""
    lease_liveness_worst: int = -(1 << 30)
    """The most micro-steps past its TTL (from the later of renewals stopping and the leader taking office) that such
    a lease took to be revoked."""

    def __post_init__(self) -> None:
        self.reads = {"index": 0, "lease": 0, "bounded": 0, "stale": 0}


@dataclass
class _Op:
    kind: str  # put | incr | conf | live | grant | revoke | lput
    issued: int  # micro-step
    value: bytes = b""
    lane: int = -1
    seq: int = 0
    lease: int = 0


@dataclass
class _Read:
    kind: str  # index | lease | bounded | stale
    key: bytes
    required: int  # the highest index known committed anywhere when the read was issued
    issued: int  # micro-step
    bound_ms: int = 0
    index: int = -1  # the read index, once known


@dataclass
class _Lane:
    client_id: int
    key: bytes
    seq: int = 1
    busy: bool = False


class ReplicaSimNode(SimNode):
    def __init__(self, nid: int) -> None:
        super().__init__(nid, ConfState())
        self.fsm = KVStateMachine(None)  # the durable state machine (changed only when a write completes)
        self.replica: Replica | None = None
        self.peers: set[int] = set()
        self.refused: set[int] = set()
        self.ops: dict[int, _Op] = {}
        self.index_reads: dict[int, _Read] = {}  # read id -> read, waiting for its read index
        self.ready_reads: list[_Read] = []  # read index known, waiting until applied
        # Keep-alives the leader lease could not answer: read id -> (micro-step sent, lease ids), waiting for the
        # read-index round; then (micro-step sent, lease ids, read index), confirmed, waiting until the read index is
        # applied (``Node.read_index`` waits for it) for the caller to ask again.
        self.ka_reads: dict[int, tuple[int, tuple[int, ...]]] = {}
        self.ka_confirmed: list[tuple[int, tuple[int, ...], int]] = []
        self.ka_waiting: list[tuple[int, ...]] = []  # keep-alives that reached it paused: served when it resumes


class _WatchedLessor(Lessor):
    """The real lessor, telling the simulator each expiry it hands out (the leader proposes its revoke at once)."""

    __slots__ = ("_seen",)

    def __init__(self, retry_s: float, seen: Callable[[int, int], None]) -> None:
        super().__init__(retry_s)
        self._seen = seen

    def expired(self, now: float, limit: int = 1000) -> list[tuple[int, int]]:
        out = super().expired(now, limit)
        for lid, stamp in out:
            self._seen(lid, stamp)
        return out


class _SimReplicaIO:
    """The shell's side of ``ReplicaIO``, in the simulator."""

    def __init__(self, cluster: ReplicaCluster, node: ReplicaSimNode) -> None:
        self.c = cluster
        self.n = node

    def send(self, msgs: Sequence[Message]) -> None:
        peers = self.n.peers
        for m in msgs:
            if m.to in peers:  # the transport talks only to the peers it was given
                self.c.net_send(m)

    def persist(self, rd: Ready) -> Ready:
        return rd

    def respond(self, request_id: int, applied: Applied) -> None:
        self.c.on_response(self.n, request_id, applied)

    def fail(self, request_id: int, err: RaftKVError) -> None:
        self.c.on_failure(self.n, request_id, err)

    def reads_done(self, read_ids: Sequence[int], index: int) -> None:
        for i in read_ids:
            ka = self.n.ka_reads.pop(i, None)
            if ka is not None:
                self.n.ka_confirmed.append((*ka, index))  # asked again, with the same now, once index is applied
                continue
            r = self.n.index_reads.pop(i, None)
            if r is not None:
                r.index = index
                self.n.ready_reads.append(r)

    def reads_failed(self, read_ids: Sequence[int], err: RaftKVError) -> None:
        for i in read_ids:
            self.n.index_reads.pop(i, None)
            self.n.ka_reads.pop(i, None)

    def set_peers(self, peers: dict[int, str]) -> None:
        self.n.peers = set(peers)

    def refuse(self, node_ids: Any) -> None:
        self.n.refused = set(node_ids)

    def leadership_changed(self, lead: int, role: StateRole) -> None:
        pass

    def removed(self, err: RaftKVError) -> None:
        self.n.ready_reads.clear()


def _member(nid: int, learner: bool = False) -> MemberInfo:
    return MemberInfo(nid, f"sim-peer:{nid}", f"sim-client:{nid}", learner)


class ReplicaCluster(Cluster):
    decode_conf = staticmethod(decode_conf_change)
    nodes: dict[int, ReplicaSimNode]  # type: ignore[assignment]
    cfg: ReplicaSimConfig

    def __init__(self, seed: int, cfg: SimConfig | None = None, *, readd_wiped: bool = False) -> None:
        """``readd_wiped``: membership changes may try to add a removed id again, after wiping its node (what an
        operator rebuilding a member under its old id would do); the leader must refuse it (``test_replicas.py``:
        two wiped members replaying the log from its start pass through the first configuration, in which they are
        a majority, and can elect a leader of it)."""
        self.readd_wiped = readd_wiped
        self.node_members: dict[int, tuple[Member, ...]] = {}  # a joiner's configured members (else the initial)
        cfg = cfg or ReplicaSimConfig()
        if not isinstance(cfg, ReplicaSimConfig):
            cfg = ReplicaSimConfig(**vars(cfg))
        if cfg.power_loss or cfg.p_snapshot:
            raise ValueError("the replica simulator models neither power losses nor snapshots")
        if 1000 % cfg.tick_ms:
            raise ValueError("tick_ms must divide a second (lease TTLs are whole seconds)")
        self.tick_ms = cfg.tick_ms
        self.steps_per_s = 1000 // cfg.tick_ms * cfg.micro_steps_per_tick
        self.leases: dict[int, _Lease] = {}
        self.lease_load = cfg.leases  # the lease clients act (off once the schedule heals)
        self.last_grant_applied = 0  # micro-step a grant was last applied on the leader (lease liveness)
        self.faults_on = False
        self.rstats = ReplicaSimStats()
        self.lanes = [_Lane(1000 + i, b"lane%d" % i) for i in range(LANES)]
        self.not_applied: set[tuple[int, int]] = set()  # (proposer, request id) answered "certainly not applied"
        self.commit_times: list[tuple[int, int]] = [(0, 0)]  # (micro-step, highest index known committed) as it rose
        self.live_acked = False
        self._batches: dict[int, list[Command]] = {}
        self._next_value = 0
        super().__init__(seed, cfg)
        self.wrng = random.Random(seed ^ 0x5EED)  # the clients' own choices (keys, kinds), apart from the faults'
        self.lrng = random.Random(seed ^ 0x1EA5E)  # the lease clients' choices

    # -- set-up ---------------------------------------------------------------------------------------------
    def _new_node(self, nid: int) -> SimNode:
        return ReplicaSimNode(nid)

    def _bootstrap(self, voters: tuple[int, ...]) -> None:
        # As the daemon: the initial members' logs hold one committed membership change per member, not yet
        # applied; the first Ready applies them (core, member table and durable membership alike).
        boot = kv_bootstrap_entries([_member(v) for v in voters])
        self._members = tuple(Member(v, f"sim-peer:{v}", f"sim-client:{v}") for v in voters)
        for v in voters:
            n = self.nodes[v]
            n.disk.append(boot)
            n.disk.set_hard_state(HardState(term=1, vote=0, commit=len(boot)))
        for e in boot:
            self.committed[e.index] = (e.term, e.data)
            self.entry_record[(e.index, e.term)] = (e.data, e.type, 0 if e.index == 1 else 1)

    def settings_for(self, nid: int) -> Settings:
        c = self.cfg
        return Settings(
            id=nid, data_dir=Path("/nonexistent/raftkv-sim"), members=self.node_members.get(nid, self._members),
            tick_ms=self.tick_ms,
            election_ticks=c.election_tick, heartbeat_ticks=c.heartbeat_tick, lease_clock_drift_ms=2 * self.tick_ms,
            max_size_per_msg=c.max_size_per_msg, max_inflight_msgs=c.max_inflight, max_batch_bytes=200,
            forward_proposals=c.forward_proposals, max_inflight_writes=c.pipeline,
        )

    def now_s(self) -> float:
        return self.at_s(self.now)

    def at_s(self, step: int) -> float:
        """Micro-step ``step`` on the (one) clock of the simulation, in seconds: what every node's clock reads."""
        return step * self.tick_ms / 1000 / self.cfg.micro_steps_per_tick

    def _start(self, n: SimNode) -> None:
        assert isinstance(n, ReplicaSimNode)
        n.incarnation += 1
        s = self.settings_for(n.id)
        raw = RawNode(core_config(s, n.applied_index, random.Random(self.rng.getrandbits(64))), n.disk)
        n.raw = raw
        n.replica = Replica(s, raw, n.fsm, _SimReplicaIO(self, n), applied=n.applied_index,
                            id_base=(n.incarnation << 48) + 1)
        n.replica.lessor = _WatchedLessor(n.replica.lessor.retry_s, lambda lid, stamp: self._on_expiry(n, lid, stamp))
        n.replica.start(self.now_s())
        n.commit_seen = raw.committed
        n.paused_ticks = None
        self._log(f"start {n.id} (incarnation {n.incarnation}) hs={n.disk.hard_state} applied={n.applied_index}")

    def crash(self, nid: int, power: bool = False) -> None:
        n = self.nodes[nid]
        if not n.up:
            return
        n.pending.clear()  # the writes under way are lost
        n.raw = None
        n.replica = None
        n.inbox.clear()
        n.paused_ticks = None
        for op in n.ops.values():  # their callers see the connection drop: outcome unknown, lanes retry
            if op.lane >= 0:
                self.lanes[op.lane].busy = False
        n.ops.clear()
        n.index_reads.clear()
        n.ready_reads.clear()
        n.ka_reads.clear()
        n.ka_confirmed.clear()
        n.ka_waiting.clear()
        self.stats.crashes += 1
        self._log(f"crash {nid}")

    def wipe(self, nid: int) -> None:
        """Stop a node, delete its data, and start it empty (it joins when a membership change adds it)."""
        self.crash(nid)
        fresh = ReplicaSimNode(nid)
        fresh.incarnation = self.nodes[nid].incarnation  # request ids stay unique across incarnations
        self.nodes[nid] = fresh
        self._start(fresh)
        self._log(f"wipe {nid}")

    def resume(self, nid: int) -> None:
        n = self.nodes[nid]
        if n.raw is not None and n.paused_ticks is not None:
            self._log(f"resume {nid} after {n.paused_ticks} ticks")
            n.paused_ticks = None  # its next step finds the ticks due on the clock, as the daemon's loop does

    def run_ticks(self, ticks: int, faults: bool = True) -> None:
        self.faults_on = faults
        super().run_ticks(ticks, faults)

    def _random_actions(self) -> None:
        super()._random_actions()
        c = self.cfg
        if c.p_pause_leader and self.rng.random() < c.p_pause_leader:
            leader = self.current_leader()
            if leader is not None:
                self.pause(leader)
        if (c.p_resume_deposed or c.p_heal_deposed) and self.leaders:
            # A deposed leader that still believes it leads (paused, or cut off) comes back soon after its successor
            # took over and times the leases.
            lead = self.nodes[self.leaders[max(self.leaders)]]
            if lead.running and lead.replica is not None and lead.replica.lessor.primed:
                deposed = [n for n in self.nodes.values() if n is not lead and n.replica is not None and
                           n.replica.role == LEADER]
                if deposed and c.p_resume_deposed and self.rng.random() < c.p_resume_deposed:
                    for n in deposed:
                        self.resume(n.id)
                if deposed and self.blocked and c.p_heal_deposed and self.rng.random() < c.p_heal_deposed:
                    self.heal()
        if self.lease_load:
            self._lease_actions()

    def tick(self) -> None:
        self.ticks += 1
        for n in self.nodes.values():
            if n.raw is not None and n.paused_ticks is not None:
                n.paused_ticks += 1
        self._expire_ops()

    # -- the network ----------------------------------------------------------------------------------------
    def _deliver_due(self) -> None:
        net = self._net
        while net and net[0][0] <= self.now:
            _, _, m = heapq.heappop(net)
            n = self.nodes.get(m.to)
            if n is None or not n.up or (m.frm, m.to) in self.blocked:
                continue
            if m.frm in n.refused:
                # The transport refuses a removed node and tells it why (its on_removed).
                sender = self.nodes.get(m.frm)
                if sender is not None and sender.replica is not None:
                    sender.replica.mark_removed(f"node {n.id} refuses it")
                continue
            n.inbox.append(m)

    # -- one node's turn ------------------------------------------------------------------------------------
    def process(self, n: SimNode) -> bool:
        assert isinstance(n, ReplicaSimNode)
        rep = n.replica
        if rep is None or n.paused_ticks is not None:
            return False
        if n.inbox:
            rep.on_messages([m for m in n.inbox if type(m) is not tuple])
            n.inbox.clear()
        depth = self.cfg.pipeline
        if len(n.pending) >= depth:
            return False  # as the daemon: with its writes pipeline full, nothing is stepped
        committed = n.raw.committed  # type: ignore[union-attr]
        rep.step(self.now_s(), WALL_NS_BASE + int(self.now_s() * 1e9))
        self._observe(n)
        if self.cfg.p_isolate_at_expiry_commit and self.faults_on and rep.role == LEADER:
            self._isolate_at_expiry_commit(n, committed)
        while len(n.pending) < depth and rep.has_ready():
            rd = rep.ready()
            self._check_ready(n, rd)
            log = n.raw.raft.log  # type: ignore[union-attr]
            prev_terms = [log.zero_term_on_out_of_bounds(e.index - 1) for e in rd.entries]
            if n.pending:
                self.stats.pipelined_readys += 1
            rep.start_ready(rd)
            n.pending.append((rd, None, prev_terms))  # type: ignore[arg-type]
        return True

    def complete_write(self, n: SimNode) -> None:
        assert isinstance(n, ReplicaSimNode) and n.replica is not None
        rd, _, prev_terms = n.pending.popleft()
        assert isinstance(rd, Ready)
        self._durable_write(n, rd, prev_terms)
        results = n.fsm.apply(None, rd.committed_entries) if rd.committed_entries else []
        if results and self.leases:
            self._lease_results(n, results)
        if results:
            n.replica.on_results(results)  # as the writer thread hands them on, before the loop finishes the Ready
        n.replica.finish_ready(rd, results)
        if n.replica is None:
            return
        if any(e.type == EntryType.CONF_CHANGE for e in rd.committed_entries):
            cs = n.replica.raw.conf_state()
            if cs != n.disk.conf_state:
                raise Violation(f"node {n.id}: membership in memory {cs} != durable {n.disk.conf_state}")
            self.stats.conf_changes += 1
        self._observe(n)
        self._serve_ready_reads(n)

    def _observe(self, n: SimNode) -> None:
        before = self.max_commit_known
        super()._observe(n)
        if self.max_commit_known > before:
            self.commit_times.append((self.now, self.max_commit_known))

    # -- clients: writes ------------------------------------------------------------------------------------
    def propose(self, nid: int) -> None:
        n = self.nodes[nid]
        if not n.running or n.replica is None:
            return
        w = self.wrng
        if w.random() < 0.4:
            lanes = [i for i, lane in enumerate(self.lanes) if not lane.busy]
            if lanes:
                self._incr(n, w.choice(lanes))
            return
        for _ in range(w.choice((1, 1, 1, 2, 4))):  # bursts: several commands in one batch
            self._put(n, w.choice(KEYS))

    def _put(self, n: ReplicaSimNode, key: bytes, kind: str = "put") -> None:
        assert n.replica is not None
        self._next_value += 1
        value = b"v%d" % self._next_value
        try:
            rid = n.replica.propose(lambda rid: Put(rid, 0, 0, key, value))
        except RaftKVError:
            return
        self.stats.proposals += 1
        n.ops[rid] = _Op(kind, self.now, value=value)

    def _incr(self, n: ReplicaSimNode, lane_no: int) -> None:
        assert n.replica is not None
        lane = self.lanes[lane_no]
        try:
            rid = n.replica.propose(lambda rid: Incr(rid, lane.client_id, lane.seq, lane.key, 1))
        except RaftKVError:
            return
        lane.busy = True
        self.stats.proposals += 1
        n.ops[rid] = _Op("incr", self.now, lane=lane_no, seq=lane.seq)

    def propose_conf_change(self, nid: int, cc: ConfChange) -> None:
        n = self.nodes[nid]
        if not n.running or n.replica is None:
            return
        member = _member(cc.node_id, learner=cc.type == ConfChangeType.ADD_LEARNER)
        nid = cc.node_id
        if cc.type != ConfChangeType.REMOVE_NODE and nid != n.id and nid not in {m.id for m in n.fsm.members()}:
            if nid in n.fsm.removed_members() and not self.readd_wiped:
                # A removed node refuses to serve for good (``Replica.mark_removed``); adding it again takes what
                # an operator does: wipe its data first (README, membership). Off by default: see readd_wiped.
                return
            # As `raftkv member add` and the operator: the new node's configuration names the members as they are
            # now, and it starts empty.
            now = [Member(m.id, m.peer_addr, m.client_addr) for m in n.fsm.members() if m.id != nid]
            self.node_members[nid] = (*now, Member(nid, member.peer_addr, member.client_addr))
            self.wipe(nid)
        try:
            rid = n.replica.propose_member_change(cc.type, member, False)
        except RaftKVError:
            return
        n.ops[rid] = _Op("conf", self.now)
        self._log(f"node {n.id} proposes {cc}")

    def transfer(self, leader: int, to: int) -> None:
        n = self.nodes[leader]
        if n.running and n.replica is not None:
            try:
                n.replica.transfer(to)
            except RaftKVError:
                pass

    def _batch(self, index: int) -> list[Command]:
        got = self._batches.get(index)
        if got is None:
            _, data = self.applied_global[index]
            try:
                got = list(decode_batch(data).commands)
            except Exception:
                got = []
            self._batches[index] = got
        return got

    def on_response(self, n: ReplicaSimNode, rid: int, a: Applied) -> None:
        op = n.ops.pop(rid, None)
        assert n.replica is not None
        n.replica.forget(rid)
        if op is None:
            return
        if a.proposer != n.id or a.request_id != rid:
            raise Violation(f"node {n.id} answered request {rid} with the result of {a.proposer}/{a.request_id}")
        if a.index not in self.applied_global:
            raise Violation(f"node {n.id} answered request {rid} at index {a.index}, which nothing applied")
        if op.kind == "conf":
            change = decode_change(self.applied_global[a.index][1])
            if (change.proposer, change.request_id) != (n.id, rid):
                raise Violation(f"membership change {rid} of node {n.id} answered at {a.index}, which holds {change}")
            self.rstats.conf_acked += 1
            return
        if not any(c.request_id == rid for c in self._batch(a.index)) or decode_batch(
            self.applied_global[a.index][1]
        ).proposer != n.id:
            raise Violation(f"write {rid} of node {n.id} answered as applied at {a.index}, whose entry does not hold "
                            "it")
        if op.kind in ("grant", "revoke", "lput"):
            self._lease_response(n, op, a)
        elif op.kind in ("put", "live"):
            if type(a.result) is not PutResult or a.result.kv.value != op.value:
                raise Violation(f"put {op.value!r} on node {n.id} answered {a.result}")
            self.rstats.puts_acked += 1
            if op.kind == "live":
                self.live_acked = True
        elif op.kind == "incr":
            lane = self.lanes[op.lane]
            if type(a.result) is not IncrResult or a.result.value != op.seq:
                raise Violation(f"Exactly once: increment {op.seq} of session {lane.client_id} answered "
                                f"{a.result} (the value must be {op.seq}: each increment applied once)")
            lane.seq = op.seq + 1
            lane.busy = False
            self.rstats.incrs_acked += 1

    def on_failure(self, n: ReplicaSimNode, rid: int, err: RaftKVError) -> None:
        op = n.ops.pop(rid, None)
        if n.replica is not None:
            n.replica.forget(rid)
        if "is never a member again" in err.message:
            self.rstats.readds_refused += 1
        if err.applied == APPLIED_NO:
            self.not_applied.add((n.id, rid))
            self.rstats.failed_not_applied += 1
        else:
            self.rstats.failed_unknown += 1
        if op is not None and op.lane >= 0:
            self.lanes[op.lane].busy = False  # retried with the same seq, maybe on another node
        if op is not None and op.kind == "grant":
            self._grant_lost(op)

    def _expire_ops(self) -> None:
        """Callers give up after a deadline (three election timeouts), as the servicer's do: outcome unknown."""
        limit = self.now - 3 * self.cfg.election_tick * self.cfg.micro_steps_per_tick
        for n in self.nodes.values():
            if n.replica is None or not n.ops:
                continue
            for rid in [rid for rid, op in n.ops.items() if op.issued < limit]:
                op = n.ops.pop(rid)
                n.replica.forget(rid)
                self.rstats.timed_out += 1
                if op.lane >= 0:
                    self.lanes[op.lane].busy = False
                if op.kind == "grant":
                    self._grant_lost(op)

    def check_not_applied(self) -> None:
        """No write answered "certainly not applied" is in any entry applied anywhere."""
        for index, (_, data) in self.applied_global.items():
            cmds = self._batch(index)
            if not cmds:
                continue
            proposer = decode_batch(data).proposer
            for c in cmds:
                if (proposer, c.request_id) in self.not_applied:
                    raise Violation(f"write {c.request_id} of node {proposer} was answered 'not applied', but the "
                                    f"entry at {index} applied it")

    # -- clients: leases ------------------------------------------------------------------------------------
    def _lease_actions(self) -> None:
        """One micro-step of the lease clients (after the faults of this micro-step: a node just resumed may get a
        keep-alive before its next step, as a daemon resumed by SIGCONT may serve one before its loop's next turn)."""
        c, w = self.cfg, self.lrng
        for n in self.nodes.values():
            if n.running and n.replica is not None:
                if n.ka_waiting:  # it was resumed this micro-step: these are served before its next step
                    waiting, n.ka_waiting = n.ka_waiting, []
                    for ids in waiting:
                        self._keep_alive(n, ids, self.now)
                if n.ka_confirmed:
                    applied = n.replica.applied
                    confirmed = [k for k in n.ka_confirmed if k[2] <= applied]
                    n.ka_confirmed = [k for k in n.ka_confirmed if k[2] > applied]
                    for sent, ids, _ in confirmed:
                        self._keep_alive(n, ids, sent)
        running = [n for n in self.nodes.values() if n.running and n.replica is not None]
        if not running:
            return
        live = [ls for ls in self.leases.values() if ls.known and not ls.ended]
        held = sum(1 for ls in self.leases.values() if not ls.ended and (ls.renewing or not ls.known))
        if w.random() < c.p_grant and held < MAX_LEASES:
            self._grant(w.choice(running), w.choice(c.lease_ttls))
        if w.random() < c.p_keep_alive:
            renewing = [ls.lid for ls in live if ls.renewing]
            ids = tuple(lid for lid in renewing if w.random() < 0.7)
            stopped = [ls.lid for ls in live if not ls.renewing and ls.straggles]
            if stopped and w.random() < 0.2:
                ids += (w.choice(stopped),)  # a straggler: a keep-alive still on its way when its client stopped
            if ids:
                # Mostly to a node that believes it leads (a deposed one too: it may not know yet; a paused one
                # serves it when it resumes, before its next step, as a daemon resumed by SIGCONT may), else anywhere.
                leaders = [n for n in self.nodes.values() if n.replica is not None and n.replica.role == LEADER]
                target = w.choice(leaders) if leaders and w.random() < 0.9 else w.choice(running)
                if target.running:
                    self._keep_alive(target, ids, self.now)
                elif len(target.ka_waiting) < 8:
                    target.ka_waiting.append(ids)
        if w.random() < c.p_keep_alive_applying:
            # Late copies of keep-alives, aimed at a leader that knows more committed than it applied (a new leader
            # with its predecessor's last entries, a revoke among them, not yet applied): every lease ever granted.
            applying = [n for n in running if n.replica is not None and n.replica.role == LEADER
                        and n.raw is not None and n.raw.committed > n.replica.applied]
            granted = tuple(self.leases)  # (ids named by the clients: known even if the answer was lost)
            if applying and granted:
                self._keep_alive(w.choice(applying), granted, self.now)
        if live and w.random() < c.p_lease_revoke:
            ls = w.choice(live)
            self._lease_op(w.choice(running), "revoke", ls.lid,
                           lambda rid: LeaseRevoke(rid, 0, 0, ls.lid, 0))
        if live and w.random() < c.p_lease_put:
            ls = w.choice(live)
            self._next_value += 1
            key, value = b"lk%d.%d" % (ls.lid, w.randrange(3)), b"v%d" % self._next_value
            self._lease_op(w.choice(running), "lput", ls.lid, lambda rid: Put(rid, 0, 0, key, value, (), ls.lid))

    def _lease_op(self, n: ReplicaSimNode, kind: str, lid: int, make: Callable[[int], Command]) -> bool:
        assert n.replica is not None
        try:
            rid = n.replica.propose(make)
        except RaftKVError:
            return False
        self.stats.proposals += 1
        n.ops[rid] = _Op(kind, self.now, lease=lid)
        return True

    def _grant(self, n: ReplicaSimNode, ttl_s: int) -> None:
        lid = LEASE_IDS + len(self.leases) + 1
        if self._lease_op(n, "grant", lid, lambda rid: LeaseGrant(rid, 0, 0, lid, ttl_s)):
            self.leases[lid] = _Lease(lid, ttl_s, self.now, ttl_s * self.steps_per_s)
            self._log(f"node {n.id}: grant lease {lid} ttl {ttl_s}s")

    def _grant_lost(self, op: _Op) -> None:
        ls = self.leases[op.lease]
        if not ls.known:
            ls.ended = True  # the client does not hold it (if it was granted after all, nobody renews it)

    def _lease_response(self, n: ReplicaSimNode, op: _Op, a: Applied) -> None:
        ls = self.leases[op.lease]
        r = a.result
        if op.kind == "grant":
            if type(r) is not LeaseGrantResult or (r.lease_id, r.ttl_s) != (ls.lid, ls.ttl_s) or r.stamp != ls.stamp:
                raise Violation(f"grant of lease {ls.lid} (ttl {ls.ttl_s}) on node {n.id} answered {r}")
            ls.known = True
            ls.forever = self.lrng.random() < 0.3
            self.rstats.leases_granted += 1
        elif op.kind == "revoke":
            if type(r) is LeaseRevokeResult:
                self.rstats.lease_client_revokes += 1
            elif type(r) is not ErrorResult or r.kind != "lease-not-found":
                raise Violation(f"revoke of lease {ls.lid} on node {n.id} answered {r}")
            ls.ended = True
        else:
            if type(r) is PutResult:
                if r.kv.lease != ls.lid:
                    raise Violation(f"put attached to lease {ls.lid} on node {n.id} answered {r}")
                self.rstats.lease_puts += 1
            elif type(r) is not ErrorResult or r.kind != "lease-not-found":
                raise Violation(f"put attached to lease {ls.lid} on node {n.id} answered {r}")

    def _keep_alive(self, n: ReplicaSimNode, ids: tuple[int, ...], sent: int) -> None:
        """A keep-alive of ``ids`` that arrived at ``n`` at micro-step ``sent``, as ``Node.keep_alive`` drives it:
        first asked at its arrival; asked again (``sent < now``) once a read-index round asked after it confirmed
        the leadership."""
        rep = n.replica
        assert rep is not None
        confirmed = sent < self.now
        try:
            ttls = rep.keep_alive(self.at_s(sent), ids, confirmed=confirmed)
        except RaftKVError:
            return
        if ttls is None:
            try:
                n.ka_reads[rep.read()] = (sent, ids)
            except RaftKVError:
                pass
            return
        if confirmed:
            self.rstats.lease_renewals_confirmed += sum(1 for t in ttls if t > 0)
        self.rstats.lease_keep_alives += 1
        term = rep.term
        # An adversarial client: an answer from a deposed leader (a later term has a leader) is where a wrong
        # promise would be; going silent right after it leaves that promise the last one, for the checks to weigh.
        deposed = max(self.leaders, default=0) > term
        for lid, ttl in zip(ids, ttls, strict=True):
            ls = self.leases[lid]
            if ttl <= 0:
                self.rstats.lease_renewals_refused += 1
                ls.ended = True  # the client learns its lease ended
                continue
            if ls.ended:
                ls.ended = False  # (a late copy renewed it: the client holds it again)
            if ttl != ls.ttl_s:
                raise Violation(f"node {n.id} answered a keep-alive of lease {lid} (ttl {ls.ttl_s}s) with ttl {ttl}")
            self.rstats.lease_renewals += 1
            if deposed:
                ls.renewing = ls.straggles = False
            elif not ls.forever and self.lrng.random() < self.cfg.p_stop_renewing:
                ls.renewing = False  # its client stops renewing it: it must expire
            until = sent + ttl * self.steps_per_s
            ls.answers.append((sent, until, term, n.id))
            for at, xterm, xnode in ls.expiries:
                if xterm >= term and at < until:
                    raise Violation(self._lease_unsafe(ls, "proposed", at, xnode, xterm, (sent, until, term, n.id)))
            if ls.expired_at is not None and ls.expired_at < until:
                raise Violation(self._lease_unsafe(ls, "applied", ls.expired_at, 0, 0, (sent, until, term, n.id)))

    def _promised(self, ls: _Lease, term: int | None) -> tuple[int, tuple[int, int, int, int]]:
        """The latest promise of a lease, by the grant or by answers of leaders of terms up to ``term`` (None: any):
        (until, (sent, until, term, node)); node 0 is the grant."""
        best = (ls.granted_at + ls.ttl_steps, (ls.granted_at, ls.granted_at + ls.ttl_steps, 0, 0))
        for a in ls.answers:
            if a[1] > best[0] and (term is None or a[2] <= term):
                best = (a[1], a)
        return best

    def _lease_unsafe(self, ls: _Lease, how: str, at: int, node: int, term: int,
                      promise: tuple[int, int, int, int]) -> str:
        sent, until, pterm, pnode = promise
        who = "its grant" if pnode == 0 else f"a keep-alive answered by node {pnode} (term {pterm})"
        by = f" by node {node} (term {term})" if node else ""
        return (f"Lease safety: the expiry of lease {ls.lid} (ttl {ls.ttl_s}s) was {how}{by} at micro-step {at}, "
                f"but {who} sent at micro-step {sent} promised it until {until} ({(until - at) / self.steps_per_s:.3f}"
                f"s later)")

    def _on_expiry(self, n: ReplicaSimNode, lid: int, stamp: int) -> None:
        """A leader's lessor handed out the expiry of ``lid``: it proposes the revoke now."""
        assert n.replica is not None
        ls = self.leases.get(lid)
        if ls is None:
            raise Violation(f"node {n.id} expires lease {lid}, which no client granted")
        if ls.stamp and stamp != ls.stamp:
            raise Violation(f"node {n.id} expires lease {lid} with stamp {stamp}; its grant's is {ls.stamp}")
        term = n.replica.term
        self.rstats.lease_expiries += 1
        ls.expiries.append((self.now, term, n.id))
        self._log(f"node {n.id} (term {term}) expires lease {lid}")
        p = self.cfg.p_pause_at_expiry
        if p and self.faults_on and self.rng.random() < p:
            self.pause(n.id)  # (within its step: SIGSTOP right after it)
        until, promise = self._promised(ls, term)
        if self.now < until:
            raise Violation(self._lease_unsafe(ls, "proposed", self.now, n.id, term, promise))
        if ls.grant_term < term or any(a[2] < term for a in ls.answers):
            self.rstats.lease_expiries_after_failover += 1

    def _isolate_at_expiry_commit(self, n: ReplicaSimNode, before: int) -> None:
        """The leader just learned that an expiry's revoke of its term committed: sometimes cut it off before the news
        leaves (its next messages carry the commit index), so the next leader is elected without having applied it."""
        raw = n.raw
        assert raw is not None
        log = raw.raft.log
        for index in range(max(before + 1, log.first_index()), raw.committed + 1):
            e = log.slice(index, index + 1)[0]
            if e.type != EntryType.NORMAL or not e.data or e.term != raw.term:
                continue
            try:
                cmds = decode_batch(e.data).commands
            except Exception:
                continue
            if any(type(c) is LeaseRevoke and c.stamp for c in cmds):
                if self.rng.random() < self.cfg.p_isolate_at_expiry_commit:
                    self.partition([[n.id], [nid for nid in self.nodes if nid != n.id]])
                return

    def _lease_results(self, n: ReplicaSimNode, results: Sequence[Applied]) -> None:
        """What a node's state machine did with lease commands (before the replica hears of it)."""
        assert n.replica is not None
        for a in results:
            r = a.result
            if type(r) is LeaseGrantResult:
                ls = self.leases.get(r.lease_id)
                if ls is None:
                    raise Violation(f"node {n.id} applied a grant of lease {r.lease_id}, which no client asked for")
                if ls.stamp and ls.stamp != r.stamp:
                    raise Violation(f"lease {r.lease_id} granted with stamp {r.stamp} on node {n.id}, {ls.stamp} "
                                    "elsewhere")
                ls.stamp = r.stamp
                ls.grant_term = self.applied_global[a.index][0]
                if n.replica.role == LEADER:
                    self.last_grant_applied = self.now
            elif type(r) is LeaseRevokeResult:
                ls = self.leases[r.lease_id]
                cmd = next(c for c in self._batch(a.index) if c.request_id == a.request_id)
                assert type(cmd) is LeaseRevoke, cmd
                if ls.expired_at is None and ls.revoked_at is None:
                    self.rstats.lease_keys_deleted += len(r.deleted)
                    if cmd.stamp:
                        ls.expired_at = self.now
                        self.rstats.lease_expiries_applied += 1
                        self._log(f"lease {ls.lid} expired (applied on node {n.id})")
                        until, promise = self._promised(ls, None)
                        if self.now < until:
                            raise Violation(self._lease_unsafe(ls, "applied", self.now, 0, 0, promise))
                    else:
                        ls.revoked_at = self.now
                if any(not k.startswith(b"lk%d." % ls.lid) for k in r.deleted):
                    raise Violation(f"revoking lease {ls.lid} on node {n.id} deleted {r.deleted}")

    def check_lease_liveness(self) -> None:
        """After healing (``check_liveness`` passed), with every renewal stopped: the leader revokes every lease
        within its TTL plus ``LEASE_LIVENESS_SLACK_E`` election timeouts of the later of: renewals stopping, the
        current leader taking office, the lease's grant being applied on it. (A new leader gives every lease a full
        TTL, so each leader change starts the wait again; a healthy cluster has few.)"""
        self.lease_load = False
        saved = self.cfg
        self.cfg = dataclasses.replace(saved, drop=0.0, dup=0.0)
        slack = LEASE_LIVENESS_SLACK_E * self.cfg.election_tick * self.cfg.micro_steps_per_tick
        ttl = max((ls.ttl_steps for ls in self.leases.values()), default=0)
        start = self.now
        lead: tuple[int, int] | None = None
        changes = 0
        prev: dict[int, int] = {}  # lease id -> ttl (micro-steps): held at the last look
        counted = False
        try:
            for _ in range(10 * (ttl + slack) // self.cfg.micro_steps_per_tick + 1):
                leader = self.current_leader()
                n = self.nodes[leader] if leader is not None else None
                if n is None or n.raw is None:
                    lead = None
                    start = self.now
                else:
                    if lead != (n.id, n.raw.term):
                        lead, start = (n.id, n.raw.term), self.now
                        changes += 1
                    held = {lid: t * self.steps_per_s for lid, t, _ in n.fsm.leases()}
                    if not counted:
                        self.rstats.lease_liveness_checked += len(held)
                        counted = True
                    since = max(start, self.last_grant_applied)
                    for lid in prev.keys() - held.keys():  # revoked since the last look: how long after its TTL
                        over = self.now - since - prev[lid]
                        self.rstats.lease_liveness_worst = max(self.rstats.lease_liveness_worst, over)
                    if not held:
                        return
                    prev = held
                    late = [lid for lid, t in held.items() if self.now > since + t + slack]
                    if late:
                        raise Violation(f"Lease liveness: leases {late} still held by leader {n.id} (term "
                                        f"{n.raw.term}) {self.now - since} micro-steps after it became stable with "
                                        f"renewals stopped (TTL + {LEASE_LIVENESS_SLACK_E} election timeouts)")
                self.run_ticks(1, faults=False)
            raise Violation(f"Lease liveness: leases still held after {10 * (ttl + slack)} micro-steps of healed "
                            f"cluster ({changes} leaders took office meanwhile)")
        finally:
            self.cfg = saved

    def check_lease_keys(self) -> None:
        """Every leased key on every node is attached to the lease it was put with, and that lease exists there."""
        for n in self.nodes.values():
            if n.raw is None:
                continue
            held = {lid for lid, _, _ in n.fsm.leases()}
            kvs, _ = n.fsm.range(b"lk", limit=10000)
            for kv in kvs:
                lid = int(kv.key[2:].split(b".")[0])
                if kv.lease != lid or lid not in held:
                    raise Violation(f"node {n.id}: key {kv.key!r} is attached to lease {kv.lease} (held: "
                                    f"{sorted(held)})")

    # -- clients: reads -------------------------------------------------------------------------------------
    def read(self, nid: int, kind: str = "index") -> None:
        n = self.nodes[nid]
        rep = n.replica
        if not n.running or rep is None:
            return
        w = self.wrng
        if kind == "index":
            kind = w.choice(("index", "index", "bounded", "bounded", "stale"))
        r = _Read(kind, w.choice(KEYS), self.max_commit_known, self.now)
        self.stats.reads_issued += 1
        if kind == "lease":
            idx = rep.lease_read_index()
            if idx is None:
                return
            r.index = idx
            n.ready_reads.append(r)
            self._serve_ready_reads(n)
            return
        if kind == "bounded":
            r.bound_ms = w.choice((3, 10, 40)) * self.tick_ms
            if rep.bounded_read_ok(r.bound_ms, self.now_s()):
                self._serve(n, r)
                return
            self.rstats.bounded_fallbacks += 1
            r.kind = "index"  # as the servicer: a bounded read that cannot be served locally is a linearizable one
        if kind == "stale":
            self._serve(n, r)
            return
        try:
            n.index_reads[rep.read()] = r
        except RaftKVError:
            pass

    def _serve_ready_reads(self, n: ReplicaSimNode) -> None:
        if not n.ready_reads or n.replica is None:
            return
        applied = n.replica.applied
        still = []
        for r in n.ready_reads:
            if applied >= r.index:
                self._serve(n, r)
            else:
                still.append(r)
        n.ready_reads = still

    def _serve(self, n: ReplicaSimNode, r: _Read) -> None:
        assert n.replica is not None and self.rstats.reads is not None
        applied = n.replica.applied
        if n.fsm.applied_index() != applied:
            raise Violation(f"node {n.id}: the replica says applied {applied}, the state machine "
                            f"{n.fsm.applied_index()}")
        kv = n.fsm.get(r.key)
        got = kv.value if kv is not None else None
        want = self._value_at(r.key, applied)
        if got != want:
            raise Violation(f"node {n.id} read {r.key!r} = {got!r} at applied {applied}, but the committed log gives "
                            f"{want!r}")
        if r.kind in ("index", "lease") and r.index < r.required:
            raise Violation(f"Linearizability: {r.kind} read on node {n.id} got read index {r.index}, but index "
                            f"{r.required} was already committed when it was issued")
        if r.kind == "bounded":
            # Every entry committed anywhere more than the bound before the read must be in the state served.
            steps = r.bound_ms * self.cfg.micro_steps_per_tick // self.tick_ms
            cutoff = r.issued - steps - BOUNDED_SLACK_STEPS
            must = max((c for t, c in self.commit_times if t <= cutoff), default=0)
            if applied < must:
                raise Violation(f"Bounded staleness: node {n.id} served a {r.bound_ms} ms bounded read at applied "
                                f"{applied}, but index {must} was committed {r.issued - cutoff} micro-steps or more "
                                f"before the read (the bound is {steps})")
        self.rstats.reads[r.kind] += 1
        self.stats.reads_served += 1

    def _value_at(self, key: bytes, index: int) -> bytes | None:
        for i in range(index, 0, -1):
            if i not in self.applied_global:
                continue
            for c in reversed(self._batch(i)):
                if type(c) is Put and c.key == key:
                    return c.value
        return None

    # -- liveness -------------------------------------------------------------------------------------------
    def check_liveness(self, max_ticks: int) -> int:
        """After healing: a leader is elected and a fresh write through it is answered, within ``max_ticks`` plus
        the backlog's ``catch_up_ticks``."""
        self.heal_all()
        catch_up = self.catch_up_ticks()
        saved = self.cfg
        self.cfg = dataclasses.replace(saved, drop=0.0, dup=0.0)
        self.live_acked = False
        try:
            proposed_at: int | None = None
            for t in range(max_ticks + catch_up):
                if self.live_acked:
                    return t
                if proposed_at is not None and t - proposed_at > 2 * self.cfg.election_tick:
                    proposed_at = None
                if proposed_at is None:
                    leader = self.current_leader()
                    if leader is not None:
                        n = self.nodes[leader]
                        if n.raw is not None and n.raw.committed_entry_in_current_term():
                            self._put(n, b"live", kind="live")
                            proposed_at = t
                self.run_ticks(1, faults=False)
            raise Violation(f"Liveness: no write answered within {max_ticks} + {catch_up} (backlog) ticks after "
                            f"healing (leader={self.current_leader()})")
        finally:
            self.cfg = saved

    def collect_stats(self) -> None:
        for n in self.nodes.values():
            if n.replica is not None:
                self.rstats.forwarded += n.replica.stats.commands_forwarded
                self.rstats.batches += n.replica.stats.batches_proposed
                self.rstats.commands += n.replica.stats.commands_proposed


def run_replica_schedule(seed: int, cfg: SimConfig | None = None, ticks: int = 150, liveness_ticks: int = 300,
                         *, readd_wiped: bool = False) -> ReplicaCluster:
    """One generated schedule of faults and client load against Replicas; raises Violation (with the cluster's
    description) on any failed property."""
    c = ReplicaCluster(seed, cfg, readd_wiped=readd_wiped)
    try:
        c.run_ticks(ticks)
        c.check_logs_pairwise()
        c.check_liveness(liveness_ticks)
        if c.cfg.leases:
            c.check_lease_liveness()
            c.check_lease_keys()
        c.check_logs_pairwise()
        c.check_not_applied()
    except Violation as e:
        raise Violation(f"{e}\n{c.describe()}") from None
    c.collect_stats()
    return c



REPLICA_CONFIGS: dict[str, SimConfig] = {
    "3": SimConfig(nodes=3),
    "5": SimConfig(nodes=5),
    "5-lossy": SimConfig(nodes=5, drop=0.2, dup=0.1, max_delay=10, max_size_per_msg=60, max_inflight=2),
    "3-crashy": SimConfig(nodes=3, p_crash=0.03, p_restart=0.1, disk_delay=0.8, p_crash_leader=0.005),
    "3-pauses": SimConfig(nodes=3, p_pause=0.02, p_resume=0.03, p_read=0.15),
    "3-pipelined": SimConfig(nodes=3, pipeline=3, p_crash=0.02, p_restart=0.1, disk_delay=0.8, p_crash_leader=0.01),
    "3-members": SimConfig(nodes=3, universe=5, p_conf_change=0.03, p_crash=0.01, p_crash_leader=0.005),
    "5-members": SimConfig(nodes=5, universe=7, p_conf_change=0.03, drop=0.05, p_crash_leader=0.005),
    "5-leader-faults": SimConfig(nodes=5, max_size_per_msg=1, max_inflight=1, p_crash=0.01, p_restart=0.08,
                                 p_partition=0.01, p_heal=0.03, disk_delay=0.6, p_crash_leader=0.01,
                                 p_isolate_leader=0.01, p_propose=0.3, p_transfer=0.01),
    # Leases (see the module docstring): 100 ms ticks, so an election timeout is 1 s and TTLs of 1-3 s are 1-3 of
    # them. Leader changes of every kind: crashes, isolation (a deposed leader that does not know yet still gets
    # keep-alives), pauses (a resumed leader gets one before its next step), transfers, slow pipelined disks.
    "3-leases": ReplicaSimConfig(nodes=3, tick_ms=100, leases=True, p_crash_leader=0.004, p_isolate_leader=0.004,
                                 p_pause=0.004, p_resume=0.02, p_transfer=0.004),
    "5-leases-faults": ReplicaSimConfig(nodes=5, tick_ms=100, leases=True, max_size_per_msg=60, p_crash=0.01,
                                        p_restart=0.08, p_partition=0.01, p_heal=0.03, disk_delay=0.6,
                                        p_crash_leader=0.008, p_isolate_leader=0.008, p_transfer=0.01, p_pause=0.004,
                                        p_resume=0.03),
    "3-leases-pipelined": ReplicaSimConfig(nodes=3, tick_ms=100, leases=True, pipeline=3, disk_delay=0.8,
                                           p_crash=0.01, p_restart=0.1, p_crash_leader=0.005, p_transfer=0.02,
                                           p_pause=0.004, p_resume=0.03),
    # Aimed at deposed leaders that do not know it yet (with pre-vote and check-quorum an isolated leader mostly steps
    # down about when its successor is elected, so they are rare otherwise): a leader paused (sometimes right after
    # it decided an expiry) or isolated comes back once its successor times the leases, keep-alives waiting for it.
    "3-leases-deposed": ReplicaSimConfig(nodes=3, tick_ms=100, leases=True, lease_ttls=(1, 3), p_pause_leader=0.004,
                                         p_pause_at_expiry=0.3, p_resume=0.01, p_resume_deposed=0.2,
                                         p_isolate_leader=0.004, p_heal=0.001, p_heal_deposed=0.5, p_pause=0.0,
                                         p_partition=0.0, p_crash=0.002),
    # Aimed at a new leader that has not applied its predecessor's last expiry: the leader is isolated as it learns
    # that an expiry of its term committed, and late keep-alives reach leaders whose applying lags their commit.
    "3-leases-failover": ReplicaSimConfig(nodes=3, tick_ms=100, leases=True, p_isolate_at_expiry_commit=1.0,
                                          p_keep_alive_applying=0.5, p_grant=0.08, p_stop_renewing=0.3,
                                          p_heal=0.001, p_pause=0.0, p_partition=0.0),
}
"""The configurations the replica simulator runs (the daemon's core settings: pre-vote and check-quorum always on)."""

__all__ = ["REPLICA_CONFIGS", "ReplicaCluster", "ReplicaSimConfig", "run_replica_schedule"]
