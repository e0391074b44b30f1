"""The text forms ``raftkv`` reads beyond plain keys and values: the transaction language of ``raftkv txn`` (lines
such as ``if value(k) == v`` / ``then put k v`` / ``else get k``, or JSON; its help text is :data:`TXN_HELP`) and
a vector clock given as JSON (``--context``, and ``vclock(KEY) == {...}`` in a transaction)."""

from __future__ import annotations

import json
import re
from typing import Any

import click

from .client import Compare, TxnOp
from .errors import InvalidArgument

__all__ = ["TXN_HELP", "parse_txn", "parse_vclock"]


def parse_vclock(text: str) -> dict[int, int]:
    """A vector clock from JSON ``{"node": counter}`` (as `get --output json` prints it)."""
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError
        return {int(k): int(v) for k, v in raw.items()}
    except (ValueError, TypeError):
        raise click.BadParameter(f'expected a JSON object like {{"1": 3, "2": 1}}, got {text!r}') from None


TXN_HELP = """\b
Reads the transaction from stdin, as JSON or as lines:
\b
  if value(KEY) == VALUE        compare targets: value, version, mod_revision, create_revision, exists
  if version(KEY) > 3           operators: == != (all), > < (numbers); exists(KEY) == true|false
  then put KEY VALUE            run if every compare holds
  then incr KEY [DELTA]
  else get KEY                  run otherwise; ops: get, put, delete, incr
\b
JSON: {"compare": [{"key": "a", "target": "value", "op": "==", "value": "1"}],
       "success": [{"op": "put", "key": "a", "value": "2"}], "failure": [{"op": "get", "key": "a"}]}
\b
Example:
  printf 'if value(stock) == 5\\nthen put stock 4\\nthen incr sold\\nelse get stock\\n' | raftkv txn"""


def parse_txn(text: str) -> tuple[list[Compare], list[TxnOp], list[TxnOp]]:
    text = text.strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
            compares = [
                Compare(c["key"], c["target"], c.get("op", "=="), _json_operand(c))
                for c in doc.get("compare", doc.get("compares", []))
            ]
            success = [_json_op(o) for o in doc.get("success", [])]
            failure = [_json_op(o) for o in doc.get("failure", [])]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise InvalidArgument(f"bad transaction JSON: {e}") from None
        return compares, success, failure
    compares, success, failure = [], [], []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word == "if":
            compares.append(_line_compare(rest.strip(), n))
        elif word in ("then", "else"):
            (success if word == "then" else failure).append(_line_op(rest.strip(), n))
        else:
            raise InvalidArgument(f"transaction line {n}: expected 'if', 'then' or 'else', got {line!r}")
    return compares, success, failure


def _json_operand(c: dict[str, Any]) -> Any:
    t = c["target"]
    if t == "value":
        return str(c["value"])
    if t == "exists":
        return bool(c.get("exists", c.get("value", True)))
    if t == "vclock":
        return {int(k): int(v) for k, v in dict(c.get("vclock", c.get("value", {}))).items()}
    return int(c.get("number", c.get("value", 0)))


def _json_op(o: dict[str, Any]) -> TxnOp:
    delta = int(o.get("delta", 1 if o["op"] == "incr" else 0))
    return TxnOp(str(o["op"]), str(o["key"]), str(o.get("value", "")), delta)


_LINE_COMPARE = re.compile(r"^(\w+)\((.+?)\)\s*(==|!=|>|<)\s*(.*)$")


def _line_compare(text: str, n: int) -> Compare:
    m = _LINE_COMPARE.match(text)
    if not m:
        raise InvalidArgument(f"transaction line {n}: expected TARGET(KEY) OP OPERAND, got {text!r}")
    target, key, op, operand = m.groups()
    x: Any = operand
    if target == "exists":
        if operand.lower() not in ("true", "false"):
            raise InvalidArgument(f"transaction line {n}: exists(...) compares with true or false")
        x = operand.lower() == "true"
    elif target in ("version", "mod_revision", "create_revision"):
        if not operand.isdigit():
            raise InvalidArgument(f"transaction line {n}: {target}(...) compares with a number, got {operand!r}")
        x = int(operand)
    elif target == "vclock":
        x = parse_vclock(operand)
    return Compare(key, target, op, x)


def _line_op(text: str, n: int) -> TxnOp:
    parts = text.split(" ", 2)
    op = parts[0]
    if op in ("get", "delete") and len(parts) == 2:
        return TxnOp(op, parts[1])
    if op == "put" and len(parts) == 3:
        return TxnOp.put(parts[1], parts[2])
    if op == "incr" and len(parts) in (2, 3):
        try:
            return TxnOp.incr(parts[1], int(parts[2]) if len(parts) == 3 else 1)
        except ValueError:
            raise InvalidArgument(f"transaction line {n}: incr DELTA must be an integer") from None
    raise InvalidArgument(f"transaction line {n}: expected get KEY, put KEY VALUE, delete KEY or incr KEY [DELTA]")
