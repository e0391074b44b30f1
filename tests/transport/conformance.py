"""One conformance suite for every ``Transport``: subclass ``TransportConformance`` and provide ``make_transport``.

``make_transport(node_id, wiring, addr)`` builds one transport for ``node_id``, not started, with the callbacks and
snapshot arguments of ``wiring``, and returns a ``Built``: the transport and the address its peers reach it at
(``addr`` when one is given: the node restarted in place; else a new one, for gRPC a port picked free at run time),
with a hook that says when its receiving side let go of a snapshot transfer. The suite drives the transports only
through the ``Transport`` protocol and checks the guarantees of ``raftkv.transport``'s docstring.

Every test runs on an event loop of its own through ``Net.run``. Afterwards ``run`` opens every gate still closed,
stops every transport the test built (also when the test failed), and fails if a task is left running or if a
callback broke a rule that holds in every test: callbacks run on the event loop thread, never from inside ``send``
and never after that transport's ``stop()`` returned; a batch is not empty, comes from one sender, is addressed to
the node that receives it and carries no local-only message type; ``on_snapshot`` names a file in the node's
snapshot directory.

Tests wait on conditions (``Net.wait_until``, with a generous deadline), never on fixed sleeps. To show that
something was *not* delivered, a later message on the same link is waited for (``Net.barrier``): order per pair
means the earlier one would have arrived first. Races are forced with gates in the receiver's snapshot sink
(``SinkProbe``), which hold its worker thread before a chunk is written or before the file is finished.

This module holds no tests itself (pytest collects ``test_*.py``); ``test_conformance.py`` runs it per transport.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import tracemalloc
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from raftkv.raft.types import LOCAL_MESSAGES, Message, MsgType
from raftkv.storage.snapshots import SnapshotInfo, SnapshotReceiver, verify
from raftkv.transport import OnMessages, OnRemoved, OnUnreachable, Transport
from raftkv.transport.grpc_transport import OnSnapshot, OpenSnapshotSink

from .helpers import app, heartbeat

DEADLINE_S = 10.0
"""How long a condition may take to come true before the test fails: generous, never a speed assertion."""


@dataclass(frozen=True, slots=True)
class Wiring:
    """What a transport is built with: the node's callbacks and, all three or none, its snapshot arguments."""

    on_messages: OnMessages
    on_unreachable: OnUnreachable
    on_removed: OnRemoved
    on_snapshot: OnSnapshot | None = None
    snapshot_dir: Path | None = None
    snapshot_sink: OpenSnapshotSink | None = None


def _nothing_pending() -> int:
    return 0


@dataclass(frozen=True, slots=True)
class Built:
    """What ``make_transport`` returns: the transport, the address its peers reach it at and ``receiving()``, how
    many incoming snapshot transfers it is still handling. A receiver that learns asynchronously that a sender gave
    up (a gRPC server) counts such a transfer until it has let go of it, so that a test can force the order of that
    race instead of hoping for it; one that learns at once keeps the default (always 0)."""

    transport: Transport
    addr: str
    receiving: Callable[[], int] = _nothing_pending


MakeTransport = Callable[[int, Wiring, str | None], Built]
"""``make_transport(node_id, wiring, addr)``: see the module docstring."""


def mark(frm: int, to: int, seq: int) -> Message:
    """A marker for barriers: a type the tests send for nothing else."""
    return Message(MsgType.HEARTBEAT_RESP, to=to, frm=frm, term=2, index=seq)


# -- the receiver's snapshot sink, probed ------------------------------------------------------------------------


