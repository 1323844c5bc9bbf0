"""One-time login codes and browser sessions for the dashboard (pure: the clock is injected).

Theory of operation
-------------------
``cobox open`` asks the daemon (with the API token) for a login *code*: random, valid once, for
``CODE_TTL`` seconds. The CLI hands it to the browser only inside a file that this user alone can
read (see :mod:`cobox.web.routes`), never on a command line. The page trades it with
``POST /v1/session`` for a *session secret*, which it keeps in ``sessionStorage`` (scoped to this
scheme, host and port, unlike cookies) and sends as the ``X-Cobox-Session`` header on every
request. No cookie is set or read: a page of another local port can make the browser send
requests here, but it cannot read our ``sessionStorage`` nor set our header, so it gets nothing.

Only hashes of codes and session secrets are kept, compared by dictionary lookup of a hash (no
timing leak of the secret); every table is bounded (the oldest entry goes first).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

CODE_TTL = 60.0
SESSION_TTL = 12 * 3600.0
MAX_CODES = 16
MAX_SESSIONS = 32


def _digest(secret: str) -> bytes:
    return hashlib.blake2b(secret.encode(), digest_size=32).digest()


@dataclass(frozen=True, slots=True)
class Session:
    expires: float


class Sessions:
    def __init__(self, clock: Callable[[], float] = time.monotonic, *, code_ttl: float = CODE_TTL,
                 session_ttl: float = SESSION_TTL) -> None:
        self._clock = clock
        self.code_ttl = code_ttl
        self.session_ttl = session_ttl
        self._codes: dict[bytes, float] = {}  # digest of code -> expiry
        self._sessions: dict[bytes, Session] = {}  # digest of session secret -> session

    def new_code(self) -> str:
        """A fresh one-time login code."""
        self._expire()
        code = secrets.token_urlsafe(32)
        self._codes[_digest(code)] = self._clock() + self.code_ttl
        _bound(self._codes, MAX_CODES)
        return code

    def redeem(self, code: str) -> tuple[str, Session] | None:
        """Trade a valid code (once) for a new session: ``(session secret, session)``."""
        self._expire()
        if not code or self._codes.pop(_digest(code), None) is None:
            return None
        secret = secrets.token_urlsafe(32)
        session = Session(expires=self._clock() + self.session_ttl)
        self._sessions[_digest(secret)] = session
        _bound(self._sessions, MAX_SESSIONS)
        return secret, session

    def get(self, secret: str) -> Session | None:
        if not secret:
            return None
        self._expire()
        return self._sessions.get(_digest(secret))

    def end(self, secret: str) -> None:
        self._sessions.pop(_digest(secret), None)

    def _expire(self) -> None:
        now = self._clock()
        for k in [k for k, exp in self._codes.items() if exp <= now]:
            del self._codes[k]
        for k in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[k]


def _bound(table: dict, limit: int) -> None:
    while len(table) > limit:
        del table[next(iter(table))]
