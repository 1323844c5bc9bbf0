"""Direct connection upgrade: from a relayed connection to a direct one (DCUtR-like).

Theory of operation
-------------------
When a peer's connection is relayed (:mod:`networker.relay`), :class:`Upgrader` tries to
replace it with a direct one; the node's one-connection rule (a direct connection beats a
relayed one, on both ends alike) then closes the relayed connection and replication carries on
over the direct one, channels reopened.

1. Both ends dial the peer's known *direct* addresses (``addresses_of``, e.g. what the DHT
   said), so a peer that is reachable after all (public, port-mapped) is used directly. When
   none is known yet, the first attempt waits ``DIRECT_WAIT`` seconds for a lookup.
2. The end that *accepted* the relayed circuit (``not conn.is_initiator``) then punches,
   over the ``holepunch`` service on the relayed connection:

   - it opens a socket on a fresh port with ``SO_REUSEADDR``/``SO_REUSEPORT`` and asks the
     relay (``OBSERVE``) which address it sees that port at: its NAT's mapping;
   - ``PREPARE`` sends that observed address to the peer, which does the same and answers
     with its own;
   - a ``PING`` round trip measures the RTT;
   - ``SYNC``: the peer dials at once when it receives it; the initiator dials RTT/2 after
     sending it, so both SYNs leave at about the same moment and each NAT has the outgoing
     mapping when the other's SYN arrives (TCP simultaneous open, from the observed ports);
   - on the resulting TCP connection the initiator runs the Noise initiator, the peer the
     responder, each expecting the other's key: a third party cannot slip in.

   Host candidates (ICE's): ``PREPARE`` and ``PREPARED`` also carry up to
   :data:`MAX_CANDIDATES` of the sender's *private* interface addresses with its listening port.
   When the peer's observed address has the same IP as ours, the two devices are behind one
   NAT (a home router without hairpinning cannot carry a punch to its own public address), so
   the punching end first dials the peer's host candidates directly, an ordinary dial that
   expects the peer's key; the connection is then a direct LAN one. Those private addresses
   are dialled only in that case, only by the end that asked, at most ``attempts`` times per
   ``retry_later`` seconds like every punch: a peer cannot make us probe our network.

   A failed attempt is retried after :func:`retry_delay` (up to ``attempts`` times in a row);
   then the connection stays relayed and the upgrade is tried again ``retry_later`` seconds
   later while it is still relayed. A symmetric NAT (a new mapping per destination) makes the
   observed port useless to the peer: those attempts fail and the pair stays relayed.

A peer may ask for at most ``attempts`` punches per ``retry_later`` seconds (each makes us dial
an address it names), and only over a relayed connection. The punched connection is marked
``punched`` (its kind is ``hole-punched``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import transport
from .address import Address, MultiAddress, parse
from .errors import AddressError, NetworkError, RemoteProtocolError
from .identity import DeviceIdentity
from .limits import ip_key
from .noise import NoiseSession
from .peer import Peer, ServiceError
from .reach.scope import ip_kind, normalize_host
from .relay.wire import OBSERVE, OBSERVED, Message, RelayProtocolError, decode, encode
from .transport import SecureConnection

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger(__name__)
SERVICE = "holepunch"
PREPARE, PREPARED, PING, PONG, SYNC, SYNCED = range(1, 7)
_U16 = struct.Struct(">H")
PUNCH_TIMEOUT = 5.0
PREPARED_TTL = 15.0
MAX_REMEMBERED = 1024  # peers whose recent PREPAREs (and prepared punches) are kept; the oldest go first
ALL_PEERS_FACTOR = 8  # punches we answer for all peers together: this many times one peer's allowance
DIRECT_WAIT = 2.0  # before the first attempt when the peer's direct addresses are not known yet
MAX_CANDIDATES = 4  # host candidates in one PREPARE / PREPARED
MAX_MESSAGE = 1 + 1 + (1 + MAX_CANDIDATES) * (2 + 1 + 39)  # 39: the longest IPv6 text


class PunchedConnection(SecureConnection):
    punched = True


class HolePunchError(RemoteProtocolError):
    """A malformed hole-punch message."""


# -- pure parts ------------------------------------------------------------------------------


def _bound(d: dict[bytes, object]) -> None:
    """Keep at most ``MAX_REMEMBERED`` entries, dropping the oldest."""
    while len(d) > MAX_REMEMBERED:
        d.pop(next(iter(d)))


def retry_delay(failures: int, attempts: int = 3, later: float = 300.0) -> float:
    """Seconds before the next upgrade attempt after ``failures`` failed ones in a row: 1 s,
    2 s, ... within a round of ``attempts``, then ``later`` (and the round starts again)."""
    if failures <= 0:
        return 0.0
    if failures % attempts:
        return float(2 ** (failures % attempts - 1))
    return later


def sync_delay(rtt: float) -> float:
    """How long the initiator waits after sending SYNC: half the round trip (the peer dials when
    SYNC arrives, about RTT/2 after it was sent), within 0-2 s."""
    return min(max(rtt / 2, 0.0), 2.0)


def allow(times: list[float], now: float, most: int, window: float) -> bool:
    """Whether one more punch fits ``most`` per ``window`` seconds (``times``: earlier ones,
    updated). A peer cannot make us dial addresses it names faster than that."""
    times[:] = [t for t in times if t > now - window]
    if len(times) >= most:
        return False
    times.append(now)
    return True


@dataclass(frozen=True, slots=True)
class PunchMessage:
    """``PREPARE`` / ``PREPARED``: the sender's observed address (``host``, ``port``) and its host
    candidates (private ``(ip, port)`` it listens on); the other kinds carry nothing."""

    kind: int
    host: str = ""
    port: int = 0
    candidates: tuple[tuple[str, int], ...] = ()


def _address(host: str, port: int) -> bytes:
    raw = host.encode("ascii")
    return _U16.pack(port) + bytes([len(raw)]) + raw


def encode_message(m: PunchMessage) -> bytes:
    """``kind`` | for PREPARE/PREPARED: ``n:u8`` then ``n`` times ``port:u16 len:u8 ip:ascii``,
    the observed address first, then the host candidates."""
    if m.kind in (PREPARE, PREPARED):
        addresses = [(m.host, m.port), *m.candidates[:MAX_CANDIDATES]]
        return bytes([m.kind, len(addresses)]) + b"".join(_address(h, p) for h, p in addresses)
    return bytes([m.kind])


def _decode_address(data: bytes, at: int) -> tuple[str, int, int]:
    if at + 3 > len(data):
        raise HolePunchError("truncated address in a hole-punch message")
    port = _U16.unpack_from(data, at)[0]
    size = data[at + 2]
    raw = data[at + 3:at + 3 + size]
    if len(raw) != size:
        raise HolePunchError("truncated address in a hole-punch message")
    try:
        # the address text goes through the relay's strict decoder (canonical IP text)
        obs = decode(bytes([OBSERVED]) + _U16.pack(port) + raw)
    except RelayProtocolError as e:
        raise HolePunchError(f"bad address: {e}") from None
    if not obs.port:
        raise HolePunchError("port 0 in a hole-punch message")
    return obs.host, obs.port, at + 3 + size


def decode_message(data: bytes) -> PunchMessage:
    if not data or len(data) > MAX_MESSAGE:
        raise HolePunchError(f"hole-punch message of {len(data)} bytes")
    kind = data[0]
    if kind in (PING, PONG, SYNC, SYNCED):
        if len(data) != 1:
            raise HolePunchError("trailing bytes in a hole-punch message")
        return PunchMessage(kind)
    if kind not in (PREPARE, PREPARED):
        raise HolePunchError(f"unknown hole-punch message {kind}")
    if len(data) < 2 or not 1 <= data[1] <= 1 + MAX_CANDIDATES:
        raise HolePunchError("a hole-punch PREPARE carries 1 to 5 addresses")
    at = 2
    addresses = []
    for _ in range(data[1]):
        host, port, at = _decode_address(data, at)
        addresses.append((host, port))
    if at != len(data):
        raise HolePunchError("trailing bytes in a hole-punch message")
    (host, port), candidates = addresses[0], tuple(addresses[1:])
    if any(ip_kind(h) != "private" for h, _ in candidates):
        raise HolePunchError("a host candidate that is not a private address")
    return PunchMessage(kind, host, port, candidates)


def same_nat(ours: str, theirs: str) -> bool:
    """Whether two observed addresses show one NAT: the same public IP."""
    return ip_kind(ours) == "public" and normalize_host(ours) == normalize_host(theirs)


def lan_candidates(observed: str, reply: PunchMessage) -> tuple[tuple[str, int], ...]:
    """The peer's host candidates to dial, given our observed IP: only behind one NAT."""
    return reply.candidates if same_nat(observed, reply.host) else ()


