"""Invite URIs: the one way a group's secrets travel between people.

    cobox://join/<address>?name=<name>     a member invite: the 32-byte group address
    cobox://seed/<replication key>         a backup-peer invite: replicate, never read

Keys are in cobox's one text form (lowercase base32, 52 characters). Anything else, including a
truncated key, is refused with an :class:`InvalidURIError` that says what is wrong.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from networker import KeyEncodingError, decode_key, encode_key

from .errors import InvalidURIError

SCHEME = "cobox"
MAX_URI = 1024
MAX_NAME = 64


@dataclass(frozen=True)
class Invite:
    kind: str  # "join" | "seed"
    key: bytes  # the group address (join) or replication key (seed)
    name: str | None = None

    def __repr__(self) -> str:  # never show the key
        return f"Invite(kind={self.kind!r}, name={self.name!r})"

    def format(self) -> str:
        text = f"{SCHEME}://{self.kind}/{encode_key(self.key)}"
        if self.name:
            text += "?" + urllib.parse.urlencode({"name": self.name})
        return text


def parse_invite(text: str) -> Invite:
    text = text.strip()
    if len(text) > MAX_URI:
        raise InvalidURIError("invite URI too long")
    if not text.startswith(f"{SCHEME}://"):
        raise InvalidURIError("not a cobox invite (expected cobox://join/... or cobox://seed/...)")
    parts = urllib.parse.urlsplit(text)
    kind = parts.netloc
    if kind not in ("join", "seed"):
        raise InvalidURIError(f"unknown invite kind {kind!r} (expected 'join' or 'seed')")
    key_text = parts.path.lstrip("/")
    if not key_text:
        raise InvalidURIError("invite URI has no key")
    try:
        key = decode_key(key_text)
    except KeyEncodingError:
        raise InvalidURIError("invite key is malformed or truncated (expected 52 base32 characters)") from None
    query = urllib.parse.parse_qs(parts.query)
    name = query.get("name", [None])[0]
    if name is not None:
        name = validate_name(name)
    return Invite(kind, key, name)


def validate_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME or any(c in name for c in "/\\\n\r\t\0") or name.startswith("."):
        raise InvalidURIError(f"invalid group name {name[:MAX_NAME]!r}")
    return name
