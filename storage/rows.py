"""Rows: the one module that knows the store's SQL and its key layout.

Theory of operation
-------------------
Entries and tree nodes are keyed by one integer, ``(feed_id << KEY_SHIFT) | n`` (``n`` is a sequence number
for an entry, a flat-tree index for a node), so that their rows live in the tables' own rowid b-trees, one
feed's rows next to each other and in order (see ``sql/0001_feeds.sql``). Nothing outside this module builds
or takes apart such a key, and nothing outside it runs SQL (its text is in :mod:`storage.statements`; the
writer loop in ``db.py`` inserts the entries a job carries): :class:`Feed` and :class:`Store` speak to the
database only through :class:`Rows`.

Reads go to the reader connection and come back as Python values (bytes, dicts, frozen dataclasses). Writes
are built here as :class:`db.WriteJob` statements and handed to the one writer task; the caller's
``on_commit`` / ``on_abort`` callbacks run when the job is (or is not) on disk, so in-memory state never gets
ahead of the database.

The interface is small on purpose: a feed's tree (entries + nodes + signature, one job per append or verified
put), single and ranged entry reads, node reads by index or by index range, fork evidence, the feeds table,
and the opaque records the layers above keep. The two delete paths, clearing entries (``clear_entries``) and
deleting a feed (``delete_feed``), run alone in their transaction, record the blob extents they free in
``blob_free`` and give them back afterwards (``reclaim``, see ``storage/blobs.py``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from . import db
from . import statements as sql
from .blobs import BlobFile
from .errors import StorageError, StoreClosedError, StoreReadOnlyError
from .proof import SignedTree
from .ranges import RangeSet

KEY_SHIFT = 42
SEQ_MASK = (1 << KEY_SHIFT) - 1
MAX_FEEDS = 1 << 21  # feed ids stay below 2^21, so keys stay below 2^63
MAX_READ_PARAMS = 900  # below SQLite's default limit of host parameters per statement

T = TypeVar("T")

BLOB_PENDING = "blob_pending"  # 1 while a compacted blob file waits for its rename (storage/compaction.py)


def row_key(feed_id: int, n: int) -> int:
    """The key of entry ``n`` (or of tree node ``n``) of feed ``feed_id``."""
    return (feed_id << KEY_SHIFT) | n


@dataclass(frozen=True, slots=True)
class FeedRow:
    """One feed as stored: its keys, namespace, fork mark, longest signed tree, which entries
    are stored and their total size."""

    id: int
    public_key: bytes
    secret_key: bytes | None
    namespace: str
    forked: bool
    signed: SignedTree | None
    have: RangeSet
    stored_bytes: int
    cleared: RangeSet = field(default_factory=RangeSet)
    outside: RangeSet = field(default_factory=RangeSet)  # held, data released (storage/outside.py)
    outside_bytes: int = 0


@dataclass(frozen=True, slots=True)
class RecordScope:
    """The records of one scope: a typed handle the layers above keep instead of passing the
    scope's name to every call (``store.scope("groups")``). Values are opaque bytes."""

    rows: Rows
    name: str

    async def get(self, key: str) -> bytes | None:
        return await self.rows.record(self.name, key)

    async def all(self) -> dict[str, bytes]:
        """Every record of the scope, by key (in key order)."""
        return await self.rows.records(self.name)

    async def size(self) -> int:
        """The total size of the scope's values, in bytes."""
        return await self.rows.records_size(self.name)

    async def put(self, key: str, value: bytes) -> None:
        await self.rows.put_record(self.name, key, value)

    async def delete(self, key: str) -> None:
        await self.rows.delete_record(self.name, key)


async def read_blob_end(reader: aiosqlite.Connection) -> int:
    """The committed length of the blob file (read before the blob file is opened)."""
    try:
        rows = list(await reader.execute_fetchall(sql.BLOB_END))
    except sqlite3.Error as e:
        raise db.map_error(e) from None
    end: int = rows[0][0]
    return end


