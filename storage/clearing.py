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
from typing import Protocol

from . import tree
from .ranges import RangeSet

BATCH = 256  # entries cleared per transaction


class Clearable(Protocol):
    """What a clear needs of a feed (``storage.feed.Feed`` is one)."""

    have: RangeSet

    @property
    def length(self) -> int: ...

    async def get(self, seq: int) -> bytes: ...
    async def get_range(self, start: int, end: int) -> list[bytes]: ...
    async def node_hashes(self, indices: Sequence[int]) -> dict[int, bytes]: ...
    async def node_store_hashes(self, indices: Sequence[int]) -> dict[int, bytes]: ...


@dataclass(frozen=True, slots=True)
class Batch:
    """One transaction of a clear: the held ranges to delete, the nodes to keep, their size."""

    held: list[tuple[int, int]]
    nodes: dict[int, bytes]
    size: int


async def plan(feed: Clearable, start: int, end: int) -> Batch:
    """What clearing ``[start, end)`` (at most ``BATCH`` entries) deletes and keeps."""
    held = feed.have.intersection(start, end)
    length = feed.length
    first, last = start // 2, (end + 1) // 2  # the pairs touching the range
    parents = [tree.index(1, p) for p in range(first, last) if 2 * p + 2 <= length]
    nodes: dict[int, bytes] = {}
    size = 0
    for lo, hi in held:
        entries = await feed.get_range(lo, hi)
        size += sum(map(len, entries))
        nodes.update((tree.index(0, lo + k), tree.leaf_hash(e)) for k, e in enumerate(entries))
    nodes.update(await feed.node_hashes(parents))
    return Batch(held, nodes, size)


async def leaves(feed: Clearable, lo: int, hi: int) -> list[bytes] | None:
    """The leaf hashes of entries ``[lo, hi)`` from held entries and stored leaves (a clear
    keeps the leaves of the entries it drops), or None when one is known neither way."""
    wanted = [tree.index(0, k) for k in range(lo, hi) if k not in feed.have]
    stored = await feed.node_store_hashes(wanted) if wanted else {}
    out = []
    for k in range(lo, hi):
        if k in feed.have:
            out.append(tree.leaf_hash(await feed.get(k)))
        elif tree.index(0, k) in stored:
            out.append(stored[tree.index(0, k)])
        else:
            return None
    return out
