"""A writer's own entries fetched back (storage.healing): each is checked against the leaf this
store kept, stored again with cleared ranges less them, across a reopen; bad bytes are refused
and store nothing; a replica has no such path."""

from __future__ import annotations

import os

import pytest

from storage import healing
from storage.blobs import BLOB_THRESHOLD
from storage.errors import EntryMissingError, NotWritableError, VerificationError

from .conftest import OpenStore


async def test_cleared_entries_come_back_checked_against_the_kept_leaves(open_store: OpenStore) -> None:
    store = await open_store()
    feed = await store.create_feed()
    data = [os.urandom(100 + k) for k in range(6)] + [os.urandom(BLOB_THRESHOLD + 5)]  # inline and blob
    await feed.append(data)
    await feed.clear(2, 7)
    wants: list[tuple[str, int, int]] = []
    feed.listen(lambda e: wants.append((e.kind, e.start, e.end)))
    healing.want_back(feed, 0, 7)  # only what is missing is asked for: 2..6
    healing.want_back(feed, 0, 2)  # all held: nothing to ask
    healing.want_back(feed, 3, 7)  # asked for already: no second event
    assert wants == [("want", 2, 7)]
    stored = await healing.heal(feed, 2, data[2:5])
    assert stored == sum(map(len, data[2:5]))
    assert [await feed.get(k) for k in range(5)] == data[:5]
    assert list(feed.cleared) == [(5, 7)] and list(feed.have) == [(0, 5)]
    assert ("download", 2, 5) in wants  # one event per run
    healing.want_back(feed, 0, 7)  # 5 and 6 are still asked for; 2..4 are held
    assert wants.count(("want", 2, 7)) == 1 and len([w for w in wants if w[0] == "want"]) == 1
    # Changed bytes are refused and store nothing; nor does one already held come back twice.
    forged = os.urandom(len(data[5]))
    with pytest.raises(VerificationError):
        await healing.heal(feed, 5, [forged, data[6]])
    assert not feed.has(5) and not feed.has(6)
    assert await healing.heal(feed, 2, data[2:3]) == 0
    assert await healing.heal(feed, 5, data[5:7]) == sum(map(len, data[5:7]))
    await store.close()
    again = await open_store()
    reopened = again.feed(feed.key)
    assert not reopened.cleared and list(reopened.have) == [(0, 7)]
    assert [await reopened.get(k) for k in range(7)] == data


async def test_a_replica_and_entries_past_the_end_do_not_heal(open_store: OpenStore) -> None:
    store = await open_store()
    feed = await store.create_feed()
    data = [os.urandom(50) for _ in range(3)]
    await feed.append(data)
    await feed.clear(0, 1)
    assert await healing.heal(feed, 3, [os.urandom(50)]) == 0  # beyond the signed length
    with pytest.raises(EntryMissingError):
        await feed.get(0)
    other = await open_store("b")
    replica = await other.open_feed(feed.key)
    with pytest.raises(NotWritableError):
        await healing.heal(replica, 0, data[:1])
    with pytest.raises(NotWritableError):
        healing.want_back(replica, 0, 1)
