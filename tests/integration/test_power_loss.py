"""Power losses of real processes (``tests/integration/powerloss``): the shim and its reverter on small programs, the
real LMDB store, and (``slow``) the real 3-node cluster: acknowledged writes survive a power cut of every node at
once, whole or torn, and with fsync off they do not -- the proof that the harness loses what was not synced.

``RAFTKV_POWERLOSS_SEED=<n>`` replays a torn power loss (the seed is printed on failure)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import raftkv
from raftkv.raft.types import Entry, HardState
from raftkv.server import check_cluster_id
from raftkv.storage.lmdb_wal import LmdbLogStore

from .powerloss import (
    PAGE_BYTES,
    Mode,
    PowerLossError,
    ShimUnavailable,
    compile_shim,
    power_loss,
    preload_env,
    read_journal,
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


def crash(shim: Path, data: Path, journals: Path, code: str) -> None:
    """Run ``code`` (``d`` is the data directory as a str) in a Python process with the shim preloaded; it ends
    by SIGKILLing itself: a crash, after which the page cache still holds every write."""
    prog = "import os, signal\nd = os.environ['RAFTKV_POWERLOSS_DIR']\n" + textwrap.dedent(code)
    prog += "\nos.kill(os.getpid(), signal.SIGKILL)\n"
    r = subprocess.run([sys.executable, "-c", prog], env=_env(shim, data, journals), capture_output=True, timeout=60)
    assert r.returncode == -signal.SIGKILL, r.stderr.decode()


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
