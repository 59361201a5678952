"""The kernel lane: runs a command (by default the NetworkChaos shaping tests) inside a QEMU virtual
machine that boots Debian's stock kernel, which has `sch_netem` where the host kernel may not.

QEMU runs in software emulation (TCG: the host's /dev/kvm may not run stock kernels), with no
network device at all, so nothing in the guest can reach the host's network. The guest sees the
host's root file system read-only over virtio-9p (the checkout, its .venv and every tool), with
throwaway writable layers over /tmp, /run, /var, /etc and /root, and one read-write folder shared
with the host through which the command's output and exit code come back (QEMU itself always exits
0). Boot artefacts (the uncompressed kernel and a tiny busybox initramfs) are built once per
kernel and init and cached.

    python3 scripts/kernel_lane.py [-- COMMAND...]

Exit code: the command's inside the guest, or 2 when the guest never reported one. Stdlib only:
it runs before (and without) the project's virtualenv being importable in the guest.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import io
import lzma
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
BUSYBOX = Path("/bin/busybox")
# What the initramfs loads before it can mount the host's root: virtio PCI transport, 9p over
# virtio, and overlayfs for the writable layers (the stock kernel builds them all as modules).
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
# The tests that need sch_netem (marked `netem`), with their measured figures printed (-s), run by
# this same interpreter (the checkout's .venv: the guest sees the same paths).
DEFAULT_COMMAND = (
    sys.executable,
    "-m",
    "pytest",
    "-q",
    "-s",
    "-p",
    "no:cacheprovider",
    "-m",
    "netem",
    "tests/privileged/test_netem_traffic.py",
    "tests/privileged/test_shaping_compose.py",
)

# PID 1 of the initramfs: load the modules, mount the host's root, lay writable layers over it (an
# overlay on /tmp too, not an empty tmpfs: a checkout under /tmp must stay visible to the guest) and
# switch to it, so the kernel's own module loader (request_module -> /sbin/modprobe) finds the
# host's /lib/modules when the injector asks for a qdisc that is not loaded yet.
INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /bin /sbin /dev /proc /host
/bin/busybox --install -s /bin
mount -t devtmpfs dev /dev
mount -t proc proc /proc
for m in /modules/*.ko; do insmod "$m" || echo "kernel lane: insmod $m failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose host /host || exec sh
mount -t tmpfs -o size=160m,mode=755 run /host/run
for d in tmp etc var root; do
  mkdir -p /host/run/.layers/$d/up /host/run/.layers/$d/work
  mount -t overlay -o lowerdir=/host/$d,upperdir=/host/run/.layers/$d/up,workdir=/host/run/.layers/$d/work \
    overlay /host/$d || mount -t tmpfs -o size=32m $d /host/$d
done
mkdir -p /host/tmp/lane
mount -t 9p -o trans=virtio,version=9p2000.L lane /host/tmp/lane || exec sh
mount --move /dev /host/dev
mount --move /proc /host/proc
mount -t sysfs sys /host/sys
exec switch_root /host /bin/sh /tmp/lane/guest.sh
"""

# PID 1 after the switch (the host's /bin/sh: busybox's shell would prefer its own applets over the
# host's tools): the command, its output tee'd into the shared folder, then power off.
GUEST = r"""set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
mkdir -p /dev/pts /dev/shm /run/netns /var/run /sys/fs/cgroup
mount -t devpts devpts /dev/pts
mount -t tmpfs -o size=64m shm /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
ip link set lo up
cd {checkout}
{{ sh /tmp/lane/run.sh; echo $? > /tmp/lane/rc; }} 2>&1 | /bin/busybox tee /tmp/lane/output.log
sync
/bin/busybox poweroff -f
"""


def kernel_release(vmlinuz: Path) -> str:
    return vmlinuz.name.removeprefix("vmlinuz-")


