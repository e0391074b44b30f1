"""The ``raftkv`` command: run a node, talk to a cluster, run a local cluster. See ``raftkv --help``.

Importing this module loads click, the client and gRPC, and nothing of the daemon: what only some commands need
(the local cluster launcher, settings, rich, backups, chaos, the daemon itself) is imported by those commands.
``tests/test_layers.py`` checks it."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from .cli_txn import TXN_HELP, parse_txn, parse_vclock
from .client import (
    CLUSTER_FILE,
    CONSISTENCY_LEVELS,
    Client,
    KeyValue,
    MemberList,
    NodeStatus,
    SyncClient,
    cluster_health,
    local_cluster_dir,
    resolve_endpoints,
)
from .errors import (
    ConditionFailed,
    ExitCode,
    InvalidArgument,
    LeaseNotFound,
    RaftKVError,
    Removed,
    Timeout,
    Unavailable,
    escaped,
    quoted,
)

T = TypeVar("T")

MAIN_HELP = f"""raftkv: a Raft-replicated key-value store.

\b
Try it on one machine:
  raftkv cluster up --nodes 3        # three nodes in ./.raftkv-cluster
  raftkv put greeting hello
  raftkv get greeting
  raftkv status
  raftkv cluster kill 1              # crash a node; the others elect a new leader
  raftkv cluster down --purge

\b
Where the cluster is (first found wins): --endpoints HOST:PORT,..., $RAFTKV_ENDPOINTS, the local cluster in
--cluster-dir / $RAFTKV_CLUSTER_DIR / ./.raftkv-cluster.

