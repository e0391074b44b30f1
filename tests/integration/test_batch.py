"""Batch RPCs against a real 3-node cluster: the client coalescing 200 concurrent puts into fewer calls, the server
answering every operation of a batch on its own (errors included), and its size bound."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from raftkv import localcluster
from raftkv.client import Client, KeyValue, PutResult
from raftkv.errors import ConditionFailed, InvalidArgument
from raftkv.proto.v1 import kv_pb2, kv_pb2_grpc
from raftkv.servicer import MAX_BATCH_OPS

from .conftest import Cluster, start_cluster

pytestmark = pytest.mark.slow

COUNTERS = ("unary_rpcs", "batch_rpcs", "batched_ops")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = start_cluster(Path(tmp_path_factory.mktemp("batch")) / "cluster")
    try:
        yield c
    finally:
        localcluster.down(c.dir, purge=True)


def counters(cluster: Cluster) -> dict[str, int]:
    """The client API counters, summed over every node."""
    out = dict.fromkeys(COUNTERS, 0)
    for st in cluster.statuses():
        assert st.reachable, st
        for k in COUNTERS:
            out[k] += st.stats[k]
    return out


def test_200_concurrent_puts_from_one_client_share_rpcs(cluster: Cluster) -> None:
    cluster.leader()
    n = 200
    before = counters(cluster)

    async def go() -> None:
        async with Client(cluster.endpoints, timeout_s=15) as c:
            res = await asyncio.gather(*(c.put(f"batch/{i}", f"value-{i}") for i in range(n)))
            assert all(isinstance(r, PutResult) for r in res)
            assert c.seen_index >= max(r.index for r in res)  # read-your-writes: every header was observed
            assert len({r.mod_revision for r in res}) == n  # one revision per write, though they share entries
            got = await asyncio.gather(*(c.get(f"batch/{i}") for i in range(n)))
            assert [kv.value if kv else None for kv in got] == [f"value-{i}".encode() for i in range(n)]

    asyncio.run(go())
    after = counters(cluster)
    d = {k: after[k] - before[k] for k in COUNTERS}
    assert d["batch_rpcs"] > 0 and d["batched_ops"] > 0
    assert d["unary_rpcs"] + d["batched_ops"] >= 2 * n  # every put and get was served (retries count again) ...
    assert d["unary_rpcs"] + d["batch_rpcs"] < 2 * n  # ... by fewer calls than operations
    # And another client (no coalescing) sees them all.
    with cluster.client() as sc:
        page = sc.range("batch/", limit=1000)
        assert len(page.kvs) == n


def test_one_bad_operation_fails_alone_in_a_batch(cluster: Cluster) -> None:
    """Through the client: concurrent puts share a batch; the one with an oversized key fails with
    InvalidArgument, the conditional one whose condition does not hold fails with ConditionFailed carrying the
    key's current state, and the others succeed."""
    cluster.leader()
    with cluster.client() as sc:
        sc.put("cond", "current")
    before = counters(cluster)

    async def go() -> list[Any]:
        async with Client(cluster.endpoints, timeout_s=15) as c:
            aws: list[Any] = [c.put(f"ok/{i}", "v") for i in range(10)]
            aws.append(c.put("x" * 5000, "v"))  # above max_key_bytes (4 KiB)
            aws.append(c.put("cond", "new", if_version=99))
            aws.extend(c.put(f"ok/{i}", "v") for i in range(10, 20))
            return list(await asyncio.gather(*aws, return_exceptions=True))

    res = asyncio.run(go())
    assert counters(cluster)["batch_rpcs"] > before["batch_rpcs"]
    bad, cond = res[10], res[11]
    assert isinstance(bad, InvalidArgument) and "5000 bytes" in bad.message, bad
    assert isinstance(cond, ConditionFailed), cond
    assert isinstance(cond.current, KeyValue) and cond.current.value == b"current" and cond.current.version == 1
    ok = res[:10] + res[12:]
    assert all(isinstance(r, PutResult) for r in ok), ok
    with cluster.client() as sc:
        assert len(sc.range("ok/").kvs) == 20
        kv = sc.get("cond")
        assert kv is not None and kv.value == b"current"


