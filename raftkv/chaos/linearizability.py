"""Linearizability checking of key-value histories (see :mod:`raftkv.chaos.history` for the model).

A history is linearizable if every acknowledged (``"ok"``) operation, plus any subset of the ``"unknown"`` ones, can be
put in one sequential order that (1) respects real time — if ``a`` completed before ``b`` was invoked
(``a.complete_ts < b.invoke_ts``; equal timestamps count as concurrent), ``a`` comes first — and (2) replays through
the sequential key-value model with exactly the results the clients saw (unknown operations may produce any result).
``"fail"`` operations and unknown reads have no effect and are dropped first.

The search is Wing & Gong's ("Testing and verifying concurrent objects", J. Parallel Distrib. Comput., 1993) with
Lowe's improvements ("Testing for linearizability", Concurrency and Computation: Practice and Experience, 2017):

* Linearizability is local (P-compositional): every operation touches one key and keys are independent registers, so
  the history is split per key and each key is checked on its own.
* Just-in-time linearization: the invocation and completion events of a key are kept in time order in a doubly linked
  list. Scanning from the front, every invocation met before the first remaining completion belongs to an operation
  that may take effect next; the search tries them in turn, and linearizing one removes its two events from the list
  (dancing links, so undoing is O(1)). Meeting a completion means the operation it belongs to should have been
  linearized by now, so the search backtracks. It is an explicit stack, not recursion.
* Memoisation: a configuration is the set of linearized operations (an ``int`` bitset) with the model state (the
  key's value). A configuration already explored is not explored again.

Unknown operations have no completion event (it would be at +infinity, after every acknowledged one), so they never
force backtracking and the search succeeds as soon as every acknowledged operation is linearized. They live in a
second list and are tried only at a dead end, once no acknowledged candidate works: most never took effect or were
overwritten unobserved, and need not be placed at all.

On top of that, reductions that keep the search exact (each argued where it is implemented):

* A configuration is also dominated by one with the same acknowledged set and state that linearized a subset of its
  unknown operations (an unknown operation may simply not happen), so the cache prunes those too.
* A read-only candidate that fits the current state (a get, a cas that returned ``False``) is linearized at once
  and nothing else is tried there: moving a read earlier never hurts.
* Identical unknown operations are interchangeable, so they are used in invocation order only; an unknown put or
  delete is never directly followed by another put or delete; unknown writes of values nothing could observe are
  dropped up front.
* A configuration is abandoned as soon as some remaining operation needs a value (a get's result, a successful
  cas's expected value) that the key does not hold and no remaining operation can write.
* Before searching, a linear-time pass looks for reads that no write can explain once real-time order is taken into
  account (stale, lost and phantom reads), to report those at once with a clear message.

Checking linearizability is NP-complete in general; the search is exponential in the number of operations that
overlap in time on one key. Histories whose writes use distinct values, and keys shared by a moderate number of
clients, check fastest. ``time_limit_s`` turns a runaway search into ``ok=None``.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from collections.abc import Container, Iterable
from dataclasses import dataclass

from raftkv.chaos.history import Op, parse_counter, show_key, show_value

__all__ = ["CheckResult", "KeyResult", "check"]

_PUT, _GET, _DELETE, _CAS, _INCR = range(5)
_KIND_CODE = {"put": _PUT, "get": _GET, "delete": _DELETE, "cas": _CAS, "incr": _INCR}

# Search phases.
_FRESH = 0  # just reached a new configuration: look for a forced move
_KNOWN = 1  # scanning the known ops' events from ``entry``
_UNKNOWN = 2  # at a dead end of the known ops: scanning the unknown ops from ``uentry``
_BACKTRACK = 3  # this configuration is exhausted
# How a stack frame's op was chosen.
_TRIED = 0  # a known op, one of several candidates
_FORCED = 1  # a read-only known op that fitted, the only move tried
_UNKNOWN_OP = 2  # an unknown op
# (event node, how it was chosen, and from before it: state, barrier node, candidates, next candidate index)
_Frame = tuple[int, int, bytes | None, int, list[int], int]

_NOTHING = object()  # "no value" where None means "absent"

_TIME_CHECK_EVERY = 1024  # search steps between deadline checks
_SHOW_CANDIDATES = 6
_SHOW_PREFIX = 3


@dataclass(frozen=True, slots=True)
class KeyResult:
    """The verdict for one key.

    ``ok`` is ``None`` if the search gave up on the time limit. ``ops`` counts the operations checked (failed ops and
    unknown reads are dropped), ``unknown`` how many of them have an unknown outcome. When ``ok`` is true,
    ``linearization`` is a witness: op ids in a valid order (unknown ops left out did not take effect). When it is
    false, ``explanation`` names the operation that could not be linearized and the longest valid prefix found.
    ``states`` is the number of search configurations explored."""

    key: bytes
    ok: bool | None
    ops: int
    unknown: int
    explanation: str | None = None
    linearization: tuple[int, ...] | None = None
    states: int = 0


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict for a whole history: ``ok`` is false if any key is not linearizable, ``None`` if none is known to
    fail but the search gave up on some key, true otherwise. ``explanation`` summarises the failing (or unchecked)
    keys, one line each."""

    ok: bool | None
    per_key: dict[bytes, KeyResult]
    explanation: str | None = None

    @property
    def failed_keys(self) -> list[bytes]:
        return [k for k, r in self.per_key.items() if r.ok is False]


