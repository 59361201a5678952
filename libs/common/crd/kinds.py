"""The kind descriptors: one declaration per `chaos-mesh.org/v1alpha1` kind carries everything the
services need to know about it (names, spec model, what chaosbus does with it, per action whether
it is one-shot, where it runs and what it targets, and how a spec becomes per-target faults).
Every other kind table (CHAOS_KINDS, the CLI's names, the one-shot rules, the watched kinds, the
Workflow template keys) is derived from `KINDS`.

The service-side halves register against names declared here: an injector's fault module registers
under one of a kind's `fault_tags` and declares its own one-shot-ness, original state and orphans
(services/injector/faults); tests/contract/test_kinds.py fails when a kind is registered halfway.
A kind's fault parameters are a FaultSpec of `faultspecs.Fault`, the tagged union commands carry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from chaosbus.common import faultplan
from chaosbus.common.crd import cloud, golangchaos, httpchaos, iochaos, orchestration, podkinds, stresschaos
from chaosbus.common.crd.dnschaos import DNSChaosSpec
from chaosbus.common.crd.helloworld import HelloWorldChaosSpec
from chaosbus.common.crd.networkchaos import NetworkChaosSpec
from chaosbus.common.crd.podchaos import PodChaosSpec
from chaosbus.common.crd.timechaos import TimeChaosSpec

Runner = Literal["node", "cluster"]
NODE: Runner = "node"  # the target's node injector (kernel, processes)
CLUSTER: Runner = "cluster"  # a Kubernetes API call: the cluster injector when one is deployed
Role = Literal["executed", "orchestrated", "accepted"]


@dataclass(frozen=True)
class Action:
    """What one action of a kind does to a target."""

    one_shot: bool = False  # injects once and never recovers (pod-kill): ignores pause and duration
    runs_on: Runner = NODE
    containers: bool = False  # one record per selected container instead of per pod
    all_containers: bool = False  # with containers: no names selects every container, not the first


# Builds a target's fault from the experiment (a ChaosObject), the target (faultplan.Selected) and
# every target of the experiment (see faultplan).
FaultPlanner = Callable[[Any, Any, Any], msgspec.Struct]


@dataclass(frozen=True)
class Kind:
    """One kind's descriptor."""

    kind: str
    spec: type[msgspec.Struct]
    role: Role = "accepted"
    short_names: tuple[str, ...] = ()  # served in the CRD (kubectl) and accepted by the CLI
    chaos_mesh_short_names: tuple[str, ...] = ()  # the ones Chaos Mesh's own CRDs declare
    aliases: tuple[str, ...] = ()  # further CLI names
    namespaced: bool = True
    experiment: bool = True  # has action/duration and Chaos Mesh's experiment status
    open_spec: bool = False  # unknown spec keys are kept (free-form blocks)
    chaos_mesh: bool = True  # one of Chaos Mesh's own 23 kinds (a Workflow step may be one)
    step: bool = False  # a kind of chaosbus's own that a Workflow step may be too
    embedded_key: str = ""  # its key inside a Schedule or Workflow template (`podChaos`)
    actions: Mapping[str, Action] = field(default_factory=dict)  # actions that differ from `default`
    default: Action = Action()
    network: bool = False  # its faults change the pod's network (hostNetwork pods are left out)
    fault_tags: tuple[str, ...] = ()  # the FaultSpec tags its node commands carry
    faults: FaultPlanner | None = None  # executed kinds: spec and target -> the target's FaultSpec

    @property
    def plural(self) -> str:
        return plural_of(self.kind)

    @property
    def executed(self) -> bool:
        return self.role == "executed"

    @property
    def names(self) -> tuple[str, ...]:
        """Every lower-case name the CLI accepts for this kind."""
        lower = self.kind.lower()
        extra = (lower + "es",) if lower.endswith("chaos") else ()
        out = (lower, self.plural, *extra, *self.short_names, *self.chaos_mesh_short_names, *self.aliases)
        return tuple(dict.fromkeys(out))

    def action(self, action: str) -> Action:
        return self.actions.get(action, self.default)


def plural_of(kind: str) -> str:
    """The resource name of a chaos-mesh.org kind (`networkchaos`, `schedules`, `podnetworkchaos`)."""
    lower = kind.lower()
    return lower if lower.endswith("chaos") else lower + "s"


def action_of(spec: Any) -> str:
    """The `action` of a spec (a Struct or a plain dict); "" for kinds without one."""
    value = spec.get("action", "") if isinstance(spec, dict) else getattr(spec, "action", "")
    return value if isinstance(value, str) else ""


_ONE_SHOT = Action(one_shot=True)
_API_LEVEL = Action(runs_on=CLUSTER)

KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    """Add a kind (at import for the built-in ones; tests may add their own).

    Raises:
        ValueError: the kind or one of its names is taken.
    """
    if kind.kind in KINDS:
        raise ValueError(f"kind {kind.kind!r} registered twice")
    taken = {n: k.kind for k in KINDS.values() for n in k.names}
    clash = [n for n in kind.names if n in taken]
    if clash:
        raise ValueError(f"kind {kind.kind!r}: name {clash[0]!r} is already {taken[clash[0]]}'s")
    KINDS[kind.kind] = kind
    _derive()
    return kind


def unregister(kind: str) -> None:
    """Remove a kind a test registered."""
    KINDS.pop(kind, None)
    _derive()


# Derived tables, updated in place by register(): modules that imported them see a new kind too.
CHAOS_KINDS: dict[str, type[Any]] = {}  # executed experiment kinds -> spec model
ACCEPTED: dict[str, Kind] = {}  # every kind that is not an executed experiment
ORCHESTRATED: dict[str, Kind] = {}  # run by the scheduler itself (spawning objects), not as experiments
NOT_EXECUTED: dict[str, Kind] = {}  # watched, stored, marked not supported
WATCHED_KINDS: dict[str, Kind] = {}  # namespaced kinds, watched in cluster mode
EMBEDDED_KEYS: dict[str, str] = {}  # kind -> its key in a Schedule's spec
STEP_KEYS: dict[str, str] = {}  # kind -> its key in a Workflow template (Chaos Mesh's kinds, and `step` ones)


def _derive() -> None:
    tables: list[tuple[dict[str, Any], Callable[[Kind], bool], Callable[[Kind], Any]]] = [
        (CHAOS_KINDS, lambda k: k.executed, lambda k: k.spec),
        (ACCEPTED, lambda k: not k.executed, lambda k: k),
        (ORCHESTRATED, lambda k: k.role == "orchestrated", lambda k: k),
        (NOT_EXECUTED, lambda k: k.role == "accepted" and k.namespaced, lambda k: k),
        (WATCHED_KINDS, lambda k: k.namespaced, lambda k: k),
        (EMBEDDED_KEYS, lambda k: bool(k.embedded_key), lambda k: k.embedded_key),
        (STEP_KEYS, lambda k: bool(k.embedded_key) and (k.chaos_mesh or k.step), lambda k: k.embedded_key),
    ]
    for table, wanted, value in tables:
        table.clear()
        table.update((name, value(k)) for name, k in KINDS.items() if wanted(k))


def one_shot(kind: str, spec: Any) -> bool:
    """Whether an experiment of `kind` with this spec (Struct or dict) injects once and never
    recovers; unknown kinds are not one-shot.
    """
    info = KINDS.get(kind)
    return info is not None and info.action(action_of(spec)).one_shot


def not_run(kind: str, spec: Any) -> str | None:
    """Why chaosbus does not run an object of `kind` with this spec (a Struct or a dict), for its
    status; None when it runs it. Objects aimed at a remote cluster never run on the local one.
    """
    info = KINDS.get(kind)
    if info is None or info.role == "accepted":
        return f"chaosbus accepts {kind} objects but does not execute them yet; nothing is injected"
    remote = spec.get("remoteCluster") if isinstance(spec, dict) else getattr(spec, "remote_cluster", "")
    if remote:
        return (
            f"spec.remoteCluster is {remote!r}: chaosbus does not run experiments on remote clusters; "
            "nothing is injected"
        )
    return None


def by_name(text: str) -> Kind | None:
    """The kind a CLI name means: `NetworkChaos`, `networkchaos`, `nwc`, `networkchaos.chaos-mesh.org`."""
    t = text.split(".", 1)[0].lower()
    return next((k for k in KINDS.values() if t in k.names), None)


def _register_all(kinds: Iterable[Kind]) -> None:
    for k in kinds:
        register(k)


