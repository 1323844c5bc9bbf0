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
   one computation a second, and none costs next to nothing.

The page and its assets (``/``, ``/static/...``) hold no data and are served to anyone who can
reach loopback.
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

from ..errors import AuthError, ForeignOriginError, UsageError
from .sessions import Sessions
from .throughput import Throughput

if TYPE_CHECKING:
    from ..control.server import ControlServer

log = logging.getLogger("cobox.web")

INTERVAL = 1.0  # seconds between samples (and at most this long between status pushes)
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
        r.add_get("/static/{file}", self.static)
        r.add_post("/v1/login-link", self.login_link)
        r.add_post("/v1/session", self.new_session)
        r.add_post("/v1/logout", self.logout)
        r.add_get("/v1/events", self.events)
        r.add_get("/v1/throughput", self.get_throughput)
        r.add_get("/v1/groups/{name}/qr.svg", self.qr)
        server.public_paths |= {"/", "/v1/session"} | {f"/static/{name}" for name in self._assets}
        server.app.cleanup_ctx.append(self._sampling)
        server.app.on_shutdown.append(self._on_shutdown)

    # -- authentication -------------------------------------------------------------------------

    def _loopback_host(self, request: web.Request) -> bool:
        port = self.server.port
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
        url = f"http://127.0.0.1:{self.server.port}/#code={code}"
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


async def _send(resp: web.StreamResponse, event: str, data: Any) -> None:
    await resp.write(f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode())
