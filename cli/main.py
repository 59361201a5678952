"""The `chaosbus` command: kubectl-like verbs on the local object store, process pods, `up`, `demo`,
and the kill switch (`halt`, `resume`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from chaosbus.cli import render, resources
from chaosbus.cli.resources import UsageError
from chaosbus.common import bus as busmod
from chaosbus.common import config, natsauth, settings, subjects
from chaosbus.common import logging as cblog
from chaosbus.common.crd import CHAOS_KINDS, InvalidObject
from chaosbus.common.store import ObjectStore

CONNECT_TIMEOUT_S = 3.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chaosbus", description="Chaos Mesh experiments over NATS")
    p.add_argument("--nats", default=None, help="NATS URL (default: CHAOSBUS_NATS_URL or the embedded server)")
    natsauth.add_auth_arguments(p)
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("apply", help="create or update objects from YAML (multi-document)")
    a.add_argument("-f", "--filename", required=True, help="file, or - for standard input")
    _ns(a)
    g = sub.add_parser("get", help="list or show objects")
    g.add_argument("kind")
    g.add_argument("name", nargs="?")
    _ns(g)
    g.add_argument("-A", "--all-namespaces", action="store_true")
    g.add_argument("-o", "--output", choices=("json", "yaml"))
    d = sub.add_parser("describe", help="show an object in detail")
    d.add_argument("kind")
    d.add_argument("name")
    _ns(d)
    rm = sub.add_parser("delete", help="delete an object (waits for its faults to be recovered)")
    rm.add_argument("kind")
    rm.add_argument("name")
    _ns(rm)
    rm.add_argument("--wait", type=float, default=30.0, help="seconds to wait for recovery (0: don't)")
    an = sub.add_parser("annotate", help="set (k=v) or remove (k-) annotations, e.g. to pause")
    an.add_argument("kind")
    an.add_argument("name")
    an.add_argument("annotations", nargs="+")
    an.add_argument("--overwrite", action="store_true")
    _ns(an)

    u = sub.add_parser("up", help="embedded NATS + all services, in the foreground")
    u.add_argument("--port", type=int, default=4222, help="NATS client port (0: any free port)")
    u.add_argument("--store-dir", type=Path, default=None, help="JetStream storage directory")
    u.add_argument("--metrics-base-port", type=int, default=None, help="first /metrics port (0: any)")
    u.add_argument("--node", default=None, help="node name for the local injector")
    u.add_argument(
        "--guard-config",
        type=Path,
        default=None,
        help="start the SLO guard on this configuration (default: <state dir>/guard.yaml when it exists)",
    )

    pod = sub.add_parser("pod", help="local process pods").add_subparsers(dest="pod_command", required=True)
    pr = pod.add_parser("run", help="start CMD in a new network namespace and register it as a pod")
    pr.add_argument("--name", required=True)
    _ns(pr)
    pr.add_argument("-l", "--labels", action="append", default=[], help="k=v (repeatable, or comma-separated)")
    pr.add_argument("--restart", choices=("Always", "Never"), default="Always")
    pr.add_argument("--node", default=None)
    pr.add_argument("--bridge", default=None, help="host bridge (default cb0)")
    pr.add_argument("--subnet", default=None, help="pod subnet, gateway = first address (default 10.213.0.0/16)")
    pr.add_argument(
        "--host-pid",
        action="store_true",
        help="share the host's PID and mount namespaces (default: the command is PID 1 of its own)",
    )
    pr.add_argument(
        "-v",
        "--volume",
        action="append",
        default=[],
        metavar="HOST:PATH",
        help="bind-mount directory HOST at PATH in the pod's mount namespace (repeatable)",
    )
    pr.add_argument("argv", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    pl = pod.add_parser("list", help="list process pods")
    _ns(pl)
    pl.add_argument("-A", "--all-namespaces", action="store_true")
    pl.add_argument("-o", "--output", choices=("json",))
    prm = pod.add_parser("rm", help="stop and remove a process pod")
    prm.add_argument("name", nargs="?")
    prm.add_argument("--all", action="store_true")
    _ns(prm)

    h = sub.add_parser("halt", help="kill switch: every injector recovers every fault and refuses new ones")
    h.add_argument("--reason", default="", help="why (shown in every recovered fault's status)")
    r = sub.add_parser("resume", help="release the kill switch: experiments may be injected again")
    sub.add_parser("status", help="the kill switch: engaged or not, since when, by whom and why")
    for c in (h, r):
        c.add_argument(
            "--operator-key",
            default=None,
            help="the operator's private key, which signs the kill switch "
            "(default: <CHAOSBUS_KEYS_DIR or state dir/keys>/operator.key)",
        )
    g = sub.add_parser("guard", help="SLO guard: engage the kill switch when a PromQL objective is not met")
    g.add_argument(
        "--config",
        default=None,
        help="YAML with prometheus, query, criteria, value (and name, interval, timeout, failures) instead of "
        "the flags; waits for the file when it does not exist yet",
    )
    g.add_argument("--prometheus", help="Prometheus endpoint, e.g. http://127.0.0.1:9090")
    g.add_argument("--query", help="PromQL, evaluated as an instant query")
    g.add_argument("--criteria", help="the objective: every sample <criteria> --value (==, !=, <, >, <=, >=)")
    g.add_argument("--value", type=float)
    g.add_argument("--name", default="slo", help="the guard's name (in the halt reason, logs and metrics)")
    g.add_argument("--interval", type=float, default=10.0, help="seconds between evaluations")
    g.add_argument("--timeout", type=float, default=5.0, help="seconds a query may take")
    g.add_argument("--failures", type=int, default=2, help="evaluations in a row not met before halting")
    g.add_argument("--metrics-port", type=int, default=None, help="serve the guard's /metrics here (0: any)")
    g.add_argument("--metrics-addr", default="127.0.0.1", help="address /metrics listens on")
    g.add_argument(
        "--key",
        default=None,
        help="the guard's private key, which may halt and never resume "
        "(default: <CHAOSBUS_KEYS_DIR or state dir/keys>/guard.key)",
    )
    k = sub.add_parser("keys", help="signing keys").add_subparsers(dest="keys_command", required=True)
    kg = k.add_parser("generate", help="create the scheduler, operator and guard key pairs in DIR (existing ones kept)")
    kg.add_argument("dir", nargs="?", default=None, help="default: CHAOSBUS_KEYS_DIR or <state dir>/keys")

    sub.add_parser("demo", help="run the end-to-end demo (root)")
    sub.add_parser(
        "dashboard",
        help="the web dashboard (default http://127.0.0.1:2333/; tokens in <state "
        "dir>/dashboard; its flags: `chaosbus dashboard --help`)",
        add_help=False,
    )

    ns = sub.add_parser("nats-secrets", help="cluster mode: Secrets with NATS identities and mutual TLS, as YAML")
    ns.add_argument("--namespace", default="chaosbus")
    ns.add_argument("--service", default="nats", help="the NATS Service's name (its certificate's DNS names)")
    pc = sub.add_parser("prometheus-config", help="local mode: the Prometheus scrape configuration, as YAML")
    pc.add_argument(
        "--metrics-base-port", type=int, default=None, help="as given to `chaosbus up` (default ports without it)"
    )
    pc.add_argument("--interval", default="15s", help="scrape interval")
    pc.add_argument("--guard", action="store_true", help="a job for the SLO guard `chaosbus up` starts (guard.yaml)")
    pc.add_argument("--dashboard-port", type=int, default=None, help="a job for a dashboard's /metrics on this port")
    tpl = sub.add_parser("template", help="Chaos Mesh's StatusCheck templates (ConfigMaps)")
    tsc = (
        tpl.add_subparsers(dest="template_kind", required=True)
        .add_parser("statuscheck", help="StatusCheck templates")
        .add_subparsers(dest="template_command", required=True)
    )
    tl = tsc.add_parser("list", help="list templates")
    _ns(tl)
    tl.add_argument("-A", "--all-namespaces", action="store_true")
    tg = tsc.add_parser("get", help="show a template and its spec")
    tg.add_argument("name")
    _ns(tg)
    tg.add_argument("-o", "--output", choices=("json", "yaml"))
    tc = tsc.add_parser("create", help="create a template from a StatusCheck (or its spec) in a file")
    tc.add_argument("name")
    tc.add_argument("-f", "--filename", required=True, help="file, or - for standard input")
    tc.add_argument("--description", default="")
    _ns(tc)
    tc.add_argument("-o", "--output", choices=("yaml",), help="print the ConfigMap (for kubectl) instead")
    td = tsc.add_parser("delete", help="delete a template")
    td.add_argument("name")
    _ns(td)
    tr = tsc.add_parser("run", help="create a StatusCheck from a template")
    tr.add_argument("name")
    tr.add_argument("--check-name", required=True, help="name of the new StatusCheck")
    _ns(tr)
    sub.add_parser(
        "declare",
        help="create or update every stream and bucket (the admin step; with --nats-creds of the admin identity)",
    )
    return p


def _ns(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--namespace", default=None)


async def with_store(
    url: str, fn: Callable[[ObjectStore, busmod.Bus], Awaitable[Any]], *, declare: bool = False
) -> Any:
    """Run `fn` on a fresh connection with the object store. `declare`: declare every stream and
    bucket first (ten JetStream requests), for commands that write what a service may not have
    declared yet (apply, pods); the others need only the buckets they touch, which `Bus.kv` binds.
    """
    return await with_bus(url, lambda bus: _with_objects(bus, fn, declare=declare))


async def _with_objects(
    bus: busmod.Bus, fn: Callable[[ObjectStore, busmod.Bus], Awaitable[Any]], *, declare: bool
) -> Any:
    if declare:
        await bus.ensure()
    return await fn(ObjectStore(await bus.bucket(subjects.OBJECT_STORE)), bus)


async def with_bus(url: str, fn: Callable[[busmod.Bus], Awaitable[Any]]) -> Any:
    """Run `fn` on a fresh connection, closed afterwards."""
    try:
        # nats-py retries the first connect forever when reconnects are unlimited (right for a
        # service, wrong for a command), so the command bounds it.
        bus = await busmod.connect(url, "chaosbus-cli", connect_timeout=2.0, give_up_after=CONNECT_TIMEOUT_S)
    except Exception as e:
        raise UsageError(
            f"cannot connect to NATS at {cblog.redact(url)} ({_why(e)}); is `chaosbus up` running, "
            "and may you read its credentials?"
        ) from None
    try:
        return await fn(bus)
    finally:
        await bus.close()


async def _guard(url: str, args: argparse.Namespace) -> int:
    from chaosbus.cli import guard

    flags = None
    if args.config is None:
        missing = [f"--{f}" for f in ("prometheus", "query", "criteria", "value") if getattr(args, f) is None]
        if missing:
            raise UsageError(f"guard: {', '.join(missing)} required (or --config FILE)")
        flags = guard.GuardConfig(
            prometheus=args.prometheus,
            query=args.query,
            criteria=args.criteria,
            value=args.value,
            name=args.name,
            interval=args.interval,
            timeout=args.timeout,
            failures=args.failures,
        )
        try:
            guard.objective(flags)  # before anything starts
        except guard.BadConfig as e:
            raise UsageError(str(e)) from None
    natsauth.use_arguments("guard", args, url)  # its own identity: the kill switch and nothing else
    cblog.configure("guard")
    try:
        return await guard.serve(
            url,
            flags=flags,
            config_file=Path(args.config) if args.config else None,
            key=args.key,
            metrics_port=args.metrics_port,
            metrics_addr=args.metrics_addr,
        )
    except guard.BadConfig as e:
        raise UsageError(str(e)) from None


def use_cli_credentials(args: argparse.Namespace, url: str) -> None:
    """The CLI, and the pod supervisors it starts, connect as `cli`: credentials given as flags
    go to the children through the environment.
    """
    if args.nats_creds:
        os.environ["CHAOSBUS_NATS_CREDS"] = args.nats_creds
    if args.nats_tls:
        os.environ["CHAOSBUS_NATS_TLS_DIR"] = args.nats_tls
    settings.reset()  # the flags win for this process as for its children
    natsauth.use_arguments("cli", args, url)


def _why(e: Exception) -> str:
    return "credentials refused" if isinstance(e, busmod.Refused) else type(e).__name__


async def dispatch(args: argparse.Namespace) -> int:
    url = config.nats_url(args.nats)
    use_cli_credentials(args, url)
    ns = args.namespace if getattr(args, "namespace", None) else "default"
    cmd = args.command
    if cmd == "up":
        from chaosbus.cli import up

        return await up.up(
            port=args.port,
            store_dir=args.store_dir,
            metrics_base=args.metrics_base_port,
            node=config.node_name(args.node),
            guard_config=args.guard_config,
        )
    if cmd == "nats-secrets":
        from chaosbus.cli import natssecrets

        print(natssecrets.secrets_yaml(namespace=args.namespace, service=args.service), end="")
        return 0
    if cmd == "prometheus-config":
        from chaosbus.cli import promconfig

        ports = promconfig.ports_from_base(args.metrics_base_port, guard=args.guard, dashboard=args.dashboard_port)
        print(promconfig.render(ports, interval=args.interval), end="")
        return 0
    if cmd == "declare":
        return await _declare(url, args)
    if cmd == "demo":
        from chaosbus.cli import demo

        return await demo.run()
    if cmd == "dashboard":
        return _dashboard(args)
    if cmd == "apply":
        # Admitted once, before connecting: bad input never reaches NATS.
        admitted = resources.prepare(resources.read_source(args.filename), args.namespace)
        lines = await with_store(url, lambda s, b: _apply_unless_halted(s, b, admitted), declare=True)
        print("\n".join(lines))
    elif cmd in ("halt", "resume"):
        from chaosbus.cli import control

        signer = control.operator_signer(args.operator_key)
        print(
            await with_bus(
                url, lambda b: control.halt(b, args.reason, signer) if cmd == "halt" else control.resume(b, signer)
            )
        )
    elif cmd == "status":
        from chaosbus.cli import control

        print(await with_bus(url, control.status))
    elif cmd == "guard":
        return await _guard(url, args)
    elif cmd == "keys":
        from chaosbus.common import signing

        directory = Path(args.dir) if args.dir else signing.keys_dir()
        created = signing.ensure_keys(directory)
        print("\n".join(f"created {p} (and its .pub)" for p in created) or f"keys already in {directory}")
    elif cmd == "get":
        kind = resources.kind_of(args.kind)
        scope = None if args.all_namespaces else ns
        objs = await with_store(url, lambda s, _b: resources.fetch(s, kind, args.name, scope))
        print(resources.show(objs, kind, args.output))
    elif cmd == "describe":
        kind = resources.kind_of(args.kind)
        print(await with_store(url, lambda s, _b: resources.describe(s, kind, args.name, ns)))
    elif cmd == "delete":
        kind = resources.kind_of(args.kind)
        print(await with_store(url, lambda s, _b: resources.delete(s, kind, args.name, ns, wait=args.wait)))
    elif cmd == "annotate":
        kind = resources.kind_of(args.kind)
        print(
            await with_store(
                url,
                lambda s, _b: resources.annotate(s, kind, args.name, ns, args.annotations, overwrite=args.overwrite),
            )
        )
    elif cmd == "pod":
        return await pod_command(args, url, ns)
    elif cmd == "template":
        return await template_command(args, url, ns)
    return 0


async def template_command(args: argparse.Namespace, url: str, ns: str) -> int:
    from chaosbus.cli import templates

    tc = args.template_command
    if tc == "create":
        cm = templates.new_configmap(ns, args.name, args.filename, args.description)
        if args.output == "yaml":
            print(render.to_yaml([cm]), end="")
            return 0
        print(await with_store(url, lambda s, _b: templates.create(s, cm), declare=True))
    elif tc == "list":
        print(await with_store(url, lambda s, _b: templates.listing(s, None if args.all_namespaces else ns)))
    elif tc == "get":
        print(templates.show(await with_store(url, lambda s, _b: templates.one(s, ns, args.name)), args.output), end="")
    elif tc == "delete":
        print(await with_store(url, lambda s, _b: templates.delete(s, ns, args.name)))
    else:
        print(await with_store(url, lambda s, _b: templates.run(s, ns, args.name, args.check_name)))
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    """The dashboard is its own service (its own NATS identity): run it in this terminal."""
    argv = [sys.executable, "-m", "chaosbus.dashboard", *args.dashboard_args]
    for flag, value in (("--nats-creds", args.nats_creds), ("--nats-tls", args.nats_tls)):
        if value and flag not in argv:
            argv += [flag, value]
    if args.nats and "--nats" not in argv:
        argv += ["--nats", args.nats]
    os.execv(sys.executable, argv)


async def _declare(url: str, args: argparse.Namespace) -> int:
    admin = natsauth.client_auth(natsauth.ADMIN, seed=args.nats_creds, tls_dir=args.nats_tls)
    bus = await busmod.connect(
        url, "chaosbus-declare", auth=natsauth.ClientAuth(admin.seed_file, admin.tls_dir, admin=True)
    )
    try:
        await bus.ensure()
    finally:
        await bus.close()
    print(f"declared {len(subjects.STREAMS)} streams and {len(subjects.BUCKETS)} buckets")
    return 0


async def _apply_unless_halted(store: ObjectStore, bus: busmod.Bus, admitted: list[resources.Obj]) -> list[str]:
    from chaosbus.cli import control

    state = await control.current(bus, control.local_trust())
    if state is not None and state.halted and any(o["kind"] in CHAOS_KINDS for o in admitted):
        raise UsageError(control.halted_message(state))
    return await resources.store_admitted(store, admitted)


async def pod_command(args: argparse.Namespace, url: str, ns: str) -> int:
    # Process pods need pyroute2 (~0.1 s to import), which no other command does.
    from chaosbus.cli import pods

    if args.pod_command == "run":
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        pod = await with_store(
            url,
            lambda s, _b: pods.run(
                s,
                url,
                name=args.name,
                namespace=ns,
                labels=args.labels,
                restart=args.restart,
                node=args.node,
                argv=argv,
                bridge=args.bridge,
                subnet=args.subnet,
                pid_namespace=not args.host_pid,
                volumes=args.volume,
            ),
            declare=True,
        )
        print(
            f"pod/{args.name} created (ip {pod['status']['podIP']}, "
            f"netns {pod['metadata']['annotations']['chaosbus.io/netns']})"
        )
    elif args.pod_command == "list":
        scope = None if args.all_namespaces else ns
        objs = await with_store(url, lambda s, _b: s.list("Pod", scope))
        print(
            json.dumps(objs, indent=2)
            if args.output == "json"
            else (render.pod_rows(objs) if objs else "No resources found.")
        )
    else:

        async def rm(store: ObjectStore, bus: busmod.Bus) -> list[str]:
            kv = await bus.bucket(subjects.IPAM)
            if args.all:
                return await pods.remove_all(store, kv)
            if not args.name:
                raise UsageError("pod rm needs a NAME or --all")
            return [await pods.remove(store, kv, args.name, ns)]

        print("\n".join(await with_store(url, rm, declare=True)))
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "dashboard":
        args.dashboard_args = extra  # its own flags: the dashboard parses them
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code = asyncio.run(dispatch(args))
    except (UsageError, InvalidObject) as e:
        print(
            f"error: {e}" if isinstance(e, UsageError) else "error: " + "\n  ".join(["invalid object", *e.errors]),
            file=sys.stderr,
        )
        code = 1
    except KeyboardInterrupt:
        code = 130
    if args.command in SHORT_COMMANDS:
        exit_now(code)
    sys.exit(code)


# Commands that print and end: they leave without the interpreter's teardown.
SHORT_COMMANDS = frozenset({"get", "describe", "halt", "resume", "status", "delete", "annotate", "apply"})


def exit_now(code: int) -> None:
    """End the process once its output is out, skipping the interpreter's teardown: freeing some
    350 modules one by one costs a short command about 35 ms of CPU (a quarter of `chaosbus get`),
    and nothing of it outlives the process. Log handlers and the standard streams are flushed
    first; a short command starts no thread and registers nothing else to run at exit.
    """
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