def check(ops: Iterable[Op], *, time_limit_s: float | None = 30.0, refute_first: bool = True) -> CheckResult:
    """Decide whether the history ``ops`` is linearizable, key by key.

    ``time_limit_s`` bounds the whole check (``None``: no limit); keys not settled in time get ``ok=None``.
    ``refute_first=False`` skips the quick test for stale and phantom reads and leaves everything to the search
    (the verdict is the same; for testing the search). Raises ``ValueError`` if two ops share an id."""
    deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
    by_key: dict[bytes, list[Op]] = defaultdict(list)
    seen: set[int] = set()
    for op in ops:
        if op.id in seen:
            raise ValueError(f"duplicate op id {op.id}")
        seen.add(op.id)
        group = by_key[op.key]
        if op.status == "fail" or (op.status == "unknown" and op.kind == "get"):
            continue  # no effect on anything
        group.append(op)

    per_key: dict[bytes, KeyResult] = {}
    for key in sorted(by_key):
        group = by_key[key]
        if deadline is not None and time.monotonic() > deadline:
            n_unknown = sum(op.status != "ok" for op in group)
            per_key[key] = KeyResult(key, None, len(group), n_unknown, "not checked: time limit reached")
        else:
            per_key[key] = _check_key(key, group, deadline, refute_first)

    failing = [r for r in per_key.values() if r.ok is False]
    undecided = [r for r in per_key.values() if r.ok is None]
    if failing:
        ok: bool | None = False
        lines = [f"key {show_key(r.key)}: {r.explanation}" for r in failing]
    elif undecided:
        ok = None
        lines = [f"key {show_key(r.key)}: {r.explanation}" for r in undecided]
    else:
        ok = True
        lines = []
    return CheckResult(ok, per_key, "\n".join(lines) if lines else None)


def _apply(
    kind: int, value: bytes | None, expected: bytes | None, delta: int, result: object, known: bool, state: bytes | None
) -> tuple[bool, bytes | None]:
    """One step of the sequential model: (whether the op can take effect here with its result, the new state).

    ``known`` is false for unknown ops, whose result is unconstrained; an unknown incr on a non-integer is refused
    by the store, i.e. it has no effect."""
    if kind == _GET:
        return (not known or state == result), state
    if kind == _PUT:
        return True, value
    if kind == _DELETE:
        return True, None
    if kind == _CAS:
        if state == expected:
            return (not known or result is True), value
        return (not known or result is False), state
    cur = parse_counter(state)
    if cur is None:
        return not known, state
    new = cur + delta
    if known and result != new:
        return False, state
    return True, str(new).encode("ascii")


