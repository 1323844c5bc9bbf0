"""One group's channel inside one peer connection, as a pure state machine.

Theory of operation
-------------------
A channel is created when we open it (``Open`` with the group's discovery key and a capability
proof, checked by :mod:`networker.mux`); it goes live when the peer's verified ``Open`` arrives
(``ChannelState`` and ``TRANSITIONS``: an illegal step raises). It never awaits and never calls
the connection: every input returns a list of actions for the shell (:mod:`networker.peer`) to
carry out, and the outcome of an action that needs I/O comes back as another input
(``accepted``, ``stored``). Once live, each side sends ``Feeds`` (the group's feeds it holds,
with membership tags, in pages) and a full ``Have`` for each feed. From then on:

- ``Feeds``: the offered feeds are handed to the group one at a time (``Accept``; the answer
  comes back through ``accepted``): every feed the group accepts gets a :class:`PeerFeed`. The
  list is complete once a page without ``more`` is handled. What one peer can make us hold is
  bounded: at most ``max_feeds`` feeds new to us per channel (further offers are counted in
  ``feeds_over_limit``), and a feed the group refuses is counted in ``feeds_refused`` (with
  ``last_refused``), never propagated, never a disconnect.
- ``Have``: updates the peer's ranges; the feed's replicator is to schedule (``Schedule``). A
  full (not incremental) ``Have`` replaces them: that is how a peer that cleared entries says
  it no longer holds them (``retract``).
- ``Request``: handed to the shell's server (``Serve``).
- ``Data``: must answer one of our outstanding requests (the :class:`Ledger`), starting where
  it asked, no longer than it asked, proving at least the length the peer claimed; it is to be
  verified and stored (``Store``), and ``stored`` gets the outcome. A proof that does not verify
  raises (the connection is then closed); entries verified earlier stay.
- ``NoData``: the request is released and the peer is not asked for that range again.
- ``Extension``: a product message (``Deliver`` to the group), carried, never interpreted.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from storage import Feed, RangeSet

from . import messages as m
from .errors import RemoteProtocolError
from .group import Group
from .replicator import FeedReplicator, Ledger, Outstanding, PeerFeed

log = logging.getLogger(__name__)

MAX_TRACKED_FEEDS = 16384  # default: feeds new to us that one peer may offer per channel
MAX_REMOTE_RANGES = 1 << 16  # separate ranges one peer may claim for one feed


class ChannelState(enum.Enum):
    OPENING = "opening"  # our Open sent, the peer's not yet
    LIVE = "live"
    CLOSED = "closed"


TRANSITIONS: dict[tuple[ChannelState, str], ChannelState] = {
    (ChannelState.OPENING, "remote_open"): ChannelState.LIVE,
    (ChannelState.OPENING, "close"): ChannelState.CLOSED,
    (ChannelState.LIVE, "close"): ChannelState.CLOSED,
    (ChannelState.CLOSED, "close"): ChannelState.CLOSED,
}


class StoreOutcome(enum.Enum):
    STORED = "stored"    # verified and stored
    STALE = "stale"      # a proof for a length we moved past, or not connectable yet
    INVALID = "invalid"  # does not verify: the peer lied
    FAILED = "failed"    # a local storage error


# -- actions ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Send:
    msg: m.Message


@dataclass(frozen=True, slots=True)
class Accept:
    """Ask the group whether to take the offered feed; answer with ``channel.accepted``."""

    channel: Channel
    key: bytes
    tag: bytes


@dataclass(frozen=True, slots=True)
class Store:
    """Verify and store ``data``; answer with ``channel.stored(request, outcome, ...)``."""

    channel: Channel
    request: Outstanding
    data: m.Data


@dataclass(frozen=True, slots=True)
class Serve:
    channel: Channel
    feed: Feed
    request: m.Request


@dataclass(frozen=True, slots=True)
class Schedule:
    replicator: FeedReplicator


@dataclass(frozen=True, slots=True)
class SlotFreed:
    """A request of ours was answered: the connection's budget has room again."""


