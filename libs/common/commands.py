"""Node commands sized for NATS. A NetworkChaos side's peers are the same for every target of that
side, so a command carries each distinct peer list once (`NodeCommand.peer_sets`, referenced by
name from the faults) instead of once per target: a 1,000 + 1,000-pod partition on one node was a
50 MB command, now about 2 x 16 KB of addresses. A command still larger than NATS's max_payload is
split into parts, each with the peer sets its actions use. The injector expands a part back into
per-target peers before it acts. Pure.
"""

from __future__ import annotations

import msgspec

from chaosbus.common import messages as m

_ENC = msgspec.json.Encoder()


class UnknownPeerSet(ValueError):
    """A fault names a peer set its command does not carry (never sent by the scheduler)."""


def compact(cmd: m.NodeCommand) -> m.NodeCommand:
    """Every peer list of the command's partition rules and shaping faults moved into `peer_sets`."""
    names: dict[tuple[str, ...], str] = {}
    by_id: dict[int, tuple[list[str], str]] = {}  # the planner shares one list per side: hash it once
    sets: dict[str, list[str]] = dict(cmd.peer_sets)

    def ref(peers: list[str]) -> str:
        known = by_id.get(id(peers))
        if known is not None and known[0] is peers:
            return known[1]
        key = tuple(peers)
        if key not in names:
            names[key] = f"s{len(names)}"
            sets[names[key]] = peers
        by_id[id(peers)] = (peers, names[key])
        return names[key]

    actions = []
    for a in cmd.actions:
        f = a.fault
        if isinstance(f, m.Partition) and any(r.peers for r in f.rules):
            rules = [msgspec.structs.replace(r, peers=[], peer_set=ref(r.peers)) if r.peers else r for r in f.rules]
            a = msgspec.structs.replace(a, fault=msgspec.structs.replace(f, rules=rules))
        elif isinstance(f, m.Shaping) and f.peers:
            a = msgspec.structs.replace(a, fault=msgspec.structs.replace(f, peers=[], peer_set=ref(f.peers)))
        actions.append(a)
    if not names:
        return cmd
    return msgspec.structs.replace(cmd, actions=actions, peer_sets=sets)


def expand(cmd: m.NodeCommand) -> m.NodeCommand:
    """Peers back in every fault (the lists shared, not copied); raises UnknownPeerSet for a name
    the command does not carry, which must never turn into an empty list (that means "every packet").
    """
    if not cmd.peer_sets and not _refs(cmd):
        return cmd
    actions = []
    for a in cmd.actions:
        f = a.fault
        if isinstance(f, m.Partition) and any(r.peer_set for r in f.rules):
            rules = [
                msgspec.structs.replace(r, peers=_lookup(cmd, r.peer_set), peer_set="") if r.peer_set else r
                for r in f.rules
            ]
            a = msgspec.structs.replace(a, fault=msgspec.structs.replace(f, rules=rules))
        elif isinstance(f, m.Shaping) and f.peer_set:
            a = msgspec.structs.replace(
                a, fault=msgspec.structs.replace(f, peers=_lookup(cmd, f.peer_set), peer_set="")
            )
        actions.append(a)
    return msgspec.structs.replace(cmd, actions=actions, peer_sets={})


def split(cmd: m.NodeCommand, max_bytes: int) -> list[m.NodeCommand]:
    """The command in parts of at most `max_bytes` encoded, in action order; part i > 0 gets the id
    `<command_id>.<i>`. One action larger than `max_bytes` is a part of its own (NATS refuses it,
    and the scheduler fails the experiment).
    """
    if len(_ENC.encode(cmd)) <= max_bytes:
        return [cmd]
    base = len(_ENC.encode(msgspec.structs.replace(cmd, actions=[], peer_sets={})))
    set_sizes = {name: len(_ENC.encode(peers)) + len(name) + 4 for name, peers in cmd.peer_sets.items()}
    parts: list[list[m.TargetAction]] = []
    current: list[m.TargetAction] = []
    used: set[str] = set()
    size = base
    for a in cmd.actions:
        needs = _action_refs(a) - used
        grow = len(_ENC.encode(a)) + 1 + sum(set_sizes.get(n, 0) for n in needs)
        if current and size + grow > max_bytes:
            parts.append(current)
            current, used, size = [], set(), base
            needs = _action_refs(a)
            grow = len(_ENC.encode(a)) + 1 + sum(set_sizes.get(n, 0) for n in needs)
        current.append(a)
        used |= needs
        size += grow
    parts.append(current)
    out = []
    for i, actions in enumerate(parts):
        refs = set().union(*(_action_refs(a) for a in actions))
        out.append(
            msgspec.structs.replace(
                cmd,
                command_id=cmd.command_id if i == 0 else f"{cmd.command_id}.{i}",
                actions=actions,
                peer_sets={n: p for n, p in cmd.peer_sets.items() if n in refs},
            )
        )
    return out


def parts(cmd: m.NodeCommand, max_bytes: int) -> list[m.NodeCommand]:
    """What the scheduler publishes for one command: compacted, then split below `max_bytes`."""
    return split(compact(cmd), max_bytes)


def _action_refs(a: m.TargetAction) -> set[str]:
    f = a.fault
    if isinstance(f, m.Partition):
        return {r.peer_set for r in f.rules if r.peer_set}
    if isinstance(f, m.Shaping) and f.peer_set:
        return {f.peer_set}
    return set()


def _refs(cmd: m.NodeCommand) -> set[str]:
    return set().union(*(_action_refs(a) for a in cmd.actions)) if cmd.actions else set()


def _lookup(cmd: m.NodeCommand, name: str) -> list[str]:
    peers = cmd.peer_sets.get(name)
    if peers is None:
        raise UnknownPeerSet(f"command {cmd.command_id} names peer set {name!r} it does not carry")
    return peers
