"""The wire of backup as a service: the ``hosting`` service call and the host's signed statements.

A member calls the host's networker service ``hosting`` (``Peer.call``) with a
:class:`Request`, msgpack ``[op, invite id, proof, subject]``:

    ADD     subject = the group's replication key (never its address): keep this group
    STATUS  subject = the group's discovery key: how is it kept
    REMOVE  subject = the group's discovery key: drop it

``proof`` binds the invite to this connection and this request (:func:`cobox.hosting.invites.proof`).
The host answers each with a :class:`Statement` signed by its device key (the one the member
pinned from the invite): "I, ``host``, keep the group ``discovery_key`` for invite ``invite``,
added by ``device``, in ``state``, holding ``stored_bytes`` of at most ``quota_bytes``, as of
``time_ms``". The answer to ADD is the *acceptance*. A refusal is a ``ServiceError`` with a
one-line reason that says what to do.

Decoders are strict (exact field count, types and lengths; unknown ops and states refused) and
raise only :class:`MalformedHostingError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

import msgpack
import nacl.exceptions
import nacl.signing

from ..errors import MalformedHostingError
from .invites import ID_BYTES, KEY_BYTES, _fields

SERVICE = "hosting"
CONTEXT = b"cobox backup service statement v1\x00"
PROOF_BYTES = 32
SIGNATURE_BYTES = 64
_U64 = struct.Struct(">Q")


class Op(IntEnum):
    ADD = 1
    STATUS = 2
    REMOVE = 3


class State(IntEnum):
    ACTIVE = 1   # taking data
    FULL = 2     # a quota reached: taking no new data, deleting nothing
    REVOKED = 3  # the host revoked the invite (or the device): no new data; held for the grace period
    REMOVED = 4  # dropped at the member's request

    @property
    def text(self) -> str:
        return {1: "active", 2: "quota reached", 3: "revoked", 4: "removed"}[self.value]


@dataclass(frozen=True)
class Request:
    op: Op
    invite: bytes
    proof: bytes
    subject: bytes

    def encode(self) -> bytes:
        data: bytes = msgpack.packb([int(self.op), self.invite, self.proof, self.subject], use_bin_type=True)
        return data

    @classmethod
    def decode(cls, body: bytes) -> Request:
        f = _fields(body, "hosting request", (int, ID_BYTES, PROOF_BYTES, KEY_BYTES))
        try:
            op = Op(f[0])
        except ValueError:
            raise MalformedHostingError(f"hosting request: unknown operation {f[0]}") from None
        return cls(op, f[1], f[2], f[3])


@dataclass(frozen=True)
class Statement:
    host: bytes
    discovery_key: bytes
    invite: bytes
    device: bytes
    state: State
    stored_bytes: int
    quota_bytes: int  # what this group may hold now (0: no limit)
    time_ms: int
    signature: bytes = b""

    def signable(self) -> bytes:
        return (CONTEXT + self.host + self.discovery_key + self.invite + self.device + bytes([self.state])
                + _U64.pack(self.stored_bytes) + _U64.pack(self.quota_bytes) + _U64.pack(self.time_ms))

    def signed(self, sign: object) -> Statement:
        return Statement(self.host, self.discovery_key, self.invite, self.device, self.state, self.stored_bytes,
                         self.quota_bytes, self.time_ms, sign(self.signable()))  # type: ignore[operator]

    def encode(self) -> bytes:
        data: bytes = msgpack.packb([self.host, self.discovery_key, self.invite, self.device, int(self.state),
                              self.stored_bytes, self.quota_bytes, self.time_ms, self.signature], use_bin_type=True)
        return data

    @classmethod
    def decode(cls, body: bytes) -> Statement:
        f = _fields(body, "host statement", (KEY_BYTES, KEY_BYTES, ID_BYTES, KEY_BYTES, int, int, int, int,
                                             SIGNATURE_BYTES))
        try:
            state = State(f[4])
        except ValueError:
            raise MalformedHostingError(f"host statement: unknown state {f[4]}") from None
        return cls(f[0], f[1], f[2], f[3], state, f[5], f[6], f[7], f[8])

    def verify(self, host: bytes, discovery_key: bytes, invite: bytes) -> Statement:
        """This statement, if it is signed by ``host`` and names exactly this group and invite;
        else :class:`MalformedHostingError`."""
        if (self.host, self.discovery_key, self.invite) != (host, discovery_key, invite):
            raise MalformedHostingError("the host's statement names another host, group or invite")
        try:
            nacl.signing.VerifyKey(host).verify(self.signable(), self.signature)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            raise MalformedHostingError("the host's statement is not signed by the host") from None
        return self

    def as_json(self) -> dict[str, object]:
        return {"state": self.state.text, "stored_bytes": self.stored_bytes, "quota_bytes": self.quota_bytes,
                "time": self.time_ms / 1000}
