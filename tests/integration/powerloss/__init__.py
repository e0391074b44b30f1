"""Power losses of real processes: ``shim.c`` (an LD_PRELOAD library) journals the undo information of every write a
process makes under one directory, and :func:`power_loss`, run after the process was killed, undoes the writes that
were never made durable -- what a power cut would have lost, while a ``kill -9`` alone loses nothing.

::

    shim = compile_shim(tmp)                                    # ShimUnavailable if there is no C compiler
    env = preload_env(shim, data_dir, journal_dir)              # LD_PRELOAD + RAFTKV_POWERLOSS_* for the process
    ...                                                         # run it, SIGKILL it
    report = power_loss(data_dir, journal_dir, "all")           # or "torn", seed=...; at_ns=... (an earlier instant)

The model (see shim.c for what counts as durable): a write is durable once an fsync/fdatasync of its file (through
any fd, by any process) that started after it succeeded, or when it was written with O_DSYNC/O_SYNC/RWF_DSYNC, or
after a sync()/syncfs(). Everything else may be lost:

* ``"all"``: every write not durable is undone -- the file holds exactly what the durable writes made of it;
* ``"torn"``: each 4 KiB page of each non-durable write (and each non-durable size change) survives or is lost by a
  coin toss (``random.Random(seed)``), so later writes may survive where earlier ones did not: what a disk that
  reorders its writes and has no flush since leaves behind. Pages are the unit: a page is never torn inside.

The power can also be cut *retroactively*, at any instant ``at_ns`` (``time.monotonic_ns()``) before the process was
killed: every record carries the time it was journaled, so the changes made at or after that instant are undone as
well, and only the syncs that returned before it count. A test cuts the power this way at the very moment a client
got an acknowledgement -- the instant at which a write acknowledged before it was durable is still lost.

Namespace operations (create, rename, unlink) are kept as they happened, fsynced directory or not: a file created
and renamed without an fsync is found under its new name with its unsynced contents lost. ``lock.mdb`` is not
tracked: LMDB rebuilds its lock file whenever the first process opens the environment, which is always the case
after a power loss.

``sync_delay_us`` (:func:`preload_env`) makes the disk slow: each fsync returns that much later, which widens the
window in which a process could act on a write it believes durable.

For clusters: :func:`start_cluster` starts a ``localcluster`` with the shim preloaded in every node (through an
``env`` prefix: the launcher passes no ``RAFTKV_*`` variable to nodes), :func:`kill_all` SIGKILLs every node by pid,
and :func:`power_loss_cluster` does both and undoes each node's unsynced writes.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from raftkv import localcluster
from raftkv.localcluster import ClusterInfo

__all__ = [
    "PAGE_BYTES",
    "Change",
    "FileLoss",
    "Journal",
    "Mode",
    "PowerLossError",
    "PowerLossReport",
    "ShimUnavailable",
    "compile_shim",
    "journal_dir_of",
    "kill_all",
    "leftover_processes",
    "power_loss",
    "power_loss_cluster",
    "preload_env",
    "read_journal",
    "restart_all",
    "start_cluster",
]

Mode = Literal["all", "torn"]
PAGE_BYTES = 4096
SHIM_SOURCE = Path(__file__).with_name("shim.c")
IGNORED = ("lock.mdb",)
"""File names the shim never tracks: LMDB's lock file holds no durable state (it is re-initialized at open)."""

_MAGIC = b"RKPLJNL1"
_HEADER = struct.Struct("<8sIIQQQ")
_RECORD = struct.Struct("<B7xQQ")
_W = struct.Struct("<7Q")
_T = struct.Struct("<6Q")
_R = struct.Struct("<Qq")
_D = struct.Struct("<Q")
_S = struct.Struct("<3Q")
_A = struct.Struct("<2Q")
_NX = struct.Struct("<2Q")


class ShimUnavailable(Exception):
    """The shim cannot be built here (no C compiler, or it failed): the tests skip with this reason."""


class PowerLossError(Exception):
    """A journal shows a write the shim could not journal, or the process that writes it still runs."""


