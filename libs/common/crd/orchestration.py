"""Spec models of the orchestration and inventory kinds: Schedule (executed by the scheduler),
and those chaosbus accepts but does not execute yet: Workflow, WorkflowNode, StatusCheck,
PhysicalMachineChaos, PhysicalMachine, the internal per-pod aggregates and RemoteCluster.
Embedded chaos specs and full corev1 Containers are kept as free-form objects (their own kinds
validate them when they are executed).
"""

from __future__ import annotations

from typing import Any

import msgspec


class _S(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True, forbid_unknown_fields=True):
    pass


EMBEDDED_CHAOS_KEYS = (
    "awsChaos",
    "azureChaos",
    "blockChaos",
    "dnsChaos",
    "gcpChaos",
    "httpChaos",
    "ioChaos",
    "jvmChaos",
    "kernelChaos",
    "networkChaos",
    "physicalmachineChaos",
    "podChaos",
    "stressChaos",
    "timeChaos",
    "helloWorldChaos",
    "golangChaos",
)


class _Embedded(_S):
    aws_chaos: dict[str, Any] | None = msgspec.field(default=None, name="awsChaos")
    azure_chaos: dict[str, Any] | None = msgspec.field(default=None, name="azureChaos")
    block_chaos: dict[str, Any] | None = msgspec.field(default=None, name="blockChaos")
    dns_chaos: dict[str, Any] | None = msgspec.field(default=None, name="dnsChaos")
    gcp_chaos: dict[str, Any] | None = msgspec.field(default=None, name="gcpChaos")
    http_chaos: dict[str, Any] | None = msgspec.field(default=None, name="httpChaos")
    io_chaos: dict[str, Any] | None = msgspec.field(default=None, name="ioChaos")
    jvm_chaos: dict[str, Any] | None = msgspec.field(default=None, name="jvmChaos")
    kernel_chaos: dict[str, Any] | None = msgspec.field(default=None, name="kernelChaos")
    network_chaos: dict[str, Any] | None = msgspec.field(default=None, name="networkChaos")
    physicalmachine_chaos: dict[str, Any] | None = msgspec.field(default=None, name="physicalmachineChaos")
    pod_chaos: dict[str, Any] | None = msgspec.field(default=None, name="podChaos")
    stress_chaos: dict[str, Any] | None = msgspec.field(default=None, name="stressChaos")
    time_chaos: dict[str, Any] | None = msgspec.field(default=None, name="timeChaos")
    # chaosbus's tutorial kind, so a Schedule can spawn something harmless (not in Chaos Mesh).
    hello_world_chaos: dict[str, Any] | None = msgspec.field(default=None, name="helloWorldChaos")
    # chaosbus's GolangChaos (designed for Chaos Mesh, never shipped there).
    golang_chaos: dict[str, Any] | None = msgspec.field(default=None, name="golangChaos")


class ScheduleSpec(_Embedded, kw_only=True):
    schedule: str = ""
    starting_deadline_seconds: int | None = None
    concurrency_policy: str = "Forbid"
    history_limit: int | None = None
    type: str = ""
    workflow: dict[str, Any] | None = None


class StatusCheckHTTPCriteria(_S):
    status_code: str = ""


class StatusCheckHTTP(_S):
    url: str = ""
    method: str = "GET"
    headers: dict[str, list[str]] = {}
    body: str = ""
    criteria: StatusCheckHTTPCriteria | None = None


class StatusCheckComparator(_S):
    criteria: str = ""  # ==, !=, <, >, <=, >=
    value: float = 0.0


class StatusCheckPrometheus(_S):
    """chaosbus's extension (Chaos Mesh has HTTP checks only), shaped like Litmus's promProbe."""

    endpoint: str = ""  # the Prometheus server, e.g. http://prometheus.monitoring:9090
    query: str = ""  # PromQL, evaluated as an instant query
    comparator: StatusCheckComparator | None = None


class StatusCheckSpec(_S):
    mode: str = "Synchronous"
    type: str = "HTTP"
    duration: str | None = None
    timeout_seconds: int = 1
    interval_seconds: int = 10
    failure_threshold: int = 3
    success_threshold: int = 1
    records_history_limit: int = 100
    http: StatusCheckHTTP | None = None
    prometheus: StatusCheckPrometheus | None = None


class ConditionalBranch(_S):
    target: str = ""
    expression: str = ""


class Task(_S):
    container: dict[str, Any] | None = None
    volumes: list[dict[str, Any]] = []


class ChaosOnlySchedule(_Embedded, kw_only=True):
    schedule: str = ""
    starting_deadline_seconds: int | None = None
    concurrency_policy: str = ""
    history_limit: int | None = None
    type: str = ""


class Template(_Embedded, kw_only=True):
    name: str = ""
    template_type: str = ""
    deadline: str | None = None
    children: list[str] = []
    task: Task | None = None
    conditional_branches: list[ConditionalBranch] = []
    schedule: ChaosOnlySchedule | None = None
    status_check: StatusCheckSpec | None = None
    abort_with_status_check: bool = False


class WorkflowSpec(_S):
    entry: str = ""
    templates: list[Template] = []


class WorkflowNodeSpec(_Embedded, kw_only=True):
    template_name: str = ""
    workflow_name: str = ""
    type: str = ""
    start_time: str | None = None
    deadline: str | None = None
    task: Task | None = None
    children: list[str] = []
    conditional_branches: list[ConditionalBranch] = []
    schedule: dict[str, Any] | None = None
    status_check: StatusCheckSpec | None = None
    abort_with_status_check: bool = False


class PhysicalMachineSelector(_S):
    namespaces: list[str] = []
    label_selectors: dict[str, str] = {}
    expression_selectors: list[dict[str, Any]] = []
    annotation_selectors: dict[str, str] = {}
    field_selectors: dict[str, str] = {}
    physical_machines: dict[str, list[str]] = {}


class PhysicalMachineChaosSpec(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """The action's parameters live under a key named after the action (`network-delay: {...}`);
    those blocks are free-form, so unknown keys are kept rather than refused.
    """

    action: str = ""
    address: list[str] = []
    selector: PhysicalMachineSelector | None = None
    mode: str = ""
    value: str = ""
    duration: str | None = None
    uid: str = ""
    remote_cluster: str = ""


class PhysicalMachineSpec(_S):
    address: str = ""


class OpenSpec(msgspec.Struct, kw_only=True):
    """Internal aggregates (PodNetworkChaos, PodIOChaos, PodHttpChaos) and RemoteCluster: kept as is."""
