"""One connection to one peer: the channel mux, the request server and the I/O loops.

Theory of operation
-------------------
A :class:`Peer` wraps an authenticated connection (anything with ``send(bytes)``, ``recv()``,
``close()``, ``handshake_hash``, ``is_initiator`` and ``remote_peer_id``: a Noise
``SecureConnection``, or an in-memory pipe in tests) and runs three tasks:

- the *reader* decodes each message and dispatches it; it handles one message at a time, so a
  peer that sends faster than we verify and store is slowed by TCP flow control, not buffered;
- the *writer* sends queued control messages first, then bulk ``Data``; control messages are
  small and bounded by design (requests by the in-flight cap, ``Have`` coalesced per tick);
- the *server* answers the peer's requests one at a time from a queue of at most
  ``MAX_PEER_REQUESTS``; a peer that has more requests outstanding breaks the protocol.

Channels: our ``Open`` carries our channel number, the discovery key and
``caps.capability(replication_key, handshake_hash, we_are_initiator)``. The remote's ``Open``
is checked against the same handshake hash with *its* role, so a proof copied from another
connection, or made without the replication key, fails and the connection is closed. An
``Open`` for a group we have not joined is remembered (bounded) and checked if we join later.

Until the first channel is live only small messages are accepted (``messages.early_limit``): a
stranger who holds no group key cannot make us decode, or hold, more than a few KiB per message.
Decoding itself bounds nesting and object count (``messages.check_shape``).

Any :class:`RemoteProtocolError` (a malformed message, a bad capability, unrequested or
unverifiable data, a fork) closes the connection with the reason logged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Protocol

from storage import Feed
from storage.errors import StorageError

from . import caps
from . import messages as m
from .channel import MAX_TRACKED_FEEDS, Channel
from .errors import ConnectionClosedError, NetworkError, RemoteProtocolError
from .group import Group
from .replicator import FeedReplicator

log = logging.getLogger(__name__)

MAX_OUTSTANDING = 16      # our requests in flight to one peer
MAX_PEER_REQUESTS = 64    # the peer's requests we queue before calling it a protocol breach
MAX_PENDING_OPENS = 64
MAX_STORING = 4           # received Data messages being verified and stored at once
SERVE_BYTES = 1024 * 1024  # bytes of entries per Data message we send
MAX_CALLS = 4             # the peer's service calls we run at once
MAX_SERVING = 4           # the peer's requests we answer at once (each up to SERVE_BYTES)


class ServiceError(NetworkError):
    """A service call was refused; the message is the service's reason."""

    code = "service_error"


Service = Callable[["Peer", bytes], Coroutine[None, None, bytes]]


class Connection(Protocol):
    handshake_hash: bytes
    is_initiator: bool
    remote_peer_id: bytes

    async def send(self, data: bytes) -> None: ...
    async def recv(self) -> bytes: ...
    def close(self) -> None: ...


class Replicators:
    """The one :class:`FeedReplicator` per local feed, shared by all peers."""

    def __init__(self) -> None:
        self._by_key: dict[bytes, FeedReplicator] = {}

    def get(self, feed: Feed) -> FeedReplicator:
        rep = self._by_key.get(feed.key)
        if rep is None:
            rep = self._by_key[feed.key] = FeedReplicator(feed)
        return rep

    def find(self, key: bytes) -> FeedReplicator | None:
        return self._by_key.get(key)

    def close(self) -> None:
        for rep in self._by_key.values():
            rep.close()
        self._by_key.clear()


