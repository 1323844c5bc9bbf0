"""History that expires: which versions a member keeps, and clearing the chunks of the others.

Theory of operation
-------------------
Every version a folder's operations wrote stays in the merged state (``FolderState.versions``),
and its chunks stay in the feeds. A member keeps, per folder, the history of ``history_days``
days (``[folders] history_days``, default 30; a per-folder override set by ``folder add
--history-days N``, kept in the ``folder-retention:<namespace>`` scope):

- every *head* of every path (what nobody built on: the current version, a deletion, each side
  of a conflict) and every version the folder shows (conflict copies) is kept, always;
- a version something newer built on (*replaced*, or deleted) is kept until ``history_days``
  after it was replaced. Operations carry no wall time, so "replaced at" is when this device
  first saw it replaced (:func:`note_replaced`, the ``folder-replaced:<namespace>`` scope, one
  record per path: version id -> time); with ``history_days = 0`` a replaced version expires at
  once.

:func:`plan` (pure) turns the merged state, those times and the policy into what to clear: the
chunk entries referenced by an expired version and by no kept version, of any path and any
author (a chunk entry is shared by dedup: a kept version elsewhere that references the same
``(feed, seq)`` keeps it). Only entries that some version references as a chunk are ever
candidates, and only those this device read as chunk entries (``OpReader.chunk_entries``):
a hostile member whose version references another feed's *operation* entry as a "chunk" must
not make us clear it when that version expires. :func:`prune` clears them
with ``Feed.clear`` (own feed and the replicas of other members' feeds alike; the replicator
does not download cleared entries again) and forgets the cleared chunks for dedup, so that a
new file with the same content stores its chunks again instead of referencing cleared ones.

What is no longer available here is reported by :func:`availability`: a version is *available*
when every chunk entry it references is stored here; if not, the backup peers whose receipts
cover those entries (and which keep history longer) are named.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from storage import RangeSet

from ..backup import retention
from ..errors import MalformedRecordError
from . import single
from .merge import FolderState, Version
from .paths import normalize_path
from .versions import heads

if TYPE_CHECKING:
    from ..groups import Group
    from .sync import FolderSync

log = logging.getLogger(__name__)
PRUNE_INTERVAL = 3600.0  # seconds between two automatic prunes of a folder
REPLACED_SCOPE = "folder-replaced"
RETENTION_SCOPE = "folder-retention"
DAY = 86400.0
MAX_DAYS = 100 * 365


@dataclass(frozen=True, slots=True)
class PrunePlan:
    """What applying the policy now does: the versions that expire, and per feed the chunk
    entries to clear (``clear``: feed key -> seqs), with the bytes they hold (plaintext sizes)."""

    expired: tuple[Version, ...]
    clear: Mapping[bytes, RangeSet]
    kept_versions: int


@dataclass(frozen=True, slots=True)
class PruneResult:
    expired: int
    cleared_entries: int
    freed_bytes: int  # entry bytes dropped from the store
    disk_freed: int  # what the file system got back (allocated bytes before - after)

    def as_json(self) -> dict[str, Any]:
        return {"expired_versions": self.expired, "cleared_entries": self.cleared_entries,
                "freed_bytes": self.freed_bytes, "disk_freed_bytes": self.disk_freed}


def vid(v: Version) -> str:
    return f"{v.stamp.clock}-{v.stamp.author.hex()}"


def replaced_versions(state: FolderState) -> dict[str, list[Version]]:
    """Per path, the versions something newer built on (not heads, not shown)."""
    shown = {v.stamp for v in state.files.values()}
    out: dict[str, list[Version]] = {}
    for path in state.versions:
        vs = list(state.versions[path].values())
        if len(vs) < 2:
            continue
        keep = {v.stamp for v in heads(vs)}
        old = [v for v in vs if v.stamp not in keep and v.stamp not in shown]
        if old:
            out[path] = old
    return out


def plan(state: FolderState, replaced_at: Mapping[str, Mapping[str, float]], now: float, days: float,
         chunks: Mapping[bytes, RangeSet]) -> PrunePlan:
    """Which versions expire at ``now`` under ``days`` of history and which chunk entries that
    frees (pure). ``replaced_at``: path -> version id -> when it was seen replaced (a replaced
    version not listed there counts as replaced ``now``); ``chunks``: per feed, the entries read
    here as chunk entries: nothing else is ever cleared."""
    expired: list[Version] = []
    old = replaced_versions(state)
    for path, vs in old.items():
        times = replaced_at.get(path, {})
        for v in vs:
            if now - times.get(vid(v), now) >= days * DAY:
                expired.append(v)
    gone = {(v.path, v.stamp) for v in expired}
    kept: set[tuple[bytes, int]] = set()
    kept_versions = 0
    for path in state.versions:
        for v in state.versions[path].values():
            if (path, v.stamp) not in gone:
                kept_versions += 1
                kept.update((c.feed, c.seq) for c in v.chunks)
    for v in state.files.values():  # conflict copies: shown under another path
        kept.update((c.feed, c.seq) for c in v.chunks)
    clear: dict[bytes, RangeSet] = {}
    for v in expired:
        for c in v.chunks:
            if (c.feed, c.seq) in kept:
                continue
            if c.seq not in chunks.get(c.feed, RangeSet()):
                continue  # not read here as a chunk (an operation, a log entry, not held)
            clear.setdefault(c.feed, RangeSet()).add(c.seq, c.seq + 1)
    return PrunePlan(tuple(expired), clear, kept_versions)


# -- the records this module keeps ----------------------------------------------------------------

def encode_times(times: Mapping[str, float]) -> bytes:
    return msgpack.packb(dict(times), use_bin_type=True)


def decode_times(value: bytes) -> dict[str, float]:
    """A ``folder-replaced`` record (written by this device; strict all the same)."""
    try:
        obj = msgpack.unpackb(value, raw=False, strict_map_key=True)
    except Exception:  # msgpack raises many types for bad input
        raise MalformedRecordError("an undecodable folder-replaced record") from None
    if not isinstance(obj, dict) or not all(
            type(k) is str and type(t) in (int, float) and 0 <= t < 1 << 40 for k, t in obj.items()):
        raise MalformedRecordError("a malformed folder-replaced record")
    return {k: float(t) for k, t in obj.items()}


async def note_replaced(sync: FolderSync, now: float | None = None) -> dict[str, dict[str, float]]:
    """Record when this device first saw each replaced version (now, for new ones); return
    every path's times. Versions no longer replaced (gone) are dropped from the records."""
    now = time.time() if now is None else now
    scope = sync.group.store.scope(f"{REPLACED_SCOPE}:{sync.group.namespace}")
    stored = await scope.all()
    out: dict[str, dict[str, float]] = {}
    for path, vs in replaced_versions(sync.state).items():
        try:
            times = decode_times(stored[path]) if path in stored else {}
        except MalformedRecordError:
            times = {}
        new = {vid(v): times.get(vid(v), now) for v in vs}
        if new != times:
            await scope.put(path, encode_times(new))
        out[path] = new
    for path in set(stored) - set(out):
        await scope.delete(path)
    _known_times[sync] = out
    return out


