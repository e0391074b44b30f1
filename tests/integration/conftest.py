"""Real `raftkv serve` processes on loopback. Every cluster is started in a temporary directory on free ports and
torn down by PID (``localcluster.down``) even when the test fails."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from raftkv import localcluster
from raftkv.chaos.net import NetnsHosts, unavailable_reason
from raftkv.client import NodeStatus, SyncClient
from raftkv.localcluster import ClusterInfo

TICK_MS = 50  # faster elections in tests: 500 ms election timeout


class Cluster:
    def __init__(self, info: ClusterInfo) -> None:
        self.info = info
        self.dir = info.dir

    @property
    def endpoints(self) -> list[str]:
        return self.info.endpoints

    def client(self, endpoints: list[str] | None = None, timeout_s: float = 15.0) -> SyncClient:
        return SyncClient(endpoints or self.endpoints, timeout_s=timeout_s)

    def statuses(self) -> list[NodeStatus]:
        return [st for _, st in localcluster.status(self.dir)]

    def leader(self, timeout_s: float = 15.0) -> NodeStatus:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            leaders = [s for s in self.statuses() if s.role == "leader"]
            if len(leaders) == 1:
                return leaders[0]
            time.sleep(0.1)
        raise AssertionError(f"no single leader within {timeout_s}s: {self.statuses()}")

    def wait(self, pred: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    def node_status(self, node: int) -> NodeStatus:
        for st in self.statuses():
            if st.id == node:
                return st
        raise AssertionError(f"node {node} did not answer")

    def cli(self, *args: str, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTKV_")}
        return subprocess.run(
            [sys.executable, "-m", "raftkv", "--cluster-dir", str(self.dir), *args],
            input=input, capture_output=True, timeout=timeout, env=env,
        )

    def kill(self, node: int) -> None:
        localcluster.kill(self.dir, node)

    def restart(self, node: int) -> None:
        localcluster.restart(self.dir, node)


def start_cluster(path: Path, nodes: int = 3, **kw: object) -> Cluster:
    info = localcluster.up(path, nodes, tick_ms=TICK_MS, timeout_s=60, **kw)  # type: ignore[arg-type]
    return Cluster(info)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = start_cluster(tmp_path / "cluster")
    try:
        yield c
    finally:
        localcluster.down(c.dir, purge=True)


@pytest.fixture
def netns_cluster(tmp_path: Path) -> Iterator[tuple[Cluster, NetnsHosts]]:
    """A 3-node cluster with each node in its own network namespace (real partitions); skipped where namespaces or
    iptables are unavailable."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"network namespaces unavailable: {reason}")
    hosts = NetnsHosts(3).setup()
    c: Cluster | None = None
    try:
        info = localcluster.up(
            tmp_path / "cluster", 3, tick_ms=TICK_MS, timeout_s=60,
            hosts=hosts.ips, exec_prefix=[hosts.exec_prefix(i) for i in range(1, 4)],
        )
        c = Cluster(info)
        yield c, hosts
    finally:
        if c is not None:
            localcluster.down(c.dir, purge=True)
        hosts.teardown()
