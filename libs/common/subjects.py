"""Every subject, stream, consumer and KV bucket chaosbus uses, with its message type and owner.

This table is the single source of truth: services build subjects with the functions below, the
bus declares streams and buckets from it, and a contract test checks one owner per thing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec

from chaosbus.common import messages as m
from chaosbus.common import natsjwt

M = TypeVar("M", bound=m.Message)
S = TypeVar("S", bound=msgspec.Struct)
V = TypeVar("V")

# The NATS identities (docs/security.md): each component connects as one of these, and nats-server
# allows each only what the records below grant it (libs/common/natsauth.py turns them into
# permissions). A node injector's identity is per node: `{node}` in a template is its node name.
# `cli` is the `chaosbus` commands and the pod supervisors they start (local mode's kubectl);
# `client` may only call the direct triggers. `dashboard` is the web UI (`chaosbus dashboard`): it
# reads, writes through the triggers, and pulls the kill switch only with the operator's key.
# `guard` is the SLO guard (`chaosbus guard`): it writes the kill switch and nothing else, signed
# with a key receivers accept for a halt only. `auth` (cluster mode) answers nats-server's auth
# callout: it gives each node injector its own node's user.
IDENTITIES = ("watcher", "scheduler", "recorder", "injector", "cli", "client", "dashboard", "guard", "auth")


@dataclass(frozen=True)
class Role:
    """One identity's part in a bucket or core subject; `subjects` narrows it (templates)."""

    identity: str
    note: str = ""
    subjects: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.identity} ({self.note})" if self.note else self.identity


@dataclass(frozen=True)
class Consumer:
    """Who reads a stream and how: a durable pull consumer (`durable`, `filter`: templates), or,
    without `durable`, ordered replays of the subjects in `filter` (default: the whole stream).
    """

    identity: str
    durable: str = ""
    filter: str = ""
    note: str = "ordered replay"

    def __str__(self) -> str:
        return self.durable or f"{self.identity} ({self.note})"


@dataclass(frozen=True)
class Stream(Generic[M]):
    """A JetStream stream: its subjects carry `message` and nothing else (the bus decodes what it
    reads as `message` and refuses to publish anything else, or anywhere else).
    """

    name: str
    subjects: tuple[str, ...]
    message: type[M]
    owner: str  # the only identity that publishes
    consumers: tuple[Consumer, ...]
    owner_subjects: tuple[str, ...] = ()  # what the owner may publish, when narrower (templates)
    max_msgs_per_subject: int = -1
    max_age_s: float = 0.0
    work_queue: bool = False
    purpose: str = ""

    def covers(self, subject: str) -> bool:
        """Whether every subject `subject` matches (a pattern or one subject) is this stream's."""
        return any(within(subject, s) for s in self.subjects)

    def pull_filter(self, durable: str) -> str:
        """The filter of `durable`, one of this stream's durable consumers in the table (its
        template filled in: `injector-n1` reads `chaos.cmd.n1`).
        """
        for c in self.consumers:
            params = _fill_params(c.durable, durable) if c.durable else None
            if params is not None:
                return (c.filter or self.subjects[0]).format(**params)
        raise LookupError(f"{durable!r} is no durable consumer of {self.name} in the subject table")


@dataclass(frozen=True)
class Keys(Generic[V]):
    """Keys of a bucket that match `pattern` (a subject pattern over the key's tokens: `*` one,
    `>` the rest) and what is stored under them: a msgspec Struct, or `bytes` for a value that is
    free-form by declaration. `sealed`: stored inside a signed envelope (signing.py), which its
    readers check before acting on it; the handle decodes what is inside without checking.
    """

    pattern: str
    value: type[V]
    shape: str  # the keys as people read them: `pod.<namespace>.<name>`
    sealed: bool = False


@dataclass(frozen=True)
class Bucket(Generic[V]):
    """A KV bucket: its keys (`keys`, the first pattern that matches a key decides its value type)
    and who writes and reads them. The bus's typed handle (`await bus.bucket(entry)`) encodes and
    decodes through this, and refuses a key no pattern covers or a value of another type.
    """

    name: str
    keys: tuple[Keys[Any], ...]
    owners: tuple[Role, ...]
    history: int = 1
    purpose: str = ""
    readers: tuple[Role, ...] = field(default_factory=tuple)
    raw: str = ""  # why its values are bytes, for a bucket that holds free-form documents

    def subject(self, key: str = ">") -> str:
        """The subject nats-server stores `key` (or a key pattern) under: what permissions name."""
        return f"$KV.{self.name}.{key}"

    def keys_of(self, key: str) -> Keys[Any] | None:
        """The declaration covering `key` (None: no pattern of this bucket matches it)."""
        return next((k for k in self.keys if within(key, k.pattern)), None)


