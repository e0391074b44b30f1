"""bench/lease_bench.py end to end, tiny: a few leases kept alive on a real 3-node cluster, the lock rows, the JSON.

No assertion here is about speed: the figures only have to be well-formed and the leases kept alive.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_lease_bench_keepalive_and_lock_sections() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.lease_bench", "--sections", "keepalive,lock", "--leases", "40", "--ttl", "3",
         "--window", "2.5", "--pairs", "1", "--holder-clients", "2", "--lock-acquisitions", "6", "--no-wait",
         "--output", "json"],
        capture_output=True, text=True, timeout=240, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rep = json.loads(out.stdout)
    assert rep["schema"] == "raftkv-lease-bench/1"
    idle, busy = rep["keepalive_raftkv"]
    assert idle["leases"] == 0 and idle["renewals"] == 0 and idle["requests"] == 0
    assert busy["leases"] == 40 and busy["held"] == 40 and busy["alive"] == 40
    assert busy["lost"] == {} and busy["leases_expired"] == 0
    assert busy["renewals"] > 0 and busy["requests"] > 0
    assert busy["revoke"]["errors"] == 0 and busy["revoke"]["left"] == 0
    assert busy["leader_cpu_s"] >= 0 and busy["window_s"] > 2
    assert len(rep["keepalive_raftkv_summary"]["pairs"]) == 1
    put, *locks = rep["lock"]
    assert put["what"] == "put" and put["ops"] == 6
    assert [r["contenders"] for r in locks] == [1, 2]
    for r in locks:
        assert r["ops"] == 6 and r["overlaps"] == 0 and r["revision_not_increasing"] == 0
        assert 0 < r["acquire_ms"]["p50"] <= r["acquire_ms"]["p99"]
    shown = subprocess.run([sys.executable, "-m", "bench.lease_bench", "--show", "/dev/stdin"], input=out.stdout,
                           capture_output=True, text=True, timeout=60, cwd=REPO)
    assert shown.returncode == 0, shown.stderr
    assert "Keep-alive cost, raftkv" in shown.stdout and "Lock (client.lock" in shown.stdout
