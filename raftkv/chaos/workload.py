"""The chaos workload: concurrent clients doing random operations on a few keys, recorded as a history.

Each client *process* is an asyncio task with its own :class:`~raftkv.client.Client` (its own sessions, its own
leader guess) and its own process id in the history; it has at most one operation outstanding. It loops: pick an
operation, record its invocation, send it, record the outcome, pause a moment (``think_s``), until told to stop.
The operation mix (:data:`DEFAULT_MIX`):

* ``get`` of a register key or of the counter, at the requested consistency level, with ``min_index=0``;
* ``put`` of a value no other operation writes (``"<process>-<n>"``), so a value read names its one writer;
* ``cas`` from the last value this process saw on that key (absent if none) to a fresh unique value;
* ``delete``;
* ``incr`` by 1 of the dedicated counter key (:data:`COUNTER_KEY`), which nothing else writes: the counter check
  compares it with the number of acknowledged increments, and its own key keeps the register keys' search small.

Why ``min_index=0`` on every read: by default the client sends the highest index it has seen, which gives each
client read-your-writes and monotonic reads even on a stale follower. That is a property of the client library.
The chaos test asks what the *server* guarantees at the chosen level, so reads carry no such floor: a
``linearizable`` read must be linearizable on its own, and a ``stale`` read may (and under partitions will) return
old state from any node, which the checker then reports.

Outcomes (:func:`classify`), following the client's contract:

* success: ``ok`` (a ``cas`` answered "no swap" is ``ok`` with result False);
* a read that failed in any way: ``fail`` (reads never change state);
* a write that raised ``Unavailable``, ``NotLeader``, ``InvalidArgument``, ``ConditionFailed`` or ``Timeout`` with
  ``outcome_unknown=False``: ``fail``, it definitely did not apply;
* any other failure of a write (``Timeout`` with ``outcome_unknown=True``, an unexpected error): ``unknown``, it
  may have applied, at any time after its invocation.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..client import Client, KeyValue
from ..errors import APPLIED_UNKNOWN, ConditionFailed, InvalidArgument, NotLeader, RaftKVError, Timeout, Unavailable
from .history import History, Result

__all__ = [
    "COUNTER_KEY",
    "DEFAULT_MIX",
    "PROBE_KEY",
    "KVClient",
    "Workload",
    "WorkloadConfig",
    "classify",
    "register_keys",
]

COUNTER_KEY = b"counter"
"""The key only ``incr`` (by +1) writes."""
PROBE_KEY = b"probe"
"""The key the runner's recovery probe writes (never the workload)."""
DEFAULT_MIX: Mapping[str, float] = {"get": 0.35, "put": 0.25, "cas": 0.12, "delete": 0.05, "incr": 0.23}
WRITES = frozenset({"put", "cas", "delete", "incr"})


def register_keys(n: int) -> list[bytes]:
    """The workload's register keys: ``k0`` .. ``k{n-1}``."""
    return [f"k{i}".encode() for i in range(n)]


def classify(exc: BaseException, *, write: bool) -> str:
    """The history status of an operation that raised ``exc``: ``"fail"`` (definitely not applied) or
    ``"unknown"`` (may have applied). See the module docstring.

    The error's ``applied`` field decides ("unknown": may have applied); of the errors that say "no", only those that
    refuse a write outright count as definite failures. ``ReadOnly`` and anything unexpected stay unknown, to be
    safe: a history that calls an applied write failed would make the checker report a violation that is not one."""
    if not write:
        return "fail"
    if isinstance(exc, RaftKVError) and exc.applied == APPLIED_UNKNOWN:
        return "unknown"
    if isinstance(exc, Timeout | Unavailable | NotLeader | InvalidArgument | ConditionFailed):
        return "fail"
    return "unknown"


class KVClient(Protocol):
    """What the workload needs of a client: the methods of :class:`~raftkv.client.Client` it calls (a seam for
    tests, which pass an in-memory fake)."""

    async def get(self, key: bytes, *, consistency: str = ..., min_index: int | None = ...) -> KeyValue | None: ...

    async def put(self, key: bytes, value: bytes) -> Any: ...

    async def cas(self, key: bytes, expected: bytes | None, new: bytes) -> bool: ...

    async def delete(self, key: bytes) -> Any: ...

    async def incr(self, key: bytes, delta: int = ...) -> int: ...

    async def aclose(self) -> None: ...


