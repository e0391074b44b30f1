"""``raftkv bench``: the benchmark harness (``python -m bench`` in a checkout), as a command of the CLI.

The harness lives in the repository's ``bench/`` package, which wheels do not ship: from a checkout (also an
editable install) this command runs it; elsewhere it says so in one line. Every argument after ``bench`` goes to the
harness unchanged (``raftkv bench --help`` is the harness's help).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

_CHECKOUT = Path(__file__).resolve().parent.parent
"""The directory holding the ``raftkv`` package: in a checkout, also ``bench/``."""


def _harness_main() -> object | None:
    """``bench.__main__.main``, or None when the bench package cannot be imported."""
    if (_CHECKOUT / "bench" / "__main__.py").is_file() and str(_CHECKOUT) not in sys.path:
        sys.path.insert(0, str(_CHECKOUT))
    try:
        module = importlib.import_module("bench.__main__")
    except ImportError:
        return None
    return getattr(module, "main", None)


@click.command(
    "bench",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Benchmark raftkv against etcd (`raftkv bench --help` for the options; `python -m bench` in a checkout)."""
    main = _harness_main()
    if not callable(main):
        click.echo(
            "error: the benchmark harness is not installed: it lives in the bench/ directory of a raftkv source "
            "checkout; run `python -m bench` there",
            err=True,
        )
        raise SystemExit(1)
    raise SystemExit(main(list(args)))


__all__ = ["bench"]
