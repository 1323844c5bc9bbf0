"""Strangers at the peer port, over real loopback TCP: silent Noise connections from throwaway
identities, and remotes that send garbage and come back (issue 12, items 5 and the "refused for
a while" rule)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from networker import transport
from networker.address import parse
from networker.errors import ConnectionClosedError, HandshakeError, PeerRefusedError
from networker.group import OpenGroup
from networker.identity import DeviceIdentity
from networker.keys import GroupKeys
from networker.limits import ConnectionLimits
from networker.node import Node, NodePeer, PeerEvent
from networker.penalty import PenaltyPolicy
from storage import Store
from tests.helpers import memory_pair, until


@pytest.fixture
async def nodes(tmp_path) -> AsyncIterator:
    made: list[tuple[Node, Store]] = []

    async def make(name: str, **kw: object) -> Node:
        store = await Store.open(tmp_path / name)
        node = Node(DeviceIdentity.generate(), store, **kw)  # type: ignore[arg-type]
        made.append((node, store))
        return node

    yield make
    for node, store in made:
        await node.close()
        await store.close()


async def closed_by_remote(conn: transport.SecureConnection, timeout: float) -> bool:
    """Whether the remote closes ``conn`` within ``timeout`` seconds (we read what it sends, an
    ``Open`` for its group maybe, and answer nothing)."""
    try:
        async with asyncio.timeout(timeout):
            for _ in range(1000):
                await conn.recv()
    except ConnectionClosedError:
        return True
    except TimeoutError:
        return False
    return False


async def test_silent_noise_connections_do_not_keep_honest_peers_out(nodes):
    """64 throwaway identities complete the handshake and then say nothing (on main they
    filled max_connections for good): strangers only ever hold their share of the slots, the
    honest peers get in and replicate, and every silent connection is closed."""
    limits = ConnectionLimits(max_connections=64, max_per_ip=64, idle_timeout=2.0)
    victim = await nodes("victim", limits=limits)
    events: list[PeerEvent] = []
    victim.on_event.append(events.append)
    keys = GroupKeys.from_address(os.urandom(32))
    group = OpenGroup(victim.store, keys)
    victim.join(group)
    feed = await group.create_feed()
    await feed.append([b"entry %d" % i for i in range(50)])
    address = (await victim.listen("tcp:127.0.0.1:0"))[0]

    silent: list[transport.SecureConnection] = []
    throwaway = [DeviceIdentity.generate() for _ in range(64)]
    try:
        async with asyncio.timeout(60):
            for identity in throwaway:
                silent.append(await transport.dial(parse(address), identity))
        await until(lambda: len(victim.peers) + sum(e.kind == "disconnected" for e in events) >= 64,
                    what="the victim to take every silent connection")
        assert len(victim.peers) <= limits.stranger_slots  # never the whole house
        assert victim.room_for_peer()  # the swarm keeps dialing

        honest = [await nodes(f"honest{i}") for i in range(3)]
        for h in honest:
            h.join(OpenGroup(h.store, keys))
            async with asyncio.timeout(10):
                await h.connect(address)

        def replicated(h: Node) -> bool:
            return any(f.key == feed.key and f.contiguous_length == 50 for f in h.store.feeds())

        await until(lambda: all(replicated(h) for h in honest), timeout=30, what="honest peers to replicate")
        results = await asyncio.gather(*(closed_by_remote(c, timeout=30) for c in silent))
        assert all(results), f"{results.count(False)} silent connections still open"
        reasons = {e.peer_id: e.reason for e in events if e.kind == "disconnected"}
        silent_ids = {i.peer_id for i in throwaway}
        assert all(reasons.get(pid, "").startswith(("idle:", "evicted:")) for pid in silent_ids)
        assert any(reasons[pid].startswith("idle:") for pid in silent_ids)
        # The honest peers are all still there, and only they.
        assert set(victim.peers) == {h.peer_id for h in honest}
    finally:
        for c in silent:
            c.close()


async def test_per_ip_cap_on_strangers_and_idle_service_users(nodes):
    """One IP gets at most ``max_per_ip`` connections without a shared group; a connection that
    only calls a service is kept while it calls, and closed once idle."""
    limits = ConnectionLimits(max_per_ip=3, idle_timeout=1.0)
    victim = await nodes("victim", limits=limits)
    gate = asyncio.Event()

    async def slow(peer: object, body: bytes) -> bytes:
        await gate.wait()
        return b"done"

    victim.services["slow"] = slow
    address = (await victim.listen("tcp:127.0.0.1:0"))[0]
    caller = await nodes("caller")  # its own idle time is the default, longer than the victim's
    silent: list[transport.SecureConnection] = []
    try:
        async with asyncio.timeout(30):
            peer = await caller.connect(address)
            call = asyncio.ensure_future(peer.call("slow", b"", timeout=30))
            for _ in range(3):
                silent.append(await transport.dial(parse(address), DeviceIdentity.generate()))
            # Four strangers from 127.0.0.1 were one too many: the oldest (the caller) went.
            await until(lambda: caller.peer_id not in victim.peers, what="the oldest stranger to be evicted")
            with pytest.raises(ConnectionClosedError):
                await call
            assert len(victim.peers) == 3

            # A caller alone: kept while its call runs (longer than the idle time)...
            for c in silent:
                c.close()
            await until(lambda: not victim.peers, what="the silent ones to go")
            peer = await caller.connect(address)
            call = asyncio.ensure_future(peer.call("slow", b"", timeout=30))
            await until(lambda: caller.peer_id in victim.peers and victim.peers[caller.peer_id].usage.calls == 1,
                        what="the call to arrive")
            served = victim.peers[caller.peer_id]
            assert isinstance(served, NodePeer)
            # Two idle checks have found it busy (each moves quiet_since on) and kept it.
            t0 = asyncio.get_running_loop().time()
            await until(lambda: served.usage.quiet_since >= t0 + 2 * limits.idle_timeout, what="two idle checks")
            assert not served.closed.is_set() and not peer.closed.is_set()
            gate.set()
            assert await call == b"done"
            # ...and closed once idle after it.
            await asyncio.wait_for(peer.closed.wait(), 10)
            assert served.close_reason.startswith("idle:")
            assert peer.close_reason == "connection closed by peer"
    finally:
        for c in silent:
            c.close()


async def test_a_peer_that_sends_garbage_twice_is_refused_at_once_the_third_time(nodes):
    victim = await nodes("victim", penalties=PenaltyPolicy(base=3.0, cap=30.0))
    events: list[PeerEvent] = []
    victim.on_event.append(events.append)
    address = (await victim.listen("tcp:127.0.0.1:0"))[0]
    attacker = DeviceIdentity.generate()
    async with asyncio.timeout(30):
        for _ in range(2):
            conn = await transport.dial(parse(address), attacker)
            await conn.send(b"\xff\xfe not a message")
            assert await closed_by_remote(conn, timeout=10)
            conn.close()
        await until(lambda: sum(e.kind == "disconnected" for e in events) == 2, what="both disconnects")
        assert all(e.reason.startswith("protocol error") for e in events if e.kind == "disconnected")

        # The third time: refused before the handshake (its IP), unread.
        with pytest.raises(HandshakeError):
            await transport.dial(parse(address), attacker)
        assert victim.listeners[0].throttle.counts["refused"] == 1
        assert sum(e.kind == "connected" for e in events) == 2

        # Its peer id is refused from any IP, and we do not dial it either.
        a, b = memory_pair(attacker.peer_id, victim.peer_id)
        with pytest.raises(PeerRefusedError):
            victim.add_connection(b, ip="192.0.2.7")
        a.close()
        fake = parse(address).alternatives[0].with_key(attacker.peer_id).format()
        with pytest.raises(PeerRefusedError):
            await victim.connect(fake)

        # For a while only: once the refusal ends it may connect again (and a third offence
        # would cost twice as long).
        await until(lambda: victim.ip_penalties.refused_for("127.0.0.1") == 0
                    and victim.id_penalties.refused_for(attacker.peer_id) == 0, what="the refusal to end")
        conn = await transport.dial(parse(address), attacker)
        await until(lambda: attacker.peer_id in victim.peers, what="the comeback")
        await conn.send(b"\xff garbage again")
        assert await closed_by_remote(conn, timeout=10)
        await until(lambda: victim.id_penalties.refused_for(attacker.peer_id) > 3.0, what="a longer refusal")


async def test_garbage_handshakes_from_an_ip_are_refused_at_once_the_third_time(nodes, tmp_path):
    victim = await nodes("victim", penalties=PenaltyPolicy(base=60.0, cap=60.0))
    address = (await victim.listen("tcp:127.0.0.1:0"))[0]
    port = parse(address).alternatives[0].port
    async with asyncio.timeout(30):
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\x00\x05hello")  # a frame that is no Noise message
            assert await reader.read() == b""  # closed by the victim
            writer.close()
        await until(lambda: victim.ip_penalties.refused_for("127.0.0.1") > 0, what="the IP to be refused")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await reader.read() == b""  # closed at once, before it says anything
        writer.close()
        assert victim.listeners[0].throttle.counts["refused"] == 1
        assert victim.listeners[0].throttle.counts["garbage"] == 2
        # Connections that do not come from that IP are unaffected (a unix socket has none).
        unix = (await victim.listen(f"unix:{tmp_path}/peer.sock"))[0]
        conn = await transport.dial(parse(unix), DeviceIdentity.generate())
        await until(lambda: conn.remote_peer_id == victim.peer_id and len(victim.peers) == 1,
                    what="the unix connection")
        conn.close()
