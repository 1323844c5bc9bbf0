"""The control API and the dashboard against a fake :class:`~cobox.app.App`, in process.

No daemon, no store, no peer: the server's aiohttp app runs on 127.0.0.1 port 0 inside the
test's loop, and the fake App records what each handler asked of it. This shows the control
plane depends on the App protocol only: requests are parsed and checked here (a field of the
wrong type is a 400 before the App is asked), answers are the App's documents, errors are the
App's error types mapped to their status, and the dashboard's listener is gone after shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from cobox.app import ApiSettings, App
from cobox.control.server import ControlServer
from cobox.errors import GroupNotFoundError
from cobox.web.routes import Dashboard


class Followed:
    def __init__(self) -> None:
        self.unlistened = 0

    def feeds(self) -> list[Any]:
        return []

    def on_feed_added(self, callback: Callable[[Any], None]) -> Callable[[], None]:
        def undo() -> None:
            self.unlistened += 1
        return undo

    async def log(self) -> list[Any]:
        return []


class FakeApp:
    """An App that keeps groups as names and logs every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.names: list[str] = ["family"]
        self.listeners: list[Callable[[Any], None]] = []
        self.stopped = False
        self.published_as: tuple[int, str] | None = None
        self.followed = Followed()

    def _group(self, name: str) -> dict[str, Any]:
        if name not in self.names:
            raise GroupNotFoundError(f"no group named {name!r}")
        return {"name": name, "is_member": True}

    def api_settings(self) -> ApiSettings:
        return ApiSettings("127.0.0.1", 0, "")

    def published(self, port: int, token: str) -> None:
        self.published_as = (port, token)

    def status(self) -> dict[str, Any]:
        return {"peer_id": "ab" * 32, "uptime": 1.0, "groups": self.groups(),
                "peers": [{"peer_id": "cd" * 32, "groups": ["family"]}]}

    def metrics(self) -> str:
        return "cobox_peers 1\n"

    def stop(self) -> None:
        self.stopped = True

    def peers(self) -> list[dict[str, Any]]:
        return [{"peer_id": "cd" * 32}]

    async def connect(self, address: str) -> str:
        self.calls.append(("connect", address))
        return "cd" * 32

    def known_peers(self) -> list:
        return [{"peer_id": "cd" * 32, "address": "tcp:10.0.0.1:47100", "connected": False}]

    async def forget_peer(self, peer: str) -> str:
        self.calls.append(("forget_peer", peer))
        return "cd" * 32

    def subscribe(self, callback: Callable[[Any], None]) -> Callable[[], None]:
        self.listeners.append(callback)
        return lambda: self.listeners.remove(callback)

    def recent_events(self, n: int) -> list[dict[str, Any]]:
        return [{"kind": "connected"}][:n]

    def device(self) -> dict[str, Any]:
        return {"id": "ab" * 32, "name": "fake"}

    async def rename_device(self, name: str) -> dict[str, Any]:
        self.calls.append(("rename", name))
        return {"id": "ab" * 32, "name": name}

    async def device_list(self, group: str) -> list[dict[str, Any]]:
        self._group(group)
        return [{"id": "ab" * 32, "name": "fake"}]

    def groups(self) -> list[dict[str, Any]]:
        return [self._group(n) for n in self.names]

    def group(self, name: str) -> dict[str, Any]:
        return self._group(name)

    async def create_group(self, name: str) -> dict[str, Any]:
        self.names.append(name)
        return {**self._group(name), "invite": f"cobox://join/{name}"}

    async def join_group(self, uri: str, name: str | None) -> dict[str, Any]:
        self.calls.append(("join", uri, name))
        self.names.append(name or "joined")
        return self._group(name or "joined")

    async def leave_group(self, name: str, keep_data: bool = False) -> dict[str, Any]:
        self._group(name)
        self.names.remove(name)
        return {"left": name, "kept_data": keep_data, "deleted_bytes": 0, "freed_bytes": 0}

    async def remove_device(self, name: str, device: str) -> dict[str, Any]:
        self._group(name)
        self.calls.append(("remove_device", name, device))
        return {"group": name, "removed": device}

    def invite(self, name: str, seed: bool) -> str:
        self._group(name)
        return f"cobox://{'seed' if seed else 'join'}/{name}"

    async def append(self, name: str, text: str) -> dict[str, Any]:
        self.calls.append(("append", name, text))
        return {"seq": 7, "feed": "ee" * 32}

    async def log(self, name: str) -> list[dict[str, Any]]:
        self._group(name)
        return [{"seq": 0, "text": "hello"}]

    def follow(self, name: str) -> Followed:
        self._group(name)
        return self.followed

    def sync_state(self, name: str) -> dict[str, Any]:
        return {"group": self._group(name)["name"], "synced": True}

    def backup_status(self, name: str) -> list[dict[str, Any]]:
        self._group(name)
        return []

    async def members(self, name: str) -> list[dict[str, Any]]:
        return [{"peer_id": "ab" * 32, "this_device": True}]

    def throughput_counters(self) -> dict[str, tuple[int, int]]:
        return {n: (1, 10) for n in self.names}

    def folder_changes(self) -> dict[str, float]:
        return {}

    def traffic(self) -> tuple[int, int]:
        return (5, 7)

    def folders(self) -> list[dict[str, Any]]:
        return []

    def folder(self, name: str) -> dict[str, Any]:
        return {"group": self._group(name)["name"], "files": 0}

    async def add_folder(self, group: str, path: str, kind: str | None = None, rescan: Any = None,
                         history_days: float | None = None) -> dict[str, Any]:
        self.calls.append(("add_folder", group, path, kind, rescan))
        return {"group": group, "path": path}

    async def set_folder(self, name: str, kind: str | None, rescan: Any) -> dict[str, Any]:
        self.calls.append(("set_folder", name, kind, rescan))
        return {"group": name, "type": kind}

    async def folder_request(self, name: str, what: str) -> dict[str, Any]:
        self.calls.append(("folder_request", name, what))
        return {"group": name, "request": what, "done": True}


    async def folder_prune(self, name: str) -> dict[str, Any]:
        self.calls.append(("prune", name))
        return {"group": name, "history_days": 30.0, "expired_versions": 0, "cleared_entries": 0,
                "freed_bytes": 0, "disk_freed_bytes": 0}

    async def remove_folder(self, name: str) -> None:
        self.calls.append(("remove_folder", name))

    async def folder_history(self, name: str, file: str) -> list[dict[str, Any]]:
        self.calls.append(("history", name, file))
        return [{"version": "3-abcdef01", "current": True}]

    async def folder_restore(self, name: str, file: str, version: str | None, to: str | None,
                             force: bool = False) -> dict[str, Any]:
        self.calls.append(("restore", name, file, version, to))
        return {"restored": file, "version": version or "3-abcdef01"}

    async def folder_files(self, name: str, query: str, limit: int) -> dict[str, Any]:
        self.calls.append(("files", name, query, limit))
        return {"files": [], "total": 0}

    async def folder_conflicts(self, name: str) -> list[dict[str, Any]]:
        return []

    async def resolve_conflict(self, name: str, copy: str, keep: str) -> dict[str, Any]:
        self.calls.append(("resolve", name, copy, keep))
        return {"resolved": copy, "kept": keep}

    async def backup_keys(self, peer: str, user: str, password: str, trust_first_use: bool) -> str | None:
        self.calls.append(("backup_keys", peer, user, trust_first_use))
        return None

    async def restore_keys(self, peer: str, user: str, password: str, trust_first_use: bool,
                           force: bool = False) -> dict[str, Any]:
        self.calls.append(("restore_keys", peer, user, trust_first_use, force))
        return {"restarting": True}

    def pauses(self) -> dict[str, Any]:
        return {"groups": [], "folders": [], "devices": []}

    async def pause(self, kind: str, name: str, paused: bool) -> dict[str, Any]:
        self.calls.append(("pause" if paused else "resume", kind, name))
        return {"groups": [name] if kind == "group" and paused else [], "folders": [], "devices": []}

    def limits(self) -> dict[str, Any]:
        return {"max_send_kbps": 0, "max_recv_kbps": 0, "limit_lan": False, "devices": {}, "source": "config"}

    def set_limits(self, change: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("limits", change))
        return {**self.limits(), **change, "source": "runtime"}
    async def service_invite(self, quota_mb: float | None, groups: int | None, expires_days: float | None,
                             label: str) -> dict[str, Any]:
        self.calls.append(("service_invite", quota_mb, groups, expires_days, label))
        return {"uri": "cobox://backup/x?cap=y", "id": "00" * 16}

    def service_list(self) -> list[dict[str, Any]]:
        return []

    async def service_revoke(self, what: str) -> dict[str, Any]:
        self.calls.append(("service_revoke", what))
        return {"revoked": "invite", "id": what, "groups": [], "clears_in": 0.0}

    async def backup_add(self, group: str, uri: str) -> dict[str, Any]:
        self.calls.append(("backup_add", group))
        return {"group": group, "host": "00" * 32}

    async def backup_list(self) -> list[dict[str, Any]]:
        return []

    async def backup_remove(self, group: str, host: str) -> dict[str, Any]:
        self.calls.append(("backup_remove", group, host))
        return {"group": group, "host": host, "removed": True}

    async def keys_backup_state(self) -> dict[str, Any] | None:
        return None


