"""What each module of raftkv exports is what its ``__all__`` says.

The rule, for every public module (``pkgutil`` walks the package; a module whose name has a part starting with ``_``,
such as ``raftkv.__main__``, is not public):

* the packages in ``REQUIRED`` define ``__all__``;
* a module that defines ``__all__``: it is a list or tuple of strings without duplicates; every name in it resolves
  (an attribute, or for a package one of its submodules); ``from m import *`` binds exactly those names;
* a public class or function defined in such a module (not imported into it) is in its ``__all__``, unless
  ``NOT_EXPORTED`` below names it with the reason: leaving one out is a reviewed decision, as a module's place in
  ``tests/test_layers.py`` is. Constants, type aliases and type variables are not checked (a module may keep
  public-looking constants of its own without exporting them);
* ``raftkv.client`` re-exports exactly what its modules export, as the same objects: ``from raftkv.client import X``
  is all a user needs, whichever module ``X`` lives in.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
from types import ModuleType

import pytest

import raftkv

REQUIRED = ("raftkv", "raftkv.client", "raftkv.raft", "raftkv.transport", "raftkv.storage", "raftkv.kv")

# module -> {public class or function defined there but left out of its __all__: why}
NOT_EXPORTED: dict[str, dict[str, str]] = {
    "raftkv.chaos.runner": {"write_timeline": "the run's own plot step (run() calls it); its output is the API"},
    "raftkv.cli": {
        "Globals": "the click context object of the commands",
        "RaftKVGroup": "the click group class of `raftkv` (error handling, help layout)",
    },
    "raftkv.client.leases": {"KeepAliver": "a client's keep-alive stream, inside Client (its leases are the API)"},
    "raftkv.kv.commands": {"decode_value": "a stored record's decoding, for raftkv.kv.fsm only"},
    "raftkv.kv.fsm": {
        "KeyMappingBackend": "the key table's long-key mapping, inside the state machine",
        "conf_state_of": "the member table as a ConfState, inside the state machine",
        "seal": "a record's checksum framing, inside the state machine",
        "unseal": "its check; other modules name it only in comments",
        "storage_key": "the LMDB key of a user key, inside the state machine",
    },
}


def _public_modules() -> list[str]:
    names = ["raftkv"]
    for info in pkgutil.walk_packages(raftkv.__path__, "raftkv."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]):
            continue  # raftkv.__main__ (it runs the CLI), raftkv.proto._generate
        names.append(info.name)
    return sorted(names)


MODULES = _public_modules()


def _import(name: str) -> ModuleType:
    return importlib.import_module(name)


def _resolves(mod: ModuleType, name: str) -> bool:
    if hasattr(mod, name):
        return True
    return hasattr(mod, "__path__") and importlib.util.find_spec(f"{mod.__name__}.{name}") is not None


def _defined_here(mod: ModuleType) -> set[str]:
    """The public classes and functions whose home is ``mod`` (not imported into it)."""
    return {
        k for k, v in vars(mod).items()
        if not k.startswith("_") and (inspect.isclass(v) or inspect.isfunction(v))
        and getattr(v, "__module__", None) == mod.__name__
    }


def test_the_walk_finds_the_modules() -> None:
    for name in (*REQUIRED, "raftkv.client.aio", "raftkv.servicer", "raftkv.pbmap", "raftkv.cli_txn"):
        assert name in MODULES
    assert "raftkv.__main__" not in MODULES


@pytest.mark.parametrize("name", REQUIRED)
def test_the_main_packages_define_all(name: str) -> None:
    assert hasattr(_import(name), "__all__"), f"{name} defines no __all__"


@pytest.mark.parametrize("name", MODULES)
def test_all_is_what_the_module_exports(name: str) -> None:
    mod = _import(name)
    exported = getattr(mod, "__all__", None)
    if exported is None:
        return
    assert isinstance(exported, list | tuple) and all(isinstance(n, str) for n in exported), (
        f"{name}.__all__ must be a list of strings"
    )
    dups = sorted({n for n in exported if exported.count(n) > 1})
    assert not dups, f"{name}.__all__ lists {dups} more than once"
    missing = [n for n in exported if not _resolves(mod, n)]
    assert not missing, f"{name}.__all__ lists {missing}, which {name} does not have"
    ns: dict[str, object] = {}
    exec(f"from {name} import *", ns)
    ns.pop("__builtins__", None)
    assert set(ns) == set(exported), f"`from {name} import *` binds {sorted(set(ns) ^ set(exported))} unexpectedly"
    omitted = NOT_EXPORTED.get(name, {})
    unlisted = sorted(_defined_here(mod) - set(exported) - set(omitted))
    assert not unlisted, (
        f"{name} defines {unlisted} but its __all__ leaves them out: export them, make them private (_name), or "
        "say why in NOT_EXPORTED in tests/test_exports.py"
    )


@pytest.mark.parametrize("name", sorted(NOT_EXPORTED))
def test_the_deliberate_omissions_are_current(name: str) -> None:
    mod = _import(name)
    assert hasattr(mod, "__all__"), f"{name} has no __all__: drop it from NOT_EXPORTED"
    for n in NOT_EXPORTED[name]:
        assert n in _defined_here(mod), f"NOT_EXPORTED names {name}.{n}, which {name} no longer defines"
        assert n not in mod.__all__, f"{name}.{n} is exported now: drop it from NOT_EXPORTED"


def test_the_client_package_reexports_its_modules() -> None:
    client = _import("raftkv.client")
    parts = [m for m in MODULES if m.startswith("raftkv.client.")]
    assert parts, "raftkv.client has no modules"
    union: dict[str, str] = {}
    for part in parts:
        mod = _import(part)
        assert hasattr(mod, "__all__"), f"{part} defines no __all__"
        for n in mod.__all__:
            assert n not in union, f"{n} is exported by both {union[n]} and {part}"
            union[n] = part
            assert getattr(client, n) is getattr(mod, n), f"raftkv.client.{n} is not {part}.{n}"
    assert set(client.__all__) == set(union), (
        f"raftkv.client.__all__ and its modules' differ: {sorted(set(client.__all__) ^ set(union))}"
    )
