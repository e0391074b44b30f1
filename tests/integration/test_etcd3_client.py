"""The Python ``etcd3`` client (PyPI, 0.12) against raftkv's etcd API on real processes: keys, prefixes, a txn, a
prefix watch, a lease with an attached key, a lock, members and status. The client and its two dependencies are
installed into a directory of the test's own (never into the project's environment: it wants an older protobuf,
and runs on protobuf's pure-Python implementation instead); skipped when they cannot be installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Cluster

pytestmark = pytest.mark.slow

SCRIPT = r'''
import sys, threading, time
import etcd3
host, port = sys.argv[1].rsplit(":", 1)
c = etcd3.client(host=host, port=int(port), timeout=10)
c.put("e3/a", "1")
value, meta = c.get("e3/a")
assert value == b"1" and meta.version == 1, (value, meta)
c.put("e3/b", "2")
assert sorted((m.key, v) for v, m in c.get_prefix("e3/")) == [(b"e3/a", b"1"), (b"e3/b", b"2")]
ok, _ = c.transaction(compare=[c.transactions.value("e3/a") == "1"], success=[c.transactions.put("e3/a", "3")],
                      failure=[])
assert ok and c.get("e3/a")[0] == b"3"
ok, _ = c.transaction(compare=[c.transactions.version("e3/a") == 1], success=[c.transactions.put("e3/a", "x")],
                      failure=[c.transactions.put("e3/b", "failed")])
assert not ok and c.get("e3/b")[0] == b"failed" and c.get("e3/a")[0] == b"3"
events = []
it, cancel = c.watch_prefix("e3/w/")
def follow():
    for ev in it:
        events.append((type(ev).__name__, ev.key, ev.value))
        if len(events) == 2:
            cancel()
t = threading.Thread(target=follow)
t.start()
time.sleep(0.5)
c.put("e3/w/c", "x")
c.delete("e3/w/c")
t.join(10)
assert events == [("PutEvent", b"e3/w/c", b"x"), ("DeleteEvent", b"e3/w/c", b"")], events
lease = c.lease(5)
c.put("e3/l", "v", lease=lease)
assert lease.granted_ttl == 5 and 0 < lease.remaining_ttl <= 5 and lease.keys == [b"e3/l"]
lease.refresh()
lease.revoke()
assert c.get("e3/l")[0] is None
with c.lock("e3lock", ttl=5) as lock:
    assert lock.is_acquired()
assert sorted(m.id for m in c.members) == [1, 2, 3]
assert c.status().leader is not None
c.delete_prefix("e3/")
assert list(c.get_prefix("e3/")) == []
print("all good")
'''


@pytest.fixture(scope="session")
def etcd3_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("etcd3-client")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                        "etcd3==0.12.0", "six", "tenacity"], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.skip(f"cannot install the etcd3 client: {r.stderr.strip()[-300:]}")
    return target


def test_the_etcd3_python_client_works_against_raftkv(cluster: Cluster, etcd3_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(etcd3_path), "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    r = subprocess.run([sys.executable, "-c", SCRIPT, cluster.endpoints[0]], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0 and "all good" in r.stdout, r.stdout + r.stderr
