"""Cookies and announce tokens: what a DHT node hands out so that strangers cannot use it.

Theory of operation
-------------------
UDP source addresses can be forged. Two things follow, and both are answered with a keyed hash
of the sender's address under a secret only this node knows (``keyed_blake3(secret, ...)``),
with the secret rotated every ``rotation`` seconds and the previous one still accepted, so a
value lives between one and two rotations and nothing is kept per sender:

- **Amplification.** A small request with a forged source would make this node send a big reply
  (a ``lookup`` reply is up to 8 KiB) to a victim. So a sender must first show that it receives
  at the address it claims: every reply carries a :meth:`TokenIssuer.cookie` for the sender's
  address, and only a request that echoes a valid cookie gets a full answer. Until then the
  answer is at most :data:`AMPLIFICATION` times the request (BEP 5's token idea, applied to
  replies as QUIC does for its handshake).
- **Forged announces.** An announce must carry a :meth:`TokenIssuer.token` that this node gave
  out in a ``lookup`` reply *for the same key* to the same address; a token for one topic does
  not store a record under another, and a spoofed source never sees the token it would need.

The clock is injected (monotonic seconds), so rotation can be tested without waiting.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Callable

import blake3

TOKEN_BYTES = 20
COOKIE_BYTES = 16
SECRET_BYTES = 32
AMPLIFICATION = 3
COOKIE_DOMAIN = b"cobox/dht/cookie/v1\x00"
TOKEN_DOMAIN = b"cobox/dht/announce-token/v1\x00"


class TokenIssuer:
    def __init__(self, rotation: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.rotation = rotation
        self.clock = clock
        self._secrets = [os.urandom(SECRET_BYTES), os.urandom(SECRET_BYTES)]
        self._rotated_at = clock()

    def _current(self) -> list[bytes]:
        if self.clock() - self._rotated_at >= self.rotation:
            self._secrets = [os.urandom(SECRET_BYTES), self._secrets[0]]
            self._rotated_at = self.clock()
        return self._secrets

    # -- address cookies -----------------------------------------------------------------

    def cookie(self, address: tuple[str, int]) -> bytes:
        return _mac(self._current()[0], COOKIE_DOMAIN, _addr(address), COOKIE_BYTES)

    def check_cookie(self, address: tuple[str, int], cookie: object) -> bool:
        if not isinstance(cookie, bytes) or len(cookie) != COOKIE_BYTES:
            return False
        return any(hmac.compare_digest(_mac(s, COOKIE_DOMAIN, _addr(address), COOKIE_BYTES), cookie)
                   for s in self._current())

    # -- announce tokens ------------------------------------------------------------------

    def token(self, address: tuple[str, int], key: bytes) -> bytes:
        return _mac(self._current()[0], TOKEN_DOMAIN, _addr(address) + b"|" + key, TOKEN_BYTES)

    def check_token(self, address: tuple[str, int], key: bytes, token: object) -> bool:
        if not isinstance(token, bytes) or len(token) != TOKEN_BYTES:
            return False
        data = _addr(address) + b"|" + key
        return any(hmac.compare_digest(_mac(s, TOKEN_DOMAIN, data, TOKEN_BYTES), token) for s in self._current())


def _addr(address: tuple[str, int]) -> bytes:
    return f"{address[0]}:{address[1]}".encode()


def _mac(secret: bytes, domain: bytes, data: bytes, length: int) -> bytes:
    return blake3.blake3(domain + data, key=secret).digest(length=length)
