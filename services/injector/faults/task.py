"""task: run a Workflow Task step's command on this node (local mode's stand-in for Chaos Mesh's
task Pod): the argv list executed directly, never through a shell, with stdin closed, a timeout
(the process is killed when it passes) and only the first `max_stdout` bytes of stdout kept. The
result carries the exit code and that stdout, which the workflow's branch expressions read.
Nothing to recover; a repeated command does not run it again (one-shot).
"""

from __future__ import annotations

import subprocess
import tempfile

from chaosbus.common.faultspecs import MAX_STDOUT
from chaosbus.common.messages import FaultSpec, Task
from chaosbus.injector.faults import CommandOutput, FaultContext, FaultError, register


def run(argv: list[str], timeout_s: float, max_stdout: int) -> tuple[int, str]:
    """(exit code, stdout decoded and cut to `max_stdout` bytes). Output goes to a temporary
    file, so a chatty command costs disk rather than the injector's memory.
    """
    with tempfile.TemporaryFile() as out:
        try:
            done = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.DEVNULL, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            raise FaultError(
                f"task {argv[0]!r} did not finish within {timeout_s:g}s (killed)", retryable=False
            ) from None
        except OSError as e:
            raise FaultError(f"task {argv[0]!r} could not start: {e.strerror or e}", retryable=False) from None
        out.seek(0)
        return done.returncode, out.read(max(0, min(max_stdout, MAX_STDOUT))).decode("utf-8", "replace")


class TaskFault:
    name = "task"
    one_shot = True

    def apply(self, ctx: FaultContext, spec: FaultSpec) -> str | CommandOutput:
        assert isinstance(spec, Task)
        if not spec.argv:
            raise FaultError("task has no command (container.command)", retryable=False)
        code, stdout = run(spec.argv, spec.timeout_s, spec.max_stdout)
        return CommandOutput(message=f"task {spec.argv[0]!r} exited with code {code}", exit_code=code, stdout=stdout)

    def recover(self, ctx: FaultContext, spec: FaultSpec) -> str:
        return "a task changes nothing that could be recovered"


register(TaskFault())
