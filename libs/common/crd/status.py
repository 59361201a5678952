"""Chaos Mesh's experiment status shape: conditions, desiredPhase, containerRecords with events,
plus chaosbus's summary fields (`phase`, `injected`, `total`) for `kubectl get` columns.
"""

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

# chaosbus's experiment phase (status.phase), Chaos Mesh's dashboard "UI status" made explicit.
PHASE_INJECTING = "Injecting"
PHASE_RUNNING = "Running"
PHASE_PAUSED = "Paused"
PHASE_RECOVERING = "Recovering"
PHASE_FINISHED = "Finished"
PHASE_FAILED = "Failed"
PHASE_DELETING = "Deleting"
PHASES = (PHASE_INJECTING, PHASE_RUNNING, PHASE_PAUSED, PHASE_RECOVERING, PHASE_FINISHED, PHASE_FAILED, PHASE_DELETING)


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
    """Chaos Mesh's two fields, then chaosbus's extras, which Chaos Mesh's tools ignore: `phase`
    (one of PHASES), `injected` records out of `total`; unset (so not encoded) until the recorder
    computes them.
    """

    conditions: list[Condition] = []
    experiment: ExperimentStatus = msgspec.field(default_factory=ExperimentStatus)
    phase: str | msgspec.UnsetType = msgspec.UNSET
    injected: int | msgspec.UnsetType = msgspec.UNSET
    total: int | msgspec.UnsetType = msgspec.UNSET
