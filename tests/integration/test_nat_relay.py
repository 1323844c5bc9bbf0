"""Relays on loopback: three nodes (relay R, A and B); A does not listen at all, so B reaches
it only through R. Entries cross both ways; R forwards only ciphertext and cannot change a
byte undetected."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from networker.address import Address, parse
from networker.errors import NetworkError
from networker.group import OpenGroup
from networker.identity import DeviceIdentity
from networker.keys import GroupKeys
from networker.node import Node
from networker.relay import RelayClient, RelayLimits, RelayServer
from storage import Store
from tests.helpers import until

MARKER = b"PLAINTEXT-MARKER-" + b"m" * 64


class RecordingRelay(RelayServer):
    """A relay that keeps a copy of everything it forwards (what a curious relay sees) and can
    flip one byte of the stream toward the target after ``tamper_after`` bytes."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.seen = bytearray()
        self.tamper_after: int | None = None
        self.upstream = 0

    def forward(self, data: bytes, upstream: bool) -> bytes:
        self.seen += data
        if upstream:
            start = self.upstream
            self.upstream += len(data)
            if self.tamper_after is not None and start <= self.tamper_after < self.upstream:
                i = self.tamper_after - start
                data = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]
                self.tamper_after = None
        return data


@dataclass
class World:
    relay: RecordingRelay
    a: Node
    b: Node
    client: RelayClient
    groups: list[OpenGroup]
    stores: list[Store]


@asynccontextmanager
async def world(tmp_path, limits: RelayLimits | None = None) -> AsyncIterator[World]:
    keys = GroupKeys.from_address(os.urandom(32))
    stores = [await Store.open(tmp_path / n) for n in "ab"]
    a, b = (Node(DeviceIdentity.generate(), s) for s in stores)
    groups = [OpenGroup(s, keys) for s in stores]
    a.join(groups[0])
    b.join(groups[1])
    relay = RecordingRelay(DeviceIdentity.generate(), limits)
    client = None
    try:
        relay_addr = (await relay.listen("tcp:127.0.0.1:0"))[0]
        client = RelayClient(a.identity, a.take_connection, candidates=lambda: [relay_addr], want=1)
        client.start()
        await until(lambda: client.relayed_addresses(), what="A's reservation")
        yield World(relay, a, b, client, groups, stores)
    finally:
        if client is not None:
            await client.close()
        for n in (a, b):
            await n.close()
        await relay.close()
        for s in stores:
            await s.close()


async def test_entries_cross_both_ways_through_a_relay_that_sees_only_ciphertext(tmp_path):
    async with world(tmp_path) as w:
        (relayed,) = w.client.relayed_addresses()
        alt = parse(relayed).alternatives[0]
        assert alt.relayed and alt.peer_key == w.a.peer_id and alt.relay_key == w.relay.identity.peer_id
        async with asyncio.timeout(10):
            await w.b.connect(relayed)
        await until(lambda: w.a.peer_id in w.b.peers and w.b.peer_id in w.a.peers, what="the relayed connection")
        assert w.b.peers[w.a.peer_id].kind.startswith("relayed via ")
        assert w.a.peers[w.b.peer_id].kind.startswith("relayed via ")
        fa = await w.groups[0].create_feed()
        await fa.append([MARKER + b" from A"])
        fb = await w.groups[1].create_feed()
        await fb.append([MARKER + b" from B"])
        await until(lambda: any(f.key == fa.key and f.contiguous_length == 1 for f in w.stores[1].feeds()),
                    what="A's entry at B")
        await until(lambda: any(f.key == fb.key and f.contiguous_length == 1 for f in w.stores[0].feeds()),
                    what="B's entry at A")
        assert await w.stores[1].feed(fa.key).get(0) == MARKER + b" from A"
        assert await w.stores[0].feed(fb.key).get(0) == MARKER + b" from B"
        assert w.relay.bytes_forwarded > 2 * len(MARKER)  # the entries went through R...
        assert MARKER not in w.relay.seen and b"PLAINTEXT" not in w.relay.seen  # ...as ciphertext only
        assert w.relay.status()["circuits_total"] == 1


async def test_a_relay_that_flips_a_byte_is_detected_and_the_connection_closes(tmp_path):
    async with world(tmp_path) as w:
        (relayed,) = w.client.relayed_addresses()
        async with asyncio.timeout(10):
            await w.b.connect(relayed)
        await until(lambda: w.b.peer_id in w.a.peers, what="the relayed connection")
        peer = w.a.peers[w.b.peer_id]
        w.relay.tamper_after = w.relay.upstream + 40  # inside B's next message to A
        fb = await w.groups[1].create_feed()
        await fb.append([MARKER + b" tampered"])
        async with asyncio.timeout(10):
            await peer.wait_closed()
        assert "protocol error" in peer.close_reason
        assert not any(f.key == fb.key and f.contiguous_length for f in w.stores[0].feeds())


