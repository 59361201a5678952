"""The dashboard's web edge (aiohttp): login, pages, the live stream, writes, the kill switch.

Every page needs a session (a token at /login); writes need the admin role, a CSRF token and, from
a browser, this server's Origin; the kill switch also needs the operator's key on this machine.
Responses carry a Content-Security-Policy that allows only this server's own script and style.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from aiohttp import web
from multidict import MultiDictProxy

from chaosbus.common import bus as busmod
from chaosbus.common import halt, signing
from chaosbus.common import logging as cblog
from chaosbus.common.webtokens import ADMIN
from chaosbus.dashboard import auth, html, views, writes
from chaosbus.dashboard.metrics import DashboardMetrics
from chaosbus.dashboard.world import World

log = cblog.get("dashboard")
STATIC = Path(__file__).parent / "static"
LIVE_KEEPALIVE_S = 15.0
MAX_BODY = 1024 * 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make browsers send `Origin: null` on our own forms
    "Cache-Control": "no-store",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SESSION = web.RequestKey("session", auth.Session)
FORM = web.RequestKey("form", MultiDictProxy)


@dataclass
class Dashboard:
    world: World
    tokens: dict[str, str]
    writer: writes.Writer | None  # None: read-only deployment
    bus: busmod.Bus | None = None  # the kill switch goes over NATS in both modes
    operator: signing.Signer | None = None
    operator_error: str = "no operator key here: the kill switch is `chaosbus halt` where the key is"
    unsigned: bool = False  # CHAOSBUS_UNSIGNED: the kill switch needs no key (measurements only)
    cluster: bool = False
    kube: writes.KubeWriter | None = None  # cluster mode: Events through the API with the person's token
    sessions: auth.Sessions = field(default_factory=auth.Sessions)
    secure_cookie: bool = False
    metrics: DashboardMetrics = field(default_factory=DashboardMetrics)

    # --- who is asking ---------------------------------------------------------------------------

    def session(self, request: web.Request) -> auth.Session | None:
        return self.sessions.get(request.cookies.get(auth.SESSION_COOKIE))

    def viewer(self, s: auth.Session) -> html.Viewer:
        can_write = self.writer is not None and s.admin and (not self.cluster or bool(s.kube_token))
        can_halt = s.admin and self.bus is not None and (self.operator is not None or self.unsigned)
        why = "" if can_halt else ("read-only token" if not s.admin else self.operator_error)
        return html.Viewer(
            role=s.role + (" (Kubernetes token)" if s.kube_token else ""),
            csrf=s.csrf,
            can_write=can_write,
            can_halt=can_halt,
            why_no_halt=why,
        )

    def frame(self, request: web.Request, s: auth.Session, title: str, page: str, *, live: bool = True) -> html.Frame:
        return html.Frame(
            title=title,
            page=page,
            halt=self.world.halt,
            viewer=self.viewer(s),
            flash=request.query.get("msg", "")[:500],
            live=live,
        )

    def unready(self) -> str:
        """Why the dashboard should get no traffic now ("" when it should): with no live NATS
        connection it shows stale state and its kill switch does nothing.
        """
        if self.bus is None or self.bus.nc.is_closed:
            return "no NATS connection (connecting)"
        if not self.bus.nc.is_connected:
            return "NATS connection lost (reconnecting)"
        if not self.world.ready.is_set():
            return "replaying the experiments"
        return ""

    async def readyz(self, _request: web.Request) -> web.Response:
        why = self.unready()
        return web.Response(text=why or "ready", status=503 if why else 200)

    # --- middleware ------------------------------------------------------------------------------

    @web.middleware
    async def count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every request counted by its route's pattern and the status it got."""
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            self.metrics.requests.labels(route, request.method, str(status)).inc()

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        open_paths = request.path in ("/login", "/readyz") or request.path.startswith("/static/")
        if not open_paths:
            s = self.session(request)
            if s is None:
                if request.method == "GET" and request.path != "/live":
                    raise web.HTTPSeeOther("/login")
                raise web.HTTPUnauthorized(text="log in first")
            request[SESSION] = s
            if request.method == "POST":
                form = await request.post()
                request[FORM] = form
                origin_ok = auth.same_origin(request.headers.get("Origin"), request.host, request.scheme)
                if not origin_ok or not auth.csrf_ok(s, str(form.get("csrf") or "")):
                    raise web.HTTPForbidden(text="bad or missing CSRF token (reload the page)")
        try:
            response = await handler(request)
        except web.HTTPException as e:
            e.headers.update(SECURITY_HEADERS)
            raise
        response.headers.update(SECURITY_HEADERS)
        return response

    # --- login -----------------------------------------------------------------------------------

    async def login_page(self, request: web.Request) -> web.Response:
        return web.Response(text=html.login(cluster=self.cluster), content_type="text/html")

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        if not auth.same_origin(request.headers.get("Origin"), request.host, request.scheme):
            self.metrics.logins.labels("refused").inc()
            raise web.HTTPForbidden(text="cross-site login refused")
        role = auth.role_of(str(form.get("token") or ""), self.tokens)
        self.metrics.logins.labels(role or "refused").inc()
        if role is None:
            await asyncio.sleep(0.5)  # a wrong guess costs time
            return web.Response(
                text=html.login("That token is not valid.", self.cluster), status=401, content_type="text/html"
            )
        try:
            sid = self.sessions.open(role, kube_token=str(form.get("kube_token") or "").strip())
        except auth.SessionTooLarge as e:
            return web.Response(text=html.login(str(e), self.cluster), status=400, content_type="text/html")
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            auth.SESSION_COOKIE,
            sid,
            httponly=True,
            samesite="Strict",
            secure=self.secure_cookie,
            max_age=int(auth.SESSION_TTL_S),
            path="/",
        )
        log.info("dashboard login", role=role, remote=request.remote)
        raise response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        self.sessions.close(request.cookies.get(auth.SESSION_COOKIE))
        response = web.HTTPSeeOther("/login")
        response.del_cookie(auth.SESSION_COOKIE, path="/")
        raise response

    # --- pages -----------------------------------------------------------------------------------

    def _render(
        self, request: web.Request, title: str, page: str, body: str, *, live: bool = True, status: int = 200
    ) -> web.Response:
        frame = self.frame(request, request[SESSION], title, page, live=live)
        if request.query.get("fragment") == "1":
            return web.Response(text=html.fragment(frame, body), content_type="application/json")
        return web.Response(text=html.page(frame, body), content_type="text/html", status=status)

    async def experiments(self, request: web.Request) -> web.Response:
        rows = views.experiment_rows(self.world.all(), time.time())
        return self._render(request, "Experiments", "/", html.experiments(rows))

    async def experiment(self, request: web.Request) -> web.Response:
        kind, ns, name = request.match_info["kind"], request.match_info["ns"], request.match_info["name"]
        obj = self.world.find(kind, ns, name)
        if obj is None or not views.is_experiment(kind):
            raise web.HTTPNotFound(text=f"{kind} {ns}/{name} not found (deleted?)")
        s = request[SESSION]
        body = html.experiment(obj, views.events_of(obj, await self._events(s)), self.viewer(s), time.time())
        return self._render(request, f"{kind} {name}", "/", body)

    async def schedules(self, request: web.Request) -> web.Response:
        body = html.schedules(views.schedule_views(self.world.all()), self.viewer(request[SESSION]), time.time())
        return self._render(request, "Schedules", "/schedules", body)

    async def workflows(self, request: web.Request) -> web.Response:
        items = sorted((o for o in self.world.all() if o.get("kind") == "Workflow"), key=views.key_of)
        return self._render(request, "Workflows", "/workflows", html.workflows(items, time.time()))

    async def workflow(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        w = self.world.find("Workflow", ns, name)
        if w is None:
            raise web.HTTPNotFound(text=f"Workflow {ns}/{name} not found (deleted?)")
        s = request[SESSION]
        body = html.workflow(
            w, views.workflow_nodes(w, self.world.all()), views.events_of(w, await self._events(s)), self.viewer(s)
        )
        return self._render(request, f"Workflow {name}", "/workflows", body)

    async def _events(self, s: auth.Session) -> list[dict[str, object]]:
        if not self.cluster:
            return self.world.events()
        if self.kube is None or not s.kube_token:
            return []
        try:
            return await self.kube.events(s.kube_token)
        except writes.WriteError:
            return []

    async def events(self, request: web.Request) -> web.Response:
        s = request[SESSION]
        note = (
            "Events live in the Kubernetes API: log in with a Kubernetes token to see them."
            if self.cluster and not s.kube_token
            else ""
        )
        return self._render(request, "Events", "/events", html.events(views.recent_events(await self._events(s)), note))

    async def nodes(self, request: web.Request) -> web.Response:
        now = time.time()
        body = html.nodes(views.node_views(self.world.health, self.world.node_names(), now), now)
        return self._render(request, "Nodes", "/nodes", body)

    async def new_form(self, request: web.Request) -> web.Response:
        return self._render(request, "New", "/new", html.new_form(self.viewer(request[SESSION])), live=False)

    # --- live updates ----------------------------------------------------------------------------

    async def live(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: `rows` (every experiment's phase and injected/total) and `changed`
        (the version) whenever anything changes; a comment line keeps idle connections open.
        """
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **SECURITY_HEADERS})
        await response.prepare(request)
        seen = -1
        self.metrics.live.inc()
        try:
            while True:
                version = await self.world.wait_change(seen, LIVE_KEEPALIVE_S)
                if version == seen:
                    await response.write(b": keep-alive\n\n")
                    continue
                seen = version
                rows = [r.live() for r in views.experiment_rows(self.world.all(), time.time())]
                halted = self.world.halt is not None and self.world.halt.halted
                payload = json.dumps(
                    {"version": version, "objects": self.world.objects_version, "rows": rows, "halted": halted}
                )
                await response.write(f"event: changed\ndata: {payload}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.metrics.live.dec()
        return response

    # --- writes ----------------------------------------------------------------------------------

    def _writer(self, request: web.Request, action: str) -> tuple[writes.Writer, auth.Session]:
        s: auth.Session = request[SESSION]
        if self.writer is None or not s.admin:
            self.metrics.writes.labels(action, "refused").inc()
            raise web.HTTPForbidden(text="read-only: log in with the admin token to change anything")
        return self.writer, s

    def _wrote(self, action: str, done: bool) -> None:
        self.metrics.writes.labels(action, "done" if done else "refused").inc()

    async def create(self, request: web.Request) -> web.Response:
        writer, s = self._writer(request, "create")
        text = str(request[FORM].get("yaml") or "")
        try:
            done = await writer.create(writes.admitted(text), s.kube_token)
        except writes.WriteError as e:
            self._wrote("create", False)
            body = html.new_form(self.viewer(s), text, views.located(text, e.errors))
            return self._render(request, "New", "/new", body, live=False, status=422)
        self._wrote("create", True)
        raise web.HTTPSeeOther("/?msg=" + quote("; ".join(done)))

    async def pause(self, request: web.Request) -> web.Response:
        return await self._set_paused(request, True)

    async def resume(self, request: web.Request) -> web.Response:
        return await self._set_paused(request, False)

    async def pause_schedule(self, request: web.Request) -> web.Response:
        return await self._set_paused(request, True)

    async def resume_schedule(self, request: web.Request) -> web.Response:
        return await self._set_paused(request, False)

    async def _set_paused(self, request: web.Request, paused: bool) -> web.Response:
        action = "pause" if paused else "resume"
        writer, s = self._writer(request, action)
        kind = request.match_info.get("kind", "Schedule")
        ns, name = request.match_info["ns"], request.match_info["name"]
        obj = self.world.find(kind, ns, name)
        if obj is None or not (views.is_experiment(kind) or kind == "Schedule"):
            raise web.HTTPNotFound(text=f"{kind} {ns}/{name} not found")
        back = "/schedules" if kind == "Schedule" else html.experiment_href(kind, ns, name)
        try:
            msg = await writer.set_paused(obj, paused, s.kube_token)
            self._wrote(action, True)
        except writes.WriteError as e:
            self._wrote(action, False)
            msg = f"refused: {e}"
        raise web.HTTPSeeOther(f"{back}?msg={quote(msg)}")

    async def delete(self, request: web.Request) -> web.Response:
        writer, s = self._writer(request, "delete")
        kind, ns, name = request.match_info["kind"], request.match_info["ns"], request.match_info["name"]
        try:
            msg = await writer.delete(kind, ns, name, s.kube_token)
            self._wrote("delete", True)
        except writes.WriteError as e:
            self._wrote("delete", False)
            msg = f"refused: {e}"
        raise web.HTTPSeeOther("/?msg=" + quote(msg))

    async def kill_switch(self, request: web.Request) -> web.Response:
        s: auth.Session = request[SESSION]
        engage = request.match_info["op"] == "halt"
        action = "halt" if engage else "release"
        if not s.admin or self.bus is None or (self.operator is None and not self.unsigned):
            self._wrote(action, False)
            raise web.HTTPForbidden(text="the kill switch needs the admin token and the operator key")
        reason = str(request[FORM].get("reason") or "")[:200] if engage else "resumed"
        state = await halt.set_halt(
            self.bus,
            halted=engage,
            reason=reason or "halted from the dashboard",
            signer=self.operator,
            by=f"dashboard ({request.remote or '?'})",
        )
        await self.world.set_halt(state)
        self._wrote(action, True)
        log.warning("kill switch from the dashboard", halted=engage, reason=reason, remote=request.remote)
        where = request.headers.get("Referer", "/")
        target = where if where.startswith(f"{request.scheme}://{request.host}/") else "/"
        raise web.HTTPSeeOther(target)


def make_app(d: Dashboard) -> web.Application:
    app = web.Application(middlewares=[d.count, d.guard], client_max_size=MAX_BODY)
    app.router.add_get("/readyz", d.readyz)
    app.router.add_get("/login", d.login_page)
    app.router.add_post("/login", d.login)
    app.router.add_post("/logout", d.logout)
    app.router.add_get("/", d.experiments)
    app.router.add_get("/experiments/{kind}/{ns}/{name}", d.experiment)
    app.router.add_post("/experiments/{kind}/{ns}/{name}/pause", d.pause)
    app.router.add_post("/experiments/{kind}/{ns}/{name}/resume", d.resume)
    app.router.add_post("/experiments/{kind}/{ns}/{name}/delete", d.delete)
    app.router.add_post("/objects/{kind}/{ns}/{name}/delete", d.delete)
    app.router.add_get("/schedules", d.schedules)
    app.router.add_post("/schedules/{ns}/{name}/pause", d.pause_schedule)
    app.router.add_post("/schedules/{ns}/{name}/resume", d.resume_schedule)
    app.router.add_get("/workflows", d.workflows)
    app.router.add_get("/workflows/{ns}/{name}", d.workflow)
    app.router.add_get("/events", d.events)
    app.router.add_get("/nodes", d.nodes)
    app.router.add_get("/new", d.new_form)
    app.router.add_post("/new", d.create)
    app.router.add_post("/control/{op:halt|resume}", d.kill_switch)
    app.router.add_get("/live", d.live)
    app.router.add_static("/static/", STATIC, show_index=False)
    return app


__all__ = ["ADMIN", "Dashboard", "make_app"]
