"""Cleared entries in replication (issue 16 item 1), in process: a device that clears a range
tells its peers with a full ``Have`` (they stop counting it there), answers ``NoData`` to a peer
that asks anyway, serves verifying proofs for what it kept, and does not download what it
cleared again."""

from __future__ import annotations

import msgpack

from networker import messages as m
from tests.helpers import memory_pair, until
from tests.networker.devices import Device

N = 100


def connect(a: Device, b: Device, tap_a=None):  # type: ignore[no-untyped-def]
    ca, cb = memory_pair(a.id, b.id)
    if tap_a is not None:
        ca.tap = tap_a
    return a.node.add_connection(ca), b.node.add_connection(cb)


def view_of(peer, key: bytes):  # type: ignore[no-untyped-def]
    """What a connection's side knows of the other side's ranges of feed ``key`` (None before
    its first ``Have``)."""
    for ch in peer.channels.values():
        if key in ch.feeds and ch.feeds[key].have_received:
            return list(ch.feeds[key].remote_have)
    return None


def have(dev: Device, key: bytes) -> list[tuple[int, int]]:
    f = dev.feed(key)
    return list(f.have) if f is not None else []


def claim_everything(d: bytes) -> bytes:
    """A stale view: every Have from the clearing device is rewritten to claim [0, N)."""
    msg = msgpack.unpackb(d)
    if msg[0] == m.Have.type_id:
        msg[4], msg[5] = [[0, N]], False
        return msgpack.packb(msg, use_bin_type=True)
    return d


async def test_peers_learn_what_a_device_cleared_and_take_the_rest_elsewhere(make_device):
    a, b, c = await make_device("a"), await make_device("b"), await make_device("c")
    feed = await a.group.create_feed()
    await feed.append([b"entry-%d" % k * 50 for k in range(N)])
    _, b_from_a = connect(a, b)
    await until(lambda: have(b, feed.key) == [(0, N)], what="b to hold a's feed")
    await feed.clear(20, 60)
    await until(lambda: view_of(b_from_a, feed.key) == [(0, 20), (60, N)], what="b to learn what a cleared")
    # C only reaches A: it gets the kept entries (verified) and is settled without the rest.
    connect(a, c)
    await until(lambda: have(c, feed.key) == [(0, 20), (60, N)] and c.synced(), what="c to take the kept part")
    # Then B, which still holds everything, fills the gap.
    connect(b, c)
    await until(lambda: have(c, feed.key) == [(0, N)], what="c to fill the gap from b")
    assert [await c.feed(feed.key).get(k) for k in (19, 20, 59, 60)] == [
        await b.feed(feed.key).get(k) for k in (19, 20, 59, 60)]


async def test_a_peer_that_asks_for_cleared_entries_gets_no_data_and_nothing_wrong(make_device):
    a, b, victim = await make_device("a"), await make_device("b"), await make_device("v")
    feed = await a.group.create_feed()
    await feed.append([b"entry-%d" % k for k in range(N)])
    connect(a, b)
    await until(lambda: have(b, feed.key) == [(0, N)], what="b to hold a's feed")
    await feed.clear(0, 50)
    a_side, from_a = connect(a, victim, tap_a=claim_everything)  # the victim believes a holds it all
    # It asks a for [0, ...): a answers NoData, which withdraws the (unverified) claim.
    await until(lambda: view_of(from_a, feed.key) == [], what="the victim to drop a's claim")
    assert not a_side.closed.is_set()  # NoData is an honest answer, not a protocol error
    # What it did store from a (requests a could serve) lies in what a kept.
    assert all(50 <= lo < hi <= N for lo, hi in have(victim, feed.key))
    connect(b, victim)
    await until(lambda: have(victim, feed.key) == [(0, N)] and victim.synced(peers_wanted=2),
                what="the victim to take the cleared part from b")
    for k in (0, 49, 50, 99):
        assert await victim.feed(feed.key).get(k) == b"entry-%d" % k


async def test_a_replica_does_not_download_what_it_cleared(make_device):
    a, b = await make_device("a"), await make_device("b")
    feed = await a.group.create_feed()
    await feed.append([b"entry-%d" % k for k in range(N)])
    connect(a, b)
    await until(lambda: have(b, feed.key) == [(0, N)], what="b to hold a's feed")
    await b.feed(feed.key).clear(0, 40)
    await feed.append([b"later"] * 10)  # b's replicator schedules again for the new entries
    await until(lambda: have(b, feed.key) == [(40, N + 10)] and b.synced(), what="b to take only the new entries")
    assert list(b.feed(feed.key).cleared) == [(0, 40)]
