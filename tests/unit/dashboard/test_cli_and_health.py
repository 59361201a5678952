"""`chaosbus dashboard` hands its flags to the dashboard; an injector's health report counts its open
journal entries per experiment."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from chaosbus.cli import main as cli
from chaosbus.injector import node as injector_node


def test_chaosbus_dashboard_passes_its_own_flags_through(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(cli.os, "execv", lambda _exe, argv: seen.append(list(argv)))
    with pytest.raises(SystemExit):  # the real execv never returns: the dashboard replaces the CLI
        cli.main(["--nats", "nats://127.0.0.1:1", "dashboard", "--port", "0", "--read-only"])
    [argv] = seen
    assert argv[1:5] == ["-m", "chaosbus.dashboard", "--port", "0"]
    assert "--read-only" in argv and argv[-2:] == ["--nats", "nats://127.0.0.1:1"]


def test_other_commands_still_refuse_unknown_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["get", "pods", "--bogus"])
    assert done.value.code == 2 and "--bogus" in capsys.readouterr().err


@dataclass
class _Entry:
    experiment_uid: str
    namespace: str
    name: str
    kind: str


def test_journal_summary_counts_open_entries_per_experiment() -> None:
    entries = [
        _Entry("u2", "default", "b", "PodChaos"),
        _Entry("u1", "default", "a", "NetworkChaos"),
        _Entry("u1", "default", "a", "NetworkChaos"),
    ]
    summary = injector_node.journal_summary(entries)  # type: ignore[arg-type]
    assert [(s.experiment_uid, s.name, s.entries) for s in summary] == [("u1", "a", 2), ("u2", "b", 1)]
