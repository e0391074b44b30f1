"""gRPC failures as raftkv errors: the error kind and ``applied`` from the status and its trailing metadata, a
short reason for a failure of the transport itself (no server answered), and a batch operation's error as the
failure its unary call would have raised."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import grpc.aio

from ..errors import (
    APPLIED_NO,
    APPLIED_UNKNOWN,
    META_APPLIED,
    META_CURRENT_BIN,
    META_KIND,
    ConditionFailed,
    RaftKVError,
    Unavailable,
    from_wire,
)
from ..proto.v1 import kv_pb2
from .models import _kv

__all__ = ["META_CURRENT_BIN", "error_from_rpc", "transport_failure"]

"""Trailing metadata of a failed condition: the key's current KeyValue (serialized protobuf)."""


def error_from_rpc(e: grpc.aio.AioRpcError, *, write: bool = True, endpoint: str = "") -> RaftKVError:
    """The raftkv error an RPC failure stands for (connection failures become :class:`Unavailable`), with
    ``applied`` as the server said it; a failure that did not come from a raftkv server (a lost connection, a
    client-side deadline) says "unknown" for a write that may have reached one, "no" otherwise (and for reads).

    A failure of the transport itself gets a short message, ``"<endpoint>: connection refused"``, instead of
    gRPC's own text."""
    md: dict[str, str] = {}
    current: bytes | None = None
    trailing = e.trailing_metadata()
    if trailing:
        for k, v in trailing:
            if isinstance(v, str):
                md[k] = v
            elif k == META_CURRENT_BIN:
                current = bytes(v)
    code = e.code()
    name = code.name if code is not None else "UNKNOWN"
    reason = transport_failure(e)
    if reason is not None:
        err = from_wire(name, f"{endpoint}: {reason}" if endpoint else reason, md)
    else:
        err = from_wire(name, e.details() or "", md)
    if META_APPLIED not in md:
        err.applied = APPLIED_UNKNOWN if write and not _definitely_not_sent(e, err) else APPLIED_NO
    elif not write:
        err.applied = APPLIED_NO
    if isinstance(err, ConditionFailed) and current is not None:
        try:
            err.current = _kv(kv_pb2.KeyValue.FromString(current))
        except Exception:  # a malformed trailer: keep the error without the current state
            pass
    return err


def _rpc_error(
    code: grpc.StatusCode, details: str, metadata: Sequence[tuple[str, str | bytes]] = ()
) -> grpc.aio.AioRpcError:
    """An RPC failure as a unary call would raise it (for an operation whose attempt was part of a batch)."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*metadata), details)


def _batch_error_rpc(be: kv_pb2.BatchError) -> grpc.aio.AioRpcError:
    """A batch operation's error as the AioRpcError its unary RPC would have raised (same code, details, trailing
    metadata), so :func:`error_from_rpc` (and with it the retry policy) judges both alike."""
    try:
        code = grpc.StatusCode[be.code]
    except KeyError:
        code = grpc.StatusCode.UNKNOWN
    md: list[tuple[str, str | bytes]] = list(be.metadata.items())
    if be.current:
        md.append((META_CURRENT_BIN, be.current))
    return _rpc_error(code, be.message, md)


def transport_failure(e: grpc.aio.AioRpcError) -> str | None:
    """What went wrong, in a few words, when an RPC failed in the transport (no raftkv server answered): "connection
    refused", "cannot resolve the host name", "no answer within the deadline", "the connection was lost". None
    for an answer from a server (its own message says what happened)."""
    if any(k in (META_KIND, META_APPLIED) for k, _ in e.trailing_metadata() or ()):
        return None
    code = e.code()
    d = (e.details() or "").lower()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "no answer within the deadline"
    if code != grpc.StatusCode.UNAVAILABLE:
        return None
    if "connection refused" in d:
        return "connection refused"
    if "resolv" in d or "dns" in d or "name resolution" in d:
        return "cannot resolve the host name"
    if "failed to connect" in d:
        tail = (e.details() or "").rpartition(": ")[2].strip()
        return f"cannot connect ({tail[:1].lower() + tail[1:]})" if tail else "cannot connect"
    if "socket closed" in d or "connection reset" in d or "broken pipe" in d or "goaway" in d:
        return "the connection was lost"
    return None


def _definitely_not_sent(e: grpc.aio.AioRpcError, err: RaftKVError) -> bool:
    """True when the request never reached a server (the connection could not be made), so a write in it cannot
    have been applied. Anything less certain counts as an unknown outcome."""
    if not isinstance(err, Unavailable) or any(k == META_KIND for k, _ in e.trailing_metadata() or ()):
        return False
    d = (e.details() or "").lower()
    return "failed to connect" in d or "connection refused" in d or "resolv" in d or "dns" in d
