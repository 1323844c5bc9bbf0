"""Groups with many feeds (issue 11 item 4, issue 12 item 3): feed lists go out in pages, so any
number of feeds replicates and nobody drops the connection because a group is large; feeds the
group refuses are counted, not held, not propagated; and what one peer can make us take is
capped per channel. Played in process with real stores over in-memory connections."""

from __future__ import annotations

import asyncio
import hashlib
import os
import types

import msgpack
import pytest

from networker import messages as m
from networker.group import OpenGroup
from networker.keys import GroupKeys
from networker.node import Node
from storage import Feed, Store
from tests.helpers import memory_pair, until


class TaggedGroup(OpenGroup):
    """A group that admits a feed only with a tag made from a group secret (as cobox's
    membership tags are); ``forge`` makes it offer its feeds with random tags instead."""

    def __init__(self, store: Store, keys: GroupKeys, secret: bytes, *, forge: bool = False) -> None:
        super().__init__(store, keys)
        self.secret = secret
        self.forge = forge

    def _tag_of(self, key: bytes) -> bytes:
        return hashlib.blake2b(key, key=self.secret, digest_size=32).digest()

    def tag(self, feed: Feed) -> bytes:
        return os.urandom(32) if self.forge else self._tag_of(feed.key)

    async def accept_feed(self, key: bytes, tag: bytes) -> Feed | None:
        if tag != self._tag_of(key):
            return None
        return await super().accept_feed(key, tag)


@pytest.fixture
async def make_node(tmp_path):
    made: list[tuple[Node, Store]] = []
    address, secret = os.urandom(32), os.urandom(32)

    async def make(name: str, *, forge: bool = False) -> tuple[Node, TaggedGroup]:
        store = await Store.open(tmp_path / name)
        node = Node(types.SimpleNamespace(peer_id=os.urandom(32)), store)  # type: ignore[arg-type]
        group = TaggedGroup(store, GroupKeys.from_address(address), secret, forge=forge)
        node.join(group)
        made.append((node, store))
        return node, group

    yield make
    for node, store in made:
        await node.close()
        await store.close()


def connect(a: Node, b: Node):
    ca, cb = memory_pair(a.peer_id, b.peer_id, buffer=256)
    return a.add_connection(ca), b.add_connection(cb)


async def make_feeds(group: TaggedGroup, n: int) -> list[Feed]:
    feeds = []
    for k in range(n):
        feed = await group.create_feed()
        await feed.append([b"entry-%d" % k])
        feeds.append(feed)
    return feeds


def held(group: OpenGroup, feeds: list[Feed]) -> int:
    keys = {f.key: f for f in group.store.feeds(group.namespace)}
    return sum(1 for f in feeds if f.key in keys and keys[f.key].contiguous_length >= 1)


def feeds_pages(sent: list[bytes]) -> list[int]:
    """The sizes of the Feeds messages sent; the first list's pages all but the last say "more"."""
    pages = [msgpack.unpackb(d) for d in sent if msgpack.unpackb(d)[0] == m.Feeds.type_id]
    first = next(k for k, p in enumerate(pages) if not p[3])
    assert all(p[3] for p in pages[:first])
    return [len(p[2]) for p in pages]


