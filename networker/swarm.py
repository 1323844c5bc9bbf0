"""The swarm: find the peers of every joined topic and keep connections to them.

Theory of operation
-------------------
For each joined topic (a group's discovery key) a task announces this node's addresses to
every discovery source (the DHT, the LAN) and looks the topic up, every ``lookup_interval``
seconds or sooner when woken. Each peer found is a *candidate*: if it is not connected, not
being dialed, and the node has room (``max_connections``), a dial task tries it.

Failed dials back off exponentially with jitter (``reconnect_base`` doubling up to
``reconnect_max``); after ``give_up_after`` failures in a row the peer is given up until a
lookup finds it at a different address. A peer whose connection drops is redialed with the
same backoff while it remains a candidate of a joined topic. Connections themselves (one per
peer pair, channels per group) belong to :class:`networker.node.Node`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .errors import NetworkError
from .node import Node, PeerEvent

log = logging.getLogger(__name__)


class Discovery(Protocol):
    """A way to find peers of a topic (the DHT, the LAN)."""

    name: str

    async def announce(self, topic: bytes, addresses: list[str]) -> None: ...
    async def unannounce(self, topic: bytes) -> None: ...
    async def lookup(self, topic: bytes) -> list[tuple[bytes, str]]: ...


@dataclass
class Candidate:
    peer_id: bytes
    address: str
    topics: set[bytes] = field(default_factory=set)
    source: str = ""
    failures: int = 0
    given_up: bool = False
    dialing: asyncio.Task[None] | None = None


class Swarm:
    def __init__(self, node: Node, sources: list[Discovery], *,
                 advertised: Callable[[], list[str]],
                 lookup_interval: float = 60.0, reconnect_base: float = 1.0,
                 reconnect_max: float = 300.0, give_up_after: int = 8, dial_timeout: float = 10.0) -> None:
        self.node = node
        self.sources = sources
        self.advertised = advertised
        self.lookup_interval = lookup_interval
        self.reconnect_base = reconnect_base
        self.reconnect_max = reconnect_max
        self.give_up_after = give_up_after
        self.dial_timeout = dial_timeout
        self.candidates: dict[bytes, Candidate] = {}
        self._topics: dict[bytes, asyncio.Task[None]] = {}
        self._wake: dict[bytes, asyncio.Event] = {}
        self._closed = False
        node.on_event.append(self._on_peer_event)

    @property
    def topics(self) -> list[bytes]:
        return list(self._topics)

    def join(self, topic: bytes) -> None:
        if topic in self._topics or self._closed:
            return
        self._wake[topic] = asyncio.Event()
        self._topics[topic] = asyncio.get_running_loop().create_task(self._topic_loop(topic), name="swarm-topic")

    async def leave(self, topic: bytes) -> None:
        task = self._topics.pop(topic, None)
        self._wake.pop(topic, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for source in self.sources:
            with contextlib.suppress(Exception):
                await source.unannounce(topic)
        for cand in self.candidates.values():
            cand.topics.discard(topic)

    def refresh(self, topic: bytes | None = None) -> None:
        """Look up now instead of at the next interval."""
        for t, ev in self._wake.items():
            if topic is None or t == topic:
                ev.set()

    def add_candidate(self, topic: bytes, peer_id: bytes, address: str, source: str = "") -> None:
        """A peer found for ``topic`` (by a lookup, or pushed by a source such as the LAN)."""
        if peer_id == self.node.peer_id or topic not in self._topics:
            return
        cand = self.candidates.get(peer_id)
        if cand is None:
            cand = self.candidates[peer_id] = Candidate(peer_id, address, source=source)
        elif cand.address != address:
            cand.address, cand.failures, cand.given_up = address, 0, False
        cand.topics.add(topic)
        self._maybe_dial(cand)

    async def close(self) -> None:
        self._closed = True
        for topic in list(self._topics):
            await self.leave(topic)
        for cand in self.candidates.values():
            if cand.dialing is not None:
                cand.dialing.cancel()
        tasks = [c.dialing for c in self.candidates.values() if c.dialing is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- lookups ------------------------------------------------------------------------------

    async def _topic_loop(self, topic: bytes) -> None:
        while True:
            addresses = self.advertised()
            for source in self.sources:
                try:
                    await source.announce(topic, addresses)
                except (NetworkError, OSError, TimeoutError) as e:
                    log.info("announce on %s failed: %s", source.name, e)
            for source in self.sources:
                try:
                    found = await source.lookup(topic)
                except (NetworkError, OSError, TimeoutError) as e:
                    log.info("lookup on %s failed: %s", source.name, e)
                    continue
                for peer_id, address in found:
                    self.add_candidate(topic, peer_id, address, source.name)
            wake = self._wake.get(topic)
            if wake is None:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.lookup_interval)
            wake.clear()

    # -- dialing ------------------------------------------------------------------------------

    def _maybe_dial(self, cand: Candidate) -> None:
        if (self._closed or cand.given_up or cand.dialing is not None or not cand.topics
                or cand.peer_id in self.node.peers or len(self.node.peers) >= self.node.max_connections):
            return
        cand.dialing = asyncio.get_running_loop().create_task(self._dial(cand), name="swarm-dial")

    async def _dial(self, cand: Candidate) -> None:
        try:
            while cand.topics and cand.peer_id not in self.node.peers and not self._closed:
                if cand.failures:
                    delay = min(self.reconnect_max, self.reconnect_base * 2 ** (cand.failures - 1))
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                try:
                    await self.node.connect(cand.address, timeout=self.dial_timeout)
                    cand.failures = 0
                    return
                except (NetworkError, OSError, TimeoutError) as e:
                    cand.failures += 1
                    log.info("dial %s failed (%d): %s", cand.peer_id.hex()[:16], cand.failures, e)
                    if cand.failures >= self.give_up_after:
                        cand.given_up = True
                        log.info("giving up on %s until it is found again", cand.peer_id.hex()[:16])
                        return
        finally:
            cand.dialing = None

    def _on_peer_event(self, event: PeerEvent) -> None:
        if event.kind != "disconnected" or self._closed:
            return
        cand = self.candidates.get(event.peer_id)
        if cand is not None and cand.topics:
            cand.failures = max(cand.failures, 1)  # back off before the redial
            self._maybe_dial(cand)
