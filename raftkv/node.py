"""The asyncio driver: one task owns the RawNode and runs the Ready loop; everything else talks to it through
queues and futures.

Each turn of the loop (``_run``):
  1. tick the core as many times as the monotonic clock says are due (a process paused by SIGSTOP catches up on
     resume, so a stale leader's lease has expired by the time it serves anything);
  2. step every peer message that arrived;
  3. propose every client command that arrived since the last turn as one batch (one log entry per
     ``max_batch_bytes``): one append, one broadcast, one fsync for all of them;
  4. ask for one read index for every linearizable read that arrived (they share one heartbeat round);
  5. handle the Ready with ``raftkv.ready.handle_ready`` (the same function the simulator runs): send, persist and
     apply in one LMDB transaction on the writer thread, send the persisted messages, resolve waiters.
While the writer thread syncs, the event loop keeps accepting requests and peer messages: they form the next
batch (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .errors import NotLeader, RaftKVError, ReadOnly, StorageError, Timeout, Unavailable
from .kv import Applied, Command, KVStateMachine, encode_batch
from .raft import Config, ConfState, Message, ProposalDropped, RawNode, Ready, StateRole
from .ready import handle_ready
from .settings import Settings
from .storage import DurableStorageError, LmdbLogStore, StorageFullError
from .transport import Transport

log = logging.getLogger("raftkv.node")


@dataclass
class NodeStats:
    readies: int = 0
    writes: int = 0
    syncs: int = 0
    entries_persisted: int = 0
    entries_applied: int = 0
    commands_proposed: int = 0
    batches_proposed: int = 0
    read_rounds: int = 0
    reads_served: int = 0
    persist_us: int = 0
    """Total time handle_ready waited for the writer thread (write + sync + apply), in µs."""
    write_us: int = 0
    """Total time spent inside store.write on the writer thread, in µs."""
    turn_us: int = 0
    """Total time the loop spent stepping (ticks, messages, proposals, reads) and taking Readies, in µs."""


class _Waiter:
    """A proposed command waiting for its entry to be applied."""

    __slots__ = ("future", "index", "term")

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future
        self.index = 0
        self.term = 0


class Node:
    def __init__(self, settings: Settings, store: LmdbLogStore, fsm: KVStateMachine, transport: Transport) -> None:
        self.settings = settings
        self.id = settings.id
        self.store = store
        self.fsm = fsm
        self.transport = transport
        self.stats = NodeStats()
        self.client_addrs = {m.id: m.client_addr for m in settings.members}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._inbox: deque[Message] = deque()
        self._unreachable: set[int] = set()
        self._proposals: list[tuple[Command, _Waiter]] = []
        self._waiters: dict[int, _Waiter] = {}
        self._next_request_id = 1
        self._inflight_entries: dict[int, tuple[int, list[int]]] = {}  # index -> (term, request ids)
        self._pending_reads: list[asyncio.Future[int]] = []
        self._read_rounds: dict[bytes, list[asyncio.Future[int]]] = {}
        self._next_read_ctx = 1
        self._applied_waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # heap of (index, seq, future)
        self._applied_seq = 0
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"raftkv-writer-{self.id}")
        self._stopping = False
        self.read_only_reason = ""
        self.applied = store.applied_index()
        self._tick_s = settings.tick_ms / 1000.0
        self._ticks_done = 0
        self._t0 = 0.0

        _, cs = store.initial_state()
        if not cs.voters:
            # First start: the initial membership becomes durable before the core reads it.
            cs = ConfState(voters=tuple(sorted(m.id for m in settings.members if not m.learner)),
                           learners=tuple(sorted(m.id for m in settings.members if m.learner)))
            store.set_conf_state(cs)
        self.raw = RawNode(
            Config(
                id=self.id,
                election_tick=settings.election_ticks,
                heartbeat_tick=settings.heartbeat_ticks,
                applied=self.applied,
                max_size_per_msg=settings.max_size_per_msg,
                max_inflight_msgs=settings.max_inflight_msgs,
                check_quorum=True,
                pre_vote=True,
                forward_proposals=settings.forward_proposals,
                rng=random.Random(),
            ),
            store,
        )
        transport.set_peers({m.id: m.peer_addr for m in settings.members if m.id != self.id})

    # -- inputs from other tasks (all on the event loop thread) -----------------------------------------------
    def on_messages(self, msgs: list[Message]) -> None:
        self._inbox.extend(msgs)
        self._wake.set()

    def on_unreachable(self, peer: int) -> None:
        self._unreachable.add(peer)
        self._wake.set()

    @property
    def role(self) -> StateRole:
        return self.raw.raft.state

    @property
    def leader_id(self) -> int:
        return self.raw.raft.lead

    @property
    def term(self) -> int:
        return self.raw.raft.term

    def leader_addr(self) -> str:
        return self.client_addrs.get(self.leader_id, "")

    def not_leader(self) -> NotLeader:
        return NotLeader(self.leader_id, self.leader_addr())

    def _check_writable(self) -> None:
        if self._stopping:
            raise Unavailable(f"node {self.id} is shutting down")
        if self.read_only_reason:
            raise ReadOnly(f"node {self.id} refuses writes: {self.read_only_reason}")

    def new_request_id(self) -> int:
        rid = self._next_request_id
        self._next_request_id += 1
        return rid

    async def propose(self, make: Callable[[int], Command]) -> Any:
        """Propose one command (built by ``make(request_id)``) and wait until it is applied here; returns its
        result. Raises NotLeader on a follower (unless forwarding is on), Unavailable if the proposal was lost
        to a leader change (it was then certainly not applied)."""
        self._check_writable()
        if self.role != StateRole.LEADER and not self.settings.forward_proposals:
            raise self.not_leader()
        loop = asyncio.get_running_loop()
        w = _Waiter(loop.create_future())
        rid = self.new_request_id()
        self._waiters[rid] = w
        self._proposals.append((make(rid), w))
        self._wake.set()
        try:
            return await w.future
        finally:
            self._waiters.pop(rid, None)

    async def read_index(self) -> int:
        """A linearizable read point (thesis §6.4): resolves once a majority confirmed our leader's leadership after
        this call, to an index that is applied here by the time this returns."""
        if self._stopping:
            raise Unavailable(f"node {self.id} is shutting down")
        if self.read_only_reason:
            raise Unavailable(f"node {self.id} no longer takes part in the cluster ({self.read_only_reason}); "
                              f"ask another node, or read with --consistency stale")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending_reads.append(fut)
        self._wake.set()
        index = await fut
        await self.wait_applied(index)
        return index

    def lease_read_index(self) -> int | None:
        return self.raw.lease_read_index(self.settings.lease_ticks)

    async def wait_applied(self, index: int) -> None:
        if self.applied >= index:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._applied_seq += 1
        heapq.heappush(self._applied_waiters, (index, self._applied_seq, fut))
        await fut

    def stats_snapshot(self) -> dict[str, int]:
        """Counters for Status / benchmarks, including the store's commits and fsyncs."""
        out = {k: int(v) for k, v in vars(self.stats).items()}
        ws = self.store.stats
        out.update(store_commits=ws.commits, store_syncs=ws.syncs, store_entries_written=ws.entries_written,
                   store_bytes_written=ws.bytes_written, applied=self.applied, term=self.term)
        return out

    def fsm_get(self, key: bytes) -> tuple[int, Any]:
        """(applied index, KeyValue | None) read in one LMDB read transaction: the index is exactly the state read."""
        store = self.store
        with store.read_txn() as txn:
            return store.applied_index_in(txn), self.fsm.get(key, txn=txn)

    def fsm_range(self, prefix: bytes, start_after: bytes, limit: int, keys_only: bool) -> tuple[int, list[Any], bool]:
        store = self.store
        with store.read_txn() as txn:
            kvs, more = self.fsm.range(prefix, start_after, limit, keys_only, txn=txn)
            return store.applied_index_in(txn), kvs, more

    def leader_contact_ms(self) -> int:
        ticks = self.raw.ticks_since_leader_contact()
        if ticks is None:
            return int((time.monotonic() - self._t0) * 1000) if self._t0 else 0
        return ticks * self.settings.tick_ms

    # -- the loop ---------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Drive the node until ``stop()``. The only task that touches ``self.raw``."""
        self._loop = asyncio.get_running_loop()
        self._t0 = time.monotonic()
        io = _DriverIO(self, self._loop)
        ticker = asyncio.create_task(self._ticker(), name=f"raftkv-ticker-{self.id}")
        try:
            while not self._stopping:
                await self._wake.wait()
                self._wake.clear()
                self._turn()
                raw = self.raw
                while raw.has_ready() and not self._stopping:
                    rd = raw.ready()
                    self.stats.readies += 1
                    try:
                        await handle_ready(raw, rd, io)
                    except StorageFullError as e:
                        # Nothing of this Ready was written; the core's view is now ahead of the disk, so the node
                        # stops taking part in Raft (no votes, no acknowledgements) but keeps serving what it has.
                        self._enter_read_only(f"its disk is full ({e}); free space, then restart the node")
                        return
                    except DurableStorageError as e:
                        log.critical("node %d: cannot persist a Ready: %s", self.id, e, exc_info=True)
                        self._enter_read_only(f"its storage failed ({e}); check the disk, then restart the node")
                        return
                    self._turn()
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            self._fail_all(Unavailable(f"node {self.id} stopped"))

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            self._wake.set()

    def _turn(self) -> None:
        t0 = time.perf_counter_ns()
        try:
            self._step_inputs()
        finally:
            self.stats.turn_us += (time.perf_counter_ns() - t0) // 1000

    def _step_inputs(self) -> None:
        raw = self.raw
        # 1. Ticks due by the monotonic clock.
        due = int((time.monotonic() - self._t0) / self._tick_s) - self._ticks_done
        if due > 0:
            self._ticks_done += due
            for _ in range(due):
                raw.tick()
        # 2. Peer messages.
        inbox = self._inbox
        while inbox:
            raw.step(inbox.popleft())
        if self._unreachable:
            for peer in self._unreachable:
                raw.report_unreachable(peer)
            self._unreachable.clear()
        # 3. Proposals.
        if self._proposals:
            self._propose_batch()
        # 4. Linearizable reads share one read-index request (and so one heartbeat round).
        if self._pending_reads:
            futs, self._pending_reads = self._pending_reads, []
            ctx = self._next_read_ctx.to_bytes(8, "big")
            self._next_read_ctx += 1
            try:
                raw.read_index(ctx)
            except ProposalDropped as e:
                err = NotLeader(e.leader, self.client_addrs.get(e.leader, "")) if e.leader else Unavailable(
                    "no leader is known yet; retry shortly"
                )
                for f in futs:
                    if not f.done():
                        f.set_exception(err)
            else:
                self._read_rounds[ctx] = futs
                self.stats.read_rounds += 1

    def _propose_batch(self) -> None:
        props, self._proposals = self._proposals, []
        raw = self.raw
        now_ns = time.time_ns()
        limit = self.settings.max_batch_bytes
        groups: list[list[tuple[Command, _Waiter]]] = [[]]
        size = 0
        for p in props:
            c = p[0]
            sz = len(getattr(c, "key", b"")) + len(getattr(c, "value", b"") or b"") + 32
            if groups[-1] and size + sz > limit:
                groups.append([])
                size = 0
            groups[-1].append(p)
            size += sz
        datas = [encode_batch(self.id, now_ns, [c for c, _ in g]) for g in groups]
        try:
            raw.propose_many(datas)
        except ProposalDropped as e:
            err: RaftKVError = (
                NotLeader(e.leader, self.client_addrs.get(e.leader, ""))
                if e.reason == ProposalDropped.NOT_LEADER
                else Unavailable(f"proposal refused: {e.reason}; retry shortly")
            )
            for _, w in props:
                if not w.future.done():
                    w.future.set_exception(err)
            return
        self.stats.batches_proposed += len(datas)
        self.stats.commands_proposed += len(props)
        r = raw.raft
        if r.state == StateRole.LEADER:
            # Remember where each batch landed: if a different entry is applied there, the batch was lost.
            last = r.log.last_index()
            first = last - len(groups) + 1
            for i, g in enumerate(groups):
                self._inflight_entries[first + i] = (r.term, [_request_id(c) for c, _ in g])

    # -- results ----------------------------------------------------------------------------------------------
    def _on_applied(self, rd: Ready, results: Sequence[Applied] | None) -> None:
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.lead, rd.soft_state.role)
        if rd.committed_entries:
            self.applied = rd.committed_entries[-1].index
            self.stats.entries_applied += len(rd.committed_entries)
            inflight = self._inflight_entries
            if inflight:
                for e in rd.committed_entries:
                    mine = inflight.pop(e.index, None)
                    if mine is not None and mine[0] != e.term:
                        self._fail_requests(mine[1], Unavailable("the proposal was lost in a leader change and was "
                                                                 "not applied; retry"))
        if results:
            self._deliver_results(results)
        for rs in rd.read_states:
            futs = self._read_rounds.pop(rs.ctx, None)
            if futs:
                self.stats.reads_served += len(futs)
                for f in futs:
                    if not f.done():
                        f.set_result(rs.index)
        aw = self._applied_waiters
        while aw and aw[0][0] <= self.applied:
            fut = heapq.heappop(aw)[2]
            if not fut.done():
                fut.set_result(None)

    def _deliver_results(self, results: Sequence[Applied]) -> None:
        """Resolve the waiters of the commands this node proposed (idempotent: a resolved waiter is gone)."""
        me = self.id
        waiters = self._waiters
        for a in results:
            if a.proposer == me:
                w = waiters.pop(a.request_id, None)
                if w is not None and not w.future.done():
                    w.future.set_result(a.result)

    def _on_soft_state(self, lead: int, role: StateRole) -> None:
        log.info("node %d: %s, leader %s, term %d", self.id, role, lead or "unknown", self.term)
        if self._read_rounds and role != StateRole.LEADER:
            # A read round may be dropped by a leader change: fail it fast so the caller retries elsewhere.
            err = NotLeader(lead, self.client_addrs.get(lead, "")) if lead else Unavailable("leader changed; retry")
            for futs in self._read_rounds.values():
                for f in futs:
                    if not f.done():
                        f.set_exception(err)
            self._read_rounds.clear()

    def _fail_requests(self, request_ids: list[int], err: RaftKVError) -> None:
        for rid in request_ids:
            w = self._waiters.pop(rid, None)
            if w is not None and not w.future.done():
                w.future.set_exception(err)

    def _fail_all(self, err: RaftKVError) -> None:
        for _, w in self._proposals:
            if not w.future.done():
                w.future.set_exception(err)
        self._proposals.clear()
        for w in self._waiters.values():
            if not w.future.done():
                w.future.set_exception(Timeout(f"{err.message}: the write's outcome is unknown", outcome_unknown=True))
        self._waiters.clear()
        for f in self._pending_reads:
            if not f.done():
                f.set_exception(err)
        self._pending_reads.clear()
        for futs in self._read_rounds.values():
            for f in futs:
                if not f.done():
                    f.set_exception(err)
        self._read_rounds.clear()
        for _, _, fut in self._applied_waiters:
            if not fut.done():
                fut.set_exception(err)
        self._applied_waiters.clear()

    def _enter_read_only(self, reason: str) -> None:
        log.critical("node %d refuses writes from now on: %s", self.id, reason)
        self.read_only_reason = reason
        self._fail_all(ReadOnly(f"node {self.id} refuses writes: {reason}"))

    # -- lifecycle --------------------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def close(self) -> None:
        self._writer.shutdown(wait=True)


