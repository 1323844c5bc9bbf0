"""Two live devices with one identity: detect it, explain it, and stop the flapping.

Theory of operation
-------------------
A restored keyring makes a second device with the identity of the first. If both run, every
peer they both reach sees one peer id arrive from two places: each new connection replaces
the other's (``networker.node``: one connection per peer id), whose device redials, and the
two connections flap, each replacing the other every second or so.

The signal is those replacements. :class:`TwinDetector` (pure, clock injected) counts, per
peer id, the live connections that were replaced by another connection of the same id; at
``THRESHOLD`` replacements within ``WINDOW`` seconds it concludes that two devices share the
id. :class:`TwinGuard` (the daemon's, fed with the node's peer events) then

* logs a warning that says what is happening and what to do;
* holds the connection that is live (``Node.keep_existing`` for ``HOLD`` seconds): the other
  device's connections are closed as they arrive, so the flapping stops and one of the twins
  keeps syncing; its swarm backs off its redials as for any failing dial;
* tells the device it kept, on each of its live group channels, with the extension
  ``TWIN_EXTENSION`` (body: msgpack ``[replacements]``), so that device's ``status`` says its
  identity is live elsewhere too;
* shows the suspect in ``status`` (``twins``: id, replacements, since, the words).

A report is only words in a status: a lying peer can make a device show a warning, nothing
else. Reports are strictly decoded (:func:`decode_report`; a bad one disconnects its sender)
and at most ``MAX_REPORTS`` reporters are kept.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from networker import RemoteProtocolError

from . import netview

log = logging.getLogger("cobox.twins")

TWIN_EXTENSION = "cobox/twin"
WINDOW = 60.0  # seconds
THRESHOLD = 3  # replacements within WINDOW
HOLD = 600.0  # seconds the live connection is held once twins are seen
MAX_TRACKED = 1024  # peer ids whose recent replacements are counted
MAX_REPORTS = 16
REPLACED = "replaced by another connection"  # networker.node's close reason


def encode_report(replacements: int) -> bytes:
    return msgpack.packb([replacements], use_bin_type=True)


def decode_report(body: bytes) -> int:
    """The replacements a peer counted; ``RemoteProtocolError`` for anything else."""
    try:
        obj = msgpack.unpackb(body, raw=False, max_array_len=1, max_map_len=0, max_str_len=0, max_bin_len=0,
                              max_ext_len=0)
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException):
        raise RemoteProtocolError("a malformed twin report") from None
    if type(obj) is not list or len(obj) != 1 or type(obj[0]) is not int or not 0 < obj[0] < 2**32:
        raise RemoteProtocolError("a malformed twin report")
    return int(obj[0])


@dataclass(frozen=True)
class Twin:
    peer_id: bytes
    replacements: int  # within the window, when detected
    since: float  # wall-clock time of the detection


class TwinDetector:
    """Counts replaced connections per peer id; says when one id flaps between two places."""

    def __init__(self, *, window: float = WINDOW, threshold: int = THRESHOLD, hold: float = HOLD,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.window, self.threshold, self.hold = window, threshold, hold
        self.clock, self.wall = clock, wall
        self._recent: dict[bytes, deque[float]] = {}
        self._found: dict[bytes, tuple[Twin, float]] = {}  # peer id -> (twin, monotonic detection time)

    def on_replaced(self, peer_id: bytes) -> Twin | None:
        """A live connection of ``peer_id`` was replaced by another: the twin, if this makes one
        (once per hold period)."""
        now = self.clock()
        times = self._recent.setdefault(peer_id, deque())
        while times and now - times[0] > self.window:
            times.popleft()
        times.append(now)
        if len(self._recent) > MAX_TRACKED:
            del self._recent[next(iter(self._recent))]
        known = self._found.get(peer_id)
        if known is not None and now - known[1] < self.hold:
            return None
        if len(times) < self.threshold:
            return None
        twin = Twin(peer_id, len(times), self.wall())
        self._found[peer_id] = (twin, now)
        times.clear()
        return twin

    def suspects(self) -> list[Twin]:
        """The ids seen flapping within the last hold period."""
        now = self.clock()
        for pid in [p for p, (_, t) in self._found.items() if now - t >= self.hold]:
            del self._found[pid]
        return [t for t, _ in self._found.values()]


class TwinGuard:
    """The daemon's side: fed with the node's peer events, holds the live connection of a
    flapping id, warns, tells the device it kept; keeps the reports other peers send us."""

    def __init__(self, node: Any = None, detector: TwinDetector | None = None) -> None:
        self.node = node
        self.detector = detector or TwinDetector()
        self.reports: dict[bytes, tuple[int, float]] = {}  # reporter -> (replacements, when)

    def on_peer_event(self, event: Any) -> None:
        if event.kind != "disconnected" or not event.reason.startswith(REPLACED) or self.node is None:
            return
        twin = self.detector.on_replaced(bytes(event.peer_id))
        if twin is None:
            return
        log.warning("device %s connected from two places %d times within %.0f s: two devices are running with one "
                    "identity (a keyring restored on a second machine while the first still runs?). Keeping the "
                    "connection that is live for %.0f s and refusing the other; stop one of them, or give it a new "
                    "identity", twin.peer_id.hex()[:16], twin.replacements, self.detector.window, self.detector.hold)
        self.node.keep_existing(twin.peer_id, self.detector.hold)
        for peer, channel in netview.live_channels(self.node):
            if bytes(peer.remote_peer_id) == twin.peer_id:
                netview.send_extension(channel, TWIN_EXTENSION, encode_report(twin.replacements))

    def on_report(self, peer_id: bytes, body: bytes) -> None:
        """A peer says our identity is live elsewhere too."""
        n = decode_report(body)
        if peer_id not in self.reports and len(self.reports) >= MAX_REPORTS:
            del self.reports[next(iter(self.reports))]
        first = peer_id not in self.reports
        self.reports[peer_id] = (n, time.time())
        if first:
            log.warning("peer %s sees this device's identity connect from two places (%d times within a minute): "
                        "another device runs with this identity (a restored keyring?); stop one of them",
                        peer_id.hex()[:16], n)

    def status(self, names: dict[bytes, str]) -> dict[str, Any]:
        seen = [{"peer_id": t.peer_id.hex(), "name": names.get(t.peer_id, ""), "replacements": t.replacements,
                 "since": t.since,
                 "words": f"{names.get(t.peer_id) or t.peer_id.hex()[:16]} connects from two places at once: two "
                          "devices run with its identity; keeping one connection, refusing the other"}
                for t in self.detector.suspects()]
        now = time.time()
        for pid in [p for p, (_, when) in self.reports.items() if now - when > self.detector.hold]:
            del self.reports[pid]
        told = [{"peer_id": pid.hex(), "name": names.get(pid, ""), "replacements": n, "time": when}
                for pid, (n, when) in self.reports.items()]
        words = ""
        if told:
            words = ("another device is running with this device's identity (seen by "
                     f"{', '.join(r['name'] or r['peer_id'][:16] for r in told)}): if this device's keys were "
                     "restored elsewhere, stop one of the two")
        return {"peers": seen, "reported": told, "words": words}
