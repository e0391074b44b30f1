"""The chaos workload's client for ``raftkv chaos --api etcd``: the workload's operations through raftkv's etcd v3
API, as an etcd client sends them, so the checkers judge that API under the faults.

get: a Range (``serializable`` for the stale level: etcd's only other level; the others are linearizable); put: a
Put; delete: a DeleteRange; cas: a Txn comparing the value (or, for "absent", the version with 0) and putting on
success; incr: read the counter, then a Txn comparing its mod revision and putting the sum, again on a failed
compare (the compare failing means nothing was written).

etcd's API has no sessions: a write whose attempt may have reached the cluster is never retried here (it could
apply twice); its outcome is reported unknown (``Timeout`` with ``applied="unknown"``), as the history needs.
Attempts that certainly did not reach a server (the connection refused) move on to the next endpoint; reads are
retried on every failure until the deadline.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

from ..client import KeyValue
from ..errors import APPLIED_UNKNOWN, InvalidArgument, Timeout, Unavailable
from ..proto.etcd.api.etcdserverpb import rpc_pb2 as pb
from ..proto.etcd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc

__all__ = ["EtcdKVClient"]

_DEFINITE = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND,
             grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.RESOURCE_EXHAUSTED}
"""Answers that say the write was refused before it was proposed."""


def _not_sent(e: grpc.aio.AioRpcError) -> bool:
    """The attempt never reached a server (nothing listens there)."""
    d = (e.details() or "").lower()
    return e.code() == grpc.StatusCode.UNAVAILABLE and ("connection refused" in d or "failed to connect" in d)


class EtcdKVClient:
    """The workload's ``KVClient`` over the etcd API of ``endpoints``."""

    def __init__(self, endpoints: Sequence[str], timeout_s: float) -> None:
        self._endpoints = list(endpoints)
        self._timeout_s = timeout_s
        self._rng = random.Random()
        self._cursor = self._rng.randrange(len(self._endpoints))
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self) -> tuple[str, Any]:
        ep = self._endpoints[self._cursor % len(self._endpoints)]
        ch = self._channels.get(ep)
        if ch is None:
            ch = self._channels[ep] = grpc.aio.insecure_channel(ep)
        return ep, pb_grpc.KVStub(ch)  # type: ignore[no-untyped-call]

    async def _call(self, method: str, req: Any, write: bool) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        last = ""
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0.01:
                break
            ep, stub = self._stub()
            try:
                return await getattr(stub, method)(req, timeout=min(remaining, max(1.0, self._timeout_s / 2)))
            except grpc.aio.AioRpcError as e:
                last = f"{ep}: {e.code().name} {e.details()}"
                if e.code() in _DEFINITE:
                    raise InvalidArgument(last) from None
                if write and not _not_sent(e):
                    raise Timeout(f"{method} may or may not have been applied ({last})",
                                  applied=APPLIED_UNKNOWN) from None
                self._cursor += 1
                await asyncio.sleep(self._rng.uniform(0.02, 0.1))
        if write:
            raise Unavailable(f"{method}: no endpoint accepted the request ({last})")
        raise Timeout(f"{method} timed out ({last})")

    async def get(self, key: bytes, *, consistency: str = "linearizable", min_index: int | None = None
                  ) -> KeyValue | None:
        r = await self._call("Range", pb.RangeRequest(key=key, serializable=consistency == "stale"), write=False)
        if not r.kvs:
            return None
        kv = r.kvs[0]
        return KeyValue(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, revision=r.header.revision,
                        lease=kv.lease)

    async def put(self, key: bytes, value: bytes) -> Any:
        return await self._call("Put", pb.PutRequest(key=key, value=value), write=True)

    async def delete(self, key: bytes) -> Any:
        return await self._call("DeleteRange", pb.DeleteRangeRequest(key=key), write=True)

    async def cas(self, key: bytes, expected: bytes | None, new: bytes) -> bool:
        if expected is None:
            cmp = pb.Compare(key=key, target=pb.Compare.VERSION, result=pb.Compare.EQUAL, version=0)
        else:
            cmp = pb.Compare(key=key, target=pb.Compare.VALUE, result=pb.Compare.EQUAL, value=expected)
        put = pb.RequestOp(request_put=pb.PutRequest(key=key, value=new))
        r = await self._call("Txn", pb.TxnRequest(compare=[cmp], success=[put]), write=True)
        return bool(r.succeeded)

    async def incr(self, key: bytes, delta: int = 1) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        while True:
            if loop.time() > deadline:  # (every compare so far failed: nothing was written)
                raise Unavailable("incr: the counter kept moving; gave up")
            kv = await self.get(key)
            base = int(kv.value) if kv is not None else 0
            cmp = pb.Compare(key=key, target=pb.Compare.MOD, result=pb.Compare.EQUAL,
                             mod_revision=kv.mod_revision if kv is not None else 0)
            put = pb.RequestOp(request_put=pb.PutRequest(key=key, value=b"%d" % (base + delta)))
            r = await self._call("Txn", pb.TxnRequest(compare=[cmp], success=[put]), write=True)
            if r.succeeded:
                return base + delta

    async def aclose(self) -> None:
        for ch in self._channels.values():
            await ch.close()
