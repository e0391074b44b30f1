"""The coalescer's state: per endpoint, the call slots in use and the operations queued for one, and how a queued
operation learns its turn (``_GRANTED``, ``_UNARY``), its result or its error. ``Client`` drives it (see its
``_coalesced``, ``_dispatch`` and ``_send_batch``)."""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import APPLIED_NO, META_APPLIED, META_KIND, Timeout

__all__: list[str] = []

_BATCH_FIELDS = {"Put": "put", "Get": "get", "Delete": "delete", "Incr": "incr"}
"""The methods whose first attempt goes through the coalescer, and their field in BatchOp / BatchResult."""
_GRANTED = object()  # a queued operation's turn: it holds a call slot of its endpoint; it sends itself, unary
_UNARY = object()  # the endpoint has no Batch: the queued operation sends itself, unary, without a slot
_EXPIRED = "the attempt ran out of time waiting to be sent (it was not sent)"
_EXPIRED_MD = ((META_KIND, Timeout.kind), (META_APPLIED, APPLIED_NO))


class _Queued:
    """An operation waiting in an endpoint's coalescer for a call slot."""

    __slots__ = ("deadline", "future", "method", "request")

    def __init__(self, method: str, request: Any, deadline: float, future: asyncio.Future[Any]) -> None:
        self.method = method
        self.request = request
        self.deadline = deadline  # loop time when the attempt runs out
        self.future = future  # the response, an AioRpcError, or _GRANTED / _UNARY


class _Coalescer:
    """One endpoint's coalescing state: the call slots in use and the operations waiting for one."""

    __slots__ = ("enabled", "inflight", "queue")

    def __init__(self) -> None:
        self.enabled = True  # False once the endpoint answered UNIMPLEMENTED for Batch
        self.inflight = 0
        self.queue: list[_Queued] = []


def _settle(q: _Queued, result: Any) -> None:
    if not q.future.done():
        q.future.set_result(result)


def _fail(q: _Queued, err: BaseException) -> None:
    if not q.future.done():
        q.future.set_exception(err)
