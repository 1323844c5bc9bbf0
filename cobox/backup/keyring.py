"""The keyring a backup peer keeps for a member, sealed under the member's password, and the
rate limiter that guards logins.

A keyring is what a member needs to come back after losing every device: the seed of its
device identity, per group the group address (member) or replication key (backup only), and
the folder each group was bound to (its absolute path, offered again on restore: the user is
asked before anything is bound on the new machine).
``seal_keyring`` encrypts its msgpack form with XChaCha20-Poly1305 (random 24-byte nonce)
under a key stretched from the password with Argon2id and its *own* random salt (never the
login salt), then BLAKE3 ``derive_key``. The header (version, salt, limits) and the username are
the associated data, so a blob cannot be moved to another account or have its limits changed.

    blob = msgpack [version, salt, opslimit, memlimit, nonce, ciphertext]

After a login, the backup peer sends the blob wrapped once more under the session key
(``wrap_for_session``), so only the client that just proved the password receives it.

:class:`RateLimiter` counts login attempts per username (known or not, alike), reserved before
the guess can be made: after ``max_failures`` within ``window`` seconds the name is locked for
``base_lockout`` seconds, doubling with each further lockout up to ``max_lockout``; the level
decays after a quiet ``max_lockout``. Junk names never evict a lock. The clock is injected.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import msgpack
import nacl.bindings as sodium
import nacl.exceptions

from ..errors import KeyringDecryptError, RateLimitedError, WeakParametersError
from .kdf import (
    CEILING,
    INTERACTIVE,
    KEY_BYTES,
    KEYRING_CONTEXT,
    SALT_BYTES,
    SESSION_WRAP_CONTEXT,
    VERSION,
    Argon2Params,
    derive,
    stretch,
)

NONCE_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
MAX_BLOB_BYTES = 1 << 20
MAX_GROUPS = 4096
MAX_GROUP_NAME = 200
MAX_PATH = 4096
GroupKind = Literal["address", "replication_key"]
_KINDS = ("address", "replication_key")


@dataclass(frozen=True, slots=True)
class GroupSecret:
    kind: GroupKind
    key: bytes

    def __post_init__(self) -> None:
        if self.kind not in _KINDS or type(self.key) is not bytes or len(self.key) != KEY_BYTES:
            raise ValueError("a group secret is an address or a replication key of 32 bytes")

    def __repr__(self) -> str:
        return f"GroupSecret({self.kind}, …)"


@dataclass(frozen=True, slots=True)
class Keyring:
    identity_seed: bytes
    groups: Mapping[str, GroupSecret] = field(default_factory=dict)
    folders: Mapping[str, str] = field(default_factory=dict)  # group name -> the folder bound to it

    def __post_init__(self) -> None:
        if type(self.identity_seed) is not bytes or len(self.identity_seed) != KEY_BYTES:
            raise ValueError("the identity seed is 32 bytes")
        if len(self.groups) > MAX_GROUPS:
            raise ValueError(f"at most {MAX_GROUPS} groups")
        for name, secret in self.groups.items():
            if type(name) is not str or not 0 < len(name) <= MAX_GROUP_NAME or not isinstance(secret, GroupSecret):
                raise ValueError(f"bad group entry {name!r}")
        for name, path in self.folders.items():
            if name not in self.groups or type(path) is not str or not path.startswith("/") \
                    or not 0 < len(path) <= MAX_PATH or "\0" in path:
                raise ValueError(f"bad folder entry for {name!r}")

    def __repr__(self) -> str:
        return f"Keyring({len(self.groups)} groups, {len(self.folders)} folders)"

    def encode(self) -> bytes:
        groups = {name: [s.kind, s.key] for name, s in sorted(self.groups.items())}
        return msgpack.packb({"identity_seed": self.identity_seed, "groups": groups,
                              "folders": dict(sorted(self.folders.items()))}, use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes) -> Keyring:
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True, max_map_len=MAX_GROUPS + 2)
            if type(obj) is not dict or set(obj) != {"identity_seed", "groups", "folders"} \
                    or type(obj["groups"]) is not dict or type(obj["folders"]) is not dict:
                raise ValueError("keyring: bad layout")
            groups = {}
            for name, entry in obj["groups"].items():
                if type(entry) is not list or len(entry) != 2:
                    raise ValueError("keyring: bad group entry")
                groups[name] = GroupSecret(entry[0], entry[1])
            return cls(obj["identity_seed"], groups, dict(obj["folders"]))
        except Exception as e:
            raise KeyringDecryptError(f"keyring damaged: {e}") from None


def _key(password: str | bytes, salt: bytes, params: Argon2Params) -> bytes:
    return derive(KEYRING_CONTEXT, stretch(password, salt, params))


def _aad(salt: bytes, params: Argon2Params, username: str) -> bytes:
    return msgpack.packb([VERSION, salt, params.opslimit, params.memlimit, username], use_bin_type=True)


def seal_keyring(keyring: Keyring, password: str | bytes, params: Argon2Params = INTERACTIVE, *,
                 username: str = "") -> bytes:
    salt = sodium.randombytes(SALT_BYTES)
    nonce = sodium.randombytes(NONCE_BYTES)
    ct = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(keyring.encode(), _aad(salt, params, username), nonce,
                                                          _key(password, salt, params))
    return msgpack.packb([VERSION, salt, params.opslimit, params.memlimit, nonce, ct], use_bin_type=True)


def open_keyring(blob: bytes, password: str | bytes, *, username: str = "",
                 max_params: Argon2Params = CEILING) -> Keyring:
    """Decrypt a sealed keyring; :class:`KeyringDecryptError` for a wrong password or a damaged
    blob, :class:`WeakParametersError` if its limits exceed ``max_params``."""
    try:
        if len(blob) > MAX_BLOB_BYTES:
            raise ValueError("too long")
        f = msgpack.unpackb(blob, raw=False, max_array_len=6, max_map_len=0)
        if type(f) is not list or len(f) != 6 or f[0] != VERSION or type(f[1]) is not bytes \
                or len(f[1]) != SALT_BYTES or type(f[4]) is not bytes or len(f[4]) != NONCE_BYTES \
                or type(f[5]) is not bytes or type(f[2]) is not int or type(f[3]) is not int:
            raise ValueError("bad layout")
        salt, params, nonce, ct = f[1], Argon2Params(f[2], f[3]), f[4], f[5]
    except Exception as e:
        raise KeyringDecryptError(f"keyring damaged: {e}") from None
    if not params.at_most(max_params):
        raise WeakParametersError("the keyring asks for more password hashing than allowed")
    try:
        plain = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, _aad(salt, params, username), nonce,
                                                                 _key(password, salt, params))
    except nacl.exceptions.CryptoError:
        raise KeyringDecryptError("wrong password or damaged keyring") from None
    return Keyring.decode(plain)


def wrap_for_session(session_key: bytes, blob: bytes) -> bytes:
    """Encrypt a sealed keyring once more under a login's session key (server -> client)."""
    nonce = sodium.randombytes(NONCE_BYTES)
    ct = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(blob, b"keyring", nonce,
                                                          derive(SESSION_WRAP_CONTEXT, session_key))
    return nonce + ct


