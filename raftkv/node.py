"""The asyncio driver: one task owns the RawNode and runs the Ready loop; everything else talks to it through
queues and futures.

Each turn of the loop (``_run``):
  1. tick the core as many times as the monotonic clock says are due (a process paused by SIGSTOP catches up on
     resume, so a stale leader's lease has expired by the time it serves anything);
  2. step every peer message that arrived;
  3. propose every client command that arrived since the last turn as one batch (one log entry per
     ``max_batch_bytes``): one append, one broadcast, one fsync for all of them;
  4. ask for one read index for every linearizable read that arrived (they share one heartbeat round);
  5. take the Ready and start it (``raftkv.ready.start_ready``): send what may leave now, and queue its write (persist
     and apply in one LMDB transaction) on the writer thread;
  6. finish each Ready whose write is done, oldest first (``finish_ready``): send the persisted messages, resolve
     waiters, advance the core.
Up to ``max_inflight_writes`` Readys (default 1) may be under way at once: with more, while one write syncs, the
loop steps what arrived, takes the next Ready and sends its appends; its write queues behind the first. At that
bound the loop waits, and what arrives meanwhile forms the next, larger batch (group commit). Each half is the one
the simulator runs inside ``handle_ready``, with up to three writes under way per node in its pipelined
configurations.
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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from .clock import Clock, SystemClock
from .errors import (
    APPLIED_UNKNOWN,
    DataCorruption,
    InvalidArgument,
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
    HashMark,
    KVStateMachine,
    MemberChange,
    MemberChangeResult,
    MemberInfo,
    bootstrap_entries,
    decode_conf_change,
    encode_batch,
    encode_change,
    is_hash_mark,
)
from .raft import (
    EMPTY_HARD_STATE,
    ConfChangeType,
    Config,
    EntryType,
    HardState,
    LostAcknowledgedEntries,
    Message,
    MsgType,
    ProposalDropped,
    RawNode,
    Ready,
    Snapshot,
    SnapshotMetadata,
    StateRole,
)
from .raft.core import conf_state_after, shrinks_two_voters_to_one
from .ready import finish_ready, start_ready
from .settings import Settings
from .storage import DurableStorageError, LmdbLogStore, StorageFullError
from .storage.snapshots import SnapshotHeader, SnapshotInfo, iter_records, prune, remove_temp_files, write_snapshot
from .transport import Transport

log = logging.getLogger("raftkv.node")

_DAMAGE: tuple[type[BaseException], ...] = (DataCorruption, *LMDB_DAMAGE)
"""What reading damaged data raises: a record whose checksum does not match, or LMDB unable to read a page."""

KEPT_HASHES = 32
"""How many state hashes (one per hash mark) a node remembers."""

COMPACT_CHUNK = 5_000
"""Most log entries one compaction step deletes (keeps every write transaction short)."""


@dataclass
class NodeStats:
    readies: int = 0
    writes: int = 0
    syncs: int = 0
    entries_persisted: int = 0
    entries_applied: int = 0
    commands_proposed: int = 0
    commands_forwarded: int = 0
    """Commands this node proposed as a follower, forwarded to the leader."""
    batches_proposed: int = 0
    read_rounds: int = 0
    reads_served: int = 0
    compactions: int = 0
    snapshots_sent: int = 0
    snapshots_installed: int = 0
    pipelined_readys: int = 0
    """Readys taken while an earlier Ready's write was still under way (max_inflight_writes > 1)."""
    persist_us: int = 0
    """Total time from submitting each write to the writer thread to its completion (queueing behind earlier
    writes, write, sync, apply), in µs."""
    write_us: int = 0
    """Total time spent inside store.write on the writer thread, in µs."""
    write_cpu_us: int = 0
    """Of ``write_us``, the writer thread's own CPU time; the rest is waiting (fsync, the GIL)."""
    turn_us: int = 0
    """Total time the loop spent stepping (ticks, messages, proposals, reads) and taking Readies, in µs."""
    loop_lags_over_50ms: int = 0
    """Ticks the event loop ran more than 50 ms late (a loop busy that long, or the process not scheduled)."""
    loop_lag_max_us: int = 0
    """The worst lateness of a tick since start, in µs (counted only above 50 ms)."""