# -- building and preloading the shim ------------------------------------------------------------------------------
def compile_shim(out_dir: Path) -> Path:
    """Compile ``shim.c`` into ``out_dir/shim.so`` (with ``$CC``, ``cc`` or ``gcc``) and return its path."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise ShimUnavailable("no C compiler (cc or gcc) to build the power-loss shim; apt-get install gcc libc6-dev")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "shim.so"
    cmd = [cc, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(out), str(SHIM_SOURCE), "-ldl"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        raise ShimUnavailable(f"cannot run {cc}: {e}") from None
    if r.returncode != 0:
        raise ShimUnavailable(f"{' '.join(cmd)} failed:\n{r.stderr.strip()}")
    return out


def preload_env(
    shim: Path, data_dir: Path, journal_dir: Path, ignore: Sequence[str] = IGNORED, *, sync_delay_us: int = 0
) -> dict[str, str]:
    """The environment variables that make a process journal its writes under ``data_dir`` into ``journal_dir``
    (created here; it must not be under ``data_dir``). ``sync_delay_us`` makes the disk slow: each fsync and
    fdatasync of a tracked file returns that much later (a race between a sync and what the process does before it
    returns then has room to show)."""
    data_dir, journal_dir = data_dir.absolute(), journal_dir.absolute()
    if journal_dir.is_relative_to(data_dir):
        raise ValueError(f"the journals ({journal_dir}) must not be under the tracked directory ({data_dir})")
    journal_dir.mkdir(parents=True, exist_ok=True)
    preload = os.environ.get("LD_PRELOAD", "")
    return {
        "LD_PRELOAD": f"{shim}:{preload}" if preload else str(shim),
        "RAFTKV_POWERLOSS_DIR": str(data_dir),
        "RAFTKV_POWERLOSS_JOURNAL": str(journal_dir),
        "RAFTKV_POWERLOSS_IGNORE": ":".join(ignore),
        "RAFTKV_POWERLOSS_SYNC_DELAY_US": str(sync_delay_us),
    }


# -- reading journals -----------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Change:
    """One journaled write (``kind == "write"``: ``new`` written at ``off`` over ``old``) or size change (``"size"``:
    ``old_size`` -> ``new_size``; ``old`` holds the bytes a shrink dropped, from ``new_size`` on). ``order`` is
    (journal index, seq): the order the changes happened in. ``old_size`` is the file's size just before. ``ts``:
    when it was journaled (just before it was made), monotonic ns."""

    order: tuple[int, int]
    ts: int
    dev: int
    ino: int
    kind: Literal["write", "size"]
    off: int
    old_size: int
    new_size: int
    old: bytes
    new: bytes
    failed: bool = False
    durable: bool = False
    after_cut: bool = False
    """Journaled at or after the instant of the power cut: it never happened."""

    @property
    def file(self) -> tuple[int, int]:
        return (self.dev, self.ino)


@dataclass(slots=True)
class Journal:
    """One process's journal: its changes and markers, in the order written."""

    path: Path
    pid: int
    start_ns: int
    changes: list[Change] = field(default_factory=list)
    names: dict[tuple[int, int], str] = field(default_factory=dict)
    file_syncs: list[tuple[tuple[int, int], int, int]] = field(default_factory=list)
    """((dev, ino), upto, ts): an fsync/fdatasync that returned at ts made every change of that file with
    seq < upto durable."""
    all_syncs: list[tuple[int, int, int]] = field(default_factory=list)
    """(dev, upto, ts): sync() (dev 0) or syncfs() made every change (on that device) with seq < upto durable."""
    dsync: dict[int, int] = field(default_factory=dict)
    """seq -> ts: writes made durable by O_DSYNC / RWF_DSYNC, when the write returned."""
    unsupported: list[str] = field(default_factory=list)
    truncated: bool = False
    """The last record was cut short (the process died while appending it; its data write had not started)."""


