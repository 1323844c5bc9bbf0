"""Connection limits against strangers at the peer port: pending handshakes, slots, idle
connections, and log lines that stay few under a flood.

Theory of operation
-------------------
Anyone can open TCP connections to the peer port and complete Noise handshakes with throwaway
identities. Only the capability proof in a channel ``Open`` shows that a remote shares a group
with us, so every new connection starts as a *stranger* and becomes a *group peer* when one of
its channels is open on both sides (``Channel.live``). Everything here is pure: the callers
(:mod:`networker.transport` and :mod:`networker.node`) pass the clock and the current state.

Pending handshakes (:class:`PendingHandshakes`): at most ``max_pending`` accepted connections
that have not finished the handshake, at most ``max_pending_per_ip`` of them per IP key. A new
one over a limit pushes out the *oldest* pending one (of the same IP when the IP is over its
limit, else of the IP holding the most): the newest always gets its chance, a flood only churns
its own slots, and an honest handshake (one round trip) survives unless a cap's worth of new
connections arrive while it runs. File descriptors held by the peer port are thereby bounded by
``max_pending + max_connections``.

Slots (:func:`admit`): at most ``max_connections`` connections; strangers may hold at most
``stranger_slots`` of them (the rest is the reserve only group peers use), and at most
``max_per_ip`` per IP key. A newcomer over a limit evicts the oldest stranger (of its own IP
for the per-IP limit, else of the IP with the most strangers); group peers are never evicted
for a newcomer. When every slot holds a group peer the newcomer is refused.

Idle (:class:`Usage`): a connection with no live channel and no service call for
``idle_timeout`` seconds is closed. Calls in flight keep it; so does a live channel, and
``idle_timeout`` counts again from the moment the last channel was last seen live.

IP keys (:func:`ip_key`): an IPv4 address as it is (IPv4-mapped IPv6 too), an IPv6 address by
its /64 (one host usually holds a whole /64), anything else (unix sockets) ``None``, which no
per-IP limit applies to.

Logging (:class:`LogThrottle`): one line per kind of event and interval, with a count of those
it stood for, instead of one line (or traceback) per connection.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int = 64       # connections after the handshake, strangers and group peers
    group_reserve: float = 0.25     # share of max_connections that only group peers may hold
    max_per_ip: int = 8             # strangers per IP key
    idle_timeout: float = 10.0      # seconds a connection may stay without a channel or call
    max_pending: int = 64           # handshakes in progress
    max_pending_per_ip: int = 8     # handshakes in progress per IP key

    def __post_init__(self) -> None:
        if (self.max_connections < 1 or not 0.0 <= self.group_reserve < 1.0 or self.max_per_ip < 1
                or self.idle_timeout <= 0 or self.max_pending < 1 or self.max_pending_per_ip < 1):
            raise ValueError(f"inconsistent connection limits: {self}")

    @property
    def stranger_slots(self) -> int:
        """Slots a connection without a shared group may hold (at least one: every newcomer
        is a stranger until its first channel opens)."""
        return max(1, self.max_connections - int(self.max_connections * self.group_reserve))


def ip_key(host: str | None) -> str | None:
    """The key per-IP limits and penalties count ``host`` under (see the module docstring)."""
    if not host:
        return None
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


# -- pending handshakes ---------------------------------------------------------------------------

class PendingHandshakes(Generic[T]):
    """Accepted connections whose handshake runs, by IP key, oldest first."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self._by_ip: dict[str | None, collections.OrderedDict[T, int]] = {}  # token -> arrival number
        self._ip_of: dict[T, str | None] = {}
        self._arrivals = 0

    def __len__(self) -> int:
        return len(self._ip_of)

    def __contains__(self, token: object) -> bool:
        return token in self._ip_of

    def count(self, ip: str | None) -> int:
        return len(self._by_ip.get(ip, ()))

    def add(self, token: T, ip: str | None) -> list[T]:
        """Add ``token``; return the tokens pushed out to make room (close them)."""
        if token in self._ip_of:
            raise ValueError("token already pending")
        evicted: list[T] = []
        if ip is not None:
            while self.count(ip) >= self.max_per_ip:
                evicted.append(self._pop_oldest(ip))
        while len(self._ip_of) >= self.max_total:
            evicted.append(self._pop_oldest(self._most_crowded()))
        self._arrivals += 1
        self._by_ip.setdefault(ip, collections.OrderedDict())[token] = self._arrivals
        self._ip_of[token] = ip
        return evicted

    def remove(self, token: T) -> None:
        """Forget ``token`` (its handshake ended); unknown tokens are ignored."""
        if token not in self._ip_of:
            return
        ip = self._ip_of.pop(token)
        tokens = self._by_ip[ip]
        del tokens[token]
        if not tokens:
            del self._by_ip[ip]

    def oldest(self) -> T | None:
        """The token to shed first when the process runs out of file descriptors."""
        if not self._ip_of:
            return None
        return next(iter(self._by_ip[self._most_crowded()]))

    def _most_crowded(self) -> str | None:
        """The IP with the most pending; among equals, the one holding the oldest."""
        return max(self._by_ip, key=lambda ip: (len(self._by_ip[ip]), -next(iter(self._by_ip[ip].values()))))

    def _pop_oldest(self, ip: str | None) -> T:
        token = next(iter(self._by_ip[ip]))
        self.remove(token)
        return token


