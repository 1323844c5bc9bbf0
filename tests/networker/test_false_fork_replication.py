"""False forks over replication (issue 12.1), in memory: a peer that holds the writer's real,
longer tree sends it with zeroed upgrade nodes. The victim drops that peer for a bad proof,
records no fork, keeps the feed open, and still replicates the whole feed from the writer."""

from __future__ import annotations

import asyncio

import msgpack

from networker import messages as m
from tests.helpers import memory_pair, until


def zero_upgrade_nodes(data: bytes) -> bytes:
    """The attacker's tap: every Data message it sends keeps its real entries, signature and
    range proof, but its upgrade nodes are zeroed."""
    msg = msgpack.unpackb(data)
    if msg[0] == m.Data.type_id and msg[-1]:
        msg[-1] = [[i, bytes(32)] for i, _ in msg[-1]]
        return msgpack.packb(msg, use_bin_type=True)
    return data


async def test_zeroed_upgrade_nodes_drop_the_sender_and_record_no_fork(make_device) -> None:
    writer, victim, attacker = await make_device("w"), await make_device("v"), await make_device("x")
    feed = await writer.group.create_feed()
    await feed.append([f"first {k}".encode() for k in range(3)])

    wv, vw = memory_pair(writer.id, victim.id)
    pw = writer.node.add_connection(wv)
    victim.node.add_connection(vw)
    await until(lambda: victim.holds(feed.key, 3), what="the victim to hold the first batch")
    pw.close("test: the writer goes away")
    await until(lambda: not victim.node.peers, what="the victim to notice")

    await feed.append([f"second {k}".encode() for k in range(60)])  # the real, longer tree
    xw, wx = memory_pair(attacker.id, writer.id)
    attacker.node.add_connection(xw)
    pwx = writer.node.add_connection(wx)
    await until(lambda: attacker.holds(feed.key, 63), what="the attacker to hold the real tree")
    pwx.close("test: done")
    await until(lambda: not attacker.node.peers, what="the attacker to notice")

    xv, vx = memory_pair(attacker.id, victim.id)
    xv.tap = zero_upgrade_nodes
    attacker.node.add_connection(xv)
    pv = victim.node.add_connection(vx)
    await until(lambda: pv.closed.is_set(), what="the victim to drop the attacker")
    async with asyncio.timeout(10):
        await pv.wait_closed()
    assert "does not verify" in pv.close_reason and "upgrade" in pv.close_reason
    replica = victim.feed(feed.key)
    assert not replica.forked
    assert await victim.store.forks(replica) == []
    assert replica.length == 3  # nothing of the bad proof adopted

    # The honest writer is not cut off: the victim takes the whole feed from it.
    wv2, vw2 = memory_pair(writer.id, victim.id)
    writer.node.add_connection(wv2)
    victim.node.add_connection(vw2)
    await until(lambda: victim.holds(feed.key, 63), what="replication from the writer after the attack")
    assert await replica.get_range(0, 63) == await feed.get_range(0, 63)
    assert not replica.forked
