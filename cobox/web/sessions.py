"""One-time login codes and browser sessions for the dashboard (pure: the clock is injected).

Theory of operation
-------------------
``cobox open`` asks the daemon (with the API token) for a login link; the link carries a random
*code* that is valid once, for ``CODE_TTL`` seconds. ``GET /login?code=`` trades it for a
*session*: a random id sent back as an HttpOnly, SameSite=Strict cookie, and a CSRF value that
the page receives inside the HTML and sends back as the ``X-Cobox-CSRF`` header on every
state-changing request. Neither the token nor a code stays in a page URL (the login answer is a
redirect to ``/``). Only hashes of codes and session ids are kept, compared in constant time by
dictionary lookup of a hash; every table is bounded (the oldest entry goes first).
"""

from __future__ import annotations

import hashlib
import hmac
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
    csrf: str
    expires: float


class Sessions:
    def __init__(self, clock: Callable[[], float] = time.monotonic, *, code_ttl: float = CODE_TTL,
                 session_ttl: float = SESSION_TTL) -> None:
        self._clock = clock
        self.code_ttl = code_ttl
        self.session_ttl = session_ttl
        self._codes: dict[bytes, float] = {}  # digest of code -> expiry
        self._sessions: dict[bytes, Session] = {}  # digest of session id -> session

    def new_code(self) -> str:
        """A fresh one-time login code."""
        self._expire()
        code = secrets.token_urlsafe(32)
        self._codes[_digest(code)] = self._clock() + self.code_ttl
        _bound(self._codes, MAX_CODES)
        return code

    def redeem(self, code: str) -> tuple[str, Session] | None:
        """Trade a valid code (once) for a new session: ``(session id, session)``."""
        self._expire()
        if not code or self._codes.pop(_digest(code), None) is None:
            return None
        session_id = secrets.token_urlsafe(32)
        session = Session(csrf=secrets.token_urlsafe(24), expires=self._clock() + self.session_ttl)
        self._sessions[_digest(session_id)] = session
        _bound(self._sessions, MAX_SESSIONS)
        return session_id, session

    def get(self, session_id: str) -> Session | None:
        if not session_id:
            return None
        self._expire()
        return self._sessions.get(_digest(session_id))

    def check_csrf(self, session: Session, supplied: str) -> bool:
        return bool(supplied) and hmac.compare_digest(supplied.encode(), session.csrf.encode())

    def end(self, session_id: str) -> None:
        self._sessions.pop(_digest(session_id), None)

    def _expire(self) -> None:
        now = self._clock()
        for k in [k for k, exp in self._codes.items() if exp <= now]:
            del self._codes[k]
        for k in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[k]


def _bound(table: dict, limit: int) -> None:
    while len(table) > limit:
        del table[next(iter(table))]
