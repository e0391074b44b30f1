"""The nemesis: real faults injected into a real cluster, on a seeded schedule, always undone.

Faults (each a name; ``--nemesis`` takes these names or the family names on the left, or ``all``)::

    kill       kill-leader, kill-random,    SIGKILL (kill -9) of the leader / one random node / a random minority /
               kill-minority, kill-all      every node; healed by restarting them (same data, same config)
    pause      pause-leader                 SIGSTOP of the leader; healed by SIGCONT: the old leader wakes up still
                                            believing it leads, with a newer leader elected meanwhile
    partition  partition-halves,            a random majority/minority split; the leader alone; one follower alone
               isolate-leader, isolate-follower
    bridge     bridge                       two halves that cannot talk, and one node that talks to both
    ring       ring                         every node hears a majority (itself included), no two nodes the same one
    oneway     oneway-leader-deaf,          asymmetric, one-way loss: the leader hears nobody (its messages still
               oneway-leader-mute,          arrive) / nobody hears the leader (it still hears them) / one random link
               oneway-link                  loses everything in one direction
    loss       loss                         every node drops a random 10-40% of the packets it receives from peers
    netem      netem                        tc netem delay with jitter on every node (only where the kernel has netem;
                                            elsewhere it is reported as skipped, never faked)

Process faults act on the nodes' processes by pid (:class:`LocalProcesses`, through :mod:`raftkv.localcluster`);
network faults are iptables rules in the nodes' network namespaces (:class:`raftkv.chaos.net.NetnsHosts`), which
touch only traffic between nodes: clients still reach every node. Without namespaces only process faults run.

The schedule (:func:`make_schedule`) alternates a healed period and a faulty one (5-10 s each by default), from a
seed: families are drawn from a shuffled bag (every enabled family once per round, so short runs still cover them),
the fault within a family and its targets at random. One fault is active at a time.

Every fault, heal and skip is logged (:class:`FaultLog`, the ``faults.log`` file) with the monotonic clock the
history uses and the wall time. :meth:`Nemesis.heal` undoes everything that is in effect -- SIGCONT to paused nodes,
the network healed, killed nodes restarted -- and is safe to call at any time, from any thread, any number of times:
the runner calls it at the end of the run, and again on every exit path (an exception, Ctrl-C).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TextIO

from .. import localcluster
from ..errors import ClusterError, ConfigError
from .net import CHAIN, NetnsHosts

__all__ = [
    "FAMILIES",
    "NETWORK_FAULTS",
    "PROCESS_FAULTS",
    "FaultEvent",
    "FaultLog",
    "FaultWindow",
    "LocalProcesses",
    "Nemesis",
    "NetnsNetwork",
    "NetworkControl",
    "ProcessControl",
    "Step",
    "format_event",
    "make_schedule",
    "parse_nemesis",
    "plan_nemesis",
    "ring_hears",
    "run_schedule",
]

FAMILIES: dict[str, tuple[str, ...]] = {
    "kill": ("kill-leader", "kill-random", "kill-minority", "kill-all"),
    "pause": ("pause-leader",),
    "partition": ("partition-halves", "isolate-leader", "isolate-follower"),
    "bridge": ("bridge",),
    "ring": ("ring",),
    "oneway": ("oneway-leader-deaf", "oneway-leader-mute", "oneway-link"),
    "loss": ("loss",),
    "netem": ("netem",),
}
"""Fault families and the faults in each (the names ``--nemesis`` accepts, besides ``all``)."""

PROCESS_FAULTS = frozenset(FAMILIES["kill"] + FAMILIES["pause"])
NETWORK_FAULTS = frozenset(f for fs in FAMILIES.values() for f in fs) - PROCESS_FAULTS
_FAMILY_OF = {f: fam for fam, fs in FAMILIES.items() for f in fs}


# -- what the nemesis acts on -------------------------------------------------------------------------------------
class ProcessControl(Protocol):
    """The nodes' processes. Node ids are 1..n. Every method blocks until done and raises on failure."""

    @property
    def node_ids(self) -> Sequence[int]: ...

    def leader(self) -> int | None:
        """The current leader's id (the highest term among the nodes claiming it), None if none is known."""
        ...

    def kill(self, node: int) -> str:
        """SIGKILL the node; returns what it did (for the log)."""
        ...

    def restart(self, node: int) -> str:
        """Start the node again (its data and config kept) and wait until it answers."""
        ...

    def pause(self, node: int) -> int:
        """SIGSTOP the node's process; returns its pid (to resume exactly that process)."""
        ...

    def resume(self, node: int, pid: int) -> str:
        """SIGCONT the process ``pid`` if it still is the node."""
        ...


