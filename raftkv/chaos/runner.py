"""``raftkv chaos``: a fresh cluster, a workload, a nemesis, and a verdict.

The run, step by step (:func:`run_chaos`):

1. Hosts: one network namespace per node (:class:`~raftkv.chaos.net.NetnsHosts`) when namespaces work here and a
   network fault was asked for; otherwise loopback, process faults only (said in one line, with the reason).
2. A fresh cluster in ``OUT/cluster`` (:func:`raftkv.localcluster.up`).
3. For ``duration_s``: the workload (:mod:`raftkv.chaos.workload`) and the nemesis schedule
   (:mod:`raftkv.chaos.nemesis`) run together; every fault and heal goes to ``faults.log``.
4. The final heal: SIGCONT, network healed, killed nodes restarted. Then a probe writes (recorded in the history)
   until one write succeeds; then every node must agree on one leader; then one linearizable read of every key
   (also recorded).
5. Teardown -- also on an exception, Ctrl-C or SIGTERM: heal, copy the node logs to ``OUT/logs``, stop the nodes by
   pid and delete their data, remove the namespaces.
6. The checks (:class:`Verdict`), written to ``OUT/verdict.json`` with ``OUT/history.jsonl`` and
   ``OUT/timeline.png``, and shown as a table (:func:`print_verdict`).

The checks, what each means and what it assumes:

* **linearizable** -- :func:`raftkv.chaos.linearizability.check` on the whole history (workload, probe and final
  reads): some order of the acknowledged operations, plus any subset of the unknown ones, respects real time and
  replays through a sequential key-value store with the results clients saw. Assumes the clients' monotonic clock
  (one process, one clock) and the outcome classification of :func:`raftkv.chaos.workload.classify`. ``None``
  (unknown) when the search hit its time limit.
* **lost writes** (:func:`lost_writes`) -- acknowledged writes that no final read could reflect.
* **counter** (:func:`counter_check`) -- exactly-once increments.
* **watch** (:mod:`raftkv.chaos.watchcheck`) -- three watchers follow every key from the run's first revision
  through the faults (each starting on another node; ``Client.watch`` moves on when its node fails); after the
  final heal their events must be a prefix of the history replayed on the healed cluster, event for event (no gap,
  no repeat, no reordering) and reach its end, and every acknowledged put or cas must be in that history.
* **lock** (:mod:`raftkv.chaos.lockcheck`) -- two contenders take one lock over and over through the faults
  (``Client.lock``: a lease, revision-ordered waiters); no two of their holds may overlap in time, and the holds'
  fencing revisions must increase in time order.
* **recovery** -- the time from the final heal to the first acknowledged write, and per fault from its heal to the
  first successful operation and the first successful write (:func:`fault_recovery`). The run fails the recovery
  check if no write succeeds within ``recovery_timeout_s`` of the final heal, a killed node cannot be restarted, or
  the nodes do not agree on a leader.
* **longest unavailability** (:func:`longest_gap`) -- the longest stretch of time in which no operation of any kind
  succeeded (reported, not judged: some faults are meant to make the cluster unavailable).

Only a SIGKILL of the runner itself escapes the teardown. Then stop the nodes with
``raftkv cluster down --purge --dir OUT/cluster`` (a paused node too: SIGTERM, then SIGKILL) and remove the
namespaces ``rk<tag>n*`` and the bridge ``rk<tag>br`` named at the start of the run
(:func:`raftkv.chaos.net.cleanup_stale` removes every such leftover, also other runs' live ones: use it only when
nothing else runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import random
import shutil
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from .. import localcluster
from ..client import CONSISTENCY_LEVELS, Client
from ..errors import ConfigError, ExitCode, RaftKVError
from .etcdclient import EtcdKVClient
from .history import History, Op, dump_history, parse_counter, show_key
from .linearizability import CheckResult, check
from .lockcheck import LOCKERS, Contender, LockCheck, check_locks, contend
from .nemesis import (
    NETWORK_FAULTS,
    FaultLog,
    FaultWindow,
    LocalProcesses,
    Nemesis,
    NetnsNetwork,
    Step,
    make_schedule,
    parse_nemesis,
    plan_nemesis,
    run_schedule,
)
from .net import NetnsHosts, unavailable_reason
from .watchcheck import WATCHERS, WatchCheck, WatchRecord, check_watches, replay, watch_into
from .workload import COUNTER_KEY, PROBE_KEY, WRITES, Workload, WorkloadConfig, classify, register_keys

__all__ = [
    "ChaosConfig",
    "CounterCheck",
    "Gap",
    "Recovery",
    "Verdict",
    "counter_check",
    "fault_recovery",
    "longest_gap",
    "lost_writes",
    "print_verdict",
    "run_chaos",
]

Progress = Callable[[str], None]
_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    """What to run. ``nemesis``: fault and family names or ``all`` (see :mod:`raftkv.chaos.nemesis`). ``seed``
    None picks one (printed, so the schedule can be replayed). ``out`` None: ``./raftkv-chaos/<UTC time>``.
    ``namespaces`` None: use them when they work here; False: never (process faults only). ``schedule`` replaces
    the generated one (tests)."""

    nodes: int = 5
    duration_s: float = 120.0
    nemesis: str = "all"
    consistency: str = "linearizable"
    clients: int = 10
    keys: int = 5
    seed: int | None = None
    out: Path | None = None
    tick_ms: int = 100
    fault_s: tuple[float, float] = (5.0, 10.0)
    heal_s: tuple[float, float] = (5.0, 10.0)
    op_timeout_s: float = 3.0
    think_s: float = 0.02
    check_time_limit_s: float = 300.0
    recovery_timeout_s: float = 60.0
    namespaces: bool | None = None
    api: str = "raftkv"
    """The API the workload goes through: "raftkv" (raftkv's own client) or "etcd" (etcd's v3 API)."""
    schedule: Sequence[Step] | None = None
    progress_every_s: float = 5.0


# -- the checks (pure functions of the history) -------------------------------------------------------------------
def _effect(op: Op) -> tuple[bool, bytes | None]:
    """Whether ``op`` may write its key, and the value it leaves (None: absent)."""
    if op.status == "fail":
        return False, None
    if op.kind == "put":
        return True, op.value
    if op.kind == "delete":
        return True, None
    if op.kind == "cas" and (op.status == "unknown" or op.result is True):
        return True, op.value
    return False, None


def lost_writes(ops: Sequence[Op], final: dict[bytes, bytes | None]) -> list[Op]:
    """Acknowledged writes that no final read could reflect, given ``final``: each key's value read (linearizably)
    after everything was healed and every client had stopped. Keys missing from ``final`` are not judged.

    Registers (put / delete / cas): let F be the key's final value and the *writers of F* the ops that may have
    left F -- a put or cas (acknowledged, or unknown) writing F, a delete when F is absent, and the initial state
    (absent, before everything) when F is absent. An acknowledged write W whose own effect is not F is **lost** when
    every writer of F completed before W was invoked. Why that is certain: W took effect, after all of those
    writers (real time); the final state is produced by the last write, which therefore comes after W -- so it
    cannot have completed before W began -- and leaves F: it would be a writer of F that did not complete before W.
    Unique values make this sharp: F names its one writer, and every acknowledged write that began after that
    writer had finished is lost.

    The counter (:data:`COUNTER_KEY`, only ``incr`` by +1): an acknowledged increment that returned r is lost when the
    final value is below r (the counter never decreases).

    Every write reported is a certain violation; the count is a lower bound (the linearizability check finds all
    the rest, e.g. a write lost while later writes overlap it). A final value that nothing wrote (a phantom) makes
    every acknowledged write of the key lost: none of them can be reflected."""
    by_key: dict[bytes, list[Op]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    lost: list[Op] = []
    for key, group in by_key.items():
        if key not in final:
            continue
        f = final[key]
        if key == COUNTER_KEY:
            fv = parse_counter(f)
            if fv is not None:
                lost.extend(op for op in group if op.kind == "incr" and op.status == "ok" and int(op.result or 0) > fv)
            continue
        # The latest completion among the writers of F (+inf for an unknown one; -inf for the initial absence).
        latest: float = float("-inf")
        for op in group:
            writes, v = _effect(op)
            if writes and v == f:
                latest = max(latest, float("inf") if op.complete_ts is None else op.complete_ts)
        for op in group:
            if op.status != "ok":
                continue
            writes, v = _effect(op)
            if writes and v != f and latest < op.invoke_ts:
                lost.append(op)
    return sorted(lost, key=lambda op: op.id)


@dataclass(frozen=True, slots=True)
class CounterCheck:
    """Exactly-once increments of the counter key. ``acked``: increments acknowledged; ``unknown``: outcome
    unknown; ``failed``: definitely not applied; ``final``: the value read at the end (None if it could not be
    read or is not a number). ``ok`` iff ``acked <= final <= acked + unknown``: below means acknowledged
    increments were lost, above means some increment applied twice (a retry not deduplicated) or one reported as
    failed was applied. Assumes every increment is +1 and nothing else writes the key."""

    acked: int
    unknown: int
    failed: int
    final: int | None

    @property
    def ok(self) -> bool | None:
        if self.final is None:
            return None
        return self.acked <= self.final <= self.acked + self.unknown

    def describe(self) -> str:
        if self.final is None:
            return f"final value unknown (acked {self.acked}, unknown {self.unknown})"
        if self.final < self.acked:
            return f"LOST increments: final {self.final} < {self.acked} acknowledged"
        if self.final > self.acked + self.unknown:
            return (
                f"DOUBLE-APPLIED increments: final {self.final} > {self.acked} acknowledged + {self.unknown} unknown"
            )
        return f"final {self.final} = {self.acked} acknowledged + {self.final - self.acked} of {self.unknown} unknown"


def counter_check(ops: Sequence[Op], final_values: Mapping[bytes, bytes | None]) -> CounterCheck:
    """The counter check of ``ops`` given the final reads (a counter never written reads as absent: 0; a counter
    that could not be read, or does not hold a number, leaves the check undecided)."""
    incrs = [op for op in ops if op.kind == "incr" and op.key == COUNTER_KEY]
    return CounterCheck(
        acked=sum(op.status == "ok" for op in incrs),
        unknown=sum(op.status == "unknown" for op in incrs),
        failed=sum(op.status == "fail" for op in incrs),
        final=parse_counter(final_values[COUNTER_KEY]) if COUNTER_KEY in final_values else None,
    )


@dataclass(frozen=True, slots=True)
class Gap:
    """The longest window ``[start_ns, end_ns]`` with no successful completion (of the ops selected)."""

    start_ns: int
    end_ns: int

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / _NS


def longest_gap(ops: Sequence[Op], start_ns: int, end_ns: int, *, writes_only: bool = False) -> Gap:
    """The longest window within ``[start_ns, end_ns]`` in which no op (no write, with ``writes_only``) completed
    successfully: the gaps between consecutive successful completions, and from ``start_ns`` to the first. An op
    counts at its completion, the moment a client knew it had succeeded."""
    times = sorted(
        op.complete_ts
        for op in ops
        if op.status == "ok"
        and op.complete_ts is not None
        and start_ns <= op.complete_ts <= end_ns
        and (not writes_only or op.kind in WRITES)
    )
    best = Gap(start_ns, start_ns)
    prev = start_ns
    for t in [*times, end_ns]:
        if t - prev > best.end_ns - best.start_ns:
            best = Gap(prev, t)
        prev = t
    return best


@dataclass(frozen=True, slots=True)
class Recovery:
    """For one fault: when it was injected and healed, and how long after the heal the first operation (of any
    kind) and the first write succeeded (None: none did)."""

    kind: str
    step: int | None
    start_ns: int
    heal_ns: int | None
    first_ok_s: float | None
    first_write_s: float | None
    final: bool
    detail: str


def fault_recovery(windows: Sequence[FaultWindow], ops: Sequence[Op]) -> list[Recovery]:
    """Per fault window, the time from its heal to the first successful completion (any op; a write)."""
    oks = sorted((op.complete_ts, op.kind in WRITES) for op in ops if op.status == "ok" and op.complete_ts is not None)
    out = []
    for w in windows:
        first_ok = first_write = None
        if w.end_ns is not None:
            for t, is_write in oks:
                if t < w.end_ns:
                    continue
                if first_ok is None:
                    first_ok = (t - w.end_ns) / _NS
                if is_write:
                    first_write = (t - w.end_ns) / _NS
                    break
        out.append(Recovery(w.kind, w.step, w.start_ns, w.end_ns, first_ok, first_write, w.final, w.detail))
    return out


# -- the verdict --------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Verdict:
    """Everything a run found. ``passed`` iff the history is linearizable, no write was lost, the counter adds up,
    every watcher saw the history's events (all of them) and the cluster recovered. ``exit_code``: 0 passed; 6
    (CONFLICT) a safety violation; 4 (UNAVAILABLE) no violation but the cluster did not recover; 1 (ERROR) no
    violation found but the check was inconclusive."""

    config: dict[str, Any]
    out: Path
    seed: int
    network: str
    namespace_tag: str | None
    """The tag in the names of the run's namespaces (``rk<tag>n1`` ...), None on loopback."""
    skipped: dict[str, str]
    t0_ns: int
    duration_s: float
    ops: list[Op]
    give_up_ns: dict[int, int]
    windows: list[FaultWindow]
    fault_counts: dict[str, int]
    final_values: dict[bytes, bytes | None]
    final_heal_ns: int | None
    recovered_ns: int | None
    recovery_problems: list[str]
    cleanup_problems: list[str]
    """What the teardown could not undo (reported, not part of the verdict: the run itself was over)."""
    leader: str
    watchers: list[WatchRecord] = field(default_factory=list)
    watch_reference: WatchRecord | None = None
    watch_upto: int = 0
    linearizable: CheckResult | None = None
    check_s: float = 0.0
    lost: list[Op] = field(default_factory=list)
    counter: CounterCheck | None = None
    gap: Gap | None = None
    write_gap: Gap | None = None
    recoveries: list[Recovery] = field(default_factory=list)
    watch: WatchCheck | None = None
    lockers: list[Contender] = field(default_factory=list)
    lock: LockCheck | None = None

    @property
    def recovered(self) -> bool:
        return self.recovered_ns is not None and not self.recovery_problems

    @property
    def final_recovery_s(self) -> float | None:
        if self.recovered_ns is None or self.final_heal_ns is None:
            return None
        return (self.recovered_ns - self.final_heal_ns) / _NS

    @property
    def violation(self) -> bool:
        lin = self.linearizable.ok if self.linearizable is not None else None
        return (lin is False or bool(self.lost) or (self.counter is not None and self.counter.ok is False)
                or (self.watch is not None and self.watch.ok is False)
                or (self.lock is not None and self.lock.ok is False))

    @property
    def passed(self) -> bool:
        lin = self.linearizable.ok if self.linearizable is not None else None
        counter_ok = self.counter is not None and self.counter.ok is True
        watch_ok = self.watch is not None and self.watch.ok is True and not self.watch.stuck
        lock_ok = self.lock is not None and self.lock.ok
        return lin is True and not self.lost and counter_ok and watch_ok and lock_ok and self.recovered

    @property
    def exit_code(self) -> int:
        if self.violation:
            return ExitCode.CONFLICT
        if not self.recovered:
            return ExitCode.UNAVAILABLE
        return ExitCode.OK if self.passed else ExitCode.ERROR

    def rel_s(self, ns: int | None) -> float | None:
        return None if ns is None else round((ns - self.t0_ns) / _NS, 3)

    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "fail": 0, "unknown": 0}
        for op in self.ops:
            out[op.status] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        lin = self.linearizable
        by_kind: dict[str, dict[str, int]] = {}
        for op in self.ops:
            by_kind.setdefault(op.kind, {"ok": 0, "fail": 0, "unknown": 0})[op.status] += 1
        return {
            "passed": self.passed,
            "exit_code": self.exit_code,
            "config": self.config,
            "seed": self.seed,
            "network": self.network,
            "namespace_tag": self.namespace_tag,
            "t0_monotonic_ns": self.t0_ns,
            "cleanup_problems": self.cleanup_problems,
            "nemesis_skipped": self.skipped,
            "ops": {**self.counts(), "total": len(self.ops), "by_kind": by_kind},
            "faults": {
                "injected": self.fault_counts,
                "windows": [
                    {
                        "kind": w.kind,
                        "step": w.step,
                        "start_s": self.rel_s(w.start_ns),
                        "heal_s": self.rel_s(w.end_ns),
                        "final_heal": w.final,
                        "detail": w.detail,
                    }
                    for w in self.windows
                ],
            },
            "linearizable": None
            if lin is None
            else {
                "ok": lin.ok,
                "explanation": lin.explanation,
                "check_s": round(self.check_s, 3),
                "keys": {
                    show_key(k): {"ok": r.ok, "ops": r.ops, "unknown": r.unknown, "states": r.states,
                                  "explanation": r.explanation}
                    for k, r in lin.per_key.items()
                },
            },
            "lost_writes": {
                "count": len(self.lost),
                "method": "an acknowledged write is lost when every op that could have left the key's final value "
                "completed before the write was invoked (counter: an acknowledged incr whose result exceeds the "
                "final value); see raftkv.chaos.runner.lost_writes",
                "examples": [op.describe() for op in self.lost[:20]],
            },
            "counter": None
            if self.counter is None
            else {
                "ok": self.counter.ok,
                "acked": self.counter.acked,
                "unknown": self.counter.unknown,
                "failed": self.counter.failed,
                "final": self.counter.final,
                "describe": self.counter.describe(),
            },
            "watch": None if self.watch is None else {
                "ok": self.watch.ok, "watchers": self.watch.watchers, "events": self.watch.events,
                "problems": self.watch.problems[:20], "stuck": self.watch.stuck, "describe": self.watch.describe(),
            },
            "lock": None if self.lock is None else {
                "ok": self.lock.ok, "holds": self.lock.holds, "lost": self.lock.lost,
                "contenders": self.lock.contenders,
                "problems": self.lock.problems[:20], "describe": self.lock.describe(),
                "failures": sum(c.failures for c in self.lockers),
            },
            "final_values": {show_key(k): None if v is None else v.decode("latin-1")
                             for k, v in self.final_values.items()},
            "recovery": {
                "recovered": self.recovered,
                "final_heal_s": self.rel_s(self.final_heal_ns),
                "final_heal_to_first_write_s": self.final_recovery_s,
                "problems": self.recovery_problems,
                "leader": self.leader,
                "per_fault": [
                    {"kind": r.kind, "step": r.step, "start_s": self.rel_s(r.start_ns), "heal_s": self.rel_s(r.heal_ns),
                     "first_ok_s": r.first_ok_s, "first_write_s": r.first_write_s, "final_heal": r.final}
                    for r in self.recoveries
                ],
            },
            "longest_unavailability": None if self.gap is None else {
                "seconds": round(self.gap.seconds, 3),
                "from_s": self.rel_s(self.gap.start_ns),
                "to_s": self.rel_s(self.gap.end_ns),
                "during": self.faults_during(self.gap),
            },
            "longest_write_unavailability": None if self.write_gap is None else {
                "seconds": round(self.write_gap.seconds, 3),
                "from_s": self.rel_s(self.write_gap.start_ns),
                "to_s": self.rel_s(self.write_gap.end_ns),
                "during": self.faults_during(self.write_gap),
            },
        }

    def faults_during(self, gap: Gap) -> list[str]:
        """The faults whose window overlaps ``gap``."""
        out = []
        for w in self.windows:
            end = w.end_ns if w.end_ns is not None else gap.end_ns
            if w.start_ns <= gap.end_ns and end >= gap.start_ns and w.kind not in out:
                out.append(w.kind)
        return out


