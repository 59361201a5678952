"""PodSelectorSpec, the mode/value pair and ContainerSelector, with Chaos Mesh's validation rules."""

from __future__ import annotations

import msgspec

from chaosbus.common.crd import bounds
from chaosbus.common.crd.errors import Problems

MODES = ("one", "all", "fixed", "fixed-percent", "random-max-percent")
EXPRESSION_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
FIELD_SELECTOR_KEYS = (
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)


class LabelSelectorRequirement(msgspec.Struct, omit_defaults=True, kw_only=True, forbid_unknown_fields=True):
    key: str
    operator: str
    values: list[str] = []


class PodSelectorSpec(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True, forbid_unknown_fields=True):
    """Which pods: every present field is AND-ed; `pods` (explicit list) overrides all others."""

    namespaces: list[str] = []
    nodes: list[str] = []
    pods: dict[str, list[str]] = {}
    node_selectors: dict[str, str] = {}
    field_selectors: dict[str, str] = {}
    label_selectors: dict[str, str] = {}
    annotation_selectors: dict[str, str] = {}
    expression_selectors: list[LabelSelectorRequirement] = []
    pod_phase_selectors: list[str] = []


class PodSelector(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True, forbid_unknown_fields=True):
    """A selector with its own mode/value (NetworkChaos `target`)."""

    selector: PodSelectorSpec = msgspec.field(default_factory=PodSelectorSpec)
    mode: str = ""
    value: str = ""


def default_namespaces(selector: PodSelectorSpec, namespace: str) -> PodSelectorSpec:
    """The webhook's default: an empty `namespaces` means the object's own namespace."""
    if selector.namespaces or selector.pods:
        return selector
    return msgspec.structs.replace(selector, namespaces=[namespace])


def validate_mode(problems: Problems, path: str, mode: str, value: str) -> None:
    """`mode` is required and one of MODES; `value` must fit the mode (webhook rules)."""
    if not mode:
        problems.add(f"{path}mode", f"required; expected one of {', '.join(MODES)}")
        return
    problems.one_of(f"{path}mode", mode, MODES)
    if mode == "fixed":
        n = _int_or_none(value)
        if n is None or n <= 0:
            problems.add(f"{path}value", f"mode fixed needs an integer greater than 0, got {bounds.show(value)}")
    elif mode in ("fixed-percent", "random-max-percent"):
        n = _int_or_none(value)
        if n is None or not 0 < n <= 100:
            problems.add(
                f"{path}value", f"mode {mode} needs an integer percentage in (0, 100], got {bounds.show(value)}"
            )


def validate_selector(problems: Problems, path: str, selector: PodSelectorSpec) -> None:
    for i, ns in enumerate(selector.namespaces):
        bounds.dns_label(problems, f"{path}.namespaces[{i}]", ns)
    for ns, names in selector.pods.items():
        bounds.dns_label(problems, f"{path}.pods", ns)
        for i, name in enumerate(names):
            bounds.dns_subdomain(problems, f"{path}.pods.{ns}[{i}]", name)
    for i, req in enumerate(selector.expression_selectors):
        p = f"{path}.expressionSelectors[{i}]"
        problems.one_of(f"{p}.operator", req.operator, EXPRESSION_OPERATORS)
        if req.operator in ("In", "NotIn") and not req.values:
            problems.add(f"{p}.values", f"operator {req.operator} needs at least one value")
        if req.operator in ("Exists", "DoesNotExist") and req.values:
            problems.add(f"{p}.values", f"operator {req.operator} takes no values")
    for key in selector.field_selectors:
        if key not in FIELD_SELECTOR_KEYS:
            problems.add(
                f"{path}.fieldSelectors",
                f"unsupported field {key!r}; expected one of " + ", ".join(FIELD_SELECTOR_KEYS),
            )
    for i, phase in enumerate(selector.pod_phase_selectors):
        if not phase.lstrip("!"):
            problems.add(f"{path}.podPhaseSelectors[{i}]", "empty phase")


def _int_or_none(value: str) -> int | None:
    """Parse like Go's strconv.Atoi: an optional sign and digits, nothing else."""
    text = value[1:] if value[:1] in "+-" else value
    if not text.isascii() or not text.isdigit() or len(text) > 18:  # beyond int64 is no count of pods
        return None
    return int(value)