def _request_id(c: Command) -> int:
    return c.request_id


class _DriverIO:
    """The daemon's ReadyIO: the transport, the LMDB writer thread, and the node's waiters."""

    def __init__(self, node: Node, loop: asyncio.AbstractEventLoop) -> None:
        self.node = node
        self.loop = loop

    def send(self, msgs: Sequence[Message]) -> None:
        self.node.transport.send(msgs)

    async def persist(self, rd: Ready) -> Any:
        if not (rd.entries or rd.hard_state is not None or rd.snapshot is not None or rd.committed_entries):
            return None
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter_ns()
        try:
            return await loop.run_in_executor(self.node._writer, self._write, rd)
        finally:
            self.node.stats.persist_us += (time.perf_counter_ns() - t0) // 1000

    def _write(self, rd: Ready) -> Any:
        """On the writer thread: one transaction, one sync (LmdbLogStore.write)."""
        node = self.node
        ents = rd.committed_entries
        fsm = node.fsm
        loop = self.loop
        deliver = node._deliver_results

        def apply(txn: Any) -> Any:
            results = fsm.apply(txn, ents)
            # Hand the results to waiting clients now, before this transaction's sync: the entries are committed
            # (durable on a majority), so a crash before this commit only means they are applied again at restart.
            # Reads are unaffected: they wait for ``node.applied``, which moves only once the commit is visible.
            # (If the store retries the transaction after growing its map, results are delivered again: harmless,
            # apply is deterministic and a resolved waiter is gone.)
            if results:
                loop.call_soon_threadsafe(deliver, results)
            return results

        t0 = time.perf_counter_ns()
        result = node.store.write(
            hard_state=rd.hard_state,
            entries=rd.entries,
            snapshot=rd.snapshot,
            applied=ents[-1].index if ents else None,
            apply=apply if ents else None,
            sync=rd.must_sync and node.settings.sync,
        )
        st = node.stats
        st.write_us += (time.perf_counter_ns() - t0) // 1000
        st.writes += 1
        st.entries_persisted += len(rd.entries)
        return result

    def applied(self, rd: Ready, results: Any) -> None:
        self.node._on_applied(rd, results)


__all__ = ["Node", "NodeStats", "StorageError"]
