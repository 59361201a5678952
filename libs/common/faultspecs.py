"""The fault specs a node command carries: one tagged union (tag = the fault's name), so an
injector decodes exactly the fault it must perform. Re-exported by `messages`.
"""

from __future__ import annotations

from typing import Any, Literal

from chaosbus.common.wire import Message


class FaultSpec(Message, tag_field="fault", kw_only=True, frozen=True):
    """Base of the per-target fault parameters the injector executes."""


class PodKill(FaultSpec, tag="pod-kill", kw_only=True, frozen=True):
    grace_period: int = 0


class PodFailure(FaultSpec, tag="pod-failure", kw_only=True, frozen=True):
    """Make the pod's containers unavailable without deleting the pod."""


class ContainerKill(FaultSpec, tag="container-kill", kw_only=True, frozen=True):
    container_names: list[str] = []


class PartitionRule(Message, kw_only=True, frozen=True):
    """Drop packets of one chain: `output` to the peers, or `input` from the peers.

    No peers and no externals means every packet of that chain (except loopback).
    `external` entries are IPv4, CIDR or hostname with optional :port; the injector resolves names.
    """

    chain: Literal["input", "output"]
    peers: list[str] = []  # pod IPs
    external: list[str] = []
    peer_set: str = ""  # instead of peers: a name in the command's `peer_sets` (commands.py)


class Partition(FaultSpec, tag="partition", kw_only=True, frozen=True):
    device: str = ""
    rules: list[PartitionRule] = []


class NetemParams(Message, kw_only=True, frozen=True):
    """One netem qdisc: every non-nil delay/loss/duplicate/corrupt/rate block of a NetworkChaos merged,
    as Chaos Mesh does whatever the action. Percentages are 0-100; correlations too.
    """

    latency_ns: int = 0
    jitter_ns: int = 0
    delay_correlation: float = 0.0
    reorder: float = 0.0
    reorder_correlation: float = 0.0
    gap: int = 0
    loss: float = 0.0
    loss_correlation: float = 0.0
    duplicate: float = 0.0
    duplicate_correlation: float = 0.0
    corrupt: float = 0.0
    corrupt_correlation: float = 0.0
    rate: int = 0  # bytes per second; 0 = no netem rate limit


class TbfParams(Message, kw_only=True, frozen=True):
    """One tbf qdisc (NetworkChaos bandwidth). Rates in bytes per second, sizes in bytes."""

    rate: int
    limit: int
    buffer: int
    peakrate: int = 0  # with minburst; both or neither
    minburst: int = 0


class Shaping(FaultSpec, tag="network-shaping", kw_only=True, frozen=True):
    """NetworkChaos traffic shaping on ONE side: egress of `device` in the target's netns, limited to
    packets towards `peers` (pod IPs) and `external` (IPv4, CIDR or hostname, optional :port; names
    are resolved by the injector), or to every packet when `unfiltered`. No netem and no tbf means
    this side has nothing to do (e.g. the target side of direction `to`).
    """

    action: str = ""  # the NetworkChaos action, for messages
    device: str = ""  # "" = the interface that carries `pod_ip`
    pod_ip: str = ""
    netem: NetemParams | None = None
    tbf: TbfParams | None = None
    peers: list[str] = []
    external: list[str] = []
    unfiltered: bool = False
    peer_set: str = ""  # instead of peers: a name in the command's `peer_sets` (commands.py)


class HelloWorld(FaultSpec, tag="hello-world", kw_only=True, frozen=True):
    container_names: list[str] = []


class Dns(FaultSpec, tag="dns", kw_only=True, frozen=True):
    """DNSChaos on one pod: queries whose name matches one of `patterns` (Chaos Mesh's syntax; none
    = every name) get `error` (SERVFAIL), `random` (a random A; AAAA a fixed documentation address,
    as Chaos Mesh) or `static` (the given `addresses`); every other query goes to the resolver it
    was sent to.
    """

    action: Literal["error", "random", "static"] = "error"
    patterns: list[str] = []
    addresses: list[str] = []  # static: IPv4 and IPv6 literals


class HttpReplace(Message, kw_only=True, frozen=True):
    """HTTPChaos `replace`: what is set on a matched message (None / empty: left as it is)."""

    path: str | None = None
    method: str | None = None
    code: int | None = None
    body: bytes | None = None
    queries: dict[str, str] = {}
    headers: dict[str, str] = {}