def read_journal(path: Path, index: int = 0) -> Journal:
    """Parse one journal file; ``index`` is its place among the journals of the directory (for ``Change.order``)."""
    data = path.read_bytes()
    if len(data) < _HEADER.size:
        raise PowerLossError(f"{path}: not a power-loss journal (only {len(data)} bytes)")
    magic, version, pid, start_ns, _mono, _ = _HEADER.unpack_from(data)
    if magic != _MAGIC or version != 1:
        raise PowerLossError(f"{path}: not a version 1 power-loss journal")
    j = Journal(path, pid, start_ns)
    by_seq: dict[int, Change] = {}
    pos = _HEADER.size
    while pos < len(data):
        if pos + _RECORD.size > len(data):
            j.truncated = True
            break
        rtype, length, ts = _RECORD.unpack_from(data, pos)
        body = data[pos + _RECORD.size : pos + _RECORD.size + length]
        if len(body) < length:
            j.truncated = True
            break
        pos += _RECORD.size + length
        t = chr(rtype)
        if t == "W":
            seq, dev, ino, off, n, old_size, old_len = _W.unpack_from(body)
            old = body[_W.size : _W.size + old_len]
            new = body[_W.size + old_len : _W.size + old_len + n]
            c = Change((index, seq), ts, dev, ino, "write", off, old_size, max(old_size, off + n), old, new)
            by_seq[seq] = c
            j.changes.append(c)
        elif t == "T":
            seq, dev, ino, old_size, new_size, old_len = _T.unpack_from(body)
            old = body[_T.size : _T.size + old_len]
            c = Change((index, seq), ts, dev, ino, "size", 0, old_size, new_size, old, b"")
            by_seq[seq] = c
            j.changes.append(c)
        elif t == "R":
            seq, result = _R.unpack_from(body)
            c = by_seq[seq]
            if result < 0:
                c.failed = True
            elif c.kind == "write":
                c.new = c.new[:result]
                c.new_size = max(c.old_size, c.off + result)
        elif t == "D":
            j.dsync[_D.unpack_from(body)[0]] = ts
        elif t == "S":
            dev, ino, upto = _S.unpack_from(body)
            j.file_syncs.append(((dev, ino), upto, ts))
        elif t == "A":
            dev, upto = _A.unpack_from(body)
            j.all_syncs.append((dev, upto, ts))
        elif t == "N":
            dev, ino = _NX.unpack_from(body)
            j.names[(dev, ino)] = body[_NX.size :].decode(errors="replace")
        elif t == "X":
            dev, ino = _NX.unpack_from(body)
            j.unsupported.append(f"pid {pid}: {body[_NX.size:].decode(errors='replace')} (inode {ino})")
        else:
            raise PowerLossError(f"{path}: unknown record type {rtype} at byte {pos}")
    return j


def _journals(journal_dir: Path) -> list[Journal]:
    """The directory's unapplied journals, oldest process first (names start with the start time)."""
    paths = sorted(p for p in journal_dir.glob("journal-*.bin") if p.is_file())
    return [read_journal(p, i) for i, p in enumerate(paths)]


def _mark_durable(journals: Sequence[Journal], at_ns: int | None) -> None:
    """Set ``Change.durable`` and ``Change.after_cut`` from every journal's markers, for a power cut at ``at_ns``
    (None: after everything). A sync marker in journal k with bound ``upto`` covers the changes ordered before
    (k, upto), so also those of earlier processes; only markers written before the cut count."""
    cut = at_ns if at_ns is not None else 1 << 64
    file_upto: dict[tuple[int, int], tuple[int, int]] = {}
    dev_upto: dict[int, tuple[int, int]] = {}
    for k, j in enumerate(journals):
        for f, upto, ts in j.file_syncs:
            if ts < cut:
                file_upto[f] = max(file_upto.get(f, (-1, 0)), (k, upto))
        for dev, upto, ts in j.all_syncs:
            if ts < cut:
                dev_upto[dev] = max(dev_upto.get(dev, (-1, 0)), (k, upto))
    never = (-1, 0)
    for k, j in enumerate(journals):
        for c in j.changes:
            c.after_cut = c.ts >= cut
            bound = max(file_upto.get(c.file, never), dev_upto.get(0, never), dev_upto.get(c.dev, never))
            dsync_ts = j.dsync.get(c.order[1]) if c.order[0] == k else None
            c.durable = not c.after_cut and (c.order < bound or (dsync_ts is not None and dsync_ts < cut))


def _alive_with_shim(pid: int) -> bool:
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return "shim.so" in maps and stat.rpartition(")")[2].split()[:1] != ["Z"]


# -- the power loss ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FileLoss:
    """What the power loss did to one file: of its ``changes``, ``durable`` ones stay, ``lost`` ones (made before
    the cut, not durable) are undone -- in torn mode only ``lost_pages`` of their pages, ``kept_pages`` survive --
    and ``after_cut`` ones (made after the instant of the cut) are undone."""

    path: str
    changes: int
    durable: int
    lost: int
    lost_pages: int
    kept_pages: int
    after_cut: int = 0


@dataclass(frozen=True, slots=True)
class PowerLossReport:
    data_dir: Path
    mode: Mode
    seed: int | None
    at_ns: int | None
    journals: int
    files: tuple[FileLoss, ...]
    gone: tuple[str, ...] = ()
    """Files with non-durable changes that no longer exist (deleted): nothing to undo."""

    @property
    def lost_changes(self) -> int:
        """Changes made before the cut and lost with it (not counting those made after it)."""
        return sum(f.lost for f in self.files)

    def describe(self) -> str:
        head = f"power loss ({self.mode}" + (f", seed {self.seed}" if self.seed is not None else "")
        head += f", at {self.at_ns} ns)" if self.at_ns is not None else ")"
        lines = [f"{head} of {self.data_dir}: {self.journals} journal(s)"]
        for f in self.files:
            lines.append(
                f"  {f.path}: {f.changes} changes, {f.durable} durable, {f.lost} not"
                + (f" ({f.kept_pages} pages kept, {f.lost_pages} lost)" if self.mode == "torn" else "")
                + (f", {f.after_cut} after the cut" if f.after_cut else "")
            )
        lines.extend(f"  {g}: deleted, nothing to undo" for g in self.gone)
        return "\n".join(lines)


