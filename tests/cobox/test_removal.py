"""The daemon side of removals in process: a hostile member's forged epoch records are refused
and reported and the epoch stays; a valid one moves the others; the removed member is refused
by device id in the old epoch."""

from __future__ import annotations

import asyncio
import os

import pytest

from cobox import epochs, netview
from cobox.entries import EPOCH_MAGIC
from cobox.entries_epoch import EPOCH_SIGN_CONTEXT, epoch_body
from cobox.groups import Group
from cobox.removal import Epochs
from networker import DeviceIdentity, GroupKeys
from tests.cobox.hostile import Member, connect, members_fixture  # noqa: F401
from tests.helpers import until


class Host:
    """What the daemon does for an :class:`Epochs` (cobox.removal.Host), for one member."""

    def __init__(self, m: Member) -> None:
        self.m = m
        self.store = m.store
        self.identity = m.identity
        self.current: Group = m.group

    def new_group(self, name: str, keys: GroupKeys, created: float) -> Group:
        return Group(self.store, name, keys, self.identity, created)

    async def start_epoch(self, group: Group) -> None:
        await group.load()
        self.m.node.join(group)

    async def switch(self, name: str, group: Group) -> None:
        self.current = group

    def reopen(self, group: Group, device: bytes) -> None:
        netview.open_channel(self.m.node, device, group)


@pytest.fixture(name="chains")
async def chains_fixture():
    tasks: list[asyncio.Task[None]] = []

    def start(m: Member) -> tuple[Host, Epochs]:
        host = Host(m)
        e = Epochs(host, m.group)
        tasks.append(asyncio.ensure_future(_run(e)))
        return host, e

    async def _run(e: Epochs) -> None:
        await e.load()
        await e.run()

    yield start
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def refused(m: Member, by: Member) -> int:
    return m.group.refusals.as_json().get(by.id.hex(), {}).get("records_refused", 0)


async def test_forged_epoch_records_are_refused_and_reported_then_a_valid_one_moves_the_group(members, chains):
    a, b, c = await members("a"), await members("b"), await members("c")  # a turns hostile
    connect(a, b)
    connect(b, c)
    hb, eb = chains(b)
    hc, ec = chains(c)
    for m in (a, b, c):
        await m.group.append(f"{m.name} before")
    await until(lambda: a.id in b.group.owners() and c.id in b.group.owners() and a.id in c.group.owners(),
                what="admissions")
    dk = a.group.discovery_key
    stranger = DeviceIdentity.generate()
    secret = os.urandom(32)
    kept = [a.id, b.id]
    # 1. Signed by someone else than the owner of the feed it is in.
    body = epoch_body(dk, GroupKeys.from_address(secret).discovery_key, a.id, [c.id],
                      [(d, epochs.seal_to(d, secret)) for d in kept], [], 1.0)
    await a.feed.append([EPOCH_MAGIC + stranger.sign(EPOCH_SIGN_CONTEXT + body) + body])
    # 2. Sealing garbage to b.
    body = epoch_body(dk, GroupKeys.from_address(secret).discovery_key, a.id, [c.id],
                      [(a.id, epochs.seal_to(a.id, secret)), (b.id, os.urandom(80))], [], 1.0)
    await a.feed.append([EPOCH_MAGIC + a.identity.sign(EPOCH_SIGN_CONTEXT + body) + body])
    # 3. Not an epoch record at all behind the magic.
    await a.feed.append([EPOCH_MAGIC + bytes(64) + b"\xc1junk"])
    await until(lambda: refused(b, a) >= 3, what="b to refuse the three forged records")
    assert "epoch record" in b.group.refusals.as_json()[a.id.hex()]["last_refused_reason"]
    assert hb.current is b.group and eb.records == {}  # the epoch stays
    # The valid removal of c by a (a is a member, after all): b moves, c is told it was removed.
    r = epochs.make_record(a.identity.sign, a.id, dk, [c.id], kept, [], secret)
    await a.feed.append([r.entry()])
    await until(lambda: hb.current is not b.group, what="b to move to the new epoch")
    assert hb.current.discovery_key == GroupKeys.from_address(secret).discovery_key
    assert hb.current.past == [b.group] and b.group.retired
    await until(lambda: c.group.removal is not None, what="c to see its removal")
    assert c.group.removal["by"] == a.id.hex() and hc.current is c.group
    # In the old epoch b refuses c by device id: the channel closes, and c's new feeds are refused.
    await until(lambda: not any(ch.live for ch in list(b.group._channels)
                                if ch.peer.remote_peer_id == c.id), what="b to close c's channel")
    assert not b.group._admits(c.id) and b.group._admits(a.id)
    # What b writes now goes to its new feed, under the new keys; c cannot open it.
    await hb.current.append("after")
    new_feed = hb.current.own_feed()
    assert new_feed is not None and new_feed.namespace == hb.current.namespace
    assert c.group.open(new_feed.key, 0, await new_feed.get(0)) is None
    # Reading spans the epochs: the entries from before and the new one.
    await until(lambda: b.holds(c) >= 1, what="b to hold c's entry")
    assert sorted(e.text for e in await hb.current.log()) == ["a before", "after", "b before", "c before"]


