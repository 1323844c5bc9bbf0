"""Exponential backoff, capped: one formula for every retry loop (swarm dials, relays, port
mapping, DHT announces, the daemon's supervisor).

``base * factor ** (n - 1)`` overflows a float once ``n`` passes about 1,024 (hours of failures
of a loop retrying every second or so), and ``OverflowError`` would kill the loop for good: the
exponent is bounded first, far past any cap that matters.
"""

from __future__ import annotations

MAX_EXPONENT = 64


def capped(base: float, cap: float, failures: int, factor: float = 2.0) -> float:
    """The delay after ``failures`` (>= 1) failures in a row: ``base * factor ** (failures - 1)``,
    at most ``cap``."""
    return min(cap, base * factor ** min(max(failures - 1, 0), MAX_EXPONENT))