def _pages(off: int, n: int) -> Iterable[tuple[int, int]]:
    """[start, end) file ranges of the 4 KiB pages a write of ``n`` bytes at ``off`` touches."""
    end = off + n
    a = off
    while a < end:
        b = min(end, (a // PAGE_BYTES + 1) * PAGE_BYTES)
        yield a, b
        a = b


def _write_all(fd: int, data: bytes, off: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, off)
        view, off = view[n:], off + n


def _undo(fd: int, c: Change) -> None:
    """Undo ``c``, given that every later change to the file has been undone."""
    if c.failed:
        return
    if c.kind == "write":
        if c.old:
            _write_all(fd, c.old, c.off)
        os.ftruncate(fd, c.old_size)
    else:
        os.ftruncate(fd, c.old_size)
        if c.old:
            _write_all(fd, c.old, c.new_size)


def _redo(fd: int, c: Change, rng: random.Random | None) -> tuple[int, int]:
    """Do ``c`` again -- with ``rng``, only a random subset of its pages. Returns (pages kept, pages lost)."""
    if c.failed:
        return 0, 0
    if c.kind == "size":
        if rng is None or rng.random() < 0.5:
            os.ftruncate(fd, c.new_size)
            return 1, 0
        return 0, 1
    if rng is None:
        _write_all(fd, c.new, c.off)
        return len(list(_pages(c.off, len(c.new)))), 0
    kept = lost = 0
    for a, b in _pages(c.off, len(c.new)):
        if rng.random() < 0.5:
            _write_all(fd, c.new[a - c.off : b - c.off], a)
            kept += 1
        else:
            lost += 1
    return kept, lost


def _inodes(root: Path) -> dict[tuple[int, int], Path]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            try:
                st = p.lstat()
            except OSError:
                continue
            out[(st.st_dev, st.st_ino)] = p
    return out


def power_loss(
    data_dir: Path, journal_dir: Path, mode: Mode = "all", *, seed: int | None = None, at_ns: int | None = None
) -> PowerLossReport:
    """Undo what a power cut would have lost of the writes journaled in ``journal_dir`` to files under
    ``data_dir``, once every process that wrote them is dead (raises PowerLossError otherwise, and for a journal
    that records a write it could not journal). ``"torn"`` needs ``seed``. ``at_ns`` (``time.monotonic_ns()``)
    cuts the power at that earlier instant: what was done from then on is undone too. The journals are moved to
    ``journal_dir/applied`` (kept for post-mortems): a second call changes nothing."""
    if mode == "torn" and seed is None:
        raise ValueError("a torn power loss needs a seed (it is printed on failure to replay the same loss)")
    journals = _journals(journal_dir)
    for j in journals:
        if _alive_with_shim(j.pid):
            raise PowerLossError(f"process {j.pid} (journal {j.path.name}) still runs: kill it first")
    problems = [u for j in journals for u in j.unsupported]
    if problems:
        raise PowerLossError("the shim could not journal some writes, a power loss cannot be simulated:\n  "
                             + "\n  ".join(problems))
    _mark_durable(journals, at_ns)
    rng = random.Random(seed) if mode == "torn" else None
    by_file: dict[tuple[int, int], list[Change]] = {}
    names: dict[tuple[int, int], str] = {}
    for j in journals:
        names.update(j.names)
        for c in j.changes:
            by_file.setdefault(c.file, []).append(c)
    paths = _inodes(data_dir)
    files: list[FileLoss] = []
    gone: list[str] = []
    for f in sorted(by_file, key=lambda f: by_file[f][0].order):
        changes = by_file[f]
        first = next((i for i, c in enumerate(changes) if not c.durable), None)
        n_durable = sum(c.durable for c in changes)
        if first is None:
            continue  # everything durable: the file stays as it is
        path = paths.get(f)
        if path is None:
            gone.append(names.get(f, f"inode {f[1]}"))
            continue
        kept = lost_pages = 0
        fd = os.open(path, os.O_RDWR)
        try:
            for c in reversed(changes[first:]):
                _undo(fd, c)
            for c in changes[first:]:
                if c.durable:
                    _redo(fd, c, None)
                elif c.after_cut:
                    pass
                elif rng is not None:
                    k, lo = _redo(fd, c, rng)
                    kept, lost_pages = kept + k, lost_pages + lo
                elif not c.failed:
                    lost_pages += len(list(_pages(c.off, len(c.new)))) if c.kind == "write" else 1
            os.fsync(fd)  # the state after the "reboot" is what is on disk
        finally:
            os.close(fd)
        n_after = sum(c.after_cut for c in changes)
        lost = len(changes) - n_durable - n_after
        files.append(FileLoss(str(path), len(changes), n_durable, lost, lost_pages, kept, n_after))
    applied = journal_dir / "applied"
    applied.mkdir(exist_ok=True)
    for j in journals:
        j.path.rename(applied / j.path.name)
    return PowerLossReport(data_dir, mode, seed, at_ns, len(journals), tuple(files), tuple(gone))


# -- clusters ---------------------------------------------------------------------------------------------------------
def journal_dir_of(cluster_dir: Path, node_id: int) -> Path:
    """Where node ``node_id``'s journals go: beside the cluster directory (``localcluster.up`` wants a cluster
    directory that holds nothing but what it creates)."""
    return cluster_dir.absolute().parent / f"{cluster_dir.name}-journals" / f"node{node_id}"


def start_cluster(
    cluster_dir: Path,
    shim: Path,
    *,
    nodes: int = 3,
    sync: bool = True,
    tick_ms: int = 50,
    timeout_s: float = 60.0,
    settings: dict[str, int | str | bool] | None = None,
    sync_delay_us: int = 0,
) -> ClusterInfo:
    """A local cluster on free ports with the shim preloaded in every node, tracking the node's data directory
    (``<cluster_dir>/node<i>/data``, the launcher's layout); waits for a leader. ``sync_delay_us``: see
    :func:`preload_env`. Stop it with ``localcluster.down`` (which kills by pid)."""
    env = shutil.which("env")
    if env is None:
        raise ShimUnavailable("no env(1) to start nodes with the shim preloaded")
    d = cluster_dir.absolute()
    prefixes = []
    for i in range(1, nodes + 1):
        variables = preload_env(shim, d / f"node{i}" / "data", journal_dir_of(d, i), sync_delay_us=sync_delay_us)
        prefixes.append([env, *(f"{k}={v}" for k, v in variables.items())])
    return localcluster.up(d, nodes, tick_ms=tick_ms, sync=sync, timeout_s=timeout_s, exec_prefix=prefixes,
                           settings=settings)


def kill_all(cluster_dir: Path, timeout_s: float = 10.0) -> list[int]:
    """SIGKILL every running node at once (by pid, after the launcher checked each pid is that node) and wait
    until all are gone. Returns the pids killed."""
    info = localcluster.load(cluster_dir)
    pids = [n.pid for n in info.nodes if n.running and n.pid is not None]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while any(n.running for n in localcluster.load(cluster_dir).nodes):  # load() also reaps our children
        if time.monotonic() > deadline:
            raise PowerLossError(f"nodes of {cluster_dir} still run {timeout_s:g}s after SIGKILL")
        time.sleep(0.02)
    return pids


def power_loss_cluster(
    cluster_dir: Path, mode: Mode = "all", *, seed: int | None = None, at_ns: int | None = None
) -> list[PowerLossReport]:
    """A power cut of every node at the same moment -- now, or at the earlier instant ``at_ns`` -- after the nodes
    were SIGKILLed (:func:`kill_all`; done here if some still run): undo each node's unsynced writes (each node
    with its own seed derived from ``seed``). Restart them with :func:`restart_all`."""
    kill_all(cluster_dir)
    info = localcluster.load(cluster_dir)
    return [
        power_loss(n.data_dir, journal_dir_of(cluster_dir, n.id), mode,
                   seed=None if seed is None else seed * 1000 + n.id, at_ns=at_ns)
        for n in info.nodes
    ]


def restart_all(cluster_dir: Path, timeout_s: float = 30.0) -> ClusterInfo:
    """Start every node of the stopped cluster again at once, with its data (and the shim, the same way), and wait
    until they agree on a leader. A node that cannot start (damaged data) raises ClusterError with its last log
    line."""
    return localcluster.up(cluster_dir, timeout_s=timeout_s)


def leftover_processes(marker: Path) -> list[str]:
    """Command lines of live processes (not zombies, not this one) that mention ``marker``: our nodes run with their
    config file under it."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[:1]
        except OSError:
            continue
        if str(marker) in cmd and state != ["Z"]:
            out.append(f"{pid}: {cmd}")
    return out
