"""One copy: a member's chunk entries whose content sits in its own files are not stored twice.

Theory of operation
-------------------
Sealing is deterministic (:mod:`cobox.entries_seal`): the entry at ``(feed, seq)`` is a
function of the group key, its place and its plaintext, and a chunk entry's plaintext is a
function of the chunk (``encode_chunk``: msgpack of the padded chunk). So a member whose synced
file holds a chunk can rebuild that chunk's entry, byte for byte, from the file, and the store
need not keep it (``Feed.release``, :mod:`storage.outside`). This holds for the member's own feed
and for the replicas of other members' feeds alike: every member has the group key.

- :class:`ChunkIndex` (one per folder, in memory, rebuilt from state at start): ``(feed, seq) ->
  places (path, offset, size, chunk id)`` for every chunk of every version this device holds on
  disk unchanged: ``FolderSync._synced[path]`` names the version (stamp) whose content the file
  has, the merged state gives its ``ChunkRef`` s in order, and the offset is the sum of the
  sizes before. It is brought up to date (``refresh``: only the paths whose ``Synced`` record
  changed) when the folder marked or forgot paths (``FolderSync.marks``) or the state moved.
- :class:`FolderRebuilder` (one per namespace: every epoch of the group; the store's
  ``Rebuilder``): for ``(feed, seqs)`` it looks the places up on the event loop, then in a worker
  thread preads each chunk, checks ``len == size`` and BLAKE3 ``== id`` (the file may have
  changed since: then it tries the next place, else None), encodes it and seals it with the key
  of the feed's epoch. The store checks the result against the stored bytes (release) or the
  signed tree's leaf (reads, so serving sends nothing wrong); a None makes the entry *lost here*
  (cleared, out of ``have``: peers ask someone else). Until the index is first built (a daemon
  starting) it raises ``RebuildUnavailableError``: nothing is lost, the read is answered NoData.
- :func:`keep_history`: before the folder overwrites or removes a file for a remote change, the
  released entries only that file holds (not the new version's) are stored again (``Feed.restore``),
  so the replaced version stays in this device's history as long as its retention keeps it. A
  file the user changes or deletes here cannot be helped (the content is gone before a scan sees
  it): its released entries become lost here, and the old version lives on where the change
  arrives as a remote one (every other member keeps it, by the step above) and on backup
  peers. Syncthing's versioning draws the same line: it keeps what remote changes replace.
- :func:`available` (a download's check): one of this device's own entries that is gone here
  (released to a file changed since, then lost; or pruned) may still be needed, when another
  member's change references it (a version restored from its history, a file deduplicated
  against it). It is wanted back from the peers that hold it (``storage.healing``: checked
  against the leaf this device kept); before that, an entry still held outside but in no indexed
  file is read once the round is done (:func:`lose_unheld`), which finds it lost. Without this a
  download waited for it forever.
- :func:`release_pass` releases the held chunk entries the index covers, at most ``MAX_RELEASE``
  per pass, in the store's batches; :func:`run` (the service ``single:NAME``) runs one pass when
  the folder has been quiet (no file marked, no entry served to a peer) ``QUIET`` seconds after
  a change, and again while a pass left work. Only a member (the group key) does this: a backup
  peer has no files and never releases. ``[folders] single_copy = false`` keeps the second copy
  (the rebuilder still serves entries released before).

The folder reader does not rebuild outside entries to re-read them at restart: they were
verified chunk entries when released (``OpReader`` counts them as chunk entries unread).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from storage import healing
from storage.errors import FeedNotFoundError, RebuildUnavailableError, StorageError
from storage.outside import runs
from storage.tree import leaf_hash

from ..entries import encode_chunk
from ..entries_seal import seal
from .chunking import chunk_id
from .model import ChunkRef
from .plan import Synced

if TYPE_CHECKING:
    from ..groups import Group
    from .merge import Version
    from .sync import FolderSync

log = logging.getLogger(__name__)
QUIET = 5.0  # seconds without a file marked before a release pass
POLL = 1.0  # seconds between two looks at the folder's marks
MAX_DEFER = 600.0  # seconds a release pass waits at most for peers to stop fetching
MAX_RELEASE = 16384  # entries released per pass (about 2.5 GiB of 160 KiB chunks)
UNHELD_READ = 64  # entries read at a time to find out whether they are lost
READY_WAIT = 30.0  # seconds a rebuild waits for the index to be built first

Key = tuple[bytes, int]


@dataclass(frozen=True, slots=True)
class Place:
    """Where a chunk's plaintext sits: ``size`` bytes at ``offset`` of the file ``path``."""

    path: str
    offset: int
    size: int
    id: bytes


