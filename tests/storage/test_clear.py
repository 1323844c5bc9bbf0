"""Clearing entries (Feed.clear) and deleting feeds (Store.delete_feed): proofs still verify,
cleared entries are missing, blob space is given back, state survives a reopen."""

from __future__ import annotations

import os

import pytest

from storage import Store, verify_range
from storage.blobs import BLOB_THRESHOLD
from storage.errors import EntryMissingError, FeedNotFoundError

from .conftest import OpenStore, deliver

BIG = 256 * 1024  # a blob-file entry, many file system blocks


def entries(n: int, size: int = 100) -> list[bytes]:
    return [os.urandom(size) + k.to_bytes(4, "big") for k in range(n)]


@pytest.mark.parametrize(("length", "start", "end"), [
    (10, 3, 7), (10, 0, 10), (9, 8, 9), (10, 4, 5), (1, 0, 1), (33, 1, 32), (17, 16, 17),
])
async def test_cleared_entries_are_missing_and_kept_ones_still_prove(
    open_store: OpenStore, length: int, start: int, end: int,
) -> None:
    store = await open_store()
    feed = await store.create_feed()
    data = entries(length)
    await feed.append(data)
    freed = await feed.clear(start, end)
    assert freed == sum(len(e) for e in data[start:end])
    assert list(feed.cleared) == [(start, end)]
    assert not any(feed.has(k) for k in range(start, end))
    for k in range(length):
        if start <= k < end:
            with pytest.raises(EntryMissingError):
                await feed.get(k)
            continue
        assert await feed.get(k) == data[k]
        proof = await feed.proof(k)
        verify_range(feed.key, k, [data[k]], proof)  # raises if it does not verify
    # The signed tree is unchanged and still provable: a proof of an upgrade from length 1.
    if length > 1 and 0 not in range(start, end):
        proof = await feed.proof(0, 1, upgrade_from=1)
        verify_range(feed.key, 0, [data[0]], proof)


async def test_a_replica_takes_kept_entries_from_a_cleared_feed_and_verifies_them(open_store: OpenStore) -> None:
    a, b = await open_store("a"), await open_store("b")
    src = await a.create_feed()
    data = entries(20)
    await src.append(data)
    await src.clear(5, 12)
    dst = await b.open_feed(src.key)
    await deliver(src, dst, 12, 20)  # the tip, with the signature of the full tree
    await deliver(src, dst, 0, 5)
    assert list(dst.have) == [(0, 5), (12, 20)]
    with pytest.raises(EntryMissingError):
        await src.get_range(4, 6)


async def test_clearing_a_replica_keeps_it_verifying_and_serving(open_store: OpenStore) -> None:
    a, b, c = await open_store("a"), await open_store("b"), await open_store("c")
    src = await a.create_feed()
    data = entries(16)
    await src.append(data)
    mid = await b.open_feed(src.key)
    await deliver(src, mid, 0, 16)
    await mid.clear(0, 9)
    far = await c.open_feed(src.key)
    await deliver(mid, far, 9, 16)  # served by the replica that cleared its first half
    assert list(far.have) == [(9, 16)]


