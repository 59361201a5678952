"""Read-back from the kernel: the packets and bytes each partition's nft tables have dropped, per
experiment, from the counters on their drop rules. A gauge, not a counter: re-applying a
partition replaces its table, and with it the kernel's counts.
"""

from __future__ import annotations

from chaosbus.common.messages import Partition
from chaosbus.injector import executor
from chaosbus.injector.backends import nft
from chaosbus.injector.faults import partition
from chaosbus.injector.journal import Entry

Experiment = tuple[str, str]  # namespace, name


def read(entries: list[Entry], tables: nft.Tables) -> tuple[dict[Experiment, int], dict[Experiment, int]]:
    """Packets and bytes dropped by the open partitions among `entries`, read through `tables`
    (the injector's; blocking)."""
    packets: dict[Experiment, int] = {}
    octets: dict[Experiment, int] = {}
    for entry in entries:
        if not isinstance(entry.action.fault, Partition):
            continue
        table = partition.table_name(entry.experiment_uid, entry.action.selector_key)
        key = (entry.namespace, entry.name)
        paths = {h.netns_path for h in executor.journal_handles(entry.identity)}
        for path in sorted(paths):
            try:
                p, b = tables.counters(path, table)
            except nft.NftError:  # the table or its netns went meanwhile: nothing to count there
                continue
            packets[key] = packets.get(key, 0) + p
            octets[key] = octets.get(key, 0) + b
    return packets, octets
