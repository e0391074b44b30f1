"""Micro-benchmark of raftkv.codec: µs per entry to encode / decode 1000 entries of 100-byte data.

    python bench/codec_bench.py

Prints figures only (no assertions): the peer wire path (one APP message carrying the batch) and the WAL path (one
record per entry, as LmdbLogStore writes them). Best of several repeats, so it reports the machine's floor.
"""

from __future__ import annotations

import platform
import sys
import timeit
from pathlib import Path

try:
    import raftkv  # noqa: F401
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raftkv import codec
from raftkv.raft.types import Entry, Message, MsgType

N_ENTRIES = 1000
DATA_BYTES = 100
REPEAT = 7


def per_entry_us(fn: object, number: int) -> float:
    best = min(timeit.repeat(fn, number=number, repeat=REPEAT))  # type: ignore[arg-type]
    return best / number / N_ENTRIES * 1e6


def main() -> None:
    entries = tuple(Entry(7, 1000 + i, 0, bytes([i % 251]) * DATA_BYTES) for i in range(N_ENTRIES))
    batch = [Message(MsgType.APP, to=2, frm=1, term=7, log_term=7, index=999, entries=entries, commit=990)]
    wire = codec.encode_messages(batch)
    assert codec.decode_messages(wire) == batch
    records = [codec.encode_entry(e) for e in entries]

    def wal_encode() -> None:
        for e in entries:
            codec.encode_entry(e)

    def wal_decode() -> None:
        for r in records:
            codec.decode_entry(r)

    rows = [
        ("wire  encode_messages (1 APP x 1000 entries)", per_entry_us(lambda: codec.encode_messages(batch), 50)),
        ("wire  decode_messages (1 APP x 1000 entries)", per_entry_us(lambda: codec.decode_messages(wire), 50)),
        ("wal   encode_entry    (1000 calls)", per_entry_us(wal_encode, 20)),
        ("wal   decode_entry    (1000 calls)", per_entry_us(wal_decode, 20)),
    ]
    print(
        f"raftkv.codec: {N_ENTRIES} entries x {DATA_BYTES} B data; Python {sys.version.split()[0]}, "
        f"{platform.machine()}, best of {REPEAT}"
    )
    print(f"wire batch size: {len(wire)} bytes ({len(wire) / N_ENTRIES:.1f} B/entry)")
    for name, us in rows:
        print(f"{name:48s} {us:7.3f} µs/entry")


if __name__ == "__main__":
    main()
