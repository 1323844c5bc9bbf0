"""The control API: HTTP+JSON on 127.0.0.1 and on a unix socket in the home.

Every request carries ``Authorization: Bearer <token>`` (or, from the web dashboard, the page's
session secret in ``X-Cobox-Session``; no cookie ever authorizes anything: see :mod:`cobox.web`);
the token is made at start and kept in ``<home>/api.token`` (mode 0600), the socket is mode 0600 too.
Errors are JSON ``{"error": {"code": ..., "message": ...}}`` with a matching status.
``/openapi.json`` describes every route; ``/metrics`` is Prometheus text. The CLI (and the
dashboard) are clients of this API only.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from networker.encoding import encode_key
from networker.errors import NetworkError
from networker.peer import ServiceError
from storage.errors import StorageError

from ..errors import AuthError, CoboxError, RecoveryError, UsageError
from ..folders.paths import normalize_path
from ..folders.sync import find_version, version_id
from ..uri import Invite, parse_invite
from .openapi import OPENAPI

if TYPE_CHECKING:
    from ..daemon import Daemon

log = logging.getLogger("cobox.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class ControlServer:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.token = secrets.token_urlsafe(32)
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.app = web.Application(middlewares=[self._errors, self._auth], client_max_size=1 << 20)
        r = self.app.router
        r.add_get("/openapi.json", self.openapi)
        r.add_get("/metrics", self.metrics)
        r.add_get("/v1/status", self.status)
        r.add_post("/v1/stop", self.stop)
        r.add_get("/v1/peers", self.peers)
        r.add_post("/v1/peers", self.connect)
        r.add_get("/v1/groups", self.list_groups)
        r.add_post("/v1/groups", self.create_group)
        r.add_post("/v1/groups/join", self.join_group)
        r.add_get("/v1/groups/{name}", self.get_group)
        r.add_delete("/v1/groups/{name}", self.leave_group)
        r.add_get("/v1/groups/{name}/invite", self.invite)
        r.add_get("/v1/groups/{name}/log", self.read_log)
        r.add_post("/v1/groups/{name}/log", self.append_log)
        r.add_get("/v1/groups/{name}/sync", self.sync)
        r.add_get("/v1/groups/{name}/backup", self.backup)
        r.add_get("/v1/folders", self.list_folders)
        r.add_post("/v1/folders", self.add_folder)
        r.add_get("/v1/folders/{name}", self.folder_status)
        r.add_delete("/v1/folders/{name}", self.remove_folder)
        r.add_get("/v1/folders/{name}/history", self.folder_history)
        r.add_post("/v1/folders/{name}/restore", self.folder_restore)
        r.add_post("/v1/keys/backup", self.keys_backup)
        r.add_post("/v1/keys/restore", self.keys_restore)
        self.extra_routes: list[Callable[[web.Application], None]] = []
        self.public_paths: set[str] = set()  # routes that check credentials themselves
        from ..web.routes import Dashboard

        self.web = Dashboard(self)

    # -- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.daemon.config["api"]
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        tcp = web.TCPSite(self._runner, cfg["host"], cfg["port"])
        await tcp.start()
        self.port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        sock = self.daemon.home.api_socket
        if sock.exists():
            sock.unlink()
        old = os.umask(0o177)
        try:
            await web.UnixSite(self._runner, str(sock)).start()
        finally:
            os.umask(old)
        os.chmod(sock, 0o600)
        self.daemon.write_api_files(self.port, self.token)
        print(f"cobox: control API on http://{cfg['host']}:{self.port} and {sock}", flush=True)

    async def stop(self, request: web.Request | None = None) -> web.Response:  # type: ignore[override]
        if request is not None:
            self.daemon.stop()
            return web.json_response({"stopping": True})
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        return web.json_response({})

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
        if request.path in self.public_paths:
            return await handler(request)
        if self.authorized(request):
            request["auth"] = "token"
        elif self.web.authorized(request):  # a dashboard session; raises ForeignOriginError from another origin
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

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self.status_doc())

    def status_doc(self) -> dict[str, Any]:
        d = self.daemon
        sent, received = d.node.traffic()
        return {
            "peer_id": d.identity.peer_id.hex(),
            "peer_key": encode_key(d.identity.peer_id),
            "home": str(d.home.root),
            "pid": os.getpid(),
            "uptime": round(time.time() - d.started, 1),
            "listening": d.listen_addresses,
            "advertised": d.advertised(),
            "api": {"port": self.port, "socket": str(d.home.api_socket)},
            "dht": d.dht.status() if d.dht is not None else {"enabled": False},
            "lan": {"enabled": d.lan is not None},
            "groups": [self.group_doc(g) for g in d.groups.values()],
            "folders": [f.status() for f in d.folders.values()],
            "peers": self.peers_doc(),
            "relay": d.relaying.status() if d.relaying is not None else None,
            "bytes_sent": sent,
            "bytes_received": received,
        }

    def group_doc(self, group: Any) -> dict[str, Any]:
        doc = group.status()
        doc["sync"] = self.daemon.sync_state(group)
        folder = self.daemon.folders.get(group.name)
        if folder is not None:
            f = folder.status()
            failed = f", {f['failed_count']} paths cannot be applied" if f["failed_count"] else ""
            doc["folders"] = [{"path": f["path"], "status": f"{f['files']} files, {f['bytes']} bytes, "
                               f"{f['pending_down']} to download{', error: ' + f['error'] if f['error'] else ''}"
                               f"{failed}",
                               "error": f["error"], "last_error": f["last_error"],
                               "last_error_time": f["last_error_time"], "failed_count": f["failed_count"]}]
            doc["conflicts"] = f["conflicts"]
        if group.is_member:
            doc["receipts"] = [
                {"peer": b["peer"], "length": min((x["held"] for x in b["feeds"]), default=0),
                 "time": max((x["confirmed"] or 0 for x in b["feeds"]), default=0),
                 "backed_up": b["backed_up"], "quota_full": b["quota_full"], "audit": b["audit"]}
                for b in group.backup_status()]
        return doc

    def peers_doc(self) -> list[dict[str, Any]]:
        out = []
        for peer in self.daemon.node.peers.values():
            out.append({
                "peer_id": peer.remote_peer_id.hex(),
                "address": getattr(peer.conn, "remote_address", ""),
                "initiator": peer.conn.is_initiator,
                "kind": getattr(peer, "kind", ""),
                "groups": [ch.group.name for ch in peer.channels.values()
                           if ch.live and hasattr(ch.group, "name")],
                "bytes_sent": getattr(peer.conn, "bytes_sent", 0),
                "bytes_received": getattr(peer.conn, "bytes_received", 0),
            })
        return out

    async def peers(self, request: web.Request) -> web.Response:
        return web.json_response(self.peers_doc())

    async def connect(self, request: web.Request) -> web.Response:
        body = await _json(request)
        peer_id = await self.daemon.connect(_field(body, "address"))
        return web.json_response({"peer_id": peer_id.hex()})

    async def list_groups(self, request: web.Request) -> web.Response:
        return web.json_response([self.group_doc(g) for g in self.daemon.groups.values()])

    async def create_group(self, request: web.Request) -> web.Response:
        body = await _json(request)
        group = await self.daemon.create_group(_field(body, "name"))
        return web.json_response({**self.group_doc(group), "invite": self._invite(group, False)}, status=201)

    async def join_group(self, request: web.Request) -> web.Response:
        body = await _json(request)
        invite = parse_invite(_field(body, "uri"))
        group = await self.daemon.join(invite, body.get("name"))
        return web.json_response(self.group_doc(group), status=201)

    async def get_group(self, request: web.Request) -> web.Response:
        return web.json_response(self.group_doc(self.daemon.group(request.match_info["name"])))

    async def leave_group(self, request: web.Request) -> web.Response:
        await self.daemon.leave_group(request.match_info["name"])
        return web.json_response({"left": request.match_info["name"]})

    def _invite(self, group: Any, seed: bool) -> str:
        if seed:
            return Invite("seed", group.keys.replication_key).format()
        if group.keys.address is None:
            raise UsageError(f"{group.name!r} is backed up here, not joined: only a seed invite exists")
        return Invite("join", group.keys.address, group.name).format()

    async def invite(self, request: web.Request) -> web.Response:
        group = self.daemon.group(request.match_info["name"])
        seed = request.query.get("seed", "") in ("1", "true")
        return web.json_response({"uri": self._invite(group, seed)})

    async def append_log(self, request: web.Request) -> web.Response:
        group = self.daemon.group(request.match_info["name"])
        body = await _json(request)
        text = _field(body, "text")
        seq = await group.append(text)
        return web.json_response({"seq": seq, "feed": group.own_feed().key.hex()}, status=201)

    async def read_log(self, request: web.Request) -> web.StreamResponse:
        group = self.daemon.group(request.match_info["name"])
        if request.query.get("follow", "") not in ("1", "true"):
            return web.json_response([e.as_json() for e in await group.log()])
        # Follow: newline-delimited JSON, the current entries first, then new ones as they arrive.
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        seen: set[tuple[bytes, int]] = set()
        changed = asyncio.Event()
        unlisten = []

        def watch(feed: Any) -> None:
            unlisten.append(feed.listen(lambda _e: changed.set()))
            changed.set()

        for feed in group.feeds():
            watch(feed)
        group.on_feed_added(watch)
        try:
            while True:
                changed.clear()
                for entry in await group.log():
                    if (entry.feed, entry.seq) not in seen:
                        seen.add((entry.feed, entry.seq))
                        await resp.write(json.dumps(entry.as_json()).encode() + b"\n")
                await changed.wait()
        finally:
            for u in unlisten:
                u()

    async def sync(self, request: web.Request) -> web.Response:
        group = self.daemon.group(request.match_info["name"])
        return web.json_response(self.daemon.sync_state(group))

    async def backup(self, request: web.Request) -> web.Response:
        group = self.daemon.group(request.match_info["name"])
        return web.json_response(group.backup_status())

    async def list_folders(self, request: web.Request) -> web.Response:
        return web.json_response([f.status() for f in self.daemon.folders.values()])

    async def add_folder(self, request: web.Request) -> web.Response:
        body = await _json(request)
        sync = await self.daemon.add_folder(_field(body, "group"), _field(body, "path"))
        return web.json_response(sync.status(), status=201)

    async def folder_status(self, request: web.Request) -> web.Response:
        return web.json_response(self.daemon.folder(request.match_info["name"]).status())

    async def remove_folder(self, request: web.Request) -> web.Response:
        await self.daemon.remove_folder(request.match_info["name"])
        return web.json_response({"removed": request.match_info["name"]})

    async def folder_history(self, request: web.Request) -> web.Response:
        sync = self.daemon.folder(request.match_info["name"])
        path = normalize_path(request.query.get("file", ""))
        await sync.read_ops()
        shown = sync.state.files.get(path)
        return web.json_response([
            {"version": version_id(v), "author": v.stamp.author.hex(), "clock": v.stamp.clock,
             "mtime": v.mtime / 1e9, "size": v.size, "deleted": v.deleted,
             "current": shown is not None and shown.stamp == v.stamp}
            for v in sync.state.history(path)])

    async def folder_restore(self, request: web.Request) -> web.Response:
        sync = self.daemon.folder(request.match_info["name"])
        body = await _json(request)
        path = normalize_path(_field(body, "file"))
        await sync.read_ops()
        v = find_version(sync.state, path, body.get("version"))
        if body.get("to"):
            await sync.write_version(v, Path(str(body["to"])).expanduser().resolve())
            return web.json_response({"written": str(body["to"]), "version": version_id(v)})
        await sync.record(sync.state.restore(path, v.stamp, sync.group.device_id))
        sync.wake()
        return web.json_response({"restored": path, "version": version_id(v)})

    async def keys_backup(self, request: web.Request) -> web.Response:
        body = await _json(request)
        pinned = await self.daemon.backup_keys(_field(body, "peer"), _field(body, "user"), _field(body, "password"),
                                               body.get("trust_first_use") is True)
        return web.json_response({"backed_up": True, "pinned": pinned})

    async def keys_restore(self, request: web.Request) -> web.Response:
        body = await _json(request)
        result = await self.daemon.restore_keys(_field(body, "peer"), _field(body, "user"), _field(body, "password"),
                                                body.get("trust_first_use") is True)
        return web.json_response(result)

    async def metrics(self, request: web.Request) -> web.Response:
        d = self.daemon
        sent, received = d.node.traffic()
        entries = sum(rep.entries_received for rep in d.node.replicators._by_key.values())
        lines = [
            "# HELP cobox_peers Connected peers.", "# TYPE cobox_peers gauge",
            f"cobox_peers {len(d.node.peers)}",
            "# HELP cobox_groups Groups on this device.", "# TYPE cobox_groups gauge",
            f"cobox_groups {len(d.groups)}",
            "# HELP cobox_bytes_sent_total Bytes sent to peers.", "# TYPE cobox_bytes_sent_total counter",
            f"cobox_bytes_sent_total {sent}",
            "# HELP cobox_bytes_received_total Bytes received from peers.",
            "# TYPE cobox_bytes_received_total counter",
            f"cobox_bytes_received_total {received}",
            "# HELP cobox_entries_replicated_total Entries received and verified from peers.",
            "# TYPE cobox_entries_replicated_total counter",
            f"cobox_entries_replicated_total {entries}",
            "# HELP cobox_protocol_errors_total Peers disconnected for breaking the protocol.",
            "# TYPE cobox_protocol_errors_total counter",
            f"cobox_protocol_errors_total {d.node.protocol_errors}",
        ]
        for g in d.groups.values():
            length = sum(f.length for f in g.feeds())
            lines.append(f'cobox_group_entries{{group="{_label(g.name)}"}} {length}')
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UsageError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise UsageError("the request body must be a JSON object")
    return body


def _field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise UsageError(f"missing text field {name!r}")
    return value


def _label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
