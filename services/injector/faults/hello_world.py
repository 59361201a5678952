"""hello-world: run the host's `ps aux` (wide) in the namespaces and cgroup of the target's first
live container (native/nsexec), so it works on a target whose filesystem has no `ps`.

A harmless end-to-end check of the whole path (selection, command, runtime resolution, entering a
target's namespaces, result): the listing is logged by the injector and the status message names
the target's own process line (other processes' arguments stay out of status). Nothing to recover.
"""

from __future__ import annotations

from chaosbus.common import logging as cblog
from chaosbus.common.messages import FaultSpec
from chaosbus.injector.backends import procs
from chaosbus.injector.faults import FaultContext, FaultError, register

PS_TIMEOUT_S = 5.0
MAX_LINE = 300  # of the target's own ps line, as returned into status
MAX_LOG_LINES = 200  # the listing goes to the injector's log, as the Chaos Mesh tutorial's kind does
log = cblog.get("injector.hello-world")


class HelloWorld:
    name = "hello-world"
    one_shot = True

    def apply(self, ctx: FaultContext, spec: FaultSpec) -> str:
        live = ctx.alive()
        if not live:
            raise FaultError("target gone: no live container to run ps in", retryable=False)
        pid = live[0].pid
        rc, out, err = procs.run_in_target(pid, ["ps", "auxww"], PS_TIMEOUT_S)
        if rc != 0:
            raise FaultError(f"ps aux in the namespaces of pid {pid} failed ({rc}): {err.strip()}")
        lines = out.splitlines()
        inside = str(procs.ns_pid(pid))  # ps numbers processes as the target's PID namespace does
        own = [line for line in lines[1:] if line.split(None, 2)[1:2] == [inside]]
        log.info("hello world", pid=pid, processes=len(lines) - 1, ps_aux=lines[:MAX_LOG_LINES])
        target = own[0][:MAX_LINE] if own else f"(pid {pid} exited meanwhile)"
        return (
            f"Hello world from {ctx.namespace}/{ctx.action.pod_name}: ps aux in the "
            f"namespaces of pid {pid} lists {len(lines) - 1} processes; the target: {target}"
        )

    def recover(self, ctx: FaultContext, spec: FaultSpec) -> str:
        return "hello-world changes nothing: nothing to recover"


register(HelloWorld())
