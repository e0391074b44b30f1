"""A deterministic, single-threaded simulator of a raftkv cluster's consensus layer.

Everything comes from one ``random.Random(seed)``: the network (delay, drop, duplicate, reorder, partitions with
asymmetric links), the disk (a Ready's write completes at a random later step; a crash loses it), crashes and
restarts, pauses, and client proposals and reads. A failing seed replays exactly.

Each node runs the real ``RawNode`` and the real ``raftkv.ready.handle_ready``; only ``ReadyIO`` is simulated.
Raft's safety properties are checked incrementally after every step (``Violation`` is raised at once):

- Election Safety: at most one leader per term, ever.
- Log Matching: every (index, term) ever appended anywhere maps to one entry with one predecessor term. By induction
  this is exactly "same index and term ⇒ identical prefixes".
- Leader Completeness: a node that becomes leader holds every entry any node knew committed at that moment.
- State Machine Safety: no two nodes apply different entries at one index; every committed index maps to one entry.
- Commit monotonicity: a node's commit index never moves back (in memory, nor on disk across restarts).
- Read linearizability: a read is served at an index ≥ the highest commit index known anywhere when it was
  issued (which covers every write acknowledged before it). Checked for ReadIndex reads issued on any node and for
  lease reads on the leader.
"""

from __future__ import annotations

import heapq
import json
import math
import random
from collections import deque
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from raftkv.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MsgType,
    ProposalDropped,
    RawNode,
    Ready,
    Snapshot,
    StateRole,
)
from raftkv.raft.core import conf_state_after, shrinks_two_voters_to_one
from raftkv.raft.describe import describe_message
from raftkv.ready import handle_ready


def bootstrap_entries(voters: tuple[int, ...]) -> list[Entry]:
    return [
        Entry(1, i + 1, EntryType.CONF_CHANGE, encode_cc(ConfChange(ConfChangeType.ADD_VOTER, v)))
        for i, v in enumerate(voters)
    ]


def encode_cc(cc: ConfChange) -> bytes:
    return b"cc:%d:%d" % (cc.type, cc.node_id)


def decode_cc(data: bytes) -> ConfChange:
    _, t, nid = data.split(b":")
    return ConfChange(ConfChangeType(int(t)), int(nid))


class Violation(AssertionError):
    """A safety or liveness property failed. The message names the property and the evidence."""


class DiskWrite:
    """The awaitable a simulated ``persist`` returns: it suspends ``handle_ready`` until the simulator completes
    (or, by crashing the node, forgets) the write."""

    __slots__ = ("rd",)

    def __init__(self, rd: Ready) -> None:
        self.rd = rd

    def __await__(self) -> Generator[DiskWrite, Any, Any]:
        return (yield self)


@dataclass
class SimConfig:
    nodes: int = 3
    election_tick: int = 10
    heartbeat_tick: int = 2
    pre_vote: bool = True
    check_quorum: bool = True
    forward_proposals: bool = True
    max_size_per_msg: int = 300
    max_inflight: int = 4
    micro_steps_per_tick: int = 4
    max_delay: int = 4
    """Messages take 1..max_delay micro-steps (random, so they reorder)."""
    drop: float = 0.02
    dup: float = 0.02
    disk_delay: float = 0.5
    """Probability that a pending disk write does not complete in a given micro-step."""
    lease_reads: bool = True
    pipeline: int = 1
    """How many Readys a node may have taken whose writes are still under way (their writes complete in order; a
    crash loses all of them). 1: each Ready is advanced before the next is taken."""
    step_while_writing: bool = True
    """Keep stepping messages into a node while its Ready's write is pending (the RawNode contract allows it;
    raftkv's driver does not). Stronger: it exposes bugs that count on state not yet durable."""
    # Per-micro-step probabilities of client actions and faults.
    p_propose: float = 0.15
    p_read: float = 0.06
    p_crash: float = 0.004
    p_restart: float = 0.02
    p_partition: float = 0.004
    p_heal: float = 0.01
    p_pause: float = 0.002
    p_resume: float = 0.02
    p_transfer: float = 0.001
    p_crash_leader: float = 0.0
    """Leader-targeted faults (Jepsen's favourite): crash the current leader / isolate it from everyone."""
    p_isolate_leader: float = 0.0
    max_down: int | None = None
    """Most nodes down (crashed) at once; None = any number."""
    power_loss: float = 0.0
    """The share of crashes that are power losses: they also undo the node's completed writes since its last synced
    one (a Ready whose ``must_sync`` was false is written without a final fsync; see raftkv.storage.lmdb_wal)."""
    universe: int | None = None
    """Node ids 1..universe exist; the first ``nodes`` are the initial voters, the others start empty and join only
    if a membership change adds them. None: no extra nodes."""
    p_conf_change: float = 0.0
    """Per micro-step: the leader proposes a random single-server change (add/remove voter or learner)."""
    p_snapshot: float = 0.0
    """Per micro-step: a random node snapshots its state machine and compacts its log."""
    snapshot_keep: int = 3
    """Entries kept behind a snapshot when compacting (0: compact everything up to the snapshot)."""


