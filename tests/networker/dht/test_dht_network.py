"""A 50-node in-process DHT network on loopback: announce, lookup, expiry, forged and invalid
announces, state files."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random

import pytest
import pytest_asyncio
import umsgpack

from networker.dht import DHT, PeerRecord, dht_key
from networker.dht.records import _signing_payload
from networker.encoding import encode_key
from networker.identity import DeviceIdentity
from tests.networker.dht.conftest import RPC_TIMEOUT, TEST_NETWORK, Clock, raw_client, start_network, stop_all

pytestmark = pytest.mark.asyncio(loop_scope="module")


def addr_of(d: DHT) -> list[str]:
    return [f"tcp:127.0.0.1:{d.port}~noise:{encode_key(d.identity.peer_id)}"]


async def announce_all(nodes: list[DHT], topic: bytes) -> None:
    async with asyncio.timeout(10):
        counts = await asyncio.gather(*(d.announce(topic, addr_of(d)) for d in nodes))
    assert all(c >= 10 for c in counts), counts


async def test_ten_announce_an_eleventh_finds_all(network: list[DHT]):
    topic = os.urandom(32)
    announcers = network[5:15]
    await announce_all(announcers, topic)
    for seeker in (network[30], network[0], network[49]):
        async with asyncio.timeout(5):
            found = await seeker.lookup(topic)
        assert {r.peer_id for r in found} == {d.identity.peer_id for d in announcers}
        assert all(r.addresses == tuple(addr_of(d)) for r in found
                   for d in announcers if d.identity.peer_id == r.peer_id)
        assert 0 < seeker.last_lookup_queries < 50
    # Re-announcing replaces, never duplicates.
    await announce_all(announcers[:3], topic)
    async with asyncio.timeout(5):
        assert len(await network[31].lookup(topic)) == 10
    for d in announcers:
        await d.unannounce(topic)


async def test_unknown_topic_finds_nothing(network: list[DHT]):
    async with asyncio.timeout(5):
        assert await network[7].lookup(os.urandom(32)) == []


async def test_binds_only_the_given_host(network: list[DHT]):
    d = network[3]
    assert d.protocol.transport.get_extra_info("sockname")[0] == "127.0.0.1"
    assert all(n.id != d.node_id for n in d.contacts())
    assert len(d.contacts()) >= 10


async def _token_for(client, node: DHT, key: bytes) -> bytes:
    _records, nodes, token, _cookie = await client.lookup(node.address, key)
    assert isinstance(token, bytes) and isinstance(nodes, list)
    return token


async def test_announce_needs_a_token_for_the_senders_address(network: list[DHT]):
    target = network[20]
    ident = DeviceIdentity.generate()
    topic = os.urandom(32)
    address = f"tcp:127.0.0.1:9~noise:{encode_key(ident.peer_id)}"
    rec = PeerRecord.create(ident, topic, [address], ttl=600, now=target.clock())
    forger, honest = await raw_client(), await raw_client()
    try:
        async with asyncio.timeout(5):
            nodeid = os.urandom(20)
            # No token, a made-up token, a token issued to another socket: all refused.
            assert await forger.call(target.address, "announce", nodeid, rec.encode(), b"") is False
            assert await forger.call(target.address, "announce", nodeid, rec.encode(), bytes(20)) is False
            token = await _token_for(honest, target, rec.key)
            assert await forger.call(target.address, "announce", nodeid, rec.encode(), token) is False
            assert target.storage.records(rec.key) == []
            # kademlia's one-value STORE is not served at all.
            with pytest.raises(TimeoutError):
                await forger.call(target.address, "store", nodeid, rec.key, rec.encode(), timeout=0.2)
            # The socket the token was issued to may announce.
            assert await honest.call(target.address, "announce", nodeid, rec.encode(), token) is True
            assert target.storage.records(rec.key) == [rec]
    finally:
        forger.close()
        honest.close()


async def test_invalid_records_refused_even_with_a_token(network: list[DHT]):
    target = network[21]
    ident = DeviceIdentity.generate()
    topic = os.urandom(32)
    now = target.clock()
    address = f"tcp:127.0.0.1:9~noise:{encode_key(ident.peer_id)}"
    good = PeerRecord.create(ident, topic, [address], ttl=600, now=now)
    wrongly_signed = dataclasses.replace(good, signature=DeviceIdentity.generate().sign(b"x"))
    expired = PeerRecord.create(ident, topic, [address], ttl=10, now=now - 100)
    key = encode_key(ident.peer_id)
    big_addrs = tuple(f"unix:/{'x' * 120}/{i}~noise:{key}" for i in range(8))
    oversized = PeerRecord(ident.peer_id, topic, big_addrs, int(now) + 600,
                           ident.sign(_signing_payload(ident.peer_id, topic, big_addrs, int(now) + 600)))
    client = await raw_client()
    try:
        async with asyncio.timeout(5):
            token = await _token_for(client, target, good.key)
            for bad in (wrongly_signed, expired, oversized):
                reply = await client.call(target.address, "announce", os.urandom(20), bad.encode(), token)
                assert reply is False
            assert await client.call(target.address, "announce", os.urandom(20), b"junk", token) is False
            # Garbage datagrams and wrong argument shapes are ignored; the node still answers.
            client.send_raw(target.address, b"\x00" + os.urandom(20) + b"\xc1\xc1")
            client.send_raw(target.address, os.urandom(5))
            with pytest.raises(TimeoutError):
                await client.call(target.address, "lookup", "not-bytes", timeout=0.2)
            assert await client.call(target.address, "ping", os.urandom(20)) == target.node_id
        assert target.storage.records(good.key) == []
    finally:
        client.close()


async def test_lookup_reply_fits_in_a_datagram(network: list[DHT]):
    target = network[22]
    topic = os.urandom(32)
    key = encode_key(b"\x00" * 32)
    for _ in range(40):
        ident = DeviceIdentity.generate()
        key = encode_key(ident.peer_id)
        addrs = (f"tcp:127.0.0.1:1~noise:{key}", *(f"unix:/{'y' * 60}/{i}~noise:{key}" for i in range(4)))
        rec = PeerRecord.create(ident, topic, addrs, ttl=600, now=target.clock())
        assert target.storage.add(dht_key(topic), rec, "10.1.1.1")
    cookie = target.protocol.tokens.cookie(("127.0.0.1", 9))
    reply = target.protocol.rpc_lookup(("127.0.0.1", 9), os.urandom(20), dht_key(topic), cookie)
    assert 21 + len(umsgpack.packb(reply)) <= 8192
    assert 0 < len(reply[0]) < 40


async def test_records_expire(network: list[DHT], clock: Clock):
    topic = os.urandom(32)
    announcers = network[40:43]
    await announce_all(announcers, topic)
    try:
        async with asyncio.timeout(5):
            assert len(await network[10].lookup(topic)) == 3
            clock.offset = announcers[0].record_ttl + 1
            assert await network[10].lookup(topic) == []
            assert all(d.storage.records(dht_key(topic)) == [] for d in network)
            # Announcing again after expiry works.
            await announce_all(announcers[:2], topic)
            assert len(await network[11].lookup(topic)) == 2
    finally:
        clock.offset = 0.0
        for d in announcers:
            await d.unannounce(topic)


async def test_reannounced_before_expiry(network: list[DHT]):
    d = network[44]
    topic = os.urandom(32)
    d.record_ttl = 2  # re-announced about every second
    try:
        await d.announce(topic, addr_of(d))
        async with asyncio.timeout(5):
            [first] = await network[12].lookup(topic)

        async def newer() -> bool:
            found = await network[12].lookup(topic)
            return bool(found) and found[0].expires > first.expires

        async with asyncio.timeout(5):
            while not await newer():
                await asyncio.sleep(0.05)
    finally:
        await d.unannounce(topic)


async def test_alone_node_works():
    async with DHT(DeviceIdentity.generate(), allow_loopback=True) as alone:
        topic = os.urandom(32)
        assert await alone.announce(topic, addr_of(alone)) == 1
        [rec] = await alone.lookup(topic)
        assert rec.peer_id == alone.identity.peer_id


async def test_state_saved_as_json_and_reloaded(network: list[DHT], tmp_path):
    path = tmp_path / "dht.json"
    topic = os.urandom(32)
    await announce_all(network[25:28], topic)
    d = DHT(DeviceIdentity.generate(), bootstrap=[network[0].address], state_path=path,
            rpc_timeout=RPC_TIMEOUT, **TEST_NETWORK)
    await d.start()
    node_id = d.node_id
    await d.stop()
    data = json.loads(path.read_text())
    assert data["node_id"] == node_id.hex() and len(data["contacts"]) >= 10
    again = DHT(DeviceIdentity.generate(), state_path=path, rpc_timeout=RPC_TIMEOUT, **TEST_NETWORK)  # no bootstrap
    async with again:
        assert again.node_id == node_id
        assert len(again.contacts()) >= 10
        async with asyncio.timeout(5):
            assert len(await again.lookup(topic)) == 3
    path.write_text("not json")
    async with DHT(DeviceIdentity.generate(), state_path=path) as fresh:  # a bad file is ignored
        assert fresh.node_id != node_id
    for n in network[25:28]:
        await n.unannounce(topic)


@pytest_asyncio.fixture(loop_scope="module")
async def second_network():
    nodes = await start_network(50, Clock())
    yield nodes
    await stop_all(nodes)


async def test_lookups_survive_twenty_percent_dead(second_network: list[DHT]):
    nodes = second_network
    topic = os.urandom(32)
    announcers = nodes[10:20]
    await announce_all(announcers, topic)
    rng = random.Random(7)
    others = [d for d in nodes if d not in announcers]
    dead = rng.sample(others, 10)
    await asyncio.gather(*(d.stop() for d in dead))
    live = [d for d in others if d not in dead]
    want = {d.identity.peer_id for d in announcers}
    for seeker in rng.sample(live, 5):
        async with asyncio.timeout(5):
            found = await seeker.lookup(topic)
        assert {r.peer_id for r in found} == want
    # Announcing still reaches enough live nodes.
    topic2 = os.urandom(32)
    await announce_all(announcers[:5], topic2)
    async with asyncio.timeout(5):
        assert len(await live[0].lookup(topic2)) == 5