class NetworkControl(Protocol):
    """The faults of :class:`raftkv.chaos.net.NetnsHosts` the nemesis uses (see there for their semantics)."""

    @property
    def n(self) -> int: ...

    @property
    def netem_available(self) -> bool: ...

    def heal(self) -> None: ...

    def partition(self, groups: Sequence[Sequence[int]]) -> None: ...

    def isolate(self, node: int) -> None: ...

    def block(self, frm: int, to: int) -> None: ...

    def loss(self, node: int, fraction: float) -> None: ...

    def delay(self, node: int, delay_ms: int, jitter_ms: int = 0) -> None: ...


class NetnsNetwork:
    """:class:`NetworkControl` over :class:`~raftkv.chaos.net.NetnsHosts`: every fault is the hosts' own, except
    ``loss``. ``NetnsHosts.loss`` builds one rule with two source matches (``-s SUBNET ! -s BRIDGE``), which
    iptables refuses ("multiple -s flags not allowed"); here a lossy node gets one rule per peer instead
    (``-s PEER -m statistic --mode random --probability P -j DROP``), in the same chain, so ``heal()`` removes them
    with the rest. Clients (from the bridge address) are never dropped, as there."""

    def __init__(self, hosts: NetnsHosts) -> None:
        self.hosts = hosts

    @property
    def n(self) -> int:
        return self.hosts.n

    @property
    def netem_available(self) -> bool:
        return self.hosts.netem_available

    def heal(self) -> None:
        self.hosts.heal()

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        self.hosts.partition(groups)

    def isolate(self, node: int) -> None:
        self.hosts.isolate(node)

    def block(self, frm: int, to: int) -> None:
        self.hosts.block(frm, to)

    def delay(self, node: int, delay_ms: int, jitter_ms: int = 0) -> None:
        self.hosts.delay(node, delay_ms, jitter_ms)

    def loss(self, node: int, fraction: float) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ClusterError(f"loss fraction must be in (0, 1], got {fraction}")
        for peer in range(1, self.hosts.n + 1):
            if peer == node:
                continue
            args = [*self.hosts.exec_prefix(node), "iptables", "-A", CHAIN, "-s", self.hosts.ip(peer),
                    "-m", "statistic", "--mode", "random", "--probability", f"{fraction:.4f}", "-j", "DROP"]
            r = subprocess.run(args, capture_output=True, text=True, timeout=20, check=False)
            if r.returncode != 0:
                raise ClusterError(f"`{' '.join(args)}` failed: {' '.join((r.stderr or r.stdout).split())}")


