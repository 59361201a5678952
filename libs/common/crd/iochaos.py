"""IOChaos: latency, errors, attribute overrides and corrupted data on the files of a target's
volume, as Chaos Mesh does with a FUSE filesystem mounted over `volumePath` (the node injector's
"io" fault, native/iofs). Pure.
"""

from __future__ import annotations

import os
from typing import Any, Self

import msgspec

from chaosbus.common import faultspecs as fs
from chaosbus.common.crd import bounds
from chaosbus.common.crd.common import ContainerSelectorBase, with_default_namespace
from chaosbus.common.crd.errors import Problems
from chaosbus.common.durations import parse_duration

ACTIONS = ("latency", "fault", "attrOverride", "mistake")
# Chaos Mesh's filesystem operations, in the order of the bit each has in a rule's method mask.
METHODS = (
    "lookup",
    "forget",
    "getattr",
    "setattr",
    "readlink",
    "mknod",
    "mkdir",
    "unlink",
    "rmdir",
    "symlink",
    "rename",
    "link",
    "open",
    "read",
    "write",
    "flush",
    "release",
    "fsync",
    "opendir",
    "readdir",
    "releasedir",
    "fsyncdir",
    "statfs",
    "setxattr",
    "getxattr",
    "listxattr",
    "removexattr",
    "access",
    "create",
    "getlk",
    "setlk",
    "bmap",
)
ALL_METHODS = (1 << len(METHODS)) - 1
# attr.kind, in the order native/iofs knows them.
FILE_KINDS = ("namedPipe", "charDevice", "blockDevice", "directory", "regularFile", "symlink", "socket")
# attr fields, in the order of their bit in the override mask and of their values on a rule line.
ATTR_FIELDS = ("ino", "size", "blocks", "atime", "mtime", "ctime", "kind", "perm", "nlink", "uid", "gid", "rdev")
FILLINGS = ("zero", "random")
MAX_DELAY_S = 3600.0  # a delay is slept by the filesystem per call: an hour per read is already absurd
MAX_PATH = 4096
MAX_CONTAINER_NAMES = 64
INT64_MAX = 2**63 - 1
MAX_MISTAKE = 2**31 - 1


class _S(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True, forbid_unknown_fields=True):
    pass


class Timespec(_S):
    sec: int = 0
    nsec: int = 0


class AttrOverride(_S):
    ino: int | None = None
    size: int | None = None
    blocks: int | None = None
    atime: Timespec | None = None
    mtime: Timespec | None = None
    ctime: Timespec | None = None
    kind: str = ""
    perm: int | None = None
    nlink: int | None = None
    uid: int | None = None
    gid: int | None = None
    rdev: int | None = None


class Mistake(_S):
    filling: str = ""
    max_occurrences: int = 0
    max_length: int = 0


