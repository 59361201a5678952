"""The shaping planner: every active shaping rule of one (netns, device) in, one traffic-control
tree out, as plain data. Pure: no kernel, no clock; the backend turns a plan into netlink messages.

The tree (every handle in the fixed range `cb00:`-`cbff:`, so anything there is ours):

    root  htb cb00: (default 0: unclassified packets bypass shaping)
      ├── class cb00:N  one per distinct combination of rules a packet can meet
      │     └── stage qdiscs, chained: netem cbXX: -> tbf cbYY: (parent cbXX:1) ...
      └── filter: one classic-BPF program, replaced atomically on every change:
            non-IPv4  -> the default class (rules without peers) or unshaped
            exempt    -> cb00: itself = HTB's direct queue, never shaped (our control traffic)
            IPv4 dst  -> the class of the most specific matching destination, else the default

A packet meets every rule whose destinations contain it. Destinations may overlap (a /24 from one
experiment, a /32 with a port from another), so the planner closes them under intersection; the
most specific one that matches a packet (longest prefix, then with port before without) is exactly
the intersection of everything that matches it, and its class chains the netem/tbf stages of all
those rules, netem first. Chaos Mesh chains qdiscs the same way (SetTcs).

Handles stay stable across plans: a class that an earlier plan already had (same rules, same
parameters) keeps its class id and stage handles, so adding or removing one experiment never
resets the queues of the others. `diff` says which classes to add and remove.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network

from chaosbus.common.messages import NetemParams, TbfParams

ROOT = 0xCB000000  # htb cb00:
_MAJOR_ROOT = 0xCB00
_STAGE_MAJORS = range(0xCB01, 0xCC00)  # cb01: .. cbff:
_CLASS_MINORS = range(1, 0x10000)
MAX_STAGES = len(_STAGE_MAJORS)


class PlanError(ValueError):
    """The rules cannot be planned (e.g. more stages than the handle range holds)."""


def ours(handle: int) -> bool:
    """Whether a qdisc/class handle is in chaosbus's range (cb00:-cbff:)."""
    return 0xCB00 <= handle >> 16 <= 0xCBFF


@dataclass(frozen=True)
class Dest:
    """An IPv4 network with an optional L4 port (TCP, UDP, SCTP, DCCP)."""

    network: IPv4Network
    port: int | None = None

    @property
    def specificity(self) -> tuple[int, int]:
        return (self.network.prefixlen, 0 if self.port is None else 1)

    @property
    def sort_key(self) -> tuple[int, int, int]:
        return (int(self.network.network_address), self.network.prefixlen, -1 if self.port is None else self.port)

    def covers(self, other: Dest) -> bool:
        return other.network.subnet_of(self.network) and self.port in (None, other.port)

    def intersect(self, other: Dest) -> Dest | None:
        if self.port is not None and other.port is not None and self.port != other.port:
            return None
        if self.network.subnet_of(other.network):
            net = self.network
        elif other.network.subnet_of(self.network):
            net = other.network
        else:
            return None
        return Dest(net, self.port if self.port is not None else other.port)


def dest(text: str, port: int | None = None) -> Dest:
    """A Dest from an address or CIDR text (host bits are dropped)."""
    return Dest(ipaddress.IPv4Network(text, strict=False), port)


@dataclass(frozen=True)
class Rule:
    """One experiment side's shaping on this device. `dests` None: every packet."""

    owner: str
    netem: NetemParams | None = None
    tbf: TbfParams | None = None
    dests: tuple[Dest, ...] | None = None


@dataclass(frozen=True)
class Stage:
    """One qdisc of a class's chain."""

    handle: int
    parent: int
    owner: str
    netem: NetemParams | None = None
    tbf: TbfParams | None = None

    @property
    def kind(self) -> str:
        return "netem" if self.netem is not None else "tbf"


StageKey = tuple[str, NetemParams | None, TbfParams | None]


@dataclass(frozen=True)
class ShapedClass:
    classid: int
    key: tuple[StageKey, ...]
    stages: tuple[Stage, ...]


@dataclass(frozen=True)
class Match:
    dest: Dest
    classid: int


@dataclass(frozen=True)
class TcPlan:
    classes: tuple[ShapedClass, ...]
    matches: tuple[Match, ...]  # most specific first; within a tier the order does not matter
    default: int  # class of packets no match covers (and of non-IPv4); 0 = unshaped
    exempt: tuple[Dest, ...] = ()

    def program_inputs(self) -> tuple[tuple[Match, ...], int, tuple[Dest, ...]]:
        return self.matches, self.default, self.exempt


@dataclass(frozen=True)
class Changes:
    """What turns the old tree into the new one. Order: root, add classes, program, remove classes."""

    create_root: bool
    remove_root: bool
    add: tuple[ShapedClass, ...] = ()
    remove: tuple[ShapedClass, ...] = ()
    program: bool = False

    @property
    def empty(self) -> bool:
        return not (self.create_root or self.remove_root or self.add or self.remove or self.program)


