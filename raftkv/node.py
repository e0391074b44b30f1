"""The asyncio shell around a ``Replica`` (``raftkv.replica``): one task drives it; everything else talks to the
node through methods that queue an event for the replica, and waits on futures keyed by request id.

What lives here is what waits, what runs on threads and what touches files: the loop and its ticker, the futures of
the callers, the writer thread (``raftkv.writer``), snapshot files sent to followers, the cross-replica state
hash, reads of the state machine, and the alarms (a corrupt record, a full or failing disk) that end the loop. What
is decided (batching, forwarding, read rounds, consistency, membership) is the replica's, and is driven the same
way by the simulator.

Each turn of the loop (``run``):
  1. ``Replica.step`` with the time on the node's clock (``raftkv.clock``): it ticks the core as many times as are
     due (a process paused by SIGSTOP catches up on resume, so a stale leader's lease has expired by the time it
     serves anything), steps every peer message that arrived, proposes every client command that arrived since the
     last turn as one batch (one log entry per ``max_batch_bytes``: one append, one broadcast, one fsync for all of
     them), and asks for one read index for every linearizable read that arrived (they share one heartbeat round);
  2. take the Ready and start it (``Replica.start_ready``): send what may leave now, and queue its write (persist
     and apply in one LMDB transaction) on the writer thread; results are answered as they are applied;
  3. finish each Ready whose write is done, oldest first (``Replica.finish_ready``): send the persisted messages,
     take in what was applied, advance the core, then wake whoever waits for the applied index.
Up to ``max_inflight_writes`` Readys (default 1) may be under way at once: with more, while one write syncs, the
loop steps what arrived, takes the next Ready and sends its appends; its write queues behind the first. At that
bound the loop waits, and what arrives meanwhile forms the next, larger batch (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from .clock import Clock, SystemClock
from .errors import (
    DataCorruption,
    NotLeader,
    RaftKVError,
    ReadOnly,
    Removed,
    StorageError,
    Timeout,
    Unavailable,
)
from .kv import (
    LMDB_DAMAGE,
    Applied,
    Command,
    ErrorResult,
    KVStateMachine,
    MemberChangeResult,
    MemberInfo,
    bootstrap_entries,
)
from .raft import (
    EMPTY_HARD_STATE,
    ConfChangeType,
    HardState,
    LostAcknowledgedEntries,
    Message,
    MsgType,
    RawNode,
    Ready,
    Snapshot,
    SnapshotMetadata,
    StateRole,
)
from .replica import Replica, core_config
from .settings import Settings
from .storage import DurableStorageError, LmdbLogStore, StorageFullError
from .storage.snapshots import SnapshotHeader, SnapshotInfo, prune, remove_temp_files, write_snapshot
from .transport import Transport
from .watchfeed import WatchFeed
from .writer import ReadyWriter

log = logging.getLogger("raftkv.node")

_DAMAGE: tuple[type[BaseException], ...] = (DataCorruption, *LMDB_DAMAGE)
"""What reading damaged data raises: a record whose checksum does not match, or LMDB unable to read a page."""

KEPT_HASHES = 32
"""How many state hashes (one per hash mark) a node remembers."""


@dataclass
class NodeStats:
    """The shell's counters; ``stats_snapshot`` adds the replica's (``ReplicaStats``), the writer's (``WriterStats``)
    and the store's."""

    readies: int = 0
    syncs: int = 0
    snapshots_sent: int = 0
    pipelined_readys: int = 0
    """Readys taken while an earlier Ready's write was still under way (max_inflight_writes > 1)."""
    persist_us: int = 0
    """Total time from submitting each write to the writer thread to its completion (queueing behind earlier
    writes, write, sync, apply), in µs."""
    turn_us: int = 0
    """Total time the loop spent stepping (ticks, messages, proposals, reads) and taking Readies, in µs."""
    loop_lags_over_50ms: int = 0
    """Ticks the event loop ran more than 50 ms late (a loop busy that long, or the process not scheduled)."""
    loop_lag_max_us: int = 0
    """The worst lateness of a tick since start, in µs (counted only above 50 ms)."""
    keep_alive_rounds: int = 0
    """Keep-alives answered after a read-index round (the leader lease did not hold)."""


