"""Small limits shared by the DHT's parts: who counts as "the same host" (:class:`Diversity`,
for the routing table, lookups and topic storage), and a log that a flood of bad datagrams
cannot fill.

:func:`ip_groups` maps a sender IP to the two groups the DHT limits per topic (storage) and per
routing-table bucket: the address itself and its subnet, a /24 for IPv4 and a /64 for IPv6
(what one customer of an ISP usually holds; BitTorrent and libp2p DHTs group the same way).
IPv4-mapped IPv6 addresses count as their IPv4 address; a source that is not an IP (the
storage's ``"local"``) is its own group.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

IPV4_SUBNET = 24
IPV6_SUBNET = 64


@lru_cache(maxsize=4096)
def ip_groups(source: str) -> tuple[str, str]:
    """``(ip, subnet)`` of a sender, as text."""
    try:
        ip = ipaddress.ip_address(source)
    except ValueError:
        return source, source
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    bits = IPV4_SUBNET if ip.version == 4 else IPV6_SUBNET
    return str(ip), str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


class RateLimitedLog:
    """At most ``burst`` lines per ``interval`` seconds; the lines held back are counted and the
    count is reported with the next line let through. Never a traceback: the lines are about
    what remotes sent, not about our code."""

    def __init__(self, logger: logging.Logger, level: int = logging.DEBUG, interval: float = 10.0,
                 burst: int = 5, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.level = level
        self.interval = interval
        self.burst = burst
        self.clock = clock
        self._window = -interval
        self._used = 0
        self.suppressed = 0
        self.lines = 0

    def __call__(self, message: str, *args: object) -> bool:
        """Log ``message % args`` unless the budget is spent; return whether it was logged."""
        now = self.clock()
        if now - self._window >= self.interval:
            self._window, self._used = now, 0
        if self._used >= self.burst:
            self.suppressed += 1
            return False
        self._used += 1
        self.lines += 1
        if self.suppressed:
            message += " (%d similar lines suppressed)"
            args = (*args, self.suppressed)
            self.suppressed = 0
        self.logger.log(self.level, message, *args)
        return True


@dataclass(frozen=True, slots=True)
class Diversity:
    """How many of the contacts a node keeps in one routing-table bucket, or counts among the k
    closest of a lookup, may share a host (``per_ip``) or a /24-or-/64 network
    (``per_subnet``). 20 node ids chosen near a topic and run from one machine then take two
    of the k places, not all of them (the eclipse attack).

    ``loopback_ports_distinct``: count each loopback *port* as a host of its own, for tests and
    single-machine setups where every node runs on 127.0.0.1 (the DHT sets it together with
    ``allow_loopback``)."""

    per_ip: int = 2
    per_subnet: int = 4
    loopback_ports_distinct: bool = False

    def groups(self, ip: str, port: int) -> tuple[str, str]:
        return _groups(self.loopback_ports_distinct, ip, port)

    def source(self, address: tuple[str, int]) -> str:
        """The sender as the storage's per-IP limits see it."""
        if self.loopback_ports_distinct and _is_loopback(address[0]):
            return f"{address[0]}:{address[1]}"
        return address[0]


class DiversityCount:
    """Counts hosts and networks while walking contacts; :meth:`admit` says whether one more
    contact from ``(ip, port)`` fits, and counts it if so."""

    def __init__(self, diversity: Diversity) -> None:
        self.diversity = diversity
        self.ips: Counter[str] = Counter()
        self.subnets: Counter[str] = Counter()

    def fits(self, ip: str, port: int) -> bool:
        host, subnet = self.diversity.groups(ip, port)
        return self.ips[host] < self.diversity.per_ip and self.subnets[subnet] < self.diversity.per_subnet

    def add(self, ip: str, port: int) -> None:
        host, subnet = self.diversity.groups(ip, port)
        self.ips[host] += 1
        self.subnets[subnet] += 1

    def admit(self, ip: str, port: int) -> bool:
        if not self.fits(ip, port):
            return False
        self.add(ip, port)
        return True


@lru_cache(maxsize=8192)
def _groups(loopback_ports_distinct: bool, ip: str, port: int) -> tuple[str, str]:
    if loopback_ports_distinct and _is_loopback(ip):
        return f"{ip}:{port}", f"{ip}:{port}"
    return ip_groups(ip)


@lru_cache(maxsize=4096)
def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False