def _relevant_unknowns(known: list[Op], unknown: list[Op]) -> list[Op]:
    """The unknown ops minus writes that nothing could observe.

    An unknown put/delete/cas that writes a value ``v`` which no get returned, no cas compares with and no incr could
    count from, on a key where no cas was answered ``False``, can be left out of any linearization: the ops after it
    see the same results without it. Histories whose puts write unique values lose most of their unknown writes."""
    if any(op.kind == "cas" and op.result is False for op in known):
        return unknown
    read = {op.result for op in known if op.kind == "get"}
    has_incr = any(op.kind == "incr" for op in known) or any(op.kind == "incr" for op in unknown)
    ops = unknown
    while True:
        compared = {op.expected for op in known if op.kind == "cas"} | {op.expected for op in ops if op.kind == "cas"}
        observed = read | compared
        kept = [op for op in ops if op.kind == "incr" or _observable(op, observed, has_incr)]
        if len(kept) == len(ops):
            return kept
        ops = kept


def _observable(write: Op, observed: Container[object], has_incr: bool) -> bool:
    v = None if write.kind == "delete" else write.value
    return v in observed or (has_incr and parse_counter(v) is not None)


def _refute(known: list[Op], unknown: list[Op]) -> str | None:
    """A quick proof that the key is not linearizable, for the common anomalies (stale, lost or phantom reads).

    A get that returned ``v`` (or a cas that succeeded expecting ``v``) needs the last write before it to have written
    ``v``. Take the write of ``v`` that could come latest: the one completing last among those invoked before the
    reader completes (an unknown write, which may take effect at any time, or the initial absence for ``None``). If
    an acknowledged write of something else was invoked after it completed and completed before the reader was
    invoked, it sits between them in every linearization, and no other write of ``v`` can come later: the reader
    cannot be linearized. This is only a shortcut, for a clear message and to spare the search from exploring the
    whole prefix before it; the search finds the same answer (and every other one)."""
    inf = 1 << 63
    # Acknowledged ops that definitely write: (invoke, complete, value written).
    writes: list[tuple[int, int, bytes | None, Op]] = []
    for op in known:
        assert op.complete_ts is not None
        if op.kind == "put" or (op.kind == "cas" and op.result is True):
            writes.append((op.invoke_ts, op.complete_ts, op.value, op))
        elif op.kind == "delete":
            writes.append((op.invoke_ts, op.complete_ts, None, op))
        elif op.kind == "incr":
            writes.append((op.invoke_ts, op.complete_ts, str(op.result).encode("ascii"), op))
    # Per written value, the writers ordered by invocation with a running "latest completion".
    producers: dict[bytes | None, tuple[list[int], list[tuple[int, Op | None]]]] = {}
    tagged: list[tuple[int, int, bytes | None, Op | None]] = [*writes, (-inf, -inf, None, None)]  # + initial absence
    for op in unknown:
        if op.kind in ("put", "cas", "delete"):
            tagged.append((op.invoke_ts, inf, None if op.kind == "delete" else op.value, op))
    counters_from_unknown = min((op.invoke_ts for op in unknown if op.kind == "incr"), default=inf)
    for inv, comp, v, writer in sorted(tagged, key=lambda t: t[0]):
        invokes, latest = producers.setdefault(v, ([], []))
        prev = latest[-1] if latest else (-inf - 1, None)
        invokes.append(inv)
        latest.append((comp, writer) if comp > prev[0] else prev)
    # Suffix minima over the writes ordered by invocation: the two earliest completions with different values.
    writes.sort(key=lambda w: w[0])
    w_invokes = [w[0] for w in writes]
    first: list[tuple[int, bytes | None, Op | None]] = [(inf, None, None)] * (len(writes) + 1)
    second: list[tuple[int, Op | None]] = [(inf, None)] * (len(writes) + 1)
    for k in range(len(writes) - 1, -1, -1):
        _, comp, v, op = writes[k]
        f, s2 = first[k + 1], second[k + 1]
        if comp < f[0]:
            first[k] = (comp, v, op)
            second[k] = (f[0], f[2]) if f[1] != v else s2
        else:
            first[k] = f
            second[k] = (comp, op) if v != f[1] and comp < s2[0] else s2

    for reader in known:
        want: bytes | None
        if reader.kind == "get":
            read = reader.result
            assert read is None or isinstance(read, bytes)
            want = read
        elif reader.kind == "cas" and reader.result is True and reader.expected != reader.value:
            want = reader.expected
        else:
            continue
        assert reader.complete_ts is not None
        if counters_from_unknown <= reader.complete_ts and want is not None and _canonical_counter(want):
            continue  # an unknown incr might have written it
        entry = producers.get(want)
        best: tuple[int, Op | None] | None = None
        if entry is not None:
            k = bisect.bisect_right(entry[0], reader.complete_ts)  # writers not invoked after the reader completes
            if k:
                best = entry[1][k - 1]
        if best is None:
            return f"{reader.describe()} cannot be linearized: nothing writes {show_value(want)} before it completes"
        if best[0] >= reader.invoke_ts:
            continue  # that write may take effect right before the reader
        k = bisect.bisect_right(w_invokes, best[0])  # writes invoked after that one completed
        comp, wv, wop = first[k]
        if wv == want:
            comp, wop = second[k]
        if comp < reader.invoke_ts:
            assert wop is not None
            source = "the initial state" if best[1] is None else best[1].describe()
            last = "the key can last be absent" if want is None else f"{show_value(want)} can last be written"
            return (
                f"{reader.describe()} cannot be linearized: {wop.describe()} must take effect after {last} before "
                f"it ({source}) and before it is invoked"
            )
    return None


