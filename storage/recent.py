"""The tree nodes a writer's latest commits completed, kept in memory for its proofs.

Theory of operation
-------------------
Peers that follow a feed ask for what its writer just appended, within milliseconds; every
answer carries a proof, whose nodes (the siblings near the range, the roots, the upgrade from
the peer's tree) are mostly nodes the last appends completed. :class:`Recent` keeps the latest
``RECENT_NODES`` of them (and the roots of each new tree), so such a proof is built without a
node query to the store. A complete node never changes (clearing keeps nodes), so a kept one is
never stale; the feed adds them in its commit callback only, so none is ahead of the disk.

(Keeping the latest entries too, to serve them without a read, was measured and dropped: at 1
GiB the writer's peak RSS went from 111-117 to 130-141 MB with 4-8 MiB kept, for no gain seen
above the machine's noise: a replica that lags asks for entries no longer kept.)
"""

from __future__ import annotations

from collections.abc import Iterable

RECENT_NODES = 16384


class Recent:
    def __init__(self, limit: int = RECENT_NODES) -> None:
        self.limit = limit
        self._nodes: dict[int, bytes] = {}  # tree index -> hash, oldest first

    def remember_nodes(self, nodes: Iterable[tuple[int, bytes]]) -> None:
        """Complete tree nodes ``(index, hash)`` of a commit (or the tree's roots)."""
        for i, h in nodes:
            self._nodes.pop(i, None)
            self._nodes[i] = h
        while len(self._nodes) > self.limit:
            del self._nodes[next(iter(self._nodes))]

    def nodes(self, indices: Iterable[int]) -> dict[int, bytes]:
        """The hashes of those of ``indices`` kept here."""
        return {i: self._nodes[i] for i in indices if i in self._nodes}
