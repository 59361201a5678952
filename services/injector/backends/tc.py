"""Traffic control for NetworkChaos shaping: every (netns, device) converges to the plan of all its
active rules, through pyroute2 netlink on the namespace's own thread (`netnslink`).

State per device (in process memory): the original configuration, the active rules by owner (an
experiment side), and the plan installed. Setting or dropping one owner's rule re-plans the whole
device and applies only the difference (`tcplan.diff`): new classes first, then the
classifier swap, then the removal of classes nobody uses. The last rule gone restores the
original. All of one namespace's work runs on its thread, one job at a time, so concurrent
experiments on one pod cannot interleave.

After an injector restart the memory is empty while the kernel may still hold our tree (root
`cb00:`): the first change rebuilds the tree from the rules known by then (the node journal
re-applies every active fault), and the original comes from the saved file or is the default.

For the orphan sweeper: `devices_with_ours(netns)` (what it looks at), `list_ours(netns)` (every
object of ours, for a closer look) and `remove_ours(netns, device)`.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from chaosbus.common import config
from chaosbus.common.netns import visit_netns
from chaosbus.injector.backends import tcdev
from chaosbus.injector.backends._glue import cbpf, tcwire
from chaosbus.injector.backends._glue.netnslink import LinkCache, NetnsGone, NetnsLink, netns_key
from chaosbus.injector.backends.tcdev import DeviceMissing, Original, OriginalStore, TcError
from chaosbus.injector.backends.tcplan import ROOT, Changes, Dest, Rule, TcPlan, diff, ours, plan

ProgramTooLarge = cbpf.ProgramTooLarge  # a plan with too many destinations for one classifier

__all__ = [
    "DeviceMissing",
    "Found",
    "NetnsGone",
    "Outcome",
    "ProgramTooLarge",
    "Shaper",
    "TcError",
    "devices_with_ours",
    "list_ours",
    "remove_ours",
]


@dataclass
class DeviceState:
    key: tuple[int, int]
    ifindex: int
    ifname: str
    original: Original
    rules: dict[str, Rule] = field(default_factory=dict)
    targets: dict[str, str] = field(default_factory=dict)  # owner -> target id
    installed: TcPlan | None = None


@dataclass(frozen=True)
class Outcome:
    device: str
    plan: TcPlan | None
    changed: bool
    note: str = ""


def default_store() -> OriginalStore:
    return OriginalStore(config.state_dir() / "tc-originals")


class Shaper:
    """The node's shaping state and the one way to change it. Thread-safe."""

    def __init__(self, links: LinkCache | None = None, store: OriginalStore | None = None) -> None:
        self.links = links or LinkCache()
        self.store = store or default_store()
        self._lock = threading.Lock()
        self._devices: dict[tuple[tuple[int, int], str], DeviceState] = {}
        self._capabilities: dict[str, str | None] | None = None
        self._probe_lock = threading.Lock()

    def capabilities(self) -> dict[str, str | None]:
        """tc kind -> None if this kernel has it, else the reason (`tcdev.probe`, asked once: the
        probes of concurrent first callers would meet in the probe's namespace)."""
        with self._probe_lock:
            if self._capabilities is None:
                self._capabilities = tcdev.probe()
            return self._capabilities

    def set_rule(
        self, netns_path: str, device: str, pod_ip: str, rule: Rule, target: str, exempt: Iterable[Dest]
    ) -> Outcome:
        """Make `rule` (replacing any earlier one of its owner) part of the device's tree.

        Raises:
            NetnsGone: the namespace is gone.
            DeviceMissing: no such device.
            TcError: the kernel refused (the device is left with its previous rules, or original).
            PlanError, cbpf.ProgramTooLarge: the rules cannot be expressed.
        """
        exempt = tuple(exempt)
        key = netns_key(netns_path)

        async def job(ipr: Any) -> Outcome:
            ifindex, ifname = tcdev.find_device(device, pod_ip)
            state = await self._state(ipr, key, ifindex, ifname)
            rules = {**state.rules, rule.owner: rule}
            outcome = await self._converge(ipr, state, rules, exempt)
            state.targets[rule.owner] = target
            return outcome

        self.links.forget_gone()
        return self.links.run(netns_path, job)[1]

    def drop_rule(self, netns_path: str, owner: str, exempt: Iterable[Dest]) -> list[Outcome]:
        """Take `owner`'s rule off every device of the namespace; the last one restores the original.
        Devices still carrying our tree that this process knows nothing about (an injector restart)
        are restored too.

        Raises:
            NetnsGone: the namespace is gone (its devices went with it).
            TcError: the kernel refused.
        """
        exempt = tuple(exempt)
        key = netns_key(netns_path)

        async def job(ipr: Any) -> list[Outcome]:
            outcomes = []
            with self._lock:
                mine = [s for (k, _), s in self._devices.items() if k == key]
            for state in mine:
                if owner in state.rules:
                    rules = {o: r for o, r in state.rules.items() if o != owner}
                    outcomes.append(await self._converge(ipr, state, rules, exempt))
                    state.targets.pop(owner, None)
            if outcomes:
                return outcomes
            # Not known here (an injector restart): restore whatever tree of ours this process does
            # not know; the node journal re-applies the faults that are still wanted.
            known = {s.ifindex for s in mine}
            for ifindex, ifname in socket.if_nameindex():
                if ifindex not in known and await tcdev.root_is(ipr, ifindex, ROOT):
                    original = self.store.load(key, ifname) or Original("")
                    note = await _restore(ipr, ifindex, original)
                    self.store.drop(key, ifname)
                    outcomes.append(Outcome(ifname, None, True, note))
            return outcomes

        try:
            return self.links.run(netns_path, job)[1]
        finally:
            self._release_if_idle(key)

    def forget(self, owner: str, target: str) -> None:
        """The target is gone: drop `owner`'s rule for it from memory, whatever namespace it was in."""
        with self._lock:
            for key, state in list(self._devices.items()):
                if state.targets.get(owner) == target:
                    state.rules.pop(owner, None)
                    state.targets.pop(owner, None)
                    if not state.rules:
                        del self._devices[key]
        self.links.forget_gone()

    def active(self, netns_path: str) -> dict[str, dict[str, Rule]]:
        """Device name -> the rules in force there (as this process knows them)."""
        key = netns_key(netns_path)
        with self._lock:
            return {name: dict(s.rules) for (k, name), s in self._devices.items() if k == key}

    def installed_stages(self, netns_path: str) -> dict[str, int]:
        """Owner -> how many of its stage qdiscs (netem, tbf) the kernel has on the namespace's
        devices now: read from the kernel, attributed through the installed plan (a stage handle
        names one owner). A namespace this process shapes nothing in is not visited.

        Raises:
            NetnsGone: the namespace is gone.
        """
        key = netns_key(netns_path)
        with self._lock:
            states = [s for (k, _), s in self._devices.items() if k == key and s.installed is not None]
        if not states:
            return {}

        async def job(ipr: Any) -> dict[str, int]:
            counts: dict[str, int] = {}
            for state in states:
                assert state.installed is not None
                stages = {st.handle: st for c in state.installed.classes for st in c.stages}
                for q in await tcdev.qdiscs_of(ipr, state.ifindex):
                    stage = stages.get(q.handle)
                    if stage is not None and stage.kind == q.kind:
                        counts[stage.owner] = counts.get(stage.owner, 0) + 1
            return counts

        return self.links.run(netns_path, job)[1]

    # --- on the namespace's thread ---------------------------------------------------------------

    async def _state(self, ipr: Any, key: tuple[int, int], ifindex: int, ifname: str) -> DeviceState:
        with self._lock:
            state = self._devices.get((key, ifname))
        if state is not None and state.ifindex == ifindex:
            if not await tcdev.root_is(ipr, ifindex, ROOT):
                state.installed = None  # somebody removed our tree: rebuild it whole
            return state
        objects = await tcdev.dump(ipr, ifindex, full=False)
        root = tcdev.root_of(objects)
        ours_now = root is not None and root.handle == ROOT
        if ours_now:  # ours from before a restart (or a recreated device): original as saved
            original = self.store.load(key, ifname) or Original("")
            await tcdev.send(ipr, tcwire.delete_root(ifindex), missing_ok=True)  # rebuilt from the rules
        else:
            original = tcdev.original_of(objects)
            self.store.save(key, ifname, original)
        state = DeviceState(
            key,
            ifindex,
            ifname,
            original,
            rules=dict(state.rules) if state else {},
            targets=dict(state.targets) if state else {},
        )
        with self._lock:
            self._devices[(key, ifname)] = state
        return state

    async def _converge(
        self, ipr: Any, state: DeviceState, rules: dict[str, Rule], exempt: tuple[Dest, ...]
    ) -> Outcome:
        wanted = plan(rules.values(), exempt, state.installed)
        changes = diff(state.installed, wanted)
        note = ""
        try:
            note = await self._apply(ipr, state, changes, wanted)
        except TcError:
            await self._rebuild(ipr, state)
            raise
        state.rules, state.installed = rules, wanted
        if wanted is None:
            with self._lock:
                self._devices.pop((state.key, state.ifname), None)
            self.store.drop(state.key, state.ifname)
        return Outcome(state.ifname, wanted, not changes.empty, note)

    async def _apply(self, ipr: Any, state: DeviceState, changes: Changes, wanted: TcPlan | None) -> str:
        ifindex = state.ifindex
        if changes.remove_root:
            return await _restore(ipr, ifindex, state.original)
        assert wanted is not None
        program = cbpf.classifier(wanted.matches, wanted.default, wanted.exempt, ROOT) if changes.program else b""
        if changes.create_root:
            await tcdev.send(ipr, tcwire.root_qdisc(ifindex))
        for cls in changes.add:
            await tcdev.send(ipr, tcwire.add_class(ifindex, cls.classid))
            for stage in cls.stages:
                await tcdev.send(ipr, tcwire.add_stage(ifindex, stage))
        if changes.program:
            await tcdev.send(ipr, tcwire.classifier(ifindex, program))
        for cls in changes.remove:
            await tcdev.send(ipr, tcwire.delete_class(ifindex, cls.classid), missing_ok=True)
        return ""

    async def _rebuild(self, ipr: Any, state: DeviceState) -> None:
        """After a failed change: the previous rules from scratch, else the original."""
        try:
            previous = plan(state.rules.values(), state.installed.exempt if state.installed else ())
            if previous is None:
                raise TcError("no previous rules")
            await self._apply(ipr, state, diff(None, previous), previous)
            state.installed = previous
        except (TcError, ValueError):
            await _restore(ipr, state.ifindex, state.original)
            state.installed = None

    def _release_if_idle(self, key: tuple[int, int]) -> None:
        with self._lock:
            busy = any(k == key for k, _ in self._devices)
        if not busy:
            self.links.release(key)