@dataclass
class Stats:
    proposals: int = 0
    dropped_proposals: int = 0
    acked: int = 0
    reads_issued: int = 0
    reads_served: int = 0
    lease_reads: int = 0
    crashes: int = 0
    power_losses: int = 0
    writes_undone: int = 0
    partitions: int = 0
    elections: int = 0
    max_term: int = 0
    max_commit: int = 0
    messages: int = 0
    conf_changes: int = 0
    snapshots_taken: int = 0
    snapshots_installed: int = 0
    pipelined_readys: int = 0
    """Readys taken while an earlier one's write was still under way (SimConfig.pipeline > 1)."""


@dataclass
class _Read:
    ctx: bytes
    node: int
    incarnation: int
    required: int
    kind: str


class SimStorage(MemoryStorage):
    """The simulated disk. Like raftkv's daemon, a snapshot requested for sending to a follower reflects the node's
    current applied state (index, membership, data), not merely the last compaction point; otherwise a node added
    after the last snapshot would be sent a snapshot of a configuration without itself, and refuse it."""

    def __init__(self, node: SimNode, conf: ConfState) -> None:
        super().__init__(conf)
        self.node = node

    def snapshot(self) -> Snapshot:
        n = self.node
        snap = super().snapshot()
        if n.applied_index > snap.metadata.index and n.applied_index <= self.last_index():
            snap = self.create_snapshot(n.applied_index, self.conf_state, snapshot_data(n, n.applied_index))
        return snap


def snapshot_data(n: SimNode, index: int) -> bytes:
    return json.dumps([[i, d.hex()] for i, d in n.applied if i <= index]).encode()


class SimNode:
    def __init__(self, nid: int, conf: ConfState) -> None:
        self.id = nid
        self.disk = SimStorage(self, conf)  # what survives a crash (log, hard state, membership, snapshot)
        self.applied: list[tuple[int, bytes]] = []  # the durable state machine: (index, data) of applied entries
        self.applied_index = 0
        self.raw: RawNode | None = None
        self.incarnation = 0
        self.pending: deque[tuple[Generator[Any, Any, Any], DiskWrite, list[int]]] = deque()
        """Readys whose writes are under way, oldest first: the handle_ready coroutine, its write, and the term
        before each of its entries as the log stood when the Ready was taken (for the Log Matching check at
        completion)."""
        self.inbox: deque[Message | tuple[str, bytes]] = deque()
        self.waiting_reads: list[tuple[int, _Read]] = []  # (read index, read)
        self.commit_seen = 0
        self.paused_ticks: int | None = None  # ticks missed while paused (None: running)
        self.unsynced: tuple[SimNode.Durable, int] | None = None
        """The durable state as it was before the first completed write that no synced write has covered yet, and
        how many such writes there are. A power loss restores it."""

    Durable = tuple[HardState, ConfState, Snapshot, list[Entry], list[tuple[int, bytes]], int]

    def durable(self) -> SimNode.Durable:
        d = self.disk
        return d.hard_state, d.conf_state, d._snapshot, list(d._ents), list(self.applied), self.applied_index

    def restore(self, state: SimNode.Durable) -> None:
        d = self.disk
        d.hard_state, d.conf_state, d._snapshot, d._ents, self.applied, self.applied_index = state

    @property
    def up(self) -> bool:
        return self.raw is not None

    @property
    def running(self) -> bool:
        return self.raw is not None and self.paused_ticks is None


class _SimIO:
    def __init__(self, cluster: Cluster, node: SimNode) -> None:
        self.cluster = cluster
        self.node = node

    def send(self, msgs: Sequence[Message]) -> None:
        for m in msgs:
            self.cluster.net_send(m)

    def persist(self, rd: Ready) -> DiskWrite:
        return DiskWrite(rd)

    def applied(self, rd: Ready, results: Any) -> None:
        # Membership changes take effect in the core once applied (the driver calls this before advance()).
        raw = self.node.raw
        assert raw is not None
        for e in rd.committed_entries:
            if e.type == EntryType.CONF_CHANGE:
                cs = raw.apply_conf_change(decode_cc(e.data), e.index)
                self.cluster.stats.conf_changes += 1
                # (Unless the core installed a newer snapshot meanwhile: the disk catches up with it next Ready.)
                newer = raw.raft.restored_snapshot_index >= e.index
                if rd.committed_entries[-1] is e and not newer and cs != self.node.disk.conf_state:
                    raise Violation(f"node {self.node.id}: membership in memory {cs} != durable "
                                    f"{self.node.disk.conf_state}")
        self.cluster.on_applied(self.node, rd)


