"""Store: opening, feeds and namespaces, key import, read-only and damaged databases, and the
error paths of the writer (full disk, aborted appends)."""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from storage import Store, verify_range
from storage.blobs import BlobFile
from storage.errors import (
    FeedNotFoundError,
    StorageError,
    StoreClosedError,
    StoreCorruptError,
    StoreFullError,
    StoreReadOnlyError,
    WriteAbortedError,
)

from .conftest import OpenStore, deliver


async def test_feeds_and_namespaces(open_store: OpenStore, tmp_path: Path) -> None:
    store = await open_store("s")
    assert store.path == tmp_path / "s" / "cobox.db"
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    a = await store.create_feed("alpha")
    b = await store.create_feed("beta")
    c = await store.create_feed("alpha")
    d = await store.create_feed()
    other = nacl.signing.SigningKey.generate().verify_key
    r = await store.open_feed(bytes(other), "beta")
    assert not r.writable and r.namespace == "beta"
    assert await store.open_feed(bytes(other)) is r
    assert await store.open_feed(a.key) is a
    assert store.feeds() == [a, b, c, d, r]
    assert store.feeds("alpha") == [a, c]
    assert store.feeds("beta") == [b, r]
    assert store.feeds("") == [d]
    assert store.feeds("nope") == []
    assert store.feed(b.key) is b
    with pytest.raises(FeedNotFoundError):
        store.feed(bytes(32))
    with pytest.raises(ValueError):
        await store.open_feed(b"short")
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreClosedError):
        await a.append([b"x"])
    with pytest.raises(StoreClosedError):
        await a.get(0)

    store = await open_store("s")
    assert [f.key for f in store.feeds("alpha")] == [a.key, c.key]
    assert [f.key for f in store.feeds("beta")] == [b.key, r.key]
    assert [f.writable for f in store.feeds()] == [True, True, True, True, False]


async def test_open_by_file_path(open_store: OpenStore, tmp_path: Path) -> None:
    store = await open_store("x.db")
    assert store.path == tmp_path / "x.db"
    await (await store.create_feed()).append([b"a"])
    await store.close()
    store = await open_store("x.db")
    assert store.feeds()[0].length == 1


async def test_concurrent_open_feed_of_one_key(open_store: OpenStore) -> None:
    """Two tasks opening the same unknown feed at once (two peers announcing it) both get the
    one replica; neither fails, nor do unrelated appends committed in the same batch."""
    store = await open_store()
    mine = await store.create_feed()
    key = bytes(nacl.signing.SigningKey.generate().verify_key)
    results = await asyncio.gather(
        store.open_feed(key), store.open_feed(key), mine.append([b"unrelated"]),
        return_exceptions=True,
    )
    assert not any(isinstance(x, BaseException) for x in results), results
    assert results[0] is results[1] is store.feed(key)
    assert mine.length == 1


async def test_import_feed(open_store: OpenStore) -> None:
    s1 = await open_store("a")
    src = await s1.create_feed("g")
    await src.append([b"a"])
    seed = bytes(src._signer)  # type: ignore[arg-type]
    s2 = await open_store("b")
    copy = await s2.import_feed(src.key, seed, "g")
    assert copy.writable and copy.key == src.key and copy.namespace == "g" and copy.length == 0
    assert s2.feeds("g") == [copy]
    with pytest.raises(ValueError):
        await s2.import_feed(src.key, seed)  # already stored
    with pytest.raises(ValueError):
        await s2.import_feed(bytes(32), seed)  # key pair does not match
    with pytest.raises(ValueError):
        await s2.import_feed(src.key, seed[:31])
    await copy.append([b"a"])
    assert copy.signed == src.signed  # same key, same entries: same signed tree
    await s2.close()
    s2 = await open_store("b")
    assert s2.feed(src.key).writable


async def test_readonly_store(open_store: OpenStore) -> None:
    rw = await open_store("s")
    feed = await rw.create_feed("ns")
    entries = [bytes([k]) * k for k in range(20)]
    await feed.append(entries)
    replica = await rw.open_feed(bytes(nacl.signing.SigningKey.generate().verify_key))
    await rw.close()

    ro = await open_store("s", readonly=True)
    f = ro.feed(feed.key)
    assert f.length == 20 and f.namespace == "ns"
    assert await f.get_range(0, 20) == entries
    verify_range(f.key, 0, entries, await f.proof(0, 20))
    with pytest.raises(StoreReadOnlyError):
        await f.append([b"x"])
    with pytest.raises(StoreReadOnlyError):
        await ro.create_feed()
    with pytest.raises(StoreReadOnlyError):
        await ro.open_feed(bytes(nacl.signing.SigningKey.generate().verify_key))
    assert await ro.open_feed(replica.key) is ro.feed(replica.key)
    # A read-only store can still serve a replica elsewhere.
    other = await (await open_store("o")).open_feed(f.key)
    await deliver(f, other, 3, 9)
    assert await other.get_range(3, 9) == entries[3:9]