def _real_client(endpoints: Sequence[str], timeout_s: float) -> KVClient:
    return Client(endpoints, timeout_s=timeout_s)


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    """``clients`` processes on ``keys`` register keys plus the counter; reads at ``consistency``; every request
    bounded by ``op_timeout_s`` (retries included); between operations each process pauses a random
    0..2*``think_s`` seconds (the load stays moderate, and histories checkable)."""

    clients: int = 10
    keys: int = 5
    consistency: str = "linearizable"
    op_timeout_s: float = 3.0
    think_s: float = 0.02
    seed: int = 0
    mix: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))


@dataclass(slots=True)
class _Counts:
    ok: int = 0
    fail: int = 0
    unknown: int = 0


class Workload:
    """Runs the processes against ``endpoints``, recording into ``history``. ``give_up_ns`` keeps, for each op
    whose outcome is unknown, when its client gave up (the history leaves its completion open); the timeline uses
    it. ``client_factory`` builds each process's client (tests pass a fake)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        config: WorkloadConfig,
        history: History,
        *,
        client_factory: Callable[[Sequence[str], float], KVClient] = _real_client,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        if config.clients < 1 or config.keys < 1:
            raise ValueError("the workload needs at least one client and one key")
        unknown = set(config.mix) - {"get", "put", "cas", "delete", "incr"}
        if unknown or not any(w > 0 for w in config.mix.values()):
            raise ValueError(f"bad operation mix {dict(config.mix)}")
        self.endpoints = list(endpoints)
        self.config = config
        self.history = history
        self.give_up_ns: dict[int, int] = {}
        self.counts = _Counts()
        self._factory = client_factory
        self._clock_ns = clock_ns
        self._keys = register_keys(config.keys)
        self._kinds = list(config.mix)
        self._weights = [config.mix[k] for k in self._kinds]

    async def run(self, stop: asyncio.Event) -> None:
        """Run every process until ``stop`` is set; each finishes the operation it has in flight (bounded by
        ``op_timeout_s``), so on return nothing is outstanding. Cancelled, the operations in flight stay open and
        :meth:`History.ops` reports them as unknown."""
        async with asyncio.TaskGroup() as tg:
            for p in range(self.config.clients):
                tg.create_task(self._process(p, stop))

    async def _process(self, process: int, stop: asyncio.Event) -> None:
        cfg = self.config
        rng = random.Random(f"{cfg.seed}/{process}")
        seen: dict[bytes, bytes | None] = {}  # the last value this process saw per key
        n = 0
        client = self._factory(self.endpoints, cfg.op_timeout_s)
        try:
            while not stop.is_set():
                kind = rng.choices(self._kinds, self._weights)[0]
                n += 1
                await self.one(client, process, kind, rng, seen, n)
                if cfg.think_s > 0 and not stop.is_set():
                    await asyncio.sleep(rng.uniform(0, 2 * cfg.think_s))
        finally:
            await client.aclose()

    async def one(
        self,
        client: KVClient,
        process: int,
        kind: str,
        rng: random.Random,
        seen: dict[bytes, bytes | None],
        n: int,
    ) -> str:
        """Do one operation of ``kind`` and record it; returns its status."""
        h = self.history
        value: bytes | None = None
        expected: bytes | None = None
        if kind == "incr":
            key = COUNTER_KEY
            op_id = h.invoke(process, "incr", key, delta=1)
        elif kind == "get":
            key = COUNTER_KEY if rng.random() < 0.15 else rng.choice(self._keys)
            op_id = h.invoke(process, "get", key)
        else:
            key = rng.choice(self._keys)
            if kind == "delete":
                op_id = h.invoke(process, "delete", key)
            else:
                value = f"{process}-{n}".encode()
                expected = seen.get(key)
                op_id = h.invoke(process, kind, key, value=value, expected=expected if kind == "cas" else None)
        result: Result = None
        try:
            if kind == "get":
                kv = await client.get(key, consistency=self.config.consistency, min_index=0)
                result = None if kv is None else kv.value
                seen[key] = result
            elif kind == "put":
                assert value is not None
                await client.put(key, value)
                seen[key] = value
            elif kind == "cas":
                assert value is not None
                result = await client.cas(key, expected, value)
                if result:
                    seen[key] = value
                else:
                    seen.pop(key, None)  # the value moved on: next time expect absence, or read it first
            elif kind == "delete":
                await client.delete(key)
                seen[key] = None
            else:
                result = await client.incr(key, 1)
        except asyncio.CancelledError:
            raise  # left outstanding: reported as unknown
        except Exception as e:
            status = classify(e, write=kind in WRITES)
            now = self._clock_ns()
            h.complete(op_id, status)
            if status == "unknown":
                self.give_up_ns[op_id] = now
                self.counts.unknown += 1
                seen.pop(key, None)
            else:
                self.counts.fail += 1
            return status
        h.complete(op_id, "ok", result)
        self.counts.ok += 1
        return "ok"
