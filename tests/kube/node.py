"""A real single-node cluster on this host for the tests (../shared/envtest/NODE.md): a private
containerd (Debian's 1.6) with local images and a CNI bridge of its own, a kubelet registered with
the session's control plane, and kube-scheduler. No registry: the images are OCI archives built
here (a static pause program compiled with gcc, busybox-static) and imported under the names the
CRI normalises to; pods use `imagePullPolicy: Never`.

The host is left as it was: kubelet's sysctl rewrites are restored, its cgroups (under a cgroup
root of its own) removed bottom-up, its bind mount undone, the bridge deleted. Pods are deleted
through the API before kubelet stops so that it tears their networking down.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kube.client import KubeClient, KubeError
from kube.controlplane import ControlPlane

BUSYBOX = "/bin/busybox"
CNI_BIN_DIR = "/usr/lib/cni"
PAUSE_IMAGE = "docker.io/local/pause:1"
BUSYBOX_IMAGE = "docker.io/local/busybox:1"
APPLETS = ("sh", "sleep", "httpd", "nc", "wget", "cat", "echo", "true", "false")
# overlayfs: a container's root is a mount over the image, where "native" copies the whole image
# for every container (seconds each for the chaosbus image, serially on a busy machine).
SNAPSHOTTER = "overlayfs"
SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")
PAUSE_C = """#include <signal.h>
#include <unistd.h>
static void done(int sig) { (void)sig; _exit(0); }
int main(void) { signal(SIGTERM, done); signal(SIGINT, done); for (;;) pause(); }
"""


def missing() -> str | None:
    """Why a real node cannot run here, or None."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("containerd", "ctr", "runc", "gcc"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (make install as root installs it)"
    if not os.path.exists(BUSYBOX):
        return f"{BUSYBOX} missing (apt-get install busybox-static)"
    if not os.path.exists(os.path.join(CNI_BIN_DIR, "bridge")):
        return f"no CNI plugins in {CNI_BIN_DIR} (apt-get install containernetworking-plugins)"
    return None


