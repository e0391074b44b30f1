"""The local cluster launcher behind ``raftkv cluster ...``: N nodes on this machine as background processes.

Layout of a cluster directory (default ``./.raftkv-cluster``)::

    cluster.json          members, addresses, pids, creation time, endpoints (what clients read)
    node1/node.toml       the node's settings: start it by hand with ``raftkv serve --config node1/node.toml``
    node1/data/           its data directory
    node1/node.log        its stdout and stderr
    node1/pid             its process id while it runs

Nodes run in their own sessions (process groups), so they outlive the command that started them. Every signal is
sent by process id, and only after checking that the process still is that node (its command line names the node's
config file): a stale pid file never makes the launcher signal an unrelated process. Every operation is safe to
repeat.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .client import CLUSTER_FILE, DEFAULT_CLUSTER_DIR, NodeStatus, SyncClient
from .errors import ClusterError, RaftKVError

if TYPE_CHECKING:
    from .settings import Member

# Every `raftkv get` of a local cluster loads this module (to check that the cluster runs), so what only some
# operations need is imported by them: settings (tomllib, hashlib) when writing node configs, secrets, shutil.

__all__ = [
    "ClusterInfo",
    "NodeInfo",
    "add_node",
    "default_dir",
    "down",
    "free_ports",
    "kill",
    "load",
    "logs",
    "not_running",
    "restart",
    "status",
    "stop",
    "up",
    "wait_for_leader",
]

Progress = Callable[[str], None]
MAX_NODES = 99
PEER_PORT = 2380
CLIENT_PORT = 2379
"""The ports a node uses when it has its own host address (``up(hosts=...)``)."""
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # so nodes import the same raftkv as this process
_children: dict[int, subprocess.Popen[bytes]] = {}  # processes this process started (reaped when checked)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node of a local cluster, as its files describe it."""

    id: int
    peer_addr: str
    client_addr: str
    dir: Path
    pid: int | None = None
    """From the pid file (None when absent)."""
    running: bool = False
    """The pid is alive and is this node's process."""
    exec_prefix: tuple[str, ...] = ()
    """Prepended to the node's command, e.g. ``("ip", "netns", "exec", "rk-1")`` to run it in its own namespace."""

    @property
    def config(self) -> Path:
        return self.dir / "node.toml"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log(self) -> Path:
        return self.dir / "node.log"

    @property
    def pid_file(self) -> Path:
        return self.dir / "pid"

    @property
    def member(self) -> Member:
        from .settings import Member

        return Member(self.id, self.peer_addr, self.client_addr)


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    dir: Path
    created: str
    nodes: tuple[NodeInfo, ...]
    tick_ms: int
    sync: bool
    serve_cmd: tuple[str, ...] | None
    """The command nodes are started with (the node's config path is appended); None: ``raftkv serve --config``."""

    @property
    def endpoints(self) -> list[str]:
        return [n.client_addr for n in self.nodes]

    def node(self, node_id: int) -> NodeInfo:
        for n in self.nodes:
            if n.id == node_id:
                return n
        ids = ", ".join(str(n.id) for n in self.nodes)
        raise ClusterError(f"the cluster in {self.dir} has no node {node_id} (its nodes: {ids})")


def default_dir() -> Path:
    """``$RAFTKV_CLUSTER_DIR``, else ``./.raftkv-cluster``."""
    return Path(os.environ.get("RAFTKV_CLUSTER_DIR") or DEFAULT_CLUSTER_DIR)


def _noop(_msg: str) -> None:
    pass


# -- processes --------------------------------------------------------------------------------------------------
def _reap(pid: int) -> None:
    p = _children.get(pid)
    if p is not None and p.poll() is not None:
        del _children[pid]


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _cmdline(pid: int) -> list[str] | None:
    """The process's command line, or None if it cannot be read (gone, a zombie, another user's on some systems)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return [os.fsdecode(a) for a in raw.split(b"\0") if a] or None
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return None
    except OSError:
        return None
    try:  # no /proc (macOS, BSD): ask ps; the whole command line comes back as one string
        out = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return [out.stdout.strip()] if out.returncode == 0 and out.stdout.strip() else None


def _owned(pid: int, node: NodeInfo) -> bool:
    """The process ``pid`` is this node: its command line names the node's config file."""
    args = _cmdline(pid)
    if not args:
        return False
    cfg = str(node.config)
    return any(a == cfg or (len(args) == 1 and cfg in a) for a in args)