class _Waiter:
    """A proposed command waiting for its entry to be applied."""

    __slots__ = ("future", "index", "term")

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future
        self.index = 0
        self.term = 0


class Node:
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
        self.client_addrs = {m.id: m.client_addr for m in settings.members}
        self._peer_addrs = {m.id: m.peer_addr for m in settings.members if m.id != settings.id}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._inbox: deque[Message] = deque()
        self._unreachable: set[int] = set()
        self._proposals: list[tuple[Command, _Waiter]] = []
        self._forwarded: list[Message] = []  # proposals followers forwarded, held while the pipeline is full
        self._forwarded_rids: dict[int, int] = {}  # request id -> the leader it was forwarded to (unanswered)
        self._waiters: dict[int, _Waiter] = {}
        # Request ids and read contexts start at a random point, not at 1: an entry (or a read-index answer)
        # from before a restart can still reach this node, and must not match a request of this incarnation.
        self._next_request_id = _incarnation_base()
        self._inflight_entries: dict[int, tuple[int, list[int]]] = {}  # index -> (term, request ids)
        self._pending_reads: list[asyncio.Future[int]] = []
        # Read-index requests of this node not yet answered: ctx -> (when it was issued, the reads waiting on it).
        self._read_rounds: dict[bytes, tuple[float, list[asyncio.Future[int]]]] = {}
        self._next_read_ctx = _incarnation_base()
        self._conf_proposals: list[tuple[bytes, _Waiter, bool]] = []  # (change, waiter, forced)
        self.snapshot_dir = settings.data_dir / "snapshots"
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        remove_temp_files(self.snapshot_dir)
        self._snapshot_tasks: dict[int, asyncio.Task[None]] = {}
        self._snapshot_status: list[tuple[int, bool]] = []
        self._snapshot_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"raftkv-snapshot-{self.id}")
        self.state_hashes: dict[int, str] = {}
        """The state hashes taken at hash marks (log index -> sha256 hex, or "" when it was skipped), the newest
        ``KEPT_HASHES``."""
        self._hash_waiters: dict[int, list[asyncio.Future[str]]] = {}
        self._hashing = threading.Lock()  # one hash at a time (held by the thread computing it)
        self._transfers: list[int] = []
        self._leadership = asyncio.Event()  # set (and replaced) whenever the leader or role changes
        self._applied_waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # heap of (index, seq, future)
        self._applied_seq = 0
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"raftkv-writer-{self.id}")
        self._write_failed: BaseException | None = None  # set on the writer thread by the first write that failed
        self._stopping = False
        self.read_only_reason = ""
        self.verifying = False
        """Set while the start-up consistency check runs: client requests are asked to go elsewhere meanwhile."""
        self.corruption = ""
        """Non-empty once this node found damaged data (what it found): the corruption alarm. It then refuses every
        request but Status and no longer takes part in Raft."""
        self.applied = store.applied_index()
        self._tick_s = settings.tick_ms / 1000.0
        self._ticks_done = 0
        self._t0 = 0.0

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
        self.removed = False
        """This node applied its own removal from the cluster (it then refuses client requests)."""
        self.raw = RawNode(
            Config(
                id=self.id,
                election_tick=settings.election_ticks,
                heartbeat_tick=settings.heartbeat_ticks,
                applied=self.applied,
                max_size_per_msg=settings.max_size_per_msg,
                max_inflight_msgs=settings.max_inflight_msgs,
                max_inflight_read_rounds=settings.max_inflight_read_rounds,
                check_quorum=True,
                pre_vote=True,
                forward_proposals=settings.forward_proposals,
                decode_conf_change=decode_conf_change,
                rng=rng or random.Random(),
            ),
            _CoreStorage(store),
        )
        transport.set_peers({m.id: m.peer_addr for m in settings.members if m.id != self.id})
        self._check_alarms()  # raised by a hash check before it last stopped: it stays raised
        removed = fsm.removed_members()
        transport.refuse(removed)
        if self.id in removed:  # it applied its own removal before it stopped
            self._mark_removed("it applied its own removal before it last stopped")

    # -- inputs from other tasks (all on the event loop thread) -----------------------------------------------
    def on_messages(self, msgs: list[Message]) -> None:
        self._inbox.extend(msgs)
        self._wake.set()

    def on_unreachable(self, peer: int) -> None:
        self._unreachable.add(peer)
        self._wake.set()

    def on_removed(self, peer: int) -> None:
        """``peer`` refused our messages: it applied our removal from the cluster (the transport's ``on_removed``)."""
        self._mark_removed(f"node {peer} says it was removed from the cluster")

    @property
    def role(self) -> StateRole:
        return self.raw.role

    @property
    def leader_id(self) -> int:
        return self.raw.leader

    @property
    def term(self) -> int:
        return self.raw.term

    def leader_addr(self) -> str:
        return self.client_addrs.get(self.leader_id, "")

    def not_leader(self) -> NotLeader:
        return NotLeader(self.leader_id, self.leader_addr())

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
                         "Raft from now on; rebuild it from the cluster (remove it, wipe %s, add it again)",
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
        return Removed(f"node {self.id} was removed from the cluster; it serves no requests: ask another member")

    def _check_writable(self) -> None:
        self._check_intact()
        if self.removed:
            raise self.removed_error()
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
        if self.role != StateRole.LEADER and not self.settings.forward_proposals:
            raise self.not_leader()
        loop = self._loop or asyncio.get_running_loop()
        w = _Waiter(loop.create_future())
        rid = self.new_request_id()
        self._waiters[rid] = w
        self._proposals.append((make(rid), w))
        self._wake.set()
        return rid, w.future

    def forget(self, request_id: int) -> None:
        """Stop tracking a submitted request (resolved, or abandoned by its caller)."""
        self._waiters.pop(request_id, None)
        if self._forwarded_rids:
            self._forwarded_rids.pop(request_id, None)

    async def change_membership(
        self, t: ConfChangeType, member: MemberInfo, *, force: bool = False
    ) -> MemberChangeResult:
        """Propose one single-server membership change and wait until it is applied here. Only the leader takes
        changes, one at a time (Unavailable "in progress" otherwise)."""
        self._check_writable()
        if self.role != StateRole.LEADER:
            raise self.not_leader()
        w = _Waiter(asyncio.get_running_loop().create_future())
        rid = self.new_request_id()
        self._waiters[rid] = w
        self._conf_proposals.append((encode_change(MemberChange(t, member, self.id, rid)), w, force))
        self._wake.set()
        try:
            result = (await w.future).result
        finally:
            self._waiters.pop(rid, None)
        # Results arrive before their transaction commits (see _DriverIO._write); callers of a membership change
        # read the member table next, so wait until the change is visible.
        await self.wait_applied(self.raw.applying)
        if isinstance(result, ErrorResult):
            raise Unavailable(result.message)
        if not isinstance(result, MemberChangeResult):  # pragma: no cover - a result of another kind
            raise Unavailable(f"unexpected result {type(result).__name__}")
        return result

    def best_transferee(self) -> int:
        """The voter (other than us) whose log matches ours furthest (0 if none)."""
        st = self.raw.status()
        best, best_match = 0, -1
        for v in st.conf_state.voters:
            pr = st.progress.get(v)
            if v != self.id and pr is not None and pr.match > best_match:
                best, best_match = v, pr.match
        return best

    async def transfer_leadership(self, to: int = 0, timeout_s: float | None = None) -> int:
        """Hand leadership to ``to`` (0: the most up-to-date voter): it catches up, then campaigns at once
        (thesis §3.10). Returns the new leader's id; Timeout if it did not happen in time."""
        if self.role != StateRole.LEADER:
            raise self.not_leader()
        target = to or self.best_transferee()
        if not target:
            raise Unavailable("there is no other voter to hand leadership to")
        if target not in self.raw.conf_state().voters:
            raise InvalidArgument(f"node {target} is not a voter of this cluster")
        self._transfers.append(target)
        self._wake.set()
        limit = timeout_s if timeout_s is not None else 2 * self.settings.election_ticks * self._tick_s + 1.0
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

    def fsm_get_many(self, keys: Sequence[bytes]) -> tuple[int, int, list[Any]]:
        """``(applied index, revision, [KeyValue | None])`` of several keys, from one read transaction: one
        consistent state, and the index and revision it reflects."""
        self._check_intact()
        store = self.store
        get = self.fsm.get
        try:
            with store.read_txn() as txn:
                return store.applied_index_in(txn), self.fsm.revision(txn=txn), [get(k, txn=txn) for k in keys]
        except _DAMAGE as e:
            raise self.found_corruption(e) from e

    def fsm_range(
        self, prefix: bytes, start_after: bytes, limit: int, keys_only: bool
    ) -> tuple[int, int, list[Any], bool]:
        """``(applied index, revision, kvs, more)`` from one read transaction (see ``KVStateMachine.range``)."""
        self._check_intact()
        store = self.store
        try:
            with store.read_txn() as txn:
                kvs, more = self.fsm.range(prefix, start_after, limit, keys_only, txn=txn)
                return store.applied_index_in(txn), self.fsm.revision(txn=txn), kvs, more
        except _DAMAGE as e:
            raise self.found_corruption(e) from e

    def members(self) -> list[MemberInfo]:
        self._check_intact()
        try:
            return self.fsm.members()
        except _DAMAGE as e:
            raise self.found_corruption(e) from e

    def bounded_read_ok(self, max_staleness_ms: int) -> bool:
        """Whether this node may serve a bounded-staleness read from its applied state now: it knows a read point
        (``RawNode.read_freshness``) at most ``max_staleness_ms`` old, measured in real time on this node's
        monotonic clock, and it has applied the commit index of that point. A tick's start stands for the moment a
        point was taken within it (never later than the moment itself), so the age is never underestimated by the
        tick granularity; a bound of 0 is never met."""
        point = self.raw.read_freshness()
        if point is None:
            return False
        tick, commit = point
        age_s = self.clock.monotonic() - (self._t0 + tick * self._tick_s)
        return age_s * 1000.0 < max_staleness_ms and self.applied >= commit

    def leader_contact_ms(self) -> int:
        ticks = self.raw.ticks_since_leader_contact()
        if ticks is None:
            return int((self.clock.monotonic() - self._t0) * 1000) if self._t0 else 0
        return ticks * self.settings.tick_ms

    # -- the loop ---------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Drive the node until ``stop()``. The only task that touches ``self.raw``."""
        self._loop = asyncio.get_running_loop()
        self._t0 = self.clock.monotonic()
        io = _DriverIO(self, self._loop)
        ticker = asyncio.create_task(self._ticker(), name=f"raftkv-ticker-{self.id}")
        # Readys taken whose writes are under way, oldest first (None: nothing to write). They are finished strictly
        # in this order; the single writer thread completes their writes in the same order.
        inflight: deque[tuple[Ready, asyncio.Future[Any] | None]] = deque()
        depth = self.settings.max_inflight_writes
        wake = self._wake.set

        def written(_: object) -> None:
            wake()

        try:
            raw = self.raw
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
                            # Nothing of this Ready was written (nor will any later one be: see _DriverIO._write);
                            # the core's view is now ahead of the disk, so the node stops taking part in Raft (no
                            # votes, no acknowledgements) but keeps serving what it has.
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
                        finish_ready(raw, rd, io, results)
                        self._turn()
                    elif len(inflight) < depth and raw.has_ready():
                        rd = raw.ready()
                        self.stats.readies += 1
                        if inflight:
                            self.stats.pipelined_readys += 1
                        fut = cast("asyncio.Future[Any] | None", start_ready(rd, io))  # submitted, or None
                        if fut is not None:
                            fut.add_done_callback(written)
                        inflight.append((rd, fut))
                    else:
                        break
        except LostAcknowledgedEntries as e:
            what = (f"node {self.id} refuses to run: {e}. Its data directory ({self.settings.data_dir}) is older than "
                    "what it promised its peers (restored from an old copy?). Rebuild it: `raftkv member remove "
                    f"{self.id}`, wipe the data directory, `raftkv member add` it again (it then catches up)")
            log.critical("%s", what)
            raise StorageError(what, str(self.settings.data_dir)) from None
        finally:
            ticker.cancel()
            for _, fut in inflight:  # let the writes under way finish before the store is closed
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
        st = self.stats
        tick = self._tick_s
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

    def _turn(self) -> None:
        t0 = time.perf_counter_ns()
        try:
            self._step_inputs()
        finally:
            self.stats.turn_us += (time.perf_counter_ns() - t0) // 1000

    def _step_inputs(self) -> None:
        raw = self.raw
        # 1. Ticks due by the monotonic clock (none once removed: a removed node must not campaign).
        due = int((self.clock.monotonic() - self._t0) / self._tick_s) - self._ticks_done
        if due > 0 and not self.removed:
            self._ticks_done += due
            for _ in range(due):
                raw.tick()
        # 2. Peer messages.
        inbox = self._inbox
        while inbox:
            m = inbox.popleft()
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
        # 3. Proposals (membership changes one by one: the core takes only one at a time), and transfers.
        #    A leader with a full pipeline keeps them for a later turn: they join the next, larger batch.
        if (self._proposals or self._forwarded) and self._pipeline_has_room():
            if self._forwarded:
                fwd, self._forwarded = self._forwarded, []
                for m in fwd:
                    raw.step(m)  # a follower's batch keeps its own entry (a leader that cannot take it drops it)
            if self._proposals:
                self._propose_batch()
        if self._conf_proposals:
            confs, self._conf_proposals = self._conf_proposals, []
            for data, w, force in confs:
                if not force and shrinks_two_voters_to_one(raw.conf_state(), decode_conf_change(data)):
                    # Checked here, against the membership the change would apply to, not when the request came:
                    # a change still pending then may have applied since.
                    if not w.future.done():
                        w.future.set_exception(InvalidArgument(
                            "removing a voter from a 2-voter cluster leaves it unable to elect a leader if the "
                            "departing node fails during the change; add a node first, or pass --force"))
                    continue
                try:
                    raw.propose_conf_change(data)
                except ProposalDropped as e:
                    if not w.future.done():
                        w.future.set_exception(
                            self.not_leader()
                            if e.reason == ProposalDropped.NOT_LEADER
                            else Unavailable(f"membership change refused: {e.reason}; retry when it completes")
                        )
        if self._transfers:
            for target in self._transfers:
                raw.transfer_leader(target)
            self._transfers.clear()
        # 4. Linearizable reads share one read-index request (and so one heartbeat round); while
        #    max_inflight_read_requests of ours are unanswered, new reads wait and share the next one.
        if self._pending_reads and self._read_request_room():
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
                self._read_rounds[ctx] = (self.clock.monotonic(), futs)
                self.stats.read_rounds += 1

    def _read_request_room(self) -> bool:
        bound = self.settings.max_inflight_read_requests
        rounds = self._read_rounds
        if bound <= 0 or len(rounds) < bound:
            return True
        # A request unanswered for an election timeout was lost (a dropped message): it holds no one back any more
        # (its reads still wait for it, until their deadline or a leader change).
        oldest_live = self.clock.monotonic() - self.settings.election_ticks * self._tick_s
        return sum(1 for t, _ in rounds.values() if t > oldest_live) < bound

    def _pipeline_has_room(self) -> bool:
        depth = self.settings.max_inflight_proposals
        raw = self.raw
        return depth <= 0 or raw.role != StateRole.LEADER or raw.last_index - raw.committed < depth

    def _propose_batch(self) -> None:
        props, self._proposals = self._proposals, []
        raw = self.raw
        now_ns = self.clock.time_ns()
        limit = self.settings.max_batch_bytes
        groups: list[list[tuple[Command, _Waiter]]] = [[]]
        size = 0
        for p in props:
            c = p[0]
            if type(c) is HashMark:  # a hash mark is a log entry of its own (see _DriverIO._write_split)
                if groups[-1]:
                    groups.append([])
                groups[-1].append(p)
                groups.append([])
                size = 0
                continue
            sz = len(getattr(c, "key", b"")) + len(getattr(c, "value", b"") or b"") + 32
            if groups[-1] and size + sz > limit:
                groups.append([])
                size = 0
            groups[-1].append(p)
            size += sz
        if not groups[-1]:
            groups.pop()
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
        if raw.role != StateRole.LEADER:
            # Forwarded to the leader: nobody tells this node if the leader drops them, but a leader change is
            # when that happens, and _on_soft_state then fails them (outcome unknown: they may still commit).
            self.stats.commands_forwarded += len(props)
            fwd = self._forwarded_rids
            lead = raw.leader
            for c, _ in props:
                fwd[c.request_id] = lead
        else:
            # Remember where each batch landed: if a different entry is applied there, the batch was lost.
            last = raw.last_index
            first = last - len(groups) + 1
            term = raw.term
            for i, g in enumerate(groups):
                self._inflight_entries[first + i] = (term, [_request_id(c) for c, _ in g])

    # -- results ----------------------------------------------------------------------------------------------
    def _on_applied(self, rd: Ready, results: Sequence[Applied] | None) -> None:
        if self.fsm.alarm_applied:
            self.fsm.alarm_applied = False
            self._check_alarms()
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
            issued = self._read_rounds.pop(rs.ctx, None)
            if issued:
                futs = issued[1]
                self.stats.reads_served += len(futs)
                for f in futs:
                    if not f.done():
                        f.set_result(rs.index)
        aw = self._applied_waiters
        while aw and aw[0][0] <= self.applied:
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
            self._snapshot_status.append((m.to, False))  # one transfer per follower at a time
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
            self._snapshot_status.append((m.to, ok))
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

    def on_snapshot_received(self, frm: int, path: Any) -> None:
        log.info("node %d received a snapshot file %s from node %d", self.id, path, frm)

    def _refresh_membership(self) -> None:
        """Adopt the replicated member table: peers to talk to, client addresses for redirects."""
        members = self.fsm.members()
        if not members:
            return
        self.client_addrs = {m.id: m.client_addr for m in members}
        peers = {m.id: m.peer_addr for m in members if m.id != self.id}
        lead = self.leader_id
        if lead and lead != self.id and lead not in peers and lead in self._peer_addrs:
            # A leader that removed itself keeps leading until we all know the change committed (thesis §4.2.2):
            # keep answering it until the leadership moves on.
            peers[lead] = self._peer_addrs[lead]
        self._peer_addrs = peers
        self.transport.set_peers(peers)
        # Refuse removed nodes, except a removed leader still handing over (above): we must keep answering it.
        self.transport.refuse([n for n in self.fsm.removed_members() if n not in self.client_addrs and n != lead])
        if self.id not in self.client_addrs and self.role != StateRole.LEADER:
            self._mark_removed("it applied its own removal")

    def _mark_removed(self, how: str) -> None:
        """This node is no longer a member: refuse every request from now on, fail those waiting, stop campaigning
        and talking to peers. (A leader that removed itself hands over first, then learns it here as a follower.)"""
        if self.removed:
            return
        self.removed = True
        log.warning("node %d was removed from the cluster (%s): it refuses every request from now on and takes no "
                    "part in elections; stop it (and wipe its data before adding it again)", self.id, how)
        self._fail_all(self.removed_error())
        self.transport.set_peers({})
        self._wake.set()

    def _deliver_results(self, results: Sequence[Applied]) -> None:
        """Resolve the waiters of the commands this node proposed with their ``Applied`` (idempotent: a resolved
        waiter is gone)."""
        me = self.id
        waiters = self._waiters
        for a in results:
            if a.proposer == me:
                w = waiters.pop(a.request_id, None)
                if w is not None and not w.future.done():
                    w.future.set_result(a)

    def _on_soft_state(self, lead: int, role: StateRole) -> None:
        log.info("node %d: %s, leader %s, term %d", self.id, role, lead or "unknown", self.term)
        self._leadership.set()
        self._leadership = asyncio.Event()
        if self.client_addrs.keys() != set(self._peer_addrs) | {self.id}:
            self._refresh_membership()  # drop (or keep) a departed leader's address
        if self._forwarded_rids:
            # Requests forwarded to the previous leader may have been dropped with its leadership, or may still
            # commit: their outcome is unknown. Say so now rather than at the deadline; the client retries them
            # with the same session, and the session table makes the retry apply at most once.
            lost = [rid for rid, to in self._forwarded_rids.items() if to != lead]
            for rid in lost:
                del self._forwarded_rids[rid]
            self._fail_requests(lost, Unavailable(
                "the leader changed while this request was forwarded to it; it may or may not have been applied "
                "(retry with the same session)", applied=APPLIED_UNKNOWN))
        if self._read_rounds and role != StateRole.LEADER:
            # A read round may be dropped by a leader change: fail it fast so the caller retries elsewhere.
            err = NotLeader(lead, self.client_addrs.get(lead, "")) if lead else Unavailable("leader changed; retry")
            for _, futs in self._read_rounds.values():
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
        # Proposed writes may still commit elsewhere: their outcome is unknown.
        for w in self._waiters.values():
            if not w.future.done():
                w.future.set_exception(Unavailable(
                    f"{err.message}; the write may or may not have been applied (retry it with the same session)",
                    applied=APPLIED_UNKNOWN))
        self._waiters.clear()
        for f in self._pending_reads:
            if not f.done():
                f.set_exception(err)
        self._pending_reads.clear()
        for _, futs in self._read_rounds.values():
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
        self._snapshot_pool.shutdown(wait=True)