async def _restore(ipr: Any, ifindex: int, original: Original) -> str:
    left = await tcdev.restore(ipr, ifindex, original)
    return f"original configuration restored with differences: {'; '.join(left)}" if left else ""


# --- for the orphan sweeper ------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    device: str
    what: str  # qdisc | class | filter
    kind: str
    handle: str
    parent: str


def list_ours(netns_path: str) -> list[Found]:
    """Every tc object of ours in the namespace (handles cb00:-cbff: and the classifier on cb00:)."""
    link = tcdev_link(netns_path)
    try:
        return link.run(_list_ours)
    finally:
        link.close()


def devices_with_ours(netns_path: str) -> list[str]:
    """The devices of the namespace on which a qdisc of ours sits (what `remove_ours` acts on):
    one qdisc dump of all devices by a visitor thread, no netns thread or pyroute2. Every object
    of ours hangs below our root qdisc (classes carry its major, the stages and the classifier sit
    under it), so a device without such a qdisc has nothing of ours.

    Raises:
        NetnsGone: the namespace is gone.
    """
    try:
        return visit_netns(netns_path, _devices_with_ours_here)
    except FileNotFoundError as e:
        raise NetnsGone(f"network namespace {netns_path} is gone") from e


def _devices_with_ours_here() -> list[str]:
    indexes = {q.ifindex for q in tcwire.dump_qdiscs_here() if ours(q.handle) or ours(q.parent)}
    if not indexes:
        return []
    names = dict(socket.if_nameindex())
    return sorted({names[i] for i in indexes if i in names})