def _check_key(key: bytes, ops: list[Op], deadline: float | None, refute_first: bool) -> KeyResult:
    known = [op for op in ops if op.status == "ok"]
    unknown = _relevant_unknowns(known, [op for op in ops if op.status != "ok"])
    n, m = len(known), len(unknown)
    if n == 0:
        return KeyResult(key, True, len(ops), m, linearization=())
    refutation = _refute(known, unknown) if refute_first else None
    if refutation is not None:
        return KeyResult(key, False, len(ops), m, refutation)

    # Events in time order; at equal timestamps invocations come first (treated as concurrent).
    # Known op i has call node 2i+1 and return node 2i+2 in the main list; unknown op j has node j+1 in the other.
    order: list[tuple[int, int, int, int, int]] = []  # (time, 0=call/1=return, op id, list, node)
    for i, op in enumerate(known):
        assert op.complete_ts is not None
        order.append((op.invoke_ts, 0, op.id, 0, 2 * i + 1))
        order.append((op.complete_ts, 1, op.id, 0, 2 * i + 2))
    for j, op in enumerate(unknown):
        order.append((op.invoke_ts, 0, op.id, 1, j + 1))
    order.sort()

    tail = 2 * n + 1
    nxt = [0] * (tail + 1)
    prv = [0] * (tail + 1)
    rank = [0] * (tail + 1)
    utail = m + 1
    unxt = [0] * (utail + 1)
    uprv = [0] * (utail + 1)
    urank = [0] * (utail + 1)
    last, ulast = 0, 0
    for r, (_, _, _, which, node) in enumerate(order, 1):
        if which == 0:
            rank[node] = r
            nxt[last], prv[node], last = node, last, node
        else:
            urank[node] = r
            unxt[ulast], uprv[node], ulast = node, ulast, node
    nxt[last], prv[tail], rank[tail] = tail, last, len(order) + 1
    unxt[ulast], uprv[utail], urank[utail] = utail, ulast, len(order) + 1

    kspec = [(_KIND_CODE[op.kind], op.value, op.expected, op.delta, op.result) for op in known]
    uspec = [(_KIND_CODE[op.kind], op.value, op.expected, op.delta) for op in unknown]
    kblind = [op.kind in ("put", "delete") for op in known]
    ublind = [op.kind in ("put", "delete") for op in unknown]
    # Known ops that change nothing in any state where they fit.
    readonly = [
        op.kind == "get" or (op.kind == "cas" and (op.result is False or op.expected == op.value)) for op in known
    ]
    # Identical unknown ops are interchangeable, so they are linearized in invocation order (symmetry reduction):
    # upred[j] is the previous unknown op with the same effect, which must be linearized before op j may be.
    upred = [-1] * m
    last_same: dict[tuple[int, bytes | None, bytes | None, int], int] = {}
    node = unxt[0]
    while node != utail:
        upred[node - 1] = last_same.get(uspec[node - 1], -1)
        last_same[uspec[node - 1]] = node - 1
        node = unxt[node]

    # Which candidate to try first: the one whose interval is centred earliest, a guess at where its linearization
    # point is likely to be.
    priority = [op.invoke_ts + (op.complete_ts or 0) for op in known]
    supply = _Supply(known, unknown)

    state: bytes | None = None
    okbits = 0  # linearized known ops
    ubits = 0  # linearized unknown ops
    remaining = n
    # (known-set, state) -> the unknown-sets explored with it; a superset of one of those is dominated.
    cache: dict[tuple[int, bytes | None], list[int]] = {(0, None): [0]}
    stack: list[_Frame] = []
    steps = 0
    explored = 1  # configurations
    best_depth = -1
    best: _DeadEnd | None = None  # the dead end with the longest linearized prefix

    # Whether the last step was an unknown put/delete. Then the next step must not be a put/delete: the unknown write
    # would be lost unobserved, and the search already tries the same thing without it.
    after_blind = False
    phase = _FRESH
    cands: list[int] = []  # the known ops that may go next, in the order they are tried
    ci = 0  # the next of them to try
    uentry = barrier = 0
    while True:
        steps += 1
        if deadline is not None and steps % _TIME_CHECK_EVERY == 0 and time.monotonic() > deadline:
            explanation = f"gave up on the time limit after {explored} configurations"
            if best is not None:
                explanation += "; " + _explain(best_depth, n, best, definite=False)
            return KeyResult(key, None, len(ops), m, explanation, states=explored)

        if phase == _FRESH:
            if supply.doomed(state):
                if n - remaining > best_depth:
                    best_depth = n - remaining
                    best = _snapshot(state, stack, known, unknown, nxt, unxt, urank, rank, supply)
                phase = _BACKTRACK
                continue
            # A new configuration: the candidates are the ops invoked before the first remaining completion.
            # A read-only candidate (a get, a cas that failed) that fits can always go first: if any order works
            # from here, the one with it moved to the front does. So it is the only move tried (partial-order
            # reduction). Otherwise all candidates are tried, in order of their priority.
            node = nxt[0]
            cands = []
            forced = -1
            while node & 1:
                i = node >> 1
                if readonly[i]:
                    kind, value, expected, delta, result = kspec[i]
                    fits, new_state = _apply(kind, value, expected, delta, result, True, state)
                    if fits:
                        forced = i
                        break
                cands.append(i)
                node = nxt[node]
            if forced < 0:
                barrier = node
                if len(cands) > 1:
                    cands.sort(key=priority.__getitem__)
                ci = 0
                phase = _KNOWN
                continue
            i = forced
            mode = _FORCED
        elif phase == _KNOWN:
            if ci == len(cands):
                # The op completing at ``barrier`` had to be linearized by now. Try the unknown ops, then backtrack.
                depth = n - remaining
                if depth > best_depth:
                    best_depth = depth
                    best = _snapshot(state, stack, known, unknown, nxt, unxt, urank, rank, supply)
                phase = _UNKNOWN
                uentry = unxt[0]
                continue
            i = cands[ci]
            ci += 1
            if after_blind and kblind[i]:
                continue  # would overwrite the unknown write just made: pointless
            kind, value, expected, delta, result = kspec[i]
            fits, new_state = _apply(kind, value, expected, delta, result, True, state)
            if not fits:
                continue
            mode = _TRIED
        elif phase == _UNKNOWN:
            if urank[uentry] >= rank[barrier]:  # only unknown ops invoked before the barrier can go now
                phase = _BACKTRACK
                continue
            j = uentry - 1
            if (upred[j] >= 0 and not (ubits >> upred[j]) & 1) or (after_blind and ublind[j]):
                uentry = unxt[uentry]
                continue
            kind, value, expected, delta = uspec[j]
            fits, new_state = _apply(kind, value, expected, delta, None, False, state)
            new_u = ubits | (1 << j)
            ck = (okbits, new_state)
            seen = cache.get(ck)
            if not fits or (seen is not None and any(u & ~new_u == 0 for u in seen)):
                uentry = unxt[uentry]
                continue
            if seen is None:
                cache[ck] = [new_u]
            else:
                seen.append(new_u)
            stack.append((uentry, _UNKNOWN_OP, state, barrier, cands, ci))
            explored += 1
            after_blind = ublind[j]
            state, ubits = new_state, new_u
            supply.take_unknown(j)
            unxt[uprv[uentry]] = unxt[uentry]
            uprv[unxt[uentry]] = uprv[uentry]
            phase = _FRESH
            continue
        else:
            # _BACKTRACK: everything from this configuration failed; undo the last step and try its next sibling.
            if not stack:
                assert best is not None
                return KeyResult(key, False, len(ops), m, _explain(best_depth, n, best, definite=True), states=explored)
            node, mode, state, barrier, cands, ci = stack.pop()
            after_blind = bool(stack) and stack[-1][1] == _UNKNOWN_OP and ublind[stack[-1][0] - 1]
            if mode == _UNKNOWN_OP:
                ubits &= ~(1 << (node - 1))
                supply.untake_unknown(node - 1)
                unxt[uprv[node]] = node
                uprv[unxt[node]] = node
                uentry = unxt[node]
                phase = _UNKNOWN
                continue
            okbits &= ~(1 << (node >> 1))
            remaining += 1
            supply.untake_known(node >> 1)
            ret = node + 1
            nxt[prv[ret]] = ret
            prv[nxt[ret]] = ret
            nxt[prv[node]] = node
            prv[nxt[node]] = node
            if mode == _TRIED:
                phase = _KNOWN
            # else _FORCED: the only move from that configuration failed, so it failed too: keep backtracking
            continue

        # Linearize known op ``i`` next (``new_state`` after it), unless that configuration has been seen.
        new_ok = okbits | (1 << i)
        node = 2 * i + 1
        if remaining == 1:
            stack.append((node, mode, state, barrier, cands, ci))
            return KeyResult(key, True, len(ops), m, linearization=_witness(stack, known, unknown), states=explored)
        ck = (new_ok, new_state)
        seen = cache.get(ck)
        if seen is not None and any(u & ~ubits == 0 for u in seen):
            if mode == _FORCED:
                phase = _BACKTRACK
            continue
        if seen is None:
            cache[ck] = [ubits]
        else:
            seen.append(ubits)
        stack.append((node, mode, state, barrier, cands, ci))
        after_blind = False
        explored += 1
        state, okbits = new_state, new_ok
        remaining -= 1
        supply.take_known(i)
        ret = node + 1
        nxt[prv[node]] = nxt[node]
        prv[nxt[node]] = prv[node]
        nxt[prv[ret]] = nxt[ret]
        prv[nxt[ret]] = prv[ret]
        phase = _FRESH


