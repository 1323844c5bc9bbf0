"""Issue 12.10 (and 12.8, 12.11 for the swarm's part): addresses found on the network are dialled
only if they hold the peer's key and the DHT's address policy accepts them, at a bounded rate;
a topic loop survives a failing source and looks again soon after a round that found nobody."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from networker.dht import DHT, PeerRecord, dht_key
from networker.encoding import encode_key
from networker.errors import DialError
from networker.identity import DeviceIdentity
from networker.sources import DhtSource
from networker.swarm import Swarm, TokenBucket
from tests.networker.dht.conftest import RPC_TIMEOUT, fake_node

TIMEOUT = 10


class FakeNode:
    """What the swarm needs of :class:`networker.node.Node`; records every dial, connects none."""

    def __init__(self) -> None:
        self.peer_id = DeviceIdentity.generate().peer_id
        self.peers: dict[bytes, Any] = {}
        self.max_connections = 64
        self.on_event: list[Any] = []
        self.dialled: list[str] = []
        self.dialled_event = asyncio.Event()

    def room_for_peer(self) -> bool:
        return len(self.peers) < self.max_connections

    async def connect(self, address: str, timeout: float = 10.0) -> None:
        self.dialled.append(address)
        self.dialled_event.set()
        raise DialError("fake: nobody there")


class ListSource:
    """A discovery source handing out a fixed list (or raising), counting rounds."""

    name = "list"

    def __init__(self, results: list[Any]) -> None:
        self.results = results
        self.lookups = 0
        self.round_done = asyncio.Event()

    async def announce(self, topic: bytes, addresses: list[str]) -> None:
        pass

    async def unannounce(self, topic: bytes) -> None:
        pass

    async def lookup(self, topic: bytes) -> list[tuple[bytes, str]]:
        self.lookups += 1
        self.round_done.set()
        result = self.results[min(self.lookups, len(self.results)) - 1]
        if isinstance(result, Exception):
            raise result
        return result


class Signalling:
    """Wraps a source so a test can wait for a lookup round to have finished."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.rounds = 0
        self.done = asyncio.Event()

    async def announce(self, topic: bytes, addresses: list[str]) -> None:
        await self.inner.announce(topic, addresses)

    async def unannounce(self, topic: bytes) -> None:
        await self.inner.unannounce(topic)

    async def lookup(self, topic: bytes) -> list[tuple[bytes, str]]:
        found = await self.inner.lookup(topic)
        self.rounds += 1
        self.done.set()
        return found


def hostile_addresses(ident: DeviceIdentity, port: int) -> list[str]:
    k = encode_key(ident.peer_id)
    return [
        f"unix:/run/cobox/api.sock~noise:{k}",
        f"tcp:127.0.0.1:{port}~noise:{k}",
        f"tcp:169.254.10.20:{port}~noise:{k}",
        f"tcp:0.0.0.0:{port}~noise:{k}",
        f"tcp:203.0.113.5:{port}",  # no key
        f"tcp:224.0.0.251:{port}~noise:{k};tcp:[::1]:{port}~noise:{k}",
        f"tcp:[fe80::1]:{port}~noise:{k};tcp:[::]:{port}~noise:{k}",
        f"tcp:localhost:{port}~noise:{k};tcp:cobox.example:{port}~noise:{k}",
    ]


async def test_records_pointing_anywhere_are_never_dialled():
    """A hostile DHT node serves a signed record naming unix:, loopback, link-local, unspecified,
    multicast, DNS-name and key-less addresses, plus an honest record. The victim's swarm dials
    the honest address and nothing else."""
    topic = os.urandom(32)
    hostile_ident, honest_ident = DeviceIdentity.generate(), DeviceIdentity.generate()
    bad = PeerRecord.create(hostile_ident, topic, hostile_addresses(hostile_ident, 4000), ttl=600)
    good_address = f"tcp:203.0.113.9:4000~noise:{encode_key(honest_ident.peer_id)}"
    good = PeerRecord.create(honest_ident, topic, [f"unix:/tmp/x~noise:{encode_key(honest_ident.peer_id)}",
                                                   good_address], ttl=600)

    def answer(name: str, args: list, addr: tuple[str, int]) -> object:
        if name == "lookup":
            return [[bad.encode(), good.encode()], [], os.urandom(20), os.urandom(16)]
        return True

    hostile = await fake_node(answer)
    victim = DHT(DeviceIdentity.generate(), bootstrap=[hostile.address], rpc_timeout=RPC_TIMEOUT)
    node = FakeNode()
    swarm = None
    try:
        async with asyncio.timeout(TIMEOUT):
            await victim.start()
            assert victim.dialable(bad) == ()
            source = Signalling(DhtSource(victim))
            swarm = Swarm(node, [source], advertised=lambda: [], lookup_interval=60, give_up_after=1)  # type: ignore[arg-type]
            swarm.join(topic)
            await source.done.wait()
            await node.dialled_event.wait()
            while any(c.dialing is not None for c in swarm.candidates.values()):
                await asyncio.sleep(0.01)
        assert node.dialled == [good_address]
        assert hostile_ident.peer_id not in swarm.candidates
        assert dht_key(topic) in [args[1] for name, args in hostile.requests if name == "lookup"]
    finally:
        if swarm is not None:
            await swarm.close()
        await victim.stop()
        hostile.close()


