"""Runs the one ``KeyIndex`` conformance test against both implementations (``DictKeyIndex``, ``LmdbKeyIndex``):
random adds, removes and lookups against a model that is a dict of sets, every answer compared."""

from __future__ import annotations

import struct
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from raftkv.errors import DataCorruption
from raftkv.kv import DictKeyIndex, KeyIndex, LmdbKeyIndex
from raftkv.storage import LmdbLogStore

POS = struct.Struct(">QI")
SKEYS = st.sampled_from([b"a", b"b", b"b\x00", b"c" * 30, b"\xff"])
POSITIONS = st.builds(POS.pack, st.integers(0, 6), st.integers(0, 2)) | st.just(POS.pack(2**64 - 1, 2**32 - 1))


class Indexes:
    """Both implementations side by side, the LMDB one in one write transaction of its own store."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.store = LmdbLogStore(Path(self.tmp.name), sync=False)
        self.db = self.store.open_db(b"key_history", dupsort=True, dupfixed=True)
        self.txn = self.store.env.begin(write=True)
        self.all: list[KeyIndex] = [DictKeyIndex(), LmdbKeyIndex(self.txn, self.db)]

    def close(self) -> None:
        self.txn.abort()
        self.store.close()
        self.tmp.cleanup()


class KeyIndexMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ix = Indexes()
        self.model: dict[bytes, set[bytes]] = {}

    def teardown(self) -> None:
        self.ix.close()

    @rule(skey=SKEYS, pos=POSITIONS)
    def add(self, skey: bytes, pos: bytes) -> None:
        for index in self.ix.all:
            index.add(skey, pos)
        self.model.setdefault(skey, set()).add(pos)

    @rule(skey=SKEYS, pos=POSITIONS)
    def remove(self, skey: bytes, pos: bytes) -> None:
        for index in self.ix.all:
            index.remove(skey, pos)
        held = self.model.get(skey, set())
        held.discard(pos)
        if not held:
            self.model.pop(skey, None)

    @rule(skey=SKEYS, pos=POSITIONS)
    def before_and_after(self, skey: bytes, pos: bytes) -> None:
        held = self.model.get(skey, set())
        below = max((p for p in held if p < pos), default=None)
        above = min((p for p in held if p > pos), default=None)
        for index in self.ix.all:
            assert index.before(skey, pos) == below
            assert index.after(skey, pos) == above

    @rule(start=SKEYS | st.just(b""))
    def keys_from(self, start: bytes) -> None:
        want = sorted(k for k in self.model if k >= start)
        for index in self.ix.all:
            assert list(index.keys_from(start)) == want

    @rule()
    def clear(self) -> None:
        for index in self.ix.all:
            index.clear()
        self.model.clear()

    @invariant()
    def items_and_count(self) -> None:
        want = sorted((k, p) for k, ps in self.model.items() for p in ps)
        for index in self.ix.all:
            assert list(index.items()) == want
            assert index.count() == len(want)


TestKeyIndexConformance = KeyIndexMachine.TestCase
TestKeyIndexConformance.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


# -- the LMDB index's checksum: its edge and its failure ------------------------------------------------------------

_TABLE = [0] * 256
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0xEDB88320 if _c & 1 else _c >> 1
    _TABLE[_i] = _c
_BY_TOP = {t >> 24: i for i, t in enumerate(_TABLE)}


def skey_whose_checksum_is_all_ones(pos: bytes) -> bytes:
    """A storage key k with ``crc32(pos, crc32(k)) == 0xffffffff`` (the CRC-32 of k then pos): b"k" and 4 forged
    bytes. CRC-32 runs backwards from the final register over ``pos``, then 4 bytes steer the register there."""
    reg = 0  # the register whose complement is 0xffffffff
    for b in reversed(pos):
        i = _BY_TOP[reg >> 24]
        reg = (((reg ^ _TABLE[i]) << 8) & 0xFFFFFFFF) | ((i ^ b) & 0xFF)
    want, idx = reg, []
    for _ in range(4):
        i = _BY_TOP[reg >> 24]
        idx.append(i)
        reg = ((reg ^ _TABLE[i]) << 8) & 0xFFFFFFFF
    reg = zlib.crc32(b"k") ^ 0xFFFFFFFF
    forged = bytearray()
    for i in reversed(idx):
        b = (reg ^ i) & 0xFF
        forged.append(b)
        reg = _TABLE[(reg ^ b) & 0xFF] ^ (reg >> 8)
    assert reg == want
    return b"k" + bytes(forged)


def test_after_skips_its_own_position_whose_checksum_is_all_ones() -> None:
    """``after`` seeks past ``pos`` with an all-ones checksum; the one value that equals that probe is ``pos``
    itself, which it must step over."""
    pos = POS.pack(5, 0)
    skey = skey_whose_checksum_is_all_ones(pos)
    assert zlib.crc32(pos, zlib.crc32(skey)) == 0xFFFFFFFF
    ix = Indexes()
    try:
        for index in ix.all:
            index.add(skey, pos)
            assert index.after(skey, pos) is None and index.after(skey, POS.pack(4, 9)) == pos
            index.add(skey, POS.pack(6, 0))
            assert index.after(skey, pos) == POS.pack(6, 0) and index.before(skey, POS.pack(6, 0)) == pos
    finally:
        ix.close()


def test_a_damaged_lmdb_index_value_is_corruption() -> None:
    ix = Indexes()
    try:
        lm = ix.all[1]
        lm.add(b"k", POS.pack(3, 0))
        ix.txn.put(b"k", POS.pack(4, 0) + b"\x00\x00\x00\x00", dupdata=True, db=ix.db)  # a wrong checksum
        assert lm.before(b"k", POS.pack(4, 0)) == POS.pack(3, 0)
        with pytest.raises(DataCorruption, match="key_history"):
            lm.after(b"k", POS.pack(3, 0))
        with pytest.raises(DataCorruption):
            list(lm.items())
    finally:
        ix.close()
