"""One connection to one peer: the only asyncio of replication.

Theory of operation
-------------------
A :class:`Peer` wraps an authenticated connection (anything with ``send(bytes)``, ``recv()``,
``close()``, ``handshake_hash``, ``is_initiator`` and ``remote_peer_id``: a Noise
``SecureConnection``, or an in-memory pipe in tests). The decisions are made by pure objects
(:mod:`networker.mux` -> :mod:`networker.channel` -> :mod:`networker.replicator`) that return
actions; this shell runs one chain: read a message -> ``mux.receive`` -> carry out the actions
(send, ask the group, store, serve, schedule) -> feed each outcome back (``channel.accepted``,
``channel.stored``) -> carry out what that returns. Three tasks:

- the *reader* decodes each message and carries out its actions; it handles one message at a
  time (a group accepting a feed is awaited; at most ``MAX_STORING`` stores run beside it), so a
  peer that sends faster than we verify and store is slowed by TCP flow control, not buffered;
- the *writer* sends queued control messages first, then bulk ``Data``; control messages are
  small and bounded by design (requests by the mux's budget, ``Have`` coalesced per tick);
- the *server* answers the peer's requests, at most ``MAX_SERVING`` at once, from a queue of at
  most ``MAX_PEER_REQUESTS``; a peer that has more requests outstanding breaks the protocol.
  Entries are read concurrently, but proofs are built and queued one at a time, in the order
  they are sent, so a chained request's upgrade starts from the previous answer's tree (see
  "Chained proofs" in :mod:`networker.replicator`); Data stores run in arrival order too (a
  feed's puts take its lock first come, first served).

:class:`~networker.replicators.Replicators` is the node-wide half of the shell (one replicator
per feed, one request ledger, shared by all peers): it runs a replicator's ``schedule`` with
every peer's budget and sends each Want through the peer it names.

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

from storage import Feed, Proof, healing
from storage.errors import StaleProofError, StorageError, VerificationError

from . import messages as m
from . import mux as mx
from .channel import (
    MAX_TRACKED_FEEDS,
    Accept,
    Action,
    Channel,
    Closed,
    Deliver,
    FlushLater,
    Live,
    Schedule,
    Send,
    Serve,
    SlotFreed,
    Store,
    StoreOutcome,
)
from .errors import ConnectionClosedError, NetworkError, RemoteProtocolError
from .group import Group
from .mux import Mux
from .replicators import Replicators

log = logging.getLogger(__name__)

MAX_OUTSTANDING = mx.MAX_OUTSTANDING  # our requests in flight to one peer
MAX_PEER_REQUESTS = 64    # the peer's requests we queue before calling it a protocol breach
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
        self.mux = Mux(conn.handshake_hash, conn.is_initiator, find_group, replicators.ledger,
                       replicators.get, owner=self, max_feeds_per_channel=max_feeds_per_channel)
        replicators.attach(self)
        self._control: collections.deque[m.Message] = collections.deque()
        self._bulk: collections.deque[m.Message] = collections.deque()
        self._wake = asyncio.Event()
        self._bulk_room = asyncio.Event()
        self._bulk_room.set()
        self._requests: asyncio.Queue[tuple[Channel, Feed, m.Request]] = asyncio.Queue()
        self._services = services if services is not None else {}
        self._calls: dict[int, asyncio.Future[bytes]] = {}
        self._serving_calls: set[asyncio.Task[None]] = set()
        self._next_call = 0
        self.state: dict[str, object] = {}  # per-connection state of the services above
        self._tasks: list[asyncio.Task[None]] = []
        self._storing: set[asyncio.Task[None]] = set()
        self._store_slots = asyncio.Semaphore(MAX_STORING)
        self._proving = asyncio.Lock()  # proofs are built and queued in the order they are sent
        self.channel_live = False  # a channel has been live on this connection (lifts the early size limit)
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.loop = asyncio.get_running_loop()

    def __repr__(self) -> str:
        return f"<Peer {self.remote_peer_id.hex()[:16]}>"

    @property
    def channels(self) -> dict[int, Channel]:
        """The open channels, by our channel number."""
        return self.mux.channels

    @property
    def max_feeds_per_channel(self) -> int:
        return self.mux.max_feeds_per_channel

    @max_feeds_per_channel.setter
    def max_feeds_per_channel(self, value: int) -> None:
        self.mux.max_feeds_per_channel = value

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

    def close(self, reason: str = "closed") -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        self.execute(self.mux.close())
        self.replicators.detach(self)
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
        ch, actions = self.mux.open(group)
        self.execute(actions)
        return ch

    def close_channel(self, discovery_key: bytes, reason: str = "") -> None:
        self.execute(self.mux.close_channel(discovery_key, reason))

    def offer(self, channel: Channel, feed: Feed) -> None:
        """A feed joined the channel's group locally: tell the peer."""
        self.execute(channel.offer(feed))

    def send_extension(self, channel: Channel, name: str, body: bytes) -> None:
        """A product message to the peer's group layer on ``channel`` (dropped unless live)."""
        self.execute(channel.extension(name, body))

    def set_paused(self, channel: Channel, paused: bool) -> None:
        """Request nothing more (or again) for the feeds of ``channel``."""
        for pf in channel.feeds.values():
            pf.replicator.paused = paused

    @property
    def feeds_refused(self) -> int:
        """Feeds offered by this peer that a group refused, over its open channels."""
        return sum(ch.feeds_refused for ch in self.channels.values())

    # -- carrying out actions -----------------------------------------------------------------

    def execute(self, actions: list[Action]) -> None:
        """Carry out the actions that need no waiting (``Accept``/``Store`` are the reader's)."""
        for a in actions:
            self._do(a)

    def _do(self, a: Action) -> None:
        if isinstance(a, Send):
            self.post(a.msg)
        elif isinstance(a, Schedule):
            self.replicators.run(a.replicator)
        elif isinstance(a, SlotFreed):
            while (rep := self.mux.next_starved()) is not None:
                self.replicators.run(rep)
        elif isinstance(a, Serve):
            if self._requests.qsize() >= MAX_PEER_REQUESTS:
                raise RemoteProtocolError("too many requests in flight")
            self._requests.put_nowait((a.channel, a.feed, a.request))
        elif isinstance(a, FlushLater):
            self.loop.call_soon(lambda ch=a.channel: self.execute(ch.flush()))
        elif isinstance(a, Live):
            self.channel_live = True
            a.channel.group.on_channel_live(a.channel)
        elif isinstance(a, Closed):
            a.channel.group.on_channel_closed(a.channel)
        else:
            raise AssertionError(f"{type(a).__name__} must be run by the reader")

    async def _run(self, actions: list[Action]) -> None:
        """Carry out ``actions`` and what their outcomes lead to, in order."""
        queue = collections.deque(actions)
        while queue:
            a = queue.popleft()
            if isinstance(a, Accept):
                feed = await a.channel.group.accept_feed(a.key, a.tag)
                queue.extendleft(reversed(a.channel.accepted(a.key, feed)))
            elif isinstance(a, Store):
                await self._spawn_store(a)
            elif isinstance(a, Deliver):
                await a.channel.group.on_extension(self.remote_peer_id, a.name, a.body)
            else:
                self._do(a)

    async def _spawn_store(self, a: Store) -> None:
        """Verify and store one Data message beside the reader, at most ``MAX_STORING`` at
        once; its failure closes the connection like the reader's would."""
        await self._store_slots.acquire()
        task = self.loop.create_task(self._store(a), name="peer-store")
        self._storing.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._storing.discard(t)
            self._store_slots.release()
            self._task_done(t)

        task.add_done_callback(done)

    async def _store(self, a: Store) -> None:
        msg, pf = a.data, a.request.peer
        proof = Proof(msg.length, msg.signature, msg.nodes, msg.upgrade_from, msg.upgrade)
        try:
            if pf.feed.writable:  # our own entries, wanted back: checked against our leaves
                await healing.heal(pf.feed, msg.start, msg.entries)
                # Answered once: stored again, or (no leaf to check against) not to be asked for
                # in a loop; a later clear is not undone by a want that outlived its heal.
                wanted = pf.replicator.wanted
                if wanted is not None:
                    wanted.remove(msg.start, msg.start + len(msg.entries))
            else:
                await pf.feed.put_range(msg.start, msg.entries, proof)
        except VerificationError as e:
            self.execute(a.channel.stored(a.request, StoreOutcome.INVALID, reason=str(e)))
            return
        except StaleProofError:
            self.execute(a.channel.stored(a.request, StoreOutcome.STALE))
            return
        except StorageError:
            self.execute(a.channel.stored(a.request, StoreOutcome.FAILED))
            raise
        self.execute(a.channel.stored(a.request, StoreOutcome.STORED, len(msg.entries),
                                      sum(map(len, msg.entries))))

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
            msg = m.decode(data)
            if isinstance(msg, m.Call):
                self._on_call(msg)
            elif isinstance(msg, m.Reply):
                self._on_reply(msg)
            else:
                await self._run(self.mux.receive(msg))

    def _on_reply(self, msg: m.Reply) -> None:
        fut = self._calls.pop(msg.id, None)
        if fut is None:
            raise RemoteProtocolError("a reply to no call")
        if not fut.done():
            if msg.ok:
                fut.set_result(msg.body)
            else:
                fut.set_exception(ServiceError(msg.body.decode(errors="replace")))

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
                ch, feed, req = await self._requests.get()
                await slots.acquire()
                task = self.loop.create_task(self._serve(ch, feed, req), name="peer-serve")
                serving.add(task)

                def done(t: asyncio.Task[None]) -> None:
                    serving.discard(t)
                    slots.release()
                    self._task_done(t)

                task.add_done_callback(done)
        finally:
            for t in serving:
                t.cancel()

    async def _serve(self, ch: Channel, feed: Feed, req: m.Request) -> None:
        if not ch.live:
            self.post(m.NoData(ch.local_id, req.id, "unknown feed"))
            return
        # Serve the longest stored prefix of the range that fits one message.
        end = min(req.end, feed.have.contiguous_from(req.start), req.start + m.MAX_ENTRIES)
        if end <= req.start:
            self.post(m.NoData(ch.local_id, req.id, "not stored here"))
            return
        try:
            entries = await feed.get_range(req.start, end, max_bytes=SERVE_BYTES)
        except StorageError as e:
            self.post(m.NoData(ch.local_id, req.id, e.code))
            return
        # Proofs are built and queued one at a time, in the order they go out: a chained
        # request's proof upgrades from the signed length of the answer sent just before it on
        # this channel for this feed, which the peer (verifying in that order) will hold by then.
        async with self._proving:
            pf = ch.feeds.get(feed.key)
            upgrade_from = req.known_length
            if req.chained and pf is not None:
                upgrade_from = max(upgrade_from, pf.sent_length)
            try:
                proof = await feed.proof(req.start, req.start + len(entries), upgrade_from=upgrade_from)
            except StorageError as e:
                self.post(m.NoData(ch.local_id, req.id, e.code))
                return
            await self._post_bulk(m.Data(ch.local_id, req.id, feed.key, req.start, tuple(entries),
                                         proof.length, proof.signature, proof.nodes,
                                         proof.upgrade_from, proof.upgrade))
            if pf is not None:
                pf.sent_length = proof.length
        rep = self.replicators.find(feed.key)
        if rep is not None:
            rep.bytes_served += sum(map(len, entries))
