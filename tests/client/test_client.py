"""The client against fake servers: leader discovery, failover, exactly-once sessions, deadlines, session reads,
error mapping, and the synchronous wrapper."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.client import (
    CLUSTER_FILE,
    Client,
    Compare,
    DeleteResult,
    KeyValue,
    NodeStatus,
    PutResult,
    RangeResult,
    SyncClient,
    TxnOp,
    cluster_health,
    compare,
    local_cluster_dir,
    resolve_endpoints,
)
from raftkv.errors import (
    ConditionFailed,
    ConfigError,
    InvalidArgument,
    NotLeader,
    RaftKVError,
    ReadOnly,
    StorageError,
    Timeout,
    Unavailable,
)
from raftkv.proto.v1 import kv_pb2
from raftkv.settings import Member

from .fake_server import FakeKV, FakeServer, free_port, run

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")


@pytest.fixture
def srv() -> Iterator[FakeServer]:
    with FakeServer(FakeKV(node_id=1)) as s:
        yield s


@pytest.fixture
def two() -> Iterator[tuple[FakeServer, FakeServer]]:
    with FakeServer(FakeKV(node_id=1)) as a, FakeServer(FakeKV(node_id=2)) as b:
        yield a, b


# -- the basics -------------------------------------------------------------------------------------------------
def test_put_get_delete_range_return_plain_values(srv: FakeServer) -> None:
    async def go() -> None:
        async with Client([srv.addr]) as c:
            p = await c.put("greeting", "héllo")
            assert isinstance(p, PutResult)
            assert (p.key, p.create_revision, p.mod_revision, p.version, p.vclock, p.index) == (
                b"greeting",
                1,
                1,
                1,
                {1: 1},
                1,
            )
            p2 = await c.put(b"greeting", b"again")
            assert (p2.create_revision, p2.mod_revision, p2.version, p2.vclock) == (1, 2, 2, {1: 2})

            kv = await c.get("greeting")
            assert kv == KeyValue(b"greeting", b"again", 1, 2, 2, {1: 2}, index=2, revision=2)
            assert await c.get("missing") is None

            await c.put("user/1", "a")
            await c.put("user/2", "b")
            r = await c.range("user/")
            assert isinstance(r, RangeResult)
            assert [kv.key for kv in r.kvs] == [b"user/1", b"user/2"]
            assert not r.more and r.index == 4
            r = await c.range("user/", limit=1)
            assert [kv.key for kv in r.kvs] == [b"user/1"] and r.more
            r = await c.range("user/", start_after="user/1", keys_only=True)
            assert [(kv.key, kv.value) for kv in r.kvs] == [(b"user/2", b"")]
            assert [kv.key async for kv in c.range_all("user/", page_size=1)] == [b"user/1", b"user/2"]

            d = await c.delete("greeting")
            assert d == DeleteResult(True, 5, 5)
            assert (await c.delete("greeting")).deleted is False

    run(go)


def test_bad_input_is_rejected_before_sending(srv: FakeServer) -> None:
    async def go() -> None:
        async with Client([srv.addr]) as c:
            with pytest.raises(InvalidArgument, match="empty"):
                await c.put("", "v")
            with pytest.raises(InvalidArgument, match="consistency"):
                await c.get("k", consistency="sometimes")
            with pytest.raises(InvalidArgument, match="limit"):
                await c.range(limit=0)

    run(go)
    assert sum(srv.kv.calls.values()) == 0
    with pytest.raises(ConfigError):
        Client([])
    with pytest.raises(ConfigError):
        Client(["a:1"], timeout_s=0)


# -- leader discovery and failover ------------------------------------------------------------------------------
def test_follows_not_leader_redirect_to_an_address_outside_the_endpoint_list() -> None:
    with FakeServer(FakeKV(node_id=2)) as leader, FakeServer(FakeKV(node_id=1)) as follower:
        follower.kv.mode = "follower"
        follower.kv.leader_id, follower.kv.leader_addr = 2, leader.addr

        async def go() -> None:
            async with Client([follower.addr]) as c:
                await c.put("a", "1")
                assert c.leader == leader.addr
                await c.put("b", "2")  # straight to the leader now
                assert (await c.get("a")) is not None  # a linearizable read is redirected as well

        run(go)
        assert follower.kv.calls["Put"] == 1
        assert leader.kv.calls["Put"] == 2
        assert set(leader.kv.data) == {b"a", b"b"}
        # The redirected retry carried the very same session.
        first = follower.kv.sessions[0]
        assert (leader.kv.sessions[0].client_id, leader.kv.sessions[0].seq) == (first.client_id, first.seq)


def test_fails_over_to_the_next_endpoint_when_one_is_not_listening(srv: FakeServer) -> None:
    dead = f"127.0.0.1:{free_port()}"

    async def go() -> None:
        async with Client([dead, srv.addr], timeout_s=5) as c:
            await c.put("k", "v")
            assert c.leader == srv.addr
            assert (await c.get("k")) is not None

    run(go)
    assert srv.kv.applied == 1


def test_fails_over_when_a_node_answers_unavailable() -> None:
    with FakeServer(FakeKV(node_id=1)) as down, FakeServer(FakeKV(node_id=2)) as good:
        down.kv.mode = "down"

        async def go() -> None:
            async with Client([down.addr, good.addr], timeout_s=5) as c:
                await c.put("k", "v")

        run(go)
        assert down.kv.calls["Put"] == 1
        assert good.kv.applied == 1


# -- exactly-once sessions --------------------------------------------------------------------------------------
def test_retries_reuse_the_same_session_and_sequence(srv: FakeServer) -> None:
    srv.kv.inject(Unavailable("no leader yet"), Timeout("slow", outcome_unknown=True))

    async def go() -> None:
        async with Client([srv.addr], timeout_s=5) as c:
            await c.put("k", "v1")
            await c.put("k", "v2")

    run(go)
    seen = [(s.client_id, s.seq) for s in srv.kv.sessions]
    assert len(seen) == 4
    assert seen[0] == seen[1] == seen[2]  # two retries of the first write
    assert seen[3] == (seen[0][0], seen[0][1] + 1)  # the next write: same lane, next sequence number
    assert srv.kv.applied == 2


def test_a_lost_reply_is_retried_and_applied_once(srv: FakeServer) -> None:
    srv.kv.lose_reply = [Unavailable("connection reset")]  # applied, but the answer never arrives

    async def go() -> PutResult:
        async with Client([srv.addr], timeout_s=5) as c:
            return await c.put("k", "v")

    res = run(go)
    assert srv.kv.calls["Put"] == 2
    assert srv.kv.applied == 1  # the retry was answered from the session table
    assert res.version == 1


@pytest.mark.parametrize("lanes", [8, 64])
def test_at_most_one_outstanding_request_per_session_under_100_concurrent_writes(srv: FakeServer, lanes: int) -> None:
    srv.kv.delay_s = 0.01
    srv.kv.inject(*[Unavailable("hiccup")] * 10)  # some writes retry while others are in flight

    async def go() -> list[PutResult]:
        async with Client([srv.addr], timeout_s=20, lanes=lanes) as c:
            return await asyncio.gather(*(c.put(f"k{i}", str(i)) for i in range(100)))

    results = run(go)
    assert len(results) == 100
    assert srv.kv.max_outstanding_per_session == 1
    assert srv.kv.applied == 100
    assert len(srv.kv.data) == 100
    pairs = {(s.client_id, s.seq) for s in srv.kv.sessions}
    assert len(pairs) == 100  # retries repeat a pair; every write has its own
    assert len({cid for cid, _ in pairs}) <= lanes
    assert all(cid != 0 for cid, _ in pairs)


def test_lane_client_ids_wrap_and_are_never_zero(srv: FakeServer) -> None:
    srv.kv.delay_s = 0.05

    async def go() -> None:
        async with Client([srv.addr], client_id=(1 << 64) - 2, lanes=4) as c:
            await asyncio.gather(*(c.put(f"k{i}", "v") for i in range(4)))

    run(go)
    ids = sorted({s.client_id for s in srv.kv.sessions})
    assert ids == [1, 2, (1 << 64) - 2, (1 << 64) - 1]


# -- deadlines --------------------------------------------------------------------------------------------------
def test_a_write_to_a_server_that_never_answers_times_out_with_outcome_unknown(srv: FakeServer) -> None:
    srv.kv.mode = "hang"

    async def go() -> None:
        async with Client([srv.addr], timeout_s=1.0) as c:
            await c.put("k", "v")

    t0 = time.monotonic()
    with pytest.raises(Timeout) as ei:
        run(go)
    elapsed = time.monotonic() - t0
    assert ei.value.outcome_unknown is True
    assert "unknown" in ei.value.message
    assert elapsed < 1.0 + 1.5  # the deadline holds (generous slack for a loaded machine)
    # Each attempt carried the time remaining as its gRPC deadline, never more (the 50 ms allow for gRPC's coarse
    # encoding of the timeout header and the two clocks; a client sending its 10 s default would fail).
    assert srv.kv.deadlines and all(d is not None and d <= 1.05 for d in srv.kv.deadlines)


def test_a_read_that_times_out_is_not_outcome_unknown(srv: FakeServer) -> None:
    srv.kv.mode = "hang"

    async def go() -> None:
        async with Client([srv.addr], timeout_s=0.5) as c:
            await c.get("k")

    with pytest.raises(Timeout) as ei:
        run(go)
    assert ei.value.outcome_unknown is False
    assert srv.kv.reads[0].timeout_ms <= 500


def test_a_write_that_never_reached_a_server_is_not_outcome_unknown() -> None:
    async def go() -> None:
        async with Client([f"127.0.0.1:{free_port()}"], timeout_s=0.5) as c:
            await c.put("k", "v")

    with pytest.raises(Unavailable) as ei:
        run(go)
    assert "attempt" in ei.value.message


def test_server_timeouts_that_say_not_applied_keep_the_outcome_known(srv: FakeServer) -> None:
    srv.kv.inject(*[Timeout("queue full", outcome_unknown=False)] * 1000)

    async def go() -> None:
        async with Client([srv.addr], timeout_s=0.5) as c:
            await c.put("k", "v")

    with pytest.raises(Timeout) as ei:
        run(go)
    assert ei.value.outcome_unknown is False


# -- session reads ----------------------------------------------------------------------------------------------
def test_reads_carry_the_highest_index_seen_as_min_index(two: tuple[FakeServer, FakeServer]) -> None:
    a, b = two

    async def go() -> None:
        async with Client([a.addr], timeout_s=5) as ca:
            for i in range(3):
                await ca.put(f"k{i}", "v")
            assert ca.seen_index == 3
            await ca.get("k0")
            await ca.get("k0", min_index=0)  # explicitly opting out
            await ca.get("k0", min_index=1)
            await ca.range("k")
        assert [r.min_index for r in a.kv.reads] == [3, 0, 1, 3]

    run(go)

    # A stale read on another (lagging) node still asks for at least what this client has seen.
    async def go2() -> None:
        async with Client([a.addr], timeout_s=5) as c:
            await c.put("x", "1")
            seen = c.seen_index
            c._endpoints = [b.addr]
            c._leader = None
            await c.get("x", consistency="stale")
            assert b.kv.reads[-1].min_index == seen
            assert b.kv.reads[-1].consistency == kv_pb2.STALE

    run(go2)


def test_seen_index_never_goes_backwards(two: tuple[FakeServer, FakeServer]) -> None:
    a, b = two
    for i in range(5):
        a.kv.put_local(f"k{i}".encode(), b"v")

    async def go() -> None:
        async with Client([a.addr, b.addr], timeout_s=5) as c:
            await c.get("k0")
            assert c.seen_index == 5
            await c.get("k0", consistency="stale", min_index=0)  # served by a lagging node (index 0) later on
            c._leader = b.addr
            await c.get("nothing", consistency="stale", min_index=0)
            assert c.seen_index == 5

    run(go)


# -- error mapping ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "err",
    [
        InvalidArgument("key too large"),
        ReadOnly("disk full"),
        ConditionFailed("version mismatch"),
        StorageError("bad data dir"),
        ConfigError("bad config"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_definite_errors_are_raised_at_once_as_the_same_kind(srv: FakeServer, err: RaftKVError) -> None:
    srv.kv.inject(err)

    async def go() -> None:
        async with Client([srv.addr], timeout_s=5) as c:
            await c.put("k", "v")

    with pytest.raises(type(err)) as ei:
        run(go)
    assert type(ei.value) is type(err)
    assert ei.value.message == err.message
    assert srv.kv.calls["Put"] == 1


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ReadOnly),
        (grpc.StatusCode.UNIMPLEMENTED, RaftKVError),
        (grpc.StatusCode.INTERNAL, RaftKVError),
    ],
)
def test_bare_grpc_statuses_map_onto_the_error_tree(
    srv: FakeServer, code: grpc.StatusCode, expected: type[RaftKVError]
) -> None:
    srv.kv.inject_status(code, "from a proxy")

    async def go() -> None:
        async with Client([srv.addr], timeout_s=5) as c:
            await c.get("k")

    with pytest.raises(RaftKVError) as ei:
        run(go)
    assert type(ei.value) is expected
    assert "from a proxy" in ei.value.message


@pytest.mark.parametrize(
    "err",
    [
        Unavailable("no leader"),
        Timeout("slow", outcome_unknown=True),
        NotLeader(0, ""),
        NotLeader(3, ""),
    ],
    ids=["unavailable", "timeout", "not-leader-unknown", "not-leader-no-addr"],
)
def test_retryable_errors_are_retried(srv: FakeServer, err: RaftKVError) -> None:
    srv.kv.inject(err, err)

    async def go() -> None:
        async with Client([srv.addr], timeout_s=5) as c:
            await c.put("k", "v")

    run(go)
    assert srv.kv.calls["Put"] == 3
    assert srv.kv.applied == 1


def test_a_follower_that_knows_no_leader_address_ends_in_unavailable_with_the_cause(srv: FakeServer) -> None:
    srv.kv.mode = "follower"
    srv.kv.leader_id, srv.kv.leader_addr = 2, ""

    async def go() -> None:
        async with Client([srv.addr], timeout_s=0.5) as c:
            await c.put("k", "v")

    with pytest.raises(Unavailable) as ei:
        run(go)
    cause = ei.value.__cause__
    assert isinstance(cause, NotLeader) and cause.leader_id == 2
    assert ei.value.exit_code == 4


# -- status -----------------------------------------------------------------------------------------------------
def test_status_and_cluster_status(srv: FakeServer) -> None:
    dead = f"127.0.0.1:{free_port()}"

    async def go() -> None:
        async with Client([dead, srv.addr], timeout_s=3) as c:
            st = await c.status()
            assert (st.reachable, st.id, st.role, st.endpoint) == (True, 1, "leader", srv.addr)
            assert (await c.status(srv.addr)).id == 1
            with pytest.raises(Unavailable):
                await c.status(dead)
            both = await c.cluster_status(timeout_s=1)
            assert [(s.endpoint, s.reachable) for s in both] == [(dead, False), (srv.addr, True)]
            assert both[0].role == "unreachable" and both[0].error

    run(go)


def test_cluster_status_with_members_asks_the_members_that_are_not_endpoints(srv: FakeServer) -> None:
    dead = f"127.0.0.1:{free_port()}"
    srv.kv.members = (Member(1, "p:1", srv.addr), Member(2, "p:2", dead), Member(3, "p:3", "", learner=True))

    async def go() -> None:
        async with Client([srv.addr], timeout_s=3) as c:
            assert [s.endpoint for s in await c.cluster_status(timeout_s=1)] == [srv.addr]
            every = await c.cluster_status(timeout_s=1, members=True)
            assert [(s.endpoint, s.reachable, s.error) for s in every] == [
                (srv.addr, True, ""), (dead, False, "connection refused")
            ]
            assert every[0].learners == (3,)

    run(go)


# -- nothing listening: fail at once; something answering: wait --------------------------------------------------
def test_a_request_no_endpoint_accepts_fails_at_once_saying_nothing_listens() -> None:
    dead = [f"127.0.0.1:{free_port()}" for _ in range(3)]

    async def go(op: str) -> None:
        async with Client(dead, timeout_s=30) as c:  # a deadline the test would notice (no Timeout, no "30s")
            await (c.put("k", "v") if op == "put" else c.get("k"))

    for op in ("put", "get"):
        with pytest.raises(Unavailable) as ei:
            run(lambda: go(op))  # noqa: B023 (run at once)
        # Each endpoint was tried once, one after the other, and none of gRPC's own text is in the message.
        assert ei.value.message == f"{op} failed after 3 attempts: nothing is listening at {', '.join(dead)} " \
            "(connection refused)"
        assert ei.value.applied == "no"  # never sent: a write that cannot have been applied


def test_a_host_name_that_does_not_resolve_is_nothing_listening() -> None:
    async def go() -> None:
        async with Client(["no-such-host.invalid:2379"], timeout_s=10) as c:
            await c.put("k", "v")

    with pytest.raises(RaftKVError) as ei:  # a Timeout where the resolver does not answer
        run(go)
    if "cannot resolve the host name" not in ei.value.message:
        pytest.skip(f"this machine's resolver did not say the name does not exist: {ei.value.message}")
    assert isinstance(ei.value, Unavailable)
    assert ei.value.message == (
        "put failed after 1 attempt: nothing is listening at no-such-host.invalid:2379 (cannot resolve the host name)"
    )
    assert ei.value.applied == "no"


@pytest.mark.parametrize("clock", [{0: 1}, {1: -1}, {2**64: 1}, {1: 2**64}, {"x": 1}])
def test_a_vector_clock_no_node_could_hold_is_refused_before_sending(srv: FakeServer, clock: Any) -> None:
    async def go() -> None:
        async with Client([srv.addr], timeout_s=5) as c:
            with pytest.raises(InvalidArgument, match="vector clock"):
                await c.put("k", "v", context=clock)
            with pytest.raises(InvalidArgument, match="vector clock"):
                await c.txn([Compare("k", "vclock", "==", clock)])

    run(go)
    assert srv.kv.calls["Put"] == srv.kv.calls["Txn"] == 0


def test_numbers_the_wire_cannot_carry_are_refused_before_sending(srv: FakeServer) -> None:
    big = 2**64

    async def go() -> None:
        async with Client([srv.addr], timeout_s=5) as c:
            calls: list[Any] = [
                c.incr("k", 2**63), c.get("k", min_index=big), c.range("", min_index=-1),
                c.put("k", "v", if_version=big), c.txn(success=[TxnOp.incr("k", -(2**63) - 1)]),
                c.member_promote(big), c.member_remove(0),
                c.transfer_leader(-1),
            ]
            for call in calls:
                with pytest.raises(InvalidArgument, match="integer"):
                    await call

    run(go)
    assert sum(srv.kv.calls.values()) == 0


def test_retries_go_on_while_some_endpoint_answers(srv: FakeServer) -> None:
    # One node answers "no leader" (an election in progress), the other refuses connections (restarting): the
    # client waits within its deadline, and says what each endpoint answered.
    srv.kv.mode = "down"
    dead = f"127.0.0.1:{free_port()}"

    async def go() -> None:
        async with Client([dead, srv.addr], timeout_s=1) as c:
            await c.put("k", "v")

    with pytest.raises(Unavailable) as ei:
        run(go)
    assert srv.kv.calls["Put"] >= 2
    msg = ei.value.message
    assert msg.startswith("put failed after ") and " in 1s: " in msg
    assert f"{dead}: connection refused" in msg and f"{srv.addr}: node 1 has no leader" in msg
    assert "failed to connect" not in msg


def test_a_node_that_comes_back_is_waited_for_while_another_answers() -> None:
    port = free_port()
    back = FakeServer(FakeKV(node_id=2), port=port)
    with FakeServer(FakeKV(node_id=1, mode="down")) as electing:

        async def go() -> None:
            async with Client([f"127.0.0.1:{port}", electing.addr], timeout_s=30) as c:
                with pytest.raises(Unavailable):  # pinned to the restarting node: refused
                    await c.status(f"127.0.0.1:{port}")
                threading.Timer(0.3, back.start).start()  # the node comes back while the put retries
                await c.put("k", "v")

        try:
            run(go)
        finally:
            back.stop()
    assert back.kv.applied == 1


# -- the client's own vector clock order, and cluster health ----------------------------------------------------
_clocks = st.dictionaries(st.integers(1, 4), st.integers(0, 3), max_size=4)


@given(_clocks, _clocks)
def test_compare_orders_clocks_as_the_state_machine_does(a: dict[int, int], b: dict[int, int]) -> None:
    from raftkv.kv.vclock import VectorClock
    from raftkv.kv.vclock import compare as fsm_compare

    assert compare(a, b) == fsm_compare(VectorClock(a), VectorClock(b)).name.lower()


@pytest.mark.parametrize("bad", [{0: 1}, {-1: 1}, {1: -1}, {1: True}, {"1": 1}])
def test_compare_refuses_what_a_vector_clock_refuses(bad: Any) -> None:
    from raftkv.kv.vclock import VectorClock

    with pytest.raises(ValueError):
        VectorClock(bad)
    with pytest.raises(ValueError):
        compare(bad, {})


def _up(nid: int, role: str, leader: int, members: int = 3, term: int = 2) -> NodeStatus:
    ms = tuple((i, f"p:{i}", f"h:{i}") for i in range(1, members + 1))
    return NodeStatus(f"h:{nid}", True, id=nid, role=role, leader_id=leader, term=term, client_addr=f"h:{nid}",
                      members=ms)


def _down(nid: int, why: str = "connection refused") -> NodeStatus:
    return NodeStatus(f"h:{nid}", False, client_addr=f"h:{nid}", error=why)


def test_cluster_health() -> None:
    lost = cluster_health([_up(1, "pre-candidate", 0), _down(2), _down(3)])
    assert (lost.available, lost.quorum, lost.leader_id, [s.id for s in lost.unreachable]) == (False, 2, 0, [2, 3])
    assert lost.describe() == (
        "no leader is known: only 1 of the 3 voters answers, a quorum needs 2; node 2 (h:2) and node 3 (h:3) do "
        "not answer (connection refused)"
    )
    # A leader that has not noticed yet that its followers are gone: no quorum either.
    stale = cluster_health([_up(1, "leader", 1), _down(2), _down(3, "no answer within 1s")])
    assert not stale.available
    assert stale.describe() == (
        "node 1 (h:1) is the leader (term 2), but only 1 of the 3 voters answers, a quorum needs 2; node 2 (h:2) "
        "does not answer (connection refused); node 3 (h:3) does not answer (no answer within 1s)"
    )
    ok = cluster_health([_up(1, "leader", 1), _up(2, "follower", 1), _down(3)])
    assert ok.available
    assert ok.describe() == "node 1 (h:1) is the leader (term 2), 2 of the 3 voters answer; node 3 (h:3) does not " \
        "answer (connection refused)"
    assert cluster_health([_up(1, "leader", 1), _up(2, "follower", 1), _up(3, "follower", 1)]).describe() == (
        "node 1 (h:1) is the leader (term 2), all 3 voters answer"
    )
    # Learners do not count; members that are not endpoints were not asked; no member list: the endpoints count.
    learner = replace(_up(1, "leader", 1, members=2), learners=(2,))
    assert cluster_health([learner]).available
    assert not cluster_health([_up(1, "leader", 1)]).available  # nodes 2 and 3: not asked, so not answering
    nobody = cluster_health([_down(1), _down(2)])
    assert not nobody.available
    assert nobody.describe() == "h:1 and h:2 do not answer (connection refused)"


def test_local_cluster_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RAFTKV_ENDPOINTS", "RAFTKV_CLUSTER_DIR"):
        monkeypatch.delenv(var, raising=False)
    assert local_cluster_dir() == Path(".raftkv-cluster")
    assert local_cluster_dir(None, "d") == Path("d")
    assert local_cluster_dir("h:1", "d") is None
    monkeypatch.setenv("RAFTKV_CLUSTER_DIR", "e")
    assert local_cluster_dir() == Path("e")
    monkeypatch.setenv("RAFTKV_ENDPOINTS", "h:1")
    assert local_cluster_dir(None, "d") is None


# -- the sync client --------------------------------------------------------------------------------------------
def test_sync_client(srv: FakeServer) -> None:
    with SyncClient([srv.addr], timeout_s=5) as c:
        c.put("k", "v")
        kv = c.get("k")
        assert kv is not None and kv.value == b"v"
        assert [x.key for x in c.range().kvs] == [b"k"]
        assert c.delete("k").deleted
        assert c.get("k") is None
        assert c.status().role == "leader"
        assert c.cluster_status()[0].reachable
        assert c.seen_index == 2
    with pytest.raises(RaftKVError, match="closed"):
        c.get("k")


def test_sync_client_works_inside_a_running_event_loop(srv: FakeServer) -> None:
    async def go() -> bytes | None:
        with SyncClient([srv.addr], timeout_s=5) as c:  # called from the loop's own thread
            c.put("k", "from a loop")
            kv = c.get("k")
            return kv.value if kv else None

    assert asyncio.run(go()) == b"from a loop"


def test_sync_client_from_many_threads(srv: FakeServer) -> None:
    errors: list[BaseException] = []
    with SyncClient([srv.addr], timeout_s=10, lanes=4) as c:

        def work(i: int) -> None:
            try:
                for j in range(5):
                    c.put(f"t{i}/{j}", "v")
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert srv.kv.applied == 40
    assert srv.kv.max_outstanding_per_session == 1


def test_sync_client_raises_the_same_errors(srv: FakeServer) -> None:
    srv.kv.inject(InvalidArgument("nope"))
    with SyncClient([srv.addr]) as c, pytest.raises(InvalidArgument, match="nope"):
        c.put("k", "v")


# -- endpoint resolution ----------------------------------------------------------------------------------------
def test_resolve_endpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAFTKV_ENDPOINTS", raising=False)
    monkeypatch.delenv("RAFTKV_CLUSTER_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_endpoints("a:1, b:2,", None) == ["a:1", "b:2"]
    with pytest.raises(ConfigError, match="HOST:PORT"):
        resolve_endpoints("nonsense", None)
    with pytest.raises(ConfigError, match="no endpoints: pass --endpoints, set RAFTKV_ENDPOINTS"):
        resolve_endpoints(None, None)
    monkeypatch.setenv("RAFTKV_ENDPOINTS", "e:1")
    assert resolve_endpoints(None, None) == ["e:1"]
    assert resolve_endpoints("x:1", None) == ["x:1"]
    monkeypatch.delenv("RAFTKV_ENDPOINTS")

    # The local cluster's file: the default directory, $RAFTKV_CLUSTER_DIR, or --cluster-dir.
    default = tmp_path / ".raftkv-cluster"
    default.mkdir()
    (default / CLUSTER_FILE).write_text(json.dumps({"endpoints": ["d:1", "d:2"]}))
    assert resolve_endpoints(None, None) == ["d:1", "d:2"]
    other = tmp_path / "other"
    other.mkdir()
    (other / CLUSTER_FILE).write_text(json.dumps({"endpoints": ["o:1"]}))
    monkeypatch.setenv("RAFTKV_CLUSTER_DIR", str(other))
    assert resolve_endpoints(None, None) == ["o:1"]
    assert resolve_endpoints(None, str(default)) == ["d:1", "d:2"]
    with pytest.raises(ConfigError, match="no local cluster in"):
        resolve_endpoints(None, str(tmp_path / "missing"))
    (other / CLUSTER_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        resolve_endpoints(None, None)


def test_client_accepts_any_error_kind_as_raftkv_error(srv: FakeServer) -> None:
    """Every error a client raises is a RaftKVError with an exit code (what the CLI relies on)."""
    srv.kv.mode = "down"

    async def go() -> Any:
        async with Client([srv.addr], timeout_s=0.3) as c:
            return await c.get("k")

    with pytest.raises(RaftKVError) as ei:
        run(go)
    assert isinstance(ei.value, Unavailable) and ei.value.exit_code == 4


# -- what an error says of the write, and the single-attempt mode ----------------------------------------------------


def test_every_error_says_whether_the_write_was_applied(srv: FakeServer) -> None:
    """The server's "raftkv-applied" reaches the caller as ``applied``, whatever the message; a not-leader refusal
    and a failed condition are told apart by kind and code, not by text."""

    async def go() -> None:
        async with Client([srv.addr], timeout_s=2, single_attempt=True) as c:
            srv.kv.inject(Unavailable("refused before proposing"))
            with pytest.raises(Unavailable) as e:
                await c.put("k", "v")
            assert e.value.applied == "no" and not e.value.outcome_unknown
            srv.kv.inject(Unavailable("the leader changed after it was forwarded", applied="unknown"))
            with pytest.raises(Unavailable) as e:
                await c.put("k", "v")
            assert e.value.applied == "unknown" and e.value.outcome_unknown
            srv.kv.inject(NotLeader(2, "127.0.0.1:1"))
            with pytest.raises(NotLeader) as nl:
                await c.put("k", "v")
            assert nl.value.applied == "no" and nl.value.grpc_code == "FAILED_PRECONDITION"
            srv.kv.inject(ConditionFailed("the version is 1"))
            with pytest.raises(ConditionFailed) as cf:
                await c.put("k", "w", if_version=9)
            assert cf.value.applied == "no" and cf.value.grpc_code == "ABORTED"
            srv.kv.inject(Unavailable("a read cannot be served here", applied="unknown"))
            with pytest.raises(Unavailable) as e:
                await c.get("k")
            assert e.value.applied == "no"  # reads change nothing, whatever a server says

    run(go)


def test_single_attempt_makes_exactly_one_call_and_follows_no_redirect(srv: FakeServer) -> None:
    srv.kv.mode = "follower"
    srv.kv.leader_id, srv.kv.leader_addr = 2, "127.0.0.1:1"

    async def go() -> None:
        async with Client([srv.addr], timeout_s=5, single_attempt=True) as c:
            with pytest.raises(NotLeader):
                await c.put("k", "v")
            assert srv.kv.calls["Put"] == 1
            srv.kv.mode = "down"  # Unavailable: a retrying client would try again and again
            with pytest.raises(Unavailable):
                await c.put("k", "v")
            assert srv.kv.calls["Put"] == 2
            srv.kv.mode = "leader"
            await asyncio.gather(*(c.put(f"c{i}", "v") for i in range(10)))
            assert srv.kv.calls["Put"] == 12 and srv.kv.calls["Batch"] == 0  # no coalescing either

    run(go)
    with pytest.raises(ConfigError, match="one endpoint"):
        Client([srv.addr, "127.0.0.1:1"], single_attempt=True)


def test_a_dead_endpoint_in_single_attempt_mode_says_not_applied() -> None:
    async def go() -> None:
        async with Client([f"127.0.0.1:{free_port()}"], timeout_s=2, single_attempt=True) as c:
            with pytest.raises(Unavailable) as e:
                await c.put("k", "v")
            assert e.value.applied == "no"  # the connection could not be made: nothing was sent

    run(go)
