"""The SLO guard's decision: halt after `failures` evaluations in a row not met, once per breach;
re-armed only when the objective is met again (a resume during a breach is not fought). Its
configuration file: checked field by field, and waited for while it does not exist."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chaosbus.cli.guard import Guard


@pytest.mark.parametrize(
    ("failures", "outcomes", "halts"),
    [
        (2, [True, False, True, False, True], []),  # never two in a row
        (2, [False, False], [1]),
        (1, [False, False, False], [0]),  # once per breach, not on every evaluation
        (2, [False, False, False, True, False, False], [1, 5]),  # met again: re-armed
    ],
)
def test_halts_once_per_breach(failures: int, outcomes: list[bool], halts: list[int]) -> None:
    guard = Guard(failures)
    assert [i for i, ok in enumerate(outcomes) if guard.observe(ok)] == halts


def test_a_guard_configuration_file_is_checked_field_by_field() -> None:
    from chaosbus.cli import guard as g

    cfg = g.parse_config("prometheus: http://p:9090\nquery: up\ncriteria: '>'\nvalue: 0\n", "guard.yaml")
    assert (cfg.name, cfg.interval, cfg.timeout, cfg.failures) == ("slo", 10.0, 5.0, 2)  # the flags' defaults
    assert g.objective(cfg).query == "up"
    with pytest.raises(g.BadConfig, match="guard.yaml: .*unknown field `intervall`"):
        g.parse_config("prometheus: http://p\nquery: up\ncriteria: '>'\nvalue: 0\nintervall: 3\n", "guard.yaml")
    with pytest.raises(g.BadConfig, match="missing required field `query`"):
        g.parse_config("prometheus: http://p\ncriteria: '>'\nvalue: 0\n", "guard.yaml")
    with pytest.raises(g.BadConfig, match="guard.comparator.criteria"):
        g.objective(g.GuardConfig(prometheus="http://p", query="up", criteria="~", value=0))
    with pytest.raises(g.BadConfig, match="failures at least 1"):
        g.objective(g.GuardConfig(prometheus="http://p", query="up", criteria="<", value=0, failures=0))


async def test_a_guard_waits_for_its_configuration_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chaosbus.cli import guard as g

    monkeypatch.setattr(g, "CONFIG_POLL_S", 0.05)
    path = tmp_path / "guard.yaml"
    waiting = asyncio.ensure_future(g.wait_for_config(path))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # no file: idle, not failed
    path.write_text("prometheus: http://p:9090\nquery: up\ncriteria: '=='\nvalue: 1\nname: later\n")
    cfg = await asyncio.wait_for(waiting, timeout=10)
    assert cfg.name == "later"
