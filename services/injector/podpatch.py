"""pod-failure as data: from a Pod (the API's JSON as a dict) to the JSON patch that swaps every
container's and init container's image for the pause image, or puts the originals back. Pure: the
cluster injector's fault module reads the Pod, asks for the patch here and sends it.

The original images are kept on the Pod itself, in Chaos Mesh's annotation keys
(`chaos-mesh-<experiment>-pod-failure-<container>-normal-image`, `...-init-image` for init
containers, `<container>-normal` / `<container>-init` when that is longer than 63 characters), so
a restarted injector, or Chaos Mesh itself, can restore them.

Two pod-failure experiments on one Pod compose (Chaos Mesh's do not: the second one records the
pause image as "original" and restores it): an experiment that finds a container already paused by
another takes the original from the other's annotation, and recovering one experiment restores a
container only when no other experiment still holds it.

Every patch starts with `test` operations on the Pod's uid and on each container's name and image
as read, so a Pod replaced under the same name, or changed since it was read, is never patched
blindly: the server refuses the patch (422) and the caller reads again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ACTION = "pod-failure"
PREFIX = "chaos-mesh"
MAX_KEY = 63  # the name part of an annotation key
DEFAULT_PAUSE_IMAGE = "gcr.io/google-containers/pause:latest"
Pod = dict[str, Any]
Op = dict[str, Any]


@dataclass(frozen=True)
class Slot:
    """One container of the Pod spec: where it is and what it runs."""

    field: str  # containers | initContainers
    index: int
    name: str
    image: str

    @property
    def init(self) -> bool:
        return self.field == "initContainers"

    @property
    def path(self) -> str:
        return f"/spec/{self.field}/{self.index}"


def annotation_key(experiment: str, container: str, *, init: bool) -> str:
    """Chaos Mesh's key for a container's original image under one PodChaos."""
    suffixed = f"{container}-{'init' if init else 'normal'}"
    key = f"{PREFIX}-{experiment}-{ACTION}-{suffixed}-image"
    return suffixed if len(key) > MAX_KEY else key


def slots(pod: Pod) -> list[Slot]:
    spec = pod.get("spec") or {}
    return [
        Slot(f, i, str(c.get("name", "")), str(c.get("image", "")))
        for f in ("initContainers", "containers")
        for i, c in enumerate(spec.get(f) or [])
    ]


def pod_annotations(pod: Pod) -> dict[str, str]:
    return dict((pod.get("metadata") or {}).get("annotations") or {})


def holders(pod: Pod, slot: Slot) -> dict[str, str]:
    """Every pod-failure annotation (any experiment's) holding this container's original image."""
    suffixed = f"{slot.name}-{'init' if slot.init else 'normal'}"
    tail = f"-{ACTION}-{suffixed}-image"
    return {
        k: v
        for k, v in pod_annotations(pod).items()
        if k == suffixed or (k.startswith(f"{PREFIX}-") and k.endswith(tail))
    }


def apply_patch(pod: Pod, experiment: str, pause_image: str) -> list[Op]:
    """The patch that pauses every container for `experiment` ([] if it already is: idempotent,
    the first originals recorded are kept).
    """
    adds: dict[str, str] = {}
    images: list[tuple[Slot, str]] = []
    for slot in slots(pod):
        key = annotation_key(experiment, slot.name, init=slot.init)
        held = holders(pod, slot)
        if key not in held:
            others = [v for v in held.values() if v != pause_image]
            original = others[0] if slot.image == pause_image and others else slot.image
            adds[key] = original
        if slot.image != pause_image:
            images.append((slot, pause_image))
    if not adds and not images:
        return []
    return [*_guards(pod, [s for s, _ in images]), *_annotation_adds(pod, adds), *_image_ops(images)]


def recover_patch(pod: Pod, experiment: str) -> list[Op]:
    """The patch that gives back what `experiment` paused ([] if nothing of it is left). A container
    another experiment still pauses keeps the pause image; only this experiment's keys go.
    """
    removes: list[str] = []
    images: list[tuple[Slot, str]] = []
    for slot in slots(pod):
        key = annotation_key(experiment, slot.name, init=slot.init)
        held = holders(pod, slot)
        if key not in held:
            continue
        if key not in removes:
            removes.append(key)
        if len(held) == 1 and slot.image != held[key]:
            images.append((slot, held[key]))
    if not removes:
        return []
    ops = [*_guards(pod, [s for s, _ in images]), *_image_ops(images)]
    return ops + [{"op": "remove", "path": f"/metadata/annotations/{_escape(k)}"} for k in removes]


def paused(pod: Pod, pause_image: str) -> list[str]:
    """Names of the containers currently running the pause image (for messages)."""
    return [s.name for s in slots(pod) if s.image == pause_image]


def _guards(pod: Pod, touched: list[Slot]) -> list[Op]:
    uid = (pod.get("metadata") or {}).get("uid", "")
    ops: list[Op] = [{"op": "test", "path": "/metadata/uid", "value": uid}]
    for s in touched:
        ops.append({"op": "test", "path": f"{s.path}/name", "value": s.name})
        ops.append({"op": "test", "path": f"{s.path}/image", "value": s.image})
    return ops


def _annotation_adds(pod: Pod, adds: dict[str, str]) -> list[Op]:
    if not adds:
        return []
    if not (pod.get("metadata") or {}).get("annotations"):
        return [{"op": "add", "path": "/metadata/annotations", "value": {**pod_annotations(pod), **adds}}]
    return [{"op": "add", "path": f"/metadata/annotations/{_escape(k)}", "value": v} for k, v in adds.items()]


def _image_ops(images: list[tuple[Slot, str]]) -> list[Op]:
    return [{"op": "replace", "path": f"{s.path}/image", "value": image} for s, image in images]


def _escape(key: str) -> str:
    """A JSON pointer token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")
