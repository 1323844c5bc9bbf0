"""A DHT node: announce this peer under topics and look up the peers of a topic.

Theory of operation
-------------------
:class:`DHT` owns one kademlia ``Server`` subclass (:class:`DHTServer`, bound to ``host``
only), whose protocol is :class:`~.protocol.DHTProtocol` and whose storage is
:class:`~.storage.RecordStorage`.

``start()``: bind; load the saved state (node id and contacts, JSON) if any; ping the bootstrap
addresses and saved contacts (never adding itself); look up its own id to fill the routing
table; start the maintenance task (cull expired records, refresh stale buckets, save state).
With no bootstrap and no state the node is alone and still works (it stores and finds its own
records).

``announce(topic, addresses)``: sign a record with the device key; run a :class:`~.crawl.TopicCrawl`
for ``dht_key(topic)`` to find the k closest live nodes *and* get an announce token from each;
send ``announce`` to each of them in parallel; also keep it locally when this node is among the
k closest. A task per topic re-announces at half the ttl until ``unannounce(topic)``; after an
announce that no other node took, it tries again after ``retry_base`` seconds, doubling up to
half the ttl (so a member announcing into an empty or eclipsed neighbourhood is not lost for
15 minutes). The k closest nodes an announce goes to are counted with
:class:`~.limits.Diversity` (two per host, four per /24 or /64), in the crawl and in every
routing-table bucket, so one machine running many node ids cannot take all k places.

``lookup(topic)``: the same crawl; the answer is the union of valid records from every node that
answered plus local storage, newest record per peer, less records with no address the
:class:`~.policy.AddressPolicy` accepts (:meth:`DHT.dialable` gives the ones that may be
dialled). ``announce`` likewise publishes only the acceptable addresses it is given (none: it
announces nothing and says so). ``last_lookup_queries`` counts the RPCs
the last crawl sent; with ``trace_lookups`` set, ``last_lookup_trace`` holds the last crawl's
trace (queries sent, answers, waits: :mod:`.crawl`), both for the benchmark.

All background work is owned by tasks kept in ``self._tasks``; ``stop()`` cancels and awaits
them, then closes the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kademlia.network import Server
from kademlia.node import Node

from ..backoff import capped
from ..errors import DHTError, DHTNotStartedError, DHTStateError
from ..identity import DeviceIdentity
from .crawl import TopicCrawl
from .limits import Diversity
from .policy import AddressPolicy
from .protocol import DHTProtocol, cancel_all, valid_id
from .records import DHT_KEY_BYTES, KEY_BYTES, MAX_ADDRESSES, PeerRecord, dht_key, newest_per_peer
from .storage import RecordStorage, TopicLimits

log = logging.getLogger(__name__)

DEFAULT_RECORD_TTL = 30 * 60
STATE_VERSION = 1
MAX_SAVED_CONTACTS = 64


class DHTServer(Server):
    """kademlia's Server with our protocol, bound to one interface, no pickle, no orphan tasks."""

    protocol_class = DHTProtocol

    def __init__(
        self,
        ksize: int,
        alpha: int,
        node_id: bytes | None,
        storage: RecordStorage,
        rpc_timeout: float,
        clock: Callable[[], float],
        diversity: Diversity | None = None,
    ) -> None:
        super().__init__(ksize=ksize, alpha=alpha, node_id=node_id or os.urandom(DHT_KEY_BYTES),
                         storage=storage)
        self.rpc_timeout = rpc_timeout
        self.clock = clock
        self.diversity = diversity
        self.protocol: DHTProtocol | None = None

    def _create_protocol(self) -> DHTProtocol:
        return DHTProtocol(self.node, self.storage, self.ksize, rpc_timeout=self.rpc_timeout,
                           clock=self.clock, diversity=self.diversity)

    async def listen(self, port: int, interface: str = "127.0.0.1") -> None:  # type: ignore[override]
        loop = asyncio.get_running_loop()
        self.transport, self.protocol = await loop.create_datagram_endpoint(
            self._create_protocol, local_addr=(interface, port)
        )

    def refresh_table(self, interval: int = 3600) -> None:  # type: ignore[override]
        """Replaced by :meth:`DHT._maintain` (kademlia's schedules orphan tasks)."""

    async def get(self, key: Any) -> Any:  # type: ignore[override]
        raise DHTError("one value per key is not supported: use DHT.lookup")

    async def set(self, key: Any, value: Any) -> Any:  # type: ignore[override]
        raise DHTError("one value per key is not supported: use DHT.announce")

    async def set_digest(self, dkey: Any, value: Any) -> Any:  # type: ignore[override]
        raise DHTError("one value per key is not supported: use DHT.announce")

    def save_state(self, fname: str | os.PathLike[str]) -> None:  # type: ignore[override]
        """Save the node id and some contacts as JSON (never pickle), atomically."""
        assert self.protocol is not None
        contacts = [[n.ip, n.port] for b in self.protocol.router.buckets for n in b.get_nodes()]
        data = {"version": STATE_VERSION, "node_id": self.node.id.hex(),
                "contacts": contacts[:MAX_SAVED_CONTACTS]}
        path = Path(fname)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)

    @classmethod
    async def load_state(cls, fname: Any, port: Any, interface: str = "127.0.0.1") -> Any:  # type: ignore[override]
        raise DHTError("use DHT(state_path=...) to load saved state")


