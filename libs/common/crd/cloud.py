"""Spec models of AWSChaos, GCPChaos and AzureChaos (accepted, not executed): the selector is the
cloud identity of the instance or disk, not a pod selector.
"""

from __future__ import annotations

import msgspec


class _S(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True, forbid_unknown_fields=True):
    pass


class AWSChaosSpec(_S):
    action: str = ""
    secret_name: str | None = None
    duration: str | None = None
    remote_cluster: str = ""
    endpoint: str | None = None
    aws_region: str = msgspec.field(default="", name="awsRegion")
    ec2_instance: str = msgspec.field(default="", name="ec2Instance")
    volume_id: str | None = msgspec.field(default=None, name="volumeID")
    device_name: str | None = None


class GCPChaosSpec(_S):
    action: str = ""
    secret_name: str | None = None
    duration: str | None = None
    remote_cluster: str = ""
    project: str = ""
    zone: str = ""
    instance: str = ""
    device_names: list[str] | None = None


class AzureChaosSpec(_S):
    action: str = ""
    secret_name: str | None = None
    duration: str | None = None
    remote_cluster: str = ""
    subscription_id: str = msgspec.field(default="", name="subscriptionID")
    resource_group_name: str = ""
    vm_name: str = msgspec.field(default="", name="vmName")
    disk_name: str | None = None
    lun: int | None = None
