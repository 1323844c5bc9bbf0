"""Downloading one feed from every peer that has it.

Theory of operation
-------------------
There is one :class:`FeedReplicator` per local feed, shared by every channel (peer) that
replicates it, and one :class:`PeerFeed` per (channel, feed): what that peer says it stores
(``Have``) and which of our requests it has not answered yet.

``schedule()`` hands out work: for each peer with request slots free, the first range the peer
has, we lack, nobody is already fetching, and (for a sparse download) we want. Requests are
ranges of up to ``batch`` entries, sized from the entry sizes seen so far so that one response
carries about ``REQUEST_BYTES``. Because in-flight ranges are tracked per feed, not per peer,
several peers holding the same feed are asked for different ranges in parallel, and nothing is
fetched twice. When a response arrives (or a peer goes away, or answers ``NoData``) its range
is released and ``schedule()`` runs again. A replicator that finds a peer's request slots full
queues itself on that peer (``Peer.wait_for_slot``) and runs again, in order, when a slot frees
up: with thousands of feeds, a freed slot costs one ``schedule()``, not one per feed. After a
reconnect the same computation simply starts from what the store already holds.

Local changes (our appends, verified downloads) are announced to every peer as incremental
``Have`` messages, coalesced per event-loop tick.

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

from collections.abc import Iterator
from typing import TYPE_CHECKING

from storage import Feed, FeedEvent, RangeSet

if TYPE_CHECKING:
    from .channel import Channel

REQUEST_BYTES = 1024 * 1024
MAX_REQUEST_ENTRIES = 1024
FIRST_REQUEST_ENTRIES = 64
END = 1 << 63  # beyond every feed position


class PeerFeed:
    """One peer's view of one feed, as far as we know it."""

    def __init__(self, channel: Channel, replicator: FeedReplicator) -> None:
        self.channel = channel
        self.replicator = replicator
        self.remote_length = 0  # the longest signed length the peer claims (not proven)
        self.remote_have = RangeSet()
        self.have_received = False
        self.requests: dict[int, tuple[int, int, int]] = {}  # request id -> (start, end, claim then)

    @property
    def feed(self) -> Feed:
        return self.replicator.feed


class FeedReplicator:
    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.peers: list[PeerFeed] = []
        self.inflight = RangeSet()
        self.wanted: RangeSet | None = None  # None: everything any peer has
        self.paused = False  # e.g. a backup peer over its quota: request nothing more
        self.entries_received = 0
        self._bytes_received = 0
        self._unlisten = feed.listen(self._on_change)
        self._rotation = 0

    def close(self) -> None:
        self._unlisten()

    # -- peers ------------------------------------------------------------------------------

    def add_peer(self, peer: PeerFeed) -> None:
        self.peers.append(peer)

    def remove_peer(self, peer: PeerFeed) -> None:
        if peer in self.peers:
            self.peers.remove(peer)
        for start, end, _ in peer.requests.values():
            self.inflight.remove(start, end)
        peer.requests.clear()
        self.schedule()

    # -- what to download -------------------------------------------------------------------

    def want(self, start: int, end: int) -> None:
        """Download only what is asked for (sparse): add ``[start, end)`` to the wanted set."""
        if self.wanted is None:
            self.wanted = RangeSet()
        self.wanted.add(start, end)
        self.schedule()

    def want_all(self) -> None:
        self.wanted = None
        self.schedule()

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
        for start, end in peer.remote_have:
            for ms, me in self.feed.have.missing(start, end):
                if self.wanted is None:
                    yield ms, me
                else:
                    yield from self.wanted.intersection(ms, me)

    def _next_range(self, peer: PeerFeed) -> tuple[int, int] | None:
        for start, end in self._gaps(peer):
            for gs, ge in self.inflight.missing(start, end):
                return gs, min(ge, gs + self._batch())
        return None

    def _batch(self) -> int:
        if self.entries_received == 0:
            return FIRST_REQUEST_ENTRIES
        avg = max(self._bytes_received // self.entries_received, 1)
        return max(1, min(MAX_REQUEST_ENTRIES, REQUEST_BYTES // avg))

    # -- scheduling -------------------------------------------------------------------------

    def schedule(self) -> None:
        """Send requests to every peer with free slots for ranges nobody is fetching yet."""
        if self.feed.writable or not self.peers or self.paused:
            return
        n = len(self.peers)
        self._rotation = (self._rotation + 1) % n
        for k in range(n):
            peer = self.peers[(self._rotation + k) % n]
            while True:
                if not peer.channel.can_request():
                    peer.channel.starved(self)  # maybe nothing to ask: then the retry is cheap
                    break
                r = self._next_range(peer)
                if r is None:
                    break
                self.inflight.add(*r)
                peer.requests[peer.channel.request(self.feed, *r)] = (*r, peer.remote_length)

    def on_response(self, peer: PeerFeed, request_id: int, received: int, nbytes: int) -> None:
        """A request was answered with ``received`` entries (``nbytes`` bytes): a prefix of
        the range when the rest did not fit one message. Whatever was not received is free to be
        requested again."""
        self.entries_received += received
        self._bytes_received += nbytes
        req = peer.requests.pop(request_id, None)
        if req is None:
            return  # the peer went away meanwhile; its requests were released then
        self.inflight.remove(req[0], req[1])
        self.schedule()

    def on_refused(self, peer: PeerFeed, request_id: int) -> None:
        """The peer answered NoData: it does not (or no longer) serve that range."""
        if request_id in peer.requests:
            start, end, _ = peer.requests[request_id]
            if start >= self.verified_length:
                # Beyond what anyone has proven: the claim from here on is withdrawn.
                peer.remote_have.remove(start, END)
                peer.remote_length = min(peer.remote_length, start)
            else:
                peer.remote_have.remove(start, end)
        self.on_response(peer, request_id, 0, 0)

    # -- local changes ----------------------------------------------------------------------

    def _on_change(self, event: FeedEvent) -> None:
        for peer in self.peers:
            peer.channel.announce(self.feed, event.start, event.end)
        self.schedule()
