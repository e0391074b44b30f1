"""The watch hub (``raftkv.watch``) against a model: the history is a list of events, and a watcher's events are
the slice of it it asked for. Watchers of keys, prefixes, ranges and from-keys, with filters, start at random
revisions (in the past, now, in the future); the history grows in batches; unsynced watchers are caught up in
chunks between batches; clients take their events at random moments; small buffers make slow watchers fall behind.

Guarantee checked after every step: every live watcher has received exactly the model's events for its range and
filters, from its start revision up to what it covers (the hub's revision once synced), in order, each once; a
cancelled one received a prefix of that and says why."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from raftkv.kv import Event, EventType, KeyValue
from raftkv.kv.vclock import EMPTY_CLOCK
from raftkv.watch import KeyRange, Watcher, WatchHub, prefix_end

PUT, DELETE = EventType.PUT, EventType.DELETE

KEYS = [b"", b"a", b"ab", b"abc", b"b", b"ba", b"\xff", b"\xff\xff", b"c"]

ranges = st.one_of(
    st.sampled_from(KEYS).map(KeyRange),  # one key
    st.sampled_from(KEYS).map(KeyRange.prefix),
    st.tuples(st.sampled_from(KEYS), st.sampled_from(KEYS)).map(lambda t: KeyRange(t[0], t[1] or b"\0")),
)


def test_prefix_end_follows_etcds_convention() -> None:
    assert prefix_end(b"a") == b"b"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"") == b"\0"
    assert prefix_end(b"\xff\xff") == b"\0"
    assert KeyRange.prefix(b"ab").contains(b"abz") and not KeyRange.prefix(b"ab").contains(b"b")
    assert KeyRange(b"a", b"\0").contains(b"zzz") and not KeyRange(b"a", b"\0").contains(b"")
    assert KeyRange(b"").contains(b"") and not KeyRange(b"").contains(b"a")


class HubModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.history: list[Event] = []
        self.woken: set[int] = set()
        self.received: dict[int, list[Event]] = {}
        self.watchers: list[Watcher] = []

    @initialize(start=st.integers(0, 3), max_events=st.sampled_from([2, 5, 1000]))
    def start(self, start: int, max_events: int) -> None:
        # The store may hold revisions before the hub starts (a node restarts): its history begins there.
        self.hub = WatchHub(0, self._wake, max_events=max_events)
        for _ in range(start):
            self._grow(1, 1)

    def _wake(self, w: Watcher) -> None:
        self.woken.add(w.id)

    def _grow(self, revisions: int, subs: int) -> list[Event]:
        batch = []
        rev = self.hub.revision
        for r in range(rev + 1, rev + 1 + revisions):
            for sub in range(subs):
                key = KEYS[(r * 7 + sub * 3) % len(KEYS)]
                kind = DELETE if (r + sub) % 4 == 0 else PUT
                kv = None if kind == DELETE else KeyValue(key, b"v%d" % r, r, r, 1, EMPTY_CLOCK)
                batch.append(Event(r, sub, kind, key, kv))
        self.history.extend(batch)
        self.hub.publish(batch, rev + revisions)
        return batch

    @rule(revisions=st.integers(0, 3), subs=st.integers(1, 3))
    def publish(self, revisions: int, subs: int) -> None:
        self._grow(revisions, subs)

    @rule(rng=ranges, start=st.integers(0, 30), no_put=st.booleans(), no_delete=st.booleans())
    def watch(self, rng: KeyRange, start: int, no_put: bool, no_delete: bool) -> None:
        w = self.hub.watch(rng, start, no_put=no_put, no_delete=no_delete)
        assert w.synced == (w.start_revision > self.hub.revision)
        self.watchers.append(w)
        self.received[w.id] = []

    @precondition(lambda self: any(not w.synced and not w.cancelled for w in self.watchers))
    @rule(data=st.data())
    def catch_up(self, data: st.DataObject) -> None:
        w = data.draw(st.sampled_from([w for w in self.watchers if not w.synced and not w.cancelled]))
        upto = data.draw(st.integers(w.next_revision - 1, self.hub.revision))
        chunk = [e for e in self.history if w.next_revision <= e.revision <= upto]  # read from the history
        synced = self.hub.catch_up(w, chunk, upto)
        assert synced == (not w.cancelled and upto >= self.hub.revision)

    @precondition(lambda self: bool(self.watchers))
    @rule(data=st.data())
    def take(self, data: st.DataObject) -> None:
        w = data.draw(st.sampled_from(self.watchers))
        self.received[w.id].extend(self.hub.take(w))

    @precondition(lambda self: any(not w.cancelled for w in self.watchers))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        w = data.draw(st.sampled_from([w for w in self.watchers if not w.cancelled]))
        self.hub.cancel(w, "client")
        assert w.cancelled and w.reason == "client" and self.hub.get(w.id) is None

    def _expected(self, w: Watcher, upto: int) -> list[Event]:
        return [e for e in self.history
                if w.start_revision <= e.revision <= upto and w.range.contains(e.key)
                and not (w.no_put if e.kind == PUT else w.no_delete)]

    @invariant()
    def every_watcher_has_exactly_its_slice(self) -> None:
        for w in self.watchers:
            got = self.received[w.id] + list(w.buffered)
            if w.cancelled:
                # Events handed out before it ended are a prefix of its slice; it was told why.
                assert w.reason, w
                assert got == self._expected(w, self.hub.revision)[: len(got)], w
                continue
            covered = self.hub.revision if w.synced else w.next_revision - 1
            assert got == self._expected(w, covered), (w, got)
            assert w.pending <= self.hub.max_events

    @invariant()
    def the_woken_have_news(self) -> None:
        for w in self.watchers:
            if w.pending:
                assert w.id in self.woken, w


TestHub = HubModel.TestCase
TestHub.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)


def test_one_publish_reaches_key_prefix_and_range_watchers_with_the_same_event_object() -> None:
    woken: list[int] = []
    hub = WatchHub(10, lambda w: woken.append(w.id))
    one, pre, rng, other = (hub.watch(KeyRange(b"ab")), hub.watch(KeyRange.prefix(b"a")),
                            hub.watch(KeyRange(b"aa", b"b")), hub.watch(KeyRange(b"b")))
    ev = Event(11, 0, PUT, b"ab", None)
    hub.publish([ev], 11)
    assert [hub.take(w) for w in (one, pre, rng, other)] == [[ev], [ev], [ev], []]
    assert hub.take(one) == [] and sorted(woken) == sorted([one.id, pre.id, rng.id])
    assert all(w.synced for w in (one, pre, rng, other))


def test_a_slow_watcher_is_cancelled_with_a_reason_and_the_others_go_on() -> None:
    hub = WatchHub(0, lambda w: None, max_events=3)
    slow, fast = hub.watch(KeyRange.prefix(b"")), hub.watch(KeyRange.prefix(b""))
    for r in range(1, 6):
        hub.publish([Event(r, 0, PUT, b"k", None)], r)
        assert len(hub.take(fast)) == 1
    assert slow.cancelled and "fell more than 3 events behind" in slow.reason and slow.pending == 0
    assert not fast.cancelled and len(hub) == 1
