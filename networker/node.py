"""A node: this device's identity, its listeners, one connection per peer, and the groups it
replicates.

Theory of operation
-------------------
Every authenticated connection, dialed or accepted, goes through :meth:`Node.add_connection`.
There is at most one connection per peer: when a second one to the same peer appears (both
sides dialed at once, or a reconnect), both ends apply the same rule and so keep the same
connection: between connections opened by different sides, keep the one whose *initiator* has
the smaller peer id; between two opened by the same side, keep the newer one.

Each connection gets a :class:`Peer`, on which the node opens the channel of every group it has
joined; joining a group later opens its channel on every connected peer. Replication state per
feed (:class:`Replicators`) is shared by all peers, so several peers are asked for different
ranges of the same feed in parallel.

Events (``connected``, ``disconnected`` with a reason) go to the callbacks in ``on_event``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from storage import Store

from . import transport
from .address import MultiAddress, parse
from .errors import NetworkError
from .group import Group
from .identity import DeviceIdentity
from .peer import Connection, Peer, Replicators, Service

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PeerEvent:
    kind: str  # "connected" | "disconnected"
    peer_id: bytes
    reason: str = ""


class Node:
    def __init__(self, identity: DeviceIdentity, store: Store, *, max_connections: int = 64) -> None:
        self.identity = identity
        self.max_connections = max_connections
        self.store = store
        self.groups: dict[bytes, Group] = {}
        self.peers: dict[bytes, Peer] = {}
        self.replicators = Replicators()
        self.listeners: list[transport.Listener] = []
        self.services: dict[str, Service] = {}  # named services peers may call (see Peer.call)
        self.on_event: list[Callable[[PeerEvent], None]] = []
        self._watchers: set[asyncio.Task[None]] = set()
        self.bytes_sent_closed = 0  # totals of connections that are gone
        self.bytes_received_closed = 0
        self.protocol_errors = 0
        self._closed = False

    @property
    def peer_id(self) -> bytes:
        return self.identity.peer_id

    # -- groups -----------------------------------------------------------------------------

    def join(self, group: Group) -> None:
        """Replicate ``group`` with every peer, now and later."""
        self.groups[group.discovery_key] = group
        group.on_feed_added(lambda feed, dk=group.discovery_key: self._offer(dk, feed))
        for peer in list(self.peers.values()):
            peer.open(group)

    def leave(self, discovery_key: bytes) -> None:
        if self.groups.pop(discovery_key, None) is None:
            return
        for peer in list(self.peers.values()):
            peer.close_channel(discovery_key, "left the group")

    def _offer(self, discovery_key: bytes, feed: object) -> None:
        if discovery_key not in self.groups:
            return
        for peer in self.peers.values():
            for ch in peer.channels.values():
                if ch.group.discovery_key == discovery_key:
                    ch.offer(feed)  # type: ignore[arg-type]

    # -- connections ------------------------------------------------------------------------

    async def listen(self, address: str, *, handshake_timeout: float = 10.0) -> list[str]:
        """Listen on ``address`` (``tcp:HOST:PORT`` or ``unix:PATH``); return the addresses
        peers can dial, with this node's key."""
        listener = await transport.listen(
            parse(address).alternatives[0], self.identity, self._accepted,
            handshake_timeout=handshake_timeout,
        )
        self.listeners.append(listener)
        return list(listener.addresses)

    async def _accepted(self, conn: transport.SecureConnection) -> None:
        try:
            self.add_connection(conn)
        except NetworkError as e:
            log.info("refused connection from %s: %s", conn.remote_address, e)

    async def connect(self, address: str | MultiAddress, *, timeout: float = 10.0) -> Peer:
        """Dial ``address`` (trying its alternatives in order) and return the peer's
        connection, which may be an existing one if both sides dialed at once."""
        addr = parse(address) if isinstance(address, str) else address
        conn = await transport.dial(addr, self.identity, timeout=timeout)
        return self.add_connection(conn)

    def add_connection(self, conn: Connection) -> Peer:
        pid = conn.remote_peer_id
        if pid == self.peer_id:
            conn.close()
            raise NetworkError("connected to ourselves")
        existing = self.peers.get(pid)
        if existing is None and len(self.peers) >= self.max_connections:
            conn.close()
            raise NetworkError(f"connection limit reached ({self.max_connections})")
        if existing is not None and not existing.closed.is_set():
            if not self._prefer(conn, existing.conn):
                conn.close()
                return existing
            existing.close("replaced by another connection to the same peer")
        peer = Peer(conn, self.replicators, self.groups.get, self.services)
        self.peers[pid] = peer
        peer.start()
        for group in list(self.groups.values()):
            peer.open(group)
        self._emit(PeerEvent("connected", pid))
        task = asyncio.get_running_loop().create_task(self._watch(peer))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)
        return peer

    def _prefer(self, new: Connection, old: Connection) -> bool:
        """Whether ``new`` should replace ``old`` (both to the same peer)."""
        pid = new.remote_peer_id
        new_initiator = self.peer_id if new.is_initiator else pid
        old_initiator = self.peer_id if old.is_initiator else pid
        if new_initiator != old_initiator:
            return new_initiator < old_initiator
        return True

    async def _watch(self, peer: Peer) -> None:
        await peer.wait_closed()
        if self.peers.get(peer.remote_peer_id) is peer:
            del self.peers[peer.remote_peer_id]
        self.bytes_sent_closed += getattr(peer.conn, "bytes_sent", 0)
        self.bytes_received_closed += getattr(peer.conn, "bytes_received", 0)
        if peer.close_reason.startswith("protocol error"):
            self.protocol_errors += 1
        self._emit(PeerEvent("disconnected", peer.remote_peer_id, peer.close_reason))

    def _emit(self, event: PeerEvent) -> None:
        for cb in list(self.on_event):
            try:
                cb(event)
            except Exception:
                log.exception("peer event callback failed")

    def traffic(self) -> tuple[int, int]:
        """Bytes sent and received on every connection so far."""
        sent = self.bytes_sent_closed + sum(getattr(p.conn, "bytes_sent", 0) for p in self.peers.values())
        received = self.bytes_received_closed + sum(
            getattr(p.conn, "bytes_received", 0) for p in self.peers.values())
        return sent, received

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for listener in self.listeners:
            listener.close()
        for peer in list(self.peers.values()):
            peer.close("node shutting down")
        if self._watchers:
            await asyncio.gather(*self._watchers, return_exceptions=True)
        self.replicators.close()
