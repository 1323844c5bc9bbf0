"""Issue 12.11: 20 node ids chosen next to a topic, all run from one host, cannot keep two members
from finding each other; and 12.9 over the wire: one host cannot fill a topic's slots.

Honest nodes each run on their own loopback address in their own /24 (127.0.N.1), the attacker
on 127.0.0.1 with 20 UDP ports, so "one host" is real to the limits (no loopback exception:
these nodes do not set ``allow_loopback``; records name documentation addresses that nobody
dials)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from kademlia.node import Node

from networker.dht import DHT, PeerRecord, dht_key
from networker.dht.limits import Diversity
from networker.dht.protocol import DHTProtocol
from networker.dht.storage import RecordStorage
from networker.encoding import encode_key
from networker.identity import DeviceIdentity
from tests.networker.dht.conftest import RPC_TIMEOUT, FakeNode, fake_node, raw_client

HONEST = 24
ATTACKERS = 20


async def honest_network(n: int, **kwargs: Any) -> list[DHT]:
    nodes: list[DHT] = []
    for i in range(n):
        boot = [d.address for d in nodes[-3:]]
        d = DHT(DeviceIdentity.generate(), host=f"127.0.{i + 1}.1", bootstrap=boot, rpc_timeout=RPC_TIMEOUT, **kwargs)
        await d.start()
        nodes.append(d)
    await asyncio.gather(*(d.join([]) for d in nodes))
    return nodes


def record_address(d: DHT, i: int) -> list[str]:
    return [f"tcp:203.0.113.{i}:4000~noise:{encode_key(d.identity.peer_id)}"]


def near(key: bytes) -> bytes:
    """A node id that shares its first 136 bits with ``key``."""
    return key[:17] + os.urandom(3)


async def eclipse(topic: bytes, targets: list[tuple[str, int]]) -> list[FakeNode]:
    """Start the attacker's 20 nodes next to the topic's key and make every target hear of them."""
    key = dht_key(topic)
    attackers: list[FakeNode] = []

    def answer(name: str, args: list, addr: tuple[str, int]) -> object:
        contacts = [[a.node_id, *a.address] for a in attackers]
        if name == "find_node":
            return contacts
        if name == "lookup":  # no records, only each other, and a token so announces "succeed"
            return [[], contacts, os.urandom(20), os.urandom(16)]
        if name == "announce":
            return True
        return None

    for _ in range(ATTACKERS):
        attackers.append(await fake_node(answer, near(key)))
    for a in attackers:
        for t in targets:
            a.send(t, "ping", a.node_id)
    async with asyncio.timeout(30):
        while sum(a.replies for a in attackers) < ATTACKERS * len(targets):
            await asyncio.sleep(0.01)
    return attackers


async def run_attack(diversity: Diversity | None) -> tuple[list[PeerRecord], DHT, list[DHT], list[FakeNode]]:
    extra = {} if diversity is None else {"diversity": diversity}
    nodes = await honest_network(HONEST, **extra)
    a = DHT(DeviceIdentity.generate(), host="127.0.100.1", bootstrap=[nodes[0].address], rpc_timeout=RPC_TIMEOUT,
            **extra)
    b = DHT(DeviceIdentity.generate(), host="127.0.101.1", bootstrap=[nodes[5].address], rpc_timeout=RPC_TIMEOUT,
            **extra)
    await asyncio.gather(a.start(), b.start())
    nodes += [a, b]
    topic = os.urandom(32)
    attackers = await eclipse(topic, [d.address for d in nodes])
    await a.announce(topic, record_address(a, 1))
    return await b.lookup(topic), a, nodes, attackers


async def test_members_find_each_other_under_an_eclipse_attack():
    attackers: list[FakeNode] = []
    nodes: list[DHT] = []
    try:
        async with asyncio.timeout(60):
            found, a, nodes, attackers = await run_attack(None)
        assert [r.peer_id for r in found] == [a.identity.peer_id]
        # The attackers did get in touch, and the tables turned most of them away.
        refused = sum(d.protocol.router.refused_contacts for d in nodes)
        assert refused >= len(nodes) * (ATTACKERS - 2) // 2
        for d in nodes:
            for bucket in d.protocol.router.buckets:
                assert sum(n.ip == "127.0.0.1" for n in bucket.get_nodes()) <= 2
        # Honest nodes hold the record (not only the attackers, who threw it away).
        holders = [d for d in nodes if d is not a and d.storage.records(found[0].key)]
        assert len(holders) >= 5
    finally:
        await asyncio.gather(*(d.stop() for d in nodes))
        for x in attackers:
            x.close()


@pytest.mark.slow
async def test_without_the_diversity_limits_the_eclipse_succeeds():
    """The control: the same attack against nodes with the limits lifted hides the member."""
    attackers: list[FakeNode] = []
    nodes: list[DHT] = []
    try:
        async with asyncio.timeout(60):
            found, _a, nodes, attackers = await run_attack(Diversity(per_ip=1000, per_subnet=1000))
        assert found == []
    finally:
        await asyncio.gather(*(d.stop() for d in nodes))
        for x in attackers:
            x.close()


async def test_one_host_cannot_fill_a_topic_over_the_wire():
    """A socket on 127.0.0.1 announces 100 records (new identities) to a node; a member on
    another host then announces and is stored and found."""
    nodes = await honest_network(3)
    target = nodes[1]
    topic = os.urandom(32)
    client = await raw_client()
    try:
        async with asyncio.timeout(30):
            key = dht_key(topic)
            token = (await client.lookup(target.address, key))[2]
            accepted = 0
            for i in range(100):
                ident = DeviceIdentity.generate()
                rec = PeerRecord.create(ident, topic, [f"tcp:198.51.100.{i % 250}:1~noise:{encode_key(ident.peer_id)}"],
                                        ttl=600, now=target.clock())
                accepted += await client.call(target.address, "announce", os.urandom(20), rec.encode(), token) is True
            assert accepted == target.storage.limits.per_ip
            member = nodes[2]
            assert await member.announce(topic, record_address(member, 7)) >= 2
            found = await nodes[0].lookup(topic)
            assert member.identity.peer_id in {r.peer_id for r in found}
            assert member.identity.peer_id in {r.peer_id for r in target.storage.records(key)}
    finally:
        client.close()
        await asyncio.gather(*(d.stop() for d in nodes))


async def test_a_failed_announce_is_retried_in_seconds_not_at_half_the_ttl():
    """Every node refuses the announce (as a network whose near nodes are the attacker's might):
    with a 30 min ttl the DHT still tries again after retry_base seconds, then backs off."""
    def answer(name: str, args: list, addr: tuple[str, int]) -> object:
        if name == "lookup":
            return [[], [], os.urandom(20), os.urandom(16)]
        return False if name == "announce" else None

    refuser = await fake_node(answer, host="127.0.3.1")
    d = DHT(DeviceIdentity.generate(), host="127.0.4.1", bootstrap=[refuser.address], rpc_timeout=RPC_TIMEOUT,
            record_ttl=1800, retry_base=0.05)
    try:
        async with asyncio.timeout(20):
            await d.start()
            assert await d.announce(os.urandom(32), record_address(d, 3)) <= 1  # at most itself
            while sum(name == "announce" for name, _ in refuser.requests) < 3:
                await asyncio.sleep(0.02)
    finally:
        await d.stop()
        refuser.close()


def test_routing_table_slots_per_host_and_per_subnet():
    own = Node(bytes(20))
    near_ids = [bytes([0x80]) + os.urandom(19) for _ in range(40)]  # all in the same bucket of ``own``
    p = DHTProtocol(own, RecordStorage(), 20)
    for i, node_id in enumerate(near_ids[:10]):
        p.router.add_contact(Node(node_id, "198.51.100.1", 5000 + i))  # one host, ten ports
    for i, node_id in enumerate(near_ids[10:20]):
        p.router.add_contact(Node(node_id, f"203.0.113.{i + 1}", 5000))  # one /24, ten hosts
    for i, node_id in enumerate(near_ids[20:30]):
        p.router.add_contact(Node(node_id, f"2001:db8:0:1::{i + 1}", 5000))  # one /64
    kept = [n for b in p.router.buckets for n in b.get_nodes()]
    assert sorted(n.ip for n in kept if n.ip == "198.51.100.1") == ["198.51.100.1"] * 2
    assert len([n for n in kept if n.ip.startswith("203.0.113.")]) == 4
    assert len([n for n in kept if n.ip.startswith("2001:db8:0:1::")]) == 4
    assert p.router.refused_contacts == 8 + 6 + 6
    # A contact already held is refreshed, never refused.
    held = next(n for n in kept if n.ip == "198.51.100.1")
    p.router.add_contact(held)
    assert p.router.refused_contacts == 20
    # Where every node runs on loopback, each port counts as a host.
    q = DHTProtocol(own, RecordStorage(), 20, diversity=Diversity(loopback_ports_distinct=True))
    for i, node_id in enumerate(near_ids[30:40]):
        q.router.add_contact(Node(node_id, "127.0.0.1", 5000 + i))
    assert len([n for b in q.router.buckets for n in b.get_nodes()]) == 10
