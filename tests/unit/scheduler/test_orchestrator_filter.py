"""The orchestrator sees every object event (most are experiments' status writes) but keeps only
Workflow kinds and objects labelled as a workflow's members; the rest costs a metadata read.
"""

from __future__ import annotations

import msgspec

from chaosbus.common import messages as m
from chaosbus.scheduler import workflow as wf
from chaosbus.scheduler.orchestrator import Orchestrator


def event(name: str, labels: dict[str, str], records: int = 0) -> m.ObjectEvent:
    obj = {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "NetworkChaos",
        "metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}", "labels": labels},
        "spec": {"action": "partition", "mode": "all", "selector": {}},
        "status": {"experiment": {"containerRecords": [{"id": f"ns/p-{i}"} for i in range(records)]}},
    }
    return m.ObjectEvent(
        type="MODIFIED",
        kind="NetworkChaos",
        namespace="ns",
        name=name,
        uid=f"u-{name}",
        object=msgspec.Raw(msgspec.json.encode(obj)),
    )


def test_only_workflow_members_are_kept() -> None:
    orch = Orchestrator()
    orch.ready = True
    orch.on_object(event("plain", {"app": "x"}, records=1000), 0.0)
    orch.on_object(event("member", {wf.LABEL_WORKFLOW: "wf"}), 0.0)
    assert set(orch.seen) == {("NetworkChaos", "ns", "member")}


def test_a_malformed_event_is_ignored() -> None:
    orch = Orchestrator()
    bad = m.ObjectEvent(
        type="MODIFIED", kind="NetworkChaos", namespace="ns", name="x", uid="u", object=msgspec.Raw(b'{"metadata": 3}')
    )
    out = orch.on_object(bad, 0.0)
    assert not out.writes and not orch.seen
