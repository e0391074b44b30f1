"""The blocking :class:`SyncClient`: the :class:`~raftkv.client.aio.Client` API on a private event loop in a
background thread."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from ..errors import RaftKVError
from ..proto.v1 import kv_pb2
from .aio import Client
from .leases import Lease
from .models import (
    Compare,
    Consistency,
    DeleteResult,
    KeyValue,
    LeaseInfo,
    MemberList,
    NodeStatus,
    PutResult,
    RangeResult,
    TxnOp,
    TxnResult,
)
from .recipes import Election, Lock

__all__ = ["SyncClient", "SyncElection", "SyncLease", "SyncLock"]

T = TypeVar("T")


# -- the sync client --------------------------------------------------------------------------------------------
class SyncClient:
    """The :class:`Client` API, blocking. The async client runs on a private event loop in a background thread,
    so this works in plain scripts and also when called from a thread that is running an event loop."""

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
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="raftkv-client", daemon=True)
        self._thread.start()
        self._closed = False

        async def make() -> Client:
            return Client(endpoints, timeout_s=timeout_s, client_id=client_id, lanes=lanes, coalesce=coalesce,
                          single_attempt=single_attempt)

        try:
            self._client = self._run(make())
        except BaseException:
            self._stop_loop()
            raise

    @property
    def client(self) -> Client:
        """The async client underneath (use only on its own loop)."""
        return self._client

    @property
    def endpoints(self) -> list[str]:
        return self._client.endpoints

    @property
    def seen_index(self) -> int:
        return self._client.seen_index

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RaftKVError("the client is closed")
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result()
        except BaseException:
            fut.cancel()
            raise

    def put(self, key: bytes | str, value: bytes | str, **conditions: Any) -> PutResult:
        """See :meth:`Client.put` (``if_version``, ``if_mod_revision``, ``if_value``, ``if_absent``, ``context``,
        ``on_conflict``)."""
        return self._run(self._client.put(key, value, **conditions))

    def delete(self, key: bytes | str, **conditions: Any) -> DeleteResult:
        return self._run(self._client.delete(key, **conditions))

    def cas(self, key: bytes | str, expected: bytes | str | None, new: bytes | str) -> bool:
        return self._run(self._client.cas(key, expected, new))

    def incr(self, key: bytes | str, delta: int = 1) -> int:
        return self._run(self._client.incr(key, delta))

    def txn(
        self, compares: Sequence[Compare] = (), success: Sequence[TxnOp] = (), failure: Sequence[TxnOp] = ()
    ) -> TxnResult:
        return self._run(self._client.txn(compares, success, failure))

    def save_snapshot(self, path: str | os.PathLike[str], *, endpoint: str | None = None) -> int:
        return self._run(self._client.save_snapshot(path, endpoint=endpoint))

    def member_list(self) -> MemberList:
        return self._run(self._client.member_list())

    def member_add(self, node_id: int, peer_addr: str, client_addr: str, *, learner: bool = False) -> MemberList:
        return self._run(self._client.member_add(node_id, peer_addr, client_addr, learner=learner))

    def member_promote(self, node_id: int) -> MemberList:
        return self._run(self._client.member_promote(node_id))

    def member_remove(self, node_id: int, *, force: bool = False) -> MemberList:
        return self._run(self._client.member_remove(node_id, force=force))

    def transfer_leader(self, to: int = 0) -> int:
        return self._run(self._client.transfer_leader(to))

    def check_cluster(self) -> kv_pb2.CheckClusterResponse:
        return self._run(self._client.check_cluster())

    def get(
        self,
        key: bytes | str,
        *,
        consistency: Consistency | str = "linearizable",
        min_index: int | None = None,
        max_staleness_ms: int = 0,
        fail_if_stale: bool = False,
        revision: int = 0,
    ) -> KeyValue | None:
        return self._run(
            self._client.get(
                key,
                consistency=consistency,
                min_index=min_index,
                max_staleness_ms=max_staleness_ms,
                fail_if_stale=fail_if_stale,
                revision=revision,
            )
        )

    def range(
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
        return self._run(
            self._client.range(
                prefix,
                start_after=start_after,
                limit=limit,
                keys_only=keys_only,
                consistency=consistency,
                min_index=min_index,
                max_staleness_ms=max_staleness_ms,
                revision=revision,
            )
        )

    def compact(self, revision: int) -> int:
        return self._run(self._client.compact(revision))

    # -- leases and recipes (the handles wrap the async ones, which live on the client's loop) -----------------
    def grant(self, ttl_s: int, *, lease_id: int = 0, keep_alive: bool = True) -> SyncLease:
        """See :meth:`Client.grant`; the lease is kept alive by the client's background thread."""
        return SyncLease(self, self._run(self._client.grant(ttl_s, lease_id=lease_id, keep_alive=keep_alive)))

    def keep_alive(self, lease_id: int) -> SyncLease:
        return SyncLease(self, self._run(self._client.keep_alive(lease_id)))

    def revoke(self, lease: int | SyncLease) -> int:
        return self._run(self._client.revoke(lease.id if isinstance(lease, SyncLease) else lease))

    def time_to_live(self, lease: int | SyncLease, *, keys: bool = False) -> LeaseInfo:
        return self._run(self._client.time_to_live(lease.id if isinstance(lease, SyncLease) else lease, keys=keys))

    def leases(self) -> list[int]:
        return self._run(self._client.leases())

    def lock(self, name: bytes | str, *, ttl_s: int = 10) -> SyncLock:
        """A distributed lock: ``with client.lock("jobs") as held: ...`` (``held.revision``: the fencing
        revision). See :class:`~raftkv.client.recipes.Lock`."""
        return SyncLock(self, name, ttl_s)

    def election(self, name: bytes | str, *, ttl_s: int = 10) -> SyncElection:
        return SyncElection(self, name, ttl_s)

    def status(self, endpoint: str | None = None) -> NodeStatus:
        return self._run(self._client.status(endpoint))

    def cluster_status(self, *, timeout_s: float | None = None, members: bool = False) -> list[NodeStatus]:
        return self._run(self._client.cluster_status(timeout_s=timeout_s, members=members))

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._run(self._client.aclose())
        finally:
            self._closed = True
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True) and self._thread.is_alive():
            try:
                self._loop.call_soon_threadsafe(self._loop.stop)
            except RuntimeError:
                pass


