"""`visit_netns`: the function runs inside the target namespace, errors come back to the caller,
and the visitor threads rest in the process's own namespace between visits (holding no target
namespace alive).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from chaosbus.common import netns as nsutil

pytestmark = pytest.mark.usefixtures("kernel")


def here() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


@pytest.fixture
def two_netns() -> Iterator[list[str]]:
    names = [f"cbvisit{os.getpid()}-{i}" for i in range(2)]
    paths = [nsutil.create_named_netns(n) for n in names]
    try:
        yield paths
    finally:
        for n in names:
            nsutil.remove_named_netns(n)


def test_a_visit_runs_inside_the_target_and_the_visitor_goes_home(two_netns: list[str]) -> None:
    home = here()
    for path in two_netns * 3:
        assert nsutil.visit_netns(path, here) == nsutil.netns_inode(path) != home
    with pytest.raises(ZeroDivisionError):
        nsutil.visit_netns(two_netns[0], lambda: 1 // 0)
    pool = nsutil._visitors
    assert pool is not None
    resting = {pool.submit(here).result() for _ in range(4 * nsutil._VISITORS)}
    assert resting == {home}