class Gate:
    """A point where a worker thread can be held. Open unless ``close()``d; ``reached`` is set when a thread
    arrives at it."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._open.set()
        self.reached = threading.Event()

    def close(self) -> None:
        self.reached.clear()
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    def pass_through(self) -> None:
        self.reached.set()
        if not self._open.wait(60):
            raise TimeoutError("a test gate stayed closed for 60 s")


class ProbedSink:
    """A ``SnapshotReceiver`` that passes its probe's gates before each chunk and before finishing, and records
    the size of every chunk and how it ended (``state``: "open", "finished" or "aborted")."""

    def __init__(self, inner: SnapshotReceiver, probe: SinkProbe) -> None:
        self.inner = inner
        self.probe = probe
        self.chunks: list[int] = []
        self.state: Literal["open", "finished", "aborted"] = "open"

    def write_chunk(self, data: bytes) -> None:
        self.probe.before_write.pass_through()
        self.chunks.append(len(data))
        try:
            self.inner.write_chunk(data)
        except BaseException:
            self.state = "aborted"
            raise

    def finish(self) -> SnapshotInfo:
        self.probe.before_finish.pass_through()
        try:
            info = self.inner.finish()
        except BaseException:
            self.state = "aborted"
            raise
        self.state = "finished"
        return info

    def abort(self) -> None:
        self.inner.abort()
        if self.state == "open":
            self.state = "aborted"


class SinkProbe:
    """The snapshot sinks of one node: opens each as a ``ProbedSink`` and keeps them."""

    def __init__(self) -> None:
        self.before_write = Gate()
        self.before_finish = Gate()
        self.sinks: list[ProbedSink] = []

    def open(self, snapshot_dir: Path, expected_total: int | None) -> ProbedSink:
        sink = ProbedSink(SnapshotReceiver.open(snapshot_dir, expected_total), self)
        self.sinks.append(sink)
        return sink

    def settled(self) -> bool:
        """Every sink opened so far has finished or aborted."""
        return all(s.state != "open" for s in self.sinks)

    def release(self) -> None:
        self.before_write.open()
        self.before_finish.open()


# -- nodes and the harness ---------------------------------------------------------------------------------------


class Member:
    """One node: its transport, its address and what its callbacks saw."""

    def __init__(self, net: Net, node_id: int, addr: str | None, snapshots: bool) -> None:
        self.net = net
        self.id = node_id
        self.batches: list[list[Message]] = []
        self.unreachable: list[int] = []
        self.removed: list[int] = []
        self.snapshots: list[tuple[int, Path]] = []
        self.stopped = False
        self.accepts_snapshots = snapshots
        self.snapshot_dir = net.tmp_path / f"node{node_id}"
        self.probe = SinkProbe()
        wiring = Wiring(self._on_messages, self._on_unreachable, self._on_removed)
        if snapshots:
            wiring = Wiring(
                self._on_messages, self._on_unreachable, self._on_removed,
                self._on_snapshot, self.snapshot_dir, self.probe.open,
            )  # fmt: skip
        built = net.make(node_id, wiring, addr)
        self.t, self.addr, self.receiving = built.transport, built.addr, built.receiving

    def __repr__(self) -> str:
        return f"Member({self.id}, {self.addr})"

    def send(self, *msgs: Message) -> None:
        """``t.send(msgs)``, marked so that a callback run from inside it is caught."""
        self.net._in_send += 1
        try:
            self.t.send(list(msgs))
        finally:
            self.net._in_send -= 1

    def received(self, frm: int | None = None) -> list[Message]:
        """Every message received (from ``frm``) in delivery order, barrier markers left out."""
        return [
            m for b in self.batches for m in b if m.type != MsgType.HEARTBEAT_RESP and (frm is None or m.frm == frm)
        ]

    def got(self, frm: int | None = None) -> list[int]:
        """The ``index`` of every message received (from ``frm``), in delivery order, markers left out."""
        return [m.index for m in self.received(frm)]

    def marks(self, frm: int) -> list[int]:
        return [m.index for b in self.batches for m in b if m.type == MsgType.HEARTBEAT_RESP and m.frm == frm]

    def files(self) -> list[str]:
        """Everything in the snapshot directory, temporary files too."""
        return sorted(os.listdir(self.snapshot_dir)) if self.snapshot_dir.exists() else []

    def told(self) -> list[str]:
        """The names of the files ``on_snapshot`` was given, each once."""
        return sorted({p.name for _, p in self.snapshots})

    def connected_to(self, *others: Member) -> bool:
        st = self.t.peer_status()
        return all(o.id in st and st[o.id].connected for o in others if o is not self)

    # -- callbacks ---------------------------------------------------------------------------------------------

    def _on_messages(self, batch: list[Message]) -> None:
        self.net._check(self, "on_messages")
        if not batch:
            self.net.violation(f"node {self.id}: an empty batch was delivered")
        elif len({m.frm for m in batch}) != 1:
            self.net.violation(f"node {self.id}: one batch from several senders: {batch}")
        if any(m.to != self.id for m in batch):
            self.net.violation(f"node {self.id}: delivered messages addressed to another node: {batch}")
        if any(m.type in LOCAL_MESSAGES for m in batch):
            self.net.violation(f"node {self.id}: delivered a local-only message type: {batch}")
        self.batches.append(list(batch))

    def _on_unreachable(self, peer: int) -> None:
        self.net._check(self, "on_unreachable")
        self.unreachable.append(peer)

    def _on_removed(self, peer: int) -> None:
        self.net._check(self, "on_removed")
        self.removed.append(peer)

    def _on_snapshot(self, frm: int, path: Path) -> None:
        self.net._check(self, "on_snapshot")
        if Path(path).parent != self.snapshot_dir:
            self.net.violation(f"node {self.id}: on_snapshot named {path}, outside {self.snapshot_dir}")
        self.snapshots.append((frm, Path(path)))


class Net:
    """The nodes of one test and the harness around them (see the module docstring)."""

    def __init__(self, make: MakeTransport, tmp_path: Path) -> None:
        self.make = make
        self.tmp_path = tmp_path
        self.members: list[Member] = []
        self.violations: list[str] = []
        self._in_send = 0
        self._loop_thread: int | None = None
        self._marks = itertools.count(1)

    def member(self, node_id: int, *, addr: str | None = None, snapshots: bool = True) -> Member:
        """A new, unstarted node (at ``addr``, or at a new address)."""
        m = Member(self, node_id, addr, snapshots)
        self.members.append(m)
        return m

    async def cluster(self, n: int, *, snapshots: bool = True) -> list[Member]:
        """Nodes 1..n, each given every address (its own too: ignored) before it starts; connected."""
        ms = [self.member(i, snapshots=snapshots) for i in range(1, n + 1)]
        self.connect(*ms)
        await self.start(*ms)
        return ms

    @staticmethod
    def connect(*ms: Member) -> None:
        addrs = {m.id: m.addr for m in ms}
        for m in ms:
            m.t.set_peers(addrs)

    async def start(self, *ms: Member) -> None:
        """Start ``ms`` and wait until each is connected to the others (those it has an address for); then forget
        the ``on_unreachable`` reports of the start (a node started later was rightly reported until it was up)."""
        for m in ms:
            await m.t.start()
        await self.wait_until(
            lambda: all(m.connected_to(*(o for o in ms if o.id in m.t.peer_status())) for m in ms),
            "the nodes connect to each other",
        )
        for m in ms:
            m.unreachable.clear()

    async def stop(self, *ms: Member) -> None:
        """Stop ``ms`` one after the other, each as soon as this is called: whatever was scheduled for it just before
        (a delivery, a callback) is still pending, and must never run, once its ``stop()`` returned."""
        for m in ms:
            await m.t.stop()
            m.stopped = True

    async def restart(self, m: Member, *peers: Member, move: bool = False) -> Member:
        """Stop ``m`` and start a new transport with its id (at a new address if ``move``), given the addresses of
        ``peers``; wait until it is connected to them."""
        await self.stop(m)
        new = self.member(m.id, addr=None if move else m.addr, snapshots=m.accepts_snapshots)
        new.t.set_peers({p.id: p.addr for p in (*peers, new)})
        await new.t.start()
        await self.wait_until(lambda: new.connected_to(*peers), f"the restarted node {m.id} connects")
        return new

    async def wait_until(
        self, pred: Callable[[], bool], what: str | Callable[[], str], timeout_s: float = DEADLINE_S
    ) -> None:
        """Poll ``pred`` until it holds; fail (saying ``what``) after ``timeout_s``, or as soon as a callback broke
        a rule."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not pred():
            if self.violations:
                raise AssertionError(f"rules broken: {self.violations}")
            if loop.time() > deadline:
                raise AssertionError(f"not within {timeout_s:g} s: {what() if callable(what) else what}")
            await asyncio.sleep(0.005)

    async def keep_sending(self, a: Member, to: int, until: Callable[[], bool], what: str, start: int = 1000) -> int:
        """Send ``a`` heartbeats to ``to`` (indexes from ``start`` up) until ``until()``: for conditions a sender
        notices only when it tries (a refusal, a broken stream). Returns the next unused index."""
        seq = start

        def sent_and_check() -> bool:
            nonlocal seq
            if until():
                return True
            a.send(heartbeat(a.id, to, seq))
            seq += 1
            return False

        await self.wait_until(sent_and_check, what)
        return seq

    async def barrier(self, a: Member, b: Member) -> None:
        """``a`` sends ``b`` a marker and waits until it arrived: whatever ``a`` sent ``b`` before has arrived too,
        or never will (order per pair)."""
        seq = next(self._marks)
        a.send(mark(a.id, b.id, seq))
        await self.wait_until(lambda: seq in b.marks(a.id), f"the marker {seq} from node {a.id} reaches node {b.id}")

    async def settled(self, m: Member) -> None:
        """Wait until every snapshot sink of ``m`` ended and its snapshot directory holds exactly the files its
        ``on_snapshot`` was given: no temporary file and no file nobody was told of."""
        await self.wait_until(
            lambda: m.probe.settled() and m.files() == m.told(),
            lambda: f"node {m.id}: files {m.files()}, told of {m.told()}, sinks {[s.state for s in m.probe.sinks]}",
        )

    def violation(self, what: str) -> None:
        self.violations.append(what)

    def _check(self, m: Member, callback: str) -> None:
        if threading.get_ident() != self._loop_thread:
            self.violation(f"node {m.id}: {callback} ran off the event loop thread")
        if self._in_send:
            self.violation(f"node {m.id}: {callback} ran from inside send()")
        if m.stopped:
            self.violation(f"node {m.id}: {callback} ran after stop() returned")

    async def _stop_all(self) -> None:
        """Stop every transport built, also when stopping one of them raises (the first error is raised after)."""
        errors: list[BaseException] = []
        for m in self.members:
            try:
                await self.stop(m)
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def release(self) -> None:
        for m in self.members:
            m.probe.release()

    def run(self, test: Callable[[], Coroutine[Any, Any, None]], timeout_s: float = 60.0) -> None:
        """Run ``test`` on a fresh event loop, then tear everything down and check what every test checks."""

        async def main() -> None:
            self._loop_thread = threading.get_ident()
            try:
                async with asyncio.timeout(timeout_s):
                    await test()
            finally:
                self.release()
                async with asyncio.timeout(DEADLINE_S):
                    await self._stop_all()
            await asyncio.sleep(0)
            leftover = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
            assert not leftover, f"tasks left running after stop(): {leftover}"
            assert not self.violations, f"rules broken: {self.violations}"

        asyncio.run(main())


