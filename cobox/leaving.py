"""Leaving a group frees its space: what ``group leave`` / ``seed remove`` delete.

Theory of operation
-------------------
Unless ``--keep-data`` is given, leaving deletes every feed of the group's namespace from the
store (``Store.delete_feed``: entries, tree nodes, signature, fork evidence, cleared ranges, and
the blob-file extents, punched out after the commit) and every record scope that belongs to the
group (their names end in ``:<namespace>``: admissions, receipts, audits, folder state,
retention marks, releases), then gives the database's free pages back (``Store.vacuum``). The
daemon stops the group's replication, folder and services first, so nothing writes meanwhile.
The folder's own files are never touched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .groups import Group


async def delete_data(group: Group) -> int:
    """Delete everything this device keeps for ``group`` (see above); the group object is to be
    dropped afterwards. Returns the bytes of entry data deleted."""
    freed = 0
    for feed in group.store.feeds(group.namespace):
        freed += feed.stored_bytes
        await group.store.delete_feed(feed)
    for scope in await group.store.scopes():
        if scope.endswith(f":{group.namespace}"):
            await group.store.delete_scope(scope)
    await group.store.vacuum()
    return freed