class IOChaosSpec(ContainerSelectorBase, kw_only=True):
    action: str = ""
    volume_path: str = ""
    path: str = ""
    methods: list[str] = []
    percent: int = 100
    delay: str = ""
    errno: int = 0
    attr: AttrOverride | None = None
    mistake: Mistake | None = None

    def validate(self) -> None:
        problems = Problems()
        self.check_common(problems)
        if self.action not in ACTIONS:
            problems.add("spec.action", f"must be one of {', '.join(ACTIONS)}, got {bounds.show(self.action)}")
        if not self.volume_path:
            problems.add("spec.volumePath", "is required (the volume's mount path in the container)")
        elif not self.volume_path.startswith("/") or len(self.volume_path) > MAX_PATH or "\n" in self.volume_path:
            problems.add("spec.volumePath", f"must be an absolute path, got {bounds.show(self.volume_path)}")
        if len(self.path) > MAX_PATH or "\n" in self.path:
            problems.add("spec.path", "must be one line of at most 4096 characters")
        if len(self.methods) > len(METHODS):
            problems.add("spec.methods", f"at most {len(METHODS)} methods, got {len(self.methods)}")
        else:
            for i, name in enumerate(self.methods):
                if name not in METHODS:
                    problems.add(
                        f"spec.methods[{i}]", f"unknown method {bounds.show(name)} (one of {', '.join(METHODS)})"
                    )
        if not 0 <= self.percent <= 100:
            problems.add("spec.percent", f"must be within 0..100, got {self.percent}")
        self._check_action(problems)
        if len(self.container_names) > MAX_CONTAINER_NAMES:
            problems.add("spec.containerNames", f"at most {MAX_CONTAINER_NAMES} names, got {len(self.container_names)}")
        else:
            for i, name in enumerate(self.container_names):
                bounds.dns_label(problems, f"spec.containerNames[{i}]", name)
        problems.raise_if_any()

    def _check_action(self, problems: Problems) -> None:
        if self.action == "latency" or self.delay:
            if not self.delay:
                problems.add("spec.delay", "is required for action latency (a duration such as 100ms)")
            else:
                try:
                    d = parse_duration(self.delay)
                    if not 0 <= d <= MAX_DELAY_S:
                        problems.add("spec.delay", f"must be within 0..1h, got {bounds.show(self.delay)}")
                except ValueError as e:
                    problems.add("spec.delay", str(e))
        if self.action == "fault" and not 0 < self.errno <= 4095:
            problems.add("spec.errno", f"must be an errno number in 1..4095 for action fault, got {self.errno}")
        if self.action == "attrOverride":
            if self.attr is None:
                problems.add("spec.attr", "is required for action attrOverride")
            else:
                self._check_attr(problems, self.attr)
        if self.action == "mistake":
            m = self.mistake
            if m is None:
                problems.add("spec.mistake", "is required for action mistake")
            else:
                if m.filling not in FILLINGS:
                    problems.add("spec.mistake.filling", f"must be zero or random, got {bounds.show(m.filling)}")
                for name, v in (("maxOccurrences", m.max_occurrences), ("maxLength", m.max_length)):
                    if not 1 <= v <= MAX_MISTAKE:
                        problems.add(f"spec.mistake.{name}", f"must be at least 1, got {v}")

    @staticmethod
    def _check_attr(problems: Problems, a: AttrOverride) -> None:
        if a.kind and a.kind not in FILE_KINDS:
            problems.add("spec.attr.kind", f"must be one of {', '.join(FILE_KINDS)}, got {bounds.show(a.kind)}")
        for name in ("ino", "size", "blocks", "nlink", "uid", "gid", "rdev"):
            v = getattr(a, name)
            if v is not None and not 0 <= v <= INT64_MAX:
                problems.add(f"spec.attr.{name}", f"must be within 0..2^63-1, got {v}")
        if a.perm is not None and not 0 <= a.perm <= 0o7777:
            problems.add("spec.attr.perm", f"must be permission bits within 0..0o7777 (4095), got {a.perm}")
        for name in ("atime", "mtime", "ctime"):
            t = getattr(a, name)
            if t is not None and (not -INT64_MAX <= t.sec <= INT64_MAX or not 0 <= t.nsec < 1_000_000_000):
                problems.add(f"spec.attr.{name}", "sec must fit an int64 and nsec be within 0..999999999")
        if not any(getattr(a, n) not in (None, "") for n in ATTR_FIELDS):
            problems.add("spec.attr", "overrides nothing: set at least one field")

    def defaulted(self, namespace: str) -> Self:
        spec = with_default_namespace(self, namespace)
        if self.percent == 0:
            # As Chaos Mesh: an unset (zero) percent means every matched call.
            spec = msgspec.structs.replace(spec, percent=100)
        return spec  # type: ignore[return-value]

    def methods_mask(self) -> int:
        mask = 0
        for name in self.methods:
            mask |= 1 << METHODS.index(name)
        return mask or ALL_METHODS


def attr_override(a: AttrOverride | None) -> tuple[int, list[int]]:
    """(mask, values): the override's fields as native/iofs takes them (ATTR_FIELDS order, times
    as sec and nsec)."""
    if a is None:
        return 0, [0] * 15
    mask, values = 0, []
    for bit, name in enumerate(ATTR_FIELDS):
        v: Any = getattr(a, name)
        if name in ("atime", "mtime", "ctime"):
            values += [v.sec, v.nsec] if v is not None else [0, 0]
        elif name == "kind":
            values.append(FILE_KINDS.index(v) if v else 0)
        else:
            values.append(v or 0)
        if v not in (None, ""):
            mask |= 1 << bit
    return mask, values


def plan(obj: Any, target: Any, everyone: Any) -> fs.IO:
    spec = obj.spec
    assert isinstance(spec, IOChaosSpec)
    mask, values = attr_override(spec.attr if spec.action == "attrOverride" else None)
    m = spec.mistake if spec.action == "mistake" else None
    return fs.IO(
        action=spec.action,  # type: ignore[arg-type]
        volume_path=os.path.normpath(spec.volume_path),
        path=spec.path,
        methods=spec.methods_mask(),
        percent=spec.percent or 100,
        delay_ns=round(parse_duration(spec.delay) * 1e9) if spec.action == "latency" and spec.delay else 0,
        errno=spec.errno if spec.action == "fault" else 0,
        attr_mask=mask,
        attr_values=values,
        mistake_filling=FILLINGS.index(m.filling) if m else 0,
        mistake_max_occurrences=m.max_occurrences if m else 0,
        mistake_max_length=m.max_length if m else 0,
        container_names=[target.container.name] if getattr(target, "container", None) else list(spec.container_names),
    )
