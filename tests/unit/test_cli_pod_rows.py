"""`chaosbus pod list` shows readiness and, like kubectl, a waiting container's reason as the status."""

from __future__ import annotations

from chaosbus.cli import render


def pod(cs: dict[str, object]) -> dict[str, object]:
    return {
        "metadata": {"name": "web-0", "namespace": "default", "labels": {"app": "web"}, "annotations": {}},
        "status": {"phase": "Running", "podIP": "10.0.0.2", "containerStatuses": [cs]},
    }


def test_a_running_pod_is_ready_and_a_held_one_says_why_not() -> None:
    running = render.pod_rows(
        [
            pod(
                {
                    "name": "web-0",
                    "ready": True,
                    "restartCount": 0,
                    "containerID": "process://42@7",
                    "state": {"running": {}},
                }
            )
        ]
    )
    held = render.pod_rows(
        [
            pod(
                {
                    "name": "web-0",
                    "ready": False,
                    "restartCount": 1,
                    "containerID": "",
                    "state": {"waiting": {"reason": "PodFailure", "message": "stopped"}},
                }
            )
        ]
    )
    header, row = running.splitlines()[:2]
    assert header.split()[:4] == ["NAMESPACE", "NAME", "READY", "STATUS"]
    assert row.split()[:4] == ["default", "web-0", "1/1", "Running"]
    assert held.splitlines()[1].split()[:4] == ["default", "web-0", "0/1", "PodFailure"]