\b
Errors are one line on stderr ("error: ..."); set RAFTKV_DEBUG=1 for tracebacks of unexpected failures.
Exit codes:
  {ExitCode.OK}  success
  {ExitCode.ERROR}  unexpected failure
  {ExitCode.USAGE}  bad command line
  {ExitCode.NOT_FOUND}  get: the key does not exist; lease: the lease does not exist
  {ExitCode.UNAVAILABLE}  no leader, unreachable, or timed out (a write's outcome may then be unknown);
     status: no leader is known, or fewer than a quorum of the voters answer
  {ExitCode.INVALID}  the request was rejected as invalid (e.g. an empty or oversized key)
  {ExitCode.CONFLICT}  a condition did not hold
  {ExitCode.READ_ONLY}  the node refuses writes (e.g. its disk is full)
  {ExitCode.CONFIG}  bad configuration, data directory or local cluster state
  {ExitCode.REMOVED}  the node asked was removed from the cluster (ask another member)

\b
Shell completion (commands, options, choices), for the current shell; add the line to ~/.bashrc or ~/.zshrc:
  eval "$(_RAFTKV_COMPLETE=bash_source raftkv)"     # bash; zsh: zsh_source
  _RAFTKV_COMPLETE=fish_source raftkv | source       # fish
"""

OUTPUT_CHOICE = click.Choice(["text", "json"])
MAX_LOCAL_NODES = 99
"""``raftkv.localcluster.MAX_NODES`` (a test checks that they agree; the launcher is imported only when used)."""


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    import importlib.metadata  # only here: reading the package metadata costs more than the rest of a command

    try:
        version = importlib.metadata.version("raftkv")
    except importlib.metadata.PackageNotFoundError:
        version = "(not installed)"
    click.echo(f"raftkv {version}")
    ctx.exit(ExitCode.OK)


# -- errors: one line and an exit code --------------------------------------------------------------------------
def _die(message: str, exit_code: int) -> NoReturn:
    """Print ``error: <message>`` (one line) on stderr and exit with ``exit_code``."""
    line = " ".join(message.split()) if message else "failed"
    click.echo(f"error: {line}", err=True)
    raise click.exceptions.Exit(exit_code)


def _usage_error(e: click.UsageError) -> NoReturn:
    where = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
    _die(e.format_message() + where, e.exit_code)


class RaftKVGroup(click.Group):
    """A click group that turns every error into one line on stderr and the matching exit code."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The ``raftkv`` program (the console script, ``python -m raftkv``): run the command, then end the
        process at once (:func:`_end_process`). Tests and other callers of ``main.main(...)`` / click's CliRunner
        get the usual SystemExit."""
        try:
            return self.main(*args, **kwargs)
        except SystemExit as e:
            _end_process(e.code)
            raise

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as e:
            _usage_error(e)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.exceptions.NoArgsIsHelpError):
            raise
        except click.UsageError as e:
            _usage_error(e)
        except click.ClickException:
            raise
        except RaftKVError as e:
            msg = _plain(e.message)
            if e.outcome_unknown and "applied" not in msg:
                msg += "; the write may or may not have been applied"
            _die(msg, e.exit_code)
        except BrokenPipeError:  # `raftkv list | head`: stop quietly (and let Python not complain at exit either)
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            raise click.exceptions.Exit(ExitCode.OK) from None
        except Exception as e:
            if os.environ.get("RAFTKV_DEBUG", "") not in ("", "0"):
                raise
            _die(f"unexpected {type(e).__name__}: {e} (run with RAFTKV_DEBUG=1 for a traceback)", ExitCode.ERROR)


_BYTES_LITERAL = re.compile(r"""\bb('(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")""")
def _escaped(b: bytes) -> str:
    return escaped(b)


def _quoted(b: bytes) -> str:
    """A key (or value) in a message: ``'user:1'``."""
    return quoted(b)


def _plain(message: str) -> str:
    """A message with the Python bytes literals in it (``b'user:1'``: a server that formats keys with ``repr``)
    shown as the text they stand for (``'user:1'``)."""

    def one(m: re.Match[str]) -> str:
        import ast  # rarely needed

        try:
            b = ast.literal_eval(m.group(0))
        except (ValueError, SyntaxError):
            return m.group(0)
        return _quoted(b) if isinstance(b, bytes) else m.group(0)

    return _BYTES_LITERAL.sub(one, message)


_quick_exit = False
"""Set by the commands that only talk to the cluster through the client (see :func:`_end_process`)."""


def _end_process(code: Any) -> None:
    """End the process with ``code`` (as ``sys.exit`` would) without the interpreter's finalization, once a
    command that only talked to the cluster is done: tearing the interpreter down with gRPC loaded costs 20-40 ms
    here (gRPC's threads and native state, then every module), a fifth of such a command, and it has nothing else
    to do then (the client is closed, the output written). Only for those commands (not serve, the launcher,
    chaos or bench), when no other non-daemon thread runs (Python would wait for it) and never with RAFTKV_DEBUG
    (finalization may have something to say). Returns when it does not end the process."""
    if not _quick_exit or os.environ.get("RAFTKV_DEBUG", "") not in ("", "0"):
        return
    if any(t.is_alive() and not t.daemon and t is not threading.main_thread() for t in threading.enumerate()):
        return
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code & 0xFF
    else:  # sys.exit("message")
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: what a normal exit would not manage to write either
            pass
    os._exit(status)


@dataclass
class Globals:
    endpoints: str | None
    cluster_dir: str | None
    timeout_s: float
    output: str

    def endpoint_list(self) -> list[str]:
        """The endpoints to talk to. Raises Unavailable at once when they come from a local cluster none of whose
        nodes runs."""
        eps = resolve_endpoints(self.endpoints, self.cluster_dir)
        stopped = self.local_cluster_stopped()
        if stopped:
            raise Unavailable(stopped)
        return eps

    def local_cluster_stopped(self) -> str | None:
        """"the local cluster in DIR is not running: ..." when the endpoints come from a local cluster's directory
        and none of its nodes runs; else None."""
        d = local_cluster_dir(self.endpoints, self.cluster_dir)
        if d is None or not (d / CLUSTER_FILE).is_file():
            return None
        from . import localcluster  # only for a local cluster

        return localcluster.not_running(d)


def _globals(ctx: click.Context) -> Globals:
    obj = ctx.find_object(Globals)
    return obj if obj is not None else Globals(None, None, 10.0, "text")


def _output(ctx: click.Context, output: str | None) -> str:
    return output or _globals(ctx).output


def _with_client(ctx: click.Context, fn: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``fn`` with a client of the cluster. A request that fails as unavailable or timed out names the command
    typed, and says what the cluster says (:func:`_explain`)."""
    global _quick_exit
    _quick_exit = True
    g = _globals(ctx)
    endpoints = g.endpoint_list()

    async def go() -> T:
        async with Client(endpoints, timeout_s=g.timeout_s) as c:
            try:
                return await fn(c)
            except (Unavailable, Timeout) as e:
                if not isinstance(e, Removed):
                    what = ctx.command_path.partition(" ")[2] or "the request"
                    _name_the_command(e, what)
                    await _explain(c, e, what, g.timeout_s)
                raise

    return asyncio.run(go())


_CLIENT_OP = re.compile(r"^[a-z]+(?: [a-z]+)? (?=failed|timed out|did not complete)")


def _name_the_command(e: RaftKVError, what: str) -> None:
    """A client error names its call ("range failed ..."): name the command the user typed instead ("list")."""
    renamed = _CLIENT_OP.sub(f"{what} ", e.message, count=1)
    if renamed != e.message:
        e.message = renamed
        e.args = (renamed,)


EXPLAIN_TIMEOUT_S = 1.0
"""How long a failed request's diagnosis waits for the nodes' Status answers."""


async def _explain(c: Client, e: RaftKVError, what: str, timeout_total_s: float) -> None:
    """Say in ``e``'s message what the cluster says, from every member's Status (asked in parallel, briefly): is
    a leader known, how many voters answer, which do not and why. When the cluster cannot serve (no leader, no
    quorum) that is the reason, and replaces the endpoints' answers in the message (a write whose outcome is
    unknown still says so); otherwise it is added. Nothing changes when no node answers (the message already
    says what each endpoint did) or when the diagnosis itself fails."""
    try:
        statuses = await c.cluster_status(timeout_s=min(timeout_total_s, EXPLAIN_TIMEOUT_S), members=True)
        health = cluster_health(statuses)
    except Exception:  # a diagnosis must never hide the error it explains
        return
    if not health.answering:
        return
    if health.available or e.outcome_unknown:
        e.message = f"{e.message}; the cluster: {health.describe()}"
    else:
        e.message = f"{what} failed after {timeout_total_s:g}s: {health.describe()}"
    e.args = (e.message,)


def _key_arg(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def _bytes_json(name: str, b: bytes) -> dict[str, Any]:
    """``{name: text}`` if ``b`` is UTF-8, else ``{name: None, name_base64: ...}``."""
    try:
        return {name: b.decode("utf-8")}
    except UnicodeDecodeError:
        return {name: None, f"{name}_base64": base64.b64encode(b).decode("ascii")}


def _kv_json(kv: KeyValue, with_value: bool = True) -> dict[str, Any]:
    out = _bytes_json("key", kv.key)
    if with_value:
        out.update(_bytes_json("value", kv.value))
    out.update(
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        vclock={str(k): v for k, v in sorted(kv.vclock.items())},
    )
    if kv.siblings:
        out["siblings"] = [_bytes_json("value", v) for v in kv.siblings] if with_value else len(kv.siblings)
    return out


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def _write_raw(data: bytes) -> None:
    click.echo(data, nl=False)  # bytes go to the binary stream, unchanged


def _simple_role(role: str) -> str:
    return "candidate" if role in ("pre-candidate", "precandidate", "pre_candidate") else role


def status_json(nodes: Sequence[NodeStatus]) -> dict[str, Any]:
    """The ``--output json`` shape of ``status`` and ``cluster status`` (scripts rely on it)."""
    return {
        "nodes": [
            {
                "id": s.id or None,
                "role": _simple_role(s.role) if s.reachable else "unreachable",
                "term": s.term if s.reachable else None,
                "commit": s.commit if s.reachable else None,
                "applied": s.applied if s.reachable else None,
                "revision": s.revision if s.reachable else None,
                "client_addr": s.client_addr or s.endpoint,
                "peer_addr": s.peer_addr or None,
            }
            for s in nodes
        ]
    }


def _fill_unreachable(nodes: list[NodeStatus]) -> list[NodeStatus]:
    """Name unreachable endpoints after the member lists the reachable nodes report."""
    known: dict[str, tuple[int, str]] = {}
    for s in nodes:
        for mid, peer, client in s.members:
            known[client] = (mid, peer)
    out = []
    for s in nodes:
        if not s.reachable and s.endpoint in known:
            mid, peer = known[s.endpoint]
            s = NodeStatus(s.endpoint, False, id=mid, client_addr=s.endpoint, peer_addr=peer, error=s.error)
        out.append(s)
    return out


def _status_table(nodes: Sequence[NodeStatus], pids: Sequence[int | None] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    notes: list[str] = []
    for col in ("node", "address", "role", "term", "commit", "applied", "leader", "reachable"):
        table.add_column(col, justify="right" if col in ("node", "term", "commit", "applied", "leader") else "left")
    if pids is not None:
        table.add_column("pid", justify="right")
    for i, s in enumerate(nodes):
        if s.reachable:
            role = f"[bold green]{s.role}[/]" if s.role == "leader" else s.role
            row = [
                str(s.id),
                s.client_addr or s.endpoint,
                role,
                str(s.term),
                str(s.commit),
                str(s.applied),
                str(s.leader_id or "-"),
                "yes",
            ]
            if s.corruption:
                notes.append(f"node {s.id}: CORRUPTION ALARM: {s.corruption}")
            elif s.read_only_reason:
                notes.append(f"node {s.id} refuses writes: {s.read_only_reason}")
        else:
            row = [str(s.id or "?"), s.endpoint, "[red]unreachable[/]", "-", "-", "-", "-", "no"]
            if s.error:
                notes.append(f"{s.endpoint}: {s.error}")
        if pids is not None:
            pid = pids[i]
            row.append(str(pid) if pid else "-")
        table.add_row(*row)
    console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
    console.print(table)
    for note in notes:
        console.print(f"[dim]{note}[/]", highlight=False)


# -- the group --------------------------------------------------------------------------------------------------
@click.group(cls=RaftKVGroup, help=MAIN_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--endpoints", metavar="HOST:PORT,...", help="Client addresses of the cluster's nodes (any subset).")
@click.option(
    "--cluster-dir",
    metavar="DIR",
    help="A local cluster's directory to find the endpoints in [default: $RAFTKV_CLUSTER_DIR or ./.raftkv-cluster].",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0.001),
    default=10.0,
    show_default=True,
    help="Seconds a request may take, retries included.",
)
@click.option("--output", type=OUTPUT_CHOICE, default="text", show_default=True, help="Output format.")
@click.option(
    "--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
    help="Show the version and exit.",
)
@click.pass_context
def main(ctx: click.Context, endpoints: str | None, cluster_dir: str | None, timeout_s: float, output: str) -> None:
    ctx.obj = Globals(endpoints, cluster_dir, timeout_s, output)


# -- serve ------------------------------------------------------------------------------------------------------
@main.command(
    epilog="""\b
Examples:
  raftkv serve --config node1.toml
  raftkv serve --id 1 --data-dir data/n1 \\
      --member 1=127.0.0.1:7001,127.0.0.1:8001 \\
      --member 2=127.0.0.1:7002,127.0.0.1:8002 \\
      --member 3=127.0.0.1:7003,127.0.0.1:8003"""
)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="A TOML settings file.")
@click.option("--id", "node_id", type=int, help="This node's id (one of the members).")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where this node keeps its log and data.")
@click.option(
    "--member",
    "members",
    multiple=True,
    metavar="ID=PEER,CLIENT",
    help="A member of the initial cluster (repeat for each), e.g. 1=127.0.0.1:7001,127.0.0.1:8001.",
)
@click.option("--cluster-token", help="Nodes with different tokens refuse to talk to each other.")
@click.option("--listen-peer-addr", metavar="HOST:PORT", help="Listen for peers here (default: own peer address).")
@click.option(
    "--listen-client-addr", metavar="HOST:PORT", help="Listen for clients here (default: own client address)."
)
@click.option("--tick-ms", type=click.IntRange(min=1), help="Length of a Raft tick in milliseconds.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="Log verbosity.")
@click.option(
    "--join",
    is_flag=True,
    default=None,
    help="Join an existing cluster (after `raftkv member add`) instead of bootstrapping a new one.",
)
@click.option("--join-cluster-id", metavar="ID", help="With --join: the cluster id `raftkv member add` printed.")
@click.option(
    "--sync/--no-sync",
    default=None,
    help="fsync before acknowledging (default). --no-sync loses acknowledged writes on power failure.",
)
@click.pass_context
def serve(
    ctx: click.Context,
    config_file: str | None,
    node_id: int | None,
    data_dir: str | None,
    members: tuple[str, ...],
    cluster_token: str | None,
    listen_peer_addr: str | None,
    listen_client_addr: str | None,
    tick_ms: int | None,
    log_level: str | None,
    join: bool | None,
    join_cluster_id: str | None,
    sync: bool | None,
) -> None:
    """Run a node in the foreground until SIGTERM or Ctrl-C (a leader hands leadership over before it stops).

    Settings come from --config, then RAFTKV_<SETTING> environment variables, then these flags."""
    overrides: dict[str, Any] = {
        "id": node_id,
        "data_dir": data_dir,
        "members": members,
        "cluster_token": cluster_token,
        "listen_peer_addr": listen_peer_addr,
        "listen_client_addr": listen_client_addr,
        "tick_ms": tick_ms,
        "log_level": log_level,
        "sync": sync,
        "join": join,
        "join_cluster_id": join_cluster_id,
    }
    from .settings import load_settings  # lazily, as the daemon below: the client commands need neither

    settings = load_settings(config_file, overrides)
    from .server import run

    ctx.exit(run(settings))


# -- key-value commands -----------------------------------------------------------------------------------------
output_option = click.option(
    "--output", type=OUTPUT_CHOICE, default=None, help="Output format [default: the global --output, text]."
)


@main.command(
    epilog="""\b
Examples:
  raftkv put greeting hello
  raftkv put config.json - < config.json     # the value from stdin, as bytes"""
)
@click.argument("key")
@click.argument("value")
@click.option("--if-version", type=click.IntRange(min=0), help="Only if the key's version is N (0: it does not exist).")
@click.option(
    "--if-mod-revision", type=click.IntRange(min=0),
    help="Only if the key's last write was revision N (a put prints its revision): no write touched it since.",
)
@click.option("--if-value", help="Only if the key's current value is this.")
@click.option("--if-absent", is_flag=True, help="Only if the key does not exist.")
@click.option(
    "--context",
    metavar="VCLOCK",
    help='The key\'s vector clock as you read it (`get --output json` prints it, e.g. \'{"1": 3}\'). By default the '
    "put happens only if it is still the key's clock: no write happened since you read it.",
)
@click.option(
    "--on-conflict",
    type=click.Choice(["reject", "siblings"]),
    default="reject",
    show_default=True,
    help="With --context, when the key was written since: reject (exit 6), or keep this value beside the ones "
    "you had not seen, as siblings (get shows them all; a put with the clock get then prints resolves them).",
)
@click.option("--lease", "lease_id", type=click.IntRange(min=0, max=(1 << 63) - 1), default=0,
              help="Attach the key to lease ID (`lease grant`): it is deleted when the lease ends. Exits 3 if the "
              "lease does not exist.")
@output_option
@click.pass_context
def put(
    ctx: click.Context,
    key: str,
    value: str,
    if_version: int | None,
    if_mod_revision: int | None,
    if_value: str | None,
    if_absent: bool,
    context: str | None,
    on_conflict: str,
    lease_id: int,
    output: str | None,
) -> None:
    """Set KEY to VALUE ("-" reads the value from stdin). Prints "OK revision=<revision> version=<version>".

    The write is applied exactly once, even if it is retried; if the deadline passes with its outcome unknown,
    it exits 4 with a message saying so (it may or may not have been applied). With a condition (--if-*,
    --context) that does not hold, nothing is written and it exits 6, showing the key's current state."""
    data = sys.stdin.buffer.read() if value == "-" else value.encode("utf-8", "surrogateescape")
    k = _key_arg(key)
    conds: dict[str, Any] = {}
    if if_version is not None:
        conds["if_version"] = if_version
    if if_mod_revision is not None:
        conds["if_mod_revision"] = if_mod_revision
    if if_value is not None:
        conds["if_value"] = if_value.encode("utf-8", "surrogateescape")
    if if_absent:
        conds["if_absent"] = True
    if context is not None:
        conds["context"] = parse_vclock(context)
    if on_conflict == "siblings":
        if context is None:
            raise click.UsageError("--on-conflict siblings needs --context (the clock `get --output json` printed)")
        if len(conds) > 1:
            raise click.UsageError("--on-conflict siblings takes no --if-* condition besides --context")
        conds["on_conflict"] = "siblings"
    if lease_id:
        if on_conflict == "siblings":
            raise click.UsageError("a put that keeps siblings keeps the key's lease: it takes no --lease")
        conds["lease"] = lease_id
    res = _conditional(ctx, lambda c: c.put(k, data, **conds))
    if _output(ctx, output) == "json":
        out = _bytes_json("key", res.key)
        out.update(
            create_revision=res.create_revision,
            mod_revision=res.mod_revision,
            version=res.version,
            vclock={str(n): v for n, v in sorted(res.vclock.items())},
            index=res.index,
            revision=res.mod_revision,
            siblings=res.siblings,
        )
        _print_json(out)
    else:
        more = f" siblings={res.siblings}" if res.siblings else ""
        click.echo(f"OK revision={res.mod_revision} version={res.version}{more}")


@main.command(
    epilog="""\b
Examples:
  raftkv get greeting
  raftkv get greeting --consistency stale          # any node, possibly behind
  raftkv get greeting --consistency bounded --max-staleness-ms 500
  raftkv get blob > blob.bin                       # raw bytes, no newline added
  raftkv get greeting --output json
  raftkv get greeting --rev 41                     # as it was right after revision 41

\b
JSON: {"key", "value", "create_revision", "mod_revision", "version", "vclock", "index", "revision"}, and
"siblings" (a list of {"value"}) when concurrent writes left the key several values; a key or value that is not
UTF-8 is null, with its bytes in "key_base64" / "value_base64"."""
)
@click.argument("key")
@click.option(
    "--consistency",
    type=click.Choice(CONSISTENCY_LEVELS),
    default="linearizable",
    show_default=True,
    help="linearizable: quorum-confirmed; lease: the leader's lease; stale: any node at once; "
    "bounded: local if the node heard from the leader within --max-staleness-ms.",
)
@click.option("--max-staleness-ms", type=click.IntRange(min=0), default=0, help="The bound of --consistency bounded.")
@click.option("--min-index", type=click.IntRange(min=0), default=None, help="Serve only once this index is applied.")
@click.option("--rev", type=click.IntRange(min=0), default=0,
              help="Read the key as it was right after revision N (0: now); refused below the compacted revision.")
@output_option
@click.pass_context
def get(
    ctx: click.Context,
    key: str,
    consistency: str,
    max_staleness_ms: int,
    min_index: int | None,
    rev: int,
    output: str | None,
) -> None:
    """Print the value of KEY: the raw bytes alone (a newline follows only on a terminal), so scripts can use it.
    A missing key prints an error and exits 3. A key holding siblings (concurrent values) prints its newest value
    and says so on stderr; --output json shows every value and the clock that resolves them."""
    k = _key_arg(key)
    kv = _with_client(
        ctx,
        lambda c: c.get(k, consistency=consistency, min_index=min_index, max_staleness_ms=max_staleness_ms,
                        revision=rev),
    )
    if kv is None:
        _die(f"key {_quoted(k)} not found", ExitCode.NOT_FOUND)
    if _output(ctx, output) == "json":
        _print_json({**_kv_json(kv), "index": kv.index, "revision": kv.revision})
        return
    if kv.siblings:
        clock = json.dumps({str(n): c for n, c in sorted(kv.vclock.items())})
        click.echo(
            f"warning: key {_quoted(k)} holds {len(kv.values)} concurrent values (siblings); this is the newest. "
            f"--output json shows them all; resolve them with: put {key} VALUE --context '{clock}'",
            err=True,
        )
    _write_raw(kv.value + (b"\n" if sys.stdout.isatty() else b""))


@main.command(epilog="Example:\n\n  raftkv delete greeting")
@click.argument("key")
@click.option("--if-version", type=click.IntRange(min=0), help="Only if the key's version is N.")
@click.option("--if-mod-revision", type=click.IntRange(min=0), help="Only if the key's last write was revision N.")
@click.option("--if-value", help="Only if the key's current value is this.")
@click.option("--context", metavar="VCLOCK", help="Only if the key's vector clock is still this one.")
@output_option
@click.pass_context
def delete(
    ctx: click.Context,
    key: str,
    if_version: int | None,
    if_mod_revision: int | None,
    if_value: str | None,
    context: str | None,
    output: str | None,
) -> None:
    """Delete KEY. Prints "deleted", or "not found" if it did not exist (both exit 0); a condition that does not
    hold exits 6."""
    k = _key_arg(key)
    conds: dict[str, Any] = {}
    if if_version is not None:
        conds["if_version"] = if_version
    if if_mod_revision is not None:
        conds["if_mod_revision"] = if_mod_revision
    if if_value is not None:
        conds["if_value"] = if_value.encode("utf-8", "surrogateescape")
    if context is not None:
        conds["context"] = parse_vclock(context)
    res = _conditional(ctx, lambda c: c.delete(k, **conds))
    if _output(ctx, output) == "json":
        _print_json({"deleted": res.deleted, "index": res.index, "revision": res.revision})
    else:
        click.echo("deleted" if res.deleted else "not found")


def _describe_current(current: Any) -> str:
    if current is None:
        return "the key does not exist"
    v = current.value
    shown = _quoted(v) if len(v) <= 60 else _quoted(v[:57]) + "..."
    clock = json.dumps({str(n): c for n, c in sorted(current.vclock.items())})
    more = f", and {len(current.siblings)} sibling value(s)" if current.siblings else ""
    return (f"it is at version {current.version} (mod_revision {current.mod_revision}, vclock {clock}), value "
            f"{shown}{more}")


def _conditional(ctx: click.Context, fn: Callable[[Client], Awaitable[T]]) -> T:
    """Run a conditional write; a failed condition is one line with the key's current state, and exit code 6."""
    try:
        return _with_client(ctx, fn)
    except ConditionFailed as e:
        _die(f"condition failed: {_describe_current(e.current)}", ExitCode.CONFLICT)


@main.command(
    epilog="""\b
Examples:
  raftkv cas lock unlocked locked         # swap only if the value is "unlocked"
  raftkv cas --expect-absent lock locked  # create only if it does not exist"""
)
@click.argument("key")
@click.argument("args", nargs=-1, required=True)
@click.option("--expect-absent", is_flag=True, help="Swap only if KEY does not exist (then give only NEW).")
@click.pass_context
def cas(ctx: click.Context, key: str, args: tuple[str, ...], expect_absent: bool) -> None:
    """Compare-and-set: cas KEY EXPECTED NEW sets KEY to NEW only if its value is EXPECTED. Prints "swapped"; if the
    value was something else, prints the current state on stderr and exits 6."""
    if expect_absent:
        if len(args) != 1:
            raise click.UsageError("with --expect-absent give KEY NEW")
        expected, new = None, args[0]
    else:
        if len(args) != 2:
            raise click.UsageError("give KEY EXPECTED NEW (or --expect-absent KEY NEW)")
        expected, new = args
    k = _key_arg(key)
    new_b = new.encode("utf-8", "surrogateescape")
    if expected is None:
        _conditional(ctx, lambda c: c.put(k, new_b, if_absent=True))
    else:
        exp_b = expected.encode("utf-8", "surrogateescape")
        _conditional(ctx, lambda c: c.put(k, new_b, if_value=exp_b))
    click.echo("swapped")


@main.command(epilog="Examples:\n\n  raftkv incr visits\n\n  raftkv incr stock -- -3")
@click.argument("key")
@click.argument("delta", type=int, default=1)
@click.pass_context
def incr(ctx: click.Context, key: str, delta: int) -> None:
    """Atomically add DELTA (default 1) to the integer at KEY (a missing key counts as 0) and print the new value.
    Exactly-once: a retried increment that already applied is not applied again."""
    k = _key_arg(key)
    click.echo(str(_with_client(ctx, lambda c: c.incr(k, delta))))


@main.command(epilog="""\b
Examples:
  raftkv compact 1000              # reads below revision 1000 are refused from now on
  raftkv compact 1000 --output json""")
@click.argument("revision", type=click.IntRange(min=1))
@output_option
@click.pass_context
def compact(ctx: click.Context, revision: int, output: str | None) -> None:
    """Drop the history below REVISION on every member (through the log: all compact at the same point). Reads at
    a revision below it (get/list --rev) are refused from then on, with the compacted revision; the current values
    are kept. Compacting below an earlier compaction changes nothing. Prints the compacted revision."""
    done = _with_client(ctx, lambda c: c.compact(revision))
    if _output(ctx, output) == "json":
        _print_json({"compacted": done})
    else:
        click.echo(f"compacted at revision {done}")


# -- leases, locks and elections ---------------------------------------------------------------------------------
@main.group(epilog="""\b
Examples:
  raftkv lease grant 30                      # prints the lease id
  raftkv put session/42 alive --lease ID     # deleted when the lease ends
  raftkv lease keep-alive ID                 # renew it until Ctrl-C
  raftkv lease ttl ID --keys
  raftkv lease revoke ID                     # ends it now: its keys are deleted""")
def lease() -> None:
    """Leases: a key put with a lease is deleted when the lease is revoked or expires (all its keys in one
    revision). The leader times them; a new leader gives every lease a full TTL before it expires any."""


@lease.command("grant", epilog="""\b
Example:
  raftkv lease grant 30 --output json    # {"id": ..., "ttl": 30}""")
@click.argument("ttl", type=click.IntRange(min=1, max=9_000_000_000))
@click.option("--id", "lease_id", type=click.IntRange(min=0, max=(1 << 63) - 1), default=0,
              help="Grant under this id (0: the cluster picks one).")
@output_option
@click.pass_context
def lease_grant(ctx: click.Context, ttl: int, lease_id: int, output: str | None) -> None:
    """Grant a lease of TTL seconds (raised to the cluster's minimum, 1.5 election timeouts). Nothing renews it:
    it expires after TTL seconds unless kept alive (`lease keep-alive`). Prints its id."""
    got = _with_client(ctx, lambda c: c.grant(ttl, lease_id=lease_id, keep_alive=False))
    if _output(ctx, output) == "json":
        _print_json({"id": got.id, "ttl": got.ttl})
    else:
        click.echo(f"lease {got.id} granted with ttl {got.ttl}s")


@lease.command("revoke")
@click.argument("lease_id", metavar="ID", type=click.IntRange(min=1, max=(1 << 63) - 1))
@output_option
@click.pass_context
def lease_revoke(ctx: click.Context, lease_id: int, output: str | None) -> None:
    """End lease ID now: every key attached to it is deleted, in one revision. Exits 3 if it does not exist."""

    async def go(c: Client) -> tuple[int, int]:
        info = await c.time_to_live(lease_id, keys=True)
        return await c.revoke(lease_id), len(info.keys)

    rev, n = _with_client(ctx, go)
    if _output(ctx, output) == "json":
        _print_json({"id": lease_id, "revision": rev, "deleted": n})
    else:
        click.echo(f"lease {lease_id} revoked: {n} key{'' if n == 1 else 's'} deleted (revision {rev})")


@lease.command("keep-alive")
@click.argument("lease_id", metavar="ID", type=click.IntRange(min=1, max=(1 << 63) - 1))
@click.option("--once", is_flag=True, help="Renew it once and exit.")
@output_option
@click.pass_context
def lease_keep_alive(ctx: click.Context, lease_id: int, once: bool, output: str | None) -> None:
    """Renew lease ID (a third of its TTL after each renewal) until interrupted, printing each renewal. Exits 3
    when the lease is gone (it expired or was revoked), 4 when it could not be renewed before its deadline."""
    fmt = _output(ctx, output)

    async def go(c: Client) -> None:
        held = await c.keep_alive(lease_id)
        seen = 0
        while True:
            wait = asyncio.ensure_future(held.lost.wait())
            try:
                async with asyncio.timeout(0.05):
                    await asyncio.shield(wait)
            except TimeoutError:
                pass
            finally:
                wait.cancel()
            if held.lost.is_set():
                if "no longer exists" in held.lost_reason:
                    raise LeaseNotFound(f"lease {lease_id} is gone: {held.lost_reason}")
                raise Unavailable(f"lease {lease_id} was lost: {held.lost_reason}")
            if held.renewals > seen:
                seen = held.renewals
                if fmt == "json":
                    click.echo(json.dumps({"id": lease_id, "ttl": held.ttl}))
                else:
                    click.echo(f"lease {lease_id} kept alive, ttl {held.ttl}s")
                sys.stdout.flush()
                if once:
                    return

    try:
        _with_client(ctx, go)
    except KeyboardInterrupt:
        pass


@lease.command("ttl")
@click.argument("lease_id", metavar="ID", type=click.IntRange(min=1, max=(1 << 63) - 1))
@click.option("--keys", is_flag=True, help="List the keys attached to it.")
@output_option
@click.pass_context
def lease_ttl(ctx: click.Context, lease_id: int, keys: bool, output: str | None) -> None:
    """Show the seconds lease ID has left (as the leader times it), its granted TTL and (--keys) its keys. Exits 3
    if it does not exist."""
    info = _with_client(ctx, lambda c: c.time_to_live(lease_id, keys=keys))
    if not info.exists:
        raise LeaseNotFound(f"lease {lease_id} not found: it expired or was revoked, or was never granted")
    if _output(ctx, output) == "json":
        doc: dict[str, Any] = {"id": info.id, "ttl": info.ttl, "granted_ttl": info.granted_ttl}
        if keys:
            doc["keys"] = [_escaped(k) for k in info.keys]
        _print_json(doc)
        return
    click.echo(f"lease {info.id}: {info.ttl}s left of {info.granted_ttl}s")
    for k in info.keys:
        click.echo(f"  {_escaped(k)}")


@lease.command("list")
@output_option
@click.pass_context
def lease_list(ctx: click.Context, output: str | None) -> None:
    """List the ids of every lease."""
    ids = _with_client(ctx, lambda c: c.leases())
    if _output(ctx, output) == "json":
        _print_json({"leases": ids})
    else:
        for i in ids:
            click.echo(str(i))


@main.command(epilog="""\b
Examples:
  raftkv lock deploy -- ./deploy.sh        # runs it holding the lock "deploy"
  raftkv lock deploy                       # holds it until Ctrl-C

\b
The command gets the lock's fencing revision in RAFTKV_LOCK_REVISION (higher for every later holder: pass it to
what the command changes, so a resource can refuse a holder that lost the lock) and its key in RAFTKV_LOCK_KEY.""",
              context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--ttl", type=click.IntRange(min=1), default=10, show_default=True,
              help="The TTL of the lock's lease: how long after this process dies the lock is released.")
@click.pass_context
def lock(ctx: click.Context, name: str, command: tuple[str, ...], ttl: int) -> None:
    """Take the distributed lock NAME (waiting for it), then run COMMAND holding it and exit with its exit code;
    without COMMAND, hold it until interrupted. If the lock is lost while the command runs (its lease could not be
    renewed), the command is terminated and this exits 4."""
    if "/" in name or not name:
        raise click.UsageError("a lock name is non-empty and has no '/'")

    async def go(c: Client) -> int:
        held = c.lock(name, ttl_s=ttl)
        rev = await held.acquire()
        try:
            if not command:
                click.echo(f"holding lock {name} (fencing revision {rev}); Ctrl-C releases it")
                await held.lost.wait()
                raise Unavailable(f"lost the lock {name}: {held.lease.lost_reason if held.lease else ''}")
            env = {**os.environ, "RAFTKV_LOCK_REVISION": str(rev), "RAFTKV_LOCK_KEY": held.key.decode()}
            try:
                proc = await asyncio.create_subprocess_exec(*command, env=env)
            except OSError as e:
                raise InvalidArgument(f"cannot run {command[0]!r}: {e.strerror or e}") from None
            done = asyncio.ensure_future(proc.wait())
            lost = asyncio.ensure_future(held.lost.wait())
            await asyncio.wait({done, lost}, return_when=asyncio.FIRST_COMPLETED)
            if not done.done():
                proc.terminate()
                await done
                raise Unavailable(f"lost the lock {name} while the command ran (it was terminated): "
                                  f"{held.lease.lost_reason if held.lease else ''}")
            lost.cancel()
            return done.result()
        finally:
            await held.release()

    try:
        code = _with_client(ctx, go)
    except KeyboardInterrupt:
        code = 130 if command else 0
    _end_process(code)
    sys.exit(code)


@main.command(epilog="""\b
Examples:
  raftkv elect web node-1     # campaign: prints "leading web as node-1" once elected, leads until Ctrl-C
  raftkv elect web            # print the leader's proposal now and each time it changes
  raftkv elect web --once     # print the leader's proposal and exit (exit 3: nobody leads)""")
@click.argument("name")
@click.argument("proposal", required=False)
@click.option("--ttl", type=click.IntRange(min=1), default=10, show_default=True,
              help="The TTL of the campaign's lease: how long after this process dies leadership passes on.")
@click.option("--once", is_flag=True, help="Without PROPOSAL: print the current leader and exit.")
@output_option
@click.pass_context
def elect(ctx: click.Context, name: str, proposal: str | None, ttl: int, once: bool, output: str | None) -> None:
    """Leader election NAME. With PROPOSAL: campaign with it, and once elected lead until interrupted (then
    resign). Without: observe, printing the leader's proposal each time leadership changes."""
    if "/" in name or not name:
        raise click.UsageError("an election name is non-empty and has no '/'")
    fmt = _output(ctx, output)

    def show(kv: KeyValue | None) -> None:
        if fmt == "json":
            click.echo(json.dumps({"leader": None if kv is None else _escaped(kv.value),
                                   "revision": 0 if kv is None else kv.create_revision}))
        else:
            click.echo("(no leader)" if kv is None else _escaped(kv.value))
        sys.stdout.flush()

    async def go(c: Client) -> bool:
        e = c.election(name, ttl_s=ttl)
        if proposal is not None:
            rev = await e.campaign(proposal)
            click.echo(f"leading {name} as {proposal} (revision {rev}); Ctrl-C resigns")
            sys.stdout.flush()
            try:
                await e.lost.wait()
                raise Unavailable(f"lost the leadership of {name}: its lease ended")
            finally:
                await e.resign()
        if once:
            kv = await e.leader()
            if kv is None:
                return False
            show(kv)
            return True
        async for kv in e.observe():
            show(kv)
        return True

    try:
        if not _with_client(ctx, go):
            _die(f"nobody leads {name}", ExitCode.NOT_FOUND)
    except KeyboardInterrupt:
        pass


@main.command(epilog="""\b
Examples:
  raftkv watch config/ --prefix              # every change under config/, from now on
  raftkv watch greeting --rev 1 --prev-kv    # replay its whole history, then follow it
  raftkv watch jobs/ --prefix --output json | jq -c 'select(.type == "put") | .key'

\b
Text: one line per event, "REVISION<TAB>put<TAB>KEY<TAB>VALUE" or "REVISION<TAB>delete<TAB>KEY" (escaped as
`list` escapes them). JSON: one object per line, {"type", "revision", "key", "value", "create_revision",
"mod_revision", "version", "vclock"} and, with --prev-kv, "prev" (the key before the event, or null).
It runs until interrupted (Ctrl-C) or --count events were printed; when its node fails it goes on on another
one from the revision after the last event printed, with no gap and no repeat.""")
@click.argument("key")
@click.option("--prefix", is_flag=True, help="Watch every key that starts with KEY.")
@click.option("--rev", type=click.IntRange(min=0), default=0,
              help="Start at revision N: replay the history from it, then follow (0: from now).")
@click.option("--prev-kv", is_flag=True, help="Show each key as it was before the event.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after this many events.")
@output_option
@click.pass_context
def watch(ctx: click.Context, key: str, prefix: bool, rev: int, prev_kv: bool, count: int | None,
          output: str | None) -> None:
    """Print the changes of KEY (or, with --prefix, of every key starting with KEY) as they happen, in revision
    order. A start revision the history no longer holds is refused (exit 5) with the compacted revision: read the
    state at it (get/list --rev), then watch from the next revision."""
    k = _key_arg(key) if not prefix or key else b""
    fmt = _output(ctx, output)

    async def follow(c: Client) -> None:
        seen = 0
        async for batch in c.watch(k, prefix=prefix, start_revision=rev, prev_kv=prev_kv):
            lines = []
            for ev in batch.events:
                if fmt == "json":
                    doc = {"type": ev.type, "revision": ev.revision, **_kv_json(ev.kv, with_value=ev.type == "put")}
                    if prev_kv:
                        doc["prev"] = _kv_json(ev.prev_kv) if ev.prev_kv is not None else None
                    lines.append(json.dumps(doc))
                elif ev.type == "put":
                    lines.append(f"{ev.revision}\tput\t{_escaped(ev.kv.key)}\t{_escaped(ev.kv.value)}")
                else:
                    lines.append(f"{ev.revision}\tdelete\t{_escaped(ev.kv.key)}")
                seen += 1
                if count is not None and seen >= count:
                    break
            if lines:
                _write_raw("".join(f"{line}\n" for line in lines).encode("utf-8", "surrogateescape"))
                sys.stdout.flush()
            if count is not None and seen >= count:
                return

    try:
        _with_client(ctx, follow)
    except KeyboardInterrupt:
        pass


def _stdin_isatty() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):  # closed or replaced
        return False


