"""Every `chaos-mesh.org/v1alpha1` kind chaosbus serves a CRD for: the executable ones (CHAOS_KINDS)
and the ones it only accepts (ACCEPTED), with plural, scope, short names and spec model.

An accepted kind decodes and validates structurally and is stored unchanged; the recorder marks it
`Supported=False` (reason NotSupported) instead of running it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from chaosbus.common.crd import cloud, orchestration, podkinds
from chaosbus.common.crd.errors import InvalidObject, from_msgspec
from chaosbus.common.crd.objects import API_VERSION, CHAOS_KINDS, decode_object, plural_of


@dataclass(frozen=True)
class KindInfo:
    kind: str
    spec: type[msgspec.Struct]
    short_names: tuple[str, ...] = ()
    namespaced: bool = True
    experiment: bool = True  # has action/duration and Chaos Mesh's experiment status
    open_spec: bool = False  # unknown spec keys are kept (free-form blocks)

    @property
    def plural(self) -> str:
        return plural_of(self.kind)


_EXECUTABLE_SHORT = {"PodChaos": ("poc",), "NetworkChaos": ("nwc",), "HelloWorldChaos": ("hwc",)}
EXECUTABLE: dict[str, KindInfo] = {k: KindInfo(k, spec, _EXECUTABLE_SHORT.get(k, ())) for k, spec in
                                   CHAOS_KINDS.items()}

ACCEPTED: dict[str, KindInfo] = {i.kind: i for i in (
    KindInfo("StressChaos", podkinds.StressChaosSpec, ("strc",)),
    KindInfo("IOChaos", podkinds.IOChaosSpec, ("ioc",)),
    KindInfo("TimeChaos", podkinds.TimeChaosSpec, ("tmc",)),
    KindInfo("DNSChaos", podkinds.DNSChaosSpec, ("dnsc",)),
    KindInfo("HTTPChaos", podkinds.HTTPChaosSpec, ("httpc",)),
    KindInfo("JVMChaos", podkinds.JVMChaosSpec, ("jvmc",)),
    KindInfo("KernelChaos", podkinds.KernelChaosSpec, ("knc",)),
    KindInfo("BlockChaos", podkinds.BlockChaosSpec, ("blkc",)),
    KindInfo("AWSChaos", cloud.AWSChaosSpec, ("awsc",)),
    KindInfo("GCPChaos", cloud.GCPChaosSpec, ("gcpc",)),
    KindInfo("AzureChaos", cloud.AzureChaosSpec, ("azc",)),
    KindInfo("PhysicalMachineChaos", orchestration.PhysicalMachineChaosSpec, ("pmc",), open_spec=True),
    KindInfo("PhysicalMachine", orchestration.PhysicalMachineSpec, ("pm",), experiment=False),
    KindInfo("Schedule", orchestration.ScheduleSpec, ("sched",), experiment=False),
    KindInfo("Workflow", orchestration.WorkflowSpec, ("wf",), experiment=False),
    KindInfo("WorkflowNode", orchestration.WorkflowNodeSpec, ("wfn",), experiment=False),
    KindInfo("StatusCheck", orchestration.StatusCheckSpec, ("stck",), experiment=False),
    KindInfo("PodNetworkChaos", orchestration.OpenSpec, ("pnc",), experiment=False, open_spec=True),
    KindInfo("PodIOChaos", orchestration.OpenSpec, ("pioc",), experiment=False, open_spec=True),
    KindInfo("PodHttpChaos", orchestration.OpenSpec, ("phc",), experiment=False, open_spec=True),
    KindInfo("RemoteCluster", orchestration.OpenSpec, ("rcl",), namespaced=False, experiment=False,
             open_spec=True),
)}

ALL_KINDS: dict[str, KindInfo] = {**EXECUTABLE, **ACCEPTED}
# Chaos Mesh's 23 CRDs (HelloWorldChaos is chaosbus's tutorial kind on top).
CHAOS_MESH_KINDS = tuple(k for k in ALL_KINDS if k != "HelloWorldChaos")
# Cluster mode watches every namespaced kind; RemoteCluster is an install target, not a workload.
WATCHED_KINDS: tuple[str, ...] = tuple(k for k, i in ALL_KINDS.items() if i.namespaced)
# Kinds the scheduler runs itself (spawning chaos objects) rather than as experiments with targets.
ORCHESTRATED: tuple[str, ...] = ("Schedule", "Workflow", "WorkflowNode", "StatusCheck")
NOT_EXECUTED: tuple[str, ...] = tuple(k for k in WATCHED_KINDS if k not in CHAOS_KINDS and k not in ORCHESTRATED)


def decode_accepted(doc: dict[str, Any]) -> dict[str, Any]:
    """Check an object of an accepted (not executed) kind structurally; returns it unchanged."""
    kind = doc.get("kind")
    info = ACCEPTED.get(str(kind))
    if info is None:
        raise InvalidObject([f"kind: unknown kind {kind!r}"])
    if doc.get("apiVersion") != API_VERSION:
        raise InvalidObject([f"apiVersion: expected {API_VERSION}, got {doc.get('apiVersion')!r}"])
    if not (doc.get("metadata") or {}).get("name"):
        raise InvalidObject(["metadata.name: required"])
    try:
        spec = msgspec.convert(doc.get("spec") or {}, info.spec)
    except msgspec.ValidationError as e:
        raise from_msgspec(e, "spec") from None
    if isinstance(spec, orchestration.ScheduleSpec):
        from chaosbus.common.crd import schedule

        if found := schedule.problems(spec):
            raise InvalidObject(found)
    return doc


def decode_any(doc: dict[str, Any], *, default_namespace: str = "default") -> dict[str, Any]:
    """Any chaos-mesh.org kind as it would be admitted: executable kinds fully (defaults and
    validation), accepted kinds structurally. Returns the object as plain data.
    """
    if doc.get("kind") in CHAOS_KINDS:
        from chaosbus.common.crd.objects import encode_object

        return encode_object(decode_object(doc, default_namespace=default_namespace))
    return decode_accepted(doc)
