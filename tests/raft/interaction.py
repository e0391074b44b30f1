"""Data-driven interaction tests for the Raft core: scripts of inputs, with the Readys and messages they cause as
golden output (in the manner of etcd-io/raft's ``rafttest`` and cockroachdb/datadriven).

Script format
=============

A script (``tests/raft/testdata/*.txt``) is a sequence of blocks separated by blank lines::

    # Comment lines (and blank lines) between blocks are kept as they are.
    command arg1 arg2 key=value key=(1,2,3)
    ----
    the output the command is expected to print
    (any number of lines, up to the next blank line or the end of the file)

A command is one line: a name, positional arguments, and ``key=value`` options (a list value is written
``(1,2,3)``; no spaces inside). Output never contains a blank line; a command with nothing to say prints ``ok``.
``test_interaction.py`` runs every script and fails with a unified diff when the output differs; with
``RAFTKV_REWRITE=1`` it writes the actual output back into the file instead (write a new block with an empty output,
run with the flag, and review the result as a diff).

Messages, entries and Readys are printed with ``raftkv.raft.describe``. Entry data is shown as a quoted byte string;
a membership change's data is its text form: ``v4`` (add voter 4, or promote learner 4), ``l4`` (add learner 4, or
demote voter 4), ``r4`` (remove node 4).

The environment
===============

Nodes are ``RawNode``s over ``MemoryStorage``, with ids 1, 2, ... in the order they were added. Time is ticks, moved
only by the tick commands. The only randomness the core uses, the jitter added to the election timeout, comes from
a fixed source: node i's timeout is ``election-tick + jitter[i]`` (jitter 0 unless ``add-nodes`` says otherwise).

Processing a Ready is a synchronous driver that finishes every Ready before taking the next: it writes the Ready
(snapshot, hard state, entries) into the node's storage, applies its committed membership changes
(``RawNode.apply_conf_change``, the result stored as the storage's membership), queues its messages (``messages``,
then ``persisted_messages``) on the one network queue, and calls ``advance``. Messages stay queued, in the order
they were sent, until a command delivers or drops them. ``isolate`` cuts a node off: messages from or to it are
dropped (and printed as dropped) when their delivery is attempted. ``restart`` is a crash and a restart: the node's
volatile state and the messages queued to it are lost, its storage (all of it durable here) is kept.

Commands
========

``add-nodes N [voters=(..)] [learners=(..)] [election-tick=10] [heartbeat-tick=1] [pre-vote=true]
[check-quorum=true] [max-size-per-msg=..] [max-inflight=..] [max-inflight-read-rounds=..] [forward-proposals=false]
[jitter=J|(J1,J2,..)]``
    Add N nodes. Their storage starts empty with the given membership (none: a node that is to join later and
    learns the membership from a snapshot). Options not given take ``Config``'s defaults.
``campaign ID``                      ``RawNode.campaign``: start an election (pre-vote first, if enabled).
``propose ID DATA``                  ``RawNode.propose``.
``propose-conf-change ID v4|l4|r4``  ``RawNode.propose_conf_change``.
``tick-election ID...``              ``election-tick`` ticks on each node (one election timeout without jitter).
``tick-heartbeat ID...``             ``heartbeat-tick`` ticks on each node.
``tick ID... [n=1]``                 n ticks on each node.
``process-ready ID...``              Take one Ready from each node, print it, carry it out (see above).
``deliver-msgs [type=T] [drop=(..)] [ID...]``
                                     Deliver the queued messages (of type T, a ``MsgType`` name, if given) to the
                                     listed nodes (all, when none are listed and nothing is dropped), printing each;
                                     drop, printing them as dropped, those to the ``drop`` nodes.
``stabilize [ID...]``                Among the listed nodes (default: all), process Readys and deliver messages
                                     until neither is left; each step under ``> ID handling Ready`` or
                                     ``> ID receiving messages``. Messages to other nodes stay queued.
``read-index ID CTX``                ``RawNode.read_index``; the ReadState comes in a later Ready.
``transfer-leader FROM TO``          ``RawNode.transfer_leader`` on FROM.
``compact ID INDEX``                 The state machine snapshots at INDEX (with the membership applied there) and
                                     the storage drops the entries up to it.
``isolate ID...`` / ``heal``         Cut nodes off from everyone / restore every link (the messages still in flight
                                     across the partition are dropped).
``restart ID``                       Crash the node and start it again from its storage.
``raft-state``                       Each node's role, term, leader, last index, commit and applied index.
``raft-log ID``                      The node's durable log.
``status ID``                        ``RawNode.status``, with the leader's view of each follower's progress.
``read-freshness ID``                ``RawNode.read_freshness``: the bounded-staleness read point (tick, commit).

``add-nodes`` prints each new node's membership and election timeout. A refusal or failure the core raises (a
``RaftError``: ``ProposalDropped``, ``LostAcknowledgedEntries``, ...) is output too, as ``error: <type>: <message>``;
a malformed script raises ``ScriptError`` naming the file and line.

The environment uses only ``RawNode``'s public API, ``MemoryStorage`` and ``describe``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from raftkv.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    EntryType,
    MemoryStorage,
    Message,
    MsgType,
    RaftError,
    RawNode,
)
from raftkv.raft.describe import describe_entry, describe_message, describe_ready, describe_snapshot

from .harness import write_ready

SEPARATOR = "----"
STABILIZE_LIMIT = 1000
"""Rounds after which ``stabilize`` gives up (a livelock in the core, or a script that never settles)."""


class ScriptError(Exception):
    """A malformed script or command (not a behaviour of the core: those are printed as output)."""


# -- the file format ----------------------------------------------------------------------------------------------
@dataclass
class Block:
    before: list[str]
    """The comment and blank lines before the command, kept verbatim."""
    command: str
    expected: list[str]
    line: int
    """1-based line number of the command."""


@dataclass
class Script:
    blocks: list[Block]
    trailer: list[str] = field(default_factory=list)

    def render(self, outputs: Iterable[list[str]] | None = None) -> str:
        """The script text, with ``outputs`` (one list of lines per block) in place of the expected output."""
        outs = list(outputs) if outputs is not None else [b.expected for b in self.blocks]
        lines: list[str] = []
        for b, out in zip(self.blocks, outs, strict=True):
            lines += [*b.before, b.command, SEPARATOR, *out]
        lines += self.trailer
        return "\n".join(lines) + "\n"


def parse_script(text: str, name: str = "<script>") -> Script:
    lines = text.splitlines()
    blocks: list[Block] = []
    before: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            before.append(line)
            i += 1
            continue
        start = i + 1
        i += 1
        if i >= len(lines) or lines[i] != SEPARATOR:
            raise ScriptError(f"{name}:{start}: expected {SEPARATOR!r} after the command {line!r}")
        i += 1
        out: list[str] = []
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        blocks.append(Block(before, line, out, start))
        before = []
    return Script(blocks, before)


_TOKEN = re.compile(r"[^\s=]+=\([^)]*\)|\S+")


@dataclass
class Command:
    name: str
    args: list[str]
    opts: dict[str, str]

    def ids(self, at_least: int = 0) -> list[int]:
        if len(self.args) < at_least:
            raise ScriptError(f"{self.name}: expected at least {at_least} node id(s)")
        return [_int(a) for a in self.args]

    def one_id(self) -> int:
        if len(self.args) != 1:
            raise ScriptError(f"{self.name}: expected one node id")
        return _int(self.args[0])

    def two_ids(self) -> tuple[int, int]:
        if len(self.args) != 2:
            raise ScriptError(f"{self.name}: expected two numbers")
        return _int(self.args[0]), _int(self.args[1])

    def opt_ids(self, key: str) -> list[int]:
        v = self.opts.get(key)
        return [] if v is None else _int_list(v)


def parse_command(line: str) -> Command:
    tokens = _TOKEN.findall(line)
    args: list[str] = []
    opts: dict[str, str] = {}
    for t in tokens[1:]:
        if "=" in t:
            k, v = t.split("=", 1)
            opts[k] = v
        else:
            args.append(t)
    return Command(tokens[0], args, opts)


def _int(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        raise ScriptError(f"expected a number, got {s!r}") from None


def _int_list(v: str) -> list[int]:
    v = v.strip()
    if v.startswith("(") and v.endswith(")"):
        v = v[1:-1]
    return [_int(x) for x in re.split(r"[,\s]+", v) if x]


def _bool(v: str) -> bool:
    if v not in ("true", "false"):
        raise ScriptError(f"expected true or false, got {v!r}")
    return v == "true"


# -- membership changes as entry data -----------------------------------------------------------------------------
_CC_TYPES = {"v": ConfChangeType.ADD_VOTER, "l": ConfChangeType.ADD_LEARNER, "r": ConfChangeType.REMOVE_NODE}
_CC_LETTERS = {t: c for c, t in _CC_TYPES.items()}


def encode_cc(text: str) -> bytes:
    """``v4`` / ``l4`` / ``r4`` as entry data (the text itself, so described entries read as the script does)."""
    if len(text) < 2 or text[0] not in _CC_TYPES:
        raise ScriptError(f"a membership change is v<id>, l<id> or r<id>, got {text!r}")
    _int(text[1:])
    return text.encode()


def decode_cc(data: bytes) -> ConfChange:
    text = data.decode()
    return ConfChange(_CC_TYPES[text[0]], int(text[1:]))


def _cc_text(cc: ConfChange) -> str:
    return f"{_CC_LETTERS[cc.type]}{cc.node_id}"


def _conf(cs: ConfState) -> str:
    return f"Voters:{list(cs.voters)} Learners:{list(cs.learners)}"


# -- the environment ----------------------------------------------------------------------------------------------
class FixedJitter:
    """A ``RandomSource`` that always draws the same number: election timeouts without chance."""

    __slots__ = ("jitter",)

    def __init__(self, jitter: int) -> None:
        self.jitter = jitter

    def randrange(self, n: int, /) -> int:
        return min(self.jitter, n - 1)


@dataclass
class Node:
    rn: RawNode
    storage: MemoryStorage
    config: Config


_CONFIG_OPTS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "election-tick": ("election_tick", _int),
    "heartbeat-tick": ("heartbeat_tick", _int),
    "pre-vote": ("pre_vote", _bool),
    "check-quorum": ("check_quorum", _bool),
    "max-size-per-msg": ("max_size_per_msg", _int),
    "max-inflight": ("max_inflight_msgs", _int),
    "max-inflight-read-rounds": ("max_inflight_read_rounds", _int),
    "forward-proposals": ("forward_proposals", _bool),
}


class InteractionEnv:
    def __init__(self) -> None:
        self.nodes: dict[int, Node] = {}
        self.queue: list[Message] = []
        """Messages sent and neither delivered nor dropped yet, in the order they were sent."""
        self.isolated: set[int] = set()
        self.out: list[str] = []
        self._indent = ""

    # -- output -----------------------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        for line in text.splitlines():
            self.out.append(self._indent + line)

    def _indented(self, header: str, fn: Callable[[], Any]) -> None:
        self.say(header)
        old, self._indent = self._indent, self._indent + "  "
        try:
            fn()
        finally:
            self._indent = old

    def handle(self, line: str) -> list[str]:
        """Run one command line; return its output lines."""
        self.out = []
        cmd = parse_command(line)
        fn = getattr(self, "cmd_" + cmd.name.replace("-", "_"), None)
        if fn is None:
            raise ScriptError(f"unknown command {cmd.name!r}")
        fn(cmd)
        return self.out or ["ok"]

    def node(self, nid: int) -> Node:
        n = self.nodes.get(nid)
        if n is None:
            raise ScriptError(f"no node {nid}")
        return n

    def _guard(self, fn: Callable[[], None]) -> None:
        """Run a step of the core; a refusal or failure it reports (a RaftError) is part of the output."""
        try:
            fn()
        except RaftError as e:
            self.say(f"error: {type(e).__name__}: {e}")

    # -- setup and faults -------------------------------------------------------------------------------------
    def cmd_add_nodes(self, c: Command) -> None:
        if len(c.args) != 1:
            raise ScriptError("add-nodes N [options]")
        n = _int(c.args[0])
        cs = ConfState(tuple(sorted(c.opt_ids("voters"))), tuple(sorted(c.opt_ids("learners"))))
        kw: dict[str, Any] = {}
        for k, v in c.opts.items():
            if k in ("voters", "learners", "jitter"):
                continue
            if k not in _CONFIG_OPTS:
                raise ScriptError(f"add-nodes: unknown option {k!r}")
            attr, conv = _CONFIG_OPTS[k]
            kw[attr] = conv(v)
        jitter = c.opt_ids("jitter") or [0]
        if len(jitter) == 1:
            jitter = jitter * n
        if len(jitter) != n:
            raise ScriptError(f"add-nodes: {n} nodes but {len(jitter)} jitter values")
        for j in jitter:
            nid = len(self.nodes) + 1
            storage = MemoryStorage(cs)
            config = Config(id=nid, rng=FixedJitter(j), decode_conf_change=decode_cc, **kw)
            self.nodes[nid] = Node(RawNode(config, storage), storage, config)
            timeout = config.election_tick + FixedJitter(j).randrange(config.election_tick)
            self.say(f"{nid}: {_conf(cs)} election timeout {timeout}")

    def cmd_isolate(self, c: Command) -> None:
        for nid in c.ids(1):
            self.isolated.add(nid)

    def cmd_heal(self, c: Command) -> None:
        """Restore every link. The messages still in flight across the partition are lost with it."""
        for m in self.queue:
            if self._cut(m):
                self.say("dropped: " + describe_message(m))
        self.queue = [m for m in self.queue if not self._cut(m)]
        self.isolated.clear()

    def cmd_restart(self, c: Command) -> None:
        nid = c.one_id()
        n = self.node(nid)
        for m in [m for m in self.queue if m.to == nid]:
            self.say("lost: " + describe_message(m))
        self.queue = [m for m in self.queue if m.to != nid]
        # Every Ready was carried out in full (applied entries included) before the next was taken.
        config = replace(n.config, applied=n.rn.status().applied)
        n.rn = RawNode(config, n.storage)
        n.config = config
        st = n.rn.status()
        self.say(f"{nid}: restarted at Term:{st.term} Vote:{st.vote} Commit:{st.commit} Applied:{st.applied}")

    # -- inputs -----------------------------------------------------------------------------------------------
    def cmd_campaign(self, c: Command) -> None:
        self._guard(self.node(c.one_id()).rn.campaign)

    def cmd_propose(self, c: Command) -> None:
        if len(c.args) != 2:
            raise ScriptError("propose ID DATA")
        rn = self.node(_int(c.args[0])).rn
        data = c.args[1].encode()
        self._guard(lambda: rn.propose(data))

    def cmd_propose_conf_change(self, c: Command) -> None:
        if len(c.args) != 2:
            raise ScriptError("propose-conf-change ID v<id>|l<id>|r<id>")
        rn = self.node(_int(c.args[0])).rn
        data = encode_cc(c.args[1])
        self._guard(lambda: rn.propose_conf_change(data))

    def cmd_read_index(self, c: Command) -> None:
        if len(c.args) != 2:
            raise ScriptError("read-index ID CTX")
        rn = self.node(_int(c.args[0])).rn
        ctx = c.args[1].encode()
        self._guard(lambda: rn.read_index(ctx))

    def cmd_transfer_leader(self, c: Command) -> None:
        frm, to = c.two_ids()
        rn = self.node(frm).rn
        self._guard(lambda: rn.transfer_leader(to))

    def _tick(self, c: Command, ticks: Callable[[Node], int]) -> None:
        for nid in c.ids(1):
            n = self.node(nid)
            for _ in range(ticks(n)):
                self._guard(n.rn.tick)

    def cmd_tick(self, c: Command) -> None:
        times = _int(c.opts.get("n", "1"))
        self._tick(c, lambda n: times)

    def cmd_tick_election(self, c: Command) -> None:
        self._tick(c, lambda n: n.config.election_tick)

    def cmd_tick_heartbeat(self, c: Command) -> None:
        self._tick(c, lambda n: n.config.heartbeat_tick)

    def cmd_compact(self, c: Command) -> None:
        nid, index = c.two_ids()
        n = self.node(nid)
        if not n.storage.first_index() <= index <= n.rn.status().applied:
            raise ScriptError(f"compact: {index} is not an applied index in node {nid}'s log")
        applied = n.rn.status().applied
        if any(e.type == EntryType.CONF_CHANGE for e in n.storage.entries(index + 1, applied + 1)):
            # The storage's membership is the one as of the applied index, not as of INDEX.
            raise ScriptError(f"compact: a membership change between {index} and the applied index {applied}")
        snap = n.storage.create_snapshot(index, n.storage.conf_state, b"")
        n.storage.compact(index)
        self.say(f"{nid}: snapshot {describe_snapshot(snap)}; log starts at {n.storage.first_index()}")

    # -- the driver -------------------------------------------------------------------------------------------
    def process_ready(self, nid: int) -> None:
        n = self.node(nid)
        rd = n.rn.ready()
        self.say(describe_ready(rd))
        write_ready(n.storage, rd)
        for e in rd.committed_entries:
            if e.type == EntryType.CONF_CHANGE:
                cc = decode_cc(e.data)
                cs = n.rn.apply_conf_change(cc, e.index)
                n.storage.set_conf_state(cs)
                self.say(f"applied {_cc_text(cc)} at {e.index}: {_conf(cs)}")
        self.queue.extend(rd.messages)
        self.queue.extend(rd.persisted_messages)
        n.rn.advance(rd)

    def cmd_process_ready(self, c: Command) -> None:
        ids = c.ids(1)
        for nid in ids:
            if len(ids) > 1:
                self._indented(f"> {nid} handling Ready", lambda nid=nid: self.process_ready(nid))
            else:
                self.process_ready(nid)

    def _cut(self, m: Message) -> bool:
        return m.frm in self.isolated or m.to in self.isolated

    def deliver(self, to: int, typ: int | None = None, drop: bool = False) -> int:
        """Deliver (or drop) the queued messages to ``to`` (of type ``typ``). Returns how many were handled."""
        mine = [m for m in self.queue if m.to == to and (typ is None or m.type == typ)]
        if not mine:
            return 0
        taken = {id(m) for m in mine}
        self.queue = [m for m in self.queue if id(m) not in taken]
        for m in mine:
            if drop or self._cut(m):
                self.say("dropped: " + describe_message(m))
                continue
            self.say(describe_message(m))
            self._guard(partial(self.node(to).rn.step, m))
        return len(mine)

    def cmd_deliver_msgs(self, c: Command) -> None:
        typ = None
        if "type" in c.opts:
            try:
                typ = MsgType[c.opts["type"]]
            except KeyError:
                raise ScriptError(f"unknown message type {c.opts['type']!r}") from None
        to = c.ids()
        drop = c.opt_ids("drop")
        if set(to) & set(drop):
            raise ScriptError("deliver-msgs: cannot both deliver to and drop messages to a node")
        if not to and not drop:
            to = sorted(self.nodes)
        handled = 0
        for nid in to:
            handled += self.deliver(nid, typ)
        for nid in drop:
            handled += self.deliver(nid, typ, drop=True)
        if not handled:
            self.say("no messages")

    def cmd_stabilize(self, c: Command) -> None:
        ids = c.ids() or sorted(self.nodes)
        for nid in ids:
            self.node(nid)
        for _ in range(STABILIZE_LIMIT):
            done = True
            for nid in ids:
                if self.nodes[nid].rn.has_ready():
                    self._indented(f"> {nid} handling Ready", lambda nid=nid: self.process_ready(nid))
                    done = False
            for nid in ids:
                if any(m.to == nid for m in self.queue):
                    self._indented(f"> {nid} receiving messages", lambda nid=nid: self.deliver(nid))
                    done = False
            if done:
                return
        raise ScriptError(f"stabilize: still busy after {STABILIZE_LIMIT} rounds")

    # -- introspection ----------------------------------------------------------------------------------------
    def cmd_raft_state(self, c: Command) -> None:
        for nid, n in sorted(self.nodes.items()):
            rn = n.rn
            st = rn.status()
            cs = rn.conf_state()
            member = "" if nid in cs.voters else " (learner)" if nid in cs.learners else " (non-member)"
            self.say(
                f"{nid}: {st.role} Term:{st.term} Lead:{st.lead} Last:{st.last_index} Commit:{st.commit} "
                f"Applied:{st.applied}{member}"
            )

    def cmd_raft_log(self, c: Command) -> None:
        s = self.node(c.one_id()).storage
        first, last = s.first_index(), s.last_index()
        if first > 1:
            self.say(f"snapshot {describe_snapshot(s.snapshot())}")
        if last < first:
            self.say(f"log is empty: first index={first}, last index={last}")
            return
        for e in s.entries(first, last + 1):
            self.say(describe_entry(e))

    def cmd_status(self, c: Command) -> None:
        st = self.node(c.one_id()).rn.status()
        self.say(
            f"{st.id}: {st.role} Term:{st.term} Vote:{st.vote} Lead:{st.lead} Last:{st.last_index} "
            f"Commit:{st.commit} Applied:{st.applied}"
            + (f" Transferee:{st.lead_transferee}" if st.lead_transferee else "")
        )
        self.say(_conf(st.conf_state))
        for pid, pr in st.progress.items():
            flags = ("" if pr.recent_active else " inactive") + (" learner" if pr.is_learner else "")
            inflight = f" inflight={pr.inflight}" if pr.inflight else ""
            self.say(f"{pid}: {pr.state} match={pr.match} next={pr.next}{inflight}{flags}")

    def cmd_read_freshness(self, c: Command) -> None:
        f = self.node(c.one_id()).rn.read_freshness()
        self.say("no read point yet" if f is None else f"state at commit {f[1]} is current as of tick {f[0]}")


def run_script(path: Path) -> tuple[str, str]:
    """Run the script at ``path``: returns (its text, the text with the actual output)."""
    text = path.read_text()
    script = parse_script(text, path.name)
    env = InteractionEnv()
    outputs = []
    for b in script.blocks:
        try:
            outputs.append(env.handle(b.command))
        except ScriptError as e:
            raise ScriptError(f"{path.name}:{b.line}: {e}") from None
    return text, script.render(outputs)


__all__ = ["InteractionEnv", "Script", "ScriptError", "parse_script", "run_script"]