class Peer:
    def __init__(
        self,
        conn: Connection,
        replicators: Replicators,
        find_group: Callable[[bytes], Group | None],
        services: dict[str, Service] | None = None,
        *,
        max_feeds_per_channel: int = MAX_TRACKED_FEEDS,
    ) -> None:
        self.conn = conn
        self.remote_peer_id = conn.remote_peer_id
        self.replicators = replicators
        self._find_group = find_group
        self.channels: dict[int, Channel] = {}           # by our channel number
        self._remote_channels: dict[int, Channel] = {}   # by the peer's channel number
        self._by_topic: dict[bytes, Channel] = {}
        self._pending_opens: dict[bytes, m.Open] = {}
        self._control: collections.deque[m.Message] = collections.deque()
        self._bulk: collections.deque[m.Message] = collections.deque()
        self._wake = asyncio.Event()
        self._bulk_room = asyncio.Event()
        self._bulk_room.set()
        self._requests: asyncio.Queue[tuple[Channel, m.Request]] = asyncio.Queue()
        self._outstanding = 0
        self._starved: dict[FeedReplicator, None] = {}  # replicators waiting for a request slot, in order
        self.max_feeds_per_channel = max_feeds_per_channel
        self._next_request = 0
        self._next_channel = 1
        self._services = services if services is not None else {}
        self._calls: dict[int, asyncio.Future[bytes]] = {}
        self._serving_calls: set[asyncio.Task[None]] = set()
        self._next_call = 0
        self.state: dict[str, object] = {}  # per-connection state of the services above
        self._tasks: list[asyncio.Task[None]] = []
        self._storing: set[asyncio.Task[None]] = set()
        self._store_slots = asyncio.Semaphore(MAX_STORING)
        self.channel_live = False  # a channel has been live on this connection (lifts the early size limit)
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.loop = asyncio.get_running_loop()

    def __repr__(self) -> str:
        return f"<Peer {self.remote_peer_id.hex()[:16]}>"

    # -- life -------------------------------------------------------------------------------

    def start(self) -> None:
        for name, coro in (("reader", self._read_loop()), ("writer", self._write_loop()),
                           ("server", self._serve_loop())):
            task = self.loop.create_task(coro, name=f"peer-{name}")
            task.add_done_callback(self._task_done)
            self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if isinstance(exc, ConnectionClosedError):
            self.close("connection closed by peer")
        elif isinstance(exc, RemoteProtocolError):
            log.warning("peer %s misbehaved, disconnecting: %s", self, exc)
            self.close(f"protocol error: {exc}")
        elif isinstance(exc, NetworkError | OSError):
            self.close(f"connection lost: {exc}")
        elif isinstance(exc, StorageError):
            log.error("local storage error while replicating with %s: %s", self, exc)
            self.close(f"local storage error: {exc}")
        else:
            log.error("bug while talking to %s", self, exc_info=exc)
            self.close(f"internal error: {type(exc).__name__}")

    async def spawn_store(self, coro: Coroutine[None, None, None]) -> None:
        """Run ``coro`` (verifying and storing one Data message) beside the reader, at most
        ``MAX_STORING`` at once; its failure closes the connection like the reader's would."""
        try:
            await self._store_slots.acquire()
        except BaseException:
            coro.close()  # cancelled (the connection closes) before it could start
            raise
        task = self.loop.create_task(coro, name="peer-store")
        self._storing.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._storing.discard(t)
            self._store_slots.release()
            self._task_done(t)

        task.add_done_callback(done)

    def close(self, reason: str = "closed") -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        self._starved.clear()
        for ch in list(self.channels.values()):
            ch.close()
        # Stores already running finish: entries verified before a bad message stay.
        for t in [*self._tasks, *self._serving_calls]:
            t.cancel()
        with contextlib.suppress(Exception):
            self.conn.close()

    async def wait_closed(self) -> None:
        await self.closed.wait()
        await asyncio.gather(*self._tasks, *self._storing, return_exceptions=True)

    # -- channels ---------------------------------------------------------------------------

    def open(self, group: Group) -> Channel:
        """Open the group's channel (idempotent)."""
        ch = self._by_topic.get(group.discovery_key)
        if ch is None:
            if len(self.channels) >= m.MAX_CHANNELS:
                raise NetworkError("too many channels on one connection")
            ch = Channel(self, group, self._next_channel, max_feeds=self.max_feeds_per_channel)
            self._next_channel += 1
            self.channels[ch.local_id] = ch
            self._by_topic[group.discovery_key] = ch
        if not ch.opened_locally:
            ch.opened_locally = True
            proof = caps.capability(group.replication_key, self.conn.handshake_hash, self.conn.is_initiator)
            self.post(m.Open(ch.local_id, group.discovery_key, proof))
            pending = self._pending_opens.pop(group.discovery_key, None)
            if pending is not None:
                self._on_open(pending)
        return ch

    def close_channel(self, discovery_key: bytes, reason: str = "") -> None:
        ch = self._by_topic.pop(discovery_key, None)
        if ch is None:
            return
        self.post(m.Close(ch.local_id, reason))
        ch.close()
        self.channels.pop(ch.local_id, None)
        if ch.remote_id is not None:
            self._remote_channels.pop(ch.remote_id, None)

    def _on_open(self, msg: m.Open) -> None:
        group = self._find_group(msg.discovery_key)
        if group is None:
            if len(self._pending_opens) >= MAX_PENDING_OPENS:
                raise RemoteProtocolError("too many channels opened for unknown groups")
            self._pending_opens[msg.discovery_key] = msg
            return
        if not caps.verify_capability(group.replication_key, self.conn.handshake_hash,
                                      not self.conn.is_initiator, msg.capability):
            raise RemoteProtocolError("channel capability does not verify")
        if msg.channel in self._remote_channels:
            raise RemoteProtocolError("channel number reused")
        ch = self._by_topic.get(group.discovery_key)
        if ch is None or not ch.opened_locally:
            ch = self.open(group)  # a group we hold: answer the open
        if ch.remote_id is not None:
            raise RemoteProtocolError("channel opened twice")
        ch.remote_id = msg.channel
        self._remote_channels[msg.channel] = ch
        self.channel_live = True
        ch.start()

    # -- outgoing -----------------------------------------------------------------------------

    def post(self, msg: m.Message) -> None:
        """Queue a control message (never blocks)."""
        if self.closed.is_set():
            return
        self._control.append(msg)
        self._wake.set()

    async def _post_bulk(self, msg: m.Message) -> None:
        """Queue a Data message, waiting while ``MAX_SERVING`` are already waiting to be sent."""
        while len(self._bulk) >= MAX_SERVING and not self.closed.is_set():
            self._bulk_room.clear()
            await self._bulk_room.wait()
        self._bulk.append(msg)
        self._wake.set()

    def call_soon(self, fn: Callable[[], None]) -> None:
        self.loop.call_soon(fn)

    def can_request(self) -> bool:
        return self._outstanding < MAX_OUTSTANDING and not self.closed.is_set()

    def next_request_id(self) -> int:
        self._outstanding += 1
        self._next_request += 1
        return self._next_request

    def wait_for_slot(self, replicator: FeedReplicator) -> None:
        """``replicator`` found no free request slot: schedule it again when one frees up (in
        arrival order, so that with thousands of feeds a freed slot costs one schedule, not one
        per feed)."""
        self._starved[replicator] = None

    def request_done(self) -> None:
        self._outstanding -= 1
        while self._starved and self.can_request():
            replicator = next(iter(self._starved))
            del self._starved[replicator]
            replicator.schedule()

    @property
    def feeds_refused(self) -> int:
        """Feeds offered by this peer that a group refused, over its open channels."""
        return sum(ch.feeds_refused for ch in self.channels.values())

    async def _write_loop(self) -> None:
        while True:
            if not self._control and not self._bulk:
                self._wake.clear()
                await self._wake.wait()
            if self._control:
                msg = self._control.popleft()
            else:
                msg = self._bulk.popleft()
                self._bulk_room.set()
            await self.conn.send(m.encode(msg))

    # -- incoming -----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while True:
            data = await self.conn.recv()
            if not self.channel_live and len(data) > m.early_limit(data):
                raise RemoteProtocolError(f"a message of {len(data)} bytes before any channel is open")
            await self._dispatch(m.decode(data))

    async def _dispatch(self, msg: m.Message) -> None:
        if isinstance(msg, m.Open):
            self._on_open(msg)
            return
        if isinstance(msg, m.Call):
            self._on_call(msg)
            return
        if isinstance(msg, m.Reply):
            fut = self._calls.pop(msg.id, None)
            if fut is None:
                raise RemoteProtocolError("a reply to no call")
            if not fut.done():
                if msg.ok:
                    fut.set_result(msg.body)
                else:
                    fut.set_exception(ServiceError(msg.body.decode(errors="replace")))
            return
        ch = self._remote_channels.get(msg.channel)
        if ch is None:
            if isinstance(msg, m.Close):
                return
            raise RemoteProtocolError(f"{type(msg).__name__} on a channel that is not open")
        if isinstance(msg, m.Close):
            self._remote_channels.pop(msg.channel, None)
            self._by_topic.pop(ch.group.discovery_key, None)
            self.channels.pop(ch.local_id, None)
            ch.close()
        elif isinstance(msg, m.Feeds):
            await ch.on_feeds(msg)
        elif isinstance(msg, m.Have):
            ch.on_have(msg)
        elif isinstance(msg, m.Request):
            if self._requests.qsize() >= MAX_PEER_REQUESTS:
                raise RemoteProtocolError("too many requests in flight")
            self._requests.put_nowait((ch, msg))
        elif isinstance(msg, m.Data):
            await ch.on_data(msg)
        elif isinstance(msg, m.NoData):
            ch.on_no_data(msg)
        elif isinstance(msg, m.Receipt):
            await ch.on_receipt(msg)

    # -- services ---------------------------------------------------------------------------

    async def call(self, service: str, body: bytes, *, timeout: float = 30.0) -> bytes:
        """Call a service of the peer; raise :class:`ServiceError` with its reason if it
        refuses, ``TimeoutError`` if it does not answer in time."""
        self._next_call += 1
        call_id = self._next_call  # concurrent calls move _next_call on: keep our own id
        fut: asyncio.Future[bytes] = self.loop.create_future()
        self._calls[call_id] = fut
        self.post(m.Call(0, call_id, service, body))
        closed = self.loop.create_task(self.closed.wait())
        try:
            async with asyncio.timeout(timeout):
                await asyncio.wait({fut, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            self._calls.pop(call_id, None)
        if not fut.done():
            raise ConnectionClosedError(f"connection closed during the call: {self.close_reason}")
        return fut.result()

    def _on_call(self, msg: m.Call) -> None:
        if len(self._serving_calls) >= MAX_CALLS:
            raise RemoteProtocolError("too many calls in flight")
        task = self.loop.create_task(self._serve_call(msg), name="peer-call")
        self._serving_calls.add(task)
        task.add_done_callback(self._serving_calls.discard)

    async def _serve_call(self, msg: m.Call) -> None:
        handler = self._services.get(msg.service)
        if handler is None:
            self.post(m.Reply(0, msg.id, False, f"no service {msg.service!r} here".encode()))
            return
        try:
            body = await handler(self, msg.body)
        except ServiceError as e:
            self.post(m.Reply(0, msg.id, False, str(e).encode()[:1000]))
            return
        except Exception:
            log.exception("service %s failed", msg.service)
            self.post(m.Reply(0, msg.id, False, b"internal error"))
            return
        self.post(m.Reply(0, msg.id, True, body))

    # -- serving ------------------------------------------------------------------------------

    async def _serve_loop(self) -> None:
        """Answer requests, up to ``MAX_SERVING`` at once: reading the store for one overlaps
        sending another (the peer is latency-bound otherwise)."""
        slots = asyncio.Semaphore(MAX_SERVING)
        serving: set[asyncio.Task[None]] = set()
        try:
            while True:
                ch, req = await self._requests.get()
                await slots.acquire()
                task = self.loop.create_task(self._serve(ch, req), name="peer-serve")
                serving.add(task)

                def done(t: asyncio.Task[None]) -> None:
                    serving.discard(t)
                    slots.release()
                    self._task_done(t)

                task.add_done_callback(done)
        finally:
            for t in serving:
                t.cancel()

    async def _serve(self, ch: Channel, req: m.Request) -> None:
        feed = ch.find_feed(req.feed)
        if feed is None or not ch.live:
            self.post(m.NoData(ch.local_id, req.id, "unknown feed"))
            return
        # Serve the longest stored prefix of the range that fits one message.
        end = min(req.end, feed.have.contiguous_from(req.start), req.start + m.MAX_ENTRIES)
        if end <= req.start:
            self.post(m.NoData(ch.local_id, req.id, "not stored here"))
            return
        try:
            entries = await feed.get_range(req.start, end, max_bytes=SERVE_BYTES)
            proof = await feed.proof(req.start, req.start + len(entries), upgrade_from=req.known_length)
        except StorageError as e:
            self.post(m.NoData(ch.local_id, req.id, e.code))
            return
        await self._post_bulk(m.Data(ch.local_id, req.id, feed.key, req.start, tuple(entries),
                                     proof.length, proof.signature, proof.nodes,
                                     proof.upgrade_from, proof.upgrade))
