"""A Ready's durable write, on the node's writer thread: the log, the hard state, a snapshot, and the applied entries
in one LMDB transaction with one sync (``ReadyIO.persist``'s contract), then bounded log compaction.

The state machine's results leave through ``on_results`` as the entries are applied, before the transaction's
sync: the entries are committed (durable on a majority), so a crash before this commit only means they are applied
again at restart. Reads are unaffected: they wait for the node's applied index, which moves only once the commit is
visible. A hash mark among the committed entries ends a transaction of its own, so the state right after it can be
hashed (``on_hash_mark``, called right after that commit).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from .kv import Applied, KVStateMachine, decode_conf_change, is_hash_mark
from .raft import EntryType, Ready
from .raft.core import conf_state_after
from .settings import Settings
from .storage import DurableStorageError, LmdbLogStore
from .storage.snapshots import iter_records

__all__ = ["COMPACT_CHUNK", "ReadyWriter", "WriterStats"]

COMPACT_CHUNK = 5_000
"""Most log entries one compaction step deletes (keeps every write transaction short)."""

HISTORY_STEP = 2_000
"""Most history events one idle step of a history compaction examines (``ReadyWriter.history_step``)."""


@dataclass
class WriterStats:
    writes: int = 0
    entries_persisted: int = 0
    compactions: int = 0
    history_steps: int = 0
    """Idle-writer steps of a history compaction (``history_step``); ``apply`` makes bounded steps of its own."""
    write_us: int = 0
    """Total time spent inside store.write on the writer thread, in µs."""
    write_cpu_us: int = 0
    """Of ``write_us``, the writer thread's own CPU time; the rest is waiting (fsync, the GIL)."""


