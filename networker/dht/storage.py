"""Per-topic storage of signed peer records, for one DHT node.

Theory of operation
-------------------
kademlia's ``ForgetfulStorage`` keeps one value per key. A topic needs many: one record per
announcing peer. :class:`RecordStorage` implements kademlia's ``IStorage`` over

    dht key (20 bytes) -> {peer_id -> Entry(record, source IP, first seen, announces)}

Rules (each enforced in :meth:`RecordStorage.add`):

- only records that verify (signature, size, expiry) and carry at least one address the
  :class:`~.policy.AddressPolicy` accepts are stored;
- a record replaces the one of the same peer only if it expires later (a re-announcement:
  ``announces`` goes up, ``first_seen`` stays);
- per topic, at most :attr:`TopicLimits.per_ip` records from one sender IP and
  :attr:`TopicLimits.per_subnet` from one /24 (IPv4) or /64 (IPv6), so one host or one
  network cannot take a topic's slots; over all topics at most ``per_source`` records on
  behalf of one sender IP, so one host cannot fill a node's memory;
- a topic holds at most :attr:`TopicLimits.per_topic` records. When it is full, a new record
  (that passed the per-IP and per-subnet limits) takes the place of the *least re-announced*
  one, the oldest first seen among equals: records whose owners keep re-announcing them stay,
  records nobody renews make room (the owner of an evicted record gets it back at its next
  announce);
- expired records are dropped whenever a key is read and by :meth:`cull` (which the node calls
  periodically).

Records stored by this node itself have the source :data:`LOCAL_SOURCE`, which no limit applies
to. The clock is injected (``clock() -> unix seconds``) so tests can move time, and so are the
limits and the sender IP (the protocol passes it), so tests can play many hosts on one machine.

The ``IStorage`` methods (``__setitem__`` etc.) take and return *encoded* records; kademlia's
own code paths only reach them through ``Server.set``/``get``, which the DHT does not use.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from kademlia.storage import IStorage

from .limits import ip_groups
from .policy import AddressPolicy
from .records import PeerRecord, decode_valid

LOCAL_SOURCE = "local"
DEFAULT_PER_TOPIC = 64
DEFAULT_PER_SOURCE = 256


@dataclass(frozen=True, slots=True)
class TopicLimits:
    per_topic: int = DEFAULT_PER_TOPIC
    per_ip: int = 4
    per_subnet: int = 8


@dataclass(slots=True)
class Entry:
    record: PeerRecord
    source: str
    first_seen: float
    announces: int = 1


class RecordStorage(IStorage):
    def __init__(
        self,
        per_topic: int = DEFAULT_PER_TOPIC,
        per_source: int = DEFAULT_PER_SOURCE,
        clock: Callable[[], float] = time.time,
        *,
        limits: TopicLimits | None = None,
        policy: AddressPolicy | None = None,
    ) -> None:
        self.limits = limits if limits is not None else TopicLimits(per_topic=per_topic)
        self.per_topic = self.limits.per_topic
        self.per_source = per_source
        self.clock = clock
        self.policy = policy if policy is not None else AddressPolicy()
        self.evicted = 0
        self._topics: dict[bytes, dict[bytes, Entry]] = {}
        self._per_source: Counter[str] = Counter()

    # -- the record interface ------------------------------------------------------------

    def add(self, key: bytes, record: PeerRecord, source: str = LOCAL_SOURCE) -> bool:
        """Store ``record`` under ``key`` on behalf of ``source``; False if refused."""
        if record.key != key or not record.is_valid(self.clock()) or not self.policy.dialable(record):
            return False
        self._cull_key(key)
        entries = self._topics.get(key, {})
        old = entries.get(record.peer_id)
        if old is not None and record.expires <= old.record.expires:
            return record == old.record
        if (old is None or old.source != source) and not self._room_for(entries, source, old):
            return False
        if old is not None:
            self._forget_source(old.source)
            entry = Entry(record, source, old.first_seen, old.announces + 1)
        else:
            if len(entries) >= self.limits.per_topic:
                self._evict_one(key, entries)
            entry = Entry(record, source, self.clock())
        self._topics.setdefault(key, {})[record.peer_id] = entry
        self._per_source[source] += 1
        return True

    def _room_for(self, entries: dict[bytes, Entry], source: str, replacing: Entry | None) -> bool:
        """Whether ``source`` may hold one more record in this topic (and over all topics)."""
        if source == LOCAL_SOURCE:
            return True
        if self._per_source[source] >= self.per_source:
            return False
        ip, subnet = ip_groups(source)
        same_ip = same_subnet = 0
        for e in entries.values():
            if e is replacing:
                continue
            e_ip, e_subnet = ip_groups(e.source)
            same_ip += e_ip == ip
            same_subnet += e_subnet == subnet
        return same_ip < self.limits.per_ip and same_subnet < self.limits.per_subnet

    def _evict_one(self, key: bytes, entries: dict[bytes, Entry]) -> None:
        candidates = [(e.announces, e.first_seen, pid) for pid, e in entries.items() if e.source != LOCAL_SOURCE]
        if not candidates:
            candidates = [(e.announces, e.first_seen, pid) for pid, e in entries.items()]
        _, _, victim = min(candidates)
        self.remove(key, victim)
        self.evicted += 1

    def records(self, key: bytes) -> list[PeerRecord]:
        """The unexpired records under ``key``."""
        self._cull_key(key)
        return [e.record for e in self._topics.get(key, {}).values()]

    def remove(self, key: bytes, peer_id: bytes) -> None:
        entry = self._topics.get(key, {}).pop(peer_id, None)
        if entry is not None:
            self._forget_source(entry.source)
        if key in self._topics and not self._topics[key]:
            del self._topics[key]

    def cull(self) -> int:
        """Drop every expired record; return how many were dropped."""
        return sum(self._cull_key(key) for key in list(self._topics))

    def count(self) -> int:
        return sum(len(v) for v in self._topics.values())

    def source_count(self, source: str) -> int:
        return self._per_source[source]

    def entry(self, key: bytes, peer_id: bytes) -> Entry | None:
        return self._topics.get(key, {}).get(peer_id)

    def _cull_key(self, key: bytes) -> int:
        entries = self._topics.get(key)
        if not entries:
            return 0
        now = self.clock()
        dead = [pid for pid, e in entries.items() if e.record.expires <= now]
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
        items = [(k, e.record.encode()) for k, entries in self._topics.items() for e in entries.values()]
        return iter(items)