# -- the suite ---------------------------------------------------------------------------------------------------


class TransportConformance:
    """Subclasses provide the ``make_transport`` fixture."""

    @pytest.fixture
    def net(self, make_transport: MakeTransport, tmp_path: Path) -> Iterator[Net]:
        net = Net(make_transport, tmp_path)
        yield net
        net.release()  # a test that failed before run() must not leave a worker thread held

    def test_implements_the_protocol(self, net: Net) -> None:
        assert isinstance(net.member(1).t, Transport)

    # -- delivery ------------------------------------------------------------------------------------------------

    def test_every_message_arrives_once_in_order_per_pair(self, net: Net) -> None:
        """Three nodes, each ``send`` call carrying interleaved messages for both others: everything arrives,
        intact, in send order per pair, in at most one frame per destination per call, and is counted."""
        rounds = 60

        async def test() -> None:
            nodes = await net.cluster(3)
            expected: dict[tuple[int, int], list[Message]] = {}
            for r in range(rounds):
                for n in nodes:
                    makers: tuple[Callable[[int, int, int], Message], ...] = (app, heartbeat)
                    batch = [f(n.id, o.id, 10 * r + k) for k, f in enumerate(makers) for o in nodes if o is not n]
                    n.send(*batch)
                    for m in batch:
                        expected.setdefault((m.frm, m.to), []).append(m)
                if r % 7 == 0:
                    await asyncio.sleep(0)  # sometimes let the transports run between calls, sometimes pile up
            await net.wait_until(lambda: all(len(n.received()) == 4 * rounds for n in nodes), "every message arrives")
            for n in nodes:
                for o in nodes:
                    if o is n:
                        continue
                    assert n.received(frm=o.id) == expected[(o.id, n.id)], "in order per pair, intact, once"
                    frames = [b for b in n.batches if b[0].frm == o.id]
                    assert 1 <= len(frames) <= rounds, "one frame per destination per send() call at most"
                    sent, got = o.t.peer_status()[n.id], n.t.peer_status()[o.id]
                    assert sent.connected and sent.addr == n.addr
                    assert sent.frames_dropped == 0 and sent.frames_sent == got.frames_received == len(frames)
                    assert got.last_recv_monotonic is not None
                assert n.unreachable == []

        net.run(test)

    def test_send_only_queues(self, net: Net) -> None:
        """``send`` neither delivers nor reports anything itself, whatever it is given: that comes later, on the
        loop."""

        async def test() -> None:
            a, b = await net.cluster(2)
            a.send(heartbeat(1, 2, 1), heartbeat(1, 9, 1), heartbeat(1, 1, 1))
            a.send()
            assert b.batches == [] and a.batches == [] and a.unreachable == []
            await net.wait_until(lambda: b.got() == [1] and a.unreachable == [9], "delivered and reported later")

        net.run(test)

    def test_messages_to_self_are_dropped_and_the_own_id_is_ignored(self, net: Net) -> None:
        async def test() -> None:
            a, b = await net.cluster(2)  # each was given its own address too
            assert sorted(a.t.peer_status()) == [2] and sorted(b.t.peer_status()) == [1]
            a.send(heartbeat(1, 1, 1), heartbeat(1, 2, 2))
            a.send(heartbeat(1, 1, 3))
            await net.barrier(b, a)
            await net.barrier(a, b)
            assert a.got() == [] and b.got() == [2]
            assert a.unreachable == [] and sorted(a.t.peer_status()) == [2]
            assert a.t.peer_status()[2].frames_dropped == 0

        net.run(test)

    def test_local_only_message_types_never_cross(self, net: Net) -> None:
        async def test() -> None:
            a, b = await net.cluster(2)
            a.send(Message(MsgType.HUP, to=2, frm=1), heartbeat(1, 2, 7), Message(MsgType.BEAT, to=2, frm=1))
            a.send(Message(MsgType.SNAP_STATUS, to=2, frm=1, reject=True))  # nothing left to deliver: no batch
            await net.barrier(a, b)
            assert b.received() == [heartbeat(1, 2, 7)]

        net.run(test)

    def test_a_node_without_an_address_is_dropped_counted_and_reported_once_per_burst(self, net: Net) -> None:
        async def test() -> None:
            a, b = await net.cluster(2)
            for i in range(50):
                a.send(heartbeat(1, 9, i))
            await net.wait_until(lambda: a.unreachable == [9], "node 9 reported unreachable")
            await net.barrier(a, b)
            assert a.unreachable == [9], "one report for the whole burst"
            st = a.t.peer_status()[9]
            assert st.frames_dropped == 50 and st.frames_sent == 0 and st.last_error and not st.connected
            a.send(heartbeat(1, 9, 99))
            await net.wait_until(lambda: a.unreachable == [9, 9], "a later drop is reported again")
            assert a.t.peer_status()[9].frames_dropped == 51

        net.run(test)

    def test_a_node_hears_from_nodes_it_has_no_address_for(self, net: Net) -> None:
        """A joining node hears from the leader before it knows the membership; it shows in ``peer_status``."""

        async def test() -> None:
            a, b = net.member(1), net.member(2)
            a.t.set_peers({2: b.addr})
            await net.start(a, b)
            a.send(heartbeat(1, 2, 1))
            await net.wait_until(lambda: b.got() == [1], "delivered")
            st = b.t.peer_status()[1]
            assert st.frames_received == 1 and st.last_recv_monotonic is not None and st.addr == ""

        net.run(test)

    # -- failures, stop ------------------------------------------------------------------------------------------

    def test_a_stopped_peer_receives_nothing_and_is_reported_unreachable(self, net: Net) -> None:
        async def test() -> None:
            a, b = await net.cluster(2)
            a.send(heartbeat(1, 2, 1))
            await net.wait_until(lambda: b.got() == [1], "delivered")
            a.send(heartbeat(1, 2, 2))  # on its way as the peer stops: lost, or delivered before stop() returned
            await net.stop(b)
            await net.keep_sending(
                a, 2, lambda: 2 in a.unreachable and a.t.peer_status()[2].frames_dropped > 0, "drops reported"
            )
            st = a.t.peer_status()[2]
            assert not st.connected and st.last_error and st.addr == b.addr
            assert b.got() in ([1], [1, 2]), "nothing sent after the stop arrives"

        net.run(test)

    def test_stop_is_idempotent_and_final(self, net: Net) -> None:
        async def test() -> None:
            a, b = await net.cluster(2)
            a.send(app(1, 2, 1))
            b.send(app(2, 1, 1))
            await net.wait_until(lambda: a.got() == [1] and b.got() == [1], "both delivered")
            await net.stop(b)
            await asyncio.gather(b.t.stop(), b.t.stop())  # repeated and concurrent
            tasks = asyncio.all_tasks()
            b.send(heartbeat(2, 1, 2))  # neither raises nor starts anything
            b.t.set_peers({1: a.addr, 3: "127.0.0.1:1"})
            assert asyncio.all_tasks() == tasks
            with pytest.raises(RuntimeError):
                await b.t.start()
            a.send(app(1, 2, 2))  # a's stream into the stopped node is open or failing: neither raises
            a.send(heartbeat(1, 9, 1))  # an on_unreachable pending as a stops: never run once stop() returned
            await net.stop(a)  # while a's sender may be backing off; run() then finds no task left
            await net.stop(a)

        net.run(test)

    def test_a_restarted_peer_gets_each_message_at_most_once_and_in_order(self, net: Net) -> None:
        async def test() -> None:
            a, b = await net.cluster(2)
            seq = 0

            async def pump() -> None:
                nonlocal seq
                while True:
                    seq += 1
                    a.send(heartbeat(1, 2, seq))
                    await asyncio.sleep(0.002)

            pumping = asyncio.create_task(pump())
            try:
                await net.wait_until(lambda: len(b.got()) >= 10, "the first node gets some")
                b2 = await net.restart(b, a)
                await net.wait_until(lambda: len(b2.got()) >= 10, "the restarted node gets some")
            finally:
                pumping.cancel()
                await asyncio.gather(pumping, return_exceptions=True)
            got = b.got() + b2.got()
            assert got == sorted(set(got)), "no message twice, none out of order, across the restart"

        net.run(test)

    # -- removed members -----------------------------------------------------------------------------------------

    def test_a_refused_node_delivers_nothing_and_is_told_it_was_removed(self, net: Net) -> None:
        async def test() -> None:
            a, b = await net.cluster(2)
            a.send(heartbeat(1, 2, 1))
            await net.wait_until(lambda: b.got() == [1], "delivered")
            b.t.refuse({1})
            await net.keep_sending(a, 2, lambda: bool(a.removed), "node 1 is told it was removed")
            assert set(a.removed) == {2}, "on_removed names the node that refused"
            assert "removed" in a.t.peer_status()[2].last_error
            assert b.got(frm=1) == [1], "nothing after the refusal"
            b.send(heartbeat(2, 1, 5))  # the refusing node still talks to it: the node decides what to send
            await net.wait_until(lambda: a.got() == [5], "delivered the other way")
            assert b.removed == []

        net.run(test)

    def test_refuse_replaces_the_previous_set(self, net: Net) -> None:
        async def test() -> None:
            a, b, c = await net.cluster(3)
            b.t.refuse({1})
            await net.keep_sending(a, 2, lambda: bool(a.removed), "node 1 refused")
            b.t.refuse({3})
            await net.keep_sending(c, 2, lambda: bool(c.removed), "node 3 refused")
            assert b.got(frm=3) == []
            await net.keep_sending(a, 2, lambda: bool(b.got(frm=1)), "node 1 accepted again")
            b.t.refuse(())
            await net.keep_sending(c, 2, lambda: bool(b.got(frm=3)), "node 3 accepted again")

        net.run(test)

    # -- set_peers -----------------------------------------------------------------------------------------------

    def test_set_peers_before_start(self, net: Net) -> None:
        async def test() -> None:
            a, b = net.member(1), net.member(2)
            net.connect(a, b)
            assert sorted(a.t.peer_status()) == [2]
            await net.start(a, b)
            a.send(heartbeat(1, 2, 1))
            b.send(heartbeat(2, 1, 2))
            await net.wait_until(lambda: b.got() == [1] and a.got() == [2], "delivered both ways")
            assert a.t.peer_status()[2].addr == b.addr

        net.run(test)

    def test_set_peers_adds_a_peer_at_run_time(self, net: Net) -> None:
        async def test() -> None:
            a, b = net.member(1), net.member(2)
            await net.start(a, b)
            a.send(heartbeat(1, 2, 1))
            await net.wait_until(lambda: a.unreachable == [2], "no address yet: reported")
            a.t.set_peers({2: b.addr})
            await net.wait_until(lambda: a.connected_to(b), "connects to the new peer")
            a.send(heartbeat(1, 2, 2))
            await net.wait_until(lambda: bool(b.got()), "delivered")
            assert b.got() == [2]
            assert a.t.peer_status()[2].addr == b.addr

        net.run(test)

    def test_removing_a_peer_drops_what_was_queued_for_it(self, net: Net) -> None:
        async def test() -> None:
            a, b = await net.cluster(2)
            a.send(heartbeat(1, 2, 1))
            await net.wait_until(lambda: b.got() == [1], "delivered")
            for i in range(2, 12):
                a.send(heartbeat(1, 2, i))  # queued: nothing ran since
            a.t.set_peers({1: a.addr})
            assert sorted(a.t.peer_status()) == [], "a removed peer's status goes with it"
            a.send(heartbeat(1, 2, 50))
            await net.wait_until(lambda: a.unreachable == [2], "sending to it now is sending to no address")
            assert a.t.peer_status()[2].frames_dropped == 1
            net.connect(a, b)
            await net.wait_until(lambda: a.connected_to(b), "added back")
            a.send(heartbeat(1, 2, 100))
            await net.wait_until(lambda: 100 in b.got(), "delivered after it was added back")
            assert b.got() == [1, 100], "what was queued when it was removed is dropped"

        net.run(test)

    def test_a_changed_address_reaches_the_node_there(self, net: Net) -> None:
        async def test() -> None:
            a, b = await net.cluster(2)
            a.send(heartbeat(1, 2, 1))
            await net.wait_until(lambda: b.got() == [1], "delivered")
            b2 = await net.restart(b, a, move=True)
            assert b2.addr != b.addr
            a.t.set_peers({1: a.addr, 2: b2.addr})
            await net.keep_sending(a, 2, lambda: bool(b2.got()), "delivered at the new address")
            got = b2.got()
            assert got == sorted(set(got))
            assert a.t.peer_status()[2].addr == b2.addr
            await net.wait_until(lambda: a.connected_to(b2), "connected at the new address")

        net.run(test)

    # -- snapshots -------------------------------------------------------------------------------------------

    def test_a_snapshot_arrives_identical_and_verified_with_bounded_memory(
        self, net: Net, large_snapshot: SnapshotInfo
    ) -> None:
        """``True`` once the peer verified and kept the file, and only after its ``on_snapshot`` was told; the
        file crosses in chunks of at most ``chunk_bytes`` and the two ends together hold a few chunks, never the
        file (Python allocations, traced)."""
        src = large_snapshot
        chunk = 256 << 10

        async def test() -> None:
            a, b = await net.cluster(2)
            tracemalloc.start()
            try:
                ok = await a.t.send_snapshot(2, src.path, chunk_bytes=chunk)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert ok
            assert b.snapshots == [(1, b.snapshot_dir / src.path.name)], "told before send_snapshot returned True"
            assert peak < 3 << 20, (peak, src.size_bytes)
            [sink] = b.probe.sinks
            assert max(sink.chunks) <= chunk and sum(sink.chunks) == src.size_bytes and sink.state == "finished"
            await net.settled(b)

        net.run(test)
        got = net.members[1].snapshot_dir / src.path.name
        assert got.read_bytes() == src.path.read_bytes()
        assert verify(got) == SnapshotInfo(got, src.header, src.records, src.size_bytes, src.crc32)

    def test_messages_keep_flowing_in_order_during_a_transfer(self, net: Net, small_snapshot: SnapshotInfo) -> None:
        async def test() -> None:
            a, b = await net.cluster(2)
            b.probe.before_write.close()
            transfer = asyncio.create_task(a.t.send_snapshot(2, small_snapshot.path, chunk_bytes=64 << 10))
            await net.wait_until(b.probe.before_write.reached.is_set, "the transfer is under way")
            for i in range(1, 21):
                a.send(heartbeat(1, 2, i))
                b.send(heartbeat(2, 1, i))
            await net.wait_until(lambda: len(b.got()) == len(a.got()) == 20, "delivered while the file is held")
            assert b.got() == a.got() == list(range(1, 21))
            assert not transfer.done()
            b.probe.before_write.open()
            assert await transfer
            await net.settled(b)

        net.run(test)

    def test_one_transfer_per_peer_at_a_time(self, net: Net, small_snapshot: SnapshotInfo) -> None:
        path = small_snapshot.path

        async def test() -> None:
            a, b, c = await net.cluster(3)
            b.probe.before_write.close()
            first = asyncio.create_task(a.t.send_snapshot(2, path))
            await net.wait_until(b.probe.before_write.reached.is_set, "the first transfer is under way")
            async with asyncio.timeout(DEADLINE_S):
                assert not await a.t.send_snapshot(2, path), "a second transfer to that peer returns False at once"
                assert await a.t.send_snapshot(3, path), "one to another peer goes meanwhile"
            assert not first.done()
            b.probe.before_write.open()
            assert await first
            assert await a.t.send_snapshot(2, path), "the peer is free again"
            assert len(b.probe.sinks) == 2, "the refused transfer never reached the peer"
            assert b.told() == [path.name] and c.told() == [path.name]
            await net.settled(b)
            await net.settled(c)

        net.run(test)

    def test_transfers_that_cannot_succeed_return_false_and_leave_nothing(
        self, net: Net, small_snapshot: SnapshotInfo, tmp_path: Path
    ) -> None:
        raw = bytearray(small_snapshot.path.read_bytes())
        raw[len(raw) // 2] ^= 1
        corrupt = tmp_path / "corrupt.rkvs"
        corrupt.write_bytes(raw)
        path = small_snapshot.path

        async def test() -> None:
            a, b = net.member(1), net.member(2)
            c = net.member(3, snapshots=False)
            d = net.member(4)
            net.connect(a, b, c)
            d.t.set_peers({2: b.addr})
            await net.start(a, b, c)
            async with asyncio.timeout(DEADLINE_S):
                assert not await a.t.send_snapshot(2, corrupt), "a corrupt file"
                assert not await a.t.send_snapshot(3, path), "a node that takes no snapshots"
                assert not await a.t.send_snapshot(2, tmp_path / "missing.rkvs"), "no such file"
                assert not await a.t.send_snapshot(9, path), "a node without an address"
                assert not await d.t.send_snapshot(2, path), "a sender that is not started"
                with pytest.raises(ValueError):
                    await a.t.send_snapshot(2, path, chunk_bytes=0)
                await net.settled(b)
                assert b.snapshots == [] and b.files() == [] and c.files() == []
                await net.stop(b)
                assert not await a.t.send_snapshot(2, path), "a receiver that is down"
                await net.stop(a)
                assert not await a.t.send_snapshot(3, path), "a sender that is stopped"
            assert c.files() == []

        net.run(test)

    @pytest.mark.parametrize(
        ("how", "phase", "chunk_bytes"),
        [
            ("cancel", "writing", 1 << 20),  # the file's only chunk
            ("cancel", "writing", 64 << 10),  # the first of several
            ("cancel", "finishing", 1 << 20),
            ("timeout", "writing", 1 << 20),
            ("timeout", "finishing", 1 << 20),
        ],
    )
    def test_an_abandoned_transfer_leaves_no_file_nobody_was_told_of(
        self, net: Net, small_snapshot: SnapshotInfo, how: str, phase: str, chunk_bytes: int
    ) -> None:
        """The sender gives up (cancelled, or ``timeout_s`` passes) while the receiver is held before writing a
        chunk or before finishing the file. Whatever the receiver had, once it settles its snapshot directory holds
        only files its ``on_snapshot`` was given (a file finished as the sender gave up may be delivered: the
        answer was lost, not the file), and the peer takes the next transfer."""
        path = small_snapshot.path

        async def test() -> None:
            a, b = await net.cluster(2)
            gate = b.probe.before_write if phase == "writing" else b.probe.before_finish
            gate.close()
            timeout_s = 0.5 if how == "timeout" else None
            transfer = asyncio.create_task(a.t.send_snapshot(2, path, chunk_bytes=chunk_bytes, timeout_s=timeout_s))
            await net.wait_until(lambda: gate.reached.is_set() or transfer.done(), "the receiver reaches the gate")
            assert gate.reached.is_set(), "the transfer ended before the receiver got to the gate"
            if how == "cancel":
                transfer.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await transfer
            else:
                assert await transfer is False
            await net.wait_until(lambda: b.receiving() == 0, "the receiver lets go of the abandoned transfer")
            gate.open()  # only now can the receiver's worker carry on
            await net.settled(b)
            assert b.told() in ([], [path.name])
            assert await a.t.send_snapshot(2, path), "the peer takes the next transfer"
            await net.settled(b)
            assert b.told() == [path.name]

        net.run(test)

    @pytest.mark.parametrize("who", ["receiver", "sender"])
    @pytest.mark.parametrize("phase", ["writing", "finishing"])
    def test_a_transfer_cut_short_by_a_stop_leaves_no_file_nobody_was_told_of(
        self, net: Net, small_snapshot: SnapshotInfo, who: str, phase: str
    ) -> None:
        """One end stops while the receiver is held; the transfer returns False, the receiver keeps no file it was
        not told of (a stopped receiver is told nothing, so it keeps none) and no task is left."""

        async def test() -> None:
            a, b = await net.cluster(2)
            gate = b.probe.before_write if phase == "writing" else b.probe.before_finish
            gate.close()
            transfer = asyncio.create_task(a.t.send_snapshot(2, small_snapshot.path))
            await net.wait_until(gate.reached.is_set, "the receiver reaches the gate")
            await net.stop(b if who == "receiver" else a)
            await net.wait_until(lambda: b.receiving() == 0, "the receiver lets go of the transfer")
            gate.open()
            async with asyncio.timeout(DEADLINE_S):
                assert await transfer is False
            await net.settled(b)
            if who == "receiver":
                assert b.files() == []

        net.run(test)
