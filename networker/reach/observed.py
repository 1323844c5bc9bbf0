"""The ``observed`` service: a peer tells us the address it sees for us, and dials it back.

Theory of operation
-------------------
Two calls over an ordinary cobox connection (``Peer.call("observed", body)``), each body a
msgpack array:

- ``[1]`` WHOAMI -> ``[ip, port, dht_port]``: the remote end of this connection as the server
  sees it (after every NAT on the way), and the UDP port of the server's DHT node (0: none), so
  a connected peer can serve as a DHT bootstrap. A server that cannot tell (a unix socket)
  refuses the call.
- ``[2, port]`` DIALBACK -> ``[ok, reason]``: the server dials ``tcp:IP:port~noise:CALLER``
  where ``IP`` is the address it sees the caller at (never an IP the caller names: the service
  cannot be used to make a server connect to somebody else) and reports whether a Noise
  handshake with the caller's key completed. It dials from a fresh port and a throwaway
  identity, so the caller's node takes the probe as a passing stranger (not a second connection
  that would replace ours), and a NAT that lets in only replies to our own traffic does not
  pass it. A server does at most :data:`MAX_DIALBACKS` at once, and for one caller IP at most
  :data:`DIALBACK_BURST` in any :data:`DIALBACK_WINDOW` seconds (several devices behind one
  NAT share an IP; a caller can only ever make the server dial that IP).

Decoders are strict: anything else raises :class:`MalformedObservedError` (a
:class:`RemoteProtocolError`); the server answers such a call with a refusal.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgpack

from ..address import Address, parse
from ..errors import AddressError, NetworkError, RemoteProtocolError
from ..identity import DeviceIdentity
from ..peer import Peer, ServiceError
from ..transport import SecureConnection, dial_one
from .scope import ip_kind, normalize_host

SERVICE = "observed"
WHOAMI, DIALBACK = 1, 2
MAX_BODY = 300
MAX_DIALBACKS = 4
DIALBACK_BURST = 4
DIALBACK_WINDOW = 60.0
DIALBACK_TIMEOUT = 5.0
MAX_REMEMBERED = 1024


class MalformedObservedError(RemoteProtocolError):
    """A message of the ``observed`` service from another device is not well formed."""

    code = "malformed_observed"


def _unpack(body: bytes, what: str) -> list[object]:
    if type(body) is not bytes or len(body) > MAX_BODY:
        raise MalformedObservedError(f"{what}: not bytes or too long")
    try:
        obj = msgpack.unpackb(body, raw=False, max_str_len=200, max_bin_len=0, max_array_len=4,
                              max_map_len=0, max_ext_len=0, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise MalformedObservedError(f"{what}: not msgpack ({e})") from None
    if type(obj) is not list or not obj:
        raise MalformedObservedError(f"{what}: expected an array")
    return obj


def _port(value: object, what: str) -> int:
    if type(value) is not int or not 0 < value < 65536:
        raise MalformedObservedError(f"{what}: bad port")
    return value


@dataclass(frozen=True, slots=True)
class Request:
    op: int
    port: int = 0

    def encode(self) -> bytes:
        return msgpack.packb([self.op] if self.op == WHOAMI else [self.op, self.port])

    @classmethod
    def decode(cls, body: bytes) -> Request:
        obj = _unpack(body, "observed request")
        op = obj[0]
        if type(op) is not int:  # True == 1: a bool is no operation
            raise MalformedObservedError("observed request: operation is not an integer")
        if len(obj) == 1 and op == WHOAMI:
            return cls(WHOAMI)
        if len(obj) == 2 and op == DIALBACK:
            return cls(DIALBACK, _port(obj[1], "dial-back request"))
        raise MalformedObservedError("observed request: unknown operation")


def encode_seen(ip: str, port: int, dht_port: int = 0) -> bytes:
    return msgpack.packb([ip, port, dht_port])


def decode_seen(body: bytes) -> tuple[str, int, int]:
    """``(ip, port, dht_port)``; ``dht_port`` 0 when the peer runs no DHT node."""
    obj = _unpack(body, "observed address")
    if len(obj) != 3 or type(obj[0]) is not str:
        raise MalformedObservedError("observed address: expected [ip, port, dht port]")
    ip = normalize_host(obj[0])
    if ip_kind(ip) in ("name", "unusable"):
        raise MalformedObservedError("observed address: not a usable IP")
    dht_port = 0 if obj[2] == 0 and type(obj[2]) is int else _port(obj[2], "observed DHT port")
    return ip, _port(obj[1], "observed address"), dht_port


def encode_result(ok: bool, reason: str) -> bytes:
    return msgpack.packb([ok, reason[:160]])


def decode_result(body: bytes) -> tuple[bool, str]:
    obj = _unpack(body, "dial-back result")
    if len(obj) != 2 or type(obj[0]) is not bool or type(obj[1]) is not str:
        raise MalformedObservedError("dial-back result: expected [ok, reason]")
    return obj[0], obj[1]


def remote_endpoint(peer: Peer) -> tuple[str, int] | None:
    """The (ip, port) the connection to ``peer`` comes from, as this end sees it."""
    if not isinstance(peer.conn, SecureConnection):
        return None
    text = peer.conn.remote_address
    try:
        alt = parse(text).alternatives[0]
    except (AddressError, IndexError):
        return None
    if alt.transport != "tcp" or alt.relayed or getattr(peer.conn, "relay_via", b"") \
            or ip_kind(alt.host) in ("name", "unusable"):
        return None  # a relayed connection comes from the relay: nothing to observe of the peer
    return normalize_host(alt.host), alt.port


Dialer = Callable[[Address, DeviceIdentity, float], Awaitable[SecureConnection]]


async def _dial(address: Address, identity: DeviceIdentity, timeout: float) -> SecureConnection:
    return await dial_one(address, identity, timeout=timeout)


class ObservedServer:
    """The server side (module docstring); ``dial(address, identity, timeout)`` returns an
    authenticated connection or raises :class:`NetworkError`."""

    def __init__(self, dial: Dialer = _dial, *, dht_port: Callable[[], int] = lambda: 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._dial = dial
        self._dht_port = dht_port
        self._clock = clock
        self._identity = DeviceIdentity.generate()  # dial-backs are not us: see the module docstring
        self._slots = asyncio.Semaphore(MAX_DIALBACKS)
        self._recent: OrderedDict[str, list[float]] = OrderedDict()  # caller IP -> times of its dial-backs
        self.dialbacks = 0
        self.refused = 0

    async def handle(self, peer: Peer, body: bytes) -> bytes:
        try:
            request = Request.decode(body)
        except MalformedObservedError as e:
            raise ServiceError(str(e)) from None
        seen = remote_endpoint(peer)
        if seen is None:
            raise ServiceError("no IP address seen for this connection")
        if request.op == WHOAMI:
            return encode_seen(*seen, self._dht_port())
        return await self._dialback(peer, seen[0], request.port)

    async def _dialback(self, peer: Peer, ip: str, port: int) -> bytes:
        now = self._clock()
        recent = [t for t in self._recent.get(ip, []) if now - t < DIALBACK_WINDOW]
        if len(recent) >= DIALBACK_BURST:
            self.refused += 1
            raise ServiceError("dial-back asked too often")
        self._recent[ip] = [*recent, now]
        self._recent.move_to_end(ip)
        while len(self._recent) > MAX_REMEMBERED:
            self._recent.popitem(last=False)
        async with self._slots:
            self.dialbacks += 1
            target = Address("tcp", host=ip, port=port, peer_key=peer.remote_peer_id)
            try:
                conn = await self._dial(target, self._identity, DIALBACK_TIMEOUT)
            except (NetworkError, OSError, TimeoutError) as e:
                return encode_result(False, str(e))
            conn.close()
            return encode_result(True, "")


async def ask_whoami(peer: Peer, timeout: float = 10.0) -> tuple[str, int, int]:
    """What ``peer`` sees of us; raises :class:`NetworkError` (``MalformedObservedError`` for a
    bad answer, ``ServiceError`` for a refusal) or ``TimeoutError``."""
    return decode_seen(await peer.call(SERVICE, Request(WHOAMI).encode(), timeout=timeout))


async def ask_dialback(peer: Peer, port: int, timeout: float = DIALBACK_TIMEOUT + 10.0) -> tuple[bool, str]:
    return decode_result(await peer.call(SERVICE, Request(DIALBACK, port).encode(), timeout=timeout))
