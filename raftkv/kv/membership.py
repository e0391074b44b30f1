"""Membership changes as log entries: the CONF_CHANGE entry format and the replicated member table.

A CONF_CHANGE entry carries one single-server change (``raftkv.raft.ConfChange``: add a voter, add a learner or
demote a voter, remove a node) plus what the core does not need but every node does: the member's addresses, and
who proposed it (so the proposer can answer its caller). The encoding is a small versioned JSON object: membership
changes are rare, and readable log entries are worth more here than a few bytes.

Every initial member writes the same bootstrap entries (one ADD_VOTER per initial member, term 1, committed), so a
node that joins later learns the whole membership, addresses included, by replaying the log (or from a snapshot,
which carries the member table).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..raft import ConfChange, ConfChangeType, Entry, EntryType

FORMAT = 1


@dataclass(frozen=True, slots=True)
class MemberInfo:
    id: int
    peer_addr: str
    client_addr: str
    learner: bool = False


@dataclass(frozen=True, slots=True)
class MemberChange:
    """A decoded CONF_CHANGE entry."""

    type: ConfChangeType
    member: MemberInfo
    proposer: int = 0
    request_id: int = 0

    @property
    def conf_change(self) -> ConfChange:
        return ConfChange(self.type, self.member.id)


def encode_change(change: MemberChange) -> bytes:
    m = change.member
    doc = {
        "v": FORMAT,
        "type": int(change.type),
        "id": m.id,
        "peer_addr": m.peer_addr,
        "client_addr": m.client_addr,
        "proposer": change.proposer,
        "request_id": change.request_id,
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def decode_change(data: bytes) -> MemberChange:
    """Decode a CONF_CHANGE entry. Raises ValueError on malformed data (a deterministic, logged no-op at apply)."""
    try:
        doc: Any = json.loads(data)
        if not isinstance(doc, dict) or doc.get("v") != FORMAT:
            raise ValueError(f"unknown membership change format {doc.get('v') if isinstance(doc, dict) else doc!r}")
        t = ConfChangeType(int(doc["type"]))
        member = MemberInfo(
            int(doc["id"]), str(doc["peer_addr"]), str(doc["client_addr"]), t == ConfChangeType.ADD_LEARNER
        )
        return MemberChange(t, member, int(doc.get("proposer", 0)), int(doc.get("request_id", 0)))
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"malformed membership change entry: {e}") from None


def decode_conf_change(data: bytes) -> ConfChange:
    """For ``raftkv.raft.Config.decode_conf_change``: what the core needs to know of an entry."""
    try:
        return decode_change(data).conf_change
    except ValueError:
        return ConfChange(ConfChangeType.ADD_VOTER, 0)  # node id 0: a no-op change


def bootstrap_entries(members: list[MemberInfo]) -> list[Entry]:
    """The identical first entries of every initial member's log: one change per member, sorted by id."""
    out = []
    for i, m in enumerate(sorted(members, key=lambda m: m.id)):
        t = ConfChangeType.ADD_LEARNER if m.learner else ConfChangeType.ADD_VOTER
        out.append(Entry(1, i + 1, EntryType.CONF_CHANGE, encode_change(MemberChange(t, m))))
    return out


def encode_member(m: MemberInfo) -> bytes:
    return json.dumps(
        {"peer_addr": m.peer_addr, "client_addr": m.client_addr, "learner": m.learner}, separators=(",", ":"),
        sort_keys=True,
    ).encode()


def decode_member(node_id: int, raw: bytes) -> MemberInfo:
    doc = json.loads(raw)
    return MemberInfo(node_id, str(doc["peer_addr"]), str(doc["client_addr"]), bool(doc.get("learner", False)))


__all__ = [
    "MemberChange",
    "MemberInfo",
    "bootstrap_entries",
    "decode_change",
    "decode_conf_change",
    "decode_member",
    "encode_change",
    "encode_member",
]