def _blob(root: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def oci_archive(path: Path, name: str, files: dict[str, Path], links: dict[str, str], cmd: list[str]) -> None:
    """An OCI image archive of one layer (`files`: path in the image -> host file; `links`:
    symlinks), named `name` for `ctr images import`."""
    layer_io = io.BytesIO()
    with tarfile.open(fileobj=layer_io, mode="w") as tar:
        for arcname, src in files.items():
            tar.add(src, arcname=arcname)
        for arcname, target in links.items():
            info = tarfile.TarInfo(arcname)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    layer = layer_io.getvalue()
    root = path.with_suffix(".d")
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": cmd},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}"]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **_blob(root, json.dumps(config).encode())},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **_blob(root, layer)}],
    }
    desc = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **_blob(root, json.dumps(manifest).encode()),
        "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "1"},
    }
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    with tarfile.open(path, "w") as tar:
        for item in sorted(root.iterdir()):
            tar.add(item, arcname=item.name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _host_ip() -> str:
    """The address of the host's default route (kubelet's --node-ip)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.254", 9))
        ip: str = s.getsockname()[0]
        return ip


@dataclass
class Node:
    plane: ControlPlane
    dir: Path
    name: str = field(default_factory=lambda: f"cbnode-{random.randrange(16**4):04x}")
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    bridge: str = ""
    cgroup_root: str = ""
    subnet: str = ""  # the first three octets of the pods' /24
    made_dirs: list[Path] = field(default_factory=list)  # host dirs kubelet creates, absent before

    @property
    def socket(self) -> Path:
        """containerd's socket, alone in its folder under the name runtimes use by default (a
        DaemonSet mounts the folder at /run/containerd, as it would the host's)."""
        return self.dir / "run" / "containerd.sock"

    @property
    def gateway(self) -> str:
        """The host's address on the pods' bridge: where pods reach the host (and its cluster DNS)."""
        return f"{self.subnet}.1"

    def start(self) -> Node:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        for key in SYSCTLS:
            self.sysctls[key] = Path("/proc/sys", key).read_text().strip()
        self.made_dirs = [
            p
            for p in (Path("/var/lib/kubelet/device-plugins"), Path("/var/lib/kubelet"), Path("/var/log/containers"))
            if not p.exists()
        ]
        tag = self.name.split("-")[1]
        self.bridge, self.subnet = f"cbn{tag}", f"10.219.{random.randrange(1, 255)}"
        subnet = self.subnet
        self.cgroup_root = f"/{self.name}"
        # The bridge and its gateway address exist before the CNI plugin runs (isGateway off), so
        # the plugin never turns on the host's ip_forward; pods on it talk at layer 2.
        subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True, capture_output=True)
        subprocess.run(["ip", "addr", "add", f"{subnet}.1/24", "dev", self.bridge], check=True, capture_output=True)
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True, capture_output=True)
        self._cgroup_root()
        self._containerd(subnet)
        self._images()
        self._kubelet()
        self._scheduler()
        client = KubeClient(self.plane.kubeconfig)
        client.wait_for(lambda: self.ready(client), timeout=60, what=f"node {self.name} Ready")
        # kubelet registers the node tainted not-ready; the node lifecycle controller would lift it,
        # but it would also taint the test kubelet's heartbeat-less Nodes (tests/kube/kubelet.py).
        client.merge_patch(f"/api/v1/nodes/{self.name}", {"spec": {"taints": None}})

    def _cgroup_root(self) -> None:
        """kubelet's cgroup root (its pods' cgroups go below), made in every v1 hierarchy it checks."""
        for controller in Path("/sys/fs/cgroup").iterdir():
            if controller.is_dir() and not controller.is_symlink():
                top = controller / self.cgroup_root.lstrip("/")
                top.mkdir(exist_ok=True)
                for knob in ("cpuset.cpus", "cpuset.mems"):  # empty in a new cpuset: copy the parent's
                    if (top / knob).exists():
                        (top / knob).write_text((controller / knob).read_text())

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.dir / f"{name}.log").open("wb")
        self.procs.append(
            (name, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        )
        log.close()

    def _containerd(self, subnet: str) -> None:
        d = self.dir
        (d / "net.d").mkdir()
        ipam = {
            "type": "host-local",
            "subnet": f"{subnet}.0/24",
            "gateway": f"{subnet}.1",
            "rangeStart": f"{subnet}.10",
            "dataDir": str(d / "ipam"),
            "routes": [{"dst": "0.0.0.0/0"}],
        }
        (d / "net.d" / "10-bridge.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "0.4.0",
                    "name": self.name,
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": self.bridge,
                            "isGateway": False,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": ipam,
                        }
                    ],
                }
            )
        )
        self.socket.parent.mkdir()
        (d / "config.toml").write_text(f"""version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{d}/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{SNAPSHOTTER}"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    Root = "{d}/runc"
    SystemdCgroup = false
""")
        self._spawn("containerd", ["containerd", "--config", str(d / "config.toml")])
        deadline = time.monotonic() + 30
        while not self.socket.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not start: {self.log_tail('containerd')}")
            time.sleep(0.1)

    def _images(self) -> None:
        d = self.dir
        subprocess.run(
            ["gcc", "-Os", "-static", "-o", str(d / "pause"), "-x", "c", "-"],
            input=PAUSE_C.encode(),
            check=True,
            capture_output=True,
            timeout=120,
        )
        oci_archive(d / "pause.tar", PAUSE_IMAGE, {"pause": d / "pause"}, {}, ["/pause"])
        oci_archive(
            d / "busybox.tar",
            BUSYBOX_IMAGE,
            {"bin/busybox": Path(BUSYBOX)},
            {f"bin/{a}": "busybox" for a in APPLETS},
            ["/bin/sleep", "3600"],
        )
        for archive in ("pause.tar", "busybox.tar"):
            subprocess.run(
                [
                    "ctr",
                    "-a",
                    str(self.socket),
                    "-n",
                    "k8s.io",
                    "images",
                    "import",
                    "--snapshotter",
                    SNAPSHOTTER,
                    str(d / archive),
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )

    def _kubelet(self) -> None:
        d = self.dir
        (d / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        (d / "kubelet.yaml").write_text(
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "cgroupDriver": "cgroupfs",
                    "cgroupRoot": self.cgroup_root,
                    "failSwapOn": False,
                    "failCgroupV1": False,
                    "makeIPTablesUtilChains": False,
                    "podLogsDir": str(d / "logs"),
                    "resolvConf": str(d / "resolv.conf"),
                    # Pods resolve Service names at the host's bridge address, where a test that
                    # needs names runs a DNS server (tests/kube/clusternet.py); no one else looks.
                    "clusterDNS": [self.gateway],
                    "clusterDomain": "cluster.local",
                    "containerRuntimeEndpoint": f"unix://{self.socket}",
                    "port": _free_port(),
                    "readOnlyPort": 0,
                    "healthzPort": 0,
                    "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
                    "authorization": {"mode": "AlwaysAllow"},
                    "evictionHard": {
                        "memory.available": "1Mi",
                        "nodefs.available": "1%",
                        "imagefs.available": "1%",
                        "nodefs.inodesFree": "1%",
                    },
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "serializeImagePulls": False,
                    "enableServer": True,
                    "registerNode": True,
                    "nodeStatusUpdateFrequency": "2s",
                    "syncFrequency": "5s",
                    "fileCheckFrequency": "5s",
                    "localStorageCapacityIsolation": False,
                }
            )
        )
        (d / "kubelet.kubeconfig").write_text(self.plane.kubeconfig.read_text())
        self._spawn(
            "kubelet",
            [
                str(self.plane.bin_dir / "kubelet"),
                "--config",
                str(d / "kubelet.yaml"),
                "--kubeconfig",
                str(d / "kubelet.kubeconfig"),
                "--root-dir",
                str(d / "kubelet"),
                "--cert-dir",
                str(d / "kubelet-pki"),
                "--hostname-override",
                self.name,
                "--node-ip",
                _host_ip(),
                "--v",
                "1",
            ],
        )

    def _scheduler(self) -> None:
        self._spawn(
            "kube-scheduler",
            [
                str(self.plane.bin_dir / "kube-scheduler"),
                "--kubeconfig",
                str(self.plane.kubeconfig),
                "--leader-elect=false",
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                "0",
                "--v",
                "0",
            ],
        )

    def ready(self, client: KubeClient) -> bool:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
        node = client.get(f"/api/v1/nodes/{self.name}")
        conditions = ((node or {}).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        client = KubeClient(self.plane.kubeconfig)
        with contextlib.suppress(OSError, KubeError):
            self._drain(client)
        for _, proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        with contextlib.suppress(OSError, KubeError):
            client.delete(f"/api/v1/nodes/{self.name}")
        self._undo_host_changes()

    def _drain(self, client: KubeClient) -> None:
        """Delete every pod bound to this node and wait until kubelet has torn each down."""

        def pods() -> list[dict[str, object]]:
            found: list[dict[str, object]] = client.request(
                "GET", "/api/v1/pods", query={"fieldSelector": f"spec.nodeName={self.name}"}
            )["items"]
            return found

        for pod in pods():
            meta = pod["metadata"]
            assert isinstance(meta, dict)
            # Not 0: a zero grace period removes the object at once, before kubelet stops the pod.
            client.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", gracePeriodSeconds="1")
        deadline = time.monotonic() + 30
        while pods() and time.monotonic() < deadline:
            time.sleep(0.2)

    def _undo_host_changes(self) -> None:
        self._kill_leftover_containers()
        for key, value in self.sysctls.items():
            with contextlib.suppress(OSError):
                Path("/proc/sys", key).write_text(value)
        mounts = [
            line.split()[1]
            for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[1].startswith(f"{self.dir}/")
        ]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        for controller in Path("/sys/fs/cgroup").iterdir():
            top = controller / self.cgroup_root.lstrip("/")
            if top.is_dir():
                for sub in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                    with contextlib.suppress(OSError):
                        sub.rmdir()
                with contextlib.suppress(OSError):
                    top.rmdir()
        if self.bridge:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        logs = Path("/var/log/containers")
        if logs.is_dir():
            for link in logs.iterdir():
                if link.is_symlink() and os.readlink(link).startswith(f"{self.dir}/"):
                    link.unlink()
        for made in self.made_dirs:  # deepest first; only if kubelet left them empty
            with contextlib.suppress(OSError):
                (made / "kubelet.sock").unlink()  # the device-plugin registration socket
            with contextlib.suppress(OSError):
                made.rmdir()

    def _kill_leftover_containers(self) -> None:
        """The shims of this containerd and the container processes under them (a pod kubelet did
        not get to stop): containerd 1.6 leaves both running when it stops.
        """
        import psutil

        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if "containerd-shim" in " ".join(cmdline[:1]) and str(self.socket) in cmdline:
                with contextlib.suppress(psutil.Error):
                    for child in proc.children(recursive=True):
                        child.kill()
                    proc.kill()


def container_pid(node: Node, container_id: str) -> int:
    """The host PID of a running container, from containerd's own task list."""
    out = subprocess.run(
        ["ctr", "-a", str(node.socket), "-n", "k8s.io", "tasks", "ls"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    for line in out.splitlines()[1:]:
        task, pid, *_ = line.split()
        if task == container_id.removeprefix("containerd://"):
            return int(pid)
    raise AssertionError(f"no task for {container_id} in\n{out}")


def connects(pid: int, ip: str, port: int) -> bool:
    """Whether a TCP connection from inside the netns of `pid` to ip:port succeeds within 1 s."""
    probe = f"import socket; socket.create_connection(({ip!r}, {port}), 1).close()"
    return (
        subprocess.run(
            ["nsenter", "-t", str(pid), "-n", sys.executable, "-c", probe], capture_output=True, timeout=30
        ).returncode
        == 0
    )


@contextlib.contextmanager
def running_node(plane: ControlPlane, workdir: Path) -> Iterator[Node]:
    node = Node(plane, workdir).start()
    try:
        yield node
    finally:
        node.stop()
