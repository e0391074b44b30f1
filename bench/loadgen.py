"""The load generator: N concurrent clients in one process against raftkv, etcd or the no-op server; prints one JSON
result on stdout.

    python -m bench.loadgen --target raftkv --endpoints 127.0.0.1:8001,127.0.0.1:8002 --workload put \\
        --clients 16 --duration 5 --warmup 1
    python -m bench.loadgen --target etcd --endpoints 127.0.0.1:2379 --workload get-stale --clients 16
    python -m bench.loadgen --preload --target raftkv --endpoints ... --keys 10000   # write bench/00000000 ...
    python -m bench.loadgen --serve-noop 127.0.0.1:0                                  # the no-op server

Each client is one coroutine issuing one operation at a time (closed loop) and timing it. Operations that complete
during the warm-up are counted apart; those that complete in the measured window are recorded in a log-bucketed
latency histogram (:class:`Histogram`: exact below 256 us, relative error < 0.8 % above) and in 1-second throughput
buckets; failures are counted by kind (the gRPC status code, plus raftkv's error kind when the server sent one) and
never timed. Processes started with the same ``--start-at`` (a wall-clock time; or given it on stdin after
``--wait-go``) measure the same window, so their results merge (``merge_results``): counts and histograms add up.

Targets:

* ``raftkv`` with ``--client-mode rpc`` (default): raw gRPC stubs (``raftkv.proto.v1``), one operation per call.
  Like the etcd clients below, each client is pinned to one member, the clients spread evenly over the members:
  followers forward writes to the leader and serve linearizable reads through ReadIndex. A ``NotLeader`` answer
  (a cluster run with ``forward_proposals = false``) moves the client to the leader named in the
  ``raftkv-leader-addr`` trailing metadata for good. Lease reads go to the leader (found with ``Status``). Every
  put carries a session (one per client coroutine), as the library's do. The mode comparable with etcd's stubs.
* ``raftkv`` with ``--client-mode library``: through :class:`raftkv.client.Client` (one per process), which may
  coalesce concurrent operations into batch RPCs.
* ``etcd``: raftkv's stubs of etcd's API (see ``bench/etcd.py``); each client is pinned to one
  member, the clients spread evenly over the members (etcd forwards writes to its leader internally).
* ``noop``: the no-op server (``--serve-noop``) speaking raftkv's API: the load generator's own ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import math
import os
import random
import resource
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
SCHEMA = "raftkv-bench-loadgen/1"
WORKLOADS: dict[str, tuple[tuple[str, int], ...]] = {
    # workload -> (operation, weight) ...; operations: put, get:<consistency>, incr, txn, cas
    "put": (("put", 1),),
    "get-linearizable": (("get:linearizable", 1),),
    "get-lease": (("get:lease", 1),),
    "get-stale": (("get:stale", 1),),
    "mixed-90-10": (("get:linearizable", 90), ("put", 10)),
    "mixed-50-50": (("get:linearizable", 50), ("put", 50)),
    "incr": (("incr", 1),),
    "txn": (("txn", 1),),
    "cas": (("cas", 1),),
}
TARGETS = ("raftkv", "etcd", "noop")
CLIENT_MODES = ("rpc", "library")
KEY_PREFIX = b"bench/"
READY_LINE = "ready"
"""With ``--wait-go``: the line on stderr saying the target is set up and the process waits for its start time."""
PROGRESS_PREFIX = "progress "
"""Lines on stderr starting with this carry a JSON progress report (the harness shows them in its progress bar)."""


def key_of(i: int) -> bytes:
    """The i-th key of the benchmark's keyspace (``bench/00000042``): what ``--preload`` writes and reads use."""
    return KEY_PREFIX + b"%08d" % i


def workload_reads(workload: str) -> bool:
    """Whether the workload reads existing keys (so the harness preloads the keyspace first)."""
    return any(op.startswith("get:") for op, _ in WORKLOADS[workload])


def workload_ops(workload: str) -> list[str]:
    return [op for op, _ in WORKLOADS[workload]]