def unwrap_from_session(session_key: bytes, wrapped: bytes) -> bytes:
    try:
        return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            wrapped[NONCE_BYTES:], b"keyring", wrapped[:NONCE_BYTES], derive(SESSION_WRAP_CONTEXT, session_key))
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise KeyringDecryptError("the wrapped keyring does not open with this session key") from None


@dataclass(slots=True)
class _Entry:
    failures: deque[float] = field(default_factory=deque)
    lockouts: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


class RateLimiter:
    """Login attempts per username, with exponential lockout; one instance per server, shared by
    every connection (the lock is global per name). Use it for every name alike, known or not.

    A guess is paid for before it can be made: :meth:`reserve` (at ``hello``) refuses a locked
    name and otherwise counts the attempt as a failure at once; :meth:`success` (a valid
    confirmation) refunds it by clearing the name. So ``max_failures`` parallel sessions are
    the most that can ever hold a guess, however they interleave.

    The table is bounded (``max_names``) without letting junk names push out a lock: when it is
    full, entries that have gone quiet are dropped first, then unlocked entries in order of least
    evidence (fewest lockouts, fewest recent failures, oldest); a locked entry is never evicted.
    If every entry is locked, a new name is refused (:class:`RateLimitedError`) until the first
    lock expires: failing closed is the price of bounded memory."""

    def __init__(self, *, max_failures: int = 5, window: float = 600.0, base_lockout: float = 60.0,
                 max_lockout: float = 86400.0, max_names: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures, self.window = max_failures, window
        self.base_lockout, self.max_lockout = base_lockout, max_lockout
        self.max_names = max_names
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def retry_after(self, username: str) -> float:
        """Seconds until ``username`` may try again (0: now)."""
        e = self._entries.get(username)
        return max(0.0, e.locked_until - self._clock()) if e else 0.0

    def check(self, username: str) -> None:
        wait = self.retry_after(username)
        if wait > 0:
            raise RateLimitedError(f"too many failed attempts; retry in {wait:.0f} s", wait)

    def reserve(self, username: str) -> None:
        """Before a login on ``username`` may make its one guess: refuse a locked name, else
        count the attempt as failed now (:meth:`success` refunds it)."""
        self.check(username)
        self.failure(username)

    def failure(self, username: str) -> None:
        now = self._clock()
        e = self._entries.get(username)
        if e is None:
            self._make_room(now)
            e = self._entries[username] = _Entry()
        elif now - e.last_failure > self.max_lockout:
            e.lockouts = 0
        e.last_failure = now
        while e.failures and now - e.failures[0] >= self.window:
            e.failures.popleft()
        e.failures.append(now)
        if len(e.failures) >= self.max_failures:
            e.failures.clear()
            e.lockouts += 1
            e.locked_until = now + min(self.base_lockout * 2 ** (e.lockouts - 1), self.max_lockout)

    def success(self, username: str) -> None:
        self._entries.pop(username, None)

    def _make_room(self, now: float) -> None:
        if len(self._entries) < self.max_names:
            return
        entries = self._entries
        for name in [n for n, e in entries.items()
                     if e.locked_until <= now and now - e.last_failure >= max(self.window, self.max_lockout)]:
            del entries[name]  # gone quiet: the same as never seen
        if len(entries) < self.max_names:
            return
        unlocked = [(e.lockouts, sum(1 for t in e.failures if now - t < self.window), e.last_failure, n)
                    for n, e in entries.items() if e.locked_until <= now]
        if not unlocked:
            wait = min(e.locked_until for e in entries.values()) - now
            raise RateLimitedError(f"too many names locked; retry in {wait:.0f} s", wait)
        for *_, name in heapq.nsmallest(max(1, self.max_names // 10), unlocked):
            del entries[name]