async def test_readonly_replica_refuses_verified_puts_at_once(open_store: OpenStore) -> None:
    """A read-only store's writer never runs: a put (or a fork record) queued on it used to wait
    forever. It is refused with StoreReadOnlyError, and nothing is claimed by the refused put."""
    src = await (await open_store("w")).create_feed()
    await src.append([b"a", b"b", b"c", b"d"])
    rw = await open_store("r")
    await deliver(src, (await rw.open_feed(src.key)), 0, 2)
    await rw.close()
    ro = await open_store("r", readonly=True)
    replica = ro.feed(src.key)
    with pytest.raises(StoreReadOnlyError):
        await asyncio.wait_for(deliver(src, replica, 2, 4), 10)
    with pytest.raises(StoreReadOnlyError):
        await asyncio.wait_for(ro.put_record("scope", "k", b"v"), 10)
    assert replica.length == 4 and list(replica.have) == [(0, 2)]  # signed length 4, two entries held
    assert await replica.get_range(0, 2) == [b"a", b"b"]


async def test_readonly_store_sees_live_writes(open_store: OpenStore) -> None:
    rw = await open_store("s")
    feed = await rw.create_feed()
    await feed.append([b"a"])
    ro = await open_store("s", readonly=True)
    assert ro.feed(feed.key).length == 1
    await feed.append([b"b"])  # the writer keeps working while a reader is open
    assert await rw.feed(feed.key).get(1) == b"b"


def _aiosqlite_threads() -> int:
    return sum(1 for t in threading.enumerate() if "_connection_worker_thread" in t.name)


async def _no_thread_leaked(before: int) -> bool:
    """Connections closed by earlier tests may still be stopping their threads: poll."""
    for _ in range(100):
        if _aiosqlite_threads() <= before:
            return True
        await asyncio.sleep(0.01)
    return False


@pytest.mark.parametrize("readonly", [False, True])
async def test_not_a_database(tmp_path: Path, readonly: bool) -> None:
    path = tmp_path / "junk.db"
    junk = b"this is not a database, it is my thesis\n" * 200
    path.write_bytes(junk)
    threads = _aiosqlite_threads()
    with pytest.raises(StoreCorruptError) as info:
        await Store.open(path, readonly=readonly)
    assert "not a cobox store" in str(info.value) or "not a database" in str(info.value)
    assert path.read_bytes() == junk
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.db"]
    assert await _no_thread_leaked(threads), "a connection was left open"


@pytest.mark.parametrize("readonly", [False, True])
async def test_foreign_sqlite_database_is_refused(tmp_path: Path, readonly: bool) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO photos (name) VALUES ('cat.jpg')")
    conn.close()
    before = path.read_bytes()
    threads = _aiosqlite_threads()
    with pytest.raises(StoreCorruptError, match="not a cobox store"):
        await Store.open(path, readonly=readonly)
    assert path.read_bytes() == before
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert names == {"photos"}
    assert await _no_thread_leaked(threads), "a connection was left open"


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s")
    await store.close()
    with sqlite3.connect(store.path) as conn:
        conn.execute("PRAGMA user_version = 999")
    conn.close()
    with pytest.raises(StoreCorruptError, match="newer"):
        await Store.open(tmp_path / "s")


