"""The node's side of watches: feeds the ``WatchHub`` (``raftkv.watch``) from the state machine's history.

After each applied batch the node calls ``publish_applied``: one read transaction reads every event after the
hub's revision and the hub fans them out, once for all watchers (nothing is read while there are none). A watch
from a past revision is replayed from the history in chunks of whole revisions (``catch_up``, called by the
watch's stream between its sends) until it reaches the hub's revision and joins the live events. Each watcher has
an ``asyncio.Event`` its stream waits on; the hub sets it when the watcher has news or was cancelled.

Everything here runs on the node's event loop thread; the reads are short LMDB read transactions.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .errors import Compacted
from .kv import KVStateMachine
from .watch import KeyRange, Watcher, WatchHub

__all__ = ["CATCH_UP_REVISIONS", "WatchFeed"]

log = logging.getLogger(__name__)

CATCH_UP_REVISIONS = 1000
"""Revisions of history one ``catch_up`` call replays (then the stream sends what it got)."""


class WatchFeed:
    def __init__(self, store: Any, fsm: KVStateMachine, *, max_events: int = 1000) -> None:
        """``store``: the ``LmdbLogStore`` the state machine lives in (its ``read_txn``); ``max_events``: the most
        events a watcher may have buffered before it is cancelled as too slow."""
        self._store = store
        self._fsm = fsm
        self.hub = WatchHub(0, self._woken, max_events=max_events)
        self._signals: dict[int, asyncio.Event] = {}
        self._prev_kv = 0  # watchers that want previous values (then the live read asks for them)

    def __len__(self) -> int:
        return len(self.hub)

    def watch(self, rng: KeyRange, start_revision: int = 0, *, no_put: bool = False, no_delete: bool = False,
              prev_kv: bool = False) -> tuple[Watcher, asyncio.Event]:
        """Register a watcher; returns it and the event its stream waits on (set: something to send). Raises
        ``Compacted`` if ``start_revision`` is at or below the compacted revision (its events are gone)."""
        hub = self.hub
        fsm = self._fsm
        with self._store.read_txn() as txn:
            if not len(hub):
                hub.revision = fsm.revision(txn=txn)  # the hub follows the history only while it has watchers
            compacted = fsm.compacted(txn=txn)
        if start_revision and start_revision <= compacted:
            raise Compacted(
                f"watch from revision {start_revision}: the history up to revision {compacted} has been compacted; "
                f"read the state at revision {compacted}, then watch from {compacted + 1}", compacted)
        w = hub.watch(rng, start_revision, no_put=no_put, no_delete=no_delete, prev_kv=prev_kv)
        signal = asyncio.Event()
        self._signals[w.id] = signal
        if prev_kv:
            self._prev_kv += 1
        if not w.synced:
            signal.set()  # its stream replays the history first
        return w, signal

    def done(self, w: Watcher) -> None:
        """The watch's stream ended (its client left, or it sent the cancellation): forget the watcher."""
        if not w.cancelled:
            self.hub.cancel(w, "the watch ended")
        if self._signals.pop(w.id, None) is not None and w.prev_kv:
            self._prev_kv -= 1

    def catch_up(self, w: Watcher, revisions: int = CATCH_UP_REVISIONS) -> None:
        """Replay the next ``revisions`` revisions of history to an unsynced watcher (it may then be synced). A
        compaction that removed what it still needs cancels it, saying so."""
        if w.synced or w.cancelled:
            return
        hub = self.hub
        try:
            with self._store.read_txn() as txn:
                upto = min(hub.revision, w.next_revision + revisions - 1)
                events = self._fsm.events(w.next_revision, prev_kv=w.prev_kv, txn=txn)
                hub.catch_up(w, events, upto)
        except Compacted as e:
            self.cancel_compacted(w, e.compacted_revision)

    def cancel_compacted(self, w: Watcher, compacted: int) -> None:
        self.hub.cancel(w, f"compacted: the history up to revision {compacted} is gone; read the state at revision "
                           f"{compacted}, then watch from {compacted + 1}", compacted)

    def publish_applied(self) -> None:
        """After an applied batch: hand the watchers every event since the last publish (one read for all)."""
        hub = self.hub
        if not len(hub):
            return
        fsm = self._fsm
        with self._store.read_txn() as txn:
            rev = fsm.revision(txn=txn)
            if rev <= hub.revision:
                return
            try:
                events = list(fsm.events(hub.revision + 1, prev_kv=self._prev_kv > 0, txn=txn))
            except Compacted as e:
                # A compaction applied in the same batch as writes not yet published: those events are gone, so
                # every synced watcher would miss them. Cancel them with the compacted revision (they resume from
                # the state at it); the unsynced ones learn it when they next catch up.
                for w in [w for w in hub.watchers() if w.synced]:
                    self.cancel_compacted(w, e.compacted_revision)
                hub.revision = rev
                return
        hub.publish(events, rev)

    def cancel_all(self, reason: str) -> None:
        """End every watch (the node stops, or may serve nothing more)."""
        for w in self.hub.watchers():
            self.hub.cancel(w, reason)

    def _woken(self, w: Watcher) -> None:
        signal = self._signals.get(w.id)
        if signal is not None:
            signal.set()
