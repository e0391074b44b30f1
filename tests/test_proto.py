"""The committed generated code in raftkv/proto/ must be exactly what the pinned grpcio-tools makes of proto/."""

from __future__ import annotations

from pathlib import Path

from raftkv.proto._generate import ROOT, SOURCES, generate, generated_files


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    generate(tmp_path)
    fresh = {rel: f.read_bytes() for rel, f in generated_files(tmp_path).items()}
    committed = {rel: f.read_bytes() for rel, f in generated_files(ROOT).items()}
    assert fresh.keys() == committed.keys(), "run scripts/gen-proto and commit raftkv/proto/"
    stale = sorted(rel for rel in fresh if fresh[rel] != committed[rel])
    assert not stale, f"{stale} out of date with proto/: run scripts/gen-proto and commit"


def test_every_proto_file_is_generated() -> None:
    """A .proto added under proto/ but not to SOURCES would silently never be generated (or checked)."""
    on_disk = sorted(p.relative_to(ROOT / "proto").as_posix() for p in (ROOT / "proto").rglob("*.proto"))
    assert on_disk == sorted(SOURCES)
