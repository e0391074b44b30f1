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

Not modelled here (the Raft-level simulator covers them for the core): power losses and snapshots (the state machine
would have to be copied and shipped), and pre-vote / check-quorum off (the daemon always runs them on).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raftkv.errors import APPLIED_NO, RaftKVError
from raftkv.kv import (
    Applied,
    Command,
    Incr,
    IncrResult,
    KVStateMachine,
    MemberInfo,
    Put,
    PutResult,
    decode_batch,
    decode_conf_change,
)
from raftkv.kv import bootstrap_entries as kv_bootstrap_entries
from raftkv.kv.membership import decode_change
from raftkv.raft import ConfChange, ConfChangeType, ConfState, EntryType, HardState, Message, RawNode, Ready, StateRole
from raftkv.replica import Replica, core_config
from raftkv.settings import Member, Settings

from .cluster import Cluster, SimConfig, SimNode, Violation

TICK_MS = 10
KEYS = tuple(b"k%d" % i for i in range(4))
LANES = 3
WALL_NS_BASE = 1_700_000_000 * 10**9
BOUNDED_SLACK_STEPS = 0
"""How much older than its bound a bounded read may be, in micro-steps, beyond the bound itself."""


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

    def __post_init__(self) -> None:
        self.reads = {"index": 0, "lease": 0, "bounded": 0, "stale": 0}


@dataclass
class _Op:
    kind: str  # put | incr | conf | live
    issued: int  # micro-step
    value: bytes = b""
    lane: int = -1
    seq: int = 0


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
            r = self.n.index_reads.pop(i, None)
            if r is not None:
                r.index = index
                self.n.ready_reads.append(r)

    def reads_failed(self, read_ids: Sequence[int], err: RaftKVError) -> None:
        for i in read_ids:
            self.n.index_reads.pop(i, None)

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

    def __init__(self, seed: int, cfg: SimConfig | None = None, *, readd_wiped: bool = False) -> None:
        """``readd_wiped``: membership changes may try to add a removed id again, after wiping its node (what an
        operator rebuilding a member under its old id would do); the leader must refuse it (``test_replicas.py``:
        two wiped members replaying the log from its start pass through the first configuration, in which they are
        a majority, and can elect a leader of it)."""
        self.readd_wiped = readd_wiped
        self.node_members: dict[int, tuple[Member, ...]] = {}  # a joiner's configured members (else the initial)
        cfg = cfg or SimConfig()
        if cfg.power_loss or cfg.p_snapshot:
            raise ValueError("the replica simulator models neither power losses nor snapshots")
        self.rstats = ReplicaSimStats()
        self.lanes = [_Lane(1000 + i, b"lane%d" % i) for i in range(LANES)]
        self.not_applied: set[tuple[int, int]] = set()  # (proposer, request id) answered "certainly not applied"
        self.commit_times: list[tuple[int, int]] = [(0, 0)]  # (micro-step, highest index known committed) as it rose
        self.live_acked = False
        self._batches: dict[int, list[Command]] = {}
        self._next_value = 0
        super().__init__(seed, cfg)
        self.wrng = random.Random(seed ^ 0x5EED)  # the clients' own choices (keys, kinds), apart from the faults'

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
            tick_ms=TICK_MS,
            election_ticks=c.election_tick, heartbeat_ticks=c.heartbeat_tick, lease_clock_drift_ms=2 * TICK_MS,
            max_size_per_msg=c.max_size_per_msg, max_inflight_msgs=c.max_inflight, max_batch_bytes=200,
            forward_proposals=c.forward_proposals, max_inflight_writes=c.pipeline,
        )

    def now_s(self) -> float:
        return self.now * TICK_MS / 1000 / self.cfg.micro_steps_per_tick

    def _start(self, n: SimNode) -> None:
        assert isinstance(n, ReplicaSimNode)
        n.incarnation += 1
        s = self.settings_for(n.id)
        raw = RawNode(core_config(s, n.applied_index, random.Random(self.rng.getrandbits(64))), n.disk)
        n.raw = raw
        n.replica = Replica(s, raw, n.fsm, _SimReplicaIO(self, n), applied=n.applied_index,
                            id_base=(n.incarnation << 48) + 1)
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
        rep.step(self.now_s(), WALL_NS_BASE + int(self.now_s() * 1e9))
        self._observe(n)
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
        if op.kind in ("put", "live"):
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
            r.bound_ms = w.choice((30, 100, 400))
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
            steps = r.bound_ms * self.cfg.micro_steps_per_tick // TICK_MS
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
        self.cfg = SimConfig(**{**saved.__dict__, "drop": 0.0, "dup": 0.0})
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
}
"""The configurations the replica simulator runs (the daemon's core settings: pre-vote and check-quorum always on)."""

__all__ = ["REPLICA_CONFIGS", "ReplicaCluster", "run_replica_schedule"]