class _Supply:
    """Which values the remaining ops still need and which they can still write, to spot doomed configurations.

    A remaining get that returned ``v`` (or a cas that succeeded expecting ``v``) needs the key to hold ``v`` when it
    takes effect. If the key does not hold ``v`` now and no remaining op can write ``v``, no linearization can follow
    from here, however far away that op is. With unique written values this catches a wrong guess at the order of
    writes as soon as it is made, not when the read that contradicts it completes."""

    __slots__ = ("counters", "left_incr", "made", "makes", "needed", "needs", "orphans", "uincr", "umakes")

    def __init__(self, known: list[Op], unknown: list[Op]) -> None:
        self.needs: list[object] = []  # per known op: the value it needs, or _NOTHING
        self.makes: list[object] = []  # per known op: the value it writes, or _NOTHING
        for op in known:
            if op.kind == "get":
                self.needs.append(op.result)
            elif op.kind == "cas" and op.result is True:
                self.needs.append(op.expected)
            else:
                self.needs.append(_NOTHING)
            if op.kind == "put" or (op.kind == "cas" and op.result is True):
                self.makes.append(op.value)
            elif op.kind == "delete":
                self.makes.append(None)
            elif op.kind == "incr":
                self.makes.append(str(op.result).encode("ascii"))
            else:
                self.makes.append(_NOTHING)
        # An unknown incr can write any canonical decimal integer: it is counted in left_incr, not in made.
        self.umakes: list[object] = [
            None if op.kind == "delete" else _NOTHING if op.kind == "incr" else op.value for op in unknown
        ]
        self.uincr = [op.kind == "incr" for op in unknown]
        self.left_incr = sum(self.uincr)
        self.needed: dict[object, int] = {}
        self.made: dict[object, int] = {}
        for v in self.needs:
            if v is not _NOTHING:
                self.needed[v] = self.needed.get(v, 0) + 1
        for v in self.makes + self.umakes:
            if v is not _NOTHING:
                self.made[v] = self.made.get(v, 0) + 1
        # The needed values an unknown incr could write.
        self.counters = {v for v in self.needed if isinstance(v, bytes) and _canonical_counter(v)}
        self.orphans = {v for v in self.needed if not self._producible(v)}

    def _producible(self, v: object) -> bool:
        return self.made.get(v, 0) > 0 or (self.left_incr > 0 and v in self.counters)

    def doomed(self, state: bytes | None) -> bool:
        """Whether some remaining op needs a value that the key does not hold and nothing left can write."""
        orphans = self.orphans
        return bool(orphans) and (len(orphans) > 1 or state not in orphans)

    def _unneed(self, v: object) -> None:
        self.needed[v] -= 1
        if not self.needed[v]:
            self.orphans.discard(v)

    def _need(self, v: object) -> None:
        self.needed[v] += 1
        if self.needed[v] == 1 and not self._producible(v):
            self.orphans.add(v)

    def _unmake(self, v: object) -> None:
        self.made[v] -= 1
        if self.needed.get(v) and not self._producible(v):
            self.orphans.add(v)

    def _make(self, v: object) -> None:
        self.made[v] += 1
        self.orphans.discard(v)

    def take_known(self, i: int) -> None:
        if self.needs[i] is not _NOTHING:
            self._unneed(self.needs[i])
        if self.makes[i] is not _NOTHING:
            self._unmake(self.makes[i])

    def untake_known(self, i: int) -> None:
        if self.makes[i] is not _NOTHING:
            self._make(self.makes[i])
        if self.needs[i] is not _NOTHING:
            self._need(self.needs[i])

    def take_unknown(self, j: int) -> None:
        if self.umakes[j] is not _NOTHING:
            self._unmake(self.umakes[j])
        elif self.uincr[j]:
            self.left_incr -= 1
            if not self.left_incr:
                self.orphans.update(v for v in self.counters if self.needed[v] and not self._producible(v))

    def untake_unknown(self, j: int) -> None:
        if self.umakes[j] is not _NOTHING:
            self._make(self.umakes[j])
        elif self.uincr[j]:
            self.left_incr += 1
            self.orphans.difference_update(self.counters)