def read_state(path: Path) -> tuple[bytes, list[tuple[str, int]]]:
    """Parse a saved state file; raise :class:`DHTStateError` if it is malformed."""
    try:
        data = json.loads(path.read_text())
        if data.get("version") != STATE_VERSION:
            raise ValueError("unknown version")
        node_id = bytes.fromhex(data["node_id"])
        if not valid_id(node_id):
            raise ValueError("bad node id")
        contacts = [(str(h), int(p)) for h, p in data["contacts"]][:MAX_SAVED_CONTACTS]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DHTStateError(f"cannot use the DHT state file {path}: {e}") from None
    return node_id, contacts


class DHT:
    def __init__(
        self,
        identity: DeviceIdentity,
        host: str = "127.0.0.1",
        port: int = 0,
        bootstrap: Iterable[tuple[str, int]] = (),
        state_path: str | os.PathLike[str] | None = None,
        rpc_timeout: float = 1.0,
        record_ttl: int = DEFAULT_RECORD_TTL,
        *,
        ksize: int = 20,
        alpha: int = 3,
        stall_after: float | None = None,
        clock: Callable[[], float] = time.time,
        maintenance_interval: float = 60.0,
        allow_loopback: bool = False,
        topic_limits: TopicLimits | None = None,
        diversity: Diversity | None = None,
        retry_base: float = 2.0,
    ) -> None:
        self.identity = identity
        self.host = host
        self._requested_port = port
        self.bootstrap_addresses = list(bootstrap)
        self.state_path = Path(state_path) if state_path is not None else None
        self.rpc_timeout = rpc_timeout
        self.record_ttl = record_ttl
        self.ksize = ksize
        self.alpha = alpha
        self.stall_after = stall_after if stall_after is not None else rpc_timeout / 4
        self.clock = clock
        self.maintenance_interval = maintenance_interval
        self.policy = AddressPolicy(allow_loopback=allow_loopback)
        self.diversity = diversity if diversity is not None else Diversity(loopback_ports_distinct=allow_loopback)
        self.retry_base = retry_base
        self.storage = RecordStorage(clock=clock, limits=topic_limits, policy=self.policy)
        self.last_lookup_queries = 0
        self.trace_lookups = False
        self.last_lookup_trace: list[str] = []
        self._server: DHTServer | None = None
        self._announcing: dict[bytes, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        node_id, contacts = None, []
        if self.state_path is not None and self.state_path.exists():
            try:
                node_id, contacts = read_state(self.state_path)
            except DHTStateError as e:
                log.warning("%s", e)
        server = DHTServer(self.ksize, self.alpha, node_id, self.storage, self.rpc_timeout, self.clock,
                           self.diversity)
        await server.listen(self._requested_port, self.host)
        self._server = server
        await self.join(self.bootstrap_addresses + contacts)
        self._spawn(self._maintain())

    async def stop(self) -> None:
        if self._server is None:
            return
        await cancel_all(list(self._tasks))
        self._announcing.clear()
        if self._server.protocol is not None:
            await self._server.protocol.close()
        if self.state_path is not None:
            self.save_state()
        self._server.stop()
        self._server = None

    async def __aenter__(self) -> DHT:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def protocol(self) -> DHTProtocol:
        if self._server is None or self._server.protocol is None:
            raise DHTNotStartedError("the DHT node is not running")
        return self._server.protocol

    @property
    def port(self) -> int:
        if self._server is None or self._server.transport is None:
            raise DHTNotStartedError("the DHT node is not running")
        return int(self._server.transport.get_extra_info("sockname")[1])

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def node_id(self) -> bytes:
        if self._server is None:
            raise DHTNotStartedError("the DHT node is not running")
        return bytes(self._server.node.id)

    def contacts(self) -> list[Node]:
        return [n for b in self.protocol.router.buckets for n in b.get_nodes()]

    def save_state(self) -> None:
        if self._server is None or self.state_path is None:
            return
        self._server.save_state(self.state_path)

    # -- joining --------------------------------------------------------------------------

    async def join(self, addresses: Iterable[tuple[str, int]]) -> int:
        """Ping ``addresses``, add those that answer, then look up our own id; return the
        number of contacts in the routing table."""
        protocol = self.protocol
        own = protocol.source_node.id
        me = {(self.host, self.port)}
        targets = list(dict.fromkeys(a for a in addresses if tuple(a) not in me))
        replies = await asyncio.gather(*(protocol.ping(tuple(a), own) for a in targets))
        for (host, port), (ok, nodeid) in zip(targets, replies):
            if ok and valid_id(nodeid) and nodeid != own:
                protocol.welcome_if_new(Node(nodeid, host, port))
        if self.contacts():
            await self._crawl(own)
        return len(self.contacts())

    async def _crawl(self, key: bytes) -> TopicCrawl:
        protocol = self.protocol
        nearest = protocol.router.find_neighbors(Node(key), k=self.ksize)
        self.last_lookup_trace = []
        trace = self.last_lookup_trace if self.trace_lookups else None
        crawl = TopicCrawl(protocol, key, nearest, self.ksize, self.alpha, self.stall_after, trace=trace)
        await crawl.find()
        return crawl

    # -- announce / lookup ----------------------------------------------------------------

    async def announce(self, topic: bytes, addresses: Iterable[str]) -> int:
        """Store this peer's signed record under ``topic`` on the k closest nodes; keep
        re-announcing it before it expires until :meth:`unannounce`. Returns how many nodes
        (this one included) accepted it."""
        _check_topic(topic)
        given = tuple(addresses)
        addrs = self.policy.filter(given, self.identity.peer_id)[:MAX_ADDRESSES]
        if not addrs:
            log.info("nothing to announce on the DHT: none of %d addresses is dialable from the network "
                     "(loopback, link-local, unix: or key-less)", len(given))
            await self.unannounce(topic)
            return 0
        stored = await self._announce_once(topic, addrs)
        old = self._announcing.pop(topic, None)
        if old is not None:
            old.cancel()
        self._announcing[topic] = self._spawn(self._reannounce(topic, addrs, stored))
        return stored

    async def unannounce(self, topic: bytes) -> None:
        """Stop re-announcing ``topic``; records already stored elsewhere expire on their own."""
        task = self._announcing.pop(topic, None)
        if task is not None:
            await cancel_all([task])
        self.storage.remove(dht_key(topic), self.identity.peer_id)

    async def _announce_once(self, topic: bytes, addresses: tuple[str, ...]) -> int:
        record = PeerRecord.create(self.identity, topic, addresses, self.record_ttl, now=self.clock())
        key = record.key
        crawl = await self._crawl(key)
        closest = [(node, token) for node, token in crawl.closest() if token]
        blob = record.encode()
        results = await asyncio.gather(
            *(self.protocol.call_announce(node, blob, token) for node, token in closest)
        )
        stored = sum(1 for r in results if r)
        own = self.protocol.source_node
        if len(closest) < self.ksize or own.distance_to(Node(key)) < closest[-1][0].distance_to(Node(key)):
            stored += int(self.storage.add(key, record))
        return stored

    async def _reannounce(self, topic: bytes, addresses: tuple[str, ...], stored: int) -> None:
        """Re-announce at half the ttl; after an announce that no other node took (a failed
        or eclipsed one), again after ``retry_base`` seconds, doubling up to half the ttl."""
        failures = 0
        while True:
            failures = failures + 1 if stored <= self._local_only(topic) else 0
            wait = max(0.5, self.record_ttl / 2)
            if failures:
                wait = min(wait, capped(self.retry_base, wait, failures))
            await asyncio.sleep(wait * random.uniform(0.9, 1.0))
            try:
                stored = await self._announce_once(topic, addresses)
            except (DHTError, OSError) as e:
                log.warning("re-announcing a topic failed: %s", e)
                stored = 0

    def _local_only(self, topic: bytes) -> int:
        """How many of an announce's stores can have been this node's own (0 or 1)."""
        return int(self.storage.entry(dht_key(topic), self.identity.peer_id) is not None)

    async def lookup(self, topic: bytes) -> list[PeerRecord]:
        """The valid records of every peer announced under ``topic`` that the k closest nodes
        hold (newest per peer)."""
        _check_topic(topic)
        key = dht_key(topic)
        crawl = await self._crawl(key)
        self.last_lookup_queries = crawl.queries
        now = self.clock()
        found = [r for r in crawl.records + self.storage.records(key) if r.topic == topic]
        return [r for r in newest_per_peer(found) if r.is_valid(now) and self.policy.dialable(r)]

    def dialable(self, record: PeerRecord) -> tuple[str, ...]:
        """The addresses of a found record that this node may dial (:class:`~.policy.AddressPolicy`)."""
        return self.policy.dialable(record)

    # -- maintenance ----------------------------------------------------------------------

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self.maintenance_interval)
            self.storage.cull()
            for node_id in self.protocol.get_refresh_ids():
                await self._crawl(node_id)
            if self.state_path is not None:
                with contextlib.suppress(OSError):
                    self.save_state()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("DHT background task failed", exc_info=task.exception())


def _check_topic(topic: bytes) -> None:
    if not isinstance(topic, bytes) or len(topic) != KEY_BYTES:
        raise ValueError(f"a topic is {KEY_BYTES} bytes")
