"""Random and mutated traffic from a peer never crashes a node or corrupts its store: it ends
in a protocol error and a disconnect."""

from __future__ import annotations

import os
import random
import types

from networker import messages as m
from networker.group import OpenGroup
from networker.keys import GroupKeys
from networker.node import Node
from storage import Store, verify_range
from tests.helpers import memory_pair, until


async def test_garbage_and_mutations_end_in_a_disconnect(tmp_path):
    rng = random.Random(1234)
    address = os.urandom(32)
    store = await Store.open(tmp_path / "a")
    node = Node(types.SimpleNamespace(peer_id=os.urandom(32)), store)  # type: ignore[arg-type]
    group = OpenGroup(store, GroupKeys.from_address(address))
    node.join(group)
    feed = await group.create_feed()
    await feed.append([os.urandom(rng.randrange(1, 200)) for _ in range(50)])
    # A valid-looking session from the attacker: its Open, then fuzz.
    templates = [
        m.encode(m.Feeds(1, ((os.urandom(32), b""),))),
        m.encode(m.Have(1, feed.key, 50, ((0, 50),))),
        m.encode(m.Request(1, 1, feed.key, 0, 10, 0)),
        m.encode(m.Data(1, 1, feed.key, 0, (b"x",), 1, bytes(64), ())),
        m.encode(m.NoData(1, 7, "")),
    ]
    try:
        reasons = []
        for case in range(40):
            a_end, attacker = memory_pair(os.urandom(32), node.peer_id)
            peer = node.add_connection(attacker)
            if case % 2:
                frames = [os.urandom(rng.randrange(0, 300)) for _ in range(3)]
            else:
                frames = []
                for _ in range(3):
                    raw = bytearray(rng.choice(templates))
                    for _ in range(rng.randrange(1, 4)):
                        raw[rng.randrange(len(raw))] = rng.randrange(256)
                    frames.append(bytes(raw))
                frames.append(m.encode(m.Data(1, 424242, feed.key, 0, (b"x",), 1, bytes(64), ())))
            for f in frames:
                await a_end._outbox.put(f)
            await until(lambda p=peer: p.closed.is_set(), timeout=5, what=f"disconnect in case {case}")
            reasons.append(peer.close_reason)
        assert all(r.startswith(("protocol error", "connection closed")) for r in reasons), reasons
        assert not any(r.startswith("internal error") for r in reasons)
        # The store is intact.
        assert feed.length == 50
        verify_range(feed.key, 0, await feed.get_range(0, 50), await feed.proof(0, 50))
        assert len(store.feeds()) <= 1 + 40
    finally:
        await node.close()
        await store.close()


async def test_flood_of_requests_is_a_protocol_error(tmp_path):
    store = await Store.open(tmp_path / "a")
    node = Node(types.SimpleNamespace(peer_id=os.urandom(32)), store)  # type: ignore[arg-type]
    try:
        a_end, attacker = memory_pair(os.urandom(32), node.peer_id, buffer=1000)
        peer = node.add_connection(attacker)
        group = OpenGroup(store, GroupKeys.from_address(os.urandom(32)))
        node.join(group)
        feed = await group.create_feed()
        await feed.append([b"x"] * 10)
        ch = peer.channels[1]
        from networker import caps

        cap = caps.capability(group.replication_key, attacker.handshake_hash, True)
        await a_end._outbox.put(m.encode(m.Open(1, group.discovery_key, cap)))
        await until(lambda: ch.live, what="channel open")
        for k in range(500):  # never reading the answers
            await a_end._outbox.put(m.encode(m.Request(1, k, feed.key, 0, 10, 0)))
        await until(lambda: peer.closed.is_set(), what="disconnect on a request flood")
        assert "too many requests" in peer.close_reason
    finally:
        await node.close()
        await store.close()
