"""The backends a fault runs on: every piece of state the injector keeps about the kernel objects,
servers and helpers it drives lives in one `Backends`, built once by the injector's edge (`build`)
and handed to the executor, which passes it to every fault in its `FaultContext`. Nothing of it is
module state, so two injectors in one process, or a test with its own `Backends`, share nothing.
"""

from __future__ import annotations

import atexit
import threading
from dataclasses import dataclass

from chaosbus.injector.backends import dnsresponder, gosql, httpproxy, iofs, nft, pernetns, procs, tc
from chaosbus.injector.backends.exemptions import Exemptions
from chaosbus.injector.backends.runtimes import RuntimeConfig, Runtimes


@dataclass(frozen=True)
class Backends:
    nft: nft.Tables  # nftables transactions (libnftables contexts, or nft processes)
    tc: tc.Shaper  # traffic-shaping state: the rules on every device this injector shapes
    dns: pernetns.Servers[dnsresponder.Responder]  # DNSChaos responders, one per network namespace
    http: pernetns.Servers[httpproxy.Proxy]  # HTTPChaos proxies, one per network namespace
    runtimes: Runtimes  # the container runtimes' adapters (CRI, Docker) that resolve container IDs
    exempt: Exemptions  # our own control traffic (NATS, CHAOSBUS_EXEMPT), which no fault may cut
    elf: gosql.ElfCache  # parsed Go binaries (GolangChaos plans, its sweep)
    netns_procs: procs.NetnsProcesses  # the processes of each netns, for the sweeps that look at them
    iofs: iofs.Volumes  # IOChaos: a lock per served volume, the iofs servers being watched

    def close(self) -> None:
        """Let go of what is held open (libnftables contexts, netlink threads, runtime connections)."""
        self.nft.close()
        self.tc.links.close_all()
        self.runtimes.close()


def build(runtimes: RuntimeConfig | None = None, nats_url: str | None = None) -> Backends:
    """A fresh set of backends, sharing nothing with any other; `runtimes`: the runtime sockets
    and deadline (None: from the environment, on first use); `nats_url`: the NATS server(s) the
    injector talks to, exempt from every fault (None: as `config.nats_url` finds it)."""
    return Backends(
        nft=nft.Tables(nft.open_contexts()),
        tc=tc.Shaper(),
        dns=dnsresponder.servers(),
        http=httpproxy.servers(),
        runtimes=Runtimes(runtimes),
        exempt=Exemptions(nats_url),
        elf=gosql.ElfCache(),
        netns_procs=procs.NetnsProcesses(),
        iofs=iofs.Volumes(),
    )


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