# -- slots ----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Slot:
    """One established connection as the slot rules see it."""

    key: bytes            # the remote peer id
    ip: str | None        # its IP key
    since: float          # when it was added
    shared: bool          # a channel is open on both sides: it shares a group with us


@dataclass(frozen=True, slots=True)
class Admission:
    admitted: bool
    evict: tuple[bytes, ...] = ()   # connections to close first, to make room
    reason: str = ""                # why (for the log and the refusal error)


def admit(limits: ConnectionLimits, slots: Iterable[Slot], ip: str | None) -> Admission:
    """Whether a new connection from ``ip`` gets a slot, and whom it evicts (module docstring)."""
    slots = list(slots)
    strangers = sorted((s for s in slots if not s.shared), key=lambda s: s.since)
    total = len(slots)
    evict: list[bytes] = []
    reasons: list[str] = []
    if ip is not None:
        same_ip = [s for s in strangers if s.ip == ip]
        while len(same_ip) >= limits.max_per_ip:
            victim = same_ip.pop(0)
            strangers.remove(victim)
            evict.append(victim.key)
            reasons.append(f"more than {limits.max_per_ip} connections without a shared group from {ip}")
    total -= len(evict)
    while total >= limits.max_connections or len(strangers) >= limits.stranger_slots:
        if not strangers:
            return Admission(False, (), f"connection limit reached ({limits.max_connections} group peers)")
        victim = _oldest_of_most_crowded(strangers)
        strangers.remove(victim)
        evict.append(victim.key)
        total -= 1
        reasons.append("no free slot for a connection without a shared group")
    return Admission(True, tuple(evict), reasons[0] if reasons else "")


def _oldest_of_most_crowded(strangers: list[Slot]) -> Slot:
    counts = collections.Counter(s.ip for s in strangers)
    top = max(counts.values())
    return next(s for s in strangers if counts[s.ip] == top)  # strangers is oldest first


# -- idle connections -----------------------------------------------------------------------------

class Usage:
    """What the idle rule needs to know of one connection: when it was last in use."""

    def __init__(self, now: float) -> None:
        self.quiet_since = now
        self.calls = 0

    def call_started(self) -> None:
        self.calls += 1

    def call_ended(self, now: float) -> None:
        self.calls = max(0, self.calls - 1)
        self.quiet_since = max(self.quiet_since, now)

    def check(self, now: float, shared: bool, idle_timeout: float) -> float | None:
        """Seconds until the next check, or ``None``: the connection is idle, close it."""
        if shared or self.calls:
            self.quiet_since = now
            return idle_timeout
        remaining = self.quiet_since + idle_timeout - now
        if remaining <= 0:
            return None
        return remaining


# -- logging --------------------------------------------------------------------------------------

class LogThrottle:
    """At most one log line per kind and ``interval`` seconds; the next one says how many it
    stood for."""

    def __init__(self, logger: logging.Logger, *, interval: float = 60.0,
                 clock: Callable[[], float]) -> None:
        self._log = logger
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: collections.Counter[str] = collections.Counter()
        self.counts: collections.Counter[str] = collections.Counter()  # every event, by kind

    def note(self, kind: str, level: int, message: str, *args: object) -> None:
        self.counts[kind] += 1
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._suppressed[kind] += 1
            return
        more = self._suppressed.pop(kind, 0)
        self._last[kind] = now
        if more and last is not None:  # only what came after a logged one is ever suppressed
            self._log.log(level, message + " (and %d more like it in the last %.0fs)", *args, more, now - last)
        else:
            self._log.log(level, message, *args)
