"""Coordination recipes on leases, revisions and watches: a distributed :class:`Lock` and leader :class:`Election`.

Both rest on one queue per name: a contender puts a key of its own under the name's prefix, attached to its lease,
with a transaction that creates it only if it does not exist yet (so a retry finds its own key). The key's
``create_revision`` is its place in the queue, cluster-wide: the contender whose key has the lowest one holds the
lock (or leads); each other one watches the key just before its own, from the revision it read the queue at, and
looks again when that key is deleted (released, or its lease ended: its holder died). No herd: a release wakes one
waiter.

The holder's ``fencing revision`` is its key's create revision: it strictly increases from one holder to the next,
so a resource that remembers the highest one it has seen can refuse a holder that lost the lock and does not know it
yet (a paused process whose lease expired meanwhile). A lease gives mutual exclusion only while clocks behave and the
holder checks ``lease.alive`` before acting; the fencing revision holds without either.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..errors import RaftKVError
from .leases import Lease
from .models import Compare, KeyValue, TxnOp

if TYPE_CHECKING:
    from .aio import Client

__all__ = ["Election", "Lock", "LockLost"]

LOCK_PREFIX = b"_raftkv/lock/"
ELECTION_PREFIX = b"_raftkv/election/"
_DEFAULT_TTL_S = 10


class LockLost(RaftKVError):
    """The lease behind a lock or a leadership ended (expired, revoked): it is no longer held."""

    kind = "lock-lost"


def _name(name: bytes | str) -> bytes:
    b = name.encode() if isinstance(name, str) else bytes(name)
    if not b or b"/" in b:
        raise ValueError(f"a lock or election name is non-empty and has no '/': {name!r}")
    return b


class _Queue:
    """A contender's key under ``prefix``, attached to a lease, and its place in the queue."""

    def __init__(self, client: Client, prefix: bytes, lease: Lease | None, ttl_s: int) -> None:
        self._client = client
        self._prefix = prefix
        self._own_lease = lease is None
        self._ttl_s = ttl_s
        self.lease = lease
        self.key = b""
        self.revision = 0
        """The create revision of this contender's key: its place in the queue, and the fencing revision."""

    async def join(self, value: bytes) -> None:
        c = self._client
        if self.lease is None or self.lease.lost.is_set():
            self.lease = await c.grant(self._ttl_s)
            self._own_lease = True
        lease = self.lease
        self.key = self._prefix + b"%016x" % lease.id
        r = await c.txn(
            [Compare(self.key, "create_revision", "==", 0)],
            [TxnOp.put(self.key, value, lease=lease.id)],
            [TxnOp.get(self.key)],
        )
        kv = r.results[0].kv
        assert kv is not None
        self.revision = kv.create_revision

    async def queue(self) -> tuple[list[KeyValue], int]:
        """Every contender's key, and the revision this listing reflects."""
        c = self._client
        page = await c.range(self._prefix, limit=10_000)
        kvs = list(page.kvs)
        rev = page.revision
        while page.more:
            page = await c.range(self._prefix, start_after=kvs[-1].key, limit=10_000, revision=rev)
            kvs.extend(page.kvs)
        return kvs, rev

    def check(self) -> None:
        if self.lease is not None and self.lease.lost.is_set():
            raise LockLost(f"the lease behind {self.key.decode(errors='replace')} ended: {self.lease.lost_reason}")

    async def wait_first(self) -> None:
        """Until this contender's key is the oldest in the queue."""
        while True:
            self.check()
            kvs, rev = await self.queue()
            if not any(kv.key == self.key for kv in kvs):
                raise LockLost(f"{self.key.decode(errors='replace')} is gone (its lease ended)")
            before = [kv for kv in kvs if kv.create_revision < self.revision]
            if not before:
                return
            pred = max(before, key=lambda kv: kv.create_revision).key
            await self._until_deleted(pred, rev + 1)

    async def _until_deleted(self, key: bytes, from_rev: int) -> None:
        """Until ``key`` is deleted (at ``from_rev`` or later), or this contender's lease ends."""
        lease = self.lease
        assert lease is not None

        async def deleted() -> None:
            async for batch in self._client.watch(key, start_revision=from_rev, no_put=True):
                if batch.events:
                    return

        watching = asyncio.ensure_future(deleted())
        lost = asyncio.ensure_future(lease.lost.wait())
        try:
            await asyncio.wait({watching, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (watching, lost):
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        if watching.done() and not watching.cancelled() and watching.exception() is not None:
            raise watching.exception()  # type: ignore[misc]
        self.check()

    async def leave(self) -> None:
        c = self._client
        with contextlib.suppress(RaftKVError):
            if self._own_lease and self.lease is not None and not self.lease.lost.is_set():
                await self.lease.revoke()  # (deletes the key too)
            elif self.key:
                await c.delete(self.key)
        self.key = b""
        self.revision = 0


class Lock:
    """A distributed lock: ``async with client.lock("name") as held: ...`` (``held.revision`` is the fencing
    revision). Released when the block ends, or when the holder's lease ends (the holder died, or could not renew:
    ``lost`` is then set and the holder must stop acting under the lock). Waiters are served in the order they
    asked (by revision). One ``Lock`` object holds at most once at a time."""

    def __init__(self, client: Client, name: bytes | str, *, ttl_s: int = _DEFAULT_TTL_S, lease: Lease | None = None,
                 prefix: bytes = LOCK_PREFIX) -> None:
        self.name = _name(name)
        self._q = _Queue(client, prefix + self.name + b"/", lease, ttl_s)
        self.held = False

    @property
    def revision(self) -> int:
        """The fencing revision while held (0 otherwise): higher for every later holder."""
        return self._q.revision if self.held else 0

    @property
    def key(self) -> bytes:
        return self._q.key

    @property
    def lease(self) -> Lease | None:
        return self._q.lease

    @property
    def lost(self) -> asyncio.Event:
        """Set when the lease behind the lock ended: the lock is no longer held."""
        lease = self._q.lease
        assert lease is not None, "the lock was never acquired"
        return lease.lost

    async def acquire(self) -> int:
        """Wait until this contender holds the lock; returns the fencing revision. Cancel it (or wrap it in
        ``asyncio.timeout``) to give up: the contender then leaves the queue."""
        if self.held:
            raise RuntimeError("this Lock is held already")
        try:
            await self._q.join(b"")
            await self._q.wait_first()
        except BaseException:
            await asyncio.shield(self._q.leave())
            raise
        self.held = True
        return self._q.revision

    async def release(self) -> None:
        self.held = False
        await self._q.leave()

    async def __aenter__(self) -> Lock:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class Election:
    """Leader election under ``name``: :meth:`campaign` waits until this contender leads (its proposal is the
    leader's value), :meth:`proclaim` changes the value while leading, :meth:`resign` steps down, :meth:`leader`
    reads the current leader's value, :meth:`observe` follows it. Leadership ends with the lease (``lost``)."""

    def __init__(self, client: Client, name: bytes | str, *, ttl_s: int = _DEFAULT_TTL_S, lease: Lease | None = None,
                 prefix: bytes = ELECTION_PREFIX) -> None:
        self.name = _name(name)
        self._client = client
        self._prefix = prefix + self.name + b"/"
        self._q = _Queue(client, self._prefix, lease, ttl_s)
        self.leading = False

    @property
    def revision(self) -> int:
        """While leading: the create revision of this leader's key (a fencing revision)."""
        return self._q.revision if self.leading else 0

    @property
    def lost(self) -> asyncio.Event:
        lease = self._q.lease
        assert lease is not None, "never campaigned"
        return lease.lost

    async def campaign(self, proposal: bytes | str) -> int:
        """Wait until this contender leads with ``proposal`` as the value; returns its revision."""
        value = proposal.encode() if isinstance(proposal, str) else bytes(proposal)
        try:
            await self._q.join(value)
            await self._q.wait_first()
        except BaseException:
            await asyncio.shield(self._q.leave())
            raise
        self.leading = True
        return self._q.revision

    async def proclaim(self, value: bytes | str) -> None:
        """Change the leader's value, while still leading (LockLost otherwise)."""
        if not self.leading:
            raise LockLost("not leading")
        v = value.encode() if isinstance(value, str) else bytes(value)
        r = await self._client.txn([Compare(self._q.key, "create_revision", "==", self._q.revision)],
                                   [TxnOp.put(self._q.key, v, lease=self._q.lease.id if self._q.lease else 0)])
        if not r.succeeded:
            self.leading = False
            raise LockLost("no longer leading: the key of this leadership is gone")

    async def resign(self) -> None:
        self.leading = False
        await self._q.leave()

    async def leader(self) -> KeyValue | None:
        """The leader's key (its value is the leader's proposal), None if nobody leads."""
        kvs, _ = await self._q.queue()
        return min(kvs, key=lambda kv: kv.create_revision) if kvs else None

    async def observe(self) -> AsyncIterator[KeyValue | None]:
        """The leader's key now, then again each time the leader or its value changes (None: nobody leads)."""
        c = self._client
        kvs, rev = await self._q.queue()
        current = min(kvs, key=lambda kv: kv.create_revision) if kvs else None
        yield current
        held = {kv.key: kv for kv in kvs}
        async for batch in c.watch(self._prefix, prefix=True, start_revision=rev + 1):
            for ev in batch.events:
                if ev.type == "put":
                    held[ev.kv.key] = ev.kv
                else:
                    held.pop(ev.kv.key, None)
            now = min(held.values(), key=lambda kv: kv.create_revision) if held else None
            if (now is None) != (current is None) or (now is not None and current is not None and (
                    now.key != current.key or now.value != current.value)):
                current = now
                yield current
