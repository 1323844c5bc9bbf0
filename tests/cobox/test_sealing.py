"""Deterministic sealing (cobox.entries_seal): the same place and plaintext seal to the same
bytes, anything else changes the nonce, and the opener is the one every entry always used."""

from __future__ import annotations

import nacl.bindings
from blake3 import blake3

from cobox.entries import encode_chunk
from cobox.entries_seal import NONCE_BYTES, NONCE_CONTEXT, nonce_key_of, open_entry, seal

KEY = bytes(range(32))
FEED = b"\x07" * 32
PLAIN = encode_chunk(b"some chunk of a file" * 100)


def test_seal_is_deterministic() -> None:
    assert seal(KEY, FEED, 5, PLAIN) == seal(KEY, FEED, 5, PLAIN)


def test_nonce_differs_per_place_plaintext_and_key() -> None:
    base = seal(KEY, FEED, 5, PLAIN)[:NONCE_BYTES]
    others = [
        seal(KEY, FEED, 6, PLAIN),
        seal(KEY, b"\x08" * 32, 5, PLAIN),
        seal(KEY, FEED, 5, encode_chunk(b"another chunk")),
        seal(bytes(32), FEED, 5, PLAIN),
    ]
    nonces = {base, *(o[:NONCE_BYTES] for o in others)}
    assert len(nonces) == 5


def test_opens_with_the_unchanged_opener_and_is_bound_to_its_place() -> None:
    sealed = seal(KEY, FEED, 5, PLAIN)
    assert open_entry(KEY, FEED, 5, sealed) == PLAIN
    assert open_entry(KEY, FEED, 6, sealed) is None
    assert open_entry(bytes(32), FEED, 5, sealed) is None


def test_nonce_is_the_keyed_blake3_prf_under_a_derived_key() -> None:
    nonce_key = blake3(KEY, derive_key_context=NONCE_CONTEXT).digest()
    assert nonce_key_of(KEY) == nonce_key != KEY
    place = FEED + (5).to_bytes(8, "big")
    nonce = blake3(place + PLAIN, key=nonce_key).digest(NONCE_BYTES)
    expected = nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(PLAIN, place, nonce, KEY)
    assert seal(KEY, FEED, 5, PLAIN) == expected
