"""Holds, the files through which a node injector keeps a process pod's command stopped: written
whole, read back, in force until their deadline, found again by their journal key alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chaosbus.common import podhold


def hold(key: str = "uid|.|default/p", deadline: float | None = 100.0) -> podhold.Hold:
    return podhold.Hold(key=key, node="n1", experiment="default/x", deadline=deadline)


@pytest.mark.parametrize("name", ["", ".", "..", "../etc", "a/b", "-x", "cbpod-1\n"])
def test_a_pod_directory_is_named_only_by_a_network_namespace_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        podhold.pod_dir(name, tmp_path)


def test_a_hold_is_in_force_until_its_deadline(tmp_path: Path) -> None:
    d = podhold.pod_dir("cbpod-1", tmp_path)
    podhold.make_dir(d)
    assert os.stat(d).st_mode & 0o777 == 0o700
    podhold.put(d, hold(deadline=100.0))
    podhold.put(d, hold("other", deadline=None))
    assert {h.key for h in podhold.active(d, 99.0)} == {"uid|.|default/p", "other"}
    assert [h.key for h in podhold.active(d, 100.0)] == ["other"]  # past its deadline, even with no one to remove it


def test_placing_a_hold_again_replaces_it_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    d = podhold.pod_dir("cbpod-1", tmp_path)
    podhold.make_dir(d)
    first = podhold.put(d, hold(deadline=10.0))
    assert podhold.put(d, hold(deadline=20.0)) == first
    assert os.listdir(d) == [first]
    assert podhold.read(d, first) == hold(deadline=20.0)


def test_stray_files_are_no_holds_and_a_missing_pod_refuses_a_hold(tmp_path: Path) -> None:
    d = podhold.pod_dir("cbpod-1", tmp_path)
    podhold.make_dir(d)
    (d / "notes.txt").write_text("x")
    (d / podhold.file_name("broken")).write_text("{not json")
    assert podhold.active(d, 0.0) == []
    with pytest.raises(FileNotFoundError):
        podhold.put(podhold.pod_dir("cbpod-gone", tmp_path), hold())


def test_a_restarted_supervisor_drops_stale_holds(tmp_path: Path) -> None:
    d = podhold.pod_dir("cbpod-1", tmp_path)
    podhold.make_dir(d)
    podhold.put(d, hold())
    podhold.make_dir(d)
    assert podhold.names(d) == []


def test_a_hold_is_found_by_its_key_in_any_pod(tmp_path: Path) -> None:
    dirs = [podhold.pod_dir(n, tmp_path) for n in ("cbpod-1", "cbpod-2")]
    for d in dirs:
        podhold.make_dir(d)
    name = podhold.put(dirs[1], hold())
    assert podhold.everywhere(name, tmp_path) == [dirs[1]]
    assert podhold.remove(dirs[1], name) and not podhold.remove(dirs[1], name)
    assert podhold.everywhere(name, tmp_path) == []
