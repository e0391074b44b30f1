"""The local cluster launcher, with the fake server (``python -m tests.client.fake_server --config FILE``) in place
of ``raftkv serve``: up / status / kill / restart / stop / down, pid ownership checks, and the CLI on top.

Every process a test starts is stopped by pid in the fixture's teardown, whatever happened."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from raftkv import localcluster
from raftkv.cli import main
from raftkv.client import CLUSTER_FILE, SyncClient, resolve_endpoints
from raftkv.errors import ClusterError, ExitCode

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

FAKE = [sys.executable, "-m", "tests.client.fake_server", "--config"]


def gone(pid: int, timeout_s: float = 5.0) -> bool:
    """The process no longer exists (reaping it if it is our zombie child)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
            if state == "Z":
                return True
        except (OSError, IndexError):
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


class Tracker:
    """Remembers every node pid seen, to stop any survivor by pid at the end."""

    def __init__(self, d: Path) -> None:
        self.dir = d
        self.pids: set[int] = set()

    def note(self) -> list[int]:
        out = []
        for f in sorted(self.dir.glob("node*/pid")):
            pid = int(f.read_text())
            self.pids.add(pid)
            out.append(pid)
        return out


@pytest.fixture
def cdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Tracker]:
    for var in ("RAFTKV_ENDPOINTS", "RAFTKV_CLUSTER_DIR", "RAFTKV_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    t = Tracker(tmp_path / "cluster")
    try:
        yield t
    finally:
        try:
            if t.dir.exists():
                t.note()
            localcluster.down(t.dir, purge=True, timeout_s=5)
        finally:
            for pid in t.pids:
                if not gone(pid, 0.5):
                    os.kill(pid, signal.SIGKILL)
                    gone(pid)


def up(t: Tracker, nodes: int = 3) -> localcluster.ClusterInfo:
    try:
        return localcluster.up(t.dir, nodes, serve_cmd=FAKE, timeout_s=30)
    finally:
        if t.dir.exists():
            t.note()


def roles(d: Path) -> dict[int, str]:
    return {ni.id: st.role for ni, st in localcluster.status(d)}


def test_up_writes_the_layout_and_elects_a_leader(cdir: Tracker) -> None:
    info = up(cdir)
    d = cdir.dir
    data = json.loads((d / CLUSTER_FILE).read_text())
    assert data["endpoints"] == info.endpoints and len(info.endpoints) == 3
    assert [n["id"] for n in data["nodes"]] == [1, 2, 3]
    assert all(isinstance(n["pid"], int) for n in data["nodes"])
    assert data["created"]
    ports = {a.rpartition(":")[2] for n in data["nodes"] for a in (n["peer_addr"], n["client_addr"])}
    assert len(ports) == 6  # two distinct ports per node
    for n in info.nodes:
        cfg = tomllib.loads(n.config.read_text())
        assert cfg["id"] == n.id
        assert Path(cfg["data_dir"]) == n.data_dir and n.data_dir.is_dir()
        assert [m["client_addr"] for m in cfg["members"]] == info.endpoints
        assert n.running and n.pid == int(n.pid_file.read_text())
        assert "serving" in n.log.read_text()
    # Clients find the cluster through its directory.
    assert resolve_endpoints(None, str(d)) == info.endpoints
    assert roles(d) == {1: "leader", 2: "follower", 3: "follower"}
    with SyncClient(info.endpoints, timeout_s=5) as c:
        c.put("k", "v")


def test_up_refuses_while_the_cluster_runs(cdir: Tracker) -> None:
    up(cdir)
    pids = cdir.note()
    with pytest.raises(ClusterError, match="already running") as ei:
        localcluster.up(cdir.dir, 3, serve_cmd=FAKE)
    assert all(str(p) in ei.value.message for p in pids)


def test_kill_restart_stop_down(cdir: Tracker) -> None:
    info = up(cdir)
    d = cdir.dir
    pid1 = info.node(1).pid
    assert pid1 is not None

    assert localcluster.kill(d, 1) == f"killed node 1 (pid {pid1})"
    assert gone(pid1)
    assert not info.node(1).pid_file.exists()
    assert localcluster.kill(d, 1) == "node 1 is not running"  # safe to repeat
    r = roles(d)
    assert r[1] == "unreachable" and r[2] == "leader"

    msg = localcluster.restart(d, 1)
    assert msg.startswith("restarted node 1")
    new_pid = localcluster.load(d).node(1).pid
    assert new_pid is not None and new_pid != pid1
    cdir.note()
    assert roles(d)[1] == "leader"

    pid2 = localcluster.load(d).node(2).pid
    assert pid2 is not None
    assert localcluster.stop(d, 2) == f"stopped node 2 (pid {pid2})"
    assert gone(pid2)
    assert "stopping" in localcluster.logs(d, 2)  # it shut down cleanly on SIGTERM
    assert localcluster.stop(d, 2) == "node 2 is not running"

    # restart of a running node stops it first
    pid3 = localcluster.load(d).node(3).pid
    assert pid3 is not None
    assert "stopped pid" in localcluster.restart(d, 3)
    assert gone(pid3)
    live = cdir.note()

    msgs = localcluster.down(d)
    assert any("stopped node 1" in m for m in msgs)
    for pid in live:
        assert gone(pid), f"pid {pid} survived down"
    assert not list(d.glob("node*/pid"))
    assert (d / CLUSTER_FILE).exists()  # without --purge the cluster stays, stopped
    assert all(not n.running for n in localcluster.load(d).nodes)
    assert localcluster.down(d) == ["no node was running"]  # safe to repeat

    # `up` on a stopped cluster starts it again, same addresses.
    again = up(cdir)
    assert again.endpoints == info.endpoints
    assert all(n.running for n in again.nodes)
    with pytest.raises(ClusterError, match="stopped 3-node cluster"):
        localcluster.down(d)
        localcluster.up(d, 5, serve_cmd=FAKE)

    assert localcluster.down(d, purge=True)[-1] == f"removed {d}"
    assert not d.exists()
    assert localcluster.down(d, purge=True) == [f"no local cluster in {d}: nothing to do"]


def test_kill_refuses_a_pid_that_is_not_the_node(cdir: Tracker) -> None:
    info = up(cdir)
    node2 = info.node(2)
    real = node2.pid
    assert real is not None
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        node2.pid_file.write_text(f"{stranger.pid}\n")
        with pytest.raises(ClusterError, match=f"refusing to signal pid {stranger.pid}"):
            localcluster.kill(cdir.dir, 2)
        with pytest.raises(ClusterError, match="refusing"):
            localcluster.stop(cdir.dir, 2)
        assert stranger.poll() is None  # untouched
        msgs = localcluster.down(cdir.dir)
        assert any(f"pid {stranger.pid} is not this node" in m for m in msgs)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
        # node 2's real process lost its pid file: stop it by its pid
        if not gone(real, 0.1):
            os.kill(real, signal.SIGTERM)
        assert gone(real)


def test_a_stale_pid_file_of_a_dead_process_is_cleaned_up(cdir: Tracker) -> None:
    up(cdir, nodes=1)
    localcluster.kill(cdir.dir, 1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pid_file = localcluster.load(cdir.dir).node(1).pid_file
    pid_file.write_text(f"{dead.pid}\n")
    assert localcluster.kill(cdir.dir, 1) == "node 1 is not running"
    assert not pid_file.exists()


def test_clear_errors_for_missing_clusters_and_nodes(cdir: Tracker) -> None:
    d = cdir.dir
    for op in (localcluster.status, localcluster.load):
        with pytest.raises(ClusterError, match="no local cluster in"):
            op(d)
    for op2 in (localcluster.kill, localcluster.stop, localcluster.restart, localcluster.logs):
        with pytest.raises(ClusterError, match="no local cluster in"):
            op2(d, 1)
    assert localcluster.down(d) == [f"no local cluster in {d.absolute()}: nothing to do"]
    up(cdir, nodes=1)
    with pytest.raises(ClusterError, match="has no node 7"):
        localcluster.kill(d, 7)


def test_up_reports_nodes_that_exit_and_stops_the_rest(cdir: Tracker) -> None:
    lines: list[str] = []
    crash = [sys.executable, "-c", "import sys; print('cannot start: bad disk'); sys.exit(3)", "--config"]
    with pytest.raises(ClusterError, match="exited right after starting") as ei:
        localcluster.up(cdir.dir, 2, serve_cmd=crash, timeout_s=10, progress=lines.append)
    assert "bad disk" in ei.value.message
    assert any("cannot start: bad disk" in line for line in lines)  # the log tails were shown
    assert not list(cdir.dir.glob("node*/pid"))


def test_up_gives_up_when_no_leader_is_elected(cdir: Tracker) -> None:
    # A node that runs but never answers: no leader within the timeout; what was started is stopped.
    silent = [sys.executable, "-c", "import time; time.sleep(60)", "--config"]
    with pytest.raises(ClusterError, match="no leader was elected within 2s"):
        localcluster.up(cdir.dir, 2, serve_cmd=silent, timeout_s=2)
    assert not list(cdir.dir.glob("node*/pid"))
    info = localcluster.load(cdir.dir)
    assert not any(n.running for n in info.nodes)


def test_base_port(cdir: Tracker) -> None:
    from .fake_server import free_port

    base = free_port()
    if base > 60000:
        pytest.skip("the free port is too high to use as a base")
    try:
        info = localcluster.up(cdir.dir, 1, base_port=base, serve_cmd=FAKE, timeout_s=30)
    except ClusterError as e:  # something else took one of the ports meanwhile
        pytest.skip(str(e))
    finally:
        if cdir.dir.exists():
            cdir.note()
    assert info.nodes[0].client_addr == f"127.0.0.1:{base}"
    assert info.nodes[0].peer_addr == f"127.0.0.1:{base + 100}"


def test_cli_cluster_commands(cdir: Tracker) -> None:
    info = up(cdir)
    d = str(cdir.dir)
    runner = CliRunner()

    r = runner.invoke(main, ["cluster", "status", "--dir", d, "--output", "json"])
    assert r.exit_code == 0, r.output
    nodes = json.loads(r.stdout)["nodes"]
    assert [(n["id"], n["role"]) for n in nodes] == [(1, "leader"), (2, "follower"), (3, "follower")]
    keys = {"id", "role", "term", "commit", "applied", "revision", "client_addr", "peer_addr"}
    assert all(set(n) == keys for n in nodes)
    assert [n["peer_addr"] for n in nodes] == [n.peer_addr for n in info.nodes]

    r = runner.invoke(main, ["cluster", "status", "--dir", d])
    assert r.exit_code == 0 and "pid" in r.stdout.splitlines()[0]

    # The key-value commands find the cluster through --cluster-dir.
    r = runner.invoke(main, ["--cluster-dir", d, "put", "k", "v"])
    assert (r.exit_code, r.stdout) == (0, "OK revision=1 version=1\n")
    r = runner.invoke(main, ["--cluster-dir", d, "status", "--output", "json"])
    assert json.loads(r.stdout)["nodes"][0]["role"] == "leader"

    pid2 = info.node(2).pid
    assert pid2 is not None
    r = runner.invoke(main, ["cluster", "kill", "2", "--dir", d])
    assert (r.exit_code, r.stdout) == (0, f"killed node 2 (pid {pid2})\n")
    assert gone(pid2)
    r = runner.invoke(main, ["cluster", "kill", "9", "--dir", d])
    assert r.exit_code == ExitCode.CONFIG
    assert r.stderr.startswith("error: the cluster in") and len(r.stderr.splitlines()) == 1

    r = runner.invoke(main, ["cluster", "restart", "2", "--dir", d])
    assert r.exit_code == 0, r.output
    cdir.note()
    r = runner.invoke(main, ["cluster", "logs", "2", "--dir", d, "-n", "3"])
    assert r.exit_code == 0 and "fake node 2" in r.stdout

    live = cdir.note()
    r = runner.invoke(main, ["cluster", "down", "--dir", d, "--purge"])
    assert r.exit_code == 0, r.output
    assert all(gone(p) for p in live)
    assert not cdir.dir.exists()
    r = runner.invoke(main, ["cluster", "status", "--dir", d])
    assert r.exit_code == ExitCode.CONFIG and "no local cluster" in r.stderr


def test_commands_say_at_once_that_a_stopped_cluster_is_not_running(cdir: Tracker) -> None:
    up(cdir)
    d = cdir.dir
    runner = CliRunner()
    r = runner.invoke(main, ["--cluster-dir", str(d), "put", "k", "v"])
    assert (r.exit_code, r.stdout) == (0, "OK revision=1 version=1\n")
    localcluster.down(d)
    assert localcluster.not_running(d) == (
        f"the local cluster in {d} is not running: start it with `raftkv cluster up --dir {d}`"
    )
    r = runner.invoke(main, ["--cluster-dir", str(d), "--timeout", "30", "get", "k"])
    assert r.exit_code == ExitCode.UNAVAILABLE
    assert r.stderr == f"error: {localcluster.not_running(d)}\n"
    up(cdir)  # started again: served as before
    assert localcluster.not_running(d) is None
    r = runner.invoke(main, ["--cluster-dir", str(d), "get", "k"])
    assert r.exit_code == ExitCode.NOT_FOUND  # a fake node's data does not survive it; it answered
