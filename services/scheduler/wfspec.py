"""Workflow templates as the state machine (workflow.py) needs them: validation with messages that
name the template and field, the embedded-chaos key of each kind, one-shot detection, and
deterministic object names, so a restarted scheduler asks for the same objects again instead of
new ones (a repeated create of an existing child is a no-op).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import msgspec

from chaosbus.common.crd import ACCEPTED, CHAOS_KINDS, InvalidObject, decode_any, kinds
from chaosbus.common.crd.objects import API_VERSION
from chaosbus.common.crd.orchestration import Template, WorkflowSpec
from chaosbus.common.durations import parse_duration
from chaosbus.scheduler import branchexpr
from chaosbus.scheduler import statuscheck as sc

SERIAL, PARALLEL, SUSPEND, TASK = "Serial", "Parallel", "Suspend", "Task"
SCHEDULE, STATUS_CHECK = "Schedule", "StatusCheck"
# templateType -> the key its embedded spec lives under (Chaos Mesh's spelling, e.g. physicalmachineChaos)
CHAOS_KEYS = kinds.STEP_KEYS
FLOW_TYPES = (SERIAL, PARALLEL, SUSPEND, TASK, SCHEDULE, STATUS_CHECK)
# Chaos Mesh's webhook: template names are DNS-1123 subdomains (they become object names).
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class InvalidWorkflow(ValueError):
    """A workflow that cannot run; the message names the template and field."""


def decode(raw: Any) -> WorkflowSpec:
    try:
        return msgspec.convert(raw or {}, WorkflowSpec)
    except msgspec.ValidationError as e:
        raise InvalidWorkflow(f"spec: {e}") from None


def embedded(t: Template) -> dict[str, Any] | None:
    """The chaos spec a chaos template carries under its kind's key."""
    key = CHAOS_KEYS.get(t.template_type)
    if key is None:
        return None
    value: dict[str, Any] | None = msgspec.to_builtins(t).get(key)
    return value


def is_one_shot(t: Template) -> bool:
    return kinds.one_shot(t.template_type, embedded(t) or {})


def deadline_s(t: Template) -> float | None:
    return parse_duration(t.deadline) if t.deadline else None


def validate(spec: WorkflowSpec, namespace: str) -> dict[str, Template]:
    """The templates by name, or InvalidWorkflow naming the first problem."""
    if not spec.templates:
        raise InvalidWorkflow("spec.templates: at least one template is required")
    by_name: dict[str, Template] = {}
    for i, t in enumerate(spec.templates):
        where = f"spec.templates[{i}]"
        if not t.name:
            raise InvalidWorkflow(f"{where}.name: required")
        if len(t.name) > 253 or not DNS1123_SUBDOMAIN.fullmatch(t.name):
            raise InvalidWorkflow(
                f"{where}.name: {t.name!r} is not a DNS-1123 subdomain (lower-case letters, "
                "digits, '-' and '.', starting and ending with a letter or digit)"
            )
        if t.name in by_name:
            raise InvalidWorkflow(f"{where}.name: {t.name!r} is used by another template")
        by_name[t.name] = t
    if spec.entry not in by_name:
        raise InvalidWorkflow(f"spec.entry: {spec.entry!r} names no template")
    for i, t in enumerate(spec.templates):
        _check_template(t, f"spec.templates[{i}] ({t.name})", by_name, namespace)
    _check_acyclic(spec.entry, by_name, ())
    return by_name


def _check_template(t: Template, where: str, by_name: dict[str, Template], namespace: str) -> None:
    if t.template_type not in FLOW_TYPES and t.template_type not in CHAOS_KEYS:
        types = (*FLOW_TYPES, *CHAOS_KEYS)
        raise InvalidWorkflow(f"{where}.templateType: {t.template_type!r} is not one of {', '.join(types)}")
    _check_foreign_fields(t, where)
    try:
        d = deadline_s(t)
    except ValueError as e:
        raise InvalidWorkflow(f"{where}.deadline: {e}") from None
    if d is not None and d <= 0:
        raise InvalidWorkflow(f"{where}.deadline: must be positive, got {t.deadline!r}")
    if t.template_type in (SERIAL, PARALLEL):
        for child in t.children:
            if child not in by_name:
                raise InvalidWorkflow(f"{where}.children: {child!r} names no template")
    if t.template_type == SUSPEND and d is None:
        raise InvalidWorkflow(f"{where}.deadline: a Suspend template needs a deadline (how long to wait)")
    if t.template_type in CHAOS_KEYS:
        _check_chaos(t, where, d, namespace)
    if t.template_type == STATUS_CHECK:
        if t.status_check is None:
            raise InvalidWorkflow(f"{where}.statusCheck: required for a StatusCheck template")
        try:
            sc.validate(t.status_check)
        except sc.InvalidCheck as e:
            raise InvalidWorkflow(f"{where}.statusCheck: {str(e).removeprefix('spec.')}") from None
    if t.template_type == SCHEDULE and t.schedule is None:
        raise InvalidWorkflow(f"{where}.schedule: required for a Schedule template")
    if t.template_type == SCHEDULE and d is None:
        raise InvalidWorkflow(f"{where}.deadline: a Schedule step needs a deadline; without one it would never finish")
    if t.template_type == TASK:
        _check_task(t, where, by_name)


