"""Read-back from the kernel and /proc, per experiment: what the node's open faults have in force
right now, not what the injector believes it did. Blocking; run off the event loop.

- qdiscs: the netem/tbf stage qdiscs the kernel has on the shaped devices of each NetworkChaos
  shaping experiment (attributed through the installed plan: a stage handle names one owner);
- stressors: live stress-ng instances carrying a StressChaos entry's marks;
- skewed: processes of a TimeChaos entry (same pid and start time as journaled) whose vDSO still
  differs from the journaled original bytes.
"""

from __future__ import annotations

import os

from chaosbus.common.messages import Shaping, Stress, TimeSkew
from chaosbus.injector import executor
from chaosbus.injector.backends import procs, tc, timeskew
from chaosbus.injector.journal import Entry

Experiment = tuple[str, str]  # namespace, name


def qdiscs(entries: list[Entry], shaper: tc.Shaper) -> dict[Experiment, int]:
    """Stage qdiscs in the kernel per shaping experiment (each (netns, rule owner) counted once),
    as `shaper` (the injector's) installed them."""
    seen: set[tuple[str, str]] = set()
    out: dict[Experiment, int] = {}
    for entry in entries:
        if not isinstance(entry.action.fault, Shaping):
            continue
        owner = f"{entry.experiment_uid}/{entry.action.selector_key}"
        for path in sorted({h.netns_path for h in executor.journal_handles(entry.identity)}):
            if (path, owner) in seen:
                continue
            seen.add((path, owner))
            try:
                n = shaper.installed_stages(path).get(owner, 0)
            except tc.NetnsGone:  # went meanwhile: nothing installed there
                continue
            key = (entry.namespace, entry.name)
            out[key] = out.get(key, 0) + n
    return out


def stressors(entries: list[Entry]) -> dict[Experiment, int]:
    """Live stress-ng instances per StressChaos experiment (one per stressor and target), found by
    their marks in one /proc scan. The helper that holds a target's PID namespace carries the
    marks too but is not a stressor; stress-ng's workers retitle themselves over their
    environment, so the instance (the workers' parent) is what is counted.
    """
    wanted = {
        f"{procs.KEY_ENV}={e.key}".encode(): (e.namespace, e.name)
        for e in entries
        if isinstance(e.action.fault, Stress)
    }
    out: dict[Experiment, int] = {}
    if not wanted:
        return out
    prefix = f"{procs.KEY_ENV}=".encode()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read()
            if prefix not in env:
                continue
            with open(f"/proc/{name}/comm", "rb") as f:
                if not f.read().startswith(b"stress-ng"):
                    continue
        except OSError:
            continue  # exited meanwhile, or not readable
        for var in env.split(b"\0"):
            experiment = wanted.get(var)
            if experiment is not None:
                out[experiment] = out.get(experiment, 0) + 1
                break
    return out


def skewed(entries: list[Entry]) -> dict[Experiment, int]:
    """Processes whose vDSO is still patched, per TimeChaos experiment."""
    out: dict[Experiment, int] = {}
    for entry in entries:
        if not isinstance(entry.action.fault, TimeSkew):
            continue
        key = (entry.namespace, entry.name)
        n = sum(1 for proc in entry.original.get("processes", []) if _still_patched(proc))
        if n:
            out[key] = out.get(key, 0) + n
    return out


def _still_patched(proc: dict[str, object]) -> bool:
    patches = proc.get("patches")
    pid = proc.get("pid")
    if not isinstance(patches, list) or not isinstance(pid, int) or timeskew.start_ticks(pid) != proc.get("start"):
        return False  # never patched, or exited (its pid may name another process now)
    try:
        return any(
            timeskew.read_bytes(pid, int(addr), len(bytes.fromhex(orig))) != bytes.fromhex(orig)
            for addr, orig in patches
        )
    except OSError:
        return False