async def test_loopback_records_are_dialled_only_when_allowed():
    topic = os.urandom(32)
    ident = DeviceIdentity.generate()
    rec = PeerRecord.create(ident, topic, [f"tcp:127.0.0.1:4000~noise:{encode_key(ident.peer_id)}"], ttl=600)
    strict = DHT(DeviceIdentity.generate())
    lenient = DHT(DeviceIdentity.generate(), allow_loopback=True)
    assert strict.dialable(rec) == ()
    assert lenient.dialable(rec) == rec.addresses
    async with strict:  # and a strict node neither stores nor announces such a record
        assert not strict.storage.add(rec.key, rec)
        assert await strict.announce(topic, rec.addresses) == 0
        assert strict.storage.records(rec.key) == []


async def test_key_less_and_foreign_key_addresses_are_never_dialled():
    node = FakeNode()
    source = ListSource([[]])
    swarm = Swarm(node, [source], advertised=lambda: [], lookup_interval=60)  # type: ignore[arg-type]
    topic = os.urandom(32)
    try:
        swarm.join(topic)
        peer = DeviceIdentity.generate().peer_id
        other = encode_key(DeviceIdentity.generate().peer_id)
        for address in ("tcp:203.0.113.1:1", f"tcp:203.0.113.1:1~noise:{other}", "unix:/tmp/s", "garbage",
                        "tcp:203.0.113.1:²"):
            swarm.add_candidate(topic, peer, address, "dht")
        assert swarm.refused_addresses == 5 and peer not in swarm.candidates
        mixed = f"tcp:203.0.113.1:1;tcp:203.0.113.2:2~noise:{encode_key(peer)}"
        swarm.add_candidate(topic, peer, mixed, "dht")
        assert swarm.candidates[peer].address == f"tcp:203.0.113.2:2~noise:{encode_key(peer)}"
    finally:
        await swarm.close()


def test_token_bucket():
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.0) == pytest.approx(1.0)
    assert bucket.take(10.0) == 0.0  # refilled, but never beyond the burst
    assert bucket.tokens == pytest.approx(2.0)
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1, now=0)


async def test_dials_of_found_peers_are_rate_limited():
    """24 peers found at once: only the burst is dialled now, the rest wait for tokens."""
    node = FakeNode()
    peers = [DeviceIdentity.generate().peer_id for _ in range(24)]
    found = [(p, f"tcp:203.0.113.{i + 1}:4000~noise:{encode_key(p)}") for i, p in enumerate(peers)]
    source = ListSource([found])
    swarm = Swarm(node, [source], advertised=lambda: [], lookup_interval=60,  # type: ignore[arg-type]
                  dial_rate=0.001, dial_burst=3, give_up_after=1)
    try:
        swarm.join(os.urandom(32))
        async with asyncio.timeout(TIMEOUT):
            await source.round_done.wait()
            while len(node.dialled) < 3:
                await asyncio.sleep(0.01)
        for _ in range(50):  # let every dial task run as far as it can
            await asyncio.sleep(0)
        assert len(node.dialled) == 3 and swarm.dials_started == 3
        assert sum(c.dialing is not None for c in swarm.candidates.values()) == 21
    finally:
        await swarm.close()


async def test_topic_loop_survives_a_failing_source_and_retries_soon():
    """The first lookup raises a bare ValueError (a decoder bug), the second finds nobody, the
    third finds a peer: with a 60 s interval, the peer is still dialled within seconds."""
    node = FakeNode()
    peer = DeviceIdentity.generate().peer_id
    address = f"tcp:203.0.113.1:4000~noise:{encode_key(peer)}"
    source = ListSource([ValueError("invalid literal for int() with base 10: '²'"), [], [(peer, address)]])
    swarm = Swarm(node, [source], advertised=lambda: [], lookup_interval=60,  # type: ignore[arg-type]
                  retry_base=0.01, give_up_after=1)
    try:
        swarm.join(os.urandom(32))
        async with asyncio.timeout(TIMEOUT):
            await node.dialled_event.wait()
        assert node.dialled == [address] and source.lookups == 3
    finally:
        await swarm.close()


class ClosingNode(FakeNode):
    """Every dial succeeds and the other side closes the connection at once (it paused us)."""

    async def connect(self, address: str, timeout: float = 10.0) -> None:
        self.dialled.append(address)
        self.dialled_event.set()


async def test_a_peer_that_closes_at_once_is_redialled_ever_more_slowly():
    from networker.node import PeerEvent

    node = ClosingNode()
    peer = DeviceIdentity.generate().peer_id
    source = ListSource([[(peer, f"tcp:203.0.113.9:4000~noise:{encode_key(peer)}")]])
    swarm = Swarm(node, [source], advertised=lambda: [], lookup_interval=60,  # type: ignore[arg-type]
                  reconnect_base=0.001, reconnect_max=100.0)
    try:
        swarm.join(os.urandom(32))
        failures = []
        for n in range(1, 5):
            async with asyncio.timeout(TIMEOUT):
                while len(node.dialled) < n:
                    await asyncio.sleep(0.005)
                while swarm.candidates[peer].dialing is not None:
                    await asyncio.sleep(0.005)
            for listener in node.on_event:  # connected, then dropped by the other side right away
                listener(PeerEvent("disconnected", peer, "paused"))
            failures.append(swarm.candidates[peer].failures)
        assert failures == [1, 2, 3, 4]  # a successful connect no longer resets the backoff
    finally:
        await swarm.close()