async def test_readonly_open_of_missing_store(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        await Store.open(tmp_path / "missing", readonly=True)
    assert not (tmp_path / "missing").exists()


# -- a full disk ---------------------------------------------------------------------------------


async def _limit_pages(store: Store, extra: int) -> None:
    (pages,), = await store._writer_conn.execute_fetchall("PRAGMA page_count")
    await store._writer_conn.execute_fetchall(f"PRAGMA max_page_count = {pages + extra}")


async def test_full_disk(open_store: OpenStore) -> None:
    store = await open_store("s")
    feed = await store.create_feed()
    entries = [bytes([k]) * 300 for k in range(40)]
    for k in range(0, 40, 4):
        await feed.append(entries[k:k + 4])
    await _limit_pages(store, 2)
    with pytest.raises(StoreFullError):
        await feed.append([bytes(6000)] * 4)
    with pytest.raises(StoreFullError):
        await feed.append([bytes(6000)] * 12)
    assert feed.length == 40
    assert await feed.get_range(0, 40) == entries
    verify_range(feed.key, 0, entries, await feed.proof(0, 40))

    await store._writer_conn.execute_fetchall("PRAGMA max_page_count = 1073741823")
    assert await feed.append([b"after"]) == 41
    assert await feed.append([b"more", b"still"]) == 43
    everything = [*entries, b"after", b"more", b"still"]
    assert await feed.get_range(0, 43) == everything
    verify_range(feed.key, 0, everything, await feed.proof(0, 43))
    await store.close()
    store = await open_store("s")
    feed = store.feed(feed.key)
    assert feed.length == 43 and list(feed.have) == [(0, 43)]
    assert await feed.get_range(0, 43) == everything
    assert await feed.append([b"x"]) == 44


async def _check_no_gaps(store: Store, feeds: list) -> None:  # type: ignore[type-arg]
    for f in feeds:
        # Every committed entry is stored, and the signed tree covers exactly them.
        assert list(f.have) == ([(0, f.length)] if f.length else [])
        data = await f.get_range(0, f.length)
        verify_range(f.key, 0, data, await f.proof(0, f.length))
        (count,), = await store.read(
            "SELECT COUNT(*) FROM entries WHERE key >> 42 = ?", (f.id,))
        assert count == f.length


async def test_appends_queued_behind_a_failed_one_are_aborted(open_store: OpenStore) -> None:
    store = await open_store("s")
    feeds = [await store.create_feed() for _ in range(3)]
    for f in feeds:
        await f.append([b"base"])
    await _limit_pages(store, 3)
    # One big append per feed goes to the writer first...
    big = [asyncio.ensure_future(f.append([bytes(6000)] * 9)) for f in feeds]
    for _ in range(5):
        await asyncio.sleep(0)
    # ...and small ones, built on top of it, queue while it is being written.
    small = [asyncio.ensure_future(f.append([b"small"])) for f in feeds for _ in range(3)]
    big_results = await asyncio.gather(*big, return_exceptions=True)
    small_results = await asyncio.gather(*small, return_exceptions=True)
    assert all(isinstance(r, StoreFullError) for r in big_results), big_results
    assert all(isinstance(r, WriteAbortedError | StoreFullError) for r in small_results)
    assert any(isinstance(r, WriteAbortedError) for r in small_results), small_results
    assert [f.length for f in feeds] == [1, 1, 1]
    await _check_no_gaps(store, feeds)
    # The pending tree rolled back: the next append lands right after the committed ones.
    assert [await f.append([b"next"]) for f in feeds] == [2, 2, 2]
    await store._writer_conn.execute_fetchall("PRAGMA max_page_count = 1073741823")
    assert [await f.append([bytes(6000)] * 9) for f in feeds] == [11, 11, 11]
    await _check_no_gaps(store, feeds)


async def test_full_disk_with_waves_of_concurrent_appends(open_store: OpenStore) -> None:
    store = await open_store("s")
    feeds = [await store.create_feed() for _ in range(3)]
    for f in feeds:
        await f.append([b"base"])
    await _limit_pages(store, 6)
    tasks = []
    for wave in range(12):
        for f in feeds:
            tasks.append(asyncio.ensure_future(f.append([bytes([wave]) * 1500] * (wave % 3 + 1))))
        await asyncio.sleep(0)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors, "the limit was never hit"
    assert all(isinstance(e, StoreFullError | WriteAbortedError) for e in errors), errors
    assert any(not isinstance(r, BaseException) for r in results), "nothing fitted"
    await _check_no_gaps(store, feeds)
    await store._writer_conn.execute_fetchall("PRAGMA max_page_count = 1073741823")
    for f in feeds:
        before = f.length
        assert await f.append([b"next"]) == before + 1
        assert await f.get(before) == b"next"
    lengths = [f.length for f in feeds]
    await store.close()
    store = await open_store("s")
    feeds = [store.feed(f.key) for f in feeds]
    assert [f.length for f in feeds] == lengths
    await _check_no_gaps(store, feeds)


async def test_full_disk_on_replica_put(open_store: OpenStore) -> None:
    src = await (await open_store("w")).create_feed()
    await src.append([bytes(3000)] * 20)
    rs = await open_store("r")
    dst = await rs.open_feed(src.key)
    await deliver(src, dst, 0, 1)
    await _limit_pages(rs, 1)
    with pytest.raises(StoreFullError):
        await deliver(src, dst, 1, 20)
    assert list(dst.have) == [(0, 1)]
    await rs._writer_conn.execute_fetchall("PRAGMA max_page_count = 1073741823")
    await deliver(src, dst, 1, 20)
    assert list(dst.have) == [(0, 20)]


async def test_large_entries_live_in_the_blob_file_and_survive_reopen(open_store: OpenStore) -> None:
    store = await open_store("s")
    feed = await store.create_feed()
    entries = [bytes([k]) * (5000 + k * 4000) for k in range(6)]  # some inline, some in blobs
    await feed.append(entries)
    (inline,), = await store.read("SELECT COUNT(*) FROM entries WHERE data IS NOT NULL")
    assert 0 < inline < len(entries)
    assert await feed.get_range(0, 6) == entries
    blob_path = store.path.with_suffix(".blobs")
    assert stat.S_IMODE(blob_path.stat().st_mode) == 0o600
    # Debris past the committed end (a transaction that never committed) is cut at open.
    size = blob_path.stat().st_size
    await store.close()
    with open(blob_path, "ab") as f:
        f.write(b"debris" * 1000)
    store = await open_store("s")
    assert blob_path.stat().st_size == size
    feed = store.feed(feed.key)
    assert await feed.get_range(0, 6) == entries
    assert await feed.append([bytes(20_000)]) == 7
    assert await feed.get(6) == bytes(20_000)


async def test_blob_file_out_of_space(open_store: OpenStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store = await open_store("s")
    feed = await store.create_feed()
    await feed.append([bytes(10_000)])

    def no_space(*args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr("storage.blobs.os.pwritev", no_space)
        with pytest.raises(StoreFullError):
            await feed.append([b"small", bytes(10_000)])
    assert feed.length == 1
    assert await feed.append([b"small", bytes([7]) * 10_000]) == 3
    assert await feed.get_range(0, 3) == [bytes(10_000), b"small", bytes([7]) * 10_000]


async def test_records_round_trip_and_survive_reopen(open_store: OpenStore) -> None:
    store = await open_store("s")
    await store.put_record("groups", "friends", b"one")
    await store.put_record("groups", "work", b"two")
    await store.put_record("other", "friends", b"three")
    await store.put_record("groups", "friends", b"updated")
    assert await store.records("groups") == {"friends": b"updated", "work": b"two"}
    await store.delete_record("groups", "work")
    await store.close()
    store = await open_store("s")
    assert await store.records("groups") == {"friends": b"updated"}
    assert await store.records("other") == {"friends": b"three"}


def round_trips(conn: Any, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The calls made from now on to ``conn``'s worker thread (aiosqlite's ``_execute``)."""
    trips: list[object] = []
    real_execute = conn._execute

    async def counting(fn: object, *args: object) -> object:
        trips.append(fn)
        return await real_execute(fn, *args)

    monkeypatch.setattr(conn, "_execute", counting)
    return trips


async def test_a_commit_is_one_round_trip_with_the_blob_write_off_the_loop(
        open_store: OpenStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store = await open_store("s")
    feed = await store.create_feed()
    await feed.append([b"first"])
    conn = store._writer_conn
    trips = round_trips(conn, monkeypatch)
    threads: list[threading.Thread] = []
    real_append = BlobFile.append

    def append(self: BlobFile, blobs: list[bytes]) -> list[int]:
        threads.append(threading.current_thread())
        return real_append(self, blobs)

    monkeypatch.setattr(BlobFile, "append", append)
    entries = [b"small", bytes([1]) * 20_000, bytes([2]) * 30_000]
    await feed.append(entries)
    assert len(trips) == 1  # blob bytes, BEGIN, every statement and COMMIT together
    assert threads and threads[0] is not threading.current_thread()
    assert await feed.get_range(1, 4) == entries


async def test_a_range_read_is_one_round_trip(open_store: OpenStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store = await open_store("s")
    feed = await store.create_feed()
    entries = [b"small", bytes([1]) * 20_000, bytes([2]) * 30_000, b"tiny", bytes([3]) * 9000]
    await feed.append(entries)
    conn = store._reader
    trips = round_trips(conn, monkeypatch)
    assert await feed.get_range(0, 5) == entries
    assert len(trips) == 1
    trips.clear()
    assert await feed.get_range(0, 5, max_bytes=20_010) == entries[:2]  # the longest prefix that fits
    assert await feed.get_range(2, 5, max_bytes=10) == entries[2:3]  # at least one entry
    assert await feed.get_range(3, 5, max_bytes=None) == entries[3:]
    assert len(trips) == 3


async def test_a_checkpoint_syncs_the_blob_file_first_in_one_round_trip(
        open_store: OpenStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store = await open_store("s")
    feed = await store.create_feed()
    await feed.append([bytes([1]) * 20_000])
    conn = store._writer_conn
    trips = round_trips(conn, monkeypatch)
    synced: list[threading.Thread] = []
    monkeypatch.setattr(BlobFile, "sync", lambda self: synced.append(threading.current_thread()))
    assert await store.writer.checkpoint()
    assert len(trips) == 1 and synced == [conn._thread]  # the connection's own thread: no second hop
