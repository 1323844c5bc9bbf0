"""Replication between nodes over in-memory connections (no sockets): feed exchange, live
appends, sparse downloads, several sources, resume, and misbehaving peers."""

from __future__ import annotations

import asyncio
import os
import types

import msgpack
import pytest

from networker import messages as m
from tests.helpers import memory_pair, until
from tests.networker.devices import Device


def connect(a: Device, b: Device, **kw):
    ca, cb = memory_pair(a.id, b.id, **kw)
    pa = a.node.add_connection(ca)
    pb = b.node.add_connection(cb)
    return pa, pb


def entries(n: int, tag: str = "e") -> list[bytes]:
    return [f"{tag}-{i}".encode() * (1 + i % 7) for i in range(n)]


def replica(dev: Device, key: bytes):
    return next(f for f in dev.store.feeds() if f.key == key)


def has_feed(dev: Device, key: bytes, length: int) -> bool:
    f = next((f for f in dev.store.feeds() if f.key == key), None)
    return f is not None and f.contiguous_length >= length


async def test_one_writer_one_reader(make_device):
    a, b = await make_device("a"), await make_device("b")
    feed = await a.group.create_feed()
    data = entries(500)
    for k in range(0, 500, 50):
        await feed.append(data[k:k + 50])
    connect(a, b)
    await until(lambda: has_feed(b, feed.key, 500), what="b to replicate a's feed")
    r = replica(b, feed.key)
    assert await r.get_range(0, 500) == data
    assert r.length == 500 and not r.writable and r.namespace == b.group.namespace
    served = a.node.replicators.find(feed.key)
    assert served is not None and served.bytes_served >= sum(map(len, data))  # what a counted as sent


async def test_writers_on_both_sides_and_live_appends(make_device):
    a, b = await make_device("a"), await make_device("b")
    fa, fb = await a.group.create_feed(), await b.group.create_feed()
    await fa.append(entries(10, "a"))
    connect(a, b)
    await until(lambda: has_feed(b, fa.key, 10) and has_feed(a, fb.key, 0), what="feed exchange")
    # Live: appends after the channel is up propagate both ways.
    for k in range(20):
        await fa.append([f"a-live-{k}".encode()])
        await fb.append([f"b-live-{k}".encode()])
    await until(lambda: has_feed(b, fa.key, 30) and has_feed(a, fb.key, 20), what="live appends")
    assert await replica(b, fa.key).get(29) == b"a-live-19"
    assert await replica(a, fb.key).get(19) == b"b-live-19"


async def test_multifeed_gossip_through_a_middle_peer(make_device):
    """C only talks to B, yet gets A's feed: B offers every feed it holds for the group."""
    a, b, c = await make_device("a"), await make_device("b"), await make_device("c")
    fa = await a.group.create_feed()
    await fa.append(entries(40))
    connect(a, b)
    connect(b, c)
    await until(lambda: has_feed(c, fa.key, 40), what="c to get a's feed via b")
    await fa.append([b"more"])
    await until(lambda: has_feed(c, fa.key, 41), what="live append to reach c via b")


async def test_sparse_download_fetches_only_the_wanted_range(make_device):
    a, b = await make_device("a"), await make_device("b")
    fa = await a.group.create_feed()
    await fa.append(entries(300))
    rb = await b.store.open_feed(fa.key, b.group.namespace)
    b.node.replicators.get(rb).want(100, 120)
    connect(a, b)
    await until(lambda: rb.have.contains_range(100, 120), what="sparse range")
    assert list(rb.have) == [(100, 120)]
    assert await rb.get_range(100, 120) == (await fa.get_range(100, 120))


async def test_several_sources_are_asked_in_parallel(make_device):
    a, b, c = await make_device("a"), await make_device("b"), await make_device("c")
    fa = await a.group.create_feed()
    await fa.append(entries(4000))
    connect(a, b)
    await until(lambda: has_feed(b, fa.key, 4000), what="b to get everything")
    # C connects to both holders; count the Data messages each one sends.
    pa, _ = connect(a, c)
    pb, _ = connect(b, c)
    await until(lambda: has_feed(c, fa.key, 4000), what="c to get everything")
    served = {name: sum(1 for d in p.conn.sent if msgpack.unpackb(d)[0] == m.Data.type_id)
              for name, p in (("a", pa), ("b", pb))}
    assert served["a"] > 0 and served["b"] > 0, served


