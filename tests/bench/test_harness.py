"""The benchmark harness (bench/): the load generator against a real 3-node cluster, the histogram's percentile
math, the merged JSON's shape, the report tables, the etcd target (skipped without etcd), and ``raftkv bench``.

No assertion here is about speed: the numbers only have to be well-formed (timing targets live in bench/ itself).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from bench import harness, loadgen
from bench.loadgen import Histogram, LoadConfig, merge_results, run_load
from raftkv import localcluster

REPO = Path(__file__).resolve().parents[2]
LATENCY_KEYS = {"p50", "p90", "p99", "p99.9", "max", "min", "mean"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localcluster.ClusterInfo]:
    d = tmp_path_factory.mktemp("bench") / "cluster"
    info = localcluster.up(d, 3, tick_ms=50, sync=True, timeout_s=60)
    try:
        yield info
    finally:
        localcluster.down(d, purge=True)


def check_result(r: dict[str, Any], clients: int) -> None:
    """A well-formed load generator result (one process or merged)."""
    assert r["status"] == "ok", r
    assert r["schema"] == loadgen.SCHEMA
    assert r["clients"] == clients
    assert r["ops"] == r["histogram"]["count"] == sum(r["throughput_per_s"])
    assert len(r["throughput_per_s"]) == len(r["errors_per_s"]) == math.ceil(r["duration_s"])
    assert r["error_count"] == sum(r["errors"].values()) == sum(r["errors_per_s"])
    assert r["ops_per_s"] == pytest.approx(r["ops"] / r["duration_s"])
    assert sum(r["op_counts"].values()) == r["ops"]
    lat = r["latency_ms"]
    assert set(lat) == LATENCY_KEYS
    if r["ops"]:
        assert 0 <= lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    json.dumps(r)  # plain JSON all the way down


# -- against a real cluster --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_loadgen_process_against_a_3_node_cluster(cluster: localcluster.ClusterInfo) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "--target", "raftkv", "--endpoints", ",".join(cluster.endpoints),
         "--workload", "mixed-50-50", "--clients", "4", "--duration", "2", "--warmup", "0.5", "--keys", "100"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    check_result(r, 4)
    assert r["ops"] > 0
    assert set(r["op_counts"]) <= {"put", "get:linearizable"}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["rpc", "library"])
def test_loadgen_in_process_both_client_modes(cluster: localcluster.ClusterInfo, mode: str) -> None:
    cfg = LoadConfig("raftkv", cluster.endpoints, workload="put", clients=4, duration_s=1, warmup_s=0.2,
                     keys=100, client_mode=mode)
    r = asyncio.run(run_load(cfg))
    check_result(r, 4)
    assert r["client_mode"] == mode
    assert r["ops"] > 0


@pytest.mark.slow
def test_leader_counters_give_fsyncs_per_entry(cluster: localcluster.ClusterInfo) -> None:
    before = harness._raftkv_stats(cluster.endpoints)
    asyncio.run(run_load(LoadConfig("raftkv", cluster.endpoints, clients=2, duration_s=1, warmup_s=0)))
    after = harness._raftkv_stats(cluster.endpoints)
    figs = harness.durability_figures(before, after)
    assert figs is not None
    assert figs["deltas"]["commands_proposed"] > 0
    assert figs["fsyncs_per_entry"] > 0 and figs["commands_per_fsync"] > 0
    # Every durable commit is also a commit: at least as many flushes as durable syncs, per command.
    d = figs["deltas"]
    assert figs["fdatasyncs_per_command"] == round((d["store_commits"] + d["store_syncs"]) / d["commands_proposed"], 4)
    assert d["store_commits"] >= d["store_syncs"] > 0


def test_etcd_target(tmp_path: Path) -> None:
    from bench.etcd import EtcdCluster, find_etcd

    if find_etcd() is None:
        pytest.skip("etcd is not installed (bench/etcd.sh installs it)")
    c = EtcdCluster.up(tmp_path / "etcd", 3, timeout_s=60)
    try:
        for wl in ("put", "get-stale", "cas"):
            r = asyncio.run(run_load(LoadConfig("etcd", c.endpoints, workload=wl, clients=2, duration_s=1,
                                                warmup_s=0, keys=100)))
            check_result(r, 2)
        lease = asyncio.run(run_load(LoadConfig("etcd", c.endpoints, workload="get-lease", clients=1)))
        assert lease["status"] == "unsupported" and "n/a" in lease["reason"]
        assert set(c.server_pids()) == {"m1", "m2", "m3"}
    finally:
        c.down()
    assert not (tmp_path / "etcd").exists()


def test_harness_end_to_end_against_the_noop_server(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--system", "noop", "--clients", "1,3", "--duration", "1", "--warmup", "0",
         "--processes", "2", "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=90, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    assert "raftkv bench" in out.stdout  # the table's title
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert report["schema"] == harness.SCHEMA
    assert {"created", "finished", "options", "machine", "versions", "notes", "ceiling", "runs"} <= set(report)
    rows = report["runs"]
    assert [(r["system"], r["workload"], r["clients"], r["processes"]) for r in rows] == [
        ("noop", "put", 1, 1), ("noop", "put", 3, 2)]
    for r in rows:
        check_result(r, r["clients"])
        assert [s["name"] for s in r["servers"]] == ["noop"]
        assert r["servers"][0]["rss_bytes"] > 0 and r["servers"][0]["cpu_s"] is not None
        assert r["loadgen_cpu_s"] >= 0 and 0 <= r["machine_busy"] <= 1
    assert sorted(report["plots"]) == sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert list(tmp_path.glob("raftkv-bench-*")) == []  # the temporary cluster directory is gone


def test_harness_refuses_bad_arguments_in_one_line() -> None:
    out = subprocess.run([sys.executable, "-m", "bench", "--clients", "0"], capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert out.returncode == 2
    assert "--clients must be between 1 and 256" in out.stderr
    assert "Traceback" not in out.stderr


# -- percentile math ---------------------------------------------------------------------------------------------
def test_histogram_is_exact_for_small_values() -> None:
    h = Histogram()
    for us in (1, 2, 3, 4):
        h.record_us(us)
    assert [h.percentile_us(q) for q in (25, 50, 75, 100)] == [1, 2, 3, 4]
    assert h.percentile_us(50.1) == 3  # nearest rank: the smallest value with at least q % at or below it
    assert (h.count, h.min_us, h.max_us, h.mean_us()) == (4, 1, 4, 2.5)


def test_histogram_percentiles_of_known_data_within_bucket_precision() -> None:
    h = Histogram.of(i / 1000.0 for i in range(1, 1001))  # 1 ms .. 1000 ms
    for q, want_ms in ((50, 500), (90, 900), (99, 990), (99.9, 999)):
        got_ms = h.percentile_us(q) / 1000.0
        assert want_ms <= got_ms <= want_ms * (1 + 2 ** -(Histogram.SUB_BITS - 1)), (q, got_ms)
    assert h.percentile_us(100) == 1_000_000 == h.max_us
    s = loadgen.latency_summary_ms(h)
    assert s["max"] == 1000.0 and s["min"] == 1.0 and s["mean"] == pytest.approx(500.5)


def test_histogram_merge_and_json_round_trip() -> None:
    a = Histogram.of(x / 1e4 for x in range(1, 500))
    b = Histogram.of(x / 1e3 for x in range(3, 900, 7))
    both = Histogram.of([*(x / 1e4 for x in range(1, 500)), *(x / 1e3 for x in range(3, 900, 7))])
    a.merge(Histogram.from_json(json.loads(json.dumps(b.to_json()))))
    assert a.counts == both.counts
    assert (a.count, a.min_us, a.max_us, a.sum_us) == (both.count, both.min_us, both.max_us, both.sum_us)
    cdf = a.cdf()
    assert cdf[-1][1] == 1.0 and all(x1 < x2 for (x1, _), (x2, _) in itertools.pairwise(cdf))
    with pytest.raises(ValueError):
        h = Histogram()
        h.percentile_us(0)
    assert Histogram().percentile_us(99) == 0.0


# -- merged results and the report -------------------------------------------------------------------------------
def _fake_result(ops_ms: list[float], errors: dict[str, int], clients: int, per_s: list[int]) -> dict[str, Any]:
    h = Histogram.of(x / 1000.0 for x in ops_ms)
    return {
        "schema": loadgen.SCHEMA, "status": "ok", "target": "raftkv", "endpoints": ["a:1"], "workload": "put",
        "client_mode": "rpc", "clients": clients, "processes": 1, "value_size": 16, "keys": 1000,
        "duration_s": 2.0, "warmup_s": 0.0, "event_loop": "asyncio", "ops": h.count, "ops_per_s": h.count / 2.0,
        "error_count": sum(errors.values()), "errors": errors, "first_error": "", "op_counts": {"put": h.count},
        "warmup_ops": 0, "warmup_errors": 0, "late_ops": 0, "redirects": 1,
        "latency_ms": loadgen.latency_summary_ms(h), "histogram": h.to_json(), "throughput_per_s": per_s,
        "errors_per_s": [sum(errors.values()), 0], "started_late_s": 0.0, "cpu_s": 0.5,
    }


def test_merge_results_adds_processes_up() -> None:
    a = _fake_result([1.0, 2.0, 3.0], {"UNAVAILABLE": 1}, 2, [2, 1])
    b = _fake_result([10.0, 20.0], {"UNAVAILABLE": 2, "DEADLINE_EXCEEDED": 1}, 3, [1, 1])
    m = merge_results([a, b])
    check_result({**m, "errors_per_s": [4, 0]}, 5)
    assert (m["ops"], m["processes"], m["redirects"], m["cpu_s"]) == (5, 2, 2, 1.0)
    assert m["errors"] == {"DEADLINE_EXCEEDED": 1, "UNAVAILABLE": 3}
    assert m["throughput_per_s"] == [3, 2]
    assert m["latency_ms"]["max"] == 20.0 and m["latency_ms"]["p50"] == pytest.approx(3.0, rel=1 / 128)
    failed = merge_results([a, {"status": "failed", "reason": "boom"}])
    assert failed["status"] == "failed" and failed["reason"] == "boom"


def _row(system: str, clients: int, ops_per_s: float, p99: float) -> dict[str, Any]:
    lat = {"p50": p99 / 4, "p90": p99 / 2, "p99": p99, "p99.9": p99 * 2, "max": p99 * 3, "min": 0.1, "mean": 1.0}
    return {
        "system": system, "workload": "put", "clients": clients, "status": "ok", "ops": int(ops_per_s * 10),
        "ops_per_s": ops_per_s, "latency_ms": lat, "error_count": 0, "errors": {}, "loadgen_cpu_cores": 0.5,
        "machine_busy": 0.9, "servers": [{"name": f"n{i}", "cpu_cores": 0.3, "rss_bytes": (40 + i) << 20}
                                         for i in range(3)],
        "raftkv_stats": {"fsyncs_per_entry": 1.0, "commands_per_fsync": 12.5, "commands_per_entry": 12.5}
        if system == "raftkv" else None,
    }


def test_report_tables_with_ratios() -> None:
    rows = [_row("raftkv", 16, 500.0, 8.0), _row("etcd", 16, 1000.0, 4.0), _row("raftkv", 64, 900.0, 20.0),
            {"system": "etcd", "workload": "put", "clients": 64, "status": "n/a", "reason": "n/a: because"}]
    harness.add_ratios(rows)
    assert rows[0]["ratio_vs_etcd"]["ops_per_s"] == 0.5 and rows[0]["ratio_vs_etcd"]["p99"] == 2.0
    assert "ratio_vs_etcd" not in rows[1] and "ratio_vs_etcd" not in rows[2]
    ceiling = {**_row("noop", 64, 4000.0, 2.0), "processes": 2, "client_mode": "rpc"}
    report = {"runs": rows, "ceiling": ceiling, "machine": {"cpus": 2}}
    con = Console(record=True, width=220)
    harness.print_report(report, con)
    text = con.export_text()
    assert "ops/s x0.50, p99 x2.00" in text
    assert "n/a: because" in text
    assert "40/41/42" in text  # RSS MiB per server
    assert "12.5" in text  # commands per fsync
    assert "loadgen ceiling: 4,000 ops/s with 2 processes" in text
    assert "noop (ceiling)" in text


def test_split_clients_and_unsupported_rows() -> None:
    assert harness.split_clients(16, 3) == [6, 5, 5]
    assert harness.split_clients(2, 4) == [1, 1]
    assert harness.unsupported_reason("etcd", "get-lease", "rpc") == "n/a: etcd has no lease reads"
    assert harness.unsupported_reason("etcd", "incr", "rpc") == "n/a: etcd has no increment"
    assert harness.unsupported_reason("noop", "txn", "rpc") is not None
    assert harness.unsupported_reason("raftkv", "mixed-90-10", "library") is None


# -- raftkv bench ----------------------------------------------------------------------------------------------
def test_raftkv_bench_command_forwards_to_the_harness(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from raftkv import bench_cmd

    r = CliRunner().invoke(bench_cmd.bench, ["--help"])
    assert r.exit_code == 0 and "--workload" in r.output and "--clients" in r.output

    def no_bench(name: str) -> Any:
        raise ImportError(name)

    monkeypatch.setattr(bench_cmd.importlib, "import_module", no_bench)
    r = CliRunner().invoke(bench_cmd.bench, ["--clients", "4"])
    assert r.exit_code == 1
    assert "error: the benchmark harness is not installed" in r.output
    assert len(r.output.strip().splitlines()) == 1
