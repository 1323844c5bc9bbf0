"""The channels of one connection: numbers, open and close, capabilities, the request budget.

Theory of operation
-------------------
Pure, like :mod:`networker.channel`: messages in, actions out; the shell (:mod:`networker.peer`)
does the I/O. Each side numbers its own channels; a message carries the *sender's* number, so
the mux keeps ours (``channels``) and the peer's (``_remote``) apart.

Opening: our ``Open`` carries our channel number, the discovery key and
``caps.capability(replication_key, handshake_hash, we_are_initiator)``. The peer's ``Open`` is
checked against the same handshake hash with *its* role, so a proof copied from another
connection, or made without the replication key, fails (``RemoteProtocolError``: the shell
closes the connection). An ``Open`` for a group we have not joined is remembered (bounded) and
checked if we join later; one for a group we hold is answered with our own ``Open``.

Closing is handled in one place (``_close``), whichever side closes, or when the connection ends.
A channel we close may still get the peer's messages sent before our ``Close`` reached it: they
are dropped until its ``Close`` comes (the last ``MAX_CLOSING`` such channels are remembered),
not taken as misbehaviour.

Budget: at most ``MAX_OUTSTANDING`` of our requests await an answer on this connection (the
count is the node's :class:`Ledger`). A replicator that finds no room is remembered in
``starved``, in arrival order, and scheduled again when an answer frees a slot: with thousands
of feeds, a freed slot costs one schedule, not one per feed.
"""

from __future__ import annotations

from collections.abc import Callable

from storage import Feed

from . import caps
from . import messages as m
from .channel import MAX_TRACKED_FEEDS, Action, Channel, Send
from .errors import NetworkError, RemoteProtocolError
from .group import Group
from .replicator import FeedReplicator, Ledger, PeerFeed, Want

MAX_OUTSTANDING = 16  # our requests in flight to one peer
MAX_PENDING_OPENS = 64
MAX_CLOSING = 64  # channels we closed whose peer may not know yet


