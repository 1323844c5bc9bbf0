"""The receiver: a version's chunks read from the store in ranges, opened and verified in the
writer's thread, streamed into the temp file in order.

Theory of operation
-------------------
A version's chunk references mostly name consecutive entries of one feed (a sender appends a
file's new chunks in order), so ``runs`` cuts the reference list into runs of consecutive
places of one feed, each at most ``RUN_ENTRIES`` long. ``write_version`` runs
``apply.write_file`` in a worker thread, with an iterator that for each run asks the event loop
once for the stored entries (``Feed.get_range``, one hop per run, not per chunk) and asks for
the next run before opening this one, so reading the store overlaps opening and writing. Each
entry is opened (XChaCha20-Poly1305 with the group key, bound to its place), decoded strictly
(``entries.decode_chunk_entry``) and checked against its reference (size and BLAKE3 id) in the
thread (libsodium and BLAKE3 release the GIL), and written. A reference to an entry that is
not the named chunk raises ``MalformedChunkError``: the temp file is removed (``write_file``)
and the caller refuses that version. A large version is opened and verified in a thread of its
own, ``AHEAD`` chunks ahead of the thread that writes them (``ahead``): decryption, hashing and
the writes (all three release the GIL) can use both cores (128 MiB written in-process at load
~4: 1.39, 1.17 s in one thread; 1.29, 1.02 s with the opening thread). Memory: two runs of
entries and ``AHEAD`` chunks at most (each bounded by the entry size limit), whatever the file
size. A version whose first chunks the folder's spool (``spool.py``) already wrote while they
arrived (usually all of them) gets only the rest from the store, then is synced and renamed; a
small one whose chunks an ended run kept in memory takes them from there (``Spool.take``, in
``write_versions``) instead of reading their entries again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..entries import decode_chunk_entry
from ..errors import MalformedChunkError, MalformedRecordError
from .apply import FileWrite, checked_path, finish_file, write_file, write_files
from .chunking import chunk_id
from .merge import Version
from .model import ChunkRef
from .plan import LocalFile
from .spool import Spool

if TYPE_CHECKING:
    from ..groups import Group
    from .single import Place

BATCH_RUN_ENTRIES = 1024  # entries per hop for a batch of small files (``write_versions``)
RUN_ENTRIES = 16  # chunk entries fetched per hop to the event loop (about 2.5 MiB)
AHEAD = 16  # verified chunks the opening thread may be ahead of the writing one (about 2.5 MiB)
AHEAD_CHUNKS = 8  # versions of fewer chunks are opened in the writing thread itself


def runs(refs: Sequence[ChunkRef], most: int = RUN_ENTRIES) -> list[tuple[int, int]]:
    """``[(i, j)]``: ``refs[i:j]`` name consecutive places of one feed, at most ``most``."""
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(refs):
        j = i + 1
        while (j < len(refs) and j - i < most and refs[j].feed == refs[i].feed
               and refs[j].seq == refs[j - 1].seq + 1):
            j += 1
        out.append((i, j))
        i = j
    return out


def open_chunk(group: Group, ref: ChunkRef, data: bytes) -> bytes:
    """The verified chunk ``ref`` names, from its stored entry; ``MalformedChunkError`` if the
    entry is not that chunk (a log entry, an op, other bytes)."""
    plain = group.open(ref.feed, ref.seq, data)
    try:
        if plain is None:
            raise MalformedChunkError("does not decrypt with the group key")
        chunk = decode_chunk_entry(plain)
    except MalformedRecordError as e:
        raise MalformedChunkError(f"chunk {ref.id.hex()[:16]} names an entry that is not a chunk ({e})") from None
    if len(chunk) != ref.size or chunk_id(chunk) != ref.id:
        raise MalformedChunkError(f"chunk {ref.id.hex()[:16]} does not match its id")
    return chunk


def local_chunk(root: Path, ref: ChunkRef, places: Sequence[Place]) -> bytes | None:
    """Chunk ``ref`` read from one of this device's files that held it (``places``), if it is
    still there: the bytes read must have the chunk's size and BLAKE3 id (a file changed since
    gives None, and the store is read instead)."""
    for place in places:
        try:
            fd = os.open(checked_path(root, place.path, create=False), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            data = os.pread(fd, ref.size, place.offset)
        except OSError:
            continue
        finally:
            os.close(fd)
        if len(data) == ref.size and chunk_id(data) == ref.id:
            return data
    return None


def pieces(group: Group, refs: Sequence[ChunkRef], loop: asyncio.AbstractEventLoop,
           local: Callable[[ChunkRef], bytes | None] | None = None,
           maybe_local: Callable[[ChunkRef], bool] = lambda ref: False) -> Iterator[bytes]:
    """The verified chunks of ``refs`` in order (run in a worker thread, see the module
    docstring). A run whose every chunk ``local`` finds in this device's files (an edited file:
    most of its chunks are the old version's) is read from them, not from the store; the next
    run is read from the store ahead unless ``maybe_local`` says its first chunk may be here."""
    cuts = runs(refs)

    def fetch(k: int) -> concurrent.futures.Future[list[bytes]]:
        i, j = cuts[k]
        feed = group.store.feed(refs[i].feed)
        return asyncio.run_coroutine_threadsafe(feed.get_range(refs[i].seq, refs[j - 1].seq + 1), loop)

    def here(k: int) -> list[bytes] | None:
        i, j = cuts[k]
        if local is None or not maybe_local(refs[i]):
            return None
        found = []
        for ref in refs[i:j]:
            data = local(ref)
            if data is None:
                return None
            found.append(data)
        return found

    ahead: tuple[int, concurrent.futures.Future[list[bytes]]] | None = None
    try:
        for k, (i, j) in enumerate(cuts):
            chunks = here(k) if ahead is None or ahead[0] != k else None
            if chunks is not None:
                yield from chunks
                continue
            entries = (ahead[1] if ahead is not None and ahead[0] == k else fetch(k)).result()
            ahead = (k + 1, fetch(k + 1)) if k + 1 < len(cuts) and not maybe_local(refs[cuts[k + 1][0]]) else None
            for ref, data in zip(refs[i:j], entries, strict=True):
                yield open_chunk(group, ref, data)
    finally:
        if ahead is not None:
            ahead[1].cancel()


_END = object()


def ahead(make: Callable[[], Iterator[bytes]], depth: int = AHEAD) -> Iterator[bytes]:
    """What ``make()`` yields, produced in a thread of its own at most ``depth`` items ahead of
    the consumer (called in a worker thread). An exception of the producer is raised here, in
    order; when the consumer stops early (its own error, or it is closed), the producer is told
    to stop and is waited for."""
    items: queue.Queue[object] = queue.Queue(depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in make():
                if not put(item):
                    return
        except BaseException as e:  # handed to the consumer
            put(e)
            return
        put(_END)

    thread = threading.Thread(target=run, name="cobox-open", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item
    finally:
        stop.set()
        thread.join()


async def write_version(group: Group, v: Version, root: Path, path: str, expect: LocalFile | None,
                        spool: Spool | None = None, places: dict[tuple[bytes, int], list[Place]] | None = None,
                        ) -> LocalFile:
    """Write version ``v`` to ``root/path`` atomically (``apply.write_file``), from the store,
    or from the temp file the ``spool`` already wrote its first chunks to (``apply.finish_file``:
    the rest from the store). ``places``: where this device's files hold some of its chunks
    (``single.local_places``), read from there instead of the store when they still match."""
    loop = asyncio.get_running_loop()
    # In a thread: the spool's lock may be held by the reader waiting for a writeback.
    spooled = await asyncio.to_thread(spool.claim, v.chunks) if spool is not None else None
    refs = v.chunks if spooled is None else v.chunks[spooled[1]:]
    held = places or {}

    def local(ref: ChunkRef) -> bytes | None:
        return local_chunk(root, ref, held.get((ref.feed, ref.seq), ()))

    def make() -> Iterator[bytes]:
        return pieces(group, refs, loop, local if held else None, lambda ref: (ref.feed, ref.seq) in held)

    data = make() if len(refs) < AHEAD_CHUNKS else ahead(make)
    if spooled is not None:
        return await asyncio.to_thread(finish_file, root, path, spooled[0], data, size=v.size, mode=v.mode,
                                       mtime=v.mtime, expect=expect)
    return await asyncio.to_thread(write_file, root, path, data, size=v.size, mode=v.mode, mtime=v.mtime,
                                   expect=expect)


async def write_versions(group: Group, items: Sequence[tuple[Version, str, LocalFile | None]],
                         root: Path, spool: Spool | None = None) -> list[LocalFile | Exception]:
    """Write a batch of small versions (``(version, path, expect)``) with ``apply.write_files``:
    the chunks the ``spool`` kept in memory as they arrived (``Spool.take``), the others' entries
    read on the loop (one ``get_range`` per run of consecutive places across the whole batch: a
    sender appends many small files' chunks in one run), opened, verified and written in one
    worker thread, two file-system syncs for the batch. Per item: what was written or why not (a
    ``MalformedChunkError`` for a version whose references name bad entries)."""
    def taken() -> list[list[bytes] | None]:
        return [spool.take(v.chunks) if spool is not None else None for v, _, _ in items]

    # In a thread: the spool's lock may be held by the reader waiting for a writeback.
    held = await asyncio.to_thread(taken) if spool is not None else [None] * len(items)
    refs = [ref for (v, _, _), h in zip(items, held, strict=True) if h is None for ref in v.chunks]
    entries: list[bytes] = []
    for i, j in runs(refs, BATCH_RUN_ENTRIES):  # a sender's small files: mostly one run
        entries += await group.store.feed(refs[i].feed).get_range(refs[i].seq, refs[j - 1].seq + 1)
    stored: list[list[bytes] | None] = []
    for (v, _, _), h in zip(items, held, strict=True):
        if h is None:
            stored.append(entries[:len(v.chunks)])
            del entries[:len(v.chunks)]
        else:
            stored.append(None)

    def work() -> list[LocalFile | Exception]:
        out: list[LocalFile | Exception | None] = []
        writes: list[FileWrite] = []
        for (v, path, expect), entries, h in zip(items, stored, held, strict=True):
            try:
                data = h if entries is None else [open_chunk(group, ref, e)
                                                  for ref, e in zip(v.chunks, entries, strict=True)]
            except MalformedChunkError as e:
                out.append(e)
                continue
            out.append(None)
            writes.append(FileWrite(path, data, v.size, v.mode, v.mtime, expect))
        written = iter(write_files(root, writes))
        return [next(written) if r is None else r for r in out]

    return await asyncio.to_thread(work)
