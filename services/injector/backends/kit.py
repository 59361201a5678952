"""The backends a fault runs on, handed to the executor (and from it to every fault through its
`FaultContext`) instead of reached as module state, so that a test can hand in its own.
Only the nft tables of partitions, DNSChaos and HTTPChaos and the shaping state come through
here so far; the other faults still call their backend modules' process-wide state.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from chaosbus.injector.backends import nft, tc


@dataclass(frozen=True)
class Backends:
    nft: nft.Tables  # nftables transactions (libnftables contexts, or nft processes)
    tc: tc.Shaper  # the node's traffic-shaping state (one per process: it owns every shaped device)


def process_backends() -> Backends:
    """The process's own: what the injector service runs on."""
    return Backends(nft=nft.Tables(nft.contexts()), tc=process_shaper())


@functools.cache
def process_shaper() -> tc.Shaper:
    return tc.Shaper()
