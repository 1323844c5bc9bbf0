"""The relay's control messages: one Noise application message each, on the session between a
device and the relay (never the end-to-end session, which the relay only forwards).

Each message is a type byte and fixed fields::

    RESERVE                              device -> relay   keep a reservation on this connection
    RESERVED   ttl:u32                   relay -> device   granted; ping at least every ttl/2 s
    REFUSED    code:u8 reason:utf-8      relay -> device   (<= 200 bytes of reason)
    CONNECT    target:32                 dialer -> relay   splice me to target
    INCOMING   circuit:16 dialer:32      relay -> target   (on its reservation) someone dials you
    ACCEPT     circuit:16                target -> relay   (on a new connection) take that circuit
    SPLICED                              relay -> both     the next bytes are the other device's
    PING / PONG                          either way        keep the reservation and its NAT mapping
    OBSERVE                              device -> relay   which address do you see me at?
    OBSERVED   port:u16 ip:ascii         relay -> device   (canonical IPv4 or IPv6 text)

:func:`decode` is strict (exact lengths, known types, UTF-8 reasons) and raises only
:class:`RelayProtocolError`.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from ..errors import NetworkError, RemoteProtocolError

RESERVE, RESERVED, REFUSED, CONNECT, INCOMING, ACCEPT, SPLICED, PING, PONG, OBSERVE, OBSERVED = range(1, 12)
KEY_BYTES = 32
CIRCUIT_BYTES = 16
MAX_REASON = 200
MAX_MESSAGE = 1 + 1 + MAX_REASON
_NAMES = {RESERVE: "RESERVE", RESERVED: "RESERVED", REFUSED: "REFUSED", CONNECT: "CONNECT",
          INCOMING: "INCOMING", ACCEPT: "ACCEPT", SPLICED: "SPLICED", PING: "PING", PONG: "PONG",
          OBSERVE: "OBSERVE", OBSERVED: "OBSERVED"}
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")

# REFUSED codes
NO_RESERVATION, RELAY_FULL, NOT_ALLOWED, TIMED_OUT, BAD_REQUEST = range(1, 6)


class RelayError(NetworkError):
    """A relay could not give us a reservation or a circuit."""


class RelayRefusedError(RelayError):
    """The relay said no (no reservation of the target, limits, ...)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class RelayProtocolError(RemoteProtocolError):
    """A malformed relay control message."""


@dataclass(frozen=True, slots=True)
class Message:
    kind: int
    key: bytes = b""  # CONNECT: target, INCOMING: dialer
    circuit: bytes = b""  # INCOMING, ACCEPT
    ttl: int = 0  # RESERVED
    code: int = 0  # REFUSED
    reason: str = ""  # REFUSED
    host: str = ""  # OBSERVED
    port: int = 0  # OBSERVED

    @property
    def name(self) -> str:
        return _NAMES[self.kind]


def encode(m: Message) -> bytes:
    k = bytes([m.kind])
    if m.kind in (RESERVE, SPLICED, PING, PONG, OBSERVE):
        return k
    if m.kind == OBSERVED:
        return k + _U16.pack(m.port) + m.host.encode()
    if m.kind == RESERVED:
        return k + _U32.pack(m.ttl)
    if m.kind == REFUSED:
        return k + bytes([m.code]) + m.reason.encode()[:MAX_REASON].decode(errors="ignore").encode()
    if m.kind == CONNECT:
        return k + _exact(m.key, KEY_BYTES)
    if m.kind == INCOMING:
        return k + _exact(m.circuit, CIRCUIT_BYTES) + _exact(m.key, KEY_BYTES)
    if m.kind == ACCEPT:
        return k + _exact(m.circuit, CIRCUIT_BYTES)
    raise ValueError(f"unknown relay message type {m.kind}")


def _exact(value: bytes, n: int) -> bytes:
    if len(value) != n:
        raise ValueError(f"expected {n} bytes, got {len(value)}")
    return value


def decode(data: bytes) -> Message:
    if not isinstance(data, bytes | bytearray) or not data:
        raise RelayProtocolError("empty relay message")
    if len(data) > MAX_MESSAGE:
        raise RelayProtocolError(f"relay message of {len(data)} bytes (at most {MAX_MESSAGE})")
    kind, body = data[0], bytes(data[1:])
    if kind in (RESERVE, SPLICED, PING, PONG, OBSERVE):
        _length(kind, body, 0)
        return Message(kind)
    if kind == OBSERVED:
        if not 2 < len(body) <= 2 + 45:
            raise RelayProtocolError(f"OBSERVED of {len(body)} bytes")
        try:
            host = body[2:].decode("ascii")
            ip = ipaddress.ip_address(host)
        except (UnicodeDecodeError, ValueError):
            raise RelayProtocolError("OBSERVED without an IP address") from None
        if str(ip) != host:
            raise RelayProtocolError("OBSERVED with an IP address in a non-canonical form")
        return Message(kind, host=host, port=_U16.unpack(body[:2])[0])
    if kind == RESERVED:
        _length(kind, body, 4)
        return Message(kind, ttl=_U32.unpack(body)[0])
    if kind == REFUSED:
        if not body:
            raise RelayProtocolError("REFUSED without a code")
        try:
            reason = body[1:].decode()
        except UnicodeDecodeError:
            raise RelayProtocolError("REFUSED with a reason that is not UTF-8") from None
        return Message(kind, code=body[0], reason=reason)
    if kind == CONNECT:
        _length(kind, body, KEY_BYTES)
        return Message(kind, key=body)
    if kind == INCOMING:
        _length(kind, body, CIRCUIT_BYTES + KEY_BYTES)
        return Message(kind, circuit=body[:CIRCUIT_BYTES], key=body[CIRCUIT_BYTES:])
    if kind == ACCEPT:
        _length(kind, body, CIRCUIT_BYTES)
        return Message(kind, circuit=body)
    raise RelayProtocolError(f"unknown relay message type {kind}")


def _length(kind: int, body: bytes, n: int) -> None:
    if len(body) != n:
        raise RelayProtocolError(f"{_NAMES[kind]} of {len(body)} bytes (expected {n})")
