"""Keep port mappings on the home router: made at start, renewed before expiry, removed at stop.

The daemon speaks PCP (:mod:`.pcp`), NAT-PMP (:mod:`.natpmp`) and UPnP-IGD (:mod:`.upnp`), trying
them in that order (:class:`FirstAnswering`): PCP and NAT-PMP are one datagram to the gateway
(a NAT-PMP-only router answers PCP with "unsupported version", so the fallback costs one round
trip); UPnP needs a multicast search and HTTP. All three are our own small clients (no
dependency): the protocols are small, and the libraries on PyPI are blocking (miniupnpc,
py-natpmp) or pull in much more than the four calls needed (async-upnp-client).

Theory of operation
-------------------
:class:`PortMapper` holds the mappings the daemon wants (TCP for peer connections, UDP for the
DHT, each asking for the same external port as the internal one, so a router that grants it
makes the fixed port 47100 work from outside). One task runs :meth:`PortMapper.renew` over and
over: it asks for the external address and every mapping, then sleeps half the shortest
lifetime the router granted (routers may shorten what we ask), so a mapping is renewed well
before it expires. When the router refuses or does not answer, the mapper says so in
:meth:`status` and tries again after :data:`RETRY` seconds, doubling up to :data:`RETRY_MAX`
(a router without NAT-PMP costs one short burst of datagrams now and then, no more).

``on_change((ip, port) | None)`` is told the external TCP address whenever it changes (the
announcer adds it to what goes to the DHT). :meth:`stop` removes every mapping it made (lifetime
0), waiting at most :data:`STOP_TIMEOUT` seconds: a daemon that stops leaves no forwarded port
behind.

States (a table; an illegal transition raises): ``idle -> mapping -> mapped | failed``,
``mapped -> mapping`` (renewal), ``failed -> mapping`` (retry), any -> ``stopped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from ..backoff import capped
from ..errors import NetworkError
from .natpmp import TCP, UDP, Mapping

log = logging.getLogger(__name__)

LIFETIME = 7200      # seconds asked for (RFC 6886's recommendation)
MIN_RENEW = 30.0     # never renew more often than this, whatever the router grants
RETRY = 60.0
RETRY_MAX = 1800.0
STOP_TIMEOUT = 3.0

TRANSITIONS = {
    "idle": {"mapping", "stopped"},
    "mapping": {"mapped", "failed", "stopped"},
    "mapped": {"mapping", "stopped"},
    "failed": {"mapping", "stopped"},
    "stopped": set(),
}


class MappingClient(Protocol):
    @property
    def name(self) -> str: ...  # "NAT-PMP", "UPnP-IGD"

    async def external_address(self) -> str: ...
    async def map(self, protocol: int, internal: int, external: int, lifetime: int) -> Mapping: ...
    async def unmap(self, protocol: int, internal: int) -> None: ...


class PortMapper:
    def __init__(self, client: MappingClient, wanted: list[tuple[int, int]], *, lifetime: int = LIFETIME,
                 on_change: Callable[[tuple[str, int] | None], None] = lambda _: None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.client = client
        self.wanted = [(p, port) for p, port in wanted if port]
        self.lifetime = lifetime
        self.on_change = on_change
        self._sleep = sleep
        self.state = "idle"
        self.external_ip: str | None = None
        self.mappings: dict[tuple[int, int], Mapping] = {}
        self.error: str | None = None
        self.failures = 0
        self.renewals = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.client.name

    def _to(self, state: str) -> None:
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"port mapper: {self.state} -> {state} is not a transition")
        self.state = state

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        for (proto, _), m in self.mappings.items():
            if proto == TCP and self.external_ip:
                return self.external_ip, m.external_port
        return None

    async def renew(self) -> float:
        """Make or renew every mapping once; the seconds until the next round."""
        self._to("mapping")
        before = self.tcp_address
        try:
            self.external_ip = await self.client.external_address()
            for proto, port in self.wanted:
                old = self.mappings.get((proto, port))
                m = self.mappings[(proto, port)] = await self.client.map(
                    proto, port, old.external_port if old else port, self.lifetime)
                if m.external_ip:  # PCP names the external IP per mapping
                    self.external_ip = m.external_ip
        except (NetworkError, OSError, TimeoutError) as e:
            self.failures += 1
            self.error = str(e)
            self.mappings.clear()
            self._to("failed")
            self._changed(before)
            if self.failures == 1:
                log.info("%s port mapping failed: %s", self.name, e)
            return capped(RETRY, RETRY_MAX, self.failures)
        self.failures, self.error = 0, None
        self.renewals += 1
        self._to("mapped")
        self._changed(before)
        shortest = min(m.lifetime for m in self.mappings.values()) if self.mappings else self.lifetime
        return max(MIN_RENEW, shortest / 2)

    def _changed(self, before: tuple[str, int] | None) -> None:
        now = self.tcp_address
        if now != before:
            log.info("%s port mapping: %s", self.name, f"{now[0]}:{now[1]}" if now else "none")
            self.on_change(now)

    async def _run(self) -> None:
        while True:
            await self._sleep(await self.renew())

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="portmap")

    async def stop(self) -> None:
        """Stop renewing and remove the mappings made."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        made = list(self.mappings)
        self.mappings.clear()
        self.state = "stopped"  # from any state
        with contextlib.suppress(NetworkError, OSError, TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT):
                for proto, port in made:
                    await self.client.unmap(proto, port)

    def status(self) -> dict[str, object]:
        tcp = self.tcp_address
        return {"protocol": self.name, "state": self.state, "external": f"{tcp[0]}:{tcp[1]}" if tcp else None,
                "mappings": [{"protocol": "tcp" if p == TCP else "udp", "internal": i, "external": m.external_port,
                              "lifetime": m.lifetime} for (p, i), m in self.mappings.items()],
                "error": self.error}


class FirstAnswering:
    """Several protocols behind one :class:`MappingClient`: the first whose router answers
    :meth:`external_address` is used for the mappings, until it fails."""

    def __init__(self, clients: list[MappingClient]) -> None:
        self.clients = clients
        self.current: MappingClient | None = None

    @property
    def name(self) -> str:
        return self.current.name if self.current is not None else " or ".join(c.name for c in self.clients)

    async def external_address(self) -> str:
        errors = []
        order = sorted(self.clients, key=lambda c: c is not self.current)
        for client in order:
            try:
                ip = await client.external_address()
            except (NetworkError, OSError, TimeoutError) as e:
                errors.append(f"{client.name}: {e}")
                continue
            self.current = client
            return ip
        self.current = None
        raise NetworkError("; ".join(errors))

    def _client(self) -> MappingClient:
        if self.current is None:
            raise NetworkError("no port-mapping protocol answered")
        return self.current

    async def map(self, protocol: int, internal: int, external: int, lifetime: int) -> Mapping:
        return await self._client().map(protocol, internal, external, lifetime)

    async def unmap(self, protocol: int, internal: int) -> None:
        await self._client().unmap(protocol, internal)


def wanted_ports(tcp_port: int, udp_port: int) -> list[tuple[int, int]]:
    return [(TCP, tcp_port), (UDP, udp_port)]
