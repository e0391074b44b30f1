"""Siblings against a model that knows nothing of clocks.

The model gives every write a global sequence number ("time") and keeps, per key, the values currently held, each
tagged with the time it was written. A read returns those values and remembers its time. The rules, stated in
those terms only:

* a sibling put whose writer read at time ``t`` replaces exactly the values written at or before ``t`` (the ones
  the writer could have seen) and keeps the others beside the new value, newest first; on a missing key it creates
  the key with the new value alone;
* a plain put or incr replaces every value; a delete removes the key;
* a put conditioned on the clock read at ``t`` holds exactly when nothing wrote the key since ``t``, or when the
  key was missing then and is missing now (the empty clock means "does not exist", as ``if_absent`` does).

The state machine implements these with vector clocks whose counters are revisions and per-value dots; the
hypothesis state machine below checks, after every step, that the two agree, over random interleavings of
readers and writers on three proposing nodes, deletes and re-creations included.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from raftkv.kv import (
    CmpOp,
    Condition,
    ConditionFailedResult,
    Delete,
    ErrorResult,
    KeyValue,
    KVStateMachine,
    Ordering,
    Put,
    PutResult,
    SiblingPut,
    Target,
    VectorClock,
    compare,
    encode_batch,
)
from raftkv.raft.types import Entry

KEYS = st.sampled_from([b"a", b"b"])
NODES = st.integers(1, 3)
MAX_SIBLINGS = 6


@dataclass(frozen=True)
class Read:
    key: bytes
    at: int  # the model's time of the read
    clock: VectorClock  # what the state machine returned
    values: tuple[bytes, ...]


@dataclass
class ModelKey:
    values: list[tuple[int, bytes]] = field(default_factory=list)  # (time written, value), newest first
    changed_at: int = 0  # the time of the last write of any kind (put, sibling put, delete)


class SiblingMachine(RuleBasedStateMachine):
    reads = Bundle("reads")

    @initialize()
    def start(self) -> None:
        self.fsm = KVStateMachine(max_siblings=MAX_SIBLINGS)
        self.index = 0
        self.time = 0
        self.model: dict[bytes, ModelKey] = {}
        self.value_seq = 0

    # -- helpers ------------------------------------------------------------------------------------------------
    def apply(self, cmd: Put | SiblingPut | Delete, proposer: int) -> object:
        self.index += 1
        data = encode_batch(proposer, self.index, [cmd])
        (a,) = self.fsm.apply(None, [Entry(1, self.index, 0, data)])
        return a.result

    def fresh_value(self) -> bytes:
        self.value_seq += 1
        return b"v%d" % self.value_seq

    def held(self, key: bytes) -> ModelKey | None:
        m = self.model.get(key)
        return m if m is not None and m.values else None

    # -- rules ----------------------------------------------------------------------------------------------------
    @rule(target=reads, key=KEYS)
    def read(self, key: bytes) -> Read:
        kv = self.fsm.get(key)
        values = () if kv is None else (kv.value, *(s.value for s in kv.siblings))
        return Read(key, self.time, VectorClock() if kv is None else kv.vclock, values)

    @rule(key=KEYS, node=NODES)
    def put(self, key: bytes, node: int) -> None:
        value = self.fresh_value()
        assert isinstance(self.apply(Put(0, 0, 0, key, value), node), PutResult)
        self.time += 1
        self.model[key] = ModelKey([(self.time, value)], self.time)

    @rule(key=KEYS)
    def delete(self, key: bytes) -> None:
        self.apply(Delete(0, 0, 0, key), 1)
        if self.held(key) is not None:
            self.time += 1
            self.model[key] = ModelKey([], self.time)

    @rule(r=reads, node=NODES)
    def sibling_put(self, r: Read, node: int) -> None:
        value = self.fresh_value()
        result = self.apply(SiblingPut(0, 0, 0, r.key, value, r.clock), node)
        m = self.held(r.key)
        keep = [] if m is None else [(t, v) for t, v in m.values if t > r.at]
        if len(keep) + 1 > MAX_SIBLINGS:
            assert isinstance(result, ErrorResult), result
            return
        assert isinstance(result, PutResult), result
        self.time += 1
        self.model[r.key] = ModelKey([(self.time, value), *keep], self.time)

    @rule(r=reads, node=NODES)
    def conditional_put(self, r: Read, node: int) -> None:
        value = self.fresh_value()
        cond = Condition(r.key, Target.VCLOCK, CmpOp.EQ, r.clock)
        result = self.apply(Put(0, 0, 0, r.key, value, (cond,)), node)
        m = self.model.get(r.key)
        unchanged = m is None or m.changed_at <= r.at or (not r.values and self.held(r.key) is None)
        if unchanged:
            assert isinstance(result, PutResult), result
            self.time += 1
            self.model[r.key] = ModelKey([(self.time, value)], self.time)
        else:
            assert isinstance(result, ConditionFailedResult), result

    @rule(r=reads)
    def an_old_read_never_ranks_after_the_current_clock(self, r: Read) -> None:
        kv = self.fsm.get(r.key)
        now = VectorClock() if kv is None else kv.vclock
        m = self.model.get(r.key)
        changed = m is not None and m.changed_at > r.at
        order = compare(r.clock, now)
        if changed and kv is not None:
            assert order in (Ordering.BEFORE, Ordering.CONCURRENT), (r, kv)
        if not changed:
            assert order == Ordering.EQUAL, (r, kv)

    # -- the agreement ----------------------------------------------------------------------------------------------
    @invariant()
    def values_agree_with_the_model(self) -> None:
        if not hasattr(self, "fsm"):
            return
        for key in (b"a", b"b"):
            kv: KeyValue | None = self.fsm.get(key)
            m = self.held(key)
            want = () if m is None else tuple(v for _, v in m.values)
            got = () if kv is None else (kv.value, *(s.value for s in kv.siblings))
            assert got == want, (key, got, want)
            if kv is not None:
                # The key's clock covers every value it holds (so a get's clock resolves them all).
                assert all(kv.vclock.covers(s.node, s.revision) for s in kv.siblings)
                assert kv.vclock.covers(next(n for n, c in kv.vclock if c == kv.mod_revision), kv.mod_revision)


TestSiblings = SiblingMachine.TestCase
TestSiblings.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
