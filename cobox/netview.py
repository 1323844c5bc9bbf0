"""Every place cobox reads or steers networker's live objects (peers, channels, replicators).

networker's peer, channel and replicator modules are being rewritten as pure state machines; what
cobox needs of them is reached here and nowhere else, so that switch changes one module. Each
function is small and says which internal it touches:

* ``peer.channels``, ``channel.live``/``group``/``remote_id``: :func:`live_channels`,
  :func:`shares_group`, :func:`carries_group`, :func:`peer_groups`;
* ``channel.missing()``: :func:`group_progress`;
* ``channel.feeds[key].remote_have`` (what a peer says it holds): :func:`remote_holdings`;
* ``peer.conn`` (address, initiator, byte counts): :func:`peer_info`;
* ``node.replicators`` (entry and byte counters): :func:`entries_received`, :func:`bytes_received`;
* ``peer.set_paused``: :func:`pause_feeds`;
* ``peer.send_extension``, ``channel.peer``: :func:`send_extension`, :func:`channel_peer`,
  :func:`channel_peer_id`; ``peer.close_channel``: :func:`close_channel`.
* ``peer.conn`` (handshake hash), ``node.peers``, ``peer.close``: :func:`session`, :func:`find_peer`,
  :func:`disconnect` (backup as a service, :mod:`cobox.hosting`).

Views come back as frozen dataclasses (:class:`PeerInfo`, :class:`Progress`), which the pure
:mod:`cobox.status` turns into documents.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PeerInfo:
    peer_id: bytes
    address: str
    initiator: bool
    groups: tuple[str, ...]
    bytes_sent: int
    bytes_received: int
    kind: str = ""  # direct LAN / direct internet / hole-punched / relayed via X (networker.relay)


@dataclass(frozen=True)
class Progress:
    """How far the live channels of one group are: entries the peers have that we lack, and
    whether every channel has exchanged its feed lists (``settled``)."""

    peers: int
    missing: int
    settled: bool


def live_channels(node: Any, group: Any = None) -> list[tuple[Any, Any]]:
    """``(peer, channel)`` for every live channel (of ``group`` only, if given)."""
    out = []
    for peer in list(node.peers.values()):
        for ch in list(peer.channels.values()):
            if ch.live and (group is None or ch.group is group):
                out.append((peer, ch))
    return out


def carries_group(peer: Any, group: Any) -> bool:
    """Whether ``peer`` has a live channel for ``group`` with us."""
    return any(ch.live and ch.group is group for ch in list(peer.channels.values()))


def shares_group(peer: Any) -> bool:
    """Whether ``peer`` has a channel open with us whose capability it proved (it holds that
    group's replication key)."""
    return any(ch.remote_id is not None for ch in list(peer.channels.values()))


def peer_groups(peer: Any) -> tuple[str, ...]:
    return tuple(ch.group.name for ch in list(peer.channels.values()) if ch.live and hasattr(ch.group, "name"))


def group_progress(node: Any, group: Any) -> Progress:
    missing = 0
    settled = True
    channels = live_channels(node, group)
    for _peer, ch in channels:
        m, s = ch.missing()
        missing += m
        settled = settled and s
    return Progress(len(channels), missing, settled)


def remote_holdings(node: Any, group: Any) -> dict[bytes, dict[bytes, int]]:
    """Per peer with a live channel of ``group``: feed key -> how many entries from the start it
    says it holds (its ``Have`` messages; a claim, not proven)."""
    out: dict[bytes, dict[bytes, int]] = {}
    for peer, ch in live_channels(node, group):
        out[bytes(peer.remote_peer_id)] = {bytes(key): pf.remote_have.contiguous_from(0)
                                           for key, pf in list(ch.feeds.items())}
    return out


def peer_info(peer: Any) -> PeerInfo:
    conn = peer.conn
    return PeerInfo(bytes(peer.remote_peer_id), getattr(conn, "remote_address", ""), bool(conn.is_initiator),
                    peer_groups(peer), getattr(conn, "bytes_sent", 0), getattr(conn, "bytes_received", 0),
                    getattr(peer, "kind", ""))


def peers(node: Any) -> list[PeerInfo]:
    return [peer_info(p) for p in list(node.peers.values())]


def entries_received(node: Any) -> int:
    """Entries received and verified from peers, over every feed's replicator."""
    return sum(rep.entries_received for rep in node.replicators._by_key.values())


def bytes_received(node: Any, feed_keys: Iterable[bytes]) -> int:
    """Bytes of verified entries of these feeds downloaded from peers since the daemon started."""
    return _feed_total(node, feed_keys, "bytes_received")


def bytes_served(node: Any, feed_keys: Iterable[bytes]) -> int:
    """Bytes of entries of these feeds sent to peers since the daemon started."""
    return _feed_total(node, feed_keys, "bytes_served")


def _feed_total(node: Any, feed_keys: Iterable[bytes], counter: str) -> int:
    reps = (node.replicators.find(key) for key in feed_keys)
    return sum(getattr(rep, counter) for rep in reps if rep is not None)


def pause_feeds(channel: Any, paused: bool) -> None:
    """Stop (or resume) requesting the feeds of ``channel`` (a backup peer over its quota)."""
    channel.peer.set_paused(channel, paused)


def send_extension(channel: Any, name: str, body: bytes) -> None:
    """Send a product message (an ``Extension``, e.g. a backup receipt) on ``channel``."""
    channel.peer.send_extension(channel, name, body)


def channel_peer(channel: Any) -> Any:
    """The peer at the other end of ``channel``."""
    return channel.peer


def session(peer: Any) -> tuple[bytes, bool]:
    """The connection's Noise handshake hash and whether this side dialed it (``peer.conn``):
    what a proof bound to this one connection is made over."""
    return bytes(peer.conn.handshake_hash), bool(peer.conn.is_initiator)


def find_peer(node: Any, peer_id: bytes) -> Any | None:
    """The open connection to ``peer_id``, if there is one (``node.peers``)."""
    peer = node.peers.get(peer_id)
    return peer if peer is not None and not peer.closed.is_set() else None


def disconnect(peer: Any, reason: str) -> None:
    """Close the connection to a peer that broke a protocol, once the current call returns
    (``peer.close``)."""
    peer.loop.call_soon(peer.close, reason)


def channel_peer_id(channel: Any) -> bytes:
    """The device id of the peer at the other end of ``channel``."""
    return bytes(channel.peer.remote_peer_id)


def close_channel(channel: Any, reason: str) -> None:
    """Close ``channel`` (the connection stays: other groups may share it)."""
    channel.peer.close_channel(channel.group.discovery_key, reason)


def open_channel(node: Any, peer_id: bytes, group: Any) -> None:
    """Open ``group``'s channel with ``peer_id`` if it is connected and the group is joined and
    not paused (idempotent: an open channel stays)."""
    peer = find_peer(node, peer_id)
    if peer is not None and node.group_for(group.discovery_key) is group:
        peer.open(group)
