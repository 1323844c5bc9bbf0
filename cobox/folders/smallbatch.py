"""Small downloads written in batches, two batches at once.

Theory of operation
-------------------
A round's downloads of files up to ``SMALL_FILE`` are gathered, in plan order, into batches of
``SMALL_BATCH`` files and ``SMALL_BATCH_BYTES`` at most; each batch is one
``fetch.write_versions`` (its chunks taken from the spool's ended runs kept in memory,
``Spool.take``, or its entries read in runs; opened and written in one worker thread,
two file-system syncs for the whole batch) and one commit of its ``Synced`` records. Up to
``SMALL_IN_FLIGHT`` batches are written at once, one thread each, so that reading, opening and
writing overlap. Any other action of the round waits for the batches planned before it
(:meth:`SmallDownloads.flush`), and the round ends only once every batch has marked its files
(:meth:`SmallDownloads.close`: a batch is never cancelled, its thread renames whatever happens).

Batches beside each other write different paths; ``failed``, the refused versions and the
marks are per path. Two things are shared. First, the free-space check of a batch does not
count the one beside it, so the reserve may be crossed by one batch at most. Second,
``single.keep_history``: it keeps the released entries only the replaced files hold, and the
chunk index learns of a replacement only when its batch marks it. So each batch is given the
paths the batches beside it are replacing too: an entry held by one file of each would
otherwise be kept by neither.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING

from storage.errors import EntryMissingError

from ..errors import FileChangedError, FolderError, MalformedChunkError
from . import single
from .fetch import write_versions
from .plan import Download, LocalFile, Synced

if TYPE_CHECKING:
    from .sync import FolderSync

log = logging.getLogger(__name__)
SMALL_FILE = 4 * 1024 * 1024  # downloads up to this size are written in batches (fetch.write_versions)
SMALL_BATCH = 128  # files per batch at most
SMALL_IN_FLIGHT = 2  # batches written at once (one thread each: reading, opening and writing overlap)
SMALL_BATCH_BYTES = 8 * 1024 * 1024  # bytes per batch at most (held in memory while it is written)


class SmallDownloads:
    """One round's small downloads (see the module docstring)."""

    def __init__(self, sync: FolderSync) -> None:
        self.sync = sync
        self._next: list[Download] = []  # the batch being gathered
        self._running: collections.deque[asyncio.Future[None]] = collections.deque()
        self._replacing: list[list[Download]] = []  # the replacing downloads of the batches running

    @staticmethod
    def takes(a: object) -> bool:
        return isinstance(a, Download) and a.version.size <= SMALL_FILE

    async def add(self, a: Download) -> None:
        self._next.append(a)
        if len(self._next) >= SMALL_BATCH or sum(d.version.size for d in self._next) >= SMALL_BATCH_BYTES:
            await self._start()

    async def flush(self) -> None:
        """Write what was gathered and wait for every batch: another action comes next."""
        if self._next:
            await self._start()
        while self._running:
            await self._running.popleft()

    async def close(self) -> None:
        """Wait for the batches still running, whatever went wrong (never cancelled)."""
        await asyncio.gather(*self._running, return_exceptions=True)
        self._running.clear()

    async def _start(self) -> None:
        batch, self._next = self._next, []
        self._running.append(asyncio.ensure_future(self._write(batch)))
        if len(self._running) >= SMALL_IN_FLIGHT:
            await self._running.popleft()

    async def _write(self, batch: list[Download]) -> None:
        sync = self.sync
        todo = []
        for a in batch:
            bad = sync._bad_versions.get((a.version.path, a.version.stamp))
            if bad is None:
                todo.append(a)
            else:
                sync._fail(a.path, "cannot apply", MalformedChunkError(bad))
        replacing = [a for a in todo if a.replace is not None]
        self._replacing.append(replacing)
        try:
            await self._write_todo(todo)
        finally:  # marked (or failed): the index knows what it holds now
            del self._replacing[next(k for k, r in enumerate(self._replacing) if r is replacing)]

    async def _write_todo(self, todo: list[Download]) -> None:
        sync = self.sync
        try:
            size = sum(a.version.size for a in todo)
            await asyncio.to_thread(sync.min_disk_free.check, sync.root, size, sync.disk_space)
            others = [a for r in self._replacing for a in r]  # this batch's and the ones beside it
            await single.keep_history(sync, [a.path for a in others],
                                      [c for a in [*todo, *others] for c in a.version.chunks])
            results = await write_versions(sync.group, [(a.version, a.path, a.replace) for a in todo], sync.root,
                                     sync.spool)
        except EntryMissingError as e:  # a chunk no longer held here (cobox.folders.single): next round
            log.info("folder %s: %d small downloads wait: %s", sync.root, len(todo), e)
            return
        except (OSError, FolderError) as e:
            for a in todo:
                sync._fail(a.path, "cannot apply", e)
            return
        marks = []
        for a, r in zip(todo, results, strict=True):
            if isinstance(r, LocalFile):
                sync.failed.pop(a.path, None)
                marks.append((a.path, Synced(a.version.stamp, r.size, r.mtime, a.version.content)))
            elif isinstance(r, FileChangedError):
                log.info("not touching %s now: %s", a.path, r)
            else:
                if isinstance(r, MalformedChunkError):
                    sync._refuse_version(a.version, r)
                sync._fail(a.path, "cannot apply", r)
        await sync._mark_all(marks)


__all__ = ["SMALL_BATCH", "SMALL_BATCH_BYTES", "SMALL_FILE", "SMALL_IN_FLIGHT", "SmallDownloads"]
