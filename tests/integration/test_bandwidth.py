"""Bandwidth limits measured on loopback: a limited transfer goes at its limit (within 10%),
replication obeys a device's own limit, and a relay's circuits obey the relay device's limits.

The one place tests assert a rate (issue 19 asks for it): each transfer is about three seconds
of the limit, and the rate is bytes / elapsed, measured where the bytes arrive."""

from __future__ import annotations

import asyncio
import os

from networker import transport
from networker.address import Address, parse
from networker.group import OpenGroup
from networker.identity import DeviceIdentity
from networker.keys import GroupKeys
from networker.node import Node
from networker.ratelimit import DeviceLimit, RateLimiter, RateLimits
from networker.relay import RelayClient, RelayServer
from storage import Store
from tests.helpers import until

RATE = 256 * 1024  # bytes per second
SECONDS = 3


async def test_a_send_limit_holds_a_transfer_within_ten_percent_of_it() -> None:
    server, client = DeviceIdentity.generate(), DeviceIdentity.generate()
    total = RATE * SECONDS
    got = asyncio.get_running_loop().create_future()
    received = 0

    async def on_connection(conn: transport.SecureConnection) -> None:
        nonlocal received
        loop = asyncio.get_running_loop()
        while received < total:
            received += len(await conn.recv())
        got.set_result((loop.time(), conn.bytes_received))
        conn.close()

    listener = await transport.listen(Address("tcp", host="127.0.0.1", port=0), server, on_connection)
    try:
        async with asyncio.timeout(SECONDS * 4):
            conn = await transport.dial(parse(listener.addresses[0]), client)
            conn.lane = RateLimiter(RateLimits(send=RATE, limit_lan=True)).lane(server.peer_id, lan=True)
            start = asyncio.get_running_loop().time()
            chunk = os.urandom(16 * 1024)
            for _ in range(total // len(chunk)):
                await conn.send(chunk)
            end, wire_bytes = await got
        conn.close()
    finally:
        listener.close()
        await listener.wait_closed()
    rate = wire_bytes / (end - start)
    assert 0.9 * RATE <= rate <= 1.1 * RATE, f"{rate / 1024:.0f} KiB/s for a limit of {RATE / 1024:.0f}"


async def test_lan_connections_are_not_limited_by_default(tmp_path) -> None:
    stores = [await Store.open(tmp_path / n) for n in "ab"]
    a, b = (Node(DeviceIdentity.generate(), s) for s in stores)
    try:
        (addr,) = await a.listen("tcp:127.0.0.1:0")
        b.rates.configure(RateLimits(send=RATE, recv=RATE), 0.0)  # no limit_lan: loopback is the LAN
        peer = await b.connect(addr)
        lane = peer.conn.lane
        assert lane is not None and lane.lan and lane.peer_id == a.peer_id
        assert lane.sending(10 * RATE, 0.0) == 0.0 and b.rates.send.tokens == b.rates.send.burst
        b.rates.configure(RateLimits(send=RATE, recv=RATE, limit_lan=True), 0.0)
        assert lane.sending(RATE, 0.0) > 0  # a runtime change reaches the open connection
    finally:
        for n in (a, b):
            await n.close()
        for s in stores:
            await s.close()


async def replicate(a: Node, b: Node, stores: list[Store], groups: list[OpenGroup], dial: str) -> float:
    """Append about SECONDS of RATE to A's feed, let B fetch it over ``dial``; the seconds it took."""
    feed = await groups[0].create_feed()
    entries = [os.urandom(8 * 1024) for _ in range(RATE * SECONDS // (8 * 1024))]
    await feed.append(entries)
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(10):
        await b.connect(dial)
    await until(lambda: any(f.key == feed.key and f.contiguous_length == len(entries) for f in stores[1].feeds()),
                timeout=SECONDS * 4, what="A's entries at B")
    return loop.time() - start


async def test_replication_obeys_a_device_limit_even_on_the_lan(tmp_path) -> None:
    keys = GroupKeys.from_address(os.urandom(32))
    stores = [await Store.open(tmp_path / n) for n in "ab"]
    a, b = (Node(DeviceIdentity.generate(), s) for s in stores)
    groups = [OpenGroup(s, keys) for s in stores]
    a.join(groups[0])
    b.join(groups[1])
    try:
        (addr,) = await a.listen("tcp:127.0.0.1:0")
        b.rates.configure(RateLimits(devices=(DeviceLimit(a.peer_id, recv=RATE),)), 0.0)
        elapsed = await replicate(a, b, stores, groups, addr)
        rate = b.peers[a.peer_id].conn.bytes_received / elapsed
        assert 0.5 * RATE <= rate <= 1.1 * RATE, f"{rate / 1024:.0f} KiB/s for a limit of {RATE / 1024:.0f}"
    finally:
        for n in (a, b):
            await n.close()
        for s in stores:
            await s.close()


async def test_a_relay_forwards_within_its_own_device_limits(tmp_path) -> None:
    keys = GroupKeys.from_address(os.urandom(32))
    stores = [await Store.open(tmp_path / n) for n in "ab"]
    a, b = (Node(DeviceIdentity.generate(), s) for s in stores)
    groups = [OpenGroup(s, keys) for s in stores]
    a.join(groups[0])
    b.join(groups[1])
    rates = RateLimiter(RateLimits(send=RATE, limit_lan=True), asyncio.get_running_loop().time())
    relay = RelayServer(DeviceIdentity.generate(), rates=rates)
    relay_addr = (await relay.listen("tcp:127.0.0.1:0"))[0]
    client = RelayClient(a.identity, a.take_connection, candidates=lambda: [relay_addr], want=1)
    client.start()
    try:
        await until(lambda: client.relayed_addresses(), what="A's reservation")
        (relayed,) = client.relayed_addresses()
        elapsed = await replicate(a, b, stores, groups, relayed)
        assert b.peers[a.peer_id].kind.startswith("relayed via ")
        rate = relay.bytes_forwarded / elapsed  # both directions: everything the relay sent
        assert 0.5 * RATE <= rate <= 1.1 * RATE, f"{rate / 1024:.0f} KiB/s for a limit of {RATE / 1024:.0f}"
    finally:
        await client.close()
        for n in (a, b):
            await n.close()
        await relay.close()
        for s in stores:
            await s.close()
