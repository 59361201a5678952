"""Finds what chaosbus may leave on a machine: process-pod network namespaces, cgroups, veths and
bridges, nftables tables named chaosbus_*, and chaosbus processes. Used by the demo's final
check and by the test suite's session guard.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psutil

from chaosbus.common import cgroups

NETNS_DIR = Path("/var/run/netns")


def netns_names(prefix: str = "cbpod-") -> list[str]:
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def links(prefixes: tuple[str, ...]) -> list[str]:
    return sorted(n for n in os.listdir("/sys/class/net") if n.startswith(prefixes))


def host_nft_tables() -> list[str]:
    try:
        out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [ln.strip() for ln in out.splitlines() if "chaosbus" in ln]


def processes(
    markers: tuple[str, ...] = ("chaosbus.cli.supervisor", "chaosbus.cli.demoapp", "-m chaosbus.", "chaosbus up"),
) -> list[str]:
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.info["pid"] not in mine and any(m in cmd for m in markers):
            found.append(f"pid {p.info['pid']}: {cmd[:120]}")
    return found


def scan(
    *, bridge: str | None = None, netns_prefix: str = "cbpod-", link_prefixes: tuple[str, ...] = ("cbv",)
) -> list[str]:
    """Everything of ours still present, one line each (empty: clean)."""
    found = [f"netns {n}" for n in netns_names(netns_prefix)]
    found += [f"link {n}" for n in links(link_prefixes)]
    if bridge and os.path.exists(f"/sys/class/net/{bridge}"):
        found.append(f"bridge {bridge}")
    found += [f"nftables {t}" for t in host_nft_tables()]
    found += [f"cgroup {d}" for d in cgroups.leftovers() if os.path.basename(d).startswith(netns_prefix)]
    found += [f"process {p}" for p in processes()]
    return found
