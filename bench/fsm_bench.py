"""Micro-benchmark of the KV state machine: µs per command to apply one log entry holding a batch of 1000 puts with
100-byte values, through ``LmdbLogStore.write(apply=..., applied=...)`` with ``sync=False``.

    python bench/fsm_bench.py

Prints figures only (no assertions). Rows: new keys vs overwriting existing ones, with and without a client session
(a session costs a read and two or three writes of the session tables per command), plus the encode/decode of the
batch on its own. Best of several repeats, so it reports the machine's floor.
"""

from __future__ import annotations

import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

try:
    import raftkv  # noqa: F401
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raftkv.kv import KVStateMachine, Put, decode_batch, encode_batch
from raftkv.raft.types import Entry
from raftkv.storage import LmdbLogStore

N_COMMANDS = 1000
VALUE_BYTES = 100
REPEAT = 7


def best_us_per_command(run: Callable[[int], None]) -> float:
    """``run(round)`` REPEAT times; the fastest, per command."""
    best = float("inf")
    for r in range(REPEAT):
        t0 = time.perf_counter()
        run(r)
        best = min(best, time.perf_counter() - t0)
    return best / N_COMMANDS * 1e6


def apply_row(sessions: bool, overwrite: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = LmdbLogStore(tmp, sync=False, map_size=256 << 20)
        fsm = KVStateMachine(store)
        index = 0

        def batch(round_: int, seq: int) -> bytes:
            base = 0 if overwrite else round_ * N_COMMANDS
            client = (lambda i: base + i + 1) if sessions and not overwrite else (lambda i: i + 1 if sessions else 0)
            return encode_batch(
                1,
                round_ * 1_000_000,
                [Put(i, client(i), seq, b"key-%08d" % (base + i), b"v" * VALUE_BYTES) for i in range(N_COMMANDS)],
            )

        def apply(round_: int, data: bytes) -> None:
            nonlocal index
            index += 1
            entries = [Entry(1, index, 0, data)]
            store.write(apply=lambda txn: fsm.apply(txn, entries), applied=index)

        apply(0, batch(REPEAT, 1))  # warm up (and, for overwrite, create the keys and sessions)
        datas = [batch(r, r + 2) for r in range(REPEAT)]  # every seq new: each put is applied
        figure = best_us_per_command(lambda r: apply(r, datas[r]))
        store.close()
        return figure


def main() -> None:
    cmds = [Put(i, i + 1, 1, b"key-%08d" % i, b"v" * VALUE_BYTES) for i in range(N_COMMANDS)]
    data = encode_batch(1, 0, cmds)
    assert decode_batch(data).commands == cmds
    rows = [
        ("encode_batch (1000 puts)", best_us_per_command(lambda _: encode_batch(1, 0, cmds) and None)),
        ("decode_batch (1000 puts)", best_us_per_command(lambda _: decode_batch(data) and None)),
        ("apply, new keys, no session", apply_row(sessions=False, overwrite=False)),
        ("apply, new keys, with session", apply_row(sessions=True, overwrite=False)),
        ("apply, overwrite, no session", apply_row(sessions=False, overwrite=True)),
        ("apply, overwrite, with session", apply_row(sessions=True, overwrite=True)),
    ]
    print(f"raftkv KV state machine, {N_COMMANDS} puts x {VALUE_BYTES} B per entry, LmdbLogStore(sync=False)")
    print(f"python {platform.python_version()} on {platform.machine()}, best of {REPEAT}")
    for name, us in rows:
        print(f"  {name:<34} {us:7.2f} µs/command   {1e6 / us:>10,.0f} commands/s")


if __name__ == "__main__":
    main()