def _signal_node(pid: int, sig: signal.Signals) -> None:
    """Signal the node's process group (each node leads its own session), else the process alone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


class LocalProcesses:
    """:class:`ProcessControl` for a cluster started by :func:`raftkv.localcluster.up` in ``dir``: kills and restarts
    go through the launcher (by pid, after checking the pid still is that node); pauses send SIGSTOP / SIGCONT."""

    def __init__(self, dir: str | os.PathLike[str], *, restart_timeout_s: float = 30.0) -> None:
        self.dir = Path(dir)
        self._ids = tuple(n.id for n in localcluster.load(self.dir).nodes)
        self._restart_timeout_s = restart_timeout_s

    @property
    def node_ids(self) -> Sequence[int]:
        return self._ids

    def leader(self) -> int | None:
        rows = localcluster.status(self.dir, timeout_s=1.0)
        leaders = [st for _, st in rows if st.reachable and st.role == "leader"]
        if not leaders:
            return None
        return max(leaders, key=lambda st: st.term).id

    def kill(self, node: int) -> str:
        return localcluster.kill(self.dir, node)

    def restart(self, node: int) -> str:
        return localcluster.restart(self.dir, node, timeout_s=self._restart_timeout_s)

    def pause(self, node: int) -> int:
        info = localcluster.load(self.dir).node(node)
        if not info.running or info.pid is None:
            raise ClusterError(f"node {node} is not running: cannot pause it")
        _signal_node(info.pid, signal.SIGSTOP)
        return info.pid

    def resume(self, node: int, pid: int) -> str:
        info = localcluster.load(self.dir).node(node)
        if info.pid != pid or not info.running:
            return f"node {node}: pid {pid} is gone, nothing to resume"
        _signal_node(pid, signal.SIGCONT)
        return f"SIGCONT node {node} (pid {pid})"


# -- choosing faults ----------------------------------------------------------------------------------------------
def parse_nemesis(spec: str) -> dict[str, tuple[str, ...]]:
    """``"partition,kill-leader,pause"`` or ``"all"`` -> the requested families and their faults (a single fault
    name forms a family of its own). Raises :class:`ConfigError` on an unknown name."""
    out: dict[str, tuple[str, ...]] = {}
    names = [s.strip().lower() for s in spec.split(",") if s.strip()]
    if not names:
        raise ConfigError("--nemesis is empty: give fault names, family names or `all`")
    for name in names:
        if name == "all":
            out.update(FAMILIES)
        elif name in FAMILIES:
            out[name] = FAMILIES[name]
        elif name in _FAMILY_OF:
            out.setdefault(name, (name,))
        else:
            known = ", ".join(dict.fromkeys([*FAMILIES, *sorted(_FAMILY_OF)]))
            raise ConfigError(f"unknown nemesis {name!r}: expected `all` or some of {known}")
    return out


def plan_nemesis(
    requested: dict[str, tuple[str, ...]], *, network_unavailable: str | None, netem_available: bool, nodes: int
) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """The families that can run here, and the faults left out with the reason (one line each).

    Network faults need namespaces (``network_unavailable`` is None) and at least 3 nodes; netem needs the kernel's
    sch_netem module."""
    enabled: dict[str, tuple[str, ...]] = {}
    skipped: dict[str, str] = {}
    for fam, faults in requested.items():
        keep = []
        for f in faults:
            if f in NETWORK_FAULTS and network_unavailable is not None:
                skipped[f] = f"network faults are unavailable: {network_unavailable}"
            elif f in NETWORK_FAULTS and nodes < 3:
                skipped[f] = "network faults need at least 3 nodes"
            elif f == "netem" and not netem_available:
                skipped[f] = "tc netem is not available on this kernel (no sch_netem): delay faults are skipped"
            elif f == "kill-minority" and nodes < 3:
                skipped[f] = "a minority of fewer than 3 nodes is nobody"
            else:
                keep.append(f)
        if keep:
            enabled[fam] = tuple(keep)
    return enabled, skipped


@dataclass(frozen=True, slots=True)
class Step:
    """One period of the schedule: ``heal_s`` seconds healed, then fault ``kind`` for ``fault_s`` seconds.
    ``seed`` drives the random choices made when the fault is injected (which nodes, which split)."""

    index: int
    kind: str
    heal_s: float
    fault_s: float
    seed: int


def make_schedule(
    families: dict[str, tuple[str, ...]],
    duration_s: float,
    *,
    seed: int,
    fault_s: tuple[float, float] = (5.0, 10.0),
    heal_s: tuple[float, float] = (5.0, 10.0),
) -> list[Step]:
    """The faults for a run of ``duration_s`` seconds: steps whose healed period starts before the end.

    Deterministic in ``seed``. Families come from a shuffled bag (each enabled family once per round); the fault
    within a family uniformly. Period lengths are uniform in the given ranges (``(a, b)``, seconds)."""
    for what, (lo, hi) in (("fault", fault_s), ("heal", heal_s)):
        if not 0 < lo <= hi:
            raise ConfigError(f"the {what} period must be A-B seconds with 0 < A <= B, got {lo:g}-{hi:g}")
    if not families:
        return []
    rng = random.Random(seed)
    bag: list[str] = []
    steps: list[Step] = []
    t = 0.0
    while t < duration_s:
        if not bag:
            bag = sorted(families)
            rng.shuffle(bag)
        fam = bag.pop()
        kind = rng.choice(families[fam])
        h = round(rng.uniform(*heal_s), 3)
        f = round(rng.uniform(*fault_s), 3)
        steps.append(Step(len(steps), kind, h, f, rng.getrandbits(32)))
        t += h + f
    return steps


# -- the log ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FaultEvent:
    """One line of ``faults.log``. ``event`` is ``fault`` (injected), ``heal`` (undone), ``skip`` (could not be
    injected, e.g. no leader known), ``error`` (an undo step failed) or ``note``. ``mono_ns`` is
    ``time.monotonic_ns()``, the clock of the history, so faults and operations line up."""

    mono_ns: int
    wall: str
    event: str
    kind: str
    detail: str
    step: int | None = None


def format_event(ev: FaultEvent, t0_ns: int) -> str:
    """``+  12.345s  2025-01-01T12:00:00.123Z  fault  kill-leader         #3  kill -9 node 2 (pid 4711)``: seconds
    since the run started, wall time (UTC), event, fault, step number, what was done."""
    rel = (ev.mono_ns - t0_ns) / 1e9
    step = f"#{ev.step}" if ev.step is not None else "-"
    return f"+{rel:9.3f}s  {ev.wall}  {ev.event:<5}  {ev.kind:<18}  {step:>4}  {ev.detail}"


def _wall_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FaultLog:
    """Records fault events in memory and, line by line as they happen, in a file (flushed after each line, so a
    crashed run still leaves its log). ``sink`` also receives every formatted line (progress output)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        t0_ns: int | None = None,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        wall: Callable[[], str] = _wall_now,
        sink: Callable[[str], None] | None = None,
    ) -> None:
        self._clock_ns = clock_ns
        self._wall = wall
        self.t0_ns = clock_ns() if t0_ns is None else t0_ns
        self.events: list[FaultEvent] = []
        self._sink = sink
        self._lock = threading.Lock()
        self._file: TextIO | None = open(path, "a", encoding="utf-8") if path is not None else None  # noqa: SIM115

    def record(self, event: str, kind: str, detail: str, step: int | None = None) -> FaultEvent:
        detail = " ".join(detail.split())  # one line, whatever a failing command printed
        with self._lock:
            ev = FaultEvent(self._clock_ns(), self._wall(), event, kind, detail, step)
            self.events.append(ev)
            line = format_event(ev, self.t0_ns)
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()
        if self._sink is not None:
            self._sink(line)
        return ev

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