async def test_resume_fetches_nothing_twice(make_device):
    a, b = await make_device("a"), await make_device("b")
    fa = await a.group.create_feed()
    data = entries(3000)
    for k in range(0, 3000, 500):
        await fa.append(data[k:k + 500])
    ca, cb = memory_pair(a.id, b.id)
    served = 0

    def serve_three(d: bytes) -> bytes | None:
        """Let the first three Data messages through, then hold back every answer: the cut
        comes mid-transfer however fast the machine is."""
        nonlocal served
        if msgpack.unpackb(d)[0] != m.Data.type_id:
            return d
        served += 1
        return d if served <= 3 else None

    ca.tap = serve_three
    pa = a.node.add_connection(ca)
    b.node.add_connection(cb)
    await until(lambda: served > 3 and has_feed(b, fa.key, 1), what="part of the feed")
    pa.close("test: cut mid-transfer")
    await until(lambda: not b.node.peers, what="b to notice the disconnect")
    got_before = len(replica(b, fa.key).have)
    assert got_before < 3000
    pa2, _ = connect(a, b)
    await until(lambda: has_feed(b, fa.key, 3000), what="resume")
    sent_after = sum(len(msgpack.unpackb(d)[5]) for d in pa2.conn.sent
                     if msgpack.unpackb(d)[0] == m.Data.type_id)
    assert sent_after == 3000 - got_before
    assert await replica(b, fa.key).get_range(0, 3000) == data


async def test_peer_without_replication_key_cannot_open_channel(make_device):
    a = await make_device("a")
    intruder = await make_device("x")
    # Same discovery key (it is public), but a capability made with a wrong replication key.
    fake = types.SimpleNamespace(
        discovery_key=a.group.discovery_key, replication_key=os.urandom(32),
        feeds=lambda: [], tag=lambda f: b"", on_feed_added=lambda cb: None,
    )
    intruder.node.leave(intruder.group.discovery_key)
    intruder.node.join(fake)  # type: ignore[arg-type]
    fa = await a.group.create_feed()
    await fa.append([b"secret-ish"])
    pa, _ = connect(a, intruder)
    await until(lambda: pa.closed.is_set(), what="a to drop the intruder")
    assert "capability" in pa.close_reason
    assert not any(f.key == fa.key for f in intruder.store.feeds())


async def test_capability_from_another_connection_is_refused(make_device):
    a, b = await make_device("a"), await make_device("b")
    await (await a.group.create_feed()).append([b"x"])
    # First connection: record B's Open message.
    _, pb1 = connect(a, b)
    await until(lambda: any(msgpack.unpackb(d)[0] == m.Open.type_id for d in pb1.conn.sent),
                what="b's open")
    recorded = next(d for d in pb1.conn.sent if msgpack.unpackb(d)[0] == m.Open.type_id)
    pb1.close("done")
    await until(lambda: not a.node.peers, what="first connection to close")
    # Second connection (new handshake hash): replay the recorded Open instead of a fresh one.
    ca, cb = memory_pair(a.id, b.id)
    cb.tap = lambda d: recorded if msgpack.unpackb(d)[0] == m.Open.type_id else d
    pa = a.node.add_connection(ca)
    b.node.add_connection(cb)
    await until(lambda: pa.closed.is_set(), what="replayed capability to be refused")
    assert "capability" in pa.close_reason


async def test_bad_proof_disconnects_and_keeps_verified_entries(make_device):
    a, b = await make_device("a"), await make_device("b")
    fa = await a.group.create_feed()
    await fa.append(entries(2000))
    ca, cb = memory_pair(a.id, b.id)
    data_messages = 0

    def corrupt_third_data(d: bytes) -> bytes:
        nonlocal data_messages
        msg = msgpack.unpackb(d)
        if msg[0] != m.Data.type_id:
            return d
        data_messages += 1
        if data_messages == 3:
            msg[5][0] = msg[5][0] + b"!"  # tamper with the first entry
            return msgpack.packb(msg, use_bin_type=True)
        return d

    ca.tap = corrupt_third_data
    a.node.add_connection(ca)
    pb = b.node.add_connection(cb)
    await until(lambda: pb.closed.is_set(), what="b to drop a after a bad proof")
    async with asyncio.timeout(10):
        await pb.wait_closed()  # stores already under way finish
    assert "does not verify" in pb.close_reason
    rb = replica(b, fa.key)
    kept = list(rb.have)
    assert kept, "entries verified before the bad message stay"
    for start, end in kept:
        assert await rb.get_range(start, end) == await fa.get_range(start, end)


