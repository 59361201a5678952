"""Chaos Mesh's experiment status shape: conditions, desiredPhase, containerRecords with events."""

from __future__ import annotations

import msgspec

# Record phases, spelled exactly as Chaos Mesh writes them.
NOT_INJECTED = "Not Injected"
INJECTED = "Injected"
NOT_INJECTED_WAIT = "Not Injected/Wait"
INJECTED_WAIT = "Injected/Wait"

RUN = "Run"
STOP = "Stop"

CONDITION_TYPES = ("Selected", "AllInjected", "AllRecovered", "Paused")


class Condition(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Chaos Mesh writes type/status (reason always empty); chaosbus adds a reason and message
    where there is something to say, e.g. why selection failed.
    """

    type: str
    status: str
    reason: str = ""
    message: str = ""


class RecordEvent(msgspec.Struct, omit_defaults=True, kw_only=True):
    type: str  # Succeeded | Failed
    operation: str  # Apply | Recover
    timestamp: str
    message: str = ""


class Record(msgspec.Struct, rename="camel", kw_only=True):
    id: str
    selector_key: str
    phase: str = NOT_INJECTED
    injected_count: int = 0
    recovered_count: int = 0
    events: list[RecordEvent] = []


class ExperimentStatus(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    desired_phase: str = ""
    container_records: list[Record] | None = None


class ChaosStatus(msgspec.Struct, kw_only=True):
    conditions: list[Condition] = []
    experiment: ExperimentStatus = msgspec.field(default_factory=ExperimentStatus)
