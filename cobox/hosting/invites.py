"""Service invites: the capability a backup host hands out, and the records both sides keep.

Theory of operation
-------------------
``cobox service invite`` on the host draws a random 32-byte *secret* and prints it in a
``cobox://backup/<host key>?cap=<secret>...`` URI (:class:`cobox.uri.BackupInvite`). Two values
are derived from the secret, one-way, with distinct BLAKE3 contexts (the constants below):

- the invite's *id* (16 bytes): names the invite on the wire and in ``service list``; it proves
  nothing;
- the *proof key*: what the host stores (never the secret, so the URI cannot be read back from
  the host's disk) and what the member keeps to prove the invite later (status, remove).

A member proves the invite on one authenticated connection only: the proof is
``keyed_blake3(proof key, CONTEXT || handshake hash || prover's role || op || subject)``
(:func:`proof`), as hypercore's capabilities bind a key to the Noise handshake: a proof seen on
one connection is worth nothing on another, or for another request (``op``, ``subject``: the
replication key handed over, or the discovery key asked about).

Records (msgpack on the store, or on the wire):

- :class:`HostInvite` (host): id, proof key, quota in bytes and groups, expiry, label, revoked time;
- :class:`Hosted` (host): a group kept for an invite: discovery key, invite id, the member
  device that added it, the local name of the seed, when, and when it was revoked;
- :class:`BackupHost` (member): a group's backup host: its key, its addresses, the invite id and
  proof key, and the host's latest signed statement (:mod:`cobox.hosting.messages`).

Decoding (:func:`_fields`) is strict and raises only :class:`MalformedHostingError`.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from typing import Any

import msgpack
from blake3 import blake3

from ..errors import MalformedHostingError

SECRET_BYTES = 32
ID_BYTES = 16
KEY_BYTES = 32
ID_CONTEXT = "cobox 2026-12 backup service invite id"
PROOF_KEY_CONTEXT = "cobox 2026-12 backup service invite proof key"
PROOF_CONTEXT = b"cobox backup service proof v1\x00"
MAX_LABEL = 64
MAX_PEERS = 8
MAX_RECORD = 4096


def new_secret() -> bytes:
    return os.urandom(SECRET_BYTES)


def invite_id(secret: bytes) -> bytes:
    return blake3(secret, derive_key_context=ID_CONTEXT).digest()[:ID_BYTES]


def proof_key(secret: bytes) -> bytes:
    return blake3(secret, derive_key_context=PROOF_KEY_CONTEXT).digest()


def proof(key: bytes, handshake_hash: bytes, prover_is_initiator: bool, op: int, subject: bytes) -> bytes:
    """The proof of holding the invite on this connection, for this request."""
    role = b"\x01" if prover_is_initiator else b"\x00"
    return blake3(PROOF_CONTEXT + handshake_hash + role + bytes([op]) + subject, key=key).digest()


def check_proof(key: bytes, handshake_hash: bytes, prover_is_initiator: bool, op: int, subject: bytes,
                given: bytes) -> bool:
    return hmac.compare_digest(proof(key, handshake_hash, prover_is_initiator, op, subject), given)


def check_label(label: str) -> str:
    label = label.strip()
    if len(label) > MAX_LABEL or any(ord(c) < 32 for c in label):
        raise ValueError(f"a label is at most {MAX_LABEL} characters of text on one line")
    return label


def _unpack(data: bytes, what: str) -> list[Any]:
    if type(data) is not bytes or len(data) > MAX_RECORD:
        raise MalformedHostingError(f"{what}: too long")
    try:
        obj = msgpack.unpackb(data, raw=False, use_list=True, max_bin_len=MAX_RECORD, max_str_len=MAX_RECORD,
                              max_array_len=16, max_map_len=0, max_ext_len=0)
    except Exception:  # msgpack raises a zoo of types for bad input
        raise MalformedHostingError(f"{what}: undecodable") from None
    if type(obj) is not list:
        raise MalformedHostingError(f"{what}: expected a list")
    return obj


def _fields(data: bytes, what: str, kinds: tuple[object, ...]) -> list[Any]:
    """``data`` as a list of exactly ``kinds`` (a type, or an int: bytes of that length)."""
    obj = _unpack(data, what)
    if len(obj) != len(kinds):
        raise MalformedHostingError(f"{what}: expected {len(kinds)} fields")
    for k, (value, kind) in enumerate(zip(obj, kinds, strict=True)):
        if isinstance(kind, int):
            ok = type(value) is bytes and len(value) == kind
        elif kind is float:
            ok = type(value) in (int, float) and 0 <= value < 1e12
        elif kind is int:
            ok = type(value) is int and 0 <= value < 1 << 63
        else:
            ok = type(value) is kind
        if not ok:
            raise MalformedHostingError(f"{what}: bad field {k}")
    return obj


@dataclass(frozen=True)
class HostInvite:
    """An invite as the host keeps it (the secret itself is not kept)."""

    id: bytes
    proof_key: bytes
    quota_bytes: int  # all its groups together (0: no limit)
    max_groups: int   # groups it may add (0: no limit)
    expires: float    # no new groups after this time (0: never)
    label: str
    created: float
    revoked: float = 0.0  # when it was revoked (0: it is not)

    def __repr__(self) -> str:
        return f"HostInvite(id={self.id.hex()}, label={self.label!r}, revoked={bool(self.revoked)})"

    def encode(self) -> bytes:
        data: bytes = msgpack.packb([self.id, self.proof_key, self.quota_bytes, self.max_groups, float(self.expires),
                              self.label, float(self.created), float(self.revoked)], use_bin_type=True)
        return data

    @classmethod
    def decode(cls, data: bytes) -> HostInvite:
        f = _fields(data, "service invite record", (ID_BYTES, KEY_BYTES, int, int, float, str, float, float))
        return cls(f[0], f[1], f[2], f[3], float(f[4]), f[5], float(f[6]), float(f[7]))


@dataclass(frozen=True)
class Hosted:
    """A group this host keeps for an invite."""

    discovery_key: bytes
    invite: bytes
    device: bytes   # the member device that added it
    name: str       # the seed's name here (``cobox seed list``)
    added: float
    revoked: float = 0.0  # when it stopped taking data (revoked); cleared after the grace period

    def encode(self) -> bytes:
        data: bytes = msgpack.packb([self.discovery_key, self.invite, self.device, self.name, float(self.added),
                              float(self.revoked)], use_bin_type=True)
        return data

    @classmethod
    def decode(cls, data: bytes) -> Hosted:
        f = _fields(data, "hosted group record", (KEY_BYTES, ID_BYTES, KEY_BYTES, str, float, float))
        return cls(f[0], f[1], f[2], f[3], float(f[4]), float(f[5]))


@dataclass(frozen=True)
class BackupHost:
    """One backup host of one group, as the member keeps it."""

    discovery_key: bytes
    host: bytes
    invite: bytes
    proof_key: bytes
    peers: tuple[str, ...]
    added: float
    statement: bytes = b""  # the host's latest signed statement (messages.Statement), as received

    def __repr__(self) -> str:
        return f"BackupHost(host={self.host.hex()[:16]}, invite={self.invite.hex()})"

    def encode(self) -> bytes:
        data: bytes = msgpack.packb([self.discovery_key, self.host, self.invite, self.proof_key, list(self.peers),
                              float(self.added), self.statement], use_bin_type=True)
        return data

    @classmethod
    def decode(cls, data: bytes) -> BackupHost:
        f = _fields(data, "backup host record", (KEY_BYTES, KEY_BYTES, ID_BYTES, KEY_BYTES, list, float, bytes))
        peers = f[4]
        if len(peers) > MAX_PEERS or not all(type(p) is str and len(p) <= 256 for p in peers):
            raise MalformedHostingError("backup host record: bad addresses")
        return cls(f[0], f[1], f[2], f[3], tuple(peers), float(f[5]), f[6])