def remove_ours(netns_path: str, device: str, store: OriginalStore | None = None) -> str:
    """Remove our tree from `device` and restore its original (the saved one, else the kernel's
    default). Returns "" when restored exactly, else what differs. Idempotent.
    """
    store = store or default_store()
    link = tcdev_link(netns_path)

    async def job(ipr: Any) -> str:
        ifindex, ifname = tcdev.find_device(device, "")
        objects = await tcdev.dump(ipr, ifindex)
        root = tcdev.root_of(objects)
        if root is None or not ours(root.handle):
            return ""
        note = await _restore(ipr, ifindex, store.load(link.key, ifname) or Original(""))
        store.drop(link.key, ifname)
        return note

    try:
        return link.run(job)
    finally:
        link.close()


def tcdev_link(netns_path: str) -> NetnsLink:
    """A short-lived link for one-off work (it must not pin the namespace): close it after use."""
    return NetnsLink(netns_path)


async def _list_ours(ipr: Any) -> list[Found]:
    out = []
    for index, name in sorted(socket.if_nameindex()):
        for o in await tcdev.dump(ipr, index):
            if ours(o.handle) or (o.what == "filter" and ours(o.parent)):
                out.append(Found(name, o.what, o.kind, _h(o.handle), _h(o.parent)))
    return out


def _h(handle: int) -> str:
    return f"{handle >> 16:x}:{handle & 0xFFFF:x}"