async def _replicate_all(make_node, n: int, timeout: float) -> None:
    (a, ga), (b, gb) = await make_node("a"), await make_node("b")
    feeds = await make_feeds(ga, n)
    pa, pb = connect(a, b)
    await until(lambda: held(gb, feeds) == n, timeout=timeout, what=f"all {n} feeds to replicate")
    assert not pa.closed.is_set() and not pb.closed.is_set()
    pages = feeds_pages(pa.conn.sent)
    assert sum(pages) >= n and len(pages) >= -(-n // m.MAX_FEEDS) and max(pages) <= m.MAX_FEEDS
    # The connection still works for live appends.
    await feeds[-1].append([b"live"])
    await until(lambda: gb.store.feed(feeds[-1].key).contiguous_length == 2, what="a live append")


async def test_1100_admitted_feeds_all_replicate(make_node):
    await _replicate_all(make_node, 1100, timeout=60)


@pytest.mark.slow  # ~10-20 s on 2 busy cores: one SQLite commit per stored entry
async def test_5000_admitted_feeds_all_replicate(make_node):
    await _replicate_all(make_node, 5000, timeout=300)


async def test_1100_refused_feeds_keep_the_connection_and_other_feeds(make_node):
    (honest, gh), (victim, gv), (other, go) = await make_node("h"), await make_node("v"), await make_node("o")
    (hostile, gx) = await make_node("x", forge=True)
    real = (await make_feeds(gh, 1))[0]
    junk = await make_feeds(gx, 1100)  # offered with random tags: the group refuses every one
    connect(honest, hostile)          # the hostile peer also relays the honest feed (forged tag: refused too)
    px, _ = connect(victim, hostile)
    ph, _ = connect(victim, honest)
    connect(victim, other)
    await until(lambda: held(gv, [real]) == 1 and held(go, [real]) == 1, what="the honest feed to replicate")
    ch = next(iter(px.channels.values()))
    await until(lambda: ch.feeds_refused >= 1100, what="the forged offers to be counted")
    assert not px.closed.is_set() and not ph.closed.is_set()
    junk_keys = {f.key for f in junk}
    assert ch.feeds_refused == px.feeds_refused >= 1100 and ch.last_refused in junk_keys | {real.key}
    assert not junk_keys & {f.key for f in victim.store.feeds()}  # nothing held
    assert not junk_keys & {f.key for f in other.store.feeds()}   # nothing propagated
    # Replication goes on, live.
    await real.append([b"after the flood"])
    await until(lambda: gv.store.feed(real.key).contiguous_length == 2
                and go.store.feed(real.key).contiguous_length == 2, what="a live append after the flood")
    assert not px.closed.is_set()


async def test_feeds_one_peer_can_make_us_take_are_capped(make_node):
    (a, ga), (b, gb) = await make_node("a"), await make_node("b")
    feeds = await make_feeds(ga, 200)
    pa, pb = connect(a, b)
    ch = pb.channels[1]
    ch.max_feeds = 50  # set before the loop runs the peer's first message
    await until(lambda: ch.feeds_taken + ch.feeds_over_limit >= 200, what="every offer to be looked at")
    await until(lambda: held(gb, feeds) == 50, what="the first 50 feeds to replicate")
    assert ch.feeds_taken == 50 and ch.feeds_over_limit == 150
    assert len(gb.feeds()) == 50
    assert not pa.closed.is_set() and not pb.closed.is_set()


async def test_members_keep_their_connection_to_a_backup_peer_flooded_with_feeds(make_node):
    """Issue 12 item 3: a key holder floods a backup peer with 1,100 admitted feeds; members
    that connect to the backup peer afterwards get its feed list in pages and stay connected."""
    (writer, gw), (backup, gb), (flooder, gf) = await make_node("w"), await make_node("b"), await make_node("f")
    (member, gm) = await make_node("m")
    real = (await make_feeds(gw, 1))[0]
    flood = await make_feeds(gf, 1100)
    connect(writer, backup)
    connect(flooder, backup)
    await until(lambda: held(gb, [real, *flood]) == 1101, timeout=60, what="the backup peer to take the flood")
    next(iter(writer.peers.values())).close("the writer goes offline")
    pm, pb = connect(member, backup)
    await until(lambda: held(gm, [real, *flood]) == 1101, timeout=60, what="the member to get every feed")
    assert not pm.closed.is_set() and not pb.closed.is_set()
    assert max(feeds_pages(pb.conn.sent)) <= m.MAX_FEEDS


async def test_sync_is_not_settled_while_the_feed_list_is_still_being_taken(make_node):
    """Between two pages, or while the group is still accepting an offered feed, the channel
    must not look settled with nothing missing (``sync wait`` would return too early)."""
    (a, ga), (b, gb) = await make_node("a"), await make_node("b")
    feeds = await make_feeds(ga, m.MAX_FEEDS + 5)  # two pages
    gate, waiting = asyncio.Event(), asyncio.Event()
    accept = gb.accept_feed

    async def gated_accept(key: bytes, tag: bytes):
        if key == feeds[0].key:  # the very first offer: nothing attached yet
            waiting.set()
            await gate.wait()
        return await accept(key, tag)

    gb.accept_feed = gated_accept  # type: ignore[method-assign]
    _, pb = connect(a, b)
    async with asyncio.timeout(30):
        await waiting.wait()
    ch = pb.channels[1]
    assert ch.live and ch.missing()[1] is False
    gate.set()
    await until(lambda: ch.missing() == (0, True), timeout=60, what="the channel to settle")
    assert held(gb, feeds) == len(feeds)
