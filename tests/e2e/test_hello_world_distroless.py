"""HelloWorldChaos end to end on a process pod whose mount namespace has no `ps` (tmpfs over
/usr/bin and /usr/sbin, as a distroless container): through the CLI (the record names the
target's own process line, Events say it was applied) and as a Workflow step (its chaos object
records the same), the listing coming from the host's ps run in the pod's namespaces (native/nsexec).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from helpers.live import System, eventually

from chaosbus.common import processid
from chaosbus.injector.backends._glue import native

pytestmark = pytest.mark.privileged
POD = "bare-0"
# The pod's own mount namespace loses its tools; the program keeps running (it exec'd before).
BARE = r"""# bare-target
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
for d in (b"/usr/bin", b"/usr/sbin"):
    if libc.mount(b"none", d, b"tmpfs", 0, None) != 0:
        sys.exit(f"mount {d!r}: errno {ctypes.get_errno()}")
print("bare", flush=True)
time.sleep(3600)
"""


def doc(kind: str, name: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    )


def _no_ps_in(pid: int) -> bool:
    with open(f"/proc/{pid}/mountinfo") as f:
        return sum(1 for line in f if line.split()[4] in ("/usr/bin", "/usr/sbin")) == 2


@pytest.fixture
def bare(system: System) -> Iterator[int]:
    if not (native.native_dir() / "nsexec").exists():
        pytest.skip(f"{native.native_dir()}/nsexec is not built (make install builds native/)")
    system.cli("pod", "run", "--name", POD, "-l", "app=bare", "--", sys.executable, "-c", BARE)
    ident = processid.parse(system.pod(POD)["status"]["containerStatuses"][0]["containerID"])
    assert ident is not None
    eventually(lambda: _no_ps_in(ident.pid), timeout=10)
    yield ident.pid
    for kind, name in (("helloworldchaos", "hello-bare"), ("workflow", "hello-wf")):
        system.cli("delete", kind, name, check=False)
    system.cli("pod", "rm", POD, check=False)


def records(obj: dict[str, Any] | None) -> list[dict[str, Any]]:
    return (((obj or {}).get("status") or {}).get("experiment") or {}).get("containerRecords") or []


def injected_message(obj: dict[str, Any] | None) -> str:
    for r in records(obj):
        if r["phase"] == "Injected" and r.get("events"):
            return str(r["events"][-1]["message"])
    return ""


def test_hello_world_lists_the_processes_of_a_pod_without_ps_through_the_cli(system: System, bare: int) -> None:
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=doc("HelloWorldChaos", "hello-bare", {"mode": "one", "selector": {"labelSelectors": {"app": "bare"}}}),
    )
    message = eventually(lambda: injected_message(system.get("helloworldchaos", "hello-bare")), timeout=15)
    assert f"ps aux in the namespaces of pid {bare} lists" in message
    assert "bare-target" in message.split("the target: ", 1)[1]
    described = eventually(
        lambda: (
            (d := system.cli("describe", "helloworldchaos", "hello-bare").stdout)
            and "Applied" in d.split("Events:", 1)[1]
            and d
        ),
        timeout=10,
    )
    assert f"Successfully apply chaos for default/{POD}" in described.split("Events:", 1)[1]


def test_hello_world_as_a_workflow_step_on_a_pod_without_ps(system: System, bare: int) -> None:
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=doc(
            "Workflow",
            "hello-wf",
            {
                "entry": "entry",
                "templates": [
                    {"name": "entry", "templateType": "Serial", "deadline": "60s", "children": ["hello"]},
                    {
                        "name": "hello",
                        "templateType": "HelloWorldChaos",
                        "deadline": "30s",  # its object, read by `get` until injected, lasts this long
                        "helloWorldChaos": {"mode": "one", "selector": {"labelSelectors": {"app": "bare"}}},
                    },
                ],
            },
        ),
    )

    def step_message() -> str:
        out = yaml.safe_load(system.cli("get", "helloworldchaos", "-o", "yaml").stdout) or []
        objs = (
            out.get("items") or []
            if isinstance(out, dict) and out.get("kind") == "List"
            else ([out] if isinstance(out, dict) else out)
        )
        mine = [o for o in objs if (o["metadata"].get("labels") or {}).get("chaos-mesh.org/workflow") == "hello-wf"]
        return next((m for o in mine if (m := injected_message(o))), "")

    message = eventually(step_message, timeout=20)
    assert f"ps aux in the namespaces of pid {bare} lists" in message and "bare-target" in message
    system.cli("delete", "workflow", "hello-wf")
