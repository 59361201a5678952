"""The fake API server's HTTP layer (aiohttp): Kubernetes REST paths, list with selectors and
paging, chunked watch streams with bookmarks and 410 ERROR events, Status error bodies, and a
plain-text `404 page not found` for unknown paths. Runs in its own thread so sync and async tests
can both use it; `stop()`/`start()` on the same port simulate an API server restart.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from kubefake import selectors as sel
from kubefake.api import Api
from kubefake.resources import ApiError, Resource, bad_request, gone, not_found
from kubefake.store import Store, Subscription

Obj = dict[str, Any]
T = TypeVar("T")
# GET /version's answer: the fake speaks the API of this Kubernetes release.
VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-chaosbus-fake",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_WRITE_OPTIONS = {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions", "DELETE": "DeleteOptions"}


def _bool(value: str | None) -> bool:
    """Query booleans as Go's strconv.ParseBool reads them (kubernetes-asyncio sends `True`)."""
    return value in ("1", "t", "T", "TRUE", "true", "True")


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


def _page_not_found() -> web.Response:
    return web.Response(status=404, text="404 page not found\n", content_type="text/plain")


class Route:
    def __init__(self, res: Resource, namespace: str | None, name: str, sub: str) -> None:
        self.res, self.namespace, self.name, self.sub = res, namespace, name, sub


