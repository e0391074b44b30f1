"""Named simulator configurations. CI spreads its generated schedules over all of them; a failure message names
the configuration and seed, and ``python -m tests.sim.soak --config NAME --seed N`` replays it exactly."""

from __future__ import annotations

from .cluster import SimConfig

_HUNTER = dict(
    # Election-heavy and leader-targeted: one entry per append, a window of one, leaders crashed and isolated
    # often, no pre-vote or check-quorum to damp elections. This is the mix that reproduces Figure 8 by chance.
    max_size_per_msg=1,
    max_inflight=1,
    p_crash=0.01,
    p_restart=0.08,
    p_partition=0.01,
    p_heal=0.03,
    disk_delay=0.6,
    p_crash_leader=0.01,
    p_isolate_leader=0.01,
    p_propose=0.3,
    pre_vote=False,
    check_quorum=False,
    lease_reads=False,
)

CONFIGS: dict[str, SimConfig] = {
    "3": SimConfig(nodes=3),
    "5": SimConfig(nodes=5),
    "7": SimConfig(nodes=7, drop=0.05),
    "3-sequential": SimConfig(nodes=3, step_while_writing=False),
    "5-lossy": SimConfig(nodes=5, drop=0.2, dup=0.1, max_delay=10, max_size_per_msg=60, max_inflight=2),
    "3-classic": SimConfig(nodes=3, pre_vote=False, check_quorum=False, lease_reads=False),
    "5-crashy": SimConfig(nodes=5, p_crash=0.03, p_restart=0.1, disk_delay=0.8, p_crash_leader=0.005),
    "3-crashy": SimConfig(nodes=3, p_crash=0.03, p_restart=0.1, disk_delay=0.8, p_crash_leader=0.005),
    # Half the crashes are power losses, which also undo the writes made without a final fsync since the last synced
    # one (applied entries, commit index, membership): they must come back from the durable log.
    "3-power": SimConfig(nodes=3, p_crash=0.03, p_restart=0.1, disk_delay=0.8, p_crash_leader=0.01, power_loss=0.5),
    "3-members-power": SimConfig(nodes=3, universe=5, p_conf_change=0.03, p_snapshot=0.02, p_crash=0.02,
                                 p_restart=0.1, p_crash_leader=0.01, power_loss=0.5),
    "3-members": SimConfig(nodes=3, universe=5, p_conf_change=0.01, p_snapshot=0.01),
    "5-members-snap": SimConfig(nodes=5, universe=7, p_conf_change=0.03, p_snapshot=0.02, snapshot_keep=1, drop=0.05,
                                p_crash_leader=0.005),
    "3-members-crashy": SimConfig(nodes=3, universe=4, p_conf_change=0.03, p_snapshot=0.03, snapshot_keep=0,
                                  p_crash_leader=0.005),
    "3-snap-sequential": SimConfig(nodes=3, universe=5, p_conf_change=0.01, p_snapshot=0.03, snapshot_keep=0,
                                   step_while_writing=False),
    # Pipelined Readys (as the daemon runs): up to 3 writes under way per node, completing in order, lost together.
    "3-pipelined-power": SimConfig(nodes=3, pipeline=3, p_crash=0.03, p_restart=0.1, disk_delay=0.8,
                                   p_crash_leader=0.01, power_loss=0.5),
    "3-members-pipelined": SimConfig(nodes=3, universe=5, pipeline=3, p_conf_change=0.03, p_snapshot=0.03,
                                     snapshot_keep=0, p_crash=0.02, p_restart=0.1, p_crash_leader=0.01,
                                     power_loss=0.3),
    "5-hunter-pipelined": SimConfig(nodes=5, pipeline=2, **_HUNTER),  # type: ignore[arg-type]
    "5-hunter": SimConfig(nodes=5, **_HUNTER),  # type: ignore[arg-type]
    "3-hunter": SimConfig(nodes=3, **_HUNTER),  # type: ignore[arg-type]
}

TICKS = {"5-hunter": 400, "3-hunter": 400, "5-hunter-pipelined": 400}
"""Schedule length in ticks where it differs from the default (150)."""
