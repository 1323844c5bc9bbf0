"""XChaCha20-Poly1305-IETF, the AEAD of every group entry, with OpenSSL doing the bulk.

Theory of operation
-------------------
libsodium's ``crypto_aead_xchacha20poly1305_ietf_*`` is ChaCha20-Poly1305-IETF (RFC 8439)
under a subkey: ``subkey = HChaCha20(key, nonce[0:16])``, and the 12-byte nonce is four zero
bytes then ``nonce[16:24]`` (draft-irtf-cfrg-xchacha, section 2.3; libsodium's
``aead_xchacha20poly1305.c`` does exactly this). The bytes are the same whichever library
computes the RFC 8439 part; what differs is the speed. The libsodium that PyNaCl bundles runs
its portable ChaCha20 and Poly1305 code here (1.2 GB/s for 80 KiB entries, measured), where
OpenSSL's ChaCha20-Poly1305 (through ``cryptography``, already a dependency: the Noise
transport uses it) has vector code (4.3 GB/s) and releases the GIL from 2 KiB on. So for an
entry of at least ``FAST_FROM`` bytes the subkey comes from libsodium's own HChaCha20 (the
symbol ``crypto_core_hchacha20`` of the library PyNaCl loaded, called through ctypes, which
releases the GIL too) and the rest from OpenSSL; smaller entries, and any machine where that
symbol cannot be found or whose OpenSSL lacks ChaCha20-Poly1305 (checked once, at import), take
PyNaCl's function whole. Both paths refuse a key or nonce of the wrong type or length alike.
No primitive is written here: both halves are the libraries' own, composed the way libsodium
composes them, and the tests check every path against PyNaCl byte for byte (and forgeries
refused by both).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import nacl.bindings
import nacl.exceptions
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

KEY_BYTES = 32
NONCE_BYTES = 24
TAG_BYTES = 16
FAST_FROM = 2048  # bytes of message from which OpenSSL's path is taken (measured: faster from 1 KiB on)
_ZEROS = bytes(4)


def _find_hchacha20() -> Callable[..., int] | None:
    """libsodium's HChaCha20, when this machine gives both halves (else PyNaCl does it all)."""
    try:
        import nacl._sodium  # PyNaCl's own build of libsodium: the library it already loaded

        fn = ctypes.CDLL(nacl._sodium.__file__).crypto_core_hchacha20
        ChaCha20Poly1305(bytes(KEY_BYTES)).encrypt(bytes(12), b"", None)  # an OpenSSL without it (FIPS)?
    except Exception:  # any reason at all: the portable path is always there
        return None
    fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_hchacha20 = _find_hchacha20()


def _check(key: bytes, nonce: bytes) -> None:
    """The same refusal on every path (PyNaCl's own is a ``TypeError`` of its kind)."""
    if type(key) is not bytes or len(key) != KEY_BYTES or type(nonce) is not bytes or len(nonce) != NONCE_BYTES:
        raise ValueError("XChaCha20-Poly1305 takes a 32-byte key and a 24-byte nonce, as bytes")


def _rfc8439(key: bytes, nonce: bytes) -> tuple[ChaCha20Poly1305, bytes]:
    """The ChaCha20-Poly1305-IETF cipher and 12-byte nonce that XChaCha20 ``(key, nonce)`` is."""
    subkey = ctypes.create_string_buffer(KEY_BYTES)
    assert _hchacha20 is not None
    if _hchacha20(subkey, nonce[:16], key, None) != 0:
        raise ValueError("HChaCha20 failed")
    return ChaCha20Poly1305(subkey.raw), _ZEROS + nonce[16:]


def encrypt(plain: bytes, ad: bytes, nonce: bytes, key: bytes) -> bytes:
    """``crypto_aead_xchacha20poly1305_ietf_encrypt(plain, ad, nonce, key)``: ciphertext + tag."""
    _check(key, nonce)
    if _hchacha20 is None or len(plain) < FAST_FROM:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, ad, nonce, key)
    cipher, n12 = _rfc8439(key, nonce)
    return cipher.encrypt(n12, plain, ad)


def decrypt(ciphertext: bytes | memoryview, ad: bytes, nonce: bytes, key: bytes) -> bytes | None:
    """The plaintext, or ``None`` when ``ciphertext`` does not authenticate under ``ad``."""
    _check(key, nonce)
    if len(ciphertext) < TAG_BYTES:
        return None
    if _hchacha20 is None or len(ciphertext) < FAST_FROM + TAG_BYTES:
        try:
            return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(bytes(ciphertext), ad, nonce, key)
        except nacl.exceptions.CryptoError:
            return None
    cipher, n12 = _rfc8439(key, nonce)
    try:
        return cipher.decrypt(n12, ciphertext, ad)
    except InvalidTag:
        return None
