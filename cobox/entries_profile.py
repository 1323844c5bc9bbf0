"""Device profile entries: a device's name in a group, signed; encode and strict decode.

Theory of operation
-------------------
``{"type": "device/profile", "v": 1, "d": device id, "n": name, "k": kind, "t": time_ms, "s": sig}``:
a device's name in the group (:mod:`cobox.devices` signs and verifies it; it travels in the
device's own feed and, for backup peers that have no feed, as a channel extension with the same
bytes). ``decode_profile`` is strict: exact keys, ``v`` 1, a 32-byte id, a name of 1 to
``MAX_NAME`` UTF-8 bytes without control characters or surrounding spaces, ``kind`` ``member``
or ``backup``, ``time_ms`` an integer from 0 to ``MAX_TIME`` seconds, a 64-byte signature;
anything else raises :class:`MalformedProfileError`.

A profile is a record type of :mod:`cobox.entries` (``PROFILE_TYPE``), sealed like every entry of a
member's feed; this module holds only its codec, ``cobox.devices`` its signatures and its use.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import msgpack

from .entries import FORMAT, ID_BYTES, MAX_TIME, PROFILE_TYPE
from .errors import MalformedProfileError

PROFILE_KINDS = ("member", "backup")
MAX_NAME = 64  # bytes of UTF-8
SIG_BYTES = 64
MAX_PROFILE_BYTES = 512
_PROFILE_KEYS = {"type", "v", "d", "n", "k", "t", "s"}


def check_name(name: object) -> str:
    """A device name as it may be published; ``MalformedProfileError`` (a ``CoboxError``) if not."""
    if type(name) is not str or name != name.strip() or not name:
        raise MalformedProfileError("name: expected non-empty text without surrounding spaces")
    try:
        if len(name.encode()) > MAX_NAME:
            raise MalformedProfileError(f"name: more than {MAX_NAME} bytes")
    except UnicodeEncodeError:
        raise MalformedProfileError("name: not valid Unicode") from None
    if any(unicodedata.category(c)[0] == "C" for c in name):
        raise MalformedProfileError("name: control or unassigned characters")
    return name


def encode_profile(device: bytes, name: str, kind: str, time_ms: int, signature: bytes) -> bytes:
    """The plaintext of a profile entry (and the body of the profile extension)."""
    data: bytes = msgpack.packb({"type": PROFILE_TYPE, "v": FORMAT, "d": device, "n": name, "k": kind,
                                 "t": time_ms, "s": signature}, use_bin_type=True)
    decode_profile(data)  # we write only what we would read
    return data


def decode_profile(data: bytes) -> tuple[bytes, str, str, int, bytes]:
    """``(device, name, kind, time_ms, signature)`` of a profile's bytes; ``MalformedProfileError``
    unless exactly valid (the signature is checked by :mod:`cobox.devices`)."""
    if type(data) is not bytes or len(data) > MAX_PROFILE_BYTES:
        raise MalformedProfileError("profile: not bytes, or too long")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, max_map_len=len(_PROFILE_KEYS),
                              max_array_len=0, max_ext_len=0)
    except (ValueError, TypeError, OverflowError, RecursionError, msgpack.UnpackException) as e:
        raise MalformedProfileError(f"profile: not msgpack ({type(e).__name__})") from None
    return profile_of(obj)


def profile_of(obj: Any) -> tuple[bytes, str, str, int, bytes]:
    """``decode_profile`` of an entry already unpacked."""
    if type(obj) is not dict or obj.get("type") != PROFILE_TYPE or set(obj) != _PROFILE_KEYS:
        raise MalformedProfileError("not a profile (unexpected or missing fields)")
    if type(obj["v"]) is not int or obj["v"] != FORMAT:
        raise MalformedProfileError("profile: unknown format version")
    device, kind, when, sig = obj["d"], obj["k"], obj["t"], obj["s"]
    if type(device) is not bytes or len(device) != ID_BYTES:
        raise MalformedProfileError(f"profile: the device id must be {ID_BYTES} bytes")
    name = check_name(obj["n"])
    if type(kind) is not str or kind not in PROFILE_KINDS:
        raise MalformedProfileError("profile: kind must be member or backup")
    if type(when) is not int or not 0 <= when <= MAX_TIME * 1000:
        raise MalformedProfileError("profile: time must be milliseconds since the epoch")
    if type(sig) is not bytes or len(sig) != SIG_BYTES:
        raise MalformedProfileError(f"profile: the signature must be {SIG_BYTES} bytes")
    return device, name, kind, when, sig
