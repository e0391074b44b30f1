"""The nemesis without a cluster: schedules from a seed, the fault log's format, and the undo paths, against
in-memory fakes of the processes and the network that record what was done to them."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import pytest

from raftkv.chaos.nemesis import (
    FAMILIES,
    NETWORK_FAULTS,
    PROCESS_FAULTS,
    FaultEvent,
    FaultLog,
    Nemesis,
    NetnsNetwork,
    Step,
    format_event,
    make_schedule,
    parse_nemesis,
    plan_nemesis,
    ring_hears,
    run_schedule,
)
from raftkv.chaos.net import NetnsHosts, unavailable_reason
from raftkv.errors import ClusterError, ConfigError

ALL_FAULTS = sorted(f for fs in FAMILIES.values() for f in fs)


class FakeProcesses:
    """Nodes 1..n as a dict of states: ``running``, ``killed``, ``paused``. ``fail_on`` makes an action raise."""

    def __init__(self, n: int = 5, leader: int | None = 1) -> None:
        self.state = {i: "running" for i in range(1, n + 1)}
        self.pids = {i: 1000 + i for i in range(1, n + 1)}
        self._leader = leader
        self.calls: list[tuple[str, int]] = []
        self.fail_on: set[tuple[str, int]] = set()

    @property
    def node_ids(self) -> Sequence[int]:
        return tuple(self.state)

    def leader(self) -> int | None:
        return self._leader

    def _act(self, what: str, node: int) -> None:
        self.calls.append((what, node))
        if (what, node) in self.fail_on:
            raise ClusterError(f"{what} {node} failed")

    def kill(self, node: int) -> str:
        self._act("kill", node)
        self.state[node] = "killed"
        return f"killed node {node}"

    def restart(self, node: int) -> str:
        self._act("restart", node)
        self.state[node] = "running"
        self.pids[node] += 100
        return f"restarted node {node}"

    def pause(self, node: int) -> int:
        self._act("pause", node)
        self.state[node] = "paused"
        return self.pids[node]

    def resume(self, node: int, pid: int) -> str:
        self._act("resume", node)
        assert pid == self.pids[node]
        self.state[node] = "running"
        return f"SIGCONT node {node}"


class FakeNetwork:
    """The NetnsHosts fault API as a set of one-way drops ``(frm, to)`` plus loss and delay per node."""

    def __init__(self, n: int = 5, netem: bool = False) -> None:
        self.n = n
        self.netem_available = netem
        self.drops: set[tuple[int, int]] = set()
        self.lossy: dict[int, float] = {}
        self.delays: dict[int, tuple[int, int]] = {}
        self.heals = 0
        self.fail_heal = False

    def heal(self) -> None:
        self.heals += 1
        if self.fail_heal:
            raise ClusterError("iptables failed")
        self.drops.clear()
        self.lossy.clear()
        self.delays.clear()

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        self.heal()
        group_of = {n: i for i, g in enumerate(groups) for n in g}
        for a in group_of:
            for b in group_of:
                if group_of[a] != group_of[b]:
                    self.drops.add((b, a))

    def isolate(self, node: int) -> None:
        self.partition([[node], [i for i in range(1, self.n + 1) if i != node]])

    def block(self, frm: int, to: int) -> None:
        self.drops.add((frm, to))

    def loss(self, node: int, fraction: float) -> None:
        assert 0 < fraction <= 1
        self.lossy[node] = fraction

    def delay(self, node: int, delay_ms: int, jitter_ms: int = 0) -> None:
        assert self.netem_available, "delay must never be called without netem"
        self.delays[node] = (delay_ms, jitter_ms)

    @property
    def whole(self) -> bool:
        return not (self.drops or self.lossy or self.delays)


def make(n: int = 5, *, netem: bool = False, network: bool = True, leader: int | None = 1, path: Path | None = None,
         ) -> tuple[Nemesis, FakeProcesses, FakeNetwork | None, FaultLog]:
    procs = FakeProcesses(n, leader)
    net = FakeNetwork(n, netem) if network else None
    log = FaultLog(path)
    return Nemesis(procs, net, log), procs, net, log


# -- choosing faults -------------------------------------------------------------------------------------------
def test_parse_nemesis_takes_families_single_faults_and_all() -> None:
    assert parse_nemesis("all") == FAMILIES
    assert parse_nemesis("kill,partition") == {"kill": FAMILIES["kill"], "partition": FAMILIES["partition"]}
    assert parse_nemesis(" isolate-follower , pause ") == {"isolate-follower": ("isolate-follower",),
                                                             "pause": ("pause-leader",)}
    with pytest.raises(ConfigError, match="unknown nemesis 'partitoin'"):
        parse_nemesis("partitoin")
    with pytest.raises(ConfigError, match="empty"):
        parse_nemesis(" , ")


def test_every_fault_is_either_a_process_or_a_network_fault() -> None:
    assert set(ALL_FAULTS) == PROCESS_FAULTS | NETWORK_FAULTS
    assert not PROCESS_FAULTS & NETWORK_FAULTS


def test_without_namespaces_only_process_faults_are_planned_and_the_rest_say_why() -> None:
    enabled, skipped = plan_nemesis(parse_nemesis("all"), network_unavailable="network namespaces need root",
                                    netem_available=False, nodes=5)
    assert {f for fs in enabled.values() for f in fs} == PROCESS_FAULTS
    assert set(skipped) == NETWORK_FAULTS
    assert all("need root" in why for why in skipped.values())


def test_netem_is_skipped_not_faked_where_the_kernel_lacks_it() -> None:
    enabled, skipped = plan_nemesis(parse_nemesis("netem,loss"), network_unavailable=None, netem_available=False,
                                    nodes=3)
    assert enabled == {"loss": ("loss",)}
    assert "sch_netem" in skipped["netem"]
    enabled, skipped = plan_nemesis(parse_nemesis("netem"), network_unavailable=None, netem_available=True, nodes=3)
    assert enabled == {"netem": ("netem",)} and not skipped


# -- schedules -------------------------------------------------------------------------------------------------
def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    fams = parse_nemesis("all")
    a = make_schedule(fams, 600, seed=7)
    assert a == make_schedule(fams, 600, seed=7)
    assert a != make_schedule(fams, 600, seed=8)


def test_a_schedule_covers_the_duration_with_periods_in_their_ranges() -> None:
    steps = make_schedule(parse_nemesis("all"), 300, seed=1, fault_s=(2, 4), heal_s=(5, 6))
    assert [s.index for s in steps] == list(range(len(steps)))
    assert all(2 <= s.fault_s <= 4 and 5 <= s.heal_s <= 6 for s in steps)
    total = sum(s.heal_s + s.fault_s for s in steps)
    assert total >= 300 and total - steps[-1].heal_s - steps[-1].fault_s < 300  # no step starts after the end
    assert len({s.seed for s in steps}) == len(steps)


def test_every_family_comes_once_per_round() -> None:
    fams = parse_nemesis("all")
    steps = make_schedule(fams, 10_000, seed=3, fault_s=(1, 1), heal_s=(1, 1))
    family_of = {f: fam for fam, fs in fams.items() for f in fs}
    rounds = [steps[i : i + len(fams)] for i in range(0, len(steps) - len(fams) + 1, len(fams))]
    for r in rounds:
        assert sorted(family_of[s.kind] for s in r) == sorted(fams)
    assert {s.kind for s in steps} == set(ALL_FAULTS)  # every fault within the families turns up too


def test_bad_period_ranges_are_refused() -> None:
    with pytest.raises(ConfigError, match="0 < A <= B"):
        make_schedule(parse_nemesis("kill"), 60, seed=1, fault_s=(10, 5))
    with pytest.raises(ConfigError):
        make_schedule(parse_nemesis("kill"), 60, seed=1, heal_s=(0, 5))


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7, 9])
def test_a_ring_gives_every_node_its_own_majority(n: int) -> None:
    order = list(range(1, n + 1))
    hears = ring_hears(order)
    majorities = {frozenset(h | {node}) for node, h in hears.items()}
    assert all(len(h) + 1 == n // 2 + 1 for h in hears.values())
    assert len(majorities) == n


# -- the log ---------------------------------------------------------------------------------------------------
LINE = re.compile(
    r"^\+\s*(?P<rel>\d+\.\d{3})s  (?P<wall>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)  (?P<event>\w+)\s+"
    r"(?P<kind>[\w-]+)\s+(?P<step>#\d+|-)  (?P<detail>.*)$"
)


def test_fault_log_lines_have_relative_monotonic_time_wall_time_event_fault_step_and_detail(tmp_path: Path) -> None:
    clock = iter([5_000_000_000, 7_250_000_000, 9_000_000_000])
    lines: list[str] = []
    log = FaultLog(tmp_path / "faults.log", t0_ns=4_000_000_000, clock_ns=lambda: next(clock),
                   wall=lambda: "2025-01-02T03:04:05.678Z", sink=lines.append)
    log.record("fault", "kill-leader", "killed node 2 (pid 42)", 0)
    assert (tmp_path / "faults.log").read_text().count("\n") == 1  # written (and flushed) at once
    log.record("heal", "kill-leader", "restarted node 2", 0)
    log.record("note", "start", "hello")
    log.close()
    text = (tmp_path / "faults.log").read_text().splitlines()
    assert text == lines
    m = [LINE.match(line) for line in text]
    assert all(m), text
    assert [x["rel"] for x in m if x] == ["1.000", "3.250", "5.000"]
    assert [x["event"] for x in m if x] == ["fault", "heal", "note"]
    assert [x["step"] for x in m if x] == ["#0", "#0", "-"]
    assert m[0] is not None and m[0]["detail"] == "killed node 2 (pid 42)"
    assert m[0]["wall"] == "2025-01-02T03:04:05.678Z"
    assert log.events[0] == FaultEvent(5_000_000_000, "2025-01-02T03:04:05.678Z", "fault", "kill-leader",
                                       "killed node 2 (pid 42)", 0)


def test_format_event_is_stable() -> None:
    ev = FaultEvent(12_345_000_000, "2025-01-01T00:00:00.000Z", "fault", "isolate-leader", "isolate node 3", 4)
    assert format_event(ev, 0) == (
        "+   12.345s  2025-01-01T00:00:00.000Z  fault  isolate-leader        #4  isolate node 3"
    )


# -- injecting and undoing -------------------------------------------------------------------------------------
def step(kind: str, seed: int = 1) -> Step:
    return Step(0, kind, 0.0, 0.0, seed)


@pytest.mark.parametrize("kind", ALL_FAULTS)
def test_every_fault_is_undone_by_heal(kind: str) -> None:
    nem, procs, net, _ = make(5, netem=True)
    assert net is not None
    assert nem.inject(step(kind))
    assert procs.state != {i: "running" for i in range(1, 6)} or not net.whole, f"{kind} did nothing"
    assert nem.heal() == []
    assert procs.state == {i: "running" for i in range(1, 6)}
    assert net.whole
    assert nem.active is None and nem.windows[0].end_ns is not None
    assert nem.counts == {kind: 1}


def test_the_faults_do_what_they_say() -> None:
    nem, procs, net, _ = make(5, leader=2)
    assert net is not None
    nem.inject(step("kill-leader"))
    assert procs.state[2] == "killed" and sum(s == "killed" for s in procs.state.values()) == 1
    nem.heal()
    nem.inject(step("kill-minority"))
    assert sum(s == "killed" for s in procs.state.values()) == 2
    nem.heal()
    nem.inject(step("kill-all"))
    assert set(procs.state.values()) == {"killed"}
    nem.heal()
    nem.inject(step("pause-leader"))
    assert procs.state[2] == "paused"
    nem.heal()
    nem.inject(step("isolate-leader"))
    assert net.drops == {(o, 2) for o in (1, 3, 4, 5)} | {(2, o) for o in (1, 3, 4, 5)}
    nem.heal()
    nem.inject(step("isolate-follower"))
    (alone,) = set.intersection(*(set(d) for d in net.drops))  # the one node in every dropped link
    assert alone != 2 and len(net.drops) == 8
    nem.heal()
    nem.inject(step("oneway-leader-deaf"))
    assert net.drops == {(o, 2) for o in (1, 3, 4, 5)}
    nem.heal()
    nem.inject(step("oneway-leader-mute"))
    assert net.drops == {(2, o) for o in (1, 3, 4, 5)}
    nem.heal()
    nem.inject(step("bridge"))
    cut = {frozenset(d) for d in net.drops}
    touched = {n for d in cut for n in d}
    assert len(touched) == 4 and len(cut) == 4  # two pairs of two cannot talk; the fifth node talks to everyone
    nem.heal()
    nem.inject(step("partition-halves"))
    losers = {to for _, to in net.drops}
    assert len(net.drops) == 2 * 2 * 3 and len(losers) == 5
    nem.heal()


def test_leader_faults_are_skipped_and_logged_when_no_leader_is_known() -> None:
    nem, procs, net, log = make(3, leader=None)
    assert nem.inject(step("kill-leader")) is False
    assert nem.inject(step("isolate-leader")) is False
    assert procs.calls == [] and net is not None and net.whole
    assert [(e.event, e.kind) for e in log.events] == [("skip", "kill-leader"), ("skip", "isolate-leader")]
    assert "no leader" in log.events[0].detail
    assert nem.counts == {} and nem.windows == []


def test_netem_without_the_kernel_module_is_a_skip_not_a_fake_delay() -> None:
    nem, _, net, log = make(3, netem=False)
    assert nem.inject(step("netem")) is False
    assert net is not None and net.delays == {}
    assert log.events[-1].event == "skip" and "sch_netem" in log.events[-1].detail


def test_network_faults_without_a_network_are_skipped() -> None:
    nem, procs, _, log = make(3, network=False)
    assert nem.inject(step("partition-halves")) is False
    assert log.events[-1].event == "skip"
    assert nem.inject(step("kill-random"))
    assert nem.heal() == []
    assert set(procs.state.values()) == {"running"}


def test_a_half_done_injection_is_still_undone() -> None:
    nem, procs, _, log = make(5)
    procs.fail_on.add(("kill", 3))
    with pytest.raises(ClusterError):
        nem.inject(step("kill-all"))
    assert procs.state[1] == procs.state[2] == "killed"
    assert nem.heal() == []
    assert set(procs.state.values()) == {"running"}
    assert ("restart", 3) in procs.calls  # the node whose kill failed is restarted too: it may have died
    assert [e.event for e in log.events] == ["error", "heal"]


def test_heal_goes_on_after_a_failed_step_and_a_later_heal_finishes_the_job() -> None:
    nem, procs, net, log = make(5, leader=4)
    assert net is not None
    nem.inject(step("pause-leader"))
    net.block(1, 2)  # pretend a network rule is in effect as well
    nem._state.network_dirty = True
    procs.fail_on.add(("resume", 4))
    net.fail_heal = True
    errors = nem.heal()
    assert len(errors) == 2 and "SIGCONT node 4" in errors[0] and "network" in errors[1]
    assert nem.active is not None  # not healed yet
    assert sum(e.event == "error" for e in log.events) == 2
    procs.fail_on.clear()
    net.fail_heal = False
    assert nem.heal(final=True) == []
    assert procs.state[4] == "running" and net.whole
    assert nem.active is None and nem.windows[0].final
    assert nem.heal() == []  # nothing left: a no-op, and nothing logged
    assert log.events[-1].event == "heal"


def test_a_restart_that_misses_its_deadline_once_is_retried() -> None:
    nem, procs, _, _ = make(3)
    nem.inject(step("kill-random", seed=5))
    (killed,) = [n for n, s in procs.state.items() if s == "killed"]
    calls = 0
    real = procs.restart

    def flaky(node: int) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ClusterError("did not answer within 30s")
        return real(node)

    procs.restart = flaky  # type: ignore[method-assign]
    assert nem.heal() == []
    assert calls == 2 and procs.state[killed] == "running"


def test_injecting_while_a_fault_is_in_effect_heals_it_first() -> None:
    nem, procs, net, _ = make(5)
    assert net is not None
    nem.inject(step("kill-all"))
    nem.inject(step("isolate-leader"))
    assert set(procs.state.values()) == {"running"}
    assert net.drops
    assert [w.end_ns is not None for w in nem.windows] == [True, False]


def test_a_stopped_schedule_leaves_its_fault_for_the_final_heal() -> None:
    """The run ends (or is interrupted) in the middle of a fault: the schedule returns with the fault in effect,
    and the final heal -- the one the runner calls on every exit path -- undoes it."""
    nem, procs, net, log = make(3, leader=2)
    assert net is not None
    steps = [Step(0, "pause-leader", 0.01, 0.02, 1), Step(1, "isolate-leader", 0.01, 60.0, 2)]

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_schedule(nem, steps, stop))
        while not net.drops:
            await asyncio.sleep(0.005)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(go())
    assert not net.whole and nem.active is not None and nem.active.kind == "isolate-leader"
    assert nem.heal(final=True) == []
    assert net.whole and set(procs.state.values()) == {"running"}
    assert [(w.kind, w.final) for w in nem.windows] == [("pause-leader", False), ("isolate-leader", True)]
    assert [e.event for e in log.events] == ["fault", "heal", "fault", "heal"]
    starts = [w.start_ns for w in nem.windows]
    assert all(a < b for a, b in pairwise(starts))


def test_a_cancelled_schedule_is_undone_too() -> None:
    """Ctrl-C cancels the task that plays the schedule, possibly while an injection runs in a worker thread; the
    final heal takes the nemesis's lock, so it waits for that injection and then undoes it."""
    nem, procs, _, _ = make(3)
    steps = [Step(0, "kill-all", 0.0, 60.0, 1)]

    async def go() -> None:
        task = asyncio.create_task(run_schedule(nem, steps, asyncio.Event()))
        while nem.active is None:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert set(procs.state.values()) == {"killed"}
    assert nem.heal(final=True) == []
    assert set(procs.state.values()) == {"running"}


@pytest.mark.slow
def test_every_network_fault_makes_real_rules_and_heal_removes_them() -> None:
    """The iptables commands themselves, in real namespaces (no cluster: the processes are fakes)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"network namespaces unavailable: {reason}")
    hosts = NetnsHosts(3).setup()
    try:
        nem = Nemesis(FakeProcesses(3, leader=2), NetnsNetwork(hosts), FaultLog())
        for kind in sorted(NETWORK_FAULTS - {"netem"}):
            assert nem.inject(step(kind)), kind
            rules = hosts.rules()
            assert any(rules.values()), kind
            if kind == "loss":
                assert all(len(r) == 2 and all("statistic" in x for x in r) for r in rules.values()), rules
            assert nem.heal() == []
            assert not any(hosts.rules().values()), kind
        assert nem.inject(step("netem")) is hosts.netem_available
        nem.heal()
    finally:
        hosts.teardown()
