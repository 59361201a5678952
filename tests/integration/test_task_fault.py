"""The injector's task fault on real processes: argv run without a shell, exit code and stdout in
the result, stdout capped, a command past its timeout killed, a missing program a clear failure.
"""

from __future__ import annotations

import sys
import time

from chaosbus.common import messages as m
from chaosbus.injector import core


def run(argv: list[str], timeout_s: float = 10.0, max_stdout: int = 4096) -> m.TargetResult:
    action = m.TargetAction(
        target_id="default/task-abcde", op="apply", fault=m.Task(argv=argv, timeout_s=timeout_s, max_stdout=max_stdout)
    )
    cmd = m.NodeCommand(
        command_id="c1",
        experiment_uid="u1",
        generation=1,
        kind="WorkflowNode",
        namespace="default",
        name="task-abcde",
        node="n1",
        issued_at=time.time(),
        actions=[action],
    )
    return core.run_action(cmd, action)


def test_exit_code_and_stdout_come_back() -> None:
    res = run([sys.executable, "-c", "import sys; print('yes'); sys.exit(3)"])
    assert res.ok and res.exit_code == 3 and res.stdout == "yes\n"
    assert "exited with code 3" in res.message


def test_no_shell_metacharacters_are_just_arguments() -> None:
    res = run(["echo", "a;", "rm", "-rf", "/nonexistent", "&&", "$(id)"])
    assert res.exit_code == 0 and res.stdout == "a; rm -rf /nonexistent && $(id)\n"


def test_stdout_is_capped() -> None:
    res = run([sys.executable, "-c", "print('x' * 100000)"], max_stdout=10)
    assert res.stdout == "x" * 10


def test_a_command_past_its_timeout_is_killed_and_reported() -> None:
    started = time.monotonic()
    res = run(["sleep", "30"], timeout_s=0.5)
    assert not res.ok and not res.retryable and "did not finish within 0.5s" in res.message
    assert time.monotonic() - started < 10


def test_a_missing_program_is_a_clear_failure() -> None:
    res = run(["/no/such/program"])
    assert not res.ok and "could not start" in res.message and res.exit_code is None


def test_the_task_is_one_shot() -> None:
    assert not core.lasting("task")
