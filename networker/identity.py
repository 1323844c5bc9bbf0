"""This device's identity: one Ed25519 keypair per data directory.

The public key is the peer id. The Noise static key is the X25519 conversion of the same key.
The secret seed is kept in a file of mode 0600, written atomically (temp file, fsync, rename),
and never logged or shown in a repr.
"""

from __future__ import annotations

import os
from pathlib import Path

import nacl.bindings
import nacl.signing

from .encoding import encode_key
from .errors import IdentityError

SEED_BYTES = 32


class DeviceIdentity:
    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._signing_key = signing_key
        self.peer_id = bytes(signing_key.verify_key)

    def __repr__(self) -> str:
        return f"<DeviceIdentity {encode_key(self.peer_id)[:12]}>"

    @classmethod
    def generate(cls) -> DeviceIdentity:
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> DeviceIdentity:
        if len(seed) != SEED_BYTES:
            raise IdentityError(f"an identity seed is {SEED_BYTES} bytes")
        return cls(nacl.signing.SigningKey(seed))

    @property
    def seed(self) -> bytes:
        """The secret seed (for key backup only)."""
        return bytes(self._signing_key)

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> DeviceIdentity:
        p = Path(path)
        if p.exists():
            return cls.load(p)
        identity = cls.generate()
        identity.save(p)
        return identity

    @classmethod
    def load(cls, path: Path) -> DeviceIdentity:
        try:
            seed = path.read_bytes()
        except OSError as e:
            raise IdentityError(f"cannot read the identity file {path}: {e.strerror}") from None
        if len(seed) != SEED_BYTES:
            raise IdentityError(
                f"the identity file {path} is malformed ({len(seed)} bytes, expected {SEED_BYTES})"
            )
        return cls.from_seed(seed)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, self.seed)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def sign(self, message: bytes) -> bytes:
        return self._signing_key.sign(message).signature

    def noise_private_key(self) -> bytes:
        """The X25519 private key for Noise, converted from the Ed25519 secret key."""
        sk = bytes(self._signing_key) + self.peer_id
        return nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(sk)


def peer_id_to_x25519(peer_id: bytes) -> bytes:
    return nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(peer_id)
