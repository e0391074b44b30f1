"""Watches over the real state machine's history, against a model (issue "History, watch and leases": random puts,
deletes, txns and compactions, watches from random revisions).

The state machine (``KVStateMachine``, dict mode) applies random batches; the node's feed (``WatchFeed``) publishes
after each, as the node does after each applied batch; watchers start at random revisions (past, now, future) and
are caught up in chunks; compactions come alone or inside a batch of writes. The model knows only the commands: it
computes each write's revision and event itself.

Checked after every step: every live watcher has exactly the model's events for its range, from its start, up to
what it covers; a start at or below the compacted revision is refused with it; a watcher whose history was compacted
before it caught up (or, synced, while events were not yet published) is cancelled with the compacted revision,
having received a prefix of its slice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from raftkv.errors import Compacted
from raftkv.kv import Compact, Delete, KVStateMachine, Put, Txn, TxnOp, TxnOpType, encode_batch
from raftkv.raft import Entry
from raftkv.watch import KeyRange, Watcher
from raftkv.watchfeed import WatchFeed

KEYS = [b"a", b"ab", b"b", b"ba", b"c"]
Ev = tuple[int, str, bytes, bytes]

ranges = st.one_of(
    st.sampled_from(KEYS).map(KeyRange),
    st.sampled_from([b"", b"a", b"b"]).map(KeyRange.prefix),
    st.tuples(st.sampled_from(KEYS), st.sampled_from([b"b", b"c", b"\0"])).map(lambda t: KeyRange(*t)),
)
write = st.tuples(st.sampled_from(["put", "delete"]), st.sampled_from(KEYS))
command = st.one_of(write.map(lambda w: [w]), st.lists(write, min_size=1, max_size=3))  # one write, or a txn


class _NoStore:
    """Dict mode: the state machine reads its own tables (``txn=None``)."""

    @contextlib.contextmanager
    def read_txn(self) -> Iterator[None]:
        yield None


class FeedModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.fsm = KVStateMachine(None)
        self.feed = WatchFeed(_NoStore(), self.fsm, max_events=1000)
        self.index = 0
        self.rid = 0
        self.current: dict[bytes, bytes] = {}
        self.revision = 0
        self.compacted = 0
        self.history: list[Ev] = []
        self.got: dict[int, list[Ev]] = {}
        self.watchers: list[Watcher] = []

    def _apply(self, cmds: list[object]) -> None:
        self.index += 1
        data = encode_batch(1, 1, cmds)  # type: ignore[arg-type]
        self.fsm.apply(None, [Entry(1, self.index, data=data)])
        self.feed.publish_applied()

    def _write(self, ops: list[tuple[str, bytes]]) -> object:
        """The command for ``ops`` (one write, or a txn of several), and the model's events for it. A put's value
        names its revision and its place in the command, so the model knows it without asking the store."""
        rev = self.revision + 1
        self.rid += 1
        events: list[Ev] = []
        tops = []
        for i, (kind, key) in enumerate(ops):
            value = b"%d.%d" % (rev, i)
            if kind == "put":
                self.current[key] = value
                events.append((rev, "put", key, value))
                tops.append(TxnOp(TxnOpType.PUT, key, value))
            else:
                if key in self.current:
                    del self.current[key]
                    events.append((rev, "delete", key, b""))
                tops.append(TxnOp(TxnOpType.DELETE, key))
        if events:  # a command that changes nothing takes no revision
            self.revision = rev
            self.history.extend(events)
        if len(ops) > 1:
            return Txn(self.rid, 0, 0, (), tuple(tops), ())
        kind, key = ops[0]
        return Put(self.rid, 0, 0, key, b"%d.0" % rev) if kind == "put" else Delete(self.rid, 0, 0, key)

    @rule(cmds=st.lists(command, min_size=1, max_size=3), compact_after=st.booleans())
    def apply_batch(self, cmds: list[list[tuple[str, bytes]]], compact_after: bool) -> None:
        batch = [self._write(ops) for ops in cmds]
        if compact_after and self.revision > self.compacted:
            # In the same entry as writes the feed has not published yet: synced watchers lose those events.
            self.rid += 1
            batch.append(Compact(self.rid, 0, 0, self.revision))
            self.compacted = self.revision
        self._apply(batch)

    @precondition(lambda self: self.revision > self.compacted)
    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        at = data.draw(st.integers(self.compacted + 1, self.revision))
        self.rid += 1
        self._apply([Compact(self.rid, 0, 0, at)])
        self.compacted = at

    @rule(rng=ranges, start=st.integers(0, 40))
    def watch(self, rng: KeyRange, start: int) -> None:
        try:
            w, _ = self.feed.watch(rng, start)
        except Compacted as e:
            assert start and start <= self.compacted and e.compacted_revision == self.compacted
            return
        assert not (start and start <= self.compacted)
        self.watchers.append(w)
        self.got[w.id] = []

    @precondition(lambda self: any(not w.synced and not w.cancelled for w in self.watchers))
    @rule(data=st.data(), chunk=st.integers(1, 4))
    def catch_up(self, data: st.DataObject, chunk: int) -> None:
        w = data.draw(st.sampled_from([w for w in self.watchers if not w.synced and not w.cancelled]))
        self.feed.catch_up(w, revisions=chunk)

    @precondition(lambda self: bool(self.watchers))
    @rule(data=st.data())
    def take(self, data: st.DataObject) -> None:
        w = data.draw(st.sampled_from(self.watchers))
        self.got[w.id].extend((e.revision, "put" if e.kv is not None else "delete", e.key,
                               e.kv.value if e.kv is not None else b"") for e in self.feed.hub.take(w))

    def _slice(self, w: Watcher, upto: int) -> list[Ev]:
        return [e for e in self.history if w.start_revision <= e[0] <= upto and w.range.contains(e[2])]

    @invariant()
    def every_watcher_has_its_slice(self) -> None:
        hub = self.feed.hub
        assert hub.revision == self.revision or not len(hub)
        for w in self.watchers:
            got = self.got[w.id] + [(e.revision, "put" if e.kv is not None else "delete", e.key,
                                     e.kv.value if e.kv is not None else b"") for e in w.buffered]
            if w.cancelled:
                assert w.compact_revision and w.compact_revision <= self.compacted, w
                assert got == self._slice(w, self.revision)[: len(got)], (w, got)
                continue
            covered = hub.revision if w.synced else w.next_revision - 1
            assert got == self._slice(w, covered), (w, got, self._slice(w, covered))


TestFeedModel = FeedModel.TestCase
TestFeedModel.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
