"""The nftables tables a fault owns in a target's netns (partitions, the DNS and HTTP redirects):
one per (experiment, selector), named by a kind's prefix and a digest, recorded as "this table
absent" in the journal, and found again by the sweeper by their prefix when no entry owns them.
"""

from __future__ import annotations

import hashlib
from typing import Any

from chaosbus.injector.backends import nft
from chaosbus.injector.backends.kit import Backends

ABSENT = "nft_table_absent"  # the journaled original state: the table did not exist
# Every table of ours starts with nft.TABLE_PREFIX; the redirects' longer prefixes set theirs apart
# from partitions', so each fault sweeps only its own.
DNS_PREFIX = f"{nft.TABLE_PREFIX}dns_"
HTTP_PREFIX = f"{nft.TABLE_PREFIX}http_"


def table_name(prefix: str, experiment_uid: str, selector_key: str) -> str:
    digest = hashlib.sha1(f"{experiment_uid}/{selector_key}".encode()).hexdigest()
    return f"{prefix}{digest[:12]}"


class Tables:
    """The orphans a fault can leave: its tables, found by their name prefix (`excluding`: longer
    prefixes that are other faults' to sweep). The servers the redirects feed never outlive the
    injector process, so they cannot be orphaned.
    """

    what = "nft table"

    def __init__(self, prefix: str, excluding: tuple[str, ...] = ()) -> None:
        self.prefix, self.excluding = prefix, excluding

    def find(self, netns_path: str, backends: Backends) -> list[str]:
        return [
            t
            for t in backends.nft.names(netns_path)
            if t.startswith(self.prefix) and not (self.excluding and t.startswith(self.excluding))
        ]

    def owned(self, originals: list[dict[str, Any]]) -> set[str] | None:
        return {o[ABSENT] for o in originals if isinstance(o.get(ABSENT), str)}

    def remove(self, netns_path: str, item: str, backends: Backends) -> None:
        try:
            backends.nft.delete(netns_path, item)
        except nft.NetnsGone:
            pass
