"""The backends a fault runs on, handed to the executor (and from it to every fault through its
`FaultContext`) instead of reached as module state, so that a test can hand in its own.
Only the nft tables of partitions, DNSChaos and HTTPChaos come through here so far; the other
faults still call their backend modules' process-wide state.
"""

from __future__ import annotations

from dataclasses import dataclass

from chaosbus.injector.backends import nft


@dataclass(frozen=True)
class Backends:
    nft: nft.Tables  # nftables transactions (libnftables contexts, or nft processes)


def process_backends() -> Backends:
    """The process's own: what the injector service runs on."""
    return Backends(nft=nft.Tables(nft.contexts()))
