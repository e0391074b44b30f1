"""VectorClock: canonical form, and the partial-order laws (hypothesis)."""

from __future__ import annotations

import copy
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.kv import EMPTY_CLOCK, Ordering, VectorClock, compare

NODES = st.integers(1, 6)
clocks = st.dictionaries(NODES, st.integers(0, 4), max_size=6).map(VectorClock)


def leq(a: VectorClock, b: VectorClock) -> bool:
    return compare(a, b) in (Ordering.BEFORE, Ordering.EQUAL)


# -- construction and representation -------------------------------------------------------------------------------


def test_canonical_form() -> None:
    c = VectorClock([(3, 1), (1, 2), (2, 0)])
    assert c.pairs() == ((1, 2), (3, 1))  # sorted, zero counters dropped
    assert c == VectorClock({3: 1, 1: 2}) == VectorClock({1: 2, 2: 0, 3: 1})
    assert hash(c) == hash(VectorClock({1: 2, 3: 1}))
    assert c.get(1) == 2 and c.get(2) == 0 and c.get(9) == 0
    assert c.as_dict() == {1: 2, 3: 1}
    assert VectorClock() == EMPTY_CLOCK == () and not EMPTY_CLOCK


@pytest.mark.parametrize(
    "bad", [[(0, 1)], [(-1, 1)], [(1, -1)], [(1, 1), (1, 2)], [(1, 1, 1)], [(True, 1)], [(1, 1.0)]]
)
def test_bad_pairs_are_rejected(bad: list[tuple[int, ...]]) -> None:
    with pytest.raises(ValueError):
        VectorClock(bad)  # type: ignore[arg-type]


def test_repr_is_readable_and_evaluates_back() -> None:
    c = VectorClock({2: 5, 1: 1})
    assert repr(c) == "VectorClock({1: 1, 2: 5})"
    assert eval(repr(c)) == c
    assert repr(EMPTY_CLOCK) == "VectorClock({})"


def test_tuple_order_is_refused() -> None:
    a, b = VectorClock({1: 1}), VectorClock({2: 1})
    for op in (lambda: a < b, lambda: a <= b, lambda: a > b, lambda: a >= b):
        with pytest.raises(TypeError, match="compare"):
            op()


def test_copy_and_pickle_keep_the_type() -> None:
    c = VectorClock({1: 2, 4: 1})
    for other in (copy.copy(c), copy.deepcopy(c), pickle.loads(pickle.dumps(c))):
        assert type(other) is VectorClock and other == c


def test_increment_inserts_in_order() -> None:
    c = VectorClock({2: 1, 4: 1})
    assert c.increment(3).pairs() == ((2, 1), (3, 1), (4, 1))
    assert c.increment(1).pairs() == ((1, 1), (2, 1), (4, 1))
    assert c.increment(5).pairs() == ((2, 1), (4, 1), (5, 1))
    assert c.increment(4).pairs() == ((2, 1), (4, 2))
    assert type(c.increment(1)) is VectorClock
    with pytest.raises(ValueError):
        c.increment(0)


def test_compare_examples() -> None:
    a = VectorClock({1: 1})
    assert compare(a, a.increment(2)) is Ordering.BEFORE
    assert compare(a.increment(2), a) is Ordering.AFTER
    assert compare(a.increment(2), a.increment(3)) is Ordering.CONCURRENT
    assert compare(EMPTY_CLOCK, a) is Ordering.BEFORE
    assert a.compare(VectorClock({1: 1})) is Ordering.EQUAL


# -- partial-order laws ----------------------------------------------------------------------------------------------


@given(clocks)
def test_reflexive(a: VectorClock) -> None:
    assert compare(a, a) is Ordering.EQUAL


@given(clocks, clocks)
def test_antisymmetry_and_duality(a: VectorClock, b: VectorClock) -> None:
    ab, ba = compare(a, b), compare(b, a)
    if leq(a, b) and leq(b, a):
        assert a == b
    assert (ab is Ordering.EQUAL) == (a == b)
    dual = {Ordering.BEFORE: Ordering.AFTER, Ordering.AFTER: Ordering.BEFORE}
    assert ba is dual.get(ab, ab)  # BEFORE <-> AFTER; EQUAL and CONCURRENT are symmetric


