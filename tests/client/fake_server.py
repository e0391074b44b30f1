"""A fake raftkv KV gRPC server for client, CLI and launcher tests: an in-memory dict behind the real client API.

In a test::

    with FakeServer(FakeKV(node_id=1)) as srv:        # serves on 127.0.0.1:<a free port>, in a background thread
        srv.kv.mode = "follower"                      # or "leader" (default), "down" (Unavailable but Status), "hang"
        srv.kv.inject(Unavailable("boom"))            # the next call fails with this error (a queue of them)
        ... Client([srv.addr]) ...
        srv.kv.calls["Put"], srv.kv.sessions          # what the server saw
        srv.kv.batch = True                           # serve Batch (default: UNIMPLEMENTED, as an older server)

As a process (what ``tests/client/test_localcluster.py`` launches in place of ``raftkv serve``)::

    python -m tests.client.fake_server --config node.toml

serves the node's client address from a node.toml written by the launcher. The leader is the member with the
lowest id whose client port accepts connections, so killing it hands leadership to the next one.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio

from raftkv.errors import InvalidArgument, NotLeader, RaftKVError, Unavailable
from raftkv.proto.v1 import kv_pb2, kv_pb2_grpc
from raftkv.settings import Member, load_settings

T = TypeVar("T")


@dataclass(frozen=True)
class WriteSeen:
    method: str
    client_id: int
    seq: int
    key: bytes
    batched: bool = False  # part of a Batch RPC


class _OpAborted(Exception):
    """A batch operation failed (what its unary RPC's ``ctx.abort`` would have sent)."""

    def __init__(self, code: grpc.StatusCode, details: str, metadata: Sequence[tuple[str, Any]]) -> None:
        super().__init__(details)
        self.code, self.details, self.metadata = code, details, tuple(metadata)


class _OpContext:
    """The context one operation of a batch runs with: ``abort`` fails that operation alone."""

    batched = True

    def __init__(self, ctx: grpc.aio.ServicerContext[Any, Any]) -> None:
        self._ctx = ctx

    def time_remaining(self) -> float | None:
        return self._ctx.time_remaining()

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sequence[Any] = ()) -> None:
        raise _OpAborted(code, details, trailing_metadata)