def plan(rules: Iterable[Rule], exempt: Iterable[Dest] = (), previous: TcPlan | None = None) -> TcPlan | None:
    """The whole tree for `rules` (None when there is none), reusing `previous`'s handles.

    Raises:
        PlanError: more stages or classes than the handle range holds.
    """
    rules = sorted(rules, key=lambda r: r.owner)
    if not rules:
        return None
    unfiltered = tuple(r for r in rules if r.dests is None)
    atoms = _atoms(rules)
    wanted: dict[tuple[StageKey, ...], None] = {}
    by_atom: list[tuple[Dest, tuple[StageKey, ...]]] = []
    for atom in atoms:
        meeting = [r for r in rules if r.dests is None or any(d.covers(atom) for d in r.dests)]
        key = _class_key(meeting)
        wanted.setdefault(key)
        by_atom.append((atom, key))
    default_key = _class_key(unfiltered) if unfiltered else None
    if default_key is not None:
        wanted.setdefault(default_key)
    classes = _allocate(list(wanted), previous)
    classid = {c.key: c.classid for c in classes}
    matches = tuple(Match(a, classid[k]) for a, k in sorted(by_atom, key=_precedence))
    return TcPlan(
        classes=tuple(sorted(classes, key=lambda c: c.classid)),
        matches=matches,
        default=classid[default_key] if default_key is not None else 0,
        exempt=tuple(sorted(set(exempt), key=lambda d: d.sort_key)),
    )


def diff(old: TcPlan | None, new: TcPlan | None) -> Changes:
    """The changes from `old` (what is installed) to `new` (what is wanted)."""
    if new is None:
        return Changes(create_root=False, remove_root=old is not None)
    old_classes = {c.key: c for c in old.classes} if old else {}
    new_keys = {c.key for c in new.classes}
    add = tuple(c for c in new.classes if c.key not in old_classes or old_classes[c.key] != c)
    remove = tuple(c for c in (old.classes if old else ()) if c.key not in new_keys or c not in new.classes)
    program = old is None or old.program_inputs() != new.program_inputs()
    return Changes(create_root=old is None, remove_root=False, add=add, remove=remove, program=program)


# --- internals ------------------------------------------------------------------------------------


def _atoms(rules: Sequence[Rule]) -> list[Dest]:
    """Every rule destination plus all their intersections (a fixed point; destinations are few)."""
    atoms: set[Dest] = {d for r in rules for d in (r.dests or ())}
    frontier = set(atoms)
    while frontier:
        fresh: set[Dest] = set()
        for a in frontier:
            for b in atoms:
                c = a.intersect(b)
                if c is not None and c not in atoms:
                    fresh.add(c)
        atoms |= fresh
        frontier = fresh
    return sorted(atoms, key=lambda d: d.sort_key)


def _precedence(item: tuple[Dest, tuple[StageKey, ...]]) -> tuple[int, int, str, tuple[int, int, int]]:
    atom, key = item
    prefixlen, ported = atom.specificity
    # Most specific first. Within a tier (same prefix length and port-ness) atoms are disjoint, so
    # grouping them by class is free and lets the program test runs of /32s cheaply.
    return (-prefixlen, -ported, repr(key), atom.sort_key)


def _class_key(rules: Sequence[Rule]) -> tuple[StageKey, ...]:
    """Chain order: every netem (by owner), then every tbf (by owner)."""
    ordered = sorted(rules, key=lambda r: r.owner)
    netems: list[StageKey] = [(r.owner, r.netem, None) for r in ordered if r.netem is not None]
    tbfs: list[StageKey] = [(r.owner, None, r.tbf) for r in ordered if r.tbf is not None]
    return tuple(netems + tbfs)


@dataclass
class _Free:
    used: set[int] = field(default_factory=set)

    def take(self, pool: range, what: str) -> int:
        for n in pool:
            if n not in self.used:
                self.used.add(n)
                return n
        raise PlanError(f"too many shaping {what} on one device (at most {len(pool)})")


def _allocate(keys: list[tuple[StageKey, ...]], previous: TcPlan | None) -> list[ShapedClass]:
    kept = {c.key: c for c in (previous.classes if previous else ()) if c.key in set(keys)}
    # Numbers of every previous class stay taken: removed classes still exist while new ones are
    # added (they go after the program switch).
    minors = _Free({c.classid & 0xFFFF for c in (previous.classes if previous else ())})
    majors = _Free({s.handle >> 16 for c in (previous.classes if previous else ()) for s in c.stages})
    out = list(kept.values())
    for key in sorted(k for k in keys if k not in kept):
        classid = (_MAJOR_ROOT << 16) | minors.take(_CLASS_MINORS, "classes")
        stages, parent = [], classid
        for owner, netem, tbf in key:
            handle = majors.take(_STAGE_MAJORS, "qdiscs") << 16
            stages.append(Stage(handle=handle, parent=parent, owner=owner, netem=netem, tbf=tbf))
            parent = handle | 1
        out.append(ShapedClass(classid=classid, key=key, stages=tuple(stages)))
    return out