async def test_cleared_state_survives_a_reopen(tmp_path) -> None:
    async with await Store.open(tmp_path / "s") as store:
        feed = await store.create_feed()
        data = entries(12, BIG // 16)
        await feed.append(data)
        await feed.clear(2, 6)
        stored = feed.stored_bytes
    async with await Store.open(tmp_path / "s") as store:
        feed = store.feeds()[0]
        assert list(feed.have) == [(0, 2), (6, 12)] and list(feed.cleared) == [(2, 6)]
        assert feed.stored_bytes == stored
        for k in (1, 6, 11):
            verify_range(feed.key, k, [data[k]], await feed.proof(k))
        assert await feed.append([b"more"]) == 13  # the roots are still loadable: appends go on


async def test_clear_gives_blob_space_back(open_store: OpenStore) -> None:
    store = await open_store()
    feed = await store.create_feed()
    await feed.append([os.urandom(BIG) for _ in range(32)])  # 8 MiB in the blob file
    before = (await store.disk_use()).blobs
    await feed.clear(0, 24)
    after = await store.disk_use()
    assert after.unreclaimed == 0
    assert before - after.blobs >= 24 * BIG - 24 * 8192, (before, after)
    assert await feed.get(30) is not None  # the blob file keeps its offsets for the rest


async def test_clearing_small_inline_entries_and_again_is_harmless(open_store: OpenStore) -> None:
    store = await open_store()
    feed = await store.create_feed()
    data = entries(10, BLOB_THRESHOLD // 4)
    await feed.append(data)
    assert await feed.clear(2, 4) > 0
    assert await feed.clear(2, 4) == 0  # nothing left to clear
    assert await feed.clear(8, 100) == sum(map(len, data[8:]))  # clipped at the length
    assert list(feed.have) == [(0, 2), (4, 8)] and list(feed.cleared) == [(2, 4), (8, 10)]


async def test_delete_feed_removes_everything_and_frees_space(tmp_path) -> None:
    async with await Store.open(tmp_path / "s") as store:
        keep = await store.create_feed("keep")
        gone = await store.create_feed("gone")
        await keep.append(entries(4))
        await gone.append([os.urandom(BIG) for _ in range(16)])
        before = (await store.disk_use()).blobs
        await store.delete_feed(gone)
        assert (await store.disk_use()).blobs <= before - 15 * BIG
        with pytest.raises(FeedNotFoundError):
            store.feed(gone.key)
        await store.vacuum()
        key = gone.key
    async with await Store.open(tmp_path / "s") as store:
        assert [f.key for f in store.feeds()] == [keep.key]
        assert not await store.read("SELECT 1 FROM entries WHERE key >> 42 = 2")
        assert not await store.read("SELECT 1 FROM nodes WHERE key >> 42 = 2")
        assert not await store.read("SELECT 1 FROM signatures WHERE feed_id = 2")
        assert key not in {f.key for f in store.feeds()}


async def test_a_crash_between_commit_and_punch_is_punched_at_open(tmp_path) -> None:
    """The extents stay in blob_free when the punch never ran; the next open punches them."""
    async with await Store.open(tmp_path / "s") as store:
        feed = await store.create_feed()
        await feed.append([os.urandom(BIG) for _ in range(16)])
        store.rows.reclaim = _no_reclaim  # type: ignore[method-assign]
        await feed.clear(0, 16)
        assert (await store.disk_use()).unreclaimed == 16 * BIG
    async with await Store.open(tmp_path / "s") as store:
        use = await store.disk_use()
        assert use.unreclaimed == 0 and use.blobs < 2 * BIG


async def _no_reclaim() -> int:
    return 0


async def test_append_after_clearing_the_last_entry_of_an_odd_length_still_proves(open_store: OpenStore) -> None:
    """The pair of the cleared last entry completes later: its parent is rebuilt from the kept leaf."""
    store = await open_store()
    feed = await store.create_feed()
    data = entries(5)
    await feed.append(data)
    await feed.clear(4, 5)
    more = entries(3)
    await feed.append(more)
    for k in (3, 5, 6, 7):
        verify_range(feed.key, k, [(data + more)[k]], await feed.proof(k))


async def test_unaligned_neighbouring_extents_are_freed_whole(open_store: OpenStore) -> None:
    """Blob entries that do not fill whole blocks share blocks with their neighbours: cleared
    together, those blocks are freed too (punched one by one they would only be zeroed)."""
    store = await open_store()
    feed = await store.create_feed()
    await feed.append([os.urandom(BLOB_THRESHOLD + 1000 + k) for k in range(200)])  # ~1.9 MB
    await feed.clear(0, 200)
    assert (await store.disk_use()).blobs <= 16 * 1024
