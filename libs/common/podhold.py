"""Holds: how a node injector tells a local process pod's supervisor to keep the pod's command
stopped (local mode's pod-failure), with no NATS in between.

Each supervised pod has a directory of its own, `<state dir>/pods/holds/<netns>` (named by the
pod's network namespace, unique for the pod's life), made by its supervisor, owned by root, mode
0700, removed when the pod is removed. A hold is one file in it, named after the journal entry
that placed it, holding a `Hold`: while one whose deadline has not passed is there, the supervisor
keeps the command stopped and the pod not ready; once none is left it starts the command afresh.
The deadline is in the file, so the supervisor ends the hold on time even if the injector is dead.

Files are written whole (a temporary file renamed into place), so a reader never sees half a hold.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path

import msgspec

from chaosbus.common import config

SUFFIX = ".hold"
_NETNS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_HOLD_NAME = re.compile(r"[0-9a-f]{32}\.hold")


class Hold(msgspec.Struct, kw_only=True, frozen=True):
    """One reason to keep a pod's command stopped."""

    key: str  # the injector's journal entry that placed it
    node: str  # that injector's node name (its sweeper removes only its own orphans)
    experiment: str  # namespace/name, for the pod's status
    deadline: float | None = None  # epoch seconds; None: until the injector removes it


_decoder = msgspec.json.Decoder(Hold)


def root() -> Path:
    return config.state_dir() / "pods" / "holds"


def pod_dir(netns: str, base: Path | None = None) -> Path:
    """The hold directory of the pod whose network namespace is named `netns`.

    Raises:
        ValueError: not a network namespace name (it would name a path elsewhere).
    """
    if not _NETNS_NAME.fullmatch(netns) or netns in (".", ".."):
        raise ValueError(f"not a network namespace name: {netns!r}")
    return (base or root()) / netns


def file_name(key: str) -> str:
    """The hold file of journal entry `key` (a digest: keys hold '/' and '|')."""
    return hashlib.sha256(key.encode()).hexdigest()[:32] + SUFFIX


def make_dir(directory: Path) -> None:
    """The supervisor's side: create the pod's hold directory (root only) and drop any stale holds."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    for name in names(directory):
        remove(directory, name)


def put(directory: Path, hold: Hold) -> str:
    """The injector's side: place `hold` (replacing its earlier self); its file name.

    Raises:
        FileNotFoundError: the pod has no hold directory (no supervisor of this machine runs it).
    """
    name = file_name(hold.key)
    tmp = directory / f".{name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, msgspec.json.encode(hold))
    finally:
        os.close(fd)
    os.replace(tmp, directory / name)
    return name


def remove(directory: Path, name: str) -> bool:
    """Remove one hold; whether it was there."""
    try:
        os.unlink(directory / name)
    except FileNotFoundError:
        return False
    return True


def names(directory: Path) -> list[str]:
    """The hold files in a pod's directory (none when the directory is gone)."""
    try:
        return sorted(n for n in os.listdir(directory) if _HOLD_NAME.fullmatch(n))
    except (FileNotFoundError, NotADirectoryError):
        return []


def read(directory: Path, name: str) -> Hold | None:
    """The hold in one file; None when it is gone or unreadable (a stray file is no hold)."""
    with contextlib.suppress(OSError, msgspec.DecodeError):
        return _decoder.decode((directory / name).read_bytes())
    return None


def active(directory: Path, now: float) -> list[Hold]:
    """The holds in force at `now` (epoch seconds): present and not past their deadline."""
    found = [read(directory, n) for n in names(directory)]
    return [h for h in found if h is not None and (h.deadline is None or h.deadline > now)]


def everywhere(name: str, base: Path | None = None) -> list[Path]:
    """Every pod directory holding the hold file `name` (a recovery that no longer knows the pod's
    network namespace still finds its hold)."""
    top = base or root()
    try:
        dirs = sorted(os.listdir(top))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [top / d for d in dirs if (top / d / name).exists()]