class Mux:
    def __init__(self, handshake_hash: bytes, is_initiator: bool, find_group: Callable[[bytes], Group | None],
                 ledger: Ledger, replicator_of: Callable[[Feed], FeedReplicator], *, owner: object = None,
                 max_feeds_per_channel: int = MAX_TRACKED_FEEDS, max_outstanding: int = MAX_OUTSTANDING) -> None:
        self.handshake_hash = handshake_hash
        self.is_initiator = is_initiator
        self._find_group = find_group
        self.ledger = ledger
        self._replicator_of = replicator_of
        self.owner = owner
        self.max_feeds_per_channel = max_feeds_per_channel
        self.max_outstanding = max_outstanding
        self.channels: dict[int, Channel] = {}   # by our channel number
        self._remote: dict[int, Channel] = {}    # by the peer's channel number
        self._by_topic: dict[bytes, Channel] = {}
        self._pending_opens: dict[bytes, m.Open] = {}
        self._closing: dict[int, None] = {}  # the peer's numbers of channels we closed, oldest first
        self._next_channel = 1
        self.starved: dict[FeedReplicator, None] = {}
        self.closed = False

    # -- channels ---------------------------------------------------------------------------

    def open(self, group: Group) -> tuple[Channel, list[Action]]:
        """Open the group's channel (idempotent)."""
        ch = self._by_topic.get(group.discovery_key)
        if ch is not None:
            return ch, []
        if len(self.channels) >= m.MAX_CHANNELS:
            raise NetworkError("too many channels on one connection")
        ch = Channel(group, self._next_channel, self, self.ledger, self._replicator_of, owner=self.owner,
                     max_feeds=self.max_feeds_per_channel)
        self._next_channel += 1
        self.channels[ch.local_id] = ch
        self._by_topic[group.discovery_key] = ch
        proof = caps.capability(group.replication_key, self.handshake_hash, self.is_initiator)
        out: list[Action] = [Send(m.Open(ch.local_id, group.discovery_key, proof))]
        pending = self._pending_opens.pop(group.discovery_key, None)
        if pending is not None:
            out += self.on_open(pending)
        return ch, out

    def close_channel(self, discovery_key: bytes, reason: str = "") -> list[Action]:
        ch = self._by_topic.get(discovery_key)
        if ch is None:
            return []
        if ch.remote_id is not None:
            self._closing[ch.remote_id] = None
            while len(self._closing) > MAX_CLOSING:
                del self._closing[next(iter(self._closing))]
        return [Send(m.Close(ch.local_id, reason)), *self._close(ch)]

    def close(self) -> list[Action]:
        """The connection ends: close every channel (nothing is sent)."""
        self.closed = True
        self.starved.clear()
        out: list[Action] = []
        for ch in list(self.channels.values()):
            out += self._close(ch)
        self.ledger.forget(self)
        return out

    def _close(self, ch: Channel) -> list[Action]:
        self._by_topic.pop(ch.group.discovery_key, None)
        self.channels.pop(ch.local_id, None)
        if ch.remote_id is not None:
            self._remote.pop(ch.remote_id, None)
        return ch.close()

    def on_open(self, msg: m.Open) -> list[Action]:
        group = self._find_group(msg.discovery_key)
        if group is None:
            if len(self._pending_opens) >= MAX_PENDING_OPENS:
                raise RemoteProtocolError("too many channels opened for unknown groups")
            self._pending_opens[msg.discovery_key] = msg
            return []
        if not caps.verify_capability(group.replication_key, self.handshake_hash,
                                      not self.is_initiator, msg.capability):
            raise RemoteProtocolError("channel capability does not verify")
        if msg.channel in self._remote:
            raise RemoteProtocolError("channel number reused")
        out: list[Action] = []
        ch = self._by_topic.get(group.discovery_key)
        if ch is None:
            ch, out = self.open(group)  # a group we hold: answer the open
        if ch.remote_id is not None:
            raise RemoteProtocolError("channel opened twice")
        self._remote[msg.channel] = ch
        return out + ch.remote_open(msg.channel)

    def receive(self, msg: m.Message) -> list[Action]:
        """A channel message of the peer (not ``Call``/``Reply``: those are the connection's)."""
        if isinstance(msg, m.Open):
            return self.on_open(msg)
        ch = self._remote.get(msg.channel)
        if ch is None:
            if msg.channel in self._closing:  # sent before our Close reached the peer
                if isinstance(msg, m.Close):
                    del self._closing[msg.channel]
                return []
            if isinstance(msg, m.Close):
                return []
            raise RemoteProtocolError(f"{type(msg).__name__} on a channel that is not open")
        if isinstance(msg, m.Close):
            return self._close(ch)
        return ch.receive(msg)

    # -- the request budget -----------------------------------------------------------------

    def budget(self, pf: PeerFeed) -> int:
        """How many more requests ``pf``'s replicator may make here now; a replicator that
        gets 0 is queued to run again when a slot frees up."""
        if self.closed:
            return 0
        room = self.max_outstanding - self.ledger.awaiting(self)
        if room <= 0:
            self.starved[pf.replicator] = None
        return room

    def next_starved(self) -> FeedReplicator | None:
        """A replicator waiting for a slot, oldest first, if a slot is free."""
        if not self.starved or self.ledger.awaiting(self) >= self.max_outstanding or self.closed:
            return None
        rep = next(iter(self.starved))
        del self.starved[rep]
        return rep

    def request(self, want: Want) -> m.Request:
        """Record ``want`` in the ledger; the message that asks for it. The replicator that
        takes the last slot is queued too (it may have more to ask)."""
        ch = want.peer.channel
        assert isinstance(ch, Channel)
        o = self.ledger.issue(want)
        if self.ledger.awaiting(self) >= self.max_outstanding:
            self.starved[want.peer.replicator] = None  # it may have more to ask: run it again later
        feed = want.peer.feed
        return m.Request(ch.local_id, o.id, feed.key, want.start, want.end, feed.known_length, o.chained)
