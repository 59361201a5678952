"""The kernel lane's boot artefacts (scripts/kernel_lane.py), built without booting anything: the
kernel found inside a bzImage, the modules in dependency order, and an initramfs the kernel can read.
"""

from __future__ import annotations

import importlib.util
import lzma
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lane() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kernel_lane", ROOT / "scripts" / "kernel_lane.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_newc(archive: bytes) -> list[tuple[str, int, bytes]]:
    """The (name, mode, data) entries of a newc cpio archive, as the kernel's initramfs unpacker reads them."""
    out, pos = [], 0
    while True:
        assert archive[pos : pos + 6] == b"070701"
        fields = [int(archive[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        pos += 110
        name = archive[pos : pos + namesize - 1].decode()
        pos = (pos + namesize + 3) & ~3
        data = archive[pos : pos + size]
        pos = (pos + size + 3) & ~3
        if name == "TRAILER!!!":
            assert pos == len(archive)
            return out
        out.append((name, mode, data))


def test_initramfs_archive_reads_back(lane: ModuleType) -> None:
    entries = [
        ("bin", 0o40755, b""),
        ("bin/busybox", 0o100755, b"\x7fELF" + bytes(range(7))),
        ("init", 0o100755, b"#!"),
    ]
    assert read_newc(lane.cpio_newc(entries)) == entries


def test_modules_come_dependencies_first_once_each(lane: ModuleType) -> None:
    dep = (
        "kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko\n"
        "kernel/net/9p/9pnet.ko:\n"
        "kernel/fs/netfs/netfs.ko:\n"
        "kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio_ring.ko\n"
        "kernel/drivers/virtio/virtio_ring.ko:\n"
        "kernel/fs/overlayfs/overlay.ko:\n"
    )
    assert lane.module_order(dep, ["9pnet-virtio", "9p", "overlay"]) == [
        "kernel/net/9p/9pnet.ko",
        "kernel/drivers/virtio/virtio_ring.ko",
        "kernel/net/9p/9pnet_virtio.ko",
        "kernel/fs/netfs/netfs.ko",
        "kernel/fs/9p/9p.ko",
        "kernel/fs/overlayfs/overlay.ko",
    ]
    with pytest.raises(ValueError, match="sch_netem"):
        lane.module_order(dep, ["sch_netem"])


def test_the_elf_kernel_is_found_inside_a_bzimage(lane: ModuleType) -> None:
    elf = b"\x7fELF" + bytes(1000)
    # a stray xz magic in the setup code, then the real payload followed by trailing data
    bzimage = b"MZ setup \xfd7zXZ\x00 not a stream " + lzma.compress(elf, format=lzma.FORMAT_XZ) + b"\0size"
    assert lane.extract_vmlinux(bzimage) == elf
    with pytest.raises(ValueError):
        lane.extract_vmlinux(b"MZ no payload")