# One line per kind. HelloWorldChaos (chaosbus's tutorial kind) and GolangChaos (designed for Chaos
# Mesh, never shipped there) are chaosbus's own on top of Chaos Mesh's 23.
_register_all(
    [
        Kind(
            "PodChaos",
            PodChaosSpec,
            "executed",
            ("poc",),
            embedded_key="podChaos",
            actions={
                "pod-kill": Action(one_shot=True, runs_on=CLUSTER),
                "pod-failure": _API_LEVEL,
                "container-kill": Action(one_shot=True, containers=True),
            },
            fault_tags=("pod-kill", "pod-failure", "container-kill"),
            faults=faultplan.podchaos,
        ),
        Kind(
            "NetworkChaos",
            NetworkChaosSpec,
            "executed",
            ("nwc",),
            embedded_key="networkChaos",
            network=True,
            fault_tags=("partition", "network-shaping"),
            faults=faultplan.networkchaos,
        ),
        Kind(
            "HelloWorldChaos",
            HelloWorldChaosSpec,
            "executed",
            ("hwc",),
            chaos_mesh=False,
            step=True,
            embedded_key="helloWorldChaos",
            default=Action(containers=True),
            fault_tags=("hello-world",),
            faults=faultplan.helloworldchaos,
        ),
        Kind(
            "StressChaos",
            stresschaos.StressChaosSpec,
            "executed",
            ("strc",),
            embedded_key="stressChaos",
            default=Action(containers=True),
            fault_tags=("stress",),
            faults=stresschaos.plan,
        ),
        Kind(
            "IOChaos",
            iochaos.IOChaosSpec,
            "executed",
            ("ioc",),
            embedded_key="ioChaos",
            default=Action(containers=True),
            fault_tags=("io",),
            faults=iochaos.plan,
        ),
        Kind(
            "TimeChaos",
            TimeChaosSpec,
            "executed",
            ("tmc",),
            embedded_key="timeChaos",
            default=Action(containers=True),
            fault_tags=("time-skew",),
            faults=faultplan.timechaos,
        ),
        Kind(
            "GolangChaos",
            golangchaos.GolangChaosSpec,
            "executed",
            ("goc",),
            chaos_mesh=False,
            step=True,
            embedded_key="golangChaos",
            default=Action(containers=True, all_containers=True),
            fault_tags=("go-sql-error",),
            faults=golangchaos.plan,
        ),
        Kind(
            "DNSChaos",
            DNSChaosSpec,
            "executed",
            ("dnsc",),
            embedded_key="dnsChaos",
            network=True,
            fault_tags=("dns",),
            faults=faultplan.dnschaos,
        ),
        Kind(
            "HTTPChaos",
            httpchaos.HTTPChaosSpec,
            "executed",
            ("httpc",),
            embedded_key="httpChaos",
            network=True,
            fault_tags=("http",),
            faults=httpchaos.plan,
        ),
        Kind("JVMChaos", podkinds.JVMChaosSpec, short_names=("jvmc",), embedded_key="jvmChaos"),
        Kind("KernelChaos", podkinds.KernelChaosSpec, short_names=("knc",), embedded_key="kernelChaos"),
        Kind("BlockChaos", podkinds.BlockChaosSpec, short_names=("blkc",), embedded_key="blockChaos"),
        Kind(
            "AWSChaos",
            cloud.AWSChaosSpec,
            short_names=("awsc",),
            embedded_key="awsChaos",
            actions={"ec2-restart": _ONE_SHOT},
        ),
        Kind(
            "GCPChaos",
            cloud.GCPChaosSpec,
            short_names=("gcpc",),
            embedded_key="gcpChaos",
            actions={"node-reset": _ONE_SHOT},
        ),
        Kind(
            "AzureChaos",
            cloud.AzureChaosSpec,
            short_names=("azc",),
            embedded_key="azureChaos",
            actions={"vm-restart": _ONE_SHOT},
        ),
        Kind(
            "PhysicalMachineChaos",
            orchestration.PhysicalMachineChaosSpec,
            short_names=("pmc",),
            open_spec=True,
            embedded_key="physicalmachineChaos",
        ),
        Kind("PhysicalMachine", orchestration.PhysicalMachineSpec, short_names=("pm",), experiment=False),
        Kind("Schedule", orchestration.ScheduleSpec, "orchestrated", ("sched",), experiment=False),
        Kind(
            "Workflow",
            orchestration.WorkflowSpec,
            "orchestrated",
            ("wf",),
            ("wf",),
            experiment=False,
            fault_tags=("task",),
        ),
        Kind("WorkflowNode", orchestration.WorkflowNodeSpec, "orchestrated", ("wfn",), ("wfn",), experiment=False),
        Kind("StatusCheck", orchestration.StatusCheckSpec, "orchestrated", ("stck",), experiment=False),
        Kind("PodNetworkChaos", orchestration.OpenSpec, short_names=("pnc",), experiment=False, open_spec=True),
        Kind("PodIOChaos", orchestration.OpenSpec, short_names=("pioc",), experiment=False, open_spec=True),
        Kind("PodHttpChaos", orchestration.OpenSpec, short_names=("phc",), experiment=False, open_spec=True),
        # An install target, not a workload: cluster-scoped, and not watched.
        Kind(
            "RemoteCluster",
            orchestration.OpenSpec,
            short_names=("rcl",),
            namespaced=False,
            experiment=False,
            open_spec=True,
        ),
    ]
)