async def test_unrequested_data_disconnects(make_device):
    a, b = await make_device("a"), await make_device("b")
    fa = await a.group.create_feed()
    await fa.append([b"one", b"two"])
    _, pb = connect(a, b)
    await until(lambda: has_feed(b, fa.key, 2), what="replication")
    proof = await fa.proof(0, 1)
    ch = next(iter(pb.channels.values()))
    # Inject a Data message b never asked for, as if a had sent it.
    forged = m.Data(ch.remote_id, 999, fa.key, 0, (b"one",), proof.length, proof.signature, proof.nodes)
    await pb.conn._inbox.put(m.encode(forged))
    await until(lambda: pb.closed.is_set(), what="disconnect on unrequested data")
    assert "not requested" in pb.close_reason


async def test_service_calls(make_device):
    from networker.peer import ServiceError

    a, b = await make_device("a"), await make_device("b")

    async def echo(peer, body: bytes) -> bytes:
        if body == b"refuse":
            raise ServiceError("refused on purpose")
        return body[::-1]

    b.node.services["echo"] = echo
    pa, _ = connect(a, b)
    assert await pa.call("echo", b"abc", timeout=5) == b"cba"
    with pytest.raises(ServiceError, match="on purpose"):
        await pa.call("echo", b"refuse", timeout=5)
    with pytest.raises(ServiceError, match="no service"):
        await pa.call("nothing", b"", timeout=5)


async def test_concurrent_service_calls_each_get_their_own_reply(make_device):
    """Two calls in flight at once (an audit beside a key backup): the older one finishing first
    must not forget the newer one's call id (its reply was then "a reply to no call")."""
    a, b = await make_device("a"), await make_device("b")
    gates = {b"1": asyncio.Event(), b"2": asyncio.Event()}

    async def gated(peer, body: bytes) -> bytes:
        await gates[body].wait()
        return b"done:" + body

    b.node.services["gated"] = gated
    pa, _ = connect(a, b)
    older = asyncio.ensure_future(pa.call("gated", b"1", timeout=5))
    newer = asyncio.ensure_future(pa.call("gated", b"2", timeout=5))
    await asyncio.sleep(0)  # both posted, the older with the smaller id
    gates[b"1"].set()
    assert await older == b"done:1"
    gates[b"2"].set()
    assert await newer == b"done:2"
    assert not pa.closed.is_set()


async def test_answers_out_of_order_while_the_writer_appends(make_device):
    """Answers arrive out of order while the writer appends, so some are made for a shorter tree
    than one already seen: everything still arrives."""
    a, b = await make_device("a"), await make_device("b")
    fa = await a.group.create_feed()
    await fa.append(entries(50))
    ca, cb = memory_pair(a.id, b.id, buffer=1000)
    held: list[bytes] = []

    def swap_pairs(d: bytes) -> bytes | None:
        if msgpack.unpackb(d)[0] != m.Data.type_id:
            return d
        if not held:
            held.append(d)  # hold this one back until the next Data overtakes it
            return None
        ca._outbox.put_nowait(d)
        return held.pop()

    ca.tap = swap_pairs
    a.node.add_connection(ca)
    b.node.add_connection(cb)
    for k in range(60):
        await fa.append([f"live-{k}".encode()] * 5)
        await asyncio.sleep(0.002)
    ca.tap = None
    if held:
        await ca._outbox.put(held.pop())
    await until(lambda: has_feed(b, fa.key, fa.length), timeout=20, what="every entry, despite stale answers")


def count_outcomes(monkeypatch) -> dict:
    """Record every store outcome the replicas report (``Channel.stored``), by outcome."""
    from networker import channel as c

    seen: dict = {}
    original = c.Channel.stored

    def stored(self, o, outcome, *args, **kwargs):
        seen[outcome] = seen.get(outcome, 0) + 1
        return original(self, o, outcome, *args, **kwargs)

    monkeypatch.setattr(c.Channel, "stored", stored)
    return seen


async def test_chained_answers_while_the_writer_appends_are_never_stale(make_device, monkeypatch):
    """The writer appends (a new signed tree each time) while the reader has many requests in
    flight. Each answer is proved from the tree of the answer before it (``Request.chained``), so
    the reader, verifying in order, takes every one: none is thrown away as stale and fetched
    again (before chaining, most were while a large file was being recorded)."""
    from networker.channel import StoreOutcome

    seen = count_outcomes(monkeypatch)
    a, b = await make_device("a"), await make_device("b")
    fa = await a.group.create_feed()
    await fa.append([os.urandom(3000) for _ in range(40)])
    connect(a, b)
    for _ in range(80):
        await fa.append([os.urandom(3000) for _ in range(8)])
        await asyncio.sleep(0.001)
    await until(lambda: has_feed(b, fa.key, fa.length) and b.feed(fa.key).length == fa.length,
                timeout=20, what="every entry")
    assert seen.get(StoreOutcome.STORED, 0) > 10
    assert seen.get(StoreOutcome.STALE, 0) == 0, seen
    assert await replica(b, fa.key).get_range(0, fa.length) == await fa.get_range(0, fa.length)