OBJECTS = Stream(
    name="CHAOS_OBJ",
    subjects=("chaos.obj.>",),
    message=m.ObjectEvent,
    owner="watcher",
    # A change of status alone goes to chaos.obj.status.<kind>.<namespace>.<name>: the scheduler's
    # Schedules and Workflows and the dashboard read objects' status; the recorder (which writes it)
    # and the watcher's relist take chaos.obj.<kind>.<namespace>.<name> only.
    consumers=(
        Consumer("scheduler", note="ordered replay, status changes included"),
        Consumer("recorder", filter="chaos.obj.*.*.*", note="ordered replay, without status changes"),
        Consumer("watcher", filter="chaos.obj.*.*.*", note="last per subject, at start in cluster mode"),
        Consumer("dashboard", note="ordered replay, status changes included, shown live"),
    ),
    max_msgs_per_subject=1,
    purpose="experiment object events; the last event per object is kept, so a reader can rebuild state",
)
COMMANDS = Stream(
    name="CHAOS_CMD",
    subjects=("chaos.cmd.*",),
    message=m.NodeCommand,
    owner="scheduler",
    consumers=(Consumer("injector", durable="injector-{node}", filter="chaos.cmd.{node}"),),
    work_queue=True,
    purpose="one batched command per node and experiment step; removed once the node acks it",
)
RESULTS = Stream(
    name="CHAOS_RESULT",
    subjects=("chaos.result.*.*",),
    message=m.ResultBatch,
    owner="injector",
    # A node injector publishes only under its own node: the subject says which node a result
    # comes from, and nats-server vouches for it (the recorder checks the rest).
    owner_subjects=("chaos.result.{node}.*",),
    consumers=(
        Consumer("recorder", durable="recorder", filter="chaos.result.*.*"),
        Consumer("scheduler", durable="scheduler-results", filter="chaos.result.*.*"),
    ),
    max_age_s=24 * 3600,
    purpose="per-target outcome of each command, per node (chaos.result.<node>.<experiment uid>)",
)
DECISIONS = Stream(
    name="CHAOS_PHASE",
    subjects=("chaos.phase.*",),
    message=m.ExperimentDecision,
    owner="scheduler",
    consumers=(
        Consumer("recorder", durable="recorder-phase", filter="chaos.phase.*"),
        Consumer("recorder", note="an experiment's last decision, for results that come before it"),
    ),
    max_msgs_per_subject=1,
    purpose="desired phase and selected records per experiment (self-contained, last wins)",
)
WRITES = Stream(
    name="CHAOS_WRITE",
    subjects=("chaos.write.>",),
    message=m.ObjectWrite,
    owner="scheduler",
    consumers=(Consumer("recorder", durable="recorder-writes", filter="chaos.write.>"),),
    work_queue=True,
    purpose="objects the scheduler decides (Schedule children, orchestration status), written by the recorder",
)
STREAMS: tuple[Stream[Any], ...] = (OBJECTS, COMMANDS, RESULTS, DECISIONS, WRITES)
OBJECT_EVENTS = OBJECTS.subjects[0]  # every object event, status changes included: what the scheduler replays
# Objects created, deleted, or changed in more than their status: what the recorder replays.
OBJECT_CHANGES = "chaos.obj.*.*.*"

