"""Generate raftkv/proto/v1/*_pb2*.py(i) from proto/ with grpc_tools (used by scripts/gen-proto and the tests)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "raftkv" / "proto" / "v1"
SOURCES = ["raftkv/proto/v1/kv.proto", "raftkv/proto/v1/raft.proto"]


def generate(out_root: Path) -> list[Path]:
    """Run protoc into ``out_root`` (which receives raftkv/proto/v1/...). Returns the generated files."""
    from grpc_tools import protoc  # type: ignore[import-untyped]  # only a dev dependency

    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(str(PROTO_DIR / s) for s in SOURCES),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))
    return sorted((out_root / "raftkv" / "proto" / "v1").glob("*_pb2*"))


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for f in generate(Path(tmp)):
            (OUT_DIR / f.name).write_bytes(f.read_bytes())
            print(f"wrote {(OUT_DIR / f.name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