class FakeApiServer:
    """An in-memory Kubernetes API server on 127.0.0.1 (port 0 by default)."""

    def __init__(self, *, port: int = 0, bookmark_interval: float = 5.0, default_watch_timeout: float = 1800.0) -> None:
        self.store = Store()
        self.api = Api(self.store)
        self.port = port
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        self.requests: list[tuple[str, str]] = []
        # Container logs live on the node, not in the API's storage: a kubelet stand-in registers
        # the file each container writes, by Pod uid and container name (see `pods/{name}/log`).
        self.container_logs: dict[tuple[str, str], Path] = {}
        # Bearer tokens answered 401, as a real server answers a revoked or expired token.
        self.refused_tokens: frozenset[str] = frozenset()
        # Writes (any method but GET) under a path answered with a status, as a failing admission
        # webhook makes a real server answer 500 for the objects it covers.
        self.failing_writes: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        for ns in ("default", "kube-system"):
            self.api.create(
                self.store.resources[("", "v1", "namespaces")], "", {"metadata": {"name": ns}}, dry_run=False
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> FakeApiServer:
        if self._thread is None:
            ready = threading.Event()
            self._thread = threading.Thread(target=self._run_loop, args=(ready,), name="kubefake", daemon=True)
            self._thread.start()
            ready.wait(10)
        self.call(self._start_site)
        return self

    def _run_loop(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        ready.set()
        self._loop.run_forever()

    async def _start_site(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        if self.port == 0 and server is not None:
            self.port = server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Stop serving (open watches end abruptly); the stored objects stay for a later start()."""
        self.call(self._stop_site)

    async def _stop_site(self) -> None:
        self.store.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def close(self) -> None:
        if self._loop is None:
            return
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()
        self._loop, self._thread = None, None

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` (sync, or a coroutine function) on the server's loop and return its result."""
        assert self._loop is not None, "start() first"

        async def run() -> Any:
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def write_kubeconfig(self, path: Path, *, namespace: str = "default") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        }
        path.write_text(json.dumps(config))
        return path

    # --- test controls (thread-safe) ----------------------------------------------------------
    def compact(self, **kwargs: Any) -> int:
        return int(self.call(lambda: self.store.compact(**kwargs)))

    def objects(self, plural: str, group: str = "", version: str = "v1") -> list[Obj]:
        res = self.store.resources[(group, version, plural)]
        return list(self.call(lambda: self.store.list(res, None, [], [])))

    def refuse_token(self, token: str, refused: bool = True) -> None:
        """Answer every request bearing `token` 401 (False: accept it again)."""
        self.refused_tokens = self.refused_tokens | {token} if refused else self.refused_tokens - {token}

    def fail_writes(self, path: str, status: int | None) -> None:
        """Answer every write under `path` (its subresources too) with `status` (None: serve them again)."""
        failing = dict(self.failing_writes)
        if status is None:
            failing.pop(path, None)
        else:
            failing[path] = status
        self.failing_writes = failing

    def set_container_log(self, pod_uid: str, container: str, path: Path) -> None:
        """Serve `path` as the log of `container` in the Pod with this uid (the kubelet's part)."""
        self.container_logs[(pod_uid, container)] = path

    # --- HTTP ---------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if bearer and bearer in self.refused_tokens:
            return _json(
                401,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "message": "Unauthorized",
                    "reason": "Unauthorized",
                    "code": 401,
                },
            )
        for path, status in self.failing_writes.items():
            if request.method != "GET" and (request.path == path or request.path.startswith(path + "/")):
                return _json(status, {"kind": "Status", "status": "Failure", "message": "failing", "code": status})
        if request.path.rstrip("/") == "/version":  # what clients probe the server with
            return _json(200, VERSION)
        route = self._route(request.path)
        if route is None:
            return _page_not_found()
        try:
            return await self._dispatch(request, route)
        except ApiError as e:
            return _json(e.code, e.body())

    def _route(self, path: str) -> Route | None:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            return None
        res = self.store.resource(group, version, rest[0])
        if res is None or (namespace is not None and not res.namespaced):
            return None
        return Route(res, namespace, rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else "")

    async def _dispatch(self, request: web.Request, route: Route) -> web.StreamResponse:
        res, q, method = route.res, request.query, request.method
        dry_run = self._dry_run(q, method, res)
        ns = route.namespace or ""
        if res.namespaced and route.name and route.namespace is None:
            return _page_not_found()
        if not route.name:
            if method == "GET":
                if _bool(q.get("watch")):
                    return await self._watch(request, route)
                return _json(200, self._list(route, q))
            if method == "POST" and (route.namespace is not None or not res.namespaced):
                return _json(*self.api.create(res, ns, await self._body(request), dry_run=dry_run))
            return _json(405, ApiError(405, "MethodNotAllowed", "the server does not allow this method").body())
        if route.sub == "log" and res.key == ("", "v1", "pods"):
            if method != "GET":
                return _json(405, ApiError(405, "MethodNotAllowed", "the server does not allow this method").body())
            return self._log(route, q)
        if route.sub and (route.sub != "status" or not res.status_subresource):
            if route.sub == "status":
                raise not_found(res, route.name)
            return _page_not_found()
        status = route.sub == "status"
        if method == "GET":
            obj = self.store.get(res, ns, route.name)
            if obj is None:
                raise not_found(res, route.name)
            return _json(200, self.api._out(res, obj))
        if method == "PUT":
            return _json(
                *self.api.replace(res, ns, route.name, await self._body(request), status=status, dry_run=dry_run)
            )
        if method == "PATCH":
            return _json(
                *self.api.patch(
                    res,
                    ns,
                    route.name,
                    request.headers.get("Content-Type", ""),
                    await request.read(),
                    status=status,
                    dry_run=dry_run,
                )
            )
        if method == "DELETE" and not status:
            return _json(
                *self.api.delete(
                    res,
                    ns,
                    route.name,
                    await self._grace(request),
                    dry_run=dry_run,
                    preconditions=await self._preconditions(request),
                )
            )
        return _json(405, ApiError(405, "MethodNotAllowed", "the server does not allow this method").body())

    @staticmethod
    def _dry_run(q: Any, method: str, res: Resource) -> bool:
        values = q.getall("dryRun", [])
        if not values:
            return False
        if values != ["All"]:
            kind = _WRITE_OPTIONS.get(method, "CreateOptions")
            raise ApiError(
                422,
                "Invalid",
                f'{kind}.meta.k8s.io "" is invalid: dryRun: Unsupported value: '
                f'{json.dumps(values)}: supported values: "All"',
                {
                    "group": "meta.k8s.io",
                    "kind": kind,
                    "causes": [
                        {
                            "reason": "FieldValueNotSupported",
                            "field": "dryRun",
                            "message": f'Unsupported value: {json.dumps(values)}: supported values: "All"',
                        }
                    ],
                },
            )
        return True

    @staticmethod
    async def _body(request: web.Request) -> Any:
        try:
            return json.loads(await request.read() or b"null")
        except ValueError as e:
            raise ApiError(400, "BadRequest", f"error decoding body: {e}") from None

    @staticmethod
    async def _grace(request: web.Request) -> int | None:
        if "gracePeriodSeconds" in request.query:
            return int(request.query["gracePeriodSeconds"])
        raw = await request.read()
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                return None
            if isinstance(body, dict) and body.get("gracePeriodSeconds") is not None:
                return int(body["gracePeriodSeconds"])
        return None

    @staticmethod
    async def _preconditions(request: web.Request) -> dict[str, str]:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return {}
        found = body.get("preconditions") if isinstance(body, dict) else None
        return {k: str(v) for k, v in found.items() if v} if isinstance(found, dict) else {}

    def _log(self, route: Route, q: Any) -> web.Response:
        """`pods/{name}/log` as the API server relays it from the kubelet: text/plain, one container
        (named by `container`, or the only one), `tailLines` then `limitBytes` applied.
        """
        pod = self.store.get(route.res, route.namespace or "", route.name)
        if pod is None:
            raise not_found(route.res, route.name)
        names = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
        container = q.get("container") or (names[0] if len(names) == 1 else "")
        if not container:
            raise bad_request(
                f"a container name must be specified for pod {route.name}, choose one of: [{' '.join(names)}]"
            )
        if container not in names:
            raise bad_request(f"container {container} is not valid for pod {route.name}")
        path = self.container_logs.get((pod["metadata"]["uid"], container))
        if path is None or not path.exists():
            waiting = next(
                (
                    (s.get("state") or {}).get("waiting") or {}
                    for s in (pod.get("status") or {}).get("containerStatuses") or []
                    if s.get("name") == container
                ),
                {},
            )
            raise bad_request(
                f'container "{container}" in pod "{route.name}" is waiting to start: '
                f"{waiting.get('reason') or 'ContainerCreating'}"
            )
        data = path.read_bytes()
        if q.get("tailLines"):
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(q["tailLines"]) :]) if int(q["tailLines"]) > 0 else b""
        if q.get("limitBytes"):
            if int(q["limitBytes"]) <= 0:
                raise bad_request(f"limitBytes: Invalid value: {q['limitBytes']}: must be greater than 0")
            data = data[: int(q["limitBytes"])]
        return web.Response(status=200, body=data, content_type="text/plain")

    def _selectors(self, res: Resource, q: Any) -> tuple[list[sel.Requirement], list[sel.Requirement]]:
        try:
            return sel.parse_labels(q.get("labelSelector", "")), sel.parse_fields(
                q.get("fieldSelector", ""), res.field_keys
            )
        except sel.SelectorError as e:
            raise ApiError(400, "BadRequest", str(e)) from None

    def _list(self, route: Route, q: Any) -> Obj:
        res = route.res
        labels, fields = self._selectors(res, q)
        at: int | None = None
        start = ""
        if q.get("continue"):
            token = json.loads(base64.urlsafe_b64decode(q["continue"] + "=="))
            at, start = int(token["rv"]), token["start"]
        elif q.get("resourceVersionMatch") == "Exact" and q.get("resourceVersion"):
            at = int(q["resourceVersion"])
        if at is not None and at < self.store.storage_floor:
            raise gone("The resourceVersion for the provided list is too old.")
        items = self.store.list(res, route.namespace, labels, fields, at=at)
        items = [i for i in items if f"{i['metadata'].get('namespace', '')}/{i['metadata']['name']}" >= start]
        list_rv = at if at is not None else self.store.rv
        meta: Obj = {"resourceVersion": str(list_rv)}
        limit = int(q.get("limit", "0") or 0)
        if limit and len(items) > limit:
            nxt = items[limit]["metadata"]
            token = json.dumps({"rv": list_rv, "start": f"{nxt.get('namespace', '')}/{nxt['name']}"})
            meta["continue"] = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        elif res.custom:
            meta["continue"] = ""
        if not res.custom:
            items = [{k: v for k, v in i.items() if k not in ("apiVersion", "kind")} for i in items]
        return {"apiVersion": res.api_version, "items": items, "kind": f"{res.kind}List", "metadata": meta}

    async def _watch(self, request: web.Request, route: Route) -> web.StreamResponse:
        res, q = route.res, request.query
        labels, fields = self._selectors(res, q)
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        bookmarks = _bool(q.get("allowWatchBookmarks"))
        initial = _bool(q.get("sendInitialEvents"))
        rv = q.get("resourceVersion", "")
        since = None if (rv in ("", "0") or initial) else int(rv)
        sub = Subscription(res, route.namespace, labels, fields)
        try:
            self.store.subscribe(sub, since)
        except ValueError as e:
            await self._send(resp, {"type": "ERROR", "object": gone(str(e)).body()})
            return resp
        if initial and bookmarks:
            sub.queue.put_nowait(self._bookmark(res, {"k8s.io/initial-events-end": "true"}))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(q.get("timeoutSeconds") or self.default_watch_timeout)
        try:
            while (remaining := deadline - loop.time()) > 0:
                wait = min(remaining, self.bookmark_interval) if bookmarks else remaining
                try:
                    event = await asyncio.wait_for(sub.queue.get(), wait)
                except TimeoutError:
                    if bookmarks and sub.queue.empty():
                        await self._send(resp, self._bookmark(res))
                    continue
                if event is None:
                    return resp
                await self._send(resp, event)
            if bookmarks:
                await self._send(resp, self._bookmark(res))
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.subscriptions.discard(sub)
        return resp

    def _bookmark(self, res: Resource, annotations: dict[str, str] | None = None) -> Obj:
        meta: Obj = {"resourceVersion": str(self.store.rv)}
        if annotations:
            meta["annotations"] = annotations
        return {"type": "BOOKMARK", "object": {"apiVersion": res.api_version, "kind": res.kind, "metadata": meta}}

    @staticmethod
    async def _send(resp: web.StreamResponse, event: Obj) -> None:
        await resp.write(json.dumps(event).encode() + b"\n")