# -- the latency histogram --------------------------------------------------------------------------------------
class Histogram:
    """A log-bucketed latency histogram in integer microseconds, in the manner of HdrHistogram.

    Values below ``2**SUB_BITS`` us are kept exactly; above, each power of two is split into ``2**(SUB_BITS-1)``
    equal buckets, so a bucket's width is less than 1/128 of its values (relative error < 0.8 %, reported values
    err upwards: a percentile is the highest value of its bucket, never above the recorded maximum). Merging two
    histograms adds their counts. ``count``, ``min_us``, ``max_us`` and ``sum_us`` are exact."""

    SUB_BITS = 8

    __slots__ = ("count", "counts", "max_us", "min_us", "sum_us")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        """bucket lower bound (us) -> count."""
        self.count = 0
        self.min_us = 0
        self.max_us = 0
        self.sum_us = 0

    @classmethod
    def bucket_of(cls, us: int) -> tuple[int, int]:
        """(lower bound, width) of the bucket holding ``us``."""
        shift = us.bit_length() - cls.SUB_BITS
        if shift <= 0:
            return us, 1
        return (us >> shift) << shift, 1 << shift

    def record_us(self, us: int) -> None:
        us = max(0, int(us))
        shift = us.bit_length() - self.SUB_BITS
        b = (us >> shift) << shift if shift > 0 else us
        c = self.counts
        c[b] = c.get(b, 0) + 1
        if self.count == 0 or us < self.min_us:
            self.min_us = us
        if us > self.max_us:
            self.max_us = us
        self.count += 1
        self.sum_us += us

    def record_s(self, seconds: float) -> None:
        self.record_us(round(seconds * 1e6))

    def merge(self, other: Histogram) -> None:
        if other.count == 0:
            return
        c = self.counts
        for b, n in other.counts.items():
            c[b] = c.get(b, 0) + n
        self.min_us = other.min_us if self.count == 0 else min(self.min_us, other.min_us)
        self.max_us = max(self.max_us, other.max_us)
        self.count += other.count
        self.sum_us += other.sum_us

    def percentile_us(self, q: float) -> float:
        """The nearest-rank ``q``-th percentile (0 < q <= 100): the smallest recorded value (to bucket precision)
        such that at least ``q`` % of the values are at or below it. 0 when empty."""
        if not 0 < q <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {q}")
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(q / 100.0 * self.count - 1e-9))
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                _, width = self.bucket_of(b)
                return float(min(max(b + width - 1, self.min_us), self.max_us))
        return float(self.max_us)

    def mean_us(self) -> float:
        return self.sum_us / self.count if self.count else 0.0

    def cdf(self) -> list[tuple[float, float]]:
        """(latency us: the bucket's highest value, fraction of values at or below it), ascending."""
        out = []
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            _, width = self.bucket_of(b)
            out.append((float(min(b + width - 1, self.max_us)), seen / self.count))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "unit": "us",
            "sub_bits": self.SUB_BITS,
            "count": self.count,
            "min": self.min_us,
            "max": self.max_us,
            "sum": self.sum_us,
            "buckets": [[b, self.counts[b]] for b in sorted(self.counts)],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Histogram:
        if d.get("unit", "us") != "us" or int(d.get("sub_bits", cls.SUB_BITS)) != cls.SUB_BITS:
            raise ValueError("histogram in another unit or precision")
        h = cls()
        h.counts = {int(b): int(n) for b, n in d.get("buckets", ())}
        h.count = int(d.get("count", sum(h.counts.values())))
        h.min_us = int(d.get("min", 0))
        h.max_us = int(d.get("max", 0))
        h.sum_us = int(d.get("sum", 0))
        return h

    @classmethod
    def of(cls, values_s: Iterable[float]) -> Histogram:
        h = cls()
        for v in values_s:
            h.record_s(v)
        return h


PERCENTILES: tuple[tuple[str, float], ...] = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))


def latency_summary_ms(h: Histogram) -> dict[str, float]:
    """p50, p90, p99, p99.9, max, min and mean of ``h`` in milliseconds."""
    out = {name: h.percentile_us(q) / 1000.0 for name, q in PERCENTILES}
    out["max"] = h.max_us / 1000.0
    out["min"] = h.min_us / 1000.0
    out["mean"] = h.mean_us() / 1000.0
    return out


# -- targets ----------------------------------------------------------------------------------------------------
class OpError(Exception):
    """An operation failed; ``kind`` is what the result counts it under (``UNAVAILABLE/unavailable``, ...)."""

    def __init__(self, kind: str, message: str = "") -> None:
        super().__init__(message or kind)
        self.kind = kind


class Unsupported(Exception):
    """The target cannot run this operation (a one-line reason: "n/a: etcd has no lease reads")."""


class SetupError(Exception):
    """The target could not be reached or prepared (a one-line reason)."""


