"""The swarm over loopback TCP with an in-memory discovery source."""

from __future__ import annotations

import asyncio
import os

from networker.group import OpenGroup
from networker.identity import DeviceIdentity
from networker.keys import GroupKeys
from networker.node import Node
from networker.swarm import Swarm
from storage import Store
from tests.helpers import until


class Registry:
    """A shared table of announcements, standing in for the DHT."""

    name = "memory"

    def __init__(self) -> None:
        self.table: dict[bytes, dict[bytes, str]] = {}

    def source(self, peer_id: bytes) -> MemorySource:
        return MemorySource(self, peer_id)


class MemorySource:
    name = "memory"

    def __init__(self, registry: Registry, peer_id: bytes) -> None:
        self.registry = registry
        self.peer_id = peer_id

    async def announce(self, topic: bytes, addresses: list[str]) -> None:
        self.registry.table.setdefault(topic, {})[self.peer_id] = addresses[0]

    async def unannounce(self, topic: bytes) -> None:
        self.registry.table.get(topic, {}).pop(self.peer_id, None)

    async def lookup(self, topic: bytes) -> list[tuple[bytes, str]]:
        return list(self.registry.table.get(topic, {}).items())


async def test_peers_of_a_topic_find_and_connect_to_each_other(tmp_path):
    registry = Registry()
    keys = GroupKeys.from_address(os.urandom(32))
    stores, nodes, swarms, groups = [], [], [], []
    try:
        for name in "abc":
            store = await Store.open(tmp_path / name)
            node = Node(DeviceIdentity.generate(), store)
            group = OpenGroup(store, keys)
            node.join(group)
            addrs = await node.listen("tcp:127.0.0.1:0")
            swarm = Swarm(node, [registry.source(node.peer_id)], advertised=lambda a=addrs: a,
                          lookup_interval=0.2)
            stores.append(store)
            nodes.append(node)
            swarms.append(swarm)
            groups.append(group)
        for swarm in swarms:
            swarm.join(keys.discovery_key)
        await until(lambda: all(len(n.peers) == 2 for n in nodes), what="a full mesh of three")
        feed = await groups[0].create_feed()
        await feed.append([b"hello swarm"])
        await until(lambda: all(any(f.key == feed.key and f.contiguous_length == 1 for f in s.feeds())
                                for s in stores), what="replication to all")
        # Leaving stops announcing: a newcomer no longer finds the one that left.
        await swarms[2].leave(keys.discovery_key)
        assert nodes[2].peer_id not in registry.table[keys.discovery_key]
    finally:
        for swarm in swarms:
            await swarm.close()
        for node in nodes:
            await node.close()
        for store in stores:
            await store.close()


async def test_dead_peer_backs_off_and_is_given_up(tmp_path):
    store = await Store.open(tmp_path / "a")
    node = Node(DeviceIdentity.generate(), store)
    registry = Registry()
    topic = os.urandom(32)
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    dead_port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    ghost = DeviceIdentity.generate().peer_id
    from networker.encoding import encode_key

    registry.table[topic] = {ghost: f"tcp:127.0.0.1:{dead_port}~noise:{encode_key(ghost)}"}
    swarm = Swarm(node, [registry.source(node.peer_id)], advertised=lambda: ["tcp:127.0.0.1:1"],
                  lookup_interval=30, reconnect_base=0.01, reconnect_max=0.05, give_up_after=4)
    try:
        swarm.join(topic)
        await until(lambda: ghost in swarm.candidates and swarm.candidates[ghost].given_up,
                    what="the swarm to give up on a dead peer")
        assert swarm.candidates[ghost].failures == 4
        # Found again at another address: tried again.
        swarm.add_candidate(topic, ghost, f"tcp:127.0.0.1:{dead_port + 1}~noise:{encode_key(ghost)}")
        assert not swarm.candidates[ghost].given_up
    finally:
        await swarm.close()
        await node.close()
        await store.close()
