"""The layering of ARCHITECTURE.md, enforced: walk every module's imports and check each arrow.

    cli ──► cli_txn ──► client       (thin: may not import node, raft, storage)
     └──► server ──► servicer ──► pbmap ──► kv
            └───────────┴──► node ──► writer · storage · transport · kv · codec · clock
                       └──► replica ──► ready · kv · lessor   (no asyncio, clock, threads, randomness, I/O)
                                 └──────► raft   (stdlib only: no asyncio, time, random, grpc, lmdb, msgpack)

A new top-level module must be added to ALLOWED, which makes its place in the layering a reviewed decision.

The import statements are one half; what a fresh interpreter really loads is the other (a package's ``__init__``
runs before any of its submodules, so ``from .kv.vclock import ...`` loads the whole state machine): the client, and
the CLI until it runs a command, are imported in a subprocess and ``sys.modules`` is checked.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "raftkv"

# For each first-level part of the package: the raftkv parts it may import.
ALLOWED: dict[str, set[str]] = {
    "raft": {"raft"},
    "codec": {"raft"},
    "errors": set(),
    "ready": {"raft"},
    "storage": {"raft", "codec", "storage"},
    "kv": {"kv", "codec", "errors", "raft"},
    "proto": {"proto"},
    "transport": {"transport", "raft", "codec", "proto", "errors"},
    "settings": {"errors", "retention"},
    "retention": {"errors"},
    "replica": {"raft", "ready", "kv", "errors", "settings", "lessor"},
    "lessor": set(),
    "writer": {"raft", "storage", "kv", "settings"},
    "node": {"raft", "replica", "writer", "storage", "transport", "kv", "codec", "errors", "settings", "metrics",
             "clock", "watchfeed"},
    "clock": set(),
    "watch": {"kv"},
    "watchfeed": {"watch", "kv", "errors"},
    "metrics": set(),
    "pbmap": {"kv", "errors", "proto"},
    "servicer": {"node", "pbmap", "raft", "kv", "errors", "proto", "settings", "watch"},
    "etcdapi": {"servicer", "node", "pbmap", "raft", "kv", "errors", "proto", "watch", "storage"},
    "server": {"server", "servicer", "etcdapi", "retention", "pbmap", "node", "raft", "storage", "transport", "kv",
               "codec", "errors", "proto", "settings", "metrics"},
    "client": {"client", "proto", "errors"},
    "localcluster": {"client", "errors", "settings"},
    "chaos": {"chaos", "client", "errors", "localcluster", "kv", "proto"},
    "cli": {"cli", "cli_txn", "client", "server", "errors", "settings", "localcluster", "chaos", "bench_cmd", "backup",
            "check"},
    "cli_txn": {"client", "errors"},
    "bench_cmd": set(),
    "backup": {"client", "errors", "kv", "raft", "storage"},
    "check": {"errors", "kv", "storage"},
    "__main__": {"cli"},
    "__init__": set(),
}

RAFT_FORBIDDEN_STDLIB = {"asyncio", "time", "random", "socket", "threading", "os", "io", "datetime", "uuid"}
THIRD_PARTY_OWNERS = {"msgpack": {"codec"}, "lmdb": {"storage", "kv"},
                      "grpc": {"transport", "server", "servicer", "etcdapi", "client", "proto", "chaos"}}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        out.append((".".join(("raftkv", *rel.parts)), path))
    return out


def _imports(modname: str, path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    pkg = modname.split(".")[:-1] if path.name != "__init__.py" else modname.split(".")
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
                names.append(mod)
                if node.module is None:
                    names.extend(f"{mod}.{a.name}" for a in node.names)
            elif node.module:
                names.append(node.module)
    return names


def _part(modname: str) -> str:
    parts = modname.split(".")
    if len(parts) == 1 or (parts[1].startswith("__") and parts[1] != "__main__"):
        return "__init__"  # the package root itself, or one of its dunder attributes (``from . import __version__``)
    return parts[1]


def test_every_module_has_a_place_in_the_layering() -> None:
    unknown = {_part(m) for m, _ in _modules()} - set(ALLOWED)
    assert not unknown, f"add these to ALLOWED in tests/test_layers.py: {sorted(unknown)}"


def test_imports_follow_the_layers() -> None:
    bad = []
    for mod, path in _modules():
        src = _part(mod)
        for imp in _imports(mod, path):
            top = imp.split(".")[0]
            if top == "raftkv":
                dst = _part(imp) if imp != "raftkv" else "__init__"
                if dst != src and dst != "__init__" and dst not in ALLOWED[src]:
                    bad.append(f"{mod} imports {imp} ({src} -> {dst})")
            elif top in THIRD_PARTY_OWNERS and src not in THIRD_PARTY_OWNERS[top]:
                bad.append(f"{mod} imports {top}, which only {sorted(THIRD_PARTY_OWNERS[top])} may use")
    assert not bad, "\n".join(bad)


def test_raft_core_uses_no_io_clock_or_global_randomness() -> None:
    bad = []
    for mod, path in _modules():
        if _part(mod) != "raft":
            continue
        for imp in _imports(mod, path):
            top = imp.split(".")[0]
            if top in RAFT_FORBIDDEN_STDLIB:
                bad.append(f"{mod} imports {imp}")
            elif top != "raftkv" and top not in sys.stdlib_module_names:
                bad.append(f"{mod} imports third-party {imp}")
    assert not bad, "\n".join(bad)


# The replica is as pure as the core, but may use the state machine's types (which load msgpack and lmdb modules).
REPLICA_FORBIDDEN = {"asyncio", "time", "random", "socket", "threading", "concurrent", "os", "io", "datetime",
                     "uuid", "grpc", "lmdb", "subprocess", "selectors", "signal"}


@pytest.mark.parametrize("name", ["replica", "lessor"])
def test_the_replica_uses_no_io_clock_threads_or_randomness(name: str) -> None:
    """``raftkv.replica`` (and the lease clock it keeps, ``raftkv.lessor``) is driven by events with the time passed
    in: it imports nothing that waits, reads a clock, draws random numbers or touches a socket or a file."""
    bad = [f"raftkv.{name} imports {imp}" for imp in _imports(f"raftkv.{name}", ROOT / f"{name}.py")
           if imp.split(".")[0] in REPLICA_FORBIDDEN]
    assert not bad, "\n".join(bad)


def test_nothing_outside_the_core_reads_its_internals() -> None:
    """The driver, servicer and tools see the core through ``RawNode``'s public face (its properties, ``status()``,
    ``read_freshness()`` ...), never through ``RawNode.raft``: the core's insides can change without breaking them."""
    bad = []
    for mod, path in _modules():
        if _part(mod) == "raft":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "raft":
                bad.append(f"{mod}:{node.lineno} reads .raft")
    assert not bad, "\n".join(bad)


