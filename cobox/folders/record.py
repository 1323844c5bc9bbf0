"""Recording local changes: files to chunk entries and operations in this device's feed.

Theory of operation
-------------------
``Recorder.record_puts`` takes the ``RecordPut`` actions of a round all at once. A worker
thread (:func:`.stream.record_batches`) reads, cuts, hashes and encodes the files into batches
of about 2 MiB of new chunk entries; each batch is one signed append (:class:`.stream.Appender`,
sealed in a thread), with up to ``APPENDS_IN_FLIGHT`` appends awaiting their commit while the
thread goes on. When a batch's appends are committed its chunks have their places
(``ChunkRef(feed, seq)``, noted in ``OpReader.own_chunks`` and skipped by the reader); then the
``Put`` operations of the files the batch completes are appended together (``record_many``: one
append) and their ``Synced`` records written together (their commits are grouped), in a task of
their own (up to ``OPS_IN_FLIGHT``), so that the next batch does not wait for those commits. A chunk the
group already references (or this device already stores, or this pipeline already queued) is
referenced again, never stored twice. A file that changed while it was read is left for the
next round; one that cannot be read is returned with its error.

``record_many`` gives operations clocks above every operation merged and every one recorded
since (``next_clock``), so a round records many files without re-merging after each. If a
member pushed the clocks beyond what our next entry may carry (``entries.clock_bound``), filler
entries make the room first (at most ``MAX_FILLERS``, else ``FolderError``).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections import ChainMap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..entries import FILLER, encode_op, fillers_needed
from ..errors import FolderError
from .chunking import Chunker
from .merge import FolderState
from .model import ChunkRef, Op, Put
from .plan import RecordPut, Synced
from .reader import OpReader
from .stream import Appender, Batch, record_batches

if TYPE_CHECKING:
    from ..groups import Group

APPENDS_IN_FLIGHT = 2  # signed appends of chunk batches awaiting their commit while the next is cut
OPS_IN_FLIGHT = 4  # appends of a batch's operations (and their Synced records) awaiting their commits
MAX_FILLERS = 1 << 20  # entries written at most to make clock room for one op
APPEND_FILLERS = 1024  # filler entries per signed append


class Recorder:
    def __init__(self, group: Group, root: Path, reader: OpReader, chunker: Chunker) -> None:
        self.group = group
        self.root = root
        self.reader = reader
        self.chunker = chunker
        self.next_clock = 0  # the lowest clock the next recorded operation may take
        self.appender = Appender(group)

    async def record_puts(self, puts: list[RecordPut], state: FolderState,
                          mark: Callable[[list[tuple[str, Synced]]], Awaitable[None]],
                          wake: Callable[[], None]) -> dict[str, BaseException]:
        """Record local changes, many files at a time (:func:`.stream.record_batches`): a worker
        thread reads, cuts, hashes and encodes; each batch of new chunks is one signed append,
        up to ``APPENDS_IN_FLIGHT`` of them in flight while the thread goes on; once a batch's
        chunks have their places, the operations of the files it completes are appended
        together (one append) and their ``Synced`` records written together (one commit).
        Returns the paths that failed, with why."""
        known = ChainMap(self.reader.own_chunks, state.known_chunks())  # type: ignore[arg-type]
        failed: dict[str, BaseException] = {}
        pending: collections.deque[tuple[asyncio.Future[int] | None, Batch]] = collections.deque()

        async def settle() -> None:
            task, batch = pending.popleft()
            if task is not None:
                first = await task
                feed = self.group.own_feed()
                assert feed is not None
                for k, (cid, size) in enumerate(batch.new):
                    self.reader.own_chunks[cid] = ChunkRef(cid, feed.key, first + k, size)
                self.reader.skip(feed.key, first, first + len(batch.new))  # known: not decrypted again
            for a, e in batch.failed:
                failed[a.path] = e
            ops: list[Op] = []
            for f in batch.files:
                a = f.key
                if (f.size, f.mtime) != (a.local.size, a.local.mtime):
                    wake()  # still being written: record it when it settles
                    continue
                refs = tuple(known[cid] for cid in f.ids)
                ops.append(state.put(a.path, f.size, a.local.mode, f.mtime, refs, self.group.device_id, a.base))
            if not ops:
                return
            # Appended and marked in a task of their own: the next batch's chunks need not wait
            # for these two commits (``OPS_IN_FLIGHT`` at most).
            finishing.append(asyncio.ensure_future(finish(ops)))
            while len(finishing) > OPS_IN_FLIGHT:
                await finishing.popleft()

        async def finish(ops: list[Op]) -> None:
            try:
                recorded = await self.record_many(ops)
            except FolderError as e:
                for op in ops:
                    failed[op.path] = e
                return
            await mark([(op.path, Synced(op.stamp, op.size, op.mtime, op.content))
                        for op in recorded if isinstance(op, Put)])

        async def drain() -> None:
            while pending:
                await settle()
            while finishing:
                await finishing.popleft()

        finishing: collections.deque[asyncio.Future[None]] = collections.deque()
        try:
            files = [(a, self.root / a.path) for a in puts]
            async for batch in record_batches(files, self.chunker, known.__contains__):
                if batch.fresh:  # a large file: the operations of the files before go first
                    await drain()
                task = asyncio.ensure_future(self._append(batch.plaintexts)) if batch.plaintexts else None
                pending.append((task, batch))
                if len(pending) > APPENDS_IN_FLIGHT:
                    await settle()
            await drain()
        finally:
            for task, _ in pending:
                if task is not None:
                    task.cancel()
            for op_task in finishing:
                op_task.cancel()
            await asyncio.gather(*finishing, return_exceptions=True)
        return failed

    async def record_many(self, ops: list[Op]) -> list[Op]:
        """Append ``ops`` (in one signed append when the clocks allow) with clocks above every
        operation merged and every one recorded since, so a round can record many files without
        re-merging after each (which would make a round quadratic in the number of files). If a
        member pushed the clocks beyond what our next entry may carry (``model.clock_bound``),
        filler entries make the room first. Within one append, clocks and places both grow by
        one per op, so room for the first op is room for the rest."""
        out: list[Op] = []
        plain: list[Op] = []  # encoded in a thread when appended (encode_op checks by decoding)
        feed = self.group.own_feed()
        base = feed.next_seq if feed is not None else 0  # appends in between only add room
        for op in ops:
            clock = max(op.clock, self.next_clock)
            self.next_clock = clock + 1  # taken now: a record() running beside this one gets another
            op = dataclasses.replace(op, clock=clock)
            need = fillers_needed(clock, base + len(plain))
            if need > MAX_FILLERS:
                raise FolderError(f"a member pushed the clocks {need} entries ahead of this device: not recording")
            if need > 0:
                if plain:
                    await self._append_ops(plain)
                    plain = []
                feed = self.group.own_feed()
                need = fillers_needed(clock, feed.next_seq if feed is not None else 0)
                while need > 0:
                    n = min(need, APPEND_FILLERS)
                    await self._append([FILLER] * n)
                    need -= n
                feed = self.group.own_feed()
                base = feed.next_seq if feed is not None else 0
            plain.append(op)
            out.append(op)
        if plain:
            await self._append_ops(plain)
        return out

    async def _append_ops(self, ops: list[Op]) -> int:
        data = await asyncio.to_thread(lambda: [encode_op(op) for op in ops]) if len(ops) > 8 else \
            [encode_op(op) for op in ops]
        return await self._append(data)

    async def _append(self, plaintexts: list[bytes]) -> int:
        return await self.appender.append(plaintexts)