class Target(Protocol):
    """What the load generator drives. ``worker`` is the client coroutine's index in this process."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def check(self, op: str) -> None:
        """Raise :class:`Unsupported` if ``op`` cannot run on this target."""

    async def do(self, op: str, worker: int, key: bytes) -> None:
        """Run one operation; raise :class:`OpError` when it fails."""


_GRPC_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def rpc_error_text(e: Any) -> str:
    """``CODE (details)`` of a ``grpc.aio.AioRpcError`` in a few words (a refused connection: "connection refused")."""
    code = e.code()
    details = str(e.details() or "")
    if "failed to connect" in details.lower():
        details = details.rsplit(": ", 1)[-1].lower()
    details = details if len(details) <= 100 else details[:97] + "..."
    return f"{code.name if code is not None else 'UNKNOWN'}" + (f" ({details})" if details else "")


def rpc_error_kind(e: Any) -> str:
    """``CODE`` or ``CODE/raftkv-kind`` for a ``grpc.aio.AioRpcError``."""
    code = e.code()
    name = code.name if code is not None else "UNKNOWN"
    for k, v in e.trailing_metadata() or ():
        if k == "raftkv-error" and v:
            return f"{name}/{v}"
    return name


def _raftkv_feature(op: str, mode: str) -> str | None:
    """None when the installed raftkv supports ``op`` (incr, txn, cas) in client ``mode``, else why not."""
    if mode == "rpc":
        from raftkv.proto.v1 import kv_pb2

        if op == "incr" and not hasattr(kv_pb2, "IncrRequest"):
            return "not supported by this raftkv version (its API has no Incr RPC)"
        if op == "txn" and not hasattr(kv_pb2, "TxnRequest"):
            return "not supported by this raftkv version (its API has no Txn RPC)"
        if op == "cas" and "conditions" not in kv_pb2.PutRequest.DESCRIPTOR.fields_by_name:
            return "not supported by this raftkv version (its PutRequest has no conditions)"
        return None
    import raftkv.client as rc

    if op == "incr" and not callable(getattr(rc.Client, "incr", None)):
        return "not supported by this raftkv version (raftkv.client.Client has no incr)"
    if op == "txn" and not (callable(getattr(rc.Client, "txn", None)) and hasattr(rc, "Compare")
                            and hasattr(rc, "TxnOp")):
        return "not supported by this raftkv version (raftkv.client has no txn, Compare, TxnOp)"
    if op == "cas" and "if_version" not in inspect.signature(rc.Client.put).parameters:
        return "not supported by this raftkv version (raftkv.client.Client.put has no if_version)"
    return None


def counter_key(key: bytes) -> bytes:
    """The counter the incr workload uses for ``key`` (its own prefix: never a key holding a random value)."""
    return b"bench/ctr/" + key[len(KEY_PREFIX) :]


def cas_key(worker_base: int, worker: int) -> bytes:
    """The key a cas client owns (each client its own: the conditions hold unless something else writes it)."""
    return b"bench/cas/%d-%d" % (os.getpid(), worker_base + worker)


class RaftkvRpcTarget:
    """raftkv through raw stubs: one gRPC call per operation, each client coroutine pinned to one member (moved to
    the leader by a NotLeader redirect); lease reads to the leader. Each client coroutine has its own session
    (client id) for its writes."""

    MAX_REDIRECTS = 5

    def __init__(self, endpoints: Sequence[str], value: bytes, *, timeout_s: float, worker_base: int = 0) -> None:
        self.endpoints = list(endpoints)
        self.value = value
        self.timeout_s = timeout_s
        self.worker_base = worker_base
        self.leader = self.endpoints[0]
        self.redirects = 0
        self._stubs: dict[str, Any] = {}
        self._channels: list[Any] = []
        self._client_base = random.SystemRandom().getrandbits(62) + 1
        self._seq_start = time.time_ns() // 1000
        self._seqs: dict[int, int] = {}
        self._cas: dict[int, tuple[bytes, int]] = {}  # worker -> (its key, the version it last wrote)
        self._home: dict[int, str] = {}  # worker -> the member it talks to

    def _stub(self, ep: str) -> Any:
        stub = self._stubs.get(ep)
        if stub is None:
            import grpc.aio

            from raftkv.proto.v1 import kv_pb2_grpc

            ch = grpc.aio.insecure_channel(ep, options=_GRPC_OPTIONS)
            self._channels.append(ch)
            stub = self._stubs[ep] = kv_pb2_grpc.KVStub(ch)  # type: ignore[no-untyped-call]
        return stub

    async def start(self) -> None:
        import grpc.aio

        from raftkv.proto.v1 import kv_pb2

        errors = []
        for ep in self.endpoints:
            try:
                st = await self._stub(ep).Status(kv_pb2.StatusRequest(), timeout=min(5.0, self.timeout_s))
            except grpc.aio.AioRpcError as e:
                errors.append(f"{ep}: {rpc_error_text(e)}")
                continue
            if st.role == "leader":
                self.leader = ep
                return
            for m in st.members:
                if m.id == st.header.leader_id and m.client_addr:
                    self.leader = m.client_addr
        if len(errors) == len(self.endpoints):
            raise SetupError(f"no raftkv endpoint answered Status ({'; '.join(errors)})")

    async def close(self) -> None:
        for ch in self._channels:
            await ch.close()

    def check(self, op: str) -> None:
        if op in ("incr", "txn", "cas"):
            reason = _raftkv_feature(op, "rpc")
            if reason:
                raise Unsupported(reason)

    def _session(self, worker: int) -> Any:
        from raftkv.proto.v1 import kv_pb2

        seq = self._seqs.get(worker, self._seq_start) + 1
        self._seqs[worker] = seq
        return kv_pb2.Session(client_id=self._client_base + self.worker_base + worker, seq=seq)

    def _home_of(self, worker: int) -> str:
        ep = self._home.get(worker)
        if ep is None:
            ep = self._home[worker] = self.endpoints[(self.worker_base + worker) % len(self.endpoints)]
        return ep

    async def _call(self, method: str, req: Any, worker: int | None = None) -> Any:
        """One call to ``worker``'s member (or, for ``worker=None``, to the leader), following NotLeader redirects
        (which move the worker to the leader for good); failures raise OpError."""
        import grpc.aio

        target = self._home_of(worker) if worker is not None else self.leader
        for _ in range(self.MAX_REDIRECTS + 1):
            try:
                return await getattr(self._stub(target), method)(req, timeout=self.timeout_s)
            except grpc.aio.AioRpcError as e:
                md = {k: v for k, v in (e.trailing_metadata() or ()) if isinstance(v, str)}
                if md.get("raftkv-error") == "not-leader":
                    addr = md.get("raftkv-leader-addr", "")
                    if addr and addr != target:
                        self.redirects += 1
                        target = addr
                        if worker is None:
                            self.leader = addr
                        else:
                            self._home[worker] = addr
                        continue
                raise OpError(rpc_error_kind(e), e.details() or "") from None
        raise OpError("too-many-redirects")

    async def do(self, op: str, worker: int, key: bytes) -> None:
        from raftkv.proto.v1 import kv_pb2

        if op == "put":
            req = kv_pb2.PutRequest(key=key, value=self.value, session=self._session(worker))
            await self._call("Put", req, worker)
        elif op.startswith("get:"):
            level = op[4:]
            consistency = {"linearizable": kv_pb2.LINEARIZABLE, "lease": kv_pb2.LEASE, "stale": kv_pb2.STALE}[level]
            get = kv_pb2.GetRequest(key=key, read=kv_pb2.ReadOptions(consistency=consistency))
            await self._call("Get", get, None if level == "lease" else worker)
        elif op == "incr":
            req = kv_pb2.IncrRequest(key=counter_key(key), delta=1, session=self._session(worker))
            await self._call("Incr", req, worker)
        elif op == "txn":
            # if version(key) < 2**62 (always) then put(key, value): one compare, one put, as etcd's Txn
            cmp = kv_pb2.Compare(key=key, target=kv_pb2.Compare.VERSION, op=kv_pb2.Compare.LESS, number=1 << 62)
            put = kv_pb2.TxnOp(type=kv_pb2.TxnOp.PUT, key=key, value=self.value)
            await self._call("Txn", kv_pb2.TxnRequest(compares=[cmp], success=[put], session=self._session(worker)),
                             worker)
        elif op == "cas":
            await self._cas_op(worker)
        else:
            raise Unsupported(f"unknown operation {op}")

    async def _cas_op(self, worker: int) -> None:
        """Put this client's own key if its version is the one this client last wrote (a raftkv conditional put)."""
        from raftkv.proto.v1 import kv_pb2

        own = self._cas.get(worker)
        if own is None:
            k = cas_key(self.worker_base, worker)
            r = await self._call("Put", kv_pb2.PutRequest(key=k, value=self.value, session=self._session(worker)),
                                 worker)
            own = self._cas[worker] = (k, r.kv.version)
        k, version = own
        cond = kv_pb2.Compare(target=kv_pb2.Compare.VERSION, op=kv_pb2.Compare.EQUAL, number=version)
        req = kv_pb2.PutRequest(key=k, value=self.value, session=self._session(worker), conditions=[cond])
        try:
            r = await self._call("Put", req, worker)
        except OpError as e:
            if e.kind.endswith("/condition-failed"):
                g = await self._call("Get", kv_pb2.GetRequest(key=k), worker)
                self._cas[worker] = (k, g.kv.version if g.found else 0)
            raise
        self._cas[worker] = (k, r.kv.version)


