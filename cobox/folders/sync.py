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
every path) and does it: a download streams its chunks from the store in runs, opened and
verified against their BLAKE3 ids in the writer thread, into ``apply.write_file`` (temp file,
fsync, rename), so memory stays bounded whatever the file size (:mod:`.fetch`); small files
are written in batches, two at once, two file-system syncs per batch (:mod:`.smallbatch`);
the local changes of a round are recorded together (:mod:`.record`: chunked in a worker
thread, many chunks per signed append, many operations per append). A download waits until
every chunk it needs has been replicated; a chunk entry of this device's own feed that is gone
here (released to a file changed since, or pruned) is wanted back from the peers that still
hold it (``storage.healing``). Rounds run one at a time, on a change of any of the group's feeds,
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
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

from storage import FeedEvent
from storage.errors import EntryMissingError

from ..errors import FileChangedError, FolderError, MalformedChunkError
from . import dirs, single
from .apply import clean_temp, move_file, remove_file
from .chunking import Chunker
from .disk import DiskReserve, SpaceFn, disk_space, reason
from .fetch import write_version
from .gate import Gate
from .ignore import IgnoreRules
from .kinds import FolderKind
from .merge import FolderState, Version
from .model import Op, Stamp
from .plan import Download, Forget, MarkSynced, MoveLocal, RecordDelete, RecordPut, RemoveLocal, Synced, plan
from .reader import OpReader
from .record import Recorder
from .scan import scan
from .smallbatch import SmallDownloads
from .spool import Spool

if TYPE_CHECKING:
    from ..groups import Group

