"""Address leases for process pods in the NATS KV bucket `ipam`: a create-only put per address
makes concurrent `pod run`s safe without any lock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from chaosbus.common import messages as m
from chaosbus.common.kvbucket import TypedBucket, WrongRevision


def candidates(subnet: str, gateway: str) -> Iterator[str]:
    """Usable host addresses of `subnet` in order, skipping the gateway."""
    net = ipaddress.IPv4Network(subnet)
    for host in net.hosts():
        if str(host) != gateway:
            yield str(host)


def lease_key(ip: str) -> str:
    return ip.replace(".", "_")


async def allocate(kv: TypedBucket[m.AddressLease], subnet: str, gateway: str, owner: str) -> str:
    for ip in candidates(subnet, gateway):
        try:
            await kv.create(lease_key(ip), m.AddressLease(pod=owner))
        except WrongRevision:
            continue
        return ip
    raise RuntimeError(f"no free address left in {subnet}")


async def release(kv: TypedBucket[m.AddressLease], ip: str) -> None:
    await kv.purge(lease_key(ip))
