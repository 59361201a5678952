"""The backends a fault runs on: every piece of state the injector keeps about the kernel objects,
servers and helpers it drives lives in one `Backends`, built once by the injector's edge (`build`)
and handed to the executor, which passes it to every fault in its `FaultContext`. Nothing of it is
module state, so two injectors in one process, or a test with its own `Backends`, share nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import threading
from typing import TYPE_CHECKING

from chaosbus.injector.backends.runtimes import RuntimeConfig, Runtimes

# Each part's module is imported when the part is made: one who makes none (the cluster injector)
# loads no kernel library (pyroute2, the netlink glue).
if TYPE_CHECKING:
    from chaosbus.injector.backends import dnsresponder, gosql, httpproxy, pernetns, procs
    from chaosbus.injector.backends import iofs as iofsmod
    from chaosbus.injector.backends import nft as nftables
    from chaosbus.injector.backends import tc as shaping
    from chaosbus.injector.backends.exemptions import Exemptions


class Backends:
    """Each part is made on first use unless given: an injector whose faults never touch the kernel
    (the cluster injector) makes none of them. `build` makes them all at once."""

    def __init__(
        self,
        runtimes: RuntimeConfig | None = None,
        nats_url: str | None = None,
        *,
        nft: nftables.Tables | None = None,
    ) -> None:
        self._runtime_config, self._nats_url = runtimes, nats_url
        if nft is not None:
            self.__dict__["nft"] = nft

    @functools.cached_property
    def nft(self) -> nftables.Tables:  # nftables transactions (libnftables contexts, or nft processes)
        from chaosbus.injector.backends import nft as nftables

        return nftables.Tables(nftables.open_contexts())

    @functools.cached_property
    def tc(self) -> shaping.Shaper:  # traffic-shaping state: the rules on every device this injector shapes
        from chaosbus.injector.backends import tc as shaping

        return shaping.Shaper()

    @functools.cached_property
    def dns(self) -> pernetns.Servers[dnsresponder.Responder]:  # DNSChaos responders, one per netns
        from chaosbus.injector.backends import dnsresponder

        return dnsresponder.servers()

    @functools.cached_property
    def http(self) -> pernetns.Servers[httpproxy.Proxy]:  # HTTPChaos proxies, one per netns
        from chaosbus.injector.backends import httpproxy

        return httpproxy.servers()

    @functools.cached_property
    def runtimes(self) -> Runtimes:  # the container runtimes' adapters (CRI, Docker) that resolve IDs
        return Runtimes(self._runtime_config)

    @functools.cached_property
    def exempt(self) -> Exemptions:  # our own control traffic (NATS, CHAOSBUS_EXEMPT), which no fault may cut
        from chaosbus.injector.backends.exemptions import Exemptions

        return Exemptions(self._nats_url)

    @functools.cached_property
    def elf(self) -> gosql.ElfCache:  # parsed Go binaries (GolangChaos plans, its sweep)
        from chaosbus.injector.backends import gosql

        return gosql.ElfCache()

    @functools.cached_property
    def netns_procs(self) -> procs.NetnsProcesses:  # the processes of each netns, for the sweeps
        from chaosbus.injector.backends import procs

        return procs.NetnsProcesses()

    @functools.cached_property
    def iofs(self) -> iofsmod.Volumes:  # IOChaos: a lock per served volume, the iofs servers being watched
        from chaosbus.injector.backends import iofs as iofsmod

        return iofsmod.Volumes()

    def prepare(self) -> None:
        """Do now, once, what a node's first fault would otherwise wait for (blocking; the node
        injector runs it at start): the nftables and tc capability probes, each a kernel
        transaction of 5-25 ms (the nft one spawned a process, 20-30 ms and 7 ms of CPU, on the
        first partition's path), and the netns visitor threads started. Nothing is made per netns
        ahead of its first fault: a libnftables context costs 0.1-0.2 ms then, and 0.9 MB for as
        long as it is kept (a node's 1,000 pods: 0.9 GB).
        """
        from chaosbus.common import netns

        for step in (self.nft.cannot, self.tc.capabilities, netns.start_visitors):
            # A probe that fails keeps no answer: the first fault that needs it asks again and
            # reports the failure as its own, as it would have without this.
            with contextlib.suppress(Exception):
                step()

    def made(self) -> list[str]:
        """The parts made so far."""
        return sorted(k for k in vars(self) if k in PARTS)

    def close(self) -> None:
        """Let go of what is held open (libnftables contexts, netlink threads, runtime connections)."""
        made = vars(self)
        if "nft" in made:
            self.nft.close()
        if "tc" in made:
            self.tc.links.close_all()
        if "runtimes" in made:
            self.runtimes.close()


PARTS = ("nft", "tc", "dns", "http", "runtimes", "exempt", "elf", "netns_procs", "iofs")


def build(runtimes: RuntimeConfig | None = None, nats_url: str | None = None) -> Backends:
    """A fresh set of backends, sharing nothing with any other, every part made now (a node's first
    fault does not wait for libnftables); `runtimes`: the runtime sockets and deadline (None: from
    the environment, on first use); `nats_url`: the NATS server(s) the injector talks to, exempt
    from every fault (None: as `config.nats_url` finds it)."""
    made = Backends(runtimes, nats_url)
    for part in PARTS:
        getattr(made, part)
    return made


def on_demand(nats_url: str | None = None) -> Backends:
    """Backends that make each part only when a fault first uses it: for the cluster injector, whose
    faults go through the Kubernetes API and use none (no libnftables, no threads, no probes)."""
    return Backends(nats_url=nats_url)


class _Default:
    """The process's default backends, made on first use, once however many threads ask at once
    (two sets would each shape, and rebuild, the same devices)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._made: Backends | None = None

    def get(self) -> Backends:
        with self._lock:
            if self._made is None:
                self._made = build()
                atexit.register(self._made.close)  # sockets closed, not left to the garbage collector
            return self._made


_DEFAULT = _Default()


def process_backends() -> Backends:
    """The backends of callers that hand in none (tools, benchmarks, tests of one fault), built on
    first use and closed at exit; the injector service builds and passes its own.
    """
    return _DEFAULT.get()