async def history_days(sync: FolderSync, default: float) -> float:
    """The folder's retention in days: its override, else ``default``."""
    value = await sync.group.store.scope(f"{RETENTION_SCOPE}:{sync.group.namespace}").get("history_days")
    days = default
    if value is not None:
        try:
            days = float(value.decode())
        except (UnicodeDecodeError, ValueError):
            days = default
        if not 0 <= days <= MAX_DAYS:
            days = default
    _known_days[sync] = days  # for disk_use, which status calls without awaiting
    return days


async def set_history_days(group: Group, days: float | None) -> None:
    """Set (or with None remove) the retention of ``group``'s folder."""
    scope = group.store.scope(f"{RETENTION_SCOPE}:{group.namespace}")
    if days is None:
        await scope.delete("history_days")
        return
    if not 0 <= days <= MAX_DAYS:
        raise ValueError(f"history days must be between 0 and {MAX_DAYS}")
    await scope.put("history_days", repr(float(days)).encode())


# -- applying it ----------------------------------------------------------------------------------

async def prune(sync: FolderSync, days: float, now: float | None = None) -> PruneResult:
    """Apply ``days`` of history now: clear the chunk entries only expired versions reference."""
    now = time.time() if now is None else now
    state = await sync.read_ops()
    times = await note_replaced(sync, now)
    p = plan(state, times, now, days, sync.reader.chunk_entries)
    store = sync.group.store
    before = (await store.disk_use()).total
    freed = entries = 0
    feeds = {f.key: f for f in sync.group.feeds()}
    for key, seqs in p.clear.items():
        feed = feeds.get(key)
        if feed is None:
            continue
        for lo, hi in seqs:
            held = len(RangeSet(feed.have.intersection(lo, hi)))
            freed += await feed.clear(lo, hi)
            entries += held
    forget_cleared(sync, p.clear)
    if entries:
        await store.vacuum()
        retention.send_release(sync.group)  # backup peers may drop them by their own policy
    after = (await store.disk_use()).total
    return PruneResult(len(p.expired), entries, freed, max(0, before - after))


def forget_cleared(sync: FolderSync, cleared: Mapping[bytes, RangeSet]) -> None:
    """Dedup must not reference a cleared chunk: drop those from the chunks it reuses."""
    own = sync.reader.own_chunks
    for cid, ref in list(own.items()):
        if ref.seq in cleared.get(ref.feed, RangeSet()):
            del own[cid]
    sync.state.forget_chunks(cleared)


# -- what history can still be restored here --------------------------------------------------------

