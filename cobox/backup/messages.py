"""Every message of password recovery, and the record a backup peer stores, with their encoding.

A message is one msgpack array ``[type, field...]`` (``type`` from the table below). Decoding
is strict: unknown types, wrong field counts or types, lengths other than the exact ones,
points that are not canonical Ed25519 points of the prime-order subgroup, Argon2 limits out of
range, and any encoding but the canonical one raise :class:`DecodeError` (a remote error: end
the session). The protocol version travels in ``LoginHello`` and ``Register`` and is bound into
the transcript hash.

    1 Register       client -> server  the verifier to store (what ServerStore holds)
    2 LoginHello     client -> server  "I am <username>"
    3 LoginParams    server -> client  salt and Argon2id limits (real, or a decoy's)
    4 ClientCommit   client -> server  X = x*G + M
    5 ServerCommit   server -> client  Y = y*G + N, server confirmation tag
    6 ClientConfirm  client -> server  client confirmation tag
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import ClassVar

import msgpack
import nacl.bindings as sodium

from ..errors import RecoveryProtocolError
from .kdf import KEY_BYTES, POINT_BYTES, SALT_BYTES, VERSION, Argon2Params

MAX_USERNAME_BYTES = 255
MAX_MESSAGE_BYTES = 1024


class DecodeError(RecoveryProtocolError):
    """The other side sent bytes that are not a valid recovery message."""

    code = "bad_recovery_message"


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise DecodeError(what)


def _exact(v: object, what: str, n: int) -> bytes:
    _check(type(v) is bytes and len(v) == n, f"{what}: expected {n} bytes")
    return v  # type: ignore[return-value]


def _point(v: object, what: str) -> bytes:
    p = _exact(v, what, POINT_BYTES)
    _check(sodium.crypto_core_ed25519_is_valid_point(p), f"{what}: not a valid point")
    return p


def check_username(name: str) -> str:
    """A username is non-empty NFC text of at most 255 UTF-8 bytes without control characters."""
    if not isinstance(name, str) or not name or len(name.encode("utf-8")) > MAX_USERNAME_BYTES \
            or unicodedata.normalize("NFC", name) != name or any(unicodedata.category(c)[0] == "C" for c in name):
        raise ValueError("a username is 1-255 bytes of NFC text without control characters")
    return name


def _username(v: object) -> str:
    _check(type(v) is str, "username: expected text")
    try:
        return check_username(v)  # type: ignore[arg-type]
    except ValueError as e:
        raise DecodeError(str(e)) from None


def _params(ops: object, mem: object) -> Argon2Params:
    _check(type(ops) is int and type(mem) is int, "Argon2 limits: expected integers")
    try:
        return Argon2Params(ops, mem)  # type: ignore[arg-type]
    except ValueError as e:
        raise DecodeError(str(e)) from None


def _version(v: object) -> None:
    _check(v == VERSION and type(v) is int, f"unsupported recovery protocol version {v!r}")


@dataclass(frozen=True, slots=True)
class ServerStore:
    """What a backup peer keeps per account: public salt and limits, the blinding points, the
    shared value ``k`` and the verifier ``L``. It lets the server answer a login, not make one;
    it is a password hash all the same (see the caveat in ``recovery``), so keep it private."""

    username: str
    salt: bytes
    params: Argon2Params
    m: bytes
    n: bytes
    k: bytes
    l: bytes  # noqa: E741

    def fields(self) -> list:
        return [VERSION, self.username, self.salt, self.params.opslimit, self.params.memlimit,
                self.m, self.n, self.k, self.l]

    @classmethod
    def parse(cls, f: list) -> ServerStore:
        _version(f[0])
        return cls(_username(f[1]), _exact(f[2], "salt", SALT_BYTES), _params(f[3], f[4]),
                   _point(f[5], "M"), _point(f[6], "N"), _exact(f[7], "k", KEY_BYTES), _point(f[8], "L"))

    def encode(self) -> bytes:
        """The disk form (the same fields as ``Register``, without the type)."""
        return msgpack.packb(self.fields(), use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes) -> ServerStore:
        obj = _unpack(data)
        _check(type(obj) is list and len(obj) == 9, "record: wrong number of fields")
        rec = cls.parse(obj)
        _check(rec.encode() == data, "record: not in canonical form")
        return rec


@dataclass(frozen=True, slots=True)
class Register:
    type_id: ClassVar[int] = 1
    record: ServerStore

    def fields(self) -> list:
        return self.record.fields()

    @classmethod
    def parse(cls, f: list) -> Register:
        return cls(ServerStore.parse(f))


@dataclass(frozen=True, slots=True)
class LoginHello:
    type_id: ClassVar[int] = 2
    username: str

    def fields(self) -> list:
        return [VERSION, self.username]

    @classmethod
    def parse(cls, f: list) -> LoginHello:
        _version(f[0])
        return cls(_username(f[1]))


@dataclass(frozen=True, slots=True)
class LoginParams:
    type_id: ClassVar[int] = 3
    salt: bytes
    params: Argon2Params

    def fields(self) -> list:
        return [self.salt, self.params.opslimit, self.params.memlimit]

    @classmethod
    def parse(cls, f: list) -> LoginParams:
        return cls(_exact(f[0], "salt", SALT_BYTES), _params(f[1], f[2]))


@dataclass(frozen=True, slots=True)
class ClientCommit:
    type_id: ClassVar[int] = 4
    x: bytes

    def fields(self) -> list:
        return [self.x]

    @classmethod
    def parse(cls, f: list) -> ClientCommit:
        return cls(_point(f[0], "X"))


@dataclass(frozen=True, slots=True)
class ServerCommit:
    type_id: ClassVar[int] = 5
    y: bytes
    confirm: bytes

    def fields(self) -> list:
        return [self.y, self.confirm]

    @classmethod
    def parse(cls, f: list) -> ServerCommit:
        return cls(_point(f[0], "Y"), _exact(f[1], "server confirmation", KEY_BYTES))


@dataclass(frozen=True, slots=True)
class ClientConfirm:
    type_id: ClassVar[int] = 6
    confirm: bytes

    def fields(self) -> list:
        return [self.confirm]

    @classmethod
    def parse(cls, f: list) -> ClientConfirm:
        return cls(_exact(f[0], "client confirmation", KEY_BYTES))


Message = Register | LoginHello | LoginParams | ClientCommit | ServerCommit | ClientConfirm

_TYPES: dict[int, type] = {t.type_id: t for t in (Register, LoginHello, LoginParams, ClientCommit,
                                                   ServerCommit, ClientConfirm)}
_FIELD_COUNT = {Register: 9, LoginHello: 2, LoginParams: 3, ClientCommit: 1, ServerCommit: 2, ClientConfirm: 1}


def _unpack(data: bytes) -> object:
    _check(isinstance(data, bytes) and len(data) <= MAX_MESSAGE_BYTES, "message: too long")
    try:
        return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True, max_bin_len=64,
                               max_str_len=MAX_USERNAME_BYTES, max_array_len=16, max_map_len=0,
                               max_ext_len=0)
    except Exception as e:  # msgpack raises a zoo of types for bad input
        raise DecodeError(f"undecodable message: {type(e).__name__}") from None


def encode(msg: Message) -> bytes:
    return msgpack.packb([msg.type_id, *msg.fields()], use_bin_type=True)


def decode(data: bytes) -> Message:
    """Parse one message; raise :class:`DecodeError` on anything malformed or non-canonical."""
    obj = _unpack(data)
    _check(type(obj) is list and len(obj) >= 1, "message: expected [type, ...]")
    cls = _TYPES.get(obj[0]) if type(obj[0]) is int else None  # type: ignore[index]
    _check(cls is not None, f"unknown message type {obj[0]!r}")  # type: ignore[index]
    fields = obj[1:]  # type: ignore[index]
    _check(len(fields) == _FIELD_COUNT[cls], f"{cls.__name__}: wrong number of fields")  # type: ignore[index, union-attr]
    msg = cls.parse(fields)  # type: ignore[union-attr]
    _check(encode(msg) == data, f"{cls.__name__}: not in canonical form")  # type: ignore[union-attr]
    return msg
