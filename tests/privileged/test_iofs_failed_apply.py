"""A failed IOChaos apply leaves nothing of its own in the injector's iofs state directory: not its
rule, and, when no other experiment has a rule on the volume, no rules file for the sweeper to find
later; another experiment's rules on the same volume stay as they were.

iofs is really asked to mount, over a volume path the target does not have, and refuses.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from helpers.iofstarget import READ, Target, ctx_for, io, volume_target

from chaosbus.injector import faults
from chaosbus.injector.backends import iofs
from chaosbus.injector.backends._glue.native import native_dir

pytestmark = pytest.mark.privileged

if os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not (native_dir() / "iofs").exists():
    pytest.skip("needs root, /dev/fuse and native/build/iofs (make install)", allow_module_level=True)

FAULT = faults.get("io")
MISSING = "/no/such/volume"  # iofs finds no such directory in the target and mounts nothing


@pytest.fixture
def target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Target]:
    yield from volume_target(tmp_path, monkeypatch)


def state_files() -> list[str]:
    return sorted(p.name for p in iofs.rules_dir().iterdir())


def test_a_failed_apply_leaves_no_rules_file(target: Target) -> None:
    spec = msgspec.structs.replace(io(target, action="fault", methods=READ, errno=5), volume_path=MISSING)
    ctx = ctx_for(target, spec)
    with pytest.raises(faults.FaultError, match=MISSING):
        FAULT.apply(ctx, spec)
    assert state_files() == []
    assert target.mounted() == 0


def test_a_failed_apply_keeps_the_rules_of_another_experiment_on_the_volume(target: Target) -> None:
    spec = msgspec.structs.replace(io(target, action="fault", methods=READ, errno=5), volume_path=MISSING)
    ctx = ctx_for(target, spec)
    vol = iofs.Volume(target.pid, iofs.start_ticks(target.pid) or 0, spec.volume_path)
    # Another experiment's rule on the same volume, written as its apply writes it.
    other = {"other-experiment": iofs.rule_line(spec, 0)}
    iofs.write_rules(vol.rules, other)
    with pytest.raises(faults.FaultError, match=MISSING):
        FAULT.apply(ctx, spec)
    assert iofs.read_rules(vol.rules) == other
    assert state_files() == [vol.rules.name]


def test_the_undo_of_a_failed_apply_leaves_no_rules_file_either(target: Target) -> None:
    """The executor undoes a failed apply at once (all or nothing): that recover finds nothing of
    it and writes nothing."""
    spec = msgspec.structs.replace(io(target, action="fault", methods=READ, errno=5), volume_path=MISSING)
    ctx = ctx_for(target, spec)
    with pytest.raises(faults.FaultError, match=MISSING):
        FAULT.apply(ctx, spec)
    FAULT.recover(ctx, spec)
    assert state_files() == []
