"""The control API: HTTP+JSON on 127.0.0.1 and on a unix socket in the home.

Every request carries ``Authorization: Bearer <token>`` (or, from the web dashboard, the page's
session secret in ``X-Cobox-Session``; no cookie ever authorizes anything: see :mod:`cobox.web`);
the token is made at start and kept in ``<home>/api.token`` (mode 0600), the socket is mode 0600 too.
Errors are JSON ``{"error": {"code": ..., "message": ...}}`` with a matching status.
``/openapi.json`` describes every route; ``/metrics`` is Prometheus text. The CLI (and the
dashboard) are clients of this API only.

The server knows the device only as an :class:`~cobox.app.App` (every handler parses its
request, asks the App and returns what it answers), so it runs in process against a fake App
in the tests. Extra routes (the dashboard) are mounted with :meth:`ControlServer.mount`: a
:class:`Mount` adds its routes, names the paths that check credentials themselves, and may
authorize a request by its own means (the dashboard's session header).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from networker import NetworkError, ServiceError
from storage.errors import StorageError

from ..app import App
from ..errors import AuthError, CoboxError, RecoveryError, UsageError
from .openapi import OPENAPI
from .streams import follow_log

log = logging.getLogger("cobox.api")

SHUTDOWN_TIMEOUT = 3.0  # seconds aiohttp waits at stop for handlers still running (streams end at once)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class Mount(Protocol):
    """Routes added to the control server that bring their own authentication."""

    public_paths: frozenset[str]  # served without credentials (they check what they need themselves)

    def install(self, server: ControlServer) -> None:
        """Add routes and lifetime hooks to ``server.app``."""

    def authorized(self, request: web.Request) -> bool:
        """Whether the request carries this mount's own credentials (raises AuthError subclasses to refuse)."""