def test_the_fake_is_an_app() -> None:
    app: App = FakeApp()  # mypy checks the protocol; at run time, every member the server uses exists
    for name in App.__dict__:
        if not name.startswith("_"):
            assert callable(getattr(app, name)), name


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakeApp, ControlServer, str, aiohttp.ClientSession, dict[str, str]]]:
    app = FakeApp()
    server = ControlServer(app)
    dashboard = Dashboard(app)
    server.mount(dashboard)
    ts = TestServer(server.app, host="127.0.0.1", port=0)
    await ts.start_server()
    server.port = ts.port or 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        yield app, server, f"http://127.0.0.1:{ts.port}", http, {"Authorization": f"Bearer {server.token}"}
    await ts.close()


async def test_every_route_needs_the_token_except_the_page(api) -> None:
    app, server, base, http, auth = api
    async with http.get(f"{base}/v1/status") as r:
        assert r.status == 401 and (await r.json())["error"]["code"] == "unauthorized"
    async with http.get(f"{base}/v1/status", headers={"Authorization": "Bearer wrong"}) as r:
        assert r.status == 401
    async with http.get(f"{base}/") as r:  # the static shell: no data, no token
        assert r.status == 200
    async with http.get(f"{base}/v1/status", headers=auth) as r:
        doc = await r.json()
    assert doc["peer_id"] == "ab" * 32 and doc["api"] == {"port": server.port, "socket": ""}


