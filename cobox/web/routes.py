"""The dashboard's routes on the control server's aiohttp app.

Theory of operation
-------------------
Pages and their data share the control API's address (127.0.0.1) and its authentication. No
cookie is set or honoured: cookies are not scoped by port, so any server on another 127.0.0.1
port (reached by a link from any page) would receive them. Instead:

1. ``cobox open`` calls ``POST /v1/login-link`` with the API token and gets
   ``http://127.0.0.1:PORT/#code=...`` (one use, about a minute). The CLI writes it into a 0600
   file in the (0700) home that redirects there and opens that *file* in the browser, so the
   browser's command line shows only a path nobody else can read.
2. The fragment is never sent to the server. The page (``/``, a static shell with no data)
   reads it, clears it from the address bar, and trades the code with ``POST /v1/session`` for
   a session secret that it keeps in ``sessionStorage`` (scoped by scheme, host and port).
3. Every request of the page, the live stream included (a ``fetch()`` stream, not
   ``EventSource``), carries ``X-Cobox-Session: <secret>``. A session counts only with a
   ``Host`` of this port on loopback (no DNS rebinding) and with no ``Origin`` or our own (a
   page of another port cannot set our header without a CORS preflight we never answer).
4. ``GET /v1/events`` is a stream of server-sent events: ``throughput`` (the history, once),
   ``status`` (the status document, whenever it changed) and ``sample`` (each new throughput
   sample). A sampler task, owned by the app's lifetime, records a sample every ``INTERVAL``
   seconds and, while a stream is open, refreshes the document, also at once after a peer
   connects or leaves; every stream waits on that one tick, so any number of open pages cost
   one computation a second, and none costs next to nothing. While something is syncing the
   document is refreshed every ``BUSY_INTERVAL`` seconds (progress moves smoothly and short
   transfers are seen), also for ``BUSY_AFTER_EVENT`` seconds after a peer event (a sync may be
   starting); samples are still taken once a ``INTERVAL``.
5. The document says which optional controls the daemon offers (``features``: pause, limits,
   rescan, folder type, device rename/remove, found among the server's routes), so the page shows a
   control only where its endpoint exists. Folder activity is told in words by comparing one
   document's folders with the next (:mod:`cobox.web.activity`).

The page and its assets (``/``, ``/static/...``) hold no data and are served to anyone who can
reach loopback.

The dashboard asks the device only through the :class:`~cobox.app.App` it is given and is
mounted on the control server (:meth:`~cobox.control.server.ControlServer.mount`), whose port and
status document it reads; it registers one peer-event listener for the app's lifetime and
removes it with the unsubscribe function ``subscribe`` returned.
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

from ..app import App
from ..errors import AuthError, CoboxError, ForeignOriginError, UsageError
from ..status import dashboard_document
from ..version import __version__
from .activity import Activity
from .sessions import Sessions
from .throughput import Throughput

if TYPE_CHECKING:
    from ..control.server import ControlServer

log = logging.getLogger("cobox.web")

INTERVAL = 1.0  # seconds between samples (and at most this long between status pushes)
BUSY_INTERVAL = 0.25  # seconds between status refreshes while a group or folder is syncing
BUSY_AFTER_EVENT = 5.0  # and for this long after a peer connects or leaves (a sync may start)
# Optional controls, each offered when the control server has this route (method and path).
FEATURES: dict[str, tuple[str, str]] = {
    "pause": ("POST", "/v1/pause"),                                      # {"group"|"folder"|"device": ...}
    "resume": ("POST", "/v1/resume"),
    "limits": ("PUT", "/v1/limits"),                                     # bandwidth, KiB/s
    "rescan": ("POST", "/v1/folders/{name}/rescan"),
    "override": ("POST", "/v1/folders/{name}/override"),                 # send-only: undo remote changes
    "revert": ("POST", "/v1/folders/{name}/revert"),                     # receive-only: undo local changes
    "folder_edit": ("PATCH", "/v1/folders/{name}"),                      # {"type", "rescan_interval"}
    "rename": ("POST", "/v1/device/rename"),                             # this device's name
    "remove_device": ("DELETE", "/v1/groups/{name}/devices/{device}"),
}
HEARTBEAT = 15.0  # an SSE comment this often keeps idle streams open through proxies
SESSION_HEADER = "X-Cobox-Session"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer",
                "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def _static() -> importlib.resources.abc.Traversable:
    return importlib.resources.files("cobox.web").joinpath("static")


class Dashboard:
    """The dashboard's routes, sessions and live status (a :class:`~cobox.control.server.Mount`)."""

    def __init__(self, app: App) -> None:
        self.device = app
        self.server: ControlServer | None = None  # set by install()
        self.sessions = Sessions()
        self.throughput = Throughput()
        self.activity = Activity()
        self._kinds: dict[str, str] = {}  # peer id -> how it was last connected
        self._sampled = 0.0  # when the latest throughput sample was taken
        self._busy = False  # something is syncing: refresh more often
        self._busy_until = 0.0  # (monotonic) refresh often until then: a peer came or went
        self.doc: dict[str, Any] | None = None
        self.version = 0  # bumped whenever the status document changes
        self._digest = b""
        self._tick = asyncio.Event()  # set (and replaced) after every refresh
        self._poke = asyncio.Event()  # something happened: refresh now
        self._closing = False
        self._watchers = 0  # open event streams: the status document is recomputed only for them
        self._assets = {f.name: f for f in _static().iterdir()
                        if f.name != "index.html" and f.name[f.name.rfind("."):] in STATIC_TYPES}
        self.public_paths = frozenset({"/", "/v1/session"} | {f"/static/{name}" for name in self._assets})

    def install(self, server: ControlServer) -> None:
        self.server = server
        r = server.app.router
        r.add_get("/", self.index)
        r.add_get("/static/{file}", self.static)
        r.add_post("/v1/login-link", self.login_link)
        r.add_post("/v1/session", self.new_session)
        r.add_post("/v1/logout", self.logout)
        r.add_get("/v1/events", self.events)
        r.add_get("/v1/throughput", self.get_throughput)
        r.add_get("/v1/groups/{name}/qr.svg", self.qr)
        r.add_get("/v1/device/qr.svg", self.device_qr)
        server.app.cleanup_ctx.append(self._sampling)
        server.app.on_shutdown.append(self._on_shutdown)

    # -- authentication -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.server.port if self.server is not None else 0

    def _loopback_host(self, request: web.Request) -> bool:
        port = self.port
        return request.host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}")

    def _check_origin(self, request: web.Request) -> None:
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"http://{request.host}":
            raise ForeignOriginError(f"a page of {origin} may not use this dashboard")

    def authorized(self, request: web.Request) -> bool:
        """Does the request carry a valid session secret in its header, from our own origin?
        A cookie is never looked at."""
        secret = request.headers.get(SESSION_HEADER, "")
        if not secret or not self._loopback_host(request):
            return False  # a session only counts on this port on loopback: no DNS rebinding
        if self.sessions.get(secret) is None:
            return False
        self._check_origin(request)
        return True

    async def login_link(self, request: web.Request) -> web.Response:
        if request.get("auth") != "token":
            raise AuthError("a login link is given only for the API token (`cobox open`)")
        code = self.sessions.new_code()
        url = f"http://127.0.0.1:{self.port}/#code={code}"
        return web.json_response({"url": url, "expires_in": self.sessions.code_ttl}, status=201)

    async def new_session(self, request: web.Request) -> web.Response:
        """Trade a login code (from the page's fragment) for a session secret, once."""
        if not self._loopback_host(request):
            raise AuthError("log in at http://127.0.0.1:PORT only")
        self._check_origin(request)
        try:
            body = await request.json()
        except ValueError:
            raise UsageError("the request body is not JSON") from None
        code = body.get("code") if isinstance(body, dict) else None
        redeemed = self.sessions.redeem(code) if isinstance(code, str) else None
        if redeemed is None:
            raise AuthError("this login link is not valid: it was used already, has expired, or is wrong; "
                            "run `cobox open` again")
        secret, _ = redeemed
        log.info("dashboard: new session")
        return web.json_response({"session": secret, "expires_in": self.sessions.session_ttl}, status=201,
                                 headers={"Cache-Control": "no-store"})

    async def logout(self, request: web.Request) -> web.Response:
        self.sessions.end(request.headers.get(SESSION_HEADER, ""))
        return web.json_response({"logged_out": True})

    # -- pages ----------------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        html = _static().joinpath("index.html").read_text(encoding="utf-8")
        return web.Response(text=html, content_type="text/html", headers=PAGE_HEADERS)

    async def static(self, request: web.Request) -> web.Response:
        asset = self._assets.get(request.match_info["file"])
        if asset is None:
            raise web.HTTPNotFound()
        suffix = asset.name[asset.name.rfind("."):]
        return web.Response(body=asset.read_bytes(), content_type=STATIC_TYPES[suffix],
                            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    async def qr(self, request: web.Request) -> web.Response:
        uri = self.device.invite(request.match_info["name"], request.query.get("seed", "") in ("1", "true"))
        return web.Response(body=qr_svg(uri), content_type="image/svg+xml",
                            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

    async def device_qr(self, request: web.Request) -> web.Response:
        key = self.server.status_doc()["peer_key"] if self.server is not None else ""
        return web.Response(body=qr_svg(key, "cobox device key"), content_type="image/svg+xml",
                            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

    def features(self) -> dict[str, str | None]:
        """Per optional control, the path of its route on the control server, or None."""
        if self.server is None:
            return dict.fromkeys(FEATURES)
        routes = {(r.method, r.resource.canonical) for r in self.server.app.router.routes() if r.resource is not None}
        return {name: path if (method, path) in routes else None for name, (method, path) in FEATURES.items()}

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
            last_sample = self.throughput.latest()
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
                if sample is not None and sample is not last_sample and not self._closing:
                    last_sample = sample
                    await _send(resp, "sample", sample)
        except (ConnectionResetError, ConnectionError):
            pass  # the page went away
        finally:
            self._watchers -= 1
        return resp

    async def refresh(self) -> None:
        """Record a throughput sample (once a ``INTERVAL``) and, while a page watches, recompute
        the status document; wake the streams."""
        app = self.device
        now = time.time()
        if now - self._sampled >= INTERVAL * 0.9:
            self._sampled = now
            self.throughput.record(now, app.throughput_counters(), app.traffic())
        if (self._watchers or self.doc is None) and self.server is not None:
            status = self.server.status_doc()
            members = {}
            for g in status["groups"]:
                try:
                    members[g["name"]] = await app.members(g["name"])
                except CoboxError:
                    members[g["name"]] = []  # left while we looked
            for p in status["peers"]:
                self._kinds[p["peer_id"]] = p.get("kind", "")
            self.activity.observe(now, status.get("folders", []))
            doc = dashboard_document(status, app.recent_events(20), members, version=__version__,
                                     features=self.features(), kinds=self._kinds, changes=app.folder_changes(),
                                     activity=self.activity.recent())
            self._busy = any(_syncing(g) for g in status["groups"])
            stable = {k: v for k, v in doc.items() if k != "uptime"}
            digest = hashlib.blake2b(json.dumps(stable, sort_keys=True, default=str).encode()).digest()
            if digest != self._digest:
                self._digest = digest
                self.version += 1
            self.doc = doc
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    async def _sampling(self, app: web.Application) -> AsyncIterator[None]:
        unsubscribe = self.device.subscribe(self._on_peer_event)
        task = asyncio.create_task(self._sample_loop(), name="dashboard-sampler")
        yield
        unsubscribe()
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
                busy = self._busy or time.monotonic() < self._busy_until
                async with asyncio.timeout(BUSY_INTERVAL if busy and self._watchers else INTERVAL):
                    await self._poke.wait()

    def _on_peer_event(self, event: Any) -> None:
        self._busy_until = time.monotonic() + BUSY_AFTER_EVENT
        self._poke.set()

    async def _on_shutdown(self, app: web.Application) -> None:
        self._closing = True  # open streams end, so the server need not wait for them
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()


def qr_svg(text: str, title: str = "cobox invite") -> bytes:
    """``text`` as a QR code (error correction M), an SVG document."""
    buf = io.BytesIO()
    segno.make(text, error="m").save(buf, kind="svg", scale=4, border=2, xmldecl=False, title=title)
    return buf.getvalue()


def _syncing(group: dict[str, Any]) -> bool:
    """Is the group busy with a peer: entries still missing, downloads pending, channels unsettled?"""
    s = group.get("sync") or {}
    return bool(s.get("peers")) and not s.get("synced")


async def _send(resp: web.StreamResponse, event: str, data: Any) -> None:
    await resp.write(f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode())
