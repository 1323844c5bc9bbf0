"""A writer's latest entries, kept in memory to serve.

Theory of operation
-------------------
Peers that follow a feed ask for what its writer just appended, within milliseconds: serving
those answers from the store costs the writer (which is busy recording) two queries and a blob
read per answer. :class:`Recent` keeps the entries of the last commits, ``RECENT_BYTES`` at most
(the oldest go first), and answers a range the way ``Feed.get_range(..., max_bytes=...)`` does:
the longest prefix held, at least one entry. It only ever holds committed entries (the feed
adds them in its commit callback) and forgets cleared ones (in the clear's commit callback); the
feed still checks ``have`` before serving from it. Bytes objects are shared with the commit
that wrote them, so the memory it adds is at most ``RECENT_BYTES`` per writable feed.

The tree nodes those commits completed (and the roots of the tree) are kept too, the latest
``RECENT_NODES``: a proof for a recent range needs nodes near it and the roots, so it is built
without a query. A complete node never changes (clearing keeps nodes), so a kept one is never
stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

RECENT_BYTES = 8 * 1024 * 1024
RECENT_NODES = 16384


class Recent:
    def __init__(self, limit: int = RECENT_BYTES) -> None:
        self.limit = limit
        self._entries: dict[int, bytes] = {}  # seq -> entry, in commit order (oldest first)
        self._bytes = 0
        self._nodes: dict[int, bytes] = {}  # tree index -> hash, oldest first

    def remember(self, start: int, entries: Sequence[bytes]) -> None:
        """Entries ``start, start + 1, ...`` were just committed."""
        for k, e in enumerate(entries):
            old = self._entries.pop(start + k, None)
            if old is not None:
                self._bytes -= len(old)
            self._entries[start + k] = e
            self._bytes += len(e)
        while self._bytes > self.limit:
            self._bytes -= len(self._entries.pop(next(iter(self._entries))))

    def forget(self, start: int, end: int) -> None:
        """Entries ``[start, end)`` are no longer stored (cleared)."""
        for seq in [k for k in self._entries if start <= k < end]:
            self._bytes -= len(self._entries.pop(seq))

    def range(self, start: int, end: int, max_bytes: int, stored: Callable[[int], bool]) -> list[bytes] | None:
        """The longest prefix of ``[start, end)`` held here and ``stored`` that fits ``max_bytes``
        (at least one entry); None when entry ``start`` is not held."""
        out: list[bytes] = []
        total = 0
        for seq in range(start, end):
            e = self._entries.get(seq)
            if e is None or not stored(seq) or (out and total + len(e) > max_bytes):
                break
            out.append(e)
            total += len(e)
        return out or None

    def remember_nodes(self, nodes: Iterable[tuple[int, bytes]]) -> None:
        """Complete tree nodes ``(index, hash)`` of a commit (or the tree's roots)."""
        for i, h in nodes:
            self._nodes.pop(i, None)
            self._nodes[i] = h
        while len(self._nodes) > RECENT_NODES:
            del self._nodes[next(iter(self._nodes))]

    def nodes(self, indices: Iterable[int]) -> dict[int, bytes]:
        """The hashes of those of ``indices`` kept here."""
        return {i: self._nodes[i] for i in indices if i in self._nodes}
