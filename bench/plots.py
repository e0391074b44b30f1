"""PNG figures of a benchmark report (matplotlib, no display needed).

* ``throughput_vs_clients-<workload>.png``: ops/s against the number of clients, one line per system;
* ``latency_cdf-<workload>.png``: the latency distribution of every row of the workload (log scale);
* ``throughput_over_time-<workload>.png``: ops completed in each second of the window, one line per row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .loadgen import Histogram

COLORS = {"raftkv": "tab:blue", "etcd": "tab:orange", "noop": "tab:gray"}


def _ok(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rows if r.get("status") == "ok"]


def make_plots(report: Mapping[str, Any], out: Path) -> list[Path]:
    """Write the figures for ``report`` (what ``harness.run`` returns) into ``out``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _ok(report.get("runs", []))
    files: list[Path] = []
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    subtitle = _subtitle(report)
    for wl in workloads:
        wrows = [r for r in rows if r["workload"] == wl]
        systems = list(dict.fromkeys(r["system"] for r in wrows))

        # throughput vs clients
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for s in systems:
            pts = sorted((r["clients"], r["ops_per_s"]) for r in wrows if r["system"] == s)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=s, color=COLORS.get(s))
        ceiling = report.get("ceiling")
        if ceiling and ceiling.get("status") == "ok":
            ax.axhline(ceiling["ops_per_s"], color=COLORS["noop"], linestyle="--", linewidth=1,
                       label=f"loadgen ceiling ({ceiling['workload']}, {ceiling['clients']} clients)")
        ax.set_xscale("log", base=2)
        ticks = sorted({r["clients"] for r in wrows})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("clients (concurrent requests)")
        ax.set_ylabel("ops/s")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{wl}: throughput vs clients\n{subtitle}", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend()
        files.append(_save(fig, out / f"throughput_vs_clients-{wl}.png"))

        # latency CDF
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r in wrows:
            cdf = Histogram.from_json(r["histogram"]).cdf()
            if not cdf:
                continue
            ax.plot([x / 1000.0 for x, _ in cdf], [y for _, y in cdf], label=f"{r['system']} c={r['clients']}",
                    color=COLORS.get(r["system"]), alpha=_alpha(r, wrows))
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("fraction of operations at or below")
        ax.set_ylim(0, 1.0)
        ax.set_title(f"{wl}: latency CDF\n{subtitle}", fontsize=10)
        ax.grid(True, alpha=0.3, which="both")
        ax.legend(fontsize=8)
        files.append(_save(fig, out / f"latency_cdf-{wl}.png"))

        # throughput over time
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r in wrows:
            xs, ys = rate_series(r)
            ax.plot(xs, ys, marker=".", label=f"{r['system']} c={r['clients']}", color=COLORS.get(r["system"]),
                    alpha=_alpha(r, wrows))
        ax.set_xlabel("time into the measured window (s, end of each 1 s bucket)")
        ax.set_ylabel("ops/s")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{wl}: throughput over time\n{subtitle}", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        files.append(_save(fig, out / f"throughput_over_time-{wl}.png"))
    plt.close("all")
    return files


def rate_series(r: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    """(bucket end times, ops/s) from a row's 1-second buckets; the last bucket may be shorter than a second."""
    counts = list(r.get("throughput_per_s") or [])
    duration = float(r.get("duration_s") or len(counts))
    xs, ys = [], []
    for i, n in enumerate(counts):
        end = min(float(i + 1), duration)
        width = end - i
        if width > 0:
            xs.append(end)
            ys.append(n / width)
    return xs, ys


def _alpha(r: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> float:
    """Lighter lines for fewer clients, so several rows of one system stay apart."""
    cs = sorted({x["clients"] for x in rows if x["system"] == r["system"]})
    if len(cs) <= 1:
        return 1.0
    return 0.35 + 0.65 * cs.index(r["clients"]) / (len(cs) - 1)


def _subtitle(report: Mapping[str, Any]) -> str:
    o = report.get("options", {})
    m = report.get("machine", {})
    return (f"{o.get('nodes')} nodes, {o.get('value_size')} B values, {o.get('keys'):,} keys, "
            f"{o.get('processes')} loadgen process(es), {m.get('cpus')} CPUs shared")


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


__all__ = ["make_plots", "rate_series"]