# -- running ------------------------------------------------------------------------------------------------------
def _say_nothing(_msg: str) -> None:
    pass


@contextlib.contextmanager
def _interrupt_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt for the duration (main thread only), so ``kill PID`` cleans up too.
    While the event loop runs, :func:`_drive` handles SIGTERM itself, by cancelling the run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while cleaning up (main thread only): a second Ctrl-C must not leave namespaces
    or processes behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def _default_out() -> Path:
    return Path("raftkv-chaos") / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def _validate(cfg: ChaosConfig) -> None:
    if not 1 <= cfg.nodes <= 9:
        raise ConfigError(f"--nodes must be between 1 and 9, got {cfg.nodes}")
    if cfg.duration_s <= 0:
        raise ConfigError(f"--duration must be positive, got {cfg.duration_s:g}")
    if cfg.api not in ("raftkv", "etcd"):
        raise ConfigError(f"--api must be raftkv or etcd, got {cfg.api!r}")
    if cfg.api == "etcd" and cfg.consistency not in ("linearizable", "stale"):
        raise ConfigError("through the etcd API reads are linearizable or serializable (--consistency stale)")
    if cfg.consistency not in CONSISTENCY_LEVELS:
        raise ConfigError(f"--consistency must be one of {', '.join(CONSISTENCY_LEVELS)}, got {cfg.consistency!r}")
    if cfg.clients < 1 or cfg.keys < 1:
        raise ConfigError("--clients and --keys must be at least 1")
    for what, (lo, hi) in (("--fault-s", cfg.fault_s), ("--heal-s", cfg.heal_s)):
        if not 0 < lo <= hi:
            raise ConfigError(f"{what} must be A-B seconds with 0 < A <= B, got {lo:g}-{hi:g}")


