"""The swarm: find the peers of every joined topic and keep connections to them.

Theory of operation
-------------------
For each joined topic (a group's discovery key) a task announces this node's addresses to
every discovery source (the DHT, the LAN) and looks the topic up, every ``lookup_interval``
seconds or sooner when woken. Each peer found is a *candidate*: if it is not connected, not
being dialed, and the node has room (``Node.room_for_peer``: a stranger can be evicted for it), a dial task tries it.

Addresses come from the network, so they are untrusted: a candidate keeps only the alternatives
that name the candidate's own key (``~noise:PEERKEY``, so the handshake fails unless the far end
really is that peer); a found address without one is never dialled. Dials start at a bounded
rate, whatever the sources hand in: every dial attempt takes a token from a :class:`TokenBucket`
(``dial_rate`` per second, bursts of ``dial_burst``).

A topic's loop survives its sources: an announce or lookup that fails (or raises anything at
all, which is logged as the bug it is) is skipped for that round. When a round found no peer at
all (every lookup failed or came back with nobody but this node), the next round comes sooner: after
``retry_base`` seconds, doubling each such round up to ``lookup_interval``, so a member that
joined while the DHT was empty or under attack is found in seconds once it recovers.

Failed dials back off exponentially with jitter (``reconnect_base`` doubling up to
``reconnect_max``); after ``give_up_after`` failures in a row the peer is given up until a
lookup finds it at a different address. A peer whose connection drops is redialed with the
same backoff while it remains a candidate of a joined topic; a connection that dropped within
:data:`STABLE_AFTER` seconds of being made (the other side closes it at once: it paused us, or
refuses us after the handshake) counts as one more failure, so such a peer is not redialled
every second. Connections themselves (one per
peer pair, channels per group) belong to :class:`networker.node.Node`.

Given a ``spawner`` (the daemon's supervisor, injected as the :class:`Spawner` protocol), each
topic loop runs as its service ``swarm:<discovery key prefix>``, restarted with backoff if it
ever fails; without one the swarm keeps its own task per topic. Dial tasks are short-lived and
always the swarm's own; :meth:`Swarm.close` cancels and awaits them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .address import parse
from .backoff import capped
from .errors import AddressError, NetworkError
from .node import Node, PeerEvent

log = logging.getLogger(__name__)
STABLE_AFTER = 10.0  # seconds a connection must last for its drop not to count as a failure


class Discovery(Protocol):
    """A way to find peers of a topic (the DHT, the LAN)."""

    name: str

    async def announce(self, topic: bytes, addresses: list[str]) -> None: ...
    async def unannounce(self, topic: bytes) -> None: ...
    async def lookup(self, topic: bytes) -> list[tuple[bytes, str]]: ...


class Spawner(Protocol):
    """Runs named long-lived tasks for the swarm (the daemon's supervisor)."""

    def spawn(self, name: str, factory: Callable[[], Coroutine[Any, Any, None]], *,
              restart: Literal["never", "backoff"] = ..., fatal: bool = ...) -> None: ...
    async def cancel(self, name: str) -> None: ...


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; :meth:`take` returns how long to
    wait before the token it takes is there (0: now). Pure: the clock is passed in."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = now

    def take(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


def _service_name(topic: bytes) -> str:
    return f"swarm:{topic.hex()[:16]}"


def keyed_alternatives(peer_id: bytes, address: str) -> str | None:
    """The alternatives of ``address`` that name ``peer_id``'s key, or ``None`` if none does."""
    try:
        multi = parse(address)
    except AddressError:
        return None
    kept = [a.format() for a in multi.alternatives if a.peer_key == peer_id]
    return ";".join(kept) if kept else None


@dataclass
class Candidate:
    peer_id: bytes
    address: str
    topics: set[bytes] = field(default_factory=set)
    source: str = ""
    failures: int = 0
    given_up: bool = False
    dialing: asyncio.Task[None] | None = None
    connected_at: float | None = None  # when our last dial to it succeeded


class Swarm:
    def __init__(self, node: Node, sources: list[Discovery], *,
                 advertised: Callable[[], list[str]],
                 lookup_interval: float = 60.0, reconnect_base: float = 1.0,
                 reconnect_max: float = 300.0, give_up_after: int = 8, dial_timeout: float = 10.0,
                 dial_rate: float = 4.0, dial_burst: int = 8, retry_base: float = 2.0,
                 spawner: Spawner | None = None) -> None:
        self.node = node
        self.sources = sources
        self.advertised = advertised
        self.lookup_interval = lookup_interval
        self.reconnect_base = reconnect_base
        self.reconnect_max = reconnect_max
        self.give_up_after = give_up_after
        self.dial_timeout = dial_timeout
        self.retry_base = retry_base
        loop = asyncio.get_running_loop()
        self.dial_bucket = TokenBucket(max(dial_rate, 0.01), max(dial_burst, 1), loop.time())
        self.dials_started = 0
        self.refused_addresses = 0
        self.candidates: dict[bytes, Candidate] = {}
        self.spawner = spawner
        self._topics: dict[bytes, asyncio.Task[None] | None] = {}  # None: the spawner runs its loop
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
        if self.spawner is not None:
            self._topics[topic] = None
            self.spawner.spawn(_service_name(topic), lambda: self._topic_loop(topic), restart="backoff")
        else:
            self._topics[topic] = asyncio.get_running_loop().create_task(self._topic_loop(topic),
                                                                         name="swarm-topic")

    async def leave(self, topic: bytes) -> None:
        if topic not in self._topics:
            return
        task = self._topics.pop(topic)
        self._wake.pop(topic, None)
        if self.spawner is not None:
            await self.spawner.cancel(_service_name(topic))
        elif task is not None:
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
        keyed = keyed_alternatives(peer_id, address)
        if keyed is None:
            self.refused_addresses += 1
            log.debug("not dialling %s from %s: no alternative holds its key", peer_id.hex()[:16], source)
            return
        address = keyed
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
        empty_rounds = 0
        while True:
            found_any = await self._round(topic)
            empty_rounds = 0 if found_any else empty_rounds + 1
            wake = self._wake.get(topic)
            if wake is None:
                return
            wait = self.lookup_interval
            if empty_rounds:
                wait = min(wait, capped(self.retry_base, wait, empty_rounds)) * random.uniform(0.8, 1.0)
            with contextlib.suppress(TimeoutError):  # (not wait_for: it can lose a cancellation on 3.11)
                async with asyncio.timeout(wait):
                    await wake.wait()
            wake.clear()

    async def _round(self, topic: bytes) -> bool:
        """Announce to and look up in every source; whether any peer was found."""
        addresses = self.advertised()
        for source in self.sources:
            try:
                await source.announce(topic, addresses)
            except (NetworkError, OSError, TimeoutError) as e:
                log.info("announce on %s failed: %s", source.name, e)
            except Exception:
                log.exception("announce on %s failed (a bug)", source.name)
        found_any = False
        for source in self.sources:
            try:
                found = await source.lookup(topic)
            except (NetworkError, OSError, TimeoutError) as e:
                log.info("lookup on %s failed: %s", source.name, e)
                continue
            except Exception:
                log.exception("lookup on %s failed (a bug)", source.name)
                continue
            for peer_id, address in found:
                found_any = found_any or peer_id != self.node.peer_id
                self.add_candidate(topic, peer_id, address, source.name)
        return found_any

    # -- dialing ------------------------------------------------------------------------------

    def _maybe_dial(self, cand: Candidate) -> None:
        if (self._closed or cand.given_up or cand.dialing is not None or not cand.topics
                or cand.peer_id in self.node.peers or not self.node.room_for_peer()):
            return
        cand.dialing = asyncio.get_running_loop().create_task(self._dial(cand), name="swarm-dial")

    async def _dial(self, cand: Candidate) -> None:
        try:
            while cand.topics and cand.peer_id not in self.node.peers and not self._closed:
                if cand.failures:
                    delay = capped(self.reconnect_base, self.reconnect_max, cand.failures)
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                wait = self.dial_bucket.take(asyncio.get_running_loop().time())
                if wait > 0:
                    await asyncio.sleep(wait)
                if not cand.topics or cand.peer_id in self.node.peers or self._closed:
                    return
                self.dials_started += 1
                try:
                    await self.node.connect(cand.address, timeout=self.dial_timeout)
                    cand.connected_at = asyncio.get_running_loop().time()
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
            lasted = (asyncio.get_running_loop().time() - cand.connected_at
                      if cand.connected_at is not None else STABLE_AFTER)
            cand.connected_at = None
            # back off before the redial; longer each time a connection does not last
            cand.failures = 1 if lasted >= STABLE_AFTER else cand.failures + 1
            self._maybe_dial(cand)