class NoopTarget(RaftkvRpcTarget):
    """The no-op server: raftkv's stubs against a server that answers Put and Get at once."""

    def check(self, op: str) -> None:
        if op in ("incr", "txn", "cas"):
            raise Unsupported(f"n/a: the no-op server has no {op}")


class LibraryTarget:
    """raftkv through :class:`raftkv.client.Client` (one client per process, one lane per coroutine)."""

    def __init__(
        self, endpoints: Sequence[str], value: bytes, *, timeout_s: float, lanes: int, worker_base: int = 0
    ) -> None:
        self.endpoints = list(endpoints)
        self.value = value
        self.timeout_s = timeout_s
        self.lanes = max(1, lanes)
        self.worker_base = worker_base
        self.client: Any = None
        self._cas: dict[int, tuple[bytes, int]] = {}  # worker -> (its key, the version it last wrote)
        self.redirects = 0

    async def start(self) -> None:
        from raftkv.client import Client
        from raftkv.errors import RaftKVError

        self.client = Client(self.endpoints, timeout_s=self.timeout_s, lanes=self.lanes)
        try:
            await self.client.status()
        except RaftKVError as e:
            raise SetupError(f"raftkv did not answer: {e.message}") from None

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    def check(self, op: str) -> None:
        if op in ("incr", "txn", "cas"):
            reason = _raftkv_feature(op, "library")
            if reason:
                raise Unsupported(reason)

    async def do(self, op: str, worker: int, key: bytes) -> None:
        from raftkv.errors import ConditionFailed, RaftKVError

        c = self.client
        try:
            if op == "put":
                await c.put(key, self.value)
            elif op.startswith("get:"):
                await c.get(key, consistency=op[4:])
            elif op == "incr":
                await c.incr(counter_key(key), 1)
            elif op == "txn":
                from raftkv.client import Compare, TxnOp

                await c.txn([Compare(key, "version", "<", 1 << 62)], [TxnOp.put(key, self.value)], [])
            elif op == "cas":
                own = self._cas.get(worker)
                if own is None:
                    k = cas_key(self.worker_base, worker)
                    r = await c.put(k, self.value)
                    own = self._cas[worker] = (k, r.version)
                try:
                    r = await c.put(own[0], self.value, if_version=own[1])
                except ConditionFailed:
                    kv = await c.get(own[0])
                    self._cas[worker] = (own[0], kv.version if kv is not None else 0)
                    raise
                self._cas[worker] = (own[0], r.version)
            else:
                raise Unsupported(f"unknown operation {op}")
        except RaftKVError as e:
            raise OpError(type(e).__name__, e.message) from None
        except TypeError as e:  # the client's API differs from what this harness expects
            raise Unsupported(f"not supported by this raftkv version ({op}: {e})") from None