def _read_pid(node: NodeInfo) -> int | None:
    try:
        text = node.pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ClusterError(f"cannot read {node.pid_file}: {e}") from None
    try:
        pid = int(text)
    except ValueError:
        raise ClusterError(f"{node.pid_file} does not hold a process id ({text!r}): remove it") from None
    return pid if pid > 0 else None


def _signal(pid: int, sig: signal.Signals) -> None:
    """Signal the node's process group (it leads one: it was started in its own session), else the process."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pids: Sequence[int], timeout_s: float) -> list[int]:
    """Wait until these processes are gone; returns those still alive at the deadline."""
    deadline = time.monotonic() + timeout_s
    left = [p for p in pids if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if _alive(p)]
    return left


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # The node's settings come from its config file alone: RAFTKV_<SETTING> variables would override them.
    for k in list(env):
        if k.startswith("RAFTKV_") and k != "RAFTKV_DEBUG":
            del env[k]
    pp = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(_PACKAGE_ROOT) + (os.pathsep + pp if pp else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _start(info: ClusterInfo, node: NodeInfo) -> int:
    base = list(info.serve_cmd) if info.serve_cmd else [sys.executable, "-m", "raftkv", "serve", "--config"]
    cmd = [*node.exec_prefix, *base, str(node.config)]
    node.dir.mkdir(parents=True, exist_ok=True)
    with open(node.log, "ab") as log:
        log.write(f"--- {_now()} starting: {' '.join(cmd)}\n".encode())
        log.flush()
        try:
            p = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env=_child_env(),
            )
        except OSError as e:
            raise ClusterError(f"cannot start node {node.id} ({cmd[0]}): {e}") from None
    _children[p.pid] = p
    _write_atomic(node.pid_file, f"{p.pid}\n")
    return p.pid


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            data = f.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:]) if lines > 0 else ""


# -- files ------------------------------------------------------------------------------------------------------
def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _save(info: ClusterInfo, token: str | None = None) -> None:
    f = info.dir / CLUSTER_FILE
    extra: dict[str, Any] = {}
    if token is None and f.exists():
        with contextlib.suppress(OSError, ValueError):
            token = json.loads(f.read_text()).get("cluster_token")
    if token:
        extra["cluster_token"] = token
    data = {
        "version": 1,
        "created": info.created,
        "tick_ms": info.tick_ms,
        "sync": info.sync,
        "serve_cmd": list(info.serve_cmd) if info.serve_cmd else None,
        **extra,
        "endpoints": info.endpoints,
        "nodes": [
            {
                "id": n.id,
                "peer_addr": n.peer_addr,
                "client_addr": n.client_addr,
                "dir": n.dir.name,
                "pid": _read_pid(n),
                **({"exec_prefix": list(n.exec_prefix)} if n.exec_prefix else {}),
            }
            for n in info.nodes
        ],
    }
    _write_atomic(f, json.dumps(data, indent=2) + "\n")


def load(dir: str | os.PathLike[str]) -> ClusterInfo:
    """The cluster in ``dir``, with each node's pid and whether it runs. Raises :class:`ClusterError` if none."""
    d = Path(dir).absolute()
    f = d / CLUSTER_FILE
    if not f.is_file():
        raise ClusterError(f"no local cluster in {d} (no {CLUSTER_FILE}): start one with `raftkv cluster up --dir {d}`")
    try:
        data = json.loads(f.read_text())
        nodes = []
        for n in data["nodes"]:
            node = NodeInfo(
                int(n["id"]),
                str(n["peer_addr"]),
                str(n["client_addr"]),
                d / str(n["dir"]),
                exec_prefix=tuple(str(a) for a in n.get("exec_prefix", ())),
            )
            pid = _read_pid(node)
            running = pid is not None and _alive(pid) and _owned(pid, node)
            nodes.append(replace(node, pid=pid, running=running))
        cmd = data.get("serve_cmd")
        return ClusterInfo(
            dir=d,
            created=str(data.get("created", "")),
            nodes=tuple(nodes),
            tick_ms=int(data.get("tick_ms", 100)),
            sync=bool(data.get("sync", True)),
            serve_cmd=tuple(str(a) for a in cmd) if cmd else None,
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ClusterError(f"{f} is damaged ({type(e).__name__}: {e}); remove the directory to start afresh") from None


def not_running(dir: str | os.PathLike[str]) -> str | None:
    """"the local cluster in DIR is not running: start it with `raftkv cluster up`" when none of the cluster's
    nodes runs: no pid file names a live process that is the node, and nothing accepts connections at the nodes'
    client addresses (a node started by hand, ``raftkv serve --config DIR/nodeN/node.toml``, has no pid file).
    None when some node runs, or when ``dir`` holds no readable cluster (the caller reports that)."""
    try:
        info = load(dir)
    except ClusterError:
        return None
    if any(n.running for n in info.nodes):
        return None
    if any(_accepts(n.client_addr) for n in info.nodes if not n.exec_prefix):
        return None
    hint = "" if info.dir == default_dir().absolute() else f" --dir {info.dir}"
    return f"the local cluster in {info.dir} is not running: start it with `raftkv cluster up{hint}`"


def _accepts(addr: str, timeout_s: float = 0.2) -> bool:
    """Something accepts TCP connections at ``HOST:PORT`` (on loopback a refusal is immediate)."""
    host, _, port = addr.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


# -- ports ------------------------------------------------------------------------------------------------------
def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that are free right now (bound to port 0 together, read, closed)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise ClusterError(f"port {port} is in use: choose another --base-port, or omit it") from None


def _plan_ports(nodes: int, base_port: int | None) -> list[tuple[int, int]]:
    """(peer port, client port) per node. With a base port: clients base..base+N-1, peers base+100..base+100+N-1."""
    if base_port is None:
        ports = free_ports(2 * nodes)
        return [(ports[2 * i], ports[2 * i + 1]) for i in range(nodes)]
    if not 1024 <= base_port <= 65535 - 100 - nodes:
        raise ClusterError(f"--base-port must be between 1024 and {65535 - 100 - nodes}, got {base_port}")
    plan = [(base_port + 100 + i, base_port + i) for i in range(nodes)]
    for peer, client in plan:
        _check_port_free(peer)
        _check_port_free(client)
    return plan


# -- operations -------------------------------------------------------------------------------------------------
def up(
    dir: str | os.PathLike[str],
    nodes: int | None = None,
    *,
    tick_ms: int = 100,
    sync: bool = True,
    base_port: int | None = None,
    serve_cmd: Sequence[str] | None = None,
    timeout_s: float = 30.0,
    progress: Progress | None = None,
    hosts: Sequence[str] | None = None,
    exec_prefix: Sequence[Sequence[str]] | None = None,
    settings: dict[str, int | str | bool] | None = None,
) -> ClusterInfo:
    """Start a cluster of ``nodes`` (default 3) in ``dir`` and wait until it has elected a leader.

    A directory holding a stopped cluster (after ``down`` without ``purge``) is started again with its own
    settings and data. Refuses if a cluster in ``dir`` is running. On failure to elect a leader within
    ``timeout_s``, reports each node's log tail through ``progress``, stops what it started and raises
    :class:`ClusterError`. ``serve_cmd`` replaces ``python -m raftkv serve --config`` (tests start a fake server).

    ``hosts`` gives each node its own IP address (e.g. one network namespace per node, see raftkv.chaos.net): node
    i then listens on ``hosts[i]:2380`` (peers) and ``hosts[i]:2379`` (clients). ``exec_prefix[i]`` is prepended to
    node i's command (``ip netns exec NS``); both are remembered for restarts. ``settings`` adds node settings
    (e.g. ``{"compact_after_entries": 500}``) to every node's config file."""
    say = progress or _noop
    d = Path(dir).absolute()
    if (d / CLUSTER_FILE).exists():
        info = load(d)
        running = [n for n in info.nodes if n.running]
        if running:
            pids = ", ".join(f"node {n.id} pid {n.pid}" for n in running)
            raise ClusterError(
                f"a cluster is already running in {d} ({pids}): use it, or stop it with `raftkv cluster down`"
            )
        if nodes is not None and nodes != len(info.nodes):
            raise ClusterError(
                f"{d} holds a stopped {len(info.nodes)}-node cluster: `raftkv cluster up` without --nodes starts it "
                f"again, `raftkv cluster down --purge` removes it"
            )
        say(f"starting the existing {len(info.nodes)}-node cluster in {d} again (its data is kept)")
        if serve_cmd is not None:
            info = replace(info, serve_cmd=tuple(serve_cmd))
            _save(info)
    else:
        n = 3 if nodes is None else nodes
        if not 1 <= n <= MAX_NODES:
            raise ClusterError(f"--nodes must be between 1 and {MAX_NODES}, got {n}")
        if tick_ms < 1:
            raise ClusterError(f"--tick-ms must be at least 1, got {tick_ms}")
        leftovers = sorted(p.name for p in d.glob("node*")) if d.is_dir() else []
        if leftovers:
            raise ClusterError(f"{d} holds node directories ({', '.join(leftovers)}) but no {CLUSTER_FILE}: remove it")
        if hosts is not None and len(hosts) != n:
            raise ClusterError(f"{n} nodes need {n} host addresses, got {len(hosts)}")
        if exec_prefix is not None and len(exec_prefix) != n:
            raise ClusterError(f"{n} nodes need {n} command prefixes, got {len(exec_prefix)}")
        if hosts is not None:
            addrs = [(f"{h}:{PEER_PORT}", f"{h}:{CLIENT_PORT}") for h in hosts]
        else:
            addrs = [(f"127.0.0.1:{peer}", f"127.0.0.1:{client}") for peer, client in _plan_ports(n, base_port)]
        node_infos = tuple(
            NodeInfo(
                i + 1, peer, client, d / f"node{i + 1}",
                exec_prefix=tuple(exec_prefix[i]) if exec_prefix is not None else (),
            )
            for i, (peer, client) in enumerate(addrs)
        )
        import secrets

        from .settings import member_toml

        info = ClusterInfo(d, _now(), node_infos, tick_ms, sync, tuple(serve_cmd) if serve_cmd else None)
        token = f"local-{secrets.token_hex(6)}"
        members = tuple(ni.member for ni in node_infos)
        for ni in node_infos:
            ni.data_dir.mkdir(parents=True, exist_ok=True)
            ni.config.write_text(
                f"# written by `raftkv cluster up` at {info.created}; run by hand with:\n"
                f"#   raftkv serve --config {ni.config}\n"
                f"id = {ni.id}\n"
                f"data_dir = {json.dumps(str(ni.data_dir))}\n"
                f"cluster_token = {json.dumps(token)}\n"
                f"tick_ms = {tick_ms}\n"
                f"sync = {'true' if sync else 'false'}\n"
                + "".join(f"{k} = {json.dumps(v)}\n" for k, v in (settings or {}).items())
                + "\n"
                + member_toml(members)
            )
        _save(info, token)
        say(f"created a {n}-node cluster in {d}")
    started: list[int] = []
    try:
        for ni in info.nodes:
            pid = _start(info, ni)
            started.append(pid)
            say(f"node {ni.id}: pid {pid}, client {ni.client_addr}, peer {ni.peer_addr}, log {ni.log}")
        info = load(d)
        _save(info)
        wait_for_leader(info, timeout_s=timeout_s, progress=say)
    except BaseException as e:
        if isinstance(e, RaftKVError | KeyboardInterrupt):
            for ni in info.nodes:
                tail = _tail(ni.log, 15)
                say(f"--- node {ni.id}: last lines of {ni.log} ---\n{tail or '(empty)'}")
        _stop_pids(started, 5.0)
        for ni in info.nodes:
            with contextlib.suppress(OSError):
                ni.pid_file.unlink()
        with contextlib.suppress(RaftKVError, OSError):
            _save(load(d))
        if isinstance(e, RaftKVError):
            raise ClusterError(
                f"{e.message}; stopped the nodes (logs are in {d}/node*/node.log; "
                f"`raftkv cluster down --purge --dir {d}` removes the cluster)"
            ) from None
        raise
    return load(d)


def wait_for_leader(info: ClusterInfo, *, timeout_s: float = 30.0, progress: Progress | None = None) -> NodeStatus:
    """Poll every node's Status until one is leader and every node agrees on it (same leader, same term)."""
    say = progress or _noop
    say(f"waiting for the {len(info.nodes)} nodes to elect a leader (up to {timeout_s:g}s)")
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    last_note = ""
    with SyncClient(info.endpoints, timeout_s=max(1.0, timeout_s)) as c:
        while True:
            for ni in info.nodes:
                pid = _read_pid(ni)
                if pid is None or not _alive(pid):
                    last = _tail(ni.log, 1)
                    raise ClusterError(
                        f"node {ni.id} exited right after starting" + (f" (its last log line: {last})" if last else "")
                    )
            statuses = c.cluster_status(timeout_s=0.5)
            leaders = [s for s in statuses if s.role == "leader"]
            answering = sum(s.reachable for s in statuses)
            if len(leaders) == 1 and answering == len(statuses):
                ld = leaders[0]
                if all(s.leader_id == ld.id and s.term == ld.term for s in statuses):
                    say(f"node {ld.id} is the leader (term {ld.term}), elected in {time.monotonic() - t0:.1f}s")
                    return ld
            note = f"{answering}/{len(statuses)} nodes answering, {len(leaders)} claiming leadership"
            if note != last_note:
                say(f"  {note}")
                last_note = note
            if time.monotonic() >= deadline:
                raise ClusterError(f"no leader was elected within {timeout_s:g}s ({note})")
            time.sleep(0.1)


def status(dir: str | os.PathLike[str], *, timeout_s: float = 2.0) -> list[tuple[NodeInfo, NodeStatus]]:
    """Each node with its live status (``reachable=False`` for nodes that do not run or do not answer)."""
    info = load(dir)
    running = [n for n in info.nodes if n.running]
    by_addr: dict[str, NodeStatus] = {}
    if running:
        with SyncClient([n.client_addr for n in running], timeout_s=timeout_s) as c:
            by_addr = {s.endpoint: s for s in c.cluster_status(timeout_s=timeout_s)}
    out = []
    for n in info.nodes:
        st = by_addr.get(n.client_addr)
        if st is None or not st.reachable:
            st = NodeStatus(
                n.client_addr,
                False,
                id=n.id,
                client_addr=n.client_addr,
                peer_addr=n.peer_addr,
                error=st.error if st is not None else "not running",
            )
        elif not st.peer_addr:
            st = replace(st, peer_addr=n.peer_addr)
        out.append((n, st))
    return out


def _check_pid(node: NodeInfo) -> int | None:
    """The node's live pid, None if it does not run (a stale pid file is removed). Raises if the pid file names a
    live process that is not this node."""
    pid = _read_pid(node)
    if pid is None:
        return None
    if not _alive(pid):
        with contextlib.suppress(OSError):
            node.pid_file.unlink()
        return None
    if not _owned(pid, node):
        raise ClusterError(
            f"refusing to signal pid {pid}: it is not node {node.id} (its command line does not name {node.config}); "
            f"the pid file {node.pid_file} is stale: remove it"
        )
    return pid


def _stop_pids(pids: Sequence[int], timeout_s: float) -> list[int]:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL. Returns the pids that had to be killed."""
    live = [p for p in pids if _alive(p)]
    for p in live:
        _signal(p, signal.SIGTERM)
    stubborn = _wait_gone(live, timeout_s)
    for p in stubborn:
        _signal(p, signal.SIGKILL)
    _wait_gone(stubborn, 5.0)
    return stubborn


def _after_exit(info: ClusterInfo, node: NodeInfo) -> None:
    with contextlib.suppress(OSError):
        node.pid_file.unlink()
    _save(info)


def kill(dir: str | os.PathLike[str], node: int) -> str:
    """SIGKILL the node (a crash). Refuses if its pid file names a process that is not this node."""
    info = load(dir)
    n = info.node(node)
    pid = _check_pid(n)
    if pid is None:
        _save(info)
        return f"node {node} is not running"
    _signal(pid, signal.SIGKILL)
    if _wait_gone([pid], 5.0):
        raise ClusterError(f"node {node} (pid {pid}) is still alive 5s after SIGKILL")
    _after_exit(info, n)
    return f"killed node {node} (pid {pid})"


def stop(dir: str | os.PathLike[str], node: int, *, timeout_s: float = 10.0) -> str:
    """SIGTERM the node and wait up to ``timeout_s`` for it to exit, then SIGKILL it."""
    info = load(dir)
    n = info.node(node)
    pid = _check_pid(n)
    if pid is None:
        _save(info)
        return f"node {node} is not running"
    killed = _stop_pids([pid], timeout_s)
    _after_exit(info, n)
    if killed:
        return f"node {node} (pid {pid}) did not stop within {timeout_s:g}s: killed it"
    return f"stopped node {node} (pid {pid})"


def restart(dir: str | os.PathLike[str], node: int, *, timeout_s: float = 10.0) -> str:
    """Start the node again with its config and data (stopping it first if it runs); wait until it answers and has
    rejoined (it follows a leader and has applied what the other nodes had committed), so that a node that refuses
    to run once it hears from its leader (a data directory older than what it acknowledged) is reported as a
    failure. A node that answers but finds no leader within ``timeout_s`` (no quorum) is reported as restarted,
    saying so."""
    info = load(dir)
    n = info.node(node)
    note = ""
    pid = _check_pid(n)
    if pid is not None:
        _stop_pids([pid], 10.0)
        with contextlib.suppress(OSError):
            n.pid_file.unlink()
        note = f" (stopped pid {pid} first)"
    new_pid = _start(info, n)
    _save(info)
    deadline = time.monotonic() + timeout_s
    target: int | None = None
    with SyncClient([n.client_addr], timeout_s=max(1.0, timeout_s)) as c:
        while True:
            if not _alive(new_pid):
                last = _tail(n.log, 1)
                raise ClusterError(
                    f"node {node} exited right after starting"
                    + (f" (its last log line: {last})" if last else "")
                    + f"; see `raftkv cluster logs {node}`"
                )
            st = c.cluster_status(timeout_s=0.5)[0]
            if st.reachable and target is None:
                # What it must catch up to: the highest commit index any other running node knows now.
                others = [o for _, o in status(dir, timeout_s=0.5) if o.reachable and o.id != node]
                target = max((o.commit for o in others), default=0)
            joined = (
                st.reachable and st.leader_id != 0 and st.role in ("leader", "follower")
                and st.applied >= max(st.commit, target or 0)
            )
            if joined or st.role in ("corrupt", "removed"):
                return f"restarted node {node}{note}: pid {new_pid}, {st.role}"
            if time.monotonic() >= deadline:
                if st.reachable:
                    return f"restarted node {node}{note}: pid {new_pid}, {st.role} (no leader known yet)"
                raise ClusterError(
                    f"node {node} (pid {new_pid}) started but did not answer within {timeout_s:g}s; "
                    f"see `raftkv cluster logs {node}`"
                )
            time.sleep(0.1)


def add_node(
    dir: str | os.PathLike[str],
    *,
    learner: bool = False,
    timeout_s: float = 60.0,
    progress: Progress | None = None,
) -> NodeInfo:
    """Grow the local cluster by one node: add it as a learner through the leader, start it in join mode (it
    receives the log, or a snapshot of the state if the log was compacted), wait until it has caught up, then
    promote it to voter (unless ``learner``)."""
    from .settings import Member, member_toml

    say = progress or _noop
    info = load(dir)
    if any(n.exec_prefix for n in info.nodes):
        raise ClusterError("add-node supports loopback clusters only (not ones in network namespaces)")
    new_id = max(n.id for n in info.nodes) + 1
    peer, client = _plan_ports(1, None)[0]
    ni = NodeInfo(new_id, f"127.0.0.1:{peer}", f"127.0.0.1:{client}", info.dir / f"node{new_id}")
    with SyncClient(info.endpoints, timeout_s=30) as c:
        ml = c.member_add(new_id, ni.peer_addr, ni.client_addr, learner=True)
        say(f"added node {new_id} to cluster {ml.cluster_id} as a learner")
        members = [Member(m.id, m.peer_addr, m.client_addr) for m in ml.members if m.id != new_id]
        members.append(Member(new_id, ni.peer_addr, ni.client_addr))
        ni.data_dir.mkdir(parents=True, exist_ok=True)
        ni.config.write_text(
            f"# written by `raftkv cluster add-node` at {_now()}\n"
            f"id = {new_id}\n"
            f"data_dir = {json.dumps(str(ni.data_dir))}\n"
            f"join = true\n"
            f"join_cluster_id = {json.dumps(ml.cluster_id)}\n"
            f"tick_ms = {info.tick_ms}\n"
            f"sync = {'true' if info.sync else 'false'}\n\n" + member_toml(members)
        )
        info = replace(info, nodes=(*info.nodes, ni))
        _save(info)
        pid = _start(info, ni)
        say(f"node {new_id}: pid {pid}, client {ni.client_addr}, peer {ni.peer_addr}, log {ni.log}")
        deadline = time.monotonic() + timeout_s
        while True:
            sts = {s.id: s for s in c.cluster_status(timeout_s=1.0) if s.reachable}
            lead = next((s for s in sts.values() if s.role == "leader"), None)
            try:
                mine: NodeStatus | None = c.status(ni.client_addr)
            except RaftKVError:
                mine = None
            if lead is not None and mine is not None and mine.applied >= lead.commit:
                break
            if not _alive(pid):
                raise ClusterError(f"node {new_id} exited; see `raftkv cluster logs {new_id}`")
            if time.monotonic() >= deadline:
                raise ClusterError(f"node {new_id} did not catch up within {timeout_s:g}s (it stays a learner)")
            time.sleep(0.2)
        say(f"node {new_id} caught up (applied {mine.applied})")
        if not learner:
            c.member_promote(new_id)
            say(f"node {new_id} is now a voter")
    return load(dir).node(new_id)


def down(dir: str | os.PathLike[str], *, purge: bool = False, timeout_s: float = 10.0) -> list[str]:
    """Stop every node (SIGTERM, then SIGKILL after ``timeout_s``) and remove the pid files; ``purge`` also
    deletes the cluster directory. Safe to repeat."""
    d = Path(dir).absolute()
    if not (d / CLUSTER_FILE).is_file():
        return [f"no local cluster in {d}: nothing to do"]
    info = load(d)
    msgs = []
    pids: dict[int, NodeInfo] = {}
    for n in info.nodes:
        pid = _read_pid(n)
        if pid is None or not _alive(pid):
            continue
        if not _owned(pid, n):
            msgs.append(f"node {n.id}: pid {pid} is not this node (stale pid file): left it alone")
            continue
        pids[pid] = n
    killed = _stop_pids(list(pids), timeout_s)
    for pid, n in pids.items():
        msgs.append(f"{'killed' if pid in killed else 'stopped'} node {n.id} (pid {pid})")
    for n in info.nodes:
        with contextlib.suppress(OSError):
            n.pid_file.unlink()
    if not pids:
        msgs.append("no node was running")
    if purge:
        import shutil

        shutil.rmtree(d)
        msgs.append(f"removed {d}")
    else:
        _save(info)
    return msgs


def logs(dir: str | os.PathLike[str], node: int, lines: int = 50) -> str:
    """The last ``lines`` lines of the node's log."""
    n = load(dir).node(node)
    if not n.log.exists():
        raise ClusterError(f"node {node} has no log yet ({n.log})")
    return _tail(n.log, lines)