class Node:
    """The asyncio shell around a ``Replica``: see the module's docstring."""

    def __init__(
        self,
        settings: Settings,
        store: LmdbLogStore,
        fsm: KVStateMachine,
        transport: Transport,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``clock``: where the node reads time (``SystemClock()``; tests pass a ``FakeClock``); ``rng``: the Raft
        core's randomness (randomized election timeouts; a fresh ``random.Random()`` by default)."""
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.id = settings.id
        self.store = store
        self.fsm = fsm
        self.transport = transport
        self.stats = NodeStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._futures: dict[int, asyncio.Future[Any]] = {}  # request id -> its caller's future
        self._read_futures: dict[int, asyncio.Future[int]] = {}  # read id -> its caller's future
        self._leadership = asyncio.Event()  # set (and replaced) whenever the leader or role changes
        self._applied_waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # heap of (index, seq, future)
        self._applied_seq = 0
        self.snapshot_dir = settings.data_dir / "snapshots"
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        remove_temp_files(self.snapshot_dir)
        self._snapshot_tasks: dict[int, asyncio.Task[None]] = {}
        self._history_job: asyncio.Future[bool] | None = None  # an idle-writer step of a history compaction
        self.watches = WatchFeed(store, fsm)
        """The watchers of this node, fed from the history after every applied batch (``raftkv.watchfeed``)."""
        self._snapshot_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"raftkv-snapshot-{self.id}")
        self.state_hashes: dict[int, str] = {}
        """The state hashes taken at hash marks (log index -> sha256 hex, or "" when it was skipped), the newest
        ``KEPT_HASHES``."""
        self._hash_waiters: dict[int, list[asyncio.Future[str]]] = {}
        self._hashing = threading.Lock()  # one hash at a time (held by the thread computing it)
        self._writer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"raftkv-writer-{self.id}")
        self.writer = ReadyWriter(settings, store, fsm, self.snapshot_dir, on_results=self._results_applied,
                                  on_hash_mark=self.hash_state_now)
        self._stopping = False
        self.read_only_reason = ""
        self.verifying = False
        """Set while the start-up consistency check runs: client requests are asked to go elsewhere meanwhile."""
        self.corruption = ""
        """Non-empty once this node found damaged data (what it found): the corruption alarm. It then refuses every
        request but Status and no longer takes part in Raft."""

        hs, cs = store.initial_state()
        if store.last_index() == 0 and hs == EMPTY_HARD_STATE and not cs.voters and not settings.join:
            # First start of an initial member: write the bootstrap entries (one membership change per initial
            # member, identical on every initial member) as committed. They are applied like any other entry, so
            # a node that joins later learns the whole membership, addresses included, by replaying the log.
            boot = bootstrap_entries(
                [MemberInfo(m.id, m.peer_addr, m.client_addr, m.learner) for m in settings.members]
            )
            store.write(entries=boot, hard_state=HardState(term=1, vote=0, commit=len(boot)))
            log.info("node %d: bootstrapped cluster %s with members %s", self.id, settings.cluster_id,
                     [m.id for m in settings.members])
        applied = store.applied_index()
        raw = RawNode(core_config(settings, applied, rng or random.Random()), _CoreStorage(store))
        self.replica = Replica(settings, raw, fsm, _Effects(self), applied=applied, id_base=_incarnation_base())
        """The node's logic (``raftkv.replica``): everything here but waiting, threads and files."""
        self._check_alarms()  # raised by a hash check before it last stopped: it stays raised

    # -- inputs from other tasks (all on the event loop thread) -----------------------------------------------
    def on_messages(self, msgs: list[Message]) -> None:
        self.replica.on_messages(msgs)
        self._wake.set()

    def on_unreachable(self, peer: int) -> None:
        self.replica.on_unreachable(peer)
        self._wake.set()

    def on_removed(self, peer: int) -> None:
        """``peer`` refused our messages: it applied our removal from the cluster (the transport's ``on_removed``)."""
        self.replica.mark_removed(f"node {peer} says it was removed from the cluster")

    def _results_applied(self, results: list[Applied]) -> None:
        """On the writer thread, as entries are applied: hand the results to the replica on the loop."""
        loop = self._loop
        assert loop is not None
        loop.call_soon_threadsafe(self.replica.on_results, results)

    @property
    def raw(self) -> RawNode:
        return self.replica.raw

    @property
    def role(self) -> StateRole:
        return self.replica.raw.role

    @property
    def leader_id(self) -> int:
        return self.replica.raw.leader

    @property
    def term(self) -> int:
        return self.replica.raw.term

    @property
    def applied(self) -> int:
        """The last index applied here and committed to the store (reads of the state reflect at least this)."""
        return self.replica.applied

    @property
    def removed(self) -> bool:
        """This node applied its own removal from the cluster (it then refuses client requests)."""
        return self.replica.removed

    @property
    def client_addrs(self) -> dict[int, str]:
        return self.replica.client_addrs

    def leader_addr(self) -> str:
        return self.replica.leader_addr()

    def not_leader(self) -> NotLeader:
        return self.replica.not_leader()

    def corruption_error(self) -> DataCorruption:
        return DataCorruption(
            f"data corruption on node {self.id}: {self.corruption}. It serves nothing and takes no part in the "
            "cluster any more; ask another member, and rebuild this one (member remove, wipe its data directory, "
            "member add)"
        )

    def found_corruption(self, exc: BaseException) -> DataCorruption:
        """Raise the corruption alarm (once) for ``exc``, damaged data this node read back: fail every request
        waiting, refuse all but Status from now on, and stop taking part in Raft (the Ready loop ends, as on a
        full disk), leaving the cluster's decisions to the other members. Returns the error to answer with."""
        if not self.corruption:
            self.corruption = exc.message if isinstance(exc, DataCorruption) else f"{type(exc).__name__}: {exc}"
            log.critical("node %d: CORRUPTION ALARM: %s. It refuses every request but status and takes no part in "
                         "Raft from now on; rebuild it from the cluster (remove it, wipe %s, add it under a new id)",
                         self.id, self.corruption, self.settings.data_dir)
            self._fail_all(self.corruption_error())
            self._wake.set()
        return self.corruption_error()

    # -- the cross-replica consistency check ------------------------------------------------------------------
    def hash_state_now(self, index: int) -> None:
        """On the writer thread, right after the commit that applied up to the hash mark at ``index``: hash the
        state as it is now, from a read transaction opened before the writer goes on (so it sees exactly the state
        at ``index``), on a thread of its own. Hashing reads every record, so it also finds damaged ones (the
        alarm). One hash at a time: a mark that arrives while one runs is skipped (recorded as "")."""
        loop = self._loop
        assert loop is not None
        if not self._hashing.acquire(blocking=False):
            loop.call_soon_threadsafe(self._hash_done, index, "")
            return
        opened = threading.Event()

        def job() -> None:
            digest = ""
            try:
                with self.store.read_txn() as txn:
                    at = self.store.applied_index_in(txn)
                    opened.set()
                    if at == index:
                        digest = self.fsm.state_hash(txn)
            except _DAMAGE as e:
                loop.call_soon_threadsafe(self.found_corruption, e)
            except Exception:
                log.exception("node %d: hashing the state at index %d failed", self.id, index)
            finally:
                opened.set()
                self._hashing.release()
                loop.call_soon_threadsafe(self._hash_done, index, digest)

        threading.Thread(target=job, name=f"raftkv-hash-{self.id}", daemon=True).start()
        opened.wait()

    def _hash_done(self, index: int, digest: str) -> None:
        hashes = self.state_hashes
        hashes[index] = digest
        while len(hashes) > KEPT_HASHES:
            del hashes[min(hashes)]
        for f in self._hash_waiters.pop(index, ()):
            if not f.done():
                f.set_result(digest)

    async def state_hash(self, index: int) -> str:
        """The hash of this node's state right after the hash mark at ``index`` ("" if it was skipped, or is not
        known here: the mark came inside a snapshot, or before a restart). Waits until the mark is applied here."""
        self._check_intact()
        if index in self.state_hashes:
            return self.state_hashes[index]
        if self.applied >= index:
            return ""
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._hash_waiters.setdefault(index, []).append(fut)
        return await fut

    def _check_alarms(self) -> None:
        """Adopt a corruption alarm raised for this node through the log (a failed hash check)."""
        mine = self.fsm.alarms().get(self.id)
        if mine and not self.corruption:
            self.found_corruption(DataCorruption(mine))

    def _check_intact(self) -> None:
        if self.corruption:
            raise self.corruption_error()

    def removed_error(self) -> Removed:
        return self.replica.removed_error()

    def _check_writable(self) -> None:
        self._check_intact()
        if self.removed:
            raise self.removed_error()
        if self._stopping:
            raise Unavailable(f"node {self.id} is shutting down")
        if self.read_only_reason:
            raise ReadOnly(f"node {self.id} refuses writes: {self.read_only_reason}")

    async def propose(self, make: Callable[[int], Command]) -> Any:
        """Propose one command (built by ``make(request_id)``) and wait until it is applied here; returns its
        result. A follower forwards it to the leader (``forward_proposals``; else it raises NotLeader). Raises
        Unavailable when the leader changed before the result came: a leader's own proposal was then certainly not
        applied (``applied="no"``); a forwarded one may or may not have been (``applied="unknown"``: the caller
        retries with the same session)."""
        rid, fut = self.submit(make)
        try:
            return (await fut).result
        finally:
            self.forget(rid)

    def submit(self, make: Callable[[int], Command]) -> tuple[int, asyncio.Future[Applied]]:
        """``propose`` without the waiting: queue the command and return its request id and the future that its
        ``Applied`` (its result and the log index it was applied at) or error will resolve. The caller that stops
        waiting (a deadline) calls ``forget(request_id)``. A batch of requests is many submits and one wait, with no
        task or coroutine per request."""
        self._check_writable()
        rid = self.replica.propose(make)
        fut: asyncio.Future[Applied] = (self._loop or asyncio.get_running_loop()).create_future()
        self._futures[rid] = fut
        self._wake.set()
        return rid, fut

    def forget(self, request_id: int) -> None:
        """Stop tracking a submitted request (resolved, or abandoned by its caller)."""
        self._futures.pop(request_id, None)
        self.replica.forget(request_id)

    def tracked(self) -> int:
        """Requests still tracked here (futures held, and the replica's record of them)."""
        return len(self._futures) + self.replica.tracked()

    async def change_membership(
        self, t: ConfChangeType, member: MemberInfo, *, force: bool = False
    ) -> MemberChangeResult:
        """Propose one single-server membership change and wait until it is applied here. Only the leader takes
        changes, one at a time (Unavailable "in progress" otherwise)."""
        self._check_writable()
        rid = self.replica.propose_member_change(t, member, force)
        fut: asyncio.Future[Applied] = asyncio.get_running_loop().create_future()
        self._futures[rid] = fut
        self._wake.set()
        try:
            result = (await fut).result
        finally:
            self.forget(rid)
        # Results arrive before their transaction commits (see raftkv.writer); callers of a membership change read
        # the member table next, so wait until the change is visible.
        await self.wait_applied(self.replica.applying)
        if isinstance(result, ErrorResult):
            raise Unavailable(result.message)
        if not isinstance(result, MemberChangeResult):  # pragma: no cover - a result of another kind
            raise Unavailable(f"unexpected result {type(result).__name__}")
        return result

    def best_transferee(self) -> int:
        """The voter (other than us) whose log matches ours furthest (0 if none)."""
        return self.replica.best_transferee()

    async def transfer_leadership(self, to: int = 0, timeout_s: float | None = None) -> int:
        """Hand leadership to ``to`` (0: the most up-to-date voter): it catches up, then campaigns at once
        (thesis §3.10). Returns the new leader's id; Timeout if it did not happen in time."""
        target = self.replica.transfer(to)
        self._wake.set()
        s = self.settings
        limit = timeout_s if timeout_s is not None else 2 * s.election_ticks * s.tick_ms / 1000 + 1.0
        try:
            async with asyncio.timeout(limit):
                while self.role == StateRole.LEADER or self.leader_id == 0:
                    await self._leadership.wait()
        except TimeoutError:
            raise Timeout(f"leadership did not move to node {target} within {limit:.1f}s") from None
        return self.leader_id

    async def read_index(self) -> int:
        """A linearizable read point (thesis §6.4): resolves once a majority confirmed our leader's leadership after
        this call, to an index that is applied here by the time this returns."""
        self._check_intact()
        if self.removed:
            raise self.removed_error()
        if self._stopping:
            raise Unavailable(f"node {self.id} is shutting down")
        if self.read_only_reason:
            raise Unavailable(f"node {self.id} no longer takes part in the cluster ({self.read_only_reason}); "
                              f"ask another node, or read with --consistency stale")
        read_id = self.replica.read()
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._read_futures[read_id] = fut
        self._wake.set()
        try:
            index = await fut
        finally:
            self._read_futures.pop(read_id, None)
        await self.wait_applied(index)
        return index

    def lease_read_index(self) -> int | None:
        """The commit index while this leader's lease holds, judged at the clock's present (not the last step's:
        ``Replica.lease_read_index``); None otherwise."""
        return self.replica.lease_read_index(self.clock.monotonic())

    async def keep_alive(self, lease_ids: Sequence[int], min_index: int = 0) -> list[int]:
        """Renew leases on the leader, once it applied ``min_index`` (a grant's index: then it times the lease):
        per lease its TTL, 0 if it does not exist or ran out (``Replica.keep_alive``)."""
        self._check_intact()
        if min_index > self.applied:
            await self.wait_applied(min_index)
        now = self.clock.monotonic()
        ttls = self.replica.keep_alive(now, lease_ids)
        if ttls is None:  # the leader lease does not hold: confirm the leadership after ``now`` first
            self.stats.keep_alive_rounds += 1
            await self.read_index()
            ttls = self.replica.keep_alive(now, lease_ids, confirmed=True)
            assert ttls is not None
        return ttls

    def lease_remaining(self, lease_id: int) -> float | None:
        """Seconds until a lease ends, on the leader (None: no such lease)."""
        return self.replica.lease_remaining(self.clock.monotonic(), lease_id)

    async def wait_applied(self, index: int) -> None:
        if self.applied >= index:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._applied_seq += 1
        heapq.heappush(self._applied_waiters, (index, self._applied_seq, fut))
        await fut

    def stats_snapshot(self) -> dict[str, int]:
        """Counters for Status / benchmarks: the shell's, the replica's, the writer's, and the store's."""
        out = {k: int(v) for k, v in vars(self.stats).items()}
        out.update((k, int(v)) for k, v in vars(self.replica.stats).items())
        out.update((k, int(v)) for k, v in vars(self.writer.stats).items())
        ws = self.store.stats
        out.update(store_commits=ws.commits, store_syncs=ws.syncs, store_commit_us=ws.commit_us,
                   store_sync_us=ws.sync_us, store_entries_written=ws.entries_written,
                   store_bytes_written=ws.bytes_written, applied=self.applied, term=self.term,
                   first_index=self.store.first_index(), last_index=self.store.last_index())
        return out

    # Reads of the state machine. Each checks every record it reads (``raftkv.kv.fsm.unseal``); damaged data raises
    # the corruption alarm and is never returned.
    def fsm_get(self, key: bytes) -> tuple[int, Any]:
        """(applied index, KeyValue | None) read in one LMDB read transaction: the index is exactly the state read."""
        index, _, (kv,) = self.fsm_get_many((key,))
        return index, kv

    def fsm_get_many(self, keys: Sequence[bytes], rev: int = 0) -> tuple[int, int, list[Any]]:
        """``(applied index, revision, [KeyValue | None])`` of several keys, from one read transaction: one
        consistent state, and the index and revision it reflects; at revision ``rev`` of the history if not 0
        (``Compacted`` below the compacted revision, InvalidArgument beyond the current one)."""
        self._check_intact()
        store = self.store
        fsm = self.fsm
        get = fsm.get
        try:
            with store.read_txn() as txn:
                at = fsm.read_revision(rev, txn=txn)
                return store.applied_index_in(txn), at, [get(k, rev=rev, txn=txn) for k in keys]
        except _DAMAGE as e:
            raise self.found_corruption(e) from e

    def fsm_range(
        self, prefix: bytes, start_after: bytes, limit: int, keys_only: bool, rev: int = 0
    ) -> tuple[int, int, list[Any], bool]:
        """``(applied index, revision, kvs, more)`` from one read transaction (see ``KVStateMachine.range``), at
        revision ``rev`` of the history if not 0."""
        self._check_intact()
        store = self.store
        fsm = self.fsm
        try:
            with store.read_txn() as txn:
                at = fsm.read_revision(rev, txn=txn)
                kvs, more = fsm.range(prefix, start_after, limit, keys_only, rev=rev, txn=txn)
                return store.applied_index_in(txn), at, kvs, more
        except _DAMAGE as e:
            raise self.found_corruption(e) from e

    def fsm_range_between(
        self, key: bytes, range_end: bytes, *, limit: int = 0, keys_only: bool = False, count_only: bool = False,
        rev: int = 0,
    ) -> tuple[int, int, list[Any], int]:
        """``(applied index, revision, kvs, total)`` of etcd's range (``KVStateMachine.range_between``) from one
        read transaction."""
        self._check_intact()
        store = self.store
        fsm = self.fsm
        try:
            with store.read_txn() as txn:
                at = fsm.read_revision(rev, txn=txn)
                kvs, total = fsm.range_between(key, range_end, limit=limit, keys_only=keys_only,
                                               count_only=count_only, rev=rev, txn=txn)
                return store.applied_index_in(txn), at, kvs, total
        except _DAMAGE as e:
            raise self.found_corruption(e) from e

    def members(self) -> list[MemberInfo]:
        self._check_intact()
        try:
            return self.fsm.members()
        except _DAMAGE as e:
            raise self.found_corruption(e) from e

    def bounded_read_ok(self, max_staleness_ms: int) -> bool:
        """Whether this node may serve a bounded-staleness read from its applied state now
        (``Replica.bounded_read_ok``, on this node's monotonic clock). When it may not, the loop asks for a fresh
        read point at once, for the bounded reads that follow."""
        ok = self.replica.bounded_read_ok(max_staleness_ms, self.clock.monotonic())
        if not ok:
            self._wake.set()
        return ok

    def leader_contact_ms(self) -> int:
        return self.replica.leader_contact_ms(self.clock.monotonic())

    # -- the loop ---------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Drive the node until ``stop()``. The only task that touches the replica's core."""
        self._loop = asyncio.get_running_loop()
        replica = self.replica
        replica.start(self.clock.monotonic())
        ticker = asyncio.create_task(self._ticker(), name=f"raftkv-ticker-{self.id}")
        # Readys taken whose writes are under way, oldest first (None: nothing to write). They are finished strictly
        # in this order; the single writer thread completes their writes in the same order.
        inflight: deque[tuple[Ready, asyncio.Future[Any] | None]] = deque()
        depth = self.settings.max_inflight_writes
        wake = self._wake.set

        def written(_: object) -> None:
            wake()

        try:
            while not self._stopping and not self.corruption:
                await self._wake.wait()
                self._wake.clear()
                if len(inflight) < depth:
                    # With the pipeline full, what arrives waits (not even stepped) and joins the next Ready.
                    self._turn()
                while not self._stopping:
                    if inflight and (inflight[0][1] is None or inflight[0][1].done()):
                        rd, fut = inflight.popleft()
                        try:
                            results = fut.result() if fut is not None else None
                        except StorageFullError as e:
                            # Nothing of this Ready was written (nor will any later one be: see ReadyWriter); the
                            # core's view is now ahead of the disk, so the node stops taking part in Raft (no votes,
                            # no acknowledgements) but keeps serving what it has.
                            self._enter_read_only(f"its disk is full ({e}); free space, then restart the node")
                            return
                        except _DAMAGE as e:
                            # Applying read back a damaged record (or LMDB could not read a page): nothing of this
                            # Ready was written (its transaction aborted).
                            self.found_corruption(e)
                            return
                        except DurableStorageError as e:
                            log.critical("node %d: cannot persist a Ready: %s", self.id, e, exc_info=True)
                            self._enter_read_only(f"its storage failed ({e}); check the disk, then restart the node")
                            return
                        replica.finish_ready(rd, results)
                        self._after_apply()
                        self._turn()
                    elif len(inflight) < depth and replica.has_ready():
                        rd = replica.ready()
                        self.stats.readies += 1
                        if inflight:
                            self.stats.pipelined_readys += 1
                        fut = cast("asyncio.Future[Any] | None", replica.start_ready(rd))  # submitted, or None
                        if fut is not None:
                            fut.add_done_callback(written)
                        inflight.append((rd, fut))
                    else:
                        if not inflight and self.writer.history_pending and self._history_job is None:
                            self._start_history_step()
                        break
        except LostAcknowledgedEntries as e:
            what = (f"node {self.id} refuses to run: {e}. Its data directory ({self.settings.data_dir}) is older than "
                    "what it promised its peers (restored from an old copy?). Rebuild it: `raftkv member remove "
                    f"{self.id}`, wipe the data directory, and `raftkv member add` a node under a new id (it catches "
                    "up)")
            log.critical("%s", what)
            raise StorageError(what, str(self.settings.data_dir)) from None
        finally:
            ticker.cancel()
            for fut in [f for _, f in inflight] + [self._history_job]:  # let the writes under way finish first
                if fut is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(fut)
            for t in self._snapshot_tasks.values():
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            for t in self._snapshot_tasks.values():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            self._fail_all(Unavailable(f"node {self.id} stopped"))

    async def _ticker(self) -> None:
        # Only wakes the loop; which ticks are due is the replica's to count, from the node's clock. The lag is
        # measured on the system clock: it is about this process, whatever clock the node runs on.
        st = self.stats
        tick = self.settings.tick_ms / 1000.0
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(tick)
            # How late the loop woke us: the event loop (or the whole process) was busy or descheduled that long.
            lag = time.monotonic() - t0 - tick
            if lag > 0.05:
                st.loop_lags_over_50ms += 1
                lag_us = int(lag * 1e6)
                if lag_us > st.loop_lag_max_us:
                    st.loop_lag_max_us = lag_us
                if lag > 1.0:
                    log.warning("node %d: the event loop was %.1fs late (a stalled loop or a paused process)",
                                self.id, lag)
            self._wake.set()

    def _start_history_step(self) -> None:
        """The writer is idle and a history compaction still has records to remove: one bounded step on the writer
        thread (a Ready taken meanwhile queues behind it there, in order)."""
        assert self._loop is not None
        job = self._loop.run_in_executor(self._writer_pool, self.writer.history_step)
        self._history_job = job

        def done(f: asyncio.Future[bool]) -> None:
            self._history_job = None
            if f.cancelled():
                return
            exc = f.exception()
            if exc is not None:
                self.writer.history_pending = False  # the next write will meet the same trouble, and say so
                log.warning("node %d: a history compaction step failed: %s", self.id, exc)
            self._wake.set()

        job.add_done_callback(done)

    def _turn(self) -> None:
        t0 = time.perf_counter_ns()
        try:
            clock = self.clock
            self.replica.step(clock.monotonic(), clock.time_ns())
        finally:
            self.stats.turn_us += (time.perf_counter_ns() - t0) // 1000

    def _after_apply(self) -> None:
        """After a Ready was finished: adopt an alarm applied through the log, wake those waiting for the index."""
        if self.fsm.alarm_applied:
            self.fsm.alarm_applied = False
            self._check_alarms()
        if len(self.watches):
            try:
                self.watches.publish_applied()
            except _DAMAGE as e:
                self.found_corruption(e)
        aw = self._applied_waiters
        applied = self.applied
        while aw and aw[0][0] <= applied:
            fut = heapq.heappop(aw)[2]
            if not fut.done():
                fut.set_result(None)

    # -- snapshots -------------------------------------------------------------------------------------------
    def send_messages(self, msgs: Sequence[Message]) -> None:
        """Send through the transport, except snapshots: the core's MsgSnap carries metadata only, so the state is
        dumped into a file, streamed to the follower, and only then is the message sent, naming the file."""
        snaps = [m for m in msgs if m.type == MsgType.SNAP]
        if snaps:
            msgs = [m for m in msgs if m.type != MsgType.SNAP]
            for m in snaps:
                self._start_snapshot(m)
        if msgs:
            self.transport.send(msgs)

    def _start_snapshot(self, m: Message) -> None:
        task = self._snapshot_tasks.get(m.to)
        if task is not None and not task.done():
            self.replica.on_snapshot_status(m.to, False)  # one transfer per follower at a time
            return
        self._snapshot_tasks[m.to] = asyncio.get_running_loop().create_task(
            self._send_snapshot(m), name=f"raftkv-snapshot-{self.id}-to-{m.to}"
        )

    async def _send_snapshot(self, m: Message) -> None:
        ok = False
        t0 = time.monotonic()
        try:
            info = await asyncio.get_running_loop().run_in_executor(self._snapshot_pool, self.dump_snapshot)
            ok = await self.transport.send_snapshot(m.to, info.path)
            if ok:
                snap = Snapshot(info.header.metadata, info.path.name.encode())
                self.transport.send([m._replace(snapshot=snap)])
                self.stats.snapshots_sent += 1
                log.info(
                    "node %d sent a snapshot at index %d (%d records, %.1f MB) to node %d in %.1fs", self.id,
                    info.header.index, info.records, info.size_bytes / 1e6, m.to, time.monotonic() - t0,
                )
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("node %d: sending a snapshot to node %d failed: %s", self.id, m.to, e)
        finally:
            self.replica.on_snapshot_status(m.to, ok)
            self._wake.set()

    def dump_snapshot(self, into: Path | None = None) -> SnapshotInfo:
        """Write the state machine as it stands into a snapshot file, from one consistent read transaction (writes
        go on meanwhile), in ``into`` (default: the snapshot directory, which keeps the newest three for
        followers). Runs on a worker thread."""
        store = self.store
        try:
            with store.read_txn() as txn:
                index = store.applied_index_in(txn)
                header = SnapshotHeader(
                    index=index,
                    term=store.term(index),
                    conf_state=self.fsm.conf_state(txn=txn),
                    cluster_id=self.settings.cluster_id,
                )
                info = write_snapshot(into or self.snapshot_dir, header, self.fsm.iter_state(txn))
        except _DAMAGE as e:  # never hand damaged state on: raise the alarm (on the loop), fail this snapshot
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self.found_corruption, e)
            raise
        if into is None:
            prune(self.snapshot_dir, keep=3)
        return info

    async def backup(self, into: Path) -> SnapshotInfo:
        """Dump a snapshot of the state into the directory ``into`` (a backup), on the snapshot thread."""
        return await asyncio.get_running_loop().run_in_executor(self._snapshot_pool, self.dump_snapshot, into)

    def on_snapshot_received(self, frm: int, path: Any) -> None:
        log.info("node %d received a snapshot file %s from node %d", self.id, path, frm)

    # -- failing what waits ---------------------------------------------------------------------------------
    def _fail_all(self, err: RaftKVError) -> None:
        """Fail every request under way (the replica says how), and everyone waiting for an index."""
        self.replica.fail_all(err)
        self.watches.cancel_all(err.message)
        for fut in self._futures.values():  # none left, unless the replica lost track of one
            if not fut.done():
                fut.set_exception(err)
        self._futures.clear()
        for rfut in self._read_futures.values():
            if not rfut.done():
                rfut.set_exception(err)
        self._read_futures.clear()
        self._fail_applied_waiters(err)

    def _fail_applied_waiters(self, err: RaftKVError) -> None:
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
        self._writer_pool.shutdown(wait=True)
        self._snapshot_pool.shutdown(wait=True)


