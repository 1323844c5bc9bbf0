"""Fork evidence: when a replica may call two signed trees of one feed a fork, and how the
evidence is kept.

Theory of operation
-------------------
A fork is the writer signing two trees that cannot both be prefixes of one history. The replica
records one only from evidence that two valid signatures bind: two signed trees of the same
length with different hashes, or one node index whose hash differs between a node our signed
tree covers (a root, a stored node, or one recomputed from stored entries) and a node the new
signature covers (rebuilt from the entries and the range proof that the signature was checked
against). Upgrade nodes are never evidence: no signature covers them, so anyone relaying the
writer's real tree can put anything there (``proof.verify_upgrade`` calls that a bad proof).

:func:`record_fork` writes the evidence (both signed trees, the node and its two hashes) and the
feed's ``forked`` mark in one job, then raises :class:`ForkError`; later puts are refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from . import tree
from .errors import ForkError
from .proof import SignedTree
from .rows import Rows


class ForkSubject(Protocol):
    """What the fork checks need of a feed (``storage.feed.Feed`` is one)."""

    forked: bool

    @property
    def id(self) -> int: ...

    @property
    def key(self) -> bytes: ...

    async def node_hashes(self, indices: Sequence[int]) -> dict[int, bytes]: ...


async def fork_by_signed_nodes(
    rows: Rows, feed: ForkSubject, ours: SignedTree, signed: SignedTree, established: Mapping[int, bytes],
    our_roots: Sequence[tuple[int, bytes]], uncommitted: Mapping[int, bytes],
) -> None:
    """Record and raise a fork if a node the new signature covers (``established``) differs
    from the same node of our signed tree ``ours`` (with roots ``our_roots``; ``uncommitted``:
    verified nodes still being written). Returns when no such node is known here."""
    ours_nodes = dict(our_roots)
    inside = [i for i in established if tree.leaf_span(i)[1] <= ours.length and i not in ours_nodes]
    ours_nodes.update(await feed.node_hashes(inside))
    ours_nodes.update((i, uncommitted[i]) for i in inside if i in uncommitted)
    for i in sorted(established):
        if i in ours_nodes and ours_nodes[i] != established[i]:
            await record_fork(rows, feed, ours, signed, i, ours_nodes[i], established[i])


async def record_fork(
    rows: Rows, feed: ForkSubject, a: SignedTree, b: SignedTree, index: int | None, hash_a: bytes | None,
    hash_b: bytes | None,
) -> None:
    """Keep the evidence that ``a`` and ``b`` conflict (at node ``index``, when one is known),
    mark the feed forked, and raise :class:`ForkError`."""

    def on_commit() -> None:
        feed.forked = True

    await rows.record_fork(feed.id, a, b, index, hash_a, hash_b, on_commit)
    raise ForkError(
        f"feed {feed.key.hex()[:16]}: the writer signed two different trees "
        f"(lengths {a.length} and {b.length})"
    )