async def test_concurrent_removals_by_two_members_end_in_one_epoch(members, chains):
    a, b, c, d = [await members(n) for n in "abcd"]
    everyone = [a, b, c, d]
    for k, m in enumerate(everyone):
        for other in everyone[:k]:
            connect(m, other)
    hosts = {m.name: chains(m) for m in everyone}
    for m in everyone:
        await m.group.append(f"{m.name} before")
    await until(lambda: all(len(m.group.owners()) == 4 for m in everyone), what="admissions")
    ha, ea = hosts["a"]
    hb, eb = hosts["b"]
    # Both remove at once, each before it saw the other's removal.
    await asyncio.gather(ea.remove(c.id.hex()[:12]), eb.remove(d.id.hex()[:12]))
    await until(lambda: len(ea.records) == 2 and len(eb.records) == 2 and ha.current is not a.group
                and ha.current.discovery_key == hb.current.discovery_key, what="a and b to reach one epoch")
    union = ha.current
    assert {r.remover for r in ea.records.values()} == {a.id, b.id}
    assert union.discovery_key not in {r.epoch for r in ea.records.values()}  # the union, not either one
    await until(lambda: c.group.removal is not None and d.group.removal is not None, what="c and d to be told")
    # What a writes now reaches b, not c or d; the epochs a and b left on the way stay readable.
    await union.append("after")
    await until(lambda: any(f.key == union.own_feed().key and f.length for f in hb.current.feeds()),
                what="b to get a's entry in the union epoch")
    texts = sorted(e.text for e in await hb.current.log())
    assert texts == ["a before", "after", "b before", "c before", "d before"]
    assert all(m.store.feeds(union.namespace) == [] for m in (c, d))


async def test_the_epoch_scan_passes_over_cleared_and_released_entries_and_saves_past_them() -> None:
    """Entries a prune cleared or single copy released are folder chunks, never epoch records:
    the scan reads none of the released ones (that would rebuild them from the files), only the
    first bytes of the others, and its
    saved prefix moves past both, so a restart does not scan (rebuild) the rest again."""
    from types import SimpleNamespace

    from cobox.removal import Epochs
    from storage import RangeSet

    asked: list[tuple[int, int]] = []
    saved: dict[str, bytes] = {}

    class Feed:
        key = b"k" * 32
        have = RangeSet([(0, 10), (20, 40)])
        cleared = RangeSet([(10, 20)])
        outside = RangeSet([(20, 30)])

        async def prefixes(self, start: int, end: int, n: int) -> list[tuple[int, bytes]]:
            asked.append((start, end))
            return [(k, b"a sealed entry"[:n]) for k in range(start, end)]

    class Store:
        async def put_record(self, scope: str, key: str, value: bytes) -> None:
            saved[key] = value

    epochs = object.__new__(Epochs)
    epochs._done = {}
    epochs.host = SimpleNamespace(store=Store())
    epochs.genesis = SimpleNamespace(namespace="ns")
    await epochs._scan(SimpleNamespace(feeds=lambda: [Feed()]))  # type: ignore[arg-type]
    assert asked == [(0, 10), (30, 40)]
    assert saved == {Feed.key.hex(): b"40"}
