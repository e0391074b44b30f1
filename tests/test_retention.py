"""Automatic compaction's policy (``raftkv.retention``) on a clock passed in, and the leader's driver
(``raftkv.server.history_retention``) on in-process nodes: every replica compacts at the same revision."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from raftkv.errors import ConfigError
from raftkv.kv import Put
from raftkv.retention import Retention, parse_retention
from raftkv.server import history_retention

from .node.test_node import Cluster, propose_applied, until, with_cluster


def test_parse_retention() -> None:
    assert parse_retention("100000") == (100_000, 0.0)
    assert parse_retention("0") == (0, 0.0)
    assert parse_retention("90s") == (0, 90.0) and parse_retention("30m") == (0, 1800.0)
    assert parse_retention(" 1h ") == (0, 3600.0) and parse_retention("1.5d") == (0, 129_600.0)
    for bad in ("", "1w", "-5", "h", "10 m", "0s"):
        with pytest.raises(ConfigError, match="history_retention"):
            parse_retention(bad)


def test_a_revision_retention_keeps_that_many_and_compacts_in_steps() -> None:
    p = Retention(revisions=100, min_step=10)
    assert p.due(0.0, 100, 0) is None  # nothing older than the newest 100
    assert p.due(0.0, 109, 0) is None  # 9 to gain: less than a step
    assert p.due(0.0, 110, 0) == 10
    assert p.due(0.0, 115, 10) is None and p.due(0.0, 120, 10) == 20


def test_a_duration_retention_compacts_what_is_older_and_a_new_leader_keeps_more() -> None:
    p = Retention(seconds=60, min_step=1, sample_every_s=1)
    for t in range(0, 200):
        p.observe(float(t), 10 * t)  # ten revisions a second
        target = p.due(float(t), 10 * t, 0)
        if t <= 60:
            assert target is None, t  # nothing written is 60 s old yet (at 60 s: revision 0, nothing to drop)
        else:
            assert target is not None and 10 * (t - 61) <= target <= 10 * (t - 60), (t, target)
    p.reset()  # leadership lost and regained: its samples say nothing about the history's age
    assert p.due(200.0, 2000, 0) is None
    p.observe(200.0, 2000)
    assert p.due(259.0, 2590, 0) is None and p.due(260.0, 2600, 0) == 2000


def test_off_never_compacts() -> None:
    p = Retention()
    p.observe(0.0, 5)
    assert not p.enabled and p.due(10**6, 10**9, 0) is None


async def _leader_compacts_everywhere(cluster: Cluster) -> None:
    lead = await cluster.leader()
    drivers = [asyncio.create_task(history_retention(n, n.settings, every_s=0.01)) for n in cluster.nodes.values()]
    try:
        for i in range(120):
            await propose_applied(lead, lambda rid, i=i: Put(rid, 0, 0, b"k%d" % (i % 7), b"v%d" % i))
        # Keep 50 revisions, in steps of 5: the leader compacts at 70 or just below, and every replica with it.
        await until(lambda: all(n.fsm.compacted() >= 65 for n in cluster.nodes.values()), "compaction everywhere")
        points = {n.fsm.compacted() for n in cluster.nodes.values()}
        assert max(points) <= 70
    finally:
        for t in drivers:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
    await until(lambda: len({n.fsm.compacted() for n in cluster.nodes.values()}) == 1, "the same compaction point")


test_the_leader_compacts_through_the_log_as_the_retention_says = with_cluster(
    _leader_compacts_everywhere, history_retention="50"
)