def _check_foreign_fields(t: Template, where: str) -> None:
    """As Chaos Mesh's webhook: a template carries no other type's fields (a `task` on a Serial
    step, a chaos spec on a Suspend, ... would otherwise be silently ignored).
    """
    raw = msgspec.to_builtins(t)
    own = {
        SERIAL: {"children"},
        PARALLEL: {"children"},
        TASK: {"task", "conditionalBranches"},
        SCHEDULE: {"schedule"},
    }.get(t.template_type, {CHAOS_KEYS.get(t.template_type, "")})
    for key in ("task", "children", "conditionalBranches", "schedule", *kinds.EMBEDDED_KEYS.values()):
        if raw.get(key) and key not in own:
            raise InvalidWorkflow(f"{where}.{key}: a {t.template_type} template cannot have {key}")


def _check_chaos(t: Template, where: str, d: float | None, namespace: str) -> None:
    key = CHAOS_KEYS[t.template_type]
    body = embedded(t)
    if body is None:
        raise InvalidWorkflow(f"{where}.{key}: required for a {t.template_type} template")
    if t.template_type in CHAOS_KINDS or t.template_type in ACCEPTED:
        try:
            decode_any(
                {
                    "apiVersion": API_VERSION,
                    "kind": t.template_type,
                    "metadata": {"name": t.name, "namespace": namespace},
                    "spec": body,
                },
                default_namespace=namespace,
            )
        except InvalidObject as e:
            raise InvalidWorkflow(f"{where}.{key}: {'; '.join(e.errors)}") from None
    if d is None and not is_one_shot(t) and not body.get("duration"):
        # Chaos Mesh accepts this and the step then never ends (CM#3846): refuse it up front.
        raise InvalidWorkflow(
            f"{where}.deadline: a {t.template_type} step needs a deadline (or a duration in "
            f"{key}); without one it would never finish"
        )


def _check_task(t: Template, where: str, by_name: dict[str, Template]) -> None:
    if not task_argv(t):
        raise InvalidWorkflow(f"{where}.task.container.command: a Task needs a command to run")
    for i, branch in enumerate(t.conditional_branches):
        if branch.target not in by_name:
            raise InvalidWorkflow(f"{where}.conditionalBranches[{i}].target: {branch.target!r} names no template")
        try:
            branchexpr.tokens(branch.expression)
        except branchexpr.ExpressionError as e:
            raise InvalidWorkflow(f"{where}.conditionalBranches[{i}].expression: {e}") from None


def task_argv(t: Template) -> list[str]:
    """The command a Task runs: the container's command then its args, as Kubernetes joins them."""
    container = (t.task.container if t.task else None) or {}
    command, args = container.get("command") or [], container.get("args") or []
    if not isinstance(command, list) or not isinstance(args, list):  # free-form input: no command then
        return []
    return [str(a) for a in command + args]


def next_templates(t: Template) -> list[str]:
    """The templates a node of `t` may start: its children, or a Task's branch targets."""
    return [*t.children, *(b.target for b in t.conditional_branches)]


def _check_acyclic(name: str, by_name: dict[str, Template], path: tuple[str, ...]) -> None:
    if name in path:
        raise InvalidWorkflow(f"spec.templates: {' -> '.join((*path, name))} is a cycle")
    for child in next_templates(by_name[name]):
        _check_acyclic(child, by_name, (*path, name))


def _suffix(*parts: str) -> str:
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
    return "".join(chr(ord("a") + int(c, 16) % 26) if c.isdigit() else c for c in digest[:5])


def node_name(workflow_uid: str, parent: str, template: str, index: int) -> str:
    """A WorkflowNode's name: `<template>-<5 chars>` as Chaos Mesh's generateName gives, but derived
    from the workflow, the parent and the position, so asking again names the same node.
    """
    return f"{template}-{_suffix(workflow_uid, parent, template, str(index))}"


def child_name(node: str) -> str:
    """The chaos, StatusCheck or Schedule object a node creates: `<node>-<5 chars>`."""
    return f"{node}-{_suffix(node, 'child')}"
