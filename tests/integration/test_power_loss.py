"""Power losses of real processes (``tests/integration/powerloss``): the shim and its reverter on small programs, the
real LMDB store, and (``slow``) the real 3-node cluster: acknowledged writes survive a power cut of every node at
once, whole or torn, and with fsync off they do not -- the proof that the harness loses what was not synced.

The cluster's power is cut at the instant a client got an acknowledgement (retroactively, from the journals), with
the concurrent workload going (``busy``) or just after single puts (``quiet``), on a disk made slow (every sync 5 ms
longer) so that a later commit cannot hide a missing sync. The history is checked as the clients knew it at that
instant: lost acknowledged writes, the exactly-once counter, and linearizability of every key.

``RAFTKV_POWERLOSS_SEED=<n>`` fixes the random choices: the workload's operations, the instant of the cut and, in
torn mode, the pages lost (the seed is printed on failure); the cluster's own timing is not replayed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import pytest

import raftkv
from raftkv import localcluster
from raftkv.chaos.history import History, Op
from raftkv.chaos.linearizability import CheckResult, check
from raftkv.chaos.runner import CounterCheck, counter_check, lost_writes
from raftkv.chaos.workload import COUNTER_KEY, Workload, WorkloadConfig, register_keys
from raftkv.client import CLUSTER_FILE, Client
from raftkv.errors import RaftKVError
from raftkv.raft.types import Entry, HardState
from raftkv.server import check_cluster_id
from raftkv.storage.lmdb_wal import LmdbLogStore

from .powerloss import (
    PAGE_BYTES,
    Mode,
    PowerLossError,
    PowerLossReport,
    ShimUnavailable,
    compile_shim,
    kill_all,
    leftover_processes,
    power_loss,
    power_loss_cluster,
    preload_env,
    read_journal,
    restart_all,
    start_cluster,
)

_ROOT = Path(raftkv.__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        return compile_shim(tmp_path_factory.mktemp("powerloss-shim"))
    except ShimUnavailable as e:
        pytest.skip(f"power-loss shim unavailable: {e}")


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    data, journals = tmp_path / "data", tmp_path / "journals"
    data.mkdir()
    return data, journals


def _env(shim: Path, data: Path, journals: Path) -> dict[str, str]:
    env = {**os.environ, **preload_env(shim, data, journals)}
    env["PYTHONPATH"] = str(_ROOT)
    return env


def crash(shim: Path, data: Path, journals: Path, code: str) -> bytes:
    """Run ``code`` (``d`` is the data directory as a str) in a Python process with the shim preloaded; it ends
    by SIGKILLing itself: a crash, after which the page cache still holds every write. Returns its stdout."""
    prog = "import os, signal\nd = os.environ['RAFTKV_POWERLOSS_DIR']\n" + textwrap.dedent(code)
    prog += "\nos.kill(os.getpid(), signal.SIGKILL)\n"
    r = subprocess.run([sys.executable, "-c", prog], env=_env(shim, data, journals), capture_output=True, timeout=60)
    assert r.returncode == -signal.SIGKILL, r.stderr.decode()
    return r.stdout


# -- the shim and the reverter ---------------------------------------------------------------------------------------
def test_a_power_loss_keeps_what_was_fsynced_and_loses_the_rest(shim: Path, dirs: tuple[Path, Path]) -> None:
    data, journals = dirs
    crash(shim, data, journals, """
        fd = os.open(f"{d}/f", os.O_RDWR | os.O_CREAT, 0o644)
        os.write(fd, b"A" * 5000)
        os.fsync(fd)
        os.pwrite(fd, b"B" * 3000, 1000)          # overwrite, not synced
        os.write(fd, b"C" * 100)                  # at the fd's position (5000): grows the file
        os.writev(fd, [b"D" * 10, b"E" * 10])
        os.ftruncate(fd, 9000)
    """)
    f = data / "f"
    # A crash alone loses nothing: every write went straight to the file.
    assert f.read_bytes() == b"A" * 1000 + b"B" * 3000 + b"A" * 1000 + b"C" * 100 + b"D" * 10 + b"E" * 10 + bytes(3880)
    report = power_loss(data, journals, "all")
    assert f.read_bytes() == b"A" * 5000
    assert [(x.changes, x.durable, x.lost) for x in report.files] == [(5, 1, 4)]
    assert power_loss(data, journals, "all").files == ()  # the journals were applied once


def test_fsync_through_any_fd_and_o_dsync_writes_are_durable(shim: Path, dirs: tuple[Path, Path]) -> None:
    data, journals = dirs
    crash(shim, data, journals, """
        a = os.open(f"{d}/f", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(a, b"1" * 100)
        b = os.open(f"{d}/f", os.O_RDONLY)
        os.fdatasync(b)                           # another fd of the same file: covers the write through a
        os.write(a, b"2" * 100)                   # lost
        s = os.open(f"{d}/f", os.O_WRONLY | os.O_DSYNC)
        os.pwrite(s, b"3" * 10, 150)              # durable by itself (the 2s around it are not)
        e = os.dup(a)
        os.pwrite(e, b"4" * 10, 0)                # through a dup: journaled, lost
        g = os.open(f"{d}/g", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(g, b"x" * 10)
        os.fsync(g)
        os.write(g, b"y" * 10)                    # appended, lost
    """)
    power_loss(data, journals, "all")
    assert (data / "f").read_bytes() == b"1" * 100 + bytes(50) + b"3" * 10
    assert (data / "g").read_bytes() == b"x" * 10


def test_truncating_opens_new_files_and_renames(shim: Path, dirs: tuple[Path, Path]) -> None:
    data, journals = dirs
    (data / "old").write_bytes(b"durable")  # written without the shim: the starting state, durable
    crash(shim, data, journals, """
        with open(f"{d}/old", "w") as f:          # O_TRUNC: done as a journaled ftruncate
            f.write("replaced")
        with open(f"{d}/new.tmp", "w") as f:      # a new file, never synced ...
            f.write("cluster-id")
        os.replace(f"{d}/new.tmp", f"{d}/new")    # ... renamed: the name stays, the data goes
        with open(f"{d}/synced.tmp", "w") as f:
            f.write("kept")
            f.flush()
            os.fsync(f.fileno())
        os.replace(f"{d}/synced.tmp", f"{d}/synced")
        os.truncate(f"{d}/synced", 2)             # by path: lost
    """)
    power_loss(data, journals, "all")
    assert (data / "old").read_bytes() == b"durable"
    assert (data / "new").read_bytes() == b""
    assert (data / "synced").read_bytes() == b"kept"


def test_a_later_process_s_fsync_makes_an_earlier_one_s_writes_durable(shim: Path, dirs: tuple[Path, Path]) -> None:
    data, journals = dirs
    crash(shim, data, journals, """
        fd = os.open(f"{d}/f", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"first")
    """)
    crash(shim, data, journals, """
        fd = os.open(f"{d}/f", os.O_WRONLY)
        os.fsync(fd)
        os.pwrite(fd, b"second", 5)
    """)
    report = power_loss(data, journals, "all")
    assert (data / "f").read_bytes() == b"first"
    assert report.journals == 2


def test_the_power_can_be_cut_at_an_earlier_instant(shim: Path, dirs: tuple[Path, Path]) -> None:
    data, journals = dirs
    out = crash(shim, data, journals, """
        import sys, time
        fd = os.open(f"{d}/f", os.O_RDWR | os.O_CREAT, 0o644)
        os.write(fd, b"A" * 10)
        os.fsync(fd)
        os.write(fd, b"B" * 10)                   # before the cut, never synced before it: lost
        sys.stdout.write(f"{time.monotonic_ns()}\\n")
        sys.stdout.flush()
        os.write(fd, b"C" * 10)                   # after the cut: never happened, fsync or not
        os.fsync(fd)
    """)
    report = power_loss(data, journals, "all", at_ns=int(out))
    assert (data / "f").read_bytes() == b"A" * 10
    assert [(f.durable, f.lost, f.after_cut) for f in report.files] == [(1, 1, 1)]


def _torn_writer(shim: Path, data: Path, journals: Path) -> None:
    crash(shim, data, journals, f"""
        fd = os.open(f"{{d}}/f", os.O_RDWR | os.O_CREAT, 0o644)
        os.write(fd, bytes({16 * PAGE_BYTES}))
        os.fsync(fd)
        os.pwrite(fd, b"".join(bytes([i + 1]) * {PAGE_BYTES} for i in range(16)), 0)   # 16 pages, one write
        os.pwrite(fd, b"\\xff" * 100, {16 * PAGE_BYTES})                               # grows the file
    """)


def test_a_torn_power_loss_keeps_a_seeded_random_subset_of_pages(shim: Path, tmp_path: Path) -> None:
    seed = random.SystemRandom().randrange(1 << 32)
    results = []
    for run in ("a", "b"):
        data, journals = tmp_path / run / "data", tmp_path / run / "journals"
        data.mkdir(parents=True)
        _torn_writer(shim, data, journals)
        power_loss(data, journals, "torn", seed=seed)
        results.append((data / "f").read_bytes())
    assert results[0] == results[1], f"seed {seed}: the same seed must lose the same pages"
    content = results[0]
    pages = [content[i : i + PAGE_BYTES] for i in range(0, 16 * PAGE_BYTES, PAGE_BYTES)]
    for i, page in enumerate(pages):  # each page whole: old (zeros) or new
        assert page in (bytes(PAGE_BYTES), bytes([i + 1]) * PAGE_BYTES), f"seed {seed}: page {i} is torn"
    assert len(content) in (16 * PAGE_BYTES, 16 * PAGE_BYTES + 100), f"seed {seed}"
    # Which pages survive varies with the seed (all 16 the same way twice in a row: 1 in 2**31).
    outcomes = set()
    for s in (1, 2):
        data, journals = tmp_path / f"s{s}" / "data", tmp_path / f"s{s}" / "journals"
        data.mkdir(parents=True)
        _torn_writer(shim, data, journals)
        power_loss(data, journals, "torn", seed=s)
        outcomes.add((data / "f").read_bytes()[: 16 * PAGE_BYTES])
    assert len(outcomes | {content[: 16 * PAGE_BYTES]}) > 1


def test_writes_the_shim_cannot_journal_are_refused(shim: Path, dirs: tuple[Path, Path]) -> None:
    data, journals = dirs
    crash(shim, data, journals, """
        import mmap
        fd = os.open(f"{d}/f", os.O_RDWR | os.O_CREAT, 0o644)
        os.write(fd, bytes(4096))
        m = mmap.mmap(fd, 4096)                   # writable and shared: its writes bypass the shim
        m[:4] = b"oops"
    """)
    with pytest.raises(PowerLossError, match="writable MAP_SHARED"):
        power_loss(data, journals, "all")


def test_the_power_loss_refuses_while_the_writer_runs(shim: Path, dirs: tuple[Path, Path]) -> None:
    data, journals = dirs
    prog = textwrap.dedent("""
        import os, sys
        fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)
        os.write(fd, b"x")
        print(flush=True)
        sys.stdin.read()
    """)
    p = subprocess.Popen([sys.executable, "-c", prog, str(data / "f")], env=_env(shim, data, journals),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert p.stdout is not None and p.stdout.readline() == b"\n"
        with pytest.raises(PowerLossError, match="still runs"):
            power_loss(data, journals, "all")
    finally:
        p.kill()
        p.wait(10)
    assert power_loss(data, journals, "all").lost_changes == 1



def test_a_node_s_cluster_id_survives_a_power_loss(shim: Path, dirs: tuple[Path, Path]) -> None:
    """The first thing a node writes. Unsynced, a power loss left it empty (its rename durable, its data not), and
    the node then refused its own data directory: "belongs to cluster , but these settings describe cluster ..."."""
    data, journals = dirs
    crash(shim, data, journals, """
        from pathlib import Path
        from raftkv.server import check_cluster_id
        check_cluster_id(Path(d), "c-1")
    """)
    power_loss(data, journals, "all")
    check_cluster_id(data, "c-1")
    assert (data / "cluster_id").read_text() == "c-1\n"

# -- the real LMDB store ---------------------------------------------------------------------------------------------
_STORE = """
    from raftkv.raft.types import Entry, HardState
    from raftkv.storage.lmdb_wal import LmdbLogStore
    s = LmdbLogStore(d + "/raft", sync=True)
    s.write(entries=[Entry(1, 1, 0, b"synced" * 100)], hard_state=HardState(term=1, vote=0, commit=1))
    s.write(entries=[Entry(1, 2, 0, b"x" * 10000)], sync={second_sync})
"""


@pytest.mark.parametrize(("mode", "second_sync"), [("all", False), ("torn", False), ("all", True), ("torn", True)])
def test_the_lmdb_store_keeps_exactly_its_synced_writes(
    shim: Path, dirs: tuple[Path, Path], mode: Mode, second_sync: bool
) -> None:
    """``write(sync=False)`` commits without fsyncing the meta page (lmdb_wal's docstring): a power loss may undo
    it, never tear it, and never undo ``write(sync=True)``. The LMDB lock file is not journaled."""
    data, journals = dirs
    crash(shim, data, journals, _STORE.format(second_sync=second_sync))
    (journal,) = journals.glob("journal-*.bin")
    assert sorted({Path(p).name for p in read_journal(journal).names.values()}) == ["data.mdb"]
    seed = random.SystemRandom().randrange(1 << 32)
    report = power_loss(data, journals, mode, seed=seed)
    store = LmdbLogStore(data / "raft", sync=True)
    try:
        last = store.last_index()
        assert store.entries(1, 2, None)[0] == Entry(1, 1, 0, b"synced" * 100)
        assert store.initial_state()[0] == HardState(term=1, vote=0, commit=1)
        if second_sync:
            assert last == 2, report.describe()
        elif mode == "all":
            assert last == 1, report.describe()  # only the meta page was unsynced, and it is what commits
        else:
            assert last in (1, 2), f"seed {seed}: {report.describe()}"
        if last == 2:
            assert store.entries(2, 3, None)[0] == Entry(1, 2, 0, b"x" * 10000), f"seed {seed}"
    finally:
        store.close()


# -- the real cluster ------------------------------------------------------------------------------------------------
OPS_BEFORE_THE_KILL = 400
"""Operations acknowledged (puts and increments, a few gets) by the concurrent workload before the cut."""
TAIL_PUTS = 10
"""Puts one at a time after the concurrent workload, for a cut in a quiet moment (see ``_cut_the_power``)."""
Cut = Literal["busy", "quiet"]
SYNC_DELAY_US = 5000
"""Every fsync and fdatasync in the nodes takes 5 ms more, as on a spinning or busy disk. On this machine's fast
disk, the fdatasync of the next commit (which also makes the previous one durable) finishes before the client has
even received its acknowledgement, and hides a missing sync; with a slow disk, a cut at the acknowledgement finds it.
Measured with write(sync=True) made to skip its final fsync: both whole-loss tests reported lost acknowledged writes
in 3 of 3 runs; without the delay, a quiet cut found it in 1 of 3, and a cut at the kill in none of 3."""
WORKLOAD = WorkloadConfig(
    clients=8, keys=12, op_timeout_s=1.0, think_s=0.0, mix={"put": 0.72, "incr": 0.2, "get": 0.08}
)


def _seed() -> int:
    env = os.environ.get("RAFTKV_POWERLOSS_SEED")
    return int(env) if env else random.SystemRandom().randrange(1 << 32)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the clients saw and what the cluster held after the power loss."""

    seed: int
    cut_ns: int
    acked_writes: int
    """Acknowledged before the cut."""
    reports: list[PowerLossReport]
    lost: list[Op]
    counter: CounterCheck
    linearizable: CheckResult

    def describe(self) -> str:
        lines = [f"seed {self.seed} (replay the losses: RAFTKV_POWERLOSS_SEED={self.seed}); the power was cut at "
                 f"{self.cut_ns} ns, when {self.acked_writes} writes had been acknowledged"]
        lines += [r.describe() for r in self.reports]
        lines.append(f"lost acknowledged writes: {len(self.lost)}")
        lines += [f"  {op.describe()}" for op in self.lost[:20]]
        lines.append(f"counter: {self.counter.describe()}")
        lines.append(f"linearizable: {self.linearizable.ok} {self.linearizable.explanation or ''}")
        return "\n".join(lines)


class _Background:
    """The chaos workload on its own event loop in a thread, until :meth:`finish`."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="powerloss-workload", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            self.loop.run_until_complete(self.workload.run(self.stop))
        except BaseException as e:
            self.error = e
        finally:
            self.loop.close()

    def acked(self) -> int:
        return self.workload.counts.ok

    def finish(self) -> None:
        """Stop the clients: each ends the operation it has in flight within op_timeout_s."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(WORKLOAD.op_timeout_s + 30)
        assert not self.thread.is_alive(), "the workload did not stop"
        if self.error is not None:
            raise self.error


def _final_reads(endpoints: list[str], history: History, keys: list[bytes]) -> dict[bytes, bytes | None]:
    """One successful linearizable read of every key, each attempt recorded (as one more client process)."""
    process = WORKLOAD.clients
    values: dict[bytes, bytes | None] = {}

    async def read_all() -> None:
        deadline = time.monotonic() + 30
        async with Client(endpoints, timeout_s=5.0) as c:
            for key in keys:
                while key not in values:
                    op = history.invoke(process, "get", key)
                    try:
                        kv = await c.get(key, consistency="linearizable", min_index=0)
                    except RaftKVError:
                        history.complete(op, "fail")
                        assert time.monotonic() < deadline, f"no linearizable read of {key!r} succeeded in 30 s"
                        await asyncio.sleep(0.1)
                        continue
                    values[key] = None if kv is None else kv.value
                    history.complete(op, "ok", values[key])

    asyncio.run(read_all())
    return values


def _ack_instant(ops: list[Op], rng: random.Random) -> int:
    """Just after the client recorded the acknowledgement of one of ``ops`` (of the last third): the instant at which
    a write acknowledged before it was durable on a majority would still be lost."""
    acks = sorted(op.complete_ts for op in ops if op.status == "ok" and op.kind != "get" and op.complete_ts)
    assert acks, "no write was acknowledged"
    return rng.choice(acks[len(acks) * 2 // 3 :]) + 1


def _as_of(ops: list[Op], cut_ns: int) -> list[Op]:
    """The history as the clients knew it at ``cut_ns``: what was invoked later never happened, and what was still
    in flight has an unknown outcome (a write) or none (a read)."""
    out = []
    for op in ops:
        if op.invoke_ts >= cut_ns:
            continue
        if op.complete_ts is None or op.complete_ts >= cut_ns:
            if op.kind == "get":
                continue
            op = replace(op, status="unknown", complete_ts=None, result=None)
        out.append(op)
    return out


TAIL_PROCESS = WORKLOAD.clients + 1


def _tail(endpoints: list[str], history: History) -> None:
    """TAIL_PUTS puts, one at a time, recorded as one more client process."""

    async def puts() -> None:
        async with Client(endpoints, timeout_s=WORKLOAD.op_timeout_s) as c:
            for i in range(TAIL_PUTS):
                key, value = register_keys(WORKLOAD.keys)[i % WORKLOAD.keys], f"tail-{i}".encode()
                op = history.invoke(TAIL_PROCESS, "put", key, value=value)
                await c.put(key, value)
                history.complete(op, "ok")

    asyncio.run(puts())


def _cut_the_power(cluster_dir: Path, shim: Path, *, sync: bool, mode: Mode, cut: Cut, seed: int) -> Outcome:
    """A 3-node cluster with the shim in every node and the concurrent workload on it; every node SIGKILLed at
    once; the power cut at an instant just after a client got an acknowledgement (every node's writes from then on
    undone, and its unsynced ones before); restart; read every key; check the history as of the cut.

    ``busy``: the nodes are killed with the workload going, and the cut is at one of the last third of its
    acknowledgements. ``quiet``: the workload stops, then single puts follow one by one, and the cut is at one of
    their acknowledgements -- where no later commit can have made an acknowledged write durable by chance (a commit
    makes the previous one durable), so a write acknowledged before it was durable on a majority is lost."""
    info = start_cluster(cluster_dir, shim, sync=sync, sync_delay_us=SYNC_DELAY_US)
    history = History()
    bg = _Background(Workload(info.endpoints, replace(WORKLOAD, seed=seed), history))
    rng = random.Random(seed)
    try:
        deadline = time.monotonic() + 30
        while bg.acked() < OPS_BEFORE_THE_KILL:
            assert bg.thread.is_alive(), f"the workload stopped: {bg.error!r}"
            assert time.monotonic() < deadline, f"only {bg.acked()} operations acknowledged in 30 s"
            time.sleep(0.02)
        if cut == "busy":
            kill_all(cluster_dir)
    finally:
        bg.finish()
    if cut == "quiet":
        _tail(info.endpoints, history)
        kill_all(cluster_dir)
    workload_ops = history.ops()
    tail = [op for op in workload_ops if op.process == TAIL_PROCESS]
    cut_ns = _ack_instant(tail or workload_ops, rng)
    reports = power_loss_cluster(cluster_dir, mode, seed=seed, at_ns=cut_ns)
    restart_all(cluster_dir)
    final = _final_reads(info.endpoints, history, [*register_keys(WORKLOAD.keys), COUNTER_KEY])
    ops = [*_as_of(workload_ops, cut_ns), *history.ops()[len(workload_ops) :]]
    acked = sum(op.status == "ok" and op.kind != "get" for op in ops)
    return Outcome(seed, cut_ns, acked, reports, lost_writes(ops, final), counter_check(ops, final),
                   check(ops, time_limit_s=20))


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[Path]:
    """Where the test's cluster lives; afterwards every node is stopped by pid and nothing of ours may run."""
    d = tmp_path / "cluster"
    try:
        yield d
    finally:
        if (d / CLUSTER_FILE).exists():
            kill_all(d)  # their data is not needed: no graceful shutdown
            localcluster.down(d, purge=True)
        left = leftover_processes(tmp_path)
        for p in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(p.split(":", 1)[0]), signal.SIGKILL)
        assert not left, f"processes left behind: {left}"


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "cut"), [("all", "busy"), ("all", "quiet"), ("torn", "busy"), ("torn", "quiet")])
def test_every_acknowledged_write_survives_a_power_loss_of_every_node(
    shim: Path, cluster_dir: Path, mode: Mode, cut: Cut
) -> None:
    """fsync on: whatever was acknowledged before the cut is read back, the counter counts every acknowledged
    increment exactly once, and the whole history (as of the cut) is linearizable."""
    seed = _seed()
    out = _cut_the_power(cluster_dir, shim, sync=True, mode=mode, cut=cut, seed=seed)
    why = out.describe()
    print(why)
    assert out.acked_writes >= 200, why
    assert sum(r.lost_changes for r in out.reports) > 0, f"nothing was left to lose: a vacuous test\n{why}"
    assert out.lost == [], why
    assert out.counter.ok, why
    assert out.linearizable.ok is True, why


@pytest.mark.slow
def test_with_fsync_off_the_same_power_loss_loses_acknowledged_writes(shim: Path, cluster_dir: Path) -> None:
    """The proof that the harness drops what was not synced: the check must report lost writes."""
    seed = _seed()
    out = _cut_the_power(cluster_dir, shim, sync=False, mode="all", cut="busy", seed=seed)
    why = out.describe()
    print(why)
    assert out.acked_writes >= 200, why
    assert len(out.lost) > out.acked_writes / 2, why  # nearly all of them: nothing was synced since the start
    assert out.counter.ok is False and out.counter.final is not None and out.counter.final < out.counter.acked, why
    assert out.linearizable.ok is False, why