@given(clocks, clocks, clocks)
def test_before_is_transitive(a: VectorClock, b: VectorClock, c: VectorClock) -> None:
    if compare(a, b) is Ordering.BEFORE and compare(b, c) is Ordering.BEFORE:
        assert compare(a, c) is Ordering.BEFORE


@given(clocks, clocks)
def test_compare_matches_the_pointwise_definition(a: VectorClock, b: VectorClock) -> None:
    nodes = set(a.as_dict()) | set(b.as_dict())
    a_le_b = all(a.get(n) <= b.get(n) for n in nodes)
    b_le_a = all(b.get(n) <= a.get(n) for n in nodes)
    expected = {
        (True, True): Ordering.EQUAL,
        (True, False): Ordering.BEFORE,
        (False, True): Ordering.AFTER,
        (False, False): Ordering.CONCURRENT,
    }[(a_le_b, b_le_a)]
    assert compare(a, b) is expected


@given(clocks, clocks, clocks)
def test_merge_is_the_least_upper_bound(a: VectorClock, b: VectorClock, c: VectorClock) -> None:
    m = a.merge(b)
    assert m == b.merge(a)  # commutative
    assert a.merge(b).merge(c) == a.merge(b.merge(c))  # associative
    assert a.merge(a) == a  # idempotent
    assert leq(a, m) and leq(b, m)  # an upper bound
    if leq(a, c) and leq(b, c):
        assert leq(m, c)  # the least one
    assert type(m) is VectorClock and list(m.pairs()) == sorted(m.pairs())


@given(clocks, NODES)
def test_increment_moves_strictly_after(a: VectorClock, node: int) -> None:
    b = a.increment(node)
    assert compare(b, a) is Ordering.AFTER
    assert b.get(node) == a.get(node) + 1
    assert all(b.get(n) == a.get(n) for n in range(1, 7) if n != node)


@given(clocks)
def test_constructing_from_pairs_is_idempotent(a: VectorClock) -> None:
    assert VectorClock(a.pairs()) == a
    assert VectorClock(a.as_dict()) == a
    assert all(c > 0 for _, c in a) and [n for n, _ in a] == sorted({n for n, _ in a})


# -- advance and covers: the clocks raftkv's writes make (counters are revisions) ----------------------------------


@given(clocks, NODES, st.integers(1, 8))
def test_advance_moves_strictly_after_and_covers_its_dot(a: VectorClock, node: int, step: int) -> None:
    rev = a.get(node) + step
    b = a.advance(node, rev)
    assert compare(b, a) is Ordering.AFTER and compare(a, b) is Ordering.BEFORE
    assert b.get(node) == rev and b.covers(node, rev) and not a.covers(node, rev)
    assert all(b.get(n) == a.get(n) for n in range(1, 7) if n != node)
    assert list(b.pairs()) == sorted(b.pairs()) and type(b) is VectorClock
    with pytest.raises(ValueError):
        b.advance(node, rev)  # a counter never goes back or repeats


@given(clocks, clocks, NODES, st.integers(1, 10))
def test_a_merge_covers_exactly_what_either_side_covers(a: VectorClock, b: VectorClock, node: int, c: int) -> None:
    assert a.merge(b).covers(node, c) == (a.covers(node, c) or b.covers(node, c))


@given(st.lists(st.tuples(NODES, st.booleans()), min_size=1, max_size=12))
def test_a_context_read_before_a_delete_is_never_equal_or_after_a_later_incarnation(
    writes: list[tuple[int, bool]],
) -> None:
    """Replay raftkv's rule: revisions count every write cluster-wide; a key's clock sets the writer's component to
    the write's revision; a delete (True) forgets the clock. A clock read before any delete never ranks EQUAL or
    AFTER the clock of an incarnation created after it."""
    rev = 0
    clock = EMPTY_CLOCK
    incarnations: list[list[VectorClock]] = [[]]
    for node, delete in writes:
        rev += 1
        if delete:
            clock = EMPTY_CLOCK
            incarnations.append([])
            continue
        clock = clock.advance(node, rev)
        incarnations[-1].append(clock)
    for i, older in enumerate(incarnations):
        for newer in incarnations[i + 1 :]:
            for old in older:
                for new in newer:
                    assert compare(old, new) in (Ordering.BEFORE, Ordering.CONCURRENT), (old, new)