async def test_requests_are_checked_before_the_app_is_asked(api) -> None:
    app, _server, base, http, auth = api
    async with http.post(f"{base}/v1/groups/join", json={"uri": "cobox://join/x", "name": 5}, headers=auth) as r:
        assert r.status == 400
    async with http.post(f"{base}/v1/folders/family/restore", json={"file": "a.txt", "to": ["x"]},
                         headers=auth) as r:
        assert r.status == 400
    async with http.post(f"{base}/v1/groups/family/log", data=b"not json", headers=auth) as r:
        assert r.status == 400 and (await r.json())["error"]["message"] == "the request body is not JSON"
    async with http.post(f"{base}/v1/groups/family/log", json=["text"], headers=auth) as r:
        assert r.status == 400
    assert app.calls == []


async def test_handlers_pass_the_request_to_the_app_and_return_its_answer(api) -> None:
    app, _server, base, http, auth = api
    async with http.post(f"{base}/v1/groups", json={"name": "work"}, headers=auth) as r:
        assert r.status == 201 and (await r.json())["invite"] == "cobox://join/work"
    async with http.post(f"{base}/v1/groups/join", json={"uri": "cobox://join/x", "name": "x"}, headers=auth) as r:
        assert r.status == 201
    async with http.post(f"{base}/v1/groups/work/log", json={"text": "hi"}, headers=auth) as r:
        assert r.status == 201 and (await r.json())["seq"] == 7
    async with http.get(f"{base}/v1/folders/work/history", params={"file": "a/b.txt"}, headers=auth) as r:
        assert (await r.json())[0]["current"] is True
    async with http.post(f"{base}/v1/folders/work/restore", json={"file": "a/b.txt", "version": "3-abcdef01"},
                         headers=auth) as r:
        assert (await r.json()) == {"restored": "a/b.txt", "version": "3-abcdef01"}
    async with http.post(f"{base}/v1/folders/work/restore", json={"file": "a/b.txt", "to": "/tmp/out"},
                         headers=auth) as r:
        assert r.status == 200
    async with http.get(f"{base}/v1/groups/work/invite", params={"seed": "1"}, headers=auth) as r:
        assert (await r.json())["uri"] == "cobox://seed/work"
    async with http.get(f"{base}/metrics", headers=auth) as r:
        assert await r.text() == "cobox_peers 1\n"
    assert app.calls == [("join", "cobox://join/x", "x"), ("append", "work", "hi"),
                         ("history", "work", "a/b.txt"), ("restore", "work", "a/b.txt", "3-abcdef01", None),
                         ("restore", "work", "a/b.txt", None, "/tmp/out")]
    async with http.post(f"{base}/v1/stop", headers=auth) as r:
        assert (await r.json()) == {"stopping": True}
    assert app.stopped


