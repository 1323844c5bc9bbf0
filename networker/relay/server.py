"""The relay service: reservations for devices behind NAT, and circuits spliced below Noise.

Theory of operation
-------------------
The relay listens on its own TCP port (``[relay] port``) with the ordinary Noise handshake
(:func:`networker.transport.listen`), so it knows every client's peer id. The first control
message (:mod:`networker.relay.wire`) says what a connection is for:

- ``RESERVE``: the connection becomes the device's reservation; the relay answers ``RESERVED``
  with a ttl and then only answers pings, closing the reservation when none came for ttl
  seconds;
- ``CONNECT target``: a dialer wants a circuit (:class:`RelayState` decides); the relay sends
  ``INCOMING`` on the target's reservation and waits for the target's ``ACCEPT``;
- ``ACCEPT circuit``: the target's connection for that circuit;
- ``OBSERVE``: the relay answers the address it sees the connection come from (hole punching,
  :mod:`networker.holepunch`).

When the target accepted, the relay sends ``SPLICED`` to the target and then to the dialer,
stops using both Noise sessions (:meth:`SecureConnection.detach`) and copies raw bytes both
ways. What it copies is the two devices' own Noise handshake and transport messages: the relay
cannot read them, and a byte it changed makes the receiver's decryption fail and the
connection close. Forwarding obeys a per-circuit and a total byte rate
(:class:`networker.relay.state.ByteBucket`), except for circuits between two ``exempt``
devices (a backup peer relaying for its own group's members). Every circuit, exempt or not,
also obeys this device's own bandwidth limits (``rates``, :mod:`networker.ratelimit`): what
comes from one side is received from it and sent to the other, on the lanes of the two peer ids
(a side inside the local network skips the device-wide limits unless ``limit_lan``). A control
message that does not decode, or comes out of turn, closes that connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from .. import transport
from ..address import parse
from ..errors import NetworkError
from ..identity import DeviceIdentity
from ..limits import LogThrottle
from ..ratelimit import Lane, RateLimiter
from ..transport import SecureConnection
from .kind import is_behind_nat_ip
from .state import ByteBucket, Circuit, RelayLimits, RelayState
from .wire import (
    ACCEPT,
    BAD_REQUEST,
    CONNECT,
    INCOMING,
    OBSERVE,
    OBSERVED,
    PING,
    PONG,
    REFUSED,
    RESERVE,
    RESERVED,
    SPLICED,
    TIMED_OUT,
    Message,
    RelayProtocolError,
    decode,
    encode,
)

log = logging.getLogger(__name__)
FIRST_MESSAGE_TIMEOUT = 10.0
CHUNK = 65536


class RelayServer:
    def __init__(self, identity: DeviceIdentity, limits: RelayLimits | None = None, *,
                 allowed: Callable[[bytes], bool] | None = None,
                 exempt: Callable[[bytes, bytes], bool] | None = None, rates: RateLimiter | None = None) -> None:
        """``allowed(peer_id)``: whether a device may reserve or dial (default: anyone);
        ``rates``: this device's bandwidth limits (the node's), which every circuit obeys;
        ``exempt(dialer, target)``: whether the two are members of one and the same group of the
        relay's; their circuit goes without circuit and rate limits (circuits being set up stay
        bounded)."""
        self.identity = identity
        self.limits = limits or RelayLimits()
        self.state: RelayState[SecureConnection] = RelayState(self.limits)
        self.allowed = allowed
        self.exempt = exempt
        self.rates = rates
        self.addresses: list[str] = []
        self.bytes_forwarded = 0
        self._loop = asyncio.get_running_loop()
        self._total = ByteBucket(self.limits.total_bytes_per_second, self._loop.time())
        self._accepts: dict[bytes, asyncio.Future[SecureConnection]] = {}
        self._listeners: list[transport.Listener] = []
        self.throttle = LogThrottle(log, clock=self._loop.time)

    async def listen(self, address: str) -> list[str]:
        listener = await transport.listen(parse(address).alternatives[0], self.identity, self._accepted)
        self._listeners.append(listener)
        self.addresses += listener.addresses
        return list(listener.addresses)

    def status(self) -> dict[str, object]:
        return {"addresses": self.addresses, "reservations": len(self.state.reservations),
                "circuits": len(self.state.circuits), "circuits_total": self.state.circuits_total,
                "refused": self.state.refused_total, "bytes_forwarded": self.bytes_forwarded}

    async def close(self) -> None:
        for listener in self._listeners:
            listener.close()
        for listener in self._listeners:
            await listener.wait_closed()

    # -- connections ------------------------------------------------------------------------

    async def _accepted(self, conn: SecureConnection) -> None:
        try:
            async with asyncio.timeout(FIRST_MESSAGE_TIMEOUT):
                first = decode(await conn.recv())
            if self.allowed is not None and not self.allowed(conn.remote_peer_id):
                await _refuse(conn, BAD_REQUEST, "not allowed to use this relay")
            elif first.kind == RESERVE:
                await self._reservation(conn)
            elif first.kind == CONNECT:
                await self._dial(conn, first.key)
            elif first.kind == OBSERVE:
                await self._observe(conn)
            elif first.kind == ACCEPT:
                self._accept(conn, first.circuit)
                return  # the dialer's task owns the connection now
            else:
                raise RelayProtocolError(f"{first.name} as a first message")
        except (NetworkError, TimeoutError) as e:
            log.debug("relay connection from %s ended: %s", conn.remote_address, e)
        conn.close()

    async def _observe(self, conn: SecureConnection) -> None:
        where = parse(conn.remote_address).alternatives[0]
        if conn.remote_host is None or where.transport != "tcp":
            await _refuse(conn, BAD_REQUEST, "not a tcp connection")
            return
        await conn.send(encode(Message(OBSERVED, host=conn.remote_host, port=where.port)))

    async def _reservation(self, conn: SecureConnection) -> None:
        pid = conn.remote_peer_id
        old, refusal = self.state.reserve(pid, conn)
        if refusal is not None:
            await _refuse(conn, refusal.code, refusal.reason)
            return
        if old is not None:
            old.close()
        try:
            await conn.send(encode(Message(RESERVED, ttl=self.limits.reservation_ttl)))
            while True:
                async with asyncio.timeout(self.limits.reservation_ttl):
                    m = decode(await conn.recv())
                if m.kind != PING:
                    raise RelayProtocolError(f"{m.name} on a reservation")
                await conn.send(encode(Message(PONG)))
        finally:
            self.state.unreserve(pid, conn)

    async def _dial(self, conn: SecureConnection, target: bytes) -> None:
        free = self.exempt is not None and self.exempt(conn.remote_peer_id, target)
        circuit, refusal = self.state.open_circuit(conn.remote_peer_id, target, self._loop.time(), exempt=free)
        if refusal is not None or circuit is None:
            assert refusal is not None
            await _refuse(conn, refusal.code, refusal.reason)
            return
        accepted: asyncio.Future[SecureConnection] = self._loop.create_future()
        self._accepts[circuit.id] = accepted
        other: SecureConnection | None = None
        try:
            control = self.state.reservations[target]
            await control.send(encode(Message(INCOMING, circuit=circuit.id, key=conn.remote_peer_id)))
            try:
                async with asyncio.timeout(self.limits.accept_timeout):
                    other = await accepted
            except TimeoutError:
                await _refuse(conn, TIMED_OUT, "the target did not accept in time")
                return
            await other.send(encode(Message(SPLICED)))
            await conn.send(encode(Message(SPLICED)))
            self.state.spliced(circuit)
            await self._splice(circuit, conn, other)
        finally:
            self._accepts.pop(circuit.id, None)
            self.state.close_circuit(circuit)
            if other is not None:
                other.close()

    def _accept(self, conn: SecureConnection, circuit_id: bytes) -> None:
        circuit = self.state.accept(circuit_id, conn.remote_peer_id, conn, self._loop.time())
        waiting = self._accepts.get(circuit_id)
        if circuit is None or waiting is None or waiting.done():
            self.throttle.note("accept", logging.INFO, "a relay ACCEPT for no circuit waiting for %s",
                               conn.remote_peer_id.hex()[:16])
            conn.close()
            return
        waiting.set_result(conn)

    # -- splicing ---------------------------------------------------------------------------

    def forward(self, data: bytes, upstream: bool) -> bytes:
        """What goes on to the other side (``upstream``: from the dialer to the target); the
        identity here, a place for tests to look at (or tamper with) what a relay sees."""
        return data

    async def _splice(self, circuit: Circuit[SecureConnection], dialer: SecureConnection,
                      target: SecureConnection) -> None:
        d_reader, d_writer = dialer.detach()
        t_reader, t_writer = target.detach()
        bucket = ByteBucket(0 if circuit.exempt else self.limits.circuit_bytes_per_second, self._loop.time())
        lanes: tuple[Lane | None, Lane | None] = (None, None)
        if self.rates is not None:
            lanes = (self.rates.lane(dialer.remote_peer_id, is_behind_nat_ip(dialer.remote_host)),
                     self.rates.lane(target.remote_peer_id, is_behind_nat_ip(target.remote_host)))
        pumps = [self._loop.create_task(self._pump(circuit, d_reader, t_writer, bucket, True, lanes)),
                 self._loop.create_task(self._pump(circuit, t_reader, d_writer, bucket, False, (lanes[1], lanes[0])))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for p in pumps:
                p.cancel()
            d_writer.close()
            t_writer.close()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(self, circuit: Circuit[SecureConnection], reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, bucket: ByteBucket, upstream: bool,
                    lanes: tuple[Lane | None, Lane | None]) -> None:
        """Copy from ``reader`` (the side of ``lanes[0]``) to ``writer`` (that of ``lanes[1]``)."""
        came_from, going_to = lanes
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(CHUNK):
                now = self._loop.time()
                wait = bucket.take(len(data), now)
                if not circuit.exempt:
                    wait = max(wait, self._total.take(len(data), now))
                if came_from is not None and going_to is not None:
                    wait = max(wait, came_from.received(len(data), now), going_to.sending(len(data), now))
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(self.forward(data, upstream))
                circuit.bytes_forwarded += len(data)
                self.bytes_forwarded += len(data)
                await writer.drain()


async def _refuse(conn: SecureConnection, code: int, reason: str) -> None:
    with contextlib.suppress(NetworkError):
        await conn.send(encode(Message(REFUSED, code=code, reason=reason)))
