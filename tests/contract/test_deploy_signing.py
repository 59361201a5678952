"""The kustomize base keeps the signing keys where they belong: the scheduler's private key in its
own Secret, mounted by the scheduler alone; the public keys mounted read-only into every injector,
which is pointed at them; no workload runs unsigned.
"""

from __future__ import annotations

from contract.test_deploy import container, pod_spec, workloads


def secret_mounts(name: str) -> dict[str, str]:
    """Secret name -> mount path in `name`'s container."""
    volumes = {v["name"]: v["secret"]["secretName"] for v in pod_spec(name).get("volumes", []) if "secret" in v}
    return {
        volumes[m["name"]]: m["mountPath"]
        for m in container(name).get("volumeMounts", [])
        if m["name"] in volumes and m.get("readOnly")
    }


def test_only_the_scheduler_mounts_the_signing_key_and_uses_it() -> None:
    holders = [n for n in workloads() if "chaosbus-scheduler-key" in secret_mounts(n)]
    assert holders == ["chaosbus-scheduler"]
    path = secret_mounts("chaosbus-scheduler")["chaosbus-scheduler-key"]
    assert f"--signing-key={path}/scheduler.key" in container("chaosbus-scheduler")["args"]


def test_every_injector_trusts_the_public_keys_and_nothing_runs_unsigned() -> None:
    for name in ("chaosbus-injector", "chaosbus-cluster-injector"):
        path = secret_mounts(name)["chaosbus-trust"]
        assert f"--keys-dir={path}" in container(name)["args"]
    for name in workloads():
        assert all(e["name"] != "CHAOSBUS_UNSIGNED" for e in container(name).get("env", []))
