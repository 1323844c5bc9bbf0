"""Every key derivation of a group, in one place.

A group's *address* is 32 random bytes, the secret members share. Everything else is derived
one way with BLAKE3's key-derivation mode and a distinct context string per purpose:

    address         -> encryption_key   (content encryption; members only)
    encryption_key  -> chunker_key      (the folder chunker's gear table; members only)
    address         -> replication_key  (replicate and verify, not decrypt: a backup peer's key)
    address         -> membership_key   (tags that admit a member's feed to the group)
    replication_key -> discovery_key    (the DHT topic; reveals nothing else)

``membership_tag`` is a keyed BLAKE3 hash of a feed key under the membership key; ``owner_tag``
binds a feed key and the device that owns it the same way (cobox's feed admissions).
"""

from __future__ import annotations

from dataclasses import dataclass

from blake3 import blake3

KEY_BYTES = 32

ENCRYPTION_CONTEXT = "cobox 2026-11 group encryption key"
REPLICATION_CONTEXT = "cobox 2026-11 group replication key"
MEMBERSHIP_CONTEXT = "cobox 2026-11 group membership key"
DISCOVERY_CONTEXT = "cobox 2026-11 group discovery key"
CHUNKER_CONTEXT = "cobox 2026-12 group folder chunker key"


def derive(context: str, material: bytes) -> bytes:
    if len(material) != KEY_BYTES:
        raise ValueError(f"key material must be {KEY_BYTES} bytes")
    return blake3(material, derive_key_context=context).digest()


@dataclass(frozen=True, slots=True)
class GroupKeys:
    """A group's keys. A backup peer holds only ``replication_key`` and ``discovery_key``;
    the others are then ``None``."""

    replication_key: bytes
    discovery_key: bytes
    encryption_key: bytes | None = None
    membership_key: bytes | None = None
    address: bytes | None = None
    chunker_key: bytes | None = None

    def __repr__(self) -> str:
        return f"GroupKeys(discovery_key={self.discovery_key.hex()[:16]}…)"

    @classmethod
    def from_address(cls, address: bytes) -> GroupKeys:
        replication = derive(REPLICATION_CONTEXT, address)
        encryption = derive(ENCRYPTION_CONTEXT, address)
        return cls(
            replication_key=replication,
            discovery_key=derive(DISCOVERY_CONTEXT, replication),
            encryption_key=encryption,
            membership_key=derive(MEMBERSHIP_CONTEXT, address),
            address=address,
            chunker_key=chunker_key(encryption),
        )

    @classmethod
    def from_replication_key(cls, replication_key: bytes) -> GroupKeys:
        return cls(replication_key, derive(DISCOVERY_CONTEXT, replication_key))


def chunker_key(encryption_key: bytes) -> bytes:
    """The key of a group's content-defined chunker (``cobox.folders.chunking``): without it,
    nobody can predict where a known file is cut, so chunk sizes do not identify files."""
    return derive(CHUNKER_CONTEXT, encryption_key)


def membership_tag(membership_key: bytes, feed_key: bytes) -> bytes:
    return blake3(b"cobox membership tag v1" + feed_key, key=membership_key).digest()


FEED_OWNER_CONTEXT = b"cobox/feed-owner/v1"  # signed by the owner device: context || discovery key || feed key
FEED_BINDING_CONTEXT = b"cobox/feed-binding/v1"  # signed by the feed key: context || discovery key || device id


def owner_tag(membership_key: bytes, feed_key: bytes, device_id: bytes) -> bytes:
    return blake3(FEED_OWNER_CONTEXT + feed_key + device_id, key=membership_key).digest()