@main.command(epilog=TXN_HELP)
@output_option
@click.pass_context
def txn(ctx: click.Context, output: str | None) -> None:
    """Run a multi-key transaction from stdin: if every compare holds run the `then` ops, else the `else` ops,
    atomically. Prints "succeeded" or "failed" (which branch ran), then one line per op result. An empty
    transaction is refused (exit 5)."""
    if _stdin_isatty():
        click.echo(
            "reading the transaction from stdin: lines such as `if value(k) == v`, `then put k v`, `else get k` "
            "(see `raftkv txn --help`); end it with Ctrl-D",
            err=True,
        )
    compares, success, failure = parse_txn(sys.stdin.read())
    if not (compares or success or failure):
        raise InvalidArgument(
            "the transaction is empty: give it `if`, `then` or `else` lines (or JSON) on stdin; see `raftkv txn --help`"
        )
    res = _with_client(ctx, lambda c: c.txn(compares, success, failure))
    ran = success if res.succeeded else failure
    if _output(ctx, output) == "json":
        results = []
        for op, r in zip(ran, res.results, strict=False):
            item: dict[str, Any] = {"op": op.kind, "found": r.found}
            if r.kv is not None:
                item["kv"] = _kv_json(r.kv)
            if r.value is not None:
                item["value"] = r.value
            if r.error:
                item["error"] = r.error
            results.append(item)
        _print_json({"succeeded": res.succeeded, "index": res.index, "results": results})
        return
    click.echo("succeeded" if res.succeeded else "failed")
    for op, r in zip(ran, res.results, strict=False):
        key = op.key if isinstance(op.key, str) else op.key.decode("utf-8", "replace")
        if r.error:
            line = f"error: {r.error}"
        elif op.kind == "get":
            line = r.kv.value.decode("utf-8", "replace") if r.kv is not None else "(not found)"
        elif op.kind == "incr":
            line = str(r.value)
        elif op.kind == "delete":
            line = "deleted" if r.found else "not found"
        else:
            line = f"OK version={r.kv.version}" if r.kv is not None else "OK"
        click.echo(f"{op.kind} {key}: {line}")


