"""LAN discovery: daemons on one network find each other's groups over mDNS/DNS-SD, with no
bootstrap node and no DHT.

Theory of operation
-------------------
Each daemon advertises **one** DNS-SD service of type ``_cobox._tcp.local.``:

* instance name: the peer id in base32 (52 characters, within the 63-byte DNS label limit);
* SRV port: the daemon's TCP listen port; A records: its IPv4 addresses on the chosen
  interfaces;
* TXT strings (RFC 6763 ``key=value``, at most 255 bytes each)::

      v=1
      id=<peer id, base32>
      t0=<discovery key>,<discovery key>,<discovery key>,<discovery key>
      t1=...                                  (4 keys per string, at most MAX_TOPICS keys)

Only discovery keys and the peer id are broadcast. A discovery key is a one-way hash of a group
key, so listening on the LAN tells an observer which devices share *some* group, never how to
join or read it; group addresses and replication keys never leave the device this way.

Every daemon also browses the same service type. For each service added or updated it resolves
the SRV/TXT/A records (usually straight from zeroconf's cache, since the announcement carried
them), parses the TXT strings with :func:`decode_txt`, and feeds the result to the pure
:class:`LanPeerTable`, which returns the ``(topic, peer id, address)`` triples that are new;
each is passed to ``on_peer``. A removed service (an mDNS goodbye, or records whose TTL ran
out) is dropped from the table. ``set_topics`` re-publishes the TXT record, which the other
side sees as an update.

Invariants: our own service is ignored; a malformed record is logged at debug level and
ignored (and forgets what that service said before); ``on_peer`` never raises into zeroconf;
every task this module starts is owned by the :class:`LanDiscovery` and cancelled by
``stop()``. Only IPv4 is advertised and browsed (IPv6 link-local addresses need scope ids
that the address format does not carry).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import ifaddr
from zeroconf import InterfaceChoice, IPVersion, NonUniqueNameException, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from .address import MAX_ALTERNATIVES, Address, MultiAddress
from .encoding import decode_key, encode_key
from .errors import KeyEncodingError, LanError, MalformedLanRecordError

log = logging.getLogger(__name__)

SERVICE_TYPE = "_cobox._tcp.local."
TXT_VERSION = "1"
KEY_BYTES = 32
MAX_LABEL_BYTES = 63
MAX_TXT_STRING = 255
TOPICS_PER_STRING = 4  # "tN=" + 4 * 52 + 3 commas = 214 bytes, under MAX_TXT_STRING
MAX_TOPICS = 20  # 5 strings: the whole TXT record stays under ~1.3 KB (RFC 6763 6.2)
MAX_REMOTE_PEERS = 256  # services remembered at once; more are ignored until some leave
RESOLVE_TIMEOUT = 3.0

OnPeer = Callable[[bytes, bytes, str], None]


# ---- the TXT record (pure) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LanRecord:
    peer_id: bytes
    topics: frozenset[bytes]


def instance_name(peer_id: bytes) -> str:
    """The DNS-SD instance label for a peer: its base32 id, truncated to one DNS label."""
    return encode_key(peer_id)[:MAX_LABEL_BYTES]


def service_name(peer_id: bytes) -> str:
    return f"{instance_name(peer_id)}.{SERVICE_TYPE}"


def encode_txt(record: LanRecord) -> bytes:
    """The TXT rdata (length-prefixed strings) for ``record``."""
    if len(record.peer_id) != KEY_BYTES or any(len(t) != KEY_BYTES for t in record.topics):
        raise ValueError(f"peer ids and discovery keys are {KEY_BYTES} bytes")
    if len(record.topics) > MAX_TOPICS:
        raise ValueError(f"at most {MAX_TOPICS} discovery keys fit in a LAN record")
    strings = [f"v={TXT_VERSION}", f"id={encode_key(record.peer_id)}"]
    topics = sorted(record.topics)
    for n, start in enumerate(range(0, len(topics), TOPICS_PER_STRING)):
        chunk = topics[start : start + TOPICS_PER_STRING]
        strings.append(f"t{n}=" + ",".join(encode_key(t) for t in chunk))
    out = bytearray()
    for s in strings:
        data = s.encode("ascii")
        assert len(data) <= MAX_TXT_STRING
        out += bytes([len(data)]) + data
    return bytes(out)


def decode_txt(text: bytes) -> LanRecord:
    """Parse TXT rdata; raise :class:`MalformedLanRecordError` unless it is a well-formed
    version-1 cobox record. Unknown keys are ignored (room for later versions); as RFC 6763
    says, keys are case-insensitive and only the first occurrence of a key counts."""
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        length = text[pos]
        data = text[pos + 1 : pos + 1 + length]
        if len(data) != length:
            raise MalformedLanRecordError("truncated TXT string")
        pos += 1 + length
        if not data or data.startswith(b"="):
            continue
        key, _, value = data.partition(b"=")
        try:
            k, v = key.decode("ascii").lower(), value.decode("ascii")
        except UnicodeDecodeError:
            raise MalformedLanRecordError("non-ASCII TXT string") from None
        fields.setdefault(k, v)
    if fields.get("v") != TXT_VERSION:
        raise MalformedLanRecordError(f"unsupported record version {fields.get('v')!r}")
    try:
        peer_id = decode_key(fields.get("id", ""))
        topics: set[bytes] = set()
        for n in range(MAX_TOPICS):
            value = fields.get(f"t{n}")
            if value is None:
                break
            topics.update(decode_key(t) for t in value.split(","))
    except KeyEncodingError as e:
        raise MalformedLanRecordError(f"bad key in LAN record: {e}") from None
    if len(topics) > MAX_TOPICS:
        raise MalformedLanRecordError(f"more than {MAX_TOPICS} discovery keys")
    return LanRecord(peer_id, frozenset(topics))


def format_address(ips: Iterable[str], port: int, peer_id: bytes) -> str:
    """``tcp:IP:PORT~noise:KEY`` (alternatives joined by ``;`` if the peer has several IPs)."""
    if not 0 < port <= 65535:
        raise MalformedLanRecordError(f"bad port {port}")
    alternatives = tuple(Address("tcp", host=ip, port=port, peer_key=peer_id) for ip in ips)
    if not alternatives:
        raise MalformedLanRecordError("no IPv4 address")
    return MultiAddress(alternatives[:MAX_ALTERNATIVES]).format()


# ---- what we know (pure) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Remote:
    peer_id: bytes
    address: str
    topics: frozenset[bytes]


class LanPeerTable:
    """The services seen on the LAN, by service name, and what each one serves."""

    def __init__(self, max_peers: int = MAX_REMOTE_PEERS) -> None:
        self._max_peers = max_peers
        self._remotes: dict[str, _Remote] = {}

    def __len__(self) -> int:
        return len(self._remotes)

    def update(self, name: str, peer_id: bytes, address: str,
               topics: frozenset[bytes]) -> list[tuple[bytes, bytes, str]]:
        """Record what service ``name`` now says; return the (topic, peer id, address) triples
        that are new: topics it did not serve before, or all of them if its address changed."""
        old = self._remotes.get(name)
        if old is None and len(self._remotes) >= self._max_peers:
            log.debug("LAN peer table full (%d); ignoring %s", self._max_peers, name)
            return []
        self._remotes[name] = _Remote(peer_id, address, topics)
        if old is not None and old.peer_id == peer_id and old.address == address:
            fresh = topics - old.topics
        else:
            fresh = topics
        return [(t, peer_id, address) for t in sorted(fresh)]

    def remove(self, name: str) -> None:
        self._remotes.pop(name, None)

    def clear(self) -> None:
        self._remotes.clear()

    def lookup(self, topic: bytes) -> list[tuple[bytes, str]]:
        return [(r.peer_id, r.address) for r in self._remotes.values() if topic in r.topics]


# ---- the asyncio shell --------------------------------------------------------------------


def local_ipv4_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses (loopback if there is nothing else)."""
    ips = [
        ip.ip
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if isinstance(ip.ip, str) and not ipaddress.IPv4Address(ip.ip).is_loopback
    ]
    return ips or ["127.0.0.1"]


