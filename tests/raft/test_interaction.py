"""Runs every interaction script in ``tests/raft/testdata`` (format: ``interaction.py``) against its golden output.

A mismatch fails with a unified diff of expected against actual. To accept new output (after a deliberate change
of the core, or to fill in a new script), rewrite the files and review the diff::

    RAFTKV_REWRITE=1 scripts/test tests/raft/test_interaction.py
    git diff tests/raft/testdata
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from .interaction import ScriptError, parse_script, run_script

TESTDATA = Path(__file__).parent / "testdata"
SCRIPTS = sorted(TESTDATA.glob("*.txt"))
REWRITE = os.environ.get("RAFTKV_REWRITE", "") not in ("", "0")


def check_script(path: Path, rewrite: bool) -> str | None:
    """Run the script; return the diff of its golden output against the actual one (None: they agree). With
    ``rewrite`` the file takes the actual output instead, and None is returned."""
    expected, actual = run_script(path)
    if actual == expected:
        return None
    if rewrite:
        path.write_text(actual)
        return None
    return "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            fromfile=f"{path.name} (expected)",
            tofile=f"{path.name} (actual)",
        )
    )


def test_there_are_scripts() -> None:
    assert len(SCRIPTS) >= 10, f"expected the interaction scripts in {TESTDATA}"


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script(path: Path) -> None:
    diff = check_script(path, REWRITE)
    if diff is not None:
        pytest.fail(f"{path.name}: output differs (RAFTKV_REWRITE=1 accepts it):\n{diff}", pytrace=False)


def test_format_round_trips() -> None:
    """Parsing and rendering a script with its own expected output gives the same text back."""
    for path in SCRIPTS:
        text = path.read_text()
        assert parse_script(text, path.name).render() == text, path.name


SMALL = """\
# A comment.
add-nodes 1 voters=(1)
----
{add}

campaign 1
----
ok

stabilize
----
{stabilize}
"""


def test_a_wrong_golden_output_fails_with_a_diff_and_rewrite_fixes_it(tmp_path: Path) -> None:
    path = tmp_path / "small.txt"
    path.write_text(SMALL.format(add="1: Voters:[1] Learners:[] election timeout 10", stabilize="ok"))
    diff = check_script(path, rewrite=False)
    assert diff is not None
    assert "-ok" in diff and "+> 1 handling Ready" in diff and "+  Lead:1 State:leader" in diff
    assert check_script(path, rewrite=True) is None
    text = path.read_text()
    assert text.startswith("# A comment.\nadd-nodes 1 voters=(1)\n----\n")
    assert "  Lead:1 State:leader\n" in text
    assert check_script(path, rewrite=False) is None


def test_an_empty_output_is_filled_in_by_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "new.txt"
    path.write_text("add-nodes 2 voters=(1,2)\n----\n\nraft-state\n----\n")
    assert check_script(path, rewrite=True) is None
    assert path.read_text().endswith(
        "raft-state\n----\n1: follower Term:0 Lead:0 Last:0 Commit:0 Applied:0\n"
        "2: follower Term:0 Lead:0 Last:0 Commit:0 Applied:0\n"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("campaign 1\nok\n", "small.txt:1: expected '----' after the command 'campaign 1'"),
        ("add-nodes 1 voters=(1)\n----\n\nfrobnicate 1\n----\n", "small.txt:4: unknown command 'frobnicate'"),
        ("campaign 7\n----\n", "small.txt:1: no node 7"),
        ("add-nodes 1 bogus=1\n----\n", "small.txt:1: add-nodes: unknown option 'bogus'"),
    ],
)
def test_script_errors_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "small.txt"
    path.write_text(text)
    with pytest.raises(ScriptError) as e:
        run_script(path)
    assert str(e.value) == message