async def test_folder_type_rescan_override_and_revert_routes(api) -> None:
    app, _server, base, http, auth = api
    for body in ({"type": 3}, {"rescan_interval": "often"}, {"rescan_interval": True}, {}):
        async with http.patch(f"{base}/v1/folders/work", json=body, headers=auth) as r:
            assert r.status == 400, body
    async with http.post(f"{base}/v1/folders", json={"group": "w", "path": "/p", "type": ["x"]}, headers=auth) as r:
        assert r.status == 400
    assert app.calls == []
    async with http.post(f"{base}/v1/folders", json={"group": "w", "path": "/p", "type": "send-only",
                                                    "rescan_interval": 60}, headers=auth) as r:
        assert r.status == 201
    async with http.patch(f"{base}/v1/folders/work", json={"type": "receive-only"}, headers=auth) as r:
        assert (await r.json())["type"] == "receive-only"
    for what in ("rescan", "override", "revert"):
        async with http.post(f"{base}/v1/folders/work/{what}", headers=auth) as r:
            assert (await r.json())["done"] is True
    assert app.calls == [("add_folder", "w", "/p", "send-only", 60), ("set_folder", "work", "receive-only", None),
                         ("folder_request", "work", "rescan"), ("folder_request", "work", "override"),
                         ("folder_request", "work", "revert")]


async def test_device_routes(api) -> None:
    app, _server, base, http, auth = api
    async with http.post(f"{base}/v1/device/rename", json={"name": "desk"}, headers=auth) as r:
        assert (await r.json())["name"] == "desk"
    async with http.post(f"{base}/v1/device/rename", json={"name": 3}, headers=auth) as r:
        assert r.status == 400
    async with http.get(f"{base}/v1/device", headers=auth) as r:
        assert (await r.json())["name"] == "fake"
    async with http.get(f"{base}/v1/groups/family/devices", headers=auth) as r:
        assert (await r.json())[0]["name"] == "fake"
    async with http.get(f"{base}/v1/groups/nope/devices", headers=auth) as r:
        assert r.status == 404
    assert app.calls == [("rename", "desk")]


async def test_the_apps_errors_become_their_status_and_code(api) -> None:
    _app, _server, base, http, auth = api
    for method, path in (("GET", "/v1/groups/nope"), ("DELETE", "/v1/groups/nope"), ("GET", "/v1/groups/nope/log"),
                         ("GET", "/v1/groups/nope/invite"), ("GET", "/v1/groups/nope/qr.svg")):
        async with http.request(method, f"{base}{path}", headers=auth) as r:
            assert r.status == 404, path
            assert (await r.json())["error"]["code"] == "group_not_found"


async def test_the_dashboard_asks_the_app_and_its_listener_goes_at_shutdown() -> None:
    app = FakeApp()
    server = ControlServer(app)
    server.mount(Dashboard(app))
    ts = TestServer(server.app, host="127.0.0.1", port=0)
    await ts.start_server()
    server.port = ts.port or 0
    try:
        assert len(app.listeners) == 1  # the sampler's one peer-event listener
        async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
                    http.get(f"http://127.0.0.1:{ts.port}/v1/groups/family/qr.svg",
                             headers={"Authorization": f"Bearer {server.token}"}) as r):
            assert r.status == 200 and b"<svg" in await r.read()
    finally:
        await ts.close()
    assert app.listeners == []


async def test_the_dashboards_document_is_the_status_with_connected_peers_and_members() -> None:
    app = FakeApp()
    server = ControlServer(app)
    dashboard = Dashboard(app)
    server.mount(dashboard)
    await dashboard.refresh()
    doc = dashboard.doc
    assert doc is not None and [e["kind"] for e in doc["events"]] == ["connected"]
    (family,) = doc["groups"]
    assert family["connected"] == ["cd" * 32] and family["members"][0]["this_device"] is True
    assert dashboard.throughput.latest() is not None


async def test_the_dashboard_offers_an_optional_control_only_where_its_route_exists(monkeypatch) -> None:
    from cobox.web import routes

    monkeypatch.setitem(routes.FEATURES, "probe", ("PUT", "/v1/probe"))
    app = FakeApp()
    server = ControlServer(app)
    dashboard = Dashboard(app)
    server.mount(dashboard)
    assert dashboard.features()["pause"] == "/v1/pause"  # the daemon's own routes
    assert dashboard.features()["probe"] is None
    server.app.router.add_get("/v1/probe", server.status)  # only reading: no control
    assert dashboard.features()["probe"] is None
    server.app.router.add_put("/v1/probe", server.status)
    assert dashboard.features()["probe"] == "/v1/probe"