class ChunkIndex:
    """``(feed, seq) -> places`` for the chunks of the files a folder holds unchanged."""

    def __init__(self, sync: FolderSync) -> None:
        self.sync = sync
        self.ready = asyncio.Event()  # set once built from the state read at start
        self._by_path: dict[str, tuple[Synced, list[tuple[Key, Place]]]] = {}
        # Per chunk entry, its places by path: a file that repeats one chunk thousands of times
        # (zeros, sparse images) is dropped in one step, not one list search per place.
        self._at: dict[Key, dict[str, list[Place]]] = {}
        self._seen: tuple[int, int, int] | None = None  # (marks, clock, versions) at the last refresh
        self._unmerged = False  # a synced path's version was not in the state yet: look again

    def __len__(self) -> int:
        return len(self._at)

    def places(self, feed: bytes, seq: int) -> list[Place]:
        return [p for places in self._at.get((feed, seq), {}).values() for p in places]

    def held(self) -> list[Key]:
        return list(self._at)

    def only_in(self, paths: Iterable[str]) -> set[Key]:
        """The chunks whose every indexed place is in one of ``paths``."""
        paths = set(paths)
        keys = {key for p in paths if p in self._by_path for key, _ in self._by_path[p][1]}
        return {key for key in keys if all(path in paths for path in self._at.get(key, {}))}

    def refresh(self) -> bool:
        """Bring the index up to date with the folder's ``Synced`` records and merged state
        (only paths whose record changed are visited twice; nothing when neither moved).
        Returns whether it looked again."""
        sync, state = self.sync, self.sync.state
        seen = (sync.marks, state.clock, len(state.versions))
        if seen == self._seen and not self._unmerged:
            return False
        self._seen, self._unmerged = seen, False
        synced = dict(sync._synced)
        for path in [p for p, (s, _) in self._by_path.items() if synced.get(p) != s]:
            self._drop(path)
        for path, s in synced.items():
            if path in self._by_path:
                continue
            v = state.versions[path].get(s.stamp) if path in state.versions else None
            if v is None:
                self._unmerged = True  # recorded, not merged yet: the next refresh looks again
                continue
            if v.deleted or v.kind == "dir" or not v.chunks or v.content != s.content:
                continue  # nothing to index
            placed: list[tuple[Key, Place]] = []
            offset = 0
            for c in v.chunks:
                place = Place(path, offset, c.size, c.id)
                placed.append(((c.feed, c.seq), place))
                self._at.setdefault((c.feed, c.seq), {}).setdefault(path, []).append(place)
                offset += c.size
            self._by_path[path] = (s, placed)
        return True

    def _drop(self, path: str) -> None:
        _, placed = self._by_path.pop(path)
        for key in {key for key, _ in placed}:
            at = self._at.get(key)
            if at is not None:
                at.pop(path, None)
                if not at:
                    del self._at[key]


class FolderRebuilder:
    """The store's rebuilder of one epoch's namespace: chunk entries from the folder's files."""

    def __init__(self, index: ChunkIndex, key: bytes) -> None:
        self.index = index
        self._key = key
        self.calls = 0  # rebuild requests answered (tests count them)

    async def rebuild(self, feed_key: bytes, seqs: Sequence[int], leaves: Sequence[bytes | None]) -> list[bytes | None]:
        index = self.index
        if not index.ready.is_set():
            try:
                async with asyncio.timeout(READY_WAIT):
                    await index.ready.wait()
            except TimeoutError:
                raise RebuildUnavailableError("the folder's chunk index is not built yet") from None
        self.calls += 1
        places = [index.places(feed_key, s) for s in seqs]
        root = str(index.sync.root)
        out = await asyncio.to_thread(_rebuild, root, self._key, feed_key, list(seqs), places, list(leaves))
        missed = [k for k, r in enumerate(out) if r is None]
        if missed and index.refresh():  # a file recorded, written or moved since: look again once
            again = await asyncio.to_thread(_rebuild, root, self._key, feed_key, [seqs[k] for k in missed],
                                            [index.places(feed_key, seqs[k]) for k in missed],
                                            [leaves[k] for k in missed])
            for k, r in zip(missed, again):
                out[k] = r
        if not index.sync.settled.is_set() and any(r is None for r in out):
            # The folder is moving or replacing files right now, and the index learns where
            # their chunks went only once each action is marked: a miss now proves nothing.
            # Answer later (the entries stay held) rather than lose them.
            raise RebuildUnavailableError("the folder is applying changes: ask again later")
        return out


