"""Sealing: how every entry of a member's feed is encrypted (:mod:`cobox.entries`, the envelope).

Theory of operation
-------------------
``seal(key, feed_key, seq, plaintext)`` is ``nonce || XChaCha20-Poly1305(key, nonce, plaintext,
ad=feed_key || u64(seq))``: bound to its place, so an entry cannot be moved to another feed or
position unnoticed; ``open_entry`` returns ``None`` for anything that does not authenticate.
(libsodium's XChaCha20-Poly1305-IETF, byte for byte; :mod:`cobox.xchacha` has OpenSSL compute
its ChaCha20-Poly1305 part for entries of 2 KiB or more: 3.6x faster here.)

``nonce = BLAKE3(key=nonce_key, feed_key || u64(seq) || plaintext)[:24]`` with
``nonce_key = BLAKE3-derive_key(NONCE_CONTEXT, encryption_key)`` (``nonce_key_of``). This is the
SIV construction (Rogaway-Shrimpton, deterministic authenticated encryption) built from two
standard parts and no new primitive: keyed BLAKE3 as a PRF and libsodium's
XChaCha20-Poly1305. It makes entries *reproducible*: a member holding a chunk's plaintext in its
own files can drop the stored entry and rebuild the very same bytes when a peer asks
(``cobox.folders.single``), and the rebuilt entry still matches the Merkle leaf the writer signed.

Why it is safe. XChaCha20-Poly1305 needs only that one key never seals two different messages
under one nonce. Here the nonce is a PRF of (place, plaintext) under a key derived from, but
never equal to, the encryption key (a separate derive_key context, so the two uses of the key
are independent): two different (place, plaintext) pairs collide on a 192-bit nonce with
probability about ``n**2 / 2**193`` for ``n`` entries, negligible; the same pair gives the same
nonce and the same ciphertext, which is not a reuse (nothing new is encrypted). The nonce is a
PRF output, so it tells a holder of no key nothing about the plaintext beyond equality.

What a backup peer or a stranger learns: only whether two entries *at the same place* (same feed
key and seq) have equal plaintexts. A feed is append-only and signed, so a place holds one entry
ever (two different entries at one place are a fork, which the store already records): this is
nothing new. Entries at different places differ whatever their plaintexts (the place is PRF
input), so equal chunks across places or feeds do not show through the ciphertext; the equal
chunks a group shares already show through dedup (one entry per chunk id). Epochs change the
encryption key and hence the nonce key: nothing carries across epochs.
"""

from __future__ import annotations

import functools
import struct

from blake3 import blake3

from . import xchacha

NONCE_BYTES = 24
TAG_BYTES = 16
_U64 = struct.Struct(">Q")


NONCE_CONTEXT = "cobox 2026-12 entry synthetic nonce key"  # derive_key context of the nonce key


@functools.lru_cache(maxsize=64)
def nonce_key_of(key: bytes) -> bytes:
    """The key of the synthetic-nonce PRF, derived from the encryption ``key`` (never the key
    itself as a BLAKE3 key: the two uses are domain-separated by ``NONCE_CONTEXT``)."""
    return blake3(key, derive_key_context=NONCE_CONTEXT).digest()


def seal(key: bytes, feed_key: bytes, seq: int, plain: bytes) -> bytes:
    """The stored form of entry ``seq`` of ``feed_key``: nonce + ciphertext bound to its place.
    Deterministic (see the module docstring): the same key, place and plaintext give the same bytes."""
    place = feed_key + _U64.pack(seq)
    hasher = blake3(place, key=nonce_key_of(key))
    hasher.update(plain)
    nonce = hasher.digest(NONCE_BYTES)
    return nonce + xchacha.encrypt(plain, place, nonce, key)


def open_entry(key: bytes | None, feed_key: bytes, seq: int, data: bytes) -> bytes | None:
    """The plaintext of a stored entry; ``None`` if there is no key or it does not authenticate."""
    if key is None or len(data) < NONCE_BYTES + TAG_BYTES:
        return None
    place = feed_key + _U64.pack(seq)
    if len(data) < NONCE_BYTES + xchacha.FAST_FROM:  # a copy costs less than a memoryview (tracked by the GC)
        return xchacha.decrypt(data[NONCE_BYTES:], place, data[:NONCE_BYTES], key)
    return xchacha.decrypt(memoryview(data)[NONCE_BYTES:], place, data[:NONCE_BYTES], key)
