"""The OpenAPI description of the control API, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any


def _op(summary: str, body: dict[str, Any] | None = None, *, status: str = "200",
        optional: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {
        status: {"description": "success", "content": {"application/json": {"schema": {"type": "object"}}}},
        "401": {"$ref": "#/components/responses/Error"},
        "default": {"$ref": "#/components/responses/Error"},
    }}
    if body is not None:
        schema: dict[str, Any] = {"type": "object", "properties": {**body, **(optional or {})}}
        if body:
            schema["required"] = list(body)
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    return op


_NAME = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
_TEXT = {"type": "string"}
_KBPS = {"type": "integer", "minimum": 0, "description": "KiB/s; 0: unlimited"}


def _pause_op(summary: str) -> dict[str, Any]:
    op = _op(summary + "; answers the pauses, as GET /v1/pauses")
    op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "minProperties": 1, "maxProperties": 1, "properties": {
            "group": {**_TEXT, "description": "a group's name: no replication for it"},
            "folder": {**_TEXT, "description": "a folder, by its group's name: no scan, record or apply"},
            "device": {**_TEXT, "description": "a peer key or peer id (64 hex): no connection to it"}}}}}}
    return op


def _limits_op() -> dict[str, Any]:
    op = _op("change bandwidth limits (only the fields given; runtime changes are kept across restarts and win "
             "over the configuration until {\"reset\": true}); answers the limits")
    op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "properties": {
            "max_send_kbps": _KBPS, "max_recv_kbps": _KBPS, "limit_lan": {"type": "boolean"},
            "reset": {"type": "boolean", "description": "back to the configuration's limits (given alone)"},
            "devices": {"type": "object", "description": "peer key or id -> {send_kbps, recv_kbps}, or null "
                        "to drop that device's limits", "additionalProperties": {
                            "type": "object", "nullable": True,
                            "properties": {"send_kbps": _KBPS, "recv_kbps": _KBPS}}}}}}}}
    return op
_BOOL = {"type": "boolean"}
_NUMBER = {"type": "number"}
_FOLDER_OPTIONS = {"type": {"type": "string", "enum": ["send-receive", "send-only", "receive-only"]},
                   "rescan_interval": _NUMBER}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "cobox control API", "version": "1"},
    "components": {
        "securitySchemes": {
            "token": {"type": "http", "scheme": "bearer"},
            # the dashboard: a secret from POST /v1/session, kept in the page's sessionStorage
            "session": {"type": "apiKey", "in": "header", "name": "X-Cobox-Session"},
        },
        "responses": {"Error": {"description": "an error", "content": {"application/json": {"schema": {
            "type": "object", "properties": {"error": {"type": "object", "properties": {
                "code": {"type": "string"}, "message": {"type": "string"}}}}}}}}},
    },
    "security": [{"token": []}, {"session": []}],
    "paths": {
        "/v1/status": {"get": _op("identity, addresses, DHT state, groups, peers, traffic, "
                                  "services (name, state, restarts, last_error)")},
        "/v1/stop": {"post": _op("shut the daemon down gracefully")},
        "/v1/peers": {"get": _op("connected peers"),
                      "post": _op("connect to a peer address and keep it as a known peer", {"address": _TEXT})},
        "/v1/peers/known": {"get": _op("known peers (kept from `peers add`, redialled): address, connected")},
        "/v1/peers/known/{peer}": {"parameters": [{"name": "peer", "in": "path", "required": True,
                                                   "schema": {"type": "string"}}],
                                   "delete": _op("forget a known peer (key, hex id prefix or address); "
                                                 "closes its connection")},
        "/v1/device": {"get": _op("this device: id and name")},
        "/v1/device/rename": {"post": _op("rename this device; its profile is published again in every group",
                                          {"name": _TEXT})},
        "/v1/groups": {"get": _op("groups with their feeds"),
                       "post": _op("create a group; returns its invite URI", {"name": _TEXT}, status="201")},
        "/v1/groups/join": {"post": _op("join a group (or back it up) from an invite URI",
                                        {"uri": _TEXT}, status="201")},
        "/v1/groups/{name}": {"parameters": _NAME, "get": _op("one group"),
                              "delete": {**_op("leave a group and delete what this device stored for it "
                                                   "(?keep_data=1 keeps it); returns the bytes freed"),
                                         "parameters": [{"name": "keep_data", "in": "query",
                                                         "schema": {"type": "string"}}]}},
        "/v1/groups/{name}/devices/{device}": {
            "parameters": [*_NAME, {"name": "device", "in": "path", "required": True, "schema": {"type": "string"}}],
            "delete": _op("remove a device (name or id prefix) from the group: the group moves to a new epoch; "
                          "the device keeps what it already had")},
        "/v1/groups/{name}/invite": {"parameters": _NAME, "get": {
            **_op("the member invite URI, or with ?seed=1 the backup-peer URI"),
            "parameters": [{"name": "seed", "in": "query", "schema": {"type": "string"}}]}},
        "/v1/groups/{name}/log": {"parameters": _NAME,
                                  "get": {**_op("the group log, decrypted; ?follow=1 streams NDJSON"),
                                          "parameters": [{"name": "follow", "in": "query",
                                                          "schema": {"type": "string"}}]},
                                  "post": _op("append a log entry", {"text": _TEXT}, status="201")},
        "/v1/groups/{name}/sync": {"parameters": _NAME,
                                   "get": _op("how much of what connected peers have is still missing")},
        "/v1/groups/{name}/backup": {"parameters": _NAME,
                                     "get": _op("per backup peer and own feed: claims (receipts) and audits")},
        "/v1/groups/{name}/devices": {"parameters": _NAME, "get": _op(
            "every device of the group: name, id, role, last seen, connected and how, feeds held")},
        "/v1/folders": {"get": _op("bound folders and their status"),
                        "post": _op("bind a folder to a group (history_days: its own retention)",
                                    {"group": _TEXT, "path": _TEXT}, status="201",
                                    optional={**_FOLDER_OPTIONS, "history_days": _NUMBER})},
        "/v1/folders/{name}": {"parameters": _NAME,
                               "get": _op("files, bytes, pending up/down, conflicts, type, rescan interval, "
                                          "out of sync paths (held back by the type), files waiting to be stable"),
                               "patch": _op("change the folder's type and/or rescan interval (kept across restarts)",
                                            {}, optional=_FOLDER_OPTIONS),
                               "delete": _op("unbind the folder (its files stay)")},
        "/v1/folders/{name}/rescan": {"parameters": _NAME, "post": _op(
            "rescan now; answers when the round is done (`done` false: still to come)")},
        "/v1/folders/{name}/override": {"parameters": _NAME, "post": _op(
            "send-only: make the group take this device's state (Override Changes)")},
        "/v1/folders/{name}/revert": {"parameters": _NAME, "post": _op(
            "receive-only: make this device take the group's state (Revert Local Changes)")},
        "/v1/folders/{name}/history": {"parameters": _NAME, "get": {
            **_op("every version of a file"),
            "parameters": [{"name": "file", "in": "query", "required": True, "schema": {"type": "string"}}]}},
        "/v1/folders/{name}/prune": {"parameters": _NAME, "post": _op(
            "apply the folder's history retention now: clear the chunks only expired versions use; "
            "returns what was freed")},
        "/v1/folders/{name}/restore": {"parameters": _NAME, "post": _op(
            "restore a version (the latest if none given), in place (`in_place`: written by the time it "
            "answers) or to another path or directory (`force`: replace a file there)",
            {"file": _TEXT}, optional={"version": _TEXT, "to": _TEXT, "force": _BOOL})},
        "/v1/folders/{name}/files": {"parameters": _NAME, "get": {
            **_op("the files shown, by path ({files: [{path, size, mtime, author}], total}); ?q= filters names"),
            "parameters": [{"name": "q", "in": "query", "schema": {"type": "string"}},
                           {"name": "limit", "in": "query", "schema": {"type": "integer"}}]}},
        "/v1/folders/{name}/conflicts": {"parameters": _NAME, "get": _op(
            "conflict copies shown, each with the file it lost against")},
        "/v1/folders/{name}/conflicts/resolve": {"parameters": _NAME, "post": _op(
            "resolve a conflict: keep the original, the copy (it replaces the original) or both",
            {"copy": _TEXT, "keep": {"type": "string", "enum": ["original", "copy", "both"]}})},
        "/v1/device/qr.svg": {"get": {
            "summary": "this device's peer key as a QR code",
            "responses": {"200": {"description": "an SVG image", "content": {"image/svg+xml": {}}},
                          "401": {"$ref": "#/components/responses/Error"},
                          "default": {"$ref": "#/components/responses/Error"}}}},
        "/v1/keys/backup": {"post": _op("store this device's keyring on a backup peer under a password",
                                        {"peer": _TEXT, "user": _TEXT, "password": _TEXT}),
                            "get": _op("the last keyring backup (peer, user, time) and whether it still covers "
                                       "this device's groups and folders (current)")},
        "/v1/keys/restore": {"post": _op("recover the keyring from a backup peer (refused over an identity in use "
                                         "unless force: true); returns its folders; the daemon restarts",
                                         {"peer": _TEXT, "user": _TEXT, "password": _TEXT})},
        "/v1/service/invites": {
            "get": _op("this host's service invites: quota, use, the devices and groups kept for each"),
            "post": _op("a new service invite (cobox://backup/...); optional quota_mb, groups, expires_days "
                        "(numbers, 0: no limit) and label", status="201")},
        "/v1/service/revoke": {"post": _op("revoke a service invite or a device (id or prefix): its groups take "
                                           "no new data, and are cleared after [hosting] revoke_grace_days",
                                           {"what": _TEXT})},
        "/v1/backups": {"get": _op("each group's backup hosts: the host's latest signed statement (state, use, "
                                   "quota), receipts and audit"),
                        "post": _op("hand a group's replication key to a backup host by its service invite",
                                    {"group": _TEXT, "uri": _TEXT}, status="201")},
        "/v1/backups/{name}/{host}": {"parameters": [*_NAME, {"name": "host", "in": "path", "required": True,
                                                              "schema": {"type": "string"}}],
                                      "delete": _op("ask the backup host (id or prefix) to drop the group")},
        "/v1/groups/{name}/qr.svg": {"parameters": _NAME, "get": {
            "summary": "the invite URI (or with ?seed=1 the backup-peer URI) as a QR code",
            "parameters": [{"name": "seed", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "an SVG image", "content": {"image/svg+xml": {}}},
                          "401": {"$ref": "#/components/responses/Error"},
                          "default": {"$ref": "#/components/responses/Error"}}}},
        "/v1/login-link": {"post": _op("a one-time dashboard login URL, code in the fragment (API token only)",
                                       status="201")},
        "/v1/session": {"post": _op("trade a login code, once, for a dashboard session secret, sent as "
                                    "X-Cobox-Session from then on", {"code": _TEXT}, status="201")},
        "/v1/logout": {"post": _op("end the dashboard session of this X-Cobox-Session header")},
        "/v1/events": {"get": {
            "summary": "server-sent events: `throughput` (history, once), `status` (the status document with "
                       "connected peers and members per group, when it changes), `sample` (each second)",
            "responses": {"200": {"description": "an event stream", "content": {"text/event-stream": {}}},
                          "401": {"$ref": "#/components/responses/Error"}}}},
        "/v1/throughput": {"get": _op("per-group counters (entries held, bytes received) sampled each second, "
                                      "the last five minutes")},
        "/v1/pauses": {"get": _op("paused groups, folders and devices (kept across restarts)")},
        "/v1/pause": {"post": _pause_op("pause a group, a folder or a device")},
        "/v1/resume": {"post": _pause_op("resume a group, a folder or a device")},
        "/v1/limits": {"get": _op("bandwidth limits: max_send_kbps, max_recv_kbps, limit_lan, per-device limits, "
                                  "source (config or runtime)"),
                       "put": _limits_op()},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
            "description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": _op("this description")},
    },
}
