"""The subset of Kubernetes ObjectMeta chaosbus reads and writes."""

from __future__ import annotations

import msgspec


class ObjectMeta(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """metadata: identity, versioning, labels, annotations, finalizers, deletion."""

    name: str = ""
    namespace: str = ""
    generate_name: str = ""
    uid: str = ""
    generation: int = 0
    resource_version: str = ""
    creation_timestamp: str = ""
    deletion_timestamp: str | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    finalizers: list[str] = []
    owner_references: list[dict[str, object]] = []


PAUSE_ANNOTATION = "experiment.chaos-mesh.org/pause"
CLEAN_FINALIZER_ANNOTATION = "chaos-mesh.chaos-mesh.org/cleanFinalizer"
RECORDS_FINALIZER = "chaos-mesh/records"
INJECT_ANNOTATION = "chaos-mesh.org/inject"


def is_paused(meta: ObjectMeta) -> bool:
    """Only the literal string "true" pauses, as in Chaos Mesh."""
    return meta.annotations.get(PAUSE_ANNOTATION) == "true"
