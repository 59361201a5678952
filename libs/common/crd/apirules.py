"""What the API server itself checks of an experiment, with no webhook: enums, a required `mode`,
the `mode`/`value` pairing, durations, the Schedule's bounds (OpenAPI keywords and CEL
`x-kubernetes-validations` added to the generated CRDs), and Chaos Mesh's rule that an experiment's
spec never changes (a CEL transition rule). Built from the same constants the local validators use,
so the API server and local admission refuse the same documents with the same field named; the
rules only cover the executed kinds, whose local validation they mirror. Anything CEL cannot see
(a Schedule's embedded spec is free-form in the schema) is checked by local admission and, in
cluster mode, by the scheduler, which reports it in status. Pure.
"""

from __future__ import annotations

from typing import Any

from chaosbus.common.crd import bounds, networkchaos, podchaos, schedule, selectors

Schema = dict[str, Any]
PERCENT_MODES = ("fixed-percent", "random-max-percent")
ACTIONS: dict[str, tuple[str, ...]] = {"PodChaos": podchaos.ACTIONS, "NetworkChaos": networkchaos.ACTIONS}
IMMUTABLE = {
    "rule": "self == oldSelf",
    "reason": "FieldValueForbidden",
    "message": "is immutable, as in Chaos Mesh: delete the experiment and create it again",
}
# A Go-style integer (strconv.Atoi), bounded so the API server's CEL cost estimate stays small.
_INT = "'^[+-]?[0-9]{1,18}$'"


def _mode_rules(holder: Schema) -> None:
    """`mode` required and one of MODES; `value` an integer > 0 for fixed, a percentage otherwise."""
    props = holder["properties"]
    props["mode"]["enum"] = list(selectors.MODES)
    holder["required"] = sorted({*holder.get("required", []), "mode"})
    props["value"]["maxLength"] = 19
    holder.setdefault("x-kubernetes-validations", []).extend(
        [
            {
                "rule": (
                    f"self.mode != 'fixed' || (has(self.value) && self.value.matches({_INT}) && int(self.value) > 0)"
                ),
                "fieldPath": ".value",
                "reason": "FieldValueInvalid",
                "message": "mode fixed needs an integer greater than 0",
            },
            {
                "rule": f"!(self.mode in {list(PERCENT_MODES)}) || (has(self.value) && self.value.matches({_INT})"
                " && int(self.value) > 0 && int(self.value) <= 100)",
                "fieldPath": ".value",
                "reason": "FieldValueInvalid",
                "message": "this mode needs an integer percentage in (0, 100]",
            },
        ]
    )


def _duration_rule(field: Schema) -> None:
    cap = bounds.MAX_DURATION_S
    field["maxLength"] = 64
    field.setdefault("x-kubernetes-validations", []).append(
        {
            "rule": f"self == '' || (duration(self) >= duration('0s') && duration(self) <= duration('{cap}s'))",
            "reason": "FieldValueInvalid",
            "message": "a Go duration (e.g. 30s, 5m, 1h30m), not negative, at most 100 years",
        }
    )


def apply(kind: str, executed: bool, spec: Schema) -> Schema:
    """`spec` (the kind's structural spec schema) with the API-side rules added, in place."""
    props = spec.get("properties", {})
    if kind == "Schedule":
        props["concurrencyPolicy"]["enum"] = ["", *schedule.CONCURRENCY_POLICIES]
        props["historyLimit"]["minimum"] = 1
        return spec
    if not executed:
        return spec
    spec.setdefault("x-kubernetes-validations", []).append(IMMUTABLE)
    if "mode" in props:
        _mode_rules(spec)
    target = props.get("target", {})
    if "mode" in target.get("properties", {}):
        _mode_rules(target)
    if "duration" in props:
        _duration_rule(props["duration"])
    if kind in ACTIONS:
        props["action"]["enum"] = list(ACTIONS[kind])
        spec["required"] = sorted({*spec.get("required", []), "action"})
    if kind == "NetworkChaos":
        props["direction"]["enum"] = ["", *networkchaos.DIRECTIONS]
    return spec
