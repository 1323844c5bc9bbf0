"""Pauses and bandwidth limits on the cobox side: the saved files (strict, 0600), the checks of
changes, :class:`~cobox.controls.Controls` against a fake node and swarm, a real folder that does
no round while paused, and the API routes (requests checked before the App is asked)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from cobox import bandwidth, config, pauses, status
from cobox.bandwidth import Bandwidth, DeviceKbps
from cobox.control.server import ControlServer
from cobox.controls import Controls
from cobox.errors import ConfigError, GroupNotFoundError, UsageError
from cobox.folders.sync import FolderSync
from cobox.groups import Group
from cobox.netview import PeerInfo
from cobox.pauses import Pauses
from networker import RateLimits, encode_key
from networker.identity import DeviceIdentity
from networker.keys import GroupKeys
from networker.ratelimit import RateLimiter
from storage import Store
from tests.cobox.test_control import FakeApp
from tests.helpers import until

A, B = bytes([0xA1]) * 32, bytes([0xB2]) * 32


# -- the pauses file ------------------------------------------------------------------------------

def test_pauses_round_trip_through_a_0600_file(tmp_path: Path) -> None:
    p = Pauses().changed("group", "g", True).changed("folder", "g", True).changed("device", A, True)
    pauses.save(tmp_path, p)
    assert stat.S_IMODE((tmp_path / pauses.FILE_NAME).stat().st_mode) == 0o600
    assert pauses.load(tmp_path) == p
    assert p.changed("device", A, False).devices == frozenset()
    assert p.without_group("g") == Pauses(devices=frozenset({A}))  # its folder's pause goes with it
    assert pauses.load(tmp_path / "nothing-here") == Pauses()


@pytest.mark.parametrize("text", [b"[]", b"{\"groups\": \"g\"}", b"{\"devices\": [{\"peer_id\": \"zz\"}]}",
                                  b"{\"devices\": [{\"peer_id\": \"" + b"x" * 64 + b"\"}]}", b"{\"other\": []}",
                                  b"\xff", b"{\"groups\": [1]}"])
def test_a_broken_pauses_file_is_a_config_error_naming_it(tmp_path: Path, text: bytes) -> None:
    (tmp_path / pauses.FILE_NAME).write_bytes(text)
    with pytest.raises(ConfigError, match=r"pauses\.json"):
        pauses.load(tmp_path)


def test_a_device_is_named_by_its_peer_key_or_id() -> None:
    assert pauses.device_id(encode_key(A)) == A == pauses.device_id(A.hex())
    for bad in ("", "abc", "g" * 64, encode_key(A)[:-2], 5):
        with pytest.raises(UsageError):
            pauses.device_id(bad)  # type: ignore[arg-type]


# -- limits -----------------------------------------------------------------------------------

def test_limits_become_rates_in_bytes_per_second() -> None:
    bw = Bandwidth(512, 2048, True, (DeviceKbps(A, 64, 0), DeviceKbps(B, 0, 0)))
    rates = bw.rates()
    assert (rates.send, rates.recv, rates.limit_lan) == (512 * 1024, 2048 * 1024, True)
    assert [(d.peer_id, d.send, d.recv) for d in rates.devices] == [(A, 64 * 1024, 0)]  # B: nothing of its own


def test_a_change_applies_only_its_fields_and_is_checked() -> None:
    bw = Bandwidth(100, 200).updated({"max_send_kbps": 300, "devices": {encode_key(A): {"recv_kbps": 7}}})
    assert (bw.send_kbps, bw.recv_kbps, bw.runtime) == (300, 200, True)
    assert bw.devices == (DeviceKbps(A, 0, 7),)
    assert bw.updated({"devices": {A.hex(): {"send_kbps": 1}}}).devices == (DeviceKbps(A, 1, 7),)
    assert bw.updated({"devices": {A.hex(): None}}).devices == ()
    for bad in ({"max_send_kbps": -1}, {"max_send_kbps": 1.5}, {"max_send_kbps": True}, {"limit_lan": 1},
                {"max_recv_kbps": bandwidth.MAX_KBPS + 1}, {"speed": 1}, {"devices": []},
                {"devices": {"nobody": {"send_kbps": 1}}}, {"devices": {A.hex(): {"up": 1}}}):
        with pytest.raises(UsageError):
            bw.updated(bad)
    saved = bw.as_json()
    assert Bandwidth().updated({k: v for k, v in saved.items() if k != "source"}) == bw


def test_config_device_limits_are_parsed_and_bad_ones_refused(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        f'[network]\nmax_send_kbps = 100\nlimit_lan = true\ndevice_limits = ["{encode_key(A)}:64:32"]\n')
    net = config.load(tmp_path, env={}).network
    assert bandwidth.from_settings(net) == Bandwidth(100, 0, True, (DeviceKbps(A, 64, 32),))
    for entry in (f"{encode_key(A)}:64", "nobody:1:1", f"{A.hex()}:-1:0", f"{A.hex()}:x:0"):
        (tmp_path / "config.toml").write_text(f'[network]\ndevice_limits = ["{entry}"]\n')
        with pytest.raises(ConfigError, match="device_limits"):
            config.load(tmp_path, env={})
    (tmp_path / "config.toml").write_text(f'[network]\ndevice_limits = ["{A.hex()}:1:1", "{encode_key(A)}:2:2"]\n')
    with pytest.raises(ConfigError, match="twice"):
        config.load(tmp_path, env={})


# -- Controls -----------------------------------------------------------------------------------

class FakeNode:
    def __init__(self) -> None:
        self.peer_id = B
        self.calls: list[tuple[str, bytes]] = []
        self.rates = RateLimiter()

    def pause_group(self, dk: bytes) -> None:
        self.calls.append(("pause_group", dk))

    def resume_group(self, dk: bytes) -> None:
        self.calls.append(("resume_group", dk))

    def pause_peer(self, pid: bytes) -> None:
        self.calls.append(("pause_peer", pid))

    def resume_peer(self, pid: bytes) -> None:
        self.calls.append(("resume_peer", pid))


class FakeSwarm:
    def __init__(self) -> None:
        self.topics: set[bytes] = {b"dk-g"}

    def join(self, topic: bytes) -> None:
        self.topics.add(topic)

    async def leave(self, topic: bytes) -> None:
        self.topics.discard(topic)


class FakeGroup:
    name = "g"
    discovery_key = b"dk-g"


def controls(home: Path, node: FakeNode, swarm: FakeSwarm, folders: dict[str, Any] | None = None) -> Controls:
    c = Controls(home, node, Bandwidth(10), lambda: {"g": FakeGroup()}, lambda: folders or {}, lambda: swarm)
    c.load()
    return c


async def test_pausing_a_group_closes_it_at_the_node_and_leaves_its_topic(tmp_path: Path) -> None:
    node, swarm = FakeNode(), FakeSwarm()
    c = controls(tmp_path, node, swarm)
    assert (await c.pause("group", "g"))["groups"] == ["g"]
    assert node.calls == [("pause_group", b"dk-g")] and swarm.topics == set()
    await c.pause("group", "g")  # already paused: nothing more happens
    assert node.calls == [("pause_group", b"dk-g")]
    assert (await c.pause("group", "g", False))["groups"] == []
    assert node.calls[-1] == ("resume_group", b"dk-g") and swarm.topics == {b"dk-g"}
    with pytest.raises(GroupNotFoundError):
        await c.pause("group", "nope")
    with pytest.raises(GroupNotFoundError):
        await c.pause("folder", "g")  # g has no folder
    with pytest.raises(UsageError):
        await c.pause("device", encode_key(B))  # this device itself
    with pytest.raises(UsageError):
        await c.pause("planet", "g")  # type: ignore[arg-type]


async def test_the_pause_of_a_folder_removed_meanwhile_can_still_be_resumed(tmp_path: Path) -> None:
    class Folder:
        woken = 0

        def wake(self) -> None:
            self.woken += 1

    folders: dict[str, Any] = {"g": Folder()}
    c = Controls(tmp_path, FakeNode(), Bandwidth(), lambda: {}, lambda: folders, FakeSwarm)
    assert (await c.pause("folder", "g"))["folders"] == ["g"]
    folders.clear()  # cobox folder remove g
    with pytest.raises(GroupNotFoundError):
        await c.pause("folder", "g")  # pausing needs the folder
    assert (await c.pause("folder", "g", False))["folders"] == []  # resuming only forgets it
    with pytest.raises(GroupNotFoundError):
        await c.pause("folder", "g", False)  # not paused any more, not there


async def test_pauses_and_runtime_limits_are_applied_again_after_a_restart(tmp_path: Path) -> None:
    node, swarm = FakeNode(), FakeSwarm()
    c = controls(tmp_path, node, swarm)
    assert node.rates.limits == RateLimits(send=10 * 1024)  # the configured limits
    await c.pause("device", encode_key(A))
    await c.pause("group", "g")
    c.set_limits({"max_recv_kbps": 20, "limit_lan": True})
    assert node.rates.limits == RateLimits(send=10 * 1024, recv=20 * 1024, limit_lan=True)

    node2 = FakeNode()
    c2 = controls(tmp_path, node2, FakeSwarm())  # a restart
    assert node2.calls == [("pause_peer", A)]  # groups: when the daemon activates them (on_group)
    assert c2.group_paused("g") and node2.rates.limits == node.rates.limits
    c2.on_group(FakeGroup())
    assert node2.calls[-1] == ("pause_group", b"dk-g")
    assert c2.document()["limits"]["source"] == "runtime"
    assert c2.set_limits({"reset": True})["source"] == "config"
    assert node2.rates.limits == RateLimits(send=10 * 1024)
    with pytest.raises(UsageError):
        c2.set_limits({"reset": True, "max_send_kbps": 1})
    c2.forget_group("g")
    assert not controls(tmp_path, FakeNode(), FakeSwarm()).group_paused("g")


async def test_a_paused_folder_does_no_round_until_resumed(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "home")
    sync = None
    try:
        group = Group(store, "g", GroupKeys.from_address(os.urandom(32)), DeviceIdentity.generate(), 0.0)
        await group.load()
        (tmp_path / "folder").mkdir()
        sync = FolderSync(group, tmp_path / "folder")
        c = controls(tmp_path, FakeNode(), FakeSwarm(), {"g": sync})
        c.on_folder(sync, "g")
        await sync.start()
        await until(lambda: sync.rounds >= 1, what="the first round")
        await c.pause("folder", "g")
        assert sync.status()["paused"] is True
        rounds = sync.rounds
        (tmp_path / "folder" / "new.txt").write_text("made while paused")
        sync.wake()
        await until(lambda: not sync._wake.is_set(), what="the folder task to take the wake-up")
        assert sync.rounds == rounds and "new.txt" not in sync.state.files
        await c.pause("folder", "g", False)  # resuming wakes it
        await until(lambda: "new.txt" in sync.state.files, what="the file recorded after resuming")
        assert sync.status()["paused"] is False
    finally:
        if sync is not None:
            await sync.stop()
        await store.close()


# -- the API routes -----------------------------------------------------------------------------

async def test_pause_and_limits_routes_check_the_request_before_asking_the_app() -> None:
    app = FakeApp()
    server = ControlServer(app)
    ts = TestServer(server.app, host="127.0.0.1", port=0)
    await ts.start_server()
    base, auth = f"http://127.0.0.1:{ts.port}", {"Authorization": f"Bearer {server.token}"}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            for body in ({}, {"group": "g", "device": "x"}, {"group": 5}, {"planet": "g"}, {"group": "g", "x": 1}):
                async with http.post(f"{base}/v1/pause", json=body, headers=auth) as r:
                    assert r.status == 400, body
            async with http.post(f"{base}/v1/resume", data=b"[", headers=auth) as r:
                assert r.status == 400
            assert app.calls == []
            async with http.post(f"{base}/v1/pause", json={"group": "g"}, headers=auth) as r:
                assert (await r.json())["groups"] == ["g"]
            async with http.post(f"{base}/v1/resume", json={"device": "KEY"}, headers=auth) as r:
                assert r.status == 200
            async with http.put(f"{base}/v1/limits", json={"max_send_kbps": 5}, headers=auth) as r:
                assert (await r.json())["max_send_kbps"] == 5
            async with http.get(f"{base}/v1/limits", headers=auth) as r:
                assert (await r.json())["source"] == "config"
            async with http.get(f"{base}/v1/pauses", headers=auth) as r:
                assert await r.json() == {"groups": [], "folders": [], "devices": []}
            async with http.get(f"{base}/v1/limits") as r:
                assert r.status == 401
            async with http.get(f"{base}/openapi.json", headers=auth) as r:
                paths = (await r.json())["paths"]
            assert {"/v1/pause", "/v1/resume", "/v1/pauses", "/v1/limits"} <= set(paths)
            assert "put" in paths["/v1/limits"]
    finally:
        await ts.close()
    assert app.calls == [("pause", "group", "g"), ("resume", "device", "KEY"), ("limits", {"max_send_kbps": 5})]


def test_peers_list_paused_devices_that_are_not_connected() -> None:
    connected = PeerInfo(A, "tcp:127.0.0.1:1", True, ("g",), 1, 2, "direct LAN")
    docs = status.peer_documents([connected], [A, B])  # A is paused but still closing: shown once
    assert [(d["peer_id"], d["kind"], d["paused"], d["connected"]) for d in docs] == \
        [(A.hex(), "direct LAN", False, True), (B.hex(), "paused", True, False)]
    doc = status.status_document(
        peer_id=A, peer_key="k", home="h", pid=1, uptime=0, listening=[], advertised=[], dht={}, lan_enabled=False,
        groups=[], folders=[], peers=[], traffic=(0, 0), reachability={}, services=[],
        controls={"paused": Pauses(devices=frozenset({B})).as_json(), "limits": Bandwidth(5).as_json()})
    assert doc["peers"][0]["peer_id"] == B.hex() and doc["limits"]["max_send_kbps"] == 5
    assert doc["paused"]["devices"][0]["peer_key"] == encode_key(B)
