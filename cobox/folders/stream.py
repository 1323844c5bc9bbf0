"""Local files to chunk entries, in a worker thread, handed to the event loop in batches.

Theory of operation
-------------------
``produced(work)`` runs ``work(emit)`` in a thread of its own; each ``emit(item)`` is handed to
the event loop with ``call_soon_threadsafe`` (no thread hop per item on the loop's side) and the
async iterator yields it. At most ``depth`` items are in flight (a semaphore the consumer
releases as it takes each one), so memory stays bounded whatever the producer does; when the
consumer stops early (an exception, a cancellation), ``emit`` raises ``Stopped`` in the thread,
which ends it, and the consumer waits for the thread before returning.

``record_batches(paths, chunker, known)`` is the sender's producer: it reads each file, cuts it
(``Chunker.views``: FastCDC without the GIL), hashes every chunk (BLAKE3 releases the GIL too)
and pads and encodes the chunks not ``known`` (to the group or to this batch), packing them into
``Batch``es of about ``BATCH_BYTES``. A file is listed in the batch holding its last new chunk
(or a later one), with its chunk ids in order and its ``(size, mtime)`` (``-1`` if they changed
while it was read; such a file, or one that failed midway, is recorded by no operation, so its
new chunks still in the batch being filled are taken out of it, not stored by every member for
nothing; those of batches handed out already stay, to be referenced when it is recorded), so
the consumer can reference every chunk of a listed file once that batch is appended. Many small
files share one batch: one signed append for all their chunks. A large file (``LARGE_FILE``)
starts a ``fresh`` batch: the consumer appends the operations of the files before it first, so
that a receiver sees the large file's chunks as one run of entries starting with its first
chunk (``spool.py``: the receiver writes such a run into the file as it arrives).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from ..entries import encode_chunk
from .chunking import Chunker, chunk_id

T = TypeVar("T")
BATCH_BYTES = 2 * 1024 * 1024  # new chunk plaintext per batch (one signed append)
BATCH_FILES = 512  # files listed per batch at most
DEPTH = 2  # batches in flight between the thread and the loop
WHOLE_READ = 1024 * 1024  # files up to this size are read in one piece
LARGE_FILE = 8 * 1024 * 1024  # a file this large starts a batch of its own, after the files before (``fresh``)


class Stopped(Exception):
    """The consumer went away: the producer thread ends."""


class _Channel(Generic[T]):
    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int) -> None:
        self.loop = loop
        self.room = threading.Semaphore(depth)
        self.stopped = threading.Event()
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def emit(self, item: T) -> None:  # in the producer thread
        while not self.room.acquire(timeout=0.1):
            if self.stopped.is_set():
                raise Stopped
        if self.stopped.is_set():
            raise Stopped
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ("item", item))


async def produced(work: Callable[[Callable[[T], None]], None], depth: int = DEPTH) -> AsyncIterator[T]:
    """Run ``work(emit)`` in a thread and yield what it emits, in order, ``depth`` at most in flight."""
    ch: _Channel[T] = _Channel(asyncio.get_running_loop(), depth)

    def run() -> None:
        try:
            work(ch.emit)
        except Stopped:
            pass
        except BaseException as e:  # handed to the consumer
            ch.loop.call_soon_threadsafe(ch.queue.put_nowait, ("error", e))
            return
        ch.loop.call_soon_threadsafe(ch.queue.put_nowait, ("end", None))

    thread = threading.Thread(target=run, name="cobox-chunker", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = await ch.queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            ch.room.release()
            yield item
    finally:
        ch.stopped.set()
        await asyncio.to_thread(thread.join)


@dataclasses.dataclass(frozen=True)
class ChunkedFile:
    """One file as the producer read it: its chunk ids in order, and its size and mtime then."""

    key: Any  # the caller's handle (a RecordPut)
    ids: list[bytes]
    size: int
    mtime: int


@dataclasses.dataclass
class Batch:
    """New chunks to append (``plaintexts[k]`` stores chunk ``new[k] = (id, size)``), and the
    files whose every new chunk is in this batch or an earlier one. ``failed``: files that
    could not be read (key, the ``OSError``)."""

    new: list[tuple[bytes, int]] = dataclasses.field(default_factory=list)
    plaintexts: list[bytes] = dataclasses.field(default_factory=list)
    files: list[ChunkedFile] = dataclasses.field(default_factory=list)
    failed: list[tuple[Any, OSError]] = dataclasses.field(default_factory=list)
    size: int = 0
    fresh: bool = False  # starts a large file: append the operations of the batches before first


def record_batches(files: Sequence[tuple[Any, Path]], chunker: Chunker,
                   known: Callable[[bytes], bool]) -> AsyncIterator[Batch]:
    """Chunk ``files`` (``(key, path)`` pairs) in a worker thread into ``Batch``es (see the
    module docstring). ``known(id)`` is called from the thread: it must only read."""

    def work(emit: Callable[[Batch], None]) -> None:
        cdc = chunker.cdc()
        batch = Batch()
        seen: set[bytes] = set()  # new chunks already in a batch (a file repeating itself)

        def drop_since(start: int, at: Batch) -> None:
            """Take out of ``batch`` the new chunks the current file put there (from ``start``
            of batch ``at``, or all of a later batch): no operation will reference them."""
            k = start if batch is at else 0
            seen.difference_update(cid for cid, _ in batch.new[k:])
            batch.size -= sum(map(len, batch.plaintexts[k:]))
            del batch.new[k:], batch.plaintexts[k:]

        for key, path in files:
            ids: list[bytes] = []
            start, at = len(batch.new), batch  # where this file's new chunks begin
            try:
                with open(path, "rb", buffering=0) as f:
                    before = os.fstat(f.fileno())
                    if before.st_size >= LARGE_FILE:
                        if batch.new or batch.files or batch.failed:
                            emit(batch)
                        batch = Batch(fresh=True)
                    # A small file is read at once and cut in memory (the same cuts: FastCDC's
                    # cuts do not depend on how the bytes arrive); cut_stream's 512 KiB buffer
                    # per file was the largest per-file cost.
                    cuts = cdc.cut_buf(f.read(WHOLE_READ + 1)) if before.st_size <= WHOLE_READ else cdc.cut_stream(f)
                    for c in cuts:
                        view = c.data
                        cid = chunk_id(view)
                        ids.append(cid)
                        if cid in seen or known(cid):
                            continue
                        seen.add(cid)
                        plain = encode_chunk(view)
                        batch.new.append((cid, len(view)))
                        batch.plaintexts.append(plain)
                        batch.size += len(plain)
                        if batch.size >= BATCH_BYTES:
                            emit(batch)
                            batch = Batch()
                st = os.stat(path)  # by path: it may have been replaced meanwhile
            except OSError as e:
                drop_since(start, at)
                batch.failed.append((key, e))
                continue
            if (st.st_size, st.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                st_size, st_mtime = -1, -1  # changed while being read: not what the scan saw
                drop_since(start, at)
            else:
                st_size, st_mtime = st.st_size, st.st_mtime_ns
            batch.files.append(ChunkedFile(key, ids, st_size, st_mtime))
            if len(batch.files) >= BATCH_FILES:
                emit(batch)
                batch = Batch()
        if batch.new or batch.files or batch.failed:
            emit(batch)

    return produced(work)


class Appender:
    """Signed appends of large batches to this device's feed, sealed in a worker thread.

    ``Group.append_records`` seals (XChaCha20-Poly1305, bound to each entry's place) on the
    event loop; for megabytes of chunks that is the loop's largest cost, and libsodium releases
    the GIL, so here the sealing runs in a thread. The place of each entry must be known before
    sealing, and no other append may take those places meanwhile, so:

    1. one batch at a time (``_lock``) reads ``first = feed.next_seq`` and seals in a thread;
    2. a task is started whose first step checks that ``next_seq`` is still ``first`` (else an
       append of another kind, a log entry, came in between: it seals again, on the loop, with
       the new place) and calls ``Feed.append``, which takes its places before its first await;
       that step is atomic (no await between the check and the taking);
    3. the lock is released by a callback queued after that step, so the next batch is sealed
       while this one waits for its commit (batches pipeline, places stay in order).

    Small batches (operations) go through ``Group.append_records`` (sealed on the loop), under
    the same lock, so that they do not take the places of a large batch sealing in the thread
    (which would then be sealed again, on the loop); a device without its own feed yet goes
    through it directly."""

    SMALL = 64 * 1024  # bytes below which sealing on the loop is cheaper than a thread hop

    def __init__(self, group: Any) -> None:
        self.group = group
        self._lock = asyncio.Lock()

    async def append(self, plaintexts: list[bytes]) -> int:
        """Append ``plaintexts`` as one signed batch; the place of the first (and ``await`` it
        returns once committed)."""
        feed = self.group.own_feed()
        if feed is None:
            return int(await self.group.append_records(plaintexts))
        await self._lock.acquire()
        if sum(map(len, plaintexts)) < self.SMALL:  # sealed on the loop, after a batch sealing now
            try:
                small = asyncio.ensure_future(self.group.append_records(plaintexts))
            except BaseException:
                self._lock.release()
                raise
            asyncio.get_running_loop().call_soon(self._lock.release)  # after it took its places
            return int(await small)
        try:
            first = feed.next_seq
            sealed = await asyncio.to_thread(self._seal, feed.key, first, plaintexts)

            async def take() -> int:
                nonlocal first, sealed
                if feed.next_seq != first:  # another append took these places meanwhile
                    first = feed.next_seq
                    sealed = self._seal(feed.key, first, plaintexts)
                await feed.append(sealed)
                return first

            task = asyncio.ensure_future(take())
        except BaseException:
            self._lock.release()
            raise
        asyncio.get_running_loop().call_soon(self._lock.release)  # after take()'s first step
        return await task

    def _seal(self, feed_key: bytes, first: int, plaintexts: list[bytes]) -> list[bytes]:
        return [self.group.seal(feed_key, first + k, p) for k, p in enumerate(plaintexts)]
