"""Devices behind NAT routers in network namespaces (:mod:`tests.integration.netns`): a public
daemon that is in no group (DHT bootstrap node and relay), members behind cone-like or
symmetric NATs, double NAT, one public member, two members behind one NAT. Each test joins by
invite, asserts that entries cross both ways and which kind of connection carries them (and,
where it matters, counts the packets one router forwards from the other)."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.integration.daemons import ok
from tests.integration.netns import Topology, unavailable

DHT_PORT = 4900


@pytest.fixture
def topology():
    """The namespaces; tests ask for it before ``daemons``, so the daemons stop first."""
    reason = unavailable()
    if reason:
        pytest.skip(f"network namespaces unavailable: {reason}")
    t = Topology().up()
    try:
        yield t
    finally:
        t.down()


async def texts(home) -> list[str]:
    return sorted(json.loads(x)["text"] for x in (await ok(home, "log", "cat", "g", "--json")).splitlines())


async def public_relay(daemons, t: Topology):
    ns, ip = t.public_host("relay")
    relay = await daemons("relay", ["--no-lan", "--dht-port", str(DHT_PORT)], host=ip, wrap=t.wrap(ns),
                          config=["[relay]", f"listen = 'tcp:{ip}:0'"])
    return relay, ip


async def member(daemons, t: Topology, name: str, router: str | None, relay_ip: str, *, lan: bool = False):
    ns, ip = t.host(name, router) if router else t.public_host(name)
    # the members run with the default configuration (relay use, hole punching, swarm timing);
    # LAN discovery off unless asked for, so that what crosses NATs is what is tested
    d = await daemons(name, ([] if lan else ["--no-lan"]) + ["--bootstrap", f"{relay_ip}:{DHT_PORT}"], host=ip,
                      wrap=t.wrap(ns))
    return d, ip


async def both_ways(a, b) -> None:
    uri = (await ok(a.home, "group", "create", "g")).strip()
    await ok(a.home, "log", "append", "g", "from a")
    await ok(b.home, "group", "join", uri)
    await ok(b.home, "log", "append", "g", "from b")
    for d in (a, b):
        await ok(d.home, "sync", "wait", "g", "--timeout", "40")
    async with asyncio.timeout(20):
        while await texts(a.home) != ["from a", "from b"] or await texts(b.home) != ["from a", "from b"]:
            await asyncio.sleep(0.2)


async def kinds(d) -> list[str]:
    return [p["kind"] for p in json.loads(await ok(d.home, "peers", "--json"))]


async def test_two_symmetric_nats_sync_through_a_public_relay(topology, daemons):
    t = topology
    relay, relay_ip = await public_relay(daemons, t)
    t.nat("ra", 1, symmetric=True)
    t.nat("rb", 2, symmetric=True)
    a, _ = await member(daemons, t, "a", "ra", relay_ip)
    b, _ = await member(daemons, t, "b", "rb", relay_ip)
    t.count_from("ra", t.routers["rb"].wan_ip)
    async with asyncio.timeout(55):
        await both_ways(a, b)
    relay_key = json.loads(await ok(relay.home, "status", "--json"))["peer_key"]
    for d in (a, b):
        assert await kinds(d) == [f"relayed via {relay_key[:12]}"]
    assert t.packets_from("ra", t.routers["rb"].wan_ip) == 0  # nothing came straight from B's router
    offering = json.loads(await ok(relay.home, "status", "--json"))["relay"]["offering"]
    assert offering["circuits_total"] >= 1 and offering["bytes_forwarded"] > 0
    assert json.loads(await ok(relay.home, "status", "--json"))["groups"] == []  # the relay is in no group


async def test_one_public_member_and_one_behind_nat_end_direct(topology, daemons):
    t = topology
    _, relay_ip = await public_relay(daemons, t)
    t.nat("ra", 1)
    a, _ = await member(daemons, t, "a", "ra", relay_ip)
    b, b_ip = await member(daemons, t, "b", None, relay_ip)
    t.count_from("ra", b_ip)
    direct = (["direct internet"], ["hole-punched"])  # A dials B's address, or punches if it does not know it yet
    async with asyncio.timeout(55):
        await both_ways(a, b)
        while await kinds(a) not in direct or await kinds(b) not in direct:
            await asyncio.sleep(0.2)
    assert t.packets_from("ra", b_ip) > 0  # B's packets come straight from B, not through the relay


async def test_two_cone_nats_meet_through_the_relay_and_end_hole_punched(topology, daemons):
    t = topology
    _, relay_ip = await public_relay(daemons, t)
    t.nat("ra", 1)
    t.nat("rb", 2)
    a, _ = await member(daemons, t, "a", "ra", relay_ip)
    b, _ = await member(daemons, t, "b", "rb", relay_ip)
    t.count_from("ra", t.routers["rb"].wan_ip)
    async with asyncio.timeout(55):
        await both_ways(a, b)
        while await kinds(a) != ["hole-punched"] or await kinds(b) != ["hole-punched"]:
            await asyncio.sleep(0.2)
    assert t.packets_from("ra", t.routers["rb"].wan_ip) > 0  # B's router sends straight to A's now
    await ok(a.home, "log", "append", "g", "after the punch")
    async with asyncio.timeout(20):
        while "after the punch" not in await texts(b.home):
            await asyncio.sleep(0.2)


async def test_double_nat_against_a_cone_nat_ends_hole_punched(topology, daemons):
    t = topology
    _, relay_ip = await public_relay(daemons, t)
    t.nat("outer", 1)
    t.nat("ra", 3, behind="outer")  # A is behind two port-preserving NATs
    t.nat("rb", 2)
    a, _ = await member(daemons, t, "a", "ra", relay_ip)
    b, _ = await member(daemons, t, "b", "rb", relay_ip)
    t.count_from("outer", t.routers["rb"].wan_ip)
    async with asyncio.timeout(55):
        await both_ways(a, b)
        while await kinds(a) != ["hole-punched"] or await kinds(b) != ["hole-punched"]:
            await asyncio.sleep(0.2)
    assert t.packets_from("outer", t.routers["rb"].wan_ip) > 0


async def test_two_devices_behind_one_nat_connect_on_their_lan(topology, daemons):
    t = topology
    _, relay_ip = await public_relay(daemons, t)
    t.nat("r", 1)
    # Private addresses are never announced to the DHT: devices of one network find each other on it
    # (mDNS), as at home; the DHT and the relay stay for everyone else.
    a, _ = await member(daemons, t, "a", "r", relay_ip, lan=True)
    b, _ = await member(daemons, t, "b", "r", relay_ip, lan=True)
    async with asyncio.timeout(55):
        await both_ways(a, b)
        while await kinds(a) != ["direct LAN"] or await kinds(b) != ["direct LAN"]:
            await asyncio.sleep(0.2)


async def test_two_devices_behind_one_nat_without_lan_discovery_meet_through_the_relay_and_go_direct(
        topology, daemons):
    """With mDNS off (or blocked, as on many office networks) the two meet at the relay; the punch
    exchange shows one NAT (the same public IP), so the punching end dials the other's private
    address (a host candidate) instead of a hairpin the router does not do."""
    t = topology
    _, relay_ip = await public_relay(daemons, t)
    t.nat("r", 1)
    a, _ = await member(daemons, t, "a", "r", relay_ip)
    b, _ = await member(daemons, t, "b", "r", relay_ip)
    async with asyncio.timeout(55):
        await both_ways(a, b)
        while await kinds(a) != ["direct LAN"] or await kinds(b) != ["direct LAN"]:
            await asyncio.sleep(0.2)
    await ok(b.home, "log", "append", "g", "on the lan")
    async with asyncio.timeout(20):
        while "on the lan" not in await texts(a.home):
            await asyncio.sleep(0.2)
