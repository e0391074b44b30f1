"""The blocking :class:`SyncClient`: the :class:`~raftkv.client.aio.Client` API on a private event loop in a
background thread."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from ..errors import RaftKVError
from ..proto.v1 import kv_pb2
from .aio import Client
from .models import (
    Compare,
    Consistency,
    DeleteResult,
    KeyValue,
    MemberList,
    NodeStatus,
    PutResult,
    RangeResult,
    TxnOp,
    TxnResult,
)

__all__ = ["SyncClient"]

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
