"""Deciding what to download of one feed from every peer that has it (pure: no I/O, no loop).

Theory of operation
-------------------
There is one :class:`FeedReplicator` per local feed, shared by every channel (peer) that
replicates it, and one :class:`PeerFeed` per (channel, feed): what that peer says it stores
(``Have``). Every request made to any peer is recorded in one place, the node's
:class:`Ledger`: which connection it went to, its id there, its range and the peer's claim when
it was made. The ledger answers the three questions the layers above ask: how many requests a
connection has awaiting an answer (the mux's request budget), which range of a feed is in flight
(so that nothing is fetched twice and several peers are asked for different ranges), and which
request an answer belongs to.

``schedule(budget)`` returns :class:`Want` s: for each peer with room in its budget (``budget(pf)``
is how many more requests that peer's connection may take), the first ranges the peer has, we
lack, nobody is already fetching, and (for a sparse download) we want; entries this store
cleared on purpose (``feed.cleared``) are not fetched again unless asked for (``want``). Ranges are of up to
``batch`` entries, sized from the entry sizes seen so far so that one response carries about
``REQUEST_BYTES``. The caller turns each Want into a request (``Mux.request``, which records it
in the ledger). When an answer is stored (``on_response``), refused (``on_refused``) or a peer
goes away (``remove_peer``), its range is released and the caller schedules again. After a
reconnect the same computation simply starts from what the store already holds.

``on_local_change`` (our appends, verified downloads) names the peers to announce the new range
to; the channel coalesces them into incremental ``Have`` messages.

Chained proofs
--------------
Every answer carries the server's signed tree at the time it is sent, and a replica takes a
longer tree only with the upgrade from the tree it holds. While a writer appends, the trees of
the answers to one batch of requests differ; each request said what we held when it was made,
so every answer after the first that moved us on would not connect (stale) and was fetched again
(measured: 460-515 MiB on the wire for a 256 MiB file). Since a channel's answers are verified
in the order they are sent (the shell keeps that order), a request may be ``chained``: the
server proves the upgrade from the tree of its previous answer (if longer than what the
request says we hold). ``PeerFeed.chained`` is true while we took every answer of that peer for
that feed; a stale answer (a lost or reordered one, another peer moving us on) clears it, and
requests are plain until a plain one is taken. ``PeerFeed.sent_length`` is the serving side's
memory of its last answer.

Claims and proof
----------------
A ``Have`` is a claim, not a proof. Its ranges are clipped to its own signed length (nobody
holds entries beyond the tree they hold), and progress counts only up to the longest signed
length verified here (``verified_length``): ``missing_from`` can never exceed the writer's real
signed length, whatever a peer claims. A claim beyond that length is *unconfirmed*: the channel
is not settled while one is pending, and the next request to that peer settles it. Every request
records the peer's claim when it was made; since the peer sent that claim before it saw the
request, an honest answer proves a signed length at least that long (signed lengths only grow).
A proof for less is a lie (the channel raises ``RemoteProtocolError``); a ``NoData`` for a range
beyond ``verified_length`` withdraws the peer's claim from that point on.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field

from storage import Feed, FeedEvent, RangeSet

REQUEST_BYTES = 1024 * 1024
MAX_REQUEST_ENTRIES = 1024
FIRST_REQUEST_ENTRIES = 64
END = 1 << 63  # beyond every feed position

Budget = Callable[["PeerFeed"], int]


class PeerFeed:
    """One peer's view of one feed, as far as we know it. ``link`` names the connection (the
    ledger's key); ``channel`` is the channel it belongs to (for the shell's routing only)."""

    def __init__(self, link: Hashable, channel: object, replicator: FeedReplicator) -> None:
        self.link = link
        self.channel = channel
        self.replicator = replicator
        self.remote_length = 0  # the longest signed length the peer claims (not proven)
        self.remote_have = RangeSet()
        self.have_received = False
        # Our requests may ask the peer to chain its proofs (``Request.chained``): true while
        # we have taken every answer of this peer for this feed; a stale one breaks the chain
        # until an unchained request is answered and taken.
        self.chained = True
        self.sent_length = 0  # serving: the signed length of our last answer to the peer

    @property
    def feed(self) -> Feed:
        return self.replicator.feed


@dataclass(frozen=True, slots=True)
class Want:
    """Ask ``peer`` for entries ``[start, end)``."""

    peer: PeerFeed
    start: int
    end: int


@dataclass(frozen=True, slots=True, eq=False)
class Outstanding:
    """A request made: its id on its connection, what it asked, the peer's claim then, and
    whether it asked for a chained proof."""

    id: int
    peer: PeerFeed
    start: int
    end: int
    claim: int
    chained: bool = False


@dataclass
class _Link:
    next_id: int = 0
    awaiting: dict[int, Outstanding] = field(default_factory=dict)


class Ledger:
    """Every request in flight, node-wide: per connection (awaiting an answer) and per feed
    (the range is taken until the answer is stored or given up)."""

    def __init__(self) -> None:
        self._links: dict[Hashable, _Link] = {}
        self._inflight: dict[bytes, RangeSet] = {}
        self._live: set[Outstanding] = set()  # issued, range not released yet

    def issue(self, want: Want) -> Outstanding:
        link = self._links.setdefault(want.peer.link, _Link())
        link.next_id += 1
        o = Outstanding(link.next_id, want.peer, want.start, want.end, want.peer.remote_length, want.peer.chained)
        link.awaiting[o.id] = o
        self._inflight.setdefault(want.peer.feed.key, RangeSet()).add(o.start, o.end)
        self._live.add(o)
        return o

    def awaiting(self, link: Hashable) -> int:
        """Requests on connection ``link`` not answered yet."""
        entry = self._links.get(link)
        return len(entry.awaiting) if entry is not None else 0

    def find(self, link: Hashable, request_id: int) -> Outstanding | None:
        entry = self._links.get(link)
        return entry.awaiting.get(request_id) if entry is not None else None

    def answered(self, o: Outstanding) -> None:
        """An answer for ``o`` arrived: the connection's slot is free; its range stays taken."""
        entry = self._links.get(o.peer.link)
        if entry is not None:
            entry.awaiting.pop(o.id, None)

    def release(self, o: Outstanding) -> bool:
        """The range of ``o`` may be asked for again; False if it was released already."""
        if o not in self._live:
            return False
        self._live.discard(o)
        self.answered(o)
        rs = self._inflight.get(o.peer.feed.key)
        if rs is not None:
            rs.remove(o.start, o.end)
        return True

    def inflight(self, feed_key: bytes) -> RangeSet:
        rs = self._inflight.get(feed_key)
        if rs is None:
            rs = self._inflight[feed_key] = RangeSet()
        return rs

    def drop(self, peer: PeerFeed) -> None:
        """``peer`` went away: release every request made to it."""
        for o in [o for o in self._live if o.peer is peer]:
            self.release(o)

    def forget(self, link: Hashable) -> None:
        self._links.pop(link, None)


