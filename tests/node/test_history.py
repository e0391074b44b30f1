"""Reads at a revision and compaction through the client service of in-process nodes (README, "History"): every
replica holds the same history, answers a read at a past revision with what the store held right after it (the
header says which revision it reflects), refuses one below the compacted revision with OUT_OF_RANGE and the
compacted revision, and one in the future with INVALID_ARGUMENT."""

from __future__ import annotations

import pytest

from raftkv.errors import META_COMPACTED_REVISION
from raftkv.proto.v1 import kv_pb2

from .test_bounded_reads import AbortCtx, Aborted
from .test_node import Cluster, until, with_cluster
from .test_servicer import servicer


class MetaAborted(Aborted):
    def __init__(self, code: object, details: str, metadata: dict[str, str]) -> None:
        super().__init__(code, details)
        self.metadata = metadata


class MetaCtx(AbortCtx):
    async def abort(self, code: object, details: str, trailing_metadata: object = ()) -> None:
        raise MetaAborted(code, details, dict(trailing_metadata))  # type: ignore[call-overload]


def stale(rev: int = 0, key: bytes = b"k") -> kv_pb2.GetRequest:
    return kv_pb2.GetRequest(key=key, revision=rev, read=kv_pb2.ReadOptions(consistency=kv_pb2.STALE))


@with_cluster
async def test_every_replica_reads_the_same_past_and_refuses_what_was_compacted(cluster: Cluster) -> None:
    lead = await cluster.leader()
    svc = servicer(cluster, lead.id)
    revs = []
    for i in range(5):
        r = await svc.Put(kv_pb2.PutRequest(key=b"k", value=b"v%d" % i), MetaCtx(5))  # type: ignore[arg-type]
        revs.append(r.header.revision)
    d = await svc.Delete(kv_pb2.DeleteRequest(key=b"k"), MetaCtx(5))  # type: ignore[arg-type]
    last = await svc.Put(kv_pb2.PutRequest(key=b"other", value=b"o"), MetaCtx(5))  # type: ignore[arg-type]
    for n in cluster.nodes.values():
        # (A result is answered before its transaction commits: wait until the last write is visible.)
        await until(lambda n=n: n.fsm.revision() >= last.header.revision, "the writes to apply everywhere")
        s = servicer(cluster, n.id)
        for i, rev in enumerate(revs):
            got = await s.Get(stale(rev), MetaCtx(5))  # type: ignore[arg-type]
            assert got.found and got.kv.value == b"v%d" % i and got.kv.mod_revision == rev, (n.id, rev)
            assert got.header.revision == rev
        gone = await s.Get(stale(d.header.revision), MetaCtx(5))  # type: ignore[arg-type]
        assert not gone.found
        listing = await s.Range(kv_pb2.RangeRequest(revision=revs[2], read=kv_pb2.ReadOptions(
            consistency=kv_pb2.STALE)), MetaCtx(5))  # type: ignore[arg-type]
        assert [(kv.key, kv.value) for kv in listing.kvs] == [(b"k", b"v2")] and listing.header.revision == revs[2]
    # A batch's gets at different revisions are answered each at its own.
    ops = [kv_pb2.BatchOp(get=stale(r)) for r in (revs[0], revs[3], 0)]
    resp = await svc.Batch(kv_pb2.BatchRequest(ops=ops), MetaCtx(5))  # type: ignore[arg-type]
    assert [(r.get.found, r.get.kv.value) for r in resp.results] == [(True, b"v0"), (True, b"v3"), (False, b"")]

    c = await svc.Compact(kv_pb2.CompactRequest(revision=revs[3]), MetaCtx(5))  # type: ignore[arg-type]
    assert c.compacted == revs[3]
    again = await svc.Compact(kv_pb2.CompactRequest(revision=revs[1]), MetaCtx(5))  # type: ignore[arg-type]
    assert again.compacted == revs[3]  # an earlier point changes nothing
    for n in cluster.nodes.values():
        await until(lambda n=n: n.fsm.compacted() == revs[3], "the compaction to apply everywhere")
        s = servicer(cluster, n.id)
        with pytest.raises(MetaAborted) as e:
            await s.Get(stale(revs[2]), MetaCtx(5))  # type: ignore[arg-type]
        assert e.value.code.name == "OUT_OF_RANGE", e.value  # type: ignore[attr-defined]
        assert f"revision {revs[2]} has been compacted" in str(e.value)
        assert e.value.metadata[META_COMPACTED_REVISION] == str(revs[3])
        kept = await s.Get(stale(revs[3]), MetaCtx(5))  # type: ignore[arg-type]
        assert kept.kv.value == b"v3"  # the compacted revision itself stays readable
    with pytest.raises(MetaAborted) as e:
        await svc.Get(stale(10**6), MetaCtx(5))  # type: ignore[arg-type]
    assert e.value.code.name == "INVALID_ARGUMENT" and "in the future" in str(e.value)  # type: ignore[attr-defined]
    with pytest.raises(MetaAborted) as e:
        await svc.Compact(kv_pb2.CompactRequest(revision=10**6), MetaCtx(5))  # type: ignore[arg-type]
    assert e.value.code.name == "INVALID_ARGUMENT" and "in the future" in str(e.value)  # type: ignore[attr-defined]


@with_cluster
async def test_an_idle_writer_finishes_a_compaction_in_bounded_steps(cluster: Cluster) -> None:
    """After the Compact applies, no write comes: the node's writer removes the compacted history on its own, one
    bounded step at a time (``ReadyWriter.history_step``), until only the newest version of each key is left below
    the compacted revision."""
    ops = [kv_pb2.BatchOp(put=kv_pb2.PutRequest(key=b"k%d" % (i % 10), value=b"v%d" % i)) for i in range(500)]
    done = 0
    while done < 10:
        lead = await cluster.leader()  # (a loaded machine may see a leader change: that batch goes again)
        svc = servicer(cluster, lead.id)
        resp = await svc.Batch(kv_pb2.BatchRequest(ops=ops), MetaCtx(30))  # type: ignore[arg-type]
        done += all(r.WhichOneof("result") == "put" for r in resp.results)
    top = max(r.put.header.revision for r in resp.results)
    assert top >= 5000
    for n in cluster.nodes.values():
        n.fsm.compact_budget = 50  # apply's own steps: too small to finish with the Compact's entry alone
    for attempt in range(3):
        svc = servicer(cluster, (await cluster.leader()).id)
        try:
            await svc.Compact(kv_pb2.CompactRequest(revision=top), MetaCtx(5))  # type: ignore[arg-type]
            break
        except MetaAborted:
            if attempt == 2:
                raise
    for n in cluster.nodes.values():
        # (A result is answered before its transaction commits: wait until the compaction is visible.)
        await until(lambda n=n: n.fsm.compacted() == top, "the compaction to apply")
        # (The writer sets history_pending after its transaction commits, so read the store's own flag too.)
        await until(lambda n=n: not n.writer.history_pending and not n.fsm.compaction_pending(),
                    "the writer to finish the compaction")
        assert n.writer.stats.history_steps >= 2  # 5,000 events or more, at most HISTORY_STEP (2,000) a step
        with n.store.read_txn() as txn:
            left = sum(1 for table, _, _ in n.fsm.iter_state(txn) if table == b"history")
        assert left == 10, (n.id, left)  # one version per key survives, the newest

