"""Generate the committed ``*_pb2*.py(i)`` code in raftkv/proto/ from proto/ with grpc_tools (used by scripts/gen-proto
and the tests).

proto/ mirrors the package layout: ``proto/raftkv/proto/v1/kv.proto`` generates ``raftkv/proto/v1/kv_pb2*.py``, and
etcd's schema (``proto/raftkv/proto/etcd/api/...``, packages etcdserverpb, mvccpb, authpb) generates
``raftkv/proto/etcd/api/...``, so protoc's imports (``from raftkv.proto.etcd.api.mvccpb import kv_pb2``) resolve as
they are.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
# Relative to proto/; each generates into the same relative directory under the repository root.
SOURCES = [
    "raftkv/proto/v1/kv.proto",
    "raftkv/proto/v1/raft.proto",
    "raftkv/proto/etcd/api/mvccpb/kv.proto",
    "raftkv/proto/etcd/api/authpb/auth.proto",
    "raftkv/proto/etcd/api/etcdserverpb/rpc.proto",
]
# The directories (relative to the repository root) that hold generated code.
OUT_DIRS = sorted({str(Path(s).parent) for s in SOURCES})


def generated_files(root: Path) -> dict[str, Path]:
    """The generated files under ``root``, by path relative to it (``raftkv/proto/v1/kv_pb2.py``, ...)."""
    return {
        (Path(d) / f.name).as_posix(): f
        for d in OUT_DIRS
        for f in sorted((root / d).glob("*_pb2*"))
    }


def generate(out_root: Path) -> list[Path]:
    """Run protoc into ``out_root`` (which receives raftkv/proto/...). Returns the generated files."""
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
    return list(generated_files(out_root).values())


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        for rel, f in generated_files(Path(tmp)).items():
            dest = ROOT / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(f.read_bytes())
            print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