class LanDiscovery:
    """Advertise our discovery keys on the LAN and report the peers that serve them.

    ``interfaces`` are IPv4 addresses of local interfaces to use (e.g. ``["127.0.0.1"]`` in
    tests); ``None`` means all interfaces. ``on_peer(topic, peer_id, address)`` is called in the
    event loop for each (discovery key, remote peer) found, again if the peer's address changes.
    """

    def __init__(self, peer_id: bytes, port: int, *, interfaces: list[str] | None = None,
                 on_peer: OnPeer, resolve_timeout: float = RESOLVE_TIMEOUT) -> None:
        if len(peer_id) != KEY_BYTES:
            raise ValueError(f"a peer id is {KEY_BYTES} bytes")
        if not 0 < port <= 65535:
            raise ValueError(f"bad listen port {port}")
        self.peer_id = peer_id
        self.port = port
        self._interfaces = interfaces
        self._on_peer = on_peer
        self._resolve_timeout_ms = int(resolve_timeout * 1000)
        self._topics: frozenset[bytes] = frozenset()
        self._table = LanPeerTable()
        self._name = service_name(peer_id)
        self._aiozc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._dirty = asyncio.Event()
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._stale: set[str] = set()

    # -- lifecycle

    async def start(self) -> None:
        if self._aiozc is not None:
            raise RuntimeError("LAN discovery already started")
        interfaces = self._interfaces if self._interfaces is not None else InterfaceChoice.All
        try:
            self._aiozc = AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
        except OSError as e:
            raise LanError(f"cannot open the mDNS socket: {e}") from e
        try:
            self._browser = AsyncServiceBrowser(self._aiozc.zeroconf, SERVICE_TYPE,
                                                handlers=[self._on_service_state_change])
            self._dirty.clear()
            await self._aiozc.async_register_service(self._service_info())
        except NonUniqueNameException:
            await self.stop()
            raise LanError("another device on the network advertises this peer id") from None
        except Exception:
            await self.stop()
            raise
        self._publisher = asyncio.create_task(self._publish_loop(), name="lan-publish")

    async def stop(self) -> None:
        aiozc, self._aiozc = self._aiozc, None
        if aiozc is None:
            return
        tasks = [t for t in [self._publisher, *self._resolving.values()] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._publisher = None
        try:
            if self._browser is not None:
                await self._browser.async_cancel()
            await aiozc.async_unregister_all_services()  # goodbye packets: TTL 0
        finally:
            self._browser = None
            await aiozc.async_close()
            self._table.clear()

    # -- our side

    def set_topics(self, topics: set[bytes]) -> None:
        """Serve these discovery keys; re-publish the TXT record if the set changed. Only the
        first :data:`MAX_TOPICS` (in byte order) are advertised; the DHT covers the rest."""
        if any(len(t) != KEY_BYTES for t in topics):
            raise ValueError(f"discovery keys are {KEY_BYTES} bytes")
        if len(topics) > MAX_TOPICS:
            log.warning("advertising %d of %d discovery keys on the LAN", MAX_TOPICS, len(topics))
        capped = frozenset(sorted(topics)[:MAX_TOPICS])
        if capped != self._topics:
            self._topics = capped
            self._dirty.set()

    def _service_info(self) -> AsyncServiceInfo:
        ips = [ip for ip in self._interfaces if _is_ipv4(ip)] if self._interfaces else local_ipv4_addresses()
        return AsyncServiceInfo(
            SERVICE_TYPE, self._name, port=self.port,
            properties=encode_txt(LanRecord(self.peer_id, self._topics)),
            server=f"cobox-{encode_key(self.peer_id)[:20]}.local.",
            parsed_addresses=ips,
        )

    async def _publish_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            assert self._aiozc is not None
            try:
                await self._aiozc.async_update_service(self._service_info())
            except Exception:
                log.exception("could not re-publish the LAN record")

    # -- their side

    def lookup(self, topic: bytes) -> list[tuple[bytes, str]]:
        """The (peer id, address) of every peer currently known to serve ``topic``."""
        return self._table.lookup(topic)

    def _on_service_state_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                                 state_change: ServiceStateChange) -> None:
        try:
            if name.lower() == self._name.lower():
                return
            if state_change is ServiceStateChange.Removed:
                task = self._resolving.pop(name, None)
                if task is not None:
                    task.cancel()
                self._table.remove(name)
                return
            if name in self._resolving:
                self._stale.add(name)  # resolve again when the running resolve is done
                return
            task = asyncio.create_task(self._resolve_loop(name), name=f"lan-resolve {name}")
            self._resolving[name] = task
            task.add_done_callback(lambda t: self._resolve_done(name, t))
        except Exception:
            log.exception("LAN discovery: error handling %s for %s", state_change, name)

    def _resolve_done(self, name: str, task: asyncio.Task[None]) -> None:
        if self._resolving.get(name) is task:
            del self._resolving[name]
        if not task.cancelled() and task.exception() is not None:
            log.error("LAN discovery: resolving %s failed", name, exc_info=task.exception())

    async def _resolve_loop(self, name: str) -> None:
        while True:
            self._stale.discard(name)
            await self._resolve(name)
            if name not in self._stale:
                return

    async def _resolve(self, name: str) -> None:
        if self._aiozc is None:
            return
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(self._aiozc.zeroconf, self._resolve_timeout_ms):
            log.debug("LAN discovery: %s did not resolve", name)
            return
        try:
            record = decode_txt(info.text or b"")
            if name.lower() != service_name(record.peer_id).lower():
                raise MalformedLanRecordError("instance name does not match the peer id")
            address = format_address(info.parsed_addresses(IPVersion.V4Only), info.port or 0,
                                     record.peer_id)
        except MalformedLanRecordError as e:
            log.debug("LAN discovery: ignoring %s: %s", name, e)
            self._table.remove(name)
            return
        if record.peer_id == self.peer_id:
            return
        for topic, peer_id, addr in self._table.update(name, record.peer_id, address, record.topics):
            try:
                self._on_peer(topic, peer_id, addr)
            except Exception:
                log.exception("LAN discovery: on_peer callback failed")


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True