OBJECT_STORE: Bucket[bytes] = Bucket(
    name="objects",
    keys=(Keys(">", bytes, "<Kind>.<namespace>.<name>"),),
    raw="the Kubernetes-shaped object as JSON (crd.ChaosObject, Pod, Namespace, Event, Node)",
    owners=(
        Role("cli", "spec, metadata; pod supervisor: Pods"),
        Role("recorder", "status, finalizers"),
        Role("scheduler", "triggers: apply, recover"),
    ),
    readers=(Role("watcher"), Role("dashboard", "Events, Pods (local mode)")),
    purpose="local mode's API server: the objects users apply",
)
TargetValue = m.TargetPod | m.TargetNamespace | m.TargetNode
TARGETS: Bucket[TargetValue] = Bucket(
    name="targets",
    keys=(
        Keys("pod.>", m.TargetPod, "pod.<namespace>.<name>"),
        Keys("namespace.>", m.TargetNamespace, "namespace.<name>"),
        Keys("node.>", m.TargetNode, "node.<name>"),
    ),
    owners=(Role("watcher"),),
    readers=(Role("scheduler"),),
    purpose="the projection of pods, namespaces and nodes that selection needs",
)
IPAM: Bucket[m.AddressLease] = Bucket(
    name="ipam",
    keys=(Keys("*", m.AddressLease, "<a>_<b>_<c>_<d>"),),
    owners=(Role("cli", "pod supervisor"),),
    purpose="address leases of local process pods (create-only puts make allocation atomic)",
)
CONTROL: Bucket[m.HaltState] = Bucket(
    name="control",
    keys=(Keys("halt", m.HaltState, "halt", sealed=True),),
    owners=(
        Role("cli", "halt, resume"),
        Role("dashboard", "halt, resume with the operator key"),
        Role("guard", "halt only, with the guard key"),
    ),
    readers=(Role("injector"), Role("scheduler", "triggers refuse while halted")),
    purpose="the kill switch: stays set until `chaosbus resume`, so a restarted component stays halted",
)
SchedulerValue = m.ExperimentMemory | m.LeaderLease
SCHEDULER: Bucket[SchedulerValue] = Bucket(
    name="scheduler",
    keys=(
        Keys("experiment.*", m.ExperimentMemory, "experiment.<uid>"),
        Keys("leader", m.LeaderLease, "leader"),
    ),
    owners=(Role("scheduler"),),
    readers=(Role("scheduler"),),
    purpose="what the scheduler decided per experiment (survives kill -9) and the leader lease",
)
BUCKETS: tuple[Bucket[Any], ...] = (OBJECT_STORE, TARGETS, IPAM, CONTROL, SCHEDULER)
HALT_KEY = "halt"
LEADER_KEY = "leader"


@dataclass(frozen=True)
class CoreSubject(Generic[S]):
    """A core-NATS subject (no stream): at-most-once signals whose loss is covered by design."""

    pattern: str
    message: type[S]
    owner: str
    readers: tuple[Role, ...]  # none: nats-server itself sends
    purpose: str = ""
    reply: type[msgspec.Struct] | None = None  # request/reply subjects: the reply (or an ErrorReply)
    # Where the owner publishes when narrower than `pattern` (templates: a node its own subject).
    owner_subjects: tuple[str, ...] = ()
    # Identities that publish the same messages on the owner's behalf (the kill switch: the CLI,
    # the dashboard and the SLO guard run the signed path; receivers check the signature).
    also_published_by: tuple[str, ...] = ()

    def covers(self, subject: str) -> bool:
        return within(subject, self.pattern)