# What the client side must not load: the daemon (state machine, storage, Raft core, node, server, their libraries).
SERVER_SIDE = (
    "lmdb", "msgpack", "uvloop", "raftkv.kv", "raftkv.raft", "raftkv.storage", "raftkv.codec", "raftkv.ready",
    "raftkv.node", "raftkv.server", "raftkv.servicer", "raftkv.pbmap", "raftkv.transport", "raftkv.replica",
    "raftkv.writer",
)
# What the CLI loads only for the commands that use it (each costs every command start-up time otherwise).
CLI_LAZY = (
    "rich", "raftkv.settings", "raftkv.localcluster", "raftkv.backup", "raftkv.chaos", "importlib.metadata", "bench",
    "argparse", "tomllib",
)


def loaded_modules(code: str) -> set[str]:
    """The modules in ``sys.modules`` after running ``code`` in a fresh interpreter (from the checkout)."""
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"],
        capture_output=True, text=True, cwd=ROOT.parent, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def _matching(loaded: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in loaded if any(m == p or m.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("raftkv.client", (*SERVER_SIDE, "rich", "raftkv.settings", "raftkv.localcluster", "click")),
        ("raftkv.localcluster", (*SERVER_SIDE, "rich", "raftkv.settings")),
        ("raftkv.cli", (*SERVER_SIDE, *CLI_LAZY)),
        ("raftkv.cli_txn", (*SERVER_SIDE, *CLI_LAZY)),
    ],
)
def test_the_client_side_loads_no_server_side_code(module: str, forbidden: tuple[str, ...]) -> None:
    loaded = loaded_modules(f"import {module}")
    assert module in loaded
    bad = _matching(loaded, forbidden)
    assert not bad, f"importing {module} loads {bad}"
