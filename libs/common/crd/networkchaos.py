"""NetworkChaos: netem family, bandwidth and partition, with `target`, `direction`, `externalTargets`."""

from __future__ import annotations

import ipaddress
import re
from typing import Self

import msgspec

from chaosbus.common.crd import bounds
from chaosbus.common.crd.common import PodSelectorBase, with_default_namespace
from chaosbus.common.crd.errors import Problems
from chaosbus.common.crd.selectors import PodSelector, default_namespaces, validate_mode, validate_selector
from chaosbus.common.durations import parse_duration

ACTIONS = ("netem", "delay", "loss", "duplicate", "corrupt", "partition", "bandwidth")
DIRECTIONS = ("to", "from", "both")
NETEM_ACTIONS = ("netem", "delay", "loss", "duplicate", "corrupt")
_LATENCY = re.compile(r"^[0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h)$")
_RATE = re.compile(r"^([0-9]{1,20})(|k|m|g|t)(bit|bps)$", re.IGNORECASE)
_LABEL = r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


class _Struct(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True, forbid_unknown_fields=True):
    pass


class ReorderSpec(_Struct):
    reorder: str = ""
    correlation: str = "0"
    gap: int = 0


class DelaySpec(_Struct):
    latency: str = ""
    jitter: str = "0ms"
    correlation: str = "0"
    reorder: ReorderSpec | None = None


class LossSpec(_Struct):
    loss: str = ""
    correlation: str = "0"


class DuplicateSpec(_Struct):
    duplicate: str = ""
    correlation: str = "0"


class CorruptSpec(_Struct):
    corrupt: str = ""
    correlation: str = "0"


class BandwidthSpec(_Struct):
    rate: str = ""
    limit: int = 0
    buffer: int = 0
    peakrate: int | None = None
    minburst: int | None = None


class RateSpec(_Struct):
    rate: str = ""


class NetworkChaosSpec(PodSelectorBase, kw_only=True):
    action: str = ""
    direction: str = "to"
    target: PodSelector | None = None
    external_targets: list[str] = []
    device: str = ""
    target_device: str = ""
    delay: DelaySpec | None = None
    loss: LossSpec | None = None
    duplicate: DuplicateSpec | None = None
    corrupt: CorruptSpec | None = None
    bandwidth: BandwidthSpec | None = None
    rate: RateSpec | None = None

    def defaulted(self, namespace: str) -> Self:
        spec = with_default_namespace(self, namespace)
        assert isinstance(spec, NetworkChaosSpec)
        changes: dict[str, object] = {
            "direction": spec.direction or "to",
            "device": spec.device.split("@", 1)[0],
            "target_device": spec.target_device.split("@", 1)[0],
        }
        if spec.target is not None:
            changes["target"] = msgspec.structs.replace(
                spec.target, selector=default_namespaces(spec.target.selector, namespace)
            )
        return msgspec.structs.replace(spec, **changes)  # type: ignore[return-value]

    def validate(self) -> None:
        problems = Problems()
        problems.one_of("spec.action", self.action, ACTIONS)
        problems.one_of("spec.direction", self.direction, DIRECTIONS)
        self.check_common(problems)
        if self.target is not None:
            validate_mode(problems, "spec.target.", self.target.mode, self.target.value)
            validate_selector(problems, "spec.target.selector", self.target.selector)
        for i, ext in enumerate(self.external_targets):
            if parse_external(ext) is None:
                problems.add(
                    f"spec.externalTargets[{i}]",
                    f"expected an IPv4 address, CIDR or hostname with optional :port, got {ext!r}",
                )
        if self.action != "partition" and self.direction in ("from", "both"):
            if self.external_targets:
                problems.add("spec.externalTargets", f"cannot be used with direction {self.direction}")
            if self.target is None:
                problems.add("spec.target", f"direction {self.direction} needs a target")
        bounds.device(problems, "spec.device", self.device)
        bounds.device(problems, "spec.targetDevice", self.target_device)
        self._check_action_blocks(problems)
        problems.raise_if_any()

    def _check_action_blocks(self, problems: Problems) -> None:
        if self.action in ("delay", "loss", "duplicate", "corrupt", "bandwidth"):
            if getattr(self, self.action) is None:
                problems.add(f"spec.{self.action}", f"required for action {self.action}")
        if self.action == "netem" and not any(
            b is not None for b in (self.delay, self.loss, self.duplicate, self.corrupt, self.rate)
        ):
            problems.add("spec", "action netem needs at least one of delay, loss, duplicate, corrupt, rate")
        if self.delay is not None:
            _latency(problems, "spec.delay.latency", self.delay.latency, "100ms", required=True)
            _latency(problems, "spec.delay.jitter", self.delay.jitter, "10ms", required=False)
            _percent(problems, "spec.delay.correlation", self.delay.correlation)
            if self.delay.reorder is not None:
                _percent(problems, "spec.delay.reorder.reorder", self.delay.reorder.reorder)
                _percent(problems, "spec.delay.reorder.correlation", self.delay.reorder.correlation)
                bounds.unsigned(problems, "spec.delay.reorder.gap", self.delay.reorder.gap)
        for name in ("loss", "duplicate", "corrupt"):
            block = getattr(self, name)
            if block is not None:
                _percent(problems, f"spec.{name}.{name}", getattr(block, name))
                _percent(problems, f"spec.{name}.correlation", block.correlation)
        if self.bandwidth is not None:
            bw = self.bandwidth
            _rate(problems, "spec.bandwidth.rate", bw.rate, "1mbps or 100kbit")
            if bw.limit < 1:
                problems.add("spec.bandwidth.limit", "required, must be >= 1")
            if bw.buffer < 1:
                problems.add("spec.bandwidth.buffer", "required, must be >= 1")
            # tbf's limit, burst and peak burst are u32 netlink fields, its peak rate a u64
            bounds.unsigned(problems, "spec.bandwidth.limit", bw.limit)
            bounds.unsigned(problems, "spec.bandwidth.buffer", bw.buffer)
            bounds.unsigned(problems, "spec.bandwidth.minburst", bw.minburst)
            bounds.unsigned(problems, "spec.bandwidth.peakrate", bw.peakrate, bounds.U64)
        if self.rate is not None:
            _rate(problems, "spec.rate.rate", self.rate.rate, "1mbps")


