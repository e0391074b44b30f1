"""The exactly-once session table: the last request each client session applied, and its answer.

Every write carries a session ``(client_id, seq)`` (``client_id == 0``: no session, applied every time). The client
library gives each in-flight request its own session lane — at most one outstanding request per ``client_id``, and
a lane's seq only grows — so the table keeps, per ``client_id``, only the last seq applied and its encoded result:

* ``seq >  last_seq``: a new request: apply it, then store ``(seq, result)``;
* ``seq == last_seq``: a retry of a write that committed (the client timed out, or the leader changed before it
  answered): return the cached result WITHOUT applying again. This is the exactly-once guarantee, and it holds
  across leader changes and restarts because the table is replicated state, written in the same transaction as
  the data it protects;
* ``seq <  last_seq``: a late duplicate of something already answered: ``DuplicateResult()``, not applied.

Expiry is deterministic. Time is the state machine's logical clock ``now_ns``, the maximum of the timestamps the
leaders wrote into the log entries (persisted, never going back), not any replica's wall clock. Each session keeps
``last_active_ns`` (the logical time it last applied or retried a request). After each entry the state machine calls
``expire``, which removes the sessions idle for more than ``ttl_ns``, then, while more than ``max_sessions`` remain,
the least recently active ones (ties broken by client id). Both walk an index ordered by
``(last_active_ns, client_id)`` from its oldest end and stop at the first session to keep: the work per entry is
O(sessions removed), not O(sessions).

The bound, and what it means: a retry is answered exactly once only while its session lives, i.e. if the client
retries within ``ttl_ns`` (in leader time) of its last activity, and before ``max_sessions`` more recently active
sessions push it out. A retry after that is treated as a new request and MAY APPLY TWICE. Clients must therefore
stop retrying well before the TTL (the client library's deadline is far shorter than the default hour), and an
operator who lowers ``max_sessions`` trades memory for a weaker guarantee under many clients. Every replica must
use the same ``ttl_ns`` and ``max_sessions``, or their tables (and then their data) diverge.

Tables (through any ``KVBackend``: separate LMDB databases in production)::

    sessions         client_id (8 bytes, big-endian)                     -> encode_session_record(seq, active, result)
    sessions_by_age  last_active_ns (8 bytes BE) + client_id (8 bytes BE) -> b""
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple, Protocol

from raftkv.codec import decode_session_record, encode_session_record

from .commands import DuplicateResult, Result, decode_result, encode_result

__all__ = ["SessionRecord", "SessionTable"]

_CLIENT = struct.Struct(">Q")
_AGE = struct.Struct(">QQ")
_DUPLICATE = DuplicateResult()


class _Table(Protocol):
    """The part of ``raftkv.kv.fsm.KVBackend`` the session table uses."""

    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...

    def iter_from(self, start: bytes) -> Iterator[tuple[bytes, bytes]]: ...

    def count(self) -> int: ...


class SessionRecord(NamedTuple):
    """One session: the last seq applied, when (logical ns) it was last active, and the encoded result."""

    last_seq: int
    last_active_ns: int
    result: bytes


class SessionTable:
    """The session logic over one transaction's two tables. Holds no state of its own beyond the tables and the
    limits, so a transaction that is retried simply builds a new one.

    Invariant: ``sessions`` and ``sessions_by_age`` describe the same set of sessions — client ``c`` with
    ``last_active_ns == t`` is in ``sessions`` iff ``(t, c)`` is in ``sessions_by_age``."""

    __slots__ = ("_by_age", "_max_sessions", "_table", "_ttl_ns")

    def __init__(self, table: _Table, by_age: _Table, *, ttl_ns: int, max_sessions: int) -> None:
        if ttl_ns <= 0 or max_sessions < 0:
            raise ValueError(f"need ttl_ns > 0 and max_sessions >= 0, got {ttl_ns} and {max_sessions}")
        self._table = table
        self._by_age = by_age
        self._ttl_ns = ttl_ns
        self._max_sessions = max_sessions

    def get(self, client_id: int) -> SessionRecord | None:
        raw = self._table.get(_CLIENT.pack(client_id))
        return None if raw is None else SessionRecord(*decode_session_record(raw))

    def admit(self, client_id: int, seq: int, now_ns: int) -> tuple[Result | None, SessionRecord | None]:
        """Decide what to do with request ``seq`` of session ``client_id`` (> 0): ``(answer, previous)``.

        ``answer`` None: apply the command, then call ``record(client_id, seq, now_ns, result, previous)``.
        Otherwise return ``answer`` without applying: the cached result of a retry (the session is touched: its
        ``last_active_ns`` becomes ``now_ns``), or ``DuplicateResult()`` for an older seq (nothing changes)."""
        previous = self.get(client_id)
        if previous is None or seq > previous.last_seq:
            return None, previous
        if seq < previous.last_seq:
            return _DUPLICATE, previous
        self._store(client_id, SessionRecord(seq, now_ns, previous.result), previous)
        return decode_result(previous.result), previous

    def record(self, client_id: int, seq: int, now_ns: int, result: Result, previous: SessionRecord | None) -> None:
        """Store ``result`` as the answer to ``seq``, the session's new last request (``previous`` as ``admit``
        returned it)."""
        self._store(client_id, SessionRecord(seq, now_ns, encode_result(result)), previous)

    def _store(self, client_id: int, rec: SessionRecord, previous: SessionRecord | None) -> None:
        self._table.put(_CLIENT.pack(client_id), encode_session_record(*rec))
        if previous is not None:
            if previous.last_active_ns == rec.last_active_ns:
                return
            self._by_age.delete(_AGE.pack(previous.last_active_ns, client_id))
        self._by_age.put(_AGE.pack(rec.last_active_ns, client_id), b"")

    def expire(self, now_ns: int) -> list[int]:
        """Remove the sessions idle for more than the TTL at logical time ``now_ns``, then the least recently
        active ones beyond ``max_sessions``. Returns the removed client ids, oldest first. O(removed)."""
        cutoff = now_ns - self._ttl_ns
        excess = self._table.count() - self._max_sessions
        victims: list[tuple[bytes, int]] = []
        for key, _ in self._by_age.iter_from(b""):
            active_ns, client_id = _AGE.unpack(key)
            if active_ns >= cutoff and len(victims) >= excess:
                break
            victims.append((key, client_id))
        for key, client_id in victims:  # collected first: no table changes under a live iterator
            self._by_age.delete(key)
            self._table.delete(_CLIENT.pack(client_id))
        return [client_id for _, client_id in victims]

    def count(self) -> int:
        return self._table.count()

    def __iter__(self) -> Iterator[tuple[int, SessionRecord]]:
        """``(client_id, record)`` for every session, by client id."""
        for key, raw in self._table.iter_from(b""):
            yield _CLIENT.unpack(key)[0], SessionRecord(*decode_session_record(raw))