@main.command(
    "list",
    epilog="""\b
Examples:
  raftkv list                      # every key (up to --limit)
  raftkv list user/ --keys-only
  raftkv list user/ --output json  # [{"key", "value", "create_revision", "mod_revision", "version", "vclock"}, ...]
  raftkv list blobs/ --output raw  # keys and values as they are, bytes for bytes
  raftkv list user/ --rev 41       # the keys as they were right after revision 41

\b
Text output is "key<TAB>value" lines, one per key: keys and values are shown as UTF-8 with backslashes, control
characters (newline, tab, ...) and bytes that are not UTF-8 escaped (\\\\, \\n, \\t, \\xff). --output raw prints
them unescaped; --output json has the exact bytes (base64 for what is not UTF-8).""",
)
@click.argument("prefix", default="")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True, help="At most this many keys.")
@click.option("--start-after", default="", help="Begin after this key (to continue a listing).")
@click.option("--keys-only", is_flag=True, help="Print keys without values.")
@click.option("--consistency", type=click.Choice(CONSISTENCY_LEVELS), default="linearizable", show_default=True)
@click.option("--rev", type=click.IntRange(min=0), default=0,
              help="List the keys as they were right after revision N (0: now; every page reads the same revision).")
@click.option(
    "--output", type=click.Choice(["text", "json", "raw"]), default=None,
    help="Output format [default: the global --output, text]; raw: unescaped bytes.",
)
@click.pass_context
def list_(
    ctx: click.Context,
    prefix: str,
    limit: int,
    start_after: str,
    keys_only: bool,
    consistency: str,
    rev: int,
    output: str | None,
) -> None:
    """List the keys starting with PREFIX (all keys without one), in key order, all as of one revision."""
    p = _key_arg(prefix) if prefix else b""
    after = _key_arg(start_after) if start_after else b""

    async def collect(c: Client) -> tuple[list[KeyValue], bool]:
        out: list[KeyValue] = []
        cursor = after
        at = rev
        while True:
            page = await c.range(
                p, start_after=cursor, limit=min(1000, limit - len(out)), keys_only=keys_only, consistency=consistency,
                revision=at,
            )
            out.extend(page.kvs)
            if not page.more or not page.kvs:
                return out, False
            cursor = page.kvs[-1].key
            at = page.revision  # the next pages read the same revision: one consistent listing
            if len(out) >= limit:
                return out, True

    kvs, more = _with_client(ctx, collect)
    fmt = _output(ctx, output)
    if fmt == "json":
        _print_json([_kv_json(kv, with_value=not keys_only) for kv in kvs])
    elif fmt == "raw":
        buf = bytearray()
        for kv in kvs:
            buf += kv.key if keys_only else kv.key + b"\t" + kv.value
            buf += b"\n"
        _write_raw(bytes(buf))
    else:
        lines = [_escaped(kv.key) if keys_only else f"{_escaped(kv.key)}\t{_escaped(kv.value)}" for kv in kvs]
        _write_raw("".join(f"{line}\n" for line in lines).encode("utf-8", "surrogateescape"))
    if more:
        last = _quoted(kvs[-1].key)
        click.echo(f"(more keys follow: continue with --start-after {last}, or raise --limit)", err=True)


