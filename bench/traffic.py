"""Whether traffic actually flows: probe packets sent from inside a few target netns towards the
partitioned network, to time when a duration-expired partition stops dropping (how far past its
deadline a fault is actually recovered).

A packet that the partition drops on the way out fails at once with EPERM (netfilter's verdict on
a locally generated packet), so every send answers "blocked" or "flows" without waiting for a
reply. Each sampled netns gets its loopback up and a route for the blackhole network through it,
so a packet has somewhere to go once nothing drops it. Only a sample is probed: the table removal
of every target is timed separately (the `expiry.N` figure).
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import time
from dataclasses import dataclass

from chaosbus.common import netns as nsu

PROBE_NETWORK = "192.0.2.0/24"  # the experiments' externalTargets (scenarios.experiment_yaml)
PROBE_DEST = ("192.0.2.1", 9)
POLL_S = 0.002  # 2 ms resolution; ten sends per sweep cost little CPU


@dataclass
class Probed:
    flowed_at: float | None = None  # first send that went out
    blocked_seen: bool = False  # at least one send was dropped before that
    error: str = ""


class TrafficProbe:
    def __init__(self, netns_paths: list[str]) -> None:
        self.paths = netns_paths
        self.socks: list[socket.socket] = []
        for path in netns_paths:
            name = os.path.basename(path)
            for argv in (
                ["ip", "-n", name, "link", "set", "lo", "up"],
                ["ip", "-n", name, "route", "replace", PROBE_NETWORK, "dev", "lo"],
            ):
                subprocess.run(argv, check=True, capture_output=True, timeout=10)
            self.socks.append(nsu.visit_netns(path, socket.socket, socket.AF_INET, socket.SOCK_DGRAM))

    def close(self) -> None:
        for s in self.socks:
            s.close()

    def watch(self, until: float) -> list[Probed]:
        """Send from every sampled netns every POLL_S until each one's traffic flows, or `until`."""
        out = [Probed() for _ in self.socks]
        pending = set(range(len(self.socks)))
        while pending and time.time() < until:
            for i in list(pending):
                try:
                    self.socks[i].sendto(b"p", PROBE_DEST)
                except OSError as e:
                    if e.errno == errno.EPERM:
                        out[i].blocked_seen = True
                        continue
                    out[i].error = f"{errno.errorcode.get(e.errno or 0, e.errno)}: {e.strerror}"
                    pending.discard(i)
                    continue
                out[i].flowed_at = time.time()
                pending.discard(i)
            time.sleep(POLL_S)
        return out