def run_chaos(cfg: ChaosConfig, *, progress: Progress | None = None) -> Verdict:
    """Run one chaos test (see the module docstring) and return its verdict, with every file written. Raises
    :class:`~raftkv.errors.RaftKVError` when the run cannot be set up, ``KeyboardInterrupt`` when interrupted (after
    cleaning up and saving the partial history and the fault log)."""
    say = progress or _say_nothing
    _validate(cfg)
    seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(1, 1 << 31)
    requested = parse_nemesis(cfg.nemesis)
    out = (cfg.out or _default_out()).absolute()
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty: choose another --out (each run writes its own directory)")
    out.mkdir(parents=True, exist_ok=True)
    wants_network = any(f in NETWORK_FAULTS for fs in requested.values() for f in fs)
    reason: str | None = None
    if cfg.namespaces is False:
        reason = "disabled for this run"
    elif wants_network:
        reason = unavailable_reason()
    use_ns = wants_network and reason is None
    if wants_network and reason is not None:
        say(f"network faults unavailable ({reason}): running process faults only")

    hosts: NetnsHosts | None = None
    nemesis: Nemesis | None = None
    log: FaultLog | None = None
    cluster_dir = out / "cluster"
    cluster_started = False
    history = History()
    workload: Workload | None = None
    phases = _Phases()
    interrupted = False
    with _interrupt_on_sigterm():
        try:
            if use_ns:
                hosts = NetnsHosts(cfg.nodes).setup()
            enabled, skipped = plan_nemesis(
                requested,
                network_unavailable=reason,
                netem_available=hosts.netem_available if hosts is not None else False,
                nodes=cfg.nodes,
            )
            for f, why in skipped.items():
                if not (wants_network and reason is not None and f in NETWORK_FAULTS):
                    say(f"nemesis {f} skipped: {why}")
            if not enabled:
                raise ConfigError(f"no fault of --nemesis {cfg.nemesis} can run here: " + "; ".join(
                    sorted(set(skipped.values()))))
            schedule = list(cfg.schedule) if cfg.schedule is not None else make_schedule(
                enabled, cfg.duration_s, seed=seed, fault_s=cfg.fault_s, heal_s=cfg.heal_s)
            network = (
                f"network namespaces (bridge {hosts.bridge}, netem {'yes' if hosts.netem_available else 'no'})"
                if hosts is not None else f"loopback ({reason or 'no network fault asked for'})"
            )
            say(f"seed {seed}; {cfg.nodes} nodes on {network}; results in {out}")
            say("faults: " + ", ".join(sorted({f for fs in enabled.values() for f in fs})))
            cluster_started = True
            info = localcluster.up(
                cluster_dir, cfg.nodes, tick_ms=cfg.tick_ms, timeout_s=60,
                hosts=hosts.ips if hosts is not None else None,
                exec_prefix=[hosts.exec_prefix(i) for i in range(1, cfg.nodes + 1)] if hosts is not None else None,
            )
            say(f"cluster up: {', '.join(info.endpoints)}")
            log = FaultLog(out / "faults.log", sink=lambda line: say("  " + line))
            nemesis = Nemesis(LocalProcesses(cluster_dir), NetnsNetwork(hosts) if hosts is not None else None, log)
            workload = Workload(
                info.endpoints,
                WorkloadConfig(cfg.clients, cfg.keys, cfg.consistency, cfg.op_timeout_s, cfg.think_s, seed),
                history,
                client_factory=EtcdKVClient if cfg.api == "etcd" else _raftkv_client,
            )
            log.t0_ns = time.monotonic_ns()
            log.record("note", "start", f"workload: {cfg.clients} clients, {cfg.keys} keys + counter, "
                       f"{cfg.consistency} reads, {cfg.duration_s:g}s; schedule of {len(schedule)} faults; "
                       f"+0s is monotonic_ns {log.t0_ns} (the clock of history.jsonl)")
            asyncio.run(_drive(cfg, info.endpoints, cluster_dir, history, workload, nemesis, schedule, log, phases,
                               say))
        except (KeyboardInterrupt, asyncio.CancelledError):
            interrupted = True
            say("interrupted: cleaning up (the faults, the cluster, the namespaces)")
            raise KeyboardInterrupt from None
        finally:
            with _no_interrupts():
                problems = _teardown(nemesis, hosts, cluster_dir if cluster_started else None, out, say)
                if log is not None:
                    log.close()
                if interrupted or workload is not None:
                    dump_history(history.ops(), out / "history.jsonl")
            phases.cleanup_problems.extend(problems)

    assert workload is not None and nemesis is not None and log is not None
    verdict = Verdict(
        config=_config_json(cfg),
        out=out,
        seed=seed,
        network=network,
        namespace_tag=hosts.tag if hosts is not None else None,
        skipped=skipped,
        t0_ns=log.t0_ns,
        duration_s=cfg.duration_s,
        ops=history.ops(),
        give_up_ns=dict(workload.give_up_ns) | phases.give_up_ns,
        windows=list(nemesis.windows),
        fault_counts=dict(nemesis.counts),
        final_values=phases.final_values,
        final_heal_ns=phases.final_heal_ns,
        recovered_ns=phases.recovered_ns,
        recovery_problems=phases.recovery_problems,
        cleanup_problems=phases.cleanup_problems,
        leader=phases.leader,
        watchers=phases.watchers,
        watch_reference=phases.watch_reference,
        watch_upto=phases.watch_upto,
        lockers=phases.lockers,
    )
    _analyse(verdict, cfg, say)
    (out / "verdict.json").write_text(json.dumps(verdict.to_json(), indent=2) + "\n")
    note = write_timeline(verdict, out / "timeline.png", op_timeout_s=cfg.op_timeout_s)
    if note:
        say(note)
    return verdict


