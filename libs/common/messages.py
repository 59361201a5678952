"""Every message chaosbus puts on NATS, as msgspec Structs. Services never hand-encode bytes.

Evolution rules (msgspec): new fields get defaults; types never change; unknown fields are ignored.
Every message about one object starts with its header, `ObjectRef` (kind, namespace, name); one
about one experiment with `ExperimentRef` (that, its uid and generation); every per-target part
with `TargetRef` (the target id and its selector).
The headers are inherited, so their fields sit flat beside the message's own: the JSON is the one
these messages had before they shared a header, and what is kept (journal rows, the scheduler's
memory, the streams) decodes unchanged across an upgrade.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

# The fault specs live in faultspecs; messages stays the one import for every wire type.
from chaosbus.common.faultspecs import (
    IO,
    ContainerKill,
    Dns,
    Fault,
    FaultSpec,
    GoSqlError,
    HelloWorld,
    Http,
    HttpPatch,
    HttpReplace,
    NetemParams,
    Partition,
    PartitionRule,
    PodFailure,
    PodKill,
    Shaping,
    Stress,
    Stressor,
    Task,
    TbfParams,
    TimeSkew,
)
from chaosbus.common.wire import Message

# Bounds at decode, as Kubernetes bounds what they come from: a uid, a kind name, a namespace (a
# DNS label), an object name (a DNS subdomain), a target id (`ns/pod/container`).
Uid = Annotated[str, msgspec.Meta(max_length=128)]
KindName = Annotated[str, msgspec.Meta(max_length=63)]
NamespaceName = Annotated[str, msgspec.Meta(max_length=63)]
ObjectName = Annotated[str, msgspec.Meta(max_length=253)]
Generation = Annotated[int, msgspec.Meta(ge=0)]
TargetId = Annotated[str, msgspec.Meta(max_length=1024)]
SelectorKey = Annotated[str, msgspec.Meta(max_length=253)]


class ObjectRef(Message, kw_only=True, frozen=True):
    """The header of every message about one object: its kind, namespace and name."""

    kind: KindName
    namespace: NamespaceName
    name: ObjectName


class ExperimentRef(ObjectRef, kw_only=True, frozen=True):
    """The header of every message about one experiment: which object, at which generation."""

    experiment_uid: Uid
    generation: Generation

    @property
    def ref(self) -> ExperimentRef:
        """The header alone (a message compares, logs or keys by it)."""
        return ExperimentRef(
            experiment_uid=self.experiment_uid,
            generation=self.generation,
            kind=self.kind,
            namespace=self.namespace,
            name=self.name,
        )

    @property
    def experiment(self) -> str:
        """`namespace/name`, as logs name an experiment."""
        return f"{self.namespace}/{self.name}"


class TargetRef(Message, kw_only=True, frozen=True):
    """The header of every per-target part: the status record id (`ns/pod` or `ns/pod/container`)
    and which of the experiment's selectors chose it (`.`: the main one).
    """

    target_id: TargetId
    selector_key: SelectorKey = "."


# --- watcher -> everyone: object events and the target projection ---------------------------


class ObjectEvent(ObjectRef, kw_only=True, frozen=True):
    """chaos.obj.<kind>.<namespace>.<name>: an experiment object changed (full object inside)."""

    type: Literal["ADDED", "MODIFIED", "DELETED"]
    uid: str
    generation: int = 0
    resource_version: str = ""
    object: msgspec.Raw = msgspec.Raw(b"{}")
    # The object was larger than NATS carries (bytes): `object` holds only its metadata.
    too_large: int = 0
    # Only the object's status changed (published on `subjects.status_subject`); a DELETED one is
    # the tombstone that replaces the object's last status event, carrying only its identity.
    status_only: bool = False


class ContainerRef(Message, kw_only=True, frozen=True):
    name: str
    container_id: str = ""  # runtime-prefixed: process://, containerd://, cri-o://, docker://
    ready: bool = False
    restart_count: int = 0


class TargetPod(Message, kw_only=True, frozen=True):
    """KV targets/pod.<ns>.<name>: what selection and injection need to know about a pod."""

    uid: str
    namespace: str
    name: str
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    node: str = ""
    pod_ip: str = ""
    phase: str = "Pending"
    host_network: bool = False
    restart_policy: str = "Always"
    scheduler_name: str = "default-scheduler"
    service_account: str = "default"
    nominated_node: str = ""
    containers: list[ContainerRef] = []
    deleting: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class TargetNamespace(Message, kw_only=True, frozen=True):
    """KV targets/namespace.<name>."""

    name: str
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class TargetNode(Message, kw_only=True, frozen=True):
    """KV targets/node.<name>."""

    name: str
    labels: dict[str, str] = {}


class AddressLease(Message, kw_only=True, frozen=True):
    """KV ipam/<a>_<b>_<c>_<d>: the local process pod an address is leased to."""

    pod: str  # <namespace>/<name>


# --- scheduler -> injector: one batched command per node --------------------------------------


class TargetAction(TargetRef, kw_only=True, frozen=True):
    op: Literal["apply", "recover"]
    pod_uid: str = ""
    namespace: str = ""
    pod_name: str = ""
    container_ids: list[str] = []
    fault: Fault


class NodeCommand(ExperimentRef, kw_only=True, frozen=True):
    """chaos.cmd.<node>: everything one experiment wants from one node, in one message."""

    command_id: str
    node: str
    issued_at: float
    deadline: float | None = None
    actions: list[TargetAction] = []
    # Peer lists shared by the actions' faults, sent once (commands.py): name -> pod IPs.
    peer_sets: dict[str, list[str]] = {}
    # The node's lease, sent with the first apply for that node instead of ahead of it, under the
    # command's own signature and sequence (one message, one check, one journal write per apply).
    # A node honours it like one on chaos.lease.<node> only if it is newer than the last it took.
    lease: NodeLease | None = None


# --- injector -> scheduler, recorder: per-target results --------------------------------------


class TargetResult(TargetRef, kw_only=True, frozen=True):
    op: Literal["apply", "recover"]
    ok: bool
    message: str = ""
    retryable: bool = True
    at: float = 0.0
    exit_code: int | None = None  # a task's exit code (faults that run a command)
    stdout: str = ""  # a task's stdout, capped


class ResultBatch(ExperimentRef, kw_only=True, frozen=True):
    """chaos.result.<node>.<uid>: the outcome of one NodeCommand on `node` (the subject's node)."""

    command_id: str
    node: str
    results: list[TargetResult] = []


# --- scheduler -> recorder: desired phase and selection --------------------------------------


class RecordRef(Message, kw_only=True, frozen=True):
    id: str
    selector_key: str = "."
    node: str = ""  # the injector whose results may change this record ("": not known, any)


class ExperimentDecision(ExperimentRef, kw_only=True, frozen=True):
    """chaos.phase.<uid>: the scheduler's view of one experiment, self-contained (last one wins)."""

    desired_phase: Literal["Run", "Stop"]
    records: list[RecordRef] | None = None  # None: selection has not happened or failed
    selection_error: str = ""
    paused: bool = False
    deleting: bool = False
    at: float = 0.0
    target_id: str = ""  # unused: decisions are per experiment
    # Why the scheduler cannot run this experiment (a value it could not plan, a command NATS would
    # not carry): the experiment is Failed with this reason; "" once it runs again.
    failure: str = ""


# --- scheduler -> recorder: objects the scheduler decides (Schedule children, orchestration status)


class ObjectWrite(ObjectRef, kw_only=True, frozen=True):
    """chaos.write.<kind>.<namespace>.<name>: one change to one object that the scheduler decides and
    the recorder (the only writer of objects) carries out. Idempotent by design:

    * `create`: `object` is the whole object; an existing object with the same spec, labels and
      owners counts as created;
    * `delete`: only while the stored object still has `uid` (a same-named successor is spared);
    * `status`: `object` is a JSON merge patch (RFC 7386) of `.status`, applied only to `uid`;
    * `annotate`: set (value) or remove (null) metadata annotations of `uid`;
    * `event`: a Kubernetes Event about the object (`reason`; `object` is `{"type", "message"}`).
    """

    write_id: str  # also the JetStream dedup id
    op: Literal["create", "delete", "status", "annotate", "event"]
    uid: str = ""  # the object's uid for delete/status/annotate; "" = whatever object has the name
    object: msgspec.Raw = msgspec.Raw(b"null")
    annotations: dict[str, str | None] = {}
    reason: str = ""  # why, for logs and Kubernetes Events (Spawned, Forbid, MissSchedule, ...)
    at: float = 0.0


class ErrorReply(Message, kw_only=True, frozen=True):
    """Reply to a request that could not be served; `field` names the offending input."""

    error: str
    field: str = ""


# --- the kill switch and the dead-man lease ---------------------------------------------------


class HaltState(Message, kw_only=True, frozen=True):
    """KV control/halt (stays set) and chaos.control.halt (broadcast): the global kill switch.

    While `halted`, every injector recovers every fault and refuses applies. Several sources may
    carry a state (the KV key, the subject, an injector's own journal): the highest KV revision
    wins, and a halt wins a tie. `at` is informational only (a client's clock orders nothing).
    """

    halted: bool
    reason: str = ""
    at: float = 0.0
    by: str = ""
    # The KV revision the state was written at: the order of kill-switch states (the key's copy
    # learns it from the entry; the broadcast carries it, signed once the put returned it).
    revision: int = 0


class Signed(Message, kw_only=True, frozen=True):
    """The envelope of every node command, lease and kill-switch state (libs/common/signing.py):
    `body`, a `Claims` document kept byte for byte as it was sent, signed with Ed25519 by the key
    whose id is `kid`. A receiver checks the signature before it decodes anything inside `body`.
    """

    kid: str
    sig: bytes  # base64 in JSON
    body: msgspec.Raw


class Claims(Message, kw_only=True, frozen=True):
    """What a signature covers: the message itself and when, where and how often it may be used."""

    aud: str  # what the message is for: the subject it was sent on (`control.halt` for the kill switch)
    iat: float  # issued at (the signer's clock)
    exp: float = 0.0  # refused from this time on; 0: never (kill-switch states, ordered by KV revision)
    seq: int  # per signer, strictly increasing (microseconds since the epoch, or one more)
    payload: msgspec.Raw


class NodeLease(Message, kw_only=True, frozen=True):
    """chaos.lease.<node> (core NATS): the control plane still holds these experiments on the node.

    Sent by the scheduler every `ttl_s / 3`. A fault without a duration whose experiment has not
    been listed in `held` for `ttl_s` is recovered by the node on its own (dead-man switch);
    experiments in `exempt` opted out (annotation `chaosbus.io/lease: "none"`).
    """

    node: str
    holder: str = ""
    issued_at: float = 0.0
    ttl_s: float = 15.0
    held: list[str] = []
    exempt: list[str] = []


class JournalSummary(ObjectRef, kw_only=True, frozen=True):
    """One experiment's open entries in a node's journal (faults in force or being applied)."""

    experiment_uid: str
    namespace: NamespaceName = ""
    name: ObjectName = ""
    kind: KindName = ""
    entries: int = 0


class NodeHealth(Message, kw_only=True, frozen=True):
    """chaos.health.<node> (core NATS): an injector's own state, sent every few seconds.

    Informational (the dashboard's node page): nothing acts on it, so it is neither signed nor
    kept; a node not heard from for a few intervals is shown as silent.
    """

    node: str
    at: float  # the injector's wall clock when sent
    interval_s: float = 2.0  # how often it is sent
    connected_since: float = 0.0
    halted: bool = False
    lease_ttl_s: float = 0.0
    lease_age_s: float = -1.0  # seconds since this node last heard its lease; -1: not yet
    open_entries: int = 0
    experiments: list[JournalSummary] = []


# --- the scheduler's own memory and its leader lease (KV `scheduler`) -------------------------


class TargetMemory(TargetRef, kw_only=True, frozen=True):
    """What the scheduler decided for one target and must not forget across a restart."""

    pod: TargetPod  # as selected: where a recover goes even when the pod has vanished since
    container: ContainerRef | None = None
    phase: str
    inflight: Literal["apply", "recover"] | None = None
    inflight_at: float = 0.0
    retry_at: float = 0.0
    attempts: int = 0
    permanent_error: str = ""
    uncertain: bool = False


class ExperimentMemory(ExperimentRef, kw_only=True, frozen=True):
    """KV scheduler/experiment.<uid>: one experiment's scheduler state, written when it changes.

    Preferred over the object's status on start (status is written later, by the recorder).
    Pause needs no bookkeeping of its own: it is the annotation, and duration counts from
    creation (Chaos Mesh), so `created_at` is the one timer anchor.
    """

    created_at: float
    targets: list[TargetMemory] | None = None  # None: not selected yet (or selection failed)
    selection_error: str = ""
    next_selection: float = 0.0


class LeaderLease(Message, kw_only=True, frozen=True):
    """KV scheduler/leader: which scheduler instance acts; taken and renewed by compare-and-set."""

    holder: str
    renewed_at: float
    ttl_s: float
    session: str = ""  # per process: tells a restarted holder from a twin running with the same id


# --- direct triggers over NATS (request/reply, chaos.trigger.*) -------------------------------


class TriggerApply(Message, kw_only=True, frozen=True):
    """chaos.trigger.apply: the experiment exactly as its Chaos Mesh custom resource, as JSON."""

    api_version: str = msgspec.field(name="apiVersion")
    kind: str
    metadata: dict[str, object]
    spec: dict[str, object] = {}


class TriggerRef(ObjectRef, kw_only=True, frozen=True):
    """chaos.trigger.get / chaos.trigger.recover: one experiment by kind and name."""

    namespace: NamespaceName = "default"


class TriggerListRequest(Message, kw_only=True, frozen=True):
    """chaos.trigger.list: experiments, optionally of one namespace; finished ones only with `all`."""

    namespace: str = ""
    all: bool = False


class TriggerApplied(ObjectRef, kw_only=True, frozen=True):
    uid: str
    action: str  # created | configured | unchanged, as `kubectl apply` says


class TriggerStatus(ObjectRef, kw_only=True, frozen=True):
    """An experiment's status in Chaos Mesh's shape (as the recorder writes it; {} before it has)."""

    uid: str
    phase: str  # status.phase; "" until the recorder has written it
    status: dict[str, object]


class TriggerRecovered(ObjectRef, kw_only=True, frozen=True):
    outcome: str  # deleted | deleting (recovering its targets; gone once all are recovered)


class TriggerList(Message, kw_only=True, frozen=True):
    experiments: list[TriggerStatus]


__all__ = [
    "ContainerKill",
    "Dns",
    "Http",
    "HttpPatch",
    "HttpReplace",
    "ContainerRef",
    "ErrorReply",
    "ExperimentDecision",
    "ExperimentRef",
    "ExperimentMemory",
    "Fault",
    "FaultSpec",
    "GoSqlError",
    "HaltState",
    "HelloWorld",
    "IO",
    "TimeSkew",
    "LeaderLease",
    "Message",
    "NetemParams",
    "NodeCommand",
    "NodeLease",
    "ObjectEvent",
    "ObjectRef",
    "ObjectWrite",
    "Partition",
    "PartitionRule",
    "PodFailure",
    "PodKill",
    "RecordRef",
    "ResultBatch",
    "Shaping",
    "Stress",
    "Stressor",
    "TargetAction",
    "TargetMemory",
    "TargetNamespace",
    "TargetNode",
    "TargetPod",
    "TargetRef",
    "TargetResult",
    "Task",
    "TbfParams",
    "TriggerApplied",
    "TriggerApply",
    "TriggerList",
    "TriggerListRequest",
    "TriggerRecovered",
    "TriggerRef",
    "TriggerStatus",
]