class ControlServer:
    def __init__(self, app: App) -> None:
        self.device = app
        self.settings = app.api_settings()
        self.token = secrets.token_urlsafe(32)
        self.port = 0
        self.where = ""
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()  # set at shutdown: every open stream ends
        self._mounts: list[Mount] = []
        self._public: frozenset[str] = frozenset()
        self.app = web.Application(middlewares=[self._errors, self._auth], client_max_size=1 << 20)
        self.app.on_shutdown.append(self._on_shutdown)
        r = self.app.router
        r.add_get("/openapi.json", self.openapi)
        r.add_get("/metrics", self.metrics)
        r.add_get("/v1/status", self.status)
        r.add_post("/v1/stop", self.stop_daemon)
        r.add_get("/v1/peers", self.peers)
        r.add_post("/v1/peers", self.connect)
        r.add_get("/v1/peers/known", self.known_peers)
        r.add_delete("/v1/peers/known/{peer}", self.forget_peer)
        r.add_get("/v1/device", self.get_device)
        r.add_post("/v1/device/rename", self.rename_device)
        r.add_get("/v1/groups", self.list_groups)
        r.add_post("/v1/groups", self.create_group)
        r.add_post("/v1/groups/join", self.join_group)
        r.add_get("/v1/groups/{name}", self.get_group)
        r.add_delete("/v1/groups/{name}", self.leave_group)
        r.add_get("/v1/groups/{name}/invite", self.invite)
        r.add_delete("/v1/groups/{name}/devices/{device}", self.remove_device)
        r.add_get("/v1/groups/{name}/log", self.read_log)
        r.add_post("/v1/groups/{name}/log", self.append_log)
        r.add_get("/v1/groups/{name}/sync", self.sync)
        r.add_get("/v1/groups/{name}/backup", self.backup)
        r.add_get("/v1/groups/{name}/devices", self.device_list)
        r.add_get("/v1/folders", self.list_folders)
        r.add_post("/v1/folders", self.add_folder)
        r.add_get("/v1/folders/{name}", self.folder_status)
        r.add_delete("/v1/folders/{name}", self.remove_folder)
        r.add_get("/v1/folders/{name}/history", self.folder_history)
        r.add_post("/v1/folders/{name}/restore", self.folder_restore)
        r.add_get("/v1/folders/{name}/files", self.folder_files)
        r.add_get("/v1/folders/{name}/conflicts", self.folder_conflicts)
        r.add_post("/v1/folders/{name}/conflicts/resolve", self.resolve_conflict)
        r.add_patch("/v1/folders/{name}", self.set_folder)
        for what in ("rescan", "override", "revert"):
            r.add_post(f"/v1/folders/{{name}}/{what}", self.folder_request)
        r.add_post("/v1/folders/{name}/prune", self.folder_prune)
        r.add_post("/v1/keys/backup", self.keys_backup)
        r.add_get("/v1/keys/backup", self.keys_backup_state)
        r.add_post("/v1/keys/restore", self.keys_restore)
        r.add_get("/v1/pauses", self.get_pauses)
        r.add_post("/v1/pause", self.pause)
        r.add_post("/v1/resume", self.resume)
        r.add_get("/v1/limits", self.get_limits)
        r.add_put("/v1/limits", self.put_limits)
        r.add_get("/v1/service/invites", self.service_list)
        r.add_post("/v1/service/invites", self.service_invite)
        r.add_post("/v1/service/revoke", self.service_revoke)
        r.add_get("/v1/backups", self.backup_list)
        r.add_post("/v1/backups", self.backup_add)
        r.add_delete("/v1/backups/{name}/{host}", self.backup_remove)

    def mount(self, extra: Mount) -> None:
        extra.install(self)
        self._mounts.append(extra)
        self._public |= extra.public_paths

    # -- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.settings
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                     shutdown_timeout=SHUTDOWN_TIMEOUT)
        await self._runner.setup()
        tcp = web.TCPSite(self._runner, cfg.host, cfg.port)
        await tcp.start()
        self.port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        if cfg.socket:
            sock = Path(cfg.socket)
            if sock.exists():
                sock.unlink()
            old = os.umask(0o177)
            try:
                await web.UnixSite(self._runner, str(sock)).start()
            finally:
                os.umask(old)
            os.chmod(sock, 0o600)
        self.device.published(self.port, self.token)
        where = f" and {cfg.socket}" if cfg.socket else ""
        self.where = f"http://{cfg.host}:{self.port}{where}"  # `cobox daemon` says it with its startup lines

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _on_shutdown(self, app: web.Application) -> None:
        self._closing.set()  # runs before aiohttp waits for the handlers still running

    # -- middlewares --------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status >= 400:
                return error_response(e.status, "http_error", e.reason)
            raise
        except RecoveryError as e:
            return error_response(403, e.code, str(e))
        except ServiceError as e:
            return error_response(403, e.code, f"the backup peer refused: {e}")
        except CoboxError as e:
            return error_response(e.status, e.code, str(e))
        except (NetworkError, StorageError) as e:
            return error_response(502 if isinstance(e, NetworkError) else 500, e.code, str(e))
        except (ValueError, KeyError, TypeError) as e:
            return error_response(400, "bad_request", f"bad request: {e}")

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in self._public:
            return await handler(request)
        if self.authorized(request):
            request["auth"] = "token"
        elif any(m.authorized(request) for m in self._mounts):  # a dashboard session; may raise ForeignOriginError
            request["auth"] = "session"
        else:
            raise AuthError("missing or wrong API token (see <home>/api.token), or not logged in (`cobox open`)")
        return await handler(request)

    def authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        supplied = header[7:] if header.startswith("Bearer ") else ""
        return bool(supplied) and hmac.compare_digest(supplied.encode(), self.token.encode())

    # -- handlers -----------------------------------------------------------------------------

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    def status_doc(self) -> dict[str, Any]:
        return {**self.device.status(), "api": {"port": self.port, "socket": self.settings.socket}}

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self.status_doc())

    async def stop_daemon(self, request: web.Request) -> web.Response:
        self.device.stop()
        return web.json_response({"stopping": True})

    async def peers(self, request: web.Request) -> web.Response:
        return web.json_response(self.device.peers())

    async def connect(self, request: web.Request) -> web.Response:
        body = await _json(request)
        return web.json_response({"peer_id": await self.device.connect(_field(body, "address"))})

    async def known_peers(self, request: web.Request) -> web.Response:
        return web.json_response(self.device.known_peers())

    async def forget_peer(self, request: web.Request) -> web.Response:
        return web.json_response({"forgot": await self.device.forget_peer(request.match_info["peer"])})
    async def get_device(self, request: web.Request) -> web.Response:
        return web.json_response(self.device.device())

    async def rename_device(self, request: web.Request) -> web.Response:
        body = await _json(request)
        return web.json_response(await self.device.rename_device(_field(body, "name")))

    async def device_list(self, request: web.Request) -> web.Response:
        return web.json_response(await self.device.device_list(request.match_info["name"]))

    async def list_groups(self, request: web.Request) -> web.Response:
        return web.json_response(self.device.groups())

    async def create_group(self, request: web.Request) -> web.Response:
        body = await _json(request)
        return web.json_response(await self.device.create_group(_field(body, "name")), status=201)

    async def join_group(self, request: web.Request) -> web.Response:
        body = await _json(request)
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            raise UsageError("the field 'name' must be text")
        return web.json_response(await self.device.join_group(_field(body, "uri"), name), status=201)

    async def get_group(self, request: web.Request) -> web.Response:
        return web.json_response(self.device.group(request.match_info["name"]))

    async def leave_group(self, request: web.Request) -> web.Response:
        keep = request.query.get("keep_data", "") in ("1", "true")
        return web.json_response(await self.device.leave_group(request.match_info["name"], keep))

    async def remove_device(self, request: web.Request) -> web.Response:
        return web.json_response(await self.device.remove_device(request.match_info["name"],
                                                                 request.match_info["device"]))

    async def invite(self, request: web.Request) -> web.Response:
        seed = request.query.get("seed", "") in ("1", "true")
        return web.json_response({"uri": self.device.invite(request.match_info["name"], seed)})

    async def append_log(self, request: web.Request) -> web.Response:
        body = await _json(request)
        return web.json_response(await self.device.append(request.match_info["name"], _field(body, "text")),
                                 status=201)

    async def read_log(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if request.query.get("follow", "") not in ("1", "true"):
            return web.json_response(await self.device.log(name))
        # Follow: newline-delimited JSON, the current entries first, then new ones as they arrive,
        # until the client goes or the server shuts down (see :mod:`cobox.control.streams`).
        group = self.device.follow(name)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        await follow_log(resp, group, self._closing)
        return resp

    async def sync(self, request: web.Request) -> web.Response:
        return web.json_response(self.device.sync_state(request.match_info["name"]))

    async def backup(self, request: web.Request) -> web.Response:
        return web.json_response(self.device.backup_status(request.match_info["name"]))

    async def list_folders(self, request: web.Request) -> web.Response:
        return web.json_response(self.device.folders())

    async def add_folder(self, request: web.Request) -> web.Response:
        body = await _json(request)
        path = _field(body, "path").strip()
        if not os.path.isabs(os.path.expanduser(path)):
            raise UsageError(f"give the folder's full path (like /home/you/Photos or ~/Photos), not {path!r}")
        kind, rescan = _folder_options(body)
        days = body.get("history_days")
        if days is not None and (type(days) not in (int, float) or not 0 <= days <= 36500):
            raise UsageError("the field 'history_days' must be a number of days from 0 to 36500")
        return web.json_response(await self.device.add_folder(_field(body, "group"), path, kind, rescan,
                                                              None if days is None else float(days)), status=201)

    async def set_folder(self, request: web.Request) -> web.Response:
        kind, rescan = _folder_options(await _json(request))
        if kind is None and rescan is None:
            raise UsageError("give 'type' and/or 'rescan_interval'")
        return web.json_response(await self.device.set_folder(request.match_info["name"], kind, rescan))

    async def folder_request(self, request: web.Request) -> web.Response:
        what = request.path.rsplit("/", 1)[1]
        return web.json_response(await self.device.folder_request(request.match_info["name"], what))

    async def folder_prune(self, request: web.Request) -> web.Response:
        return web.json_response(await self.device.folder_prune(request.match_info["name"]))

    async def folder_status(self, request: web.Request) -> web.Response:
        return web.json_response(self.device.folder(request.match_info["name"]))

    async def remove_folder(self, request: web.Request) -> web.Response:
        await self.device.remove_folder(request.match_info["name"])
        return web.json_response({"removed": request.match_info["name"]})

    async def folder_history(self, request: web.Request) -> web.Response:
        return web.json_response(await self.device.folder_history(request.match_info["name"],
                                                                  request.query.get("file", "")))

    async def folder_restore(self, request: web.Request) -> web.Response:
        body = await _json(request)
        version, to = body.get("version"), body.get("to")
        if version is not None and not isinstance(version, str):
            raise UsageError("the field 'version' must be text")
        if to is not None and not isinstance(to, str):
            raise UsageError("the field 'to' must be text")
        force = body.get("force", False)
        if not isinstance(force, bool):
            raise UsageError("the field 'force' must be true or false")
        return web.json_response(await self.device.folder_restore(request.match_info["name"], _field(body, "file"),
                                                                  version, to or None, force))

    async def folder_files(self, request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "200"))
        except ValueError:
            raise UsageError("limit must be a number") from None
        return web.json_response(await self.device.folder_files(request.match_info["name"],
                                                                request.query.get("q", ""), max(1, min(limit, 1000))))

    async def folder_conflicts(self, request: web.Request) -> web.Response:
        return web.json_response(await self.device.folder_conflicts(request.match_info["name"]))

    async def resolve_conflict(self, request: web.Request) -> web.Response:
        body = await _json(request)
        return web.json_response(await self.device.resolve_conflict(request.match_info["name"], _field(body, "copy"),
                                                                    _field(body, "keep")))

    async def keys_backup(self, request: web.Request) -> web.Response:
        body = await _json(request)
        pinned = await self.device.backup_keys(_field(body, "peer"), _field(body, "user"), _field(body, "password"),
                                               body.get("trust_first_use") is True)
        return web.json_response({"backed_up": True, "pinned": pinned})

    async def keys_restore(self, request: web.Request) -> web.Response:
        body = await _json(request)
        result = await self.device.restore_keys(_field(body, "peer"), _field(body, "user"), _field(body, "password"),
                                                body.get("trust_first_use") is True, body.get("force") is True)
        return web.json_response(result)

    async def get_pauses(self, request: web.Request) -> web.Response:
        return web.json_response(self.device.pauses())

    async def pause(self, request: web.Request) -> web.Response:
        kind, name = _pause_target(await _json(request))
        return web.json_response(await self.device.pause(kind, name, True))

    async def resume(self, request: web.Request) -> web.Response:
        kind, name = _pause_target(await _json(request))
        return web.json_response(await self.device.pause(kind, name, False))

    async def get_limits(self, request: web.Request) -> web.Response:
        return web.json_response(self.device.limits())

    async def put_limits(self, request: web.Request) -> web.Response:
        return web.json_response(self.device.set_limits(await _json(request)))
    async def service_list(self, request: web.Request) -> web.Response:
        return web.json_response(self.device.service_list())

    async def service_invite(self, request: web.Request) -> web.Response:
        body = await _json(request)
        numbers = {k: body.get(k) for k in ("quota_mb", "groups", "expires_days")}
        for k, v in numbers.items():
            if v is not None and (type(v) not in (int, float) or (k == "groups" and type(v) is not int)):
                raise UsageError(f"the field {k!r} must be a number")
        label = body.get("label", "")
        if not isinstance(label, str):
            raise UsageError("the field 'label' must be text")
        return web.json_response(await self.device.service_invite(numbers["quota_mb"], numbers["groups"],
                                                                  numbers["expires_days"], label), status=201)

    async def service_revoke(self, request: web.Request) -> web.Response:
        body = await _json(request)
        return web.json_response(await self.device.service_revoke(_field(body, "what")))

    async def backup_list(self, request: web.Request) -> web.Response:
        return web.json_response(await self.device.backup_list())

    async def backup_add(self, request: web.Request) -> web.Response:
        body = await _json(request)
        return web.json_response(await self.device.backup_add(_field(body, "group"), _field(body, "uri")), status=201)

    async def backup_remove(self, request: web.Request) -> web.Response:
        return web.json_response(await self.device.backup_remove(request.match_info["name"],
                                                                 request.match_info["host"]))
    async def keys_backup_state(self, request: web.Request) -> web.Response:
        return web.json_response({"backup": await self.device.keys_backup_state()})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.device.metrics(), content_type="text/plain")


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UsageError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise UsageError("the request body must be a JSON object")
    return body


def _folder_options(body: dict[str, Any]) -> tuple[str | None, Any]:
    """The optional folder ``type`` (text) and ``rescan_interval`` (a number, checked by the folder)."""
    kind, rescan = body.get("type"), body.get("rescan_interval")
    if kind is not None and not isinstance(kind, str):
        raise UsageError("the field 'type' must be text: send-receive, send-only or receive-only")
    if rescan is not None and (isinstance(rescan, bool) or not isinstance(rescan, int | float)):
        raise UsageError("the field 'rescan_interval' must be a number of seconds")
    return kind, rescan


def _field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise UsageError(f"missing text field {name!r}")
    return value


def _pause_target(body: dict[str, Any]) -> tuple[str, str]:
    """``{"group": NAME}``, ``{"folder": NAME}`` or ``{"device": KEY}``: exactly one."""
    given = [k for k in ("group", "folder", "device") if k in body]
    if len(given) != 1 or len(body) != 1:
        raise UsageError('give exactly one of "group", "folder" or "device"')
    return given[0], _field(body, given[0])
