"""A device's side of relaying: reservations it keeps, circuits it accepts, relayed dials.

Theory of operation
-------------------
:class:`RelayClient` keeps a reservation with up to ``want`` relays out of the candidates it is
given (configured relays, relays found on the DHT). Each reservation is one control connection
to the relay's port: ``RESERVE``, then a ping every ``ping_interval`` seconds (which also keeps
the NAT's mapping of that connection alive); a reservation whose relay stops answering, closes
it or breaks the protocol is dropped and its relay tried again after a backoff. While a
reservation stands, :meth:`relayed_addresses` includes ``tcp:RELAY:PORT~noise:RELAYKEY~relay:ME``
for the announcer (:attr:`on_change` is called whenever that list changes).

An ``INCOMING`` on a reservation makes the client open a second connection to the relay,
``ACCEPT`` the circuit (at most ``MAX_ACCEPTING`` at once: a relay cannot make us open
connections without bound), wait for ``SPLICED``, and then answer the dialer's own Noise
handshake over the raw circuit, expecting the dialer's key the relay named. The resulting
:class:`RelayedConnection` goes to ``on_connection`` (the node), like an accepted one.

:func:`dial_relayed` is the dialer's half: ``CONNECT`` to the relay, ``SPLICED``, then an
end-to-end Noise handshake that must authenticate the target's key, so a relay that splices
to anyone else fails the handshake. :func:`dial` tries a multi-address's direct alternatives
first and its relayed ones after, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .. import transport
from ..address import Address, MultiAddress, parse
from ..backoff import capped
from ..errors import AddressError, DialError, NetworkError
from ..identity import DeviceIdentity
from ..noise import NoiseSession
from ..transport import SecureConnection
from .wire import (
    ACCEPT,
    CONNECT,
    INCOMING,
    PING,
    PONG,
    REFUSED,
    RESERVE,
    RESERVED,
    SPLICED,
    Message,
    RelayError,
    RelayProtocolError,
    RelayRefusedError,
    decode,
    encode,
)

log = logging.getLogger(__name__)
MIN_PING_INTERVAL = 5.0  # seconds between keep-alives of a reservation, at least
MAX_ACCEPTING = 8  # incoming circuits being set up at once


class RelayedConnection(SecureConnection):
    """An end-to-end session carried through a relay (``relay_via``: the relay's key)."""

    relay_via: bytes = b""


async def _control_reply(conn: SecureConnection, timeout: float, expected: int) -> Message:
    async with asyncio.timeout(timeout):
        m = decode(await conn.recv())
    if m.kind == REFUSED:
        raise RelayRefusedError(f"relay refused: {m.reason or 'no reason given'}", m.code)
    if m.kind != expected:
        raise RelayProtocolError(f"relay answered {m.name}")
    return m


async def _end_to_end(ctrl: SecureConnection, identity: DeviceIdentity, *, initiator: bool, peer: bytes,
                      relay: Address, timeout: float) -> RelayedConnection:
    reader, writer = ctrl.detach()
    session = NoiseSession(identity, initiator=initiator, expected_peer_id=peer)
    try:
        await transport._handshake(reader, writer, session, timeout)
    except BaseException:
        writer.close()
        raise
    address = Address("tcp", relay.host, relay.port, peer_key=peer, relay_key=relay.peer_key)
    conn = RelayedConnection(reader, writer, session, address.format(), None)
    conn.relay_via = relay.peer_key or b""
    return conn


async def dial_relayed(address: Address, identity: DeviceIdentity, *,
                       timeout: float = transport.HANDSHAKE_TIMEOUT) -> RelayedConnection:
    """Reach ``address.peer_key`` through the relay of ``address`` (a relayed address)."""
    assert address.peer_key is not None
    hop = address.relay_hop()
    ctrl = await transport.dial_one(hop, identity, timeout=timeout)
    try:
        await ctrl.send(encode(Message(CONNECT, key=address.peer_key)))
        await _control_reply(ctrl, timeout + 1, SPLICED)  # the relay waits up to its accept timeout
        return await _end_to_end(ctrl, identity, initiator=True, peer=address.peer_key, relay=hop,
                                 timeout=timeout)
    except TimeoutError:
        ctrl.close()
        raise RelayError(f"relay {hop.format()} gave no circuit in time") from None
    except BaseException:
        ctrl.close()
        raise


async def dial(address: MultiAddress, identity: DeviceIdentity, *,
               timeout: float = transport.HANDSHAKE_TIMEOUT, bind_port: int | None = None) -> SecureConnection:
    """Like :func:`networker.transport.dial` (direct alternatives leave from ``bind_port`` where
    possible), with relayed alternatives tried after the direct ones."""
    alternatives = sorted(address.alternatives, key=lambda a: a.relayed)
    errors: list[NetworkError] = []
    for alt in alternatives:
        try:
            if alt.relayed:
                return await dial_relayed(alt, identity, timeout=timeout)
            return await transport.dial_one(alt, identity, timeout=timeout, bind_port=bind_port)
        except NetworkError as e:
            errors.append(e)
    if len(errors) == 1:
        raise errors[0]
    reasons = [(a.format(), str(e)) for a, e in zip(alternatives, errors, strict=True)]
    raise DialError("no alternative of the address could be reached: " + "; ".join(r for _, r in reasons),
                    reasons)


@dataclass
class Reservation:
    relay: Address  # the relay's direct address, with its key
    conn: SecureConnection
    ttl: int


class RelayClient:
    def __init__(self, identity: DeviceIdentity, on_connection: Callable[[SecureConnection], Awaitable[None]], *,
                 candidates: Callable[[], list[str]], want: int = 2, ping_interval: float = 20.0,
                 retry: tuple[float, float] = (1.0, 60.0), timeout: float = transport.HANDSHAKE_TIMEOUT,
                 on_change: Callable[[], None] | None = None) -> None:
        self.identity = identity
        self.on_connection = on_connection
        self.candidates = candidates
        self.want = want
        self.ping_interval = ping_interval
        self.retry = retry
        self.timeout = timeout
        self.on_change = on_change
        self.reservations: dict[bytes, Reservation] = {}
        self.circuits_accepted = 0
        self._keeping: dict[bytes, asyncio.Task[None]] = {}
        self._failures: dict[bytes, tuple[int, float]] = {}  # relay key -> (failures, retry at)
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._runner: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        self._runner = self._loop.create_task(self._run(), name="relay-client")

    def refresh(self) -> None:
        """Look at the candidates again now (new relays known)."""
        self._wake.set()

    def relayed_addresses(self) -> list[str]:
        me = self.identity.peer_id
        return [Address("tcp", r.relay.host, r.relay.port, peer_key=me, relay_key=r.relay.peer_key).format()
                for r in self.reservations.values()]

    def status(self) -> list[dict[str, object]]:
        return [{"relay": r.relay.format(), "address": a} for r, a in
                zip(self.reservations.values(), self.relayed_addresses(), strict=True)]

    async def close(self) -> None:
        self._closed = True
        tasks = [t for t in (self._runner, *self._keeping.values(), *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- keeping reservations ---------------------------------------------------------------

    def _relays(self) -> list[Address]:
        out: list[Address] = []
        for text in self.candidates():
            try:
                multi = parse(text)
            except AddressError:
                continue
            for alt in multi.alternatives:
                if (alt.transport == "tcp" and not alt.relayed and alt.peer_key is not None
                        and alt.peer_key != self.identity.peer_id and alt.peer_key not in {a.peer_key for a in out}):
                    out.append(alt)
        return out

    async def _run(self) -> None:
        while not self._closed:
            now = self._loop.time()
            for relay in self._relays():
                if len(self._keeping) >= self.want:
                    break
                key = relay.peer_key
                assert key is not None
                if key in self._keeping or self._failures.get(key, (0, 0.0))[1] > now:
                    continue
                self._keeping[key] = self._loop.create_task(self._keep(relay), name="relay-reservation")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.retry[0]):
                    await self._wake.wait()

    async def _keep(self, relay: Address) -> None:
        key = relay.peer_key
        assert key is not None
        conn: SecureConnection | None = None
        try:
            conn = await transport.dial_one(relay, self.identity, timeout=self.timeout)
            await conn.send(encode(Message(RESERVE)))
            m = await _control_reply(conn, self.timeout, RESERVED)
            self.reservations[key] = Reservation(relay, conn, m.ttl)
            self._failures.pop(key, None)
            log.info("relay reservation with %s", relay.format())
            self._changed()
            await self._serve(relay, conn, m.ttl)
        except (NetworkError, TimeoutError) as e:
            log.info("relay %s: %s", relay.format(), e or type(e).__name__)
        finally:
            if conn is not None:
                conn.close()
            self._keeping.pop(key, None)
            if self.reservations.pop(key, None) is not None:
                self._changed()
            if not self._closed:
                n = self._failures.get(key, (0, 0.0))[0] + 1
                delay = capped(self.retry[0], self.retry[1], n) * random.uniform(0.5, 1.0)
                self._failures[key] = (n, self._loop.time() + delay)
                self._wake.set()

    async def _serve(self, relay: Address, conn: SecureConnection, ttl: int) -> None:
        interval = min(self.ping_interval, max(ttl / 3, MIN_PING_INTERVAL))  # a relay's tiny ttl sets no pace
        answered = asyncio.Event()
        answered.set()

        async def ping() -> None:
            while True:
                await asyncio.sleep(interval)
                if not answered.is_set():
                    conn.close()
                    return
                answered.clear()
                await conn.send(encode(Message(PING)))

        pinger = self._loop.create_task(ping())
        receiving: asyncio.Task[bytes] | None = None
        try:
            while True:
                receiving = self._loop.create_task(conn.recv())
                done, _ = await asyncio.wait([pinger, receiving], return_when=asyncio.FIRST_COMPLETED)
                if receiving not in done:
                    raise RelayError("relay stopped answering pings")
                m = decode(receiving.result())
                if m.kind == PONG:
                    answered.set()
                elif m.kind == INCOMING:
                    if len(self._tasks) >= MAX_ACCEPTING:  # a relay cannot make us open connections unbounded
                        log.info("relay %s: too many circuits being accepted; ignored one", relay.format())
                        continue
                    task = self._loop.create_task(self._take(relay, m.circuit, m.key))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                else:
                    raise RelayProtocolError(f"{m.name} on a reservation")
        finally:
            pinger.cancel()
            if receiving is not None:
                receiving.cancel()
                with contextlib.suppress(BaseException):
                    await receiving

    async def _take(self, relay: Address, circuit: bytes, dialer: bytes) -> None:
        ctrl: SecureConnection | None = None
        try:
            ctrl = await transport.dial_one(relay, self.identity, timeout=self.timeout)
            await ctrl.send(encode(Message(ACCEPT, circuit=circuit)))
            await _control_reply(ctrl, self.timeout, SPLICED)
            conn = await _end_to_end(ctrl, self.identity, initiator=False, peer=dialer, relay=relay,
                                     timeout=self.timeout)
        except (NetworkError, TimeoutError) as e:
            if ctrl is not None:
                ctrl.close()
            log.info("relayed connection from %s via %s failed: %s", dialer.hex()[:16], relay.format(), e)
            return
        self.circuits_accepted += 1
        await self.on_connection(conn)

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:
                log.exception("relay address change callback failed")
