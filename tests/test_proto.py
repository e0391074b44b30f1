"""The committed generated code in raftkv/proto/ must be exactly what the pinned grpcio-tools makes of proto/."""

from __future__ import annotations

from pathlib import Path

from raftkv.proto._generate import OUT_DIR, generate


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    fresh = {f.name: f.read_bytes() for f in generate(tmp_path)}
    committed = {f.name: f.read_bytes() for f in OUT_DIR.glob("*_pb2*")}
    assert fresh.keys() == committed.keys(), "run scripts/gen-proto and commit raftkv/proto/"
    stale = sorted(name for name in fresh if fresh[name] != committed[name])
    assert not stale, f"raftkv/proto/v1/{stale} out of date with proto/: run scripts/gen-proto and commit"
