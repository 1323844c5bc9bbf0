"""Every key derivation of password recovery, in one place.

Password stretching is Argon2id (libsodium ``crypto_pwhash``) with a salt and limits chosen at
registration; everything after it is BLAKE3 ``derive_key`` with a distinct context string per
purpose, and the group operations are libsodium's Ed25519 core (``crypto_core_ed25519_*``,
``crypto_scalarmult_ed25519_*``). Nothing here is a new primitive.

From the stretched password ``s`` (32 bytes of Argon2id output) a client derives, as SPAKE2+EE
does from its 4 x 32 bytes of ``crypto_pwhash`` output:

    M = from_uniform(derive(M_CONTEXT, s))        blinding point of the client's share
    N = from_uniform(derive(N_CONTEXT, s))        blinding point of the server's share
    k = derive(K_CONTEXT, s)                      a value both sides mix into the transcript
    w = reduce(derive(W_CONTEXT, s, 64 bytes))    the client-only scalar
    L = w * G                                     its verifier

The server stores ``M, N, k, L`` (never ``s`` nor ``w``); knowing them is enough to answer a
login, not to make one (that needs ``w``).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import nacl.bindings as sodium
from blake3 import blake3

VERSION = 1
KEY_BYTES = 32
POINT_BYTES = sodium.crypto_core_ed25519_BYTES
SALT_BYTES = sodium.crypto_pwhash_SALTBYTES
STRETCHED_BYTES = 32

M_CONTEXT = "cobox 2026-11 recovery blinding point M"
N_CONTEXT = "cobox 2026-11 recovery blinding point N"
K_CONTEXT = "cobox 2026-11 recovery shared value k"
W_CONTEXT = "cobox 2026-11 recovery client scalar w"
TRANSCRIPT_CONTEXT = "cobox 2026-11 recovery transcript"
SESSION_CONTEXT = "cobox 2026-11 recovery session key"
SERVER_CONFIRM_CONTEXT = "cobox 2026-11 recovery server confirmation"
CLIENT_CONFIRM_CONTEXT = "cobox 2026-11 recovery client confirmation"
FAKE_SEED_CONTEXT = "cobox 2026-11 recovery unknown user seed"
FAKE_SALT_CONTEXT = "cobox 2026-11 recovery unknown user salt"
FAKE_STRETCHED_CONTEXT = "cobox 2026-11 recovery unknown user stretched key"
KEYRING_CONTEXT = "cobox 2026-11 keyring encryption key"
SESSION_WRAP_CONTEXT = "cobox 2026-11 keyring session wrap key"


@dataclass(frozen=True, slots=True)
class Argon2Params:
    """Argon2id limits (libsodium's ``opslimit`` and ``memlimit`` in bytes)."""

    opslimit: int = sodium.crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE
    memlimit: int = sodium.crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE

    def __post_init__(self) -> None:
        if not (sodium.crypto_pwhash_argon2id_OPSLIMIT_MIN <= self.opslimit
                <= sodium.crypto_pwhash_argon2id_OPSLIMIT_MAX):
            raise ValueError(f"Argon2id opslimit out of range: {self.opslimit}")
        if not (sodium.crypto_pwhash_argon2id_MEMLIMIT_MIN <= self.memlimit
                <= sodium.crypto_pwhash_argon2id_MEMLIMIT_MAX):
            raise ValueError(f"Argon2id memlimit out of range: {self.memlimit}")

    def at_least(self, floor: Argon2Params) -> bool:
        return self.opslimit >= floor.opslimit and self.memlimit >= floor.memlimit

    def at_most(self, ceiling: Argon2Params) -> bool:
        return self.opslimit <= ceiling.opslimit and self.memlimit <= ceiling.memlimit


INTERACTIVE = Argon2Params()
MODERATE = Argon2Params(sodium.crypto_pwhash_argon2id_OPSLIMIT_MODERATE,
                        sodium.crypto_pwhash_argon2id_MEMLIMIT_MODERATE)
MINIMUM = Argon2Params(sodium.crypto_pwhash_argon2id_OPSLIMIT_MIN, sodium.crypto_pwhash_argon2id_MEMLIMIT_MIN)
# What a client agrees to spend at most, whatever a (possibly hostile) server asks.
CEILING = Argon2Params(sodium.crypto_pwhash_argon2id_OPSLIMIT_SENSITIVE,
                       sodium.crypto_pwhash_argon2id_MEMLIMIT_SENSITIVE)


def password_bytes(password: str | bytes) -> bytes:
    """The bytes that get hashed: UTF-8 of the NFC form of a text password, or bytes as given."""
    if isinstance(password, str):
        password = unicodedata.normalize("NFC", password).encode("utf-8")
    if not password:
        raise ValueError("empty password")
    return password


def stretch(password: str | bytes, salt: bytes, params: Argon2Params) -> bytes:
    """Argon2id of the password: the only slow step, and the only input to what follows."""
    if len(salt) != SALT_BYTES:
        raise ValueError(f"salt must be {SALT_BYTES} bytes")
    return sodium.crypto_pwhash_alg(STRETCHED_BYTES, password_bytes(password), salt, params.opslimit,
                                    params.memlimit, sodium.crypto_pwhash_ALG_ARGON2ID13)


def derive(context: str, material: bytes, length: int = KEY_BYTES) -> bytes:
    return blake3(material, derive_key_context=context).digest(length=length)


def scalar_from(context: str, material: bytes) -> bytes:
    """A uniform non-zero scalar mod the group order (64 bytes reduced, as libsodium advises)."""
    return sodium.crypto_core_ed25519_scalar_reduce(derive(context, material, 64))


def random_scalar() -> bytes:
    return sodium.crypto_core_ed25519_scalar_reduce(sodium.randombytes(64))


@dataclass(frozen=True, slots=True)
class PasswordSecrets:
    """What a stretched password yields. ``w`` stays on the client; the rest is the verifier."""

    m: bytes
    n: bytes
    k: bytes
    w: bytes
    l: bytes  # noqa: E741 (the name the scheme gives it)

    def __repr__(self) -> str:
        return "PasswordSecrets(…)"


def password_secrets(stretched: bytes) -> PasswordSecrets:
    if len(stretched) != STRETCHED_BYTES:
        raise ValueError(f"stretched key must be {STRETCHED_BYTES} bytes")
    w = scalar_from(W_CONTEXT, stretched)
    return PasswordSecrets(
        m=sodium.crypto_core_ed25519_from_uniform(derive(M_CONTEXT, stretched)),
        n=sodium.crypto_core_ed25519_from_uniform(derive(N_CONTEXT, stretched)),
        k=derive(K_CONTEXT, stretched),
        w=w,
        l=sodium.crypto_scalarmult_ed25519_base_noclamp(w),
    )


@dataclass(frozen=True, slots=True)
class SessionSecrets:
    session_key: bytes
    server_confirm: bytes
    client_confirm: bytes

    def __repr__(self) -> str:
        return "SessionSecrets(…)"


def _u64(v: int) -> bytes:
    return v.to_bytes(8, "big")


def session_secrets(*, username: str, server_id: bytes, salt: bytes, params: Argon2Params,
                    x: bytes, y: bytes, z: bytes, k: bytes, v: bytes) -> SessionSecrets:
    """Hash the whole transcript (every field length-prefixed) into the session key and the
    two confirmation tags. Both sides compute the same value iff they agree on every input."""
    h = blake3(derive_key_context=TRANSCRIPT_CONTEXT)
    parts = (bytes([VERSION]), username.encode("utf-8"), server_id, salt, _u64(params.opslimit),
             _u64(params.memlimit), x, y, z, k, v)
    for part in parts:
        h.update(len(part).to_bytes(2, "big"))
        h.update(part)
    k0 = h.digest()
    return SessionSecrets(derive(SESSION_CONTEXT, k0), derive(SERVER_CONFIRM_CONTEXT, k0),
                          derive(CLIENT_CONFIRM_CONTEXT, k0))


def fake_seed(server_secret: bytes, username: str) -> bytes:
    """Per-username seed for the decoy record of a name with no account (keyed by a secret of
    the server, so that nobody else can tell a decoy from a real record)."""
    if len(server_secret) != KEY_BYTES:
        raise ValueError(f"server secret must be {KEY_BYTES} bytes")
    return blake3(username.encode("utf-8"), key=derive(FAKE_SEED_CONTEXT, server_secret)).digest()
