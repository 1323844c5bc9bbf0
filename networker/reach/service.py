"""The daemon's reachability coordinator: asks peers what they see, keeps the verdict.

Theory of operation
-------------------
:class:`Reach` serves the ``observed`` service to every peer and, when a peer connects, asks it
(one task per new connection, at most :data:`MAX_PROBES` at once) for the address it sees for
us; then, unless an address was confirmed within :data:`CONFIRM_FOR` seconds, asks it to dial
our listening port (and our mapped port, if any) back. The last :data:`KEEP` observations and
dial-backs are kept; :meth:`state` runs :func:`networker.reach.classify.classify` over them,
and :meth:`dht_addresses` gives the announcer what it may put in the DHT. A peer's bad answer
is counted and ignored (it says nothing about us).

While nothing is confirmed, one connected peer is asked again every :data:`REPROBE` seconds
(a dial-back may have been refused for being too frequent, or the port mapping came up after
the peers connected), and at once when the port mapping changes.

``extra_addresses`` is the hook for other ways to be reached (relayed addresses): each callable
returns addresses that :meth:`dht_addresses` announces after our own.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Coroutine

import psutil

from ..address import parse
from ..errors import NetworkError
from ..node import Node, PeerEvent
from ..peer import Peer
from ..transport import SecureConnection
from . import announce
from .classify import DialBack, Observation, Reachability, classify, dialback_verdict
from .natpmp import NatPmpClient, default_gateway
from .observed import SERVICE, ObservedServer, ask_dialback, ask_whoami, remote_endpoint
from .pcp import PcpClient
from .portmap import FirstAnswering, PortMapper, wanted_ports
from .scope import ip_kind
from .upnp import UpnpClient

log = logging.getLogger(__name__)

MAX_PROBES = 4
KEEP = 32
CONFIRM_FOR = 600.0
REPROBE = 120.0


def local_ips() -> dict[str, list[str]]:
    """This machine's interface addresses by family (link-local and zone ids left out)."""
    out: dict[str, list[str]] = {"v4": [], "v6": []}
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            fam = {"AF_INET": "v4", "AF_INET6": "v6"}.get(a.family.name)
            if fam is not None:
                ip = a.address.split("%")[0]
                if ip_kind(ip) != "link-local":
                    out[fam].append(ip)
    return out


