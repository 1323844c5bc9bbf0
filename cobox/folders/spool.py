"""The receiver's spool: another member's run of chunk entries written into a temp file as the
reader opens them, so that a large new file is on disk by the time its operation arrives.

Theory of operation
-------------------
A sender appends a file's new chunks in order and then the ``Put`` that lists them
(``record.py``), so on a receiver the chunks of a large new file arrive as one run of
consecutive chunk entries of one feed, seconds before the operation. ``OpReader`` opens
(decrypts and strictly decodes) every new entry anyway, to find the operations; each chunk
entry of another member's feed it hands to ``Spool.chunk`` (in the reader's worker thread), and
every other entry to ``Spool.other``. Per feed the spool keeps the current run: its first place,
each chunk's size and BLAKE3 id, and its bytes, in memory until the run passes ``FILE_AFTER``
bytes (more than a sender keeps in flight between a batch of small files' chunks and their
operations, so runs of small files end in memory and cost no write), then in a temp file
``.cobox-tmp-spool-<random>`` at the folder's root, appended to as chunks come. Any other entry
of that feed, or a chunk that does not follow, ends the run.

When a round downloads a large version (``fetch.write_version``), ``claim(refs)`` looks for a run with
a file that starts at the version's first chunk and whose places, sizes and ids are the
version's references, one for one, for as far as the run goes: then the temp file holds the
version's first bytes (usually all of them; the last chunks may have been stored while the
reader was reading), and the download appends the rest from the store, syncs and renames it
(``apply.finish_file``), with the checks of any download. The ids were computed from the
entries the reader opened: entries that verified under the feed's signed tree (``storage``) and
decrypted under the group key, bound to their places, which cannot change (a second entry at a
place is a fork). So a claimed file holds exactly what reading the store and opening each entry
again would write. Anything else (a version starting elsewhere: its first chunks deduplicated
against older ones, or in the middle of a run) is left to the normal path, which reads the
store.

A run that ends in memory (small files: a sender appends a batch of them, up to
``smallbatch.SMALL_BATCH_BYTES``, then their operations) is kept for the round that merges the
operation ending it: a batch of small downloads (``fetch.write_versions``) takes each version's
chunks out of it (``take(refs)``: a version's references, one for one, anywhere in the run),
checked as a claim is, and writes them without reading the store or opening an entry again.
What ended runs keep in memory is bounded (``KEPT_BYTES``, ``KEPT_RUNS``): a run that would
cross it is dropped at once, so the runs kept are the ones the rounds reach first, and what a
version took is let go at once.

Replication may store a feed's entries a little out of order (several requests in flight); the
reader waits a moment for a hole to fill where a run worth keeping goes on (``wants``: one with
its file, or ``HOLD_AFTER`` bytes in memory: a large file's first megabytes; the cost, a hole
that does not fill holds the operations after it back for ``HOLD`` seconds once per run, is
paid also by runs of small files that never get a file), and the spool takes each feed's
entries in order of place (``Order``): one that still comes early waits
(at most ``REORDER_BYTES`` of chunks and ``REORDER_ENTRIES`` entries) for the ones before it; a
gap that does not fill within those bounds, or within ``WAIT`` seconds, ends the run and is
passed over. Only entries stored since the folder started are spooled (``begin``): what a
device already held then is not written again.

Bounds: at most ``MAX_RUNS`` runs growing or in a file at once (the oldest is dropped),
``FILE_AFTER`` bytes in memory per run and ``HELD_BYTES`` for all of them, ``KEPT_BYTES`` for
the ended runs kept in memory; a run that ended and was not claimed by the
end of the round whose read merged the entry that ended it is removed (``sweep``; one ended by
reading ahead while a round acts waits for the next round: ``mark``), and every run at
``close``. A crash leaves temp files, which ``apply.clean_temp`` removes at start. A write
that fails (a full disk) drops the run, and so does a run about to cross the free space the
folder keeps (``room``, checked before a run gets its file and every ``CHECK_EVERY`` bytes):
the download then reads the store and reports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from storage.blobs import write_gathered

from .chunking import chunk_id
from .model import ChunkRef
from .paths import TMP_PREFIX
from .writeback import Flusher

log = logging.getLogger(__name__)

FILE_AFTER = 16 * 1024 * 1024  # a run is held in memory up to this size, then written to a temp file
HELD_BYTES = 32 * 1024 * 1024  # held in memory by all runs together at most (then the run growing gets its file)
MAX_RUNS = 4  # runs kept at once (feeds sending large files at the same time)
WAIT = 30.0  # seconds a gap waits for its entries
REORDER_BYTES = 4 * 1024 * 1024  # chunks held at most while earlier entries are missing
REORDER_ENTRIES = 4096  # entries held at most while earlier ones are missing
KEPT_BYTES = 8 * 1024 * 1024  # ended runs kept in memory for batches of small downloads (take), at most
KEPT_RUNS = 256  # and how many of them
HOLD_AFTER = 1024 * 1024  # a run this large is waited for at a hole (``wants``), in memory or in its file
CHECK_EVERY = 64 * 1024 * 1024  # bytes written between checks of the free space
SPOOL_PREFIX = f"{TMP_PREFIX}spool-"


@dataclasses.dataclass(eq=False)  # runs are compared by identity
class Run:
    feed: bytes
    first: int
    sizes: list[int] = dataclasses.field(default_factory=list)
    ids: list[bytes] = dataclasses.field(default_factory=list)
    held: list[bytes | None] = dataclasses.field(default_factory=list)  # the bytes, until the run has a file
    taken: int = 0  # bytes of an ended run in memory that ``take`` handed out (None in ``held``)
    size: int = 0
    path: Path | None = None
    fd: int = -1
    checked: int = 0  # size at the last free-space check
    ended: bool = False
    ended_at: int = 0  # the spool's mark when it ended (sweep)
    flusher: Flusher | None = None  # writeback behind the file's writes (writeback.py)

    @property
    def next(self) -> int:
        return self.first + len(self.ids)


@dataclasses.dataclass(eq=False)
class Order:
    """One feed's entries put back in order: replication may store a few of them out of order."""

    expect: int  # the next place to take
    waiting: dict[int, bytes | None] = dataclasses.field(default_factory=dict)  # a chunk, or None: other
    waiting_bytes: int = 0
    since: float | None = None  # when the oldest of what waits arrived (time.monotonic())


