"""Discovery sources for the swarm: the DHT and LAN discovery behind the one interface
:class:`networker.swarm.Discovery` (announce, unannounce, lookup)."""

from __future__ import annotations

from typing import Any


class DhtSource:
    """The DHT as a swarm source; the DHT re-announces a topic by itself until unannounced."""

    name = "dht"

    def __init__(self, dht: Any) -> None:
        self.dht = dht
        self._announced: dict[bytes, tuple[str, ...]] = {}

    @property
    def host(self) -> str:
        return self.dht.host

    @property
    def port(self) -> int:
        return self.dht.port

    async def announce(self, topic: bytes, addresses: list[str]) -> None:
        if self._announced.get(topic) != tuple(addresses):
            self._announced[topic] = tuple(addresses)
            await self.dht.announce(topic, addresses)

    async def unannounce(self, topic: bytes) -> None:
        self._announced.pop(topic, None)
        await self.dht.unannounce(topic)

    async def lookup(self, topic: bytes) -> list[tuple[bytes, str]]:
        found = []
        for record in await self.dht.lookup(topic):
            dialable = self.dht.dialable(record)
            if dialable:
                found.append((record.peer_id, ";".join(dialable)))
        return found

    def status(self) -> dict[str, Any]:
        protocol = self.dht.protocol
        return {"enabled": True, "host": self.dht.host, "port": self.dht.port,
                "contacts": len(self.dht.contacts()), "announcing": len(self._announced),
                "refused_announces": protocol.refused_announces,
                "dropped_datagrams": protocol.dropped_datagrams,
                "refused_contacts": protocol.router.refused_contacts}

    async def stop(self) -> None:
        await self.dht.stop()


class LanSource:
    """LAN discovery as a swarm source: announcing a topic adds it to the advertised set."""

    name = "lan"

    def __init__(self, lan: Any) -> None:
        self.lan = lan
        self.topics: set[bytes] = set()

    async def announce(self, topic: bytes, addresses: list[str]) -> None:
        if topic not in self.topics:
            self.topics.add(topic)
            self.lan.set_topics(set(self.topics))

    async def unannounce(self, topic: bytes) -> None:
        self.topics.discard(topic)
        self.lan.set_topics(set(self.topics))

    async def lookup(self, topic: bytes) -> list[tuple[bytes, str]]:
        return self.lan.lookup(topic)

    async def stop(self) -> None:
        await self.lan.stop()