def _incarnation_base() -> int:
    """A random starting point for per-process counters (2^40 apart on average: no overlap between restarts)."""
    return random.SystemRandom().getrandbits(60) + 1


class _Effects:
    """The replica's effects (``ReplicaIO``), carried out by the node: the transport, the writer thread, and the
    futures of the callers waiting."""

    __slots__ = ("_node",)

    def __init__(self, node: Node) -> None:
        self._node = node

    def send(self, msgs: Sequence[Message]) -> None:
        self._node.send_messages(msgs)

    def persist(self, rd: Ready) -> asyncio.Future[Any] | None:
        """Submit ``rd``'s write to the writer thread now (so writes run in the order of the calls); None if the
        Ready has nothing to write."""
        if not (rd.entries or rd.hard_state is not None or rd.snapshot is not None or rd.committed_entries):
            return None
        node = self._node
        loop = node._loop
        assert loop is not None
        t0 = time.perf_counter_ns()
        fut = loop.run_in_executor(node._writer_pool, node.writer.write, rd)
        stats = node.stats

        def timed(_: object) -> None:
            stats.persist_us += (time.perf_counter_ns() - t0) // 1000

        fut.add_done_callback(timed)
        return fut

    def respond(self, request_id: int, applied: Applied) -> None:
        fut = self._node._futures.pop(request_id, None)
        if fut is not None and not fut.done():
            fut.set_result(applied)

    def fail(self, request_id: int, err: RaftKVError) -> None:
        fut = self._node._futures.pop(request_id, None)
        if fut is not None and not fut.done():
            fut.set_exception(err)

    def reads_done(self, read_ids: Sequence[int], index: int) -> None:
        futs = self._node._read_futures
        for i in read_ids:
            fut = futs.pop(i, None)
            if fut is not None and not fut.done():
                fut.set_result(index)

    def reads_failed(self, read_ids: Sequence[int], err: RaftKVError) -> None:
        futs = self._node._read_futures
        for i in read_ids:
            fut = futs.pop(i, None)
            if fut is not None and not fut.done():
                fut.set_exception(err)

    def set_peers(self, peers: dict[int, str]) -> None:
        self._node.transport.set_peers(peers)

    def refuse(self, node_ids: Iterable[int]) -> None:
        self._node.transport.refuse(list(node_ids))

    def leadership_changed(self, lead: int, role: StateRole) -> None:
        node = self._node
        node._leadership.set()
        node._leadership = asyncio.Event()

    def removed(self, err: RaftKVError) -> None:
        node = self._node
        node._fail_applied_waiters(err)
        node._wake.set()


class _CoreStorage:
    """The core's view of the store: reads straight from ``LmdbLogStore`` (bound methods, no extra call on the hot
    path), except ``snapshot()``. The core asks for a snapshot only to send one to a follower that needs entries
    that were compacted away; the state machine lives in LMDB and is always current, so the snapshot is the
    applied state as it stands: its metadata says so, and the data is dumped when it is sent."""

    def __init__(self, store: LmdbLogStore) -> None:
        self._store = store
        self.initial_state = store.initial_state
        self.entries = store.entries
        self.term = store.term
        self.first_index = store.first_index
        self.last_index = store.last_index

    def snapshot(self) -> Snapshot:
        st = self._store
        idx = st.applied_index()
        return Snapshot(SnapshotMetadata(st.conf_state(), idx, st.term(idx)), b"")


__all__ = ["Node", "NodeStats", "StorageError"]
