"""Helpers shared by the transport tests: an event loop per test with a deadline and a check for stray tasks,
waiting on conditions, free ports, messages, snapshot files."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from raftkv.raft.types import ConfState, Entry, Message, MsgType
from raftkv.storage.snapshots import SnapshotHeader, SnapshotInfo, write_snapshot


def free_port() -> int:
    """A port that was free a moment ago (bind to 0, read it, close). Racy across processes, good enough here."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run(test: Callable[[], Coroutine[Any, Any, None]], timeout_s: float = 15.0) -> None:
    """Run ``test`` on a fresh event loop with a deadline; afterwards no task may be left behind."""

    async def main() -> None:
        async with asyncio.timeout(timeout_s):
            await test()
        await asyncio.sleep(0)  # let cancelled callbacks settle
        leftover = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        assert not leftover, f"tasks left running: {leftover}"

    asyncio.run(main())


async def wait_until(pred: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    """Poll ``pred`` until it holds; fail with ``what`` if it still does not after ``timeout_s`` (a bound on the
    wait, never a speed assertion)."""
    try:
        async with asyncio.timeout(timeout_s):
            while not pred():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not within {timeout_s:g} s: {what}") from None


def app(frm: int, to: int, index: int, n_entries: int = 3) -> Message:
    """An append carrying ``n_entries`` entries of 100 bytes; ``index`` identifies it."""
    ents = tuple(Entry(term=2, index=index + k + 1, data=bytes([k % 256]) * 100) for k in range(n_entries))
    return Message(MsgType.APP, to=to, frm=frm, term=2, log_term=2, index=index, entries=ents, commit=index)


def heartbeat(frm: int, to: int, seq: int) -> Message:
    return Message(MsgType.HEARTBEAT, to=to, frm=frm, term=2, index=seq)


def make_snapshot(d: Path, total_bytes: int, index: int = 100, value_bytes: int = 1000) -> SnapshotInfo:
    """A valid snapshot file of about ``total_bytes`` in ``d``."""

    def items() -> Iterator[tuple[bytes, bytes, bytes]]:
        value = os.urandom(value_bytes)
        for i in range(total_bytes // (value_bytes + 20)):
            yield (b"kv", b"key-%09d" % i, value)

    return write_snapshot(d, SnapshotHeader(index, 3, ConfState((1, 2)), "test-cluster"), items())
