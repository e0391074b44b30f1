"""Run many generated fault schedules of the simulator, in parallel processes.

    python -m tests.sim.soak --schedules 100000 --jobs 2     # the long soak (about an hour on 2 cores)
    python -m tests.sim.soak --config 5-hunter --seed 313    # replay one schedule, printing its trace
    python -m tests.sim.soak --replicas --schedules 5000     # the same one level up: the daemon's Replicas

Seeds are spread round-robin over the named configurations (tests/sim/configs.py, or with ``--replicas``
``REPLICA_CONFIGS`` in tests/sim/replicas.py). Exit status 1 on a violation.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
import traceback

from .cluster import Cluster, Violation, run_schedule
from .configs import CONFIGS, TICKS
from .replicas import REPLICA_CONFIGS, run_replica_schedule


def _run(replicas: bool, name: str, seed: int) -> Cluster:
    if replicas:
        return run_replica_schedule(seed, REPLICA_CONFIGS[name])
    return run_schedule(seed, CONFIGS[name], ticks=TICKS.get(name, 150))


def _one(job: tuple[bool, str, int]) -> tuple[str, int, str | None]:
    replicas, name, seed = job
    try:
        _run(replicas, name, seed)
    except Violation as e:
        return name, seed, str(e)
    except Exception:  # a crash of the code under test is a failure too, with its traceback
        return name, seed, traceback.format_exc()
    return name, seed, None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--schedules", type=int, default=2000)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=mp.cpu_count())
    p.add_argument("--replicas", action="store_true", help="run the daemon's Replicas (tests/sim/replicas.py)")
    p.add_argument("--config", help="only this configuration")
    p.add_argument("--seed", type=int, help="replay one seed (with --config) and print the outcome")
    a = p.parse_args(argv)
    configs: dict[str, object] = REPLICA_CONFIGS if a.replicas else CONFIGS  # type: ignore[assignment]
    if a.config is not None and a.config not in configs:
        p.error(f"unknown configuration {a.config!r}; choose from {', '.join(sorted(configs))}")
    names = [a.config] if a.config else sorted(configs)
    if a.seed is not None:
        name = names[0]
        try:
            c = _run(a.replicas, name, a.seed)
        except Violation as e:
            print(e)
            return 1
        print(c.describe())
        return 0
    jobs = [(a.replicas, names[i % len(names)], a.first_seed + i) for i in range(a.schedules)]
    t0 = time.monotonic()
    failures = 0
    with mp.Pool(a.jobs) as pool:
        for done, (name, seed, err) in enumerate(pool.imap_unordered(_one, jobs, chunksize=8), 1):
            if err is not None:
                failures += 1
                print(f"\nVIOLATION config={name} seed={seed}\n{err}\n", flush=True)
            if done % 500 == 0 or done == len(jobs):
                rate = done / (time.monotonic() - t0)
                print(f"{done}/{len(jobs)} schedules, {failures} violations, {rate:.0f}/s", file=sys.stderr, flush=True)
    print(
        f"{len(jobs)} schedules over {len(names)} configurations: {failures} violations in {time.monotonic() - t0:.0f}s"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
