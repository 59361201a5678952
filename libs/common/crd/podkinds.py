"""Spec models of the pod-based experiment kinds chaosbus accepts but does not execute yet:
JVMChaos, KernelChaos, BlockChaos
(field names and types per Chaos Mesh v1alpha1; admission checks are the structural ones).
"""

from __future__ import annotations

import msgspec

from chaosbus.common.crd.common import ContainerSelectorBase, PodSelectorBase


class _S(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True, forbid_unknown_fields=True):
    pass


class JVMChaosSpec(ContainerSelectorBase, kw_only=True):
    """The `return` action's value shares the `value` key with the mode's value (as in Chaos Mesh,
    where both are inlined into one JSON object)."""

    action: str = ""
    class_: str = msgspec.field(default="", name="class")
    method: str = ""
    port: int = 9277
    pid: int = 0
    name: str = ""
    exception: str = ""
    latency: int = 0
    rule_data: str = ""
    cpu_count: int = 0
    mem_type: str = ""
    mysql_connector_version: str = ""
    database: str = ""
    table: str = ""
    sql_type: str = ""


class Frame(_S):
    funcname: str = ""
    parameters: str = ""
    predicate: str = ""


class FailKernRequest(_S):
    failtype: int = 0
    headers: list[str] = []
    callchain: list[Frame] = []
    probability: int = 0
    times: int = 0


class KernelChaosSpec(PodSelectorBase, kw_only=True):
    fail_kern_request: FailKernRequest | None = None


class BlockDelay(_S):
    latency: str = ""
    jitter: str = "0ms"
    correlation: str = "0"


class BlockChaosSpec(ContainerSelectorBase, kw_only=True):
    action: str = ""
    volume_name: str = ""
    delay: BlockDelay | None = None
