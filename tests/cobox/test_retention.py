"""Backup peers keep by their own policy (issue 16 item 4): a member's signed release of the
entries it pruned; a backup peer with ``history_days`` clears them that many days later, one
with 0 keeps everything; receipts say which (``keep_days``, signed) and still count released
entries; a release not signed by its feed, or malformed, disconnects and clears nothing."""

from __future__ import annotations

import dataclasses
import os
import time

import msgpack
import pytest

from cobox.backup import retention
from cobox.backup.receipts import RELEASE_EXTENSION, BadReceiptError, Receipt, Release
from cobox.backup.retention import receipt_length
from cobox.groups import Group
from networker.errors import RemoteProtocolError
from networker.identity import DeviceIdentity
from networker.keys import GroupKeys
from storage import Store

DAY = 86400.0


async def setup(tmp_path, keep_days: int):  # type: ignore[no-untyped-def]
    address = os.urandom(32)
    a_store, s_store = await Store.open(tmp_path / "a"), await Store.open(tmp_path / "s")
    member = Group(a_store, "g", GroupKeys.from_address(address), DeviceIdentity.generate(), 0.0)
    await member.load()
    seed_keys = GroupKeys.from_replication_key(GroupKeys.from_address(address).replication_key)
    seed = Group(s_store, "g", seed_keys, DeviceIdentity.generate(), 0.0, keep_days=keep_days)
    await seed.load()
    feed = member.own_feed()
    assert feed is not None
    for k in range(20):
        await member.append(f"entry {k}")
    replica = await seed.accept_feed(feed.key, member.tag(feed))
    assert replica is not None
    await replica.put_range(0, await feed.get_range(0, 20), await feed.proof(0, 20))
    return a_store, s_store, member, seed, feed, replica


async def test_a_backup_peer_clears_released_entries_after_its_history_days(tmp_path):
    a_store, s_store, member, seed, feed, replica = await setup(tmp_path, keep_days=2)
    try:
        await feed.clear(3, 9)  # the member pruned these
        body = retention.release_body(member)
        assert body is not None
        await seed.on_extension(member.device_id, RELEASE_EXTENSION, body)
        assert list(replica.have) == [(0, 20)]  # released just now: kept for 2 days
        assert await retention.expire_released(seed, now=time.time() + 1 * DAY) == 0
        freed = await retention.expire_released(seed, now=time.time() + 3 * DAY)
        assert freed > 0 and list(replica.have) == [(0, 3), (9, 20)]
        # Its receipt still counts the released entries and says what it keeps.
        assert receipt_length(replica) == 20 and replica.contiguous_length == 3
    finally:
        await a_store.close()
        await s_store.close()


async def test_a_backup_peer_with_no_history_limit_keeps_everything(tmp_path):
    a_store, s_store, member, seed, feed, replica = await setup(tmp_path, keep_days=0)
    try:
        await feed.clear(0, 10)
        await seed.on_extension(member.device_id, RELEASE_EXTENSION, retention.release_body(member))
        assert await retention.expire_released(seed, now=1e12) == 0
        assert list(replica.have) == [(0, 20)]
    finally:
        await a_store.close()
        await s_store.close()


async def test_a_release_not_signed_by_its_feed_disconnects_and_clears_nothing(tmp_path):
    a_store, s_store, member, seed, feed, replica = await setup(tmp_path, keep_days=1)
    try:
        # A member (or anyone) signing a release of another device's feed with its own key.
        forger = DeviceIdentity.generate()
        forged = Release.make(forger.sign, member.discovery_key, feed.key, [(0, 20)], 0)
        with pytest.raises(RemoteProtocolError, match="not signed by its feed"):
            await seed.on_extension(forger.peer_id, RELEASE_EXTENSION, forged.to_body())
        assert retention.release_body(member) is None  # the member cleared nothing: nothing to release
        for body in (b"", b"\xc1", msgpack.packb([feed.key, [[5, 1]], 0, bytes(64)]),
                     msgpack.packb([feed.key, [[0, 1 << 41]], 0, bytes(64)]), msgpack.packb({"a": 1})):
            with pytest.raises(RemoteProtocolError, match="release"):
                await seed.on_extension(member.device_id, RELEASE_EXTENSION, body)
        assert await retention.expire_released(seed, now=1e12) == 0
        assert list(replica.have) == [(0, 20)]
    finally:
        await a_store.close()
        await s_store.close()


def test_receipts_sign_what_the_backup_peer_keeps() -> None:
    seed = DeviceIdentity.generate()
    r = Receipt.make(seed.sign, seed.peer_id, os.urandom(32), os.urandom(32), 5, os.urandom(32), 1000,
                     keep_days=30)
    back = Receipt.from_body(r.discovery_key, r.to_body())
    assert back == r and back.keep_days == 30 and "30 days" in back.keeps()
    back.verify()
    with pytest.raises(BadReceiptError):
        dataclasses.replace(r, keep_days=0).verify()  # it claims to keep everything: not what it signed
