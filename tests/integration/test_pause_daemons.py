"""Pause and resume across real daemons: a paused group lets no new entry cross, also after a
restart; resuming brings everything; a paused device is not connected; limits set at runtime
survive a restart. C is a witness: what A writes reaches C, so it would have reached B."""

from __future__ import annotations

import json

from tests.integration.daemons import cli, ok
from tests.integration.test_cli import log_becomes, log_texts


async def carries(home, peer_id: str, group: str) -> bool:
    peers = json.loads(await ok(home, "peers", "--json"))
    return any(p["peer_id"] == peer_id and group in p["groups"] for p in peers)


async def test_a_paused_group_stops_new_entries_and_stays_paused_across_a_restart(daemons):
    a, b, c = await daemons("a"), await daemons("b"), await daemons("c")
    uri = (await ok(a.home, "group", "create", "g")).strip()
    for d in (b, c):
        await ok(d.home, "group", "join", uri)
        await ok(d.home, "peers", "add", await a.address())
    await ok(a.home, "log", "append", "g", "one")
    await ok(b.home, "sync", "wait", "g", "--timeout", "20")
    assert await log_becomes(b.home, ["one"]) == ["one"]  # before the pause
    a_id, b_id = (await a.status())["peer_id"], (await b.status())["peer_id"]

    assert "paused group g" in await ok(b.home, "pause", "g")
    assert (await ok(b.home, "pause")).strip() == "group   g"
    status = await b.status()
    assert status["paused"]["groups"] == ["g"] and status["groups"][0]["paused"] is True
    assert not await carries(b.home, a_id, "g") and not await carries(a.home, b_id, "g")
    await ok(a.home, "log", "append", "g", "two")
    await ok(c.home, "sync", "wait", "g", "--timeout", "20")
    assert await log_becomes(c.home, ["one", "two"]) == ["one", "two"]
    assert await log_texts(b.home) == ["one"]

    # B restarts: still paused; the connection comes back, the group's channel does not.
    await b.stop()
    b = await daemons("b")
    assert (await b.status())["paused"]["groups"] == ["g"]
    await ok(b.home, "peers", "add", await a.address())
    await ok(a.home, "log", "append", "g", "three")
    await ok(c.home, "sync", "wait", "g", "--timeout", "20")
    assert await log_becomes(c.home, ["one", "two", "three"]) == ["one", "two", "three"]
    assert not await carries(b.home, a_id, "g")
    assert await log_texts(b.home) == ["one"]

    assert "resumed group g" in await ok(b.home, "resume", "g")
    # the connection kept for g alone went idle: with discovery off B dials again (with
    # discovery, the swarm rejoining g's topic does)
    await ok(b.home, "peers", "add", await a.address())
    await ok(b.home, "sync", "wait", "g", "--timeout", "20")
    assert await log_texts(b.home) == ["one", "two", "three"]
    assert (await b.status())["paused"]["groups"] == []


async def test_a_paused_device_is_not_connected_and_limits_survive_a_restart(daemons):
    a, b = await daemons("a"), await daemons("b")
    uri = (await ok(a.home, "group", "create", "g")).strip()
    await ok(b.home, "group", "join", uri)
    a_status = await a.status()
    await ok(b.home, "pause", "--device", a_status["peer_key"])
    rc, _, err = await cli(b.home, "peers", "add", await a.address())
    assert rc == 1 and "paused" in err, err
    peers = json.loads(await ok(b.home, "peers", "--json"))
    assert [(p["peer_id"], p["kind"], p["connected"]) for p in peers] == [(a_status["peer_id"], "paused", False)]

    out = await ok(b.home, "limits", "--send", "512", "--recv", "2048", "--lan")
    assert "send     512 KiB/s" in out and "receive  2.0 MiB/s" in out and "limited too" in out
    await ok(b.home, "limits", "--device", a_status["peer_key"], "--send", "64")
    await b.stop()
    b = await daemons("b")
    limits = json.loads(await ok(b.home, "limits", "--json"))
    assert (limits["max_send_kbps"], limits["max_recv_kbps"], limits["limit_lan"], limits["source"]) == \
        (512, 2048, True, "runtime")
    assert limits["devices"][a_status["peer_id"]]["send_kbps"] == 64
    assert (await b.status())["paused"]["devices"][0]["peer_id"] == a_status["peer_id"]

    await ok(b.home, "resume", "--device", a_status["peer_id"])
    await ok(b.home, "peers", "add", await a.address())
    await ok(a.home, "log", "append", "g", "hello")
    await ok(b.home, "sync", "wait", "g", "--timeout", "20")
    assert await log_becomes(b.home, ["hello"]) == ["hello"]
    assert json.loads(await ok(b.home, "limits", "--reset", "--json"))["source"] == "config"
