"""`python -m chaosbus.dashboard` (and `chaosbus dashboard`): the web dashboard."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

from aiohttp import web

from chaosbus.common import bus as busmod
from chaosbus.common import config, natsauth, settings, signing, webtokens
from chaosbus.common import logging as cblog
from chaosbus.common import metrics as cbmetrics
from chaosbus.dashboard import auth, writes
from chaosbus.dashboard.app import Dashboard, make_app
from chaosbus.dashboard.world import World, follow

log = cblog.get("dashboard")
DEFAULT_PORT = 2333  # Chaos Mesh's dashboard port
METRICS_PORT = 9107
RETRY_S = 1.0
IN_CLUSTER_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"


def add_arguments(p: argparse.ArgumentParser) -> None:
    env = settings.current()
    p.add_argument(
        "--listen", default=env.dashboard_listen, help="address to serve on (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    p.add_argument(
        "--tokens-dir",
        default=None,
        help="directory with viewer.token and admin.token (default: <state dir>/dashboard, created in local mode)",
    )
    p.add_argument(
        "--mode",
        choices=("local", "cluster"),
        default=env.mode or "local",
        help="local: writes through the direct triggers; cluster: through the Kubernetes API with the "
        "person's own token",
    )
    p.add_argument(
        "--operator-key",
        default=None,
        help="the operator's private key, for the kill switch (default: <keys dir>/operator.key when "
        "readable; without it the dashboard cannot halt)",
    )
    p.add_argument("--read-only", action="store_true", help="no writes at all, whatever the token")
    p.add_argument(
        "--kube-api",
        default=None,
        help="cluster mode: the API server's URL (default: in-cluster, from KUBERNETES_SERVICE_HOST)",
    )
    p.add_argument("--kube-ca", default=None, help="cluster mode: the API server's CA file (default: in-cluster)")
    p.add_argument("--url-file", default=None, help="write the dashboard's URL here once it serves (for scripts)")
    p.add_argument(
        "--metrics-port", type=int, default=METRICS_PORT, help=f"port of /metrics (default {METRICS_PORT}; 0: any)"
    )
    p.add_argument("--metrics-addr", default="127.0.0.1", help="address of /metrics (not the page's port: no login)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chaosbus-dashboard", description="the chaosbus web dashboard")
    p.add_argument("--nats", default=None, help="NATS URL (default: CHAOSBUS_NATS_URL or the embedded server)")
    natsauth.add_auth_arguments(p)
    p.add_argument("--log-level", default="info")
    add_arguments(p)
    return p


def operator_signer(path: str | None) -> tuple[signing.Signer | None, str]:
    key = Path(path) if path else signing.keys_dir() / "operator.key"
    try:
        return signing.Signer.from_file(key), ""
    except (OSError, ValueError) as e:
        why = f"no operator key ({key}: {type(e).__name__}): halt with `chaosbus halt` where the key is"
        return None, why


def kube_api(args: argparse.Namespace) -> writes.KubeApi:
    if args.kube_api:
        return writes.KubeApi(args.kube_api, args.kube_ca)
    env = settings.current()
    host, port = env.kubernetes_service_host, env.kubernetes_service_port
    if not host:
        raise SystemExit("chaosbus dashboard: cluster mode needs --kube-api (or to run in a pod)")
    host = f"[{host}]" if ":" in host else host
    return writes.KubeApi(f"https://{host}:{port}", args.kube_ca or IN_CLUSTER_CA)


async def _keep_connected(url: str, d: Dashboard, world: World, local: bool) -> None:
    while True:
        try:
            bus = await busmod.connect(url, "chaosbus-dashboard")
        except Exception as e:
            log.info("NATS unreachable; retrying", error=str(e) or type(e).__name__)
            await asyncio.sleep(RETRY_S)
            continue
        d.bus = bus
        try:
            await follow(bus, world, local=local)
        except Exception as e:
            log.exception("NATS edge failed; reconnecting", error=str(e))
        finally:
            d.bus = None
            with contextlib.suppress(Exception):
                await bus.close()
        await asyncio.sleep(RETRY_S)


async def run(args: argparse.Namespace) -> None:
    url = config.nats_url(args.nats)
    natsauth.use_arguments("dashboard", args, url)
    local = args.mode == "local"
    tokens_dir = Path(args.tokens_dir) if args.tokens_dir else webtokens.tokens_dir()
    if local and not args.tokens_dir:
        webtokens.ensure_tokens(tokens_dir)
    tokens = webtokens.read_tokens(tokens_dir)
    if not tokens:
        raise SystemExit(f"chaosbus dashboard: no tokens in {tokens_dir} (viewer.token, admin.token)")
    signer, why = operator_signer(args.operator_key)
    secret = webtokens.read_session_secret(tokens_dir)
    if secret is None:
        log.warning(
            "no session secret: sessions are this process's own (a restart logs everyone out, replicas "
            "do not share them)",
            expected=str(webtokens.session_secret_file(tokens_dir)),
        )
    world = World()
    kube = None if local else writes.KubeWriter(kube_api(args))
    d = Dashboard(
        world=world,
        tokens=tokens,
        writer=None,
        operator=signer,
        operator_error=why,
        unsigned=signing.unsigned_mode(),
        cluster=not local,
        kube=kube,
        sessions=auth.Sessions(secret) if secret else auth.Sessions(),
    )
    if not args.read_only:
        d.writer = kube or writes.TriggerWriter(lambda: d.bus)
    metrics_port = cbmetrics.serve(d.metrics.registry, args.metrics_port, args.metrics_addr)
    runner = web.AppRunner(make_app(d), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, args.listen, args.port)
    await site.start()
    port = args.port
    for address in runner.addresses:  # the port actually bound (asked for 0: any free one)
        port = int(address[1])
        break
    host = f"[{args.listen}]" if ":" in args.listen else args.listen
    where = f"http://{host}:{port}/"
    log.info("dashboard serving", url=where, metrics_port=metrics_port)
    if args.url_file:
        await asyncio.to_thread(Path(args.url_file).write_text, where + "\n")
    print(
        f"chaosbus dashboard: {where} (tokens in {tokens_dir}; kill switch "
        f"{'available to the admin token' if signer or d.unsigned else 'unavailable: ' + why})",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    edge = asyncio.ensure_future(_keep_connected(url, d, world, local))
    try:
        await stop.wait()
    finally:
        edge.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(edge, timeout=5)
        await runner.cleanup()


def main() -> None:
    args = parser().parse_args()
    cblog.configure("dashboard", level=args.log_level)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