def _latency(problems: Problems, path: str, value: str, example: str, *, required: bool) -> None:
    if not value and not required:
        return
    if not _LATENCY.match(value):
        problems.add(path, f"expected e.g. {example}, got {bounds.show(value)}")
        return
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        problems.add(path, str(e))
        return
    if seconds > bounds.MAX_DURATION_S:
        problems.add(path, f"must be at most {bounds.MAX_DURATION_S // 3600}h, got {bounds.show(value)}")


def _rate(problems: Problems, path: str, value: str, example: str) -> None:
    """A rate in bit or bps units whose bytes per second fit the kernel's u64 (binary multiples, the
    larger of the two readings, bound both)."""
    match = _RATE.match(value)
    if match is None:
        problems.add(path, f"expected e.g. {example}, got {bounds.show(value)}")
    elif int(match.group(1)) * 1024 ** "_kmgt".index(match.group(2).lower() or "_") > bounds.U64:
        problems.add(path, f"must be at most {bounds.U64} bytes per second, got {bounds.show(value)}")


def _percent(problems: Problems, path: str, value: str) -> None:
    try:
        f = float(value)
    except ValueError:
        problems.add(path, f"expected a number, got {bounds.show(value)}")
        return
    if not 0 <= f <= 100:
        problems.add(path, f"expected a percentage in [0, 100], got {bounds.show(value)}")


class ExternalTarget(msgspec.Struct, frozen=True, kw_only=True):
    """One parsed `externalTargets` entry: a network (IPv4/CIDR) or a hostname, optional port."""

    network: str = ""
    hostname: str = ""
    port: int | None = None


def parse_external(text: str) -> ExternalTarget | None:
    """Parse `1.2.3.4`, `10.0.0.0/8`, `example.com`, each with an optional `:port`; None if invalid."""
    host, port = text.strip(), None
    if host.count(":") == 1:
        host, port_text = host.split(":")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return None
        port = int(port_text)
    try:
        net = ipaddress.IPv4Network(host, strict=False)
        return ExternalTarget(network=str(net), port=port)
    except ValueError:
        pass
    if _HOSTNAME.match(host) and not host.replace(".", "").isdigit():
        return ExternalTarget(hostname=host.lower(), port=port)
    return None
