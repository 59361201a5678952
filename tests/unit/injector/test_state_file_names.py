"""Which files of the state directory the sweeper may judge: only names the io and shaping
backends give (a volume's files, a temporary file naming its writer, a device's saved original);
anything else there is never removed."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaosbus.injector.backends import iofs
from chaosbus.injector.faults import shaping


@pytest.mark.parametrize(
    ("name", "stem", "writer"),
    [
        ("123-456-0123456789abcdef.rules", "123-456-0123456789abcdef", None),
        ("123-456-0123456789abcdef.server", "123-456-0123456789abcdef", None),
        ("123-456-0123456789abcdef.sock", "123-456-0123456789abcdef", None),
        (".123-456-0123456789abcdef.rules.789.140234", "123-456-0123456789abcdef", 789),
        (".123-456-0123456789abcdef.sock.789.140234", "123-456-0123456789abcdef", 789),
    ],
)
def test_the_io_backends_names_are_read_back(name: str, stem: str, writer: int | None) -> None:
    f = iofs.state_file(Path("/d") / name)
    assert f is not None and (f.stem, f.pid, f.start, f.writer) == (stem, 123, 456, writer)
    assert f.rules == Path(f"/d/{stem}.rules") and f.server_file == Path(f"/d/{stem}.server")


def test_a_volumes_own_names_are_read_back() -> None:
    vol = iofs.Volume(4242, 99, "/data")
    for path in (vol.rules, vol.server_file, vol.control):
        f = iofs.state_file(path)
        assert f is not None and (f.pid, f.start, f.writer, f.stem) == (4242, 99, None, vol.rules.stem)


@pytest.mark.parametrize(
    "name",
    [
        "notes.txt",
        "123-456-abc.json",
        "x-456-abc.rules",
        "1-2-3-4.rules",
        ".123-456-abc.rules.x.1",
        ".rules",
        "123-456",
    ],
)
def test_other_names_are_not_the_io_backends(name: str) -> None:
    assert iofs.state_file(Path("/d") / name) is None


def test_a_saved_tc_original_names_its_namespace() -> None:
    assert shaping._netns_of("4-4026532000-eth0.json") == (4, 4026532000)
    assert shaping._netns_of("4-4026532000-eth0.100.tmp") == (4, 4026532000)
    assert [shaping._netns_of(n) for n in ("notes.txt", "4-x-eth0.json", "zz-1-eth0.json", "4-1-eth0.bak")] == [
        None
    ] * 4
