"""A real Kubernetes control plane for the tests, the envtest way: etcd, kube-apiserver and
kube-controller-manager from the folder KUBEBUILDER_ASSETS names, on loopback with free ports in a
temp dir, stopped afterwards. The controller manager runs only the controllers the tests rely on
(CONTROLLERS).

The clients authenticate with static tokens: "admin" (system:masters) for the fixtures and the
services under test, which may impersonate anyone for the RBAC and admission-policy tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from kube.client import KubeClient, KubeError

ASSETS_ENV = "KUBEBUILDER_ASSETS"
NEEDED = ("etcd", "kube-apiserver")
ADMIN_TOKEN = "chaosbus-envtest-admin"
START_TIMEOUT = 60.0
# Namespace deletion, ownerReference GC, default ServiceAccounts and the kube-root-ca.crt ConfigMap
# pods mount; Deployments, ReplicaSets, DaemonSets and PersistentVolumeClaim binding for pods on a
# real node (tests/kube/node.py).
CONTROLLERS = (
    "namespace,garbagecollector,serviceaccount,root-ca-cert-publisher,deployment,replicaset,daemonset,"
    "persistentvolume-binder"
)


def assets() -> tuple[Path | None, str]:
    """The folder with the binaries, or None and why not."""
    folder = os.environ.get(ASSETS_ENV, "")
    if not folder:
        return None, f"{ASSETS_ENV} is not set (../shared/envtest/unpack prints a folder for it)"
    missing = [b for b in NEEDED if not os.access(Path(folder) / b, os.X_OK)]
    if missing:
        return None, f"{ASSETS_ENV}={folder} lacks {', '.join(missing)} (etcd: apt-get install etcd-server)"
    return Path(folder), ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def kubeconfig_text(server: str, token: str, *, user: str = "admin") -> str:
    return (
        f"apiVersion: v1\nkind: Config\ncurrent-context: {user}\n"
        f"clusters:\n- name: envtest\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\n"
        f"users:\n- name: {user}\n  user:\n    token: {token}\n"
        f"contexts:\n- name: {user}\n  context:\n    cluster: envtest\n    user: {user}\n"
    )


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver (+ kube-controller-manager) under `root`."""

    bin_dir: Path
    root: Path
    server: str = ""
    kubeconfig: Path = field(init=False)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.kubeconfig = self.root / "kubeconfig"

    def start(self, *, controller_manager: bool = True) -> ControlPlane:
        try:
            self._start(controller_manager)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, controller_manager: bool) -> None:
        etcd_port, peer_port, api_port = _free_port(), _free_port(), _free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        # etcd 3.4 has no --unsafe-no-fsync: its data lives in memory (/dev/shm) where fsync is free.
        shm = Path("/dev/shm")
        etcd_dir = Path(tempfile.mkdtemp(prefix="cb-etcd-", dir=shm if shm.is_dir() else self.root))
        self._etcd_dir = etcd_dir
        self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--data-dir",
                str(etcd_dir / "data"),
                "--listen-client-urls",
                etcd_url,
                "--advertise-client-urls",
                etcd_url,
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{peer_port}",
                "--log-level",
                "warn",
            ],
        )
        pki = self.root / "pki"
        pki.mkdir()
        sa_key = pki / "sa.key"
        subprocess.run(["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True, capture_output=True, timeout=60)
        tokens = self.root / "tokens.csv"
        tokens.write_text(f'{ADMIN_TOKEN},admin,admin-uid,"system:masters"\n')
        self.server = f"https://127.0.0.1:{api_port}"
        self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                "--etcd-servers",
                etcd_url,
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                str(api_port),
                "--cert-dir",
                str(pki),
                "--service-account-issuer",
                "https://kubernetes.default.svc",
                "--service-account-key-file",
                str(sa_key),
                "--service-account-signing-key-file",
                str(sa_key),
                "--authorization-mode",
                "Node,RBAC",
                "--token-auth-file",
                str(tokens),
                "--allow-privileged=true",
                "--service-cluster-ip-range",
                "10.0.0.0/24",
                "--endpoint-reconciler-type",
                "none",
                "--kubelet-preferred-address-types",
                "InternalIP",
                "--v",
                "0",
            ],
        )
        self.kubeconfig.write_text(kubeconfig_text(self.server, ADMIN_TOKEN))
        client = KubeClient(self.kubeconfig)
        self._wait_ready(client)
        if controller_manager and os.access(self.bin_dir / "kube-controller-manager", os.X_OK):
            self._spawn(
                "kube-controller-manager",
                [
                    str(self.bin_dir / "kube-controller-manager"),
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "--controllers",
                    CONTROLLERS,
                    "--leader-elect=false",
                    "--bind-address",
                    "127.0.0.1",
                    "--secure-port",
                    "0",
                    "--root-ca-file",
                    str(pki / "apiserver.crt"),
                    "--service-account-private-key-file",
                    str(sa_key),
                    "--v",
                    "0",
                ],
            )

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.root / f"{name}.log").open("wb")
        self.procs.append(
            (name, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        )
        log.close()

    def _wait_ready(self, client: KubeClient) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            with contextlib.suppress(OSError, KubeError):
                if client.request("GET", "/readyz", timeout=2) == "ok":
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"kube-apiserver not ready after {START_TIMEOUT}s:\n{self.log_tail('kube-apiserver')}"
                )
            time.sleep(0.2)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.root / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        """Stop in reverse order (API server before etcd)."""
        for _, proc in reversed(self.procs):
            _terminate(proc)
        self.procs.clear()
        etcd_dir = getattr(self, "_etcd_dir", None)
        if etcd_dir is not None:
            shutil.rmtree(etcd_dir, ignore_errors=True)

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver and start it again on the same port and etcd (watch resumption)."""
        [(i, proc)] = [(i, p) for i, (n, p) in enumerate(self.procs) if n == "kube-apiserver"]
        self.procs.pop(i)
        _terminate(proc)
        argv = [str(a) for a in proc.args]  # type: ignore[union-attr]
        self._spawn("kube-apiserver", argv)
        self._wait_ready(KubeClient(self.kubeconfig))


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 3 s: kube-apiserver's graceful shutdown waits ~30 s for open
    watches to end, which the clients under test keep open on purpose.
    """
    proc.terminate()
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
