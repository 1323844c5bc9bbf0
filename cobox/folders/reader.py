"""Reading a folder's operations from the group's feeds: decode every new entry strictly and
fold the operations into the merged state, off the event loop.

Theory of operation
-------------------
``OpReader.read`` walks the entries of every admitted feed not read yet (a ``RangeSet`` per
feed), in bounded slices. Each slice is decrypted and decoded in a worker thread
(``take``): a folder operation is kept with the feed's owner as its author and its place as
``seq``; one of this device's chunk entries is noted (``own_chunks``: the chunks it can
reference without storing them again); log entries and fillers are checked and passed over; the
first valid profile of a device names its conflict copies (``FolderState.names``);
anything else, or anything malformed, is refused and counted against the feed's owner
(``Group.refuse``); the chunk entries this device appends itself are noted by the sender and
skipped (``skip``), not decrypted again. The chunks of other members' feeds go to the
folder's ``spool`` too (``spool.py``: a large new file written as its chunks arrive), in order
of place: the held entries after a hole where a spooled run goes on are read once the hole
fills, or ``HOLD`` seconds later (``_hold``). Entries held outside the store (``feed.outside``,
released by ``cobox.folders.single``) are not read at all: they were verified chunk entries
when they were released, so they count as read chunk entries without being rebuilt.
Operations are folded into ``state`` (``FolderState.update``, incremental) at most
``MERGE_BATCH`` at a time, in a worker thread too. ``merging`` is held for the whole read, so
one reader runs at a time and ``FolderSync`` can plan on a settled state.

Reading ahead (``prefetch``): entries arrive while a round writes files, and the folder's
prefetch task decodes them then (the same walk, ``_walk``, without the merge), so that
decryption and the downloads' writes overlap instead of taking turns; the next round's read
only merges. What the walk shares with the event loop is touched on the loop: the chunk
entries and the refusals a worker thread noted are applied after each slice (``apply_taken``:
``chunk_entries``, ``Group.refuse``), devices' names with the next merge. The spool's runs that
reading ahead ends after a round's read are left for the next round (``Spool.mark``). A walk
that is cancelled (the folder stops) waits for its thread's slice before it lets go of the
lock (``_in_thread``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from storage import RangeSet

from ..devices import Profile, claimed_by
from ..entries import (
    PROFILE_TYPE,
    decode_chunk,
    decode_chunk_entry,
    decode_log,
    is_chunk_plaintext,
    is_epoch_entry,
    is_folder_record,
    op_from,
    record_type,
    unpack,
)
from ..errors import MalformedProfileError, MalformedRecordError
from .chunking import chunk_id
from .merge import FolderState
from .model import ChunkRef, Op
from .spool import Spool

if TYPE_CHECKING:
    from ..groups import Group

READ_BYTES = 4 * 1024 * 1024  # entries read per slice when catching up
READ_ENTRIES = 4096  # and at most this many (the rows of a slice are listed on the loop: ~1 ms per 1,000)
PREFETCH_BYTES = 1024 * 1024  # per slice read ahead: beside a round's downloads (peak RSS 130-142 -> 125-128 MB)
HOLD = 2.0  # seconds a hole in a spooled feed is waited for before reading past it
MERGE_BATCH = 5_000  # decoded operations merged at once (bounds memory and GC work when catching up)
TAKE_SECONDS = 0.02  # a worker thread's turn at decoding a slice before the loop runs (see _take_all)
FREEZE_OPS = 1_000  # a merge of at least this many operations freezes what it built (see read)


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a worker thread; cancelled, it still waits for the thread to finish
    before raising (a thread cannot be stopped, and the walk's lock must outlive its work)."""
    fut = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        while not fut.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(fut)
        raise


