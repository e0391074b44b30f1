"""Watches with no I/O: the fan-out of the state machine's events to many watchers, as a pure object.

A ``WatchHub`` holds the watchers of one node. The shell publishes, once per applied batch, every event of the
revisions applied since the last publish (``publish``: one pass over the events, not one per watcher); each
watcher matching an event gets it appended to its own bounded buffer, and the shell is told which watchers have
something new (``wake``), then drains them (``take``) onto their streams.

A watcher starts at a revision. At or below the hub's revision it is *unsynced*: the shell replays the history
from the state machine to it (``catch_up``, in chunks) until it reaches the hub's revision, and from then on it is
*synced* and gets live events; every revision is delivered once, in order, with no gap at the hand-over, because
both happen on the one thread that drives the hub. A watch from a future revision (or from now) is synced at once
and its events start at that revision.

Matching is by key: a watcher of one key sits in a dict under that key, a watcher of a prefix in a dict under the
prefix (an event looks up each prefix length in use), any other range in a short list scanned per event. The same
event object (``raftkv.kv.Event``, as the state machine's history gives it) goes to every watcher: nothing is
copied per watcher; whether its previous value is shown is the watcher's option, applied when the shell
serializes it.

A watcher whose buffer would hold more than ``max_events`` events is cancelled (``reason``): a slow consumer never
slows the apply, the hub or the other watchers, and its memory is bounded. It resumes by watching again from the
revision after the last event it received: the history still has them, unless compacted, and then the new watch
says so (``Compacted``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from .kv import Event, EventType

__all__ = ["KeyRange", "WatchHub", "Watcher", "prefix_end"]

PUT = EventType.PUT


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``; b"\\0" (every key from ``prefix`` on)
    when there is none (an empty prefix, or one of 0xff bytes only), as etcd's ``range_end`` convention."""
    p = prefix.rstrip(b"\xff")
    if not p:
        return b"\0"
    return p[:-1] + bytes([p[-1] + 1])


class KeyRange(NamedTuple):
    """The keys ``[key, end)``; ``end`` b"" is the one key ``key``, b"\\0" every key from ``key`` on (etcd's
    convention for ``range_end``)."""

    key: bytes
    end: bytes = b""

    @classmethod
    def prefix(cls, prefix: bytes) -> KeyRange:
        return cls(prefix, prefix_end(prefix))

    def contains(self, k: bytes) -> bool:
        if not self.end:
            return k == self.key
        return k >= self.key and (self.end == b"\0" or k < self.end)

    def as_prefix(self) -> bytes | None:
        """The prefix this range is, if it is one (every key from b"" on is the prefix b"")."""
        if self.end and (prefix_end(self.key) == self.end or (self.key == b"" and self.end == b"\0")):
            return self.key
        return None


class Watcher:
    """One watch. ``next_revision``: while unsynced, the first revision its catch-up has not covered (every event
    below it that it matches was handed to it); once synced, the first revision it takes events from (its start).
    ``cancelled`` with a ``reason`` once it ends (by its client, or for falling behind)."""

    __slots__ = (
        "_events",
        "cancelled",
        "compact_revision",
        "id",
        "next_revision",
        "no_delete",
        "no_put",
        "prev_kv",
        "range",
        "reason",
        "start_revision",
        "synced",
    )

    def __init__(self, wid: int, rng: KeyRange, start_revision: int, no_put: bool, no_delete: bool,
                 prev_kv: bool) -> None:
        self.id = wid
        self.range = rng
        self.start_revision = start_revision
        self.no_put = no_put
        self.no_delete = no_delete
        self.prev_kv = prev_kv
        self.next_revision = start_revision
        self.synced = False
        self.cancelled = False
        self.reason = ""
        self.compact_revision = 0
        """Set when it was cancelled because the history it needed was compacted: the compacted revision."""
        self._events: list[Event] = []

    @property
    def pending(self) -> int:
        """Events buffered, not yet taken."""
        return len(self._events)

    @property
    def buffered(self) -> tuple[Event, ...]:
        """The events buffered, not yet taken (a copy)."""
        return tuple(self._events)

    def __repr__(self) -> str:
        state = "cancelled" if self.cancelled else "synced" if self.synced else "unsynced"
        return f"Watcher({self.id}, {self.range}, next={self.next_revision}, {state}, pending={len(self._events)})"


