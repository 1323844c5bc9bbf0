"""The SQLite database under a store: connections, schema migrations, error mapping, and the
single writer task.

Theory of operation
-------------------
One database file per data directory, in WAL mode. Two aiosqlite connections: the *writer*,
used only by :class:`Writer`, and the *reader*, used for every read. WAL lets the reader see the
last committed state while the writer works, so reads never wait for a commit.

Every aiosqlite call is a round trip to its worker thread (~30 us, and two thread wake-ups), so
writes are not issued one statement at a time. Callers hand the writer a :class:`WriteJob` (a few
``executemany`` statements plus callbacks). The writer task takes every job waiting in its queue,
merges their statements by SQL text, and runs them in one transaction that commits once (group
commit), in one round trip: the blob bytes, ``BEGIN``, every statement and ``COMMIT`` run
together in the connection's thread (:func:`in_thread`). Only
after the commit succeeds are the jobs' ``on_commit`` callbacks run, so in-memory state never
gets ahead of what is on disk; if the transaction fails, every job in it gets ``on_abort`` and
the mapped error, and nothing of it is stored. If the writer task itself fails (an ``on_abort``
that raises, a bug), it fails loudly: every queued and later job gets ``WriterFailedError`` at
once (no caller waits forever) and ``Writer.watch()`` raises it, which the daemon treats as fatal.

``synchronous=NORMAL`` in WAL mode keeps every committed transaction through a process crash
(kill -9); only an OS crash or power loss may lose the last transactions, never consistency.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.resources
import logging
import os
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from .blobs import BLOB_THRESHOLD, BlobFile
from .errors import (
    StorageError,
    StoreClosedError,
    StoreCorruptError,
    StoreFullError,
    StoreReadOnlyError,
    WriterFailedError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_JOBS_PER_COMMIT = 512
CHECKPOINT_BYTES = 64 * 1024 * 1024  # written between two checkpoints (WAL and blob bytes)

# Primary result codes (the low byte of sqlite_errorcode).
_SQLITE_READONLY = 8
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_NOTADB = 26


def map_error(e: sqlite3.Error) -> StorageError:
    """Turn a sqlite3 error into the storage error a caller can act on."""
    code = getattr(e, "sqlite_errorcode", 0) & 0xFF
    if code == _SQLITE_FULL:
        return StoreFullError(f"the database is full: {e}")
    if code == _SQLITE_READONLY:
        return StoreReadOnlyError(f"the database is read-only: {e}")
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return StoreCorruptError(f"the database is damaged or not a cobox store: {e}")
    return StorageError(f"database error: {e}")


def _migrations() -> list[tuple[int, str]]:
    """The numbered schema files, in order: ``NNNN_name.sql`` -> (NNNN, sql)."""
    files = importlib.resources.files("storage") / "sql"
    out = []
    for f in files.iterdir():
        if f.name.endswith(".sql"):
            out.append((int(f.name.split("_", 1)[0]), f.read_text()))
    return sorted(out)


async def connect(
    path: Path, *, readonly: bool, durable: bool = False
) -> tuple[aiosqlite.Connection, aiosqlite.Connection]:
    """Open (creating and migrating when needed) the database; return ``(writer, reader)``."""
    if not readonly and not path.exists():
        # Create the file ourselves so that it, and the -wal/-shm files SQLite derives from
        # it, are private to this user: the database holds secret keys.
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
    mode = "ro" if readonly else "rwc"
    uri = f"file:{path}?mode={mode}"
    try:
        writer = await aiosqlite.connect(uri, uri=True, isolation_level=None)
    except sqlite3.Error as e:
        raise map_error(e) from None
    reader: aiosqlite.Connection | None = None
    try:
        await writer.execute("PRAGMA busy_timeout = 5000")
        if not readonly:
            # Before anything (journal mode, schema) touches the file: another application's
            # database must be refused, not converted.
            await _check_foreign(writer, path)
            # Larger pages and a larger WAL between checkpoints roughly double the insert
            # rate of 1 KiB+ entries (page_size only takes effect on a new database).
            await writer.execute("PRAGMA page_size = 16384")
            # Freed pages (cleared entries, deleted feeds) go back to the file system on
            # ``PRAGMA incremental_vacuum`` (like page_size, only on a new database).
            await writer.execute("PRAGMA auto_vacuum = INCREMENTAL")
            await writer.execute("PRAGMA journal_mode = WAL")
            await writer.execute("PRAGMA wal_autocheckpoint = 0")  # the Writer checkpoints
            await writer.execute("PRAGMA journal_size_limit = 67108864")
            await writer.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            await _migrate(writer)
        reader = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        await reader.execute("PRAGMA busy_timeout = 5000")
        await reader.execute("PRAGMA query_only = 1")
        version = await _user_version(reader)
        if version == 0:
            raise StoreCorruptError(f"{path} is not a cobox store")
    except (sqlite3.Error, StorageError) as e:
        # Close both connections: one left open keeps a worker thread that hangs the
        # interpreter at exit.
        await writer.close()
        if reader is not None:
            await reader.close()
        if isinstance(e, sqlite3.Error):
            raise map_error(e) from None
        raise
    return writer, reader


async def _user_version(conn: aiosqlite.Connection) -> int:
    (version,), = await conn.execute_fetchall("PRAGMA user_version")
    return int(version)


async def _check_foreign(conn: aiosqlite.Connection, path: Path) -> None:
    """Raise ``StoreCorruptError`` if ``path`` holds a database that is not a cobox store."""
    version = await _user_version(conn)
    if version == 0 and await conn.execute_fetchall("SELECT 1 FROM sqlite_master LIMIT 1"):
        raise StoreCorruptError(f"{path} is not a cobox store: it holds another application's tables")


async def _migrate(conn: aiosqlite.Connection) -> None:
    version = await _user_version(conn)
    migrations = _migrations()
    latest = migrations[-1][0]
    if version > latest:
        raise StoreCorruptError(
            f"the store has schema version {version}, newer than this cobox knows ({latest})"
        )
    for number, sql in migrations:
        if number <= version:
            continue
        log.info("migrating store schema to version %d", number)
        await conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {number};\nCOMMIT;")


SqlRow = tuple[Any, ...]  # the parameters of one statement


@dataclass
class WriteJob:
    """Statements to commit together, with what to do once they are (or are not) on disk.

    ``is_current`` is asked just before the job runs; a job built on state that a failed
    commit invalidated answers False and is aborted without touching the database.
    """

    statements: Sequence[tuple[str, Sequence[SqlRow]]]
    entries: Sequence[tuple[int, bytes]] = ()  # (key, data): stored inline or in the blob file
    on_commit: Callable[[], None] | None = None
    on_abort: Callable[[], None] | None = None
    is_current: Callable[[], bool] | None = None
    future: asyncio.Future[None] | None = field(default=None, repr=False)
    # A job that deletes rows other jobs may be inserting (a clear) commits in a transaction of
    # its own, so the order of commits (and of on_commit callbacks) is the order of statements.
    alone: bool = False
    # Make the commit durable (checkpoint) before the caller acts on it outside the database
    # (punching blob-file holes over the rows it deleted).
    durable: bool = False
    # Then also cut the WAL file back to nothing (after a vacuum: give the space back).
    truncate: bool = False
    # Its entries replace the rows at their keys (storing again the data of entries held outside
    # the store, storage/outside.py) instead of leaving an existing row alone.
    replace: bool = False


class Writer:
    """The one task that writes to the database, committing queued jobs in groups.

    If the task itself fails (a bug, or a job's ``on_abort`` callback raising: in-memory state
    may then no longer match the disk), it fails loudly: the error is logged, every job queued
    or in flight is finished with :class:`WriterFailedError`, every later ``submit`` raises it at
    once, and :meth:`watch` raises it, so the daemon's supervisor stops the daemon.
    """

    def __init__(self, conn: aiosqlite.Connection, blobs: BlobFile) -> None:
        self._conn = conn
        self._blobs = blobs
        self._since_checkpoint = 0
        self._queue: asyncio.Queue[WriteJob] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._batch: list[WriteJob] = []
        self.failure: WriterFailedError | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="storage-writer")

    async def submit(self, job: WriteJob) -> None:
        """Queue ``job`` and wait until it is committed (or raise why it was not)."""
        if self.failure is not None:
            raise WriterFailedError(str(self.failure))
        if self._closed:
            raise StoreClosedError("the store is closed")
        job.future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(job)
        await job.future

    async def watch(self) -> None:
        """Wait until the writer task ends: return if it was closed, raise if it failed."""
        if self._task is not None:
            await asyncio.wait({self._task})
        if self.failure is not None:
            raise WriterFailedError(str(self.failure))

    async def close(self) -> None:
        """Commit what is queued, then stop (a failed writer has nothing left to commit)."""
        self._closed = True
        if self._task is not None:
            if not self._task.done():
                self._queue.put_nowait(_STOP)
                await asyncio.wait({self._task})
            self._task = None

    async def _run(self) -> None:
        try:
            await self._loop()
        except BaseException as e:
            self._fail(e)  # logged and kept: watch() and every submit raise it
            if not isinstance(e, Exception):
                raise

    async def _loop(self) -> None:
        while True:
            jobs = [await self._queue.get()]
            while len(jobs) < MAX_JOBS_PER_COMMIT and not self._queue.empty():
                jobs.append(self._queue.get_nowait())
            stop = any(j is _STOP for j in jobs)
            jobs = [j for j in jobs if j is not _STOP]
            self._batch = jobs
            for group in _groups(jobs):
                await self._commit(group)
                if any(j.truncate for j in group):
                    await self.checkpoint("TRUNCATE")
                elif any(j.durable for j in group):
                    await self.checkpoint()
            self._batch = []
            if stop:
                await self.checkpoint("TRUNCATE")
                return

    def _fail(self, e: BaseException) -> None:
        """The writer task is dying: finish every job it holds or would have taken."""
        if isinstance(e, asyncio.CancelledError):
            self.failure = WriterFailedError("the store writer was cancelled")
        else:
            self.failure = e if isinstance(e, WriterFailedError) else WriterFailedError(
                f"the store writer failed: {type(e).__name__}: {e}")
            log.critical("%s; no more writes are possible", self.failure, exc_info=e)
        pending = [j for j in self._batch if j.future is None or not j.future.done()]
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if job is not _STOP:
                pending.append(job)
        self._batch = []
        for job in pending:
            if job.on_abort is not None:
                try:
                    job.on_abort()
                except Exception:
                    log.exception("an abort callback failed while the store writer stopped")
            _finish(job, WriterFailedError(str(self.failure)))

    async def _commit(self, jobs: list[WriteJob]) -> None:
        from .errors import WriteAbortedError

        runnable = []
        for job in jobs:
            if job.is_current is None or job.is_current():
                runnable.append(job)
            else:
                _finish(job, WriteAbortedError("an earlier write of this feed failed"))
        if not runnable:
            return
        merged: dict[str, list[SqlRow]] = {_INSERT_ENTRY: []}
        large: list[tuple[int, bytes]] = []
        large_sql: list[str] = []
        for job in runnable:
            sql = _REPLACE_ENTRY if job.replace else _INSERT_ENTRY
            for key, data in job.entries:
                if len(data) >= BLOB_THRESHOLD:
                    large.append((key, data))
                    large_sql.append(sql)
                else:
                    merged.setdefault(sql, []).append((key, data, None, None))
            for sql, rows in job.statements:
                merged.setdefault(sql, []).extend(rows)
        try:
            # The whole transaction is one hop to the connection's thread (blob pwrites, BEGIN,
            # every executemany, COMMIT), not one per statement: each hop wakes two threads.
            await in_thread(self._conn, functools.partial(self._transaction, merged, large, large_sql))
        except (sqlite3.Error, StorageError) as e:
            error = map_error(e) if isinstance(e, sqlite3.Error) else e
            log.warning("write of %d job(s) failed: %s", len(runnable), error)
            with contextlib.suppress(sqlite3.Error):
                await self._conn.rollback()
            _abort(runnable, error)
            return
        except BaseException:
            _abort(runnable, StoreClosedError("the store closed during a write"))
            raise
        if large:
            self._blobs.commit()
        for job in runnable:
            if job.on_commit is not None:
                try:
                    job.on_commit()
                except Exception:
                    # The data is on disk; a failing callback must not kill the writer task
                    # (every later write would hang) nor leave this job's caller waiting.
                    log.exception("a write callback failed after commit")
            _finish(job, None)
        self._since_checkpoint += sum(len(r[1] or b"") + (r[3] or 0) for r in merged[_INSERT_ENTRY])
        self._since_checkpoint += 64 * sum(len(rows) for rows in merged.values())
        if self._since_checkpoint >= CHECKPOINT_BYTES:
            await self.checkpoint()

    def _transaction(self, merged: dict[str, list[SqlRow]], large: list[tuple[int, bytes]],
                     large_sql: list[str], conn: sqlite3.Connection) -> None:
        """Run in the writer connection's thread: write the blob bytes (before the rows that point
        at them commit, and off the event loop: megabytes of pwrite), then the statements in one
        transaction. Raises ``sqlite3.Error`` or ``StorageError``; the caller rolls back."""
        if large:
            offsets = self._blobs.append([data for _, data in large])
            for (key, data), offset, sql in zip(large, offsets, large_sql):
                merged.setdefault(sql, []).append((key, None, offset, len(data)))
            merged[_SET_BLOB_END] = [(self._blobs.pending_end,)]
        conn.execute("BEGIN IMMEDIATE")
        for sql, rows in merged.items():
            if rows:
                execute_rows(conn, sql, rows)
        conn.commit()

    def _checkpoint(self, mode: str, conn: sqlite3.Connection) -> list[Any]:
        """In the writer connection's thread: fdatasync the blob file (up to 64 MiB: off the loop),
        then checkpoint the WAL; one round trip."""
        self._blobs.sync()
        return conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()

    async def checkpoint(self, mode: str = "PASSIVE") -> bool:
        """Make the blob file durable, then fold the WAL into the database; whether every
        committed transaction is now in the database file (synced)."""
        self._since_checkpoint = 0
        try:
            rows = await in_thread(self._conn, functools.partial(self._checkpoint, mode))
        except (sqlite3.Error, StorageError) as e:
            log.warning("checkpoint failed: %s", e)
            return False
        return bool(rows) and rows[0][0] == 0


MAX_ROWS = 512  # rows in one multi-row statement (see execute_rows)
_VALUES = re.compile(r"(INSERT\b.*?\bVALUES\s*)(\(\?(?:,\s*\?)*\))(.*)", re.S)


@functools.lru_cache(maxsize=64)
def _split_values(sql: str) -> tuple[str, str, int] | None:
    m = _VALUES.fullmatch(sql)
    if m is None or "?" in m[1] or "?" in m[3]:
        return None
    return m[1], m[3], m[2].count("?")


@functools.lru_cache(maxsize=1024)
def _multi(head: str, tail: str, width: int, n: int) -> str:
    one = f"({', '.join('?' * width)})"
    return f"{head}{','.join([one] * n)}{tail}"


def execute_rows(conn: sqlite3.Connection, sql: str, rows: Sequence[SqlRow]) -> None:
    """``conn.executemany(sql, rows)``, but an ``INSERT ... VALUES (?, ...)`` runs as a few
    statements of many rows: the same rows in the same order, one step per statement instead
    of one per row. ``sqlite3`` lets go of the GIL at every step, and getting it back while the
    event loop's thread is busy can take a switch interval (5 ms): a transaction of 50 rows
    beside a busy thread took 92 ms a row at a time, 15 ms as one statement.

    The statements hold power-of-two numbers of rows (at most ``MAX_ROWS``, and within the
    connection's limit of bound parameters), so that a few texts are compiled once and then
    found in the connection's statement cache. Rows of the wrong width go to ``executemany``,
    which refuses them as it always did."""
    parts = _split_values(sql) if len(rows) > 1 else None
    if parts is None or any(len(row) != parts[2] for row in rows):
        conn.executemany(sql, rows)
        return
    head, tail, width = parts
    most = max(1, min(MAX_ROWS, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width))
    k = 0
    while k < len(rows):
        n = 1 << (min(most, len(rows) - k).bit_length() - 1)  # the largest power of two that fits
        conn.execute(_multi(head, tail, width, n), [v for row in rows[k:k + n] for v in row])
        k += n


async def in_thread(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``fn(connection)`` in ``conn``'s worker thread, with the ``sqlite3`` connection itself: many
    statements (and blob-file I/O) for the price of one round trip. This is how aiosqlite runs each
    of its own calls; it has no public name for it."""
    result: T = await conn._execute(lambda: fn(conn._conn))  # type: ignore[no-untyped-call]
    return result


_INSERT_ENTRY = "INSERT OR IGNORE INTO entries (key, data, blob_offset, blob_size) VALUES (?, ?, ?, ?)"
_REPLACE_ENTRY = "INSERT OR REPLACE INTO entries (key, data, blob_offset, blob_size) VALUES (?, ?, ?, ?)"
_SET_BLOB_END = "UPDATE meta SET value = ? WHERE key = 'blob_end'"
_STOP = WriteJob(statements=())


def _groups(jobs: list[WriteJob]) -> list[list[WriteJob]]:
    """``jobs`` cut into transactions: consecutive ordinary jobs together, an ``alone`` job by itself."""
    out: list[list[WriteJob]] = []
    for job in jobs:
        if job.alone or not out or out[-1][-1].alone:
            out.append([job])
        else:
            out[-1].append(job)
    return out


def _abort(jobs: list[WriteJob], error: BaseException) -> None:
    """Run every job's ``on_abort`` and finish it with ``error``. A callback that raises leaves
    in-memory state that may not match the disk: after every job is finished, that raises
    :class:`WriterFailedError`, which ends the writer (see :class:`Writer`)."""
    broken: BaseException | None = None
    for job in jobs:
        if job.on_abort is not None:
            try:
                job.on_abort()
            except Exception as e:
                broken = broken or e
        _finish(job, error)
    if broken is not None:
        raise WriterFailedError(
            f"the store writer failed: an abort callback raised {type(broken).__name__}: {broken}") from broken


def _finish(job: WriteJob, error: BaseException | None) -> None:
    fut = job.future
    if fut is None or fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)
