"""Fault-injection tooling: raftkv's own Jepsen, run as ``raftkv chaos``.

The pieces, each usable on its own:

- :mod:`~raftkv.chaos.history` -- operation histories (:class:`~raftkv.chaos.history.Op`, the
  :class:`~raftkv.chaos.history.History` recorder, JSON lines files);
- :mod:`~raftkv.chaos.linearizability` -- the checker (Wing-Gong/Lowe search per key, unknown outcomes);
- :mod:`~raftkv.chaos.net` -- one network namespace per node, with iptables faults;
- :mod:`~raftkv.chaos.nemesis` -- process and network faults on a seeded schedule, always undone;
- :mod:`~raftkv.chaos.workload` -- concurrent clients doing random operations, recorded with their outcomes;
- :mod:`~raftkv.chaos.runner` -- a whole run: cluster, workload and nemesis, final heal and reads, the checks
  (linearizability, lost writes, exactly-once counter, recovery, unavailability) and the results directory.

Submodules are imported on use (``from raftkv.chaos.runner import run_chaos``): this package imports nothing, so
``import raftkv.chaos.history`` stays light.
"""

__all__ = ["history", "linearizability", "nemesis", "net", "runner", "workload"]