@main.command(
    epilog="""\b
Examples:
  raftkv status
  raftkv status --output json   # {"nodes": [{"id", "role", "term", "commit", "applied", "client_addr",
                                #             "peer_addr"}, ...]}

\b
Every member is shown: the endpoints, and the members the nodes that answer know of. In JSON, role is leader,
follower, candidate (pre-candidates count as candidates) or unreachable; the numbers of an unreachable node are
null.

\b
Exit codes: 0 the cluster can serve (a leader is known and a quorum of the voters answers); 4 it cannot: no
leader is known, or fewer than a quorum (a majority) of the voters answer -- then one line on stderr says which
members do not answer and why. The table (or JSON) is printed either way."""
)
@output_option
@click.pass_context
def status(ctx: click.Context, output: str | None) -> None:
    """Show every node: role, term, commit and applied index, the leader it knows, and whether it answers. Exits 4
    when the cluster cannot serve (no leader, or no quorum)."""
    global _quick_exit
    _quick_exit = True
    g = _globals(ctx)
    endpoints = resolve_endpoints(g.endpoints, g.cluster_dir)

    async def ask() -> list[NodeStatus]:
        async with Client(endpoints, timeout_s=g.timeout_s) as c:
            return await c.cluster_status(timeout_s=min(g.timeout_s, 3.0), members=True)

    nodes = _fill_unreachable(asyncio.run(ask()))
    if _output(ctx, output) == "json":
        _print_json(status_json(nodes))
    else:
        _status_table(nodes)
    health = cluster_health(nodes)
    if not health.available:
        stopped = g.local_cluster_stopped()
        _die(f"the cluster cannot serve: {health.describe()}" + (f"; {stopped}" if stopped else ""),
             ExitCode.UNAVAILABLE)


