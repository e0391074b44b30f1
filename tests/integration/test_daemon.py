"""The daemon end to end, with real processes: the CLI, leader failure, whole-cluster restart, redirects, bad input,
clean shutdown, corrupt data detection."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import lmdb
import pytest

from raftkv import localcluster
from raftkv.errors import META_KIND, META_LEADER_ADDR, META_LEADER_ID, ExitCode
from raftkv.proto.v1 import kv_pb2, kv_pb2_grpc

from .conftest import Cluster, start_cluster

pytestmark = pytest.mark.slow


def test_cli_put_get_list_delete(cluster: Cluster) -> None:
    r = cluster.cli("put", "greeting", "hello world")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"OK revision=")
    r = cluster.cli("get", "greeting")
    assert (r.returncode, r.stdout) == (0, b"hello world")  # the value alone, for scripts
    r = cluster.cli("get", "missing")
    assert r.returncode == ExitCode.NOT_FOUND
    assert r.stderr.decode().strip() == "error: key 'missing' not found"
    assert cluster.cli("put", "g2", "x").returncode == 0
    r = cluster.cli("list", "g")
    assert r.stdout.decode().splitlines() == ["g2\tx", "greeting\thello world"]
    assert cluster.cli("delete", "g2").stdout.strip() == b"deleted"
    assert cluster.cli("get", "g2").returncode == ExitCode.NOT_FOUND
    r = cluster.cli("status", "--output", "json")
    import json

    nodes = json.loads(r.stdout)["nodes"]
    assert sorted(n["id"] for n in nodes) == [1, 2, 3]
    assert [n["role"] for n in nodes].count("leader") == 1
    assert {"id", "role", "term", "commit", "applied", "client_addr", "peer_addr"} <= set(nodes[0])


def test_cli_reads_the_past_and_compacts_it(cluster: Cluster) -> None:
    """get/list --rev and compact (README, "History"), with the exit code and the one-line error below the
    compacted revision."""
    import json

    revs = []
    for v in ("one", "two", "three"):
        r = cluster.cli("put", "h", v, "--output", "json")
        assert r.returncode == 0, r.stderr
        revs.append(json.loads(r.stdout)["mod_revision"])
    assert cluster.cli("get", "h", "--rev", str(revs[0])).stdout == b"one"
    assert cluster.cli("list", "h", "--rev", str(revs[1])).stdout == b"h\ttwo\n"
    r = cluster.cli("compact", str(revs[1]))
    assert (r.returncode, r.stdout) == (0, f"compacted at revision {revs[1]}\n".encode()), r.stderr
    r = cluster.cli("get", "h", "--rev", str(revs[0]))
    assert r.returncode == ExitCode.INVALID
    assert r.stderr.decode().strip() == (
        f"error: revision {revs[0]} has been compacted; the oldest readable revision is {revs[1]}")
    assert cluster.cli("get", "h", "--rev", str(revs[1])).stdout == b"two"
    assert cluster.cli("get", "h").stdout == b"three"


def test_killing_the_leader_keeps_every_acknowledged_write(cluster: Cluster) -> None:
    with cluster.client() as c:
        acked = {}
        for i in range(50):
            c.put(f"k{i}", f"v{i}")
            acked[f"k{i}"] = f"v{i}".encode()
        old = cluster.leader()
        cluster.kill(old.id)
        for i in range(50, 70):  # the client finds the new leader by itself
            c.put(f"k{i}", f"v{i}")
            acked[f"k{i}"] = f"v{i}".encode()
        new = cluster.leader()
        assert new.id != old.id
        for k, v in acked.items():
            kv = c.get(k)
            assert kv is not None and kv.value == v, k
    cluster.restart(old.id)
    # The restarted node catches up with everything the new leader committed.
    target = cluster.node_status(new.id).commit
    cluster.wait(lambda: cluster.node_status(old.id).applied >= target, f"node {old.id} to catch up to {target}")
    ep = cluster.info.node(old.id).client_addr
    with cluster.client([ep]) as c:
        for k, v in acked.items():
            kv = c.get(k, consistency="stale")
            assert kv is not None and kv.value == v, k


def test_killing_every_node_loses_nothing_acknowledged(cluster: Cluster) -> None:
    with cluster.client() as c:
        for i in range(30):
            c.put(f"a{i}", f"{i}")
    for n in (1, 2, 3):
        cluster.kill(n)
    for n in (1, 2, 3):
        cluster.restart(n)
    cluster.leader()
    with cluster.client() as c:
        for i in range(30):
            kv = c.get(f"a{i}")
            assert kv is not None and kv.value == f"{i}".encode()
        c.put("after", "restart")


def test_a_follower_forwards_writes_to_the_leader(cluster: Cluster) -> None:
    leader = cluster.leader()
    follower = next(n for n in cluster.info.nodes if n.id != leader.id)
    with grpc.insecure_channel(follower.client_addr) as ch:
        stub = kv_pb2_grpc.KVStub(ch)
        r = stub.Put(kv_pb2.PutRequest(key=b"fwd", value=b"v"), timeout=10)
    assert r.header.node_id == follower.id and r.kv.version == 1
    assert dict(zip(r.kv.vclock.nodes, r.kv.vclock.counters, strict=True)) == {follower.id: 1}
    assert cluster.node_status(follower.id).stats["commands_forwarded"] == 1
    with cluster.client([leader.client_addr]) as c:
        assert c.get("fwd").value == b"v"  # type: ignore[union-attr]


def test_without_forwarding_a_follower_redirects_writes_to_the_leader(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "cluster", settings={"forward_proposals": False})
    try:
        _follower_redirects(cluster)
    finally:
        localcluster.down(cluster.dir, purge=True)


def _follower_redirects(cluster: Cluster) -> None:
    leader = cluster.leader()
    follower = next(n for n in cluster.info.nodes if n.id != leader.id)
    with grpc.insecure_channel(follower.client_addr) as ch:
        stub = kv_pb2_grpc.KVStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            stub.Put(kv_pb2.PutRequest(key=b"k", value=b"v"), timeout=5)
    err = e.value
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    md = dict(err.trailing_metadata())
    assert md[META_KIND] == "not-leader"
    assert md[META_LEADER_ID] == str(leader.id)
    assert md[META_LEADER_ADDR] == cluster.info.node(leader.id).client_addr
    # A client that only knows the follower follows the redirect.
    with cluster.client([follower.client_addr]) as c:
        assert c.put("via-follower", "ok").version == 1
        assert c.get("via-follower").value == b"ok"  # type: ignore[union-attr]


def test_bad_input_gets_one_clear_line_and_the_cluster_keeps_working(cluster: Cluster) -> None:
    r = cluster.cli("put", "", "v")
    assert r.returncode == ExitCode.INVALID
    assert r.stderr.decode().count("\n") == 1 and "key must not be empty" in r.stderr.decode()
    r = cluster.cli("put", "big", "-", input=b"x" * ((1 << 20) + 1))
    assert r.returncode == ExitCode.INVALID
    assert "limit is 1048576 bytes" in r.stderr.decode() and b"Traceback" not in r.stderr
    r = cluster.cli("put", "k" * 5000, "v")
    assert r.returncode == ExitCode.INVALID and "limit is 4096 bytes" in r.stderr.decode()
    r = cluster.cli("cluster", "kill", "9")
    assert r.returncode == ExitCode.CONFIG and b"Traceback" not in r.stderr and b"9" in r.stderr
    r = cluster.cli("get", "k", "--consistency", "sometimes")
    assert r.returncode == ExitCode.USAGE and b"Traceback" not in r.stderr
    assert cluster.cli("put", "still", "fine").returncode == 0
    assert cluster.cli("get", "still").stdout == b"fine"


def test_sigterm_shuts_a_node_down_cleanly(cluster: Cluster) -> None:
    node = cluster.info.node(2)
    pid = int(node.pid_file.read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.05)
    log = node.log.read_text()
    assert "node 2 shutting down" in log and "node 2 stopped" in log
    assert "Traceback" not in log
    cluster.restart(2)
    cluster.leader()


def test_a_corrupt_log_record_is_reported_at_start_up(cluster: Cluster) -> None:
    with cluster.client() as c:
        for i in range(10):
            c.put(f"c{i}", "x")
    node = cluster.info.node(3)
    localcluster.stop(cluster.dir, 3)
    env = lmdb.open(str(node.data_dir / "raft"), max_dbs=16)
    with env.begin(write=True) as txn:
        db = env.open_db(b"log", txn=txn)
        cur = txn.cursor(db)
        assert cur.last()
        key, val = cur.key(), bytearray(cur.value())
        val[-1] ^= 0xFF  # flip a bit in the last entry's payload
        txn.put(key, bytes(val), db=db)
    env.close()
    r = subprocess.run(
        [sys.executable, "-m", "raftkv", "serve", "--config", str(node.config)],
        capture_output=True, timeout=30,
    )
    err = r.stderr.decode()
    assert r.returncode == ExitCode.CONFIG
    index = int.from_bytes(key, "big")
    assert f"index {index}" in err and "Traceback" not in err, err
