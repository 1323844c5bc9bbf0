"""A writer's own entries fetched back from peers: gone here, still held elsewhere.

Theory of operation
-------------------
An entry of a writable feed can leave this device while its peers keep it: released to the
layer above and then lost when that layer changed its copy (:mod:`storage.outside`: a member's
file edited after its chunks were released), or cleared on purpose (a prune). When the layer
above needs it again (another member's change references it: a version restored from that
member's history, or a file whose chunks dedup against it), :func:`want_back` emits a ``want``
event; the replicator then asks the peers that announced the range (``networker``: a writable
feed's replicator requests only what is wanted back) and hands what comes to :func:`heal`.

No proof is needed: this device stored the leaf hash of each of its entries when it appended it,
and a clear, a release and a loss all keep the leaves. So :func:`heal` checks each entry's BLAKE3
leaf against the stored one; entries without a stored leaf are passed over (nothing to check
against), and a mismatch raises ``VerificationError`` (the peer sent something else: it is
disconnected, as for a bad proof). The good ones are stored again in one transaction, with the
feed's cleared ranges less them; then ``have`` gains them and a ``download`` event goes out,
which wakes the layer above and announces them to peers, as a replica's download does.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import tree
from .errors import NotWritableError, VerificationError
from .events import FeedEvent
from .feed import MAX_ENTRY_BYTES, MAX_PUT_ENTRIES
from .outside import runs
from .ranges import RangeSet

if TYPE_CHECKING:
    from .feed import Feed

_wanted: weakref.WeakKeyDictionary[Feed, RangeSet] = weakref.WeakKeyDictionary()


def want_back(feed: Feed, start: int, end: int) -> None:
    """Ask the replicator to fetch ``[start, end)`` of this writable feed back from peers. Only
    what is missing and not asked for already makes a ``want`` event (a caller may ask again
    every round: the event wakes the feed's listeners, a folder among them, once)."""
    if not feed.writable:
        raise NotWritableError("a replica fetches what it lacks by itself")
    asked = _wanted.setdefault(feed, RangeSet())
    for lo, hi in feed.have.missing(start, min(end, feed.length)):
        for a, b in asked.missing(lo, hi):
            asked.add(a, b)
            feed._emit(FeedEvent("want", a, b, feed.length))


async def heal(feed: Feed, start: int, entries: Sequence[bytes]) -> int:
    """Store again the entries ``start, start + 1, ...`` a peer sent back, each checked against
    its stored leaf (see the module docstring); returns the bytes stored."""
    if not feed.writable:
        raise NotWritableError("a replica's entries come with proofs: put_range")
    feed._rows.check_writable()
    if len(entries) > MAX_PUT_ENTRIES or any(len(e) > MAX_ENTRY_BYTES for e in entries):
        raise VerificationError("more entries, or larger ones, than a put takes")
    seqs = [start + k for k in range(len(entries)) if start + k < feed.length and start + k not in feed.have]
    if not seqs:
        return 0
    leaves = await feed.node_store_hashes([tree.index(0, s) for s in seqs])
    good: list[tuple[int, bytes]] = []
    for s in seqs:
        leaf = leaves.get(tree.index(0, s))
        if leaf is None:
            continue
        data = bytes(entries[s - start])
        if tree.leaf_hash(data) != leaf:
            raise VerificationError(f"entry {s} of our own feed {feed.key.hex()[:16]} came back changed")
        good.append((s, data))
    async with feed._clear_lock:
        good = [(s, d) for s, d in good if s not in feed.have]
        if not good:
            return 0
        cleared = feed.cleared.copy()
        for s, _ in good:
            cleared.remove(s, s + 1)
        size = sum(len(d) for _, d in good)

        def on_commit() -> None:
            asked = _wanted.get(feed)
            for s, _ in good:
                feed.have.add(s, s + 1)
                if asked is not None:
                    asked.remove(s, s + 1)  # held again: a later loss is asked for anew
            feed.cleared = cleared
            feed.stored_bytes += size

        await feed._rows.restore_entries(feed.id, good, on_commit=on_commit, cleared=cleared)
    for lo, hi in runs(s for s, _ in good):
        feed._emit(FeedEvent("download", lo, hi, feed.length))
    return size


__all__ = ["heal", "want_back"]
