"""Bandwidth limits: token buckets for what this device sends and receives, sans-IO.

Theory of operation
-------------------
A :class:`TokenBucket` holds up to ``burst`` bytes of credit and gains ``rate`` bytes of it per
second. :meth:`TokenBucket.take` debits ``n`` bytes at once, even into debt, and answers how
many seconds the caller must wait before those bytes may go (0: now). Debiting before waiting
makes concurrent callers queue up fairly: the second one's wait includes the first one's debt.
Over any stretch of time the bytes let through are at most ``burst + rate * elapsed`` plus one
message, so the burst is kept small (:data:`BURST_SECONDS` of the rate, at least
:data:`MIN_BURST`) and a measured rate is within a few percent of the limit after a second or
two. A rate of 0 means unlimited (no waiting, nothing counted).

A :class:`RateLimiter` holds the device's buckets, set from :class:`RateLimits`:

- one for everything sent and one for everything received (``send``/``recv``, bytes per
  second), which connections inside the local network skip unless ``limit_lan`` (Syncthing's
  default: the LAN is not limited);
- per device (:class:`DeviceLimit`, by peer id), a send and a receive bucket that apply to that
  device's connection whether it is on the LAN or not, on top of the device-wide ones.

Each connection gets a :class:`Lane` (:meth:`RateLimiter.lane`): the peer id and whether the
connection is on the LAN. A lane looks its buckets up at every call, so
:meth:`RateLimiter.configure` (a runtime change through the API) applies to connections that
are already open; credit or debt already accumulated is kept (credit capped by the new burst),
and a bucket that was unlimited starts with a full burst.

Everything takes the time as an argument; the asyncio shells (:mod:`networker.transport`,
:mod:`networker.relay.server`) pass ``loop.time()`` and sleep for what ``take`` answers.
"""

from __future__ import annotations

from dataclasses import dataclass

BURST_SECONDS = 0.05  # credit a bucket may hold, as seconds of its rate
MIN_BURST = 4096  # ...but at least this many bytes


@dataclass(frozen=True, slots=True)
class DeviceLimit:
    """One device's own limits in bytes per second (0: none of its own)."""

    peer_id: bytes
    send: int = 0
    recv: int = 0

    def __post_init__(self) -> None:
        if len(self.peer_id) != 32 or self.send < 0 or self.recv < 0:
            raise ValueError("a device limit needs a 32-byte peer id and rates of at least 0")


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The device's bandwidth limits, bytes per second (0: unlimited)."""

    send: int = 0
    recv: int = 0
    limit_lan: bool = False  # whether connections inside the local network obey send/recv too
    devices: tuple[DeviceLimit, ...] = ()

    def __post_init__(self) -> None:
        if self.send < 0 or self.recv < 0:
            raise ValueError("rates must be at least 0")
        if len({d.peer_id for d in self.devices}) != len(self.devices):
            raise ValueError("a device is given more than one limit")

    def device(self, peer_id: bytes) -> DeviceLimit | None:
        return next((d for d in self.devices if d.peer_id == peer_id), None)


class TokenBucket:
    """``rate`` bytes per second with a small burst; see the module docstring."""

    def __init__(self, rate: int, now: float) -> None:
        self.rate = 0
        self.burst = 0.0
        self.tokens = 0.0
        self.at = now
        self.set_rate(rate, now)

    def set_rate(self, rate: int, now: float) -> None:
        """Change the rate; credit earned so far at the old rate is kept, up to the new burst."""
        if rate < 0:
            raise ValueError("a rate is at least 0")
        self._refill(now)
        was_unlimited = not self.rate
        self.rate = rate
        self.burst = max(rate * BURST_SECONDS, float(MIN_BURST)) if rate else 0.0
        self.tokens = self.burst if was_unlimited else min(self.tokens, self.burst)

    def _refill(self, now: float) -> None:
        if self.rate and now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = max(self.at, now)

    def take(self, n: int, now: float) -> float:
        """Debit ``n`` bytes; the seconds to wait before they may go (0: now)."""
        if self.rate <= 0:
            return 0.0
        self._refill(now)
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class RateLimiter:
    """The device's buckets (module docstring)."""

    def __init__(self, limits: RateLimits | None = None, now: float = 0.0) -> None:
        self.limits = RateLimits()
        self.send = TokenBucket(0, now)
        self.recv = TokenBucket(0, now)
        self._devices: dict[bytes, tuple[TokenBucket, TokenBucket]] = {}
        self.configure(limits or RateLimits(), now)

    def configure(self, limits: RateLimits, now: float) -> None:
        """Apply new limits, to open connections too."""
        self.limits = limits
        self.send.set_rate(limits.send, now)
        self.recv.set_rate(limits.recv, now)
        kept: dict[bytes, tuple[TokenBucket, TokenBucket]] = {}
        for d in limits.devices:
            buckets = self._devices.get(d.peer_id) or (TokenBucket(0, now), TokenBucket(0, now))
            buckets[0].set_rate(d.send, now)
            buckets[1].set_rate(d.recv, now)
            kept[d.peer_id] = buckets
        self._devices = kept

    def lane(self, peer_id: bytes, lan: bool) -> Lane:
        return Lane(self, peer_id, lan)

    def _wait(self, peer_id: bytes, lan: bool, n: int, now: float, sending: bool) -> float:
        wait = 0.0
        if not lan or self.limits.limit_lan:
            wait = (self.send if sending else self.recv).take(n, now)
        own = self._devices.get(peer_id)
        if own is not None:
            wait = max(wait, own[0 if sending else 1].take(n, now))
        return wait


@dataclass(frozen=True, slots=True)
class Lane:
    """One connection's way through the device's buckets."""

    limiter: RateLimiter
    peer_id: bytes
    lan: bool

    def sending(self, n: int, now: float) -> float:
        """Seconds to wait before sending ``n`` bytes to this peer."""
        return self.limiter._wait(self.peer_id, self.lan, n, now, True)

    def received(self, n: int, now: float) -> float:
        """Seconds to wait, after receiving ``n`` bytes from this peer, before reading more."""
        return self.limiter._wait(self.peer_id, self.lan, n, now, False)
