"""pod-failure planning (pure): Chaos Mesh's annotation keys, the JSON patch for apply and recover,
idempotence, two experiments on one Pod, and the guards that stop a blind patch.
"""

from __future__ import annotations

import copy
from typing import Any

from kubefake.patch import json_patch

from chaosbus.injector import podpatch

PAUSE = podpatch.DEFAULT_PAUSE_IMAGE


def pod(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "web-0", "namespace": "ns", "uid": "u-1"}
    if annotations is not None:
        meta["annotations"] = annotations
    return {
        "metadata": meta,
        "spec": {
            "initContainers": [{"name": "setup", "image": "busybox:1"}],
            "containers": [{"name": "main", "image": "nginx:1"}, {"name": "side", "image": "envoy:2"}],
        },
    }


def images(p: dict[str, Any]) -> list[str]:
    return [c["image"] for f in ("initContainers", "containers") for c in p["spec"][f]]


def test_keys_are_chaos_mesh_keys_with_its_63_character_fallback() -> None:
    assert podpatch.annotation_key("pf", "main", init=False) == "chaos-mesh-pf-pod-failure-main-normal-image"
    assert podpatch.annotation_key("pf", "setup", init=True) == "chaos-mesh-pf-pod-failure-setup-init-image"
    assert podpatch.annotation_key("x" * 40, "main", init=False) == "main-normal"
    assert podpatch.annotation_key("x" * 40, "setup", init=True) == "setup-init"


def test_apply_pauses_every_container_and_keeps_originals_in_annotations() -> None:
    before = pod()
    after = json_patch(before, podpatch.apply_patch(before, "pf", PAUSE))
    assert images(after) == [PAUSE] * 3
    assert after["metadata"]["annotations"] == {
        "chaos-mesh-pf-pod-failure-setup-init-image": "busybox:1",
        "chaos-mesh-pf-pod-failure-main-normal-image": "nginx:1",
        "chaos-mesh-pf-pod-failure-side-normal-image": "envoy:2",
    }
    assert podpatch.apply_patch(after, "pf", PAUSE) == []  # applied twice: nothing more to do


def test_apply_to_a_pod_with_annotations_adds_keys_one_by_one() -> None:
    before = pod({"team": "a"})
    after = json_patch(before, podpatch.apply_patch(before, "pf", PAUSE))
    assert after["metadata"]["annotations"]["team"] == "a"
    assert after["metadata"]["annotations"]["chaos-mesh-pf-pod-failure-main-normal-image"] == "nginx:1"


def test_reapply_after_a_partial_restore_keeps_the_first_originals() -> None:
    applied = json_patch(pod(), podpatch.apply_patch(pod(), "pf", PAUSE))
    applied["spec"]["containers"][0]["image"] = "nginx:1"  # someone put one image back
    again = json_patch(applied, podpatch.apply_patch(applied, "pf", PAUSE))
    assert images(again) == [PAUSE] * 3
    assert again["metadata"]["annotations"]["chaos-mesh-pf-pod-failure-main-normal-image"] == "nginx:1"


def test_recover_restores_exactly_and_removes_the_keys() -> None:
    before = pod({"team": "a"})
    applied = json_patch(before, podpatch.apply_patch(before, "pf", PAUSE))
    recovered = json_patch(applied, podpatch.recover_patch(applied, "pf"))
    assert recovered == before
    assert podpatch.recover_patch(recovered, "pf") == []


def test_two_experiments_compose_the_last_one_out_restores() -> None:
    before = pod()
    one = json_patch(before, podpatch.apply_patch(before, "a", PAUSE))
    two = json_patch(one, podpatch.apply_patch(one, "b", PAUSE))
    assert two["metadata"]["annotations"]["chaos-mesh-b-pod-failure-main-normal-image"] == "nginx:1"  # not pause
    a_gone = json_patch(two, podpatch.recover_patch(two, "a"))
    assert images(a_gone) == [PAUSE] * 3  # b still holds the pod
    assert podpatch.paused(a_gone, PAUSE) == ["setup", "main", "side"]
    both_gone = json_patch(a_gone, podpatch.recover_patch(a_gone, "b"))
    assert both_gone["spec"] == before["spec"]
    assert not both_gone["metadata"]["annotations"]


def test_patches_are_guarded_by_uid_and_the_images_read() -> None:
    before = pod()
    ops = podpatch.apply_patch(before, "pf", PAUSE)
    assert ops[0] == {"op": "test", "path": "/metadata/uid", "value": "u-1"}
    assert {"op": "test", "path": "/spec/containers/0/image", "value": "nginx:1"} in ops
    replaced = copy.deepcopy(before)
    replaced["metadata"]["uid"] = "u-2"
    try:
        json_patch(replaced, ops)
    except ValueError:
        pass
    else:
        raise AssertionError("a patch planned for uid u-1 applied to uid u-2")
