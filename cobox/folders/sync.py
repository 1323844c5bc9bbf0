"""A folder bound to a group, kept in sync: the daemon's executor of :mod:`cobox.folders.plan`.

Theory of operation
-------------------
Everything lives in the group's feeds, encrypted like the log: each file operation
(:mod:`cobox.folders.model`) is one entry, and each new content chunk is one entry
``{"type": "chunk", "data": ...}`` in this device's feed, appended before the operation that
references it (``ChunkRef(feed, seq)``). A chunk already referenced anywhere in the group (or
already stored by this device) is referenced again, never stored twice.

A *round* reads the entries not read yet (per feed), folds their operations into the merged
state (``FolderState.update``: incremental, decoding and merging in a worker thread, see
``read_ops``), scans the folder, asks ``plan`` what to do (in a worker thread too: it visits
every path) and does it: downloads stream
chunks from the store, verified against their BLAKE3 ids, into ``apply.write_file`` (temp file,
fsync, rename) in a worker thread, so memory stays bounded whatever the file size; local
changes are chunked in a worker thread and recorded. A download waits until every chunk it
needs has been replicated. Rounds run one at a time, on a change of any of the group's feeds,
on file-system events (``watchfiles``), and every ``rescan`` seconds.

The ``Synced`` record of each path (the version the disk last agreed with) is kept in the
store, so a restart does not mistake old remote changes for local edits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import queue
import threading
from collections import ChainMap
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

from storage import RangeSet
from storage.errors import FeedNotFoundError

from ..errors import FolderError
from .apply import clean_temp, move_file, remove_file, write_file
from .chunking import chunk_id, chunks
from .ignore import IgnoreRules
from .merge import FolderState, Version
from .model import ChunkRef, Op, Stamp, decode_op, encode_op, is_folder_record
from .plan import Download, Forget, MarkSynced, MoveLocal, RecordDelete, RecordPut, RemoveLocal, Synced, plan
from .scan import scan

if TYPE_CHECKING:
    from ..groups import Group

log = logging.getLogger(__name__)
APPEND_BATCH = 16  # chunks per signed append
READ_BYTES = 4 * 1024 * 1024  # entries read per slice when catching up
MERGE_BATCH = 5_000  # decoded operations merged at once (bounds memory and GC work when catching up)
FREEZE_OPS = 1_000  # a merge of at least this many operations freezes what it built (see read_ops)


class FolderSync:
    def __init__(self, group: Group, root: Path, *, rescan: float = 30.0) -> None:
        self.group = group
        self.root = root
        self.rescan = rescan
        self.state = FolderState.merge([])
        self.pending_downloads = 0
        self.pending_bytes = 0
        self.last_error = ""
        self._ops: list[Op] = []  # decoded, not merged yet
        self._merging = asyncio.Lock()
        self._read: dict[bytes, RangeSet] = {}  # feed -> entries read
        self._next_clock = 0  # the lowest clock the next recorded operation may take
        self._own_chunks: dict[bytes, ChunkRef] = {}
        self._synced: dict[str, Synced] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._unlisten: list[Any] = []
        self.rounds = 0

    @property
    def _scope(self) -> str:
        return f"folder-synced:{self.group.namespace}"

    # -- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.root.is_dir():
            raise FolderError(f"{self.root} is not a directory")
        await asyncio.to_thread(clean_temp, self.root)
        for path, value in (await self.group.store.records(self._scope)).items():
            clock, author, size, mtime, content = msgpack.unpackb(value)
            self._synced[path] = Synced(Stamp(clock, author), size, mtime, content)
        for feed in self.group.feeds():
            self._unlisten.append(feed.listen(lambda _e: self._wake.set()))
        self.group.on_feed_added(lambda feed: self._unlisten.append(feed.listen(lambda _e: self._wake.set())))
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(), name="folder-sync"),
                       loop.create_task(self._watch(), name="folder-watch")]
        self._wake.set()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for u in self._unlisten:
            u()

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.rescan)
            self._wake.clear()
            try:
                await self.round()
                self.last_error = ""
            except (OSError, FolderError) as e:
                self.last_error = str(e)
                log.warning("folder %s: %s", self.root, e)

    async def _watch(self) -> None:
        try:
            import watchfiles
        except ImportError:
            return
        async for _changes in watchfiles.awatch(self.root, debounce=300, recursive=True,
                                                watch_filter=lambda _c, p: ".cobox-tmp-" not in p):
            self._wake.set()

    # -- one round ----------------------------------------------------------------------------

    async def read_ops(self) -> FolderState:
        """Merge every folder operation of the group read so far, reading new entries first.

        Off the event loop: each slice of entries is decrypted and decoded (``_take``) in a
        worker thread, and the new operations are folded into ``self.state`` incrementally
        (``FolderState.update``), at most ``MERGE_BATCH`` at a time, in a worker thread too;
        one caller at a time (a lock).

        The garbage collector: a full collection of CPython walks every tracked object while
        holding the GIL, and a merged state holds about 4 per operation (236 ms for the state
        of 100,000 operations, measured), so it would stall the loop whatever thread triggers
        it. After a merge of at least ``FREEZE_OPS`` operations the objects built so far are
        moved to the permanent generation (``gc.freeze``): later collections skip the state,
        which lives as long as the folder. The cost: garbage cycles that exist at that moment
        are kept too (few: the decoded operations are freed by reference counting)."""
        async with self._merging:
            for feed in self.group.feeds():
                done = self._read.setdefault(feed.key, RangeSet())
                for start, end in list(feed.have):
                    for gap_start, gap_end in done.missing(start, end):
                        seq = gap_start
                        while seq < gap_end:
                            # Bounded slices: a feed of large chunks is never held in memory at once.
                            batch = await feed.get_range(seq, gap_end, max_bytes=READ_BYTES)
                            if not batch:
                                break
                            await asyncio.to_thread(self._take_all, feed, seq, batch)
                            seq += len(batch)
                            done.add(gap_start, seq)
            await self._merge_pending()
        return self.state

    def _take_all(self, feed: Any, seq: int, batch: list[bytes]) -> None:  # in a worker thread
        """Decode a slice of entries, merging every ``MERGE_BATCH`` operations on the way."""
        for k, data in enumerate(batch):
            self._take(feed, seq + k, data)
            if len(self._ops) >= MERGE_BATCH:
                ops, self._ops = self._ops, []
                self._update(ops)

    async def _merge_pending(self) -> None:
        """Fold the operations decoded so far into the state, in a worker thread."""
        while self._ops:
            ops, self._ops = self._ops[:MERGE_BATCH], self._ops[MERGE_BATCH:]
            await asyncio.to_thread(self._update, ops)

    def _update(self, ops: list[Op]) -> None:  # in a worker thread
        self.state.update(ops)
        if len(ops) >= FREEZE_OPS:
            gc.freeze()

    def _take(self, feed: Any, seq: int, data: bytes) -> bool:
        """Note one entry: an operation (returns True), one of our chunks, or something else."""
        plain = self.group.open(feed.key, seq, data)
        if plain is None:
            return False
        try:
            obj = msgpack.unpackb(plain, raw=False)
        except (ValueError, msgpack.UnpackException):
            return False
        if is_folder_record(obj):
            try:
                self._ops.append(decode_op(plain))
                return True
            except FolderError as e:
                log.warning("ignoring a malformed folder record: %s", e)
        elif feed.writable and isinstance(obj, dict) and obj.get("type") == "chunk":
            cid = chunk_id(obj["data"])
            self._own_chunks[cid] = ChunkRef(cid, feed.key, seq, len(obj["data"]))
        return False

    async def round(self) -> None:
        self.rounds += 1
        state = await self.read_ops()
        rules = await asyncio.to_thread(IgnoreRules.load, self.root)
        synced = dict(self._synced)

        def want(path: str, size: int, mtime: int) -> bool:
            s = synced.get(path)
            return s is None or s.size != size or s.mtime != mtime

        local = await asyncio.to_thread(scan, self.root, rules, want)
        async with self._merging:  # O(files), so off the loop; on a settled state
            actions = await asyncio.to_thread(plan, state, local, synced, ignored=rules)
        waiting = waiting_bytes = 0
        for a in actions:
            if isinstance(a, Download):
                if not self._available(a.version):
                    waiting += 1
                    waiting_bytes += a.version.size
                    continue
                await self._download(a)
            elif isinstance(a, MoveLocal):
                await asyncio.to_thread(move_file, self.root, a.src, a.dst, a.expect)
                await self._forget(a.src)
                await self._mark(a.dst, Synced(a.version.stamp, a.expect.size, a.expect.mtime, a.version.content))
            elif isinstance(a, RemoveLocal):
                await asyncio.to_thread(remove_file, self.root, a.path, a.expect)
                await self._forget(a.path)
            elif isinstance(a, MarkSynced):
                st = (self.root / a.path).stat()
                await self._mark(a.path, Synced(a.version.stamp, st.st_size, st.st_mtime_ns, a.version.content))
            elif isinstance(a, Forget):
                await self._forget(a.path)
            elif isinstance(a, RecordDelete):
                await self._append([encode_op(self._stamped(self.state.delete(a.path, self.group.device_id,
                                                                                  a.base)))])
                await self._forget(a.path)
            elif isinstance(a, RecordPut):
                await self._record_put(a)
        self.pending_downloads, self.pending_bytes = waiting, waiting_bytes

    # -- actions ------------------------------------------------------------------------------

    def _available(self, v: Version) -> bool:
        for ref in v.chunks:
            try:
                if not self.group.store.feed(ref.feed).has(ref.seq):
                    return False
            except FeedNotFoundError:
                return False
        return True

    async def _chunk(self, ref: ChunkRef) -> bytes:
        feed = self.group.store.feed(ref.feed)
        plain = self.group.open(ref.feed, ref.seq, await feed.get(ref.seq))
        data = msgpack.unpackb(plain, raw=False)["data"] if plain is not None else None
        if data is None or chunk_id(data) != ref.id:
            raise FolderError(f"chunk {ref.id.hex()[:16]} does not match its id")
        return data

    async def _download(self, a: Download) -> None:
        loop = asyncio.get_running_loop()
        v = a.version

        def pieces() -> Iterator[bytes]:  # runs in the writer thread, one chunk at a time
            for ref in v.chunks:
                yield asyncio.run_coroutine_threadsafe(self._chunk(ref), loop).result()

        try:
            out = await asyncio.to_thread(write_file, self.root, a.path, pieces(), size=v.size, mode=v.mode,
                                          mtime=v.mtime, expect=a.replace)
        except FolderError as e:  # the file changed under us (being written): next round
            log.info("not replacing %s now: %s", a.path, e)
            return
        await self._mark(a.path, Synced(v.stamp, out.size, out.mtime, v.content))

    async def _record_put(self, a: RecordPut) -> None:
        path = self.root / a.path
        known = ChainMap(self._own_chunks, self.state.known_chunks())  # type: ignore[arg-type]
        refs: list[ChunkRef] = []
        batch: list[bytes] = []
        batch_ids: list[tuple[bytes, int]] = []
        batched: set[bytes] = set()

        async def flush() -> None:
            if batch:
                first = await self._append(batch)
                feed = self.group.own_feed()
                assert feed is not None
                for k, (cid, size) in enumerate(batch_ids):
                    ref = ChunkRef(cid, feed.key, first + k, size)
                    known[cid] = self._own_chunks[cid] = ref
                batch.clear()
                batch_ids.clear()
                batched.clear()

        order: list[bytes] = []
        async for c in _chunks_of(path):
            cid = chunk_id(c)
            order.append(cid)
            if cid not in known and cid not in batched:
                batch.append(msgpack.packb({"type": "chunk", "data": c}, use_bin_type=True))
                batch_ids.append((cid, len(c)))
                batched.add(cid)
                if len(batch) >= APPEND_BATCH:
                    await flush()
        await flush()
        refs = [known[cid] for cid in order]
        st = path.stat()
        if (st.st_size, st.st_mtime_ns) != (a.local.size, a.local.mtime):
            self._wake.set()  # still being written: record it when it settles
            return
        op = self._stamped(self.state.put(a.path, st.st_size, a.local.mode, st.st_mtime_ns, tuple(refs),
                                          self.group.device_id, a.base))
        await self._append([encode_op(op)])
        await self._mark(a.path, Synced(op.stamp, st.st_size, st.st_mtime_ns, op.content))

    def _stamped(self, op: Op) -> Op:
        """Give ``op`` a clock above every operation merged and every one recorded since, so
        a round can record many files without re-merging after each (which would make a round
        quadratic in the number of files)."""
        clock = max(op.clock, self._next_clock)
        self._next_clock = clock + 1
        return dataclasses.replace(op, clock=clock)

    async def _append(self, plaintexts: list[bytes]) -> int:
        return await self.group.append_records(plaintexts)

    async def _mark(self, path: str, s: Synced) -> None:
        self._synced[path] = s
        value = msgpack.packb([s.stamp.clock, s.stamp.author, s.size, s.mtime, s.content], use_bin_type=True)
        await self.group.store.put_record(self._scope, path, value)

    async def _forget(self, path: str) -> None:
        if self._synced.pop(path, None) is not None:
            await self.group.store.delete_record(self._scope, path)

    # -- queries ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        files = self.state.files
        return {
            "group": self.group.name,
            "path": str(self.root),
            "files": len(files),
            "bytes": sum(v.size for v in files.values()),
            "pending_down": self.pending_downloads,
            "pending_down_bytes": self.pending_bytes,
            "pending_up": sum(1 for p in files if p not in self._synced),
            "conflicts": sorted(self.state.conflicts()),
            "rounds": self.rounds,
            "error": self.last_error,
        }

    async def write_version(self, v: Version, target: Path) -> None:
        """Write an old version to ``target`` (outside or inside the folder)."""
        loop = asyncio.get_running_loop()

        def pieces() -> Iterator[bytes]:
            for ref in v.chunks:
                yield asyncio.run_coroutine_threadsafe(self._chunk(ref), loop).result()

        target.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(write_file, target.parent, target.name, pieces(), size=v.size, mode=v.mode,
                                mtime=v.mtime, expect=None)


async def _chunks_of(path: Path) -> Any:
    """Chunk a file in a worker thread, handing chunks over through a small queue (bounded
    memory, the event loop never blocks on the disk)."""
    q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=4)
    stop = threading.Event()

    def produce() -> None:
        try:
            with open(path, "rb") as f:
                for c in chunks(f):
                    while not stop.is_set():
                        try:
                            q.put(c, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            q.put(None)
        except BaseException as e:
            q.put(e)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = await asyncio.to_thread(q.get)
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                q.get_nowait()
        await asyncio.to_thread(thread.join, 5)


def version_id(v: Version) -> str:
    return f"{v.stamp.clock}-{v.stamp.author.hex()[:8]}"


def find_version(state: FolderState, path: str, vid: str | None) -> Version:
    history = [v for v in state.history(path) if not v.deleted]
    if not history:
        raise FolderError(f"no version of {path!r} is known")
    if vid is None:
        return history[-1]
    for v in history:
        if version_id(v) == vid:
            return v
    raise FolderError(f"{path!r} has no version {vid!r} (see `cobox folder history`)")


__all__ = ["FolderSync", "find_version", "version_id"]
