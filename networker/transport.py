"""Noise-encrypted connections over TCP and unix sockets: the thin asyncio shell around
:class:`networker.noise.NoiseSession`.

``dial`` tries an address's alternatives in order and returns the first
:class:`SecureConnection` whose handshake succeeds (and whose peer key matches the address).
``listen`` accepts connections, runs the handshake under a timeout, and hands each
authenticated connection to a callback; a client that sends garbage, stalls or breaks limits is
closed with a logged reason while the listener keeps serving others.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

from .address import Address, MultiAddress
from .errors import (
    ConnectionClosedError,
    DialError,
    HandshakeError,
    HandshakeTimeoutError,
    NetworkError,
    RemoteProtocolError,
)
from .identity import DeviceIdentity
from .noise import NoiseSession

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
_LEN = struct.Struct(">H")


class SecureConnection:
    """An authenticated, encrypted, message-oriented connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 session: NoiseSession, remote_address: str) -> None:
        self._reader = reader
        self._writer = writer
        self._session = session
        self._inbox: collections.deque[bytes] = collections.deque()
        self.remote_address = remote_address
        assert session.remote_peer_id is not None
        self.remote_peer_id: bytes = session.remote_peer_id
        self.handshake_hash = session.handshake_hash
        self.is_initiator = session.initiator
        self.bytes_sent = 0
        self.bytes_received = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"<SecureConnection {self.remote_address}>"

    async def send(self, message: bytes) -> None:
        if self._closed:
            raise ConnectionClosedError("connection closed")
        data = self._session.seal(message)  # no await between sealing and writing: nonces stay in order
        self._writer.write(data)
        self.bytes_sent += len(data)
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as e:
            raise ConnectionClosedError(f"connection lost: {e}") from None

    async def recv(self) -> bytes:
        """The next application message; raises ``ConnectionClosedError`` at EOF."""
        while not self._inbox:
            frame = await _read_frame(self._reader)
            self.bytes_received += len(frame) + 2
            self._inbox.extend(self._session.open(frame))
        return self._inbox.popleft()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._writer.close()

    async def wait_closed(self) -> None:
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    try:
        header = await reader.readexactly(2)
        (n,) = _LEN.unpack(header)
        if n == 0:
            raise RemoteProtocolError("empty frame")
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError:
        raise ConnectionClosedError("connection closed by peer") from None
    except (ConnectionError, OSError) as e:
        raise ConnectionClosedError(f"connection lost: {e}") from None


async def _handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     session: NoiseSession, timeout: float) -> None:
    try:
        async with asyncio.timeout(timeout):
            for msg in session.start():
                writer.write(_LEN.pack(len(msg)) + msg)
            while not session.complete:
                frame = await _read_frame(reader)
                for msg in session.receive_handshake(frame):
                    writer.write(_LEN.pack(len(msg)) + msg)
            await writer.drain()
    except TimeoutError:
        raise HandshakeTimeoutError(f"handshake not completed within {timeout}s") from None
    except (ConnectionClosedError, RemoteProtocolError) as e:
        raise HandshakeError(f"handshake failed: {e}") from None


def _peername(writer: asyncio.StreamWriter, fallback: str) -> str:
    name = writer.get_extra_info("peername")
    if isinstance(name, tuple) and len(name) >= 2:
        host = f"[{name[0]}]" if ":" in str(name[0]) else name[0]
        return f"tcp:{host}:{name[1]}"
    return fallback


async def dial_one(address: Address, identity: DeviceIdentity, *,
                   timeout: float = HANDSHAKE_TIMEOUT) -> SecureConnection:
    try:
        async with asyncio.timeout(timeout):
            if address.transport == "tcp":
                reader, writer = await asyncio.open_connection(address.host, address.port)
            else:
                reader, writer = await asyncio.open_unix_connection(address.path)
    except TimeoutError:
        raise NetworkError(f"connecting to {address.format()} timed out") from None
    except OSError as e:
        raise NetworkError(f"cannot connect to {address.format()}: {e.strerror or e}") from None
    session = NoiseSession(identity, initiator=True, expected_peer_id=address.peer_key)
    try:
        await _handshake(reader, writer, session, timeout)
    except BaseException:
        writer.close()
        raise
    return SecureConnection(reader, writer, session, address.format())


async def dial(address: MultiAddress, identity: DeviceIdentity, *,
               timeout: float = HANDSHAKE_TIMEOUT) -> SecureConnection:
    """Connect to the first alternative that answers and authenticates."""
    reasons: list[tuple[str, str]] = []
    errors: list[NetworkError] = []
    for alt in address.alternatives:
        try:
            return await dial_one(alt, identity, timeout=timeout)
        except NetworkError as e:
            reasons.append((alt.format(), str(e)))
            errors.append(e)
    if len(errors) == 1:
        raise errors[0]
    raise DialError("no alternative of the address could be reached: " +
                    "; ".join(r for _, r in reasons), reasons)


class Listener:
    def __init__(self, server: asyncio.AbstractServer, addresses: list[str], path: Path | None) -> None:
        self._server = server
        self.addresses = addresses
        self._path = path

    def close(self) -> None:
        self._server.close()
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()


async def listen(address: Address, identity: DeviceIdentity,
                 on_connection: Callable[[SecureConnection], Awaitable[None]], *,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT) -> Listener:
    """Accept connections on ``address``; each authenticated one goes to ``on_connection``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        where = _peername(writer, address.format())
        session = NoiseSession(identity, initiator=False)
        try:
            await _handshake(reader, writer, session, handshake_timeout)
        except (HandshakeError, NetworkError, OSError) as e:
            log.info("closed incoming connection from %s: %s", where, e)
            writer.close()
            return
        await on_connection(SecureConnection(reader, writer, session, where))

    if address.transport == "tcp":
        server = await asyncio.start_server(handle, address.host, address.port)
        addresses = []
        for sock in server.sockets:
            host, port = sock.getsockname()[:2]
            addresses.append(Address("tcp", host=host, port=port, peer_key=identity.peer_id).format())
        return Listener(server, addresses, None)
    path = Path(address.path)
    with contextlib.suppress(FileNotFoundError):
        if path.is_socket():
            path.unlink()  # a stale socket of a previous run
    old_umask = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(handle, str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return Listener(server, [Address("unix", path=str(path), peer_key=identity.peer_id).format()], path)