def _rebuild(root: str, key: bytes, feed_key: bytes, seqs: list[int], places: list[list[Place]],
             leaves: list[bytes | None]) -> list[bytes | None]:  # in a worker thread
    """Read each chunk from the first place that still holds it and seal its entry; with the
    entry's leaf known, only a sealed entry with that leaf counts (a hostile member's op may
    claim another chunk at the same place: that place is passed over, not trusted)."""
    fds: dict[str, int | None] = {}
    out: list[bytes | None] = []
    try:
        for seq, candidates, leaf in zip(seqs, places, leaves, strict=True):
            found: bytes | None = None
            for p in candidates:
                fd = fds.get(p.path, -1)
                if fd == -1:
                    try:
                        fd = os.open(os.path.join(root, p.path), os.O_RDONLY | os.O_NOFOLLOW)
                    except OSError:
                        fd = None
                    fds[p.path] = fd
                if fd is None:
                    continue
                try:
                    data = os.pread(fd, p.size, p.offset)
                except OSError:
                    continue
                if len(data) == p.size and chunk_id(data) == p.id:
                    sealed = seal(key, feed_key, seq, encode_chunk(data))
                    if leaf is None or leaf_hash(sealed) == leaf:
                        found = sealed
                        break
            out.append(found)
    finally:
        for fd in fds.values():
            if fd is not None:
                os.close(fd)
    return out


_indexes: weakref.WeakKeyDictionary[FolderSync, ChunkIndex] = weakref.WeakKeyDictionary()


def index_of(sync: FolderSync) -> ChunkIndex:
    """The folder's chunk index (one per folder)."""
    index = _indexes.get(sync)
    if index is None:
        index = _indexes[sync] = ChunkIndex(sync)
    return index


def local_places(sync: FolderSync, refs: Sequence[ChunkRef]) -> dict[Key, list[Place]]:
    """Where this device's files hold the chunk entries ``refs`` name (a snapshot, taken on the
    event loop, for a download to read them from instead of the store: ``fetch.local_chunk``)."""
    index = _indexes.get(sync)
    if index is None or not index.ready.is_set():
        return {}
    index.refresh()
    out: dict[Key, list[Place]] = {}
    for ref in refs:
        places = index.places(ref.feed, ref.seq)
        if places:
            out[(ref.feed, ref.seq)] = places
    return out


def install(sync: FolderSync) -> ChunkIndex:
    """Make the folder's files the rebuilder of every epoch of its group (a member only)."""
    index = index_of(sync)
    for g in sync.group.chain():
        if g.keys.encryption_key is not None:
            sync.group.store.set_rebuilder(g.namespace, FolderRebuilder(index, g.keys.encryption_key))
    return index


async def build(sync: FolderSync) -> ChunkIndex:
    """Install the rebuilders and build the index from the state read now (``read_ops``)."""
    index = install(sync)
    await sync.read_ops()
    index.refresh()
    index.ready.set()
    return index


async def release_pass(sync: FolderSync, most: int = MAX_RELEASE) -> tuple[int, bool]:
    """Release the held chunk entries the folder's files reproduce; at most ``most`` entries.
    Returns (bytes no longer stored, whether entries were left for another pass)."""
    index = index_of(sync)
    await sync.read_ops()  # the state holds what the folder recorded last (incremental: cheap)
    index.refresh()
    wanted: dict[bytes, list[int]] = {}
    for feed_key, seq in index.held():
        wanted.setdefault(feed_key, []).append(seq)
    freed = 0
    budget = most
    for feed in sync.group.all_feeds():
        seqs = [s for s in wanted.get(feed.key, ()) if s in feed.have and s not in feed.outside]
        if not seqs:
            continue
        if budget <= 0:
            return freed, True
        seqs.sort()
        take, budget = seqs[:budget], budget - len(seqs)
        freed += await feed.release(runs(take))
    return freed, budget < 0


async def keep_history(sync: FolderSync, paths: Sequence[str], keep: Iterable[ChunkRef] = ()) -> int:
    """The folder is about to overwrite or remove the files ``paths`` (a remote change): store
    again the released entries only those files hold, except the chunks in ``keep`` (the new
    version's, which the new file holds), so the replaced version stays in the history this
    device keeps (prune expires it by the folder's retention). Returns the bytes stored again."""
    index = index_of(sync)
    if not paths:
        return 0
    index.refresh()  # built or not: the state was read (a round's first step), the records are loaded
    kept = {(c.feed, c.seq) for c in keep}
    by_feed: dict[bytes, list[int]] = {}
    for feed_key, seq in index.only_in(paths) - kept:
        by_feed.setdefault(feed_key, []).append(seq)
    restored = 0
    for feed in sync.group.all_feeds():
        seqs = [s for s in by_feed.get(feed.key, ()) if s in feed.outside]
        if seqs:
            restored += await feed.restore(seqs)
    return restored