def make_target(
    target: str,
    endpoints: Sequence[str],
    value: bytes,
    *,
    client_mode: str = "rpc",
    timeout_s: float = 5.0,
    clients: int = 1,
    worker_base: int = 0,
) -> Target:
    """The target object for ``target`` (raftkv / etcd / noop)."""
    if target == "raftkv":
        if client_mode == "library":
            return LibraryTarget(endpoints, value, timeout_s=timeout_s, lanes=clients, worker_base=worker_base)
        return RaftkvRpcTarget(endpoints, value, timeout_s=timeout_s, worker_base=worker_base)
    if target == "noop":
        if client_mode == "library":
            return LibraryTarget(endpoints, value, timeout_s=timeout_s, lanes=clients, worker_base=worker_base)
        return NoopTarget(endpoints, value, timeout_s=timeout_s, worker_base=worker_base)
    if target == "etcd":
        from .etcd import EtcdTarget

        return EtcdTarget(endpoints, value, timeout_s=timeout_s, worker_base=worker_base)
    raise ValueError(f"unknown target {target!r}")


# -- the run ----------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class LoadConfig:
    target: str
    endpoints: list[str]
    workload: str = "put"
    clients: int = 4
    duration_s: float = 5.0
    warmup_s: float = 1.0
    value_size: int = 256
    keys: int = 1000
    client_mode: str = "rpc"
    timeout_s: float = 5.0
    start_at: float | None = None
    """Wall-clock time (``time.time()``) to start the warm-up at; None: as soon as the target is ready."""
    wait_go: bool = False
    """After setting up, print ``ready`` on stderr and read the start time (a ``time.time()`` value) from stdin."""
    seed: int = 0
    worker_base: int = 0
    """Index of this process's first client among all processes (spreads clients over members, names sessions)."""
    progress: bool = False


@dataclass(slots=True)
class _Counters:
    hist: Histogram = field(default_factory=Histogram)
    ok_per_s: list[int] = field(default_factory=list)
    err_per_s: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    op_counts: dict[str, int] = field(default_factory=dict)
    warmup_ops: int = 0
    warmup_errors: int = 0
    late_ops: int = 0
    total_done: int = 0
    first_error: str = ""


def _proc_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _picker(workload: str) -> Callable[[random.Random], str]:
    mix = WORKLOADS[workload]
    if len(mix) == 1:
        only = mix[0][0]
        return lambda _rng: only
    ops = [op for op, _ in mix]
    cum = []
    total = 0
    for _, w in mix:
        total += w
        cum.append(total)

    def pick(rng: random.Random) -> str:
        x = rng.random() * total
        for op, c in zip(ops, cum, strict=True):
            if x < c:
                return op
        return ops[-1]

    return pick


async def run_load(cfg: LoadConfig, target: Target | None = None) -> dict[str, Any]:
    """Run the configured load and return the result dict (the JSON ``--target`` mode prints)."""
    if cfg.workload not in WORKLOADS:
        raise ValueError(f"unknown workload {cfg.workload!r}")
    value = random.Random(cfg.seed).randbytes(cfg.value_size)
    tgt = target or make_target(
        cfg.target,
        cfg.endpoints,
        value,
        client_mode=cfg.client_mode,
        timeout_s=cfg.timeout_s,
        clients=cfg.clients,
        worker_base=cfg.worker_base,
    )
    base = _result_base(cfg)
    for op in workload_ops(cfg.workload):
        try:
            tgt.check(op)
        except Unsupported as e:
            return {**base, "status": "unsupported", "reason": str(e)}
    try:
        await tgt.start()
        # One probe per operation: connections are open, and an unsupported API shows up before the window.
        for i, op in enumerate(workload_ops(cfg.workload)):
            try:
                await tgt.do(op, i, key_of(i % max(1, cfg.keys)))
            except OpError as e:
                base.setdefault("probe_errors", {})[op] = f"{e.kind}: {e}"
        return await _measure(cfg, tgt, base)
    except Unsupported as e:
        return {**base, "status": "unsupported", "reason": str(e)}
    except SetupError as e:
        return {**base, "status": "failed", "reason": str(e)}
    finally:
        with contextlib.suppress(Exception):
            await tgt.close()


