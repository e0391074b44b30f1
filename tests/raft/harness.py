"""A scripted, synchronous network of RawNodes for scenario tests (in the spirit of etcd-io/raft's ``network``).

Messages are delivered breadth-first until the network is quiet; ``filters`` drop chosen messages; nodes can be
crashed (losing everything not durable) and restarted. Every Ready is carried out with the real
``raftkv.ready.handle_ready``, completing the write at once.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import Any

from raftkv.raft import Config, ConfState, MemoryStorage, Message, MsgType, RawNode, Ready, StateRole
from raftkv.ready import handle_ready

Filter = Callable[[Message], bool]


def run_sync(coro: Any) -> Any:
    """Run a coroutine that never really suspends (all its awaitables are already complete)."""
    try:
        coro.send(None)
    except StopIteration as e:
        return e.value
    raise AssertionError("coroutine suspended")


def write_ready(storage: MemoryStorage, rd: Ready) -> None:
    """What a driver's write does with a Ready's snapshot, hard state and entries (no state machine)."""
    if rd.snapshot is not None:
        storage.apply_snapshot(rd.snapshot)
    if rd.hard_state is not None:
        storage.set_hard_state(rd.hard_state)
    if rd.entries:
        storage.append(rd.entries)


class _Done:
    def __await__(self) -> Any:
        return None
        yield  # pragma: no cover - makes this a generator


class _IO:
    def __init__(self, net: Network, nid: int) -> None:
        self.net, self.nid = net, nid

    def send(self, msgs: Sequence[Message]) -> None:
        self.net.outbox.extend(msgs)

    def persist(self, rd: Ready) -> _Done:
        write_ready(self.net.storage[self.nid], rd)
        applied = self.net.applied[self.nid]
        for e in rd.committed_entries:
            prev = self.net.applied_global.setdefault(e.index, (e.term, e.data))
            assert prev == (e.term, e.data), f"state machine safety: {e.index} applied as {prev} and {e}"
            applied.append(e)
        return _Done()

    def applied(self, rd: Ready, results: Any) -> None:
        self.net.read_states[self.nid].extend(rd.read_states)


class Network:
    def __init__(self, n: int, **config: Any) -> None:
        self.ids = list(range(1, n + 1))
        self.config = {"election_tick": 10, "heartbeat_tick": 1, **config}
        self.storage = {i: MemoryStorage(ConfState(voters=tuple(self.ids))) for i in self.ids}
        self.applied: dict[int, list[Any]] = {i: [] for i in self.ids}
        self.applied_global: dict[int, tuple[int, bytes]] = {}
        self.read_states: dict[int, list[Any]] = {i: [] for i in self.ids}
        self.nodes: dict[int, RawNode | None] = {}
        self.filters: list[Filter] = []
        self.outbox: deque[Message] = deque()
        self.delivered: list[Message] = []
        for i in self.ids:
            self.restart(i)

    def node(self, i: int) -> RawNode:
        n = self.nodes[i]
        assert n is not None, f"node {i} is down"
        return n

    def raft(self, i: int) -> Any:
        return self.node(i).raft

    # -- faults -----------------------------------------------------------------------------------------------
    def crash(self, i: int) -> None:
        self.nodes[i] = None

    def restart(self, i: int) -> None:
        applied = self.applied[i][-1].index if self.applied[i] else 0
        self.nodes[i] = RawNode(Config(id=i, applied=applied, rng=random.Random(i), **self.config), self.storage[i])

    def isolate(self, i: int) -> None:
        self.filters.append(lambda m: m.frm == i or m.to == i)

    def cut(self, a: int, b: int) -> None:
        self.filters.append(lambda m: {m.frm, m.to} == {a, b})

    def drop(self, f: Filter) -> None:
        self.filters.append(f)

    def heal(self) -> None:
        self.filters = []

    # -- driving ----------------------------------------------------------------------------------------------
    def _ready(self, i: int) -> bool:
        n = self.nodes[i]
        if n is None or not n.has_ready():
            return False
        rd = n.ready()
        run_sync(handle_ready(n, rd, _IO(self, i)))
        return True

    def stabilize(self) -> None:
        """Carry out every Ready and deliver every message (through the filters) until nothing moves."""
        while True:
            moved = False
            for i in self.ids:
                moved |= self._ready(i)
            while self.outbox:
                m = self.outbox.popleft()
                moved = True
                if any(f(m) for f in self.filters):
                    continue
                n = self.nodes.get(m.to)
                if n is None:
                    continue
                self.delivered.append(m)
                n.step(m)
                self._ready(m.to)
            if not moved:
                return

    def tick(self, i: int, times: int = 1) -> None:
        for _ in range(times):
            self.node(i).tick()
            self.stabilize()

    def tick_all(self, times: int = 1) -> None:
        for _ in range(times):
            for i in self.ids:
                if self.nodes[i] is not None:
                    self.node(i).tick()
            self.stabilize()

    def campaign(self, i: int) -> None:
        self.node(i).campaign()
        self.stabilize()

    def propose(self, i: int, data: bytes) -> None:
        self.node(i).propose(data)
        self.stabilize()

    def elect_among(self, ids: Collection[int], max_ticks: int = 200, *, tick_everyone: bool = False) -> int:
        """Tick the nodes in ``ids`` (every up node with ``tick_everyone``) until one of ``ids`` leads; return it."""
        for _ in range(max_ticks):
            for i in self.ids if tick_everyone else ids:
                if self.nodes[i] is not None:
                    self.node(i).tick()
            self.stabilize()
            leaders = [i for i in ids if self.nodes[i] is not None and self.role(i) == StateRole.LEADER]
            if leaders:
                return leaders[0]
        raise AssertionError(f"no leader among {sorted(ids)} within {max_ticks} ticks")

    def role(self, i: int) -> StateRole:
        return self.raft(i).state

    def leader(self) -> int | None:
        leaders = [i for i in self.ids if self.nodes[i] is not None and self.role(i) == StateRole.LEADER]
        return max(leaders, key=lambda i: self.raft(i).term) if leaders else None

    def count(self, t: MsgType, **fields: Any) -> int:
        """How many delivered messages of type ``t`` (matching ``fields``) there were."""
        return sum(1 for m in self.delivered if m.type == t and all(getattr(m, k) == v for k, v in fields.items()))
