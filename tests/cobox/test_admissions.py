"""Feed admissions (issue 11 items 4 and 6, issue 12 item 3): a feed joins a group only with its
owner's signature (and, at members, the membership tag), at most so many per device, and a
backup peer takes at most so many per group. Refusing a feed is not an error."""

from __future__ import annotations

import asyncio
import os

from cobox import admission
from cobox.groups import Group
from networker.identity import DeviceIdentity
from networker.keys import GroupKeys
from storage import Store

from .feedkeys import feed_key, feed_signer, make_admission


async def _group(store: Store, keys: GroupKeys, **kw) -> Group:
    g = Group(store, "g", keys, DeviceIdentity.generate(), 0.0, **kw)
    await g.load()
    return g


async def test_a_feed_needs_its_owners_signature_and_the_membership_tag(tmp_path):
    store = await Store.open(tmp_path / "m")
    try:
        keys = GroupKeys.from_address(os.urandom(32))
        group = await _group(store, keys)
        other = DeviceIdentity.generate()
        key, key2 = feed_key(), feed_key()
        good = make_admission(other, keys.discovery_key, keys.membership_key, key)
        wrong_group = make_admission(other, keys.discovery_key, os.urandom(32), key)
        forged_sig = good[:40] + bytes([good[40] ^ 1]) + good[41:]
        claims_victim = group.device_id + good[32:]  # someone else's feed "owned" by this device
        # a member claims another device's feed as its own, signing with its own device and feed keys:
        # the feed's signature names the real owner only
        thief = DeviceIdentity.generate()
        stolen = admission.make(thief, keys.discovery_key, keys.membership_key, key, feed_signer(feed_key()))
        assert await group.accept_feed(key, stolen) is None
        for bad in (b"", os.urandom(32), good + b"\x00", wrong_group, forged_sig, claims_victim):
            assert await group.accept_feed(key, bad) is None
        assert await group.accept_feed(key2, good) is None  # bound to its feed key
        assert await group.accept_feed(key, good) is not None
        assert group.owner(key) == other.peer_id
        assert group.tag(store.feed(key)) == good  # relayed as it came
        assert group.owner(group.own_feed().key) == group.device_id
        again = await _group(store, keys)  # the owner is persisted
        assert again.owner(key) == other.peer_id
    finally:
        await store.close()


async def test_feeds_beyond_the_per_device_limit_are_refused_and_reported(tmp_path):
    store = await Store.open(tmp_path / "m")
    try:
        keys = GroupKeys.from_address(os.urandom(32))
        group = await _group(store, keys, max_feeds_per_device=3)
        flooder, honest = DeviceIdentity.generate(), DeviceIdentity.generate()
        feeds = [feed_key() for _ in range(5)]
        got = [await group.accept_feed(k, make_admission(flooder, keys.discovery_key, keys.membership_key, k))
               for k in feeds]
        assert [f is not None for f in got] == [True, True, True, False, False]
        k = feed_key()
        assert await group.accept_feed(k, make_admission(honest, keys.discovery_key, keys.membership_key, k))
        dev = group.status()["devices"][flooder.peer_id.hex()]
        assert dev["feeds"] == 3 and dev["feeds_refused"] == 2
        assert "more than 3 feeds" in dev["last_refused_feed_reason"]
        assert len([f for f in group.feeds() if group.owner(f.key) == flooder.peer_id]) == 3
        reloaded = await _group(store, keys, max_feeds_per_device=3)  # the count survives a restart
        assert await reloaded.accept_feed(feeds[3], make_admission(flooder, keys.discovery_key,
                                                                   keys.membership_key, feeds[3])) is None
    finally:
        await store.close()


async def test_a_backup_peer_checks_signatures_and_bounds_feeds_per_group(tmp_path):
    store = await Store.open(tmp_path / "s")
    try:
        member_keys = GroupKeys.from_address(os.urandom(32))
        keys = GroupKeys.from_replication_key(member_keys.replication_key)
        seed = await _group(store, keys, max_feeds=4, max_feeds_per_device=64)
        flooder = DeviceIdentity.generate()
        made = []
        for _ in range(6):
            k = feed_key()
            adm = make_admission(flooder, keys.discovery_key, os.urandom(32), k)  # a random tag: unverifiable here
            made.append((k, adm, await seed.accept_feed(k, adm)))
        assert [f is not None for _, _, f in made] == [True] * 4 + [False] * 2
        assert seed.status()["devices"][flooder.peer_id.hex()]["feeds_refused"] == 2
        k = os.urandom(32)
        bad = make_admission(flooder, keys.discovery_key, os.urandom(32), os.urandom(32))
        assert await seed.accept_feed(k, bad) is None  # signed for another feed
        # ...and members refuse what the backup peer relays with a tag that is not the group's
        member_store = await Store.open(tmp_path / "m")
        try:
            member = await _group(member_store, member_keys)
            k0, adm0, _ = made[0]
            assert await member.accept_feed(k0, adm0) is None
        finally:
            await member_store.close()
    finally:
        await store.close()


async def test_concurrent_offers_cannot_pass_the_limit(tmp_path):
    store = await Store.open(tmp_path / "m")
    try:
        keys = GroupKeys.from_address(os.urandom(32))
        group = await _group(store, keys, max_feeds_per_device=3)
        flooder = DeviceIdentity.generate()
        offers = [(k, make_admission(flooder, keys.discovery_key, keys.membership_key, k))
                  for k in (feed_key() for _ in range(10))]
        got = await asyncio.gather(*(group.accept_feed(k, a) for k, a in offers),
                                   *(group.accept_feed(k, a) for k, a in offers[:3]))  # and offered twice
        assert sum(f is not None for f in got[:10]) == 3
        assert [f is not None for f in got[10:]] == [f is not None for f in got[:3]]  # the same answer twice
        assert len([f for f in group.feeds() if group.owner(f.key) == flooder.peer_id]) == 3
        assert group.status()["devices"][flooder.peer_id.hex()]["feeds"] == 3
    finally:
        await store.close()


async def test_the_1100_feed_flood_with_valid_tags_stops_at_the_default_limit(tmp_path):
    store = await Store.open(tmp_path / "m")
    try:
        keys = GroupKeys.from_address(os.urandom(32))
        group = await _group(store, keys)  # defaults: 64 feeds per device
        flooder = DeviceIdentity.generate()
        accepted = 0
        for _ in range(1100):
            k = feed_key()
            accepted += await group.accept_feed(k, make_admission(flooder, keys.discovery_key,
                                                                  keys.membership_key, k)) is not None
        assert accepted == 64
        assert group.status()["devices"][flooder.peer_id.hex()]["feeds_refused"] == 1100 - 64
        assert len(group.feeds()) == 65  # the flooder's 64 and this device's own: nothing more to relay
    finally:
        await store.close()
