"""The node-wide half of the replication shell: one replicator per feed, one request ledger.

Theory of operation
-------------------
A feed is replicated with every peer that has it through one :class:`FeedReplicator` (pure),
and every request to any peer is recorded in one :class:`Ledger`. :class:`Replicators` owns
both, listens to each feed's local changes (``on_local_change``: the channels to announce to,
then a schedule; a clear is announced as a full ``Have``, which replaces the peer's view), runs
a replicator's ``schedule`` with each peer's budget (``Mux.budget``), sending every returned
Want through the connection it names (``Mux.request`` records it in the ledger, the peer's
writer sends it). Connections register with ``attach`` and leave with ``detach``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from storage import Feed, FeedEvent

from . import messages as m
from .channel import Action, Channel
from .mux import Mux
from .replicator import FeedReplicator, Ledger, PeerFeed


class Link(Protocol):
    """What a connection offers the coordinator (:class:`networker.peer.Peer`)."""

    mux: Mux

    def post(self, msg: m.Message) -> None: ...
    def execute(self, actions: list[Action]) -> None: ...


class Replicators:
    """The one :class:`FeedReplicator` per local feed and the one request :class:`Ledger`,
    shared by all peers; runs schedules and routes each Want to its connection."""

    def __init__(self) -> None:
        self._by_key: dict[bytes, FeedReplicator] = {}
        self._unlisten: dict[bytes, Callable[[], None]] = {}
        self.ledger = Ledger()
        self._peers: dict[Mux, Link] = {}

    def get(self, feed: Feed) -> FeedReplicator:
        rep = self._by_key.get(feed.key)
        if rep is None:
            rep = self._by_key[feed.key] = FeedReplicator(feed, self.ledger, self.run)
            self._unlisten[feed.key] = feed.listen(lambda ev, r=rep: self._changed(r, ev))
        return rep

    def find(self, key: bytes) -> FeedReplicator | None:
        return self._by_key.get(key)

    def attach(self, peer: Link) -> None:
        self._peers[peer.mux] = peer

    def detach(self, peer: Link) -> None:
        self._peers.pop(peer.mux, None)

    def close(self) -> None:
        for unlisten in self._unlisten.values():
            unlisten()
        self._unlisten.clear()
        self._by_key.clear()

    def run(self, rep: FeedReplicator) -> None:
        """Make the requests ``rep`` has for its peers now."""
        for want in rep.schedule(self._budget):
            peer = self._peers.get(want.peer.link)  # type: ignore[call-overload]
            if peer is not None:
                peer.post(peer.mux.request(want))

    def _budget(self, pf: PeerFeed) -> int:
        link = pf.link
        return link.budget(pf) if isinstance(link, Mux) else 0

    def _changed(self, rep: FeedReplicator, event: FeedEvent) -> None:
        if event.kind == "want":  # a writer wants its own entries back (storage.healing)
            rep.want(event.start, event.end)
            return
        for pf in rep.on_local_change(event):
            peer = self._peers.get(pf.link)  # type: ignore[call-overload]
            if peer is not None and isinstance(pf.channel, Channel):
                if event.kind == "clear":
                    peer.execute(pf.channel.retract(rep.feed))
                else:
                    peer.execute(pf.channel.announce(rep.feed.key, event.start, event.end))
        self.run(rep)
