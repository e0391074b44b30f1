"""Leases on the client: the :class:`Lease` handle, and the one keep-alive stream per client that renews them all.

A client keeps every lease it holds alive over a single ``LeaseKeepAlive`` stream to the leader: each request
carries the ids due for renewal (a third of their TTL after the last renewal), so 10,000 leases cost a few requests
per second, not 10,000 streams. The leader answers each id with its TTL; the lease then lives at least that long
from when the request was *sent* (the guarantee of ``raftkv.lessor``), which is the lease's ``deadline`` here, on
this client's monotonic clock.

A lease is ``lost`` when the leader says it no longer exists (TTL 0: it expired or was revoked), or when its deadline
passes before a renewal was answered (the client can no longer tell: the cluster may have expired it). Code that
holds a lease (a lock, a leadership) must stop acting on it once it is lost: wait on ``lost``, or check ``alive``
before each action, and use the fencing revision the recipes give where a resource can check it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from ..errors import NotLeader, RaftKVError
from ..proto.v1 import kv_pb2
from .retry import BACKOFF_MAX_S, BACKOFF_MIN_S
from .rpc_errors import error_from_rpc

if TYPE_CHECKING:
    from .aio import Client

__all__ = ["Lease"]

log = logging.getLogger("raftkv.client")


class Lease:
    """A lease granted by :meth:`Client.grant` (or taken over by :meth:`Client.keep_alive`), kept alive by its client
    until :meth:`revoke`, :meth:`stop` or the client's ``aclose``. Use it as an async context manager to revoke it
    on exit."""

    def __init__(self, client: Client, lease_id: int, ttl: int, granted_at: float, index: int) -> None:
        self.id = lease_id
        self.ttl = ttl
        """The TTL granted, in seconds."""
        self.index = index
        """The applied log index of the grant (the leader answers keep-alives once it applied it)."""
        self.deadline = granted_at + ttl
        """The lease lives at least until then (the client loop's monotonic clock) unless it is revoked."""
        self.next_due = granted_at + ttl / 3
        self.lost = asyncio.Event()
        """Set once the lease is gone, or can no longer be vouched for (see :attr:`lost_reason`)."""
        self.lost_reason = ""
        self.renewals = 0
        self._client = client

    @property
    def alive(self) -> bool:
        """Not lost, and its deadline not passed."""
        return not self.lost.is_set() and asyncio.get_running_loop().time() < self.deadline

    def remaining(self) -> float:
        """Seconds the lease is sure to live (0 once lost)."""
        if self.lost.is_set():
            return 0.0
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    def _lose(self, why: str) -> None:
        if not self.lost.is_set():
            self.lost_reason = why
            self.lost.set()

    def stop(self) -> None:
        """Stop renewing it (it expires after its TTL)."""
        self._client._keepaliver().discard(self.id)

    async def revoke(self) -> int:
        """End the lease now: its keys are deleted (in one revision, returned)."""
        self.stop()
        try:
            return await self._client.revoke(self.id)
        finally:
            self._lose("revoked by this client")

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.lost.is_set():
            with contextlib.suppress(RaftKVError):
                await self.revoke()

    def __repr__(self) -> str:
        state = f"lost: {self.lost_reason}" if self.lost.is_set() else "alive"
        return f"Lease(id={self.id}, ttl={self.ttl}, {state})"


class KeepAliver:
    """The keep-alive stream of one client: renews every lease added, as each comes due, on one stream to the
    leader (following its redirects, reconnecting after failures)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._leases: dict[int, Lease] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random()
        self.requests = 0

    def add(self, lease: Lease) -> None:
        self._leases[lease.id] = lease
        self._changed.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="raftkv-keepalive")

    def discard(self, lease_id: int) -> None:
        self._leases.pop(lease_id, None)

    def __len__(self) -> int:
        return len(self._leases)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for lease in self._leases.values():
            lease._lose("the client was closed")
        self._leases.clear()

    def _expire_overdue(self, now: float) -> None:
        for lid, lease in list(self._leases.items()):
            if now >= lease.deadline:
                lease._lose("it could not be renewed before its deadline (no leader answered in time)")
                del self._leases[lid]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        client = self._client
        backoff = BACKOFF_MIN_S
        while self._leases:
            ep = client._pick()
            _, stub = client._channel(ep)
            call: Any = stub.LeaseKeepAlive()
            try:
                while self._leases:
                    now = loop.time()
                    self._expire_overdue(now)
                    due = [lease for lease in self._leases.values() if lease.next_due <= now]
                    if not due:
                        if not self._leases:
                            break
                        wait = min(lease.next_due for lease in self._leases.values()) - now
                        self._changed.clear()
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(max(0.001, wait)):
                                await self._changed.wait()
                        continue
                    sent = loop.time()
                    # Wait for the answer at most half the time the most urgent lease has left (and not the whole
                    # client deadline): a leader that died must be given up on while there is time to find the next.
                    wait = min(max(0.2, (min(lease.deadline for lease in due) - sent) / 2), client.timeout_s / 4)
                    async with asyncio.timeout(wait):
                        await call.write(kv_pb2.LeaseKeepAliveRequest(ids=[lease.id for lease in due],
                                                                      min_index=max(lease.index for lease in due)))
                        self.requests += 1
                        resp = await call.read()
                    if resp is grpc.aio.EOF:
                        raise ConnectionError("the keep-alive stream ended")
                    backoff = BACKOFF_MIN_S
                    for lid, ttl in zip(resp.ids, resp.ttls, strict=False):
                        lease = self._leases.get(lid)
                        if lease is None:
                            continue
                        if ttl <= 0:
                            lease._lose("the cluster says it no longer exists (it expired or was revoked)")
                            del self._leases[lid]
                            continue
                        lease.deadline = max(lease.deadline, sent + ttl)
                        lease.next_due = sent + ttl / 3
                        lease.renewals += 1
            except grpc.aio.AioRpcError as e:
                err = error_from_rpc(e, write=False, endpoint=ep)
                if isinstance(err, NotLeader) and err.leader_addr and err.leader_addr != ep:
                    client._leader = err.leader_addr
                    continue  # to the leader at once
                log.debug("keep-alive stream to %s failed: %s", ep, err.message)
                client._failed(ep)
            except (TimeoutError, ConnectionError, RaftKVError) as e:
                log.debug("keep-alive stream to %s failed: %s", ep, e)
                client._failed(ep)
            except Exception as e:  # (anything else the stream raises must not end the renewals silently)
                log.warning("keep-alive stream to %s failed: %s: %s", ep, type(e).__name__, e)
                client._failed(ep)
            finally:
                call.cancel()
            self._expire_overdue(loop.time())
            await asyncio.sleep(self._rng.uniform(backoff / 2, backoff))
            backoff = min(BACKOFF_MAX_S, backoff * 2)
