"""The injector's backends: each `build()` is a set of its own, made whole at once; `on_demand()`
makes a part only when it is first used (the cluster injector's faults use none); and the default
set of callers that hand in none is made once, however many threads ask for it first."""

from __future__ import annotations

import threading
import time
import types
from collections.abc import Iterator

import pytest

from chaosbus.injector.backends import kit


@pytest.fixture
def two() -> Iterator[tuple[kit.Backends, kit.Backends]]:
    a, b = kit.build(), kit.build()
    yield a, b
    a.close()
    b.close()


def test_two_sets_of_backends_share_no_part(two: tuple[kit.Backends, kit.Backends]) -> None:
    a, b = two
    assert a.made() == b.made() == sorted(kit.PARTS)  # every part made by build(), none later
    for part in kit.PARTS:
        assert getattr(a, part) is not getattr(b, part), part
    if a.nft.contexts is not None:  # libnftables usable here: each set has its own contexts
        assert a.nft.contexts is not b.nft.contexts


def test_backends_on_demand_make_a_part_only_when_it_is_used_and_close_only_what_they_made() -> None:
    b = kit.on_demand()
    assert b.made() == []
    shaper = b.tc
    assert b.tc is shaper and b.made() == ["tc"]
    b.close()  # closes the shaper's links; never opens libnftables contexts just to close them
    assert b.made() == ["tc"]


def test_the_default_backends_are_made_once_however_many_threads_ask_first(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[object] = []

    def slow_build() -> kit.Backends:
        time.sleep(0.05)  # every thread arrives while the first is still building
        made.append(types.SimpleNamespace(close=lambda: None))
        return made[-1]  # type: ignore[return-value]

    monkeypatch.setattr(kit, "build", slow_build)
    monkeypatch.setattr(kit.atexit, "register", lambda fn: fn)
    default = kit._Default()
    start = threading.Barrier(8)
    got: list[object] = []

    def ask() -> None:
        start.wait()
        got.append(default.get())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and got == made * 8


def test_prepare_asks_every_probe_and_one_that_fails_stops_neither_the_others_nor_the_start() -> None:
    asked: list[str] = []

    def tc_probe_fails() -> dict[str, str | None]:
        asked.append("tc")
        raise RuntimeError("netlink said no")

    b = kit.on_demand()
    b.__dict__["nft"] = types.SimpleNamespace(cannot=lambda: asked.append("nft"), close=lambda: None)
    b.__dict__["tc"] = types.SimpleNamespace(capabilities=tc_probe_fails)
    b.prepare()  # the node injector's start goes on; its first shaping fault meets the error itself
    assert asked == ["nft", "tc"]
    assert sum(t.name.startswith("netns-visit") for t in threading.enumerate()) == 4
