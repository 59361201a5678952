"""The physical floor, measured in the same run as the figures: one NATS request/reply through the
embedded server, one nftables transaction in a netns (one `nsexec --net … nft -f -` process, the
injector's fallback where libnftables cannot be used, and through libnftables with a context kept
for the netns, the injector's way), one netlink request on a socket kept in the netns, and one kernel
readback from a fresh thread (what verifying one target costs).
"""

from __future__ import annotations

import asyncio
import subprocess
import time

from nats.errors import NoRespondersError

from bench import kernel
from chaosbus.common import bus as busmod
from chaosbus.injector.backends import nft
from chaosbus.injector.backends._glue import native

FLOOR_TABLE = "chaosbus_benchfloor"


async def nats_request_reply(url: str, runs: int) -> list[float]:
    """Round trips of a 64-byte request to a responder on its own connection (same process)."""
    responder = await busmod.connect(url, "bench-floor-responder")
    requester = await busmod.connect(url, "bench-floor-requester")
    try:

        async def reply(msg: object) -> None:
            await msg.respond(b"ok")  # type: ignore[attr-defined]

        await responder.nc.subscribe("bench.floor", cb=reply)
        await responder.nc.flush()
        payload = b"x" * 64
        # Warm up. The responder's interest can reach the requester's side of the server a moment
        # after its flush (seen now and then with authorization on): wait for it instead of failing.
        ready_by = time.monotonic() + 5.0
        warm = 0
        while warm < 10:
            try:
                await requester.nc.request("bench.floor", payload, timeout=2)
                warm += 1
            except NoRespondersError:
                if time.monotonic() > ready_by:
                    raise
                await asyncio.sleep(0.05)
        out = []
        for _ in range(runs):
            t = time.perf_counter()
            await requester.nc.request("bench.floor", payload, timeout=2)
            out.append(time.perf_counter() - t)
        return out
    finally:
        await requester.close()
        await responder.close()


def _committed(monitor: kernel.TableMonitor, path: str, present: bool, since: float) -> float:
    """Seconds from `since` until the monitor saw the floor table committed present/absent."""
    deadline = time.time() + 2.0
    while time.time() < deadline:
        state, at = monitor.state(path, FLOOR_TABLE)
        if state == present and at >= since:
            return at - since
        time.sleep(0.0002)
    return float("nan")


def _spawn_nft(path: str, script: str) -> None:
    """One nft process in the netns, as the injector spawns it without libnftables (backends/nft.py)."""
    argv = [native.helper("nsexec"), "--net", path, "--", "nft", "-f", "-"]
    subprocess.run(argv, input=script, capture_output=True, text=True, timeout=10.0, check=True)


def kernel_floors(
    path: str, runs: int, monitor: kernel.TableMonitor, lib: kernel.LibNft | None
) -> dict[str, list[float]]:
    """Per-operation wall seconds in the netns at `path` (nothing else uses it). For the spawned
    nft, both until the process exits and until the kernel announced the commit (`*_commit`): the
    process lingers ~10 ms after its commit, closing its netlink socket.
    """
    script = nft.render_partition_table(
        FLOOR_TABLE, [nft.ResolvedRule(chain="output", external=(nft.Endpoint("192.0.2.0/24"),))]
    )
    out: dict[str, list[float]] = {
        k: [] for k in ("nft_spawn_apply", "nft_spawn_delete", "nft_spawn_apply_commit", "nft_spawn_delete_commit")
    }
    replace = f"add table inet {FLOOR_TABLE}\ndelete table inet {FLOOR_TABLE}\n{script}"
    delete = f"add table inet {FLOOR_TABLE}\ndelete table inet {FLOOR_TABLE}\n"
    for _ in range(runs):
        for op, present in (("apply", True), ("delete", False)):
            wall, t = time.time(), time.perf_counter()
            _spawn_nft(path, replace if present else delete)
            out[f"nft_spawn_{op}"].append(time.perf_counter() - t)
            out[f"nft_spawn_{op}_commit"].append(_committed(monitor, path, present, wall))
    if lib is not None:
        full = f"add table inet {FLOOR_TABLE}\ndelete table inet {FLOOR_TABLE}\n{script}"
        gone = f"add table inet {FLOOR_TABLE}\ndelete table inet {FLOOR_TABLE}\n"
        lib.run(path, gone)
        out["libnft_apply"], out["libnft_delete"] = [], []
        for _ in range(runs):
            t = time.perf_counter()
            lib.run(path, full)
            out["libnft_apply"].append(time.perf_counter() - t)
            t = time.perf_counter()
            lib.run(path, gone)
            out["libnft_delete"].append(time.perf_counter() - t)
    ping = kernel.NetlinkPing(path)
    try:
        ping.ping()
        out["netlink_rr"] = kernel.timed(ping.ping, runs)
    finally:
        ping.close()
    out["readback"] = kernel.timed(lambda: kernel.list_tables(path), runs)
    return out


async def measure(
    url: str, path: str, runs: int, monitor: kernel.TableMonitor, lib: kernel.LibNft | None
) -> dict[str, list[float]]:
    floors = await asyncio.to_thread(kernel_floors, path, runs, monitor, lib)
    floors["nats_rr"] = await nats_request_reply(url, runs)
    return floors
