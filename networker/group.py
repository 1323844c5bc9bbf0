"""What replication needs to know about a group, injected from above.

The network layer replicates the feeds of a *group* (one namespace in the store) with every
peer that opens a channel for the same discovery key. Which feeds belong to the group, and
whether a feed a peer offers may join it, and what its product messages (extensions) mean, is
the group layer's business (membership tags live in
cobox/); the network layer only asks through the :class:`Group` protocol.

:class:`OpenGroup` is the plain implementation: every feed of the namespace is offered, and
every feed a peer offers on a capability-checked channel is accepted. It is what the network
tests and benchmarks use, and what a group without membership tags amounts to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from storage import Feed, Store
from storage.errors import FeedNotFoundError

from .keys import GroupKeys


class ChannelView(Protocol):
    """What the group sees of a channel (:class:`networker.channel.Channel`)."""

    local_id: int
    peer: object  # the connection (``networker.peer.Peer``): ``send_extension``, ``set_paused``, ``call``

    @property
    def live(self) -> bool: ...


class Group(Protocol):
    discovery_key: bytes
    replication_key: bytes

    def feeds(self) -> list[Feed]:
        """The local feeds to replicate for this group."""
        ...

    def tag(self, feed: Feed) -> bytes:
        """The membership tag offered with ``feed`` (empty if none)."""
        ...

    async def accept_feed(self, key: bytes, tag: bytes) -> Feed | None:
        """The local replica of a feed a peer offers, or ``None`` to refuse it."""
        ...

    def on_feed_added(self, callback: Callable[[Feed], None]) -> Callable[[], None]:
        """Call ``callback`` whenever a feed joins the group locally; returns the unsubscribe."""
        ...

    def on_channel_live(self, channel: ChannelView) -> None:
        """The group's channel with a peer is live (``channel.peer`` is the connection)."""
        ...

    def on_channel_closed(self, channel: ChannelView) -> None:
        """That channel closed."""
        ...

    async def on_extension(self, peer_id: bytes, name: str, body: bytes) -> None:
        """A product message (``messages.Extension``) from ``peer_id`` on the group's channel;
        decode it strictly, raise ``RemoteProtocolError`` to disconnect a peer that sent a bad
        one, ignore names it does not know."""
        ...


class OpenGroup:
    """A group that replicates every feed of its namespace and accepts every offered feed."""

    def __init__(self, store: Store, keys: GroupKeys, namespace: str | None = None) -> None:
        self.store = store
        self.keys = keys
        self.discovery_key = keys.discovery_key
        self.replication_key = keys.replication_key
        self.namespace = namespace if namespace is not None else keys.discovery_key.hex()
        self._callbacks: list[Callable[[Feed], None]] = []

    def feeds(self) -> list[Feed]:
        return self.store.feeds(self.namespace)

    def tag(self, feed: Feed) -> bytes:
        return b""

    async def create_feed(self) -> Feed:
        feed = await self.store.create_feed(self.namespace)
        self._added(feed)
        return feed

    async def accept_feed(self, key: bytes, tag: bytes) -> Feed | None:
        try:
            known = self.store.feed(key).namespace == self.namespace
        except FeedNotFoundError:
            known = False
        feed = await self.store.open_feed(key, self.namespace)
        if feed.namespace != self.namespace:
            return None  # the same feed key in another group: keep groups apart
        if not known:
            self._added(feed)
        return feed

    def on_feed_added(self, callback: Callable[[Feed], None]) -> Callable[[], None]:
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    def on_channel_live(self, channel: ChannelView) -> None:
        pass

    def on_channel_closed(self, channel: ChannelView) -> None:
        pass

    async def on_extension(self, peer_id: bytes, name: str, body: bytes) -> None:
        pass  # no product messages in a plain group

    def _added(self, feed: Feed) -> None:
        for cb in list(self._callbacks):
            cb(feed)