# -- the local cluster ------------------------------------------------------------------------------------------
dir_option = click.option(
    "--dir",
    "dir_",
    metavar="DIR",
    default=None,
    help="The cluster's directory [default: --cluster-dir, $RAFTKV_CLUSTER_DIR or ./.raftkv-cluster].",
)


def _cluster_dir(ctx: click.Context, dir_: str | None) -> Path:
    from . import localcluster

    if dir_:
        return Path(dir_)
    g = _globals(ctx)
    return Path(g.cluster_dir) if g.cluster_dir else localcluster.default_dir()


def _progress(msg: str) -> None:
    click.echo(msg, err=True)


# -- backups ----------------------------------------------------------------------------------------------------
@main.group()
def snapshot() -> None:
    """Backups: save a running cluster's state to a checksummed file; restore it into a data directory."""


def _backup_line(b: Any) -> str:
    return (
        f"{b.path}: index {b.index} (term {b.term}), {b.records} records, {b.size_bytes / 1e6:.1f} MB, "
        f"crc32 {b.crc32:08x}, cluster {b.cluster_id}"
    )


@snapshot.command("save")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--from", "endpoint", metavar="HOST:PORT", help="Take it from this node (default: the leader).")
@click.pass_context
def snapshot_save(ctx: click.Context, file: str, endpoint: str | None) -> None:
    """Save a snapshot of the cluster's state into FILE (written atomically, then verified)."""
    from . import backup

    g = _globals(ctx)
    with SyncClient(g.endpoint_list(), timeout_s=max(g.timeout_s, 60.0)) as c:
        click.echo("saved " + _backup_line(backup.save(c, file, endpoint)))


@snapshot.command("verify")
@click.argument("file", type=click.Path(dir_okay=False))
def snapshot_verify(file: str) -> None:
    """Check FILE's checksum and describe it."""
    from . import backup

    click.echo("ok " + _backup_line(backup.inspect(file)))


