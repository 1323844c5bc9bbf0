"""networker's public face: everything the product layer (cobox) may use.

cobox imports from ``networker`` only, never from a submodule, so what lies behind these names
(the peer, channel and replicator modules are being rewritten as pure state machines) can move
without touching cobox. The groups of names:

* running a node: :class:`Node` (connections, channels, services), :class:`PeerEvent`,
  :class:`Swarm` and its :class:`Discovery` sources (:class:`DhtSource`, :class:`LanSource`,
  ``DHT``, ``LanDiscovery``: LAN discovery may be missing from a build, raising ImportError),
  :class:`ConnectionLimits`, :class:`PenaltyPolicy`;
* identities and keys: :class:`DeviceIdentity`, :class:`GroupKeys`, ``owner_tag`` and
  ``FEED_OWNER_CONTEXT`` (feed-owner signatures), ``encode_key``/``decode_key`` (keys as text);
* what a group is to replication: the :class:`Group` protocol (:class:`OpenGroup` the plain one),
  and the live objects a group is handed: :class:`Peer`, :class:`Channel` (product messages,
  such as backup receipts, travel as ``Extension`` bodies that networker does not read);
* bandwidth limits: :class:`RateLimits`, :class:`DeviceLimit` (given to ``Node.rates.configure``);
* addresses: :class:`Address`, :class:`MultiAddress`, ``parse_address``;
* errors: :class:`NetworkError` (the root) and the subclasses cobox catches.

Each name is loaded from its module on first use (PEP 562 ``__getattr__``), so ``from networker
import NetworkError`` in the CLI does not load the node, the DHT or LAN discovery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .address import Address, MultiAddress
    from .address import parse as parse_address
    from .backoff import capped as backoff_delay
    from .channel import Channel
    from .dht import DHT
    from .encoding import decode_key, encode_key
    from .errors import (
        AddressError,
        ConnectionLimitError,
        DialError,
        KeyEncodingError,
        NetworkError,
        PeerKeyMismatchError,
        PeerPausedError,
        PeerRefusedError,
        RemoteProtocolError,
    )
    from .group import Group, OpenGroup
    from .holepunch import Upgrader
    from .identity import DeviceIdentity
    from .keys import FEED_BINDING_CONTEXT, FEED_OWNER_CONTEXT, GroupKeys, owner_tag
    from .lan import LanDiscovery
    from .limits import ConnectionLimits
    from .node import Node, PeerEvent
    from .peer import Peer, ServiceError
    from .penalty import PenaltyPolicy
    from .ratelimit import DeviceLimit, RateLimits
    from .reach.ports import bind_or_fallback, listen_fixed
    from .reach.service import Reach
    from .relay import RelayClient, RelayLimits, RelayServer, is_behind_nat_ip
    from .sources import DhtSource, LanSource
    from .swarm import Discovery, Swarm

_EXPORTS: dict[str, tuple[str, str]] = {
    "backoff_delay": ("backoff", "capped"),
    "is_behind_nat_ip": ("relay", "is_behind_nat_ip"),
    "Upgrader": ("holepunch", "Upgrader"),
    "RelayServer": ("relay", "RelayServer"),
    "RelayLimits": ("relay", "RelayLimits"),
    "RelayClient": ("relay", "RelayClient"),
    "Address": ("address", "Address"),
    "AddressError": ("errors", "AddressError"),
    "Channel": ("channel", "Channel"),
    "ConnectionLimitError": ("errors", "ConnectionLimitError"),
    "ConnectionLimits": ("limits", "ConnectionLimits"),
    "DHT": ("dht", "DHT"),
    "DeviceIdentity": ("identity", "DeviceIdentity"),
    "DhtSource": ("sources", "DhtSource"),
    "DialError": ("errors", "DialError"),
    "Discovery": ("swarm", "Discovery"),
    "FEED_BINDING_CONTEXT": ("keys", "FEED_BINDING_CONTEXT"),
    "FEED_OWNER_CONTEXT": ("keys", "FEED_OWNER_CONTEXT"),
    "Group": ("group", "Group"),
    "GroupKeys": ("keys", "GroupKeys"),
    "KeyEncodingError": ("errors", "KeyEncodingError"),
    "LanDiscovery": ("lan", "LanDiscovery"),
    "LanSource": ("sources", "LanSource"),
    "MultiAddress": ("address", "MultiAddress"),
    "NetworkError": ("errors", "NetworkError"),
    "Node": ("node", "Node"),
    "OpenGroup": ("group", "OpenGroup"),
    "Peer": ("peer", "Peer"),
    "PeerEvent": ("node", "PeerEvent"),
    "PeerPausedError": ("errors", "PeerPausedError"),
    "PeerKeyMismatchError": ("errors", "PeerKeyMismatchError"),
    "PeerRefusedError": ("errors", "PeerRefusedError"),
    "RateLimits": ("ratelimit", "RateLimits"),
    "DeviceLimit": ("ratelimit", "DeviceLimit"),
    "PenaltyPolicy": ("penalty", "PenaltyPolicy"),
    "Reach": ("reach.service", "Reach"),
    "RemoteProtocolError": ("errors", "RemoteProtocolError"),
    "ServiceError": ("peer", "ServiceError"),
    "Swarm": ("swarm", "Swarm"),
    "bind_or_fallback": ("reach.ports", "bind_or_fallback"),
    "decode_key": ("encoding", "decode_key"),
    "encode_key": ("encoding", "encode_key"),
    "listen_fixed": ("reach.ports", "listen_fixed"),
    "owner_tag": ("keys", "owner_tag"),
    "parse_address": ("address", "parse"),
}

__all__ = [
    "DHT",
    "FEED_BINDING_CONTEXT",
    "FEED_OWNER_CONTEXT",
    "Address",
    "AddressError",
    "Channel",
    "ConnectionLimitError",
    "ConnectionLimits",
    "DeviceIdentity",
    "DeviceLimit",
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
    "PeerKeyMismatchError",
    "PeerPausedError",
    "PeerRefusedError",
    "PenaltyPolicy",
    "RateLimits",
    "Reach",
    "RelayClient",
    "RelayLimits",
    "RelayServer",
    "RemoteProtocolError",
    "ServiceError",
    "Swarm",
    "Upgrader",
    "backoff_delay",
    "bind_or_fallback",
    "decode_key",
    "encode_key",
    "is_behind_nat_ip",
    "listen_fixed",
    "owner_tag",
    "parse_address",
]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'networker' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