def _raftkv_client(endpoints: Sequence[str], timeout_s: float) -> Client:
    return Client(list(endpoints), timeout_s=timeout_s)


def _config_json(cfg: ChaosConfig) -> dict[str, Any]:
    return {
        "nodes": cfg.nodes, "duration_s": cfg.duration_s, "nemesis": cfg.nemesis, "consistency": cfg.consistency,
        "clients": cfg.clients, "keys": cfg.keys, "tick_ms": cfg.tick_ms, "fault_s": list(cfg.fault_s),
        "heal_s": list(cfg.heal_s), "op_timeout_s": cfg.op_timeout_s, "think_s": cfg.think_s, "api": cfg.api,
    }


@dataclass(slots=True)
class _Phases:
    """What the live part of the run hands to the analysis."""

    final_heal_ns: int | None = None
    recovered_ns: int | None = None
    recovery_problems: list[str] = field(default_factory=list)
    cleanup_problems: list[str] = field(default_factory=list)
    final_values: dict[bytes, bytes | None] = field(default_factory=dict)
    leader: str = ""
    give_up_ns: dict[int, int] = field(default_factory=dict)
    watchers: list[WatchRecord] = field(default_factory=list)
    watch_reference: WatchRecord | None = None
    watch_upto: int = 0
    lockers: list[Contender] = field(default_factory=list)


