"""Retention on backup peers: releases from members, kept ``[backup] history_days``, then cleared.

Theory of operation
-------------------
A member that pruned its history (:mod:`cobox.folders.prune`) cleared chunk entries of its own
feed; it tells the group's channels so with a :class:`~cobox.backup.receipts.Release` of its
feed's cleared ranges, signed with the feed's key (:func:`release_body`, sent after each prune
and when a channel goes live). A backup peer cannot read the group, so it cannot judge which
entries are still needed; it trusts only the writer of a feed to release that feed's entries
(the signature is checked against the feed key before anything is done). It records when it
first saw each range released (scope ``released:<namespace>``, bounded) and, with
``[backup] history_days`` N > 0, clears the ranges released N days ago or more
(:func:`expire_released`, run on every release received and every :func:`check_interval` by
the group's receipt service); with 0 (the default) it keeps
everything. Receipts carry N (``keep_days``) so members know what the peer still holds.
A release cannot make a backup peer drop anything else: it names only the signer's own feed,
and the peer's receipts still count released entries, which members never audit (a member
audits only entries it holds itself).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgpack

from storage import Feed, RangeSet
from storage.errors import StorageError

from .. import netview
from .receipts import RELEASE_EXTENSION, Release

if TYPE_CHECKING:
    from ..groups import Group

MAX_RELEASED = 4096  # released ranges remembered per feed
CHECK_INTERVAL = 3600.0  # seconds between two expiries of released entries, at most


def check_interval(group: Group) -> float | None:
    """How long the receipt service may wait before expiring released entries (None: never)."""
    if group.is_member or not group.keep_days:
        return None
    return max(1.0, min(CHECK_INTERVAL, group.keep_days * 86400 / 4))


def decode_released(raw: bytes) -> list[tuple[int, int, float]]:
    """This device's own record of released ranges ``[lo, hi, first seen]`` (strict anyway)."""
    try:
        obj = msgpack.unpackb(raw, raw=False)
    except Exception:  # msgpack raises a zoo of types for bad input
        return []
    out = []
    for r in obj if isinstance(obj, list) else []:
        if (isinstance(r, list) and len(r) == 3 and all(type(x) is int for x in r[:2])
                and type(r[2]) in (int, float) and 0 <= r[0] < r[1]):
            out.append((r[0], r[1], float(r[2])))
    return out


def _scope(group: Group) -> str:
    return f"released:{group.namespace}"


def release_body(group: Group) -> bytes | None:
    """As a member: the signed release of what this device cleared of its own feed."""
    own = group.own_feed()
    if own is None or not own.cleared:
        return None
    return Release.make(own.sign_statement, group.discovery_key, own.key, list(own.cleared),
                        int(time.time() * 1000)).to_body()


def send_release(group: Group) -> None:
    """Tell every live channel what this device no longer keeps of its feed (after a prune)."""
    body = release_body(group)
    if body is not None:
        for ch in group.channels:
            netview.send_extension(ch, RELEASE_EXTENSION, body)


async def on_release(group: Group, release: Release) -> None:
    """As a backup peer: remember when each range was first released, then clear what has
    been released longer than ``keep_days`` (0: keep everything)."""
    if group.is_member or group.owner(release.feed) is None:
        return
    scope = group.store.scope(_scope(group))
    raw = await scope.get(release.feed.hex())
    known = decode_released(raw) if raw is not None else []
    seen = RangeSet((lo, hi) for lo, hi, _ in known)
    when = time.time()  # our clock, not the member's: first seen released here
    for lo, hi in release.ranges:
        known.extend((a, b, when) for a, b in seen.missing(lo, hi))
        seen.add(lo, hi)
    await scope.put(release.feed.hex(), msgpack.packb([list(k) for k in known[-MAX_RELEASED:]]))
    await expire_released(group)


async def expire_released(group: Group, now: float | None = None) -> int:
    """As a backup peer: clear the released ranges older than ``keep_days``; the bytes freed."""
    if group.is_member or not group.keep_days:
        return 0
    now = time.time() if now is None else now
    freed = 0
    for key, raw in (await group.store.scope(_scope(group)).all()).items():
        try:
            feed = group.store.feed(bytes.fromhex(key))
        except (StorageError, ValueError):
            continue
        for lo, hi, when in decode_released(raw):
            if now - when >= group.keep_days * 86400 and feed.have.intersection(lo, hi):
                freed += await feed.clear(lo, hi)
    return freed


def receipt_length(feed: Feed) -> int:
    """What a receipt claims of ``feed``: the first N entries held, counting the released ones
    this backup peer cleared ("the first N, but for those released")."""
    held = feed.have.copy()
    for lo, hi in feed.cleared:
        held.add(lo, hi)
    return min(held.contiguous_from(0), feed.length)
