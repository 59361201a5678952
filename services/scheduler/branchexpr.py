"""Workflow `conditionalBranches` expressions, evaluated safely (no eval): the subset of the expr
language Chaos Mesh's examples use, over the variables `exitCode` (int) and `stdout` (string,
trimmed). Grammar:

    or      := and (("||" | "or") and)*
    and     := not (("&&" | "and") not)*
    not     := ("!" | "not") not | compare
    compare := primary (("==" | "!=" | "<" | ">" | "<=" | ">=" | "contains" | "startsWith" | "endsWith")
               primary)?
    primary := INT | STRING | "true" | "false" | NAME | "(" or ")"

The word forms (`and`, `or`, `not`) and the string operators are expr's too; `matches` (a regular
expression from the workflow run against the task's output) is left out on purpose.
"""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<int>-?\d+)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>==|!=|<=|>=|&&|\|\||[<>!()])
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
)""",
    re.VERBOSE,
)
MAX_LENGTH = 1000
_STRING_OPS = {"contains": str.__contains__, "startsWith": str.startswith, "endsWith": str.endswith}
_WORDS = ("and", "or", "not", *_STRING_OPS)


class ExpressionError(ValueError):
    """An expression that does not parse or compares unlike things; the message says where."""


def tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ExpressionError(f"unexpected {text[pos:].strip()[:20]!r} at position {pos}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str, env: dict[str, Any]) -> None:
        if len(text) > MAX_LENGTH:
            raise ExpressionError(f"longer than {MAX_LENGTH} characters")
        self.toks, self.i, self.env = tokens(text), 0, env

    def peek(self) -> str | None:
        return self.toks[self.i][1] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        if self.i >= len(self.toks):
            raise ExpressionError("unexpected end of expression")
        self.i += 1
        return self.toks[self.i - 1]

    def parse(self) -> bool:
        value = self.or_()
        if self.i != len(self.toks):
            raise ExpressionError(f"unexpected {self.toks[self.i][1]!r}")
        return _truth(value)

    def or_(self) -> Any:
        value = self.and_()
        while self.peek() in ("||", "or"):
            self.take()
            right = self.and_()
            value = _truth(value) or _truth(right)
        return value

    def and_(self) -> Any:
        value = self.not_()
        while self.peek() in ("&&", "and"):
            self.take()
            right = self.not_()
            value = _truth(value) and _truth(right)
        return value

    def not_(self) -> Any:
        if self.peek() in ("!", "not"):
            self.take()
            return not _truth(self.not_())
        return self.compare()

    def compare(self) -> Any:
        left = self.primary()
        op = self.peek()
        if op not in ("==", "!=", "<", ">", "<=", ">=", *_STRING_OPS):
            return left
        self.take()
        right = self.primary()
        if op in _STRING_OPS:
            if not isinstance(left, str) or not isinstance(right, str):
                raise ExpressionError(f"{op} needs two strings, got {left!r} and {right!r}")
            return bool(_STRING_OPS[op](left, right))
        if op in ("==", "!="):
            return (left == right) == (op == "==")
        if type(left) is not type(right) or isinstance(left, bool):
            raise ExpressionError(f"cannot order {left!r} and {right!r}")
        return {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op]

    def primary(self) -> Any:
        kind, text = self.take()
        if kind == "int":
            return int(text)
        if kind == "str":
            return re.sub(r"\\(.)", r"\1", text[1:-1])
        if kind == "name":
            if text in ("true", "false"):
                return text == "true"
            if text in _WORDS:
                raise ExpressionError(f"unexpected {text!r}")
            if text not in self.env:
                raise ExpressionError(f"unknown name {text!r} (known: {', '.join(sorted(self.env))})")
            return self.env[text]
        if text == "(":
            value = self.or_()
            if self.take()[1] != ")":
                raise ExpressionError("missing ')'")
            return value
        raise ExpressionError(f"unexpected {text!r}")


def _truth(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ExpressionError(f"{value!r} is not true or false")
    return value


def evaluate(expression: str, *, exit_code: int, stdout: str) -> bool:
    """The expression's value for a task's result; ExpressionError if it is malformed."""
    return _Parser(expression, {"exitCode": exit_code, "stdout": stdout.strip()}).parse()