LEASES = CoreSubject(
    pattern="chaos.lease.*",
    message=m.NodeLease,
    owner="scheduler",
    readers=(Role("injector", subjects=("chaos.lease.{node}",)),),
    purpose="dead-man lease per node, renewed every ttl/3; a lost renewal is covered by the next one",
)
HALT = CoreSubject(
    pattern="chaos.control.halt",
    message=m.HaltState,
    owner="cli",
    also_published_by=("dashboard", "guard"),
    readers=(Role("injector"),),
    purpose="kill-switch broadcast; the KV key `control/halt` is the durable copy",
)
HEALTH = CoreSubject(
    pattern="chaos.health.*",
    message=m.NodeHealth,
    owner="injector",
    owner_subjects=("chaos.health.{node}",),
    readers=(Role("dashboard"),),
    purpose="each injector's state every few seconds (lease, halt, open journal entries), shown by the dashboard",
)
# They send the requests.
TRIGGER_READERS = (Role("cli"), Role("client", "direct triggers"), Role("dashboard", "writes from the web UI"))
TRIGGER_APPLY = CoreSubject(
    pattern="chaos.trigger.apply",
    message=m.TriggerApply,
    reply=m.TriggerApplied,
    owner="scheduler",
    readers=TRIGGER_READERS,
    purpose="apply an experiment given as its custom resource in JSON (local mode)",
)
TRIGGER_GET = CoreSubject(
    pattern="chaos.trigger.get",
    message=m.TriggerRef,
    reply=m.TriggerStatus,
    owner="scheduler",
    readers=TRIGGER_READERS,
    purpose="an experiment's status in Chaos Mesh's shape",
)
TRIGGER_RECOVER = CoreSubject(
    pattern="chaos.trigger.recover",
    message=m.TriggerRef,
    reply=m.TriggerRecovered,
    owner="scheduler",
    readers=TRIGGER_READERS,
    purpose="recover an experiment by deleting it (its finalizer waits for recovery)",
)
TRIGGER_LIST = CoreSubject(
    pattern="chaos.trigger.list",
    message=m.TriggerListRequest,
    reply=m.TriggerList,
    owner="scheduler",
    readers=TRIGGER_READERS,
    purpose="experiments that are not finished, with their phase",
)
TRIGGERS = (TRIGGER_APPLY, TRIGGER_GET, TRIGGER_RECOVER, TRIGGER_LIST)
TRIGGER_QUEUE = "scheduler"  # only the leader subscribes; the queue group keeps it to one reply anyway
AUTH_CALLOUT = CoreSubject(
    pattern="$SYS.REQ.USER.AUTH",
    message=natsjwt.AuthorizationRequestClaims,
    reply=natsjwt.AuthorizationResponseClaims,
    owner="auth",
    readers=(),
    purpose="cluster mode: nats-server asks who a node injector's connection is (signed NATS JWTs both ways)",
)
CORE_SUBJECTS: tuple[CoreSubject[Any], ...] = (LEASES, HALT, HEALTH, *TRIGGERS, AUTH_CALLOUT)

_TOKEN_BAD = re.compile(r"[^A-Za-z0-9_-]")
_PARAM = re.compile(r"\{(\w+)\}")


def within(subject: str, pattern: str) -> bool:
    """Whether every subject matched by `subject` (itself a subject or a pattern: `*` one token,
    `>` the rest) also matches `pattern`.
    """
    have, want = subject.split("."), pattern.split(".")
    for i, w in enumerate(want):
        if w == ">":
            return len(have) > i
        if i >= len(have) or have[i] == ">" or (w != "*" and (have[i] == "*" or have[i] != w)):
            return False
    return len(have) == len(want)


def check(entry: Stream[Any] | CoreSubject[Any], subject: str, msg: msgspec.Struct | None = None) -> None:
    """A message goes only where this table says its type travels: `subject` is one of `entry`'s
    and `msg` (when given) of its message type; ValueError or TypeError otherwise.
    """
    if not entry.covers(subject):
        name = entry.name if isinstance(entry, Stream) else entry.pattern
        raise ValueError(f"{subject!r} is not a subject of {name} in the subject table")
    if msg is not None and type(msg) is not entry.message:
        raise TypeError(f"{subject} carries {entry.message.__name__}, not {type(msg).__name__}")


def _fill_params(template: str, name: str) -> dict[str, str] | None:
    """The values that make `template` (`injector-{node}`) read `name`, None if none do."""
    parts = _PARAM.split(template)  # literal, param, literal, ...
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[A-Za-z0-9_-]+)" for i, p in enumerate(parts))
    found = re.fullmatch(regex, name)
    return None if found is None else found.groupdict()


def token(value: str) -> str:
    """Make a value safe as one subject token (node names may contain dots)."""
    return _TOKEN_BAD.sub("_", value) or "_"


def object_subject(kind: str, namespace: str, name: str) -> str:
    return f"chaos.obj.{token(kind)}.{token(namespace)}.{token(name)}"


def status_subject(kind: str, namespace: str, name: str) -> str:
    """Where a change of an object's status alone is published (one token more than
    `object_subject`, so `OBJECT_CHANGES` never matches it).
    """
    return f"chaos.obj.status.{token(kind)}.{token(namespace)}.{token(name)}"


def command_subject(node: str) -> str:
    return f"chaos.cmd.{token(node)}"


# The node name the cluster injector (`injector --cluster`) answers to: API-level faults (pod-kill,
# pod-failure) go to its command subject and its dead-man lease. No Kubernetes node name starts
# with `_` (node names are DNS subdomains), so it never collides with a node injector's.
CLUSTER_NODE = "_cluster"


