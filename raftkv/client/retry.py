"""The retry policy's pieces: the back-off between attempts, what counts as "nothing listens there" (move on at
once, or fail at once when every endpoint refused), whether a failed write's outcome is unknown, and how the error
of a call that gave up names the call and says what each endpoint answered. The loop itself is
``Client._call``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc.aio

from .rpc_errors import transport_failure

__all__ = ["BACKOFF_MAX_S", "BACKOFF_MIN_S"]

BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 1.0

_OP_NAMES = {"MemberList": "member list", "MemberAdd": "member add", "MemberPromote": "member promote",
             "MemberRemove": "member remove", "TransferLeader": "leader transfer"}
"""How errors name the calls whose names are not one word."""


def _nothing_listening(e: grpc.aio.AioRpcError) -> bool:
    """The connection was refused, or the host name does not resolve: no server got the request."""
    return transport_failure(e) in ("connection refused", "cannot resolve the host name")


def _n(count: int, what: str) -> str:
    return f"{count} {what}{'s' if count != 1 else ''}"


def _grouped(why: Mapping[str, str]) -> str:
    """``a: no leader is known; b, c: connection refused`` -- endpoints grouped by what they answered last."""
    by_reason: dict[str, list[str]] = {}
    for ep, reason in why.items():
        by_reason.setdefault(reason, []).append(ep)
    return "; ".join(f"{', '.join(eps)}: {reason}" for reason, eps in by_reason.items())


def _nothing_at(endpoints: Sequence[str], why: Mapping[str, str]) -> str:
    reasons = {why.get(e, "") for e in endpoints}
    if len(reasons) == 1:
        return f"nothing is listening at {', '.join(endpoints)} ({reasons.pop()})"
    return f"nothing is listening at any endpoint ({_grouped({e: why.get(e, '') for e in endpoints})})"
