"""The ``raftkv`` command through click's CliRunner, against a fake server: output formats, exit codes, and errors
as one line on stderr."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from raftkv import cli as cli_module
from raftkv.cli import main
from raftkv.client import CLUSTER_FILE, Client, KeyValue
from raftkv.errors import ExitCode, InvalidArgument, ReadOnly, Unavailable
from raftkv.settings import Member, Settings

from .fake_server import FakeKV, FakeServer, free_port

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def srv() -> Iterator[FakeServer]:
    with FakeServer(FakeKV(node_id=1)) as s:
        yield s


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("RAFTKV_ENDPOINTS", "RAFTKV_CLUSTER_DIR", "RAFTKV_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # no ./.raftkv-cluster here


def cli(*args: str, input: bytes | str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, env=env, catch_exceptions=True)


def kv(srv: FakeServer, *args: str, input: bytes | str | None = None) -> Result:
    return cli("--endpoints", srv.addr, "--timeout", "5", *args, input=input)


def one_error_line(r: Result) -> str:
    """The single ``error: ...`` line of a failed command (and nothing else on stderr, no traceback)."""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.output
    return lines[0]


# -- put / get / delete / list ----------------------------------------------------------------------------------
def test_put_prints_ok_with_revision_and_version(srv: FakeServer) -> None:
    r = kv(srv, "put", "greeting", "hello")
    assert r.exit_code == 0, r.output
    assert r.stdout == "OK revision=1 version=1\n"
    r = kv(srv, "put", "greeting", "again")
    assert r.stdout == "OK revision=2 version=2\n"
    assert srv.kv.data[b"greeting"].value == b"again"


def test_put_json(srv: FakeServer) -> None:
    r = kv(srv, "put", "k", "v", "--output", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {
        "key": "k",
        "create_revision": 1,
        "mod_revision": 1,
        "version": 1,
        "vclock": {"1": 1},
        "index": 1,
        "revision": 1,
        "siblings": 0,
    }
    r = kv(srv, "--output", "json", "put", "k", "w")  # the global option works too
    assert json.loads(r.stdout)["version"] == 2


def test_put_reads_the_value_from_stdin_as_bytes(srv: FakeServer) -> None:
    blob = b"\x00\xffbinary\nvalue"
    r = kv(srv, "put", "blob", "-", input=blob)
    assert r.exit_code == 0, r.output
    assert srv.kv.data[b"blob"].value == blob


def test_get_prints_the_raw_value_alone(srv: FakeServer) -> None:
    srv.kv.put_local(b"k", b"hello")
    srv.kv.put_local(b"blob", b"\x00\xff\n")
    r = kv(srv, "get", "k")
    assert r.exit_code == 0, r.output
    assert r.stdout_bytes == b"hello"  # no newline when stdout is not a terminal
    assert kv(srv, "get", "blob").stdout_bytes == b"\x00\xff\n"
    assert r.stderr == ""


def test_get_json_shape(srv: FakeServer) -> None:
    srv.kv.put_local(b"k", b"hello")
    srv.kv.put_local(b"blob", b"\xff\x00")
    r = kv(srv, "get", "k", "--output", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {
        "key": "k",
        "value": "hello",
        "create_revision": 1,
        "mod_revision": 1,
        "version": 1,
        "vclock": {"1": 1},
        "index": 2,
        "revision": 2,
    }
    out = json.loads(kv(srv, "get", "blob", "--output", "json").stdout)
    assert out["value"] is None
    assert base64.b64decode(out["value_base64"]) == b"\xff\x00"


def test_get_passes_read_options(srv: FakeServer) -> None:
    srv.kv.put_local(b"k", b"v")
    r = kv(srv, "get", "k", "--consistency", "bounded", "--max-staleness-ms", "250", "--min-index", "1")
    assert r.exit_code == 0, r.output
    opts = srv.kv.reads[-1]
    assert (opts.consistency, opts.max_staleness_ms, opts.min_index) == (3, 250, 1)


def test_get_missing_key_exits_3_with_one_line(srv: FakeServer) -> None:
    r = kv(srv, "get", "nope")
    assert r.exit_code == ExitCode.NOT_FOUND == 3
    assert r.stdout == ""
    assert one_error_line(r) == "error: key 'nope' not found"


def test_delete_prints_deleted_or_not_found(srv: FakeServer) -> None:
    srv.kv.put_local(b"k", b"v")
    r = kv(srv, "delete", "k")
    assert (r.exit_code, r.stdout) == (0, "deleted\n")
    r = kv(srv, "delete", "k")
    assert (r.exit_code, r.stdout) == (0, "not found\n")
    r = kv(srv, "delete", "k", "--output", "json")
    assert json.loads(r.stdout) == {"deleted": False, "index": 4, "revision": 4}


def test_list_text_and_json(srv: FakeServer) -> None:
    for k, v in [(b"user/1", b"ann"), (b"user/2", b"bob"), (b"zzz", b"z")]:
        srv.kv.put_local(k, v)
    r = kv(srv, "list", "user/")
    assert r.exit_code == 0, r.output
    assert r.stdout == "user/1\tann\nuser/2\tbob\n"
    assert kv(srv, "list", "--keys-only").stdout == "user/1\nuser/2\nzzz\n"
    out = json.loads(kv(srv, "list", "user/", "--output", "json").stdout)
    assert [(x["key"], x["value"], x["version"]) for x in out] == [("user/1", "ann", 1), ("user/2", "bob", 1)]
    assert set(out[0]) == {"key", "value", "create_revision", "mod_revision", "version", "vclock"}
    out = json.loads(kv(srv, "list", "--keys-only", "--output", "json").stdout)
    assert "value" not in out[0]
    assert json.loads(kv(srv, "list", "nothing/", "--output", "json").stdout) == []


def test_list_limit_says_when_more_keys_follow(srv: FakeServer) -> None:
    for i in range(5):
        srv.kv.put_local(f"k{i}".encode(), b"v")
    r = kv(srv, "list", "--limit", "2", "--keys-only")
    assert r.exit_code == 0, r.output
    assert r.stdout == "k0\nk1\n"
    assert "--start-after 'k1'" in r.stderr
    r = kv(srv, "list", "--start-after", "k1", "--keys-only")
    assert r.stdout == "k2\nk3\nk4\n"


def test_list_escapes_what_is_not_text_unless_raw(srv: FakeServer) -> None:
    srv.kv.put_local(b"bin", b"\x00\xff\tx\ny\\z")
    srv.kv.put_local(b"k\n2", "caf\u00e9".encode())
    r = kv(srv, "list")
    assert r.exit_code == 0, r.output
    assert r.stdout_bytes == b"bin\t\\x00\\xff\\tx\\ny\\\\z\nk\\n2\tcaf\xc3\xa9\n"  # one line per key, UTF-8 kept
    assert kv(srv, "list", "--keys-only").stdout_bytes == b"bin\nk\\n2\n"
    raw = kv(srv, "list", "--output", "raw")
    assert raw.stdout_bytes == b"bin\t\x00\xff\tx\ny\\z\nk\n2\tcaf\xc3\xa9\n"


# -- status -----------------------------------------------------------------------------------------------------
def test_status_table(srv: FakeServer) -> None:
    dead = f"127.0.0.1:{free_port()}"  # not a member: the cluster (node 1 alone) can serve
    srv.kv.members = (Member(1, "p:1", srv.addr),)
    r = cli("--endpoints", f"{srv.addr},{dead}", "status")
    assert r.exit_code == 0, r.output
    header = r.stdout.splitlines()[0].split()
    assert header == ["node", "address", "role", "term", "commit", "applied", "leader", "reachable"]
    assert "leader" in r.stdout and "unreachable" in r.stdout
    # Why a node does not answer, in a few words (not gRPC's "failed to connect to all addresses; last error ...").
    assert f"{dead}: connection refused" in r.stdout
    assert "failed to connect" not in r.output and r.stderr == ""


def _members(srv: FakeServer, *others: str) -> None:
    """Make ``srv`` node 1 of a cluster whose other members are at ``others`` (nodes 2, 3, ...)."""
    srv.kv.members = (Member(1, "p:1", srv.addr), *(Member(i, f"p:{i}", a) for i, a in enumerate(others, 2)))


@pytest.mark.parametrize("mode", ["down", "leader"])
def test_status_exits_4_when_a_quorum_of_voters_does_not_answer(srv: FakeServer, mode: str) -> None:
    # Quorum lost: node 1 answers (with no leader, or still believing it leads), nodes 2 and 3 are gone. Only node
    # 1 is an endpoint: the others are found in its member list, asked too, and shown.
    d2, d3 = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    _members(srv, d2, d3)
    srv.kv.mode = mode
    r = cli("--endpoints", srv.addr, "status", "--output", "json")
    assert r.exit_code == ExitCode.UNAVAILABLE == 4, r.output
    nodes = json.loads(r.stdout)["nodes"]
    assert [(n["id"], n["role"], n["client_addr"]) for n in nodes] == [
        (1, "candidate" if mode == "down" else "leader", srv.addr), (2, "unreachable", d2), (3, "unreachable", d3)
    ]
    head = "no leader is known: only" if mode == "down" else f"node 1 ({srv.addr}) is the leader (term 1), but only"
    assert one_error_line(r) == (
        f"error: the cluster cannot serve: {head} 1 of the 3 voters answers, a quorum needs 2; node 2 ({d2}) and "
        f"node 3 ({d3}) do not answer (connection refused)"
    )


def test_status_exits_0_when_a_quorum_answers_and_a_leader_is_known(srv: FakeServer) -> None:
    with FakeServer(FakeKV(node_id=2, mode="follower", leader_id=1)) as two:
        dead = f"127.0.0.1:{free_port()}"
        _members(srv, two.addr, dead)
        r = cli("--endpoints", f"{srv.addr},{two.addr}", "status")
        assert r.exit_code == 0, r.output
        assert r.stderr == ""
        assert len(r.stdout.splitlines()) == 1 + 3 + 1  # header, three members, the note on node 3


def test_status_help_documents_its_exit_codes() -> None:
    out = " ".join(cli("status", "--help").stdout.split())
    assert "Exit codes: 0 the cluster can serve (a leader is known and a quorum of the voters answers); 4" in out


def test_status_json_shape(srv: FakeServer) -> None:
    dead = f"127.0.0.1:{free_port()}"
    srv.kv.members = (Member(1, "p:1", srv.addr),)
    r = cli("--endpoints", f"{srv.addr},{dead}", "status", "--output", "json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert list(data) == ["nodes"]
    keys = {"id", "role", "term", "commit", "applied", "revision", "client_addr", "peer_addr"}
    assert all(set(n) == keys for n in data["nodes"])
    up, down = data["nodes"]
    assert (up["id"], up["role"], up["term"], up["client_addr"], up["peer_addr"]) == (1, "leader", 1, srv.addr, "p:1")
    assert (down["role"], down["client_addr"], down["term"]) == ("unreachable", dead, None)


def test_status_counts_pre_candidates_as_candidates(srv: FakeServer) -> None:
    async def pre() -> tuple[str, int]:
        return "pre-candidate", 0

    srv.kv.role_for_status = pre
    r = kv(srv, "status", "--output", "json")
    assert json.loads(r.stdout)["nodes"][0]["role"] == "candidate"


def test_status_exits_4_when_no_node_answers() -> None:
    dead = f"127.0.0.1:{free_port()}"
    r = cli("--endpoints", dead, "--timeout", "1", "status", "--output", "json")
    assert r.exit_code == ExitCode.UNAVAILABLE
    assert json.loads(r.stdout)["nodes"][0]["role"] == "unreachable"
    assert one_error_line(r) == f"error: the cluster cannot serve: {dead} does not answer (connection refused)"


# -- errors -----------------------------------------------------------------------------------------------------
def test_connection_failure_is_one_line_exit_4_without_traceback() -> None:
    r = cli("--endpoints", f"127.0.0.1:{free_port()}", "--timeout", "1", "get", "k")
    assert r.exit_code == ExitCode.UNAVAILABLE == 4
    line = one_error_line(r)
    assert "failed" in line


def test_nothing_listening_fails_at_once_and_says_so() -> None:
    # A 30 s deadline: waiting it out would end in a message about the deadline, not this one.
    dead = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    for args in (("get", "k"), ("put", "k", "v"), ("list",), ("member", "list")):
        r = cli("--endpoints", ",".join(dead), "--timeout", "30", *args)
        assert r.exit_code == ExitCode.UNAVAILABLE, args
        what = " ".join(args[:2]) if args[0] == "member" else args[0]
        assert one_error_line(r) == (
            f"error: {what} failed after 2 attempts: nothing is listening at {dead[0]}, {dead[1]} (connection refused)"
        )


def test_a_request_that_fails_for_want_of_a_quorum_says_what_the_cluster_says(srv: FakeServer) -> None:
    # `cluster kill 2; cluster kill 3; raftkv get k`: node 1 answers "no leader"; the error says that there is no
    # leader and which members do not answer, not how the last connection attempt failed.
    d2, d3 = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    _members(srv, d2, d3)
    srv.kv.mode = "down"
    for endpoints in (srv.addr, f"{srv.addr},{d2},{d3}"):
        r = cli("--endpoints", endpoints, "--timeout", "1", "get", "k")
        assert r.exit_code == ExitCode.UNAVAILABLE
        assert one_error_line(r) == (
            "error: get failed after 1s: no leader is known: only 1 of the 3 voters answers, a quorum needs 2; "
            f"node 2 ({d2}) and node 3 ({d3}) do not answer (connection refused)"
        )
    # A write whose outcome is unknown keeps saying so; what the cluster says is added.
    srv.kv.mode = "leader"
    srv.kv.lose_reply = [Unavailable("the leader changed", applied="unknown")] * 1000
    r = cli("--endpoints", srv.addr, "--timeout", "1", "put", "k", "v")
    line = one_error_line(r)
    assert "outcome is unknown" in line and "; the cluster: " in line and f"node 2 ({d2})" in line


def test_write_with_unknown_outcome_says_so(srv: FakeServer) -> None:
    srv.kv.mode = "hang"
    r = cli("--endpoints", srv.addr, "--timeout", "0.5", "put", "k", "v")
    assert r.exit_code == ExitCode.UNAVAILABLE
    assert "outcome is unknown" in one_error_line(r)


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("put", "", "v"), ExitCode.INVALID, "must not be empty"),
        (("put", "k", "v", "--context", '{"0": 1}'), ExitCode.INVALID, "vector clock's node ids are positive"),
        (("put", "k", "v", "--context", '{"1": -1}'), ExitCode.INVALID, "vector clock's node ids are positive"),
        (("get", "k", "--consistency", "sometimes"), ExitCode.USAGE, "--consistency"),
        (("list", "--limit", "0"), ExitCode.USAGE, "--limit"),
        (("put", "k"), ExitCode.USAGE, "VALUE"),
        (("get",), ExitCode.USAGE, "KEY"),
        (("frobnicate",), ExitCode.USAGE, "frobnicate"),
    ],
)
def test_bad_input_is_one_line_with_the_right_exit_code(
    srv: FakeServer, args: tuple[str, ...], code: int, fragment: str
) -> None:
    r = kv(srv, *args)
    assert r.exit_code == code, r.output
    assert fragment in one_error_line(r)


def test_bad_global_option_is_one_line() -> None:
    r = cli("--timeout", "soon", "get", "k")
    assert r.exit_code == ExitCode.USAGE
    assert "--timeout" in one_error_line(r)


def test_server_errors_become_their_exit_codes(srv: FakeServer) -> None:
    srv.kv.inject(InvalidArgument("value too large"))
    r = kv(srv, "put", "k", "v")
    assert (r.exit_code, one_error_line(r)) == (ExitCode.INVALID, "error: value too large")
    srv.kv.inject(ReadOnly("disk full"))
    r = kv(srv, "put", "k", "v")
    assert (r.exit_code, one_error_line(r)) == (ExitCode.READ_ONLY, "error: disk full")


def test_messages_show_keys_as_text_not_python_reprs(srv: FakeServer) -> None:
    # Whatever formats a key with repr() (an older server's messages), the line shows the key as text.
    srv.kv.inject(InvalidArgument("incr: the value of b'user:1' is not a 64-bit decimal integer"))
    r = kv(srv, "incr", "user:1")
    assert one_error_line(r) == "error: incr: the value of 'user:1' is not a 64-bit decimal integer"
    srv.kv.inject(InvalidArgument("bad key b'\\xff\\x00k'"))
    assert one_error_line(kv(srv, "get", "k")) == "error: bad key '\\xff\\x00k'"
    r = kv(srv, "get", "nope\udcff\n")  # not UTF-8, with a newline
    assert one_error_line(r) == "error: key 'nope\\xff\\n' not found"
    current = KeyValue(b"k", b"\xffold\n", 1, 2, 3, {1: 2})
    assert cli_module._describe_current(current).endswith("""value '\\xffold\\n'""")


def test_txn_refuses_an_empty_transaction(srv: FakeServer) -> None:
    for text in ("", "\n# nothing\n", "{}"):
        r = kv(srv, "txn", input=text)
        assert r.exit_code == ExitCode.INVALID, text
        assert one_error_line(r).startswith("error: the transaction is empty")
    assert srv.kv.calls["Txn"] == 0


def test_txn_at_a_terminal_says_it_reads_stdin(srv: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_module, "_stdin_isatty", lambda: True)
    r = kv(srv, "txn", input="")  # Ctrl-D at once
    hint, error = r.stderr.splitlines()
    assert hint.startswith("reading the transaction from stdin: ") and hint.endswith("end it with Ctrl-D")
    assert error.startswith("error: the transaction is empty")
    monkeypatch.setattr(cli_module, "_stdin_isatty", lambda: False)
    assert one_error_line(kv(srv, "txn", input="")).startswith("error: the transaction is empty")


def test_endpoint_errors_are_config_errors() -> None:
    r = cli("get", "k")
    assert r.exit_code == ExitCode.CONFIG
    assert one_error_line(r) == (
        "error: no endpoints: pass --endpoints, set RAFTKV_ENDPOINTS, or start a local cluster with `raftkv cluster up`"
    )
    r = cli("--endpoints", "nonsense", "get", "k")
    assert r.exit_code == ExitCode.CONFIG
    assert "HOST:PORT" in one_error_line(r)
    r = cli("--cluster-dir", "no/such/dir", "get", "k")
    assert r.exit_code == ExitCode.CONFIG
    assert "no local cluster" in one_error_line(r)


def test_endpoints_come_from_the_environment(srv: FakeServer) -> None:
    r = cli("put", "k", "v", env={"RAFTKV_ENDPOINTS": srv.addr})
    assert r.exit_code == 0, r.output


def test_unexpected_exceptions_are_one_line_with_a_hint(srv: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    async def boom(self: Client, key: Any, value: Any) -> Any:
        raise RuntimeError("something broke")

    monkeypatch.setattr(Client, "put", boom)
    r = kv(srv, "put", "k", "v")
    assert r.exit_code == ExitCode.ERROR
    line = one_error_line(r)
    assert "something broke" in line and "RAFTKV_DEBUG=1" in line
    # With RAFTKV_DEBUG the exception propagates (CliRunner catches it; a terminal would show the traceback).
    monkeypatch.setenv("RAFTKV_DEBUG", "1")
    r = kv(srv, "put", "k", "v")
    assert isinstance(r.exception, RuntimeError)


# -- a local cluster that is not running -----------------------------------------------------------------------
def _local_cluster(d: Path, client_addrs: list[str]) -> Path:
    """A local cluster directory as `raftkv cluster down` leaves it: cluster.json, node dirs, no pid files."""
    d.mkdir(parents=True)
    nodes = [{"id": i, "peer_addr": f"127.0.0.1:{free_port()}", "client_addr": a, "dir": f"node{i}", "pid": None}
             for i, a in enumerate(client_addrs, 1)]
    for n in nodes:
        (d / str(n["dir"])).mkdir()
    (d / CLUSTER_FILE).write_text(json.dumps({"version": 1, "endpoints": client_addrs, "nodes": nodes}))
    return d


def test_a_stopped_local_cluster_is_reported_at_once(tmp_path: Path) -> None:
    eps = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    d = _local_cluster(tmp_path / "elsewhere", eps)
    for args in (("get", "k"), ("put", "k", "v"), ("txn",)):
        r = cli("--cluster-dir", str(d), "--timeout", "30", *args, input="then put a 1\n")
        assert r.exit_code == ExitCode.UNAVAILABLE, r.output
        assert one_error_line(r) == (
            f"error: the local cluster in {d} is not running: start it with `raftkv cluster up --dir {d}`"
        )
    # The default directory (./.raftkv-cluster) needs no --dir; `status` still shows the table, then says so.
    _local_cluster(tmp_path / ".raftkv-cluster", eps)
    r = cli("--timeout", "30", "get", "k")
    assert one_error_line(r) == (
        f"error: the local cluster in {tmp_path / '.raftkv-cluster'} is not running: start it with `raftkv cluster up`"
    )
    r = cli("status", "--output", "json")
    assert r.exit_code == ExitCode.UNAVAILABLE
    assert [n["role"] for n in json.loads(r.stdout)["nodes"]] == ["unreachable"] * 3
    assert one_error_line(r).endswith("is not running: start it with `raftkv cluster up`")


def test_a_local_cluster_node_started_by_hand_is_running(srv: FakeServer, tmp_path: Path) -> None:
    # `raftkv serve --config DIR/node1/node.toml` writes no pid file: its port answering is enough.
    d = _local_cluster(tmp_path / "c", [srv.addr, f"127.0.0.1:{free_port()}"])
    r = cli("--cluster-dir", str(d), "get", "k")
    assert (r.exit_code, one_error_line(r)) == (ExitCode.NOT_FOUND, "error: key 'k' not found")


# -- serve ------------------------------------------------------------------------------------------------------
def test_serve_builds_settings_and_runs_the_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[Settings] = []
    fake = types.ModuleType("raftkv.server")

    def run(settings: Settings) -> int:
        seen.append(settings)
        return 7

    fake.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "raftkv.server", fake)
    cfg = tmp_path / "n.toml"
    cfg.write_text('id = 2\ndata_dir = "d"\n[[members]]\nid = 1\npeer_addr = "h:1"\nclient_addr = "h:2"\n')
    r = cli(
        "serve",
        "--config",
        str(cfg),
        "--id",
        "1",
        "--data-dir",
        str(tmp_path / "data"),
        "--tick-ms",
        "20",
        "--no-sync",
        "--member",
        "1=127.0.0.1:7001,127.0.0.1:8001",
        "--member",
        "2=127.0.0.1:7002,127.0.0.1:8002",
    )
    assert r.exit_code == 7, r.output
    (s,) = seen
    assert (s.id, s.tick_ms, s.sync, s.data_dir) == (1, 20, False, tmp_path / "data")
    assert [m.id for m in s.members] == [1, 2]


def test_serve_with_bad_settings_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "raftkv.server", types.ModuleType("raftkv.server"))
    r = cli("serve", "--config", "missing.toml")
    assert r.exit_code == ExitCode.CONFIG
    assert "does not exist" in one_error_line(r)
    r = cli("serve", "--id", "1", "--data-dir", "d", "--member", "garbage")
    assert r.exit_code == ExitCode.CONFIG
    assert "ID=PEER_ADDR,CLIENT_ADDR" in one_error_line(r)


# -- help -------------------------------------------------------------------------------------------------------
def test_version_and_the_node_limit() -> None:
    from raftkv import localcluster
    from raftkv.cli import MAX_LOCAL_NODES

    assert MAX_LOCAL_NODES == localcluster.MAX_NODES  # the launcher is imported only by the commands that use it
    r = cli("--version")
    assert r.exit_code == 0 and r.stdout.startswith("raftkv ")



def test_help_documents_exit_codes_and_examples() -> None:
    r = cli("--help")
    assert r.exit_code == 0
    for code in ("3  get: the key does not exist", "4  no leader", "8  bad configuration"):
        assert code in r.stdout
    for cmd in ("put", "get", "delete", "list", "status", "serve", "cluster"):
        r = cli(cmd, "--help")
        assert r.exit_code == 0, (cmd, r.output)
    assert "Examples" in cli("get", "--help").stdout
    assert "value_base64" in cli("get", "--help").stdout
    assert "cluster up --nodes 3" in cli("cluster", "--help").stdout


def test_bench_help_is_in_the_style_of_the_other_commands() -> None:
    for flag in ("--help", "-h"):
        r = CliRunner().invoke(main, ["bench", flag], prog_name="raftkv")
        assert r.exit_code == 0, r.output
        assert r.stdout.startswith("Usage: raftkv bench [OPTIONS]\n")
        assert "%%" not in r.stdout and "90 % get-linearizable, 10 % put" in r.stdout
        assert "  --workload NAME[,NAME...]" in r.stdout
        assert "  --system [raftkv|raftkv-etcd|etcd|noop|both|etcd-api]" in r.stdout
        assert "What to run:" in r.stdout and "  -h, --help" in r.stdout


def test_shell_completion_works_and_is_documented() -> None:
    assert '_RAFTKV_COMPLETE=bash_source raftkv' in cli("--help").stdout
    env = {"_RAFTKV_COMPLETE": "bash_complete", "COMP_WORDS": "raftkv clu", "COMP_CWORD": "1"}
    r = CliRunner().invoke(main, [], env=env, prog_name="raftkv")
    assert "plain,cluster" in r.stdout.splitlines()


def test_the_default_output_directories_are_ignored_by_git() -> None:
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    for path in (".raftkv-cluster/cluster.json", "raftkv-chaos/20260101-000000/verdict.json"):
        out = subprocess.run(["git", "check-ignore", "-q", path], cwd=root, capture_output=True)
        assert out.returncode == 0, f"{path} is not ignored by .gitignore"


def test_a_get_loads_no_server_side_code(srv: FakeServer) -> None:
    srv.kv.put_local(b"k", b"v")
    code = (
        "import sys\nfrom raftkv.cli import main\n"
        f"try:\n    main.main(['--endpoints', '{srv.addr}', 'get', 'k'])\nexcept SystemExit as e:\n    code = e.code\n"
        "print()\nprint(code)\nprint(' '.join(sorted(sys.modules)))"
    )
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTKV_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env, timeout=60)
    value, code_line, modules = out.stdout.splitlines()[-3:]
    assert (value, code_line) == ("v", "0"), out.stderr
    server_side = ("lmdb", "msgpack", "uvloop", "rich", "raftkv.kv", "raftkv.raft", "raftkv.storage", "raftkv.node",
                   "raftkv.server", "raftkv.servicer", "raftkv.pbmap", "raftkv.codec", "raftkv.settings",
                   "raftkv.localcluster")
    loaded = [m for m in modules.split() if any(m == p or m.startswith(p + ".") for p in server_side)]
    assert not loaded


def test_the_program_ends_at_once_with_its_output_and_exit_code(srv: FakeServer) -> None:
    # `raftkv` (python -m raftkv) ends its process without the interpreter's finalization: everything written is
    # there, and the exit code is the command's.
    for i in range(3000):
        srv.kv.put_local(f"key{i:05d}".encode(), b"v" * 50)
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTKV_")}

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "raftkv", "--endpoints", srv.addr, *args], capture_output=True,
                              cwd=root, env=env, timeout=60)

    out = run("list", "--limit", "5000")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(b"\n") == 3000 and out.stdout.endswith(b"key02999\t" + b"v" * 50 + b"\n")
    missing = run("get", "nope")
    assert (missing.returncode, missing.stderr) == (ExitCode.NOT_FOUND, b"error: key 'nope' not found\n")
    usage = run("get")
    assert usage.returncode == ExitCode.USAGE and usage.stderr.startswith(b"error: Missing argument")
    # The finalization (atexit handlers included) is skipped, unless RAFTKV_DEBUG asks for everything.
    code = ("import atexit, sys\natexit.register(lambda: sys.stderr.write('finalized'))\nfrom raftkv.cli import main\n"
            f"main(['--endpoints', '{srv.addr}', 'get', 'key00000'])")
    fast = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=root, env=env, timeout=60)
    assert (fast.returncode, fast.stdout, fast.stderr) == (0, b"v" * 50, b"")
    debug_env = {**env, "RAFTKV_DEBUG": "1"}
    debug = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=root, env=debug_env, timeout=60)
    assert (debug.returncode, debug.stderr) == (0, b"finalized")
    closed = subprocess.run(  # a reader that stops early: quiet, exit 0
        f"{sys.executable} -m raftkv --endpoints {srv.addr} list --limit 5000 | head -n 1",
        shell=True, capture_output=True, cwd=root, env=env, timeout=60,
    )
    assert (closed.returncode, closed.stdout, closed.stderr) == (0, b"key00000\t" + b"v" * 50 + b"\n", b"")
