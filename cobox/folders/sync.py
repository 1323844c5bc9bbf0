"""A folder bound to a group, kept in sync: the daemon's executor of :mod:`cobox.folders.plan`.

Theory of operation
-------------------
Everything lives in the group's feeds, encrypted like the log: each file operation
(:mod:`cobox.folders.model`) is one entry, and each new content chunk is one entry
``{"type": "chunk", "data": ...}`` in this device's feed, appended before the operation that
references it (``ChunkRef(feed, seq)``), cut with the group's keyed chunker and padded to a size
class (:mod:`cobox.folders.padding`). A chunk already referenced anywhere in the group (or
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

Hostile input: every entry of another device is decoded strictly (``model.op_from``,
``model.decode_chunk``, ``groups.decode_log``) with the feed's owner as author; a refused entry
is skipped and counted against that device (``Group.refusals``). One action that fails for one
path (an ``OSError`` such as ENAMETOOLONG or EACCES, a ``FolderError`` such as an unsafe path,
a chunk reference that names no valid chunk, the disk reserve) is recorded against that path
(``failed`` in ``status``) and the round goes on; a version found to reference bad chunks is
not tried again. A download that would cross ``min_disk_free`` is not started.

Supervision: a round that fails for any other reason is recorded (``error``, ``last_error``,
its time) and the next one waits an exponential backoff (``backoff`` doubling up to
``BACKOFF_MAX``); the sync and watch tasks are restarted the same way if they ever end with an
exception. Nothing here dies silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import ChainMap
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

from storage.errors import FeedNotFoundError

from ..entries import FILLER, decode_chunk, encode_op, fillers_needed, unpack
from ..errors import FileChangedError, FolderError, MalformedChunkError, MalformedRecordError
from . import dirs
from .apply import clean_temp, move_file, remove_file, write_file
from .chunking import Chunker, chunk_id
from .disk import DiskReserve, SpaceFn, disk_space, reason
from .gate import Gate
from .ignore import IgnoreRules
from .merge import FolderState, Version
from .model import ChunkRef, Op, Stamp
from .padding import encode_chunk
from .plan import Download, Forget, MarkSynced, MoveLocal, RecordDelete, RecordPut, RemoveLocal, Synced, plan
from .reader import OpReader
from .scan import scan
from .stream import chunks_of

if TYPE_CHECKING:
    from ..groups import Group

log = logging.getLogger(__name__)
APPEND_BATCH = 16  # chunks per signed append
BACKOFF_MAX = 60.0  # seconds between two attempts after repeated failures, at most
MAX_FAILED_SHOWN = 100  # paths listed in status (all are counted)
MAX_FILLERS = 1 << 20  # entries written at most to make clock room for one op
APPEND_FILLERS = 1024  # filler entries per signed append


@dataclasses.dataclass(frozen=True)
class PathFailure:
    path: str
    reason: str  # "cannot apply: name too long for this file system"
    time: float


class FolderSync:
    def __init__(self, group: Group, root: Path, *, rescan: float = 30.0, backoff: float = 1.0,
                 min_disk_free: DiskReserve | None = None, disk_space: SpaceFn = disk_space) -> None:
        self.group = group
        self.root = root
        self.rescan = rescan
        self.backoff = backoff  # first delay after a failed round
        self.min_disk_free = min_disk_free if min_disk_free is not None else DiskReserve(percent=1.0)
        self.disk_space = disk_space
        self.reader = OpReader(group)
        self.pending_downloads = 0
        self.pending_bytes = 0
        self.error = ""  # why the last round failed ("" once a round succeeds)
        self.last_error = ""  # the last failure ever seen, and when
        self.last_error_time: float | None = None
        self.failures = 0  # rounds failed in a row
        self.restarts = 0  # tasks restarted after they died
        self.failed: dict[str, PathFailure] = {}  # paths that cannot be applied or recorded now
        self._bad_versions: dict[tuple[str, Stamp], str] = {}  # -> why its chunks are not valid
        self._stopping = False
        self._next_clock = 0  # the lowest clock the next recorded operation may take
        self._synced: dict[str, Synced] = {}
        self._wake = asyncio.Event()
        self.gate = Gate(self.wake)  # folder type, stable-file wait, rescan/override/revert (gate.py)
        self._tasks: list[asyncio.Task[None]] = []
        self._unlisten: list[Any] = []
        self.rounds = 0
        self.paused: Callable[[], bool] = lambda: False  # the user paused it: no rounds (cobox.controls)
        self.chunker = Chunker(group.keys.chunker_key)  # the group's keyed boundaries

    @property
    def _scope(self) -> str:
        return f"folder-synced:{self.group.origin}"  # the same in every epoch of the group

    # -- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.root.is_dir():
            raise FolderError(f"{self.root} is not a directory")
        await asyncio.to_thread(clean_temp, self.root)
        for path, value in (await self.group.store.records(self._scope)).items():
            clock, author, size, mtime, content = msgpack.unpackb(value)
            self._synced[path] = Synced(Stamp(clock, author), size, mtime, content)
        for feed in self.group.all_feeds():
            self._unlisten.append(feed.listen(lambda _e: self._wake.set()))
        for epoch in self.group.chain():  # every epoch's feeds are read (cobox.removal)
            self._unlisten.append(epoch.on_feed_added(
                lambda feed: self._unlisten.append(feed.listen(lambda _e: self._wake.set()))))
        self._stopping = False
        self._spawn("folder-sync", self._run)
        self._spawn("folder-watch", self._watch)
        self._wake.set()

    async def stop(self) -> None:
        self._stopping = True
        self.gate.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for u in self._unlisten:
            u()
        self._unlisten.clear()

    def wake(self) -> None:
        self._wake.set()

    def _spawn(self, name: str, fn: Callable[[], Coroutine[Any, Any, None]], delay: float = 0.0) -> None:
        """Run ``fn`` as a task; if it ever ends with an exception, record it and start it again
        after a backoff (doubling up to ``BACKOFF_MAX``)."""
        async def body() -> None:
            if delay:
                await asyncio.sleep(delay)
            await fn()

        task = asyncio.get_running_loop().create_task(body(), name=name)
        self._tasks = [t for t in self._tasks if not t.done()] + [task]

        def done(t: asyncio.Task[None]) -> None:
            if t.cancelled() or self._stopping:
                return
            e = t.exception()
            if e is None:
                return
            self._note_error(f"{name} task died", e)
            self.restarts += 1
            self._spawn(name, fn, min(BACKOFF_MAX, self.backoff * 2 ** min(self.restarts, 16)))

        task.add_done_callback(done)

    def _note_error(self, what: str, e: BaseException) -> None:
        self.error = self.last_error = f"{what}: {type(e).__name__}: {e}"[:500]
        self.last_error_time = time.time()
        log.warning("folder %s: %s", self.root, self.error, exc_info=not isinstance(e, (OSError, FolderError)))

    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancellation that comes
            # as the event is set, and stop() then waits for this task forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.rescan):
                    await self._wake.wait()
            self._wake.clear()
            if self.paused():
                continue
            try:
                await self.round()
            except Exception as e:  # any failure is recorded and retried, never fatal
                self.failures += 1
                self._note_error("round failed", e)
                await asyncio.sleep(min(BACKOFF_MAX, self.backoff * 2 ** min(self.failures - 1, 16)))
                self._wake.set()
            else:
                self.failures = 0
                self.error = ""

    async def _watch(self) -> None:
        try:
            import watchfiles
        except ImportError:
            return
        async for _changes in watchfiles.awatch(self.root, debounce=300, recursive=True,
                                                watch_filter=lambda _c, p: ".cobox-tmp-" not in p):
            self._wake.set()

    # -- one round ----------------------------------------------------------------------------

    @property
    def state(self) -> FolderState:
        """Every folder operation of the group read so far, merged."""
        return self.reader.state

    @property
    def _ops(self) -> list[Op]:
        return self.reader._ops

    def _take(self, feed: Any, seq: int, data: bytes) -> bool:
        return self.reader.take(feed, seq, data)

    async def read_ops(self) -> FolderState:
        """Read and merge what is new (:class:`.reader.OpReader`)."""
        return await self.reader.read()

    async def round(self) -> None:
        self.rounds += 1
        state = await self.read_ops()
        rules = await asyncio.to_thread(IgnoreRules.load, self.root)
        synced = dict(self._synced)

        def want(path: str, size: int, mtime: int) -> bool:
            s = synced.get(path)
            return s is None or s.size != size or s.mtime != mtime

        local = await asyncio.to_thread(scan, self.root, rules, want, self.chunker)
        async with self.reader.merging:  # O(files), so off the loop; on a settled state
            actions = await asyncio.to_thread(plan, state, local, synced, ignored=rules)
        actions = self.gate.admit(state, local, synced, actions, rules)
        waiting = waiting_bytes = 0
        for a in actions:
            if isinstance(a, Download) and not self._available(a.version):
                waiting += 1
                waiting_bytes += a.version.size
                continue
            path = a.dst if isinstance(a, MoveLocal) else a.path
            try:
                await self._act(a)
            except FileChangedError as e:  # the file changed under us (being written): next round
                log.info("not touching %s now: %s", path, e)
            except (OSError, FolderError) as e:  # this path only; the round goes on
                verb = "cannot record" if isinstance(a, RecordPut | RecordDelete) else "cannot apply"
                if path not in self.failed:
                    log.warning("folder %s: %s: %s: %s", self.root, path, verb, reason(e))
                self.failed[path] = PathFailure(path, f"{verb}: {reason(e)}", time.time())
            else:
                self.failed.pop(path, None)
        for path in [p for p in self.failed if p not in state.files and p not in local]:
            del self.failed[path]  # gone on both sides
        self.pending_downloads, self.pending_bytes = waiting, waiting_bytes
        self.gate.round_done()

    async def _act(self, a: Any) -> None:
        if dirs.handles(a):  # a directory (dirs.py)
            await dirs.act(self, a)
        elif isinstance(a, Download):
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
            await self.record(self.state.delete(a.path, self.group.device_id, a.base))
            await self._forget(a.path)
        elif isinstance(a, RecordPut):
            await self._record_put(a)

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
        """The verified bytes of ``ref``; ``MalformedChunkError`` if the entry it names is not
        that chunk (a log entry, an op, other bytes)."""
        feed = self.group.store.feed(ref.feed)
        plain = self.group.open(ref.feed, ref.seq, await feed.get(ref.seq))
        try:
            if plain is None:
                raise MalformedChunkError("does not decrypt with the group key")
            data = decode_chunk(unpack(plain))
        except MalformedRecordError as e:
            raise MalformedChunkError(f"chunk {ref.id.hex()[:16]} names an entry that is not a chunk ({e})") from None
        if len(data) != ref.size or chunk_id(data) != ref.id:
            raise MalformedChunkError(f"chunk {ref.id.hex()[:16]} does not match its id")
        return data

    async def _download(self, a: Download) -> None:
        loop = asyncio.get_running_loop()
        v = a.version
        bad = self._bad_versions.get((v.path, v.stamp))
        if bad is not None:
            raise MalformedChunkError(bad)
        await asyncio.to_thread(self.min_disk_free.check, self.root, v.size, self.disk_space)

        def pieces() -> Iterator[bytes]:  # runs in the writer thread, one chunk at a time
            for ref in v.chunks:
                yield asyncio.run_coroutine_threadsafe(self._chunk(ref), loop).result()

        try:
            out = await asyncio.to_thread(write_file, self.root, a.path, pieces(), size=v.size, mode=v.mode,
                                          mtime=v.mtime, expect=a.replace)
        except MalformedChunkError as e:
            self._bad_versions[(v.path, v.stamp)] = str(e)
            # counted against the op's author, once per stamp
            self.group.refusals.record(v.stamp.author, b"op:" + v.stamp.author, v.stamp.clock, f"{v.path!r}: {e}")
            raise
        await self._mark(a.path, Synced(v.stamp, out.size, out.mtime, v.content))

    async def _record_put(self, a: RecordPut) -> None:
        path = self.root / a.path
        known = ChainMap(self.reader.own_chunks, self.state.known_chunks())  # type: ignore[arg-type]
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
                    known[cid] = self.reader.own_chunks[cid] = ref
                batch.clear()
                batch_ids.clear()
                batched.clear()

        order: list[bytes] = []
        async for c in chunks_of(path, self.chunker):
            cid = chunk_id(c)
            order.append(cid)
            if cid not in known and cid not in batched:
                batch.append(encode_chunk(c))  # padded to its size class
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
        op = await self.record(self.state.put(a.path, st.st_size, a.local.mode, st.st_mtime_ns, tuple(refs),
                                               self.group.device_id, a.base))
        await self._mark(a.path, Synced(op.stamp, st.st_size, st.st_mtime_ns, op.content))

    async def record(self, op: Op) -> Op:
        """Append ``op`` with a clock above every operation merged and every one recorded since,
        so a round can record many files without re-merging after each (which would make a round
        quadratic in the number of files). If a member pushed the clocks beyond what our next
        entry may carry (``model.clock_bound``), filler entries make the room first."""
        clock = max(op.clock, self._next_clock)
        self._next_clock = clock + 1  # taken now: a record() running beside this one gets another
        op = dataclasses.replace(op, clock=clock)
        data = encode_op(op)
        feed = self.group.own_feed()
        need = fillers_needed(clock, feed.next_seq if feed is not None else 0)
        if need > MAX_FILLERS:
            raise FolderError(f"a member pushed the clocks {need} entries ahead of this device: not recording")
        while need > 0:  # appends in between only add room
            n = min(need, APPEND_FILLERS)
            await self._append([FILLER] * n)
            need -= n
        await self._append([data])
        return op

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
            "files": sum(1 for v in files.values() if v.kind != "dir"),  # directories are not files
            "bytes": sum(v.size for v in files.values()),
            "pending_down": self.pending_downloads,
            "pending_down_bytes": self.pending_bytes,
            "pending_up": sum(1 for p in files if p not in self._synced),
            "conflicts": sorted(self.state.conflicts()),
            "rounds": self.rounds,
            "paused": self.paused(),
            "error": self.error,
            "last_error": self.last_error,
            "last_error_time": self.last_error_time,
            "failures": self.failures,
            "restarts": self.restarts,
            "failed": [{"path": f.path, "reason": f.reason, "time": f.time}
                       for f in sorted(self.failed.values(), key=lambda f: f.path)[:MAX_FAILED_SHOWN]],
            "failed_count": len(self.failed),
            "devices": self.group.devices_status(),
            "rescan_interval": self.rescan,
            **self.gate.status(),
        }


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