class Cluster:
    def __init__(self, seed: int, cfg: SimConfig | None = None) -> None:
        self.seed = seed
        self.cfg = cfg or SimConfig()
        self.rng = random.Random(seed)
        self.now = 0  # micro-steps
        self.ticks = 0
        self._net: list[tuple[int, int, Message]] = []
        self._net_seq = 0
        self.blocked: set[tuple[int, int]] = set()
        self.stats = Stats()
        self.trace: deque[str] = deque(maxlen=60)
        # Global knowledge for the checks.
        self.leaders: dict[int, int] = {}  # term -> leader id
        self.entry_record: dict[tuple[int, int], tuple[bytes, int, int]] = {}  # (index, term) -> (data, type, prev)
        self.committed: dict[int, tuple[int, bytes]] = {}  # index -> (term, data)
        self.applied_global: dict[int, tuple[int, bytes]] = {}  # index -> (term, data)
        self.max_commit_known = 0
        self.proposed: dict[bytes, int] = {}  # data -> micro-step proposed
        self.acked: dict[bytes, int] = {}  # data -> index
        self._next_prop = 0
        self._next_read = 0
        self.reads: dict[bytes, _Read] = {}
        voters = tuple(range(1, self.cfg.nodes + 1))
        universe = max(self.cfg.universe or 0, self.cfg.nodes)
        self.nodes = {i: self._new_node(i) for i in range(1, universe + 1)}
        self._bootstrap(voters)
        for n in self.nodes.values():
            self._start(n)

    decode_conf = staticmethod(decode_cc)
    """How a CONF_CHANGE entry's data decodes (the driver's encoding)."""

    def _new_node(self, nid: int) -> SimNode:
        return SimNode(nid, ConfState())

    def _bootstrap(self, voters: tuple[int, ...]) -> None:
        boot = bootstrap_entries(voters)
        for i in voters:
            # Every initial member starts with the same committed log: one ADD_VOTER entry per initial voter (as
            # etcd bootstraps), so a node that joins later learns the whole membership by replaying the log.
            n = self.nodes[i]
            n.disk.append(boot)
            n.disk.set_hard_state(HardState(term=1, vote=0, commit=len(boot)))
            n.disk.set_conf_state(ConfState(voters=voters))
            n.applied_index = len(boot)
        for e in boot:
            self.applied_global[e.index] = (e.term, e.data)
            self.committed[e.index] = (e.term, e.data)
            self.entry_record[(e.index, e.term)] = (e.data, e.type, 0 if e.index == 1 else 1)

    # -- lifecycle --------------------------------------------------------------------------------------------
    def _start(self, n: SimNode) -> None:
        c = self.cfg
        n.incarnation += 1
        n.raw = RawNode(
            Config(
                id=n.id,
                election_tick=c.election_tick,
                heartbeat_tick=c.heartbeat_tick,
                applied=n.applied_index,
                max_size_per_msg=c.max_size_per_msg,
                max_inflight_msgs=c.max_inflight,
                check_quorum=c.check_quorum,
                pre_vote=c.pre_vote,
                forward_proposals=c.forward_proposals,
                decode_conf_change=decode_cc,
                rng=random.Random(self.rng.getrandbits(64)),
            ),
            n.disk,
        )
        n.commit_seen = n.raw.raft.log.committed
        n.paused_ticks = None
        self._log(f"start {n.id} (incarnation {n.incarnation}) hs={n.disk.hard_state} applied={n.applied_index}")

    def crash(self, nid: int, power: bool = False) -> None:
        """Kill -9: everything not yet durable (a pending write, the inbox, volatile state) is lost. A power loss
        (``power``) also undoes the completed writes since the node's last synced one."""
        n = self.nodes[nid]
        if not n.up:
            return
        if power:
            self.stats.power_losses += 1
            if n.unsynced is not None:
                state, count = n.unsynced
                n.restore(state)
                self.stats.writes_undone += count
                self._log(f"power loss on {nid} undoes {count} unsynced writes: applied {n.applied_index}, "
                          f"hs {n.disk.hard_state}")
            n.unsynced = None
        for coro, _, _ in n.pending:
            coro.close()
        n.pending.clear()
        n.raw = None
        n.inbox.clear()
        n.waiting_reads.clear()
        n.paused_ticks = None
        self.stats.crashes += 1
        self._log(f"crash {nid}")

    def restart(self, nid: int) -> None:
        n = self.nodes[nid]
        if not n.up:
            self._start(n)

    def pause(self, nid: int) -> None:
        """SIGSTOP: the node neither ticks nor processes; its clock catches up when it resumes (as the driver's
        monotonic-clock ticker does), but messages that arrived meanwhile wait in its inbox."""
        n = self.nodes[nid]
        if n.running:
            n.paused_ticks = 0
            self._log(f"pause {nid}")

    def resume(self, nid: int) -> None:
        n = self.nodes[nid]
        if n.raw is not None and n.paused_ticks is not None:
            missed, n.paused_ticks = n.paused_ticks, None
            self._log(f"resume {nid} after {missed} ticks")
            for _ in range(missed):
                n.raw.tick()
            self._observe(n)

    # -- network ----------------------------------------------------------------------------------------------
    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        """Cut every link between different groups (both directions)."""
        self.blocked = set()
        for gi, g in enumerate(groups):
            for hj, h in enumerate(groups):
                if gi != hj:
                    self.blocked.update((a, b) for a in g for b in h)
        self.stats.partitions += 1
        self._log(f"partition {[list(g) for g in groups]}")

    def block(self, frm: int, to: int) -> None:
        """Cut one direction of one link (asymmetric faults)."""
        self.blocked.add((frm, to))
        self._log(f"block {frm}->{to}")

    def heal(self) -> None:
        if self.blocked:
            self._log("heal")
        self.blocked = set()

    def _snap_status(self, m: Message, ok: bool) -> None:
        """The transport tells the leader whether a snapshot arrived (raftkv's transport does the same)."""
        if m.type == MsgType.SNAP:
            sender = self.nodes.get(m.frm)
            if sender is not None and sender.up:
                sender.inbox.append(("snapstatus", (m.to, ok)))  # type: ignore[arg-type]

    def net_send(self, m: Message) -> None:
        self.stats.messages += 1
        c = self.cfg
        if c.drop and self.rng.random() < c.drop:
            self._snap_status(m, False)
            return
        copies = 2 if c.dup and self.rng.random() < c.dup else 1
        for _ in range(copies):
            self._net_seq += 1
            heapq.heappush(self._net, (self.now + self.rng.randint(1, c.max_delay), self._net_seq, m))

    def _deliver_due(self) -> None:
        net = self._net
        while net and net[0][0] <= self.now:
            _, _, m = heapq.heappop(net)
            n = self.nodes.get(m.to)
            if n is None or not n.up or (m.frm, m.to) in self.blocked:
                self._snap_status(m, False)
                continue
            n.inbox.append(m)
            self._snap_status(m, True)

    # -- one node's turn --------------------------------------------------------------------------------------
    def process(self, n: SimNode) -> bool:
        """Step the inbox into the node and start handling its Ready (up to the disk write)."""
        raw = n.raw
        if raw is None or n.paused_ticks is not None:
            return False
        if n.pending and not self.cfg.step_while_writing:
            return False
        did = False
        while n.inbox:
            item = n.inbox.popleft()
            did = True
            if type(item) is tuple:  # a client operation (Message is a NamedTuple, a subclass)
                self._client_op(n, item)
            else:
                raw.step(item)
        self._observe(n)
        if len(n.pending) < self.cfg.pipeline and raw.has_ready():
            rd = raw.ready()
            self._check_ready(n, rd)
            coro = handle_ready(raw, rd, _SimIO(self, n)).__await__()
            w = coro.send(None)
            log = raw.raft.log
            if n.pending:
                self.stats.pipelined_readys += 1
            n.pending.append((coro, w, [log.zero_term_on_out_of_bounds(e.index - 1) for e in rd.entries]))
            did = True
        return did

    def complete_write(self, n: SimNode) -> None:
        """The disk finishes the oldest pending write atomically: log, hard state, and the applied entries."""
        coro, w, prev_terms = n.pending.popleft()
        self._durable_write(n, w.rd, prev_terms)
        try:
            coro.send(None)
        except StopIteration:
            pass
        else:
            raise AssertionError("handle_ready suspended twice")

    def _durable_write(self, n: SimNode, rd: Ready, prev_terms: list[int]) -> None:
        """Carry out ``rd``'s write on the node's disk, checking what it makes durable (commit and term never move
        back, Log Matching on the entries, State Machine Safety on the entries applied)."""
        disk = n.disk
        if not rd.must_sync:
            # Written without a final fsync: durable once a later synced write completes; a power loss before that
            # undoes it, whatever it held.
            n.unsynced = (n.durable(), 1) if n.unsynced is None else (n.unsynced[0], n.unsynced[1] + 1)
        else:
            n.unsynced = None
        if rd.snapshot is not None:
            self._install_snapshot(n, rd.snapshot)
        if rd.hard_state is not None:
            if rd.hard_state.commit < disk.hard_state.commit:
                raise Violation(
                    f"node {n.id}: durable commit moved back {disk.hard_state.commit} -> {rd.hard_state.commit}"
                )
            if rd.hard_state.term < disk.hard_state.term:
                raise Violation(f"node {n.id}: durable term moved back {disk.hard_state.term} -> {rd.hard_state.term}")
            disk.set_hard_state(rd.hard_state)
        if rd.entries:
            # Log Matching is checked on entries as they become durable (an entry that was never written nor sent,
            # lost in a crash, is invisible and may be replaced). Each (index, term) must map to one entry with one
            # predecessor term: by induction, identical prefixes.
            for e, prev_term in zip(rd.entries, prev_terms, strict=True):
                val = (e.data, e.type, prev_term)
                rec = self.entry_record.setdefault((e.index, e.term), val)
                if rec != val:
                    raise Violation(
                        f"Log Matching: entry {e.index}/{e.term} on node {n.id} is {val} but elsewhere {rec}"
                    )
            disk.append(rd.entries)
        for e in rd.committed_entries:
            if e.index != n.applied_index + 1:
                raise Violation(f"node {n.id}: applied {e.index} after {n.applied_index} (gap or repeat)")
            prev = self.applied_global.setdefault(e.index, (e.term, e.data))
            if prev != (e.term, e.data):
                raise Violation(
                    f"State Machine Safety: index {e.index} applied as {prev!r} and as {(e.term, e.data)!r} "
                    f"(node {n.id})"
                )
            if e.type == EntryType.CONF_CHANGE:
                disk.set_conf_state(conf_state_after(disk.conf_state, self.decode_conf(e.data)))
            elif e.data:
                n.applied.append((e.index, e.data))
            n.applied_index = e.index

    def _install_snapshot(self, n: SimNode, snap: Snapshot) -> None:
        """Install a snapshot sent by the leader: it replaces the state machine and the log."""
        md = snap.metadata
        state = [(i, bytes.fromhex(d)) for i, d in json.loads(snap.data)]
        for i, data in state:
            seen = self.applied_global.get(i)
            if seen is not None and seen[1] != data:
                raise Violation(
                    f"State Machine Safety: snapshot at {md.index} holds {data!r} at {i}, applied as {seen}"
                )
        n.disk.apply_snapshot(snap)
        n.applied = state
        n.applied_index = md.index
        self.stats.snapshots_installed += 1
        self._log(f"node {n.id} installed snapshot {md.index}/{md.term} {md.conf_state}")

    def take_snapshot(self, nid: int) -> None:
        """Snapshot the node's durable state machine at its applied index and compact its log."""
        n = self.nodes[nid]
        if not n.running or n.pending:
            return
        disk = n.disk
        idx = n.applied_index
        if idx <= MemoryStorage.snapshot(disk).metadata.index or idx > disk.last_index():
            return
        disk.create_snapshot(idx, disk.conf_state, snapshot_data(n, idx))
        n.unsynced = None  # raftkv compacts in a synced write, which makes every earlier one durable
        keep = self.cfg.snapshot_keep
        if idx - keep >= disk.first_index():
            disk.compact(idx - keep)
        self.stats.snapshots_taken += 1
        self._log(f"node {nid} snapshot at {idx}, log now {disk.first_index()}..{disk.last_index()}")

    def _power_loss(self) -> bool:
        # No draw when power losses are off: the other configurations keep their random streams (and seeds).
        return self.cfg.power_loss > 0 and self.rng.random() < self.cfg.power_loss

    def propose_conf_change(self, nid: int, cc: ConfChange) -> None:
        n = self.nodes[nid]
        if n.running:
            n.inbox.append(("conf", encode_cc(cc)))

    def on_applied(self, n: SimNode, rd: Ready) -> None:
        for e in rd.committed_entries:
            if e.data in self.proposed and e.data not in self.acked:
                self.acked[e.data] = e.index
                self.stats.acked += 1
        for rs in rd.read_states:
            r = self.reads.get(rs.ctx)
            if r is not None and r.node == n.id and r.incarnation == n.incarnation:
                n.waiting_reads.append((rs.index, r))
        self._serve_reads(n)

    def _serve_reads(self, n: SimNode) -> None:
        if not n.waiting_reads:
            return
        still = []
        for idx, r in n.waiting_reads:
            if n.applied_index >= idx:
                self._check_read(n, idx, r)
            else:
                still.append((idx, r))
        n.waiting_reads = still

    def _check_read(self, n: SimNode, idx: int, r: _Read) -> None:
        # The state served reflects every entry up to n.applied_index >= idx. Linearizable iff that covers all
        # entries known committed anywhere when the read was issued.
        self.reads.pop(r.ctx, None)
        self.stats.reads_served += 1
        if idx < r.required:
            raise Violation(
                f"Linearizability: {r.kind} read {r.ctx!r} on node {n.id} got read index {idx}, but index "
                f"{r.required} was already committed when it was issued"
            )

    # -- client operations ------------------------------------------------------------------------------------
    def propose(self, nid: int) -> None:
        n = self.nodes[nid]
        if not n.running:
            return
        self._next_prop += 1
        data = b"p%d" % self._next_prop
        n.inbox.append(("prop", data))

    def read(self, nid: int, kind: str = "index") -> None:
        n = self.nodes[nid]
        if not n.running:
            return
        self._next_read += 1
        ctx = b"r%d" % self._next_read
        n.inbox.append((kind, ctx))

    def _client_op(self, n: SimNode, op: tuple[str, bytes]) -> None:
        assert n.raw is not None
        kind, data = op
        if kind == "snapstatus":
            to, ok = data  # type: ignore[misc]
            n.raw.report_snapshot(to, ok)
            return
        if kind == "conf":
            if shrinks_two_voters_to_one(n.raw.raft.trk.conf_state(), decode_cc(data)):
                # raftkv refuses it (see shrinks_two_voters_to_one), judged now, as the daemon's node does: the
                # membership _random_conf_change saw may have changed since.
                return
            try:
                n.raw.propose_conf_change(data)
                self._log(f"node {n.id} proposes {decode_cc(data)}")
            except ProposalDropped:
                pass
            return
        if kind == "prop":
            self.stats.proposals += 1
            try:
                n.raw.propose(data)
                self.proposed[data] = self.now
            except ProposalDropped:
                self.stats.dropped_proposals += 1
            return
        self.stats.reads_issued += 1
        r = _Read(data, n.id, n.incarnation, self.max_commit_known, kind)
        if kind == "lease":
            idx = n.raw.lease_read_index(self.cfg.election_tick)
            if idx is None:
                return
            self.stats.lease_reads += 1
            self.reads[data] = r
            n.waiting_reads.append((idx, r))
            self._serve_reads(n)
            return
        try:
            n.raw.read_index(data)
        except ProposalDropped:
            return
        self.reads[data] = r

    # -- checks -----------------------------------------------------------------------------------------------
    def _observe(self, n: SimNode) -> None:
        raw = n.raw
        assert raw is not None
        r = raw.raft
        if r.term > self.stats.max_term:
            self.stats.max_term = r.term
        if r.state == StateRole.LEADER:
            prev = self.leaders.get(r.term)
            if prev is None:
                self.leaders[r.term] = n.id
                self.stats.elections += 1
                self._log(f"leader {n.id} term {r.term}")
                self._check_leader_completeness(n)
            elif prev != n.id:
                raise Violation(f"Election Safety: nodes {prev} and {n.id} are both leaders of term {r.term}")
        c = r.log.committed
        if c < n.commit_seen:
            raise Violation(f"node {n.id}: commit index moved back {n.commit_seen} -> {c}")
        if c > n.commit_seen:
            for i in range(max(n.commit_seen + 1, r.log.first_index()), c + 1):
                e = r.log.slice(i, i + 1)[0]
                rec = self.committed.setdefault(i, (e.term, e.data))
                if rec != (e.term, e.data):
                    raise Violation(
                        f"State Machine Safety: index {i} committed as {rec} on one node and {(e.term, e.data)} "
                        f"on node {n.id}"
                    )
            n.commit_seen = c
            if c > self.max_commit_known:
                self.max_commit_known = c
                self.stats.max_commit = c

    def _check_leader_completeness(self, n: SimNode) -> None:
        assert n.raw is not None
        log = n.raw.raft.log
        first = log.first_index()
        for i, (term, _data) in self.committed.items():
            if i < first:
                continue
            if i > log.last_index() or log.term(i) != term:
                raise Violation(
                    f"Leader Completeness: node {n.id} became leader of term {n.raw.raft.term} without committed "
                    f"entry {i} (term {term})"
                )

    def _check_ready(self, n: SimNode, rd: Ready) -> None:
        assert n.raw is not None
        for m in rd.messages:  # sent before this Ready's write: must not depend on it
            if m.term > n.disk.hard_state.term:
                raise Violation(f"node {n.id} sends {describe_message(m)} before its term is durable")

    def check_logs_pairwise(self) -> None:
        """The full Log Matching check, pairwise over every up node's log (slow: used at the end of a run)."""
        logs = {}
        for n in self.nodes.values():
            if n.raw is not None:
                log = n.raw.raft.log
                logs[n.id] = {e.index: e for e in log.slice(log.first_index(), log.last_index() + 1)}
        ids = sorted(logs)
        for a in ids:
            for b in ids:
                if a >= b:
                    continue
                common = sorted(set(logs[a]) & set(logs[b]), reverse=True)
                for i in common:
                    if logs[a][i].term == logs[b][i].term:
                        for j in common:
                            if j <= i and logs[a][j] != logs[b][j]:
                                raise Violation(f"Log Matching: nodes {a} and {b} agree at {i} but differ at {j}")
                        break

    # -- driving ----------------------------------------------------------------------------------------------
    def tick(self) -> None:
        self.ticks += 1
        for n in self.nodes.values():
            if n.raw is None:
                continue
            if n.paused_ticks is not None:
                n.paused_ticks += 1
            else:
                n.raw.tick()
                self._observe(n)

    def micro_step(self) -> None:
        self.now += 1
        self._deliver_due()
        order = list(self.nodes.values())
        self.rng.shuffle(order)
        for n in order:
            if n.pending and n.paused_ticks is None and self.rng.random() >= self.cfg.disk_delay:
                self.complete_write(n)
            self.process(n)

    def settle(self, micro_steps: int) -> None:
        """Run the network and disks without ticking (no timeouts fire)."""
        for _ in range(micro_steps):
            self.micro_step()

    def run_ticks(self, ticks: int, faults: bool = True) -> None:
        for _ in range(ticks):
            for _ in range(self.cfg.micro_steps_per_tick):
                if faults:
                    self._random_actions()
                self.micro_step()
            self.tick()

    def _random_actions(self) -> None:
        c, rng = self.cfg, self.rng
        ids = list(self.nodes)
        up = [i for i in ids if self.nodes[i].up]
        down = [i for i in ids if not self.nodes[i].up]
        if rng.random() < c.p_propose and up:
            self.propose(rng.choice(up))
        if rng.random() < c.p_read and up:
            leader = self.current_leader()
            if c.lease_reads and leader is not None and rng.random() < 0.3:
                self.read(leader, "lease")
            else:
                self.read(rng.choice(up))
        if rng.random() < c.p_crash and up and (c.max_down is None or len(down) < c.max_down):
            self.crash(rng.choice(up), self._power_loss())
        if rng.random() < c.p_crash_leader and (c.max_down is None or len(down) < c.max_down):
            leader = self.current_leader()
            if leader is not None:
                self.crash(leader, self._power_loss())
        if rng.random() < c.p_isolate_leader:
            leader = self.current_leader()
            if leader is not None:
                self.partition([[leader], [i for i in ids if i != leader]])
        if rng.random() < c.p_restart and down:
            self.restart(rng.choice(down))
        if rng.random() < c.p_partition:
            self._random_partition()
        if rng.random() < c.p_heal:
            self.heal()
        if rng.random() < c.p_pause and up:
            self.pause(rng.choice(up))
        if rng.random() < c.p_resume:
            paused = [i for i in up if self.nodes[i].paused_ticks is not None]
            if paused:
                self.resume(rng.choice(paused))
        if rng.random() < c.p_conf_change:
            leader = self.current_leader()
            if leader is not None:
                self.propose_conf_change(leader, self._random_conf_change())
        if rng.random() < c.p_snapshot and up:
            self.take_snapshot(rng.choice(up))
        if rng.random() < c.p_transfer:
            leader = self.current_leader()
            if leader is not None:
                self.transfer(leader, rng.choice(ids))

    def transfer(self, leader: int, to: int) -> None:
        n = self.nodes[leader]
        if n.running and not n.pending and n.raw is not None:
            n.raw.transfer_leader(to)

    def _random_conf_change(self) -> ConfChange:
        rng = self.rng
        leader = self.current_leader()
        cs = self.nodes[leader].raw.raft.trk.conf_state() if leader is not None else ConfState()  # type: ignore[union-attr]
        nid = rng.choice(list(self.nodes))
        if nid in cs.voters and len(cs.voters) <= 2:
            # Shrinking two voters to one is not safe against a crash of the departing leader mid-change (the
            # remaining voter may then need its vote forever); raftkv refuses it, as etcd documents it.
            t = ConfChangeType.ADD_VOTER
            nid = rng.choice([i for i in self.nodes if i not in cs.voters] or [nid])
        elif nid in cs.voters:
            t = rng.choice([ConfChangeType.REMOVE_NODE, ConfChangeType.ADD_LEARNER])
        elif nid in cs.learners:
            t = rng.choice([ConfChangeType.ADD_VOTER, ConfChangeType.REMOVE_NODE])
        else:
            t = rng.choice([ConfChangeType.ADD_VOTER, ConfChangeType.ADD_LEARNER])
        return ConfChange(t, nid)

    def _random_partition(self) -> None:
        rng = self.rng
        ids = list(self.nodes)
        kind = rng.randrange(4)
        if kind == 0:  # majority / minority (or any split)
            rng.shuffle(ids)
            cut = rng.randint(1, len(ids) - 1)
            self.partition([ids[:cut], ids[cut:]])
        elif kind == 1:  # isolate the leader (or a random node)
            victim = self.current_leader() or rng.choice(ids)
            self.partition([[victim], [i for i in ids if i != victim]])
        elif kind == 2:  # bridge: one node sees both halves
            rng.shuffle(ids)
            bridge, rest = ids[0], ids[1:]
            cut = max(1, len(rest) // 2)
            a, b = rest[:cut], rest[cut:]
            self.blocked = {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}
            self.stats.partitions += 1
            self._log(f"bridge {bridge} between {a} and {b}")
        else:  # asymmetric one-way loss
            a, b = rng.sample(ids, 2)
            self.block(a, b)

    def current_leader(self) -> int | None:
        """The up node that is leader of the highest term (None if none)."""
        best = None
        for n in self.nodes.values():
            if n.raw is None or n.raw.raft.state != StateRole.LEADER:
                continue
            if best is None or n.raw.raft.term > self.nodes[best].raw.raft.term:  # type: ignore[union-attr]
                best = n.id
        return best

    # -- liveness ---------------------------------------------------------------------------------------------
    def heal_all(self) -> None:
        self.heal()
        for n in self.nodes.values():
            if not n.up:
                self.restart(n.id)
            elif n.paused_ticks is not None:
                self.resume(n.id)

    def catch_up_ticks(self) -> int:
        """Ticks a correct leader may need after healing, beyond electing itself, to replicate the entries ahead of
        a fresh proposal. Entries commit in log order (§5.3), those of earlier terms only once an entry of the
        leader's own term after them does (§5.4.2), so the proposal commits only once every entry before it is on
        a majority: the time grows with that backlog; no constant bounds it. The schedule's client load builds the
        backlog while nothing can commit (the simulated client proposes regardless; raftkv's driver holds
        proposals while its log has an uncommitted entry, Settings.max_inflight_proposals). The bound:

        - the backlog is at most the longest log beyond the highest commit index known (no leader's is longer);
        - each round trip moves at least ``max_inflight`` entries (an append carries at least one; exactly one
          with the hunter configurations' ``max_size_per_msg=1``);
        - a round trip takes at most ``2 * max_delay`` micro-steps on the network, plus the follower's write, a
          geometric wait of ``1 / (1 - disk_delay)`` micro-steps on average: summed over many rounds it stays near
          its mean, and the network's worst case (``max_delay`` each way, against ``(1 + max_delay) / 2`` on
          average) leaves more than its variance as slack."""
        c = self.cfg
        longest = max(n.raw.raft.log.last_index() for n in self.nodes.values() if n.raw is not None)
        rounds = -(-max(0, longest - self.max_commit_known) // c.max_inflight)
        round_trip_micro_steps = 2 * c.max_delay + 1 / (1 - c.disk_delay)
        return math.ceil(rounds * round_trip_micro_steps / c.micro_steps_per_tick)

    def check_liveness(self, max_ticks: int) -> int:
        """With the network healed and every node up and fault-free, a leader is elected and a fresh proposal is
        applied by it within ``max_ticks`` (elections, a lost attempt) plus ``catch_up_ticks`` (the backlog ahead
        of it). Returns the ticks it took."""
        self.heal_all()
        catch_up = self.catch_up_ticks()
        saved = self.cfg
        self.cfg = SimConfig(**{**saved.__dict__, "drop": 0.0, "dup": 0.0})
        try:
            attempts: list[bytes] = []
            proposed_at: int | None = None
            for t in range(max_ticks + catch_up):
                if any(a in self.acked for a in attempts):
                    return t
                if proposed_at is not None and t - proposed_at > 2 * self.cfg.election_tick:
                    proposed_at = None  # dropped or lost in a leader change: retry, as a client does on timeout
                if proposed_at is None:
                    leader = self.current_leader()
                    if leader is not None:
                        n = self.nodes[leader]
                        if n.raw is not None and n.raw.raft.committed_entry_in_current_term():
                            self._next_prop += 1
                            attempts.append(b"live%d" % self._next_prop)
                            n.inbox.append(("prop", attempts[-1]))
                            proposed_at = t
                self.run_ticks(1, faults=False)
            raise Violation(
                f"Liveness: no proposal committed within {max_ticks} + {catch_up} (backlog) ticks after healing "
                f"(leader={self.current_leader()}, terms={[n.raw.raft.term for n in self.nodes.values() if n.raw]})"
            )
        finally:
            self.cfg = saved

    # -- debugging --------------------------------------------------------------------------------------------
    def _log(self, s: str) -> None:
        self.trace.append(f"[t={self.ticks} s={self.now}] {s}")

    def describe(self) -> str:
        lines = [f"seed={self.seed} ticks={self.ticks} {self.stats}"]
        for n in self.nodes.values():
            if n.raw is None:
                lines.append(f"  node {n.id}: down, disk hs={n.disk.hard_state} last={n.disk.last_index()}")
            else:
                s = n.raw.status()
                lines.append(
                    f"  node {n.id}: {s.role} term={s.term} lead={s.lead} commit={s.commit} applied={s.applied} "
                    f"last={s.last_index}" + (" paused" if n.paused_ticks is not None else "")
                )
        lines.append("recent events:")
        lines.extend("  " + t for t in self.trace)
        return "\n".join(lines)


def run_schedule(seed: int, cfg: SimConfig | None = None, ticks: int = 150, liveness_ticks: int = 300) -> Cluster:
    """One generated fault schedule: random faults and client load for ``ticks``, then heal and check liveness.
    Raises Violation (with the cluster's description appended) on any failed property."""
    c = Cluster(seed, cfg)
    try:
        c.run_ticks(ticks)
        c.check_logs_pairwise()
        c.check_liveness(liveness_ticks)
        c.check_logs_pairwise()
    except Violation as e:
        raise Violation(f"{e}\n{c.describe()}") from None
    return c


__all__ = ["Cluster", "SimConfig", "Violation", "run_schedule"]
