"""A bounded history of per-group counters, sampled about once a second, for the dashboard's plot.

Each sample holds the bytes this device has sent and received in all and, per group, the
entries this device holds and the bytes it has downloaded for the group (all only grow while
the daemon runs and the group exists); the page plots the differences between consecutive
samples: download and upload in bytes/s, or per group bytes/s or entries/s. ``HISTORY``
samples are kept (the oldest drop off), so memory stays bounded however long the daemon runs.
"""

from __future__ import annotations

from collections import deque
from typing import Any

HISTORY = 300  # five minutes at one sample a second


class Throughput:
    def __init__(self, limit: int = HISTORY) -> None:
        self.samples: deque[dict[str, Any]] = deque(maxlen=limit)

    def record(self, t: float, counters: dict[str, tuple[int, int]],
               traffic: tuple[int, int] = (0, 0)) -> dict[str, Any]:
        """Record ``{group: (entries, bytes)}`` and the device's ``(sent, received)`` bytes at
        time ``t``; return the sample."""
        sample = {"t": round(t, 3), "sent": traffic[0], "received": traffic[1],
                  "groups": {name: {"entries": e, "bytes": b} for name, (e, b) in counters.items()}}
        self.samples.append(sample)
        return sample

    def history(self) -> list[dict[str, Any]]:
        return list(self.samples)

    def latest(self) -> dict[str, Any] | None:
        return self.samples[-1] if self.samples else None