class FeedReplicator:
    def __init__(self, feed: Feed, ledger: Ledger, wake: Callable[[FeedReplicator], None] | None = None) -> None:
        self.feed = feed
        self.ledger = ledger
        self.peers: list[PeerFeed] = []
        self.wanted: RangeSet | None = None  # None: everything any peer has
        self._paused = False
        self.entries_received = 0
        self._bytes_received = 0
        self.bytes_served = 0  # bytes of entries sent to peers (``NodePeer._serve``)
        self._rotation = 0
        self._wake = wake  # asks the shell to schedule again (after a command from above)

    @property
    def inflight(self) -> RangeSet:
        return self.ledger.inflight(self.feed.key)

    @property
    def paused(self) -> bool:
        """E.g. a backup peer over its quota: request nothing more."""
        return self._paused

    @paused.setter
    def paused(self, value: bool) -> None:
        was, self._paused = self._paused, value
        if was and not value and self._wake is not None:
            self._wake(self)

    # -- peers ------------------------------------------------------------------------------

    def add_peer(self, peer: PeerFeed) -> None:
        self.peers.append(peer)

    def remove_peer(self, peer: PeerFeed) -> None:
        if peer in self.peers:
            self.peers.remove(peer)
        self.ledger.drop(peer)

    # -- what to download -------------------------------------------------------------------

    def want(self, start: int, end: int) -> None:
        """Download only what is asked for (sparse): add ``[start, end)`` to the wanted set."""
        if self.wanted is None:
            self.wanted = RangeSet()
        self.wanted.add(start, end)
        if self._wake is not None:
            self._wake(self)

    def want_all(self) -> None:
        self.wanted = None
        if self._wake is not None:
            self._wake(self)

    @property
    def bytes_received(self) -> int:
        """Bytes of verified entries downloaded for this feed since the daemon started."""
        return self._bytes_received

    @property
    def verified_length(self) -> int:
        """The longest signed length checked here: what the writer has provably signed."""
        return max(self.feed.length, self.feed.known_length)

    def missing_from(self, peer: PeerFeed) -> int:
        """How many entries ``peer`` has that we lack (and want), counted only up to
        ``verified_length``: a claim is not a proof."""
        limit = self.verified_length
        return sum(min(e, limit) - s for s, e in self._gaps(peer) if s < limit)

    def unconfirmed(self, peer: PeerFeed) -> bool:
        """Whether ``peer`` claims entries we want beyond ``verified_length`` (until a request
        to it proves or withdraws the claim)."""
        if self.feed.writable:
            return False  # nobody holds more of our own feed than we signed
        limit = self.verified_length
        return any(e > limit for _, e in self._gaps(peer))

    def _gaps(self, peer: PeerFeed) -> Iterator[tuple[int, int]]:
        cleared = self.feed.cleared
        for start, end in peer.remote_have:
            for ms, me in self.feed.have.missing(start, end):
                if self.wanted is not None:
                    yield from self.wanted.intersection(ms, me)  # asked for: even if cleared
                elif cleared:
                    yield from cleared.missing(ms, me)  # cleared here on purpose: not again
                else:
                    yield ms, me

    def _next_range(self, peer: PeerFeed, taken: RangeSet) -> tuple[int, int] | None:
        for start, end in self._gaps(peer):
            for gs, ge in taken.missing(start, end):
                return gs, min(ge, gs + self._batch())
        return None

    def _batch(self) -> int:
        if self.entries_received == 0:
            return FIRST_REQUEST_ENTRIES
        avg = max(self._bytes_received // self.entries_received, 1)
        return max(1, min(MAX_REQUEST_ENTRIES, REQUEST_BYTES // avg))

    # -- scheduling -------------------------------------------------------------------------

    def schedule(self, budget: Budget) -> list[Want]:
        """The requests to make now: for every peer with room (``budget(pf)``), ranges nobody
        is fetching yet. Peers are visited in rotation so that none is always asked first."""
        if (self.feed.writable and self.wanted is None) or not self.peers or self._paused:
            return []  # a writer asks only for its own entries it wants back (storage.healing)
        wants: list[Want] = []
        taken = base = self.inflight
        n = len(self.peers)
        self._rotation = (self._rotation + 1) % n
        for k in range(n):
            peer = self.peers[(self._rotation + k) % n]
            room = budget(peer)
            while room > 0:
                r = self._next_range(peer, taken)
                if r is None:
                    break
                if taken is base:
                    taken = taken.copy()  # the ledger records each Want when it is requested
                taken.add(*r)
                wants.append(Want(peer, *r))
                room -= 1
        return wants

    def on_response(self, o: Outstanding, received: int, nbytes: int) -> None:
        """A request was answered with ``received`` entries (``nbytes`` bytes): a prefix of
        the range when the rest did not fit one message. Whatever was not received is free to be
        requested again."""
        self.entries_received += received
        self._bytes_received += nbytes
        self.ledger.release(o)

    def on_refused(self, o: Outstanding) -> None:
        """The peer answered NoData: it does not (or no longer) serve that range."""
        peer = o.peer
        if o.start >= self.verified_length:
            # Beyond what anyone has proven: the claim from here on is withdrawn.
            peer.remote_have.remove(o.start, END)
            peer.remote_length = min(peer.remote_length, o.start)
        else:
            peer.remote_have.remove(o.start, o.end)
        self.ledger.release(o)

    # -- local changes ----------------------------------------------------------------------

    def on_local_change(self, event: FeedEvent) -> list[PeerFeed]:
        """We now hold ``[event.start, event.end)``: the peers to tell (then schedule again)."""
        return list(self.peers)
