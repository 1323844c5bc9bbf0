"""The OpenAPI description of the control API, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any


def _op(summary: str, body: dict[str, Any] | None = None, *, status: str = "200") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {
        status: {"description": "success", "content": {"application/json": {"schema": {"type": "object"}}}},
        "401": {"$ref": "#/components/responses/Error"},
        "default": {"$ref": "#/components/responses/Error"},
    }}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": list(body), "properties": body}}}}
    return op


_NAME = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
_TEXT = {"type": "string"}

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
                      "post": _op("connect to a peer address", {"address": _TEXT})},
        "/v1/groups": {"get": _op("groups with their feeds"),
                       "post": _op("create a group; returns its invite URI", {"name": _TEXT}, status="201")},
        "/v1/groups/join": {"post": _op("join a group (or back it up) from an invite URI",
                                        {"uri": _TEXT}, status="201")},
        "/v1/groups/{name}": {"parameters": _NAME, "get": _op("one group"),
                              "delete": {**_op("leave a group and delete what this device stored for it "
                                                   "(?keep_data=1 keeps it); returns the bytes freed"),
                                         "parameters": [{"name": "keep_data", "in": "query",
                                                         "schema": {"type": "string"}}]}},
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
        "/v1/folders": {"get": _op("bound folders and their status"),
                        "post": _op("bind a folder to a group (history_days: its own retention)",
                                    {"group": _TEXT, "path": _TEXT}, status="201")},
        "/v1/folders/{name}": {"parameters": _NAME, "get": _op("files, bytes, pending up/down, conflicts"),
                               "delete": _op("unbind the folder (its files stay)")},
        "/v1/folders/{name}/history": {"parameters": _NAME, "get": {
            **_op("every version of a file"),
            "parameters": [{"name": "file", "in": "query", "required": True, "schema": {"type": "string"}}]}},
        "/v1/folders/{name}/prune": {"parameters": _NAME, "post": _op(
            "apply the folder's history retention now: clear the chunks only expired versions use; "
            "returns what was freed")},
        "/v1/folders/{name}/restore": {"parameters": _NAME, "post": _op(
            "restore a version (the latest if none given), in place or to another path",
            {"file": _TEXT})},
        "/v1/keys/backup": {"post": _op("store this device's keyring on a backup peer under a password",
                                        {"peer": _TEXT, "user": _TEXT, "password": _TEXT})},
        "/v1/keys/restore": {"post": _op("recover the keyring from a backup peer; the daemon restarts",
                                         {"peer": _TEXT, "user": _TEXT, "password": _TEXT})},
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
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
            "description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": _op("this description")},
    },
}
