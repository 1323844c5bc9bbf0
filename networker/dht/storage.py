"""Per-topic storage of signed peer records, for one DHT node.

Theory of operation
-------------------
kademlia's ``ForgetfulStorage`` keeps one value per key. A topic needs many: one record per
announcing peer. :class:`RecordStorage` implements kademlia's ``IStorage`` over

    dht key (20 bytes) -> {peer_id -> (record, source IP)}

Rules (each enforced in :meth:`RecordStorage.add`):

- only records that verify (signature, size, expiry) are stored;
- a record replaces the one of the same peer only if it expires later (a newer announcement);
- at most ``per_topic`` records per key and ``per_source`` records stored on behalf of one
  sender IP over all keys, so one host cannot fill a node's memory;
- expired records are dropped whenever a key is read and by :meth:`cull` (which the node calls
  periodically).

The clock is injected (``clock() -> unix seconds``) so tests can move time.

The ``IStorage`` methods (``__setitem__`` etc.) take and return *encoded* records; kademlia's
own code paths only reach them through ``Server.set``/``get``, which the DHT does not use.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator

from kademlia.storage import IStorage

from .records import PeerRecord, decode_valid

LOCAL_SOURCE = "local"
DEFAULT_PER_TOPIC = 64
DEFAULT_PER_SOURCE = 256


class RecordStorage(IStorage):
    def __init__(
        self,
        per_topic: int = DEFAULT_PER_TOPIC,
        per_source: int = DEFAULT_PER_SOURCE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.per_topic = per_topic
        self.per_source = per_source
        self.clock = clock
        self._topics: dict[bytes, dict[bytes, tuple[PeerRecord, str]]] = {}
        self._per_source: Counter[str] = Counter()

    # -- the record interface ------------------------------------------------------------

    def add(self, key: bytes, record: PeerRecord, source: str = LOCAL_SOURCE) -> bool:
        """Store ``record`` under ``key`` on behalf of ``source``; False if refused."""
        if record.key != key or not record.is_valid(self.clock()):
            return False
        self._cull_key(key)
        entries = self._topics.get(key, {})
        old = entries.get(record.peer_id)
        if old is not None:
            old_record, old_source = old
            if record.expires <= old_record.expires:
                return record == old_record
            if old_source != source and self._per_source[source] >= self.per_source:
                return False
            self._forget_source(old_source)
        else:
            if len(entries) >= self.per_topic or self._per_source[source] >= self.per_source:
                return False
        self._topics.setdefault(key, {})[record.peer_id] = (record, source)
        self._per_source[source] += 1
        return True

    def records(self, key: bytes) -> list[PeerRecord]:
        """The unexpired records under ``key``."""
        self._cull_key(key)
        return [r for r, _ in self._topics.get(key, {}).values()]

    def remove(self, key: bytes, peer_id: bytes) -> None:
        entry = self._topics.get(key, {}).pop(peer_id, None)
        if entry is not None:
            self._forget_source(entry[1])
        if key in self._topics and not self._topics[key]:
            del self._topics[key]

    def cull(self) -> int:
        """Drop every expired record; return how many were dropped."""
        return sum(self._cull_key(key) for key in list(self._topics))

    def count(self) -> int:
        return sum(len(v) for v in self._topics.values())

    def source_count(self, source: str) -> int:
        return self._per_source[source]

    def _cull_key(self, key: bytes) -> int:
        entries = self._topics.get(key)
        if not entries:
            return 0
        now = self.clock()
        dead = [pid for pid, (r, _) in entries.items() if r.expires <= now]
        for pid in dead:
            self.remove(key, pid)
        return len(dead)

    def _forget_source(self, source: str) -> None:
        self._per_source[source] -= 1
        if self._per_source[source] <= 0:
            del self._per_source[source]

    # -- kademlia's IStorage (encoded records) --------------------------------------------

    def __setitem__(self, key: bytes, value: bytes) -> None:
        record = decode_valid(value, self.clock())
        if record is not None:
            self.add(key, record)

    def __getitem__(self, key: bytes) -> list[bytes]:
        found = self.records(key)
        if not found:
            raise KeyError(key)
        return [r.encode() for r in found]

    def get(self, key: bytes, default: object = None) -> object:
        try:
            return self[key]
        except KeyError:
            return default

    def iter_older_than(self, seconds_old: float) -> list[tuple[bytes, bytes]]:
        # Records are re-announced by their owners, never republished by storing nodes.
        return []

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        self.cull()
        items = [(k, r.encode()) for k, entries in self._topics.items() for r, _ in entries.values()]
        return iter(items)