async def _drive(
    cfg: ChaosConfig,
    endpoints: Sequence[str],
    cluster_dir: Path,
    history: History,
    workload: Workload,
    nemesis: Nemesis,
    schedule: Sequence[Step],
    log: FaultLog,
    phases: _Phases,
    say: Progress,
) -> None:
    # SIGTERM cancels the run like Ctrl-C does (asyncio.run turns SIGINT into a cancellation of this task): the
    # tasks unwind, then run_chaos's teardown undoes everything. (Not possible outside the main thread.)
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    if me is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, me.cancel)
    stop = asyncio.Event()
    probe_process = cfg.clients
    final_process = cfg.clients + 1
    # The watchers start before the workload, from the revision after the current one, each on another node.
    async with Client(list(endpoints), timeout_s=10.0) as c:
        start_revision = (await c.range(limit=1, min_index=0)).revision + 1
    phases.watchers = [WatchRecord(f"watcher {i + 1}", start_revision) for i in range(WATCHERS)]
    watched = asyncio.Event()
    target: list[int] = []
    watch_tasks = [
        asyncio.create_task(watch_into(rec, [*endpoints[i % len(endpoints):], *endpoints[: i % len(endpoints)]],
                                       watched, target))
        for i, rec in enumerate(phases.watchers)
    ]
    phases.lockers = [Contender(f"locker {i + 1}") for i in range(LOCKERS)]
    lock_tasks = []
    for i, rec in enumerate(phases.lockers):
        first = (i + 1) % len(endpoints)  # each starts on another node
        lock_tasks.append(asyncio.create_task(contend(rec, [*endpoints[first:], *endpoints[:first]], stop,
                                                      (cfg.seed or 0) * 31 + i)))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(workload.run(stop))
        schedule_task = tg.create_task(run_schedule(nemesis, schedule, stop))
        tg.create_task(_report(workload, nemesis, stop, log.t0_ns, cfg, say))
        await asyncio.sleep(cfg.duration_s)
        stop.set()
        say("workload stopped; final heal (SIGCONT, network, restarts)")
        for t in lock_tasks:  # (they stop at ``stop``; one stuck in a call under the faults is ended here)
            t.cancel()
        await asyncio.gather(*lock_tasks, return_exceptions=True)
        await schedule_task
        errors = await asyncio.to_thread(nemesis.heal, final=True)
        phases.final_heal_ns = time.monotonic_ns()
        phases.recovery_problems.extend(errors)
        phases.recovered_ns = await _probe(endpoints, history, probe_process, cfg, phases)
    if phases.recovered_ns is None:
        phases.recovery_problems.append(f"no write succeeded within {cfg.recovery_timeout_s:g}s of the final heal")
    else:
        say(f"first write after the final heal succeeded in {(phases.recovered_ns - phases.final_heal_ns) / _NS:.2f}s")
    try:
        ld = await asyncio.to_thread(localcluster.wait_for_leader, localcluster.load(cluster_dir), timeout_s=30.0)
        phases.leader = f"node {ld.id} (term {ld.term})"
    except RaftKVError as e:
        phases.recovery_problems.append(f"the nodes did not agree on a leader: {e.message}")
    keys = [*register_keys(cfg.keys), COUNTER_KEY, PROBE_KEY]
    phases.final_values = await _final_reads(endpoints, history, final_process, keys, cfg)
    missing = [show_key(k) for k in keys if k not in phases.final_values]
    if missing:
        phases.recovery_problems.append(f"final reads failed for {', '.join(missing)}")
    # The watchers catch up to the end of the history (the workload has stopped), then the reference replay.
    try:
        async with Client(list(endpoints), timeout_s=10.0) as c:
            phases.watch_upto = (await c.range(limit=1, min_index=0)).revision
        target.append(phases.watch_upto)
        watched.set()
        await asyncio.wait(watch_tasks, timeout=cfg.recovery_timeout_s)
        phases.watch_reference = await replay(endpoints, start_revision, phases.watch_upto, cfg.recovery_timeout_s)
    except RaftKVError as e:
        phases.recovery_problems.append(f"the watch check could not read the final revision: {e.message}")
    finally:
        for t in watch_tasks:
            t.cancel()
        await asyncio.gather(*watch_tasks, return_exceptions=True)


