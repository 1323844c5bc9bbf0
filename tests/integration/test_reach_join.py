"""Zero-config join (issue 14 item 7): daemons with no bootstrap configured find each other
through the hints an invite carries; DHT contacts survive a restart; a device that can reach
nobody says so, with what to do; a broken invite gets a clear error."""

from __future__ import annotations

import json
import stat
import urllib.parse

from cobox.uri import parse_invite
from tests.integration.daemons import cli, ok

ALONE = ["--no-lan"]  # the DHT runs, with no bootstrap node


async def texts(home) -> list[str]:
    return [json.loads(x)["text"] for x in (await ok(home, "log", "cat", "g", "--json")).splitlines()]


async def test_a_device_with_nothing_configured_joins_through_the_invite(daemons):
    a = await daemons("a", ALONE)
    b = await daemons("b", ALONE)
    status = await b.status()
    assert status["reachability"]["kind"] == "offline"  # no peer, no DHT contact
    assert "invite" in status["reachability"]["words"]
    uri = (await ok(a.home, "group", "create", "g")).strip()
    invite = parse_invite(uri)
    assert invite.peers and invite.dht  # a's address and its own DHT node
    await ok(a.home, "log", "append", "g", "one")
    await ok(b.home, "group", "join", uri)
    await ok(b.home, "sync", "wait", "g", "--timeout", "60")
    assert await texts(b.home) == ["one"]
    assert (await b.status())["reachability"]["kind"] != "offline"

    # C gets an invite with only the DHT hint: it finds A through the DHT, not a peer address.
    c = await daemons("c", ALONE)
    parts = urllib.parse.urlsplit(uri)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "peer"]
    dht_only = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
    assert not parse_invite(dht_only).peers
    await ok(c.home, "group", "join", dht_only)
    await ok(c.home, "sync", "wait", "g", "--timeout", "60")
    assert await texts(c.home) == ["one"]

    # B's DHT contacts are kept across a restart, in a file only this user can read.
    await b.stop()
    state = b.home / "dht.json"
    assert state.exists() and stat.S_IMODE(state.stat().st_mode) == 0o600
    assert json.loads(state.read_text())["contacts"]
    b = await daemons("b", ALONE)
    assert (await b.status())["dht"]["contacts"] >= 1


async def test_a_device_whose_bootstrap_node_does_not_answer_says_so_in_status(daemons):
    a = await daemons("a", [*ALONE, "--bootstrap", "127.0.0.1:9"])  # the discard port: nobody answers there
    text = await ok(a.home, "status")
    line = next(x for x in text.splitlines() if x.startswith("reachable"))
    assert "Cannot reach anybody" in line and "127.0.0.1:9" in line and "invite" in line


async def test_a_broken_invite_gets_a_clear_error(daemons):
    a = await daemons("a", ALONE)
    uri = (await ok(a.home, "group", "create", "g")).strip()
    for broken, says in ((uri + "&peer=tcp:1.2.3.4:5", "peer hint"), (uri[:40], "malformed or truncated"),
                         (uri + "&dht=nowhere", "DHT hint")):
        rc, out, err = await cli(a.home, "group", "join", broken, "--name", "h")
        assert rc != 0 and says in (out + err), (broken, out, err)
