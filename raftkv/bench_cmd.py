"""``raftkv bench``: the benchmark harness (``python -m bench`` in a checkout), as a command of the CLI.

The harness lives in the repository's ``bench/`` package, which wheels do not ship: from a checkout (also an
editable install) this command runs it; elsewhere it says so in one line. Every argument after ``bench`` goes to the
harness unchanged, except ``--help`` / ``-h``: ``raftkv bench --help`` shows the harness's options in the help style
of the other commands (click's), from the harness's own argument parser.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    import argparse

_CHECKOUT = Path(__file__).resolve().parent.parent
"""The directory holding the ``raftkv`` package: in a checkout, also ``bench/``."""


def _harness() -> ModuleType | None:
    """``bench.__main__``, or None when the bench package cannot be imported."""
    if (_CHECKOUT / "bench" / "__main__.py").is_file() and str(_CHECKOUT) not in sys.path:
        sys.path.insert(0, str(_CHECKOUT))
    try:
        return importlib.import_module("bench.__main__")
    except ImportError:
        return None


def _wants_help(args: tuple[str, ...]) -> bool:
    """``-h`` / ``--help`` among the arguments (before a ``--``, as argparse reads them)."""
    for a in args:
        if a == "--":
            return False
        if a in ("-h", "--help"):
            return True
    return False


def _expand(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The action's help with argparse's ``%(default)s``-style fields filled in, as argparse shows it."""
    text = action.help or ""
    try:
        return parser._get_formatter()._expand_help(action)
    except (TypeError, ValueError, KeyError):
        return text


def click_style_help(parser: argparse.ArgumentParser, command_path: str) -> str:
    """The help of an argparse ``parser`` laid out as click lays out a command's: usage, description, one
    definition list per argument group ("Options" for argparse's default group), then the epilog verbatim (with
    argparse's ``%%`` escapes undone, as argparse itself would show them if it formatted the epilog)."""
    import argparse  # only for --help (every `raftkv` command loads this module)

    f = click.HelpFormatter()
    f.write_usage(command_path, "[OPTIONS]")
    if parser.description:
        f.write_paragraph()
        with f.indentation():
            f.write_text(parser.description)
    sections: list[tuple[str, list[tuple[str, str]]]] = []
    help_row: tuple[str, str] | None = None
    for group in parser._action_groups:
        rows: list[tuple[str, str]] = []
        for a in group._group_actions:
            if a.help == argparse.SUPPRESS:
                continue
            if isinstance(a, argparse._HelpAction):
                help_row = ("-h, --help", "Show this message and exit.")
                continue
            name = ", ".join(a.option_strings) or str(a.metavar or a.dest)
            if a.option_strings and a.nargs != 0:
                if a.metavar is not None:
                    name += f" {a.metavar}"
                elif a.choices is not None:
                    name += f" [{'|'.join(str(c) for c in a.choices)}]"
                else:
                    name += f" {a.dest.upper()}"
            rows.append((name, _expand(parser, a)))
        if rows:
            title = group.title or "options"
            sections.append(("Options" if title in ("options", "optional arguments") else title.capitalize(), rows))
    if help_row is not None:  # last, as click shows it
        if not sections:
            sections.append(("Options", []))
        sections[-1][1].append(help_row)
    for title, rows in sections:
        with f.section(title):
            f.write_dl(rows)
    if parser.epilog:
        f.write_paragraph()
        with f.indentation():
            for line in parser.epilog.replace("%%", "%").rstrip().splitlines():
                f.write(f"{'':>{f.current_indent}}{line}\n" if line.strip() else "\n")
    return f.getvalue()


@click.command(
    "bench",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def bench(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Benchmark raftkv against etcd (`raftkv bench --help` for the options; `python -m bench` in a checkout)."""
    harness = _harness()
    main = getattr(harness, "main", None)
    if not callable(main):
        click.echo(
            "error: the benchmark harness is not installed: it lives in the bench/ directory of a raftkv source "
            "checkout; run `python -m bench` there",
            err=True,
        )
        raise SystemExit(1)
    make_parser = getattr(harness, "parser", None)
    if _wants_help(args) and callable(make_parser):
        click.echo(click_style_help(make_parser(), ctx.command_path), nl=False)
        return
    raise SystemExit(main(list(args)))


__all__ = ["bench", "click_style_help"]
