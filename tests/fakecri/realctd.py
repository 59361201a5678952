"""A real containerd (Debian's package) for tests: a private daemon on a socket in a temp dir,
a one-layer OCI image of busybox-static imported into it, and just enough CRI (RunPodSandbox with
host network, CreateContainer, StartContainer, teardown) to run a container the way a kubelet
would, encoded with the injector's own wire primitives. Skips, saying why, without the binaries.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from chaosbus.injector.backends import criwire as w

IMAGE = "docker.io/library/chaosbus-test:1"
BUSYBOX = "/bin/busybox"
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
SERVICE = "/runtime.v1.RuntimeService/"
PRIVILEGED = 1


def missing() -> str | None:
    """Why a real containerd cannot run here, or None."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("containerd", "ctr", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install containerd)"
    if not os.path.exists(BUSYBOX):
        return f"{BUSYBOX} missing (apt-get install busybox-static)"
    return None


def missing_cni() -> str | None:
    if not os.path.exists(os.path.join(CNI_BIN_DIR, "ptp")):
        return f"no CNI plugins in {CNI_BIN_DIR} (apt-get install containernetworking-plugins)"
    return None


def _blob(root: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def busybox_layer() -> bytes:
    """One image layer: busybox-static as /bin/busybox, /bin/sleep and /bin/sh links to it."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        tar.add(BUSYBOX, arcname="bin/busybox")
        for name in ("sleep", "sh"):
            info = tarfile.TarInfo(f"bin/{name}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return layer.getvalue()


def image_config(layer: bytes) -> dict[str, object]:
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sleep", "3600"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}"]},
    }


def build_image(path: Path) -> None:
    """An OCI image archive of the busybox layer."""
    root = path.with_suffix(".d")
    layer = busybox_layer()
    layer_desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar", **_blob(root, layer)}
    config = image_config(layer)
    config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json", **_blob(root, json.dumps(config).encode())}
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
    }
    manifest_desc = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **_blob(root, json.dumps(manifest).encode()),
        "annotations": {"io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": "1"},
    }
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest_desc]}))
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    with tarfile.open(path, "w") as tar:
        for item in sorted(root.iterdir()):
            tar.add(item, arcname=item.name)


NODE_NETWORK = 2  # NamespaceMode NODE; POD (0) is the default


def _sandbox_config(name: str, host_network: bool) -> bytes:
    metadata = w.string_field(1, name) + w.string_field(2, f"uid-{name}") + w.string_field(3, "default")
    namespaces = w.bytes_field(1, w.varint_field(1, NODE_NETWORK)) if host_network else b""
    security = namespaces + w.varint_field(6, PRIVILEGED)  # LinuxSandboxSecurityContext
    linux = w.bytes_field(2, security)  # LinuxPodSandboxConfig{security_context}
    hostname = b"" if host_network else w.string_field(2, name)
    return w.bytes_field(1, metadata) + hostname + w.bytes_field(8, linux)


def _first_string(raw: bytes) -> str:
    for number, _, value in w.fields(raw):
        if number == 1 and isinstance(value, bytes):
            return value.decode()
    raise AssertionError(f"no field 1 in {raw!r}")


@dataclass
class Containerd:
    dir: Path
    socket: Path
    process: subprocess.Popen[bytes]
    channel: grpc.Channel

    def call(self, method: str, request: bytes) -> bytes:
        fn = self.channel.unary_unary(SERVICE + method, request_serializer=None, response_deserializer=None)
        result: bytes = fn(request, timeout=60)
        return result

    def run_container(self, pod: str, argv: list[str], *, host_network: bool = True) -> tuple[str, str]:
        """(sandbox id, container id) of a running container in a new pod: on the host's network,
        or in its own network namespace (CNI ptp: a veth pair to the host, an address)."""
        sandbox = _sandbox_config(pod, host_network)
        sandbox_id = _first_string(self.call("RunPodSandbox", w.bytes_field(1, sandbox)))
        config = (
            w.bytes_field(1, w.string_field(1, "app"))
            + w.bytes_field(2, w.string_field(1, IMAGE))
            + b"".join(w.string_field(3, a) for a in argv)
        )
        created = self.call(
            "CreateContainer", w.string_field(1, sandbox_id) + w.bytes_field(2, config) + w.bytes_field(3, sandbox)
        )
        container_id = _first_string(created)
        self.call("StartContainer", w.string_field(1, container_id))
        return sandbox_id, container_id

    def remove_sandbox(self, sandbox_id: str) -> None:
        self.call("StopPodSandbox", w.string_field(1, sandbox_id))
        self.call("RemovePodSandbox", w.string_field(1, sandbox_id))


def _config(root: Path) -> str:
    return f"""version = 2
root = "{root}/root"
state = "{root}/state"
[grpc]
  address = "{root}/c.sock"
[ttrpc]
  address = "{root}/c.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{root}/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    Root = "{root}/runc"
"""


# containerd 1.6 puts its shims' sockets under /run/containerd/s whatever its configuration says.
SHIM_SOCKET_DIR = Path("/run/containerd/s")


@contextlib.contextmanager
def containerd(root: Path) -> Iterator[Containerd]:
    """A private containerd in `root` (short: socket paths are limited to 107 bytes), with the
    test image imported; stopped on exit, and the host directories it made removed if empty."""
    made = [d for d in (SHIM_SOCKET_DIR.parent, SHIM_SOCKET_DIR) if not d.exists()]
    (root / "config.toml").write_text(_config(root))
    (root / "net.d").mkdir()
    # ptp: a veth pair per pod and a host route, both removed with the pod; no bridge to clean up.
    subnet = f"10.217.{random.randrange(1, 255)}.0/24"
    ipam = {"type": "host-local", "subnet": subnet, "dataDir": str(root / "ipam"), "routes": [{"dst": "0.0.0.0/0"}]}
    (root / "net.d" / "10-ptp.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "0.4.0",
                "name": "chaosbus-test",
                "plugins": [{"type": "ptp", "ipMasq": False, "ipam": ipam}],
            }
        )
    )
    log = open(root / "containerd.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(["containerd", "--config", str(root / "config.toml")], stdout=log, stderr=log)
    channel = None
    try:
        sock = root / "c.sock"
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not start: {(root / 'containerd.log').read_text()[-2000:]}")
            time.sleep(0.1)
        build_image(root / "image.tar")
        subprocess.run(
            [
                "ctr",
                "-a",
                str(sock),
                "-n",
                "k8s.io",
                "images",
                "import",
                "--snapshotter",
                "native",
                str(root / "image.tar"),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        channel = grpc.insecure_channel(f"unix://{sock}")
        yield Containerd(root, sock, proc, channel)
    finally:
        if channel is not None:
            channel.close()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
        for d in reversed(made):
            with contextlib.suppress(OSError):
                d.rmdir()