def cluster_command_subject() -> str:
    """chaos.cmd._cluster: where the scheduler sends API-level faults in cluster mode."""
    return command_subject(CLUSTER_NODE)


def injector_consumer(node: str) -> str:
    return f"injector-{token(node)}"


def result_subject(node: str, experiment_uid: str) -> str:
    """Where `node`'s injector publishes its results for one experiment."""
    return f"chaos.result.{token(node)}.{token(experiment_uid)}"


def result_node(subject: str) -> str | None:
    """The node token of a result subject (None: not one)."""
    parts = subject.split(".")
    return parts[2] if len(parts) == 4 and parts[:2] == ["chaos", "result"] else None


def journaled_result_subject(node: str, subject: str) -> str:
    """Where a result journaled under `subject` is published now: one journaled before results were
    per node (`chaos.result.<uid>`, no stream's subject any more) goes under its node's.
    """
    if subject.startswith("chaos.result.") and result_node(subject) is None:
        return result_subject(node, subject.removeprefix("chaos.result."))
    return subject


def decision_subject(experiment_uid: str) -> str:
    return f"chaos.phase.{token(experiment_uid)}"


def write_subject(kind: str, namespace: str, name: str) -> str:
    return f"chaos.write.{token(kind)}.{token(namespace)}.{token(name)}"


def lease_subject(node: str) -> str:
    return f"chaos.lease.{token(node)}"


def health_subject(node: str) -> str:
    return f"chaos.health.{token(node)}"


HALT_SUBJECT = HALT.pattern


def object_key(kind: str, namespace: str, name: str) -> str:
    """Key in the `objects` bucket (names may hold dots: they become extra key tokens)."""
    return f"{kind}.{namespace or '_'}.{name}"


MEMORY_KEYS = "experiment.*"  # every experiment's memory in the `scheduler` bucket


def memory_key(experiment_uid: str) -> str:
    return f"experiment.{token(experiment_uid)}"


def target_pod_key(namespace: str, name: str) -> str:
    return f"pod.{namespace}.{name}"


def target_namespace_key(name: str) -> str:
    return f"namespace.{name}"


def target_node_key(name: str) -> str:
    return f"node.{name}"


def _value_name(k: Keys[Any]) -> str:
    return f"`{k.value.__name__}`" + (" (signed)" if k.sealed else "")


def markdown_table() -> str:
    """The subject table as Markdown, for docs/architecture.md (a contract test keeps them equal)."""
    rows = ["| what | name | subjects / keys | message | written by | read by |", "|---|---|---|---|---|---|"]
    for s in STREAMS:
        rows.append(
            f"| stream | `{s.name}` | `{'`, `'.join(s.subjects)}` | `{s.message.__name__}` | {s.owner} | "
            f"{', '.join(f'`{c}`' for c in s.consumers)} |"
        )
    for b in BUCKETS:
        shapes = ", ".join(k.shape for k in b.keys)
        values = f"bytes: {b.raw}" if b.raw else ", ".join(_value_name(k) for k in b.keys)
        rows.append(
            f"| KV bucket | `{b.name}` | `{shapes}` | {values} | {', '.join(map(str, b.owners))} | "
            f"{', '.join(map(str, b.readers)) or '-'} |"
        )
    for c in CORE_SUBJECTS:
        if c is AUTH_CALLOUT:
            rows.append(
                f"| request/reply | - | `{c.pattern}` | `{c.message.__name__}` → "
                f"`{natsjwt.AuthorizationResponseClaims.__name__}` (JWTs) | nats-server | `{c.owner}` |"
            )
            continue
        msg = f"`{c.message.__name__}`" + (f" → `{c.reply.__name__}` or `ErrorReply`" if c.reply else "")
        if c.reply:  # the clients write the requests; the owner reads them and replies
            rows.append(
                f"| request/reply | - | `{c.pattern}` | {msg} | {', '.join(map(str, c.readers))} | "
                f"`{c.owner} (leader replies)` |"
            )
            continue
        owners = ", ".join((c.owner, *c.also_published_by))
        rows.append(
            f"| core subject | - | `{c.pattern}` | {msg} | {owners} | "
            f"{', '.join(f'`{r.identity}`' for r in c.readers)} |"
        )
    return "\n".join(rows)
