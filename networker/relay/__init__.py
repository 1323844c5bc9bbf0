"""Relays: devices behind NAT reachable through a public daemon that splices their connections
below Noise (it forwards ciphertext it cannot read). Wire messages in :mod:`.wire`, the relay's
bookkeeping in :mod:`.state`, the service in :mod:`.server`, a device's side in :mod:`.client`;
addresses in :mod:`networker.address` (``tcp:HOST:PORT~noise:RELAYKEY~relay:PEERKEY``)."""

from .client import RelayClient, RelayedConnection, dial, dial_relayed
from .kind import connection_kind, is_behind_nat_ip
from .server import RelayServer
from .state import RelayLimits

__all__ = ["RelayClient", "RelayLimits", "RelayServer", "RelayedConnection", "connection_kind", "dial",
           "dial_relayed", "is_behind_nat_ip"]
