"""Peer discovery over a Kademlia DHT (the ``kademlia`` package, extended): many signed peer
records per topic, BEP 5-style announce tokens, lookups that go on past dead peers.

See :mod:`.node` for the theory of operation."""

from .node import DHT, DHTServer
from .records import PeerRecord, dht_key
from .storage import RecordStorage

__all__ = ["DHT", "DHTServer", "PeerRecord", "RecordStorage", "dht_key"]
