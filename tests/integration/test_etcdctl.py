"""etcd's own command-line client, etcdctl (Debian's etcd-client, 3.4), against raftkv's etcd API on real processes
(README, "The etcd API"): keys, prefixes, revisions, JSON output, txn, watch replays, leases with attached keys,
lock and elect with two contenders, members, endpoint status and health, compaction and its error, move-leader.
Skipped where etcdctl is not installed (`.ci/run` installs it)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from raftkv import localcluster

from .conftest import Cluster, start_cluster

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl is not installed (etcd-client)")]


class Etcdctl:
    def __init__(self, endpoints: list[str]) -> None:
        self.endpoints = endpoints
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("ETCD")}, "ETCDCTL_API": "3"}

    def run(self, *args: str, endpoints: list[str] | None = None, input: str | None = None,
            check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        eps = ",".join(endpoints or self.endpoints)
        r = subprocess.run(["etcdctl", f"--endpoints={eps}", "--command-timeout=10s", *args], input=input,
                           capture_output=True, text=True, timeout=timeout, env=self.env)
        if check:
            assert r.returncode == 0, f"etcdctl {' '.join(args)}: {r.stdout}{r.stderr}"
        return r

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(["etcdctl", f"--endpoints={','.join(self.endpoints)}", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env)

    def json(self, *args: str) -> dict:  # type: ignore[type-arg]
        return json.loads(self.run(*args, "-w", "json").stdout)


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Etcdctl, Cluster]]:
    c = start_cluster(tmp_path_factory.mktemp("etcd") / "cluster")
    try:
        yield Etcdctl(c.endpoints), c
    finally:
        localcluster.down(c.dir, purge=True)


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def test_put_get_delete_prefix_revisions_and_json(etcd: tuple[Etcdctl, Cluster]) -> None:
    e, _ = etcd
    assert e.run("put", "kv/a", "1").stdout.strip() == "OK"
    e.run("put", "kv/b", "2")
    e.run("put", "kv/a", "3")
    assert e.run("get", "kv/a").stdout.split() == ["kv/a", "3"]
    assert e.run("get", "kv/", "--prefix").stdout.split() == ["kv/a", "3", "kv/b", "2"]
    assert e.run("get", "kv/", "--prefix", "--keys-only").stdout.split() == ["kv/a", "kv/b"]
    doc = e.json("get", "kv/a")
    kv = doc["kvs"][0]
    assert kv["key"] == _b64("kv/a") and kv["value"] == _b64("3") and kv["version"] == 2 and doc["count"] == 1
    first_rev = kv["create_revision"]
    assert e.run("get", "kv/a", f"--rev={first_rev}").stdout.split() == ["kv/a", "1"]
    page = e.json("get", "kv/", "--prefix", "--limit=1")
    assert page["count"] == 2 and page["more"] and len(page["kvs"]) == 1  # count: every key of the range
    desc = e.run("get", "kv/", "--prefix", "--sort-by=VALUE", "--order=DESCEND").stdout.split()
    assert desc == ["kv/a", "3", "kv/b", "2"]
    assert e.run("get", "kv/a", "kv/c").stdout.split() == ["kv/a", "3", "kv/b", "2"]  # [key, range_end)
    assert e.run("del", "kv/a", "--prev-kv").stdout.split() == ["1", "kv/a", "3"]
    assert e.run("del", "kv/", "--prefix").stdout.strip() == "1"
    assert e.run("get", "kv/", "--prefix").stdout == ""
    r = e.run("put", "", "x", check=False)
    assert r.returncode != 0 and "key is not provided" in r.stderr


def test_txn(etcd: tuple[Etcdctl, Cluster]) -> None:
    e, _ = etcd
    e.run("put", "t/k", "v1")
    out = e.run("txn", input='value("t/k") = "v1"\n\nput t/k v2\nput t/other x\n\nget t/k\n\n').stdout
    assert out.split()[0] == "SUCCESS"
    assert e.run("get", "t/k").stdout.split() == ["t/k", "v2"]
    out = e.run("txn", input='value("t/k") = "v1"\n\nput t/k nope\n\nget t/k\n\n').stdout
    assert out.split() == ["FAILURE", "t/k", "v2"]
    out = e.run("txn", input='version("t/missing") = "0"\n\nput t/missing created\n\n\n').stdout
    assert out.split()[0] == "SUCCESS" and e.run("get", "t/missing").stdout.split()[1] == "created"


def test_watch_replays_from_a_revision_and_follows_a_prefix(etcd: tuple[Etcdctl, Cluster]) -> None:
    e, _ = etcd
    start = e.json("put", "w/a", "1")["header"]["revision"]
    e.run("put", "w/b", "2")
    e.run("del", "w/a")
    watcher = e.popen("watch", "w/", "--prefix", f"--rev={start}")
    try:
        time.sleep(1.0)
        e.run("put", "w/c", "3")  # live, after the replay
        time.sleep(1.0)
    finally:
        watcher.terminate()
        out, _ = watcher.communicate(timeout=10)
    assert out.split() == ["PUT", "w/a", "1", "PUT", "w/b", "2", "DELETE", "w/a", "PUT", "w/c", "3"]


def test_leases_keep_alive_and_attached_keys_disappearing(etcd: tuple[Etcdctl, Cluster]) -> None:
    e, _ = etcd
    grant = e.run("lease", "grant", "3").stdout.split()
    lease = grant[1]
    e.run("put", "l/k", "v", f"--lease={lease}")
    ttl = e.run("lease", "timetolive", lease, "--keys").stdout
    assert "attached keys([l/k])" in ttl and "granted with TTL(3s)" in ttl
    assert lease in e.run("lease", "list").stdout
    keeper = e.popen("lease", "keep-alive", lease)
    try:
        time.sleep(5)  # past its TTL: kept alive
        assert e.run("get", "l/k").stdout.split() == ["l/k", "v"]
    finally:
        keeper.terminate()
        keeper.communicate(timeout=10)
    deadline = time.monotonic() + 15
    while e.run("get", "l/k").stdout and time.monotonic() < deadline:  # expires once nobody renews it
        time.sleep(0.2)
    assert e.run("get", "l/k").stdout == ""
    other = e.run("lease", "grant", "30").stdout.split()[1]
    e.run("put", "l/r", "v", f"--lease={other}")
    assert "revoked" in e.run("lease", "revoke", other).stdout
    assert e.run("get", "l/r").stdout == ""
    gone = e.run("lease", "revoke", other, check=False)
    assert gone.returncode != 0 and "requested lease not found" in gone.stderr
    missing = e.run("put", "l/x", "v", "--lease=12345", check=False)
    assert missing.returncode != 0 and "requested lease not found" in missing.stderr


def test_lock_and_elect_with_two_contenders(etcd: tuple[Etcdctl, Cluster]) -> None:
    e, _ = etcd
    holder = e.popen("lock", "jobs")
    try:
        assert holder.stdout is not None
        key = holder.stdout.readline().strip()
        assert key.startswith("jobs/")
        second = e.popen("lock", "jobs", "echo", "got-it")
        time.sleep(1.5)
        assert second.poll() is None  # waits while the first holds it
    finally:
        holder.terminate()
        holder.communicate(timeout=10)
    out, _ = second.communicate(timeout=20)
    assert "got-it" in out
    leader = e.popen("elect", "svc", "first")
    try:
        assert leader.stdout is not None
        assert leader.stdout.readline().startswith("svc/")
        follower = e.popen("elect", "svc", "second")
        time.sleep(1.0)
        observer = e.popen("elect", "-l", "svc")
        try:
            assert observer.stdout is not None
            assert observer.stdout.readline().startswith("svc/") and observer.stdout.readline().strip() == "first"
        finally:
            observer.terminate()
            observer.communicate(timeout=10)
    finally:
        leader.terminate()
        leader.communicate(timeout=10)
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline().startswith("svc/")  # the second is elected once the first resigns
    finally:
        follower.terminate()
        follower.communicate(timeout=10)


def test_members_status_health_compaction_and_move_leader(etcd: tuple[Etcdctl, Cluster]) -> None:
    e, c = etcd
    members = e.json("member", "list")["members"]
    assert sorted(m["ID"] for m in members) == [1, 2, 3]
    assert all(m["clientURLs"] and m["peerURLs"] for m in members)
    status = json.loads(e.run("endpoint", "status", "-w", "json").stdout)
    leaders = {s["Status"]["leader"] for s in status}
    assert len(status) == 3 and len(leaders) == 1
    assert "is healthy" in e.run("endpoint", "health").stderr + e.run("endpoint", "health").stdout
    hashes = {h["HashKV"].get("hash", 0) for h in json.loads(e.run("endpoint", "hashkv", "-w", "json").stdout)}
    assert len(hashes) == 1  # every replica holds the same keys
    rev = e.json("put", "c/k", "1")["header"]["revision"]
    e.run("put", "c/k", "2")
    assert "compacted revision" in e.run("compact", str(rev + 1)).stdout
    old = e.run("get", "c/k", f"--rev={rev}", check=False)
    assert old.returncode != 0 and "required revision has been compacted" in old.stderr
    # snapshot save (from one node, as etcdctl insists): raftkv's snapshot in etcd's envelope, which
    # `raftkv snapshot verify` (and restore) read as it is.
    saved = c.dir / "etcd-snapshot.db"
    e.run("snapshot", "save", str(saved), endpoints=[c.endpoints[0]])
    checked = subprocess.run([sys.executable, "-m", "raftkv", "snapshot", "verify", str(saved)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    (leader,) = leaders
    target = next(m["ID"] for m in members if m["ID"] != leader)
    assert "Leadership transferred" in e.run("move-leader", f"{target:x}").stdout
    c.wait(lambda: c.leader().id == target, "the leadership to move")
    added = e.json("member", "add", "n9", "--peer-urls=http://127.0.0.1:1", "--learner")["member"]
    assert added["isLearner"]
    e.run("member", "remove", f"{added['ID']:x}")
    assert sorted(m["ID"] for m in e.json("member", "list")["members"]) == [1, 2, 3]
