"""Records and feeds refused from other devices: counted and reported per device.

Theory of operation
-------------------
Every decoder of what another device wrote (folder ops, chunk entries, log entries, feed
admissions) refuses what is not exactly valid. A refusal is never fatal: the entry is skipped
and noted here against the device that owns the feed (the admission's owner), so
``folder status`` and ``status`` can show, per device, how many records were refused and why
the last one was. An entry may be read more than once (the log is re-read on each
``log cat``, a folder re-reads on restart), so refusals are counted once per ``(feed, seq)``.

Counts live in memory only: every reader re-reads its feeds from the start after a restart,
which counts the same refusals again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from storage import RangeSet

log = logging.getLogger(__name__)
MAX_REASON = 200
MAX_REFUSED_FEEDS = 10_000  # distinct refused feed keys remembered per group (then only counted)


@dataclass
class _Device:
    records: int = 0
    last_reason: str = ""
    last_time: float = 0.0
    feeds: int = 0
    last_feed_reason: str = ""


class Refusals:
    """Per-device refusal counts of one group."""

    def __init__(self) -> None:
        self._devices: dict[bytes, _Device] = {}
        self._seen: dict[bytes, RangeSet] = {}  # feed -> seqs already counted
        self._feeds: set[bytes] = set()

    def record(self, device: bytes, feed: bytes, seq: int, reason: str) -> bool:
        """Note that entry ``seq`` of ``feed`` (owned by ``device``) was refused; False if it
        was counted before."""
        seen = self._seen.setdefault(feed, RangeSet())
        if seq in seen:
            return False
        seen.add(seq, seq + 1)
        d = self._devices.setdefault(device, _Device())
        d.records += 1
        d.last_reason, d.last_time = reason[:MAX_REASON], time.time()
        if d.records == 1 or d.records % 1000 == 0:  # a hostile feed must not flood the log
            log.warning("refused %d record(s) from device %s, last: %s", d.records, device.hex()[:16], reason)
        return True

    def feed(self, device: bytes, feed: bytes, reason: str) -> None:
        """Note a feed refused at admission (a limit reached, a bad admission)."""
        if feed in self._feeds:
            return
        if len(self._feeds) < MAX_REFUSED_FEEDS:
            self._feeds.add(feed)
        d = self._devices.setdefault(device, _Device())
        d.feeds += 1
        d.last_feed_reason = reason[:MAX_REASON]
        if d.feeds == 1 or d.feeds % 1000 == 0:
            log.warning("refused %d feed(s) of device %s: %s", d.feeds, device.hex()[:16], reason)

    def count(self, device: bytes) -> int:
        d = self._devices.get(device)
        return d.records if d is not None else 0

    def as_json(self) -> dict[str, dict[str, Any]]:
        """device id (hex) -> ``records_refused``, ``last_refused_reason``, ``feeds_refused``..."""
        return {dev.hex(): {"records_refused": d.records, "last_refused_reason": d.last_reason,
                            "last_refused_time": d.last_time or None, "feeds_refused": d.feeds,
                            "last_refused_feed_reason": d.last_feed_reason}
                for dev, d in sorted(self._devices.items())}
