"""Generated schedules against the daemon's own logic (``raftkv.replica.Replica``, see ``replicas.py``), and proof
that their client-level checks can fail: each mutation plants a bug of the kind the checks exist for and expects a
``Violation`` within a few dozen seeds.

``RAFTKV_REPLICA_SCHEDULES`` sets how many seeded schedules run (default 630: 45 for each of ``REPLICA_CONFIGS``,
the lease configurations among them); ``python -m tests.sim.soak --replicas`` runs many more.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest

from raftkv.errors import APPLIED_NO, Unavailable
from raftkv.kv import sessions
from raftkv.lessor import Lessor
from raftkv.raft import ProposalDropped, RawNode, StateRole
from raftkv.replica import Replica

from .cluster import Violation
from .replicas import REPLICA_CONFIGS, ReplicaCluster, run_replica_schedule

SCHEDULES = int(os.environ.get("RAFTKV_REPLICA_SCHEDULES", "630"))
CHUNK = 50
_names = sorted(REPLICA_CONFIGS)
_jobs = [(_names[i % len(_names)], i) for i in range(SCHEDULES)]
_chunks = [_jobs[i : i + CHUNK] for i in range(0, len(_jobs), CHUNK)]


@pytest.mark.parametrize("chunk", _chunks, ids=[f"seeds{c[0][1]}-{c[-1][1]}" for c in _chunks])
def test_generated_schedules_against_replicas(chunk: list[tuple[str, int]]) -> None:
    for name, seed in chunk:
        try:
            run_replica_schedule(seed, REPLICA_CONFIGS[name])
        except AssertionError as e:
            raise AssertionError(f"replica config={name} seed={seed}\n{e}") from None


def test_replica_schedules_exercise_what_they_check() -> None:
    """Guard against a simulator that silently stops doing anything: across a few schedules, every kind of answer
    and read the checks look at must occur."""
    totals: dict[str, int] = {}
    for name in ("3", "3-members", "3-pauses"):
        for seed in range(8):
            c = run_replica_schedule(seed, REPLICA_CONFIGS[name])
            st = c.rstats
            assert st.reads is not None
            for k, v in [*vars(st).items(), *((f"read_{k}", v) for k, v in st.reads.items())]:
                if isinstance(v, int):
                    totals[k] = totals.get(k, 0) + v
            totals["elections"] = totals.get("elections", 0) + c.stats.elections
            totals["crashes"] = totals.get("crashes", 0) + c.stats.crashes
    for k in ("puts_acked", "incrs_acked", "conf_acked", "failed_not_applied", "failed_unknown", "read_index",
              "read_lease", "read_bounded", "read_stale", "bounded_fallbacks", "forwarded", "elections", "crashes"):
        assert totals.get(k, 0) > 0, (k, totals)
    assert totals["batches"] < totals["commands"], totals  # many commands share a log entry


def test_lease_schedules_exercise_what_they_check() -> None:
    """The same guard for the lease clients: grants, renewals (at once and after a read-index round), refusals,
    expiries (after a failover too) proposed and applied, client revokes, leased puts and the keys revokes delete, and
    leases that expired after healing."""
    totals: dict[str, int] = {}
    for name in ("3-leases", "3-leases-deposed"):
        for seed in range(6):
            c = run_replica_schedule(seed, REPLICA_CONFIGS[name])
            for k, v in vars(c.rstats).items():
                if k.startswith("lease") and isinstance(v, int):
                    totals[k] = totals.get(k, 0) + v
    for k in ("leases_granted", "lease_renewals", "lease_renewals_confirmed", "lease_renewals_refused",
              "lease_expiries", "lease_expiries_after_failover", "lease_expiries_applied", "lease_client_revokes",
              "lease_puts", "lease_keys_deleted", "lease_liveness_checked"):
        assert totals.get(k, 0) > 0, (k, totals)


def test_a_removed_id_is_never_added_again() -> None:
    """Operators who wipe a removed member and add it again under its old id are refused, and the schedules that
    try it keep every property (with the refusal gone, they do not: the mutation below)."""
    refused = 0
    for seed in range(60):
        refused += run_replica_schedule(seed, REPLICA_CONFIGS["3-members"], readd_wiped=True).rstats.readds_refused
    assert refused > 0


# -- mutations ---------------------------------------------------------------------------------------------------
@contextmanager
def planted(target: Any, name: str, replacement: Callable[..., Any]) -> Iterator[None]:
    with mock.patch.object(target, name, replacement):
        yield


def _finds(configs: tuple[str, ...], seeds: int, expect: str) -> str:
    for name in configs:
        for seed in range(seeds):
            try:
                run_replica_schedule(seed, REPLICA_CONFIGS[name])
            except Violation as e:
                first = str(e).splitlines()[0]
                assert expect in first, f"{name}/{seed}: {first}"
                return first
    raise AssertionError(f"no schedule found the planted bug (expected {expect!r})")


def _heartbeat_read_points(self: Replica, max_staleness_ms: int, now: float) -> bool:
    # BUG: a follower trusts the heartbeats it received (their arrival time), as raftkv once did: a paused follower
    # takes an old heartbeat for news.
    point = self.raw.read_freshness()
    if point is None:
        return False
    at = self._t0 + point[0] * self._tick_s
    return (now - at) * 1000.0 < max_staleness_ms and self.applied >= point[1]


def test_mutation_followers_trusting_heartbeats_for_bounded_reads() -> None:
    with planted(Replica, "bounded_read_ok", _heartbeat_read_points):
        _finds(("3-pauses", "3", "5-lossy"), 60, "Bounded staleness")


_orig_bounded = Replica.bounded_read_ok


def _bounded_ignoring_apply(self: Replica, max_staleness_ms: int, now: float) -> bool:
    applied = self.applied
    self.applied = 1 << 62  # BUG: the point's index need not be applied here
    try:
        return _orig_bounded(self, max_staleness_ms, now)
    finally:
        self.applied = applied


def test_mutation_bounded_reads_without_applying_the_read_point() -> None:
    with planted(Replica, "bounded_read_ok", _bounded_ignoring_apply):
        _finds(("3", "3-pauses", "5"), 60, "Bounded staleness")


def _lease_without_lease(self: Replica, now: float | None = None) -> int | None:
    raw = self.raw
    return raw.committed if raw.role == StateRole.LEADER else None  # BUG: no lease: a deposed leader still serves


def test_mutation_lease_reads_without_a_lease() -> None:
    with planted(Replica, "lease_read_index", _lease_without_lease):
        _finds(("5-leader-faults", "3-crashy", "3"), 60, "Linearizability")


_orig_read_index = RawNode.read_index


def _read_index_from_local_commit(self: RawNode, ctx: bytes) -> None:
    # BUG: a read point from this node's own commit index, no leader round: a follower (or deposed leader) behind
    # the cluster serves old state as linearizable.
    from raftkv.raft import ReadState

    self.raft.read_states.append(ReadState(self.committed, ctx))


def test_mutation_linearizable_reads_without_a_round() -> None:
    with planted(RawNode, "read_index", _read_index_from_local_commit):
        _finds(("5-leader-faults", "3", "5-lossy"), 60, "Linearizability")


_orig_on_soft_state = Replica._on_soft_state


def _forwarded_lost_as_not_applied(self: Replica, lead: int, role: StateRole) -> None:
    # BUG: a request forwarded to a leader that changed is said certainly not applied; it may still commit.
    for rid in list(self._forwarded_rids):
        del self._forwarded_rids[rid]
        self._fail(rid, Unavailable("leader changed", applied=APPLIED_NO))
    _orig_on_soft_state(self, lead, role)


def test_mutation_forwarded_writes_reported_not_applied() -> None:
    with planted(Replica, "_on_soft_state", _forwarded_lost_as_not_applied):
        _finds(("5-leader-faults", "5-lossy", "3-crashy"), 60, "answered 'not applied'")


def _admit_every_time(self: Any, client_id: int, seq: int, now_ns: int) -> Any:
    return None, None  # BUG: no session table: a retried write applies again


def test_mutation_retries_applied_twice() -> None:
    with planted(sessions.SessionTable, "admit", _admit_every_time), \
            planted(sessions.SessionTable, "record", lambda *a: None):
        _finds(("5-leader-faults", "5-lossy", "3-crashy"), 60, "Exactly once")


def _answer_the_wrong_request(self: Replica, results: Any) -> None:
    for a in results:
        if a.proposer == self.id and a.request_id in self._waiting:
            other = next((r for r in self._waiting if r != a.request_id), a.request_id)  # BUG: answers mixed up
            self._waiting.discard(other)
            self._io.respond(other, a)


def test_mutation_results_given_to_the_wrong_request() -> None:
    with planted(Replica, "on_results", _answer_the_wrong_request):
        _finds(("3", "5"), 30, "answered request")


_orig_init = Replica.__init__


def _init_with_configured_peers(self: Replica, *args: Any, **kwargs: Any) -> None:
    table = args[2]
    members = table.members
    table.members = lambda: []  # BUG: a restarted node talks to its configured peers, not the member table's
    try:
        _orig_init(self, *args, **kwargs)
    finally:
        table.members = members


def _restart_with_a_member_added_at_run_time() -> tuple[set[int], set[int]]:
    """Run membership schedules until some node holds a member table naming a node its configuration does not;
    restart it there, and return (the members its table names, the peers its transport was given at start)."""
    for seed in range(50):
        c = ReplicaCluster(seed, REPLICA_CONFIGS["5-members"])
        for _ in range(400):
            c.run_ticks(1)
            for n in c.nodes.values():
                configured = {m.id for m in c.settings_for(n.id).members}
                named = {m.id for m in n.fsm.members()} - set(n.fsm.removed_members())
                if n.up and named - configured - {n.id}:
                    c.crash(n.id)
                    c._start(n)
                    assert n.replica is not None
                    return named - {n.id}, set(n.peers)
    raise AssertionError("no schedule added a member at run time")


def test_restarted_nodes_talk_to_members_added_at_run_time() -> None:
    named, peers = _restart_with_a_member_added_at_run_time()
    assert named <= peers, (named, peers)


def test_mutation_restarted_nodes_forget_members_added_at_run_time() -> None:
    with planted(Replica, "__init__", _init_with_configured_peers):
        named, peers = _restart_with_a_member_added_at_run_time()
    assert not named <= peers, (named, peers)


def _conf_changes_reusing_removed_ids(self: Replica) -> None:
    # BUG: the leader proposes every change but the two-voter shrink it was asked for, removed ids added again too.
    raw = self.raw
    confs, self._conf_proposals = self._conf_proposals, []
    for data, rid, _force in confs:
        try:
            raw.propose_conf_change(data)
        except ProposalDropped:
            self._fail(rid, Unavailable("membership change refused; retry"))


def test_mutation_removed_ids_added_again() -> None:
    with planted(Replica, "_propose_conf_changes", _conf_changes_reusing_removed_ids):
        for seed in range(200):
            try:
                run_replica_schedule(seed, REPLICA_CONFIGS["3-members"], readd_wiped=True)
            except Violation:
                return
    raise AssertionError("no schedule found the planted bug")


# -- lease mutations (see replicas.py, "Leases") ------------------------------------------------------------------
def _prime_with_no_time_left(self: Lessor, now: float, leases: Any) -> None:
    self.demote()
    self.primed = True
    for lid, ttl, stamp in leases:
        self._set(lid, ttl, stamp, now)  # BUG: no fresh TTL after a failover (now, not now + ttl)


def test_mutation_new_leader_gives_leases_no_fresh_ttl() -> None:
    with planted(Lessor, "prime", _prime_with_no_time_left):
        _finds(("3-leases", "5-leases-faults"), 30, "Lease safety")


_orig_keep_alive = Replica.keep_alive


def _keep_alive_unconfirmed(self: Replica, now: float, lease_ids: Any, *, confirmed: bool = False) -> Any:
    return _orig_keep_alive(self, now, lease_ids, confirmed=True)  # BUG: no leader lease, no read-index round


def test_mutation_keep_alives_answered_without_confirming_the_leadership() -> None:
    with planted(Replica, "keep_alive", _keep_alive_unconfirmed):
        _finds(("3-leases-deposed",), 100, "Lease safety")


_orig_lease_read_index = Replica.lease_read_index


def _lease_on_stepped_ticks(self: Replica, now: float | None = None) -> int | None:
    return _orig_lease_read_index(self)  # BUG: the lease as of the last step, not at now (raftkv did so once)


def test_mutation_keep_alives_trust_the_lease_of_the_last_step() -> None:
    """A leader resumed from a pause (or whose loop waited on a slow write) gets a keep-alive before its next step:
    its core's tick count is old, and its lease looks alive although a successor may already time the leases."""
    with planted(Replica, "lease_read_index", _lease_on_stepped_ticks):
        _finds(("3-leases-deposed",), 100, "Lease safety")


