"""Run many generated fault schedules of the simulator, in parallel processes.

    python -m tests.sim.soak --schedules 100000 --jobs 2     # the long soak (about an hour on 2 cores)
    python -m tests.sim.soak --config 5-hunter --seed 313    # replay one schedule, printing its trace

Seeds are spread round-robin over the named configurations (tests/sim/configs.py). Exit status 1 on a violation.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
import traceback

from .cluster import Violation, run_schedule
from .configs import CONFIGS, TICKS


def _one(job: tuple[str, int]) -> tuple[str, int, str | None]:
    name, seed = job
    try:
        run_schedule(seed, CONFIGS[name], ticks=TICKS.get(name, 150))
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
    p.add_argument("--config", choices=sorted(CONFIGS), help="only this configuration")
    p.add_argument("--seed", type=int, help="replay one seed (with --config) and print the outcome")
    a = p.parse_args(argv)
    names = [a.config] if a.config else sorted(CONFIGS)
    if a.seed is not None:
        name = names[0]
        try:
            c = run_schedule(a.seed, CONFIGS[name], ticks=TICKS.get(name, 150))
        except Violation as e:
            print(e)
            return 1
        print(c.describe())
        return 0
    jobs = [(names[i % len(names)], a.first_seed + i) for i in range(a.schedules)]
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
