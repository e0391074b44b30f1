"""Stable one-line text for messages, entries and Ready batches: debug logs and golden interaction tests."""

from __future__ import annotations

from collections.abc import Callable

from .types import Entry, EntryType, HardState, Message, MsgType, Ready, Snapshot

EntryFormatter = Callable[[bytes], str]


def _default_fmt(data: bytes) -> str:
    return repr(data)[1:]


def describe_entry(e: Entry, fmt: EntryFormatter = _default_fmt) -> str:
    kind = "Normal" if e.type == EntryType.NORMAL else "ConfChange"
    s = f"{e.term}/{e.index} {kind}"
    if e.data:
        s += " " + fmt(e.data)
    return s


def describe_entries(ents: tuple[Entry, ...] | list[Entry], fmt: EntryFormatter = _default_fmt) -> str:
    return "[" + ", ".join(describe_entry(e, fmt) for e in ents) + "]"


def describe_snapshot(s: Snapshot) -> str:
    m = s.metadata
    cs = m.conf_state
    return f"Index:{m.index} Term:{m.term} ConfState:Voters:{list(cs.voters)} Learners:{list(cs.learners)}"


def describe_message(m: Message, fmt: EntryFormatter = _default_fmt) -> str:
    t = MsgType(m.type)
    s = f"{m.frm}->{m.to} {t.name} Term:{m.term}"
    if t in (MsgType.APP, MsgType.VOTE, MsgType.PRE_VOTE) or (t == MsgType.APP_RESP and m.reject):
        s += f" Log:{m.log_term}/{m.index}"
    elif m.index:
        s += f" Index:{m.index}"
    if m.commit:
        s += f" Commit:{m.commit}"
    if m.confirmed_round:
        s += f" Confirmed:{m.confirmed_round}@{m.confirmed_commit}"
    if m.reject:
        s += f" Rejected (Hint: {m.reject_hint})"
    if m.entries:
        s += " Entries:" + describe_entries(m.entries, fmt)
    if m.context:
        s += f" Context:{fmt(m.context)}"
    if m.snapshot is not None:
        s += " Snapshot: " + describe_snapshot(m.snapshot)
    return s


def describe_hard_state(hs: HardState) -> str:
    return f"Term:{hs.term} Vote:{hs.vote} Commit:{hs.commit}"


def describe_ready(rd: Ready, fmt: EntryFormatter = _default_fmt) -> str:
    lines = []
    if rd.soft_state is not None:
        lines.append(f"Lead:{rd.soft_state.lead} State:{rd.soft_state.role}")
    if rd.hard_state is not None:
        lines.append("HardState " + describe_hard_state(rd.hard_state))
    if rd.snapshot is not None:
        lines.append("Snapshot " + describe_snapshot(rd.snapshot))
    if rd.entries:
        lines.append("Entries:")
        lines.extend("  " + describe_entry(e, fmt) for e in rd.entries)
    if rd.committed_entries:
        lines.append("CommittedEntries:")
        lines.extend("  " + describe_entry(e, fmt) for e in rd.committed_entries)
    if rd.messages:
        lines.append("Messages:")
        lines.extend("  " + describe_message(m, fmt) for m in rd.messages)
    if rd.persisted_messages:
        lines.append("Messages (after persist):")
        lines.extend("  " + describe_message(m, fmt) for m in rd.persisted_messages)
    if rd.read_states:
        lines.append("ReadStates:")
        lines.extend(f"  Index:{r.index} Ctx:{fmt(r.ctx)}" for r in rd.read_states)
    if rd.must_sync:
        lines.append("MustSync")
    return "\n".join(lines) if lines else "<empty Ready>"