_PROP = MsgType.PROP


def _incarnation_base() -> int:
    """A random starting point for per-process counters (2^40 apart on average: no overlap between restarts)."""
    return random.SystemRandom().getrandbits(60) + 1


def _request_id(c: Command) -> int:
    return c.request_id


class _DriverIO:
    """The daemon's ReadyIO: the transport, the LMDB writer thread, and the node's waiters."""

    def __init__(self, node: Node, loop: asyncio.AbstractEventLoop) -> None:
        self.node = node
        self.loop = loop

    def send(self, msgs: Sequence[Message]) -> None:
        self.node.send_messages(msgs)

    def persist(self, rd: Ready) -> asyncio.Future[Any] | None:
        """Submit ``rd``'s write to the writer thread now (so writes run in the order of the calls); None if the
        Ready has nothing to write."""
        if not (rd.entries or rd.hard_state is not None or rd.snapshot is not None or rd.committed_entries):
            return None
        t0 = time.perf_counter_ns()
        fut = self.loop.run_in_executor(self.node._writer, self._write, rd)
        stats = self.node.stats

        def timed(_: object) -> None:
            stats.persist_us += (time.perf_counter_ns() - t0) // 1000

        fut.add_done_callback(timed)
        return fut

    def _write(self, rd: Ready) -> Any:
        """On the writer thread: one transaction, one sync (LmdbLogStore.write). Once a write has failed, every
        later one (already queued behind it) fails too without writing: their entries would follow a gap."""
        node = self.node
        if node._write_failed is not None:
            raise DurableStorageError(f"an earlier write failed ({node._write_failed})", str(node.store.path))
        try:
            return self._write_ready(rd)
        except BaseException as e:
            node._write_failed = e
            raise

    def _write_ready(self, rd: Ready) -> Any:
        node = self.node
        ents = rd.committed_entries
        fsm = node.fsm
        loop = self.loop
        deliver = node._deliver_results

        snap = rd.snapshot
        restore_path = node.snapshot_dir / snap.data.decode() if snap is not None else None
        if restore_path is not None and not restore_path.is_file():
            raise DurableStorageError(f"snapshot file {restore_path} is missing", str(restore_path))

        def apply(txn: Any) -> Any:
            if restore_path is not None:
                # Install the leader's state from the verified file, in the same transaction as the log reset.
                fsm.restore_from(txn, lambda: iter_records(restore_path))
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
        c0 = time.thread_time_ns()
        conf = None
        if any(e.type == EntryType.CONF_CHANGE for e in ents):
            # The membership after these entries, stored with them and the applied index (the same pure function
            # the core and the state machine's member table use).
            conf = node.store.conf_state()
            for e in ents:
                if e.type == EntryType.CONF_CHANGE:
                    conf = conf_state_after(conf, decode_conf_change(e.data))
        if snap is not None and conf is None:
            conf = snap.metadata.conf_state
        applied = ents[-1].index if ents else (snap.metadata.index if snap is not None else None)
        marks = [i for i, e in enumerate(ents) if is_hash_mark(e.data)] if ents else []
        if not marks:
            result = node.store.write(
                hard_state=rd.hard_state,
                entries=rd.entries,
                snapshot=snap,
                store_snapshot_data=False,
                applied=applied,
                apply=apply if ents or snap is not None else None,
                conf_state=conf,
                sync=rd.must_sync and node.settings.sync,
            )
        else:
            result = self._write_split(rd, ents, marks, restore_path)
        self._maybe_compact()
        st = node.stats
        st.write_us += (time.perf_counter_ns() - t0) // 1000
        st.write_cpu_us += (time.thread_time_ns() - c0) // 1000
        st.writes += 1
        st.entries_persisted += len(rd.entries)
        return result

    def _write_split(self, rd: Ready, ents: Sequence[Any], marks: list[int], restore_path: Any) -> list[Applied]:
        """The write of a Ready whose committed entries hold hash marks: one transaction per part, each part ending
        with a mark, so that right after a mark's commit the state is exactly "applied up to the mark" and a read
        transaction opened then (before the next part) hashes it. The first part carries the log entries, the hard
        state and the snapshot; later parts only apply."""
        node = self.node
        fsm, store, loop, deliver = node.fsm, node.store, self.loop, node._deliver_results
        bounds = [*[m + 1 for m in marks], len(ents)]
        results: list[Applied] = []
        conf = rd.snapshot.metadata.conf_state if rd.snapshot is not None else store.conf_state()
        lo = 0
        for n, hi in enumerate(bounds):
            part = ents[lo:hi]
            if not part and n:
                break
            first = n == 0
            changed = first and rd.snapshot is not None
            for e in part:
                if e.type == EntryType.CONF_CHANGE:
                    conf = conf_state_after(conf, decode_conf_change(e.data))
                    changed = True

            def apply(txn: Any, part: Sequence[Any] = part, first: bool = first) -> Any:
                if first and restore_path is not None:
                    fsm.restore_from(txn, lambda: iter_records(restore_path))
                out = fsm.apply(txn, part)
                if out:
                    loop.call_soon_threadsafe(deliver, out)
                return out

            out = store.write(
                hard_state=rd.hard_state if first else None,
                entries=rd.entries if first else (),
                snapshot=rd.snapshot if first else None,
                store_snapshot_data=False,
                applied=part[-1].index if part else None,
                apply=apply,
                conf_state=conf if changed else None,
                sync=first and rd.must_sync and node.settings.sync,
            )
            results.extend(cast("list[Applied]", out) or [])
            if n < len(marks):
                node.hash_state_now(ents[marks[n]].index)
            lo = hi
        return results

    def _maybe_compact(self) -> None:
        """On the writer thread, after a write: drop applied log entries beyond the retention, in bounded chunks so
        no single write transaction runs long. The state machine is durable in LMDB, so nothing else is needed: a
        follower that needs dropped entries is sent a snapshot of the state."""
        node = self.node
        store = node.store
        s = node.settings
        first = store.first_index()
        upto = store.applied_index() - s.compact_keep_entries
        if upto - first + 1 >= s.compact_after_entries:
            t0 = time.perf_counter_ns()
            store.compact(min(upto, first + COMPACT_CHUNK - 1))
            node.stats.compactions += 1
            node.stats.write_us += (time.perf_counter_ns() - t0) // 1000

    def applied(self, rd: Ready, results: Any) -> None:
        self.node._on_applied(rd, results)


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