def available(sync: FolderSync, v: Version) -> bool:
    """Whether every chunk of ``v`` is held here (a deletion always is): stored, or held in the
    folder's files while they still hold it (``cobox.folders.single``)."""
    feeds = {f.key: f for f in sync.group.feeds()}
    for c in v.chunks:
        feed = feeds.get(c.feed)
        if feed is None or not feed.has(c.seq):
            return False
        if c.seq in feed.outside and not single.outside_held(sync, c.feed, c.seq):
            return False
    return True


def held_elsewhere(sync: FolderSync, v: Version) -> list[str]:
    """The backup peers (hex device ids) whose latest receipts cover every chunk of ``v`` and
    that say they keep all history (a receipt's ``keep_days`` is 0)."""
    out = []
    for peer in {signer for signer, _ in sync.group.receipts}:
        if all(_covered(sync, peer, c.feed, c.seq) for c in v.chunks):
            out.append(peer.hex())
    return sorted(out)


def _covered(sync: FolderSync, peer: bytes, feed: bytes, seq: int) -> bool:
    """Whether ``peer``'s receipt covers entry ``seq`` of ``feed`` and it keeps all history
    (one that clears released entries after N days may have dropped it)."""
    r = sync.group.receipts.get((peer, feed))
    return r is not None and seq < r.length and r.keep_days == 0


def mark_history(sync: FolderSync, file: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``folder history``'s documents of ``file`` (oldest first, as ``FolderState.history``)
    with ``available`` (stored here, so restorable) and ``held_by`` (backup peers that hold an
    unavailable one)."""
    versions: Iterable[Version] = sync.state.history(normalize_path(file))
    by_id = {f"{v.stamp.clock}-{v.stamp.author.hex()[:8]}": v for v in versions}
    out = []
    for doc in docs:
        v = by_id.get(doc.get("version", ""))
        here = v is None or v.deleted or available(sync, v)
        out.append({**doc, "available": here, "held_by": [] if here or v is None else held_elsewhere(sync, v)})
    return out


# -- the daemon's service ------------------------------------------------------------------------------

async def run(sync: FolderSync, default_days: float, interval: float = PRUNE_INTERVAL) -> None:
    """Apply the folder's retention every ``interval`` seconds (the service ``prune:NAME``);
    the first pass notes which versions are replaced (their clock of expiry starts now)."""
    await history_days(sync, default_days)  # known to disk_use from the start
    while True:
        await asyncio.sleep(interval)
        days = await history_days(sync, default_days)
        result = await prune(sync, days)
        if result.cleared_entries:
            log.info("folder of %s: %d versions older than %g days expired, %d bytes freed",
                     sync.group.name, result.expired, days, result.freed_bytes)


# -- disk use per group (status, folder status) ---------------------------------------------------------

_known_days: weakref.WeakKeyDictionary[FolderSync, float] = weakref.WeakKeyDictionary()
_known_times: weakref.WeakKeyDictionary[FolderSync, dict[str, dict[str, float]]] = weakref.WeakKeyDictionary()
_cache: weakref.WeakKeyDictionary[FolderSync, tuple[tuple[Any, ...], dict[str, int]]] = weakref.WeakKeyDictionary()


def disk_use(sync: FolderSync, default_days: float, now: float | None = None) -> dict[str, int]:
    """The folder's disk use in bytes: ``folder_bytes`` (its files), ``stored_bytes`` (what
    the store holds for the group), ``outside_bytes`` (entries held but not stored: their
    content is in the folder's files, ``cobox.folders.single``), ``history_bytes`` (chunks
    held here that only replaced or deleted versions use) and ``reclaimable_bytes`` (those a
    prune would clear now under the folder's retention). Chunk sizes are plaintext sizes.
    Cached until the state or the feeds change (it visits every version)."""
    state = sync.state
    feeds = sync.group.feeds()
    days = _known_days.get(sync, default_days)
    key = (state.clock, len(state.versions), days,
           tuple((f.key, len(f.have), f.stored_bytes, f.outside_bytes) for f in feeds))
    cached = _cache.get(sync)
    if cached is not None and cached[0] == key:
        return cached[1]
    now = time.time() if now is None else now
    held = {f.key: f.have for f in feeds}
    chunks = sync.reader.chunk_entries

    def size(p: PrunePlan) -> int:
        sizes: dict[tuple[bytes, int], int] = {}
        for v in p.expired:
            for c in v.chunks:
                if c.seq in p.clear.get(c.feed, RangeSet()) and c.seq in held.get(c.feed, RangeSet()):
                    sizes[(c.feed, c.seq)] = c.size
        return sum(sizes.values())

    doc = {"folder_bytes": sum(v.size for v in state.files.values()),
           "stored_bytes": sum(f.stored_bytes for f in feeds),
           "outside_bytes": sum(f.outside_bytes for f in feeds),
           "history_bytes": size(plan(state, {}, now, 0, chunks)),
           "reclaimable_bytes": size(plan(state, _known_times.get(sync, {}), now, days, chunks))}
    _cache[sync] = (key, doc)
    return doc