def _result_base(cfg: LoadConfig) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "target": cfg.target,
        "endpoints": cfg.endpoints,
        "workload": cfg.workload,
        "client_mode": cfg.client_mode if cfg.target != "etcd" else "rpc",
        "clients": cfg.clients,
        "processes": 1,
        "value_size": cfg.value_size,
        "keys": cfg.keys,
        "duration_s": cfg.duration_s,
        "warmup_s": cfg.warmup_s,
        "pid": os.getpid(),
        "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
    }


async def _measure(cfg: LoadConfig, tgt: Target, base: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    late_s = 0.0
    start_at = cfg.start_at
    if cfg.wait_go:
        print(READY_LINE, file=sys.stderr, flush=True)
        line = await loop.run_in_executor(None, sys.stdin.readline)
        try:
            start_at = float(line)
        except ValueError:
            raise SetupError(f"expected a start time on stdin, got {line.strip()!r}") from None
    if start_at is not None:
        wait = start_at - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        else:
            late_s = -wait
    t_start = loop.time()
    m_start = t_start + cfg.warmup_s
    m_end = m_start + cfg.duration_s
    buckets = max(1, math.ceil(cfg.duration_s - 1e-9))
    k = _Counters(ok_per_s=[0] * buckets, err_per_s=[0] * buckets)
    pick = _picker(cfg.workload)
    nkeys = max(1, cfg.keys)
    cpu0: list[float] = []
    clock = time.perf_counter
    # perf_counter and the loop's monotonic clock differ by a constant: the window in perf_counter terms
    off = clock() - loop.time()
    p_start, p_end = m_start + off, m_end + off

    async def worker(w: int) -> None:
        rng = random.Random((cfg.seed << 20) ^ (cfg.worker_base + w) * 7919 + 1)
        do = tgt.do
        hist = k.hist
        while True:
            t0 = clock()
            if t0 >= p_end:
                return
            op = pick(rng)
            key = key_of(rng.randrange(nkeys))
            err: OpError | None = None
            try:
                await do(op, w, key)
            except OpError as e:
                err = e
            t1 = clock()
            k.total_done += 1
            if t1 < p_start:
                if err is None:
                    k.warmup_ops += 1
                else:
                    k.warmup_errors += 1
            elif t1 >= p_end:
                k.late_ops += 1
                return
            else:
                b = min(int(t1 - p_start), buckets - 1)
                if err is None:
                    hist.record_us(round((t1 - t0) * 1e6))
                    k.ok_per_s[b] += 1
                    k.op_counts[op] = k.op_counts.get(op, 0) + 1
                else:
                    k.err_per_s[b] += 1
                    k.errors[err.kind] = k.errors.get(err.kind, 0) + 1
                    if not k.first_error:
                        k.first_error = f"{err.kind}: {err}"
            if err is not None:
                await asyncio.sleep(0.01)  # a failing target must not turn the workers into a busy loop

    async def window_marks() -> None:
        await asyncio.sleep(max(0.0, m_start - loop.time()))
        cpu0.append(_proc_cpu_s())
        while loop.time() < m_end:
            await asyncio.sleep(min(1.0, max(0.0, m_end - loop.time())))
            if cfg.progress:
                done = sum(k.ok_per_s)
                print(PROGRESS_PREFIX + json.dumps({"t": round(loop.time() - m_start, 2), "ops": done,
                                                    "errors": sum(k.err_per_s)}), file=sys.stderr, flush=True)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(window_marks())
        for w in range(cfg.clients):
            tg.create_task(worker(w))
    cpu_s = _proc_cpu_s() - (cpu0[0] if cpu0 else 0.0)
    h = k.hist
    return {
        **base,
        "status": "ok",
        "ops": h.count,
        "ops_per_s": h.count / cfg.duration_s,
        "error_count": sum(k.errors.values()),
        "errors": dict(sorted(k.errors.items())),
        "first_error": k.first_error,
        "op_counts": dict(sorted(k.op_counts.items())),
        "warmup_ops": k.warmup_ops,
        "warmup_errors": k.warmup_errors,
        "late_ops": k.late_ops,
        "redirects": int(getattr(tgt, "redirects", 0)),
        "latency_ms": latency_summary_ms(h),
        "histogram": h.to_json(),
        "throughput_per_s": k.ok_per_s,
        "errors_per_s": k.err_per_s,
        "started_late_s": round(late_s, 3),
        "cpu_s": round(cpu_s, 3),
    }


def merge_results(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One result from the results of several processes that measured the same window: counts, histograms and
    per-second buckets add up; the percentiles are recomputed from the merged histogram."""
    ok = [r for r in results if r.get("status") == "ok"]
    if not results:
        raise ValueError("nothing to merge")
    if len(ok) != len(results):
        bad = next(r for r in results if r.get("status") != "ok")
        return {**bad, "processes": len(results)}
    first = ok[0]
    h = Histogram()
    for r in ok:
        h.merge(Histogram.from_json(r["histogram"]))
    n = max(len(r["throughput_per_s"]) for r in ok)

    def add_series(name: str) -> list[int]:
        out = [0] * n
        for r in ok:
            for i, v in enumerate(r[name]):
                out[i] += v
        return out

    def add_maps(name: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in ok:
            for key, v in r.get(name, {}).items():
                out[key] = out.get(key, 0) + v
        return dict(sorted(out.items()))

    duration = float(first["duration_s"])
    return {
        **{key: first.get(key) for key in ("schema", "target", "endpoints", "workload", "client_mode", "value_size",
                                             "keys", "duration_s", "warmup_s", "event_loop")},
        "status": "ok",
        "clients": sum(int(r["clients"]) for r in ok),
        "processes": sum(int(r.get("processes", 1)) for r in ok),
        "ops": h.count,
        "ops_per_s": h.count / duration,
        "error_count": sum(int(r["error_count"]) for r in ok),
        "errors": add_maps("errors"),
        "first_error": next((r["first_error"] for r in ok if r.get("first_error")), ""),
        "op_counts": add_maps("op_counts"),
        "warmup_ops": sum(int(r["warmup_ops"]) for r in ok),
        "warmup_errors": sum(int(r.get("warmup_errors", 0)) for r in ok),
        "late_ops": sum(int(r["late_ops"]) for r in ok),
        "redirects": sum(int(r.get("redirects", 0)) for r in ok),
        "latency_ms": latency_summary_ms(h),
        "histogram": h.to_json(),
        "throughput_per_s": add_series("throughput_per_s"),
        "errors_per_s": add_series("errors_per_s"),
        "started_late_s": max(float(r.get("started_late_s", 0.0)) for r in ok),
        "cpu_s": round(sum(float(r.get("cpu_s", 0.0)) for r in ok), 3),
    }


# -- preloading -------------------------------------------------------------------------------------------------
async def preload(
    target: Target, lo: int, hi: int, *, concurrency: int = 32, progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Write keys ``lo..hi-1`` (``key_of``) with ``concurrency`` puts in flight. Returns counts and errors."""
    await target.start()
    nxt = lo
    done = 0
    errors: dict[str, int] = {}
    t0 = time.monotonic()
    last_report = t0

    async def writer(w: int) -> None:
        nonlocal nxt, done, last_report
        while nxt < hi:
            i = nxt
            nxt += 1
            for attempt in range(5):
                try:
                    await target.do("put", w, key_of(i))
                    break
                except OpError as e:
                    if attempt == 4:
                        errors[e.kind] = errors.get(e.kind, 0) + 1
                    else:
                        await asyncio.sleep(0.1 * (attempt + 1))
            done += 1
            now = time.monotonic()
            if progress is not None and now - last_report >= 0.5:
                last_report = now
                progress(done)

    try:
        async with asyncio.TaskGroup() as tg:
            for w in range(max(1, min(concurrency, hi - lo))):
                tg.create_task(writer(w))
    finally:
        await target.close()
    if progress is not None:
        progress(done)
    return {"status": "ok", "preloaded": done, "errors": errors, "elapsed_s": round(time.monotonic() - t0, 3)}


# -- the no-op server -------------------------------------------------------------------------------------------
async def serve_noop(addr: str, ready: Callable[[int], None] | None = None, stop: asyncio.Event | None = None) -> None:
    """A gRPC server speaking raftkv's KV API that does nothing: Put, Get and Batch answer at once, Status says
    leader.
    It measures what the load generator (and gRPC in Python) can push through one connection per process."""
    import grpc.aio

    from raftkv.proto.v1 import kv_pb2, kv_pb2_grpc

    header = kv_pb2.Header(node_id=1, term=1, index=1, leader_id=1)

    class Noop(kv_pb2_grpc.KVServicer):
        async def Put(self, req: Any, ctx: Any) -> Any:
            return kv_pb2.PutResponse(header=header, kv=kv_pb2.KeyValue(key=req.key, version=1))

        async def Get(self, req: Any, ctx: Any) -> Any:
            return kv_pb2.GetResponse(header=header, found=True, kv=kv_pb2.KeyValue(key=req.key, value=b"x"))

        async def Batch(self, req: Any, ctx: Any) -> Any:  # the library's coalesced calls
            results = []
            for op in req.ops:
                if op.HasField("get"):
                    results.append(kv_pb2.BatchResult(get=await self.Get(op.get, ctx)))
                else:
                    results.append(kv_pb2.BatchResult(put=await self.Put(op.put, ctx)))
            return kv_pb2.BatchResponse(header=header, results=results)

        async def Status(self, req: Any, ctx: Any) -> Any:
            return kv_pb2.StatusResponse(header=header, role="leader", version="noop")

    server = grpc.aio.server(options=[*_GRPC_OPTIONS, ("grpc.so_reuseport", 0)])
    kv_pb2_grpc.add_KVServicer_to_server(Noop(), server)  # type: ignore[no-untyped-call]
    try:
        port = server.add_insecure_port(addr)
    except RuntimeError as e:
        raise SetupError(f"the no-op server cannot listen on {addr}: {e} (is the port in use?)") from None
    await server.start()
    if ready is not None:
        ready(port)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop(grace=0.2)


# -- the command line -------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.loadgen",
        description="One load generator process: drives a target for --warmup + --duration seconds and prints one "
        "JSON result on stdout (the harness, `python -m bench`, starts several and merges them).",
    )
    p.add_argument("--target", choices=TARGETS, default="raftkv", help="what to load (default raftkv)")
    p.add_argument("--endpoints", default="", help="comma-separated HOST:PORT of the target's client addresses")
    p.add_argument("--workload", choices=list(WORKLOADS), default="put")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients (coroutines) in this process")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds (default 5)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring (default 1)")
    p.add_argument("--value-size", type=int, default=256, help="bytes per value (default 256)")
    p.add_argument("--keys", type=int, default=1000, help="keyspace size: keys bench/00000000 .. (default 1000)")
    p.add_argument("--client-mode", choices=CLIENT_MODES, default="rpc",
                   help="raftkv: raw stubs (rpc, comparable with etcd) or raftkv.client.Client (library)")
    p.add_argument("--timeout", type=float, default=5.0, help="per-operation deadline in seconds (default 5)")
    p.add_argument("--start-at", type=float, default=None,
                   help="wall-clock time (time.time()) to start the warm-up at: processes started together measure "
                   "one window")
    p.add_argument("--wait-go", action="store_true",
                   help="after setting up, print 'ready' on stderr and read the start time (time.time()) from stdin")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker-base", type=int, default=0, help="index of this process's first client among all")
    p.add_argument("--progress", action="store_true", help="print progress lines on stderr every second")
    p.add_argument("--preload", action="store_true",
                   help="instead of a run, write the keys [--preload-from, --preload-to) with --clients in flight")
    p.add_argument("--preload-from", type=int, default=0)
    p.add_argument("--preload-to", type=int, default=None, help="default: --keys")
    p.add_argument("--serve-noop", metavar="HOST:PORT", default=None,
                   help="instead of a run, serve the no-op server (port 0: any free port; prints 'listening PORT')")
    return p


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on uvloop when it is installed (less CPU per operation: a higher ceiling), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    try:
        if a.serve_noop:
            def ready(port: int) -> None:
                print(f"listening {port}", flush=True)

            run_async(serve_noop(a.serve_noop, ready))
            return 0
        endpoints = [e.strip() for e in a.endpoints.split(",") if e.strip()]
        if not endpoints:
            print("error: --endpoints is required (HOST:PORT,...)", file=sys.stderr)
            return 2
        if a.clients < 1:
            print("error: --clients must be at least 1", file=sys.stderr)
            return 2
        value = random.Random(a.seed).randbytes(a.value_size)
        if a.preload:
            tgt = make_target(a.target, endpoints, value, client_mode="rpc", timeout_s=a.timeout,
                              clients=a.clients, worker_base=a.worker_base)

            def report(done: int) -> None:
                if a.progress:
                    print(PROGRESS_PREFIX + json.dumps({"done": done}), file=sys.stderr, flush=True)

            hi = a.keys if a.preload_to is None else a.preload_to
            res = run_async(preload(tgt, a.preload_from, hi, concurrency=a.clients, progress=report))
        else:
            cfg = LoadConfig(
                target=a.target, endpoints=endpoints, workload=a.workload, clients=a.clients, duration_s=a.duration,
                warmup_s=a.warmup, value_size=a.value_size, keys=a.keys, client_mode=a.client_mode,
                timeout_s=a.timeout, start_at=a.start_at, wait_go=a.wait_go, seed=a.seed, worker_base=a.worker_base,
                progress=a.progress,
            )
            res = run_async(run_load(cfg))
    except (SetupError, Unsupported) as e:
        print(json.dumps({"schema": SCHEMA, "status": "failed", "reason": str(e)}))
        return 1
    except KeyboardInterrupt:
        return 130
    print(json.dumps(res))
    return 0 if res.get("status") in ("ok", "unsupported") else 1


__all__ = [
    "SCHEMA",
    "WORKLOADS",
    "Histogram",
    "LoadConfig",
    "OpError",
    "SetupError",
    "Target",
    "Unsupported",
    "key_of",
    "latency_summary_ms",
    "main",
    "make_target",
    "merge_results",
    "preload",
    "run_load",
    "serve_noop",
    "workload_reads",
]

if __name__ == "__main__":
    # Run the canonical module (bench.loadgen), not this __main__ copy: bench.etcd imports bench.loadgen's classes.
    from bench.loadgen import main as _main

    sys.exit(_main())