class FakeKV(kv_pb2_grpc.KVServicer):
    """The servicer. Attributes a test may change at any time: ``mode``, ``leader_id``, ``leader_addr``,
    ``delay_s`` (every call waits this long first), ``lose_reply`` (apply the next N writes, then fail them with
    this error as if the reply was lost), ``batch`` (serve Batch; False: UNIMPLEMENTED, as a server older than
    Batch), ``key_errors`` (key -> errors the next operations on that key fail with, one each, after being looked
    at), ``lose_batch_reply`` (carry out the next Batch RPCs, then fail each as a whole with this bare status, as a
    lost reply), ``after_batch`` (called once a Batch's operations are done, before it answers)."""

    def __init__(
        self,
        node_id: int = 1,
        *,
        mode: str = "leader",
        leader_id: int = 0,
        leader_addr: str = "",
        members: Sequence[Member] = (),
        term: int = 1,
    ) -> None:
        self.node_id = node_id
        self.mode = mode
        self.leader_id = leader_id
        self.leader_addr = leader_addr
        self.members = tuple(members)
        self.term = term
        self.delay_s = 0.0
        self.data: dict[bytes, kv_pb2.KeyValue] = {}
        self.index = 0
        self.calls: collections.Counter[str] = collections.Counter()
        self.sessions: list[WriteSeen] = []  # every write request received, retries included
        self.applied = 0  # writes applied (duplicates are answered from the session table)
        self.reads: list[kv_pb2.ReadOptions] = []  # the read options of every Get/Range received
        self.deadlines: list[float | None] = []  # the time remaining on each call when it arrived
        self.outstanding: collections.Counter[int] = collections.Counter()
        self.max_outstanding_per_session = 0
        self.lose_reply: list[RaftKVError] = []
        self.batch = False
        self.batches: list[list[str]] = []  # the operations (put, get, ...) of every Batch served
        self.key_errors: dict[bytes, list[RaftKVError]] = {}
        self.lose_batch_reply: list[tuple[grpc.StatusCode, str]] = []
        self.after_batch: Callable[[], None] | None = None
        self._errors: collections.deque[RaftKVError | tuple[grpc.StatusCode, str]] = collections.deque()
        self._session_table: dict[int, tuple[int, Any]] = {}
        self.role_for_status: Any = None  # callable() -> (role, leader_id), for the process mode

    # -- test controls ---------------------------------------------------------------------------------------
    def inject(self, *errors: RaftKVError) -> None:
        """The next calls (one per error, any method) fail with these errors before being looked at."""
        self._errors.extend(errors)

    def inject_status(self, code: grpc.StatusCode, details: str = "") -> None:
        """The next call fails with a bare gRPC status (no raftkv metadata), as a proxy or a dead server would."""
        self._errors.append((code, details))

    def put_local(self, key: bytes, value: bytes) -> None:
        """Store a key directly (as if written earlier)."""
        self._apply_put(key, value)

    # -- plumbing --------------------------------------------------------------------------------------------
    def _header(self) -> kv_pb2.Header:
        leader = self.node_id if self.mode == "leader" else self.leader_id
        # One log entry per write here, so the revision and the applied index are the same number.
        return kv_pb2.Header(node_id=self.node_id, term=self.term, index=self.index, leader_id=leader,
                             revision=self.index)

    async def _abort(self, ctx: grpc.aio.ServicerContext[Any, Any], err: RaftKVError) -> None:
        await ctx.abort(grpc.StatusCode[err.grpc_code], err.message, trailing_metadata=tuple(err.metadata()))

    async def _enter(self, method: str, ctx: grpc.aio.ServicerContext[Any, Any], write: bool) -> None:
        self.calls[("Batch." if getattr(ctx, "batched", False) else "") + method] += 1
        self.deadlines.append(ctx.time_remaining())
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self._errors:
            err = self._errors.popleft()
            if isinstance(err, tuple):
                await ctx.abort(err[0], err[1])
            else:
                await self._abort(ctx, err)
        if self.mode == "hang":
            await asyncio.Event().wait()  # until the client gives up (the call is cancelled)
        if self.mode == "down" and method != "Status":  # a node without a leader still answers Status
            await self._abort(ctx, Unavailable(f"node {self.node_id} has no leader"))
        if self.mode == "follower" and write:
            await self._abort(ctx, NotLeader(self.leader_id, self.leader_addr))

    async def _key_error(self, key: bytes, ctx: grpc.aio.ServicerContext[Any, Any]) -> None:
        errs = self.key_errors.get(key)
        if errs:
            await self._abort(ctx, errs.pop(0))

    def _apply_put(self, key: bytes, value: bytes) -> kv_pb2.KeyValue:
        self.index += 1
        old = self.data.get(key)
        vc = dict(zip(old.vclock.nodes, old.vclock.counters, strict=True)) if old else {}
        vc[self.node_id] = vc.get(self.node_id, 0) + 1
        nodes = sorted(vc)
        kv = kv_pb2.KeyValue(
            key=key,
            value=value,
            create_revision=old.create_revision if old else self.index,
            mod_revision=self.index,
            version=(old.version + 1) if old else 1,
            vclock=kv_pb2.VectorClock(nodes=nodes, counters=[vc[n] for n in nodes]),
        )
        self.data[key] = kv
        return kv

    async def _write(self, method: str, session: kv_pb2.Session, key: bytes, ctx: Any, apply: Any) -> Any:
        cid, seq = session.client_id, session.seq
        self.sessions.append(WriteSeen(method, cid, seq, key, getattr(ctx, "batched", False)))
        self.outstanding[cid] += 1
        self.max_outstanding_per_session = max(self.max_outstanding_per_session, self.outstanding[cid])
        try:
            await self._enter(method, ctx, write=True)
            await self._key_error(key, ctx)
            if not key:
                await self._abort(ctx, InvalidArgument("the key must not be empty"))
            last = self._session_table.get(cid)
            if last is not None and seq == last[0]:
                resp = last[1]  # a retry of an applied write: the cached answer
            elif last is not None and seq < last[0]:
                await self._abort(ctx, InvalidArgument("stale request: this session already moved past this seq"))
            else:
                resp = apply()
                self.applied += 1
                self._session_table[cid] = (seq, resp)
            if self.lose_reply:
                await self._abort(ctx, self.lose_reply.pop(0))
            return resp
        finally:
            self.outstanding[cid] -= 1

    # -- the API ---------------------------------------------------------------------------------------------
    async def Put(self, request: kv_pb2.PutRequest, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        def apply() -> kv_pb2.PutResponse:
            kv = self._apply_put(request.key, request.value)
            return kv_pb2.PutResponse(header=self._header(), kv=kv)

        return await self._write("Put", request.session, request.key, context, apply)

    async def Delete(self, request: kv_pb2.DeleteRequest, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        def apply() -> kv_pb2.DeleteResponse:
            self.index += 1
            deleted = self.data.pop(request.key, None) is not None
            return kv_pb2.DeleteResponse(header=self._header(), deleted=deleted, index=self.index)

        return await self._write("Delete", request.session, request.key, context, apply)

    async def Incr(self, request: kv_pb2.IncrRequest, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        def apply() -> kv_pb2.IncrResponse:
            old = self.data.get(request.key)
            value = (int(old.value) if old else 0) + request.delta
            kv = self._apply_put(request.key, str(value).encode())
            return kv_pb2.IncrResponse(header=self._header(), value=value, kv=kv)

        return await self._write("Incr", request.session, request.key, context, apply)

    async def Batch(self, request: kv_pb2.BatchRequest, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        """Each operation runs through its unary handler with a context of its own, concurrently; an abort there
        becomes that operation's BatchError."""
        self.calls["Batch"] += 1
        if not self.batch:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        handlers: dict[str, Callable[[Any, Any], Awaitable[Any]]] = {
            "put": self.Put, "get": self.Get, "delete": self.Delete, "incr": self.Incr,
        }
        self.batches.append([str(op.WhichOneof("op")) for op in request.ops])

        async def one(op: kv_pb2.BatchOp) -> kv_pb2.BatchResult:
            which = str(op.WhichOneof("op"))
            try:
                resp = await handlers[which](getattr(op, which), _OpContext(context))
            except _OpAborted as a:
                md = {k: v for k, v in a.metadata if isinstance(v, str)}
                cur = next((v for k, v in a.metadata if isinstance(v, bytes)), b"")
                err = kv_pb2.BatchError(code=a.code.name, message=a.details, metadata=md, current=cur)
                return kv_pb2.BatchResult(error=err)
            return kv_pb2.BatchResult(**{which: resp})

        results = await asyncio.gather(*(one(op) for op in request.ops))
        if self.after_batch is not None:
            self.after_batch()
        if self.lose_batch_reply:
            code, details = self.lose_batch_reply.pop(0)
            await context.abort(code, details)
        return kv_pb2.BatchResponse(header=self._header(), results=results)

    async def Get(self, request: kv_pb2.GetRequest, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        self.reads.append(request.read)
        await self._enter("Get", context, write=False)
        await self._key_error(request.key, context)
        if self.mode == "follower" and request.read.consistency in (kv_pb2.LINEARIZABLE, kv_pb2.LEASE):
            await self._abort(context, NotLeader(self.leader_id, self.leader_addr))
        kv = self.data.get(request.key)
        if kv is None:
            return kv_pb2.GetResponse(header=self._header(), found=False)
        return kv_pb2.GetResponse(header=self._header(), found=True, kv=kv)

    async def Range(self, request: kv_pb2.RangeRequest, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        self.reads.append(request.read)
        await self._enter("Range", context, write=False)
        limit = request.limit or 1000
        keys = sorted(k for k in self.data if k.startswith(request.prefix) and k > request.start_after)
        out = []
        for k in keys[:limit]:
            kv = kv_pb2.KeyValue()
            kv.CopyFrom(self.data[k])
            if request.keys_only:
                kv.value = b""
            out.append(kv)
        return kv_pb2.RangeResponse(header=self._header(), kvs=out, more=len(keys) > limit)

    async def Status(self, request: kv_pb2.StatusRequest, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await self._enter("Status", context, write=False)
        if self.role_for_status is not None:
            role, leader_id = await self.role_for_status()
        else:
            role = {"leader": "leader", "follower": "follower"}.get(self.mode, "candidate")
            leader_id = self.node_id if role == "leader" else self.leader_id
        header = kv_pb2.Header(node_id=self.node_id, term=self.term, index=self.index, leader_id=leader_id)
        return kv_pb2.StatusResponse(
            header=header,
            role=role,
            commit=self.index,
            applied=self.index,
            last_index=self.index,
            cluster_id="fake",
            members=[
                kv_pb2.Member(id=m.id, peer_addr=m.peer_addr, client_addr=m.client_addr, learner=m.learner)
                for m in self.members
            ],
            version="fake",
        )


class FakeServer:
    """Runs a :class:`FakeKV` on its own event loop in a background thread (so tests can drive clients from
    ``asyncio.run`` or from plain threads)."""

    def __init__(self, kv: FakeKV | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.kv = kv if kv is not None else FakeKV()
        self._host = host
        self._port = port
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-kv", daemon=True)
        self._server: grpc.aio.Server | None = None

    @property
    def addr(self) -> str:
        return f"{self._host}:{self.port}"

    def start(self) -> FakeServer:
        self._thread.start()

        async def go() -> int:
            self._server = grpc.aio.server()
            kv_pb2_grpc.add_KVServicer_to_server(self.kv, self._server)  # type: ignore[no-untyped-call]
            port = self._server.add_insecure_port(f"{self._host}:{self._port}")
            await self._server.start()
            return port

        self.port = asyncio.run_coroutine_threadsafe(go(), self._loop).result(10)
        return self

    def call(self, fn: Any) -> Any:
        """Run ``fn()`` on the server's loop (to change the servicer without racing it)."""

        async def go() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(go(), self._loop).result(10)

    def stop(self) -> None:
        if self._server is not None:
            server = self._server
            self._server = None
            asyncio.run_coroutine_threadsafe(server.stop(grace=None), self._loop).result(10)
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run the coroutine ``fn()`` on a fresh event loop (the tests' synchronous entry point)."""

    async def go() -> T:
        return await fn()

    return asyncio.run(go())


def free_port() -> int:
    """A port nothing listens on right now (bind to 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- process mode ---------------------------------------------------------------------------------------------
async def _accepts(addr: str) -> bool:
    host, _, port = addr.rpartition(":")
    try:
        _, w = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 0.3)
    except (OSError, TimeoutError):
        return False
    w.close()
    with contextlib.suppress(OSError):
        await w.wait_closed()
    return True


async def _serve_process(config: str) -> int:
    settings = load_settings(config, env={})
    me = settings.me
    kv = FakeKV(settings.id, members=settings.members)

    async def role() -> tuple[str, int]:
        # The leader is the lowest-id member that is up (this node counts as up).
        for m in sorted(settings.members, key=lambda m: m.id):
            if m.id == settings.id or await _accepts(m.client_addr):
                kv.leader_id, kv.leader_addr = m.id, m.client_addr
                kv.mode = "leader" if m.id == settings.id else "follower"
                return ("leader" if m.id == settings.id else "follower"), m.id
        raise AssertionError("unreachable")

    kv.role_for_status = role
    server = grpc.aio.server()
    kv_pb2_grpc.add_KVServicer_to_server(kv, server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(settings.client_listen)
    await server.start()
    print(f"fake node {settings.id} serving {me.client_addr} (data dir {settings.data_dir})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print(f"fake node {settings.id} stopping", flush=True)
    await server.stop(grace=0.2)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="a fake raftkv node for tests")
    p.add_argument("--config", required=True)
    args = p.parse_args(argv)
    return asyncio.run(_serve_process(args.config))


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["FakeKV", "FakeServer", "WriteSeen", "free_port", "main"]
