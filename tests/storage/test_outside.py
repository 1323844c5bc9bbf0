"""Entries held outside the store (Feed.release, storage/outside.py): released entries stay held
and verify, reads rebuild them, a rebuild that does not verify makes them missing (cleared, out
of have, a clear event), never wrong; release refuses what the rebuilder cannot reproduce; the
state survives a reopen; clearing and deleting handle outside entries."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from storage import FeedEvent, Store, outside, verify_range
from storage.blobs import BLOB_THRESHOLD
from storage.errors import EntryMissingError, RebuildUnavailableError

from .conftest import OpenStore, deliver

BIG = 256 * 1024


class Files:
    """A rebuilder that reproduces entries from a copy it keeps (as cobox does from its files);
    ``copy`` may be changed to play a file changed on disk."""

    def __init__(self) -> None:
        self.copy: dict[tuple[bytes, int], bytes] = {}
        self.calls: list[tuple[bytes, tuple[int, ...]]] = []

    def keep(self, feed_key: bytes, data: Sequence[bytes], start: int = 0) -> None:
        self.copy.update(((feed_key, start + k), e) for k, e in enumerate(data))

    async def rebuild(self, feed_key: bytes, seqs: Sequence[int], leaves: Sequence[bytes | None]) -> list[bytes | None]:
        self.calls.append((feed_key, tuple(seqs)))
        return [self.copy.get((feed_key, s)) for s in seqs]


async def _released_replica(open_store: OpenStore, n: int):  # type: ignore[no-untyped-def]
    """A writer's feed of ``n`` entries in store "a", replicated whole to store "b", whose
    rebuilder (``Files``) holds them all and which released them all."""
    a, b = await open_store("a"), await open_store("b")
    src = await a.create_feed("g")
    data = entries(n)
    await src.append(data)
    files = Files()
    b.set_rebuilder("g", files)
    dst = await b.open_feed(src.key, "g")
    await deliver(src, dst, 0, n)
    files.keep(src.key, data)
    assert await dst.release([(0, n)]) == sum(map(len, data))
    return src, dst, data, files


def entries(n: int, size: int = 1000) -> list[bytes]:
    return [os.urandom(size) + k.to_bytes(4, "big") for k in range(n)]


async def _released(store: Store, n: int = 20, size: int = 1000, lo: int = 0, hi: int | None = None):  # type: ignore[no-untyped-def]
    files = Files()
    store.set_rebuilder("g", files)
    feed = await store.create_feed("g")
    data = entries(n, size)
    await feed.append(data)
    files.keep(feed.key, data)
    freed = await feed.release([(lo, n if hi is None else hi)])
    return feed, data, files, freed


async def test_release_keeps_have_and_proofs_and_reads_rebuild(open_store: OpenStore) -> None:
    store = await open_store()
    feed, data, files, freed = await _released(store, 20, 1000, 3, 15)
    assert freed == sum(map(len, data[3:15]))
    assert list(feed.have) == [(0, 20)] and list(feed.outside) == [(3, 15)]
    assert feed.outside_bytes == freed and feed.stored_bytes == sum(map(len, data)) - freed
    assert not await store.read("SELECT 1 FROM entries WHERE data IS NOT NULL AND key & 63 BETWEEN 3 AND 14")
    files.calls.clear()
    for k in range(20):
        verify_range(feed.key, k, [data[k]], await feed.proof(k))  # proofs need no rebuild
    assert files.calls == []
    assert await feed.get(4) == data[4]
    assert await feed.get_range(0, 20) == data
    assert await feed.get_range(2, 20, max_bytes=3 * 1004) == data[2:5]  # sizes are kept
    assert await feed.entry_sizes(3, 5) == [1004, 1004]
    assert {s for _, seqs in files.calls for s in seqs} <= set(range(3, 15))


async def test_a_replica_takes_rebuilt_entries_and_verifies_them(open_store: OpenStore) -> None:
    a, b = await open_store("a"), await open_store("b")
    src, data, _, _ = await _released(a, 33, 1000)
    dst = await b.open_feed(src.key)
    await deliver(src, dst, 0, 33)
    assert await dst.get_range(0, 33) == data


async def test_release_refuses_what_the_rebuilder_does_not_reproduce(open_store: OpenStore) -> None:
    store = await open_store()
    files = Files()
    store.set_rebuilder("g", files)
    feed = await store.create_feed("g")
    data = entries(10)
    await feed.append(data)
    files.keep(feed.key, data[:4])  # 4..9 unknown to the rebuilder
    files.copy[(feed.key, 2)] = b"other bytes"
    assert await feed.release([(0, 10)]) == sum(map(len, (data[0], data[1], data[3])))
    assert list(feed.outside) == [(0, 2), (3, 4)]
    assert await feed.get_range(0, 10) == data
    other = await store.create_feed("none")  # a namespace without a rebuilder releases nothing
    await other.append(data)
    assert await other.release([(0, 10)]) == 0 and not other.outside


async def test_a_rebuild_that_does_not_verify_makes_the_entries_missing_not_wrong(open_store: OpenStore) -> None:
    store = await open_store()
    feed, data, files, _ = await _released(store, 12, 1000)
    events: list[FeedEvent] = []
    feed.listen(events.append)
    files.copy[(feed.key, 5)] = b"changed on disk since"  # the file changed locally
    del files.copy[(feed.key, 6)]  # and a file was deleted
    with pytest.raises(EntryMissingError):
        await feed.get_range(4, 8)
    assert 5 not in feed.have and 6 not in feed.have and 4 in feed.have and 7 in feed.have
    assert list(feed.cleared) == [(5, 7)] and list(feed.outside) == [(0, 5), (7, 12)]
    assert events == []  # announced once the reader has seen the error (a NoData goes out first)
    await asyncio.sleep(0)
    assert [(e.kind, e.start, e.end) for e in events] == [("clear", 5, 7)]
    with pytest.raises(EntryMissingError):
        await feed.get(5)
    assert await feed.get_range(7, 12) == data[7:]
    for k in (4, 7):
        verify_range(feed.key, k, [data[k]], await feed.proof(k))
    files.copy[(feed.key, 0)] = b"x"
    with pytest.raises(EntryMissingError):
        await feed.get(0)
    assert 0 not in feed.have and 0 in feed.cleared


async def test_outside_state_survives_a_reopen(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "s") as store:
        feed, data, files, freed = await _released(store, 16, BIG // 4, 2, 14)
        stored = feed.stored_bytes
    async with await Store.open(tmp_path / "s") as store:
        feed = store.feeds()[0]
        assert list(feed.have) == [(0, 16)] and list(feed.outside) == [(2, 14)]
        assert feed.outside_bytes == freed and feed.stored_bytes == stored
        with pytest.raises(RebuildUnavailableError):  # no rebuilder set yet: not now, nothing lost
            await feed.get(13)
        assert 13 in feed.have and 13 in feed.outside and not feed.cleared
        store.set_rebuilder("g", files)
        assert await feed.get_range(2, 13) == data[2:13]
        assert await feed.append([b"more"]) == 17


async def test_release_gives_blob_space_back(open_store: OpenStore) -> None:
    store = await open_store()
    before_feed = await store.create_feed("x")
    await before_feed.append([os.urandom(BIG)])
    use0 = (await store.disk_use()).blobs
    feed, data, _, freed = await _released(store, 24, BIG)
    assert freed == sum(map(len, data))
    use = await store.disk_use()
    assert use.unreclaimed == 0 and use.blobs - use0 < 2 * BIG, (use0, use)
    assert (await store.blob_bytes())[feed.key] == 0


async def test_clear_and_delete_handle_outside_entries(open_store: OpenStore) -> None:
    store = await open_store()
    feed, data, files, _ = await _released(store, 10, BLOB_THRESHOLD // 4, 0, 6)
    stored = feed.stored_bytes
    files.calls.clear()
    assert await feed.clear(4, 8) == sum(map(len, data[6:8]))  # only stored bytes count as freed
    assert files.calls == []  # a clear reads no outside entry
    assert list(feed.outside) == [(0, 4)] and list(feed.have) == [(0, 4), (8, 10)]
    assert feed.outside_bytes == sum(map(len, data[:4]))
    assert feed.stored_bytes == stored - sum(map(len, data[6:8]))
    for k in (3, 8):
        verify_range(feed.key, k, [data[k]], await feed.proof(k))
    await store.delete_feed(feed)
    assert not feed.outside and feed.outside_bytes == 0
    assert not await store.read("SELECT 1 FROM entries")


async def test_a_put_of_an_outside_entry_keeps_it_outside(open_store: OpenStore) -> None:
    src, dst, data, files = await _released_replica(open_store, 8)
    await deliver(src, dst, 2, 5)
    assert list(dst.outside) == [(0, 8)] and dst.stored_bytes == 0
    assert await dst.get_range(0, 8) == data


async def test_odd_tail_released_then_appended_still_proves(open_store: OpenStore) -> None:
    store = await open_store()
    feed, data, files, _ = await _released(store, 5, 1000)
    more = entries(3)
    await feed.append(more)
    files.calls.clear()
    for k, e in enumerate(data + more):
        verify_range(feed.key, k, [e], await feed.proof(k))
    assert files.calls == []


async def test_a_rebuilder_not_ready_loses_nothing(open_store: OpenStore) -> None:
    store = await open_store()
    feed, data, files, _ = await _released(store, 6, 1000)

    class NotYet:
        async def rebuild(self, feed_key: bytes, seqs: Sequence[int],
                          leaves: Sequence[bytes | None]) -> list[bytes | None]:
            raise RebuildUnavailableError("starting")

    store.set_rebuilder("g", NotYet())
    with pytest.raises(RebuildUnavailableError):
        await feed.get_range(0, 6)
    assert list(feed.outside) == [(0, 6)] and list(feed.have) == [(0, 6)] and not feed.cleared
    more = await store.create_feed("g")
    await more.append(data)
    assert await more.release([(0, 6)]) == 0
    store.set_rebuilder("g", files)
    assert await feed.get_range(0, 6) == data


async def test_restore_stores_released_entries_again(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "s") as store:
        feed, data, files, freed = await _released(store, 10, BIG // 2)
        stored = feed.stored_bytes
        files.copy[(feed.key, 7)] = b"the file changed before we could"
        restored = await feed.restore([2, 3, 7, 9])
        assert restored == sum(len(data[k]) for k in (2, 3, 9))
        assert list(feed.outside) == [(0, 2), (4, 7), (8, 9)] and 7 in feed.cleared and 7 not in feed.have
        assert feed.stored_bytes == stored + restored
        files.copy.clear()  # the files are gone: restored entries need no rebuilder
        assert await feed.get_range(2, 4) == data[2:4] and await feed.get(9) == data[9]
    async with await Store.open(tmp_path / "s") as store:
        feed = store.feeds()[0]
        assert list(feed.outside) == [(0, 2), (4, 7), (8, 9)] and feed.stored_bytes == stored + restored
        assert await feed.get(3) == data[3]
        verify_range(feed.key, 2, data[2:4], await feed.proof(2, 4))


async def test_a_lost_replica_entry_is_missing_but_not_cleared(open_store: OpenStore) -> None:
    """A replica's entry lost here was not dropped on purpose: it leaves have but not into
    cleared, so the replicator fetches it back; a put stores it again, as a stored entry."""
    src, dst, data, files = await _released_replica(open_store, 6)
    files.copy[(src.key, 3)] = b"changed"
    with pytest.raises(EntryMissingError):
        await dst.get(3)
    assert 3 not in dst.have and not dst.cleared and 3 not in dst.outside
    await deliver(src, dst, 3, 4)
    assert 3 in dst.have and 3 not in dst.outside and await dst.get(3) == data[3]


async def test_prefixes_read_the_first_bytes_of_stored_entries_and_nothing_of_outside_ones(
    open_store: OpenStore,
) -> None:
    """What the epoch scan reads (``Feed.prefixes``): inline and blob-file entries give their
    first bytes without the rest; an entry held outside the store gives b"" and is not rebuilt."""
    store = await open_store()
    files = Files()
    store.set_rebuilder("g", files)
    feed = await store.create_feed("g")
    small, big = b"small entry bytes", os.urandom(64 * 1024)
    await feed.append([small, big, b"x"])
    files.keep(feed.key, [small, big, b"x"])
    assert await feed.prefixes(0, 3, 8) == [(0, small[:8]), (1, big[:8]), (2, b"x")]
    assert await feed.release([(1, 2)]) == len(big)
    calls = len(files.calls)
    assert await feed.prefixes(0, 3, 8) == [(0, small[:8]), (1, b""), (2, b"x")]
    assert len(files.calls) == calls  # nothing rebuilt for a prefix


async def test_release_and_restore_batches_are_bounded_in_bytes(open_store: OpenStore,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch's stored and rebuilt bytes are in memory together: each rebuild a release or a
    restore asks for holds at most ``BATCH_BYTES`` of entries (an entry larger goes alone) and
    ``BATCH`` entries, whatever the number of entries released."""
    monkeypatch.setattr(outside, "BATCH_BYTES", 10_000)
    monkeypatch.setattr(outside, "BATCH", 4)
    store = await open_store()
    files = Files()
    store.set_rebuilder("g", files)
    feed = await store.create_feed("g")
    data = entries(30, 3000) + entries(1, 20_000) + entries(9, 500)
    await feed.append(data)
    files.keep(feed.key, data)

    def sizes(calls: list[tuple[bytes, tuple[int, ...]]]) -> list[list[int]]:
        return [[len(data[s]) for s in seqs] for _, seqs in calls]

    assert await feed.release([(0, 40)]) == sum(map(len, data))
    assert list(feed.outside) == [(0, 40)]
    released = sizes(files.calls)
    assert [s for _, seqs in files.calls for s in seqs] == list(range(40))  # each once, in order
    assert released == [[3004] * 3] * 10 + [[20_004]] + [[504] * 4, [504] * 4, [504]]
    files.calls.clear()
    assert await feed.restore(list(range(40))) == sum(map(len, data))
    restored = sizes(files.calls)
    assert all(len(b) <= 4 and (sum(b) <= 10_000 or len(b) == 1) for b in restored), restored
    assert not feed.outside and await feed.get_range(0, 40) == data