# -- sockets -----------------------------------------------------------------------------------


def reusable_socket(family: int, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(AttributeError, OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def _secure(sock: socket.socket, identity: DeviceIdentity, *, initiator: bool, peer: bytes,
                  where: tuple[str, int], cls: type[SecureConnection] = SecureConnection) -> SecureConnection:
    reader, writer = await asyncio.open_connection(sock=sock)
    session = NoiseSession(identity, initiator=initiator, expected_peer_id=peer)
    try:
        await transport._handshake(reader, writer, session, PUNCH_TIMEOUT)
    except BaseException:
        writer.close()
        raise
    text = Address("tcp", where[0], where[1], peer_key=peer).format()
    return cls(reader, writer, session, text, where[0])


async def connect_from(port: int, host: str, remote_port: int, timeout: float) -> socket.socket:
    """A TCP connection from local ``port`` (shared with other sockets) to ``host:remote_port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = reusable_socket(family, port)
    try:
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().sock_connect(sock, (host, remote_port))
    except BaseException:
        sock.close()
        raise
    return sock


async def observe(relay: Address, identity: DeviceIdentity, *, timeout: float = PUNCH_TIMEOUT,
                  port: int = 0) -> tuple[int, str, int]:
    """(local port, observed host, observed port) of a connection to ``relay`` from ``port``
    (0: a fresh one)."""
    assert relay.peer_key is not None
    family = socket.AF_INET6 if ":" in relay.host else socket.AF_INET
    if port == 0:
        probe = reusable_socket(family, 0)
        port = probe.getsockname()[1]
        probe.close()
    try:
        sock = await connect_from(port, relay.host, relay.port, timeout)
    except (OSError, TimeoutError) as e:
        raise NetworkError(f"cannot reach the relay to observe our address: {e}") from None
    conn = await _secure(sock, identity, initiator=True, peer=relay.peer_key, where=(relay.host, relay.port))
    try:
        await conn.send(encode(Message(OBSERVE)))
        async with asyncio.timeout(timeout):
            m = decode(await conn.recv())
        if m.kind != OBSERVED:
            raise RelayProtocolError(f"relay answered {m.name} to OBSERVE")
        return port, m.host, m.port
    finally:
        conn.close()


# -- the upgrader --------------------------------------------------------------------------------


@dataclass
class _Prepared:
    port: int
    host: str
    remote_port: int
    deadline: float


class Upgrader:
    def __init__(self, node: Node, *, addresses_of: Callable[[bytes], str | None] | None = None,
                 host_candidates: Callable[[], list[tuple[str, int]]] = list,
                 punch: bool = True, attempts: int = 3, retry_later: float = 300.0) -> None:
        self.node = node
        self.addresses_of = addresses_of
        self.host_candidates = host_candidates
        self.lan_upgrades = 0
        self.punch = punch
        self.attempts = attempts
        self.retry_later = retry_later
        self.punched = 0
        self.punch_failures = 0
        self._prepared: dict[bytes, _Prepared] = {}
        self._asked: dict[bytes, list[float]] = {}  # peer -> times of its PREPAREs in the window
        self._asked_all: list[float] = []  # every peer's: peer ids cost nothing, so a limit for all
        self._tasks: dict[bytes, asyncio.Task[None]] = {}
        self._answers: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        self.node.services[SERVICE] = self._serve
        self.node.on_event.append(self._on_event)

    async def close(self) -> None:
        tasks = [*self._tasks.values(), *self._answers]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _relayed_peer(self, peer_id: bytes) -> Peer | None:
        peer = self.node.peers.get(peer_id)
        if peer is None or peer.closed.is_set() or not getattr(peer.conn, "relay_via", b""):
            return None
        return peer

    def _on_event(self, event: object) -> None:
        if getattr(event, "kind", "") != "connected":
            return
        pid: bytes = event.peer_id  # type: ignore[attr-defined]
        if self._relayed_peer(pid) is None or pid in self._tasks:
            return
        task = self._loop.create_task(self._upgrade(pid), name="holepunch-upgrade")
        self._tasks[pid] = task
        task.add_done_callback(lambda _t, pid=pid: self._tasks.pop(pid, None))

    async def _upgrade(self, pid: bytes) -> None:
        failures = 0
        if self.addresses_of is not None and not self.addresses_of(pid):
            await asyncio.sleep(DIRECT_WAIT)  # the swarm may be looking the peer up (addresses_of asked it to)
        while (peer := self._relayed_peer(pid)) is not None:
            if await self._dial_direct(pid) or (self.punch and not peer.conn.is_initiator
                                                and await self._punch(peer)):
                return
            failures += 1
            await asyncio.sleep(retry_delay(failures, self.attempts, self.retry_later))

    async def _dial_direct(self, pid: bytes) -> bool:
        text = self.addresses_of(pid) if self.addresses_of is not None else None
        if not text:
            return False
        try:
            direct = [a for a in parse(text).alternatives if not a.relayed and a.peer_key == pid]
        except AddressError:
            return False
        if not direct:
            return False
        try:
            await self.node.connect(MultiAddress(tuple(direct)), timeout=PUNCH_TIMEOUT)
        except (NetworkError, OSError, TimeoutError):
            return False
        return self._relayed_peer(pid) is None

    def _relay_of(self, peer: Peer) -> Address:
        return parse(peer.conn.remote_address).alternatives[0].relay_hop()  # type: ignore[attr-defined]

    async def _punch(self, peer: Peer) -> bool:
        pid = peer.remote_peer_id
        try:
            port, host, obs_port = await observe(self._relay_of(peer), self.node.identity)
            reply = decode_message(await peer.call(SERVICE, encode_message(
                PunchMessage(PREPARE, host, obs_port, self._candidates()))))
            if reply.kind != PREPARED:
                raise HolePunchError("no PREPARED")
            if await self._dial_candidates(pid, lan_candidates(host, reply)):
                return True
            t0 = self._loop.time()
            decode_message(await peer.call(SERVICE, encode_message(PunchMessage(PING)), timeout=PUNCH_TIMEOUT))
            rtt = self._loop.time() - t0
            sync = self._loop.create_task(peer.call(SERVICE, encode_message(PunchMessage(SYNC)),
                                                    timeout=PUNCH_TIMEOUT))
            await asyncio.sleep(sync_delay(rtt))
            if ip_kind(reply.host) != "public":
                raise HolePunchError(f"the peer named a non-public address {reply.host!r} to punch to")
            try:
                sock = await connect_from(port, reply.host, reply.port, PUNCH_TIMEOUT)
            finally:
                with contextlib.suppress(Exception):  # its answer does not matter; a cancel does
                    await sync
            conn = await _secure(sock, self.node.identity, initiator=True, peer=pid,
                                 where=(reply.host, reply.port), cls=PunchedConnection)
        except (NetworkError, OSError, TimeoutError, ServiceError) as e:
            self.punch_failures += 1
            log.info("hole punch to %s failed: %s", pid.hex()[:16], e or type(e).__name__)
            return False
        return self._take(conn, reply.host)

    def _candidates(self) -> tuple[tuple[str, int], ...]:
        try:
            found = self.host_candidates()
        except Exception:  # a bug of the hook: punch without candidates
            log.exception("host candidates failed")
            return ()
        return tuple(dict.fromkeys((h, p) for h, p in found if ip_kind(h) == "private" and 0 < p < 65536))[
            :MAX_CANDIDATES]

    async def _dial_candidates(self, pid: bytes, candidates: tuple[tuple[str, int], ...]) -> bool:
        """Dial the private addresses of a peer behind our own NAT (module docstring)."""
        if not candidates:
            return False
        alternatives = tuple(Address("tcp", h, p, peer_key=pid) for h, p in candidates)
        try:
            await self.node.connect(MultiAddress(alternatives), timeout=PUNCH_TIMEOUT)
        except (NetworkError, OSError, TimeoutError) as e:
            log.info("no direct LAN connection to %s: %s", pid.hex()[:16], e or type(e).__name__)
            return False
        if self._relayed_peer(pid) is not None:
            return False
        self.lan_upgrades += 1
        log.info("behind one NAT with %s: connected on the LAN", pid.hex()[:16])
        return True

    def _take(self, conn: SecureConnection, host: str) -> bool:
        try:
            self.node.add_connection(conn, ip=ip_key(host))
        except NetworkError as e:
            log.info("punched connection refused: %s", e)
            return False
        self.punched += 1
        log.info("hole punched to %s (%s)", conn.remote_peer_id.hex()[:16], conn.remote_address)
        return True

    async def _serve(self, peer: Peer, body: bytes) -> bytes:
        pid = peer.remote_peer_id
        if not getattr(peer.conn, "relay_via", b""):
            raise ServiceError("hole punching is for relayed connections")
        try:
            m = decode_message(body)
        except HolePunchError as e:
            raise ServiceError(str(e)) from None
        now = self._loop.time()
        if m.kind == PREPARE:
            if ip_kind(m.host) != "public":  # a NAT's mapping is public: never dial into a LAN or this host
                raise ServiceError("hole punching dials public addresses only")
            if not allow(self._asked.setdefault(pid, []), now, self.attempts, self.retry_later) \
                    or not allow(self._asked_all, now, self.attempts * ALL_PEERS_FACTOR, self.retry_later):
                raise ServiceError(f"at most {self.attempts} hole punches per {self.retry_later:g}s")
            _bound(self._asked)
            try:
                port, host, obs_port = await observe(self._relay_of(peer), self.node.identity)
            except (NetworkError, OSError, TimeoutError) as e:
                raise ServiceError(f"cannot observe our address: {e}") from None
            self._prepared[pid] = _Prepared(port, m.host, m.port, now + PREPARED_TTL)
            _bound(self._prepared)
            return encode_message(PunchMessage(PREPARED, host, obs_port, self._candidates()))
        if m.kind == PING:
            return encode_message(PunchMessage(PONG))
        if m.kind == SYNC:
            prepared = self._prepared.pop(pid, None)
            if prepared is None or prepared.deadline < now:
                raise ServiceError("SYNC without PREPARE")
            task = self._loop.create_task(self._answer(pid, prepared))
            self._answers.add(task)
            task.add_done_callback(self._answers.discard)
            return encode_message(PunchMessage(SYNCED))
        raise ServiceError("unexpected hole-punch message")

    async def _answer(self, pid: bytes, p: _Prepared) -> None:
        try:
            sock = await connect_from(p.port, p.host, p.remote_port, PUNCH_TIMEOUT)
            conn = await _secure(sock, self.node.identity, initiator=False, peer=pid, where=(p.host, p.remote_port),
                                 cls=PunchedConnection)
        except (NetworkError, OSError, TimeoutError) as e:
            log.info("hole punch from %s failed: %s", pid.hex()[:16], e or type(e).__name__)
            return
        self._take(conn, p.host)