def _stub(cluster: Cluster) -> tuple[grpc.Channel, Any]:
    leader = cluster.leader()
    ch = grpc.insecure_channel(leader.client_addr)
    return ch, kv_pb2_grpc.KVStub(ch)  # type: ignore[no-untyped-call]


def test_the_batch_rpc_answers_each_operation_as_its_unary_rpc(cluster: Cluster) -> None:
    ch, stub = _stub(cluster)
    with ch:
        base = 1 << 40

        def session(i: int) -> kv_pb2.Session:
            return kv_pb2.Session(client_id=base + i, seq=1)

        ops = [
            kv_pb2.BatchOp(put=kv_pb2.PutRequest(key=b"raw/a", value=b"1", session=session(1))),
            kv_pb2.BatchOp(put=kv_pb2.PutRequest(key=b"", value=b"1", session=session(2))),
            kv_pb2.BatchOp(incr=kv_pb2.IncrRequest(key=b"raw/n", delta=5, session=session(3))),
            kv_pb2.BatchOp(delete=kv_pb2.DeleteRequest(key=b"raw/none", session=session(4))),
            kv_pb2.BatchOp(get=kv_pb2.GetRequest(key=b"raw/a")),
            kv_pb2.BatchOp(),
            kv_pb2.BatchOp(
                put=kv_pb2.PutRequest(
                    key=b"raw/a",
                    value=b"2",
                    session=session(5),
                    conditions=[kv_pb2.Compare(target=kv_pb2.Compare.VERSION, number=7)],
                )
            ),
        ]
        resp = stub.Batch(kv_pb2.BatchRequest(ops=ops), timeout=15)
        r = resp.results
        assert [x.WhichOneof("result") for x in r] == ["put", "error", "incr", "delete", "get", "error", "error"]
        assert r[0].put.kv.version == 1 and r[0].put.header.revision == r[0].put.kv.mod_revision
        assert (r[1].error.code, r[1].error.metadata["raftkv-error"]) == ("INVALID_ARGUMENT", "invalid-argument")
        assert "empty" in r[1].error.message
        assert r[2].incr.value == 5
        assert not r[3].delete.deleted
        # The get is not ordered after the put of the same batch (the operations are independent), but it ran.
        assert r[4].get.header.index > 0
        assert r[5].error.code == "INVALID_ARGUMENT"
        err = r[6].error
        assert (err.code, err.metadata["raftkv-error"], err.metadata["raftkv-applied"]) == (
            "ABORTED", "condition-failed", "no")
        current = kv_pb2.KeyValue.FromString(err.current)
        assert (current.key, current.value, current.version) == (b"raw/a", b"1", 1)
        assert resp.header.index >= r[2].incr.header.index

        # The same batch again: the writes are answered from the session table, not applied twice.
        again = stub.Batch(kv_pb2.BatchRequest(ops=ops[:4]), timeout=15)
        assert again.results[2].incr.value == 5
        assert again.results[0].put.kv.mod_revision == r[0].put.kv.mod_revision

        # Too many operations: refused as a whole, nothing carried out.
        big = [kv_pb2.BatchOp(put=kv_pb2.PutRequest(key=b"raw/big", value=b"x", session=session(9)))]
        with pytest.raises(grpc.RpcError) as ei:
            stub.Batch(kv_pb2.BatchRequest(ops=big * (MAX_BATCH_OPS + 1)), timeout=15)
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert stub.Get(kv_pb2.GetRequest(key=b"raw/big"), timeout=15).found is False
        assert stub.Batch(kv_pb2.BatchRequest(), timeout=15).results == []
