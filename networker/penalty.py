"""The penalty box: a remote that misbehaves and keeps coming back is refused for a while.

Theory of operation
-------------------
A *key* names who misbehaved: a peer id (``bytes``) or an IP key (``str``, see
:func:`networker.limits.ip_key`). The node keeps one box per kind, so a flood of throwaway
peer ids cannot push an IP out of its box. Each offence (a protocol error that closed the
connection, a handshake of garbage) is recorded with :meth:`PenaltyBox.offend`:

- the first ``free`` offences cost nothing but are remembered (a bug or a version mismatch
  happens once; so does a connection cut in the middle of a message);
- every further offence refuses the key for ``base * 2 ** k`` seconds (``k`` = offences past the
  free ones, minus one), capped at ``cap``: 10 s, 20 s, 40 s ... 10 min by default;
- an offence is forgotten ``forget`` seconds after the last one (the count starts again).

While a key is refused, :meth:`PenaltyBox.refused_for` says for how many more seconds; the
caller closes the connection at once (before the handshake for an IP, right after it for a
peer id) without talking to it.

Memory is bounded: at most ``max_keys`` keys per box, least recently offending dropped first.
The box is pure: the caller passes the clock (``now``), so it is tested without sockets or
sleeps.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class PenaltyPolicy:
    base: float = 10.0      # seconds refused at the first paid offence
    cap: float = 600.0      # longest refusal
    free: int = 1           # offences that are only remembered
    forget: float = 3600.0  # seconds after the last offence when the count starts again
    max_keys: int = 4096    # keys remembered per box

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base or self.free < 0 or self.forget <= 0 or self.max_keys < 1:
            raise ValueError(f"inconsistent penalty policy: {self}")

    def refusal(self, offences: int) -> float:
        """Seconds a key with ``offences`` offences (counting the latest) is refused."""
        paid = offences - self.free
        if paid <= 0:
            return 0.0
        return min(self.cap, self.base * 2.0 ** min(paid - 1, 64))


@dataclass(slots=True)
class _Record:
    offences: int
    last: float
    until: float


class PenaltyBox(Generic[K]):
    """Offences and refusals per key; see the module docstring."""

    def __init__(self, policy: PenaltyPolicy | None = None, *, clock: Callable[[], float]) -> None:
        self.policy = policy or PenaltyPolicy()
        self._clock = clock
        self._records: collections.OrderedDict[K, _Record] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def offend(self, key: K) -> float:
        """Record an offence of ``key``; return the seconds it is now refused (0: a free one)."""
        now = self._clock()
        rec = self._records.pop(key, None)
        if rec is None or now - rec.last >= self.policy.forget:
            rec = _Record(0, now, now)
        rec.offences += 1
        rec.last = now
        rec.until = max(rec.until, now + self.policy.refusal(rec.offences))
        self._records[key] = rec  # most recent last
        while len(self._records) > self.policy.max_keys:
            self._records.popitem(last=False)
        return rec.until - now

    def refused_for(self, key: K) -> float:
        """Seconds ``key`` is still refused (0: not refused)."""
        rec = self._records.get(key)
        if rec is None:
            return 0.0
        return max(0.0, rec.until - self._clock())

    def offences(self, key: K) -> int:
        """Offences of ``key`` still remembered."""
        rec = self._records.get(key)
        if rec is None or self._clock() - rec.last >= self.policy.forget:
            return 0
        return rec.offences

