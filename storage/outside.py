"""Entries held outside the store: released data that a layer above rebuilds on demand.

Theory of operation
-------------------
A layer above may keep the content of some entries in a form of its own (cobox: a member's
synced files hold the plaintext of its chunk entries, and sealing is deterministic). Storing
those entries as well would keep everything twice. So a namespace can be given a
:class:`Rebuilder` (``Store.set_rebuilder``), and ``Feed.release(ranges)`` drops the stored data
of held entries that the rebuilder reproduces *exactly*:

1. ``release`` takes the held entries of the ranges that are not outside yet, in batches of
   at most ``BATCH`` entries and ``BATCH_BYTES`` of data (one transaction each, serialized with
   clears by the feed's clear lock), reads their stored bytes and asks the rebuilder for them;
   only entries whose rebuilt bytes equal the stored bytes are released (anything else stays
   stored: nothing is released on trust). A batch's stored and rebuilt bytes are in memory
   together, so the byte bound is what bounds a release's memory: 256 chunk entries of 64 KiB
   were 32 MiB at once, on top of what serving the same feed holds (a release pass runs while
   peers still fetch the entries it releases).
2. The transaction keeps what proofs need, as a clear does (:mod:`storage.clearing`: the leaf
   of every released entry and the parent of every pair touching it), gives the entry's blob
   extent to ``blob_free`` and turns its row into an *outside row*: ``data`` and
   ``blob_offset`` NULL, ``blob_size`` the entry's size (``Rows.release_entries``). After the
   commit the blob space is punched (``storage/blobs.py``).
3. ``have`` is unchanged (peers still see the entries held), ``stored_bytes`` drops,
   ``outside`` / ``outside_bytes`` grow. The outside rows are the record: a reopen finds them
   again (``sql/0003_outside.sql`` indexes them), so nothing else has to agree with them.
4. ``Feed.append(entries, outside=positions)`` appends entries the rebuilder holds already
   (the caller just read them from there) straight as outside rows, leaves and pair parents
   kept: no data is written. This one is on the caller's word, not checked against a stored
   copy (there is none); every read still verifies the rebuilt bytes against the leaf.
5. ``restore(seqs)`` stores released entries again, rebuilt and verified (the layer above is
   about to overwrite the content they come from and wants to keep them as history), in
   batches bounded as a release's.

Reading (``get``, ``get_range`` and through them serving; ``node_hashes`` never rebuilds: it uses
the stored leaves) rebuilds outside entries through the rebuilder (:func:`read`) and checks each
against its stored leaf hash before returning it. A rebuilder that cannot answer yet (none set,
or it raises ``RebuildUnavailableError``: a daemon still starting) makes the read fail with that
error and loses nothing. A rebuild that fails (None) or does not verify makes the entry *lost
here* (:func:`lose`): in one transaction its row goes (and, for a writable feed, ``cleared``
gains it, as after a clear: its replicator fetches nothing by itself, and the layer above asks
for it back only if it needs it again, :mod:`storage.healing`); ``have`` loses it and
``EntryMissingError`` is raised: the network answers ``NoData``, missing, never wrong. Just
after that (``call_soon``) a ``clear`` :class:`FeedEvent` is emitted and the replicator sends a
full Have. A lost entry of a replica is not added to ``cleared``: it was not dropped on purpose,
and the replicator fetches it back from a peer that holds it (the layer above may still want
it: history it keeps, or a later version that references the same chunk, which would otherwise
wait for it forever). Sizes are kept, so ``get_range(max_bytes=)`` and ``entry_sizes`` work
without rebuilding.

A clear of an outside entry deletes its row like any other (nothing to punch); ``delete_feed``
deletes them with the rest; a put of an entry that is outside leaves it outside (the insert is
ignored: the row exists). A crash at any point leaves a prefix of the batches released and the
rest stored (each batch is one transaction; the punch is idempotent and redone at open).

This module is the feed's own (like :mod:`storage.clearing`): it works on a feed's private
state (its rows, clear lock and listeners), and ``Feed`` calls it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from . import tree
from .errors import EntryMissingError, RebuildUnavailableError
from .events import FeedEvent
from .ranges import RangeSet

if TYPE_CHECKING:
    from .rows import Rows

BATCH = 256  # entries released per transaction at most (as clearing.BATCH)
BATCH_BYTES = 4 * 1024 * 1024  # entry data per release or restore transaction at most (one entry above it goes alone)


class Rebuilder(Protocol):
    """What a layer above gives a namespace to hold entries outside the store."""

    async def rebuild(self, feed_key: bytes, seqs: Sequence[int], leaves: Sequence[bytes | None]) -> list[bytes | None]:
        """The exact stored bytes of entries ``seqs`` of ``feed_key``, in order; None for one
        that cannot be reproduced (any more). ``leaves[k]`` is the Merkle leaf hash the entry
        ``seqs[k]`` must have (``storage.tree.leaf_hash``; None if unknown): a rebuilder with
        several candidates for one entry answers the one that matches. Raises
        ``RebuildUnavailableError`` when it cannot answer yet (nothing is lost then)."""
        ...


class Feed(Protocol):
    """What releasing, rebuilding and clearing use of a feed (``storage.feed.Feed`` is one):
    its public state and the private parts these helper modules of the feed work on."""

    id: int
    key: bytes
    namespace: str
    have: RangeSet
    cleared: RangeSet
    outside: RangeSet
    outside_bytes: int
    stored_bytes: int
    _rows: Rows
    _clear_lock: asyncio.Lock

    def _emit(self, event: FeedEvent) -> None: ...

    @property
    def length(self) -> int: ...

    @property
    def writable(self) -> bool: ...

    @property
    def rebuilder(self) -> Rebuilder | None: ...

    async def get(self, seq: int) -> bytes: ...
    async def get_range(self, start: int, end: int) -> list[bytes]: ...
    async def entry_sizes(self, start: int, end: int) -> list[int]: ...
    async def node_hashes(self, indices: Sequence[int]) -> dict[int, bytes]: ...
    async def node_store_hashes(self, indices: Sequence[int]) -> dict[int, bytes]: ...


class Rebuilders:
    """The rebuilder of each namespace, shared by a store and its feeds."""

    def __init__(self) -> None:
        self._by_namespace: dict[str, Rebuilder] = {}

    def set(self, namespace: str, rebuilder: Rebuilder | None) -> None:
        if rebuilder is None:
            self._by_namespace.pop(namespace, None)
        else:
            self._by_namespace[namespace] = rebuilder

    def get(self, namespace: str) -> Rebuilder | None:
        return self._by_namespace.get(namespace)


async def batches(feed: Feed, spans: Iterable[tuple[int, int]]) -> list[list[int]]:
    """The entries of ``spans`` (sorted, disjoint ``[start, end)`` runs) in batches of at most
    ``BATCH`` entries and ``BATCH_BYTES`` of entry data (their sizes are read, not their bytes;
    a batch has one entry at least). An entry no longer held when the sizes are read counts as
    empty (the batch's own check drops it)."""
    out: list[list[int]] = []
    batch: list[int] = []
    size = 0
    for lo, hi in spans:
        try:
            sizes = await feed.entry_sizes(lo, hi)
        except EntryMissingError:
            sizes = []
        if len(sizes) != hi - lo:
            sizes = [0] * (hi - lo)
        for seq, n in zip(range(lo, hi), sizes):
            if batch and (len(batch) >= BATCH or size + n > BATCH_BYTES):
                out.append(batch)
                batch, size = [], 0
            batch.append(seq)
            size += n
    if batch:
        out.append(batch)
    return out


def runs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted sequence numbers as ``[start, end)`` runs."""
    out: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], s + 1)
        else:
            out.append((s, s + 1))
    return out


async def _rebuild(feed: Feed, seqs: Sequence[int], leaves: dict[int, bytes]) -> list[bytes | None]:
    """The rebuilder's answer for ``seqs``, told each entry's leaf (``leaves``: node index -> hash)."""
    rebuilder = feed.rebuilder
    if not seqs:
        return []
    if rebuilder is None:  # not set (yet: a daemon starting): the entries wait, they are not lost
        raise RebuildUnavailableError(f"no rebuilder for the entries of feed {feed.key.hex()[:16]} held outside")
    got = await rebuilder.rebuild(feed.key, list(seqs), [leaves.get(tree.index(0, s)) for s in seqs])
    if len(got) != len(seqs):
        return [None] * len(seqs)  # a rebuilder that answers another question reproduces nothing
    return got


# -- releasing -------------------------------------------------------------------------------


async def release(feed: Feed, ranges: Iterable[tuple[int, int]]) -> int:
    """Release the held entries of ``ranges`` that the rebuilder reproduces exactly (see the
    module docstring); return the bytes of entry data no longer stored."""
    feed._rows.check_writable()
    if feed.rebuilder is None:
        return 0
    wanted = RangeSet()
    for lo, hi in ranges:
        lo, hi = max(lo, 0), min(hi, feed.length)
        for a, b in feed.have.intersection(lo, hi) if lo < hi else ():
            wanted.add(a, b)
    for a, b in list(feed.outside):
        wanted.remove(a, b)
    freed = 0
    async with feed._clear_lock:
        for batch in await batches(feed, wanted):
            freed += await _release_batch(feed, batch)
    return freed


async def _release_batch(feed: Feed, seqs: list[int]) -> int:
    seqs = [s for s in seqs if s in feed.have and s not in feed.outside]  # as of now, under the lock
    stored: dict[int, bytes] = {}
    for lo, hi in runs(seqs):
        stored.update(zip(range(lo, hi), await feed.get_range(lo, hi)))
    try:
        rebuilt = await _rebuild(feed, seqs, {tree.index(0, s): tree.leaf_hash(stored[s]) for s in seqs})
    except RebuildUnavailableError:
        return 0
    matched = [s for s, r in zip(seqs, rebuilt) if r is not None and r == stored[s]]
    if not matched:
        return 0
    spans = runs(matched)
    nodes = {tree.index(0, s): tree.leaf_hash(stored[s]) for s in matched}
    length = feed.length
    pairs = {s // 2 for s in matched}
    parents = [tree.index(1, p) for p in sorted(pairs) if 2 * p + 2 <= length]
    nodes.update(await feed.node_hashes(parents))
    size = sum(len(stored[s]) for s in matched)

    def on_commit() -> None:
        for lo, hi in spans:
            feed.outside.add(lo, hi)
        feed.outside_bytes += size
        feed.stored_bytes = max(0, feed.stored_bytes - size)

    await feed._rows.release_entries(feed.id, spans, nodes.items(), on_commit=on_commit)
    return size


# -- reading ---------------------------------------------------------------------------------


async def read(feed: Feed, start: int, end: int, slots: Sequence[tuple[int, bytes | None]]) -> list[bytes]:
    """Entries ``[start, end)`` from their rows ``slots`` (``(seq, data)``, data None for an
    outside row), the outside ones rebuilt and verified against their leaves. Raises
    ``EntryMissingError`` when one is not stored or is lost here (then it is cleared)."""
    if len(slots) != end - start:
        raise EntryMissingError(f"entries [{start}, {end}) are not all stored")
    out = [data for _, data in slots]
    wanted = [seq for seq, data in slots if data is None]
    if not wanted:
        return [d for d in out if d is not None]
    leaves = await feed.node_store_hashes([tree.index(0, s) for s in wanted])
    rebuilt = await _rebuild(feed, wanted, leaves)
    lost: list[int] = []
    for seq, data in zip(wanted, rebuilt):
        if data is None or leaves.get(tree.index(0, seq)) != tree.leaf_hash(data):
            lost.append(seq)
        else:
            out[seq - start] = data
    if lost:
        await lose(feed, lost)
        raise EntryMissingError(
            f"{len(lost)} entries of [{start}, {end}) of feed {feed.key.hex()[:16]} cannot be rebuilt here any more")
    return [d for d in out if d is not None]


async def lose(feed: Feed, seqs: Sequence[int]) -> None:
    """Outside entries ``seqs`` cannot be rebuilt: they are no longer held here. In one
    transaction their rows go and ``cleared`` gains them (their leaves and pair parents are
    stored already, from the release); then ``have`` loses them, and a ``clear`` event goes out
    on the loop's next turn (after the caller has seen its error)."""
    async with feed._clear_lock:
        await _lose(feed, seqs)


async def _lose(feed: Feed, seqs: Sequence[int]) -> None:  # under the clear lock
    lost = [s for s in seqs if s in feed.outside]
    if not lost:
        return
    spans = runs(lost)
    size = 0
    for lo, hi in spans:
        size += sum(await feed._rows.entry_sizes(feed.id, lo, hi))
    cleared = feed.cleared.copy()
    if feed.writable:  # as a clear: wanted back only on demand (storage.healing). A replica fetches it back.
        for lo, hi in spans:
            cleared.add(lo, hi)

    def on_commit() -> None:
        for lo, hi in spans:
            feed.have.remove(lo, hi)
            feed.outside.remove(lo, hi)
        feed.outside_bytes = max(0, feed.outside_bytes - size)
        feed.cleared = cleared

    await feed._rows.clear_entries(feed.id, spans, (), cleared, on_commit=on_commit)

    def emit() -> None:
        for lo, hi in spans:
            feed._emit(FeedEvent("clear", lo, hi, feed.length))

    # The events go out once the reader has seen EntryMissingError: a server then answers NoData
    # first and announces the full Have after it, so the asking peer's view ends with the Have
    # (a NoData seen after it would withdraw the peer's fresh claim).
    asyncio.get_running_loop().call_soon(emit)


# -- storing again ---------------------------------------------------------------------------


async def restore(feed: Feed, seqs: Sequence[int]) -> int:
    """Store the data of outside entries ``seqs`` again (their content is about to leave the
    layer above: a file it will overwrite), rebuilt and verified against their leaves; one that
    does not verify is lost here (:func:`lose`). Returns the bytes stored again."""
    feed._rows.check_writable()
    restored = 0
    async with feed._clear_lock:
        for wanted in await batches(feed, runs(s for s in seqs if s in feed.outside)):
            batch = [s for s in wanted if s in feed.outside]
            leaves = await feed._rows.nodes(feed.id, [tree.index(0, s) for s in batch])
            try:
                rebuilt = await _rebuild(feed, batch, leaves)
            except RebuildUnavailableError:
                return restored
            good = [(s, d) for s, d in zip(batch, rebuilt)
                    if d is not None and leaves.get(tree.index(0, s)) == tree.leaf_hash(d)]
            size = sum(len(d) for _, d in good)

            def on_commit(good: list[tuple[int, bytes]] = good, size: int = size) -> None:
                for s, _ in good:
                    feed.outside.remove(s, s + 1)
                feed.outside_bytes = max(0, feed.outside_bytes - size)
                feed.stored_bytes += size

            if good:
                await feed._rows.restore_entries(feed.id, good, on_commit=on_commit)
                restored += size
            kept = {s for s, _ in good}
            await _lose(feed, [s for s in batch if s not in kept])
    return restored


def overlaps(outside: RangeSet, start: int, end: int) -> bool:
    """Whether any of ``[start, end)`` is outside."""
    return bool(outside) and bool(outside.intersection(start, end))

