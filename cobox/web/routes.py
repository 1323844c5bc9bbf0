"""The dashboard's routes on the control server's aiohttp app.

Theory of operation
-------------------
Pages and their data share the control API's address (127.0.0.1) and its authentication:

1. ``cobox open`` calls ``POST /v1/login-link`` with the API token and gets
   ``http://127.0.0.1:PORT/login?code=...`` (one use, about a minute).
2. ``GET /login?code=`` trades the code for a session cookie (HttpOnly, SameSite=Strict, named
   after the port so that daemons side by side keep theirs apart) and redirects to ``/``: no
   token and no code stays in the address bar.
3. ``GET /`` serves the page with the session's CSRF value inside; the page's requests carry the
   cookie, and the ones that change something also ``X-Cobox-CSRF``. A session is accepted only
   with a ``Host`` of this port on loopback (no DNS rebinding). Without a session ``/`` answers
   401 with a page that says to run ``cobox open``.
4. ``GET /v1/events`` is a stream of server-sent events: ``throughput`` (the history, once),
   ``status`` (the status document, whenever it changed) and ``sample`` (each new throughput
   sample). A sampler task, owned by the app's lifetime, records a sample every ``INTERVAL``
   seconds and, while a stream is open, refreshes the document, also at once after a peer
   connects or leaves; every stream waits on that one tick, so any number of open pages cost
   one computation a second, and none costs next to nothing.

Static assets (``/static/...``) hold no data and are served to anyone who can reach loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.resources
import io
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import segno
from aiohttp import web

from ..errors import AuthError, CsrfError
from .sessions import Sessions
from .throughput import Throughput

if TYPE_CHECKING:
    from ..control.server import ControlServer

log = logging.getLogger("cobox.web")

INTERVAL = 1.0  # seconds between samples (and at most this long between status pushes)
HEARTBEAT = 15.0  # an SSE comment this often keeps idle streams open through proxies
CSRF_HEADER = "X-Cobox-CSRF"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer",
                "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}

LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cobox: log in</title>
<link rel="icon" href="/static/favicon.svg"><link rel="stylesheet" href="/static/style.css"></head>
<body><main class="login"><h1>cobox</h1><p id="login-message">{message}</p>
<p>Run <code>cobox open</code> on this machine: it opens the dashboard with a one-time login link.</p>
</main></body></html>
"""


def _static() -> importlib.resources.abc.Traversable:
    return importlib.resources.files("cobox.web").joinpath("static")


