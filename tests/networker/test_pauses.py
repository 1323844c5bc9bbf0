"""Pausing a group or a device at the node, in memory: no new entries cross while paused, they
do after resuming; a paused device is neither accepted nor dialed."""

from __future__ import annotations

import pytest

from networker.encoding import encode_key
from networker.errors import PeerPausedError
from tests.helpers import memory_pair, until
from tests.networker.devices import Device


def connect(a: Device, b: Device):
    ca, cb = memory_pair(a.id, b.id)
    return a.node.add_connection(ca), b.node.add_connection(cb)


def live(dev: Device) -> bool:
    return any(ch.live for p in dev.node.peers.values() for ch in p.channels.values())


async def test_a_paused_group_replicates_nothing_until_resumed(make_device) -> None:
    a, b, c = await make_device("a"), await make_device("b"), await make_device("c")
    connect(a, b)
    connect(a, c)  # a witness: what A sends reaches C, so it would have reached B
    feed = await a.group.create_feed()
    await feed.append([b"before"])
    await until(lambda: b.holds(feed.key, 1), what="the first entry at B")
    dk = b.group.discovery_key
    b.node.pause_group(dk)
    await until(lambda: not live(b), what="B's channels closed")
    await feed.append([b"while paused"])
    await until(lambda: c.holds(feed.key, 2), what="the new entry at the witness")
    assert b.node.group_for(dk) is None and b.node.groups[dk] is b.group
    assert not live(b) and not b.holds(feed.key, 2)
    b.node.resume_group(dk)
    await until(lambda: b.holds(feed.key, 2), what="the entry appended while paused, after resuming")


async def test_a_group_paused_before_the_connection_opens_no_channel(make_device) -> None:
    a, b = await make_device("a"), await make_device("b")
    b.node.pause_group(b.group.discovery_key)
    feed = await a.group.create_feed()
    await feed.append([b"x"])
    connect(a, b)
    assert all(not p.channels for p in b.node.peers.values())  # B opened none; A's Open waits
    b.node.resume_group(b.group.discovery_key)
    await until(lambda: b.holds(feed.key, 1), what="the entry after resuming")


async def test_a_paused_device_is_disconnected_refused_and_not_dialed(make_device) -> None:
    a, b = await make_device("a"), await make_device("b")
    pa, _ = connect(a, b)
    b.node.pause_peer(a.id)
    await until(lambda: a.id not in b.node.peers, what="B closing A's connection")
    ca, cb = memory_pair(a.id, b.id)
    a.node.add_connection(ca)
    with pytest.raises(PeerPausedError):
        b.node.add_connection(cb)
    assert cb.closed
    with pytest.raises(PeerPausedError):
        await b.node.connect(f"tcp:127.0.0.1:1~noise:{encode_key(a.id)}")
    b.node.resume_peer(a.id)
    feed = await a.group.create_feed()
    await feed.append([b"after"])
    connect(a, b)
    await until(lambda: b.holds(feed.key, 1), what="replication after resuming the device")
