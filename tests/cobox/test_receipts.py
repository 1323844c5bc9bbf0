"""Custody receipts checked by a member: valid ones are kept, tampered ones refused."""

from __future__ import annotations

import dataclasses
import os

import msgpack
import pytest

from cobox.backup.receipts import EXTENSION, Receipt
from cobox.groups import Group
from networker.errors import RemoteProtocolError
from networker.identity import DeviceIdentity
from networker.keys import GroupKeys
from storage import Store


def wire(r: Receipt) -> bytes:
    return r.to_body()


async def test_member_keeps_valid_receipts_and_refuses_tampered_ones(tmp_path):
    store = await Store.open(tmp_path / "a")
    try:
        keys = GroupKeys.from_address(os.urandom(32))
        group = Group(store, "g", keys, DeviceIdentity.generate(), 0.0)
        await group.load()
        for k in range(3):
            await group.append(f"entry {k}")
        feed = group.own_feed()
        assert feed is not None
        seed = DeviceIdentity.generate()
        good = Receipt.make(seed.sign, seed.peer_id, keys.discovery_key, feed.key, 2,
                            await feed.tree_hash_at(2), 1000)
        await group.on_extension(seed.peer_id, EXTENSION, wire(good))
        assert group.backup_status()[0]["feeds"][0]["held"] == 2
        assert not group.backup_status()[0]["backed_up"]

        tampered = [
            dataclasses.replace(good, length=3),                         # signature no longer matches
            dataclasses.replace(good, root_hash=os.urandom(32)),          # likewise
            dataclasses.replace(good, signature=bytes(64)),
            Receipt.make(seed.sign, seed.peer_id, keys.discovery_key, feed.key, 2, os.urandom(32), 2000),
            Receipt.make(seed.sign, seed.peer_id, keys.discovery_key, feed.key, 9,
                         await feed.tree_hash_at(3), 2000),                 # more than the feed has
        ]
        for r in tampered:
            with pytest.raises(RemoteProtocolError):
                await group.on_extension(seed.peer_id, EXTENSION, wire(r))


        malformed = [b"", b"\xc1", msgpack.packb([1, 2, 3]), msgpack.packb({"a": 1}),
                     wire(good)[:-1], msgpack.packb([good.feed, -1, good.root_hash, 0, good.signer,
                                                    good.signature, False])]
        for body in malformed:  # decoded strictly: a bad body disconnects, never a crash
            with pytest.raises(RemoteProtocolError, match="receipt"):
                await group.on_extension(seed.peer_id, EXTENSION, body)
        await group.on_extension(seed.peer_id, "someone/else", b"\xc1")  # other names: ignored
        with pytest.raises(RemoteProtocolError, match="another peer"):
            await group.on_extension(DeviceIdentity.generate().peer_id, EXTENSION, wire(good))
        # A newer receipt for everything: claimed in full, kept across a reload; but a receipt
        # alone is a claim, not backed up until an audit passes (tests/cobox/test_audit.py).
        full = Receipt.make(seed.sign, seed.peer_id, keys.discovery_key, feed.key, 3,
                            await feed.tree_hash_at(3), 3000)
        await group.on_extension(seed.peer_id, EXTENSION, wire(full))
        status = group.backup_status()[0]
        assert status["feeds"][0]["held"] == status["feeds"][0]["claimed"] == 3
        assert not status["backed_up"] and status["feeds"][0]["audit"] == {"state": "not audited yet"}
        again = Group(store, "g", keys, group.identity, 0.0)
        await again.load()
        assert again.backup_status() == group.backup_status()
    finally:
        await store.close()