async def _report(
    workload: Workload, nemesis: Nemesis, stop: asyncio.Event, t0_ns: int, cfg: ChaosConfig, say: Progress
) -> None:
    """A progress line every ``progress_every_s`` seconds while the workload runs."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=cfg.progress_every_s)
        if stop.is_set():
            return
        c = workload.counts
        t = (time.monotonic_ns() - t0_ns) / _NS
        now = nemesis.in_effect()
        say(f"[{t:5.0f}s/{cfg.duration_s:g}s] ops: {c.ok} ok, {c.fail} failed, {c.unknown} unknown"
            + (f"; in effect: {now}" if now else "; healed"))


async def _probe(
    endpoints: Sequence[str], history: History, process: int, cfg: ChaosConfig, phases: _Phases
) -> int | None:
    """Write the probe key (unique values, recorded) until a write is acknowledged; its completion time, or None
    after ``recovery_timeout_s``."""
    deadline = time.monotonic() + cfg.recovery_timeout_s
    n = 0
    async with Client(endpoints, timeout_s=2.0) as c:
        while time.monotonic() < deadline:
            n += 1
            op = history.invoke(process, "put", PROBE_KEY, value=f"probe-{n}".encode())
            try:
                await c.put(PROBE_KEY, f"probe-{n}".encode())
            except Exception as e:
                status = classify(e, write=True)
                history.complete(op, status)
                if status == "unknown":
                    phases.give_up_ns[op] = time.monotonic_ns()
                await asyncio.sleep(0.05)
                continue
            history.complete(op, "ok")
            return time.monotonic_ns()
    return None


async def _final_reads(
    endpoints: Sequence[str], history: History, process: int, keys: Sequence[bytes], cfg: ChaosConfig
) -> dict[bytes, bytes | None]:
    """One successful linearizable read of every key (each attempt recorded), after the final heal."""
    values: dict[bytes, bytes | None] = {}
    deadline = time.monotonic() + cfg.recovery_timeout_s
    async with Client(endpoints, timeout_s=3.0) as c:
        for key in keys:
            while time.monotonic() < deadline:
                op = history.invoke(process, "get", key)
                try:
                    kv = await c.get(key, consistency="linearizable", min_index=0)
                except Exception:
                    history.complete(op, "fail")
                    await asyncio.sleep(0.1)
                    continue
                values[key] = None if kv is None else kv.value
                history.complete(op, "ok", values[key])
                break
    return values


def _teardown(
    nemesis: Nemesis | None, hosts: NetnsHosts | None, cluster_dir: Path | None, out: Path, say: Progress
) -> list[str]:
    """Undo everything, whatever happened: heal (SIGCONT first), keep the node logs, stop every node by pid and
    delete the cluster's data, remove the namespaces. Each step runs even if an earlier one failed."""
    problems: list[str] = []
    if nemesis is not None:
        try:
            problems.extend(nemesis.heal(final=True))
        except Exception as e:
            problems.append(f"final heal: {e}")
    if cluster_dir is not None and (cluster_dir / "cluster.json").exists():
        try:
            info = localcluster.load(cluster_dir)
            logs = out / "logs"
            logs.mkdir(exist_ok=True)
            for n in info.nodes:
                if n.log.exists():
                    shutil.copyfile(n.log, logs / f"node{n.id}.log")
        except (OSError, RaftKVError) as e:
            problems.append(f"copying the node logs: {e}")
        try:
            localcluster.down(cluster_dir, purge=True)
        except (OSError, RaftKVError) as e:
            problems.append(f"stopping the cluster: {e}")
            say(f"warning: could not stop the cluster in {cluster_dir}: {e}")
    if hosts is not None:
        try:
            hosts.teardown()
        except (OSError, RaftKVError) as e:
            problems.append(f"removing the namespaces: {e}")
            say(f"warning: could not remove the namespaces {hosts.tag}: {e}")
    return problems


