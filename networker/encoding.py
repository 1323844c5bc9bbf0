"""The one text form of keys used everywhere (addresses, URIs, the CLI): lowercase RFC 4648
base32 without padding (52 characters for 32 bytes)."""

from __future__ import annotations

import base64
import binascii

from .errors import KeyEncodingError


def encode_key(key: bytes) -> str:
    return base64.b32encode(key).decode("ascii").rstrip("=").lower()


def decode_key(text: str, length: int = 32) -> bytes:
    """Decode a key; raise :class:`KeyEncodingError` unless it is base32 of ``length`` bytes."""
    if not isinstance(text, str) or not text.isascii() or len(text) > 2 * length + 8:
        raise KeyEncodingError("not a base32 key")
    padded = text.upper() + "=" * (-len(text) % 8)
    try:
        key = base64.b32decode(padded)
    except (binascii.Error, ValueError):
        raise KeyEncodingError(f"not a base32 key: {text[:12]}…") from None
    if len(key) != length or encode_key(key) != text.lower():
        chars = len(encode_key(bytes(length)))
        raise KeyEncodingError(f"a key is {length} bytes ({chars} base32 characters)")
    return key
