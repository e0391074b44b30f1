"""etcd for the benchmark: find the binary, start and stop a local cluster on loopback, and the load generator's
etcd target (raw stubs: raftkv's own of etcd's API, ``raftkv.proto.etcd``).

The cluster is etcd's defaults (its durability: every committed batch is fsynced before it is acknowledged; its
heartbeat 100 ms and election timeout 1000 ms), ``N`` members on 127.0.0.1 with free ports, data in a directory the
caller owns, one process per member started in its own session and stopped by its pid. One change from the
defaults: the backend quota is raised to 8 GiB (``--quota-backend-bytes``) so that a large preload cannot trip
etcd's 2 GiB space alarm mid-run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from raftkv.localcluster import free_ports

from .loadgen import _GRPC_OPTIONS, OpError, SetupError, Unsupported, cas_key, rpc_error_kind, rpc_error_text

INSTALL_SCRIPT = Path(__file__).resolve().with_name("etcd.sh")
QUOTA_BACKEND_BYTES = 8 << 30


class EtcdError(Exception):
    """etcd is missing or a cluster could not be started (a one-line message)."""


def find_etcd() -> str | None:
    """The etcd binary: ``$ETCD_BIN``, else ``etcd`` on PATH, else /usr/bin/etcd; None when there is none."""
    env = os.environ.get("ETCD_BIN")
    if env and os.access(env, os.X_OK):
        return env
    found = shutil.which("etcd")
    if found:
        return found
    for p in ("/usr/bin/etcd", "/usr/local/bin/etcd"):
        if os.access(p, os.X_OK):
            return p
    return None


def missing_message() -> str:
    return (
        "etcd is not installed: run bench/etcd.sh (installs Debian's etcd-server, etcd 3.4), or put etcd 3.4+ "
        "on PATH or in $ETCD_BIN"
    )


def etcd_version(binary: str) -> str:
    """``3.4.23`` (or ``unknown``)."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    for line in out.splitlines():
        if line.startswith("etcd Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


# -- stubs ------------------------------------------------------------------------------------------------------
def load_stubs() -> tuple[ModuleType, ModuleType]:
    """The stubs of etcd's API: raftkv's own (``raftkv.proto.etcd``, etcd's wire schema), so that raftkv and etcd are
    driven by the very same messages."""
    from raftkv.proto.etcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc

    return rpc_pb2, rpc_pb2_grpc


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_bytes()[-64 * 1024 :].decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


@dataclass(slots=True)
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def log(self) -> Path:
        return self.dir / "etcd.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class EtcdCluster:
    """A local etcd cluster started by :meth:`up`; :meth:`down` stops its processes by pid (SIGTERM, then SIGKILL)
    and removes its directory."""

    def __init__(self, dir: Path, members: list[EtcdMember], binary: str, version: str) -> None:
        self.dir = dir
        self.members = members
        self.binary = binary
        self.version = version

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def server_pids(self) -> dict[str, int]:
        return {m.name: m.pid for m in self.members if m.pid is not None}

    @classmethod
    def up(
        cls,
        dir: str | os.PathLike[str],
        nodes: int = 3,
        *,
        binary: str | None = None,
        timeout_s: float = 30.0,
        progress: Callable[[str], None] | None = None,
    ) -> EtcdCluster:
        say = progress or (lambda _m: None)
        bin_ = binary or find_etcd()
        if bin_ is None:
            raise EtcdError(missing_message())
        d = Path(dir).absolute()
        d.mkdir(parents=True, exist_ok=True)
        ports = free_ports(2 * nodes)
        members = [EtcdMember(f"m{i + 1}", ports[2 * i], ports[2 * i + 1], d / f"m{i + 1}") for i in range(nodes)]
        cluster = cls(d, members, bin_, etcd_version(bin_))
        initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in members)
        token = f"raftkv-bench-{os.getpid()}-{time.monotonic_ns()}"
        try:
            for m in members:
                m.dir.mkdir(parents=True, exist_ok=True)
                cmd = [
                    bin_,
                    "--name", m.name,
                    "--data-dir", str(m.dir / "data"),
                    "--listen-client-urls", f"http://127.0.0.1:{m.client_port}",
                    "--advertise-client-urls", f"http://127.0.0.1:{m.client_port}",
                    "--listen-peer-urls", f"http://127.0.0.1:{m.peer_port}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{m.peer_port}",
                    "--initial-cluster", initial,
                    "--initial-cluster-token", token,
                    "--initial-cluster-state", "new",
                    "--quota-backend-bytes", str(QUOTA_BACKEND_BYTES),
                    "--logger", "zap",
                    "--log-outputs", "stderr",
                ]  # fmt: skip
                with open(m.log, "ab") as log:
                    try:
                        m.proc = subprocess.Popen(
                            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, close_fds=True,
                        )
                    except OSError as e:
                        raise EtcdError(f"cannot start etcd ({bin_}): {e}") from None
                say(f"etcd {m.name}: pid {m.pid}, client {m.endpoint}, log {m.log}")
            cluster.wait_ready(timeout_s)
        except BaseException:
            cluster.down(purge=False)
            raise
        return cluster

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until every member serves a linearizable Range (so a leader is elected and known to all)."""
        import grpc

        pb2, pb2_grpc = load_stubs()
        deadline = time.monotonic() + timeout_s
        channels = {m.name: grpc.insecure_channel(m.endpoint) for m in self.members}
        try:
            pending = list(self.members)
            last = ""
            while pending:
                for m in list(pending):
                    if m.proc is not None and m.proc.poll() is not None:
                        line = _tail(m.log)
                        raise EtcdError(
                            f"etcd member {m.name} exited right after starting (exit code {m.proc.returncode})"
                            + (f"; its last log line: {line}" if line else "")
                        )
                    try:
                        pb2_grpc.KVStub(channels[m.name]).Range(pb2.RangeRequest(key=b"bench/ready"), timeout=1.0)
                        pending.remove(m)
                    except grpc.RpcError as e:
                        last = f"{m.name}: {e.code().name if e.code() else 'error'}"
                if pending:
                    if time.monotonic() >= deadline:
                        raise EtcdError(
                            f"the etcd cluster was not ready within {timeout_s:g}s ({last}); "
                            f"logs in {self.dir}/m*/etcd.log"
                        )
                    time.sleep(0.1)
        finally:
            for ch in channels.values():
                ch.close()

    def down(self, *, purge: bool = True, timeout_s: float = 10.0) -> None:
        """Stop every member this object started (by pid), then remove the directory when ``purge``."""
        procs = [m.proc for m in self.members if m.proc is not None and m.proc.poll() is None]
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
                p.wait(5)
        if purge:
            shutil.rmtree(self.dir, ignore_errors=True)


# -- the load generator's target --------------------------------------------------------------------------------
class EtcdTarget:
    """etcd through raw stubs: one gRPC call per operation; each client is pinned to one member (the clients of all
    processes spread evenly over the members); writes are forwarded to the leader by etcd itself.

    get-linearizable is a linearizable Range (etcd's default: a read index confirmed by the leader), get-stale a
    serializable one (the member's local state); txn is a Txn with one compare and one put, cas a Txn that puts only
    if the key's version is the one this client last wrote. etcd has no lease reads and no increment."""

    def __init__(
        self,
        endpoints: Sequence[str],
        value: bytes,
        *,
        timeout_s: float = 5.0,
        worker_base: int = 0,
    ) -> None:
        self.endpoints = list(endpoints)
        self.value = value
        self.timeout_s = timeout_s
        self.worker_base = worker_base
        self.redirects = 0
        self._pb: Any = None
        self._stubs: list[Any] = []
        self._channels: list[Any] = []
        self._cas: dict[int, tuple[bytes, int]] = {}

    def check(self, op: str) -> None:
        if op == "get:lease":
            raise Unsupported("n/a: etcd has no lease reads")
        if op == "incr":
            raise Unsupported("n/a: etcd has no increment")

    async def start(self) -> None:
        import grpc.aio

        try:
            self._pb, pb2_grpc = load_stubs()
        except EtcdError as e:
            raise SetupError(str(e)) from None
        for ep in self.endpoints:
            ch = grpc.aio.insecure_channel(ep, options=_GRPC_OPTIONS)
            self._channels.append(ch)
            self._stubs.append(pb2_grpc.KVStub(ch))
        try:
            await self._stubs[0].Range(self._pb.RangeRequest(key=b"bench/ready", serializable=True),
                                       timeout=min(5.0, self.timeout_s))
        except grpc.aio.AioRpcError as e:
            raise SetupError(f"etcd at {self.endpoints[0]} did not answer: {rpc_error_text(e)}") from None

    async def close(self) -> None:
        for ch in self._channels:
            await ch.close()

    async def do(self, op: str, worker: int, key: bytes) -> None:
        import grpc.aio

        pb = self._pb
        stub = self._stubs[(self.worker_base + worker) % len(self._stubs)]
        t = self.timeout_s
        try:
            if op == "put":
                await stub.Put(pb.PutRequest(key=key, value=self.value), timeout=t)
            elif op == "get:linearizable":
                await stub.Range(pb.RangeRequest(key=key), timeout=t)
            elif op == "get:stale":
                await stub.Range(pb.RangeRequest(key=key, serializable=True), timeout=t)
            elif op == "txn":
                cmp = pb.Compare(result=pb.Compare.LESS, target=pb.Compare.VERSION, key=key, version=1 << 62)
                put = pb.RequestOp(request_put=pb.PutRequest(key=key, value=self.value))
                await stub.Txn(pb.TxnRequest(compare=[cmp], success=[put]), timeout=t)
            elif op == "cas":
                await self._cas_op(stub, worker)
            else:
                self.check(op)
                raise Unsupported(f"unknown operation {op}")
        except grpc.aio.AioRpcError as e:
            raise OpError(rpc_error_kind(e), e.details() or "") from None

    async def _cas_op(self, stub: Any, worker: int) -> None:
        pb = self._pb
        t = self.timeout_s
        own = self._cas.get(worker)
        if own is None:
            own_key = cas_key(self.worker_base, worker)
            await stub.Put(pb.PutRequest(key=own_key, value=self.value), timeout=t)
            r = await stub.Range(pb.RangeRequest(key=own_key), timeout=t)
            own = self._cas[worker] = (own_key, r.kvs[0].version if r.kvs else 0)
        key, version = own
        cmp = pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.VERSION, key=key, version=version)
        put = pb.RequestOp(request_put=pb.PutRequest(key=key, value=self.value))
        get = pb.RequestOp(request_range=pb.RangeRequest(key=key))
        resp = await stub.Txn(pb.TxnRequest(compare=[cmp], success=[put], failure=[get]), timeout=t)
        if resp.succeeded:
            self._cas[worker] = (key, version + 1)
            return
        kvs = resp.responses[0].response_range.kvs if resp.responses else []
        self._cas[worker] = (key, kvs[0].version if kvs else 0)
        raise OpError("condition-failed")


__all__ = [
    "EtcdCluster",
    "EtcdError",
    "EtcdTarget",
    "etcd_version",
    "find_etcd",
    "load_stubs",
    "missing_message",
]
