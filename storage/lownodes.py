"""Which low tree nodes a store keeps, and which it recomputes from the entries.

Leaves and the parents of pairs (depth up to ``RECOMPUTED_DEPTH``) over small stored entries are
not stored: hashing a 1 KiB entry again when a proof needs one is cheap, and it halves the node
rows. Over large entries (``LOW_NODE_BYTES`` or more) they are stored: a proof for a range next
to them would otherwise read up to two entries (128 KiB of chunks) back to recompute one hash,
where a node row costs 40 bytes. ``Feed.node_hashes`` reads stored nodes first and recomputes
only what is missing, so both kinds of store read the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import tree

RECOMPUTED_DEPTH = 1  # nodes this low over stored small entries are recomputed, not stored
LOW_NODE_BYTES = 4096  # an entry this large keeps its leaf and pair hashes


def recomputable(i: int, start: int, entries: Sequence[bytes], *, within: bool = True) -> bool:
    """Whether node ``i``, whose last entry is one of ``entries`` (stored as ``start, start + 1,
    ...``), is recomputed rather than stored (``within``: only if it lies wholly over them).
    The node's last entry decides."""
    if tree.depth(i) > RECOMPUTED_DEPTH:
        return False
    lo, hi = tree.leaf_span(i)
    if within and not (start <= lo and hi <= start + len(entries)):
        return False
    return len(entries[hi - 1 - start]) < LOW_NODE_BYTES
