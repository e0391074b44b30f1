"""The async :class:`Client` (see :mod:`raftkv.client` for what it guarantees): sessions, leader discovery and
redirects, the retry loop under one deadline, read-your-writes, and coalescing concurrent operations into Batch
RPCs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeVar

import grpc
import grpc.aio

from ..errors import (
    APPLIED_UNKNOWN,
    Compacted,
    ConditionFailed,
    ConfigError,
    DataCorruption,
    InvalidArgument,
    LeaseNotFound,
    NotLeader,
    RaftKVError,
    Removed,
    Timeout,
    Unavailable,
)
from ..proto.v1 import kv_pb2, kv_pb2_grpc
from .coalescer import _BATCH_FIELDS, _EXPIRED, _EXPIRED_MD, _GRANTED, _UNARY, _Coalescer, _fail, _Queued, _settle
from .leases import KeepAliver, Lease
from .models import (
    _I64,
    _U64,
    CONSISTENCY_LEVELS,
    Compare,
    Consistency,
    DeleteResult,
    KeyValue,
    LeaseInfo,
    MemberList,
    NodeStatus,
    OnConflict,
    PutResult,
    RangeResult,
    TxnOp,
    TxnOpOutcome,
    TxnResult,
    WatchBatch,
    _int,
    _key,
    _kv,
    _member,
    _node_status,
    _to_bytes,
    _vclock,
    _vclock_pb,
    _watch_event,
)
from .recipes import Election, Lock
from .retry import _OP_NAMES, BACKOFF_MAX_S, BACKOFF_MIN_S, _grouped, _n, _nothing_at, _nothing_listening
from .rpc_errors import _batch_error_rpc, _rpc_error, error_from_rpc, transport_failure

__all__ = ["Client"]


class _Response(Protocol):
    @property
    def header(self) -> kv_pb2.Header: ...


R = TypeVar("R", bound=_Response)

_CONSISTENCY_PB = {
    "linearizable": kv_pb2.LINEARIZABLE,
    "lease": kv_pb2.LEASE,
    "stale": kv_pb2.STALE,
    "bounded": kv_pb2.BOUNDED,
}

_U32_MAX = (1 << 32) - 1

# Reconnect quickly to a node that comes back (gRPC's defaults wait up to 2 minutes between connection attempts).
_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]


def _conditions(
    key: bytes,
    if_version: int | None,
    if_mod_revision: int | None,
    if_value: bytes | str | None,
    if_absent: bool,
    context: Mapping[int, int] | None,
) -> list[kv_pb2.Compare]:
    out = []
    if if_version is not None:
        out.append(Compare(key, "version", "==", if_version).to_pb())
    if if_mod_revision is not None:
        out.append(Compare(key, "mod_revision", "==", if_mod_revision).to_pb())
    if if_value is not None:
        out.append(Compare(key, "value", "==", if_value).to_pb())
    if if_absent:
        out.append(Compare(key, "exists", "==", False).to_pb())
    if context is not None:
        out.append(Compare(key, "vclock", "==", context).to_pb())
    return out


def _consistency(c: Consistency | str) -> kv_pb2.Consistency:
    try:
        return _CONSISTENCY_PB[c.lower()]
    except (KeyError, AttributeError):
        raise InvalidArgument(f"unknown consistency {c!r}: expected one of {', '.join(CONSISTENCY_LEVELS)}") from None


def _local_read(level: kv_pb2.Consistency) -> bool:
    return level in (kv_pb2.STALE, kv_pb2.BOUNDED)


# -- the async client -------------------------------------------------------------------------------------------
class Client:
    """An async raftkv client over one lazily opened gRPC channel per endpoint. See :mod:`raftkv.client`.

    ``timeout_s`` bounds every call, retries included. ``client_id`` is the base of the session ids (random when
    omitted); two live clients must never share one. ``lanes`` is how many writes may be in flight at once (more
    wait for a free lane). ``coalesce`` sends concurrent puts, gets, deletes and increments together in ``Batch``
    RPCs (see :mod:`raftkv.client`). ``single_attempt`` (with exactly one endpoint): one RPC per call, to that
    endpoint, no retries, redirects or coalescing; its error is raised as it came (``applied`` says what it did).
    Create it anywhere; use it on one event loop."""

    coalesce_max_inflight = 2
    """Per endpoint, at most this many calls sent by the coalescer are in flight; more operations queue."""
    coalesce_max_ops = 256
    """At most this many queued operations go in one Batch RPC."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout_s: float = 10.0,
        client_id: int | None = None,
        lanes: int = 64,
        coalesce: bool = True,
        single_attempt: bool = False,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
        eps = list(dict.fromkeys(endpoints))
        if not eps:
            raise ConfigError("the client needs at least one endpoint (HOST:PORT)")
        if single_attempt and len(eps) != 1:
            raise ConfigError(f"single_attempt pins the client to one endpoint; got {len(eps)}: {', '.join(eps)}")
        self._single_attempt = single_attempt
        if timeout_s <= 0:
            raise ConfigError(f"timeout_s must be positive, got {timeout_s}")
        if lanes < 1:
            raise ConfigError(f"lanes must be at least 1, got {lanes}")
        self._endpoints = eps
        self._timeout_s = float(timeout_s)
        self._rng = random.Random()
        base = client_id if client_id is not None else random.SystemRandom().getrandbits(64)
        self._client_id_base = base % _U64 or 1
        self._lanes = lanes
        # Sequence numbers start at the wall clock in microseconds, so a client restarted with the same explicit
        # client_id continues above the seqs its predecessor used (the cluster drops a seq below the last one).
        self._seqs = [time.time_ns() // 1000] * lanes
        self._idle: list[int] = list(range(lanes - 1, -1, -1))  # a stack: the lowest lane is reused first
        self._lane_sem: asyncio.Semaphore | None = None  # created on first use, on the client's loop
        self._channels: dict[str, tuple[grpc.aio.Channel, kv_pb2_grpc.KVStub]] = {}
        self._leader: str | None = None
        self._cursor = 0
        self._spread_cursor = random.randrange(1 << 16)  # where local (stale/bounded) reads start their round robin
        self._seen_index = 0
        self._removed: set[str] = set()  # endpoints that answered Removed: they serve nothing any more
        self._closed = False
        self._coalesce = coalesce and not single_attempt
        self._coalescers: dict[str, _Coalescer] = {}
        self._batch_tasks: set[asyncio.Task[None]] = set()
        self._keepalive: KeepAliver | None = None

    # -- properties ------------------------------------------------------------------------------------------
    @property
    def endpoints(self) -> list[str]:
        return list(self._endpoints)

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    @property
    def client_id(self) -> int:
        """The base client id; lane ``i`` uses ``client_id + i`` (wrapping, never 0)."""
        return self._client_id_base

    @property
    def leader(self) -> str | None:
        """The client address of the node this client sends writes to: the leader, or a follower that took the last
        write and forwards writes to the leader (None until the first write or redirect)."""
        return self._leader

    @property
    def seen_index(self) -> int:
        """The highest applied index seen in any response (sent as ``min_index`` on reads)."""
        return self._seen_index

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._keepalive is not None:
            await self._keepalive.close()
        self._closed = True
        closed = RaftKVError("the client is closed")
        for co in self._coalescers.values():  # never sent: they fail at once, as a call on a closed client does
            queued, co.queue = co.queue, []
            for q in queued:
                if not q.future.done():
                    q.future.set_exception(closed)
        channels = list(self._channels.values())
        self._channels.clear()
        for ch, _ in channels:
            await ch.close()  # cancels the calls in flight, Batch calls included
        if self._batch_tasks:  # they hand their operations the outcome and end
            await asyncio.gather(*self._batch_tasks, return_exceptions=True)

    # -- the API ---------------------------------------------------------------------------------------------
    async def put(
        self,
        key: bytes | str,
        value: bytes | str,
        *,
        if_version: int | None = None,
        if_mod_revision: int | None = None,
        if_value: bytes | str | None = None,
        if_absent: bool = False,
        context: Mapping[int, int] | None = None,
        on_conflict: OnConflict = "reject",
        lease: int | Lease = 0,
    ) -> PutResult:
        """Set ``key`` to ``value``. Returns the key's metadata after the write.

        Conditional writes (all given conditions must hold, else :class:`~raftkv.errors.ConditionFailed` with the
        key's current state in ``.current``): ``if_version`` / ``if_mod_revision`` / ``if_value`` equal the current
        ones (a revision is never reused: ``if_mod_revision`` of a put's own ``mod_revision`` fails once any later
        write touched the key), ``if_absent`` the key does not exist, ``context`` the current vector clock equals
        this one (the clock a ``get`` returned: no write happened since; a clock read before the key was deleted
        never matches one after it was created again).

        ``on_conflict="siblings"`` with a ``context`` (and no other condition): when writes the context does not
        cover happened meanwhile, keep this value beside them as a sibling instead of failing; the values the
        context covers are replaced. A later ``get`` returns every value (``KeyValue.values``) and one ``vclock``
        covering them all; a put with that clock as ``context`` resolves them into one value.

        ``lease``: attach the key to that lease (a :class:`Lease` or its id): the key is deleted when the lease ends
        (:class:`~raftkv.errors.LeaseNotFound` if it does not exist). Without one, a key attached to a lease is
        detached."""
        k = _key(key)
        v = _to_bytes(value, "value")
        lease_id = _int(lease.id if isinstance(lease, Lease) else lease, "a lease id", 0, _I64)
        if on_conflict not in ("reject", "siblings"):
            raise InvalidArgument(f"on_conflict is 'reject' or 'siblings', not {on_conflict!r}")
        if on_conflict == "siblings":
            if context is None:
                raise InvalidArgument("on_conflict='siblings' needs the context a get returned")
            if if_version is not None or if_mod_revision is not None or if_value is not None or if_absent:
                raise InvalidArgument("a put that keeps siblings takes no conditions besides its context")
            conds: list[kv_pb2.Compare] = []
        else:
            conds = _conditions(k, if_version, if_mod_revision, if_value, if_absent, context)
        async with self._session() as session:
            req = kv_pb2.PutRequest(key=k, value=v, session=session, conditions=conds, lease=lease_id)
            if on_conflict == "siblings":
                assert context is not None
                req.context.CopyFrom(_vclock_pb(context))
                req.on_conflict = kv_pb2.SIBLINGS
            resp = await self._call("Put", lambda _remaining: req, kv_pb2.PutResponse, write=True)
        kv = resp.kv
        return PutResult(
            kv.key or k, kv.create_revision, kv.mod_revision, kv.version, _vclock(kv.vclock), resp.header.index,
            len(kv.siblings),
        )

    async def delete(
        self,
        key: bytes | str,
        *,
        if_version: int | None = None,
        if_mod_revision: int | None = None,
        if_value: bytes | str | None = None,
        context: Mapping[int, int] | None = None,
    ) -> DeleteResult:
        """Delete ``key``; ``deleted`` is False if it did not exist. The conditions are those of :meth:`put`."""
        k = _key(key)
        conds = _conditions(k, if_version, if_mod_revision, if_value, False, context)
        async with self._session() as session:
            req = kv_pb2.DeleteRequest(key=k, session=session, conditions=conds)
            resp = await self._call("Delete", lambda _remaining: req, kv_pb2.DeleteResponse, write=True)
        self._observe(resp.index)
        return DeleteResult(resp.deleted, resp.index or resp.header.index, resp.header.revision)

    async def cas(self, key: bytes | str, expected: bytes | str | None, new: bytes | str) -> bool:
        """Compare-and-set: set ``key`` to ``new`` if its value is ``expected`` (None: if it does not exist).
        Returns whether it swapped."""
        try:
            if expected is None:
                await self.put(key, new, if_absent=True)
            else:
                await self.put(key, new, if_value=expected)
        except ConditionFailed:
            return False
        return True

    async def incr(self, key: bytes | str, delta: int = 1) -> int:
        """Atomically add ``delta`` to the integer at ``key`` (ASCII decimal; missing = 0); returns the new value.
        Retries are exactly-once: a retried increment that already applied is not applied again."""
        k = _key(key)
        async with self._session() as session:
            req = kv_pb2.IncrRequest(key=k, delta=_int(delta, "an increment", -_I64, _I64), session=session)
            resp = await self._call("Incr", lambda _remaining: req, kv_pb2.IncrResponse, write=True)
        return int(resp.value)

    async def compact(self, revision: int) -> int:
        """Drop the history below ``revision`` on every replica (through the log); returns the compacted revision
        afterwards (a higher one compacted earlier stays). Reads and watches below it are refused from then on."""
        rev = _int(revision, "a revision", 1, _U64)
        async with self._session() as session:
            req = kv_pb2.CompactRequest(revision=rev, session=session)
            resp = await self._call("Compact", lambda _remaining: req, kv_pb2.CompactResponse, write=True)
        return int(resp.compacted)

    async def txn(
        self, compares: Sequence[Compare] = (), success: Sequence[TxnOp] = (), failure: Sequence[TxnOp] = ()
    ) -> TxnResult:
        """A multi-key transaction: if every compare holds run ``success``, else ``failure``; atomically, as one log
        entry. Reads (``TxnOp.get``) see the effects of the operations before them."""
        req_c = [c.to_pb() for c in compares]
        req_s = [o.to_pb() for o in success]
        req_f = [o.to_pb() for o in failure]
        async with self._session() as session:
            req = kv_pb2.TxnRequest(compares=req_c, success=req_s, failure=req_f, session=session)
            resp = await self._call("Txn", lambda _remaining: req, kv_pb2.TxnResponse, write=True)
        idx = resp.header.index
        ran = success if resp.succeeded else failure
        outcomes = tuple(
            TxnOpOutcome(
                r.found,
                _kv(r.kv, resp.header) if r.HasField("kv") else None,
                int(r.value) if op.kind == "incr" and not r.error else None,
                r.error,
            )
            for op, r in zip(ran, resp.results, strict=False)
        )
        return TxnResult(resp.succeeded, outcomes, idx, resp.header.revision)

    # -- leases ------------------------------------------------------------------------------------------------
    def _keepaliver(self) -> KeepAliver:
        if self._keepalive is None:
            self._keepalive = KeepAliver(self)
        return self._keepalive

    async def grant(self, ttl_s: int, *, lease_id: int = 0, keep_alive: bool = True) -> Lease:
        """Grant a lease of ``ttl_s`` seconds (raised to the cluster's minimum, 1.5 election timeouts), under
        ``lease_id`` (0: the cluster picks one). With ``keep_alive`` this client renews it until it is revoked,
        stopped or the client closed; else it expires ``ttl_s`` after the grant unless renewed. Keys put with it are
        deleted, in one revision, when it ends."""
        ttl = _int(ttl_s, "a TTL", 1, 9_000_000_000)
        lid = _int(lease_id, "a lease id", 0, _I64)
        sent = asyncio.get_running_loop().time()
        async with self._session() as session:
            req = kv_pb2.LeaseGrantRequest(ttl=ttl, id=lid, session=session)
            resp = await self._call("LeaseGrant", lambda _r: req, kv_pb2.LeaseGrantResponse, write=True)
        lease = Lease(self, int(resp.id), int(resp.ttl), sent, resp.header.index)
        if keep_alive:
            self._keepaliver().add(lease)
        return lease

    async def revoke(self, lease: int | Lease) -> int:
        """End a lease now: every key attached to it is deleted, all in one revision (returned). Raises
        :class:`~raftkv.errors.LeaseNotFound` if it does not exist (it expired, or was revoked)."""
        lid = _int(lease.id if isinstance(lease, Lease) else lease, "a lease id", 1, _I64)
        if self._keepalive is not None:
            self._keepalive.discard(lid)
        async with self._session() as session:
            req = kv_pb2.LeaseRevokeRequest(id=lid, session=session)
            resp = await self._call("LeaseRevoke", lambda _r: req, kv_pb2.LeaseRevokeResponse, write=True)
        return int(resp.header.revision)

    async def time_to_live(self, lease: int | Lease, *, keys: bool = False) -> LeaseInfo:
        """A lease as the leader times it: seconds left (-1: no such lease), the TTL granted, and (``keys``) the keys
        attached."""
        lid = _int(lease.id if isinstance(lease, Lease) else lease, "a lease id", 1, _I64)
        req = kv_pb2.LeaseTimeToLiveRequest(id=lid, keys=keys)
        resp = await self._call("LeaseTimeToLive", lambda _r: req, kv_pb2.LeaseTimeToLiveResponse)
        return LeaseInfo(int(resp.id), int(resp.ttl), int(resp.granted_ttl), tuple(resp.keys))

    async def leases(self) -> list[int]:
        """The ids of every lease (granted and not ended)."""
        resp = await self._call("LeaseList", lambda _r: kv_pb2.LeaseListRequest(), kv_pb2.LeaseListResponse)
        return [int(i) for i in resp.ids]

    async def keep_alive(self, lease_id: int) -> Lease:
        """Take over renewing an existing lease (granted by another process, say): returns its handle, renewed by
        this client from now on. :class:`~raftkv.errors.LeaseNotFound` if it does not exist."""
        sent = asyncio.get_running_loop().time()
        info = await self.time_to_live(lease_id)
        if not info.exists:
            raise LeaseNotFound(f"lease {lease_id} not found: it expired or was revoked, or was never granted")
        lease = Lease(self, info.id, info.granted_ttl, sent - info.granted_ttl + max(0, info.ttl - 1), self._seen_index)
        lease.next_due = sent  # renew at once
        self._keepaliver().add(lease)
        return lease

    def lock(self, name: bytes | str, *, ttl_s: int = 10, lease: Lease | None = None) -> Lock:
        """A distributed lock (:class:`~raftkv.client.recipes.Lock`): ``async with client.lock("jobs") as held:``,
        ``held.revision`` the fencing revision. Its own lease of ``ttl_s`` (or ``lease``) is kept alive while held:
        if the holder dies, the lock is released when the lease expires."""
        return Lock(self, name, ttl_s=ttl_s, lease=lease)

    def election(self, name: bytes | str, *, ttl_s: int = 10, lease: Lease | None = None) -> Election:
        """Leader election under ``name`` (:class:`~raftkv.client.recipes.Election`): campaign, proclaim, resign,
        leader, observe."""
        return Election(self, name, ttl_s=ttl_s, lease=lease)

    # -- membership and leadership ---------------------------------------------------------------------------
    async def member_list(self) -> MemberList:
        """The members with their addresses, and the cluster id (from any node)."""
        resp = await self._call("MemberList", lambda _r: kv_pb2.MemberListRequest(), kv_pb2.MemberListResponse)
        return MemberList(tuple(_member(m) for m in resp.members), resp.cluster_id)

    async def member_add(self, node_id: int, peer_addr: str, client_addr: str, *, learner: bool = False) -> MemberList:
        """Add a member (through the leader). Start the new node afterwards with ``raftkv serve --join
        --join-cluster-id <the returned cluster id>``; add it as a learner to let it catch up before it votes."""
        node_id = _int(node_id, "a node id", 1, _U64)
        req = kv_pb2.MemberAddRequest(id=node_id, peer_addr=peer_addr, client_addr=client_addr, learner=learner)
        resp = await self._call("MemberAdd", lambda _r: req, kv_pb2.MemberChangeResponse, write=True)
        return MemberList(tuple(_member(m) for m in resp.members), resp.cluster_id)

    async def member_promote(self, node_id: int) -> MemberList:
        req = kv_pb2.MemberPromoteRequest(id=_int(node_id, "a node id", 1, _U64))
        resp = await self._call("MemberPromote", lambda _r: req, kv_pb2.MemberChangeResponse, write=True)
        return MemberList(tuple(_member(m) for m in resp.members), resp.cluster_id)

    async def member_remove(self, node_id: int, *, force: bool = False) -> MemberList:
        req = kv_pb2.MemberRemoveRequest(id=_int(node_id, "a node id", 1, _U64), force=force)
        resp = await self._call("MemberRemove", lambda _r: req, kv_pb2.MemberChangeResponse, write=True)
        return MemberList(tuple(_member(m) for m in resp.members), resp.cluster_id)

    async def check_cluster(self) -> kv_pb2.CheckClusterResponse:
        """The cross-replica consistency check, through the leader: every member's state hash right after one log
        entry, compared (``raftkv check --cluster``). A member whose hash differs from the majority's gets its
        corruption alarm."""
        req = kv_pb2.CheckClusterRequest()
        return await self._call("CheckCluster", lambda _r: req, kv_pb2.CheckClusterResponse, write=True)

    async def transfer_leader(self, to: int = 0) -> int:
        """Hand leadership to node ``to`` (0: the most up-to-date voter); returns the new leader's id."""
        req = kv_pb2.TransferLeaderRequest(to=_int(to, "a node id", 0, _U64))
        resp = await self._call("TransferLeader", lambda _r: req, kv_pb2.TransferLeaderResponse, write=True)
        return int(resp.leader_id)

    async def save_snapshot(self, path: str | os.PathLike[str], *, endpoint: str | None = None) -> int:
        """Stream a snapshot of the state machine from a node (the believed leader, or ``endpoint``) into ``path``;
        returns the log index it reflects. (``raftkv.backup.save`` adds fsync, rename and a checksum pass.)"""
        ep = endpoint or self._pick()
        _, stub = self._channel(ep)
        index = 0
        try:
            with open(path, "wb") as f:
                async for msg in stub.Snapshot(kv_pb2.SnapshotRequest(), timeout=max(self._timeout_s, 300.0)):
                    if msg.index:
                        index = msg.index
                    f.write(msg.chunk)
        except grpc.aio.AioRpcError as e:
            raise error_from_rpc(e) from None
        return index

    async def watch(
        self,
        key: bytes | str,
        *,
        prefix: bool = False,
        range_end: bytes | str = b"",
        start_revision: int = 0,
        prev_kv: bool = False,
        no_put: bool = False,
        no_delete: bool = False,
        progress_notify_ms: int = 0,
    ) -> AsyncIterator[WatchBatch]:
        """Follow the changes of ``key`` (with ``prefix``: of every key starting with it; with ``range_end``: of the
        keys ``[key, range_end)``, b"\\0" for every key from ``key`` on), from ``start_revision`` (0: from now).
        Yields batches of events in revision order, each event once, with no gap: when a node fails or ends the
        watch (the node stopping, this reader too slow), it watches again on another node from the revision after
        the last one delivered. Raises :class:`Compacted` if the history it needs was compacted (read the state at
        ``compacted_revision``, then watch from the next revision), :class:`InvalidArgument` for a bad range."""
        k = _to_bytes(key, "key")
        end = _to_bytes(range_end, "range_end")
        next_rev = _int(start_revision, "a start revision", 0, _U64)
        progress = _int(progress_notify_ms, "progress_notify_ms", 0, 1 << 32)
        backoff = BACKOFF_MIN_S
        while True:
            ep = self._watch_endpoint()
            _, stub = self._channel(ep)
            req = kv_pb2.WatchRequest(key=k, range_end=end, prefix=prefix, start_revision=next_rev, prev_kv=prev_kv,
                                      no_put=no_put, no_delete=no_delete, progress_notify_ms=progress)
            call = stub.Watch(req)
            try:
                async for resp in call:
                    backoff = BACKOFF_MIN_S
                    if resp.created:
                        if not next_rev:
                            next_rev = resp.header.revision + 1  # "from now" means from here on, also on resume
                        continue
                    if resp.canceled:
                        if resp.compact_revision:
                            raise Compacted(resp.cancel_reason, resp.compact_revision)
                        break  # the node ended it (stopping, or we read too slowly): watch again from next_rev
                    events = tuple(_watch_event(ev, resp.header) for ev in resp.events)
                    next_rev = max(next_rev, resp.header.revision + 1)
                    yield WatchBatch(events, resp.header.revision)
            except grpc.aio.AioRpcError as e:
                err = error_from_rpc(e, write=False, endpoint=ep)
                if isinstance(err, (InvalidArgument, Compacted)):
                    raise err from None
                self._failed(ep)
            finally:
                call.cancel()
            await asyncio.sleep(self._rng.uniform(backoff / 2, backoff))
            backoff = min(BACKOFF_MAX_S, backoff * 2)

    async def get(
        self,
        key: bytes | str,
        *,
        consistency: Consistency | str = "linearizable",
        min_index: int | None = None,
        max_staleness_ms: int = 0,
        fail_if_stale: bool = False,
        revision: int = 0,
    ) -> KeyValue | None:
        """The key's value and metadata, or None if it does not exist.

        ``min_index`` defaults to the highest index this client has seen (read-your-writes even on a stale read);
        pass 0 to opt out. ``max_staleness_ms`` applies to ``consistency="bounded"``. ``revision``: the key as it
        was right after that revision (0: now); :class:`Compacted` below the compacted revision."""
        k = _key(key)
        level = _consistency(consistency)
        floor = self._seen_index if min_index is None else _int(min_index, "min_index", 0, _U64)
        rev = _int(revision, "a revision", 0, _U64)

        def request(remaining: float) -> kv_pb2.GetRequest:
            read = self._read_options(level, floor, max_staleness_ms, fail_if_stale, remaining)
            return kv_pb2.GetRequest(key=k, read=read, revision=rev)

        resp = await self._call("Get", request, kv_pb2.GetResponse, spread=_local_read(level))
        if not resp.found:
            return None
        return _kv(resp.kv, resp.header)

    async def range(
        self,
        prefix: bytes | str = b"",
        *,
        start_after: bytes | str = b"",
        limit: int = 1000,
        keys_only: bool = False,
        consistency: Consistency | str = "linearizable",
        min_index: int | None = None,
        max_staleness_ms: int = 0,
        revision: int = 0,
    ) -> RangeResult:
        """Up to ``limit`` keys starting with ``prefix``, in key order, after ``start_after``. ``more`` says whether
        more keys match (continue with ``start_after=result.kvs[-1].key``). ``revision``: as the store was right
        after that revision (0: now; the result's ``revision`` says which one it reflects)."""
        p = _to_bytes(prefix, "prefix")
        sa = _to_bytes(start_after, "start_after")
        if not 1 <= limit <= 10_000:
            raise InvalidArgument(f"limit must be between 1 and 10000, got {limit}")
        level = _consistency(consistency)
        floor = self._seen_index if min_index is None else _int(min_index, "min_index", 0, _U64)
        rev = _int(revision, "a revision", 0, _U64)

        def request(remaining: float) -> kv_pb2.RangeRequest:
            read = self._read_options(level, floor, max_staleness_ms, False, remaining)
            return kv_pb2.RangeRequest(prefix=p, start_after=sa, limit=limit, keys_only=keys_only, read=read,
                                       revision=rev)

        resp = await self._call("Range", request, kv_pb2.RangeResponse, spread=_local_read(level))
        idx = resp.header.index
        return RangeResult(tuple(_kv(kv, resp.header) for kv in resp.kvs), resp.more, idx, resp.header.revision)

    async def range_all(
        self,
        prefix: bytes | str = b"",
        *,
        start_after: bytes | str = b"",
        page_size: int = 1000,
        keys_only: bool = False,
        consistency: Consistency | str = "linearizable",
        revision: int = 0,
    ) -> AsyncIterator[KeyValue]:
        """Every key with ``prefix``, page by page, all as of one revision: the first page's (or ``revision``), so
        the pages together are one consistent state (:class:`Compacted` if that revision is compacted meanwhile)."""
        after = _to_bytes(start_after, "start_after")
        while True:
            page = await self.range(
                prefix, start_after=after, limit=page_size, keys_only=keys_only, consistency=consistency,
                revision=revision,
            )
            for kv in page.kvs:
                yield kv
            if not page.more or not page.kvs:
                return
            after = page.kvs[-1].key
            revision = page.revision

    async def status(self, endpoint: str | None = None) -> NodeStatus:
        """The status of one node: ``endpoint``, or else the first one that answers (the leader is asked first).
        Raises :class:`Unavailable` when no node answers."""
        req = kv_pb2.StatusRequest()
        if endpoint is not None:
            resp = await self._call("Status", lambda _r: req, kv_pb2.StatusResponse, endpoint=endpoint)
            return _node_status(endpoint, resp)
        box: list[str] = []
        resp = await self._call("Status", lambda _r: req, kv_pb2.StatusResponse, endpoint_box=box)
        return _node_status(box[0] if box else "", resp)

    async def cluster_status(self, *, timeout_s: float | None = None, members: bool = False) -> list[NodeStatus]:
        """The status of every endpoint, asked in parallel (one attempt each); unreachable nodes have
        ``reachable=False`` and ``error`` (a few words: "connection refused", "no answer within 1s", ...).

        ``members``: also ask the members that the nodes which answered know of but that are not endpoints (after
        the endpoints, in id order), so that every member of the cluster is there."""
        t = self._timeout_s if timeout_s is None else timeout_s

        async def one(ep: str) -> NodeStatus:
            try:
                _, stub = self._channel(ep)
                resp = await stub.Status(kv_pb2.StatusRequest(), timeout=t)
            except grpc.aio.AioRpcError as e:
                reason = transport_failure(e)
                if reason == "no answer within the deadline":
                    reason = f"no answer within {t:g}s"
                return NodeStatus(ep, False, client_addr=ep, error=reason or error_from_rpc(e).message)
            return _node_status(ep, resp)

        out = list(await asyncio.gather(*(one(ep) for ep in self._endpoints)))
        if members:
            asked = set(self._endpoints)
            more: dict[str, int] = {}
            for st in out:
                for mid, _peer, client in st.members:
                    if client and client not in asked:
                        more.setdefault(client, mid)
            extra = sorted(more, key=lambda c: more[c])
            out += await asyncio.gather(*(one(ep) for ep in extra))
        return out

    # -- internals -------------------------------------------------------------------------------------------
    def _read_options(
        self, level: kv_pb2.Consistency, floor: int, max_staleness_ms: int, fail_if_stale: bool, remaining: float
    ) -> kv_pb2.ReadOptions:
        return kv_pb2.ReadOptions(
            consistency=level,
            min_index=floor,
            max_staleness_ms=min(max(0, max_staleness_ms), _U32_MAX),
            fail_if_stale=fail_if_stale,
            timeout_ms=max(1, min(int(remaining * 1000), _U32_MAX)),
        )

    def _observe(self, index: int) -> None:
        if index > self._seen_index:
            self._seen_index = index

    def _channel(self, endpoint: str) -> tuple[grpc.aio.Channel, kv_pb2_grpc.KVStub]:
        if self._closed:
            raise RaftKVError("the client is closed")
        ch = self._channels.get(endpoint)
        if ch is None:
            channel = grpc.aio.insecure_channel(endpoint, options=_CHANNEL_OPTIONS)
            ch = (channel, kv_pb2_grpc.KVStub(channel))  # type: ignore[no-untyped-call]
            self._channels[endpoint] = ch
        return ch

    def _pick(self) -> str:
        removed = self._removed
        if self._leader and self._leader not in removed:
            return self._leader
        eps = self._endpoints
        n = len(eps)
        for i in range(n):
            ep = eps[(self._cursor + i) % n]
            if ep not in removed:
                return ep
        return eps[self._cursor % n]

    def _watch_endpoint(self) -> str:
        """Where a watch goes: any node serves one from its applied state, so watches are spread round robin over
        the endpoints but the leader's (while another answers): fanning events out to watchers costs the node CPU
        that the leader needs for writes."""
        live = [e for e in self._endpoints if e not in self._removed]
        others = [e for e in live if e != self._leader] or live or self._endpoints
        self._spread_cursor += 1
        return others[self._spread_cursor % len(others)]

    def _failed(self, endpoint: str) -> None:
        """``endpoint`` could not serve: forget it as leader and move on to the next endpoint (once, even if many
        concurrent requests report the same failure)."""
        if self._leader == endpoint:
            self._leader = None
        if self._endpoints[self._cursor % len(self._endpoints)] == endpoint:
            self._cursor += 1

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[kv_pb2.Session]:
        """Hold an idle lane (session) for the whole life of one write, with that lane's next sequence number; the
        write's retries reuse it. At most one request per session id is ever outstanding."""
        if self._lane_sem is None:
            self._lane_sem = asyncio.Semaphore(self._lanes)
        await self._lane_sem.acquire()
        lane = self._idle.pop()  # the semaphore guarantees an idle lane
        try:
            self._seqs[lane] += 1
            client_id = (self._client_id_base + lane - 1) % (_U64 - 1) + 1
            yield kv_pb2.Session(client_id=client_id, seq=self._seqs[lane])
        finally:
            self._idle.append(lane)
            self._lane_sem.release()

    # -- coalescing ------------------------------------------------------------------------------------------
    async def _coalesced(self, ep: str, method: str, req: Any, attempt_s: float) -> Any:
        """One attempt of a put/get/delete/incr on ``ep``, through its coalescer: at once and alone (a unary call) if
        one of the endpoint's call slots is free, else queued and sent with the others queued there in one Batch RPC
        when a slot frees. Returns the response, or raises the AioRpcError the unary call would have raised."""
        co = self._coalescers.get(ep)
        if co is None:
            co = self._coalescers[ep] = _Coalescer()
        _, stub = self._channel(ep)
        if not co.enabled:
            return await getattr(stub, method)(req, timeout=attempt_s)
        if co.inflight < self.coalesce_max_inflight and not co.queue:
            co.inflight += 1
            try:
                return await getattr(stub, method)(req, timeout=attempt_s)
            finally:
                self._release(ep, co)
        loop = asyncio.get_running_loop()
        q = _Queued(method, req, loop.time() + attempt_s, loop.create_future())
        co.queue.append(q)
        if co.inflight < self.coalesce_max_inflight:
            self._dispatch(ep, co)
        fut = q.future
        try:
            verdict = await fut
        except BaseException:
            # Cancelled just after being given a slot: hand the slot back (it was never used).
            if fut.done() and not fut.cancelled() and fut.exception() is None and fut.result() is _GRANTED:
                self._release(ep, co)
            raise
        if verdict is _GRANTED:
            try:
                _, stub = self._channel(ep)
                return await getattr(stub, method)(req, timeout=max(0.001, q.deadline - loop.time()))
            finally:
                self._release(ep, co)
        if verdict is _UNARY:
            _, stub = self._channel(ep)
            return await getattr(stub, method)(req, timeout=max(0.001, q.deadline - loop.time()))
        return verdict

    def _release(self, ep: str, co: _Coalescer) -> None:
        """A call slot of ``ep`` is free again: send what queued meanwhile."""
        co.inflight -= 1
        if co.queue:
            self._dispatch(ep, co)

    def _dispatch(self, ep: str, co: _Coalescer) -> None:
        """Send queued operations while a slot is free: one alone as its unary call (made by its own caller), more
        together as one Batch RPC. Operations whose attempt ran out of time in the queue fail, never sent."""
        if not co.enabled:
            queued, co.queue = co.queue, []
            for q in queued:
                if not q.future.done():
                    q.future.set_result(_UNARY)
            return
        now = asyncio.get_running_loop().time()
        while co.queue and co.inflight < self.coalesce_max_inflight:
            limit = self.coalesce_max_ops
            batch: list[_Queued] = []
            taken = 0
            for q in co.queue:
                taken += 1
                if q.future.done():  # its caller gave up (cancelled)
                    continue
                if q.deadline - now <= 0.001:  # a server Timeout that says "not applied": it was never sent
                    q.future.set_exception(_rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, _EXPIRED, _EXPIRED_MD))
                    continue
                batch.append(q)
                if len(batch) == limit:
                    break
            del co.queue[:taken]
            if not batch:
                continue
            co.inflight += 1
            if len(batch) == 1:
                batch[0].future.set_result(_GRANTED)
            else:
                task = asyncio.get_running_loop().create_task(self._send_batch(ep, co, batch))
                self._batch_tasks.add(task)
                task.add_done_callback(self._batch_tasks.discard)

    async def _send_batch(self, ep: str, co: _Coalescer, batch: list[_Queued]) -> None:
        """Send ``batch`` as one Batch RPC (holding one of ``ep``'s slots) and hand each operation its result or
        error. Failures of the RPC as a whole are every operation's failure, judged as a unary call's would be."""
        loop = asyncio.get_running_loop()
        try:
            fields = _BATCH_FIELDS
            req = kv_pb2.BatchRequest(ops=[kv_pb2.BatchOp(**{fields[q.method]: q.request}) for q in batch])
            timeout = max(0.001, min(q.deadline for q in batch) - loop.time())
            try:
                _, stub = self._channel(ep)
                resp = await stub.Batch(req, timeout=timeout)
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                    # An older server: no coalescing for this endpoint any more; nothing was carried out, so each
                    # operation sends itself as its unary call now.
                    co.enabled = False
                    for q in batch:
                        _settle(q, _UNARY)
                else:
                    for q in batch:
                        _fail(q, e)
                return
            except RaftKVError as e:  # the client was closed
                for q in batch:
                    _fail(q, e)
                return
            self._observe(resp.header.index)
            results = resp.results
            n = len(results)
            for i, q in enumerate(batch):
                r = results[i] if i < n else None
                which = r.WhichOneof("result") if r is not None else None
                if r is None or which is None:  # a broken server: the write may have applied; retry it
                    _fail(q, _rpc_error(grpc.StatusCode.UNAVAILABLE, f"{ep} answered no result for this operation"))
                elif which == "error":
                    _fail(q, _batch_error_rpc(r.error))
                else:
                    _settle(q, getattr(r, which))
        finally:
            # Cancelled (the client closing) or broken: whatever is left may have been sent, so its outcome is
            # unknown; the operations retry on their own.
            if not all(q.future.done() for q in batch):
                lost = _rpc_error(grpc.StatusCode.CANCELLED, "the batch call ended without an answer")
                for q in batch:
                    _fail(q, lost)
            self._release(ep, co)

    async def _call(
        self,
        method: str,
        request: Callable[[float], Any],
        response_type: type[R],
        *,
        write: bool = False,
        endpoint: str | None = None,
        endpoint_box: list[str] | None = None,
        spread: bool = False,
    ) -> R:
        """Call the KV ``method`` on the believed leader until it succeeds, a definite error comes back, or the
        deadline passes. ``request(remaining_s)`` builds each attempt's request. ``endpoint`` pins the call to one
        node (one attempt: no redirects, no failover). ``spread``: any node can serve it (a stale or bounded read),
        so spread such calls over all endpoints, round robin.

        Each attempt gets at most a quarter of the deadline (at least 1 s), so one node that accepts connections
        but never answers (paused, overloaded) cannot use up the whole deadline. The loop gives up as soon as the
        next back-off would pass the deadline, so the last attempt always completed, and the outcome of a write
        is unknown only if some attempt may really have applied it.

        A refused connection (or a host name that does not resolve) is followed by the next endpoint at once; once
        every endpoint refused and none answered anything, the call fails at once: nothing listens there. The
        error of a call that ran out of time says what each endpoint answered last."""
        op = _OP_NAMES.get(method) or method.lower()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        outcome_unknown = False
        last: RaftKVError | None = None
        attempts = 0
        backoff = BACKOFF_MIN_S
        redirected = False
        tried: dict[str, None] = {}
        why: dict[str, str] = {}  # endpoint -> what its last attempt got, in a few words
        refused: set[str] = set()  # endpoints where nothing listens (connection refused, unknown host)
        reached = False  # some attempt may have reached a server
        single = self._single_attempt
        if single:
            endpoint = self._endpoints[0]
        coalesce = self._coalesce and endpoint is None and method in _BATCH_FIELDS
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0.001:
                break
            if endpoint is not None:
                ep = endpoint
            elif spread and attempts == 0:
                self._spread_cursor += 1
                ep = self._endpoints[self._spread_cursor % len(self._endpoints)]
            else:
                ep = self._pick()
            tried[ep] = None
            attempts += 1
            attempt_s = min(remaining, max(1.0, self._timeout_s / 4))
            nothing_there = False
            try:
                if coalesce and attempts == 1:  # the first attempt may share a Batch RPC with other operations
                    resp = await self._coalesced(ep, method, request(attempt_s), attempt_s)
                else:
                    _, stub = self._channel(ep)
                    resp = await getattr(stub, method)(request(attempt_s), timeout=attempt_s)
            except grpc.aio.AioRpcError as e:
                err = error_from_rpc(e, write=write, endpoint=ep)
                if write and err.outcome_unknown:
                    outcome_unknown = True
                why[ep] = transport_failure(e) or err.message
                nothing_there = _nothing_listening(e)
                if nothing_there:
                    refused.add(ep)
                else:
                    reached = True
            else:
                if not isinstance(resp, response_type):
                    raise RaftKVError(f"{ep} answered {method} with {type(resp).__name__}")
                if method != "Status":
                    self._observe(resp.header.index)
                if write and endpoint is None:
                    self._leader = ep
                if endpoint_box is not None:
                    endpoint_box.append(ep)
                return resp
            last = err
            if single:
                raise err
            if isinstance(err, Removed | DataCorruption):
                # That node left the cluster, or found its data damaged: never ask it again; go on at once with the
                # others.
                self._removed.add(ep)
                self._failed(ep)
                if all(e in self._removed for e in self._endpoints):
                    if outcome_unknown:
                        err.applied = APPLIED_UNKNOWN
                    raise err
                continue
            if not err.retryable or (endpoint is not None and not isinstance(err, Timeout)):
                if outcome_unknown and not isinstance(err, ConditionFailed | InvalidArgument):
                    # (A condition or validation verdict answers for the session, so for every earlier attempt
                    # too; a node's refusal says nothing about an earlier attempt that may have applied.)
                    err.applied = APPLIED_UNKNOWN
                raise err
            # Where to go next.
            if isinstance(err, NotLeader) and err.leader_addr and err.leader_addr != ep:
                self._leader = err.leader_addr
                if not redirected:  # follow a fresh redirect at once; back off if they keep coming
                    redirected = True
                    continue
            else:
                self._failed(ep)
            redirected = False
            if nothing_there:
                live = [e for e in self._endpoints if e not in self._removed]
                if not reached and all(e in refused for e in live):
                    # Every endpoint refused the connection: nothing listens there, so waiting out the deadline
                    # would only hide that (a node that is merely restarting leaves the others answering).
                    raise Unavailable(f"{op} failed after {_n(attempts, 'attempt')}: {_nothing_at(live, why)}") from err
                if any(e not in tried for e in live):
                    continue  # a refused connection cost nothing: try the next endpoint at once
            pause = self._rng.uniform(backoff / 2, backoff)
            if pause >= deadline - loop.time():
                break  # no attempt could start before the deadline: report the last one's outcome now
            await asyncio.sleep(pause)
            backoff = min(BACKOFF_MAX_S, backoff * 2)
        t = self._timeout_s
        said = f": {_grouped(why)}" if why else ""
        if write and outcome_unknown:
            raise Timeout(
                f"{op} did not complete within {t:g}s; its outcome is unknown (it may have been applied){said}",
                outcome_unknown=True,
            ) from last
        if last is None or isinstance(last, Timeout):
            raise Timeout(f"{op} timed out after {t:g}s ({_n(attempts, 'attempt')}){said}") from last
        raise Unavailable(f"{op} failed after {_n(attempts, 'attempt')} in {t:g}s{said}") from last