async def test_a_relay_refuses_a_circuit_to_a_device_without_reservation_and_over_its_limit(tmp_path):
    async with world(tmp_path, RelayLimits(max_circuits=1)) as w:
        relay_hop = w.relay.addresses[0]
        stranger = DeviceIdentity.generate().peer_id
        unreserved = parse(relay_hop).alternatives[0].with_key(stranger)
        nowhere = Address("tcp", unreserved.host, unreserved.port, peer_key=stranger,
                          relay_key=w.relay.identity.peer_id)
        with pytest.raises(NetworkError, match="no reservation"):
            await w.b.connect(nowhere.format(), timeout=5)
        (relayed,) = w.client.relayed_addresses()
        await w.b.connect(relayed)
        third = Node(DeviceIdentity.generate(), w.stores[1])
        try:
            with pytest.raises(NetworkError, match="relay full"):
                await third.connect(relayed, timeout=5)
        finally:
            await third.close()


async def test_a_relay_flooding_incoming_circuits_gets_a_bounded_number_of_connections(tmp_path):
    """A hostile relay grants a reservation, then announces 50 circuits at once and never
    splices: the device opens at most MAX_ACCEPTING connections for them at a time."""
    from networker import transport
    from networker.relay.client import MAX_ACCEPTING
    from networker.relay.wire import ACCEPT, INCOMING, RESERVE, RESERVED, Message, decode, encode

    relay_id = DeviceIdentity.generate()
    accepts: list[object] = []
    open_accepts = [0, 0]  # now, most at once

    async def hostile(conn) -> None:
        first = decode(await conn.recv())
        if first.kind == RESERVE:
            await conn.send(encode(Message(RESERVED, ttl=60)))
            for _ in range(50):
                await conn.send(encode(Message(INCOMING, circuit=os.urandom(16), key=os.urandom(32))))
            await asyncio.sleep(30)
        elif first.kind == ACCEPT:
            accepts.append(conn)
            open_accepts[0] += 1
            open_accepts[1] = max(open_accepts[1], open_accepts[0])
            try:
                await conn.recv()  # never answer; the device gives up after its timeout
            except NetworkError:
                pass
            finally:
                open_accepts[0] -= 1

    listener = await transport.listen(parse("tcp:127.0.0.1:0").alternatives[0], relay_id, hostile)
    store = await Store.open(tmp_path / "a")
    node = Node(DeviceIdentity.generate(), store)
    client = RelayClient(node.identity, node.take_connection, candidates=lambda: listener.addresses, want=1,
                         timeout=1.0)
    try:
        client.start()
        await until(lambda: len(accepts) >= MAX_ACCEPTING, what="the device to accept circuits")
        await until(lambda: not client._tasks, timeout=10, what="the device to give up the unspliced circuits")
        assert open_accepts[1] <= MAX_ACCEPTING
        assert len(accepts) <= MAX_ACCEPTING  # the other announcements were ignored, not queued
        assert client.circuits_accepted == 0
    finally:
        await client.close()
        await node.close()
        listener.close()
        await listener.wait_closed()
        await store.close()


async def test_a_relayed_pair_moves_to_a_direct_connection_and_keeps_replicating(tmp_path):
    """The upgrader of A (which accepted the circuit) dials B's direct address; both ends keep
    the direct connection (direct beats relayed), the circuit closes, replication goes on."""
    from networker.holepunch import Upgrader

    async with world(tmp_path) as w:
        b_direct = (await w.b.listen("tcp:127.0.0.1:0"))[0]
        upgrader = Upgrader(w.a, addresses_of=lambda pid: b_direct if pid == w.b.peer_id else None, punch=False)
        try:
            (relayed,) = w.client.relayed_addresses()
            fb = await w.groups[1].create_feed()
            await fb.append([b"before"])
            async with asyncio.timeout(10):
                await w.b.connect(relayed)
            await until(lambda: w.a.peer_id in w.b.peers and w.b.peers[w.a.peer_id].kind == "direct LAN"
                        and w.b.peer_id in w.a.peers and w.a.peers[w.b.peer_id].kind == "direct LAN",
                        what="both ends on the direct connection")
            assert w.a.peers[w.b.peer_id].conn.handshake_hash == w.b.peers[w.a.peer_id].conn.handshake_hash
            await until(lambda: w.relay.state.circuits == {}, what="the relayed circuit to close")
            await fb.append([b"after"])
            await until(lambda: any(f.key == fb.key and f.contiguous_length == 2 for f in w.stores[0].feeds()),
                        what="replication over the direct connection")
        finally:
            await upgrader.close()


async def test_a_relay_with_no_room_still_relays_for_its_own_group_members(tmp_path):
    """max_circuits = 0: strangers are refused, and so is a stranger dialing a member; two
    devices the relay counts as members of its groups (a backup peer's members) get their
    circuit anyway, at no rate limit."""
    async with world(tmp_path, RelayLimits(max_circuits=0, circuit_bytes_per_second=1)) as w:
        (relayed,) = w.client.relayed_addresses()
        with pytest.raises(NetworkError, match="relay full"):
            await w.b.connect(relayed, timeout=5)
        w.relay.exempt = lambda dialer, target: False  # only one of them is a member here
        with pytest.raises(NetworkError, match="relay full"):
            await w.b.connect(relayed, timeout=5)
        w.relay.exempt = lambda dialer, target: {dialer, target} == {w.a.peer_id, w.b.peer_id}
        async with asyncio.timeout(10):
            await w.b.connect(relayed)
        fb = await w.groups[1].create_feed()
        await fb.append([os.urandom(200_000)])  # at 1 byte/s this would never arrive
        await until(lambda: any(f.key == fb.key and f.contiguous_length == 1 for f in w.stores[0].feeds()),
                    what="the member's entry through the relay")