class WatchHub:
    """The watchers of one node (see the module docstring). ``revision``: every event up to it was published.
    ``wake(watcher)`` is called when a watcher has new events or was cancelled (at most once per publish)."""

    def __init__(self, revision: int, wake: Callable[[Watcher], None], *, max_events: int = 1000) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, got {max_events}")
        self.revision = revision
        self.max_events = max_events
        self._wake = wake
        self._next_id = 1
        self._watchers: dict[int, Watcher] = {}
        self._by_key: dict[bytes, list[Watcher]] = {}
        self._by_prefix: dict[bytes, list[Watcher]] = {}
        self._prefix_lengths: list[int] = []  # the lengths of the prefixes in _by_prefix, ascending
        self._ranges: list[Watcher] = []

    def __len__(self) -> int:
        return len(self._watchers)

    def get(self, wid: int) -> Watcher | None:
        return self._watchers.get(wid)

    # -- watchers ---------------------------------------------------------------------------------------------
    def watch(self, rng: KeyRange, start_revision: int = 0, *, no_put: bool = False, no_delete: bool = False,
              prev_kv: bool = False) -> Watcher:
        """A new watcher of ``rng`` from ``start_revision`` (0: from the next revision). Unsynced if it starts at
        or below ``revision`` (replay its history with ``catch_up``), else synced at once."""
        if start_revision < 0:
            raise ValueError(f"a start revision is not negative, got {start_revision}")
        start = start_revision or self.revision + 1
        w = Watcher(self._next_id, rng, start, no_put, no_delete, prev_kv)
        self._next_id += 1
        self._watchers[w.id] = w
        if start > self.revision:
            self._sync(w)
        return w

    def catch_up(self, w: Watcher, events: Iterable[Event], upto: int) -> bool:
        """Hand an unsynced watcher the history's events of revisions ``[w.next_revision, upto]`` (every one of
        them, in order, as read from the state machine: a chunk read must end at a whole revision; those the
        watcher does not match are skipped here). Once ``upto``
        reaches the hub's revision the watcher is synced; returns whether it is. Beyond its buffer it is
        cancelled, as a slow live watcher is."""
        if w.cancelled or w.synced:
            return w.synced
        if upto < w.next_revision - 1:
            raise ValueError(f"catch_up to {upto}, below what {w!r} has")
        upto = min(upto, self.revision)
        start = w.next_revision
        rng, no_put, no_delete = w.range, w.no_put, w.no_delete
        for ev in events:
            r = ev.revision
            if r < start:
                continue
            if r > upto:
                break
            if (no_put if ev.kind == PUT else no_delete) or not rng.contains(ev.key):
                continue
            w._events.append(ev)
        w.next_revision = upto + 1
        if len(w._events) > self.max_events:
            self._fall_behind(w)
            return False
        if upto >= self.revision:
            self._sync(w)
        if w._events:
            self._wake(w)
        return w.synced

    def watchers(self) -> list[Watcher]:
        return list(self._watchers.values())

    def cancel(self, w: Watcher, reason: str = "", compact_revision: int = 0) -> None:
        """End a watch (its client's or the shell's decision); its buffer is dropped."""
        if w.cancelled:
            return
        w.cancelled = True
        w.reason = reason
        w.compact_revision = compact_revision
        w._events.clear()
        self._watchers.pop(w.id, None)
        if w.synced:
            self._unindex(w)
        self._wake(w)

    def take(self, w: Watcher) -> list[Event]:
        """The watcher's buffered events, oldest first, removed from its buffer."""
        events = w._events
        w._events = []
        return events

    def idle_synced(self) -> list[Watcher]:
        """The synced watchers with nothing buffered: those a progress notification (the hub's revision) tells
        that they are up to date."""
        return [w for w in self._watchers.values() if w.synced and not w._events]

    # -- events -----------------------------------------------------------------------------------------------
    def publish(self, events: Sequence[Event], revision: int) -> None:
        """Every event of the revisions after ``self.revision`` up to ``revision``, in (revision, sub) order, from
        one applied batch: fan them out to the synced watchers, then wake each watcher that got something."""
        if revision < self.revision:
            raise ValueError(f"publish of revision {revision} after {self.revision}")
        touched: dict[int, Watcher] = {}
        by_key, by_prefix, lengths, ranges = self._by_key, self._by_prefix, self._prefix_lengths, self._ranges
        for ev in events:
            key = ev.key
            r = ev.revision
            is_put = ev.kind == PUT
            ws = by_key.get(key)
            if ws is not None:
                for w in ws:
                    if r >= w.next_revision and not (w.no_put if is_put else w.no_delete):
                        w._events.append(ev)
                        touched[w.id] = w
            if lengths:
                n = len(key)
                for length in lengths:
                    if length > n:
                        break
                    ws = by_prefix.get(key[:length])
                    if ws is not None:
                        for w in ws:
                            if r >= w.next_revision and not (w.no_put if is_put else w.no_delete):
                                w._events.append(ev)
                                touched[w.id] = w
            for w in ranges:
                if r >= w.next_revision and not (w.no_put if is_put else w.no_delete) and w.range.contains(key):
                    w._events.append(ev)
                    touched[w.id] = w
        self.revision = revision
        limit = self.max_events
        for w in touched.values():
            if len(w._events) > limit:
                self._fall_behind(w)
            else:
                self._wake(w)

    # -- internals --------------------------------------------------------------------------------------------
    def _fall_behind(self, w: Watcher) -> None:
        self.cancel(w, f"the watcher fell more than {self.max_events} events behind its client; watch again from "
                       f"the revision after the last event received")

    def _sync(self, w: Watcher) -> None:
        w.synced = True
        p = w.range.as_prefix()
        if not w.range.end:
            self._by_key.setdefault(w.range.key, []).append(w)
        elif p is not None:
            ws = self._by_prefix.get(p)
            if ws is None:
                self._by_prefix[p] = [w]
                self._prefix_lengths = sorted({len(k) for k in self._by_prefix})
            else:
                ws.append(w)
        else:
            self._ranges.append(w)

    def _unindex(self, w: Watcher) -> None:
        p = w.range.as_prefix()
        if not w.range.end:
            _remove(self._by_key, w.range.key, w)
        elif p is not None:
            if _remove(self._by_prefix, p, w):
                self._prefix_lengths = sorted({len(k) for k in self._by_prefix})
        else:
            self._ranges.remove(w)


def _remove(index: dict[bytes, list[Watcher]], key: bytes, w: Watcher) -> bool:
    """Take ``w`` out of ``index[key]``; True if that emptied the entry (which is then deleted)."""
    ws = index[key]
    ws.remove(w)
    if not ws:
        del index[key]
        return True
    return False
