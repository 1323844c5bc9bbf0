"""Fakes and an in-memory pair for the pure replication objects (mux, channel, replicator).

No store, no loop, no sockets: a :class:`FakeFeed` holds entries in a dict and "verifies"
nothing; a :class:`Side` is a minimal shell that carries out actions the way
:mod:`networker.peer` does, synchronously, and :func:`pump` moves messages between two sides
until both are quiet. Tests assert the exact actions each pure object returns.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field

from networker import caps
from networker import channel as c
from networker import messages as m
from networker.mux import Mux
from networker.replicator import FeedReplicator, Ledger
from storage import RangeSet

HANDSHAKE = bytes(range(32))


def key(name: str) -> bytes:
    return hashlib.blake2b(name.encode(), digest_size=32).digest()


@dataclass(eq=False)
class FakeFeed:
    key: bytes
    writable: bool = False
    entries: dict[int, bytes] = field(default_factory=dict)
    known_length: int = 0
    cleared: RangeSet = field(default_factory=RangeSet)  # what a clear dropped (not fetched again)

    @property
    def have(self) -> RangeSet:
        rs = RangeSet()
        for i in self.entries:
            rs.add(i, i + 1)
        return rs

    @property
    def length(self) -> int:
        return self.have.contiguous_from(0)

    def put(self, start: int, entries: tuple[bytes, ...], length: int) -> None:
        for k, e in enumerate(entries):
            self.entries[start + k] = e
        self.known_length = max(self.known_length, length)


@dataclass(eq=False)
class FakeGroup:
    discovery_key: bytes
    replication_key: bytes
    local: list[FakeFeed] = field(default_factory=list)
    admits: bool = True

    def feeds(self) -> list[FakeFeed]:
        return list(self.local)

    def tag(self, feed: FakeFeed) -> bytes:
        return b""

    def accept(self, k: bytes) -> FakeFeed | None:
        """What ``accept_feed`` would answer (sync here: the Side feeds it back)."""
        for f in self.local:
            if f.key == k:
                return f
        if not self.admits:
            return None
        f = FakeFeed(k)
        self.local.append(f)
        return f


def group(name: str = "g", feeds: list[FakeFeed] | None = None) -> FakeGroup:
    return FakeGroup(key(name + "/dk"), key(name + "/rk"), list(feeds or []))


class Side:
    """One end: a Mux with its own ledger and replicators, and a synchronous shell."""

    def __init__(self, groups: list[FakeGroup], initiator: bool, *, max_outstanding: int = 16) -> None:
        self.groups = {g.discovery_key: g for g in groups}
        self.ledger = Ledger()
        self.reps: dict[bytes, FeedReplicator] = {}
        self.mux = Mux(HANDSHAKE, initiator, self.groups.get, self.ledger, self.rep,  # type: ignore[arg-type]
                       max_outstanding=max_outstanding)
        self.outbox: deque[m.Message] = deque()
        self.log: list[str] = []  # what the shell did, in order
        self.delivered: list[tuple[str, bytes]] = []

    def rep(self, feed: FakeFeed) -> FeedReplicator:
        r = self.reps.get(feed.key)
        if r is None:
            r = self.reps[feed.key] = FeedReplicator(feed, self.ledger)  # type: ignore[arg-type]
        return r

    def open(self, g: FakeGroup) -> c.Channel:
        ch, actions = self.mux.open(g)  # type: ignore[arg-type]
        self.run(actions)
        return ch

    def run(self, actions: list[c.Action]) -> None:
        queue = deque(actions)
        while queue:
            a = queue.popleft()
            self.log.append(type(a).__name__)
            if isinstance(a, c.Send):
                self.outbox.append(a.msg)
            elif isinstance(a, c.Accept):
                g = self.groups[a.channel.group.discovery_key]
                queue.extendleft(reversed(a.channel.accepted(a.key, g.accept(a.key))))  # type: ignore[arg-type]
            elif isinstance(a, c.Store):
                a.request.peer.feed.put(a.data.start, a.data.entries, a.data.length)  # type: ignore[attr-defined]
                queue.extend(a.channel.stored(a.request, c.StoreOutcome.STORED, len(a.data.entries),
                                              sum(map(len, a.data.entries))))
            elif isinstance(a, c.Schedule):
                self.schedule(a.replicator)
            elif isinstance(a, c.SlotFreed):
                while (r := self.mux.next_starved()) is not None:
                    self.schedule(r)
            elif isinstance(a, c.Serve):
                f, req = a.feed, a.request
                end = min(req.end, f.have.contiguous_from(req.start))
                if end <= req.start:
                    self.outbox.append(m.NoData(a.channel.local_id, req.id, "not stored here"))
                else:
                    entries = tuple(f.entries[i] for i in range(req.start, end))  # type: ignore[attr-defined]
                    self.outbox.append(m.Data(a.channel.local_id, req.id, f.key, req.start, entries,
                                              f.length, bytes(64), ()))
            elif isinstance(a, c.FlushLater):
                queue.extend(a.channel.flush())
            elif isinstance(a, c.Deliver):
                self.delivered.append((a.name, a.body))

    def schedule(self, rep: FeedReplicator) -> None:
        for want in rep.schedule(self.mux.budget):
            self.outbox.append(self.mux.request(want))

    def changed(self, feed: FakeFeed, start: int, end: int) -> None:
        """A local append: what the shell does on the feed's change event."""
        rep = self.rep(feed)
        for pf in rep.on_local_change(None):  # type: ignore[arg-type]
            self.run(pf.channel.announce(feed.key, start, end))  # type: ignore[attr-defined]
        self.schedule(rep)


def pump(a: Side, b: Side, limit: int = 10_000) -> int:
    """Deliver messages both ways until both outboxes are empty; the number delivered."""
    n = 0
    while a.outbox or b.outbox:
        assert n < limit, "the pair does not settle"
        for src, dst in ((a, b), (b, a)):
            if src.outbox:
                dst.run(dst.mux.receive(src.outbox.popleft()))
                n += 1
    return n


def capability(g: FakeGroup, initiator: bool) -> bytes:
    return caps.capability(g.replication_key, HANDSHAKE, initiator)
