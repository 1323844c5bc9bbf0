"""Every key derivation of a group, in one place.

A group's *address* is 32 random bytes, the secret members share. Everything else is derived
one way with BLAKE3's key-derivation mode and a distinct context string per purpose:

    address         -> encryption_key   (content encryption; members only)
    encryption_key  -> chunker_key      (the folder chunker's gear table; members only)
    address         -> replication_key  (replicate and verify, not decrypt: a backup peer's key)
    address         -> membership_key   (tags that admit a member's feed to the group)
    replication_key -> discovery_key    (the DHT topic; reveals nothing else)

Epochs (``cobox.epochs``): removing a device gives the group fresh *epoch secrets*, one per
removal record. An epoch made by one record is ``GroupKeys.from_address(secret)`` (its invite is
the usual one); an epoch made by the union of concurrent records (sorted by record hash) takes
``EPOCH_ADDRESS_CONTEXT`` over their secrets for the address, and ``EPOCH_REPLICATION_CONTEXT``
over their replication keys for the replication key, so a backup peer that was sealed only the
replication keys derives the same replication and discovery keys. The chunker key stays the
group's first one (content ids must not change with the epoch).

``membership_tag`` is a keyed BLAKE3 hash of a feed key under the membership key; ``owner_tag``
binds a feed key and the device that owns it the same way (cobox's feed admissions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from blake3 import blake3

KEY_BYTES = 32

ENCRYPTION_CONTEXT = "cobox 2026-11 group encryption key"
REPLICATION_CONTEXT = "cobox 2026-11 group replication key"
MEMBERSHIP_CONTEXT = "cobox 2026-11 group membership key"
DISCOVERY_CONTEXT = "cobox 2026-11 group discovery key"
CHUNKER_CONTEXT = "cobox 2026-12 group folder chunker key"
EPOCH_ADDRESS_CONTEXT = "cobox 2026-12 union epoch address"
EPOCH_REPLICATION_CONTEXT = "cobox 2026-12 union epoch replication key"


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

    @classmethod
    def for_epoch(cls, secrets: Sequence[bytes], chunker: bytes | None = None) -> GroupKeys:
        """A member's keys of the epoch made by records sealing ``secrets`` (in record-hash
        order); ``chunker``: the group's chunker key, kept across epochs."""
        if not secrets:
            raise ValueError("an epoch has at least one secret")
        if len(secrets) == 1:
            keys = cls.from_address(secrets[0])
        else:
            address = derive(EPOCH_ADDRESS_CONTEXT, blake3(b"".join(secrets)).digest())
            encryption = derive(ENCRYPTION_CONTEXT, address)
            replication = union_replication_key([replication_key(s) for s in secrets])
            keys = cls(replication, derive(DISCOVERY_CONTEXT, replication), encryption,
                       derive(MEMBERSHIP_CONTEXT, address), address, chunker_key(encryption))
        return keys if chunker is None else replace(keys, chunker_key=chunker)

    @classmethod
    def for_seed_epoch(cls, replication_keys: Sequence[bytes]) -> GroupKeys:
        """A backup peer's keys of the epoch made by records sealing ``replication_keys``."""
        if not replication_keys:
            raise ValueError("an epoch has at least one secret")
        if len(replication_keys) == 1:
            return cls.from_replication_key(replication_keys[0])
        return cls.from_replication_key(union_replication_key(replication_keys))


def replication_key(address: bytes) -> bytes:
    """The replication key of a group address (what a backup peer is given)."""
    return derive(REPLICATION_CONTEXT, address)


def union_replication_key(replication_keys: Sequence[bytes]) -> bytes:
    return derive(EPOCH_REPLICATION_CONTEXT, blake3(b"".join(replication_keys)).digest())


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