async def test_an_append_can_put_entries_outside_at_once(tmp_path: Path) -> None:
    """``append(outside=)``: the rebuilder holds those entries already (a member's file), so
    their rows keep only the size, no data is written for them, and everything else works as
    after a release: have, proofs (no rebuild), reads that rebuild and verify, a replica that
    verifies them, small entries beside them (whose pair hashes are otherwise recomputed), and
    a reopen."""
    async with await Store.open(tmp_path / "s") as store:
        files = Files()
        store.set_rebuilder("g", files)
        feed = await store.create_feed("g")
        data = [*entries(3, 20_000), b"small op", *entries(2, 300), *entries(1, BIG)]
        files.keep(feed.key, data)
        aside = [0, 1, 2, 4, 6]  # entries 3 and 5 (small) are stored
        await feed.append(data, outside=aside)
        assert list(feed.have) == [(0, 7)] and list(feed.outside) == [(0, 3), (4, 5), (6, 7)]
        held = sum(len(data[k]) for k in aside)
        assert feed.outside_bytes == held and feed.stored_bytes == sum(map(len, data)) - held
        rows = await store.read("SELECT key & 63, data IS NULL AND blob_offset IS NULL FROM entries ORDER BY key")
        assert [tuple(r) for r in rows] == [(k, int(k in aside)) for k in range(7)]
        files.calls.clear()
        for k in range(7):
            verify_range(feed.key, k, [data[k]], await feed.proof(k))  # proofs need no rebuild
        assert files.calls == []
        assert await feed.get_range(0, 7) == data
        assert {s for _, seqs in files.calls for s in seqs} == set(aside)
        other = await Store.open(tmp_path / "r")
        async with other:
            dst = await other.open_feed(feed.key)
            await deliver(feed, dst, 0, 7)
            assert await dst.get_range(0, 7) == data
        files.copy[(feed.key, 1)] = b"changed on disk"
        with pytest.raises(EntryMissingError):
            await feed.get(1)
        assert 1 not in feed.have and 1 in feed.cleared  # lost here, never answered wrong
    async with await Store.open(tmp_path / "s") as store:
        feed = store.feeds()[0]
        assert list(feed.outside) == [(0, 1), (2, 3), (4, 5), (6, 7)] and 1 in feed.cleared


async def test_an_append_without_a_rebuilder_stores_everything(open_store: OpenStore) -> None:
    store = await open_store()
    feed = await store.create_feed("g")
    data = entries(4, 20_000)
    await feed.append(data, outside=[0, 1, 2, 3])
    assert not feed.outside and feed.stored_bytes == sum(map(len, data))
    assert await feed.get_range(0, 4) == data
