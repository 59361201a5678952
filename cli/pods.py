"""`chaosbus pod run|list|rm`: start, show and remove local process pods."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

import msgspec

from chaosbus.cli import ipam, podnet
from chaosbus.cli.resources import UsageError
from chaosbus.cli.supervisor import (
    BRIDGE_ANNOTATION,
    CGROUP_ANNOTATION,
    NETNS_ANNOTATION,
    SUPERVISOR_ANNOTATION,
    PodSpec,
)
from chaosbus.common import cgroups, config, podhold, processid
from chaosbus.common import messages as m
from chaosbus.common.kvbucket import TypedBucket
from chaosbus.common.store import ObjectStore

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def parse_labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for p in pairs:
        for item in p.split(","):
            if "=" not in item or not item.split("=", 1)[0]:
                raise UsageError(f"invalid label {item!r}: expected key=value")
            k, v = item.split("=", 1)
            labels[k] = v
    return labels


def _volumes(volumes: list[str], pid_namespace: bool) -> list[str]:
    """`-v HOST:PATH` values as absolute `HOST:PATH` (HOST may be relative to the working directory)."""
    if volumes and not pid_namespace:
        raise UsageError("-v needs the pod's own mount namespace (not --host-pid)")
    out = []
    for v in volumes:
        host, sep, path = v.partition(":")
        if not sep or not host or not path.startswith("/"):
            raise UsageError(f"-v {v}: expected HOST:PATH with PATH absolute")
        host = os.path.abspath(host)
        if not os.path.isdir(host):
            raise UsageError(f"-v {v}: {host} is not a directory")
        out.append(f"{host}:{os.path.normpath(path)}")
    return out


def pod_log_file(namespace: str, name: str) -> str:
    d = config.state_dir() / "pods"
    d.mkdir(parents=True, exist_ok=True)
    return str(d / f"{namespace}_{name}.log")


async def run(
    store: ObjectStore,
    url: str,
    *,
    name: str,
    namespace: str,
    labels: list[str],
    restart: str,
    node: str | None,
    argv: list[str],
    bridge: str | None = None,
    subnet: str | None = None,
    timeout: float = 15.0,
    pid_namespace: bool = True,
    volumes: list[str] | None = None,
) -> dict[str, Any]:
    if not _DNS1123.match(name) or len(name) > 63:
        raise UsageError(f"invalid pod name {name!r}: lower-case letters, digits and '-' only")
    if not argv:
        raise UsageError("a command is required after --")
    vols = _volumes(volumes or [], pid_namespace)
    if await store.get("Pod", namespace, name) is not None:
        raise UsageError(f'pod "{name}" already exists in namespace "{namespace}"')
    spec = PodSpec(
        name=name,
        namespace=namespace,
        labels=parse_labels(labels),
        argv=argv,
        restart=restart,
        node=config.node_name(node),
        log_file=pod_log_file(namespace, name),
        pid_namespace=pid_namespace,
        volumes=vols,
    )
    if bridge:
        spec.bridge = bridge
    if subnet:
        try:
            net = ipaddress.IPv4Network(subnet, strict=False)
        except ValueError as e:
            raise UsageError(f"--subnet: {e}") from None
        spec.subnet, spec.gateway = str(net), str(next(net.hosts()))
    log_path = pod_log_file(namespace, name) + ".supervisor"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chaosbus.cli.supervisor",
                "--nats",
                url,
                "--spec",
                msgspec.json.encode(spec).decode(),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pod = await store.get("Pod", namespace, name)
        if pod is not None and (pod.get("status") or {}).get("phase") == "Running":
            return pod
        if proc.poll() is not None:
            raise UsageError(f"pod {name} failed to start:\n{_tail(log_path)}")
        await asyncio.sleep(0.05)
    proc.terminate()
    raise UsageError(f"pod {name} did not start within {timeout:.0f}s:\n{_tail(log_path)}")


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


async def remove(
    store: ObjectStore, ipam_kv: TypedBucket[m.AddressLease], name: str, namespace: str, *, timeout: float = 10.0
) -> str:
    pod = await store.get("Pod", namespace, name)
    if pod is None:
        raise UsageError(f'pod "{name}" not found')
    result = await _remove(store, ipam_kv, pod, timeout)
    bridge = (pod["metadata"].get("annotations") or {}).get(BRIDGE_ANNOTATION)
    if bridge and not any(
        (p["metadata"].get("annotations") or {}).get(BRIDGE_ANNOTATION) == bridge for p in await store.list("Pod")
    ):
        await asyncio.to_thread(podnet.delete_bridge_if_unused, bridge)  # the last pod on it is gone
    return result


async def _remove(store: ObjectStore, ipam_kv: TypedBucket[m.AddressLease], pod: dict[str, Any], timeout: float) -> str:
    name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
    ann = pod["metadata"].get("annotations") or {}
    pid = int(ann.get(SUPERVISOR_ANNOTATION, "0") or 0)
    if pid and _signal(pid, signal.SIGTERM):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and await store.get("Pod", namespace, name) is not None:
            await asyncio.sleep(0.05)
        if await store.get("Pod", namespace, name) is None:
            return f'pod "{name}" deleted'
        _signal(pid, signal.SIGKILL)
    # The supervisor is gone: clean up after it.
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        ident = processid.parse(cs.get("containerID", ""))
        if ident is not None and processid.is_running(ident):  # never a process that reuses the pid
            _signal(ident.pid, signal.SIGKILL)
    if ann.get(NETNS_ANNOTATION):
        await asyncio.to_thread(podnet.delete_pod_network, ann[NETNS_ANNOTATION])
        with contextlib.suppress(ValueError):
            await asyncio.to_thread(shutil.rmtree, podhold.pod_dir(ann[NETNS_ANNOTATION]), True)
    if ann.get(CGROUP_ANNOTATION):  # also kills what is left inside (a command's own children)
        dirs = tuple(ann[CGROUP_ANNOTATION].split(","))
        await asyncio.to_thread(cgroups.remove, cgroups.PodCgroup(dirs[0].rstrip("/").rsplit("/", 1)[-1], dirs))
    if (pod.get("status") or {}).get("podIP"):
        await ipam.release(ipam_kv, pod["status"]["podIP"])
    await store.delete("Pod", namespace, name)
    return f'pod "{name}" deleted'


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def remove_all(store: ObjectStore, ipam_kv: TypedBucket[m.AddressLease]) -> list[str]:
    pods = await store.list("Pod")
    out = []
    for p in pods:
        with contextlib.suppress(UsageError):
            out.append(await remove(store, ipam_kv, p["metadata"]["name"], p["metadata"]["namespace"]))
    return out