def test_mutation_deposed_leaders_pass_on_their_expiries() -> None:
    """An expiry decided while the pipeline was full stays queued; once its leader is deposed, proposing it would
    forward it to the successor, which may have renewed the lease meanwhile (raftkv did so once)."""
    with planted(Replica, "_drop_stale_expiries", lambda self: None):
        _finds(("3-leases-deposed",), 100, "Lease safety")


_orig_soft_state = Replica._on_soft_state


def _prime_on_election(self: Replica, lead: int, role: StateRole) -> None:
    _orig_soft_state(self, lead, role)
    if role == StateRole.LEADER and not self.lessor.primed:
        # BUG: timing starts when leadership is won, before an entry of the term is applied: the lease table may
        # still hold a lease whose revoke the predecessor committed.
        self.lessor.prime(self._now, self._table.leases())
        self._lessor_term = self.term


def test_mutation_new_leader_times_leases_before_applying_its_term() -> None:
    with planted(Replica, "_on_soft_state", _prime_on_election):
        _finds(("3-leases-failover",), 100, "Lease safety")


# Not planted: ``Replica._check_lessor_term`` doing nothing. No schedule can make it matter: to lead a later term a
# leader must step down and campaign, and (with two voters or more) its vote requests leave only once the write of a
# Ready with its candidate state is done, so after (writes finish in order) that of the Ready that first showed it
# not leading, whose ``_on_soft_state`` demotes the lessor. The check is a second line of defence.


def test_a_replica_cluster_replays_from_its_seed() -> None:
    a = ReplicaCluster(7, REPLICA_CONFIGS["3-members"])
    b = ReplicaCluster(7, REPLICA_CONFIGS["3-members"])
    a.run_ticks(80)
    b.run_ticks(80)
    assert list(a.trace) == list(b.trace)
    assert a.applied_global == b.applied_global and a.rstats == b.rstats
