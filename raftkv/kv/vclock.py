"""``VectorClock``: the per-key causal history that every write of raftkv records.

A vector clock maps node ids to counters. In raftkv a write to a key at revision ``r`` sets the key's clock to
``old_clock.advance(proposer, r)``: the component of the node that proposed the log entry (recorded in the entry
itself, never the node applying it: every replica computes the same clock) becomes the write's revision. Revisions
are cluster-wide and strictly increasing (``raftkv.kv.fsm``), so each component only grows, as a counter would, and
two more properties follow that plain per-node counters lack:

* a write's *dot* ``(proposer, revision)`` names it uniquely, so a context covers a write exactly when its component
  for that node is at least that revision (the test for siblings: ``covers``);
* a key that was deleted and created again starts a clock whose component is a revision newer than anything a clock
  of the earlier incarnation holds: a context read before the delete never equals or dominates a clock of the new
  incarnation (no ABA through a delete), and ``compare`` never ranks it after one.

Clients use clocks in conditions (write only if the key's clock is still the one I read), as the context of a write
that may be kept beside concurrent ones (siblings), and to tell concurrent histories apart after the fact.

Representation: a ``VectorClock`` IS a tuple of ``(node, counter)`` pairs in canonical form — sorted by node id, node
ids positive, counters positive (a zero counter is the same as an absent one, so it is never stored). Being a tuple
makes it immutable and hashable for free, and lets ``msgpack`` pack it as an array of arrays with no conversion
step (``raftkv.codec`` relies on that on the write path). Two consequences worth knowing:

* equal clocks are equal tuples, so ``VectorClock({1: 2}) == ((1, 2),)`` is true;
* ``<``, ``<=``, ``>``, ``>=`` raise ``TypeError``: tuple order is lexicographic, which is not the causal order.
  Use ``compare(a, b)`` (or ``a.compare(b)``), which returns an ``Ordering``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import IntEnum

__all__ = ["EMPTY_CLOCK", "Ordering", "VectorClock", "compare"]

_new = tuple.__new__


class Ordering(IntEnum):
    """How two vector clocks relate in the causal partial order."""

    BEFORE = 0
    """a < b: every counter of a is <= b's and at least one is smaller (b has seen everything a has)."""
    AFTER = 1
    """a > b."""
    EQUAL = 2
    CONCURRENT = 3
    """Neither has seen the other's latest writes."""


class VectorClock(tuple[tuple[int, int], ...]):
    """An immutable vector clock: a canonical tuple of ``(node, counter)`` pairs (see the module docstring).

    Invariants: node ids strictly increase, and every node id and counter is a positive int (not a bool)."""

    __slots__ = ()

    def __new__(cls, source: Mapping[int, int] | Iterable[tuple[int, int]] = ()) -> VectorClock:
        """From a mapping ``{node: counter}`` or from ``(node, counter)`` pairs in any order. Zero counters are
        dropped; a node named twice, a node id <= 0 or a negative counter raises ValueError."""
        items = list(source.items()) if isinstance(source, Mapping) else [tuple(p) for p in source]
        pairs: list[tuple[int, int]] = []
        seen: set[int] = set()
        for p in items:
            if len(p) != 2:
                raise ValueError(f"a vector clock entry is a (node, counter) pair, got {p!r}")
            node, counter = p
            if type(node) is not int or type(counter) is not int:
                raise ValueError(f"node ids and counters are ints, got {p!r}")
            if node <= 0 or counter < 0:
                raise ValueError(f"node ids are positive and counters non-negative, got {p!r}")
            if node in seen:
                raise ValueError(f"node {node} appears twice")
            seen.add(node)
            if counter:
                pairs.append((node, counter))
        pairs.sort()
        return _new(cls, pairs)

    def pairs(self) -> tuple[tuple[int, int], ...]:
        """The canonical ``(node, counter)`` pairs, sorted by node id (a plain tuple)."""
        return tuple(self)

    def as_dict(self) -> dict[int, int]:
        return dict(self)

    def get(self, node: int) -> int:
        """The counter of ``node`` (0 if absent)."""
        for n, c in self:
            if n == node:
                return c
            if n > node:
                break
        return 0

    def increment(self, node: int) -> VectorClock:
        """A new clock with ``node``'s counter one higher: always ``AFTER`` this one."""
        if type(node) is not int or node <= 0:
            raise ValueError(f"node ids are positive ints, got {node!r}")
        for i, (n, c) in enumerate(self):
            if n == node:
                return _new(VectorClock, (*self[:i], (n, c + 1), *self[i + 1 :]))
            if n > node:
                return _new(VectorClock, (*self[:i], (node, 1), *self[i:]))
        return _new(VectorClock, (*self, (node, 1)))

    def advance(self, node: int, counter: int) -> VectorClock:
        """A new clock with ``node``'s counter set to ``counter``, which must be above its current one (so the result
        is always ``AFTER`` this one). raftkv's writes advance the proposer's component to the write's revision."""
        if type(node) is not int or node <= 0 or type(counter) is not int or counter <= 0:
            raise ValueError(f"node ids and counters are positive ints, got {node!r}, {counter!r}")
        for i, (n, c) in enumerate(self):
            if n == node:
                if counter <= c:
                    raise ValueError(f"node {node}'s counter is {c}: cannot advance it to {counter}")
                return _new(VectorClock, (*self[:i], (n, counter), *self[i + 1 :]))
            if n > node:
                return _new(VectorClock, (*self[:i], (node, counter), *self[i:]))
        return _new(VectorClock, (*self, (node, counter)))

    def covers(self, node: int, counter: int) -> bool:
        """Whether this clock has seen the event ``(node, counter)``: its counter for ``node`` is at least
        ``counter``."""
        return self.get(node) >= counter

    def merge(self, other: VectorClock) -> VectorClock:
        """The least upper bound: each node's counter is the larger of the two."""
        merged = dict(self)
        for n, c in other:
            if c > merged.get(n, 0):
                merged[n] = c
        return _new(VectorClock, sorted(merged.items()))

    def compare(self, other: VectorClock) -> Ordering:
        """``compare(self, other)``."""
        return compare(self, other)

    def __repr__(self) -> str:
        return f"VectorClock({{{', '.join(f'{n}: {c}' for n, c in self)}}})"

    def __lt__(self, other: object) -> bool:
        raise TypeError("vector clocks are partially ordered: use compare(a, b), not <")

    def __le__(self, other: object) -> bool:
        raise TypeError("vector clocks are partially ordered: use compare(a, b), not <=")

    def __gt__(self, other: object) -> bool:
        raise TypeError("vector clocks are partially ordered: use compare(a, b), not >")

    def __ge__(self, other: object) -> bool:
        raise TypeError("vector clocks are partially ordered: use compare(a, b), not >=")


EMPTY_CLOCK = VectorClock()
"""The clock of a key that does not exist."""


def compare(a: VectorClock, b: VectorClock) -> Ordering:
    """Where ``a`` stands relative to ``b``: BEFORE, AFTER, EQUAL or CONCURRENT."""
    if tuple.__eq__(a, b):
        return Ordering.EQUAL
    da = dict(a)
    db = dict(b)
    a_ahead = any(c > db.get(n, 0) for n, c in a)
    b_ahead = any(c > da.get(n, 0) for n, c in b)
    if a_ahead and b_ahead:
        return Ordering.CONCURRENT
    return Ordering.AFTER if a_ahead else Ordering.BEFORE