def _canonical_counter(v: bytes) -> bool:
    n = parse_counter(v)
    return n is not None and str(n).encode("ascii") == v


def _witness(stack: list[_Frame], known: list[Op], unknown: list[Op]) -> tuple[int, ...]:
    return tuple(unknown[node - 1].id if mode == _UNKNOWN_OP else known[node >> 1].id for node, mode, *_ in stack)


def _snapshot(
    state: bytes | None,
    stack: list[_Frame],
    known: list[Op],
    unknown: list[Op],
    nxt: list[int],
    unxt: list[int],
    urank: list[int],
    rank: list[int],
    supply: _Supply,
) -> _DeadEnd:
    """What the explanation needs about a dead end: the blocked op, the state, the end of the prefix, the options.

    The blocked op is one that needs a value nothing left can write if the configuration is doomed, otherwise the
    op whose completion was reached."""
    prefix = [
        unknown[node - 1] if mode == _UNKNOWN_OP else known[node >> 1] for node, mode, *_ in stack[-_SHOW_PREFIX:]
    ]
    candidates: list[Op] = []
    node = nxt[0]
    while node & 1:
        if len(candidates) <= _SHOW_CANDIDATES:
            candidates.append(known[node >> 1])
        node = nxt[node]
    barrier = node
    unode = unxt[0]
    while urank[unode] < rank[barrier] and len(candidates) <= _SHOW_CANDIDATES:
        candidates.append(unknown[unode - 1])
        unode = unxt[unode]
    blocked, missing = known[(barrier >> 1) - 1], _NOTHING
    if supply.doomed(state):
        node = nxt[0]
        while supply.needs[node >> 1] not in supply.orphans or supply.needs[node >> 1] == state:
            node = nxt[node]
            while not node & 1:  # skip completions: every remaining op has its invocation in the list
                node = nxt[node]
        blocked, missing = known[node >> 1], supply.needs[node >> 1]
    return _DeadEnd(blocked, missing, state, len(stack), prefix, candidates)