class OpReader:
    def __init__(self, group: Group) -> None:
        self.group = group
        self.state = FolderState.merge([])
        self.merging = asyncio.Lock()
        self.own_chunks: dict[bytes, ChunkRef] = {}
        self.chunk_entries: dict[bytes, RangeSet] = {}  # feed -> entries read as chunks (cobox.folders.prune)
        self._ops: list[Op] = []  # decoded, not merged yet
        self._read: dict[bytes, RangeSet] = {}  # feed -> entries read
        self._forgotten: object = ()  # the cleared ranges dedup was last told to forget
        self.spool: Spool | None = None  # other members' runs of chunks, written ahead (spool.py)
        self.on_hold: Callable[[float], None] | None = None  # wake the folder after that many seconds
        self._holes: dict[bytes, tuple[int, float]] = {}  # feed -> (the first entry missing, since)
        self._walking = asyncio.Lock()  # one walk over the feeds at a time (read or prefetch)
        self._noted: list[tuple[bytes, int]] = []  # chunk entries taken in a thread, for chunk_entries
        self._refused: list[tuple[bytes, int, str]] = []  # entries refused in a thread (feed, seq, why)
        self._names: dict[bytes, str] = {}  # devices' names found, not merged yet
        self.swept_upto: int | None = None  # the spool's mark at the end of the last read

    async def read(self) -> FolderState:
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
        async with self.merging, self._walking:
            await self._walk(merge=True)
            await self._merge_pending()
            self._forget_cleared()
            if self.spool is not None:
                self.swept_upto = self.spool.mark()  # the runs this read's round may sweep
        return self.state

    async def prefetch(self) -> None:
        """Decrypt and decode what other members' feeds brought since the last walk, without
        merging it, so that reading overlaps a round's downloads: a round then merges what was
        decoded meanwhile (``read``) instead of reading it then. Entries arrive while a round
        writes files; reading them only once the round ends left the disk idle during reads and
        the decryption idle during writes. The state is not touched (a round acts on the state
        it planned on, and the recorder builds operations on it); at most ``MERGE_BATCH``
        decoded operations wait for a merge, then the prefetch stops. This device's own feed
        is left to ``read``: its chunk entries are skipped once their append returns, and a
        walk in between would decrypt them again. While a round's read walks, this waits for it
        and then reads what came meanwhile, beside the round's downloads."""
        async with self._walking:
            await self._walk(merge=False)

    async def _walk(self, merge: bool) -> None:
        """Take every entry not read yet, feed by feed, in bounded slices (see ``read``)."""
        for feed in self.group.all_feeds():
            if not merge and (feed.writable or len(self._ops) >= MERGE_BATCH):
                continue
            done = self._read.setdefault(feed.key, RangeSet())
            for lo, hi in list(feed.outside):  # released chunk entries: nothing to rebuild
                for gap_start, gap_end in done.missing(lo, hi):
                    done.add(gap_start, gap_end)
                    self.chunk_entries.setdefault(feed.key, RangeSet()).add(gap_start, gap_end)
            after = 0  # the end of the held range before
            for start, end in list(feed.have):
                if self._hold(feed, done, after, start):
                    break
                after = end
                for gap_start, gap_end in done.missing(start, end):
                    seq = gap_start
                    while seq < gap_end:
                        # Bounded slices: a feed of large chunks is never held in memory at once.
                        batch = await feed.get_range(seq, min(gap_end, seq + READ_ENTRIES),
                                                     max_bytes=READ_BYTES if merge else PREFETCH_BYTES)
                        if not batch:
                            break
                        taken = 0
                        while taken < len(batch):  # in turns of at most TAKE_SECONDS (see _take_all)
                            taken = await _in_thread(self._take_all, feed, seq, batch, merge, taken)
                            self.apply_taken()
                            done.add(gap_start, seq + taken)
                        seq += len(batch)
                        if not merge and len(self._ops) >= MERGE_BATCH:
                            return

    def apply_taken(self) -> None:
        """Count the chunk entries and refusals that ``take`` noted in a worker thread, on the
        loop (``skip`` and a prune use ``chunk_entries`` there; refusals are not thread-safe)."""
        noted, self._noted = self._noted, []
        for key, seq in noted:
            self.chunk_entries.setdefault(key, RangeSet()).add(seq, seq + 1)
        refused, self._refused = self._refused, []
        for key, seq, reason in refused:
            self.group.refuse(key, seq, reason)

    def _hold(self, feed: Any, done: RangeSet, hole: int, start: int) -> bool:
        """Whether to stop reading ``feed`` before its held entries from ``start`` on, for now:
        entries ``[hole, start)`` are missing (replication stores a few out of order) and the
        folder's spool is writing a run that goes on at ``hole`` (``spool.py`` wants a run's
        entries in order). A hole is waited for at most ``HOLD`` seconds (then it is read past:
        it may never fill), and the folder is woken then (``on_hold``)."""
        if (self.spool is None or feed.writable or hole >= start or hole in done
                or not self.spool.wants(feed.key, hole)):
            return False
        now = time.monotonic()
        seen = self._holes.get(feed.key)
        if seen is None or seen[0] != hole:
            self._holes[feed.key] = seen = (hole, now)
            if self.on_hold is not None:
                self.on_hold(HOLD)
        return now - seen[1] < HOLD

    def _forget_cleared(self) -> None:
        """Dedup must not reuse a chunk whose entry was cleared here (``cobox.folders.prune``):
        after a restart the merge learns those chunks again from the operations. Done when what
        is cleared has changed since the last time (a restart: the first read)."""
        cleared = {f.key: f.cleared for f in self.group.feeds() if f.cleared}
        seen = tuple((k, tuple(c)) for k, c in sorted(cleared.items()))  # not a total: heals shrink it
        if seen != self._forgotten:
            self._forgotten = seen
            self.state.forget_chunks(cleared)
            for cid, ref in list(self.own_chunks.items()):
                if ref.seq in cleared.get(ref.feed, ()):
                    del self.own_chunks[cid]

    def skip(self, feed_key: bytes, start: int, end: int) -> None:
        """Entries ``[start, end)`` of ``feed_key`` need no reading: this device just appended
        them (chunk entries it noted in ``own_chunks`` itself), so they count as read chunk
        entries too (``chunk_entries``: what a prune may clear)."""
        self._read.setdefault(feed_key, RangeSet()).add(start, end)
        self.chunk_entries.setdefault(feed_key, RangeSet()).add(start, end)

    def _take_all(self, feed: Any, seq: int, batch: list[bytes], merge: bool, start: int) -> int:  # in a thread
        """Decode the entries of a slice from ``batch[start]`` on, merging every ``MERGE_BATCH``
        operations on the way (when ``merge``: a ``read``, not a ``prefetch``); returns where it
        stopped: at the end, or after the entry that took it past ``TAKE_SECONDS``.

        Why turns: each entry's decryption lets go of the GIL for a microsecond and takes it
        straight back, and a waiting thread asks the holder to drop it only after a switch
        interval *without any switch*; so the event loop, woken by each release too late to
        take the GIL, may wait for the whole slice (100-170 ms for 4,096 small operations,
        measured). Between turns this thread is idle and the loop runs."""
        deadline = time.perf_counter() + TAKE_SECONDS
        for k in range(start, len(batch)):
            self.take(feed, seq + k, batch[k])
            if merge and len(self._ops) >= MERGE_BATCH:
                ops, self._ops = self._ops, []
                self._update(ops)
            if time.perf_counter() > deadline:
                return k + 1
        return len(batch)

    async def _merge_pending(self) -> None:
        """Fold the operations decoded so far into the state, in a worker thread."""
        self.apply_taken()
        while self._ops:
            ops, self._ops = self._ops[:MERGE_BATCH], self._ops[MERGE_BATCH:]
            await _in_thread(self._update, ops)
        self._merge_names()

    def _merge_names(self) -> None:
        names, self._names = self._names, {}
        for author, name in names.items():
            self.state.names.setdefault(author, name)

    def _update(self, ops: list[Op]) -> None:  # in a worker thread
        self._merge_names()  # before the operations: a conflict copy is named by its author
        self.state.update(ops)
        if len(ops) >= FREEZE_OPS:
            gc.freeze()

    def take(self, feed: Any, seq: int, data: bytes) -> bool:
        """Note one entry: an operation (returns True), one of our chunks, or something else.
        A refused entry is counted against the feed's owner and skipped."""
        author = self.group.owner(feed.key)
        if author is None:
            return False  # not an admitted feed
        if is_epoch_entry(data):  # a device removal (cobox.removal)
            if self.spool is not None:
                self.spool.other(feed.key, seq)
            return False
        plain = self.group.open(feed.key, seq, data)
        if plain is None:
            self._refused.append((feed.key, seq, "does not decrypt with the group key"))
            if self.spool is not None:
                self.spool.other(feed.key, seq)
            return False
        spool = None if feed.writable else self.spool
        try:
            if is_chunk_plaintext(plain):  # how encode_chunk writes one: read in place, no msgpack object
                obj, kind = None, "chunk"
            else:
                obj = unpack(plain)
                kind = None if is_folder_record(obj) else record_type(obj)
            if kind == "chunk":
                chunk = decode_chunk(obj) if obj is not None else decode_chunk_entry(plain)
                self._noted.append((feed.key, seq))  # into chunk_entries on the loop (apply_taken)
                if feed.writable:
                    cid = chunk_id(chunk)
                    self.own_chunks[cid] = ChunkRef(cid, feed.key, seq, len(chunk))
                elif spool is not None:
                    spool.chunk(feed.key, seq, chunk)
                    spool = None
                return False
            if spool is not None:
                spool.other(feed.key, seq)
                spool = None
            if kind is None:
                self._ops.append(op_from(obj, author=author, seq=seq))
                return True
            if kind == "filler":
                if set(obj) != {"type"}:
                    raise MalformedRecordError("a filler entry with fields")
            elif kind == "log":
                decode_log(obj)  # (Group.log shows them)
            elif kind == PROFILE_TYPE:  # a device's name: the first one names its conflict copies
                if author not in self.state.names and author not in self._names:
                    try:
                        profile = claimed_by(Profile.from_obj(self.group.discovery_key, obj), author)
                        self._names[author] = profile.name  # into the state with the next merge
                    except MalformedProfileError:
                        pass  # cobox.devices refuses and reports it
            else:
                raise MalformedRecordError(f"unknown record type {str(kind)[:40]!r}")
        except MalformedRecordError as e:
            self._refused.append((feed.key, seq, str(e)))
        if spool is not None:  # refused: it ends the run too
            spool.other(feed.key, seq)
        return False