class Reach:
    def __init__(self, node: Node, listen_addresses: list[str], *, dht_contacts: Callable[[], int] = lambda: 0,
                 dht_port: Callable[[], int] = lambda: 0, allow_loopback: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.listen_hosts: list[str] = []
        self.listen_port = 0
        for text in listen_addresses:
            for alt in parse(text).alternatives:
                if alt.transport == "tcp":
                    self.listen_hosts.append(alt.host)
                    self.listen_port = self.listen_port or alt.port
        self.dht_contacts = dht_contacts
        self.allow_loopback = allow_loopback
        self.mapped: tuple[str, int] | None = None  # set by the port mapper
        self.portmap: PortMapper | None = None
        self.extra_addresses: list[Callable[[], list[str]]] = []  # e.g. relayed addresses
        self.bootstrap: tuple[str, ...] = ()  # the configured DHT nodes (named when none answers)
        self.observations: collections.deque[Observation] = collections.deque(maxlen=KEEP)
        self.dialbacks: collections.deque[tuple[float, DialBack]] = collections.deque(maxlen=KEEP)
        self.bad_answers = 0
        self._clock = clock
        self._slots = asyncio.Semaphore(MAX_PROBES)
        self._tasks: set[asyncio.Task[None]] = set()
        self.dht_port = dht_port
        self.on_dht_contact: Callable[[str, int], None] = lambda ip, port: None  # a peer's DHT node
        self.server = ObservedServer(dht_port=dht_port)
        node.services[SERVICE] = self.server.handle
        node.on_event.append(self._on_event)
        self._local = local_ips

    # -- asking peers -----------------------------------------------------------------------

    def _on_event(self, event: PeerEvent) -> None:
        if event.kind != "connected" or len(self._tasks) >= 4 * MAX_PROBES:
            return
        peer = self.node.peers.get(event.peer_id)
        if peer is None:
            return
        task = asyncio.get_running_loop().create_task(self.probe(peer), name="reach-probe")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def probe(self, peer: Peer) -> None:
        """Ask one peer what it sees, then (if useful) to dial us back."""
        async with self._slots:
            try:
                await self._probe(peer)
            except (NetworkError, OSError, TimeoutError) as e:
                self.bad_answers += 1
                log.debug("reachability probe of a peer failed: %s", e)

    async def _probe(self, peer: Peer) -> None:
        observer = remote_endpoint(peer)
        if observer is None:
            return
        ip, port, dht_port = await ask_whoami(peer)
        if dht_port and self._dialable(observer[0]):
            self.on_dht_contact(observer[0], dht_port)  # connected peers are DHT bootstraps too
        conn = peer.conn
        local = 0
        if isinstance(conn, SecureConnection) and conn.local_address:
            local = parse(conn.local_address).alternatives[0].port
        self.observations.append(Observation(observer[0], ip, port, local, bool(conn.is_initiator)))
        if ip_kind(ip) != "public" or not self.listen_port or self._recently_confirmed():
            return
        ports = [self.listen_port] + ([self.mapped[1]] if self.mapped and self.mapped[1] != self.listen_port else [])
        for p in ports:
            ok, reason = await ask_dialback(peer, p)
            self.dialbacks.append((self._clock(), DialBack(observer[0], ip, p, ok)))
            log.info("peer at %s dialled us back at %s:%d: %s", observer[0], ip, p, "ok" if ok else reason)

    def reprobe(self) -> None:
        """Ask one connected peer (the longest connected) again, unless confirmed recently."""
        if self._recently_confirmed() or len(self._tasks) >= 4 * MAX_PROBES:
            return
        peers = sorted(self.node.peers.values(), key=lambda p: p.since)
        if peers:
            self.run_soon(self.probe(peers[0]), "reach-reprobe")

    async def _reprobe_loop(self) -> None:
        while True:
            await asyncio.sleep(REPROBE)
            self.reprobe()

    def start(self) -> None:
        """Start re-asking peers periodically (see the module docstring)."""
        self.run_soon(self._reprobe_loop(), "reach-reprobe-loop")

    def _dialable(self, ip: str) -> bool:
        return ip_kind(ip) == "public" or (self.allow_loopback and ip_kind(ip) == "loopback")

    def bootstrap_hints(self, contacts: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """DHT nodes an invite can carry: our own DHT node at each address others can reach us
        at, then known contacts that are public."""
        own: list[tuple[str, int]] = []
        if self.dht_port():
            ips = [ip for ip, _ in self.confirmed()] + ([self.mapped[0]] if self.mapped else [])
            ips += [ip for ip in self.interface_ips() if self._dialable(ip)]
            own = [(ip, self.dht_port()) for ip in ips]
        return list(dict.fromkeys(own + [c for c in contacts if self._dialable(c[0])]))

    def run_soon(self, coro: Coroutine[None, None, object], name: str) -> None:
        """Run ``coro`` in the background, cancelled at :meth:`close`; its failure is logged."""
        async def guarded() -> None:
            try:
                await coro
            except (NetworkError, OSError, TimeoutError) as e:
                log.info("%s failed: %s", name, e)
            except Exception:
                log.exception("%s failed (a bug)", name)

        task = asyncio.get_running_loop().create_task(guarded(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _recently_confirmed(self) -> bool:
        now = self._clock()
        return any(d.ok and now - t < CONFIRM_FOR for t, d in self.dialbacks)

    # -- what we know ---------------------------------------------------------------------

    def interface_ips(self) -> list[str]:
        return announce.interface_ips(self.listen_hosts, self._local())

    def host_candidates(self) -> list[tuple[str, int]]:
        """This device's private addresses with its listening port: what a peer behind the same
        NAT dials (:mod:`networker.holepunch`); never announced."""
        if not self.listen_port:
            return []
        return [(ip, self.listen_port) for ip in self.interface_ips() if ip_kind(ip) == "private"]

    def confirmed(self) -> list[tuple[str, int]]:
        now = self._clock()
        return list(dict.fromkeys((d.ip, d.port) for t, d in self.dialbacks if d.ok and now - t < 2 * CONFIRM_FOR))

    def dialed_back(self) -> bool | None:
        """The dial-back verdict on recent probes (:func:`classify.dialback_verdict`)."""
        now = self._clock()
        return dialback_verdict(d for t, d in self.dialbacks if now - t < 2 * CONFIRM_FOR)

    def dht_addresses(self) -> list[str]:
        extra: list[str] = []
        for source in self.extra_addresses:
            try:
                extra += source()
            except Exception:  # a bug of the hook: announce without it
                log.exception("extra address source failed")
        return announce.dht_addresses(key=self.node.peer_id, listen_port=self.listen_port,
                                      interface_ips=self.interface_ips(), confirmed=self.confirmed(),
                                      mapped=self.mapped, extra=extra, allow_loopback=self.allow_loopback)

    def state(self) -> Reachability:
        return classify(listen_port=self.listen_port, interface_ips=self.interface_ips(),
                        observations=self.observations, dialbacks=[d for _, d in self.dialbacks],
                        mapped=self.mapped, peers=len(self.node.peers), dht_contacts=self.dht_contacts(),
                        bootstrap=self.bootstrap)

    def status(self) -> dict[str, object]:
        doc = self.state().as_dict()
        doc["port"] = self.listen_port
        doc["mapped"] = f"{self.mapped[0]}:{self.mapped[1]}" if self.mapped else None
        doc["portmap"] = self.portmap.status() if self.portmap is not None else {"state": "off"}
        return doc

    # -- port mapping ---------------------------------------------------------------------

    def start_portmap(self, *, gateway: str = "", udp_port: int = 0) -> PortMapper | None:
        """Map the listening port (and the DHT's UDP port) on the router with NAT-PMP or UPnP-IGD; nothing
        when listening on loopback only or when there is no gateway."""
        if not self.listen_port or all(ip_kind(h) == "loopback" for h in self.listen_hosts):
            return None
        gateway = gateway or default_gateway() or ""
        if not gateway:
            log.info("no default gateway: no port mapping")
            return None

        def changed(address: tuple[str, int] | None) -> None:
            self.mapped = address
            if address is not None:
                self.reprobe()

        client = FirstAnswering([PcpClient(gateway), NatPmpClient(gateway), UpnpClient()])
        self.portmap = PortMapper(client, wanted_ports(self.listen_port, udp_port), on_change=changed)
        self.portmap.start()
        return self.portmap

    async def close(self) -> None:
        if self.portmap is not None:
            await self.portmap.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