@snapshot.command(
    "restore",
    epilog="""\b
To rebuild a cluster from a backup, restore the same file into every member's empty data directory, then start
the members with their usual settings (same ids, addresses and cluster token).""",
)
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--data-dir", required=True, type=click.Path(file_okay=False), help="An empty data directory.")
def snapshot_restore(file: str, data_dir: str) -> None:
    """Turn snapshot FILE into a node's data directory (verified first)."""
    from . import backup

    click.echo(f"restored into {data_dir}: " + _backup_line(backup.restore(file, data_dir)))


# -- membership and leadership ----------------------------------------------------------------------------------
@main.group()
def member() -> None:
    """Cluster membership: list, add (as voter or learner), promote a learner, remove. One change at a time."""


def _print_members(ctx: click.Context, ml: MemberList, output: str | None) -> None:
    if _output(ctx, output) == "json":
        _print_json(
            {
                "cluster_id": ml.cluster_id,
                "members": [
                    {"id": m.id, "role": "learner" if m.learner else "voter", "peer_addr": m.peer_addr,
                     "client_addr": m.client_addr}
                    for m in ml.members
                ],
            }
        )
        return
    click.echo(f"cluster {ml.cluster_id}")
    for m in ml.members:
        role = "learner" if m.learner else "voter"
        click.echo(f"  {m.id:>4}  {role:<8} peer {m.peer_addr:<22} client {m.client_addr}")


@member.command("list")
@output_option
@click.pass_context
def member_list(ctx: click.Context, output: str | None) -> None:
    """List the members: id, voter or learner, peer and client addresses."""
    _print_members(ctx, _with_client(ctx, lambda c: c.member_list()), output)


@member.command(
    "add",
    epilog="""\b
Then start the new node with the printed command. Adding it as a --learner first lets it catch up before it
votes (promote it afterwards): a new voter that is far behind makes the cluster wait for it.""",
)
@click.argument("node_id", type=click.IntRange(min=1))
@click.option("--peer-addr", required=True, metavar="HOST:PORT", help="Where the other nodes reach the new one.")
@click.option("--client-addr", required=True, metavar="HOST:PORT", help="Where clients reach the new node.")
@click.option("--learner", is_flag=True, help="Add as a non-voting learner (promote it once it has caught up).")
@output_option
@click.pass_context
def member_add(
    ctx: click.Context, node_id: int, peer_addr: str, client_addr: str, learner: bool, output: str | None
) -> None:
    """Add node NODE_ID to the cluster, and print how to start it."""
    ml = _with_client(ctx, lambda c: c.member_add(node_id, peer_addr, client_addr, learner=learner))
    _print_members(ctx, ml, output)
    if _output(ctx, output) != "json":
        members = " ".join(f"--member {m.id}={m.peer_addr},{m.client_addr}" for m in ml.members)
        click.echo(
            f"start it with:\n  raftkv serve --id {node_id} --data-dir DIR --join --join-cluster-id {ml.cluster_id} "
            f"{members}"
        )


@member.command("promote")
@click.argument("node_id", type=click.IntRange(min=1))
@output_option
@click.pass_context
def member_promote(ctx: click.Context, node_id: int, output: str | None) -> None:
    """Make learner NODE_ID a voter."""
    _print_members(ctx, _with_client(ctx, lambda c: c.member_promote(node_id)), output)


@member.command("remove")
@click.argument("node_id", type=click.IntRange(min=1))
@click.option("--force", is_flag=True, help="Also remove a voter from a two-voter cluster (see README).")
@output_option
@click.pass_context
def member_remove(ctx: click.Context, node_id: int, force: bool, output: str | None) -> None:
    """Remove node NODE_ID (removing the leader works: it hands leadership over first)."""
    _print_members(ctx, _with_client(ctx, lambda c: c.member_remove(node_id, force=force)), output)


@main.group()
def leader() -> None:
    """Leadership: hand it over to another voter."""


@leader.command("transfer")
@click.option("--to", "to", type=click.IntRange(min=0), default=0, help="The new leader (default: most up to date).")
@click.pass_context
def leader_transfer(ctx: click.Context, to: int) -> None:
    """Hand leadership to another voter: it catches up, then takes over (one election round)."""
    new = _with_client(ctx, lambda c: c.transfer_leader(to))
    click.echo(f"node {new} is the leader")


@main.group(
    epilog="""\b
Examples:
  raftkv cluster up --nodes 3
  raftkv cluster status
  raftkv cluster kill 2 && raftkv cluster restart 2
  raftkv cluster logs 2 -n 100
  raftkv cluster down --purge"""
)
def cluster() -> None:
    """Run a cluster on this machine: nodes are background processes with their files in one directory
    (node.toml, data/, node.log, pid per node; cluster.json with the endpoints, which the other commands read)."""


@cluster.command("up")
@click.option("--nodes", type=click.IntRange(1, MAX_LOCAL_NODES), default=None, help="How many nodes [3].")
@dir_option
@click.option(
    "--base-port",
    type=click.IntRange(1024, 65000),
    default=None,
    help="Client ports BASE.., peer ports BASE+100.. [default: free ports picked at start].",
)
@click.option("--tick-ms", type=click.IntRange(min=1), default=100, show_default=True, help="Raft tick length.")
@click.option("--no-sync", is_flag=True, help="Do not fsync (faster; loses acknowledged writes on power failure).")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Seconds to wait for a leader.",
)
@click.pass_context
def cluster_up(
    ctx: click.Context,
    nodes: int | None,
    dir_: str | None,
    base_port: int | None,
    tick_ms: int,
    no_sync: bool,
    timeout_s: float,
) -> None:
    """Start N nodes in the background and wait until they elect a leader; print the endpoints.

    A directory holding a stopped cluster (after `cluster down` without --purge) is started again, data kept."""
    from . import localcluster

    d = _cluster_dir(ctx, dir_)
    info = localcluster.up(
        d, nodes, tick_ms=tick_ms, sync=not no_sync, base_port=base_port, timeout_s=timeout_s, progress=_progress
    )
    click.echo(",".join(info.endpoints))
    default = localcluster.default_dir().absolute() == info.dir
    hint = "" if default else f" --cluster-dir {info.dir}"
    click.echo(f"cluster up: try `raftkv{hint} put hello world` and `raftkv{hint} status`", err=True)


@cluster.command("status")
@dir_option
@output_option
@click.pass_context
def cluster_status(ctx: click.Context, dir_: str | None, output: str | None) -> None:
    """Show each node of the local cluster: its process and its Raft state (JSON: the shape of `raftkv status`)."""
    from . import localcluster

    rows = localcluster.status(_cluster_dir(ctx, dir_), timeout_s=min(_globals(ctx).timeout_s, 3.0))
    nodes = [st for _, st in rows]
    if _output(ctx, output) == "json":
        _print_json(status_json(nodes))
    else:
        _status_table(nodes, pids=[ni.pid if ni.running else None for ni, _ in rows])


@cluster.command("kill")
@click.argument("node", type=int)
@dir_option
@click.pass_context
def cluster_kill(ctx: click.Context, node: int, dir_: str | None) -> None:
    """SIGKILL node NODE (a crash: no clean shutdown)."""
    from . import localcluster

    click.echo(localcluster.kill(_cluster_dir(ctx, dir_), node))


@cluster.command("stop")
@click.argument("node", type=int)
@dir_option
@click.pass_context
def cluster_stop(ctx: click.Context, node: int, dir_: str | None) -> None:
    """Stop node NODE cleanly (SIGTERM; SIGKILL after 10 s)."""
    from . import localcluster

    click.echo(localcluster.stop(_cluster_dir(ctx, dir_), node))


@cluster.command("restart")
@click.argument("node", type=int)
@dir_option
@click.pass_context
def cluster_restart(ctx: click.Context, node: int, dir_: str | None) -> None:
    """Start node NODE again with its config and data (stopping it first if it runs)."""
    from . import localcluster

    click.echo(localcluster.restart(_cluster_dir(ctx, dir_), node))


@cluster.command("add-node")
@dir_option
@click.option("--learner", is_flag=True, help="Leave the new node a learner (do not promote it).")
@click.pass_context
def cluster_add_node(ctx: click.Context, dir_: str | None, learner: bool) -> None:
    """Start one more local node and join it to the cluster (learner, catch up, then voter)."""
    from . import localcluster

    ni = localcluster.add_node(_cluster_dir(ctx, dir_), learner=learner, progress=_progress)
    click.echo(ni.client_addr)


@cluster.command("down")
@dir_option
@click.option("--purge", is_flag=True, help="Also delete the cluster's directory (configs, data, logs).")
@click.pass_context
def cluster_down(ctx: click.Context, dir_: str | None, purge: bool) -> None:
    """Stop every node (SIGTERM; SIGKILL after 10 s). Without --purge the data stays and `cluster up` restarts it."""
    from . import localcluster

    for msg in localcluster.down(_cluster_dir(ctx, dir_), purge=purge):
        click.echo(msg)


