"""One group's channel inside one peer connection: feed exchange, have, request, data.

Theory of operation
-------------------
A channel is created when either side opens it (``Open`` with the group's discovery key and a
capability proof bound to this connection, checked by :mod:`networker.peer`). Once both sides
have opened it, each sends ``Feeds`` (the group's feeds it holds, with membership tags) and a
full ``Have`` for each feed. From then on:

- ``Feeds``: every offered feed the group accepts gets a replica and a :class:`PeerFeed`; a feed
  new to us is announced on every other channel of the group (multifeed gossip). Feed lists are
  paged: ``Feeds`` messages of at most ``MAX_FEEDS`` each, as many as needed, and more may
  follow at any time, so any number of feeds replicates. What one peer can make us hold is
  bounded: at most ``max_feeds`` feeds new to us per channel (further offers are counted in
  ``feeds_over_limit`` and ignored), and a feed the group refuses is counted in
  ``feeds_refused`` (with ``last_refused``), never propagated, never a disconnect.
- ``Have``: updates the peer's ranges; the feed's replicator schedules requests.
- ``Request``: queued for the connection's server task (bounded; overflow is a protocol error).
- ``Data``: must answer one of our outstanding requests, starting where it asked and no longer
  than it asked; entries are verified and stored by ``Feed.put_range``. A bad proof or a fork
  raises (the connection is then closed); entries verified earlier stay.
- ``NoData``: the request is released and the peer is not asked for that range again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from storage import Feed, Proof, RangeSet
from storage.errors import StaleProofError, StorageError, VerificationError

from . import messages as m
from .errors import RemoteProtocolError
from .group import Group
from .replicator import FeedReplicator, PeerFeed

if TYPE_CHECKING:
    from .peer import Peer

log = logging.getLogger(__name__)

MAX_TRACKED_FEEDS = 16384  # default: feeds new to us that one peer may offer per channel
MAX_REMOTE_RANGES = 1 << 16  # separate ranges one peer may claim for one feed


class Channel:
    def __init__(self, peer: Peer, group: Group, local_id: int, *, max_feeds: int = MAX_TRACKED_FEEDS) -> None:
        self.peer = peer
        self.group = group
        self.local_id = local_id
        self.remote_id: int | None = None
        self.opened_locally = False
        self.live = False
        self.feeds_received = False  # the peer's feed list has arrived, every page handled
        self.feeds: dict[bytes, PeerFeed] = {}
        self.max_feeds = max_feeds
        self.feeds_taken = 0       # feeds new to us accepted from this peer's offers
        self.feeds_refused = 0     # offers the group refused (no admission)
        self.feeds_over_limit = 0  # offers ignored because ``max_feeds`` were taken
        self.last_refused = b""    # the key of the last refused feed (for status)
        self._refused: set[bytes] = set()  # refused keys (bounded by max_feeds), not asked again
        self._accepting: bytes | None = None  # the peer's feed being accepted (not offered back to it)
        self._pending_have: dict[bytes, RangeSet] = {}
        self._flush_scheduled = False

    def __repr__(self) -> str:
        return f"<Channel {self.group.discovery_key.hex()[:8]} local={self.local_id} remote={self.remote_id}>"

    # -- life -------------------------------------------------------------------------------

    def start(self) -> None:
        """Both sides have opened: offer our feeds and what we hold of each."""
        self.live = True
        feeds = self.group.feeds()
        offered = [(f.key, self.group.tag(f)) for f in feeds]
        for k in range(0, max(len(offered), 1), m.MAX_FEEDS):  # an empty list is one empty page
            self.peer.post(m.Feeds(self.local_id, tuple(offered[k:k + m.MAX_FEEDS]),
                                   more=k + m.MAX_FEEDS < len(offered)))
        for feed in feeds:
            self._attach(feed)
            self._send_full_have(feed)
        hook = getattr(self.group, "on_channel_live", None)
        if hook is not None:
            hook(self)

    def close(self) -> None:
        if self.live:
            hook = getattr(self.group, "on_channel_closed", None)
            if hook is not None:
                hook(self)
        self.live = False
        for pf in self.feeds.values():
            pf.replicator.remove_peer(pf)
        self.feeds.clear()

    def _replicator(self, feed: Feed) -> FeedReplicator:
        return self.peer.replicators.get(feed)

    def _attach(self, feed: Feed) -> PeerFeed:
        pf = self.feeds.get(feed.key)
        if pf is None:
            rep = self._replicator(feed)
            pf = PeerFeed(self, rep)
            self.feeds[feed.key] = pf
            rep.add_peer(pf)
        return pf

    def offer(self, feed: Feed) -> None:
        """A feed joined the group locally: tell the peer about it."""
        if not self.live or feed.key in self.feeds or feed.key == self._accepting:
            return
        self.peer.post(m.Feeds(self.local_id, ((feed.key, self.group.tag(feed)),)))
        self._attach(feed)
        self._send_full_have(feed)

    def _send_full_have(self, feed: Feed) -> None:
        ranges = list(feed.have)
        for k in range(0, max(len(ranges), 1), m.MAX_RANGES):
            chunk = tuple(ranges[k:k + m.MAX_RANGES])
            self.peer.post(m.Have(self.local_id, feed.key, feed.length, chunk, incremental=k > 0))

    def announce(self, feed: Feed, start: int, end: int) -> None:
        """Tell the peer we now hold ``[start, end)`` (coalesced until the loop is idle)."""
        if not self.live:
            return
        self._pending_have.setdefault(feed.key, RangeSet()).add(start, end)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.peer.call_soon(self._flush_have)

    def _flush_have(self) -> None:
        self._flush_scheduled = False
        pending, self._pending_have = self._pending_have, {}
        if not self.live:
            return
        for key, ranges in pending.items():
            pf = self.feeds.get(key)
            if pf is None:
                continue
            rs = list(ranges)
            for k in range(0, len(rs), m.MAX_RANGES):
                self.peer.post(m.Have(self.local_id, key, pf.feed.length,
                                      tuple(rs[k:k + m.MAX_RANGES]), incremental=True))

    # -- requests we make ---------------------------------------------------------------------

    def can_request(self) -> bool:
        return self.live and self.peer.can_request()

    def starved(self, replicator: FeedReplicator) -> None:
        """``replicator`` has work for this peer but no slot: retry when a slot frees up."""
        if self.live:
            self.peer.wait_for_slot(replicator)

    def request(self, feed: Feed, start: int, end: int) -> int:
        request_id = self.peer.next_request_id()
        self.peer.post(m.Request(self.local_id, request_id, feed.key, start, end, feed.known_length))
        return request_id

    # -- messages -------------------------------------------------------------------------------

    async def on_feeds(self, msg: m.Feeds) -> None:
        """One page of the peer's feed list; the list is complete after a page without ``more``
        has been handled (every feed in it attached, or refused)."""
        for key, tag in msg.feeds:
            if key in self.feeds or key in self._refused:
                continue
            if self.feeds_taken >= self.max_feeds:
                if not self.feeds_over_limit:  # one line per channel, not one per offer
                    log.warning("peer %s offers more than %d new feeds for group %s: ignoring the rest",
                                self.peer, self.max_feeds, self.group.discovery_key.hex()[:8])
                self.feeds_over_limit += 1
                continue
            self._accepting = key
            try:
                feed = await self.group.accept_feed(key, tag)
            finally:
                self._accepting = None
            if feed is None:
                if not self.feeds_refused:
                    log.info("peer %s offered a feed group %s does not admit (%s); counting, not taking",
                             self.peer, self.group.discovery_key.hex()[:8], key.hex()[:16])
                self.feeds_refused += 1
                self.last_refused = key
                if len(self._refused) < self.max_feeds:
                    self._refused.add(key)
                continue
            self.feeds_taken += 1
            if self.live and key not in self.feeds:
                self._attach(feed)
                self._send_full_have(feed)
        if not msg.more:
            self.feeds_received = True

    def on_have(self, msg: m.Have) -> None:
        pf = self.feeds.get(msg.feed)
        if pf is None:
            return  # a feed we did not accept
        pf.have_received = True
        if not msg.incremental:
            pf.remote_have = RangeSet()
        for start, end in msg.ranges:
            if start < msg.length:  # nobody holds entries beyond the tree it holds
                pf.remote_have.add(start, min(end, msg.length))
        if msg.ranges and sum(1 for _ in pf.remote_have) > MAX_REMOTE_RANGES:
            raise RemoteProtocolError(f"a Have of more than {MAX_REMOTE_RANGES} separate ranges")
        pf.remote_length = max(pf.remote_length, msg.length)
        pf.replicator.schedule()

    def missing(self) -> tuple[int, bool]:
        """How many entries the peer has (for this group) that we lack, up to the signed lengths
        verified here, and whether it is settled: it has told us about every feed it offered and
        has no claim beyond what is verified still to be checked."""
        missing = sum(pf.replicator.missing_from(pf) for pf in self.feeds.values())
        settled = self.live and self.feeds_received and all(
            pf.have_received and not pf.replicator.unconfirmed(pf) for pf in self.feeds.values())
        return missing, settled

    def find_feed(self, key: bytes) -> Feed | None:
        pf = self.feeds.get(key)
        return pf.feed if pf is not None else None

    async def on_data(self, msg: m.Data) -> None:
        pf = self.feeds.get(msg.feed)
        req = pf.requests.get(msg.id) if pf is not None else None
        if pf is None or req is None:
            raise RemoteProtocolError("data that was not requested")
        start, end, claim = req
        if msg.start != start or len(msg.entries) > end - start:
            raise RemoteProtocolError("data does not match its request")
        if msg.length < claim:
            raise RemoteProtocolError(f"claimed a signed length of {claim} but proves only {msg.length}")
        self.peer.request_done()
        # Verify and store while the reader goes on to the next message (bounded per peer).
        await self.peer.spawn_store(self._store(pf, msg))

    async def _store(self, pf: PeerFeed, msg: m.Data) -> None:
        proof = Proof(msg.length, msg.signature, msg.nodes, msg.upgrade_from, msg.upgrade)
        try:
            await pf.feed.put_range(msg.start, msg.entries, proof)
        except VerificationError as e:
            raise RemoteProtocolError(f"peer sent data that does not verify: {e}") from None
        except StaleProofError:
            # Made for a length we have moved past (a later answer upgraded us meanwhile), or a
            # shorter tree we cannot connect to ours yet: not misbehaviour. Ask again: the next
            # request carries our length. Only a peer that is itself behind us is not asked for
            # that range again (its proofs would never connect).
            if pf.remote_length >= pf.feed.known_length:
                pf.replicator.on_response(pf, msg.id, 0, 0)
            else:
                pf.replicator.on_refused(pf, msg.id)
            return
        except StorageError:
            pf.replicator.on_response(pf, msg.id, 0, 0)
            raise
        pf.replicator.on_response(pf, msg.id, len(msg.entries), sum(map(len, msg.entries)))

    async def on_receipt(self, msg: m.Receipt) -> None:
        """A custody receipt: the group layer checks and keeps it (raising
        ``RemoteProtocolError`` for a forged one); groups without receipts ignore it."""
        hook = getattr(self.group, "on_receipt", None)
        if hook is not None:
            await hook(self.peer.remote_peer_id, msg)

    def post_receipt(self, receipt: m.Receipt) -> None:
        if self.live:
            self.peer.post(receipt)

    def on_no_data(self, msg: m.NoData) -> None:
        for pf in self.feeds.values():
            if msg.id in pf.requests:
                self.peer.request_done()
                pf.replicator.on_refused(pf, msg.id)
                return
        raise RemoteProtocolError("no-data for a request that was not made")
