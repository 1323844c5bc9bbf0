"""The store: every feed of a data directory in one SQLite database.

Theory of operation
-------------------
``Store.open(path)`` opens (or creates) the database, loads every feed's public state (keys,
namespace, longest signed tree, roots, which entries are stored) into memory and starts the one
writer task. Feeds are then found by public key (:meth:`Store.feed`) or listed by namespace
(:meth:`Store.feeds`); :meth:`Store.create_feed` makes a writable feed with a new Ed25519
keypair, :meth:`Store.open_feed` a replica of someone else's feed.

The store holds no SQL and knows nothing of the key layout: both live in :mod:`storage.rows`,
which the store and its feeds share (``self.rows``). Feeds do not know the store.

:meth:`Store.delete_feed` removes a feed and everything stored for it (leaving a group); with
``Feed.clear`` it is the store's only delete path (``Feed.release`` drops data too, but keeps the
entries held: :meth:`Store.set_rebuilder` names who rebuilds them). Both record the blob-file extents they free
and punch holes over them after the commit (``storage/blobs.py``); ``Store.open`` punches any a
crash left behind; where the file system cannot punch, ``Store.open`` compacts the blob file
instead once enough is reclaimable (``storage/compaction.py``). :meth:`Store.disk_use` says what
the store occupies.

Secret keys live in the ``feeds`` table so that a restart reopens writable feeds; the database
file is created with mode 0600 and no key is ever logged or shown in a repr.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import nacl.signing

from . import compaction, db, outside, rows
from .blobs import BlobFile
from .errors import FeedNotFoundError
from .feed import Feed
from .ranges import RangeSet

DB_FILENAME = "cobox.db"


@dataclass(frozen=True, slots=True)
class DiskUse:
    """What a store occupies: ``database`` and ``blobs`` are the bytes the file system has
    allocated to the database (with its WAL) and to the blob file; ``unreclaimed`` is blob-file
    space freed but not yet given back (a file system that cannot punch holes)."""

    database: int
    blobs: int
    unreclaimed: int

    @property
    def total(self) -> int:
        return self.database + self.blobs


class Store:
    def __init__(self, path: Path, writer_conn: aiosqlite.Connection, reader: aiosqlite.Connection,
                 blobs: BlobFile, readonly: bool) -> None:
        self.path = path
        self.readonly = readonly
        self._writer_conn = writer_conn
        self._reader = reader
        self.blobs = blobs
        self.writer = db.Writer(writer_conn, blobs)
        self.rows = rows.Rows(path, reader, self.writer, blobs, readonly=readonly)
        self._feeds: dict[bytes, Feed] = {}
        self._rebuilders = outside.Rebuilders()
        self._opening: dict[bytes, asyncio.Future[Feed]] = {}
        self._next_id = 1
        self._closed = False

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, readonly: bool = False, durability: str = "normal"
    ) -> Store:
        """Open the store at ``path``: a database file, or a directory that holds (or will
        hold) ``cobox.db``. ``durability`` is ``"normal"`` (survives any process crash; a power
        loss may lose the last seconds of writes) or ``"full"`` (every commit is synced)."""
        if durability not in ("normal", "full"):
            raise ValueError("durability is 'normal' or 'full'")
        p = Path(path)
        if p.is_dir() or (not p.suffix and not p.exists()):
            if not readonly:
                p.mkdir(parents=True, exist_ok=True)
            p = p / DB_FILENAME
        writer_conn, reader = await db.connect(p, readonly=readonly, durable=durability == "full")
        blobs: BlobFile | None = None
        try:
            end = await rows.read_blob_end(reader)
            blob_path = await compaction.settle(writer_conn, p.with_suffix(".blobs"), readonly=readonly)
            blobs = BlobFile(blob_path, end, readonly=readonly, sync_each_write=durability == "full")
            store = cls(p, writer_conn, reader, blobs, readonly)
            await store._load()
        except BaseException:
            if blobs is not None:
                blobs.close()
            await writer_conn.close()
            await reader.close()
            raise
        if not readonly:
            store.writer.start()
            try:
                await store.rows.reclaim()  # extents a crash left between a clear's commit and its punch
                if compaction.worth_it(await store.rows.unreclaimed(), blobs.end):
                    await compaction.compact(store)  # a file system that cannot punch holes
            except BaseException:
                await store.close()  # no connection thread left behind (it would hang the exit)
                raise
        return store

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.rows.closed = True
        try:
            await self.writer.close()
        finally:
            await self._writer_conn.close()
            await self._reader.close()
            self.blobs.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def check_writable(self) -> None:
        self.rows.check_writable()

    # -- feeds ------------------------------------------------------------------------------

    async def create_feed(self, namespace: str = "") -> Feed:
        """Create a writable feed with a fresh Ed25519 keypair."""
        signing = nacl.signing.SigningKey.generate()
        return await self._add_feed(bytes(signing.verify_key), bytes(signing), namespace)

    async def open_feed(self, public_key: bytes, namespace: str = "") -> Feed:
        """The feed with this public key, creating an empty replica if it is not stored yet."""
        if len(public_key) != 32:
            raise ValueError("a feed key is 32 bytes")
        feed = self._feeds.get(public_key)
        if feed is not None:
            return feed
        # Concurrent opens of one new feed (two peers offering it at once) share one insert.
        pending = self._opening.get(public_key)
        if pending is None:
            pending = asyncio.ensure_future(self._add_feed(bytes(public_key), None, namespace))
            self._opening[public_key] = pending
            pending.add_done_callback(lambda _: self._opening.pop(public_key, None))
        return await asyncio.shield(pending)

    async def import_feed(self, public_key: bytes, secret_key: bytes, namespace: str = "") -> Feed:
        """Add a writable feed from an existing keypair (``secret_key`` is the 32-byte Ed25519
        seed), e.g. to restore a device's feed from a backup of its keys."""
        if len(secret_key) != 32:
            raise ValueError("a feed secret key is a 32-byte Ed25519 seed")
        if bytes(nacl.signing.SigningKey(secret_key).verify_key) != public_key:
            raise ValueError("the secret key does not belong to this public key")
        if public_key in self._feeds or public_key in self._opening:
            raise ValueError(f"feed {public_key.hex()[:16]} is already in this store")
        return await self._add_feed(bytes(public_key), bytes(secret_key), namespace)

    def feed(self, public_key: bytes) -> Feed:
        try:
            return self._feeds[public_key]
        except KeyError:
            raise FeedNotFoundError(f"no feed {public_key.hex()[:16]} in this store") from None

    def feeds(self, namespace: str | None = None) -> list[Feed]:
        """Every feed, or those of one namespace, in creation order."""
        return [f for f in self._feeds.values() if namespace is None or f.namespace == namespace]

    async def _add_feed(self, public_key: bytes, secret_key: bytes | None, namespace: str) -> Feed:
        self.check_writable()
        feed_id = self._next_id
        self._next_id += 1
        feed = Feed(self.rows, rows.FeedRow(feed_id, public_key, secret_key, namespace, False, None, RangeSet(), 0),
                    self._rebuilders)

        def on_commit() -> None:
            self._feeds[public_key] = feed

        await self.rows.insert_feed(feed_id, public_key, secret_key, namespace, on_commit)
        return feed

    async def _load(self) -> None:
        for row in await self.rows.load_feeds():
            feed = Feed(self.rows, row, self._rebuilders)
            if row.signed is not None:
                await feed.load_roots()
            self._feeds[row.public_key] = feed
            self._next_id = max(self._next_id, row.id + 1)

    async def delete_feed(self, feed: Feed) -> None:
        """Delete ``feed`` and everything stored for it, and give the space back. The layers
        above stop replicating it first; afterwards ``feed(key)`` no longer finds it."""
        if self._feeds.get(feed.key) is not feed:
            raise FeedNotFoundError(f"no feed {feed.key.hex()[:16]} in this store")

        def on_commit() -> None:
            self._feeds.pop(feed.key, None)
            feed.have = RangeSet()
            feed.outside = RangeSet()
            feed.stored_bytes = feed.outside_bytes = 0

        async with feed._clear_lock:  # not between a clear's or a release's plan and its commit
            await self.rows.delete_feed(feed.id, on_commit=on_commit)

    def set_rebuilder(self, namespace: str, rebuilder: outside.Rebuilder | None) -> None:
        """Let the feeds of ``namespace`` hold entries outside the store, rebuilt on demand by
        ``rebuilder`` (``Feed.release``, :mod:`storage.outside`); None: no rebuilder (entries
        already outside are then lost at their next read)."""
        self._rebuilders.set(namespace, rebuilder)

    async def vacuum(self) -> None:
        """Give the database's free pages back to the file system (after large deletions)."""
        await self.rows.vacuum()

    async def disk_use(self) -> DiskUse:
        """The store's files as the file system allocates them (see :class:`DiskUse`)."""
        db_bytes = 0
        for suffix in ("", "-wal"):
            try:
                db_bytes += os.stat(f"{self.path}{suffix}").st_blocks * 512
            except FileNotFoundError:
                pass
        return DiskUse(db_bytes, self.blobs.allocated(), await self.rows.unreclaimed())

    async def blob_bytes(self) -> dict[bytes, int]:
        """The bytes each feed keeps in the blob file, by feed key."""
        by_id = await self.rows.blob_sizes()
        return {f.key: by_id.get(f.id, 0) for f in self._feeds.values()}

    # -- reads ------------------------------------------------------------------------------

    async def read(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        """Rows of a raw query (for tests and diagnostics; the layers above use the methods)."""
        return await self.rows.read(sql, params)

    # -- records ----------------------------------------------------------------------------

    def scope(self, name: str) -> rows.RecordScope:
        """A typed handle on the records of scope ``name``."""
        if not isinstance(name, str) or not name:
            raise ValueError("a record scope is a non-empty string")
        return rows.RecordScope(self.rows, name)

    async def put_record(self, scope: str, key: str, value: bytes) -> None:
        """Store a small opaque record (the layers above keep their metadata here)."""
        await self.rows.put_record(scope, key, value)

    async def put_records(self, scope: str, items: Sequence[tuple[str, bytes]]) -> None:
        """Store several records of ``scope`` at once (one commit): ``(key, value)`` pairs."""
        await self.rows.put_records(scope, items)

    async def delete_record(self, scope: str, key: str) -> None:
        await self.rows.delete_record(scope, key)

    async def delete_scope(self, scope: str) -> None:
        """Delete every record of ``scope``."""
        await self.rows.delete_scope(scope)

    async def scopes(self) -> list[str]:
        """The names of the scopes that hold records."""
        return await self.rows.scopes()

    async def records(self, scope: str) -> dict[str, bytes]:
        """Every record of ``scope``, by key."""
        return await self.rows.records(scope)

    async def record(self, scope: str, key: str) -> bytes | None:
        """One record, or None."""
        return await self.rows.record(scope, key)

    async def records_size(self, scope: str) -> int:
        """The total size of the values of ``scope``'s records."""
        return await self.rows.records_size(scope)

    async def forks(self, feed: Feed) -> list[dict[str, object]]:
        """The fork evidence recorded for a feed."""
        return await self.rows.forks(feed.id)
