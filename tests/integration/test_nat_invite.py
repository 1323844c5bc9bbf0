"""Issue 14's "Done when": two devices behind two different cone-like NATs, with only a public
daemon that is in no group, sync by the invite alone.

The joiner B is started with nothing: no bootstrap node, no relay, no LAN discovery. Everything
it needs comes from the invite A gives it: ``dht=`` names the public daemon (A's DHT contact),
``peer=`` would name A's own addresses if A had any reachable ones (behind its NAT it has none).
From the DHT B finds the public daemon's relay and A's relayed address; the pair meets through
the relay and then punches a direct connection. The inviter A is a device that already knows one
DHT node (a device behind NAT that knows nobody cannot find anybody); it has no relay configured
either: the public daemon's relay it finds in the DHT too. The test asserts entries cross both
ways, the final connection kind on both ends ("hole-punched") and, at A's router, packets that
come straight from B's router.

The second test takes the DHT away from B (its router lets no UDP out): the invite's relayed
``peer=`` hint (A through the public daemon's relay) is then all B has; B dials A through it, takes
a reservation with that relay itself, and the pair still ends hole-punched.

The third test plays a device with a public address behind a firewall: its address says
"reachable", so with ``[relay] enabled/use = "auto"`` it starts offering a relay and using none;
once two peers (at two IPs) could not dial it back it stops offering and takes a reservation with
the public daemon's relay.
"""

from __future__ import annotations

import asyncio
import json

from cobox.uri import parse_invite
from networker import parse_address as parse
from tests.integration.daemons import ok
from tests.integration.netns import Topology
from tests.integration.test_nat import DHT_PORT, kinds, public_relay, texts, topology  # noqa: F401


async def test_two_cone_nats_sync_by_the_invite_alone_and_end_hole_punched(topology, daemons):  # noqa: F811
    t: Topology = topology
    _, relay_ip = await public_relay(daemons, t)
    t.nat("ra", 1)
    t.nat("rb", 2)
    ns_a, ip_a = t.host("a", "ra")
    ns_b, ip_b = t.host("b", "rb")
    a = await daemons("a", ["--no-lan", "--bootstrap", f"{relay_ip}:{DHT_PORT}"], host=ip_a, wrap=t.wrap(ns_a))
    b = await daemons("b", ["--no-lan"], host=ip_b, wrap=t.wrap(ns_b))  # nothing configured at all
    t.count_from("ra", t.routers["rb"].wan_ip)
    assert (await b.status())["reachability"]["kind"] == "offline"  # B knows nobody before the invite
    async with asyncio.timeout(55):
        uri = (await ok(a.home, "group", "create", "g")).strip()
        invite = parse_invite(uri)
        assert (relay_ip, DHT_PORT) in invite.dht  # the public daemon travels in the invite
        assert not any(f"tcp:{ip_a}:" in p for p in invite.peers)  # never A's private address
        await ok(a.home, "log", "append", "g", "from a")
        await ok(b.home, "group", "join", uri)
        await ok(b.home, "log", "append", "g", "from b")
        while await texts(a.home) != ["from a", "from b"] or await texts(b.home) != ["from a", "from b"]:
            await asyncio.sleep(0.2)
        while await kinds(a) != ["hole-punched"] or await kinds(b) != ["hole-punched"]:
            await asyncio.sleep(0.2)
        assert t.packets_from("ra", t.routers["rb"].wan_ip) > 0  # B's router sends straight to A's
        await ok(b.home, "log", "append", "g", "after the punch")
        while "after the punch" not in await texts(a.home):
            await asyncio.sleep(0.2)
    assert (await b.status())["reachability"]["kind"] != "offline"


async def test_a_joiner_without_udp_meets_the_inviter_at_the_relay_its_invite_names(topology, daemons):  # noqa: F811
    t: Topology = topology
    _, relay_ip = await public_relay(daemons, t)
    t.nat("ra", 1)
    t.nat("rb", 2)
    t.block_udp("rb")  # B's network lets no UDP out: the invite's dht= hint is of no use to B
    ns_a, ip_a = t.host("a", "ra")
    ns_b, ip_b = t.host("b", "rb")
    a = await daemons("a", ["--no-lan", "--bootstrap", f"{relay_ip}:{DHT_PORT}"], host=ip_a, wrap=t.wrap(ns_a))
    b = await daemons("b", ["--no-lan"], host=ip_b, wrap=t.wrap(ns_b))
    t.count_from("ra", t.routers["rb"].wan_ip)
    async with asyncio.timeout(55):
        while not json.loads(await ok(a.home, "status", "--json"))["relay"]["reservations"]:
            await asyncio.sleep(0.2)  # A holds a reservation: its invite can name the relay
        uri = (await ok(a.home, "group", "create", "g")).strip()
        relayed = [p for p in parse_invite(uri).peers if "~relay:" in p]
        assert relayed and relayed[0].startswith(f"tcp:{relay_ip}:")
        await ok(a.home, "log", "append", "g", "from a")
        await ok(b.home, "group", "join", uri)
        await ok(b.home, "log", "append", "g", "from b")
        while await texts(a.home) != ["from a", "from b"] or await texts(b.home) != ["from a", "from b"]:
            await asyncio.sleep(0.2)
        # B learned the relay from the invite and holds a reservation there too
        while [r["relay"] for r in json.loads(await ok(b.home, "status", "--json"))["relay"]["reservations"]] \
                != [parse(relayed[0]).alternatives[0].relay_hop().format()]:
            await asyncio.sleep(0.2)
        while await kinds(a) != ["hole-punched"] or await kinds(b) != ["hole-punched"]:
            await asyncio.sleep(0.2)
        assert t.packets_from("ra", t.routers["rb"].wan_ip) > 0
    assert json.loads(await ok(b.home, "status", "--json"))["dht"]["contacts"] == 0  # B never had a DHT contact


async def test_a_public_address_behind_a_firewall_stops_offering_a_relay_and_uses_one(topology, daemons):  # noqa: F811
    t: Topology = topology
    _, relay_ip = await public_relay(daemons, t)
    boot = ["--no-lan", "--bootstrap", f"{relay_ip}:{DHT_PORT}"]
    started = []
    for name in ("a", "b", "f"):
        ns, ip = t.public_host(name)
        if name == "f":
            t.firewall(ns)  # F's address is public, but nothing from outside gets in
        started.append(await daemons(name, boot, host=ip, wrap=t.wrap(ns)))
    a, b, f = started
    assert json.loads(await ok(f.home, "status", "--json"))["relay"]["offering"] is not None  # its address says so
    uri = (await ok(a.home, "group", "create", "g")).strip()
    await ok(b.home, "group", "join", uri)
    await ok(f.home, "group", "join", uri)  # F dials out to A and B; their dial-backs to F fail
    async with asyncio.timeout(55):
        while True:
            relay_doc = json.loads(await ok(f.home, "status", "--json"))["relay"]
            if relay_doc["offering"] is None and relay_doc["reservations"]:
                break
            await asyncio.sleep(0.2)
    assert all(r["relay"].startswith(f"tcp:{relay_ip}:") for r in relay_doc["reservations"])
    assert json.loads(await ok(f.home, "status", "--json"))["reachability"]["confirmed"] == []
