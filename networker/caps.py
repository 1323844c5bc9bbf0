"""Channel capabilities: proof that a peer knows a group's replication key, bound to one
connection.

``capability = keyed_blake3(replication_key, CONTEXT || role || handshake_hash)`` where role is
1 for the connection's initiator and 0 for the responder. The Noise handshake hash is unique
per connection, so a proof seen on one connection is useless on another; the role byte keeps
one side from reflecting the other's proof back.
"""

from __future__ import annotations

import hmac

from blake3 import blake3

CONTEXT = b"cobox channel capability v1\x00"


def capability(replication_key: bytes, handshake_hash: bytes, is_initiator: bool) -> bytes:
    role = b"\x01" if is_initiator else b"\x00"
    return blake3(CONTEXT + role + handshake_hash, key=replication_key).digest()


def verify_capability(
    replication_key: bytes, handshake_hash: bytes, is_initiator: bool, proof: bytes
) -> bool:
    """Whether ``proof`` is the capability of the side whose role is ``is_initiator``."""
    return hmac.compare_digest(capability(replication_key, handshake_hash, is_initiator), proof)
