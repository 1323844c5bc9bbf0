"""XChaCha20-Poly1305 (libsodium's ``crypto_aead_xchacha20poly1305_ietf``) on OpenSSL's ChaCha20-Poly1305.

Theory of operation
-------------------
XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha-03, what libsodium implements) is the IETF
ChaCha20-Poly1305 of RFC 8439 under a subkey: ``subkey = HChaCha20(key, nonce[:16])``, with the
96-bit nonce ``4 zero bytes || nonce[16:24]``. HChaCha20 is the ChaCha20 block function without
its final addition of the input state, keeping words 0-3 and 12-15. ``cryptography`` offers no
HChaCha20, but its ChaCha20 stream cipher takes the 16 bytes of state words 12-15 as its
``nonce``, so one keystream block of ``ChaCha20(key, nonce[:16])`` is ``rounds(state) + state``
word by word; subtracting the known input words (the four constants, the nonce words) from
words 0-3 and 12-15 leaves HChaCha20's output. The same bytes as libsodium, by construction and
by test (``tests/cobox/test_xchacha.py`` compares both on random inputs).

Why: PyNaCl's libsodium seals a 256 MiB file's chunk entries in ~0.22 s on the test machine,
OpenSSL (AVX-512 ChaCha20 and Poly1305) in ~0.09 s, plus ~7 us per entry for the subkey; and
``encrypt_into`` writes the ciphertext where the caller wants it (behind the nonce), where
PyNaCl returns a copy of a zeroed buffer. Both sides of a sync seal or open every chunk.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

KEY_BYTES = 32
NONCE_BYTES = 24
TAG_BYTES = 16
_CONSTANTS = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)  # "expand 32-byte k"
_BLOCK = struct.Struct("<16I")
_WORDS4 = struct.Struct("<4I")
_SUBKEY = struct.Struct("<8I")
_ZERO_BLOCK = bytes(64)
_MASK = 0xFFFFFFFF


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """HChaCha20(key, nonce16): 32 bytes (see the module docstring for how it is read off)."""
    if len(key) != KEY_BYTES or len(nonce16) != 16:
        raise ValueError("HChaCha20 takes a 32-byte key and a 16-byte nonce")
    ks = _BLOCK.unpack(Cipher(algorithms.ChaCha20(key, nonce16), None).encryptor().update(_ZERO_BLOCK))
    n = _WORDS4.unpack(nonce16)
    return _SUBKEY.pack((ks[0] - _CONSTANTS[0]) & _MASK, (ks[1] - _CONSTANTS[1]) & _MASK,
                        (ks[2] - _CONSTANTS[2]) & _MASK, (ks[3] - _CONSTANTS[3]) & _MASK,
                        (ks[12] - n[0]) & _MASK, (ks[13] - n[1]) & _MASK,
                        (ks[14] - n[2]) & _MASK, (ks[15] - n[3]) & _MASK)


def _aead(key: bytes, nonce: bytes) -> tuple[ChaCha20Poly1305, bytes]:
    if len(nonce) != NONCE_BYTES:
        raise ValueError("an XChaCha20-Poly1305 nonce is 24 bytes")
    return ChaCha20Poly1305(hchacha20(key, nonce[:16])), b"\0\0\0\0" + nonce[16:]


def encrypt_into(key: bytes, nonce: bytes, plain: bytes | bytearray | memoryview, aad: bytes,
                 out: bytearray | memoryview) -> None:
    """Write ``ciphertext || tag`` of ``plain`` (``len(plain) + TAG_BYTES`` bytes) into ``out``."""
    aead, n12 = _aead(key, nonce)
    aead.encrypt_into(n12, plain, aad, out)


def encrypt(key: bytes, nonce: bytes, plain: bytes | bytearray | memoryview, aad: bytes) -> bytes:
    """``ciphertext || tag`` of ``plain``: libsodium's ``crypto_aead_xchacha20poly1305_ietf_encrypt``."""
    aead, n12 = _aead(key, nonce)
    return aead.encrypt(n12, plain, aad)


def decrypt(key: bytes, nonce: bytes, ciphertext: bytes | bytearray | memoryview, aad: bytes) -> bytes | None:
    """The plaintext of ``ciphertext || tag``; ``None`` when it does not authenticate."""
    if len(ciphertext) < TAG_BYTES:
        return None
    aead, n12 = _aead(key, nonce)
    try:
        return aead.decrypt(n12, ciphertext, aad)
    except InvalidTag:
        return None
