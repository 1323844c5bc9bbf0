"""A node: this device's identity, its listeners, one connection per peer, and the groups it
replicates.

Theory of operation
-------------------
Every authenticated connection, dialed or accepted, goes through :meth:`Node.add_connection`.
There is at most one connection per peer: when a second one to the same peer appears (both
sides dialed at once, or a reconnect), both ends apply the same rule and so keep the same
connection: a direct connection beats a relayed one (:mod:`networker.relay`; the upgrade after
a hole punch); otherwise, between connections opened by different sides, keep the one whose
*initiator* has the smaller peer id; between two opened by the same side, keep the newer one.
Each peer's connection kind (direct LAN / internet, hole-punched, relayed via X) is
:attr:`NodePeer.kind`.

Each connection gets a :class:`Peer`, on which the node opens the channel of every group it has
joined; joining a group later opens its channel on every connected peer. Replication state per
feed (:class:`Replicators`) is shared by all peers, so several peers are asked for different
ranges of the same feed in parallel.

Strangers at the peer port (:mod:`networker.limits`, :mod:`networker.penalty`): every new
connection is a stranger until one of its channels is open on both sides. Admission follows
:func:`networker.limits.admit` (a reserve of slots for group peers, a per-IP cap on strangers,
the oldest stranger evicted for a newcomer); a connection without a live channel or a service
call for ``idle_timeout`` seconds is closed. A connection closed for a protocol error is an
offence of its peer id and of its IP; a handshake of garbage (seen by the listener) is one of
its IP. A remote that keeps offending is refused for a while (:class:`PenaltyBox`): a refused IP
before the handshake, a refused peer id right after it, and we do not dial a refused peer id.

Pauses (the user's): a paused peer id is neither dialed nor accepted (its connection is closed
when it is paused); a paused group keeps its place in :attr:`Node.groups` but its channels are
closed, not opened on new connections, and a remote's ``Open`` for it waits as one for a group we
do not have until it is resumed.

Bandwidth (:mod:`networker.ratelimit`): every connection gets a lane of :attr:`Node.rates` for
its peer id, on the LAN when :func:`networker.relay.connection_kind` says ``direct LAN``.

Events (``connected``, ``disconnected`` with a reason) go to the callbacks in ``on_event``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

from storage import Store

from . import relay, transport
from .address import MultiAddress, parse
from .errors import ConnectionLimitError, NetworkError, PeerPausedError, PeerRefusedError
from .group import Group
from .identity import DeviceIdentity
from .limits import ConnectionLimits, LogThrottle, Slot, Usage, admit, ip_key
from .peer import Connection, Peer, Replicators, Service
from .penalty import PenaltyBox, PenaltyPolicy
from .ratelimit import RateLimiter

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PeerEvent:
    kind: str  # "connected" | "disconnected"
    peer_id: bytes
    reason: str = ""


def connection_ip(conn: object) -> str | None:
    """The key the per-IP limits and penalties count a connection under: its IP (its /64 for
    IPv6), or, for a relayed connection (no IP of its own), the relay it came through, so that
    strangers arriving through a relay are held to the same per-IP caps and refusals."""
    via = getattr(conn, "relay_via", b"")
    if via:
        return "relay:" + bytes(via).hex()
    return ip_key(getattr(conn, "remote_host", None))


class NodePeer(Peer):
    """A :class:`Peer` with what the node's idle rule needs: where it is, since when, and its
    service calls in flight (ours through :meth:`call`, the remote's through the node's
    service table)."""

    def __init__(self, conn: Connection, node: Node, ip: str | None) -> None:
        super().__init__(conn, node.replicators, node.group_for, node.services)
        self.ip = ip
        self.since = self.loop.time()
        self.usage = Usage(self.since)
        self.idle_timer: asyncio.TimerHandle | None = None

    @property
    def kind(self) -> str:
        """How this connection reaches the peer (:func:`networker.relay.connection_kind`)."""
        return relay.connection_kind(self.conn)

    def shares_group(self) -> bool:
        return any(ch.live for ch in self.channels.values())

    async def call(self, service: str, body: bytes, *, timeout: float = 30.0) -> bytes:
        self.usage.call_started()
        try:
            return await super().call(service, body, timeout=timeout)
        finally:
            self.usage.call_ended(self.loop.time())


class _Services(dict[str, Service]):
    """The node's service table; each handler registered is wrapped so that a call being served
    counts as use of the connection (the idle rule)."""

    def __setitem__(self, name: str, handler: Service) -> None:
        async def served(peer: Peer, body: bytes) -> bytes:
            if not isinstance(peer, NodePeer):
                return await handler(peer, body)
            peer.usage.call_started()
            try:
                return await handler(peer, body)
            finally:
                peer.usage.call_ended(peer.loop.time())

        super().__setitem__(name, served)

    def update(self, *args: object, **kw: Service) -> None:  # type: ignore[override]
        for name, handler in dict(*args, **kw).items():  # type: ignore[call-overload]
            self[name] = handler


class Node:
    def __init__(self, identity: DeviceIdentity, store: Store, *, max_connections: int | None = None,
                 limits: ConnectionLimits | None = None, penalties: PenaltyPolicy | None = None) -> None:
        """``limits``: connection slots, pending handshakes, idle time (``max_connections``, if
        given, overrides its field); ``penalties``: how long misbehaving remotes are refused."""
        limits = limits or ConnectionLimits()
        if max_connections is not None:
            limits = dataclasses.replace(limits, max_connections=max_connections)
        self.limits = limits
        self.identity = identity
        self.store = store
        self.groups: dict[bytes, Group] = {}
        self.peers: dict[bytes, NodePeer] = {}
        self.replicators = Replicators()
        self.listeners: list[transport.Listener] = []
        self.services: dict[str, Service] = _Services()  # named services peers may call (see Peer.call)
        self.on_event: list[Callable[[PeerEvent], None]] = []
        self._watchers: set[asyncio.Task[None]] = set()
        self.bytes_sent_closed = 0  # totals of connections that are gone
        self.bytes_received_closed = 0
        self.protocol_errors = 0
        self._loop = asyncio.get_running_loop()
        self.id_penalties: PenaltyBox[bytes] = PenaltyBox(penalties, clock=self._loop.time)
        self.ip_penalties: PenaltyBox[str] = PenaltyBox(penalties, clock=self._loop.time)
        self.throttle = LogThrottle(log, clock=self._loop.time)
        self.rates = RateLimiter(now=self._loop.time())
        self.paused_peers: set[bytes] = set()
        self.paused_groups: set[bytes] = set()
        self._held: dict[bytes, float] = {}  # peer id -> until when its live connection is kept (keep_existing)
        self._closed = False

    @property
    def max_connections(self) -> int:
        return self.limits.max_connections

    @property
    def peer_id(self) -> bytes:
        return self.identity.peer_id

    # -- groups -----------------------------------------------------------------------------

    def join(self, group: Group) -> None:
        """Replicate ``group`` with every peer, now and later."""
        self.groups[group.discovery_key] = group
        group.on_feed_added(lambda feed, dk=group.discovery_key: self._offer(dk, feed))
        if group.discovery_key not in self.paused_groups:
            for peer in list(self.peers.values()):
                peer.open(group)

    def group_for(self, discovery_key: bytes) -> Group | None:
        """The joined group a remote's channel may open (not a paused one)."""
        return None if discovery_key in self.paused_groups else self.groups.get(discovery_key)

    def pause_group(self, discovery_key: bytes) -> None:
        """Replicate the group with nobody until :meth:`resume_group` (its channels close)."""
        self.paused_groups.add(discovery_key)
        for peer in list(self.peers.values()):
            peer.close_channel(discovery_key, "paused")

    def resume_group(self, discovery_key: bytes) -> None:
        self.paused_groups.discard(discovery_key)
        group = self.groups.get(discovery_key)
        if group is not None:
            for peer in list(self.peers.values()):
                peer.open(group)

    def pause_peer(self, peer_id: bytes) -> None:
        """No connection with this peer until :meth:`resume_peer` (the current one closes)."""
        self.paused_peers.add(peer_id)
        peer = self.peers.get(peer_id)
        if peer is not None:
            peer.close("paused")

    def resume_peer(self, peer_id: bytes) -> None:
        self.paused_peers.discard(peer_id)

    def leave(self, discovery_key: bytes) -> None:
        if self.groups.pop(discovery_key, None) is None:
            return
        for peer in list(self.peers.values()):
            peer.close_channel(discovery_key, "left the group")

    def _offer(self, discovery_key: bytes, feed: object) -> None:
        if discovery_key not in self.groups or discovery_key in self.paused_groups:
            return
        for peer in self.peers.values():
            for ch in peer.channels.values():
                if ch.group.discovery_key == discovery_key:
                    peer.offer(ch, feed)  # type: ignore[arg-type]

    # -- connections ------------------------------------------------------------------------

    async def listen(self, address: str, *, handshake_timeout: float = 10.0) -> list[str]:
        """Listen on ``address`` (``tcp:HOST:PORT`` or ``unix:PATH``); return the addresses
        peers can dial, with this node's key."""
        listener = await transport.listen(
            parse(address).alternatives[0], self.identity, self._accepted,
            handshake_timeout=handshake_timeout, max_pending=self.limits.max_pending,
            max_pending_per_ip=self.limits.max_pending_per_ip,
            refuse=self.ip_penalties.refused_for, on_bad_handshake=self._bad_handshake,
        )
        self.listeners.append(listener)
        return list(listener.addresses)

    def _bad_handshake(self, ip: str) -> None:
        refused = self.ip_penalties.offend(ip)
        if refused:
            log.info("refusing %s for %.0fs: repeated handshakes of garbage", ip, refused)

    async def take_connection(self, conn: transport.SecureConnection) -> None:
        """An authenticated connection from elsewhere (a relay circuit): like an accepted one."""
        await self._accepted(conn)

    async def _accepted(self, conn: transport.SecureConnection) -> None:
        try:
            self.add_connection(conn, ip=connection_ip(conn))
        except NetworkError as e:
            log.debug("refused connection from %s: %s", conn.remote_address, e)
            self.throttle.note(type(e).__name__, logging.INFO, "refused a connection from %s: %s",
                               conn.remote_address, e)

    async def connect(self, address: str | MultiAddress, *, timeout: float = 10.0) -> Peer:
        """Dial ``address`` (trying its direct alternatives in order, then its relayed ones) and
        return the peer's connection, which may be an existing one if both sides dialed at once.
        A peer that is refused for a while (it broke the protocol repeatedly) is not dialed."""
        addr = parse(address) if isinstance(address, str) else address
        for alt in addr.alternatives:
            if alt.peer_key is not None:
                self._check_paused(alt.peer_key)
                self._check_refused(alt.peer_key, None)
        port = next((p for p in (li.tcp_port for li in self.listeners) if p), None)
        conn = await relay.dial(addr, self.identity, timeout=timeout, bind_port=port)  # direct ones from our port
        return self.add_connection(conn, ip=ip_key(conn.remote_host))

    def _check_paused(self, peer_id: bytes) -> None:
        if peer_id in self.paused_peers:
            raise PeerPausedError("that device is paused on this device")

    def _check_refused(self, peer_id: bytes, ip: str | None) -> None:
        for what, refused in (("peer", self.id_penalties.refused_for(peer_id)),
                              (ip, self.ip_penalties.refused_for(ip) if ip is not None else 0.0)):
            if refused > 0:
                raise PeerRefusedError(f"{what} broke the protocol repeatedly; refused for {refused:.0f}s more",
                                       refused)

    def room_for_peer(self) -> bool:
        """Whether a new connection (from an IP with no stranger connection yet) would get a
        slot now; the swarm dials only then."""
        return admit(self.limits, self._slots(), None).admitted

    def _slots(self) -> list[Slot]:
        return [Slot(pid, p.ip, p.since, p.shares_group()) for pid, p in self.peers.items()
                if not p.closed.is_set()]

    def add_connection(self, conn: Connection, *, ip: str | None = None) -> Peer:
        """Take an authenticated connection from a peer at IP key ``ip`` (``None``: unknown, a
        unix socket); raise :class:`NetworkError` (closing ``conn``) if it gets no slot."""
        pid = conn.remote_peer_id
        if pid == self.peer_id:
            conn.close()
            raise NetworkError("connected to ourselves")
        try:
            self._check_paused(pid)
            self._check_refused(pid, ip)
        except (PeerPausedError, PeerRefusedError):
            conn.close()
            raise
        existing = self.peers.get(pid)
        if existing is not None and existing.closed.is_set():
            existing = None
        if existing is None:
            decision = admit(self.limits, self._slots(), ip)
            if not decision.admitted:
                conn.close()
                raise ConnectionLimitError(decision.reason)
            for victim_id in decision.evict:
                victim = self.peers.pop(victim_id)
                self.throttle.note("evicted", logging.INFO, "closed a connection to make room: %s",
                                   decision.reason)
                victim.close(f"evicted: {decision.reason}")
        elif not self._prefer(conn, existing.conn) or self._holding(pid):
            conn.close()
            return existing
        else:
            existing.close("replaced by another connection to the same peer")
        if isinstance(conn, transport.SecureConnection):
            conn.lane = self.rates.lane(pid, relay.connection_kind(conn) == "direct LAN")
        peer = NodePeer(conn, self, ip)
        self.peers[pid] = peer
        peer.start()
        self._schedule_idle_check(peer, self.limits.idle_timeout)
        for group in list(self.groups.values()):
            if group.discovery_key not in self.paused_groups:
                peer.open(group)
        self._emit(PeerEvent("connected", pid))
        task = asyncio.get_running_loop().create_task(self._watch(peer))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)
        return peer

    def keep_existing(self, peer_id: bytes, seconds: float) -> None:
        """For ``seconds``, a new connection from ``peer_id`` is closed instead of replacing the
        live one: two devices running with one identity would else replace each other's
        connection forever (the caller detects that, see cobox.twins)."""
        self._held[peer_id] = self._loop.time() + seconds

    def _holding(self, peer_id: bytes) -> bool:
        until = self._held.get(peer_id)
        if until is not None and until <= self._loop.time():
            del self._held[peer_id]
            until = None
        return until is not None

    def _prefer(self, new: Connection, old: Connection) -> bool:
        """Whether ``new`` should replace ``old`` (both to the same peer)."""
        new_relayed, old_relayed = bool(getattr(new, "relay_via", b"")), bool(getattr(old, "relay_via", b""))
        if new_relayed != old_relayed:
            return old_relayed  # direct beats relayed: both ends know which is which
        pid = new.remote_peer_id
        new_initiator = self.peer_id if new.is_initiator else pid
        old_initiator = self.peer_id if old.is_initiator else pid
        if new_initiator != old_initiator:
            return new_initiator < old_initiator
        return True

    def _schedule_idle_check(self, peer: NodePeer, delay: float) -> None:
        peer.idle_timer = self._loop.call_later(delay, self._check_idle, peer)

    def _check_idle(self, peer: NodePeer) -> None:
        peer.idle_timer = None
        if peer.closed.is_set() or self._closed:
            return
        timeout = self.limits.idle_timeout
        delay = peer.usage.check(self._loop.time(), peer.shares_group(), timeout)
        if delay is not None:
            self._schedule_idle_check(peer, delay)
            return
        self.throttle.note("idle", logging.INFO, "closed an idle connection (no channel, no call for %gs): %s",
                           timeout, peer.ip or peer)
        if self.peers.get(peer.remote_peer_id) is peer:
            del self.peers[peer.remote_peer_id]
        peer.close(f"idle: no channel open for {timeout:g}s")

    async def _watch(self, peer: NodePeer) -> None:
        await peer.wait_closed()
        if peer.idle_timer is not None:
            peer.idle_timer.cancel()
            peer.idle_timer = None
        if self.peers.get(peer.remote_peer_id) is peer:
            del self.peers[peer.remote_peer_id]
        self.bytes_sent_closed += getattr(peer.conn, "bytes_sent", 0)
        self.bytes_received_closed += getattr(peer.conn, "bytes_received", 0)
        if peer.close_reason.startswith("protocol error"):
            self.protocol_errors += 1
            refused = self.id_penalties.offend(peer.remote_peer_id)
            if peer.ip is not None:
                refused = max(refused, self.ip_penalties.offend(peer.ip))
            if refused:
                log.info("refusing %s (%s) for %.0fs: it broke the protocol repeatedly",
                         peer.remote_peer_id.hex()[:16], peer.ip or "no IP", refused)
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
