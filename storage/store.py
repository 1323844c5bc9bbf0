"""The store: every feed of a data directory in one SQLite database.

Theory of operation
-------------------
``Store.open(path)`` opens (or creates) the database, loads every feed's public state (keys,
namespace, longest signed tree, roots, which entries are stored) into memory and starts the one
writer task. Feeds are then found by public key (:meth:`Store.feed`) or listed by namespace
(:meth:`Store.feeds`); :meth:`Store.create_feed` makes a writable feed with a new Ed25519
keypair, :meth:`Store.open_feed` a replica of someone else's feed.

Secret keys live in the ``feeds`` table so that a restart reopens writable feeds; the database
file is created with mode 0600 and no key is ever logged or shown in a repr.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import aiosqlite
import nacl.signing

from . import db
from .blobs import BlobFile
from .errors import FeedNotFoundError, StorageError, StoreClosedError, StoreReadOnlyError
from .feed import KEY_SHIFT, Feed
from .proof import SignedTree
from .ranges import RangeSet

DB_FILENAME = "cobox.db"
MAX_FEEDS = 1 << 21
_SEQ_MASK = (1 << KEY_SHIFT) - 1
_MAX_READ_PARAMS = 900


class Store:
    def __init__(self, path: Path, writer_conn: aiosqlite.Connection, reader: aiosqlite.Connection,
                 readonly: bool) -> None:
        self.path = path
        self.readonly = readonly
        self._writer_conn = writer_conn
        self._reader = reader
        self.blobs: BlobFile | None = None
        self.writer: db.Writer
        self._feeds: dict[bytes, Feed] = {}
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
        store = cls(p, writer_conn, reader, readonly)
        try:
            (end,), = await store.read("SELECT value FROM meta WHERE key = 'blob_end'")
            store.blobs = BlobFile(p.with_suffix(".blobs"), end, readonly=readonly,
                                   sync_each_write=durability == "full")
            store.writer = db.Writer(writer_conn, store.blobs)
            await store._load()
        except BaseException:
            if store.blobs is not None:
                store.blobs.close()
            await writer_conn.close()
            await reader.close()
            raise
        if not readonly:
            store.writer.start()
        return store

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self.writer.close()
        finally:
            await self._writer_conn.close()
            await self._reader.close()
            if self.blobs is not None:
                self.blobs.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def check_writable(self) -> None:
        if self._closed:
            raise StoreClosedError("the store is closed")
        if self.readonly:
            raise StoreReadOnlyError(f"{self.path} is open read-only")

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
        if feed_id >= MAX_FEEDS:
            raise StorageError(f"a store holds at most {MAX_FEEDS - 1} feeds")
        self._next_id += 1
        feed = Feed(self, feed_id, public_key, secret_key, namespace, None, RangeSet(), False)

        def on_commit() -> None:
            self._feeds[public_key] = feed

        await self.writer.submit(db.WriteJob(
            statements=[(
                "INSERT INTO feeds (id, public_key, secret_key, namespace, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(feed_id, public_key, secret_key, namespace, time.time())],
            )],
            on_commit=on_commit,
        ))
        return feed

    async def _load(self) -> None:
        feeds = await self.read(
            "SELECT f.id, f.public_key, f.secret_key, f.namespace, f.forked, "
            "s.length, s.tree_hash, s.signature FROM feeds f "
            "LEFT JOIN signatures s ON s.feed_id = f.id ORDER BY f.id"
        )
        ranges: dict[int, RangeSet] = {}
        # Gaps and islands: consecutive keys of one feed share (key - row_number).
        for feed_id, lo, hi in await self.read(
            "SELECT key >> ?1, MIN(key & ?2), MAX(key & ?2) FROM ("
            "  SELECT key, key - ROW_NUMBER() OVER (ORDER BY key) AS island FROM entries"
            ") GROUP BY key >> ?1, island",
            (KEY_SHIFT, _SEQ_MASK),
        ):
            ranges.setdefault(feed_id, RangeSet()).add(lo, hi + 1)
        sizes = dict(await self.read(
            "SELECT key >> ?, SUM(COALESCE(blob_size, length(data))) FROM entries GROUP BY key >> ?",
            (KEY_SHIFT, KEY_SHIFT),
        ))
        for feed_id, pk, sk, namespace, forked, length, root_hash, signature in feeds:
            signed = SignedTree(length, root_hash, signature) if length is not None else None
            feed = Feed(self, feed_id, pk, sk, namespace, signed, ranges.get(feed_id, RangeSet()),
                        bool(forked))
            feed.stored_bytes = sizes.get(feed_id, 0) or 0
            if signed is not None:
                await feed.load_roots()
            self._feeds[pk] = feed
            self._next_id = max(self._next_id, feed_id + 1)

    # -- reads ------------------------------------------------------------------------------

    async def read(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        if self._closed:
            raise StoreClosedError("the store is closed")
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.Error as e:
            raise db.map_error(e) from None

    def entry_data(self, row: Sequence[object]) -> bytes:
        """An entry's bytes from its ``(data, blob_offset, blob_size)`` row."""
        data, offset, size = row
        if data is not None:
            return data  # type: ignore[return-value]
        assert self.blobs is not None
        return self.blobs.read(offset, size)  # type: ignore[arg-type]

    async def read_nodes(self, feed_id: int, indices: Iterable[int]) -> dict[int, bytes]:
        """The stored hashes of the given tree nodes of a feed (missing ones are left out)."""
        keys = [(feed_id << KEY_SHIFT) | i for i in indices]
        out: dict[int, bytes] = {}
        for k in range(0, len(keys), _MAX_READ_PARAMS):
            chunk = keys[k:k + _MAX_READ_PARAMS]
            marks = ",".join("?" * len(chunk))
            for key, h in await self.read(f"SELECT key, hash FROM nodes WHERE key IN ({marks})", chunk):
                out[key & _SEQ_MASK] = h
        return out

    async def read_nodes_between(self, feed_id: int, lo: int, hi: int) -> dict[int, bytes]:
        """The stored nodes of a feed with indices in ``[lo, hi]``."""
        base = feed_id << KEY_SHIFT
        rows = await self.read(
            "SELECT key, hash FROM nodes WHERE key BETWEEN ? AND ?", (base | lo, base | hi)
        )
        return {key & _SEQ_MASK: h for key, h in rows}

    # -- records ----------------------------------------------------------------------------

    async def put_record(self, scope: str, key: str, value: bytes) -> None:
        """Store a small opaque record (the layers above keep their metadata here)."""
        self.check_writable()
        await self.writer.submit(db.WriteJob(statements=[(
            "INSERT INTO records (scope, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value",
            [(scope, key, value)],
        )]))

    async def delete_record(self, scope: str, key: str) -> None:
        self.check_writable()
        await self.writer.submit(db.WriteJob(statements=[(
            "DELETE FROM records WHERE scope = ? AND key = ?", [(scope, key)],
        )]))

    async def records(self, scope: str) -> dict[str, bytes]:
        rows = await self.read("SELECT key, value FROM records WHERE scope = ? ORDER BY key", (scope,))
        return {k: v for k, v in rows}

    async def forks(self, feed: Feed) -> list[dict[str, object]]:
        """The fork evidence recorded for a feed."""
        rows = await self.read(
            "SELECT length_a, tree_hash_a, signature_a, length_b, tree_hash_b, signature_b, "
            "node_index, hash_a, hash_b, detected_at FROM forks WHERE feed_id = ? ORDER BY id",
            (feed.id,),
        )
        names = ("length_a", "tree_hash_a", "signature_a", "length_b", "tree_hash_b",
                 "signature_b", "node_index", "hash_a", "hash_b", "detected_at")
        return [dict(zip(names, r)) for r in rows]
