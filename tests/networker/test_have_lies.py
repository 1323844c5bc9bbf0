"""Have lies (issue 12 item 4): a peer claiming ``Have [0, 2**62)`` made ``sync wait`` report
4.6e18 entries missing forever. Claims now count only up to the signed length verified here;
a peer whose proof contradicts its claim is disconnected, one that answers ``NoData`` withdraws
the claim, and sync progress (what ``sync wait`` reads) completes. Played in process: a real
replica whose outgoing ``Have`` messages are rewritten into the lie."""

from __future__ import annotations

import msgpack

from networker import messages as m
from tests.helpers import memory_pair, until
from tests.networker.devices import Device

LIE = 1 << 62
REAL = 50


def lie_in_have(d: bytes) -> bytes:
    msg = msgpack.unpackb(d)
    if msg[0] != m.Have.type_id:
        return d
    msg[3], msg[4], msg[5] = LIE, [[0, LIE]], False  # length, ranges, incremental
    return msgpack.packb(msg, use_bin_type=True)


def connect(a: Device, b: Device, *, a_lies: bool = False):
    ca, cb = memory_pair(a.node.peer_id, b.node.peer_id)
    if a_lies:
        ca.tap = lie_in_have
    return a.node.add_connection(ca), b.node.add_connection(cb)


def held(dev: Device, key: bytes) -> int:
    f = next((f for f in dev.store.feeds() if f.key == key), None)
    return f.contiguous_length if f is not None else 0


async def test_a_liar_that_holds_the_feed_is_disconnected_and_progress_stays_bounded(make_device):
    writer, liar, victim = await make_device("w"), await make_device("l"), await make_device("v")
    feed = await writer.group.create_feed()
    await feed.append([b"entry-%d" % i for i in range(REAL)])
    connect(writer, liar)
    await until(lambda: held(liar, feed.key) == REAL, what="the liar to hold the real feed")
    _, from_liar = connect(liar, victim, a_lies=True)
    await until(lambda: victim.progress() and from_liar.closed.is_set(), what="the liar to be disconnected")
    assert "claimed a signed length" in from_liar.close_reason
    assert victim.max_missing <= REAL
    # With an honest peer, sync progress completes.
    connect(writer, victim)
    await until(victim.synced, what="sync wait to complete")
    assert held(victim, feed.key) == REAL and victim.max_missing <= REAL


async def test_a_liar_that_holds_nothing_withdraws_its_claim(make_device):
    writer, liar, victim = await make_device("w"), await make_device("l"), await make_device("v")
    feed = await writer.group.create_feed()
    await feed.append([b"entry-%d" % i for i in range(REAL)])
    await liar.group.accept_feed(feed.key, b"")  # an empty replica it offers and lies about
    _, from_liar = connect(liar, victim, a_lies=True)
    connect(writer, victim)
    await until(lambda: victim.synced(peers_wanted=2), what="sync wait to complete despite the claim")
    assert held(victim, feed.key) == REAL and victim.max_missing <= REAL
    assert not from_liar.closed.is_set()  # answering NoData is not a lie: the claim is withdrawn
    ch = next(iter(from_liar.channels.values()))
    assert ch.feeds[feed.key].remote_length <= REAL


async def test_claims_beyond_the_claimed_length_are_ignored(make_device):
    """A Have whose ranges go past its own signed length: the excess counts for nothing."""
    writer, victim = await make_device("w"), await make_device("v")
    feed = await writer.group.create_feed()
    await feed.append([b"x"] * 10)
    ca, cb = memory_pair(writer.node.peer_id, victim.node.peer_id)

    def stretch(d: bytes) -> bytes:
        msg = msgpack.unpackb(d)
        if msg[0] == m.Have.type_id:
            msg[5], msg[4] = False, [[0, LIE]]  # ranges to 2**62 under the real length
            return msgpack.packb(msg, use_bin_type=True)
        return d

    ca.tap = stretch
    writer.node.add_connection(ca)
    pv = victim.node.add_connection(cb)
    await until(victim.synced, what="sync to complete")
    ch = next(iter(pv.channels.values()))
    assert list(ch.feeds[feed.key].remote_have) == [(0, 10)]
    assert victim.max_missing <= 10 and not pv.closed.is_set()
