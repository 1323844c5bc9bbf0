"""networker's public face: everything the product layer (cobox) may use.

cobox imports from ``networker`` only, never from a submodule, so what lies behind these names
(the peer, channel and replicator modules are being rewritten as pure state machines) can move
without touching cobox. The groups of names:

* running a node: :class:`Node` (connections, channels, services), :class:`PeerEvent`,
  :class:`Swarm` and its :class:`Discovery` sources (:class:`DhtSource`, :class:`LanSource`;
  ``DHT`` and ``LanDiscovery`` are loaded on first use: LAN discovery is optional in a build),
  :class:`ConnectionLimits`, :class:`PenaltyPolicy`;
* identities and keys: :class:`DeviceIdentity`, :class:`GroupKeys`, ``owner_tag`` and
  ``FEED_OWNER_CONTEXT`` (feed-owner signatures), ``encode_key``/``decode_key`` (keys as text);
* what a group is to replication: the :class:`Group` protocol (:class:`OpenGroup` the plain one),
  and the live objects a group is handed: :class:`Peer`, :class:`Channel`; :class:`ReceiptMessage`, the
  backup receipt message (until receipts travel in an extension message and leave networker);
* addresses: :class:`Address`, :class:`MultiAddress`, ``parse_address``;
* errors: :class:`NetworkError` (the root) and the subclasses cobox catches.
"""

from __future__ import annotations

from typing import Any

from .address import Address, MultiAddress
from .address import parse as parse_address
from .channel import Channel
from .encoding import decode_key, encode_key
from .errors import (
    AddressError,
    ConnectionLimitError,
    DialError,
    KeyEncodingError,
    NetworkError,
    PeerRefusedError,
    RemoteProtocolError,
)
from .group import Group, OpenGroup
from .identity import DeviceIdentity
from .keys import FEED_OWNER_CONTEXT, GroupKeys, owner_tag
from .limits import ConnectionLimits
from .messages import Receipt as ReceiptMessage
from .node import Node, PeerEvent
from .peer import Peer, ServiceError
from .penalty import PenaltyPolicy
from .sources import DhtSource, LanSource
from .swarm import Discovery, Swarm

__all__ = [
    "DHT",
    "FEED_OWNER_CONTEXT",
    "Address",
    "AddressError",
    "Channel",
    "ConnectionLimitError",
    "ConnectionLimits",
    "DeviceIdentity",
    "DhtSource",
    "DialError",
    "Discovery",
    "Group",
    "GroupKeys",
    "KeyEncodingError",
    "LanDiscovery",
    "LanSource",
    "MultiAddress",
    "NetworkError",
    "Node",
    "OpenGroup",
    "Peer",
    "PeerEvent",
    "PeerRefusedError",
    "PenaltyPolicy",
    "ReceiptMessage",
    "RemoteProtocolError",
    "ServiceError",
    "Swarm",
    "decode_key",
    "encode_key",
    "owner_tag",
    "parse_address",
]


def __getattr__(name: str) -> Any:
    """``DHT`` and ``LanDiscovery`` on first use (LAN discovery raises ImportError where the build
    lacks it, which the daemon reports)."""
    if name == "DHT":
        from .dht import DHT

        return DHT
    if name == "LanDiscovery":
        from .lan import LanDiscovery

        return LanDiscovery
    raise AttributeError(f"module 'networker' has no attribute {name!r}")
