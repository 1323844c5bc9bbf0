"""Feed keypairs for admission tests: a feed key, and the feed's signature ``admission.make``
needs (a key this module did not make gets a signature that verifies for nothing)."""

from __future__ import annotations

import nacl.signing

from cobox import admission
from networker.identity import DeviceIdentity

_SIGNERS: dict[bytes, nacl.signing.SigningKey] = {}


def feed_key() -> bytes:
    sk = nacl.signing.SigningKey.generate()
    key = bytes(sk.verify_key)
    _SIGNERS[key] = sk
    return key


def feed_signer(key: bytes):
    sk = _SIGNERS.get(key)
    return (lambda m: sk.sign(m).signature) if sk is not None else (lambda m: bytes(64))


def make_admission(identity: DeviceIdentity, discovery_key: bytes, membership_key: bytes, key: bytes) -> bytes:
    return admission.make(identity, discovery_key, membership_key, key, feed_signer(key))
