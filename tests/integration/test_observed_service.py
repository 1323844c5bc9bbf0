"""The ``observed`` service between two nodes on loopback (issue 14 item 2): each learns the
address the other sees for it (its listening port, since dials leave from it), a dial-back
reaches a listening peer without disturbing the connection, and hostile calls are refused."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

from networker.identity import DeviceIdentity
from networker.node import Node
from networker.peer import ServiceError
from networker.reach.observed import DIALBACK_BURST, SERVICE, ObservedServer, ask_dialback, ask_whoami
from networker.reach.service import Reach
from storage import Store
from tests.helpers import until


@pytest.fixture
async def pair(tmp_path):
    stores = [await Store.open(tmp_path / n) for n in "ab"]
    nodes = [Node(DeviceIdentity.generate(), s) for s in stores]
    reaches = []
    try:
        for n in nodes:
            reaches.append(Reach(n, await n.listen("tcp:127.0.0.1:0"), allow_loopback=True))
        yield nodes, reaches
    finally:
        for r in reaches:
            await r.close()
        for n in nodes:
            await n.close()
        for s in stores:
            await s.close()


async def test_each_side_learns_what_the_other_sees(pair):
    (a, b), (ra, rb) = pair
    async with asyncio.timeout(10):
        await b.connect(ra.dht_addresses()[0])
    await until(lambda: len(ra.observations) == 1 and len(rb.observations) == 1, what="both observations")
    ob = rb.observations[0]
    assert (ob.ip, ob.port, ob.outbound) == ("127.0.0.1", rb.listen_port, True)  # B dialled from its port
    assert ob.local_port == rb.listen_port
    oa = ra.observations[0]
    assert (oa.ip, oa.port, oa.outbound) == ("127.0.0.1", ra.listen_port, False)
    assert rb.state().kind == "nat"  # one view, nobody dialled back (loopback is never dialled back)
    assert "47100" not in rb.state().words and str(rb.listen_port) in rb.state().words


async def test_dial_back_reaches_a_listening_peer_and_keeps_the_connection(pair):
    (a, b), (ra, rb) = pair
    async with asyncio.timeout(10):
        peer = await b.connect(ra.dht_addresses()[0])
        kept = peer.conn.handshake_hash
        ok, reason = await ask_dialback(peer, rb.listen_port)
    assert ok, reason
    assert a.peers[b.peer_id].conn.handshake_hash == kept == b.peers[a.peer_id].conn.handshake_hash
    assert ra.server.dialbacks == 1
    async with asyncio.timeout(20):  # asked again and again: refused after a few, the connection stays
        for _ in range(DIALBACK_BURST - 1):
            assert (await ask_dialback(peer, rb.listen_port))[0]
        with pytest.raises(ServiceError, match="too often"):
            await ask_dialback(peer, rb.listen_port)
    assert ra.server.dialbacks == DIALBACK_BURST
    assert not peer.closed.is_set()


async def test_dial_back_to_a_closed_port_fails(pair):
    (a, b), (ra, rb) = pair
    a.services[SERVICE] = ObservedServer().handle
    closed = await b.listen("tcp:127.0.0.1:0")
    port = int(closed[0].split("~")[0].rsplit(":", 1)[1])
    b.listeners[-1].close()
    async with asyncio.timeout(20):
        peer = await b.connect(ra.dht_addresses()[0])
        ok, reason = await ask_dialback(peer, port)
    assert not ok and reason


async def test_a_connected_peer_s_dht_node_becomes_a_contact(pair):
    (a, b), (ra, rb) = pair
    a.services[SERVICE] = ObservedServer(dht_port=lambda: 47999).handle  # A runs a DHT node there
    contacts: list[tuple[str, int]] = []
    rb.on_dht_contact = lambda ip, port: contacts.append((ip, port))
    async with asyncio.timeout(10):
        await b.connect(ra.dht_addresses()[0])
    await until(lambda: contacts == [("127.0.0.1", 47999)], what="A's DHT node handed to B's DHT")


async def test_hostile_calls_are_refused_and_whoami_answers(pair):
    (a, b), (ra, rb) = pair
    async with asyncio.timeout(10):
        peer = await b.connect(ra.dht_addresses()[0])
        for body in (b"\xc1", msgpack.packb([2, 4000, "203.0.113.7"]), msgpack.packb([9]), b"\x00" * 400):
            with pytest.raises(ServiceError):
                await peer.call(SERVICE, body)
        assert await ask_whoami(peer) == ("127.0.0.1", rb.listen_port, 0)
    assert not peer.closed.is_set()
