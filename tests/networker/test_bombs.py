"""Decompression-style bombs (issue 12 item 7): a message of nested empty msgpack arrays costs
one byte per array on the wire and ~60 bytes per array once decoded. Played in process against
a real node: before any channel the message is refused by size, after a channel by its shape;
either way the peer is disconnected, memory stays near the message's own size, and the node
keeps replicating with everyone else."""

from __future__ import annotations

import os
import tracemalloc
import types

from networker import caps
from networker import messages as m
from networker.group import OpenGroup
from networker.keys import GroupKeys
from networker.node import Node
from storage import Store
from tests.helpers import memory_pair, until


def nested_empty_arrays(outer: int, inner: int) -> bytes:
    """``[[[], [], ...], ...]``: ``outer`` arrays of ``inner`` empty arrays each."""
    one = b"\xdc" + inner.to_bytes(2, "big") + b"\x90" * inner
    return b"\xdc" + outer.to_bytes(2, "big") + one * outer


async def _node(tmp_path, name: str, address: bytes) -> tuple[Node, Store, OpenGroup]:
    store = await Store.open(tmp_path / name)
    node = Node(types.SimpleNamespace(peer_id=os.urandom(32)), store)  # type: ignore[arg-type]
    group = OpenGroup(store, GroupKeys.from_address(address))
    node.join(group)
    return node, store, group


async def _play_bomb(tmp_path, bomb: bytes, *, open_channel: bool) -> str:
    address = os.urandom(32)
    victim, vstore, vgroup = await _node(tmp_path, "victim", address)
    honest, hstore, hgroup = await _node(tmp_path, "honest", address)
    try:
        feed = await hgroup.create_feed()
        await feed.append([b"before-%d" % i for i in range(20)])
        ch, cv = memory_pair(honest.peer_id, victim.peer_id)
        honest.add_connection(ch)
        honest_peer = victim.add_connection(cv)
        await until(lambda: any(f.key == feed.key and f.contiguous_length == 20 for f in vstore.feeds()),
                    what="honest replication before the attack")

        attacker, conn = memory_pair(os.urandom(32), victim.peer_id)
        bad = victim.add_connection(conn)
        if open_channel:
            cap = caps.capability(vgroup.replication_key, conn.handshake_hash, True)
            await attacker._outbox.put(m.encode(m.Open(1, vgroup.discovery_key, cap)))
            await until(lambda: bad.channel_live, what="the attacker's channel to open")
        tracemalloc.start()
        try:
            base, _ = tracemalloc.get_traced_memory()
            await attacker._outbox.put(bomb)
            await until(lambda: bad.closed.is_set(), timeout=10, what="the bomber to be disconnected")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak - base < 2 * len(bomb), f"decoding took {(peak - base) / 1e6:.1f} MB"
        # The honest peer is untouched and keeps replicating.
        assert not honest_peer.closed.is_set()
        await feed.append([b"after"])
        await until(lambda: any(f.key == feed.key and f.contiguous_length == 21 for f in vstore.feeds()),
                    what="honest replication after the attack")
        return bad.close_reason
    finally:
        await victim.close()
        await honest.close()
        await vstore.close()
        await hstore.close()


async def test_bomb_before_any_channel_is_refused_by_size(tmp_path):
    bomb = nested_empty_arrays(2000, 4100)  # 8.2 MB, ~8.2 million arrays when decoded
    reason = await _play_bomb(tmp_path, bomb, open_channel=False)
    assert reason.startswith("protocol error") and "before any channel" in reason


async def test_bomb_on_an_open_channel_is_refused_by_shape(tmp_path):
    bomb = nested_empty_arrays(1400, 4100)  # 5.7 MB: under every size limit once a channel is live
    reason = await _play_bomb(tmp_path, bomb, open_channel=True)
    assert reason.startswith("protocol error") and "objects" in reason


async def test_deep_nesting_on_an_open_channel_is_refused(tmp_path):
    bomb = b"\x91" * 1_000_000 + b"\x90"
    reason = await _play_bomb(tmp_path, bomb, open_channel=True)
    assert reason.startswith("protocol error") and "nested deeper" in reason


async def test_service_calls_still_work_before_a_channel(tmp_path):
    """Key recovery runs as a service call on channel 0, without a group: a large call body is
    and its large reply are still accepted before any channel is live."""
    node_a, store_a, _ = await _node(tmp_path, "a", os.urandom(32))
    node_b, store_b, _ = await _node(tmp_path, "b", os.urandom(32))  # no group in common

    async def echo(peer, body: bytes) -> bytes:
        return body

    node_b.services["echo"] = echo
    try:
        ca, cb = memory_pair(node_a.peer_id, node_b.peer_id)
        pa = node_a.add_connection(ca)
        node_b.add_connection(cb)
        body = os.urandom(m.MAX_CALL_BYTES)
        assert await pa.call("echo", body, timeout=10) == body  # a large call and a large reply
    finally:
        await node_a.close()
        await node_b.close()
        await store_a.close()
        await store_b.close()