class SyncLease:
    """A :class:`~raftkv.client.leases.Lease`, from blocking code."""

    def __init__(self, client: SyncClient, lease: Lease) -> None:
        self._c = client
        self.lease = lease
        self.id = lease.id
        self.ttl = lease.ttl

    @property
    def alive(self) -> bool:
        return self._c._run(_alive(self.lease))

    @property
    def lost_reason(self) -> str:
        return self.lease.lost_reason

    def wait_lost(self, timeout_s: float | None = None) -> bool:
        """Block until the lease is lost (True) or ``timeout_s`` passed (False)."""
        return self._c._run(_wait_event(self.lease.lost, timeout_s))

    def revoke(self) -> int:
        return self._c._run(self.lease.revoke())

    def __enter__(self) -> SyncLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self._c._run(self.lease.__aexit__())


class SyncLock:
    """A :class:`~raftkv.client.recipes.Lock`, from blocking code."""

    def __init__(self, client: SyncClient, name: bytes | str, ttl_s: int) -> None:
        self._c = client
        self._lock = client._run(_make_lock(client.client, name, ttl_s))

    @property
    def revision(self) -> int:
        return self._lock.revision

    @property
    def held(self) -> bool:
        return self._lock.held

    def lost(self, timeout_s: float | None = 0) -> bool:
        """Whether the lock's lease ended (waiting up to ``timeout_s`` for it; None: until it does)."""
        return self._c._run(_wait_event(self._lock.lost, timeout_s))

    def acquire(self, timeout_s: float | None = None) -> int:
        return self._c._run(_bounded(self._lock.acquire(), timeout_s))

    def release(self) -> None:
        self._c._run(self._lock.release())

    def __enter__(self) -> SyncLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class SyncElection:
    """An :class:`~raftkv.client.recipes.Election`, from blocking code."""

    def __init__(self, client: SyncClient, name: bytes | str, ttl_s: int) -> None:
        self._c = client
        self._e = client._run(_make_election(client.client, name, ttl_s))

    @property
    def revision(self) -> int:
        return self._e.revision

    def campaign(self, proposal: bytes | str, timeout_s: float | None = None) -> int:
        return self._c._run(_bounded(self._e.campaign(proposal), timeout_s))

    def proclaim(self, value: bytes | str) -> None:
        self._c._run(self._e.proclaim(value))

    def resign(self) -> None:
        self._c._run(self._e.resign())

    def leader(self) -> KeyValue | None:
        return self._c._run(self._e.leader())

    def observe(self) -> Iterator[KeyValue | None]:
        it: AsyncIterator[KeyValue | None] = self._e.observe()
        try:
            while True:
                try:
                    yield self._c._run(_next(it))
                except StopAsyncIteration:
                    return
        finally:
            self._c._run(it.aclose())  # type: ignore[attr-defined]


async def _next(it: AsyncIterator[T]) -> T:
    return await anext(it)


async def _alive(lease: Lease) -> bool:
    return lease.alive


async def _wait_event(ev: asyncio.Event, timeout_s: float | None) -> bool:
    if timeout_s is not None and timeout_s <= 0:
        return ev.is_set()
    try:
        async with asyncio.timeout(timeout_s):
            await ev.wait()
    except TimeoutError:
        return False
    return True


async def _bounded(coro: Coroutine[Any, Any, T], timeout_s: float | None) -> T:
    async with asyncio.timeout(timeout_s):
        return await coro


async def _make_lock(client: Client, name: bytes | str, ttl_s: int) -> Lock:
    return client.lock(name, ttl_s=ttl_s)


async def _make_election(client: Client, name: bytes | str, ttl_s: int) -> Election:
    return client.election(name, ttl_s=ttl_s)
