"""Clearing a range of a feed: which rows go and which tree nodes must be kept for proofs.

Theory of operation
-------------------
``Feed.clear(start, end)`` drops the data of the entries of a range and keeps what proofs need.
A feed stores every tree node except the lowest ones over stored small entries (leaves and the
parents of pairs: :mod:`storage.lownodes`), which ``Feed.node_hashes`` recomputes from the entries. So
before entries go, :func:`plan` computes, while they are still here, the leaf of every entry
being dropped and the parent of every complete pair touching the range, and the deletion stores
them in the same transaction (``Rows.clear_entries``, a transaction of its own); the signature
and every higher node stay. Afterwards:

- the feed still verifies and serves proofs for every entry it keeps, and upgrades;
- a cleared entry is simply not stored: ``get`` raises ``EntryMissingError``, the network
  answers ``NoData``, ``have`` no longer lists it (peers get a full ``Have``);
- ``cleared`` remembers the range, so the replicator does not fetch it back (a ``put`` may
  still store it again);
- a pair whose second entry is appended after its first was cleared gets its parent rebuilt
  from the kept leaf and the new entry (:func:`leaves`).

Clears of one feed are serialized; a clear runs in batches of ``BATCH`` entries, each one
transaction, so a crash leaves a prefix of the range cleared and the rest intact. The blob
space of the dropped entries is given back after each commit (``storage/blobs.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from . import tree
from .events import FeedEvent
from .ranges import RangeSet

if TYPE_CHECKING:
    from .outside import Feed

BATCH = 256  # entries cleared per transaction


class Clearable(Protocol):
    """What a clear needs of a feed (``storage.feed.Feed`` is one)."""

    have: RangeSet
    outside: RangeSet

    @property
    def length(self) -> int: ...

    async def get(self, seq: int) -> bytes: ...
    async def get_range(self, start: int, end: int) -> list[bytes]: ...
    async def entry_sizes(self, start: int, end: int) -> list[int]: ...
    async def node_hashes(self, indices: Sequence[int]) -> dict[int, bytes]: ...
    async def node_store_hashes(self, indices: Sequence[int]) -> dict[int, bytes]: ...


@dataclass(frozen=True, slots=True)
class Batch:
    """One transaction of a clear: the held ranges to delete, the nodes to keep, their stored
    size and the size of those of them held outside the store (``storage.outside``)."""

    held: list[tuple[int, int]]
    nodes: dict[int, bytes]
    size: int
    outside: int = 0


async def plan(feed: Clearable, start: int, end: int) -> Batch:
    """What clearing ``[start, end)`` (at most ``BATCH`` entries) deletes and keeps."""
    held = feed.have.intersection(start, end)
    length = feed.length
    first, last = start // 2, (end + 1) // 2  # the pairs touching the range
    parents = [tree.index(1, p) for p in range(first, last) if 2 * p + 2 <= length]
    nodes: dict[int, bytes] = {}
    size = outside = 0
    out = feed.outside.intersection(start, end)
    for lo, hi in out:  # released: their leaves are stored already, nothing to read or rebuild
        outside += sum(await feed.entry_sizes(lo, hi))
    stored = RangeSet(held)
    for lo, hi in out:
        stored.remove(lo, hi)
    for lo, hi in stored:
        entries = await feed.get_range(lo, hi)
        size += sum(map(len, entries))
        nodes.update((tree.index(0, lo + k), tree.leaf_hash(e)) for k, e in enumerate(entries))
    nodes.update(await feed.node_hashes(parents))
    return Batch(held, nodes, size, outside)


async def leaves(feed: Clearable, lo: int, hi: int) -> list[bytes] | None:
    """The leaf hashes of entries ``[lo, hi)`` from held entries and stored leaves (a clear
    keeps the leaves of the entries it drops), or None when one is known neither way."""
    wanted = [tree.index(0, k) for k in range(lo, hi) if k not in feed.have or k in feed.outside]
    stored = await feed.node_store_hashes(wanted) if wanted else {}
    out = []
    for k in range(lo, hi):
        if k in feed.have and k not in feed.outside:
            out.append(tree.leaf_hash(await feed.get(k)))
        elif tree.index(0, k) in stored:
            out.append(stored[tree.index(0, k)])
        else:
            return None
    return out


async def clear(feed: Feed, start: int, end: int) -> int:
    """``Feed.clear``: clear ``[start, end)`` in batches, serialized with the feed's other
    clears and releases; return the bytes of stored entry data dropped."""
    feed._rows.check_writable()
    end = min(end, feed.length)
    freed = 0
    async with feed._clear_lock:
        for lo in range(max(start, 0), end, BATCH):
            freed += await _clear_batch(feed, lo, min(lo + BATCH, end))
    return freed


async def _clear_batch(feed: Feed, start: int, end: int) -> int:
    batch = await plan(feed, start, end)
    cleared = feed.cleared.copy()
    cleared.add(start, end)
    before = feed.stored_bytes

    def on_commit() -> None:
        for lo, hi in batch.held:
            feed.have.remove(lo, hi)
        feed.outside.remove(start, end)
        feed.outside_bytes = max(0, feed.outside_bytes - batch.outside)
        feed.cleared = cleared
        feed.stored_bytes = max(0, feed.stored_bytes - batch.size)
        feed._emit(FeedEvent("clear", start, end, feed.length))

    await feed._rows.clear_entries(feed.id, batch.held, batch.nodes.items(), cleared, on_commit=on_commit)
    return min(batch.size, before)