async def test_a_broken_chain_falls_back_to_plain_requests_and_chains_again(make_device, monkeypatch):
    """A peer whose answers the reader could not take (here one is swapped with the next, so
    the reader moves past the tree it was proved from) would break every later chained proof:
    the reader then asks plainly until an answer is taken, then chains again."""
    from networker.channel import StoreOutcome

    seen = count_outcomes(monkeypatch)
    a, b = await make_device("a"), await make_device("b")
    fa = await a.group.create_feed()
    ca, cb = memory_pair(a.id, b.id, buffer=1000)
    swapped: list[bytes] = []

    def swap_once(d: bytes) -> bytes | None:
        if swapped or msgpack.unpackb(d)[0] != m.Data.type_id or fa.length < 30:
            return d
        swapped.append(d)  # held back, sent after the next Data (which overtakes it)
        return None

    def release(d: bytes) -> bytes | None:
        # Only a Data proved from a longer tree than the held one builds its upgrade on that
        # tree; one from the same tree (the writer did not append in between) would be taken
        # in either order, so it passes and the held one waits for the next.
        msg, held = m.decode(d), m.decode(swapped[0])
        if isinstance(msg, m.Data) and isinstance(held, m.Data) and msg.length > held.length:
            ca._outbox.put_nowait(d)
            ca.tap = None
            return swapped[0]
        return d

    ca.tap = swap_once
    a.node.add_connection(ca)
    b.node.add_connection(cb)
    for _ in range(60):
        await fa.append([os.urandom(2000) for _ in range(3)])
        if swapped and ca.tap is swap_once:
            ca.tap = release
        await asyncio.sleep(0.002)
    await until(lambda: has_feed(b, fa.key, fa.length) and b.feed(fa.key).length == fa.length,
                timeout=20, what="every entry, despite the broken chain")
    assert swapped, "no answer was swapped"
    assert seen.get(StoreOutcome.STALE, 0) >= 1, seen
    peer = next(iter(b.node.peers.values()))
    pf = next(ch for ch in peer.channels.values()).feeds[fa.key]
    assert pf.chained, "the reader never went back to chained requests"


async def test_a_writer_wants_its_cleared_entries_back_and_refuses_changed_ones(make_device):
    """storage.healing over the wire: a writer that cleared some of its entries asks a peer
    that keeps them for them back; bytes that are not what it wrote (checked against the leaves
    it kept) disconnect that peer and store nothing; a peer that sends them as they were heals
    the feed."""
    from storage import healing

    a, b, c = await make_device("a"), await make_device("b"), await make_device("c")
    fa = await a.group.create_feed()
    data = entries(40)
    await fa.append(data)
    connect(a, c)  # C keeps everything, for later
    ab, ba = memory_pair(a.id, b.id)

    def corrupt(d: bytes) -> bytes:  # what B sends back of A's entries 5..9: changed
        msg = msgpack.unpackb(d)
        if msg[0] == m.Data.type_id and msg[4] >= 5 and msg[4] < 10:
            msg[5][0] = msg[5][0] + b"!"
            return msgpack.packb(msg, use_bin_type=True)
        return d

    a.node.add_connection(ab)
    b.node.add_connection(ba)
    await until(lambda: has_feed(b, fa.key, 40) and has_feed(c, fa.key, 40), what="b and c to hold a's feed")
    await fa.clear(5, 10)
    assert list(fa.cleared) == [(5, 10)]
    # Only B is asked (A's connections go first, then B's alone comes back), and B answers
    # with changed bytes.
    for p in list(a.node.peers.values()):
        p.close("test")
    await until(lambda: not a.node.peers, what="a's connections to close")
    ab, ba = memory_pair(a.id, b.id)
    ba.tap = corrupt
    pa = a.node.add_connection(ab)
    b.node.add_connection(ba)
    healing.want_back(fa, 0, 40)
    await until(lambda: pa.closed.is_set(), what="a to drop b for changed entries")
    assert "came back changed" in pa.close_reason
    assert not any(fa.has(s) for s in range(5, 10)) and list(fa.cleared) == [(5, 10)]
    # C sends them as they were: healed, and the same bytes as written.
    connect(a, c)
    healing.want_back(fa, 0, 40)
    await until(lambda: all(fa.has(s) for s in range(5, 10)), what="a to get its entries back from c")
    assert await fa.get_range(0, 40) == data and not fa.cleared