@dataclass(slots=True)
class _DeadEnd:
    blocked: Op  # it cannot be linearized from here
    missing: object  # the value it needs that no remaining op writes, or _NOTHING
    state: bytes | None
    prefix_len: int
    prefix: list[Op]  # the last few ops of the linearization so far
    candidates: list[Op]  # the ops that could have been linearized next (a few more than are shown)


def _explain(depth: int, n: int, dead: _DeadEnd, *, definite: bool) -> str:
    if definite:
        text = f"{dead.blocked.describe()} cannot be linearized: "
    else:
        text = f"the search got furthest up to {dead.blocked.describe()}: "
    value = show_value(dead.state)
    if dead.prefix_len == 0:
        text += f"at the start the key is {value}"
    else:
        ends = ", ".join(op.describe() for op in dead.prefix)
        more = "..., " if dead.prefix_len > len(dead.prefix) else ""
        text += (
            f"after the longest linearizable prefix ({depth} of {n} acknowledged ops: {more}{ends}) the key is {value}"
        )
    if dead.missing is not _NOTHING:
        missing = dead.missing
        assert missing is None or isinstance(missing, bytes)
        return text + f" and no op left can write {show_value(missing)}"
    shown = dead.candidates[:_SHOW_CANDIDATES]
    text += ". Could take effect next: " + "; ".join(op.describe() for op in shown)
    if len(dead.candidates) > len(shown):
        text += "; ..."
    return text
