"""Client-observed operation histories of the key-value store.

A history is a list of :class:`Op` records, one per client request, each with the interval (``invoke_ts`` to
``complete_ts``) during which the client was waiting for it and the outcome it saw. The checker in
:mod:`raftkv.chaos.linearizability` decides whether some sequential execution of the store explains the history.

Operations and their sequential semantics (one key each; an absent key is ``None``):

* ``put(key, value)``: set the value; result ``None``.
* ``get(key)``: result is the current value, ``None`` when absent.
* ``delete(key)``: remove the key; result ``None``.
* ``cas(key, expected, value)``: if the current value equals ``expected`` (``None`` meaning "absent"), set it to
  ``value`` (``None`` removes the key) and return ``True``; otherwise change nothing and return ``False``.
* ``incr(key, delta)``: the value is an ASCII decimal integer (``-?[0-9]+``; absent counts as 0); set it to
  ``old + delta`` (stored as ``str(new).encode()``) and return the new ``int``. On a value that is not such an
  integer the store refuses the request, so an acknowledged incr cannot have happened there.

Outcomes (``status``):

* ``"ok"``: the operation took effect exactly once, at some instant between invocation and completion, and the
  client saw ``result``.
* ``"fail"``: it definitely did not take effect (the checker drops it).
* ``"unknown"``: it may or may not have taken effect, at any instant after its invocation (a timeout, a lost
  connection). ``complete_ts`` is normally ``None`` and ``result`` is ``None``; the checker treats the completion as
  +infinity and the result as unconstrained. A ``cas`` that was answered ``False`` is ``"ok"`` with result
  ``False``, not ``"fail"``.

Files are JSON lines, one object per :class:`Op` with the field names of the dataclass. Byte strings (``key``,
``value``, ``expected`` and the result of a ``get``) are stored as JSON strings whose code points are the bytes
(latin-1 decoding), so ASCII keys and values stay readable and any byte string round-trips; ``None`` is ``null``.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "KINDS",
    "STATUSES",
    "History",
    "Op",
    "Result",
    "dump_history",
    "load_history",
    "op_from_json",
    "op_to_json",
    "parse_counter",
    "show_key",
    "show_value",
]

KINDS = ("put", "get", "delete", "cas", "incr")
STATUSES = ("ok", "fail", "unknown")

#: get -> bytes | None, cas -> bool, incr -> int, put/delete -> None.
Result = bytes | bool | int | None

_COUNTER = re.compile(rb"-?[0-9]+")


def parse_counter(value: bytes | None) -> int | None:
    """The integer an ``incr`` sees in ``value`` (absent is 0), or ``None`` if it is not a decimal integer."""
    if value is None:
        return 0
    if _COUNTER.fullmatch(value) is None:
        return None
    return int(value)


def show_value(value: bytes | None) -> str:
    """A value for messages: ``absent`` for ``None``, else the ``bytes`` repr, shortened if long."""
    return "absent" if value is None else _short(value)


def _short(value: bytes, limit: int = 40) -> str:
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"...({len(value)} bytes)"


def show_key(key: bytes) -> str:
    """A key for messages: plain text when it is printable ASCII, else its ``bytes`` repr."""
    try:
        text = key.decode("ascii")
    except UnicodeDecodeError:
        return _short(key)
    return text if text.isprintable() and text and " " not in text and len(text) <= 40 else _short(key)


@dataclass(frozen=True, slots=True)
class Op:
    """One client request and what the client saw of it (see the module docstring for the semantics)."""

    id: int
    process: int
    kind: str
    key: bytes
    value: bytes | None = None
    expected: bytes | None = None
    delta: int = 0
    invoke_ts: int = 0
    complete_ts: int | None = None
    status: str = "ok"
    result: Result = None

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem is not None:
            raise ValueError(f"invalid op {self.id}: {problem}")

    def _problem(self) -> str | None:
        if self.kind not in KINDS:
            return f"kind {self.kind!r} is not one of {KINDS}"
        if self.status not in STATUSES:
            return f"status {self.status!r} is not one of {STATUSES}"
        if not isinstance(self.key, bytes):
            return "key must be bytes"
        if self.kind == "put" and not isinstance(self.value, bytes):
            return "put needs a bytes value"
        if self.kind == "cas" and not (self.value is None or isinstance(self.value, bytes)):
            return "cas value must be bytes or None"
        if self.kind not in ("put", "cas") and self.value is not None:
            return f"{self.kind} takes no value"
        if self.kind == "cas" and not (self.expected is None or isinstance(self.expected, bytes)):
            return "cas expected must be bytes or None"
        if self.kind != "cas" and self.expected is not None:
            return f"{self.kind} takes no expected value"
        if not isinstance(self.delta, int) or isinstance(self.delta, bool):
            return "delta must be an int"
        if self.complete_ts is not None and self.complete_ts < self.invoke_ts:
            return f"completes ({self.complete_ts}) before it is invoked ({self.invoke_ts})"
        if self.status != "ok":
            return None if self.result is None else f"a {self.status!r} op has no result"
        if self.complete_ts is None:
            return "an 'ok' op needs complete_ts"
        r = self.result
        if self.kind == "get":
            ok = r is None or isinstance(r, bytes)
        elif self.kind == "cas":
            ok = isinstance(r, bool)
        elif self.kind == "incr":
            ok = isinstance(r, int) and not isinstance(r, bool)
        else:
            ok = r is None
        return None if ok else f"result {r!r} does not fit a {self.kind}"

    def describe(self) -> str:
        """E.g. ``get k1 -> b'2' (op 17, process 3)``; an outcome of ``?`` means unknown."""
        k = show_key(self.key)
        if self.kind == "put":
            text = f"put {k} {show_value(self.value)}"
        elif self.kind == "get":
            text = f"get {k}"
        elif self.kind == "delete":
            text = f"delete {k}"
        elif self.kind == "cas":
            text = f"cas {k} {show_value(self.expected)}->{show_value(self.value)}"
        else:
            text = f"incr {k} {self.delta:+d}"
        if self.status == "unknown":
            text += " -> ?"
        elif self.status == "fail":
            text += " -> failed"
        elif self.kind == "get":
            text += f" -> {show_value(self.result)}"  # type: ignore[arg-type]
        elif self.kind in ("cas", "incr"):
            text += f" -> {self.result!r}"
        return f"{text} (op {self.id}, process {self.process})"


def _enc(b: bytes | None) -> str | None:
    return None if b is None else b.decode("latin-1")


def _dec(s: Any, what: str) -> bytes | None:
    if s is None:
        return None
    if not isinstance(s, str):
        raise ValueError(f"{what} must be a string or null, not {s!r}")
    return s.encode("latin-1")


def op_to_json(op: Op) -> dict[str, Any]:
    """The JSON object for ``op`` (see the module docstring for how bytes are encoded)."""
    result: Any = op.result
    if op.kind == "get" and isinstance(result, bytes):
        result = _enc(result)
    return {
        "id": op.id,
        "process": op.process,
        "kind": op.kind,
        "key": _enc(op.key),
        "value": _enc(op.value),
        "expected": _enc(op.expected),
        "delta": op.delta,
        "invoke_ts": op.invoke_ts,
        "complete_ts": op.complete_ts,
        "status": op.status,
        "result": result,
    }


def op_from_json(obj: dict[str, Any]) -> Op:
    """Inverse of :func:`op_to_json`; raises ``ValueError`` on a malformed record."""
    try:
        kind = obj["kind"]
        result = obj.get("result")
        if kind == "get":
            result = _dec(result, "get result")
        key = _dec(obj["key"], "key")
        if key is None:
            raise ValueError("key must not be null")
        return Op(
            id=obj["id"],
            process=obj["process"],
            kind=kind,
            key=key,
            value=_dec(obj.get("value"), "value"),
            expected=_dec(obj.get("expected"), "expected"),
            delta=obj.get("delta", 0),
            invoke_ts=obj["invoke_ts"],
            complete_ts=obj.get("complete_ts"),
            status=obj["status"],
            result=result,
        )
    except (KeyError, UnicodeEncodeError) as e:
        raise ValueError(f"malformed op record {obj!r}: {e}") from e


def dump_history(ops: Iterable[Op], path: str | os.PathLike[str]) -> None:
    """Write ``ops`` to ``path`` as JSON lines, one op per line."""
    with open(path, "w", encoding="utf-8") as f:
        for op in ops:
            f.write(json.dumps(op_to_json(op), ensure_ascii=True))
            f.write("\n")


def load_history(path: str | os.PathLike[str]) -> list[Op]:
    """Read a history written by :func:`dump_history` (blank lines are skipped)."""
    ops: list[Op] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
                ops.append(op_from_json(obj))
            except ValueError as e:
                raise ValueError(f"{os.fspath(path)}:{lineno}: {e}") from e
    return ops


@dataclass(slots=True)
class _Pending:
    process: int
    kind: str
    key: bytes
    value: bytes | None
    expected: bytes | None
    delta: int
    invoke_ts: int


class History:
    """Records a history as a test harness issues requests (plain method calls, safe to use from asyncio tasks).

    ::

        rec = History()
        op_id = rec.invoke(process, "cas", b"k", expected=b"1", value=b"2")
        ...  # send the request
        rec.complete(op_id, "ok", True)  # or "fail", or "unknown" (e.g. on a timeout)
        ops = rec.ops()

    A process has at most one outstanding op; after an ``"unknown"`` outcome it may go on with a new op (the checker
    only uses real-time order, not process order). ``clock`` returns integer nanoseconds and must not go backwards.
    """

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self._clock = clock
        self._next_id = 0
        self._pending: dict[int, _Pending] = {}
        self._busy: dict[int, int] = {}  # process -> its outstanding op id
        self._done: dict[int, Op] = {}

    def invoke(
        self,
        process: int,
        kind: str,
        key: bytes,
        *,
        value: bytes | None = None,
        expected: bytes | None = None,
        delta: int = 0,
    ) -> int:
        """Record the invocation of a request now and return its op id."""
        if process in self._busy:
            raise ValueError(f"process {process} already has op {self._busy[process]} outstanding")
        op_id = self._next_id
        pending = _Pending(process, kind, key, value, expected, delta, self._clock())
        self._check(op_id, pending, "unknown", None, None)  # validate the request itself up front
        self._next_id += 1
        self._pending[op_id] = pending
        self._busy[process] = op_id
        return op_id

    def complete(self, op_id: int, status: str, result: Result = None) -> None:
        """Record the outcome of ``op_id`` now; ``status`` is ``"ok"``, ``"fail"`` or ``"unknown"``."""
        pending = self._pending.get(op_id)
        if pending is None:
            raise ValueError(f"op {op_id} is not outstanding")
        complete_ts = None if status == "unknown" else self._clock()
        op = self._check(op_id, pending, status, complete_ts, result)
        del self._pending[op_id]
        del self._busy[pending.process]
        self._done[op_id] = op

    def ops(self) -> list[Op]:
        """All ops in invocation order; those still outstanding are reported as ``"unknown"``."""
        out = dict(self._done)
        for op_id, p in self._pending.items():
            out[op_id] = self._check(op_id, p, "unknown", None, None)
        return [out[i] for i in sorted(out)]

    @staticmethod
    def _check(op_id: int, p: _Pending, status: str, complete_ts: int | None, result: Result) -> Op:
        return Op(
            id=op_id,
            process=p.process,
            kind=p.kind,
            key=p.key,
            value=p.value,
            expected=p.expected,
            delta=p.delta,
            invoke_ts=p.invoke_ts,
            complete_ts=complete_ts,
            status=status,
            result=result,
        )