class ReadyWriter:
    """Writes Readys, one at a time, in the order given (one writer thread). Once a write has failed, every later
    one fails too without writing: their entries would follow a gap."""

    def __init__(
        self,
        settings: Settings,
        store: LmdbLogStore,
        fsm: KVStateMachine,
        snapshot_dir: Path,
        *,
        on_results: Callable[[list[Applied]], None],
        on_hash_mark: Callable[[int], None],
    ) -> None:
        self.settings = settings
        self.store = store
        self.fsm = fsm
        self.snapshot_dir = snapshot_dir
        self.on_results = on_results
        self.on_hash_mark = on_hash_mark
        self.stats = WriterStats()
        self.failed: BaseException | None = None
        """The first write that failed (every later one fails with it)."""
        self.history_pending = fsm.compaction_pending()
        """A history compaction's physical removal is under way (a restarted node carries on with it)."""

    def write(self, rd: Ready) -> Any:
        """Carry out ``rd``'s write; returns the state machine's results (a list of ``Applied``) or None."""
        if self.failed is not None:
            raise DurableStorageError(f"an earlier write failed ({self.failed})", str(self.store.path))
        try:
            return self._write_ready(rd)
        except BaseException as e:
            self.failed = e
            raise

    def _write_ready(self, rd: Ready) -> Any:
        ents = rd.committed_entries
        fsm = self.fsm
        on_results = self.on_results
        snap = rd.snapshot
        restore_path = self.snapshot_dir / snap.data.decode() if snap is not None else None
        if restore_path is not None and not restore_path.is_file():
            raise DurableStorageError(f"snapshot file {restore_path} is missing", str(restore_path))

        def apply(txn: Any) -> Any:
            if restore_path is not None:
                # Install the leader's state from the verified file, in the same transaction as the log reset.
                fsm.restore_from(txn, lambda: iter_records(restore_path))
            results = fsm.apply(txn, ents)
            # (If the store retries the transaction after growing its map, results leave again: harmless, apply is
            # deterministic and an answered request is no longer tracked.)
            if results:
                on_results(results)
            return results

        t0 = time.perf_counter_ns()
        c0 = time.thread_time_ns()
        conf = None
        if any(e.type == EntryType.CONF_CHANGE for e in ents):
            # The membership after these entries, stored with them and the applied index (the same pure function
            # the core and the state machine's member table use).
            conf = self.store.conf_state()
            for e in ents:
                if e.type == EntryType.CONF_CHANGE:
                    conf = conf_state_after(conf, decode_conf_change(e.data))
        if snap is not None and conf is None:
            conf = snap.metadata.conf_state
        applied = ents[-1].index if ents else (snap.metadata.index if snap is not None else None)
        marks = [i for i, e in enumerate(ents) if is_hash_mark(e.data)] if ents else []
        if not marks:
            result = self.store.write(
                hard_state=rd.hard_state,
                entries=rd.entries,
                snapshot=snap,
                store_snapshot_data=False,
                applied=applied,
                apply=apply if ents or snap is not None else None,
                conf_state=conf,
                sync=rd.must_sync and self.settings.sync,
            )
        else:
            result = self._write_split(rd, ents, marks, restore_path)
        self._maybe_compact()
        if ents:
            self.history_pending = fsm.compaction_pending()
        st = self.stats
        st.write_us += (time.perf_counter_ns() - t0) // 1000
        st.write_cpu_us += (time.thread_time_ns() - c0) // 1000
        st.writes += 1
        st.entries_persisted += len(rd.entries)
        return result

    def history_step(self, budget: int = HISTORY_STEP) -> bool:
        """One bounded step of a pending history compaction, in a write transaction of its own with no sync (the
        removal changes nothing a read can see; a crash only leaves it to be done again); returns whether more
        remains. For an idle writer: ``apply`` makes steps too, so compaction goes on under writes as without."""
        if self.failed is not None:
            raise DurableStorageError(f"an earlier write failed ({self.failed})", str(self.store.path))
        t0 = time.perf_counter_ns()
        fsm = self.fsm
        more = bool(self.store.write(apply=lambda txn: fsm.compact_step(txn, budget), sync=False))
        self.history_pending = more
        self.stats.history_steps += 1
        self.stats.write_us += (time.perf_counter_ns() - t0) // 1000
        return more

    def _write_split(self, rd: Ready, ents: Sequence[Any], marks: list[int], restore_path: Any) -> list[Applied]:
        """The write of a Ready whose committed entries hold hash marks: one transaction per part, each part ending
        with a mark, so that right after a mark's commit the state is exactly "applied up to the mark" and a read
        transaction opened then (before the next part) hashes it. The first part carries the log entries, the hard
        state and the snapshot; later parts only apply."""
        fsm, store, on_results = self.fsm, self.store, self.on_results
        bounds = [*[m + 1 for m in marks], len(ents)]
        results: list[Applied] = []
        conf = rd.snapshot.metadata.conf_state if rd.snapshot is not None else store.conf_state()
        lo = 0
        for n, hi in enumerate(bounds):
            part = ents[lo:hi]
            if not part and n:
                break
            first = n == 0
            changed = first and rd.snapshot is not None
            for e in part:
                if e.type == EntryType.CONF_CHANGE:
                    conf = conf_state_after(conf, decode_conf_change(e.data))
                    changed = True

            def apply(txn: Any, part: Sequence[Any] = part, first: bool = first) -> Any:
                if first and restore_path is not None:
                    fsm.restore_from(txn, lambda: iter_records(restore_path))
                out = fsm.apply(txn, part)
                if out:
                    on_results(out)
                return out

            out = store.write(
                hard_state=rd.hard_state if first else None,
                entries=rd.entries if first else (),
                snapshot=rd.snapshot if first else None,
                store_snapshot_data=False,
                applied=part[-1].index if part else None,
                apply=apply,
                conf_state=conf if changed else None,
                sync=first and rd.must_sync and self.settings.sync,
            )
            results.extend(cast("list[Applied]", out) or [])
            if n < len(marks):
                self.on_hash_mark(ents[marks[n]].index)
            lo = hi
        return results

    def _maybe_compact(self) -> None:
        """After a write: drop applied log entries beyond the retention, in bounded chunks so no single write
        transaction runs long. The state machine is durable in LMDB, so nothing else is needed: a follower that
        needs dropped entries is sent a snapshot of the state."""
        store = self.store
        s = self.settings
        first = store.first_index()
        upto = store.applied_index() - s.compact_keep_entries
        if upto - first + 1 >= s.compact_after_entries:
            t0 = time.perf_counter_ns()
            store.compact(min(upto, first + COMPACT_CHUNK - 1))
            self.stats.compactions += 1
            self.stats.write_us += (time.perf_counter_ns() - t0) // 1000