class Spool:
    def __init__(self, root: Path, room: Callable[[int], bool], enabled: Callable[[], bool] = lambda: True) -> None:
        self.root = root
        self.room = room  # room(n): whether n more bytes may be written under root (the reserve)
        self.enabled = enabled  # false for a folder that does not receive (send-only)
        self._runs: list[Run] = []  # every run kept, oldest first
        self._open: dict[bytes, Run] = {}  # feed -> its run still being extended
        self._kept: list[Run] = []  # ended runs kept in memory for ``take``, oldest first
        self._kept_bytes = 0  # what they still hold
        self._order: dict[bytes, Order] = {}
        self._lock = threading.Lock()
        self._marks = 0  # reads that merged what was decoded (mark)
        self.claimed = 0  # versions written from the spool's files (tests, status)
        self.taken = 0  # versions written from runs kept in memory (take)

    # -- the reader's side (a worker thread) ---------------------------------------------------

    def begin(self, feeds: dict[bytes, int]) -> None:
        """Take each feed's entries from the place given on (``FolderSync.start``: what a feed
        held then); a feed not named here is taken from its first entry."""
        with self._lock:
            for feed, seq in feeds.items():
                order = self._order.setdefault(feed, Order(seq))
                if order.expect < seq:
                    order.expect = seq
                    for k in [k for k in order.waiting if k < seq]:
                        data = order.waiting.pop(k)
                        order.waiting_bytes -= len(data) if data is not None else 0
                    self._drain(feed, order)

    def chunk(self, feed: bytes, seq: int, data: bytes) -> None:
        """Chunk entry ``seq`` of ``feed`` opened to ``data``."""
        if self.enabled():
            self._arrive(feed, seq, data)

    def other(self, feed: bytes, seq: int) -> None:
        """Entry ``seq`` of ``feed`` is not a chunk: it ends that feed's run."""
        self._arrive(feed, seq, None)

    def wants(self, feed: bytes, seq: int) -> bool:
        """Whether a run goes on at entry ``seq`` of ``feed`` that is worth waiting a moment
        for (the reader does, ``OpReader._hold``): one being written to its file, or one still
        in memory that holds ``HOLD_AFTER`` bytes already (a large file's first megabytes: when
        only runs with a file were waited for, the first hole in those, which replication makes
        often, ended the run, so no large file was ever written from the spool)."""
        with self._lock:
            run = self._open.get(feed)
            return (run is not None and (run.path is not None or run.size >= HOLD_AFTER) and run.next == seq
                    and self.enabled())

    def _arrive(self, feed: bytes, seq: int, data: bytes | None) -> None:
        with self._lock:
            order = self._order.setdefault(feed, Order(0))
            if seq < order.expect or seq in order.waiting:
                return  # held before, or passed over
            if seq > order.expect:
                if not order.waiting:
                    order.since = time.monotonic()
                order.waiting[seq] = data
                order.waiting_bytes += len(data) if data is not None else 0
                if order.waiting_bytes > REORDER_BYTES or len(order.waiting) > REORDER_ENTRIES:
                    self._pass_gap(feed, order)
                return
            self._take(feed, seq, data)
            order.expect = seq + 1
            self._drain(feed, order)

    def _drain(self, feed: bytes, order: Order) -> None:
        while order.expect in order.waiting:
            data = order.waiting.pop(order.expect)
            order.waiting_bytes -= len(data) if data is not None else 0
            self._take(feed, order.expect, data)
            order.expect += 1
        order.since = time.monotonic() if order.waiting else None

    def _pass_gap(self, feed: bytes, order: Order) -> None:
        """The entries before the first one waiting are not coming soon: go on without them."""
        run = self._open.get(feed)
        if run is not None:
            self._end(run)
        order.expect = min(order.waiting)
        self._drain(feed, order)

    def _take(self, feed: bytes, seq: int, data: bytes | None) -> None:
        run = self._open.get(feed)
        if data is None or (run is not None and run.next != seq):
            if run is not None:
                self._end(run)
            if data is None:
                return
            run = None
        if run is None:
            if len(self._runs) >= MAX_RUNS:
                self._drop(self._runs[0])
            run = self._open[feed] = Run(feed, seq)
            self._runs.append(run)
        run.sizes.append(len(data))
        run.ids.append(chunk_id(data))
        run.size += len(data)
        try:
            if run.path is None:
                run.held.append(data)
                if run.size > FILE_AFTER or sum(r.size for r in self._runs if r.path is None) > HELD_BYTES:
                    self._file(run)
            else:
                self._write(run, [data])
        except OSError as e:
            log.info("folder %s: not spooling a run of chunks: %s", self.root, e)
            self._drop(run)

    # -- the download's side -------------------------------------------------------------------

    def claim(self, refs: Sequence[ChunkRef]) -> tuple[Path, int] | None:
        """``(path, k)``: a temp file holding exactly the first ``k`` chunks of ``refs`` (at
        least one), taken out of the spool (the caller appends the rest and renames it, or
        removes it); None if no run starts with them. A run may hold only the first chunks of a
        version when the last ones arrived while the reader was reading (they are read from the
        store then)."""
        if not refs:
            return None
        with self._lock:
            for run in self._runs:
                if run.path is not None and run.feed == refs[0].feed and run.first == refs[0].seq:
                    k = self._prefix(run, refs)
                    if k > 0:
                        break
            else:
                return None
            self._runs.remove(run)
            if self._open.get(run.feed) is run:
                del self._open[run.feed]
            path = run.path
            assert path is not None
            size = sum(run.sizes[:k])
            try:
                if run.size != size:
                    os.ftruncate(run.fd, size)
            except OSError:
                self._remove(run)
                return None
            os.close(run.fd)
            run.fd = -1
            self.claimed += 1
            return path, k

    def take(self, refs: Sequence[ChunkRef]) -> list[bytes] | None:
        """The chunks of ``refs``, if an ended run kept in memory holds every one of them, one
        for one (place, size and id), from anywhere in the run; they are taken out of it. None
        otherwise (also for chunks another version took: the store has them)."""
        if not refs:
            return None
        first = refs[0]
        with self._lock:
            for run in self._kept:
                at = first.seq - run.first
                if (run.feed == first.feed and at >= 0 and at + len(refs) <= len(run.ids)
                        and self._prefix(run, refs, at) == len(refs)):
                    break
            else:
                return None
            data = run.held[at:at + len(refs)]
            if any(d is None for d in data):
                return None
            run.held[at:at + len(refs)] = [None] * len(refs)
            size = sum(run.sizes[at:at + len(refs)])
            run.taken += size
            self._kept_bytes -= size
            if run.taken == run.size:
                self._kept.remove(run)
            self.taken += 1
            return data  # type: ignore[return-value]  # no None among them (checked)

    @staticmethod
    def _prefix(run: Run, refs: Sequence[ChunkRef], at: int = 0) -> int:
        """How many of ``refs``, from the first, are the run's chunks one for one from its
        ``at``-th chunk on."""
        n = min(len(refs), len(run.ids) - at)
        for k in range(n):
            ref, i = refs[k], at + k
            if (ref.feed != run.feed or ref.seq != run.first + i or ref.size != run.sizes[i]
                    or ref.id != run.ids[i]):
                return k
        return n

    def mark(self) -> int:
        """A read has merged every operation decoded so far: the runs that ended until now are
        those its round can claim. Returns the mark to ``sweep`` with at that round's end."""
        with self._lock:
            self._marks += 1
            return self._marks

    def sweep(self, upto: int | None = None) -> None:
        """Remove the runs that ended before ``mark`` returned ``upto`` (at the end of each round:
        the round that merged the entry ending a run has downloaded what it could; a run the
        reader ended after that read, reading ahead while the round acted, waits for the next
        round), all ended runs without ``upto``; and go on past a gap that did not fill within
        ``WAIT`` seconds."""
        now = time.monotonic()
        with self._lock:
            for feed, order in self._order.items():
                if order.since is not None and now - order.since > WAIT:
                    self._pass_gap(feed, order)
            for run in list(self._runs):
                if run.ended and (upto is None or run.ended_at < upto):
                    self._drop(run)
            for run in [r for r in self._kept if upto is None or r.ended_at < upto]:
                self._let_go(run)

    def close(self) -> None:
        """Remove every run (the folder stops); where each feed is stays known."""
        with self._lock:
            for order in self._order.values():
                order.waiting.clear()
                order.waiting_bytes = 0
                order.since = None
            for run in list(self._runs):
                self._drop(run)
            for run in list(self._kept):
                self._let_go(run)

    def status(self) -> dict[str, int]:
        with self._lock:
            return {"runs": len(self._runs) + len(self._kept),
                    "bytes": sum(r.size for r in self._runs) + self._kept_bytes, "claimed": self.claimed,
                    "taken": self.taken}

    # -- under the lock ------------------------------------------------------------------------

    def _end(self, run: Run) -> None:
        del self._open[run.feed]
        run.ended = True
        run.ended_at = self._marks
        if run.path is not None:
            return
        held = run.held
        self._drop(run)  # in memory: kept for ``take`` if there is room
        if self._kept_bytes + run.size <= KEPT_BYTES and len(self._kept) < KEPT_RUNS:
            run.held = held
            self._kept.append(run)
            self._kept_bytes += run.size

    def _let_go(self, run: Run) -> None:
        self._kept.remove(run)
        self._kept_bytes -= run.size - run.taken
        run.held = []

    def _file(self, run: Run) -> None:
        if not self.room(run.size):
            raise OSError("the free space the folder keeps (folders.min_disk_free) would be crossed")
        run.path = self.root / f"{SPOOL_PREFIX}{secrets.token_hex(8)}"
        run.fd = os.open(run.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        run.flusher = Flusher(run.fd)
        run.checked = run.size
        held, run.held = run.held, []
        self._write(run, [h for h in held if h is not None])  # (an open run has no None)

    def _write(self, run: Run, pieces: list[bytes]) -> None:
        if run.size - run.checked >= CHECK_EVERY:
            if not self.room(CHECK_EVERY):
                raise OSError("the free space the folder keeps (folders.min_disk_free) would be crossed")
            run.checked = run.size
        write_gathered(run.fd, pieces)
        if run.flusher is not None:
            run.flusher.wrote(run.size)

    def _drop(self, run: Run) -> None:
        if run in self._runs:
            self._runs.remove(run)
        if self._open.get(run.feed) is run:
            del self._open[run.feed]
        self._remove(run)

    @staticmethod
    def _remove(run: Run) -> None:
        if run.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(run.fd)
            run.fd = -1
        if run.path is not None:
            with contextlib.suppress(FileNotFoundError):
                run.path.unlink()
            run.path = None
        run.held = []
