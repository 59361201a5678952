"""Helpers for the shaping kernel tests: TCP goodput between lab pods (helpers.goodput), a device's
tc objects, and the network-shaping fault driven the way the injector does.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

from helpers import goodput as helpers_goodput
from helpers.goodput import SINK_PORTS

from chaosbus.common.messages import FaultSpec, Shaping, TargetAction
from chaosbus.injector import faults, runtime
from chaosbus.injector.backends import tc, tcdev
from chaosbus.injector.backends._glue.netnslink import NetnsLink
from chaosbus.injector.backends._glue.tcwire import TcObject
from chaosbus.injector.backends.kit import process_backends

from .conftest import Lab


@contextlib.contextmanager
def sinks(lab: Lab) -> Iterator[dict[int, subprocess.Popen[str]]]:
    """A goodput sink on SINK_PORTS in every lab pod."""
    with helpers_goodput.sinks({p.index: p.net.netns_path for p in lab.pods}) as procs:
        yield procs


def goodput(
    lab: Lab,
    sinks: dict[int, subprocess.Popen[str]],
    src: int,
    dst: int,
    port: int = SINK_PORTS[0],
    seconds: float = 2.5,
) -> float:
    """TCP goodput in bit/s from pod `src` to pod `dst`:`port` over `seconds`."""
    return helpers_goodput.goodput(lab.pods[src].net.netns_path, sinks[dst], lab.pods[dst].ip, port, seconds)


def tree(netns_path: str, device: str = "eth0") -> list[TcObject]:
    """Every qdisc, class and filter of the device (a fresh link: nothing stays pinned)."""
    link = NetnsLink(netns_path)
    try:

        async def job(ipr: object) -> list[TcObject]:
            index, _ = tcdev.find_device(device, "")
            return await tcdev.dump(ipr, index)

        return link.run(job)
    finally:
        link.close()


def identities(objects: list[TcObject]) -> set[tuple[object, ...]]:
    return {o.identity for o in objects}


def ctx_for(uid: str, pid: int, spec: FaultSpec, selector: str = ".") -> faults.FaultContext:
    ids = [f"process://{pid}"]
    action = TargetAction(
        target_id=f"default/pod-{pid}",
        selector_key=selector,
        op="apply",
        namespace="default",
        pod_name="pod",
        container_ids=ids,
        fault=spec,
    )
    return faults.FaultContext(
        experiment_uid=uid,
        experiment_name=uid,
        namespace="default",
        action=action,
        containers=[runtime.resolve(i) for i in ids],
    )


class Shaped:
    """One shaping experiment side on one lab pod, applied and recovered like the injector does."""

    def __init__(self, lab: Lab, uid: str, pod: int, spec: Shaping, selector: str = ".") -> None:
        self.lab, self.uid, self.pod, self.spec, self.selector = lab, uid, pod, spec, selector
        self.fault = faults.get("network-shaping")

    def _ctx(self) -> faults.FaultContext:
        return ctx_for(self.uid, self.lab.pods[self.pod].server.pid, self.spec, self.selector)

    def apply(self) -> str:
        return self.fault.apply(self._ctx(), self.spec)

    def recover(self) -> str:
        return self.fault.recover(self._ctx(), self.spec)


def shaper() -> tc.Shaper:
    """The shaping state of the default backends (what a FaultContext handed none shapes with)."""
    return process_backends().tc