def _analyse(v: Verdict, cfg: ChaosConfig, say: Progress) -> None:
    keys = {op.key for op in v.ops}
    say(f"checking linearizability of {len(v.ops)} ops on {len(keys)} keys (time limit {cfg.check_time_limit_s:g}s)")
    t = time.monotonic()
    v.linearizable = check(v.ops, time_limit_s=cfg.check_time_limit_s)
    v.check_s = time.monotonic() - t
    v.lost = lost_writes(v.ops, v.final_values)
    v.counter = counter_check(v.ops, v.final_values)
    end = v.recovered_ns if v.recovered_ns is not None else max(
        (op.complete_ts for op in v.ops if op.complete_ts is not None), default=v.t0_ns)
    v.gap = longest_gap(v.ops, v.t0_ns, end)
    v.write_gap = longest_gap(v.ops, v.t0_ns, end, writes_only=True)
    v.recoveries = fault_recovery(v.windows, v.ops)
    if v.watch_reference is not None:
        v.watch = check_watches(v.watchers, v.watch_reference, v.watch_upto, v.ops)
    v.lock = check_locks(v.lockers)


# -- output -------------------------------------------------------------------------------------------------------
def _fmt_s(s: float | None) -> str:
    return "-" if s is None else f"{s:.2f}s"


def _first_lines(text: str | None, n: int = 2) -> str:
    """The checker's explanation has one line per key: the first ``n``, and how many more verdict.json holds."""
    lines = (text or "").splitlines()
    more = f"\n(and {len(lines) - n} more keys: see verdict.json)" if len(lines) > n else ""
    return "\n".join(lines[:n]) + more


