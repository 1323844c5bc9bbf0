"""Noise-encrypted connections over TCP and unix sockets: the thin asyncio shell around
:class:`networker.noise.NoiseSession`.

``dial`` tries an address's alternatives in order and returns the first
:class:`SecureConnection` whose handshake succeeds (and whose peer key matches the address).

``listen`` runs its own accept loop (not ``asyncio.start_server``, which can neither bound nor
pause accepting and logs a traceback per failed accept):

- a connection from an IP the caller refuses (the penalty box) is closed at once, unread;
- every other one becomes a *pending handshake* in :class:`networker.limits.PendingHandshakes`
  (bounded in total and per IP; the oldest is pushed out when full) and gets
  ``handshake_timeout`` seconds to finish the Noise handshake;
- a handshake of garbage (not a stall, not a close) is reported to ``on_bad_handshake`` so the
  caller can refuse a remote that keeps doing it;
- when the process is out of file descriptors (``EMFILE``/``ENFILE``) or kernel memory, the
  loop sheds the oldest pending handshake and pauses accepting, backing off from 50 ms to 2 s;
- each kind of event above is logged through a :class:`networker.limits.LogThrottle`: one line
  per minute with a count, whatever the rate of connections. Per-connection detail is at
  debug level.

Authenticated connections go to the callback; what they may then do is the node's business.

Bandwidth limits (:mod:`networker.ratelimit`): a connection given a ``lane`` (the node gives
every peer connection one) waits what the lane's buckets say before it seals and writes a
message, and after it read a frame before it reads the next (the remote then meets TCP's
back-pressure). Relayed connections are connections like the others, so they obey too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import itertools
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

from .address import Address, MultiAddress
from .errors import (
    ConnectionClosedError,
    DialError,
    HandshakeClosedError,
    HandshakeError,
    HandshakeTimeoutError,
    NetworkError,
    RemoteProtocolError,
)
from .framing import HEADER_BYTES, encode_frame, frame_length
from .identity import DeviceIdentity
from .inbound import Inbound
from .limits import LogThrottle, PendingHandshakes, ip_key
from .noise import NoiseSession
from .ratelimit import Lane
from .reach.scope import normalize_host
from .sockets import open_tcp, tcp_sockets, unix_socket

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
MAX_PENDING = 64
MAX_PENDING_PER_IP = 8
ACCEPT_BACKOFF = (0.05, 2.0)  # first and longest pause of accepting when out of resources
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_FRAME_OVERHEAD = HEADER_BYTES + 16  # a frame's length header and its AEAD tag
_ACCEPT_TRANSIENT = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR, errno.EAGAIN}


class SecureConnection:
    """An authenticated, encrypted, message-oriented connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 session: NoiseSession, remote_address: str, remote_host: str | None = None) -> None:
        self._reader = reader
        self._writer = writer
        streams = writer.transport.get_protocol()
        if not isinstance(streams, asyncio.StreamReaderProtocol):  # None: the connection is gone already
            raise ConnectionClosedError("connection closed before it was established")
        self._inbound = Inbound(writer.transport, streams, reader)
        self._session = session
        self._inbox: collections.deque[bytes] = collections.deque()
        self.remote_address = remote_address
        self.remote_host = remote_host  # the IP (or host name dialed); None for unix sockets
        assert session.remote_peer_id is not None
        self.remote_peer_id: bytes = session.remote_peer_id
        self.handshake_hash = session.handshake_hash
        self.is_initiator = session.initiator
        self.bytes_sent = 0
        self.bytes_received = 0
        self.local_address: str | None = None  # tcp:IP:PORT this end of the connection has, if TCP
        self.lane: Lane | None = None  # the bandwidth limits this connection obeys (None: none)
        self._closed = False

    def __repr__(self) -> str:
        return f"<SecureConnection {self.remote_address}>"

    async def send(self, message: bytes) -> None:
        if self._closed:
            raise ConnectionClosedError("connection closed")
        if self.lane is not None:
            wait = self.lane.sending(len(message) + _FRAME_OVERHEAD, asyncio.get_running_loop().time())
            if wait > 0:
                await asyncio.sleep(wait)
            if self._closed:
                raise ConnectionClosedError("connection closed")
        data = self._session.seal(message)  # no await between sealing and writing: nonces stay in order
        self._writer.write(data)
        self.bytes_sent += len(data)
        try:
            await self._inbound.drain()
        except (ConnectionError, OSError) as e:
            raise ConnectionClosedError(f"connection lost: {e}") from None

    async def recv(self) -> bytes:
        """The next application message (a ``bytearray`` when the session assembled it from
        its frames: bytes-like, not hashable); raises ``ConnectionClosedError`` at EOF."""
        while not self._inbox:
            try:
                frame = await self._inbound.frame()
            except (ConnectionError, OSError) as e:
                raise ConnectionClosedError(str(e)) from None
            self.bytes_received += len(frame) + 2
            self._inbox.extend(self._session.open(frame))  # the frame is a view: opened before any await
            if self.lane is not None:
                wait = self.lane.received(len(frame) + 2, asyncio.get_running_loop().time())
                if wait > 0:
                    await asyncio.sleep(wait)
        return self._inbox.popleft()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._writer.close()

    def detach(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Stop using this Noise session and hand over the raw stream (a relay circuit after its
        last control message); unread messages of the session are a protocol error."""
        if self._closed:
            raise ConnectionClosedError("connection closed")
        if self._inbox:
            raise RemoteProtocolError("messages after the last control message")
        self._closed = True
        self._inbound.give_back()
        return self._reader, self._writer

    async def wait_closed(self) -> None:
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readexactly(frame_length(await reader.readexactly(HEADER_BYTES)))
    except asyncio.IncompleteReadError:
        raise ConnectionClosedError("connection closed by peer") from None
    except (ConnectionError, OSError) as e:
        raise ConnectionClosedError(f"connection lost: {e}") from None


async def _handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     session: NoiseSession, timeout: float) -> None:
    try:
        async with asyncio.timeout(timeout):
            for msg in session.start():
                writer.write(encode_frame(msg))
            while not session.complete:
                frame = await _read_frame(reader)
                for msg in session.receive_handshake(frame):
                    writer.write(encode_frame(msg))
            await writer.drain()
    except TimeoutError:
        raise HandshakeTimeoutError(f"handshake not completed within {timeout}s") from None
    except ConnectionClosedError as e:
        raise HandshakeClosedError(f"handshake failed: {e}") from None
    except RemoteProtocolError as e:
        raise HandshakeError(f"handshake failed: {e}") from None
    except (ConnectionError, OSError) as e:  # from drain
        raise HandshakeClosedError(f"handshake failed: connection lost: {e}") from None


async def dial_one(address: Address, identity: DeviceIdentity, *,
                   timeout: float = HANDSHAKE_TIMEOUT, bind_port: int | None = None) -> SecureConnection:
    """Connect to one alternative and complete the handshake; TCP dials leave from
    ``bind_port`` where possible (see :func:`networker.sockets.open_tcp`)."""
    try:
        async with asyncio.timeout(timeout):
            if address.transport == "tcp":
                reader, writer = await open_tcp(address.host, address.port, bind_port)
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
    sock = writer.get_extra_info("socket")
    _, host = _where(sock.family if sock is not None else -1, writer.get_extra_info("peername"), "")
    conn = SecureConnection(reader, writer, session, address.format(), host)
    conn.local_address = _local(writer)
    return conn


async def dial(address: MultiAddress, identity: DeviceIdentity, *,
               timeout: float = HANDSHAKE_TIMEOUT, bind_port: int | None = None) -> SecureConnection:
    """Connect to the first alternative that answers and authenticates (from ``bind_port``
    where possible)."""
    reasons: list[tuple[str, str]] = []
    errors: list[NetworkError] = []
    for alt in address.alternatives:
        try:
            return await dial_one(alt, identity, timeout=timeout, bind_port=bind_port)
        except NetworkError as e:
            reasons.append((alt.format(), str(e)))
            errors.append(e)
    if len(errors) == 1:
        raise errors[0]
    raise DialError("no alternative of the address could be reached: " +
                    "; ".join(r for _, r in reasons), reasons)


def is_garbage(error: HandshakeError) -> bool:
    """Whether a failed handshake means the remote sent something that is no handshake (as
    opposed to stalling, closing, or a network failure)."""
    return not isinstance(error, HandshakeTimeoutError | HandshakeClosedError)


def _where(family: int, addr: object, fallback: str) -> tuple[str, str | None]:
    """The remote's address as text and its host (``None`` for a unix socket)."""
    if family in (socket.AF_INET, socket.AF_INET6) and isinstance(addr, tuple) and len(addr) >= 2:
        host = normalize_host(str(addr[0]))  # a dual-stack socket sees IPv4 peers as ::ffff:a.b.c.d
        return (f"tcp:[{host}]:{addr[1]}" if ":" in host else f"tcp:{host}:{addr[1]}"), host
    return fallback, None


class Listener:
    """Listening sockets, their accept loops and the handshakes in progress (module docstring)."""

    def __init__(
        self,
        sockets: list[socket.socket],
        addresses: list[str],
        path: Path | None,
        identity: DeviceIdentity,
        on_connection: Callable[[SecureConnection], Awaitable[None]],
        *,
        handshake_timeout: float,
        max_pending: int,
        max_pending_per_ip: int,
        refuse: Callable[[str], float] | None,
        on_bad_handshake: Callable[[str], None] | None,
        accept: Callable[[socket.socket], Awaitable[tuple[socket.socket, object]]] | None = None,
    ) -> None:
        self.addresses = addresses
        self._sockets = sockets
        self._path = path
        self._identity = identity
        self._on_connection = on_connection
        self.handshake_timeout = handshake_timeout
        self.pending: PendingHandshakes[int] = PendingHandshakes(max_pending, max_pending_per_ip)
        self._refuse = refuse
        self._on_bad_handshake = on_bad_handshake
        self._loop = asyncio.get_running_loop()
        self._accept = accept or self._loop.sock_accept
        self.throttle = LogThrottle(log, clock=self._loop.time)
        self.backoff = ACCEPT_BACKOFF
        self._fallback = addresses[0] if addresses else "?"
        self._tokens = itertools.count()
        self._handshakes: dict[int, asyncio.Task[None]] = {}
        self._unstarted: dict[int, socket.socket] = {}  # a task cancelled before it ran closes nothing
        self._loops: list[asyncio.Task[None]] = []
        self._closed = False

    @property
    def tcp_port(self) -> int | None:
        """The port of the first TCP listening socket (outgoing dials reuse it), if any."""
        for sock in self._sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                return int(sock.getsockname()[1])
        return None

    @property
    def dual_stack(self) -> bool:
        return any(s.family == socket.AF_INET6 and not s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
                   for s in self._sockets)

    def start(self) -> None:
        for sock in self._sockets:
            self._loops.append(self._loop.create_task(self._accept_loop(sock), name="listener-accept"))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in [*self._loops, *self._handshakes.values()]:
            task.cancel()
        for sock in self._sockets:
            sock.close()
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()

    async def wait_closed(self) -> None:
        await asyncio.gather(*self._loops, *self._handshakes.values(), return_exceptions=True)

    # -- accepting ----------------------------------------------------------------------------

    async def _accept_loop(self, sock: socket.socket) -> None:
        pause = 0.0
        while not self._closed:
            try:
                conn, addr = await self._accept(sock)
            except OSError as e:
                if self._closed:
                    return
                if e.errno in _ACCEPT_TRANSIENT:
                    continue
                pause = min(self.backoff[1], pause * 2 or self.backoff[0])
                if e.errno in _OUT_OF_RESOURCES:
                    self._shed()
                    self.throttle.note("resources", logging.WARNING,
                                       "cannot accept peer connections: %s; pausing accept, shedding "
                                       "pending handshakes", os.strerror(e.errno or 0))
                else:
                    self.throttle.note("accept", logging.WARNING, "accepting a peer connection failed: %s", e)
                await asyncio.sleep(pause)
                continue
            pause = 0.0
            try:
                self._admit(conn, addr)
            except Exception:  # a bug: keep accepting, say so (rarely)
                conn.close()
                if self.throttle.counts["bug"] == 0:
                    log.exception("bug while accepting a peer connection")
                self.throttle.note("bug", logging.ERROR, "bug while accepting a peer connection")

    def _admit(self, conn: socket.socket, addr: object) -> None:
        where, host = _where(conn.family, addr, self._fallback)
        ip = ip_key(host)
        if ip is not None and self._refuse is not None:
            refused = self._refuse(ip)
            if refused > 0:
                conn.close()
                log.debug("refused %s: misbehaved recently (%.0fs left)", where, refused)
                self.throttle.note("refused", logging.INFO,
                                   "refused a connection from %s for %.0fs more: it broke the protocol "
                                   "repeatedly", ip, refused)
                return
        token = next(self._tokens)
        for old in self.pending.add(token, ip):
            task = self._handshakes.pop(old, None)
            if task is not None:
                task.cancel()
            self.throttle.note("evicted", logging.INFO,
                               "too many peer handshakes in progress (%d, %d per IP): closed the oldest",
                               self.pending.max_total, self.pending.max_per_ip)
        task = self._loop.create_task(self._handshake(token, conn, where, host, ip), name="listener-handshake")
        self._handshakes[token] = task
        self._unstarted[token] = conn
        task.add_done_callback(lambda _t, token=token: self._ended(token))

    def _ended(self, token: int) -> None:
        self._handshakes.pop(token, None)
        sock = self._unstarted.pop(token, None)
        if sock is not None:
            sock.close()
        self.pending.remove(token)

    def _shed(self) -> None:
        token = self.pending.oldest()
        if token is None:
            return
        self.pending.remove(token)
        task = self._handshakes.pop(token, None)
        if task is not None:
            task.cancel()

    async def _handshake(self, token: int, conn: socket.socket, where: str, host: str | None,
                         ip: str | None) -> None:
        writer: asyncio.StreamWriter | None = None
        del self._unstarted[token]
        try:
            conn.setblocking(False)
            reader = asyncio.StreamReader(limit=2 ** 16, loop=self._loop)
            protocol = asyncio.StreamReaderProtocol(reader, loop=self._loop)
            transport, _ = await self._loop.connect_accepted_socket(lambda: protocol, conn)
            writer = asyncio.StreamWriter(transport, protocol, reader, self._loop)
            session = NoiseSession(self._identity, initiator=False)
            await _handshake(reader, writer, session, self.handshake_timeout)
        except HandshakeError as e:
            self._failed(writer, conn, where, ip, e)
            return
        except (NetworkError, OSError) as e:
            self._failed(writer, conn, where, ip, HandshakeClosedError(str(e)))
            return
        except BaseException:
            if writer is not None:
                writer.close()
            else:
                conn.close()
            raise
        self.pending.remove(token)
        secure = SecureConnection(reader, writer, session, where, host)
        secure.local_address = _local(writer)
        try:
            await self._on_connection(secure)
        except Exception:  # a bug of the callback: the connection is dropped, the listener goes on
            writer.close()
            if self.throttle.counts["callback"] == 0:
                log.exception("bug while taking a connection from %s", where)
            self.throttle.note("callback", logging.ERROR, "bug while taking a connection from %s", where)

    def _failed(self, writer: asyncio.StreamWriter | None, conn: socket.socket, where: str, ip: str | None,
                error: HandshakeError) -> None:
        if writer is not None:
            writer.close()
        else:
            conn.close()
        log.debug("closed incoming connection from %s: %s", where, error)
        if is_garbage(error):
            if ip is not None and self._on_bad_handshake is not None:
                self._on_bad_handshake(ip)
            self.throttle.note("garbage", logging.INFO, "closed a connection from %s: %s", where, error)
        else:
            self.throttle.note("handshake", logging.INFO,
                               "closed a connection from %s that did not complete the handshake: %s", where, error)


def _local(writer: asyncio.StreamWriter) -> str | None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    return _where(sock.family, writer.get_extra_info("sockname"), "")[0] or None


async def listen(address: Address, identity: DeviceIdentity,
                 on_connection: Callable[[SecureConnection], Awaitable[None]], *,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT,
                 max_pending: int = MAX_PENDING, max_pending_per_ip: int = MAX_PENDING_PER_IP,
                 refuse: Callable[[str], float] | None = None,
                 on_bad_handshake: Callable[[str], None] | None = None) -> Listener:
    """Accept connections on ``address``; each authenticated one goes to ``on_connection``.

    ``refuse(ip_key)`` returns the seconds a remote IP is still refused (0: accept it);
    ``on_bad_handshake(ip_key)`` is told of each handshake of garbage."""
    path: Path | None = None
    if address.transport == "tcp":
        sockets = await tcp_sockets(address.host, address.port)
        addresses = []
        for sock in sockets:
            host, port = sock.getsockname()[:2]
            addresses.append(Address("tcp", host=host, port=port, peer_key=identity.peer_id).format())
    else:
        path = Path(address.path)
        sockets = [unix_socket(path)]
        addresses = [Address("unix", path=str(path), peer_key=identity.peer_id).format()]
    listener = Listener(sockets, addresses, path, identity, on_connection, handshake_timeout=handshake_timeout,
                        max_pending=max_pending, max_pending_per_ip=max_pending_per_ip, refuse=refuse,
                        on_bad_handshake=on_bad_handshake)
    listener.start()
    return listener