def available(sync: FolderSync, v: Version, unheld: set[Key]) -> bool:
    """Whether every chunk of ``v`` can be read here now, for a download. One of this device's
    own entries that is gone here (released to a file changed since, or pruned) is wanted back
    from the peers that hold it (``storage.healing``); one still held outside but in a file no
    longer indexed goes into ``unheld``: read once the round is done (a read while files move
    would only wait), it turns out lost, and is then wanted back (:func:`lose_unheld`)."""
    ok = True
    index: ChunkIndex | None = None  # looked at (and brought up to date) once, if needed
    for ref in v.chunks:
        try:
            feed = sync.group.store.feed(ref.feed)
        except FeedNotFoundError:
            return False
        if not feed.has(ref.seq):
            if not feed.writable:
                return False  # a replica's entries are replicated as they come
            healing.want_back(feed, ref.seq, ref.seq + 1)
            ok = False
        elif feed.writable and ref.seq in feed.outside:
            if index is None:
                index = index_of(sync)
                index.refresh()
            # Not built yet: it knows nothing, so no file is known to have changed.
            if index.ready.is_set() and not index.places(ref.feed, ref.seq):
                unheld.add((ref.feed, ref.seq))
                ok = False
    return ok


async def lose_unheld(sync: FolderSync, unheld: set[Key]) -> None:
    """Read the entries :func:`available` found in no indexed file (the round is done: a miss now
    is real), and want back from peers what is lost."""
    taken = sorted(unheld)
    unheld.clear()
    for feed_key in {k for k, _ in taken}:
        feed = sync.group.store.feed(feed_key)
        for lo, hi in runs(s for k, s in taken if k == feed_key):
            for a in range(lo, hi, UNHELD_READ):  # bounded reads: a file may hold them after all
                with contextlib.suppress(StorageError):
                    await feed.get_range(a, min(hi, a + UNHELD_READ))  # rebuilt, or lost here
            healing.want_back(feed, lo, hi)  # what is lost now


def outside_held(sync: FolderSync, feed_key: bytes, seq: int) -> bool:
    """Whether an entry held outside the store can still be rebuilt here (its file is indexed)."""
    return bool(index_of(sync).places(feed_key, seq))


async def forget(group: Group, *, restore: bool = True) -> int:
    """The folder is unbound: its files will no longer stand for the store's entries. While they
    still do, the entries held outside are stored again from them (``Feed.restore``: the group's
    data must not depend on files this device stops watching; one that no longer rebuilds is
    lost here), then the rebuilders go; without ``restore`` (leaving: the data is deleted next)
    only the rebuilders go. Returns the bytes stored again."""
    restored = 0
    for feed in group.all_feeds() if restore else ():
        seqs = [s for lo, hi in feed.outside for s in range(lo, hi)]
        if seqs:
            restored += await feed.restore(seqs)
    for g in group.chain():
        group.store.set_rebuilder(g.namespace, None)
    return restored


async def run(sync: FolderSync, single_copy: bool, quiet: float = QUIET,
              served: Callable[[], int] = lambda: 0) -> None:
    """The service ``single:NAME``: build the index once the folder's first round has read the
    state, then (with ``single_copy``) release what the files hold whenever the folder has been
    quiet ``quiet`` seconds after a change, and no peer took entries of the group's feeds from
    here meanwhile (``served``: a counter of bytes served; a pass reads and seals every chunk
    again, which a transfer under way would share the CPU with; at most ``MAX_DEFER`` seconds)."""
    install(sync)  # at once: a read before the index is built waits for it, it loses nothing
    while sync.rounds < 1:
        await asyncio.sleep(POLL)
    await build(sync)
    if not single_copy or not sync.group.is_member:
        await asyncio.Event().wait()  # serve rebuilds only, until cancelled
    done: int | None = None
    seen, since = sync.marks, asyncio.get_running_loop().time()
    sent, busy = served(), since
    while True:
        await asyncio.sleep(POLL)
        now = asyncio.get_running_loop().time()
        if sync.marks != seen:
            seen, since = sync.marks, now
            continue
        if served() != sent:
            sent, busy = served(), now
        if seen == done or now - since < quiet:
            continue
        if now - busy < quiet and now - since < MAX_DEFER:
            continue  # peers are fetching: after them (but not forever in a group always busy)
        freed, more = await release_pass(sync)
        if freed:
            log.info("folder of %s: %d bytes of chunk entries released (held in the files)", sync.group.name, freed)
        if not more:
            done = seen


__all__ = ["ChunkIndex", "FolderRebuilder", "Place", "available", "build", "forget", "index_of", "install",
           "keep_history", "local_places", "lose_unheld", "outside_held", "release_pass", "run"]
