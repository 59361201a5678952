"""What a cluster's network add-ons give pods, for the real test node (tests/kube/node.py), which
has neither kube-proxy nor CoreDNS: names for Services and a way to the API server.

* **Cluster DNS** on the node's bridge address, port 53 (the kubelet's `clusterDNS`): a Service's
  name (`<svc>.<ns>.svc.cluster.local`, reached through the pods' search path from
  `<svc>.<ns>.svc`) answers with the addresses of its Ready pods, as for a headless Service;
  `kubernetes.default.svc` with its cluster IP. Anything else is NXDOMAIN.
* **The API server's Service**: pods are told `KUBERNETES_SERVICE_HOST=<cluster IP>:443`; a DNAT
  rule (an nftables table of this node's own, matching only packets from its bridge) sends that to
  a TCP relay on the bridge address, which passes the bytes on to the API server on loopback. TLS
  is end to end: the API server's certificate names its cluster IP.

So pods reach a Service on its target port at a pod's address (no cluster IP, no port mapping):
enough for a deploy whose Services use the same port as their pods, as deploy/k8s does.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from kube.client import KubeClient, KubeError
from kube.node import Node

DOMAIN = "svc.cluster.local."


@dataclass
class ClusterDns:
    client: KubeClient
    address: str
    stop: threading.Event = field(default_factory=threading.Event)

    def answer(self, name: str) -> list[str] | None:
        """The addresses of a Service name, or None when there is no such Service."""
        name = name.lower()
        if not name.endswith("." + DOMAIN):
            return None
        parts = name.removesuffix("." + DOMAIN).split(".")
        if len(parts) != 2:
            return None
        svc, ns = parts
        try:
            obj = self.client.get(f"/api/v1/namespaces/{ns}/services/{svc}")
        except KubeError:
            return None
        if obj is None:
            return None
        spec = obj.get("spec") or {}
        selector = spec.get("selector")
        if not selector:
            ip = spec.get("clusterIP")
            return [ip] if ip and ip != "None" else []
        query = ",".join(f"{k}={v}" for k, v in selector.items())
        pods = self.client.request("GET", f"/api/v1/namespaces/{ns}/pods", query={"labelSelector": query})["items"]
        return [
            p["status"]["podIP"]
            for p in pods
            if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("podIP")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
        ]

    def reply(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA | dns.flags.RA
        [question] = query.question
        addresses = self.answer(question.name.to_text())
        if addresses is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.A and addresses:
            response.answer.append(
                dns.rrset.from_text_list(question.name, 5, dns.rdataclass.IN, dns.rdatatype.A, addresses)
            )
        return response.to_wire()

    def serve(self, sock: socket.socket) -> None:
        sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                wire, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with contextlib.suppress(Exception):  # a malformed query, or the API server away: no answer
                sock.sendto(self.reply(wire), peer)


def _relay(listener: socket.socket, target: tuple[str, int], stop: threading.Event) -> None:
    """Accept on `listener` and pass each connection's bytes both ways to `target`."""
    listener.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        threading.Thread(target=_pipe, args=(conn, target, stop), daemon=True).start()


def _pipe(conn: socket.socket, target: tuple[str, int], stop: threading.Event) -> None:
    with conn, contextlib.suppress(OSError), socket.create_connection(target, timeout=10) as upstream:
        upstream.settimeout(None)
        conn.settimeout(None)
        sel = selectors.DefaultSelector()
        sel.register(conn, selectors.EVENT_READ, upstream)
        sel.register(upstream, selectors.EVENT_READ, conn)
        while not stop.is_set():
            for key, _ in sel.select(0.5):
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                if not data:
                    return
                key.data.sendall(data)


@contextlib.contextmanager
def cluster_network(node: Node, client: KubeClient) -> Iterator[None]:
    """Cluster DNS and the API server's Service for `node`'s pods, for the duration of the block."""
    stop = threading.Event()
    dns_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay = socket.socket()
    table = f"{node.name.replace('-', '_')}_services"
    threads: list[threading.Thread] = []
    try:
        dns_sock.bind((node.gateway, 53))
        relay.bind((node.gateway, 0))
        relay.listen(64)
        kubernetes = client.get("/api/v1/namespaces/default/services/kubernetes")
        assert kubernetes is not None, "the API server publishes the kubernetes Service"
        cluster_ip = kubernetes["spec"]["clusterIP"]
        script = (
            f"table ip {table} {{\n"
            "  chain prerouting {\n"
            "    type nat hook prerouting priority dstnat; policy accept;\n"
            f'    iifname "{node.bridge}" ip daddr {cluster_ip} tcp dport 443 '
            f"dnat to {node.gateway}:{relay.getsockname()[1]}\n"
            "  }\n}\n"
        )
        subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True, capture_output=True, timeout=30)
        threads = [
            threading.Thread(target=ClusterDns(client, node.gateway, stop).serve, args=(dns_sock,), daemon=True),
            threading.Thread(target=_relay, args=(relay, (client.host, client.port or 443), stop), daemon=True),
        ]
        for t in threads:
            t.start()
        yield
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        dns_sock.close()
        relay.close()
        subprocess.run(["nft", "delete", "table", "ip", table], capture_output=True, timeout=30)