class HttpPatch(Message, kw_only=True, frozen=True):
    """HTTPChaos `patch`: a JSON merge patch (RFC 7396) of the body, queries and headers appended."""

    body_json: str | None = None
    queries: list[list[str]] = []
    headers: list[list[str]] = []


class Http(FaultSpec, tag="http", kw_only=True, frozen=True):
    """HTTPChaos on one pod: HTTP/1 on TCP `port` (to the pod, and from it) goes through the node
    injector's proxy in the pod's netns; the messages that match `target` and the selectors get
    abort, delay, replace and patch, in that order; every other message passes unchanged.
    """

    target: Literal["Request", "Response"] = "Request"
    port: int = 0
    path: str | None = None  # glob: `*` any run of characters, `?` one
    method: str | None = None
    code: int | None = None
    request_headers: dict[str, str] = {}
    response_headers: dict[str, str] = {}
    abort: bool = False
    delay_ns: int = 0
    replace: HttpReplace | None = None
    patch: HttpPatch | None = None
    tls: bool = False  # the experiment asked for TLS, which the proxy does not do: refused per target


class TimeSkew(FaultSpec, tag="time-skew", kw_only=True, frozen=True):
    """TimeChaos on one target: add `offset_ns` to the clocks whose bit is set in `clock_mask`
    (bit n: clock id n) for every process of the selected containers."""

    offset_ns: int = 0
    clock_mask: int = 1
    container_names: list[str] = []


class IO(FaultSpec, tag="io", kw_only=True, frozen=True):
    """IOChaos on one target: one rule of the FUSE filesystem over `volume_path` in each selected
    container's mount namespace. `methods`: bit n = crd.iochaos.METHODS[n]; `attr_values`: the
    override's fields in crd.iochaos.ATTR_FIELDS order (times as sec, nsec), set where `attr_mask`'s
    bit is; `mistake_filling`: 0 zero, 1 random.
    """

    action: Literal["latency", "fault", "attrOverride", "mistake"] = "latency"
    volume_path: str = "/"
    path: str = ""
    methods: int = 0
    percent: int = 100
    delay_ns: int = 0
    errno: int = 0
    attr_mask: int = 0
    attr_values: list[int] = []
    mistake_filling: int = 0
    mistake_max_occurrences: int = 0
    mistake_max_length: int = 0
    container_names: list[str] = []


class GoSqlError(FaultSpec, tag="go-sql-error", kw_only=True, frozen=True):
    """GolangChaos sql-error on one target: `(*DB).Query` and `(*DB).QueryContext` of every Go
    process of the selected containers return an error until recovered or the deadline."""

    container_names: list[str] = []


# The most of a task's output one result carries, whatever `max_stdout` asks: results travel in
# NATS messages (1 MiB by default) together with the rest of their command's results.
MAX_STDOUT = 64 * 1024


class Task(FaultSpec, tag="task", kw_only=True, frozen=True):
    """A Workflow Task step: a node injector runs `argv` directly (no shell); the cluster injector
    runs `container` (the template's `task.container`, Kubernetes JSON) with `volumes` as a Pod
    owned by the WorkflowNode `workflow_node_uid`. Either way its exit code and the first
    `max_stdout` bytes of its output come back in the result.
    """

    argv: list[str] = []
    timeout_s: float = 60.0
    max_stdout: int = 4096
    container: dict[str, Any] = {}
    volumes: list[dict[str, Any]] = []
    workflow: str = ""  # the Workflow's name, for the Pod's chaos-mesh.org/workflow label
    workflow_node_uid: str = ""  # the Pod's ownerReference


class Stressor(Message, kw_only=True, frozen=True):
    """One stress-ng process: its arguments without the binary and the `--timeout` the injector adds."""

    name: str  # cpu, memory or stressng, for messages
    args: list[str]
    oom_score_adj: int | None = None


class Stress(FaultSpec, tag="stress", kw_only=True, frozen=True):
    """StressChaos on one target: stress-ng processes inside its cgroup and PID namespace."""

    stressors: list[Stressor] = []


Fault = (
    PodKill
    | PodFailure
    | ContainerKill
    | Partition
    | Shaping
    | HelloWorld
    | Task
    | Dns
    | Http
    | TimeSkew
    | Stress
    | IO
    | GoSqlError
)
