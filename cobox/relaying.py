"""The daemon's relaying: offering a relay (``[relay] enabled``) and using relays (``[relay] use``).

Theory of operation
-------------------
*Reachable*, for the ``"auto"`` settings: reach's dial-back verdict when it has one (a peer
dialled this device back: yes; peers at two IPs tried and could not: no, even with a public
address on an interface, e.g. behind a firewall), otherwise whether one of the daemon's
advertised addresses is reachable from outside its own network (not loopback, RFC 1918, CGNAT,
link-local or ULA; :func:`networker.relay.is_behind_nat_ip`). It is decided at the start and
again at each turn of the DHT loop: an ``"auto"`` relay offer stops when the device turns out
unreachable and starts when it turns out reachable; ``"auto"`` relay use starts when the device
turns out unreachable (and then stays: reservations cost little).

*Offering*: with ``enabled = true``, or ``"auto"`` when the daemon is reachable, the daemon
runs a :class:`RelayServer` on ``[relay] listen`` with the configured limits (a circuit between
two devices connected to it with a group channel open, its own groups' members, goes without
limits: a backup peer relays for its group), and announces the relay's addresses on the DHT
under :data:`RELAY_TOPIC` so that devices behind NAT find it.

*Using*: with ``use = true``, or ``"auto"`` when the daemon is not reachable, a
:class:`RelayClient` keeps reservations with ``reservations`` relays taken from ``[relay]
servers``, from the relays named in invites this daemon joined with (the relay hop of an
invite's relayed peer hint: :meth:`Relaying.learn`) and from DHT lookups of :data:`RELAY_TOPIC`
(after 0.5 s, 1 s, 2 s, ... up to every ``lookup_interval`` seconds, while it holds fewer than
it wants). Its relayed addresses join the advertised ones (so they are announced with every
group), and a change wakes the swarm to announce again. Incoming circuits become node
connections like accepted ones.

*Upgrading*: an :class:`networker.holepunch.Upgrader` moves every relayed peer to a direct
connection when it can (its direct addresses from the swarm, then a hole punch unless
``hole_punch = false``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from networker import (
    Address,
    AddressError,
    NetworkError,
    RelayClient,
    RelayLimits,
    RelayServer,
    Upgrader,
    bind_or_fallback,
    is_behind_nat_ip,
)
from networker import parse_address as parse

from . import netview
from .settings import RelaySettings

log = logging.getLogger(__name__)
MAX_HINTED = 8
RELAY_TOPIC = hashlib.blake2b(b"cobox relays v1", digest_size=32).digest()


def is_auto(setting: object) -> bool:
    return not isinstance(setting, bool) and not (isinstance(setting, str) and setting.lower() in ("true", "false"))


def wanted(setting: object, reachable: bool) -> bool:
    """``true``/``false`` as given; ``"auto"``: whether ``reachable``."""
    if isinstance(setting, bool):
        return setting
    if isinstance(setting, str) and setting.lower() in ("true", "false"):
        return setting.lower() == "true"
    return reachable


def publicly_reachable(addresses: list[str]) -> bool:
    for text in addresses:
        try:
            alts = parse(text).alternatives
        except AddressError:
            continue
        if any(a.transport == "tcp" and not a.relayed and not is_behind_nat_ip(a.host) for a in alts):
            return True
    return False


def limits(cfg: RelaySettings) -> RelayLimits:
    return RelayLimits(max_reservations=cfg.max_reservations, max_circuits=cfg.max_circuits,
                       circuit_bytes_per_second=cfg.circuit_kbps * 1024,
                       total_bytes_per_second=cfg.total_kbps * 1024)


class Relaying:
    def __init__(self, cfg: RelaySettings, node: Any, dht: Any, swarm: Any, advertised: Callable[[], list[str]],
                 expand: Callable[[str], list[str]], dialed_back: Callable[[], bool | None] = lambda: None,
                 host_candidates: Callable[[], list[tuple[str, int]]] = list) -> None:
        """``advertised()``: the daemon's direct addresses; ``expand(address)``: a listening
        address with wildcard hosts replaced by this machine's addresses; ``dialed_back()``:
        reach's dial-back verdict (``None``: not known)."""
        self.cfg = cfg
        self.node = node
        self.dht = dht
        self.swarm = swarm
        self.advertised = advertised
        self.expand = expand
        self.dialed_back = dialed_back
        self.host_candidates = host_candidates
        self.on_change = swarm.refresh
        self.server: RelayServer | None = None
        self.client: RelayClient | None = None
        self.upgrader: Upgrader | None = None
        self.found: list[str] = []
        self.hinted: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        reachable = self.reachable()
        if wanted(self.cfg.enabled, reachable):
            await self._offer()
        if wanted(self.cfg.use, not reachable):
            self._use()
        self.upgrader = Upgrader(self.node, addresses_of=self._addresses_of, host_candidates=self.host_candidates,
                                 punch=self.cfg.hole_punch)
        if self.dht is not None or is_auto(self.cfg.enabled) or is_auto(self.cfg.use):
            self._task = asyncio.get_running_loop().create_task(self._dht_loop(), name="relay-dht")

    def reachable(self) -> bool:
        """Whether others can dial this daemon (module docstring)."""
        verdict = self.dialed_back()
        return publicly_reachable(self.advertised()) if verdict is None else verdict

    async def reconsider(self) -> None:
        """Follow a changed reachability for the ``"auto"`` settings (module docstring)."""
        reachable = self.reachable()
        if is_auto(self.cfg.use) and self.client is None and not reachable:
            log.info("not reachable from outside: using relays")
            self._use()
        if is_auto(self.cfg.enabled) and (self.server is not None) != reachable:
            if reachable:
                await self._offer()
            elif self.server is not None:
                log.info("not reachable from outside: no longer offering a relay")
                server, self.server = self.server, None
                await server.close()

    async def _offer(self) -> None:
        server = RelayServer(self.node.identity, limits(self.cfg), exempt=self._members_together,
                             rates=self.node.rates)
        try:
            alt = parse(self.cfg.listen).alternatives[0]
            await bind_or_fallback(alt.port, lambda port: server.listen(
                Address(alt.transport, host=alt.host, port=port).format()), "relay")
        except (OSError, NetworkError) as e:
            log.warning("cannot offer a relay on %s: %s", self.cfg.listen, e)
            return
        self.server = server
        log.info("offering a relay on %s", ", ".join(self.server_addresses()))

    def _use(self) -> None:
        self.client = RelayClient(self.node.identity, self.node.take_connection, candidates=self.candidates,
                                  want=self.cfg.reservations, on_change=self.on_change)
        self.client.start()

    def _members_together(self, a: bytes, b: bytes) -> bool:
        """Whether ``a`` and ``b`` are both connected here with a live channel of one and the same
        group of this daemon's (a backup peer's members): their circuit goes without relay limits.
        A member of one group gets no free circuits to members of another."""
        groups = []
        for pid in (a, b):
            peer = self.node.peers.get(pid)
            if peer is None or peer.closed.is_set():
                return False
            groups.append(set(netview.peer_groups(peer)))
        return bool(groups[0] & groups[1])

    def _addresses_of(self, peer_id: bytes) -> str | None:
        cand = self.swarm.candidates.get(peer_id)
        if cand is None:
            self.swarm.refresh()  # look the groups up now: the peer's direct addresses may be there
            return None
        return cand.address

    def server_addresses(self) -> list[str]:
        if self.server is None:
            return []
        out = [a for text in self.server.addresses for a in self.expand(text)]
        return [a for a in out if not parse(a).alternatives[0].relayed][:8]

    def candidates(self) -> list[str]:
        return list(dict.fromkeys([*self.cfg.servers, *self.hinted, *self.found]))

    def learn(self, addresses: Iterable[str]) -> None:
        """Relays named in an invite: the relay hop of each relayed address (at most
        :data:`MAX_HINTED` kept, the newest), tried for reservations like the configured ones."""
        for text in addresses:
            try:
                alt = parse(text).alternatives[0]
            except AddressError:
                continue
            if alt.relayed:
                hop = alt.relay_hop().format()
                self.hinted = [hop, *(h for h in self.hinted if h != hop)][:MAX_HINTED]
        if self.client is not None:
            self.client.refresh()

    def relayed_addresses(self) -> list[str]:
        return self.client.relayed_addresses() if self.client is not None else []

    def status(self) -> dict[str, Any]:
        return {"offering": self.server.status() if self.server is not None else None,
                "reservations": self.client.status() if self.client is not None else [],
                "hole_punched": self.upgrader.punched if self.upgrader is not None else 0,
                "hole_punch_failures": self.upgrader.punch_failures if self.upgrader is not None else 0}

    async def _dht_loop(self) -> None:
        interval = max(self.cfg.lookup_interval, 0.5)
        delay = 0.5  # soon after the start (the DHT is still joining), then less often
        while True:
            with contextlib.suppress(Exception):
                await self.reconsider()
            with contextlib.suppress(Exception):
                if self.dht is not None and self.server is not None:
                    addresses = self.server_addresses()
                    if addresses:
                        await self.dht.announce(RELAY_TOPIC, addresses)
                client = self.client
                if self.dht is not None and client is not None and len(client.reservations) < client.want:
                    found = await self.dht.lookup(RELAY_TOPIC)
                    me = self.node.identity.peer_id
                    self.found = [addr for pid, addr in found if pid != me]
                    client.refresh()
            await asyncio.sleep(delay)
            delay = min(interval, delay * 2)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.upgrader is not None:
            await self.upgrader.close()
        if self.client is not None:
            await self.client.close()
        if self.server is not None:
            await self.server.close()


def expand_wildcard(text: str, local_ips: Callable[[bool], list[str]]) -> list[str]:
    out = []
    for alt in parse(text).alternatives:
        if alt.transport == "tcp" and alt.host in ("0.0.0.0", "::"):
            ips = local_ips(False) + (local_ips(True) if alt.host == "::" else [])  # "::" is dual-stack
            out += [Address("tcp", host=ip, port=alt.port, peer_key=alt.peer_key).format() for ip in ips]
        else:
            out.append(alt.format())
    return out