def print_verdict(v: Verdict, *, file: Any = None) -> None:
    """The verdict as tables (rich): the summary, then recovery per fault."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file or sys.stdout, highlight=False)
    if not console.is_terminal:  # a file or a pipe: rich would assume 80 columns
        console = Console(file=file or sys.stdout, highlight=False, width=140)
    c = v.counts()
    t = Table(title=f"raftkv chaos: {'[green]PASSED' if v.passed else '[red]FAILED'}[/] ({v.out})",
              show_header=False, title_justify="left")
    t.add_column("check", style="bold")
    t.add_column("result", overflow="fold")
    cfg = v.config
    t.add_row("run", f"{cfg['nodes']} nodes, {cfg['clients']} clients, {cfg['keys']} keys + counter, "
              f"{cfg['consistency']} reads, {cfg['duration_s']:g}s, seed {v.seed}")
    t.add_row("network", v.network)
    t.add_row("operations", f"{len(v.ops)}: [green]{c['ok']} ok[/], [red]{c['fail']} failed[/], "
              f"[yellow]{c['unknown']} unknown[/]")
    injected = ", ".join(f"{k} x{n}" for k, n in sorted(v.fault_counts.items())) or "none"
    t.add_row("faults injected", f"{sum(v.fault_counts.values())}: {injected}")
    if v.skipped:
        t.add_row("faults skipped", "; ".join(f"{k}: {why}" for k, why in sorted(v.skipped.items())))
    lin = v.linearizable
    if lin is None:
        t.add_row("linearizable", "not checked")
    elif lin.ok is True:
        t.add_row("linearizable", f"[green]yes[/] ({v.check_s:.1f}s to check)")
    elif lin.ok is False:
        t.add_row("linearizable", f"[red]NO[/]: {_first_lines(lin.explanation)}")
    else:
        t.add_row("linearizable", f"[yellow]unknown[/]: {_first_lines(lin.explanation)}")
    lost = "[green]0[/]" if not v.lost else f"[red]{len(v.lost)}[/]: " + "; ".join(
        op.describe() for op in v.lost[:3]) + ("; ..." if len(v.lost) > 3 else "")
    t.add_row("lost writes", lost)
    if v.counter is not None:
        style = "green" if v.counter.ok else "red" if v.counter.ok is False else "yellow"
        t.add_row("counter (exactly-once)", f"[{style}]{v.counter.describe()}[/] "
                  f"(acked {v.counter.acked}, unknown {v.counter.unknown}, final {v.counter.final})")
    if v.watch is None:
        t.add_row("watch", "not checked")
    else:
        style = "green" if v.watch.ok and not v.watch.stuck else "red" if v.watch.ok is False else "yellow"
        t.add_row("watch (order, once, no gap)", f"[{style}]{v.watch.describe()}[/]")
    if v.lock is not None:
        t.add_row("lock (mutual exclusion)", f"[{'green' if v.lock.ok else 'red'}]{v.lock.describe()}[/]")
    if v.gap is not None:
        during = v.faults_during(v.gap)
        t.add_row("longest unavailability",
                  f"{v.gap.seconds:.2f}s (+{v.rel_s(v.gap.start_ns):.1f}s to +{v.rel_s(v.gap.end_ns):.1f}s"
                  + (f", during {', '.join(during)}" if during else "") + ")")
    if v.write_gap is not None:
        t.add_row("longest without a write", f"{v.write_gap.seconds:.2f}s (+{v.rel_s(v.write_gap.start_ns):.1f}s "
                  f"to +{v.rel_s(v.write_gap.end_ns):.1f}s)")
    rec = f"{_fmt_s(v.final_recovery_s)} from the final heal to the first write"
    if v.recovery_problems:
        rec = "[red]" + "; ".join(v.recovery_problems) + "[/] " + rec
    if v.leader:
        rec += f"; leader {v.leader}"
    t.add_row("recovery", rec)
    per = [r.first_write_s for r in v.recoveries if r.first_write_s is not None and not r.final]
    if per:
        worst = max((r for r in v.recoveries if r.first_write_s is not None and not r.final),
                    key=lambda r: r.first_write_s or 0.0)
        t.add_row("recovery per fault", f"first write after the heal: median {statistics.median(per):.2f}s, "
                  f"max {max(per):.2f}s ({worst.kind})")
    console.print(t)
    if v.recoveries:
        r_t = Table(title="faults (seconds since the start)", title_justify="left")
        for col in ("#", "fault", "at", "healed", "first ok op", "first write", "what"):
            r_t.add_column(col, overflow="fold")
        for r in v.recoveries:
            healed = "-" if r.heal_ns is None else f"{v.rel_s(r.heal_ns):.1f}" + (" (final)" if r.final else "")
            r_t.add_row(str(r.step if r.step is not None else "-"), r.kind, f"{v.rel_s(r.start_ns):.1f}", healed,
                        _fmt_s(r.first_ok_s), _fmt_s(r.first_write_s), r.detail)
        console.print(r_t)
    if v.cleanup_problems:
        console.print("[red]cleanup problems:[/] " + "; ".join(v.cleanup_problems))
    console.print(f"files: {v.out}/verdict.json, history.jsonl, faults.log, timeline.png, logs/")


_COLOURS = {"ok": "#2ca02c", "fail": "#d62728", "unknown": "#ff7f0e"}
_FAMILY_COLOURS = {"kill": "#9467bd", "pause": "#8c564b", "partition": "#1f77b4", "isolate": "#1f77b4",
                   "bridge": "#17becf", "ring": "#bcbd22", "oneway": "#e377c2", "loss": "#7f7f7f", "netem": "#ff9896"}


def write_timeline(v: Verdict, path: Path, *, op_timeout_s: float) -> str | None:
    """``timeline.png``: every op as a bar from invocation to completion, one row per client process, coloured by
    outcome (unknown ops end where the client gave up); fault windows shaded and labelled; below, latency over
    time. Returns a note if it could not be drawn (matplotlib missing)."""
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
        collections: Any = importlib.import_module("matplotlib.collections")
    except ImportError:
        return "timeline.png not drawn: matplotlib is not installed (pip install matplotlib)"
    t0 = v.t0_ns
    fig, (ax, lat) = plt.subplots(2, 1, figsize=(16, 9), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    segs: dict[str, list[list[tuple[float, float]]]] = {"ok": [], "fail": [], "unknown": []}
    points: dict[str, tuple[list[float], list[float]]] = {"ok": ([], []), "fail": ([], []), "unknown": ([], [])}
    for op in v.ops:
        start = (op.invoke_ts - t0) / _NS
        end_ns = op.complete_ts if op.complete_ts is not None else v.give_up_ns.get(
            op.id, op.invoke_ts + int(op_timeout_s * _NS))
        end = (end_ns - t0) / _NS
        y = float(op.process)
        segs[op.status].append([(start, y), (max(end, start + 0.002), y)])
        points[op.status][0].append(end)
        points[op.status][1].append(max((end_ns - op.invoke_ts) / 1e6, 0.01))
    for status in ("ok", "fail", "unknown"):
        if segs[status]:
            ax.add_collection(collections.LineCollection(segs[status], colors=_COLOURS[status], linewidths=4,
                                                         label=f"{status} ({len(segs[status])})"))
            lat.scatter(points[status][0], points[status][1], s=3, c=_COLOURS[status], label=status)
    for w in v.windows:
        start = (w.start_ns - t0) / _NS
        end_ns = w.end_ns if w.end_ns is not None else (v.final_heal_ns or w.start_ns)
        end = (end_ns - t0) / _NS
        colour = _FAMILY_COLOURS.get(w.kind.split("-")[0], "#aaaaaa")
        for a in (ax, lat):
            a.axvspan(start, end, color=colour, alpha=0.15, lw=0)
        ax.text(start, 1.0, f" {w.kind}", transform=ax.get_xaxis_transform(), rotation=90, va="top", ha="left",
                fontsize=7, color=colour)
    if v.final_heal_ns is not None:
        for a in (ax, lat):
            a.axvline((v.final_heal_ns - t0) / _NS, color="black", lw=0.8, ls="--")
        ax.text((v.final_heal_ns - t0) / _NS, 1.0, " final heal", transform=ax.get_xaxis_transform(), rotation=90,
                va="top", ha="left", fontsize=7)
    procs = sorted({op.process for op in v.ops})
    names = {v.config["clients"]: "probe", v.config["clients"] + 1: "final reads"}
    ax.set_yticks(procs, [names.get(p, f"client {p}") for p in procs], fontsize=7)
    ax.set_ylim(-0.8, (max(procs) if procs else 0) + 3)  # headroom for the fault labels
    ax.autoscale(axis="x")
    ax.set_ylabel("process")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"raftkv chaos, seed {v.seed}: {v.config['nodes']} nodes, {v.config['consistency']} reads "
                 f"({'passed' if v.passed else 'FAILED'})")
    lat.set_yscale("log")
    lat.set_ylabel("latency (ms)")
    lat.set_xlabel("seconds since the start")
    lat.legend(loc="upper right", fontsize=8, markerscale=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
