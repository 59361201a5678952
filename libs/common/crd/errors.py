"""The one error bad input raises: a list of `field.path: message` lines."""

from __future__ import annotations

import re

import msgspec

_MSGSPEC_PATH = re.compile(r"^(.*) - at `\$\.?(.*)`$")


class InvalidObject(ValueError):
    """An object failed decoding or validation; `errors` holds `path: message` strings."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("; ".join(errors))


def from_msgspec(err: msgspec.ValidationError, prefix: str = "") -> InvalidObject:
    """Turn msgspec's "msg - at `$.a.b`" into "a.b: msg" (prefix prepended to the path)."""
    text = str(err)
    m = _MSGSPEC_PATH.match(text)
    msg, path = (m.group(1), m.group(2)) if m else (text, "")
    path = re.sub(r"\.?\[(\d+)\]", r"[\1]", path)
    full = ".".join(p for p in (prefix, path) if p)
    for lead, what in (
        ("Object contains unknown field", "unknown field"),
        ("Object missing required field", "required field is missing"),
    ):
        if msg.startswith(lead) and "`" in msg:
            field = msg.split("`")[1]
            return InvalidObject([f"{full + '.' if full else ''}{field}: {what}"])
    return InvalidObject([f"{full or 'object'}: {_lower_first(msg)}"])


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:]


class Problems:
    """Collects validation problems as `path: message` while walking an object."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")

    def one_of(self, path: str, value: str, allowed: tuple[str, ...]) -> None:
        if value not in allowed:
            self.add(path, f"expected one of {', '.join(allowed)}")

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidObject(self.items)