@dataclass(slots=True)
class FaultWindow:
    """A fault from injection to heal (``end_ns`` None while it is in effect). ``kind`` is the fault's name."""

    kind: str
    step: int | None
    start_ns: int
    detail: str
    end_ns: int | None = None
    final: bool = False
    """Healed by the final heal at the end of the run (or on exit), not by the schedule."""


# -- the nemesis --------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _State:
    killed: list[int] = field(default_factory=list)
    paused: dict[int, int] = field(default_factory=dict)  # node -> pid
    network_dirty: bool = False
    active: FaultWindow | None = None


class Nemesis:
    """Injects faults and undoes them. Thread-safe: one lock serialises every action, so :meth:`heal` called on an
    exit path waits for an injection still running in a worker thread, then undoes it too.

    Invariants: every node in ``_state.killed`` was killed by this object and not restarted yet; every node in
    ``_state.paused`` was stopped by SIGSTOP and not continued yet; ``network_dirty`` is set before any rule is
    added and cleared only after the network was healed."""

    def __init__(self, processes: ProcessControl, network: NetworkControl | None, log: FaultLog) -> None:
        self.processes = processes
        self.network = network
        self.log = log
        self.windows: list[FaultWindow] = []
        self.counts: dict[str, int] = {}
        """Faults injected, by name."""
        self._state = _State()
        self._lock = threading.RLock()

    @property
    def active(self) -> FaultWindow | None:
        return self._state.active

    def inject(self, step: Step) -> bool:
        """Inject ``step.kind`` (undoing whatever was still in effect first). Returns False if it was skipped (no
        leader known, netem missing); raises if a step of the injection failed (what was done is still undone by
        :meth:`heal`)."""
        with self._lock:
            if self._state.active is not None or self._dirty():
                self.heal()
            rng = random.Random(step.seed)
            try:
                detail = self._inject(step.kind, rng)
            except _Skip as e:
                self.log.record("skip", step.kind, str(e), step.index)
                return False
            except BaseException as e:
                # Partly injected: remember it as a window so the heal is logged against this fault.
                failed = "failed: " + " ".join(str(e).split())
                self._state.active = FaultWindow(step.kind, step.index, time.monotonic_ns(), failed)
                self.windows.append(self._state.active)
                self.log.record("error", step.kind, f"injection failed: {e}", step.index)
                raise
            ev = self.log.record("fault", step.kind, detail, step.index)
            self._state.active = FaultWindow(step.kind, step.index, ev.mono_ns, detail)
            self.windows.append(self._state.active)
            self.counts[step.kind] = self.counts.get(step.kind, 0) + 1
            return True

    def heal(self, *, final: bool = False) -> list[str]:
        """Undo everything in effect: SIGCONT every paused node, heal the network, restart every killed node (in
        that order: a paused node must run before anything else can be judged, and restarted nodes should find
        the network whole). Never raises for one failed step: it goes on with the others, logs each failure and
        returns the errors. Safe to repeat; a no-op when nothing is in effect."""
        with self._lock:
            st = self._state
            done: list[str] = []
            errors: list[str] = []
            for node, pid in list(st.paused.items()):
                try:
                    done.append(self.processes.resume(node, pid))
                    del st.paused[node]
                except Exception as e:
                    errors.append(f"SIGCONT node {node} (pid {pid}): {e}")
            if st.network_dirty and self.network is not None:
                try:
                    self.network.heal()
                    st.network_dirty = False
                    done.append("network healed")
                except Exception as e:
                    errors.append(f"healing the network: {e}")
            for node in list(st.killed):
                failure = ""
                for _attempt in range(2):  # a restart under heavy load can miss its deadline once
                    try:
                        done.append(self.processes.restart(node))
                        st.killed.remove(node)
                        failure = ""
                        break
                    except Exception as e:
                        failure = str(e)
                if failure:
                    errors.append(f"restarting node {node}: {failure}")
            w = st.active
            kind = w.kind if w is not None else "final"
            step = w.step if w is not None else None
            healed_ns = time.monotonic_ns()
            if done or w is not None:
                healed_ns = self.log.record("heal", kind, "; ".join(done) or "nothing to undo", step).mono_ns
            for problem in errors:
                self.log.record("error", kind, problem, step)
            if w is not None and not errors:
                w.end_ns = healed_ns
                w.final = final
                st.active = None
            return errors

    def in_effect(self) -> str:
        """What is in effect now, for progress lines (empty when healed)."""
        w = self._state.active
        return f"{w.kind}: {w.detail}" if w is not None else ""

    def _dirty(self) -> bool:
        st = self._state
        return bool(st.killed or st.paused or st.network_dirty)

    # -- the faults --------------------------------------------------------------------------------------------
    def _leader(self) -> int:
        leader = self.processes.leader()
        if leader is None:
            raise _Skip("no leader is known right now")
        return leader

    def _net(self) -> NetworkControl:
        if self.network is None:
            raise _Skip("network faults are unavailable (no namespaces)")
        self._state.network_dirty = True
        self.network.heal()  # start from a whole network: block/loss add to the current rules
        return self.network

    def _kill(self, nodes: Sequence[int]) -> str:
        out = []
        for n in nodes:
            self._state.killed.append(n)  # first: a kill that fails halfway still gets a restart
            out.append(self.processes.kill(n))
        return "; ".join(out)

    def _inject(self, kind: str, rng: random.Random) -> str:
        ids = list(self.processes.node_ids)
        n = len(ids)
        if kind == "kill-leader":
            return self._kill([self._leader()])
        if kind == "kill-random":
            return self._kill([rng.choice(ids)])
        if kind == "kill-minority":
            return self._kill(sorted(rng.sample(ids, (n - 1) // 2)))
        if kind == "kill-all":
            return self._kill(ids)
        if kind == "pause-leader":
            leader = self._leader()
            pid = self.processes.pause(leader)
            self._state.paused[leader] = pid
            return f"SIGSTOP node {leader} (pid {pid}), the leader"
        if kind == "partition-halves":
            nodes = ids[:]
            rng.shuffle(nodes)
            minority, majority = sorted(nodes[: (n - 1) // 2]), sorted(nodes[(n - 1) // 2 :])
            self._net().partition([minority, majority])
            return f"partition {minority} | {majority}"
        if kind == "isolate-leader":
            leader = self._leader()
            self._net().isolate(leader)
            return f"isolate node {leader}, the leader"
        if kind == "isolate-follower":
            leader = self._leader()
            node = rng.choice([i for i in ids if i != leader])
            self._net().isolate(node)
            return f"isolate node {node}, a follower (the leader is node {leader})"
        if kind == "bridge":
            nodes = ids[:]
            rng.shuffle(nodes)
            bridge, rest = nodes[0], nodes[1:]
            a, b = sorted(rest[: len(rest) // 2]), sorted(rest[len(rest) // 2 :])
            net = self._net()
            for x in a:
                for y in b:
                    net.block(x, y)
                    net.block(y, x)
            return f"bridge: {a} | {b} cannot talk; node {bridge} talks to both"
        if kind == "ring":
            order = ids[:]
            rng.shuffle(order)
            net = self._net()
            hears = ring_hears(order)
            for node, heard in hears.items():
                for other in ids:
                    if other != node and other not in heard:
                        net.block(other, node)
            desc = ", ".join(f"{node}<-{sorted(heard)}" for node, heard in sorted(hears.items()))
            return f"ring (node<-hears from): {desc}"
        if kind == "oneway-leader-deaf":
            leader = self._leader()
            net = self._net()
            for o in ids:
                if o != leader:
                    net.block(o, leader)
            return f"node {leader} (the leader) receives nothing from the others; they still hear it"
        if kind == "oneway-leader-mute":
            leader = self._leader()
            net = self._net()
            for o in ids:
                if o != leader:
                    net.block(leader, o)
            return f"nobody receives anything from node {leader} (the leader); it still hears them"
        if kind == "oneway-link":
            frm, to = rng.sample(ids, 2)
            self._net().block(frm, to)
            return f"node {to} receives nothing from node {frm} (the other direction works)"
        if kind == "loss":
            net = self._net()
            parts = []
            for node in ids:
                fraction = round(rng.uniform(0.1, 0.4), 2)
                net.loss(node, fraction)
                parts.append(f"{node}:{fraction:.0%}")
            return "lossy links, each node drops incoming peer packets: " + " ".join(parts)
        if kind == "netem":
            if self.network is None or not self.network.netem_available:
                raise _Skip("tc netem is not available on this kernel (no sch_netem): delay faults are skipped")
            net = self._net()
            parts = []
            for node in ids:
                ms, jitter = rng.randint(50, 200), rng.randint(10, 50)
                net.delay(node, ms, jitter)
                parts.append(f"{node}:{ms}±{jitter}ms")
            return "delay on every node's packets: " + " ".join(parts)
        raise ConfigError(f"unknown fault {kind!r}")


class _Skip(Exception):
    """The fault cannot be injected right now (logged as ``skip``, not an error)."""


def ring_hears(order: Sequence[int]) -> dict[int, set[int]]:
    """For nodes placed on a ring in ``order``: whom each node hears, so that every node hears a majority (itself
    included) and no two nodes have the same majority. Each hears ``quorum - 1`` others: its neighbours up to
    distance d on both sides, plus the next one ahead when ``quorum - 1`` is odd (so on 3 nodes the ring is one-way:
    1<-2<-3<-1)."""
    n = len(order)
    others = n // 2  # quorum - 1
    d, extra = divmod(others, 2)
    hears: dict[int, set[int]] = {}
    for p, node in enumerate(order):
        heard = {order[(p + k) % n] for k in range(1, d + 1)} | {order[(p - k) % n] for k in range(1, d + 1)}
        if extra:
            heard.add(order[(p + d + 1) % n])
        hears[node] = heard - {node}
    return hears


# -- driving a schedule -------------------------------------------------------------------------------------------
async def _sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``stop`` is set first; True if it was."""
    if stop.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))
    return stop.is_set()


async def run_schedule(nemesis: Nemesis, schedule: Sequence[Step], stop: asyncio.Event) -> None:
    """Play ``schedule`` until it ends or ``stop`` is set: for each step, wait its healed period, inject its fault,
    wait its faulty period, heal. A fault in effect when ``stop`` is set stays in effect: the caller's final
    :meth:`Nemesis.heal` undoes it (so the final heal is timed from one place). Blocking actions run in worker
    threads, so the event loop (the workload) keeps going. A failed injection or heal is logged and the schedule
    goes on; the final heal will try again."""
    for step in schedule:
        if await _sleep_unless(stop, step.heal_s):
            return
        try:
            await asyncio.to_thread(nemesis.inject, step)
        except Exception:
            pass  # logged by inject; the heal below (or the final heal) undoes what was done
        if await _sleep_unless(stop, step.fault_s):
            return
        await asyncio.to_thread(nemesis.heal)
