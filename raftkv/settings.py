"""Node settings: from a TOML file, then ``RAFTKV_*`` environment variables, then command-line flags (each later
source overrides the earlier). The only module that knows how long a tick is: the core speaks ticks.

Example ``node1.toml``::

    id = 1
    data_dir = "data/node1"
    cluster_token = "my-cluster"            # nodes of different clusters refuse to talk to each other

    [[members]]                             # the initial membership (every node gets the same list)
    id = 1
    peer_addr = "127.0.0.1:7001"            # where peers reach this node (Raft traffic)
    client_addr = "127.0.0.1:8001"          # where clients reach it
    [[members]]
    id = 2
    ...

A node listens on its own member entry's addresses unless ``listen_peer_addr`` / ``listen_client_addr`` say
otherwise (e.g. "0.0.0.0:7001" behind an advertised address).
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .retention import parse_retention


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    peer_addr: str
    client_addr: str
    learner: bool = False

    def __str__(self) -> str:
        return f"{self.id}={self.peer_addr},{self.client_addr}"


@dataclass(frozen=True, slots=True)
class Settings:
    id: int
    data_dir: Path
    members: tuple[Member, ...]
    cluster_token: str = "raftkv"
    listen_peer_addr: str = ""
    listen_client_addr: str = ""
    tick_ms: int = 100
    heartbeat_ticks: int = 1
    election_ticks: int = 10
    lease_clock_drift_ms: int = 100
    """Allowance for clock-rate drift between nodes during a leader lease (lease = election timeout minus this)."""
    max_key_bytes: int = 4096
    max_value_bytes: int = 1 << 20
    max_batch_bytes: int = 1 << 20
    """Client commands proposed together are packed into log entries of at most this size."""
    max_inflight_proposals: int = 1
    """The leader proposes a new batch of client commands (its own and those forwarded by followers) only while
    fewer than this many of its log entries are uncommitted; meanwhile new commands wait and join the next batch.
    An idle cluster proposes at once; a busy one packs each replication round full. 0 = no bound."""
    max_inflight_writes: int = 1
    """How many Readys may have their LMDB writes under way at once. With more than one, the node takes the next
    Ready (new proposals, acknowledgements, the commit index) and sends its appends while the previous write is
    still syncing; the writes complete in order on the one writer thread. 1 (the default) = each write finishes
    before the next Ready is taken, so everything that arrives meanwhile joins one larger Ready: on a CPU-bound
    machine that measured faster (README, Performance)."""
    max_inflight_read_rounds: int = 2
    """Linearizable reads start a heartbeat round of their own only while fewer than this many rounds await a
    majority; others wait and share the next round. 0 = no bound."""
    max_inflight_read_requests: int = 1
    """A node asks for a read index (a follower: one message to the leader) for the linearizable reads that
    arrived only while fewer than this many of its requests are unanswered; reads arriving meanwhile wait and share
    the next request. 0 = no bound."""
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    max_pending_requests: int = 10_000
    request_timeout_ms: int = 5000
    sync: bool = True
    """fsync every write before acknowledging it. Turning it off loses acknowledged writes on power failure."""
    session_ttl_s: int = 3600
    max_sessions: int = 100_000
    forward_proposals: bool = True
    """Followers take writes too and forward them to the leader over the peer stream (as etcd does), so client RPC
    handling is spread over every node; False makes followers answer writes with a not-leader redirect."""
    join: bool = False
    """Join an existing cluster instead of bootstrapping one: the node starts with an empty log and learns the
    membership from the leader (after `raftkv member add` added it). Needs ``join_cluster_id``."""
    join_cluster_id: str = ""
    """The id of the cluster to join (printed by `raftkv member add`); overrides the id derived from the members."""
    compact_after_entries: int = 20_000
    """Compact the log once it holds this many applied entries; the state machine is durable in LMDB, so compaction
    only drops log entries (followers that need older ones get a snapshot of the state)."""
    compact_keep_entries: int = 2_000
    """Applied entries kept behind the compaction point, so slightly lagging followers catch up from the log."""
    corruption_check_interval_s: float = 300.0
    """How often the leader checks that every member's state is the same (each replica hashes its whole state right
    after one log entry; a member whose hash differs from the majority's gets its corruption alarm). 0 = never
    (``raftkv check --cluster`` still runs one by hand)."""
    startup_check_timeout_s: float = 5.0
    """At start-up a node that holds data compares its state with the cluster's (a hash check through the leader)
    before it serves clients; it waits at most this long for a leader and the check, then serves with a warning.
    0 = no start-up check."""
    history_retention: str = "1h"
    """How much history (old versions, for reads at a revision and watches from one) the leader keeps before it
    compacts, through the log: a number of revisions ("100000"), a duration ("90s", "30m", "1h", "7d"), or "0" (off:
    `raftkv compact` by hand). See ``raftkv.retention``."""
    log_level: str = "info"
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    # -- derived ----------------------------------------------------------------------------------------------
    @property
    def me(self) -> Member:
        for m in self.members:
            if m.id == self.id:
                return m
        raise ConfigError(f"node {self.id} is not in the member list {[m.id for m in self.members]}")

    @property
    def peer_listen(self) -> str:
        return self.listen_peer_addr or self.me.peer_addr

    @property
    def client_listen(self) -> str:
        return self.listen_client_addr or self.me.client_addr

    @property
    def cluster_id(self) -> str:
        """Derived from the token and the initial membership, like etcd's cluster id: two clusters started with
        different member lists or tokens get different ids even if their addresses collide."""
        if self.join_cluster_id:
            return self.join_cluster_id
        desc = self.cluster_token + "|" + ";".join(str(m) for m in sorted(self.members, key=lambda m: m.id))
        return hashlib.sha256(desc.encode()).hexdigest()[:16]

    @property
    def lease_ticks(self) -> int:
        """How many ticks after a confirmed heartbeat round a leader may serve lease reads."""
        return max(0, (self.election_ticks * self.tick_ms - self.lease_clock_drift_ms) // self.tick_ms)

    @property
    def min_lease_ttl_s(self) -> int:
        """The shortest lease TTL granted (shorter ones are raised to it): 1.5 election timeouts, rounded up, so a
        lease outlives the election that follows a leader's failure (etcd's rule)."""
        return max(1, -(-3 * self.election_ticks * self.tick_ms // 2000))

    def validate(self) -> Settings:
        if self.id <= 0:
            raise ConfigError(f"node id must be a positive integer, got {self.id}")
        ids = [m.id for m in self.members]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"duplicate member ids in {ids}")
        _ = self.me
        for m in self.members:
            _check_addr(m.peer_addr, f"member {m.id} peer_addr")
            _check_addr(m.client_addr, f"member {m.id} client_addr")
        if self.tick_ms < 1:
            raise ConfigError("tick_ms must be at least 1")
        if not 0 < self.heartbeat_ticks < self.election_ticks:
            raise ConfigError("need 0 < heartbeat_ticks < election_ticks")
        if not 1 <= self.max_key_bytes <= 1 << 20:
            raise ConfigError("max_key_bytes must be between 1 and 1 MiB")
        if not 0 <= self.max_value_bytes <= 64 << 20:
            raise ConfigError("max_value_bytes must be between 0 and 64 MiB")
        if self.join and not self.join_cluster_id:
            raise ConfigError("--join needs --join-cluster-id (the id `raftkv member add` printed)")
        if self.max_inflight_read_rounds < 0 or self.max_inflight_proposals < 0 or self.max_inflight_read_requests < 0:
            raise ConfigError(
                "max_inflight_read_rounds, max_inflight_read_requests and max_inflight_proposals must not be negative"
            )
        if self.max_inflight_writes < 1:
            raise ConfigError("max_inflight_writes must be at least 1")
        if self.compact_after_entries < 1 or self.compact_keep_entries < 0:
            raise ConfigError("compact_after_entries must be positive and compact_keep_entries not negative")
        parse_retention(self.history_retention)
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level must be debug, info, warning or error, not {self.log_level!r}")
        return self


def _check_addr(addr: str, what: str) -> None:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what} must look like HOST:PORT, got {addr!r}")


def parse_member(spec: str) -> Member:
    """``ID=PEER_ADDR,CLIENT_ADDR`` (as printed by ``str(Member)``), e.g. ``1=127.0.0.1:7001,127.0.0.1:8001``."""
    try:
        mid, addrs = spec.split("=", 1)
        peer, client = addrs.split(",", 1)
        return Member(int(mid), peer.strip(), client.strip())
    except ValueError:
        raise ConfigError(f"bad member {spec!r}: expected ID=PEER_ADDR,CLIENT_ADDR") from None


_FIELD_TYPES = {f.name: f.type for f in fields(Settings)}


def _coerce(name: str, value: Any) -> Any:
    t = str(_FIELD_TYPES.get(name))
    try:
        if t == "int":
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if t == "bool":
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if t == "Path":
            return Path(value)
        if t == "str":
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name!r}: cannot use {value!r} (expected {t})") from None
    return value


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Build validated Settings from a TOML file, ``RAFTKV_<NAME>`` environment variables and ``overrides``
    (flags). ``members`` may be a list of tables (TOML) or of ``ID=PEER,CLIENT`` strings (flags/env, comma+semicolon
    separated in env: ``RAFTKV_MEMBERS="1=a:1,a:2;2=b:1,b:2"``)."""
    raw: dict[str, Any] = {}
    if config_file:
        p = Path(config_file)
        try:
            raw.update(tomllib.loads(p.read_text()))
        except FileNotFoundError:
            raise ConfigError(f"config file {p} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {p} is not valid TOML: {e}") from None
    env = os.environ if env is None else env
    for name in _FIELD_TYPES:
        v = env.get(f"RAFTKV_{name.upper()}")
        if v is not None:
            raw[name] = v.split(";") if name == "members" else v
    for k, v in (overrides or {}).items():
        if v is not None and v != ():
            raw[k] = v
    unknown = set(raw) - set(_FIELD_TYPES)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    for req in ("id", "data_dir", "members"):
        if req not in raw:
            flag = "--" + req.replace("_", "-")
            raise ConfigError(f"missing setting {req!r} (config file key, RAFTKV_{req.upper()}, or {flag})")
    members = []
    for m in raw.pop("members"):
        if isinstance(m, Member):
            members.append(m)
        elif isinstance(m, str):
            members.append(parse_member(m))
        elif isinstance(m, Mapping):
            try:
                learner = bool(m.get("learner", False))
                members.append(Member(int(m["id"]), str(m["peer_addr"]), str(m["client_addr"]), learner))
            except (KeyError, TypeError, ValueError):
                raise ConfigError(f"bad member entry {dict(m)}: needs id, peer_addr, client_addr") from None
        else:
            raise ConfigError(f"bad member entry {m!r}")
    values = {k: _coerce(k, v) for k, v in raw.items()}
    return Settings(members=tuple(members), **values).validate()


def with_overrides(s: Settings, **changes: Any) -> Settings:
    return replace(s, **changes).validate()


def member_toml(members: tuple[Member, ...] | list[Member]) -> str:
    """The ``[[members]]`` tables for a config file (used by the local cluster launcher)."""
    out = []
    for m in members:
        out.append(f'[[members]]\nid = {m.id}\npeer_addr = "{m.peer_addr}"\nclient_addr = "{m.client_addr}"\n')
    return "\n".join(out)