def find_vmlinuz() -> Path:
    found = sorted(Path("/boot").glob("vmlinuz-*"))
    if not found:
        raise SystemExit("kernel lane: no /boot/vmlinuz-* (scripts/install-kernel-lane.sh installs one)")
    return found[-1]


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The uncompressed ELF kernel inside a bzImage (xz, the stock kernel's compression).

    Booting it directly saves the decompression, which takes seconds under emulation.
    """
    start = 0
    while (start := bzimage.find(b"\xfd7zXZ\x00", start)) >= 0:
        try:
            out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[start:])
        except lzma.LZMAError:
            start += 1
            continue
        if out.startswith(b"\x7fELF"):
            return out
        start += 1
    raise ValueError("no xz-compressed ELF kernel found in the bzImage")


def module_order(modules_dep: str, wanted: Iterable[str]) -> list[str]:
    """The module files to insmod, dependencies first, for `wanted` (names as modprobe takes them)."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        by_name[Path(path).name.removesuffix(".ko").replace("-", "_")] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in wanted:
        path = by_name.get(name.replace("-", "_"))
        if path is None:
            raise ValueError(f"module {name} is not in modules.dep")
        visit(path)
    return order


def cpio_newc(entries: Iterable[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive (the initramfs format) of (path, mode, data); directories have no data."""
    out = io.BytesIO()

    def pad() -> None:
        out.write(b"\0" * (-out.tell() % 4))

    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        raw = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0)
        out.write(b"070701" + b"".join(b"%08x" % f for f in fields) + raw)
        pad()
        out.write(data)
        pad()
    return out.getvalue()


def build_initramfs(release: str) -> bytes:
    modules = Path("/lib/modules") / release
    order = module_order((modules / "modules.dep").read_text(), BOOT_MODULES)
    entries: list[tuple[str, int, bytes]] = [(d, 0o40755, b"") for d in ("bin", "modules", "dev", "proc", "host")]
    entries.append(("bin/busybox", 0o100755, BUSYBOX.read_bytes()))
    entries.append(("init", 0o100755, INIT.encode()))
    entries += [(f"modules/{i:02d}-{Path(p).name}", 0o100644, (modules / p).read_bytes()) for i, p in enumerate(order)]
    return cpio_newc(entries)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)  # concurrent lanes build the same bytes: whichever rename wins is right


def boot_artefacts(cache: Path) -> tuple[Path, Path]:
    """(vmlinux, initramfs) for the newest installed kernel, built once and kept in `cache`."""
    vmlinuz = find_vmlinuz()
    release = kernel_release(vmlinuz)
    if not BUSYBOX.exists():
        raise SystemExit("kernel lane: no /bin/busybox (busybox-static; scripts/install-kernel-lane.sh)")
    stamp = hashlib.sha256(
        INIT.encode() + repr(BOOT_MODULES).encode() + str(BUSYBOX.stat().st_size).encode()
    ).hexdigest()[:12]
    cache.mkdir(parents=True, exist_ok=True)
    vmlinux = cache / f"vmlinux-{release}"
    initramfs = cache / f"initramfs-{release}-{stamp}.cpio"
    if not vmlinux.exists():
        _write_atomically(vmlinux, extract_vmlinux(vmlinuz.read_bytes()))
    if not initramfs.exists():
        _write_atomically(initramfs, build_initramfs(release))
    return vmlinux, initramfs


def default_cache() -> Path:
    explicit = os.environ.get("CHAOSBUS_KERNEL_LANE_CACHE")
    if explicit:
        return Path(explicit)
    system = Path("/var/cache/chaosbus/kernel-lane")
    try:
        system.mkdir(parents=True, exist_ok=True)
        if os.access(system, os.W_OK):
            return system
    except OSError:
        pass
    return CHECKOUT / ".cache" / "kernel-lane"


def qemu_argv(vmlinux: Path, initramfs: Path, shared: Path, memory_mb: int, cpus: int) -> list[str]:
    return [
        "qemu-system-x86_64",
        "-M",
        "pc",
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-smp",
        str(cpus),
        "-m",
        str(memory_mb),
        # No default devices: in particular no network card, so the guest has only loopback.
        "-nodefaults",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
        str(vmlinux),
        "-initrd",
        str(initramfs),
        # no_timer_check: on a loaded host the emulated timer can miss the kernel's IO-APIC check
        # window, which then panics ("IO-APIC + timer doesn't work!").
        "-append",
        "console=ttyS0 quiet loglevel=1 panic=-1 no_timer_check rdinit=/init",
        "-virtfs",
        "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
        "-virtfs",
        f"local,path={shared},mount_tag=lane,security_model=none,multidevs=remap",
    ]


def run(command: list[str], memory_mb: int, cpus: int, timeout_s: float, nice: int) -> int:
    vmlinux, initramfs = boot_artefacts(default_cache())
    # The guest sees the checkout read-only: without bytecode written here first, every Python
    # process in it would compile the project again, at emulated speed.
    for folder in ("libs", "services", "cli", "tests"):
        compileall.compile_dir(CHECKOUT / folder, quiet=2)
    shared = Path(tempfile.mkdtemp(prefix="chaosbus-kernel-lane-"))
    try:
        (shared / "guest.sh").write_text(GUEST.format(checkout=shlex.quote(str(CHECKOUT))))
        (shared / "run.sh").write_text(shlex.join(command) + "\n")
        argv = qemu_argv(vmlinux, initramfs, shared, memory_mb, cpus)
        if nice:
            argv = ["nice", "-n", str(nice), *argv]
        print(
            f"kernel lane: booting {vmlinux.name} under QEMU (TCG, {cpus} vCPU, {memory_mb} MB, no network)", flush=True
        )
        started = time.monotonic()
        qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        # A guest that hangs prints nothing: the watchdog ends it, and the missing exit code fails the lane.
        watchdog = threading.Timer(timeout_s, qemu.kill)
        watchdog.start()
        try:
            assert qemu.stdout is not None
            for raw in qemu.stdout:
                sys.stdout.write(raw.decode(errors="replace").replace("\r\n", "\n").replace("\r", ""))
                sys.stdout.flush()
            qemu.wait()
        finally:
            timed_out = not watchdog.is_alive()
            watchdog.cancel()
        elapsed = time.monotonic() - started
        rc_file = shared / "rc"
        rc = int(rc_file.read_text().strip()) if rc_file.exists() else 2
        why = "timed out" if timed_out else ("exited" if rc_file.exists() else "ended without an exit code")
        print(f"kernel lane: guest {why} after {elapsed:.0f} s with exit code {rc}")
        summary = _summary_line(shared / "output.log")
        if summary:
            print(summary)  # the runner's closing line stays the last line of the lane's output
        return rc
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def _summary_line(log: Path) -> str | None:
    if not log.exists():
        return None
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if re.search(r"\b(passed|failed|skipped|errors?|no tests ran)\b.* in [\d.]+s", line):
            return line
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memory", type=int, default=768, help="guest memory in MB (default 768)")
    parser.add_argument("--cpus", type=int, default=2, help="guest vCPUs (default 2)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds before the guest is killed")
    parser.add_argument(
        "--nice",
        type=int,
        default=int(os.environ.get("CHAOSBUS_KERNEL_LANE_NICE", "10")),
        help="niceness of QEMU on the shared machine (default 10)",
    )
    parser.add_argument(
        "command", nargs="*", help="what to run in the checkout inside the guest (default: pytest on the shaping tests)"
    )
    args = parser.parse_args()
    command = args.command or list(DEFAULT_COMMAND)
    return run(command, args.memory, args.cpus, args.timeout, args.nice)


if __name__ == "__main__":
    sys.exit(main())