log = logging.getLogger(__name__)
BACKOFF_MAX = 60.0  # seconds between two attempts after repeated failures, at most
MAX_FAILED_SHOWN = 100  # paths listed in status (all are counted)


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
        self.gate = Gate(self.wake)  # folder type, stable-file wait, rescan/override/revert (gate.py)
        self.reader.spool = self.spool = Spool(root, self._room, lambda: self.gate.kind is not FolderKind.SEND_ONLY)
        self.reader.on_hold = lambda delay: asyncio.get_running_loop().call_later(delay, self.wake)
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
        self._synced: dict[str, Synced] = {}
        self._unheld: set[tuple[bytes, int]] = set()  # own entries held outside, their file changed
        self.marks = 0  # changes of _synced so far (cobox.folders.single watches it)
        self.settled = asyncio.Event()  # clear while a round moves, writes or removes files (single.py)
        self.settled.set()
        self._wake = asyncio.Event()
        self._fresh = asyncio.Event()  # entries stored since the last prefetch began (_prefetch)
        self._tasks: list[asyncio.Task[None]] = []
        self._unlisten: list[Any] = []
        self.rounds = 0
        self.paused: Callable[[], bool] = lambda: False  # the user paused it: no rounds (cobox.controls)
        self.chunker = Chunker(group.keys.chunker_key)  # the group's keyed boundaries
        self.recorder = Recorder(group, root, self.reader, self.chunker)

    @property
    def _scope(self) -> str:
        return f"folder-synced:{self.group.origin}"  # the same in every epoch of the group

    # -- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.root.is_dir():
            raise FolderError(f"{self.root} is not a directory")
        await asyncio.to_thread(clean_temp, self.root)
        self.spool.begin({f.key: max((end for _, end in f.have), default=0) for f in self.group.all_feeds()})
        for path, value in (await self.group.store.records(self._scope)).items():
            clock, author, size, mtime, content = msgpack.unpackb(value)
            self._synced[path] = Synced(Stamp(clock, author), size, mtime, content)
        for feed in self.group.all_feeds():
            self._unlisten.append(feed.listen(self._on_feed_event))
        for epoch in self.group.chain():  # every epoch's feeds are read (cobox.removal)
            self._unlisten.append(epoch.on_feed_added(
                lambda feed: self._unlisten.append(feed.listen(self._on_feed_event))))
        self._stopping = False
        self._spawn("folder-sync", self._run)
        self._spawn("folder-watch", self._watch)
        self._spawn("folder-prefetch", self._prefetch)
        self._wake.set()

    def _on_feed_event(self, event: FeedEvent) -> None:
        if event.kind != "want":  # our own wish to get entries back: nothing new to do yet
            self._wake.set()
            self._fresh.set()

    async def stop(self) -> None:
        self._stopping = True
        self.gate.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for u in self._unlisten:
            u()
        self._unlisten.clear()
        await asyncio.to_thread(self.spool.close)

    def wake(self) -> None:
        self._wake.set()

    def _room(self, size: int) -> bool:
        """Whether ``size`` more bytes may be written under the folder (the spool asks, from the
        reader's thread): the free space ``min_disk_free`` keeps."""
        try:
            self.min_disk_free.check(self.root, size, self.disk_space)
        except (OSError, FolderError):
            return False
        return True

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

    async def _prefetch(self) -> None:
        """Decode entries as they arrive, also while a round writes files (``OpReader.prefetch``:
        nothing is merged; the next round merges what was decoded)."""
        while True:
            await self._fresh.wait()
            self._fresh.clear()
            if self.paused():
                continue
            try:
                await self.reader.prefetch()
            except Exception as e:  # an entry cleared meanwhile, ...: the next round's read tells
                log.debug("folder %s: reading ahead: %s: %s", self.root, type(e).__name__, e)

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
        taken = self.reader.take(feed, seq, data)
        self.reader.apply_taken()
        return taken

    async def read_ops(self) -> FolderState:
        """Read and merge what is new (:class:`.reader.OpReader`)."""
        return await self.reader.read()

    async def round(self) -> None:
        self.rounds += 1
        t0 = time.monotonic()
        state = await self.read_ops()
        swept_upto = self.reader.swept_upto  # runs that end after this read wait for the next round
        t_read = time.monotonic()
        rules = await asyncio.to_thread(IgnoreRules.load, self.root)
        synced = dict(self._synced)

        shown = state.files

        def want(path: str, size: int, mtime: int) -> bool:
            """Whether ``plan`` may need the content id: a file that differs from its ``Synced``
            record (a touch or an edit?), or one never synced that the state shows (the same
            content as the remote version?). A new file nobody else has is only recorded."""
            s = synced.get(path)
            if s is None:
                return path in shown
            return s.size != size or s.mtime != mtime

        local = await asyncio.to_thread(scan, self.root, rules, want, self.chunker)
        async with self.reader.merging:  # O(files), so off the loop; on a settled state
            actions = await asyncio.to_thread(plan, state, local, synced, ignored=rules)
        actions = self.gate.admit(state, local, synced, actions, rules)
        t_plan = time.monotonic()
        waiting = waiting_bytes = 0
        puts = [a for a in actions if isinstance(a, RecordPut) and not dirs.handles(a)]
        small = SmallDownloads(self)  # written in batches, two at once (smallbatch.py)
        new_dirs = [a for a in actions if isinstance(a, RecordPut) and dirs.handles(a)]
        self.settled.clear()
        try:
            for a in actions:
                if dirs.handles(a):  # a directory: made or removed here, recorded all together (dirs.py)
                    if not isinstance(a, RecordPut):
                        await small.flush()  # after the downloads planned before it
                        await self._act_one(a)
                    continue
                if isinstance(a, RecordPut):
                    continue  # all together, below
                if isinstance(a, Download) and not single.available(self, a.version, self._unheld):
                    waiting += 1
                    waiting_bytes += a.version.size
                    continue
                if isinstance(a, Download) and small.takes(a):
                    await small.add(a)
                    continue
                await small.flush()  # any other action comes after the downloads planned before it
                await self._act_one(a)
            await small.flush()
        finally:
            await small.close()  # its files marked, and ``settled`` set only once no file moves
            self.settled.set()
        await single.lose_unheld(self, self._unheld)
        t_act = time.monotonic()
        try:
            await dirs.record_all(self, new_dirs)
        except (OSError, FolderError) as e:
            for a in new_dirs:
                self._fail(a.path, "cannot record", e)
        if puts:
            failures = await self._record_puts(puts)
            for a in puts:
                e = failures.get(a.path)
                if e is None:
                    self.failed.pop(a.path, None)
                else:
                    self._fail(a.path, "cannot record", e)
        for path in [p for p in self.failed if p not in state.files and p not in local]:
            del self.failed[path]  # gone on both sides
        self.pending_downloads, self.pending_bytes = waiting, waiting_bytes
        await asyncio.to_thread(self.spool.sweep, swept_upto)  # may unlink a large temp file: off the loop
        self.gate.round_done()
        t_end = time.monotonic()
        if t_end - t0 > 0.5:  # where a slow round went (bench/folder.py --profile shows these lines)
            log.info("folder %s: round %d took %.2f s: read %.2f, scan+plan %.2f, %d actions %.2f, "
                     "%d recorded %.2f, %d waiting", self.root, self.rounds, t_end - t0, t_read - t0,
                     t_plan - t_read, len(actions) - len(puts), t_act - t_plan, len(puts), t_end - t_act, waiting)

    async def _act_one(self, a: Any) -> None:
        path = a.dst if isinstance(a, MoveLocal) else a.path
        try:
            await self._act(a)
        except (FileChangedError, EntryMissingError) as e:  # being written, or a chunk no longer held: next round
            log.info("not touching %s now: %s", path, e)
        except (OSError, FolderError) as e:  # this path only; the round goes on
            self._fail(path, "cannot record" if isinstance(a, RecordDelete) else "cannot apply", e)
        else:
            self.failed.pop(path, None)

    def _fail(self, path: str, verb: str, e: BaseException) -> None:
        if path not in self.failed:
            log.warning("folder %s: %s: %s: %s", self.root, path, verb, reason(e))
        self.failed[path] = PathFailure(path, f"{verb}: {reason(e)}", time.time())

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
            await single.keep_history(self, [a.path])  # the removed version stays in the history
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

    # -- actions ------------------------------------------------------------------------------

    async def _download(self, a: Download) -> None:
        v = a.version
        bad = self._bad_versions.get((v.path, v.stamp))
        if bad is not None:
            raise MalformedChunkError(bad)
        await asyncio.to_thread(self.min_disk_free.check, self.root, v.size, self.disk_space)
        if a.replace is not None:  # the replaced version stays in the history (single.py)
            await single.keep_history(self, [a.path], v.chunks)
        try:
            out = await write_version(self.group, v, self.root, a.path, a.replace, self.spool,
                                      single.local_places(self, v.chunks))
        except MalformedChunkError as e:
            self._refuse_version(v, e)
            raise
        await self._mark(a.path, Synced(v.stamp, out.size, out.mtime, v.content))

    def _refuse_version(self, v: Version, e: MalformedChunkError) -> None:
        self._bad_versions[(v.path, v.stamp)] = str(e)
        # counted against the op's author, once per stamp
        self.group.refusals.record(v.stamp.author, b"op:" + v.stamp.author, v.stamp.clock, f"{v.path!r}: {e}")

    async def _record_puts(self, puts: list[RecordPut]) -> dict[str, BaseException]:
        return await self.recorder.record_puts(puts, self.state, self._mark_all, self._wake.set)

    async def record(self, op: Op) -> Op:
        """Append one operation (:meth:`.record.Recorder.record_many`)."""
        return (await self.recorder.record_many([op]))[0]

    async def _mark(self, path: str, s: Synced) -> None:
        await self._mark_all([(path, s)])

    async def _mark_all(self, marks: list[tuple[str, Synced]]) -> None:
        """Keep the ``Synced`` records of many paths (one commit)."""
        items = []
        self.marks += 1
        for path, s in marks:
            self._synced[path] = s
            items.append((path, msgpack.packb([s.stamp.clock, s.stamp.author, s.size, s.mtime, s.content],
                                              use_bin_type=True)))
        await self.group.store.put_records(self._scope, items)

    async def _forget(self, path: str) -> None:
        if self._synced.pop(path, None) is not None:
            self.marks += 1
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


__all__ = ["FolderSync"]