@dataclass(frozen=True, slots=True)
class FlushLater:
    """Call ``channel.flush()`` once the loop is idle (coalesced ``Have``)."""

    channel: Channel


@dataclass(frozen=True, slots=True)
class Live:
    channel: Channel


@dataclass(frozen=True, slots=True)
class Closed:
    channel: Channel


@dataclass(frozen=True, slots=True)
class Deliver:
    channel: Channel
    name: str
    body: bytes


Action = Send | Accept | Store | Serve | Schedule | SlotFreed | FlushLater | Live | Closed | Deliver


class Channel:
    def __init__(self, group: Group, local_id: int, link: Hashable, ledger: Ledger,
                 replicator_of: Callable[[Feed], FeedReplicator], *, owner: object = None,
                 max_feeds: int = MAX_TRACKED_FEEDS) -> None:
        self.group = group
        self.local_id = local_id
        self.remote_id: int | None = None
        self.link = link
        self.ledger = ledger
        self._replicator_of = replicator_of
        self.peer = owner  # the connection, for the layers above; the channel never calls it
        self.state = ChannelState.OPENING
        self.feeds_received = False  # the peer's feed list has arrived, every page handled
        self.feeds: dict[bytes, PeerFeed] = {}
        self.max_feeds = max_feeds
        self.feeds_taken = 0       # feeds new to us accepted from this peer's offers
        self.feeds_refused = 0     # offers the group refused (no admission)
        self.feeds_over_limit = 0  # offers ignored because ``max_feeds`` were taken
        self.last_refused = b""    # the key of the last refused feed (for status)
        self._refused: set[bytes] = set()  # refused keys (bounded by max_feeds), not asked again
        self._offers: list[tuple[bytes, bytes]] = []  # the current page's offers not yet looked at
        self._page_more = False
        self._accepting: bytes | None = None  # the peer's feed being accepted (not offered back to it)
        self._pending_have: dict[bytes, RangeSet] = {}
        self._flush_scheduled = False

    def __repr__(self) -> str:
        return f"<Channel {self.group.discovery_key.hex()[:8]} local={self.local_id} remote={self.remote_id}>"

    @property
    def live(self) -> bool:
        return self.state is ChannelState.LIVE

    def _step(self, event: str) -> None:
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise RemoteProtocolError(f"channel {event.replace('_', ' ')} while {self.state.value}")
        self.state = new

    # -- life -------------------------------------------------------------------------------

    def remote_open(self, remote_id: int) -> list[Action]:
        """The peer's verified Open: go live, offer our feeds and what we hold of each."""
        self._step("remote_open")
        self.remote_id = remote_id
        feeds = self.group.feeds()
        offered = [(f.key, self.group.tag(f)) for f in feeds]
        out: list[Action] = []
        for k in range(0, max(len(offered), 1), m.MAX_FEEDS):  # an empty list is one empty page
            out.append(Send(m.Feeds(self.local_id, tuple(offered[k:k + m.MAX_FEEDS]),
                                    more=k + m.MAX_FEEDS < len(offered))))
        for feed in feeds:
            self._attach(feed)
            out += self._full_have(feed)
        out.append(Live(self))
        return out

    def close(self) -> list[Action]:
        """Closed by either side or with the connection: release every request made here."""
        was_live = self.live
        self._step("close")
        out: list[Action] = [Closed(self)] if was_live else []
        for pf in self.feeds.values():
            pf.replicator.remove_peer(pf)
            out.append(Schedule(pf.replicator))
        self.feeds.clear()
        self._offers.clear()
        return out

    def _attach(self, feed: Feed) -> PeerFeed:
        pf = self.feeds.get(feed.key)
        if pf is None:
            rep = self._replicator_of(feed)
            pf = PeerFeed(self.link, self, rep)
            self.feeds[feed.key] = pf
            rep.add_peer(pf)
        return pf

    def offer(self, feed: Feed) -> list[Action]:
        """A feed joined the group locally: tell the peer about it."""
        if not self.live or feed.key in self.feeds or feed.key == self._accepting:
            return []
        self._attach(feed)
        return [Send(m.Feeds(self.local_id, ((feed.key, self.group.tag(feed)),))), *self._full_have(feed)]

    def _full_have(self, feed: Feed) -> list[Action]:
        ranges = list(feed.have)
        return [Send(m.Have(self.local_id, feed.key, feed.length, tuple(ranges[k:k + m.MAX_RANGES]),
                            incremental=k > 0))
                for k in range(0, max(len(ranges), 1), m.MAX_RANGES)]

    def retract(self, feed: Feed) -> list[Action]:
        """We no longer hold part of ``feed`` (it was cleared): a full ``Have`` replaces what
        the peer knows of us (incremental ones only ever add)."""
        if not self.live or feed.key not in self.feeds:
            return []
        self._pending_have.pop(feed.key, None)
        return self._full_have(feed)

    def announce(self, feed_key: bytes, start: int, end: int) -> list[Action]:
        """We now hold ``[start, end)`` (coalesced until the loop is idle: ``flush``)."""
        if not self.live:
            return []
        self._pending_have.setdefault(feed_key, RangeSet()).add(start, end)
        if self._flush_scheduled:
            return []
        self._flush_scheduled = True
        return [FlushLater(self)]

    def flush(self) -> list[Action]:
        self._flush_scheduled = False
        pending, self._pending_have = self._pending_have, {}
        if not self.live:
            return []
        out: list[Action] = []
        for key, ranges in pending.items():
            pf = self.feeds.get(key)
            if pf is None:
                continue
            rs = list(ranges)
            for k in range(0, len(rs), m.MAX_RANGES):
                out.append(Send(m.Have(self.local_id, key, pf.feed.length,
                                       tuple(rs[k:k + m.MAX_RANGES]), incremental=True)))
        return out

    def extension(self, name: str, body: bytes) -> list[Action]:
        """A product message for the peer's group layer (dropped unless live)."""
        return [Send(m.Extension(self.local_id, name, body))] if self.live else []

    # -- messages ---------------------------------------------------------------------------

    def receive(self, msg: m.Message) -> list[Action]:
        """One message of the peer on this channel (``Open``/``Close`` are the mux's)."""
        if not self.live:
            raise RemoteProtocolError(f"{type(msg).__name__} before the channel is open")
        if isinstance(msg, m.Data):
            return self.on_data(msg)
        if isinstance(msg, m.Have):
            return self.on_have(msg)
        if isinstance(msg, m.Request):
            return self.on_request(msg)
        if isinstance(msg, m.NoData):
            return self.on_no_data(msg)
        if isinstance(msg, m.Feeds):
            return self.on_feeds(msg)
        if isinstance(msg, m.Extension):
            return [Deliver(self, msg.name, msg.body)]
        raise RemoteProtocolError(f"{type(msg).__name__} on a channel")

    def on_feeds(self, msg: m.Feeds) -> list[Action]:
        """One page of the peer's feed list: its offers go to the group one at a time."""
        if self._offers or self._accepting is not None:
            raise RemoteProtocolError("a Feeds page before the previous one was handled")
        self._offers = list(reversed(msg.feeds))
        self._page_more = msg.more
        return self._next_offer()

    def _next_offer(self) -> list[Action]:
        while self._offers:
            key, tag = self._offers.pop()
            if key in self.feeds or key in self._refused:
                continue
            if self.feeds_taken >= self.max_feeds:
                if not self.feeds_over_limit:  # one line per channel, not one per offer
                    log.warning("peer %s offers more than %d new feeds for group %s: ignoring the rest",
                                self.peer, self.max_feeds, self.group.discovery_key.hex()[:8])
                self.feeds_over_limit += 1
                continue
            self._accepting = key
            return [Accept(self, key, tag)]
        if not self._page_more:
            self.feeds_received = True
        return []

    def accepted(self, key: bytes, feed: Feed | None) -> list[Action]:
        """The group's answer to ``Accept(key)``: the replica, or ``None`` (refused)."""
        self._accepting = None
        out: list[Action] = []
        if feed is None:
            if not self.feeds_refused:
                log.info("peer %s offered a feed group %s does not admit (%s); counting, not taking",
                         self.peer, self.group.discovery_key.hex()[:8], key.hex()[:16])
            self.feeds_refused += 1
            self.last_refused = key
            if len(self._refused) < self.max_feeds:
                self._refused.add(key)
        else:
            self.feeds_taken += 1
            if self.live and key not in self.feeds:
                self._attach(feed)
                out += self._full_have(feed)
        if not self.live:
            return out
        return out + self._next_offer()

    def on_have(self, msg: m.Have) -> list[Action]:
        pf = self.feeds.get(msg.feed)
        if pf is None:
            return []  # a feed we did not accept
        pf.have_received = True
        if not msg.incremental:
            pf.remote_have = RangeSet()
        for start, end in msg.ranges:
            if start < msg.length:  # nobody holds entries beyond the tree it holds
                pf.remote_have.add(start, min(end, msg.length))
        if msg.ranges and sum(1 for _ in pf.remote_have) > MAX_REMOTE_RANGES:
            raise RemoteProtocolError(f"a Have of more than {MAX_REMOTE_RANGES} separate ranges")
        pf.remote_length = max(pf.remote_length, msg.length)
        return [Schedule(pf.replicator)]

    def on_request(self, msg: m.Request) -> list[Action]:
        pf = self.feeds.get(msg.feed)
        if pf is None:
            return [Send(m.NoData(self.local_id, msg.id, "unknown feed"))]
        return [Serve(self, pf.feed, msg)]

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

    def _ours(self, request_id: int) -> Outstanding | None:
        o = self.ledger.find(self.link, request_id)
        return o if o is not None and o.peer.channel is self else None

    def on_data(self, msg: m.Data) -> list[Action]:
        o = self._ours(msg.id)
        if o is None or o.peer.feed.key != msg.feed:
            raise RemoteProtocolError("data that was not requested")
        if msg.start != o.start or len(msg.entries) > o.end - o.start:
            raise RemoteProtocolError("data does not match its request")
        if msg.length < o.claim:
            raise RemoteProtocolError(f"claimed a signed length of {o.claim} but proves only {msg.length}")
        self.ledger.answered(o)
        return [SlotFreed(), Store(self, o, msg)]

    def stored(self, o: Outstanding, outcome: StoreOutcome, received: int = 0, nbytes: int = 0,
               reason: str = "") -> list[Action]:
        """The outcome of ``Store(o)``: release or refuse the range, then schedule again."""
        rep, pf = o.peer.replicator, o.peer
        if outcome is StoreOutcome.INVALID:
            rep.on_response(o, 0, 0)
            raise RemoteProtocolError(f"peer sent data that does not verify: {reason}")
        if outcome is StoreOutcome.STALE:
            pf.chained = False  # its later chained proofs build on this one: ask plainly
        elif outcome is StoreOutcome.STORED and not o.chained:
            pf.chained = True  # we hold what this peer last proved again: chain from here
        if outcome is StoreOutcome.STALE and pf.remote_length < pf.feed.known_length:
            # The peer is itself behind us: its proofs would never connect; do not ask again.
            rep.on_refused(o)
        else:
            # Stored, failed locally, or made for a length we have moved past (a later answer
            # upgraded us meanwhile): whatever was not received may be asked for again, with
            # our new length.
            rep.on_response(o, received, nbytes)
        return [Schedule(rep)]

    def on_no_data(self, msg: m.NoData) -> list[Action]:
        o = self._ours(msg.id)
        if o is None:
            raise RemoteProtocolError("no-data for a request that was not made")
        self.ledger.answered(o)
        o.peer.replicator.on_refused(o)
        return [SlotFreed(), Schedule(o.peer.replicator)]