@cluster.command("logs")
@click.argument("node", type=int)
@dir_option
@click.option("-n", "--lines", type=click.IntRange(min=1), default=50, show_default=True, help="How many lines.")
@click.pass_context
def cluster_logs(ctx: click.Context, node: int, dir_: str | None, lines: int) -> None:
    """Print the last lines of node NODE's log."""
    from . import localcluster

    text = localcluster.logs(_cluster_dir(ctx, dir_), node, lines)
    if text:
        click.echo(text)


# -- chaos --------------------------------------------------------------------------------------------------------
def _seconds_range(_ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, float]:
    """``A-B`` (or ``A``) seconds, 0 < A <= B."""
    lo_s, _, hi_s = value.partition("-")
    try:
        lo = float(lo_s)
        hi = float(hi_s) if hi_s else lo
    except ValueError:
        raise click.BadParameter(f"expected A-B seconds (e.g. 5-10), got {value!r}", param=param) from None
    if not 0 < lo <= hi:
        raise click.BadParameter(f"expected A-B seconds with 0 < A <= B, got {value!r}", param=param)
    return lo, hi


@main.command(
    epilog="""\b
Faults (--nemesis takes names or families, comma-separated, or all):
  kill       kill-leader, kill-random, kill-minority, kill-all   kill -9, then restart
  pause      pause-leader                                         SIGSTOP, then SIGCONT
  partition  partition-halves, isolate-leader, isolate-follower
  bridge, ring, oneway (oneway-leader-deaf, oneway-leader-mute, oneway-link), loss, netem (delay; needs sch_netem)
Network faults need root, iproute2 and iptables (one namespace per node); without them only process faults run.

\b
Examples:
  sudo raftkv chaos --nodes 3 --duration 40 --nemesis all
  sudo raftkv chaos --duration 600 --seed 42 --out chaos-10min
  sudo raftkv chaos --consistency stale --nemesis isolate-follower   # finds violations: stale reads are stale

\b
Results in --out: verdict.json, history.jsonl, faults.log, timeline.png, logs/. Exit codes: 0 every check passed,
6 a violation was found (not linearizable, lost writes, counter off), 4 the cluster did not recover,
1 inconclusive (the checker gave up) or unexpected failure, 8 the run could not be set up."""
)
@click.option("--nodes", type=click.IntRange(1, 9), default=5, show_default=True, help="Cluster size.")
@click.option("--duration", "duration_s", type=click.FloatRange(min=1), default=120, show_default=True,
              help="Seconds of workload under faults.")
@click.option("--nemesis", default="all", show_default=True, metavar="NAMES", help="Faults to inject (see below).")
@click.option("--consistency", type=click.Choice(CONSISTENCY_LEVELS), default="linearizable", show_default=True,
              help="Consistency of the workload's reads.")
@click.option("--clients", type=click.IntRange(1, 200), default=10, show_default=True, help="Concurrent clients.")
@click.option("--keys", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="Register keys (plus one counter key).")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Schedule and workload seed [random].")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Results directory [./raftkv-chaos/<UTC time>].")
@click.option("--tick-ms", type=click.IntRange(min=1), default=100, show_default=True, help="Raft tick length.")
@click.option("--fault-s", default="5-10", show_default=True, callback=_seconds_range, metavar="A-B",
              help="Length of each fault, seconds.")
@click.option("--heal-s", default="5-10", show_default=True, callback=_seconds_range, metavar="A-B",
              help="Length of each healed period, seconds.")
@click.option("--api", type=click.Choice(["raftkv", "etcd"]), default="raftkv", show_default=True,
              help="The API the workload goes through: raftkv's own client, or etcd's v3 API (as an etcd client "
              "sends it: linearizable reads, serializable for --consistency stale; no sessions, so a write whose "
              "outcome is unknown is not retried).")
def chaos(
    nodes: int,
    duration_s: float,
    nemesis: str,
    consistency: str,
    clients: int,
    keys: int,
    seed: int | None,
    out: str | None,
    tick_ms: int,
    fault_s: tuple[float, float],
    heal_s: tuple[float, float],
    api: str,
) -> None:
    """Test a fresh local cluster under faults, Jepsen-style: concurrent clients record every operation while
    processes are killed and paused and the network is partitioned; then the history is checked for
    linearizability, lost writes and exactly-once increments, and recovery and unavailability are measured."""
    from .chaos.runner import ChaosConfig, print_verdict, run_chaos

    cfg = ChaosConfig(
        nodes=nodes, duration_s=duration_s, nemesis=nemesis, consistency=consistency, clients=clients, keys=keys,
        seed=seed, out=Path(out) if out else None, tick_ms=tick_ms, fault_s=fault_s, heal_s=heal_s, api=api,
    )
    try:
        verdict = run_chaos(cfg, progress=_progress)
    except KeyboardInterrupt:
        _die("interrupted: the faults were undone, the cluster stopped and the namespaces removed", ExitCode.ERROR)
    print_verdict(verdict)
    raise click.exceptions.Exit(verdict.exit_code)


@main.command(
    epilog="""\b
Examples:
  raftkv check --cluster                      # every member's state compared (through the leader)
  raftkv cluster stop 3
  raftkv check .raftkv-cluster/node3/data      # text: ok, or one line per problem found
  raftkv check DATA_DIR --output json         # {"ok", "problems", "log_entries_checked", "records", ...}"""
)
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path), required=False)
@click.option("--cluster", "whole_cluster", is_flag=True,
              help="Compare the state of every member of the running cluster instead (no DATA_DIR).")
@output_option
@click.pass_context
def check(ctx: click.Context, data_dir: Path | None, whole_cluster: bool, output: str | None) -> None:
    """Check a stopped node's DATA_DIR offline: the LMDB file, every log record's checksum and decoding, the log
    against the hard state and the applied index, and every state machine record's checksum and decoding. Exits 0
    when all is well, 10 when something is damaged (rebuild the node: member remove, wipe, member add), 8 when
    DATA_DIR holds no raftkv data or cannot be opened.

    With --cluster: every member of the running cluster hashes its whole state right after one log entry (the
    leader proposes it) and the hashes are compared; a member whose hash differs from the majority's gets its
    corruption alarm (it then serves nothing; rebuild it). Exits 0 when every member agrees, 10 when one differs,
    4 when no majority could be had."""
    if whole_cluster == (data_dir is not None):
        raise click.UsageError("give either DATA_DIR (an offline check of one node) or --cluster")
    if whole_cluster:
        _check_cluster(ctx, output)
        return
    assert data_dir is not None
    from .check import check_data_dir

    report = check_data_dir(data_dir)
    if _output(ctx, output) == "json":
        _print_json(report.as_json())
    elif report.ok:
        records = sum(report.records.values())
        click.echo(
            f"ok: {report.data_dir}: {report.log_entries_checked} log entries ({report.first_index}.."
            f"{report.last_index}, commit {report.commit}, applied {report.applied}), {records} state machine "
            f"records, revision {report.revision}"
        )
    else:
        for p in report.problems:
            click.echo(f"damaged: {p}", err=True)
    if not report.ok:
        raise click.exceptions.Exit(ExitCode.CORRUPT)


def _check_cluster(ctx: click.Context, output: str | None) -> None:
    res = _with_client(ctx, lambda c: c.check_cluster())
    if _output(ctx, output) == "json":
        _print_json({
            "ok": res.ok, "index": res.index, "majority_hash": res.majority_hash,
            "members": [{"id": m.id, "hash": m.hash, "error": m.error, "mismatch": m.mismatch} for m in res.members],
        })
    else:
        for m in res.members:
            state = "DIFFERS (corruption alarm raised)" if m.mismatch else ("agrees" if m.hash else m.error)
            click.echo(f"node {m.id}: {m.hash[:16] or '-':16}  {state}")
        verdict = "every member agrees" if res.ok else ("a member differs" if any(m.mismatch for m in res.members)
                                                         else "inconclusive: no majority of hashes")
        click.echo(f"{verdict} (state hashed right after log index {res.index})")
    if any(m.mismatch for m in res.members):
        raise click.exceptions.Exit(ExitCode.CORRUPT)
    if not res.ok:
        raise click.exceptions.Exit(ExitCode.UNAVAILABLE)


from .bench_cmd import bench as _bench_command  # noqa: E402  (registered last: it forwards to the bench harness)

main.add_command(_bench_command)

__all__ = ["main", "status_json"]