class Dashboard:
    def __init__(self, server: ControlServer) -> None:
        self.server = server
        self.sessions = Sessions()
        self.throughput = Throughput()
        self.doc: dict[str, Any] | None = None
        self.version = 0  # bumped whenever the status document changes
        self._digest = b""
        self._tick = asyncio.Event()  # set (and replaced) after every refresh
        self._poke = asyncio.Event()  # something happened: refresh now
        self._closing = False
        self._watchers = 0  # open event streams: the status document is recomputed only for them
        self._authors: dict[bytes, bytes] = {}  # feed key -> device that writes it
        self._assets = {f.name: f for f in _static().iterdir()
                        if f.name != "index.html" and f.name[f.name.rfind("."):] in STATIC_TYPES}
        r = server.app.router
        r.add_get("/", self.index)
        r.add_get("/login", self.login)
        r.add_get("/static/{file}", self.static)
        r.add_post("/v1/login-link", self.login_link)
        r.add_post("/v1/logout", self.logout)
        r.add_get("/v1/events", self.events)
        r.add_get("/v1/throughput", self.get_throughput)
        r.add_get("/v1/groups/{name}/qr.svg", self.qr)
        server.public_paths |= {"/", "/login"} | {f"/static/{name}" for name in self._assets}
        server.app.cleanup_ctx.append(self._sampling)
        server.app.on_shutdown.append(self._on_shutdown)

    # -- authentication -------------------------------------------------------------------------

    @property
    def cookie_name(self) -> str:
        return f"cobox_session_{self.server.port}"

    def _session_id(self, request: web.Request) -> str:
        port = self.server.port
        if request.host not in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
            return ""  # a session only counts on this port on loopback: no DNS rebinding
        return request.cookies.get(self.cookie_name, "")

    def authorized(self, request: web.Request) -> bool:
        """Is there a valid session cookie? A state-changing request needs the CSRF header too."""
        session = self.sessions.get(self._session_id(request))
        if session is None:
            return False
        if request.method not in SAFE_METHODS:
            origin = request.headers.get("Origin")
            if origin is not None and origin != f"http://{request.host}":
                raise CsrfError(f"a request from {origin} may not change anything here")
            if not self.sessions.check_csrf(session, request.headers.get(CSRF_HEADER, "")):
                raise CsrfError(f"this request needs the dashboard's {CSRF_HEADER} header; reload the page")
        return True

    async def login_link(self, request: web.Request) -> web.Response:
        if request.get("auth") != "token":
            raise AuthError("a login link is given only for the API token (`cobox open`)")
        code = self.sessions.new_code()
        url = f"http://127.0.0.1:{self.server.port}/login?code={code}"
        return web.json_response({"url": url, "expires_in": self.sessions.code_ttl}, status=201)

    async def login(self, request: web.Request) -> web.Response:
        redeemed = self.sessions.redeem(request.query.get("code", ""))
        if redeemed is None:
            return _login_page("This login link is not valid: it was used already, has expired, or is wrong.")
        session_id, _ = redeemed
        resp = web.HTTPSeeOther("/", headers={"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"})
        resp.set_cookie(self.cookie_name, session_id, httponly=True, samesite="Strict", path="/",
                        max_age=int(self.sessions.session_ttl))
        log.info("dashboard: new session")
        raise resp

    async def logout(self, request: web.Request) -> web.Response:
        self.sessions.end(self._session_id(request))
        resp = web.json_response({"logged_out": True})
        resp.del_cookie(self.cookie_name, path="/")
        return resp

    # -- pages ----------------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        session = self.sessions.get(self._session_id(request))
        if session is None:
            return _login_page("You are not logged in.")
        html = _static().joinpath("index.html").read_text(encoding="utf-8")
        html = html.replace("{{csrf}}", session.csrf)
        return web.Response(text=html, content_type="text/html", headers=PAGE_HEADERS)

    async def static(self, request: web.Request) -> web.Response:
        asset = self._assets.get(request.match_info["file"])
        if asset is None:
            raise web.HTTPNotFound()
        suffix = asset.name[asset.name.rfind("."):]
        return web.Response(body=asset.read_bytes(), content_type=STATIC_TYPES[suffix],
                            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    async def qr(self, request: web.Request) -> web.Response:
        group = self.server.daemon.group(request.match_info["name"])
        uri = self.server._invite(group, request.query.get("seed", "") in ("1", "true"))
        return web.Response(body=qr_svg(uri), content_type="image/svg+xml",
                            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

    # -- live data ------------------------------------------------------------------------------

    async def get_throughput(self, request: web.Request) -> web.Response:
        return web.json_response({"interval": INTERVAL, "history": self.throughput.history()})

    async def events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        by_session = request.get("auth") == "session"
        self._watchers += 1
        try:
            if self._watchers == 1:
                await self.refresh()  # the document may be old: nobody watched
            await resp.write(b"retry: 2000\n\n")
            await _send(resp, "throughput", {"interval": INTERVAL, "history": self.throughput.history()})
            seen = -1
            while not self._closing:
                if by_session and not self.authorized(request):
                    await _send(resp, "logout", {})
                    break
                if seen != self.version:
                    seen = self.version
                    await _send(resp, "status", self.doc)
                tick = self._tick
                try:
                    async with asyncio.timeout(HEARTBEAT):
                        await tick.wait()
                except TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                sample = self.throughput.latest()
                if sample is not None and not self._closing:
                    await _send(resp, "sample", sample)
        except (ConnectionResetError, ConnectionError):
            pass  # the page went away
        finally:
            self._watchers -= 1
        return resp

    async def refresh(self) -> None:
        """Record a throughput sample and, while a page watches, recompute the status document;
        wake the streams."""
        d = self.server.daemon
        counters: dict[str, tuple[int, int]] = {}
        for group in d.groups.values():
            feeds = group.feeds()
            reps = [d.node.replicators.find(f.key) for f in feeds]
            counters[group.name] = (sum(len(f.have) for f in feeds),
                                    sum(r.bytes_received for r in reps if r is not None))
        self.throughput.record(time.time(), counters)
        if self._watchers or self.doc is None:
            doc = self.server.status_doc()
            doc["events"] = d.events[-10:]
            for gdoc in doc["groups"]:
                gdoc["connected"] = [p["peer_id"] for p in doc["peers"] if gdoc["name"] in p["groups"]]
                group = d.groups.get(gdoc["name"])
                gdoc["members"] = await self._members(group) if group is not None else []
            stable = {k: v for k, v in doc.items() if k != "uptime"}
            digest = hashlib.blake2b(json.dumps(stable, sort_keys=True, default=str).encode()).digest()
            if digest != self._digest:
                self._digest = digest
                self.version += 1
            self.doc = doc
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    async def _members(self, group: Any) -> list[dict[str, Any]]:
        """The devices that write the group's feeds, from each feed's first entry (members only)."""
        own = group.own_feed()
        out: dict[str, dict[str, Any]] = {}
        if group.is_member:
            out[group.device_id.hex()] = {"peer_id": group.device_id.hex(), "this_device": True}
        for feed in group.feeds():
            if own is not None and feed.key == own.key:
                continue
            author = self._authors.get(feed.key)
            if author is None:
                author = await group.author_of(feed)
                if author is not None:
                    self._authors[feed.key] = author
            if author is not None:
                out.setdefault(author.hex(), {"peer_id": author.hex(), "this_device": False})
        return list(out.values())

    async def _sampling(self, app: web.Application) -> AsyncIterator[None]:
        node = self.server.daemon.node
        node.on_event.append(self._on_peer_event)
        task = asyncio.create_task(self._sample_loop(), name="dashboard-sampler")
        yield
        with contextlib.suppress(ValueError):
            node.on_event.remove(self._on_peer_event)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _sample_loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:
                log.exception("dashboard: refreshing the status failed")
            self._poke.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(INTERVAL):
                    await self._poke.wait()

    def _on_peer_event(self, event: Any) -> None:
        self._poke.set()

    async def _on_shutdown(self, app: web.Application) -> None:
        self._closing = True  # open streams end, so the server need not wait for them
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()


def qr_svg(text: str) -> bytes:
    """``text`` as a QR code (error correction M), an SVG document."""
    buf = io.BytesIO()
    segno.make(text, error="m").save(buf, kind="svg", scale=4, border=2, xmldecl=False, title="cobox invite")
    return buf.getvalue()


def _login_page(message: str) -> web.Response:
    headers = {**PAGE_HEADERS}
    return web.Response(text=LOGIN_PAGE.format(message=message), status=401, content_type="text/html",
                        headers=headers)


async def _send(resp: web.StreamResponse, event: str, data: Any) -> None:
    await resp.write(f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode())