async def read_meta(conn: aiosqlite.Connection, key: str) -> int:
    """A store-wide value of ``meta`` (0 when it is not set), before the writer starts."""
    try:
        rows = list(await conn.execute_fetchall(sql.META, (key,)))
    except sqlite3.Error as e:
        raise db.map_error(e) from None
    return int(rows[0][0]) if rows else 0


async def clear_meta(conn: aiosqlite.Connection, key: str) -> None:
    """Delete a store-wide value on the writer connection, before the writer starts."""
    try:
        await conn.execute(sql.DELETE_META, (key,))
    except sqlite3.Error as e:
        raise db.map_error(e) from None


class Rows:
    """The database of one store, as the feeds and the store use it."""

    def __init__(self, path: Path, reader: aiosqlite.Connection, writer: db.Writer, blobs: BlobFile, *,
                 readonly: bool) -> None:
        self.path = path
        self._reader = reader
        self._writer = writer
        self._blobs = blobs
        self.readonly = readonly
        self.closed = False

    def check_writable(self) -> None:
        if self.closed:
            raise StoreClosedError("the store is closed")
        if self.readonly:
            raise StoreReadOnlyError(f"{self.path} is open read-only")

    def _submit(self, job: db.WriteJob) -> Coroutine[Any, Any, None]:
        """Hand ``job`` to the writer (await the result); a job refused here gets its
        ``on_abort`` like one that failed. Not a coroutine itself: the append path stays one
        coroutine frame deep."""
        try:
            self.check_writable()
        except StorageError:
            if job.on_abort is not None:
                job.on_abort()
            raise
        return self._writer.submit(job)

    # -- raw reads ----------------------------------------------------------------------------

    async def read(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        """Rows of a query on the reader connection (for this module, tests and diagnostics)."""
        if self.closed:
            raise StoreClosedError("the store is closed")
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.Error as e:
            raise db.map_error(e) from None

    async def _in_reader(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(reader's sqlite3 connection)`` in its thread: several queries in one round trip."""
        if self.closed:
            raise StoreClosedError("the store is closed")
        try:
            return await db.in_thread(self._reader, fn)
        except sqlite3.Error as e:
            raise db.map_error(e) from None

    def _data(self, row: Sequence[Any]) -> bytes | None:
        """An entry's bytes from its ``(data, blob_offset, blob_size)`` row; None for an entry
        held outside the store (both NULL)."""
        data: bytes | None = row[0]
        if data is not None:
            return data
        if row[1] is None:
            return None
        return self._blobs.read(row[1], row[2])

    # -- entries ------------------------------------------------------------------------------

    async def entry(self, feed_id: int, seq: int) -> bytes | None:
        """Entry ``seq`` of a feed, or None when it is not stored (or held outside the store)."""
        rows = await self.read(sql.ENTRY, ((feed_id << KEY_SHIFT) | seq,))
        return self._data(rows[0]) if rows else None

    async def entries(self, feed_id: int, start: int, end: int,
                      max_bytes: int | None = None) -> tuple[list[bytes], bool]:
        """The stored entries of ``[start, end)`` in order, cut (with ``max_bytes``) to the longest
        prefix of at least one entry whose total size fits; and whether every entry of that prefix
        was there (not missing, not held outside). The sizes and the rows are one round trip; the
        blob-file preads stay on the loop, as before (in the reader's thread each pread would hand
        the GIL to the loop and wait to take it back)."""
        base = feed_id << KEY_SHIFT

        def run(conn: sqlite3.Connection) -> tuple[list[Any], int]:
            stop = end
            if max_bytes is not None:
                total = 0
                for k, (size,) in enumerate(conn.execute(sql.ENTRY_SIZES, (base | start, base | end))):
                    total += size
                    if total > max_bytes and k > 0:
                        stop = start + k
                        break
            return conn.execute(sql.ENTRIES, (base | start, base | stop)).fetchall(), stop

        rows, stop = await self._in_reader(run)
        out = [d for r in rows if (d := self._data(r)) is not None]
        return out, len(out) == stop - start

    async def slots(self, feed_id: int, start: int, end: int) -> list[tuple[int, bytes | None]]:
        """``(seq, data)`` for every row of ``[start, end)``, in order; data None for an entry held
        outside the store (missing entries are left out)."""
        base = feed_id << KEY_SHIFT
        rows = await self.read(sql.SLOTS, (base | start, base | end))
        return [(row[0] & SEQ_MASK, self._data((row[1], row[2], row[3]))) for row in rows]

    async def prefixes(self, feed_id: int, start: int, end: int, n: int) -> list[tuple[int, bytes]]:
        """``(seq, first n bytes)`` of every row of ``[start, end)``, in order, without reading
        the rest of any entry (b"" for one held outside the store)."""
        base = feed_id << KEY_SHIFT
        out = []
        for key, head, offset in await self.read(sql.PREFIXES, (n, base | start, base | end)):
            if head is None:
                head = self._blobs.read(offset, n) if offset is not None else b""
            out.append((key & SEQ_MASK, bytes(head)))
        return out

    async def entry_sizes(self, feed_id: int, start: int, end: int) -> list[int]:
        """The sizes of the stored entries of ``[start, end)``, in order."""
        base = feed_id << KEY_SHIFT
        return [size for (size,) in await self.read(sql.ENTRY_SIZES, (base | start, base | end))]

    # -- tree nodes ---------------------------------------------------------------------------

    async def nodes(self, feed_id: int, indices: Iterable[int]) -> dict[int, bytes]:
        """The stored hashes of the given tree nodes of a feed (missing ones are left out)."""
        base = feed_id << KEY_SHIFT
        keys = [base | i for i in indices]
        out: dict[int, bytes] = {}
        for k in range(0, len(keys), MAX_READ_PARAMS):
            chunk = keys[k:k + MAX_READ_PARAMS]
            marks = ",".join("?" * len(chunk))
            for key, h in await self.read(f"SELECT key, hash FROM nodes WHERE key IN ({marks})", chunk):
                out[key & SEQ_MASK] = h
        return out

    async def nodes_between(self, feed_id: int, lo: int, hi: int, also: Sequence[int] = ()) -> dict[int, bytes]:
        """The stored nodes of a feed with indices in ``[lo, hi]`` and of ``also`` (looked up by
        key), in one read as long as ``also`` fits one statement."""
        base = feed_id << KEY_SHIFT
        if len(also) > MAX_READ_PARAMS - 2:
            return {**await self.nodes(feed_id, also), **await self.nodes_between(feed_id, lo, hi)}
        query = sql.NODES_BETWEEN
        if also:
            query += f" UNION ALL SELECT key, hash FROM nodes WHERE key IN ({','.join('?' * len(also))})"
        rows = await self.read(query, (base | lo, base | hi, *(base | i for i in also)))
        return {key & SEQ_MASK: h for key, h in rows}

    # -- writing a feed's tree ----------------------------------------------------------------

    def write_tree(
        self, feed_id: int, start: int, entries: Sequence[bytes], nodes: Iterable[tuple[int, bytes]],
        signed: SignedTree, *, on_commit: Callable[[], None], on_abort: Callable[[], None],
        is_current: Callable[[], bool] | None = None, outside: Sequence[int] = (),
    ) -> Coroutine[Any, Any, None]:
        """Store ``entries`` as ``start, start + 1, ...`` (those at positions ``outside`` as outside
        rows: size only), ``nodes`` (index, hash) and ``signed`` (if longer) in one awaitable job."""
        base, aside = feed_id << KEY_SHIFT, set(outside)
        statements: list[tuple[str, list[Any]]] = [
            (sql.INSERT_NODE, [(base | i, h) for i, h in nodes]),
            (sql.UPSERT_SIGNATURE, [(feed_id, signed.length, signed.tree_hash, signed.signature)])]
        if aside:
            statements.append((sql.INSERT_OUTSIDE, [(base | (start + k), len(entries[k])) for k in sorted(aside)]))
        return self._submit(db.WriteJob(
            statements=statements,
            entries=[(base | (start + k), e) for k, e in enumerate(entries) if k not in aside],
            on_commit=on_commit,
            on_abort=on_abort,
            is_current=is_current,
        ))

    # -- forks --------------------------------------------------------------------------------

    async def record_fork(
        self, feed_id: int, a: SignedTree, b: SignedTree, index: int | None, hash_a: bytes | None,
        hash_b: bytes | None, on_commit: Callable[[], None],
    ) -> None:
        """Keep the evidence that ``a`` and ``b`` conflict and mark the feed forked, in one job."""
        row = (feed_id, a.length, a.tree_hash, a.signature, b.length, b.tree_hash, b.signature,
               index, hash_a, hash_b, time.time())
        await self._submit(db.WriteJob(
            statements=[(sql.INSERT_FORK, [row]), (sql.MARK_FORKED, [(feed_id,)])], on_commit=on_commit,
        ))

    async def forks(self, feed_id: int) -> list[dict[str, object]]:
        """The fork evidence recorded for a feed, oldest first."""
        return [dict(zip(sql.FORK_FIELDS, r)) for r in await self.read(sql.FORKS, (feed_id,))]

    # -- feeds --------------------------------------------------------------------------------

    async def insert_feed(self, feed_id: int, public_key: bytes, secret_key: bytes | None, namespace: str,
                          on_commit: Callable[[], None]) -> None:
        if not 0 < feed_id < MAX_FEEDS:
            raise StorageError(f"a store holds at most {MAX_FEEDS - 1} feeds")
        await self._submit(db.WriteJob(
            statements=[(sql.INSERT_FEED, [(feed_id, public_key, secret_key, namespace, time.time())])],
            on_commit=on_commit,
        ))

    async def load_feeds(self) -> list[FeedRow]:
        """Every stored feed, in creation order."""
        have: dict[int, RangeSet] = {}
        for feed_id, lo, hi in await self.read(sql.ISLANDS, (KEY_SHIFT, SEQ_MASK)):
            have.setdefault(feed_id, RangeSet()).add(lo, hi + 1)
        sizes: dict[int, int] = {feed_id: size or 0 for feed_id, size in await self.read(sql.FEED_SIZES, (KEY_SHIFT,))}
        cleared: dict[int, RangeSet] = {}
        for feed_id, lo, hi in await self.read(sql.CLEARED):
            cleared.setdefault(feed_id, RangeSet()).add(lo, hi)
        outside: dict[int, RangeSet] = {}
        outside_sizes: dict[int, int] = {}
        for feed_id, lo, hi, size in await self.read(sql.OUTSIDE_ISLANDS, (KEY_SHIFT, SEQ_MASK)):
            outside.setdefault(feed_id, RangeSet()).add(lo, hi + 1)
            outside_sizes[feed_id] = outside_sizes.get(feed_id, 0) + int(size or 0)
        out = []
        for feed_id, pk, sk, namespace, forked, length, tree_hash, signature in await self.read(sql.FEEDS):
            signed = SignedTree(length, tree_hash, signature) if length is not None else None
            out.append(FeedRow(feed_id, pk, sk, namespace, bool(forked), signed,
                               have.get(feed_id, RangeSet()), sizes.get(feed_id, 0),
                               cleared.get(feed_id, RangeSet()), outside.get(feed_id, RangeSet()),
                               outside_sizes.get(feed_id, 0)))
        return out

    # -- clearing and deleting ----------------------------------------------------------------

    async def clear_entries(
        self, feed_id: int, ranges: Sequence[tuple[int, int]], nodes: Iterable[tuple[int, bytes]],
        cleared: RangeSet, *, on_commit: Callable[[], None],
    ) -> None:
        """Delete the entries of ``ranges`` of a feed, keep ``nodes`` (the tree nodes that were
        recomputed from those entries) and record ``cleared`` as the feed's cleared ranges, in
        one transaction of its own; then give the freed blob-file space back (:meth:`reclaim`)."""
        base = feed_id << KEY_SHIFT
        spans = [(base | s, base | e) for s, e in ranges]
        await self._submit(db.WriteJob(
            statements=[
                (sql.INSERT_NODE, [(base | i, h) for i, h in nodes]),
                (sql.FREE_BLOBS, spans),
                (sql.DELETE_ENTRIES, spans),
                (sql.DELETE_CLEARED, [(feed_id,)]),
                (sql.INSERT_CLEARED, [(feed_id, s, e) for s, e in cleared]),
            ],
            on_commit=on_commit, alone=True, durable=True,
        ))
        await self.reclaim()

    async def release_entries(
        self, feed_id: int, ranges: Sequence[tuple[int, int]], nodes: Iterable[tuple[int, bytes]], *,
        on_commit: Callable[[], None],
    ) -> None:
        """Turn the stored entries of ``ranges`` into outside rows (size kept, data dropped), keep
        ``nodes`` (their leaves and pair parents), and free their blob extents, in one transaction
        of its own; then give the blob-file space back (:meth:`reclaim`)."""
        base = feed_id << KEY_SHIFT
        spans = [(base | s, base | e) for s, e in ranges]
        await self._submit(db.WriteJob(
            statements=[
                (sql.INSERT_NODE, [(base | i, h) for i, h in nodes]),
                (sql.FREE_BLOBS, spans),
                (sql.RELEASE, spans),
            ],
            on_commit=on_commit, alone=True, durable=True,
        ))
        await self.reclaim()

    async def restore_entries(self, feed_id: int, entries: Sequence[tuple[int, bytes]], *,
                              on_commit: Callable[[], None], cleared: RangeSet | None = None) -> None:
        """Store again the data of outside or deleted rows (``(seq, data)``), replacing them,
        and record ``cleared`` as the feed's cleared ranges if given, in one transaction."""
        base = feed_id << KEY_SHIFT
        kept: list[tuple[str, Sequence[tuple[int, ...]]]] = [] if cleared is None else [
            (sql.DELETE_CLEARED, [(feed_id,)]), (sql.INSERT_CLEARED, [(feed_id, s, e) for s, e in cleared])]
        await self._submit(db.WriteJob(statements=kept, entries=[(base | s, d) for s, d in entries],
                                       on_commit=on_commit, alone=True, replace=True))

    async def delete_feed(self, feed_id: int, *, on_commit: Callable[[], None]) -> None:
        """Delete a feed and everything stored for it (entries, nodes, signature, fork evidence,
        cleared ranges) in one transaction; then give the space back."""
        span = [(feed_id << KEY_SHIFT, (feed_id + 1) << KEY_SHIFT)]
        await self._submit(db.WriteJob(
            statements=[
                (sql.FREE_BLOBS, span),
                (sql.DELETE_ENTRIES, span),
                (sql.DELETE_NODES, span),
                (sql.DELETE_CLEARED, [(feed_id,)]),
                (sql.DELETE_SIGNATURE, [(feed_id,)]),
                (sql.DELETE_FORKS, [(feed_id,)]),
                (sql.DELETE_FEED, [(feed_id,)]),
            ],
            on_commit=on_commit, alone=True, durable=True,
        ))
        await self.reclaim()

    async def reclaim(self) -> int:
        """Punch a hole over every blob-file extent in ``blob_free`` (a committed, made-durable
        deletion freed it) and forget the ones punched; return the bytes punched. Idempotent:
        run after every clear and when the store opens (a crash may have left some)."""
        if self.readonly:
            return 0
        punched: list[tuple[int]] = []
        total = 0
        # Touching extents are punched as one range: a block two of them share is wholly free
        # only together (punched one by one, each would only zero its part of it).
        runs: list[tuple[int, int, list[int]]] = []
        for offset, size in await self.read(sql.BLOB_FREE):
            if runs and runs[-1][0] + runs[-1][1] == offset:
                start, length, offsets = runs[-1]
                runs[-1] = (start, length + size, [*offsets, offset])
            else:
                runs.append((offset, size, [offset]))
        for start, length, offsets in runs:
            if not self._blobs.punch(start, length):
                break  # the file system cannot punch: the extents wait (counted as reclaimable)
            punched.extend((o,) for o in offsets)
            total += length
        if punched:
            await self._submit(db.WriteJob(statements=[(sql.FORGET_FREE, punched)]))
        return total

    async def vacuum(self) -> None:
        """Give the database's free pages back to the file system (auto_vacuum = INCREMENTAL)."""
        await self._submit(db.WriteJob(statements=[("PRAGMA incremental_vacuum", [()])], alone=True, truncate=True))

    async def blob_sizes(self) -> dict[int, int]:
        """The bytes each feed keeps in the blob file, by feed id."""
        return {feed_id: int(size) for feed_id, size in await self.read(sql.BLOB_SIZES, (KEY_SHIFT,))}

    async def blob_extents(self) -> list[tuple[int, int, int]]:
        """``(row key, offset, size)`` of every entry stored in the blob file, in offset order."""
        return [(key, offset, size) for key, offset, size in await self.read(sql.BLOB_EXTENTS)]

    async def move_blobs(self, moves: Sequence[tuple[int, int]], end: int) -> None:
        """A compaction's transaction (``storage/compaction.py``): rows get their offsets in the
        new blob file (``(offset, row key)`` pairs), ``blob_free`` empties, ``blob_end`` becomes
        ``end`` and ``blob_pending`` is set, all at once."""
        await self._submit(db.WriteJob(
            statements=[
                (sql.MOVE_BLOB, moves),
                (sql.FORGET_ALL_FREE, [()]),
                (sql.SET_META, [("blob_end", end), (BLOB_PENDING, 1)]),
            ],
            alone=True,
        ))

    async def forget_meta(self, key: str) -> None:
        await self._submit(db.WriteJob(statements=[(sql.DELETE_META, [(key,)])]))

    async def unreclaimed(self) -> int:
        """Blob-file bytes freed but not yet given back to the file system."""
        return sum(size for _, size in await self.read(sql.BLOB_FREE))

    # -- records ------------------------------------------------------------------------------

    async def put_record(self, scope: str, key: str, value: bytes) -> None:
        await self._submit(db.WriteJob(statements=[(sql.UPSERT_RECORD, [(scope, key, value)])]))

    async def put_records(self, scope: str, items: Sequence[tuple[str, bytes]]) -> None:
        """Several records of one scope in one job (one statement, one commit)."""
        if items:
            await self._submit(db.WriteJob(statements=[(sql.UPSERT_RECORD, [(scope, k, v) for k, v in items])]))

    async def delete_record(self, scope: str, key: str) -> None:
        await self._submit(db.WriteJob(statements=[(sql.DELETE_RECORD, [(scope, key)])]))

    async def delete_scope(self, scope: str) -> None:
        await self._submit(db.WriteJob(statements=[(sql.DELETE_SCOPE, [(scope,)])]))

    async def scopes(self) -> list[str]:
        return [scope for (scope,) in await self.read(sql.SCOPES)]

    async def records(self, scope: str) -> dict[str, bytes]:
        return {k: v for k, v in await self.read(sql.RECORDS, (scope,))}

    async def record(self, scope: str, key: str) -> bytes | None:
        rows = await self.read(sql.RECORD, (scope, key))
        value: bytes | None = rows[0][0] if rows else None
        return value

    async def records_size(self, scope: str) -> int:
        (size,), = await self.read(sql.RECORDS_SIZE, (scope,))
        return int(size)
