"""What a backup peer (seed) does for one group: keep to its quota and send receipts.

Theory of operation
-------------------
A backup peer holds a group's feeds without its keys. Two duties follow, both here:

- **Quota.** It stops taking new data when the group's stored bytes reach ``quota_bytes`` (0:
  no limit) or an outside limit says so (``Group.limit``, set by ``cobox.hosting``). The state
  is ``Group.quota_full``, decided again after every stored entry (:meth:`Seeding.stored`) and
  when asked (``Group.check_quota``); while full, every live channel of the group pauses its
  feeds (``netview.pause_feeds``), and a channel that goes live is paused at once.
- **Receipts.** It tells the members how far it holds each feed, with a signed
  :class:`~cobox.backup.receipts.Receipt` (length, tree root, quota state, ``keep_days``) per
  feed, sent on every live channel. Feeds are marked *due* when an entry is stored, when the
  quota state changes and when a channel goes live (all feeds). :meth:`Seeding.run` is the
  sender, run as the daemon's ``receipts:NAME`` service: once receipts are due, it waits
  ``RECEIPT_DELAY`` to gather more stored entries, then sends one receipt per due feed. A
  failure puts the feeds back as due and raises (the supervisor records it and restarts the
  sender). The same loop expires released entries on time (``cobox.backup.retention``).

Members keep the receipts they receive (``cobox.backup.claims``); the audits check them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING

from networker import Channel
from storage.errors import StorageError

from .. import netview
from . import retention
from .receipts import EXTENSION as RECEIPT_EXTENSION
from .receipts import Receipt

if TYPE_CHECKING:
    from ..groups import Group

log = logging.getLogger("cobox.groups")
RECEIPT_DELAY = 0.25  # seconds to gather stored entries into one receipt per feed


class Seeding:
    """The quota and the receipt sender of one group on a backup peer."""

    def __init__(self, group: Group) -> None:
        self.group = group
        self._due: set[bytes] = set()  # feeds whose receipts are due
        self._wake = asyncio.Event()  # set when receipts are due; run() sends them

    def stored(self, feed_key: bytes) -> None:
        """An entry of ``feed_key`` was stored here."""
        self.update_quota()
        self._due.add(feed_key)
        self.schedule()

    def all_due(self) -> None:
        """Every feed's receipt is due (a channel went live)."""
        self._due.update(f.key for f in self.group.feeds())
        self.schedule()

    def update_quota(self) -> None:
        """Decide whether to take new data; apply it to every live channel."""
        g = self.group
        full = (bool(g.quota_bytes) and g.stored_bytes() >= g.quota_bytes) or (g.limit is not None and g.limit())
        if full != g.quota_full:
            g.quota_full = full
            if full:
                log.warning("group %s reached its quota (%d bytes) or its host's limit: taking no new data",
                            g.name, g.quota_bytes)
            self._due.update(f.key for f in g.feeds())
        for ch in g.channels:
            self.apply_quota(ch)

    def apply_quota(self, channel: Channel) -> None:
        netview.pause_feeds(channel, self.group.quota_full)

    def schedule(self) -> None:
        if self.group.channels:
            self._wake.set()

    async def run(self) -> None:
        """The receipt sender (see the module docstring); runs until cancelled."""
        g = self.group
        while True:
            try:
                async with asyncio.timeout(retention.check_interval(g)):
                    await self._wake.wait()
            except TimeoutError:
                await retention.expire_released(g)
                continue
            await asyncio.sleep(RECEIPT_DELAY)
            self._wake.clear()
            await self._send()

    async def _send(self) -> None:
        g = self.group
        due, self._due = self._due, set()
        try:
            for key in due:
                try:
                    feed = g.store.feed(key)
                    length = retention.receipt_length(feed)
                    if length == 0:
                        continue
                    root = await feed.tree_hash_at(length)
                except StorageError as e:
                    log.debug("no receipt for %s: %s", key.hex()[:16], e)
                    continue
                r = Receipt.make(g.identity.sign, g.device_id, g.discovery_key, key, length, root,
                                 int(time.time() * 1000), g.quota_full, math.ceil(g.keep_days))
                body = r.to_body()
                for ch in g.channels:
                    netview.send_extension(ch, RECEIPT_EXTENSION, body)
        except BaseException:
            self._due |= due
            self._wake.set()
            raise
