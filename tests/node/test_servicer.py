"""The client servicer in one process, called directly (no gRPC) against in-process nodes: the Batch RPC's shared
read point and its one deadline for every write."""

from __future__ import annotations

import time
from typing import Any

from raftkv.errors import META_APPLIED
from raftkv.proto.v1 import kv_pb2
from raftkv.servicer import KVServicer

from .test_node import Cluster, with_cluster


class Ctx:
    """The part of grpc.aio.ServicerContext the servicer uses; ``deadline_s`` is what the client allows."""

    def __init__(self, deadline_s: float | None = None) -> None:
        self.end = None if deadline_s is None else time.monotonic() + deadline_s

    def time_remaining(self) -> float | None:
        return None if self.end is None else max(0.0, self.end - time.monotonic())

    async def abort(self, code: Any, details: str, trailing_metadata: Any = ()) -> None:
        raise AssertionError(f"aborted: {code} {details}")


def servicer(cluster: Cluster, node_id: int) -> KVServicer:
    node = cluster.nodes[node_id]
    return KVServicer(node, node.settings)


def put_op(key: bytes, value: bytes, client_id: int) -> kv_pb2.BatchOp:
    return kv_pb2.BatchOp(put=kv_pb2.PutRequest(key=key, value=value,
                                                session=kv_pb2.Session(client_id=client_id, seq=1)))


def get_op(key: bytes, consistency: int = kv_pb2.LINEARIZABLE) -> kv_pb2.BatchOp:
    return kv_pb2.BatchOp(get=kv_pb2.GetRequest(key=key, read=kv_pb2.ReadOptions(consistency=consistency)))  # type: ignore[arg-type]


@with_cluster
async def test_a_batchs_gets_on_a_follower_see_acknowledged_writes_in_one_read_round(cluster: Cluster) -> None:
    lead = await cluster.leader()
    svc = servicer(cluster, lead.id)
    resp = await svc.Batch(kv_pb2.BatchRequest(ops=[put_op(b"k%d" % i, b"v%d" % i, 100 + i) for i in range(20)]),
                           Ctx())  # type: ignore[arg-type]
    assert [r.WhichOneof("result") for r in resp.results] == ["put"] * 20
    follower = next(n for n in cluster.nodes.values() if n is not lead)
    fsvc = servicer(cluster, follower.id)
    rounds = follower.replica.stats.read_rounds
    ops = [get_op(b"k%d" % i) for i in range(20)] + [get_op(b"missing"), get_op(b"k3", kv_pb2.STALE)]
    resp = await fsvc.Batch(kv_pb2.BatchRequest(ops=ops), Ctx())  # type: ignore[arg-type]
    got = [r.get for r in resp.results]
    assert [g.kv.value for g in got[:20]] == [b"v%d" % i for i in range(20)]
    assert not got[20].found
    assert follower.replica.stats.read_rounds - rounds == 1  # 21 linearizable gets, one read-index round
    assert len({g.header.index for g in got[:21]}) == 1  # one read point, one state


@with_cluster
async def test_a_batch_without_a_quorum_times_out_every_write_within_its_deadline(cluster: Cluster) -> None:
    lead = await cluster.leader()
    svc = servicer(cluster, lead.id)
    others = [n for n in cluster.nodes if n != lead.id]
    cluster.net.partition([[lead.id], others])
    t0 = time.monotonic()
    ops = [put_op(b"lost%d" % i, b"v", 200 + i) for i in range(5)] + [kv_pb2.BatchOp(put=kv_pb2.PutRequest(key=b""))]
    resp = await svc.Batch(kv_pb2.BatchRequest(ops=ops), Ctx(deadline_s=0.5))  # type: ignore[arg-type]
    elapsed = time.monotonic() - t0
    errors = [r.error for r in resp.results]
    assert [e.code for e in errors] == ["DEADLINE_EXCEEDED"] * 5 + ["INVALID_ARGUMENT"]
    assert all(e.metadata[META_APPLIED] == "unknown" for e in errors[:5]), errors[0]
    assert errors[5].metadata[META_APPLIED] == "no"
    assert elapsed < 2.0, elapsed
    assert not lead.tracked()  # the abandoned writes are not tracked any more
    cluster.net.heal()


def test_the_gc_monitor_counts_collections_and_their_pauses() -> None:
    import gc

    from raftkv.servicer import GcMonitor

    mon = GcMonitor()
    mon.install()
    try:
        garbage = [[i] for i in range(100_000)]
        del garbage
        gc.collect()
        gc.collect()
    finally:
        mon.uninstall()
    st = mon.stats()
    assert st["gc_collections"] >= 2
    assert 0 < st["gc_pause_max_us"] <= st["gc_pause_us"]
    assert mon not in gc.callbacks
    gc.collect()
    assert mon.stats()["gc_collections"] == st["gc_collections"]  # uninstalled: no longer counting
